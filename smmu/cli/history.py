"""``smmu history [--json FILE]``: replay every historical kernel (and driver) bug as a pair,
the broken configuration (it must be caught) and the fixed one (it must be clean), one row
each. Exit status 1 if a broken one is not caught or a fixed one is not clean."""

from __future__ import annotations

import time

from rich.table import Table

from smmu.cli.common import (EXIT_CLEAN, EXIT_VIOLATIONS, CLIError, Command, ProgressBar,
                             console, pos_int, write_json)
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
    t = Table(title=f"smmu history: {len(rows)} pairs in {elapsed:.1f} s")
    t.add_column("pair", no_wrap=True)
    for col in ("commit", "year", "broken", "fixed"):
        t.add_column(col)
    for r in rows:
        kinds = ", ".join(r.broken) or "nothing"
        broken = f"[green]{kinds}[/green]" if r.caught else f"[red]not caught ({kinds})[/red]"
        fixed = "[green]clean[/green]" if r.clean else "[red]" + ", ".join(r.fixed) + "[/red]"
        t.add_row(r.name, r.commit, str(r.year or ""), broken, fixed)
    out.print(t)
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
