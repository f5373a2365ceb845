"""``smmu history [--json FILE]``: replay every historical kernel (and driver) bug as a pair,
the broken configuration (it must be caught) and the fixed one (it must be clean), one row
each. Exit status 1 if a broken one is not caught or a fixed one is not clean."""

from __future__ import annotations

import time

from smmu.cli.common import (EXIT_CLEAN, EXIT_VIOLATIONS, CLIError, Command, ProgressBar,
                             console, pos_int, print_table, table, write_json)
from smmu.base.errors import VIOLATION_KINDS
from smmu.explore.history import BROKEN_BUDGET, FIXED_SCHEDULES, check_history
from smmu.scenarios import HISTORICAL


def cmd_history(args) -> int:
    names = list(HISTORICAL)
    if args.name:
        unknown = [n for n in args.name if n not in HISTORICAL]
        if unknown:
            raise CLIError(f"unknown historical pair(s) {', '.join(unknown)}: use one of "
                           f"{', '.join(names)}")
        names = list(args.name)
    t0 = time.perf_counter()
    rows = []
    with ProgressBar(len(names), "replaying history") as prog:
        for name in names:
            prog.label(name)
            rows.append(check_history(name, budget=args.budget,
                                      fixed_schedules=args.fixed_schedules))
            prog.advance(1)
    elapsed = time.perf_counter() - t0
    out = console()
    print_table(out, history_table(rows, elapsed))
    bad = [r for r in rows if not r.ok]
    if bad:
        out.print(f"{len(bad)} pair(s) failed: " + "; ".join(
            f"{r.name}: " + ("broken not caught (expected " + ", ".join(r.expected) + ")"
                             if not r.caught else "fixed shows " + ", ".join(r.fixed))
            for r in bad), markup=False)
    if args.json:
        write_json(args.json, {"pairs": [r.to_dict() for r in rows], "ok": not bad,
                               "budget": args.budget, "fixed_schedules": args.fixed_schedules,
                               "elapsed": round(elapsed, 2)})
    return EXIT_VIOLATIONS if bad else EXIT_CLEAN


def history_table(rows, elapsed: float):
    """The table of :func:`check_history` rows: it fits 80 columns and never cuts a pair's
    name or a violation kind (the kinds wrap between names)."""
    cells = []
    for r in rows:
        kinds = ", ".join(r.broken) or "nothing"
        broken = f"[green]{kinds}[/green]" if r.caught else f"[red]not caught ({kinds})[/red]"
        fixed = "[green]clean[/green]" if r.clean else "[red]" + ", ".join(r.fixed) + "[/red]"
        cells.append((r.name, r.commit, str(r.year or ""), broken, fixed))
    t = table(f"smmu history: {len(rows)} pairs in {elapsed:.1f} s",
              ("pair", "commit", "year", "broken", "fixed"), cells, names=3)
    # a kind name is never cut: the kinds columns are at least as wide as the longest kind
    widest = max(map(len, VIOLATION_KINDS))
    t.columns[3].min_width = widest
    t.columns[4].min_width = len("clean")
    return t


def history_arguments(h) -> None:
    """The ``history`` subcommand's arguments."""
    h.add_argument("name", nargs="*", metavar="NAME", help="pairs to run (default: all)")
    h.add_argument("--json", metavar="FILE", default=None, help="write the rows as JSON")
    h.add_argument("--budget", type=pos_int, default=BROKEN_BUDGET,
                   help=f"schedules per strategy for a broken half (default {BROKEN_BUDGET})")
    h.add_argument("--fixed-schedules", type=pos_int, default=FIXED_SCHEDULES,
                   dest="fixed_schedules",
                   help=f"schedules per strategy for a fixed half (default {FIXED_SCHEDULES})")


COMMANDS = [Command("history", "replay every historical bug: broken caught, fixed clean",
                    cmd_history, history_arguments, order=45)]
