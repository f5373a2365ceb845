"""The simulator facade: :class:`Simulator` (a scheduler, the primary MM and the oracle as
its observer) and :class:`TraceRecorder` (a traced run's ``Result.trace``)."""

from smmu.sim.simulator import RMAP_LOCKS, Simulator
from smmu.sim.trace_recorder import TraceRecorder

__all__ = ["RMAP_LOCKS", "Simulator", "TraceRecorder"]
