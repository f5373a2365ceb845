"""Kernel synchronisation primitives for tasks: spinlock, mutex, rwsem, wait queue, completion.

All are acquired by yielding them (see :mod:`smmu.runtime.scheduler`); all release with a
plain call. A spinlock makes its holder atomic until released (``spin_lock`` disables
preemption), so a sleeping primitive used while holding one is ``SleepInAtomic``. Mutex,
rwsem, wait queue and completion waits may sleep. Every acquisition goes through
lockdep-style order tracking.

Create them through the scheduler (``sim.spinlock("mmu_lock")``...) so they know whose
``current`` task is acquiring; the name is the lock *class* for lock-order tracking, as in
lockdep, so give per-instance locks of one kind the same name.

Time (causal, see :mod:`smmu.runtime.costs`): every acquisition is charged ``lock``. Each
primitive stamps the moment it was released (unlock, ``up_read``/``up_write``,
``wake_all``, ``complete``); a task granted it resumes no earlier than that stamp, and one that
had to wait pays for the hand-over too: ``lock_handoff`` (it spun; spinlocks) or ``wakeup``
(it slept; mutex, rwsem, wait queue, completion).

``Scheduler(fair_locks=True)``: spinlocks are FIFO ticket locks (x86 since 2.6.25) and rwsems
hand the semaphore to the waiters at the head of their queue on release, a writer alone or
every reader up to the next writer (``__rwsem_do_wake`` in 2.6.27 lib/rwsem.c), so a
releaser that comes straight back queues behind them. By default a released lock goes to
whichever task the schedule picks next (barging: a superset of Linux's orders, what the
checker explores). Mutexes barge either way: the 2.6.2x mutex wakes its first waiter but
hands nothing over (hand-off came in 4.10, and only for a starving waiter).
"""

from __future__ import annotations

from collections import deque

from smmu.base.errors import UsageError
from smmu.runtime.task import _STEP_NS, Request, Task


_NOBODY = frozenset()


def _resume(sched, task, req, at: float) -> None:
    """``task`` is granted ``req``, released at ``at``: it resumes no earlier than that; when
    it had to wait (``task.pending is req``) it also pays the hand-over, spinning
    (``lock_handoff``) or sleeping (``wakeup``)."""
    if task.pending is req:
        kind = "wakeup" if req.sleeps else "lock_handoff"
        task.advance_to(at + sched.cost_ns[kind], req.sleeps)
        sched.stats[kind] += 1
    elif at > 0.0:
        task.advance_to(at, req.sleeps)


def _ready(sched, req, at: float) -> float:
    return at + sched.cost_ns["wakeup" if req.sleeps else "lock_handoff"]


