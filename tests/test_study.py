"""The invalidate_page study: what must hold by construction (one hook per single-page COW in
v2008, two in range_only, fork's pair apart; equal work across modes; cells with different
work refused), how windows are measured, and the quick study end to end."""

import json

import pytest

import drivers
from smmu import PAGE_SIZE, Simulator
from smmu.cli import main as smmu_main
from smmu.runtime.costs import COSTS
from smmu.study.observe import StudyObserver
from smmu.study.render import text
from smmu.study.study import CLAIMS, cells_of, run_study, work_difference
from smmu.study.workloads import MODES, WORKLOADS, Config, run


def _fork_and_cow(api, npages=4, driver_names=("kvm",)):
    sim = Simulator(notifier_api=api, schedule="timed")
    mm = sim.new_process()
    buf = sim.do(mm.mmap(npages * PAGE_SIZE, prot="rw"))
    vas = [buf + i * PAGE_SIZE for i in range(npages)]
    for va in vas:
        sim.do(mm.write(va, 1))
    for name in driver_names:
        sim.attach(drivers.BUILTIN[name], mm)
    obs = StudyObserver(sim).install()          # before the fork: its pair is counted too

    def cpu():
        yield from mm.fork()
        for va in vas:
            yield from mm.write(va, 2)          # one COW fault each

    sim.spawn("cpu0", cpu())
    assert sim.run().ok
    return obs


@pytest.mark.parametrize("ndrivers", [1, 2])
def test_one_hook_per_single_page_cow_in_v2008_and_two_in_range_only(ndrivers):
    names = ("kvm", "gru")[:ndrivers]
    v08 = _fork_and_cow("v2008", 4, names)
    rng = _fork_and_cow("range_only", 4, names)
    # the VM: one invalidate_page per COW against a start and an end
    assert v08.vm_calls_at("do_wp_page") == 4
    assert rng.vm_calls_at("do_wp_page") == 8
    # each driver: one callback per COW against two
    for name in names:
        assert v08.hooks_at("do_wp_page", driver=name) == 4
        assert v08.hooks_at("do_wp_page", "invalidate_page", name) == 4
        assert rng.hooks_at("do_wp_page", "invalidate_range_start", name) == 4
        assert rng.hooks_at("do_wp_page", "invalidate_range_end", name) == 4
    # fork's own pair is its own call site, in both modes, and not a COW's
    for obs in (v08, rng):
        assert obs.vm_calls_at("copy_page_range") == 2
        assert obs.hooks_at("copy_page_range") == 2 * ndrivers


def test_windows_are_measured_from_pte_clear_in_v2008_and_from_start_in_range_only():
    v08 = _fork_and_cow("v2008", 3)
    rng = _fork_and_cow("range_only", 3)
    pages = [w for w in v08.windows if w[0] == "page" and w[2] == "do_wp_page"]
    ranges = [w for w in rng.windows if w[0] == "range" and w[2] == "do_wp_page"]
    assert len(pages) == 3 and len(ranges) == 3
    # v2008: from the clear, the local flush and KVM's invalidate_page call (mmu_lock)
    least = COSTS["tlb_flush_local"][0] + COSTS["notifier_call"][0] + COSTS["lock"][0]
    assert all(w[3] >= least for w in pages)
    # range_only adds the start hook before the PT lock: strictly longer, in ns and steps
    assert min(w[3] for w in ranges) > max(w[3] for w in pages)
    assert min(w[4] for w in ranges) > 0


def test_outside_ptl_ordering_opens_the_window_across_a_preemption_point():
    # reclaim's try_to_unmap_one: the only kind of single-page path 3.7..4.10 notified after
    # the PT lock (a COW was bracketed by start/end in that era, 6bdb913f0a70)
    cfg = dict(workload="reclaim", drivers=("kvm",), seed=0, npages=8)
    under = run(Config(mode="v2008", **cfg))
    outside = run(Config(mode="v2008-outside-ptl", **cfg))
    # the 3.7..4.10 order sets the new entry, unlocks and yields before invalidate_page
    assert outside["windows"]["page"]["steps"]["p50"] > under["windows"]["page"]["steps"]["p50"]


@pytest.mark.parametrize("workload", sorted(set(WORKLOADS) - {"strace"}))
def test_every_mode_does_the_same_work(workload):
    works = {}
    for mode in MODES:
        for seed in (0, 1):
            r = run(Config(workload, mode, ("kvm", "gru"), seed, npages=8,
                           threads=2 if workload == "cow-mt" else 1))
            assert not r["violations"], (workload, mode, r["violation_messages"])
            assert r["work"] and all(v > 0 for v in r["work"].values()), r["work"]
            works.setdefault(seed, {})[mode] = r["work"]
    for seed, by_mode in works.items():
        assert len({json.dumps(w, sort_keys=True) for w in by_mode.values()}) == 1, \
            (workload, seed, by_mode)


