"""What every command shares: the command registry (:class:`Command`), exit codes and usage
errors, driver resolution, logging for the command line, the console, tables that fit 80
columns, the progress bar, small output helpers."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
import textwrap
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from smmu.base.errors import BadDriver
from smmu.explore.findings import driver_spec
from smmu.explore.loader import load_driver

EXIT_CLEAN, EXIT_VIOLATIONS, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

#: the width every table and wrapped paragraph is made to fit
WIDTH = 80


@dataclass(frozen=True)
class Command:
    """One ``smmu`` subcommand. A module of :mod:`smmu.cli` that defines ``COMMANDS``, a list
    of these, adds its commands to ``smmu`` (no other file changes): ``name``, one-line
    ``help``, ``run(args) -> exit status``, ``arguments(parser)`` adding its options,
    ``description`` (``smmu NAME --help``; default: ``help``), ``epilog``, ``order`` in the
    command list."""

    name: str
    help: str
    run: Callable
    arguments: Callable | None = None
    description: str | None = None
    epilog: str | Callable | None = None
    order: int = 50


def nonneg_int(s):
    """argparse type: a whole number >= 0 (decimal or 0x...)."""
    try:
        v = int(s, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a whole number") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{s!r} is negative")
    return v


def pos_int(s):
    """argparse type: a whole number >= 1."""
    v = nonneg_int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{s!r} must be at least 1")
    return v


def pos_float(s):
    """argparse type: a number of seconds > 0."""
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{s!r} must be more than 0")
    return v


class CLIError(Exception):
    """A usage error: printed as one line, exit status 2."""


def resolve_driver(spec: str):
    """The driver class that ``spec`` names (:func:`smmu.explore.loader.load_driver`); raises
    :class:`CLIError` with what to fix."""
    try:
        return load_driver(spec)
    except BadDriver as e:
        raise CLIError(str(e)) from None


def configure_logging(verbosity: int = 0) -> None:
    """Logging for the command line (the library never configures it): smmu's events go to
    stderr from WARNING (``-q``: ERROR, ``-v``: INFO, ``-vv``: DEBUG). Scripts such as the
    benchmarks call it too."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(
        max(-1, min(int(verbosity), 2)), logging.DEBUG)
    logger = logging.getLogger("smmu")
    for h in list(logger.handlers):
        if getattr(h, "_smmu_cli", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._smmu_cli = True
    handler.setFormatter(logging.Formatter("smmu: %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def console(stderr=False) -> Console:
    """Where the command line prints (rich, no highlighting; tables fit :data:`WIDTH`)."""
    return Console(stderr=stderr, highlight=False)


def table(title: str | None, columns, rows, *, names: int = 1) -> Table:
    """A table that fits :data:`WIDTH` columns: the first ``names`` columns (names, never
    cut) do not wrap, the others wrap their words. ``columns``: names, or ``(name, justify)``
    pairs."""
    t = Table(title=title, width=None, expand=False, title_justify="left", pad_edge=False,
              box=None, header_style="bold", show_edge=False)
    for i, c in enumerate(columns):
        name, justify = (c, "left") if isinstance(c, str) else c
        if i < names:
            t.add_column(name, no_wrap=True, justify=justify)
        else:
            t.add_column(name, overflow="fold", justify=justify)
    for r in rows:
        t.add_row(*[str(x) for x in r])
    return t


def print_entries(out: Console, title: str, entries) -> None:
    """A listing that fits :data:`WIDTH` whatever the names' length: per entry, its name and a
    right-hand note on one line, its description wrapped below, indented. ``entries``:
    ``(name, note, description)``; a name of None starts a section titled ``note``."""
    out.print(title, markup=False)
    for name, note, desc in entries:
        if name is None:
            out.print(f"\n{note}", markup=False)
            continue
        head = f"  {name}"
        if note:
            pad = max(2, WIDTH - len(head) - len(note))
            head = f"{head}{' ' * pad}{note}" if len(head) + 2 + len(note) <= WIDTH else \
                f"{head}  {note}"
        out.print(head, markup=False, overflow="ignore", crop=False)
        for line in textwrap.wrap(desc or "", WIDTH - 6):
            out.print(f"      {line}", markup=False)


def print_table(out: Console, t: Table) -> None:
    """Print ``t`` at most :data:`WIDTH` columns wide."""
    out.print(t, width=min(WIDTH, out.width or WIDTH))


class ProgressBar:
    """A rich progress bar on stderr, off when stderr is not a terminal."""

    def __init__(self, total: int, label: str):
        self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console(stderr=True),
                          disable=not sys.stderr.isatty(), transient=True)
        self.task = self.p.add_task(label, total=total)

    def __enter__(self):
        self.p.__enter__()
        return self

    def __exit__(self, *exc):
        self.p.__exit__(*exc)

    def label(self, text):
        self.p.update(self.task, description=text)

    def advance(self, n=1):
        self.p.advance(self.task, n)


_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const|ref):`~?([^`]*)`")


def plain(text: str | None) -> str:
    """``text`` (a docstring's words) without reST markup: roles (``:meth:`x``` -> ``x``),
    double back-quotes, ``~`` shortening, joined into one line."""
    text = " ".join((text or "").split())
    text = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1] if "~" in m.group(0)
                     else m.group(1), text)
    return text.replace("``", "").replace("`", "")


