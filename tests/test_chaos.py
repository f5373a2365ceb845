"""The chaos driver (drivers/chaos.py: KVM that yields, sleeps and takes locks at random
wherever a hook may) over every scenario, generation and rmap-lock mode: no internal error
and, the driver being correct, no violation either (issue 9, item 8). A CI-sized run; the
large one is ``make soak SCHEDULES=100000``. The twin puts back the KSM bug the chaos
found (the promoted page's reference dropped while a hook slept): the soak catches it."""


import drivers
from drivers.chaos import CHAOS
from primary_mm.ksm import Ksm
from smmu.testing.soak import combos, main, soak


def test_chaos_everywhere_finds_no_internal_error_and_no_violation():
    plan = combos()
    assert len({sc.name for sc, _, _ in plan}) >= 30
    assert {api for _, api, _ in plan} == {"v2008", "range_only", "modern"}
    assert {rmap for _, _, rmap in plan} == {"rwsem", "spinlock"}
    res = soak(len(plan), seed=0)
    assert res.ok, "\n".join(str(e) for e in res.errors)
    assert not res.violations, res.violations
    assert res.runs == len(plan)


def test_chaos_hooks_really_block_where_they_may():
    from smmu.explore import run_once
    r = run_once("munmap-during-device-fault", CHAOS, "modern", "random", 3,
                 stop_on_violation=False)
    assert r.ok and r.stats.get("hooks")


def test_twin_the_soak_catches_the_ksm_reference_dropped_while_a_hook_slept(monkeypatch):
    promote = Ksm._ksm_promote

    def early_put(self, mm, va, pfn, value):
        ok = yield from promote(self, mm, va, pfn, value)
        if ok:                          # the old code: promote's own reference dropped at its
            self.frames.put(pfn)        # end (freeing a page a COW copied away while a
            self.frames.get(pfn)        # hook slept), ksm_merge's taken only then
        return ok

    monkeypatch.setattr(Ksm, "_ksm_promote", early_put)
    res = soak(120, seed=0, scenarios=["ksm-merge"])
    assert any("FrameStateError" in e.error for e in res.errors), res.errors


def test_soak_command_line(capsys):
    assert main(["--schedules", "0"]) == 2
    assert main(["--schedules", "3"]) == 0
    assert "0 internal error" in capsys.readouterr().out


def test_a_woken_lock_page_waiter_does_not_take_a_page_trylock_took_meanwhile():
    """Found by the soak (pageout-while-device-reads, range_only, random seed 612: a
    StaleRead for the correct driver): lock_page's waiter was granted at its first look and
    set PG_locked when it next ran, although a trylock_page (reclaim) had taken the lock in
    between; both then worked on the swap-cache page and freed its slot twice, and a later
    pageout gave the slot to a second page. folio_lock is one atomic test-and-set. Before the
    fix both tasks held the lock at once."""
    from smmu import PAGE_SIZE, Simulator
    from smmu.base.pte import pte_pfn

    sim = Simulator(schedule="round_robin")
    mm = sim.new_process()
    buf = sim.do(mm.mmap(PAGE_SIZE))
    sim.do(mm.write(buf, 1))
    pfn = int(pte_pfn(mm.pt.lookup(buf >> 12)))
    mem = sim.memory
    holders, seen = [], []

    def waiter():                       # lock_page (its first look finds the page unlocked)
        yield from mem.lock_page(pfn)
        holders.append("waiter")
        yield
        holders.remove("waiter")
        mem.unlock_page(pfn)

    def reclaim():                      # trylock_page, before the waiter's next step
        if mem.trylock_page(pfn):
            holders.append("reclaim")
            yield
            yield
            holders.remove("reclaim")
            mem.unlock_page(pfn)
        yield

    def watch():
        for _ in range(6):
            seen.append(list(holders))
            yield

    sim.spawn("waiter", waiter())
    sim.spawn("reclaim", reclaim())
    sim.spawn("watch", watch())
    assert sim.run().ok
    assert ["waiter"] in seen and ["reclaim"] in seen          # each took it, in turn
    assert all(len(h) <= 1 for h in seen), seen


