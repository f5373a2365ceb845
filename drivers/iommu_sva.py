"""IOMMU shared virtual addressing: the device walks the CPU page tables through a PASID.

Models ``drivers/iommu/intel/svm.c`` (``intel_arch_invalidate_secondary_tlbs`` ->
``cache_tag_flush_range`` / ``cache_tag_flush_all``, ``intel_mm_release``,
``intel_svm_enable_prq`` / ``intel_prq_handle`` -> ``handle_mm_fault``) and the SVA glue in
``drivers/iommu/iommu-sva.c``. There is no shadow table: the IOMMU's page walker reads
``mm->pgd`` itself and only the IOTLB / device ATC caches translations.
"""

from __future__ import annotations

from drivers._common import device_gone, device_tlb, frame_generation, vpn_of, vpn_span, walk_pte
from smmu.base.constants import ULONG_MAX
from smmu.notifier import MMUNotifier


class IOMMU_SVA(MMUNotifier):
    """An SVA-capable device behind an IOMMU, bound to the mm through a PASID.

    * device access (:meth:`access`): IOTLB hit -> memory; miss -> the IOMMU walks the live
      CPU page table (one atomic step: the hardware walk, the IOTLB fill and the drain of
      in-flight walks by an invalidation wait descriptor are ordered by hardware); a PTE that
      is not present or forbids the access (a write to a read-only PTE) -> a page request
      (PRI): the host handles it with ``handle_mm_fault`` and the device walks again;
    * :meth:`arch_invalidate_secondary_tlbs`: flush the IOTLB for the range (everything for
      ``0, ULONG_MAX``); called by the CPU TLB flush under the PT lock: must not sleep;
    * :meth:`release`: clear the PASID entry (flush everything; no further access).

    Needs no fault masking: a walk of the live table cannot be stale, so the only state to
    keep coherent is the IOTLB, flushed at the same point the CPU TLB is. That is why the
    modern API's ``arch_invalidate_secondary_tlbs`` exists, and why it is the only
    generation this driver supports (``apis = ("modern",)``).

    Options: ``sets``, ``ways``, ``policy`` (IOTLB geometry).
    """

    name = "iommu_sva"
    apis = ("modern",)
    #: a write through a cached read-only entry faults without re-walking (an SMMU that
    #: caches the read-only attribute): see :class:`SMMU_SVA_NO_BTM`
    caches_read_only = False

    def __init__(self, sim, mm, *, sets: int = 16, ways: int = 4, policy: str = "lru"):
        super().__init__(sim, mm)
        self.iotlb = device_tlb("IOMMU_SVA IOTLB", sets, ways, policy,
                                name=f"iommu.pasid{mm.id}", observer=self)
        self.pasid = mm.id
        self.released = False
        self.page_requests = 0

    def __repr__(self):
        return f"<{self.name} pasid={self.pasid} on {self.mm!r} {self.iotlb!r}>"

    def access(self, va, *, write, value=None):
        """A DMA to ``va`` with this PASID."""
        vpn = vpn_of(va)
        while True:
            yield
            if self.released:
                raise device_gone(self, "the PASID was cleared by release")
            pfn = self.iotlb.lookup(self.pasid, vpn, write)
            if pfn >= 0:
                return self.dma_write(va, pfn, value) if write else self.dma_read(va, pfn)
            if write and self.caches_read_only:
                hit = self.iotlb.peek(self.pasid, vpn)
                if hit is not None and not hit[1]:
                    # the cached read-only entry faults the write without a new walk
                    yield from self.page_request(va, write)
                    continue
            hit = walk_pte(self.mm, va, write)      # hardware page walk
            if hit is not None:
                # cache W only for a write walk: a first write through a read walk's entry
                # re-walks (hardware sets A/D on the walk that grants write)
                self.iotlb.insert(self.pasid, vpn, hit[0], bool(write),
                                  frame_generation(self.sim, hit[0]))
                continue
            yield from self.page_request(va, write)

    def page_request(self, va, write):
        """PRI: the IOMMU queues a page request; ``intel_prq_handle`` runs the primary fault
        handler (``handle_mm_fault``) and responds; the device then walks again. A request
        the VMA does not allow fails (``SegmentationFault`` out of :meth:`access`)."""
        self.page_requests += 1
        self.sim.charge("device_fault")
        yield from self.mm.handle_mm_fault(va, write)

    def translation(self, va):
        """``(pfn, writable)`` of the IOTLB entry for ``va``, or None; touches no LRU state."""
        hit = self.iotlb.peek(self.pasid, vpn_of(va))
        return None if hit is None else (hit[0], hit[1])

    # ------------------------------------------------------------------ notifier hooks
    def arch_invalidate_secondary_tlbs(self, mm, start, end):
        """``intel_arch_invalidate_secondary_tlbs``: flush the IOTLB and device ATC for
        ``[start, end)``; ``start == 0, end == ULONG_MAX`` means everything. Called under the
        PT lock right after the CPU TLB flush: a plain (non-sleeping) method."""
        if start == 0 and end >= ULONG_MAX:
            self.iotlb.flush_asid(self.pasid)
        else:
            vpn0, vpn1 = vpn_span(start, end)
            if vpn0 < vpn1:
                self.iotlb.flush_range(self.pasid, vpn0, vpn1)
        self.sim.charge("secondary_flush")

    def release(self, mm):
        """``intel_mm_release``: clear the PASID table entry so the device can no longer walk
        this mm, and flush everything it cached."""
        self.released = True
        self.iotlb.flush_asid(self.pasid)
        self.sim.charge("secondary_flush")


class SMMU_SVA_NO_BTM(IOMMU_SVA):
    """An arm SMMUv3 doing SVA without broadcast TLB maintenance
    (``drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-sva.c``): it does not snoop the CPU's TLB
    invalidations, so only ``arch_invalidate_secondary_tlbs`` flushes it, and it caches the
    read-only attribute ("SMMU architecture ... permits negative caching of some mapping
    attributes including the read-only attribute. Hence without the flushing we fault
    continuously", the 6bbd42e2df8f thread): a write through a cached read-only entry
    raises a fault (IOPF -> ``handle_mm_fault``) and retries through the same entry until
    something flushes it. Correct from 6.6, where the flush of a permission upgrade reaches
    the notifier (``upgrade_flush_notify``); before, the device faults forever."""

    name = "smmu_sva_no_btm"
    caches_read_only = True
