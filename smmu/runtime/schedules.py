"""Schedules: who runs next at each choice point, and the registry of schedule names.

``Scheduler(schedule=NAME)`` builds a registered schedule (:func:`make_schedule`); each
schedule registers its name where it is defined (:func:`register_schedule`).

``"round_robin"`` each task in turn; ``"random"`` uniformly random from a seeded generator;
``"timed"`` the task that can resume earliest in simulated time first, ties broken and costs
optionally jittered from the seed (benchmarks; :class:`Timed`); ``"pct"`` probabilistic concurrency
testing (Burckhardt, Kothari, Musuvathi, Nagarakatte, ASPLOS 2010); ``"replay"`` an explicit
choice list (:class:`Replay`, also what the preemption-bounded search extends prefixes with);
:class:`HypothesisSchedule` draws each choice from hypothesis data (not registered: it needs
the data object).
"""

from __future__ import annotations

import random as _random
import struct
import sys
from array import array
from operator import itemgetter

import numpy as np

from hypothesis import strategies as st

from smmu.base.errors import UsageError
from smmu.runtime.task import Task

#: choice points PCT assumes a run has before it has seen one (explore() measures it instead)
DEFAULT_PCT_STEPS = 64

#: fairness: a task chosen this many times in a row while others could run is set aside
#: (PCT: lowest priority; Replay's fallback: the next task). Without it a task spinning on a
#: condition another task must make true (a KVM fault retrying while an invalidation is in
#: progress) starves that task under priority scheduling and the run ends as a false
#: Livelock; CHESS handles yielding spin loops the same way (Musuvathi & Qadeer, PLDI 2008).
FAIR_BOUND = 1000


class Fairness:
    """The fairness rule of the schedules that otherwise never preempt (``Replay``'s
    fallback, the steered and the exhaustive search's schedules): a task chosen ``bound``
    times in a row while others could run is taken to spin, waiting for one of them (a fault
    retrying while an invalidation is in progress), and is set aside: while a spinner is set
    aside, a task that is not one runs whenever it can, until it blocks or ends. Two spinners
    waiting for a third that only gets in between their steps (both devices of one mm
    retrying while the CPU needs the lock one of them takes each time round) therefore do
    not starve it, as alternating between them would.

    :meth:`pick` gets the candidates and the schedule's own choice and returns the task to
    run and whether fairness overrode the choice (then the switch is no preemption the
    schedule chose); ``spinners`` are the tasks set aside now."""

    __slots__ = ("bound", "last", "run", "spinners")

    def __init__(self, bound: int = None):
        self.bound = int(bound if bound is not None else FAIR_BOUND)
        self.last = None
        self.run = 0
        self.spinners: set = set()

    def chose(self, tids, tid) -> None:
        """``tid`` runs (a listed choice, not the schedule's to override): count it."""
        self._note(tids, tid)
        self._count(tid)

    def _note(self, tids, tid) -> None:
        last = self.last
        if self.spinners and last is not None and last not in self.spinners \
                and last not in tids:
            self.spinners.clear()          # the task they waited for blocked or ended
        if tid == last and self.run >= self.bound:
            self.spinners.add(tid)

    def _count(self, tid) -> None:
        if tid == self.last:
            self.run += 1
        else:
            self.last, self.run = tid, 1

    def pick(self, tids, tid) -> tuple:
        last = self.last
        forced = False
        self._note(tids, tid)
        if tid in self.spinners:
            calm = [t for t in tids if t not in self.spinners]
            if calm:
                tid, forced = min(calm), True
            elif tid == last and self.run >= self.bound:
                others = [t for t in tids if t != tid]
                if others:
                    tid = min((t for t in others if t > last), default=min(others))
                    forced = True
        self._count(tid)
        return tid, forced


