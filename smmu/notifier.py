"""MMU notifiers: the plug-in point for secondary MMUs, in three API generations.

Modelled on ``include/linux/mmu_notifier.h`` and ``mm/mmu_notifier.c``. A driver subclasses
:class:`MMUNotifier` and overrides the hooks it needs; hooks it does not override are never
called. A hook may be a plain method (it then runs as one atomic step) or a generator method
(its yields are choice points; it may block on locks, wait queues, sleep).

Generations (``notifier_api=``):

``"v2008"``
    The API merged in 2.6.27 (mmu-notifier v17, the seed thread): ``release``,
    ``clear_flush_young``, ``invalidate_page`` (called by ``ptep_clear_flush_notify`` right
    after the PTE was cleared and flushed, the page still referenced), ``invalidate_range_start``
    / ``invalidate_range_end`` around multi-page operations, and ``change_pte`` (KSM, 2009).
``"range_only"``
    The alternative argued in the same thread: no ``invalidate_page``; every invalidation,
    single pages too, is bracketed by ``invalidate_range_start`` / ``invalidate_range_end``.
``"modern"``
    Linux 6.6+: ``invalidate_range_start`` gets a :class:`Range` (event, owner, blockable) and
    may fail a non-blockable range with ``-EAGAIN`` (after which ``end`` is still called on every
    subscriber that has one, commit c2655835fd8c); ``arch_invalidate_secondary_tlbs`` under the
    PT lock for TLBs that share the CPU page tables; ``clear_young``, ``test_young``; interval
    notifiers (:mod:`smmu.interval`). No ``invalidate_page``, no ``change_pte``.

Hook arguments are the same in every generation: ranges are always a :class:`Range` (in v2008
its ``event`` is ``Event.UNMAP`` and it is always blockable, as the 2008 signature carried no
more). ``mm`` is the primary address space.
"""

from __future__ import annotations

import enum
import types
from dataclasses import dataclass, field

from smmu.base.constants import EAGAIN, PAGE_SIZE, ULONG_MAX
from smmu.base.errors import BadDriver, InvalidArgument, UsageError

API_GENERATIONS = ("v2008", "range_only", "modern")


class Event(enum.Enum):
    """Why a range is being invalidated (``enum mmu_notifier_event``)."""

    UNMAP = "unmap"
    """The VMA or the range is going away: munmap, mremap's old range, exit teardown. The
    secondary MMU should drop everything in the range."""

    CLEAR = "clear"
    """PTEs are cleared but the VMA stays: madvise(DONTNEED/FREE), reclaim, page replacement
    (COW, KSM). A later access faults in whatever the primary now maps."""

    PROTECTION_VMA = "protection_vma"
    """The VMA's protection changes (mprotect): mappings may stay but must follow the new
    rights (a read-only downgrade must stop device writes)."""

    PROTECTION_PAGE = "protection_page"
    """One page's rights change (write-protect for COW sharing, page_mkclean): the secondary
    may keep a read-only mapping; re-read the CPU table in ``end``."""

    SOFT_DIRTY = "soft_dirty"
    """Soft-dirty tracking reset: write bits cleared so new writes are noticed."""

    RELEASE = "release"
    """The mm is exiting: sent to interval notifiers by ``exit_mmap`` over the whole space."""

    MIGRATE = "migrate"
    """Pages are migrating; ``owner`` names the device driver doing it (it may skip its own)."""

    EXCLUSIVE = "exclusive"
    """Pages are converted to device-exclusive entries (``make_device_exclusive``)."""

    def __repr__(self) -> str:
        return f"Event.{self.name}"


@dataclass(frozen=True)
class Range:
    """``struct mmu_notifier_range``: ``[start, end)`` in ``mm``, page aligned, non-empty."""

    mm: object
    start: int
    end: int
    event: Event = Event.UNMAP
    blockable: bool = True
    owner: object = None

    def __post_init__(self):
        s, e = self.start, self.end
        if not (0 <= s < e <= ULONG_MAX + 1):
            raise InvalidArgument(f"Range [{s:#x}, {e:#x}) is empty or out of bounds: need "
                                  "0 <= start < end <= 2**64")
        if s % PAGE_SIZE or (e % PAGE_SIZE and e != ULONG_MAX + 1 and e != ULONG_MAX):
            raise InvalidArgument(f"Range [{s:#x}, {e:#x}) is not page aligned: round start "
                                  f"down and end up to a multiple of {PAGE_SIZE:#x}")

    def contains(self, address: int) -> bool:
        return self.start <= address < self.end

    def overlaps(self, start: int, end: int) -> bool:
        return start < self.end and self.start < end

    @property
    def pages(self) -> int:
        return (self.end - self.start) // PAGE_SIZE

    def __repr__(self) -> str:
        flags = "" if self.blockable else " nonblock"
        own = f" owner={getattr(self.owner, 'name', self.owner)}" if self.owner is not None else ""
        return f"Range([{self.start:#x}, {self.end:#x}) {self.event.name}{flags}{own})"


