"""Broken variants of :class:`drivers.HMM_MIRROR`: each overrides only what breaks."""

from __future__ import annotations

from drivers.buggy._kinds import STALE
from drivers.hmm_mirror import HMM_MIRROR
from smmu.notifier import Event


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


class HMMNoFinalize(HMM_MIRROR):
    """Migrates pages into its device memory and skips its own MIGRATE range (as dmirror
    does) but never re-points its device PTEs at the new pages
    (``dmirror_migrate_finalize_and_map`` left out): the device keeps translating through
    the system pages the migration freed."""

    breaks = ("a driver that skips the MIGRATE range it owns must update its own mirror to "
              "the migrated pages (the skip only says 'I handle this myself')")
    mirrors = ("issue 10: the owner skip as a trap; lib/test_hmm.c relies on "
               "dmirror_migrate_finalize_and_map after migrate_vma_pages")
    expected = STALE
    scenarios = ("device-migration",)
    apis = ("modern",)

    def _migrate_finalize_and_map(self, args):
        return None
        yield  # pragma: no cover - the step it leaves out


class HMMSkipAllMigrate(HMM_MIRROR):
    """Skips every ``MMU_NOTIFY_MIGRATE`` range, whoever migrates: the owner check of
    ``dmirror_interval_invalidate`` (``range->owner == dmirror->mdevice``) left out, so a
    peer device moving the pages into its memory leaves this one on the freed pages."""

    breaks = ("only the owner of a MIGRATE range (range->owner) may skip it; every other "
              "secondary MMU must invalidate")
    mirrors = ("the owner field of MMU_NOTIFY_MIGRATE (5.9, 'mm/notifier: add migration "
               "invalidation type'): before it, a driver could not tell its own migration "
               "from another device's")
    expected = STALE | {"MapInWindow"}
    scenarios = ("peer-device-migration",)
    apis = ("modern",)

    def interval_invalidate(self, range, cur_seq):
        if range.event is Event.MIGRATE:
            return True                        # no owner check
        return (yield from super().interval_invalidate(range, cur_seq))
