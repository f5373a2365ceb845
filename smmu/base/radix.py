"""Numba kernels for 4-level radix page tables kept in a shared node pool.

Data layout (every kernel takes these arrays explicitly; no jitclass, no Python objects)::

    nodes  uint64[capacity, 512]   one row per table node; node 0 is reserved and means "none"
    free   int64[capacity]         stack of free node indices; free[0:meta[M_NFREE]] are free,
                                   the top of the stack (next to be allocated) is the last one
    meta   int64[META_SIZE]        M_NFREE: free nodes on the stack, M_USED: allocated nodes
                                   (node 0 not counted), M_ENOMEM: set to 1 by a kernel that
                                   found the stack empty (the Python wrapper reserves capacity
                                   first, see ``nodes_needed``, so this flag is a safety net)

Why uint64: a leaf entry is an x86-style PTE word (``smmu.base.pte``), unsigned by definition.
Upper levels store child node indices in the same uint64 words (0 = no table). Inside the
kernels node indices are converted to int64 and PTE arithmetic uses uint64 constants only,
because numba turns mixed uint64/int64 arithmetic into float64.

A page table is a root node index (level 3, the PGD). A table at level L (3 = top, 0 = PTE
level) is indexed by ``(vpn >> (9 * L)) & 511``; vpn = va >> 12 and ``0 <= vpn < VPN_LIMIT``
(48-bit VA; user space is ``vpn < MAX_VPN``). Vpns outside that range read as 0 in
``pt_lookup``/``pt_walk`` and are clipped off the ranges of the range kernels.

PMD leaves (transparent huge pages): an entry of a level-1 table (the PMD table) is 0, the
index of a PTE table, or a huge PMD word (``PTE_HUGE`` set, bit 52, which no node index has):
the leaf itself, mapping 512 pages from its PFN. ``pt_lookup`` / ``pt_walk`` of a page under
it return the word with that page's PFN (first PFN + the page's index), ``PTE_HUGE`` kept, so
a walker sees 4 KiB entries; ``pt_set`` / ``pt_clear`` there change nothing and return that
synthesized word (the wrapper raises: split first). The range kernels see a huge PMD as one
entry reported at its first vpn: ``pt_iter_present`` reports it when the range overlaps it,
``pt_clear_range``, ``pt_protect_range`` and ``pt_copy_range`` change it only when the range
covers all of it (Linux splits a partly covered one first, ``__split_huge_pmd`` in
``zap_pmd_range`` / ``change_pmd_range``) and otherwise report it unchanged, so that the
wrapper can tell; the young kernels count and clear it as one entry. ``pt_set_pmd``,
``pt_lookup_pmd``, ``pt_split_pmd`` and ``pt_touch`` work on PMDs; a kernel that finds a huge
PMD where it needs a PTE table sets ``meta[M_HUGE]``.

Invariant kept by every kernel: a node on the free stack is all zeros. Tables are freed only
when empty (``pt_free_empty``) or after being zeroed (``pt_destroy``); ``_alloc_node`` zeroes
the row anyway.

Range kernels take ``[vpn0, vpn1)`` and write what they touched to caller-provided
``out_vpns`` (int64) / ``out_ptes`` (uint64). They stop as soon as the out arrays are full and
return the count; a caller that gets ``count == len(out_vpns)`` resumes at
``out_vpns[count - 1] + 1`` (``primary_mm.pagetable.PageTable`` does this). Every range walk
over entries goes through one iterator, ``_next_leaf`` (called once per 512-entry leaf; an
absent subtree is skipped in one step; inlined), and keeps its per-entry loop tight in the
kernel. The loops mask ``d0`` / ``d1`` with 511 (a no-op) so that the compiler knows the
entry index is in ``[0, 511]`` and drops numba's negative-index wraparound from the loop.
``pt_free_empty``, ``pt_count_tables`` and ``pt_destroy`` visit the upper levels themselves:
they free or count tables, not entries.

Allocation order (kernels and the pure-Python reference ``smmu.base.radix_ref`` agree on it so
tests can compare whole pools): tables are allocated top-down at the first non-zero entry that
needs them, in increasing vpn order; tables are freed in post-order, increasing vpn order.
"""

from __future__ import annotations

import numba
import numpy as np

from smmu.base.constants import LEVEL_BITS, LEVELS, PTRS_PER_TABLE
from smmu.base.pte import (PFN_SHIFT, PTE_HUGE, PTE_MIGRATION, PTE_PRESENT, PTE_SWAP,
                           PTE_SWP_EXCLUSIVE, PTE_WRITE, PTE_YOUNG)

#: first vpn beyond the 48-bit address space covered by a 4-level table
VPN_LIMIT = 1 << (LEVELS * LEVEL_BITS)

# meta slots
M_NFREE = 0
M_USED = 1
M_ENOMEM = 2
M_HUGE = 3       # set by a kernel that found a huge PMD where it needed a PTE table
META_SIZE = 4

