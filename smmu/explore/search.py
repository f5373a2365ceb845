"""Exploration: many schedules of one scenario, keeping what breaks (:func:`explore`,
:class:`Exploration`), with the preemption-bounded depth-first search of the exhaustive
strategy and PCT's calibration."""

from __future__ import annotations

import gc
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field


from smmu.base.errors import UsageError
from smmu.explore.coverage import Coverage
from smmu.base.log import get_logger
from smmu.explore.findings import Finding
from smmu.explore.por import BoundedSearch
from smmu.explore.run import make_strategy_schedule, run_once
from smmu.explore.steer import Steer, hook_plans, window_plans
from smmu.notifier import API_GENERATIONS
from smmu.runtime.schedules import RandomSchedule
from smmu.scenarios import get_scenario

log = get_logger()

#: while :func:`explore` runs, the cyclic garbage collector's automatic first-generation
#: threshold (CPython's default is 700): a safety net for a long schedule, the collection
#: itself is made between schedules (:func:`_collect_between`)
GC_THRESHOLD_DURING = 20_000
_gc_lock = threading.Lock()
_gc_users = 0            # explore calls under way (threads, nested calls)
_gc_saved = None         # (thresholds, froze) to restore when the last one ends


@contextmanager
def _schedules_gc():
    """The garbage collector as an exploration wants it: the heap that lives across
    schedules (modules, numba's dispatchers, caches: ~130k objects) is frozen out of the
    collector (``gc.freeze``) and the young garbage each schedule leaves (a simulator is a
    web of cycles) is collected between schedules, not inside them at whatever step the
    allocation count crossed 700; the collector's state is restored when the last explore
    under way ends. Changes nothing a run computes (no run observes the collector); left
    alone when the collector is disabled or frozen by someone else."""
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            if gc.isenabled():
                froze = gc.get_freeze_count() == 0
                if froze:
                    gc.freeze()
                _gc_saved = (gc.get_threshold(), froze)
                t0, t1, t2 = _gc_saved[0]
                gc.set_threshold(max(t0, GC_THRESHOLD_DURING), t1, t2)
            else:
                _gc_saved = None
        _gc_users += 1
    try:
        yield _collect_between if _gc_saved is not None else None
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0 and _gc_saved is not None:
                thresholds, froze = _gc_saved
                gc.set_threshold(*thresholds)
                if froze:
                    gc.unfreeze()
                _gc_saved = None


def _collect_between() -> None:
    """After one schedule: collect the youngest generation (the schedule's garbage), and the
    middle one as often as CPython's default policy would (every ``threshold1`` youngest
    collections)."""
    gc.collect(1 if gc.get_count()[1] >= gc.get_threshold()[1] else 0)


@dataclass
class Exploration:
    """What :func:`explore` did: ``schedules_run``, ``findings``, ``elapsed`` (wall seconds).

    For the exhaustive strategy, ``complete`` says whether every schedule within ``bound``
    preemptions was explored (or one equivalent to it, with ``por``), and ``pruned`` how many
    runs the reduction cut short; other strategies are never complete. ``mix`` counts the
    schedules of each strategy, ``coverage`` which interleavings of notifier hooks and device
    fault steps they tried (:class:`~smmu.explore.coverage.Coverage`)."""

    scenario: str
    api: str
    strategy: str
    seed: int
    schedules_run: int = 0
    findings: list = field(default_factory=list)
    elapsed: float = 0.0
    complete: bool = False
    bound: int | None = None
    por: bool | None = None
    pruned: int = 0
    mix: dict = field(default_factory=dict)
    coverage: Coverage = field(default_factory=Coverage)
    #: after a run of one :class:`Shard`, where the serial exploration would go on from:
    #: ``{"index", "steps", "stopped", "runs"}`` (see :class:`Shard`); None otherwise
    resume: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def exhausted(self) -> bool:
        """The older name of :attr:`complete`."""
        return self.complete

    def __repr__(self):
        what = "clean" if self.ok else f"{len(self.findings)} finding(s) " \
            f"{sorted({f.kind for f in self.findings})}"
        full = ""
        if self.bound is not None:
            full = (f", preemption bound {self.bound}, "
                    f"{'complete' if self.complete else 'not complete'}")
        return (f"<Exploration {self.scenario!r} {self.api} {self.strategy}: {what} after "
                f"{self.schedules_run} schedules in {self.elapsed:.2f}s{full}>")


