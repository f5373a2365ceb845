"""Per-mm radix page tables over a shared node pool (thin wrappers of ``smmu.base.radix``).

``PageTablePool`` owns the node array, the free stack and the meta counters, and grows them
in Python *before* a kernel that allocates is called (``reserve``), so kernels never run out
of nodes midway. ``PageTable`` is one address space's table: a root node index in a pool,
with one method per kernel. Each method is one Python->jit crossing (range methods cross
again only when their result does not fit the scratch buffers, every ``SCRATCH`` entries).

Values: vpn = va >> PAGE_SHIFT, ``0 <= vpn < VPN_LIMIT``; entries are PTE words as laid out in
``smmu.base.pte`` (Python ints in and out for single entries; numpy ``int64`` vpns and
``uint64`` PTEs for ranges).

Huge PMDs (transparent huge pages, see :mod:`smmu.base.radix`): ``lookup`` / ``walk`` of a
page under one return its 4 KiB view (``PTE_HUGE`` set); ``set`` / ``clear`` / ``map_range``
there, and a ``clear_range`` / ``protect_range`` / ``copy_range`` that covers one only in part,
raise ``RuntimeError`` (a bug in the caller: Linux splits the PMD first); the range methods
report a huge PMD as one entry at its first vpn. ``lookup_pmd``, ``set_pmd``, ``split_pmd`` and
``touch`` work on PMDs.

Always read ``pool.nodes`` at call time: growing the pool replaces the arrays.
"""

from __future__ import annotations

import numpy as np

from smmu.base import radix as K
from smmu.base.radix import (M_ENOMEM, M_HUGE, M_NFREE, M_USED, META_SIZE, VPN_LIMIT,
                             nodes_needed)
from smmu.base.constants import HPAGE_PMD_NR, LEVEL_BITS, PTRS_PER_TABLE
from smmu.base.pte import PTE_HUGE, PTE_PRESENT, PTE_YOUNG, pte_pfn

__all__ = ["SCRATCH", "VPN_LIMIT", "PageTable", "PageTablePool", "nodes_needed"]

#: entries a range kernel reports per crossing (size of the pool's scratch buffers)
SCRATCH = 1 << 15

_SCRATCH_VPNS = np.empty(SCRATCH, dtype=np.int64)
_SCRATCH_PTES = np.empty(SCRATCH, dtype=np.uint64)
_EMPTY_VPNS = np.zeros(0, dtype=np.int64)
_EMPTY_PTES = np.zeros(0, dtype=np.uint64)


