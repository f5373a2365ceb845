"""``coherence_machine``: the coherence test as a hypothesis ``RuleBasedStateMachine``, where
hypothesis also picks the operations, one rule at a time."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from smmu.base.constants import PAGE_SIZE
from smmu.explore import HypothesisSchedule
from smmu.report import violation_text
from smmu.runtime.schedules import RoundRobin
from smmu.scenarios import tolerant
from smmu.sim import Simulator
from smmu.testing.kit import CoherenceFailure, check_class


def coherence_machine(driver_cls, api="modern", *, pages: int = 4, driver_options=None):
    """A ``RuleBasedStateMachine`` whose rules are operations on one process with
    ``driver_cls`` attached: CPU writes and reads, fork, mprotect, MADV_DONTNEED, reclaim,
    migration, and device accesses. Each rule spawns its operation as a task and hypothesis
    decides, rule by rule, how far the simulator runs (``step``), so operations overlap.
    Coherence is checked as the machine goes and at teardown (every task finished, every
    page read back by the CPU). Use it as ``TestMyDriver = coherence_machine(MyDriver).TestCase``.
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
            self.sim.run_steps(data.draw(st.integers(1, 40), label="steps"))

        @invariant()
        def coherent(self):
            if self.sim.violations:
                self._fail()

        def _fail(self):
            # teardown runs after a failed invariant too: raising again there would chain a
            # second CoherenceFailure to the first, which hypothesis counts as another bug
            self.failed = True
            v = self.sim.violations[0]
            raise CoherenceFailure(violation_text(v, api=api, driver=driver_cls.__name__),
                                   v, "coherence_machine", api, self.sim.choices)

        def teardown(self):
            sim = self.sim
            if getattr(self, "failed", False):
                return
            for i in range(pages):
                self.spawn("final_read", self.mm.read(self.va(i)))
            sim.schedule = RoundRobin()
            sim.run()
            if sim.violations:
                self._fail()

    CoherenceMachine.__name__ = f"{driver_cls.__name__}CoherenceMachine"
    return CoherenceMachine
