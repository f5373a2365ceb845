"""``smmu check``: explore a driver's schedules for violations; and what ``smmu replay`` and
``smmu demo`` share with it (planning, exploring, shrinking, replaying, the summary)."""

from __future__ import annotations

import contextlib
import functools
import time

from rich.table import Table

from smmu.base.errors import UsageError
from smmu.base.log import get_logger
from smmu.cli.common import (EXIT_CLEAN, EXIT_VIOLATIONS, CLIError, Command, ProgressBar,
                             configure_logging, console, nonneg_int, pos_int, resolve_driver,
                             slug, write_json, write_trace_file)
from smmu.explore import SEARCHES, explore, replay, shrink
from smmu.explore.cluster import cluster, explore_on, workers_of
from smmu.explore.coverage import Coverage
from smmu.explore.loader import driver_label, portable_spec
from smmu.explore.shards import SHARD_SIZE, PairCampaign
from smmu.notifier import API_GENERATIONS
from smmu.report import check_json, finding_text, findings_summary, report_groups, verdict
from smmu.scenarios import SCENARIOS, default_names, known_window
from smmu.sim import KERNELS, kernel_preset, kernels


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


def plan_kernels(cls, scenario_name, api, spec):
    """``--kernel``: ``(scenario, api, kernel)`` triples for every kernel ``spec`` names
    (each under its preset's generation unless ``--api`` overrides it), and the rows of the
    kernels the driver cannot run under (its ``apis`` exclude the generation)."""
    try:
        versions = kernels(spec)
    except UsageError as e:
        raise CLIError(str(e)) from None
    supported = tuple(getattr(cls, "apis", API_GENERATIONS))
    scs = select_scenarios(cls, scenario_name)
    triples, skipped = [], []
    for k in versions:
        kapi = api or kernel_preset(k).options["notifier_api"]
        if kapi not in supported:
            skipped.append({"kernel": k, "api": kapi, "scenario": None, "schedules_run": 0,
                            "violations": [], "skipped": f"{cls.__name__} supports "
                            f"{', '.join(supported)}, not {kapi}"})
            continue
        mine = [(sc, kapi, k) for sc in scs if kapi in tuple(sc.apis)]
        if not mine:
            skipped.append({"kernel": k, "api": kapi, "scenario": None, "schedules_run": 0,
                            "violations": [], "skipped": f"no selected scenario runs "
                            f"under {kapi}"})
        triples.extend(mine)
    if not triples:
        raise CLIError(f"nothing to run: {cls.__name__} runs under none of the kernels "
                       f"{', '.join(versions)} ({'; '.join(r['skipped'] for r in skipped)})")
    return triples, skipped


def run_row(sc, api, ex, kernel=None) -> dict:
    """The ``runs`` row of one exploration: what ran, what it found and what a clean result
    rests on (the strategy ``mix``, the exhaustive ``bound`` and whether it was
    ``complete``)."""
    row = {"scenario": sc.name, "api": api, "schedules_run": ex.schedules_run,
           "violations": sorted({f.violation.kind for f in ex.findings}),
           "strategy": ex.strategy, "mix": dict(ex.mix), "bound": ex.bound,
           "complete": ex.complete, "coverage": ex.coverage.table()}
    if kernel:
        row["kernel"] = kernel
    return row


def run_check(cls, pairs, *, strategy="portfolio", schedules=200, seed=0, progress=None,
              stop_at_first=True, client=None, shard_size=SHARD_SIZE, spec=None):
    """Explore every ``(scenario, api)`` pair, or ``(scenario, api, kernel)`` triple (the
    kernel preset goes to the simulator); returns (findings, schedules_run, rows). With a
    dask ``client`` the pairs run as shards on its cluster (:mod:`smmu.explore.shards`),
    with the same results; ``spec`` is how its workers load the driver (default: the
    class's ``module:QualName``)."""
    if client is not None:
        return _run_check_on(client, cls, pairs, strategy=strategy, schedules=schedules,
                             seed=seed, progress=progress, stop_at_first=stop_at_first,
                             shard_size=shard_size, spec=spec)
    findings, rows, total = [], [], 0
    for sc, api, *kern in pairs:
        kern = kern[0] if kern else None
        if progress is not None:
            progress.label(f"{sc.name} [{api}{' ' + kern if kern else ''}]")
        cb = (lambda done, total: progress.advance(1)) if progress is not None else None
        ex = explore(sc, cls, api, strategy=strategy, schedules=schedules, seed=seed,
                     stop_at_first=stop_at_first, progress=cb,
                     sim_options={"kernel": kern} if kern else None)
        total += ex.schedules_run
        if progress is not None:
            progress.advance(max(0, schedules - ex.schedules_run))
        rows.append(run_row(sc, api, ex, kern))
        findings.extend(ex.findings)
    return findings, total, rows


