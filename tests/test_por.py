"""The exhaustive strategy: preemption-bounded DFS with sleep-set reduction. The reduction is
sound (the same outcomes with and without it, on catalogue scenarios with clean and broken
drivers), it prunes, and every run says whether it finished."""

import drivers
import pytest

from smmu.explore import BoundedSearch, explore, run_once
from smmu.explore.por import SleepSetSchedule, owner_of
from smmu.report import verdict
from smmu.runtime.footprint import EVERYTHING, chain, dependent, executed
from smmu.runtime.observer import Observer
from smmu.runtime.schedules import Fairness


class FinalReads(Observer):
    """The values the scenario's closing ``check`` task reads: the run's final state."""

    def __init__(self):
        self.reads = []

    def cpu_access(self, mm, va, write, value):
        cur = mm.sched.current
        if not write and cur is not None and cur.name == "check":
            self.reads.append((mm.name, va, value))


def outcomes(scenario, cls, api, bound, por):
    """Every outcome (violation kinds, final reads) of the bounded search, how many runs it
    made, how many the reduction cut short and whether it completed."""
    search = BoundedSearch(bound, por=por)
    sched = search.next_run()
    seen, runs = set(), 0
    while sched is not None:
        reads = FinalReads()
        r = run_once(scenario, cls, api, sched, 0, observers=[reads], stop_on_violation=False)
        runs += 1
        search.done_run(sched)
        if not sched.halted:        # a cut run has no final state: its twin has it
            seen.add((tuple(sorted({v.kind for v in r.violations})), tuple(reads.reads)))
        sched = search.next_run()
    return seen, runs, search.pruned, search.complete


CASES = [("kvm", "cow-after-fork", "modern"),
         ("buggy.kvm_no_seq", "munmap-during-device-fault", "modern"),
         ("buggy.gru_no_dropin_guard", "cow-after-fork", "modern"),
         ("buggy.kvm_no_seq", "reclaim-while-device-reads", "v2008")]


@pytest.mark.parametrize("driver,scenario,api", CASES)
def test_sleep_sets_keep_every_outcome(driver, scenario, api):
    name = driver.split(".")[-1]
    cls = drivers.BUGGY.get(name) or drivers.BUILTIN[name]
    with_por = outcomes(scenario, cls, api, 1, True)
    without = outcomes(scenario, cls, api, 1, False)
    assert with_por[3] and without[3]                  # both complete
    assert with_por[0] == without[0]                   # the same outcomes, kinds included
    assert len(without[0]) > 1                         # ... and there are several
    assert with_por[2] > 0 and with_por[1] < without[1]  # and the reduction did cut


def test_exhaustive_says_whether_it_finished():
    full = explore("cow-after-fork", drivers.KVM, "modern", strategy="exhaustive", bound=1,
                   schedules=10_000)
    assert full.complete and full.bound == 1 and full.ok
    assert 1 < full.schedules_run < 10_000 and full.pruned > 0
    cut = explore("cow-after-fork", drivers.KVM, "modern", strategy="exhaustive", bound=1,
                  schedules=10)
    assert not cut.complete and cut.schedules_run == 10
    assert "complete" in repr(full) and "not complete" in repr(cut)


def test_verdict_says_what_clean_rests_on():
    done = {"schedules_run": 226, "violations": [], "complete": True, "bound": 2,
            "mix": {"exhaustive": 226}}
    assert verdict(done) == "clean: exhaustive to preemption bound 2 (226 schedules, complete)"
    mixed = {"schedules_run": 200, "violations": [], "complete": False, "bound": 2,
             "mix": {"windows": 10, "exhaustive": 80, "pct1": 30, "pct2": 30, "pct3": 30,
                     "random": 20}}
    text = verdict(mixed)
    assert text.startswith("clean under 200 schedules (")
    assert "PCT depth 1-3" in text and "20 random" in text and "not complete" in text
    assert verdict({"schedules_run": 7, "violations": ["MapInWindow"]}).startswith("MapInWindow")


def test_executed_frames_of_a_step():
    def inner():
        yield
        yield

    def outer():
        yield from inner()
        yield

    g = outer()
    next(g)
    a = chain(g)
    assert [x.gi_code.co_name for x in a] == ["outer", "inner"]
    assert executed(a, a) == a[-1:]                   # resumed and suspended in inner
    next(g)
    next(g)                                           # inner returned, outer yields
    b = chain(g)
    assert executed(a, b) == a                        # both ran
    assert executed(b, []) == b                       # the task finished


def test_dependence_of_footprints():
    rw = (frozenset({"mm"}), frozenset({"drivers"}))
    assert not dependent(rw, (frozenset({"mm"}), frozenset({"scenario"})))   # read-read
    assert dependent(rw, (frozenset(), frozenset({"mm"})))                   # read-write
    assert dependent(rw, (frozenset({EVERYTHING}), frozenset()))


def test_code_owners():
    assert owner_of(drivers.KVM.page_fault.__code__) == "drivers"
    assert owner_of(run_once.__code__) == EVERYTHING          # smmu's harness: unknown
    assert owner_of(SleepSetSchedule.choose.__code__) == EVERYTHING
    from primary_mm.fault import Faults
    assert owner_of(Faults.get_user_pages.__code__) == "mm"


def test_fairness_lets_the_waited_for_task_in():
    """Two spinners that each hold the lock a third task needs on alternate steps: the third
    runs as soon as it can, instead of the spinners alternating for ever."""
    fair = Fairness(3)
    picks = []
    for step in range(20):
        third_can_run = step % 2 == 1                 # the lock is free every other step
        tids = [1, 2] + ([0] if third_can_run else [])
        prev = picks[-1] if picks else 1
        tid, _ = fair.pick(tids, prev if prev in tids else min(tids))
        picks.append(tid)
        if tid == 0:
            break
    assert picks[-1] == 0 and len(picks) < 10


def test_exhaustive_finishes_a_small_scenario_at_bound_2():
    """Item 2's done-when: a small scenario is explored completely at preemption bound 2 and
    the run says so (fork-after-pin: 575 schedules with the sleep sets); its negative twin,
    the pinned driver that drops its pin early, is caught by the same search."""
    full = explore("fork-after-pin", drivers.PINNED, "modern", strategy="exhaustive", bound=2,
                   schedules=5000, stop_at_first=False)
    assert full.complete and full.bound == 2 and full.ok, full
    assert full.schedules_run < 5000 and full.pruned > 0
    assert verdict({"schedules_run": full.schedules_run, "violations": [],
                    "complete": full.complete, "bound": full.bound,
                    "mix": {"exhaustive": full.schedules_run}}) == \
        f"clean: exhaustive to preemption bound 2 ({full.schedules_run} schedules, complete)"
    bad = explore("fork-after-pin", drivers.BUGGY["pinned_early_put"], "modern",
                  strategy="exhaustive", bound=2, schedules=5000)
    assert bad.findings and bad.findings[0].kind in drivers.BUGGY["pinned_early_put"].expected
