"""The coherence oracle: what every CPU and device access *should* see, and the checks.

``Simulator`` installs ``Oracle(sim)`` as its observer (``sim.observer``, see
:mod:`smmu.runtime.observer`); it learns everything from the events the lower layers report
and reads only their public state (``mm.vma_at``, ``mm.peek``, ``mm.pt.lookup``,
``mm.pt.walk``, ``memory.frames``, ``memory.mms``). It extends
:class:`~smmu.oracle.protocol.ProtocolChecker` (the notifier windows: ``MapInWindow``,
``BadReturn``, an end without its start) and keeps:

* **a data model**: the logical value of every page of every address space, independent of
  frames. The location of ``(mm, va)`` comes from the VMA (``mm.vma_at(va)``): private
  anonymous memory is a per-mm cell keyed by vpn; shared anonymous and shared file memory is a
  cell of the backing object at its page offset; private file memory is a per-mm overlay cell
  once written, else the file's cell. Untouched cells read 0 (anonymous) or the file's
  contents. ``fork_copy`` copies the parent's private cells into the child, ``discard`` drops
  them, ``move`` moves them, ``file_truncate`` drops file cells. Every read is compared with
  the model: ``StaleRead`` for a device read, and for a CPU read either ``LostWrite`` (the last
  write there was a device write through a frame the primary no longer maps) or ``StaleRead``.
  At quiescence every cell is checked against the primary's memory (``LostWrite``).
* **a frame model**: each secondary mapping declared with ``note_map`` records
  ``(pfn, frames.generation[pfn], writable)``; a device access to a frame that is free or whose
  generation moved since is ``UseAfterFree``; to a frame the primary does not map there and
  that another live mm owns, ``CrossMmAccess``; a device write to a frame that the primary
  maps at that address with a present, read-only PTE once no invalidation of it is in flight
  for the driver any more, ``WriteToReadOnly`` (Documentation/mm/mmu_notifier.rst makes the
  write legal until the write-protect's end: ``_write_protecting``; a write to a frame the
  primary no longer maps there is left to the data model: ``LostWrite``).
* every protocol-level report ends with the Linux text its rule rests on
  (:mod:`smmu.oracle.rules`); data-level ones are bugs whatever the protocol says.
* **protocol checks at quiescence**: ``UnpairedRange`` (start without end), ``StaleMapping``
  (declared secondary mappings that the primary no longer backs), found by one numba kernel
  call per driver (:func:`~smmu.oracle.scan.scan_secondary`) that is cheap enough to run at
  every choice point (``run_once(..., scan_every_step=True)``; mid-run only mappings of freed
  frames count).

``SleepInAtomic``, ``Deadlock``, ``Livelock`` and ``LockOrder`` are the runtime's own.
"""

from __future__ import annotations

import numpy as np

from smmu.base.constants import PAGE_SHIFT, PAGE_SIZE
from smmu.base.pte import PTE_DEVICE, PTE_MIGRATION, PTE_PRESENT, PTE_WRITE, pte_pfn
from smmu.base.log import get_logger
from smmu.notifier import overrides
from smmu.oracle.cells import Cell
from smmu.oracle.leaks import LeakTracker
from smmu.oracle.protocol import ProtocolChecker
from smmu.oracle.rules import cite
from smmu.oracle.scan import (STALE_FREED, STALE_REASONS, SecondaryMap, scan_secondary,
                              verify_cells, verify_cells_ref)
from smmu.runtime.task import call_site

log = get_logger()

# --------------------------------------------------------------------------- the data model

#: up to how many cells :meth:`Oracle._verify_mm` compares in Python rather than in its kernel
VERIFY_SMALL = 8


def _alive(mm) -> bool:
    """Is ``mm`` a live address space (not exited, its page table not destroyed)?"""
    return mm is not None and not mm.exited and mm.pt.root != 0


def _backing(vma):
    """The object whose pages a shared or file VMA maps: its file (shared anonymous memory
    is a shmem file too), else the VMA itself."""
    return vma.file if vma.file is not None else vma


