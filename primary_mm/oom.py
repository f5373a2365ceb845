"""The OOM reaper, from ``mm/oom_kill.c`` (``__oom_reap_task_mm``).

:class:`OomReaper` is mixed into :class:`primary_mm.memory.Memory`.
"""

from __future__ import annotations

from smmu.base.errors import UsageError
from smmu.notifier import Event


class OomReaper:
    """Reaping the memory of an OOM victim with non-blockable ranges."""

    def oom_reap(self, mm):
        """``__oom_reap_task_mm``: unmap every private anonymous VMA of ``mm`` with a
        non-blockable range (``mmu_notifier_invalidate_range_start_nonblock``); a range a
        notifier refuses (-EAGAIN) is skipped and not ended by the reaper. Needs
        ``notifier_api="modern"`` (2.6.27 had no reaper). Returns the ranges skipped."""
        if self.api != "modern":
            raise UsageError(f"oom_reap needs notifier_api='modern': the OOM reaper (4.6) and "
                             f"non-blockable ranges (4.19) do not exist in {self.api!r}")
        self._check_mm(mm, "oom_reap")
        skipped = []
        yield mm.mmap_lock.read()
        try:
            for vma in list(mm.vmas):
                if vma.file is not None or vma.shared:
                    continue
                ok = yield from mm._zap(vma.start, vma.end, Event.UNMAP,
                                        [(vma.start, vma.end)], nonblock=True)
                if not ok:
                    skipped.append((vma.start, vma.end))
                yield
        finally:
            mm.mmap_lock.up_read()
        mm.oom_reaped = True
        return skipped
