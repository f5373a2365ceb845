"""hugetlbfs and PMD-table sharing (primary_mm.hugetlb): huge_pmd_share between processes,
huge_pmd_unshare on unmap and in the migration walk, and the three eras of 017b1660df89."""

import pytest

import drivers
from smmu import Simulator
from smmu.base.constants import HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SHIFT, PAGE_SIZE, PUD_SIZE
from smmu.base.errors import InvalidArgument, UsageError
from smmu.base.pte import pte_pfn
from smmu.explore.search import explore
from smmu.sim.presets import kernel_preset
from tests.notifier_kit import Recorder

BASE = 4 * PUD_SIZE


def two_sharers(mode="unshare_wide", **kw):
    """Two processes mapping one hugetlbfs file over a PUD-aligned 1 GiB span each; the
    first faults pages 0 and 1, the second reads page 0 (and shares the first's table)."""
    sim = Simulator(hugetlb_pmd_unshare=mode, **kw)
    mem = sim.memory
    f = mem.new_hugetlbfs_file("db", PUD_SIZE // HPAGE_PMD_SIZE, fill=lambda i: 1000 + i)
    a, b = sim.new_process("a"), sim.new_process("b")
    va = sim.do(a.mmap(PUD_SIZE, shared=True, file=f, addr=BASE, fixed=True))
    vb = sim.do(b.mmap(PUD_SIZE, shared=True, file=f, addr=BASE + PUD_SIZE, fixed=True))
    sim.do(a.write(va + 5 * PAGE_SIZE, 7))
    sim.do(a.read(va + HPAGE_PMD_SIZE))
    assert sim.do(b.read(vb + 5 * PAGE_SIZE)) == 7
    return sim, f, a, b, va, vb


def test_second_mapping_shares_the_pmd_table_and_maps_each_page_once():
    sim, f, a, b, va, vb = two_sharers()
    mem = sim.memory
    node = a.pt.pmd_table(va >> PAGE_SHIFT)
    assert node and b.pt.pmd_table(vb >> PAGE_SHIFT) == node
    assert b.pt.pmd_shared(vb >> PAGE_SHIFT) and a.pt.pmd_shared(va >> PAGE_SHIFT)
    assert sorted(mem.pool.pmd_sharers[node]) == sorted(
        [(a.pt.root, va >> PAGE_SHIFT), (b.pt.root, vb >> PAGE_SHIFT)])
    # page 1 was faulted by a only, yet b sees it through the shared table
    assert b.pt.lookup_pmd((vb + HPAGE_PMD_SIZE) >> PAGE_SHIFT)
    head = f.cache[0]
    assert mem.frames.mapcount[head] == 1              # one PMD, whatever the sharers
    assert mem.check_invariants() == []
    # the pool checker accepts the table only as a registered share
    users = mem.pool.pmd_sharers.pop(node)
    assert any("more than once" in p for p in mem.check_invariants())
    mem.pool.pmd_sharers[node] = users


def test_munmap_unshares_and_the_other_sharer_keeps_its_entries():
    sim, f, a, b, va, vb = two_sharers()
    mem = sim.memory
    node = a.pt.pmd_table(va >> PAGE_SHIFT)
    sim.do(a.munmap(va, PUD_SIZE))
    assert a.pt.pmd_table(va >> PAGE_SHIFT) == 0 and not mem.pool.pmd_sharers
    assert b.pt.pmd_table(vb >> PAGE_SHIFT) == node
    assert sim.do(b.read(vb + 5 * PAGE_SIZE)) == 7
    assert mem.check_invariants() == []
    sim.do(b.exit())
    assert mem.check_invariants() == []
    assert mem.frames.mapcount[f.cache[0]] == 0        # the page cache keeps the page


def test_exit_of_the_first_sharer_leaves_the_table_to_the_second():
    sim, f, a, b, va, vb = two_sharers()
    sim.do(a.exit())
    assert sim.do(b.read(vb + 5 * PAGE_SIZE)) == 7
    assert sim.memory.check_invariants() == []


def migrate_first_page(mode):
    sim, f, a, b, va, vb = two_sharers(mode)
    ra, rb = sim.attach(Recorder, a), sim.attach(Recorder, b)
    old = f.cache[0]
    assert sim.do(sim.migrate(a, va, HPAGE_PMD_SIZE)) == HPAGE_PMD_NR
    assert f.cache[0] != old
    assert sim.do(a.read(va + 5 * PAGE_SIZE)) == 7 and sim.do(b.read(vb + 5 * PAGE_SIZE)) == 7
    assert sim.memory.check_invariants() == []
    starts = lambda r: [e[1:] for e in r.log if e[0] == "start"]   # noqa: E731
    return sim, a, b, va, vb, starts(ra), starts(rb)


def test_pre_4_19_walk_stops_at_the_first_sharer():
    """'none': the PMD in the shared table becomes a migration entry, the mapcount drops
    to 0 and the walk ends: the second sharer's notifier never hears of it."""
    sim, a, b, va, vb, sa, sb = migrate_first_page("none")
    assert sa == [(va, va + HPAGE_PMD_SIZE)] and sb == []
    assert b.pt.pmd_shared(vb >> PAGE_SHIFT)             # still shared


@pytest.mark.parametrize("mode", ["unshare_narrow", "unshare_wide"])
def test_unshare_drops_the_first_sharer_and_notifies_both(mode):
    sim, a, b, va, vb, sa, sb = migrate_first_page(mode)
    span = (va, va + PUD_SIZE) if mode == "unshare_wide" else (va, va + HPAGE_PMD_SIZE)
    assert sa[0] == span                                 # adjust_range_if_pmd_sharing_possible
    # the walk went on to b, whose table is no longer shared: a plain 2 MiB unmap there
    assert (vb, vb + PUD_SIZE) in sb or (vb, vb + HPAGE_PMD_SIZE) in sb
    assert sim.stats["hugetlb_pmd_unshared"] == 1


def test_soft_offline_of_an_unmapped_page_walks_nothing():
    sim, f, a, b, va, vb = two_sharers()
    sim.do(a.munmap(va, PUD_SIZE))
    sim.do(b.munmap(vb, PUD_SIZE))
    old = f.cache[HPAGE_PMD_NR]
    assert sim.do(sim.memory.soft_offline_page(old + 3)) == HPAGE_PMD_NR
    assert f.cache[HPAGE_PMD_NR] != old and sim.memory.frames.refcount[old] == 0
    assert f.value(HPAGE_PMD_NR) == 1000 + HPAGE_PMD_NR
    assert sim.memory.check_invariants() == []


def test_presets_and_bad_input():
    assert kernel_preset("4.18").options["hugetlb_pmd_unshare"] == "none"
    assert kernel_preset("4.19").options["hugetlb_pmd_unshare"] == "unshare_wide"
    with pytest.raises(UsageError, match="hugetlb_pmd_unshare"):
        Simulator(hugetlb_pmd_unshare="sometimes")
    sim = Simulator()
    f = sim.memory.new_hugetlbfs_file("db", 4)
    mm = sim.new_process()
    with pytest.raises(InvalidArgument, match="shared=True"):
        sim.do(mm.mmap(HPAGE_PMD_SIZE, file=f))
    with pytest.raises(InvalidArgument, match="2 MiB"):
        sim.do(mm.mmap(PAGE_SIZE, shared=True, file=f))
    assert mm.vmas == []
    buf = sim.do(mm.mmap(PAGE_SIZE))
    sim.do(mm.write(buf, 1))
    with pytest.raises(UsageError, match="hugetlb pages only"):
        sim.do(sim.memory.soft_offline_page(pte_pfn(mm.pt.lookup(buf >> PAGE_SHIFT))))


@pytest.mark.parametrize("options", [{"kernel": "4.18"},
                                     {"kernel": "4.19", "hugetlb_pmd_unshare": "unshare_narrow"}],
                         ids=["4.18-premature-stop", "4.19-narrow-unshare"])
def test_pre_fix_forms_caught_by_the_historical_scenario(options):
    """The pair's broken half is 4.18 (tests/test_catalogue.py runs it: the rmap walk stops
    at the first sharer); the unshare that notifies only the huge page's range, which no
    release had, fails the same scenario too."""
    kinds = set()
    for strategy in ("pct", "random"):
        ex = explore("hugetlb-shared-pmd-migration", drivers.BUILTIN["kvm"], "modern",
                     strategy=strategy, schedules=10, seed=0, sim_options=options)
        kinds |= {f.kind for f in ex.findings}
    assert kinds & {"UseAfterFree", "CrossMmAccess", "StaleMapping"}, kinds


def test_unmodelled_hugetlb_operations_are_refused_without_change():
    sim, f, a, b, va, vb = two_sharers()
    before = a.pt.lookup(va >> PAGE_SHIFT)
    for op in (a.mprotect(va, HPAGE_PMD_SIZE, "r"), a.madvise(va, HPAGE_PMD_SIZE, "dontneed"),
               a.mremap(va, HPAGE_PMD_SIZE, 2 * HPAGE_PMD_SIZE),
               sim.truncate(f, 0)):
        with pytest.raises(UsageError, match="not modelled"):
            sim.do(op)
    assert a.pt.lookup(va >> PAGE_SHIFT) == before and f.npages == PUD_SIZE // PAGE_SIZE
    assert sim.memory.check_invariants() == []
