"""Public name of :mod:`smmu.devices.shadow` (DESIGN.md: ``smmu.shadow``)."""
from smmu.devices.shadow import *  # noqa: F401,F403
