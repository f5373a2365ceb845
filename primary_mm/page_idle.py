"""Idle page tracking, from ``mm/page_idle.c`` (4.3+): ``/sys/kernel/mm/page_idle/bitmap``.

Writing a page's bit marks it idle; reading it tells whether it stayed idle. Both first clear
the accessed bits of every mapping of the page (``page_idle_clear_pte_refs``: an rmap walk,
``page_idle_clear_pte_refs_one`` under each PT lock), with ``ptep_clear_young_notify`` /
``pmdp_clear_young_notify``: the secondary MMUs' ``clear_young`` (no TLB flush: "we want to
avoid flushing tlb", 1d7715c676a1 "mmu-notifier: add clear_young callback"). A page found
used loses ``PG_idle`` and gains ``PG_young``, which reclaim's ``folio_referenced`` counts
later. Working-set estimators (and DAMON's ``damon_ptep_mkold``, 5.15+) do this periodically,
so a secondary MMU's ``clear_young`` runs under the PT lock and must not sleep.

:class:`PageIdle` is mixed into :class:`primary_mm.memory.Memory`.
"""

from __future__ import annotations

from primary_mm.frames import (FRAME_ANON, FRAME_FILE, FRAME_IDLE, FRAME_KSM, FRAME_YOUNG,
                               FRAME_ZERO)
from smmu.base.constants import HPAGE_PMD_MASK, HPAGE_PMD_SIZE, PAGE_SHIFT
from smmu.base.pte import PTE_HUGE, mapped_mask, pte_pfns


class PageIdle:
    """``/sys/kernel/mm/page_idle/bitmap`` over the pages of a range (``mm/page_idle.c``)."""

    def page_idle(self, mm, addr, length, mark=True):
        """Write (``mark=True``, ``page_idle_bitmap_write``: every page mapped in the range is
        marked idle after its accessed bits are cleared) or read (``page_idle_bitmap_read``:
        for each page marked idle, clear the accessed bits again; it is still idle unless a
        mapping, or a secondary MMU through ``clear_young``, had used it). Returns the number
        of pages marked, or the list of ``(va, idle)`` of the range's pages when reading."""
        self._check_mm(mm, "page_idle")
        start, end = mm._check_range(addr, length, "page_idle")
        vpns, ptes = mm.pt.iter_present(start >> PAGE_SHIFT, end >> PAGE_SHIFT)
        m = mapped_mask(ptes)                          # a huge page is one folio (its head)
        frames = self.frames
        out = []
        marked = 0
        for vpn, pfn in zip(vpns[m].tolist(), pte_pfns(ptes[m]).tolist()):
            yield
            if frames.refcount[pfn] <= 0 or \
                    frames.flags[pfn] & FRAME_ZERO or \
                    not frames.flags[pfn] & (FRAME_ANON | FRAME_FILE):
                continue                               # page_idle_get_folio: an LRU page
            frames.get(pfn)                            # folio_try_get
            try:
                if not mark and not frames.test_flags(pfn, FRAME_IDLE):
                    out.append((vpn << PAGE_SHIFT, False))
                    continue
                yield from self._page_idle_clear_pte_refs(pfn)
                if mark:
                    frames.set_flags(pfn, FRAME_IDLE)  # folio_set_idle
                    marked += 1
                else:
                    out.append((vpn << PAGE_SHIFT, frames.test_flags(pfn, FRAME_IDLE)))
            finally:
                frames.put(pfn)
        return marked if mark else out

    def _page_idle_clear_pte_refs(self, pfn):
        """``page_idle_clear_pte_refs``: the rmap walk (a file or KSM page under its page
        lock, trylock: skipped when busy), clearing each mapping's accessed bit with
        ``ptep_clear_young_notify`` (``pmdp_clear_young_notify`` over 2 MiB for a huge PMD)
        under the PT lock. A page found used: ``folio_clear_idle`` + ``folio_set_young``."""
        frames = self.frames
        mapping, index = self.page_mapping(pfn)
        if mapping is None or int(frames.mapcount[pfn]) <= 0:
            return
        need_lock = not frames.test_flags(pfn, FRAME_ANON) or frames.test_flags(pfn, FRAME_KSM)
        if need_lock and not self.trylock_page(pfn):
            return
        try:
            def one(vma, va):
                mm = vma.mm
                yield mm.page_table_lock
                try:
                    pte = mm.pt.lookup(va >> PAGE_SHIFT)
                    if not self._maps(pte, pfn):
                        return False
                    if pte & PTE_HUGE:
                        return (yield from mm._young_under_ptl(va & HPAGE_PMD_MASK,
                                                               HPAGE_PMD_SIZE, flush=False))
                    return (yield from mm._young_under_ptl(va, flush=False))
                finally:
                    mm.page_table_lock.release()
            if (yield from self._walk_mappings(pfn, mapping, index, one)):
                frames.clear_flags(pfn, FRAME_IDLE)
                frames.set_flags(pfn, FRAME_YOUNG)
        finally:
            if need_lock:
                self.unlock_page(pfn)
