"""The mmu_gather: a zap frees every full batch of its range inside the start..end window
(2.6.27: every 506 pages and every 1024-page chunk; 3.7+: every 9698 pages), the rest after
``end``; 3.0-3.6 freed everything after ``end``. A driver that drops translations only in
``end`` without holding page references (``xpmem_no_pin``) is caught on large zaps and only
with an era's early freeing on."""

import numpy as np
import pytest

import drivers
from primary_mm.mmu_gather import (FREE_PTE_NR, MAX_GATHER_BATCH, MAX_GATHER_PAGES,
                                   MMU_GATHER_BUNDLE, ZAP_BLOCK_PAGES, MmuGather)
from smmu import MMUNotifier, PAGE_SIZE, Simulator
from smmu.base.constants import HPAGE_PMD_NR
from smmu.base.errors import UsageError
from smmu.base.pte import PTE_HUGE, PTE_PRESENT, PTE_SWAP, mk_pte
from smmu.explore import explore
from smmu.scenarios import device_loop

P = PAGE_SIZE
BUGGY = drivers.BUGGY["xpmem_no_pin"]


def entries(n, vpn0=0, every=1, flags=PTE_PRESENT):
    vpns = np.arange(vpn0, vpn0 + n * every, every, dtype=np.int64)
    ptes = np.array([mk_pte(i + 1, flags) for i in range(n)], dtype=np.uint64)
    return vpns, ptes


# ---------------------------------------------------------------------------- the plan
def test_batch_limit_frees_every_9698_gathered_pages():
    g = MmuGather("batch_limit")
    assert g.pages == MAX_GATHER_PAGES == MMU_GATHER_BUNDLE + 19 * MAX_GATHER_BATCH == 9698
    n = 2 * MAX_GATHER_PAGES + 5
    vpns, ptes = entries(n, vpn0=100)
    plan = g.plan(100, 100 + n, vpns, ptes)
    assert plan == [(100, 100 + MAX_GATHER_PAGES, True),
                    (100 + MAX_GATHER_PAGES, 100 + 2 * MAX_GATHER_PAGES, True),
                    (100 + 2 * MAX_GATHER_PAGES, 100 + n, False)]
    assert not g.may_free_early(MAX_GATHER_PAGES - 1) and g.may_free_early(MAX_GATHER_PAGES)


def test_swap_entries_and_the_zero_page_are_not_gathered_and_a_thp_is_one_entry():
    g = MmuGather("batch_limit", batch=4)
    vpns = np.array([0, 1, 2, 3, 512, 1024, 1025], dtype=np.int64)
    ptes = np.array([mk_pte(1, PTE_PRESENT), mk_pte(7, PTE_SWAP), mk_pte(2, PTE_PRESENT),
                     mk_pte(3, PTE_PRESENT), mk_pte(512, PTE_PRESENT | PTE_HUGE),
                     mk_pte(4, PTE_PRESENT), mk_pte(5, PTE_PRESENT)], dtype=np.uint64)
    # gathered: 1, (swap skipped), 2, 3, the THP (one entry, 512 pages) -> full after it
    assert g.plan(0, 2000, vpns, ptes) == [(0, 512 + HPAGE_PMD_NR, True),
                                          (512 + HPAGE_PMD_NR, 2000, False)]


def test_zap_block_frees_at_free_pte_nr_and_at_each_chunk_end():
    g = MmuGather("zap_block")
    assert g.pages == FREE_PTE_NR == 506 and ZAP_BLOCK_PAGES == 1024
    n = 2 * ZAP_BLOCK_PAGES + 10
    vpns, ptes = entries(n)
    cuts = [hi for _lo, hi, free in g.plan(0, n, vpns, ptes) if free]
    # chunk 1: 506, 1012, end 1024; chunk 2 (a new gather): 1024 + 506, 1024 + 1012, 2048
    assert cuts == [506, 1012, 1024, 1530, 2036, 2048]


