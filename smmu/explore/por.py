"""The exhaustive strategy: preemption-bounded depth-first search (CHESS) with sleep-set
partial-order reduction, that says whether it finished.

Every schedule with at most ``bound`` preemptions (a switch away from a task that could
have continued) is explored, or one equivalent to it: two steps of different tasks that
touch disjoint state (:mod:`smmu.runtime.footprint`) commute, so of two schedules that differ
only in their order one is enough. Sleep sets (Godefroid 1996) carry that knowledge down the
search: after exploring task ``t`` at a choice point, a sibling branch that runs ``u`` first
need not run ``t`` next while every step since is independent of ``t``'s step; a run in which
every runnable task is asleep is cut short (all its continuations were explored elsewhere).

Combined with a preemption bound, a sleep set may only hold the task the search explored
first there, the *continuing* task: moving that task's step earlier never costs a preemption
more, so whatever the cut branch would have reached within the bound is reached by the
explored one within the bound (other siblings each cost a preemption and are never put to
sleep; cf. Coons, Musuvathi, McKinley, "Bounded partial-order reduction", OOPSLA 2013, on
why the unrestricted combination is incomplete).

What a step touches (:func:`owner_of`, :class:`FootprintObserver`): the code it ran, by
owner (the primary MM and the notifier chain are one object, all drivers and user code
another, the scenario's glue a third; plain calls count for the frame that made them), the
locks, wait queues and completions it used, and what the observer port reports: a DMA read
reads the primary, a DMA write writes it, a lockless walk reads it, ``note_map`` reads it
(the oracle judges the map against the PTE). The reduction is sound as long as driver code
reaches the primary MM only through those (generator operations, ``lookup_pte``,
``dma_read`` / ``dma_write``); ``tests/test_por.py`` compares outcomes with and without it.
"""

from __future__ import annotations

import os
from pathlib import Path

from smmu.runtime.footprint import EVERYTHING, Footprints, dependent
from smmu.runtime.observer import Observer
from smmu.runtime.schedules import FAIR_BOUND, Fairness, Schedule

#: owner tokens
MM = "mm"                 #: the primary MM, the notifier chain, the frame table
DRIVERS = "drivers"       #: driver state (and any code outside smmu)
SCENARIO = "scenario"     #: the scenario's glue (device loops, joins, closures it shares)

_ROOT = Path(__file__).resolve().parents[2]
_OWNERS = [
    (str(_ROOT / "smmu" / "runtime") + os.sep, None),
    (str(_ROOT / "smmu" / "notifier") + os.sep, MM),
    (str(_ROOT / "primary_mm") + os.sep, MM),
    (str(_ROOT / "smmu" / "sim") + os.sep, MM),
    (str(_ROOT / "smmu" / "scenarios") + os.sep, SCENARIO),
    (str(_ROOT / "smmu" / "devices") + os.sep, DRIVERS),
    (str(_ROOT / "smmu") + os.sep, EVERYTHING),
]


#: the search's fairness bound: a task chosen this many times in a row while others could
#: run is taken to spin (a fault retrying while an invalidation is in progress) and is set
#: aside for one step, a switch that costs no preemption. Lower than the runtime's
#: FAIR_BOUND (1000): every extra spin step is one more choice point the bounded search
#: would preempt at, and a spin's iterations are all alike
SPIN_BOUND = 64


def owner_of(code) -> str | None:
    """The owner token of the state code object ``code`` works on (by its file)."""
    name = code.co_filename
    for prefix, tok in _OWNERS:
        if name.startswith(prefix):
            return tok
    return DRIVERS


def preempts(tids, prev, chosen) -> int:
    """1 if choosing ``chosen`` among ``tids`` switches away from ``prev`` while it could run."""
    return 1 if prev in tids and chosen != prev else 0


