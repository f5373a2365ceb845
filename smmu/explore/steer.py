"""Window-directed search: schedules steered by what the run reports, placing each device
fault step on each side of each notifier window.

A secondary MMU goes wrong when a device fault straddles an invalidation: the fault takes its
snapshot of the primary (GUP, ``hmm_range_fault``, a lockless walk) on one side of a window
(``invalidate_range_start`` returned ... ``invalidate_range_end``, or an ``invalidate_page``
call) and installs its translation (``note_map``) on the other. Which side is which decides
the bug: a whole window between snapshot and map is what a sequence count catches
(``buggy.kvm_no_seq``); a snapshot inside the window and a map after it is what bumping the
sequence at the wrong time misses (``buggy.kvm_seq_in_start``); a map inside it is
``MapInWindow``. Random and PCT schedules hit these placements by chance, and the ones that
need three well-placed switches rarely.

:class:`Steer` is a schedule that follows *directives*: "run task T until it has reported
``n`` events of these kinds" (events are what the lower layers tell the observer port,
:mod:`smmu.runtime.observer`; ``Steer`` listens to them as an observer). A directive whose
task is blocked lets the others run until it can go on, so a placement happens as early as
the locks allow. :func:`window_plans` makes, from one calibration run, the directive lists
that put each device task's next fault in each of the placements (before / inside / after)
around each window of each CPU task: a few schedules per window, deterministic.
"""

from __future__ import annotations

import random

from smmu.runtime.observer import Observer
from smmu.runtime.schedules import Fairness, Schedule

#: event kinds a directive can wait for, from the observer's events
SNAPSHOT = ("gup", "walk")        #: a device's view of the primary taken (GUP, HMM, walk)
MAP = ("map",)                    #: a secondary translation installed (note_map)
STEP = "step"                     #: a directive's kind: the watched task was given a step
#: hooks that invalidate on their own (no start/end around them)
PAGE_HOOKS = ("invalidate_page", "change_pte", "arch_invalidate_secondary_tlbs", "release")


#: a directive's "who" that picks uniformly among the runnable tasks (a seeded generator)
RANDOM = -1


def _directive(d) -> tuple:
    """``(who, watch, kinds, n)`` from ``(tid, kinds, n)`` (run ``tid`` until it reports
    ``n`` events of ``kinds``) or ``(who, watch, kinds, n)`` (prefer ``who``, a task id or
    :data:`RANDOM`, until task ``watch`` reports ``n`` events of ``kinds``)."""
    if len(d) == 3:
        t, k, n = d
        return int(t), int(t), frozenset(k), int(n)
    who, watch, k, n = d
    return int(who), int(watch), frozenset(k), int(n)


