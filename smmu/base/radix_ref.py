"""Pure-Python reference of the radix page-table kernels in ``smmu.base.radix``.

Same function names, signatures and semantics, written plainly (recursion, per-entry loops,
Python ints) so that the hypothesis tests can run both on copies of the same pool and compare
return values and the whole pool (nodes, free stack, meta) after every operation. That
requires the same allocation order (top-down at the first non-zero entry needing a table,
increasing vpn) and the same free order (post-order, increasing vpn), which is part of the
documented semantics.

Indexing is ``nodes[n][i]`` so the reference works on a numpy pool as well as on plain lists
of lists (the benchmark times it on lists: the fair pure-Python baseline).
"""

from __future__ import annotations

from smmu.base.radix import M_ENOMEM, M_HUGE, M_NFREE, M_USED, VPN_LIMIT
from smmu.base.constants import LEVEL_BITS, PTRS_PER_TABLE
from smmu.base.pte import (PFN_SHIFT, PTE_HUGE, PTE_MIGRATION, PTE_PRESENT, PTE_SWAP,
                           PTE_SWP_EXCLUSIVE, PTE_WRITE, PTE_YOUNG)

_IDX = PTRS_PER_TABLE - 1
_MASK64 = (1 << 64) - 1
_FLAGS = (1 << PFN_SHIFT) - 1


def _index(vpn, level):
    return (vpn >> (LEVEL_BITS * level)) & _IDX


def _alloc(nodes, free, meta):
    if meta[M_NFREE] <= 0:
        meta[M_ENOMEM] = 1
        return 0
    n = int(free[meta[M_NFREE] - 1])
    meta[M_NFREE] -= 1
    meta[M_USED] += 1
    row = nodes[n]
    for i in range(PTRS_PER_TABLE):
        row[i] = 0
    return n


def _release(free, meta, n):
    free[meta[M_NFREE]] = n
    meta[M_NFREE] += 1
    meta[M_USED] -= 1


def _huge(w):
    return bool(int(w) & PTE_HUGE)


def _sub(w, vpn):
    """The 4 KiB view of huge PMD word w at vpn."""
    return int(w) + ((vpn & _IDX) << PFN_SHIFT)


def _pmd(nodes, root, vpn, alloc=None):
    """(n1, slot): the PMD table covering vpn and vpn's slot in it; with alloc=(free, meta)
    missing tables above it are created; n1 == 0 when missing (or ENOMEM)."""
    n = root
    for level in (3, 2):
        i = _index(vpn, level)
        child = int(nodes[n][i])
        if child == 0:
            if alloc is None:
                return 0, 0
            child = _alloc(nodes, alloc[0], alloc[1])
            if child == 0:
                return 0, 0
            nodes[n][i] = child
        n = child
    return n, _index(vpn, 1)


def _leaf(nodes, root, vpn, alloc=None):
    """Leaf node for vpn; with alloc=(free, meta) missing tables are created (0 on ENOMEM);
    -1 when a huge PMD covers vpn."""
    n1, c = _pmd(nodes, root, vpn, alloc)
    if n1 == 0:
        return 0
    w = int(nodes[n1][c])
    if _huge(w):
        return -1
    if w == 0:
        if alloc is None:
            return 0
        w = _alloc(nodes, alloc[0], alloc[1])
        if w == 0:
            return 0
        nodes[n1][c] = w
    return w


def _entries(nodes, node, level, base, vpn0, vpn1):
    """Yield (vpn, leaf, index) of each non-zero entry of [vpn0, vpn1) below node, in order;
    a huge PMD is yielded as (its first vpn, its PMD table, its slot)."""
    if vpn1 <= vpn0:
        return
    span = 1 << (LEVEL_BITS * level)
    for i in range(PTRS_PER_TABLE):
        lo = base + i * span
        hi = lo + span
        if hi <= vpn0 or lo >= vpn1:
            continue
        value = int(nodes[node][i])
        if value == 0:
            continue
        if level == 0 or (level == 1 and _huge(value)):
            yield lo, node, i
        else:
            yield from _entries(nodes, value, level - 1, lo, vpn0, vpn1)