class Schedule:
    """Chooses which runnable task runs next. ``choose`` gets the candidates (at least two,
    in a stable order) and returns an index into them. Subclass it for new strategies.

    A schedule may also hand over several decisions at once: ``batch(sched, tasks, limit)``
    returns the tasks ``choose`` would pick at the next choice points if the candidates stay
    ``tasks`` all along, and their ids: two new lists of at most ``limit``, at least one
    (or None to decline),
    and the scheduler then calls ``consumed(k)`` with how many of them it used before the
    candidates changed (a task blocked, ended or was spawned): afterwards the schedule must
    be as if ``choose`` had been called ``k`` times. The run is the same either way, one
    call per step less. ``batch = None`` (the default): one ``choose`` per choice point."""

    name = "schedule"
    #: a function returning the factor each charged cost is multiplied by, or None (no
    #: jitter); only :class:`Timed` jitters
    cost_factor = None
    batch = None

    def reset(self, seed: int | None) -> None:
        pass

    def choose(self, sched, tasks: list[Task]) -> int:
        raise NotImplementedError

    def consumed(self, k: int) -> None:
        """``k`` decisions of the last :meth:`batch` were used (see the class)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


SCHEDULES: dict[str, object] = {}


def register_schedule(name: str, factory) -> None:
    """Make ``Scheduler(schedule=name)`` build ``factory(seed)`` (or ``factory()`` if it takes
    no seed)."""
    SCHEDULES[name] = factory


def make_schedule(schedule, seed: int | None) -> Schedule:
    """The :class:`Schedule` instance for ``schedule`` (a registered name or an instance,
    which is reset to ``seed``)."""
    if isinstance(schedule, Schedule):
        schedule.reset(seed)
        return schedule
    if schedule not in SCHEDULES:
        raise UsageError(f"unknown schedule {schedule!r}: use one of {sorted(SCHEDULES)} "
                         "or pass a Schedule instance")
    cls = SCHEDULES[schedule]
    try:
        s = cls(seed or 0)
    except TypeError:
        s = cls()
    s.reset(seed)
    return s


class RoundRobin(Schedule):
    """Each task in turn: after task ``t`` the next one with a larger id, wrapping around."""

    name = "round_robin"

    def __init__(self):
        self.reset(None)

    def reset(self, seed):
        self.last = -1          # tid of the task chosen last
        self.prev = None        # that task, and where it stood among the candidates
        self.pos = -1

    def _next(self, tasks):
        # fast path: the last one chosen is still where it was (tasks are in tid order, so
        # the next larger tid is the next position, or the first after the last)
        i = self.pos
        n = len(tasks)
        if i < n and tasks[i] is self.prev:
            i += 1
            if i == n:
                i = 0
        else:
            last = self.last
            i = next((k for k, t in enumerate(tasks) if t.tid > last), 0)
        return i

    def choose(self, sched, tasks):
        i = self._next(tasks)
        t = tasks[i]
        self.prev = t
        self.last = t.tid
        self.pos = i
        return i

    def batch(self, sched, tasks, limit):
        n = len(tasks)
        i = self._next(tasks)
        order = tasks[i:] + tasks[:i]
        reps = -(-limit // n)
        run = order * reps
        tids = [t.tid for t in order] * reps
        del run[limit:]
        self._batched = (i, n, list(tasks))
        return run, tids

    def consumed(self, k):
        if k:
            i, n, tasks = self._batched
            i = (i + k - 1) % n
            t = tasks[i]
            self.prev = t
            self.last = t.tid
            self.pos = i
        self._batched = None


register_schedule("round_robin", RoundRobin)


class RandomSchedule(Schedule):
    """Uniformly random among the runnable tasks, from a seeded generator: the choice among
    ``n`` is ``random.Random(seed).randrange(n)``. A batch of choices draws the generator's
    32-bit outputs in one ``getrandbits`` and takes them as CPython's
    ``_randbelow_with_getrandbits`` does (the top ``n.bit_length()`` bits of the next output,
    again while that is ``>= n``); outputs a batch drew but did not use are kept for the
    next choices, so the sequence is ``randrange``'s either way (tests/test_schedules.py
    compares them)."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.reset(seed)

    def reset(self, seed):
        if seed is not None:
            self.seed = seed
        # seeded at the first draw (a schedule made for a run is reset again by the
        # scheduler with the same seed: seeding Mersenne Twister costs several us)
        self._rng = None
        self._words: list = []      # outputs drawn from rng and not used yet, in order
        self._ends = None
        self._hint = _HINT_MIN      # the size of the next batch: twice what the last used

    @property
    def rng(self) -> _random.Random:
        """The generator the choices are drawn from (``random.Random(seed)``)."""
        rng = self._rng
        if rng is None:
            rng = self._rng = _random.Random(self.seed)
        return rng

    def choose(self, sched, tasks):
        words = self._words
        if not words:
            return self.rng.randrange(len(tasks))
        n = len(tasks)
        shift = 32 - n.bit_length()
        for i, w in enumerate(words):
            if w >> shift < n:
                del words[:i + 1]
                return w >> shift
        words.clear()               # the rest of the draw: _randbelow_with_getrandbits's loop
        rng = self.rng
        r = rng.getrandbits(32 - shift)
        while r >= n:
            r = rng.getrandbits(32 - shift)
        return r

    def batch(self, sched, tasks, limit):
        # a batch is usually cut short after a few steps (a task blocks, wakes another):
        # hand over about twice what the last one used (the run is the same either way)
        if limit > self._hint:
            limit = self._hint
        n = len(tasks)
        k = n.bit_length()
        shift = 32 - k
        words = self._words
        want = limit + limit * ((1 << k) - n) // n + 4     # outputs expected for limit draws
        ends = []           # after each choice, how many outputs it has used
        while True:
            if len(words) < want:       # (drawn ahead in chunks: the same outputs in turn)
                words += _words32(self.rng, max(want - len(words), _DRAW))
            if limit < 64:
                # the first ``want`` outputs hold ``limit`` accepted ones unless rejections
                # ran long (then the loop looks further)
                ends = [i + 1 for i, w in enumerate(words if len(words) <= want else
                                                    words[:want]) if w >> shift < n]
                if len(ends) >= limit:
                    del ends[limit:]
                    self._ends = ends
                    run = [tasks[words[i - 1] >> shift] for i in ends]
                    return run, [t.tid for t in run]
            else:                           # the same, vectorized
                r = np.array(words, dtype=np.uint32) >> shift
                acc = np.flatnonzero(r < n)[:limit]
                if len(acc) >= limit:
                    self._ends = (acc + 1).tolist()
                    idx = r[acc]
                    pick = itemgetter(*idx.tolist())
                    return list(pick(tasks)), list(pick([t.tid for t in tasks]))
            want += limit

    def consumed(self, k):
        if k:
            del self._words[:self._ends[k - 1]]
        self._ends = None
        self._hint = 2 * k if k > _HINT_MIN // 2 else _HINT_MIN

    def __repr__(self):
        return f"<RandomSchedule seed={self.seed}>"


