"""``smmu demo``: the checker over the built-in drivers (clean) and one broken driver per
family (caught)."""

from __future__ import annotations

import time

from rich.table import Table

from smmu.cli.check import replay_finding, run_check, select_apis, shrink_finding
from smmu.cli.common import (EXIT_CLEAN, EXIT_VIOLATIONS, Command, ProgressBar, console,
                             first_line, nonneg_int, pos_int)
from smmu.explore.loader import BUGGY_PREFIX, buggy_drivers, builtin_drivers
from smmu.notifier import API_GENERATIONS
from smmu.report import finding_text
from smmu.scenarios import SCENARIOS, known_window

#: the scenarios the demo runs the built-in drivers on (those that apply to each)
DEMO_SCENARIOS = ("cow-after-fork", "reclaim-while-device-reads", "mprotect-downgrade",
                  "munmap-during-device-fault", "exit-while-device-active", "fork-after-pin")
#: the broken drivers the demo shows: one per family, each a different rule broken
DEMO_BUGGY = ("kvm_no_seq", "gru_ignore_invalidate_page", "gru_no_range_active",
              "hmm_no_set_seq", "sva_sleep_in_flush")
DEMO_SCHEDULES = 40     # schedules per (driver, scenario, api): ~30-60 s in all


def demo_plan(schedules=DEMO_SCHEDULES):
    """[(label, cls, [(scenario, api)], expect_clean)] for the demo: every built-in driver
    on :data:`DEMO_SCENARIOS`, and a few buggy drivers on the scenarios they document."""
    builtin, buggy = builtin_drivers(), buggy_drivers()
    out = []
    for name, cls in sorted(builtin.items()):
        # a window the driver declares (a true positive) is not required clean
        scs = [SCENARIOS[s] for s in DEMO_SCENARIOS
               if s in SCENARIOS and SCENARIOS[s].applies(cls) and not known_window(cls, s)]
        pairs = [(sc, a) for a in select_apis(cls, None) for sc in scs if a in sc.apis]
        out.append((name, cls, pairs, True))
    for name, cls in [(n, buggy[n]) for n in DEMO_BUGGY if n in buggy]:
        names = [s for s in getattr(cls, "scenarios", ()) if s in SCENARIOS][:2]
        apis = [a for a in getattr(cls, "apis", API_GENERATIONS)]
        pairs = [(SCENARIOS[s], a) for a in apis for s in names if a in SCENARIOS[s].apis]
        out.append((BUGGY_PREFIX + name, cls, pairs, False))
    return out


def cmd_demo(args) -> int:
    schedules = args.schedules or DEMO_SCHEDULES
    out = console()
    out.print(f"smmu demo: the coherence checker on the built-in drivers and {len(DEMO_BUGGY)} "
              f"documented broken ones; the default search, {schedules} schedules per "
              "scenario and API.\n", markup=False)
    plan_ = demo_plan(schedules)
    t0 = time.perf_counter()
    cells, caught, total, ok = {}, None, 0, True
    with ProgressBar(sum(len(p) for _, _, p, _ in plan_) * schedules, "demo") as prog:
        for label, cls, pairs, expect_clean in plan_:
            for sc, api in pairs:
                findings, n, _ = run_check(cls, [(sc, api)], schedules=schedules,
                                           seed=args.seed, progress=prog)
                total += n
                cell = cells.setdefault((label, api), {"runs": 0, "kinds": set(),
                                                       "scenarios": set()})
                cell["runs"] += n
                for f in findings:
                    cell["kinds"].add(f.violation.kind)
                    cell["scenarios"].add(sc.name)
                    if caught is None and not expect_clean:
                        caught = (label, cls, f)
            kinds = set().union(*[c["kinds"] for (lb, _), c in cells.items() if lb == label])
            if expect_clean == bool(kinds):
                ok = False
    elapsed = time.perf_counter() - t0
    tab = Table(title=f"driver x notifier API ({total} schedules, {elapsed:.0f} s)")
    tab.add_column("driver")
    for a in API_GENERATIONS:
        tab.add_column(a)
    for label, _cls, _pairs, _expect in plan_:
        row = [label]
        for a in API_GENERATIONS:
            c = cells.get((label, a))
            if c is None:
                row.append("[dim]n/a[/dim]")
            elif c["kinds"]:
                row.append(f"[red]{', '.join(sorted(c['kinds']))}[/red]\n"
                           f"[dim]{', '.join(sorted(c['scenarios']))}[/dim]")
            else:
                row.append(f"[green]clean[/green] [dim]({c['runs']})[/dim]")
        tab.add_row(*row)
    out.print(tab)
    if caught is not None:
        label, cls, f = caught
        shrink_finding(f)
        out.print(f"\nOne caught bug in detail: {label} "
                  f"({getattr(cls, 'breaks', None) or first_line(cls.__doc__)})\n",
                  markup=False)
        out.print(finding_text(f, driver=label, result=replay_finding(f, cls, trace=True)),
                  markup=False)
        out.print(f"\nreproduce: smmu check {label} --scenario {f.scenario} --api {f.api} "
                  f"--seed {args.seed}", markup=False)
    out.print("\n" + ("built-in drivers clean, broken ones caught." if ok else
                      "UNEXPECTED: a built-in driver was flagged or a broken one was missed."),
              markup=False)
    return EXIT_CLEAN if ok else EXIT_VIOLATIONS


def demo_arguments(d) -> None:
    d.add_argument("--schedules", type=pos_int, default=None,
                   help="schedules per scenario and api (default: a budget of ~30-60 s)")
    d.add_argument("--seed", type=nonneg_int, default=0)


COMMANDS = [Command("demo", "run the checker over built-in and buggy drivers", cmd_demo,
                    demo_arguments, order=10)]