def _run_check_on(client, cls, pairs, *, strategy, schedules, seed, progress, stop_at_first,
                  shard_size, spec):
    """:func:`run_check` on a dask cluster: every pair's shards at once, merged in order."""
    campaign = [PairCampaign(i, sc, cls, api, strategy=strategy, schedules=schedules,
                             seed=seed, stop_at_first=stop_at_first,
                             sim_options={"kernel": kern[0]} if kern else None,
                             shard_size=shard_size, spec=spec)
                for i, (sc, api, *kern) in enumerate(pairs)]
    cb = None
    if progress is not None:
        def cb(pair, n):
            kern = pair.base["sim_options"].get("kernel")
            progress.label(f"{pair.scenario.name} [{pair.base['api']}"
                           f"{' ' + kern if kern else ''}] on {workers_of(client)} workers")
            progress.advance(n)
    findings, rows, total = [], [], 0
    for (sc, api, *kern), ex in zip(pairs, explore_on(client, campaign, progress=cb)):
        total += ex.schedules_run
        rows.append(run_row(sc, api, ex, kern[0] if kern else None))
        findings.extend(ex.findings)
    return findings, total, rows


def open_cluster(args):
    """The dask cluster ``--workers`` / ``--scheduler`` ask for (a null context without)."""
    workers, address = getattr(args, "workers", None), getattr(args, "scheduler", None)
    if workers is not None and address is not None:
        raise CLIError("--workers starts a local cluster and --scheduler uses a running one: "
                       "give one of them")
    if workers is None and address is None:
        return contextlib.nullcontext(None)
    # the workers log as this process does (warnings, info with -v, to stderr)
    return cluster(workers=workers, scheduler=address,
                   setup=functools.partial(configure_logging,
                                           getattr(args, "verbose", 0) -
                                           getattr(args, "quiet", 0)))


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
        get_logger().warning("shrink failed", finding=repr(finding),
                                             error=str(e))


def cmd_check(args) -> int:
    if args.strategy not in SEARCHES:
        raise CLIError(f"unknown strategy {args.strategy!r}: use one of {', '.join(SEARCHES)}")
    if args.schedules < 1:
        raise CLIError(f"--schedules must be at least 1, got {args.schedules}")
    cls = resolve_driver(args.driver)
    label = driver_label(cls, args.driver)
    skipped = []
    if getattr(args, "kernel", None):
        pairs, skipped = plan_kernels(cls, args.scenario, args.api, args.kernel)
    else:
        pairs = plan(cls, args.scenario, args.api)
    t0 = time.perf_counter()
    with open_cluster(args) as client, \
            ProgressBar(len(pairs) * args.schedules, f"checking {label}") as prog:
        findings, total, rows = run_check(cls, pairs, strategy=args.strategy,
                                          schedules=args.schedules, seed=args.seed,
                                          progress=prog, client=client,
                                          shard_size=getattr(args, "shard_size", None)
                                          or SHARD_SIZE, spec=portable_spec(args.driver))
    elapsed = time.perf_counter() - t0
    out = console()
    summary(out, label, rows, total, elapsed)
    coverage = merged_coverage(rows)
    coverage_summary(out, coverage)
    if getattr(args, "kernel", None):
        kernel_summary(out, label, rows + skipped)
    print_reports(out, cls, label, findings, args.max_reports, args.trace)
    if args.json:
        doc = check_json(label, total, findings, runs=rows + skipped, elapsed=elapsed,
                         seed=args.seed, strategy=args.strategy)
        doc["coverage"] = coverage
        if getattr(args, "kernel", None):
            doc["kernels"] = kernel_verdicts(rows + skipped)
        for v in doc["violations"]:
            v["driver"] = label
        write_json(args.json, doc)
    return EXIT_VIOLATIONS if findings else EXIT_CLEAN


