"""Tasks and what they wait for: the units the scheduler runs.

A task is a generator (one simulated CPU or device context); what it yields tells the
scheduler what it wants (see :mod:`smmu.runtime.scheduler`). A :class:`Request` is anything a
task can yield to wait for (locks, rwsem sides, wait queues, completions, sleeps).

Each task has its own clock (``time``, simulated ns): the work it was charged, one ``step``
cost per step, and the time it spent waiting. A wait ends no earlier than the moment the task
was released (:meth:`Task.advance_to`), which is what makes time causal. ``cpu`` is the CPU
it runs on; tasks that share one CPU run one at a time (:class:`Core`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

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


#: smmu's own packages (the harness and the model layers, not the drivers): a call site
#: outside them is a driver's or a scenario's
_OWN = tuple(str(Path(__file__).resolve().parents[2] / pkg) + os.sep
             for pkg in ("smmu", "primary_mm"))


def caller_frame(skip=_OWN):
    """The innermost frame on the running stack whose file is not under ``skip`` (by
    default smmu's own packages): the driver's or scenario's code that made the call being
    reported; None when every frame is smmu's."""
    f = sys._getframe(1)
    if skip is _OWN:                 # the usual question: answered per file once (keyed by
        own = _OWN_FILE              # the name, whose hash a str caches: a code object's
        while f is not None:         # hash is recomputed over its bytecode at every lookup)
            name = f.f_code.co_filename
            mine = own.get(name)
            if mine is None:
                mine = own[name] = name.startswith(_OWN)
            if not mine:
                return f
            f = f.f_back
        return None
    while f is not None:
        if not f.f_code.co_filename.startswith(skip):
            return f
        f = f.f_back
    return None


#: file name -> is it smmu's own (:data:`_OWN`): what :func:`caller_frame` skips
_OWN_FILE: dict = {}


def frame_site(f) -> str:
    """``file:line in function`` of frame ``f`` ("?" for None)."""
    return "?" if f is None else f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"


def call_site(skip=_OWN) -> str:
    """``file:line in function`` of :func:`caller_frame`: where a driver's or a scenario's
    code made the call being reported (a ``note_map``, a ``get_user_pages``...). Cheap: one
    walk up the frames, nothing formatted but the answer; "?" when every frame is smmu's."""
    return frame_site(caller_frame(skip))


def in_smmu(filename: str) -> bool:
    """Is ``filename`` part of smmu's own code (the ``smmu`` and ``primary_mm`` packages)?
    What is not is the user's: drivers (the built-in ones too), tests, scripts."""
    return filename.startswith(_OWN)


def traceback_frames(exc: BaseException) -> list:
    """(code, line) pairs of ``exc``'s traceback, outermost first (the raise is last)."""
    out = []
    tb = exc.__traceback__
    while tb is not None:
        out.append((tb.tb_frame.f_code, tb.tb_lineno))
        tb = tb.tb_next
    return out


def frame_chain(frame) -> list:
    """(code, line) pairs of a live ``frame`` and its callers, outermost first."""
    out = []
    while frame is not None:
        out.append((frame.f_code, frame.f_lineno))
        frame = frame.f_back
    out.reverse()
    return out


def user_site(raw) -> str:
    """``file:line in function`` of the innermost frame of ``raw`` ((code, line) pairs,
    outermost first) outside smmu's own code: the user's line (a driver's, a test's). When
    every frame is smmu's, the innermost one."""
    for code, line in reversed(raw):
        if not in_smmu(code.co_filename):
            return f"{code.co_filename}:{line} in {code.co_name}"
    if raw:
        code, line = raw[-1]
        return f"{code.co_filename}:{line} in {code.co_name}"
    return "?"


def raised_in_smmu(exc: BaseException) -> bool:
    """Was ``exc`` raised by smmu's own code (its innermost traceback frame is smmu's)?"""
    raw = traceback_frames(exc)
    return bool(raw) and in_smmu(raw[-1][0].co_filename)


class Task:
    """One simulated CPU or device context running a generator."""

    __slots__ = (
        "atomic",
        "clock",
        "core",
        "cpu",
        "done",
        "error",
        "gen",
        "held",
        "io_ns",
        "name",
        "pending",
        "result",
        "send",
        "spun",
        "steps",
        "tid",
        "value",
        "waited",
    )

    def __init__(self, tid: int, name: str, gen, cpu: int | None = None, start: float = 0.0):
        self.tid = tid
        self.name = name
        self.gen = gen
        self.send = gen.send if gen is not None else None   # the scheduler's step
        self.value = None          # sent into the generator at its next step
        self.pending = None        # the request it is blocked on
        self.atomic: list = []     # (reason, where) per open atomic section, innermost last
        self.held: list = []       # locks held, in acquisition order
        self.steps = 0
        self.clock = start         # simulated ns: work charged and waits (steps apart)
        self.waited = 0.0          # of which off CPU: sleeps, sleeping-lock waits, I/O
        self.io_ns = 0.0           # of which I/O (Scheduler.wait_io)
        self.spun = 0.0            # on CPU but spinning for a spinlock
        self.cpu = cpu             # the CPU it runs on (None: the setup pseudo-task)
        self.core = None           # the Core when it shares its CPU with other tasks
        self.done = False
        self.result = None
        self.error = None

    @property
    def time(self) -> float:
        """Simulated time of this task: its charged costs plus the per-step cost (the lock
        paths of smmu/runtime/locks.py compute it inline, as ``clock + steps * _STEP_NS``)."""
        return self.clock + self.steps * _STEP_NS

    def advance_to(self, t: float, off_cpu: bool) -> float:
        """The task resumes no earlier than ``t`` (the moment it was released): move its
        clock forward to ``t`` if it is behind, counting the gap as waited (``off_cpu``: it
        slept) or spun. Returns the gap."""
        d = t - self.time
        if d <= 0.0:
            return 0.0
        self.clock += d
        if off_cpu:
            self.waited += d
        else:
            self.spun += d
        return d

    def ready_at(self) -> float:
        """When the task could run next: its clock, or for a task blocked on a request that
        can now be granted, the moment the request lets it go (what the ``timed`` schedule
        compares)."""
        t = self.time
        req = self.pending
        if req is not None:
            r = req.ready_at(self)
            if r > t:
                t = r
        core = self.core
        if core is not None and core.last is not self:
            f = core.free_at()
            if f > t:
                t = f
        return t

    @property
    def in_atomic(self) -> bool:
        return bool(self.atomic)

    def where(self) -> str:
        """``file:line in function`` of the innermost frame this task is suspended in."""
        g = self.gen
        if g is not None and getattr(g, "gi_running", False):
            stack = self.stack()
            return stack[-1] if stack else "<not started>"
        # suspended: only the innermost frame of the generator chain is formatted (lockdep
        # asks this of every new lock-order edge, most of which are never reported)
        last = None
        while g is not None:
            f = getattr(g, "gi_frame", None)
            if f is not None:
                last = f
            g = getattr(g, "gi_yieldfrom", None)
        if last is None:
            return "<not started>"
        return format_frames(((last.f_code, last.f_lineno),))[0]

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
        return (f"<Task {self.tid} {self.name!r} cpu={self.cpu} {state}, {self.steps} steps, "
                f"t={self.time:.0f}ns>")


class Core:
    """One CPU shared by several tasks (``spawn(..., cpu=N)`` twice with the same N): they run
    one at a time. A task switched in starts no earlier than the CPU was free (the previous
    task's clock, or the moment it blocked or went to sleep), and pays a ``context_switch``
    when it takes the CPU from another runnable task."""

    __slots__ = ("cpu", "last", "idle_at")

    def __init__(self, cpu: int):
        self.cpu = cpu
        self.last: Task | None = None   # the task on the CPU now (None: idle)
        self.idle_at = 0.0              # when it went idle

    def free_at(self) -> float:
        last = self.last
        return self.idle_at if last is None or last.done else last.time

    def switch_to(self, task: Task, sched) -> None:
        """``task`` takes this CPU (called by the scheduler before its step, with ``task``
        current)."""
        prev = self.last
        task.advance_to(self.free_at(), True)           # it waited on the run queue
        if prev is not None and prev is not task and not prev.done:
            sched.charge("context_switch")              # it preempts a runnable task
        self.last = task

    def leave(self, task: Task, at: float) -> None:
        """``task`` left the CPU at ``at`` (it blocked, went to sleep or ended)."""
        if self.last is task:
            self.last = None
            if at > self.idle_at:
                self.idle_at = at

    def __repr__(self):
        return f"<Core {self.cpu} running {self.last.name if self.last else 'nothing'}>"


class Request:
    """Something a task can yield to wait for. Subclasses: locks, rwsem sides, wait queues,
    completions, sleeps. ``sleeps`` says whether waiting for it may sleep (a mutex does, a
    spinlock spins)."""

    sleeps = True

    def can(self, task: Task) -> bool:  # may the task proceed now?
        raise NotImplementedError

    def grant(self, task: Task):  # the task proceeds: take the resource; returns the value sent
        """The task proceeds: take the resource, move its clock to when it was released
        (``task.pending is self`` when it had to wait, None when granted at the yield), and
        return the value sent into it."""
        return self

    def ready_at(self, task: Task) -> float:
        """When a task blocked on this request would resume if granted now (default: no
        constraint)."""
        return 0.0

    def asleep(self, task: Task) -> bool:
        """Is ``task``, blocked on this request, sure to stay blocked, its ``can`` False and
        without side effects, until something calls ``sched.candidates_change()`` (a
        wake-up, a complete)? Then the scheduler may hand the other tasks a batch of steps
        without asking ``can`` again at each. Default: not known (False)."""
        return False

    def block(self, task: Task) -> None:
        """``task`` could not be granted this request at its yield and now waits for it."""

    def cancel(self, task: Task) -> None:
        """``task`` ended while waiting for this request."""
