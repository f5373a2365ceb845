"""Load scenarios: several CPUs and devices colliding on a hot set of pages, over a large
background (``load-small`` in the default set; ``load``, tagged ``"load"``, run by name;
``load-<N>`` the same shape over N background pages, for the scaling curve of
``benchmarks/bench_checker.py``).

A race needs an invalidation and a device fault *on the same page at the same time*; with
operations spread uniformly over thousands of pages they almost never meet. So the devices
and the CPUs' page-sized operations share a small **hot set**: a few small pages (two in the
first mmu_gather batch of a range larger than a batch, the others spread over the
background) and three pages of a 2 MiB block that becomes a transparent huge page. The rest
of the mapping is **background**, touched only by bulk operations whose cost the model
keeps per operation, not per page (the batched kernels of the page tables and the frame
table: a populated ``mmap``, ``mprotect`` and ``MADV_DONTNEED`` of large ranges, ``fork``
copying the page tables, exit freeing them): they add the invalidations that cross an
mmu_gather batch and the page-table work real loads have, at a cost that barely grows with
the size, and the number of steps of a schedule does not grow with it at all.

Each CPU runs a seeded mix of hot operations (write, read, mprotect r/rw, MADV_DONTNEED,
kswapd's two-pass reclaim, migration of small pages; on the first CPU also fork with the
child writing and exiting) and one bulk operation; the second CPU's is the MADV_DONTNEED
that frees a full mmu_gather batch inside its window, once the devices have mapped the hot
set. One CPU takes the huge page through its life once the devices map it: khugepaged's
collapse, a migration of the whole huge page (a PMD migration entry) while the others touch
it, a partial munmap that splits it. Each device runs a cycle of accesses: a read of its
**ring** (a page it comes back to: a command ring, a doorbell, KVM's APIC-access page; the
first two devices' are the two pages of the first gather batch), a read of the **focus**
page all devices share, a write of any hot page; a driver with device memory moves some
into it (``migrate_to_device``), one with KVM's gfn=>pfn cache reads its ring through the
cache (``gpc_read``). A second process (``job``) runs a VM whose vCPUs read a page that a
CPU migrates several times in a row (``churn``: faults in flight across every part of a
window). The job's process has other devices registered before the VM's (``job_peers``): the
notifier chain calls the newest subscription first, so the VM's start hook returns and the
others' run before the PTE is cleared: a vCPU's fault gets the time to take its snapshot
and its GUP inside the window, before the clear. The job is then exited
under its still active device and fresh pages are allocated so that freed frames are
reused.

Collisions made on purpose (each the interleaving a catalogue driver's own scenario
needs, so that ``load`` catches every catalogue driver within a few schedules:
``benchmarks/bench_checker.py --load``): the ring pages inside the bulk MADV_DONTNEED's
first batch, read by their devices while it is in flight in ``load`` (a driver that holds
no page until ``end``: ``xpmem_no_pin``); the
Documentation/mm/mmu_notifier.rst case B timeline on the focus page: a fork, then a COW
break by one CPU while another writes the new page and the devices read it
(``sva_flush_in_end``); the job's churn (``kvm_seq_after_unlock``, ``kvm_seq_in_start``,
``kvm_gpc_speculative_valid``); for KVM with memslots, the VMM adding the slot of a hot
page while a CPU zaps that page (``kvm_memslot_update_in_window``). The model merges the
VMAs an mprotect split once it is undone (``vma_merge``), so the hot mix does not leave
the background in pieces. The closing task reads the hot set back.

Not applicable: a driver with no notifier (``PINNED``): the load unmaps, zaps and forks
pages the devices map, which a table filled by long-term pins never follows, by design
(its contract is that the process keeps mapping the pinned frames); ``pinned_early_put``
is caught where that contract holds (``exit-while-device-active``, ``fork-after-pin``).

``load`` and ``load-<N>`` are the lean shape of :class:`LoadShape` (the same motifs in
fewer steps: one fork, shorter device passes; ``load-small`` keeps the first shape). The
default search samples these scenarios at random (:data:`LOAD_PORTFOLIO`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from primary_mm.mmu_gather import MAX_GATHER_PAGES
from smmu.base.constants import HPAGE_PMD_SIZE, PAGE_SIZE, TASK_SIZE
from smmu.base.errors import SmmuError
from smmu.scenarios.kit import (Join, cpu_reads, exporter_fork, has_device_memory, kswapd,
                                pages, register_builder, reuse_frames, reused, tolerant)
from smmu.scenarios.registry import attach_driver, driver_options


@dataclass(frozen=True)
class LoadShape:
    """``cpus`` CPU tasks of ``ops_per_cpu`` hot operations (and one bulk one) each,
    ``devices`` device tasks of ``accesses_per_device`` accesses each, over ``npages``
    background pages with ``hot`` hot small pages; ``thp``: three hot pages of a huge page
    too; ``job``: a second process whose device is active when a CPU exits it, with
    ``job_peers`` other devices registered before the VM's.

    ``lean`` (``load`` and ``load-<N>``; ``load-small`` keeps the first shape): the same
    motifs in fewer steps, and the collisions that catch a driver made more likely:

    - each device's first pass maps only its ring, the focus page and the huge page's
      (what the operations that wait for the pass need); the cycle's writes map the rest;
    - one fork a run, the COW motif's (it copies the background's page tables all the
      same): the first CPU's mix and the bulk operations do not fork;
    - a device stops once every CPU is done and it made half of its accesses: what comes
      after collides with no invalidation;
    - a device with device memory moves the page it is about to touch into it with
      probability 1/4 (not 1/8), as it makes fewer accesses;
    - the devices whose ring is in the first mmu_gather batch read it while the bulk
      MADV_DONTNEED is in flight (a driver that holds no page until ``end`` meets the
      batch freed inside the window: ``xpmem_no_pin``);
    - the VMM adds the memslots in the order the CPUs come to their pages, so that each
      is added while its page's zap is in flight (``kvm_memslot_update_in_window``).
    """

    cpus: int
    devices: int
    npages: int
    ops_per_cpu: int
    accesses_per_device: int
    hot: int = 6
    thp: bool = True
    job: bool = True
    job_peers: int = 3
    lean: bool = False


#: hot operations of the CPUs, and the bulk ones over the background
HOT_OPS = ("write", "read", "mprotect", "dontneed", "kswapd", "migrate", "fork")
BULK_OPS = ("mprotect", "dontneed", "fork")
#: kept for callers of the previous module: every operation of the mix
LOAD_OPS = HOT_OPS
#: the pages of the huge page in the hot set: the first, one inside, the last
THP_HOT = (0, 5, 511)
#: pages past the first mmu_gather batch in the range of the bulk MADV_DONTNEED
GATHER_TAIL = 64
#: migrations in a row of the page the job's device reads (Load.churn), the vCPUs of the
#: job's device that read it meanwhile, and the other devices of the job's process
#: (LoadShape.job_peers)
JOB_CHURN = 6
JOB_VCPUS = 3


def _hot_small(n: int, hot: int) -> list:
    """Indexes of ``hot`` pages spread evenly over ``n`` background pages."""
    step = max(1, n // max(1, hot))
    return sorted({min(n - 1, i * step + step // 2) for i in range(hot)})


class _Load:
    """The state one build shares between its tasks."""

    def __init__(self, sim, driver_cls, shape: LoadShape, rng: random.Random):
        self.sim, self.shape, self.rng = sim, shape, rng
        n = shape.npages
        self.mm = mm = sim.new_process("load")
        self.buf = sim.do(mm.mmap(n * PAGE_SIZE, prot="rw", populate=True))
        batch = sim.memory.gather.pages or MAX_GATHER_PAGES
        self.batch = batch
        # the MADV_DONTNEED that crosses an mmu_gather batch needs more pages than one batch
        # (9,698 from 3.7 on): a background smaller than that gets a region of its own for
        # it, not shared by forks (a fork copies page tables, a cost per page)
        self.gbuf, self.gpages = self.buf, n
        if n < batch + GATHER_TAIL:
            self.gpages = batch + GATHER_TAIL
            self.gbuf = sim.do(mm.mmap(self.gpages * PAGE_SIZE, prot="rw", populate=True))
            sim.do(mm.madvise(self.gbuf, self.gpages * PAGE_SIZE, "dontfork"))
        # two hot pages in the first gather batch (its first and its last page: freed
        # inside the window, the last one freed reused first), the others spread out over
        # the background
        first = [self.gbuf, self.gbuf + (min(batch, self.gpages) - 1) * PAGE_SIZE]
        spread = [self.buf + i * PAGE_SIZE for i in _hot_small(n, max(0, shape.hot - 2))]
        self.small = sorted(set(first + spread))
        self.thp = []
        if shape.thp:
            # small pages first, which khugepaged collapses into a huge page (thp_cycle)
            base = sim.do(mm.mmap(2 * HPAGE_PMD_SIZE, prot="rw", populate=True))
            self.haddr = (base + HPAGE_PMD_SIZE - 1) & ~(HPAGE_PMD_SIZE - 1)
            sim.do(mm.madvise(self.haddr, HPAGE_PMD_SIZE, "hugepage"))
            # not shared by the forks of the mix (a COW would split it and make the
            # collapse of thp_cycle impossible): its own cycle is what it is here for
            sim.do(mm.madvise(self.haddr, HPAGE_PMD_SIZE, "dontfork"))
            self.thp = [self.haddr + i * PAGE_SIZE for i in THP_HOT]
        self.hot = self.small + self.thp
        for i, va in enumerate(self.hot):
            sim.do(mm.write(va, 100 + i))
        # each device's ring (see device()): the two pages of the first gather batch first
        # (the bulk MADV_DONTNEED frees them inside its window), then the spread ones
        self.rings = first + [va for va in spread if va not in first]
        # the page every device and the CPUs' COW and migration motifs share: a spread one
        # (fork copies it, unlike the gather region's), not a ring when there are others
        others = [va for va in spread if va not in first]
        self.focus = others[-1] if others else first[0]
        # KVM with memslots (a VMM's KVM_SET_USER_MEMORY_REGION): the guest's memory is
        # every mapping but the hot spread pages other than the focus, which the VMM adds
        # one by one while the CPUs invalidate them (vmm())
        self.pending = [va for va in spread if va != self.focus] \
            if callable(getattr(driver_cls, "set_memslot", None)) else []
        self.slot_go = {va: sim.completion("memslot_go") for va in self.pending}
        # (lean) the pages whose zap has begun, in that order: the VMM serves them so
        self.asked: list = []
        self.slot_wq = sim.waitqueue("memslot_asked")
        self.drvs = [self._attach(driver_cls, mm) for _ in range(shape.devices)]
        self.job = self.job_drv = None
        if shape.job:
            self.job = sim.new_process("job")
            jbuf = sim.do(self.job.mmap(2 * PAGE_SIZE, prot="rw"))
            self.job_vas = pages(jbuf, 2)
            for i, va in enumerate(self.job_vas):
                sim.do(self.job.write(va, 900 + i))
            # other devices of the job's process first (job_peers), then the one whose
            # vCPUs read: the chain calls the newest first (hlist_add_head_rcu), so its
            # start has the peer's to wait for before the PTE is cleared
            self.job_peer = [self._attach(driver_cls, self.job)
                             for _ in range(shape.job_peers)]
            self.job_drv = self._attach(driver_cls, self.job)
        # the fork whose COW breaks the other CPUs' writes meet (cow_motif, cow_writes)
        self.forked = sim.completion("load_forked")
        self.job_warm = sim.completion("job_warm")
        self.job_churned = self.job_gone = not shape.job
        self.box: dict = {}
        # the devices' first pass over the hot set: the huge page's own operations (a split,
        # a collapse) wait for it, so that there are translations of it to drop
        self.warm = sim.completion("devices_warm")
        self.warming = len(self.drvs)
        self.cpus_left = shape.cpus
        self.bulk_busy = False

    def _attach(self, driver_cls, mm):
        if not callable(getattr(driver_cls, "set_memslot", None)):
            return attach_driver(self.sim, driver_cls, mm)
        # memslots over the whole user address space but the pending pages
        slots, lo = [], 0
        for va in (self.pending if mm is self.mm else []):
            slots.append((lo, va))
            lo = va + PAGE_SIZE
        slots.append((lo, TASK_SIZE))
        return self.sim.attach(driver_cls, mm, memslots=slots, **driver_options(self.sim))

    # ------------------------------------------------------------------ CPU side
    def hot_op(self, op: str, cpu: int, k: int, rng: random.Random, children: list):
        sim, mm = self.sim, self.mm
        # the huge page is split and collapsed by its own cycle (thp_cycle): other page
        # operations keep to the small pages, reads, writes and fork touch both
        va = rng.choice(self.hot if op in ("write", "read", "fork") else self.small)
        value = 100_000 * (cpu + 1) + k
        if op == "write":
            yield from tolerant(mm.write(va, value))
        elif op == "read":
            yield from tolerant(mm.read(va))
        elif op == "mprotect":
            yield from tolerant(mm.mprotect(va, PAGE_SIZE, "r"))
            yield from tolerant(mm.mprotect(va, PAGE_SIZE, "rw"))
        elif op == "dontneed":
            yield from tolerant(mm.madvise(va, PAGE_SIZE, "dontneed"))
        elif op == "kswapd":
            # small pages only, as for migration: a huge page is reclaimed (or migrated)
            # whole or split into its 512 pages one by one, a cost per page; its own
            # operations (split, collapse, partial munmap) notify the whole 2 MiB
            yield from kswapd(sim, mm, va, PAGE_SIZE)
        elif op == "migrate":
            yield from tolerant(sim.migrate(mm, va, PAGE_SIZE))
        elif op == "fork":
            if not children:
                child = yield from tolerant(exporter_fork(mm, self.drvs))
                if not isinstance(child, SmmuError):
                    children.append(child)
                    yield from tolerant(child.write(va, value + 50_000))

    def thp_cycle(self):
        """The huge page's life under load, once the devices map its block: khugepaged
        collapses the 512 small pages into one huge page (new frames under a 2 MiB CLEAR;
        the small ones are freed), the huge page migrates whole (a PMD migration entry:
        faults on it wait for the copy), then a page in its middle is unmapped (the huge
        PMD splits under a 2 MiB CLEAR, then the 4 KiB UNMAP)."""
        mm = self.mm
        yield self.warm.wait()
        yield from tolerant(self.sim.khugepaged(mm, self.haddr, HPAGE_PMD_SIZE))
        yield from tolerant(self.sim.migrate(mm, self.haddr, HPAGE_PMD_SIZE))
        yield from tolerant(mm.munmap(self.thp[1], PAGE_SIZE))

    def churn(self, mm, va, ready, times):
        """Migrate ``va`` of ``mm`` ``times`` in a row once ``ready`` (its device mapped
        it) while the device's vCPUs use it: the fault a vCPU takes after one migration
        dropped its translation (or the retry of one that met the window) is in flight, its
        GUP done and its sequence snapshot taken, when the next one clears the PTE, so the
        faults meet every part of the next window: the lock taken between the zap and the
        sequence bump (``kvm_seq_after_unlock``), a snapshot after a bump made too early
        (``kvm_seq_in_start``), a whole window between snapshot and map (``kvm_no_seq``),
        a gfn=>pfn cache refreshed between its invalidation and the in-progress count
        (``kvm_gpc_speculative_valid``)."""
        yield ready.wait()
        for _ in range(times):
            yield from tolerant(self.sim.migrate(mm, va, PAGE_SIZE))

    def cow_motif(self, children: list, value: int):
        """Documentation/mm/mmu_notifier.rst's case B under load: fork (the focus page
        becomes COW-shared), then break COW on it while another CPU (cow_writes) writes the
        new page as soon as its PTE is visible and the devices read it."""
        try:
            if not children:
                child = yield from tolerant(exporter_fork(self.mm, self.drvs))
                if not isinstance(child, SmmuError):
                    children.append(child)
        finally:
            self.forked.complete_all()
        yield from tolerant(self.mm.write(self.focus, value))

    def cow_writes(self, value: int):
        yield self.forked.wait()
        for i in range(2):
            yield from tolerant(self.mm.write(self.focus, value + i))

    def bulk_op(self, op: str, rng: random.Random, children: list):
        """One operation over a large part of the background (cost per operation)."""
        mm, n = self.mm, self.shape.npages
        if op == "mprotect":
            a = rng.randrange(n)
            length = rng.randint(1, n - a) * PAGE_SIZE
            start = self.buf + a * PAGE_SIZE
            yield from tolerant(mm.mprotect(start, length, "r"))
            yield from tolerant(mm.mprotect(start, length, "rw"))
        elif op == "dontneed":
            # past the first mmu_gather batch: a full batch is freed inside the window
            yield self.warm.wait()
            length = min(self.gpages, self.batch + GATHER_TAIL) * PAGE_SIZE
            self.bulk_busy = True
            try:
                yield from tolerant(mm.madvise(self.gbuf, length, "dontneed"))
            finally:
                self.bulk_busy = False
        elif op == "fork" and not children:
            child = yield from tolerant(exporter_fork(mm, self.drvs))
            if not isinstance(child, SmmuError):
                children.append(child)

    def cpu(self, c: int, rng: random.Random):
        shape = self.shape
        # fork copies the whole background's page tables (a cost per page): one CPU has
        # it in its hot mix, the others fork in their bulk operation and the COW motif
        # (a lean shape: only the COW motif forks)
        mix = HOT_OPS if c == 0 and not shape.lean else HOT_OPS[:-1]
        plan = [rng.choice(mix) for _ in range(shape.ops_per_cpu)]
        # one bulk operation each; the second CPU's is the MADV_DONTNEED that crosses an
        # mmu_gather batch (freed pages inside the window), which every load has: first,
        # once the devices have mapped the hot set, while they are busy
        if c == 1:
            plan.insert(0, ("bulk", "dontneed"))
        else:
            plan.insert(rng.randrange(len(plan) + 1),
                        ("bulk", rng.choice(BULK_OPS[:-1] if shape.lean else BULK_OPS)))
        if c == 0 and self.job is not None:
            # first the page the job's vCPUs read is churned (one driver on that mm: its
            # windows are short), then the job exits under its still active device
            plan.insert(0, ("churn-job", None))
            plan.insert(1, ("exit-job", None))
        if c == 2 % max(1, shape.cpus) and self.thp:
            plan.insert(rng.randrange(len(plan) + 1), ("thp-cycle", None))
        # the motifs: each page waiting for its memslot is zapped by one CPU while the VMM
        # adds the slot; the last CPU forks and breaks COW on the focus page (cow_motif),
        # the one before it writes the new page meanwhile (cow_writes)
        for i, va in enumerate(self.pending):
            if i % shape.cpus == c:
                plan.insert(rng.randrange(len(plan) + 1), ("memslot", va))
        if c == shape.cpus - 1:
            plan.insert(rng.randrange(len(plan) + 1), ("cow", None))
        elif c == shape.cpus - 2:
            plan.insert(rng.randrange(len(plan) + 1), ("cow-writes", None))
        children: list = []
        for k, op in enumerate(plan):
            if isinstance(op, tuple):
                kind, what = op
                if kind == "bulk":
                    yield from self.bulk_op(what, rng, children)
                elif kind == "thp-cycle":
                    yield from self.thp_cycle()
                elif kind == "memslot":
                    # the VMM adds the page's memslot (vmm()) while this CPU zaps it
                    self.slot_go[what].complete_all()
                    self.asked.append(what)
                    self.slot_wq.wake_all()
                    yield from tolerant(self.mm.madvise(what, PAGE_SIZE, "dontneed"))
                elif kind == "churn-job":
                    try:
                        yield from self.churn(self.job, self.job_vas[1], self.job_warm,
                                              JOB_CHURN)
                    finally:
                        self.job_churned = True
                elif kind == "cow":
                    yield from self.cow_motif(children, 100_000 * (c + 1) + 90 + k)
                elif kind == "cow-writes":
                    yield from self.cow_writes(100_000 * (c + 1) + 90 + k)
                else:                 # the job's mm goes while its device is active; its
                    try:                                      # frames are reused at once
                        yield from tolerant(self.job.exit())
                    finally:
                        self.job_gone = True
                    yield from reuse_frames(self.mm, self.box, 700_000)
            else:
                yield from self.hot_op(op, c, k, rng, children)
        for child in children:
            yield from tolerant(child.exit())
        self.cpus_left -= 1

    # ------------------------------------------------------------------ device side
    def device(self, drv, d: int, rng: random.Random):
        # one device moves pages into its memory (the others are its peers: they must
        # follow the MIGRATE range it sends and fault the pages back)
        migrates = d == 0 and has_device_memory(type(drv))
        base = 1_000_000 * (d + 1)
        # each device has a page it comes back to between its other accesses (a command
        # ring, a doorbell, KVM's APIC-access page): the first it maps
        ring = self.rings[d % len(self.rings)]
        # a kernel reader of a guest page through KVM's gfn=>pfn cache (steal time, the
        # pvclock: kvm_gpc_check / kvm_gpc_refresh) reads the ring through it
        gpc = getattr(drv, "gpc_read", None)
        # the first pass: map the whole hot set, or what the operations waiting for the
        # pass need (the ring for the bulk MADV_DONTNEED, the huge page for its cycle) and
        # the focus page
        lean = self.shape.lean
        first = [self.focus] + self.thp if lean else self.hot
        for va in [ring] + [v for v in first if v != ring]:
            yield from tolerant(drv.access(va, write=False))
        self.warming -= 1
        if not self.warming:
            self.warm.complete_all()
        n = self.shape.accesses_per_device
        for k in range(n):
            if lean and not self.cpus_left and k >= n // 2:
                break
            # a cycle of four: a read of the focus page, of the ring, a write of any hot
            # page, a read of the ring
            w = k % 4 == 2
            va = ring if k % 2 else (rng.choice(self.hot) if w else self.focus)
            if lean and self.bulk_busy and ring in self.rings[:2]:
                va, w = ring, False
            if migrates and va in self.small and rng.random() < (0.25 if lean else 0.125):
                yield from tolerant(drv.migrate_to_device(va, 1))
                continue
            if gpc is not None and k % 2:
                yield from tolerant(gpc(va))
                continue
            yield from tolerant(drv.access(va, write=w, value=(base + k) if w else None))

    def vmm(self):
        """The VMM adds a memslot over each pending page (``KVM_SET_USER_MEMORY_REGION``)
        while the CPUs invalidate them: in the order of the pages, or (lean) in the order
        the CPUs come to them, so that each slot is added while its page's zap is in
        flight, not after a zap that came before the VMM's turn."""
        for i in range(len(self.pending)):
            if self.shape.lean:
                yield self.slot_wq.wait_until(lambda i=i: len(self.asked) > i)
                va = self.asked[i]
            else:
                va = self.pending[i]
                yield self.slot_go[va].wait()
            for d in self.drvs:
                yield from tolerant(d.set_memslot(va, va + PAGE_SIZE))

    def job_device(self):
        base = 9_000_000
        drv = self.job_drv
        gpc = getattr(drv, "gpc_read", None)
        n = 2 * self.shape.accesses_per_device // 3 + 2
        # busy until its mm is gone (bounded): it is churned, then exited under it
        for k in range(4 * n):
            if k >= n and self.job_gone:
                break
            va = self.job_vas[k % 2]
            w = k % 2 == 0
            if gpc is not None and not w and k > 1:
                yield from tolerant(gpc(va))
            else:
                yield from tolerant(drv.access(va, write=w, value=(base + k) if w else None))
            if k == 1:
                self.job_warm.complete_all()

    def job_vcpu(self):
        """A second vCPU of the job's device: reads the churned page while it is churned
        (its faults are in flight when the migrations come, as the first one's)."""
        drv, va = self.job_drv, self.job_vas[1]
        gpc = getattr(drv, "gpc_read", None)
        yield self.job_warm.wait()
        for _ in range(8 * JOB_CHURN):
            if self.job_churned:
                break
            yield from tolerant(gpc(va) if gpc is not None else drv.access(va, write=False))

    def check(self):
        yield from cpu_reads(self.mm, self.hot)
        yield from cpu_reads(self.mm, reused(self.box))


