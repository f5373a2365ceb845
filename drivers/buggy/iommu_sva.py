"""Broken variants of :class:`drivers.IOMMU_SVA`: each overrides only what breaks."""

from __future__ import annotations

from drivers.iommu_sva import IOMMU_SVA
from smmu.notifier import MMUNotifier


class SVASleepInFlush(IOMMU_SVA):
    """``arch_invalidate_secondary_tlbs`` waits for the invalidation to complete on a
    mutex-protected queue: it sleeps, but it runs under the PT lock."""

    breaks = ("arch_invalidate_secondary_tlbs runs under the page-table spinlock and must "
              "not sleep")
    mirrors = ("2017: amdgpu took a mutex in invalidate_page once c7ab0d2fdc84 moved it under "
               "the PT lock ('sleeping function called from invalid context')")
    expected = {"SleepInAtomic"}
    scenarios = ("munmap-during-device-fault", "cow-after-fork", "mprotect-downgrade",
                 "reclaim-while-device-reads", "migration")
    apis = ("modern",)

    def __init__(self, sim, mm, *, sets: int = 16, ways: int = 4, policy: str = "lru"):
        super().__init__(sim, mm, sets=sets, ways=ways, policy=policy)
        self.qi_mutex = sim.mutex("iommu->qi_mutex")

    def arch_invalidate_secondary_tlbs(self, mm, start, end):
        with (yield self.qi_mutex):
            super().arch_invalidate_secondary_tlbs(mm, start, end)


class SVAFlushInEnd(IOMMU_SVA):
    """An ATS/PASID device whose TLB is flushed only in ``invalidate_range_end`` (no
    ``arch_invalidate_secondary_tlbs`` under the PT lock): the deferral
    Documentation/mm/mmu_notifier.rst allows for a write-protect and forbids for a PTE that
    now points to a new page. Clean on write-protect scenarios; on a COW break the device
    reads the old page after the CPUs wrote the new one."""

    breaks = ("a TLB that caches the CPU page tables must be flushed under the PT lock when a "
              "PTE is updated to point to a new page (COW): the flush may be delayed to "
              "invalidate_range_end only for a write-protect")
    mirrors = ("Documentation/mm/mmu_notifier.rst, case B: 'If clearing the page table entry "
               "is not followed by a notify before setting the new pte/pmd value then you "
               "can break memory model like C11 or C++11 for the device'")
    expected = {"StaleRead", "LostWrite", "UseAfterFree"}
    scenarios = ("rst-cow-timeline",)
    apis = ("modern",)

    # no flush under the PT lock: the base's hook is not used (and may not coexist with
    # start/end, __mmu_notifier_register refuses that)
    arch_invalidate_secondary_tlbs = MMUNotifier.arch_invalidate_secondary_tlbs

    def invalidate_range_end(self, range):
        """Flush the IOTLB for the range, after the PTEs changed (what the .rst allows only
        for a write-protect)."""
        IOMMU_SVA.arch_invalidate_secondary_tlbs(self, self.mm, range.start, range.end)
