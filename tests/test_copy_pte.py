"""fork's page-table copy kernels (primary_mm.copy_pte) against their numpy reference
(primary_mm.copy_pte_ref) on copies of one frame table: the results, every frame array
after the call, and the error a bad entry raises."""

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from primary_mm.copy_pte import fork_dma_scan, fork_share
from primary_mm.copy_pte_ref import fork_dma_scan_ref, fork_share_ref
from primary_mm.frames import (FRAME_ANON, FRAME_ANON_EXCLUSIVE, FRAME_FILE, FrameStateError,
                               FrameTable)
from smmu.base.constants import HPAGE_PMD_NR
from smmu.base.pte import (PTE_DEVICE_EXCLUSIVE, PTE_DEVICE_PRIVATE, PTE_DIRTY, PTE_HUGE,
                           PTE_MIGRATION, PTE_PRESENT, PTE_PROTNONE, PTE_SPECIAL, PTE_SWAP,
                           PTE_WRITE, mk_pte)

NFRAMES = 2048
ARRAYS = ("refcount", "mapcount", "pincount", "flags", "generation", "owner", "meta")
#: bits an entry may carry (each drawn independently)
BITS = (PTE_PRESENT, PTE_WRITE, PTE_DIRTY, PTE_SPECIAL, PTE_SWAP, PTE_MIGRATION, PTE_PROTNONE,
        PTE_DEVICE_PRIVATE, PTE_DEVICE_EXCLUSIVE)


def table(data):
    """A frame table with small pages and one huge page allocated, some anonymous, some
    exclusive, some pinned; returns it and the pfns an entry may point at."""
    ft = FrameTable(NFRAMES)
    small = ft.alloc(data.draw(st.integers(1, 12), label="small pages")).tolist()
    head = ft.alloc_huge(flags=FRAME_ANON)
    for pfn in small:
        ft.flags[pfn] = data.draw(st.sampled_from(
            [0, FRAME_ANON, FRAME_ANON | FRAME_ANON_EXCLUSIVE, FRAME_FILE]))
        if data.draw(st.booleans(), label=f"pin {pfn}"):
            ft.pin(pfn)
    if data.draw(st.booleans(), label="pin a frame of the huge page"):
        ft.pin(head + data.draw(st.integers(0, HPAGE_PMD_NR - 1)))
    return ft, small, head


def entries(data, small, head, bad_ok):
    out = []
    for _ in range(data.draw(st.integers(0, 8), label="entries")):
        kind = data.draw(st.sampled_from(["small", "huge", "free", "beyond"] if bad_ok
                                         else ["small", "huge"]))
        bits = 0
        for b in BITS:
            if data.draw(st.booleans()):
                bits |= b
        if kind == "huge":
            out.append(mk_pte(head, bits | PTE_HUGE))
        elif kind == "small":
            out.append(mk_pte(data.draw(st.sampled_from(small)), bits))
        elif kind == "free":                      # a frame nobody allocated
            out.append(mk_pte(NFRAMES - 1, bits))
        else:                                     # beyond the table
            out.append(mk_pte(NFRAMES + 7, bits))
    return np.array(out, dtype=np.uint64)


def same_tables(a, b):
    for name in ARRAYS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fork_dma_scan_matches_reference(data):
    ft, small, head = table(data)
    ptes = entries(data, small, head, bad_ok=True)
    try:
        want = fork_dma_scan_ref(ptes, ft.pincount, ft.flags)
    except IndexError:
        want = None
    got = fork_dma_scan(ptes, ft.pincount, ft.flags)
    if want is None:
        assert got[1] == -1               # the caller then takes the reference's error
    else:
        assert (bool(got[0]), int(got[1]), int(got[2])) == want


@settings(max_examples=150, deadline=None)
@given(st.data(), st.booleans())
def test_fork_share_matches_reference(data, clear_exclusive):
    ft, small, head = table(data)
    ptes = entries(data, small, head, bad_ok=data.draw(st.booleans(), label="bad entries"))
    ref = copy.deepcopy(ft)
    try:
        want, want_err = fork_share_ref(ref, ptes, clear_exclusive), None
    except (FrameStateError, IndexError) as e:
        want, want_err = None, (type(e), str(e))
    got_err = None
    got = fork_share(ft.meta, ft.refcount, ft.mapcount, ft.pincount, ft.flags, ft.owner, ptes,
                     clear_exclusive)
    if got < 0:
        try:
            ft._raise_errors("get" if got == -1 else "inc_mapcount")
        except FrameStateError as e:
            got_err = (type(e), str(e))
    if want_err is not None and want_err[0] is IndexError:
        return                            # out of the table: the reference raised first
    assert got_err == want_err
    if want_err is None:
        assert got == want
        same_tables(ft, ref)


def test_fork_share_takes_every_frame_of_a_huge_pmd():
    ft = FrameTable(NFRAMES)
    head = ft.alloc_huge(flags=FRAME_ANON | FRAME_ANON_EXCLUSIVE, owner=3)
    ptes = np.array([mk_pte(head, PTE_PRESENT | PTE_HUGE)], dtype=np.uint64)
    assert fork_share(ft.meta, ft.refcount, ft.mapcount, ft.pincount, ft.flags, ft.owner,
                      ptes, True) == 0
    blk = slice(head, head + HPAGE_PMD_NR)
    assert (ft.refcount[blk] == 2).all() and (ft.mapcount[blk] == 1).all()
    assert (ft.owner[blk] == -1).all() and not (ft.flags[blk] & FRAME_ANON_EXCLUSIVE).any()


@pytest.mark.parametrize("pinned", [False, True])
def test_fork_dma_scan_finds_a_pin_inside_a_huge_pmd(pinned):
    ft = FrameTable(NFRAMES)
    head = ft.alloc_huge(flags=FRAME_ANON)
    if pinned:
        ft.pin(head + 300)
    ptes = np.array([mk_pte(head, PTE_PRESENT | PTE_HUGE)], dtype=np.uint64)
    assert bool(fork_dma_scan(ptes, ft.pincount, ft.flags)[0]) is pinned
