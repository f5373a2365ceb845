"""Schedules that hand the scheduler a batch of decisions (``Schedule.batch``) give the runs
one ``choose`` per choice point gives: the same choices, steps, clocks and results, whatever
the tasks do between (block, wake, complete, spawn, share a CPU, run a nested ``do``)."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smmu.runtime.scheduler import Scheduler
from smmu.runtime.schedules import PCT, RandomSchedule, RoundRobin


@given(seed=st.integers(0, 2**32), n=st.sampled_from([2, 3, 4, 5, 7, 8, 9, 17, 33]),
       plan=st.lists(st.tuples(st.booleans(), st.integers(1, 40), st.integers(0, 40)),
                     max_size=12))
@settings(max_examples=60)
def test_random_batches_draw_what_randrange_draws(seed, n, plan):
    # a mix of single choices and batches used in part: the choices are randrange's
    ref = random.Random(seed)
    s = RandomSchedule(seed)
    tasks = [type("T", (), {"tid": i})() for i in range(n)]
    for batch, limit, used in plan:
        if batch:
            run, tids = s.batch(None, tasks, limit)
            assert 1 <= len(run) <= limit and tids == [t.tid for t in run]
            used = min(used, len(run))
            s.consumed(used)
            got = [t.tid for t in run[:used]]
        else:
            got = [s.choose(None, tasks) for _ in range(used)]
        assert got == [ref.randrange(n) for _ in range(used)]


def _workload(s: Scheduler, seed: int):
    """Tasks that spin, lock, sleep, wait, complete, spawn, share a CPU and run nested
    work, differently for each seed."""
    rng = random.Random(seed)
    m = s.mutex("m")
    sp = s.spinlock("sp")
    wq = s.waitqueue("wq")
    done = s.completion("done")
    state = {"flag": 0, "log": []}

    def spinner(name, k):
        for i in range(k):
            state["log"].append((name, i))
            yield

    def locker(name, k):
        for _ in range(k):
            with (yield m):
                yield
                state["flag"] += 1
            if state["flag"] % 3 == 0:
                wq.wake_all()
            yield

    def spin_locker(k):
        for _ in range(k):
            with (yield sp):
                state["flag"] += 1
            yield s.sleep(50)

    def waiter(target):
        yield wq.wait_until(lambda: state["flag"] >= target)
        state["log"].append(("woke", target))
        yield from spinner("after-wait", 3)
        done.complete()

    def completer():
        yield done.wait()
        yield from spinner("completed", 2)

    def nester(k):
        for _ in range(k):
            s.do(spinner("nested", 3))
            yield

    sem = s.rwsem("sem")

    def reader(k):
        for _ in range(k):
            with (yield sem.read()):
                yield
            yield

    def writer(k, downgrade):
        for _ in range(k):
            yield sem.write()
            yield
            if downgrade:
                sem.downgrade_write()
                yield
                sem.up_read()
            else:
                sem.up_write()
            yield

    def spawner():
        yield from spinner("pre-spawn", rng.randrange(1, 6))
        s.spawn("late", spinner("late", rng.randrange(2, 12)))
        yield

    s.spawn("a", spinner("a", rng.randrange(5, 60)))
    s.spawn("b", locker("b", rng.randrange(1, 8)))
    s.spawn("c", locker("c", rng.randrange(1, 8)), cpu=7)
    s.spawn("d", spinner("d", rng.randrange(5, 40)), cpu=7)   # shares a CPU with c
    s.spawn("w", waiter(rng.randrange(1, 6)))
    s.spawn("x", completer())
    s.spawn("e", spin_locker(rng.randrange(1, 5)))
    s.spawn("n", nester(rng.randrange(1, 4)))
    s.spawn("s", spawner())
    s.spawn("r1", reader(rng.randrange(1, 6)))
    s.spawn("r2", reader(rng.randrange(1, 6)))
    s.spawn("wr", writer(rng.randrange(1, 4), False))
    s.spawn("wd", writer(rng.randrange(1, 4), True))
    return state


def _run(make, seed, batched, record_steps=False, fair_locks=False):
    sched = make(seed)
    if not batched:
        sched.batch = None            # one choose() per choice point
    s = Scheduler(sched, seed=seed, record_steps=record_steps, fair_locks=fair_locks)
    state = _workload(s, seed)
    r = s.run()
    return (r.schedule, r.steps, r.times, r.results, r.kinds(), state["log"], dict(r.stats),
            list(s.step_log) if record_steps else None, len(r.schedule))


SCHEDULES = {
    "round_robin": lambda seed: RoundRobin(),
    "random": lambda seed: RandomSchedule(seed),
    "pct": lambda seed: PCT(seed, depth=3, steps=40),
    "pct-deep": lambda seed: PCT(seed, depth=6, steps=300),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_batched_runs_are_the_runs_of_one_choice_per_step(name):
    make = SCHEDULES[name]
    for seed in range(25):
        assert _run(make, seed, True) == _run(make, seed, False), seed
    for seed in range(3):
        assert _run(make, seed, True, True) == _run(make, seed, False, True), seed
    for seed in range(10):          # ticket spinlocks, rwsem hand-over to the waiters
        assert _run(make, seed, True, fair_locks=True) == \
            _run(make, seed, False, fair_locks=True), seed


def test_batches_are_used_and_end_when_a_waiter_is_woken():
    # the comparison above means something only if batches run: count the choose() calls
    calls = []

    class Counting(RandomSchedule):
        def choose(self, sched, tasks):
            calls.append(len(tasks))
            return super().choose(sched, tasks)

    batched = _run(lambda seed: Counting(seed), 4, True)
    n_batched = len(calls)
    calls.clear()
    single = _run(lambda seed: Counting(seed), 4, False)
    assert batched == single
    assert len(calls) == batched[-1]          # one per choice point
    assert n_batched < len(calls) // 2        # most came in batches

    # a batch that did not end at the wake-up would keep the woken waiter off the CPU
    s = Scheduler(RoundRobin(), seed=0)
    wq = s.waitqueue("wq")
    flag = []
    order = []

    def sleeper():
        yield wq.wait_until(lambda: flag)
        order.append("woken")

    def waker():
        for i in range(40):
            if i == 5:
                flag.append(1)
                wq.wake_all()
            order.append(i)
            yield

    s.spawn("sleeper", sleeper())
    s.spawn("waker", waker())
    s.spawn("other", (None for _ in range(40)))
    s.run()
    assert order.index("woken") <= 8