class PageTablePool:
    """A pool of 512-entry table nodes shared by many page tables.

    ``nodes`` uint64[capacity, 512], ``free`` int64[capacity] (a stack, top = next node
    handed out), ``meta`` int64[4] (free count, used count, ENOMEM flag). Node 0 is reserved.
    """

    def __init__(self, capacity: int = 64):
        capacity = max(int(capacity), 2)
        self.nodes = np.zeros((capacity, PTRS_PER_TABLE), dtype=np.uint64)
        # lowest index on top so that tables are handed out in increasing order
        self.free = np.zeros(capacity, dtype=np.int64)
        self.free[: capacity - 1] = np.arange(capacity - 1, 0, -1, dtype=np.int64)
        self.meta = np.zeros(META_SIZE, dtype=np.int64)
        self.meta[M_NFREE] = capacity - 1
        self.grows = 0
        #: hugetlb PMD sharing (``huge_pmd_share``, mm/hugetlb.c): a PMD table (level-1
        #: node) that more than one PUD entry points to, with those entries as ``(root,
        #: pud_vpn)`` pairs; its length is Linux's ``page_count`` of the PMD page
        self.pmd_sharers: dict[int, list] = {}
        # the range kernels' output buffers: one pair for every pool (kernels run one at a
        # time and their results are copied out), not 512 KiB more per simulator
        self._scratch_vpns = _SCRATCH_VPNS
        self._scratch_ptes = _SCRATCH_PTES

    # -- sizes ---------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.nodes.shape[0]

    @property
    def nfree(self) -> int:
        return int(self.meta[M_NFREE])

    @property
    def used(self) -> int:
        """Allocated table nodes (node 0 not counted)."""
        return int(self.meta[M_USED])

    @property
    def nbytes(self) -> int:
        return self.nodes.nbytes + self.free.nbytes + self.meta.nbytes

    def __repr__(self) -> str:
        return (
            f"<PageTablePool {self.used} tables used, {self.nfree} free, capacity "
            f"{self.capacity} ({self.nodes.nbytes >> 10} KiB), grown {self.grows}x>"
        )

    # -- growth --------------------------------------------------------------------------
    def reserve(self, n: int) -> None:
        """Make sure at least n nodes are free, doubling the capacity as often as needed."""
        if n <= self.meta[M_NFREE]:
            return
        old_cap = self.capacity
        new_cap = old_cap
        while new_cap - old_cap + int(self.meta[M_NFREE]) < n:
            new_cap *= 2
        nodes = np.zeros((new_cap, PTRS_PER_TABLE), dtype=np.uint64)
        nodes[:old_cap] = self.nodes
        free = np.zeros(new_cap, dtype=np.int64)
        nfree = int(self.meta[M_NFREE])
        free[:nfree] = self.free[:nfree]
        added = new_cap - old_cap
        free[nfree : nfree + added] = np.arange(new_cap - 1, old_cap - 1, -1, dtype=np.int64)
        self.nodes, self.free = nodes, free
        self.meta[M_NFREE] = nfree + added
        self.grows += 1

    def alloc_node(self) -> int:
        """One zeroed node (used for roots)."""
        self.reserve(1)
        top = int(self.meta[M_NFREE]) - 1
        n = int(self.free[top])
        self.meta[M_NFREE] = top
        self.meta[M_USED] += 1
        self.nodes[n] = 0
        return n

    def _check_enomem(self) -> None:
        if self.meta[M_ENOMEM]:
            self.meta[M_ENOMEM] = 0
            raise RuntimeError(
                f"{self!r}: a radix kernel ran out of nodes although capacity was reserved "
                "(bug in the reservation bound)"
            )
        if self.meta[M_HUGE]:
            self.meta[M_HUGE] = 0
            raise RuntimeError(
                "a radix kernel found a huge PMD where it needed a PTE table, or a PTE table "
                "with entries where a huge PMD was to go (bug in the caller: split the PMD "
                "first, or empty the PTE table)"
            )

    # -- checking --------------------------------------------------------------------------
    def check_invariants(self, roots=None) -> list[str]:
        """Problems with the pool; with ``roots`` (every live root), also leaks and sharing.

        Checks: meta counters match the free stack, node 0 is not free, no node is free
        twice, free nodes are all zeros; with roots: each allocated node is reachable from
        exactly one place, no reachable node is free, no allocated node is unreachable.
        """
        problems = []
        nfree = int(self.meta[M_NFREE])
        cap = self.capacity
        if not 0 <= nfree <= cap - 1:
            return [f"free count {nfree} outside [0, {cap - 1}]"]
        if int(self.meta[M_USED]) != cap - 1 - nfree:
            problems.append(f"used count {int(self.meta[M_USED])} != {cap - 1 - nfree}")
        if self.meta[M_ENOMEM]:
            problems.append("ENOMEM flag left set")
        stack = self.free[:nfree]
        if ((stack <= 0) | (stack >= cap)).any():
            problems.append("free stack holds node 0 or an out-of-range index")
            return problems
        if len(np.unique(stack)) != nfree:
            problems.append("a node is on the free stack twice")
        dirty = stack[self.nodes[stack].any(axis=1)]
        if len(dirty):
            problems.append(f"free nodes not zeroed: {dirty[:8].tolist()}")
        if roots is None:
            return problems
        seen = np.zeros(cap, dtype=np.int64)
        for root in roots:
            root = int(root)
            if not 0 < root < cap:
                problems.append(f"root {root} out of range")
                continue
            seen[root] += 1
            frontier = [root]
            for level in (3, 2, 1):
                nxt = []
                for n in frontier:
                    row = self.nodes[n]
                    keep = row != 0
                    if level == 1:                 # huge PMDs are leaves, not tables
                        keep &= (row & np.uint64(PTE_HUGE)) == 0
                    kids = row[keep].astype(np.int64)
                    bad = kids[(kids <= 0) | (kids >= cap)]
                    if len(bad):
                        problems.append(f"node {n} points outside the pool: {bad[:4].tolist()}")
                        kids = kids[(kids > 0) & (kids < cap)]
                    np.add.at(seen, kids, 1)
                    nxt.extend(kids.tolist())
                frontier = nxt
        for node, users in self.pmd_sharers.items():
            if seen[node] == len(users):
                seen[node] = 1                     # a shared PMD table: once per sharer
        shared = np.nonzero(seen > 1)[0]
        if len(shared):
            problems.append(f"nodes reachable more than once: {shared[:8].tolist()}")
        free_mask = np.zeros(cap, dtype=bool)
        free_mask[stack] = True
        both = np.nonzero(free_mask & (seen > 0))[0]
        if len(both):
            problems.append(f"reachable nodes on the free stack: {both[:8].tolist()}")
        leaked = np.nonzero(~free_mask & (seen == 0))[0]
        leaked = leaked[leaked != 0]
        if len(leaked):
            problems.append(f"allocated nodes reachable from no root: {leaked[:8].tolist()}")
        return problems


