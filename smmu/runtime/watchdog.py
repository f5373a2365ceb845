"""The wall-clock watchdog: a step that never ends (a loop that never yields) stops the run.

A step runs the chosen task from one ``yield`` to the next and the scheduler cannot pre-empt
it, so a driver whose ``access()`` or hook loops without yielding would hang the checker.
The watchdog watches from outside the hot loop and costs nothing per step: the scheduler
enters it once around each run (:func:`enter` / :func:`leave`, about a microsecond) and one
daemon thread samples the step counter of every run in progress, on any thread. When a
counter has not moved for ``timeout`` seconds of wall time, the watchdog records where the
running frame is and raises :class:`Spinning` in that thread with
``PyThreadState_SetAsyncExc``; it takes effect at the spinning loop's next bytecode, and the
scheduler reports a ``Livelock`` with the user's line where the loop spun.

Why not SIGALRM on the main thread: knowing whether SIGALRM is still ours before every run
costs ``signal.getsignal`` (about 10 us with a Python handler installed, more than the rest
of a run's bookkeeping), and trusting it without looking hangs the checker, and fires the
other handler, once something else (pytest-timeout's signal method) took SIGALRM. The thread
works the same on the main thread, in Dask workers and in a user's threads. What it cannot
interrupt is a blocking C call (a driver sleeping in ``time.sleep``): the step ends when the
call returns.

A step that is compiling numba kernels (the first call of a jitted function, seconds on a
cold cache) is not spinning: the watchdog lets it finish.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time

from smmu.runtime.task import frame_chain

#: seconds one step may run before the watchdog stops the run (``Scheduler(step_timeout=)``)
DEFAULT_STEP_TIMEOUT = 10.0

_NUMBA = os.sep + "numba" + os.sep


class Spinning(BaseException):
    """Raised inside a step that ran longer than its scheduler's ``step_timeout`` (a
    BaseException so that a driver's ``except Exception`` does not swallow it)."""


class _Entry:
    """One watched run: its scheduler, the step count last seen and since when."""

    __slots__ = ("sched", "timeout", "steps", "since", "ident")

    def __init__(self, sched, timeout, ident):
        self.sched = sched
        self.timeout = timeout
        self.steps = sched.steps
        self.since = time.monotonic()
        self.ident = ident


def _tick(timeout: float) -> float:
    return min(max(timeout / 4.0, 0.01), 1.0)


def _compiling(frame) -> bool:
    while frame is not None:
        if _NUMBA in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def _stuck(e: _Entry, frame) -> bool:
    """Has ``e``'s run been in one step for its timeout? Records where (``sched.spinning_at``)."""
    now = time.monotonic()
    steps = e.sched.steps
    if steps != e.steps:
        e.steps, e.since = steps, now
        return False
    if now - e.since < e.timeout or frame is None:
        return False
    if _compiling(frame):
        e.since = now
        return False
    e.sched.spinning_at = (frame_chain(frame), now - e.since)
    e.since = now       # no second shot while the stopped run winds down
    return True


#: thread ident -> entries of its runs in progress, innermost last (a thread's list stays,
#: empty, between its runs: entering a run is then an append under the lock)
_runs: dict = {}
_wake = threading.Condition(threading.Lock())
_watcher: threading.Thread | None = None
_idle = False                   # the watcher waits for a run to begin (enter wakes it)
_wake_tick = 1.0                # the tick of the run whose enter woke it


def _raise_in(ident: int) -> None:
    # Never call it with NULL to "clear" a shot: CPython 3.11 then leaves the interpreter's
    # async-exception flag set and every thread takes the eval loop's slow path for good.
    # The shot is taken under _wake, only while the thread is inside the stuck step.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                               ctypes.py_object(Spinning))


def _watch() -> None:
    global _idle
    while True:
        with _wake:
            ticks = [_tick(s[-1].timeout) for s in _runs.values() if s]
            if not ticks:
                _idle = True
                _wake.wait()
                _idle = False
                # a short run (a sim.do) may be over by now: watch one tick anyway before
                # waiting again, or every such run would wake this thread (a GIL hand-over)
                ticks = [_tick(s[-1].timeout) for s in _runs.values() if s] or [_wake_tick]
            tick = min(ticks)
        time.sleep(tick)
        with _wake:     # leave() cannot run between the check and the shot
            frames = sys._current_frames()
            for ident, stack in _runs.items():
                if stack and _stuck(stack[-1], frames.get(ident)):
                    _raise_in(ident)
            del frames


def enter(sched):
    """Start watching ``sched``'s run on this thread (``sched.step_timeout`` seconds per
    step; None or 0: not watched). Returns the token :func:`leave` takes."""
    global _watcher, _wake_tick
    timeout = sched.step_timeout
    if not timeout:
        return None
    e = _Entry(sched, float(timeout), threading.get_ident())
    with _wake:
        stack = _runs.get(e.ident)
        if stack is None:
            stack = _runs[e.ident] = []
            if _watcher is None:
                _watcher = threading.Thread(target=_watch, name="smmu-watchdog", daemon=True)
                _watcher.start()
        stack.append(e)                 # (after the first: a run inside a step of another)
        if _idle:
            _wake_tick = _tick(e.timeout)
            _wake.notify()
    return e


def leave(e) -> None:
    """Stop watching the run :func:`enter` returned ``e`` for."""
    if e is None:
        return
    with _wake:
        stack = _runs.get(e.ident)
        if stack:
            if stack[-1] is e:
                stack.pop()
            elif e in stack:
                stack.remove(e)
