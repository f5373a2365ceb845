"""Readable and machine reports of what the checker found.

* :func:`violation_text` / :func:`finding_text`: the text report of one violation: kind,
  address, frames, the message, the stacks, which notifier hooks ran when (from the trace, if
  the run was traced) and the minimal schedule as numbered steps with task names and source
  locations (``Violation.steps``, recorded when the run had ``record_steps=True``).
* :func:`check_json`: the document ``smmu check --json`` writes, as DESIGN.md specifies:
  ``{"driver", "schedules_run", "violations": [{"kind", "scenario", "api", "seed",
  "address", "message", "schedule"}], ...}``; its ``runs`` rows say what each (scenario,
  api) was explored with (``mix``, ``bound``, ``complete``), and :func:`verdict` says it in
  words.

Source paths are shown relative to the project root when they are under it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import os
import subprocess
from pathlib import Path

from smmu.oracle.rules import fix_hint

#: steps shown around the end of a long schedule (the start is summarised)
MAX_STEPS_SHOWN = 60

#: the project root (source paths under it are shown relative to it)
_ROOT = str(Path(__file__).resolve().parents[2]) + os.sep


_REVISION: list = []


def smmu_revision() -> str:
    """smmu's version and, in a git checkout, its commit (``0.1.0+g1a2b3c4``, ``-dirty``
    when the tree has changes): what a report records and ``smmu replay`` compares."""
    if not _REVISION:
        rev = _version()
        try:
            root = str(Path(__file__).resolve().parents[2])
            head = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"],
                                  capture_output=True, text=True, timeout=5)
            if head.returncode == 0 and head.stdout.strip():
                rev += f"+g{head.stdout.strip()}"
                dirty = subprocess.run(["git", "-C", root, "status", "--porcelain",
                                        "--untracked-files=no", "--", "smmu", "primary_mm",
                                        "drivers"], capture_output=True, text=True, timeout=5)
                if dirty.returncode == 0 and dirty.stdout.strip():
                    rev += "-dirty"
        except (OSError, subprocess.SubprocessError):
            pass
        _REVISION.append(rev)
    return _REVISION[0]


def driver_revision(driver) -> str | None:
    """What a report records of the driver's code: the first 12 hex digits of the SHA-256 of
    its class's source file (``smmu replay`` warns when the file it loads differs), or None
    when the source cannot be found."""
    try:
        path = inspect.getsourcefile(driver) if not isinstance(driver, str) else None
    except TypeError:
        path = None
    if not path:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    except OSError:
        return None


def _version() -> str:
    try:
        return importlib.metadata.version("smmu")
    except importlib.metadata.PackageNotFoundError:     # pragma: no cover - not installed
        return "0+unknown"


def short_path(where: str) -> str:
    """``/abs/project/smmu/x.py:12 in f`` -> ``smmu/x.py:12 in f``."""
    if where.startswith(_ROOT):
        return where[len(_ROOT):]
    cwd = os.getcwd() + os.sep
    if where.startswith(cwd):
        return where[len(cwd):]
    return where


def _short_paths(text: str) -> str:
    """``text`` with the project root taken off the source paths it names."""
    return text.replace(_ROOT, "")


def _hex(a):
    return f"{a:#x}" if isinstance(a, int) else "-"


def steps_text(steps, limit: int = MAX_STEPS_SHOWN) -> list[str]:
    """Numbered lines ``  12. [dev0] drivers/kvm.py:88 in access`` for recorded steps
    ``(step, tid, task name, "file:line in func")``; a long schedule keeps its last ``limit``
    steps (the ones that lead to the violation) and says how many were left out."""
    steps = list(steps)
    lines = []
    setup = [st for st in steps if st[1] < 0]
    if setup and len(setup) < len(steps):      # build-time work done with sim.do()
        steps = [st for st in steps if st[1] >= 0]
        lines.append(f"  ({len(setup)} setup step(s) of the scenario's build not shown)")
    if len(steps) > limit:
        lines.append(f"  ... {len(steps) - limit} earlier step(s) not shown ...")
        steps = steps[-limit:]
    for step, _tid, name, where in steps:
        lines.append(f"  {step:4d}. [{name}] {short_path(str(where))}")
    return lines


def violation_text(v, *, scenario: str | None = None, api: str | None = None,
                   driver: str | None = None, seed=None, strategy: str | None = None,
                   trace=None, minimal: bool | None = None, choices=None,
                   preemptions=None, result=None) -> str:
    """The text report of one ``Violation``, read top-down like a kernel oops: what broke
    (kind, address, message with the Linux rule), where (task, step, time, driver line),
    what to change (``fix:``, from the rule broken), the schedule as preemptions and the
    events of the run, step by step, each with its source line (``trace``: the run's
    ``Result.trace``, recorded by :class:`smmu.sim.TraceRecorder`; ``result``: the
    replay's ``Result``, whose ``choice_log`` says which switches were preemptions)."""
    head = f"{v.kind} at {_hex(v.address)}"
    ctx = [f"{k} {val}" for k, val in (("driver", driver), ("scenario", scenario),
                                         ("api", api), ("strategy", strategy),
                                         ("seed", seed)) if val is not None]
    lines = [head + (f"  ({', '.join(ctx)})" if ctx else "")]
    lines.append(f"  {_short_paths(v.message)}")
    lines.append(f"  task: {v.task or '-'}   step: {v.step}   simulated time: "
                 f"{v.time_ns:.0f} ns")
    if v.frames:
        lines.append(f"  frames: {', '.join(str(f) for f in v.frames)}")
    for k, val in (v.details or {}).items():
        lines.append(f"  {k}: {_short_paths(val) if isinstance(val, str) else val}")
    hint = fix_hint(v.kind, v.details)
    if hint:
        lines.append(f"  fix: {hint}")
    for label, stack in (v.stacks or {}).items():
        lines.append(f"  stack ({label}):")
        lines.extend(f"    {short_path(str(s))}" for s in stack)
    sched = list(v.schedule or [])
    kind = "minimal schedule" if minimal else "schedule"
    events = [ev for ev in (trace or []) if _text(ev)]
    described = schedule_text(v, events, result) if events and v.steps else None
    if described:
        pre = f", {preemptions} preemption(s)" if preemptions is not None else ""
        lines.append(f"  {kind}{pre}: {described}")
    elif choices is not None:
        pre = f", {preemptions} preemption(s)" if preemptions is not None else ""
        lines.append(f"  {kind}: choices {_short_list(list(choices))}{pre}")
    if events:
        lines.append("  steps of the run (events; the step numbers are those `smmu replay` "
                     "shows):")
        lines.extend(events_text(events, v.step))
    elif v.steps:
        lines.append(f"  steps of the run ({len(v.steps)} recorded):")
        lines.extend(steps_text(v.steps))
    elif sched and choices is None:
        lines.append(f"  {kind}: {len(sched)} choices (task ids) {_short_list(sched)}; run "
                     "`smmu replay` on the JSON report to see the numbered steps")
    return "\n".join(lines)


def _text(ev) -> str | None:
    """The readable line of a trace record: its ``text`` (:class:`smmu.sim.TraceRecorder`),
    else the name of a span's begin or of an instant (events other code traced); None for
    what the steps do not list (an empty ``text``: span ends, MM operation spans; device
    fault spans)."""
    ph, name, _tid, _tn, _t, _step, args = ev
    args = args if isinstance(args, dict) else {}
    if args.get("cat") == "fault":
        return None
    if "text" in args:
        return args["text"] or None
    return name if ph in ("B", "i") else None


def _site(where: str) -> str:
    """``/abs/drivers/kvm.py:97 in page_fault`` -> ``drivers/kvm.py:97``."""
    return short_path(str(where)).split(" in ", 1)[0] if where else ""


def events_text(events, upto_step: int | None = None, limit: int = MAX_STEPS_SHOWN
                ) -> list[str]:
    """The steps of a run as events: ``   17  dev0  GUP 0x7f0000000000 -> pfn 2
    drivers/kvm.py:97``, one line per event of :class:`smmu.sim.TraceRecorder` (its
    ``text``), with the step it happened in, the task that did it (one name per task) and
    its source line. Setup work (the scenario's build) is counted, not shown; a long run
    keeps its last ``limit`` events (those that lead to the violation)."""
    shown, setup = [], 0
    for ev in events:
        tid, tname, step, args = ev[2], ev[3], ev[5], ev[6] or {}
        if upto_step is not None and step > upto_step:
            break
        text = _text(ev)
        if not text:
            continue      # device fault spans are for the trace; their GUP and map are here
        if tid < 0:
            setup += 1
            continue
        shown.append((step, tname, text, _site(args.get("where", ""))))
    lines = []
    if setup:
        lines.append(f"  ({setup} event(s) of the scenario's setup not shown)")
    if len(shown) > limit:
        lines.append(f"  ... {len(shown) - limit} earlier event(s) not shown ...")
        shown = shown[-limit:]
    width = max((len(n) for _, n, _, _ in shown), default=4)
    for step, tname, text, where in shown:
        head = f"  {step:5d}  {tname:<{width}}  {_short_paths(text)}"
        if where:
            # the source line at column 60, or further left so that the line fits 80
            # columns (a report is read in a terminal and printed by rich, which wraps)
            pad = max(2, min(60, 80 - len(where)) - len(head))
            head = f"{head}{' ' * pad}{where}"
        lines.append(head)
    return lines


#: the most segments of a schedule described one by one (the middle is summarised)
MAX_SEGMENTS_SHOWN = 8


def schedule_text(v, events, result=None) -> str | None:
    """The schedule of a replayed run in words: "run dev0 until after GUP 0x1000 (step 17);
    preempt dev0, run cpu0 until end (step 37); run dev0 until the violation (step 39)".
    Segments come from the violation's recorded steps (``v.steps``), the words from the
    last event of each segment; a switch is a preemption when the replay's ``choice_log``
    (``result.choice_log``) shows the previous task could have continued."""
    steps = [(st, tid, name) for st, tid, name, _ in (v.steps or []) if tid >= 0]
    if not steps:
        return None
    segs = []           # [task name, tid, first step, last step]
    for st, tid, name in steps:
        if segs and segs[-1][1] == tid:
            segs[-1][3] = st
        else:
            segs.append([name, tid, st, st])
    choice = {c[0]: c for c in (getattr(result, "choice_log", None) or [])}
    done = set(getattr(result, "results", {}) or {})
    last_event: dict = {}
    for ev in events:
        text = _text(ev)
        if ev[2] >= 0 and text:
            last_event.setdefault(ev[2], []).append((ev[5], text))
    later = {}
    for i, (_name, tid, _a, _b) in enumerate(segs):
        later[tid] = i          # the last segment of each task

    def until(tid, first, last, waits):
        evs = [t for s, t in last_event.get(tid, ()) if first <= s <= last]
        what = "it waits " if waits else ""
        if evs:
            return f"until {what}after {_short_paths(evs[-1])} (step {last})"
        return f"until {what}at step {last}" if waits else f"to step {last}"

    phrases = []
    for i, (name, tid, first, last) in enumerate(segs):
        pre = ""
        if i:
            c = choice.get(first)
            pname, ptid = segs[i - 1][0], segs[i - 1][1]
            if c is not None and c[2] == ptid and ptid in c[1]:
                pre = f"preempt {pname}, "
        if i == len(segs) - 1:
            tail = f"until the violation (step {v.step})" if v.step >= first else "until end"
        elif later[tid] == i and name in done:
            tail = f"until end (step {last})"
        else:
            nxt = choice.get(segs[i + 1][2])
            preempted = nxt is not None and nxt[2] == tid and tid in nxt[1]
            tail = until(tid, first, last, not preempted)
        phrases.append(f"{pre}run {name} {tail}")
    if len(phrases) > MAX_SEGMENTS_SHOWN:
        k = MAX_SEGMENTS_SHOWN // 2
        phrases = phrases[:k] + [f"... {len(phrases) - 2 * k} more switch(es) ..."] + \
            phrases[-k:]
    return "; ".join(phrases)


def _short_list(xs, n: int = 40) -> str:
    if len(xs) <= n:
        return str(list(xs))
    return "[" + ", ".join(map(str, xs[:n])) + f", ... {len(xs) - n} more]"


def finding_text(finding, *, driver: str | None = None, result=None) -> str:
    """The text report of a ``smmu.explore.Finding`` (``result``: a replay of it with
    ``record_steps=True`` and maybe ``trace=True``, whose violation carries the steps)."""
    v = finding.violation
    trace = None
    if result is not None:
        same = [w for w in result.violations if w.kind == v.kind] or result.violations
        if same:
            v = same[0]
        trace = getattr(result, "trace", None)
    minimal = getattr(finding, "minimal", None)
    return violation_text(v, scenario=finding.scenario, api=finding.api, driver=driver,
                          seed=finding.seed, strategy=finding.strategy, trace=trace,
                          minimal=minimal is not None,
                          choices=minimal if minimal is not None else finding.choices,
                          preemptions=getattr(finding, "preemptions", None), result=result)


def violation_json(finding) -> dict:
    """One entry of the ``violations`` list of ``smmu check --json``: the DESIGN.md keys,
    then everything needed to replay it (``choices``, ``strategy``, ``driver``...)."""
    v = finding.violation
    d = {"kind": v.kind, "scenario": finding.scenario, "api": finding.api,
         "seed": finding.seed, "address": v.address, "message": v.message,
         "schedule": list(_best_choices(finding))}
    d["strategy"] = finding.strategy
    d["minimal"] = bool(getattr(finding, "minimal", False))
    d["task"] = v.task
    d["step"] = v.step
    d["frames"] = list(v.frames)
    drv = getattr(finding, "driver", None)
    if drv is not None and not isinstance(drv, str):
        d["driver_revision"] = driver_revision(drv)
    to_dict = getattr(finding, "to_dict", None)
    if to_dict is not None:
        d["finding"] = to_dict()
    return d


def _best_choices(finding):
    minimal = getattr(finding, "minimal", None)
    if minimal is not None:
        return minimal
    return getattr(finding, "choices", None) or finding.violation.schedule or []


#: how a strategy of the mix is named in a verdict
_MIX_NAMES = {"windows": "window-directed", "exhaustive": "exhaustive", "random": "random"}


def mix_text(mix: dict, bound=None, complete=None) -> str:
    """``{"windows": 60, "pct1": 20, ...}`` as "60 window-directed, 60 exhaustive to
    preemption bound 2 (not complete), 60 PCT depth 1-3, 20 random"."""
    parts = []
    pct = sorted((int(k[3:]), n) for k, n in mix.items() if k.startswith("pct"))
    for k, n in mix.items():
        if k.startswith("pct"):
            continue
        if k == "exhaustive" and bound is not None:
            state = "complete" if complete else "not complete"
            parts.append(f"{n} exhaustive to preemption bound {bound} ({state})")
        else:
            parts.append(f"{n} {_MIX_NAMES.get(k, k)}")
    if pct:
        depths = [d for d, _ in pct]
        d = f"{depths[0]}-{depths[-1]}" if len(depths) > 1 else str(depths[0])
        parts.insert(len(parts) - ("random" in mix), f"{sum(n for _, n in pct)} PCT depth {d}")
    return ", ".join(parts)


def verdict(row: dict) -> str:
    """What one (scenario, api) run of ``smmu check`` rests on: "clean: exhaustive to
    preemption bound 2 (N schedules, complete)", "clean under N schedules (...the mix...)",
    or the kinds found. ``row``: ``{"schedules_run", "violations", "complete", "bound",
    "mix"}`` (the ``runs`` rows of :func:`check_json`)."""
    n = row.get("schedules_run", 0)
    if row.get("violations"):
        return f"{', '.join(row['violations'])} (after {n} schedules)"
    if row.get("complete"):
        extra = {k: v for k, v in (row.get("mix") or {}).items() if k != "exhaustive"}
        tail = f"; and {mix_text(extra)}" if extra else ""
        return (f"clean: exhaustive to preemption bound {row.get('bound')} "
                f"({(row.get('mix') or {}).get('exhaustive', n)} schedules, complete){tail}")
    mix = row.get("mix") or {}
    return f"clean under {n} schedules ({mix_text(mix, row.get('bound'), False)})"


def check_json(driver: str, schedules_run: int, findings, *, runs=None, elapsed=None,
               seed=None, strategy=None) -> dict:
    """The document ``smmu check --json FILE`` writes. ``runs``: per (scenario, api) rows
    ``{"scenario", "api", "schedules_run", "violations"}``."""
    doc = {"driver": driver, "smmu_revision": smmu_revision(),
           "schedules_run": int(schedules_run),
           "violations": [violation_json(f) for f in findings],
           "clean": not findings}
    if findings:
        doc["groups"] = [{k: g[k] for k in ("kind", "scenario", "apis", "count", "shortest")}
                         for g in report_groups(findings)]
    if strategy is not None:
        doc["strategy"] = strategy
    if seed is not None:
        doc["seed"] = seed
    if runs is not None:
        doc["runs"] = list(runs)
    if elapsed is not None:
        doc["elapsed_s"] = round(float(elapsed), 3)
    return doc


def _schedule_len(finding) -> int:
    return len(list(_best_choices(finding)))


def report_groups(findings) -> list[dict]:
    """The findings grouped by (kind, scenario), one entry each: ``kind``, ``scenario``,
    ``apis`` (where it was found), ``count``, ``finding`` (the one with the shortest
    schedule: minimal when shrunk, else as found), ``shortest`` (its length). Ordered so
    that every kind comes once before any kind comes twice (the first reports show as many
    different bugs as they can), each kind's groups by their shortest schedule."""
    groups: dict = {}
    for f in findings:
        g = groups.setdefault((f.violation.kind, f.scenario),
                              {"kind": f.violation.kind, "scenario": f.scenario, "apis": [],
                               "count": 0, "finding": f, "shortest": _schedule_len(f)})
        g["count"] += 1
        if f.api not in g["apis"]:
            g["apis"].append(f.api)
        n = _schedule_len(f)
        if n < g["shortest"]:
            g["finding"], g["shortest"] = f, n
    by_kind: dict = {}
    for g in groups.values():
        by_kind.setdefault(g["kind"], []).append(g)
    for gs in by_kind.values():
        gs.sort(key=lambda g: g["shortest"])
    out, rank = [], 0
    while True:
        batch = [gs[rank] for gs in by_kind.values() if len(gs) > rank]
        if not batch:
            return out
        out.extend(batch)
        rank += 1


def findings_summary(groups, shown=()) -> list[str]:
    """The summary of every finding, above the full reports: one line per (kind,
    scenario) group (its count, shortest schedule and the apis it was found under), those
    in ``shown`` (findings that get a full report below) marked ``*``."""
    total = sum(g["count"] for g in groups)
    ids = {id(f) for f in shown}
    n = sum(1 for g in groups if id(g["finding"]) in ids)
    lines = [f"{total} finding(s) in {len(groups)} distinct (kind, scenario); "
             + (f"{n} full report(s) below (*)" if n else "no full report (--max-reports 0)")]
    if n < len(groups):
        lines.append("the rest are counted here and kept in --json (--max-reports N shows "
                     "more)")
    kw = max(len(g["kind"]) for g in groups) if groups else 4
    sw = max(len(g["scenario"]) for g in groups) if groups else 8
    for g in groups:
        mark = "*" if id(g["finding"]) in ids else " "
        lines.append(f" {mark} {g['kind']:<{kw}}  {g['scenario']:<{sw}}  {g['count']:>3}x  "
                     f"{g['shortest']:>5} choices  {', '.join(g['apis'])}")
    return lines
