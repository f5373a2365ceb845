"""Broken variants of :class:`drivers.IOMMU_SVA`: each overrides only what breaks."""

from __future__ import annotations

from drivers.iommu_sva import IOMMU_SVA


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