register_schedule("random", RandomSchedule)
#: the smallest batch :meth:`RandomSchedule.batch` hands over, and the fewest outputs it
#: draws from the generator at a time
_HINT_MIN = 4
_DRAW = 64


def _words32(rng: _random.Random, m: int):
    """The next ``m`` 32-bit outputs of ``rng``, in order (what ``m`` calls of
    ``rng.getrandbits(32)`` return: ``getrandbits(32 * m)`` holds them low word first)."""
    raw = rng.getrandbits(32 * m).to_bytes(4 * m, "little")
    if _LITTLE:
        out = array("I")
        out.frombytes(raw)
        return out
    return struct.unpack(f"<{m}I", raw)


_LITTLE = sys.byteorder == "little" and array("I").itemsize == 4


class Timed(Schedule):
    """The task that can resume earliest in simulated time runs (its clock, or for a task
    blocked on a request that can now be granted, the moment the request releases it:
    :meth:`~smmu.runtime.task.Task.ready_at`). For benchmarks.

    ``seed``: ties (candidates whose times are equal) are broken by a generator seeded with
    it; ``jitter``: every charged cost is multiplied by a factor drawn uniformly from
    ``[1 - jitter, 1 + jitter]`` (a second generator from the same seed), so that runs of
    different seeds spread as real runs do. With ``jitter=0`` and no ties the seed changes
    nothing."""

    name = "timed"

    def __init__(self, seed: int = 0, jitter: float = 0.0):
        try:
            jitter = float(jitter)
        except (TypeError, ValueError):
            raise UsageError(f"Timed jitter must be a number in [0, 1), got {jitter!r}") from None
        if not 0.0 <= jitter < 1.0:
            raise UsageError(f"Timed jitter must be in [0, 1), got {jitter!r}")
        self.seed = seed
        self.jitter = jitter
        self.reset(seed)

    def reset(self, seed):
        if seed is not None:
            self.seed = seed
        self.rng = _random.Random(self.seed)
        if self.jitter:
            cost_rng = _random.Random(f"cost-{self.seed}")
            lo, span = 1.0 - self.jitter, 2.0 * self.jitter
            self.cost_factor = lambda: lo + span * cost_rng.random()
        else:
            self.cost_factor = None

    def choose(self, sched, tasks):
        best = [0]
        bt = tasks[0].ready_at()
        for i in range(1, len(tasks)):
            t = tasks[i].ready_at()
            if t < bt:
                best, bt = [i], t
            elif t == bt:
                best.append(i)
        return best[0] if len(best) == 1 else best[self.rng.randrange(len(best))]

    def __repr__(self):
        return f"<Timed seed={self.seed} jitter={self.jitter}>"


