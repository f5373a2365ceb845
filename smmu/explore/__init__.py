"""Schedule exploration: run a scenario under many schedules, keep what breaks, shrink it.

::

    from smmu.explore import SCENARIOS, explore, shrink, replay

    ex = explore("cow-after-fork", drivers.KVM, "v2008", strategy="pct", schedules=200)
    for f in ex.findings:
        shrink(f)                       # f.minimal: a short choice list, f.preemptions
        json.dump(f.to_dict(), open("bug.json", "w"))
    result = replay(json.load(open("bug.json")))   # the same violation, with numbered steps

A *schedule* is the list of task ids chosen at every choice point (a step where more than one
task could run: ``Scheduler.choices``). Strategies (the default, ``"portfolio"``, runs a mix of
them within one budget: :data:`PORTFOLIO`):

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
    that could have continued, up to sleep-set partial-order reduction
    (:mod:`smmu.explore.por`); ``Exploration.complete`` says whether it finished.
``"windows"``
    window-directed: each device fault placed before, inside and after each notifier
    window a run shows (:mod:`smmu.explore.steer`).
``HypothesisSchedule(data)``
    each choice drawn from hypothesis data, so hypothesis shrinks failing schedules itself.

The same (scenario, driver, api, strategy, seed) always gives the same choices and the same
violations; :func:`replay` re-runs a :class:`Finding` from its choice list (or from its seed).
"""

from smmu.explore.findings import Finding, driver_spec, replay
from smmu.explore.loader import load_driver
from smmu.explore.run import STRATEGIES, ScanEveryStep, make_strategy_schedule, run_once
from smmu.explore.por import BoundedSearch
from smmu.explore.search import PORTFOLIO, SEARCHES, Exploration, Shard, explore
from smmu.explore.steer import Steer, window_plans
from smmu.explore.shrink import shrink
from smmu.runtime.schedules import (DEFAULT_PCT_STEPS, FAIR_BOUND, PCT, HypothesisSchedule,
                                    Replay, count_preemptions)
from smmu.scenarios import SCENARIOS, Scenario, attach_driver, get_scenario, register

__all__ = ["BoundedSearch", "DEFAULT_PCT_STEPS", "Exploration", "FAIR_BOUND", "Finding",
           "HypothesisSchedule", "PORTFOLIO", "SEARCHES", "Steer", "window_plans",
           "PCT", "Replay", "SCENARIOS", "STRATEGIES", "ScanEveryStep", "Scenario", "Shard",
           "attach_driver", "count_preemptions", "driver_spec", "explore", "get_scenario",
           "load_driver", "make_strategy_schedule", "register", "replay", "run_once", "shrink"]
