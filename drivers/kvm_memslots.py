"""KVM with memslots and the lock elision of 071064f14d87 "KVM: Don't take mmu_lock for range
invalidation unless necessary" (5.15): ``kvm_mmu_notifier_invalidate_range_start`` and
``_end`` take ``mmu_lock`` and move ``mmu_invalidate_in_progress`` only when the range
overlaps a memslot (``__kvm_handle_hva_range``: "lock elision must happen in both or
none"), so the memslots must not change between a start and its end.

:class:`KVM_MEMSLOTS` is 5.15 with 52ac8b358b0c "KVM: Block memslot updates across
range_start() and range_end()": start raises ``mn_active_invalidate_count`` under
``mn_invalidate_lock`` (end drops it and wakes the waiter at zero), and
``install_new_memslots`` waits until it is zero before it publishes the new slots
(``prepare_to_rcuwait`` ... ``schedule()``). The guest's memory is the memslots: a fault
outside them fails. Not in ``drivers.BUILTIN``: name it as
``drivers.kvm_memslots:KVM_MEMSLOTS``; the broken update (071064f14d87 without the block)
is ``drivers.BUGGY["kvm_memslot_update_in_window"]``.
"""

from __future__ import annotations

from drivers._common import device_gone, page_of
from drivers.kvm import KVM


class KVM_MEMSLOTS(KVM):
    """KVM whose guest memory is ``memslots`` (``[(start, end)]`` of host virtual
    addresses); :meth:`set_memslot` adds one (``KVM_SET_USER_MEMORY_REGION``)."""

    name = "kvm_memslots"

    def __init__(self, sim, mm, *, memslots=(), **kw):
        super().__init__(sim, mm, **kw)
        self.memslots = [tuple(s) for s in memslots]
        self.mn_invalidate_lock = sim.spinlock("kvm->mn_invalidate_lock")
        self.mn_active_invalidate_count = 0
        self.mn_memslots_update_rcuwait = sim.waitqueue("kvm->mn_memslots_update_rcuwait")
        self._elided = set()

    def _in_memslots(self, start, end) -> bool:
        return any(s < end and start < e for s, e in self.memslots)

    # ------------------------------------------------------------------ the VMM side
    def set_memslot(self, start, end):
        """``kvm_set_memslot`` -> ``install_new_memslots``: wait until no invalidation is
        active (52ac8b358b0c: "rcuwait_wait_event ... !kvm->mn_active_invalidate_count"),
        then publish the new memslots, under ``mn_invalidate_lock``."""
        yield self.mn_invalidate_lock
        while self.mn_active_invalidate_count:
            self.mn_invalidate_lock.release()
            yield self.mn_memslots_update_rcuwait.wait_until(
                lambda: not self.mn_active_invalidate_count)
            yield self.mn_invalidate_lock
        self.memslots.append((start, end))
        self.mn_invalidate_lock.release()

    # ------------------------------------------------------------------ device side
    def access(self, va, *, write, value=None):
        """A guest access: only inside a memslot (elsewhere KVM exits to the VMM with
        -EFAULT)."""
        va = page_of(va)
        if not self._in_memslots(va, va + 1):
            raise device_gone(self, f"{va:#x} is in no memslot")
        return (yield from super().access(va, write=write, value=value))

    # ------------------------------------------------------------------ notifier hooks
    def invalidate_range_start(self, range):
        """``kvm_mmu_notifier_invalidate_range_start`` (5.15): ``mn_active_invalidate_count++``
        always; ``mmu_lock``, the in-progress count and the zap only if the range overlaps
        a memslot."""
        with (yield self.mn_invalidate_lock):
            self.mn_active_invalidate_count += 1
        if not self._in_memslots(range.start, range.end):
            return 0                             # "lock elision"
        return (yield from super().invalidate_range_start(range))

    def invalidate_range_end(self, range):
        """``kvm_mmu_notifier_invalidate_range_end``: the in-progress part if the range
        overlaps a memslot (the same test as start), then ``mn_active_invalidate_count--``
        and, at zero, ``rcuwait_wake_up``."""
        if self._in_memslots(range.start, range.end):
            yield from super().invalidate_range_end(range)
            if self.mmu_invalidate_in_progress < 0:
                # 5.15 kvm_mmu_notifier_invalidate_range_end: the kernel oopses here
                raise AssertionError("BUG_ON(kvm->mmu_notifier_count < 0): an end without "
                                     "the start that skipped the lock")
        with (yield self.mn_invalidate_lock):
            self.mn_active_invalidate_count -= 1
            wake = not self.mn_active_invalidate_count
        if wake:
            self.mn_memslots_update_rcuwait.wake_all()
