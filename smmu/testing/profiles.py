"""The hypothesis profiles of smmu's tests and of coherence tests written with the kit."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


PROFILES = ("ci", "dev", "deep")


def register_profiles(load: bool = True) -> None:
    """Register the hypothesis profiles ``ci`` (derandomized, bounded: chosen when the ``CI``
    environment variable is set), ``dev`` (the default), ``deep`` (long searches:
    ``HYPOTHESIS_PROFILE=deep``) and, with ``load``, load the one the environment asks for.
    smmu's pytest plugin registers them in every project (``load=False``: it loads one only
    when ``HYPOTHESIS_PROFILE`` names one of them or ``CI`` is set, and a project's own
    conftest may load another after it; ``--hypothesis-profile`` works too)."""
    common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                        HealthCheck.data_too_large])
    settings.register_profile("ci", derandomize=True, max_examples=60, print_blob=True,
                              database=None, **common)
    settings.register_profile("dev", max_examples=100, **common)
    settings.register_profile("deep", max_examples=5000, **common)
    name = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else None)
    if load:
        settings.load_profile(name or "dev")
    elif name in PROFILES:
        settings.load_profile(name)
