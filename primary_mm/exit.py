"""``exit_mmap`` (``mm/mmap.c``): the MMU notifier ``release``, then the teardown of every
mapping and of the page tables.

:class:`Exit` is mixed into :class:`primary_mm.mm.MM`.
"""

from __future__ import annotations

import numpy as np

from primary_mm.pagetable import VPN_LIMIT
from smmu.base.constants import PAGE_SHIFT, ULONG_MAX
from smmu.base.errors import UsageError
from smmu.notifier import Event
from primary_mm.operation import mm_operation

#: ``exit_mmap_lock``: the mmap_lock ``exit_mmap`` takes after ``mmu_notifier_release``
#: (which no version runs under mmap_lock). "none": 2.6.27..5.18 (5.10 only cycles the write
#: lock for an OOM victim); "write": 5.19 (64591e8605d6, the write lock for everything after
#: release); "read_then_write": 6.1+ (seen in 6.6 and 6.12: ``mmap_read_lock`` around
#: ``unmap_vmas``, ``mmap_write_lock`` for ``free_pgtables`` and ``remove_vma``)
EXIT_MMAP_LOCKS = ("none", "write", "read_then_write")


class Exit:
    """Tearing an address space down (``exit_mmap``)."""

    # ------------------------------------------------------------------ exit
    @mm_operation
    def exit(self):
        """The process's last thread exits: ``mmput`` -> ``exit_mmap``.

        From now on ``mmget_not_zero`` fails (faults, GUP and ``hmm_range_fault`` on this mm
        raise SegmentationFault); the last operation in flight ends first (its ``mmput``
        is the last one). Then ``mmu_notifier_release`` without mmap_lock (every version:
        a release hook may take mmap_lock), while every page is still mapped: interval
        notifiers get a RELEASE range and stay in the tree, list subscriptions get
        ``release`` and leave the chain. Then ``unmap_vmas`` (start/end UNMAP over the
        whole space, seen only by interval notifiers) and ``free_pgtables``, under the
        mmap_lock the ``exit_mmap_lock`` era takes."""
        if self.exiting and not self.exited:
            raise UsageError(f"{self!r} is already exiting: exit it once")
        self._alive()
        self.exiting = True
        yield self._users_wq.wait_until(lambda: self._users == 0)
        yield
        yield from self.notifier_subscriptions.mmu_notifier_release()
        yield
        mode = self.memory.exit_mmap_lock
        if mode == "none":
            yield from self._teardown()
            return
        if mode == "read_then_write":
            yield self.mmap_lock.read()
            try:
                yield from self._unmap_vmas()
            finally:
                self.mmap_lock.up_read()
            yield
        yield self.mmap_lock.write()
        try:
            if mode == "write":
                yield from self._unmap_vmas()
            yield from self._free_pgtables()
        finally:
            self.mmap_lock.up_write()

    def _teardown(self):
        """Unmap every VMA and free the page tables (``unmap_vmas`` + ``free_pgtables``)."""
        yield from self._unmap_vmas()
        yield from self._free_pgtables()

    def _unmap_vmas(self):
        """``unmap_vmas`` over everything: one start/end UNMAP ``[0, ULONG_MAX)`` around
        clearing every PTE (after release only interval notifiers are left to see it),
        under ``tlb_gather_mmu_fullmm`` (full batches are freed on the way); the last batch
        is freed after the end (``tlb_finish_mmu``)."""
        subs = self.notifier_subscriptions
        rng = self._range(0, ULONG_MAX, Event.UNMAP)
        ranges = [(v.start, v.end) for v in self.vmas]
        yield from subs.mmu_notifier_invalidate_range_start(rng)
        ptes = yield from self._unmap_page_range(0, VPN_LIMIT << PAGE_SHIFT, ranges,
                                                 fullmm=True)
        yield from subs.mmu_notifier_invalidate_range_end(rng)
        self.memory.release_entries(ptes)          # tlb_finish_mmu

    def _free_pgtables(self):
        """``free_pgtables`` and ``remove_vma``: the VMAs leave the reverse maps, the page
        tables are freed, the address space is gone."""
        mem = self.memory
        vmas = list(self.vmas)
        self.vmas = []
        for v in vmas:
            yield from self._unlink_vma(v)
        self.pt.destroy()
        if self.pt_pages:
            mem.frames.put(np.array(self.pt_pages, dtype=np.int64))
            self.pt_pages = []
        self.exited = True
        if self in mem.mms:
            mem.mms.remove(self)
