"""The load scenarios (smmu.scenarios.load): CPUs, devices and invalidations colliding on a hot
set over a background, sampled at random by the default search. The whole catalogue within
5 schedules is measured by ``benchmarks/bench_checker.py --load`` (too slow for CI); here a
few broken drivers it must catch, the reference ones it must not flag, and the scaling
shapes."""

from __future__ import annotations

from dataclasses import replace

import pytest

import drivers
from drivers.buggy import BUGGY
from smmu.base.errors import UsageError
from drivers.kvm_gpc import KVM_GPC
from smmu.explore import explore, make_strategy_schedule, run_once
from smmu.explore.loader import load_driver
from smmu.scenarios import SCENARIOS, Scenario
from smmu.scenarios.load import (LOAD, LOAD_PORTFOLIO, LOAD_SMALL, SCALING, LoadShape,
                                 load_builder)

#: the issue's goal for the load scenario: every catalogue driver within this many schedules
LOAD_GOAL = 5


@pytest.mark.parametrize("name,api", [("kvm_no_seq", "modern"),
                                      ("gru_no_range_active", "modern"),
                                      ("kvm_cow_writable", "range_only"),
                                      # the collisions the load makes on purpose: memslot
                                      # updates across a zap, the gfn=>pfn cache refreshed
                                      # while its page migrates again and again
                                      ("kvm_memslot_update_in_window", "modern"),
                                      ("kvm_gpc_speculative_valid", "modern"),
                                      # a snapshot inside the window of a churned page,
                                      # the .rst COW timeline, the gather batch's rings
                                      ("kvm_seq_in_start", "modern"),
                                      ("sva_flush_in_end", "modern"),
                                      ("xpmem_no_pin", "range_only")])
def test_load_catches_broken_drivers_within_five_schedules(name, api):
    cls = BUGGY[name]
    ex = explore("load", cls, api, schedules=LOAD_GOAL, seed=0, stop_at_first=False)
    kinds = {f.kind for f in ex.findings}
    assert kinds & set(cls.expected), (name, api, kinds, ex)
    assert kinds <= set(cls.expected), f"{name}: reported outside its expected kinds: {kinds}"


@pytest.mark.parametrize("driver,api", [("kvm", "modern"), ("gru", "v2008"),
                                        ("kvm", "range_only"), ("iommu_sva", "modern")])
def test_reference_drivers_clean_under_load(driver, api):
    """The negative twins: the same schedules with the reference drivers find nothing.
    (XPMEM and HMM_MIRROR declare the load a known window: XPMEM's end-only COW window,
    .rst case B; dmirror's map of migrated pages with no sequence check.)"""
    ex = explore("load", drivers.BUILTIN[driver], api, schedules=3, seed=0,
                 stop_at_first=False)
    assert ex.ok, [(f.kind, f.violation.message) for f in ex.findings]


@pytest.mark.parametrize("spec", ["drivers.kvm_gpc:KVM_GPC",
                                  "drivers.kvm_memslots:KVM_MEMSLOTS"])
def test_fixed_kvm_halves_clean_under_load(spec):
    """The negative twins of the two KVM collisions above: 5.19's cache refresh and
    5.15's blocked memslot updates, under the same schedules."""
    ex = explore("load", load_driver(spec), "modern", schedules=3, seed=0,
                 stop_at_first=False)
    assert ex.ok, [(f.kind, f.violation.message) for f in ex.findings]


def test_gpc_refresh_across_release_publishes_nothing():
    """A refresh of KVM's gfn=>pfn cache in flight while the VM's mm is released (the
    load's job exits while its vCPUs read through the cache) must not publish the pfn it
    resolved before: the model's vCPU outlives the mm, so the refresh checks ``dead`` under
    ``gpc->lock`` as the SPTE fault does under ``mmu_lock`` (was a StaleMapping and a
    Deadlock on the gpc lock at this seed)."""
    r = run_once("load-small", KVM_GPC, "modern", make_strategy_schedule("random", 7), 7,
                 stop_on_violation=False)
    assert r.ok, [(v.kind, v.message) for v in r.violations]


