"""The wall-clock watchdog: a step that never ends (a loop that never yields) stops the run.

A step runs the chosen task from one ``yield`` to the next and the scheduler cannot pre-empt
it, so a driver whose ``access()`` or hook loops without yielding would hang the checker.
The watchdog watches from outside the hot loop and costs nothing per step: the scheduler
enters it once around each run (:func:`enter` / :func:`leave`, about a microsecond) and
the watchdog samples the step counter. When the counter has not moved for ``timeout``
seconds of wall time it raises :class:`Spinning` inside the running step; the scheduler
reports a ``Livelock`` with the user's line where the loop spun (the frame the exception
interrupted).

How the exception gets in:

* on the main thread, SIGALRM from a periodic ``ITIMER_REAL`` (armed by a run, stopped two
  idle ticks after the last one ended); the handler runs between two bytecodes of the
  spinning loop, and even a blocking call (``time.sleep``) is interrupted;
* on any other thread (a Dask worker, a user's thread), or when SIGALRM already belongs to
  someone else (pytest-timeout's signal method), one daemon thread samples every watched run
  and raises the exception in the spinning thread with ``PyThreadState_SetAsyncExc`` (it
  takes effect at the next bytecode; a blocking C call is not interrupted).

A step that is compiling numba kernels (the first call of a jitted function, seconds on a
cold cache) is not spinning: the watchdog lets it finish.
"""

from __future__ import annotations

import ctypes
import os
import signal
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


# ---------------------------------------------------------------------- the main thread
_MAIN = threading.main_thread().ident
_main_stack: list = []          # entries of the runs in progress on the main thread
_armed = [0.0, 0, 0.0]          # our ITIMER_REAL's period (0: off), idle ticks, checked at


def _on_alarm(signum, frame):
    if not _main_stack:
        # no run in progress: stop ticking after two idle ticks (runs come in bursts, and
        # re-arming for each would cost more than the whole watch)
        _armed[1] += 1
        if _armed[1] >= 2:
            signal.setitimer(signal.ITIMER_REAL, 0, 0)
            _armed[0] = 0.0
        return
    _armed[1] = 0
    if _stuck(_main_stack[-1], frame):
        raise Spinning()


def _take_sigalrm(tick: float, now: float) -> bool:
    """Make sure our periodic timer ticks with our handler; False when SIGALRM or
    ITIMER_REAL is in someone else's use (then the thread watches instead)."""
    if _armed[0] and now - _armed[2] < _armed[0]:
        return True                 # checked less than a tick ago: still ours
    try:
        if _armed[0] and signal.getitimer(signal.ITIMER_REAL)[1] == _armed[0]:
            _armed[1], _armed[2] = 0, now
            return True             # still ticking from the last run: nothing to do
        h = signal.getsignal(signal.SIGALRM)
        if h is not _on_alarm:
            if h not in (signal.SIG_DFL, signal.SIG_IGN, None):
                return False
            signal.signal(signal.SIGALRM, _on_alarm)
        elif signal.getitimer(signal.ITIMER_REAL)[0]:
            return False
        signal.setitimer(signal.ITIMER_REAL, tick, tick)
        _armed[0], _armed[1], _armed[2] = signal.getitimer(signal.ITIMER_REAL)[1], 0, now
        return True
    except (ValueError, OSError, AttributeError):   # no SIGALRM here (Windows)
        return False


# ---------------------------------------------------------------------- other threads
_threads: dict = {}             # thread ident -> entries of its runs in progress
_wake = threading.Condition()
_watcher: threading.Thread | None = None


def _raise_in(ident: int) -> None:
    # Never call it with NULL to "clear": CPython 3.11 then leaves the interpreter's
    # async-exception flag set and every thread takes the eval loop's slow path for good.
    # The shot is taken under _wake, only while the thread is inside the same step.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                               ctypes.py_object(Spinning))


def _watch_threads() -> None:
    while True:
        with _wake:
            while not any(_threads.values()):
                _wake.wait()
            stacks = [s[-1] for s in list(_threads.values()) if s]
        tick = min((_tick(e.timeout) for e in stacks), default=0.5)
        time.sleep(tick)
        with _wake:     # leave() cannot run between the check and the shot
            frames = sys._current_frames()
            for e in stacks:
                stack = _threads.get(e.ident)
                if stack and stack[-1] is e and _stuck(e, frames.get(e.ident)):
                    _raise_in(e.ident)
            del frames


def _watch_here(e: _Entry) -> None:
    global _watcher
    with _wake:
        _threads.setdefault(e.ident, []).append(e)
        if _watcher is None:
            _watcher = threading.Thread(target=_watch_threads, name="smmu-watchdog",
                                        daemon=True)
            _watcher.start()
        _wake.notify()


# ---------------------------------------------------------------------- the scheduler's side
def enter(sched):
    """Start watching ``sched``'s run on this thread (``sched.step_timeout`` seconds per
    step; None or 0: not watched). Returns the token :func:`leave` takes."""
    timeout = sched.step_timeout
    if not timeout:
        return None
    ident = threading.get_ident()
    e = _Entry(sched, float(timeout), ident)
    if ident == _MAIN and not _threads.get(ident):
        if _main_stack:
            _main_stack.append(e)
            return e
        if _take_sigalrm(_tick(e.timeout), e.since):
            _main_stack.append(e)
            return e
    _watch_here(e)
    return e


def leave(e) -> None:
    """Stop watching the run :func:`enter` returned ``e`` for."""
    if e is None:
        return
    if _main_stack and _main_stack[-1] is e:
        _main_stack.pop()           # the timer stops itself when idle (_on_alarm)
        return
    with _wake:
        stack = _threads.get(e.ident)
        if stack and e in stack:
            stack.remove(e)
            if not stack:
                del _threads[e.ident]

