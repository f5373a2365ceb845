"""Aging: reclaim ages before it evicts (``folio_check_references``, two kswapd passes),
``clear_flush_young`` under the PT lock, page_idle's ``clear_young``, the MGLRU look-around,
and a driver whose aging hooks sleep, caught only now that the scenarios age."""

import pytest

import drivers
from primary_mm.frames import FRAME_YOUNG
from smmu import MMUNotifier, PAGE_SIZE, Simulator
from smmu.explore import explore
from smmu.scenarios import Join, Scenario, anon_process, cpu_reads, cpu_writes, device_loop, seq

P = PAGE_SIZE


class Young(MMUNotifier):
    """Logs the aging hooks (and whether the PT lock was held); answers ``young``."""

    def __init__(self, sim, mm, young=False):
        super().__init__(sim, mm)
        self.young = young
        self.log = []

    def _ptl(self):
        return self.mm.page_table_lock.owner is not None

    def clear_flush_young(self, mm, start, end):
        self.log.append(("cfy", start, end, self._ptl()))
        return self.young

    def clear_young(self, mm, start, end):
        self.log.append(("cy", start, end, self._ptl()))
        return self.young


def process(sim, n=4):
    mm = sim.new_process()
    buf = sim.do(mm.mmap(n * P))
    for i in range(n):
        sim.do(mm.write(buf + i * P, 10 + i))
    return mm, buf


# ---------------------------------------------------------------------------- reclaim
def test_kswapd_keeps_a_young_page_once_then_evicts_it():
    sim = Simulator()
    mm, buf = process(sim)
    rec = sim.attach(Young, mm)
    assert sim.do(sim.reclaim(mm, buf, 4 * P)) == 0          # young: kept, bits cleared
    assert [e[0] for e in rec.log] == ["cfy"] * 4 and all(e[3] for e in rec.log)
    assert sim.do(sim.reclaim(mm, buf, 4 * P)) == 4          # not used since: reclaimed
    assert sim.do(mm.read(buf + P)) == 11
    assert not sim.memory.check_invariants()


def test_a_page_used_between_the_passes_is_activated():
    sim = Simulator()
    mm, buf = process(sim)
    rec = sim.attach(Young, mm)
    sim.do(sim.reclaim(mm, buf, 4 * P))
    rec.young = True                                          # the device used them all
    assert sim.do(sim.reclaim(mm, buf, 4 * P)) == 0          # PG_referenced + young: active
    rec.young = False
    sim.do(mm.read(buf))                                      # the CPU used page 0
    assert sim.do(sim.reclaim(mm, buf, 4 * P)) == 3


def test_2_6_27_keeps_any_referenced_page():
    sim = Simulator(notifier_api="v2008")
    mm, buf = process(sim)
    rec = sim.attach(Young, mm, young=True)
    assert sim.do(sim.reclaim(mm, buf, 4 * P)) == 0
    assert sim.do(sim.reclaim(mm, buf, 4 * P)) == 0          # "Activate it", every time
    rec.young = False
    assert sim.do(sim.reclaim(mm, buf, 4 * P)) == 4


def test_forced_reclaim_ages_nothing():
    sim = Simulator()
    mm, buf = process(sim)
    rec = sim.attach(Young, mm, young=True)
    assert sim.do(sim.reclaim(mm, buf, 4 * P, force=True)) == 4 and rec.log == []


# ---------------------------------------------------------------------------- page_idle
def test_page_idle_clears_young_bits_with_clear_young_under_the_pt_lock():
    sim = Simulator()
    mm, buf = process(sim, 2)
    rec = sim.attach(Young, mm)
    assert sim.do(sim.page_idle(mm, buf, 2 * P)) == 2
    assert rec.log == [("cy", buf, buf + P, True), ("cy", buf + P, buf + 2 * P, True)]
    sim.do(mm.read(buf + P))                                  # page 1 used since
    idle = sim.do(sim.page_idle(mm, buf, 2 * P, mark=False))
    assert idle == [(buf, True), (buf + P, False)]
    # the young bits page_idle took are owed to reclaim (PG_young): kept once, then evicted
    assert all(sim.memory.frames.test_flags(mm.lookup_pte(va) >> 12, FRAME_YOUNG)
               for va in (buf, buf + P))
    assert sim.do(sim.reclaim(mm, buf, 2 * P)) == 0
    assert sim.do(sim.reclaim(mm, buf, 2 * P)) == 2