def test_declared_load_windows_are_what_the_load_reports():
    """What a reference driver's declared load window costs is what the load finds, and
    nothing else: dmirror's unchecked map of migrated pages is MapInWindow, its map of a
    device page a peer's fault is moving back (the owner skip) a UseAfterFree."""
    for cls, kinds in ((drivers.HMM_MIRROR, {"MapInWindow", "StaleMapping", "UseAfterFree"}),
                       (drivers.XPMEM, {"StaleRead"})):
        assert "load" in cls.known_windows and "load-small" in cls.known_windows
        for api in cls.apis:
            ex = explore("load", cls, api, schedules=3, seed=0, stop_at_first=False)
            assert {f.kind for f in ex.findings} <= kinds, (cls.name, api, ex.findings)


def test_default_search_samples_load_at_random():
    """A load run is too large for the bounded-exhaustive and window-directed parts of the
    default mix: its scenarios declare a random-only portfolio, which the verdict reports."""
    assert SCENARIOS["load"].portfolio == LOAD_PORTFOLIO
    ex = explore("load", drivers.KVM, "modern", schedules=2, seed=0)
    assert ex.mix == {"random": 2} and ex.bound is None and not ex.complete
    small = explore("rst-cow-timeline", drivers.KVM, "modern", schedules=4, seed=0)
    assert set(small.mix) != {"random"}            # the others keep the default mix


def test_unknown_portfolio_part_is_a_usage_error():
    sc = Scenario(name="portfolio-typo", build=SCENARIOS["load-small"].build,
                  portfolio=(("randm", 1.0),))
    with pytest.raises(UsageError, match="unknown portfolio part 'randm'"):
        explore(sc, drivers.KVM, "modern", schedules=1)


def test_scaling_shapes_share_the_load_mix():
    """load-<N> for the scaling curve: the shape of ``load`` over N background pages, with
    frames enough for N; the hot set and the number of tasks do not grow with N, so the
    steps of a schedule barely do."""
    for n in SCALING:
        name = "load" if n == LOAD.npages else f"load-{n}"
        assert name in SCENARIOS and "load" in SCENARIOS[name].tags
        assert SCENARIOS[name].sim_options["nframes"] > n
    small = run_once("load-256", drivers.KVM, "modern", make_strategy_schedule("random", 1), 1)
    big = run_once("load-65536", drivers.KVM, "modern", make_strategy_schedule("random", 1), 1)
    assert small.ok and big.ok
    assert big.steps < 2 * small.steps, (small.steps, big.steps)


def test_load_builder_is_deterministic_in_the_seed():
    build = load_builder(LoadShape(cpus=2, devices=1, npages=64, ops_per_cpu=4,
                                   accesses_per_device=8, thp=False, job=False), 5)
    sc = Scenario(name="load-tiny", build=build, applies=lambda cls: True)
    runs = [run_once(sc, drivers.KVM, "modern", make_strategy_schedule("random", s), s)
            for s in (3, 3, 4)]
    assert runs[0].schedule == runs[1].schedule
    assert runs[0].schedule != runs[2].schedule


def test_lean_load_keeps_its_motifs_in_fewer_steps():
    """``load`` is the lean shape (one fork a run, the COW motif's; devices that stop once
    the CPUs are done): every motif still runs (the gather batch freed inside the window,
    the huge page's collapse and whole migration, the job's churn), in fewer steps than the
    same seed over the first shape."""
    assert LOAD.lean and not LOAD_SMALL.lean
    full = Scenario(name="load-full", build=load_builder(replace(LOAD, lean=False, job_peers=3,
                                                                 accesses_per_device=32), 2),
                    sim_options=SCENARIOS["load"].sim_options)
    for seed in (1, 2):
        r = run_once("load", drivers.KVM, "modern", make_strategy_schedule("random", seed),
                     seed)
        assert r.ok, [(v.kind, v.message) for v in r.violations]
        s = r.stats
        assert s["fork"] == 1 and s["gather_flush"] >= 1 and s["thp_collapse_alloc"] == 1
        assert s["thp_migration_success"] == 1 and s["migrated"] >= 512 + 6
        old = run_once(full, drivers.KVM, "modern", make_strategy_schedule("random", seed),
                       seed)
        assert old.ok and old.stats["fork"] >= 1 and r.steps < old.steps, (r.steps, old.steps)
