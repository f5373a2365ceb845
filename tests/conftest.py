"""Test configuration: hypothesis profiles (``ci`` when the CI variable is set, derandomized
so CI never flakes; ``deep`` on demand with HYPOTHESIS_PROFILE=deep). Logging is left as a
user's test run has it: the library emits nothing below WARNING unless configured."""

import os

from smmu.testing import register_profiles

register_profiles()

if os.environ.get("NUMBA_DISABLE_JIT") == "1":  # pragma: no cover - a debugging aid
    print("numba JIT disabled: kernels run as Python")
