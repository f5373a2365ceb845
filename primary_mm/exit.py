"""``exit_mmap`` (``mm/mmap.c``): the MMU notifier ``release``, then the teardown of every
mapping and of the page tables.

:class:`Exit` is mixed into :class:`primary_mm.mm.MM`.
"""

from __future__ import annotations

import numpy as np

from primary_mm.pagetable import VPN_LIMIT
from smmu.base.constants import PAGE_SHIFT


class Exit:
    """Tearing an address space down (``exit_mmap``)."""

    # ------------------------------------------------------------------ exit
    def exit(self):
        """``exit_mmap``: ``mmu_notifier_release`` first (interval notifiers get a RELEASE
        range), while every page is still mapped; then unmap everything and free it."""
        self._alive()
        yield self.mmap_lock.write()
        try:
            yield
            yield from self.notifier_subscriptions.mmu_notifier_release()
            yield
            yield from self._teardown()
        finally:
            self.mmap_lock.up_write()

    def _teardown(self):
        """Unmap every VMA and free the page tables (after release; no notifier is left on
        the chain: ``__mmu_notifier_release`` unhashed them)."""
        mem = self.memory
        ranges = [(v.start, v.end) for v in self.vmas]
        vmas = list(self.vmas)
        self.vmas = []
        # unmap_vmas under tlb_gather_mmu_fullmm: full batches are freed on the way
        ptes = yield from self._unmap_page_range(0, VPN_LIMIT << PAGE_SHIFT, ranges,
                                                 fullmm=True)
        mem.release_entries(ptes)                  # tlb_finish_mmu
        for v in vmas:
            yield from self._unlink_vma(v)
        self.pt.destroy()
        if self.pt_pages:
            mem.frames.put(np.array(self.pt_pages, dtype=np.int64))
            self.pt_pages = []
        self.exited = True
        if self in mem.mms:
            mem.mms.remove(self)