def _calibrate(scenario, driver_cls, api, seed, driver_options, sim_options,
               runs: int = 3) -> int:
    """The most choice points of a few random runs: the first ``steps`` estimate (k) PCT
    spreads its change points over (explore raises it when a longer run shows up)."""
    k = 1
    for i in range(runs):
        r = run_once(scenario, driver_cls, api, RandomSchedule(seed + i), seed + i,
                     stop_on_violation=False, driver_options=driver_options, **sim_options)
        k = max(k, len(r.schedule))
    return k


class _Sampler:
    """Independent schedules drawn by seed: PCT at ``depths`` and/or random, in turn
    (``kinds``: ``[("pct", depth) | ("random", None)]``); the PCT ``steps`` estimate (k)
    starts at ``steps`` and follows the longest run seen."""

    def __init__(self, kinds, seed, steps):
        self.kinds = list(kinds)
        self.seed = seed
        self.steps = max(1, int(steps))
        self.i = 0

    @property
    def label(self):
        return "sample"

    def next(self):
        strat, depth = self.kinds[self.i % len(self.kinds)]
        run_seed = self.seed + self.i // len(self.kinds)
        self.i += 1
        params = {"depth": depth, "steps": self.steps} if strat == "pct" else {}
        return strat, make_strategy_schedule(strat, run_seed, params), run_seed, params

    def done(self, sched, result):
        # PCT's k is the longest run seen so far (deterministic in the seed: every finding
        # records the k its run used)
        self.steps = max(self.steps, len(result.schedule))


class _Exhaustive:
    """The bounded search (:class:`~smmu.explore.por.BoundedSearch`) as a run source."""

    def __init__(self, bound, por, seed):
        self.search = BoundedSearch(int(bound), por=por)
        self.seed = seed
        self.n = 0

    def next(self):
        sched = self.search.next_run()
        if sched is None:
            return None
        params = {"bound": self.search.bound, "por": self.search.por, "index": self.n}
        self.n += 1
        return "exhaustive", sched, self.seed, params

    def done(self, sched, result):
        self.search.done_run(sched)


class _Windows:
    """Window-directed runs (:mod:`smmu.explore.steer`): a recording run, then every
    placement of every device fault around every window seen, windows found by the steered
    runs included; then (``later``) the placements inside the drivers' hooks
    (:func:`~smmu.explore.steer.hook_plans`), once every placement around a window ran."""

    def __init__(self, seed):
        self.seed = seed
        self.queue: list | None = None
        self.later: list = []
        self.done_keys: set = set()
        self.longest = 0

    def next(self):
        if self.queue is None:
            return "windows", Steer(record=True), self.seed, {"plan": "record"}
        if not self.queue and not self.later:
            return None
        key, prefix, directives = (self.queue or self.later).pop(0)
        return ("windows", Steer(prefix, directives, record=True), self.seed,
                {"plan": list(key)})

    def done(self, sched, result):
        if self.queue is None:
            self.queue = []
        self.longest = max(self.longest, len(result.schedule))
        self.queue.extend(window_plans(sched.events, result.schedule, self.done_keys))
        self.later.extend(hook_plans(sched.events, result.schedule, self.done_keys))


@dataclass(frozen=True)
class Shard:
    """One slice of an exploration, run on its own (by a worker of a cluster:
    :mod:`smmu.explore.shards`) so that the slices together run exactly the schedules the
    serial :func:`explore` runs, in the same order, with the same results.

    ``part="head"``: every part of the search before the sampled one (the window-directed
    runs and the exhaustive search: each run depends on the ones before, so they are one
    slice); the :class:`Exploration` it returns says in ``resume`` how many schedules it ran
    (``index``), PCT's ``steps`` estimate where the sampled part starts, and whether it
    ``stopped`` (a finding with ``stop_at_first``). With no sampled part (``"exhaustive"``,
    ``"windows"``) the head is the whole exploration.

    ``part="sample"``: the sampled runs ``start`` (inclusive) to ``stop`` (exclusive),
    counted from the first sampled run; run ``i`` uses strategy ``i % len(kinds)`` and seed
    ``seed + i // len(kinds)`` as in the serial order, and PCT's ``steps`` estimate ``steps``
    at ``start`` (the serial search raises it to the longest run seen: the slice is exact
    when ``steps`` is what the serial search had at ``start``, which ``resume["runs"]``, the
    ``(steps used or None, choice points)`` of each run, lets the caller verify). ``index``:
    how many schedules the exploration ran before ``start`` (findings count from there)."""

    part: str = "head"
    start: int = 0
    stop: int | None = None
    steps: int = 1
    index: int = 0

    def __post_init__(self):
        if self.part not in ("head", "sample"):
            raise UsageError(f"Shard part must be 'head' or 'sample', got {self.part!r}")
        if self.part == "sample" and (self.stop is None or not 0 <= self.start < self.stop):
            raise UsageError(f"a sample Shard needs 0 <= start < stop, got {self.start}.."
                             f"{self.stop}")


