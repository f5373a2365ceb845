"""Lifetime rules of the notifier chain (issue 9, items 1-3), each as mm/mmu_notifier.c has
it: walks are SRCU read-side sections over the live list; unregister unlinks, then waits for
every section begun before (``synchronize_srcu``); put frees asynchronously
(``call_srcu`` -> ``free_notifier``); exit's release unlinks every list subscription (not the
interval notifiers) and runs without mmap_lock; the first interval insert registers the tree
under mmap_lock for write and ``mm_take_all_locks``. Each test fails on the model before
issue 9; each rule has its twin (what must still be caught)."""

import pytest
from notifier_kit import setup

from smmu import PAGE_SIZE, MMUNotifier, Range, Simulator
from smmu.base.errors import CoreBug, InternalError, UsageError
from smmu.notifier import (MMUIntervalNotifier, mmu_interval_notifier_insert,
                           mmu_interval_read_begin)

P = PAGE_SIZE


def _invalidate(subs, r):
    yield from subs.mmu_notifier_invalidate_range_start(r)
    yield
    yield from subs.mmu_notifier_invalidate_range_end(r)


class _Log(MMUNotifier):
    """Logs its start/end; ``hold``: its start sleeps until ``go`` (after ``gate``)."""

    def __init__(self, sim, mm, log, tag, hold=None):
        super().__init__(sim, mm)
        self.log, self.tag, self.hold = log, tag, hold

    def invalidate_range_start(self, r):
        self.log.append(f"{self.tag}.start")
        if self.hold is not None:
            gate, go = self.hold
            gate.complete_all()
            yield go.wait()
            self.log.append(f"{self.tag}.start returns")

    def invalidate_range_end(self, r):
        self.log.append(f"{self.tag}.end")

    def free_notifier(self):
        self.log.append(f"{self.tag}.free")


# =========================================================================== item 1: unregister

def _unregister_during_a_walk(unlinked_first: bool):
    """Subscriptions A (newer: called first) and B. A's start sleeps; meanwhile B is
    unregistered. ``unlinked_first``: B is the newer one instead, so its start already ran."""
    sim, mm, subs = setup("modern")
    log = []
    gate, go = sim.completion("gate"), sim.completion("go")
    older = _Log(sim, mm, log, "B" if not unlinked_first else "A", None)
    sim.do(subs.register(older))
    newer = _Log(sim, mm, log, "A" if not unlinked_first else "B", None)
    sim.do(subs.register(newer))
    a, b = (newer, older) if not unlinked_first else (older, newer)
    a.hold = (gate, go)

    def detach():
        yield gate.wait()
        yield from subs.unregister(b)
        log.append("unregistered")

    def releaser():
        yield gate.wait()
        yield
        yield
        go.complete()

    sim.spawn("cpu", _invalidate(subs, Range(mm, 0, 2 * P)))
    sim.spawn("detach", detach())
    sim.spawn("go", releaser())
    return sim.run(), log


def test_unregister_while_a_walk_sleeps_skips_it_and_returns_after_the_walk():
    """The issue's reproduction: newer A's start sleeps, B is unregistered meanwhile. Linux:
    the walk reaches B after the unlink and skips it; ``synchronize_srcu`` returns only once
    the walk's section is over. Before: B's start ran after ``unregister`` returned."""
    res, log = _unregister_during_a_walk(unlinked_first=False)
    assert res.ok, res.violations
    assert "B.start" not in log and "B.end" not in log, log
    assert log.index("unregistered") > log.index("A.start returns"), log


def test_a_start_that_ran_before_the_unlink_may_get_no_end_and_is_not_unpaired():
    """B (newer) got its start, then was unregistered while A's start slept: the end walk
    skips B. Linux does exactly that ("release has told the driver"): not UnpairedRange."""
    res, log = _unregister_during_a_walk(unlinked_first=True)
    assert res.ok, res.violations
    assert "B.start" in log and "B.end" not in log and "A.end" in log, log