HOOKS = ("release", "clear_flush_young", "clear_young", "test_young", "change_pte",
         "invalidate_page", "invalidate_range_start", "invalidate_range_end",
         "arch_invalidate_secondary_tlbs")

#: hooks each generation calls; a driver may implement others, they are simply never called
API_HOOKS = {
    "v2008": {"release", "clear_flush_young", "test_young", "change_pte", "invalidate_page",
              "invalidate_range_start", "invalidate_range_end"},
    "range_only": {"release", "clear_flush_young", "test_young", "invalidate_range_start",
                   "invalidate_range_end"},
    "modern": {"release", "clear_flush_young", "clear_young", "test_young",
               "invalidate_range_start", "invalidate_range_end",
               "arch_invalidate_secondary_tlbs"},
}


class MMUNotifier:
    """Base class of every secondary-MMU driver (``struct mmu_notifier`` + its ops).

    ``sim.attach(Cls, mm, **options)`` calls ``Cls(sim, mm, **options)`` and registers the
    instance on ``mm``. Override any hook below; each documents its contract. Class attributes:

    * ``name``: shown in reports (defaults to the class name);
    * ``may_sleep``: the hooks block (take mutexes, wait for the device); calling one while
      atomic (spinlock rmap locks, the PT lock, a non-blockable range) is ``SleepInAtomic``;
    * ``apis``: the generations the driver supports; attaching to another is refused.

    The device side is ``access(va, write=..., value=...)``, a generator that device tasks
    run; it must touch memory only through :meth:`dma_read` / :meth:`dma_write` and declare
    its secondary mappings with :meth:`note_map` / :meth:`note_unmap` (``smmu.tlb`` and
    ``smmu.shadow`` structures do the declaring for you when given ``observer=self``).
    """

    name: str | None = None
    may_sleep: bool = False
    apis: tuple = API_GENERATIONS

    def __init__(self, sim, mm, **options):
        if options:
            raise BadDriver(f"{type(self).__name__} takes no options, got "
                            f"{sorted(options)}; define __init__(self, sim, mm, ...) to "
                            "accept them")
        self.sim = sim
        self.mm = mm
        self._registered = False
        self._released = False
        self._in_flight = 0
        self._active: list = []     # ranges whose start returned and whose end has not begun
        # [start, end) of this subscription's invalidate_page / change_pte /
        # invalidate_range_start calls still running (the oracle's "own notification in flight")
        self._in_flight_spans: list = []
        self._ending: list = []     # ranges whose end dispatch began, this one's not returned
        self._users = 1             # mmu_notifier_get/put reference count

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.name is None or cls.name == getattr(cls.__mro__[1], "name", None):
            cls.name = cls.__name__

    # ------------------------------------------------------------------ hooks
    def release(self, mm):
        """The address space is going away (``exit_mmap``), or this subscription is being
        unregistered before that. Called at most once, before any page of ``mm`` is freed,
        while every page is still mapped. The driver must stop all device access to the mm
        and drop every secondary mapping before it returns: after it, pages are freed and
        reused. May sleep."""

    def clear_flush_young(self, mm, start, end):
        """Reclaim asks whether the pages in ``[start, end)`` were accessed through the
        secondary MMU since the last call (``page_referenced_one`` / ``ptep_clear_flush_young``).
        Return True if any was; clear the secondary accessed bits and flush so that the next
        access is seen. Called under the rmap lock and the PT lock: must not sleep. Results of
        all subscribers are ORed."""
        return False

    def clear_young(self, mm, start, end):
        """As :meth:`clear_flush_young` but the secondary TLB need not be flushed (modern
        only; used by MGLRU aging). Results ORed."""
        return False

    def test_young(self, mm, address):
        """Was the page at ``address`` accessed through the secondary MMU? Do not clear.
        Dispatch stops at the first subscriber that says True."""
        return False

    def change_pte(self, mm, address, pte):
        """v2008 only (KSM, 2009; removed 2024): the PTE at ``address`` now maps a different
        page (``pte``, read-only). The driver may update its mapping in place instead of
        zapping. Since 2012 it is called inside an invalidate_range_start/end pair, after
        ``start`` has already zapped, so a start/end driver finds nothing to change."""

    def invalidate_page(self, mm, address):
        """v2008 only. The PTE at ``address`` was just cleared and the CPU TLB flushed
        (``ptep_clear_flush_notify``), under the PT lock (unless the MM runs with
        ``invalidate_page_outside_ptl=True``, the pre-2017 ordering). The page is still
        referenced until this returns: the secondary MMU may still read or write it until
        then, must not after, and must drop its translation of ``address`` before returning.
        Called atomic (PT lock): must not sleep."""

    def invalidate_range_start(self, range):
        """Pages in ``range`` are about to be unmapped, write-protected or replaced. Called
        while every page in the range is still mapped with a reference held; may sleep if
        ``range.blockable``. From the moment it returns until the matching
        :meth:`invalidate_range_end`, the driver must not establish any secondary mapping in
        the range (``MapInWindow``) and must not take new references to its pages: a page
        GUP returns now may be freed without further notice. Drop or write-protect existing
        mappings here (or count the range in flight and drop them no later than the
        primary's TLB flush).

        Modern only: if ``range.blockable`` is False the hook must not sleep; it may return
        ``-EAGAIN`` (or False) to refuse, after which the caller skips the range and every
        subscriber's ``end`` is still called — so a notifier that can refuse must not
        implement ``end``. Returning failure for a blockable range is ``BadReturn``."""

    def invalidate_range_end(self, range):
        """The PTEs of ``range`` are cleared (and pages possibly freed). Paired with every
        ``start`` on every path, error paths included. The driver may allow new mappings of
        the range again once its last in-flight range ends."""

    def arch_invalidate_secondary_tlbs(self, mm, start, end):
        """Modern only, for devices that walk the CPU page tables (IOMMU SVA): flush the
        device TLB for ``[start, end)`` (``0, ULONG_MAX`` means everything). Called by the
        CPU TLB-flush code under the PT lock: must not sleep. A notifier with this hook may
        not also have ``invalidate_range_start``/``end`` (registration is refused)."""

    # ------------------------------------------------------------------ device side
    def access(self, va, *, write, value=None):
        """The device touches ``va`` (a generator, run by device tasks). Translate through
        the driver's own structures, run its fault path on a miss, then touch memory only via
        ``dma_read`` / ``dma_write``. Returns the value read (or written)."""
        raise BadDriver(f"{type(self).__name__} has no device side: define "
                        "access(self, va, *, write, value=None) as a generator")
        yield  # pragma: no cover

    def dma_read(self, va: int, pfn: int) -> int:
        """One atomic device read of frame ``pfn`` through the mapping of ``va``."""
        return self.sim.device_access(self, va, pfn, False, None)

    def dma_write(self, va: int, pfn: int, value: int) -> int:
        """One atomic device write of ``value`` to frame ``pfn`` through the mapping of ``va``."""
        return self.sim.device_access(self, va, pfn, True, value)

    def note_map(self, va: int, pfn: int, writable: bool) -> None:
        """Declare a secondary translation ``va -> pfn`` just established."""
        va = va - va % PAGE_SIZE
        window = next((r for r in self._windows() if r.start <= va < r.end), None)
        if window is not None:
            self.sim.violation(
                "MapInWindow",
                f"{self.name} mapped {va:#x} -> pfn {pfn} inside the open window of "
                f"{window!r}: between invalidate_range_start and _end no secondary mapping of "
                "the range may be established (check an in-progress count or sequence "
                "under the driver lock before installing)", address=va, frames=(pfn,))
        self.sim.secondary_map(self, va, pfn, writable)

    def _windows(self):
        """The open windows of this driver: ranges whose start returned and whose end has not
        begun (except its own MIGRATE), and those its interval notifiers were invalidated for
        until the last end (a mirror that passes read_retry cannot map in them)."""
        for r in self._active:
            if r.owner is not self:
                yield r
        subs = getattr(self.mm, "notifier_subscriptions", None)
        for isub in (subs.itree if subs is not None else ()):
            if isub.owner is self:
                yield from isub._windows

    def note_unmap(self, va: int) -> None:
        """Declare that the secondary translation of ``va`` is gone."""
        self.sim.secondary_unmap(self, va - va % PAGE_SIZE, va - va % PAGE_SIZE + PAGE_SIZE)

    def note_unmap_range(self, start: int, end: int) -> None:
        """Declare that every secondary translation in ``[start, end)`` is gone."""
        self.sim.secondary_unmap(self, start, end)

    def __repr__(self) -> str:
        st = "registered" if self._registered else "unregistered"
        return f"<{self.name} on {self.mm!r} {st}>"


