"""Radix page-table kernels against their pure-Python reference and a dict model, plus edge
cases: top of the address space, ranges crossing table boundaries at every level, empty
tables freed, fork copies (COW write-protect, swap entries), pool growth and resumption."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import primary_mm.pagetable as pagetable
from primary_mm.pagetable import PageTable, PageTablePool
from smmu.base import radix as K
from smmu.base import radix_ref as R
from smmu.base.radix import M_ENOMEM, M_HUGE, M_NFREE, M_USED, META_SIZE, VPN_LIMIT, nodes_needed
from smmu.base.constants import MAX_VPN
from smmu.base.pte import (PFN_SHIFT, PTE_DEVICE_PRIVATE, PTE_DIRTY, PTE_HUGE, PTE_MIGRATION,
                           PTE_PRESENT, PTE_PROTNONE, PTE_SPECIAL, PTE_SWAP, PTE_WRITE,
                           PTE_YOUNG)

P, W, Y, D = PTE_PRESENT, PTE_WRITE, PTE_YOUNG, PTE_DIRTY


def pte(pfn, flags=P):
    return (pfn << PFN_SHIFT) | flags


# -- strategies --------------------------------------------------------------------------------

# table boundaries at every level, the top of user space and of the whole 48-bit space;
# offsets are small so that operations of one example keep hitting each other's entries
BASES = [0, 1 << 9, 1 << 18, 1 << 27, MAX_VPN, VPN_LIMIT - 1]
# one or two of them per example (shared by every vpn drawn in that example)
focus = st.shared(st.lists(st.sampled_from(BASES), min_size=1, max_size=2, unique=True), key="b")
vpns = st.builds(
    lambda b, off: min(max(b + off, 0), VPN_LIMIT - 1),
    focus.flatmap(st.sampled_from),
    st.integers(-80, 80),
)
lengths = st.one_of(
    st.integers(0, 160), st.integers(0, 160), st.sampled_from([600, 1 << 18, VPN_LIMIT])
)
ranges = st.one_of(
    st.builds(lambda v, n: (v, min(v + n, VPN_LIMIT)), vpns, lengths),
    st.builds(lambda v, n: (max(v - n, 0), min(v + n, VPN_LIMIT)), vpns, lengths),
)
flag_sets = st.sampled_from(
    [P, P | W, P | W, P | Y, P | W | Y | D, P | PTE_SPECIAL, PTE_SWAP, PTE_MIGRATION, P | D]
)
ptes = st.one_of(
    st.just(0),
    st.builds(pte, st.integers(1, (1 << 40) - 1), flag_sets),
)
caps = st.sampled_from([0, 1, 3, 700, 1 << 12])
roots = st.sampled_from([0, 1])  # index into the two page tables of a test pool


def fill(vpn0, n, flags, stride):
    """A "map" op's entries: n PTEs with the given flags, every stride-th one left empty."""
    return [0 if stride and i % stride == 0 else pte(i + 1, flags) for i in range(n)]


map_ops = st.one_of(
    st.tuples(st.just("map"), roots, vpns, st.lists(ptes, max_size=16), st.integers(0, 20)),
    st.builds(
        lambda r, v, n, f, s: ("map", r, v, fill(v, n, f, s), 0),
        roots,
        vpns,
        st.integers(0, 1100),
        flag_sets,
        st.sampled_from([0, 0, 3, 700]),
    ),
)
ops = st.one_of(
    map_ops,
    map_ops,
    st.tuples(st.just("lookup"), roots, st.one_of(vpns, st.sampled_from([-1, VPN_LIMIT]))),
    st.tuples(st.just("walk"), roots, st.lists(vpns, max_size=10)),
    st.tuples(st.just("set"), roots, vpns, ptes),
    st.tuples(st.just("clear"), roots, vpns),
    st.tuples(st.just("clear_range"), roots, ranges, caps),
    st.tuples(
        st.just("protect"),
        roots,
        ranges,
        st.sampled_from([0, W, W | Y, D]),
        st.sampled_from([0, W, Y, D]),
        caps,
    ),
    st.tuples(st.just("copy"), roots, ranges, st.booleans(), caps),
    st.tuples(st.just("copy"), roots, ranges, st.just(True), caps),
    st.tuples(st.just("test_young"), roots, ranges),
    st.tuples(st.just("clear_young"), roots, ranges),
    st.tuples(st.just("free_empty"), roots, ranges),
    st.tuples(st.just("iter"), roots, ranges, caps),
    st.tuples(st.just("count_tables"), roots, ranges),
)

