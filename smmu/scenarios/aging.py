"""Scenarios that age pages while a device uses them: the secondary MMUs' aging hooks
(``clear_flush_young``, ``clear_young``) run there under the PT lock, as Linux calls them.
"""

from __future__ import annotations

from smmu.base.constants import PAGE_SIZE
from smmu.scenarios.kit import (Join, anon_process, cpu_reads, cpu_writes, device_loop,
                                register_builder)


def build_page_idle(sim, driver_cls):
    """A working-set estimator marks four pages idle and reads the bitmap back
    (``/sys/kernel/mm/page_idle/bitmap``: ``ptep_clear_young_notify`` under the PT lock,
    each secondary MMU's ``clear_young``) while a device uses two of them; the CPU then
    writes one. The hooks run atomic: one that sleeps is caught here."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 4)
    j = Join(sim)

    def estimator():
        for _ in range(2):
            yield from sim.page_idle(mm, buf, 4 * PAGE_SIZE)            # mark idle
            yield
            yield from sim.page_idle(mm, buf, 4 * PAGE_SIZE, mark=False)  # who was used
        yield from cpu_writes(mm, vas[2:3], 3100)

    j.spawn("cpu0", estimator())
    j.spawn("dev0", device_loop(drv, vas[:2], rounds=3, write="alt", base=31000))
    j.then("check", cpu_reads(mm, vas))


register_builder("page-idle-tracking", build_page_idle)
