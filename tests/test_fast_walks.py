"""A range's walk run at once as plain calls (``NotifierSubscriptions.fast_walks``, with lazy
SRCU sections) gives the runs the general walk, a generator, gives: the same choices,
steps, clocks, stats and findings, with the oracle watching, whatever the hooks do."""

import pytest
from notifier_kit import FakeMM, FakeSim

from smmu.explore.loader import load_driver
from smmu.explore.run import make_strategy_schedule, run_once
from smmu.notifier import MMUNotifier, NotifierSubscriptions, Range
from smmu.notifier import chain as chain_mod
from smmu.runtime.observer import Observer
from smmu.runtime.scheduler import Scheduler


class BareSim(Scheduler):
    """A scheduler whose observer takes no event (bench_runtime's dispatch): its walks
    follow the chain's plan (NotifierSubscriptions._make_plan)."""


SIMS = {"checker": FakeSim, "bare": BareSim}


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


def _hook_uses_the_domain(fast: bool, what: str, sim_cls=FakeSim):
    sim = sim_cls("round_robin", seed=0)
    mm = FakeMM(sim)
    subs = mm.notifier_subscriptions
    subs.fast_walks = fast
    log = []
    srcu = subs.srcu
    def nested():
        drv.action = None                 # (its own start hook runs in the nested walk)
        log.append(("nested", sim.do(_pair(subs, Range(mm, 0, 0x1000)))))

    other = FakeMM(sim)                   # a walk of another mm within the hook, same step
    osubs = other.notifier_subscriptions
    osubs.fast_walks = fast

    def same_step():
        r = Range(other, 0, 0x1000)
        log.append(("same step", list(osubs.mmu_notifier_invalidate_range_start(r)),
                    list(osubs.mmu_notifier_invalidate_range_end(r)), srcu.lazy,
                    len(srcu.readers)))

    actions = {"call": lambda: srcu.call(lambda: log.append("callback")),
               "held": lambda: log.append(("held", srcu.held())), "nested": nested,
               "same_step": same_step}
    drv = Plain(sim, mm, log, actions[what])
    sim.do(subs.register(drv))
    sim.do(osubs.register(Plain(sim, other, log)))

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


@pytest.mark.parametrize("sim", sorted(SIMS))
@pytest.mark.parametrize("what", ["call", "held", "nested", "same_step"])
def test_a_hook_that_uses_the_srcu_domain_sees_the_walks_section(what, sim):
    # call_srcu from inside the walk waits for the walk's section to end; held() is True;
    # a nested walk is a section of its own: as with a registered section
    fast = _hook_uses_the_domain(True, what, SIMS[sim])
    assert fast == _hook_uses_the_domain(False, what, SIMS[sim])
    log = fast[0]
    if what == "call":
        assert log.index("returns") + 1 == log.index("callback") < log.index("after start")
    if what == "held":
        assert ("held", True) in log
    assert log[-1] == ("readers", 0, None)


def _sections_meet(fast: bool, schedule, seed, sim_cls=FakeSim):
    """A walk that sleeps (registered section), an unregister waiting in synchronize_srcu
    for it, and plain walks on another mm of the same domain meanwhile: the plain walks'
    sections must be real ones while the others are there (their ends wake the waiter)."""
    sim = sim_cls(schedule, seed=seed)
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


@pytest.mark.parametrize("sim", sorted(SIMS))
@pytest.mark.parametrize("schedule", ["round_robin", "random", "pct"])
def test_lazy_sections_only_where_nobody_could_tell(schedule, sim):
    for seed in range(12):
        assert _sections_meet(True, schedule, seed, SIMS[sim]) == \
            _sections_meet(False, schedule, seed, SIMS[sim])


# ---------------------------------------------------------------- planned walks (no observer)
class Doing(MMUNotifier):
    """Plain hooks that log and then do ``self.acts[hook]`` (a callable) if set."""

    def __init__(self, sim, mm, log, tag, **acts):
        super().__init__(sim, mm)
        self.log, self.tag, self.acts = log, tag, acts
        self.name = f"Doing{tag}"

    def _hook(self, hook, r):
        self.log.append((self.tag, hook, r.start, self.sim.running.clock,
                         self.sim.hook_calls[hook], self.sim.stats["notifier_call"]))
        act = self.acts.get(hook)
        return act() if act is not None else 0

    def invalidate_range_start(self, r):
        return self._hook("invalidate_range_start", r)

    def invalidate_range_end(self, r):
        self._hook("invalidate_range_end", r)


class RangeWatcher(Observer):
    def range_start(self, mm, rng):
        pass


class Sleepy(Doing):
    may_sleep = True


def _gen_hook(log, tag):
    def gen():
        log.append((tag, "generator runs"))
        yield
        log.append((tag, "generator done"))
        return 0
    return gen