# huge PMD words: any PFN, the flag sets a PMD can have (a THP, the huge zero page, a PMD
# migration entry, PROT_NONE)
huge_words = st.builds(
    lambda pfn, f: pte(pfn, f) | PTE_HUGE,
    st.integers(1, (1 << 40) - 513),
    st.sampled_from([P, P | W, P | W | Y | D, P | Y, P | PTE_SPECIAL, PTE_MIGRATION,
                     PTE_MIGRATION | W, PTE_PROTNONE]),
)
pmd_ops = st.one_of(
    st.tuples(st.just("set_pmd"), roots, vpns, huge_words),
    st.tuples(st.just("set_pmd"), roots, vpns, huge_words),
    st.tuples(st.just("set_pmd"), roots, vpns, st.just(0)),
    st.tuples(st.just("lookup_pmd"), roots, vpns),
    st.tuples(st.just("split_pmd"), roots, vpns, st.integers(1, 1 << 30), st.sampled_from([0, 1])),
    st.tuples(st.just("touch"), roots, vpns, st.sampled_from([Y, Y | D, W])),
)


# -- differential: kernels vs reference on copies of one pool --------------------------------


class RawPool:
    """The three pool arrays plus two roots, built exactly as PageTablePool does."""

    def __init__(self, capacity):
        self.nodes = np.zeros((capacity, 512), dtype=np.uint64)
        self.free = np.zeros(capacity, dtype=np.int64)
        self.free[: capacity - 1] = np.arange(capacity - 1, 0, -1)
        self.meta = np.zeros(META_SIZE, dtype=np.int64)
        self.meta[M_NFREE] = capacity - 1
        self.roots = [self.alloc(), self.alloc()]

    def alloc(self):
        top = int(self.meta[M_NFREE]) - 1
        self.meta[M_NFREE] = top
        self.meta[M_USED] += 1
        return int(self.free[top])

    def copy(self):
        other = object.__new__(RawPool)
        other.nodes, other.free, other.meta = self.nodes.copy(), self.free.copy(), self.meta.copy()
        other.roots = list(self.roots)
        return other

    def same(self, other):
        return (
            np.array_equal(self.nodes, other.nodes)
            and np.array_equal(self.free, other.free)
            and np.array_equal(self.meta, other.meta)
        )


