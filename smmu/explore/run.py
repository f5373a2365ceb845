"""One run of a scenario: :func:`run_once`, the strategy table (:data:`STRATEGIES`,
:func:`make_strategy_schedule`) and :class:`ScanEveryStep`."""

from __future__ import annotations

from smmu.base.errors import InternalError, UsageError
from smmu.explore.steer import Steer
from smmu.runtime.scheduler import Result
from smmu.runtime.schedules import PCT, RandomSchedule, Replay, Schedule, make_schedule
from smmu.scenarios import get_scenario
from smmu.sim import Simulator


#: every exploration strategy: how the schedule of one run is made from its seed and the
#: strategy's parameters (``depth`` / ``steps`` for PCT; ``prefix`` for the exhaustive
#: search, ``prefix`` / ``directives`` for the window-directed one, which
#: :func:`smmu.explore.search.explore` drives itself; both replay from their choices)
STRATEGIES = {
    "pct": lambda seed, params: PCT(seed, depth=params.get("depth", 3), steps=params.get("steps")),
    "random": lambda seed, params: RandomSchedule(seed),
    "exhaustive": lambda seed, params: Replay(params.get("prefix", ()), fallback="continue"),
    "windows": lambda seed, params: Steer(params.get("prefix", ()), params.get("directives", ())),
}


def make_strategy_schedule(strategy: str, seed: int, params: dict | None = None) -> Schedule:
    """The schedule ``strategy`` uses for ``seed`` (``params``: ``depth``/``steps`` for PCT).
    ``"exhaustive"`` schedules are not a function of a seed: replay those from their choices."""
    make = STRATEGIES.get(strategy)
    if make is None:
        raise UsageError(f"unknown strategy {strategy!r}: use one of {list(STRATEGIES)}")
    return make(seed, params or {})


class ScanEveryStep(Schedule):
    """Wraps a schedule and runs the oracle's structural scan (``sim.oracle.scan()``) at
    every choice point before choosing: a secondary translation of a freed frame is reported
    the moment another task could act, not only when a device happens to use it."""

    def __init__(self, inner: Schedule):
        self.inner = inner
        self.name = inner.name

    def reset(self, seed):
        self.inner.reset(seed)

    @property
    def cost_factor(self):
        return self.inner.cost_factor

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


def run_once(scenario, driver_cls, api, schedule, seed, *, record_steps=False, trace=False,
             stop_on_violation=True, driver_options=None, observers=(),
             **sim_overrides) -> Result:
    """Build a simulator for ``scenario`` under notifier ``api`` with ``schedule`` (a name or a
    :class:`~smmu.runtime.schedules.Schedule`) and ``seed``, build the scenario with
    ``driver_cls`` and run it. ``sim_overrides`` override the scenario's ``sim_options``;
    ``scan_every_step=True`` among them runs the oracle's structural scan at every choice point
    (:class:`ScanEveryStep`). ``observers`` are added to the simulator's (``sim.watch``)
    before the scenario is built. A schedule with an ``install(sim)`` method is given the
    simulator first (a steered or partial-order schedule listens to the run's events), and
    one with ``finish(sim)`` is told when the run is over; so is an observer with an
    ``install(sim)`` method (instead of being watched).
    """
    scenario = get_scenario(scenario)
    if api not in scenario.apis:
        raise UsageError(f"scenario {scenario.name!r} runs under notifier_api "
                         f"{list(scenario.apis)}, not {api!r}")
    opts = dict(scenario.sim_options)
    opts.update(sim_overrides)
    if opts.pop("scan_every_step", False):
        schedule = ScanEveryStep(make_schedule(schedule, seed))
    factory = scenario.simulator or Simulator
    sim = factory(notifier_api=api, schedule=schedule, seed=seed,
                  stop_on_violation=stop_on_violation, trace=trace, record_steps=record_steps,
                  **opts)
    # where each atomic section began is only needed for a report: the replay takes it
    sim.capture_stacks = record_steps or trace
    if hasattr(sim, "teardown"):     # the scenario's end closes the devices: leak checks
        sim.teardown = True
    sim.driver_options = dict(driver_options or {})
    install = getattr(schedule, "install", None)
    if install is not None:          # a schedule that listens to the run (steering, POR)
        install(sim)
    for obs in observers:
        hook = getattr(obs, "install", None)
        if hook is not None:
            hook(sim)
        else:
            sim.watch(obs)
    try:
        scenario.build(sim, driver_cls)
        result = sim.run()
    except InternalError as e:      # a bug in smmu: say what ran, for the replay command
        e.context.setdefault("scenario", scenario.name)
        e.context.setdefault("api", api)
        e.context.setdefault("seed", seed)
        e.context.setdefault("driver_options", dict(driver_options or {}))
        e.context.setdefault("sim_options", dict(sim_overrides))
        e.context.setdefault("driver", driver_cls)
        raise
    finish = getattr(schedule, "finish", None)
    if finish is not None:
        finish(sim)
    return result
