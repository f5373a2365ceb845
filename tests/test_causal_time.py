"""Causal simulated time: a task that waits resumes no earlier than the moment it was released,
CPUs are explicit, and a TLB flush is local or a shootdown by the CPUs the mm ran on."""

import pytest

import drivers
from smmu import PAGE_SIZE, Simulator
from smmu.base.errors import UsageError
from smmu.runtime.costs import COSTS, IO_KINDS, cost_table
from smmu.runtime.scheduler import Scheduler
from smmu.runtime.schedules import Timed

US = 1000.0
WAKEUP = COSTS["wakeup"][0]


def holder_and_waiter(s, lock_of, hold_ns):
    """Task ``a`` takes the lock and holds it for ``hold_ns``; task ``b`` wants it at once.
    Returns the dict where ``b`` records its clock once it holds the lock."""
    seen = {}

    def a():
        yield lock_of()
        yield s.sleep(hold_ns)          # holding the mutex across a sleep
        seen["released"] = s.now
        lock_of().release()

    def b():
        yield                           # let a take it first
        seen["asked"] = s.now
        yield lock_of()
        seen["acquired"] = s.now
        lock_of().release()

    s.spawn("a", a())
    s.spawn("b", b())
    return seen


@pytest.mark.parametrize("schedule", ["round_robin", "timed", "random"])
def test_waiting_for_a_mutex_held_50us_takes_50us(schedule):
    s = Scheduler(schedule, seed=3)
    m = s.mutex("m")
    seen = holder_and_waiter(s, lambda: m, 50 * US)
    r = s.run()
    assert r.ok
    assert seen["asked"] < 1 * US
    # it resumes no earlier than the release, and it slept: it pays the wake-up
    assert seen["acquired"] >= seen["released"] + WAKEUP
    assert seen["acquired"] >= 50 * US
    assert r.times["b"]["waited_ns"] >= 50 * US
    assert r.stats["wakeup"] == 1


def test_a_spinning_waiter_pays_the_handoff_and_spins():
    s = Scheduler("timed")
    sl = s.spinlock("sl")

    def a():
        yield sl
        s.charge("page_copy", 100)       # 50 us of work under the spinlock
        yield
        sl.release()

    def b():
        yield
        yield sl
        sl.release()

    s.spawn("a", a())
    s.spawn("b", b())
    r = s.run()
    assert r.ok
    assert r.times["b"]["end_ns"] >= r.times["a"]["end_ns"] - 10 + COSTS["lock_handoff"][0]
    assert r.times["b"]["spun_ns"] >= 49 * US and r.times["b"]["waited_ns"] == 0
    assert r.stats["lock_handoff"] == 1 and r.stats["lock"] == 2


def test_a_completion_wakes_its_waiter_at_the_completer_time():
    s = Scheduler("round_robin")
    c = s.completion("done")
    seen = {}

    def waiter():
        yield c.wait()
        seen["woken"] = s.now

    def completer():
        yield s.sleep(30 * US)
        seen["completed"] = s.now
        c.complete()

    s.spawn("w", waiter())
    s.spawn("c", completer())
    assert s.run().ok
    assert seen["woken"] >= seen["completed"] + WAKEUP
    assert seen["completed"] >= 30 * US


def test_a_completion_already_completed_still_orders_time():
    # complete() at 30 us, then a task at 0 us waits: it did not sleep (no wake-up), but it
    # cannot have passed the completion before it happened
    s = Scheduler("round_robin")
    c = s.completion("done")
    seen = {}

    def completer():
        yield s.sleep(30 * US)
        c.complete()

    def late():
        for _ in range(5):
            yield
        yield c.wait()
        seen["passed"] = s.now

    s.spawn("c", completer())
    s.spawn("l", late())
    assert s.run().ok
    assert 30 * US <= seen["passed"] < 30 * US + WAKEUP


def test_a_wait_queue_waiter_resumes_after_the_wake_up():
    s = Scheduler("timed")
    wq = s.waitqueue("wq")
    st = {"ready": False}
    seen = {}

    def waiter():
        yield wq.wait_until(lambda: st["ready"])
        seen["woken"] = s.now

    def waker():
        yield s.sleep(20 * US)
        st["ready"] = True
        seen["wake"] = s.now
        wq.wake_all()

    s.spawn("w", waiter())
    s.spawn("k", waker())
    assert s.run().ok
    assert seen["woken"] >= seen["wake"] + WAKEUP >= 20 * US + WAKEUP


