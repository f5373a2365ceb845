"""The fixed prose of docs/study-invalidate-page.md: the question, the method and the limits of
the model (the numbers and verdicts around them are generated)."""

TITLE = "# Was `invalidate_page` worth keeping? A study of the 2008 claims"

METHOD = """## Method

**The question.** In April 2008 the MMU-notifier series had two shapes: Andrea Arcangeli's,
with an `invalidate_page` hook called right after `ptep_clear_flush` on every single-page
invalidation (merged in 2.6.27), and Christoph Lameter's range-only one, where every
invalidation, single pages too, is bracketed by `invalidate_range_start`/`_end`. Linux
became range-only in 4.13 (2017). The thread argued performance with no numbers; this study
measures each claim on smmu's emulated primary MM with causal simulated time.

**Modes.** `v2008`: 2.6.27, `invalidate_page` under the PT lock. `v2008-outside-ptl`
(`v08-out`): `invalidate_page` after the PT lock is dropped, the order of 3.7-4.10
(2ec74c3ef2d8) that 4.13's removal cited as pitfall 1. `range_only`: the proposal.

**Drivers**, as the 2008 modes had them: KVM in its 2008 style (`mmu_notifier_count` /
`mmu_notifier_seq`: while any invalidation is in progress *every* fault retries; the sequence
bumped by `invalidate_page` and by each end), GRU (`ms_range_active` makes every dropin wait;
`invalidate_page` flushes one page and the chip drops a dropin raced by any flush, both
counted), XPMEM (pins what it maps, drops it in `invalidate_range_end` and `invalidate_page`
under a mutex: it sleeps). Alone and together on one mm; hooks are counted per VM call site
(`do_wp_page`, `try_to_unmap_one`, `page_mkclean_one`, `write_protect_page`/`replace_page`,
`unmap_vmas`, ...) and per callback, from the observer port.

**Workloads** (each `{npages}` pages unless said): `cow` (fork, then the parent writes every
page: one COW fault each), `cow-mt` (the same from two threads on two CPUs: every flush is a
shootdown), `reclaim` (kswapd on another CPU reclaims the device-mapped pages one by one,
swap-out included), `writeback` (dirty one page of a shared file mapping, write the file back:
`page_mkclean`), `migrate`, `ksm` (pairs of identical pages merged: v2008 `change_pte`),
`munmap` and `madvise` (8-page ranges: the control, a range in every mode), `brk` (grow and
shrink the heap by 4 pages against a reverse-map walker on another CPU, with spinlock and with
rwsem rmap locks: the Aim9 brk analogue), and four real programs replayed from
`strace -f -e trace=memory,process` traces recorded on this machine (`smmu replay-strace`:
python start-up through a pyenv shim with its forks and execs, a gcc compile, a
multithreaded sort of a large file, git status).

**Devices.** Every attached driver has a device streaming reads over the workload's pages
from a seeded phase (a start delay and a start page), with {gap:g} ns of its own work between
accesses, for as long as the CPU works; it never touches the page the CPU operation is on, so
every mode does the same CPU work (checked: a cell whose modes did different work on any
seed is refused, with the seed and the counts). Devices still feel a mode's windows: the
2008 KVM and GRU hold off every fault, on any page, while a range is open.

**Time.** Causal simulated time (`smmu.runtime`): every task has its own clock, a task
woken by a release resumes no earlier than the release plus the hand-over (`lock_handoff`
when it spun, `wakeup` when it slept), each attempt of a device fault is charged, a TLB
flush is local (`tlb_flush_local`) unless the mm ran on another CPU, then one shootdown round
trip plus an IPI per further CPU, I/O is an off-CPU wait. Spinlocks are FIFO ticket locks and
rwsems hand over to their waiters (2.6.2x). The `timed` schedule runs the task that can
resume earliest; each seed breaks ties and jitters every cost by up to +-{jitter}%.

**Figures.** Per operation: CPU-side latency (simulated ns of the operation, I/O waits
excluded), p50 and p99 within a run; the masked-fault window as a distribution in ns and in
scheduler steps (a range: from the VM's `invalidate_range_start` to the last end returned;
v2008: from the PTE clear to the last `invalidate_page` returned); device accesses per us and
the share of device time spent in faults. Every figure is the mean over {seeds} seeds with its
95% interval (Student's t); differences are paired by seed. A difference counts as
significant for Robin's claim when its interval excludes zero *and* it is at least
{threshold}% (a deterministic simulation makes any difference statistically significant).
**Sweeps** (COW storm, KVM+GRU): the per-hook cost (40 ns to 10 us), the device flush cost, the
number of attached drivers, one vs several CPUs.
"""

LIMITS = """## Limits of the model

* Costs are constants measured on, or chosen for, one 2-vCPU VM (the cost table above says
  where each comes from; `benchmarks/bench_costs.py` measures this machine). The wake-up cost
  (~20 us) is that of a VM whose idle vCPUs halt; on bare metal it is a few us, which shrinks
  the rwsem's brk penalty proportionally.
* The 2008 kernel is modelled, not run: `do_wp_page`, `try_to_unmap_one`, `page_mkclean_one`,
  KSM, migration and the rmap walks follow 2.6.27's structure (PT lock, flush, notifier
  order), but there are no real caches, no NUMA, no scheduler beyond the run queue of a CPU,
  and a remote CPU's IPI handler time is not taken from the task running there.
* A TLB shootdown costs one round trip however many CPUs it reaches (plus ~1 us per extra
  IPI), as x86's `native_flush_tlb_others` waits for all acknowledgements in parallel.
* The brk analogue takes the heap's anon_vma lock in `vma_adjust` on every grow, as the tree
  patch 09 applied to did; 2.6.27 skips it when only `vm_end` changes.
* Devices are synthetic streams (reads only, a fixed think time); a real guest or GRU program
  has its own access pattern. Their faults never hit the page under invalidation, by design.
* strace replays use synthetic page touches (a few pages per mapping) and synthetic files;
  the traces carry no memory accesses.
"""
