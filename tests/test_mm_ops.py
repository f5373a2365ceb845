"""MM operations: contents preserved across COW, swap, migration, KSM, fork; GUP and pins;
refcount / mapcount / generation invariants after every operation."""

import drivers
import pytest

from primary_mm.frames import FRAME_ANON_EXCLUSIVE, FRAME_KSM
from smmu import MMUNotifier, PAGE_SIZE, Simulator
from smmu.base.pte import PTE_MIGRATION, PTE_PRESENT, PTE_SWAP, PTE_WRITE

APIS = ("v2008", "range_only", "modern")
P = PAGE_SIZE


def mk(api="modern", **kw):
    sim = Simulator(notifier_api=api, rmap_locks="rwsem", check=False, **kw)
    return sim, sim.new_process("p")


def ok(sim):
    problems = sim.memory.check_invariants()
    assert problems == [], problems


def fill(sim, mm, a, n, base=100):
    for i in range(n):
        sim.do(mm.write(a + i * P, base + i))
        ok(sim)


def values(sim, mm, a, n):
    return [sim.do(mm.read(a + i * P)) for i in range(n)]


def test_invariant_checker_catches_a_wrong_mapcount():
    """Negative twin of every ok(sim) below: a mapcount that disagrees with the page tables,
    a leaked reference and a lost swap count are all reported."""
    sim, mm = mk()
    a = sim.do(mm.mmap(2 * P, populate=True))
    ok(sim)
    pfn = mm.pte_pfn(mm.lookup_pte(a))
    sim.memory.frames.mapcount[pfn] += 1
    assert any("mapcount" in p for p in sim.memory.check_invariants())
    sim.memory.frames.mapcount[pfn] -= 1
    sim.memory.frames.refcount[pfn] = 0
    assert sim.memory.check_invariants() != []
    sim.memory.frames.refcount[pfn] = 1
    ok(sim)
    sim.do(sim.reclaim(mm, a, P, force=True))
    ok(sim)
    slot = mm.pte_pfn(mm.lookup_pte(a))
    sim.memory.swap.count[slot] += 1
    assert any("swap" in p for p in sim.memory.check_invariants())


@pytest.mark.parametrize("api", APIS)
def test_anonymous_faults_zero_page_then_private_page(api):
    sim, mm = mk(api)
    a = sim.do(mm.mmap(4 * P))
    assert values(sim, mm, a, 4) == [0, 0, 0, 0]
    zero = sim.memory.zero_pfn
    assert mm.pte_pfn(mm.lookup_pte(a)) == zero and not mm.lookup_pte(a) & PTE_WRITE
    sim.do(mm.write(a + 5, 9))                     # any byte of the page: the page's value
    assert mm.pte_pfn(mm.lookup_pte(a)) != zero
    assert values(sim, mm, a, 2) == [9, 0]
    assert mm.peek(a) == 9 and mm.peek(a + 3 * P) == 0 and mm.peek(a + 4 * P) is None
    ok(sim)


@pytest.mark.parametrize("api", APIS)
def test_fork_and_cow_preserve_contents(api):
    sim, mm = mk(api)
    a = sim.do(mm.mmap(4 * P))
    fill(sim, mm, a, 4)
    child = sim.do(mm.fork())
    ok(sim)
    assert values(sim, child, a, 4) == [100, 101, 102, 103]
    shared = mm.pte_pfn(mm.lookup_pte(a))
    assert child.pte_pfn(child.lookup_pte(a)) == shared
    assert not mm.lookup_pte(a) & PTE_WRITE and not child.lookup_pte(a) & PTE_WRITE
    sim.do(mm.write(a, 1))
    sim.do(child.write(a + P, 2))
    ok(sim)
    assert values(sim, mm, a, 4) == [1, 101, 102, 103]
    assert values(sim, child, a, 4) == [100, 2, 102, 103]
    grandchild = sim.do(child.fork())
    sim.do(child.exit())
    ok(sim)
    assert values(sim, grandchild, a, 4) == [100, 2, 102, 103]
    # the last sharer reuses the page in place (page_count == 1)
    pfn = grandchild.pte_pfn(grandchild.lookup_pte(a + 2 * P))
    sim.do(mm.exit())
    sim.do(grandchild.write(a + 2 * P, 5))
    assert grandchild.pte_pfn(grandchild.lookup_pte(a + 2 * P)) == pfn
    ok(sim)


