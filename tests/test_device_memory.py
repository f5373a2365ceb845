"""Device memory and device access to process memory: migrate_vma and device-private pages,
the CPU fault that brings them back, make_device_exclusive_range, the hmm_range_fault
snapshot, MREMAP_DONTUNMAP. (The kernel's own HMM selftests are in test_hmm_selftests.py.)"""

from __future__ import annotations

import pytest

import drivers
from primary_mm.hmm import HMM_PFN_ERROR, HMM_PFN_REQ_FAULT, HMM_PFN_REQ_WRITE, HMM_PFN_VALID, \
    HMM_PFN_WRITE, HmmRange, hmm_pfn_to_pfn
from primary_mm.migrate_device import MIGRATE_VMA_SELECT_SYSTEM, MigrateVma
from smmu import MMUNotifier, PAGE_SIZE, Simulator
from smmu.base.constants import EFAULT, EINVAL, EPERM
from smmu.base.errors import InvalidArgument, SegmentationFault, UsageError
from smmu.base.pte import PTE_DEVICE_EXCLUSIVE, PTE_DEVICE_PRIVATE, PTE_PRESENT, PTE_WRITE
from smmu.notifier import Event

P = PAGE_SIZE


class Log(MMUNotifier):
    """Records every range start as (event, owner, start, end)."""

    name = "log"

    def __init__(self, sim, mm):
        super().__init__(sim, mm)
        self.log = []

    def invalidate_range_start(self, r):
        self.log.append((r.event, r.owner, r.start, r.end))


def setup(npages=4, values=(1, 2, 3, 4)):
    sim = Simulator(notifier_api="modern")
    mm = sim.new_process()
    buf = sim.do(mm.mmap(npages * P))
    for i, v in enumerate(values):
        sim.do(mm.write(buf + i * P, v))
    return sim, mm, buf


def dev_reads(sim, dev, buf, n):
    return [sim.do(dev.access(buf + i * P, write=False)) for i in range(n)]


def clean(sim):
    assert sim.violations == [], sim.violations[:3]
    assert sim.memory.check_invariants() == []
    assert sim.run().ok


# ------------------------------------------------------------------ the owner skip (issue 10)

def test_the_owner_skip_trap_is_closed():
    """Issue 10's trap: 4 pages holding 1..4 read by HMM_MIRROR, then a migration naming the
    mirror as owner. The mirror skipped its own MIGRATE range, nothing re-pointed its
    entries, and it then read [2, 3, 4, 4]. Now sim.migrate(owner=...) is refused; the
    reverse-map migration sends CLEAR with no owner, the mirror drops its entries and
    re-faults; the owner's own migrate_vma re-points them."""
    sim, mm, buf = setup()
    dev = sim.attach(drivers.HMM_MIRROR, mm)
    assert dev_reads(sim, dev, buf, 4) == [1, 2, 3, 4]
    with pytest.raises(UsageError, match="migrate_vma"):
        sim.do(sim.migrate(mm, buf, 4 * P, owner=dev))
    assert sim.do(sim.migrate(mm, buf, 4 * P)) == 4
    assert dev.translation(buf) is None                    # CLEAR: the mirror dropped it
    assert dev_reads(sim, dev, buf, 4) == [1, 2, 3, 4]
    sim.do(dev.access(buf + P, write=True, value=20))
    assert [sim.do(mm.read(buf + i * P)) for i in range(4)] == [1, 20, 3, 4]
    cmd = sim.do(dev.migrate_to_device(buf, 4))           # the owner's own migrate_vma
    assert cmd.ret == 0 and cmd.data == [1, 20, 3, 4]
    sim.do(dev.access(buf + 2 * P, write=True, value=30))  # lands in its own page
    assert dev_reads(sim, dev, buf, 4) == [1, 20, 30, 4]
    assert [sim.do(mm.read(buf + i * P)) for i in range(4)] == [1, 20, 30, 4]
    clean(sim)