# shifts of the vpn index at levels 3, 2, 1 (level 0 has shift 0)
_S3 = 3 * LEVEL_BITS
_S2 = 2 * LEVEL_BITS
_S1 = LEVEL_BITS
_IDX = PTRS_PER_TABLE - 1
_MASK3 = (1 << _S3) - 1      # vpn bits below a level-3 (root) entry
_MASK2 = (1 << _S2) - 1      # vpn bits below a level-2 entry

# uint64 constants (see the module docstring: never mix uint64 with int64 in numba)
_U0 = np.uint64(0)
_P = np.uint64(PTE_PRESENT)
_W = np.uint64(PTE_WRITE)
_Y = np.uint64(PTE_YOUNG)
_NOT_W = np.uint64(~PTE_WRITE & 0xFFFFFFFFFFFFFFFF)
_NOT_Y = np.uint64(~PTE_YOUNG & 0xFFFFFFFFFFFFFFFF)
_SWP = np.uint64(PTE_SWAP | PTE_MIGRATION)
_SWPX = np.uint64(PTE_SWP_EXCLUSIVE)
_NOT_SWPX = np.uint64(~PTE_SWP_EXCLUSIVE & 0xFFFFFFFFFFFFFFFF)
_FULL = np.uint64(0xFFFFFFFFFFFFFFFF)
_H = np.uint64(PTE_HUGE)
_NOT_H = np.uint64(~PTE_HUGE & 0xFFFFFFFFFFFFFFFF)
_PFN_SHIFT = np.uint64(PFN_SHIFT)
_FLAGS = np.uint64((1 << PFN_SHIFT) - 1)     # the flag bits of an entry (below the PFN)


def nodes_needed(vpn0: int, vpn1: int) -> int:
    """Worst-case number of new table nodes to populate every vpn of ``[vpn0, vpn1)``.

    One table per level-2, level-1 and level-0 slot that the range touches (the root always
    exists). ``PageTablePool.reserve`` grows the pool by at least this much before a kernel
    that allocates runs, so such kernels never run out midway.
    """
    if vpn1 <= vpn0:
        return 0
    last = vpn1 - 1
    return (
        ((last >> _S3) - (vpn0 >> _S3) + 1)
        + ((last >> _S2) - (vpn0 >> _S2) + 1)
        + ((last >> _S1) - (vpn0 >> _S1) + 1)
    )


# ----------------------------------------------------------------------------- helpers
# Called at most once per 512-entry leaf (never per page).


@numba.njit(cache=True)
def _alloc_node(nodes, free, meta):
    """Pop a node off the free stack and zero it; 0 (and meta[M_ENOMEM] = 1) when empty."""
    nfree = meta[M_NFREE]
    if nfree <= 0:
        meta[M_ENOMEM] = 1
        return 0
    n = free[nfree - 1]
    meta[M_NFREE] = nfree - 1
    meta[M_USED] += 1
    for i in range(PTRS_PER_TABLE):
        nodes[n, i] = _U0
    return n


@numba.njit(cache=True)
def _free_node(free, meta, n):
    nfree = meta[M_NFREE]
    free[nfree] = n
    meta[M_NFREE] = nfree + 1
    meta[M_USED] -= 1


@numba.njit(cache=True)
def _pmd_table(nodes, root, vpn):
    """The level-1 (PMD) table covering vpn, or 0 if a level above is missing."""
    n2 = np.int64(nodes[root, (vpn >> _S3) & _IDX])
    if n2 == 0:
        return 0
    return np.int64(nodes[n2, (vpn >> _S2) & _IDX])


@numba.njit(cache=True)
def _leaf(nodes, root, vpn):
    """Leaf (level-0) node covering vpn; 0 if some level is missing; -1 if a huge PMD
    covers vpn (its word is ``nodes[_pmd_table(...), (vpn >> 9) & 511]``)."""
    n1 = _pmd_table(nodes, root, vpn)
    if n1 == 0:
        return 0
    w = nodes[n1, (vpn >> _S1) & _IDX]
    if (w & _H) != _U0:
        return -1
    return np.int64(w)


@numba.njit(cache=True, inline="always")
def _sub(w, vpn):
    """The 4 KiB view of huge PMD word ``w`` at vpn: the word with that page's PFN."""
    return w + (np.uint64(vpn & _IDX) << _PFN_SHIFT)


@numba.njit(cache=True)
def _pmd_alloc(nodes, free, meta, root, vpn):
    """The level-1 (PMD) table covering vpn, allocating levels 2 and 1; 0 when out of
    nodes."""
    i3 = (vpn >> _S3) & _IDX
    n2 = np.int64(nodes[root, i3])
    if n2 == 0:
        n2 = _alloc_node(nodes, free, meta)
        if n2 == 0:
            return 0
        nodes[root, i3] = np.uint64(n2)
    i2 = (vpn >> _S2) & _IDX
    n1 = np.int64(nodes[n2, i2])
    if n1 == 0:
        n1 = _alloc_node(nodes, free, meta)
        if n1 == 0:
            return 0
        nodes[n2, i2] = np.uint64(n1)
    return n1


