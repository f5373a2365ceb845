"""The coherence oracle: the structural-scan kernel against its Python reference, and the
oracle's checks on small hand-written drivers, each with a negative twin it must catch."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from primary_mm.pagetable import PageTable
from smmu import MMUNotifier, Range
from smmu.base import radix_ref
from smmu.base.constants import PAGE_SIZE
from smmu.base.pte import PTE_PRESENT, PTE_WRITE
from smmu.base.errors import SegmentationFault
from smmu.explore import Scenario, explore
from smmu.oracle import (STALE_ABSENT, STALE_FREED, STALE_OTHER_PFN, STALE_WRITABLE,
                         SecondaryMap, scan_secondary, scan_secondary_ref)
from smmu.oracle.scan import verify_cells, verify_cells_ref

# =========================================================================== scan kernel

NPFN = 16


def _run_scan(pt, m, generation):
    n = m.n
    ptes = np.empty(n, dtype=np.uint64)
    idx = np.empty(n, dtype=np.int64)
    why = np.empty(n, dtype=np.int64)
    cnt = scan_secondary(pt.pool.nodes, pt.root, m.vpns, m.pfns, m.gens, m.writable, n,
                         generation, ptes, idx, why)
    return list(zip(idx[:cnt].tolist(), why[:cnt].tolist()))


def test_scan_names_each_kind_of_stale_entry():
    pt = PageTable()
    pt.set(10, (5 << 12) | PTE_PRESENT | PTE_WRITE)     # good
    pt.set(11, (6 << 12) | PTE_PRESENT)                 # read-only
    pt.set(12, (7 << 12) | PTE_PRESENT | PTE_WRITE)     # maps 7, secondary says 8
    gen = np.zeros(NPFN, dtype=np.uint32)
    gen[9] = 3
    m = SecondaryMap(cap=2)                             # grows
    m.add(10, 5, 0, True)
    m.add(11, 6, 0, True)
    m.add(12, 8, 0, False)
    m.add(13, 4, 0, False)                              # nothing mapped there
    m.add(14, 9, 2, False)                              # generation moved
    got = dict(_run_scan(pt, m, gen))
    assert got == {1: STALE_WRITABLE, 2: STALE_OTHER_PFN, 3: STALE_ABSENT, 4: STALE_FREED}
    m.remove_range(11, 14)
    assert dict(_run_scan(pt, m, gen)) == {4: STALE_FREED}
    assert len(m) == 2 and m.get(10) == (5, 0, True) and m.get(12) is None


entries = st.lists(st.tuples(st.integers(0, 40), st.integers(1, NPFN - 1), st.booleans(),
                             st.booleans()), max_size=30)


@given(pte_entries=entries, sec=st.lists(st.tuples(st.integers(0, 40),
                                                   st.integers(1, NPFN - 1),
                                                   st.integers(0, 2), st.booleans()),
                                         max_size=30),
       gens=st.lists(st.integers(0, 2), min_size=NPFN, max_size=NPFN),
       drop=st.tuples(st.integers(0, 40), st.integers(0, 40)))
def test_scan_kernel_matches_reference(pte_entries, sec, gens, drop):
    pt = PageTable()
    for vpn, pfn, present, writable in pte_entries:
        pt.set(vpn << 9 if vpn % 7 == 0 else vpn,  # some entries in other tables
               (pfn << 12) | (PTE_PRESENT if present else 0) | (PTE_WRITE if writable else 0))
    m = SecondaryMap(cap=4)
    for vpn, pfn, gen, writable in sec:
        m.add(vpn << 9 if vpn % 7 == 0 else vpn, pfn, gen, writable)
    lo, hi = sorted(drop)
    m.remove_range(lo, hi)
    generation = np.array(gens, dtype=np.uint32)
    nodes, root = pt.pool.nodes, pt.root
    ref = scan_secondary_ref(lambda v: radix_ref.pt_lookup(nodes, root, v), m.vpns, m.pfns,
                             m.gens, m.writable, m.n, generation)
    assert _run_scan(pt, m, generation) == ref
    # the reference agrees with the declared entries: every live one is checked
    live = {i for i in range(m.n) if m.pfns[i] >= 0}
    assert {i for i, _ in ref} <= live


def _run_verify(pt, vpns, expect, lazy, contents):
    n = len(vpns)
    ptes = np.empty(n, dtype=np.uint64)
    idx = np.empty(n, dtype=np.int64)
    cnt = verify_cells(pt.pool.nodes, pt.root, np.array(vpns, dtype=np.int64),
                       np.array(expect, dtype=np.uint64), np.array(lazy, dtype=np.bool_),
                       contents, ptes, idx)
    return idx[:cnt].tolist()


def test_verify_cells_finds_what_differs():
    pt = PageTable()
    contents = np.zeros(NPFN, dtype=np.uint64)
    contents[5], contents[6] = 7, 2**64 - 1
    pt.set(10, (5 << 12) | PTE_PRESENT)
    pt.set(11, (6 << 12) | PTE_PRESENT | PTE_WRITE)
    pt.set(12, 6 << 12)                                 # not present: reads as 0
    # same, differs, 64-bit value, absent 0 vs 0, absent vs 3, lazy 0, lazy but 7 != 8
    vpns = [10, 10, 11, 12, 12, 13, 10]
    expect = [7, 8, 2**64 - 1, 0, 3, 9, 8]
    lazy = [False, False, False, False, False, True, True]
    assert _run_verify(pt, vpns, expect, lazy, contents) == [1, 4, 6]


@given(pte_entries=entries,
       cells=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 3), st.booleans()),
                      max_size=30),
       values=st.lists(st.integers(0, 3), min_size=NPFN, max_size=NPFN))
def test_verify_cells_matches_reference(pte_entries, cells, values):
    pt = PageTable()
    for vpn, pfn, present, writable in pte_entries:
        pt.set(vpn << 9 if vpn % 7 == 0 else vpn,
               (pfn << 12) | (PTE_PRESENT if present else 0) | (PTE_WRITE if writable else 0))
    contents = np.array(values, dtype=np.uint64)
    vpns = [v << 9 if v % 7 == 0 else v for v, _, _ in cells]
    expect = [e for _, e, _ in cells]
    lazy = [z for _, _, z in cells]
    nodes, root = pt.pool.nodes, pt.root
    ref = verify_cells_ref(lambda v: radix_ref.pt_lookup(nodes, root, v), vpns, expect, lazy,
                           contents)
    assert _run_verify(pt, vpns, expect, lazy, contents) == ref


# =========================================================================== toy drivers


class Toy(MMUNotifier):
    """A correct secondary MMU: a dict TLB; the fault path snapshots a sequence, GUPs, and
    installs only if no invalidation is in progress and the sequence did not move (checked
    and installed in one step, so no lock is needed), then drops the GUP reference. Zaps in
    invalidate_range_start, invalidate_page and release."""

    checks_window = True

    def __init__(self, sim, mm):
        super().__init__(sim, mm)
        self.tlb = {}
        self.in_progress = 0
        self.seq = 0

    def zap(self, start, end):
        for v in [v for v in self.tlb if start <= v < end]:
            del self.tlb[v]
        self.note_unmap_range(start, min(end, 1 << 47))

    def invalidate_range_start(self, rng):
        self.in_progress += 1
        self.zap(rng.start, rng.end)

    def invalidate_range_end(self, rng):
        self.seq += 1
        self.in_progress -= 1

    def invalidate_page(self, mm, address):
        self.seq += 1
        self.zap(address, address + PAGE_SIZE)

    def release(self, mm):
        self.zap(0, 1 << 47)

    def access(self, va, *, write, value=None):
        page = va - va % PAGE_SIZE
        while True:
            hit = self.tlb.get(page)
            if hit is not None and (hit[1] or not write):
                return self.dma_write(va, hit[0], value) if write else self.dma_read(va, hit[0])
            seq = self.seq
            yield
            pfn = yield from self.mm.get_user_pages(page, write=write)
            yield
            if self.checks_window and (self.in_progress or seq != self.seq):
                yield from self.mm.put_page(pfn)
                continue
            self.tlb[page] = (pfn, bool(write))
            self.note_map(page, pfn, bool(write))
            yield from self.mm.put_page(pfn)


class NoZap(Toy):
    """Broken: ignores every notification (keeps its translations forever)."""

    def invalidate_range_start(self, rng):
        pass

    def invalidate_page(self, mm, address):
        pass

    def release(self, mm):
        pass


class NoWindowCheck(Toy):
    """Broken: zaps, but its fault path installs without checking for an invalidation in
    progress, so a GUP that returned the old page inside a window maps it anyway."""

    checks_window = False


class Pinner(MMUNotifier):
    """The pre-notifier RDMA model: pin on first touch, keep the pin, no hooks at all."""

    def __init__(self, sim, mm):
        super().__init__(sim, mm)
        self.tlb = {}

    def access(self, va, *, write, value=None):
        page = va - va % PAGE_SIZE
        if page not in self.tlb:
            pfn = yield from self.mm.pin_user_pages(page, write=True, longterm=True)
            self.tlb[page] = pfn
            self.note_map(page, pfn, True)
        pfn = self.tlb[page]
        yield
        return self.dma_write(va, pfn, value) if write else self.dma_read(va, pfn)


def new_sim(api="v2008", **kw):
    from smmu.sim import Simulator
    return Simulator(notifier_api=api, **kw)


def setup(drv_cls, api="v2008", pages=1, **kw):
    sim = new_sim(api, **kw)
    mm = sim.new_process("p")
    buf = sim.do(mm.mmap(pages * PAGE_SIZE, prot="rw"))
    dev = sim.attach(drv_cls, mm)
    return sim, mm, buf, dev


# ---------------------------------------------------------------- munmap, stale translation

def _munmap_then_device_read(drv_cls, api):
    sim, mm, buf, dev = setup(drv_cls, api)
    sim.do(mm.write(buf, 42))
    assert sim.do(dev.access(buf, write=False)) == 42
    sim.do(mm.munmap(buf, PAGE_SIZE))
    other = sim.new_process("q")
    b2 = sim.do(other.mmap(PAGE_SIZE, prot="rw"))
    sim.do(other.write(b2, 7))          # likely reuses the freed frame
    sim.do(dev.access(buf, write=False))
    return sim.run()


@pytest.mark.parametrize("api", ["v2008", "range_only", "modern"])
def test_correct_driver_is_clean_after_munmap(api):
    sim, mm, buf, dev = setup(Toy, api)
    sim.do(mm.write(buf, 42))
    assert sim.do(dev.access(buf, write=False)) == 42
    sim.do(mm.munmap(buf, PAGE_SIZE))
    r = sim.run()
    assert r.ok, r.violations
    assert not dev.tlb


@pytest.mark.parametrize("api", ["v2008", "modern"])
def test_stale_translation_after_munmap_is_caught(api):
    r = _munmap_then_device_read(NoZap, api)
    kinds = r.kinds()
    assert {"UseAfterFree", "CrossMmAccess"} & set(kinds), r.violations
    assert "StaleMapping" in kinds     # and the scan finds the translation at quiescence


def test_use_after_free_names_the_frame_and_generations():
    sim, mm, buf, dev = setup(NoZap)
    sim.do(mm.write(buf, 42))
    sim.do(dev.access(buf, write=False))
    pfn = dev.tlb[buf][0]
    sim.do(mm.munmap(buf, PAGE_SIZE))
    sim.do(dev.access(buf, write=False))   # the frame is free now
    r = sim.run()
    uaf = [v for v in r.violations if v.kind == "UseAfterFree"]
    assert uaf and uaf[0].frames == (pfn,) and uaf[0].address == buf
    assert "free" in uaf[0].message and "invalidate" in uaf[0].message


# ---------------------------------------------------------------- COW after fork

def _cow(drv_cls, api="v2008"):
    sim, mm, buf, dev = setup(drv_cls, api)
    sim.do(mm.write(buf, 1))
    sim.do(dev.access(buf, write=False))    # device maps the page read-only
    sim.do(mm.fork())
    sim.do(mm.write(buf, 2))                 # COW: the parent gets a new page
    got = sim.do(dev.access(buf, write=False))
    return sim.run(), got


@pytest.mark.parametrize("api", ["v2008", "range_only", "modern"])
def test_correct_driver_follows_cow(api):
    r, got = _cow(Toy, api)
    assert r.ok, r.violations
    assert got == 2


def test_stale_read_after_cow_is_caught():
    r, got = _cow(NoZap)
    assert got == 1
    stale = [v for v in r.violations if v.kind == "StaleRead"]
    assert stale, r.violations
    assert "read 1" in stale[0].message and "2" in stale[0].message


def test_pinned_device_write_after_cow_is_a_lost_write():
    # pre-5.9 RDMA: the pin keeps the old page alive (no use-after-free), the parent's COW
    # moves it to a new one, the device's writes land in the old page: lost.
    sim, mm, buf, dev = setup(Pinner)
    sim.do(mm.write(buf, 1))
    sim.do(dev.access(buf, write=True, value=5))
    sim.do(mm.fork())
    sim.do(mm.write(buf, 2))                 # COW break in the parent
    sim.do(dev.access(buf, write=True, value=9))
    got = sim.do(mm.read(buf))
    r = sim.run()
    assert got == 2
    lost = [v for v in r.violations if v.kind == "LostWrite"]
    assert lost, r.violations
    assert "Pinner" in lost[0].message and "9" in lost[0].message


def test_lost_device_write_is_reported_at_quiescence():
    sim, mm, buf, dev = setup(Pinner)
    sim.do(mm.write(buf, 1))
    sim.do(dev.access(buf, write=True, value=5))
    sim.do(mm.fork())
    sim.do(mm.write(buf, 2))
    sim.do(dev.access(buf, write=True, value=9))   # nobody reads it afterwards
    r = sim.run()
    lost = [v for v in r.violations if v.kind == "LostWrite"]
    assert lost and "end of the run" in lost[0].message


def test_end_of_run_check_reports_alike_in_python_and_in_its_kernel(monkeypatch):
    """_verify_mm compares a few cells in Python (verify_cells_ref) and more in the kernel:
    the same LostWrite either way (and a clean mm stays clean)."""
    from smmu.oracle import oracle as oracle_mod

    def lost(small):
        monkeypatch.setattr(oracle_mod, "VERIFY_SMALL", small)
        sim, mm, buf, dev = setup(Pinner)
        sim.do(mm.write(buf, 1))
        sim.do(dev.access(buf, write=True, value=5))
        sim.do(mm.fork())
        sim.do(mm.write(buf, 2))
        sim.do(dev.access(buf, write=True, value=9))
        r = sim.run()
        return [(v.kind, v.message, v.address, v.frames) for v in r.violations]

    in_kernel, in_python = lost(0), lost(64)
    assert in_kernel == in_python and "LostWrite" in [k for k, *_ in in_kernel]


# ---------------------------------------------------------------- write-protect

def _mprotect_then_device_write(drv_cls, api="v2008"):
    sim, mm, buf, dev = setup(drv_cls, api)
    sim.do(dev.access(buf, write=True, value=3))    # writable translation
    sim.do(mm.mprotect(buf, PAGE_SIZE, "r"))
    sim.do(dev.access(buf, write=True, value=4))
    return sim.run()


@pytest.mark.parametrize("api", ["v2008", "modern"])
def test_correct_driver_respects_read_only(api):
    sim, mm, buf, dev = setup(Toy, api)
    sim.do(dev.access(buf, write=True, value=3))
    sim.do(mm.mprotect(buf, PAGE_SIZE, "r"))
    assert sim.do(dev.access(buf, write=False)) == 3
    r = sim.run()
    assert r.ok, r.violations


def test_write_through_read_only_primary_is_caught():
    r = _mprotect_then_device_write(NoZap)
    assert "WriteToReadOnly" in r.kinds(), r.violations


# ---------------------------------------------------------------- start/end pairing

def _hand_wrapped(end: bool):
    sim, mm, buf, dev = setup(Toy, "modern")
    subs = mm.notifier_subscriptions
    rng = Range(mm, buf, buf + PAGE_SIZE)

    def op():
        yield from subs.mmu_notifier_invalidate_range_start(rng)
        yield
        if end:
            yield from subs.mmu_notifier_invalidate_range_end(rng)

    sim.spawn("op", op())
    return sim.run()


def test_paired_start_end_is_clean():
    r = _hand_wrapped(True)
    assert r.ok, r.violations


def test_unpaired_start_is_caught_at_quiescence():
    r = _hand_wrapped(False)
    assert "UnpairedRange" in r.kinds()
    v = [v for v in r.violations if v.kind == "UnpairedRange"][0]
    assert "invalidate_range_end" in v.message


# ---------------------------------------------------------------- map inside the window

def _window_scenario(drv_cls):
    def build(sim, driver_cls):
        mm = sim.new_process("p")
        buf = sim.do(mm.mmap(2 * PAGE_SIZE, prot="rw"))
        sim.do(mm.write(buf, 1))
        dev = sim.attach(driver_cls, mm)

        def cpu():
            yield from mm.munmap(buf, 2 * PAGE_SIZE)

        def device():
            try:
                yield from dev.access(buf, write=False)
            except SegmentationFault:   # the range is gone: fine
                pass

        sim.spawn("cpu0", cpu())
        sim.spawn("dev0", device())

    return Scenario(f"munmap-vs-fault-{drv_cls.__name__}", build)


@pytest.mark.parametrize("strategy", ["random", "pct", "exhaustive"])
def test_map_inside_window_is_found_by_exploration(strategy):
    # the same missing check also lets a fault finish after the whole munmap and map a freed
    # page (UseAfterFree); keep exploring until the window itself is hit
    ex = explore(_window_scenario(NoWindowCheck), NoWindowCheck, "modern", strategy=strategy,
                 schedules=300, seed=0, stop_at_first=False)
    assert "MapInWindow" in [f.kind for f in ex.findings], ex


def test_map_inside_window_shrinks_to_few_preemptions_and_replays():
    from smmu.explore import replay, shrink
    ex = explore(_window_scenario(NoWindowCheck), NoWindowCheck, "modern", strategy="random",
                 schedules=300, seed=4, stop_at_first=False)
    f = next(f for f in ex.findings if f.kind == "MapInWindow")
    shrink(f, max_runs=150)
    assert f.preemptions is not None and f.preemptions <= 3
    r = replay(f)
    assert "MapInWindow" in r.kinds()
    assert r.violations[0].steps       # numbered steps recorded for the report


def test_exploration_with_the_real_mm_is_deterministic():
    def go():
        ex = explore(_window_scenario(NoWindowCheck), NoWindowCheck, "modern", strategy="pct",
                     schedules=100, seed=9, stop_at_first=False)
        return [(f.kind, f.seed, f.choices, f.violation.message) for f in ex.findings]

    a = go()
    assert a and a == go()


def test_correct_fault_path_never_maps_inside_window():
    ex = explore(_window_scenario(Toy), Toy, "modern", strategy="random", schedules=150,
                 seed=0)
    assert ex.ok, ex.findings


# ---------------------------------------------------------------- file and shared memory

def test_shared_file_mapping_model_follows_writes_across_processes():
    sim = new_sim("modern")
    f = sim.new_file("data", 2, fill=lambda i: 10 + i)
    a = sim.new_process("a")
    b = sim.new_process("b")
    ba = sim.do(a.mmap(2 * PAGE_SIZE, prot="rw", shared=True, file=f))
    bb = sim.do(b.mmap(2 * PAGE_SIZE, prot="rw", shared=True, file=f))
    assert sim.do(b.read(bb + PAGE_SIZE)) == 11
    sim.do(a.write(ba, 99))
    assert sim.do(b.read(bb)) == 99
    r = sim.run()
    assert r.ok, r.violations


def test_private_file_mapping_is_copy_on_write_in_the_model():
    sim = new_sim("modern")
    f = sim.new_file("data", 1, fill=lambda i: 5)
    a = sim.new_process("a")
    pa = sim.do(a.mmap(PAGE_SIZE, prot="rw", shared=False, file=f))
    sa = sim.do(a.mmap(PAGE_SIZE, prot="rw", shared=True, file=f))
    sim.do(a.write(pa, 6))
    assert sim.do(a.read(sa)) == 5
    assert sim.do(a.read(pa)) == 6
    r = sim.run()
    assert r.ok, r.violations


def test_oracle_repr_is_readable():
    sim, mm, buf, dev = setup(Toy)
    sim.do(mm.write(buf, 1))
    sim.do(dev.access(buf, write=False))
    assert "1 cells" in repr(sim.oracle) and "1 secondary" in repr(sim.oracle)


# ---------------------------------------------------------------- the model follows the MM

def test_model_follows_mremap_dontneed_and_truncate():
    # each of these would be a false StaleRead if the oracle ignored move/discard/truncate
    sim = new_sim("modern")
    mm = sim.new_process("p")
    a = sim.do(mm.mmap(2 * PAGE_SIZE, prot="rw"))
    sim.do(mm.write(a, 5))
    sim.do(mm.write(a + PAGE_SIZE, 6))
    b = sim.do(mm.mremap(a, 2 * PAGE_SIZE, 2 * PAGE_SIZE, a + 16 * PAGE_SIZE))
    assert b != a
    assert sim.do(mm.read(b)) == 5 and sim.do(mm.read(b + PAGE_SIZE)) == 6
    sim.do(mm.madvise(b, PAGE_SIZE, "dontneed"))
    assert sim.do(mm.read(b)) == 0
    f = sim.new_file("f", 2, fill=lambda i: 70 + i)
    pv = sim.do(mm.mmap(2 * PAGE_SIZE, prot="rw", shared=False, file=f))
    sim.do(mm.write(pv + PAGE_SIZE, 99))          # private COW copy of page 1
    sim.do(sim.truncate(f, PAGE_SIZE))
    sim.do(sim.truncate(f, 2 * PAGE_SIZE))        # regrown: page 1 reads zeros again
    assert sim.do(mm.read(pv)) == 70
    assert sim.do(mm.read(pv + PAGE_SIZE)) == 0
    r = sim.run()
    assert r.ok, r.violations
    assert sim.oracle.cells[mm.id].get((pv >> 12) + 1) is None


def test_model_keeps_fork_copies_separate():
    sim = new_sim("modern")
    mm = sim.new_process("p")
    a = sim.do(mm.mmap(PAGE_SIZE, prot="rw"))
    sim.do(mm.write(a, 1))
    child = sim.do(mm.fork())
    sim.do(mm.write(a, 2))
    assert sim.do(child.read(a)) == 1
    assert sim.oracle.cells[child.id][a >> 12].value == 1
    assert sim.oracle.cells[mm.id][a >> 12].value == 2
    assert sim.run().ok


# ---------------------------------------------------------------- scan at every step

def _freed_then_forgotten(sim, driver_cls):
    """NoZap keeps a translation of a page that munmap frees; later, before the run ends, the
    device drops its whole TLB. Only a scan while the translation exists can see it."""
    mm = sim.new_process("p")
    buf = sim.do(mm.mmap(PAGE_SIZE, prot="rw"))
    sim.do(mm.write(buf, 1))
    dev = sim.attach(driver_cls, mm)
    sim.do(dev.access(buf, write=False))

    def cpu():
        yield from mm.munmap(buf, PAGE_SIZE)
        yield
        yield

    def device():
        yield
        yield
        yield
        yield
        yield
        dev.zap(0, 1 << 47)

    sim.spawn("cpu0", cpu())
    sim.spawn("dev0", device())


def test_scan_every_step_sees_a_translation_of_a_freed_frame_mid_run():
    from smmu.explore import run_once
    sc = Scenario("freed-then-forgotten", _freed_then_forgotten)
    r = run_once(sc, NoZap, "modern", "round_robin", 0)
    assert r.ok                      # nothing used it, and it is gone at the end
    r = run_once(sc, NoZap, "modern", "round_robin", 0, scan_every_step=True)
    assert r.kinds() == ["StaleMapping"]
    assert "freed" in r.violations[0].message
    r = run_once(sc, Toy, "modern", "round_robin", 0, scan_every_step=True)
    assert r.ok, r.violations
    ex = explore(sc, NoZap, "modern", strategy="random", schedules=5, scan_every_step=True)
    f = ex.findings[0]
    assert f.kind == "StaleMapping" and f.sim_options == {"scan_every_step": True}


def test_madvise_free_reads_old_data_until_reclaim_then_zero():
    # MADV_FREE keeps the page mapped: a read right after returns the old data (no
    # StaleRead); once reclaim drops the clean page a read returns 0 (no StaleRead either)
    sim = new_sim("modern")
    mm = sim.new_process("p")
    a = sim.do(mm.mmap(2 * PAGE_SIZE, prot="rw"))
    sim.do(mm.write(a, 5))
    sim.do(mm.write(a + PAGE_SIZE, 6))
    sim.do(mm.madvise(a, 2 * PAGE_SIZE, "free"))
    assert sim.do(mm.read(a)) == 5
    sim.do(sim.reclaim(mm, a + PAGE_SIZE, PAGE_SIZE, force=True))
    assert sim.do(mm.read(a + PAGE_SIZE)) == 0
    r = sim.run()
    assert r.ok, r.violations
    # but DONTNEED really drops the contents: the model says 0, not "either"
    sim.do(mm.write(a, 7))
    sim.do(mm.madvise(a, PAGE_SIZE, "dontneed"))
    assert (a >> 12) not in sim.oracle.cells[mm.id]


class EndOnly(Pinner):
    """XPMEM-like: keeps its pins, drops translations only in a sleeping
    invalidate_range_end (``zaps=False``: never, the broken twin)."""

    zaps = True

    def __init__(self, sim, mm):
        super().__init__(sim, mm)
        self.in_end = False
        self.wq = sim.waitqueue("endonly")

    def invalidate_range_end(self, rng):
        self.in_end = True
        self.wq.wake_all()
        for _ in range(4):
            yield                      # the device keeps running meanwhile
        if self.zaps:
            for v in [v for v in self.tlb if rng.start <= v < rng.end]:
                del self.tlb[v]
            self.note_unmap_range(rng.start, rng.end)
        self.in_end = False


class EndOnlyNoZap(EndOnly):
    zaps = False


def _read_racing_dontneed(drv_cls, during: bool):
    sim, mm, buf, dev = setup(drv_cls, "modern")
    sim.do(mm.write(buf, 42))
    sim.do(dev.access(buf, write=False))
    done = {"madvise": False}

    def cpu():
        yield from mm.madvise(buf, PAGE_SIZE, "dontneed")
        done["madvise"] = True

    def device():
        if during:
            yield dev.wq.wait_until(lambda: dev.in_end)
        else:
            while not done["madvise"]:
                yield
        return (yield from dev.access(buf, write=False))

    sim.spawn("cpu0", cpu())
    sim.spawn("dev0", device())
    return sim.run()


def test_read_of_the_old_page_while_its_invalidation_is_in_flight_is_not_stale():
    r = _read_racing_dontneed(EndOnly, during=True)
    assert r.results["dev0"] == 42     # the pinned old page, before the zap in end
    assert r.ok, r.violations


def test_read_of_the_old_page_after_the_invalidation_completed_is_stale():
    r = _read_racing_dontneed(EndOnlyNoZap, during=False)
    assert r.results["dev0"] == 42
    assert "StaleRead" in r.kinds(), r.violations


def _write_racing_dontneed_of_untouched_page(drv_cls, during: bool):
    """The device pins and maps a page the model never saw written (no cell); the CPU
    discards it (DONTNEED) while (``during``) or after the driver's end drops the pin."""
    sim, mm, buf, dev = setup(drv_cls, "modern")
    sim.do(dev.access(buf, write=False))                  # pinned and mapped, value 0
    assert mm.id not in sim.oracle.cells or (buf >> 12) not in sim.oracle.cells[mm.id]
    done = {"madvise": False}

    def cpu():
        yield from mm.madvise(buf, PAGE_SIZE, "dontneed")
        done["madvise"] = True

    def device():
        if during:
            yield dev.wq.wait_until(lambda: dev.in_end)
        else:
            while not done["madvise"]:
                yield
        return (yield from dev.access(buf, write=True, value=99))

    def check():
        while not done["madvise"] or "dev0" not in box:
            yield
        return (yield from mm.read(buf))

    box = {}
    sim.spawn("cpu0", cpu())
    box["dev0"] = sim.spawn("dev0", device())
    sim.spawn("check", check())
    return sim.run()


