"""``coherence_machine``: the coherence test as a hypothesis ``RuleBasedStateMachine``, where
hypothesis also picks the operations, one rule at a time."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from smmu.explore import Finding, HypothesisSchedule
from smmu.report import violation_text
from smmu.runtime.schedules import RoundRobin
from smmu.scenarios import SCRIPT_SCENARIO, ScriptState, script_scenario
from smmu.scenarios.script import do
from smmu.sim import Simulator
from smmu.testing.kit import CoherenceFailure, check_class, reproduce


def _final_example() -> bool:
    """Is this hypothesis's last run of a failing example (the shrunk one it reports), or
    no hypothesis run at all? Only that failure is worth a report file."""
    try:
        from hypothesis.control import current_build_context
        return bool(current_build_context().is_final)
    except (InvalidArgument, ImportError, AttributeError):
        return True


def coherence_machine(driver_cls, api="modern", *, pages: int = 4, driver_options=None):
    """A ``RuleBasedStateMachine`` whose rules are operations on one process with
    ``driver_cls`` attached: CPU writes and reads, fork, mprotect, MADV_DONTNEED, reclaim,
    migration, and device accesses. Each rule spawns its operation as a task and hypothesis
    decides, rule by rule, how far the simulator runs (``step``), so operations overlap.
    Coherence is checked as the machine goes and at teardown (every task finished, every
    page read back by the CPU). Use it as ``TestMyDriver = coherence_machine(MyDriver).TestCase``.

    Every operation is written down as it is done (:mod:`smmu.scenarios.script`): the
    failure hypothesis reports (its shrunk example) is a :class:`CoherenceFailure` whose
    report ends with ``smmu replay FILE``, a JSON report holding that script and the
    schedule, which replays the run with numbered steps.
    """
    check_class(driver_cls)
    opts = dict(driver_options or {})
    page = st.integers(0, pages - 1)

    class CoherenceMachine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.sched_data = None
            self.sim = Simulator(notifier_api=api, schedule="round_robin", seed=0,
                                 stop_on_violation=False)
            self.sim.driver_options = dict(opts)
            self.state = ScriptState(self.sim, driver_cls, pages)
            self.script = []

        def do(self, name, **args):
            self.script.append([name, args])
            do(self.state, name, **args)

        @rule(i=page, value=st.integers(1, 10**6))
        def cpu_write(self, i, value):
            self.do("cpu_write", i=i, value=value)

        @rule(i=page)
        def cpu_read(self, i):
            self.do("cpu_read", i=i)

        @rule(i=page, write=st.booleans(), value=st.integers(1, 10**6))
        def device_access(self, i, write, value):
            self.do("device_access", i=i, write=write, value=value)

        @rule(i=page, n=st.integers(1, 2))
        def mprotect_ro_rw(self, i, n):
            self.do("mprotect_ro_rw", i=i, n=n)

        @rule(i=page)
        def dontneed(self, i):
            self.do("dontneed", i=i)

        @rule(i=page)
        def reclaim(self, i):
            self.do("reclaim", i=i)

        @rule(i=page)
        def migrate(self, i):
            self.do("migrate", i=i)

        @rule()
        def fork(self):
            self.do("fork")

        @rule(data=st.data())
        def run_some(self, data):
            """Let hypothesis pick the interleaving of what is running."""
            self.sim.schedule = HypothesisSchedule(data)
            self.do("run", steps=data.draw(st.integers(1, 40), label="steps"))

        @invariant()
        def coherent(self):
            if self.sim.violations:
                self._fail()

        def _fail(self):
            # teardown runs after a failed invariant too: raising again there would chain a
            # second CoherenceFailure to the first, which hypothesis counts as another bug
            self.failed = True
            v = self.sim.violations[0]
            choices = list(self.sim.choices)
            if not _final_example():     # hypothesis is still shrinking: the short form
                raise CoherenceFailure(violation_text(v, api=api, driver=driver_cls.__name__),
                                       v, SCRIPT_SCENARIO, api, choices)
            sc = script_scenario({"pages": pages, "ops": self.script}, apis=(api,))
            raise reproduce(Finding(v, SCRIPT_SCENARIO, api, "replay", 0, choices,
                                    driver=driver_cls, driver_options=dict(opts),
                                    scenario_def=sc), shrink_schedule=False)

        def teardown(self):
            sim = self.sim
            if getattr(self, "failed", False):
                return
            self.do("final_reads")
            sim.schedule = RoundRobin()
            sim.run()
            if sim.violations:
                self._fail()

    CoherenceMachine.__name__ = f"{driver_cls.__name__}CoherenceMachine"
    return CoherenceMachine
