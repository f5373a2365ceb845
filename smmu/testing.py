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
* the pytest fixture ``smmu_sim`` (this module is smmu's pytest plugin): a factory of fresh
  :class:`smmu.Simulator` objects, ``sim = smmu_sim(notifier_api="v2008")``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from smmu.base.errors import UsageError

#: the scenarios coherence_test draws from by default (small, fast, every operation family)
DEFAULT_SCENARIOS = ("cow-after-fork", "reclaim-while-device-reads", "writeback-device-writes",
                     "migration", "ksm-merge", "munmap-during-device-fault",
                     "mprotect-downgrade", "mremap", "truncate", "exit-while-device-active",
                     "oom-reap", "fork-after-pin", "overlapping-invalidations",
                     "attach-detach-during-invalidation")


def register_profiles() -> None:
    """Register the hypothesis profiles and load one: ``ci`` (derandomized, bounded: chosen
    when the ``CI`` environment variable is set), ``dev`` (the default), ``deep`` (long
    searches: ``HYPOTHESIS_PROFILE=deep``)."""
    common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                        HealthCheck.data_too_large])
    settings.register_profile("ci", derandomize=True, max_examples=60, print_blob=True,
                              database=None, **common)
    settings.register_profile("dev", max_examples=100, **common)
    settings.register_profile("deep", max_examples=5000, **common)
    name = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
    settings.load_profile(name)


class CoherenceFailure(AssertionError):
    """A coherence test found a violation; the message is the full report.
    ``violation``, ``scenario``, ``api`` and ``choices`` (the schedule) are attributes."""

    def __init__(self, report: str, violation=None, scenario=None, api=None, choices=()):
        super().__init__(report)
        self.violation = violation
        self.scenario = scenario
        self.api = api
        self.choices = list(choices)


def _check_class(driver_cls):
    from smmu.notifier import MMUNotifier
    from smmu.base.errors import BadDriver
    if not isinstance(driver_cls, type) or not issubclass(driver_cls, MMUNotifier):
        raise BadDriver(f"coherence_test needs a driver class derived from smmu.MMUNotifier, "
                        f"got {driver_cls!r}")


def coherence_pairs(driver_cls, api=None, scenarios=None) -> list[tuple[str, str]]:
    """The (scenario name, api) pairs a coherence test of ``driver_cls`` draws from:
    ``scenarios`` (names; default :data:`DEFAULT_SCENARIOS`) that apply to the driver, under
    ``api`` (a name or a list; default every generation the driver supports)."""
    from smmu import scenarios as _catalogue  # noqa: F401  (registers the built-ins)
    from smmu.explore import SCENARIOS
    from smmu.notifier import API_GENERATIONS
    _check_class(driver_cls)
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
    from smmu.explore import run_once
    return run_once(scenario, driver_cls, api, schedule, 0, record_steps=record_steps,
                    stop_on_violation=True, driver_options=driver_options)


def failure_report(driver_cls, scenario, api, choices, *, driver_options=None):
    """Replay ``choices`` with numbered steps and build the :class:`CoherenceFailure`."""
    from smmu.explore import Replay
    from smmu.report import violation_text
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
    from hypothesis import given
    from hypothesis import strategies as st

    pairs = coherence_pairs(driver_cls, api, scenarios)
    opts = dict(driver_options or {})

    @given(st.data())
    def test(data):
        from smmu.explore import HypothesisSchedule
        scenario, a = data.draw(st.sampled_from(pairs), label="scenario, api")
        sched = HypothesisSchedule(data)
        res = run_schedule(driver_cls, scenario, a, sched, driver_options=opts)
        if res.violations:
            raise failure_report(driver_cls, scenario, a, res.schedule, driver_options=opts)

    # one failure, the first shrunk one, rather than an ExceptionGroup of every distinct bug
    extra = {"report_multiple_bugs": False, **hypothesis_settings}
    if max_examples is not None:
        extra["max_examples"] = int(max_examples)
    test = settings(**extra)(test)
    test.__name__ = test.__qualname__ = f"test_coherence_{driver_cls.__name__}"
    test.__doc__ = (f"Coherence of {driver_cls.__name__} over {len(pairs)} (scenario, api) "
                    "pairs, schedules drawn by hypothesis.")
    test.pairs = pairs
    return test


# --------------------------------------------------------------------------- state machine