def run_op(mod, pool, op):
    """Apply op through module mod (kernels or reference); return a comparable result."""
    name, which, *args = op
    nodes, free, meta = pool.nodes, pool.free, pool.meta
    root = pool.roots[which]
    other = pool.roots[1 - which]
    if name == "lookup":
        return int(mod.pt_lookup(nodes, root, args[0]))
    if name == "walk":
        vs = np.array(args[0], dtype=np.int64)
        out = np.zeros(len(vs), dtype=np.uint64)
        found = int(mod.pt_walk(nodes, root, vs, out))
        return found, out.tolist()
    if name == "set":
        return int(mod.pt_set(nodes, free, meta, root, args[0], np.uint64(args[1])))
    if name == "clear":
        return int(mod.pt_clear(nodes, root, args[0]))
    if name == "set_pmd":
        return int(mod.pt_set_pmd(nodes, free, meta, root, args[0], np.uint64(args[1])))
    if name == "lookup_pmd":
        return int(mod.pt_lookup_pmd(nodes, root, args[0]))
    if name == "split_pmd":
        return int(mod.pt_split_pmd(nodes, free, meta, root, args[0], args[1], args[2]))
    if name == "touch":
        return int(mod.pt_touch(nodes, root, args[0], np.uint64(args[1])))
    if name == "map":
        vpn0, entries, skip = args
        vpn0 = min(vpn0, VPN_LIMIT - len(entries))
        arr = np.array(entries, dtype=np.uint64)[skip % (len(entries) + 1) :]
        return int(mod.pt_map_range(nodes, free, meta, root, vpn0, arr))
    (vpn0, vpn1), *rest = args
    if name in ("clear_range", "iter", "protect", "copy"):
        cap = rest[-1]
        ov = np.zeros(cap, dtype=np.int64)
        op_ = np.zeros(cap, dtype=np.uint64)
        if name == "clear_range":
            cnt = mod.pt_clear_range(nodes, root, vpn0, vpn1, ov, op_)
        elif name == "iter":
            cnt = mod.pt_iter_present(nodes, root, vpn0, vpn1, ov, op_)
        elif name == "protect":
            cnt = mod.pt_protect_range(
                nodes, root, vpn0, vpn1, np.uint64(rest[0]), np.uint64(rest[1]), ov, op_
            )
        else:
            cnt = mod.pt_copy_range(nodes, free, meta, root, other, vpn0, vpn1, rest[0], ov, op_)
        cnt = int(cnt)
        return cnt, ov[:cnt].tolist(), op_[:cnt].tolist()
    if name == "test_young":
        return int(mod.pt_test_young_range(nodes, root, vpn0, vpn1))
    if name == "clear_young":
        return int(mod.pt_clear_young_range(nodes, root, vpn0, vpn1))
    if name == "free_empty":
        return int(mod.pt_free_empty(nodes, free, meta, root, vpn0, vpn1))
    if name == "count_tables":
        return int(mod.pt_count_tables(nodes, root, vpn0, vpn1))
    raise AssertionError(name)


@settings(max_examples=80, deadline=None)
@given(
    capacity=st.sampled_from([12, 48, 256]),
    program=st.tuples(
        st.lists(map_ops, min_size=1, max_size=3),
        st.lists(st.one_of(ops, pmd_ops), min_size=5, max_size=30),
    ),
)
def test_kernels_match_reference(capacity, program):
    program = program[0] + program[1]
    jit = RawPool(capacity)
    ref = jit.copy()
    for op in program:
        got = run_op(K, jit, op)
        want = run_op(R, ref, op)
        assert got == want, op
        assert jit.same(ref), op
        # an allocation failure (small pools) must leave identical partial states; clear it
        # (and the flag of a PTE table / huge PMD conflict)
        jit.meta[M_ENOMEM] = ref.meta[M_ENOMEM] = 0
        jit.meta[M_HUGE] = ref.meta[M_HUGE] = 0
    for root in jit.roots:
        assert K.pt_destroy(jit.nodes, jit.free, jit.meta, root) == R.pt_destroy(
            ref.nodes, ref.free, ref.meta, root
        )
    assert jit.same(ref)
    assert jit.meta[M_USED] == 0 and not jit.nodes.any()


# -- the PageTable wrapper against a dict model --------------------------------------------


