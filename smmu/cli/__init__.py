"""The ``smmu`` command line (also ``python -m smmu``).

::

    smmu demo                                   # the checker over built-in and buggy drivers
    smmu drivers [--json]                       # built-in, buggy and entry-point drivers
    smmu scenarios [--json]                     # the scenario catalogue
    smmu check DRIVER [--scenario NAME|all] [--api v2008|range_only|modern]
                      [--kernel VERSION[,VERSION...]|all]
                      [--strategy portfolio|pct|random|exhaustive|windows]
                      [--schedules N] [--seed S] [--json FILE] [--trace DIR]
                      [--workers N | --scheduler tcp://HOST:PORT] [--shard-size N]
    smmu replay FILE [--index I] [--trace FILE]  # re-run one reported violation
    smmu history [NAME...] [--json FILE]        # every historical bug: broken caught, fixed
                                                # clean (exit 1 otherwise)
    smmu bench NAME [--seeds N] [--json FILE] [--plot PATH] [--quick]   # smmu bench list
    smmu replay-strace FILE.strace [--json F] [--api A,B] [--drivers kvm,gru]
    smmu --version

``-v`` (more, ``-vv`` debug) and ``-q`` (errors only) go before or after the command.

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

Adding a command is one new module here defining ``COMMANDS = [Command(...)]``
(:class:`smmu.cli.common.Command`): this package finds it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import textwrap

from smmu import __version__
from smmu.base.errors import InternalError, Interrupted, SmmuError, UsageError
from smmu.cli.common import (EXIT_CLEAN, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE,
                             EXIT_VIOLATIONS, WIDTH, CLIError, Command, configure_logging,
                             internal_error, resolve_driver)
from smmu.report import short_path, smmu_revision

#: stdout closed by its reader: 128 + SIGPIPE, what a shell shows for a tool killed by it
EXIT_BROKEN_PIPE = 141

__all__ = ["CLIError", "Command", "EXIT_CLEAN", "EXIT_INTERNAL", "EXIT_INTERRUPTED",
           "EXIT_USAGE", "EXIT_VIOLATIONS", "build_parser", "commands", "configure_logging",
           "main", "resolve_driver"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line: what to fix; exit 2 like argparse
        self.exit(EXIT_USAGE, f"smmu: error: {message} (see `{self.prog} --help`)\n")


def commands() -> list[Command]:
    """Every command, from the modules of this package that define ``COMMANDS``."""
    found = []
    for m in pkgutil.iter_modules(__path__):
        mod = importlib.import_module(f"{__name__}.{m.name}")
        found.extend(getattr(mod, "COMMANDS", ()))
    names = [c.name for c in found]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:     # pragma: no cover - a development mistake, caught by the tests
        raise RuntimeError(f"smmu.cli: commands defined twice: {dup}")
    return sorted(found, key=lambda c: (c.order, c.name))


def _verbosity(p, *, suppress: bool):
    """``-v``/``-q``, accepted before the command and after it (``suppress``: a command's
    copy leaves the value given before the command alone unless given again)."""
    d = argparse.SUPPRESS if suppress else 0
    p.add_argument("-v", "--verbose", action="count", default=d,
                   help="more output on stderr: -v progress, -vv debug")
    p.add_argument("-q", "--quiet", action="count", default=d,
                   help="only errors on stderr")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="smmu", description="Check that a secondary MMU driver stays coherent "
                "with the Linux page tables.", epilog="Exit status: 0 clean, 1 violations "
                "found, 2 usage error, 3 internal error in smmu, 130 interrupted.")
    p.add_argument("--version", action="version",
                   version=f"smmu {__version__} ({smmu_revision()})")
    _verbosity(p, suppress=False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for c in commands():
        epilog = c.epilog() if callable(c.epilog) else c.epilog
        # the epilog keeps its layout (RawDescription); the description is wrapped here
        desc = "\n\n".join(textwrap.fill(par, WIDTH - 1) for par in
                           (c.description or c.help or "").split("\n\n"))
        cp = sub.add_parser(c.name, help=c.help, description=desc, epilog=epilog,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        _verbosity(cp, suppress=True)
        if c.arguments is not None:
            c.arguments(cp)
        cp.set_defaults(_run=c.run)
    return p


def main(argv=None) -> int:
    """Entry point; returns the exit status (0 clean, 1 violations, 2 usage error, 3 internal
    error in smmu, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    configure_logging(args.verbose - args.quiet)
    try:
        return args._run(args)
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
    except BrokenPipeError:
        # the reader went away (`smmu scenarios --json | head`): stop quietly, as Unix tools
        # do, and keep Python from complaining again when it flushes stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except InternalError as e:
        return internal_error(e, args)
    except Exception as e:      # noqa: BLE001 - anything else escaping is smmu's bug too
        return internal_error(InternalError(e), args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