def test_cow_reuse_rule_page_count_vs_mapcount():
    """CVE-2020-29374: with a GUP reference held by the child, the old mapcount rule lets
    the parent reuse the page in place, so the child's GUP view sees the parent's new data;
    the page_count rule copies."""
    for rule, leaks in (("page_count", False), ("mapcount", True)):
        sim = Simulator(notifier_api="modern", check=False)
        sim.memory.cow_reuse = rule
        mm = sim.new_process()
        a = sim.do(mm.mmap(P))
        sim.do(mm.write(a, 1))
        child = sim.do(mm.fork())
        pfn = sim.do(child.get_user_pages(a))               # child's read GUP reference
        sim.do(child.munmap(a, P))                           # mapcount back to 1
        sim.do(mm.write(a, 2))                               # parent's COW fault
        assert (int(sim.memory.frames.contents[pfn]) == 2) == leaks
        sim.do(child.put_page(pfn))
        ok(sim)


@pytest.mark.parametrize("api", APIS)
def test_swap_out_and_in_preserves_contents(api):
    sim, mm = mk(api)
    a = sim.do(mm.mmap(4 * P))
    fill(sim, mm, a, 4)
    child = sim.do(mm.fork())
    assert sim.do(sim.reclaim(mm, a, 4 * P, force=True)) == 4
    ok(sim)
    assert all(mm.lookup_pte(a + i * P) & PTE_SWAP for i in range(4))
    assert all(child.lookup_pte(a + i * P) & PTE_SWAP for i in range(4))
    assert mm.peek(a + P) == 101
    assert values(sim, child, a, 4) == [100, 101, 102, 103]
    ok(sim)
    sim.do(mm.write(a, 7))
    assert values(sim, mm, a, 4) == [7, 101, 102, 103]
    assert values(sim, child, a, 4) == [100, 101, 102, 103]
    ok(sim)
    sim.do(child.exit())
    sim.do(mm.munmap(a, 4 * P))
    ok(sim)
    assert sim.memory.swap.nused == 0


#: the failing interleaving `smmu check kvm --scenario reclaim-while-device-reads` found
#: (pct, seed 43, shrunk): reclaim has put page 0 in the swap cache and replaced its PTE
#: (its invalidate_range_end still running) when the device's GUP swaps it back in
RECLAIM_VS_SWAPIN = [0, 0, 0, 0, 0, 2] + [1] * 41


@pytest.mark.parametrize("api", ["range_only", "modern"])
def test_swapin_waits_for_the_page_lock_reclaim_holds(api):
    """do_swap_page locks a swap-cache page (folio_lock_or_retry) before it frees the slot.
    It did not: the swap-in freed the slot under reclaim, reclaim freed it again, two pages
    were later swapped to the one slot and the CPU read another page's value (StaleRead)."""
    from smmu.explore import Replay, get_scenario
    sim = Simulator(notifier_api=api, schedule=Replay(RECLAIM_VS_SWAPIN), seed=43)
    get_scenario("reclaim-while-device-reads").build(sim, drivers.KVM)
    res = sim.run()
    assert res.ok and res.errors == {}, (res.violations[:1], res.errors)
    ok(sim)
    assert sim.stats["reclaimed"] > 0


def test_swap_slot_freed_twice_is_an_invariant_violation():
    """Negative twin of the free-list check in ok(sim)."""
    sim, mm = mk()
    a = sim.do(mm.mmap(P))
    fill(sim, mm, a, 1)
    sim.do(sim.reclaim(mm, a, P, force=True))
    slot = mm.pte_pfn(mm.lookup_pte(a))
    ok(sim)
    sim.memory.swap._free.append(slot)
    assert any("freed twice" in p for p in sim.memory.check_invariants())