def _fake(mode, seed, work, ops=4):
    dist = {"n": 1, "p50": 1.0, "p99": 1.0, "mean": 1.0, "max": 1.0}
    return {"config": {"workload": "cow", "mode": mode, "drivers": ["kvm"], "seed": seed,
                       "threads": 1, "rmap_locks": "rwsem"},
            "work": work, "ops": ops, "latency_ns": dict(dist), "hooks": [], "vm_calls": [],
            "windows": {k: {"ns": dict(dist), "steps": dict(dist)}
                        for k in ("page", "range", "all")},
            "device_per_us": 1.0, "device_stall_frac": 0.0, "retries": {"wakeup": 0},
            "violations": [], "violation_messages": [], "wall_s": 0.0}


def test_cells_whose_work_differs_are_refused_with_the_reason():
    runs = [_fake("v2008", 0, {"reclaimed": 64}), _fake("range_only", 0, {"reclaimed": 63}),
            _fake("v2008", 1, {"reclaimed": 64}), _fake("range_only", 1, {"reclaimed": 64})]
    (cell,) = cells_of(runs)
    assert cell["refused"] and "seed 0" in cell["refused"] and "64 vs 63" in cell["refused"]
    assert cell["comparisons"] == {}
    # the twin: the same work everywhere is compared
    runs[1]["work"] = {"reclaimed": 64}
    (cell,) = cells_of(runs)
    assert cell["refused"] is None and "range_only" in cell["comparisons"]


def test_a_mode_with_violations_is_not_a_baseline():
    by_mode = {"v2008": [_fake("v2008", 0, {"x": 1})], "range_only": []}
    assert work_difference(by_mode) is None
    runs = [_fake("v2008", 0, {"x": 1}), _fake("range_only", 0, {"x": 1})]
    runs[0]["violations"] = ["SleepInAtomic"]
    (cell,) = cells_of(runs)
    assert "v2008" in cell["invalid_modes"] and cell["comparisons"] == {}


def test_rwsem_rmap_locks_slow_brk_down_against_a_walker_and_modes_agree():
    def thr(locks, mode="v2008"):
        r = run(Config("brk", mode, ("kvm",), 0, npages=16, rmap_locks=locks,
                       walker_gap_ns=5000.0))
        assert not r["violations"]
        return r, r["ops"] / r["span_ns"]

    (sp, t_sp), (rw, t_rw) = thr("spinlock"), thr("rwsem")
    assert t_rw < t_sp                          # sleeping waits and the hand-off cost
    assert rw["retries"]["wakeup"] > 0 and sp["retries"]["wakeup"] == 0
    assert rw["work"] == sp["work"]
    assert thr("rwsem", "range_only")[0]["latency_ns"] == rw["latency_ns"]   # brk: ranges


def test_quick_study_states_a_verdict_per_claim_in_80_columns():
    doc = run_study(quick=True, seeds=1)
    assert [c["id"] for c in doc["claims"]] == [c["id"] for c in CLAIMS]
    for c in doc["claims"]:
        assert c["verdict"] != "not measured" and len(c["text"]) > 80, c
    hooks = doc["claims"][0]
    assert hooks["verdict"] == "supported" and "exactly 0.50" in hooks["text"]
    out = text(doc)
    assert max(len(line) for line in out.splitlines()) <= 80
    assert set(doc) >= {"revision", "options", "costs", "runs", "cells", "sweeps", "brk",
                        "verdicts", "claims"}
    assert doc["costs"]["tlb_shootdown"]["ns"] == 15000.0
    json.dumps(doc)                              # the JSON holds it all
    locking = doc["claims"][2]
    assert "SleepInAtomic" in locking["text"]    # XPMEM under the PT lock


def test_bench_cli_quick_writes_json(tmp_path, capsys):
    out = tmp_path / "study.json"
    rc = smmu_main(["bench", "invalidate-page-vs-range", "--quick", "--seeds", "1",
                    "--json", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0 and "Conclusions" in printed
    doc = json.loads(out.read_text())
    assert doc["options"]["seeds"] == 1 and doc["runs"]


def test_bench_cli_usage_errors(capsys):
    assert smmu_main(["bench", "invalidate-page-vs-range", "--seeds", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
    assert smmu_main(["bench", "checker", "--seeds", "2"]) == 2
    assert "takes no --seeds" in capsys.readouterr().err


def test_plots_are_written(tmp_path):
    from smmu.study.plots import write_all
    doc = run_study(quick=True, seeds=1, verdicts=False)
    files = write_all(doc, tmp_path / "plots")
    assert set(files) == {"hooks", "window", "perf", "sweeps", "brk"}
    for f in files.values():
        data = open(f, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
