"""Schedule exploration: PCT, random and preemption-bounded search find a seeded race and stay
quiet on its fixed twin; replay reproduces; the shrinker returns few preemptions; runs are
deterministic. The scenarios here run on a bare scheduler so they test exploration alone."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smmu.base.errors import UsageError
from smmu.explore import (PCT, SCENARIOS, Finding, HypothesisSchedule, Replay, Scenario,
                          count_preemptions, explore, get_scenario, register, replay, run_once,
                          shrink)
from smmu.runtime.scheduler import Scheduler


def bare(notifier_api, **kw):
    return Scheduler(**kw)


def _window_race(fixed: bool, pad: int = 6):
    """cpu: some work, then a window of two steps in which `state["open"]` is set, then more
    work. dev: some work, then one check; seeing the window open is the bug. The fixed twin
    holds a lock across the window and takes it for the check."""

    def build(sim, driver_cls):
        state = {"open": False}
        lock = sim.spinlock("window_lock")

        def cpu():
            for _ in range(pad):
                yield
            if fixed:
                yield lock
            state["open"] = True
            yield
            state["open"] = False
            if fixed:
                lock.release()
            for _ in range(pad):
                yield

        def dev():
            for _ in range(pad):
                yield
            if fixed:
                yield lock
            if state["open"]:
                sim.violation("StaleRead", "the device looked inside the window",
                              address=0x1000)
            if fixed:
                lock.release()
            for _ in range(pad):
                yield

        sim.spawn("cpu0", cpu())
        sim.spawn("dev0", dev())

    return Scenario(name=f"window-race{'-fixed' if fixed else ''}", build=build,
                    description="a two-step window on one task, a check on another",
                    simulator=bare)


RACE = _window_race(False)
FIXED = _window_race(True)


@pytest.mark.parametrize("strategy", ["pct", "random", "exhaustive"])
def test_each_strategy_finds_the_race(strategy):
    ex = explore(RACE, None, "modern", strategy=strategy, schedules=300, seed=1)
    assert [f.kind for f in ex.findings] == ["StaleRead"]
    assert ex.schedules_run <= 300
    f = ex.findings[0]
    assert f.strategy == strategy and f.scenario == RACE.name


@pytest.mark.parametrize("strategy", ["pct", "random", "exhaustive"])
def test_fixed_twin_is_clean(strategy):
    ex = explore(FIXED, None, "modern", strategy=strategy, schedules=60, seed=1)
    assert ex.ok, ex.findings
    assert ex.schedules_run == 60 or ex.exhausted


def test_exhaustive_with_bound_zero_never_preempts_and_exhausts():
    ex = explore(RACE, None, "modern", strategy="exhaustive", schedules=1000, bound=0)
    # without preemption cpu runs to completion first (or dev does): never inside the window
    assert ex.ok
    assert ex.exhausted
    assert ex.schedules_run <= 3


def test_exhaustive_bound_one_explores_every_single_preemption():
    # with one preemption, the window race needs: cpu preempted inside its window (1)
    ex = explore(RACE, None, "modern", strategy="exhaustive", schedules=10_000, bound=1,
                 stop_at_first=False)
    assert ex.exhausted
    assert [f.kind for f in ex.findings] == ["StaleRead"]


@pytest.mark.parametrize("strategy", ["pct", "random", "exhaustive"])
def test_replay_reproduces_the_finding(strategy):
    f = explore(RACE, None, "modern", strategy=strategy, schedules=300, seed=3).findings[0]
    r = replay(f)
    assert "StaleRead" in r.kinds()
    assert r.schedule == f.choices
    # and from the seed alone, for the seeded strategies
    if strategy != "exhaustive":
        g = Finding(f.violation, f.scenario, f.api, f.strategy, f.seed, [], params=f.params)
        register(RACE)
        try:
            r2 = replay(g)
        finally:
            SCENARIOS.pop(RACE.name, None)
        assert r2.schedule == f.choices


def test_replay_of_a_clean_schedule_is_clean():
    f = explore(RACE, None, "modern", strategy="random", schedules=300, seed=3).findings[0]
    # an empty list falls back to the lowest id: cpu runs to its end first, no race
    r = f.run(Replay([]))
    assert r.ok
    assert set(r.schedule) == {0}


@pytest.mark.parametrize("strategy", ["pct", "random"])
def test_shrink_gives_minimal_preemptions(strategy):
    f = explore(RACE, None, "modern", strategy=strategy, schedules=300, seed=5).findings[0]
    mini = shrink(f)
    assert f.minimal == mini
    assert f.preemptions is not None and 1 <= f.preemptions <= 2
    assert len(mini) <= len(f.choices)
    r = replay(f)
    assert "StaleRead" in r.kinds()


def test_finding_json_round_trip_replays():
    f = explore(RACE, None, "modern", strategy="pct", schedules=300, seed=2).findings[0]
    shrink(f)
    d = json.loads(json.dumps(f.to_dict()))
    assert d["kind"] == "StaleRead" and d["scenario"] == RACE.name
    assert d["minimal"] == f.minimal
    register(RACE)
    try:
        g = Finding.from_dict(d)
        r = replay(g)
    finally:
        SCENARIOS.pop(RACE.name, None)
    assert "StaleRead" in r.kinds()


@pytest.mark.parametrize("strategy", ["pct", "random", "exhaustive"])
def test_same_seed_same_choices_and_violations(strategy):
    def go():
        ex = explore(RACE, None, "modern", strategy=strategy, schedules=200, seed=11)
        return [(f.seed, f.choices, f.violation.kind, f.violation.step) for f in ex.findings]

    a, b = go(), go()
    assert a == b and a


def test_different_seeds_pct_gives_different_schedules():
    seen = set()
    for seed in range(10):
        r = run_once(RACE, None, "modern", PCT(seed, steps=30), seed, stop_on_violation=False)
        seen.add(tuple(r.schedule))
    assert len(seen) > 3


def test_pct_depth_one_is_a_fixed_priority_order():
    # no change points: the highest-priority task runs to completion, never preempted
    for seed in range(5):
        sched = PCT(seed, depth=1, steps=30)
        r = run_once(RACE, None, "modern", sched, seed, stop_on_violation=False)
        assert r.ok
        assert len(set(r.schedule)) == 1


def test_replay_falls_back_to_lowest_id_when_choice_not_runnable():
    sched = Replay([1, 7, 1])
    r = run_once(RACE, None, "modern", sched, 0, stop_on_violation=False)
    assert r.schedule[:3] == [1, 0, 1]
    assert r.schedule[3:] == [0] * len(r.schedule[3:])
    assert count_preemptions(sched.log) == sched.preemptions


def test_hypothesis_schedule_records_choices():
    @given(st.data())
    def inner(data):
        sched = HypothesisSchedule(data)
        r = run_once(RACE, None, "modern", sched, 0, stop_on_violation=False)
        assert sched.chosen == r.schedule

    inner()


def test_hypothesis_schedule_finds_the_race():
    found = []

    @given(st.data())
    def inner(data):
        r = run_once(RACE, None, "modern", HypothesisSchedule(data), 0)
        if not r.ok:
            found.append(r.schedule)
            raise AssertionError("race")

    with pytest.raises(AssertionError):
        inner()
    assert found


def test_bad_arguments_are_usage_errors():
    with pytest.raises(UsageError, match="strategy"):
        explore(RACE, None, "modern", strategy="bogus")
    with pytest.raises(UsageError, match="schedules"):
        explore(RACE, None, "modern", schedules=0)
    with pytest.raises(UsageError, match="unknown scenario"):
        get_scenario("no-such-scenario")
    with pytest.raises(UsageError, match="task ids"):
        Replay(["x"])
    with pytest.raises(UsageError, match="not a smmu finding"):
        Finding.from_dict({"kind": "StaleRead"})
    with pytest.raises(UsageError, match="runs under"):
        run_once(Scenario("v2008-only", RACE.build, apis=("v2008",), simulator=bare), None,
                 "modern", "round_robin", 0)


def test_reprs_are_readable():
    ex = explore(RACE, None, "modern", strategy="random", schedules=300, seed=1)
    assert "window-race" in repr(ex) and "StaleRead" in repr(ex)
    assert "StaleRead" in repr(ex.findings[0])
    assert "window-race" in repr(RACE)
    assert "depth=3" in repr(PCT(1))


def test_budget_in_seconds_ends_the_exploration():
    ex = explore(FIXED, None, "modern", strategy="random", schedules=10**7, seconds=0.2)
    assert ex.ok and 1 <= ex.schedules_run < 10**7


def test_progress_is_reported_after_every_schedule():
    calls = []
    ex = explore(FIXED, None, "modern", strategy="pct", schedules=7,
                 progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 7) for i in range(1, 8)] and ex.schedules_run == 7


def test_stop_at_first_false_keeps_exploring():
    ex = explore(RACE, None, "modern", strategy="random", schedules=40, seed=1,
                 stop_at_first=False)
    assert ex.schedules_run == 40 and [f.kind for f in ex.findings] == ["StaleRead"]


def _spin_build(sim, driver_cls):
    """a spins until b sets a flag (a KVM fault retrying while an invalidation is in
    progress); b needs a few steps. Any fair schedule finishes; strict priorities starve b."""
    flag = {"set": False}

    def a():
        while not flag["set"]:
            yield

    def b():
        for _ in range(3):
            yield
        flag["set"] = True

    sim.spawn("a", a())
    sim.spawn("b", b())


SPIN = Scenario("spin", _spin_build, simulator=bare)


@pytest.mark.parametrize("strategy", ["pct", "random", "exhaustive"])
def test_a_spinning_task_does_not_starve_the_others(strategy):
    ex = explore(SPIN, None, "modern", strategy=strategy, schedules=30, seed=0,
                 stop_at_first=False)
    assert ex.ok, ex.findings


def test_replay_fallback_is_fair_to_a_spinning_lowest_id_task():
    sched = Replay([])
    r = run_once(SPIN, None, "modern", sched, 0, stop_on_violation=False)
    assert r.ok, r.violations
    assert r.schedule.count(1) >= 1     # b got to run


def test_design_example_builds_a_pct_simulator_without_importing_explore_first():
    import subprocess
    import sys
    code = ("from smmu import Simulator\n"
            "s = Simulator(notifier_api='v2008', rmap_locks='rwsem', schedule='pct', seed=7)\n"
            "print(s.schedule.name)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "pct"


def test_explore_collects_each_schedules_garbage_between_schedules_and_restores_the_gc():
    """The long-lived heap is frozen out of the collector while explore runs and each run's
    simulator (a web of cycles) is collected between runs, not at a step inside the next;
    the collector's thresholds and freeze state are what they were afterwards."""
    import gc

    import drivers
    from smmu.explore import search

    before = (gc.get_threshold(), gc.get_freeze_count(), gc.isenabled())
    during = []
    freed = []

    def on_gc(phase, info):
        if phase == "stop" and info["generation"] <= 1 and info["collected"]:
            freed.append(info["collected"])

    gc.callbacks.append(on_gc)
    try:
        ex = explore("cow-after-fork", drivers.BUILTIN["kvm"], "modern", strategy="random",
                     schedules=6, stop_at_first=False,
                     progress=lambda done, total: during.append(
                         (gc.get_threshold()[0], gc.get_freeze_count() > 0)))
    finally:
        gc.callbacks.remove(on_gc)
    assert ex.schedules_run == 6
    assert set(during) == {(max(before[0][0], search.GC_THRESHOLD_DURING), True)}
    # a collection after each of the first five runs found that run's garbage
    assert sum(1 for n in freed if n > 50) >= 5
    assert (gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()) == before


def test_explore_leaves_a_disabled_collector_alone():
    import gc

    import drivers

    gc.disable()
    try:
        before = gc.get_threshold()
        seen = []
        explore("cow-after-fork", drivers.BUILTIN["kvm"], "modern", strategy="random",
                schedules=2, stop_at_first=False,
                progress=lambda d, t: seen.append((gc.isenabled(), gc.get_threshold(),
                                                   gc.get_freeze_count())))
        assert seen == [(False, before, 0)] * 2
        assert gc.get_threshold() == before and not gc.isenabled()
    finally:
        gc.enable()
