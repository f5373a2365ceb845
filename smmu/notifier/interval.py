"""Interval notifiers (Linux 5.5+, ``mm/mmu_notifier.c``): the collision-retry protocol.

A driver that mirrors ``[start, start + length)`` inserts an :class:`MMUIntervalNotifier`
(``yield from mmu_interval_notifier_insert(sub, mm, start, length)``) and uses the sequence
protocol instead of counting ranges itself::

    while True:
        seq = yield from mmu_interval_read_begin(sub)     # waits while invalidating
        pfns = ... fault in and snapshot pfns, no references kept ...
        yield self.lock
        if mmu_interval_read_retry(sub, seq):             # an invalidation ran: try again
            self.lock.release(); continue
        ... program the device ...                        # note_map
        self.lock.release(); break

and its ``invalidate(range, cur_seq)`` takes the same lock (``trylock`` when the range is not
blockable, returning False if that fails), calls ``mmu_interval_set_seq(sub, cur_seq)`` and
zaps. The per-mm ``invalidate_seq`` is odd while any invalidation overlapping an interval is
in progress; inserts and removes made meanwhile are deferred to the last ``end``; ``remove``
waits for an invalidation in flight (the 2022 use-after-free fix).
"""

from __future__ import annotations

from smmu.base.constants import EOVERFLOW, ULONG_MAX
from smmu.base.errors import InvalidArgument, UsageError


class MMUIntervalNotifier:
    """``struct mmu_interval_notifier``. Subclass and override :meth:`invalidate`, or pass
    ``invalidate=callable`` (``callable(sub, range, cur_seq) -> bool``). ``owner`` is the
    driver object that owns it (``Range.owner`` equal to it marks the driver's own MIGRATE)."""

    def __init__(self, invalidate=None, *, owner=None, name: str | None = None):
        self._fn = invalidate
        self.owner = owner
        self.name = name or getattr(owner, "name", None) or type(self).__name__
        self.mm = None
        self.start = 0
        self.end = 0
        self.invalidate_seq = 0
        self._in_flight = 0
        self._inserted = False
        self._freed = False

    def free(self):
        """``kfree(interval_sub)``: the owner frees the subscription after
        :func:`mmu_interval_notifier_remove` returned ("Once this returns ops callbacks are no
        longer running on other CPUs and will not be called in future"). If the core still
        holds it anywhere (a deferred list, 319561669a59) that is a use after free the
        checker reports."""
        if self._inserted:
            raise UsageError(f"{self!r} is still inserted: mmu_interval_notifier_remove it "
                             "before freeing it")
        self._freed = True

    @property
    def freed(self) -> bool:
        """Has the owner freed this subscription (:meth:`free`)?"""
        return self._freed

    def invalidate(self, range, cur_seq):
        """Called for every invalidation overlapping the interval, before the PTEs change.
        Must call ``mmu_interval_set_seq(self, cur_seq)`` under the lock that the driver's
        ``read_retry`` check holds, and remove device mappings of ``range``. If
        ``range.blockable`` is False it must not sleep: ``trylock`` and return False when the
        lock is contended. Returning False for a blockable range is ``BadReturn``. A generator
        implementation may block."""
        if self._fn is None:
            raise UsageError(f"{type(self).__name__} has no invalidate: subclass "
                             "MMUIntervalNotifier and define invalidate(self, range, cur_seq), "
                             "or pass invalidate=...")
        return self._fn(self, range, cur_seq)

    @property
    def inserted(self) -> bool:
        """In its mm's interval tree (or about to be: an insert deferred to the last end),
        not yet removed: it holds a reference on the mm."""
        return self._inserted

    # convenience spellings of the module functions
    def read_begin(self):
        return mmu_interval_read_begin(self)

    def read_retry(self, seq: int) -> bool:
        return mmu_interval_read_retry(self, seq)

    def check_retry(self, seq: int) -> bool:
        return mmu_interval_check_retry(self, seq)

    def set_seq(self, cur_seq: int) -> None:
        mmu_interval_set_seq(self, cur_seq)

    def __repr__(self):
        where = f"[{self.start:#x}, {self.end:#x})" if self._inserted else "not inserted"
        return f"<MMUIntervalNotifier {self.name} {where} seq={self.invalidate_seq}>"


