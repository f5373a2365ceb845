"""The deterministic cooperative scheduler: tasks are generators, every ``yield`` a choice point.

A task is any generator. What it yields tells the scheduler what it wants:

=====================================  ==========================================================
``yield``                              a preemption point: another CPU may act here
``yield lock``                         acquire a spinlock or mutex; resumed holding it
``with (yield lock): ...``             the same, released when the block exits
``yield sem.read()`` / ``sem.write()``  take an rwsem shared / exclusive
``yield wq.wait_until(pred)``           sleep until ``pred()`` holds after a ``wq.wake_all()``
``yield completion.wait()``            sleep until ``completion.complete()``
``yield sched.sleep(ns)``               sleep for simulated time
``yield from other_generator()``       call another task-shaped function (hooks, MM ops)
=====================================  ==========================================================

One *step* runs the chosen task from one yield to the next; it is atomic with respect to all
other tasks. Which task runs at each step is decided by a :class:`Schedule`; the list of task
ids chosen wherever more than one task could run (``Scheduler.choices``) replays the run bit
for bit. Atomic context (spinlock held, non-blockable section) is tracked per task; a sleeping
primitive used there is a ``SleepInAtomic`` violation naming both places. Nothing runnable
while tasks wait is a ``Deadlock`` (with the wait-for cycle); a task past its step budget is a
``Livelock``. Both end the run instead of hanging the test process.

Simulated time is causal. Every task has its own clock (ns), advanced by its work
(:meth:`Scheduler.charge` from the cost table, :data:`COSTS` unless ``costs=`` overrides
entries), by each step, by I/O it waits for (:meth:`Scheduler.wait_io`) and by waiting: a task
woken by a release, a completion, a wake-up or the end of a sleep resumes no earlier than the
waker's clock at that moment (plus the hand-over: :mod:`smmu.runtime.locks`). A task spawned
starts at the clock of whoever spawned it. Tasks run on CPUs (``spawn(..., cpu=N)``; by
default each task has a CPU of its own): tasks sharing one CPU run one at a time, and the
primary MM uses the CPUs an mm ran on to make a TLB flush local or a shootdown. The ``timed``
schedule runs the task that can resume earliest (ties and optional cost jitter from its
seed); every other schedule ignores time, which only annotates their runs.
"""

from __future__ import annotations



from smmu.base.errors import (InternalError, Interrupted, SmmuError, TaskCrashed, UsageError,
                              Violation)
from smmu.base.log import get_logger
from smmu.runtime import watchdog
from smmu.runtime.costs import COSTS
from smmu.runtime.footprint import Halt
from smmu.runtime.locks import Completion, Mutex, NonBlock, RWSem, Spinlock, WaitQueue
from smmu.runtime.observer import FanOut, Observer
from smmu.runtime.rcu import RCUDomain
from smmu.runtime.schedules import make_schedule
from smmu.runtime.task import (Core, Request, Task, format_frames, raised_in_smmu,
                               traceback_frames, user_frame, user_site)
from smmu.runtime.watchdog import DEFAULT_STEP_TIMEOUT, Spinning

log = get_logger()

#: steps of one batch (:meth:`Scheduler._loop`): the first after a change of candidates, and
#: the most, doubling from one to the other while batches run to their end
_BATCH_MIN = 8
_BATCH_MAX = 1024
#: ``Task.value`` of a task whose pending request is granted at its next step
_GRANT = object()
#: the cost table's default ns per kind (each scheduler copies it, then applies ``costs=``)
_COST_NS = {k: v[0] for k, v in COSTS.items()}


class Counts(dict):
    """Counters by name, 0 for a name not counted yet (``stats``, ``hook_calls``): a
    ``collections.Counter`` without its methods, whose own ``__delitem__`` makes every
    ``counts[k] += 1`` on it take Python's slow path (about 2x a plain dict's on 3.11)."""

    __slots__ = ()

    def __missing__(self, key):
        return 0


class _Stop(BaseException):
    """Unwinds the run loop when a violation ends the run."""


class Sleep(Request):
    """``yield sched.sleep(ns)``: sleep for simulated time (a sleeping primitive)."""

    __slots__ = ("ns",)
    sleeps = True

    def __init__(self, ns: float):
        self.ns = ns

    def can(self, task):
        return True

    def grant(self, task):
        """The task leaves its CPU and resumes ``ns`` later (``schedule_timeout``)."""
        if task.core is not None:
            task.core.leave(task, task.time)
        task.clock += self.ns
        task.waited += self.ns

    def __repr__(self):
        return f"<sleep {self.ns}ns>"