def test_twin_a_start_left_without_end_on_a_registered_subscription_is_unpaired():
    sim, mm, subs = setup("modern")
    d = _Log(sim, mm, [], "B")
    sim.do(subs.register(d))
    sim.do(subs.mmu_notifier_invalidate_range_start(Range(mm, 0, P)))   # no end, still linked
    sim.quiesce()
    assert [v.kind for v in sim.violations] == ["UnpairedRange"]


def test_the_chain_cannot_call_a_hook_of_an_unlinked_subscription():
    """A hook after unregister would be a bug of the chain itself: its one hook-calling
    helper refuses (CoreBug), so no walk can do it silently."""
    sim, mm, subs = setup("modern")
    d = _Log(sim, mm, [], "B")
    sim.do(subs.register(d))
    sim.do(subs.unregister(d))
    assert not d.registered
    with pytest.raises(InternalError, match="after it was freed") as e:   # smmu's bug: exit 3
        sim.do(subs._call(d, "invalidate_range_start", (Range(mm, 0, P),)))
    assert isinstance(e.value.exc, CoreBug)


def test_put_unlinks_at_once_and_frees_after_the_grace_period():
    """``mmu_notifier_put`` is asynchronous: it unlinks (a walk reaching B later skips it)
    and returns; ``free_notifier`` runs only after every section begun before (call_srcu).
    Before: put waited for B's own hooks and never called free_notifier."""
    sim, mm, subs = setup("modern")
    log = []
    gate, go = sim.completion("gate"), sim.completion("go")
    b = sim.do(subs.get(_Log, lambda: _Log(sim, mm, log, "B")))
    a = _Log(sim, mm, log, "A", (gate, go))
    sim.do(subs.register(a))

    def putter():
        yield gate.wait()
        yield from subs.put(b)
        log.append("put returned")
        yield
        go.complete()
        yield from subs.mmu_notifier_synchronize()
        log.append("synchronized")

    sim.spawn("cpu", _invalidate(subs, Range(mm, 0, P)))
    sim.spawn("put", putter())
    assert sim.run().ok
    assert "B.start" not in log and log.index("put returned") < log.index("A.start returns")
    assert log.index("A.start returns") < log.index("B.free") < log.index("synchronized"), log


def test_twin_put_of_a_notifier_still_referenced_keeps_it_on_the_chain():
    sim, mm, subs = setup("modern")
    log = []
    b = sim.do(subs.get(_Log, lambda: _Log(sim, mm, log, "B")))
    assert sim.do(subs.get(_Log)) is b
    sim.do(subs.put(b))
    sim.do(_invalidate(subs, Range(mm, 0, P)))
    assert log == ["B.start", "B.end"] and b.registered
    sim.do(subs.put(b))
    assert log[-1] == "B.free" and not b.registered
    with pytest.raises(UsageError, match="without a matching get"):
        sim.do(subs.put(b))


def test_classic_rcu_walks_are_atomic_and_srcu_walks_may_sleep():
    """notifier_rcu="rcu" (2.6.27..3.6): a walk is an rcu_read_lock section, so a hook that
    sleeps is SleepInAtomic; "srcu" (3.7+, 21a92735f660): the same hook is legal."""
    class Sleeps(MMUNotifier):
        def invalidate_range_start(self, r):
            with (yield self.mutex):
                pass

    kinds = {}
    for rcu in ("rcu", "srcu"):
        sim, mm, subs = setup("v2008", notifier_rcu=rcu)
        d = Sleeps(sim, mm)
        d.mutex = sim.mutex("driver mutex")
        sim.do(subs.register(d))
        sim.do(_invalidate(subs, Range(mm, 0, P)))
        kinds[rcu] = [v.kind for v in sim.violations]
    assert kinds == {"rcu": ["SleepInAtomic"], "srcu": []}


# =========================================================================== item 2: release

class _Recorder(MMUNotifier):
    """Logs every hook, and whether it was still on the chain when called."""

    def __init__(self, sim, mm):
        super().__init__(sim, mm)
        self.log = []
        self.wq = sim.waitqueue("released")

    def release(self, mm):
        self.log.append("release")
        self.wq.wake_all()

    def invalidate_range_start(self, r):
        self.log.append("start")

    def invalidate_range_end(self, r):
        self.log.append("end")


