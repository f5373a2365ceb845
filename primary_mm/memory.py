"""``Memory``: the machine-wide part of the primary MM and the system-wide operations.

It owns the frame table, the page-table node pool, swap, files and page cache, the zero
page, and the per-frame reverse-map fields (``page->mapping`` / ``page->index``, kept as
numpy arrays beside the frame table). The system-wide operations (reclaim, writeback,
migrate, ksm_merge, truncate, oom_reap) are generators like the per-process ones; each calls
the notifier hooks at the Linux call sites for the selected ``notifier_api``.

Options (keywords):

``invalidate_page_outside_ptl``  v2008: call ``invalidate_page`` after dropping the PT lock in
                                 ``do_wp_page``, ``try_to_unmap_one`` and ``page_mkclean_one``
                                 (the pre-2017 window, fixed by c7ab0d2fdc84)
``fork_copies_pinned``           5.9+: fork gives the child a copy of maybe-DMA-pinned pages
``nonblock_fail_calls_end``      the 2021 fix c2655835fd8c (passed to the notifier chain)
``fork_enomem_bug``              the unfixed 2008 ``copy_page_range``: -ENOMEM after start,
                                 without end
``cow_reuse``                    ``"page_count"`` (modern, CVE-2020-29374 fix) or
                                 ``"mapcount"`` (the older rule)

The Simulator passes the first three; set the others on ``sim.memory`` (e.g.
``sim.memory.fork_enomem_bug = True``) before running.

Known simplifications: KSM and zero pages are never reclaimed or migrated; migration entries
and swap-ins come back read-only (a write fault restores write access); truncate's zap uses
Event.CLEAR as modern ``zap_page_range_single`` does.
"""

from __future__ import annotations

import itertools

import numpy as np
import structlog

from primary_mm.filemap import File
from primary_mm.frames import (FRAME_ANON, FRAME_DIRTY, FRAME_FILE, FRAME_KSM, FRAME_LOCKED,
                               FRAME_SWAPCACHE, FRAME_ZERO, NO_OWNER, FrameTable)
from primary_mm.mm import MM
from smmu.base.pte import PTE_MAPPED, PTE_PROTNONE, mapped_pfns, mk_pte, pte_pfn, swap_slots
from primary_mm.pagetable import PageTable, PageTablePool
from primary_mm.rmap import AnonVma, KsmStable, grab_anon_vma, put_anon_vma
from primary_mm.swap import SwapSpace
from smmu.base.constants import PAGE_SHIFT, PAGE_SIZE
from smmu.base.pte import (PTE_DIRTY, PTE_MIGRATION, PTE_PRESENT, PTE_SPECIAL, PTE_SWAP, PTE_WRITE,
                           PTE_YOUNG)
from smmu.base.errors import InvalidArgument, UsageError
from smmu.notifier import Event

log = structlog.get_logger("smmu")

#: PG_lazyfree (MADV_FREE): clean anonymous page that reclaim may drop instead of swapping
FRAME_LAZYFREE = 1 << 16

COW_REUSE = ("page_count", "mapcount")


