"""The notifier protocol's state and rules, built from the events the notifier chain and the
drivers report (:mod:`smmu.runtime.observer`).

Per subscription it keeps the *windows* (ranges whose ``invalidate_range_start`` returned and
whose ``invalidate_range_end`` has not begun), the hooks running now and the pages or ranges
they notify about, and the ranges whose end has begun but whose own end has not returned;
per mm the ranges a caller started and has not ended; per interval notifier the ranges it
was invalidated for, until the last invalidation ends. From them it judges, at the step they
happen:

* ``MapInWindow``: a secondary mapping (``note_map``) inside one of the driver's windows
  (its own MIGRATE excepted) or inside a range its interval notifier was invalidated for;
* ``BadReturn``: a start that refused where it may not (a blockable range, an API without
  failure, or a notifier that also implements ``end``), an interval notifier refusing a
  blockable range;
* ``UnpairedRange``: an ``invalidate_range_end`` without its start.

:class:`ProtocolChecker` is what a run has when the data oracle is off (``check=False``);
:class:`~smmu.oracle.oracle.Oracle` extends it with the data and frame models and the
end-of-run checks.
"""

from __future__ import annotations

from smmu.notifier import failed, overrides
from smmu.runtime.observer import Observer
from smmu.oracle.rules import cite
from smmu.runtime.task import call_site


class _Subscription:
    """What the checker tracks for one subscription (a driver)."""

    __slots__ = ("sub", "windows", "in_flight", "spans", "ending", "joined_inside")

    def __init__(self, sub):
        self.sub = sub
        self.windows: list = []   # ranges whose start returned and whose end has not begun
        self.in_flight = 0        # its hooks running now
        self.spans: list = []     # (start, end) of its invalidate_page / change_pte / start
        self.ending: list = []    # ranges whose end began and whose own end has not returned
        self.joined_inside: list = []   # ranges already started when it registered