def _swap_race(api, seed, *, migrate):
    """Reclaim (or migration of swap-cache pages) holds each page locked while a munmap (or
    the exit of a child sharing the swap slots) drops the last swap entry of its slot."""
    sim = Simulator(notifier_api=api, schedule="random", seed=seed)
    mm = sim.new_process()
    a = sim.do(mm.mmap(4 * P))
    fill(sim, mm, a, 4)
    child = None
    if migrate:
        child = sim.do(mm.fork())
        sim.do(sim.reclaim(mm, a, 4 * P, force=True))
        assert values(sim, mm, a, 4) == [100, 101, 102, 103]   # swap cache, slot shared
    sim.attach(drivers.KVM, mm)                   # hooks that yield inside the windows

    def system():
        if migrate:
            yield from sim.migrate(mm, a, 4 * P)
        else:
            yield from sim.reclaim(mm, a, 4 * P, force=True)

    def zap():
        for _ in range(seed % (11 if migrate else 7)):
            yield
        if migrate:
            yield from child.exit()
        else:
            yield from mm.munmap(a, 4 * P)
    sim.spawn("sys", system())
    sim.spawn("zap", zap())
    res = sim.run()
    assert res.ok and res.errors == {}, (res.violations[:1], res.errors)
    ok(sim)
    if migrate:
        assert values(sim, mm, a, 4) == [100, 101, 102, 103]
        sim.do(mm.munmap(a, 4 * P))
    ok(sim)
    assert sim.memory.swap.nused == 0                # nothing left behind in the swap cache


@pytest.mark.parametrize("api", ["range_only", "modern"])
def test_munmap_leaves_a_page_reclaim_holds_locked_in_the_swap_cache(api):
    """free_swap_and_cache only trylocks the swap-cache page (__try_to_reclaim_swap): it
    freed the slot of a page reclaim held locked, and reclaim freed the slot again (seed 5
    put a slot on the free list twice)."""
    _swap_race(api, 5, migrate=False)


@pytest.mark.parametrize("api", APIS)
def test_child_exit_leaves_a_page_migration_holds_locked_in_the_swap_cache(api):
    """The same for migration: the slot and cache entry vanished under it and it crashed
    moving the cache entry to the new page (KeyError; seed 2)."""
    _swap_race(api, 2, migrate=True)


def test_concurrent_swapins_of_a_shared_slot_use_one_page():
    """Parent and child read the same swapped-out pages at once: the second read from swap
    must use the page the first put in the swap cache (swapcache_prepare -EEXIST). It
    mapped its own copy and freed the slot under the swap cache: leaked frames, a slot freed
    twice (seed 1)."""
    sim = Simulator(notifier_api="modern", schedule="random", seed=1, check=False)
    mm = sim.new_process()
    a = sim.do(mm.mmap(2 * P))
    fill(sim, mm, a, 2)
    child = sim.do(mm.fork())
    sim.do(sim.reclaim(mm, a, 2 * P, force=True))
    got = {}

    def reader(m):
        got[m.id] = []
        for i in range(2):
            got[m.id].append((yield from m.read(a + i * P)))
    sim.spawn("parent", reader(mm))
    sim.spawn("child", reader(child))
    res = sim.run()
    assert res.ok and res.errors == {}, (res.violations[:1], res.errors)
    assert got == {mm.id: [100, 101], child.id: [100, 101]}
    ok(sim)
    assert [mm.pte_pfn(mm.lookup_pte(a + i * P)) for i in range(2)] == \
        [child.pte_pfn(child.lookup_pte(a + i * P)) for i in range(2)]   # one page each
    sim.do(child.exit())
    sim.do(mm.exit())
    ok(sim)
    assert sim.memory.swap.nused == 0 and sim.memory.frames.nallocated == 1  # the zero page


def test_reclaim_keeps_a_gup_referenced_page_in_swap_cache():
    sim, mm = mk()
    a = sim.do(mm.mmap(P))
    sim.do(mm.write(a, 4))
    pfn = sim.do(mm.get_user_pages(a))
    assert sim.do(sim.reclaim(mm, a, P, force=True)) == 0     # unmapped, not freed
    assert mm.lookup_pte(a) & PTE_SWAP
    assert sim.do(mm.read(a)) == 4
    assert mm.pte_pfn(mm.lookup_pte(a)) == pfn                 # swap cache hit: same page
    sim.do(mm.put_page(pfn))
    ok(sim)


