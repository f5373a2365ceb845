"""The pieces scenarios are built from: processes with pages, device loops, CPU reads and
writes, joining, tolerating simulated faults, which drivers a scenario applies to.
"""

from __future__ import annotations

from smmu.base.constants import PAGE_SIZE
from smmu.base.errors import SmmuError
from smmu.notifier import HOOKS, MMUNotifier
from smmu.scenarios.registry import Scenario, attach_driver, register

#: scenarios a driver with no notifier hooks (long-term pin only) can be expected to pass
PIN_SAFE = ("fork-after-pin", "exit-while-device-active")


def has_notifier(cls) -> bool:
    """Does the driver class implement any notifier hook (or interval notifier)?"""
    if getattr(cls, "uses_notifier", None) is not None:
        return bool(cls.uses_notifier)
    return any(getattr(cls, h, None) is not getattr(MMUNotifier, h) for h in HOOKS) or \
        bool(getattr(cls, "interval", False))


def notifier_only(cls) -> bool:
    return has_notifier(cls)


def any_driver(cls) -> bool:
    return True


def has_device_memory(cls) -> bool:
    """Does the driver have device-private memory it migrates pages to (an HMM-style driver
    with ``migrate_to_device``, dmirror's ``HMM_DMIRROR_MIGRATE_TO_DEV``)?"""
    return callable(getattr(cls, "migrate_to_device", None))


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

    def spawn(self, name: str, gen, cpu: int | None = None):
        self.running += 1
        return self.sim.spawn(name, self._wrap(gen), cpu=cpu)

    def _after(self, gen):
        yield self.wq.wait_until(lambda: self.running == 0)
        return (yield from gen)

    def then(self, name: str, gen, cpu: int | None = None):
        return self.sim.spawn(name, self._after(gen), cpu=cpu)


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


def active_device(sim, drv, vas, base, rounds=3):
    """A device that is busy when the operation under test comes: it maps every page of
    ``vas`` (one read each), signals the returned completion, then keeps reading and writing
    them for ``rounds`` passes (values ``base + k``). Returns ``(task generator,
    completion)``; the CPU task waits for the completion before it starts."""
    mapped = sim.completion("device_mapped")

    def dev():
        yield from device_loop(drv, vas, rounds=1, write=False)
        mapped.complete_all()
        yield from device_loop(drv, vas, rounds=rounds, write="alt", base=base)
    return dev(), mapped


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
    drv = attach_driver(sim, driver_cls, mm)
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


def kswapd(sim, mm, addr, length, passes=2):
    """Reclaim as kswapd does it: ``passes`` passes of ``shrink_folio_list`` without
    forcing, so each page is aged first (``folio_check_references``: the first pass finds
    it young through its PTE or a secondary MMU's ``clear_flush_young`` and keeps it, the
    next reclaims it unless it was used again). Returns the pages freed."""
    freed = 0
    for _ in range(passes):
        freed += yield from tolerant(sim.reclaim(mm, addr, length)) or 0
    return freed


def seq(*gens):
    """Run the generators one after another (a CPU doing several operations)."""
    for g in gens:
        yield from g


def ops(*thunks):
    """Like :func:`seq` but each item is a zero-argument callable returning a generator,
    called only when its turn comes (so it sees the state the previous ones left)."""
    for t in thunks:
        yield from t()


def register_builder(name, build, description=None, *, apis=None, applies=notifier_only, tags=(),
         sim_options=None, portfolio=None):
    """Register a scenario; ``description`` defaults to the builder's docstring."""
    if description is None:
        description = build.__doc__
    kw = dict(name=name, build=build, description=description, applies=applies,
              tags=tuple(tags), sim_options=dict(sim_options or {}), portfolio=portfolio)
    if apis is not None:
        kw["apis"] = tuple(apis)
    sc = Scenario(**kw)
    register(sc)
    return sc