def coherence_machine(driver_cls, api="modern", *, pages: int = 4, driver_options=None):
    """A ``RuleBasedStateMachine`` whose rules are operations on one process with
    ``driver_cls`` attached: CPU writes and reads, fork, mprotect, MADV_DONTNEED, reclaim,
    migration, and device accesses. Each rule spawns its operation as a task and hypothesis
    decides, rule by rule, how far the simulator runs (``step``), so operations overlap.
    Coherence is checked as the machine goes and at teardown (every task finished, every
    page read back by the CPU). Use it as ``TestMyDriver = coherence_machine(MyDriver).TestCase``.
    """
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

    from smmu.base.constants import PAGE_SIZE
    from smmu.base.errors import SmmuError
    from smmu.explore import HypothesisSchedule
    _check_class(driver_cls)
    opts = dict(driver_options or {})
    page = st.integers(0, pages - 1)

    def tolerant(gen):
        try:
            yield from gen
        except SmmuError:
            pass

    class CoherenceMachine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            from smmu.sim import Simulator
            self.sched_data = None
            self.sim = Simulator(notifier_api=api, schedule="round_robin", seed=0,
                                 stop_on_violation=False)
            self.mm = self.sim.new_process()
            self.buf = self.sim.do(self.mm.mmap(pages * PAGE_SIZE, prot="rw"))
            self.drv = self.sim.attach(driver_cls, self.mm, **opts)
            self.n = 0
            self.children = []

        def va(self, i):
            return self.buf + i * PAGE_SIZE

        def spawn(self, what, gen):
            self.n += 1
            self.sim.spawn(f"{what}{self.n}", tolerant(gen))

        @rule(i=page, value=st.integers(1, 10**6))
        def cpu_write(self, i, value):
            self.spawn("cpu_write", self.mm.write(self.va(i), value))

        @rule(i=page)
        def cpu_read(self, i):
            self.spawn("cpu_read", self.mm.read(self.va(i)))

        @rule(i=page, write=st.booleans(), value=st.integers(1, 10**6))
        def device_access(self, i, write, value):
            self.spawn("dev", self.drv.access(self.va(i), write=write,
                                              value=value if write else None))

        @rule(i=page, n=st.integers(1, 2))
        def mprotect_ro_rw(self, i, n):
            n = min(n, pages - i)

            def g():
                yield from self.mm.mprotect(self.va(i), n * PAGE_SIZE, "r")
                yield from self.mm.mprotect(self.va(i), n * PAGE_SIZE, "rw")
            self.spawn("mprotect", g())

        @rule(i=page)
        def dontneed(self, i):
            self.spawn("dontneed", self.mm.madvise(self.va(i), PAGE_SIZE, "dontneed"))

        @rule(i=page)
        def reclaim(self, i):
            self.spawn("reclaim", self.sim.reclaim(self.mm, self.va(i), PAGE_SIZE, force=True))

        @rule(i=page)
        def migrate(self, i):
            self.spawn("migrate", self.sim.migrate(self.mm, self.va(i), PAGE_SIZE))

        @rule()
        def fork(self):
            if not self.children:
                def g():
                    self.children.append((yield from self.mm.fork()))
                self.spawn("fork", g())

        @rule(data=st.data())
        def run_some(self, data):
            """Let hypothesis pick the interleaving of what is running."""
            self.sim.schedule = HypothesisSchedule(data)
            self.sim.max_steps = self.sim.steps + data.draw(st.integers(1, 40), label="steps")
            self.sim._loop(record=True)
            self.sim.max_steps = 2_000_000
            self.sim.violations[:] = [v for v in self.sim.violations if not (
                v.kind == "Livelock" and "budget of" in v.message)]

        @invariant()
        def coherent(self):
            if self.sim.violations:
                self._fail()

        def _fail(self):
            from smmu.report import violation_text
            v = self.sim.violations[0]
            raise CoherenceFailure(violation_text(v, api=api, driver=driver_cls.__name__),
                                   v, "coherence_machine", api, self.sim.choices)

        def teardown(self):
            sim = self.sim
            for i in range(pages):
                self.spawn("final_read", self.mm.read(self.va(i)))
            sim.schedule = _RoundRobin()
            sim.run()
            if sim.violations:
                self._fail()

    CoherenceMachine.__name__ = f"{driver_cls.__name__}CoherenceMachine"
    return CoherenceMachine


def _RoundRobin():
    from smmu.runtime.schedules import RoundRobin
    return RoundRobin()


# --------------------------------------------------------------------------- pytest plugin

try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed to run tests
    pytest = None

if pytest is not None:
    @pytest.fixture
    def smmu_sim():
        """A factory of fresh simulators: ``sim = smmu_sim(notifier_api="v2008", seed=3)``."""
        def make(**kwargs):
            from smmu.sim import Simulator
            return Simulator(**kwargs)
        return make
