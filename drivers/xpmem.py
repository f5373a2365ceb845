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
from smmu.base.constants import PAGE_SIZE
from smmu.notifier import MMUNotifier
from smmu.devices.shadow import ShadowPageTable


class XPMEM(MMUNotifier):
    """One notifier per exporting process: the attached ``mm`` is the source; the device
    side (:meth:`access`) is another process touching its attachment of the segment
    ``[start, start + length)`` (default: the whole user space), at the source's addresses.

    * attach fault (:meth:`fault`): pin the source page (``get_user_pages_remote``, a page
      reference; the "pin" is kept) and, under the attachment's mutex, map
      it in the attacher's table — unless an invalidation completed since the pin was taken
      (then unpin and retry);
    * ``invalidate_range_end`` and, in v2008, ``invalidate_page`` (no ``start``): take the
      attachment mutex (it sleeps: ``may_sleep = True``), zap the attacher's entries of the
      range and unpin their pages;
    * ``release``: tear every attachment down; :meth:`recall` does the same on demand;
    * :meth:`fork_begin` / :meth:`fork_end`: the ``XPMEM_CMD_FORK_BEGIN`` / ``_END`` ioctls
      an exporter issues around ``fork()``: recall every PFN and hold attach faults off
      until the fork is done.

    Why it is coherent without ``start``: the pin keeps every page it maps allocated until
    its own ``end`` unmaps it, so the page cannot be freed or reused in between ("If the
    refcount is only dropped on invalidate_range_end() then the driver itself will drop the
    last refcount", include/linux/mmu_notifier.h). There is no MapInWindow window for it (it
    never opens one). Between the primary write-protecting a page and ``end`` the attacher
    can still write it through its writable mapping, which Documentation/mm/mmu_notifier.rst
    allows for a write-protect; for fork the real users' protocol is the fork ioctls, which
    the scenarios issue (without them the child sees the device's post-fork writes).

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

    #: scenarios on which the real driver has a window that the checker rightly reports,
    #: each naming the data lost or exposed (issue 9, item 6). Each window declared before
    #: issue 9 was a write between the primary's
    #: write-protect (mprotect, page_mkclean) and ``invalidate_range_end``, through the
    #: attacher's writable mapping, of the same page: Documentation/mm/mmu_notifier.rst
    #: makes that legal ("When changing a pte to write protect ... it is fine to delay the
    #: mmu_notifier_invalidate_range call to mmu_notifier_invalidate_range_end()"), and no
    #: data is lost or exposed (mprotect's write lands before it returns; writeback copies
    #: the page after page_mkclean's end). Where data would be exposed, a fork without the
    #: XPMEM_CMD_FORK_BEGIN/END ioctls (the child sees writes the device made after the
    #: fork), the scenario follows the real users' protocol. What remains is the .rst's
    #: case B, a PTE pointed at a new page (COW) while the attacher keeps the old one:
    known_windows = {
        "rst-cow-timeline": (
            "a CPU of the exporter breaks COW on a page the attacher maps and other CPUs "
            "write the new page at once; until invalidate_range_end drops the attachment, the "
            "attacher reads the old page: it sees the page's pre-COW value after the "
            "exporter wrote a new one (and addrB's new value before addrA's: "
            "Documentation/mm/mmu_notifier.rst case B). XPMEM has no start hook to avoid "
            "it; real exporters share segments with fork only under XPMEM_CMD_FORK_BEGIN "
            "and do not rely on attachers reading pages the exporter is writing"),
    }
    # the load scenarios break COW on pages the attachers map too (a write after fork, or
    # from the zero page a read fault mapped after MADV_DONTNEED: wp_page_copy's
    # CLEAR range), with other attachers reading: the same window, found by chance
    known_windows["load"] = known_windows["load-small"] = (
        "the load breaks COW on pages the attachers map (after fork, or from the zero page "
        "after MADV_DONTNEED) while other attachers read them: until invalidate_range_end "
        "an attacher reads the old page, as in rst-cow-timeline (.rst case B)")

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
        self.n_recall_pfns = 0                   # > 0 between FORK_BEGIN and FORK_END
        self.allow_fault_wq = sim.waitqueue("xpmem block_recall_PFNs_wq")

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
        vpn = vpn_of(va)
        self.faults += 1
        self.sim.charge("device_fault")
        while True:
            if self.n_recall_pfns:   # xpmem_block_recall_PFNs(tg, 1): no pin during a fork
                yield self.allow_fault_wq.wait_until(lambda: not self.n_recall_pfns)
            gen = self.invalidations
            pfn = yield from self.pin(va, write)
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
                    yield from self.unpin(old)
                return
            yield from self.unpin(pfn)
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
            yield from self.unpin(pfn)

    def pin(self, va, write):
        """``xpmem_pin_page``: ``get_user_pages_remote`` of the source page (a ``FOLL_GET``
        reference, what XPMEM calls a pin: not ``FOLL_PIN``, so the kernel's rules for
        maybe-DMA-pinned pages do not apply: fork shares it, reclaim may unmap it), kept
        for as long as the attacher maps the page."""
        return (yield from self.mm.get_user_pages(page_of(va), write=write))

    def unpin(self, pfn):
        """``xpmem_unpin_pages``: ``put_page`` of the reference :meth:`pin` took (the
        attacher no longer maps the page)."""
        yield from self.mm.put_page(pfn)

    def recall(self):
        """``xpmem_recall_PFNs_of_tg``: recall (zap and unpin) every PFN of the segment."""
        yield from self.clear(self.seg_start, self.seg_end)

    def fork_begin(self):
        """``xpmem_fork_begin`` (the ``XPMEM_CMD_FORK_BEGIN`` ioctl, issued by the exporter
        before ``fork()``): hold new attach faults off (``xpmem_disallow_blocking_recall_PFNs``)
        and recall every PFN, so that the fork shares no page the attacher can still write
        (a fault that pinned before the recall sees the invalidation and retries)."""
        self.n_recall_pfns += 1
        yield from self.recall()

    def fork_end(self):
        """``xpmem_fork_end`` (``XPMEM_CMD_FORK_END``, after ``fork()``): let attach faults
        pin again (``xpmem_allow_blocking_recall_PFNs``)."""
        self.n_recall_pfns -= 1
        if not self.n_recall_pfns:
            self.allow_fault_wq.wake_all()
        yield                                        # back from the ioctl

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
