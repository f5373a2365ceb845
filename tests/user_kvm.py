"""A correct KVM-style secondary MMU written by a user from the public documentation only
(``include/linux/mmu_notifier.h``, ``Documentation/virt/kvm/locking.rst``,
``Documentation/mm/mmu_notifier.rst``), not from ``drivers/kvm.py``: a plain dict is its
shadow page table. A test fixture: the checker must find nothing wrong with it on any
scenario, generation or schedule (``smmu check tests/user_kvm.py:UserKVM``).

The protocol, as the header states it: "invalidate_range_start() and invalidate_range_end()
must be paired"; "the establishment of sptes is forbidden in the range passed to
invalidate_range_begin/end for the whole duration of the invalidate_range_begin/end critical
section". So, under one spinlock:

* ``invalidate_range_start``: count the range in flight, drop the SPTEs of the range;
* ``invalidate_range_end``: bump the sequence, then drop the count (a fault that read the
  old sequence before the range began will see it moved);
* fault: read the sequence, GUP the page (a reference is held until the SPTE is written),
  take the lock, install only if nothing is in flight and the sequence did not move.

Its ``invalidate_range_end`` yields while it holds the lock, between bumping the sequence
and dropping the count (legal: no fault can check meanwhile; the yield lets every other CPU
run), and again after dropping it. The second yield is the shape that made ``ksm_merge``
free the KSM page it was promoting (issue 9, item 8): a COW ran while ``end`` slept.
"""

from __future__ import annotations

from smmu import MMUNotifier, SegmentationFault
from smmu.base.constants import PAGE_SHIFT, PAGE_SIZE


class UserKVM(MMUNotifier):
    """KVM-style: dict SPTEs ``vpn -> [pfn, writable, young]``, ``mmu_lock``, a sequence
    and an in-flight count (the 2008 ``mmu_notifier_seq`` / ``mmu_notifier_count``)."""

    name = "user_kvm"

    def __init__(self, sim, mm):
        super().__init__(sim, mm)
        self.lock = sim.spinlock("user_kvm.mmu_lock")
        self.sptes: dict[int, list] = {}
        self.seq = 0
        self.count = 0
        self.dead = False

    # ------------------------------------------------------------------ the guest side
    def access(self, va, *, write, value=None):
        vpn = va >> PAGE_SHIFT
        while True:
            yield
            if self.dead:
                raise SegmentationFault(f"{self.name}: the VM is gone", va)
            spte = self.sptes.get(vpn)
            if spte is not None and (spte[1] or not write):
                spte[2] = True                               # the accessed bit
                if write:
                    return self.dma_write(va, spte[0], value)
                return self.dma_read(va, spte[0])
            yield from self.fault(va, write)

    def fault(self, va, write):
        page = va - va % PAGE_SIZE
        vpn = va >> PAGE_SHIFT
        while True:
            seq = self.seq
            yield
            pfn = yield from self.mm.get_user_pages(page, write=write)
            yield
            with (yield self.lock):
                ok = self.may_install(seq)
                if ok:
                    old = self.sptes.pop(vpn, None)
                    if old is not None:
                        self.note_unmap(page)
                    # a write GUP found the PTE writable and nothing changed it since (the
                    # sequence did not move): the SPTE may be writable; a read never is
                    self.sptes[vpn] = [pfn, bool(write), True]
                    self.note_map(page, pfn, bool(write))
            yield from self.mm.put_page(pfn)
            if ok:
                return
            if self.dead:
                raise SegmentationFault(f"{self.name}: the VM is gone", va)

    # ------------------------------------------------------------------ helpers
    def may_install(self, seq) -> bool:
        """Under the lock: may the fault that read ``seq`` before its GUP install its SPTE?
        Not while a range is in flight, nor once the sequence moved."""
        return not self.dead and self.count == 0 and self.seq == seq

    def _zap(self, start, end):
        vpn0, vpn1 = start >> PAGE_SHIFT, -(-end // PAGE_SIZE)
        gone = [v for v in self.sptes if vpn0 <= v < vpn1]
        for v in gone:
            del self.sptes[v]
        if gone:
            self.note_unmap_range(start - start % PAGE_SIZE, min(end, vpn1 << PAGE_SHIFT))

    def _age(self, start, end, clear):
        vpn0, vpn1 = start >> PAGE_SHIFT, -(-end // PAGE_SIZE)
        young = False
        for v, spte in self.sptes.items():
            if vpn0 <= v < vpn1 and spte[2]:
                young = True
                if clear:
                    spte[2] = False
        return young

    # ------------------------------------------------------------------ notifier hooks
    def invalidate_range_start(self, range):
        with (yield self.lock):
            self.count += 1
            self._zap(range.start, range.end)
        return 0

    def invalidate_range_end(self, range):
        with (yield self.lock):
            self.seq += 1
            yield                        # preempted holding the lock: legal
            self.count -= 1
        yield                            # and after it: end may sleep (blockable range)

    def invalidate_page(self, mm, address):
        with (yield self.lock):
            self.seq += 1
            self._zap(address, address + PAGE_SIZE)

    def change_pte(self, mm, address, pte):
        with (yield self.lock):
            self.seq += 1
            self._zap(address, address + PAGE_SIZE)

    def clear_flush_young(self, mm, start, end):
        with (yield self.lock):
            return self._age(start, end, True)

    def clear_young(self, mm, start, end):
        with (yield self.lock):
            return self._age(start, end, True)

    def test_young(self, mm, address):
        with (yield self.lock):
            return self._age(address, address + PAGE_SIZE, False)

    def release(self, mm):
        with (yield self.lock):
            self.dead = True
            self._zap(0, 1 << 47)