@numba.njit(cache=True)
def _leaf_alloc(nodes, free, meta, root, vpn):
    """Leaf node covering vpn, allocating missing tables top-down; 0 when out of nodes, -1
    under a huge PMD."""
    n1 = _pmd_alloc(nodes, free, meta, root, vpn)
    if n1 == 0:
        return 0
    i1 = (vpn >> _S1) & _IDX
    w = nodes[n1, i1]
    if (w & _H) != _U0:
        return -1                          # a huge PMD: no PTE table here
    n0 = np.int64(w)
    if n0 == 0:
        n0 = _alloc_node(nodes, free, meta)
        if n0 == 0:
            return 0
        nodes[n1, i1] = np.uint64(n0)
    return n0


@numba.njit(cache=True, inline="always")
def _next_leaf(nodes, root, vpn, last):
    """The range walks' one iterator: the first populated leaf (level-0) table, or huge PMD,
    that covers a vpn in ``[vpn, last]``, skipping each absent subtree in one step. Returns
    ``(leaf, base, d0, d1)``: the leaf's node, the vpn of its entry 0 and the first and last
    of its entries in the range; ``leaf == 0`` when there is none. A huge PMD comes as
    ``leaf == -n1``: its word is ``nodes[n1, (base >> 9) & 511]`` and covers ``base`` to
    ``base + 511`` (``d0 == 0`` and ``d1 == 511`` when the range covers it whole). Called once
    per leaf: the per-entry loop stays in the caller."""
    while vpn <= last:
        n2 = np.int64(nodes[root, (vpn >> _S3) & _IDX])
        if n2 == 0:
            vpn = ((vpn >> _S3) + 1) << _S3
            continue
        n1 = np.int64(nodes[n2, (vpn >> _S2) & _IDX])
        while n1 == 0:
            vpn = ((vpn >> _S2) + 1) << _S2
            if vpn > last or (vpn & _MASK3) == 0:
                break                      # past the range, or out of this level-2 table
            n1 = np.int64(nodes[n2, (vpn >> _S2) & _IDX])
        if n1 == 0:
            continue
        leaf = np.int64(nodes[n1, (vpn >> _S1) & _IDX])
        while leaf == 0:
            vpn = ((vpn >> _S1) + 1) << _S1
            if vpn > last or (vpn & _MASK2) == 0:
                break                      # past the range, or out of this level-1 table
            leaf = np.int64(nodes[n1, (vpn >> _S1) & _IDX])
        if leaf == 0:
            continue
        base = vpn - (vpn & _IDX)
        if (nodes[n1, (vpn >> _S1) & _IDX] & _H) != _U0:
            return -n1, base, vpn & _IDX, min(last - base, _IDX)
        return leaf, base, vpn & _IDX, min(last - base, _IDX)
    return 0, 0, 0, -1


@numba.njit(cache=True)
def _node_empty(nodes, n):
    for i in range(PTRS_PER_TABLE):
        if nodes[n, i] != _U0:
            return False
    return True


# ----------------------------------------------------------------------------- single page


@numba.njit(cache=True)
def pt_lookup(nodes, root, vpn):
    """The entry for vpn (0 when absent or vpn out of range); under a huge PMD, the PMD
    word with the page's PFN (``PTE_HUGE`` kept)."""
    if vpn < 0 or vpn >= VPN_LIMIT:
        return _U0
    n1 = _pmd_table(nodes, root, vpn)
    if n1 == 0:
        return _U0
    w = nodes[n1, (vpn >> _S1) & _IDX]
    if (w & _H) != _U0:
        return _sub(w, vpn)
    if w == _U0:
        return _U0
    return nodes[np.int64(w), vpn & _IDX]


@numba.njit(cache=True)
def pt_walk(nodes, root, vpns, out_ptes):
    """Batch lookup: out_ptes[i] = entry of vpns[i]. Returns how many were non-zero."""
    found = 0
    for k in range(vpns.shape[0]):
        vpn = vpns[k]
        pte = _U0
        if vpn >= 0 and vpn < VPN_LIMIT:
            n2 = np.int64(nodes[root, (vpn >> _S3) & _IDX])
            if n2 != 0:
                n1 = np.int64(nodes[n2, (vpn >> _S2) & _IDX])
                if n1 != 0:
                    w = nodes[n1, (vpn >> _S1) & _IDX]
                    if (w & _H) != _U0:
                        pte = _sub(w, vpn)
                    elif w != _U0:
                        pte = nodes[np.int64(w), vpn & _IDX]
        out_ptes[k] = pte
        if pte != _U0:
            found += 1
    return found


