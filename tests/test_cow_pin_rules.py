"""Today's COW and pin rules under ``notifier_api="modern"`` (issue 9, item 4), and the
older ones kept selectable (docs/kernels.md): PageAnonExclusive (5.19), GUP unshare
of R/O pins, reclaim keeping pinned pages (5.11, 5.19), mprotect mapping exclusive pages
writable (6.0), R/O long-term pins of non-anonymous pages in COW mappings (6.2), fork
copying maybe-DMA-pinned pages (5.9).

The three reproductions of the issue, each with the PINNED driver (a long-term pin, no
notifier): clean under today's rules, and ``StaleRead`` under the rules of the kernels that
really had the bug (the negative twins)."""

import drivers
import pytest

from primary_mm.frames import FRAME_ANON_EXCLUSIVE
from smmu import PAGE_SIZE, Simulator
from smmu.base.pte import PTE_SWAP, PTE_SWP_EXCLUSIVE, PTE_WRITE

P = PAGE_SIZE

#: the rules of 5.9..5.10 (page_count reuse, fork copies pinned pages, nothing else)
RULES_5_9 = dict(anon_exclusive=False, reclaim_skips_pinned=False,
                 mprotect_writable_exclusive=False, unshare_longterm_ro_pins=False)


def _sim(**rules):
    sim = Simulator(notifier_api="modern", **rules)
    mm = sim.new_process("p")
    buf = sim.do(mm.mmap(P))
    sim.do(mm.write(buf, 1))
    return sim, mm, buf


def _ok(sim):
    problems = sim.memory.check_invariants()
    assert problems == [], problems


def _ro_pin_after_fork(**rules):
    """A read-only pin taken after fork, then the parent writes."""
    sim, mm, buf = _sim(**rules)
    child = sim.do(mm.fork())
    nic = sim.attach(drivers.PINNED, mm)
    sim.do(nic.register(buf, 1, write=False))
    sim.do(mm.write(buf, 2))
    seen = sim.do(nic.access(buf, write=False))
    assert sim.do(child.read(buf)) == 1
    return sim, seen, sim.run()


def test_ro_pin_after_fork_unshares_first_and_the_parents_write_reuses_the_pinned_page():
    """gup_must_unshare (5.19, a7f226604170): an R/O FOLL_PIN of a COW-shared anonymous
    page faults with FAULT_FLAG_UNSHARE first (the parent gets its own exclusive copy,
    read-only); the parent's write then reuses it (PageAnonExclusive)."""
    sim, seen, res = _ro_pin_after_fork()
    assert seen == 2 and res.ok, res.violations
    _ok(sim)


def test_twin_ro_pin_after_fork_under_5_9_rules_loses_the_parents_write_to_the_device():
    sim, seen, res = _ro_pin_after_fork(**RULES_5_9)
    assert seen == 1 and "StaleRead" in res.kinds(), res.violations


def _mprotect_cycle_after_writable_pin(**rules):
    """mprotect r -> rw after a writable pin, then a write."""
    sim, mm, buf = _sim(**rules)
    nic = sim.attach(drivers.PINNED, mm)
    sim.do(nic.register(buf, 1, write=True))
    sim.do(mm.mprotect(buf, P, "r"))
    sim.do(mm.mprotect(buf, P, "rw"))
    writable_at_once = bool(mm.lookup_pte(buf) & PTE_WRITE)
    sim.do(mm.write(buf, 3))
    seen = sim.do(nic.access(buf, write=False))
    return sim, writable_at_once, seen, sim.run()


@pytest.mark.parametrize("at_once", [True, False])
def test_mprotect_rw_of_a_writably_pinned_page_keeps_the_page(at_once):
    """6.0+ (can_change_pte_writable): mprotect maps the exclusive page writable at once;
    5.19 (``at_once=False``): the write fault reuses it because it is exclusive."""
    sim, writable, seen, res = _mprotect_cycle_after_writable_pin(
        mprotect_writable_exclusive=at_once)
    assert writable == at_once and seen == 3 and res.ok, res.violations
    _ok(sim)


def test_twin_mprotect_rw_under_5_9_rules_copies_the_pinned_page_away():
    sim, writable, seen, res = _mprotect_cycle_after_writable_pin(**RULES_5_9)
    assert not writable and seen == 1 and "StaleRead" in res.kinds(), res.violations


def _reclaim_swapin_write(**rules):
    """Reclaim plus swap-in of a pinned page, then a write."""
    sim, mm, buf = _sim(**rules)
    nic = sim.attach(drivers.PINNED, mm)
    sim.do(nic.register(buf, 1, write=True))
    sim.do(sim.reclaim(mm, buf, P, force=True))
    swapped = bool(mm.lookup_pte(buf) & PTE_SWAP)
    assert sim.do(mm.read(buf)) == 1
    sim.do(mm.write(buf, 4))
    seen = sim.do(nic.access(buf, write=False))
    return sim, swapped, seen, sim.run()


