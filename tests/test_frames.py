"""Frame-table kernels against their pure-Python reference, FrameTable against a dict model,
and the edge cases: pfn 0 reserved, LIFO reuse, generation bumps, growth, failure injection,
refcount errors and the invariant checker."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import primary_mm.frames as F
import primary_mm.frames_ref as FR
from primary_mm.frames import (
    F_NERR,
    F_NFREE,
    FMETA_SIZE,
    FRAME_ANON,
    FRAME_DIRTY,
    FRAME_FILE,
    FRAME_KSM,
    FrameStateError,
    FrameTable,
)
from smmu.base.errors import OutOfMemory

# -- differential: kernels vs reference on copies of the same arrays -------------------------

ARRAYS = (
    "free_stack",
    "meta",
    "refcount",
    "mapcount",
    "pincount",
    "flags",
    "generation",
    "owner",
    "contents",
)


def raw_table(n):
    t = {
        "refcount": np.zeros(n, np.int32),
        "mapcount": np.zeros(n, np.int32),
        "pincount": np.zeros(n, np.int32),
        "flags": np.zeros(n, np.uint32),
        "generation": np.full(n, 0xFFFFFFFE, np.uint32),  # wraps around within a few frees
        "owner": np.full(n, -1, np.int32),
        "contents": np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15),
        "free_stack": np.zeros(n, np.int64),
        "meta": np.zeros(FMETA_SIZE, np.int64),
    }
    t["free_stack"][: n - 1] = np.arange(n - 1, 0, -1)
    t["meta"][F_NFREE] = n - 1
    return t


NFRAMES = 12
pfn_lists = st.lists(st.integers(-1, NFRAMES + 1), max_size=10)
frame_ops = st.one_of(
    st.tuples(
        st.just("alloc"),
        st.integers(0, 6),
        st.integers(-1, 3),
        st.sampled_from([0, FRAME_ANON, FRAME_FILE | FRAME_DIRTY]),
        st.booleans(),
    ),
    st.tuples(st.just("get"), pfn_lists, st.booleans()),
    st.tuples(st.just("put"), pfn_lists, st.booleans()),
    st.tuples(st.just("put"), pfn_lists, st.booleans()),
    st.tuples(st.just("mapcount"), pfn_lists, st.sampled_from([1, -1])),
    st.tuples(st.just("alloc_huge"), st.sampled_from([2, 3, 4]), st.integers(-1, 3),
              st.sampled_from([FRAME_ANON, FRAME_ANON | FRAME_DIRTY]), st.booleans()),
)


def run_frame_op(mod, t, op):
    name, *args = op
    if name == "alloc":
        n, owner, flags, zero = args
        out = np.zeros(n, np.int64)
        got = mod.frames_alloc(
            t["free_stack"],
            t["meta"],
            t["refcount"],
            t["mapcount"],
            t["pincount"],
            t["flags"],
            t["owner"],
            t["contents"],
            n,
            owner,
            np.uint32(flags),
            zero,
            out,
        )
        return int(got), out.tolist()
    if name == "alloc_huge":
        nr, owner, flags, zero = args
        return int(mod.frames_alloc_huge(
            t["free_stack"], t["meta"], t["refcount"], t["mapcount"], t["pincount"],
            t["flags"], t["owner"], t["contents"], nr, owner, np.uint32(flags), zero))
    pfns = np.array(args[0], dtype=np.int64)
    if name == "get":
        return int(mod.frames_get(t["meta"], t["refcount"], t["pincount"], pfns, args[1]))
    if name == "put":
        out = np.zeros(len(pfns), np.int64)
        got = int(
            mod.frames_put(
                t["free_stack"],
                t["meta"],
                t["refcount"],
                t["mapcount"],
                t["pincount"],
                t["flags"],
                t["generation"],
                t["owner"],
                pfns,
                args[1],
                out,
            )
        )
        return got, out[:got].tolist()
    if name == "mapcount":
        return int(mod.frames_mapcount_add(t["meta"], t["refcount"], t["mapcount"], pfns, args[1]))
    raise AssertionError(name)


@settings(max_examples=100, deadline=None)
@given(program=st.lists(frame_ops, min_size=3, max_size=40))
def test_frame_kernels_match_reference(program):
    jit = raw_table(NFRAMES)
    ref = {k: v.copy() for k, v in jit.items()}
    for op in program:
        assert run_frame_op(F, jit, op) == run_frame_op(FR, ref, op), op
        for name in ARRAYS:
            assert np.array_equal(jit[name], ref[name]), (op, name)


# -- FrameTable against a dict model ------------------------------------------------------------

table_ops = st.one_of(
    st.tuples(st.just("alloc"), st.integers(0, 5), st.integers(-1, 2)),
    st.tuples(st.just("get"), st.integers(0, 30)),
    st.tuples(st.just("pin"), st.integers(0, 30)),
    st.tuples(st.just("put"), st.integers(0, 30)),
    st.tuples(st.just("put"), st.integers(0, 30)),
    st.tuples(st.just("unpin"), st.integers(0, 30)),
    st.tuples(st.just("map"), st.integers(0, 30)),
    st.tuples(st.just("unmap"), st.integers(0, 30)),
    st.tuples(st.just("fail_after"), st.integers(0, 4)),
)


@settings(max_examples=80, deadline=None)
@given(program=st.lists(table_ops, min_size=3, max_size=40))
@example(program=[("alloc", 1, 0), ("pin", 0), ("pin", 0), ("put", 0), ("put", 0)])
def test_frametable_matches_model(program):
    ft = FrameTable(nframes=4)
    live = {}  # pfn -> [refcount, mapcount, pincount, generation at allocation]
    gens = {}  # pfn -> generation
    order = []  # allocation order of live pfns, to pick targets by index
    budget = None
    for op in program:
        name, arg = op[0], op[1]
        if name == "fail_after":
            ft.fail_after(arg)
            budget = arg
            continue
        if name == "alloc":
            owner = op[2]
            if budget is not None and arg > budget:
                with pytest.raises(OutOfMemory):
                    ft.alloc(arg, owner=owner)
                budget = None
                continue
            if budget is not None:
                budget -= arg
            pfns = ft.alloc(arg, owner=owner, flags=FRAME_ANON)
            assert len(set(pfns.tolist())) == arg and 0 not in pfns.tolist()
            for p in pfns.tolist():
                assert p not in live
                live[p] = [1, 0, 0]
                order.append(p)
                assert ft.owner[p] == owner and ft.refcount[p] == 1 and ft.contents[p] == 0
                assert ft.generation[p] == gens.get(p, 0)
            continue
        if not order:
            continue
        p = order[arg % len(order)]
        rc, mc, pc = live[p]
        if name in ("get", "pin"):
            getattr(ft, name)(p)
            live[p] = [rc + 1, mc, pc + (name == "pin")]
        elif name == "map":
            ft.inc_mapcount(p)
            live[p][1] += 1
        elif name == "unmap":
            if mc == 0:
                with pytest.raises(FrameStateError, match="mapcount"):
                    ft.dec_mapcount(p)
            else:
                ft.dec_mapcount(p)
                live[p][1] -= 1
        elif name in ("put", "unpin"):
            if name == "unpin" and pc == 0:
                with pytest.raises(FrameStateError, match="pincount"):
                    ft.unpin(p)
                continue
            if name == "put" and rc <= pc:
                # the references left all belong to pins: only unpin drops them
                with pytest.raises(FrameStateError, match="use unpin"):
                    ft.put(p)
                assert (ft.refcount[p], ft.pincount[p]) == (rc, pc)
                continue
            pc -= name == "unpin"
            if rc == 1 and (mc or pc):
                with pytest.raises(FrameStateError, match="still mapped or pinned"):
                    getattr(ft, name)(p)
                freed = [p]
            else:
                freed = getattr(ft, name)(p).tolist()
            if rc == 1:
                assert freed == [p]
                del live[p]
                order.remove(p)
                gens[p] = gens.get(p, 0) + 1
                assert ft.owner[p] == -1 and ft.flags[p] == 0 and ft.is_free(p)
            else:
                assert freed == []
                live[p] = [rc - 1, mc, pc]
        assert ft.check_invariants() == [], op
    for p, (rc, mc, pc) in live.items():
        assert (ft.refcount[p], ft.mapcount[p], ft.pincount[p]) == (rc, mc, pc)
    assert ft.nallocated == len(live)


# -- edge cases --------------------------------------------------------------------------------


def test_pfn0_reserved_and_lifo_reuse_bumps_generation():
    ft = FrameTable(nframes=8)
    pfns = ft.alloc(7)
    assert sorted(pfns.tolist()) == list(range(1, 8))
    assert pfns.tolist() == list(range(1, 8))  # increasing at first
    ft.contents[3] = 1234
    gen = int(ft.generation[3])
    assert ft.put(3).tolist() == [3]
    assert ft.generation[3] == gen + 1
    assert ft.contents[3] == 1234  # garbage kept
    assert ft.alloc_one(owner=5, zero=False) == 3  # the frame just freed comes back first
    assert ft.contents[3] == 1234 and ft.owner[3] == 5
    assert ft.alloc_one() == 8  # table doubled
    assert ft.nframes == 16
    assert ft.check_invariants() == []


def test_growth_preserves_state():
    ft = FrameTable(nframes=2)
    a = ft.alloc(1, owner=1, flags=FRAME_KSM)
    ft.get(a)
    ft.contents[a] = 77
    more = ft.alloc(100)
    assert ft.nframes >= 101
    assert ft.refcount[a[0]] == 2 and ft.owner[a[0]] == 1 and ft.contents[a[0]] == 77
    assert ft.test_flags(a[0], FRAME_KSM)
    assert len(set(more.tolist()) | {int(a[0])}) == 101
    assert ft.check_invariants() == []


def test_max_frames_raises_out_of_memory_and_changes_nothing():
    ft = FrameTable(nframes=4, max_frames=8)
    ft.alloc(7)
    before = {name: getattr(ft, name).copy() for name in ARRAYS}
    with pytest.raises(OutOfMemory):
        ft.alloc(1)
    for name in ARRAYS:
        assert np.array_equal(getattr(ft, name), before[name])
    ft.put(4)
    assert ft.alloc_one() == 4


def test_failure_injection():
    ft = FrameTable()
    ft.fail_next()
    with pytest.raises(OutOfMemory, match="injected"):
        ft.alloc_one()
    assert ft.nallocated == 0 and ft.failures_injected == 1
    ft.alloc_one()  # one-shot
    ft.fail_after(3)
    ft.alloc(2)
    with pytest.raises(OutOfMemory):
        ft.alloc(2)  # would be the 4th frame: the whole batch fails, nothing allocated
    assert ft.nallocated == 3
    ft.fail_after(0)
    ft.clear_fail()
    ft.alloc(5)
    assert "FrameTable" in repr(ft)
    ft.fail_after(1)
    assert "failing after 1" in repr(ft)


def test_refcount_errors_name_the_pfn():
    ft = FrameTable()
    p = ft.alloc_one()
    ft.put(p)
    with pytest.raises(FrameStateError, match=f"put: pfn {p}: frame is free"):
        ft.put(p)
    with pytest.raises(FrameStateError, match="pfn 0"):
        ft.get(0)
    with pytest.raises(FrameStateError, match="out of range"):
        ft.get(10**6)
    q = ft.alloc_one()
    # a batch with one bad entry: the good ones are applied, then the error is raised
    with pytest.raises(FrameStateError, match="and 1 more"):
        ft.get([q, 0, -3])
    assert ft.refcount[q] == 2
    assert ft.check_invariants() == []


def test_pins_hold_references():
    ft = FrameTable()
    p = ft.alloc_one()
    ft.pin([p, p])
    assert (ft.refcount[p], ft.pincount[p]) == (3, 2)
    assert ft.unpin(p).tolist() == []
    assert ft.put(p).tolist() == []
    assert ft.unpin(p).tolist() == [p]
    assert ft.is_free(p) and ft.check_invariants(strict=True) == []


def test_put_cannot_drop_a_pins_reference():
    """A pin holds a reference (GUP_PIN_COUNTING_BIAS) that only unpin drops: a put that
    would leave refcount < pincount is refused, naming unpin, and changes nothing."""
    ft = FrameTable()
    p = ft.alloc_one()
    ft.pin([p, p])
    ft.put(p)                                          # the allocation's reference
    with pytest.raises(FrameStateError, match=f"put: pfn {p}: .*use unpin"):
        ft.put(p)
    assert (ft.refcount[p], ft.pincount[p]) == (2, 2)
    assert ft.check_invariants(strict=True) == []
    assert ft.unpin([p, p]).tolist() == [p]
    assert ft.is_free(p)


def test_batch_put_frees_duplicates_once():
    ft = FrameTable()
    a, b = ft.alloc(2).tolist()
    ft.get(a)
    assert ft.put([a, b, a]).tolist() == [b, a]
    assert ft.nallocated == 0


def test_check_invariants_reports_problems():
    ft = FrameTable()
    p, q, r = ft.alloc(3).tolist()
    ft.inc_mapcount([p, p])
    assert ft.check_invariants() == []
    assert any("mapcount + pincount" in s for s in ft.check_invariants(strict=True))
    ft.pincount[q] = 5
    ft.refcount[r] = 0  # allocated but lost
    free_pfn = int(ft.free_stack[ft.nfree - 1])
    ft.owner[free_pfn] = 3
    problems = "\n".join(ft.check_invariants())
    assert f"pincount > refcount: pfns [{q}]" in problems
    assert f"allocated frame with refcount <= 0 (leaked or lost): pfns [{r}]" in problems
    assert f"free frame with an owner: pfns [{free_pfn}]" in problems
    ft.meta[F_NERR] = 1
    assert any("pending" in s for s in ft.check_invariants())


def test_describe_and_flags():
    ft = FrameTable()
    p = ft.alloc_one(owner=2, flags=FRAME_ANON)
    ft.set_flags(p, FRAME_DIRTY)
    d = ft.describe(p)
    assert d["flags"] == ["anon", "dirty"] and d["owner"] == 2 and not d["free"]
    ft.clear_flags([p], FRAME_ANON)
    assert not ft.test_flags(p, FRAME_ANON) and ft.test_flags(p, FRAME_DIRTY)


def test_single_pfn_calls_do_not_share_returned_arrays():
    ft = FrameTable()
    a, b = ft.alloc_one(), ft.alloc_one()
    freed_a = ft.put(a)
    freed_b = ft.put(np.int64(b))
    assert freed_a.tolist() == [a] and freed_b.tolist() == [b]
    pfns = ft.alloc(3)
    assert ft.alloc_one() not in pfns.tolist()


def test_alloc_huge_gives_an_aligned_compound_block_and_grows_for_one():
    f = FrameTable(1024)
    single = f.alloc_one()
    head = f.alloc_huge(owner=3, flags=FRAME_ANON)
    assert head == 512 and head % 512 == 0 and single == 1     # block 0 holds pfn 0
    block = np.arange(head, head + 512)
    assert (f.refcount[block] == 1).all() and (f.owner[block] == 3).all()
    assert ((f.flags[block] & (F.FRAME_COMPOUND | FRAME_ANON)) ==
            (F.FRAME_COMPOUND | FRAME_ANON)).all()
    assert not set(f.free_stack[: f.nfree].tolist()) & set(block.tolist())
    head2 = f.alloc_huge()                         # no aligned free block left: grows
    assert f.nframes == 2048 and head2 == 1024
    assert "compound" in f.describe(head2)["flags"]
    f.put(block)                                   # every frame freed by itself
    assert f.is_free(head) and f.flags[head] == 0 and not f.check_invariants()
    assert f.alloc_huge() == head                  # the freed block is reused
    f.fail_after(511)
    with pytest.raises(OutOfMemory):
        f.alloc_huge()


# -- one pfn (an int) through the single-frame kernels = the same pfn as an array -------------

one_ops = st.lists(st.tuples(st.sampled_from(["alloc", "get", "pin", "put", "unpin", "map",
                                              "unmap", "fail"]),
                             st.integers(-1, 9)), min_size=3, max_size=40)


@settings(max_examples=80, deadline=None)
@given(program=one_ops)
def test_one_pfn_paths_match_array_paths(program):
    """FrameTable's methods given a Python int (frames_alloc_one / _get_one / _put_one /
    _mapcount_add_one) and given a one-entry array (the batch kernels) leave the same
    tables, return the same pfns and raise the same errors."""
    one, arr = FrameTable(nframes=4), FrameTable(nframes=4)
    for ft in (one, arr):
        ft.contents[:] = np.arange(1, 5, dtype=np.uint64)    # a frame's old data
    calls = {"get": "get", "pin": "pin", "put": "put", "unpin": "unpin", "map": "inc_mapcount",
             "unmap": "dec_mapcount"}
    for name, arg in program:
        results = []
        for ft, scalar in ((one, True), (arr, False)):
            try:
                if name == "fail":
                    ft.fail_after(max(arg, 0))
                    res = None
                elif name == "alloc":
                    res = (ft.alloc_one(owner=arg, flags=FRAME_ANON, zero=arg % 2 == 0)
                           if scalar else
                           int(ft.alloc(1, owner=arg, flags=FRAME_ANON, zero=arg % 2 == 0)[0]))
                else:
                    pfn = arg if scalar else np.array([arg], dtype=np.int64)
                    res = getattr(ft, calls[name])(pfn)
                    if res is not None:
                        res = (res.dtype, res.tolist())
            except (FrameStateError, OutOfMemory) as e:
                res = (type(e), str(e))
            results.append(res)
        assert results[0] == results[1], (name, arg)
        for attr in ("refcount", "mapcount", "pincount", "flags", "generation", "owner",
                     "contents", "free_stack", "meta"):
            assert np.array_equal(getattr(one, attr), getattr(arr, attr)), (name, arg, attr)
        assert (one.allocations, one.frees) == (arr.allocations, arr.frees)
