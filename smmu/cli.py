"""The ``smmu`` command line (also ``python -m smmu``).

::

    smmu demo                                   # the checker over built-in and buggy drivers
    smmu drivers                                # built-in, buggy and entry-point drivers
    smmu check DRIVER [--scenario NAME|all] [--api v2008|range_only|modern]
                      [--strategy pct|random|exhaustive] [--schedules N] [--seed S]
                      [--json FILE] [--trace DIR]
    smmu bench NAME [--json FILE] [--plot FILE]  # smmu bench list: the names
    smmu replay FILE [--index I] [--trace FILE]  # re-run one reported violation

DRIVER is one of

* a built-in name: ``kvm``, ``gru``, ``xpmem``, ``iommu_sva``, ``hmm_mirror``, ``pinned``;
* a documented broken variant: ``buggy.NAME`` (``smmu drivers`` lists them, e.g.
  ``buggy.kvm_no_seq``);
* a driver registered by an installed package under the entry-point group ``smmu.drivers``;
* an importable ``package.module:Class``;
* a file and class: ``path/to/file.py:Class``.

Exit status: 0 clean, 1 violations found, 2 usage error (the one-line message says what to
fix). Exploration shows a progress bar on stderr when it is a terminal.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path

import structlog

from smmu.base.errors import SmmuError, UsageError
from smmu.notifier import API_GENERATIONS, MMUNotifier

EXIT_CLEAN, EXIT_VIOLATIONS, EXIT_USAGE = 0, 1, 2
STRATEGIES = ("pct", "random", "exhaustive")
BUGGY_PREFIX = "buggy."
ENTRY_POINT_GROUP = "smmu.drivers"
ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
#: ``smmu bench NAME`` -> benchmark file under benchmarks/ (each has ``run(**kw) -> dict``)
BENCHES = {
    "invalidate-page-vs-range": "bench_notifier_api.py",
    "checker": "bench_checker.py",
}


class CLIError(Exception):
    """A usage error: printed as one line, exit status 2."""


# --------------------------------------------------------------------------- driver specs

def _builtin():
    try:
        import drivers
    except ImportError as e:  # pragma: no cover - the package ships with smmu
        raise CLIError(f"the drivers package cannot be imported ({e}); reinstall smmu") from None
    return dict(getattr(drivers, "BUILTIN", {})), dict(getattr(drivers, "BUGGY", {}))


def _entry_point_drivers() -> dict:
    from importlib.metadata import entry_points
    out = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        out[ep.name] = ep
    return out


def resolve_driver(spec: str):
    """The driver class that ``spec`` names (see the module doc); raises :class:`CLIError`
    with what to fix."""
    if not spec:
        raise CLIError("DRIVER is empty: give a built-in name (see `smmu drivers`), "
                       "package.module:Class or path/to/file.py:Class")
    builtin, buggy = _builtin()
    if spec in builtin:
        return builtin[spec]
    if spec.lower() in builtin:
        return builtin[spec.lower()]
    if spec.startswith(BUGGY_PREFIX) and ":" not in spec:
        name = spec[len(BUGGY_PREFIX):]
        if name in buggy:
            return buggy[name]
        raise CLIError(f"no buggy driver {name!r}: choose one of "
                       f"{', '.join(BUGGY_PREFIX + n for n in sorted(buggy))}")
    if ":" not in spec:
        eps = _entry_point_drivers()
        if spec in eps:
            try:
                cls = eps[spec].load()
            except Exception as e:
                raise CLIError(f"entry point {spec!r} ({eps[spec].value}) failed to load: "
                               f"{type(e).__name__}: {e}") from None
            return _check_class(cls, spec)
        known = sorted(builtin) + [BUGGY_PREFIX + n for n in sorted(buggy)] + sorted(eps)
        raise CLIError(f"unknown driver {spec!r}: use one of {', '.join(known)}, "
                       "package.module:Class or path/to/file.py:Class")
    where, _, clsname = spec.rpartition(":")
    if not clsname or not where:
        raise CLIError(f"bad driver {spec!r}: write package.module:Class or "
                       "path/to/file.py:Class")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where)
        if not path.is_file():
            raise CLIError(f"driver file {where!r} not found (looked in {Path.cwd()})")
        modname = f"_smmu_user_driver_{abs(hash(str(path.resolve())))}"
        try:
            mod_spec = importlib.util.spec_from_file_location(modname, path)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[modname] = module
            mod_spec.loader.exec_module(module)
        except Exception as e:
            sys.modules.pop(modname, None)
            raise CLIError(f"cannot load {where!r}: {type(e).__name__}: {e}") from None
    else:
        if str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as e:
            raise CLIError(f"module {where!r} not found ({e}): check the name and that it is "
                           "importable (installed, or under the current directory)") from None
        except Exception as e:
            raise CLIError(f"importing {where!r} failed: {type(e).__name__}: {e}") from None
    if not hasattr(module, clsname):
        classes = sorted(n for n, v in vars(module).items()
                         if isinstance(v, type) and issubclass(v, MMUNotifier)
                         and v is not MMUNotifier)
        hint = f" (drivers in it: {', '.join(classes)})" if classes else ""
        raise CLIError(f"{where!r} has no class {clsname!r}{hint}")
    return _check_class(getattr(module, clsname), spec)


def _check_class(cls, spec):
    if not isinstance(cls, type) or not issubclass(cls, MMUNotifier):
        raise CLIError(f"{spec!r} is not an MMUNotifier subclass (got {cls!r}): a driver is a "
                       "class derived from smmu.MMUNotifier")
    return cls


def driver_label(cls, spec: str | None = None) -> str:
    builtin, buggy = _builtin()
    for n, c in builtin.items():
        if c is cls:
            return n
    for n, c in buggy.items():
        if c is cls:
            return BUGGY_PREFIX + n
    return spec or f"{cls.__module__}:{cls.__qualname__}"


# --------------------------------------------------------------------------- logging, output

def configure_logging(verbose: bool = False) -> None:
    """structlog for the command line only: warnings (info with -v) to stderr."""
    level = logging.INFO if verbose else logging.WARNING
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        processors=[structlog.processors.add_log_level,
                    structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())],
        cache_logger_on_first_use=False)


def _console(stderr=False):
    from rich.console import Console
    return Console(stderr=stderr, highlight=False)


class _Progress:
    """A rich progress bar on stderr, off when stderr is not a terminal."""

    def __init__(self, total: int, label: str):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)
        self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=_console(stderr=True),
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


# --------------------------------------------------------------------------- checking

def _explore_mod():
    from smmu import explore, scenarios  # noqa: F401  (registers the catalogue)
    return explore


def select_scenarios(cls, name: str | None):
    """The scenarios to run: one by name, or every applicable one of the default set."""
    explore = _explore_mod()
    from smmu.scenarios import default_names
    if name and name != "all":
        if name not in explore.SCENARIOS:
            raise CLIError(f"unknown scenario {name!r}: choose one of "
                           f"{', '.join(sorted(explore.SCENARIOS))} or all")
        sc = explore.SCENARIOS[name]
        if not sc.applies(cls):
            raise CLIError(f"scenario {name!r} does not apply to {cls.__name__} (e.g. it "
                           "needs notifier hooks the driver does not have); pick another")
        return [sc]
    return [explore.SCENARIOS[n] for n in default_names() if explore.SCENARIOS[n].applies(cls)]


def select_apis(cls, api: str | None, scenario=None) -> list[str]:
    supported = tuple(getattr(cls, "apis", API_GENERATIONS))
    if api is not None:
        if api not in API_GENERATIONS:
            raise CLIError(f"unknown api {api!r}: use one of {', '.join(API_GENERATIONS)}")
        if api not in supported:
            raise CLIError(f"{cls.__name__} supports {', '.join(supported)}, not {api!r}")
        return [api]
    return [a for a in API_GENERATIONS if a in supported]


def plan(cls, scenario_name, api):
    """(scenario, api) pairs to explore."""
    scs = select_scenarios(cls, scenario_name)
    apis = select_apis(cls, api)
    pairs = [(sc, a) for a in apis for sc in scs if a in tuple(sc.apis)]
    if not pairs:
        raise CLIError(f"nothing to run: no selected scenario supports {', '.join(apis)} "
                       f"with {cls.__name__}")
    return pairs


def run_check(cls, pairs, *, strategy="pct", schedules=200, seed=0, progress=None,
              stop_at_first=True):
    """Explore every pair; returns (findings, schedules_run, rows)."""
    explore = _explore_mod()
    findings, rows, total = [], [], 0
    for sc, api in pairs:
        if progress is not None:
            progress.label(f"{sc.name} [{api}]")
        cb = (lambda done, total: progress.advance(1)) if progress is not None else None
        ex = explore.explore(sc, cls, api, strategy=strategy, schedules=schedules, seed=seed,
                             stop_at_first=stop_at_first, progress=cb)
        total += ex.schedules_run
        if progress is not None:
            progress.advance(max(0, schedules - ex.schedules_run))
        rows.append({"scenario": sc.name, "api": api, "schedules_run": ex.schedules_run,
                     "violations": sorted({f.violation.kind for f in ex.findings})})
        findings.extend(ex.findings)
    return findings, total, rows


def _replay(finding, cls=None, trace=False):
    """Re-run ``finding`` (its minimal schedule when shrunk) with numbered steps."""
    explore = _explore_mod()
    if cls is not None and finding.driver is None:
        finding.driver = cls
    return explore.replay(finding, record_steps=True, trace=trace)


def _shrink(finding, max_runs=200):
    explore = _explore_mod()
    try:
        explore.shrink(finding, max_runs=max_runs)
    except UsageError as e:     # not reproducible: report the full schedule, say why
        structlog.get_logger("smmu").warning("shrink failed", finding=repr(finding),
                                             error=str(e))


def cmd_check(args) -> int:
    if args.strategy not in STRATEGIES:
        raise CLIError(f"unknown strategy {args.strategy!r}: use one of {', '.join(STRATEGIES)}")
    if args.schedules < 1:
        raise CLIError(f"--schedules must be at least 1, got {args.schedules}")
    cls = resolve_driver(args.driver)
    label = driver_label(cls, args.driver)
    pairs = plan(cls, args.scenario, args.api)
    t0 = time.perf_counter()
    with _Progress(len(pairs) * args.schedules, f"checking {label}") as prog:
        findings, total, rows = run_check(cls, pairs, strategy=args.strategy,
                                          schedules=args.schedules, seed=args.seed,
                                          progress=prog)
    elapsed = time.perf_counter() - t0
    from smmu.report import check_json, finding_text
    from smmu.trace import write_trace
    out = _console()
    for f in findings:
        _shrink(f)
        res = _replay(f, cls, trace=True)     # the hooks that ran go in the text report
        out.print(finding_text(f, driver=label, result=res), markup=False)
        from smmu.scenarios import known_window
        why = known_window(cls, f.scenario)
        if why:
            out.print(f"  known window: {cls.__name__} declares this scenario a window the "
                      f"driver it models really has: {why}", markup=False)
        out.print()
        if args.trace:
            path = Path(args.trace) / f"{_slug(label)}-{f.scenario}-{f.api}-{f.seed}.json"
            write_trace(path, res, title=f"smmu {label} {f.scenario} {f.api}",
                        metadata={"driver": label, "scenario": f.scenario, "api": f.api,
                                  "seed": f.seed})
            out.print(f"trace: {path} (open it in https://ui.perfetto.dev)", markup=False)
    _summary(out, label, rows, total, elapsed)
    if args.json:
        doc = check_json(label, total, findings, runs=rows, elapsed=elapsed, seed=args.seed,
                         strategy=args.strategy)
        for v in doc["violations"]:
            v["driver"] = label
        _write_json(args.json, doc)
    return EXIT_VIOLATIONS if findings else EXIT_CLEAN


def _slug(s):
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s)


def _write_json(path, doc):
    try:
        p = Path(path)
        if p.parent and not p.parent.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(doc, indent=2, default=repr) + "\n")
    except OSError as e:
        raise CLIError(f"cannot write {path!r}: {e.strerror or e}") from None


def _summary(out, label, rows, total, elapsed):
    from rich.table import Table
    t = Table(title=f"smmu check {label}: {total} schedules in {elapsed:.1f} s")
    t.add_column("scenario")
    t.add_column("api")
    t.add_column("schedules", justify="right")
    t.add_column("result")
    for r in rows:
        res = ("[red]" + ", ".join(r["violations"]) + "[/red]") if r["violations"] \
            else "[green]clean[/green]"
        t.add_row(r["scenario"], r["api"], str(r["schedules_run"]), res)
    out.print(t)


# --------------------------------------------------------------------------- replay

def cmd_replay(args) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CLIError(f"report file {args.file!r} not found")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CLIError(f"{args.file!r} is not a JSON report: {e}") from None
    entries = doc.get("violations") if isinstance(doc, dict) and "violations" in doc else [doc]
    if not entries:
        raise CLIError(f"{args.file!r} reports no violation to replay (it was clean)")
    if not (0 <= args.index < len(entries)):
        raise CLIError(f"--index {args.index} out of range: the report has {len(entries)} "
                       "violation(s)")
    entry = entries[args.index]
    fd = entry.get("finding", entry) if isinstance(entry, dict) else None
    if not isinstance(fd, dict) or "scenario" not in fd:
        raise CLIError(f"{args.file!r} entry {args.index} is not a replayable finding (write "
                       "one with `smmu check --json FILE`)")
    spec = entry.get("driver") or fd.get("driver") or doc.get("driver")
    if not spec:
        raise CLIError(f"{args.file!r} does not say which driver ran; add \"driver\"")
    cls = resolve_driver(spec)
    explore = _explore_mod()
    try:
        finding = explore.Finding.from_dict(fd)
    except (KeyError, TypeError, ValueError) as e:
        raise CLIError(f"{args.file!r} entry {args.index} is malformed: {e}") from None
    finding.driver = cls
    if finding.scenario not in explore.SCENARIOS:
        raise CLIError(f"the report names scenario {finding.scenario!r}, unknown here")
    res = _replay(finding, cls, trace=True)
    from smmu.report import finding_text
    out = _console()
    if res.violations:
        out.print(finding_text(finding, driver=spec, result=res), markup=False)
        same = any(v.kind == finding.violation.kind for v in res.violations)
        out.print(f"\nreplayed: {'reproduced' if same else 'a different violation:'} "
                  f"{', '.join(res.kinds())}", markup=False)
    else:
        out.print(f"replayed {finding.scenario} [{finding.api}]: no violation this time "
                  "(the driver or smmu changed since the report)", markup=False)
    if args.trace:
        from smmu.trace import write_trace
        write_trace(args.trace, res, title=f"smmu replay {finding.scenario}")
        out.print(f"trace: {args.trace}", markup=False)
    return EXIT_VIOLATIONS if res.violations else EXIT_CLEAN


# --------------------------------------------------------------------------- drivers

def cmd_drivers(args) -> int:
    from rich.table import Table
    builtin, buggy = _builtin()
    t = Table(title="smmu drivers (use the DRIVER name with smmu check)")
    t.add_column("DRIVER", no_wrap=True)
    t.add_column("apis", no_wrap=True)
    t.add_column("description")
    for n, c in sorted(builtin.items()):
        t.add_row(n, ",".join(getattr(c, "apis", API_GENERATIONS)), _first_line(c.__doc__))
    for n, c in sorted(buggy.items()):
        desc = getattr(c, "breaks", None) or _first_line(c.__doc__)
        exp = getattr(c, "expected", None)
        if exp:
            desc = f"{desc} (expect {', '.join(exp)})"
        t.add_row(BUGGY_PREFIX + n, ",".join(getattr(c, "apis", API_GENERATIONS)), str(desc))
    for n, ep in sorted(_entry_point_drivers().items()):
        t.add_row(n, "?", f"entry point {ep.value}")
    _console().print(t)
    return EXIT_CLEAN


def _first_line(doc):
    """The first sentence of a docstring, without reST markup."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    text = text.replace("``", "").replace(":class:", "").replace(":func:", "").replace("`", "")
    end = text.find(". ")
    return text[:end + 1] if end >= 0 else text


# --------------------------------------------------------------------------- bench

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
    out = _console()
    if args.name == "list":
        for n, f in sorted(BENCHES.items()):
            mod_doc = ""
            p = BENCH_DIR / f
            if p.is_file():
                import ast
                mod_doc = _first_line(ast.get_docstring(ast.parse(p.read_text())))
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
        _write_json(args.json, doc)
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


# --------------------------------------------------------------------------- demo

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
    explore = _explore_mod()
    builtin, buggy = _builtin()
    out = []
    for name, cls in sorted(builtin.items()):
        from smmu.scenarios import known_window   # declared true positives: not "clean"
        scs = [explore.SCENARIOS[s] for s in DEMO_SCENARIOS
               if s in explore.SCENARIOS and explore.SCENARIOS[s].applies(cls)
               and not known_window(cls, s)]
        pairs = [(sc, a) for a in select_apis(cls, None) for sc in scs if a in sc.apis]
        out.append((name, cls, pairs, True))
    for name, cls in [(n, buggy[n]) for n in DEMO_BUGGY if n in buggy]:
        names = [s for s in getattr(cls, "scenarios", ()) if s in explore.SCENARIOS][:2]
        apis = [a for a in getattr(cls, "apis", API_GENERATIONS)]
        pairs = [(explore.SCENARIOS[s], a) for a in apis for s in names
                 if a in explore.SCENARIOS[s].apis]
        out.append((BUGGY_PREFIX + name, cls, pairs, False))
    return out


def cmd_demo(args) -> int:
    from rich.table import Table
    from smmu.report import finding_text
    schedules = args.schedules or DEMO_SCHEDULES
    out = _console()
    out.print(f"smmu demo: the coherence checker on the built-in drivers and {len(DEMO_BUGGY)} "
              f"documented broken ones; PCT, {schedules} schedules per scenario and API.\n",
              markup=False)
    plan_ = demo_plan(schedules)
    t0 = time.perf_counter()
    cells, caught, total, ok = {}, None, 0, True
    with _Progress(sum(len(p) for _, _, p, _ in plan_) * schedules, "demo") as prog:
        for label, cls, pairs, expect_clean in plan_:
            for sc, api in pairs:
                # a broken driver may declare the search its window needs (search_strategies)
                strategy = getattr(cls, "search_strategies", ("pct",))[0]
                findings, n, _ = run_check(cls, [(sc, api)], strategy=strategy,
                                           schedules=schedules, seed=args.seed, progress=prog)
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
        _shrink(f)
        out.print(f"\nOne caught bug in detail: {label} "
                  f"({getattr(cls, 'breaks', None) or _first_line(cls.__doc__)})\n",
                  markup=False)
        out.print(finding_text(f, driver=label, result=_replay(f, cls, trace=True)),
                  markup=False)
        out.print(f"\nreproduce: smmu check {label} --scenario {f.scenario} --api {f.api} "
                  f"--seed {args.seed}", markup=False)
    out.print("\n" + ("built-in drivers clean, broken ones caught." if ok else
                      "UNEXPECTED: a built-in driver was flagged or a broken one was missed."),
              markup=False)
    return EXIT_CLEAN if ok else EXIT_VIOLATIONS


# --------------------------------------------------------------------------- parser

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
    c.add_argument("--strategy", default="pct", choices=STRATEGIES)
    c.add_argument("--schedules", type=_pos_int, default=200,
                   help="schedules per scenario and api (default 200)")
    c.add_argument("--seed", type=_nonneg_int, default=0)
    c.add_argument("--json", metavar="FILE", default=None, help="write the JSON report")
    c.add_argument("--trace", metavar="DIR", default=None,
                   help="write a Perfetto trace per violation into DIR")
    b = sub.add_parser("bench", help="run a benchmark (smmu bench list)")
    b.add_argument("name", metavar="NAME")
    b.add_argument("--json", metavar="FILE", default=None)
    b.add_argument("--plot", metavar="FILE", default=None)
    b.add_argument("--quick", action="store_true", help="a small run (seconds)")
    r = sub.add_parser("replay", help="re-run one reported violation from a JSON report")
    r.add_argument("file", metavar="FILE")
    r.add_argument("--index", type=_nonneg_int, default=0,
                   help="which violation of the report (default 0)")
    r.add_argument("--trace", metavar="FILE", default=None, help="write a Perfetto trace")
    return p


COMMANDS = {"demo": cmd_demo, "drivers": cmd_drivers, "check": cmd_check, "bench": cmd_bench,
            "replay": cmd_replay}


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
    except KeyboardInterrupt:
        print("smmu: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
