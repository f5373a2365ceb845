"""Schedule exploration: run a scenario under many schedules, keep what breaks, shrink it.

::

    from smmu.explore import SCENARIOS, explore, shrink, replay

    ex = explore("cow-after-fork", drivers.KVM, "v2008", strategy="pct", schedules=200)
    for f in ex.findings:
        shrink(f)                       # f.minimal: a short choice list, f.preemptions
        json.dump(f.to_dict(), open("bug.json", "w"))
    result = replay(json.load(open("bug.json")))   # the same violation, with numbered steps

A *schedule* is the list of task ids chosen at every choice point (a step where more than one
task could run: ``Scheduler.choices``). Strategies:

``"random"``
    uniformly random at each choice point (``smmu.runtime.schedules.RandomSchedule``), seed
    ``seed + i`` for the i-th schedule.
``"pct"``
    probabilistic concurrency testing (Burckhardt, Kothari, Musuvathi, Nagarakatte, ASPLOS
    2010): random task priorities, the highest-priority runnable task runs, and at ``depth-1``
    change points drawn uniformly over the estimated number of choice points the running task
    drops to a low priority. A bug of depth ``d`` is found with probability >= 1/(n k^(d-1)).
``"exhaustive"``
    preemption-bounded depth-first search as in CHESS (Musuvathi, Qadeer, PLDI 2007): every
    schedule with at most ``bound`` preemptions, a preemption being a switch away from a task
    that could have continued.
``HypothesisSchedule(data)``
    each choice drawn from hypothesis data, so hypothesis shrinks failing schedules itself.

The same (scenario, driver, api, strategy, seed) always gives the same choices and the same
violations; :func:`replay` re-runs a :class:`Finding` from its choice list (or from its seed).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import structlog

from smmu.base.errors import BadDriver, UsageError, Violation
from smmu.notifier import API_GENERATIONS
from smmu.runtime.scheduler import Result
from smmu.runtime.schedules import (DEFAULT_PCT_STEPS, FAIR_BOUND, PCT, HypothesisSchedule,  # noqa: F401
                                    RandomSchedule, Replay, Schedule, count_preemptions,
                                    make_schedule)

log = structlog.get_logger("smmu")

STRATEGIES = ("pct", "random", "exhaustive")

# =========================================================================== scenarios

@dataclass
class Scenario:
    """A workload runnable with any driver.

    ``build(sim, driver_cls)`` makes processes and files, attaches the driver (use
    :func:`attach_driver` so that ``driver_options`` reach it), spawns the CPU and device tasks
    and returns nothing; the run itself is ``sim.run()``. ``apis``: the notifier generations
    it makes sense under; ``sim_options``: extra ``Simulator`` arguments (``rmap_locks``,
    ``fork_copies_pinned``...); ``applies(driver_cls)``: whether it fits a driver (e.g. only
    drivers with a device side); ``tags``: free-form labels ("historical", "load"...).
    ``simulator``: what to build instead of ``smmu.sim.Simulator`` (a callable taking the same
    keyword arguments); tests of exploration itself use a bare ``smmu.runtime.scheduler.Scheduler``.
    """

    name: str
    build: Callable
    description: str = ""
    apis: tuple = API_GENERATIONS
    sim_options: dict = field(default_factory=dict)
    applies: Callable = lambda cls: True
    tags: tuple = ()
    simulator: Callable | None = None

    def __repr__(self) -> str:
        tags = f" [{', '.join(self.tags)}]" if self.tags else ""
        return f"<Scenario {self.name!r}{tags}: {self.description or 'no description'}>"


#: every registered scenario by name (``smmu.scenarios`` fills it on import)
SCENARIOS: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    """Add ``scenario`` to :data:`SCENARIOS` (usable as a plain call); returns it."""
    if not isinstance(scenario, Scenario):
        raise UsageError(f"register() takes a Scenario, got {type(scenario).__name__}")
    old = SCENARIOS.get(scenario.name)
    if old is not None and old is not scenario and old.build is not scenario.build:
        raise UsageError(f"a scenario named {scenario.name!r} is already registered: "
                         "choose another name")
    SCENARIOS[scenario.name] = scenario
    return scenario


def get_scenario(scenario) -> Scenario:
    """A :class:`Scenario` from itself or its registered name (importing the built-ins)."""
    if isinstance(scenario, Scenario):
        return scenario
    if not isinstance(scenario, str):
        raise UsageError(f"scenario must be a Scenario or a name, got {scenario!r}")
    if scenario not in SCENARIOS:
        try:
            importlib.import_module("smmu.scenarios")
        except ImportError:
            pass
    if scenario not in SCENARIOS:
        raise UsageError(f"unknown scenario {scenario!r}: use one of {sorted(SCENARIOS)}")
    return SCENARIOS[scenario]


def attach_driver(sim, driver_cls, mm):
    """``sim.attach(driver_cls, mm, **options)`` with the options given to :func:`run_once`
    (scenarios call this rather than ``sim.attach`` so that ``driver_options`` apply)."""
    return sim.attach(driver_cls, mm, **getattr(sim, "driver_options", {}))


# =========================================================================== schedules

class ScanEveryStep(Schedule):
    """Wraps a schedule and runs the oracle's structural scan (``sim.oracle.scan()``) at
    every choice point before choosing: a secondary translation of a freed frame is reported
    the moment another task could act, not only when a device happens to use it."""

    def __init__(self, inner: Schedule):
        self.inner = inner
        self.name = inner.name

    def reset(self, seed):
        self.inner.reset(seed)

    def choose(self, sched, tasks):
        scan = getattr(getattr(sched, "oracle", None), "scan", None)
        if scan is not None:
            scan(final=False)
        return self.inner.choose(sched, tasks)

    def __getattr__(self, name):
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self):
        return f"<ScanEveryStep {self.inner!r}>"


def make_strategy_schedule(strategy: str, seed: int, params: dict | None = None) -> Schedule:
    """The schedule ``strategy`` uses for ``seed`` (``params``: ``depth``/``steps`` for PCT).
    ``"exhaustive"`` schedules are not a function of a seed: replay those from their choices."""
    params = params or {}
    if strategy == "random":
        return RandomSchedule(seed)
    if strategy == "pct":
        return PCT(seed, depth=params.get("depth", 3), steps=params.get("steps"))
    if strategy == "exhaustive":
        return Replay(params.get("prefix", ()), fallback="continue")
    raise UsageError(f"unknown strategy {strategy!r}: use one of {list(STRATEGIES)}")


# =========================================================================== one run

def run_once(scenario, driver_cls, api, schedule, seed, *, record_steps=False, trace=False,
             stop_on_violation=True, driver_options=None, **sim_overrides) -> Result:
    """Build a simulator for ``scenario`` under notifier ``api`` with ``schedule`` (a name or a
    :class:`~smmu.runtime.schedules.Schedule`) and ``seed``, build the scenario with
    ``driver_cls`` and run it. ``sim_overrides`` override the scenario's ``sim_options``;
    ``scan_every_step=True`` among them runs the oracle's structural scan at every choice point
    (:class:`ScanEveryStep`).
    """
    scenario = get_scenario(scenario)
    if api not in scenario.apis:
        raise UsageError(f"scenario {scenario.name!r} runs under notifier_api "
                         f"{list(scenario.apis)}, not {api!r}")
    opts = dict(scenario.sim_options)
    opts.update(sim_overrides)
    if opts.pop("scan_every_step", False):
        schedule = ScanEveryStep(make_schedule(schedule, seed))
    factory = scenario.simulator
    if factory is None:
        from smmu.sim import Simulator
        factory = Simulator
    sim = factory(notifier_api=api, schedule=schedule, seed=seed,
                  stop_on_violation=stop_on_violation, trace=trace, record_steps=record_steps,
                  **opts)
    # where each atomic section began is only needed for a report: the replay takes it
    sim.capture_stacks = record_steps or trace
    sim.driver_options = dict(driver_options or {})
    scenario.build(sim, driver_cls)
    return sim.run()


# =========================================================================== findings

def driver_spec(driver_cls) -> str:
    """``module:QualName`` of a driver class (what :func:`load_driver` reads back)."""
    if isinstance(driver_cls, str):
        return driver_cls
    if driver_cls is None:
        return ""
    return f"{driver_cls.__module__}:{driver_cls.__qualname__}"


def load_driver(spec: str):
    """A driver class from ``package.module:Class``, ``path/to/file.py:Class`` or a built-in
    name (an attribute of the ``drivers`` package, case-insensitive)."""
    if not isinstance(spec, str) or not spec:
        raise BadDriver(f"driver spec must be a non-empty string, got {spec!r}")
    if ":" not in spec:
        try:
            pkg = importlib.import_module("drivers")
        except ImportError as e:
            raise BadDriver(f"cannot import the built-in drivers package: {e}") from None
        table = getattr(pkg, "BUILTIN", None) or getattr(pkg, "DRIVERS", None) or {}
        if spec in table:
            return table[spec]
        for k in dir(pkg):
            if k.lower() == spec.lower() and isinstance(getattr(pkg, k), type):
                return getattr(pkg, k)
        raise BadDriver(f"unknown driver {spec!r}: give a built-in name, "
                        "package.module:Class or path/to/file.py:Class")
    modname, _, qual = spec.rpartition(":")
    if modname.endswith(".py"):
        path = Path(modname)
        if not path.is_file():
            raise BadDriver(f"driver file {modname!r} does not exist")
        mspec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(mspec)
        sys.modules.setdefault(path.stem, mod)
        mspec.loader.exec_module(mod)
    else:
        try:
            mod = importlib.import_module(modname)
        except ImportError as e:
            raise BadDriver(f"cannot import module {modname!r} for driver {spec!r}: {e}") \
                from None
    obj = mod
    for part in qual.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise BadDriver(f"module {modname!r} has no {qual!r} (driver spec {spec!r})")
    return obj


@dataclass
class Finding:
    """One violation found by :func:`explore`, with everything needed to replay it.

    ``choices``: the schedule (task ids per choice point) of the failing run; ``minimal``: a
    shortened list that still reproduces it (set by :func:`shrink`), ``preemptions``: how many
    preemptions the replay of ``minimal`` makes. ``driver``: the class or its spec string."""

    violation: Violation
    scenario: str
    api: str
    strategy: str
    seed: int
    choices: list
    driver: object = None
    driver_options: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    sim_options: dict = field(default_factory=dict)
    minimal: list | None = None
    preemptions: int | None = None
    scenario_def: Scenario | None = field(default=None, repr=False, compare=False)

    @property
    def kind(self) -> str:
        return self.violation.kind

    def __repr__(self):
        mini = (f", minimal {len(self.minimal)} choices / {self.preemptions} preemptions"
                if self.minimal is not None else "")
        return (f"<Finding {self.kind} in {self.scenario!r} ({self.api}, {self.strategy} "
                f"seed {self.seed}): {len(self.choices)} choices{mini}>")

    def to_dict(self) -> dict:
        """JSON-able: what ``smmu replay FILE`` reads back with :meth:`from_dict`."""
        v = self.violation
        return {
            "driver": driver_spec(self.driver),
            "driver_options": dict(self.driver_options),
            "scenario": self.scenario,
            "api": self.api,
            "strategy": self.strategy,
            "seed": self.seed,
            "params": dict(self.params),
            "sim_options": dict(self.sim_options),
            "choices": list(self.choices),
            "minimal": None if self.minimal is None else list(self.minimal),
            "preemptions": self.preemptions,
            "kind": v.kind,
            "address": v.address,
            "message": v.message,
            "violation": v.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Finding":
        missing = [k for k in ("scenario", "api", "strategy", "seed", "kind") if k not in d]
        if missing:
            raise UsageError(f"not a smmu finding: keys {missing} are missing")
        vd = d.get("violation") or {}
        v = Violation(kind=d["kind"], message=d.get("message", vd.get("message", "")),
                      address=d.get("address"), task=vd.get("task"), step=vd.get("step", 0),
                      frames=tuple(vd.get("frames", ())), schedule=list(d.get("choices", [])),
                      details=vd.get("details", {}))
        return cls(violation=v, scenario=d["scenario"], api=d["api"], strategy=d["strategy"],
                   seed=int(d["seed"]), choices=list(d.get("choices") or []),
                   driver=d.get("driver") or None, driver_options=d.get("driver_options") or {},
                   params=d.get("params") or {}, sim_options=d.get("sim_options") or {},
                   minimal=d.get("minimal"), preemptions=d.get("preemptions"))

    def _driver_cls(self):
        return load_driver(self.driver) if isinstance(self.driver, str) else self.driver

    def run(self, schedule, *, record_steps=False, trace=False) -> Result:
        """Re-run this finding's scenario under ``schedule`` (stopping at the first violation)."""
        return run_once(self.scenario_def or self.scenario, self._driver_cls(), self.api,
                        schedule, self.seed,
                        record_steps=record_steps, trace=trace, stop_on_violation=True,
                        driver_options=self.driver_options, **self.sim_options)


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