class Oracle(ProtocolChecker):
    """The coherence checker of one :class:`~smmu.sim.Simulator` (see the module docstring).

    ``scan()`` runs the structural scan for every driver now; ``cells`` / ``objects`` hold the
    data model (private cells by mm id then vpn; object cells by backing object id then page).
    """

    def __init__(self, sim):
        super().__init__(sim)
        self.cells: dict[int, dict[int, Cell]] = {}     # mm id -> vpn -> private cell
        self.objects: dict[int, dict[int, Cell]] = {}   # id(backing) -> page -> cell
        self._objs: dict[int, object] = {}              # keep backing objects alive by id
        self.maps: dict[int, SecondaryMap] = {}          # id(drv) -> declared translations
        self._drvs: dict[int, object] = {}
        self._mms: dict[int, object] = {}                # mm id -> mm seen
        self._unmapped_seen: dict = {}                   # (mm id, vpn, pfn) -> first step
        self._frame_dev_write: dict[int, tuple] = {}     # pfn -> (drv name, step, value, va)
        self._reported: set = set()
        self._file_init: dict[int, np.ndarray] = {}      # id(file) -> contents at first sight
        # (mm id, vpn) -> (cell before the discard, the ranges of the discard): the old
        # page's value, meaningful only while one of those ranges is in flight
        self._ghost: dict[tuple, tuple] = {}
        self._discarding: dict[int, list] = {}           # mm id -> [(vpn0, vpn1, ranges)]
        self.scans = 0
        self._page_pending: set = set()                  # (id(sub), page): v2008 call due
        self.taken = LeakTracker()                       # what drivers took, and where

    def __repr__(self):
        ncells = sum(len(c) for c in self.cells.values()) + \
            sum(len(c) for c in self.objects.values())
        nmaps = sum(len(m) for m in self.maps.values())
        return (f"<Oracle {ncells} cells, {nmaps} secondary translations in "
                f"{len(self.maps)} drivers, {len(self.sim.violations)} violations>")

    # ------------------------------------------------------------------ helpers
    def _where(self):
        cur = self.sim.current
        return (cur.name if cur is not None else "setup"), self.sim.steps

    def _report(self, kind, key, message, *, stop=None, **kw):
        if (kind, key) in self._reported:
            return
        self._reported.add((kind, key))
        self.sim.violation(kind, message + cite(kind), stop=stop, **kw)

    def _locate(self, mm, va: int, write: bool):
        """(table, key, default) of the model cell for ``(mm, va)``, or None when no VMA."""
        self._mms[mm.id] = mm
        vma = mm.vma_at(va)
        if vma is None:
            return None
        vpn = va >> PAGE_SHIFT
        file = vma.file
        shared = bool(vma.shared)
        if file is None and not shared:
            return self.cells.setdefault(mm.id, {}), vpn, 0
        backing = _backing(vma)
        page = int(vma.pgoff) + ((va - vma.start) >> PAGE_SHIFT)
        if shared:
            return self._object(backing), page, (self._file_value(file, page) if file else 0)
        # private file mapping: the overlay once written privately, else the file page
        priv = self.cells.setdefault(mm.id, {})
        if write or vpn in priv:
            if vpn not in priv:
                priv[vpn] = Cell(self._object_value(backing, page, file), "file", "-", 0)
            return priv, vpn, 0
        return self._object(backing), page, self._file_value(file, page)

    def _file_value(self, file, page: int) -> int:
        """What file page ``page`` held before anything in this run wrote to it: the backing
        store (``File.contents``) as it was when the oracle first saw the file. Every later
        write reaches the model through cpu_access / device_access, so the snapshot stays
        the truth for untouched pages even if a stale device write corrupts the cache."""
        snap = self._file_init.get(id(file))
        if snap is None:
            snap = self._file_init[id(file)] = np.array(file.contents, dtype=np.uint64)
            self._objs[id(file)] = file
        return int(snap[page]) if 0 <= page < len(snap) else 0

    def _object(self, backing) -> dict:
        k = id(backing)
        self._objs[k] = backing
        return self.objects.setdefault(k, {})

    def _object_value(self, backing, page, file):
        c = self.objects.get(id(backing), {}).get(page)
        return c.value if c is not None else self._file_value(file, page)

    def _expected(self, mm, va, write):
        loc = self._locate(mm, va, write)
        if loc is None:
            return None, None, None
        table, key, default = loc
        return table, key, table.get(key) or Cell(default, "nobody (initial contents)", "-", 0)

    def _frames(self):
        return self.sim.memory.frames

    # ------------------------------------------------------------------ CPU side
    def cpu_access(self, mm, va, write, value):
        if write:                       # (the cell before a write does not matter)
            loc = self._locate(mm, va, True)
            if loc is not None:
                task, step = self._where()
                loc[0][loc[1]] = Cell(int(value), "cpu", task, step)
            return
        table, key, cell = self._expected(mm, va, write)
        if table is None:
            return
        task, step = self._where()
        value = int(value)
        if cell.matches(value):
            if cell.lazy:     # MADV_FREE settled: the page was kept or dropped
                table[key] = Cell(value, cell.writer, task, step, None, False, True)
            return
        page = va - va % PAGE_SIZE
        pte = int(mm.pt.lookup(va >> PAGE_SHIFT))
        now = pte_pfn(pte) if pte & PTE_PRESENT else None
        if cell.device and cell.pfn is not None and now != cell.pfn:
            seen = self._unmapped_seen.get((mm.id, va >> PAGE_SHIFT, cell.pfn))
            when = (f"; the primary had already stopped mapping frame {cell.pfn} there when "
                    f"the device wrote (first seen unmapped at step {seen})"
                    if seen is not None else "")
            self._report(
                "LostWrite", (mm.id, page, cell.step),
                f"{cell.writer} wrote {cell.value} to {page:#x} of {mm.name} "
                f"at step {cell.step} ({cell.task}) through frame {cell.pfn}, but the CPU "
                f"reads {value} from frame {now}: the device wrote through a translation the "
                f"primary no longer uses{when}. The driver must drop (or write-protect) its "
                "mapping before the primary PTE changes (in invalidate_range_start / "
                "invalidate_page) and re-fault afterwards", address=page,
                frames=tuple(f for f in (cell.pfn, now) if f is not None),
                writer=cell.writer, write_step=cell.step, value=cell.value, read=value)
        else:
            extra = ""
            if now is not None and now in self._frame_dev_write:
                d, s, v, dva = self._frame_dev_write[now]
                if v == value:
                    extra = (f"; frame {now} was last written by {d} at step {s} with "
                             f"{v} through its mapping of {dva:#x} (a stale translation)")
            self._report(
                "StaleRead", (mm.id, page, step),
                f"the CPU ({task}) read {value} at {page:#x} (frame {now}) but the last write "
                f"there was {cell.describe()}{extra}", address=page,
                frames=(now,) if now is not None else (), expected=cell.value, read=value)
        # the primary's view is the truth from now on: no cascade of reports
        table[key] = Cell(value, cell.writer, task, step, now, False, True)

    # ------------------------------------------------------------------ device side
    def device_access(self, drv, va, pfn, write, value):
        mm = drv.mm
        self._mms[mm.id] = mm
        self._drvs[id(drv)] = drv
        frames = self._frames()
        task, step = self._where()
        page = va - va % PAGE_SIZE
        vpn = va >> PAGE_SHIFT
        pfn = int(pfn)
        what = "write" if write else "read"
        pte = int(mm.pt.lookup(va >> PAGE_SHIFT))
        # a device may translate through the primary's device-private entry of its own page
        # and a device-exclusive entry of the page it holds, which the CPU cannot use
        mapped_here = bool(pte & (PTE_PRESENT | PTE_DEVICE)) and pte_pfn(pte) == pfn
        if not mapped_here:
            self._unmapped_seen.setdefault((mm.id, vpn, pfn), step)
        gen = int(frames.generation[pfn])
        rec = self.maps.get(id(drv))
        rec = rec.get(vpn) if rec is not None else None
        owner = int(frames.owner[pfn])
        other = self._mms.get(owner) if owner >= 0 and owner != mm.id else None
        if other is None and owner >= 0 and owner != mm.id:
            other = self._find_mm(owner)
        if int(frames.refcount[pfn]) == 0:
            self._report(
                "UseAfterFree", (id(drv), vpn, pfn, gen),
                f"{drv.name} {what}s frame {pfn} through its mapping of {page:#x}, but the "
                f"frame is free (generation {gen}): the driver kept a translation after the "
                "page was unmapped. Drop it in invalidate_range_start / invalidate_page, or "
                "hold a page reference for as long as the device may use it",
                address=page, frames=(pfn,), driver=drv.name, generation=gen)
        elif not mapped_here and other is not None and _alive(other):
            self._report(
                "CrossMmAccess", (id(drv), vpn, pfn, gen),
                f"{drv.name} {what}s frame {pfn} through its mapping of {page:#x} in "
                f"{mm.name}, but that frame now belongs to "
                f"{other.name} (mm {owner}): a stale secondary translation "
                "lets the device reach another process's memory. Drop translations in "
                "invalidate_range_start / invalidate_page before the frame can be freed",
                address=page, frames=(pfn,), driver=drv.name, owner=owner)
        elif rec is not None and rec[0] == pfn and rec[1] != gen:
            self._report(
                "UseAfterFree", (id(drv), vpn, pfn, gen),
                f"{drv.name} {what}s frame {pfn} through its mapping of {page:#x}, made when "
                f"the frame had generation {rec[1]}; it was freed and reused since "
                f"(generation {gen}). The driver must drop the translation when notified "
                "(invalidate_range_start / invalidate_page)",
                address=page, frames=(pfn,), driver=drv.name, old_generation=rec[1],
                generation=gen)
        if write and mapped_here and not pte & PTE_WRITE and \
                not self._write_protecting(drv, page):
            self._report(
                "WriteToReadOnly", (id(drv), vpn, pfn, step),
                f"{drv.name} writes {value} to {page:#x} (frame {pfn}) while the primary PTE "
                "is read-only (write-protected for COW, mprotect or page_mkclean) and no "
                "invalidation of the page is in flight for the driver any more: it kept a "
                "writable mapping past the end of the write-protect; it must write-protect "
                "or drop its mapping by then and fault again for write", address=page,
                frames=(pfn,), driver=drv.name)
        if getattr(mm, "exiting", False):
            # exit_mmap is tearing the mm down: its threads are gone, nobody can read what
            # a device reads or writes there now (a pinned page keeps its old contents);
            # the frame checks above still apply
            return
        # the data model
        table, key, cell = self._expected(mm, va, write)
        if write:
            value = int(value)
            self._frame_dev_write[pfn] = (drv.name, step, value, page)
            if table is None:
                return
            if not mapped_here and key not in table:
                rngs = self._discard_window(drv, vpn)
                if rngs:
                    # lands in a page being discarded by the operation it races: gone for
                    # the primary, but the old page holds it, and a read of it still in the
                    # window is ordered before the discard as well (a large zap has many
                    # steps)
                    self._ghost[(mm.id, vpn)] = (Cell(value, drv.name, task, step, pfn, True),
                                                 rngs)
                    return
            table[key] = Cell(value, drv.name, task, step, pfn, True)
            return
        got = int(frames.contents[pfn])
        if table is None or cell.matches(got):
            return
        if key not in table and not mapped_here:
            ghost = self._ghost.get((mm.id, vpn))
            if ghost is not None and ghost[0].value == got and self._discard_window(drv, vpn):
                return   # the value from before the discard still in flight: ordered before
        now = f"frame {pte_pfn(pte)}" if pte & PTE_PRESENT else "nothing"
        self._report(
            "StaleRead", (id(drv), vpn, step),
            f"{drv.name} read {got} at {page:#x} from frame {pfn} but the last write there "
            f"was {cell.describe()}"
            + ("" if mapped_here else
               f"; the primary maps {now} there now: the driver used a translation it "
               "should have dropped when the range was invalidated"),
            address=page, frames=(pfn,), driver=drv.name, expected=cell.value, read=got)

    def _write_protecting(self, drv, page: int) -> bool:
        """May ``drv`` still write ``page`` through the writable mapping it had before the
        primary write-protected it? Documentation/mm/mmu_notifier.rst: "When changing a pte
        to write protect or to point to a new write protected page with same content (KSM)
        it is fine to delay the mmu_notifier_invalidate_range call to
        mmu_notifier_invalidate_range_end() outside the page table lock. This is true even
        if the thread doing the page table update is preempted right after releasing page
        table lock but before call mmu_notifier_invalidate_range_end()": until the
        invalidation's end returned for the driver (a range of its mm covering the page
        still open, or its end still running for ``drv``), or (v2008) the driver's own
        invalidate_page / change_pte of it (:meth:`_notifying`). Whether such a write is
        lost or seen by someone it must not be (a fork's child, a writeback that already
        copied the page) is the data model's to judge."""
        if self._notifying(drv, page):
            return True
        for r in self.ending(drv):
            if r.start <= page < r.end:
                return True
        for r in self._open_list(drv.mm):
            if r.start <= page < r.end:
                return True
        return False

    def _notifying(self, drv, page: int) -> bool:
        """Is one of ``drv``'s own notifications of ``page`` still running: v2008
        ``invalidate_page`` or ``change_pte`` of it, or an ``invalidate_range_start`` of a
        range containing it? Until that returns the driver may still use its old mapping
        (2.6.27 include/linux/mmu_notifier.h, invalidate_page: "Before this is invoked any
        secondary MMU is still ok to read/write to the page previously pointed to by the Linux
        pte because the page hasn't been freed yet"; KSM write-protects with
        set_pte_at_notify, which in 2.6.32..3.6 sets the PTE first and calls ``change_pte``
        after, under the PT lock (3.7+ calls ``change_pte`` first, "sets the pte _after_
        running the notifier", inside a start/end), and compares the contents only after):
        such a write is ordered before the write-protect, not ``WriteToReadOnly``;
        the data model still decides whether its value was lost. A few spans per driver at
        most: no per-page work."""
        for s, e in self.spans(drv):
            if s <= page < e:
                return True
        return False

    def _find_mm(self, mm_id):
        for mm in self.sim.memory.mms:
            if mm.id == mm_id:
                self._mms[mm_id] = mm
                return mm
        return None

    # ------------------------------------------------------------------ secondary structures
    def secondary_map(self, drv, va, pfn, writable):
        super().secondary_map(drv, va, pfn, writable)     # MapInWindow
        self._check_map(drv, va, int(pfn), bool(writable))
        self._drvs[id(drv)] = drv
        m = self.maps.get(id(drv))
        if m is None:
            m = self.maps[id(drv)] = SecondaryMap()
        pfn = int(pfn)
        frames = self._frames()
        gen = int(frames.generation[pfn]) if 0 <= pfn < len(frames.generation) else -1
        m.add(va >> PAGE_SHIFT, pfn, gen, bool(writable))

    def _check_map(self, drv, va: int, pfn: int, writable: bool) -> None:
        """The rule a new secondary mapping must satisfy when it is made, not only at
        quiescence: it translates to the frame the primary PTE maps there now, and it is
        writable only if that PTE is ("the secondary MMU must not have a more permissive
        mapping than the primary": include/linux/mmu_notifier.h, invalidate_range_start, and
        Documentation/mm/mmu_notifier.rst). Not judged while a change of that page may still
        be on its way to this driver: inside an open range of the mm (a window is
        ``MapInWindow``), in a range whose end has begun but not yet returned for this driver
        (it may still drop the mapping there: XPMEM unmaps and unpins only in end), while
        one of the driver's own notifications of the page runs, while the PTE is a migration
        entry (the page's final PTE comes with the migration's end), or between a v2008
        single-page path clearing the PTE (``pte_cleared``) and this driver's
        ``invalidate_page`` / ``change_pte`` of it returning ("the page is still referenced"
        until it returns, 2.6.27 mmu_notifier.h; under the PT lock or, 3.7..4.10, after it)."""
        mm = drv.mm
        if not _alive(mm) or self.window_at(drv, va) is not None:
            return
        pte = int(mm.pt.lookup(va >> PAGE_SHIFT))
        if pte & PTE_MIGRATION:
            return   # the page is migrating: its final PTE comes with the migration's end
            #          (dmirror maps the destination between migrate_vma_pages and _finalize)
        # a device may map its own device-private page and the page it holds exclusive,
        # which the primary keeps as non-present device entries
        present = bool(pte & (PTE_PRESENT | PTE_DEVICE))
        same = present and pte_pfn(pte) == pfn
        if same and (not writable or pte & PTE_WRITE):
            return
        if any(r.start <= va < r.end for r in self._open_list(mm)) or self._notifying(drv, va) \
                or any(r.start <= va < r.end for r in self.ending(drv)) \
                or (id(drv), va) in self._page_pending:
            return
        where = call_site()
        if same:
            what = ("writable, but the primary PTE is read-only (write-protected for COW, "
                    "mprotect or page_mkclean): a write fault must get the page for write "
                    "(FOLL_WRITE breaks COW) and map writable only if the primary PTE is")
        else:
            now = f"frame {pte_pfn(pte)}" if present else "nothing"
            what = (f"but the primary maps {now} there now: the fault's snapshot of the "
                    "primary is stale (an invalidation ran since it was taken: check the "
                    "sequence, or the in-progress count, under the driver lock before "
                    "installing)")
        self._report(
            "StaleMapping", (id(drv), va, pfn, "map", self.sim.steps),
            f"{drv.name} mapped {va:#x} -> frame {pfn} at {where} {what}", address=va,
            frames=(pfn,), driver=drv.name, where=where,
            reason="writable over read-only" if same else "stale when made")

    # ------------------------------------------------------------------ what drivers take
    def gup(self, mm, va, pfn, write, how):
        self.taken.took(mm, pfn, how)

    def gup_release(self, mm, pfn, how):
        self.taken.gave(mm, pfn, how)

    def interval_insert(self, mm, isub):
        self.taken.inserted(mm, isub)

    def interval_remove(self, mm, isub):
        self.taken.removed(mm, isub)

    def notifier_register(self, mm, sub):
        super().notifier_register(mm, sub)
        self.taken.registered(mm, sub)

    def check_leaks(self) -> list:
        """After every device was closed: report as ``Leak`` each page reference, interval
        notifier and registration a driver still holds (:mod:`smmu.oracle.leaks`); returns
        ``[(what, message)]``."""
        out = []
        for what, key, message, details in self.taken.leaks():
            self._report("Leak", (what,) + key, message, stop=False, **details)
            out.append((what, message))
        return out

    def pte_cleared(self, mm, va, hook):
        """A v2008 single-page path cleared the PTE of ``va`` and calls ``hook`` next: until
        each subscriber's call returns, its mapping of the old page is still allowed."""
        if hook is None:
            return
        page = va - va % PAGE_SIZE
        for sub in mm.notifier_subscriptions.subs:
            if overrides(sub, hook) or (hook == "change_pte" and
                                        overrides(sub, "invalidate_page")):
                self._page_pending.add((id(sub), page))

    def hook_exit(self, sub, hook, args, span):
        super().hook_exit(sub, hook, args, span)
        if span is not None and hook in ("invalidate_page", "change_pte"):
            self._page_pending.discard((id(sub), span[0]))

    def secondary_unmap(self, drv, start, end):
        m = self.maps.get(id(drv))
        if m is not None:
            m.remove_range(start >> PAGE_SHIFT, -(-end // PAGE_SIZE))

    # ------------------------------------------------------------------ MM events
    def _range_keys(self, table: dict, vpn0: int, vpn1: int) -> list:
        if vpn1 - vpn0 <= len(table):
            return [v for v in range(vpn0, vpn1) if v in table]
        return [v for v in table if vpn0 <= v < vpn1]

    def fork_copy(self, parent, child, start, end):
        self._mms[parent.id] = parent
        self._mms[child.id] = child
        src = self.cells.get(parent.id)
        if not src:
            return
        dst = self.cells.setdefault(child.id, {})
        for v in self._range_keys(src, start >> PAGE_SHIFT, -(-end // PAGE_SIZE)):
            dst[v] = src[v].copy()

    def _discard_window(self, drv, vpn: int) -> tuple:
        """The ranges of the discard of ``vpn`` in ``drv.mm`` that is still in flight for
        ``drv`` (a range of it open, or its end not yet returned for ``drv``), else ``()``.
        Until then the old page (the ghost of its cell, if the model had one) may still be
        used by the device: the 2008 header, "may still be referenced by sptes until the last
        refcount is dropped". Covers pages the model never saw written (no cell, so no ghost
        from the discard): a device that pinned one before the zap may map and write it until
        its own hook drops it (XPMEM, found by load-small); no mm can observe that write.

        A ghost counts only while the discard that made it is in flight: a ghost left by an
        earlier discard of the page says nothing about the page faulted in since (seen as a
        false StaleRead: a device write while an unrelated v2008 ``invalidate_page`` of the
        page ran, by reclaim, went to the ghost of a DONTNEED long over and the write was
        missing from the model)."""
        mm = drv.mm
        ghost = self._ghost.get((mm.id, vpn))
        if ghost is not None and any(self._live(r, mm, drv) for r in ghost[1]):
            return ghost[1]
        for v0, v1, rngs in self._discarding.get(mm.id, ()):
            if v0 <= vpn < v1 and any(self._live(r, mm, drv) for r in rngs):
                return rngs
        return ()

    def _live(self, rng, mm, drv=None) -> bool:
        """Is ``rng`` of ``mm`` still in flight: open, or its end not yet returned for
        ``drv`` (for any subscription of ``mm`` when ``drv`` is None)?"""
        if rng in self._open_list(mm):
            return True
        drvs = (drv,) if drv is not None else mm.notifier_subscriptions.subs
        return any(rng in self.ending(d) for d in drvs)

    def _note_discarding(self, mm, vpn0: int, vpn1: int) -> tuple:
        """Remember a discard made inside open ranges (``_zap``: between start and end),
        dropping the markers whose ranges have ended for every driver (and the ghosts of
        those discards). Returns the open ranges covering the discard."""
        start, end = vpn0 << PAGE_SHIFT, vpn1 << PAGE_SHIFT
        covering = tuple(r for r in self._open_list(mm)
                         if r.start <= start and end <= r.end)
        marks = [m for m in self._discarding.get(mm.id, ())
                 if any(self._live(r, mm) for r in m[2])]
        if covering:
            marks.append((vpn0, vpn1, covering))
        if marks or mm.id in self._discarding:
            self._discarding[mm.id] = marks
        return covering

    def discard(self, mm, start, end):
        covering = self._note_discarding(mm, start >> PAGE_SHIFT, -(-end // PAGE_SIZE))
        cells = self.cells.get(mm.id)
        if not cells:
            return
        keys = self._range_keys(cells, start >> PAGE_SHIFT, -(-end // PAGE_SIZE))
        if not keys:
            return
        # munmap / DONTNEED / exit clear the PTEs before telling us; MADV_FREE leaves them
        # mapped (lazily freeable: reclaim may drop a clean page later, reading 0 then)
        ptes = mm.pt.walk(np.asarray(keys, dtype=np.int64))
        kept = (ptes & np.uint64(PTE_PRESENT)) != 0
        task, step = self._where()
        for v, k in zip(keys, kept.tolist()):
            if k:
                c = cells[v].copy()
                c.lazy, c.step, c.task = True, step, task
                cells[v] = c
            elif covering:
                self._ghost[(mm.id, v)] = (cells.pop(v), covering)
            else:
                del cells[v]

    def move(self, mm, old_start, new_start, length):
        cells = self.cells.get(mm.id)
        if not cells:
            return
        o0 = old_start >> PAGE_SHIFT
        n = -(-length // PAGE_SIZE)
        d = (new_start >> PAGE_SHIFT) - o0
        moved = {v + d: cells.pop(v) for v in self._range_keys(cells, o0, o0 + n)}
        for v in self._range_keys(cells, o0 + d, o0 + d + n):
            del cells[v]
        cells.update(moved)

    def file_truncate(self, file, npages):
        snap = self._file_init.get(id(file))
        if snap is not None and len(snap) > npages:   # pages past EOF read as zeros if regrown
            self._file_init[id(file)] = snap[:npages].copy()
        cells = self.objects.get(id(file))
        if cells:
            for p in [p for p in cells if p >= npages]:
                del cells[p]
        # unmap_mapping_range zaps private COW copies of the pages past EOF too
        for mm in list(self._mms.values()):
            priv = self.cells.get(mm.id)
            if not priv:
                continue
            for vma in self._vmas(mm):
                if vma.file is not file or vma.shared:
                    continue
                first = vma.start + max(0, npages - int(vma.pgoff)) * PAGE_SIZE
                if first < vma.end:
                    for v in self._range_keys(priv, first >> PAGE_SHIFT,
                                              vma.end >> PAGE_SHIFT):
                        del priv[v]

    # ------------------------------------------------------------------ structural scan
    def scan(self, final: bool = False) -> list:
        """Run the structural scan for every declared driver: one kernel call each. Mid-run
        (``final=False``) only translations of freed frames count; at quiescence every stale
        translation of a registered driver on a live mm does. Reports ``StaleMapping`` and
        returns ``[(driver, va, pfn, reason)]``."""
        self.scans += 1
        frames = self._frames()
        out = []
        for key, m in self.maps.items():
            if m.n == 0 or not m.slot:
                continue
            drv = self._drvs[key]
            mm = drv.mm
            if not drv.registered or not _alive(mm):
                continue
            pt = mm.pt
            n = m.n
            ptes = np.empty(n, dtype=np.uint64)
            idx = np.empty(n, dtype=np.int64)
            why = np.empty(n, dtype=np.int64)
            cnt = scan_secondary(pt.pool.nodes, pt.root, m.vpns, m.pfns, m.gens, m.writable, n,
                                 frames.generation, ptes, idx, why)
            for i, w in zip(idx[:cnt].tolist(), why[:cnt].tolist()):
                if not final and w != STALE_FREED:
                    continue
                va = int(m.vpns[i]) << PAGE_SHIFT
                pfn = int(m.pfns[i])
                out.append((drv, va, pfn, STALE_REASONS[w]))
                pte = int(ptes[i])
                now = f"frame {pte_pfn(pte)}" if pte & PTE_PRESENT else "nothing"
                self._report(
                    "StaleMapping", (key, va, pfn, int(m.gens[i])),
                    f"{drv.name} still translates {va:#x} -> frame {pfn} but {STALE_REASONS[w]}"
                    f" (the primary maps {now} there)",
                    stop=False, address=va, frames=(pfn,),
                    driver=drv.name, reason=STALE_REASONS[w])
        return out

    # ------------------------------------------------------------------ end of run
    def quiesce(self):
        sim = self.sim
        if sim.stopped or any(not t.done for t in sim.tasks):
            return  # the run did not finish: end-of-run rules do not apply
        mms = list(sim.memory.mms)
        for mm in mms:
            self._mms[mm.id] = mm
        for mm in mms:
            if not _alive(mm):
                continue
            for rng in self.open_ranges(mm):
                self._report("UnpairedRange", (mm.id, repr(rng)),
                             f"{rng!r} of {mm.name} was started but never "
                             "ended: every invalidate_range_start must be paired with "
                             "invalidate_range_end on every path, error paths included",
                             stop=False, address=rng.start)
            for sub, ranges in self.unpaired(mm):
                self._report("UnpairedRange", (mm.id, id(sub)),
                             f"{sub.name} on {mm.name} saw "
                             f"invalidate_range_start of {ranges!r} without the matching "
                             "invalidate_range_end: the driver will keep refusing to map "
                             "(or retry forever)", stop=False,
                             address=ranges[0].start if ranges else None)
        self.scan(final=True)
        for mm in mms:
            if _alive(mm):
                self._verify_mm(mm)

    def _verify_mm(self, mm):
        """Compare every model cell visible in ``mm`` with the primary's memory, in a batch:
        one kernel call walks the page table and compares the present pages
        (:func:`~smmu.oracle.scan.verify_cells`), ``mm.peek`` only for the others."""
        vas, cells = [], []
        for vpn, cell in (self.cells.get(mm.id) or {}).items():
            vas.append(vpn << PAGE_SHIFT)
            cells.append(cell)
        for vma in self._vmas(mm):
            shared = bool(vma.shared)
            if not shared and vma.file is None:
                continue
            objc = self.objects.get(id(_backing(vma)))
            if not objc:
                continue
            pg0 = int(vma.pgoff)
            npg = (vma.end - vma.start) >> PAGE_SHIFT
            priv = self.cells.get(mm.id) or {}
            for p in self._range_keys(objc, pg0, pg0 + npg):
                va = vma.start + ((p - pg0) << PAGE_SHIFT)
                if not shared and (va >> PAGE_SHIFT) in priv:
                    continue
                vas.append(va)
                cells.append(objc[p])
        if not vas:
            return
        n = len(vas)
        contents = self._frames().contents
        if n <= VERIFY_SMALL:
            # a few cells: the kernel's pure-Python reference (the same comparison; tests
            # keep the two equal) costs less than making the kernel's arrays
            lookup = mm.pt.lookup
            diff = verify_cells_ref(lookup, [va >> PAGE_SHIFT for va in vas],
                                    [c.value for c in cells], [c.lazy for c in cells], contents)
            ptes = {i: lookup(vas[i] >> PAGE_SHIFT) for i in diff}
        else:
            # one kernel call: walk, read and compare every cell (verify_cells)
            vpns = np.fromiter((va >> PAGE_SHIFT for va in vas), dtype=np.int64, count=n)
            # page values are 64-bit unsigned (mm.write masks to 2**64 - 1): uint64 throughout
            expect = np.fromiter((c.value for c in cells), dtype=np.uint64, count=n)
            lazy = np.fromiter((c.lazy for c in cells), dtype=np.bool_, count=n)
            ptes = np.empty(n, dtype=np.uint64)
            idx = np.empty(n, dtype=np.int64)
            cnt = verify_cells(mm.pt.pool.nodes, mm.pt.root, vpns, expect, lazy, contents,
                               ptes, idx)
            diff = idx[:cnt].tolist()
        for i in diff:
            va = vas[i]
            pte = int(ptes[i])
            present = bool(pte & PTE_PRESENT)
            pfn = pte_pfn(pte)
            if present:
                value = int(contents[pfn])
            else:
                if mm.vma_at(va) is None:
                    continue
                value = mm.peek(va)
                if value is None or cells[i].matches(int(value)):
                    continue
                value = int(value)
            c = cells[i]
            if c.resynced:
                continue
            who = ("a device write that no later read saw" if c.device else "a CPU write")
            why = (" (the device wrote a frame the primary no longer maps: drop or "
                   "write-protect the translation when notified, and mark the page dirty)"
                   if c.device else "")
            dw = self._frame_dev_write.get(pfn) if present else None
            if dw is not None and dw[2] == value and dw[1] >= c.step:
                who = "it"
                why = (f" when {dw[0]} overwrote it at step {dw[1]} with {dw[2]} "
                       f"through its translation of {dw[3]:#x}, a stale one that reached this "
                       "page: the driver must drop translations when notified")
            self._report(
                "LostWrite", (mm.id, va, c.step),
                f"at the end of the run {va:#x} of {mm.name} holds {value} but "
                f"the last write there was {c.describe()}: {who} was lost" + why,
                stop=False, address=va, frames=(pfn,) if present else (),
                writer=c.writer, write_step=c.step, value=c.value, found=value)

    @staticmethod
    def _vmas(mm):
        return list(mm.vmas)