#: the exploration strategies :func:`explore` accepts (``STRATEGIES`` are the ones whose
#: single run is a function of a seed, plus the exhaustive search)
SEARCHES = ("portfolio", "pct", "random", "exhaustive", "windows")

#: the default mix: shares of the budget per (scenario, api), in the order they run; a part
#: that ends early (its space exhausted) hands what it did not use to the next ones. A
#: scenario may declare its own (``Scenario.portfolio``); parts: ``"windows"``,
#: ``"exhaustive"``, ``"sample"`` (:data:`PORTFOLIO_SAMPLES` in turn), ``"random"``
PORTFOLIO = (("windows", 0.3), ("exhaustive", 0.3), ("sample", 0.4))
PORTFOLIO_PARTS = ("windows", "exhaustive", "sample", "random")
#: the sampled part of the portfolio, in turn
PORTFOLIO_SAMPLES = (("pct", 1), ("pct", 2), ("pct", 3), ("random", None))
#: the preemption bound of the portfolio's exhaustive part
PORTFOLIO_BOUND = 2


def explore(scenario, driver_cls, api, strategy="portfolio", schedules=100, seed=0,
            seconds=None, stop_at_first=True, progress=None, *, depth=3, bound=2, por=True,
            driver_options=None, sim_options=None, scan_every_step=False,
            shard: Shard | None = None) -> Exploration:
    """Run ``scenario`` with ``driver_cls`` under notifier ``api`` for up to ``schedules``
    schedules (and at most ``seconds`` wall seconds) chosen by ``strategy``:

    * ``"portfolio"`` (the default): the mix :data:`PORTFOLIO`: window-directed runs, the
      bounded exhaustive search to :data:`PORTFOLIO_BOUND` preemptions, then PCT at depths
      1-3 and random in turn, each with its share of ``schedules`` (or the scenario's own
      mix, ``Scenario.portfolio``: the load scenarios sample at random);
    * ``"pct"`` (with ``depth``), ``"random"``;
    * ``"exhaustive"``: at most ``bound`` preemptions, with sleep-set reduction unless
      ``por=False``; ends early, ``complete``, when the bounded space is exhausted
      (:mod:`smmu.explore.por`);
    * ``"windows"``: only the window-directed runs (:mod:`smmu.explore.steer`).

    Each failing run becomes a :class:`Finding` (one per violation kind); ``stop_at_first``
    ends at the first. ``progress(done, total)`` is called after every schedule.
    ``driver_options`` go to the driver (see :func:`attach_driver`), ``sim_options``
    override the scenario's simulator options, ``scan_every_step`` runs the oracle's
    structural scan at every choice point. Deterministic in (scenario, driver, api,
    strategy, seed). ``Exploration.mix`` counts the schedules of each strategy. ``shard``
    runs one slice of the exploration only (:class:`Shard`; ``seconds`` must be None)."""
    sc = get_scenario(scenario)
    if strategy not in SEARCHES:
        raise UsageError(f"unknown strategy {strategy!r}: use one of {list(SEARCHES)}")
    if api not in API_GENERATIONS:
        raise UsageError(f"unknown notifier api {api!r}: use one of {list(API_GENERATIONS)}")
    if int(schedules) < 1:
        raise UsageError(f"schedules must be >= 1, got {schedules}")
    if seconds is not None and seconds <= 0:
        raise UsageError(f"seconds must be > 0, got {seconds}")
    if shard is not None and seconds is not None:
        raise UsageError("a Shard runs a fixed slice of the schedules: seconds must be None")
    schedules = int(schedules)
    sampling = shard is not None and shard.part == "sample"
    driver_options = dict(driver_options or {})
    sim_options = dict(sim_options or {})
    if scan_every_step:
        sim_options["scan_every_step"] = True
    ex = Exploration(sc.name, api, strategy, seed)
    t0 = time.perf_counter()
    kinds_seen: set = set()

    def record(result, run_strategy, run_seed, run_params) -> bool:
        """Keep the run's violations as findings; True when exploration should stop."""
        for v in result.violations:
            if v.kind in kinds_seen:
                continue
            kinds_seen.add(v.kind)
            ex.findings.append(Finding(v, sc.name, api, run_strategy, run_seed,
                                       list(result.schedule), driver=driver_cls,
                                       driver_options=driver_options, params=run_params,
                                       sim_options=sim_options, scenario_def=sc,
                                       index=offset + ex.schedules_run))
            log.info("finding", scenario=sc.name, api=api, strategy=run_strategy,
                     seed=run_seed, kind=v.kind)
        return bool(ex.findings) and stop_at_first

    def out_of_time() -> bool:
        return seconds is not None and time.perf_counter() - t0 >= seconds

    if strategy == "portfolio":
        windows = _Windows(seed)
        parts = []
        for name, share in (sc.portfolio or PORTFOLIO):
            if name == "windows":
                parts.append((windows, share))
            elif name == "exhaustive":
                parts.append((_Exhaustive(PORTFOLIO_BOUND, por, seed), share))
            elif name == "random":
                parts.append((_Sampler([("random", None)], seed, 0), share))
            elif name == "sample":
                parts.append((_Sampler(PORTFOLIO_SAMPLES, seed, 0), share))
            else:
                raise UsageError(f"scenario {sc.name!r}: unknown portfolio part {name!r}: "
                                 f"use one of {list(PORTFOLIO_PARTS)}")
    elif strategy == "pct":
        parts = [(_Sampler([("pct", int(depth))], seed, shard.steps if sampling else
                           _calibrate(sc, driver_cls, api, seed, driver_options, sim_options)),
                  1.0)]
    elif strategy == "random":
        parts = [(_Sampler([("random", None)], seed, 0), 1.0)]
    elif strategy == "exhaustive":
        parts = [(_Exhaustive(bound, por, seed), 1.0)]
    else:
        parts = [(_Windows(seed), 1.0)]

    offset = shard.index if shard is not None else 0
    sampler = parts[-1][0] if isinstance(parts[-1][0], _Sampler) else None
    runs: list = []          # a sample shard: (PCT steps used or None, choice points) per run

    def run_part(part, quota) -> bool:
        """Run up to ``quota`` schedules of ``part``; True when exploration should stop."""
        n = 0
        while n < quota and (sampling or ex.schedules_run < schedules):
            item = part.next()
            if item is None:
                break
            run_strategy, sched, run_seed, run_params = item
            result = run_once(sc, driver_cls, api, sched, run_seed, observers=[ex.coverage],
                              driver_options=driver_options, **sim_options)
            part.done(sched, result)
            if sampling:
                runs.append((run_params.get("steps"), len(result.schedule)))
            n += 1
            ex.schedules_run += 1
            name = run_strategy if run_strategy != "pct" else f"pct{run_params['depth']}"
            ex.mix[name] = ex.mix.get(name, 0) + 1
            if progress is not None:
                progress(ex.schedules_run, schedules)
            if record(result, run_strategy, run_seed, run_params) or out_of_time():
                return True
            if between is not None:
                ex.coverage.detach()
                item = sched = result = None     # this run's simulator is garbage now
                between()
        return False

    with _schedules_gc() as between:
        stop = False
        if sampling:
            if sampler is None:
                raise UsageError(f"strategy {strategy!r} has no sampled part to shard")
            sampler.i, sampler.steps = shard.start, max(1, int(shard.steps))
            stop = run_part(sampler, shard.stop - shard.start)
            ex.resume = {"index": offset + ex.schedules_run, "steps": sampler.steps,
                         "stopped": stop, "runs": runs}
        for k, (part, share) in enumerate(parts):
            if stop or sampling:
                break
            left = schedules - ex.schedules_run
            weight = sum(w for _, w in parts[k:])
            quota = left if k == len(parts) - 1 else max(1, round(left * share / weight))
            if isinstance(part, _Sampler) and isinstance(parts[0][0], _Windows):
                part.steps = max(part.steps, parts[0][0].longest)   # PCT's k from the recording
            if shard is not None and part is sampler:     # the head ends where sampling begins
                break
            stop = run_part(part, quota)
            if isinstance(part, _Exhaustive):
                ex.bound, ex.por = part.search.bound, part.search.por
                ex.complete = part.search.complete
                ex.pruned = part.search.pruned
        if shard is not None and not sampling:
            ex.resume = {"index": ex.schedules_run, "stopped": stop, "runs": [],
                         "steps": sampler.steps if sampler is not None else None}
    ex.elapsed = time.perf_counter() - t0
    return ex
