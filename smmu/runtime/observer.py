"""The observer port: what lower layers tell the checker.

Every scheduler carries an :class:`Observer` (``sched.observer``, a no-op one by default); the
harness installs its coherence oracle there. Lower layers report what happens to it and never
call the oracle directly.
"""

from __future__ import annotations


class Observer:
    """What lower layers tell the checker (see docs/internals.md). All no-ops here; the
    coherence oracle (``smmu.oracle.Oracle``) implements them. Calls are made once per
    operation or batch, never per page on a hot path."""

    def cpu_access(self, mm, va, write, value):
        """A CPU read (``write`` False, ``value`` read) or write of ``value`` at ``va``."""

    def device_access(self, drv, va, pfn, write, value):
        """Driver ``drv`` is about to read or write frame ``pfn`` through its mapping of ``va``."""

    def secondary_map(self, drv, va, pfn, writable):
        """``drv`` installed the translation ``va -> pfn``."""

    def secondary_unmap(self, drv, start, end):
        """``drv`` dropped its translations in ``[start, end)``."""

    def fork_copy(self, parent, child, start, end):
        """``copy_page_range`` copied ``[start, end)`` of ``parent`` into ``child``, now."""

    def discard(self, mm, start, end):
        """The private contents of ``[start, end)`` in ``mm`` are gone (munmap, DONTNEED...)."""

    def move(self, mm, old_start, new_start, length):
        """mremap moved ``[old_start, old_start + length)`` to ``new_start``."""

    def file_truncate(self, file, npages):
        """``file`` was truncated to ``npages`` pages."""

    def quiesce(self):
        """The run is over: make the end-of-run checks."""