def test_page_idle_sees_a_secondary_mmu_use_and_v2008_falls_back_to_clear_flush_young():
    sim = Simulator()
    mm, buf = process(sim, 1)
    kvm = sim.attach(drivers.KVM, mm)
    sim.do(sim.page_idle(mm, buf, P))
    sim.do(kvm.access(buf, write=False))                     # the guest touches it
    assert sim.do(sim.page_idle(mm, buf, P, mark=False)) == [(buf, False)]
    sim = Simulator(notifier_api="v2008")                    # no clear_young before 4.3
    mm, buf = process(sim, 1)
    rec = sim.attach(Young, mm)
    sim.do(sim.page_idle(mm, buf, P))
    assert [e[0] for e in rec.log] == ["cfy"]


# ---------------------------------------------------------------------------- MGLRU
def test_mglru_look_around_ages_the_neighbours_with_clear_young_in_6_13():
    sim = Simulator(lru_gen="look_around_notify")
    mm, buf = process(sim, 8)
    rec = sim.attach(Young, mm)
    sim.do(sim.reclaim(mm, buf, P))                           # one page, young
    kinds = {e[0] for e in rec.log}
    assert kinds == {"cy"} and all(e[3] for e in rec.log)     # no clear_flush_young
    assert sorted(e[1] for e in rec.log) == [buf] + [buf + i * P for i in range(1, 8)]
    assert all(not mm.pt.test_young((buf + i * P) // P) for i in range(8))


def test_mglru_look_around_before_6_13_clears_cpu_bits_only():
    sim = Simulator(lru_gen="look_around")
    mm, buf = process(sim, 8)
    rec = sim.attach(Young, mm)
    sim.do(sim.reclaim(mm, buf, P))
    assert rec.log == [("cfy", buf, buf + P, True)]
    assert all(not mm.pt.test_young((buf + i * P) // P) for i in range(8))


# ---------------------------------------------------------------------------- the blind spot
def _forced_reclaim(sim, driver_cls):
    """The reclaim scenario as it was: reclaim with force=True, no aging."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 4)
    j = Join(sim)
    j.spawn("cpu0", seq(sim.reclaim(mm, buf, 4 * P, force=True), cpu_writes(mm, vas[:1], 300)))
    j.spawn("dev0", device_loop(drv, vas, rounds=2, write=False))
    j.then("check", cpu_reads(mm, vas))


@pytest.mark.parametrize("api", ["modern", "v2008"])
def test_a_sleeping_aging_hook_is_caught_only_when_reclaim_ages(api):
    cls = drivers.BUGGY["kvm_sleeping_aging"]
    old = Scenario("forced-reclaim", _forced_reclaim)
    ex = explore(old, cls, api, strategy="pct", schedules=30, seed=0, stop_at_first=False)
    assert not ex.findings, [(f.kind, f.violation.message) for f in ex.findings]
    for name in ("reclaim-while-device-reads", "page-idle-tracking"):
        ex = explore(name, cls, api, strategy="pct", schedules=10, seed=0)
        assert [f.kind for f in ex.findings] == ["SleepInAtomic"], name


def test_madv_pageout_reclaims_at_once_without_aging_and_leaves_shared_pages():
    sim = Simulator()
    mm, buf = process(sim)
    rec = sim.attach(Young, mm, young=True)
    child = sim.do(mm.fork())
    sim.do(mm.write(buf, 99))                   # page 0 exclusive again (COW), 1..3 shared
    sim.do(mm.madvise(buf, 4 * P, "pageout"))
    assert rec.log == []                        # ignore_references: no aging hooks
    assert not mm.lookup_pte(buf) & 1 and mm.lookup_pte(buf + P) & 1
    assert sim.do(mm.read(buf)) == 99 and sim.do(child.read(buf)) == 10
    assert not sim.memory.check_invariants()