def test_unbounded_frees_nothing_before_end():
    g = MmuGather("unbounded")
    vpns, ptes = entries(20000)
    assert g.pages is None and not g.may_free_early(10 ** 6)
    assert g.plan(0, 20000, vpns, ptes) == [(0, 20000, False)]


def test_free_slices_follow_the_batches():
    g = MmuGather("batch_limit")
    _v, ptes = entries(MAX_GATHER_PAGES)
    sizes = [len(p) for p in g.free_slices(ptes)]
    assert sizes == [MMU_GATHER_BUNDLE] + [MAX_GATHER_BATCH] * 19
    assert [len(p) for p in MmuGather("zap_block").free_slices(ptes[:506])] == [506]


@pytest.mark.parametrize("kw", [{"mmu_gather": "lazy"}, {"gather_batch": 0},
                                {"gather_batch": "8"}])
def test_bad_gather_options_are_usage_errors(kw):
    with pytest.raises(UsageError):
        Simulator(**kw)


# ---------------------------------------------------------------------------- the window
class FreedAtEnd(MMUNotifier):
    """Records, when each ``invalidate_range_end`` begins, which of ``watched`` frames are
    already free (and, at ``release``, whether any is)."""

    def __init__(self, sim, mm):
        super().__init__(sim, mm)
        self.watched = np.zeros(0, dtype=np.int64)
        self.at_end = []
        self.at_release = None

    def _free(self):
        return (self.sim.memory.frames.refcount[self.watched] == 0).tolist()

    def invalidate_range_start(self, range):
        return 0

    def invalidate_range_end(self, range):
        self.at_end.append(self._free())

    def release(self, mm):
        self.at_release = self._free()