class ProtocolChecker(Observer):
    """The notifier protocol rules of one run (see the module docstring). ``sim`` is the
    scheduler the run belongs to; violations are recorded there."""

    def __init__(self, sim):
        self.sim = sim
        self._subs: dict[int, _Subscription] = {}
        self._open: dict[int, tuple] = {}        # id(mm) -> (mm, ranges started, not ended)
        self._intervals: dict[int, tuple] = {}   # id(isub) -> (isub, ranges invalidated for)

    def __repr__(self):
        nwin = sum(len(s.windows) for s in self._subs.values())
        nopen = sum(len(r) for _, r in self._open.values())
        return (f"<{type(self).__name__} {len(self._subs)} subscriptions, {nwin} windows, "
                f"{nopen} open ranges>")

    def _violation(self, kind, message, **kw):
        """Record a protocol finding with the Linux text its rule rests on
        (:mod:`smmu.oracle.rules`) at the end of its message."""
        return self.sim.violation(kind, message + cite(kind), **kw)

    # ------------------------------------------------------------------ state
    def _sub(self, sub) -> _Subscription:
        st = self._subs.get(id(sub))
        if st is None:
            st = self._subs[id(sub)] = _Subscription(sub)
        return st

    def _open_list(self, mm) -> list:
        ent = self._open.get(id(mm))
        if ent is None:
            ent = self._open[id(mm)] = (mm, [])
        return ent[1]

    def _interval_windows(self, isub) -> list:
        ent = self._intervals.get(id(isub))
        if ent is None:
            ent = self._intervals[id(isub)] = (isub, [])
        return ent[1]

    def open_ranges(self, mm) -> list:
        """The ranges of ``mm`` whose start a caller began and whose end it has not."""
        ent = self._open.get(id(mm))
        return list(ent[1]) if ent is not None else []

    def unpaired(self, mm) -> list:
        """``[(subscription, ranges)]``: the subscriptions on ``mm``'s chain with windows
        still open (a start returned, its end never began)."""
        out = []
        for s in mm.notifier_subscriptions.subs:
            st = self._subs.get(id(s))
            if st is not None and st.windows:
                out.append((s, list(st.windows)))
        return out

    def windows(self, drv):
        """The ranges in which ``drv`` may not establish a mapping now: its windows (except
        its own MIGRATE) and those its interval notifiers were invalidated for until the
        last end (a mirror that passes read_retry cannot map in them)."""
        st = self._subs.get(id(drv))
        if st is not None:
            for r in st.windows:
                if r.owner is not drv:
                    yield r
        subs = getattr(drv.mm, "notifier_subscriptions", None)
        for isub in (subs.itree if subs is not None else ()):
            if isub.owner is drv:
                ent = self._intervals.get(id(isub))
                if ent is not None:
                    yield from ent[1]

    def in_flight(self, drv) -> int:
        """How many hooks of ``drv`` are running now."""
        st = self._subs.get(id(drv))
        return st.in_flight if st is not None else 0

    def spans(self, drv) -> list:
        """``(start, end)`` of ``drv``'s invalidate_page / change_pte / range start calls
        running now."""
        st = self._subs.get(id(drv))
        return st.spans if st is not None else []

    def ending(self, drv) -> list:
        """Ranges whose end began and whose end of ``drv`` has not returned: until then the
        driver may still hold (and use) references to the range's old pages."""
        st = self._subs.get(id(drv))
        return st.ending if st is not None else []

    # ------------------------------------------------------------------ events
    def notifier_register(self, mm, sub):
        self._sub(sub).joined_inside = list(self._open_list(mm))

    def notifier_unregister(self, mm, sub):
        """``sub`` left the chain (unregister, the last put, or exit's release): a start of
        it that ran before gets no end and that is not unpaired ("A start that ran before
        the unlink may legitimately get no end": the driver was told by ``release``, or asked
        to leave). Its windows close."""
        st = self._subs.get(id(sub))
        if st is not None:
            st.windows.clear()

    def hook_enter(self, sub, hook, args, span):
        if hook == "arch_invalidate_secondary_tlbs" and args[1] >= args[2]:
            self._violation(
                "BadRange", f"{sub.name}.arch_invalidate_secondary_tlbs got the empty range "
                f"[{args[1]:#x}, {args[2]:#x}) for a TLB flush: a driver that invalidates "
                "what it is given invalidates nothing (f7edb07ad7c6, arm64 6.6..6.13)",
                address=args[1])
        st = self._sub(sub)
        st.in_flight += 1
        if span is not None:
            st.spans.append(span)

    def hook_exit(self, sub, hook, args, span):
        st = self._sub(sub)
        st.in_flight -= 1
        if span is not None:
            st.spans.remove(span)

    def range_start(self, mm, rng):
        self._open_list(mm).append(rng)

    def range_start_returned(self, sub, rng, ret):
        """``BadReturn``: include/linux/mmu_notifier.h (4.19+): "If blockable argument is
        set to false then the callback cannot sleep and has to return with -EAGAIN if
        sleeping would be required. 0 should be returned otherwise. Please note that
        notifiers that can fail invalidate_range_start are not allowed to implement
        invalidate_range_end"; before 4.19 start returned void (it cannot fail)."""
        if not failed(ret):
            self._sub(sub).windows.append(rng)
            return
        api = sub.mm.notifier_subscriptions.api
        if api != "modern":
            self._violation("BadReturn", f"{sub.name}.invalidate_range_start "
                               f"returned {ret!r}: it cannot fail in {api}")
        elif rng.blockable:
            self._violation(
                "BadReturn", f"{sub.name}.invalidate_range_start returned {ret!r} for a "
                f"blockable {rng!r}: only a non-blockable start may fail (WARN_ON in "
                "mn_hlist_invalidate_range_start)")
        elif overrides(sub, "invalidate_range_end"):
            self._violation(
                "BadReturn", f"{sub.name} failed invalidate_range_start but implements "
                "invalidate_range_end: a notifier that can fail start may not have "
                "end (it cannot know whether its start failed)")

    def range_start_failed(self, mm, rng):
        self._open_list(mm).remove(rng)

    def range_start_unwind(self, sub, rng):
        st = self._sub(sub)
        if rng in st.windows:
            st.windows.remove(rng)

    def range_end(self, mm, rng, subs):
        """``UnpairedRange`` for an end without its start: include/linux/mmu_notifier.h
        (2.6.27..6.12): "invalidate_range_start() and invalidate_range_end() must be
        paired"."""
        opened = self._open_list(mm)
        if rng in opened:
            opened.remove(rng)
        else:
            self._violation("UnpairedRange", f"invalidate_range_end({rng!r}) without a "
                               "matching start", address=rng.start)
        for s in mm.notifier_subscriptions.subs:      # the window closes as end begins
            st = self._subs.get(id(s))
            if st is not None and rng in st.windows:
                st.windows.remove(rng)
        for s in subs:              # until its own end returns, a driver may still hold
            st = self._sub(s)                   # (and use) references to the old pages
            st.ending.append(rng)
            if rng in st.joined_inside:
                st.joined_inside.remove(rng)
                if overrides(s, "invalidate_range_start"):
                    self._violation(
                        "UnpairedRange",
                        f"{s.name} gets invalidate_range_end({rng!r}) without its start: it "
                        "registered after the start (mmu_notifier_register takes mmap_lock "
                        "for write and mm_take_all_locks, so a caller must hold one of them "
                        "from start to end, as CVE-2024-26617's fix 4cccb6221cae made "
                        "PAGEMAP_SCAN do); a driver counting ranges in flight (KVM) goes "
                        "negative", address=rng.start, driver=s.name)

    def range_end_over(self, sub, rng):
        self._sub(sub).ending.remove(rng)

    def interval_invalidate(self, isub, rng, ret):
        if isub.freed:
            self._violation(
                "NotifierUseAfterFree", f"invalidate of {isub!r} ran for {rng!r} after its "
                "owner freed it: mmu_interval_notifier_remove returned too early",
                address=rng.start, freed=isub.name)
        self.interval_release(isub, rng, ret)
        if not ret and rng.blockable:
            self._violation(
                "BadReturn", f"interval notifier {isub!r} returned False for a "
                f"blockable {rng!r}: it may only fail when it would have to sleep on a "
                "non-blockable range", address=rng.start)

    def interval_release(self, isub, rng, ret):
        if ret and (rng.owner is None or rng.owner is not isub.owner):
            self._interval_windows(isub).append(rng)

    def interval_tree_update(self, mm, isub, op):
        if isub.freed:
            self._violation(
                "NotifierUseAfterFree",
                f"mn_itree_inv_end applies the deferred {op} of {isub!r}, which its owner "
                "freed after mmu_interval_notifier_remove returned: remove must not return "
                "while the subscription is still on the deferred list (319561669a59: read "
                "invalidate_seq under subscriptions->lock)", freed=isub.name)

    def interval_invalidations_done(self, mm):
        for isub in mm.notifier_subscriptions.itree:
            ent = self._intervals.get(id(isub))
            if ent is not None:
                ent[1].clear()

    def window_at(self, drv, va):
        """The window of ``drv`` (see :meth:`windows`) that contains ``va``, or None."""
        return next((r for r in self.windows(drv) if r.start <= va < r.end), None)

    def secondary_map(self, drv, va, pfn, writable):
        """``MapInWindow``: include/linux/mmu_notifier.h (2.6.27..6.12): "the establishment
        of sptes is forbidden in the range passed to invalidate_range_begin/end for the
        whole duration of the invalidate_range_begin/end critical section"; for an interval
        notifier, mm/mmu_notifier.c mmu_interval_read_retry: a mapping made while the
        interval is being invalidated passed no read_retry."""
        window = self.window_at(drv, va)
        if window is not None:
            where = call_site()
            self._violation(
                "MapInWindow",
                f"{drv.name} mapped {va:#x} -> pfn {pfn} at {where} inside the open window of "
                f"{window!r}: between invalidate_range_start and _end no secondary mapping of "
                "the range may be established (check an in-progress count or sequence "
                "under the driver lock before installing)", address=va, frames=(pfn,),
                where=where)