@pytest.mark.parametrize("skip", [True, False])
def test_reclaim_keeps_a_pinned_page_mapped(skip):
    """5.11 (feb889fb40fa): a maybe-pinned anonymous page is not added to the swap cache;
    5.19 (``skip=False``): ``try_to_unmap_one`` refuses it anyway
    (``page_try_share_anon_rmap``: -EBUSY for a maybe-pinned exclusive page)."""
    sim, swapped, seen, res = _reclaim_swapin_write(reclaim_skips_pinned=skip)
    assert not swapped and seen == 4 and res.ok, res.violations
    _ok(sim)


def test_twin_reclaim_and_swapin_of_a_pinned_page_under_5_9_rules_loses_the_write():
    sim, swapped, seen, res = _reclaim_swapin_write(**RULES_5_9)
    assert swapped and seen == 1 and "StaleRead" in res.kinds(), res.violations


# ----------------------------------------------------------------------------- the flag itself

def test_anon_exclusive_follows_fork_ksm_swap_and_migration():
    """Set on a new anonymous page; cleared when fork or KSM shares it; carried through
    swap (PTE_SWP_EXCLUSIVE) and migration; a writable anonymous PTE always maps an exclusive
    page (check_invariants says so)."""
    sim = Simulator(notifier_api="modern")
    mm = sim.new_process("p")
    a = sim.do(mm.mmap(3 * P))
    for i in range(3):
        sim.do(mm.write(a + i * P, 7))
    f = sim.memory.frames

    def excl(va):
        return bool(f.flags[mm.pte_pfn(mm.lookup_pte(va))] & FRAME_ANON_EXCLUSIVE)

    assert all(excl(a + i * P) for i in range(3))
    sim.do(sim.reclaim(mm, a, P, force=True))                    # swap-out: the entry keeps it
    assert mm.lookup_pte(a) & PTE_SWP_EXCLUSIVE
    assert sim.do(mm.read(a)) == 7 and excl(a)                   # swap-in restores it
    sim.do(sim.migrate(mm, a + P, P))
    assert excl(a + P)                                           # migration restores it
    assert sim.do(sim.ksm_merge(mm, a + P, 2 * P)) == 1
    assert not excl(a + P) and not excl(a + 2 * P)               # KSM shares
    child = sim.do(mm.fork())
    assert not excl(a)                                           # fork shares
    sim.do(mm.write(a, 8))                                       # COW: a new exclusive page
    assert excl(a) and sim.do(child.read(a)) == 7
    _ok(sim)


def test_fork_clears_the_exclusive_bit_of_swap_entries():
    """copy_nonpresent_pte: "Mark the swap entry as shared" in both parent and child, so
    neither swap-in maps the page writable without the COW checks."""
    sim = Simulator(notifier_api="modern")
    mm = sim.new_process("p")
    a = sim.do(mm.mmap(P))
    sim.do(mm.write(a, 5))
    sim.do(sim.reclaim(mm, a, P, force=True))
    assert mm.lookup_pte(a) & PTE_SWP_EXCLUSIVE
    child = sim.do(mm.fork())
    assert not mm.lookup_pte(a) & PTE_SWP_EXCLUSIVE
    assert not child.lookup_pte(a) & PTE_SWP_EXCLUSIVE
    sim.do(mm.write(a, 6))
    assert sim.do(child.read(a)) == 5 and sim.do(mm.read(a)) == 6
    _ok(sim)


def test_the_invariant_checker_catches_a_writable_shared_anonymous_page():
    """Negative twin of the invariant used above: a writable PTE of a page that is not
    PageAnonExclusive is reported."""
    sim = Simulator(notifier_api="modern")
    mm = sim.new_process("p")
    a = sim.do(mm.mmap(P))
    sim.do(mm.write(a, 5))
    sim.memory.frames.clear_flags(mm.pte_pfn(mm.lookup_pte(a)), FRAME_ANON_EXCLUSIVE)
    assert any("not PageAnonExclusive" in p for p in sim.memory.check_invariants())


def test_later_rules_need_anon_exclusive():
    with pytest.raises(Exception, match="build on PageAnonExclusive"):
        Simulator(notifier_api="modern", anon_exclusive=False)
    Simulator(notifier_api="modern", **RULES_5_9)
    sim = Simulator(notifier_api="v2008")
    assert not sim.memory.anon_exclusive and not sim.memory.fork_copies_pinned
