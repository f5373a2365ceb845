"""Tasks and what they wait for: the units the scheduler runs.

A task is a generator (one simulated CPU or device context); what it yields tells the
scheduler what it wants (see :mod:`smmu.runtime.scheduler`). A :class:`Request` is anything a
task can yield to wait for (locks, rwsem sides, wait queues, completions, sleeps).
"""

from __future__ import annotations

import sys

from smmu.runtime.costs import COSTS

_STEP_NS = COSTS["step"][0]


def format_frames(raw) -> list[str]:
    """Format :meth:`Task.raw_stack` pairs as ``file:line in function`` strings."""
    return [f"{c.co_filename}:{line} in {c.co_name}" for c, line in raw]


#: where the runtime and notifier plumbing lives: frames there are not "where it happened"
_PLUMBING = ("/smmu/runtime/", "/smmu/notifier/")


def user_frame(frames: list[str]) -> str:
    """The innermost frame outside the runtime and notifier plumbing: where it happened."""
    for fr in reversed(frames):
        path = fr.split(":", 1)[0]
        if not any(p in path for p in _PLUMBING):
            return fr
    return frames[-1] if frames else "?"


class Task:
    """One simulated CPU or device context running a generator."""

    __slots__ = (
        "atomic",
        "done",
        "error",
        "gen",
        "held",
        "name",
        "pending",
        "result",
        "steps",
        "throw",
        "tid",
        "clock",
        "value",
    )

    def __init__(self, tid: int, name: str, gen):
        self.tid = tid
        self.name = name
        self.gen = gen
        self.value = None          # sent into the generator at its next step
        self.throw = None          # or thrown into it
        self.pending = None        # the request it is blocked on
        self.atomic: list = []     # (reason, where) per open atomic section, innermost last
        self.held: list = []       # locks held, in acquisition order
        self.steps = 0
        self.clock = 0.0           # simulated ns charged by the work the task did
        self.done = False
        self.result = None
        self.error = None

    @property
    def time(self) -> float:
        """Simulated time of this task: its charged costs plus the per-step cost."""
        return self.clock + self.steps * _STEP_NS

    @property
    def in_atomic(self) -> bool:
        return bool(self.atomic)

    def where(self) -> str:
        """``file:line in function`` of the innermost frame this task is suspended in."""
        stack = self.stack()
        return stack[-1] if stack else "<not started>"

    def stack(self) -> list[str]:
        return format_frames(self.raw_stack())

    def raw_stack(self) -> list:
        """(code, line) pairs of the task's generator chain, outermost first; cheap to take
        (no formatting), formatted by :func:`format_frames` only when reported. While the
        task runs (an atomic section opened by running code) the live frames are walked."""
        g = self.gen
        if g is not None and getattr(g, "gi_running", False):
            top = g.gi_frame
            out = []
            f = sys._getframe(1)
            while f is not None:
                out.append((f.f_code, f.f_lineno))
                if f is top:
                    break
                f = f.f_back
            out.reverse()
            return out
        out = []
        while g is not None:
            f = getattr(g, "gi_frame", None)
            if f is not None:
                out.append((f.f_code, f.f_lineno))
            g = getattr(g, "gi_yieldfrom", None)
        return out

    def __repr__(self) -> str:
        state = "done" if self.done else ("blocked on %r" % (self.pending,) if self.pending
                                          else "ready")
        return f"<Task {self.tid} {self.name!r} {state}, {self.steps} steps, t={self.time:.0f}ns>"


class Request:
    """Something a task can yield to wait for. Subclasses: locks, rwsem sides, wait queues,
    completions, sleeps. ``sleeps`` says whether waiting for it may sleep (a mutex does, a
    spinlock spins)."""

    sleeps = True

    def can(self, task: Task) -> bool:  # may the task proceed now?
        raise NotImplementedError

    def grant(self, task: Task):  # the task proceeds: take the resource; returns the value sent
        return self
