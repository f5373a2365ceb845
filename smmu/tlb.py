"""Public name of :mod:`smmu.devices.tlb` (DESIGN.md: ``smmu.tlb``)."""
from smmu.devices.tlb import *  # noqa: F401,F403
