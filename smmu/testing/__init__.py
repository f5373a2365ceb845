"""The hypothesis kit: coherence testing of your driver in five lines.

::

    # tests/test_mydriver.py
    from smmu.testing import coherence_test
    from mydriver import MyDriver

    test_mydriver = coherence_test(MyDriver)

``coherence_test`` returns a pytest test function driven by hypothesis: each example picks a
scenario of the catalogue (:mod:`smmu.scenarios`) and a notifier generation the driver
supports, and draws *every scheduling choice* from hypothesis data
(:class:`smmu.explore.HypothesisSchedule`), so a failing interleaving shrinks to a short one.
A failure raises :class:`CoherenceFailure` whose message is the violation report: kind,
address, frames, and the failing schedule as numbered steps with task names and source lines.

Also here:

* :func:`register_profiles`: the hypothesis profiles ``ci`` (derandomized, bounded; chosen
  when the ``CI`` environment variable is set), ``dev`` (the default) and ``deep`` (long
  searches, ``HYPOTHESIS_PROFILE=deep``);
* :func:`coherence_machine`: the same as a hypothesis ``RuleBasedStateMachine`` TestCase,
  where hypothesis also picks the operations (CPU and device) one rule at a time;
* the pytest fixture ``smmu_sim`` (this package is smmu's pytest plugin): a factory of fresh
  :class:`smmu.Simulator` objects, ``sim = smmu_sim(notifier_api="v2008")``.

Modules: ``kit`` (coherence_test and its pieces), ``machine`` (coherence_machine),
``profiles`` (register_profiles); the fixture is defined here, where pytest's plugin entry
point ``smmu.testing`` finds it.
"""

from smmu.sim import Simulator
from smmu.testing.kit import (DEFAULT_SCENARIOS, DEFAULT_SCHEDULES, CoherenceFailure, check_class,
                              coherence_pairs, coherence_test, failure_report, find, reproduce,
                              run_schedule, search)
from smmu.testing.machine import coherence_machine
from smmu.testing.profiles import register_profiles
from smmu.testing.warmup import warm_up

__all__ = ["DEFAULT_SCENARIOS", "DEFAULT_SCHEDULES", "CoherenceFailure", "check_class",
           "coherence_machine", "coherence_pairs", "coherence_test", "failure_report", "find",
           "register_profiles", "reproduce", "run_schedule", "search", "warm_up"]


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed to run tests
    pytest = None

# the plugin registers the profiles in every project that has smmu installed (README)
register_profiles(load=False)

if pytest is not None:
    @pytest.fixture
    def smmu_sim():
        """A factory of fresh simulators: ``sim = smmu_sim(notifier_api="v2008", seed=3)``."""
        def make(**kwargs):
            return Simulator(**kwargs)
        return make

    def pytest_collection_finish(session):
        """Before the first coherence test runs (outside any example's deadline), load the
        numba kernels every run uses: the JIT's first call costs seconds."""
        if any(getattr(getattr(item, "obj", None), "_smmu_coherence", False)
               for item in session.items):
            warm_up()
