"""The reference drivers: fault paths and hooks, in every generation each supports.

Races are forced deterministically with :class:`Phases`, a schedule that runs one task until
a predicate holds, then the next: e.g. the device until its GUP has returned, then the CPU
operation to completion, then the device again. Each race test has a negative twin from
:mod:`drivers.buggy` that the same schedule breaks.
"""

from __future__ import annotations

import pytest

import drivers
from drivers import GRU, HMM_MIRROR, IOMMU_SVA, KVM, PINNED, XPMEM
from drivers.buggy import GRUNoDropinGuard, HMMNoSetSeq, KVMNoInProgressCheck, KVMNoSeqCheck
from drivers._common import pte_pfn
from smmu.base.constants import PAGE_SIZE
from smmu.base.pte import PTE_PRESENT
from smmu.base.errors import BadDriver, SegmentationFault
from smmu.notifier import Range
from smmu.runtime.schedules import RoundRobin, Schedule

from smmu.sim import Simulator

#: (driver, options, generations): every reference driver in every form it supports
FORMS = [
    (KVM, {"style": "modern"}, ("v2008", "range_only", "modern")),
    (KVM, {"style": "2008"}, ("v2008", "range_only", "modern")),
    (GRU, {}, ("v2008", "range_only", "modern")),
    (XPMEM, {}, ("range_only", "modern")),
    (IOMMU_SVA, {}, ("modern",)),
    (HMM_MIRROR, {}, ("modern",)),
    (PINNED, {}, ("v2008", "range_only", "modern")),
]
CASES = [pytest.param(cls, opts, api, id=f"{cls.name}{'-' + opts['style'] if opts else ''}-{api}")
         for cls, opts, apis in FORMS for api in apis]
NOTIFYING = [c for c in CASES if c.values[0] is not PINNED]


class Phases(Schedule):
    """Run the task named in the first phase until its predicate holds, then the next
    phase's task, and so on; with no phase left (or the wanted task not runnable), round
    robin."""

    name = "phases"

    def __init__(self, *phases):
        self.phases = list(phases)
        self.rr = RoundRobin()

    def choose(self, sched, tasks):
        while self.phases and self.phases[0][1]():
            self.phases.pop(0)
        want = self.phases[0][0] if self.phases else None
        for i, t in enumerate(tasks):
            if t.name == want:
                return i
        return self.rr.choose(sched, tasks)


def setup(api="modern", npages=2, schedule="round_robin", **simopts):
    sim = Simulator(notifier_api=api, schedule=schedule, **simopts)
    mm = sim.new_process("p")
    buf = sim.do(mm.mmap(npages * PAGE_SIZE, prot="rw"))
    for i in range(npages):
        sim.do(mm.write(buf + i * PAGE_SIZE, 100 + i))
    return sim, mm, buf


def attached(cls, opts, api):
    """:func:`setup` with the driver under test attached: ``(sim, mm, buf, drv)``."""
    sim, mm, buf = setup(api)
    return sim, mm, buf, sim.attach(cls, mm, **opts)


def pfn_of(mm, va):
    """The frame the primary maps at ``va``, or None when its PTE is not present."""
    pte = int(mm.lookup_pte(va))
    return pte_pfn(pte) if pte & PTE_PRESENT else None


def dev(sim, drv, va, write=False, value=None):
    return sim.do(drv.access(va, write=write, value=value))


def clean(sim):
    return [v for v in sim.violations]


# ----------------------------------------------------------------------------- basics

@pytest.mark.parametrize("cls,opts,api", CASES)
def test_device_sees_cpu_writes_and_cpu_sees_device_writes(cls, opts, api):
    sim, mm, buf, drv = attached(cls, opts, api)
    assert dev(sim, drv, buf) == 100
    assert drv.translation(buf)[0] == pfn_of(mm, buf)
    sim.do(mm.write(buf, 7))
    assert dev(sim, drv, buf) == 7
    assert dev(sim, drv, buf + PAGE_SIZE, write=True, value=55) == 55
    assert sim.do(mm.read(buf + PAGE_SIZE)) == 55
    assert drv.translation(buf + PAGE_SIZE) == (pfn_of(mm, buf + PAGE_SIZE), True)
    assert clean(sim) == []
    assert repr(drv).startswith("<")