@numba.njit(cache=True)
def pt_set(nodes, free, meta, root, vpn, pte):
    """Store pte at vpn, allocating tables as needed; return the old entry.

    Storing 0 where no table exists allocates nothing. Out of nodes: nothing is stored,
    meta[M_ENOMEM] = 1 and 0 is returned. Under a huge PMD nothing is stored and the
    page's view of the PMD (``PTE_HUGE`` set) is returned.
    """
    if pte == _U0:
        leaf = _leaf(nodes, root, vpn)
        if leaf == 0:
            return _U0
    else:
        leaf = _leaf_alloc(nodes, free, meta, root, vpn)
        if leaf == 0:
            return _U0
    if leaf < 0:
        return _sub(nodes[_pmd_table(nodes, root, vpn), (vpn >> _S1) & _IDX], vpn)
    i = vpn & _IDX
    old = nodes[leaf, i]
    nodes[leaf, i] = pte
    return old


@numba.njit(cache=True)
def pt_clear(nodes, root, vpn):
    """Zero the entry at vpn and return what it held (tables are not freed). Under a huge
    PMD nothing changes and the page's view of the PMD is returned."""
    leaf = _leaf(nodes, root, vpn)
    if leaf == 0:
        return _U0
    if leaf < 0:
        return _sub(nodes[_pmd_table(nodes, root, vpn), (vpn >> _S1) & _IDX], vpn)
    i = vpn & _IDX
    old = nodes[leaf, i]
    nodes[leaf, i] = _U0
    return old


# ----------------------------------------------------------------------------- ranges


@numba.njit(cache=True)
def pt_map_range(nodes, free, meta, root, vpn0, ptes):
    """Store ptes[i] at vpn0 + i for every i (sequential map). Returns how many non-zero
    entries were overwritten.

    The current leaf is cached per 512-entry block and the per-page loop is a plain copy.
    A block whose new entries are all 0 and that has no table is skipped without allocating.
    Out of nodes: stops, meta[M_ENOMEM] = 1. A block under a huge PMD: stops,
    meta[M_HUGE] = 1.
    """
    n = ptes.shape[0]
    replaced = 0
    i = 0
    vpn = vpn0
    while i < n:
        j0 = vpn & _IDX
        k_end = i + (PTRS_PER_TABLE - j0)
        k_end = min(k_end, n)
        leaf = _leaf(nodes, root, vpn)
        if leaf < 0:
            meta[M_HUGE] = 1
            return replaced
        if leaf == 0:
            nonzero = False
            for k in range(i, k_end):
                if ptes[k] != _U0:
                    nonzero = True
                    break
            if not nonzero:
                vpn += k_end - i
                i = k_end
                continue
            leaf = _leaf_alloc(nodes, free, meta, root, vpn)
            if leaf == 0:
                return replaced
        j = j0
        for k in range(i, k_end):
            if nodes[leaf, j] != _U0:
                replaced += 1
            nodes[leaf, j] = ptes[k]
            j += 1
        vpn += k_end - i
        i = k_end
    return replaced


@numba.njit(cache=True)
def pt_clear_range(nodes, root, vpn0, vpn1, out_vpns, out_ptes):
    """Zero every non-zero entry (present, swap or migration) in [vpn0, vpn1) and report each
    (vpn, old entry, dirty bit included). A huge PMD is one entry (its first vpn, its word),
    zeroed only when the range covers it whole (reported unchanged otherwise). Stops when
    the out arrays are full."""
    vpn0 = max(vpn0, 0)
    vpn1 = min(vpn1, VPN_LIMIT)
    cap = out_vpns.shape[0]
    cnt = 0
    if vpn1 <= vpn0 or cap == 0:
        return 0
    last = vpn1 - 1
    leaf, base0, d0, d1 = _next_leaf(nodes, root, vpn0, last)
    while leaf != 0:
        if leaf < 0:
            c = (base0 >> _S1) & _IDX
            out_vpns[cnt] = base0
            out_ptes[cnt] = nodes[-leaf, c]
            if d0 == 0 and d1 == _IDX:
                nodes[-leaf, c] = _U0
            cnt += 1
            if cnt == cap:
                return cnt
            leaf, base0, d0, d1 = _next_leaf(nodes, root, base0 + PTRS_PER_TABLE, last)
            continue
        for d in range(d0 & _IDX, (d1 & _IDX) + 1):
            pte = nodes[leaf, d]
            if pte != _U0:
                nodes[leaf, d] = _U0
                out_vpns[cnt] = base0 | d
                out_ptes[cnt] = pte
                cnt += 1
                if cnt == cap:
                    return cnt
        leaf, base0, d0, d1 = _next_leaf(nodes, root, base0 + PTRS_PER_TABLE, last)
    return cnt