def _pud_base(vpn: int) -> int:
    """The first vpn of the PUD span (1 GiB) holding vpn."""
    return int(vpn) >> (2 * LEVEL_BITS) << (2 * LEVEL_BITS)


def _check_vpn(vpn: int) -> int:
    vpn = int(vpn)
    if not 0 <= vpn < VPN_LIMIT:
        raise ValueError(f"vpn {vpn:#x} outside [0, {VPN_LIMIT:#x})")
    return vpn


def _under_huge(vpn: int, old: int) -> int:
    if old & PTE_HUGE:
        raise RuntimeError(f"vpn {vpn:#x} is mapped by a huge PMD: split it (split_pmd) "
                           "before changing one of its pages (bug in the caller)")
    return old


def _whole_huge(vpns: np.ndarray, ptes: np.ndarray, vpn0: int, vpn1: int) -> None:
    """Raise if a huge PMD among the reported entries is only partly inside [vpn0, vpn1).
    Only the first and the last entry can be (every other one lies inside the range)."""
    n = len(ptes)
    for i in ((0, n - 1) if n else ()):
        if int(ptes[i]) & PTE_HUGE:
            v = int(vpns[i])
            if v < vpn0 or v + HPAGE_PMD_NR > vpn1:
                raise RuntimeError(f"[{vpn0:#x}, {vpn1:#x}) covers the huge PMD at vpn {v:#x} "
                                   "only in part: split it first (bug in the caller; Linux's "
                                   "zap_pmd_range / change_pmd_range split it)")


def _resume(vpns, ptes, cnt) -> int:
    """Where a range kernel that filled its out arrays resumes: after the last entry (all of
    it when that is a huge PMD)."""
    return int(vpns[cnt - 1]) + (HPAGE_PMD_NR if int(ptes[cnt - 1]) & PTE_HUGE else 1)


def _check_range(vpn0: int, vpn1: int) -> tuple[int, int]:
    vpn0, vpn1 = int(vpn0), int(vpn1)
    if not 0 <= vpn0 <= vpn1 <= VPN_LIMIT:
        raise ValueError(f"bad vpn range [{vpn0:#x}, {vpn1:#x}) (limit {VPN_LIMIT:#x})")
    return vpn0, vpn1


