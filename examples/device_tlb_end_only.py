"""A broken variant of :class:`device_tlb.DeviceTLB`, the mistake the kit must catch: it
drops its translations only in ``invalidate_range_end``.

That looks harmless (the range is counted in flight from ``start``, so no new translation is
made inside it), but ``end`` runs after the primary MM has cleared the PTEs, flushed the CPU
TLB and freed the pages: between the two the device still reaches a page that may already
belong to someone else. ``include/linux/mmu_notifier.h``: invalidate_range_start "must
ensure that no secondary MMU ... can access the pages" once it returns, unless the pages
stay referenced until the flush (``Documentation/mm/mmu_notifier.rst``).

``smmu check examples/device_tlb_end_only.py:EndOnlyTLB`` reports it (exit 1);
``examples/test_device_tlb.py`` expects the kit to fail it.
"""

from __future__ import annotations

from device_tlb import DeviceTLB      # a sibling module: smmu puts this folder on sys.path


class EndOnlyTLB(DeviceTLB):
    """Counts the range in flight in ``start`` but flushes only in ``end``."""

    def invalidate_range_start(self, range):
        with (yield self.lock):
            self.in_flight += 1
        return 0

    def invalidate_range_end(self, range):
        with (yield self.lock):
            self.flush(range.start, range.end)
            self.seq += 1
            self.in_flight -= 1
