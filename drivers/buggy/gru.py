"""Broken variants of :class:`drivers.GRU`: each overrides only what breaks."""

from __future__ import annotations

from drivers.buggy._kinds import STALE
from drivers.gru import GRU


class GRUNoRangeActiveCheck(GRU):
    """The dropin never looks at ``ms_range_active``: after ``start`` flushed, a dropin walks
    the still-intact PTE and writes the old translation into the TLB inside the window (the
    chip's guard only drops dropins raced by a flush, and the flush already happened)."""

    breaks = ("a dropin must not run while a range is being invalidated (wait for "
              "ms_range_active == 0, then retry)")
    mirrors = None
    expected = {"MapInWindow"} | STALE
    scenarios = ("munmap-during-device-fault", "mprotect-downgrade", "overlapping-invalidations",
                 "migration", "reclaim-while-device-reads")
    apis = ("range_only", "modern")

    def range_active_busy(self):
        return False


class GRUFlushInEnd(GRU):
    """Counts the range in ``start`` but flushes only in ``end``: between the primary
    clearing or write-protecting the PTEs and ``end``, the TLB still translates to the old
    page and still allows writes."""

    breaks = ("secondary translations of a range must be gone when invalidate_range_start "
              "returns (before the primary changes the PTEs)")
    mirrors = None
    # without a flush in start the chip's dropin guard sees nothing either, so a dropin that
    # checked the count just before start maps inside the window
    expected = {"MapInWindow"} | STALE
    scenarios = ("mprotect-downgrade", "cow-after-fork", "overlapping-invalidations")
    apis = ("range_only", "modern")

    def invalidate_range_start(self, range):
        self.ms_range_active += 1
        return 0

    def invalidate_range_end(self, range):
        self.flush(range.start, range.end)
        self.ms_range_active -= 1
        self.ms_wait_queue.wake_all()


class GRUNoDropinGuard(GRU):
    """The GRU without the chip rule that drops a dropin raced by an invalidate: the dropin
    sees ``ms_range_active == 0``, reads the old PTE, ``start`` increments and flushes, and
    the dropin then writes the stale translation."""

    breaks = ("a lockless PTE walk must be re-validated (or the insert dropped) if an "
              "invalidation started after the walk")
    mirrors = ("gru_try_dropin (drivers/misc/sgi-gru/grufault.c) relies on 'magic hardware' "
               "to drop a dropin raced by a TLB invalidate; without it this window is real")
    expected = {"MapInWindow"} | STALE
    scenarios = ("munmap-during-device-fault", "mprotect-downgrade", "overlapping-invalidations",
                 "migration", "reclaim-while-device-reads", "cow-after-fork")
    apis = ("v2008", "range_only", "modern")

    def __init__(self, sim, mm, *, hw_dropin_guard: bool = False, sets: int = 16,
                 ways: int = 4, policy: str = "plru"):
        super().__init__(sim, mm, hw_dropin_guard=hw_dropin_guard, sets=sets, ways=ways,
                         policy=policy)


class GRUIgnoreInvalidatePage(GRU):
    """Implements only the range callbacks: fine where every invalidation is bracketed by
    start/end, but under the 2008 API ``invalidate_page`` is the only call for COW breaks,
    reclaim and writeback, and the TLB keeps the old page."""

    breaks = ("in v2008 invalidate_page is the only notification for single-page unmaps "
              "(do_wp_page, try_to_unmap_one, page_mkclean_one): it must flush the page")
    mirrors = ("the range-only proposal of the 2008 thread: a driver written for it is "
               "broken under the merged API")
    expected = set(STALE)
    scenarios = ("cow-after-fork", "reclaim-while-device-reads", "writeback-device-writes")
    apis = ("v2008",)

    def invalidate_page(self, mm, address):
        return None


class GRUReleaseLeavesTLB(GRU):
    """``release`` only marks the mm released and leaves the TLB entries: after
    ``exit_mmap`` frees the pages, the device still translates to them."""

    breaks = ("release must drop every secondary mapping before it returns: the pages are "
              "freed right after")
    mirrors = ("gru_release only sets ms_released; the real driver is safe because GRU "
               "contexts of an exiting mm are unloaded first")
    expected = {"UseAfterFree", "CrossMmAccess", "StaleRead", "LostWrite", "StaleMapping"}
    scenarios = ("exit-while-device-active",)
    apis = ("v2008", "range_only", "modern")

    def release(self, mm):
        self.ms_wait_queue.wake_all()
