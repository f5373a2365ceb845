"""A range's walk run at once as plain calls (``NotifierSubscriptions.fast_walks``, with lazy
SRCU sections) gives the runs the general walk, a generator, gives: the same choices,
steps, clocks, stats and findings, with the oracle watching, whatever the hooks do."""

import pytest
from notifier_kit import FakeMM, FakeSim

from smmu.explore.loader import load_driver
from smmu.explore.run import make_strategy_schedule, run_once
from smmu.notifier import MMUNotifier, NotifierSubscriptions, Range
from smmu.notifier import chain as chain_mod


def _fingerprint(r):
    return (r.schedule, r.steps, r.time_ns, r.times, r.stats, r.errors,
            [(v.kind, v.step, v.task, v.time_ns, v.address, v.message, v.schedule)
             for v in r.violations])


@pytest.fixture
def general_walks(monkeypatch):
    """Call it to make every walk the general one."""
    return lambda: monkeypatch.setattr(NotifierSubscriptions, "fast_walks", False)


CASES = [("cow-after-fork", "gru"), ("cow-after-fork", "buggy.kvm_seq_after_unlock"),
         ("migration", "iommu_sva"), ("munmap-during-device-fault", "gru"),
         ("rst-cow-timeline", "buggy.sva_flush_in_end"), ("reclaim-while-device-reads", "kvm"),
         ("load-small", "xpmem"), ("load-small", "hmm_mirror"), ("ksm-merge", "pinned")]


@pytest.mark.parametrize("scenario,driver", CASES)
def test_fast_walks_give_the_general_walks_runs(scenario, driver, general_walks, monkeypatch):
    cls = load_driver(driver)
    # count the walks the general path finished, to see that the fast one ran at all
    finished = []
    real = chain_mod.NotifierSubscriptions._hlist_end

    def counting(self, *a):
        finished.append(1)
        return (yield from real(self, *a))

    monkeypatch.setattr(chain_mod.NotifierSubscriptions, "_hlist_end", counting)
    runs = []
    for api in ("v2008", "modern"):
        for strategy in ("random", "pct"):
            for seed in (1, 2, 3):
                runs.append((api, strategy, seed))

    def all_runs():
        out = []
        for api, strategy, seed in runs:
            try:
                sched = make_strategy_schedule(strategy, seed, {"depth": 3, "steps": 120})
                out.append(_fingerprint(run_once(scenario, cls, api, sched, seed,
                                                 stop_on_violation=False)))
            except Exception as e:        # a driver not made for this api
                out.append(type(e).__name__)
        return out

    fast = all_runs()
    n_fast = len(finished)
    finished.clear()
    general_walks()
    assert fast == all_runs()
    if driver == "gru":                   # plain hooks: its walks never needed the generator
        assert n_fast < len(finished) // 2


class Plain(MMUNotifier):
    def __init__(self, sim, mm, log, action=None):
        super().__init__(sim, mm)
        self.log, self.action = log, action

    def invalidate_range_start(self, r):
        self.log.append("start")
        if self.action is not None:
            self.action()
            self.log.append("returns")
        return 0

    def invalidate_range_end(self, r):
        self.log.append("end")


class Sleeping(MMUNotifier):
    """Its start hook sleeps across steps (a generator): a read-side section that outlives
    the step."""

    def invalidate_range_start(self, r):
        for _ in range(3):
            yield

    def invalidate_range_end(self, r):
        yield


def _hook_uses_the_domain(fast: bool, what: str):
    sim = FakeSim("round_robin", seed=0)
    mm = FakeMM(sim)
    subs = mm.notifier_subscriptions
    subs.fast_walks = fast
    log = []
    srcu = subs.srcu
    def nested():
        drv.action = None                 # (its own start hook runs in the nested walk)
        log.append(("nested", sim.do(_pair(subs, Range(mm, 0, 0x1000)))))

    actions = {"call": lambda: srcu.call(lambda: log.append("callback")),
               "held": lambda: log.append(("held", srcu.held())), "nested": nested}
    drv = Plain(sim, mm, log, actions[what])
    sim.do(subs.register(drv))

    def task():
        r = Range(mm, 0, 0x2000)
        yield from subs.mmu_notifier_invalidate_range_start(r)
        log.append("after start")
        yield from subs.mmu_notifier_invalidate_range_end(r)
        log.append(("readers", len(srcu.readers), srcu.lazy))

    sim.spawn("t", task())
    r = sim.run()
    return log, r.steps, r.time_ns, r.schedule


def _pair(subs, r):
    yield from subs.mmu_notifier_invalidate_range_start(r)
    yield from subs.mmu_notifier_invalidate_range_end(r)
    return "done"


@pytest.mark.parametrize("what", ["call", "held", "nested"])
def test_a_hook_that_uses_the_srcu_domain_sees_the_walks_section(what):
    # call_srcu from inside the walk waits for the walk's section to end; held() is True;
    # a nested walk is a section of its own: as with a registered section
    fast = _hook_uses_the_domain(True, what)
    assert fast == _hook_uses_the_domain(False, what)
    log = fast[0]
    if what == "call":
        assert log.index("returns") + 1 == log.index("callback") < log.index("after start")
    if what == "held":
        assert ("held", True) in log
    assert log[-1] == ("readers", 0, None)


def _sections_meet(fast: bool, schedule, seed):
    """A walk that sleeps (registered section), an unregister waiting in synchronize_srcu
    for it, and plain walks on another mm of the same domain meanwhile: the plain walks'
    sections must be real ones while the others are there (their ends wake the waiter)."""
    sim = FakeSim(schedule, seed=seed)
    a, b = FakeMM(sim), FakeMM(sim)
    for mm in (a, b):
        mm.notifier_subscriptions.fast_walks = fast
    log = []
    slow = Sleeping(sim, a)
    gone = Plain(sim, a, [])
    sim.do(a.notifier_subscriptions.register(slow))
    sim.do(a.notifier_subscriptions.register(gone))
    plain = Plain(sim, b, log)
    sim.do(b.notifier_subscriptions.register(plain))

    def sleeper():
        yield from _pair(a.notifier_subscriptions, Range(a, 0, 0x1000))

    def unregister():
        yield
        yield from a.notifier_subscriptions.unregister(gone)
        log.append("unregistered")

    def walker():
        for i in range(6):
            yield from _pair(b.notifier_subscriptions, Range(b, 0, 0x1000))
            log.append(i)

    sim.spawn("sleeper", sleeper())
    sim.spawn("unregister", unregister())
    sim.spawn("walker", walker())
    r = sim.run()
    return log, r.schedule, r.steps, r.time_ns, r.times, r.kinds(), dict(r.stats)


@pytest.mark.parametrize("schedule", ["round_robin", "random", "pct"])
def test_lazy_sections_only_where_nobody_could_tell(schedule):
    for seed in range(12):
        assert _sections_meet(True, schedule, seed) == _sections_meet(False, schedule, seed)