@numba.njit(cache=True)
def pt_protect_range(nodes, root, vpn0, vpn1, clear_bits, set_bits, out_vpns, out_old):
    """For every present PTE in [vpn0, vpn1): pte = (pte & ~clear_bits) | set_bits.

    Non-present entries (swap, migration) are left alone. Reports (vpn, old pte) of each PTE
    whose value changed and returns their count. A present huge PMD is one entry, changed
    when the range covers it whole (``change_huge_pmd``), reported unchanged when it covers
    it in part. Stops when the out arrays are full.
    """
    vpn0 = max(vpn0, 0)
    vpn1 = min(vpn1, VPN_LIMIT)
    cap = out_vpns.shape[0]
    cnt = 0
    if vpn1 <= vpn0 or cap == 0:
        return 0
    keep = clear_bits ^ _FULL
    last = vpn1 - 1
    leaf, base0, d0, d1 = _next_leaf(nodes, root, vpn0, last)
    while leaf != 0:
        if leaf < 0:
            c = (base0 >> _S1) & _IDX
            pte = nodes[-leaf, c]
            if (pte & _P) != _U0:
                new = (pte & keep) | set_bits
                whole = d0 == 0 and d1 == _IDX
                if new != pte or not whole:
                    if whole:
                        nodes[-leaf, c] = new
                    out_vpns[cnt] = base0
                    out_old[cnt] = pte
                    cnt += 1
                    if cnt == cap:
                        return cnt
            leaf, base0, d0, d1 = _next_leaf(nodes, root, base0 + PTRS_PER_TABLE, last)
            continue
        for d in range(d0 & _IDX, (d1 & _IDX) + 1):
            pte = nodes[leaf, d]
            if (pte & _P) != _U0:
                new = (pte & keep) | set_bits
                if new != pte:
                    nodes[leaf, d] = new
                    out_vpns[cnt] = base0 | d
                    out_old[cnt] = pte
                    cnt += 1
                    if cnt == cap:
                        return cnt
        leaf, base0, d0, d1 = _next_leaf(nodes, root, base0 + PTRS_PER_TABLE, last)
    return cnt


@numba.njit(cache=True)
def pt_copy_range(nodes, free, meta, src_root, dst_root, vpn0, vpn1, cow, out_vpns, out_ptes):
    """Fork: copy every non-zero entry of [vpn0, vpn1) from src to dst (overwriting dst).

    If cow and the entry is writable (a present PTE, or a writable migration or
    device-private entry: ``copy_nonpresent_pte`` makes those readable in COW mappings too),
    PTE_WRITE is cleared in both source and destination. A swap or migration entry loses
    PTE_SWP_EXCLUSIVE in both (``copy_nonpresent_pte``: "Mark the swap entry as shared";
    an exclusive migration entry becomes a readable one).
    Reports (vpn, entry as written to dst); returns the count. Destination tables are
    allocated at the first entry a leaf needs. A huge PMD is copied as one entry when the
    range covers it whole (``copy_huge_pmd``; the destination gets a PMD, no PTE table) and
    reported uncopied otherwise; a destination that has a PTE table there stops the copy
    (meta[M_HUGE] = 1). Stops when the out arrays are full, or (meta[M_ENOMEM] = 1) when out
    of nodes.
    """
    vpn0 = max(vpn0, 0)
    vpn1 = min(vpn1, VPN_LIMIT)
    cap = out_vpns.shape[0]
    cnt = 0
    if vpn1 <= vpn0 or cap == 0:
        return 0
    last = vpn1 - 1
    leaf, base0, d0, d1 = _next_leaf(nodes, src_root, vpn0, last)
    while leaf != 0:
        if leaf < 0:
            c = (base0 >> _S1) & _IDX
            pte = nodes[-leaf, c]
            if d0 == 0 and d1 == _IDX:
                dn1 = _pmd_alloc(nodes, free, meta, dst_root, base0)
                if dn1 == 0:
                    return cnt
                if nodes[dn1, c] != _U0 and (nodes[dn1, c] & _H) == _U0:
                    meta[M_HUGE] = 1
                    return cnt
                if cow and (pte & _W) != _U0:
                    pte = pte & _NOT_W
                    nodes[-leaf, c] = pte
                nodes[dn1, c] = pte
            out_vpns[cnt] = base0
            out_ptes[cnt] = pte
            cnt += 1
            if cnt == cap:
                return cnt
            leaf, base0, d0, d1 = _next_leaf(nodes, src_root, base0 + PTRS_PER_TABLE, last)
            continue
        dleaf = 0
        first = d0 & _IDX                 # the destination leaf is allocated at the first
        while first <= d1 and nodes[leaf, first] == _U0:        # entry that needs it
            first += 1
        if first <= d1:
            dleaf = _leaf_alloc(nodes, free, meta, dst_root, base0)
            if dleaf < 0:
                meta[M_HUGE] = 1
                return cnt
            if dleaf == 0:
                return cnt
        for d in range(first, (d1 & _IDX) + 1):
            pte = nodes[leaf, d]
            if pte == _U0:
                continue
            if cow and (pte & _W) != _U0:
                pte = pte & _NOT_W
                nodes[leaf, d] = pte
            if (pte & _SWP) != _U0 and (pte & _SWPX) != _U0:
                pte = pte & _NOT_SWPX
                nodes[leaf, d] = pte
            nodes[dleaf, d] = pte
            out_vpns[cnt] = base0 | d
            out_ptes[cnt] = pte
            cnt += 1
            if cnt == cap:
                return cnt
        leaf, base0, d0, d1 = _next_leaf(nodes, src_root, base0 + PTRS_PER_TABLE, last)
    return cnt


