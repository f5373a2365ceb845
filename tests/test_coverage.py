"""Interleaving coverage (smmu.explore.coverage): a clean verdict says which interleavings of
notifier hooks and device fault steps its schedules tried, and shows the ones none did."""

import json

import drivers

from smmu import cli
from smmu.explore import Replay, explore, make_strategy_schedule, run_once
from smmu.explore.coverage import Coverage


def test_random_schedules_put_faults_and_windows_across_each_other():
    cov = Coverage()
    for seed in range(20):
        run_once("cow-after-fork", drivers.KVM, "modern", make_strategy_schedule("random", seed),
                 seed, observers=[cov])
    t = cov.table()
    assert t["hooks"]["invalidate_range_start/end"]["runs"] == 20
    assert 0 < t["hooks"]["invalidate_range_start/end"]["interleaved"] <= 20
    assert 0 < t["faults"]["GUP"]["interleaved"] <= t["faults"]["GUP"]["runs"]


def test_a_schedule_that_never_interleaves_shows_the_gap():
    """The device runs its faults only after the CPU is done (no preemption, the CPU
    first): every row is there, none interleaved."""
    cov = Coverage()
    run_once("reclaim-while-device-reads", drivers.KVM, "modern",
             Replay([], fallback="continue"), 0, observers=[cov])
    t = cov.table()
    assert t["hooks"] and t["faults"]
    assert all(d["interleaved"] == 0 for d in t["hooks"].values())
    assert all(d["interleaved"] == 0 for d in t["faults"].values())
    assert "gaps" in repr(cov)


def test_walking_and_interval_drivers_have_their_own_rows():
    ex = explore("reclaim-while-device-reads", drivers.GRU, "modern", schedules=30)
    assert "lockless walk" in ex.coverage.table()["faults"]
    ex = explore("reclaim-while-device-reads", drivers.HMM_MIRROR, "modern", schedules=30)
    t = ex.coverage.table()
    assert "interval invalidate" in t["hooks"] and "hmm_range_fault" in t["faults"]


def test_merge_and_round_trip():
    a = Coverage()
    a.hooks["invalidate_page"] = [3, 1]
    b = Coverage.from_table(a.table()).merge(a)
    assert b.table()["hooks"]["invalidate_page"] == {"runs": 6, "interleaved": 2}


def test_check_prints_and_writes_its_coverage(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert cli.main(["check", "kvm", "--scenario", "cow-after-fork", "--api", "modern",
                     "--schedules", "30", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "interleavings covered" in text and "snapshot by GUP" in text
    assert "cow-after-fork [modern]: clean under 30 schedules (" in text
    doc = json.loads(out.read_text())
    assert doc["coverage"]["faults"]["GUP"]["runs"] > 0
    row = doc["runs"][0]
    assert row["mix"] and row["bound"] == 2 and row["complete"] is False
    assert row["coverage"]["hooks"]["invalidate_range_start/end"]["runs"] == 30
