"""``smmu bench NAME`` (the benchmarks under benchmarks/; ``smmu bench list``)."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import textwrap
from pathlib import Path

from smmu.cli.common import (EXIT_CLEAN, CLIError, Command, ProgressBar, console, first_line,
                             pos_int, write_json)

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = ROOT / "benchmarks"
#: ``smmu bench NAME`` -> benchmark file under benchmarks/ (each has ``run(**kw) -> dict``,
#: and may have ``render(doc, console)`` and ``plot(doc, path)``)
BENCHES = {
    "invalidate-page-vs-range": "bench_notifier_api.py",
    "checker": "bench_checker.py",
    "costs": "bench_costs.py",
}


def load_bench(name: str):
    if name not in BENCHES:
        raise CLIError(f"unknown benchmark {name!r}: choose one of {', '.join(sorted(BENCHES))} "
                       "(smmu bench list)")
    path = BENCH_DIR / BENCHES[name]
    if not path.is_file():
        raise CLIError(f"benchmark file {path} is missing: run smmu from a source checkout "
                       "(pip install -e .)")
    spec = importlib.util.spec_from_file_location(f"_smmu_bench_{name.replace('-', '_')}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cmd_bench(args) -> int:
    out = console()
    if args.name == "list":
        for n, f in sorted(BENCHES.items()):
            mod_doc = ""
            p = BENCH_DIR / f
            if p.is_file():
                mod_doc = first_line(ast.get_docstring(ast.parse(p.read_text())))
            out.print(f"{n:28s} benchmarks/{f}  {mod_doc}", markup=False)
        return EXIT_CLEAN
    mod = load_bench(args.name)
    params = inspect.signature(mod.run).parameters
    kw = {}
    if args.quick:
        kw["quick"] = True
    if args.seeds is not None:
        if "seeds" not in params:
            raise CLIError(f"benchmark {args.name!r} takes no --seeds")
        kw["seeds"] = args.seeds
    if args.plot:
        plot = getattr(mod, "plot", None)
        if plot is None:
            raise CLIError(f"benchmark {args.name!r} has no plot: drop --plot")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CLIError("--plot needs matplotlib: pip install 'smmu[plot]'") from None
    if "progress" in params:
        with ProgressBar(1, args.name) as bar:
            def progress(done, total, label):
                bar.p.update(bar.task, total=total, completed=done, description=label[:40])
            doc = mod.run(progress=progress, **kw)
    else:
        doc = mod.run(**kw)
    show = getattr(mod, "render", None)
    if show is not None:
        show(doc, out)
    else:
        out.print_json(json.dumps(doc, default=repr))
    if args.json:
        write_json(args.json, doc)
    if args.plot:
        written = mod.plot(doc, args.plot)
        where = ", ".join(written.values()) if isinstance(written, dict) else args.plot
        out.print(f"plots: {where}", markup=False)
    return EXIT_CLEAN


def bench_arguments(b) -> None:
    b.add_argument("name", metavar="NAME", help="a benchmark (below), or list")
    b.add_argument("--json", metavar="FILE", default=None,
                   help="write the results (ratios, costs, the revision) as JSON")
    b.add_argument("--plot", metavar="PATH", default=None,
                   help="write plots (invalidate-page-vs-range: a directory of PNGs; needs "
                   "the plot extra)")
    b.add_argument("--seeds", type=pos_int, default=None,
                   help="runs per configuration, each its own seed (default: the benchmark's)")
    b.add_argument("--quick", action="store_true", help="a small run (seconds), as CI does")


def bench_epilog() -> str:
    """The benchmarks and what each measures (their module docstrings' first sentences)."""
    lines = ["benchmarks:"]
    for n, f in sorted(BENCHES.items()):
        p = BENCH_DIR / f
        doc = first_line(ast.get_docstring(ast.parse(p.read_text()))) if p.is_file() else \
            "(missing: run smmu from a source checkout)"
        lines.extend(textwrap.wrap(f"{n}: {doc}", 78, initial_indent="  ",
                                   subsequent_indent="      "))
    return "\n".join(lines)


COMMANDS = [Command("bench", "run a benchmark (smmu bench list)", cmd_bench, bench_arguments,
                    description="Run one of the benchmarks under benchmarks/: speed as ratios "
                    "against references measured in the same run.", epilog=bench_epilog,
                    order=50)]
