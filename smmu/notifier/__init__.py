"""MMU notifiers: the plug-in point for secondary MMUs, in three API generations.

* :mod:`smmu.notifier.api`: the hook contract, documented next to each signature
  (:class:`MMUNotifier`, :class:`Range`, :class:`Event`, ``HOOKS``, ``API_HOOKS``,
  ``API_GENERATIONS``, :func:`check_driver_class`);
* :mod:`smmu.notifier.chain`: the per-mm subscription chain (:class:`NotifierSubscriptions`):
  registration and dispatch, the ``mmu_notifier_*`` calls the primary MM makes;
* :mod:`smmu.notifier.interval`: interval notifiers and the collision-retry protocol.

Everything public is importable from here (``from smmu.notifier import MMUNotifier``).
"""

from smmu.notifier.api import (API_GENERATIONS, API_HOOKS, HOOKS, Event, MMUNotifier, Range,
                               check_driver_class, failed, overrides)
from smmu.notifier.chain import NotifierSubscriptions
from smmu.notifier.interval import (MMUIntervalNotifier, mmu_interval_check_retry,
                                    mmu_interval_notifier_insert, mmu_interval_notifier_remove,
                                    mmu_interval_read_begin, mmu_interval_read_retry,
                                    mmu_interval_set_seq)

__all__ = ["API_GENERATIONS", "API_HOOKS", "HOOKS", "Event", "MMUIntervalNotifier", "MMUNotifier",
           "NotifierSubscriptions", "Range", "check_driver_class", "failed",
           "mmu_interval_check_retry",
           "mmu_interval_notifier_insert", "mmu_interval_notifier_remove",
           "mmu_interval_read_begin", "mmu_interval_read_retry", "mmu_interval_set_seq",
           "overrides"]
