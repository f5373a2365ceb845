"""XPMEM: cross-process memory attachments that pin the exporter's pages.

Models hpc/xpmem (out of tree): ``kernel/xpmem_mmu_notifier.c``
(``xpmem_invalidate_range_end``, the pre-4.13 ``xpmem_invalidate_page``,
``xpmem_mmu_notifier_release``), ``kernel/xpmem_attach.c`` (``xpmem_fault_handler``,
``xpmem_clear_PTEs_range``) and ``kernel/xpmem_get.c`` / the fork recall ioctl. It is the
driver whose sleeping callbacks made the 2008 series turn the anon_vma and i_mmap spinlocks
into rw semaphores (seed patches 09/10): with ``rmap_locks="spinlock"`` its hooks called
from reverse-map walks (reclaim, migration, truncate) are ``SleepInAtomic``.
"""

from __future__ import annotations

from drivers._common import device_gone, page_of, user_window, vpn_of, vpn_span
from smmu.constants import PAGE_SIZE
from smmu.notifier import MMUNotifier
from smmu.shadow import ShadowPageTable


class XPMEM(MMUNotifier):
    """One notifier per exporting process: the attached ``mm`` is the source; the device
    side (:meth:`access`) is another process touching its attachment of the segment
    ``[start, start + length)`` (default: the whole user space), at the source's addresses.

    * attach fault (:meth:`fault`): pin the source page (``pin_user_pages``, as
      ``get_user_pages_remote`` did; the pin is kept) and, under the attachment's mutex, map
      it in the attacher's table — unless an invalidation completed since the pin was taken
      (then unpin and retry);
    * ``invalidate_range_end`` and, in v2008, ``invalidate_page`` (no ``start``): take the
      attachment mutex (it sleeps: ``may_sleep = True``), zap the attacher's entries of the
      range and unpin their pages;
    * ``release``: tear every attachment down; :meth:`recall` does the same on demand (the
      fork ioctl: the exporter recalls all PFNs before it forks).

    Why it is coherent without ``start``: the pin keeps every page it maps allocated until
    its own ``end`` unmaps it, so the page cannot be freed or reused in between. There is no
    MapInWindow window for it (it never opens one). Limits, as in the real driver: a device
    write between the primary write-protecting a page (fork's ``copy_page_range``) and
    ``end`` goes to a page the child now shares — hence the recall ioctl before fork.

    Generations: ``range_only`` and ``modern``. In the merged 2008 API ``invalidate_page``
    runs under the PT lock (``ptep_clear_flush_notify``), where a sleeping driver is always
    ``SleepInAtomic`` — the very reason XPMEM argued for sleepable callbacks and the
    range-only API in the seed thread. :meth:`invalidate_page` is kept (it is what XPMEM did
    on kernels that called it outside the PT lock): a subclass that sets ``apis`` to include
    ``"v2008"`` is clean only with ``Simulator(invalidate_page_outside_ptl=True)``.

    Simplifications: every invalidation of the source mm counts (the real code ignores
    ranges when ``current->mm`` is not the exporter's); one attachment per driver instance;
    ``att->mutex`` and ``att->invalidate_mutex`` are one mutex. A non-blockable range (the
    OOM reaper) spins on ``mutex_trylock`` instead of sleeping.
    """

    name = "xpmem"
    may_sleep = True
    apis = ("range_only", "modern")

    def __init__(self, sim, mm, *, start: int = 0, length: int | None = None):
        seg = user_window("XPMEM segment", start, length)
        super().__init__(sim, mm)
        self.seg_start, self.seg_end = seg
        self.att_mutex = sim.mutex("xpmem att->mutex")
        self.att_pt = ShadowPageTable(name=f"xpmem{mm.id}.att", observer=self)
        self.pins: dict[int, int] = {}           # vpn -> pinned pfn mapped in the attacher
        self.invalidations = 0                   # bumped by every zap, under att_mutex
        self.dead = False
        self.faults = 0
        self.retries = 0

    def __repr__(self):
        return (f"<{self.name} on {self.mm!r} seg=[{self.seg_start:#x}, {self.seg_end:#x}) "
                f"pinned={len(self.pins)}>")

    # ------------------------------------------------------------------ device side
    def access(self, va, *, write, value=None):
        """The attacher touches ``va`` of the segment."""
        vpn = vpn_of(va)
        while True:
            yield
            if self.dead:
                raise device_gone(self, "the segment was torn down")
            if not self.seg_start <= va < self.seg_end:
                raise device_gone(self, f"{va:#x} is outside the exported segment")
            pfn = self.att_pt.access(vpn, write)
            if pfn >= 0:
                return self.dma_write(va, pfn, value) if write else self.dma_read(va, pfn)
            yield from self.fault(va, write)

    def fault(self, va, write):
        """``xpmem_fault_handler``: pin the source page, then map it under ``att->mutex``
        unless an invalidation completed meanwhile."""
        mm = self.mm
        vpn = vpn_of(va)
        self.faults += 1
        self.sim.charge("device_fault")
        while True:
            gen = self.invalidations
            pfn = yield from mm.pin_user_pages(page_of(va), write=write, longterm=False)
            yield                                    # pinned; att->mutex not yet taken
            old = None
            with (yield self.att_mutex):
                stale = self.dead or self.invalidations != gen
                if not stale:
                    old = self.pins.pop(vpn, None)
                    if old is not None:              # upgrade of a read-only mapping
                        self.att_pt.zap(vpn)
                    self.pins[vpn] = pfn
                    self.att_pt.map(vpn, pfn, bool(write))   # remap_pfn_range
            if not stale:
                if old is not None:
                    yield from mm.unpin_user_page(old)
                return
            yield from mm.unpin_user_page(pfn)
            if self.dead:
                raise device_gone(self, "the segment was torn down during a fault")
            self.retries += 1

    def translation(self, va):
        """``(pfn, writable)`` the attacher maps for ``va``, or None (inspection only)."""
        return self.att_pt.lookup(vpn_of(va))

    # ------------------------------------------------------------------ teardown
    def clear(self, start, end, blockable=True):
        """``xpmem_clear_PTEs_range`` + unpin, under the attachment mutex: zap the attacher's
        entries of ``[start, end)``, then unpin their pages."""
        if blockable:
            yield self.att_mutex                     # mutex_lock: sleeps
        else:
            while not self.att_mutex.trylock():      # non-blockable: spin, do not sleep
                yield
        try:
            vpn0, vpn1 = vpn_span(start, end, self.seg_start, self.seg_end)
            gone = [v for v in self.pins if vpn0 <= v < vpn1]
            self.invalidations += 1
            if gone:
                self.att_pt.zap_range(vpn0, vpn1)
                self.sim.charge("secondary_flush")
            pfns = [self.pins.pop(v) for v in gone]
        finally:
            self.att_mutex.release()
        for pfn in pfns:
            yield from self.mm.unpin_user_page(pfn)

    def recall(self):
        """The fork ioctl: recall (zap and unpin) every PFN of the segment, so that a fork
        that follows shares no page the attacher still writes."""
        yield from self.clear(self.seg_start, self.seg_end)

    # ------------------------------------------------------------------ notifier hooks
    def invalidate_range_end(self, range):
        """``xpmem_invalidate_range_end``: the PTEs of the range are gone; drop the
        attacher's mappings of those pages and the pins that kept them allocated."""
        yield from self.clear(range.start, range.end, range.blockable)

    def invalidate_page(self, mm, address):
        """v2008 ``xpmem_invalidate_page``: the same for one page (the page stays allocated
        until this returns). Runs under the PT lock: the mutex is SleepInAtomic there."""
        yield from self.clear(page_of(address), page_of(address) + PAGE_SIZE)

    def release(self, mm):
        """``xpmem_mmu_notifier_release``: the exporter is exiting: tear the attachments
        down before its pages are freed."""
        self.dead = True
        yield from self.clear(self.seg_start, self.seg_end)
