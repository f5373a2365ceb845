"""The operation scenarios: one MM operation racing a device, every reference driver must be
clean on each under every generation it supports (unless it declares a known window).
"""

from __future__ import annotations

from smmu.base.constants import PAGE_SIZE
from smmu.scenarios.kit import (Join, anon_process, any_driver, cpu_reads, cpu_writes, device_loop,
                                exporter_fork, has_device_memory, kswapd, ops, pages,
                                register_builder, reuse_frames, reused, seq, tolerant)
from smmu.scenarios.registry import attach_driver, driver_options


def build_cow_after_fork(sim, driver_cls):
    """A device reads and writes two pages while the CPU forks and then writes them (COW
    break in ``do_wp_page``); the child reads them. A device left on the pre-COW page loses
    its writes (they land in the child's page) or reads the parent's old data."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 2, "parent")
    j = Join(sim)
    box = {}

    def cpu():
        box["child"] = yield from exporter_fork(mm, [drv])
        yield from cpu_writes(mm, vas, 200)

    j.spawn("cpu0", cpu())
    j.spawn("dev0", device_loop(drv, vas, rounds=2, write="alt", base=1000))
    j.then("check", ops(lambda: cpu_reads(mm, vas),
                        lambda: cpu_reads(box["child"], vas) if "child" in box else iter(())))


def build_reclaim(sim, driver_cls):
    """A device reads four pages while kswapd ages them (``clear_flush_young`` under the PT
    lock: the first pass finds them young and keeps them), then unmaps and swaps out those
    not used since; the CPU writes one afterwards. A device TLB that still maps a
    swapped-out frame reads whatever the frame holds next."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 4)
    j = Join(sim)
    j.spawn("cpu0", seq(kswapd(sim, mm, buf, 4 * PAGE_SIZE), cpu_writes(mm, vas[:1], 300)))
    j.spawn("dev0", device_loop(drv, vas, rounds=2, write=False))
    j.then("check", cpu_reads(mm, vas))


def build_pageout(sim, driver_cls):
    """A device keeps reading two pages that the process pages out with
    ``madvise(MADV_PAGEOUT)`` (5.4+: reclaimed at once, no aging) and writes back in, four
    times over. The reverse-map unmap runs with ``mmap_lock`` held only for read, so each
    time a device fault may GUP a page while its range is open."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 2)
    j = Join(sim)

    def cpu():
        for r in range(4):
            yield from tolerant(mm.madvise(buf, 2 * PAGE_SIZE, "pageout"))
            yield from cpu_writes(mm, vas[:1], 300 + 10 * r)

    j.spawn("cpu0", cpu())
    j.spawn("dev0", device_loop(drv, vas, rounds=6, write=False))
    j.then("check", cpu_reads(mm, vas))


def build_writeback(sim, driver_cls):
    """A device writes a shared file mapping while writeback runs ``page_mkclean`` and
    reclaim then evicts the clean pages: a device write after the clean that does not dirty
    the page again is lost at eviction (LWN 2018, the GUP-and-filesystems problem)."""
    f = sim.new_file("data", 2, fill=lambda i: 10 + i)
    mm = sim.new_process()
    buf = sim.do(mm.mmap(2 * PAGE_SIZE, prot="rw", shared=True, file=f))
    vas = pages(buf, 2)
    for i, va in enumerate(vas):
        sim.do(mm.write(va, 20 + i))
    drv = attach_driver(sim, driver_cls, mm)
    j = Join(sim)
    j.spawn("cpu0", seq(sim.writeback(f), kswapd(sim, mm, buf, 2 * PAGE_SIZE)))
    j.spawn("dev0", device_loop(drv, vas, rounds=2, write=True, base=2000))

    def release_and_evict():
        # the device is done: a driver holding long-term pins releases them (ib_dereg_mr),
        # then reclaim evicts what is clean. A page the device dirtied behind page_mkclean's
        # back is clean in the page cache: evicted, its device writes are gone.
        dereg = getattr(drv, "deregister", None)
        if dereg is not None:
            yield from tolerant(dereg(buf, 2))
        yield from kswapd(sim, mm, buf, 2 * PAGE_SIZE)

    j.then("check", ops(release_and_evict, lambda: cpu_reads(mm, vas)))


def build_migration(sim, driver_cls):
    """A device reads and writes two pages while they migrate to new frames: after the
    migration the old frames are freed; a device still on them loses writes or touches
    freed memory."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 2)
    j = Join(sim)
    j.spawn("cpu0", seq(sim.migrate(mm, buf, 2 * PAGE_SIZE), cpu_writes(mm, vas[1:], 300)))
    j.spawn("dev0", device_loop(drv, vas, rounds=2, write="alt", base=3000))
    j.then("check", cpu_reads(mm, vas))


