"""``mm/madvise.c``: ``MADV_DONTNEED``, ``MADV_FREE``, ``MADV_DONTFORK`` / ``MADV_DOFORK``.

:class:`Madvise` is mixed into :class:`primary_mm.mm.MM`.
"""

from __future__ import annotations

import numpy as np

from primary_mm.frames import FRAME_KSM, FRAME_LAZYFREE
from smmu.base.constants import PAGE_SHIFT
from smmu.base.errors import InvalidArgument
from smmu.base.pte import (PTE_DIRTY, PTE_PRESENT, PTE_SPECIAL, PTE_YOUNG, pte_pfns, swap_mask,
                           swap_slots)
from smmu.notifier import Event

_U = np.uint64

ADVICE = ("dontneed", "free", "dontfork", "dofork")


class Madvise:
    """``madvise`` (``mm/madvise.c``)."""

    # ------------------------------------------------------------------ madvise
    def madvise(self, addr, length, advice):
        """``madvise``: ``"dontneed"`` (zap: start/end CLEAR; private contents are gone),
        ``"free"`` (MADV_FREE: private anonymous pages become lazily freeable until written
        again), ``"dontfork"`` / ``"dofork"``."""
        self._alive()
        if not isinstance(advice, str) or advice.lower() not in ADVICE:
            raise InvalidArgument(f"madvise: unknown advice {advice!r}: use one of "
                                  f"{list(ADVICE)}")
        advice = advice.lower()
        start, end = self._check_range(addr, length, "madvise")
        write_lock = advice in ("dontfork", "dofork")
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
                for v in self._split_at(start, end):
                    if advice == "dontfork":
                        v.flags.add("dontfork")
                    else:
                        v.flags.discard("dontfork")
                return
            for v in self.vmas_in(start, end):
                s, e = max(start, v.start), min(end, v.end)
                if advice == "dontneed":
                    # madvise_dontneed_single_vma -> zap_page_range_single (CLEAR)
                    yield from self._zap(s, e, Event.CLEAR, [] if v.shared else [(s, e)])
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
        entries are freed."""
        mem = self.memory
        subs = self.notifier_subscriptions
        rng = self._range(start, end, Event.CLEAR)
        yield from subs.mmu_notifier_invalidate_range_start(rng)
        v0, v1 = start >> PAGE_SHIFT, end >> PAGE_SHIFT
        yield self.page_table_lock
        try:
            vpns = np.arange(v0, v1, dtype=np.int64)
            cur = self.pt.walk(vpns)
            new = cur.copy()
            sw = swap_mask(cur)
            slots = swap_slots(cur)
            new[sw] = 0
            present = ((cur & _U(PTE_PRESENT)) != 0) & ((cur & _U(PTE_SPECIAL)) == 0)
            pfns = pte_pfns(cur)
            f = mem.frames
            excl = present.copy()
            excl[present] = ((f.mapcount[pfns[present]] == 1)
                             & ((f.flags[pfns[present]] & FRAME_KSM) == 0))
            new[excl] &= ~_U(PTE_DIRTY | PTE_YOUNG)
            self.pt.map_range(v0, new)
            self.sched.observer.discard(self, start, end)
            f.set_flags(pfns[excl], FRAME_LAZYFREE)
            yield from self._flush_tlb_range(start, end)
        finally:
            self.page_table_lock.release()
        yield from subs.mmu_notifier_invalidate_range_end(rng)
        mem.swap.free(slots)
