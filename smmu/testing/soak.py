"""The chaos soak: :class:`drivers.chaos.CHAOS` (a correct driver that yields, sleeps and
takes locks at random wherever a hook may) over every scenario, notifier generation and
rmap-lock mode, for as many schedules as asked. An *internal error* is an exception out of
smmu's own code (a frame-table state error, a ``CoreBug``, an assertion...): a model bug to
fix at the Linux-faithful depth, never the driver's fault (issue 9, item 8).

``make soak SCHEDULES=100000`` runs ``python -m smmu.testing.soak --schedules N``; the test
suite runs a CI-sized one (``tests/test_chaos.py``). Exit status 1 when an internal error was
found (each is printed with what replays it: scenario, generation, rmap locks, strategy,
seed) or when a run reported a violation: the driver being correct, that is a false alarm
of the checker (or a bug of the chaos driver) to fix as well.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

from drivers.chaos import CHAOS
from smmu.explore.run import make_strategy_schedule, run_once
from smmu.notifier import API_GENERATIONS
from smmu.scenarios import SCENARIOS, SLOW_TAGS, default_names

RMAP_LOCKS = ("rwsem", "spinlock")


@dataclass
class SoakError:
    """One exception out of smmu's own code (usually a :class:`smmu.base.errors.InternalError`
    from the run), with what replays it."""

    scenario: str
    api: str
    rmap_locks: str
    strategy: str
    seed: int
    error: str
    where: list

    def __str__(self):
        return (f"{self.error}\n  replay: run_once({self.scenario!r}, CHAOS, {self.api!r}, "
                f"{self.strategy!r} seed {self.seed}, rmap_locks={self.rmap_locks!r})\n  "
                + "\n  ".join(self.where))


@dataclass
class Soak:
    """What a soak did: ``runs``, the distinct ``errors`` (:class:`SoakError`), the
    violation kinds its runs reported (``violations``: a correct driver should show none),
    ``elapsed`` seconds."""

    runs: int = 0
    errors: list = field(default_factory=list)
    violations: Counter = field(default_factory=Counter)
    #: (scenario, kind) -> (api, rmap locks, strategy, seed) of its first run
    first: dict = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {"runs": self.runs, "elapsed_s": round(self.elapsed, 1),
                "errors": [e.__dict__ for e in self.errors],
                "violations": {f"{s}/{k}": n for (s, k), n in sorted(self.violations.items())}}


def combos(include_slow: bool = False, scenarios=None) -> list:
    """Every (scenario, generation, rmap locks) the chaos driver runs: the default set
    (:func:`smmu.scenarios.default_names`: every scenario but the slow ``load`` one, which
    ``include_slow`` adds, and the broken halves of historical pairs, bugs by construction
    that end in the Livelock they document), or the ``scenarios`` named."""
    names = list(scenarios) if scenarios is not None else default_names()
    if include_slow and scenarios is None:
        names += [n for n, sc in SCENARIOS.items() if any(t in SLOW_TAGS for t in sc.tags)]
    out = []
    for name in names:
        sc = SCENARIOS[name]
        if not sc.applies(CHAOS):
            continue
        for api in API_GENERATIONS:
            if api in sc.apis and api in CHAOS.apis:
                for rmap in RMAP_LOCKS:
                    out.append((sc, api, rmap))
    return out


def soak(schedules: int, seed: int = 0, *, include_slow: bool = False, scenarios=None,
         driver=CHAOS, progress=None) -> Soak:
    """Run ``schedules`` schedules spread evenly over :func:`combos`, alternating random and
    PCT schedules; keep the first occurrence of each distinct internal error."""
    plan = combos(include_slow, scenarios)
    out = Soak()
    seen = set()
    t0 = time.perf_counter()
    for i in range(int(schedules)):
        sc, api, rmap = plan[i % len(plan)]
        run_seed = seed + i // len(plan)
        strategy = "random" if run_seed % 2 == 0 else "pct"
        sched = make_strategy_schedule(strategy, run_seed, {"depth": 3, "steps": 300})
        try:
            r = run_once(sc, driver, api, sched, run_seed, stop_on_violation=False,
                         rmap_locks=rmap)
            for k in r.kinds():
                out.violations[(sc.name, k)] += 1
                out.first.setdefault((sc.name, k), (api, rmap, strategy, run_seed))
        except Exception as e:          # noqa: BLE001 - every exception is a finding here
            cause = getattr(e, "exc", None) or e
            key = (type(cause).__name__, str(cause)[:120], sc.name)
            if key not in seen:
                seen.add(key)
                tb = traceback.extract_tb(cause.__traceback__)[-6:]
                out.errors.append(SoakError(
                    sc.name, api, rmap, strategy, run_seed, f"{type(cause).__name__}: {cause}",
                    [f"{f.filename}:{f.lineno} in {f.name}" for f in tb]))
        out.runs += 1
        if progress is not None:
            progress(out.runs, schedules)
    out.elapsed = time.perf_counter() - t0
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m smmu.testing.soak", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("--schedules", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--include-slow", action="store_true", help="also the 'load' scenario")
    ap.add_argument("--json", help="write the result there")
    args = ap.parse_args(argv)
    if args.schedules < 1:
        print("--schedules must be at least 1", file=sys.stderr)
        return 2
    res = soak(args.schedules, args.seed, include_slow=args.include_slow)
    print(f"chaos soak: {res.runs} schedules over {len(combos(args.include_slow))} "
          f"(scenario, generation, rmap locks) in {res.elapsed:.0f} s: "
          f"{len(res.errors)} internal error(s)")
    for e in res.errors:
        print(f"INTERNAL ERROR {e}")
    for (s, k), n in sorted(res.violations.items()):
        api, rmap, strategy, seed = res.first[(s, k)]
        print(f"VIOLATION {k} on {s}: {n} run(s), first: {api}, rmap_locks={rmap!r}, "
              f"{strategy} seed {seed}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res.to_dict(), fh, indent=1)
    return 1 if res.errors or res.violations else 0


if __name__ == "__main__":
    sys.exit(main())