def test_a_sleep_frees_the_cpu_for_a_task_sharing_it():
    def go(cpu_b):
        s = Scheduler("timed")

        def sleeper():
            yield s.sleep(100 * US)

        def worker():
            s.charge("page_copy", 20)       # 10 us of work
            yield

        s.spawn("sleeper", sleeper(), cpu=0)
        s.spawn("worker", worker(), cpu=cpu_b)
        r = s.run()
        assert r.ok
        return r

    shared, apart = go(0), go(1)
    # the worker runs while the sleeper sleeps: it is not delayed by the sleep
    assert shared.times["worker"]["end_ns"] < 20 * US
    assert shared.times["sleeper"]["end_ns"] >= 100 * US
    assert shared.times["worker"]["cpu"] == shared.times["sleeper"]["cpu"] == 0
    assert apart.times["worker"]["cpu"] == 1


def test_tasks_sharing_a_cpu_run_one_at_a_time():
    def go(cpus):
        s = Scheduler("round_robin")

        def work():
            for _ in range(4):
                s.charge("page_copy", 10)   # 5 us a step
                yield

        for i, c in enumerate(cpus):
            s.spawn(f"t{i}", work(), cpu=c)
        return s.run()

    apart = go([0, 1])
    shared = go([0, 0])
    assert apart.time_ns < 21 * US                 # in parallel
    assert shared.time_ns >= 40 * US               # one after the other
    assert shared.stats["context_switch"] >= 1     # round robin preempts on the one CPU
    assert "context_switch" not in apart.stats


def test_spawned_task_starts_at_the_spawner_clock():
    s = Scheduler("round_robin")
    seen = {}

    def child():
        seen["child_start"] = s.now
        yield

    def parent():
        yield s.sleep(7 * US)
        s.spawn("child", child())
        yield

    s.spawn("parent", parent())
    assert s.run().ok
    assert seen["child_start"] >= 7 * US


def test_default_cpus_are_distinct_and_cpu_must_be_a_number():
    s = Scheduler()
    a = s.spawn("a", (x for x in ()))
    b = s.spawn("b", (x for x in ()))
    c = s.spawn("c", (x for x in ()), cpu=a.cpu)
    assert a.cpu != b.cpu and c.cpu == a.cpu and a.core is c.core and b.core is None
    for bad in (-1, "0", 1.5, True):
        with pytest.raises(UsageError, match="cpu must be a CPU number"):
            s.spawn("x", (x for x in ()), cpu=bad)


# ------------------------------------------------------------------ the timed schedule

def _racers(s):
    log = []

    def t(name):
        for _ in range(3):
            s.charge("pte_update")
            log.append(name)
            yield
    for n in "abcd":
        s.spawn(n, t(n))
    return log


def test_timed_breaks_ties_by_seed_and_is_reproducible():
    def order(seed):
        s = Scheduler("timed", seed=seed)
        log = _racers(s)
        s.run()
        return tuple(log)

    runs = {order(seed) for seed in range(12)}
    assert len(runs) > 1                             # the seed decides ties
    assert order(5) == order(5)                      # and a seed replays bit for bit


def test_timed_jitter_spreads_costs_within_bounds():
    def makespan(seed, jitter):
        s = Scheduler(Timed(jitter=jitter), seed=seed)   # the scheduler seeds its schedule

        def t():
            for _ in range(50):
                s.charge("page_copy")
                yield
        s.spawn("t", t())
        return s.run().time_ns

    flat = makespan(0, 0.0)
    spread = {makespan(seed, 0.2) for seed in range(6)}
    assert len(spread) == 6 and flat not in spread
    assert all(0.8 * flat <= x <= 1.2 * flat for x in spread)
    assert makespan(3, 0.2) == makespan(3, 0.2)
    for bad in (-0.1, 1.0, "x"):
        with pytest.raises(UsageError, match="jitter"):
            Timed(0, jitter=bad)


def test_timed_runs_the_task_that_can_resume_earliest():
    # b is blocked on a mutex a holds until 50 us; c has work until 30 us: the timed
    # schedule must not run b (grantable at 50 us + wake-up) before c's steps at < 30 us
    s = Scheduler("timed")
    m = s.mutex("m")
    log = []

    def a():
        yield m
        yield s.sleep(50 * US)
        m.release()
        log.append(("a released", s.now))

    def b():
        yield
        yield m
        log.append(("b", s.now))
        m.release()

    def c():
        for _ in range(3):
            s.charge("page_copy", 20)
            yield
            log.append(("c", s.now))

    for name, g in (("a", a()), ("b", b()), ("c", c())):
        s.spawn(name, g)
    assert s.run().ok
    times = [t for _, t in log]
    assert times == sorted(times), log