class FootprintObserver(Observer):
    """Adds what the observer port reports to the running step's footprint."""

    def __init__(self, fp: Footprints):
        self.fp = fp

    def device_access(self, drv, va, pfn, write, value):
        (self.fp.write if write else self.fp.read)(MM)
        self.fp.write(DRIVERS)

    def pte_walk(self, mm, va, pte):
        self.fp.read(MM)

    def secondary_map(self, drv, va, pfn, writable):
        self.fp.read(MM)
        self.fp.write(DRIVERS)

    def secondary_unmap(self, drv, start, end):
        self.fp.write(DRIVERS)

    def hook_enter(self, sub, hook, args, span):
        self.fp.write(DRIVERS)

    def interval_invalidate(self, isub, rng, ret):
        self.fp.write(DRIVERS)

    def interval_release(self, isub, rng, ret):
        self.fp.write(DRIVERS)


class _Node:
    """One choice point of the search: candidates, the previous task, the task chosen now,
    the footprints of the children tried (tid -> footprint), the sleep set (tid ->
    footprint) and the preemptions made before it."""

    __slots__ = ("tids", "prev", "chosen", "tried", "sleep", "pre")

    def __init__(self, tids, prev, chosen, sleep, pre):
        self.tids = tids
        self.prev = prev
        self.chosen = chosen
        self.tried: dict = {}
        self.sleep: dict = sleep
        self.pre = pre


class SleepSetSchedule(Schedule):
    """One run of the search: follow ``prefix``; the step chosen at its last entry starts
    with the sleep set ``child_sleep``; from there on, never preempt (the previous task
    continues while it can, else the lowest-id task not asleep), keep the sleep set up to
    date from each step's footprint, and end the run (:class:`~smmu.runtime.footprint.Halt`)
    when only sleeping tasks could run. Records ``nodes`` (``[tids, prev, chosen, sleep,
    footprint of the chosen step]`` for each choice point from the end of the prefix on) and
    ``first`` (the footprint of the step chosen at the prefix's last entry)."""

    name = "exhaustive"

    def __init__(self, prefix=(), child_sleep=None, por: bool = True, fair: int = FAIR_BOUND):
        self.prefix = list(prefix)
        self.child_sleep = dict(child_sleep or {})
        self.por = por
        self.fair_bound = int(fair)
        self.reset(None)

    def reset(self, seed):
        self.i = 0
        self.nodes: list = []
        self.first = None
        self.sleep: dict = {}
        self.acc_r: set = set()
        self.acc_w: set = set()
        self.halted = False
        self.log = []
        self.fair = Fairness(self.fair_bound)
        self._since = None      # index into nodes (or -1: the prefix's last) of the open step

    def on_step(self, task, fp) -> bool:
        """A step ended (the recorder's callback): fold its footprint into the open choice's
        and into the sleep set; end the run if a sleeping task ran."""
        self.acc_r |= fp[0]
        self.acc_w |= fp[1]
        if not self.por or self.i < len(self.prefix):
            return False
        if task.tid in self.sleep:        # a sleeping task ran (it was the only one)
            self.halted = True
            return True
        self.sleep = {t: f for t, f in self.sleep.items() if not dependent(f, fp)}
        return False

    def _close_open_step(self):
        acc = (frozenset(self.acc_r), frozenset(self.acc_w))
        self.acc_r = set()
        self.acc_w = set()
        if self._since is None:
            return
        if self._since < 0:
            self.first = acc
        else:
            self.nodes[self._since][4] = acc

    def choose(self, sched, tasks):
        fpr = sched.footprint
        if fpr is not None and fpr.flush():
            self.halted = True      # the next step halts; choose still returns
        self._close_open_step()
        tids = [t.tid for t in tasks]
        cur = sched.current
        prev = cur.tid if cur is not None else None
        i = self.i
        self.i = i + 1
        if i < len(self.prefix):
            tid = self.prefix[i] if self.prefix[i] in tids else min(tids)
            if i == len(self.prefix) - 1:
                self.sleep = dict(self.child_sleep)
                self._since = -1
            else:
                self._since = None
            self.fair.chose(tids, tid)
            self.log.append(tid)
            return tids.index(tid)
        awake = [t for t in tids if t not in self.sleep]
        if not awake:                     # every runnable task asleep: covered elsewhere
            self.halted = True
            if fpr is not None:
                fpr.halted = True
            self.nodes.append([tuple(tids), prev, tids[0], dict(self.sleep), None])
            self._since = len(self.nodes) - 1
            return 0
        tid = prev if prev in awake else min(awake)
        node_tids = tuple(tids)
        tid, forced = self.fair.pick(awake, tid)
        if forced:                        # fairness: a free switch, and the tasks set
            node_tids = tuple(t for t in tids if t not in self.fair.spinners)  # aside are
            prev = None                   # no alternatives here
        self.nodes.append([node_tids, prev, tid, dict(self.sleep), None])
        self._since = len(self.nodes) - 1
        self.log.append(tid)
        return tids.index(tid)


    def finish(self, sched) -> None:
        """The run is over: account for the steps after the last choice point."""
        fpr = sched.footprint
        if fpr is not None:
            fpr.flush()
        self._close_open_step()

    def install(self, sim) -> None:
        """Make ``sim`` record footprints for this run (before its tasks are spawned)."""
        if self.por:
            fp = Footprints(owner_of, self.on_step)
            sim.footprint = fp
            sim.watch(FootprintObserver(fp))


