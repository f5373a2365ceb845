"""Runtime benchmark: scheduler steps/s and notifier dispatch cost, as ratios against bare
Python references measured in the same run.

* steps: N tasks that only ``yield``, run by ``Scheduler("round_robin")`` and by the
  smallest possible round-robin generator loop (goal: the scheduler at least half as fast);
  the random schedule is reported too.
* dispatch: one ``invalidate_range_start``/``end`` pair through ``NotifierSubscriptions``
  to one plain-method subscriber, against calling the same two methods directly.

Usage: python benchmarks/bench_runtime.py [--json FILE] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smmu.notifier import MMUNotifier, NotifierSubscriptions, Range  # noqa: E402
from smmu.runtime.costs import cost_table  # noqa: E402
from smmu.runtime.scheduler import Scheduler  # noqa: E402


def spinner(n):
    for _ in range(n):
        yield


def bare_round_robin(ntasks, per_task):
    """The reference: a deque-free list rotation over plain generators."""
    gens = [spinner(per_task) for _ in range(ntasks)]
    steps = 0
    while gens:
        alive = []
        for g in gens:
            try:
                next(g)
                steps += 1
                alive.append(g)
            except StopIteration:
                pass
        gens = alive
    return steps


def sched_run(schedule, ntasks, per_task):
    s = Scheduler(schedule, seed=1, max_steps=10**9, task_step_budget=10**9)
    for i in range(ntasks):
        s.spawn(f"t{i}", spinner(per_task))
    r = s.run()
    return r.steps


def best_of(fn, repeat=5):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


class Plain(MMUNotifier):
    def invalidate_range_start(self, r):
        return 0

    def invalidate_range_end(self, r):
        pass


class _MM:
    pass


def dispatch_bench(n):
    s = Scheduler()
    mm = _MM()
    subs = NotifierSubscriptions(s, mm, "modern")
    mm.notifier_subscriptions = subs
    drv = Plain(s, mm)
    s.do(subs.register(drv))
    r = Range(mm, 0, 0x1000)

    def through_core():
        def op():
            for _ in range(n):
                yield from subs.mmu_notifier_invalidate_range_start(r)
                yield from subs.mmu_notifier_invalidate_range_end(r)
        s.do(op())

    def direct():
        for _ in range(n):
            drv.invalidate_range_start(r)
            drv.invalidate_range_end(r)

    t_core, _ = best_of(through_core, 3)
    t_direct, _ = best_of(direct, 3)
    return {"pairs": n, "core_ns_per_pair": t_core / n * 1e9,
            "direct_ns_per_pair": t_direct / n * 1e9,
            "overhead_ratio": t_core / t_direct}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default="bench-results/runtime.json")
    ap.add_argument("--steps", type=int, default=200_000)
    args = ap.parse_args(argv)
    ntasks = 4
    per = args.steps // ntasks
    t_bare, n_bare = best_of(lambda: bare_round_robin(ntasks, per))
    t_rr, n_rr = best_of(lambda: sched_run("round_robin", ntasks, per))
    t_rand, n_rand = best_of(lambda: sched_run("random", ntasks, per))
    steps = {
        "bare_steps_per_s": n_bare / t_bare,
        "round_robin_steps_per_s": n_rr / t_rr,
        "random_steps_per_s": n_rand / t_rand,
    }
    steps["round_robin_vs_bare"] = steps["round_robin_steps_per_s"] / steps["bare_steps_per_s"]
    steps["random_vs_bare"] = steps["random_steps_per_s"] / steps["bare_steps_per_s"]
    steps["goal_half_of_bare_met"] = steps["round_robin_vs_bare"] >= 0.5
    disp = dispatch_bench(20_000)
    out = {"benchmark": "runtime", "python": platform.python_version(),
           "machine": platform.machine(), "cpus": os.cpu_count(), "steps": steps,
           "dispatch": disp, "costs": cost_table()}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"scheduler: round_robin {steps['round_robin_steps_per_s']:,.0f} steps/s, "
          f"random {steps['random_steps_per_s']:,.0f}, bare loop "
          f"{steps['bare_steps_per_s']:,.0f} -> ratio {steps['round_robin_vs_bare']:.2f} "
          f"(goal >= 0.5: {'met' if steps['goal_half_of_bare_met'] else 'NOT met'})")
    print(f"dispatch: {disp['core_ns_per_pair']:.0f} ns per start/end pair through the core, "
          f"{disp['direct_ns_per_pair']:.0f} ns direct ({disp['overhead_ratio']:.1f}x)")
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    from smmu.cli import configure_logging  # a script, like the CLI: it configures logging
    configure_logging()
    main()