def test_migrate_vma_events_collect_with_owner_unmap_without():
    """migrate_vma_collect: one MIGRATE range with the owner over the range; a page also
    mapped by another process is unmapped there by try_to_migrate (CLEAR, no owner)."""
    sim, mm, buf = setup(2, (5, 6))
    child = sim.do(mm.fork())
    sim.do(mm.write(buf, 7))                               # page 0 exclusive, page 1 shared
    log_p, log_c = sim.attach(Log, mm), sim.attach(Log, child)
    dev = sim.attach(drivers.HMM_MIRROR, mm)
    cmd = sim.do(dev.migrate_to_device(buf, 2))
    assert cmd.ret == 0 and cmd.data == [7, 6]
    assert log_p.log[0] == (Event.MIGRATE, dev, buf, buf + 2 * P)
    assert (Event.CLEAR, None, buf + P, buf + 2 * P) in log_c.log
    assert mm.lookup_pte(buf) & PTE_DEVICE_PRIVATE and mm.lookup_pte(buf + P) & \
        PTE_DEVICE_PRIVATE
    assert child.lookup_pte(buf + P) & PTE_DEVICE_PRIVATE  # the shared page moved for both
    assert sim.do(child.read(buf + P)) == 6 and sim.do(child.read(buf)) == 5
    assert sim.do(mm.read(buf)) == 7
    clean(sim)


def test_cpu_fault_migrates_back_and_frees_the_device_page():
    sim, mm, buf = setup(1, (9,))
    dev = sim.attach(drivers.HMM_MIRROR, mm)
    assert sim.do(dev.migrate_to_device(buf, 1)).ret == 0
    dpage = mm.pte_pfn(mm.lookup_pte(buf))
    assert dev.pgmap.live_pages() == [dpage]
    assert sim.do(mm.read(buf)) == 9                       # do_swap_page -> migrate_to_ram
    pte = mm.lookup_pte(buf)
    assert pte & PTE_PRESENT and pte & PTE_WRITE           # the writable entry came back
    assert dev.pgmap.live_pages() == []
    assert dev.translation(buf) is None                    # erased by the fault path
    clean(sim)


def test_fork_shares_device_pages_read_only_and_cow_breaks_after_migrating_back():
    sim, mm, buf = setup(1, (3,))
    dev = sim.attach(drivers.HMM_MIRROR, mm)
    assert sim.do(dev.migrate_to_device(buf, 1)).ret == 0
    child = sim.do(mm.fork())
    for m in (mm, child):       # copy_nonpresent_pte: readable device-private entries
        pte = m.lookup_pte(buf)
        assert pte & PTE_DEVICE_PRIVATE and not pte & PTE_WRITE
    sim.do(mm.write(buf, 4))
    assert sim.do(child.read(buf)) == 3 and sim.do(mm.read(buf)) == 4
    clean(sim)


def test_owner_write_to_its_read_only_device_page_is_efault_not_a_spin():
    """After fork write-protected the device-private entry, hmm_range_fault reports the
    owner's page as it is (valid, not writable: 6.8 hmm_vma_handle_pte) and dmirror_do_fault
    returns -EFAULT for the write (6.8 lib/test_hmm.c). The model used to map it read-only
    and fault again for ever (a Livelock the load scenario found)."""
    sim, mm, buf = setup(1, (3,))
    dev = sim.attach(drivers.HMM_MIRROR, mm)
    assert sim.do(dev.migrate_to_device(buf, 1)).ret == 0
    child = sim.do(mm.fork())
    with pytest.raises(SegmentationFault, match="returned -14"):
        sim.do(dev.access(buf, write=True, value=9))
    assert sim.do(dev.access(buf, write=False)) == 3     # reading it is fine
    assert mm.lookup_pte(buf) & PTE_DEVICE_PRIVATE       # nothing moved
    sim.do(child.exit())
    clean(sim)


def test_pinned_pages_are_not_migrated_to_the_device():
    sim, mm, buf = setup(2, (1, 2))
    dev = sim.attach(drivers.HMM_MIRROR, mm)
    pfn = sim.do(mm.pin_user_pages(buf, write=True))
    cmd = sim.do(dev.migrate_to_device(buf, 2))
    assert cmd.ret == -2                                   # -ENOENT: page 0 stayed
    assert mm.pte_pfn(mm.lookup_pte(buf)) == pfn and mm.lookup_pte(buf) & PTE_PRESENT
    assert mm.lookup_pte(buf + P) & PTE_DEVICE_PRIVATE
    sim.do(mm.unpin_user_page(pfn))
    clean(sim)