def test_write_into_an_untouched_page_being_discarded_goes_with_it():
    r = _write_racing_dontneed_of_untouched_page(EndOnly, during=True)
    assert r.results["check"] == 0           # the fresh page: the write went with the old one
    assert r.ok, r.violations


def test_write_into_a_discarded_page_after_the_invalidation_completed_is_lost():
    r = _write_racing_dontneed_of_untouched_page(EndOnlyNoZap, during=False)
    assert r.results["check"] == 0
    assert {"LostWrite", "StaleRead"} & set(r.kinds()), r.violations


# ------------------------------------------------- a write inside the driver's own notification

def _kvm_window(drop: bool):
    """KSM write-protects a page the device maps writable (v2008: the PTE is set read-only,
    then ``change_pte``). The device writes while ``change_pte`` is still running
    (``drop=True``: the reference KVM, which then drops its writable SPTE), or after it
    returned through the SPTE the broken twin (``drop=False``) never dropped."""
    from drivers.kvm import KVM
    from smmu.scenarios import Join
    from smmu.sim import Simulator

    class Slow(KVM):
        """The reference KVM whose ``change_pte`` waits a few choice points before taking
        ``mmu_lock`` (contended), recording the hook state and the PTE at each device write."""

        name = "kvm_slow_change_pte" if drop else "kvm_keeps_spte"

        def __init__(self, sim, mm):
            super().__init__(sim, mm)
            self.in_change = 0
            self.changed = 0
            self.writes = []            # (in change_pte, PTE writable) at each device write

        def change_pte(self, mm, address, pte):
            self.in_change += 1
            for _ in range(4):
                yield                    # waiting for mmu_lock; the vCPU runs meanwhile
            if drop:
                yield from super().change_pte(mm, address, pte)
            self.in_change -= 1
            self.changed += 1

        def dma_write(self, va, pfn, value):
            pte = int(self.mm.lookup_pte(va))
            self.writes.append((self.in_change > 0, bool(pte & PTE_WRITE)))
            return super().dma_write(va, pfn, value)

    sim = Simulator(notifier_api="v2008")
    mm = sim.new_process("guest")
    buf = sim.do(mm.mmap(2 * PAGE_SIZE, prot="rw"))
    for va in (buf, buf + PAGE_SIZE):
        sim.do(mm.write(va, 77))
    drv = sim.attach(Slow, mm)
    sim.do(drv.access(buf, write=True, value=77))      # a writable SPTE for the page
    assert drv.translation(buf)[1]

    def device():
        while not (drv.in_change if drop else drv.changed):
            yield
        return (yield from drv.access(buf, write=True, value=555))

    j = Join(sim)
    j.spawn("ksmd", sim.ksm_merge(mm, buf, 2 * PAGE_SIZE))
    j.spawn("vcpu", device())
    j.then("check", mm.read(buf))
    return sim.run(), drv