def _exit_racing_truncate(api):
    sim = Simulator(notifier_api=api, schedule="round_robin")
    f = sim.new_file("f", 2, fill=5)
    mm = sim.new_process("p")
    buf = sim.do(mm.mmap(2 * P, shared=True, file=f))
    for i in range(2):
        sim.do(mm.read(buf + i * P))
    d = sim.attach(_Recorder, mm)

    def truncater():
        yield d.wq.wait_until(lambda: "release" in d.log)
        yield from sim.truncate(f, P)

    sim.spawn("exit", mm.exit())
    sim.spawn("truncate", truncater())
    return sim, d, sim.run()


@pytest.mark.parametrize("api", ["v2008", "range_only", "modern"])
def test_no_hook_after_release_although_truncate_still_reaches_the_exiting_mm(api):
    """``mn_hlist_release``: after ``release`` every list subscription is unlinked
    (``hlist_del_init_rcu``), so a truncate that still zaps the exiting mm's mapping calls
    none of its hooks. Before: start/end after release."""
    sim, d, res = _exit_racing_truncate(api)
    assert res.ok, res.violations
    assert d.log == ["release"], d.log
    assert not d.registered


def test_twin_interval_notifiers_stay_in_the_tree_after_release():
    """Release removes only hlist subscriptions: an interval notifier keeps receiving
    invalidations of the exiting mm (MMU_NOTIFY_RELEASE, then the truncate's and
    unmap_vmas' ranges) until it is removed."""
    sim = Simulator(notifier_api="modern", schedule="round_robin")
    f = sim.new_file("f", 2, fill=5)
    mm = sim.new_process("p")
    buf = sim.do(mm.mmap(2 * P, shared=True, file=f))
    seen = []
    isub = MMUIntervalNotifier(lambda s, r, seq: seen.append(r.event.name) or True)
    sim.do(mmu_interval_notifier_insert(isub, mm, buf, 2 * P))
    d = sim.attach(_Recorder, mm)

    def truncater():
        yield d.wq.wait_until(lambda: "release" in d.log)
        yield from sim.truncate(f, P)

    sim.spawn("exit", mm.exit())
    sim.spawn("truncate", truncater())
    assert sim.run().ok
    assert seen[0] == "RELEASE" and "CLEAR" in seen and seen[-1] == "UNMAP", seen
    assert d.log == ["release"]


class _ReleaseTakesMmapLock(MMUNotifier):
    """A release hook that takes mmap_lock (for read): legal, no version of exit_mmap holds
    mmap_lock across mmu_notifier_release."""

    def release(self, mm):
        yield mm.mmap_lock.read()
        mm.mmap_lock.up_read()


@pytest.mark.parametrize("lock", ["none", "write", "read_then_write"])
def test_exit_runs_release_without_mmap_lock_in_every_era(lock):
    """2.6.27..5.18 take no mmap_lock in exit_mmap, 5.19 the write lock after release, 6.6
    the read lock for unmap_vmas and the write lock for free_pgtables. Before: exit held
    mmap_lock for write across release: a false Deadlock."""
    sim = Simulator(notifier_api="modern", exit_mmap_lock=lock)
    mm = sim.new_process("p")
    sim.do(mm.mmap(P, populate=True))
    sim.attach(_ReleaseTakesMmapLock, mm)
    sim.spawn("exit", mm.exit())
    res = sim.run()
    assert res.ok and mm.exited, res.violations


def test_twin_a_start_hook_taking_mmap_lock_under_mprotect_still_deadlocks():
    class StartTakesMmapLock(MMUNotifier):
        def invalidate_range_start(self, r):
            yield r.mm.mmap_lock.read()
            r.mm.mmap_lock.up_read()

    sim = Simulator(notifier_api="modern")
    mm = sim.new_process("p")
    buf = sim.do(mm.mmap(P, populate=True))
    sim.attach(StartTakesMmapLock, mm)
    sim.spawn("mprotect", mm.mprotect(buf, P, "r"))
    assert "Deadlock" in sim.run().kinds()