class _Lock(Request):
    """Common part of spinlock and mutex: one owner at a time, released by a plain call."""

    kind = "lock"
    #: the atomic section holding it opens (a spinlock's), None for a sleeping lock
    _atomic = None

    def __init__(self, sched, name: str):
        self.sched = sched
        self.name = name
        self.owner: Task | None = None
        self.acquisitions = 0
        self.contended = 0         # acquisitions that had to wait
        self.blocked = 0           # tasks blocked on it now (a release wakes the scheduler)
        self.released_at = 0.0     # the releaser's clock at the last release
        self.fair = sched.fair_locks and self.kind == "spinlock"
        # fair: blocked tasks, FIFO (an unfair lock never queues: an empty tuple)
        self.waiters = deque() if self.fair else ()
        self.handed: Task | None = None  # fair: the waiter the lock was handed to

    def can(self, task):
        if self.owner is None:
            return not (self.fair and self.waiters and task.pending is not self)
        if self.handed is task:
            return True
        if self.owner is task:
            self.sched.violation("Deadlock", f"{task.name!r} takes {self.name!r} again while "
                                 f"holding it (at {task.where()}): kernel locks are not "
                                 "recursive (AA deadlock)", task=task.name, stop=False)
        return False

    def asleep(self, task):
        # held by another task (or handed to one): only its release, which tells the
        # scheduler (candidates_change), lets the waiter in; an AA deadlock is checked (and
        # reported) at every look, as before
        return task.pending is self and self.owner is not task and self.handed is not task

    def grant(self, task):
        # the common case flat (one call per acquisition; bench_checker --throughput): what
        # _resume, Scheduler.charge("lock") and, for a spinlock, atomic_begin do
        sched = self.sched
        at = self.released_at
        if task.pending is self:
            _resume(sched, task, self, at)
            self.blocked -= 1
        elif at > 0.0 and at - (task.clock + task.steps * _STEP_NS) > 0.0:
            task.advance_to(at, self.sleeps)
        if self.handed is task:
            self.handed = None
        self.owner = task
        self.acquisitions += 1
        sched.note_acquire(task, self)
        t = sched.current or sched._setup_task
        ns = sched.cost_ns["lock"]
        jitter = sched.schedule.cost_factor
        if jitter is not None:
            ns *= jitter()
        t.clock += ns
        sched.stats["lock"] += 1
        reason = self._atomic
        if reason is not None:
            task.atomic.append((reason, task.raw_stack() if sched.capture_stacks else None))
        return self

    def block(self, task):
        self.contended += 1
        self.blocked += 1
        if self.fair:
            self.waiters.append(task)

    def cancel(self, task):
        self.blocked -= 1
        if task in self.waiters:
            self.waiters.remove(task)

    def ready_at(self, task):
        return _ready(self.sched, self, self.released_at)

    def holders(self):
        return [self.owner] if self.owner is not None else []

    def trylock(self) -> bool:
        """Take the lock if free, without waiting (``spin_trylock`` / ``mutex_trylock``)."""
        task = self._current()
        if self.owner is not None or self.waiters:   # a ticket lock with waiters is taken
            return False
        self.grant(task)
        return True

    def release(self) -> None:
        task = self.owner
        if task is None or self.handed is task:
            raise UsageError(f"release of {self.name!r} which is not held")
        self.owner = None
        sched = self.sched
        t = sched.current or sched._setup_task
        self.released_at = t.clock + t.steps * _STEP_NS        # sched.running.time
        held = task.held
        if held and held[-1] is self and sched.footprint is None:
            held.pop()                          # note_release's common case
        else:
            sched.note_release(task, self)
        if self.waiters:                       # fair: the next ticket holder has it now
            nxt = self.waiters.popleft()
            self.owner = self.handed = nxt
        if self.blocked:                       # a waiter may go now: the batch under way
            sched.candidates_change()          # ends with this step
        reason = self._atomic
        if reason is not None:                 # spin_unlock: the atomic section ends
            atomic = task.atomic
            if atomic and atomic[-1][0] == reason:
                atomic.pop()
            else:
                sched.atomic_end(reason, task)

    unlock = release

    def is_locked(self) -> bool:
        return self.owner is not None

    def held_by_current(self) -> bool:
        return self.owner is not None and self.owner is self.sched.current

    def _current(self) -> Task:
        return self.sched.running

    def __enter__(self):
        if self.owner is None or self.owner is not self._current():
            raise UsageError(f"`with {self.name}:` without acquiring it: write "
                             f"`with (yield {self.name}):` inside a task")
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def __repr__(self):
        who = self.owner.name if self.owner else "free"
        return f"<{type(self).__name__} {self.name!r} {who}>"


class Spinlock(_Lock):
    """``spinlock_t``: waiting spins (never sleeps); holding it makes the holder atomic."""

    sleeps = False
    kind = "spinlock"

    def __init__(self, sched, name: str):
        super().__init__(sched, name)
        self._atomic = f"holding spinlock {name!r}"     # the atomic section's reason


class Mutex(_Lock):
    """``struct mutex``: waiting sleeps. ``mutex_lock`` in atomic context is SleepInAtomic even
    when uncontended (``might_sleep``), as in Linux."""

    sleeps = True
    kind = "mutex"

    def trylock(self) -> bool:
        # mutex_trylock does not sleep and is legal in atomic context
        return super().trylock()


