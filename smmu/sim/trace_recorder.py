"""The trace of a run, recorded as an observer of it (:mod:`smmu.runtime.observer`).

One record per *event* of the run (not per yield point): what the primary MM did (the
invalidation window of an MM operation, a PTE cleared, contents discarded, PTEs copied or
moved, a CPU access), what a device did (a GUP or a lockless walk that starts its fault, the
map that ends it, an unmap, a DMA access), every notifier hook call and every violation, each
with the task that did it, its simulated time, the step it happened in and its source line.
The text report lists them as the steps of the run (:func:`smmu.report.text.events_text`) and
:mod:`smmu.report.trace` exports them for Perfetto, so both read the same record.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from smmu.runtime.observer import Observer

#: public MM operations: the outermost primary-MM frame of this name is what a task is doing
OPERATIONS = ("write", "read", "handle_mm_fault", "get_user_pages", "pin_user_pages",
              "hmm_range_fault", "fork", "munmap", "mprotect", "madvise", "mremap", "brk",
              "mmap", "exit", "reclaim", "page_referenced", "writeback", "migrate",
              "ksm_merge", "truncate", "oom_reap")

_ROOT = Path(__file__).resolve().parents[2]
_PRIMARY = str(_ROOT / "primary_mm") + os.sep
_SMMU = str(_ROOT / "smmu") + os.sep
#: frames that are never "where it happened": smmu's plumbing (scenarios are not plumbing:
#: a CPU access is shown at the scenario line that made it)
_PLUMBING = tuple(str(_ROOT / "smmu" / p) + os.sep for p in
                  ("runtime", "notifier", "sim", "oracle", "explore", "base", "devices",
                   "testing", "report", "cli", "study"))
#: a device's events are shown at the driver's line, a kernel event at the primary MM's
_DEVICE_SKIP = _PLUMBING + (_PRIMARY,)
_KERNEL_SKIP = (_SMMU,)

#: the events that belong to the MM operation the task is in (a device's own are not)
_OP_CATS = ("mm", "cpu", "gup", "hook")

#: what a device fault's snapshot of the primary is called (the observer's ``how``)
SNAPSHOT_NAMES = {"get_user_pages": "GUP", "pin_user_pages": "pin",
                  "hmm_range_fault": "hmm_range_fault"}


def _site(skip) -> str:
    f = sys._getframe(2)
    while f is not None and f.f_code.co_filename.startswith(skip):
        f = f.f_back
    return "?" if f is None else f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"


def operation(site: bool = False):
    """The MM operation the running code is in: the outermost primary-MM frame named in
    :data:`OPERATIONS` (else the outermost primary-MM function, else "?"); with ``site``,
    ``(name, "file:line in function")`` of that frame."""
    f = sys._getframe(1)
    op = outer = None
    while f is not None:
        if f.f_code.co_filename.startswith(_PRIMARY):
            outer = f
            if f.f_code.co_name in OPERATIONS:
                op = f
        f = f.f_back
    f = op or outer
    name = f.f_code.co_name if f is not None else "?"
    if not site:
        return name
    return name, ("" if f is None else
                  f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}")


def _def_site(obj, method) -> str:
    """Where ``obj``'s method ``method`` is defined (a driver's hook; an MM operation: the
    function under its ``mm_operation`` wrapper)."""
    fn = getattr(type(obj), method, None)
    fn = getattr(fn, "__wrapped__", fn)
    code = getattr(fn, "__code__", None)
    if code is None:
        return "?"
    return f"{code.co_filename}:{code.co_firstlineno} in {code.co_name}"


class TraceRecorder(Observer):
    """The events of a run (see the module docstring), appended to ``sched.trace``
    (``Result.trace``) as ``(ph, name, tid, task name, time_ns, step, args)``: ``ph`` "B" /
    "E" for spans (an MM operation, from its begin to its end as the primary MM reports them,
    ``mm_op_begin`` / ``mm_op_end``, the outermost of nested ones; the primary-MM work of
    no public operation from its first event to the task's next operation; a notifier hook
    call ``driver.hook``; an MM operation's invalidation window
    ``op start-end``; a device fault from its snapshot to its map ``fault va``), "i"
    for instants; ``args`` has ``text`` (the readable line), ``where`` (source line) and
    ``cat`` (``mm``, ``hook``, ``fault``, ``gup``, ``map``, ``dma``, ``cpu``,
    ``violation``)."""

    def __init__(self, sched):
        self.sched = sched
        self._fault: dict = {}        # tid -> name of the open device fault span
        self._ends: dict = {}         # id(rng) -> [span name, subscriptions whose end runs]
        self._op: dict = {}           # id(rng) -> span name
        self._ops: dict = {}          # tid -> the MM operation span open on its track
        self._depth: dict = {}        # tid -> how many MM operations it is inside

    def __repr__(self):
        return f"<TraceRecorder {len(self.sched.trace)} events>"

    # ------------------------------------------------------------------ recording
    def _ev(self, ph, name, cat, text, where, **args):
        if ph != "E" and cat in _OP_CATS:
            self._op_span()
        args.update(text=text, where=where, cat=cat)
        self.sched.trace_event(ph, name, args)

    def _op_span(self):
        # primary-MM work outside the public operations (which open and close their own
        # spans: mm_op_begin / mm_op_end), as a span around its events: opened at its first
        # event, closed when an event of another operation comes on that task
        if self._depth.get(self._tid()):
            return
        op, where = operation(site=True)
        if op == "?":
            return
        tid = self._tid()
        cur = self._ops.get(tid)
        if cur == op:
            return
        if cur is not None:
            self.sched.trace_event("E", cur, {"cat": "mm"})
        self._ops[tid] = op
        self.sched.trace_event("B", op, {"cat": "mm", "text": "", "where": where})

    def _tid(self):
        return self.sched.running.tid

    def _fault_begin(self, va):
        tid = self._tid()
        if tid not in self._fault:
            name = f"device fault {va:#x}"
            self._fault[tid] = name
            self._ev("B", name, "fault", f"device fault {va:#x}: begins", "")

    def _fault_end(self):
        name = self._fault.pop(self._tid(), None)
        if name is not None:
            self._ev("E", name, "fault", f"{name}: ends", "")

    # ------------------------------------------------------------------ primary MM
    def mm_op_begin(self, who, op):
        tid = self._tid()
        depth = self._depth.get(tid, 0)
        self._depth[tid] = depth + 1
        if depth:
            return                        # nested: the outermost operation is the span
        cur = self._ops.pop(tid, None)
        if cur is not None:               # work of no operation before it
            self.sched.trace_event("E", cur, {"cat": "mm"})
        self._ops[tid] = op
        self.sched.trace_event("B", op, {"cat": "mm", "text": "", "where": _def_site(who, op)})

    def mm_op_end(self, who, op):
        tid = self._tid()
        depth = self._depth.get(tid, 0) - 1
        if depth > 0:
            self._depth[tid] = depth
            return
        self._depth.pop(tid, None)
        cur = self._ops.pop(tid, None)
        if cur is not None:
            self.sched.trace_event("E", cur, {"cat": "mm"})

    def cpu_access(self, mm, va, write, value):
        text = f"write {va:#x} = {value}" if write else f"read {va:#x} -> {value}"
        self._ev("i", "write" if write else "read", "cpu", text, _site(_PLUMBING + (_PRIMARY,)))

    def pte_cleared(self, mm, va, hook):
        nxt = f" ({hook} next)" if hook else ""
        self._ev("i", "clear pte", "mm", f"{operation()}: clear pte {va:#x}{nxt}",
                 _site(_KERNEL_SKIP))

    def fork_copy(self, parent, child, start, end):
        self._ev("i", "copy ptes", "mm", f"fork: copy ptes {start:#x}-{end:#x} to "
                 f"{child.name}", _site(_KERNEL_SKIP))

    def discard(self, mm, start, end):
        self._ev("i", "zap ptes", "mm", f"{operation()}: zap ptes {start:#x}-{end:#x}",
                 _site(_KERNEL_SKIP))

    def move(self, mm, old_start, new_start, length):
        self._ev("i", "move ptes", "mm", f"mremap: move ptes {old_start:#x}-"
                 f"{old_start + length:#x} to {new_start:#x}", _site(_KERNEL_SKIP))

    def file_truncate(self, file, npages):
        self._ev("i", "truncate", "mm", f"truncate {getattr(file, 'name', file)} to {npages} "
                 "page(s)", _site(_KERNEL_SKIP))

    def gup(self, mm, va, pfn, write, how):
        self._fault_begin(va)
        what = SNAPSHOT_NAMES.get(how, how)
        self._ev("i", what, "gup", f"{what} {va:#x} -> pfn {pfn}{' (write)' if write else ''}",
                 _site(_DEVICE_SKIP))

    def gup_release(self, mm, pfn, how):
        self._ev("i", how, "gup", f"{how} pfn {pfn}", _site(_DEVICE_SKIP))

    def pte_walk(self, mm, va, pte):
        self._fault_begin(va)
        self._ev("i", "walk", "gup", f"walk {va:#x} -> pte {pte:#x}", _site(_DEVICE_SKIP))

    # ------------------------------------------------------------------ devices
    def device_access(self, drv, va, pfn, write, value):
        frames = getattr(getattr(self.sched, "memory", None), "frames", None)
        freed = frames is not None and 0 <= pfn < len(frames.refcount) and \
            int(frames.refcount[pfn]) == 0
        what = f"DMA write pfn {pfn} = {value}" if write else f"DMA read pfn {pfn}"
        self._ev("i", "DMA write" if write else "DMA read", "dma",
                 f"{what} ({va:#x}){' (freed)' if freed else ''}", _site(_DEVICE_SKIP))

    def secondary_map(self, drv, va, pfn, writable):
        self._ev("i", "map", "map", f"map {'rw' if writable else 'ro'} {va:#x} -> pfn {pfn}",
                 _site(_DEVICE_SKIP))
        self._fault_end()

    def secondary_unmap(self, drv, start, end):
        text = f"unmap {start:#x}" if end - start <= 4096 else f"unmap {start:#x}-{end:#x}"
        self._ev("i", "unmap", "map", text, _site(_DEVICE_SKIP))

    # ------------------------------------------------------------------ notifier chain
    def hook_enter(self, sub, hook, args, span):
        what = f" {span[0]:#x}-{span[1]:#x}" if span else ""
        self._ev("B", f"{sub.name}.{hook}", "hook", f"{sub.name}.{hook}{what}",
                 _def_site(sub, hook), args=repr(args))

    def hook_exit(self, sub, hook, args, span):
        self._ev("E", f"{sub.name}.{hook}", "hook", "", "")

    def range_start(self, mm, rng):
        name = f"{operation()} {rng.start:#x}-{rng.end:#x}"
        self._op[id(rng)] = name
        ev = getattr(rng.event, "name", rng.event)
        self._ev("B", name, "mm", f"{name}: start ({ev}{'' if rng.blockable else ', nonblock'})",
                 _site(_KERNEL_SKIP))

    def range_start_returned(self, sub, rng, ret):
        if ret not in (0, None, True):
            self._ev("i", "refused", "hook", f"{sub.name}.invalidate_range_start returned "
                     f"{ret}", _def_site(sub, "invalidate_range_start"))

    def range_start_failed(self, mm, rng):
        name = self._op.pop(id(rng), None)
        if name is not None:
            self._ev("E", name, "mm", f"{name}: start failed (-EAGAIN)", _site(_KERNEL_SKIP))

    def range_end(self, mm, rng, subs):
        name = self._op.pop(id(rng), None) or f"{operation()} {rng.start:#x}-{rng.end:#x}"
        self._ev("i", "end", "mm", f"{name}: end", _site(_KERNEL_SKIP))
        pending = [id(s) for s in subs]
        if pending:
            self._ends[id(rng)] = [name, pending]
        else:
            self._ev("E", name, "mm", "", "")

    def range_end_over(self, sub, rng):
        ent = self._ends.get(id(rng))
        if ent is None:
            return
        if id(sub) in ent[1]:
            ent[1].remove(id(sub))
        if not ent[1]:
            del self._ends[id(rng)]
            self._ev("E", ent[0], "mm", "", "")

    def interval_invalidate(self, isub, rng, ret):
        owner = getattr(isub, "owner", None)
        who = getattr(owner, "name", None) or type(isub).__name__
        self._ev("i", "interval invalidate", "hook", f"{who} interval invalidate "
                 f"{rng.start:#x}-{rng.end:#x}{'' if ret in (True, None, 0) else ' refused'}",
                 _site(_DEVICE_SKIP))

    # ------------------------------------------------------------------ runtime
    def violation(self, v):
        where = (v.details or {}).get("where") or ""
        addr = f" at {v.address:#x}" if v.address is not None else ""
        self._ev("i", v.kind, "violation", f"{v.kind}{addr}", where, message=v.message,
                 time_ns=v.time_ns)
