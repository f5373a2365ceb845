"""A legal driver that does everything a hook may do, at random: the emulator must stay
consistent whatever runs inside a hook (issue 9, item 8).

:class:`CHAOS` is :class:`drivers.KVM` (a correct secondary MMU) whose every hook, before
and after KVM's own work, does a random mix of what Linux allows there:

* always: preemption points (``yield``), and taking and dropping a private spinlock around
  one (another CPU may run meanwhile);
* only where the hook may block (the running task is not atomic: a blockable range under
  SRCU, not under the PT lock, a spinlock rmap lock or classic RCU): sleeping on a private
  mutex, or for simulated time.

It also inserts an interval notifier over the whole address space at a device fault now
and then (the first insert registers the interval tree, under mmap_lock for write), removes
and inserts it again at others, and removes it in ``release``; its ``invalidate`` does the
same chaos. Its randomness is seeded from the
simulator's seed and the mm, so a run replays bit for bit.

A run with it may report violations its schedule makes possible (KVM's own protocol is
correct, so none is expected); what it must never produce is an internal error: a
frame-table state error, a ``CoreBug``, any exception from smmu's own code
(:mod:`smmu.testing.soak` runs it everywhere). Not in ``drivers.BUILTIN``: name it as
``drivers.chaos:CHAOS``.
"""

from __future__ import annotations

import random

from drivers.kvm import KVM
from smmu.notifier import MMUIntervalNotifier, mmu_interval_notifier_insert, \
    mmu_interval_notifier_remove, mmu_interval_set_seq


class _ChaosInterval(MMUIntervalNotifier):
    """The chaos driver's interval notifier: it only exercises the tree (it owns no
    mapping, so its invalidation windows are not the driver's)."""

    def __init__(self, drv):
        super().__init__(name="chaos.interval")
        self.drv = drv

    def invalidate(self, range, cur_seq):
        yield from self.drv.chaos()
        mmu_interval_set_seq(self, cur_seq)
        yield from self.drv.chaos()
        return True


class CHAOS(KVM):
    """KVM plus random legal blocking in every hook (see the module docstring)."""

    name = "chaos"
    #: it has an interval notifier: scenarios about the hlist alone do not apply (the OOM
    #: reaper's refused start after a successful interval invalidate never calls
    #: mn_itree_inv_end, in Linux as here, so a remove would wait for good)
    interval = True

    def __init__(self, sim, mm, *, style: str = "modern"):
        super().__init__(sim, mm, style=style)
        self.rng = random.Random(((sim.seed or 0) * 1_000_003) ^ (mm.id * 7919))
        self.chaos_mutex = sim.mutex("chaos->mutex")
        self.chaos_lock = sim.spinlock("chaos->lock")
        #: its interval notifier, named as HMM_MIRROR names its own (a scenario that closes
        #: an interval driver's file unregisters it, then frees ``drv.notifier``)
        self.notifier = _ChaosInterval(self)
        self.actions = 0

    # ------------------------------------------------------------------ the chaos
    def chaos(self):
        """A random legal thing to do at this point of a hook (a generator)."""
        sim = self.sim
        may_sleep = not sim.running.in_atomic
        for _ in range(self.rng.randrange(3)):
            self.actions += 1
            r = self.rng.random()
            if r < 0.4:
                yield                                       # a preemption point
            elif r < 0.6:
                with (yield self.chaos_lock):               # spin_lock; another CPU runs
                    yield
            elif may_sleep and r < 0.8:
                with (yield self.chaos_mutex):              # mutex_lock: sleeps
                    yield
            elif may_sleep:
                yield sim.sleep(self.rng.choice((100, 1000, 10_000)))
            else:
                yield

    def _wrap(self, base, *args):
        yield from self.chaos()
        ret = base(*args)
        if hasattr(ret, "send"):
            ret = yield from ret
        yield from self.chaos()
        return ret

    # ------------------------------------------------------------------ device side
    def page_fault(self, va, write):
        """KVM's fault, after inserting the interval notifier (the first insert registers
        the tree) or, now and then, removing it and inserting it again (a remove during an
        invalidation waits for it; an insert during one is deferred)."""
        r = self.rng.random()
        if self.notifier.inserted and r < 0.2:
            yield from mmu_interval_notifier_remove(self.notifier)
        elif not self.notifier.inserted and not self.dead and r < 0.5:
            # the insert takes mmap_lock for write: half the faults do not, so that they
            # also run while mmap_lock readers (KSM, a downgraded munmap) are at work
            # "Must call with a mmget() held" (mmu_interval_notifier_insert): a device
            # fault runs outside the process's threads, as dmirror's ioctls do
            if self.mm.mmget_not_zero():
                try:
                    yield from mmu_interval_notifier_insert(self.notifier, self.mm, 0,
                                                            1 << 47)
                finally:
                    self.mm.mmput()
        yield from super().page_fault(va, write)

    # ------------------------------------------------------------------ hooks
    def invalidate_range_start(self, range):
        return (yield from self._wrap(super().invalidate_range_start, range))

    def invalidate_range_end(self, range):
        return (yield from self._wrap(super().invalidate_range_end, range))

    def invalidate_page(self, mm, address):
        return (yield from self._wrap(super().invalidate_page, mm, address))

    def change_pte(self, mm, address, pte):
        return (yield from self._wrap(super().change_pte, mm, address, pte))

    def clear_flush_young(self, mm, start, end):
        return (yield from self._wrap(super().clear_flush_young, mm, start, end))

    def clear_young(self, mm, start, end):
        return (yield from self._wrap(super().clear_young, mm, start, end))

    def test_young(self, mm, address):
        return (yield from self._wrap(super().test_young, mm, address))

    def release(self, mm):
        """KVM's release, then the interval notifier is removed (waiting for an
        invalidation in flight)."""
        yield from self._wrap(super().release, mm)
        if self.notifier.inserted:
            yield from mmu_interval_notifier_remove(self.notifier)

    def close(self):
        """The device's file is closed: its interval notifier is removed if a fault
        inserted it after ``release`` (``dmirror_fops_release`` does the same), then KVM's
        teardown."""
        if self.notifier.inserted:
            yield from mmu_interval_notifier_remove(self.notifier)
        yield from super().close()
