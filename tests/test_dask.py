"""A campaign in shards (smmu.explore.shards) and on a dask cluster (smmu check --workers N,
--scheduler ADDRESS): the merged results are the serial ones for the same seeds, a worker
that dies loses nothing, and a missing dask or an unreachable scheduler is a usage error."""

import json
import os
import sys

import pytest

from smmu.cli import main
from smmu.explore import Shard, explore
from smmu.explore.loader import load_driver
from smmu.explore.shards import InlineExecutor, PairCampaign, run_campaign, run_shard


def _same(ex) -> tuple:
    """Everything an exploration reports, findings as their JSON."""
    return (ex.schedules_run, dict(ex.mix), ex.coverage.table(), ex.complete, ex.bound,
            ex.pruned, [json.dumps(f.to_dict(), sort_keys=True, default=repr)
                        for f in ex.findings])


def _inline(pairs):
    ex = InlineExecutor()
    return run_campaign(pairs, ex.submit, ex.as_completed), ex


# ---------------------------------------------------------------- shards, no cluster
@pytest.mark.parametrize("spec,scenario,strategy,stop", [
    # three kinds, the last found by a random run of the sampled part (schedule 58)
    ("buggy.pinned_early_put", "fork-after-pin", "portfolio", False),
    # a clean driver: every shard runs, the coverage of all of them is merged
    ("kvm", "cow-after-fork", "portfolio", True),
])
def test_shards_merge_to_the_serial_exploration(spec, scenario, strategy, stop):
    cls = load_driver(spec)
    serial = explore(scenario, cls, "modern", strategy=strategy, schedules=60, seed=0,
                     stop_at_first=stop)
    pair = PairCampaign(0, scenario, cls, "modern", strategy=strategy, schedules=60, seed=0,
                        stop_at_first=stop, shard_size=7)
    [merged], ex = _inline([pair])
    assert ex.submitted > 4                     # a head and several sample shards
    assert _same(merged) == _same(serial)
    if not stop:
        assert len(serial.findings) == 3 and serial.findings[-1].strategy == "random"


def test_a_shard_started_from_a_wrong_pct_estimate_is_run_again():
    """PCT's steps estimate follows the longest run seen, so a sample shard started from the
    head's estimate is wrong once an earlier shard saw a longer run: it is detected and run
    again, and the merge is still the serial exploration."""
    cls = load_driver("buggy.kvm_no_seq")
    serial = explore("munmap-during-device-fault", cls, "modern", strategy="pct",
                     schedules=60, seed=0, stop_at_first=False)
    pair = PairCampaign(0, "munmap-during-device-fault", cls, "modern", strategy="pct",
                        schedules=60, seed=0, stop_at_first=False, shard_size=7)
    [merged], _ = _inline([pair])
    assert pair.reruns > 0
    assert _same(merged) == _same(serial) and serial.findings
    # the negative twin: a shard that had to run again, run from the head's estimate, is
    # not what the serial search ran
    head = run_shard(pair.task(part="head"))
    steps0 = head["resume"]["steps"]
    j = next(j for j, g in enumerate(pair.guess) if g != steps0)
    a, b = 7 * j, min(7 * j + 7, 60 - head["resume"]["index"])
    naive = run_shard(pair.task(part="sample", start=a, stop=b, steps=steps0, index=a))
    right = run_shard(pair.task(part="sample", start=a, stop=b, steps=pair.guess[j], index=a))
    assert right["resume"]["runs"] == pair.samples[j]["resume"]["runs"]
    assert [s for s, _ in naive["resume"]["runs"]] != [s for s, _ in right["resume"]["runs"]]


def test_progress_follows_the_merged_shards():
    """The progress callback (what moves smmu check's bar) hears of every merged shard, in
    order, and of the budget a pair that stopped early will not run: each pair's total is
    its --schedules."""
    pairs = [PairCampaign(0, "cow-after-fork", load_driver("kvm"), "modern", schedules=60,
                          shard_size=7),
             PairCampaign(1, "fork-after-pin", load_driver("buggy.pinned_early_put"),
                          "modern", schedules=60, shard_size=7)]
    heard = []
    ex = InlineExecutor()
    run_campaign(pairs, ex.submit, ex.as_completed,
                 progress=lambda pair, n: heard.append((pair.key, n)))
    assert sum(n for k, n in heard if k == 0) == 60 and len([k for k, _ in heard if k == 0]) > 4
    assert sum(n for k, n in heard if k == 1) == 60      # found at once: the rest skipped


