"""The study's workloads: the same CPU work under each notifier mode, with devices working
beside it, measured like for like.

Every workload builds a process, attaches the drivers (each with a device task of its own
that streams over the workload's pages from a seeded phase until the CPU work is done),
runs its CPU operations one at a time from CPU tasks, and records per operation the CPU-side
latency (simulated ns, off-CPU I/O waits excluded) and the work it did (pages faulted,
copied, reclaimed, written back, migrated, merged, unmapped). The devices never touch the
page the CPU operation is working on (``ctx.busy``): that keeps the CPU work equal in every
mode, so a difference in time is the notifier API's. What a mode's masked windows cost the
devices shows anyway: the 2008 KVM and GRU hold off *every* fault while any range is
open (``mmu_notifier_count`` / ``ms_range_active``), not only faults on that range.

:func:`run` runs one :class:`Config` and returns its measurements as a JSON-able dict.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from smmu.base.constants import PAGE_SIZE
from smmu.base.errors import SmmuError, UsageError
from smmu.explore.loader import builtin_drivers
from smmu.runtime.schedules import Timed
from smmu.sim import Simulator
from smmu.study.observe import StudyObserver
from smmu.study.stats import distribution
from smmu.study.strace import Replay, parse_file


@dataclass(frozen=True)
class Mode:
    """A notifier API as the 2008 thread argued it."""

    name: str
    api: str
    outside_ptl: bool = False
    describe: str = ""


MODES = {
    "v2008": Mode("v2008", "v2008", False, "2.6.27: invalidate_page under the PT lock"),
    "v2008-outside-ptl": Mode("v2008-outside-ptl", "v2008", True,
                              "3.7-4.10: invalidate_page after the PT lock is dropped "
                              "(reclaim, writeback, migration); COW and KSM a range "
                              "with change_pte"),
    "range_only": Mode("range_only", "range_only", False,
                       "every invalidation bracketed by invalidate_range_start/end"),
}
#: every mode a run may use: the study's three and today's API (``smmu replay-strace``)
ALL_MODES = dict(MODES, modern=Mode("modern", "modern", False,
                                    "today's API (non-blockable starts, events, "
                                    "arch_invalidate_secondary_tlbs)"))


_BUILTIN = builtin_drivers()
KVM, GRU, XPMEM = _BUILTIN["kvm"], _BUILTIN["gru"], _BUILTIN["xpmem"]


class XPMEM2008(XPMEM):
    """XPMEM on the 2008 API (``invalidate_page`` + ``invalidate_range_end``): what the real
    driver did on kernels that called ``invalidate_page``. Under the PT lock its sleeping
    ``invalidate_page`` is ``SleepInAtomic`` (the study shows it rather than skipping it);
    with ``invalidate_page_outside_ptl`` it may sleep."""

    name = "xpmem-2008"
    apis = ("v2008", "range_only", "modern")


def make_driver(sim, name: str, mm):
    """The reference driver ``name`` as the simulator's API had it: in the 2008 APIs KVM in
    its 2008 style (``mmu_notifier_count``: any invalidation in progress holds every fault
    off) and XPMEM on the 2008 API; in ``modern`` today's KVM and XPMEM. GRU with the
    hardware dropin guard."""
    modern = sim.notifier_api == "modern"
    if name == "kvm":
        return sim.attach(KVM, mm, style="modern" if modern else "2008")
    if name == "gru":
        return sim.attach(GRU, mm)
    if name == "xpmem":
        return sim.attach(XPMEM if modern else XPMEM2008, mm)
    raise UsageError(f"unknown study driver {name!r}: use kvm, gru or xpmem")


@dataclass
class Config:
    """One run: workload, mode, attached drivers, seed and the knobs the sweeps turn."""

    workload: str
    mode: str = "v2008"
    drivers: tuple = ("kvm",)
    seed: int = 0
    npages: int = 64
    threads: int = 1
    rmap_locks: str = "rwsem"
    fair_locks: bool = True
    jitter: float = 0.05
    costs: dict = field(default_factory=dict)
    walker_gap_ns: float = 20_000.0     # brk: the rmap walker's pause between walks
    device_gap_ns: float = 1000.0       # a device's compute time between two accesses
    trace: str | None = None            # strace workloads: the trace file
    check: bool = True

    def key(self) -> dict:
        d = asdict(self)
        d["drivers"] = list(self.drivers)
        return d


class Ctx:
    """What a running workload shares with its device tasks and reports."""

    def __init__(self, sim, cfg: Config):
        self.sim = sim
        self.cfg = cfg
        self.rng = random.Random(f"{cfg.workload}-{cfg.seed}")
        self.mm = None
        self.drivers: list = []
        self.device_pages: list[int] = []
        self.busy: set[int] = set()
        self.done = False
        self.cpu_left = 0
        self.latencies: list[float] = []
        self.work: Counter = Counter()
        self.t_start = 0.0
        self.t_end = 0.0
        self.devices: list[dict] = []
        self.extra: dict = {}
        self.mm_pages: dict = {}          # id(mm) -> pages its devices read (strace)

    def pages_of(self, drv) -> list:
        """The pages a device of ``drv`` reads: the workload's, or its process's."""
        return self.mm_pages.get(id(drv.mm), self.device_pages)

    def start_device(self, drv, k: int | None = None):
        """Spawn the device task of ``drv`` (a phase drawn from the run's seed)."""
        k = len(self.devices) if k is None else k
        self.sim.spawn(f"dev{k}.{drv.name}", device_loop(self, drv, k))

    def op(self, gen, pages=()):
        """Run one CPU operation (a generator) as the measured unit: the pages it works on
        are busy meanwhile; records its CPU-side latency (I/O waits excluded)."""
        sim = self.sim
        task = sim.running
        self.busy.update(pages)
        t0, io0 = task.time, task.io_ns
        try:
            ret = yield from gen
        finally:
            self.busy.difference_update(pages)
        self.latencies.append((task.time - t0) - (task.io_ns - io0))
        return ret

    def cpu_done(self):
        self.cpu_left -= 1
        if self.cpu_left == 0:
            self.done = True
            self.t_end = self.sim.now


# ------------------------------------------------------------------ device side

def device_loop(ctx: Ctx, drv, k: int):
    """A device streaming reads over ``ctx.device_pages`` from a seeded phase (a start delay
    and a start page) until the CPU work is done, skipping the page the CPU works on, with
    ``device_gap_ns`` of its own compute between two accesses."""
    sim = ctx.sim
    rng = random.Random(f"dev-{ctx.cfg.seed}-{k}")
    rec = {"driver": drv.name, "accesses": 0, "errors": 0, "latencies": []}
    gap = ctx.cfg.device_gap_ns
    ctx.devices.append(rec)
    yield sim.sleep(rng.uniform(0.0, 5_000.0))           # the device's phase
    i = rng.randrange(1 << 20)
    lat = rec["latencies"]
    while not ctx.done and not drv.mm.exited:
        pages = ctx.pages_of(drv)                         # munmap shrinks it
        busy = ctx.busy
        for _ in range(len(pages)):                       # the next page the CPU is not on
            va = pages[i % len(pages)]
            i += 1
            if va not in busy:
                break
        else:
            yield sim.sleep(gap)                          # nothing to read right now
            continue
        t0 = sim.now
        try:
            yield from drv.access(va, write=False)
            rec["accesses"] += 1
            lat.append(sim.now - t0)
        except SmmuError:
            rec["errors"] += 1
        yield sim.sleep(gap)


def _attach(ctx: Ctx):
    sim, mm = ctx.sim, ctx.mm
    for name in ctx.cfg.drivers:
        ctx.drivers.append(make_driver(sim, name, mm))


def _premap(ctx: Ctx):
    """Every device maps every page before the work starts (setup, outside the run)."""
    for drv in ctx.drivers:
        for va in ctx.device_pages:
            try:
                ctx.sim.do(drv.access(va, write=False))
            except SmmuError:
                pass


def _anon(ctx: Ctx, values=None):
    sim = ctx.sim
    mm = ctx.mm = sim.new_process("workload")
    n = ctx.cfg.npages
    buf = sim.do(mm.mmap(n * PAGE_SIZE, prot="rw"))
    vas = [buf + i * PAGE_SIZE for i in range(n)]
    for i, va in enumerate(vas):
        sim.do(mm.write(va, values(i) if values else i + 1))
    return buf, vas


def _setup_anon(ctx: Ctx, values=None) -> list[int]:
    """The workload's anonymous pages, written, with the drivers attached and every device
    mapping every page."""
    _buf, vas = _anon(ctx, values)
    ctx.device_pages = vas
    _attach(ctx)
    _premap(ctx)
    return vas


def _run_on(ctx: Ctx, mm, va):
    """The process has run on this task's CPU (its CPU joins ``cpu_vm_mask``)."""
    yield from mm.read(va)


# ------------------------------------------------------------------ workloads
# each returns the CPU tasks to spawn: [(name, generator, cpu)]

def wl_cow(ctx: Ctx):
    """COW storm after fork: the parent writes every page once (one COW fault each, a
    single-page invalidation in ``do_wp_page``); ``threads`` CPUs share the pages."""
    sim = ctx.sim
    vas = _setup_anon(ctx)
    xp = [d for d in ctx.drivers if isinstance(d, XPMEM)]
    for d in xp:                                     # XPMEM users recall PFNs around fork
        sim.do(d.fork_begin())
    sim.do(ctx.mm.fork())
    for d in xp:
        sim.do(d.fork_end())
    mm = ctx.mm
    before = {va: mm.pte_pfn(mm.lookup_pte(va)) for va in vas}
    nthreads = max(1, ctx.cfg.threads)
    ctx.cpu_left = nthreads

    def thread(k):
        mine = vas[k::nthreads]
        yield from _run_on(ctx, mm, mine[0])        # the thread was running in the mm
        for va in mine:
            yield from ctx.op(mm.write(va, 1_000_000 + va // PAGE_SIZE), (va,))
            if mm.pte_pfn(mm.lookup_pte(va)) != before[va]:
                ctx.work["cow_copies"] += 1
            ctx.work["writes"] += 1
        ctx.cpu_done()

    return [(f"thread{k}", thread(k), k) for k in range(nthreads)]


def _daemon_per_page(ctx: Ctx, daemon: str, count: str, op_of, values=None, step=1):
    """Device-mapped anonymous pages worked on ``step`` pages at a time by ``daemon`` on CPU
    1 (``op_of(mm, va, npages)``, its result added to ``work[count]``), while the process
    has run on CPU 0: the daemon's TLB flushes are shootdowns."""
    vas = _setup_anon(ctx, values)
    mm = ctx.mm
    ctx.cpu_left = 1

    def worker():
        for j in range(0, len(vas) - step + 1, step):
            ctx.work[count] += yield from ctx.op(op_of(mm, vas[j], step),
                                                 tuple(vas[j:j + step]))
        ctx.cpu_done()

    def process():
        yield from _run_on(ctx, mm, vas[0])

    return [("process", process(), 0), (daemon, worker(), 1)]


def wl_reclaim(ctx: Ctx):
    """Reclaim of device-mapped anonymous pages, one page per operation, from kswapd on
    another CPU than the process (``page_referenced`` is skipped: forced; ``try_to_unmap``
    then swap-out)."""
    sim = ctx.sim
    return _daemon_per_page(ctx, "kswapd", "reclaimed", lambda mm, va, n: sim.reclaim(
        mm, va, n * PAGE_SIZE, force=True))


def wl_writeback(ctx: Ctx):
    """Writeback of a dirty shared file mapping: the process dirties one page and writes
    the file back (``page_mkclean`` of that page), page after page."""
    sim = ctx.sim
    n = ctx.cfg.npages
    mm = ctx.mm = sim.new_process("workload")
    f = sim.new_file("data", n, fill=lambda i: i)
    buf = sim.do(mm.mmap(n * PAGE_SIZE, prot="rw", shared=True, file=f))
    vas = [buf + i * PAGE_SIZE for i in range(n)]
    for va in vas:
        sim.do(mm.write(va, 7))
    sim.do(sim.writeback(f))                          # clean to start with
    ctx.device_pages = vas
    _attach(ctx)
    _premap(ctx)

    ctx.cpu_left = 1

    def process():
        for i, va in enumerate(vas):
            yield from mm.write(va, 100 + i)          # dirties the clean page (wp fault)
            ctx.work["written"] += yield from ctx.op(sim.writeback(f), (va,))
        ctx.cpu_done()

    return [("process", process(), 0)]


def wl_migrate(ctx: Ctx):
    """Migration of device-mapped anonymous pages, page by page, from another CPU."""
    sim = ctx.sim
    return _daemon_per_page(ctx, "kcompactd", "migrated",
                            lambda mm, va, n: sim.migrate(mm, va, n * PAGE_SIZE))


def wl_ksm(ctx: Ctx):
    """KSM merges pairs of identical pages (``write_protect_page`` + ``replace_page``:
    v2008 ``change_pte``, range_only start/end), from ksmd on another CPU."""
    sim = ctx.sim
    return _daemon_per_page(ctx, "ksmd", "merged",
                            lambda mm, va, n: sim.ksm_merge(mm, va, n * PAGE_SIZE),
                            values=lambda i: 5000 + i // 2, step=2)


def _ranges(ctx: Ctx, op_of):
    vas = _setup_anon(ctx)
    mm = ctx.mm
    step = 8
    ctx.cpu_left = 1

    def process():
        for j in range(0, len(vas), step):
            chunk = vas[j:j + step]
            ctx.work["pages_zapped"] += sum(1 for va in chunk if mm.lookup_pte(va))
            yield from ctx.op(op_of(mm, chunk[0], len(chunk) * PAGE_SIZE), tuple(chunk))
            if op_of is _munmap:                          # the device stops using them
                ctx.device_pages = [va for va in ctx.device_pages if va not in chunk]
        ctx.cpu_done()

    return [("process", process(), 0)]


def _munmap(mm, addr, length):
    return mm.munmap(addr, length)


def _dontneed(mm, addr, length):
    return mm.madvise(addr, length, "dontneed")


def wl_munmap(ctx: Ctx):
    """The control: munmap of 8-page ranges (a range in every mode)."""
    return _ranges(ctx, _munmap)


def wl_madvise(ctx: Ctx):
    """The control: MADV_DONTNEED of 8-page ranges (a range in every mode)."""
    return _ranges(ctx, _dontneed)


def wl_brk(ctx: Ctx):
    """The Aim9 brk analogue: the process grows and shrinks its heap by 4 pages in a loop
    (``vma_adjust`` and ``anon_vma_unlink`` take the heap's anon_vma lock for write) while
    a reverse-map walker on another CPU ages a heap page over and over
    (``page_referenced``: the anon_vma lock for read, ``clear_flush_young`` hooks), pausing
    ``walker_gap_ns`` between walks. With ``rmap_locks="rwsem"`` a blocked brk sleeps and
    is handed the semaphore when the walker releases it (``fair_locks``)."""
    sim = ctx.sim
    mm = ctx.mm = sim.new_process("workload")
    base = mm.brk_start
    sim.do(mm.brk(base + 4 * PAGE_SIZE))
    for i in range(4):
        sim.do(mm.write(base + i * PAGE_SIZE, i + 1))   # the heap has an anon_vma
    ctx.device_pages = [base + i * PAGE_SIZE for i in range(4)]
    _attach(ctx)
    _premap(ctx)
    loops = ctx.cfg.npages
    grow = 4 * PAGE_SIZE
    top = base + 4 * PAGE_SIZE
    walks = {"n": 0}
    ctx.cpu_left = 1

    def process():
        yield from _run_on(ctx, mm, base)
        for _ in range(loops):
            yield from ctx.op(mm.brk(top + grow))
            yield from ctx.op(mm.brk(top))
            ctx.work["brk_calls"] += 2
        ctx.cpu_done()

    def walker():
        while not ctx.done:
            yield from sim.page_referenced(mm, base)
            walks["n"] += 1
            yield sim.sleep(ctx.cfg.walker_gap_ns)
        ctx.extra["walks"] = walks["n"]

    return [("process", process(), 0), ("walker", walker(), 1)]


def wl_strace(ctx: Ctx):
    """A real program's memory system calls (``smmu replay-strace``), replayed with
    synthetic touches and the drivers attached to every process."""
    trace = parse_file(ctx.cfg.trace)
    rep = Replay(ctx.sim, trace, attach=lambda mm: [make_driver(ctx.sim, d, mm)
                                                    for d in ctx.cfg.drivers], ctx=ctx)
    ctx.extra["replay"] = rep.counts
    return rep.tasks()


WORKLOADS = {
    "cow": wl_cow, "cow-mt": wl_cow, "reclaim": wl_reclaim, "writeback": wl_writeback,
    "migrate": wl_migrate, "ksm": wl_ksm, "munmap": wl_munmap, "madvise": wl_madvise,
    "brk": wl_brk, "strace": wl_strace,
}

#: the workloads whose operations are single-page invalidations in v2008 (the claim's paths)
SINGLE_PAGE = ("cow", "cow-mt", "reclaim", "writeback", "migrate", "ksm")


# ------------------------------------------------------------------ one run

def build(cfg: Config):
    """The simulator and context of ``cfg``, set up and with its tasks spawned (not run)."""
    if cfg.mode not in ALL_MODES:
        raise UsageError(f"unknown mode {cfg.mode!r}: use one of {list(ALL_MODES)}")
    kind = "strace" if cfg.workload.startswith("strace") else cfg.workload
    if kind not in WORKLOADS:
        raise UsageError(f"unknown workload {cfg.workload!r}: use one of {list(WORKLOADS)}")
    mode = ALL_MODES[cfg.mode]
    sim = Simulator(notifier_api=mode.api, invalidate_page_outside_ptl=mode.outside_ptl,
                    rmap_locks=cfg.rmap_locks, schedule=Timed(jitter=cfg.jitter),
                    seed=cfg.seed, costs=cfg.costs or None, fair_locks=cfg.fair_locks,
                    check=cfg.check, nframes=max(4096, 16 * cfg.npages),
                    max_steps=20_000_000, task_step_budget=5_000_000)
    ctx = Ctx(sim, cfg)
    tasks = WORKLOADS[kind](ctx)
    obs = StudyObserver(sim).install()
    if ctx.cpu_left < 1:
        raise UsageError(f"workload {cfg.workload!r} declared no CPU task that ends the work")
    ctx.t_start = sim.now
    for name, gen, cpu in tasks:
        sim.spawn(name, gen, cpu=cpu)
    for drv in list(ctx.drivers):
        ctx.start_device(drv)
    return sim, ctx, obs


def run(cfg: Config) -> dict:
    """Run ``cfg`` and return its measurements."""
    sim, ctx, obs = build(cfg)
    w0 = time.perf_counter()
    res = sim.run()
    wall = time.perf_counter() - w0
    t_end = ctx.t_end or res.time_ns
    span = max(t_end - ctx.t_start, 1.0)
    devices = []
    # a hit: the device's own step, the access, and the step that reads the translation
    hit = sim.cost_ns["device_access"] + 2 * sim.cost_ns["step"]
    for rec in ctx.devices:
        lat = rec["latencies"]
        stall = min(span, sum(max(0.0, x - hit) for x in lat))
        devices.append({"driver": rec["driver"], "accesses": rec["accesses"],
                        "errors": rec["errors"], "per_us": rec["accesses"] / (span / 1000.0),
                        "stall_ns": stall, "stall_frac": stall / span})
    windows = {}
    for kind in ("page", "range"):
        ws = [w for w in obs.windows if w[0] == kind]
        windows[kind] = {"ns": distribution([w[3] for w in ws]),
                         "steps": distribution([w[4] for w in ws])}
    allw = obs.windows
    windows["all"] = {"ns": distribution([w[3] for w in allw]),
                      "steps": distribution([w[4] for w in allw])}
    stats = {k: v for k, v in res.stats.items() if k != "hooks"}
    return {
        "config": cfg.key(),
        "work": dict(ctx.work),
        "ops": len(ctx.latencies),
        "latency_ns": distribution(ctx.latencies),
        "cpu_ns": sum(ctx.latencies),
        "span_ns": span,
        "devices": devices,
        "device_per_us": sum(d["per_us"] for d in devices),
        "device_stall_frac": (sum(d["stall_ns"] for d in devices) / (span * len(devices))
                              if devices else 0.0),
        "hooks": [[op, site, hook, drv, n] for (op, site, hook, drv), n
                  in sorted(obs.hooks.items())],
        "vm_calls": [[op, site, call, n] for (op, site, call), n
                     in sorted(obs.vm_calls.items())],
        "windows": windows,
        "retries": {k: int(res.stats.get(k, 0)) for k in
                    ("kvm_fault_retry", "gru_dropin_wait", "gru_hw_guard_drop", "wakeup",
                     "lock_handoff", "tlb_shootdown", "tlb_flush_local")},
        "stats": stats,
        "violations": res.kinds(),
        "violation_messages": [v.message for v in res.violations[:3]],
        "extra": ctx.extra,
        "wall_s": wall,
        "steps": res.steps,
    }
