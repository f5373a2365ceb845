"""``smmu drivers`` (built-in, buggy and entry-point drivers) and ``smmu bench`` (the
benchmarks under benchmarks/)."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

from rich.table import Table

from smmu.cli.common import EXIT_CLEAN, CLIError, console, first_line, write_json
from smmu.explore.loader import (BUGGY_PREFIX, buggy_drivers, builtin_drivers,
                                 entry_point_drivers)
from smmu.notifier import API_GENERATIONS

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = ROOT / "benchmarks"
#: ``smmu bench NAME`` -> benchmark file under benchmarks/ (each has ``run(**kw) -> dict``)
BENCHES = {
    "invalidate-page-vs-range": "bench_notifier_api.py",
    "checker": "bench_checker.py",
}


def cmd_drivers(args) -> int:
    builtin, buggy = builtin_drivers(), buggy_drivers()
    t = Table(title="smmu drivers (use the DRIVER name with smmu check)")
    t.add_column("DRIVER", no_wrap=True)
    t.add_column("apis", no_wrap=True)
    t.add_column("description")
    for n, c in sorted(builtin.items()):
        t.add_row(n, ",".join(getattr(c, "apis", API_GENERATIONS)), first_line(c.__doc__))
    for n, c in sorted(buggy.items()):
        desc = getattr(c, "breaks", None) or first_line(c.__doc__)
        exp = getattr(c, "expected", None)
        if exp:
            desc = f"{desc} (expect {', '.join(exp)})"
        t.add_row(BUGGY_PREFIX + n, ",".join(getattr(c, "apis", API_GENERATIONS)), str(desc))
    for n, ep in sorted(entry_point_drivers().items()):
        t.add_row(n, "?", f"entry point {ep.value}")
    console().print(t)
    return EXIT_CLEAN


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
    kw = {}
    if args.quick:
        kw["quick"] = True
    doc = mod.run(**kw)
    show = getattr(mod, "render", None)
    if show is not None:
        show(doc, out)
    else:
        out.print_json(json.dumps(doc, default=repr))
    if args.json:
        write_json(args.json, doc)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            out.print("--plot needs matplotlib: pip install 'smmu[plot]' (no plot written)",
                      markup=False)
            return EXIT_CLEAN
        plot = getattr(mod, "plot", None)
        if plot is None:
            out.print(f"benchmark {args.name!r} has no plot", markup=False)
        else:
            plot(doc, args.plot)
            out.print(f"plot: {args.plot}", markup=False)
    return EXIT_CLEAN