def test_bad_shards_are_refused():
    from smmu.base.errors import UsageError
    with pytest.raises(UsageError, match="start < stop"):
        Shard(part="sample", start=5, stop=5)
    with pytest.raises(UsageError, match="head"):
        Shard(part="middle")
    with pytest.raises(UsageError, match="no sampled part"):
        explore("cow-after-fork", load_driver("kvm"), "modern", strategy="exhaustive",
                schedules=10, shard=Shard(part="sample", start=0, stop=3))


def test_missing_dask_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)      # import distributed fails
    assert main(["check", "kvm", "--scenario", "cow-after-fork", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'smmu[dask]'" in err and "Traceback" not in err


def test_workers_and_scheduler_exclude_each_other(capsys):
    assert main(["check", "kvm", "--workers", "2", "--scheduler", "tcp://x:1"]) == 2
    assert "not allowed with" in capsys.readouterr().err


# ---------------------------------------------------------------- on a dask cluster
try:
    import distributed
except ImportError:
    distributed = None
needs_dask = pytest.mark.skipif(distributed is None,
                                reason="dask.distributed is not installed (pip install "
                                "'smmu[dask]'; the dev extra has it)")


@needs_dask
def test_check_with_two_workers_gives_the_serial_findings(tmp_path, capsys):
    """smmu check --workers 2: the JSON findings and runs are the serial run's (the bug is
    found by the sampled part, after shards of it ran on both workers)."""
    args = ["check", "buggy.kvm_no_seq", "--scenario", "munmap-during-device-fault",
            "--schedules", "60"]
    assert main(args + ["--json", str(tmp_path / "serial.json")]) == 1
    assert main(args + ["--json", str(tmp_path / "dask.json"), "--workers", "2",
                        "--shard-size", "5"]) == 1
    serial = json.loads((tmp_path / "serial.json").read_text())
    dask = json.loads((tmp_path / "dask.json").read_text())
    assert serial["violations"] and dask["violations"] == serial["violations"]
    assert dask["runs"] == serial["runs"] and dask["coverage"] == serial["coverage"]
    assert all(r["mix"].get("random") for r in serial["runs"])   # found in the sampled part


def _dies_once(task, marker):
    """A shard runner whose worker process dies the first time it is given the shard that
    starts the sampled part at 14."""
    if task["shard"]["part"] == "sample" and task["shard"]["start"] == 14 \
            and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        os._exit(1)
    return run_shard(task)


@pytest.fixture(scope="module")
def scheduler():
    """The address of a running cluster of two worker processes (what --scheduler uses)."""
    import logging
    lc = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", silence_logs=logging.ERROR)
    yield lc.scheduler_address
    lc.close()


@needs_dask
def test_check_on_a_running_scheduler_gives_the_serial_report(scheduler, tmp_path):
    args = ["check", "kvm", "--scenario", "cow-after-fork", "--api", "modern",
            "--schedules", "30"]
    assert main(args + ["--json", str(tmp_path / "serial.json")]) == 0
    assert main(args + ["--json", str(tmp_path / "dask.json"), "--scheduler", scheduler,
                        "--shard-size", "4"]) == 0
    serial = json.loads((tmp_path / "serial.json").read_text())
    dask = json.loads((tmp_path / "dask.json").read_text())
    assert dask["runs"] == serial["runs"] and dask["coverage"] == serial["coverage"]
    assert serial["runs"][0]["mix"].get("random")       # sampled shards ran


@needs_dask
def test_a_worker_that_dies_loses_no_finding(scheduler, tmp_path):
    import functools

    import cloudpickle

    from smmu.explore.cluster import cluster, explore_on
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cls = load_driver("buggy.pinned_early_put")
    serial = explore("fork-after-pin", cls, "modern", schedules=60, seed=0,
                     stop_at_first=False)
    marker = tmp_path / "killed"
    pair = PairCampaign(0, "fork-after-pin", cls, "modern", schedules=60, seed=0,
                        stop_at_first=False, shard_size=7)
    with cluster(scheduler=scheduler) as client:
        [merged] = explore_on(client, [pair],
                              fn=functools.partial(_dies_once, marker=str(marker)))
    assert marker.exists()                      # a worker did die running a shard
    assert _same(merged) == _same(serial) and len(merged.findings) == 3


@needs_dask
def test_unreachable_scheduler_is_a_usage_error():
    from smmu.base.errors import UsageError
    from smmu.explore.cluster import cluster
    with pytest.raises(UsageError, match="cannot reach the dask scheduler"):
        with cluster(scheduler="tcp://127.0.0.1:9", timeout=1):
            pass