class BoundedSearch:
    """The preemption-bounded DFS, as a driver of runs: :meth:`next_run` gives the next
    :class:`SleepSetSchedule` (None when the bounded space is exhausted), :meth:`done_run`
    takes it back after the run. ``por``: sleep-set reduction on (default) or off."""

    def __init__(self, bound: int, por: bool = True, fair: int = SPIN_BOUND):
        self.bound = int(bound)
        self.por = bool(por)
        self.fair = int(fair)
        self.stack: list[_Node] = []
        self.complete = False
        self.pruned = 0          # runs cut short because only sleeping tasks could run
        self._next = SleepSetSchedule((), None, self.por, self.fair)

    def next_run(self) -> SleepSetSchedule | None:
        return self._next

    def done_run(self, sched: SleepSetSchedule) -> None:
        stack = self.stack
        j0 = len(sched.prefix)
        if sched.halted:
            self.pruned += 1
        if j0 and sched.first is not None:
            top = stack[j0 - 1]
            top.tried[top.chosen] = sched.first
        pre = stack[-1].pre + preempts(stack[-1].tids, stack[-1].prev, stack[-1].chosen) \
            if stack else 0
        for tids, prev, chosen, sleep, fp in sched.nodes:
            n = _Node(tids, prev, chosen, sleep, pre)
            n.tried[chosen] = fp
            stack.append(n)
            pre += preempts(tids, prev, chosen)
        if sched.halted and sched.nodes and sched.nodes[-1][4] is None:
            stack[-1].tried.clear()        # the blocked node: nothing to explore from it
            stack[-1].tids = ()
        self._next = self._backtrack()

    def _backtrack(self) -> SleepSetSchedule | None:
        stack = self.stack
        while stack:
            n = stack[-1]
            alt = None
            for t in n.tids:
                if t in n.tried or t in n.sleep:
                    continue
                if n.pre + preempts(n.tids, n.prev, t) <= self.bound:
                    alt = t
                    break
            if alt is None:
                stack.pop()
                continue
            child = {}
            if self.por:
                child = dict(n.sleep)
                # only the continuing task may sleep in a sibling (see the module docstring)
                if n.prev in n.tried and n.tried[n.prev] is not None:
                    child[n.prev] = n.tried[n.prev]
            n.chosen = alt
            n.tried[alt] = None
            return SleepSetSchedule([x.chosen for x in stack], child, self.por, self.fair)
        self.complete = True
        return None

    def __repr__(self):
        state = "complete" if self.complete else f"{len(self.stack)} deep"
        return f"<BoundedSearch bound={self.bound} por={self.por} {state}>"