def first_line(doc):
    """The first sentence of a docstring, without reST markup."""
    text = plain((doc or "").strip().split("\n\n")[0])
    end = text.find(". ")
    return text[:end + 1] if end >= 0 else text


def slug(s):
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s)


def trace_path(arg: str, name: str, index: int = 0) -> Path:
    """Where ``--trace ARG`` puts the trace of one violation, the same for ``smmu check`` and
    ``smmu replay``: ARG is a folder (made if missing; the file in it is ``name``), or a
    file ending in ``.json`` (the ``index``-th violation after the first goes to
    ``FILE-<index+1>.json``)."""
    p = Path(arg)
    if p.suffix.lower() == ".json" and not p.is_dir():
        return p if index == 0 else p.with_name(f"{p.stem}-{index + 1}{p.suffix}")
    return p / name


def write_trace_file(arg: str, name: str, result, *, index: int = 0, title: str,
                     metadata: dict | None = None) -> Path:
    """Write ``result``'s Perfetto trace where :func:`trace_path` says; a path that cannot
    be written is a usage error."""
    from smmu.report.trace import write_trace
    path = trace_path(arg, name, index)
    try:
        return write_trace(path, result, title=title, metadata=metadata)
    except OSError as e:
        raise CLIError(f"--trace {arg!r}: cannot write {str(path)!r}: {e.strerror or e} (give "
                       "a folder or a FILE.json)") from None


def write_json(path, doc):
    try:
        p = Path(path)
        if p.parent and not p.parent.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(doc, indent=2, default=repr) + "\n")
    except OSError as e:
        raise CLIError(f"cannot write {path!r}: {e.strerror or e}") from None


def internal_error(e, args=None) -> int:
    """Report an exception inside smmu's own code (:class:`InternalError`): say so, give the
    command that replays it (a JSON file written for it) and smmu's traceback; exit 3."""
    err = sys.stderr
    print(f"smmu: internal error in smmu (a bug in smmu, not in your driver): {e}", file=err)
    ctx = dict(getattr(e, "context", {}) or {})
    if getattr(e, "task", None):
        print(f"  in task {e.task!r}" + (f", called from {e.where}" if e.where else ""),
              file=err)
    if ctx.get("scenario"):
        doc = {"driver": driver_spec(ctx.get("driver")), "scenario": ctx["scenario"],
               "api": ctx.get("api"), "strategy": "replay", "seed": ctx.get("seed", 0),
               "choices": list(getattr(e, "choices", []) or []), "kind": "InternalError",
               "message": str(e), "driver_options": ctx.get("driver_options") or {},
               "sim_options": ctx.get("sim_options") or {}}
        path = _crash_file()
        if path is not None:
            path.write_text(json.dumps({"driver": doc["driver"], "violations": [
                {"driver": doc["driver"], "finding": doc}]}, indent=2, default=repr) + "\n")
            print(f"  replay: smmu replay {path}", file=err)
    print("  smmu's traceback (please include it in a bug report):", file=err)
    exc = getattr(e, "exc", e)
    for line in traceback.format_exception(type(exc), exc, exc.__traceback__):
        err.write("    " + line.rstrip("\n").replace("\n", "\n    ") + "\n")
    return EXIT_INTERNAL


def _crash_file():
    for d in (Path.cwd(), Path(tempfile.gettempdir())):
        p = d / "smmu-internal-error.json"
        try:
            p.write_text("")
            return p
        except OSError:
            continue
    return None