def overrides(sub, hook: str) -> bool:
    """Does ``sub``'s class implement ``hook`` (not just inherit the base no-op)?"""
    return getattr(type(sub), hook, None) is not getattr(MMUNotifier, hook, None)


def check_driver_class(cls, api: str) -> None:
    """Raise :class:`BadDriver` saying what to fix if ``cls`` cannot be attached under ``api``."""
    if not isinstance(cls, type) or not issubclass(cls, MMUNotifier):
        raise BadDriver(f"{cls!r} is not a driver: a driver is a class derived from "
                        "smmu.MMUNotifier")
    if api not in API_GENERATIONS:
        raise UsageError(f"unknown notifier_api {api!r}: use one of {list(API_GENERATIONS)}")
    apis = tuple(cls.apis)
    bad = [a for a in apis if a not in API_GENERATIONS]
    if bad:
        raise BadDriver(f"{cls.__name__}.apis names unknown generations {bad}; use "
                        f"{list(API_GENERATIONS)}")
    if api not in apis:
        raise BadDriver(f"{cls.__name__} supports notifier_api {list(apis)}, not {api!r}: "
                        f"build the Simulator with notifier_api={apis[0]!r}")
    for hook in HOOKS:
        attr = getattr(cls, hook, None)
        if attr is not None and not callable(attr):
            raise BadDriver(f"{cls.__name__}.{hook} must be a method, got {type(attr).__name__}")
    if api == "modern" and cls.arch_invalidate_secondary_tlbs is not \
            MMUNotifier.arch_invalidate_secondary_tlbs and (
            cls.invalidate_range_start is not MMUNotifier.invalidate_range_start or
            cls.invalidate_range_end is not MMUNotifier.invalidate_range_end):
        # mm/mmu_notifier.c __mmu_notifier_register: WARN_ON_ONCE(...) return -EINVAL
        raise BadDriver(f"{cls.__name__} implements arch_invalidate_secondary_tlbs and "
                        "invalidate_range_start/end: Linux refuses that (-EINVAL); a TLB that "
                        "shares the CPU page tables uses only arch_invalidate_secondary_tlbs")


