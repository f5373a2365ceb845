"""The PTE kernels of smmu.base.pte against their pure-Python reference (smmu.base.pte_ref)
on random entry arrays: every kind of entry, huge ones included, and the zap's use of it
(release_entries) on real page tables."""

from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st

from primary_mm.frames import FRAME_FILE
from smmu import PAGE_SIZE, Simulator
from smmu.base import pte_ref
from smmu.base.constants import HPAGE_PMD_NR
from smmu.base.pte import (PFN_SHIFT, PTE_DEVICE_EXCLUSIVE, PTE_DEVICE_PRIVATE, PTE_DIRTY,
                           PTE_HUGE, PTE_MIGRATION, PTE_PRESENT, PTE_PROTNONE, PTE_SPECIAL,
                           PTE_SWAP, PTE_WRITE, exclusive_pfns, expand_huge, mapped_mask,
                           mapped_pfns, release_scan, swap_slots)

NFRAMES = 4 * HPAGE_PMD_NR
#: the entry kinds a zap meets
KINDS = (PTE_PRESENT, PTE_PRESENT | PTE_WRITE | PTE_DIRTY, PTE_PRESENT | PTE_SPECIAL,
         PTE_PROTNONE | PTE_DIRTY, PTE_SWAP, PTE_MIGRATION | PTE_WRITE,
         PTE_DEVICE_PRIVATE | PTE_DIRTY, PTE_DEVICE_EXCLUSIVE, 0)


@st.composite
def entries(draw):
    words = []
    for _ in range(draw(st.integers(0, 40))):
        huge = draw(st.integers(0, 9)) == 0
        kind = draw(st.sampled_from(KINDS))
        if huge:
            kind = draw(st.sampled_from((PTE_PRESENT | PTE_DIRTY, PTE_PRESENT,
                                         PTE_PRESENT | PTE_SPECIAL, PTE_MIGRATION)))
            pfn = draw(st.integers(0, NFRAMES // HPAGE_PMD_NR - 1)) * HPAGE_PMD_NR
            kind |= PTE_HUGE
        else:
            pfn = draw(st.integers(0, NFRAMES - 1))
        words.append((pfn << PFN_SHIFT) | kind)
    flags = np.zeros(NFRAMES, dtype=np.uint32)          # file pages: a pattern and a few
    flags[draw(st.integers(0, 6))::draw(st.integers(2, 9))] = FRAME_FILE
    flags[draw(st.lists(st.integers(0, NFRAMES - 1), max_size=8))] = FRAME_FILE
    return np.asarray(words, dtype=np.uint64), flags


def numpy_composition(ptes, flags, file_bit):
    """What release_entries computed before the kernel, numpy pass by numpy pass."""
    ptes = expand_huge(ptes)
    pfns = mapped_pfns(ptes)
    dirty = (ptes[mapped_mask(ptes)] & np.uint64(PTE_DIRTY)) != 0
    dp = pfns[dirty]
    return pfns, dp[(flags[dp] & file_bit) != 0], swap_slots(ptes), exclusive_pfns(ptes)


@given(entries())
def test_release_scan_matches_reference_and_the_numpy_passes(case):
    ptes, flags = case
    got = release_scan(ptes, flags, FRAME_FILE)
    for other in (pte_ref.release_scan(ptes, flags, FRAME_FILE),
                  numpy_composition(ptes, flags, FRAME_FILE)):
        for a, b in zip(got, other):
            assert a.dtype == np.int64
            assert a.tolist() == np.asarray(b).tolist()


def test_release_scan_of_nothing():
    out = release_scan(np.zeros(0, dtype=np.uint64), np.zeros(4, dtype=np.uint32), 1)
    assert [len(a) for a in out] == [0, 0, 0, 0]


def test_zap_of_a_large_range_keeps_the_books():
    """release_entries on real page tables through the kernel: a populated mapping with
    huge pages, some of it swapped out, all zapped: the books balance, every data frame and
    every swap slot is freed."""
    sim = Simulator(notifier_api="modern", nframes=8192, thp="always")
    mm = sim.new_process()
    used0 = sim.memory.frames.nallocated
    buf = sim.do(mm.mmap(4 * 512 * PAGE_SIZE, prot="rw", populate=True))
    sim.do(sim.reclaim(mm, buf + 3 * 512 * PAGE_SIZE, 64 * PAGE_SIZE, force=True))
    assert sim.memory.check_invariants() == []
    sim.do(mm.madvise(buf, 4 * 512 * PAGE_SIZE, "dontneed"))
    assert sim.memory.check_invariants() == []
    assert len(mm.pt.iter_present()[0]) == 0
    assert not sim.memory.swap.used.any()                # every swap slot freed
    assert sim.memory.frames.nallocated <= used0 + 8     # page-table pages at most