# =========================================================================== exploration

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


# =========================================================================== shrinking

def _ddmin(items: list, test, budget: list) -> list:
    """Zeller's delta debugging: a 1-minimal sublist of ``items`` on which ``test`` holds
    (``test(items)`` is assumed to hold). ``budget[0]`` caps the number of tests."""
    n = 2
    while len(items) >= 2 and budget[0] > 0:
        chunk = len(items) / n
        parts = [items[int(i * chunk):int((i + 1) * chunk)] for i in range(n)]
        reduced = False
        for i in range(n):          # try each subset
            if budget[0] <= 0:
                break
            if parts[i] and len(parts[i]) < len(items) and test(parts[i]):
                items, n, reduced = parts[i], 2, True
                break
        if not reduced:
            for i in range(n):      # try each complement
                if budget[0] <= 0:
                    break
                comp = [x for j, p in enumerate(parts) if j != i for x in p]
                if len(comp) < len(items) and test(comp):
                    items, n, reduced = comp, max(n - 1, 2), True
                    break
        if not reduced:
            if n >= len(items):
                break
            n = min(len(items), 2 * n)
    return items


def _segments(choices: list) -> list:
    """Run-length encoding ``[[tid, count], ...]`` of a choice list."""
    segs: list = []
    for c in choices:
        if segs and segs[-1][0] == c:
            segs[-1][1] += 1
        else:
            segs.append([c, 1])
    return segs