@numba.njit(cache=True)
def pt_test_young_range(nodes, root, vpn0, vpn1):
    """Number of present PTEs in [vpn0, vpn1) with PTE_YOUNG set (nothing is changed); a
    young huge PMD the range overlaps counts once."""
    vpn0 = max(vpn0, 0)
    vpn1 = min(vpn1, VPN_LIMIT)
    cnt = 0
    if vpn1 <= vpn0:
        return 0
    last = vpn1 - 1
    leaf, base0, d0, d1 = _next_leaf(nodes, root, vpn0, last)
    while leaf != 0:
        if leaf < 0:
            pte = nodes[-leaf, (base0 >> _S1) & _IDX]
            if (pte & _P) != _U0 and (pte & _Y) != _U0:
                cnt += 1
            leaf, base0, d0, d1 = _next_leaf(nodes, root, base0 + PTRS_PER_TABLE, last)
            continue
        for d in range(d0 & _IDX, (d1 & _IDX) + 1):
            pte = nodes[leaf, d]
            if (pte & _P) != _U0 and (pte & _Y) != _U0:
                cnt += 1
        leaf, base0, d0, d1 = _next_leaf(nodes, root, base0 + PTRS_PER_TABLE, last)
    return cnt


@numba.njit(cache=True)
def pt_clear_young_range(nodes, root, vpn0, vpn1):
    """Clear PTE_YOUNG on every present PTE of [vpn0, vpn1); return how many had it set (a
    huge PMD the range overlaps is one: ``pmdp_test_and_clear_young``)."""
    vpn0 = max(vpn0, 0)
    vpn1 = min(vpn1, VPN_LIMIT)
    cnt = 0
    if vpn1 <= vpn0:
        return 0
    last = vpn1 - 1
    leaf, base0, d0, d1 = _next_leaf(nodes, root, vpn0, last)
    while leaf != 0:
        if leaf < 0:
            c = (base0 >> _S1) & _IDX
            pte = nodes[-leaf, c]
            if (pte & _P) != _U0 and (pte & _Y) != _U0:
                nodes[-leaf, c] = pte & _NOT_Y
                cnt += 1
            leaf, base0, d0, d1 = _next_leaf(nodes, root, base0 + PTRS_PER_TABLE, last)
            continue
        for d in range(d0 & _IDX, (d1 & _IDX) + 1):
            pte = nodes[leaf, d]
            if (pte & _P) != _U0 and (pte & _Y) != _U0:
                nodes[leaf, d] = pte & _NOT_Y
                cnt += 1
        leaf, base0, d0, d1 = _next_leaf(nodes, root, base0 + PTRS_PER_TABLE, last)
    return cnt


@numba.njit(cache=True)
def pt_iter_present(nodes, root, vpn0, vpn1, out_vpns, out_ptes):
    """Report every non-zero entry (present, swap or migration) of [vpn0, vpn1) in vpn order;
    a huge PMD the range overlaps is one entry at its first vpn. Stops when the out arrays
    are full."""
    vpn0 = max(vpn0, 0)
    vpn1 = min(vpn1, VPN_LIMIT)
    cap = out_vpns.shape[0]
    cnt = 0
    if vpn1 <= vpn0 or cap == 0:
        return 0
    last = vpn1 - 1
    leaf, base0, d0, d1 = _next_leaf(nodes, root, vpn0, last)
    while leaf != 0:
        if leaf < 0:
            out_vpns[cnt] = base0
            out_ptes[cnt] = nodes[-leaf, (base0 >> _S1) & _IDX]
            cnt += 1
            if cnt == cap:
                return cnt
            leaf, base0, d0, d1 = _next_leaf(nodes, root, base0 + PTRS_PER_TABLE, last)
            continue
        for d in range(d0 & _IDX, (d1 & _IDX) + 1):
            pte = nodes[leaf, d]
            if pte != _U0:
                out_vpns[cnt] = base0 | d
                out_ptes[cnt] = pte
                cnt += 1
                if cnt == cap:
                    return cnt
        leaf, base0, d0, d1 = _next_leaf(nodes, root, base0 + PTRS_PER_TABLE, last)
    return cnt


