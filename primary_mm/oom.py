"""The OOM reaper, from ``mm/oom_kill.c`` (``oom_reap_task``, ``oom_reap_task_mm``,
``__oom_reap_task_mm``).

``oom_reap_task`` retries ``oom_reap_task_mm`` up to ``MAX_OOM_REAP_RETRIES`` (10) times,
sleeping ``HZ/10`` between attempts ("Retry the mmap_read_trylock(mm) a few times"): an
attempt fails when ``mmap_read_trylock`` does or when part of the address space could not be
reaped. Each attempt visits every VMA the reaper may unmap (``vma_is_anonymous(vma) ||
!(vma->vm_flags & VM_SHARED)``: private anonymous and private file mappings) with one
``MMU_NOTIFY_UNMAP`` range over the whole VMA. What an era does with the notifiers
(``Memory(oom_reaper=...)``):

``"nonblock"`` (4.19+, 93065ac753e4, the default)
    ``mmu_notifier_invalidate_range_start_nonblock``; a VMA whose start is refused
    (``-EAGAIN``) is skipped ("ret = false; continue") and the attempt fails.
``"blockable_check"`` (4.16 .. 4.18, "mm, mmu_notifier: annotate mmu notifiers with
    blockable invalidate callbacks")
    an mm with a notifier whose callbacks may block (here: ``may_sleep``) is not reaped
    ("mm_has_blockable_invalidate_notifiers"); the others get ordinary start/end.
``"skip_notifiers"`` (4.15, 4d4bbd8526a8 "mm, oom_reaper: skip mm structs with mmu
    notifiers")
    an mm with any notifier is not reaped (after sleeping ``HZ``).
``"no_notifier"`` (4.6 .. 4.14)
    ``unmap_page_range`` with no notifier call at all (4.12 ``mm/oom_kill.c`` contains no
    ``mmu_notifier``): a secondary MMU keeps translations of the freed pages, the bug
    4d4bbd8526a8 fixed.
``"none"`` (before 4.6: the reaper came with aac453635549 "mm, oom: introduce oom reaper")
    there is no reaper: :meth:`OomReaper.oom_reap` is a usage error (the victim's memory is
    freed only by its own exit).

:class:`OomReaper` is mixed into :class:`primary_mm.memory.Memory`.
"""

from __future__ import annotations

from smmu.base.errors import UsageError
from smmu.notifier import Event
from primary_mm.operation import mm_operation

OOM_REAPER = ("nonblock", "blockable_check", "skip_notifiers", "no_notifier", "none")
#: mm/oom_kill.c: ``#define MAX_OOM_REAP_RETRIES 10``
MAX_OOM_REAP_RETRIES = 10
#: ``schedule_timeout_idle(HZ/10)`` between attempts, in ns (HZ = one second of jiffies)
OOM_REAP_RETRY_NS = 100_000_000


def check_oom_reaper(mode) -> None:
    if mode not in OOM_REAPER:
        raise UsageError(f"unknown oom_reaper {mode!r}: use one of {list(OOM_REAPER)}")


class OomReaper:
    """Reaping the memory of an OOM victim (``mm/oom_kill.c``)."""

    @mm_operation
    def oom_reap(self, mm):
        """``oom_reap_task``: up to ``MAX_OOM_REAP_RETRIES`` attempts of
        :meth:`_oom_reap_task_mm`, ``HZ/10`` apart, until one reaps every VMA it may. Returns
        the VMA ranges the last attempt skipped (``[]``: all reaped; ``None`` when the
        ``mmap_lock`` could never be taken or the era's reaper leaves this mm alone). The
        ``"nonblock"`` reaper needs ``notifier_api="modern"`` (non-blockable ranges, 4.19)."""
        if self.oom_reaper == "none":
            raise UsageError("oom_reap: this kernel has no OOM reaper (it came in 4.6, "
                             "aac453635549 'mm, oom: introduce oom reaper'); use a 4.6+ "
                             "kernel preset or pass oom_reaper='no_notifier' (4.6..4.14)")
        if self.oom_reaper == "nonblock" and self.api != "modern":
            raise UsageError(f"oom_reap with oom_reaper='nonblock' needs notifier_api='modern' "
                             f"(non-blockable ranges came in 4.19); under {self.api!r} use "
                             "oom_reaper='no_notifier' (4.6..4.14), 'skip_notifiers' (4.15) "
                             "or 'blockable_check' (4.16..4.18)")
        self._check_mm(mm, "oom_reap")
        skipped = None
        for attempt in range(MAX_OOM_REAP_RETRIES):
            if attempt:
                yield self.sched.sleep(OOM_REAP_RETRY_NS)    # schedule_timeout_idle(HZ/10)
            if mm.exited:
                break                                        # MMF_OOM_SKIP: exit_mmap's
            skipped = yield from self._oom_reap_task_mm(mm)
            self.sched.stats["oom_reap_attempts"] += 1
            if skipped == []:
                break
        mm.oom_reaped = True                                 # MMF_OOM_SKIP
        return skipped

    def _oom_reap_task_mm(self, mm):
        """``oom_reap_task_mm``: ``mmap_read_trylock`` (None if it fails), then
        ``__oom_reap_task_mm`` over the VMAs; returns the ranges it skipped."""
        if not mm.mmap_lock.try_read():
            self.sched.stats["oom_reap_trylock_failed"] += 1
            return None
        skipped = []
        try:
            mode = self.oom_reaper
            subs = mm.notifier_subscriptions.subs
            if mode == "skip_notifiers" and subs or \
                    mode == "blockable_check" and any(s.may_sleep for s in subs):
                yield self.sched.sleep(10 * OOM_REAP_RETRY_NS)   # schedule_timeout_idle(HZ)
                return []                           # "goto unlock_oom": not reaped, no retry
            mm.oom_unstable = True                  # set_bit(MMF_UNSTABLE, &mm->flags)
            for vma in list(mm.vmas):
                if vma.file is not None and vma.shared:
                    continue                        # vma_is_anonymous || !VM_SHARED
                if mode == "no_notifier":
                    yield from mm._zap_no_notifier(vma.start, vma.end,
                                                   [(vma.start, vma.end)])
                    ok = True
                else:
                    ok = yield from mm._zap(vma.start, vma.end, Event.UNMAP,
                                            [(vma.start, vma.end)], nonblock=mode == "nonblock")
                if not ok:
                    skipped.append((vma.start, vma.end))
                yield
        finally:
            mm.mmap_lock.up_read()
        return skipped