# ------------------------------------------------------------------ fair locks (hand-off)

def _comeback(s, lock, take, drop):
    """``w`` takes the lock and is about to release it while ``r`` waits; ``w`` wants it again
    right away. Returns who got it second."""
    order = []

    def w():
        yield take()
        yield s.sleep(10 * US)
        drop()
        yield take()                 # straight back
        order.append("w")
        drop()

    def r():
        yield
        yield take()
        order.append("r")
        drop()

    s.spawn("w", w())
    s.spawn("r", r())
    assert s.run().ok
    return order


@pytest.mark.parametrize("kind", ["rwsem", "spinlock"])
def test_fair_locks_hand_over_to_the_waiter(kind):
    def go(fair):
        s = Scheduler("timed", fair_locks=fair)
        if kind == "rwsem":
            sem = s.rwsem("anon_vma->sem")
            return _comeback(s, sem, sem.write, sem.up_write)
        return _comeback_spin(s, s.spinlock("anon_vma->lock"))

    assert go(True) == ["r", "w"]        # handed to the waiter: the releaser queues behind
    assert go(False) == ["w", "r"]       # barging: the releaser (earlier clock) wins


def _comeback_spin(s, sl):
    order = []

    def w():
        yield sl
        s.charge("page_copy", 20)        # 10 us holding the spinlock (no sleep: atomic)
        yield
        sl.release()
        yield sl
        order.append("w")
        sl.release()

    def r():
        yield
        yield sl
        order.append("r")
        sl.release()

    s.spawn("w", w())
    s.spawn("r", r())
    assert s.run().ok
    return order


def test_fair_rwsem_hands_all_leading_readers_at_once():
    s = Scheduler("round_robin", fair_locks=True)
    sem = s.rwsem("i_mmap_sem")
    got = []

    def writer():
        yield sem.write()
        for _ in range(6):
            yield
        sem.up_write()

    def reader(n):
        yield
        yield sem.read()
        got.append((n, len(sem.readers)))
        yield
        sem.up_read()

    s.spawn("w", writer())
    s.spawn("r1", reader(1))
    s.spawn("r2", reader(2))
    assert s.run().ok
    # both readers were handed the semaphore together by the writer's up_write
    assert sorted(got) == [(1, 2), (2, 2)]


# ------------------------------------------------------------------ costs

def test_costs_can_be_overridden_and_bad_ones_are_refused():
    def run(costs):
        s = Scheduler(costs=costs)

        def t():
            s.charge("notifier_call", 10)
            yield
        s.spawn("t", t())
        return s.run().time_ns

    assert run({"notifier_call": 10_000}) - run(None) == pytest.approx(10 * (10_000 - 40))
    with pytest.raises(UsageError, match="unknown cost 'notifer_call'"):
        Scheduler(costs={"notifer_call": 1})
    with pytest.raises(UsageError, match=">= 0"):
        Scheduler(costs={"lock": -1})
    with pytest.raises(UsageError, match="number of ns"):
        Scheduler(costs={"lock": "fast"})


def test_io_is_an_off_cpu_wait():
    s = Scheduler()

    def t():
        s.wait_io("swap_io")
        s.charge("page_copy")
        yield
    s.spawn("t", t())
    r = s.run()
    assert r.times["t"]["io_ns"] == r.times["t"]["waited_ns"] == COSTS["swap_io"][0]
    assert r.time_ns >= COSTS["swap_io"][0] + COSTS["page_copy"][0]


def test_cost_table_names_every_source():
    table = cost_table()
    assert set(table) == set(COSTS)
    for kind, row in table.items():
        assert row["ns"] >= 0 and len(row["source"]) > 10, kind
        assert row["off_cpu"] == (kind in IO_KINDS)


# ------------------------------------------------------------------ TLB flushes

def _cow_storm(threads, npages=4, reclaim_from_kswapd=False):
    sim = Simulator(notifier_api="v2008", schedule="timed")
    mm = sim.new_process()
    buf = sim.do(mm.mmap(npages * PAGE_SIZE, prot="rw"))
    for i in range(npages):
        sim.do(mm.write(buf + i * PAGE_SIZE, i))
    sim.do(mm.fork())

    def writer(pages):
        for va in pages:
            yield from mm.write(va, 99)

    vas = [buf + i * PAGE_SIZE for i in range(npages)]
    for t in range(threads):
        sim.spawn(f"thread{t}", writer(vas[t::threads]))
    if reclaim_from_kswapd:
        def kswapd():
            for _ in range(20):
                yield
            yield from sim.reclaim(mm, buf, npages * PAGE_SIZE, force=True)
        sim.spawn("kswapd", kswapd())
    r = sim.run()
    assert r.ok, r.violations
    return sim, mm, r


