"""The ``smmu`` command line (also ``python -m smmu``).

::

    smmu demo                                   # the checker over built-in and buggy drivers
    smmu drivers                                # built-in, buggy and entry-point drivers
    smmu check DRIVER [--scenario NAME|all] [--api v2008|range_only|modern]
                      [--kernel VERSION[,VERSION...]|all]...
                      [--strategy portfolio|pct|random|exhaustive|windows]
                      [--schedules N] [--seed S]
                      [--json FILE] [--trace DIR]
    smmu bench NAME [--seeds N] [--json FILE] [--plot PATH] [--quick]   # smmu bench list
    smmu replay FILE [--index I] [--trace FILE]  # re-run one reported violation
    smmu replay-strace FILE.strace [--json F] [--api A,B] [--drivers kvm,gru]
    smmu history [NAME...] [--json FILE]        # every historical bug: broken caught, fixed
                                                # clean (exit 1 otherwise)

DRIVER is one of

* a built-in name: ``kvm``, ``gru``, ``xpmem``, ``iommu_sva``, ``hmm_mirror``, ``pinned``;
* a documented broken variant: ``buggy.NAME`` (``smmu drivers`` lists them, e.g.
  ``buggy.kvm_no_seq``);
* a driver registered by an installed package under the entry-point group ``smmu.drivers``;
* an importable ``package.module:Class``;
* a file and class: ``path/to/file.py:Class``.

Exit status: 0 clean, 1 violations found, 2 usage error (the one-line message says what to
fix: a bad argument, a driver that cannot be loaded or built), 3 internal error in smmu (a
bug in smmu itself: the message gives the replay command and smmu's traceback; please
report it), 130 interrupted (Ctrl-C; says where each task was). Exploration shows a
progress bar on stderr when it is a terminal.
"""

from __future__ import annotations

import argparse
import sys

from smmu.base.errors import InternalError, Interrupted, SmmuError, UsageError
from smmu.cli.bench import BENCHES, cmd_bench, load_bench
from smmu.cli.catalogue import cmd_drivers
from smmu.cli.check import cmd_check, cmd_replay, plan, run_check
from smmu.cli.common import (EXIT_CLEAN, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE,
                             EXIT_VIOLATIONS, CLIError, configure_logging, internal_error,
                             resolve_driver)
from smmu.cli.demo import DEMO_BUGGY, DEMO_SCENARIOS, DEMO_SCHEDULES, cmd_demo, demo_plan
from smmu.cli.strace import cmd_replay_strace
from smmu.cli.history import add_parser as add_history_parser
from smmu.cli.history import cmd_history
from smmu.explore import SEARCHES
from smmu.notifier import API_GENERATIONS
from smmu.report import short_path

