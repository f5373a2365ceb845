"""Scenarios on transparent huge pages (:mod:`primary_mm.huge_memory`): every PMD operation
notifies the whole 2 MiB, and a driver must drop all its translations of the range, not only
the page at its start.
"""

from __future__ import annotations

from smmu.base.constants import HPAGE_PMD_SIZE, PAGE_SIZE
from smmu.scenarios.kit import (Join, active_device, cpu_reads, cpu_writes, exporter_fork,
                                kswapd, ops, register_builder, reuse_frames, reused)
from smmu.scenarios.registry import attach_driver

#: the pages of the huge page a device touches: the first, one inside, the last
TOUCHED = (0, 5, 511)


def thp_process(sim, driver_cls, name=None, huge=True):
    """A process with one 2 MiB aligned private anonymous block given
    ``madvise(MADV_HUGEPAGE)`` and written at :data:`TOUCHED` (so a write fault maps it as
    one huge page), and the driver under test attached. With ``huge=False`` the block is
    populated with 512 small pages first (what khugepaged collapses). Returns
    ``(mm, haddr, vas, drv)``."""
    mm = sim.new_process(name)
    base = sim.do(mm.mmap(2 * HPAGE_PMD_SIZE, prot="rw", populate=not huge))
    haddr = (base + HPAGE_PMD_SIZE - 1) & ~(HPAGE_PMD_SIZE - 1)
    sim.do(mm.madvise(haddr, HPAGE_PMD_SIZE, "hugepage"))
    vas = [haddr + i * PAGE_SIZE for i in TOUCHED]
    for i, va in enumerate(vas):
        sim.do(mm.write(va, 100 + i))
    drv = attach_driver(sim, driver_cls, mm)
    return mm, haddr, vas, drv


def build_thp_partial_munmap(sim, driver_cls):
    """A device uses three pages of a huge page while the CPU unmaps one page in its middle:
    ``__split_huge_pmd`` (a 2 MiB CLEAR) first, then the 4 KiB UNMAP; another process then
    allocates (the freed frame is reused). A driver that drops only the page at the start of
    the 2 MiB range keeps a translation of the split PMD's other pages."""
    mm, haddr, vas, drv = thp_process(sim, driver_cls)
    j = Join(sim)
    box = {}
    dev, mapped = active_device(sim, drv, vas, 21000)

    def cpu():
        yield mapped.wait()
        yield from mm.munmap(vas[1], PAGE_SIZE)
        yield from reuse_frames(mm, box, 2100)

    j.spawn("cpu0", cpu())
    j.spawn("dev0", dev)
    j.then("check", ops(lambda: cpu_reads(mm, [vas[0], vas[2]] + reused(box))))


def build_thp_migration(sim, driver_cls):
    """A huge page migrates whole (4.14+: a PMD migration entry under a 2 MiB CLEAR range)
    while a device uses three of its pages; the old 512 frames are freed and another process
    allocates. Every translation of the range must go at start."""
    mm, haddr, vas, drv = thp_process(sim, driver_cls)
    other = sim.new_process("other")
    j = Join(sim)
    box = {}
    dev, mapped = active_device(sim, drv, vas, 22000)

    def cpu():
        yield mapped.wait()
        yield from sim.migrate(mm, haddr, HPAGE_PMD_SIZE)
        yield from reuse_frames(other, box, 2200)

    j.spawn("cpu0", cpu())
    j.spawn("dev0", dev)
    j.then("check", ops(lambda: cpu_reads(mm, vas), lambda: cpu_reads(other, reused(box))))


def build_thp_cow(sim, driver_cls):
    """A device uses three pages of a huge page while the CPU forks and writes them: the
    COW of a huge PMD (5.8+: split, a 2 MiB CLEAR, then a 4 KiB COW; up to 5.7: a copy of the
    whole huge page under a 2 MiB CLEAR); the child reads them."""
    mm, haddr, vas, drv = thp_process(sim, driver_cls, "parent")
    j = Join(sim)
    box = {}
    dev, mapped = active_device(sim, drv, vas, 23000)

    def cpu():
        yield mapped.wait()
        box["child"] = yield from exporter_fork(mm, [drv])
        yield from cpu_writes(mm, vas, 2300)

    j.spawn("cpu0", cpu())
    j.spawn("dev0", dev)
    j.then("check", ops(lambda: cpu_reads(mm, vas),
                        lambda: cpu_reads(box["child"], vas) if "child" in box else iter(())))


def build_khugepaged(sim, driver_cls):
    """512 small pages of a ``MADV_HUGEPAGE`` block, three used by a device, collapsed by
    khugepaged into one huge page: ``test_young`` for each page under the PT lock, then a
    2 MiB CLEAR and the small pages freed (another process allocates them)."""
    mm, haddr, vas, drv = thp_process(sim, driver_cls, huge=False)
    other = sim.new_process("other")
    j = Join(sim)
    box = {}
    dev, mapped = active_device(sim, drv, vas, 24000)

    def cpu():
        yield mapped.wait()
        yield from sim.khugepaged(mm)
        yield from reuse_frames(other, box, 2400)

    j.spawn("cpu0", cpu())
    j.spawn("dev0", dev)
    j.then("check", ops(lambda: cpu_reads(mm, vas), lambda: cpu_reads(other, reused(box))))


def build_thp_reclaim(sim, driver_cls):
    """kswapd ages a huge page while a device uses it (``pmdp_clear_flush_young_notify``:
    ``clear_flush_young`` over 2 MiB, under the PT lock), then splits and swaps it out
    (a 2 MiB CLEAR, then one per page); the CPU writes a page back in."""
    mm, haddr, vas, drv = thp_process(sim, driver_cls)
    j = Join(sim)
    dev, mapped = active_device(sim, drv, vas, 25000, rounds=2)

    def cpu():
        yield mapped.wait()
        yield from kswapd(sim, mm, haddr, HPAGE_PMD_SIZE)
        yield from cpu_writes(mm, vas[:1], 2500)

    j.spawn("cpu0", cpu())
    j.spawn("dev0", dev)
    j.then("check", cpu_reads(mm, vas))


register_builder("thp-partial-munmap", build_thp_partial_munmap)
register_builder("thp-migration", build_thp_migration)
register_builder("thp-cow-after-fork", build_thp_cow)
register_builder("khugepaged-collapse", build_khugepaged)
register_builder("thp-reclaim", build_thp_reclaim)