def _subs(mm):
    subs = getattr(mm, "notifier_subscriptions", None)
    if subs is None:
        raise UsageError(f"{mm!r} has no notifier_subscriptions: insert interval notifiers "
                         "on a process made by sim.new_process()")
    return subs


def mmu_interval_notifier_insert(sub: MMUIntervalNotifier, mm, start: int, length: int):
    """Insert ``sub`` over ``[start, start + length)`` (a generator: run it with
    ``yield from`` or ``sim.do``). ``length == 0`` or an overflowing range is
    ``InvalidArgument`` (Linux: -EOVERFLOW). The first insert on an mm registers the
    interval tree with ``mmu_notifier_register(NULL, mm)``, taking mmap_lock for write and
    ``mm_take_all_locks``, so that no invalidation is in flight when the tree appears (the
    caller must not hold mmap_lock: ``might_lock``). During an invalidation the insert is
    deferred to the last ``end`` and the new interval starts out "being invalidated"."""
    if not isinstance(sub, MMUIntervalNotifier):
        raise UsageError(f"{sub!r} is not an MMUIntervalNotifier")
    if sub._inserted:
        raise UsageError(f"{sub!r} is already inserted")
    if length <= 0 or start < 0 or start + length - 1 > ULONG_MAX:
        e = InvalidArgument(f"interval [{start:#x}, +{length:#x}) is empty or overflows "
                            "(-EOVERFLOW): give a positive length within the address space")
        e.errno = EOVERFLOW
        raise e
    subs = _subs(mm)
    if getattr(mm, "exiting", False):
        # "Must call with a mmget() held": WARN_ON(mm_users <= 0) -> -EINVAL
        raise InvalidArgument(f"{mm!r} is exiting (mm_users is 0): insert interval notifiers "
                              "on a live address space")
    if not subs.has_itree:
        # mmu_interval_notifier_insert: mmu_notifier_register(NULL, mm)
        register = getattr(mm, "mmu_notifier_register", None)
        yield from (register(None) if register is not None else subs.register(None))
    if sub._inserted:
        raise UsageError(f"{sub!r} was inserted meanwhile by another task")
    sub.mm, sub.start, sub.end = mm, start, start + length
    sub._inserted = True
    subs.interval_notifier_insert(sub)
    return 0


def mmu_interval_notifier_remove(sub: MMUIntervalNotifier):
    """Remove ``sub`` (a generator: it waits for an invalidation in flight to finish, so that
    after it returns ``invalidate`` cannot run)."""
    if not sub._inserted:
        raise UsageError(f"{sub!r} is not inserted")
    subs = _subs(sub.mm)
    seq = subs.interval_notifier_unlink(sub)
    sub._inserted = False
    if seq:
        yield subs.wait_seq_change(seq)
    if sub._in_flight:
        yield subs.wait_idle(sub)


def mmu_interval_read_begin(sub: MMUIntervalNotifier):
    """Begin a read-side critical section (a generator returning ``seq``); sleeps while the
    interval is being invalidated."""
    subs = _subs(sub.mm)
    seq = sub.invalidate_seq
    if seq == subs.invalidate_seq:   # is_invalidating for this interval
        yield subs.wait_seq_change(seq)
    return seq


def mmu_interval_read_retry(sub: MMUIntervalNotifier, seq: int) -> bool:
    """True if an invalidation ran since ``read_begin`` returned ``seq``. Call it under the
    driver lock that ``invalidate`` takes around ``set_seq``."""
    return sub.invalidate_seq != seq


def mmu_interval_check_retry(sub: MMUIntervalNotifier, seq: int) -> bool:
    """Lock-free hint that a retry will be needed (may miss a concurrent invalidation)."""
    return sub.invalidate_seq != seq


def mmu_interval_set_seq(sub: MMUIntervalNotifier, cur_seq: int) -> None:
    """From ``invalidate``, under the driver lock: make ``read_retry`` fail for readers."""
    sub.invalidate_seq = cur_seq