@pytest.mark.parametrize("api", APIS)
def test_file_mappings(api):
    sim, mm = mk(api)
    f = sim.new_file("data", 4, fill=lambda i: 10 + i)
    sh = sim.do(mm.mmap(4 * P, shared=True, file=f))
    pr = sim.do(mm.mmap(4 * P, file=f))
    assert values(sim, mm, pr, 4) == [10, 11, 12, 13]
    sim.do(mm.write(pr, 50))                          # private COW: the file is untouched
    sim.do(mm.write(sh + P, 51))                      # shared: page cache, dirty
    assert values(sim, mm, sh, 2) == [10, 51]
    assert values(sim, mm, pr, 2) == [50, 51]         # private sees the page cache
    other = sim.new_process()
    sh2 = sim.do(other.mmap(2 * P, shared=True, file=f, offset=P))
    assert sim.do(other.read(sh2)) == 51
    assert f.contents[1] == 11 and f.dirty_pages() == [1]
    ok(sim)
    sim.do(sim.writeback(f))
    assert f.contents[1] == 51
    sim.do(other.write(sh2, 52))
    assert sim.do(mm.read(sh + P)) == 52
    # reclaim a dirty file page: written back, dropped, faulted back from the file
    assert sim.do(sim.reclaim(mm, sh + P, P, force=True)) == 1
    assert f.contents[1] == 52 and 1 not in f.cache
    assert sim.do(mm.read(sh + P)) == 52
    ok(sim)


@pytest.mark.parametrize("api", APIS)
def test_shared_anonymous_memory_stays_shared_across_fork(api):
    sim, mm = mk(api)
    a = sim.do(mm.mmap(2 * P, shared=True))
    sim.do(mm.write(a, 3))
    child = sim.do(mm.fork())
    assert sim.do(child.read(a)) == 3
    sim.do(child.write(a + P, 4))
    assert sim.do(mm.read(a + P)) == 4
    ok(sim)


@pytest.mark.parametrize("api", APIS)
def test_migration_preserves_contents_and_waits(api):
    sim, mm = mk(api)
    a = sim.do(mm.mmap(4 * P))
    fill(sim, mm, a, 4)
    child = sim.do(mm.fork())
    before = [mm.pte_pfn(mm.lookup_pte(a + i * P)) for i in range(4)]
    assert sim.do(sim.migrate(mm, a, 4 * P)) == 4
    after = [mm.pte_pfn(mm.lookup_pte(a + i * P)) for i in range(4)]
    assert all(x != y for x, y in zip(before, after))
    assert [child.pte_pfn(child.lookup_pte(a + i * P)) for i in range(4)] == after
    assert values(sim, mm, a, 4) == values(sim, child, a, 4) == [100, 101, 102, 103]
    gens = sim.memory.frames.generation[before]
    assert (gens >= 1).all()                         # old frames freed: generation bumped
    ok(sim)


def test_migration_refuses_a_pinned_page():
    sim, mm = mk()
    a = sim.do(mm.mmap(P))
    sim.do(mm.write(a, 8))
    pfn = sim.do(mm.pin_user_pages(a, write=True))
    assert sim.do(sim.migrate(mm, a, P)) == 0
    assert mm.pte_pfn(mm.lookup_pte(a)) == pfn and mm.lookup_pte(a) & PTE_PRESENT
    sim.do(mm.unpin_user_page(pfn))
    assert sim.do(sim.migrate(mm, a, P)) == 1
    ok(sim)


def test_cpu_access_waits_for_migration_entry():
    sim = Simulator(notifier_api="modern", schedule="round_robin", check=False)
    mm = sim.new_process()
    a = sim.do(mm.mmap(P))
    sim.do(mm.write(a, 6))
    seen = []

    def reader():
        while not mm.lookup_pte(a) & PTE_MIGRATION:
            yield
        seen.append("entry")
        seen.append((yield from mm.read(a)))
    sim.spawn("mig", sim.migrate(mm, a, P))
    sim.spawn("cpu", reader())
    res = sim.run()
    assert res.ok and res.errors == {}
    assert seen == ["entry", 6]
    ok(sim)


