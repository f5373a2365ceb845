"""What the invalidate_page study measures about a run, taken through the observer port: every
notifier hook by VM call site and by callback, the VM's own notifier calls, and the
masked-fault windows, in simulated ns and in scheduler steps.

A window is the time a secondary MMU's fault on the page must be held off or retried:

* a range (``range_only``, and the range paths of every mode): from the moment the VM begins
  ``mmu_notifier_invalidate_range_start`` to the moment the last subscriber's
  ``invalidate_range_end`` returned;
* v2008's single-page paths: from the PTE clear (``ptep_clear_flush``) to the return of the
  last ``invalidate_page`` (or ``change_pte``) of that page: a fault that snapshotted its
  sequence before the clear and checks it before ``invalidate_page`` bumped it is the one
  that has to retry.
"""

from __future__ import annotations

from collections import Counter

from smmu.notifier import overrides
from smmu.runtime.observer import FanOut, Observer
from smmu.sim.trace_recorder import OPERATIONS

#: innermost primary-MM function (``co_qualname`` contains the key) -> the Linux call site
CALL_SITES = (
    ("_do_wp_page", "do_wp_page"),
    ("_try_to_unmap", "try_to_unmap_one"),
    ("_page_referenced", "page_referenced_one"),
    ("_page_mkclean", "page_mkclean_one"),
    ("_copy_page_range", "copy_page_range"),
    ("_change_protection", "change_protection"),
    ("_move_vma", "move_page_tables"),
    ("_ksm_write_protect", "write_protect_page"),
    ("_ksm_merge_one", "replace_page"),
    ("_madvise_free", "madvise_free_pte_range"),
    ("_zap", "unmap_vmas"),
    ("_teardown", "exit_mmap"),
    ("Exit.exit", "exit_mmap"),
)

_PRIMARY = "/primary_mm/"


def call_site(task) -> tuple[str, str]:
    """``(operation, Linux call site)`` the running task is in, from its generator frames:
    the innermost primary-MM function that is a known notifier call site, and the outermost
    public MM operation ("?" when not found)."""
    site = op = "?"
    for code, _line in reversed(task.raw_stack()):
        if _PRIMARY not in code.co_filename:
            continue
        q = code.co_qualname
        if site == "?":
            for key, name in CALL_SITES:
                if key in q:
                    site = name
                    break
        name = code.co_name
        if name in OPERATIONS:
            op = name
    return op, site


class _Window:
    __slots__ = ("kind", "site", "op", "t0", "s0", "pending", "task")

    def __init__(self, kind, op, site, t0, s0, pending, task=None):
        self.kind, self.op, self.site = kind, op, site
        self.t0, self.s0, self.pending, self.task = t0, s0, pending, task


class StudyObserver(Observer):
    """Counts and windows of one run (install with :meth:`install`).

    ``hooks[(op, site, hook, driver)]``: hook calls; ``vm_calls[(op, site, call)]``: the VM's
    notifier calls (``invalidate_range_start`` / ``_end``, and in v2008 ``invalidate_page`` /
    ``change_pte``, one per PTE however many drivers are attached); ``windows``: one
    ``(kind, op, site, ns, steps)`` per closed window (``kind`` "range" or "page")."""

    def __init__(self, sim):
        self.sim = sim
        self.hooks: Counter = Counter()
        self.vm_calls: Counter = Counter()
        self.windows: list[tuple] = []
        self._ranges: dict[int, _Window] = {}
        self._pages: dict[tuple, _Window] = {}
        self.enabled = True

    def install(self):
        """Fan this observer out beside the simulator's (the oracle keeps judging)."""
        self.sim.observer = FanOut(self.sim.observer, self)
        return self

    def _where(self):
        return call_site(self.sim.running)

    def _close(self, w):
        sim = self.sim
        self.windows.append((w.kind, w.op, w.site, sim.now - w.t0, sim.steps - w.s0))

    # ------------------------------------------------------------------ events
    def hook_enter(self, sub, hook, args, span):
        if not self.enabled:
            return
        op, site = self._where()
        self.hooks[(op, site, hook, sub.name)] += 1

    def hook_exit(self, sub, hook, args, span):
        if hook not in ("invalidate_page", "change_pte") or span is None:
            return
        w = self._pages.get((id(sub.mm), span[0]))
        if w is None:
            return
        w.pending -= 1
        if w.pending <= 0:
            del self._pages[(id(sub.mm), span[0])]
            self._close(w)

    def pte_cleared(self, mm, va, hook):
        if not self.enabled or hook is None:
            return
        op, site = self._where()
        self.vm_calls[(op, site, hook)] += 1
        task = self.sim.running
        if any(w.task is task for w in self._ranges.values()):
            return              # inside a range (3.7+ change_pte): the range is the window
        subs = [s for s in mm.notifier_subscriptions.subs
                if overrides(s, hook) or (hook == "change_pte" and overrides(s, "invalidate_page"))]
        sim = self.sim
        w = _Window("page", op, site, sim.now, sim.steps, len(subs), task)
        if not subs:
            self._close(w)
        else:
            self._pages[(id(mm), va)] = w

    def range_start(self, mm, rng):
        if not self.enabled:
            return
        op, site = self._where()
        self.vm_calls[(op, site, "invalidate_range_start")] += 1
        sim = self.sim
        self._ranges[id(rng)] = _Window("range", op, site, sim.now, sim.steps, 0, sim.running)

    def range_start_failed(self, mm, rng):
        w = self._ranges.pop(id(rng), None)
        if w is not None:
            self._close(w)

    def range_end(self, mm, rng, subs):
        w = self._ranges.get(id(rng))
        if w is None:
            return
        self.vm_calls[(w.op, w.site, "invalidate_range_end")] += 1
        w.pending = len(subs)
        if not subs:
            del self._ranges[id(rng)]
            self._close(w)

    def range_end_over(self, sub, rng):
        w = self._ranges.get(id(rng))
        if w is None:
            return
        w.pending -= 1
        if w.pending <= 0:
            del self._ranges[id(rng)]
            self._close(w)

    # ------------------------------------------------------------------ summaries
    def hooks_at(self, site, hook=None, driver=None) -> int:
        """Hook calls made at VM call site ``site`` (optionally one hook, one driver)."""
        return sum(n for (_op, s, h, d), n in self.hooks.items()
                   if s == site and (hook is None or h == hook) and (driver is None or d == driver))

    def vm_calls_at(self, site) -> int:
        return sum(n for (_op, s, _c), n in self.vm_calls.items() if s == site)