def build_ksm(sim, driver_cls):
    """Two identical pages are merged into one read-only KSM page while a device reads and
    writes them; the CPU then writes one (COW out of the KSM page). A device writing
    through a stale writable mapping corrupts the shared page."""
    mm = sim.new_process()
    buf = sim.do(mm.mmap(2 * PAGE_SIZE, prot="rw"))
    vas = pages(buf, 2)
    for va in vas:
        sim.do(mm.write(va, 77))
    drv = attach_driver(sim, driver_cls, mm)
    j = Join(sim)
    j.spawn("cpu0", seq(sim.ksm_merge(mm, buf, 2 * PAGE_SIZE), cpu_writes(mm, vas[1:], 400)))
    j.spawn("dev0", device_loop(drv, vas[:1], rounds=3, write="alt", base=4000))
    j.then("check", cpu_reads(mm, vas))


def build_munmap(sim, driver_cls):
    """The CPU unmaps two pages while the device faults on them, then maps and fills a new
    region (the freed frames are reused). A device translation that outlives the munmap is
    a use-after-free; the device must see SIGSEGV-like failure instead."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 2)
    j = Join(sim)
    box = {}

    def cpu():
        yield from mm.munmap(buf, 2 * PAGE_SIZE)
        yield from reuse_frames(mm, box, 500)

    j.spawn("cpu0", cpu())
    j.spawn("dev0", device_loop(drv, vas, rounds=2, write="alt", base=5000))
    j.then("check", ops(lambda: cpu_reads(mm, reused(box))))


def build_mprotect(sim, driver_cls):
    """The CPU makes two pages read-only while the device writes them: after ``mprotect``
    returns, a device write through a stale writable translation is ``WriteToReadOnly``."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 2)
    j = Join(sim)
    j.spawn("cpu0", mm.mprotect(buf, 2 * PAGE_SIZE, "r"))
    j.spawn("dev0", device_loop(drv, vas, rounds=2, write=True, base=6000))
    j.then("check", cpu_reads(mm, vas))


def build_mremap(sim, driver_cls):
    """The CPU moves two pages to a new address (``move_ptes``) while the device accesses
    the old address, then writes at the new one. The old addresses must stop translating."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 2)
    j = Join(sim)
    box = {}

    def cpu():
        box["new"] = new = yield from mm.mremap(buf, 2 * PAGE_SIZE, 4 * PAGE_SIZE)
        box["vas"] = pages(new, 2)
        # fill the freed old range again so a stale translation would read it
        yield from mm.mmap(2 * PAGE_SIZE, prot="rw", addr=buf, fixed=True)
        yield from cpu_writes(mm, vas, 600)
        yield from cpu_writes(mm, box["vas"][:1], 650)

    j.spawn("cpu0", cpu())
    j.spawn("dev0", device_loop(drv, vas, rounds=2, write="alt", base=7000))
    j.then("check", ops(lambda: cpu_reads(mm, box.get("vas", []) + vas)))


def build_truncate(sim, driver_cls):
    """A shared file mapping of two pages; the file is truncated to one page while the
    device reads and writes both, and the CPU then fills new memory (frames reused). The
    truncated page must vanish from the device too (``unmap_mapping_range``)."""
    f = sim.new_file("trunc", 2, fill=lambda i: 30 + i)
    mm = sim.new_process()
    buf = sim.do(mm.mmap(2 * PAGE_SIZE, prot="rw", shared=True, file=f))
    vas = pages(buf, 2)
    for va in vas:
        sim.do(mm.read(va))
    drv = attach_driver(sim, driver_cls, mm)
    j = Join(sim)
    box = {}

    def cpu():
        yield from sim.truncate(f, PAGE_SIZE)
        yield from reuse_frames(mm, box, 700)

    j.spawn("cpu0", cpu())
    j.spawn("dev0", device_loop(drv, vas, rounds=2, write="alt", base=8000))
    j.then("check", ops(lambda: cpu_reads(mm, vas[:1] + reused(box))))


def build_exit(sim, driver_cls):
    """The process exits while the device still accesses its memory; a second process
    then allocates and fills pages (the freed frames are reused). ``release`` must stop the
    device before any page is freed (``exit_mmap``)."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 2, "victim")
    other = sim.new_process("other")
    j = Join(sim)
    box = {}

    def cpu():
        yield from mm.exit()
        yield from reuse_frames(other, box, 900)

    j.spawn("cpu0", cpu())
    j.spawn("dev0", device_loop(drv, vas, rounds=2, write="alt", base=9000))
    j.then("check", ops(lambda: cpu_reads(other, reused(box))))


