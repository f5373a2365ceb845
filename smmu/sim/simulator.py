"""The :class:`Simulator`: scheduler + primary MM + checker, the object users drive.

::

    sim = Simulator(notifier_api="v2008", rmap_locks="rwsem", schedule="random", seed=7)
    mm = sim.new_process()
    buf = sim.do(mm.mmap(8 * PAGE_SIZE, prot="rw"))
    dev = sim.attach(drivers.KVM, mm)
    sim.spawn("cpu0", cpu()); sim.spawn("dev0", dev.access(buf, write=False))
    result = sim.run()
"""

from __future__ import annotations

import inspect


from primary_mm.memory import Memory
from smmu.base.errors import BadDriver, SmmuError, UsageError
from smmu.base.log import get_logger
from smmu.notifier import API_GENERATIONS, MMUIntervalNotifier, MMUNotifier, check_driver_class
from smmu.oracle import Oracle, ProtocolChecker
from smmu.runtime.observer import FanOut
from smmu.runtime.scheduler import Scheduler
from smmu.sim.presets import PresetCall
from smmu.runtime.task import in_smmu, raised_in_smmu, traceback_frames, user_site
from smmu.runtime.watchdog import DEFAULT_STEP_TIMEOUT
from smmu.sim.trace_recorder import TraceRecorder

log = get_logger()

RMAP_LOCKS = ("spinlock", "rwsem")


def _kw(options) -> str:
    return "".join(f", {k}={v!r}" for k, v in options.items())


def _driver_frame(e: BaseException):
    """(driver, method name) of the outermost frame of ``e``'s traceback that is a method of a
    driver (an ``MMUNotifier`` or interval notifier) outside smmu's own code, or (None, None)."""
    tb = e.__traceback__
    while tb is not None:
        f = tb.tb_frame
        obj = f.f_locals.get("self")
        if isinstance(obj, (MMUNotifier, MMUIntervalNotifier)) and \
                not in_smmu(f.f_code.co_filename):
            return obj, f.f_code.co_name
        tb = tb.tb_next
    return None, None