class PageTable:
    """One address space's radix table: a root node in a (possibly shared) pool."""

    def __init__(self, pool: PageTablePool | None = None):
        self.pool = pool if pool is not None else PageTablePool()
        self.root = self.pool.alloc_node()

    def __repr__(self) -> str:
        if self.root == 0:
            return "<PageTable destroyed>"
        tables = int(K.pt_count_tables(self.pool.nodes, self.root, 0, VPN_LIMIT)) + 1
        return f"<PageTable root={self.root} tables={tables} in {self.pool!r}>"

    def _alive(self) -> None:
        if self.root == 0:
            raise RuntimeError("page table used after destroy()")

    # -- single entries --------------------------------------------------------------------
    def lookup(self, vpn: int) -> int:
        """The entry at vpn (0 = none)."""
        return int(K.pt_lookup(self.pool.nodes, self.root, int(vpn)))

    def walk(self, vpns) -> np.ndarray:
        """Entries (uint64) of an array of vpns; out-of-range vpns read as 0."""
        vpns = np.ascontiguousarray(vpns, dtype=np.int64)
        out = np.empty(vpns.shape[0], dtype=np.uint64)
        K.pt_walk(self.pool.nodes, self.root, vpns, out)
        return out

    def set(self, vpn: int, pte: int) -> int:
        """Store pte at vpn (allocating tables); return the old entry."""
        vpn = _check_vpn(vpn)
        self._alive()
        pool = self.pool
        if pool.meta[M_NFREE] < 3:
            pool.reserve(3)
        old = int(K.pt_set(pool.nodes, pool.free, pool.meta, self.root, vpn, np.uint64(pte)))
        pool._check_enomem()
        return _under_huge(vpn, old)

    def clear(self, vpn: int) -> int:
        """Zero the entry at vpn; return the old one (tables stay allocated)."""
        vpn = _check_vpn(vpn)
        return _under_huge(vpn, int(K.pt_clear(self.pool.nodes, self.root, vpn)))

    # -- huge PMDs -------------------------------------------------------------------------
    def lookup_pmd(self, vpn: int) -> int:
        """The huge PMD word covering vpn (``PTE_HUGE`` set; its PFN is the first page's),
        or 0 when the PMD slot is empty or holds a PTE table."""
        return int(K.pt_lookup_pmd(self.pool.nodes, self.root, int(vpn)))

    def set_pmd(self, vpn: int, word: int) -> int:
        """Install the huge PMD ``word`` (``PTE_HUGE`` set; 0 clears one) in the PMD slot of
        vpn; an empty PTE table there is freed first. Returns the huge word replaced (0 if
        none). A PTE table that still maps something there raises ``RuntimeError``."""
        vpn = _check_vpn(vpn)
        word = int(word)
        if word and not word & PTE_HUGE:
            raise ValueError(f"set_pmd({vpn:#x}, {word:#x}): a PMD word needs PTE_HUGE")
        self._alive()
        pool = self.pool
        if pool.meta[M_NFREE] < 2:
            pool.reserve(2)
        old = int(K.pt_set_pmd(pool.nodes, pool.free, pool.meta, self.root, vpn,
                               np.uint64(word)))
        pool._check_enomem()
        return old

    def split_pmd(self, vpn: int, new_pfn: int | None = None, pfn_step: int = 1) -> int:
        """``__split_huge_pmd_locked``: replace the huge PMD of vpn by a PTE table whose
        entry i has the PMD's bits (without ``PTE_HUGE``) and PFN ``new_pfn + i * pfn_step``
        (default: the PMD's own pages; the zero page with ``pfn_step=0`` for the huge zero
        page). Returns the PMD word, 0 if there was none (nothing done)."""
        vpn = _check_vpn(vpn)
        self._alive()
        word = self.lookup_pmd(vpn)
        if not word:
            return 0
        pool = self.pool
        if pool.meta[M_NFREE] < 1:
            pool.reserve(1)
        pfn = pte_pfn(word) if new_pfn is None else int(new_pfn)
        old = int(K.pt_split_pmd(pool.nodes, pool.free, pool.meta, self.root, vpn, pfn,
                                 int(pfn_step)))
        pool._check_enomem()
        return old

    # -- hugetlb PMD sharing --------------------------------------------------------------
    def _pud_slot(self, vpn: int, alloc: bool):
        """``(level-2 node, index)`` of the PUD entry covering vpn; ``(0, idx)`` when the
        PUD table is missing and ``alloc`` is false."""
        vpn = _check_vpn(vpn)
        self._alive()
        pool = self.pool
        i3 = (vpn >> (3 * LEVEL_BITS)) & (PTRS_PER_TABLE - 1)
        i2 = (vpn >> (2 * LEVEL_BITS)) & (PTRS_PER_TABLE - 1)
        n2 = int(pool.nodes[self.root, i3])
        if n2 == 0 and alloc:
            n2 = pool.alloc_node()
            pool.nodes[self.root, i3] = np.uint64(n2)
        return n2, i2

    def pmd_table(self, vpn: int) -> int:
        """The PMD table (level-1 node) the PUD entry of vpn points to, 0 if none."""
        n2, i2 = self._pud_slot(vpn, False)
        return int(self.pool.nodes[n2, i2]) if n2 else 0

    def pmd_shared(self, vpn: int) -> bool:
        """Does the PUD entry of vpn point to a PMD table another PUD entry shares?"""
        n1 = self.pmd_table(vpn)
        return bool(n1) and len(self.pool.pmd_sharers.get(n1, ())) > 1

    def share_pmd(self, vpn: int, other: "PageTable", other_vpn: int) -> bool:
        """``huge_pmd_share``: point the empty PUD entry of vpn at the PMD table that
        ``other``'s PUD entry of ``other_vpn`` points to (``get_page`` on it;
        ``pud_populate``). False when this entry is not empty (``pud_none`` failed) or
        there is no table there: nothing done."""
        node = other.pmd_table(other_vpn)
        n2, i2 = self._pud_slot(vpn, True)
        pool = self.pool
        if pool.nodes[n2, i2] or not node:
            return False
        users = pool.pmd_sharers.setdefault(node, [])
        if not users:
            users.append((other.root, _pud_base(other_vpn)))
        pool.nodes[n2, i2] = np.uint64(node)
        users.append((self.root, _pud_base(vpn)))
        return True

    def unshare_pmd(self, vpn: int) -> bool:
        """``huge_pmd_unshare``: if the PMD table of vpn is shared, clear this PUD entry
        (``pud_clear``) and drop its reference (``put_page``): the whole PUD span is
        unmapped from this table; True. False when it is not shared (``page_count == 1``:
        nothing done)."""
        n2, i2 = self._pud_slot(vpn, False)
        if not n2:
            return False
        pool = self.pool
        node = int(pool.nodes[n2, i2])
        users = pool.pmd_sharers.get(node)
        if not users or len(users) < 2:
            return False
        pool.nodes[n2, i2] = 0
        users.remove((self.root, _pud_base(vpn)))
        if len(users) < 2:
            del pool.pmd_sharers[node]
        return True

    def shared_pmd_spans(self, vpn0: int = 0, vpn1: int = VPN_LIMIT) -> list[int]:
        """The first vpns of the PUD spans in ``[vpn0, vpn1)`` whose PMD table this page
        table shares with another."""
        return sorted(v for users in self.pool.pmd_sharers.values() for r, v in users
                      if r == self.root and vpn0 <= v < vpn1)

    def touch(self, vpn: int, bits: int) -> int:
        """``entry |= bits`` on the PTE or huge PMD covering vpn (the accessed and dirty bits
        a CPU access sets); returns the old entry as :meth:`lookup` would."""
        return int(K.pt_touch(self.pool.nodes, self.root, int(vpn), np.uint64(bits)))

    # -- ranges ----------------------------------------------------------------------------
    def map_range(self, vpn0: int, ptes) -> int:
        """Store ptes[i] at vpn0 + i; return how many non-zero entries were overwritten."""
        ptes = np.ascontiguousarray(ptes, dtype=np.uint64)
        vpn0, vpn1 = _check_range(vpn0, int(vpn0) + ptes.shape[0])
        self._alive()
        pool = self.pool
        pool.reserve(nodes_needed(vpn0, vpn1))
        replaced = int(K.pt_map_range(pool.nodes, pool.free, pool.meta, self.root, vpn0, ptes))
        pool._check_enomem()
        return replaced

    def _collect(self, kernel, vpn0, vpn1, *args, reserve_src=None):
        """Run a resumable range kernel until it reports less than a full scratch buffer."""
        pool = self.pool
        sv, sp = pool._scratch_vpns, pool._scratch_ptes
        parts_v, parts_p = [], []
        cap = min(SCRATCH, vpn1 - vpn0)
        if cap <= 0:
            return _EMPTY_VPNS, _EMPTY_PTES
        while True:
            ov, op = sv[:cap], sp[:cap]
            cnt = int(kernel(pool.nodes, self.root, vpn0, vpn1, *args, ov, op))
            parts_v.append(ov[:cnt].copy())
            parts_p.append(op[:cnt].copy())
            if cnt < cap:
                break
            vpn0 = _resume(ov, op, cnt)
            if vpn0 >= vpn1:
                break
        if len(parts_v) == 1:
            return parts_v[0], parts_p[0]
        return np.concatenate(parts_v), np.concatenate(parts_p)

    def clear_range(self, vpn0: int, vpn1: int) -> tuple[np.ndarray, np.ndarray]:
        """Zero every non-zero entry (present, swap, migration) of [vpn0, vpn1); return the
        (vpns, old entries) cleared, dirty bits included. Tables stay (see free_empty)."""
        vpn0, vpn1 = _check_range(vpn0, vpn1)
        vpns, ptes = self._collect(K.pt_clear_range, vpn0, vpn1)
        _whole_huge(vpns, ptes, vpn0, vpn1)
        return vpns, ptes

    def iter_present(self, vpn0: int = 0, vpn1: int = VPN_LIMIT) -> tuple[np.ndarray, np.ndarray]:
        """(vpns, entries) of every non-zero entry of [vpn0, vpn1), in vpn order."""
        vpn0, vpn1 = _check_range(vpn0, vpn1)
        return self._collect(K.pt_iter_present, vpn0, vpn1)

    def protect_range_entries(
        self, vpn0: int, vpn1: int, clear_bits: int, set_bits: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """pte = (pte & ~clear_bits) | set_bits on present PTEs of [vpn0, vpn1); return the
        (vpns, old PTEs) of those that changed (what a TLB flush must cover)."""
        vpn0, vpn1 = _check_range(vpn0, vpn1)
        vpns, olds = self._collect(
            K.pt_protect_range, vpn0, vpn1, np.uint64(clear_bits), np.uint64(set_bits)
        )
        _whole_huge(vpns, olds, vpn0, vpn1)
        return vpns, olds

    def protect_range(self, vpn0: int, vpn1: int, clear_bits: int, set_bits: int = 0) -> int:
        """Like protect_range_entries; return only how many PTEs changed."""
        return len(self.protect_range_entries(vpn0, vpn1, clear_bits, set_bits)[0])

    def copy_range(
        self, dst: PageTable, vpn0: int, vpn1: int, cow: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fork: copy every non-zero entry of [vpn0, vpn1) into dst (same pool). With cow,
        writable entries (present, migration, device-private) lose PTE_WRITE on both
        sides. Returns (vpns, entries as written
        to dst)."""
        vpn0, vpn1 = _check_range(vpn0, vpn1)
        vpn0_orig = vpn0
        if dst.pool is not self.pool:
            raise ValueError("copy_range needs both page tables in the same pool")
        if dst.root == self.root:
            raise ValueError("copy_range onto itself")
        self._alive()
        dst._alive()
        pool = self.pool
        need = nodes_needed(vpn0, vpn1)
        if need > pool.nfree:
            # a huge sparse range: the destination needs at most one table per source table
            need = min(need, int(K.pt_count_tables(pool.nodes, self.root, vpn0, vpn1)))
        pool.reserve(need)
        sv, sp = pool._scratch_vpns, pool._scratch_ptes
        cap = min(SCRATCH, vpn1 - vpn0)
        if cap <= 0:
            return _EMPTY_VPNS, _EMPTY_PTES
        parts_v, parts_p = [], []
        cow = bool(cow)
        while True:
            ov, op = sv[:cap], sp[:cap]
            cnt = int(
                K.pt_copy_range(
                    pool.nodes, pool.free, pool.meta, self.root, dst.root, vpn0, vpn1, cow, ov, op
                )
            )
            pool._check_enomem()
            parts_v.append(ov[:cnt].copy())
            parts_p.append(op[:cnt].copy())
            if cnt < cap:
                break
            vpn0 = _resume(ov, op, cnt)
            if vpn0 >= vpn1:
                break
        if len(parts_v) == 1:
            vpns, ptes = parts_v[0], parts_p[0]
        else:
            vpns, ptes = np.concatenate(parts_v), np.concatenate(parts_p)
        _whole_huge(vpns, ptes, vpn0_orig, vpn1)
        return vpns, ptes

    # -- accessed bits ---------------------------------------------------------------------
    def test_young_range(self, vpn0: int, vpn1: int) -> int:
        """How many present PTEs of [vpn0, vpn1) are young."""
        vpn0, vpn1 = _check_range(vpn0, vpn1)
        return int(K.pt_test_young_range(self.pool.nodes, self.root, vpn0, vpn1))

    def clear_young_range(self, vpn0: int, vpn1: int) -> int:
        """Clear the young bit of present PTEs in [vpn0, vpn1); return how many had it."""
        vpn0, vpn1 = _check_range(vpn0, vpn1)
        return int(K.pt_clear_young_range(self.pool.nodes, self.root, vpn0, vpn1))

    def test_young(self, vpn: int) -> bool:
        pte = self.lookup(vpn)
        return bool(pte & PTE_PRESENT) and bool(pte & PTE_YOUNG)

    def clear_young(self, vpn: int) -> bool:
        """Clear the young bit of the PTE at vpn; return whether it was set."""
        return self.clear_young_range(vpn, int(vpn) + 1) > 0

    # -- table lifetime --------------------------------------------------------------------
    def free_empty(self, vpn0: int = 0, vpn1: int = VPN_LIMIT) -> int:
        """Free the empty tables covering [vpn0, vpn1) (never the root); return how many."""
        vpn0, vpn1 = _check_range(vpn0, vpn1)
        self._alive()
        pool = self.pool
        return int(K.pt_free_empty(pool.nodes, pool.free, pool.meta, self.root, vpn0, vpn1))

    def count_tables(self, vpn0: int = 0, vpn1: int = VPN_LIMIT) -> int:
        """Tables below the root covering part of [vpn0, vpn1)."""
        vpn0, vpn1 = _check_range(vpn0, vpn1)
        return int(K.pt_count_tables(self.pool.nodes, self.root, vpn0, vpn1))

    def destroy(self) -> int:
        """Free every table, root included (entries are discarded); return nodes freed."""
        if self.root == 0:
            return 0
        pool = self.pool
        freed = int(K.pt_destroy(pool.nodes, pool.free, pool.meta, self.root))
        self.root = 0
        return freed