class Result:
    """What a run produced: ``violations``, ``stats`` (counters; hook calls by name under
    ``hooks``), ``trace`` (events when tracing was on), ``schedule`` (the choice list),
    ``steps`` (count), ``time_ns`` (simulated makespan: the latest task clock), ``errors``
    (tasks that ended with a simulated fault such as SegmentationFault, by task name),
    ``times`` (per task name: ``tid``, ``cpu``, ``end_ns`` its clock, ``waited_ns`` off CPU,
    ``io_ns`` of which I/O, ``spun_ns`` spinning for locks), ``results`` (by the name of
    each task that finished), ``choice_log`` (under a ``Replay``: ``(step, candidate
    tids, previous tid, chosen tid)`` per choice point, what a report describes the
    schedule from)."""

    def __init__(self, sched: Scheduler):
        self.violations: list[Violation] = list(sched.violations)
        self.stats = dict(sched.stats)
        self.stats["hooks"] = dict(sched.hook_calls)
        self.trace = sched.trace
        self.schedule = list(sched.choices)
        self.steps = sched.steps
        self.time_ns = max((t.time for t in sched.all_tasks), default=0.0)
        self.times = {t.name: {"tid": t.tid, "cpu": t.cpu, "end_ns": t.time,
                               "waited_ns": t.waited,
                               "io_ns": t.io_ns, "spun_ns": t.spun}
                      for t in sched.all_tasks if t.tid >= 0}
        self.errors = {t.name: t.error for t in sched.all_tasks if t.error is not None}
        self.results = {t.name: t.result for t in sched.all_tasks if t.done}
        at, log_ = getattr(sched.schedule, "at", None), getattr(sched.schedule, "log", None)
        self.choice_log = [(s, *e) for s, e in zip(at, log_)] if at is not None and \
            log_ is not None else None

    @property
    def ok(self) -> bool:
        return not self.violations

    def kinds(self) -> list[str]:
        return sorted({v.kind for v in self.violations})

    def __repr__(self):
        if self.ok:
            return f"<Result clean: {self.steps} steps, {self.time_ns:.0f} ns simulated>"
        return (f"<Result {len(self.violations)} violation(s) {self.kinds()}: "
                f"{self.steps} steps>")


