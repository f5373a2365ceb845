"""``Memory``: the machine-wide part of the primary MM and the system-wide operations.

It owns the frame table, the page-table node pool, swap, files and page cache, the zero
page, and the per-frame reverse-map fields (``page->mapping`` / ``page->index``, kept as
numpy arrays beside the frame table). The system-wide operations (reclaim, writeback,
migrate, ksm_merge, truncate, oom_reap) are generators like the per-process ones; each calls
the notifier hooks at the Linux call sites for the selected ``notifier_api``.

Options (keywords): every one, with its values, the kernel versions that behave so and the
commit, is in ONE table, ``docs/kernels.md`` (generated from ``smmu.sim.presets``, whose
kernel presets set them all). ``None`` for ``fork_copies_pinned``,
``anon_exclusive``, ``reclaim_skips_pinned``, ``mprotect_writable_exclusive``,
``unshare_longterm_ro_pins``, ``exit_mmap_lock``, ``cow_notify``, ``munmap_downgrade`` and
``mprotect_notify`` means "as the
generation's era":
today's rules for ``"modern"``, the 2008 ones otherwise. The Simulator passes them all
(``Simulator(fork_enomem_bug=True, ...)``).

Known simplifications: KSM and zero pages are never reclaimed or migrated; migration entries
and swap-ins come back read-only (a write fault restores write access); truncate's zap uses
Event.CLEAR as modern ``zap_page_range_single`` does.
"""

from __future__ import annotations

import itertools

import numpy as np

from primary_mm.exit import EXIT_MMAP_LOCKS
from primary_mm.filemap import File
from primary_mm.frames import (FRAME_ANON, FRAME_ANON_EXCLUSIVE, FRAME_DIRTY, FRAME_FILE,
                               FRAME_LOCKED, FRAME_ZERO, FrameTable,
                               NO_OWNER)
from primary_mm.huge_memory import HugePages, check_thp_options
from primary_mm.hugetlb import Hugetlb, check_hugetlb_option
from primary_mm.khugepaged import Khugepaged
from primary_mm.ksm import Ksm
from primary_mm.memremap import Memremap
from primary_mm.migrate import Migrate
from primary_mm.migrate_device import MigrateDevice
from primary_mm.mm import MM
from primary_mm.mmu_gather import MmuGather
from primary_mm.oom import OomReaper, check_oom_reaper
from primary_mm.page_idle import PageIdle
from primary_mm.pagetable import VPN_LIMIT, PageTable, PageTablePool
from primary_mm.rmap import LRU_GEN, RmapWalk
from primary_mm.swap import SwapSpace
from primary_mm.truncate import Truncate
from primary_mm.vmscan import Vmscan
from primary_mm.writeback import Writeback
from smmu.base.constants import PAGE_SHIFT, PUD_SIZE
from smmu.base.errors import InvalidArgument, UsageError
from smmu.base.pte import (PTE_WRITE, exclusive_pfns, expand_huge, mapped_mask, mapped_pfns,
                           pte_pfns, release_scan, swap_slots)
from smmu.notifier.chain import check_chain_options

COW_REUSE = ("page_count", "mapcount")
#: where mprotect puts its notifier pairs: per range (2.6.27..3.14), per PUD span from the
#: first populated PMD (3.15..6.11), per P4D span from the first populated PUD (6.12+)
MPROTECT_NOTIFY = ("change_protection", "change_pmd_range", "change_pud_range")
#: how a PTE replaced by COW or KSM is notified (v2008 eras): "clear_flush_notify" (2.6.27),
#: "set_pte_at_notify" (2.6.32..3.6), "range" (3.7+, and every range_only / modern run)
COW_NOTIFY = ("clear_flush_notify", "set_pte_at_notify", "range")