class Steer(Schedule, Observer):
    """A schedule that first follows ``prefix`` (task ids, one per choice point, as
    :class:`~smmu.runtime.schedules.Replay` does), then ``directives`` ``[(tid, kinds, n),
    ...]``: run task ``tid`` (when it can run; otherwise the others, the previous one
    continuing) until it has reported ``n`` events whose kind is in ``kinds``; then the next
    directive. After the last one, no preemption (the previous task continues while it can,
    else the lowest id).

    With ``record=True`` it keeps every task's events in order (``events``: tid -> list of
    ``(kind, choices made before it)``), which :func:`window_plans` reads. ``log`` is the
    choice log, as in :class:`~smmu.runtime.schedules.Replay`. ``run_once`` installs it
    as an observer of the run it schedules."""

    name = "windows"

    def __init__(self, prefix=(), directives=(), record: bool = False, seed: int = 0):
        self.prefix = [int(t) for t in prefix]
        self.directives = [_directive(d) for d in directives]
        self.record = record
        self.seed = int(seed)
        self.reset(None)

    def reset(self, seed):
        self.pos = 0
        self.hits = 0
        self.log = []
        self.events: dict[int, list] = {}
        self.sched = None
        self.fair = Fairness()
        self.rng = random.Random(self.seed)

    # ------------------------------------------------------------------ schedule
    def _advance(self, live):
        while self.pos < len(self.directives):
            who, watch, _, n = self.directives[self.pos]
            if self.hits < n and watch in live:
                return who
            self.pos += 1
            self.hits = 0
        return None

    def choose(self, sched, tasks):
        self.sched = sched
        tids = [t.tid for t in tasks]
        cur = sched.current
        prev = cur.tid if cur is not None else None
        i = len(self.log)
        if i < len(self.prefix):
            want = self.prefix[i]
        else:
            want = self._advance({t.tid for t in sched.tasks})
        if want == RANDOM:
            tid = tids[self.rng.randrange(len(tids))]
        elif want is not None and want in tids:
            tid = want
        elif prev in tids:
            tid = prev
        else:
            tid = min(tids)
        chosen = tid
        tid, fair = self.fair.pick(tids, tid)
        if self.pos < len(self.directives) and i >= len(self.prefix):
            _, watch, kinds, _ = self.directives[self.pos]
            if STEP in kinds and tid == watch:
                self.hits += 1          # a step of the watched task is an event of its own
        if fair and chosen == want and self.pos < len(self.directives):
            # the preferred task spins waiting for the others (a fault retrying while an
            # invalidation is in progress): give up the directive, let the others run
            self.pos += 1
            self.hits = 0
        self.log.append((tuple(tids), None if fair else prev, tid))
        return tids.index(tid)

    # ------------------------------------------------------------------ events
    def _event(self, kind: str) -> None:
        sched = self.sched
        cur = sched.current if sched is not None else None
        if cur is None or cur.tid < 0:
            return
        if self.record:
            self.events.setdefault(cur.tid, []).append((kind, len(self.log)))
        if self.pos < len(self.directives) and len(self.log) >= len(self.prefix):
            _, watch, kinds, _ = self.directives[self.pos]
            if cur.tid == watch and kind in kinds:
                self.hits += 1

    def install(self, sim) -> None:
        """Hear ``sim``'s events (from before its first choice point on)."""
        self.sched = sim
        sim.watch(self)

    def range_start(self, mm, rng):
        self._event("range_start")

    def range_start_returned(self, sub, rng, ret):
        self._event("start_returned")

    def range_end(self, mm, rng, subs):
        self._event("range_end")

    def range_end_over(self, sub, rng):
        self._event("end_over")

    def hook_enter(self, sub, hook, args, span):
        if hook in PAGE_HOOKS:
            self._event("hook:" + hook)

    def hook_exit(self, sub, hook, args, span):
        if hook in PAGE_HOOKS:
            self._event("exit:" + hook)

    def gup(self, mm, va, pfn, write, how):
        self._event("gup")

    def pte_walk(self, mm, va, pte):
        self._event("walk")

    def secondary_map(self, drv, va, pfn, writable):
        self._event("map")

    def device_access(self, drv, va, pfn, write, value):
        self._event("dma")

    def cpu_access(self, mm, va, write, value):
        self._event("cpu")

    def __repr__(self):
        return (f"<Steer prefix of {len(self.prefix)}, {len(self.directives)} directives, "
                f"at {self.pos}>")


def windows_of(events: dict) -> list:
    """The windows in a recorded run: ``[(c, kind, ordinal, before, inside)]`` where ``c``
    is the CPU task, ``kind`` ``"range_start"`` or ``"hook:<page hook>"``, ``ordinal`` the
    how-manieth of that kind in ``c``'s stream, ``before`` the number of choices made when
    the event preceding the window was reported (None if none did) and ``inside`` the
    number made once the window was open (start returned, or the page hook began)."""
    out = []
    for c, ev in sorted(events.items()):
        seen: dict = {}
        for i, (kind, at) in enumerate(ev):
            seen[kind] = seen.get(kind, 0) + 1
            page = kind.startswith("hook:")
            if kind != "range_start" and not page:
                continue
            before = ev[i - 1][1] if i else None
            inside = at
            if not page:
                nxt = next((a for k, a in ev[i + 1:] if k == "start_returned"), None)
                if nxt is None:
                    continue
                inside = nxt
            out.append((c, kind, seen[kind], before, inside))
    return out


def _hook_spans(events: dict) -> dict:
    """``{(c, kind, ordinal): (opened, closed)}``: for every window of a recorded run (as
    :func:`windows_of` names them) the choices made when ``c`` began it (``range_start``, or
    the page hook's call) and when its hooks were over (the first ``start_returned``, or the
    page hook's exit); ``closed - opened`` is how many steps ``c`` took inside its drivers'
    start (or page) hooks."""
    out = {}
    for c, ev in events.items():
        seen: dict = {}
        for i, (kind, at) in enumerate(ev):
            if kind != "range_start" and not kind.startswith("hook:"):
                continue
            seen[kind] = seen.get(kind, 0) + 1
            over = "start_returned" if kind == "range_start" else "exit:" + kind[5:]
            closed = next((a for k, a in ev[i + 1:] if k == over), None)
            if closed is not None:
                out[(c, kind, seen[kind])] = (at, closed)
    return out