class Scheduler:
    """Runs tasks under a schedule; owns the violation list, counters and trace.

    ``max_steps``: total step budget of one ``run``; ``task_step_budget``: steps one task may
    take before it is declared a ``Livelock``; ``step_timeout``: wall seconds one step may run
    (a loop that never yields) before the watchdog (:mod:`smmu.runtime.watchdog`) ends the
    run with a ``Livelock`` (None: no watchdog). ``stop_on_violation``: end the run at the
    first violation (exploration wants this; a plain run records all and continues).
    ``costs``: ``{kind: ns}`` overriding entries of :data:`COSTS` for this scheduler (cost
    sweeps); ``fair_locks``: FIFO ticket spinlocks and rwsem hand-off to waiters
    (:mod:`smmu.runtime.locks`; default: released locks go to whoever the schedule picks).

    A task whose code raises is surfaced by :meth:`task_raised`: ``InternalError`` when the
    exception came from smmu's own code, else ``TaskCrashed``; Ctrl-C raises
    ``Interrupted`` saying where each task was.
    """

    def __init__(self, schedule="round_robin", seed: int | None = 0, *,
                 max_steps: int = 2_000_000, task_step_budget: int = 200_000,
                 step_timeout: float | None = DEFAULT_STEP_TIMEOUT,
                 stop_on_violation: bool = False, trace: bool = False,
                 record_steps: bool = False, costs: dict | None = None,
                 fair_locks: bool = False):
        self.seed = seed
        self.cost_ns: dict[str, float] = dict(_COST_NS)
        for k, v in (costs or {}).items():
            if k not in self.cost_ns:
                raise UsageError(f"unknown cost {k!r}: the kinds are {sorted(COSTS)}")
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise UsageError(f"cost {k!r} must be a number of ns, got {v!r}") from None
            if not v >= 0.0:
                raise UsageError(f"cost {k!r} must be >= 0 ns, got {v!r}")
            self.cost_ns[k] = v
        self.fair_locks = bool(fair_locks)
        self.schedule = make_schedule(schedule, seed)
        self.max_steps = max_steps
        self.task_step_budget = task_step_budget
        self.step_timeout = step_timeout
        #: where the watchdog found a step spinning: ((code, line) pairs, seconds)
        self.spinning_at = None
        self.stop_on_violation = stop_on_violation
        self.tracing = trace
        self.record_steps = record_steps
        #: who is told what happens (the observer port); the harness installs its oracle
        self.observer: Observer = Observer()
        #: take the stack where each atomic section begins (for SleepInAtomic reports);
        #: exploration turns it off and replays findings with it on
        self.capture_stacks = True
        #: a :class:`~smmu.runtime.footprint.Footprints` recorder while a partial-order
        #: search wants each step's footprint (set before tasks are spawned); else None
        self.footprint = None
        self.tasks: list[Task] = []      # runnable or blocked, spawn order
        self.all_tasks: list[Task] = []
        self.current: Task | None = None
        self.choices: list[int] = []
        self.steps = 0
        self.violations: list[Violation] = []
        self._seen: set = set()
        self.stats: Counts = Counts()
        self.hook_calls: Counts = Counts()
        self.trace: list = []
        self.step_log: list = []
        self.lockdep: dict = {}          # (a, b) -> where b was taken while holding a
        self._next_tid = 0
        self._npending = 0
        #: the batch of steps under way (:meth:`_loop`): (steps, their iterator, planned by
        #: the schedule), and for a planned one [steps, their tids, iterator, how many of
        #: their choices are recorded]
        self._run = None
        self._lazy = None
        self._stopped = False
        self._setup_task = Task(-1, "setup", None)
        self._cpu_tasks: dict[int, list[Task]] = {}   # cpu -> tasks spawned on it
        self.cores: dict[int, Core] = {}              # CPUs shared by several tasks
        self._rcu_domains: dict = {}

    # ----------------------------------------------------------------- tasks
    def spawn(self, name: str, gen, cpu: int | None = None) -> Task:
        """Add a task running generator ``gen``; it runs when ``run()`` is called. ``cpu``:
        the CPU it runs on (default: a CPU of its own); tasks given the same CPU run one at
        a time. It starts at the clock of the task that spawns it (the setup clock outside
        ``run()``)."""
        if not hasattr(gen, "send"):
            raise UsageError(
                f"spawn({name!r}, ...) needs a generator, got {type(gen).__name__}: call the "
                "task function, e.g. sim.spawn('cpu0', cpu()) not sim.spawn('cpu0', cpu)")
        if cpu is None:
            cpu = 0
            while cpu in self._cpu_tasks:
                cpu += 1
        elif isinstance(cpu, bool) or not isinstance(cpu, int) or cpu < 0:
            raise UsageError(f"spawn({name!r}, ..., cpu={cpu!r}): cpu must be a CPU number "
                             ">= 0 (or None: a CPU of its own)")
        fp = self.footprint
        if fp is not None:
            gen = fp.wrap(gen)
        t = Task(self._next_tid, name, gen, cpu=cpu, start=self.running.time)
        if fp is not None:
            gen.task = t
        self._next_tid += 1
        on_cpu = self._cpu_tasks.setdefault(cpu, [])
        on_cpu.append(t)
        if len(on_cpu) > 1:
            core = self.cores.get(cpu)
            if core is None:
                core = self.cores[cpu] = Core(cpu)
            for u in on_cpu:
                if u.core is None:
                    u.core = core
                    u.send = self._stepper(u)
        elif self.record_steps:
            t.send = self._stepper(t)
        self.candidates_change()
        self.tasks.append(t)
        self.all_tasks.append(t)
        return t

    def sleep(self, ns: float) -> Sleep:
        return Sleep(ns)

    def do(self, gen):
        """Run one generator to completion now, alone, and return its value (setup work).

        A simulated fault it raises (``SegmentationFault``, ``InvalidArgument``...) propagates
        to the caller. Violations it causes are recorded like any others."""
        if not hasattr(gen, "send"):
            raise UsageError("do(...) needs a generator: pass the call, e.g. "
                             "sim.do(mm.mmap(4096)), not the function")
        self.candidates_change()           # its steps count: the batch under way stops here
        saved_tasks, saved_stop, saved_pending = self.tasks, self.stop_on_violation, self._npending
        parent = self.running
        saved_current = self.current
        t = Task(-1, "setup", gen, cpu=parent.cpu, start=parent.time)
        if self.record_steps:
            t.send = self._stepper(t)
        self.tasks = [t]
        self._npending = 0
        self.all_tasks.append(t)
        self._stopped = False
        try:
            self._watched_loop(record=False)
        finally:
            self.tasks = saved_tasks
            self.stop_on_violation = saved_stop
            self._npending = saved_pending
            self.all_tasks.remove(t)
            self.current = saved_current
            # the work was the caller's: its clock moves on by what the operation took
            parent.clock += t.time - parent.time if t.time > parent.time else 0.0
            parent.waited += t.waited
            parent.io_ns += t.io_ns
            parent.spun += t.spun
        if t.error is not None:
            raise t.error
        if not t.done and self._stopped:
            return None
        if not t.done:
            blocked = t.pending
            raise UsageError(f"sim.do(...) could not finish: the operation is blocked on "
                             f"{blocked!r} held by a spawned task; spawn it instead and call "
                             "run()")
        return t.result

    def run(self) -> Result:
        """Run every spawned task until all are done, a violation stops the run, or nothing
        can run. Returns a :class:`Result`."""
        try:
            self._watched_loop(record=True)
        except Halt:                # a search cut the run short (footprint.Recorded)
            self._stopped = True
        finally:
            self.current = None
        self.quiesce()
        return Result(self)

    def watch(self, observer) -> None:
        """Add ``observer`` to those the lower layers report to (after the ones installed
        already: the oracle, the trace recorder): exploration's steering, footprint and
        coverage observers listen this way."""
        obs = self.observer
        current = obs.observers if isinstance(obs, FanOut) else (obs,)
        self.observer = FanOut(*current, observer)

    def quiesce(self) -> None:
        """The run is over: the observer makes its end-of-run checks (unpaired ranges...)."""
        self.observer.quiesce()

    @property
    def stopped(self) -> bool:
        """Did the last run end early (a violation stopped it)?"""
        return self._stopped

    def run_steps(self, n: int) -> None:
        """Run at most ``n`` more steps of the spawned tasks under the current schedule
        (choices recorded) and return without the end-of-run checks, for callers that
        interleave their own actions with a run (the hypothesis state machine of
        :mod:`smmu.testing`). Stopping after ``n`` steps is not a ``Livelock``."""
        saved = self.max_steps
        self.max_steps = self.steps + n
        try:
            self._watched_loop(record=True, budget_is_livelock=False)
        finally:
            self.max_steps = saved

    def _watched_loop(self, record: bool, budget_is_livelock: bool = True) -> None:
        """:meth:`_loop` under the watchdog, with Ctrl-C saying where each task was. Nothing
        here runs per step."""
        w = watchdog.enter(self)
        try:
            self._loop(record, budget_is_livelock)
        except Spinning:            # between two steps: a Schedule's choose() spinning
            self._spun(self.current)
        except Interrupted:
            raise
        except KeyboardInterrupt as e:
            raise Interrupted(self._task_places(None, e)) from None
        finally:
            watchdog.leave(w)

    # ----------------------------------------------------------------- the loop
    def _loop(self, record: bool, budget_is_livelock: bool = True) -> None:
        # The hot loop, kept flat on purpose (bench_runtime.py measures it against a bare
        # generator loop). Each round picks a *run*: the steps to take next. Where the
        # candidates cannot change until something happens that the scheduler sees (nothing
        # is pending: a task that blocks, ends or spawns, or a nested sim.do(), ends the run
        # early), one task alone runs up to a batch of steps, and a schedule with a
        # ``batch`` method hands over a batch of its decisions at once (recorded in
        # ``choices`` when the run ends, or when a violation asks: :meth:`_sync_choices`);
        # else the schedule chooses one step. self.steps is re-read every step because a
        # task may run sim.do() (a nested loop) inside its step.
        tasks = self.tasks
        schedule = self.schedule
        choose = schedule.choose
        plan = schedule.batch if record and not self.record_steps else None
        choices = self.choices
        budget = self.task_step_budget
        max_steps = self.max_steps
        on_yield = self._on_yield
        outer = self._run                   # a nested loop (sim.do in a step) restores it
        self._run = None
        blen = _BATCH_MIN
        try:
            while tasks:
                steps = self.steps
                if steps >= max_steps:
                    if budget_is_livelock:
                        self.violation("Livelock", f"the run passed its budget of {max_steps} "
                                       "steps; raise max_steps if the scenario is simply long",
                                       task=None, stop=False)
                    return
                batched = False
                if self._npending:
                    # candidates: tasks with no pending request, or whose request can be
                    # granted; the others are asleep if sure to stay blocked until
                    # candidates_change() (then a batch may run)
                    cand = []
                    asleep = True
                    for u in tasks:
                        req = u.pending
                        if req is None:
                            cand.append(u)
                        elif req.can(u):
                            cand.append(u)
                            asleep = False
                        elif asleep and not req.asleep(u):
                            asleep = False
                    n = len(cand)
                    if not n:
                        self._deadlock()
                        return
                else:
                    cand = tasks
                    n = len(tasks)
                    asleep = True
                run = None
                if asleep:
                    room = max_steps - steps
                    if n == 1:
                        run = [cand[0]] * (blen if blen < room else room)
                        batched = True
                    elif plan is not None:
                        planned = plan(self, cand, blen if blen < room else room)
                        if planned is not None:
                            run, tids = planned
                            batched = True
                elif n == 1:
                    run = cand
                if run is None:                   # the schedule chooses this step
                    task = cand[choose(self, cand)]
                    if record:
                        choices.append(task.tid)
                    run = (task,)
                if run[0].pending is not None:
                    run[0].value = _GRANT         # its request is granted when it steps
                it = iter(run)
                if batched:
                    self._run = (run, it, n > 1)
                    if n > 1:
                        self._lazy = [run, tids, it, 0]
                for task in it:
                    # (a task sharing its CPU switches it in, and with record_steps each
                    # step is logged, in its send: spawn sets them up)
                    self.current = task
                    self.steps += 1
                    try:
                        val = task.value
                        if val is None:
                            out = task.send(None)
                        else:
                            task.value = None
                            out = task.send(val) if val is not _GRANT else self._granted(task)
                    except BaseException as e:  # noqa: BLE001 - sorted out in _ended
                        task.steps += 1
                        if self._lazy is not None:
                            self._sync_choices()
                        if self._ended(task, e):
                            return
                        break                       # the candidates changed
                    if out is not None:
                        try:
                            on_yield(task, out)
                        except _Stop:
                            task.steps += 1
                            self._stopped = True
                            return
                        if task.pending is not None:    # it blocked: the candidates changed
                            k = task.steps + 1
                            task.steps = k
                            if k > budget:
                                self._over_budget(task)
                                return
                            break
                    k = task.steps + 1
                    task.steps = k
                    if k > budget:
                        self._over_budget(task)
                        return
                if batched:
                    # a run that went to its end asks for a longer one next time
                    if self._end_run() == len(run):
                        if blen < _BATCH_MAX:
                            blen += blen
                    else:
                        blen = _BATCH_MIN
        finally:
            if self._run is not None:
                self._end_run()
            self._run = outer

    def _granted(self, task: Task):
        """The step of a task whose pending request can now be granted: (its CPU switched
        in first) the request is granted and the task resumes with its value."""
        core = task.core
        if core is not None and core.last is not task:
            core.switch_to(task, self)
        val = task.pending.grant(task)      # pending still set: granted after a wait
        task.pending = None
        self._npending -= 1
        return task.send(val)

    def _stepper(self, task: Task):
        """``task.send`` for a task that shares its CPU with others (it switches the CPU in
        first) or whose steps are logged (``record_steps``); a plain task's is its
        generator's own ``send``."""
        send = task.gen.send
        core = task.core
        log = self.step_log if self.record_steps else None

        def step(val):
            if core is not None and core.last is not task:
                core.switch_to(task, self)
            out = send(val)
            if log is not None:
                log.append((self.steps, task.tid, task.name, task.where()))
            return out
        return step

    def _over_budget(self, task: Task) -> None:
        self.violation("Livelock", f"task {task.name!r} took more than {self.task_step_budget} "
                       "steps without finishing: it retries without bound (last at "
                       f"{task.where()})", task=task.name, stop=False)

    def _end_run(self) -> int:
        """The batch of steps under way is over: the schedule is told how many of its
        decisions were used (their choices recorded); returns how many steps it took."""
        run, it, planned = self._run
        used = len(run) - it.__length_hint__()
        if planned:
            self._sync_choices()
            self._lazy = None
            self.schedule.consumed(used)
        self._run = None
        return used

    def _sync_choices(self) -> None:
        """Record the choices of the batch of steps under way made so far (the step
        running included): what a violation or an error reports is the whole schedule."""
        lazy = self._lazy
        if lazy is not None:
            run, tids, it, done = lazy
            k = len(run) - it.__length_hint__()
            if k > done:
                self.choices.extend(tids[done:k])
                lazy[3] = k

    def candidates_change(self) -> None:
        """Which tasks can run is about to change (a task is spawned, a wait queue with
        waiters is woken, a completion completes, a step runs a nested loop): the batch of
        steps under way ends after the running step."""
        r = self._run
        if r is not None:
            run, it = r[0], r[1]
            del run[len(run) - it.__length_hint__():]

    def _ended(self, task: Task, e: BaseException) -> bool:
        """The task's generator raised ``e``; returns True if the run must stop."""
        if isinstance(e, StopIteration):
            self._finish(task, e.value, None)
            return False
        if isinstance(e, _Stop):
            self._finish(task, None, None)
            self._stopped = True
            return True
        self._finish(task, None, e)
        if isinstance(e, UsageError):      # the API was misused in the task's code
            if task.tid < 0:
                return True                 # sim.do() re-raises it as it is
            raise TaskCrashed(task.name, e) from e
        if isinstance(e, SmmuError):       # a simulated fault (SIGSEGV, ENOMEM...)
            return False
        if isinstance(e, Exception):       # a bug in the task's code or in smmu's
            return self.task_raised(task, e)
        if isinstance(e, Spinning):
            self._spun(task)
            return True
        if isinstance(e, KeyboardInterrupt) and not isinstance(e, Interrupted):
            raise Interrupted(self._task_places(task, e)) from None
        raise e                             # SystemExit and friends

    def task_raised(self, task: Task, e: Exception) -> bool:
        """Task ``task`` ended with exception ``e`` (not a simulated fault). Raise
        ``InternalError`` when smmu's own code raised it, else ``TaskCrashed`` naming the
        task. A subclass may instead record a finding and return True (the run stops): the
        simulator does for an exception raised in a driver's code."""
        if raised_in_smmu(e):
            raise InternalError(e, task=task.name, choices=self.choices,
                                where=user_site(traceback_frames(e))) from e
        raise TaskCrashed(task.name, e) from e

    def driver_raised(self, driver: str, what: str, e: BaseException, *, stop: bool = True):
        """Record a ``DriverError``: ``driver``'s ``what`` (a hook, ``access``) raised ``e``,
        with the user's file:line and the traceback. Ends the run (``stop``): the operation
        that called it cannot go on, as a kernel oops in a callback ends the task."""
        raw = traceback_frames(e)
        where = user_site(raw)
        return self.violation(
            "DriverError", f"{driver}.{what} raised {type(e).__name__}: {e} (at {where})",
            stop=stop, stacks={"traceback": format_frames(raw)}, driver=driver, hook=what,
            exception=f"{type(e).__name__}: {e}", where=where)

    def _spun(self, task: Task | None) -> None:
        """The watchdog stopped a step that ran too long: a ``Livelock`` at the user's line."""
        raw, secs = self.spinning_at or ([], 0.0)
        where = user_site(raw)
        name = task.name if task is not None else "the schedule"
        if task is not None:
            task.held.clear()     # the task is gone; its locks go with the stopped run
            if not task.done:
                self._finish(task, None, None)
        self.violation("Livelock", f"{name!r} ran one step for {secs:.1f} s of wall time "
                       f"without yielding, at {where}: a loop that never yields cannot be "
                       "preempted; add a `yield` in the loop (a preemption point) or bound it",
                       task=task.name if task is not None else None, stop=False,
                       stacks={"spinning": format_frames(raw)}, where=where)
        self._stopped = True

    def _task_places(self, running: Task | None, exc: BaseException | None) -> list:
        """``(task name, state, file:line in function)`` of every task not done: where Ctrl-C
        found them (the running one at the line the interrupt hit)."""
        out = []
        cur = running or self.current
        for t in self.all_tasks:
            if t.done and t is not cur:
                continue
            if t is cur:
                raw = traceback_frames(exc) if exc is not None else []
                where = user_site(raw) if raw else t.where()
                out.append((t.name, "running", where))
            else:
                state = f"blocked on {t.pending!r}" if t.pending is not None else "ready"
                out.append((t.name, state, t.where()))
        return out

    def _on_yield(self, task: Task, out) -> None:
        if isinstance(out, Request):
            if out.sleeps and task.atomic:
                self._sleep_in_atomic(task, out)
            if out.can(task):
                task.value = out.grant(task)
            else:
                task.pending = out
                self._npending += 1
                out.block(task)
                if task.core is not None:
                    task.core.leave(task, task.time)
            return
        self._finish(task, None, None)
        kind = "a generator (use `yield from` to call it)" if hasattr(out, "send") else repr(out)
        raise TaskCrashed(task.name, UsageError(
            f"task yielded {kind}; a task may yield None (preemption point), a lock, "
            "sem.read()/sem.write(), wq.wait_until(pred), completion.wait() or sleep(ns)"))

    def _finish(self, task, result, error):
        if task.pending is not None:
            task.pending.cancel(task)
            task.pending = None
            self._npending -= 1
        if task.core is not None:
            task.core.leave(task, task.time)
        task.done = True
        task.result = result
        task.error = error
        if task.held and error is None and task.tid >= 0:
            names = ", ".join(lk.name for lk in task.held)
            self.violation("Deadlock", f"task {task.name!r} ended still holding {names}: "
                           "every waiter on them will wait forever", task=task.name,
                           stop=False)
        if task in self.tasks:
            self.tasks.remove(task)

    # ----------------------------------------------------------------- atomic context
    def atomic_begin(self, reason: str, task: Task | None = None) -> None:
        """Enter an atomic section (``non_block_start``, a spinlock, the PT lock). A
        spinlock's grant and release do this and :meth:`atomic_end`'s common case inline
        (``_Lock.grant`` / ``_Lock.release``, smmu/runtime/locks.py): change them together."""
        task = task or self.current or self._setup_task
        task.atomic.append((reason, task.raw_stack() if self.capture_stacks else None))

    def atomic_end(self, reason: str | None = None, task: Task | None = None) -> None:
        task = task or self.current or self._setup_task
        if not task.atomic:
            raise UsageError(f"atomic_end({reason!r}) without atomic_begin in {task.name!r}")
        if reason is None:
            task.atomic.pop()
            return
        for i in range(len(task.atomic) - 1, -1, -1):
            if task.atomic[i][0] == reason:
                del task.atomic[i]
                return
        raise UsageError(f"atomic_end({reason!r}): no such atomic section in {task.name!r}")

    def might_sleep(self, what: str) -> None:
        """Linux's ``might_sleep()``: report if the current task is atomic."""
        task = self.current
        if task is not None and task.atomic:
            self._sleep_in_atomic(task, what)

    def _last_time(self) -> float:
        # a violation judged outside any task (at quiescence) happens when the run ends
        return max((t.time for t in self.all_tasks), default=0.0)

    def _sleep_in_atomic(self, task: Task, what) -> None:
        reason, began = task.atomic[-1]
        began = format_frames(began) if began is not None else [
            f"({reason}; replay the schedule to see where it began)"]
        here = task.stack()
        key = ("SleepInAtomic", here[-1] if here else None, reason)
        if key in self._seen:
            return
        self._seen.add(key)
        self.violation(
            "SleepInAtomic",
            f"{what!r} may sleep but {task.name!r} is atomic ({reason}); sleeping at "
            f"{user_frame(here)}, atomic since {user_frame(began)}",
            task=task.name, stacks={"sleep": here, "atomic_began": began})

    # ----------------------------------------------------------------- violations
    def violation(self, kind: str, message: str, *, address: int | None = None,
                  task: str | None = "", frames=(), stacks=None, stop: bool | None = None,
                  **details) -> Violation:
        """Record a finding; ends the run if ``stop_on_violation`` (or ``stop``) says so."""
        if task == "":
            task = self.current.name if self.current is not None else None
        if self._lazy is not None:
            self._sync_choices()
        v = Violation(kind=kind, message=message, address=address, task=task, step=self.steps,
                      time_ns=self.current.time if self.current else self._last_time(),
                      frames=tuple(int(f) for f in frames), schedule=list(self.choices),
                      stacks=stacks or {}, details=details,
                      steps=list(self.step_log) if self.record_steps else [])
        self.violations.append(v)
        log.debug("violation", kind=kind, address=address, task=task, msg=message)
        self.observer.violation(v)
        if stop if stop is not None else self.stop_on_violation:
            raise _Stop()
        return v

    def _deadlock(self) -> None:
        waits = []
        for t in self.tasks:
            req = t.pending
            holders = getattr(req, "holders", list)()
            waits.append(f"{t.name} waits for {req!r}" +
                         (f" held by {', '.join(h.name for h in holders)}" if holders else ""))
        cycle = self._wait_cycle()
        msg = "nothing can run: " + "; ".join(waits)
        if cycle:
            msg += " — cycle: " + " -> ".join(cycle)
        self.violation("Deadlock", msg, task=None, stop=False, cycle=cycle)

    def _wait_cycle(self) -> list[str]:
        edges = {}
        for t in self.tasks:
            holders = getattr(t.pending, "holders", list)()
            if holders:
                edges[t] = holders[0]
        for start in edges:
            seen, t = [], start
            while t in edges and t not in seen:
                seen.append(t)
                t = edges[t]
            if t in seen:
                i = seen.index(t)
                return [u.name for u in seen[i:]] + [t.name]
        return []

    # ----------------------------------------------------------------- lockdep
    def note_acquire(self, task: Task, lock) -> None:
        """Lock-order tracking (lockdep): record held -> lock edges by lock class name and
        report an inversion the first time both orders have been seen."""
        fp = self.footprint
        if fp is not None:
            fp.write(getattr(lock, "sem", lock))
        held = task.held
        if held:
            name = lock.name
            lockdep = self.lockdep
            for h in held:
                hn = h.name
                if hn != name and (hn, name) not in lockdep:
                    self._lock_order(task, hn, name)
        held.append(lock)
        self.stats["lock_acquire"] += 1

    def _lock_order(self, task: Task, hn: str, name: str) -> None:
        """A lock-order edge ``hn -> name`` not seen before in this run: remember where, and
        report an inversion if the other order was seen."""
        self.lockdep[(hn, name)] = (task.name, task.where())
        other = self.lockdep.get((name, hn))
        if other is not None:
            self.violation(
                "LockOrder",
                f"{task.name!r} takes {name!r} while holding {hn!r} at {task.where()}, "
                f"but {other[0]!r} took {hn!r} while holding {name!r} at {other[1]}: "
                "under another schedule these deadlock",
                task=task.name, locks=[hn, name])

    def note_release(self, task: Task, lock) -> None:
        """Lockdep's side of a release: ``lock`` leaves ``task.held`` (``_Lock.release``
        pops the innermost one inline when no footprint is recorded)."""
        fp = self.footprint
        if fp is not None:
            fp.write(lock)
        try:
            task.held.remove(lock)
        except ValueError:
            raise UsageError(f"{task.name!r} releases {lock!r} which it does not hold") from None

    # ----------------------------------------------------------------- primitives
    def spinlock(self, name: str):
        return Spinlock(self, name)

    def mutex(self, name: str):
        return Mutex(self, name)

    def rwsem(self, name: str):
        return RWSem(self, name)

    def waitqueue(self, name: str):
        return WaitQueue(self, name)

    def completion(self, name: str):
        return Completion(self, name)

    def rcu_domain(self, name: str, sleepable: bool = True):
        """The machine's RCU domain ``name`` (one per name, like the kernel's static
        ``srcu_struct``s): :class:`~smmu.runtime.rcu.RCUDomain`, SRCU or with
        ``sleepable=False`` classic RCU. Asking for an existing name with the other kind is a
        UsageError."""
        d = self._rcu_domains.get(name)
        if d is None:
            d = self._rcu_domains[name] = RCUDomain(self, name, sleepable)
        elif d.sleepable != bool(sleepable):
            raise UsageError(f"RCU domain {name!r} exists as "
                             f"{'SRCU' if d.sleepable else 'classic RCU'}")
        return d

    def non_block(self, reason: str = "non-blockable section"):
        return NonBlock(self, reason)

    # ----------------------------------------------------------------- time, stats, trace
    def charge(self, kind: str, n: int = 1) -> None:
        """Advance the running task's simulated clock by ``n`` units of ``COSTS[kind]``
        (this scheduler's ``costs``; the ``timed`` schedule may jitter it). Two hot paths
        do this inline, and must change with it: ``_Lock.grant`` (smmu/runtime/locks.py,
        the ``lock`` charge) and the notifier chain's planned walks (``notifier_call``)."""
        t = self.current or self._setup_task
        ns = self.cost_ns[kind] * n
        jitter = self.schedule.cost_factor
        if jitter is not None:
            ns *= jitter()
        t.clock += ns
        self.stats[kind] += n

    def wait_io(self, kind: str, n: int = 1) -> None:
        """The running task waits off CPU for ``n`` I/Os of ``COSTS[kind]`` (``swap_io``,
        ``writeback_io``): its clock moves on as for :meth:`charge`, counted as waited."""
        t = self.current or self._setup_task
        before = t.clock
        self.charge(kind, n)
        d = t.clock - before
        t.waited += d
        t.io_ns += d

    def cpu_of(self) -> int | None:
        """The CPU the running task runs on (None for setup work outside ``run()``, which
        builds the initial state and runs on no CPU of the simulated machine)."""
        return self.running.cpu

    @property
    def running(self) -> Task:
        """The task running now: ``current``, or the setup pseudo-task outside ``run()``
        (work done through ``do()`` and plain calls between runs)."""
        return self.current or self._setup_task

    @property
    def now(self) -> float:
        return (self.current or self._setup_task).time

    def trace_event(self, ph: str, name: str, args: dict | None = None) -> None:
        """Append a trace event: ``ph`` is "B" (begin), "E" (end) or "i" (instant)."""
        t = self.current or self._setup_task
        self.trace.append((ph, name, t.tid, t.name, t.time, self.steps, args or {}))

    def __repr__(self):
        return (f"<{type(self).__name__} schedule={self.schedule!r} seed={self.seed} "
                f"tasks={len(self.tasks)} steps={self.steps} "
                f"violations={len(self.violations)}>")