# ----------------------------------------------------------------------------- table lifetime


@numba.njit(cache=True)
def pt_free_empty(nodes, free, meta, root, vpn0, vpn1):
    """Free every table below the root that covers part of [vpn0, vpn1) and is empty, after
    its own children in the range were considered (post-order: an upper table made empty by
    freeing its children is freed too). The root is never freed. Returns tables freed.

    An empty table only partly inside the range is freed as well: it maps nothing.
    """
    vpn0 = max(vpn0, 0)
    vpn1 = min(vpn1, VPN_LIMIT)
    freed = 0
    if vpn1 <= vpn0:
        return 0
    last = vpn1 - 1
    a0 = vpn0 >> _S3
    a1 = last >> _S3
    for a in range(a0, a1 + 1):
        n2 = np.int64(nodes[root, a])
        if n2 == 0:
            continue
        b0 = (vpn0 >> _S2) & _IDX if a == a0 else 0
        b1 = (last >> _S2) & _IDX if a == a1 else _IDX
        for b in range(b0, b1 + 1):
            n1 = np.int64(nodes[n2, b])
            if n1 == 0:
                continue
            base1 = (a << _S3) | (b << _S2)
            c0 = (vpn0 >> _S1) & _IDX if base1 == (vpn0 >> _S2) << _S2 else 0
            c1 = (last >> _S1) & _IDX if base1 == (last >> _S2) << _S2 else _IDX
            for c in range(c0, c1 + 1):
                w = nodes[n1, c]
                if w == _U0 or (w & _H) != _U0:     # none, or a huge PMD (not a table)
                    continue
                leaf = np.int64(w)
                if _node_empty(nodes, leaf):
                    nodes[n1, c] = _U0
                    _free_node(free, meta, leaf)
                    freed += 1
            if _node_empty(nodes, n1):
                nodes[n2, b] = _U0
                _free_node(free, meta, n1)
                freed += 1
        if _node_empty(nodes, n2):
            nodes[root, a] = _U0
            _free_node(free, meta, n2)
            freed += 1
    return freed


@numba.njit(cache=True)
def pt_destroy(nodes, free, meta, root):
    """Free the whole table, root included, whatever it still maps (entries are discarded:
    the caller has already released what they referenced). Post-order, increasing index.
    Returns the number of nodes freed."""
    freed = 0
    for a in range(PTRS_PER_TABLE):
        n2 = np.int64(nodes[root, a])
        if n2 == 0:
            continue
        for b in range(PTRS_PER_TABLE):
            n1 = np.int64(nodes[n2, b])
            if n1 == 0:
                continue
            for c in range(PTRS_PER_TABLE):
                w = nodes[n1, c]
                if (w & _H) != _U0:                 # a huge PMD: a leaf, not a table
                    nodes[n1, c] = _U0
                    continue
                leaf = np.int64(w)
                if leaf == 0:
                    continue
                for d in range(PTRS_PER_TABLE):
                    nodes[leaf, d] = _U0
                nodes[n1, c] = _U0
                _free_node(free, meta, leaf)
                freed += 1
            nodes[n2, b] = _U0
            _free_node(free, meta, n1)
            freed += 1
        nodes[root, a] = _U0
        _free_node(free, meta, n2)
        freed += 1
    _free_node(free, meta, root)
    return freed + 1


@numba.njit(cache=True)
def pt_count_tables(nodes, root, vpn0, vpn1):
    """Number of tables below the root that cover part of [vpn0, vpn1) (levels 2, 1, 0).

    A copy of that range into another table never needs more new nodes than this, which
    bounds what ``PageTablePool.reserve`` must grow for a fork of a huge, sparse range.
    """
    vpn0 = max(vpn0, 0)
    vpn1 = min(vpn1, VPN_LIMIT)
    cnt = 0
    if vpn1 <= vpn0:
        return 0
    last = vpn1 - 1
    a0 = vpn0 >> _S3
    a1 = last >> _S3
    for a in range(a0, a1 + 1):
        n2 = np.int64(nodes[root, a])
        if n2 == 0:
            continue
        cnt += 1
        b0 = (vpn0 >> _S2) & _IDX if a == a0 else 0
        b1 = (last >> _S2) & _IDX if a == a1 else _IDX
        for b in range(b0, b1 + 1):
            n1 = np.int64(nodes[n2, b])
            if n1 == 0:
                continue
            cnt += 1
            base1 = (a << _S3) | (b << _S2)
            c0 = (vpn0 >> _S1) & _IDX if base1 == (vpn0 >> _S2) << _S2 else 0
            c1 = (last >> _S1) & _IDX if base1 == (last >> _S2) << _S2 else _IDX
            for c in range(c0, c1 + 1):
                if nodes[n1, c] != _U0 and (nodes[n1, c] & _H) == _U0:
                    cnt += 1
    return cnt