def test_reclaim_and_rmap_migration_pass_device_pages_by():
    sim, mm, buf = setup(2, (1, 2))
    dev = sim.attach(drivers.HMM_MIRROR, mm)
    assert sim.do(dev.migrate_to_device(buf, 2)).ret == 0
    assert sim.do(sim.reclaim(mm, buf, 2 * P, force=True)) == 0
    assert sim.do(sim.migrate(mm, buf, 2 * P)) == 0
    assert dev_reads(sim, dev, buf, 2) == [1, 2]
    clean(sim)


def test_migrate_vma_setup_errors():
    sim, mm, buf = setup(2, (1, 2))
    mem = sim.memory
    vma = mm.vma_at(buf)

    def run(args):
        def g():
            yield mm.mmap_lock.read()
            try:
                return (yield from mem.migrate_vma_setup(args))
            finally:
                mm.mmap_lock.up_read()
        return sim.do(g())
    assert run(MigrateVma(vma, buf, buf + 3 * P, pgmap_owner=None,
                          flags=MIGRATE_VMA_SELECT_SYSTEM)) == -EINVAL    # beyond the vma
    assert run(MigrateVma(vma, buf, buf, pgmap_owner=None,
                          flags=MIGRATE_VMA_SELECT_SYSTEM)) == -EINVAL    # empty
    with pytest.raises(UsageError, match="mmap_lock"):
        sim.do(mem.migrate_vma_setup(MigrateVma(vma, buf, buf + P, pgmap_owner=None,
                                                flags=MIGRATE_VMA_SELECT_SYSTEM)))
    old = Simulator(notifier_api="v2008")
    with pytest.raises(UsageError, match="modern"):
        old.memory.memremap_pages(object(), lambda vmf: 0)
    clean(sim)


# ------------------------------------------------------------------ device-exclusive entries

def test_make_device_exclusive_events_and_cpu_revocation():
    sim, mm, buf = setup(1, (8,))
    log = sim.attach(Log, mm)
    owner = object()

    def make():
        yield mm.mmap_lock.read()
        try:
            return (yield from mm.make_device_exclusive_range(buf, buf + P, owner))
        finally:
            mm.mmap_lock.up_read()
    (pfn,) = sim.do(make())
    assert pfn and mm.lookup_pte(buf) & PTE_DEVICE_EXCLUSIVE
    assert log.log[-1] == (Event.EXCLUSIVE, owner, buf, buf + P)
    assert sim.memory.frames.mapcount[pfn] == 0            # the entry holds a reference only
    sim.memory.unlock_page(pfn)
    sim.do(mm.put_page(pfn))
    assert not sim.memory.check_invariants()
    assert sim.do(mm.read(buf)) == 8                       # remove_device_exclusive_entry
    assert log.log[-1] == (Event.EXCLUSIVE, None, buf, buf + P)
    assert mm.lookup_pte(buf) & PTE_PRESENT and mm.pte_pfn(mm.lookup_pte(buf)) == pfn
    clean(sim)


def test_exclusive_needs_the_modern_api_and_mmap_lock():
    sim = Simulator(notifier_api="range_only")
    mm = sim.new_process()
    buf = sim.do(mm.mmap(P, populate=True))
    with pytest.raises(UsageError, match="modern"):
        sim.do(mm.make_device_exclusive_range(buf, buf + P))
    sim, mm, buf = setup(1, (1,))
    with pytest.raises(UsageError, match="mmap_lock"):
        sim.do(mm.make_device_exclusive_range(buf, buf + P))


# ------------------------------------------------------------------ hmm_range_fault

def _hrf(sim, mm, rng):
    def g():
        yield mm.mmap_lock.read()
        try:
            return (yield from mm.hmm_range_fault(rng))
        finally:
            mm.mmap_lock.up_read()
    return sim.do(g())


