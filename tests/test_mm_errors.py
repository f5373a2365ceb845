"""Bad input raises a clear smmu.base.errors exception and leaves everything as it was."""

import numpy as np
import pytest

from smmu import PAGE_SIZE, Simulator
from smmu.base.errors import InvalidArgument, OutOfMemory, SegmentationFault, UsageError

P = PAGE_SIZE


def state(sim):
    mem = sim.memory
    f = mem.frames
    arrays = tuple(getattr(f, n).copy() for n in ("refcount", "mapcount", "pincount", "flags",
                                                  "generation", "owner", "contents"))
    return {
        "mms": [(mm.id, mm.snapshot(), mm.mmap_lock.is_locked(),
                 mm.page_table_lock.is_locked()) for mm in mem.mms],
        "frames": arrays,
        "swap": (mem.swap.count.copy(), mem.swap.page.copy()),
        "files": [(fl.name, fl.contents.copy(), dict(fl.cache)) for fl in mem.files],
    }


def same(a, b):
    assert a["mms"] == b["mms"]
    for x, y in zip(a["frames"], b["frames"]):
        assert np.array_equal(x, y)
    assert all(np.array_equal(x, y) for x, y in zip(a["swap"], b["swap"]))
    assert len(a["files"]) == len(b["files"])
    for (n1, c1, k1), (n2, c2, k2) in zip(a["files"], b["files"]):
        assert n1 == n2 and np.array_equal(c1, c2) and k1 == k2


@pytest.fixture(params=["v2008", "range_only", "modern"])
def world(request):
    sim = Simulator(notifier_api=request.param, check=False)
    mm = sim.new_process("p")
    a = sim.do(mm.mmap(4 * P))
    sim.do(mm.write(a, 1))
    sim.do(mm.write(a + P, 2))
    ro = sim.do(mm.mmap(P, prot="r"))
    none = sim.do(mm.mmap(P, prot="none"))
    f = sim.new_file("f", 2, fill=7)
    fm = sim.do(mm.mmap(4 * P, shared=True, file=f))
    sim.do(mm.read(fm))
    return sim, mm, {"a": a, "ro": ro, "none": none, "f": f, "fm": fm}


def check(sim, exc, gen, match=None):
    before = state(sim)
    with pytest.raises(exc, match=match) as ei:
        sim.do(gen)
    same(before, state(sim))
    assert str(ei.value)
    return ei.value


def test_access_errors(world):
    sim, mm, w = world
    hole = w["a"] - P
    e = check(sim, SegmentationFault, mm.read(hole), "no mapping")
    assert e.address == hole and f"{hole:#x}" in str(e)
    check(sim, SegmentationFault, mm.write(hole, 1), "mmap it first")
    check(sim, SegmentationFault, mm.write(w["ro"], 1), "read-only")
    check(sim, SegmentationFault, mm.read(w["none"]), "PROT_NONE")
    check(sim, SegmentationFault, mm.read(w["fm"] + 2 * P), "SIGBUS")
    check(sim, SegmentationFault, mm.get_user_pages(hole), "no mapping")
    check(sim, SegmentationFault, mm.pin_user_pages(w["ro"], write=True), "read-only")
    check(sim, SegmentationFault, mm.hmm_range_fault(w["none"]), "PROT_NONE")
    check(sim, InvalidArgument, mm.write(w["a"], "x"), "integer")


def test_range_errors(world):
    sim, mm, w = world
    a = w["a"]
    check(sim, InvalidArgument, mm.munmap(a + 1, P), "not page aligned")
    check(sim, InvalidArgument, mm.munmap(a, 0), "empty")
    check(sim, InvalidArgument, mm.munmap(a, 1 << 60), "overflows")
    check(sim, InvalidArgument, mm.mprotect(a, -P, "r"), "empty")
    check(sim, InvalidArgument, mm.mprotect(a, P, "rz"), "unknown protection")
    check(sim, SegmentationFault, mm.mprotect(a - P, 2 * P, "r"), "not fully mapped")
    check(sim, InvalidArgument, mm.madvise(a, P, "willneed"), "unknown advice")
    check(sim, SegmentationFault, mm.madvise(a - P, 8 * P, "dontneed"), "not fully mapped")
    check(sim, SegmentationFault, mm.madvise(a - P, 8 * P, "dontfork"), "not fully mapped")
    check(sim, InvalidArgument, mm.mremap(a, P, 0), "empty")
    check(sim, SegmentationFault, mm.mremap(a, 8 * P, 9 * P), "one mapping")
    check(sim, InvalidArgument, mm.mremap(a, 2 * P, 2 * P, new_addr=a + P), "overlaps")
    check(sim, InvalidArgument, mm.brk(mm.brk_start - P), "heap")