def test_single_threaded_cow_flushes_locally():
    sim, mm, r = _cow_storm(1)
    assert mm.cpu_vm_mask == {0}
    assert r.stats["tlb_flush_local"] >= 4
    assert "tlb_shootdown" not in r.stats


def test_multithreaded_cow_shoots_down_the_other_cpu():
    sim, mm, r = _cow_storm(2)
    assert mm.cpu_vm_mask == {0, 1}
    assert r.stats["tlb_shootdown"] >= 4 and r.stats["tlb_shootdown_ipis"] >= 4
    single = _cow_storm(1)[2]
    # the shootdowns are what makes the multithreaded storm slower per page
    per_page = (r.time_ns / 4, single.time_ns / 4)
    assert per_page[0] > per_page[1] + COSTS["tlb_shootdown"][0] / 4


def test_a_flush_reaches_every_remote_cpu_of_the_mm():
    sim, mm, r = _cow_storm(3)
    assert mm.cpu_vm_mask == {0, 1, 2}
    # each flush from one thread IPIs the two others: one round trip plus one more send
    assert r.stats["ipi_send"] == r.stats["tlb_shootdown"]
    assert r.stats["tlb_shootdown_ipis"] == 2 * r.stats["tlb_shootdown"]


def test_reclaim_from_another_cpu_shoots_down_a_single_threaded_mm():
    sim, mm, r = _cow_storm(1, reclaim_from_kswapd=True)
    assert mm.cpu_vm_mask == {0}                 # kswapd ran no user code of the mm
    assert r.stats["tlb_shootdown"] >= 1         # but its flushes must reach CPU 0


def test_setup_work_runs_on_no_cpu():
    sim = Simulator()
    mm = sim.new_process()
    buf = sim.do(mm.mmap(PAGE_SIZE, prot="rw"))
    sim.do(mm.write(buf, 1))
    assert mm.cpu_vm_mask == set()
    assert "tlb_shootdown" not in sim.stats


# ------------------------------------------------------------------ every cost is charged

def test_every_cost_in_the_table_is_charged_by_some_work():
    """Fork + COW on three CPUs, a KVM device faulting through invalidations, reclaim with
    swap, writeback, contended sleeping and spinning locks, two tasks sharing a CPU: together
    they charge every entry of COSTS (a cost nothing charges is a lie in every benchmark)."""
    sim = Simulator(notifier_api="range_only", schedule="timed")
    mm = sim.new_process()
    n = 6
    buf = sim.do(mm.mmap(n * PAGE_SIZE, prot="rw"))
    vas = [buf + i * PAGE_SIZE for i in range(n)]
    f = sim.new_file("f", 2, fill=7)
    fbuf = sim.do(mm.mmap(2 * PAGE_SIZE, prot="rw", shared=True, file=f))
    kvm = sim.attach(drivers.KVM, mm)
    m = sim.mutex("m")
    sl = sim.spinlock("sl")

    def thread(k):
        for va in vas[k::3]:
            yield from mm.write(va, 1)          # faults, zeroing
        if k == 0:
            yield from mm.fork()
            for va in vas:
                yield from mm.write(va, 2)      # COW: copies, flushes reaching 3 CPUs
            yield from mm.write(fbuf, 3)
            yield from sim.writeback(f)
            yield from sim.reclaim(mm, buf, n * PAGE_SIZE, force=True)
            yield from mm.read(vas[0])          # swap-in
        yield m                                 # sleeping contention
        yield sim.sleep(1000)
        m.release()
        yield sl                                # spinning contention
        sim.charge("pte_update", 100)
        yield
        sl.release()

    def device():
        for _ in range(3):
            for va in vas:
                try:
                    yield from kvm.access(va, write=False)
                except Exception:               # noqa: BLE001 - the page may be gone
                    pass

    def sharer():
        yield sim.sleep(2000)                   # comes back while cpu0 has the CPU
        for _ in range(3):
            sim.charge("page_copy")
            yield

    for k in range(3):
        sim.spawn(f"cpu{k}", thread(k), cpu=k)
    sim.spawn("dev0", device(), cpu=3)
    sim.spawn("sharer", sharer(), cpu=0)
    r = sim.run()
    assert r.ok, r.violations
    missing = [k for k in COSTS if k != "step" and not r.stats.get(k)]
    assert not missing, f"never charged: {missing}"
    assert r.steps > 0         # "step" is charged per step (Task.time)
