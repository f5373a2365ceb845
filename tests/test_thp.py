"""Transparent huge pages: madvise, the huge-page and huge-zero-page faults, COW per era
(5.8+ split, up to 5.7 copy), splits at VMA edges and in partial zaps (their 2 MiB CLEAR),
whole-PMD zap / mprotect / mremap / fork, reclaim (aging a PMD, THP_SWAP or split), migration
(PMD migration entry or split), khugepaged's collapse (test_young under the PT lock), KSM, and
the driver that drops only the first 4 KiB of a huge range."""

import numpy as np
import pytest

import drivers
from primary_mm.frames import FRAME_COMPOUND
from smmu import MMUNotifier, PAGE_SIZE, Simulator
from smmu.base.constants import HPAGE_PMD_NR, HPAGE_PMD_SIZE
from smmu.base.errors import InvalidArgument, UsageError
from smmu.base.pte import PTE_HUGE, PTE_MIGRATION, PTE_SPECIAL, PTE_WRITE, pte_pfn
from smmu.explore import explore

P = PAGE_SIZE
H = HPAGE_PMD_SIZE


class Rec(MMUNotifier):
    """Logs ranges (start/end with event), young hooks, and whether the PT lock was held."""

    def __init__(self, sim, mm, young=False):
        super().__init__(sim, mm)
        self.log = []
        self.young = young

    def _ptl(self):
        return self.mm.page_table_lock.owner is not None

    def invalidate_range_start(self, range):
        self.log.append(("start", range.start, range.end, range.event.name))
        return 0

    def invalidate_range_end(self, range):
        self.log.append(("end", range.start, range.end))

    def clear_flush_young(self, mm, start, end):
        self.log.append(("cfy", start, end, self._ptl()))
        return self.young

    def test_young(self, mm, address):
        self.log.append(("test_young", address, self._ptl()))
        return self.young

    def ranges(self, kind="start"):
        return [e[1:] for e in self.log if e[0] == kind]


def huge_process(sim, write=True, advise=True, npmds=1):
    """A 2 MiB-aligned private mapping of ``npmds`` huge pages, madvised and faulted."""
    mm = sim.new_process()
    base = sim.do(mm.mmap((npmds + 1) * H, prot="rw"))
    h = (base + H - 1) & ~(H - 1)
    if advise:
        sim.do(mm.madvise(h, npmds * H, "hugepage"))
    for k in range(npmds):
        if write:
            sim.do(mm.write(h + k * H + 3 * P, 30 + k))
        else:
            sim.do(mm.read(h + k * H))
    return mm, h