def test_madvise_free_on_a_file_mapping_changes_nothing(world):
    sim, mm, w = world
    check(sim, InvalidArgument, mm.madvise(w["fm"], P, "free"), "private anonymous")


def test_mmap_errors(world):
    sim, mm, w = world
    check(sim, InvalidArgument, mm.mmap(0), "empty")
    check(sim, InvalidArgument, mm.mmap(-5), "empty")
    check(sim, InvalidArgument, mm.mmap("big"), "integer")
    check(sim, InvalidArgument, mm.mmap(P, prot="rwq"), "unknown protection")
    check(sim, InvalidArgument, mm.mmap(P, prot=7), "prot must be a string")
    check(sim, InvalidArgument, mm.mmap(P, addr=w["a"] + 3, fixed=True), "not page aligned")
    check(sim, InvalidArgument, mm.mmap(P, fixed=True), "needs addr")
    check(sim, InvalidArgument, mm.mmap(P, file="f"), "not a file of this simulator")
    check(sim, InvalidArgument, mm.mmap(P, file=w["f"], offset=5), "multiple of PAGE_SIZE")
    check(sim, InvalidArgument, mm.mmap(P, offset=P), "only meaningful with a file")
    check(sim, InvalidArgument, mm.mmap(1 << 50), "larger than the address space")
    other = Simulator(check=False)
    check(sim, InvalidArgument, mm.mmap(P, file=other.new_file("g", 1)), "not a file of this")


@pytest.mark.parametrize("what", ["anon_write", "cow", "swapin", "file", "fork", "migrate"])
def test_injected_allocation_failure_changes_nothing(world, what):
    sim, mm, w = world
    a = w["a"]
    frames = sim.memory.frames
    if what == "anon_write":
        gen = mm.write(a + 2 * P, 5)
    elif what == "cow":
        sim.do(mm.read(a + 3 * P))                 # zero page: the write is a COW
        gen = mm.write(a + 3 * P, 5)
    elif what == "swapin":
        sim.do(sim.reclaim(mm, a, P, force=True))
        gen = mm.read(a)
    elif what == "file":
        gen = mm.read(w["fm"] + P)
    elif what == "fork":
        gen = mm.fork()
    else:
        gen = sim.migrate(mm, a, P)
    frames.fail_next()
    before = state(sim)
    with pytest.raises(OutOfMemory, match="injected"):
        sim.do(gen)
    after = state(sim)
    if what == "fork":
        # the child is gone; the parent's PTEs lose their write bits (as in Linux) but
        # every count and every value is as it was
        assert [m[0] for m in after["mms"]] == [m[0] for m in before["mms"]]
        assert [m[1]["vmas"] for m in after["mms"]] == [m[1]["vmas"] for m in before["mms"]]
        for i in (1, 2, 6):   # mapcount, pincount, contents
            assert np.array_equal(before["frames"][i], after["frames"][i])
    else:
        same(before, after)
    assert sim.memory.check_invariants() == []
    frames.clear_fail()
    assert sim.do(mm.read(a)) == 1


def test_frame_reference_errors(world):
    sim, mm, w = world
    pfn = sim.do(mm.get_user_pages(w["a"]))
    check(sim, InvalidArgument, mm.unpin_user_page(pfn), "not pinned")
    sim.do(mm.put_page(pfn))
    free = sim.memory.frames.nframes - 1
    check(sim, InvalidArgument, mm.put_page(free), "no such allocated frame")
    check(sim, InvalidArgument, mm.put_page("x"), "not a pfn")
    pinned = sim.do(mm.pin_user_pages(w["a"]))
    sim.do(mm.munmap(w["a"], P))                 # only the pin holds the frame now
    check(sim, InvalidArgument, mm.put_page(pinned), "use unpin_user_page")
    sim.do(mm.unpin_user_page(pinned))
    assert sim.memory.frames.is_free(pinned)


def test_system_wide_errors(world):
    sim, mm, w = world
    check(sim, InvalidArgument, sim.truncate(w["f"], -1), "negative")
    check(sim, UsageError, sim.writeback("f"), "not a file")
    check(sim, UsageError, sim.reclaim("mm", 0, P), "not a process")
    check(sim, InvalidArgument, sim.reclaim(mm, w["a"] + 1, P), "not page aligned")
    check(sim, InvalidArgument, sim.migrate(mm, w["a"], 0), "empty")
    check(sim, InvalidArgument, sim.ksm_merge(mm, w["a"], -1), "empty")


def test_exited_process_is_a_usage_error(world):
    sim, mm, w = world
    sim.do(mm.exit())
    with pytest.raises(UsageError, match="exited"):
        sim.do(mm.read(w["a"]))
    with pytest.raises(UsageError, match="exited"):
        sim.do(mm.mmap(P))
    with pytest.raises(UsageError, match="exited"):
        sim.do(mm.exit())
