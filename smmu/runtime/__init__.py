"""The runtime layer: tasks, the deterministic scheduler and its schedules, the kernel locks,
the simulated clock and cost model, and the observer port.

``task`` (Task, Request), ``costs`` (COSTS), ``observer`` (Observer: what lower layers report),
``locks`` (spinlock, mutex, rwsem, wait queue, completion), ``rcu`` (RCU / SRCU domains),
``schedules`` (Schedule and the registered strategies), ``scheduler`` (Scheduler, Result).
Imports only the base layer.
"""

from smmu.runtime.costs import COSTS
from smmu.runtime.observer import Observer
from smmu.runtime.rcu import RCUDomain
from smmu.runtime.schedules import (SCHEDULES, HypothesisSchedule, PCT, RandomSchedule, Replay,
                                    RoundRobin, Schedule, Timed, make_schedule,
                                    register_schedule)
from smmu.runtime.scheduler import Result, Scheduler, Sleep
from smmu.runtime.task import Request, Task

__all__ = ["COSTS", "HypothesisSchedule", "Observer", "PCT", "RCUDomain", "RandomSchedule",
           "Replay", "Request", "Result", "RoundRobin", "SCHEDULES", "Schedule", "Scheduler",
           "Sleep", "Task", "Timed", "make_schedule", "register_schedule"]
