"""Export a run as a Chrome / Perfetto trace-event JSON file (opens in ui.perfetto.dev).

The runtime records, when a run is traced (``trace=True``), tuples
``(ph, name, tid, task_name, time_ns, step, args)`` in ``Result.trace``: the events of
:class:`smmu.sim.TraceRecorder`, ``"B"``/``"E"`` spans (notifier hook calls, MM operations'
invalidation windows, device faults from their snapshot to their map) and ``"i"`` instants
(GUP and lockless walks, secondary map / unmap, DMA accesses, PTEs cleared, zapped, copied or
moved, CPU accesses, violations), each with its category (``args["cat"]``), its readable
text and its source line. This module turns them into the JSON object format of the Trace
Event Format (https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU):
one process, one track (thread) per task with ``tid`` = the task id and its name as the
thread name (every task of the run has its track, even one that recorded nothing),
timestamps in microseconds of *simulated* time (each task's own clock), spans properly
nested per track (an end closes the span of its name, ending and re-opening the spans begun
inside it; a span still open when the run stopped is closed at the track's last timestamp),
and one instant per violation at its simulated time on the track of the task that found it
(one judged at the end of the run is a global instant at the run's last timestamp).
:func:`validate` checks a document against that format.
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


def chrome_trace(events, violations=(), *, title: str = "smmu", metadata: dict | None = None,
                 tasks: dict | None = None) -> dict:
    """The trace-event JSON object for runtime trace tuples ``events`` (``Result.trace``),
    ``violations`` (``Violation`` objects; each becomes an instant unless the runtime
    already recorded one for it) and ``tasks`` (``{name: tid}``: every task gets a track)."""
    out: list[dict] = []
    names: dict[int, str] = {}
    for name, tid in (tasks or {}).items():
        names[_tid(tid)] = name
    open_spans: dict[int, list] = {}
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
        cat = a.pop("cat", None) or _category(name)
        a["step"] = step
        if ph == "B":
            open_spans.setdefault(t, []).append((name, cat))
            out.append({"name": name, "cat": cat, "ph": "B", "ts": ts, "pid": PID, "tid": t,
                        "args": a})
        elif ph == "E":
            stack = open_spans.get(t) or []
            at = next((i for i in range(len(stack) - 1, -1, -1) if stack[i][0] == name), None)
            if at is None:
                continue   # an end whose begin was not traced: drop it, keep the file valid
            inner = stack[at + 1:]
            for n, c in reversed(inner):      # end the spans begun inside it ...
                out.append({"name": n, "cat": c, "ph": "E", "ts": ts, "pid": PID, "tid": t,
                            "args": {"note": f"interrupted by the end of {name}"}})
            del stack[at:]
            out.append({"name": name, "cat": cat, "ph": "E", "ts": ts, "pid": PID, "tid": t,
                        "args": a})
            for n, c in inner:                # ... and re-open them after it
                stack.append((n, c))
                out.append({"name": n, "cat": c, "ph": "B", "ts": ts, "pid": PID, "tid": t,
                            "args": {"note": f"continued after the end of {name}"}})
        else:
            scope = "t"
            if cat == "violation":
                recorded_instants.add((name, step))
                if tid < 0:     # judged at the end of the run, by no task: when it ended
                    scope = "g"
                    ts = max(ts, max(last_ts.values()), float(a.get("time_ns", 0)) / 1000.0)
            out.append({"name": name, "cat": cat, "ph": "i", "s": scope, "ts": ts,
                        "pid": PID, "tid": t, "args": a})
    end_ts = max(last_ts.values(), default=0.0)
    for t, stack in open_spans.items():
        while stack:
            name, cat = stack.pop()
            out.append({"name": name, "cat": cat, "ph": "E", "ts": last_ts.get(t, 0.0),
                        "pid": PID, "tid": t, "args": {"note": "still open when the run "
                                                        "stopped"}})
    tid_of = {n: t for t, n in names.items()}
    for v in violations:
        if (v.kind, v.step) in recorded_instants:
            continue
        t = tid_of.get(v.task) if v.task not in (None, "setup") else None
        ev = {"name": v.kind, "cat": "violation", "ph": "i", "pid": PID,
              "args": {"message": v.message, "step": v.step,
                       "address": hex(v.address) if v.address is not None else None,
                       "frames": list(v.frames)}}
        if t is None:       # judged at the end of the run, by no task
            ev.update(s="g", tid=SETUP_TID, ts=max(end_ts, float(v.time_ns) / 1000.0))
            names.setdefault(SETUP_TID, "setup")
        else:
            ev.update(s="t", tid=t, ts=float(v.time_ns) / 1000.0)
        out.append(ev)
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
    if "fault" in name:
        return "fault"
    if name[:1].isupper():
        return "violation"
    return "mm"


def result_trace(result, *, title: str = "smmu", metadata: dict | None = None) -> dict:
    """:func:`chrome_trace` of a ``Result`` (run with ``trace=True``)."""
    tasks = {name: d["tid"] for name, d in (getattr(result, "times", None) or {}).items()
             if "tid" in d}
    return chrome_trace(getattr(result, "trace", None) or [], result.violations, title=title,
                        metadata=metadata, tasks=tasks)


def write_trace(path, result, *, title: str = "smmu", metadata: dict | None = None) -> Path:
    """Write the trace of ``result`` to ``path`` (a ``.json`` file) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = result_trace(result, title=title, metadata=metadata)
    path.write_text(json.dumps(doc, separators=(",", ":")))
    return path