def _clip(vpn0, vpn1):
    return max(vpn0, 0), min(vpn1, VPN_LIMIT)


def pt_lookup(nodes, root, vpn):
    if vpn < 0 or vpn >= VPN_LIMIT:
        return 0
    n1, c = _pmd(nodes, root, vpn)
    if n1 == 0:
        return 0
    w = int(nodes[n1][c])
    if _huge(w):
        return _sub(w, vpn)
    return int(nodes[w][vpn & _IDX]) if w else 0


def _pmd_word(nodes, root, vpn):
    n1, c = _pmd(nodes, root, vpn)
    return int(nodes[n1][c])


def pt_walk(nodes, root, vpns, out_ptes):
    found = 0
    for k, vpn in enumerate(vpns):
        pte = pt_lookup(nodes, root, int(vpn))
        out_ptes[k] = pte
        found += pte != 0
    return found


def pt_set(nodes, free, meta, root, vpn, pte):
    pte = int(pte)
    leaf = _leaf(nodes, root, vpn, None if pte == 0 else (free, meta))
    if leaf == 0:
        return 0
    if leaf < 0:
        return _sub(_pmd_word(nodes, root, vpn), vpn)
    old = int(nodes[leaf][vpn & _IDX])
    nodes[leaf][vpn & _IDX] = pte
    return old


def pt_clear(nodes, root, vpn):
    leaf = _leaf(nodes, root, vpn)
    if leaf == 0:
        return 0
    if leaf < 0:
        return _sub(_pmd_word(nodes, root, vpn), vpn)
    old = int(nodes[leaf][vpn & _IDX])
    nodes[leaf][vpn & _IDX] = 0
    return old


def pt_map_range(nodes, free, meta, root, vpn0, ptes):
    replaced = 0
    for k, pte in enumerate(ptes):
        pte = int(pte)
        vpn = vpn0 + k
        leaf = _leaf(nodes, root, vpn)
        if leaf < 0:
            meta[M_HUGE] = 1
            return replaced
        if leaf == 0:
            # a block with only zeros to write allocates nothing (same rule as the kernel)
            block_end = min(len(ptes), k + PTRS_PER_TABLE - (vpn & _IDX))
            if all(int(p) == 0 for p in ptes[k:block_end]):
                continue
            leaf = _leaf(nodes, root, vpn, (free, meta))
            if leaf == 0:
                return replaced
        if int(nodes[leaf][vpn & _IDX]) != 0:
            replaced += 1
        nodes[leaf][vpn & _IDX] = pte
    return replaced


def _whole(vpn, vpn0, vpn1):
    """Does [vpn0, vpn1) cover the huge PMD starting at vpn?"""
    return vpn0 <= vpn and vpn + PTRS_PER_TABLE <= vpn1


def pt_clear_range(nodes, root, vpn0, vpn1, out_vpns, out_ptes):
    vpn0, vpn1 = _clip(vpn0, vpn1)
    cnt = 0
    if len(out_vpns) == 0:
        return 0
    for vpn, leaf, i in _entries(nodes, root, 3, 0, vpn0, vpn1):
        out_vpns[cnt] = vpn
        out_ptes[cnt] = int(nodes[leaf][i])
        if not _huge(nodes[leaf][i]) or _whole(vpn, vpn0, vpn1):
            nodes[leaf][i] = 0
        cnt += 1
        if cnt == len(out_vpns):
            break
    return cnt