@pytest.mark.parametrize("api", APIS)
def test_ksm_merge_and_cow_out(api):
    sim, mm = mk(api)
    a = sim.do(mm.mmap(4 * P))
    for i, v in enumerate([5, 5, 6, 5]):
        sim.do(mm.write(a + i * P, v))
    assert sim.do(sim.ksm_merge(mm, a, 4 * P)) == 2
    k = mm.pte_pfn(mm.lookup_pte(a))
    assert sim.memory.frames.flags[k] & FRAME_KSM
    assert [mm.pte_pfn(mm.lookup_pte(a + i * P)) == k for i in range(4)] == [1, 1, 0, 1]
    ok(sim)
    sim.do(mm.write(a + P, 9))                       # COW out of the KSM page
    assert values(sim, mm, a, 4) == [5, 9, 6, 5]
    other = sim.new_process()
    b = sim.do(other.mmap(P))
    sim.do(other.write(b, 5))
    assert sim.do(sim.ksm_merge(other, b, P)) == 1   # merged with the existing stable page
    assert other.pte_pfn(other.lookup_pte(b)) == k
    ok(sim)
    sim.do(mm.exit())
    sim.do(other.exit())
    ok(sim)
    assert sim.memory.frames.refcount[k] == 0


@pytest.mark.parametrize("api", APIS)
def test_gup_and_pins(api):
    sim, mm = mk(api)
    a = sim.do(mm.mmap(P))
    pfn = sim.do(mm.get_user_pages(a, write=True))
    f = sim.memory.frames
    assert f.refcount[pfn] == 2 and mm.pte_pfn(mm.lookup_pte(a)) == pfn
    gen = int(f.generation[pfn])
    sim.do(mm.munmap(a, P))
    assert f.refcount[pfn] == 1                      # the GUP reference keeps it
    sim.do(mm.put_page(pfn))
    assert f.refcount[pfn] == 0 and int(f.generation[pfn]) == gen + 1
    b = sim.do(mm.mmap(P))
    pfn = sim.do(mm.pin_user_pages(b, write=False))
    assert f.pincount[pfn] == 1
    if api == "modern":
        # 6.2+ (84209e87c696): an R/O long-term pin of the zero page in a COW mapping
        # unshares first: a new exclusive anonymous page, mapped read-only
        assert pfn != sim.memory.zero_pfn and f.flags[pfn] & FRAME_ANON_EXCLUSIVE
        assert not mm.lookup_pte(b) & PTE_WRITE
    else:
        assert pfn == sim.memory.zero_pfn            # a read fault maps the zero page
    sim.do(mm.unpin_user_page(pfn))
    pfn = sim.do(mm.pin_user_pages(b, write=True))
    assert pfn != sim.memory.zero_pfn and f.pincount[pfn] == 1
    sim.do(mm.unpin_user_page(pfn))
    assert sim.do(mm.hmm_range_fault(b, write=True)) == pfn and f.refcount[pfn] == 1
    ok(sim)


@pytest.mark.parametrize("copies", [False, True])
def test_fork_with_pinned_page(copies):
    """Pre-5.9 the pinned page is COW-shared and the parent's write moves the parent away
    from the DMA target; 5.9+ (fork_copies_pinned) the child gets the copy instead."""
    sim, mm = mk(fork_copies_pinned=copies)
    a = sim.do(mm.mmap(P))
    sim.do(mm.write(a, 1))
    pfn = sim.do(mm.pin_user_pages(a, write=True))
    child = sim.do(mm.fork())
    ok(sim)
    sim.do(mm.write(a, 2))
    parent_pfn = mm.pte_pfn(mm.lookup_pte(a))
    assert (parent_pfn == pfn) == copies
    assert sim.do(child.read(a)) == 1 and sim.do(mm.read(a)) == 2
    sim.do(mm.unpin_user_page(pfn))
    ok(sim)


@pytest.mark.parametrize("api", APIS)
def test_mremap_move_and_grow(api):
    sim, mm = mk(api)
    a = sim.do(mm.mmap(3 * P))
    fill(sim, mm, a, 3)
    b = sim.do(mm.mremap(a, 3 * P, 5 * P))
    assert mm.vma_at(a) is None or b == a
    assert values(sim, mm, b, 5) == [100, 101, 102, 0, 0]
    ok(sim)
    dest = b + 100 * P
    c = sim.do(mm.mremap(b, 2 * P, 2 * P, new_addr=dest))
    assert c == dest and values(sim, mm, dest, 2) == [100, 101]
    assert mm.vma_at(b) is None and values(sim, mm, b + 2 * P, 1) == [102]
    # moved pages are still reverse-mapped: reclaim finds them through the anon_vma
    assert sim.do(sim.reclaim(mm, dest, 2 * P, force=True)) == 2
    assert values(sim, mm, dest, 2) == [100, 101]
    ok(sim)