def build_oom_reap(sim, driver_cls):
    """The OOM reaper unmaps the process's anonymous memory with non-blockable ranges
    (``__oom_reap_task_mm``) while the device accesses it; a notifier that must sleep has
    to refuse (``-EAGAIN``) and the range is skipped. Then a second process reuses frames."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 2, "victim")
    other = sim.new_process("other")
    j = Join(sim)
    box = {}

    def cpu():
        yield from sim.oom_reap(mm)
        yield from reuse_frames(other, box, 1100)

    j.spawn("cpu0", cpu())
    j.spawn("dev0", device_loop(drv, vas, rounds=2, write="alt", base=11000))
    j.then("check", ops(lambda: cpu_reads(other, reused(box))))


def build_fork_after_pin(sim, driver_cls):
    """The device maps (and may pin) a page first; then the CPU forks (as an exporter
    following its drivers' fork protocol: XPMEM's fork ioctls) and writes it. Since 5.9 fork
    gives the child a copy of a page that may be DMA-pinned (``page_maybe_dma_pinned`` in
    ``copy_present_page``), so the parent keeps the pinned one and the device's writes stay
    visible to it."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 1, "parent")
    j = Join(sim)
    mapped = sim.completion("device_mapped")
    box = {}

    def dev():
        yield from tolerant(drv.access(vas[0], write=True, value=12000))
        mapped.complete()
        yield from device_loop(drv, vas, rounds=2, write=True, base=12001)

    def cpu():
        yield mapped.wait()
        box["child"] = yield from exporter_fork(mm, [drv])
        yield from cpu_writes(mm, vas, 1200)

    j.spawn("cpu0", cpu())
    j.spawn("dev0", dev())
    j.then("check", ops(lambda: cpu_reads(mm, vas)))


def build_overlapping(sim, driver_cls):
    """Two CPUs invalidate nested and overlapping ranges of four pages at once (mprotect of
    all four, MADV_DONTNEED of the middle two, then mprotect back) while the device accesses
    them: the driver must count ranges in flight, not flags, and must not re-map a page
    while any covering range is open."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 4)
    j = Join(sim)
    j.spawn("cpu0", seq(mm.mprotect(buf, 4 * PAGE_SIZE, "r"),
                        mm.mprotect(buf, 4 * PAGE_SIZE, "rw")))
    j.spawn("cpu1", seq(mm.madvise(buf + PAGE_SIZE, 2 * PAGE_SIZE, "dontneed"),
                        cpu_writes(mm, vas[1:2], 1300)))
    j.spawn("dev0", device_loop(drv, vas, rounds=2, write=False))
    j.then("check", cpu_reads(mm, vas))


def build_attach_detach(sim, driver_cls):
    """One device stops and its driver unregisters while the CPU invalidates; a new driver
    instance registers and a second device starts. ``unregister`` must wait for hooks in
    flight; the new instance must not miss the invalidation that is in progress."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 2)
    opts = driver_options(sim)
    j = Join(sim)
    dev0_done = sim.completion("dev0_done")
    attached = sim.completion("drv2_registered")
    box = {}

    def dev0():
        yield from device_loop(drv, vas, rounds=1, write="alt", base=13000)
        dev0_done.complete()

    def cpu1():
        yield dev0_done.wait()
        yield from mm.mmu_notifier_unregister(drv)
        box["drv2"] = drv2 = driver_cls(sim, mm, **opts)
        yield from mm.mmu_notifier_register(drv2)
        attached.complete()

    def dev1():
        yield attached.wait()
        yield from device_loop(box["drv2"], vas, rounds=2, write="alt", base=14000)

    j.spawn("cpu0", seq(mm.mprotect(buf, 2 * PAGE_SIZE, "r"),
                        mm.madvise(buf, 2 * PAGE_SIZE, "dontneed"),
                        mm.mprotect(buf, 2 * PAGE_SIZE, "rw")))
    j.spawn("cpu1", cpu1())
    j.spawn("dev0", dev0())
    j.spawn("dev1", dev1())
    j.then("check", cpu_reads(mm, vas))


