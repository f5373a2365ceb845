"""``smmu check`` (explore a driver's schedules for violations) and ``smmu replay`` (re-run
one reported violation)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import structlog
from rich.table import Table

from smmu.base.errors import UsageError
from smmu.cli.common import (EXIT_CLEAN, EXIT_VIOLATIONS, CLIError, ProgressBar, console,
                             resolve_driver, slug, write_json)
from smmu.explore import STRATEGIES, Finding, explore, replay, shrink
from smmu.explore.loader import driver_label
from smmu.notifier import API_GENERATIONS
from smmu.report import check_json, finding_text
from smmu.report.trace import write_trace
from smmu.scenarios import SCENARIOS, default_names, known_window


def select_scenarios(cls, name: str | None):
    """The scenarios to run: one by name, or every applicable one of the default set."""
    if name and name != "all":
        if name not in SCENARIOS:
            raise CLIError(f"unknown scenario {name!r}: choose one of "
                           f"{', '.join(sorted(SCENARIOS))} or all")
        sc = SCENARIOS[name]
        if not sc.applies(cls):
            raise CLIError(f"scenario {name!r} does not apply to {cls.__name__} (e.g. it "
                           "needs notifier hooks the driver does not have); pick another")
        return [sc]
    return [SCENARIOS[n] for n in default_names() if SCENARIOS[n].applies(cls)]


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
    findings, rows, total = [], [], 0
    for sc, api in pairs:
        if progress is not None:
            progress.label(f"{sc.name} [{api}]")
        cb = (lambda done, total: progress.advance(1)) if progress is not None else None
        ex = explore(sc, cls, api, strategy=strategy, schedules=schedules, seed=seed,
                             stop_at_first=stop_at_first, progress=cb)
        total += ex.schedules_run
        if progress is not None:
            progress.advance(max(0, schedules - ex.schedules_run))
        rows.append({"scenario": sc.name, "api": api, "schedules_run": ex.schedules_run,
                     "violations": sorted({f.violation.kind for f in ex.findings})})
        findings.extend(ex.findings)
    return findings, total, rows


def replay_finding(finding, cls=None, trace=False):
    """Re-run ``finding`` (its minimal schedule when shrunk) with numbered steps."""
    if cls is not None and finding.driver is None:
        finding.driver = cls
    return replay(finding, record_steps=True, trace=trace)


def shrink_finding(finding, max_runs=200):
    """Shrink ``finding``'s schedule; one that does not reproduce keeps its full schedule."""
    try:
        shrink(finding, max_runs=max_runs)
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
    with ProgressBar(len(pairs) * args.schedules, f"checking {label}") as prog:
        findings, total, rows = run_check(cls, pairs, strategy=args.strategy,
                                          schedules=args.schedules, seed=args.seed,
                                          progress=prog)
    elapsed = time.perf_counter() - t0
    out = console()
    for f in findings:
        shrink_finding(f)
        res = replay_finding(f, cls, trace=True)     # the hooks that ran go in the text report
        out.print(finding_text(f, driver=label, result=res), markup=False)
        why = known_window(cls, f.scenario)
        if why:
            out.print(f"  known window: {cls.__name__} declares this scenario a window the "
                      f"driver it models really has: {why}", markup=False)
        out.print()
        if args.trace:
            path = Path(args.trace) / f"{slug(label)}-{f.scenario}-{f.api}-{f.seed}.json"
            write_trace(path, res, title=f"smmu {label} {f.scenario} {f.api}",
                        metadata={"driver": label, "scenario": f.scenario, "api": f.api,
                                  "seed": f.seed})
            out.print(f"trace: {path} (open it in https://ui.perfetto.dev)", markup=False)
    summary(out, label, rows, total, elapsed)
    if args.json:
        doc = check_json(label, total, findings, runs=rows, elapsed=elapsed, seed=args.seed,
                         strategy=args.strategy)
        for v in doc["violations"]:
            v["driver"] = label
        write_json(args.json, doc)
    return EXIT_VIOLATIONS if findings else EXIT_CLEAN


def summary(out, label, rows, total, elapsed):
    """The table of what ``smmu check`` ran and found."""
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
    try:
        finding = Finding.from_dict(fd)
    except (KeyError, TypeError, ValueError) as e:
        raise CLIError(f"{args.file!r} entry {args.index} is malformed: {e}") from None
    finding.driver = cls
    if finding.scenario not in SCENARIOS:
        raise CLIError(f"the report names scenario {finding.scenario!r}, unknown here")
    res = replay_finding(finding, cls, trace=True)
    out = console()
    if res.violations:
        out.print(finding_text(finding, driver=spec, result=res), markup=False)
        same = any(v.kind == finding.violation.kind for v in res.violations)
        out.print(f"\nreplayed: {'reproduced' if same else 'a different violation:'} "
                  f"{', '.join(res.kinds())}", markup=False)
    else:
        out.print(f"replayed {finding.scenario} [{finding.api}]: no violation this time "
                  "(the driver or smmu changed since the report)", markup=False)
    if args.trace:
        write_trace(args.trace, res, title=f"smmu replay {finding.scenario}")
        out.print(f"trace: {args.trace}", markup=False)
    return EXIT_VIOLATIONS if res.violations else EXIT_CLEAN
