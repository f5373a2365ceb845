"""The scenario catalogue: small concurrent workloads that any driver can be checked on.

Every scenario is a registered :class:`smmu.explore.Scenario`. Its ``build(sim, driver_cls)``
makes one or more processes, attaches the driver (``sim.attach``), spawns CPU tasks doing the
MM operation under test and device tasks running a plain ``drv.access(va, write=..., value=...)``
loop, and ends with CPU reads of every touched page (run once all other tasks are done) so
that a lost write surfaces as a ``LostWrite`` / ``StaleRead``. Scenarios are kept to a few
pages and a few tasks so that thousands of schedules a second can be explored.

Families:

* operation scenarios (``cow-after-fork``, ``reclaim-while-device-reads``, ...): every
  reference driver must be clean on them under every generation it supports;
* load scenarios (``load-small``; ``load``, tagged ``"load"``, not in the default set):
  several CPUs and devices, random operation mixes from a seeded RNG;
* historical bugs (``HISTORICAL``): pairs ``"<name>"`` / ``"<name>-fixed"``, the broken and
  the fixed configuration of a bug Linux or a driver really had (linux-notes section 3).

Which driver a scenario applies to: ``applies(cls)``. A driver with no notifier hooks at all
(the long-term-pin model, ``drivers.PINNED``) cannot follow any invalidation, so it only runs
the scenarios in which the pages it pins are never invalidated behind its back
(:data:`PIN_SAFE`).

Applying is not the same as having to be clean: a reference driver may declare
``known_windows = {scenario: why}`` for windows the real driver has (XPMEM drops its
mappings only in ``end``); the checker reports them as true positives, and
:func:`known_window` is what the catalogue test and the demo consult before requiring a
clean run. Where real users have a protocol that closes the window, the scenario follows it
instead (:func:`exporter_fork`: XPMEM's fork ioctls).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from smmu.base.constants import PAGE_SIZE
from smmu.base.errors import SmmuError
from smmu.explore import Scenario, attach_driver, register
from smmu.notifier import HOOKS, MMUNotifier

#: scenarios a driver with no notifier hooks (long-term pin only) can be expected to pass
PIN_SAFE = ("fork-after-pin", "exit-while-device-active")

#: tag of scenarios left out of the default ``all`` set (too slow for a quick check)
SLOW_TAGS = ("load",)


# --------------------------------------------------------------------------- helpers

def has_notifier(cls) -> bool:
    """Does the driver class implement any notifier hook (or interval notifier)?"""
    if getattr(cls, "uses_notifier", None) is not None:
        return bool(cls.uses_notifier)
    return any(getattr(cls, h, None) is not getattr(MMUNotifier, h) for h in HOOKS) or \
        bool(getattr(cls, "interval", False))


def _notifier_only(cls) -> bool:
    return has_notifier(cls)


def _any(cls) -> bool:
    return True


def driver_options(sim) -> dict:
    """Options for ``sim.attach`` that ``run_once(..., driver_options=...)`` put on the sim."""
    return dict(getattr(sim, "driver_options", None) or {})


#: attach the driver under test with the run's driver options
attach = attach_driver


class Join:
    """Runs the final checking task once every worker task has ended (normally or with a
    simulated fault): ``j.spawn(name, gen)`` for workers, ``j.then(name, gen)`` for the
    checker. Built on a wait queue, so waiting costs no choice points."""

    def __init__(self, sim, name: str = "scenario"):
        self.sim = sim
        self.wq = sim.waitqueue(f"{name}_join")
        self.running = 0

    def _wrap(self, gen):
        try:
            return (yield from gen)
        finally:
            self.running -= 1
            self.wq.wake_all()

    def spawn(self, name: str, gen):
        self.running += 1
        return self.sim.spawn(name, self._wrap(gen))

    def _after(self, gen):
        yield self.wq.wait_until(lambda: self.running == 0)
        return (yield from gen)

    def then(self, name: str, gen):
        return self.sim.spawn(name, self._after(gen))


def tolerant(gen):
    """Run ``gen`` and swallow a simulated fault (SIGSEGV on an unmapped page, ENOMEM...):
    scenarios race accesses against unmaps on purpose; a fault is an acceptable outcome, a
    stale translation is not."""
    try:
        return (yield from gen)
    except SmmuError as e:
        return e


def device_loop(drv, vas, *, rounds: int = 1, write: bool | str = False, base: int = 0):
    """A device task: ``rounds`` passes over ``vas``; ``write`` True writes, False reads,
    ``"alt"`` alternates (write on even accesses). Written values are ``base + k`` (unique
    per access when ``base`` is unique per device) so a lost write is identifiable."""
    k = 0
    for _ in range(rounds):
        for va in vas:
            w = write if write != "alt" else (k % 2 == 0)
            yield from tolerant(drv.access(va, write=w, value=(base + k) if w else None))
            k += 1


def exporter_fork(mm, drvs):
    """``fork()`` of ``mm`` as an exporter that follows its drivers' fork protocol does it:
    drivers with ``fork_begin`` / ``fork_end`` (XPMEM's ``XPMEM_CMD_FORK_BEGIN`` / ``_END``
    ioctls: recall every PFN and hold attach faults off) get them around the fork. Returns
    the child."""
    begun = [d for d in drvs if getattr(d, "fork_begin", None) is not None]
    for d in begun:
        yield from d.fork_begin()
    try:
        child = yield from mm.fork()
    except SmmuError:               # fork failed (ENOMEM): the exporter still ends the ioctl
        for d in begun:
            yield from d.fork_end()
        raise
    for d in begun:
        yield from d.fork_end()
    return child


def known_window(cls, name: str) -> str | None:
    """Why driver class ``cls`` is expected to be flagged on scenario ``name``: its
    ``known_windows`` declaration (a window the real driver has, which the checker reports as
    a true positive), or None when the driver must be clean there."""
    return (getattr(cls, "known_windows", None) or {}).get(name)


def cpu_reads(mm, vas):
    """The closing reads: every touched page once, faults tolerated."""
    for va in vas:
        yield from tolerant(mm.read(va))


def cpu_writes(mm, vas, base):
    for i, va in enumerate(vas):
        yield from tolerant(mm.write(va, base + i))


def pages(buf, n):
    return [buf + i * PAGE_SIZE for i in range(n)]


def setup_anon(sim, mm, n, base=100):
    """``mmap`` ``n`` private anonymous pages and write ``base + i`` into page i (setup)."""
    buf = sim.do(mm.mmap(n * PAGE_SIZE, prot="rw"))
    for i, va in enumerate(pages(buf, n)):
        sim.do(mm.write(va, base + i))
    return buf


def anon_process(sim, driver_cls, n, name=None):
    """The usual opening: a process (``name``) with ``n`` private anonymous pages set up by
    :func:`setup_anon`, and the driver under test attached to it. Returns
    ``(mm, buf, vas, drv)``."""
    mm = sim.new_process(name)
    buf = setup_anon(sim, mm, n)
    vas = pages(buf, n)
    drv = attach(sim, driver_cls, mm)
    return mm, buf, vas, drv


def reuse_frames(mm, box, base, n=2):
    """Map and fill ``n`` fresh pages of ``mm`` so that frames just freed are reused (a
    stale translation then reaches someone else's data); their start goes to
    ``box["new"]``, for :func:`reused` to read them back."""
    box["new"] = new = yield from mm.mmap(n * PAGE_SIZE, prot="rw")
    yield from cpu_writes(mm, pages(new, n), base)


def reused(box, n=2):
    """The pages :func:`reuse_frames` mapped, or none if it did not get that far."""
    return pages(box["new"], n) if "new" in box else []


def seq(*gens):
    """Run the generators one after another (a CPU doing several operations)."""
    for g in gens:
        yield from g


def ops(*thunks):
    """Like :func:`seq` but each item is a zero-argument callable returning a generator,
    called only when its turn comes (so it sees the state the previous ones left)."""
    for t in thunks:
        yield from t()


def _reg(name, build, description=None, *, apis=None, applies=_notifier_only, tags=(),
         sim_options=None):
    """Register a scenario; ``description`` defaults to the builder's docstring."""
    if description is None:
        description = build.__doc__
    kw = dict(name=name, build=build, description=description, applies=applies,
              tags=tuple(tags), sim_options=dict(sim_options or {}))
    if apis is not None:
        kw["apis"] = tuple(apis)
    sc = Scenario(**kw)
    register(sc)
    return sc


# --------------------------------------------------------------------------- operation scenarios

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
    """A device reads four pages while reclaim ages, unmaps and swaps them out; the CPU
    writes one afterwards. A device TLB that still maps a swapped-out frame reads whatever
    the frame holds next."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 4)
    j = Join(sim)
    j.spawn("cpu0", seq(sim.reclaim(mm, buf, 4 * PAGE_SIZE, force=True),
                        cpu_writes(mm, vas[:1], 300)))
    j.spawn("dev0", device_loop(drv, vas, rounds=2, write=False))
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
    drv = attach(sim, driver_cls, mm)
    j = Join(sim)
    j.spawn("cpu0", seq(sim.writeback(f), sim.reclaim(mm, buf, 2 * PAGE_SIZE, force=True)))
    j.spawn("dev0", device_loop(drv, vas, rounds=2, write=True, base=2000))

    def release_and_evict():
        # the device is done: a driver holding long-term pins releases them (ib_dereg_mr),
        # then reclaim evicts what is clean. A page the device dirtied behind page_mkclean's
        # back is clean in the page cache: evicted, its device writes are gone.
        dereg = getattr(drv, "deregister", None)
        if dereg is not None:
            yield from tolerant(dereg(buf, 2))
        yield from tolerant(sim.reclaim(mm, buf, 2 * PAGE_SIZE, force=True))

    j.then("check", ops(release_and_evict, lambda: cpu_reads(mm, vas)))


def build_cow_two_cpus(sim, driver_cls):
    """The parent forks; one CPU breaks COW on a page (``do_wp_page``) while a second CPU of
    the same process writes it as soon as the new PTE is visible, and the device reads it.
    If the secondary MMU learns of the replacement only after the PT lock is dropped
    (``invalidate_page`` outside the PTL, pre-2017), the device still reads the old page
    while the CPU already writes the new one."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 1, "parent")
    j = Join(sim)
    forked = sim.completion("forked")

    def cpu0():
        yield from mm.fork()
        forked.complete_all()
        yield from cpu_writes(mm, vas, 1700)

    def cpu1():
        yield forked.wait()
        for k in range(3):
            yield from cpu_writes(mm, vas, 1800 + 10 * k)

    def dev():
        yield forked.wait()
        yield from device_loop(drv, vas, rounds=4, write=False)

    j.spawn("cpu0", cpu0())
    j.spawn("cpu1", cpu1())
    j.spawn("dev0", dev())
    j.then("check", cpu_reads(mm, vas))


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
    drv = attach(sim, driver_cls, mm)
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
    drv = attach(sim, driver_cls, mm)
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
    """The device maps (and may pin) a page first; then the CPU forks and writes it. Since
    5.9 fork gives the child a copy of a page that may be DMA-pinned
    (``page_maybe_dma_pinned`` in ``copy_present_page``), so the parent keeps the pinned one
    and the device's writes stay visible to it."""
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
        box["child"] = yield from mm.fork()
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


# --------------------------------------------------------------------------- load

@dataclass
class LoadShape:
    cpus: int
    devices: int
    npages: int
    ops_per_cpu: int
    accesses_per_device: int


LOAD_OPS = ("write", "read", "mprotect", "dontneed", "reclaim", "migrate", "fork")


def _load_cpu(sim, mm, buf, npages, rng: random.Random, nops: int, cpu: int, modern: bool,
              drvs=()):
    def span():
        a = rng.randrange(npages)
        n = rng.randint(1, min(8, npages - a))
        return buf + a * PAGE_SIZE, n * PAGE_SIZE

    children = []
    for k in range(nops):
        op = rng.choice(LOAD_OPS)
        va, length = span()
        if op == "write":
            yield from tolerant(mm.write(va, 100_000 * (cpu + 1) + k))
        elif op == "read":
            yield from tolerant(mm.read(va))
        elif op == "mprotect":
            yield from tolerant(mm.mprotect(va, length, "r"))
            yield from tolerant(mm.mprotect(va, length, "rw"))
        elif op == "dontneed":
            yield from tolerant(mm.madvise(va, length, "dontneed"))
        elif op == "reclaim":
            yield from tolerant(sim.reclaim(mm, va, length, force=True))
        elif op == "migrate":
            yield from tolerant(sim.migrate(mm, va, length))
        elif op == "fork" and not children:
            child = yield from tolerant(exporter_fork(mm, drvs))
            if not isinstance(child, SmmuError):
                children.append(child)
    for child in children:
        yield from tolerant(child.exit())


def _load_builder(shape: LoadShape, seed_salt: int):
    def build(sim, driver_cls):
        rng = random.Random((sim.seed or 0) * 7919 + seed_salt)
        mm = sim.new_process("load")
        n = shape.npages
        buf = sim.do(mm.mmap(n * PAGE_SIZE, prot="rw", populate=True))
        vas = pages(buf, n)
        drvs = [attach(sim, driver_cls, mm) for _ in range(shape.devices)]
        j = Join(sim)
        modern = sim.notifier_api == "modern"
        for c in range(shape.cpus):
            r = random.Random(rng.random())
            j.spawn(f"cpu{c}", _load_cpu(sim, mm, buf, n, r, shape.ops_per_cpu, c, modern,
                                         drvs))
        for d, drv in enumerate(drvs):
            r = random.Random(rng.random())
            sel = [vas[r.randrange(n)] for _ in range(shape.accesses_per_device)]
            j.spawn(f"dev{d}", device_loop(drv, sel, rounds=1, write="alt",
                                           base=1_000_000 * (d + 1)))
        check = sorted(set(vas[:: max(1, n // 64)]))
        j.then("check", cpu_reads(mm, check))
    build.__doc__ = (f"{shape.cpus} CPUs and {shape.devices} devices over {shape.npages} "
                     f"pages: random operation mixes ({', '.join(LOAD_OPS)}) from a seeded "
                     "RNG, device read/write streams; coherence under load.")
    return build


LOAD_SMALL = LoadShape(cpus=3, devices=2, npages=256, ops_per_cpu=12, accesses_per_device=48)
LOAD = LoadShape(cpus=4, devices=3, npages=4096, ops_per_cpu=40, accesses_per_device=400)


# --------------------------------------------------------------------------- historical bugs

class RefusingNotifier(MMUNotifier):
    """A notifier whose non-blockable ``invalidate_range_start`` always refuses with
    ``-EAGAIN`` (what dmirror/amdgpu do when their lock is contended); like Linux requires
    of a notifier that may fail start, it has no ``end``. Used by ``nonblock-start-end``."""

    name = "refusing"

    def invalidate_range_start(self, range):
        if not range.blockable:
            return -11  # -EAGAIN
        return 0

    def access(self, va, *, write, value=None):  # pragma: no cover - never used as a device
        return None
        yield


def _fork_enomem(bug: bool):
    def build(sim, driver_cls):
        """fork fails with ENOMEM inside ``copy_page_range`` after the range was started.
        Broken (``fork_enomem_bug``, as posted in 2008): the error path returns without
        ``invalidate_range_end``; the driver's in-progress count never drops and its
        faults retry forever. Fixed: the loop breaks and falls through to ``end``."""
        mem = sim.memory
        mem.fork_enomem_bug = bug
        mm, buf, vas, drv = anon_process(sim, driver_cls, 2, "parent")
        j = Join(sim)

        def cpu():
            # the next frame allocation fails: the child's page-table page in
            # copy_page_range, after invalidate_range_start (the device only reads, so it
            # allocates nothing that could take the failure instead)
            mem.frames.fail_next()
            yield from tolerant(mm.fork())
            mem.frames.clear_fail()
            yield from cpu_writes(mm, vas, 1500)

        j.spawn("cpu0", cpu())
        j.spawn("dev0", device_loop(drv, vas, rounds=2, write=False))
        j.then("check", cpu_reads(mm, vas))
    return build


def _hlist_notifier(cls) -> bool:
    """A driver on the plain notifier list (not an interval notifier). nonblock-start-end is
    about the list: Linux's ``__mmu_notifier_invalidate_range_start`` runs the interval tree
    first and, when a list notifier then fails, returns without ``mn_itree_inv_end`` (the
    reaped mm is dying), so an interval driver's seq stays odd by design, not by this bug."""
    return has_notifier(cls) and not getattr(cls, "interval", False)


def _nonblock_end(sim, driver_cls):
    """The OOM reaper's non-blockable start succeeds in the driver under test, then a second
    notifier refuses with -EAGAIN. Before c2655835fd8c (2021) the reaper skipped the range
    and never called ``end``: the first driver's range stays open for ever."""
    mm = sim.new_process("victim")
    buf = setup_anon(sim, mm, 2)
    vas = pages(buf, 2)
    sim.attach(RefusingNotifier, mm)        # registered first: called last (hlist_add_head)
    drv = attach(sim, driver_cls, mm)
    j = Join(sim)
    j.spawn("cpu0", sim.oom_reap(mm))
    j.spawn("dev0", device_loop(drv, vas, rounds=2, write=False))
    j.then("check", cpu_reads(mm, vas))


def _apic_remap(sim, driver_cls):
    """KVM's APIC-access page (e649b3f0188f, 2020): the page is migrated while the vCPU
    keeps using it. The broken driver reloads (re-maps) the page from inside
    ``invalidate_range_start`` while the PTE is still intact, so it maps the old page that
    is about to be freed; the fix re-resolves it after the PTE is cleared."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 1, "vm")
    j = Join(sim)
    j.spawn("cpu0", seq(sim.migrate(mm, buf, PAGE_SIZE), cpu_writes(mm, vas, 1600)))
    j.spawn("dev0", device_loop(drv, vas, rounds=3, write="alt", base=16000))
    j.then("check", cpu_reads(mm, vas))


@dataclass(frozen=True)
class Historical:
    """A real bug as a pair of scenarios: ``name`` (broken) and ``name + "-fixed"``.
    ``driver`` / ``fixed_driver`` name the drivers to run them with (``drivers.BUILTIN`` or
    ``drivers.BUGGY`` keys), ``api`` the generation, ``expected`` the kinds the broken one
    shows, ``ref`` where the bug is documented."""

    name: str
    driver: str
    fixed_driver: str
    api: str
    expected: tuple
    ref: str


HISTORICAL: dict[str, Historical] = {}


def _historical(h: Historical, *, broken=None, fixed=None, **common):
    """Register ``h`` and its pair of scenarios: ``h.name`` (tagged ``historical``) and
    ``h.name + "-fixed"`` (tagged ``historical``, ``fixed``). ``common`` holds the
    :class:`~smmu.explore.Scenario` fields both share, ``broken`` / ``fixed`` the ones that
    differ; ``applies`` defaults to drivers with notifier hooks and ``description`` to the
    builder's docstring, as in :func:`_reg`."""
    HISTORICAL[h.name] = h
    for name, tags, own in ((h.name, ("historical",), broken),
                            (h.name + "-fixed", ("historical", "fixed"), fixed)):
        kw = {"applies": _notifier_only, **common, **(own or {})}
        kw.setdefault("description", kw["build"].__doc__)
        register(Scenario(name=name, tags=tags, **kw))


# --------------------------------------------------------------------------- registration

_reg("cow-after-fork", build_cow_after_fork)
_reg("reclaim-while-device-reads", build_reclaim)
_reg("writeback-device-writes", build_writeback)
_reg("migration", build_migration)
_reg("ksm-merge", build_ksm)
_reg("munmap-during-device-fault", build_munmap)
_reg("mprotect-downgrade", build_mprotect)
_reg("mremap", build_mremap)
_reg("truncate", build_truncate)
_reg("exit-while-device-active", build_exit, applies=_any)
_reg("oom-reap", build_oom_reap, apis=("modern",))
_reg("fork-after-pin", build_fork_after_pin, applies=_any,
     sim_options={"fork_copies_pinned": True})
_reg("overlapping-invalidations", build_overlapping)
_reg("attach-detach-during-invalidation", build_attach_detach)
_reg("load-small", _load_builder(LOAD_SMALL, 1), tags=("load-small",))
_reg("load", _load_builder(LOAD, 2), tags=("load",))

_historical(
    Historical("fork-enomem-unpaired", "kvm", "kvm", "v2008", ("UnpairedRange", "Livelock"),
               "2008 mmu-notifier review: copy_page_range -ENOMEM after start without end"),
    broken=dict(build=_fork_enomem(True)), fixed=dict(build=_fork_enomem(False)))
_historical(
    Historical("invalidate-page-outside-ptl", "kvm", "kvm", "v2008",
               ("LostWrite", "StaleRead", "UseAfterFree", "MapInWindow"),
               "v4.13 (2017, J. Glisse): invalidate_page called after the PT lock was dropped"),
    build=build_cow_two_cpus, apis=("v2008",),
    broken=dict(description="cow with two CPUs, invalidate_page called after the PT lock is "
                "dropped (the pre-2017 ordering): a new page can be mapped at the address "
                "before the call", sim_options={"invalidate_page_outside_ptl": True}),
    fixed=dict(description="cow with two CPUs, invalidate_page under the PT lock "
               "(c7ab0d2fdc84)", sim_options={"invalidate_page_outside_ptl": False}))
_historical(
    Historical("fork-pin-cow", "pinned", "pinned", "modern",
               ("LostWrite", "StaleRead", "CrossMmAccess"),
               "pre-5.9 RDMA: fork + long-term pin + COW (fixed by copying pinned pages)"),
    build=build_fork_after_pin, applies=_any,
    broken=dict(description="fork-after-pin without the 5.9 fix: the parent's COW gives it a "
                "new page while the device keeps DMAing into the pinned one",
                sim_options={"fork_copies_pinned": False}),
    fixed=dict(description="fork-after-pin with fork copying maybe-DMA-pinned pages (5.9+)",
               sim_options={"fork_copies_pinned": True}))
_historical(
    Historical("nonblock-start-end", "kvm", "kvm", "modern", ("UnpairedRange", "Livelock"),
               "c2655835fd8c (2021): end not called after a failed non-blockable start"),
    build=_nonblock_end, apis=("modern",), applies=_hlist_notifier,
    broken=dict(sim_options={"nonblock_fail_calls_end": False}),
    fixed=dict(sim_options={"nonblock_fail_calls_end": True}))
_historical(
    Historical("apic-page-remap", "kvm_apic_remap", "kvm", "modern",
               ("MapInWindow", "UseAfterFree", "StaleRead", "LostWrite"),
               "e649b3f0188f (2020): KVM APIC-access page re-looked-up inside start/end"),
    build=_apic_remap)
_historical(
    Historical("writeback-device-write", "pinned", "kvm", "modern",
               # the device writes a page page_mkclean write-protected: WriteToReadOnly is
               # the bug itself; the lost data at eviction follows from it
               ("WriteToReadOnly", "LostWrite", "StaleRead"),
               "LWN 2018 'get_user_pages, pinned pages, and DAX': a device writing a page "
               "after page_mkclean through a long-term pin; fixed by following page_mkclean "
               "through notifiers (ODP/HMM) instead of pinning"),
    build=build_writeback, broken=dict(applies=_any))

def default_names() -> list[str]:
    """The scenarios ``--scenario all`` (and no ``--scenario``) runs: every registered
    scenario except the slow load one and the broken halves of historical pairs (those are
    bugs by construction; run them by name)."""
    from smmu.explore import SCENARIOS
    out = []
    for name, sc in SCENARIOS.items():
        if any(t in SLOW_TAGS for t in sc.tags):
            continue
        if "historical" in sc.tags and "fixed" not in sc.tags:
            continue
        out.append(name)
    return out