# ----------------------------------------------------------------------------- PMD leaves


@numba.njit(cache=True)
def pt_lookup_pmd(nodes, root, vpn):
    """The huge PMD word covering vpn (``pmd_trans_huge``: ``PTE_HUGE`` set), or 0 when the
    PMD slot is empty or holds a PTE table."""
    if vpn < 0 or vpn >= VPN_LIMIT:
        return _U0
    n1 = _pmd_table(nodes, root, vpn)
    if n1 == 0:
        return _U0
    w = nodes[n1, (vpn >> _S1) & _IDX]
    return w if (w & _H) != _U0 else _U0


@numba.njit(cache=True)
def pt_set_pmd(nodes, free, meta, root, vpn, word):
    """Store the huge PMD ``word`` (``PTE_HUGE`` set; 0 clears a huge PMD) in the PMD slot
    covering vpn, allocating levels 2 and 1; returns the huge word it replaced (0 if none).
    An empty PTE table in the slot is freed first (``pmd_none`` after ``free_pte_range``;
    khugepaged's collapse empties the table before it installs the PMD); a PTE table that
    still holds entries is left alone: nothing is stored, meta[M_HUGE] = 1. Out of nodes:
    nothing is stored, meta[M_ENOMEM] = 1."""
    if word == _U0:
        n1 = _pmd_table(nodes, root, vpn)
        if n1 == 0:
            return _U0
    else:
        n1 = _pmd_alloc(nodes, free, meta, root, vpn)
        if n1 == 0:
            return _U0
    c = (vpn >> _S1) & _IDX
    old = nodes[n1, c]
    if old != _U0 and (old & _H) == _U0:
        leaf = np.int64(old)
        if not _node_empty(nodes, leaf):
            meta[M_HUGE] = 1
            return _U0
        if word == _U0:
            return _U0
        _free_node(free, meta, leaf)
        old = _U0
    nodes[n1, c] = word
    return old


@numba.njit(cache=True)
def pt_split_pmd(nodes, free, meta, root, vpn, new_pfn, pfn_step):
    """``__split_huge_pmd_locked``: replace the huge PMD covering vpn by a PTE table of 512
    entries, entry i = the PMD's bits without ``PTE_HUGE`` and PFN ``new_pfn + i *
    pfn_step`` (``pfn_step`` 1 and the PMD's own PFN for a THP or a PMD migration entry; the
    4 KiB zero page with step 0 for the huge zero page). Returns the PMD word (0 when there
    is no huge PMD there: nothing done). Out of nodes: nothing changes, meta[M_ENOMEM] = 1."""
    n1 = _pmd_table(nodes, root, vpn)
    if n1 == 0:
        return _U0
    c = (vpn >> _S1) & _IDX
    w = nodes[n1, c]
    if (w & _H) == _U0:
        return _U0
    leaf = _alloc_node(nodes, free, meta)
    if leaf == 0:
        return _U0
    bits = w & _FLAGS
    pfn = np.uint64(new_pfn)
    step = np.uint64(pfn_step)
    for d in range(PTRS_PER_TABLE):
        nodes[leaf, d] = bits | ((pfn + np.uint64(d) * step) << _PFN_SHIFT)
    nodes[n1, c] = np.uint64(leaf)
    return w


@numba.njit(cache=True)
def pt_touch(nodes, root, vpn, bits):
    """``entry |= bits`` on the entry covering vpn (a PTE, or the huge PMD over it:
    ``pmd_mkyoung`` / ``pmd_mkdirty`` on access); returns the old entry as ``pt_lookup``
    would (0: nothing there, nothing done)."""
    n1 = _pmd_table(nodes, root, vpn)
    if n1 == 0:
        return _U0
    c = (vpn >> _S1) & _IDX
    w = nodes[n1, c]
    if (w & _H) != _U0:
        nodes[n1, c] = w | bits
        return _sub(w, vpn)
    if w == _U0:
        return _U0
    leaf = np.int64(w)
    old = nodes[leaf, vpn & _IDX]
    if old != _U0:
        nodes[leaf, vpn & _IDX] = old | bits
    return old


#: every public kernel, by name (the reference module defines the same names)
KERNELS = (
    "pt_lookup",
    "pt_walk",
    "pt_set",
    "pt_map_range",
    "pt_clear",
    "pt_clear_range",
    "pt_protect_range",
    "pt_copy_range",
    "pt_test_young_range",
    "pt_clear_young_range",
    "pt_free_empty",
    "pt_iter_present",
    "pt_destroy",
    "pt_count_tables",
    "pt_lookup_pmd",
    "pt_set_pmd",
    "pt_split_pmd",
    "pt_touch",
)