def trace_name(label: str, finding) -> str:
    """The file name of a violation's trace in a ``--trace`` folder."""
    return f"{slug(label)}-{finding.scenario}-{finding.api}-{finding.seed}.json"


def print_reports(out, cls, label, findings, max_reports=3, trace_dir=None) -> None:
    """The findings' summary (one line per distinct (kind, scenario)), then a full report
    of the first ``max_reports`` groups: each group's finding with the shortest schedule,
    shrunk and replayed with its events (and a Perfetto trace per report where
    ``trace_dir``, a ``--trace`` argument, says: :func:`smmu.cli.common.trace_path`). The
    rest stay in the JSON, unshrunk."""
    if not findings:
        return
    shown = [g["finding"] for g in report_groups(findings)[:max_reports]]
    for f in shown:
        shrink_finding(f)
    groups = report_groups(findings)      # again: the shown ones' schedules are minimal now
    ids = {id(f) for f in shown}
    shown = [g["finding"] for g in groups if id(g["finding"]) in ids]
    out.print()
    for line in findings_summary(groups, shown):
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    for i, f in enumerate(shown):
        res = replay_finding(f, cls, trace=True)
        out.print()
        out.print(finding_text(f, driver=label, result=res), markup=False, highlight=False,
                  soft_wrap=True)
        why = known_window(cls, f.scenario)
        if why:
            out.print(f"  known window: {cls.__name__} declares this scenario a window the "
                      f"driver it models really has: {why}", markup=False)
        if trace_dir:
            path = write_trace_file(trace_dir, trace_name(label, f), res, index=i,
                                    title=f"smmu {label} {f.scenario} {f.api}",
                                    metadata={"driver": label, "scenario": f.scenario,
                                              "api": f.api, "seed": f.seed})
            out.print(f"trace: {path} (open it in https://ui.perfetto.dev)", markup=False,
                      soft_wrap=True)


def merged_coverage(rows) -> dict:
    """The interleaving coverage of every row, summed (:class:`Coverage` tables)."""
    total = Coverage()
    for r in rows:
        if r.get("coverage"):
            total.merge(Coverage.from_table(r["coverage"]))
    return total.table()


def coverage_summary(out, coverage) -> None:
    """What a clean verdict rests on: for each notifier hook, in how many runs a device
    fault step of another task came inside it (or it came inside a fault); for each device
    fault step, in how many runs a hook came between the snapshot and the map."""
    if not coverage["hooks"] and not coverage["faults"]:
        return
    t = Table(title="interleavings covered (runs where the other side came between)")
    t.add_column("notifier hook / device fault step")
    t.add_column("runs", justify="right")
    t.add_column("interleaved", justify="right")
    for label, rows in (("hook", coverage["hooks"]), ("fault: snapshot by", coverage["faults"])):
        for name, d in rows.items():
            hit = d["interleaved"]
            t.add_row(f"{label} {name}", str(d["runs"]),
                      f"[green]{hit}[/green]" if hit else "[red]0 (never)[/red]")
    out.print(t)


def summary(out, label, rows, total, elapsed):
    """The table of what ``smmu check`` ran and found."""
    t = Table(title=f"smmu check {label}: {total} schedules in {elapsed:.1f} s")
    by_kernel = any("kernel" in r for r in rows)
    if by_kernel:
        t.add_column("kernel")
    t.add_column("scenario")
    t.add_column("api")
    t.add_column("schedules", justify="right")
    t.add_column("result")
    for r in rows:
        res = ("[red]" + ", ".join(r["violations"]) + "[/red]") if r["violations"] \
            else ("[green]clean[/green]" +
                  (f" [dim](complete to bound {r['bound']})[/dim]" if r.get("complete")
                   else ""))
        cells = (r["scenario"], r["api"], str(r["schedules_run"]), res)
        t.add_row(*(((r.get("kernel", ""),) if by_kernel else ()) + cells))
    out.print(t)
    for r in rows:
        if r.get("scenario"):
            where = f"{r['scenario']} [{r['api']}{' ' + r['kernel'] if r.get('kernel') else ''}]"
            out.print(f"{where}: {verdict(r)}", markup=False, highlight=False)


