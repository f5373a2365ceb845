"""The simulated cost model: what each kind of work costs in simulated nanoseconds.

``Scheduler.charge(kind, n)`` advances the running task's clock by ``n`` times
``COSTS[kind][0]``; benchmarks report simulated time as the sum of these, so nothing depends on
wall time. Each entry says where its number comes from.
"""

from __future__ import annotations

#: Simulated cost of each kind of work, in nanoseconds, with where the number comes from.
#: Benchmarks report simulated time as the sum of these; nothing depends on wall time.
COSTS: dict[str, tuple[float, str]] = {
    "step": (5.0, "a few instructions between two preemption points"),
    "pte_update": (2.0, "one PTE write in a hot cache line"),
    "page_fault": (1300.0, "real anonymous fault here, ~1.3 us (linux-notes 4)"),
    "tlb_flush_local": (150.0, "invlpg / local flush, ~100-200 ns"),
    "tlb_shootdown": (15000.0, "remote TLB shootdown IPI, ~15 us in this VM (linux-notes 4)"),
    "notifier_call": (40.0, "indirect call through mmu_notifier_ops under SRCU"),
    "secondary_flush": (2000.0, "device TLB / IOTLB invalidation command and wait, ~1-3 us"),
    "device_fault": (5000.0, "device fault round trip: interrupt, handler, GUP, program entry"),
    "device_access": (100.0, "one DMA access that hits the device TLB"),
    "page_copy": (500.0, "copy 4 KiB at ~8 GB/s"),
    "page_zero": (250.0, "clear 4 KiB"),
    "lock": (20.0, "uncontended atomic acquire/release"),
    "swap_io": (50000.0, "swap a page out or in from fast SSD, ~50 us"),
    "writeback_io": (50000.0, "write a page to the backing file, ~50 us"),
}