def test_the_soak_schedule_that_found_the_double_page_lock_is_clean():
    from smmu.explore.run import make_strategy_schedule, run_once
    r = run_once("pageout-while-device-reads", CHAOS, "range_only",
                 make_strategy_schedule("random", 612, {"depth": 3, "steps": 300}), 612,
                 stop_on_violation=False, rmap_locks="rwsem")
    assert r.ok, [(v.kind, v.message) for v in r.violations]


class _InsertsWithoutMmget(CHAOS):
    """The chaos driver as it was: it inserted its interval notifier from a device fault
    without holding an mm_users reference ("Must call with a mmget() held")."""

    def page_fault(self, va, write):
        from drivers.kvm import KVM
        from smmu.notifier import mmu_interval_notifier_insert, mmu_interval_notifier_remove
        r = self.rng.random()
        if self.notifier.inserted and r < 0.2:
            yield from mmu_interval_notifier_remove(self.notifier)
        elif not self.notifier.inserted and not self.dead and r < 0.5:
            yield from mmu_interval_notifier_insert(self.notifier, self.mm, 0, 1 << 47)
        yield from KVM.page_fault(self, va, write)


def test_an_insert_that_raced_exit_without_mmget_is_refused_not_a_core_bug():
    """Found by the soak (release-unlink-first-fixed, v2008, random seed 520): the insert
    waited for mmap_lock while exit began (exit_mmap takes no mmap_lock around its unmap in
    2.6.27) and the tree appeared inside exit's range: a CoreBug at its end. Linux forbids
    the caller (BUG_ON(mm_users <= 0) in __mmu_notifier_register); register now re-checks
    once it holds the locks and refuses, and CHAOS holds mmget_not_zero() as it must."""
    from smmu.explore.run import make_strategy_schedule, run_once
    for cls in (_InsertsWithoutMmget, CHAOS):
        r = run_once("release-unlink-first-fixed", cls, "v2008",
                     make_strategy_schedule("random", 520, {"depth": 3, "steps": 300}), 520,
                     stop_on_violation=False, rmap_locks="rwsem")
        assert r.ok, [(v.kind, v.message) for v in r.violations]


def test_a_swap_in_claims_its_slot_before_the_read_so_a_reused_slot_cannot_pass_pte_same():
    """Found by the 1000-schedule sweep of the reference drivers (gru, v2008, random seed 342):
    two faults read the same swapped-out page; the first mapped it, the CPU wrote 310, a
    pageout got the freed slot number again and wrote the page out, and the second read,
    still holding 300 from the old slot, passed pte_same on the identical swap PTE and was
    mapped: a StaleRead for a correct driver. Linux's __read_swap_cache_async puts the
    locked folio in the swap cache before the read, so the racing fault waits for it."""
    from smmu.explore.run import make_strategy_schedule, run_once
    r = run_once("pageout-while-device-reads", drivers.BUILTIN["gru"], "v2008",
                 make_strategy_schedule("random", 342, {}), 342, stop_on_violation=False)
    assert r.ok, [(v.kind, v.message) for v in r.violations]
    # the negative twin: the scenario still catches a GRU that ignores invalidate_page
    from smmu.explore import explore
    ex = explore("pageout-while-device-reads", drivers.BUGGY["gru_ignore_invalidate_page"],
                 "v2008", strategy="random", schedules=50, seed=0)
    assert {f.kind for f in ex.findings} & {"StaleRead", "UseAfterFree", "StaleMapping",
                                            "CrossMmAccess", "LostWrite"}


def test_the_device_is_idle_when_its_file_is_closed_in_the_release_race():
    """The 1000-schedule PCT sweep of KVM (release-unregister-race-fixed, v2008, 927th
    schedule) had a vCPU fault still in flight while the VM's file was closed: the
    unregister unlinked the subscription, exit zapped the PTEs unseen and the fault mapped
    the stale page before ->release ran. KVM cannot do that (kvm_destroy_vm runs once the
    last vCPU and VM fd reference is gone), so the scenario closes the device after its own
    faults; the broken 3.8 half is still caught (tests/test_catalogue.py, smmu history)."""
    from smmu.explore import explore
    ex = explore("release-unregister-race-fixed", drivers.BUILTIN["kvm"], "v2008",
                 strategy="pct", schedules=1000, seed=0)
    assert not ex.findings, [(f.kind, f.seed) for f in ex.findings]
