"""smmu: prove that a secondary MMU stays coherent with the Linux page tables.

The public surface (DESIGN.md "Public surface")::

    import smmu, drivers
    from smmu import Simulator, MMUNotifier, Range, Event, PAGE_SIZE
"""

from smmu.base.constants import PAGE_SIZE
from smmu.base.errors import (VIOLATION_KINDS, BadDriver, InvalidArgument, OutOfMemory,
                              SegmentationFault, SmmuError, UsageError, Violation)
from smmu.notifier import (API_GENERATIONS, Event, MMUIntervalNotifier, MMUNotifier, Range,
                           mmu_interval_check_retry, mmu_interval_notifier_insert,
                           mmu_interval_notifier_remove, mmu_interval_read_begin,
                           mmu_interval_read_retry, mmu_interval_set_seq)
from smmu.runtime import COSTS, Result, Schedule
from smmu.sim import Simulator

__version__ = "0.1.0"

__all__ = ["API_GENERATIONS", "COSTS", "PAGE_SIZE", "VIOLATION_KINDS", "BadDriver", "Event",
           "InvalidArgument", "MMUIntervalNotifier", "MMUNotifier", "OutOfMemory", "Range",
           "Result", "Schedule", "SegmentationFault", "Simulator", "SmmuError", "UsageError",
           "Violation", "mmu_interval_check_retry", "mmu_interval_notifier_insert",
           "mmu_interval_notifier_remove", "mmu_interval_read_begin", "mmu_interval_read_retry",
           "mmu_interval_set_seq"]
