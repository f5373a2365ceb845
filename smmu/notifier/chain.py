"""The per-mm subscription chain (``struct mmu_notifier_subscriptions``, ``mm/mmu_notifier.c``):
registration, and the dispatch of every hook to list subscriptions and interval notifiers.

The primary MM calls the ``mmu_notifier_*`` methods of ``mm.notifier_subscriptions`` at the
Linux call sites. Every hook, of a list subscription or an interval notifier, runs through
one helper (:meth:`NotifierSubscriptions._call`).
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

from smmu.base.constants import EAGAIN, PAGE_SIZE, ULONG_MAX
from smmu.base.errors import UsageError
from smmu.notifier.api import (API_GENERATIONS, API_HOOKS, HOOKS, Event, Range,
                               check_driver_class, failed, overrides)


def _page_span(address: int) -> tuple:
    """``[start, end)`` of the page holding ``address`` (what a one-page hook notifies)."""
    start = address - address % PAGE_SIZE
    return (start, start + PAGE_SIZE)


@dataclass
class NotifierSubscriptions:
    """``struct mmu_notifier_subscriptions``: the per-mm chain of subscriptions and interval
    notifiers, and the dispatch of every hook. The MM calls the ``mmu_notifier_*`` methods at
    the Linux call sites; all are generators (``yield from``) because hooks may block.

    ``nonblock_fail_calls_end``: model commit c2655835fd8c (2021). When False, a failed
    non-blockable start returns without calling ``end`` on the notifiers whose start had
    succeeded: the historical bug.
    """

    sched: object
    mm: object
    api: str = "modern"
    nonblock_fail_calls_end: bool = True
    subs: list = field(default_factory=list)          # newest first (hlist_add_head)
    # interval notifier state (mm/mmu_notifier.c)
    itree: list = field(default_factory=list)
    invalidate_seq: int = 2
    active_invalidate_ranges: int = 0
    deferred: list = field(default_factory=list)
    has_itree: bool = False   # set by the first interval insert and never cleared, as in Linux
    _wq: object = None

    def __post_init__(self):
        if self.api not in API_GENERATIONS:
            raise UsageError(f"unknown notifier_api {self.api!r}: use one of "
                             f"{list(API_GENERATIONS)}")
        self._wq = self.sched.waitqueue("mmu_notifier_wq")
        self._hooks = API_HOOKS[self.api]
        self._lists = {h: [] for h in HOOKS}

    def __repr__(self):
        return (f"<NotifierSubscriptions {self.api} {len(self.subs)} subs, {len(self.itree)} "
                f"intervals, seq={self.invalidate_seq}>")

    # ------------------------------------------------------------------ registration
    def _rebuild(self):
        for h in HOOKS:
            self._lists[h] = [s for s in self.subs if h in self._hooks and overrides(s, h)]


    def register(self, sub):
        """``mmu_notifier_register``: with mmap_lock held for write and all rmap locks taken
        (``mm_take_all_locks``), so that no invalidation is in flight while the chain
        changes. A generator."""
        check_driver_class(type(sub), self.api)
        if sub._registered:
            raise UsageError(f"{sub!r} is already registered")
        yield from self._take_all_locks()
        try:
            self.subs.insert(0, sub)
            sub._registered = True
            sub._released = False
            self._rebuild()
            self.sched.observer.notifier_register(self.mm, sub)
        finally:
            self._drop_all_locks()

    def _take_all_locks(self):
        take = getattr(self.mm, "mm_take_all_locks", None)
        if take is not None:
            yield from take()

    def _drop_all_locks(self):
        drop = getattr(self.mm, "mm_drop_all_locks", None)
        if drop is not None:
            drop()

    def get(self, cls, factory):
        """``mmu_notifier_get``: the subscription of class ``cls`` on this mm, made by
        ``factory()`` and registered if there is none yet; reference counted."""
        for s in self.subs:
            if type(s) is cls:
                s._users += 1
                return s
        sub = factory()
        yield from self.register(sub)
        return sub

    def put(self, sub):
        """``mmu_notifier_put``: drop a reference from :meth:`get`; the last one unregisters
        (without calling ``release``, as Linux's put does) once no hook can still run."""
        sub._users -= 1
        if sub._users > 0:
            return
        yield from self._unlink(sub)

    def unregister(self, sub):
        """``mmu_notifier_unregister``: calls ``release`` if it has not run, then waits until
        no hook of this subscription can still run (``synchronize_srcu``)."""
        if not sub._registered:
            raise UsageError(f"{sub!r} is not registered on this mm")
        if not sub._released and overrides(sub, "release"):
            sub._released = True
            yield from self._call(sub, "release", (self.mm,))
        yield from self._unlink(sub)

    def _unlink(self, sub):
        self.subs.remove(sub)
        sub._registered = False
        self._rebuild()
        self.sched.observer.notifier_unregister(self.mm, sub)
        if sub._in_flight:
            yield self.wait_idle(sub)

    # ------------------------------------------------------------------ calling hooks
    def _call(self, sub, hook, args, reason=None, span=None, *, interval=False):
        """Run one hook: ``sub.<hook>(*args)`` of a list subscription, or with ``interval``
        the ``invalidate`` of an interval notifier (counted as ``interval_invalidate``). A
        plain method runs as one step, a generator method is run with ``yield from``.
        ``reason``: run it atomic (a non-blockable range, under the PT lock). A list hook's
        call is reported to the observer (``hook_enter`` / ``hook_exit``, with ``span``: the
        ``(start, end)`` that invalidate_page, change_pte and range start notify about), and
        unregister waits for a list subscription's in-flight count to drop to 0."""
        sched = self.sched
        task = sched.running
        sched.hook_calls["interval_invalidate" if interval else hook] += 1
        sched.charge("notifier_call")
        if not interval and sub.may_sleep:
            sched.might_sleep(f"{sub.name}.{hook} (may_sleep=True)")
        if reason:
            sched.atomic_begin(reason, task)
        sub._in_flight += 1
        obs = None if interval else sched.observer
        if obs is not None:
            obs.hook_enter(sub, hook, args, span)
        try:
            ret = getattr(sub, hook)(*args)
            if isinstance(ret, types.GeneratorType):
                ret = yield from ret
        finally:
            sub._in_flight -= 1
            if obs is not None:
                obs.hook_exit(sub, hook, args, span)
            if reason:
                sched.atomic_end(reason, task)
            if not interval and sub._in_flight == 0 and self._wq.waiters:
                self._wq.wake_all()
        return ret

    def _snapshot(self, hook):
        # SRCU: a subscription unlinked during the walk is still called if the walk saw it
        return list(self._lists[hook])

    def mmu_notifier_release(self):
        """``__mmu_notifier_release`` from ``exit_mmap``: interval notifiers get a RELEASE
        range over everything, then every subscription's ``release``, newest first."""
        if self.has_itree:
            rng = Range(self.mm, 0, ULONG_MAX + 1, Event.RELEASE, True)
            seq = self._itree_inv_start(rng)
            for isub in self._itree_overlapping(rng):   # mn_itree_release
                ret = yield from self._call(isub, "invalidate", (rng, seq), interval=True)
                self.sched.observer.interval_release(isub, rng, ret)
            self._itree_inv_end()
        for sub in list(self.subs):
            if not sub._released:
                sub._released = True
                if overrides(sub, "release"):
                    yield from self._call(sub, "release", (self.mm,))

    def mmu_notifier_clear_flush_young(self, start, end):
        young = False
        for sub in self._snapshot("clear_flush_young"):
            young |= bool((yield from self._call(sub, "clear_flush_young", (self.mm, start, end))))
        return young

    def mmu_notifier_clear_young(self, start, end):
        if "clear_young" not in self._hooks:
            return (yield from self.mmu_notifier_clear_flush_young(start, end))
        young = False
        for sub in self._snapshot("clear_young"):
            young |= bool((yield from self._call(sub, "clear_young", (self.mm, start, end))))
        return young

    def mmu_notifier_test_young(self, address):
        for sub in self._snapshot("test_young"):
            if (yield from self._call(sub, "test_young", (self.mm, address))):
                return True
        return False

    def mmu_notifier_change_pte(self, address, pte):
        """v2008 ``__mmu_notifier_change_pte`` (2.6.32): ``change_pte``, or ``invalidate_page``
        for a notifier that has none ("Some drivers don't have change_pte, so we must call
        invalidate_page in that case")."""
        if self.api != "v2008":
            raise UsageError(f"change_pte does not exist in notifier_api {self.api!r}")
        span = _page_span(address)
        for sub in list(self.subs):
            if overrides(sub, "change_pte"):
                yield from self._call(sub, "change_pte", (self.mm, address, pte), span=span)
            elif overrides(sub, "invalidate_page"):
                yield from self._call(sub, "invalidate_page", (self.mm, address), span=span)

    def mmu_notifier_invalidate_page(self, address):
        """v2008 ``__mmu_notifier_invalidate_page``."""
        if self.api != "v2008":
            raise UsageError(f"invalidate_page does not exist in notifier_api {self.api!r}: "
                             "bracket the change with invalidate_range_start/end")
        span = _page_span(address)
        for sub in self._snapshot("invalidate_page"):
            yield from self._call(sub, "invalidate_page", (self.mm, address), span=span)

    def mmu_notifier_arch_invalidate_secondary_tlbs(self, start, end):
        """Modern: from the TLB flush, under the PT lock (atomic)."""
        if self.api != "modern":
            return
        for sub in self._snapshot("arch_invalidate_secondary_tlbs"):
            yield from self._call(sub, "arch_invalidate_secondary_tlbs", (self.mm, start, end),
                                  "arch_invalidate_secondary_tlbs under the PT lock")

    def mmu_notifier_invalidate_range_start(self, rng):
        """``mmu_notifier_invalidate_range_start``: blockable. Returns 0."""
        if not rng.blockable:
            raise UsageError("use mmu_notifier_invalidate_range_start_nonblock for a "
                             "non-blockable range")
        # Linux's wrapper has might_sleep(); here a hook that really sleeps (or declares
        # may_sleep) is reported instead, so that rmap_locks="spinlock" with drivers that
        # never sleep (the configuration the range-only proposal assumed) is not flagged.
        return (yield from self._range_start(rng))

    def mmu_notifier_invalidate_range_start_nonblock(self, rng):
        """Modern: may fail with ``-EAGAIN``; then the caller must skip the range and must not
        call end (the notifiers' ends were already called, when ``nonblock_fail_calls_end``)."""
        if rng.blockable:
            raise UsageError("mmu_notifier_invalidate_range_start_nonblock needs a Range made "
                             "with blockable=False (and the same Range passed to end)")
        return (yield from self._range_start(rng))

    def _range_start(self, rng):
        obs = self.sched.observer
        obs.range_start(self.mm, rng)
        self.sched.stats["range_start"] += 1
        reason = None if rng.blockable else "non-blockable invalidate_range_start"
        if self.has_itree:
            # __mmu_notifier_invalidate_range_start: intervals first; a refusal there returns
            # before any hlist start. Note the converse gap, kept as Linux has it: if an
            # interval succeeded and an hlist notifier then refuses, nobody calls
            # mn_itree_inv_end, so invalidate_seq stays odd and read_begin waits for good.
            ret = yield from self._itree_invalidate(rng, reason)
            if ret:
                obs.range_start_failed(self.mm, rng)
                return ret
        ret = 0
        for sub in self._snapshot("invalidate_range_start"):
            r = yield from self._call(sub, "invalidate_range_start", (rng,), reason,
                                      (rng.start, rng.end))
            obs.range_start_returned(sub, rng, r)
            # only a non-blockable start may fail, and only in the modern API; any other
            # failure is a BadReturn the observer reports, and dispatch goes on
            if failed(r) and self.api == "modern" and not rng.blockable:
                ret = -EAGAIN
        if ret:
            # mn_hlist_invalidate_range_start: "any that succeeded start are expecting their
            # end to be called. Do so now." (c2655835fd8c, 2021); before it they never were.
            obs.range_start_failed(self.mm, rng)
            if self.nonblock_fail_calls_end:
                for sub in self._snapshot("invalidate_range_end"):
                    obs.range_start_unwind(sub, rng)
                    yield from self._call(sub, "invalidate_range_end", (rng,), reason)
        return ret

    def mmu_notifier_invalidate_range_end(self, rng):
        """``mmu_notifier_invalidate_range_end``: after the PTEs are cleared and flushed."""
        obs = self.sched.observer
        ending = self._snapshot("invalidate_range_end")
        obs.range_end(self.mm, rng, ending)
        reason = None if rng.blockable else "non-blockable invalidate_range_end"
        if self.has_itree:
            self._itree_inv_end()
        done = 0
        try:
            for sub in ending:
                yield from self._call(sub, "invalidate_range_end", (rng,), reason)
                obs.range_end_over(sub, rng)
                done += 1
        finally:
            for sub in ending[done:]:      # a hook raised: the rest are not called either
                obs.range_end_over(sub, rng)

    # ------------------------------------------------------------------ interval notifiers
    def _itree_overlapping(self, rng):
        return [s for s in self.itree if s.start < rng.end and rng.start < s.end]

    def _itree_inv_start(self, rng):
        # mn_itree_inv_start_range, under subscriptions->lock
        self.active_invalidate_ranges += 1
        if self._itree_overlapping(rng):
            self.invalidate_seq |= 1
        return self.invalidate_seq

    def is_invalidating(self) -> bool:
        return bool(self.invalidate_seq & 1)

    def _itree_inv_end(self):
        # mn_itree_inv_end
        self.active_invalidate_ranges -= 1
        if self.active_invalidate_ranges or not self.is_invalidating():
            return
        self.invalidate_seq += 1
        self.sched.observer.interval_invalidations_done(self.mm)
        for isub, op in self.deferred:
            if op == "insert":
                self.itree.append(isub)
            elif isub in self.itree:
                self.itree.remove(isub)
        self.deferred.clear()
        self._wq.wake_all()

    def _itree_invalidate(self, rng, reason):
        # mn_itree_invalidate
        seq = self._itree_inv_start(rng)
        for isub in self._itree_overlapping(rng):
            ret = yield from self._call(isub, "invalidate", (rng, seq), reason, interval=True)
            self.sched.observer.interval_invalidate(isub, rng, ret)
            # a blockable range may not be refused (BadReturn, reported by the observer)
            if not ret and not rng.blockable:
                self._itree_inv_end()
                return -EAGAIN
        return 0

    # ------------------------------------------------------------------ interval tree changes
    def interval_notifier_insert(self, isub) -> None:
        """``__mmu_interval_notifier_insert`` (``isub`` has its range set): during an
        invalidation the insert is deferred to the last ``end`` and the new interval starts
        out "being invalidated"."""
        if not self.has_itree:
            # the first insert: Linux takes mmap_lock write here, so no range is in flight
            self.has_itree = True
        if self.active_invalidate_ranges:
            if self.is_invalidating():
                self.deferred.append((isub, "insert"))
            else:
                self.invalidate_seq |= 1
                self.itree.append(isub)
            isub.invalidate_seq = self.invalidate_seq
        else:
            # "The starting seq for a subscription not under invalidation should be odd, not
            # equal to the current invalidate_seq"
            isub.invalidate_seq = self.invalidate_seq - 1
            self.itree.append(isub)

    def interval_notifier_unlink(self, isub) -> int:
        """The unlinking part of ``mmu_interval_notifier_remove``: deferred to the last
        ``end`` while invalidating. Returns the sequence number to wait past (0: none)."""
        if self.is_invalidating():
            pending = [d for d in self.deferred if d[0] is isub and d[1] == "insert"]
            if pending:
                self.deferred.remove(pending[0])
                return 0
            self.deferred.append((isub, "remove"))
            return self.invalidate_seq
        self.itree.remove(isub)
        return 0

    def wait_seq_change(self, seq: int):
        """What to yield to sleep until ``invalidate_seq`` is no longer ``seq`` (the
        invalidation in progress ended)."""
        return self._wq.wait_until(lambda: self.invalidate_seq != seq)

    def wait_idle(self, sub):
        """What to yield to sleep until no hook of ``sub`` is running (``synchronize_srcu``)."""
        return self._wq.wait_until(lambda: sub._in_flight == 0)