def _merge_moves(segs: list, i: int):
    """Choice lists with segment ``i`` moved into its task's next, then previous, segment."""
    tid, n = segs[i]
    for rng in (range(i + 1, len(segs)), range(i - 1, -1, -1)):
        for j in rng:
            if segs[j][0] == tid:
                new = [list(s) for s in segs]
                new[j][1] += n
                del new[i]
                yield [t for t, k in new for _ in range(k)]
                break
    # no other segment of that task: just drop it (the fallback runs it later)
    rest = [list(s) for k, s in enumerate(segs) if k != i]
    yield [t for t, k in rest for _ in range(k)]


def _preemption_edits(cur: list, log_: list):
    """Candidate schedules with one context switch fewer: whole segments moved into the same
    task's next or previous segment (keeps every task's step count), then, at each preemption
    (last first), continuing the preempted task one choice longer or in place of the switch,
    or dropping the choice."""
    segs = _segments(cur)
    for i in range(len(segs) - 1, -1, -1):
        yield from _merge_moves(segs, i)
    for j in range(len(log_) - 1, -1, -1):
        tids, prev, ch = log_[j]
        if prev in tids and ch != prev:
            yield cur[:j] + [prev] + cur[j:]
            yield cur[:j] + [prev] + cur[j + 1:]
            yield cur[:j] + cur[j + 1:]