def test_write_while_the_drivers_change_pte_runs_is_ordered_before_the_write_protect():
    r, drv = _kvm_window(drop=True)
    assert drv.writes[-1] == (True, False)     # inside change_pte, the PTE already read-only
    assert r.results["check"] == 555           # KSM compared after: the page was not merged
    assert r.ok, r.violations


def test_write_through_an_spte_kept_after_change_pte_returned_is_caught():
    r, drv = _kvm_window(drop=False)
    assert drv.writes[-1][0] is False          # change_pte had returned
    assert {"WriteToReadOnly", "StaleRead"} & set(r.kinds()), r.violations


# ------------------------------------------- a write while reclaim's invalidate_page is pending

def _write_while_rmap_invalidates(op: str, zaps: bool):
    """v2008 reclaim (``op="reclaim"``) or migration of a page the CPU once discarded (DONTNEED of a
    written page leaves the model a ghost of it) and that came back through a device write fault
    never written since: ``try_to_unmap_one`` clears the PTE, then calls ``invalidate_page``; the
    reference KVM's waits for ``mmu_lock`` (contended) while the vCPU writes through its SPTE, which
    still maps the page (``zaps=True``: it then zaps; 2.6.27 mmu_notifier.h: "Before this is invoked
    any secondary MMU is still ok to read/write to the page previously pointed to by the Linux pte
    because the page hasn't been freed yet"). Pageout writes the page from the frame, the write with
    it, and the CPU reads it back; migration copies the page only once the unmap is over
    (``move_to_new_page`` after ``try_to_unmap``). The twin (``zaps=False``) never drops its SPTE
    and writes after the page went to swap, or to its new frame, and the old one was freed."""
    from drivers.kvm import KVM
    from smmu.scenarios import Join
    from smmu.sim import Simulator

    class Slow(KVM):
        name = "kvm_slow_invalidate_page" if zaps else "kvm_keeps_spte"

        def __init__(self, sim, mm):
            super().__init__(sim, mm, style="2008")
            self.in_page = 0
            self.done = 0

        def invalidate_page(self, mm, address):
            self.in_page += 1
            for _ in range(4):
                yield                    # waiting for mmu_lock; the vCPU runs meanwhile
            if zaps:
                yield from super().invalidate_page(mm, address)
            self.in_page -= 1
            self.done += 1

    sim = Simulator(notifier_api="v2008")
    mm = sim.new_process("guest")
    buf = sim.do(mm.mmap(PAGE_SIZE, prot="rw"))
    sim.do(mm.write(buf, 101))
    sim.do(mm.madvise(buf, PAGE_SIZE, "dontneed"))        # over: the page reads 0 again
    drv = sim.attach(Slow, mm)
    sim.do(drv.page_fault(buf, True))                     # a writable SPTE, nothing written
    assert drv.translation(buf)[1]
    state = {"over": False}

    def cpu():
        if op == "reclaim":
            yield from sim.reclaim(mm, buf, PAGE_SIZE, force=True)
        else:
            yield from sim.migrate(mm, buf, PAGE_SIZE)
        state["over"] = True

    def vcpu():
        while not (drv.in_page if zaps else state["over"]):
            yield
        return (yield from drv.access(buf, write=True, value=555))

    j = Join(sim)
    j.spawn("kswapd" if op == "reclaim" else "kcompactd", cpu())
    j.spawn("vcpu", vcpu())
    j.then("check", mm.read(buf))
    return sim.run(), drv