@pytest.mark.parametrize("api", APIS)
def test_mprotect_none_keeps_contents(api):
    sim, mm = mk(api)
    a = sim.do(mm.mmap(2 * P))
    fill(sim, mm, a, 2)
    sim.do(mm.mprotect(a, 2 * P, "none"))
    assert mm.lookup_pte(a) & PTE_PRESENT == 0 and mm.peek(a) is None
    with pytest.raises(Exception, match="PROT_NONE"):
        sim.do(mm.read(a))
    ok(sim)
    child = sim.do(mm.fork())
    sim.do(mm.mprotect(a, 2 * P, "r"))
    assert values(sim, mm, a, 2) == [100, 101]
    with pytest.raises(Exception, match="read-only"):
        sim.do(mm.write(a, 1))
    sim.do(mm.mprotect(a, 2 * P, "rw"))
    sim.do(mm.write(a, 1))
    assert values(sim, mm, a, 2) == [1, 101]
    sim.do(child.mprotect(a, P, "r"))
    assert sim.do(child.read(a)) == 100
    ok(sim)


@pytest.mark.parametrize("api", APIS)
def test_madvise_dontneed_and_free(api):
    sim, mm = mk(api)
    a = sim.do(mm.mmap(4 * P))
    fill(sim, mm, a, 4)
    sim.do(mm.madvise(a, P, "dontneed"))
    assert values(sim, mm, a, 2) == [0, 101]
    sim.do(mm.madvise(a + P, 3 * P, "free"))
    sim.do(mm.write(a + 2 * P, 7))                   # written again: kept
    ok(sim)
    sim.do(sim.reclaim(mm, a, 4 * P, force=True))
    assert values(sim, mm, a, 4) == [0, 0, 7, 0]     # clean lazyfree pages were dropped
    ok(sim)


def test_dontfork_vma_not_in_child():
    sim, mm = mk()
    a = sim.do(mm.mmap(2 * P, dontfork=True))
    b = sim.do(mm.mmap(P))
    sim.do(mm.madvise(a + P, P, "dofork"))
    child = sim.do(mm.fork())
    assert child.vma_at(a) is None and child.vma_at(a + P) is not None
    assert child.vma_at(b) is not None


def test_reprs_are_readable():
    sim, mm = mk()
    f = sim.new_file("f", 1)
    a = sim.do(mm.mmap(P, file=f, shared=True))
    for obj in (sim.memory, mm, mm.vma_at(a), f, f.mapping, sim.memory.swap):
        r = repr(obj)
        assert r.startswith("<") and "object at" not in r


@pytest.mark.parametrize("seed", range(6))
def test_concurrent_cpus_with_reclaim_and_migration(seed):
    """Two CPUs write and read their own pages while reclaim and migration run on the same
    range under a random schedule: every read returns the last write."""
    sim = Simulator(notifier_api="modern", schedule="random", seed=seed, check=False)
    mm = sim.new_process()
    a = sim.do(mm.mmap(8 * P))
    errors = []

    running = [2]

    def cpu(base, k):
        for r in range(6):
            for i in range(4):
                va = a + (base + i) * P
                yield from mm.write(va, 1000 * k + 10 * r + i)
                yield
                got = yield from mm.read(va)
                if got != 1000 * k + 10 * r + i:
                    errors.append((va, got))
        running[0] -= 1

    def reclaimer():
        rounds = 0
        # once the CPUs are done, go on (a few rounds at most) until both reclaim and
        # migration did something: the assertion below is about them having run, whatever
        # the schedule made of the race
        while running[0] or (rounds < 20 and not (sim.stats["reclaimed"] and
                                                  sim.stats["migrated"])):
            yield from sim.reclaim(mm, a, 8 * P, force=True)
            yield from sim.migrate(mm, a, 8 * P)
            rounds += 1
            yield
    sim.spawn("cpu0", cpu(0, 1))
    sim.spawn("cpu1", cpu(4, 2))
    sim.spawn("kswapd", reclaimer())
    res = sim.run()
    assert res.errors == {} and res.ok, (res.errors, res.violations)
    assert errors == []
    assert sim.stats["reclaimed"] > 0 and sim.stats["migrated"] > 0
    ok(sim)