def kernel_verdicts(rows) -> list[dict]:
    """One verdict per kernel from the check rows: ``{"kernel", "api", "scenarios",
    "schedules", "violations", "verdict"}`` (``"clean"``, ``"violations"`` or
    ``"not run: ..."``), in the order the kernels ran."""
    out: dict = {}
    for r in rows:
        k = r.get("kernel")
        if k is None:
            continue
        v = out.setdefault(k, {"kernel": k, "api": r["api"], "scenarios": 0, "schedules": 0,
                               "violations": set(), "skipped": r.get("skipped")})
        if r.get("scenario"):
            v["scenarios"] += 1
            v["schedules"] += r["schedules_run"]
            v["violations"] |= set(r["violations"])
    result = []
    order = list(KERNELS)
    for v in sorted(out.values(), key=lambda v: order.index(v["kernel"])):
        kinds = sorted(v.pop("violations"))
        skipped = v.pop("skipped")
        v["violations"] = kinds
        v["verdict"] = ("violations" if kinds else
                        f"not run: {skipped}" if skipped and not v["scenarios"] else "clean")
        result.append(v)
    return result


def kernel_summary(out, label, rows):
    """``--kernel``: a row per kernel, the answer to "which kernels is my driver correct
    on?"."""
    t = Table(title=f"{label} by kernel")
    for col in ("kernel", "api", "scenarios", "schedules", "verdict"):
        t.add_column(col, justify="right" if col in ("scenarios", "schedules") else "left")
    for v in kernel_verdicts(rows):
        verdict = ("[red]" + ", ".join(v["violations"]) + "[/red]" if v["violations"] else
                   "[green]clean[/green]" if v["verdict"] == "clean" else v["verdict"])
        t.add_row(v["kernel"], v["api"], str(v["scenarios"]), str(v["schedules"]), verdict)
    out.print(t)


def check_arguments(c) -> None:
    c.add_argument("driver", metavar="DRIVER",
                   help="kvm, gru, ..., buggy.NAME, package.module:Class or file.py:Class")
    c.add_argument("--scenario", default=None, help="a scenario name or all (default: all; "
                   "smmu scenarios lists them)")
    c.add_argument("--api", default=None, choices=API_GENERATIONS,
                   help="one notifier generation (default: every one the driver supports)")
    c.add_argument("--kernel", action="append", default=None, metavar="VERSION",
                   help="Linux release(s) to check under, as presets (e.g. 2.6.27, 5.10, "
                   "a comma-separated list, or all; repeatable): a row per kernel")
    c.add_argument("--strategy", default="portfolio", choices=tuple(SEARCHES),
                   help="portfolio (default: window-directed, exhaustive to preemption "
                   "bound 2, PCT depth 1-3 and random, sharing --schedules), or one of them")
    c.add_argument("--schedules", type=pos_int, default=200,
                   help="schedules per scenario and api (default 200)")
    c.add_argument("--seed", type=nonneg_int, default=0)
    c.add_argument("--json", metavar="FILE", default=None, help="write the JSON report")
    c.add_argument("--trace", metavar="DIR|FILE.json", default=None,
                   help="write the Perfetto trace of each full report into the folder DIR, "
                   "or to FILE.json (FILE-2.json... for more); smmu replay takes the same")
    c.add_argument("--max-reports", type=nonneg_int, default=3, metavar="N",
                   help="full reports printed after the summary, one per distinct (kind, "
                   "scenario), shortest schedule first (default 3; every finding is in "
                   "--json)")
    dist = c.add_mutually_exclusive_group()
    dist.add_argument("--workers", type=pos_int, default=None, metavar="N",
                      help="run the campaign on a local dask cluster of N worker processes "
                      "(same results as without; needs pip install 'smmu[dask]')")
    dist.add_argument("--scheduler", default=None, metavar="ADDRESS",
                      help="run the campaign on a running dask cluster, e.g. "
                      "tcp://host:8786 (workers on any machine with the same smmu)")
    c.add_argument("--shard-size", type=pos_int, default=None, metavar="N",
                   help="with --workers/--scheduler: sampled schedules per shard (default "
                   f"{SHARD_SIZE}; the results do not depend on it)")


COMMANDS = [Command("check", "explore schedules of a driver for violations", cmd_check,
                    check_arguments, order=30)]