class _RWSide(Request):
    sleeps = True

    def __init__(self, sem: RWSem, write: bool):
        self.sem = sem
        self.write = write
        self.name = sem.name

    def can(self, task):
        s = self.sem
        if task in s.handed:
            return True
        if s.writer is task or (self.write and task in s.readers):
            s.sched.violation("Deadlock", f"{task.name!r} takes rwsem {s.name!r} again while "
                              f"holding it (at {task.where()})", task=task.name, stop=False)
            return False
        if s.fair:
            # FIFO: a newcomer queues behind every waiter; waiters are handed the semaphore
            if s.waiters and task.pending is not self:
                return False
            if self.write:
                return s.writer is None and not s.readers and not s.waiters
            return s.writer is None and not s.waiters
        if self.write:
            return s.writer is None and not s.readers
        # writers waiting get priority so readers cannot starve them (as rwsem does)
        if s.writer is not None:
            return False
        if s.writers_blocked:        # (none blocked anywhere: none among sched.tasks)
            for t in s.sched.tasks:
                p = t.pending
                if isinstance(p, _RWSide) and p.write and p.sem is s:
                    return False
        return True

    def grant(self, task):
        s = self.sem
        if task.pending is self:
            _resume(s.sched, task, self, s.released_at)
            s.blocked -= 1
            if self.write:
                s.writers_blocked -= 1
        else:
            at = s.released_at
            if at > 0.0 and at - (task.clock + task.steps * _STEP_NS) > 0.0:
                task.advance_to(at, True)
        if s.handed and task in s.handed:
            s.handed.discard(task)        # the hand-over already made it an owner
        elif self.write:
            s.writer = task
        else:
            s.readers.append(task)
        s.sched.note_acquire(task, self)
        s.sched.charge("lock")
        return self

    def block(self, task):
        s = self.sem
        s.blocked += 1
        if self.write:
            s.writers_blocked += 1
        if s.fair:
            s.waiters.append((task, self.write))

    def asleep(self, task):
        # blocked behind a holder (or, reading, a waiting writer): the semaphore's release
        # or downgrade, or the end of a task, comes first and tells the scheduler; a
        # recursive take is checked (and reported) at every look, as before
        s = self.sem
        return (task.pending is self and task not in s.handed and s.writer is not task
                and not (self.write and task in s.readers))

    def cancel(self, task):
        s = self.sem
        s.blocked -= 1
        if self.write:
            s.writers_blocked -= 1
        for w in list(s.waiters):
            if w[0] is task:
                s.waiters.remove(w)

    def ready_at(self, task):
        return _ready(self.sem.sched, self, self.sem.released_at)

    def holders(self):
        s = self.sem
        return [s.writer] if s.writer is not None else list(s.readers)

    def release(self):
        s = self.sem
        if self.write:
            task = s.writer
            if task is None:
                raise UsageError(f"up_write on {s.name!r} which is not write-held")
            s.writer = None
        else:
            task = s.sched.running
            if task not in s.readers:
                if not s.readers:
                    raise UsageError(f"up_read on {s.name!r} which is not read-held")
                task = s.readers[0]
            s.readers.remove(task)
        sched = s.sched
        t = sched.current or sched._setup_task
        now = t.clock + t.steps * _STEP_NS                 # sched.running.time
        if now > s.released_at:
            s.released_at = now
        fp = sched.footprint
        if fp is not None:
            fp.write(s)
        # lockdep bookkeeping: the held entry is the side object that was granted
        held = task.held
        for i, h in enumerate(held):
            if isinstance(h, _RWSide) and h.sem is s and h.write == self.write:
                del held[i]
                break
        if s.waiters and s.writer is None and not s.readers:
            s.hand_over()
        if s.blocked:                          # a waiter may go now (candidates_change)
            sched.candidates_change()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def __repr__(self):
        return f"<rwsem {self.sem.name!r} {'write' if self.write else 'read'}>"