@pytest.mark.parametrize("op", ["reclaim", "migrate"])
def test_write_while_rmap_invalidate_page_is_pending_goes_with_the_page(op):
    """Was a false StaleRead (reclaim: user-written KVM, load-small v2008 random seed 50;
    migration: the chaos driver, load-small v2008 random seed 112 on 9fba1fe): the write
    went to the ghost of the DONTNEED long over instead of the address."""
    r, drv = _write_while_rmap_invalidates(op, zaps=True)
    assert drv.done == 1
    assert r.results["vcpu"] == 555
    assert r.results["check"] == 555              # swapped out and in, or copied
    assert r.ok, r.violations


@pytest.mark.parametrize("op", ["reclaim", "migrate"])
def test_write_through_an_spte_kept_after_rmap_invalidate_page_is_caught(op):
    r, drv = _write_while_rmap_invalidates(op, zaps=False)
    assert drv.done == 1
    assert r.results["check"] == 0                # the saved or copied page: write lost
    assert {"UseAfterFree", "LostWrite", "StaleRead"} & set(r.kinds()), r.violations


# ---------------------------------------------------------------- 64-bit page values

def test_page_values_of_2_to_the_63_and_more_are_checked_not_crashed():
    """``mm.write`` documents 64-bit values and masks -1 to 2**64 - 1; the end-of-run check
    compares them as uint64 (it raised OverflowError from an int64 array). The twin: a lost
    device write of such a value is still reported."""
    sim, mm, buf, dev = setup(Toy, "modern", pages=2)
    sim.do(mm.write(buf, -1))
    sim.do(mm.write(buf + PAGE_SIZE, 2**63 + 5))
    assert sim.do(mm.read(buf)) == 2**64 - 1
    assert sim.do(dev.access(buf + PAGE_SIZE, write=False)) == 2**63 + 5
    assert sim.do(dev.access(buf, write=True, value=-2)) == 2**64 - 2
    assert sim.do(mm.read(buf)) == 2**64 - 2
    r = sim.run()
    assert r.ok, r.violations


def test_lost_device_write_of_a_value_above_2_to_the_63_is_reported():
    sim, mm, buf, dev = setup(Pinner)
    sim.do(mm.write(buf, 1))
    sim.do(dev.access(buf, write=True, value=2**63))
    sim.do(mm.fork())
    sim.do(mm.write(buf, 2**64 - 3))               # COW: the parent gets a new page
    sim.do(dev.access(buf, write=True, value=2**63 + 1))
    r = sim.run()
    lost = [v for v in r.violations if v.kind == "LostWrite"]
    assert lost and str(2**63 + 1) in lost[0].message, r.violations
