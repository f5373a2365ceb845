"""The per-mm subscription chain (``struct mmu_notifier_subscriptions``, ``mm/mmu_notifier.c``):
registration, the lifetime rules (unregister, get/put, release) and the dispatch of every
hook to list subscriptions and interval notifiers.

The primary MM calls the ``mmu_notifier_*`` methods of ``mm.notifier_subscriptions`` at the
Linux call sites. Every hook, of a list subscription or an interval notifier, runs through
one helper (:meth:`NotifierSubscriptions._call`).

Lifetime, as Linux has it (6.6 ``mm/mmu_notifier.c``): every walk of the list (each
``invalidate_range_start``, each ``invalidate_range_end``, each young / change_pte /
invalidate_page / arch_invalidate_secondary_tlbs call, the release pass) is one read-side
section of the global SRCU domain (classic RCU before 3.7, ``notifier_rcu="rcu"``) and
follows the live list: a subscription unlinked before the walk reaches it is not called.
``mmu_notifier_unregister`` calls ``release`` (if the subscription is still linked), unlinks
it, then ``synchronize_srcu``: once it returns no hook of that subscription runs again, in any
walk. ``mmu_notifier_put`` unlinks at once and frees asynchronously (``call_srcu``, then
``free_notifier``). ``__mmu_notifier_release`` calls every ``release`` and unlinks every list
subscription (interval notifiers stay in the tree until removed). A hook of a subscription
called after it was unlinked would be a bug of this module: :meth:`_call` raises
:class:`~smmu.base.errors.CoreBug`.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

from smmu.base.constants import EAGAIN, PAGE_SIZE, ULONG_MAX
from smmu.base.errors import BadDriver, CoreBug, SmmuError, UsageError
from smmu.notifier.api import (API_GENERATIONS, API_HOOKS, HOOKS, Event, Range,
                               check_driver_class, failed, overrides)
from smmu.runtime.observer import handlers
from smmu.runtime.scheduler import Counts
from smmu.runtime.task import raised_in_smmu

#: ``notifier_rcu``: how list walks are protected. "srcu": the global SRCU domain (3.7+,
#: 21a92735f660: hooks may sleep); "rcu": ``rcu_read_lock`` (2.6.27..3.6: a walk is atomic)
NOTIFIER_RCU = ("srcu", "rcu")
#: ``release_order``: "release_first" (3.10+, d34883d4e35c): ``release`` of every
#: subscription, then unlink them all; ``mmu_notifier_unregister`` calls ``release`` and
#: then unlinks with ``hlist_del_init_rcu`` (a no-op if exit unlinked it meanwhile);
#: "release_first_del_rcu" (3.6..3.8, 3ad3d901bbcf): the same order, but unregister
#: unlinks with ``hlist_del_rcu``, which dereferences the NULL ``pprev`` of a node exit's
#: release pass already unhashed (751efd8610d3: "hlist_del_rcu()  <--- NULL pointer
#: deref."): ``ListCorruption``; "unlink_first" (2.6.27..3.5, and 3.9's 751efd8610d3):
#: unlink each subscription, then call its ``release``
RELEASE_ORDERS = ("release_first", "release_first_del_rcu", "unlink_first")


def check_chain_options(notifier_rcu: str, release_order: str) -> None:
    """``UsageError`` saying what to use for a bad ``notifier_rcu`` or ``release_order``."""
    if notifier_rcu not in NOTIFIER_RCU:
        raise UsageError(f"unknown notifier_rcu {notifier_rcu!r}: use one of "
                         f"{list(NOTIFIER_RCU)}")
    if release_order not in RELEASE_ORDERS:
        raise UsageError(f"unknown release_order {release_order!r}: use one of "
                         f"{list(RELEASE_ORDERS)}")


_GENERATOR = types.GeneratorType

#: what ``yield from`` of a walk that is over runs: the preemption point after a start
_PREEMPT = (None,)
#: ... and nothing, after an end: an iterator that is over (``yield from`` of it costs less
#: than of an empty tuple, which makes a new iterator each time)
_OVER = iter(())
#: the lists of a chain with no subscription
_NO_LISTS = {h: () for h in HOOKS}
#: the RCU domain of each ``notifier_rcu``
_DOMAIN = {k: f"mmu_notifier {k}" for k in NOTIFIER_RCU}
#: no plan yet (:meth:`NotifierSubscriptions._make_plan`): no observer is this one's first
_NO_PLAN = (object(),)
#: the observer events of a range's walk (:meth:`NotifierSubscriptions._events`)
_RANGE_EVENTS = ("range_start", "hook_enter", "hook_exit", "range_start_returned",
                 "range_end", "range_end_over")


class _Section:
    """``with``: one read-side section of an RCU domain (``srcu_read_lock`` ..
    ``srcu_read_unlock``)."""

    __slots__ = ("srcu", "tok")

    def __init__(self, srcu):
        self.srcu = srcu

    def __enter__(self):
        self.tok = self.srcu.read_lock()

    def __exit__(self, *exc):
        self.srcu.read_unlock(self.tok)
        return False


def _page_span(address: int) -> tuple:
    """``[start, end)`` of the page holding ``address`` (what a one-page hook notifies)."""
    start = address - address % PAGE_SIZE
    return (start, start + PAGE_SIZE)


@dataclass
class NotifierSubscriptions:
    """``struct mmu_notifier_subscriptions``: the per-mm chain of subscriptions and interval
    notifiers, and the dispatch of every hook. The MM calls the ``mmu_notifier_*`` methods at
    the Linux call sites; all are generators (``yield from``) because hooks may block.

    ``subs`` is the list (``hlist``) as it is now, newest first: linked subscriptions only.
    ``nonblock_fail_calls_end``: model commit c2655835fd8c (2021). When False, a failed
    non-blockable start returns without calling ``end`` on the notifiers whose start had
    succeeded: the historical bug. ``notifier_rcu``, ``release_order``: see
    :data:`NOTIFIER_RCU`, :data:`RELEASE_ORDERS`.
    """

    sched: object
    mm: object
    api: str = "modern"
    nonblock_fail_calls_end: bool = True
    notifier_rcu: str = "srcu"
    release_order: str = "release_first"
    #: 5.5..5.17 (before 319561669a59): mmu_interval_notifier_remove waits for
    #: ``invalidate_seq`` to move with a lockless read, so it returns as soon as
    #: mn_itree_inv_end bumped it, before the deferred list (still holding the subscription
    #: being removed) is processed
    interval_remove_race: bool = False
    subs: list = field(default_factory=list)          # newest first (hlist_add_head)
    # interval notifier state (mm/mmu_notifier.c)
    itree: list = field(default_factory=list)
    invalidate_seq: int = 2
    active_invalidate_ranges: int = 0
    deferred: list = field(default_factory=list)
    has_itree: bool = False   # set by the first interval insert and never cleared, as in Linux
    _wq: object = None
    #: a range's walk from a task's step runs as plain calls while its hooks are plain
    #: methods (False: always the general walk, a generator; tests/test_fast_walks.py
    #: checks that both give the same runs). Runs that record their steps (reports) take
    #: the general walk, so that each step is logged where it always was.
    _fast_walks = True

    @property
    def fast_walks(self) -> bool:
        return self._fast_walks

    @fast_walks.setter
    def fast_walks(self, on: bool) -> None:
        self._fast_walks = on
        self._plan = _NO_PLAN

    def __post_init__(self):
        if self.api not in API_GENERATIONS:
            raise UsageError(f"unknown notifier_api {self.api!r}: use one of "
                             f"{list(API_GENERATIONS)}")
        check_chain_options(self.notifier_rcu, self.release_order)
        self._wq = self.sched.waitqueue("mmu_notifier_wq")
        self._hooks = API_HOOKS[self.api]
        self._lists = dict(_NO_LISTS)            # (_rebuild makes new lists, never changes one)
        # the one global domain of mm/mmu_notifier.c (DEFINE_STATIC_SRCU(srcu))
        srcu = self.notifier_rcu == "srcu"
        self.srcu = self.sched.rcu_domain(_DOMAIN[self.notifier_rcu], sleepable=srcu)
        self._itree_counted: Counts = Counts()     # ranges whose start counted the itree
        self._ev_obs = None                        # the observer _ev was worked out for
        self._srcu = srcu                          # walks may open lazy sections
        self._ev = None
        self._plan = _NO_PLAN                          # the range walks' plan (_make_plan)

    def __repr__(self):
        return (f"<NotifierSubscriptions {self.api} {len(self.subs)} subs, {len(self.itree)} "
                f"intervals, seq={self.invalidate_seq}>")

    # ------------------------------------------------------------------ the list
    def _rebuild(self):
        # new lists, never changed in place: a walk iterating the old one is a snapshot
        for h in HOOKS:
            self._lists[h] = [s for s in self.subs if h in self._hooks and overrides(s, h)]
        self._plan = _NO_PLAN

    def _link(self, sub):
        # hlist_add_head_rcu, under subscriptions->lock
        self.subs.insert(0, sub)
        sub._hashed = True
        self._rebuild()
        self.sched.observer.notifier_register(self.mm, sub)

    def _unlink(self, sub) -> bool:
        """``hlist_del_init_rcu``: take ``sub`` off the list (a walk that reaches its place
        later skips it). False if it was not linked (already unlinked by release)."""
        if not sub._hashed:
            return False
        self.subs.remove(sub)
        sub._hashed = False
        self._rebuild()
        self.sched.observer.notifier_unregister(self.mm, sub)
        return True

    def _reach(self, hook):
        """``hlist_for_each_entry_rcu`` over the subscriptions implementing ``hook``: each
        is returned when the walk reaches it, if it is still linked then (one unlinked
        meanwhile is skipped; one linked meanwhile is at the head, behind the walk)."""
        for sub in self._lists[hook]:          # a snapshot: _rebuild makes new lists
            if sub._hashed:
                yield sub

    def _section(self):
        """One read-side section of the notifier SRCU (or RCU) domain: a walk
        (``with self._section(): ...``)."""
        return _Section(self.srcu)

    # ------------------------------------------------------------------ registration
    def _mm_exiting(self) -> bool:
        return bool(getattr(self.mm, "exiting", False))

    def register(self, sub):
        """``__mmu_notifier_register``: the caller holds mmap_lock for write
        (``MM.mmu_notifier_register``); all rmap locks are taken here
        (``mm_take_all_locks``), so that no invalidation is in flight while the chain
        changes. ``sub=None`` is the interval tree's registration
        (``mmu_notifier_register(NULL, mm)`` from the first interval insert): it sets
        ``has_itree``. A generator."""
        if self._mm_exiting():
            # BUG_ON(atomic_read(&mm->mm_users) <= 0)
            raise UsageError(f"{self.mm!r} is exiting (mm_users is 0): a notifier can only be "
                             "registered on a live address space")
        if sub is not None:
            check_driver_class(type(sub), self.api)
            if sub._hashed or sub._registered:
                raise UsageError(f"{sub!r} is already registered")
        yield from self._take_all_locks()
        try:
            if self._mm_exiting():
                # exit began while this waited for the locks: only a caller holding no
                # mm_users reference can see that, and Linux's BUG_ON(mm_users <= 0) is
                # for it (exit_mmap's ranges run without mmap_lock: a tree appearing now
                # would meet an end without its start)
                raise UsageError(f"{self.mm!r} began exiting while mmu_notifier_register "
                                 "waited for its locks: hold an mm_users reference "
                                 "(mm.mmget_not_zero() ... mm.mmput()) across "
                                 "mmu_notifier_register and mmu_interval_notifier_insert, "
                                 "as Linux requires")
            if sub is None:
                self.has_itree = True
                self._plan = _NO_PLAN
            else:
                sub._registered = True
                sub._freed = False
                sub._users = 1
                self._link(sub)
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

    def get(self, cls, factory=None):
        """``mmu_notifier_get_locked``: the linked subscription of class ``cls`` on this mm
        with one more reference, or a new one (``factory()``, else ``cls.alloc_notifier``)
        registered. Pair every get with a :meth:`put`."""
        for s in self.subs:
            if type(s) is cls and s._registered:
                s._users += 1
                return s
        sub = factory() if factory is not None else cls.alloc_notifier(self.sched, self.mm)
        yield from self.register(sub)
        return sub

    def put(self, sub):
        """``mmu_notifier_put``: drop a reference from :meth:`get`. The last one unlinks the
        subscription at once (walks that reach it later skip it) and frees it
        asynchronously: after a grace period its ``free_notifier`` runs (``call_srcu`` ->
        ``mmu_notifier_free_rcu``). ``release`` is not called ("the get/put flow only calls
        ops->release when the mm_struct is destroyed"). Returns at once."""
        if not sub._registered or sub._users <= 0:
            raise UsageError(f"put of {sub!r} without a matching get (WARN_ON(!users))")
        sub._users -= 1
        if sub._users:
            return
        sub._registered = False
        self._unlink(sub)
        self.srcu.call(lambda: self._free(sub))
        return
        yield  # pragma: no cover - a generator like every chain operation

    def _free(self, sub):
        # mmu_notifier_free_rcu: "free_notifier() is only called after the mmu_notifier has
        # been fully put, calls to any ops callback are prevented and no ops callbacks are
        # currently running. It is called from a SRCU callback and cannot sleep."
        self._retire(sub)
        fn = getattr(sub, "free_notifier", None)
        if fn is not None:
            ret = fn()
            if isinstance(ret, types.GeneratorType):
                raise BadDriver(f"{type(sub).__name__}.free_notifier runs from an SRCU "
                                "callback and cannot sleep: make it a plain method")

    def _retire(self, sub):
        if sub._in_flight:
            raise CoreBug(f"{sub!r}: a hook is still running after its grace period ended")
        sub._freed = True

    def mmu_notifier_synchronize(self):
        """``mmu_notifier_synchronize`` (``srcu_barrier``): wait until every subscription
        put so far has been freed."""
        yield self.srcu.barrier()

    def unregister(self, sub):
        """``mmu_notifier_unregister``: ``release`` if the subscription is still linked
        (exit_mmap's release pass may have unlinked it already), unlink it, then
        ``synchronize_srcu``: when this returns no hook of ``sub`` is running and none will
        run. With ``release_order="unlink_first"`` (2.6.27) it unlinks before ``release``;
        with ``"release_first_del_rcu"`` (3.6..3.8) finding it unlinked after ``release`` is
        ``ListCorruption``."""
        if not sub._registered:
            raise UsageError(f"{sub!r} is not registered on this mm")
        sub._registered = False
        if self.release_order == "unlink_first":
            # 2.6.27: hlist_del_rcu under the lock, then ->release under rcu_read_lock
            if self._unlink(sub) and overrides(sub, "release"):
                with self._section():
                    yield from self._call(sub, "release", (self.mm,), unlinked_ok=True)
        elif sub._hashed:
            with self._section():
                if overrides(sub, "release"):
                    yield from self._call(sub, "release", (self.mm,))
            if self.release_order == "release_first_del_rcu" and not sub._hashed:
                # 3.6..3.8: "spin_lock(&mm->mmu_notifier_mm->lock); hlist_del_rcu(&mn->
                # hlist);" on a node __mmu_notifier_release unhashed while we ran ->release
                self.sched.violation(
                    "ListCorruption", f"mmu_notifier_unregister({sub.name}) unlinks with "
                    "hlist_del_rcu a subscription exit's __mmu_notifier_release already took "
                    "off the list (hlist_del_init_rcu: pprev is NULL): the kernel oopses "
                    "(751efd8610d3 'mmu_notifier_unregister NULL Pointer deref and multiple "
                    "->release() callouts'); ->release ran twice", driver=sub.name)
            # "Can not use list_del_rcu() since __mmu_notifier_release can delete it before
            # we hold the lock": hlist_del_init_rcu, a no-op if release already did
            self._unlink(sub)
        # "Wait for any running method to finish, of course including ->release if it was
        # run by mmu_notifier_release instead of us."
        yield self.srcu.synchronize()
        self._retire(sub)

    # ------------------------------------------------------------------ calling hooks
    def _call(self, sub, hook, args, reason=None, span=None, *, interval=False,
              unlinked_ok=False):
        """Run one hook: ``sub.<hook>(*args)`` of a list subscription, or with ``interval``
        the ``invalidate`` of an interval notifier (counted as ``interval_invalidate``). A
        plain method runs as one step, a generator method is run with ``yield from``.
        ``reason``: run it atomic (a non-blockable range, under the PT lock). A list hook's
        call is reported to the observer (``hook_enter`` / ``hook_exit``, with ``span``: the
        ``(start, end)`` that invalidate_page, change_pte and range start notify about).
        A list hook starts only while its subscription is linked (``unlinked_ok``: 2.6.27's
        ``release`` after the unlink) and never after its unregister or free returned.
        (The hot walks call :meth:`_begin` themselves and :meth:`_rest` only for a hook
        that is a generator: one generator frame less per plain hook.)"""
        ret, task = self._begin(sub, hook, args, reason, span, interval, unlinked_ok)
        if type(ret) is _GENERATOR:
            ret = yield from self._rest(sub, hook, args, reason, span, interval, task, ret)
        return ret

    def _begin(self, sub, hook, args, reason, span, interval, unlinked_ok=False):
        """The first part of :meth:`_call`, a plain function: the checks, the accounting,
        the hook's call. A plain hook is over when it returns (``(result, task)``); a
        generator hook's generator is returned instead, for :meth:`_rest` to run."""
        sched = self.sched
        if not interval and (sub._freed or not (sub._hashed or unlinked_ok)):
            raise CoreBug(f"{hook} of {sub!r} called after it was "
                          f"{'freed' if sub._freed else 'unlinked'}: the chain must skip it")
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
        except BaseException as e:
            self._hook_raised(sub, hook, args, reason, span, interval, task, e)
            raise
        if type(ret) is not _GENERATOR:
            if obs is None:
                self._over(sub, hook, args, reason, span, interval, task)
            else:                              # _over, inline: the usual case
                sub._in_flight -= 1
                obs.hook_exit(sub, hook, args, span)
                if reason:
                    sched.atomic_end(reason, task)
        return ret, task

    def _hook_raised(self, sub, hook, args, reason, span, interval, task, e):
        """The plain hook call :meth:`_begin` made raised ``e`` (the caller re-raises it):
        a driver's exception is a finding (:meth:`_raised`), and the call is over."""
        try:
            if isinstance(e, Exception):
                self._raised(sub, hook, e)
        finally:
            self._over(sub, hook, args, reason, span, interval, task)

    def _rest(self, sub, hook, args, reason, span, interval, task, gen):
        """The rest of :meth:`_call` for a hook that is a generator: run it, then end the
        call as :meth:`_over` does."""
        try:
            return (yield from gen)
        except Exception as e:
            self._raised(sub, hook, e)
            raise
        finally:
            self._over(sub, hook, args, reason, span, interval, task)

    def _raised(self, sub, hook, e):
        """The hook raised ``e``: the driver's code raised (a kernel would oops in the
        callback): a finding naming the hook, the driver and its line; an exception smmu's
        own code raised (not an SmmuError it raises on purpose) goes on up as an internal
        error."""
        if isinstance(e, SmmuError) or not raised_in_smmu(e):
            self.sched.driver_raised(sub.name, hook, e)

    def _over(self, sub, hook, args, reason, span, interval, task):
        """A hook call is over (returned or raised)."""
        sub._in_flight -= 1
        if not interval:
            self.sched.observer.hook_exit(sub, hook, args, span)
        if reason:
            self.sched.atomic_end(reason, task)
        if interval and sub._in_flight == 0 and self._wq.waiters:
            self._wq.wake_all()

    def mmu_notifier_release(self):
        """``__mmu_notifier_release`` from ``exit_mmap``: interval notifiers get a RELEASE
        range over everything (``mn_itree_release``; they stay in the tree), then
        ``mn_hlist_release``: in one read-side section every subscription's ``release``,
        newest first, then every subscription is unlinked (so truncate, reclaim, writeback
        or migration of the exiting mm's pages call none of their hooks again), then
        ``synchronize_srcu``. ``release_order="unlink_first"``: 2.6.27's loop (unlink one,
        call its release, next)."""
        if self.has_itree:
            rng = Range(self.mm, 0, ULONG_MAX + 1, Event.RELEASE, True)
            seq = self._itree_inv_start(rng)
            for isub in self._itree_overlapping(rng):   # mn_itree_release
                ret = yield from self._call(isub, "invalidate", (rng, seq), interval=True)
                self.sched.observer.interval_release(isub, rng, ret)
            yield from self._itree_inv_end()
        if not self.subs:
            return
        if self.release_order == "unlink_first":
            while self.subs:
                sub = self.subs[0]
                # the read-side section opens before the unlink: 2.6.27 "hlist_del_init_rcu
                # (&mn->hlist); rcu_read_lock(); spin_unlock(&mm->mmu_notifier_mm->lock);",
                # 3.9 (751efd8610d3) "id = srcu_read_lock(&srcu);" before its loop; so an
                # unregister that finds the subscription unhashed waits in synchronize_(s)rcu
                # for this ->release ("of course including ->release if it was run by
                # mmu_notifier_release instead of us")
                with self._section():
                    self._unlink(sub)
                    # 3ad3d901bbcf's diagram: between hlist_del_init_rcu and ->release another
                    # CPU's try_to_unmap finds no notifier and frees a page the secondary MMU
                    # still maps
                    yield
                    if overrides(sub, "release"):
                        yield from self._call(sub, "release", (self.mm,), unlinked_ok=True)
        else:
            with self._section():
                for sub in self._reach("release"):
                    yield from self._call(sub, "release", (self.mm,))
                for sub in list(self.subs):
                    self._unlink(sub)
        yield self.srcu.synchronize()

    def mmu_notifier_clear_flush_young(self, start, end):
        young = False
        with self._section():
            for sub in self._reach("clear_flush_young"):
                young |= bool((yield from self._call(sub, "clear_flush_young",
                                                     (self.mm, start, end))))
        return young

    def mmu_notifier_clear_young(self, start, end):
        if "clear_young" not in self._hooks:
            return (yield from self.mmu_notifier_clear_flush_young(start, end))
        young = False
        with self._section():
            for sub in self._reach("clear_young"):
                young |= bool((yield from self._call(sub, "clear_young", (self.mm, start, end))))
        return young

    def mmu_notifier_test_young(self, address):
        with self._section():
            for sub in self._reach("test_young"):
                if (yield from self._call(sub, "test_young", (self.mm, address))):
                    return True
        return False

    def _reach_all(self):
        for sub in list(self.subs):
            if sub._hashed:
                yield sub

    def mmu_notifier_change_pte(self, address, pte, fallback=True):
        """v2008 ``__mmu_notifier_change_pte`` (2.6.32): ``change_pte``, or with
        ``fallback`` ``invalidate_page`` for a notifier that has none ("Some drivers don't
        have change_pte, so we must call invalidate_page in that case"; 3.7's 6bdb913f0a70
        dropped that, since start/end now bracket every call)."""
        if self.api != "v2008":
            raise UsageError(f"change_pte does not exist in notifier_api {self.api!r}")
        span = _page_span(address)
        with self._section():
            for sub in self._reach_all():
                if overrides(sub, "change_pte"):
                    yield from self._call(sub, "change_pte", (self.mm, address, pte), span=span)
                elif fallback and overrides(sub, "invalidate_page"):
                    yield from self._call(sub, "invalidate_page", (self.mm, address), span=span)

    def mmu_notifier_invalidate_page(self, address):
        """v2008 ``__mmu_notifier_invalidate_page``."""
        if self.api != "v2008":
            raise UsageError(f"invalidate_page does not exist in notifier_api {self.api!r}: "
                             "bracket the change with invalidate_range_start/end")
        span = _page_span(address)
        with self._section():
            for sub in self._reach("invalidate_page"):
                yield from self._call(sub, "invalidate_page", (self.mm, address), span=span)

    def mmu_notifier_arch_invalidate_secondary_tlbs(self, start, end):
        """Modern: from the TLB flush, under the PT lock (atomic)."""
        if self.api != "modern":
            return
        with self._section():
            for sub in self._reach("arch_invalidate_secondary_tlbs"):
                yield from self._call(sub, "arch_invalidate_secondary_tlbs",
                                      (self.mm, start, end),
                                      "arch_invalidate_secondary_tlbs under the PT lock")

    def _events(self, obs) -> tuple:
        """The handlers ``obs`` has for :data:`_RANGE_EVENTS` (None: it ignores that one)."""
        self._ev = handlers(obs, _RANGE_EVENTS)
        self._ev_obs = obs
        return self._ev

    def _make_plan(self) -> tuple:
        """The plan of the range walks for the list and the observer as they are now:
        ``(observer, start_one, end_one, cost, start_subs, end_subs, now)``: ``*_one`` the
        one subscription's bound hook when the list has one (None otherwise), ``*_subs``
        the list to walk (None: that walk is not planned: :meth:`_walk_now` or the general
        walk), ``cost`` the clock charge of one hook call, ``now``: a walk from a task's
        step may run at once (no interval tree, :attr:`fast_walks`, steps not recorded).
        A planned walk is :meth:`_walk_now` with every check that cannot change between two
        changes of the list made here once: the observer takes no event of the walk (so
        none is told), the lists hold only linked, unfreed subscriptions (``_unlink`` makes
        new lists, and a subscription is freed only after it is unlinked), none declares
        ``may_sleep`` (no ``might_sleep`` to make: a class attribute, as drivers have it);
        the cost table is the scheduler's, fixed when it is made. ``_rebuild`` (a link or
        unlink), the interval tree's registration and :attr:`fast_walks` drop the plan; a
        walk makes it again when there is none or ``sched.observer`` is another object."""
        sched = self.sched
        obs = sched.observer
        ev = self._ev if obs is self._ev_obs else self._events(obs)
        walks = {}
        now = not self.has_itree and self.fast_walks and not sched.record_steps
        if now and self._srcu and ev == (None,) * len(_RANGE_EVENTS):
            for hook in ("invalidate_range_start", "invalidate_range_end"):
                subs = self._lists[hook]
                if all(s._hashed and not s._freed and not s.may_sleep for s in subs):
                    walks[hook] = subs
        start, end = walks.get("invalidate_range_start"), walks.get("invalidate_range_end")
        self._plan = (obs, start[0].invalidate_range_start if start and len(start) == 1 else
                      None, end[0].invalidate_range_end if end and len(end) == 1 else None,
                      sched.cost_ns["notifier_call"], start, end, now)
        return self._plan

    def mmu_notifier_invalidate_range_start(self, rng):
        """``mmu_notifier_invalidate_range_start``: blockable; the caller ``yield from``s
        it (the walk, then one preemption point; the value is 0 or None: success).

        Called from a task's step (the MM's call sites) with no interval tree, the walk
        runs at once, as plain calls, for as long as the hooks are plain methods, the
        observer is told only the events it listens to (:meth:`_events`) and the read-side
        section is a lazy one when it may be (``RCUDomain.lazy``); a hook that is a
        generator hands the rest of the walk to :meth:`_hlist_start`, the general walk.
        When the observer takes none of the walk's events it follows the plan
        (:meth:`_make_plan`; one subscription: inline here). Outside a step
        (``sim.do(...)`` of it) it is the general walk's generator (:attr:`fast_walks`).
        What runs, and in what order, is the same either way."""
        # Linux's wrapper has might_sleep(); here a hook that really sleeps (or declares
        # may_sleep) is reported instead, so that rmap_locks="spinlock" with drivers that
        # never sleep (the configuration the range-only proposal assumed) is not flagged.
        sched = self.sched
        task = sched.current
        plan = self._plan
        if plan[0] is not sched.observer:
            plan = self._make_plan()
        fn = plan[1]
        if fn is None or task is None or not rng.blockable \
                or sched.schedule.cost_factor is not None:
            if not rng.blockable:
                raise UsageError("use mmu_notifier_invalidate_range_start_nonblock for a "
                                 "non-blockable range")
            if task is None or not plan[6]:
                return self._range_start(rng)
            if plan[4] is None or sched.schedule.cost_factor is not None:
                return self._walk_now(rng, task, False)
            return self._walk_planned(rng, task, plan, plan[4], False)
        # _walk_now for one subscription, less what the plan settled
        stats = sched.stats
        stats["range_start"] += 1
        srcu = self.srcu
        if srcu.lazy is None and not srcu.waiting:
            srcu.lazy = task                   # (RCUDomain.lazy_ok, inline)
            tok = 0
        else:
            tok = srcu.read_lock()
        sched.hook_calls["invalidate_range_start"] += 1
        task.clock += plan[3]                  # sched.charge("notifier_call")
        stats["notifier_call"] += 1
        # (no sub._in_flight += 1 around a plain hook: only _retire reads it, after a grace
        # period, which cannot end inside this walk's section; a generator hook is counted
        # in flight before its first step runs, as _begin counts it)
        try:
            r = fn(rng)
        except BaseException as e:
            self._planned_raised(fn.__self__, "invalidate_range_start", rng, task, tok, e)
            raise
        if type(r) is _GENERATOR:              # the rest of the walk as a generator
            sub = fn.__self__
            sub._in_flight += 1
            return self._hlist_start(rng, None, tok or srcu.lazy_to_token(task), iter(()),
                                     (sub, task, r))
        if srcu.lazy is task:                  # (RCUDomain.lazy_end, inline: a section
            srcu.lazy = None                   # registered meanwhile is not task's lazy one)
        else:
            srcu.lazy_end(task, tok)
        return _PREEMPT

    def _planned_raised(self, sub, hook, rng, task, tok, e):
        """The hook of a planned walk raised ``e`` (re-raised by the caller): the call is
        over (:meth:`_hook_raised`), then the read-side section."""
        sub._in_flight += 1                    # (what _over takes back)
        try:
            self._hook_raised(sub, hook, (rng,), None,
                              (rng.start, rng.end) if hook == "invalidate_range_start" else
                              None, False, task, e)
        finally:
            self.srcu.lazy_end(task, tok)

    def _walk_planned(self, rng, task, plan, subs, end):
        """The planned walk (:meth:`_make_plan`) of ``subs``: :meth:`_walk_now` less the
        observer's events, which it does not take, and the checks the plan settled."""
        sched = self.sched
        if end:
            hook = "invalidate_range_end"
            span = None
        else:
            hook = "invalidate_range_start"
            sched.stats["range_start"] += 1
            span = (rng.start, rng.end)
        srcu = self.srcu
        tok = srcu.lazy_begin(task)
        cost = plan[3]
        hook_calls, stats = sched.hook_calls, sched.stats
        first = True
        try:
            for i, sub in enumerate(subs):
                # every subscription was linked when the walk began; one a hook before it
                # unlinked (the lists are new then) is skipped
                if not first and self._plan is not plan and not sub._hashed:
                    continue
                first = False
                hook_calls[hook] += 1
                task.clock += cost             # sched.charge("notifier_call")
                stats["notifier_call"] += 1
                sub._in_flight += 1
                try:
                    r = getattr(sub, hook)(rng)
                except BaseException as e:
                    self._hook_raised(sub, hook, (rng,), None, span, False, task, e)
                    raise
                if type(r) is _GENERATOR:      # the rest of the walk as a generator
                    tok = tok or srcu.lazy_to_token(task)
                    rest = self._hlist_end(rng, None, tok, subs, i, (sub, task, r)) if end \
                        else self._hlist_start(rng, None, tok, iter(subs[i + 1:]),
                                               (sub, task, r))
                    tok = None
                    return rest
                sub._in_flight -= 1
        finally:
            if tok is not None:
                srcu.lazy_end(task, tok)
        return _OVER if end else _PREEMPT

    def mmu_notifier_invalidate_range_start_nonblock(self, rng):
        """Modern: may fail with ``-EAGAIN``; then the caller must skip the range and must not
        call end (the notifiers' ends were already called, when ``nonblock_fail_calls_end``)."""
        if rng.blockable:
            raise UsageError("mmu_notifier_invalidate_range_start_nonblock needs a Range made "
                             "with blockable=False (and the same Range passed to end)")
        return self._range_start(rng)

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
        tok = self.srcu.read_lock()            # mn_hlist_invalidate_range_start
        return (yield from self._hlist_start(
            rng, reason, tok, iter(self._lists["invalidate_range_start"]), None))

    def _hlist_start(self, rng, reason, tok, walk, first):
        """``mn_hlist_invalidate_range_start`` from the subscription ``walk`` (an iterator
        over the list as the walk began) gives next, inside the read-side section ``tok``,
        which it ends; ``first``: ``(sub, task, generator)`` of a start hook already under
        way. Then one preemption point; returns 0, or ``-EAGAIN`` for a refused
        non-blockable start (no preemption point: the caller skips the range)."""
        obs = self.sched.observer
        ret = 0
        try:
            span = (rng.start, rng.end)
            modern_nonblock = self.api == "modern" and not rng.blockable
            if first is not None:
                sub, task, r = first
                r = yield from self._rest(sub, "invalidate_range_start", (rng,), reason, span,
                                          False, task, r)
                obs.range_start_returned(sub, rng, r)
                if modern_nonblock and failed(r):
                    ret = -EAGAIN
            for sub in walk:
                if not sub._hashed:            # unlinked before the walk reached it
                    continue
                r, task = self._begin(sub, "invalidate_range_start", (rng,), reason, span,
                                      False)
                if type(r) is _GENERATOR:
                    r = yield from self._rest(sub, "invalidate_range_start", (rng,), reason,
                                              span, False, task, r)
                obs.range_start_returned(sub, rng, r)
                # only a non-blockable start may fail, and only in the modern API; any other
                # failure is a BadReturn the observer reports, and dispatch goes on
                if modern_nonblock and failed(r):
                    ret = -EAGAIN
            if ret:
                # "any that succeeded start are expecting their end to be called. Do so
                # now." (c2655835fd8c, 2021); before it they never were.
                obs.range_start_failed(self.mm, rng)
                if self.nonblock_fail_calls_end:
                    for sub in self._reach("invalidate_range_end"):
                        obs.range_start_unwind(sub, rng)
                        yield from self._call(sub, "invalidate_range_end", (rng,), reason)
                return ret
        finally:
            self.srcu.read_unlock(tok)
        # start never runs under the PT lock (it may sleep), so its caller takes the PT lock
        # only after it returns, and another CPU may act in between: a GUP's follow_page can
        # take the PT lock first and still see the old PTE (wp_page_copy, mm/memory.c 6.6:
        # "Re-check the pte - we dropped the lock"; zap_pte_range's pte_offset_map_lock)
        yield
        return ret

    def mmu_notifier_invalidate_range_end(self, rng):
        """``mmu_notifier_invalidate_range_end``: after the PTEs are cleared and flushed: the
        interval tree's ``mn_itree_inv_end`` (if this range's start counted it), then, in a
        read-side section of its own, every linked subscription's end. The caller
        ``yield from``s it; from a task's step, a blockable range with no interval tree
        ends at once while its hooks are plain methods (as the start does, by the plan
        when there is one)."""
        sched = self.sched
        task = sched.current
        plan = self._plan
        if plan[0] is not sched.observer:
            plan = self._make_plan()
        fn = plan[2]
        if fn is None or task is None or not rng.blockable \
                or sched.schedule.cost_factor is not None:
            if task is None or not plan[6] or not rng.blockable:
                return self._range_end(rng)
            if plan[5] is None or sched.schedule.cost_factor is not None:
                return self._walk_now(rng, task, True)
            return self._walk_planned(rng, task, plan, plan[5], True)
        # _walk_now for one subscription, less what the plan settled: the start's inline
        # walk again, on purpose (one helper for both would cost a Python frame a walk, a
        # fifth of a pair: benchmarks/dispatch_breakdown.py); tests/test_fast_walks.py keeps
        # both equal to the general walk
        srcu = self.srcu
        if srcu.lazy is None and not srcu.waiting:
            srcu.lazy = task                   # (RCUDomain.lazy_ok, inline)
            tok = 0
        else:
            tok = srcu.read_lock()
        sched.hook_calls["invalidate_range_end"] += 1
        task.clock += plan[3]                  # sched.charge("notifier_call")
        sched.stats["notifier_call"] += 1
        try:                                   # (no _in_flight: as the start)
            r = fn(rng)
        except BaseException as e:
            self._planned_raised(fn.__self__, "invalidate_range_end", rng, task, tok, e)
            raise
        if r is not None and type(r) is _GENERATOR:    # the rest as a generator
            sub = fn.__self__
            sub._in_flight += 1
            return self._hlist_end(rng, None, tok or srcu.lazy_to_token(task), [sub], 0,
                                   (sub, task, r))
        if srcu.lazy is task:                  # (as the start)
            srcu.lazy = None
        else:
            srcu.lazy_end(task, tok)
        return _OVER

    def _walk_now(self, rng, task, end):
        """The fast walk of a blockable range's start (``end`` False) or end from ``task``'s
        step, with no interval tree: the general walk's checks, accounting and events in
        the same order, as plain calls (:meth:`_begin` inline), an observer event only if
        the observer overrides it, a lazy read-side section when it may be. Returns what
        the caller yields from: the preemption point after a start, nothing after an end,
        or, from the first hook that is a generator on, the general walk
        (:meth:`_hlist_start` / :meth:`_hlist_end`)."""
        sched = self.sched
        obs = sched.observer
        ev = self._ev if obs is self._ev_obs else self._events(obs)
        if end:
            hook = "invalidate_range_end"
            # every subscription on the current list is linked (_unlink rebuilds the lists,
            # never changed in place): this is the general walk's ``ending``
            subs = self._lists[hook]
            if ev[4] is not None:
                ev[4](self.mm, rng, subs)
            after, span = ev[5], None
        else:
            hook = "invalidate_range_start"
            if ev[0] is not None:
                ev[0](self.mm, rng)
            sched.stats["range_start"] += 1
            subs = self._lists[hook]           # mn_hlist_invalidate_range_start
            after, span = ev[3], (rng.start, rng.end)
        srcu = self.srcu
        if self._srcu and srcu.lazy is None and not srcu.waiting:
            srcu.lazy = task                   # (RCUDomain.lazy_ok, inline)
            tok = 0
        else:
            tok = srcu.read_lock()
        done = 0
        try:
            on_enter, on_exit = ev[1], ev[2]
            args = (rng,)
            hook_calls, stats = sched.hook_calls, sched.stats
            for sub in subs:
                if sub._hashed:                # not unlinked before the walk reached it
                    if sub._freed:
                        raise CoreBug(f"{hook} of {sub!r} called after it was freed: the "
                                      "chain must skip it")
                    hook_calls[hook] += 1
                    jitter = sched.schedule.cost_factor    # sched.charge("notifier_call")
                    task.clock += sched.cost_ns["notifier_call"] if jitter is None else \
                        sched.cost_ns["notifier_call"] * jitter()
                    stats["notifier_call"] += 1
                    if sub.may_sleep:
                        sched.might_sleep(f"{sub.name}.{hook} (may_sleep=True)")
                    sub._in_flight += 1
                    if on_enter is not None:
                        on_enter(sub, hook, args, span)
                    try:
                        r = getattr(sub, hook)(rng)
                    except BaseException as e:
                        self._hook_raised(sub, hook, args, None, span, False, task, e)
                        raise
                    if type(r) is _GENERATOR:     # the rest of the walk as a generator
                        first = (sub, task, r)
                        tok = tok or srcu.lazy_to_token(task)
                        rest = self._hlist_end(rng, None, tok, subs, done, first) if end \
                            else self._hlist_start(rng, None, tok, iter(subs[done + 1:]), first)
                        tok = None
                        return rest
                    sub._in_flight -= 1
                    if on_exit is not None:
                        on_exit(sub, hook, args, span)
                    if after is not None:
                        if end:
                            after(sub, rng)
                        else:
                            after(sub, rng, r)
                elif end and after is not None:
                    after(sub, rng)            # (an end skipped is over too)
                done += 1
        finally:
            if tok is not None:
                if end:
                    for sub in subs[done:]:    # a hook raised: the rest are not called either
                        obs.range_end_over(sub, rng)
                if tok:
                    srcu.read_unlock(tok)
                elif srcu.lazy is task:
                    srcu.lazy = None
                else:
                    srcu.lazy_unlock(task)
        return _OVER if end else _PREEMPT

    def _range_end(self, rng):
        obs = self.sched.observer
        reason = None if rng.blockable else "non-blockable invalidate_range_end"
        ending = [s for s in self._lists["invalidate_range_end"] if s._hashed]
        obs.range_end(self.mm, rng, ending)
        counted = self._itree_counted
        if counted and counted[rng]:
            counted[rng] -= 1
            if not counted[rng]:
                del counted[rng]
            yield from self._itree_inv_end()
        elif self.has_itree:
            # Linux tests has_itree unlocked at start and at end and relies on its never
            # flipping in between: the first insert registers under mmap_lock write and
            # mm_take_all_locks, which every start..end caller's locks exclude
            raise CoreBug(f"the interval tree appeared between the start and the end of "
                          f"{rng!r}: a range caller runs without the locks register takes")
        tok = self.srcu.read_lock()
        yield from self._hlist_end(rng, reason, tok, ending, 0, None)

    def _hlist_end(self, rng, reason, tok, ending, done, first):
        """The ends of ``ending[done:]`` inside the read-side section ``tok``, which it ends;
        ``first``: ``(sub, task, generator)`` of ``ending[done]``'s end hook under way."""
        obs = self.sched.observer
        try:
            if first is not None:
                sub, task, r = first
                yield from self._rest(sub, "invalidate_range_end", (rng,), reason, None,
                                      False, task, r)
                obs.range_end_over(sub, rng)
                done += 1
            for sub in ending[done:]:
                if sub._hashed:                # reached while still linked
                    r, task = self._begin(sub, "invalidate_range_end", (rng,), reason, None,
                                          False)
                    if type(r) is _GENERATOR:
                        yield from self._rest(sub, "invalidate_range_end", (rng,), reason,
                                              None, False, task, r)
                obs.range_end_over(sub, rng)
                done += 1
        finally:
            for sub in ending[done:]:          # a hook raised: the rest are not called either
                obs.range_end_over(sub, rng)
            self.srcu.read_unlock(tok)

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
        """``mn_itree_inv_end`` (a generator): the last end makes ``invalidate_seq`` even,
        applies the inserts and removes deferred meanwhile, and wakes the waiters. With
        ``interval_remove_race`` (5.5..5.17) a remover that reads the sequence without the
        lock sees it move before the deferred list is done (319561669a59's diagram): it may
        return and its caller free the subscription in between."""
        self.active_invalidate_ranges -= 1
        if self.active_invalidate_ranges or not self.is_invalidating():
            return
        self.invalidate_seq += 1
        self.sched.observer.interval_invalidations_done(self.mm)
        if self.interval_remove_race:
            self._wq.wake_all()
            yield       # CPU1: wait_event(invalidate_seq != seq); return; kfree(interval_sub)
        for isub, op in self.deferred:
            self.sched.observer.interval_tree_update(self.mm, isub, op)
            if op == "insert":
                self.itree.append(isub)
            elif isub in self.itree:
                self.itree.remove(isub)        # interval_tree_remove(interval_sub)
        self.deferred.clear()
        self._wq.wake_all()

    def _itree_invalidate(self, rng, reason):
        # mn_itree_invalidate
        seq = self._itree_inv_start(rng)
        self._itree_counted[rng] += 1          # this range's end must call mn_itree_inv_end
        for isub in self._itree_overlapping(rng):
            ret = yield from self._call(isub, "invalidate", (rng, seq), reason, interval=True)
            self.sched.observer.interval_invalidate(isub, rng, ret)
            # a blockable range may not be refused (BadReturn, reported by the observer)
            if not ret and not rng.blockable:
                # "On -EAGAIN the non-blocking caller is not allowed to call
                # invalidate_range_end()": mn_itree_inv_end here instead
                self._itree_counted[rng] -= 1
                if not self._itree_counted[rng]:
                    del self._itree_counted[rng]
                yield from self._itree_inv_end()
                return -EAGAIN
        return 0

    # ------------------------------------------------------------------ interval tree changes
    def interval_notifier_insert(self, isub) -> None:
        """``__mmu_interval_notifier_insert`` (``isub`` has its range set): during an
        invalidation the insert is deferred to the last ``end`` and the new interval starts
        out "being invalidated"."""
        if not self.has_itree:
            raise CoreBug("interval_notifier_insert before the interval tree was registered "
                          "(mmu_interval_notifier_insert registers it first)")
        self.sched.observer.interval_insert(self.mm, isub)
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
        self.sched.observer.interval_remove(self.mm, isub)
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
