"""invalidate-page-vs-range: the same workloads under the three notifier generations.

The question from the 2008 thread: is ``invalidate_page`` (one call, under the PT lock, no
window) worth keeping, or should every invalidation be a ``invalidate_range_start/end`` pair
(twice the calls on single-page paths such as ``do_wp_page``, and device faults masked while
the range is open)? Workloads, each with KVM and GRU attached and a device reading the pages
while the CPU works:

* ``cow``: fork, then the parent writes every page (a COW fault per page);
* ``reclaim``: reclaim every page (``page_referenced`` + ``try_to_unmap`` per page);
* ``mkclean``: writeback of a dirty shared file mapping (``page_mkclean`` per page).

Reported per (workload, driver, api): notifier hook calls per operation (by hook), simulated
time of the run under the ``timed`` schedule with the cost model (:data:`smmu.COSTS`),
fault-masking time (simulated ns during which an invalidation window was open on the mm:
``invalidate_range_start`` begun to ``invalidate_range_end`` returned, summed over ranges; a
device fault on the range waits or retries during it; ``invalidate_page`` has none), device
fault retries, and wall time.

    python benchmarks/bench_notifier_api.py [--json FILE] [--quick]
    smmu bench invalidate-page-vs-range [--json FILE] [--plot FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

APIS = ("v2008", "range_only", "modern")
DRIVERS = ("kvm", "gru")
WORKLOADS = ("cow", "reclaim", "mkclean")


def _device(drv, vas, rounds):
    from smmu.base.errors import SmmuError
    for _ in range(rounds):
        for va in vas:
            try:
                yield from drv.access(va, write=False)
            except SmmuError:
                pass


def _build(workload, api, driver_cls, npages):
    from smmu.base.constants import PAGE_SIZE
    from smmu.sim import Simulator
    sim = Simulator(notifier_api=api, schedule="timed", seed=0, trace=True,
                    nframes=max(4096, 8 * npages))
    mm = sim.new_process("bench")
    if workload == "mkclean":
        f = sim.new_file("bench", npages, fill=lambda i: i)
        buf = sim.do(mm.mmap(npages * PAGE_SIZE, prot="rw", shared=True, file=f))
    else:
        f = None
        buf = sim.do(mm.mmap(npages * PAGE_SIZE, prot="rw"))
    vas = [buf + i * PAGE_SIZE for i in range(npages)]
    for i, va in enumerate(vas):
        sim.do(mm.write(va, i + 1))
    drv = sim.attach(driver_cls, mm)
    for va in vas:              # the device has everything mapped before the workload
        sim.do(drv.access(va, write=False))
    base_hooks = dict(sim.hook_calls)
    base_trace = len(sim.trace)

    def cpu():
        if workload == "cow":
            yield from mm.fork()
            for i, va in enumerate(vas):
                yield from mm.write(va, 10_000 + i)
        elif workload == "reclaim":
            yield from sim.reclaim(mm, buf, npages * PAGE_SIZE, force=True)
        else:
            yield from sim.writeback(f)

    sim.spawn("cpu0", cpu())
    sim.spawn("dev0", _device(drv, vas, 2))
    return sim, base_hooks, base_trace


def masking_ns(trace, start_at=0) -> float:
    """Simulated ns during which some ``invalidate_range_start``..``_end`` window was open,
    from a runtime trace: per task, from the B of a ``*.invalidate_range_start`` to the E
    of the matching ``*.invalidate_range_end`` (the first subscriber's start to the last
    subscriber's end), summed."""
    open_at = {}
    total = 0.0
    for ph, name, tid, _tn, t, _step, _args in trace[start_at:]:
        if name.endswith(".invalidate_range_start") and ph == "B":
            open_at.setdefault(tid, t)
        elif name.endswith(".invalidate_range_end") and ph == "E" and tid in open_at:
            total += t - open_at.pop(tid)
    return total


def measure(workload, api, driver, npages=64) -> dict:
    import drivers
    cls = drivers.BUILTIN[driver]
    sim, base_hooks, base_trace = _build(workload, api, cls, npages)
    t0 = time.perf_counter()
    res = sim.run()
    wall = time.perf_counter() - t0
    hooks = {k: v - base_hooks.get(k, 0) for k, v in res.stats["hooks"].items()
             if v - base_hooks.get(k, 0)}
    calls = sum(hooks.values())
    return {"workload": workload, "api": api, "driver": driver, "operations": npages,
            "hook_calls": calls, "hook_calls_per_op": round(calls / npages, 3),
            "hooks": hooks, "simulated_ns": round(res.time_ns, 1),
            "fault_masking_ns": round(masking_ns(res.trace, base_trace), 1),
            "fault_retries": int(res.stats.get(f"{driver}_fault_retry", 0)
                                 + res.stats.get("gru_dropin_wait", 0)),
            "violations": res.kinds(), "wall_s": round(wall, 4)}


def run(quick: bool = False) -> dict:
    npages = 16 if quick else 64
    rows = [measure(w, a, d, npages) for w in WORKLOADS for d in DRIVERS for a in APIS]
    return {"benchmark": "invalidate-page-vs-range", "pages": npages, "rows": rows,
            "note": "hook calls, simulated time (timed schedule, smmu.COSTS) and fault "
                    "masking per workload; v2008 uses invalidate_page on single-page paths"}


def render(doc, console) -> None:
    from rich.table import Table
    t = Table(title=f"invalidate_page vs range-only ({doc['pages']} pages per workload)")
    for c in ("workload", "driver", "api", "hooks/op", "simulated us", "masking us",
              "retries", "wall ms", "violations"):
        t.add_column(c, justify="left" if c in ("workload", "driver", "api", "violations")
                     else "right")
    for r in doc["rows"]:
        t.add_row(r["workload"], r["driver"], r["api"], f"{r['hook_calls_per_op']:.2f}",
                  f"{r['simulated_ns'] / 1000:.1f}", f"{r['fault_masking_ns'] / 1000:.1f}",
                  str(r["fault_retries"]), f"{r['wall_s'] * 1000:.1f}",
                  ", ".join(r["violations"]) or "-")
    console.print(t)


def plot(doc, path) -> None:
    """Bar charts of hook calls per operation and fault-masking time (matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = doc["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    labels = [f"{w}/{d}" for w in WORKLOADS for d in DRIVERS]
    width = 0.27
    for k, (key, title) in enumerate((("hook_calls_per_op", "hook calls per operation"),
                                      ("fault_masking_ns", "fault-masking time (ns)"))):
        ax = axes[k]
        for j, a in enumerate(APIS):
            vals = [next(r[key] for r in rows if r["workload"] == w and r["driver"] == d
                         and r["api"] == a) for w in WORKLOADS for d in DRIVERS]
            ax.bar([i + (j - 1) * width for i in range(len(labels))], vals, width, label=a)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=30)
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    doc = run(quick=a.quick)
    from rich.console import Console
    render(doc, Console())
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    from smmu.cli import configure_logging  # a script, like the CLI: it configures logging
    configure_logging()
    sys.exit(main())
