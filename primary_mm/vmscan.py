"""Reclaim, from ``mm/vmscan.c`` (``shrink_folio_list``): age, unmap, swap out or drop.

:class:`Vmscan` is mixed into :class:`primary_mm.memory.Memory`.
"""

from __future__ import annotations

from primary_mm.frames import (FRAME_ANON, FRAME_ANON_EXCLUSIVE, FRAME_DEVICE_PRIVATE,
                               FRAME_DIRTY, FRAME_FILE, FRAME_KSM, FRAME_LAZYFREE, FRAME_ZERO)
from smmu.base.constants import PAGE_SIZE
from smmu.base.errors import InvalidArgument
from smmu.base.pte import PTE_DIRTY, PTE_SWAP, PTE_SWP_EXCLUSIVE, mk_pte
from smmu.notifier import Event


class Vmscan:
    """Page reclaim (``mm/vmscan.c``)."""

    def reclaim(self, mm, addr, length, force=False):
        """``shrink_page_list`` over the pages mapped in ``[addr, addr + length)`` of ``mm``:
        ``page_referenced`` (a referenced page is kept unless ``force``), ``try_to_unmap``
        (anonymous pages get swap entries; file pages are dropped, written back first if
        dirty), then the page is written out and freed if nothing else holds it (a page
        with extra references stays in the swap cache / page cache). Returns the number of
        pages freed. KSM, zero and device-private pages (not on the LRU) are skipped."""
        self._check_mm(mm, "reclaim")
        pages = self._range_pages(mm, addr, length, "reclaim")
        freed = 0
        frames = self.frames
        for pfn in pages:
            yield
            if frames.refcount[pfn] <= 0 or \
                    frames.flags[pfn] & (FRAME_KSM | FRAME_ZERO | FRAME_DEVICE_PRIVATE) or \
                    not frames.flags[pfn] & (FRAME_ANON | FRAME_FILE):
                continue
            if not self.trylock_page(pfn):                 # trylock_page: skip busy pages
                continue
            frames.get(pfn)                                # isolate_lru_page
            try:
                if (yield from self._shrink_page(pfn, force)):
                    freed += 1
            finally:
                self.unlock_page(pfn)
                frames.put(pfn)
        self.sched.stats["reclaimed"] += freed
        return freed

    def page_referenced(self, mm, va):
        """``page_referenced`` on the page mapped at ``va`` of ``mm``: the reverse-map walk
        reclaim's aging makes (``shrink_active_list`` / ``shrink_page_list``), under the
        page's anon_vma or i_mmap lock (read side with rwsem rmap locks): each mapping's
        young bit is tested and cleared, with ``mmu_notifier_clear_flush_young``. Returns
        whether any mapping (or secondary MMU) had used the page. Nothing mapped at ``va``:
        ``InvalidArgument``."""
        self._check_mm(mm, "page_referenced")
        pages = self._range_pages(mm, va - va % PAGE_SIZE, PAGE_SIZE, "page_referenced")
        if not pages:
            raise InvalidArgument(f"page_referenced: nothing is mapped at {va:#x}: fault the "
                                  "page in first")
        pfn = pages[0]
        mapping, index = self.page_mapping(pfn)
        if mapping is None or self.frames.flags[pfn] & (FRAME_KSM | FRAME_ZERO):
            return False
        self.frames.get(pfn)                               # the caller's reference
        try:
            return (yield from self._page_referenced(pfn, mapping, index))
        finally:
            self.frames.put(pfn)

    def _shrink_page(self, pfn, force):
        frames = self.frames
        swap = self.swap
        mapping, index = self.page_mapping(pfn)
        if mapping is None:
            return False
        if not force and (yield from self._page_referenced(pfn, mapping, index)):
            return False
        anon = frames.test_flags(pfn, FRAME_ANON)
        if anon:
            slot = swap.slot_of.get(pfn)
            if slot is None:
                if self.reclaim_skips_pinned and int(frames.pincount[pfn]) > 0:
                    # 5.11 feb889fb40fa shrink_folio_list: "if (folio_maybe_dma_pinned(folio))
                    # goto keep_locked": a pinned page is not added to the swap cache
                    return False
                slot = swap.alloc()                        # add_to_swap
                swap.add_to_swap_cache(slot, pfn)

            def make(vma, old):
                if frames.test_flags(pfn, FRAME_LAZYFREE) and not old & PTE_DIRTY:
                    return 0                               # MADV_FREE page still clean: drop
                frames.clear_flags(pfn, FRAME_LAZYFREE)
                # "if (anon_exclusive) swp_pte = pte_swp_mkexclusive(swp_pte)"
                excl = PTE_SWP_EXCLUSIVE if self.anon_exclusive and \
                    frames.test_flags(pfn, FRAME_ANON_EXCLUSIVE) else 0
                return mk_pte(slot, PTE_SWAP | excl)
        else:
            def make(vma, old):
                return 0
        # 2.6.27 try_to_unmap_one re-checked the young bit (ptep_clear_flush_young_notify)
        # and kept a page referenced meanwhile (SWAP_FAIL: the walk stops there); modern
        # try_to_unmap_one does not
        young_fails = not force and self.api != "modern"
        yield from self._try_to_unmap(pfn, mapping, index, make, Event.CLEAR,
                                      young_fails=young_fails, share=anon)
        if anon:
            if swap.count[slot] == 0:
                swap.delete_from_swap_cache(slot)          # nothing refers to the slot
            elif frames.mapcount[pfn] == 0 and frames.refcount[pfn] == 2:
                swap.contents[slot] = frames.contents[pfn]  # pageout -> swap_writepage
                swap.writes += 1
                self.sched.wait_io("swap_io")
                yield
                if frames.mapcount[pfn] == 0 and frames.refcount[pfn] == 2 and \
                        swap.page[slot] == pfn:
                    swap.contents[slot] = frames.contents[pfn]
                    swap.delete_from_swap_cache(slot)      # __remove_mapping
            return frames.refcount[pfn] == 1 and frames.mapcount[pfn] == 0
        file = mapping.file
        if frames.mapcount[pfn] != 0 or frames.refcount[pfn] != 2 or \
                file.cache.get(index) != pfn:
            return False
        if frames.test_flags(pfn, FRAME_DIRTY):           # pageout -> writepage
            file.contents[index] = frames.contents[pfn]
            frames.clear_flags(pfn, FRAME_DIRTY)
            file.writebacks += 1
            self.sched.wait_io("writeback_io")
            yield
            if frames.mapcount[pfn] != 0 or frames.refcount[pfn] != 2 or \
                    frames.test_flags(pfn, FRAME_DIRTY):
                return False
        del file.cache[index]                              # __remove_mapping
        frames.put(pfn)
        return True
