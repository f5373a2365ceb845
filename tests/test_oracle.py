"""The coherence oracle: the structural-scan kernel against its Python reference, and the
oracle's checks on small hand-written drivers, each with a negative twin it must catch."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from primary_mm.pagetable import PageTable
from smmu._jit import radix_ref
from smmu.constants import PAGE_SIZE, PTE_PRESENT, PTE_WRITE
from smmu.oracle import (STALE_ABSENT, STALE_FREED, STALE_OTHER_PFN, STALE_WRITABLE,
                         SecondaryMap, scan_secondary, scan_secondary_ref)

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