class Memory(RmapWalk, HugePages, Hugetlb, Khugepaged, Vmscan, Writeback, Truncate, Migrate,
             MigrateDevice, Memremap, Ksm, OomReaper, PageIdle):
    """System-wide primary-MM state. ``sim.memory``; built by :class:`smmu.Simulator`.

    The system-wide operations come from one class per Linux file they model:
    :class:`RmapWalk` (``mm/rmap.c``), :class:`Vmscan`, :class:`Writeback`,
    :class:`Truncate`, :class:`Migrate`, :class:`MigrateDevice` (``mm/migrate_device.c``),
    :class:`Memremap` (``mm/memremap.c``), :class:`Ksm` and :class:`OomReaper`; this class holds
    the state, the page cache and page lock, freeing, and the invariant checks.
    """

    def __init__(self, sched, notifier_api: str = "modern", rmap_locks: str = "rwsem",
                 nframes: int = 4096, invalidate_page_outside_ptl: bool = False,
                 fork_copies_pinned: bool | None = None, nonblock_fail_calls_end: bool = True,
                 fork_enomem_bug: bool = False, cow_reuse: str = "page_count",
                 mmu_gather: str = "batch_limit", gather_batch: int | None = None,
                 notifier_rcu: str = "srcu", release_order: str = "release_first",
                 exit_mmap_lock: str | None = None, anon_exclusive: bool | None = None,
                 reclaim_skips_pinned: bool | None = None,
                 mprotect_writable_exclusive: bool | None = None,
                 unshare_longterm_ro_pins: bool | None = None, cow_notify: str | None = None,
                 munmap_downgrade: bool | None = None, mprotect_notify: str | None = None,
                 thp: str = "madvise", thp_cow: str = "split", huge_zero_page: bool = True,
                 thp_migration: bool = True, thp_swap: bool = True, lru_gen: str = "off",
                 oom_reaper: str = "nonblock",
                 interval_remove_race: bool = False, arch_flush_empty_range: bool = False,
                 upgrade_flush_notify: bool = False, pagemap_scan_unlocked: bool = False,
                 hugetlb_pmd_unshare: str = "unshare_wide"):
        check_thp_options(thp, thp_cow)
        check_hugetlb_option(hugetlb_pmd_unshare)
        self.hugetlb_pmd_unshare = hugetlb_pmd_unshare
        check_oom_reaper(oom_reaper)
        self.oom_reaper = oom_reaper
        if lru_gen not in LRU_GEN:
            raise UsageError(f"unknown lru_gen {lru_gen!r}: use one of {list(LRU_GEN)}")
        self.lru_gen = lru_gen
        modern = notifier_api == "modern"
        if mprotect_notify is None:
            mprotect_notify = "change_pmd_range" if modern else "change_protection"
        if mprotect_notify not in MPROTECT_NOTIFY:
            raise UsageError(f"unknown mprotect_notify {mprotect_notify!r}: use one of "
                             f"{list(MPROTECT_NOTIFY)}")
        self.mprotect_notify = mprotect_notify
        self.munmap_downgrade = modern if munmap_downgrade is None else bool(munmap_downgrade)
        if cow_notify is None:
            cow_notify = "clear_flush_notify" if notifier_api == "v2008" and \
                not invalidate_page_outside_ptl else "range"
        if cow_notify not in COW_NOTIFY:
            raise UsageError(f"unknown cow_notify {cow_notify!r}: use one of {list(COW_NOTIFY)}")
        if cow_notify != "range" and notifier_api != "v2008":
            raise UsageError(f"cow_notify={cow_notify!r} is a v2008 era (invalidate_page, "
                             "change_pte); range_only and modern bracket COW with start/end: "
                             "use cow_notify='range' or notifier_api='v2008'")
        self.cow_notify = cow_notify
        self.fork_copies_pinned = modern if fork_copies_pinned is None else bool(fork_copies_pinned)
        self.anon_exclusive = modern if anon_exclusive is None else bool(anon_exclusive)
        self.reclaim_skips_pinned = (modern if reclaim_skips_pinned is None
                                     else bool(reclaim_skips_pinned))
        self.mprotect_writable_exclusive = (
            modern if mprotect_writable_exclusive is None else bool(mprotect_writable_exclusive))
        self.unshare_longterm_ro_pins = (
            modern if unshare_longterm_ro_pins is None else bool(unshare_longterm_ro_pins))
        if (self.mprotect_writable_exclusive or self.unshare_longterm_ro_pins) and \
                not self.anon_exclusive:
            raise UsageError("mprotect_writable_exclusive and unshare_longterm_ro_pins (6.0, "
                             "6.2) build on PageAnonExclusive (5.19): set anon_exclusive=True, "
                             "or turn them off too")
        if cow_reuse not in COW_REUSE:
            raise UsageError(f"unknown cow_reuse {cow_reuse!r}: use one of {list(COW_REUSE)}")
        if exit_mmap_lock is None:
            exit_mmap_lock = "read_then_write" if notifier_api == "modern" else "none"
        if exit_mmap_lock not in EXIT_MMAP_LOCKS:
            raise UsageError(f"unknown exit_mmap_lock {exit_mmap_lock!r}: use one of "
                             f"{list(EXIT_MMAP_LOCKS)}")
        check_chain_options(notifier_rcu, release_order)
        self.gather = MmuGather(mmu_gather, gather_batch)
        self.thp = thp
        self.thp_cow = thp_cow
        self.huge_zero_page = bool(huge_zero_page)
        self.thp_migration = bool(thp_migration)
        self.thp_swap = bool(thp_swap)
        self._huge_zero_pfn = None
        self.sched = sched
        self.notifier_rcu = notifier_rcu
        self.release_order = release_order
        self.interval_remove_race = bool(interval_remove_race)
        self.arch_flush_empty_range = bool(arch_flush_empty_range)
        self.upgrade_flush_notify = bool(upgrade_flush_notify)
        self.pagemap_scan_unlocked = bool(pagemap_scan_unlocked)
        self.exit_mmap_lock = exit_mmap_lock
        self.api = notifier_api
        self.rmap_locks = rmap_locks
        self.invalidate_page_outside_ptl = invalidate_page_outside_ptl
        self.nonblock_fail_calls_end = nonblock_fail_calls_end
        self.fork_enomem_bug = fork_enomem_bug
        self.cow_reuse = cow_reuse
        self.frames = FrameTable(nframes)
        self.pool = PageTablePool(16)
        self.swap = SwapSpace(self.frames)
        self.mms: list[MM] = []
        self.files: list[File] = []
        self._ids = itertools.count(1)
        # page->mapping / page->index, beside the frame table
        # (64 entries; they grow as pfns beyond come: _grow_page_arrays)
        n = min(64, self.frames.nframes)
        self._pg_mapping, self._pg_index = np.zeros((2, n), dtype=np.int64)
        self._mapping_objs: dict[int, object] = {}
        self.migration_wq = sched.waitqueue("migration_wq")
        self.page_wq = sched.waitqueue("page_lock_wq")
        self.ksm_stable: dict[int, tuple[int, int]] = {}   # value -> (pfn, generation)
        self.pgmaps: list = []                             # memremap_pages
        self.device_pages: dict = {}                       # pfn -> DevPagemap (page->pgmap)
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
    def _grow_page_arrays(self) -> bool:
        """Make ``page->mapping`` / ``page->index`` longer (twice as long, at least 64
        entries, at most as long as the frame table); False if they are that long already.
        They start at 64 entries and grow as pfns that have a mapping come (a
        cow-after-fork schedule uses about ten frames of 4,096: two 32 KiB arrays per
        simulator are not needed)."""
        n, cap = self._pg_mapping.shape[0], self.frames.nframes
        if n >= cap:
            return False
        new = min(max(64, 2 * n), cap)
        for name in ("_pg_mapping", "_pg_index"):
            a = getattr(self, name)
            b = np.zeros(new, dtype=a.dtype)
            b[:n] = a
            setattr(self, name, b)
        return True

    def set_page_mapping(self, pfns, mapping, index) -> None:
        """``page->mapping = mapping; page->index = index`` (arrays or scalars)."""
        self._mapping_objs[mapping.id] = mapping
        while True:
            try:
                # numpy checks every index before it stores one: a miss stores nothing
                self._pg_mapping[pfns] = mapping.id
                break
            except IndexError:
                if not self._grow_page_arrays():
                    raise
        self._pg_index[pfns] = index

    def page_mapping(self, pfn: int):
        """``(mapping, index)`` of a page (None if unknown)."""
        if pfn >= self._pg_mapping.shape[0] and pfn < self.frames.nframes:
            return None, 0                  # beyond what was ever set: no mapping
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
        """``lock_page`` (may sleep). The test and the set are one step, as
        ``folio_trylock`` is one atomic bit operation (mm/filemap.c ``folio_wait_bit_common``:
        "if (folio_trylock_flag(folio, bit_nr, wait)) break" after each wake-up): a woken
        waiter that finds the page locked again by a ``trylock_page`` that ran between the
        wake-up and its turn sleeps again instead of taking a lock someone holds."""
        flags = self.frames.flags
        while True:
            yield self.page_wq.wait_until(lambda: not int(flags[pfn]) & FRAME_LOCKED)
            if not int(flags[pfn]) & FRAME_LOCKED:
                break
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
        ``tlb_finish_mmu``): mapcount and reference of each mapped page (device-private
        ones included; dirty file pages marked dirty first), the swap count of each swap
        entry, the reference of each device-exclusive entry."""
        if not len(ptes):
            return
        f = self.frames
        # one pass over the entries (a kernel): what each held
        pfns, dp, slots, excl = release_scan(ptes, f.flags, FRAME_FILE)
        if len(pfns):
            if len(dp):
                f.set_flags(dp, FRAME_DIRTY)               # set_page_dirty
            f.dec_mapcount(pfns)                           # page_remove_rmap
            self.swap.free_swap_cache(pfns)                # free_pages_and_swap_cache
            f.put(pfns)
        if len(slots):
            self.swap.free(slots)                          # free_swap_and_cache
        if len(excl):
            f.put(excl)                   # a device-exclusive entry holds the reference only

    def _range_pages(self, mm, addr, length, op):
        start, end = mm._check_range(addr, length, op)
        _vpns, ptes = mm.pt.iter_present(start >> PAGE_SHIFT, end >> PAGE_SHIFT)
        pfns = mapped_pfns(ptes)
        _u, first = np.unique(pfns, return_index=True)
        return pfns[np.sort(first)].tolist()

    @property
    def new_anon_flags(self) -> int:
        """Frame flags of a new anonymous page (``folio_add_new_anon_rmap``): FRAME_ANON,
        and PageAnonExclusive with ``anon_exclusive`` ("exclusive = 1")."""
        return FRAME_ANON | (FRAME_ANON_EXCLUSIVE if self.anon_exclusive else 0)

    def maybe_pinned_exclusive(self, pfn: int) -> bool:
        """``anon_exclusive && page_maybe_dma_pinned``: ``page_try_share_anon_rmap`` (and
        fork's ``page_try_dup_anon_rmap``) refuse to share such a page (-EBUSY)."""
        f = self.frames
        return bool(self.anon_exclusive and int(f.flags[pfn]) & FRAME_ANON_EXCLUSIVE
                    and int(f.pincount[pfn]) > 0)

    # ================================================================== checking
    def _ptes_counted_once(self, mm) -> list:
        """The entries of ``mm``'s page table, without the PUD spans whose PMD table it
        shares with a process listed before it (hugetlb PMD sharing: the table's entries
        are counted once, as its pages' mapcount is)."""
        spans = [v for users in self.pool.pmd_sharers.values() for r, v in users[1:]
                 if r == mm.pt.root]
        if not spans:
            return [mm.pt.iter_present()[1]]
        span = PUD_SIZE >> PAGE_SHIFT
        out, v0 = [], 0
        for v in sorted(spans) + [VPN_LIMIT]:
            if v > v0:
                out.append(mm.pt.iter_present(v0, v)[1])
            v0 = v + span
        return out

    def check_invariants(self) -> list[str]:
        """Cross-checks, as readable strings (empty: all good): the frame table's own
        invariants, each frame's mapcount against the page tables, swap counts against the
        swap entries, references against mappings + pins + caches, the node pool."""
        problems = list(self.frames.check_invariants(strict=True))
        f = self.frames
        n = f.nframes
        all_ptes = [expand_huge(p) for mm in self.mms if not mm.exited
                    for p in self._ptes_counted_once(mm)]
        ptes = np.concatenate(all_ptes) if all_ptes else np.zeros(0, dtype=np.uint64)
        mapc = np.bincount(mapped_pfns(ptes), minlength=n)[:n]
        if self.anon_exclusive:
            # "Only exclusive anon pages may be mapped writable" (PageAnonExclusive, 5.19)
            w = mapped_mask(ptes) & ((ptes & np.uint64(PTE_WRITE)) != 0)
            wp = pte_pfns(ptes[w])
            wfl = f.flags[wp]
            shared = wp[((wfl & FRAME_ANON) != 0) & ((wfl & FRAME_ANON_EXCLUSIVE) == 0)]
            if len(shared):
                problems.append(f"pfn {int(shared[0])} is an anonymous page mapped writable "
                                f"but not PageAnonExclusive ({len(shared)} such PTEs)")
        bad = np.nonzero(mapc != f.mapcount)[0]
        if len(bad):
            p = int(bad[0])
            problems.append(f"mapcount of pfn {p} is {int(f.mapcount[p])} but the page tables "
                            f"map it {int(mapc[p])} times ({len(bad)} frames differ)")
        held = mapc + f.pincount.astype(np.int64)
        held += np.bincount(exclusive_pfns(ptes), minlength=n)[:n]
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
