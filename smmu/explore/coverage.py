"""Interleaving coverage: what a clean verdict rests on.

A race between an invalidation and a device fault can only show if some schedule puts one
side *between* the steps of the other. :class:`Coverage` (an observer every explored run
carries) records, per run:

* for each notifier hook (``invalidate_range_start`` ... ``_end`` counted as the window it
  opens, the page hooks ``invalidate_page``, ``change_pte``, ``arch_invalidate_secondary_tlbs``,
  ``release``, the aging hooks, an interval notifier's ``invalidate``): whether a device
  fault step of another task (a snapshot of the primary: GUP, pin, ``hmm_range_fault``, a
  lockless walk; or the map that installs it) ran while the hook ran or its window was
  open, or the hook ran inside another task's fault (between its snapshot and its map);
* for each device fault step (the snapshot kinds): whether a notifier hook of another task
  began, returned or ended between the snapshot and the map that used it (or the end of the
  fault, if it mapped nothing).

:meth:`Coverage.merge` sums runs; :meth:`Coverage.table` gives ``{"hooks": {name: {"runs",
"interleaved"}}, "faults": {kind: {"runs", "interleaved"}}}``, what ``smmu check`` prints and
writes to its JSON. A row with ``interleaved`` 0 is an interleaving no schedule tried.
"""

from __future__ import annotations

from smmu.runtime.observer import Observer

#: what a device fault's snapshot of the primary is called, by the event that reports it
SNAPSHOTS = {"get_user_pages": "GUP", "pin_user_pages": "pin", "hmm_range_fault":
             "hmm_range_fault", "walk": "lockless walk"}
#: the hook rows, in the order they are shown
HOOK_ROWS = ("invalidate_range_start/end", "invalidate_page", "change_pte",
             "arch_invalidate_secondary_tlbs", "interval invalidate", "release",
             "clear_flush_young", "clear_young", "test_young")


