"""``mm/madvise.c``: ``MADV_DONTNEED``, ``MADV_FREE``, ``MADV_DONTFORK`` / ``MADV_DOFORK``,
``MADV_HUGEPAGE`` / ``MADV_NOHUGEPAGE`` (``hugepage_madvise``, mm/khugepaged.c).

:class:`Madvise` is mixed into :class:`primary_mm.mm.MM`.
"""

from __future__ import annotations

import numpy as np

from primary_mm.frames import FRAME_KSM, FRAME_LAZYFREE
from smmu.base.constants import HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SHIFT
from smmu.base.errors import InvalidArgument
from smmu.base.pte import (PTE_DIRTY, PTE_PRESENT, PTE_SPECIAL, PTE_YOUNG, huge_mask, pte_pfns,
                           swap_mask, swap_slots)
from smmu.notifier import Event
from primary_mm.operation import mm_operation

_U = np.uint64

ADVICE = ("dontneed", "free", "dontfork", "dofork", "hugepage", "nohugepage", "pageout")
#: advice that changes VMA flags (split_vma, mmap_lock held for write)
_VMA_FLAGS = {"dontfork": ("dontfork", None), "dofork": (None, "dontfork"),
              "hugepage": ("hugepage", "nohugepage"), "nohugepage": ("nohugepage", "hugepage")}


class Madvise:
    """``madvise`` (``mm/madvise.c``)."""

    # ------------------------------------------------------------------ madvise
    @mm_operation
    def madvise(self, addr, length, advice):
        """``madvise``: ``"dontneed"`` (zap: start/end CLEAR; private contents are gone),
        ``"free"`` (MADV_FREE: private anonymous pages become lazily freeable until written
        again), ``"dontfork"`` / ``"dofork"``, ``"hugepage"`` / ``"nohugepage"``
        (``VM_HUGEPAGE`` / ``VM_NOHUGEPAGE``: whether faults and khugepaged may map huge
        pages there; existing huge pages stay, 6.8 ``hugepage_madvise``; with
        ``Memory(thp="madvise")`` only ``"hugepage"`` VMAs get them), ``"pageout"``
        (MADV_PAGEOUT, 5.4+: reclaim the range's pages mapped only here at once, with no
        aging: ``reclaim_pages`` -> ``shrink_folio_list`` with ``ignore_references``). Huge
        PMDs across the range's edges are split (``__split_huge_pmd``)."""
        self._alive()
        if not isinstance(advice, str) or advice.lower() not in ADVICE:
            raise InvalidArgument(f"madvise: unknown advice {advice!r}: use one of "
                                  f"{list(ADVICE)}")
        advice = advice.lower()
        start, end = self._check_range(addr, length, "madvise")
        self._refuse_hugetlb(start, end, "madvise")
        write_lock = advice in _VMA_FLAGS
        yield self.mmap_lock.write() if write_lock else self.mmap_lock.read()
        try:
            yield
            self._check_mapped(start, end, "madvise")
            if advice == "free":
                for v in self.vmas_in(start, end):
                    if v.file is not None:
                        raise InvalidArgument(
                            f"madvise(free): {v.describe()} is not private anonymous memory "
                            "(Linux: EINVAL); MADV_FREE works on private anonymous mappings")
            if write_lock:
                add, drop = _VMA_FLAGS[advice]
                for v in (yield from self._split_vmas(start, end)):
                    if drop is not None:
                        v.flags.discard(drop)
                    if add is not None:
                        v.flags.add(add)
                return
            for v in self.vmas_in(start, end):
                s, e = max(start, v.start), min(end, v.end)
                if advice == "dontneed":
                    # madvise_dontneed_single_vma -> zap_page_range_single (CLEAR)
                    yield from self._zap(s, e, Event.CLEAR, [] if v.shared else [(s, e)])
                elif advice == "pageout":
                    # madvise_cold_or_pageout_pte_range: "if (folio_estimated_sharers(folio)
                    # != 1) continue;", then reclaim_pages(&folio_list, true)
                    yield from self.memory.reclaim(self, s, e - s, force=True,
                                                   exclusive_only=True)
                else:
                    yield from self._madvise_free(v, s, e)
                yield
        finally:
            if write_lock:
                self.mmap_lock.up_write()
            else:
                self.mmap_lock.up_read()

    def _madvise_free(self, vma, start, end):
        """``madvise_free_single_vma`` (4.5+): start/end CLEAR; exclusively mapped pages get
        clean, old PTEs and become lazily freeable (reclaim drops them if still clean); swap
        entries are freed. A huge PMD the range covers whole is one page
        (``madvise_free_huge_pmd``: mkold, mkclean, lazyfree if mapped once); one it covers
        in part is split and left alone in this pass ("if (next - addr != HPAGE_PMD_SIZE)
        ... split_folio(folio) ... goto out_unlocked")."""
        mem = self.memory
        subs = self.notifier_subscriptions
        rng = self._range(start, end, Event.CLEAR)
        yield from subs.mmu_notifier_invalidate_range_start(rng)
        v0, v1 = start >> PAGE_SHIFT, end >> PAGE_SHIFT
        split = [a for a in (start, end) if a % HPAGE_PMD_SIZE
                 and self.pt.lookup_pmd(a >> PAGE_SHIFT)]
        yield from self._split_huge_edges(start, end)
        yield self.page_table_lock
        try:
            vpns = np.arange(v0, v1, dtype=np.int64)
            cur = self.pt.walk(vpns)
            new = cur.copy()
            sw = swap_mask(cur)
            slots = swap_slots(cur)
            new[sw] = 0
            present = ((cur & _U(PTE_PRESENT)) != 0) & ((cur & _U(PTE_SPECIAL)) == 0)
            for a in split:                        # the folios just split: skipped
                h = (a >> PAGE_SHIFT) & ~(HPAGE_PMD_NR - 1)
                present[max(h - v0, 0):max(h + HPAGE_PMD_NR - v0, 0)] = False
            pfns = pte_pfns(cur)
            f = mem.frames
            excl = present.copy()
            excl[present] = ((f.mapcount[pfns[present]] == 1)
                             & ((f.flags[pfns[present]] & FRAME_KSM) == 0))
            hm = huge_mask(cur)
            for vpn, word in self.huge_pmds(start, end):   # whole huge PMDs
                i = vpn - v0
                if excl[i:i + HPAGE_PMD_NR].all():
                    self.pt.set_pmd(vpn, word & ~(PTE_DIRTY | PTE_YOUNG))
                else:
                    excl[i:i + HPAGE_PMD_NR] = False
            small = excl & ~hm
            new[small] &= ~_U(PTE_DIRTY | PTE_YOUNG)
            self._map_small(v0, new)
            self.sched.observer.discard(self, start, end)
            f.set_flags(pfns[excl], FRAME_LAZYFREE)
            yield from self._flush_tlb_range(start, end)
        finally:
            self.page_table_lock.release()
        yield from subs.mmu_notifier_invalidate_range_end(rng)
        mem.swap.free(slots)