class RWSem:
    """``struct rw_semaphore``: ``yield sem.read()`` / ``yield sem.write()``; release with
    ``sem.up_read()`` / ``sem.up_write()`` or ``with (yield sem.read()):``."""

    def __init__(self, sched, name: str):
        self.sched = sched
        self.name = name
        self.writer: Task | None = None
        self.readers: list[Task] = []
        self.released_at = 0.0
        self.fair = sched.fair_locks
        self.blocked = 0                # tasks blocked on it now (a release wakes them)
        self.writers_blocked = 0        # of which on write() (readers give them way)
        # fair: (task, write) blocked, FIFO, and the waiters made owners by a release that
        # have not run yet (unfair: nothing is queued or handed, empty constants)
        self.waiters = deque() if self.fair else ()
        self.handed = set() if self.fair else _NOBODY
        self._r = _RWSide(self, False)
        self._w = _RWSide(self, True)

    def hand_over(self) -> None:
        """``__rwsem_do_wake`` (2.6.27 lib/rwsem.c): the semaphore just became free with
        waiters queued: "grant a single write lock if there's a writer at the front of the
        queue", else "grant an infinite number of read locks to the readers at the front"."""
        task, write = self.waiters.popleft()
        self.handed.add(task)
        if write:
            self.writer = task
            return
        self.readers.append(task)
        while self.waiters and not self.waiters[0][1]:
            task, _ = self.waiters.popleft()
            self.handed.add(task)
            self.readers.append(task)

    def read(self) -> _RWSide:
        return self._r

    def write(self) -> _RWSide:
        return self._w

    def up_read(self):
        self._r.release()

    def try_read(self) -> bool:
        """``down_read_trylock``: take it for read if no writer holds it or waits for it
        (lib/rwsem.c ``rwsem_read_trylock``: any of ``RWSEM_READ_FAILED_MASK`` fails it),
        without waiting; True if taken (release with :meth:`up_read`)."""
        task = self.sched.running
        if task in self.readers or self.writer is task:
            return False
        if not self._r.can(task) or self.waiters:
            return False
        self.readers.append(task)
        self.sched.note_acquire(task, self._r)
        self.sched.charge("lock")
        return True

    def up_write(self):
        self._w.release()

    def downgrade_write(self) -> None:
        """``downgrade_write``: the writer (the running task) keeps the semaphore as a
        reader, atomically: no writer can come in between, and readers that wait may enter
        now (``rwsem_downgrade_wake``). Release it later with ``up_read``."""
        task = self.sched.running
        if self.writer is not task:
            raise UsageError(f"downgrade_write on {self.name!r}, which {task.name!r} does not "
                             "hold for write")
        self.writer = None
        self.readers.append(task)
        if self.blocked:                # readers that wait may enter now
            self.sched.candidates_change()
        for i, h in enumerate(task.held):
            if isinstance(h, _RWSide) and h.sem is self and h.write:
                task.held[i] = self._r
                break
        while self.fair and self.waiters and not self.waiters[0][1]:
            waiter, _ = self.waiters.popleft()
            self.handed.add(waiter)
            self.readers.append(waiter)

    def is_locked(self) -> bool:
        return self.writer is not None or bool(self.readers)

    def __repr__(self):
        if self.writer:
            st = f"write-held by {self.writer.name}"
        elif self.readers:
            st = "read-held by " + ",".join(t.name for t in self.readers)
        else:
            st = "free"
        return f"<RWSem {self.name!r} {st}>"


class _Wait(Request):
    sleeps = True

    def __init__(self, wq: WaitQueue, pred):
        self.wq = wq
        self.pred = pred
        self.woken = False
        self.woken_at = 0.0
        self.name = wq.name

    def can(self, task):
        if task.pending is not self:  # first look, at the yield: wait_event checks first
            fp = self.wq.sched.footprint
            if fp is not None:        # the predicate reads what its code owns
                fp.read_by(self.pred)
            return bool(self.pred())
        if not self.woken:
            return False
        if self.pred():
            return True
        self.woken = False  # woken but the condition is false again: back to sleep
        return False

    def grant(self, task):
        if task.pending is self:           # it slept: it runs once the wake-up reaches it
            _resume(self.wq.sched, task, self, self.woken_at)
        fp = self.wq.sched.footprint
        if fp is not None:            # woken, and the predicate held
            fp.write(self.wq)
            fp.read_by(self.pred)
        if self in self.wq.waiters:
            self.wq.waiters.remove(self)

    def ready_at(self, task):
        return _ready(self.wq.sched, self, self.woken_at)

    def asleep(self, task):
        return task.pending is self and not self.woken     # only wake_all sets woken

    def holders(self):
        return []

    def __repr__(self):
        return f"<wait on {self.wq.name!r}{' (woken)' if self.woken else ''}>"