def pt_protect_range(nodes, root, vpn0, vpn1, clear_bits, set_bits, out_vpns, out_old):
    vpn0, vpn1 = _clip(vpn0, vpn1)
    clear_bits, set_bits = int(clear_bits), int(set_bits)
    cnt = 0
    if len(out_vpns) == 0:
        return 0
    for vpn, leaf, i in _entries(nodes, root, 3, 0, vpn0, vpn1):
        pte = int(nodes[leaf][i])
        if not pte & PTE_PRESENT:
            continue
        new = (pte & ~clear_bits & _MASK64) | set_bits
        whole = not _huge(pte) or _whole(vpn, vpn0, vpn1)
        if new == pte and whole:
            continue
        if whole:
            nodes[leaf][i] = new
        out_vpns[cnt] = vpn
        out_old[cnt] = pte
        cnt += 1
        if cnt == len(out_vpns):
            break
    return cnt


def pt_copy_range(nodes, free, meta, src_root, dst_root, vpn0, vpn1, cow, out_vpns, out_ptes):
    vpn0, vpn1 = _clip(vpn0, vpn1)
    cnt = 0
    if len(out_vpns) == 0:
        return 0
    for vpn, leaf, i in _entries(nodes, src_root, 3, 0, vpn0, vpn1):
        pte = int(nodes[leaf][i])
        huge = _huge(pte)
        if huge and not _whole(vpn, vpn0, vpn1):
            dst = None                                   # reported, not copied
        elif huge:                                       # the destination's PMD slot
            dn1, c = _pmd(nodes, dst_root, vpn, (free, meta))
            if dn1 == 0:
                return cnt
            if int(nodes[dn1][c]) and not _huge(nodes[dn1][c]):
                meta[M_HUGE] = 1
                return cnt
            dst = (dn1, c)
        else:
            dleaf = _leaf(nodes, dst_root, vpn, (free, meta))
            if dleaf < 0:
                meta[M_HUGE] = 1
            if dleaf <= 0:
                return cnt
            dst = (dleaf, i)
        if dst is not None:
            if cow and pte & PTE_WRITE:
                pte &= ~PTE_WRITE
            if not huge and pte & (PTE_SWAP | PTE_MIGRATION) and pte & PTE_SWP_EXCLUSIVE:
                pte &= ~PTE_SWP_EXCLUSIVE
            nodes[leaf][i] = pte
            nodes[dst[0]][dst[1]] = pte
        out_vpns[cnt] = vpn
        out_ptes[cnt] = pte
        cnt += 1
        if cnt == len(out_vpns):
            break
    return cnt


def _young(pte):
    return bool(pte & PTE_PRESENT) and bool(pte & PTE_YOUNG)


def pt_test_young_range(nodes, root, vpn0, vpn1):
    vpn0, vpn1 = _clip(vpn0, vpn1)
    return sum(
        1 for _, leaf, i in _entries(nodes, root, 3, 0, vpn0, vpn1) if _young(int(nodes[leaf][i]))
    )


def pt_clear_young_range(nodes, root, vpn0, vpn1):
    vpn0, vpn1 = _clip(vpn0, vpn1)
    cnt = 0
    for _, leaf, i in _entries(nodes, root, 3, 0, vpn0, vpn1):
        pte = int(nodes[leaf][i])
        if _young(pte):
            nodes[leaf][i] = pte & ~PTE_YOUNG
            cnt += 1
    return cnt


def pt_iter_present(nodes, root, vpn0, vpn1, out_vpns, out_ptes):
    vpn0, vpn1 = _clip(vpn0, vpn1)
    cnt = 0
    if len(out_vpns) == 0:
        return 0
    for vpn, leaf, i in _entries(nodes, root, 3, 0, vpn0, vpn1):
        out_vpns[cnt] = vpn
        out_ptes[cnt] = int(nodes[leaf][i])
        cnt += 1
        if cnt == len(out_vpns):
            break
    return cnt


def _is_empty(nodes, n):
    return all(int(v) == 0 for v in nodes[n])