def apply_model(tables, models, op):
    """Run op on the PageTable wrappers and the same op on dicts; return both results."""
    name, which, *args = op
    pt, other = tables[which], tables[1 - which]
    m, mo = models[which], models[1 - which]
    if name == "lookup":
        v = args[0]
        if not 0 <= v < VPN_LIMIT:
            return pt.lookup(v), 0
        return pt.lookup(v), m.get(v, 0)
    if name == "walk":
        return pt.walk(args[0]).tolist(), [m.get(v, 0) for v in args[0]]
    if name == "set":
        v, e = args
        old = m.pop(v, 0)
        if e:
            m[v] = e
        return pt.set(v, e), old
    if name == "clear":
        return pt.clear(args[0]), m.pop(args[0], 0)
    if name == "map":
        vpn0, entries, skip = args
        entries = entries[skip % (len(entries) + 1) :]
        vpn0 = min(vpn0, VPN_LIMIT - len(entries))
        replaced = 0
        for i, e in enumerate(entries):
            replaced += m.pop(vpn0 + i, 0) != 0
            if e:
                m[vpn0 + i] = e
        return pt.map_range(vpn0, entries), replaced
    (vpn0, vpn1), *rest = args
    inside = sorted(v for v in m if vpn0 <= v < vpn1)
    if name == "clear_range":
        vs, es = pt.clear_range(vpn0, vpn1)
        want = [(v, m.pop(v)) for v in inside]
        return list(zip(vs.tolist(), es.tolist(), strict=True)), want
    if name == "iter":
        vs, es = pt.iter_present(vpn0, vpn1)
        return list(zip(vs.tolist(), es.tolist(), strict=True)), [(v, m[v]) for v in inside]
    if name == "protect":
        clear_bits, set_bits = rest[0], rest[1]
        vs, olds = pt.protect_range_entries(vpn0, vpn1, clear_bits, set_bits)
        want = []
        for v in inside:
            if m[v] & P:
                new = (m[v] & ~clear_bits) | set_bits
                if new != m[v]:
                    want.append((v, m[v]))
                    m[v] = new
        return list(zip(vs.tolist(), olds.tolist(), strict=True)), want
    if name == "copy":
        cow = rest[0]
        vs, es = pt.copy_range(other, vpn0, vpn1, cow)
        want = []
        for v in inside:
            e = m[v]
            if cow and e & W:
                e &= ~W
                m[v] = e
            mo[v] = e
            want.append((v, e))
        return list(zip(vs.tolist(), es.tolist(), strict=True)), want
    if name == "test_young":
        return pt.test_young_range(vpn0, vpn1), sum(1 for v in inside if m[v] & P and m[v] & Y)
    if name == "clear_young":
        n = 0
        for v in inside:
            if m[v] & P and m[v] & Y:
                m[v] &= ~Y
                n += 1
        return pt.clear_young_range(vpn0, vpn1), n
    if name == "free_empty":
        pt.free_empty(vpn0, vpn1)
        return None, None
    if name == "count_tables":
        pt.count_tables(vpn0, vpn1)
        return None, None
    raise AssertionError(name)


@settings(max_examples=60, deadline=None)
@given(program=st.lists(ops, max_size=30), scratch=st.sampled_from([2, 5, 1 << 15]))
def test_pagetable_matches_dict_model(program, scratch):
    saved = pagetable.SCRATCH
    pagetable.SCRATCH = scratch  # small scratch buffers exercise the resumption path
    try:
        pool = PageTablePool(capacity=2)  # starts tiny: every op that allocates grows it
        tables = [PageTable(pool), PageTable(pool)]
        models = [{}, {}]
        for op in program:
            got, want = apply_model(tables, models, op)
            assert got == want, op
            for pt, m in zip(tables, models, strict=True):
                vs, es = pt.iter_present()
                assert dict(zip(vs.tolist(), es.tolist(), strict=True)) == m, op
            assert pool.check_invariants([t.root for t in tables]) == [], op
        for pt in tables:
            pt.clear_range(0, VPN_LIMIT)
            pt.free_empty()
            assert pt.count_tables() == 0
        assert pool.used == 2
    finally:
        pagetable.SCRATCH = saved


# -- nodes_needed is an exact worst case ----------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(rng=ranges)
def test_nodes_needed_is_exact_for_an_empty_table(rng):
    vpn0, vpn1 = rng
    vpn1 = min(vpn1, vpn0 + 5000)  # keep the map small
    pool = PageTablePool(capacity=2)
    pt = PageTable(pool)
    pt.map_range(vpn0, np.full(vpn1 - vpn0, pte(7), dtype=np.uint64))
    assert pool.used - 1 == nodes_needed(vpn0, vpn1)
    assert pt.count_tables(vpn0, vpn1) == nodes_needed(vpn0, vpn1)


# -- edge cases ---------------------------------------------------------------------------------