__all__ = ["BENCHES", "CLIError", "DEMO_BUGGY", "DEMO_SCENARIOS", "DEMO_SCHEDULES",
           "EXIT_CLEAN", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_USAGE", "EXIT_VIOLATIONS",
           "build_parser", "configure_logging",
           "demo_plan", "load_bench", "main", "plan", "resolve_driver", "run_check"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line: what to fix; exit 2 like argparse
        self.exit(EXIT_USAGE, f"smmu: error: {message} (see `{self.prog} --help`)\n")


def _nonneg_int(s):
    try:
        v = int(s, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a whole number") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{s!r} is negative")
    return v


def _pos_int(s):
    v = _nonneg_int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{s!r} must be at least 1")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="smmu", description="Check that a secondary MMU driver stays coherent "
                "with the Linux page tables.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (to stderr)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    d = sub.add_parser("demo", help="run the checker over built-in and buggy drivers")
    d.add_argument("--schedules", type=_pos_int, default=None,
                   help="schedules per scenario and api (default: a budget of ~30-60 s)")
    d.add_argument("--seed", type=_nonneg_int, default=0)
    sub.add_parser("drivers", help="list built-in, buggy and entry-point drivers")
    c = sub.add_parser("check", help="explore schedules of a driver for violations")
    c.add_argument("driver", metavar="DRIVER",
                   help="kvm, gru, ..., buggy.NAME, package.module:Class or file.py:Class")
    c.add_argument("--scenario", default=None, help="a scenario name or all (default: all)")
    c.add_argument("--api", default=None, choices=API_GENERATIONS,
                   help="one notifier generation (default: every one the driver supports)")
    c.add_argument("--kernel", action="append", default=None, metavar="VERSION",
                   help="Linux release(s) to check under, as presets (e.g. 2.6.27, 5.10, "
                   "a comma-separated list, or all; repeatable): a row per kernel")
    c.add_argument("--strategy", default="portfolio", choices=tuple(SEARCHES),
                   help="portfolio (default: window-directed, exhaustive to preemption "
                   "bound 2, PCT depth 1-3 and random, sharing --schedules), or one of them")
    c.add_argument("--schedules", type=_pos_int, default=200,
                   help="schedules per scenario and api (default 200)")
    c.add_argument("--seed", type=_nonneg_int, default=0)
    c.add_argument("--json", metavar="FILE", default=None, help="write the JSON report")
    c.add_argument("--trace", metavar="DIR", default=None,
                   help="write a Perfetto trace per violation into DIR")
    b = sub.add_parser("bench", help="run a benchmark (smmu bench list)")
    b.add_argument("name", metavar="NAME")
    b.add_argument("--json", metavar="FILE", default=None)
    b.add_argument("--plot", metavar="PATH", default=None,
                   help="write plots (invalidate-page-vs-range: a directory of PNGs)")
    b.add_argument("--seeds", type=_pos_int, default=None,
                   help="runs per configuration, each its own seed (default: the benchmark's)")
    b.add_argument("--quick", action="store_true", help="a small run (seconds)")
    t = sub.add_parser("replay-strace", help="replay a program's strace -f -e trace=memory,"
                       "process output as a workload; print notifier traffic per API")
    t.add_argument("file", metavar="FILE.strace")
    t.add_argument("--json", metavar="FILE", default=None)
    t.add_argument("--api", default=None,
                   help="comma-separated: v2008, v2008-outside-ptl, range_only, modern "
                        "(default: v2008,range_only,modern)")
    t.add_argument("--drivers", default="kvm,gru",
                   help="drivers on every address space: kvm, gru, xpmem (default kvm,gru)")
    t.add_argument("--seed", type=_nonneg_int, default=0)
    r = sub.add_parser("replay", help="re-run one reported violation from a JSON report")
    r.add_argument("file", metavar="FILE")
    r.add_argument("--index", type=_nonneg_int, default=0,
                   help="which violation of the report (default 0)")
    r.add_argument("--trace", metavar="FILE", default=None, help="write a Perfetto trace")
    add_history_parser(sub, _pos_int)
    return p


COMMANDS = {"demo": cmd_demo, "drivers": cmd_drivers, "check": cmd_check, "bench": cmd_bench,
            "replay": cmd_replay, "replay-strace": cmd_replay_strace, "history": cmd_history}


def main(argv=None) -> int:
    """Entry point; returns the exit status (0 clean, 1 violations, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    configure_logging(args.verbose)
    try:
        return COMMANDS[args.command](args)
    except CLIError as e:
        print(f"smmu: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as e:     # BadDriver included: the driver class cannot be used
        print(f"smmu: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SmmuError as e:
        print(f"smmu: error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Interrupted as e:
        print("smmu: interrupted; where each task was:", file=sys.stderr)
        for name, state, where in e.tasks:
            print(f"  {name:<10} {state:<24} {short_path(where)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("smmu: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except InternalError as e:
        return internal_error(e, args)
    except Exception as e:      # noqa: BLE001 - anything else escaping is smmu's bug too
        return internal_error(InternalError(e), args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