def build_device_migration(sim, driver_cls):
    """The device reads two pages, moves them into its own memory (``migrate_vma``: a
    MIGRATE range naming it as owner, which it skips, so it must re-point its own PTEs at
    the device pages) and goes on reading and writing them there, while the CPU writes one
    (the CPU fault migrates it back, ``migrate_to_ram``). A device left on the system pages
    that migration freed reads and writes freed frames."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 2)
    j = Join(sim)

    def dev():
        yield from device_loop(drv, vas, rounds=1, write=False)
        yield from tolerant(drv.migrate_to_device(buf, 2))
        yield from device_loop(drv, vas, rounds=2, write="alt", base=15000)

    j.spawn("dev0", dev())
    j.spawn("cpu0", seq(cpu_writes(mm, vas[1:], 1500), cpu_reads(mm, vas)))
    j.then("check", cpu_reads(mm, vas))


def build_peer_device_migration(sim, driver_cls):
    """Two devices mirror the same pages; the second moves them into its memory. Its
    MIGRATE range names it as owner, so only it may skip that range: the first must drop
    its translations like on any invalidation, and fault the pages back (``migrate_to_ram``
    of the peer) before using them again."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 2)
    peer = attach_driver(sim, driver_cls, mm)
    j = Join(sim)
    mapped = sim.completion("dev0_mapped")

    def dev0():
        yield from device_loop(drv, vas, rounds=1, write=False)
        mapped.complete()
        yield from device_loop(drv, vas, rounds=2, write="alt", base=16000)

    def dev1():
        yield mapped.wait()
        yield from tolerant(peer.migrate_to_device(buf, 2))

    j.spawn("dev0", dev0())
    j.spawn("dev1", dev1())
    j.then("check", cpu_reads(mm, vas))


def build_rst_cow_timeline(sim, driver_cls):
    """Documentation/mm/mmu_notifier.rst's own scenario for case B ("a page table entry is
    updated to point to a new page (COW ...)"): two pages addrA and addrB, COW-shared by a
    fork; the device reads both (filling its TLB); CPU-thread-0 and CPU-thread-1 break COW
    on addrA and addrB; CPU-thread-2 and CPU-thread-3 write the new pages as soon as the new
    PTEs are visible; the device then reads addrA and addrB again. A device TLB flushed only
    in ``invalidate_range_end`` can read addrA from the old page after addrB from the new
    one: "the device see the new value for addrB before seeing the new value for addrA.
    This break total memory ordering for the device" (StaleRead)."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 2, "parent")
    a, b = vas
    j = Join(sim)
    forked = sim.completion("forked")
    primed = sim.completion("device TLB filled")
    box = {}

    def thread0():
        box["child"] = yield from exporter_fork(mm, [drv])
        forked.complete_all()
        yield primed.wait()
        yield from cpu_writes(mm, [a], 2100)          # COW_step0..3 on addrA

    def thread(va, base):
        def run():
            yield primed.wait()
            yield from cpu_writes(mm, [va], base)
        return run()

    def writer(va, base):                             # CPU-thread-2 / -3: the new page
        def run():
            yield primed.wait()
            for k in range(3):
                yield from cpu_writes(mm, [va], base + 10 * k)
        return run()

    def dev():
        yield forked.wait()
        yield from device_loop(drv, vas, rounds=1, write=False)   # populate the device TLB
        primed.complete_all()
        yield from device_loop(drv, vas, rounds=3, write=False)

    j.spawn("cpu0", thread0())
    j.spawn("cpu1", thread(b, 2200))
    j.spawn("cpu2", writer(a, 2300))
    j.spawn("cpu3", writer(b, 2400))
    j.spawn("dev0", dev())
    j.then("check", ops(lambda: cpu_reads(mm, vas),
                        lambda: cpu_reads(box["child"], vas) if "child" in box else iter(())))


register_builder("cow-after-fork", build_cow_after_fork)
register_builder("rst-cow-timeline", build_rst_cow_timeline)
register_builder("reclaim-while-device-reads", build_reclaim)
register_builder("pageout-while-device-reads", build_pageout)
register_builder("writeback-device-writes", build_writeback)
register_builder("migration", build_migration)
register_builder("ksm-merge", build_ksm)
register_builder("munmap-during-device-fault", build_munmap)
register_builder("mprotect-downgrade", build_mprotect)
register_builder("mremap", build_mremap)
register_builder("truncate", build_truncate)
register_builder("exit-while-device-active", build_exit, applies=any_driver)
register_builder("oom-reap", build_oom_reap, apis=("modern",))
register_builder("fork-after-pin", build_fork_after_pin, applies=any_driver,
     sim_options={"fork_copies_pinned": True})
register_builder("overlapping-invalidations", build_overlapping)
register_builder("attach-detach-during-invalidation", build_attach_detach)
register_builder("device-migration", build_device_migration, apis=("modern",),
                 applies=has_device_memory)
register_builder("peer-device-migration", build_peer_device_migration, apis=("modern",),
                 applies=has_device_memory)
