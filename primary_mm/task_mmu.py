"""``ioctl(PAGEMAP_SCAN)`` with ``PM_SCAN_WP_MATCHING``, from ``fs/proc/task_mmu.c``
(``do_pagemap_scan``, 6.7+): walk a range, report its pages and write-protect them.

:class:`PagemapScan` is mixed into :class:`primary_mm.mm.MM`.
"""

from __future__ import annotations

from smmu.base.constants import PAGE_SHIFT, PAGE_SIZE
from smmu.base.pte import PTE_WRITE
from smmu.notifier import Event


class PagemapScan:
    """``PAGEMAP_SCAN`` of an address space."""

    def pagemap_scan(self, addr, length):
        """``do_pagemap_scan`` with ``PM_SCAN_WP_MATCHING``: the walk stops whenever its
        output buffer is full (here: after every page) and drops ``mmap_lock`` between
        walks; each walk write-protects the present PTEs it reports and flushes them.
        Returns the number of pages write-protected.

        The ``MMU_NOTIFY_PROTECTION_VMA`` range is started and ended inside each walk, under
        ``mmap_lock`` (4cccb6221cae, CVE-2024-26617); with ``pagemap_scan_unlocked`` (6.7 as
        released) it brackets the whole loop, so a notifier may register (``mmap_lock`` for
        write) between two walks and then get an ``end`` whose ``start`` it never saw."""
        self._alive()
        start, end = self._check_range(addr, length, "pagemap_scan")
        subs = self.notifier_subscriptions
        unlocked = self.memory.pagemap_scan_unlocked
        outer = self._range(start, end, Event.PROTECTION_VMA)
        if unlocked:
            yield from subs.mmu_notifier_invalidate_range_start(outer)
        done = 0
        try:
            for va in range(start, end, PAGE_SIZE):
                yield self.mmap_lock.read()            # mmap_read_lock_killable
                try:
                    rng = None
                    if not unlocked:
                        rng = self._range(va, end, Event.PROTECTION_VMA)
                        yield from subs.mmu_notifier_invalidate_range_start(rng)
                    yield self.page_table_lock
                    try:
                        changed = self.pt.protect_range(va >> PAGE_SHIFT,
                                                        (va >> PAGE_SHIFT) + 1, PTE_WRITE, 0)
                        if changed:
                            done += changed
                            yield from self._flush_tlb_range(va, va + PAGE_SIZE)
                    finally:
                        self.page_table_lock.release()
                    if rng is not None:
                        yield from subs.mmu_notifier_invalidate_range_end(rng)
                finally:
                    self.mmap_lock.up_read()
                yield                                   # pagemap_scan_flush_buffer
        finally:
            if unlocked:
                yield from subs.mmu_notifier_invalidate_range_end(outer)
        return done
