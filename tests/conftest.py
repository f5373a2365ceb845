"""Test configuration: hypothesis profiles (``ci`` when the CI variable is set, derandomized
so CI never flakes; ``deep`` on demand with HYPOTHESIS_PROFILE=deep) and quiet logging."""

import logging
import os

import structlog

from smmu.testing import register_profiles

register_profiles()

# The library never configures logging; the test run keeps it to warnings.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

if os.environ.get("NUMBA_DISABLE_JIT") == "1":  # pragma: no cover - a debugging aid
    print("numba JIT disabled: kernels run as Python")