@pytest.mark.parametrize("cls,opts,api", NOTIFYING)
def test_munmap_drops_the_translation_and_later_access_faults(cls, opts, api):
    sim, mm, buf, drv = attached(cls, opts, api)
    dev(sim, drv, buf, write=True, value=9)
    assert drv.translation(buf) is not None
    sim.do(mm.munmap(buf, 2 * PAGE_SIZE))
    assert drv.translation(buf) is None
    with pytest.raises(SegmentationFault):
        dev(sim, drv, buf)
    assert clean(sim) == []


@pytest.mark.parametrize("cls,opts,api", NOTIFYING)
def test_cow_after_fork_moves_the_device_to_the_parents_new_page(cls, opts, api):
    sim, mm, buf, drv = attached(cls, opts, api)
    assert dev(sim, drv, buf) == 100
    old = pfn_of(mm, buf)
    child = sim.do(mm.fork())
    sim.do(mm.write(buf, 200))                 # COW break: the parent gets a new page
    new = pfn_of(mm, buf)
    assert new != old
    entry = drv.translation(buf)
    assert entry is None or entry[0] == new
    assert dev(sim, drv, buf) == 200
    dev(sim, drv, buf, write=True, value=201)
    assert sim.do(mm.read(buf)) == 201
    assert sim.do(child.read(buf)) == 100
    assert clean(sim) == []


@pytest.mark.parametrize("cls,opts,api", NOTIFYING)
def test_reclaim_drops_the_translation_and_swapin_is_seen(cls, opts, api):
    sim, mm, buf, drv = attached(cls, opts, api)
    assert dev(sim, drv, buf) == 100
    sim.do(sim.reclaim(mm, buf, PAGE_SIZE, force=True))
    assert pfn_of(mm, buf) is None
    assert drv.translation(buf) is None
    assert dev(sim, drv, buf) == 100            # faults it back in from swap
    assert drv.translation(buf)[0] == pfn_of(mm, buf)
    assert clean(sim) == []


@pytest.mark.parametrize("cls,opts,api", NOTIFYING)
def test_exit_releases_the_device(cls, opts, api):
    sim, mm, buf, drv = attached(cls, opts, api)
    dev(sim, drv, buf)
    sim.do(mm.exit())
    assert drv.translation(buf) is None
    with pytest.raises(SegmentationFault):
        dev(sim, drv, buf)


def test_iommu_sva_and_hmm_mirror_refuse_older_generations():
    for api in ("v2008", "range_only"):
        sim, mm, buf = setup(api)
        for cls in (IOMMU_SVA, HMM_MIRROR):
            with pytest.raises(BadDriver, match="modern"):
                sim.attach(cls, mm)
        assert sim.drivers == []


def test_bad_options_are_bad_driver_errors():
    sim, mm, buf = setup()
    with pytest.raises(BadDriver, match="style"):
        sim.attach(KVM, mm, style="1999")
    with pytest.raises(BadDriver, match="geometry"):
        sim.attach(GRU, mm, sets=3)
    with pytest.raises(BadDriver, match="aligned"):
        sim.attach(HMM_MIRROR, mm, start=5)
    with pytest.raises(BadDriver):
        sim.attach(XPMEM, mm, colour="red")
    assert sim.drivers == []


# ----------------------------------------------------------------------------- KVM

def test_kvm_retry_check_modern_tracks_the_range_2008_blocks_everything():
    sim, mm, buf = setup()
    modern = sim.attach(KVM, mm)
    old = sim.attach(KVM, mm, style="2008")
    for k in (modern, old):
        k.invalidate_begin(0x10000, 0x12000)
    inside, outside = 0x10, 0x40
    assert modern.fault_is_stale(inside, modern.mmu_invalidate_seq)
    assert not modern.fault_is_stale(outside, modern.mmu_invalidate_seq)
    assert old.fault_is_stale(outside, old.mmu_invalidate_seq)
    for k in (modern, old):
        seq = k.mmu_invalidate_seq
        k.invalidate_finish()
        assert k.mmu_invalidate_in_progress == 0
        assert k.fault_is_stale(outside, seq)                 # the sequence moved
        assert not k.fault_is_stale(outside, k.mmu_invalidate_seq)


