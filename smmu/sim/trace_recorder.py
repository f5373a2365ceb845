"""The trace of a run, recorded as an observer of it (:mod:`smmu.runtime.observer`)."""

from __future__ import annotations

from smmu.runtime.observer import Observer


class TraceRecorder(Observer):
    """The trace of a run as an observer: every notifier hook call becomes a ``"B"`` / ``"E"``
    span named ``driver.hook`` and every violation an ``"i"`` instant, appended to
    ``sched.trace`` (``Result.trace``; :mod:`smmu.report.trace` exports it for Perfetto)."""

    def __init__(self, sched):
        self.sched = sched

    def __repr__(self):
        return f"<TraceRecorder {len(self.sched.trace)} events>"

    def hook_enter(self, sub, hook, args, span):
        self.sched.trace_event("B", f"{sub.name}.{hook}", {"args": repr(args)})

    def hook_exit(self, sub, hook, args, span):
        self.sched.trace_event("E", f"{sub.name}.{hook}")

    def violation(self, v):
        self.sched.trace_event("i", v.kind, {"message": v.message})