class Simulator(Scheduler, metaclass=PresetCall):
    """One simulated machine.

    ``kernel``: a Linux release (``"2.6.27"``, ``"3.6"``, ``"4.12"``, ``"5.10"``, ``"6.6"``...,
    see :mod:`smmu.sim.presets` and docs/kernels.md): every era-dependent option below
    (the API generation, rmap locks, RCU or SRCU callbacks, the ``invalidate_page``
    placement, the mmu_gather, the release order, COW and pin rules, nonblock pairing, the
    exit lock) as that release had it; options passed explicitly override the preset.

    ``notifier_api``: ``"v2008"``, ``"range_only"`` or ``"modern"`` (see :mod:`smmu.notifier`).
    ``rmap_locks``: ``"spinlock"`` (2.6.25: anon_vma->lock, i_mmap_lock; hooks called from
    reverse-map walks run atomic) or ``"rwsem"`` (the seed's patches 09/10: they may sleep).
    ``schedule``: a name registered in :mod:`smmu.runtime.schedules` (``"round_robin"``,
    ``"random"``, ``"timed"``, ``"pct"``, ``"replay"``) or a
    :class:`~smmu.runtime.schedules.Schedule`.
    MM options (``invalidate_page_outside_ptl``, ``fork_copies_pinned``, ``anon_exclusive``,
    ``cow_reuse``, ``mmu_gather``, ``notifier_rcu``, ``exit_mmap_lock``...): one table,
    ``docs/kernels.md``, gives each its values, the kernel versions that behave so
    and the commit; ``None`` means the generation's era (today's rules for ``"modern"``).
    ``step_timeout``: wall seconds one step may run before the watchdog ends the run with a
    ``Livelock`` at the line that spun (a driver loop that never yields; None: off).
    ``check``: run the coherence oracle (default True); without it only the notifier
    protocol rules are judged (``MapInWindow``, ``BadReturn``, an end without its start) and
    the runtime's own (``SleepInAtomic``, ``Deadlock``...). ``trace``: record
    ``Result.trace`` (hook calls and violations, :class:`TraceRecorder`).

    Time (:mod:`smmu.runtime.costs`): ``costs`` overrides entries of the cost table for this
    simulator (``{kind: ns}``); ``fair_locks`` makes spinlocks FIFO ticket locks and rwsems
    hand over to their waiters (:mod:`smmu.runtime.locks`); ``spawn(name, gen, cpu=N)`` puts
    a task on a CPU.

    ``oracle`` is the observer judging the run (an :class:`~smmu.oracle.Oracle`, or a
    :class:`~smmu.oracle.ProtocolChecker` when ``check`` is False); ``observer`` is what
    the lower layers report to: the oracle, or with ``trace`` a fan-out of the oracle and
    the trace recorder.
    """

    def __init__(self, notifier_api: str = "modern", rmap_locks: str = "rwsem",
                 schedule="round_robin", seed: int | None = 0, *,
                 invalidate_page_outside_ptl: bool = False, fork_copies_pinned: bool | None = None,
                 nonblock_fail_calls_end: bool = True, fork_enomem_bug: bool = False,
                 cow_reuse: str = "page_count", mmu_gather: str = "batch_limit",
                 gather_batch: int | None = None, notifier_rcu: str = "srcu",
                 release_order: str = "release_first", exit_mmap_lock: str | None = None,
                 anon_exclusive: bool | None = None, reclaim_skips_pinned: bool | None = None,
                 mprotect_writable_exclusive: bool | None = None,
                 unshare_longterm_ro_pins: bool | None = None, cow_notify: str | None = None,
                 munmap_downgrade: bool | None = None, mprotect_notify: str | None = None,
                 thp: str = "madvise", thp_cow: str = "split", huge_zero_page: bool = True,
                 thp_migration: bool = True, thp_swap: bool = True, lru_gen: str = "off",
                 oom_reaper: str = "nonblock",
                 interval_remove_race: bool = False, arch_flush_empty_range: bool = False,
                 upgrade_flush_notify: bool = False, pagemap_scan_unlocked: bool = False,
                 hugetlb_pmd_unshare: str = "unshare_wide",
                 check: bool = True,
                 trace: bool = False, record_steps: bool = False,
                 stop_on_violation: bool = False, max_steps: int = 2_000_000,
                 task_step_budget: int = 200_000,
                 step_timeout: float | None = DEFAULT_STEP_TIMEOUT, nframes: int = 4096,
                 costs: dict | None = None, fair_locks: bool = False,
                 kernel: str | None = None):
        if notifier_api not in API_GENERATIONS:
            raise UsageError(f"unknown notifier_api {notifier_api!r}: use one of "
                             f"{list(API_GENERATIONS)}")
        if rmap_locks not in RMAP_LOCKS:
            raise UsageError(f"unknown rmap_locks {rmap_locks!r}: use 'spinlock' or 'rwsem'")
        if invalidate_page_outside_ptl and notifier_api != "v2008":
            raise UsageError("invalidate_page_outside_ptl=True needs notifier_api='v2008' "
                             "(invalidate_page exists only there)")
        super().__init__(schedule, seed, max_steps=max_steps, task_step_budget=task_step_budget,
                         step_timeout=step_timeout, stop_on_violation=stop_on_violation,
                         trace=trace, record_steps=record_steps, costs=costs,
                         fair_locks=fair_locks)
        self.notifier_api = notifier_api
        self.rmap_locks = rmap_locks
        self.kernel = kernel            # the preset's version (PresetCall resolved it)
        self.options = {"invalidate_page_outside_ptl": invalidate_page_outside_ptl,
                        "fork_copies_pinned": fork_copies_pinned,
                        "nonblock_fail_calls_end": nonblock_fail_calls_end,
                        "fork_enomem_bug": fork_enomem_bug, "cow_reuse": cow_reuse,
                        "mmu_gather": mmu_gather, "gather_batch": gather_batch,
                        "notifier_rcu": notifier_rcu, "release_order": release_order,
                        "exit_mmap_lock": exit_mmap_lock, "anon_exclusive": anon_exclusive,
                        "reclaim_skips_pinned": reclaim_skips_pinned,
                        "mprotect_writable_exclusive": mprotect_writable_exclusive,
                        "unshare_longterm_ro_pins": unshare_longterm_ro_pins,
                        "cow_notify": cow_notify, "munmap_downgrade": munmap_downgrade,
                        "mprotect_notify": mprotect_notify,
                        "thp": thp, "thp_cow": thp_cow, "huge_zero_page": huge_zero_page,
                        "thp_migration": thp_migration, "thp_swap": thp_swap,
                        "lru_gen": lru_gen, "oom_reaper": oom_reaper,
                        "interval_remove_race": interval_remove_race,
                        "arch_flush_empty_range": arch_flush_empty_range,
                        "upgrade_flush_notify": upgrade_flush_notify,
                        "pagemap_scan_unlocked": pagemap_scan_unlocked,
                        "hugetlb_pmd_unshare": hugetlb_pmd_unshare}
        self.oracle = Oracle(self) if check else ProtocolChecker(self)
        # the recorder first: the event that breaks a rule is recorded before the violation
        self.observer = FanOut(TraceRecorder(self), self.oracle) if trace else self.oracle
        self.memory = Memory(self, notifier_api=notifier_api, rmap_locks=rmap_locks,
                             nframes=nframes, **self.options)
        self.drivers: list[MMUNotifier] = []
        #: close every device when a run has ended and check what they still hold
        #: (:meth:`close_devices`); exploration turns it on, a plain run leaves it off so
        #: that the drivers' state can be looked at after ``run()``
        self.teardown = False

    def __repr__(self):
        kern = f"kernel={self.kernel} " if self.kernel else ""
        return (f"<Simulator {kern}api={self.notifier_api} rmap_locks={self.rmap_locks} "
                f"schedule={self.schedule.name} seed={self.seed} "
                f"processes={len(self.memory.mms)} drivers={len(self.drivers)} "
                f"steps={self.steps} violations={len(self.violations)}>")

    # ------------------------------------------------------------------ processes, drivers
    def new_process(self, name: str | None = None):
        """A new, empty address space (``mm_struct``)."""
        return self.memory.new_process(name)

    def new_file(self, name: str, npages: int, fill=None):
        """A file of ``npages`` pages in the backing store; ``fill(i)`` gives page i's value."""
        return self.memory.new_file(name, npages, fill)

    def attach(self, cls, mm, **options):
        """Instantiate driver ``cls(self, mm, **options)`` and register its notifier on
        ``mm`` now. Bad classes, options or API generations raise :class:`BadDriver`."""
        check_driver_class(cls, self.notifier_api)
        if getattr(mm, "memory", None) is not self.memory:
            raise UsageError(f"{mm!r} is not a process of this simulator: make it with "
                             "sim.new_process()")
        try:
            drv = cls(self, mm, **options)
        except SmmuError:
            raise               # BadDriver for bad options, a simulated fault: as they are
        except Exception as e:
            if isinstance(e, TypeError):
                # inspect.signature is slow: consulted only when construction failed
                sig = inspect.signature(cls)
                try:
                    sig.bind(self, mm, **options)
                except TypeError as e2:
                    raise BadDriver(f"{cls.__name__} cannot be built with options {options}: "
                                    f"{e2}. Its signature is {cls.__name__}{sig}") from None
            where = user_site(traceback_frames(e))
            raise BadDriver(f"{cls.__name__}(sim, mm{_kw(options)}) raised {type(e).__name__}: "
                            f"{e} (at {where}): the driver's __init__ failed") from e
        self.do(mm.mmu_notifier_register(drv))
        self.drivers.append(drv)
        return drv

    def quiesce(self) -> None:
        """The end-of-run checks, then, with :attr:`teardown`, :meth:`close_devices` if the
        run went to its end."""
        super().quiesce()
        if self.teardown and not self.stopped and all(t.done for t in self.tasks):
            self.close_devices()

    def close_devices(self) -> list:
        """Close every device (``MMUNotifier.close``, each driver that was ever on a chain,
        in attach order) and report what they still hold as ``Leak``
        (:mod:`smmu.oracle.leaks`). Returns ``[(what, message)]`` (empty without the
        oracle's data model, ``check=False``)."""
        taken = getattr(self.oracle, "taken", None)
        seen = list(self.drivers) + [s for s in (taken.subscriptions() if taken else ())
                                     if s not in self.drivers]
        for drv in seen:
            close = getattr(drv, "close", None)
            if close is None:
                continue
            try:
                self.do(close())
            except SmmuError as e:   # a close that cannot finish: say so, keep closing
                log.warning("close failed", driver=drv.name, error=str(e))
        check = getattr(self.oracle, "check_leaks", None)
        return check() if check is not None else []

    def task_raised(self, task, e):
        """A task's code raised ``e``: when a driver's code raised it (a hook, ``access``, a
        helper they call), a ``DriverError`` finding naming the driver, the method and the
        user's line, and the run stops; otherwise as :meth:`Scheduler.task_raised`."""
        if not raised_in_smmu(e):
            drv, what = _driver_frame(e)
            if drv is not None:
                self.driver_raised(getattr(drv, "name", type(drv).__name__), what, e,
                                   stop=False)
                self._stopped = True
                return True
        return super().task_raised(task, e)

    def detach(self, drv):
        """Unregister ``drv`` now (``release`` runs if it has not)."""
        self.do(drv.mm.mmu_notifier_unregister(drv))
        if drv in self.drivers:
            self.drivers.remove(drv)

    # ------------------------------------------------------------------ system-wide MM ops
    def reclaim(self, mm, addr, length, force=False):
        """Reclaim the pages of ``[addr, addr+length)``: page_referenced, try_to_unmap, swap."""
        return self.memory.reclaim(mm, addr, length, force=force)

    def page_referenced(self, mm, va):
        """The reverse-map aging walk of the page at ``va`` (young bits and
        ``clear_flush_young``); returns whether it was referenced."""
        return self.memory.page_referenced(mm, va)

    def writeback(self, file):
        """page_mkclean every dirty page of ``file`` and write it to the backing store."""
        return self.memory.writeback(file)

    def migrate(self, mm, addr, length, owner=None):
        """Migrate the pages of the range to new frames (MIGRATE, ``owner`` as given)."""
        return self.memory.migrate(mm, addr, length, owner=owner)

    def ksm_merge(self, mm, addr, length):
        """Merge identical anonymous pages of the range into KSM pages."""
        return self.memory.ksm_merge(mm, addr, length)

    def truncate(self, file, size):
        """Truncate ``file`` to ``size`` bytes (unmap_mapping_range, drop the page cache)."""
        return self.memory.truncate(file, size)

    def khugepaged(self, mm, addr=None, length=None):
        """One khugepaged pass over ``mm`` (or a range): collapse referenced 2 MiB blocks of
        small pages into huge pages (``test_young`` under the PT lock, a 2 MiB CLEAR)."""
        return self.memory.khugepaged(mm, addr, length)

    def page_idle(self, mm, addr, length, mark=True):
        """``/sys/kernel/mm/page_idle/bitmap``: mark the range's pages idle (``mark``) or read
        which stayed idle; both clear the accessed bits first (``clear_young`` of every
        secondary MMU, under the PT lock)."""
        return self.memory.page_idle(mm, addr, length, mark)

    def oom_reap(self, mm):
        """The OOM reaper: unmap the private anonymous memory of ``mm`` with non-blockable
        ranges, skipping those a notifier refuses."""
        return self.memory.oom_reap(mm)
