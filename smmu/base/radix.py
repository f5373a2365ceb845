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
from smmu.base.pte import (PTE_MIGRATION, PTE_PRESENT, PTE_SWAP, PTE_SWP_EXCLUSIVE, PTE_WRITE,
                           PTE_YOUNG)

#: first vpn beyond the 48-bit address space covered by a 4-level table
VPN_LIMIT = 1 << (LEVELS * LEVEL_BITS)

# meta slots
M_NFREE = 0
M_USED = 1
M_ENOMEM = 2
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
def _leaf(nodes, root, vpn):
    """Leaf (level-0) node covering vpn, or 0 if some level is missing."""
    n2 = np.int64(nodes[root, (vpn >> _S3) & _IDX])
    if n2 == 0:
        return 0
    n1 = np.int64(nodes[n2, (vpn >> _S2) & _IDX])
    if n1 == 0:
        return 0
    return np.int64(nodes[n1, (vpn >> _S1) & _IDX])


@numba.njit(cache=True)
def _leaf_alloc(nodes, free, meta, root, vpn):
    """Leaf node covering vpn, allocating missing tables top-down; 0 when out of nodes."""
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
    i1 = (vpn >> _S1) & _IDX
    n0 = np.int64(nodes[n1, i1])
    if n0 == 0:
        n0 = _alloc_node(nodes, free, meta)
        if n0 == 0:
            return 0
        nodes[n1, i1] = np.uint64(n0)
    return n0


@numba.njit(cache=True, inline="always")
def _next_leaf(nodes, root, vpn, last):
    """The range walks' one iterator: the first populated leaf (level-0) table that covers a
    vpn in ``[vpn, last]``, skipping each absent subtree in one step. Returns
    ``(leaf, base, d0, d1)``: the leaf's node, the vpn of its entry 0 and the first and last
    of its entries in the range; ``leaf == 0`` when there is none. Called once per leaf: the
    per-entry loop stays in the caller."""
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
    """The entry for vpn (0 when absent or vpn out of range)."""
    if vpn < 0 or vpn >= VPN_LIMIT:
        return _U0
    leaf = _leaf(nodes, root, vpn)
    if leaf == 0:
        return _U0
    return nodes[leaf, vpn & _IDX]


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
                    n0 = np.int64(nodes[n1, (vpn >> _S1) & _IDX])
                    if n0 != 0:
                        pte = nodes[n0, vpn & _IDX]
        out_ptes[k] = pte
        if pte != _U0:
            found += 1
    return found


@numba.njit(cache=True)
def pt_set(nodes, free, meta, root, vpn, pte):
    """Store pte at vpn, allocating tables as needed; return the old entry.

    Storing 0 where no table exists allocates nothing. Out of nodes: nothing is stored,
    meta[M_ENOMEM] = 1 and 0 is returned.
    """
    if pte == _U0:
        leaf = _leaf(nodes, root, vpn)
        if leaf == 0:
            return _U0
    else:
        leaf = _leaf_alloc(nodes, free, meta, root, vpn)
        if leaf == 0:
            return _U0
    i = vpn & _IDX
    old = nodes[leaf, i]
    nodes[leaf, i] = pte
    return old


@numba.njit(cache=True)
def pt_clear(nodes, root, vpn):
    """Zero the entry at vpn and return what it held (tables are not freed)."""
    leaf = _leaf(nodes, root, vpn)
    if leaf == 0:
        return _U0
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
    Out of nodes: stops, meta[M_ENOMEM] = 1.
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
    (vpn, old entry, dirty bit included). Stops when the out arrays are full."""
    vpn0 = max(vpn0, 0)
    vpn1 = min(vpn1, VPN_LIMIT)
    cap = out_vpns.shape[0]
    cnt = 0
    if vpn1 <= vpn0 or cap == 0:
        return 0
    last = vpn1 - 1
    leaf, base0, d0, d1 = _next_leaf(nodes, root, vpn0, last)
    while leaf != 0:
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
    whose value changed and returns their count. Stops when the out arrays are full.
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
    allocated at the first entry a leaf needs. Stops when the out arrays are full, or
    (meta[M_ENOMEM] = 1) when out of nodes.
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
        dleaf = 0
        first = d0 & _IDX                 # the destination leaf is allocated at the first
        while first <= d1 and nodes[leaf, first] == _U0:        # entry that needs it
            first += 1
        if first <= d1:
            dleaf = _leaf_alloc(nodes, free, meta, dst_root, base0)
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
    """Number of present PTEs in [vpn0, vpn1) with PTE_YOUNG set (nothing is changed)."""
    vpn0 = max(vpn0, 0)
    vpn1 = min(vpn1, VPN_LIMIT)
    cnt = 0
    if vpn1 <= vpn0:
        return 0
    last = vpn1 - 1
    leaf, base0, d0, d1 = _next_leaf(nodes, root, vpn0, last)
    while leaf != 0:
        for d in range(d0 & _IDX, (d1 & _IDX) + 1):
            pte = nodes[leaf, d]
            if (pte & _P) != _U0 and (pte & _Y) != _U0:
                cnt += 1
        leaf, base0, d0, d1 = _next_leaf(nodes, root, base0 + PTRS_PER_TABLE, last)
    return cnt


@numba.njit(cache=True)
def pt_clear_young_range(nodes, root, vpn0, vpn1):
    """Clear PTE_YOUNG on every present PTE of [vpn0, vpn1); return how many had it set."""
    vpn0 = max(vpn0, 0)
    vpn1 = min(vpn1, VPN_LIMIT)
    cnt = 0
    if vpn1 <= vpn0:
        return 0
    last = vpn1 - 1
    leaf, base0, d0, d1 = _next_leaf(nodes, root, vpn0, last)
    while leaf != 0:
        for d in range(d0 & _IDX, (d1 & _IDX) + 1):
            pte = nodes[leaf, d]
            if (pte & _P) != _U0 and (pte & _Y) != _U0:
                nodes[leaf, d] = pte & _NOT_Y
                cnt += 1
        leaf, base0, d0, d1 = _next_leaf(nodes, root, base0 + PTRS_PER_TABLE, last)
    return cnt


@numba.njit(cache=True)
def pt_iter_present(nodes, root, vpn0, vpn1, out_vpns, out_ptes):
    """Report every non-zero entry (present, swap or migration) of [vpn0, vpn1) in vpn order.
    Stops when the out arrays are full."""
    vpn0 = max(vpn0, 0)
    vpn1 = min(vpn1, VPN_LIMIT)
    cap = out_vpns.shape[0]
    cnt = 0
    if vpn1 <= vpn0 or cap == 0:
        return 0
    last = vpn1 - 1
    leaf, base0, d0, d1 = _next_leaf(nodes, root, vpn0, last)
    while leaf != 0:
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
                leaf = np.int64(nodes[n1, c])
                if leaf == 0:
                    continue
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
                leaf = np.int64(nodes[n1, c])
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
                if nodes[n1, c] != _U0:
                    cnt += 1
    return cnt


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
)