def pmd(mm, va):
    return mm.pt.lookup_pmd(va // P)


def clean(sim):
    assert not sim.memory.check_invariants()
    assert not sim.violations, [(v.kind, v.message) for v in sim.violations]


# ---------------------------------------------------------------------------- faults
def test_a_write_fault_in_a_madvised_block_maps_one_huge_page():
    sim = Simulator()
    mm, h = huge_process(sim)
    word = pmd(mm, h)
    head = pte_pfn(word)
    assert word & PTE_HUGE and word & PTE_WRITE and head % HPAGE_PMD_NR == 0
    f = sim.memory.frames
    blk = np.arange(head, head + HPAGE_PMD_NR)
    assert (f.mapcount[blk] == 1).all() and (f.flags[blk] & FRAME_COMPOUND).all()
    assert mm.lookup_pte(h + 7 * P) == word + (7 << 12)      # 4 KiB views for walkers
    assert sim.do(mm.read(h + 3 * P)) == 30 and sim.do(mm.read(h + 9 * P)) == 0
    assert sim.stats["thp_fault_alloc"] == 1
    clean(sim)


@pytest.mark.parametrize("kw, huge", [({"thp": "never"}, False), ({"thp": "madvise"}, False),
                                      ({"thp": "always"}, True)])
def test_thp_modes_without_madvise(kw, huge):
    sim = Simulator(**kw)
    mm, h = huge_process(sim, advise=False)
    assert bool(pmd(mm, h)) is huge


def test_nohugepage_wins_over_always_and_splits_nothing_that_exists():
    sim = Simulator(thp="always")
    mm, h = huge_process(sim, advise=False, npmds=2)
    sim.do(mm.madvise(h, 2 * H, "nohugepage"))
    assert pmd(mm, h) and pmd(mm, h + H)      # MADV_NOHUGEPAGE does not split (6.8)
    sim.do(mm.madvise(h + H, H, "dontneed"))
    sim.do(mm.write(h + H, 5))
    assert not pmd(mm, h + H)                 # no new huge page there
    assert "nohugepage" in mm.vma_at(h).flags


def test_a_block_not_inside_the_vma_falls_back_to_small_pages():
    sim = Simulator(thp="always")
    mm = sim.new_process()
    base = sim.do(mm.mmap(H, prot="rw", addr=0x7F00_0010_0000, fixed=True))   # unaligned
    sim.do(mm.write(base, 1))
    assert not pmd(mm, base) and mm.lookup_pte(base) & PTE_WRITE


def test_read_fault_maps_the_huge_zero_page_and_a_write_splits_it():
    sim = Simulator()
    mm, h = huge_process(sim, write=False)
    word = pmd(mm, h)
    assert word & PTE_SPECIAL and not word & PTE_WRITE
    rec = sim.attach(Rec, mm)
    sim.do(mm.write(h + 2 * P, 9))                            # 6.8: fallback -> split
    assert rec.ranges() == [(h, h + H, "CLEAR"), (h + 2 * P, h + 3 * P, "CLEAR")]
    assert not pmd(mm, h) and sim.do(mm.read(h + 2 * P)) == 9
    assert sim.do(mm.read(h + 5 * P)) == 0
    clean(sim)


def test_without_the_huge_zero_page_a_read_fault_allocates_the_huge_page():
    sim = Simulator(huge_zero_page=False)                    # before 3.8
    mm, h = huge_process(sim, write=False)
    assert pmd(mm, h) & PTE_WRITE and not pmd(mm, h) & PTE_SPECIAL


def test_allocation_failure_falls_back_to_a_small_page():
    sim = Simulator()
    mm = sim.new_process()
    base = sim.do(mm.mmap(2 * H, prot="rw"))
    h = (base + H - 1) & ~(H - 1)
    sim.do(mm.madvise(h, H, "hugepage"))
    sim.memory.frames.fail_after(1)                           # a small page, not 512
    sim.do(mm.write(h, 1))
    assert not pmd(mm, h) and sim.stats["thp_fault_fallback"] == 1
    sim.memory.frames.clear_fail()
    clean(sim)


def test_bad_thp_options_are_usage_errors():
    for kw in ({"thp": "sometimes"}, {"thp_cow": "share"}, {"lru_gen": "on"}):
        with pytest.raises(UsageError):
            Simulator(**kw)
    sim = Simulator()
    mm = sim.new_process()
    buf = sim.do(mm.mmap(P))
    with pytest.raises(InvalidArgument, match="hugepage"):
        sim.do(mm.madvise(buf, P, "huge"))


# ---------------------------------------------------------------------------- COW
@pytest.mark.parametrize("cow", ["split", "copy"])
def test_cow_of_a_huge_page_per_era(cow):
    sim = Simulator(thp_cow=cow)
    mm, h = huge_process(sim)
    child = sim.do(mm.fork())
    assert not pmd(mm, h) & PTE_WRITE and pmd(child, h) == pmd(mm, h)
    rec = sim.attach(Rec, mm)
    sim.do(mm.write(h + 3 * P, 31))
    if cow == "split":           # 5.8+: __split_huge_pmd, then a 4 KiB COW of the page
        assert rec.ranges() == [(h, h + H, "CLEAR"), (h + 3 * P, h + 4 * P, "CLEAR")]
        assert not pmd(mm, h) and pmd(child, h)
    else:                        # up to 5.7: a new huge page under one 2 MiB range
        assert rec.ranges() == [(h, h + H, "CLEAR")]
        assert pmd(mm, h) & PTE_WRITE and pte_pfn(pmd(mm, h)) != pte_pfn(pmd(child, h))
    assert sim.do(mm.read(h + 3 * P)) == 31 and sim.do(child.read(h + 3 * P)) == 30
    clean(sim)
    sim.do(child.exit())
    clean(sim)


def test_an_exclusive_huge_page_is_reused_in_place():
    sim = Simulator()
    mm, h = huge_process(sim)
    child = sim.do(mm.fork())
    sim.do(child.exit())
    rec = sim.attach(Rec, mm)
    head = pte_pfn(pmd(mm, h))
    sim.do(mm.write(h, 1))
    assert rec.log == [] and pte_pfn(pmd(mm, h)) == head and pmd(mm, h) & PTE_WRITE


# ---------------------------------------------------------------------------- splits
def test_partial_munmap_splits_the_pmd_before_the_unmap():
    sim = Simulator()
    mm, h = huge_process(sim)
    rec = sim.attach(Rec, mm)
    sim.do(mm.munmap(h + 4 * P, P))
    assert rec.ranges() == [(h, h + H, "CLEAR"), (h + 4 * P, h + 5 * P, "UNMAP")]
    assert not pmd(mm, h) and sim.do(mm.read(h + 3 * P)) == 30
    assert len(mm.pt.iter_present(h // P, (h + H) // P)[0]) == HPAGE_PMD_NR - 1
    clean(sim)


def test_partial_dontneed_nests_the_split_in_the_zap_range():
    sim = Simulator()
    mm, h = huge_process(sim)
    rec = sim.attach(Rec, mm)
    sim.do(mm.madvise(h + 4 * P, 2 * P, "dontneed"))
    assert [e[0] for e in rec.log] == ["start", "start", "end", "end"]
    assert rec.log[0][1:] == (h + 4 * P, h + 6 * P, "CLEAR")
    assert rec.log[1][1:] == (h, h + H, "CLEAR")              # zap_pmd_range's split
    clean(sim)


def test_partial_mprotect_splits_at_the_vma_edge_then_changes_protection():
    sim = Simulator()
    mm, h = huge_process(sim)
    rec = sim.attach(Rec, mm)
    sim.do(mm.mprotect(h + 8 * P, P, "r"))
    assert rec.ranges() == [(h, h + H, "CLEAR"), (h + 8 * P, h + 9 * P, "PROTECTION_VMA")]
    assert not mm.lookup_pte(h + 8 * P) & PTE_WRITE and mm.lookup_pte(h + 7 * P) & PTE_WRITE
    clean(sim)


def test_whole_pmd_operations_do_not_split():
    sim = Simulator()
    mm, h = huge_process(sim, npmds=2)
    rec = sim.attach(Rec, mm)
    sim.do(mm.mprotect(h, H, "r"))                            # change_huge_pmd
    assert rec.ranges() == [(h, h + H, "PROTECTION_VMA")] and pmd(mm, h)
    assert not pmd(mm, h) & PTE_WRITE
    sim.do(mm.mprotect(h, H, "none"))
    sim.do(mm.mprotect(h, H, "rw"))
    assert pmd(mm, h) and sim.do(mm.read(h + 3 * P)) == 30
    rec.log.clear()
    head = pte_pfn(pmd(mm, h + H))
    sim.do(mm.munmap(h + H, H))                               # zap_huge_pmd
    assert rec.ranges() == [(h + H, h + 2 * H, "UNMAP")]
    assert (sim.memory.frames.refcount[head:head + HPAGE_PMD_NR] == 0).all()
    clean(sim)


def test_mremap_moves_an_aligned_huge_pmd_and_splits_an_unaligned_one():
    sim = Simulator()
    mm, h = huge_process(sim)
    new = sim.do(mm.mremap(h, H, H, new_addr=h + 8 * H))       # aligned: move_huge_pmd
    assert new == h + 8 * H and pmd(mm, new) and sim.do(mm.read(new + 3 * P)) == 30
    rec = sim.attach(Rec, mm)
    new2 = sim.do(mm.mremap(new, H, H, new_addr=h + 16 * H + 4 * P))
    assert (new, new + H, "CLEAR") in rec.ranges() and not pmd(mm, new2)
    assert sim.do(mm.read(new2 + 3 * P)) == 30
    clean(sim)


def test_fork_shares_the_huge_page_and_splits_a_pinned_one():
    sim = Simulator(fork_copies_pinned=True)
    mm, h = huge_process(sim, npmds=2)
    pfn = sim.do(mm.pin_user_pages(h + H + P, write=True))
    child = sim.do(mm.fork())
    assert pmd(child, h) == pmd(mm, h)                        # copy_huge_pmd
    assert not pmd(mm, h + H) and not pmd(child, h + H)       # page_needs_cow_for_dma
    assert mm.lookup_pte(h + H + P) >> 12 == pfn              # the parent keeps the pin
    assert child.lookup_pte(h + H + P) >> 12 != pfn
    sim.do(mm.unpin_user_page(pfn))
    clean(sim)


# ---------------------------------------------------------------------------- reclaim
@pytest.mark.parametrize("thp_swap", [True, False])
def test_reclaim_ages_the_pmd_then_swaps_the_huge_page(thp_swap):
    sim = Simulator(thp_swap=thp_swap)
    mm, h = huge_process(sim)
    rec = sim.attach(Rec, mm)
    assert sim.do(sim.reclaim(mm, h, H)) == 0                 # young: kept
    assert rec.log == [("cfy", h, h + H, True)]               # under the PT lock, 2 MiB
    assert sim.do(sim.reclaim(mm, h, H)) == HPAGE_PMD_NR      # not young: reclaimed
    starts = rec.ranges()
    assert starts[0] == (h, h + H, "CLEAR")                   # the split
    if thp_swap:
        assert starts == [(h, h + H, "CLEAR")] * 2            # + the folio's one range
    else:
        assert len(starts) == 1 + HPAGE_PMD_NR                # + one per small page
    assert sim.do(mm.read(h + 3 * P)) == 30
    clean(sim)


# ---------------------------------------------------------------------------- migration
@pytest.mark.parametrize("thp_migration", [True, False])
def test_migration_of_a_huge_page_per_era(thp_migration):
    sim = Simulator(thp_migration=thp_migration)
    mm, h = huge_process(sim)
    rec = sim.attach(Rec, mm)
    old = pte_pfn(pmd(mm, h))
    assert sim.do(sim.migrate(mm, h, H)) == HPAGE_PMD_NR
    if thp_migration:            # 4.14+: one 2 MiB range, a PMD migration entry
        assert rec.ranges() == [(h, h + H, "CLEAR")]
        assert pmd(mm, h) and pte_pfn(pmd(mm, h)) != old
    else:                        # split, then page by page
        assert rec.ranges()[0] == (h, h + H, "CLEAR") and len(rec.ranges()) == 513
        assert not pmd(mm, h)
    gens = sim.memory.frames.generation[old:old + HPAGE_PMD_NR]
    assert (gens > 0).all()                                   # every old frame was freed
    assert sim.do(mm.read(h + 3 * P)) == 30
    clean(sim)


def test_a_cpu_access_waits_for_a_pmd_migration_entry():
    sim = Simulator(schedule="round_robin")
    mm, h = huge_process(sim)

    class Peek(MMUNotifier):
        seen = None

        def invalidate_range_end(self, range):
            self.seen = pmd(self.mm, h)

    peek = sim.attach(Peek, mm)
    sim.spawn("mig", sim.migrate(mm, h, H))
    sim.spawn("cpu", mm.read(h + 3 * P))
    sim.run()
    assert peek.seen & PTE_MIGRATION and peek.seen & PTE_HUGE
    clean(sim)


def _split_while_migrating(seed, split_op):
    sim = Simulator(schedule="random", seed=seed)
    mm, h = huge_process(sim)                                  # 30 at h + 3 pages
    sim.do(mm.write(h + 9 * P, 9))
    old = pte_pfn(pmd(mm, h))
    box = {}

    def mig():
        box["migrated"] = yield from sim.migrate(mm, h, H)

    def split():
        yield from split_op(mm, h)
        box["read"] = yield from mm.read(h + 3 * P)

    sim.spawn("mig", mig())
    sim.spawn("split", split())
    res = sim.run()
    return sim, mm, h, old, box, res


@pytest.mark.parametrize("split_op", [
    lambda mm, h: mm.madvise(h + 5 * P, P, "dontneed"),
    lambda mm, h: mm.mprotect(h + 5 * P, P, "r")], ids=["dontneed", "mprotect"])
@pytest.mark.parametrize("seed", [2, 3, 18, 36])
def test_a_pmd_migration_entry_split_mid_migration_is_still_removed(split_op, seed):
    """A whole-THP migration (PMD migration entry) racing a split of that PMD (a partial
    MADV_DONTNEED or mprotect): ``__split_huge_pmd_locked`` turns the PMD migration entry
    into 512 PTE migration entries and ``remove_migration_ptes`` finds those too. Before,
    only a PMD entry was looked for: the PTE entries stayed, every access to them waited in
    ``migration_entry_wait`` for ever (Deadlock; seeds found by issue 13's load)."""
    sim, mm, h, old, box, res = _split_while_migrating(seed, split_op)
    assert not res.violations, [(v.kind, v.message) for v in res.violations]
    assert box["read"] == 30
    assert sim.do(mm.read(h + 9 * P)) == 9 and sim.do(mm.read(h + 6 * P)) == 0
    vpns = np.arange(h // P, h // P + HPAGE_PMD_NR)
    assert not (mm.pt.walk(vpns) & np.uint64(PTE_MIGRATION)).any()
    if box["migrated"] == HPAGE_PMD_NR:                        # moved: the old frames freed
        assert mm.lookup_pte(h + 3 * P) >> 12 != old + 3
    clean(sim)


# ---------------------------------------------------------------------------- khugepaged
def small_block(sim, young=True):
    mm = sim.new_process()
    base = sim.do(mm.mmap(2 * H, prot="rw", populate=True))
    h = (base + H - 1) & ~(H - 1)
    sim.do(mm.madvise(h, H, "hugepage"))
    sim.do(mm.write(h + 3 * P, 33))
    if not young:
        mm.pt.clear_young_range(h // P, (h + H) // P)
    return mm, h


def test_khugepaged_collapses_a_referenced_block():
    sim = Simulator()
    mm, h = small_block(sim, young=False)
    rec = sim.attach(Rec, mm)
    old = mm.lookup_pte(h + 3 * P) >> 12
    assert sim.do(sim.khugepaged(mm)) == 0                    # nothing referenced
    calls = [e for e in rec.log if e[0] == "test_young"]
    assert len(calls) == HPAGE_PMD_NR and all(e[2] for e in calls)   # under the PT lock
    rec.log.clear()
    rec.young = True                                          # the device used the pages
    assert sim.do(sim.khugepaged(mm)) == 1
    assert rec.ranges() == [(h, h + H, "CLEAR")]
    assert pmd(mm, h) and sim.do(mm.read(h + 3 * P)) == 33
    assert sim.memory.frames.refcount[old] == 0
    clean(sim)


def test_khugepaged_leaves_shared_and_swapped_blocks_alone():
    sim = Simulator()
    mm, h = small_block(sim)
    child = sim.do(mm.fork())
    assert sim.do(sim.khugepaged(mm)) == 0                    # pages mapped twice
    sim.do(child.exit())
    sim.do(sim.reclaim(mm, h + 3 * P, P, force=True))
    assert sim.do(sim.khugepaged(mm)) == 0                    # a swap entry
    clean(sim)


class SleepingTestYoung(MMUNotifier):
    """test_young takes a mutex (sleeps)."""

    def __init__(self, sim, mm):
        super().__init__(sim, mm)
        self.lock = sim.mutex("drv")

    def test_young(self, mm, address):
        with (yield self.lock):
            return False


def test_a_sleeping_test_young_is_caught_by_khugepaged():
    sim = Simulator()
    mm, h = small_block(sim, young=False)
    sim.attach(SleepingTestYoung, mm)
    sim.spawn("khugepaged", sim.khugepaged(mm))
    result = sim.run()
    assert "SleepInAtomic" in {v.kind for v in result.violations}


# ---------------------------------------------------------------------------- KSM, v2008
def test_ksm_splits_a_huge_page_it_merges_into():
    sim = Simulator()
    mm, h = huge_process(sim)
    other = sim.do(mm.mmap(P))
    sim.do(mm.write(other, 30))                  # the twin of the huge page's page 3
    assert sim.do(sim.ksm_merge(mm, h, 2 * H)) > 0
    assert not pmd(mm, h) and sim.do(mm.read(h + 3 * P)) == 30
    clean(sim)


def test_v2008_pmd_operations_use_2mib_ranges_not_invalidate_page():
    """4.12 (the last API with invalidate_page): the huge PMD paths bracket the change with
    range start/end over HPAGE_PMD_SIZE (do_huge_pmd_wp_page, __split_huge_pmd); a PTE-mapped
    THP is unmapped page by page, invalidate_page(address) for each 4 KiB."""
    sim = Simulator(notifier_api="v2008")
    mm, h = huge_process(sim)
    rec = sim.attach(Rec, mm)
    sim.do(mm.munmap(h + P, P))
    assert rec.log[0][:3] == ("start", h, h + H)


# ---------------------------------------------------------------------------- the blind spot
@pytest.mark.parametrize("scenario", ["thp-migration", "khugepaged-collapse"])
def test_first_page_only_driver_caught_only_with_huge_pages(scenario):
    """kvm_huge_first_page zaps one 4 KiB page of a 2 MiB range. Only PMD operations
    issue such ranges: with thp="never" the same scenario and schedules are clean."""
    cls = drivers.BUGGY["kvm_huge_first_page"]
    ex = explore(scenario, cls, "modern", strategy="random", schedules=30, seed=0)
    assert {f.kind for f in ex.findings} & {"UseAfterFree", "CrossMmAccess", "StaleRead"}
    ex = explore(scenario, cls, "modern", strategy="random", schedules=30, seed=0,
                 sim_options={"thp": "never"}, stop_at_first=False)
    assert not ex.findings, [(f.kind, f.violation.message) for f in ex.findings]


@pytest.mark.parametrize("scenario", ["thp-partial-munmap", "thp-migration", "thp-cow-after-fork",
                                      "khugepaged-collapse", "thp-reclaim"])
def test_reference_kvm_clean_on_huge_pages_in_both_cow_eras(scenario):
    for cow in ("split", "copy"):
        ex = explore(scenario, drivers.KVM, "modern", strategy="random", schedules=10,
                     seed=0, sim_options={"thp_cow": cow})
        assert not ex.findings, [(f.kind, f.violation.message) for f in ex.findings]


def test_populate_with_thp_always_maps_huge_pages_where_aligned():
    sim = Simulator(thp="always")
    mm = sim.new_process()
    buf = sim.do(mm.mmap(3 * H, prot="rw", addr=0x7F00_0010_0000, fixed=True, populate=True))
    assert [bool(pmd(mm, buf + k * H)) for k in range(3)] == [False, True, True]
    assert pmd(mm, 0x7F00_0020_0000) and pmd(mm, 0x7F00_0040_0000)
    assert mm.lookup_pte(buf) & PTE_WRITE and mm.lookup_pte(buf + 3 * H - P) & PTE_WRITE
    vpns, _ = mm.pt.iter_present(buf // P, (buf + 3 * H) // P)
    assert len(vpns) == 2 * 256 + 2                           # 4 KiB head and tail + 2 PMDs
    clean(sim)
