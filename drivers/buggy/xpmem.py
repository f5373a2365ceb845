"""Broken variants of :class:`drivers.XPMEM`: each overrides only what breaks."""

from __future__ import annotations

from drivers._common import page_of
from drivers.xpmem import XPMEM


class XPMEMNoPin(XPMEM):
    """XPMEM without its pins: the attach fault takes a GUP reference, drops it as soon as
    the page is mapped in the attacher, and the attacher's mapping still goes only in
    ``invalidate_range_end``. Nothing holds the page between the zap and ``end``; the
    emulation used to free every page of a range only after ``end``, so the driver looked
    coherent. Linux frees each full mmu_gather batch inside the window (2.6.27: every 506
    pages and every 1024-page ``ZAP_BLOCK_SIZE`` chunk; 3.7+: every 9698 pages), so a large
    munmap, ``MADV_DONTNEED`` or truncate lets the attacher reach freed or reused frames.
    With ``Simulator(mmu_gather="unbounded")`` (3.0-3.6: freed after ``end``) the same run is
    clean. (Without the pin fork no longer copies the page for the child either, and
    ``fork-after-pin`` shows XPMEM's end-only write window: ``WriteToReadOnly``.)"""

    breaks = ("a driver that drops its translations only in invalidate_range_end must hold a "
              "reference on every page it maps until then: the VM frees pages of the range "
              "before end")
    mirrors = ("2.6.27 include/linux/mmu_notifier.h: 'invalidate_range_end() is called when "
               "all pages in the range have been unmapped and the pages have been freed by "
               "the VM' and 'If the refcount is only droppped on invalidate_range_end() then "
               "the driver itself will drop the last refcount but it must take care to flush "
               "any secondary tlb before doing the final free on the page'")
    expected = {"UseAfterFree", "CrossMmAccess", "StaleRead", "StaleMapping", "WriteToReadOnly"}
    scenarios = ("munmap-gather-batch", "dontneed-gather-batch")
    apis = ("range_only", "modern")

    def pin(self, va, write):
        pfn = yield from self.mm.get_user_pages(page_of(va), write=write)
        yield from self.mm.put_page(pfn)          # the reference is gone at once
        return pfn

    def unpin(self, pfn):
        return None
        yield  # pragma: no cover - a generator like the method it overrides
