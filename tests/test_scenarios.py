"""The scenario catalogue: every scenario the issue names is registered, well formed, applies
to the right drivers, builds and runs to its closing reads with a reference driver."""

import drivers
import pytest

from smmu import scenarios
from smmu.explore import SCENARIOS, run_once
from smmu.notifier import API_GENERATIONS

REQUIRED = ["cow-after-fork", "reclaim-while-device-reads", "writeback-device-writes",
            "migration", "ksm-merge", "munmap-during-device-fault", "mprotect-downgrade",
            "mremap", "truncate", "exit-while-device-active", "oom-reap", "fork-after-pin",
            "overlapping-invalidations", "attach-detach-during-invalidation", "load-small",
            "load"]
HISTORICAL = ["fork-enomem-unpaired", "invalidate-page-under-ptl", "fork-pin-cow",
              "nonblock-start-end", "apic-page-remap", "writeback-device-write"]


def test_every_required_scenario_is_registered_and_documented():
    for name in REQUIRED:
        sc = SCENARIOS[name]
        assert sc.description.strip(), name
        assert set(sc.apis) <= set(API_GENERATIONS) and sc.apis
        assert callable(sc.applies) and callable(sc.build)
    assert SCENARIOS["oom-reap"].apis == ("modern",)
    assert "load" in SCENARIOS["load"].tags


def test_historical_pairs():
    assert set(HISTORICAL) <= set(scenarios.HISTORICAL)
    assert len(scenarios.HISTORICAL) >= 18                 # issue 10: eighteen or more
    for name in scenarios.HISTORICAL:
        h = scenarios.HISTORICAL[name]
        assert h.commit and h.year >= 2008
        broken, fixed = SCENARIOS[name], SCENARIOS[name + "-fixed"]
        assert h.apis[0] in broken.apis and h.apis[1] in fixed.apis
        assert "historical" in broken.tags and "fixed" in fixed.tags
        assert h.expected and h.ref
        # the pair differs in configuration or in the driver it is run with
        assert broken.sim_options != fixed.sim_options or h.driver != h.fixed_driver or \
            broken.build is not fixed.build


def test_default_set_leaves_out_slow_and_broken_historical():
    names = scenarios.default_names()
    assert "load" not in names and "load-small" in names
    assert "fork-pin-cow" not in names and "fork-pin-cow-fixed" in names
    assert set(REQUIRED) - {"load"} <= set(names)


def test_applies_follows_the_driver_kind():
    assert not scenarios.has_notifier(drivers.PINNED)
    for cls in (drivers.KVM, drivers.GRU, drivers.XPMEM, drivers.IOMMU_SVA,
                drivers.HMM_MIRROR):
        assert scenarios.has_notifier(cls), cls
    pin_ok = [n for n in scenarios.default_names() if SCENARIOS[n].applies(drivers.PINNED)]
    assert "fork-after-pin" in pin_ok and "mprotect-downgrade" not in pin_ok
    assert all(SCENARIOS[n].applies(drivers.KVM) for n in REQUIRED)


@pytest.mark.parametrize("name", [n for n in REQUIRED if n != "load"])
def test_scenario_runs_clean_to_its_closing_reads_with_a_reference_driver(name):
    sc = SCENARIOS[name]
    api = sc.apis[-1]
    cls = next(c for c in (drivers.KVM, drivers.HMM_MIRROR, drivers.PINNED)
               if sc.applies(c) and api in c.apis)
    r = run_once(sc, cls, api, "round_robin", 0, stop_on_violation=False)
    assert r.violations == [], (name, r.violations)
    assert "check" in r.results, f"{name}: the closing reads never ran ({r.errors})"
    unexpected = {t: e for t, e in r.errors.items() if t == "check"}
    assert not unexpected


def test_same_seed_same_run():
    a = run_once("load-small", drivers.KVM, "modern", "random", 5)
    b = run_once("load-small", drivers.KVM, "modern", "random", 5)
    c = run_once("load-small", drivers.KVM, "modern", "random", 6)
    assert a.schedule == b.schedule and a.steps == b.steps
    assert a.schedule != c.schedule