class WaitQueue:
    """``wait_queue_head_t``: ``yield wq.wait_until(pred)`` is ``wait_event(wq, pred())``: it
    returns at once if ``pred()`` holds, otherwise sleeps until a ``wake_all()`` finds it
    true. A waiter that nobody wakes sleeps forever (and the run reports a Deadlock)."""

    def __init__(self, sched, name: str):
        self.sched = sched
        self.name = name
        self.waiters: list[_Wait] = []
        self.wakeups = 0

    def wait_until(self, pred) -> _Wait:
        if not callable(pred):
            raise UsageError("wait_until needs a callable predicate, e.g. "
                             "wq.wait_until(lambda: self.count == 0)")
        w = _Wait(self, pred)
        self.waiters.append(w)
        return w

    def wake_all(self) -> None:
        fp = self.sched.footprint
        if fp is not None:
            fp.write(self)
        self.wakeups += 1
        now = self.sched.running.time
        if self.waiters:
            self.sched.candidates_change()
        for w in self.waiters:
            w.woken = True
            w.woken_at = now

    wake_up_all = wake_all

    def __repr__(self):
        return f"<WaitQueue {self.name!r} {len(self.waiters)} waiting>"


class _CompletionWait(Request):
    sleeps = True

    def __init__(self, c: Completion):
        self.c = c
        self.name = c.name

    def can(self, task):
        return self.c.done > 0

    def grant(self, task):
        c = self.c
        _resume(c.sched, task, self, c.completed_at)
        if c.done != Completion.ALL:
            c.done -= 1

    def ready_at(self, task):
        return _ready(self.c.sched, self, self.c.completed_at)

    def asleep(self, task):
        return task.pending is self and self.c.done == 0      # until a complete()
        fp = self.c.sched.footprint
        if fp is not None:
            fp.write(self.c)
        if self.c.done != Completion.ALL:
            self.c.done -= 1

    def holders(self):
        return []

    def __repr__(self):
        return f"<wait_for_completion {self.c.name!r}>"


class Completion:
    """``struct completion``: ``yield c.wait()``; ``c.complete()`` lets one waiter through,
    ``c.complete_all()`` every present and future waiter."""

    ALL = 1 << 30

    def __init__(self, sched, name: str):
        self.sched = sched
        self.name = name
        self.done = 0
        self.completed_at = 0.0     # the completer's clock at the last complete()

    def wait(self) -> _CompletionWait:
        return _CompletionWait(self)

    def complete(self):
        self.sched.candidates_change()
        self.completed_at = max(self.completed_at, self.sched.running.time)
        fp = self.sched.footprint
        if fp is not None:
            fp.write(self)
        if self.done != self.ALL:
            self.done += 1

    def complete_all(self):
        self.sched.candidates_change()
        self.completed_at = max(self.completed_at, self.sched.running.time)
        fp = self.sched.footprint
        if fp is not None:
            fp.write(self)
        self.done = self.ALL

    def __repr__(self):
        return f"<Completion {self.name!r} done={self.done}>"


class NonBlock:
    """``non_block_start()/non_block_end()`` as a context manager for plain code."""

    def __init__(self, sched, reason: str = "non-blockable section"):
        self.sched = sched
        self.reason = reason

    def __enter__(self):
        self.sched.atomic_begin(self.reason)
        return self

    def __exit__(self, *exc):
        self.sched.atomic_end(self.reason)
        return False
