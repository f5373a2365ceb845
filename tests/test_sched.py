"""The runtime: scheduling, determinism, primitives, and the violations it reports itself."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smmu.base.errors import TaskCrashed, UsageError
from smmu.runtime.scheduler import Scheduler
from smmu.runtime.schedules import RandomSchedule, Schedule


def counter_task(log, name, n):
    for i in range(n):
        log.append((name, i))
        yield


def test_round_robin_interleaves_in_spawn_order():
    s = Scheduler("round_robin")
    log = []
    s.spawn("a", counter_task(log, "a", 3))
    s.spawn("b", counter_task(log, "b", 3))
    r = s.run()
    assert r.ok
    assert [x[0] for x in log] == ["a", "b", "a", "b", "a", "b"]


@given(st.integers(0, 2**32 - 1))
def test_same_seed_same_run(seed):
    def go():
        s = Scheduler("random", seed=seed)
        log = []
        for name in "abc":
            s.spawn(name, counter_task(log, name, 4))
        r = s.run()
        return log, r.schedule

    assert go() == go()


def test_different_seeds_explore_different_orders():
    orders = set()
    for seed in range(20):
        s = Scheduler("random", seed=seed)
        log = []
        s.spawn("a", counter_task(log, "a", 3))
        s.spawn("b", counter_task(log, "b", 3))
        s.run()
        orders.add(tuple(x[0] for x in log))
    assert len(orders) > 3


def test_timed_schedule_runs_earliest_clock_first():
    s = Scheduler("timed")
    log = []

    def slow():
        s.charge("tlb_shootdown")
        log.append("slow")
        yield
        log.append("slow2")

    def fast():
        for i in range(3):
            log.append(f"fast{i}")
            yield

    s.spawn("slow", slow())
    s.spawn("fast", fast())
    r = s.run()
    assert log.index("slow2") > log.index("fast2")
    assert r.time_ns >= 15000


def test_do_runs_to_completion_and_returns_value():
    s = Scheduler()

    def op():
        yield
        return 42

    assert s.do(op()) == 42


def test_do_and_spawn_reject_non_generators_with_a_fix():
    s = Scheduler()

    def op():
        yield

    with pytest.raises(UsageError, match="call the task function"):
        s.spawn("x", op)
    with pytest.raises(UsageError, match="pass the call"):
        s.do(op)


def test_yielding_a_generator_explains_yield_from():
    s = Scheduler()

    def inner():
        yield

    def outer():
        yield inner()

    s.spawn("t", outer())
    with pytest.raises(TaskCrashed, match="yield from"):
        s.run()


def test_task_bug_is_surfaced_with_its_name():
    s = Scheduler()

    def bad():
        yield
        raise KeyError("oops")

    s.spawn("dev0", bad())
    with pytest.raises(TaskCrashed, match="dev0") as e:
        s.run()
    assert isinstance(e.value.__cause__, KeyError)


def test_unknown_schedule_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown schedule"):
        Scheduler("fastest")


# ---------------------------------------------------------------- locks

def test_mutex_excludes_and_with_releases():
    s = Scheduler("random", seed=5)
    m = s.mutex("m")
    inside = []

    def worker(name):
        for _ in range(3):
            with (yield m):
                inside.append(name)
                assert len(inside) == 1
                yield
                inside.pop()
            yield

    for n in "abc":
        s.spawn(n, worker(n))
    r = s.run()
    assert r.ok and not m.is_locked()


def test_with_without_yield_is_explained():
    s = Scheduler()
    m = s.mutex("m")

    def t():
        with m:
            yield

    s.spawn("t", t())
    with pytest.raises(TaskCrashed, match=r"with \(yield m\)"):
        s.run()


def test_sleep_under_spinlock_is_reported_with_both_places():
    s = Scheduler()
    sl, m = s.spinlock("ptl"), s.mutex("drv")

    def t():
        yield sl
        yield m          # might_sleep under a spinlock
        m.release()
        sl.release()

    s.spawn("t", t())
    r = s.run()
    assert r.kinds() == ["SleepInAtomic"]
    v = r.violations[0]
    assert "ptl" in v.message and v.stacks["atomic_began"] and v.stacks["sleep"]
    assert v.stacks["sleep"][-1] != v.stacks["atomic_began"][-1]


def test_mutex_outside_atomic_is_clean():  # the negative twin of the test above
    s = Scheduler()
    sl, m = s.spinlock("ptl"), s.mutex("drv")

    def t():
        yield m
        yield sl
        sl.release()
        m.release()

    s.spawn("t", t())
    assert s.run().ok


def test_non_block_section_is_atomic():
    s = Scheduler()
    m = s.mutex("m")

    def t():
        with s.non_block("oom reaper"):
            yield m
            m.release()

    s.spawn("t", t())
    r = s.run()
    assert r.kinds() == ["SleepInAtomic"] and "oom reaper" in r.violations[0].message


def test_abba_deadlocks_under_some_schedule_and_lockorder_always():
    def make(seed):
        s = Scheduler("random", seed=seed)
        a, b = s.mutex("A"), s.mutex("B")

        def t1():
            yield a
            yield
            yield b
            b.release()
            a.release()

        def t2():
            yield b
            yield
            yield a
            a.release()
            b.release()

        s.spawn("t1", t1())
        s.spawn("t2", t2())
        return s.run()

    results = [make(seed) for seed in range(30)]
    deadlocked = [r for r in results if "Deadlock" in r.kinds()]
    assert deadlocked, "some schedule must deadlock"
    d = next(v for v in deadlocked[0].violations if v.kind == "Deadlock")
    assert set(d.details["cycle"]) == {"t1", "t2"}
    clean = [r for r in results if "Deadlock" not in r.kinds()]
    assert clean, "some schedule must get through"
    assert all("LockOrder" in r.kinds() for r in clean)


def test_consistent_lock_order_is_clean():  # negative twin of LockOrder
    s = Scheduler("random", seed=1)
    a, b = s.mutex("A"), s.mutex("B")

    def t():
        for _ in range(3):
            yield a
            yield b
            b.release()
            a.release()

    s.spawn("t1", t())
    s.spawn("t2", t())
    assert s.run().ok


def test_livelock_reported_not_hung():
    s = Scheduler(task_step_budget=1000)
    flag = []

    def spinner():
        while not flag:
            yield

    s.spawn("retry", spinner())
    r = s.run()
    assert r.kinds() == ["Livelock"] and "retry" in r.violations[0].message


def test_recursive_lock_is_an_aa_deadlock():
    s = Scheduler()
    m = s.mutex("m")

    def t():
        yield m
        yield m

    s.spawn("t", t())
    r = s.run()
    assert "Deadlock" in r.kinds()


def test_rwsem_readers_share_writer_excludes():
    s = Scheduler("random", seed=3)
    sem = s.rwsem("mmap_lock")
    state = {"r": 0, "w": 0, "max_r": 0}

    def reader():
        with (yield sem.read()):
            state["r"] += 1
            state["max_r"] = max(state["max_r"], state["r"])
            assert state["w"] == 0
            yield
            yield
            state["r"] -= 1

    def writer():
        with (yield sem.write()):
            state["w"] += 1
            assert state["r"] == 0 and state["w"] == 1
            yield
            state["w"] -= 1

    for i in range(3):
        s.spawn(f"r{i}", reader())
    s.spawn("w", writer())
    assert s.run().ok
    assert not sem.is_locked()


def test_rwsem_readers_overlap_under_round_robin():
    s = Scheduler("round_robin")
    sem = s.rwsem("sem")
    state = {"r": 0, "max_r": 0}

    def reader():
        yield sem.read()
        state["r"] += 1
        state["max_r"] = max(state["max_r"], state["r"])
        yield
        state["r"] -= 1
        sem.up_read()

    s.spawn("r0", reader())
    s.spawn("r1", reader())
    s.run()
    assert state["max_r"] == 2


def test_waitqueue_needs_wake_and_condition():
    s = Scheduler("round_robin")
    wq = s.waitqueue("wq")
    st_ = {"count": 1, "passed": False}

    def waiter():
        yield wq.wait_until(lambda: st_["count"] == 0)
        st_["passed"] = True

    def waker():
        yield
        st_["count"] = 0
        yield
        assert not st_["passed"], "no wake_all yet: the waiter must still sleep"
        wq.wake_all()

    s.spawn("w", waiter())
    s.spawn("k", waker())
    assert s.run().ok and st_["passed"]


def test_waiter_never_woken_is_a_deadlock():  # negative twin
    s = Scheduler()
    wq = s.waitqueue("ms_wait_queue")
    st_ = {"count": 1}

    def waiter():
        yield wq.wait_until(lambda: st_["count"] == 0)

    def forgetful():
        yield
        st_["count"] = 0          # forgets wake_all

    s.spawn("w", waiter())
    s.spawn("f", forgetful())
    r = s.run()
    assert r.kinds() == ["Deadlock"] and "ms_wait_queue" in r.violations[0].message


def test_completion():
    s = Scheduler("random", seed=2)
    c = s.completion("done")
    order = []

    def w():
        yield c.wait()
        order.append("w")

    def d():
        yield
        order.append("d")
        c.complete()

    s.spawn("w", w())
    s.spawn("d", d())
    assert s.run().ok and order == ["d", "w"]


def test_sleep_advances_clock_and_counts_as_sleeping():
    s = Scheduler()
    sl = s.spinlock("l")

    def t():
        yield s.sleep(1000)
        yield sl
        yield s.sleep(10)
        sl.release()

    s.spawn("t", t())
    r = s.run()
    assert r.time_ns >= 1010
    assert r.kinds() == ["SleepInAtomic"]


def test_ending_while_holding_a_lock_is_reported():
    s = Scheduler()
    m = s.mutex("m")

    def t():
        yield m

    s.spawn("t", t())
    assert "Deadlock" in s.run().kinds()


def test_custom_schedule_instance():
    class Last(Schedule):
        def choose(self, sched, tasks):
            return len(tasks) - 1

    s = Scheduler(Last())
    log = []
    s.spawn("a", counter_task(log, "a", 2))
    s.spawn("b", counter_task(log, "b", 2))
    s.run()
    assert [x[0] for x in log] == ["b", "b", "a", "a"]


def test_reprs_are_readable():
    s = Scheduler(RandomSchedule(3))
    m, sem, wq = s.mutex("m"), s.rwsem("s"), s.waitqueue("q")
    t = s.spawn("t", counter_task([], "t", 1))
    for obj, word in [(s, "Scheduler"), (m, "'m'"), (sem, "'s'"), (wq, "'q'"), (t, "'t'")]:
        assert word in repr(obj)