def test_top_of_address_space():
    pool = PageTablePool()
    pt = PageTable(pool)
    top = VPN_LIMIT - 1
    assert pt.set(top, pte(5, P | W)) == 0
    assert pt.lookup(top) == pte(5, P | W)
    assert pt.lookup(VPN_LIMIT) == 0 and pt.lookup(-1) == 0
    assert pt.walk([top, VPN_LIMIT, -5, 0]).tolist() == [pte(5, P | W), 0, 0, 0]
    vs, es = pt.iter_present(top - 3, VPN_LIMIT)
    assert vs.tolist() == [top] and es.tolist() == [pte(5, P | W)]
    # user-space top
    pt.map_range(MAX_VPN - 2, [pte(1), pte(2)])
    assert pt.iter_present(MAX_VPN - 10, MAX_VPN)[0].tolist() == [MAX_VPN - 2, MAX_VPN - 1]
    vs, es = pt.clear_range(0, VPN_LIMIT)
    assert vs.tolist() == [MAX_VPN - 2, MAX_VPN - 1, top]
    tables = pool.used - 1
    assert pt.free_empty() == tables == 6
    assert pool.used == 1
    with pytest.raises(ValueError):
        pt.set(VPN_LIMIT, pte(1))
    with pytest.raises(ValueError):
        pt.clear_range(5, VPN_LIMIT + 1)
    with pytest.raises(ValueError):
        pt.map_range(VPN_LIMIT - 1, [pte(1), pte(2)])
    with pytest.raises(ValueError):
        pt.iter_present(10, 5)