def _race_gup_against(api, cls, cpu_op, **opts):
    """The device faults on ``buf``; right after its GUP returns, ``cpu_op(sim, mm, buf)``
    runs to completion; then the device goes on."""
    state = {"gup": False}
    sched = Phases(("dev", lambda: state["gup"]), ("cpu", lambda: cpu.done))
    sim, mm, buf = setup(api, schedule=sched)
    drv = sim.attach(cls, mm, **opts)
    gup = mm.get_user_pages

    def traced_gup(va, write=False):
        pfn = yield from gup(va, write=write)
        state["gup"] = True
        return pfn

    mm.get_user_pages = traced_gup
    sim.spawn("dev", drv.access(buf, write=False))
    cpu = sim.spawn("cpu", cpu_op(sim, mm, buf))
    result = sim.run()
    return sim, mm, buf, drv, result


def _reclaim(sim, mm, buf):
    yield from sim.reclaim(mm, buf, PAGE_SIZE, force=True)


@pytest.mark.parametrize("api", ["v2008", "range_only", "modern"])
@pytest.mark.parametrize("style", ["modern", "2008"])
def test_kvm_fault_raced_by_an_invalidation_retries(api, style):
    sim, mm, buf, drv, result = _race_gup_against(api, KVM, _reclaim, style=style)
    assert drv.retries >= 1
    assert result.results["dev"] == 100
    assert drv.translation(buf)[0] == pfn_of(mm, buf)
    assert result.ok, result.violations


@pytest.mark.parametrize("api", ["v2008", "range_only", "modern"])
def test_kvm_without_the_sequence_check_installs_a_stale_page(api):
    sim, mm, buf, drv, result = _race_gup_against(api, KVMNoSeqCheck, _reclaim)
    assert drv.retries == 0
    stale = drv.translation(buf)
    assert stale is not None and stale[0] != pfn_of(mm, buf)


def _window(sim, mm, buf):
    """Open an invalidation of ``buf``'s page and keep it open for a while (the device runs
    meanwhile under round robin), then close it."""
    subs = mm.notifier_subscriptions
    rng = Range(mm, buf, buf + PAGE_SIZE)
    yield from subs.mmu_notifier_invalidate_range_start(rng)
    for _ in range(40):
        yield
    yield from subs.mmu_notifier_invalidate_range_end(rng)


def test_kvm_fault_inside_an_open_window_waits_for_end():
    sched = Phases(("cpu", lambda: bool(sim.oracle.open_ranges(mm))))
    sim, mm, buf = setup("modern", schedule=sched)
    drv = sim.attach(KVM, mm)
    sim.spawn("cpu", _window(sim, mm, buf))
    sim.spawn("dev", drv.access(buf, write=False))
    result = sim.run()
    assert drv.retries >= 1
    assert result.results["dev"] == 100
    assert result.ok, result.violations


def test_kvm_without_the_in_progress_check_maps_inside_the_window():
    sched = Phases(("cpu", lambda: bool(sim.oracle.open_ranges(mm))))
    sim, mm, buf = setup("modern", schedule=sched)
    drv = sim.attach(KVMNoInProgressCheck, mm)
    sim.spawn("cpu", _window(sim, mm, buf))
    sim.spawn("dev", drv.access(buf, write=False))
    result = sim.run()
    assert "MapInWindow" in result.kinds()


