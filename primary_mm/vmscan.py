"""Reclaim, from ``mm/vmscan.c`` (``shrink_folio_list``): age, unmap, swap out or drop.

:class:`Vmscan` is mixed into :class:`primary_mm.memory.Memory`.
"""

from __future__ import annotations

import numpy as np

from primary_mm.frames import (FRAME_ANON, FRAME_ANON_EXCLUSIVE, FRAME_COMPOUND,
                               FRAME_DEVICE_PRIVATE, FRAME_DIRTY, FRAME_FILE, FRAME_IDLE, FRAME_KSM,
                               FRAME_LAZYFREE, FRAME_REFERENCED, FRAME_SWAPCACHE, FRAME_YOUNG,
                               FRAME_ZERO,
                               compound_block)
from smmu.base.constants import HPAGE_PMD_MASK, HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SHIFT, PAGE_SIZE
from smmu.base.errors import InvalidArgument
from smmu.base.pte import (PFN_SHIFT, PTE_DIRTY, PTE_HUGE, PTE_MAPPED, PTE_SPECIAL, PTE_SWAP,
                           PTE_SWP_EXCLUSIVE, mk_pte, pte_pfns)
from smmu.notifier import Event
from primary_mm.operation import mm_operation


class Vmscan:
    """Page reclaim (``mm/vmscan.c``)."""

    @mm_operation
    def reclaim(self, mm, addr, length, force=False, exclusive_only=False):
        """One pass of ``shrink_folio_list`` over the pages mapped in ``[addr, addr + length)``
        of ``mm``: :meth:`folio_check_references` (``force`` skips it, as ``reclaim_pages``
        does for MADV_PAGEOUT; ``exclusive_only``: pages mapped once only), ``try_to_unmap``
        (anonymous pages get swap entries; file pages are dropped, written back first if
        dirty), then the page is written out and freed if nothing else holds it (a page
        with extra references stays in the swap cache / page cache). Returns the number of
        pages freed. KSM, zero and device-private pages (not on the LRU) are skipped.

        Aging takes two passes, as kswapd's do: the first finds a page young (its PTE's
        accessed bit, or a secondary MMU's through ``clear_flush_young``), clears that and
        keeps the page; the second reclaims it unless it was used again meanwhile (see
        :func:`kswapd` in :mod:`smmu.scenarios.kit`).

        A huge page is aged whole (``pmdp_clear_flush_young_notify``, 2 MiB). With
        ``thp_swap`` (4.13+, x86-64's THP_SWAP) a PMD-mapped anonymous one is swapped out
        whole (:meth:`_swap_out_huge`); otherwise, or when only PTEs map it, it is split
        (``split_folio_to_list``) and its pages are reclaimed one by one in the same pass."""
        self._check_mm(mm, "reclaim")
        work = list(reversed(self._range_pages(mm, addr, length, "reclaim")))
        freed = 0
        frames = self.frames
        seen = set()                                       # each page once per pass
        while work:
            pfn = work.pop()
            if pfn in seen:
                continue
            seen.add(pfn)
            yield
            if frames.refcount[pfn] <= 0 or \
                    frames.flags[pfn] & (FRAME_KSM | FRAME_ZERO | FRAME_DEVICE_PRIVATE) or \
                    not frames.flags[pfn] & (FRAME_ANON | FRAME_FILE) or \
                    exclusive_only and int(frames.mapcount[pfn]) != 1:
                continue
            if not self.trylock_page(pfn):                 # trylock_page: skip busy pages
                continue
            frames.get(pfn)                                # isolate_lru_page
            try:
                if frames.flags[pfn] & FRAME_COMPOUND:
                    done = yield from self._shrink_huge(pfn, force)
                else:
                    done = yield from self._shrink_page(pfn, force)
            finally:
                self.unlock_page(pfn)
                frames.put(pfn)
            if isinstance(done, list):
                seen.discard(pfn)                          # itself a small page now
                work.extend(reversed(done))                # the pages of a split folio
            elif done:
                freed += int(done)
        self.sched.stats["reclaimed"] += freed
        return freed

    @mm_operation
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
            return (yield from self._page_referenced(pfn, mapping, index)) > 0
        finally:
            self.frames.put(pfn)

    def folio_check_references(self, pfn, mapping, index):
        """``folio_check_references``: ``"activate"``, ``"keep"`` or ``"reclaim"``. Modern
        (6.8 mm/vmscan.c): a folio found young is marked ``PG_referenced`` and kept
        ("Mark it and spare it for another trip around the inactive list"), activated if it
        was already marked or is young in more than one mapping; one not young is reclaimed
        (the mark is consumed). 2.6.27 ``shrink_page_list``: "In active use or really
        unfreeable?  Activate it." for any young reference."""
        frames = self.frames
        referenced_ptes = yield from self._page_referenced(pfn, mapping, index)
        if frames.test_flags(pfn, FRAME_YOUNG):            # page_idle cleared a young bit
            frames.clear_flags(pfn, FRAME_YOUNG)
            referenced_ptes += 1
        if referenced_ptes:
            frames.clear_flags(pfn, FRAME_IDLE)            # folio_clear_idle
        if self.api != "modern":
            return "activate" if referenced_ptes else "reclaim"
        referenced_folio = frames.test_flags(pfn, FRAME_REFERENCED)
        frames.clear_flags(pfn, FRAME_REFERENCED)          # folio_test_clear_referenced
        if referenced_ptes:
            frames.set_flags(pfn, FRAME_REFERENCED)
            if referenced_folio or referenced_ptes > 1:
                return "activate"
            return "keep"
        return "reclaim"

    def _shrink_huge(self, pfn, force):
        """A frame of a huge page: aged whole when PMD-mapped (its head), then swapped out
        whole (:meth:`_swap_out_huge`) or split (``split_folio_to_list``: a partly mapped
        one right away). Returns the number of pages freed, the pages of a split folio still
        mapped (to be reclaimed next), or False (kept)."""
        head = self.compound_head(pfn)
        whole = pfn == head and self._pmd_mapped(head)
        if not force and whole:
            mapping, index = self.page_mapping(head)
            if mapping is not None and \
                    (yield from self.folio_check_references(head, mapping, index)) != "reclaim":
                return False
        if whole and self.thp_swap and self.frames.test_flags(head, FRAME_ANON):
            return (yield from self._swap_out_huge(head))
        yield from self.split_huge_page(head)
        f = self.frames
        pages = compound_block(head)
        return pages[(f.refcount[pages] > 0) & (f.mapcount[pages] > 0)].tolist()

    def _swap_out_huge(self, head):
        """Swap a PMD-mapped anonymous huge page out whole (6.8 ``shrink_folio_list`` with
        THP_SWAP): ``add_to_swap`` (512 slots), ``try_to_unmap(folio, TTU_SPLIT_HUGE_PMD)``:
        for each mapping ``split_huge_pmd_address`` (a 2 MiB CLEAR) and then one
        ``MMU_NOTIFY_CLEAR`` range over the folio ("For THP, we have to assume the worse case
        ie pmd for invalidation", ``range.end = vma_address_end``) in which every PTE becomes
        a swap entry (a clean MADV_FREE page is dropped); then ``pageout`` of the folio and
        its removal from the swap cache. Returns the pages freed (0: kept)."""
        frames = self.frames
        swap = self.swap
        pfns = compound_block(head)
        if (frames.flags[pfns] & FRAME_SWAPCACHE).any():
            return False
        if self.reclaim_skips_pinned and (frames.pincount[pfns] > 0).any():
            return False                       # 5.11 shrink_folio_list: folio_maybe_dma_pinned
        slots = np.array([swap.alloc() for _ in range(HPAGE_PMD_NR)], dtype=np.int64)
        for slot, pfn in zip(slots.tolist(), pfns.tolist()):
            swap.add_to_swap_cache(slot, pfn)
        mapping, index = self.page_mapping(head)

        def one(vma, va):
            mm = vma.mm
            haddr = va & HPAGE_PMD_MASK
            yield from mm._split_huge_pmd(haddr)           # split_huge_pmd_address
            v0 = haddr >> PAGE_SHIFT
            subs = mm.notifier_subscriptions
            rng = mm._range(haddr, min(vma.end, haddr + HPAGE_PMD_SIZE), Event.CLEAR)
            yield from subs.mmu_notifier_invalidate_range_start(rng)
            yield mm.page_table_lock
            try:
                cur = mm.pt.walk(np.arange(v0, v0 + HPAGE_PMD_NR, dtype=np.int64))
                maps = (((cur & np.uint64(PTE_MAPPED)) != 0)
                        & ((cur & np.uint64(PTE_SPECIAL | PTE_HUGE)) == 0)
                        & (pte_pfns(cur) == pfns))
                if maps.any():
                    new = cur.copy()
                    entries = (slots.astype(np.uint64) << np.uint64(PFN_SHIFT)) | \
                        np.uint64(PTE_SWAP)
                    drop = maps & ((frames.flags[pfns] & FRAME_LAZYFREE) != 0) & \
                        ((cur & np.uint64(PTE_DIRTY)) == 0)     # MADV_FREE, still clean
                    if self.anon_exclusive:            # pte_swp_mkexclusive, then shared
                        ex = maps & ((frames.flags[pfns] & FRAME_ANON_EXCLUSIVE) != 0)
                        entries[ex] |= np.uint64(PTE_SWP_EXCLUSIVE)
                        frames.clear_flags(pfns[maps], FRAME_ANON_EXCLUSIVE)
                    new[maps] = entries[maps]
                    new[drop] = 0
                    mm.pt.map_range(v0, new)
                    frames.clear_flags(pfns[maps], FRAME_LAZYFREE)
                    frames.dec_mapcount(pfns[maps])            # folio_remove_rmap_pte
                    swap.count[slots[maps & ~drop]] += 1       # swap_duplicate
                    yield from mm._flush_tlb_range(haddr, haddr + HPAGE_PMD_SIZE)
            finally:
                mm.page_table_lock.release()
            yield from subs.mmu_notifier_invalidate_range_end(rng)
            frames.put(pfns[maps])
            return bool(maps.any())

        if mapping is not None:
            yield from self._walk_mappings(head, mapping, index, one)
        others = pfns[1:]
        idle = (frames.mapcount[pfns] == 0).all() and frames.refcount[head] == 2 and \
            (frames.refcount[others] == 1).all()
        if idle:                                           # pageout -> swap_writepage
            swap.contents[slots] = frames.contents[pfns]
            swap.writes += HPAGE_PMD_NR
            self.sched.wait_io("swap_io")
            yield
            idle = (frames.mapcount[pfns] == 0).all() and frames.refcount[head] == 2 and \
                (frames.refcount[others] == 1).all()
        for slot in slots.tolist():
            if idle or swap.count[slot] == 0:
                if idle:
                    swap.contents[slot] = frames.contents[swap.page[slot]]
                swap.delete_from_swap_cache(slot)          # __remove_mapping
        self.sched.stats["thp_swpout"] += int(idle)
        return HPAGE_PMD_NR if idle else 0

    def _shrink_page(self, pfn, force):
        frames = self.frames
        swap = self.swap
        mapping, index = self.page_mapping(pfn)
        if mapping is None:
            return False
        if not force and \
                (yield from self.folio_check_references(pfn, mapping, index)) != "reclaim":
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
