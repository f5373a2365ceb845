"""A campaign in shards, in one process and on a dask cluster, against the serial campaign
measured in the same run: what sharding costs (the re-runs of sample shards that started
from a wrong PCT estimate, each shard's set-up) and what a cluster of N worker processes
gains. Every sharded result is compared with the serial one (the benchmark fails if any
differs).

    python benchmarks/bench_dask.py [--json FILE] [--quick] [--workers N] [--shard-size N]

Output JSON::

    {"driver", "api", "scenarios", "schedules", "shard_size", "workers",
     "serial_s", "serial_cpu_s", "inline_s", "inline_cpu_s", "inline_over_serial", "shards",
     "reruns", "load",
     "cluster_start_s", "cluster_s", "serial_over_cluster", "same": true}

``inline_over_serial`` is the sharding overhead in one process, in CPU time (1.0: none);
``serial_over_cluster`` the speed-up of the campaign on the cluster once it is up (about N
on N free cores; on a shared machine the ratio says what the machine had to spare).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _digest(ex) -> str:
    return json.dumps([ex.schedules_run, ex.mix, ex.coverage.table(), ex.complete,
                       [f.to_dict() for f in ex.findings]], sort_keys=True, default=repr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--quick", action="store_true", help="a small campaign")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=None)
    a = ap.parse_args(argv)

    from smmu.explore import explore
    from smmu.explore.loader import load_driver
    from smmu.explore.shards import SHARD_SIZE, InlineExecutor, PairCampaign, run_campaign
    from smmu.scenarios import SCENARIOS, default_names

    driver, api = "kvm", "modern"
    cls = load_driver(driver)
    names = [n for n in default_names() if SCENARIOS[n].applies(cls)
             and api in tuple(SCENARIOS[n].apis)][: 4 if a.quick else 12]
    schedules = 40 if a.quick else 200
    size = a.shard_size or SHARD_SIZE

    def campaign():
        return [PairCampaign(i, n, cls, api, schedules=schedules, shard_size=size)
                for i, n in enumerate(names)]

    for n in names:                  # warm up: every scenario's kernels compiled or loaded
        explore(n, cls, api, schedules=2)
    t, c = time.perf_counter(), time.process_time()
    serial = [_digest(explore(n, cls, api, schedules=schedules)) for n in names]
    serial_s, serial_cpu = time.perf_counter() - t, time.process_time() - c

    pairs = campaign()
    ex = InlineExecutor()
    t, c = time.perf_counter(), time.process_time()
    inline = [_digest(e) for e in run_campaign(pairs, ex.submit, ex.as_completed)]
    inline_s, inline_cpu = time.perf_counter() - t, time.process_time() - c
    doc = {"driver": driver, "api": api, "scenarios": names, "schedules": schedules,
           "shard_size": size, "workers": a.workers, "serial_s": round(serial_s, 3),
           "serial_cpu_s": round(serial_cpu, 3), "inline_s": round(inline_s, 3),
           "inline_cpu_s": round(inline_cpu, 3),
           "inline_over_serial": round(inline_cpu / serial_cpu, 3),
           "shards": ex.submitted, "reruns": sum(p.reruns for p in pairs)}
    same = inline == serial
    try:
        from smmu.explore.cluster import cluster, explore_on
        t = time.perf_counter()
        with cluster(workers=a.workers) as client:
            doc["cluster_start_s"] = round(time.perf_counter() - t, 3)
            # one small campaign first: each worker imports smmu and loads its kernels
            explore_on(client, [PairCampaign(0, names[0], cls, api, schedules=2)])
            t = time.perf_counter()
            dist = [_digest(e) for e in explore_on(client, campaign())]
            cluster_s = time.perf_counter() - t
        doc["cluster_s"] = round(cluster_s, 3)
        doc["serial_over_cluster"] = round(serial_s / cluster_s, 3)
        same = same and dist == serial
    except Exception as e:      # no dask: the one-process numbers still stand
        doc["cluster_error"] = f"{type(e).__name__}: {e}"
    doc["same"] = same
    doc["load"] = list(os.getloadavg())      # the machine is shared: what it had to spare
    print(json.dumps(doc, indent=2))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
