"""Long-term pinning with no MMU notifier: the pre-notifier RDMA model.

Models memory registration in ``drivers/infiniband/core/umem.c`` (``ib_umem_get`` ->
``pin_user_pages_fast(..., FOLL_LONGTERM)``, ``ib_umem_release`` -> ``unpin_user_page``)
as it was used before on-demand paging (ODP) gave RDMA an MMU notifier: the NIC's memory
translation table points at the pinned frames and nothing ever tells it that the process's
page tables changed.
"""

from __future__ import annotations

from drivers._common import page_of, vpn_of
from smmu.base.constants import PAGE_SHIFT, PAGE_SIZE
from smmu.base.errors import InvalidArgument
from smmu.notifier import MMUNotifier
from smmu.devices.shadow import ShadowPageTable


class PINNED(MMUNotifier):
    """A NIC with a memory-region table filled by long-term pins. No notifier hooks.

    :meth:`register` pins ``npages`` pages with ``pin_user_pages(longterm=True)`` and points
    the table at them; :meth:`access` pins on first touch a page that was not registered;
    :meth:`deregister` unpins. The table never changes behind the driver's back.

    Coherent only while the process keeps mapping the pinned frames: after ``fork`` the
    parent's next write breaks COW and gets a new page while the NIC keeps DMAing into the
    old one (now the child's): lost writes both ways (``LostWrite``, ``StaleRead``). munmap
    or ``MADV_DONTNEED`` leave it pointing at a frame the process no longer maps. Two fixes
    make it coherent again: ``madvise(MADV_DONTFORK)`` on the region (the child gets no
    mapping, so no COW), or ``Simulator(fork_copies_pinned=True)`` (5.9+:
    ``page_maybe_dma_pinned`` pages are copied for the child at fork, the parent keeps the
    pinned one).
    """

    name = "pinned"

    def __init__(self, sim, mm):
        super().__init__(sim, mm)
        self.mr = ShadowPageTable(name=f"pinned{mm.id}.mr", observer=self)
        self.pins: dict[int, int] = {}           # vpn -> pinned pfn

    def __repr__(self):
        return f"<{self.name} on {self.mm!r} pinned={len(self.pins)}>"

    def register(self, va, npages, write=True):
        """``ib_reg_mr``: pin ``npages`` pages from ``va`` long-term and map them (a
        generator). ``write`` pins for write (``FOLL_WRITE``: breaks COW now)."""
        if va % PAGE_SIZE or npages <= 0:
            raise InvalidArgument(f"register({va:#x}, {npages}): need a page-aligned address "
                                  "and npages >= 1")
        for i in range(npages):
            yield from self.pin(va + i * PAGE_SIZE, write)

    def pin(self, va, write):
        """Pin one page and point the table at it (replacing an older pin of it)."""
        vpn = vpn_of(va)
        pfn = yield from self.mm.pin_user_pages(page_of(va), write=write, longterm=True)
        old = self.pins.pop(vpn, None)
        if old is not None:
            self.mr.zap(vpn)
        self.pins[vpn] = pfn
        self.mr.map(vpn, pfn, bool(write))
        if old is not None:
            yield from self.mm.unpin_user_page(old)

    def translation(self, va):
        """``(pfn, writable)`` the memory region maps for ``va``, or None."""
        return self.mr.lookup(vpn_of(va))

    def deregister(self, va, npages):
        """``ib_dereg_mr``: forget and unpin ``npages`` pages from ``va`` (a generator)."""
        for i in range(npages):
            vpn = vpn_of(va) + i
            pfn = self.pins.pop(vpn, None)
            if pfn is not None:
                self.mr.zap(vpn)
                yield from self.mm.unpin_user_page(pfn)

    def close(self):
        """The verbs file is closed (``ib_uverbs_close`` -> ``ib_dereg_mr`` of every memory
        region, ``ib_umem_release`` -> ``unpin_user_page``): unpin everything, then drop
        the registration."""
        for vpn in sorted(self.pins):
            yield from self.deregister(vpn << PAGE_SHIFT, 1)
        yield from super().close()

    def access(self, va, *, write, value=None):
        """A DMA through the memory region; a page not registered yet is pinned first (for
        write if this access writes)."""
        vpn = vpn_of(va)
        while True:
            yield
            pfn = self.mr.access(vpn, write)
            if pfn >= 0:
                return self.dma_write(va, pfn, value) if write else self.dma_read(va, pfn)
            self.sim.charge("device_fault")
            yield from self.pin(va, write)
