"""The PTE format, in one place: the bits of a page-table entry and the helpers that decode
and build one. The primary MM, the radix kernels, the device structures, the drivers and the
oracle all read PTE words through this module.

A PTE is one unsigned 64-bit word laid out like x86's, trimmed to what the model needs::

    bit 0   PTE_PRESENT    translation valid (hardware may walk it)
    bit 1   PTE_WRITE      writable (clear on COW-shared and write-protected pages)
    bit 2   PTE_YOUNG      accessed bit (set on access, cleared by page_referenced)
    bit 3   PTE_DIRTY      dirty bit (set on write, harvested by page_mkclean/zap)
    bit 4   PTE_SWAP       not present: a swap entry, the PFN field holds the swap slot
    bit 5   PTE_MIGRATION  not present: a migration entry, the PFN field holds the old pfn
    bit 6   PTE_SPECIAL    the shared zero page (read-only, never refcounted)
    bit 7   PTE_PROTNONE   software bit: a PROT_NONE entry (x86's _PAGE_PROTNONE): not
                           present for hardware walkers (drivers, IOMMUs), but it still maps
                           its page
    bit 8   PTE_DEVICE_PRIVATE   not present: a device-private entry (``make_writable_/
                           readable_device_private_entry``), the PFN field holds the
                           ZONE_DEVICE page; like a present PTE it holds a reference and a
                           mapcount (``copy_nonpresent_pte``, ``zap_pte_range``)
    bit 9   PTE_DEVICE_EXCLUSIVE not present: a device-exclusive entry
                           (``make_device_exclusive_range``), the PFN field holds the system
                           page; it holds the page's reference but no mapcount
                           (``page_make_device_exclusive_one``: "There is a reference on the
                           page for the swap entry which has been removed, so shouldn't take
                           another", then ``folio_remove_rmap_pte``)
    bit 10  PTE_SWP_EXCLUSIVE    software bit of a swap or migration entry: the page was
                           PageAnonExclusive when it was unmapped (``pte_swp_mkexclusive``,
                           5.19 1493a1913e34; ``make_readable_exclusive_migration_entry``),
                           so the swap-in or the migration restore makes it exclusive again;
                           fork clears it (``copy_nonpresent_pte``: "Mark the swap entry as
                           shared")
    bits 12..51            PFN (or swap slot)
    bit 52  PTE_HUGE       a PMD-level entry mapping a 2 MiB page (x86's _PAGE_PSE; bit 7
                           is PTE_PROTNONE here). In a PMD table it is the leaf itself (its
                           PFN is the first of 512 contiguous frames); a lookup of one page
                           under it returns the PMD word with that page's PFN (first + the
                           page's index) and PTE_HUGE kept, so a walker sees 4 KiB entries

``PTE_WRITE`` on a non-present entry is the entry's write permission: a writable migration
entry (``make_writable_migration_entry``), a writable device-private or device-exclusive
entry. fork clears it in COW mappings, mprotect when it removes write, as for present PTEs.
"""

from __future__ import annotations

import numba
import numpy as np

from smmu.base.constants import HPAGE_PMD_NR

PTE_PRESENT = 1 << 0
PTE_WRITE = 1 << 1
PTE_YOUNG = 1 << 2
PTE_DIRTY = 1 << 3
PTE_SWAP = 1 << 4
PTE_MIGRATION = 1 << 5
PTE_SPECIAL = 1 << 6
PTE_PROTNONE = 1 << 7
PTE_DEVICE_PRIVATE = 1 << 8
PTE_DEVICE_EXCLUSIVE = 1 << 9
PTE_SWP_EXCLUSIVE = 1 << 10
PTE_HUGE = 1 << 52
#: entries that hold a page reference and a mapcount (unless PTE_SPECIAL)
PTE_MAPPED = PTE_PRESENT | PTE_PROTNONE | PTE_DEVICE_PRIVATE
#: entries a device may translate through although the CPU cannot: the owner's
#: device-private page, a page the device holds exclusively
PTE_DEVICE = PTE_DEVICE_PRIVATE | PTE_DEVICE_EXCLUSIVE
PTE_FLAGS_MASK = (1 << 12) - 1
PFN_SHIFT = 12
PFN_MASK = ((1 << 40) - 1) << PFN_SHIFT

_U = np.uint64
_PFN_MASK = _U(PFN_MASK)
_PFN_SHIFT = _U(PFN_SHIFT)
_BITS_MAPPED = _U(PTE_MAPPED)
_BITS_SPECIAL = _U(PTE_SPECIAL)
_BITS_NONPRESENT = _U(PTE_SWAP | PTE_MIGRATION)
_BITS_SWAP = _U(PTE_SWAP)
_BITS_EXCLUSIVE = _U(PTE_DEVICE_EXCLUSIVE)
_BITS_HUGE = _U(PTE_HUGE)
_SUBPAGES = np.arange(HPAGE_PMD_NR, dtype=np.uint64) << _U(PFN_SHIFT)


def pte_pfn(pte) -> int:
    """The frame (or swap slot / migration pfn) an entry points at."""
    return (int(pte) & PFN_MASK) >> PFN_SHIFT


def mk_pte(pfn: int, bits: int) -> int:
    """The entry mapping ``pfn`` with flag ``bits``."""
    return (int(pfn) << PFN_SHIFT) | bits


