"""Cost model vs this machine: the host kernel's wake-up, lock hand-off, context switch and TLB
shootdown measured by benchmarks/ccosts.c, beside the entries of smmu.COSTS they stand for.

The emulator's simulated time is the sum of COSTS entries (smmu/runtime/costs.py); this puts
each measured number next to the entry, with the ratio, so a reader can see how far the model
is from the machine the study ran on (the entries are fixed constants: a run on another
machine reports its own measurements here, it does not change the model).

    python benchmarks/bench_costs.py [--json FILE] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cprog import run_c  # noqa: E402
from smmu.runtime.costs import COSTS, cost_table  # noqa: E402

#: ccosts.c figure -> the COSTS entry it measures
MEASURES = {"wakeup_ns": "wakeup", "handoff_ns": "lock_handoff", "switch_ns": "context_switch",
            "shootdown_ns": "tlb_shootdown", "lock_ns": "lock"}


def run(rounds: int = 9) -> dict:
    host = run_c("ccosts.c", (rounds,), flags=("-O2", "-pthread"))
    rows = []
    for figure, kind in MEASURES.items():
        measured = host.get(figure)
        model = COSTS[kind][0]
        rows.append({"cost": kind, "model_ns": model, "measured_ns": measured,
                     "model_over_measured": round(model / measured, 3) if measured else None})
    return {"benchmark": "costs", "machine": {"python": platform.python_version(),
                                              "platform": platform.platform()},
            "host": host, "rows": rows, "costs": cost_table()}


def render(doc, console) -> None:
    from rich.table import Table
    t = Table(title="smmu cost model vs this machine (benchmarks/ccosts.c)")
    for c in ("cost", "model ns", "measured ns", "model/measured"):
        t.add_column(c, justify="left" if c == "cost" else "right")
    for r in doc["rows"]:
        m = r["measured_ns"]
        t.add_row(r["cost"], f"{r['model_ns']:.0f}", "-" if m is None else f"{m:.0f}",
                  "-" if r["model_over_measured"] is None else f"{r['model_over_measured']:.2f}")
    console.print(t)
    if "error" in doc["host"]:
        console.print(f"host measurements unavailable: {doc['host']['error']}", markup=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--rounds", type=int, default=9)
    a = ap.parse_args(argv)
    doc = run(a.rounds)
    from rich.console import Console
    render(doc, Console())
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