def test_hmm_range_fault_snapshot_faults_nothing():
    """Without HMM_PFN_REQ_FAULT: a missing page reads 0, a PROT_NONE one and a hole
    HMM_PFN_ERROR, a swapped-out one 0, a present one its pfn and rights; nothing is
    faulted in (6.8 mm/hmm.c: hmm_pte_need_fault returns 0)."""
    sim = Simulator(notifier_api="modern")
    mm = sim.new_process()
    buf = sim.do(mm.mmap(6 * P))
    sim.do(mm.write(buf, 1))                               # 0: present, writable
    sim.do(mm.read(buf + P))                               # 1: zero page, read-only
    sim.do(mm.write(buf + 2 * P, 2))
    sim.do(sim.reclaim(mm, buf + 2 * P, P, force=True))    # 2: swapped out
    sim.do(mm.munmap(buf + 4 * P, P))                      # 4: a hole; 3 never touched
    sim.do(mm.mprotect(buf + 5 * P, P, "none"))            # 5: PROT_NONE
    before = mm.snapshot()
    rng = HmmRange(buf, buf + 6 * P)
    assert _hrf(sim, mm, rng) == 0
    w = rng.hmm_pfns.tolist()
    assert w[0] & HMM_PFN_VALID and w[0] & HMM_PFN_WRITE
    assert hmm_pfn_to_pfn(w[0]) == mm.pte_pfn(mm.lookup_pte(buf))
    assert w[1] & HMM_PFN_VALID and not w[1] & HMM_PFN_WRITE
    assert hmm_pfn_to_pfn(w[1]) == sim.memory.zero_pfn
    assert w[2] == 0 and w[3] == 0
    assert w[4] == HMM_PFN_ERROR and w[5] == HMM_PFN_ERROR
    assert mm.snapshot() == before                         # nothing faulted in
    clean(sim)


def test_hmm_range_fault_errors_and_per_page_requests():
    sim = Simulator(notifier_api="modern")
    mm = sim.new_process()
    buf = sim.do(mm.mmap(2 * P, prot="r"))
    assert _hrf(sim, mm, HmmRange(buf, buf + 2 * P, default_flags=HMM_PFN_REQ_FAULT |
                                  HMM_PFN_REQ_WRITE)) == -EPERM
    assert _hrf(sim, mm, HmmRange(buf + 2 * P, buf + 3 * P,
                                  default_flags=HMM_PFN_REQ_FAULT)) == -EFAULT
    rng = HmmRange(buf, buf + 2 * P, pfn_flags_mask=HMM_PFN_REQ_FAULT)
    rng.hmm_pfns[1] = HMM_PFN_REQ_FAULT                     # fault only page 1
    assert _hrf(sim, mm, rng) == 0
    assert rng.hmm_pfns[0] == 0 and rng.hmm_pfns[1] & HMM_PFN_VALID
    with pytest.raises(UsageError, match="mmap_lock"):
        sim.do(mm.hmm_range_fault(HmmRange(buf, buf + P)))
    with pytest.raises(InvalidArgument):
        HmmRange(buf + 1, buf + P)


# ------------------------------------------------------------------ MREMAP_DONTUNMAP

def test_mremap_dontunmap_moves_and_leaves_the_old_range_empty():
    sim = Simulator(notifier_api="modern")
    mm = sim.new_process()
    buf = sim.do(mm.mmap(2 * P))
    sim.do(mm.write(buf, 5))
    sim.do(mm.write(buf + P, 6))
    log = sim.attach(Log, mm)
    dev = sim.attach(drivers.HMM_MIRROR, mm)
    assert sim.do(dev.access(buf, write=False)) == 5
    new = sim.do(mm.mremap(buf, 2 * P, 2 * P, dontunmap=True))
    assert new != buf and mm.vma_at(buf) is not None       # the old range stays mapped
    assert (Event.UNMAP, None, buf, buf + 2 * P) in log.log  # move_page_tables
    assert dev.translation(buf) is None
    assert sim.do(mm.read(new)) == 5 and sim.do(mm.read(new + P)) == 6
    assert sim.do(mm.read(buf)) == 0                       # fresh zero page
    assert sim.do(dev.access(buf, write=False)) == 0
    sim.do(mm.write(buf, 9))                               # a new anon_vma: its own page
    assert sim.do(mm.read(new)) == 5 and sim.do(mm.read(buf)) == 9
    clean(sim)


def test_mremap_dontunmap_refuses_resizing_and_changes_nothing():
    sim = Simulator(notifier_api="modern")
    mm = sim.new_process()
    buf = sim.do(mm.mmap(2 * P, populate=True))
    before = mm.snapshot()
    with pytest.raises(InvalidArgument, match="DONTUNMAP"):
        sim.do(mm.mremap(buf, 2 * P, 4 * P, dontunmap=True))
    assert mm.snapshot() == before


