"""Exploration: many schedules of one scenario, keeping what breaks (:func:`explore`,
:class:`Exploration`), with the preemption-bounded depth-first search of the exhaustive
strategy and PCT's calibration."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog

from smmu.base.errors import UsageError
from smmu.explore.findings import Finding
from smmu.explore.run import STRATEGIES, make_strategy_schedule, run_once
from smmu.notifier import API_GENERATIONS
from smmu.runtime.schedules import RandomSchedule, Replay
from smmu.scenarios import get_scenario

log = structlog.get_logger("smmu")


@dataclass
class Exploration:
    """What :func:`explore` did: ``schedules_run``, ``findings``, ``elapsed`` (wall seconds)."""

    scenario: str
    api: str
    strategy: str
    seed: int
    schedules_run: int = 0
    findings: list = field(default_factory=list)
    elapsed: float = 0.0
    exhausted: bool = False

    @property
    def ok(self) -> bool:
        return not self.findings

    def __repr__(self):
        what = "clean" if self.ok else f"{len(self.findings)} finding(s) " \
            f"{sorted({f.kind for f in self.findings})}"
        full = ", search space exhausted" if self.exhausted else ""
        return (f"<Exploration {self.scenario!r} {self.api} {self.strategy}: {what} after "
                f"{self.schedules_run} schedules in {self.elapsed:.2f}s{full}>")


def _frame_cost(tids, prev, ch) -> int:
    return 1 if prev in tids and ch != prev else 0


def _dfs_prefixes(bound: int):
    """Preemption-bounded DFS (CHESS), as a coroutine: yields the next prefix to run (follow it,
    then never preempt) and is sent back that run's choice log ``[(tids, prev, chosen)]``."""
    stack: list = []   # [tids, prev, chosen, tried set, preemptions before this choice]
    prefix: list = []
    while True:
        log_ = yield prefix
        pre = stack[-1][4] + _frame_cost(*stack[-1][:3]) if stack else 0
        for tids, prev, ch in log_[len(stack):]:
            stack.append([tids, prev, ch, {ch}, pre])
            pre += _frame_cost(tids, prev, ch)
        while stack:
            f = stack[-1]
            tids, prev, _, tried, pb = f
            alt = None
            for t in tids:
                if t not in tried and pb + _frame_cost(tids, prev, t) <= bound:
                    alt = t
                    break
            if alt is None:
                stack.pop()
                continue
            tried.add(alt)
            f[2] = alt
            break
        if not stack:
            return
        prefix = [f[2] for f in stack]


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


def explore(scenario, driver_cls, api, strategy="pct", schedules=100, seed=0, seconds=None,
            stop_at_first=True, progress=None, *, depth=3, bound=2, driver_options=None,
            sim_options=None, scan_every_step=False) -> Exploration:
    """Run ``scenario`` with ``driver_cls`` under notifier ``api`` for up to ``schedules``
    schedules (and at most ``seconds`` wall seconds) chosen by ``strategy``: ``"pct"`` (with
    ``depth``), ``"random"`` or ``"exhaustive"`` (at most ``bound`` preemptions; ends early
    when the bounded space is exhausted). Each failing run becomes a :class:`Finding` (one per
    violation kind); ``stop_at_first`` ends at the first. ``progress(done, total)`` is called
    after every schedule. ``driver_options`` go to the driver (see :func:`attach_driver`),
    ``sim_options`` override the scenario's simulator options, ``scan_every_step`` runs the
    oracle's structural scan at every choice point. Deterministic in (scenario, driver, api,
    strategy, seed)."""
    sc = get_scenario(scenario)
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r}: use one of {list(STRATEGIES)}")
    if api not in API_GENERATIONS:
        raise UsageError(f"unknown notifier api {api!r}: use one of {list(API_GENERATIONS)}")
    if int(schedules) < 1:
        raise UsageError(f"schedules must be >= 1, got {schedules}")
    if seconds is not None and seconds <= 0:
        raise UsageError(f"seconds must be > 0, got {seconds}")
    schedules = int(schedules)
    driver_options = dict(driver_options or {})
    sim_options = dict(sim_options or {})
    if scan_every_step:
        sim_options["scan_every_step"] = True
    ex = Exploration(sc.name, api, strategy, seed)
    t0 = time.perf_counter()
    kinds_seen: set = set()
    params: dict = {}
    if strategy == "pct":
        params = {"depth": int(depth),
                  "steps": _calibrate(sc, driver_cls, api, seed, driver_options, sim_options)}
    elif strategy == "exhaustive":
        params = {"bound": int(bound)}

    def record(result, run_seed, run_params) -> bool:
        """Keep the run's violations as findings; True when exploration should stop."""
        for v in result.violations:
            if v.kind in kinds_seen:
                continue
            kinds_seen.add(v.kind)
            ex.findings.append(Finding(v, sc.name, api, strategy, run_seed, list(result.schedule),
                                       driver=driver_cls, driver_options=driver_options,
                                       params=run_params, sim_options=sim_options,
                                       scenario_def=sc))
            log.info("finding", scenario=sc.name, api=api, strategy=strategy, seed=run_seed,
                     kind=v.kind)
        return bool(ex.findings) and stop_at_first

    def out_of_time() -> bool:
        return seconds is not None and time.perf_counter() - t0 >= seconds

    if strategy == "exhaustive":
        search = _dfs_prefixes(int(bound))
        prefix = next(search)
        while True:
            sched = Replay(prefix, fallback="continue")
            result = run_once(sc, driver_cls, api, sched, seed, driver_options=driver_options,
                              **sim_options)
            ex.schedules_run += 1
            if progress is not None:
                progress(ex.schedules_run, schedules)
            stop = record(result, seed, {**params, "index": ex.schedules_run - 1})
            if stop or ex.schedules_run >= schedules or out_of_time():
                break
            try:
                prefix = search.send(sched.log)
            except StopIteration:
                ex.exhausted = True
                break
    else:
        for i in range(schedules):
            run_seed = seed + i
            run_params = dict(params)
            sched = make_strategy_schedule(strategy, run_seed, run_params)
            result = run_once(sc, driver_cls, api, sched, run_seed,
                              driver_options=driver_options, **sim_options)
            ex.schedules_run += 1
            if progress is not None:
                progress(ex.schedules_run, schedules)
            if record(result, run_seed, run_params) or out_of_time():
                break
            if strategy == "pct" and len(result.schedule) > params["steps"]:
                # PCT's k is the longest run seen so far (deterministic in the seed: every
                # finding records the k its run used)
                params["steps"] = len(result.schedule)
    ex.elapsed = time.perf_counter() - t0
    return ex
