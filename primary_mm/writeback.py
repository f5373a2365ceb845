"""Writeback, from ``mm/page-writeback.c`` (``clear_page_dirty_for_io``) and ``mm/rmap.c``
(``page_mkclean``).

:class:`Writeback` is mixed into :class:`primary_mm.memory.Memory`.
"""

from __future__ import annotations

from primary_mm.frames import FRAME_DIRTY
from smmu.base.pte import PTE_DIRTY, PTE_WRITE
from smmu.notifier import Event
from primary_mm.operation import mm_operation


class Writeback:
    """Writing dirty page-cache pages back (``page_mkclean`` then the I/O)."""

    @mm_operation
    def writeback(self, file):
        """Write every dirty page-cache page of ``file`` to its backing store:
        ``clear_page_dirty_for_io`` -> ``page_mkclean`` -> ``page_mkclean_one`` for each
        shared mapping (write-protect and clean the PTE: v2008 ``invalidate_page`` if it was
        dirty or writable; otherwise start/end PROTECTION_PAGE), then the I/O. A later CPU
        write faults and re-dirties the page. Returns the number of pages written."""
        self._check_file(file, "writeback")
        frames = self.frames
        written = 0
        for pgoff in file.dirty_pages():
            yield
            pfn = file.cache.get(pgoff)
            if pfn is None or not frames.test_flags(pfn, FRAME_DIRTY):
                continue
            frames.get(pfn)                   # before lock_page may sleep (folio_try_get)
            yield from self.lock_page(pfn)
            try:
                if file.cache.get(pgoff) != pfn or not frames.test_flags(pfn, FRAME_DIRTY):
                    continue                      # truncated or cleaned while we slept
                yield from self._page_mkclean(pfn, file, pgoff)
                frames.clear_flags(pfn, FRAME_DIRTY)
                file.contents[pgoff] = frames.contents[pfn]
                file.writebacks += 1
                self.sched.wait_io("writeback_io")
                written += 1
                yield
            finally:
                self.unlock_page(pfn)
                frames.put(pfn)
        return written

    def _page_mkclean(self, pfn, file, pgoff):
        frames = self.frames

        def one(vma, va):
            if not vma.shared:
                return False
            mm = vma.mm

            def check(p):
                # only a dirty or writable PTE changes: 2.6.27 page_mkclean_one "if
                # (pte_dirty(*pte) || pte_write(*pte))"; 6.6 page_vma_mkclean_one "if
                # (!pte_dirty(entry) && !pte_write(entry)) continue" (the start/end of the
                # folio's extent are issued whether or not a PTE changes)
                return self._maps(p, pfn) and bool(p & (PTE_DIRTY | PTE_WRITE))

            def after(old, new):
                if old & PTE_DIRTY:
                    frames.set_flags(pfn, FRAME_DIRTY)
            old = yield from mm._pte_replace(
                va, check, lambda p: p & ~(PTE_WRITE | PTE_DIRTY), Event.PROTECTION_PAGE,
                after=after)
            return old is not None
        return (yield from self._walk_mappings(pfn, file.mapping, pgoff, one))