#: the most preemption points inside one window's start (or page) hooks that
#: :func:`hook_plans` places a device fault at (the first, where the first hook took its
#: first lock, is the "before" placement of :func:`window_plans` in effect)
HOOK_POINTS = 3


def hook_plans(events: dict, choices: list, done: set | None = None) -> list:
    """``[(key, prefix, directives)]`` like :func:`window_plans`, for the placements *inside*
    the drivers' hooks: a device task ``d`` completes a fault before the window (so the
    driver holds something for the window to invalidate), the CPU task ``c`` begins the
    window and is preempted after its ``j``-th step inside its start hooks (or its page
    hook: between two statements of a driver's hook, at each lock it takes or sleep it does,
    up to :data:`HOOK_POINTS`), ``d`` completes a fault there, then ``c`` runs until the window is
    over, and ``d``'s later accesses meet what the invalidation left. A driver whose start
    hook invalidates its own cache before it raises what its faults check (5.17's gfn=>pfn
    cache, ``buggy.kvm_gpc_speculative_valid``) is caught only so: the fault must fit between
    two of the hook's statements."""
    done = done if done is not None else set()
    devs = sorted(t for t, ev in events.items() if any(k in SNAPSHOT or k in MAP for k, _ in ev))
    spans = _hook_spans(events)
    out = []
    for c, kind, nth, before, _ in windows_of(events):
        opened, closed = spans.get((c, kind, nth), (None, None))
        if opened is None:
            continue
        over = (c, ["end_over"] if kind == "range_start" else ["exit:" + kind[5:]], 1)
        prefix = list(choices[:before]) if before is not None else []
        for d in devs:
            if d == c:
                continue
            for j in range(1, min(closed - opened, HOOK_POINTS) + 1):
                key = (c, kind, nth, d, f"hook-{j}")
                if key in done:
                    continue
                done.add(key)
                out.append((key, prefix, [(d, sorted(MAP), 1), (c, [kind], 1),
                                          (c, [STEP], j), (d, sorted(MAP), 1), over]))
    return out


def window_plans(events: dict, choices: list, done: set | None = None) -> list:
    """``[(key, prefix, directives)]`` for :class:`Steer` from a recorded run (``events``,
    its ``choices``): for every window of every CPU task ``c`` (a range it invalidates, its
    ``range_start`` ... ``end_over``, or a page hook it calls) and every device task ``d``
    (one that took snapshots or mapped), placements of ``d``'s next fault:

    * snapshot before the window opens, map after it closed (the whole window in between);
    * snapshot inside (after start returned / the hook began), map after it closed;
    * snapshot and map inside;
    * snapshot before, map inside.

    The prefix is the recorded run's choices up to the point (before the window, or inside
    it), so windows that only some interleavings have are reached again. "Closed" is once
    ``c`` has begun the end (``range_end``: a driver that drops its lock in the middle of its
    end is caught there) and, as a second variant, once the end is over. ``key`` names the
    plan (c, window, d, placement); keys in ``done`` are skipped, so feeding every steered
    run back in explores each window's placements once, including windows that appear only
    under a steered schedule."""
    done = done if done is not None else set()
    devs = sorted(t for t, ev in events.items() if any(k in SNAPSHOT or k in MAP for k, _ in ev))
    snap, mapk = sorted(SNAPSHOT), sorted(MAP)
    out = []
    for c, kind, nth, before, inside in windows_of(events):
        page = kind.startswith("hook:")
        if page:
            closes = [("exit", [(c, ["exit:" + kind[5:]], 1)])]
        else:
            closes = [("end", [(c, ["range_end"], 1)]), ("over", [(c, ["end_over"], 1)])]
        for d in devs:
            if d == c:
                continue
            plans = []
            for tag, close in closes:
                if before is not None:
                    plans.append((f"before-{tag}", before,
                                  [(d, snap, 1)] + close + [(d, mapk, 1)]))
                plans.append((f"inside-{tag}", inside, [(d, snap, 1)] + close + [(d, mapk, 1)]))
            plans.append(("inside-map", inside, [(d, mapk, 1)]))
            if before is not None and not page:
                plans.append(("before-map", before,
                              [(d, snap, 1), (c, ["start_returned"], 1), (d, mapk, 1)]))
            for tag, at, directives in plans:
                key = (c, kind, nth, d, tag)
                if key in done:
                    continue
                done.add(key)
                out.append((key, list(choices[:at]), directives))
    return out
