"""The simulator facade: :class:`Simulator` (a scheduler, the primary MM and the oracle as
its observer) and :class:`TraceRecorder` (a traced run's ``Result.trace``)."""

from smmu.sim.presets import KERNELS, kernel_preset, kernels
from smmu.sim.simulator import RMAP_LOCKS, Simulator
from smmu.sim.trace_recorder import TraceRecorder

__all__ = ["KERNELS", "RMAP_LOCKS", "Simulator", "TraceRecorder", "kernel_preset", "kernels"]
