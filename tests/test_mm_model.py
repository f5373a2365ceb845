"""Differential test: random operation sequences against a plain sequential memory model.

The model is a dict per address space: page index -> entry (kind, prot, vma id, value, file,
offset). Private anonymous pages hold a value; private file pages read the file until written
(then they hold their own value and revert to the file on MADV_DONTNEED); shared pages (shmem
or file) alias one list. Fork copies the dict (values by value, shared lists by reference).
Every CPU read must equal the model, every peek of every page must too, and the frame /
page-table invariants must hold after every operation.
"""

from hypothesis import given, strategies as st

from smmu import PAGE_SIZE, Simulator
from smmu.base.errors import InvalidArgument, SegmentationFault

P = PAGE_SIZE
BASE = 0x10_0000_0000
WINDOW = 12
NFILE = 8
PROTS = ("rw", "r", "none")


class Model:
    def __init__(self):
        self.procs = {}          # pid -> {page: entry}
        self.next_vid = 1

    def vid(self):
        self.next_vid += 1
        return self.next_vid

    @staticmethod
    def value(e):
        kind, prot, vid, val, f, off = e
        if "r" not in prot:
            return None
        if kind == "anon":
            return val
        return f[off]


def one_vma(pages, k, n):
    """Is [k, k+n) inside a single VMA of the model (one run of one vma id)?"""
    ids = {pages[i][2] if i in pages else None for i in range(k, k + n)}
    return None not in ids and len(ids) == 1


op = st.one_of(
    st.tuples(st.just("mmap"), st.integers(0, WINDOW - 1), st.integers(1, 4),
              st.sampled_from(["anon", "shared", "file", "sharedfile"]), st.booleans()),
    st.tuples(st.just("munmap"), st.integers(0, WINDOW - 1), st.integers(1, 4)),
    st.tuples(st.just("write"), st.integers(0, WINDOW - 1), st.integers(1, 1 << 20)),
    st.tuples(st.just("read"), st.integers(0, WINDOW - 1)),
    st.tuples(st.just("fork")),
    st.tuples(st.just("exit")),
    st.tuples(st.just("mprotect"), st.integers(0, WINDOW - 1), st.integers(1, 4),
              st.sampled_from(PROTS)),
    st.tuples(st.just("dontneed"), st.integers(0, WINDOW - 1), st.integers(1, 4)),
    st.tuples(st.just("mremap"), st.integers(0, WINDOW - 1), st.integers(1, 3),
              st.integers(0, WINDOW - 1)),
    st.tuples(st.just("reclaim"), st.booleans()),
    st.tuples(st.just("migrate")),
    st.tuples(st.just("ksm")),
    st.tuples(st.just("writeback")),
)

program = st.tuples(st.sampled_from(["v2008", "range_only", "modern"]),
                    st.lists(st.tuples(st.integers(0, 3), op), min_size=1, max_size=30))


