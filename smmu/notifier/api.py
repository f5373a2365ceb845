"""The hook contract: :class:`MMUNotifier`, :class:`Range`, :class:`Event`, in three API
generations.

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
    notifiers (:mod:`smmu.notifier.interval`). No ``invalidate_page``, no ``change_pte``.

Hook arguments are the same in every generation: ranges are always a :class:`Range` (in v2008
its ``event`` is ``Event.UNMAP`` and it is always blockable, as the 2008 signature carried no
more). ``mm`` is the primary address space.
"""

from __future__ import annotations

import enum
import inspect
import weakref
from dataclasses import dataclass

from smmu.base.constants import PAGE_SIZE, ULONG_MAX
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
        # the chain's bookkeeping (smmu.notifier.chain): on the list now (!hlist_unhashed),
        # registered and not yet unregistered / put, freed (unregister's synchronize_srcu
        # returned, or free_notifier ran: no hook may run again), hooks running now,
        # mmu_notifier_get/put references
        self._hashed = False
        self._registered = False
        self._freed = False
        self._in_flight = 0
        self._users = 1

    @classmethod
    def alloc_notifier(cls, sim, mm):
        """``ops->alloc_notifier``: a new subscription for ``mm``, made by
        ``mmu_notifier_get`` when the mm has none of this class yet. Default: ``cls(sim,
        mm)``."""
        return cls(sim, mm)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.name is None or cls.name == getattr(cls.__mro__[1], "name", None):
            cls.name = cls.__name__

    # ------------------------------------------------------------------ hooks
    def release(self, mm):
        """The address space is going away (``exit_mmap``), or this subscription is being
        unregistered before that. Called before any page of ``mm`` is freed, while every
        page is still mapped. The driver must stop all device access to the mm and drop every
        secondary mapping before it returns: after it, pages are freed and reused. May
        sleep. After exit's release the subscription is off the list: no other hook of it
        runs again (a start that ran before may get no end). It can run twice when
        ``mmu_notifier_unregister`` races ``exit_mmap`` (Linux 3.10+, d34883d4e35c: "it is
        really rare ... the later call of multiple ->release should be fast"): the second
        call must be harmless."""

    def free_notifier(self):
        """``ops->free_notifier`` (the get/put API): the last ``mmu_notifier_put`` was
        followed by a grace period; no hook is running and none will run. "It is called
        from a SRCU callback and cannot sleep": a plain method."""

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

    # ------------------------------------------------------------------ the device's end
    def close(self):
        """The device is closed: its file's last reference went (``fops->release``:
        ``kvm_vm_release`` -> ``kvm_destroy_vm``, ``dmirror_fops_release``,
        ``ib_uverbs_close``). Undo what attaching and faulting took. A generator; the
        harness runs it for every driver once a scenario has ended (after the end-of-run
        checks, ``Simulator.teardown``), and after it the driver may hold no page reference
        it took with ``get_user_pages`` / ``pin_user_pages``, no inserted interval notifier
        and no registration: each is a ``Leak`` naming the call that took it. The default
        unregisters the subscription if it still is registered (``mmu_notifier_unregister``,
        which calls ``release`` if it has not run, then drops the mm reference); a driver
        that keeps more (pinned memory regions, interval notifiers it removes only on
        close) overrides it and calls this one last."""
        if self._registered:
            yield from self.mm.mmu_notifier_unregister(self)

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
        return self.mm.device_access(self, va, pfn, False, None)

    def dma_write(self, va: int, pfn: int, value: int) -> int:
        """One atomic device write of ``value`` to frame ``pfn`` through the mapping of ``va``."""
        return self.mm.device_access(self, va, pfn, True, value)

    def note_map(self, va: int, pfn: int, writable: bool) -> None:
        """Declare a secondary translation ``va -> pfn`` just established. Between
        ``invalidate_range_start`` returning and ``invalidate_range_end`` of a range (and,
        for an interval notifier, until the last invalidation ends) a mapping inside it is
        ``MapInWindow``."""
        self.sim.observer.secondary_map(self, va - va % PAGE_SIZE, pfn, writable)

    def note_unmap(self, va: int) -> None:
        """Declare that the secondary translation of ``va`` is gone."""
        self.sim.observer.secondary_unmap(self, va - va % PAGE_SIZE,
                                          va - va % PAGE_SIZE + PAGE_SIZE)

    def note_unmap_range(self, start: int, end: int) -> None:
        """Declare that every secondary translation in ``[start, end)`` is gone."""
        self.sim.observer.secondary_unmap(self, start, end)

    @property
    def holds_mm(self) -> bool:
        """Registered and not yet unregistered or put: the subscription holds a reference on
        its mm (``mmgrab`` in ``__mmu_notifier_register``), linked or not (exit's release
        unlinks it but the reference stays until ``mmu_notifier_unregister`` / ``put``)."""
        return self._registered

    @property
    def registered(self) -> bool:
        """Is this subscription on its mm's chain now (linked: not yet unregistered, put,
        or unlinked by the mm's release)?"""
        return self._hashed

    def __repr__(self) -> str:
        st = ("registered" if self._hashed else
              "unlinked" if self._registered else "unregistered")
        return f"<{self.name} on {self.mm!r} {st}>"


def overrides(sub, hook: str) -> bool:
    """Does ``sub``'s class implement ``hook`` (not just inherit the base no-op)?"""
    return getattr(type(sub), hook, None) is not getattr(MMUNotifier, hook, None)


def failed(ret) -> bool:
    """Did ``invalidate_range_start`` refuse? ``False`` or a negative errno (``-EAGAIN``);
    0, None and True are success."""
    return ret is False or (isinstance(ret, int) and not isinstance(ret, bool) and ret < 0)


#: driver class -> the APIs :func:`check_driver_class` passed it for (every attach and
#: register asks again; a driver class is not changed once it is defined). Weak: a class
#: made per test or per hypothesis example is not kept alive by having been checked
_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_driver_class(cls, api: str) -> None:
    """Raise :class:`BadDriver` saying what to fix if ``cls`` cannot be attached under ``api``."""
    try:
        passed = _CHECKED.get(cls, ())
    except TypeError:                  # not weakly referenceable: not a class
        passed = ()
    if api in passed:
        return
    _check_driver_class(cls, api)
    _CHECKED[cls] = frozenset(passed) | {api}


def _check_driver_class(cls, api: str) -> None:
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
    if inspect.isgeneratorfunction(getattr(cls, "free_notifier", None)):
        raise BadDriver(f"{cls.__name__}.free_notifier is a generator: it runs from an SRCU "
                        "callback and cannot sleep; make it a plain method")
    if api == "modern" and cls.arch_invalidate_secondary_tlbs is not \
            MMUNotifier.arch_invalidate_secondary_tlbs and (
            cls.invalidate_range_start is not MMUNotifier.invalidate_range_start or
            cls.invalidate_range_end is not MMUNotifier.invalidate_range_end):
        # mm/mmu_notifier.c __mmu_notifier_register: WARN_ON_ONCE(...) return -EINVAL
        raise BadDriver(f"{cls.__name__} implements arch_invalidate_secondary_tlbs and "
                        "invalidate_range_start/end: Linux refuses that (-EINVAL); a TLB that "
                        "shares the CPU page tables uses only arch_invalidate_secondary_tlbs")