def load_builder(shape: LoadShape, seed_salt: int):
    """The builder of a load scenario of ``shape`` (see the module docstring)."""
    def build(sim, driver_cls):
        rng = random.Random((sim.seed or 0) * 7919 + seed_salt)
        load = _Load(sim, driver_cls, shape, rng)
        j = Join(sim)
        for c in range(shape.cpus):
            j.spawn(f"cpu{c}", load.cpu(c, random.Random(rng.random())))
        for d, drv in enumerate(load.drvs):
            j.spawn(f"dev{d}", load.device(drv, d, random.Random(rng.random())))
        if load.job_drv is not None:
            j.spawn("jobdev", load.job_device())
            for v in range(1, JOB_VCPUS):
                j.spawn(f"jobdev{v}", load.job_vcpu())
        if load.pending:
            j.spawn("vmm", load.vmm())
        j.then("check", load.check())
    hot, bulk = (HOT_OPS[:-1], BULK_OPS[:-1]) if shape.lean else (HOT_OPS, BULK_OPS)
    build.__doc__ = (f"{shape.cpus} CPUs and {shape.devices} devices colliding on "
                     f"{shape.hot} hot pages" + (" and a huge page" if shape.thp else "") +
                     f" over {shape.npages} background pages: seeded mixes of "
                     f"{', '.join(hot)}, bulk {', '.join(bulk)} of the background, a fork "
                     "whose COW break the devices meet"
                     + (", and a second process exited while its device is active"
                        if shape.job else "") + "; coherence under load.")
    return build