@pytest.mark.parametrize("api", ["v2008", "modern"])
def test_kvm_young_hooks_follow_guest_accesses(api):
    sim, mm, buf = setup(api)
    drv = sim.attach(KVM, mm)
    dev(sim, drv, buf)
    assert sim.do(drv.test_young(mm, buf)) in (True, False)
    young = sim.do(drv.clear_flush_young(mm, buf, buf + PAGE_SIZE))
    assert sim.do(drv.test_young(mm, buf)) is False
    assert sim.do(drv.clear_flush_young(mm, buf, buf + PAGE_SIZE)) is False
    dev(sim, drv, buf)
    assert young is True
    assert drv.translation(buf) is not None     # aging never zaps


def test_kvm_change_pte_updates_a_present_spte_in_place():
    sim, mm, buf = setup("v2008")
    drv = sim.attach(KVM, mm)
    dev(sim, drv, buf)
    other = pfn_of(mm, buf + PAGE_SIZE)
    seq = drv.mmu_invalidate_seq
    sim.do(drv.change_pte(mm, buf, other << 12 | 1))
    assert drv.translation(buf) == (other, False)
    assert drv.mmu_invalidate_seq == seq + 1
    sim.do(drv.change_pte(mm, buf + 3 * PAGE_SIZE, other << 12 | 1))   # nothing there
    assert drv.translation(buf + 3 * PAGE_SIZE) is None


# ----------------------------------------------------------------------------- GRU

def test_gru_dropin_waits_for_range_active_to_drop():
    seen = {}
    sched = Phases(("cpu", lambda: bool(sim.oracle.open_ranges(mm))))
    sim, mm, buf = setup("modern", schedule=sched)
    gru = sim.attach(GRU, mm)

    def cpu():
        subs = mm.notifier_subscriptions
        rng = Range(mm, buf, buf + PAGE_SIZE)
        yield from subs.mmu_notifier_invalidate_range_start(rng)
        for _ in range(30):
            yield
        seen["active"] = gru.ms_range_active
        seen["entry"] = gru.translation(buf)
        seen["waiting"] = len(gru.ms_wait_queue.waiters)
        yield from subs.mmu_notifier_invalidate_range_end(rng)

    sim.spawn("cpu", cpu())
    sim.spawn("dev", gru.access(buf, write=False))
    result = sim.run()
    assert seen == {"active": 1, "entry": None, "waiting": 1}
    assert result.results["dev"] == 100
    assert gru.ms_range_active == 0 and gru.translation(buf) is not None
    assert result.ok, result.violations


def _race_dropin(cls, api="modern"):
    """The dropin reads the PTE; then the CPU munmaps the page to completion; then the
    dropin goes on to write its TLB entry."""
    import drivers.gru as gru_mod
    state = {"walked": False}
    sched = Phases(("dev", lambda: state["walked"]), ("cpu", lambda: cpu.done))
    sim, mm, buf = setup(api, schedule=sched)
    gru = sim.attach(cls, mm)
    walk = gru_mod.walk_pte

    def traced_walk(*a, **kw):
        out = walk(*a, **kw)
        state["walked"] = out is not None
        return out

    gru_mod.walk_pte = traced_walk
    try:
        sim.spawn("dev", gru.access(buf, write=False))
        cpu = sim.spawn("cpu", mm.munmap(buf, PAGE_SIZE))
        result = sim.run()
    finally:
        gru_mod.walk_pte = walk
    return sim, mm, buf, gru, result


@pytest.mark.parametrize("api", ["v2008", "range_only", "modern"])
def test_gru_hw_guard_drops_a_dropin_raced_by_an_invalidate(api):
    sim, mm, buf, gru, result = _race_dropin(GRU, api)
    assert gru.dropped == 1
    assert isinstance(result.errors.get("dev"), SegmentationFault)
    assert gru.translation(buf) is None
    assert result.ok, result.violations


@pytest.mark.parametrize("api", ["range_only", "modern"])
def test_gru_without_hw_guard_installs_the_stale_translation(api):
    sim, mm, buf, gru, result = _race_dropin(GRUNoDropinGuard, api)
    assert gru.dropped == 0
    assert gru.translation(buf) is not None          # outlived the munmap
    assert set(result.kinds()) & GRUNoDropinGuard.expected