def test_handle_mm_fault_hmm_and_peek_of_non_present_entries():
    sim, mm = mk()
    a = sim.do(mm.mmap(2 * P))
    sim.do(mm.handle_mm_fault(a, True))             # a write fault maps a new page
    pte = mm.lookup_pte(a)
    assert pte & PTE_PRESENT and pte & PTE_WRITE
    pfn = mm.pte_pfn(pte)
    rc = int(sim.memory.frames.refcount[pfn])
    assert sim.do(mm.hmm_range_fault(a)) == pfn
    assert int(sim.memory.frames.refcount[pfn]) == rc      # hmm_range_fault keeps no reference
    sim.do(mm.write(a, 12))
    sim.do(sim.reclaim(mm, a, P, force=True))
    assert mm.lookup_pte(a) & PTE_SWAP and mm.peek(a) == 12
    assert mm.lookup_pte(a) & PTE_SWAP                       # peek did not swap it in
    seen = []

    class Peek(MMUNotifier):
        def invalidate_range_end(self, r):
            pte = mm.lookup_pte(r.start)
            if pte & PTE_MIGRATION:
                seen.append(mm.peek(r.start))

        def invalidate_range_start(self, r):
            pass
    sim.do(mm.read(a))
    sim.attach(Peek, mm)
    sim.do(sim.migrate(mm, a, P))
    assert seen == [12]                              # a migration entry reads the old page
    ok(sim)


def _stress(seed):
    """Two CPUs (faults, COW, fork, DONTNEED, GUP, pin+fork, mprotect, mremap there and
    back) against reclaim, migration, KSM, writeback and truncate, under a random schedule
    with the oracle on."""
    import random

    from smmu.base.errors import SmmuError
    api = APIS[seed % 3]
    sim = Simulator(notifier_api=api, rmap_locks=("rwsem", "spinlock")[seed % 2],
                    schedule="random", seed=seed, check=True, fork_copies_pinned=seed % 4 < 2)
    mm = sim.new_process()
    a = sim.do(mm.mmap(8 * P))
    f = sim.new_file("f", 4, fill=5)
    b = sim.do(mm.mmap(4 * P, shared=True, file=f))

    def cpu(k):
        r = random.Random(seed * 10 + k)
        for _ in range(30):
            op = r.random()
            va = a + r.randrange(8) * P
            try:
                if op < 0.4:
                    yield from mm.write(va, r.randrange(1, 1 << 20))
                elif op < 0.6:
                    yield from mm.read(va)
                elif op < 0.7:
                    yield from mm.write(b + r.randrange(4) * P, r.randrange(1, 99))
                elif op < 0.75:
                    c = yield from mm.fork()
                    yield from c.write(a, 1)
                    yield from c.exit()
                elif op < 0.8:
                    yield from mm.madvise(a + r.randrange(4) * P, P, "dontneed")
                elif op < 0.85:
                    pfn = yield from mm.get_user_pages(va, write=True)
                    yield
                    yield from mm.put_page(pfn)
                elif op < 0.9:
                    yield from mm.mprotect(a, 8 * P, r.choice(["r", "rw", "none"]))
                    yield from mm.mprotect(a, 8 * P, "rw")
                elif op < 0.95:
                    pfn = yield from mm.pin_user_pages(va, write=True)
                    c = yield from mm.fork()
                    yield from mm.write(va, 3)
                    yield from c.exit()
                    yield from mm.unpin_user_page(pfn)
                else:
                    na = yield from mm.mremap(a + 4 * P, 2 * P, 2 * P, new_addr=a + 100 * P)
                    yield from mm.mremap(na, 2 * P, 2 * P, new_addr=a + 4 * P)
            except SmmuError:
                pass      # SIGSEGV/SIGBUS from the other CPU's mprotect or the truncate

    def system():
        r = random.Random(seed * 7)
        for i in range(10):
            op = r.randrange(5)
            if op == 0:
                yield from sim.reclaim(mm, a, 8 * P, force=r.random() < .5)
            elif op == 1:
                yield from sim.migrate(mm, a, 8 * P)
            elif op == 2:
                yield from sim.ksm_merge(mm, a, 8 * P)
            elif op == 3:
                yield from sim.writeback(f)
            elif i == 7:
                yield from sim.truncate(f, 2 * P)
            else:
                yield from sim.reclaim(mm, b, 4 * P, force=True)
    sim.spawn("cpu0", cpu(0))
    sim.spawn("cpu1", cpu(1))
    sim.spawn("sys", system())
    return sim, sim.run()


