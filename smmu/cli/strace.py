"""``smmu replay-strace FILE``: a real program's memory system calls replayed as a primary-MM
workload under each notifier API, with devices attached; prints the notifier traffic."""

from __future__ import annotations

import textwrap

from smmu.cli.common import EXIT_CLEAN, CLIError, Command, console, nonneg_int, write_json
from smmu.explore.loader import builtin_drivers
from smmu.study.strace import parse_file
from smmu.study.workloads import ALL_MODES, Config, run

REPLAY_DRIVERS = ("kvm", "gru", "xpmem")


def replay_strace(path, apis=("v2008", "range_only", "modern"), drivers=("kvm", "gru"),
                  seed=0, touch=4) -> dict:
    """Replay the trace in ``path`` under each of ``apis``; a JSON-able report."""
    trace = parse_file(path)              # a malformed line is an error before anything runs
    rows = []
    for api in apis:
        r = run(Config(f"strace:{path}", api, tuple(drivers), seed, trace=str(path),
                       device_gap_ns=5000.0))
        sites = {}
        for op, site, hook, _drv, n in r["hooks"]:
            sites.setdefault(f"{site} ({op})", {}).setdefault(hook, 0)
            sites[f"{site} ({op})"][hook] += n
        vm = sum(n for *_k, n in r["vm_calls"])
        cb = sum(n for *_k, n in r["hooks"])
        by_cb = {}
        for _op, _site, hook, drv, n in r["hooks"]:
            by_cb[f"{drv}.{hook}"] = by_cb.get(f"{drv}.{hook}", 0) + n
        rows.append({"api": api, "replayed": dict(r["extra"]["replay"]),
                     "vm_calls": vm, "callbacks": cb, "callbacks_by_hook": by_cb,
                     "by_site": sites, "window_ns": r["windows"]["all"]["ns"],
                     "window_steps": r["windows"]["all"]["steps"],
                     "latency_ns": r["latency_ns"], "simulated_ns": r["span_ns"],
                     "violations": r["violations"], "work": r["work"]})
    return {"trace": str(path), "lines": {"calls": len(trace.calls),
                                          "pids": len(trace.pids),
                                          "skipped": dict(trace.skipped),
                                          "unfinished": trace.unfinished},
            "drivers": list(drivers), "seed": seed, "apis": rows}


def _text(doc) -> list[str]:
    ln = doc["lines"]
    out = textwrap.wrap(f"{doc['trace']}: {ln['calls']} calls from {ln['pids']} pids"
                        + (f", {ln['unfinished']} never resumed" if ln["unfinished"] else "")
                        + f"; drivers {'+'.join(doc['drivers'])} on every address space",
                        79) + [""]
    head = f"{'api':<11} {'VM calls':>8} {'callbacks':>9} {'win p50 ns':>10} {'win p99 ns':>10}" \
           f" {'sim ms':>7} violations"
    out += [head, "-" * len(head)]
    for r in doc["apis"]:
        w = r["window_ns"]
        out.append(f"{r['api']:<11} {r['vm_calls']:>8} {r['callbacks']:>9} "
                   f"{w['p50']:>10.0f} {w['p99']:>10.0f} {r['simulated_ns'] / 1e6:>7.2f} "
                   f"{', '.join(r['violations']) or 'none'}")
    out.append("")
    for r in doc["apis"]:
        out.append(f"{r['api']}: driver callbacks by VM call site (operation)")
        for site, hooks in sorted(r["by_site"].items(), key=lambda kv: -sum(kv[1].values())):
            out.append(f"  {site:<34} " + ", ".join(f"{SHORT.get(h, h)} {n}"
                                                    for h, n in sorted(hooks.items())))
    rep = doc["apis"][0]["replayed"] if doc["apis"] else {}
    if rep:
        out += [""] + textwrap.wrap("replayed: " + ", ".join(f"{k} {v}" for k, v in
                                                          sorted(rep.items())), 79)
    return out


SHORT = {"invalidate_range_start": "start", "invalidate_range_end": "end",
         "invalidate_page": "page", "clear_flush_young": "young"}


def cmd_replay_strace(args) -> int:
    apis = tuple(a.strip() for a in args.api.split(",")) if args.api else \
        ("v2008", "range_only", "modern")
    for a in apis:
        if a not in ALL_MODES:
            raise CLIError(f"--api {a!r}: use v2008, v2008-outside-ptl, range_only or modern")
    drivers = tuple(d.strip() for d in args.drivers.split(",") if d.strip())
    known = builtin_drivers()
    for d in drivers:
        if d not in REPLAY_DRIVERS or d not in known:
            raise CLIError(f"--drivers {d!r}: replay-strace attaches {', '.join(REPLAY_DRIVERS)}")
    if "xpmem" in drivers and "v2008" in apis:
        raise CLIError("XPMEM sleeps in invalidate_page, which v2008 calls under the PT lock: "
                       "use --api v2008-outside-ptl,range_only,modern with xpmem")
    doc = replay_strace(args.file, apis, drivers, args.seed)
    out = console()
    for line in _text(doc):
        out.print(line, markup=False)
    if args.json:
        write_json(args.json, doc)
    return EXIT_CLEAN


def strace_arguments(t) -> None:
    t.add_argument("file", metavar="FILE.strace")
    t.add_argument("--json", metavar="FILE", default=None)
    t.add_argument("--api", default=None,
                   help="comma-separated: v2008, v2008-outside-ptl, range_only, modern "
                        "(default: v2008,range_only,modern)")
    t.add_argument("--drivers", default="kvm,gru",
                   help="drivers on every address space: kvm, gru, xpmem (default kvm,gru)")
    t.add_argument("--seed", type=nonneg_int, default=0)


COMMANDS = [Command("replay-strace", "replay a program's strace -f -e trace=memory,process "
                    "output as a workload; print notifier traffic per API", cmd_replay_strace,
                    strace_arguments, order=60)]

__all__ = ["COMMANDS", "cmd_replay_strace", "replay_strace"]