def test_mremap_dontunmap_of_a_file_mapping_reads_the_file_again():
    sim = Simulator(notifier_api="modern")
    mm = sim.new_process()
    f = sim.new_file("f", 2, fill=lambda i: 40 + i)
    buf = sim.do(mm.mmap(2 * P, file=f))
    sim.do(mm.write(buf, 1))                               # a private COW copy
    new = sim.do(mm.mremap(buf, 2 * P, 2 * P, dontunmap=True))
    assert sim.do(mm.read(new)) == 1 and sim.do(mm.read(new + P)) == 41
    assert sim.do(mm.read(buf)) == 40                      # the file page, not the copy
    clean(sim)


# ------------------------------------------------------------------ huge PMDs (6.8 splits them)

H = 2 << 20


def huge_setup(write=True):
    sim = Simulator(notifier_api="modern")
    mm = sim.new_process()
    base = sim.do(mm.mmap(2 * H))
    h = (base + H - 1) & ~(H - 1)
    sim.do(mm.madvise(h, H, "hugepage"))
    if write:
        for i in (0, 3, 9):
            sim.do(mm.write(h + i * P, 100 + i))
    else:
        sim.do(mm.read(h))
    assert mm.pt.lookup_pmd(h // P)                        # one huge PMD to begin with
    return sim, mm, h


def test_migrate_vma_splits_a_huge_page_and_migrates_its_pages():
    """6.8 migrate_vma_collect_pmd: get_page, trylock_page, split_huge_page, then the PTE
    walk; the split's 2 MiB CLEAR is nested in the MIGRATE range. Before, a huge PMD's pages
    were never collected ("FIXME support THP"): cpages 0, -ENOENT."""
    sim, mm, h = huge_setup()
    log = sim.attach(Log, mm)
    dev = sim.attach(drivers.HMM_MIRROR, mm)
    cmd = sim.do(dev.migrate_to_device(h, 16))
    assert cmd.ret == 0 and cmd.cpages == 16
    assert cmd.data[:10] == [100, 0, 0, 103, 0, 0, 0, 0, 0, 109]
    mig = log.log.index((Event.MIGRATE, dev, h, h + 16 * P))
    assert (Event.CLEAR, None, h, h + H) in log.log[mig + 1:]   # split inside the window
    assert not mm.pt.lookup_pmd(h // P)
    assert all(mm.lookup_pte(h + i * P) & PTE_DEVICE_PRIVATE for i in range(16))
    assert mm.lookup_pte(h + 16 * P) & PTE_PRESENT          # the rest of the 2 MiB stays
    assert sim.do(mm.read(h + 3 * P)) == 103 and sim.do(mm.read(h + 9 * P)) == 109
    clean(sim)


def test_migrate_vma_splits_the_huge_zero_page_pmd():
    """The huge zero page is split_huge_pmd'ed (512 zero-page PTEs), then collected like
    holes: the device gets fresh zeroed pages."""
    sim, mm, h = huge_setup(write=False)
    dev = sim.attach(drivers.HMM_MIRROR, mm)
    cmd = sim.do(dev.migrate_to_device(h, 4))
    assert cmd.ret == 0 and cmd.cpages == 4 and cmd.data == [0] * 4
    assert not mm.pt.lookup_pmd(h // P)
    assert all(mm.lookup_pte(h + i * P) & PTE_DEVICE_PRIVATE for i in range(4))
    assert sim.do(mm.read(h + 5 * P)) == 0 and sim.do(mm.read(h)) == 0
    clean(sim)


def test_make_device_exclusive_splits_a_huge_pmd():
    """FOLL_SPLIT_PMD: get_user_pages_remote splits the huge PMD (its 2 MiB CLEAR), so the
    pages become device-exclusive PTEs; the other 508 pages stay mapped."""
    sim, mm, h = huge_setup()
    log = sim.attach(Log, mm)
    dev = sim.attach(drivers.HMM_MIRROR, mm)
    cmd = sim.do(dev.exclusive(h, 4))
    assert cmd.ret == 0 and cmd.cpages == 4 and cmd.data == [100, 0, 0, 103]
    assert (Event.CLEAR, None, h, h + H) in log.log
    assert not mm.pt.lookup_pmd(h // P)
    assert all(mm.lookup_pte(h + i * P) & PTE_DEVICE_EXCLUSIVE for i in range(4))
    assert mm.lookup_pte(h + 9 * P) & PTE_PRESENT
    assert sim.do(mm.read(h + 3 * P)) == 103                # the CPU takes it back
    assert mm.lookup_pte(h + 3 * P) & PTE_PRESENT
    clean(sim)
