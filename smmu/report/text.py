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

import importlib.metadata
import os
import subprocess
from pathlib import Path

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


def hooks_text(trace, upto_step: int | None = None) -> list[str]:
    """One line per notifier hook call in a runtime trace: ``step 14-19 [cpu0]
    KVM.invalidate_range_start``."""
    lines = []
    open_: dict = {}
    for ph, name, tid, tname, _time, step, _args in trace or []:
        if upto_step is not None and step > upto_step:
            break
        if "." not in name:
            continue
        if ph == "B":
            open_.setdefault((tid, name), []).append(step)
        elif ph == "E":
            st = open_.get((tid, name))
            begun = st.pop() if st else step
            lines.append((begun, f"  step {begun}-{step} [{tname}] {name}"))
    for (tid, name), st in open_.items():
        for begun in st:
            lines.append((begun, f"  step {begun}-  [task {tid}] {name} (still running)"))
    return [text for _, text in sorted(lines, key=lambda x: x[0])]


def violation_text(v, *, scenario: str | None = None, api: str | None = None,
                   driver: str | None = None, seed=None, strategy: str | None = None,
                   trace=None, minimal: bool | None = None, choices=None,
                   preemptions=None) -> str:
    """The text report of one ``Violation``."""
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
    for label, stack in (v.stacks or {}).items():
        lines.append(f"  stack ({label}):")
        lines.extend(f"    {short_path(str(s))}" for s in stack)
    hooks = hooks_text(trace, v.step) if trace else []
    if hooks:
        lines.append("  notifier hooks that ran:")
        lines.extend("  " + h for h in hooks)
    sched = list(v.schedule or [])
    kind = "minimal schedule" if minimal else "schedule"
    if choices is not None:
        pre = f", {preemptions} preemption(s)" if preemptions is not None else ""
        lines.append(f"  {kind}: choices {_short_list(list(choices))}{pre}")
        sched = list(choices)
    if v.steps:
        lines.append(f"  steps of the run ({len(v.steps)} recorded):")
        lines.extend(steps_text(v.steps))
    elif sched and choices is None:
        lines.append(f"  {kind}: {len(sched)} choices (task ids) {_short_list(sched)}; run "
                     "`smmu replay` on the JSON report to see the numbered steps")
    return "\n".join(lines)


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
                          preemptions=getattr(finding, "preemptions", None))


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
    doc = {"driver": driver, "schedules_run": int(schedules_run),
           "violations": [violation_json(f) for f in findings],
           "clean": not findings}
    if strategy is not None:
        doc["strategy"] = strategy
    if seed is not None:
        doc["seed"] = seed
    if runs is not None:
        doc["runs"] = list(runs)
    if elapsed is not None:
        doc["elapsed_s"] = round(float(elapsed), 3)
    return doc