class Coverage(Observer):
    """The interleaving coverage of the runs it observed (see the module docstring). One
    instance observes one run (``run_once(..., observers=[cov])``); :meth:`merge` adds
    another's counts."""

    def __init__(self):
        self.hooks: dict[str, list] = {}     # row -> [runs it ran in, runs interleaved]
        self.faults: dict[str, list] = {}    # snapshot kind -> [runs, runs interleaved]
        self._run_hooks: dict[str, bool] = {}
        self._run_faults: dict[str, bool] = {}
        self._open: dict = {}                # (tid, row, key) -> row: hooks / windows open
        self._snap: dict = {}                # tid -> [kind, interleaved]
        self._sched = None

    # ------------------------------------------------------------------ per run
    def install(self, sim) -> None:
        """Observe ``sim``'s run (called before the scenario is built)."""
        self._sched = sim
        self._run_hooks, self._run_faults, self._open, self._snap = {}, {}, {}, {}
        sim.watch(self)

    def detach(self) -> None:
        """The run is over: let go of its simulator (the explore loop collects each run's
        garbage before the next; a reference kept here would make it wait a run)."""
        self._sched = None

    def _tid(self):
        cur = self._sched.current if self._sched is not None else None
        return cur.tid if cur is not None else -1

    def _ran(self, row):
        self._run_hooks.setdefault(row, False)

    def _hook_side(self, row=None):
        """A notifier hook event of the running task (of hook ``row``): every open fault of
        another task has had the other side between its steps, and the hook ran inside a
        fault (between its snapshot and its map)."""
        snaps = self._snap
        if not snaps:                # (no fault open: nothing to mark)
            return
        tid = self._tid()
        for t, snap in snaps.items():
            if t != tid:
                snap[1] = True
                if row is not None:
                    self._run_hooks[row] = True

    def _device_side(self):
        """A device fault step of the running task: every hook or window of another task
        open now has had the other side inside it."""
        opened = self._open
        if not opened:               # (no hook or window open: nothing to mark)
            return
        tid = self._tid()
        for (t, row, _), _v in opened.items():
            if t != tid:
                self._run_hooks[row] = True

    def hook_enter(self, sub, hook, args, span):
        row = "invalidate_range_start/end" if hook in ("invalidate_range_start",
                                                       "invalidate_range_end") else hook
        if row not in HOOK_ROWS:
            return
        self._run_hooks.setdefault(row, False)        # _ran(row)
        self._hook_side(row)
        if row != "invalidate_range_start/end":
            self._open[(self._tid(), row, id(args))] = row

    def hook_exit(self, sub, hook, args, span):
        if hook in ("invalidate_range_start", "invalidate_range_end"):
            return
        self._open.pop((self._tid(), hook, id(args)), None)
        self._hook_side()

    def range_start_returned(self, sub, rng, ret):
        self._ran("invalidate_range_start/end")
        self._open[(self._tid(), "invalidate_range_start/end", (id(sub), id(rng)))] = True
        self._hook_side()

    def range_end_over(self, sub, rng):
        self._open.pop((self._tid(), "invalidate_range_start/end", (id(sub), id(rng))), None)
        self._hook_side()

    def range_start_unwind(self, sub, rng):
        self._open.pop((self._tid(), "invalidate_range_start/end", (id(sub), id(rng))), None)

    def interval_invalidate(self, isub, rng, ret):
        self._ran("interval invalidate")
        self._hook_side("interval invalidate")
        self._open[(self._tid(), "interval invalidate", id(rng))] = True

    def interval_invalidations_done(self, mm):
        tid = self._tid()
        for k in [k for k in self._open if k[1] == "interval invalidate" and k[0] == tid]:
            del self._open[k]
        self._hook_side()

    def _snapshot(self, kind):
        tid = self._tid()
        if tid < 0:
            return
        self._device_side()
        old = self._snap.get(tid)
        if old is not None:               # a retry: the previous snapshot is done with
            self._fault_over(old)
        self._snap[tid] = [kind, False]
        self._run_faults.setdefault(kind, False)

    def _fault_over(self, snap):
        kind, hit = snap
        if hit:
            self._run_faults[kind] = True

    def gup(self, mm, va, pfn, write, how):
        self._snapshot(SNAPSHOTS.get(how, how))

    def pte_walk(self, mm, va, pte):
        if self._tid() in self._snap:      # the fault's own check of a snapshot it took
            return
        self._snapshot(SNAPSHOTS["walk"])

    def secondary_map(self, drv, va, pfn, writable):
        tid = self._tid()
        if tid < 0:
            return
        self._device_side()
        snap = self._snap.pop(tid, None)
        if snap is not None:
            self._fault_over(snap)

    def quiesce(self):
        for snap in self._snap.values():
            self._fault_over(snap)
        self._snap.clear()
        for row, hit in self._run_hooks.items():
            c = self.hooks.setdefault(row, [0, 0])
            c[0] += 1
            c[1] += bool(hit)
        for kind, hit in self._run_faults.items():
            c = self.faults.setdefault(kind, [0, 0])
            c[0] += 1
            c[1] += bool(hit)
        self._run_hooks = {}
        self._run_faults = {}
        self._open = {}

    # ------------------------------------------------------------------ summing up
    def merge(self, other: "Coverage") -> "Coverage":
        """Add ``other``'s counts to this one; returns self."""
        for mine, theirs in ((self.hooks, other.hooks), (self.faults, other.faults)):
            for k, (n, hit) in theirs.items():
                c = mine.setdefault(k, [0, 0])
                c[0] += n
                c[1] += hit
        return self

    def table(self) -> dict:
        """``{"hooks": {row: {"runs", "interleaved"}}, "faults": {kind: {...}}}``."""
        hooks = {r: {"runs": self.hooks[r][0], "interleaved": self.hooks[r][1]}
                 for r in HOOK_ROWS if r in self.hooks}
        faults = {k: {"runs": n, "interleaved": hit}
                  for k, (n, hit) in sorted(self.faults.items())}
        return {"hooks": hooks, "faults": faults}

    @classmethod
    def from_table(cls, doc: dict) -> "Coverage":
        """The inverse of :meth:`table` (coverage sent back by a worker)."""
        c = cls()
        for row, d in (doc.get("hooks") or {}).items():
            c.hooks[row] = [int(d["runs"]), int(d["interleaved"])]
        for kind, d in (doc.get("faults") or {}).items():
            c.faults[kind] = [int(d["runs"]), int(d["interleaved"])]
        return c

    def __repr__(self):
        t = self.table()
        gaps = [r for r, d in t["hooks"].items() if not d["interleaved"]] + \
            [k for k, d in t["faults"].items() if not d["interleaved"]]
        return f"<Coverage {len(t['hooks'])} hooks, {len(t['faults'])} fault steps, gaps {gaps}>"