#: metadata events the format defines, and the argument each carries
_META_ARGS = {"process_name": "name", "thread_name": "name", "process_sort_index": "sort_index",
              "thread_sort_index": "sort_index", "process_labels": "labels"}


def validate(doc) -> list[str]:
    """Problems that would stop a trace viewer from loading ``doc`` (empty: loadable),
    checked against the Trace Event Format's JSON object form: a ``traceEvents`` list (and
    ``displayTimeUnit`` "ms" or "ns" if given); every event an object with a string
    ``name``, a known ``ph`` and integer ``pid`` / ``tid``; every non-metadata event a
    numeric ``ts`` >= 0; ``X`` a ``dur`` >= 0; instants a scope ``s`` of "g", "p" or "t";
    metadata events one of those the format defines, with their argument; ``cat`` a string
    and ``args`` an object; per track, ``B`` / ``E`` spans in time order, balanced, and each
    ``E`` closing the span of its own name (proper nesting, which Perfetto's JSON importer
    needs); the whole document serialisable."""
    problems = []
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        return ["not a JSON object with a traceEvents list"]
    if doc.get("displayTimeUnit", "ms") not in ("ms", "ns"):
        problems.append(f"displayTimeUnit {doc['displayTimeUnit']!r} is not 'ms' or 'ns'")
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
        if "name" in ev and not isinstance(ev["name"], str):
            problems.append(f"event {i}: name is not a string")
        for key in ("pid", "tid"):
            if key in ev and (not isinstance(ev[key], int) or isinstance(ev[key], bool)):
                problems.append(f"event {i}: {key} {ev[key]!r} is not an integer")
        if ph not in ("B", "E", "i", "I", "X", "M", "C"):
            problems.append(f"event {i} has unknown phase {ph!r}")
        if "cat" in ev and not isinstance(ev["cat"], str):
            problems.append(f"event {i}: cat is not a string")
        if "args" in ev and not isinstance(ev["args"], dict):
            problems.append(f"event {i}: args is not an object")
        if ph == "M":
            want = _META_ARGS.get(ev.get("name"))
            if want is None:
                problems.append(f"event {i}: unknown metadata event {ev.get('name')!r}")
            elif want not in (ev.get("args") or {}):
                problems.append(f"event {i}: metadata {ev.get('name')!r} has no args.{want}")
            continue
        ts = ev.get("ts")
        if not isinstance(ts, (int, float)) or isinstance(ts, bool) or ts < 0:
            problems.append(f"event {i} has a bad ts {ts!r}")
            continue
        if ph == "X" and not (isinstance(ev.get("dur"), (int, float)) and ev["dur"] >= 0):
            problems.append(f"event {i}: X event without a dur >= 0")
        if ph in ("i", "I") and ev.get("s", "t") not in ("g", "p", "t"):
            problems.append(f"event {i}: instant scope {ev.get('s')!r} is not g, p or t")
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
                top = st.pop()
                if "name" in ev and ev["name"] != top:
                    problems.append(f"event {i}: E {ev['name']!r} closes {top!r} on track "
                                    f"{key} (spans not nested)")
    for key, st in stacks.items():
        if st:
            problems.append(f"track {key}: {len(st)} span(s) never ended: {st}")
    try:
        json.dumps(doc)
    except (TypeError, ValueError) as e:
        problems.append(f"not serialisable: {e}")
    return problems