def _boom():
    raise ValueError("driver bug")


def _planned_run(fast: bool, case: str, schedule="random", seed=0):
    """Two tasks walking ranges of one mm (and of a second mm for one of them) under a
    bare scheduler, its subscriptions doing what ``case`` says."""
    sched = schedule if case != "jitter" else __import__(
        "smmu.runtime.schedules", fromlist=["Timed"]).Timed(seed, jitter=0.3)
    sim = BareSim(sched, seed=seed, record_steps=case == "record_steps")
    a, b = FakeMM(sim), FakeMM(sim)
    for mm in (a, b):
        mm.notifier_subscriptions.fast_walks = fast
    log = []
    subs = a.notifier_subscriptions
    acts = {}
    n = 1
    if case == "two":
        n = 2
    elif case == "raise_start":
        acts = {"invalidate_range_start": _boom}
    elif case == "raise_end":
        acts = {"invalidate_range_end": _boom}
    elif case == "generator":
        acts = {"invalidate_range_start": _gen_hook(log, "g"),
                "invalidate_range_end": _gen_hook(log, "g")}
    elif case == "second_generator":
        n = 2
    cls = Sleepy if case == "may_sleep" else Doing
    drvs = [cls(sim, a, log, i, **(acts if i == 0 else {})) for i in range(n)]
    if case == "second_generator":          # newest first: drvs[1] is walked first
        drvs[0].acts = {"invalidate_range_start": _gen_hook(log, "g0"),
                        "invalidate_range_end": _gen_hook(log, "g0")}
    if case == "unlink_next":               # the first walked puts the next one (nested do)
        drvs.append(Doing(sim, a, log, 1))
        drvs[1].acts = {"invalidate_range_start": lambda: (
            sim.do(subs.put(drvs[0])) if drvs[0]._registered else None) or 0}
    for d in drvs:
        sim.do(subs.register(d))
    other = Doing(sim, b, log, "b")
    sim.do(b.notifier_subscriptions.register(other))

    def walker(mm, k):
        for i in range(k):
            yield from _pair(mm.notifier_subscriptions, Range(mm, i * 0x1000, (i + 1) * 0x1000))
            log.append(("walked", mm is a, i))

    sim.spawn("w0", walker(a, 4))
    sim.spawn("w1", walker(b, 3))
    sim.spawn("w2", walker(a, 2))
    r = sim.run()
    return (log, r.schedule, r.steps, r.time_ns, r.times, dict(r.stats),
            [(v.kind, v.task, v.message) for v in r.violations],
            len(subs.srcu.readers), subs.srcu.lazy, [d._in_flight for d in drvs])


PLANNED = ["plain", "two", "raise_start", "raise_end", "generator", "second_generator",
           "unlink_next", "may_sleep", "jitter", "record_steps"]


@pytest.mark.parametrize("case", PLANNED)
def test_planned_walks_give_the_general_walks_runs(case, monkeypatch):
    # the observer takes none of the walk's events: the walks follow the chain's plan (one
    # subscription inline, several through _walk_planned), or leave it where it does not
    # hold (may_sleep, a jittered clock, recorded steps, a generator hook)
    for seed in range(4):
        fast = _planned_run(True, case, seed=seed)
        assert fast == _planned_run(False, case, seed=seed), (case, seed)
    if case in ("raise_start", "raise_end"):
        assert fast[6] and fast[6][0][0] == "DriverError"
    if case == "unlink_next":               # drvs[0] was skipped from the first walk on
        assert not fast[6] and not [e for e in fast[0] if e[0] == 0]


def test_a_planned_walk_takes_no_general_path(monkeypatch):
    # one plain subscription, no observer: neither _walk_now nor the general walk runs
    taken = []
    for name in ("_walk_now", "_range_start", "_range_end", "_walk_planned"):
        real = getattr(NotifierSubscriptions, name)
        monkeypatch.setattr(NotifierSubscriptions, name,
                            lambda self, *a, _n=name, _r=real: taken.append(_n) or _r(self, *a))
    sim = BareSim("round_robin", seed=0)
    mm = FakeMM(sim)
    subs = mm.notifier_subscriptions
    sim.do(subs.register(Doing(sim, mm, [], 0)))
    taken.clear()
    sim.spawn("t", _pair(subs, Range(mm, 0, 0x1000)))
    sim.run()
    assert taken == []
    sim.do(subs.register(Doing(sim, mm, [], 1)))     # two: the planned loop
    sim.spawn("t", _pair(subs, Range(mm, 0, 0x1000)))
    sim.run()
    assert taken == ["_walk_planned", "_walk_planned"]
    taken.clear()
    sim.observer = RangeWatcher()                    # an observer taking range events
    sim.spawn("t", _pair(subs, Range(mm, 0, 0x1000)))
    sim.run()
    assert taken == ["_walk_now", "_walk_now"]