register_schedule("timed", Timed)


def _prev_tid(sched):
    cur = sched.current
    return cur.tid if cur is not None else None


def count_preemptions(log_) -> int:
    """Preemptions in a recorded choice log ``[(candidate tids, previous tid, chosen)]``: a
    switch away from a task that could have continued."""
    return sum(1 for tids, prev, ch in log_ if prev in tids and ch != prev)


class Replay(Schedule):
    """Follow an explicit list of task ids, one per choice point. When the listed task is not
    runnable there, or the list is exhausted, run the lowest-id runnable task
    (``fallback="lowest"``) or keep the previous task if it can continue, else the lowest-id
    (``fallback="continue"``: no preemption, what the exhaustive search extends prefixes with).

    ``log`` records ``(candidate tids, previous tid, chosen tid)`` per choice point and
    ``at`` the step each was made for; ``preemptions`` counts them."""

    name = "replay"

    def __init__(self, choices=(), fallback: str = "lowest"):
        if fallback not in ("lowest", "continue"):
            raise UsageError(f"Replay fallback must be 'lowest' or 'continue', not {fallback!r}")
        try:
            self.choices = [int(c) for c in choices]
        except (TypeError, ValueError):
            raise UsageError(f"Replay needs a list of task ids, got {choices!r}") from None
        self.fallback = fallback
        self.reset(None)

    def reset(self, seed):
        self.i = 0
        self.log = []
        self.at = []
        self.followed = 0
        self.fair = Fairness()

    def choose(self, sched, tasks):
        tids = [t.tid for t in tasks]
        prev = _prev_tid(sched)
        i = self.i
        self.i = i + 1
        want = self.choices[i] if i < len(self.choices) else None
        fair_switch = False
        if want is not None and want in tids:
            tid = want
            self.followed += 1
            self.fair.chose(tids, tid)
        else:
            if self.fallback == "continue" and prev in tids:
                tid = prev
            else:
                tid = min(tids)
            tid, fair_switch = self.fair.pick(tids, tid)
        # a fairness switch is not a preemption the schedule chose
        self.log.append((tuple(tids), None if fair_switch else prev, tid))
        self.at.append(sched.steps + 1)
        return tids.index(tid)

    @property
    def preemptions(self) -> int:
        return count_preemptions(self.log)

    def __repr__(self):
        return f"<Replay {len(self.choices)} choices, fallback={self.fallback}>"


register_schedule("replay", lambda seed: Replay(()))


