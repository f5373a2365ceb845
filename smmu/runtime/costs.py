"""The simulated cost model: what each kind of work costs in simulated nanoseconds.

Time is causal (see :mod:`smmu.runtime.scheduler`): every task has its own clock;
``Scheduler.charge(kind, n)`` advances the running task's clock by ``n`` times
``COSTS[kind][0]`` (on-CPU work), ``Scheduler.wait_io(kind)`` by the same amount as an off-CPU
wait (the task sleeps for the I/O), and a task that waits for another (a lock, a completion,
a wait queue, a sleep) resumes no earlier than the moment it was released, plus the price of
being handed the lock (``lock_handoff`` when it spun, ``wakeup`` when it slept). Benchmarks
report simulated time from these numbers only: nothing depends on wall time.

Each entry says where its number comes from. "ccosts" is ``benchmarks/ccosts.c``, run by
``benchmarks/bench_costs.py`` on this class of machine (a 2-vCPU VM, idle vCPUs halted), whose
JSON puts each measurement beside the entry here; "linux-notes 4" is the measured-costs section
of ``../shared/background/linux-notes.md``. :func:`cost_table` is the table every benchmark
writes into its JSON.
"""

from __future__ import annotations

#: Simulated cost of each kind of work, in nanoseconds, with where the number comes from.
COSTS: dict[str, tuple[float, str]] = {
    "step": (5.0, "a few instructions between two preemption points (charged to every step)"),
    "pte_update": (2.0, "one PTE write in a hot cache line"),
    "page_fault": (1300.0, "real anonymous fault here, ~1.3 us (linux-notes 4; benchmarks/"
                           "cfault.c)"),
    "tlb_flush_local": (150.0, "invlpg / local flush of the flushing CPU, ~100-200 ns "
                               "(flush_tlb_page: __flush_tlb_one when current->active_mm == mm)"),
    "tlb_shootdown": (15000.0, "remote TLB shootdown: the IPI round trip native_flush_tlb_others "
                               "spins for (all remote CPUs of mm->cpu_vm_mask in parallel), "
                               "~15 us in this VM (linux-notes 4; ccosts: 17-22 us)"),
    "ipi_send": (1000.0, "each remote CPU past the first of one shootdown: one more APIC ICR "
                         "write, a VM exit in a guest, ~1 us (send_IPI_mask_sequence)"),
    "notifier_call": (40.0, "indirect call through mmu_notifier_ops under (S)RCU"),
    "secondary_flush": (2000.0, "device TLB / IOTLB invalidation command and wait, ~1-3 us"),
    "device_fault": (5000.0, "one device fault round trip (charged per attempt, retries "
                             "included): interrupt or VM exit, handler, GUP, program the entry"),
    "device_access": (100.0, "one DMA access that hits the device TLB"),
    "page_copy": (500.0, "copy 4 KiB at ~8 GB/s"),
    "page_zero": (250.0, "clear 4 KiB"),
    "lock": (20.0, "uncontended acquire + release of a kernel lock (ccosts: 2 ns for a hot "
                   "xchg; spin_lock/unlock with preempt_disable/enable ~10-20 ns)"),
    "lock_handoff": (120.0, "a spinning waiter takes a just-released lock: the lock's cache "
                            "line moves to its core (ccosts handoff: 90-130 ns)"),
    "wakeup": (20000.0, "a sleeping waiter is woken on another CPU and runs: try_to_wake_up, "
                        "the IPI to the halted vCPU, schedule() (ccosts futex ping-pong "
                        "wakeup: 18-25 us here; a few us on bare metal)"),
    "context_switch": (2200.0, "two tasks sharing one CPU switch: schedule() from one to the "
                               "other (ccosts same-CPU futex ping-pong: 2.1-2.2 us)"),
    "swap_io": (50000.0, "swap a page out or in from fast SSD, ~50 us (an off-CPU wait)"),
    "writeback_io": (50000.0, "write a page to the backing file, ~50 us (an off-CPU wait)"),
}

#: kinds charged as off-CPU waits (``Scheduler.wait_io``), not CPU work
IO_KINDS = frozenset({"swap_io", "writeback_io"})


def cost_table(costs: dict | None = None) -> dict:
    """``{kind: {"ns": cost, "source": where it comes from}}``: the cost model as benchmarks
    record it in their JSON."""
    costs = COSTS if costs is None else costs
    return {k: {"ns": v[0], "source": v[1], "off_cpu": k in IO_KINDS}
            for k, v in costs.items()}