def _failed(ret) -> bool:
    return ret is False or (isinstance(ret, int) and not isinstance(ret, bool) and ret < 0)


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
    open_ranges: list = field(default_factory=list)   # ranges between start and end, by caller
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
        if sub._in_flight:
            yield self._wq.wait_until(lambda: sub._in_flight == 0)

    # ------------------------------------------------------------------ calling hooks
    def _call(self, sub, hook, args, atomic_reason=None, span=None):
        """Run one hook of ``sub``. ``span``: the ``(start, end)`` it notifies about (kept in
        ``sub._in_flight_spans`` while it runs; invalidate_page, change_pte, range start)."""
        sched = self.sched
        task = sched.current or sched._setup_task
        sched.hook_calls[hook] += 1
        sched.charge("notifier_call")
        if sub.may_sleep:
            sched.might_sleep(f"{sub.name}.{hook} (may_sleep=True)")
        if atomic_reason:
            sched.atomic_begin(atomic_reason, task)
        sub._in_flight += 1
        if span is not None:
            sub._in_flight_spans.append(span)
        tracing = sched.tracing
        if tracing:
            sched.trace_event("B", f"{sub.name}.{hook}", {"args": repr(args)})
        try:
            ret = getattr(sub, hook)(*args)
            if isinstance(ret, types.GeneratorType):
                ret = yield from ret
        finally:
            sub._in_flight -= 1
            if span is not None:
                sub._in_flight_spans.remove(span)
            if atomic_reason:
                sched.atomic_end(atomic_reason, task)
            if tracing:
                sched.trace_event("E", f"{sub.name}.{hook}")
            if sub._in_flight == 0 and self._wq.waiters:
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
            for isub in self._itree_overlapping(rng):
                yield from self._call_interval(isub, rng, seq, None)
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
        self.open_ranges.append(rng)
        self.sched.stats["range_start"] += 1
        reason = None if rng.blockable else "non-blockable invalidate_range_start"
        if self.has_itree:
            # __mmu_notifier_invalidate_range_start: intervals first; a refusal there returns
            # before any hlist start. Note the converse gap, kept as Linux has it: if an
            # interval succeeded and an hlist notifier then refuses, nobody calls
            # mn_itree_inv_end, so invalidate_seq stays odd and read_begin waits for good.
            ret = yield from self._itree_invalidate(rng, reason)
            if ret:
                self.open_ranges.remove(rng)
                return ret
        ret = 0
        for sub in self._snapshot("invalidate_range_start"):
            r = yield from self._call(sub, "invalidate_range_start", (rng,), reason,
                                      span=(rng.start, rng.end))
            if not _failed(r):
                sub._active.append(rng)
                continue
            if self.api != "modern":
                self.sched.violation("BadReturn", f"{sub.name}.invalidate_range_start "
                                     f"returned {r!r}: it cannot fail in {self.api}")
            elif rng.blockable:
                self.sched.violation(
                    "BadReturn", f"{sub.name}.invalidate_range_start returned {r!r} for a "
                    f"blockable {rng!r}: only a non-blockable start may fail (WARN_ON in "
                    "mn_hlist_invalidate_range_start)")
            else:
                if overrides(sub, "invalidate_range_end"):
                    self.sched.violation(
                        "BadReturn", f"{sub.name} failed invalidate_range_start but implements "
                        "invalidate_range_end: a notifier that can fail start may not have "
                        "end (it cannot know whether its start failed)")
                ret = -EAGAIN
        if ret:
            # mn_hlist_invalidate_range_start: "any that succeeded start are expecting their
            # end to be called. Do so now." (c2655835fd8c, 2021); before it they never were.
            self.open_ranges.remove(rng)
            if self.nonblock_fail_calls_end:
                for sub in self._snapshot("invalidate_range_end"):
                    if rng in sub._active:
                        sub._active.remove(rng)
                    yield from self._call(sub, "invalidate_range_end", (rng,), reason)
        return ret

    def mmu_notifier_invalidate_range_end(self, rng):
        """``mmu_notifier_invalidate_range_end``: after the PTEs are cleared and flushed."""
        if rng in self.open_ranges:
            self.open_ranges.remove(rng)
        else:
            self.sched.violation("UnpairedRange", f"invalidate_range_end({rng!r}) without a "
                                 "matching start", address=rng.start)
        reason = None if rng.blockable else "non-blockable invalidate_range_end"
        if self.has_itree:
            self._itree_inv_end()
        for sub in self.subs:
            if rng in sub._active:   # the window closes as end begins
                sub._active.remove(rng)
        ending = self._snapshot("invalidate_range_end")
        for sub in ending:           # until its own end returns, a driver may still hold
            sub._ending.append(rng)  # (and use) references to the range's old pages
        done = 0
        try:
            for sub in ending:
                yield from self._call(sub, "invalidate_range_end", (rng,), reason)
                sub._ending.remove(rng)
                done += 1
        finally:
            for sub in ending[done:]:      # a hook raised: the rest are not called either
                sub._ending.remove(rng)

    def unpaired(self) -> list:
        """Subscriptions whose start/end counts do not balance, and ranges left open."""
        return [(s, list(s._active)) for s in self.subs if s._active]

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
        for isub in self.itree:
            isub._windows.clear()
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
            ok = yield from self._call_interval(isub, rng, seq, reason)
            if not ok:
                if rng.blockable:
                    self.sched.violation(
                        "BadReturn", f"interval notifier {isub!r} returned False for a "
                        f"blockable {rng!r}: it may only fail when it would have to sleep on a "
                        "non-blockable range", address=rng.start)
                    continue
                self._itree_inv_end()
                return -EAGAIN
        return 0

    def _call_interval(self, isub, rng, seq, reason):
        sched = self.sched
        task = sched.current or sched._setup_task
        sched.hook_calls["interval_invalidate"] += 1
        sched.charge("notifier_call")
        if reason:
            sched.atomic_begin(reason, task)
        isub._in_flight += 1
        try:
            ret = isub.invalidate(rng, seq)
            if isinstance(ret, types.GeneratorType):
                ret = yield from ret
        finally:
            isub._in_flight -= 1
            if reason:
                sched.atomic_end(reason, task)
        if ret and (rng.owner is None or rng.owner is not isub.owner):
            isub._windows.append(rng)
        return bool(ret)