LOAD_SMALL = LoadShape(cpus=3, devices=2, npages=256, ops_per_cpu=8, accesses_per_device=24)
LOAD = LoadShape(cpus=4, devices=3, npages=4096, ops_per_cpu=4, accesses_per_device=24,
                 job_peers=2, lean=True)
#: background sizes of the scaling curve (``load-<N>``, same shape as ``load``)
SCALING = (256, 1024, 4096, 16384, 65536)


#: the default search's mix on a load scenario: random schedules only. A load run has
#: thousands of choice points and hundreds of notifier windows: a preemption-bounded search
#: spends its schedules on the first few steps, the window-directed runs on the first few
#: windows (its recording run has no preemption at all); random schedules interleave all of
#: it from the first run on (measured: benchmarks/bench_checker.py "load")
LOAD_PORTFOLIO = (("random", 1.0),)


def frames_for(npages: int) -> dict:
    """Simulator options with frames enough for ``npages`` background pages, a fork's copies
    of the hot set, the huge page and the job."""
    return {"nframes": npages + MAX_GATHER_PAGES + GATHER_TAIL + 3 * 1024}


register_builder("load-small", load_builder(LOAD_SMALL, 1), tags=("load-small",),
                 sim_options=frames_for(LOAD_SMALL.npages), portfolio=LOAD_PORTFOLIO)
register_builder("load", load_builder(LOAD, 2), tags=("load",), sim_options=frames_for(4096),
                 portfolio=LOAD_PORTFOLIO)
for _n in SCALING:
    if _n != LOAD.npages:
        register_builder(f"load-{_n}", load_builder(
            replace(LOAD, npages=_n),
            2), tags=("load",), sim_options=frames_for(_n), portfolio=LOAD_PORTFOLIO)
