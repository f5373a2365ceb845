"""Broken variants of :class:`drivers.HMM_MIRROR`: each overrides only what breaks."""

from __future__ import annotations

from drivers.buggy._kinds import STALE
from drivers.hmm_mirror import HMM_MIRROR


class HMMNoSetSeq(HMM_MIRROR):
    """``invalidate`` zaps under the mutex but never calls ``mmu_interval_set_seq``: a fault
    whose ``hmm_range_fault`` snapshot predates the invalidation passes ``read_retry`` and
    programs the old page, inside the window or after it was freed."""

    breaks = ("the interval invalidate callback must call mmu_interval_set_seq under the "
              "lock that read_retry is checked under")
    mirrors = ("the 2019 interval-notifier consolidation (J. Gunthorpe, 'mm/mmu_notifier: add "
               "an interval tree notifier'): most of eight drivers lacked this collision "
               "retry")
    expected = {"MapInWindow"} | STALE
    scenarios = ("reclaim-while-device-reads", "migration", "overlapping-invalidations",
                 "munmap-during-device-fault")
    apis = ("modern",)

    def invalidate_locked(self, range, cur_seq):
        self.erase(range.start, range.end)           # no mmu_interval_set_seq


class HMMFailBlockable(HMM_MIRROR):
    """``invalidate`` uses ``mutex_trylock`` and returns False whenever the mutex is busy,
    blockable range or not: a blockable invalidation cannot fail, so the primary goes ahead
    and the mirror keeps its stale entries."""

    breaks = ("an interval invalidate may return False only for a non-blockable range; a "
              "blockable one must take the lock (sleep) and succeed")
    mirrors = None
    expected = {"BadReturn"} | {"MapInWindow"} | STALE
    scenarios = ("munmap-during-device-fault", "migration", "reclaim-while-device-reads",
                 "mprotect-downgrade", "overlapping-invalidations")
    apis = ("modern",)

    def lock_mutex(self, range):
        return self.mutex.trylock()                  # even for a blockable range
        yield
