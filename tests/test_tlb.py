"""The jitted TLB against its pure-Python reference, plus edge cases and error messages."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shared_kit import Recorder

from smmu.base.constants import PAGE_SHIFT, PAGE_SIZE
from smmu.devices.tlb import ASID_LIMIT, TLB, VPN_LIMIT
from smmu.devices.tlb_ref import RefTLB

# degenerate (1 way), odd ways, a typical 8-way; PLRU from a 1-level to a 4-level tree.
# Each (ways, policy) pair compiles its own batch kernels, so the list stays short.
GEOMETRIES = [(1, 1, "lru"), (2, 3, "lru"), (4, 8, "lru"),
              (2, 1, "plru"), (1, 4, "plru"), (8, 16, "plru")]


# -- differential: random operation sequences ------------------------------------------------

asids = st.integers(0, 1)
# few distinct pages, so sets conflict, flush bounds land on cached pages and hits happen
vpns = st.one_of(st.integers(0, 24), st.integers(VPN_LIMIT - 4, VPN_LIMIT - 1))
pfns = st.integers(0, 1 << 20)
gens = st.integers(0, (1 << 32) - 1)
fills = st.one_of(
    st.tuples(st.just("insert"), asids, vpns, pfns, st.booleans(), gens),
    st.tuples(st.just("access_stream"), asids, st.lists(vpns, max_size=16), st.booleans(),
              gens),
)
lookups = st.one_of(
    st.tuples(st.just("lookup"), asids, vpns, st.booleans()),
    st.tuples(st.just("lookup_batch"), asids, st.lists(vpns, max_size=12), st.booleans()),
    st.tuples(st.just("peek"), asids, vpns),
)
flushes = st.one_of(
    st.tuples(st.just("flush_page"), asids, vpns),
    st.tuples(st.just("flush_range"), asids, vpns,
              st.one_of(st.integers(0, 6), st.integers(0, 70)),
              st.sampled_from(["auto", "probe", "scan"])),
    st.tuples(st.just("flush_asid"), asids),
    st.tuples(st.just("flush_all")),
)
# out-of-range arguments: both must refuse and change nothing
bad = st.one_of(
    st.tuples(st.just("insert"), st.sampled_from([-1, ASID_LIMIT]), vpns, pfns,
              st.booleans(), gens),
    st.tuples(st.just("lookup"), asids, st.sampled_from([-1, VPN_LIMIT]), st.booleans()),
    st.tuples(st.just("flush_range"), asids, st.just(5), st.just(-3), st.just("auto")),
)
ops = st.one_of(fills, fills, lookups, lookups, flushes, bad)

def apply(tlb, op):
    name, *args = op
    try:
        if name in ("lookup_batch", "access_stream"):
            arr = np.array(args[1], dtype=np.int64)
            if name == "lookup_batch":
                pfn, hit = tlb.lookup_batch(args[0], arr, args[2])
                return ("ok", pfn.tolist(), hit.tolist())
            return ("ok", tlb.access_stream(args[0], arr, arr * 3 + 1, args[2], args[3]))
        if name == "flush_range":
            asid, vpn0, length, method = args
            return ("ok", tlb.flush_range(asid, vpn0, vpn0 + length, method))
        return ("ok", getattr(tlb, name)(*args))
    except ValueError as e:
        return ("error", str(e))


def assert_same_state(fast, ref):
    fe, re_ = fast.entries(), ref.entries()
    for field in fe._fields:
        a, b = getattr(fe, field), getattr(re_, field)
        assert a.dtype == b.dtype, field
        assert a.tolist() == b.tolist(), field
    assert fast.stats() == ref.stats()
    assert len(fast) == len(ref) == len(fe.vpn)


@pytest.mark.parametrize("sets,ways,policy", GEOMETRIES)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=st.lists(ops, min_size=20, max_size=80), observed=st.booleans())
def test_tlb_matches_reference(sets, ways, policy, seq, observed):
    obs_fast, obs_ref = (Recorder(), Recorder()) if observed else (None, None)
    fast = TLB(sets, ways, policy, name="t", observer=obs_fast)
    ref = RefTLB(sets, ways, policy, name="t", observer=obs_ref)
    for op in seq:
        assert apply(fast, op) == apply(ref, op), op
        assert_same_state(fast, ref)
    if observed:
        assert obs_fast.calls == obs_ref.calls


def random_ops(rng, n):
    """A long seeded op sequence: rarer coincidences than hypothesis reaches in 80 short runs
    (a flush bound exactly on a cached page, a full set under a given tree state)."""
    for _ in range(n):
        kind = rng.integers(9)
        asid, vpn = int(rng.integers(2)), int(rng.integers(24))
        if kind <= 2:
            yield ("insert", asid, vpn, int(rng.integers(1 << 20)), bool(rng.integers(2)),
                   int(rng.integers(1 << 32)))
        elif kind == 3:
            yield ("access_stream", asid, rng.integers(24, size=rng.integers(12)).tolist(),
                   bool(rng.integers(2)), 7)
        elif kind <= 5:
            yield ("lookup", asid, vpn, bool(rng.integers(2)))
        elif kind == 6:
            yield ("flush_range", asid, vpn, int(rng.integers(10)),
                   ["auto", "probe", "scan"][rng.integers(3)])
        elif kind == 7:
            yield ("flush_page", asid, vpn)
        else:
            yield (("flush_asid", asid), ("flush_all",), ("peek", asid, vpn))[rng.integers(3)]


@pytest.mark.parametrize("sets,ways,policy", GEOMETRIES)
def test_long_random_sequences_match_reference(sets, ways, policy):
    fast, ref = TLB(sets, ways, policy), RefTLB(sets, ways, policy)
    for op in random_ops(np.random.default_rng(sets * 100 + ways), 3000):
        assert apply(fast, op) == apply(ref, op), op
    assert_same_state(fast, ref)


# -- replacement policies, worked by hand ------------------------------------------------------

def test_lru_evicts_least_recently_used():
    t = TLB(sets=1, ways=2, policy="lru")
    assert t.insert(0, 10, 1, True, 0) == -1
    assert t.insert(0, 11, 2, True, 0) == -1
    assert t.lookup(0, 10) == 1                  # 11 is now least recently used
    assert t.insert(0, 12, 3, True, 0) == 11
    assert t.lookup(0, 11) == -1 and t.lookup(0, 10) == 1 and t.lookup(0, 12) == 3
    assert t.evictions == 1


@pytest.mark.parametrize("cls", [TLB, RefTLB])
def test_plru_tree_victim(cls):
    t = cls(sets=1, ways=4, policy="plru")
    for vpn in range(4):                          # fills ways 0..3 in order
        t.insert(0, vpn, vpn, False, 0)
    # after touching 0,1,2,3 in turn the tree points at way 0; touching it moves the
    # root right, where way 3 was used after way 2: the victim is way 2 (vpn 2)
    assert t.lookup(0, 0) == 0
    assert t.insert(0, 9, 9, False, 0) == 2
    assert sorted(t.entries().vpn.tolist()) == [0, 1, 3, 9]


@pytest.mark.parametrize("policy", ["lru", "plru"])
def test_flushed_way_is_refilled_before_any_eviction(policy):
    t = TLB(sets=1, ways=4, policy=policy)
    for vpn in range(4):
        t.insert(0, vpn, vpn, True, 0)
    assert t.flush_page(0, 2) == 1
    assert t.insert(0, 7, 7, True, 0) == -1      # took the free way, evicted nothing
    assert t.entries().vpn.tolist() == [0, 1, 7, 3]
    assert t.evictions == 0


def test_access_stream_matches_pycachesim_lru():
    import cachesim  # pycachesim, a dev dependency (pyproject [dev])
    rng = np.random.default_rng(3)
    stream = (rng.zipf(1.3, 20_000) % 700).astype(np.int64)
    mem = cachesim.MainMemory()
    cache = cachesim.Cache("tlb", 16, 4, PAGE_SIZE, "LRU")
    mem.load_to(cache)
    mem.store_from(cache)
    sim = cachesim.CacheSimulator(cache, mem)
    sim.load((stream << PAGE_SHIFT).tolist())
    t = TLB(16, 4, "lru")
    assert t.access_stream(0, stream) == cache.stats()["HIT_count"]


# -- semantics at the edges ---------------------------------------------------------------------

def test_write_lookup_misses_read_only_entry_until_reinserted_writable():
    t = TLB(4, 2)
    t.insert(1, 8, 42, False, 5)
    assert t.lookup(1, 8) == 42
    assert t.lookup(1, 8, write=True) == -1
    assert t.insert(1, 8, 42, True, 5) == -1     # updated in place, no eviction
    assert t.lookup(1, 8, write=True) == 42
    assert len(t) == 1 and t.stats()["misses"] == 1


def test_asids_are_separate_address_spaces():
    t = TLB(8, 2)
    t.insert(1, 3, 100, True, 0)
    t.insert(2, 3, 200, True, 0)
    assert (t.lookup(1, 3), t.lookup(2, 3), t.lookup(3, 3)) == (100, 200, -1)
    assert t.flush_asid(1) == 1
    assert (t.lookup(1, 3), t.lookup(2, 3)) == (-1, 200)
    assert t.flush_range(2, 0, 100) == 1 and len(t) == 0


@pytest.mark.parametrize("method", ["auto", "probe", "scan"])
def test_flush_range_is_half_open_and_clips_the_end(method):
    t = TLB(4, 4)
    for vpn in (9, 10, 11, 12, VPN_LIMIT - 1):
        t.insert(0, vpn, vpn, True, 0)
    assert t.flush_range(0, 10, 12, method) == 2       # 10 and 11, not 12
    assert sorted(t.entries().vpn.tolist()) == [9, 12, VPN_LIMIT - 1]
    assert t.flush_range(0, VPN_LIMIT - 1, 1 << 70, method) == 1      # beyond int64 too
    assert t.flush_range(0, 5, 5, method) == 0         # empty range


def test_entries_gives_typed_arrays():
    t = TLB(4, 2)
    t.insert(3, 17, 5, True, (1 << 32) - 1)
    e = t.entries()
    assert e.asid.tolist() == [3] and e.vpn.tolist() == [17] and e.pfn.tolist() == [5]
    assert e.writable.dtype == np.bool_ and e.writable.tolist() == [True]
    assert e.gen.dtype == np.uint32 and e.gen.tolist() == [(1 << 32) - 1]
    assert t.peek(3, 17) == (5, True, (1 << 32) - 1) and t.peek(3, 18) is None
    assert t.stats()["hits"] == 0                        # peek changes nothing


def test_observer_hears_each_flush_once_and_each_eviction():
    rec = Recorder()
    t = TLB(sets=1, ways=1, observer=rec)
    t.insert(0, 5, 50, True, 0)
    t.insert(0, 6, 60, False, 0)                   # evicts vpn 5
    t.flush_range(0, 0, 4096)
    t.flush_page(0, 6)
    t.flush_all()
    five, six = 5 << PAGE_SHIFT, 6 << PAGE_SHIFT
    assert rec.calls == [("map", five, 50, True),
                         ("unmap", five, five + PAGE_SIZE), ("map", six, 60, False),
                         ("unmap", 0, 4096 << PAGE_SHIFT),
                         ("unmap", six, six + PAGE_SIZE),
                         ("unmap", 0, VPN_LIMIT << PAGE_SHIFT)]
    with pytest.raises(ValueError, match="observer"):
        t.access_stream(0, np.arange(4))


def test_lookup_batch_accepts_lists_and_other_int_dtypes():
    t = TLB(4, 2)
    t.insert(0, 1, 11, True, 0)
    pfn, hit = t.lookup_batch(0, np.array([1, 2], dtype=np.int32))
    assert pfn.tolist() == [11, -1] and hit.tolist() == [True, False]
    pfn, hit = t.lookup_batch(0, [])
    assert pfn.shape == (0,)
    with pytest.raises(ValueError, match="1-d integer array"):
        t.lookup_batch(0, np.array([1.5]))


def test_repr_is_readable():
    t = TLB(8, 2, "plru", name="gru0")
    t.insert(0, 1, 2, True, 0)
    assert repr(t) == ("TLB('gru0', sets=8, ways=2, policy='plru', valid=1/16, hits=0, "
                       "misses=0, inserts=1, flushes=0)")
    assert repr(RefTLB(8, 2, "plru", name="gru0")).startswith("RefTLB('gru0', sets=8")


# -- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    ({"sets": 0}, "sets must be a power of two"),
    ({"sets": 48}, "sets must be a power of two"),
    ({"sets": 4.0}, "sets must be a power of two"),
    ({"ways": 0}, "ways must be an integer >= 1"),
    ({"policy": "fifo"}, "policy must be one of 'lru', 'plru'"),
    ({"policy": "plru", "ways": 6}, "power of two.*policy='lru'"),
    ({"policy": "plru", "ways": 128}, "power of two <= 64"),
])
@pytest.mark.parametrize("cls", [TLB, RefTLB])
def test_bad_geometry_says_what_to_fix(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


@pytest.mark.parametrize("call", [
    lambda t: t.insert(0, -1, 1, True, 0),
    lambda t: t.insert(ASID_LIMIT, 1, 1, True, 0),
    lambda t: t.insert(0, 1, 1 << 40, True, 0),
    lambda t: t.insert(0, 1, 1, True, 1 << 32),
    lambda t: t.lookup(0, VPN_LIMIT),
    lambda t: t.lookup_batch(0, np.array([1, -2])),
    lambda t: t.access_stream(0, np.array([1, 2]), np.array([1, 1 << 41])),
    lambda t: t.flush_range(0, 10, 9),
    lambda t: t.flush_range(-1, 0, 10),
    lambda t: t.flush_asid(-1),
])
def test_out_of_range_arguments_raise_and_change_nothing(call):
    t = TLB(4, 2)
    t.insert(0, 1, 7, True, 0)
    before = (t.stats(), t.entries().vpn.tolist())
    with pytest.raises(ValueError, match="out of range"):
        call(t)
    assert (t.stats(), t.entries().vpn.tolist()) == before


def test_flush_range_rejects_unknown_method():
    with pytest.raises(ValueError, match="'auto', 'probe', 'scan'"):
        TLB().flush_range(0, 0, 1, method="fast")