@pytest.mark.parametrize("level_shift", [9, 18, 27])
def test_ranges_crossing_table_boundaries(level_shift):
    boundary = 3 << level_shift
    pool = PageTablePool()
    pt = PageTable(pool)
    n = 40
    entries = [pte(100 + i, P | W | (D if i % 2 else 0)) for i in range(n)]
    assert pt.map_range(boundary - n // 2, entries) == 0
    assert pt.walk(np.arange(boundary - n // 2, boundary + n // 2)).tolist() == entries
    # one table per level on each side of the boundary (level_shift) and shared above it
    assert pt.count_tables() == nodes_needed(boundary - n // 2, boundary + n // 2)
    assert pt.protect_range(boundary - 1, boundary + 1, W, 0) == 2
    assert pt.lookup(boundary) == entries[n // 2] & ~W
    vs, es = pt.clear_range(boundary - 5, boundary + 5)
    assert vs.tolist() == list(range(boundary - 5, boundary + 5))
    assert [e & D for e in es.tolist()] == [
        D if i % 2 else 0 for i in range(n // 2 - 5, n // 2 + 5)
    ]
    # nothing is empty yet: free_empty must keep everything
    assert pt.free_empty(boundary - 5, boundary + 5) == 0
    pt.clear_range(0, VPN_LIMIT)
    assert pt.free_empty(boundary - 1, boundary + 1) == nodes_needed(
        boundary - n // 2, boundary + n // 2
    )
    assert pool.used == 1


def test_free_empty_keeps_tables_in_use_and_frees_upper_levels():
    pool = PageTablePool()
    pt = PageTable(pool)
    pt.set(5, pte(1))
    pt.set(600, pte(2))  # second leaf, same level-1 table
    pt.set(1 << 27, pte(3))  # another level-2 table
    before = pool.used
    pt.clear(600)
    assert pt.free_empty(0, VPN_LIMIT) == 1  # only the leaf of 600
    assert pool.used == before - 1
    assert pt.lookup(5) == pte(1)
    pt.clear(1 << 27)
    assert pt.free_empty(1 << 27, (1 << 27) + 1) == 3  # leaf, level-1, level-2
    assert pt.free_empty() == 0
    assert pt.iter_present()[0].tolist() == [5]
    assert pool.check_invariants([pt.root]) == []


def test_copy_range_cow_write_protects_only_writable_entries():
    pool = PageTablePool()
    parent, child = PageTable(pool), PageTable(pool)
    entries = {
        10: pte(1, P | W | D | Y),  # private writable: write-protected on both sides
        11: pte(2, P),  # read-only: untouched
        12: pte(3, PTE_SWAP),  # swap entry: copied as is
        13: pte(4, PTE_MIGRATION),  # readable migration entry: as is
        14: pte(5, P | PTE_SPECIAL),  # zero page
        # copy_nonpresent_pte: writable migration and device-private entries become
        # readable on both sides in a COW mapping
        15: pte(6, PTE_MIGRATION | W),
        16: pte(7, PTE_DEVICE_PRIVATE | W),
    }
    for v, e in entries.items():
        parent.set(v, e)
    vs, es = parent.copy_range(child, 0, 100, cow=True)
    expect = dict(entries)
    for v in (10, 15, 16):
        expect[v] = entries[v] & ~W
    assert dict(zip(vs.tolist(), es.tolist(), strict=True)) == expect
    assert {v: parent.lookup(v) for v in entries} == expect
    assert {v: child.lookup(v) for v in entries} == expect
    # shared mapping (cow=False): the write bit stays on both sides
    other = PageTable(pool)
    parent.set(10, entries[10])
    vs, es = parent.copy_range(other, 10, 11, cow=False)
    assert es.tolist() == [entries[10]]
    assert parent.lookup(10) == entries[10] and other.lookup(10) == entries[10]
    assert pool.check_invariants([parent.root, child.root, other.root]) == []
    with pytest.raises(ValueError):
        parent.copy_range(PageTable(PageTablePool()), 0, 10, cow=True)


def test_copy_range_of_huge_sparse_range_grows_pool_by_source_tables_only():
    pool = PageTablePool(capacity=8)
    parent, child = PageTable(pool), PageTable(pool)
    for v in (0, 1 << 20, 1 << 30, MAX_VPN - 1):
        parent.set(v, pte(v % 1000 + 1, P | W))
    vs, _ = parent.copy_range(child, 0, MAX_VPN, cow=True)
    assert len(vs) == 4
    assert pool.capacity <= 64
    assert pool.check_invariants([parent.root, child.root]) == []


def test_clear_range_returns_swap_and_migration_entries_and_dirty_bits():
    pt = PageTable()
    pt.map_range(0, [pte(1, P | W | D), pte(2, PTE_SWAP), pte(3, PTE_MIGRATION), 0, pte(5, P)])
    vs, es = pt.clear_range(0, 10)
    assert vs.tolist() == [0, 1, 2, 4]
    assert es.tolist() == [pte(1, P | W | D), pte(2, PTE_SWAP), pte(3, PTE_MIGRATION), pte(5, P)]
    assert pt.iter_present()[0].tolist() == []


def test_protect_range_skips_non_present_entries():
    pt = PageTable()
    pt.map_range(0, [pte(1, P | W), pte(2, PTE_SWAP | W), pte(3, P)])
    assert pt.protect_range(0, 3, W, 0) == 1
    assert pt.walk([0, 1, 2]).tolist() == [pte(1, P), pte(2, PTE_SWAP | W), pte(3, P)]
    vs, olds = pt.protect_range_entries(0, 3, 0, Y)
    assert vs.tolist() == [0, 2] and olds.tolist() == [pte(1, P), pte(3, P)]


def test_young_bits():
    pt = PageTable()
    pt.map_range(100, [pte(1, P | Y), pte(2, P), pte(3, PTE_SWAP | Y), pte(4, P | Y | W)])
    assert pt.test_young_range(0, 1000) == 2
    assert pt.test_young(100) and not pt.test_young(101) and not pt.test_young(102)
    assert pt.clear_young(100) and not pt.clear_young(100)
    assert pt.clear_young_range(0, 1000) == 1
    assert pt.test_young_range(0, 1000) == 0
    assert pt.lookup(102) == pte(3, PTE_SWAP | Y)


def test_map_range_of_zeros_allocates_nothing_and_counts_replaced():
    pool = PageTablePool()
    pt = PageTable(pool)
    assert pt.map_range(1 << 27, np.zeros(2000, dtype=np.uint64)) == 0
    assert pool.used == 1
    assert pt.map_range(10, [pte(1), pte(2)]) == 0
    assert pt.map_range(11, [pte(3), pte(4)]) == 1
    assert pt.map_range(10, [0, 0, 0]) == 3
    assert pt.iter_present()[0].tolist() == []


def test_pool_grows_and_is_shared_and_destroy_frees_everything():
    pool = PageTablePool(capacity=2)
    a, b = PageTable(pool), PageTable(pool)
    a.map_range(0, np.full(5000, pte(9), dtype=np.uint64))
    b.map_range(1 << 30, np.full(3000, pte(8), dtype=np.uint64))
    assert pool.grows > 0
    assert pool.check_invariants([a.root, b.root]) == []
    assert "PageTablePool" in repr(pool) and "tables=" in repr(a)
    used = pool.used
    assert a.destroy() + b.destroy() == used
    assert pool.used == 0 and pool.check_invariants([]) == []
    assert repr(a) == "<PageTable destroyed>"
    with pytest.raises(RuntimeError):
        a.set(0, pte(1))


def test_check_invariants_reports_corruption():
    pool = PageTablePool()
    pt = PageTable(pool)
    pt.set(0, pte(1))
    assert pool.check_invariants([pt.root]) == []
    assert any("reachable from no root" in p for p in pool.check_invariants([]))
    leaf = int(pool.nodes[int(pool.nodes[int(pool.nodes[pt.root, 0]), 0]), 0])
    pool.free[pool.nfree] = leaf  # put a live table on the free stack
    pool.meta[M_NFREE] += 1
    pool.meta[M_USED] -= 1
    problems = pool.check_invariants([pt.root])
    assert any("free nodes not zeroed" in p for p in problems)
    assert any("reachable nodes on the free stack" in p for p in problems)


def test_large_ranges_resume_across_scratch_buffers():
    pt = PageTable()
    n = pagetable.SCRATCH * 2 + 17
    entries = (np.arange(1, n + 1, dtype=np.uint64) << np.uint64(PFN_SHIFT)) | np.uint64(P | W)
    pt.map_range(1000, entries)
    vs, es = pt.iter_present()
    assert len(vs) == n and np.array_equal(es, entries)
    assert pt.protect_range(0, VPN_LIMIT, W, 0) == n
    child = PageTable(pt.pool)
    vs, es = pt.copy_range(child, 0, VPN_LIMIT, cow=True)
    assert len(vs) == n
    vs, es = pt.clear_range(0, VPN_LIMIT)
    assert np.array_equal(vs, np.arange(1000, 1000 + n)) and np.array_equal(
        es, entries & ~np.uint64(W)
    )


# -- huge PMDs (transparent huge pages) through the PageTable wrapper -----------------------

H = PTE_HUGE


def test_huge_pmd_lookup_walk_and_single_page_changes():
    pool = PageTablePool(capacity=2)
    pt = PageTable(pool)
    word = pte(1024, P | W | Y | D) | H
    assert pt.set_pmd(512 + 7, word) == 0          # any vpn of the PMD names its slot
    assert pt.lookup_pmd(512) == pt.lookup_pmd(1023) == word and pt.lookup_pmd(1024) == 0
    assert pt.lookup(512) == word and pt.lookup(512 + 9) == pte(1024 + 9, P | W | Y | D) | H
    assert pt.walk([511, 512, 1000, 1024]).tolist() == [
        0, word, pte(1024 + 488, P | W | Y | D) | H, 0]
    for call in (lambda: pt.set(600, pte(5)), lambda: pt.clear(600),
                 lambda: pt.map_range(1000, [pte(5)] * 3)):
        with pytest.raises(RuntimeError, match="huge PMD"):
            call()
    assert pt.lookup_pmd(512) == word              # nothing changed
    assert pool.check_invariants([pt.root]) == []
    assert pt.count_tables() == 2                  # levels 2 and 1: the PMD is no table


def test_huge_pmd_is_one_entry_of_the_range_kernels_and_partial_ranges_raise():
    pt = PageTable(PageTablePool(capacity=2))
    word = pte(2048, P | W | Y) | H
    pt.set_pmd(512, word)
    pt.set(1024, pte(9, P | W))
    vs, es = pt.iter_present(600, 1025)            # overlaps the PMD: reported once
    assert vs.tolist() == [512, 1024] and es.tolist() == [word, pte(9, P | W)]
    assert pt.test_young_range(700, 701) == 1
    with pytest.raises(RuntimeError, match="only in part"):
        pt.protect_range(600, 1025, W)
    assert pt.lookup_pmd(512) == word              # a partly covered PMD is left unchanged
    assert pt.protect_range(512, 1024, W) == 1     # change_huge_pmd
    assert pt.lookup_pmd(512) == word & ~W
    child = PageTable(pt.pool)
    vs, es = pt.copy_range(child, 0, 2048, True)
    assert vs.tolist() == [512, 1024] and child.lookup_pmd(512) == word & ~W
    assert pt.lookup(1024) == child.lookup(1024) == pte(9, P)
    with pytest.raises(RuntimeError, match="only in part"):
        pt.clear_range(513, 1024)
    vs, es = pt.clear_range(0, 2048)               # whole: cleared, one entry
    assert vs.tolist() == [512, 1024] and es.tolist() == [word & ~W, pte(9, P)]
    assert pt.lookup(700) == 0 and pt.lookup_pmd(700) == 0
    assert pt.pool.check_invariants([pt.root, child.root]) == []


def test_split_pmd_gives_512_ptes_and_the_huge_zero_page_splits_to_the_zero_page():
    pt = PageTable(PageTablePool(capacity=2))
    pt.set_pmd(512, pte(4096, P | Y | D | W) | H)
    assert pt.split_pmd(600) == pte(4096, P | Y | D | W) | H
    assert pt.lookup_pmd(512) == 0
    vs, es = pt.iter_present(0, 2048)
    assert vs.tolist() == list(range(512, 1024))
    assert es.tolist() == [pte(4096 + i, P | Y | D | W) for i in range(512)]
    assert pt.split_pmd(600) == 0                  # nothing left to split
    pt.set_pmd(1024 + 512, pte(77, P | PTE_SPECIAL | Y) | H)     # the huge zero page
    pt.split_pmd(1024 + 512, new_pfn=1, pfn_step=0)              # -> the 4 KiB zero page
    assert set(pt.iter_present(1536, 2048)[1].tolist()) == {pte(1, P | PTE_SPECIAL | Y)}


def test_set_pmd_frees_an_empty_pte_table_and_refuses_a_used_one():
    pool = PageTablePool(capacity=2)
    pt = PageTable(pool)
    pt.set(512, pte(3))
    with pytest.raises(RuntimeError, match="PTE table with entries"):
        pt.set_pmd(512, pte(1024) | H)
    pt.clear(512)                                  # the table is empty now (still there)
    used = pool.used
    assert pt.set_pmd(512, pte(1024) | H) == 0     # collapse: the empty table goes
    assert pool.used == used - 1
    assert pt.set_pmd(512, 0) == pte(1024) | H and pt.lookup(600) == 0
    assert pool.check_invariants([pt.root]) == []


def test_touch_sets_bits_on_the_pte_or_the_pmd():
    pt = PageTable(PageTablePool(capacity=2))
    pt.set_pmd(0, pte(512, P | W) | H)
    pt.set(512, pte(3, P))
    assert pt.touch(5, Y | D) == pte(517, P | W) | H
    assert pt.lookup_pmd(0) == pte(512, P | W | Y | D) | H
    assert pt.touch(512, Y) == pte(3, P) and pt.lookup(512) == pte(3, P | Y)
    assert pt.touch(4096, Y) == 0 and pt.lookup(4096) == 0


def test_range_resumption_skips_a_whole_huge_pmd():
    saved = pagetable.SCRATCH
    pagetable.SCRATCH = 1
    try:
        pt = PageTable(PageTablePool(capacity=2))
        pt.set_pmd(512, pte(1024, P | W) | H)
        pt.set(1024, pte(5))
        vs, _ = pt.iter_present(0, 4096)
        assert vs.tolist() == [512, 1024]
        child = PageTable(pt.pool)
        assert pt.copy_range(child, 0, 4096, False)[0].tolist() == [512, 1024]
        assert pt.protect_range_entries(0, 4096, W)[0].tolist() == [512]
    finally:
        pagetable.SCRATCH = saved


def test_free_empty_and_destroy_step_over_huge_pmds():
    pool = PageTablePool(capacity=2)
    pt = PageTable(pool)
    pt.set_pmd(512, pte(1024) | H)
    pt.set(3, pte(2))
    pt.clear(3)
    assert pt.free_empty() == 1                    # the empty PTE table, not the PMD's table
    assert pt.lookup_pmd(512) == pte(1024) | H
    assert pool.check_invariants([pt.root]) == []
    pt.destroy()
    assert pool.used == 0 and not pool.nodes.any()
