"""``coherence_test``: a pytest test of a driver's coherence, each scheduling choice drawn by
hypothesis, and the pieces it is made of."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smmu.base.errors import BadDriver, UsageError
from smmu.explore import HypothesisSchedule, Replay, run_once
from smmu.notifier import API_GENERATIONS, MMUNotifier
from smmu.report import violation_text
from smmu.scenarios import SCENARIOS

#: the scenarios coherence_test draws from by default (small, fast, every operation family)
DEFAULT_SCENARIOS = ("cow-after-fork", "reclaim-while-device-reads", "writeback-device-writes",
                     "migration", "ksm-merge", "munmap-during-device-fault",
                     "mprotect-downgrade", "mremap", "truncate", "exit-while-device-active",
                     "oom-reap", "fork-after-pin", "overlapping-invalidations",
                     "attach-detach-during-invalidation")


class CoherenceFailure(AssertionError):
    """A coherence test found a violation; the message is the full report.
    ``violation``, ``scenario``, ``api`` and ``choices`` (the schedule) are attributes."""

    def __init__(self, report: str, violation=None, scenario=None, api=None, choices=()):
        super().__init__(report)
        self.violation = violation
        self.scenario = scenario
        self.api = api
        self.choices = list(choices)


def check_class(driver_cls):
    """Raise ``BadDriver`` unless ``driver_cls`` is a driver class."""
    if not isinstance(driver_cls, type) or not issubclass(driver_cls, MMUNotifier):
        raise BadDriver(f"coherence_test needs a driver class derived from smmu.MMUNotifier, "
                        f"got {driver_cls!r}")


def coherence_pairs(driver_cls, api=None, scenarios=None) -> list[tuple[str, str]]:
    """The (scenario name, api) pairs a coherence test of ``driver_cls`` draws from:
    ``scenarios`` (names; default :data:`DEFAULT_SCENARIOS`) that apply to the driver, under
    ``api`` (a name or a list; default every generation the driver supports)."""
    check_class(driver_cls)
    supported = tuple(getattr(driver_cls, "apis", API_GENERATIONS))
    if api is None:
        apis = [a for a in API_GENERATIONS if a in supported]
    else:
        apis = [api] if isinstance(api, str) else list(api)
        for a in apis:
            if a not in API_GENERATIONS:
                raise UsageError(f"unknown api {a!r}: use one of {list(API_GENERATIONS)}")
            if a not in supported:
                raise UsageError(f"{driver_cls.__name__} supports {list(supported)}, not {a!r}")
    if scenarios is None:
        names = [n for n in DEFAULT_SCENARIOS if n in SCENARIOS]
        explicit = False
    else:
        names = [scenarios] if isinstance(scenarios, str) else list(scenarios)
        explicit = True
    pairs = []
    for n in names:
        sc = SCENARIOS.get(n) if isinstance(n, str) else n
        if sc is None:
            raise UsageError(f"unknown scenario {n!r}: use one of {sorted(SCENARIOS)}")
        if not sc.applies(driver_cls):
            if explicit:
                raise UsageError(f"scenario {sc.name!r} does not apply to "
                                 f"{driver_cls.__name__}")
            continue
        pairs.extend((sc.name, a) for a in apis if a in tuple(sc.apis))
    if not pairs:
        raise UsageError(f"no scenario applies to {driver_cls.__name__} under {apis}")
    return pairs


def run_schedule(driver_cls, scenario: str, api: str, schedule, *, driver_options=None,
                 record_steps=False):
    """One run of ``scenario`` with ``driver_cls`` under ``schedule`` (seed 0)."""
    return run_once(scenario, driver_cls, api, schedule, 0, record_steps=record_steps,
                    stop_on_violation=True, driver_options=driver_options)


def failure_report(driver_cls, scenario, api, choices, *, driver_options=None):
    """Replay ``choices`` with numbered steps and build the :class:`CoherenceFailure`."""
    res = run_schedule(driver_cls, scenario, api, Replay(choices),
                       driver_options=driver_options, record_steps=True)
    if not res.violations:   # pragma: no cover - replay is deterministic
        return CoherenceFailure(f"{scenario} [{api}]: a violation that did not replay",
                                None, scenario, api, choices)
    v = res.violations[0]
    text = violation_text(v, scenario=scenario, api=api, driver=driver_cls.__name__)
    text += (f"\n  replay: smmu.explore.run_once({scenario!r}, {driver_cls.__name__}, "
             f"{api!r}, smmu.explore.Replay({list(res.schedule)}), 0)")
    return CoherenceFailure(text, v, scenario, api, res.schedule)


def coherence_test(driver_cls, api=None, scenarios=None, driver_options=None,
                   max_examples=None, **hypothesis_settings):
    """A pytest test function checking ``driver_cls`` for coherence with hypothesis.

    Each example draws a (scenario, api) pair from :func:`coherence_pairs` and every
    scheduling choice from hypothesis data; the test fails with :class:`CoherenceFailure`
    (the violation report and its schedule) on the first violation. ``driver_options`` go to
    the driver's constructor; ``max_examples`` and any other ``hypothesis.settings`` keyword
    (``phases=``, ``deadline=``...) override the loaded hypothesis profile.
    Assign the result to a module-level name starting with ``test_``."""
    pairs = coherence_pairs(driver_cls, api, scenarios)
    opts = dict(driver_options or {})

    @given(st.data())
    def test(data):
        scenario, a = data.draw(st.sampled_from(pairs), label="scenario, api")
        sched = HypothesisSchedule(data)
        res = run_schedule(driver_cls, scenario, a, sched, driver_options=opts)
        if res.violations:
            raise failure_report(driver_cls, scenario, a, res.schedule, driver_options=opts)

    # one failure, the first shrunk one, rather than an ExceptionGroup of every distinct bug;
    # no deadline (a run's wall time is no property of the driver, and the first examples
    # may load numba kernels) and no too-slow health check, whatever profile is loaded
    extra = {"report_multiple_bugs": False, "deadline": None,
             "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
             **hypothesis_settings}
    if max_examples is not None:
        extra["max_examples"] = int(max_examples)
    test = settings(**extra)(test)
    test.__name__ = test.__qualname__ = f"test_coherence_{driver_cls.__name__}"
    test.__doc__ = (f"Coherence of {driver_cls.__name__} over {len(pairs)} (scenario, api) "
                    "pairs, schedules drawn by hypothesis.")
    test.pairs = pairs
    test._smmu_coherence = True     # the pytest plugin warms the JIT up before such tests
    return test
