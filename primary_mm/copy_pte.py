"""Kernels of fork's page-table copy (``copy_page_range`` -> ``copy_pte_range`` /
``copy_present_pte`` / ``copy_huge_pmd``, mm/memory.c and mm/huge_memory.c): the
bookkeeping around :meth:`PageTable.copy_range` as one Python->jit crossing each, where it
was a dozen numpy calls on arrays of one or two entries (``primary_mm.copy_pte_ref`` has
the numpy reference of each; tests/test_copy_pte.py runs both on copies of one state).

* :func:`fork_dma_scan` reads the entries of the range once before the copy: does a huge
  PMD hold a maybe-pinned frame (5.9+ ``copy_huge_pmd``: "if
  (unlikely(page_needs_cow_for_dma(src_vma, src_page)))" splits it), how many mapped
  anonymous pages are maybe pinned (``copy_present_page`` copies those for the child), how
  many device-exclusive entries there are (``copy_nonpresent_pte`` restores them first).
* :func:`fork_share` does what the copied entries cost the frames: each mapped page (each
  of the 512 frames of a huge PMD) gets a reference and a mapcount (``get_page`` +
  ``page_dup_rmap``), an anonymous one is COW-shared (no owner) and loses
  PageAnonExclusive (``page_try_dup_anon_rmap``: "It's okay to share the anon page between
  both processes, mapping the page R/O into both processes"); returns how many swap entries
  were copied (``swap_duplicate`` is the caller's).
"""

from __future__ import annotations

import numba
import numpy as np

from primary_mm.frames import FRAME_ANON, FRAME_ANON_EXCLUSIVE, frames_get, frames_mapcount_add
from smmu.base.constants import HPAGE_PMD_NR
from smmu.base.pte import (PFN_MASK, PFN_SHIFT, PTE_DEVICE_EXCLUSIVE, PTE_HUGE, PTE_MAPPED,
                           PTE_MIGRATION, PTE_SPECIAL, PTE_SWAP)

_U = np.uint64
_MAPPED = _U(PTE_MAPPED)
_UNMAPPED = _U(PTE_SPECIAL | PTE_SWAP | PTE_MIGRATION)   # special, swap, migration entries
_SPECIAL = _U(PTE_SPECIAL)
_HUGE = _U(PTE_HUGE)
_SWAP = _U(PTE_SWAP)
_EXCL = _U(PTE_DEVICE_EXCLUSIVE)
_PFN_MASK = _U(PFN_MASK)
_PFN_SHIFT = _U(PFN_SHIFT)
_ANON = np.uint32(FRAME_ANON)
_NOT_ANON_EXCLUSIVE = np.uint32(~FRAME_ANON_EXCLUSIVE & 0xFFFFFFFF)
_U32_0 = np.uint32(0)


@numba.njit(cache=True, inline="always")
def _mapped(pte):
    """Does the entry hold a page reference and a mapcount (``smmu.base.pte.mapped_mask``):
    present, PROT_NONE or device-private, not special, not a swap or migration entry."""
    return (pte & _MAPPED) != _U(0) and (pte & _UNMAPPED) == _U(0)


@numba.njit(cache=True)
def fork_dma_scan(ptes, pincount, flags):
    """Over the entries ``ptes`` (uint64, as ``iter_present`` reports them: a huge PMD is
    one entry): ``(huge_pinned, npin, nexcl)``: whether a huge PMD that is not special has
    a frame with a pin among its 512, how many mapped entries point at an anonymous frame
    with a pin, how many entries are device-exclusive. ``npin`` is -1 when an entry points
    beyond the frame table (the caller's reference path raises for it)."""
    n = pincount.shape[0]
    huge_pinned = False
    npin = 0
    nexcl = 0
    for k in range(ptes.shape[0]):
        pte = ptes[k]
        if (pte & _EXCL) != _U(0):
            nexcl += 1
        pfn = np.int64((pte & _PFN_MASK) >> _PFN_SHIFT)
        if _mapped(pte):
            if pfn >= n:
                return False, -1, 0
            if pincount[pfn] > 0 and (flags[pfn] & _ANON) != _U32_0:
                npin += 1
        if (pte & _HUGE) != _U(0) and (pte & _SPECIAL) == _U(0) and not huge_pinned:
            for p in range(pfn, min(pfn + HPAGE_PMD_NR, n)):
                if pincount[p] > 0:
                    huge_pinned = True
                    break
    return huge_pinned, npin, nexcl


@numba.njit(cache=True)
def fork_share(meta, refcount, mapcount, pincount, flags, owner, ptes, clear_exclusive):
    """The frames' side of copying ``ptes`` (uint64, the entries as written to the child;
    a huge PMD is one entry) into a child: a reference and a mapcount on every frame a
    mapped entry maps (the small entries' first, then each huge PMD's 512), then every
    anonymous one of them loses its owner and, with ``clear_exclusive``, FRAME_ANON_EXCLUSIVE.
    Returns the number of swap entries among ``ptes``, or -1 if taking the references
    recorded an error in ``meta`` (``FrameTable.get``'s), -2 for the mapcounts
    (``inc_mapcount``'s); nothing after the failing step is done."""
    nsmall = 0
    nhuge = 0
    nswap = 0
    for k in range(ptes.shape[0]):
        pte = ptes[k]
        if (pte & _SWAP) != _U(0):
            nswap += 1
        if _mapped(pte):
            if (pte & _HUGE) != _U(0):
                nhuge += 1
            else:
                nsmall += 1
    pfns = np.empty(nsmall + nhuge * HPAGE_PMD_NR, dtype=np.int64)
    i = 0
    j = nsmall
    for k in range(ptes.shape[0]):
        pte = ptes[k]
        if _mapped(pte):
            pfn = np.int64((pte & _PFN_MASK) >> _PFN_SHIFT)
            if (pte & _HUGE) != _U(0):
                for s in range(HPAGE_PMD_NR):
                    pfns[j] = pfn + s
                    j += 1
            else:
                pfns[i] = pfn
                i += 1
    if frames_get(meta, refcount, pincount, pfns, False):
        return -1
    if frames_mapcount_add(meta, refcount, mapcount, pfns, 1):
        return -2
    for k in range(pfns.shape[0]):
        pfn = pfns[k]
        if (flags[pfn] & _ANON) != _U32_0:
            owner[pfn] = -1
            if clear_exclusive:
                flags[pfn] &= _NOT_ANON_EXCLUSIVE
    return nswap