def test_faults_and_gup_on_an_exiting_mm_fail_and_exit_waits_for_those_in_flight():
    """exit_mmap runs at the last mmput: a GUP in flight (it holds mm_users) finishes first;
    a fault or GUP that starts once exit began fails (mmget_not_zero)."""
    sim = Simulator(notifier_api="modern", schedule="round_robin")
    mm = sim.new_process("p")
    buf = sim.do(mm.mmap(P, populate=True))
    order = []

    def gup():
        pfn = yield from mm.get_user_pages(buf)
        order.append("gup")
        yield from mm.put_page(pfn)

    def late():
        yield
        yield
        try:
            yield from mm.read(buf + 0)
        except Exception as e:          # SegmentationFault: the mm is exiting
            order.append(type(e).__name__)

    def ex():
        yield
        yield from mm.exit()
        order.append("exited")

    sim.spawn("gup", gup())
    sim.spawn("exit", ex())
    sim.spawn("late", late())
    res = sim.run()
    assert res.ok and order.index("gup") < order.index("exited"), order
    assert "SegmentationFault" in order, order


# =========================================================================== item 3: first insert

class _SleepyStart(MMUNotifier):
    def __init__(self, sim, mm, gate, go):
        super().__init__(sim, mm)
        self.gate, self.go = gate, go

    def invalidate_range_start(self, r):
        self.gate.complete_all()
        yield self.go.wait()


def test_first_interval_insert_waits_for_the_range_in_flight():
    """The first ``mmu_interval_notifier_insert`` registers the tree with
    ``mmu_notifier_register(NULL, mm)`` (mmap_lock for write, ``mm_take_all_locks``), so
    it cannot land between a start and its end. Before: ``has_itree`` flipped mid-range, the
    range's end drove ``active_invalidate_ranges`` to -1 and read_begin could block for
    good."""
    sim = Simulator(notifier_api="modern", schedule="round_robin")
    mm = sim.new_process("p")
    buf = sim.do(mm.mmap(4 * P, populate=True))
    gate, go = sim.completion("gate"), sim.completion("go")
    sim.attach(_SleepyStart, mm, gate=gate, go=go)
    isub = MMUIntervalNotifier(lambda s, r, seq: s.set_seq(seq) or True)
    order = []

    def inserter():
        yield gate.wait()
        yield from mmu_interval_notifier_insert(isub, mm, buf, 4 * P)
        order.append("inserted")
        seq = yield from mmu_interval_read_begin(isub)
        order.append(("read_begin", seq))

    def opener():
        yield gate.wait()
        yield
        yield
        order.append("go")
        go.complete()

    sim.spawn("mprotect", mm.mprotect(buf, 4 * P, "r"))
    sim.spawn("insert", inserter())
    sim.spawn("go", opener())
    res = sim.run()
    subs = mm.notifier_subscriptions
    assert res.ok, res.violations
    assert order.index("go") < order.index("inserted"), order
    assert subs.active_invalidate_ranges == 0 and subs.invalidate_seq % 2 == 0
    assert order[-1][0] == "read_begin"


def test_twin_a_mirror_mapping_during_an_invalidation_after_insert_is_caught():
    """Once the tree exists, an insert during an invalidation starts out invalidated: a
    mirror that maps without read_retry before the last end is MapInWindow."""
    sim = Simulator(notifier_api="modern")
    mm = sim.new_process("p")
    buf = sim.do(mm.mmap(4 * P, populate=True))

    class Mirror(MMUNotifier):
        pass

    drv = sim.attach(Mirror, mm)
    first = MMUIntervalNotifier(lambda s, r, seq: True)
    sim.do(mmu_interval_notifier_insert(first, mm, buf, P))
    subs = mm.notifier_subscriptions
    r = Range(mm, buf, buf + 4 * P)
    sim.do(subs.mmu_notifier_invalidate_range_start(r))
    late = MMUIntervalNotifier(lambda s, r, seq: True, owner=drv)
    sim.do(mmu_interval_notifier_insert(late, mm, buf, 4 * P))
    sim.do(subs.mmu_notifier_invalidate_range_end(r))
    assert late in subs.itree and late.invalidate_seq == subs.invalidate_seq - 1
