"""A device mirroring a process's page tables with an interval notifier and HMM.

Models ``lib/test_hmm.c``'s dmirror (``dmirror_fops_open`` inserting the interval notifier
over the whole address space, ``dmirror_interval_invalidate``, ``dmirror_fault`` /
``dmirror_range_fault``, ``dmirror_do_fault``), the pattern nouveau_svm.c, amdgpu_hmm.c and
mlx5's odp.c follow, and ``mm/hmm.c`` (``hmm_range_fault``) + ``mm/mmu_notifier.c``
(``mmu_interval_read_begin`` / ``mmu_interval_read_retry`` / ``mmu_interval_set_seq``).
"""

from __future__ import annotations

from drivers._common import device_gone, page_of, user_window, vpn_of, vpn_span, walk_pte
from smmu.notifier import (MMUIntervalNotifier, mmu_interval_notifier_insert,
                           mmu_interval_notifier_remove, mmu_interval_read_begin,
                           mmu_interval_read_retry, mmu_interval_set_seq)
from smmu.notifier import Event, MMUNotifier
from smmu.devices.shadow import ShadowPageTable


class _DmirrorInterval(MMUIntervalNotifier):
    """``dmirror->notifier``: forwards ``invalidate`` to the driver."""

    def invalidate(self, range, cur_seq):
        return self.owner.interval_invalidate(range, cur_seq)


