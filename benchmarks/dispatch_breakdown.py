"""Where the ns of one start/end pair through the notifier core go (bench_runtime.py's
dispatch: one plain subscription, no observer, the walks inline in
``mmu_notifier_invalidate_range_start`` / ``_end``).

Each variant is a copy of the two entry points with one part taken out (the counters, the
clock charge, the SRCU read-side section, the checks...), run in the same process,
interleaved with the real ones, so that "full - variant" is what that part costs a pair.
The parts overlap a little (taking one out changes how the interpreter runs the rest), so
the column does not add up exactly. ``floor`` is bench_runtime's stand-in chain (the hook
calls, the MM's yields and the scheduler's step at the preemption point, nothing else);
``deferred_counters`` replaces the five dict counters of a pair by one attribute
increment per walk (what counting on the chain and folding into ``sched.stats`` /
``hook_calls`` when they are read would cost: not done, they are public dicts).

A variant whose text is no longer in the entry points' source stops the script with the
text to update. Usage: python benchmarks/dispatch_breakdown.py [--json FILE] [--rounds N]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[0]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_runtime as br  # noqa: E402

from smmu.notifier import NotifierSubscriptions, chain  # noqa: E402

ENTRIES = ("mmu_notifier_invalidate_range_start", "mmu_notifier_invalidate_range_end")
PASS = "pass\n"
#: variant -> [(text in the entry points, what it becomes)]
VARIANTS = {
    "full": [],
    "-stats[range_start]": [('stats["range_start"] += 1\n', PASS)],
    "-stats[notifier_call]": [('sched.stats["notifier_call"] += 1\n', PASS),
                              ('stats["notifier_call"] += 1\n', PASS)],
    "-hook_calls": [('sched.hook_calls["invalidate_range_start"] += 1\n', PASS),
                    ('sched.hook_calls["invalidate_range_end"] += 1\n', PASS)],
    "-clock": [("task.clock += plan[3]", "pass")],
    "-srcu_section": [("srcu = self.srcu", "pass"),
                      ("if srcu.lazy is None and not srcu.waiting:", "if True:"),
                      ("srcu.lazy = task", "pass"), ("if srcu.lazy is task:", "if True:"),
                      ("srcu.lazy = None", "pass")],
    "-observer_check": [("if plan[0] is not sched.observer:", "if False:")],
    "-guard": [("if fn is None or task is None or not rng.blockable \\\n"
                "            or sched.schedule.cost_factor is not None:", "if False:")],
    "-generator_check": [("if type(r) is _GENERATOR:", "if False:"),
                         ("if r is not None and type(r) is _GENERATOR:", "if False:")],
    "deferred_counters": [('sched.stats["notifier_call"] += 1\n', PASS),
                          ('stats["notifier_call"] += 1\n', PASS),
                          ('stats["range_start"] += 1\n', "self._n_walks += 1\n"),
                          ('sched.hook_calls["invalidate_range_start"] += 1\n', PASS),
                          ('sched.hook_calls["invalidate_range_end"] += 1\n',
                           "self._n_walks += 1\n")],
}


def _sources() -> dict:
    out = {}
    for name in ENTRIES:
        src = textwrap.dedent(inspect.getsource(getattr(NotifierSubscriptions, name)))
        out[name] = re.sub(r' *"""[\s\S]*?"""\n', "", src, count=1)   # the docstring
    return out


def _variant_class(edits, sources):
    glob = dict(vars(chain))
    methods = {}
    for name, src in sources.items():
        for old, new in edits:
            src = src.replace(old, new)
        exec(src, glob)  # noqa: S102 - a benchmark's own copy of two methods
        methods[name] = glob[name]
    return type("Variant", (NotifierSubscriptions,), methods)


def _run_of(cls, n):
    s, subs, drv, r = br._core(cls=cls)
    subs._make_plan()               # (the -observer_check variant never makes it)
    subs._n_walks = 0

    def run():
        s.spawn("cpu0", br._pairs(subs, r, n))
        s.run()
    return run


def breakdown(n: int = 20_000, rounds: int = 11) -> dict:
    sources = _sources()
    every = "\n".join(sources.values())
    for name, edits in VARIANTS.items():
        for old, _new in edits:
            if old not in every:
                sys.exit(f"dispatch_breakdown: variant {name!r}: {old!r} is no longer in "
                         "the entry points of smmu/notifier/chain.py: update VARIANTS")
    fns = {name: _run_of(_variant_class(edits, sources), n) for name, edits in VARIANTS.items()}
    fs, _, fdrv, fr = br._core()
    floor = br._Floor(fdrv)

    def floor_run():
        fs.spawn("cpu0", br._pairs(floor, fr, n))
        fs.run()

    fns["floor"] = floor_run
    _, _, drv, r = br._core()

    def direct():
        for _ in range(n):
            drv.invalidate_range_start(r)
            drv.invalidate_range_end(r)

    fns["direct"] = direct
    best = br.interleaved(fns, rounds)
    ns = {k: t / n * 1e9 for k, (t, _) in best.items()}
    full = ns["full"]
    return {"pairs": n, "rounds": rounds, "load_average": list(os.getloadavg()),
            "ns_per_pair": ns, "full_minus_variant_ns": {k: full - v for k, v in ns.items()},
            "ratio_to_direct": {k: v / ns["direct"] for k, v in ns.items()}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default="bench-results/dispatch_breakdown.json")
    ap.add_argument("--rounds", type=int, default=11)
    args = ap.parse_args(argv)
    out = breakdown(rounds=args.rounds)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    for k, v in out["ns_per_pair"].items():
        print(f"{k:24s} {v:7.0f} ns a pair  {out['ratio_to_direct'][k]:5.1f}x direct  "
              f"(full - this: {out['full_minus_variant_ns'][k]:5.0f})")
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
