"""``warm_up()``: load every numba kernel a coherence run uses, once per process."""

from __future__ import annotations

import drivers
from smmu.explore import run_once
from smmu.runtime.schedules import RoundRobin

_DONE: list = []

#: (scenario, driver, api) runs that between them call every jitted kernel of a run: the
#: radix page tables and frames (every run), the shadow page table (KVM), the device TLB
#: (GRU, IOMMU SVA), the oracle's structural scan (at the end of every run)
_RUNS = (("cow-after-fork", drivers.KVM, "v2008"), ("munmap-during-device-fault", drivers.GRU,
                                                    "range_only"),
         ("munmap-during-device-fault", drivers.IOMMU_SVA, "modern"))


def warm_up() -> None:
    """Run a few small scenarios so that the JIT's first-call cost (compiling or loading the
    cached kernels) is paid now, not inside the first example of a test."""
    if _DONE:
        return
    for scenario, cls, api in _RUNS:
        run_once(scenario, cls, api, RoundRobin(), 0, stop_on_violation=False)
    _DONE.append(True)