def shrink(finding: Finding, max_runs: int = 400) -> list:
    """Shrink ``finding``'s schedule: first remove context switches from the executed schedule
    while the violation (same kind) still happens, then delta-debug (ddmin) the choice list,
    keeping a candidate iff its replay still shows a violation of that kind with no more
    preemptions. Sets ``finding.minimal`` and ``finding.preemptions``; returns the minimal
    list. At most ``max_runs`` replays."""
    kind = finding.kind
    budget = [int(max_runs)]
    cache: dict = {}

    def attempt(choices):
        key = tuple(choices)
        if key not in cache:
            budget[0] -= 1
            sched = Replay(choices)
            r = finding.run(sched)
            hit = any(v.kind == kind for v in r.violations)
            cache[key] = (hit, sched.preemptions, list(r.schedule), sched.log)
        return cache[key]

    hit, best_pre, executed, log_ = attempt(finding.choices)
    if not hit:
        raise UsageError(f"{finding!r} does not reproduce under replay of its choices: the "
                         "scenario is not deterministic (does it use wall time or global "
                         "state?)")
    best = list(finding.choices)

    # 1. drop preemptions. The executed schedule is a sequence of segments (task, length);
    #    moving a whole segment's steps into the same task's next (or previous) segment keeps
    #    every task's steps and the order of all other steps, and removes a context switch.
    #    Keep any such move that reproduces with fewer preemptions.
    cur = executed
    improved = True
    while improved and budget[0] > 0:
        improved = False
        pre = attempt(cur)[1]
        for cand in _preemption_edits(cur, attempt(cur)[3]):
            if budget[0] <= 0:
                break
            h, p, ex_, _ = attempt(cand)
            if h and p < pre:
                cur, improved = ex_, True
                break
    hit, best_pre, _, _ = attempt(cur)
    best = cur

    # 2. ddmin over the choice list, never increasing preemptions
    def test(c):
        h, p, _, _ = attempt(c)
        return h and p <= best_pre

    best = _ddmin(list(best), test, budget)
    # trailing choices that equal the fallback are redundant: drop them
    while best and test(best[:-1]):
        best = best[:-1]
    finding.minimal = best
    finding.preemptions = attempt(best)[1]
    return best