class Memory:
    """System-wide primary-MM state. ``sim.memory``; built by :class:`smmu.Simulator`."""

    FRAME_LAZYFREE = FRAME_LAZYFREE

    def __init__(self, sched, notifier_api: str = "modern", rmap_locks: str = "rwsem",
                 nframes: int = 4096, invalidate_page_outside_ptl: bool = False,
                 fork_copies_pinned: bool = False, nonblock_fail_calls_end: bool = True,
                 fork_enomem_bug: bool = False, cow_reuse: str = "page_count"):
        if cow_reuse not in COW_REUSE:
            raise UsageError(f"unknown cow_reuse {cow_reuse!r}: use one of {list(COW_REUSE)}")
        self.sched = sched
        self.api = notifier_api
        self.rmap_locks = rmap_locks
        self.invalidate_page_outside_ptl = invalidate_page_outside_ptl
        self.fork_copies_pinned = fork_copies_pinned
        self.nonblock_fail_calls_end = nonblock_fail_calls_end
        self.fork_enomem_bug = fork_enomem_bug
        self.cow_reuse = cow_reuse
        self.frames = FrameTable(nframes)
        self.pool = PageTablePool(64)
        self.swap = SwapSpace(self.frames)
        self.mms: list[MM] = []
        self.files: list[File] = []
        self._ids = itertools.count(1)
        # page->mapping / page->index, beside the frame table
        self._pg_mapping = np.zeros(self.frames.nframes, dtype=np.int64)
        self._pg_index = np.zeros(self.frames.nframes, dtype=np.int64)
        self._mapping_objs: dict[int, object] = {}
        self.migration_wq = sched.waitqueue("migration_wq")
        self.page_wq = sched.waitqueue("page_lock_wq")
        self.ksm_stable: dict[int, tuple[int, int]] = {}   # value -> (pfn, generation)
        # the shared zero page: never freed, never written
        self.zero_pfn = self.frames.alloc_one(owner=NO_OWNER, flags=FRAME_ZERO, zero=True)

    def __repr__(self):
        return (f"<Memory api={self.api} rmap_locks={self.rmap_locks} {len(self.mms)} mms, "
                f"{len(self.files)} files, {self.frames!r}, {self.swap!r}>")

    # ================================================================== objects
    def new_page_table(self) -> PageTable:
        return PageTable(self.pool)

    def _new_mm(self, name=None) -> MM:
        mm = MM(self, next(self._ids), name)
        self.mms.append(mm)
        return mm

    def new_process(self, name: str | None = None) -> MM:
        """A new, empty address space."""
        if name is not None and not isinstance(name, str):
            raise InvalidArgument(f"process name must be a string, got {name!r}")
        return self._new_mm(name)

    def new_file(self, name: str, npages: int, fill=None) -> File:
        """A file of ``npages`` pages; ``fill`` is an int (every page) or ``fill(i)``."""
        if not isinstance(name, str):
            raise InvalidArgument(f"file name must be a string, got {name!r}")
        if not isinstance(npages, (int, np.integer)) or npages < 0:
            raise InvalidArgument(f"new_file: npages must be an integer >= 0, got {npages!r}")
        if fill is not None and not callable(fill) and not isinstance(fill, (int, np.integer)):
            raise InvalidArgument("new_file: fill must be an int or a function of the page "
                                  "index")
        f = File(self, name, int(npages), fill)
        self.files.append(f)
        return f

    def release_shmem(self, file: File) -> None:
        """``shmem_evict_inode``: the last mapping of a shmem file is gone; free its pages."""
        pfns = list(file.cache.values())
        file.cache.clear()
        if pfns:
            pf = np.array(pfns, dtype=np.int64)
            self.frames.clear_flags(pf, FRAME_DIRTY)
            self.frames.put(pf)
        if file in self.files:
            self.files.remove(file)

    def _check_mm(self, mm, op):
        if not isinstance(mm, MM) or mm.memory is not self:
            raise UsageError(f"{op}: {mm!r} is not a process of this simulator")
        mm._alive()

    def _check_file(self, file, op):
        if not isinstance(file, File) or file.memory is not self:
            raise UsageError(f"{op}: {file!r} is not a file of this simulator: make it with "
                             "sim.new_file(name, npages)")

    def check_ref(self, pfn, op) -> int:
        try:
            pfn = int(pfn)
        except (TypeError, ValueError):
            raise InvalidArgument(f"{op}: {pfn!r} is not a pfn") from None
        if not 0 < pfn < self.frames.nframes or int(self.frames.refcount[pfn]) <= 0:
            raise InvalidArgument(f"{op}({pfn}): no such allocated frame (freed already? a "
                                  "reference put twice?)")
        return pfn

    # ================================================================== page->mapping
    def _grow_page_arrays(self):
        n = self.frames.nframes
        if self._pg_mapping.shape[0] < n:
            for name in ("_pg_mapping", "_pg_index"):
                a = getattr(self, name)
                b = np.zeros(n, dtype=a.dtype)
                b[: a.shape[0]] = a
                setattr(self, name, b)

    def set_page_mapping(self, pfns, mapping, index) -> None:
        """``page->mapping = mapping; page->index = index`` (arrays or scalars)."""
        self._grow_page_arrays()
        self._mapping_objs[mapping.id] = mapping
        self._pg_mapping[pfns] = mapping.id
        self._pg_index[pfns] = index

    def page_mapping(self, pfn: int):
        """``(mapping, index)`` of a page (None if unknown)."""
        self._grow_page_arrays()
        return self._mapping_objs.get(int(self._pg_mapping[pfn])), int(self._pg_index[pfn])

    # ================================================================== page cache, locks
    def filemap_get_page(self, file: File, pgoff: int) -> int:
        """``find_get_page`` or read the page in (``filemap_fault`` / ``shmem_fault``)."""
        pfn = file.cache.get(pgoff)
        if pfn is None:
            pfn = self.frames.alloc_one(owner=NO_OWNER, flags=FRAME_FILE, zero=False)
            self.frames.contents[pfn] = file.contents[pgoff]
            file.cache[pgoff] = pfn
            self.set_page_mapping(pfn, file.mapping, pgoff)
        return pfn

    def lock_page(self, pfn):
        """``lock_page`` (may sleep)."""
        flags = self.frames.flags
        yield self.page_wq.wait_until(lambda: not int(flags[pfn]) & FRAME_LOCKED)
        self.frames.set_flags(pfn, FRAME_LOCKED)

    def trylock_page(self, pfn) -> bool:
        if self.frames.test_flags(pfn, FRAME_LOCKED):
            return False
        self.frames.set_flags(pfn, FRAME_LOCKED)
        return True

    def unlock_page(self, pfn):
        self.frames.clear_flags(pfn, FRAME_LOCKED)
        self.page_wq.wake_all()

    # ================================================================== freeing
    def release_entries(self, ptes: np.ndarray) -> None:
        """Drop what cleared entries held, in batches (``zap_pte_range`` bookkeeping +
        ``tlb_finish_mmu``): mapcount and reference of each mapped page (dirty file pages
        marked dirty first), the swap count of each swap entry."""
        if not len(ptes):
            return
        f = self.frames
        pfns = mapped_pfns(ptes)
        if len(pfns):
            m = ((ptes & np.uint64(PTE_MAPPED)) != 0) & \
                ((ptes & np.uint64(PTE_SPECIAL | PTE_SWAP | PTE_MIGRATION)) == 0)
            dirty = (ptes[m] & np.uint64(PTE_DIRTY)) != 0
            dp = pfns[dirty]
            dp = dp[(f.flags[dp] & FRAME_FILE) != 0]
            if len(dp):
                f.set_flags(dp, FRAME_DIRTY)               # set_page_dirty
            f.dec_mapcount(pfns)                           # page_remove_rmap
            self.swap.free_swap_cache(pfns)                # free_pages_and_swap_cache
            f.put(pfns)
        slots = swap_slots(ptes)
        if len(slots):
            self.swap.free(slots)                          # free_swap_and_cache

    # ================================================================== rmap walks
    def _rmap_lock(self, mapping):
        return getattr(mapping, "lock", None)

    def _walk_mappings(self, pfn, mapping, index, one):
        """``rmap_walk``: under the mapping's lock (read side), call generator ``one(vma, va)``
        for every VMA where page ``index`` may be mapped. Returns how many returned True."""
        grabbed = None
        if isinstance(mapping, AnonVma):
            grabbed = grab_anon_vma(mapping)           # seed patch 09
            if grabbed is None:
                return 0
        lk = self._rmap_lock(mapping)
        n = 0
        try:
            if lk is not None:
                yield from lk.lock_read()
            try:
                for vma, va in mapping.mappings(index):
                    if (yield from one(vma, va)):
                        n += 1
            finally:
                if lk is not None:
                    lk.unlock_read()
        finally:
            if grabbed is not None:
                put_anon_vma(grabbed)
        return n

    @staticmethod
    def _maps(pte, pfn) -> bool:
        return bool(pte & PTE_MAPPED) and not pte & PTE_SPECIAL and pte_pfn(pte) == pfn

    def _page_referenced(self, pfn, mapping, index):
        """``page_referenced`` -> ``page_referenced_one``: ``ptep_clear_flush_young_notify``
        (the PTE's young bit plus ``mmu_notifier_clear_flush_young`` for one page) under
        the PT lock of each mapping."""
        def one(vma, va):
            mm = vma.mm
            vpn = va >> PAGE_SHIFT
            yield mm.page_table_lock
            try:
                if not self._maps(mm.pt.lookup(vpn), pfn):
                    return False
                return (yield from mm._young_under_ptl(va))
            finally:
                mm.page_table_lock.release()
        return (yield from self._walk_mappings(pfn, mapping, index, one)) > 0

    def _try_to_unmap(self, pfn, mapping, index, make, event, owner=None, outside_ok=True,
                      young_fails=False):
        """``try_to_unmap`` -> ``try_to_unmap_one`` for each mapping: the entry becomes
        ``make(old)``; v2008 ``invalidate_page`` (via ``ptep_clear_flush_notify``), else a
        one-page start/end. The mapping's reference is dropped after the notifier."""
        frames = self.frames

        def one(vma, va):
            mm = vma.mm

            def after(old, new):
                frames.dec_mapcount(pfn)                   # page_remove_rmap
                if new & PTE_SWAP:
                    self.swap.count[pte_pfn(new)] += 1     # swap_duplicate
                if old & PTE_DIRTY and frames.test_flags(pfn, FRAME_FILE):
                    frames.set_flags(pfn, FRAME_DIRTY)

            old = yield from mm._pte_replace(va, lambda p: self._maps(p, pfn),
                                             lambda p: make(vma, p), event, owner=owner,
                                             after=after, outside_ok=outside_ok,
                                             young_fails=young_fails)
            if old is None:
                return False
            frames.put(pfn)                                # page_cache_release(page)
            return True
        return (yield from self._walk_mappings(pfn, mapping, index, one))

    def _remove_migration_ptes(self, old, new, mapping, index):
        """``remove_migration_ptes``: migration entries for ``old`` become present PTEs of
        ``new`` (read-only: a write fault restores write access)."""
        frames = self.frames
        entry = mk_pte(old, PTE_MIGRATION)

        def one(vma, va):
            mm = vma.mm
            vpn = va >> PAGE_SHIFT
            yield mm.page_table_lock
            try:
                if mm.pt.lookup(vpn) != entry:
                    return False
                bits = (PTE_PRESENT | PTE_YOUNG) if vma.readable else PTE_PROTNONE
                mm.pt.set(vpn, mk_pte(new, bits))
                frames.get(new)
                frames.inc_mapcount(new)
                return True
            finally:
                mm.page_table_lock.release()
        n = yield from self._walk_mappings(old, mapping, index, one)
        self.migration_wq.wake_all()
        return n

    def _range_pages(self, mm, addr, length, op):
        start, end = mm._check_range(addr, length, op)
        _vpns, ptes = mm.pt.iter_present(start >> PAGE_SHIFT, end >> PAGE_SHIFT)
        pfns = mapped_pfns(ptes)
        _u, first = np.unique(pfns, return_index=True)
        return pfns[np.sort(first)].tolist()

    # ================================================================== reclaim
    def reclaim(self, mm, addr, length, force=False):
        """``shrink_page_list`` over the pages mapped in ``[addr, addr + length)`` of ``mm``:
        ``page_referenced`` (a referenced page is kept unless ``force``), ``try_to_unmap``
        (anonymous pages get swap entries; file pages are dropped, written back first if
        dirty), then the page is written out and freed if nothing else holds it (a page
        with extra references stays in the swap cache / page cache). Returns the number of
        pages freed. KSM and zero pages are skipped."""
        self._check_mm(mm, "reclaim")
        pages = self._range_pages(mm, addr, length, "reclaim")
        freed = 0
        frames = self.frames
        for pfn in pages:
            yield
            if frames.refcount[pfn] <= 0 or frames.flags[pfn] & (FRAME_KSM | FRAME_ZERO) or \
                    not frames.flags[pfn] & (FRAME_ANON | FRAME_FILE):
                continue
            if not self.trylock_page(pfn):                 # trylock_page: skip busy pages
                continue
            frames.get(pfn)                                # isolate_lru_page
            try:
                if (yield from self._shrink_page(pfn, force)):
                    freed += 1
            finally:
                self.unlock_page(pfn)
                frames.put(pfn)
        self.sched.stats["reclaimed"] += freed
        return freed

    def _shrink_page(self, pfn, force):
        frames = self.frames
        swap = self.swap
        mapping, index = self.page_mapping(pfn)
        if mapping is None:
            return False
        if not force and (yield from self._page_referenced(pfn, mapping, index)):
            return False
        anon = frames.test_flags(pfn, FRAME_ANON)
        if anon:
            slot = swap.slot_of.get(pfn)
            if slot is None:                               # add_to_swap
                slot = swap.alloc()
                swap.add_to_swap_cache(slot, pfn)

            def make(vma, old):
                if frames.test_flags(pfn, FRAME_LAZYFREE) and not old & PTE_DIRTY:
                    return 0                               # MADV_FREE page still clean: drop
                frames.clear_flags(pfn, FRAME_LAZYFREE)
                return mk_pte(slot, PTE_SWAP)
        else:
            def make(vma, old):
                return 0
        # 2.6.27 try_to_unmap_one re-checked the young bit (ptep_clear_flush_young_notify)
        # and kept a page referenced meanwhile; modern try_to_unmap_one does not
        young_fails = not force and self.api != "modern"
        yield from self._try_to_unmap(pfn, mapping, index, make, Event.CLEAR,
                                      young_fails=young_fails)
        if anon:
            if swap.count[slot] == 0:
                swap.delete_from_swap_cache(slot)          # nothing refers to the slot
            elif frames.mapcount[pfn] == 0 and frames.refcount[pfn] == 2:
                swap.contents[slot] = frames.contents[pfn]  # pageout -> swap_writepage
                swap.writes += 1
                self.sched.charge("swap_io")
                yield
                if frames.mapcount[pfn] == 0 and frames.refcount[pfn] == 2 and \
                        swap.page[slot] == pfn:
                    swap.contents[slot] = frames.contents[pfn]
                    swap.delete_from_swap_cache(slot)      # __remove_mapping
            return frames.refcount[pfn] == 1 and frames.mapcount[pfn] == 0
        file = mapping.file
        if frames.mapcount[pfn] != 0 or frames.refcount[pfn] != 2 or \
                file.cache.get(index) != pfn:
            return False
        if frames.test_flags(pfn, FRAME_DIRTY):           # pageout -> writepage
            file.contents[index] = frames.contents[pfn]
            frames.clear_flags(pfn, FRAME_DIRTY)
            file.writebacks += 1
            self.sched.charge("writeback_io")
            yield
            if frames.mapcount[pfn] != 0 or frames.refcount[pfn] != 2 or \
                    frames.test_flags(pfn, FRAME_DIRTY):
                return False
        del file.cache[index]                              # __remove_mapping
        frames.put(pfn)
        return True

    # ================================================================== writeback
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
                self.sched.charge("writeback_io")
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
            if mm.api == "v2008":
                def check(p):   # 2.6.27 page_mkclean_one: only if dirty or writable
                    return self._maps(p, pfn) and bool(p & (PTE_DIRTY | PTE_WRITE))
            else:
                def check(p):
                    return self._maps(p, pfn)

            def after(old, new):
                if old & PTE_DIRTY:
                    frames.set_flags(pfn, FRAME_DIRTY)
            old = yield from mm._pte_replace(
                va, check, lambda p: p & ~(PTE_WRITE | PTE_DIRTY), Event.PROTECTION_PAGE,
                after=after)
            return old is not None
        return (yield from self._walk_mappings(pfn, file.mapping, pgoff, one))

    # ================================================================== truncate
    def truncate(self, file, size):
        """``truncate_setsize`` + ``truncate_pagecache``: shrink (or grow) ``file`` to
        ``size`` bytes. Mappings of the pages beyond the new end are zapped
        (``unmap_mapping_range`` over i_mmap: start/end per VMA, CLEAR as in
        ``zap_page_range_single``; private COW copies too) and those pages leave the page
        cache. Later accesses beyond the end raise SegmentationFault (SIGBUS)."""
        self._check_file(file, "truncate")
        try:
            size = int(size)
        except (TypeError, ValueError):
            raise InvalidArgument(f"truncate: size must be an integer, got {size!r}") from None
        if size < 0:
            raise InvalidArgument(f"truncate: size {size} is negative")
        npages = (size + PAGE_SIZE - 1) >> PAGE_SHIFT
        if npages >= file.npages:
            file.resize(npages)
            return
        file.resize(npages)                                # i_size_write first
        lk = file.mapping.lock
        yield from lk.lock_read()
        try:
            for vma in file.mapping.vmas_overlapping(npages, 1 << 62):
                s = vma.address_of(npages) if vma.pgoff < npages else vma.start
                if s is None or vma.mm.exited:
                    continue
                # unmap_mapping_range_vma -> zap_page_range_single
                yield from vma.mm._zap(s, vma.end, Event.CLEAR)
        finally:
            lk.unlock_read()
        self.sched.observer.file_truncate(file, npages)
        frames = self.frames
        for pgoff in sorted(p for p in file.cache if p >= npages):   # truncate_inode_pages
            pfn = file.cache.pop(pgoff)
            frames.clear_flags(pfn, FRAME_DIRTY)
            frames.put(pfn)
        yield

    # ================================================================== migration
    def migrate(self, mm, addr, length, owner=None):
        """Migrate the pages mapped in the range to new frames: lock, unmap with migration
        entries (``try_to_migrate_one``: v2008 ``invalidate_page``; range_only start/end;
        modern start/end MIGRATE with ``owner``), copy, ``remove_migration_ptes``. A page
        with extra references (GUP, pins) is put back unmigrated, as
        ``migrate_page_move_mapping`` refuses it. CPU and GUP accesses meanwhile wait.
        Returns the number of pages migrated."""
        self._check_mm(mm, "migrate")
        pages = self._range_pages(mm, addr, length, "migrate")
        frames = self.frames
        done = 0
        for pfn in pages:
            yield
            if frames.refcount[pfn] <= 0 or frames.flags[pfn] & (FRAME_KSM | FRAME_ZERO) or \
                    not frames.flags[pfn] & (FRAME_ANON | FRAME_FILE):
                continue
            # take the reference before lock_page may sleep, as isolation does with
            # folio_try_get (mm/migrate.c): a page freed while we slept must not be touched
            frames.get(pfn)                                # isolate
            yield from self.lock_page(pfn)
            try:
                # it may have become a KSM page while we slept on the page lock
                if frames.flags[pfn] & (FRAME_KSM | FRAME_ZERO):
                    continue
                if (yield from self._migrate_page(pfn, owner)):
                    done += 1
            finally:
                self.unlock_page(pfn)
                frames.put(pfn)
        self.sched.stats["migrated"] += done
        return done

    def _migrate_page(self, old, owner):
        frames = self.frames
        swap = self.swap
        mapping, index = self.page_mapping(old)
        if mapping is None:
            return False
        keep = int(frames.flags[old]) & ~FRAME_LOCKED & ~FRAME_SWAPCACHE
        new = frames.alloc_one(owner=int(frames.owner[old]), flags=keep, zero=False)
        yield from self._try_to_unmap(old, mapping, index,
                                      lambda vma, p: mk_pte(old, PTE_MIGRATION),
                                      Event.MIGRATE, owner=owner)
        file = getattr(mapping, "file", None)
        slot = swap.slot_of.get(old)
        expected = 1 + (file is not None and file.cache.get(index) == old) + (slot is not None)
        if frames.mapcount[old] != 0 or frames.refcount[old] != expected:
            # migrate_page_move_mapping: -EAGAIN; put the old page back
            yield from self._remove_migration_ptes(old, old, mapping, index)
            frames.put(new)
            return False
        frames.contents[new] = frames.contents[old]        # migrate_page_copy
        self.sched.charge("page_copy")
        yield
        frames.contents[new] = frames.contents[old]
        if file is not None and file.cache.get(index) == old:
            file.cache[index] = new
            frames.get(new)
            frames.put(old)
        if slot is not None:
            swap.page[slot] = new
            del swap.slot_of[old]
            swap.slot_of[new] = slot
            frames.set_flags(new, FRAME_SWAPCACHE)
            frames.clear_flags(old, FRAME_SWAPCACHE)
            frames.get(new)
            frames.put(old)
        self.set_page_mapping(new, mapping, index)
        yield from self._remove_migration_ptes(old, new, mapping, index)
        frames.put(new)                                    # drop the allocation reference
        return True

    # ================================================================== KSM
    def ksm_merge(self, mm, addr, length):
        """Merge identical anonymous pages of the range (and with existing KSM pages):
        ``write_protect_page`` (v2008: ``ptep_clear_flush`` + ``set_pte_at_notify`` ->
        ``change_pte``; otherwise start/end CLEAR), compare, ``replace_page`` (the same
        hooks) with the KSM page, which becomes FRAME_KSM and read-only everywhere.
        Returns the number of pages merged away."""
        self._check_mm(mm, "ksm_merge")
        start, end = mm._check_range(addr, length, "ksm_merge")
        frames = self.frames
        merged = 0
        yield mm.mmap_lock.read()
        try:
            vpns, ptes = mm.pt.iter_present(start >> PAGE_SHIFT, end >> PAGE_SHIFT)
            present = ((ptes & np.uint64(PTE_PRESENT)) != 0) & \
                ((ptes & np.uint64(PTE_SPECIAL)) == 0)
            vpns, ptes = vpns[present], ptes[present]
            pfns = ((ptes >> np.uint64(12)) & np.uint64((1 << 40) - 1)).astype(np.int64)
            ok = ((frames.flags[pfns] & FRAME_ANON) != 0) & \
                ((frames.flags[pfns] & FRAME_KSM) == 0) & (frames.mapcount[pfns] == 1)
            groups: dict[int, list] = {}
            for vpn, pfn in zip(vpns[ok].tolist(), pfns[ok].tolist()):
                groups.setdefault(int(frames.contents[pfn]), []).append((vpn << PAGE_SHIFT, pfn))
            for value, items in groups.items():
                kpage = self._ksm_stable_page(value)
                if kpage is None:
                    if len(items) < 2:
                        continue
                    while items and kpage is None:
                        va, pfn = items.pop(0)
                        if (yield from self._ksm_promote(mm, va, pfn, value)):
                            kpage = pfn
                    if kpage is None:
                        continue
                # hold the KSM page while merging into it (its last mapping may be COWed
                # away meanwhile): try_to_merge_with_ksm_page works on a referenced kpage
                frames.get(kpage)
                try:
                    for va, pfn in items:
                        yield
                        if (yield from self._ksm_merge_one(mm, va, pfn, kpage, value)):
                            merged += 1
                finally:
                    frames.put(kpage)
        finally:
            mm.mmap_lock.up_read()
        self.sched.stats["ksm_merged"] += merged
        return merged

    def _ksm_stable_page(self, value):
        ent = self.ksm_stable.get(value)
        if ent is None:
            return None
        pfn, gen = ent
        f = self.frames
        if f.refcount[pfn] > 0 and int(f.generation[pfn]) == gen and \
                f.flags[pfn] & FRAME_KSM and int(f.contents[pfn]) == value:
            return pfn
        del self.ksm_stable[value]
        return None

    def _ksm_write_protect(self, mm, va, pfn):
        """``write_protect_page``: read-only, and refuse if anyone else holds the page
        (``page_mapcount + 1 + swapcache != page_count``: GUP in flight)."""
        frames = self.frames

        def check(p):
            extra = 1 if frames.test_flags(pfn, FRAME_SWAPCACHE) else 0
            return bool(p & PTE_PRESENT) and pte_pfn(p) == pfn and \
                int(frames.mapcount[pfn]) + 1 + extra == int(frames.refcount[pfn])
        old = yield from mm._pte_replace(va, check, lambda p: p & ~PTE_WRITE, Event.CLEAR,
                                         notify="change_pte", outside_ok=False)
        return old

    def _ksm_promote(self, mm, va, pfn, value):
        frames = self.frames
        if not self.trylock_page(pfn):
            return False
        frames.get(pfn)
        try:
            old = yield from self._ksm_write_protect(mm, va, pfn)
            if old is None or int(frames.contents[pfn]) != value:
                return False
            vma = mm.vma_at(va)
            if vma is None or vma.anon_vma is None:
                return False
            stable = KsmStable(value)
            stable.items.append((vma.anon_vma, vma.linear_page_index(va)))
            frames.set_flags(pfn, FRAME_KSM)
            frames.owner[pfn] = NO_OWNER
            self.set_page_mapping(pfn, stable, vma.linear_page_index(va))
            self.ksm_stable[value] = (pfn, int(frames.generation[pfn]))
            return True
        finally:
            self.unlock_page(pfn)
            frames.put(pfn)

    def _ksm_merge_one(self, mm, va, pfn, kpage, value):
        frames = self.frames
        if not self.trylock_page(pfn):
            return False
        frames.get(pfn)
        try:
            orig = yield from self._ksm_write_protect(mm, va, pfn)
            if orig is None:
                return False
            wp = orig & ~PTE_WRITE
            if int(frames.contents[pfn]) != value or int(frames.contents[kpage]) != value:
                return False                               # pages_identical failed
            vma = mm.vma_at(va)
            if vma is None or vma.anon_vma is None:
                return False

            def after(old, new):
                frames.get(kpage)
                frames.inc_mapcount(kpage)
                frames.dec_mapcount(pfn)                   # page_remove_rmap
            # replace_page
            # never map a KSM page that migration holds locked (its PTEs are being
            # replaced by migration entries right now)
            old = yield from mm._pte_replace(
                va, lambda p: p == wp and not frames.test_flags(kpage, FRAME_LOCKED),
                lambda p: mk_pte(kpage, PTE_PRESENT | PTE_YOUNG),
                Event.CLEAR, notify="change_pte", after=after, outside_ok=False)
            if old is None:
                return False
            frames.put(pfn)                                # put_page(page)
            stable, _ = self.page_mapping(kpage)
            stable.items.append((vma.anon_vma, vma.linear_page_index(va)))
            return True
        finally:
            self.unlock_page(pfn)
            frames.put(pfn)

    # ================================================================== OOM reaper
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

    # ================================================================== checking
    def check_invariants(self) -> list[str]:
        """Cross-checks, as readable strings (empty: all good): the frame table's own
        invariants, each frame's mapcount against the page tables, swap counts against the
        swap entries, references against mappings + pins + caches, the node pool."""
        problems = list(self.frames.check_invariants(strict=True))
        f = self.frames
        n = f.nframes
        all_ptes = [mm.pt.iter_present()[1] for mm in self.mms if not mm.exited]
        ptes = np.concatenate(all_ptes) if all_ptes else np.zeros(0, dtype=np.uint64)
        mapc = np.bincount(mapped_pfns(ptes), minlength=n)[:n]
        bad = np.nonzero(mapc != f.mapcount)[0]
        if len(bad):
            p = int(bad[0])
            problems.append(f"mapcount of pfn {p} is {int(f.mapcount[p])} but the page tables "
                            f"map it {int(mapc[p])} times ({len(bad)} frames differ)")
        held = mapc + f.pincount.astype(np.int64)
        for file in self.files:
            for pfn in file.cache.values():
                held[pfn] += 1
                if f.refcount[pfn] <= 0:
                    problems.append(f"page cache of {file.name} holds free pfn {pfn}")
        for pfn in self.swap.slot_of:
            held[pfn] += 1
        low = np.nonzero(f.refcount.astype(np.int64) < held)[0]
        if len(low):
            p = int(low[0])
            problems.append(f"pfn {p}: refcount {int(f.refcount[p])} < mappings + pins + "
                            f"caches {int(held[p])}")
        sw = swap_slots(ptes)
        cnt = np.bincount(sw, minlength=self.swap.nslots)[: self.swap.nslots]
        badsw = np.nonzero(cnt != self.swap.count)[0]
        if len(badsw):
            s = int(badsw[0])
            problems.append(f"swap slot {s}: count {int(self.swap.count[s])} but "
                            f"{int(cnt[s])} swap entries")
        problems += self.swap.check_invariants()
        problems += self.pool.check_invariants([mm.pt.root for mm in self.mms
                                                if not mm.exited])
        if f.refcount[self.zero_pfn] < 1 or f.contents[self.zero_pfn] != 0:
            problems.append("the zero page was freed or written")
        return problems