def big_process(sim, n, file=None):
    mm = sim.new_process()
    buf = sim.do(mm.mmap(n * P, prot="rw", shared=file is not None, file=file, populate=True))
    probe = sim.attach(FreedAtEnd, mm)
    vpns, ptes = mm.pt.iter_present(buf // P, buf // P + n)
    probe.watched = (ptes >> np.uint64(12)).astype(np.int64) & ((1 << 40) - 1)
    assert len(probe.watched) == n
    return mm, buf, probe


N = MAX_GATHER_PAGES + 40


@pytest.mark.parametrize("mode, freed_early", [("batch_limit", MAX_GATHER_PAGES),
                                               ("zap_block", 9 * ZAP_BLOCK_PAGES + FREE_PTE_NR),
                                               ("unbounded", 0)])
@pytest.mark.parametrize("op", ["munmap", "dontneed", "oom_reap"])
def test_full_batches_are_freed_before_end(mode, freed_early, op):
    sim = Simulator(mmu_gather=mode)
    mm, buf, probe = big_process(sim, N)
    if op == "munmap":
        sim.do(mm.munmap(buf, N * P))
    elif op == "dontneed":
        sim.do(mm.madvise(buf, N * P, "dontneed"))
    else:
        sim.do(sim.oom_reap(mm))
    (free,) = probe.at_end
    # the first batches in address order are free when end begins, the last one is not
    assert sum(free) == freed_early
    assert all(free[:freed_early]) and not any(free[freed_early:])
    assert (sim.memory.frames.refcount[probe.watched] == 0).all()      # all freed after end
    assert sim.stats["gather_flush"] == (0 if mode == "unbounded" else
                                         1 if mode == "batch_limit" else 9 * 3 + 1)
    assert not sim.memory.check_invariants()


def test_truncate_frees_the_first_batch_of_cow_copies_before_end():
    """unmap_mapping_range -> zap_page_range_single: the page-cache pages keep the cache's
    reference, so what the gather frees early are the private COW copies; shared file pages
    are only unmapped. The frames freed before end here are a private mapping's copies."""
    sim = Simulator()
    f = sim.new_file("big", N, fill=lambda i: i)
    mm = sim.new_process()
    buf = sim.do(mm.mmap(N * P, prot="rw", file=f, populate=True))     # private: COW copies
    probe = sim.attach(FreedAtEnd, mm)
    _v, ptes = mm.pt.iter_present(buf // P, buf // P + N)
    probe.watched = (ptes >> np.uint64(12)).astype(np.int64) & ((1 << 40) - 1)
    sim.do(sim.truncate(f, 0))
    (free,) = probe.at_end
    assert sum(free) == MAX_GATHER_PAGES and all(free[:MAX_GATHER_PAGES])


def test_exit_frees_in_batches_but_only_after_release():
    """exit_mmap calls mmu_notifier_release before tlb_gather_mmu_fullmm and unmap_vmas
    (2.6.27 and 6.8 alike): the gather frees in batches during the teardown, but no frame
    is free while a notifier can still run, so exit opens no early-free window."""
    sim = Simulator()
    mm, buf, probe = big_process(sim, N)
    sim.do(mm.exit())
    assert probe.at_release is not None and not any(probe.at_release)
    assert probe.at_end == []                      # no range reaches a released notifier
    assert sim.stats["gather_flush"] == 1
    assert (sim.memory.frames.refcount[probe.watched] == 0).all()


def test_reference_xpmem_keeps_its_pins_across_the_early_free():
    """XPMEM drops mappings only in end too, but it holds a pin on each: the pinned page
    survives the batch flush (the fix the 2.6.27 header describes)."""
    sim = Simulator()
    mm, buf, _probe = big_process(sim, N)
    dev = sim.attach(drivers.XPMEM, mm)
    sim.do(dev.access(buf, write=False))
    pfn = dev.translation(buf)[0]
    sim.do(mm.munmap(buf, N * P))
    assert sim.memory.frames.refcount[pfn] == 0 and dev.translation(buf) is None
    assert not sim.violations


# ---------------------------------------------------------------------------- the blind spot
@pytest.mark.parametrize("scenario", ["munmap-gather-batch", "dontneed-gather-batch"])
@pytest.mark.parametrize("api", ["modern", "range_only"])
def test_no_pin_driver_caught_only_when_batches_are_freed_early(scenario, api):
    """The same driver, scenario and schedules: caught with the 3.7+ gather and with the
    2.6.27 one, clean with the 3.0-3.6 gather that freed after end (what smmu modelled for
    every era before)."""
    for mode in ("batch_limit", "zap_block"):
        ex = explore(scenario, BUGGY, api, strategy="random", schedules=30, seed=0,
                     sim_options={"mmu_gather": mode})
        assert {f.kind for f in ex.findings} & {"UseAfterFree", "CrossMmAccess"}, mode
    ex = explore(scenario, BUGGY, api, strategy="random", schedules=30, seed=0,
                 sim_options={"mmu_gather": "unbounded"}, stop_at_first=False)
    assert not ex.findings, [(f.kind, f.violation.message) for f in ex.findings]


def truncate_run(mode, seed):
    sim = Simulator(mmu_gather=mode, schedule="random", seed=seed)
    f = sim.new_file("big", N, fill=lambda i: i)
    mm = sim.new_process()
    buf = sim.do(mm.mmap(N * P, prot="rw", file=f, populate=True))
    dev = sim.attach(BUGGY, mm)
    vas = [buf, buf + (MAX_GATHER_PAGES - 1) * P]
    for va in vas:
        sim.do(dev.access(va, write=False))
    sim.spawn("cpu0", sim.truncate(f, 0))
    sim.spawn("dev0", device_loop(dev, vas, rounds=4, write=False))
    return {v.kind for v in sim.run().violations}


def test_no_pin_driver_on_truncate():
    """Truncate (unmap_mapping_range -> zap_page_range_single) of a large private file
    mapping: the page cache keeps its own pages, so what the zap frees are the private COW
    copies (populated by write faults), the first batch of them before end. Caught with the
    3.7+ gather; the same seeds are clean with the 3.0-3.6 one."""
    for seed in range(20):
        found = truncate_run("batch_limit", seed)
        if found:
            break
    assert found & {"UseAfterFree", "CrossMmAccess"}, found
    for s in range(seed + 1):
        assert not truncate_run("unbounded", s)