def test_gru_invalidate_page_flushes_one_page_in_v2008():
    sim, mm, buf = setup("v2008")
    gru = sim.attach(GRU, mm)
    dev(sim, gru, buf)
    dev(sim, gru, buf + PAGE_SIZE)
    before = sim.hook_calls["invalidate_page"]
    sim.do(mm.fork())
    sim.do(mm.write(buf, 1))                          # COW: invalidate_page in v2008
    assert sim.hook_calls["invalidate_page"] > before
    assert gru.translation(buf) is None
    assert dev(sim, gru, buf) == 1


# ----------------------------------------------------------------------------- XPMEM

def _xpmem_reclaim(rmap_locks):
    sim, mm, buf = setup("modern", rmap_locks=rmap_locks)
    xp = sim.attach(XPMEM, mm)
    dev(sim, xp, buf)
    assert xp.pins
    sim.do(sim.reclaim(mm, buf, PAGE_SIZE, force=True))
    return sim, mm, buf, xp


def _xpmem_sleeps(sim):
    return [v for v in sim.violations if v.kind == "SleepInAtomic" and "xpmem" in v.message]


def test_xpmem_sleeps_in_rmap_walks_under_spinlock_rmap_locks():
    sim, mm, buf, xp = _xpmem_reclaim("spinlock")
    assert _xpmem_sleeps(sim)


def test_kvm_does_not_sleep_in_the_same_rmap_walk():
    sim, mm, buf = setup("modern", rmap_locks="spinlock")
    kvm = sim.attach(KVM, mm)
    dev(sim, kvm, buf)
    sim.do(sim.reclaim(mm, buf, PAGE_SIZE, force=True))
    assert not [v for v in sim.violations if "kvm" in v.message]
    assert kvm.translation(buf) is None


def test_xpmem_refuses_v2008_where_invalidate_page_is_atomic():
    sim, mm, buf = setup("v2008")
    with pytest.raises(BadDriver, match="range_only"):
        sim.attach(XPMEM, mm)


def test_xpmem_is_legal_under_rwsem_rmap_locks_and_unpins_on_invalidation():
    sim, mm, buf, xp = _xpmem_reclaim("rwsem")
    assert sim.violations == [] and not _xpmem_sleeps(sim)
    assert xp.pins == {} and xp.translation(buf) is None
    assert dev(sim, xp, buf) == 100