@pytest.mark.parametrize("seed", [52] + list(range(12)))
def test_concurrent_stress_under_the_oracle(seed):
    sim, res = _stress(seed)
    assert res.ok and res.errors == {}, (res.violations[:2], res.errors)
    ok(sim)


class _SleepsInFirstEnd(MMUNotifier):
    """A notifier whose first ``invalidate_range_end`` sleeps until the test lets it go
    (legal: a blockable end may sleep); ``keep``: it ignores the invalidation (a broken
    driver that keeps its mapping of the page)."""

    def __init__(self, sim, mm, gate, go):
        super().__init__(sim, mm)
        self.gate, self.go, self.slept = gate, go, False

    def invalidate_range_end(self, range):
        if not self.slept:
            self.slept = True
            self.gate.complete()
            yield self.go.wait()


@pytest.mark.parametrize("api", ["range_only", "modern"])
def test_ksm_holds_the_promoted_page_while_a_hook_sleeps_and_a_cow_copies_it_away(api):
    """mm/ksm.c keeps the scan's FOLL_GET reference on the page it promotes to KSM page until
    the whole group is merged (``ksm_do_scan``: ``put_page`` after ``cmp_and_merge_page``).
    Here the write-protect's end sleeps, the CPU writes the page meanwhile (COW: it copies,
    and drops its mapping of the old page), and ksm_merge must still merge the second page
    into the promoted one: before, it freed it and crashed (FrameStateError in ksm_merge)."""
    sim = Simulator(notifier_api=api, rmap_locks="rwsem", check=True)
    mm = sim.new_process("p")
    a = sim.do(mm.mmap(2 * P))
    for i in range(2):
        sim.do(mm.write(a + i * P, 77))
    gate, go = sim.completion("gate"), sim.completion("go")
    sim.attach(_SleepsInFirstEnd, mm, gate=gate, go=go)
    merged = []

    def ksmd():
        merged.append((yield from sim.ksm_merge(mm, a, 2 * P)))

    def cpu():
        yield gate.wait()
        yield from mm.write(a, 200)            # COW out of the page being promoted
        go.complete()

    sim.spawn("ksmd", ksmd())
    sim.spawn("cpu", cpu())
    res = sim.run()
    assert res.ok and res.errors == {}, (res.violations, res.errors)
    assert merged == [1]
    k = mm.pte_pfn(mm.lookup_pte(a + P))
    assert sim.memory.frames.flags[k] & FRAME_KSM and sim.memory.frames.refcount[k] == 1
    assert values(sim, mm, a, 2) == [200, 77]
    ok(sim)


class _KeepsItsTranslation(_SleepsInFirstEnd):
    """Broken twin: its device caches the translation of a page and never drops it."""

    def __init__(self, sim, mm, gate, go):
        super().__init__(sim, mm, gate, go)
        self.tlb = {}

    def access(self, va, *, write, value=None):
        if va not in self.tlb:
            self.tlb[va] = mm_pfn = self.mm.pte_pfn(self.mm.lookup_pte(va))
            self.note_map(va, mm_pfn, False)
        yield
        return self.dma_read(va, self.tlb[va])


def test_ksm_twin_a_driver_that_keeps_the_promoted_page_mapped_is_caught():
    sim = Simulator(notifier_api="modern", rmap_locks="rwsem", check=True)
    mm = sim.new_process("p")
    a = sim.do(mm.mmap(2 * P))
    for i in range(2):
        sim.do(mm.write(a + i * P, 77))
    gate, go = sim.completion("gate"), sim.completion("go")
    drv = sim.attach(_KeepsItsTranslation, mm, gate=gate, go=go)
    sim.do(drv.access(a, write=False))

    def cpu():
        yield gate.wait()
        yield from mm.write(a, 200)
        go.complete()
        yield from drv.access(a, write=False)  # the old (now KSM) page: 77, not 200

    sim.spawn("ksmd", sim.ksm_merge(mm, a, 2 * P))
    sim.spawn("cpu", cpu())
    res = sim.run()
    assert "StaleRead" in res.kinds() and res.errors == {}, res.violations
    ok(sim)
