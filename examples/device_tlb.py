"""A device TLB for a DMA engine that faults pages in itself, written as a user of smmu
would write one: from the README and the hook contracts in ``smmu.notifier.api`` (which
quote ``include/linux/mmu_notifier.h``), with a plain dict as its TLB.

The device caches translations ``vpn -> [pfn, writable, accessed]`` (at most
``capacity``; the oldest is evicted). A miss is a fault: ``get_user_pages`` the page, then
install the translation under the TLB lock, but only if no invalidation is in flight and
none completed since the fault began (the sequence/count pair KVM's ``mmu_notifier_seq`` and
``mmu_notifier_count`` were made for). The hooks:

* ``invalidate_range_start``: count the range in flight and drop its translations: after
  start returns the pages may be freed, so the device must not reach them any more;
* ``invalidate_range_end``: bump the sequence, then drop the count;
* ``invalidate_page`` / ``change_pte`` (the 2008 API): bump the sequence, drop the page;
* ``clear_flush_young`` / ``clear_young`` / ``test_young``: the accessed bits (reclaim);
* ``release``: the mm is going away: stop the device, drop everything.

Check it: ``smmu check examples/device_tlb.py:DeviceTLB``; test it with the hypothesis kit:
``pytest examples/`` (``examples/test_device_tlb.py``).
"""

from __future__ import annotations

from smmu import MMUNotifier, PAGE_SIZE, SegmentationFault

PAGE_SHIFT = PAGE_SIZE.bit_length() - 1


class DeviceTLB(MMUNotifier):
    """A DMA engine's TLB: a dict of translations, a lock, a sequence and a count of the
    invalidations in flight."""

    def __init__(self, sim, mm, capacity: int = 8):
        super().__init__(sim, mm)
        self.lock = sim.spinlock("devtlb.lock")
        self.tlb: dict[int, list] = {}      # vpn -> [pfn, writable, accessed]
        self.capacity = capacity
        self.seq = 0                        # bumped when an invalidation completes
        self.in_flight = 0                  # invalidate_range_start .. _end in progress
        self.dead = False                   # release ran: the device is stopped

    # ------------------------------------------------------------------ the device side
    def access(self, va, *, write, value=None):
        """One DMA to ``va``: translate (faulting on a miss), then touch the frame."""
        vpn = va >> PAGE_SHIFT
        while True:
            yield                                        # the device runs concurrently
            if self.dead:
                raise SegmentationFault("devtlb: the mm is gone", va)
            entry = self.tlb.get(vpn)
            if entry is not None and (entry[1] or not write):
                entry[2] = True                          # accessed
                if write:
                    return self.dma_write(va, entry[0], value)
                return self.dma_read(va, entry[0])
            yield from self.fault(va, write)

    def fault(self, va, write):
        """Fault ``va`` in: GUP the page, install its translation if nothing invalidated
        meanwhile, drop the page reference (the TLB holds none: the notifier keeps it
        coherent). Retries until installed or the mm is gone."""
        page = va - va % PAGE_SIZE
        while not self.dead:
            seq = self.seq
            yield
            pfn = yield from self.mm.get_user_pages(page, write=write)
            yield
            with (yield self.lock):
                ok = not self.dead and self.in_flight == 0 and self.seq == seq
                if ok:
                    self._install(page, pfn, bool(write))
            yield from self.mm.put_page(pfn)
            if ok:
                return

    def _install(self, page, pfn, writable):
        vpn = page >> PAGE_SHIFT
        if vpn in self.tlb:
            del self.tlb[vpn]
            self.note_unmap(page)
        elif len(self.tlb) >= self.capacity:             # evict the oldest translation
            old = next(iter(self.tlb))
            del self.tlb[old]
            self.note_unmap(old << PAGE_SHIFT)
        self.tlb[vpn] = [pfn, writable, True]
        self.note_map(page, pfn, writable)               # tell the checker

    def flush(self, start, end):
        """Drop every translation in ``[start, end)``."""
        vpn0, vpn1 = start >> PAGE_SHIFT, -(-end // PAGE_SIZE)
        gone = [v for v in self.tlb if vpn0 <= v < vpn1]
        for v in gone:
            del self.tlb[v]
            self.note_unmap(v << PAGE_SHIFT)

    def _young(self, start, end, clear):
        vpn0, vpn1 = start >> PAGE_SHIFT, -(-end // PAGE_SIZE)
        young = False
        for v, entry in self.tlb.items():
            if vpn0 <= v < vpn1 and entry[2]:
                young = True
                if clear:
                    entry[2] = False
        return young

    # ------------------------------------------------------------------ notifier hooks
    def invalidate_range_start(self, range):
        with (yield self.lock):
            self.in_flight += 1
            self.flush(range.start, range.end)
        return 0

    def invalidate_range_end(self, range):
        with (yield self.lock):
            self.seq += 1
            self.in_flight -= 1

    def invalidate_page(self, mm, address):
        with (yield self.lock):
            self.seq += 1
            self.flush(address, address + PAGE_SIZE)

    def change_pte(self, mm, address, pte):
        with (yield self.lock):
            self.seq += 1
            self.flush(address, address + PAGE_SIZE)

    def clear_flush_young(self, mm, start, end):
        with (yield self.lock):
            return self._young(start, end, True)

    def clear_young(self, mm, start, end):
        with (yield self.lock):
            return self._young(start, end, True)

    def test_young(self, mm, address):
        with (yield self.lock):
            return self._young(address, address + PAGE_SIZE, False)

    def release(self, mm):
        with (yield self.lock):
            self.dead = True
            self.flush(0, 1 << 47)