def _free_empty(nodes, free, meta, node, level, base, vpn0, vpn1):
    """Post-order over the children of node (a table at `level`) that overlap the range."""
    freed = 0
    span = 1 << (LEVEL_BITS * level)
    for i in range(PTRS_PER_TABLE):
        lo = base + i * span
        if lo + span <= vpn0 or lo >= vpn1:
            continue
        child = int(nodes[node][i])
        if child == 0 or (level == 1 and _huge(child)):
            continue
        if level > 1:
            freed += _free_empty(nodes, free, meta, child, level - 1, lo, vpn0, vpn1)
        if _is_empty(nodes, child):
            nodes[node][i] = 0
            _release(free, meta, child)
            freed += 1
    return freed


def pt_free_empty(nodes, free, meta, root, vpn0, vpn1):
    vpn0, vpn1 = _clip(vpn0, vpn1)
    if vpn1 <= vpn0:
        return 0
    return _free_empty(nodes, free, meta, root, 3, 0, vpn0, vpn1)


def _destroy(nodes, free, meta, node, level):
    freed = 0
    for i in range(PTRS_PER_TABLE):
        child = int(nodes[node][i])
        if level > 0 and child != 0 and not (level == 1 and _huge(child)):
            freed += _destroy(nodes, free, meta, child, level - 1)
        nodes[node][i] = 0
    _release(free, meta, node)
    return freed + 1


def pt_destroy(nodes, free, meta, root):
    return _destroy(nodes, free, meta, root, 3)


def pt_count_tables(nodes, root, vpn0, vpn1):
    vpn0, vpn1 = _clip(vpn0, vpn1)

    def count(node, level, base):
        total = 0
        span = 1 << (LEVEL_BITS * level)
        for i in range(PTRS_PER_TABLE):
            lo = base + i * span
            if lo + span <= vpn0 or lo >= vpn1:
                continue
            child = int(nodes[node][i])
            if child and not (level == 1 and _huge(child)):
                total += 1 + (count(child, level - 1, lo) if level > 1 else 0)
        return total

    return count(root, 3, 0) if vpn1 > vpn0 else 0


def pt_lookup_pmd(nodes, root, vpn):
    if vpn < 0 or vpn >= VPN_LIMIT:
        return 0
    n1, c = _pmd(nodes, root, vpn)
    if n1 == 0:
        return 0
    w = int(nodes[n1][c])
    return w if _huge(w) else 0


def pt_set_pmd(nodes, free, meta, root, vpn, word):
    word = int(word)
    n1, c = _pmd(nodes, root, vpn, None if word == 0 else (free, meta))
    if n1 == 0:
        return 0
    old = int(nodes[n1][c])
    if old and not _huge(old):
        if not _is_empty(nodes, old):
            meta[M_HUGE] = 1
            return 0
        if word == 0:
            return 0
        _release(free, meta, old)
        old = 0
    nodes[n1][c] = word
    return old


def pt_split_pmd(nodes, free, meta, root, vpn, new_pfn, pfn_step):
    n1, c = _pmd(nodes, root, vpn)
    if n1 == 0:
        return 0
    w = int(nodes[n1][c])
    if not _huge(w):
        return 0
    leaf = _alloc(nodes, free, meta)
    if leaf == 0:
        return 0
    for d in range(PTRS_PER_TABLE):
        nodes[leaf][d] = (w & _FLAGS) | ((int(new_pfn) + d * int(pfn_step)) << PFN_SHIFT)
    nodes[n1][c] = leaf
    return w


def pt_touch(nodes, root, vpn, bits):
    bits = int(bits)
    n1, c = _pmd(nodes, root, vpn)
    if n1 == 0:
        return 0
    w = int(nodes[n1][c])
    if _huge(w):
        nodes[n1][c] = w | bits
        return _sub(w, vpn)
    if w == 0:
        return 0
    old = int(nodes[w][vpn & _IDX])
    if old:
        nodes[w][vpn & _IDX] = old | bits
    return old