def pte_pfns(ptes: np.ndarray) -> np.ndarray:
    """The PFN field (int64) of every entry of a uint64 array (:func:`pte_pfn` vectorized)."""
    return ((ptes & _PFN_MASK) >> _PFN_SHIFT).astype(np.int64)


def mapped_mask(ptes: np.ndarray) -> np.ndarray:
    """Which entries hold a page reference and a mapcount: present, PROT_NONE or
    device-private, not the zero page, not swap/migration entries."""
    return ((ptes & _BITS_MAPPED) != 0) & ((ptes & (_BITS_SPECIAL | _BITS_NONPRESENT)) == 0)


def mapped_pfns(ptes: np.ndarray) -> np.ndarray:
    """pfns (int64) of the entries that hold a page reference (:func:`mapped_mask`).
    Duplicates kept (one per mapping)."""
    return pte_pfns(ptes[mapped_mask(ptes)])


def swap_mask(ptes: np.ndarray) -> np.ndarray:
    """Which entries are swap entries."""
    return (ptes & _BITS_SWAP) != 0


def swap_slots(ptes: np.ndarray) -> np.ndarray:
    """Swap slots (int64) of the swap entries among ``ptes``."""
    return pte_pfns(ptes[swap_mask(ptes)])


def exclusive_pfns(ptes: np.ndarray) -> np.ndarray:
    """pfns (int64) of the device-exclusive entries among ``ptes``: each holds a reference
    to its page but no mapcount."""
    return pte_pfns(ptes[(ptes & _BITS_EXCLUSIVE) != 0])


def huge_mask(ptes: np.ndarray) -> np.ndarray:
    """Which entries are PMD-level (huge) entries."""
    return (ptes & _BITS_HUGE) != 0


def expand_huge(ptes: np.ndarray) -> np.ndarray:
    """``ptes`` with every huge entry replaced by the 512 entries of its pages (the PMD word
    with each page's PFN), small entries first: what the entries map page by page (freeing,
    mapcounts). The same array when there is no huge entry."""
    huge = huge_mask(ptes)
    if not huge.any():
        return ptes
    sub = (ptes[huge][:, None] + _SUBPAGES[None, :]).ravel()
    return np.concatenate([ptes[~huge], sub])


# ------------------------------------------------------------------ the zap's bookkeeping
_I_SPECIAL_NONPRESENT = _BITS_SPECIAL | _BITS_NONPRESENT
_BITS_DIRTY = _U(PTE_DIRTY)


@numba.njit(cache=True)
def _release_scan(ptes, frame_flags, file_bit, huge_nr):
    n = ptes.shape[0]
    # sizes: each huge entry stands for huge_nr entries (expand_huge)
    nmapped = 0
    nswap = 0
    nexcl = 0
    for i in range(n):
        e = ptes[i]
        w = huge_nr if e & _BITS_HUGE else 1
        if (e & _BITS_MAPPED) != 0 and (e & _I_SPECIAL_NONPRESENT) == 0:
            nmapped += w
        if e & _BITS_SWAP:
            nswap += w
        if e & _BITS_EXCLUSIVE:
            nexcl += w
    pfns = np.empty(nmapped, dtype=np.int64)
    dirty = np.zeros(nmapped, dtype=np.bool_)
    slots = np.empty(nswap, dtype=np.int64)
    excl = np.empty(nexcl, dtype=np.int64)
    k = 0
    ks = 0
    kx = 0
    # small entries first, then the pages of each huge one: expand_huge's order
    for huge in (False, True):
        for i in range(n):
            e = ptes[i]
            if ((e & _BITS_HUGE) != 0) != huge:
                continue
            first = np.int64((e & _PFN_MASK) >> _PFN_SHIFT)
            w = huge_nr if huge else 1
            holds = (e & _BITS_MAPPED) != 0 and (e & _I_SPECIAL_NONPRESENT) == 0
            d = (e & _BITS_DIRTY) != 0
            for j in range(w):
                pfn = first + j
                if holds:
                    pfns[k] = pfn
                    dirty[k] = d and (frame_flags[pfn] & file_bit) != 0
                    k += 1
                if e & _BITS_SWAP:
                    slots[ks] = pfn
                    ks += 1
                if e & _BITS_EXCLUSIVE:
                    excl[kx] = pfn
                    kx += 1
    return pfns, pfns[dirty], slots, excl


def release_scan(ptes: np.ndarray, frame_flags: np.ndarray, file_bit: int):
    """What cleared entries held, in one pass (``zap_pte_range``'s per-entry bookkeeping):
    ``(pfns, dirty_file_pfns, swap_slots, exclusive_pfns)`` — the pages that lose a
    mapcount and a reference (:func:`mapped_pfns` of :func:`expand_huge`: small entries
    first, then the 512 pages of each huge entry; duplicates kept), those of them that are
    file pages (``frame_flags & file_bit``) mapped dirty, the swap slots of the swap
    entries, the pages of the device-exclusive entries. A numba kernel; the pure-Python
    reference is :func:`smmu.base.pte_ref.release_scan`."""
    if not len(ptes):
        z = np.zeros(0, dtype=np.int64)
        return z, z, z, z
    return _release_scan(np.ascontiguousarray(ptes, dtype=np.uint64), frame_flags,
                         np.uint32(file_bit), HPAGE_PMD_NR)
