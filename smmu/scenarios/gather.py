"""Scenarios large enough to cross an mmu_gather batch: a zap that frees pages of its range
before ``invalidate_range_end`` (:mod:`primary_mm.mmu_gather`). A driver that drops its
translations only in ``end`` and holds no page reference reaches freed or reused frames here,
and nowhere in the few-page scenarios.
"""

from __future__ import annotations

from primary_mm.mmu_gather import MAX_GATHER_PAGES
from smmu.base.constants import PAGE_SIZE
from smmu.scenarios.kit import (Join, active_device, cpu_reads, cpu_writes, ops,
                                register_builder, reuse_frames, reused)
from smmu.scenarios.registry import attach_driver

#: pages mapped beyond the first batch (they are freed after ``end``)
TAIL = 64


def gather_process(sim, driver_cls):
    """A process with one populated private anonymous mapping a little larger than the
    simulator's gather batch, the pages a device will touch written, and the driver under
    test attached. The touched pages are the first and the last of the first batch (the last
    one freed is the first frame reused: the free stack is LIFO) and the last page of the
    mapping. Returns ``(mm, buf, npages, touched, drv)``."""
    batch = sim.memory.gather.pages or MAX_GATHER_PAGES
    n = batch + TAIL
    mm = sim.new_process("victim")
    buf = sim.do(mm.mmap(n * PAGE_SIZE, prot="rw", populate=True))
    touched = [buf + i * PAGE_SIZE for i in (0, batch - 1, n - 1)]
    for i, va in enumerate(touched):
        sim.do(mm.write(va, 100 + i))
    drv = attach_driver(sim, driver_cls, mm)
    return mm, buf, n, touched, drv


def build_munmap_gather(sim, driver_cls):
    """munmap of a mapping larger than one mmu_gather batch while a device accesses pages
    of the first batch, and another process allocates: Linux frees the full batch inside the
    start..end window (``zap_pte_range`` -> ``tlb_flush_mmu``), and the freed frames are
    reused at once. A device translation that lasts until ``end`` without a page reference
    reaches a freed or reused frame."""
    mm, buf, n, touched, drv = gather_process(sim, driver_cls)
    other = sim.new_process("other")
    j = Join(sim)
    box = {}
    dev, mapped = active_device(sim, drv, touched, 5000, rounds=4)

    def cpu():
        yield mapped.wait()
        yield from mm.munmap(buf, n * PAGE_SIZE)

    def other_cpu():
        yield mapped.wait()
        yield from reuse_frames(other, box, 500)

    j.spawn("cpu0", cpu())
    j.spawn("cpu1", other_cpu())
    j.spawn("dev0", dev)
    j.then("check", ops(lambda: cpu_reads(other, reused(box))))


def build_dontneed_gather(sim, driver_cls):
    """``MADV_DONTNEED`` of a mapping larger than one mmu_gather batch (``zap_page_range``)
    while a device accesses pages of the first batch and another process allocates; the
    CPU then writes the touched pages again (fresh zero pages). The first batch is freed
    inside the window."""
    mm, buf, n, touched, drv = gather_process(sim, driver_cls)
    other = sim.new_process("other")
    j = Join(sim)
    box = {}

    dev, mapped = active_device(sim, drv, touched, 6000, rounds=4)

    def cpu():
        yield mapped.wait()
        yield from mm.madvise(buf, n * PAGE_SIZE, "dontneed")
        yield from cpu_writes(mm, touched, 600)

    def other_cpu():
        yield mapped.wait()
        yield from reuse_frames(other, box, 700)

    j.spawn("cpu0", cpu())
    j.spawn("cpu1", other_cpu())
    j.spawn("dev0", dev)
    j.then("check", ops(lambda: cpu_reads(mm, touched), lambda: cpu_reads(other, reused(box))))


register_builder("munmap-gather-batch", build_munmap_gather)
register_builder("dontneed-gather-batch", build_dontneed_gather)