# =========================================================================== replay

def replay(finding_or_dict, record_steps=True, trace=False, *, use_minimal=True,
           driver_cls=None) -> Result:
    """Re-run a finding deterministically: from its minimal or full choice list when it has
    one, else from (strategy, seed, params). Accepts a :class:`Finding` or its ``to_dict()``;
    ``driver_cls`` overrides the driver the finding names (e.g. resolved by the CLI)."""
    f = finding_or_dict
    if isinstance(f, dict):
        f = Finding.from_dict(f)
    if not isinstance(f, Finding):
        raise UsageError(f"replay() takes a Finding or its to_dict(), got {type(f).__name__}")
    if driver_cls is not None:
        f = replace(f, driver=driver_cls)
    choices = f.minimal if (use_minimal and f.minimal is not None) else f.choices
    if choices or f.strategy == "exhaustive":
        sched = Replay(choices or ())
    else:
        sched = make_strategy_schedule(f.strategy, f.seed, f.params)
    return f.run(sched, record_steps=record_steps, trace=trace)


__all__ = ["Scenario", "SCENARIOS", "register", "get_scenario", "attach_driver", "Replay",
           "PCT", "HypothesisSchedule", "ScanEveryStep", "count_preemptions",
           "make_strategy_schedule",
           "run_once", "explore", "shrink", "replay", "Finding", "Exploration", "driver_spec",
           "load_driver", "STRATEGIES"]
