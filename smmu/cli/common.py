"""What every command shares: exit codes and usage errors, driver resolution, logging for the
command line, the console and progress bar, small output helpers."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import traceback
from pathlib import Path

import structlog
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from smmu.base.errors import BadDriver
from smmu.explore.findings import driver_spec
from smmu.explore.loader import load_driver

EXIT_CLEAN, EXIT_VIOLATIONS, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class CLIError(Exception):
    """A usage error: printed as one line, exit status 2."""


def resolve_driver(spec: str):
    """The driver class that ``spec`` names (:func:`smmu.explore.loader.load_driver`); raises
    :class:`CLIError` with what to fix."""
    try:
        return load_driver(spec)
    except BadDriver as e:
        raise CLIError(str(e)) from None


def configure_logging(verbose: bool = False) -> None:
    """structlog for the command line only: warnings (info with -v) to stderr."""
    level = logging.INFO if verbose else logging.WARNING
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        processors=[structlog.processors.add_log_level,
                    structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())],
        cache_logger_on_first_use=False)


def console(stderr=False) -> Console:
    """Where the command line prints (rich, no highlighting)."""
    return Console(stderr=stderr, highlight=False)


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


def first_line(doc):
    """The first sentence of a docstring, without reST markup."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    text = text.replace("``", "").replace(":class:", "").replace(":func:", "").replace("`", "")
    end = text.find(". ")
    return text[:end + 1] if end >= 0 else text


def slug(s):
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s)


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