def run(api, ops, check=True):
    # check=True: the coherence oracle watches too and must stay silent
    sim = Simulator(notifier_api=api, rmap_locks="rwsem", check=check)
    f = sim.new_file("f", NFILE, fill=lambda i: 1000 + i)
    fmodel = [1000 + i for i in range(NFILE)]
    model = Model()
    procs = [sim.new_process("p0")]
    model.procs[procs[0].id] = {}

    def expect_fail(gen, exc):
        try:
            sim.do(gen)
        except exc:
            return
        raise AssertionError(f"{gen} should have raised {exc.__name__}")

    for who, o in ops:
        mm = procs[who % len(procs)]
        pages = model.procs[mm.id]
        kind = o[0]
        if kind == "mmap":
            _, k, n, what, populate = o
            n = min(n, WINDOW - k)
            vid = model.vid()
            shared = what in ("shared", "sharedfile")
            file = f if what in ("file", "sharedfile") else None
            sim.do(mm.mmap(n * P, shared=shared, file=file, addr=BASE + k * P, fixed=True,
                           populate=populate))
            shm = [0] * n if what == "shared" else None
            for i in range(n):
                if what == "anon":
                    pages[k + i] = ("anon", "rw", vid, 0, None, 0)
                elif what == "shared":
                    pages[k + i] = ("shared", "rw", vid, 0, shm, i)
                elif what == "file":
                    pages[k + i] = ("file", "rw", vid, 0, fmodel, i)
                else:
                    pages[k + i] = ("shared", "rw", vid, 0, fmodel, i)
        elif kind == "munmap":
            _, k, n = o
            sim.do(mm.munmap(BASE + k * P, n * P))
            for i in range(k, k + n):
                pages.pop(i, None)
        elif kind == "write":
            _, k, v = o
            e = pages.get(k)
            if e is None or "w" not in e[1]:
                expect_fail(mm.write(BASE + k * P, v), SegmentationFault)
                continue
            sim.do(mm.write(BASE + k * P, v))
            ek, prot, vid, _val, fo, off = e
            if ek == "shared":
                fo[off] = v
            else:
                pages[k] = ("anon", prot, vid, v, fo, off)
        elif kind == "read":
            _, k = o
            e = pages.get(k)
            if e is None or "r" not in e[1]:
                expect_fail(mm.read(BASE + k * P), SegmentationFault)
                continue
            assert sim.do(mm.read(BASE + k * P)) == Model.value(e), (k, e)
        elif kind == "fork":
            if len(procs) >= 3:
                continue
            child = sim.do(mm.fork())
            procs.append(child)
            model.procs[child.id] = dict(pages)
        elif kind == "exit":
            if len(procs) == 1:
                continue
            sim.do(mm.exit())
            procs.remove(mm)
            del model.procs[mm.id]
        elif kind == "mprotect":
            _, k, n, prot = o
            if any(i not in pages for i in range(k, k + n)):
                expect_fail(mm.mprotect(BASE + k * P, n * P, prot), SegmentationFault)
                continue
            sim.do(mm.mprotect(BASE + k * P, n * P, prot))
            newids = {}
            for i in range(k, k + n):
                ek, _p, vid, val, fo, off = pages[i]
                nv = newids.setdefault(vid, model.vid())
                pages[i] = (ek, prot, nv, val, fo, off)
        elif kind == "dontneed":
            _, k, n = o
            if any(i not in pages for i in range(k, k + n)):
                expect_fail(mm.madvise(BASE + k * P, n * P, "dontneed"), SegmentationFault)
                continue
            sim.do(mm.madvise(BASE + k * P, n * P, "dontneed"))
            for i in range(k, k + n):
                ek, prot, vid, val, fo, off = pages[i]
                if ek == "anon":
                    pages[i] = ("anon", prot, vid, 0, None, 0) if fo is None else \
                        ("file", prot, vid, 0, fo, off)
        elif kind == "mremap":
            _, k, n, d = o
            n = min(n, WINDOW - k, WINDOW - d)
            if n <= 0 or not one_vma(pages, k, n) or (d < k + n and k < d + n):
                continue
            got = sim.do(mm.mremap(BASE + k * P, n * P, n * P, new_addr=BASE + d * P))
            assert got == BASE + d * P
            vid = model.vid()
            moved = {i: pages.pop(k + i) for i in range(n)}
            for i in range(d, d + n):
                pages.pop(i, None)
            for i, e in moved.items():
                pages[d + i] = (e[0], e[1], vid, e[3], e[4], e[5])
        elif kind == "reclaim":
            sim.do(sim.reclaim(mm, BASE, WINDOW * P, force=o[1]))
        elif kind == "migrate":
            sim.do(sim.migrate(mm, BASE, WINDOW * P))
        elif kind == "ksm":
            sim.do(sim.ksm_merge(mm, BASE, WINDOW * P))
        elif kind == "writeback":
            sim.do(sim.writeback(f))
        # after every operation: every page of every process reads as the model says
        problems = sim.memory.check_invariants()
        assert problems == [], (o, problems)
        for p in procs:
            pg = model.procs[p.id]
            for i in range(WINDOW):
                e = pg.get(i)
                want = None if e is None else Model.value(e)
                assert p.peek(BASE + i * P) == want, (o, p, i, e)
    for p in procs:
        for i, e in sorted(model.procs[p.id].items()):
            if "r" in e[1]:
                assert sim.do(p.read(BASE + i * P)) == Model.value(e)
    for p in list(procs):
        sim.do(p.exit())
    assert sim.memory.check_invariants() == []
    # the zero page + the file's page cache: shmem and anonymous memory all freed
    assert sim.violations == [], sim.violations
    assert sim.memory.files == [f]
    assert sim.memory.frames.nallocated == 1 + len(f.cache)


@given(program)
def test_random_programs_match_the_model(prog):
    api, ops = prog
    run(api, ops)


def test_model_catches_a_broken_mm():
    """Negative twin: an MM whose COW does not copy (both sides keep writing one page) must
    be caught by the model comparison."""
    from primary_mm import mm as mmmod
    orig = mmmod.MM._wp_can_reuse
    mmmod.MM._wp_can_reuse = lambda self, pfn: True       # reuse shared pages in place
    try:
        try:
            run("modern", [(0, ("mmap", 0, 1, "anon", False)), (0, ("write", 0, 5)),
                           (0, ("fork",)), (0, ("write", 0, 6)), (1, ("read", 0))],
                check=False)
        except AssertionError:
            return
        raise AssertionError("the model did not notice a COW that does not copy")
    finally:
        mmmod.MM._wp_can_reuse = orig


def test_unknown_input_is_rejected_by_the_model_run():
    sim = Simulator(check=False)
    mm = sim.new_process()
    try:
        sim.do(mm.madvise(BASE, P, "bogus"))
    except InvalidArgument:
        return
    raise AssertionError("unknown advice accepted")