def test_xpmem_keeps_its_pin_until_invalidated_and_recall_drops_it():
    sim, mm, buf = setup("range_only")
    xp = sim.attach(XPMEM, mm)
    dev(sim, xp, buf, write=True, value=5)
    pfn = xp.pins[buf // PAGE_SIZE]
    f = sim.memory.frames
    # xpmem_pin_page: a get_user_pages_remote reference (FOLL_GET), not a FOLL_PIN pin
    assert f.refcount[pfn] == f.mapcount[pfn] + 1 and f.pincount[pfn] == 0
    sim.do(xp.recall())
    assert xp.pins == {} and f.refcount[pfn] == f.mapcount[pfn]
    assert xp.translation(buf) is None
    assert sim.do(mm.read(buf)) == 5


# ----------------------------------------------------------------------------- IOMMU SVA

def test_iommu_sva_page_request_faults_in_and_flush_follows_mprotect():
    sim, mm, buf = setup("modern")
    fresh = sim.do(mm.mmap(PAGE_SIZE, prot="rw"))
    sva = sim.attach(IOMMU_SVA, mm)
    assert dev(sim, sva, fresh, write=True, value=3) == 3      # PRI fault-in
    assert sva.page_requests == 1
    assert sim.do(mm.read(fresh)) == 3
    sim.do(mm.mprotect(fresh, PAGE_SIZE, "r"))
    assert sva.translation(fresh) is None
    assert dev(sim, sva, fresh) == 3
    with pytest.raises(SegmentationFault):
        dev(sim, sva, fresh, write=True, value=4)
    assert sim.violations == []


# ----------------------------------------------------------------------------- HMM mirror

def _race_hmm(cls):
    state = {"snap": False}
    sched = Phases(("dev", lambda: state["snap"]), ("cpu", lambda: cpu.done))
    sim, mm, buf = setup("modern", schedule=sched)
    mirror = sim.attach(cls, mm)
    hrf = mm.hmm_range_fault

    def traced(va, write=False):
        pfn = yield from hrf(va, write)
        state["snap"] = True
        return pfn

    mm.hmm_range_fault = traced
    sim.spawn("dev", mirror.access(buf, write=False))
    cpu = sim.spawn("cpu", _reclaim(sim, mm, buf))
    result = sim.run()
    return sim, mm, buf, mirror, result


def test_hmm_mirror_retries_on_collision():
    sim, mm, buf, mirror, result = _race_hmm(HMM_MIRROR)
    assert mirror.retries == 1
    assert result.results["dev"] == 100
    assert mirror.translation(buf)[0] == pfn_of(mm, buf)
    assert result.ok, result.violations


def test_hmm_mirror_without_set_seq_programs_the_stale_page():
    sim, mm, buf, mirror, result = _race_hmm(HMMNoSetSeq)
    assert mirror.retries == 0
    assert mirror.translation(buf)[0] != pfn_of(mm, buf)


def test_hmm_mirror_refuses_a_nonblockable_range_while_busy_and_release_removes_it():
    sim, mm, buf = setup("modern")
    mirror = sim.attach(HMM_MIRROR, mm)
    dev(sim, mirror, buf)
    seq = mirror.notifier.invalidate_seq
    rng = Range(mm, buf, buf + PAGE_SIZE, blockable=False)
    mirror.mutex.trylock()                              # the device side holds it
    assert sim.do(mirror.interval_invalidate(rng, seq + 2)) is False
    assert mirror.translation(buf) is not None and mirror.notifier.invalidate_seq == seq
    mirror.mutex.release()
    assert sim.do(mirror.interval_invalidate(rng, seq + 2)) is True
    assert mirror.translation(buf) is None and mirror.notifier.invalidate_seq == seq + 2
    sim.detach(mirror)
    assert mirror.notifier not in mm.notifier_subscriptions.itree


# ----------------------------------------------------------------------------- PINNED

def _pinned_fork(**simopts):
    sim, mm, buf = setup("modern", **simopts)
    nic = sim.attach(PINNED, mm)
    sim.do(nic.register(buf, 1))
    return sim, mm, buf, nic


def test_pinned_loses_writes_after_fork_and_cow():
    sim, mm, buf, nic = _pinned_fork(fork_copies_pinned=False, check=False)
    child = sim.do(mm.fork())
    sim.do(mm.write(buf, 1))                      # the parent COWs away from the pinned page
    dev(sim, nic, buf, write=True, value=77)
    assert sim.do(mm.read(buf)) == 1              # the parent never sees the DMA
    assert sim.do(child.read(buf)) == 77          # ... the child does
    assert nic.translation(buf)[0] != pfn_of(mm, buf)


@pytest.mark.parametrize("fix", ["fork_copies_pinned", "dontfork"])
def test_pinned_is_coherent_with_either_fix(fix):
    sim, mm, buf, nic = _pinned_fork(fork_copies_pinned=(fix == "fork_copies_pinned"))
    if fix == "dontfork":
        sim.do(mm.madvise(buf, PAGE_SIZE, "dontfork"))
    sim.do(mm.fork())
    sim.do(mm.write(buf, 1))
    dev(sim, nic, buf, write=True, value=77)
    assert sim.do(mm.read(buf)) == 77
    assert nic.translation(buf)[0] == pfn_of(mm, buf)
    assert sim.violations == []


def test_pinned_has_no_notifier_hooks():
    from smmu.notifier import HOOKS, overrides
    sim, mm, buf = setup()
    nic = sim.attach(PINNED, mm)
    assert not any(overrides(nic, h) for h in HOOKS)
    assert drivers.BUILTIN["pinned"] is PINNED