class HMM_MIRROR(MMUNotifier):
    """dmirror: a device page table (a :class:`smmu.shadow.ShadowPageTable`) filled from
    ``hmm_range_fault`` snapshots and kept coherent by the collision-retry protocol.

    Fault (:meth:`fault`)::

        loop:
            seq = mmu_interval_read_begin(notifier)      # sleeps while invalidating
            pfn = hmm_range_fault(va, write)             # faults in; NO reference kept
            lock(mutex)
            if mmu_interval_read_retry(notifier, seq):   # an invalidation ran: retry
                unlock; continue
            program the device PTE; unlock; done

    Invalidate (:meth:`interval_invalidate`): a MIGRATE this driver owns is skipped (as
    dmirror skips its own device-private migrations); a non-blockable range may not sleep:
    ``mutex_trylock`` or return False (the OOM reaper then skips the range); else take the
    mutex; ``mmu_interval_set_seq``; erase the device PTEs of the range; unlock.

    The interval notifier is inserted at the first device fault (:meth:`bind`), not at
    attach: the first insert on an mm registers the interval tree under mmap_lock for
    write, and nothing was mirrored before, so no invalidation is missed.

    Options: ``start`` / ``length`` of the mirrored interval. Default: the whole user
    address space, as dmirror inserts ``[0, ULONG_MAX & PAGE_MASK)``: it then follows
    mappings created after attach too, at the cost of being called for every invalidation
    of the mm.
    """

    name = "hmm_mirror"
    apis = ("modern",)
    interval = True          # tells the harness it uses an interval notifier

    def __init__(self, sim, mm, *, start: int = 0, length: int | None = None):
        start, end = user_window("HMM_MIRROR interval", start, length)
        super().__init__(sim, mm)
        self.mutex = sim.mutex("dmirror->mutex")
        self.pt = ShadowPageTable(name=f"dmirror{mm.id}.pt", observer=self)
        self.notifier = _DmirrorInterval(owner=self, name=f"{self.name}.notifier")
        self.interval = (start, end)
        self.dead = False
        self.faults = 0
        self.retries = 0

    def __repr__(self):
        return (f"<{self.name} on {self.mm!r} [{self.interval[0]:#x}, "
                f"{self.interval[1]:#x}) seq={self.notifier.invalidate_seq} "
                f"ptes={len(self.pt)}>")

    # ------------------------------------------------------------------ device side
    def access(self, va, *, write, value=None):
        """A device access: through the device PTE if present and allowing it, else
        :meth:`fault` and try again."""
        vpn = vpn_of(va)
        while True:
            yield
            if self.dead:
                raise device_gone(self, "the mirror was released")
            if not self.interval[0] <= va < self.interval[1]:
                raise device_gone(self, f"{va:#x} is outside the mirrored interval")
            pfn = self.pt.access(vpn, write)
            if pfn >= 0:
                return self.dma_write(va, pfn, value) if write else self.dma_read(va, pfn)
            yield from self.fault(va, write)

    def bind(self):
        """Insert the interval notifier (``mmu_interval_notifier_insert``) if it is not yet:
        done at the first device fault, as drivers that bind lazily do (the first insert on
        an mm registers the interval tree under mmap_lock for write)."""
        if not self.notifier._inserted and not self.dead:
            start, end = self.interval
            yield from mmu_interval_notifier_insert(self.notifier, self.mm, start, end - start)

    def fault(self, va, write):
        """``dmirror_fault`` -> ``dmirror_range_fault``: the collision-retry loop."""
        isub = self.notifier
        self.faults += 1
        self.sim.charge("device_fault")
        yield from self.bind()
        while True:
            seq = yield from mmu_interval_read_begin(isub)
            pfn = yield from self.mm.hmm_range_fault(page_of(va), write)
            yield                                # snapshot taken; the mutex is not yet
            with (yield self.mutex):
                if self.dead:
                    raise device_gone(self, "the mirror was released during a fault")
                retry = mmu_interval_read_retry(isub, seq)
                if not retry:
                    self.program(va, pfn)
            if not retry:
                return
            self.retries += 1
            self.sim.stats["hmm_fault_retry"] += 1
            yield                                # -EBUSY: go round again

    def program(self, va, pfn):
        """``dmirror_do_fault``: write the device PTE, under the mutex with the sequence
        checked. Writable if the snapshot was (``HMM_PFN_WRITE``): with the sequence still
        valid, the primary PTE still maps ``pfn`` as ``hmm_range_fault`` saw it."""
        hit = walk_pte(self.mm, va, False)
        writable = bool(hit is not None and hit[0] == pfn and hit[1])
        self.pt.map(vpn_of(va), pfn, writable)

    def translation(self, va):
        """``(pfn, writable)`` of the device PTE for ``va``, or None (inspection only)."""
        return self.pt.lookup(vpn_of(va))

    # ------------------------------------------------------------------ invalidation
    def interval_invalidate(self, range, cur_seq):
        """``dmirror_interval_invalidate``: skip our own migration, take the mutex
        (:meth:`lock_mutex`; refuse if a non-blockable range finds it busy), then
        :meth:`invalidate_locked`."""
        if range.event is Event.MIGRATE and range.owner is self:
            return True                          # our own migration: nothing to undo
        if not (yield from self.lock_mutex(range)):
            return False
        try:
            self.invalidate_locked(range, cur_seq)
        finally:
            self.mutex.release()
        return True

    def lock_mutex(self, range):
        """``mutex_lock`` (sleeps) for a blockable range, else ``mutex_trylock``: True once
        the mutex is held, False if a non-blockable range found it busy."""
        if range.blockable:
            yield self.mutex
        elif not self.mutex.trylock():
            return False
        return True

    def invalidate_locked(self, range, cur_seq):
        """Under the mutex: ``mmu_interval_set_seq`` (faults that snapshotted before now
        retry), then erase the device PTEs of the range."""
        mmu_interval_set_seq(self.notifier, cur_seq)
        self.erase(range.start, range.end)

    def erase(self, start, end):
        """``dmirror_do_update``: erase the device PTEs of ``[start, end)``."""
        vpn0, vpn1 = vpn_span(start, end, *self.interval)
        if vpn0 < vpn1:
            self.pt.zap_range(vpn0, vpn1)
            self.sim.charge("secondary_flush")

    def release(self, mm):
        """The mm is going away (or the mirror is detached): interval notifiers already got
        a RELEASE invalidation over everything; remove ours (``dmirror_fops_release`` ->
        ``mmu_interval_notifier_remove``, which waits for an invalidation in flight) and
        drop whatever is left."""
        self.dead = True
        if self.notifier._inserted:
            yield from mmu_interval_notifier_remove(self.notifier)
        with (yield self.mutex):
            self.pt.zap_all()