class PCT(Schedule):
    """Probabilistic concurrency testing: the runnable task of highest priority runs; priorities
    are random (>= ``depth``) when a task is first seen; at each of ``depth - 1`` change points,
    drawn without replacement from ``1..steps`` (choice points), the task that would run drops
    to priority ``j`` (the j-th change point), below every initial priority."""

    name = "pct"

    def __init__(self, seed: int = 0, depth: int = 3, steps: int | None = None):
        if int(depth) < 1:
            raise UsageError(f"PCT depth must be >= 1, got {depth}")
        self.seed = seed
        self.depth = int(depth)
        self.steps = max(1, int(steps or DEFAULT_PCT_STEPS))
        self.reset(seed)

    def reset(self, seed):
        if seed is not None:
            self.seed = seed
        rng = _random.Random(self.seed)
        self.rng = rng
        ncp = min(self.depth - 1, self.steps)
        # k_1..k_{d-1} drawn at random, k_i lowering to priority i: not sorted, so a later
        # change point may leave its task above an earlier one's (both orders are explored)
        self.change = {c: j + 1 for j, c in
                       enumerate(rng.sample(range(1, self.steps + 1), ncp))}
        self.prio: dict[int, float] = {}
        self.n = 0
        self._last = None
        self._run = 0

    def _best(self, tasks):
        prio = self.prio
        best, bp = 0, prio[tasks[0].tid]
        for i in range(1, len(tasks)):
            p = prio[tasks[i].tid]
            if p > bp:
                best, bp = i, p
        return best

    def choose(self, sched, tasks):
        self.n += 1
        prio = self.prio
        for t in tasks:
            if t.tid not in prio:
                prio[t.tid] = self.depth + self.rng.random()
        best = self._best(tasks)
        j = self.change.get(self.n)
        if j is not None:
            prio[tasks[best].tid] = float(j)
            best = self._best(tasks)
        tid = tasks[best].tid
        if tid == self._last and self._run >= FAIR_BOUND:
            prio[tid] = min(prio.values()) - 1.0     # fairness: set a spinning task aside
            best = self._best(tasks)
            tid = tasks[best].tid
        if tid == self._last:
            self._run += 1
        else:
            self._last, self._run = tid, 1
        return best

    def batch(self, sched, tasks, limit):
        # With the candidates fixed, the task of highest priority runs at every choice point
        # until the next change point or until fairness sets it aside: that many steps of it
        # (declined when a candidate has no priority yet or a change point comes next)
        prio = self.prio
        for t in tasks:
            if t.tid not in prio:
                return None
        n = self.n
        nxt = min((c for c in self.change if c > n), default=None)
        m = limit if nxt is None else min(limit, nxt - n - 1)
        best = self._best(tasks)
        fair = FAIR_BOUND - self._run if tasks[best].tid == self._last else FAIR_BOUND
        if fair < m:
            m = fair
        if m < 1:
            return None
        tid = self._batched = tasks[best].tid
        return [tasks[best]] * m, [tid] * m

    def consumed(self, k):
        if k:
            self.n += k
            tid = self._batched
            if tid == self._last:
                self._run += k
            else:
                self._last, self._run = tid, k

    def __repr__(self):
        return (f"<PCT seed={self.seed} depth={self.depth} steps={self.steps} "
                f"change points={sorted(self.change)}>")


register_schedule("pct", lambda seed: PCT(seed))


class HypothesisSchedule(Schedule):
    """Each choice drawn from hypothesis ``data`` (``st.data()``) as an index in
    ``range(len(candidates))``, so hypothesis shrinks a failing schedule towards index 0 (the
    lowest task id, the same default :class:`Replay` falls back to). Records the chosen ids."""

    name = "hypothesis"

    def __init__(self, data):
        self.data = data
        self.chosen: list[int] = []

    def reset(self, seed):
        self.chosen = []

    def choose(self, sched, tasks):
        i = self.data.draw(st.integers(0, len(tasks) - 1))
        self.chosen.append(tasks[i].tid)
        return i
