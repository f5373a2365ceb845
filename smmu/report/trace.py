"""Export a run as a Chrome / Perfetto trace-event JSON file (opens in ui.perfetto.dev).

The runtime records, when a run is traced (``trace=True``), tuples
``(ph, name, tid, task_name, time_ns, step, args)`` in ``Result.trace``: ``"B"``/``"E"`` spans
for notifier hooks (and MM operations / device faults where the lower layers emit them) and
``"i"`` instants for violations. This module turns them into the JSON object format of the
Trace Event Format (https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU):
one process, one track (thread) per task with ``tid`` = the task id and its name as the
thread name, timestamps in microseconds of *simulated* time (each task's own clock), spans
balanced per track (a span still open when the run stopped is closed at the track's last
timestamp), and one instant per violation on the track of the task that found it.
"""

from __future__ import annotations

import json
from pathlib import Path

#: the track of the setup pseudo-task (tid -1 in the runtime; trace viewers want >= 0)
SETUP_TID = 1_000_000
PID = 1


def _tid(tid: int) -> int:
    return SETUP_TID if tid < 0 else int(tid)


def _jsonable(v):
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return repr(v)


def chrome_trace(events, violations=(), *, title: str = "smmu", metadata: dict | None = None
                 ) -> dict:
    """The trace-event JSON object for runtime trace tuples ``events`` (``Result.trace``)
    and ``violations`` (``Violation`` objects; each becomes an instant on its task's track
    unless the runtime already recorded one for it)."""
    out: list[dict] = []
    names: dict[int, str] = {}
    open_spans: dict[int, list[str]] = {}
    last_ts: dict[int, float] = {}
    recorded_instants = set()
    for ev in events:
        ph, name, tid, tname, time_ns, step, args = ev
        t = _tid(tid)
        names.setdefault(t, tname)
        ts = float(time_ns) / 1000.0
        ts = max(ts, last_ts.get(t, 0.0))   # one clock per task: never go backwards
        last_ts[t] = ts
        a = _jsonable(dict(args or {}))
        a["step"] = step
        if ph == "B":
            open_spans.setdefault(t, []).append(name)
            out.append({"name": name, "cat": _category(name), "ph": "B", "ts": ts, "pid": PID,
                        "tid": t, "args": a})
        elif ph == "E":
            stack = open_spans.get(t)
            if not stack:
                continue   # an end whose begin was not traced: drop it, keep the file valid
            begun = stack.pop()
            out.append({"name": begun, "cat": _category(begun), "ph": "E", "ts": ts,
                        "pid": PID, "tid": t, "args": a})
        else:
            recorded_instants.add((name, step))
            out.append({"name": name, "cat": "violation" if name[:1].isupper() else "event",
                        "ph": "i", "s": "t", "ts": ts, "pid": PID, "tid": t, "args": a})
    for t, stack in open_spans.items():
        while stack:
            name = stack.pop()
            out.append({"name": name, "cat": _category(name), "ph": "E",
                        "ts": last_ts.get(t, 0.0), "pid": PID, "tid": t,
                        "args": {"note": "still open when the run stopped"}})
    tid_of = {n: t for t, n in names.items()}
    for v in violations:
        if (v.kind, v.step) in recorded_instants:
            continue
        t = tid_of.get(v.task, SETUP_TID if v.task in (None, "setup") else len(names) + 1)
        names.setdefault(t, v.task or "setup")
        out.append({"name": v.kind, "cat": "violation", "ph": "i", "s": "g" if v.task is None
                    else "t", "ts": float(v.time_ns) / 1000.0, "pid": PID, "tid": t,
                    "args": {"message": v.message, "step": v.step,
                             "address": hex(v.address) if v.address is not None else None,
                             "frames": list(v.frames)}})
    meta = [{"name": "process_name", "ph": "M", "pid": PID, "tid": 0,
             "args": {"name": title}}]
    for t, n in sorted(names.items()):
        meta.append({"name": "thread_name", "ph": "M", "pid": PID, "tid": t,
                     "args": {"name": f"{n} (task {t if t != SETUP_TID else -1})"}})
        meta.append({"name": "thread_sort_index", "ph": "M", "pid": PID, "tid": t,
                     "args": {"sort_index": t}})
    doc = {"traceEvents": meta + out, "displayTimeUnit": "ns"}
    if metadata:
        doc["otherData"] = _jsonable(metadata)
    return doc


def _category(name: str) -> str:
    if "." in name:
        return "hook"
    if name.startswith("fault") or "fault" in name:
        return "fault"
    return "mm"


def result_trace(result, *, title: str = "smmu", metadata: dict | None = None) -> dict:
    """:func:`chrome_trace` of a ``Result`` (run with ``trace=True``)."""
    return chrome_trace(getattr(result, "trace", None) or [], result.violations, title=title,
                        metadata=metadata)


def write_trace(path, result, *, title: str = "smmu", metadata: dict | None = None) -> Path:
    """Write the trace of ``result`` to ``path`` (a ``.json`` file) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = result_trace(result, title=title, metadata=metadata)
    path.write_text(json.dumps(doc, separators=(",", ":")))
    return path


def validate(doc) -> list[str]:
    """Problems that would stop a trace viewer from loading ``doc`` (empty: loadable).
    Checks the object form, required fields per phase, numeric timestamps, and that B/E
    spans are balanced and properly nested per track."""
    problems = []
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        return ["not a JSON object with a traceEvents list"]
    stacks: dict = {}
    last: dict = {}
    for i, ev in enumerate(doc["traceEvents"]):
        if not isinstance(ev, dict):
            problems.append(f"event {i} is not an object")
            continue
        ph = ev.get("ph")
        for key in ("name", "ph", "pid", "tid"):
            if key not in ev:
                problems.append(f"event {i} has no {key!r}")
        if ph not in ("B", "E", "i", "I", "X", "M", "C"):
            problems.append(f"event {i} has unknown phase {ph!r}")
        if ph != "M":
            ts = ev.get("ts")
            if not isinstance(ts, (int, float)) or ts < 0:
                problems.append(f"event {i} has a bad ts {ts!r}")
                continue
            key = (ev.get("pid"), ev.get("tid"))
            if ph in ("B", "E") and ts < last.get(key, 0):
                problems.append(f"event {i}: span time goes backwards on track {key}")
            if ph in ("B", "E"):
                last[key] = ts
            if ph == "B":
                stacks.setdefault(key, []).append(ev.get("name"))
            elif ph == "E":
                st = stacks.get(key)
                if not st:
                    problems.append(f"event {i}: E without B on track {key}")
                else:
                    st.pop()
        if "args" in ev and not isinstance(ev["args"], dict):
            problems.append(f"event {i}: args is not an object")
    for key, st in stacks.items():
        if st:
            problems.append(f"track {key}: {len(st)} span(s) never ended: {st}")
    try:
        json.dumps(doc)
    except (TypeError, ValueError) as e:
        problems.append(f"not serialisable: {e}")
    return problems
