"""hugetlbfs (``mm/hugetlb.c``, ``fs/hugetlbfs``): files of 2 MiB pages mapped ``MAP_SHARED``
by huge PMDs, and PMD-table sharing between the processes that map one.

A hugetlbfs file (``sim.memory.new_hugetlbfs_file``) is read in by huge page: the first
fault of a page allocates a 2 MiB block (``alloc_huge_page`` + ``huge_add_to_page_cache``;
the page cache holds each of its 512 frames) and maps it with one huge PMD, writable in a
writable mapping (``hugetlb_no_page``: ``make_huge_pte(vma, page, (vma->vm_flags & VM_WRITE)
&& (vma->vm_flags & VM_SHARED))``).

PMD sharing (x86 since 2.6.20, 39dde65c9940 "shared page table for hugetlb page"): when a
``MAP_SHARED`` VMA covers a whole PUD-aligned 1 GiB span (``vma_shareable``), its first fault
there looks in the file's ``i_mmap`` for another VMA mapping the same file offsets at the same
place in a 1 GiB span (``page_table_shareable``) and, if that one has a PMD table there,
points its own PUD entry at it (``huge_pmd_share``; the PMD page's ``page_count`` counts the
sharers: :attr:`primary_mm.pagetable.PageTablePool.pmd_sharers`). A page mapped through a
shared table is mapped once, so its ``mapcount`` is 1 however many processes map it.
Unmapping a range first drops the sharing (``huge_pmd_unshare`` in ``__unmap_hugepage_range``,
every era), so teardown never clears another process's entries.

Migration of a hugetlb page (``unmap_and_move_huge_page``) unmaps it with ``try_to_unmap``
only ``if (page_mapped(hpage))``; the walk stops when the mapcount reaches 0
(``rwc->done = page_mapcount_is_zero``). How ``try_to_unmap_one`` treats a shared table is
the era option ``hugetlb_pmd_unshare`` (:data:`HUGETLB_PMD_UNSHARE`):

- ``"none"`` (2.6.20 .. 4.18): it clears the PMD in the shared table and drops the mapcount to
  0, so the walk stops at the first sharer: the other processes' tables point to the
  migration entry but no notifier of theirs is called ("try_to_unmap stops prematurely and
  does not completely unmap all mappings of the source page", 017b1660df89).
- ``"unshare_narrow"`` (no release; the fix without its notifier widening): ``huge_pmd_unshare``
  unmaps the whole 1 GiB span from this process, but the notifier covered only the huge
  page's 2 MiB, so a secondary MMU keeps translations of the span's other pages that the
  process no longer maps.
- ``"unshare_wide"`` (4.19+, 017b1660df89 "mm: migration: fix migration of huge PMD shared
  pages"): ``adjust_range_if_pmd_sharing_possible`` widens the range to the PUD span before
  the notifier is called, "so that notifiers can prepare for the worst possible case".
"""

from __future__ import annotations

import numpy as np

from primary_mm.frames import FRAME_COMPOUND, FRAME_DIRTY, FRAME_FILE, FRAME_LOCKED, NO_OWNER
from primary_mm.frames import compound_block as block
from primary_mm.frames import compound_head
from primary_mm.huge_memory import restore_migration_pmd_at, set_pmd_migration_entry
from primary_mm.rmap import RMAP_STOP
from smmu.base.constants import (HPAGE_PMD_MASK, HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SHIFT,
                                 PUD_MASK, PUD_SIZE)
from smmu.base.errors import SegmentationFault, UsageError
from smmu.base.pte import (PTE_DIRTY, PTE_HUGE, PTE_MIGRATION, PTE_PRESENT, PTE_WRITE,
                           PTE_YOUNG, mk_pte, pte_pfn)
from smmu.notifier import Event

#: how try_to_unmap_one treats a PMD table shared between processes (module docstring)
HUGETLB_PMD_UNSHARE = ("none", "unshare_narrow", "unshare_wide")


def check_hugetlb_option(value) -> None:
    if value not in HUGETLB_PMD_UNSHARE:
        raise UsageError(f"unknown hugetlb_pmd_unshare {value!r}: use 'none' (up to 4.18: "
                         "no unshare, the walk stops at the first sharer), 'unshare_narrow' "
                         "(unshare, notifier over the huge page only) or 'unshare_wide' "
                         "(4.19+, 017b1660df89)")


def is_hugetlb_vma(vma) -> bool:
    """``is_vm_hugetlb_page``: a mapping of a hugetlbfs file."""
    return vma.file is not None and getattr(vma.file, "hugetlb", False)


def vma_shareable(vma, addr: int) -> bool:
    """``vma_shareable`` (4.19 mm/hugetlb.c): ``VM_MAYSHARE`` and the PUD-aligned 1 GiB
    around ``addr`` inside the VMA (``range_in_vma(vma, base, end)``)."""
    base = addr & PUD_MASK
    return vma.shared and vma.start <= base and base + PUD_SIZE <= vma.end


def page_table_shareable(svma, vma, addr: int, idx: int) -> int:
    """``page_table_shareable``: the address in ``svma`` that maps file page ``idx`` when it
    sits at the same place of its PMD table as ``addr`` in ``vma``, with the same
    permissions, and ``svma`` covers that whole PUD span; else 0."""
    saddr = ((idx - svma.pgoff) << PAGE_SHIFT) + svma.start
    sbase = saddr & PUD_MASK
    if ((addr >> 21) & 511) != ((saddr >> 21) & 511) or svma.prot != vma.prot or \
            not svma.shared or sbase < svma.start or svma.end < sbase + PUD_SIZE:
        return 0
    return saddr


def adjust_range_if_pmd_sharing_possible(vma, start: int, end: int) -> tuple[int, int]:
    """``adjust_range_if_pmd_sharing_possible`` (017b1660df89, 4.19): widen ``[start, end)``
    to every PUD span in it that a shared PMD table could map ("mmu notifiers are called
    before locking page tables, but we can not be sure of PMD sharing until page tables are
    locked")."""
    if not vma.shared:
        return start, end
    a = start & PUD_MASK
    while a < end:
        if vma.start <= a and a + PUD_SIZE <= vma.end:
            start, end = min(start, a), max(end, a + PUD_SIZE)
        a += PUD_SIZE
    return start, end


class HugetlbFault:
    """The per-address-space hugetlb paths (``hugetlb_fault``, ``huge_pmd_share``), mixed
    into :class:`primary_mm.mm.MM`."""

    def _huge_pmd_share(self, vma, addr):
        """``huge_pte_alloc`` -> ``huge_pmd_share``: with no PMD table at ``addr`` yet and a
        shareable VMA, share another process's table for this span (under the file's
        ``i_mmap`` lock for write, as 4.19 does)."""
        vpn = addr >> PAGE_SHIFT
        if not vma_shareable(vma, addr) or self.pt.pmd_table(vpn):
            return
        mapping = vma.file.mapping
        idx = vma.linear_page_index(addr)
        yield from mapping.lock.lock_write()
        try:
            if self.pt.pmd_table(vpn):
                return
            for svma in mapping.vmas_overlapping(idx, idx + 1):
                if svma is vma or svma.mm.exited or svma.mm.pt.root == 0:
                    continue
                saddr = page_table_shareable(svma, vma, addr, idx)
                if saddr and svma.mm.pt.pmd_table(saddr >> PAGE_SHIFT):
                    self.pt.share_pmd(vpn, svma.mm.pt, saddr >> PAGE_SHIFT)
                    self.sched.stats["hugetlb_pmd_shared"] += 1
                    return
        finally:
            mapping.lock.unlock_write()

    def _hugetlb_fault(self, vma, va, write):
        """``hugetlb_fault`` -> ``hugetlb_no_page``: share a PMD table if one can be, find or
        read in the huge page, map it with one huge PMD (a reference and a mapcount on each
        of its frames, ``page_dup_rmap``)."""
        mem = self.memory
        file = vma.file
        haddr = va & HPAGE_PMD_MASK
        hvpn = haddr >> PAGE_SHIFT
        pgoff = vma.linear_page_index(haddr)
        if pgoff >= file.npages:
            raise SegmentationFault(f"fault: {va:#x} is beyond the end of {file.name} "
                                    "(SIGBUS)", address=va)
        yield from self._huge_pmd_share(vma, haddr)
        head = mem.hugetlb_get_page(file, pgoff)
        yield
        yield self.page_table_lock
        try:
            if not self.pt.lookup_pmd(hvpn) and file.cache.get(pgoff) == head:
                bits = PTE_PRESENT | PTE_YOUNG
                if vma.writable:
                    bits |= PTE_WRITE | PTE_DIRTY
                    mem.frames.set_flags(block(head), FRAME_DIRTY)
                self.pt.set_pmd(hvpn, mk_pte(head, bits) | PTE_HUGE)
                pfns = block(head)
                mem.frames.get(pfns)
                mem.frames.inc_mapcount(pfns)
        finally:
            self.page_table_lock.release()

    def _refuse_hugetlb(self, start, end, op) -> None:
        """UsageError, before any change, when ``[start, end)`` meets a hugetlbfs mapping:
        the model runs faults, migration, munmap, fork and exit there, not ``op`` (Linux
        has hugetlb-specific paths for it: ``hugetlb_change_protection``, ...)."""
        for v in self.vmas_in(start, end):
            if is_hugetlb_vma(v):
                raise UsageError(f"{op}: [{start:#x}, {end:#x}) meets the hugetlbfs mapping "
                                 f"{v.describe()}; {op} of hugetlb pages is not modelled")

    def _hugetlb_unshare_range(self, start, end):
        """``__unmap_hugepage_range``'s ``huge_pmd_unshare``: before a range is zapped, drop
        this process's share of every shared PMD table in it (the other sharers keep the
        table and its entries)."""
        v0, v1 = start >> PAGE_SHIFT, -(-end >> PAGE_SHIFT)
        for v in self.pt.shared_pmd_spans(v0 - (v0 & ((PUD_SIZE >> PAGE_SHIFT) - 1)), v1):
            self.pt.unshare_pmd(v)


class Hugetlb:
    """hugetlbfs files and the migration of their pages, mixed into
    :class:`primary_mm.memory.Memory`."""

    def new_hugetlbfs_file(self, name: str, nr_huge: int, fill=None):
        """A hugetlbfs file of ``nr_huge`` 2 MiB pages (``nr_huge * 512`` page offsets);
        ``fill`` as :meth:`new_file`. Map it with ``mm.mmap(..., shared=True, file=f)`` at
        2 MiB-aligned addresses and offsets."""
        if not isinstance(nr_huge, (int, np.integer)) or nr_huge < 0:
            raise UsageError(f"new_hugetlbfs_file: nr_huge must be an integer >= 0, got "
                             f"{nr_huge!r}")
        f = self.new_file(name, int(nr_huge) * HPAGE_PMD_NR, fill)
        f.hugetlb = True
        return f

    def hugetlb_get_page(self, file, pgoff: int) -> int:
        """``find_lock_page`` or ``alloc_huge_page`` + ``huge_add_to_page_cache``: the head of
        the huge page at ``pgoff`` (a multiple of 512); the cache holds each frame once."""
        head = file.cache.get(pgoff)
        if head is None:
            head = self.frames.alloc_huge(owner=NO_OWNER, flags=FRAME_FILE, zero=False)
            pfns = block(head)
            self.frames.contents[pfns] = file.contents[pgoff:pgoff + HPAGE_PMD_NR]
            for i in range(HPAGE_PMD_NR):
                file.cache[pgoff + i] = head + i
            self.set_page_mapping(pfns, file.mapping, pgoff + np.arange(HPAGE_PMD_NR))
        return head

    def is_hugetlb_page(self, pfn: int) -> bool:
        """``PageHuge``: a frame of a hugetlbfs page."""
        if not self.frames.flags[pfn] & FRAME_COMPOUND or not self.frames.flags[pfn] & FRAME_FILE:
            return False
        mapping, _ = self.page_mapping(pfn)
        return getattr(getattr(mapping, "file", None), "hugetlb", False)

    def soft_offline_page(self, pfn):
        """``soft_offline_page`` -> ``soft_offline_huge_page`` (memory offlining's
        ``do_migrate_range`` does the same): migrate the hugetlb page holding ``pfn`` by
        frame, mapped or not. Returns the number of pages migrated (0: put back)."""
        pfn = self.check_ref(pfn, "soft_offline_page")
        if not self.is_hugetlb_page(pfn):
            raise UsageError(f"soft_offline_page({pfn}): models hugetlb pages only (pfn "
                             "by pfn); migrate other pages with sim.migrate(mm, addr, length)")
        head = compound_head(pfn)
        frames = self.frames
        frames.get(head)                                    # isolate_huge_page
        yield from self.lock_page(head)
        try:
            done = yield from self._migrate_hugetlb(head)
        finally:
            self.unlock_page(head)
            frames.put(head)
        self.sched.stats["migrated"] += done
        return done

    def _migrate_hugetlb(self, head):
        """``unmap_and_move_huge_page`` (the head is isolated and locked by the caller):
        ``try_to_unmap`` if the page is mapped, copy, move the page-cache slots,
        ``remove_migration_ptes``. Returns the number of pages migrated (0: put back)."""
        frames = self.frames
        old = block(head)
        mapping, index = self.page_mapping(head)
        file = mapping.file
        keep = int(frames.flags[head]) & ~(FRAME_LOCKED | FRAME_COMPOUND)
        frames.get(old[1:])                                # the whole page is isolated
        try:
            if frames.mapcount[head] > 0:                  # "if (page_mapped(hpage))"
                yield from self._walk_mappings(head, mapping, index,
                                               self._hugetlb_unmap_one(head))
            cached = all(file.cache.get(index + i) == head + i for i in range(HPAGE_PMD_NR))
            if (frames.mapcount[old] != 0).any() or (frames.refcount[old] != 2).any() or \
                    not cached:
                yield from self._hugetlb_remove_migration_ptes(head, head, mapping, index)
                return 0
            new = frames.alloc_huge(owner=NO_OWNER, flags=keep, zero=False)
            newpfns = block(new)
            frames.contents[newpfns] = frames.contents[old]    # copy_huge_page
            self.sched.charge("page_copy", HPAGE_PMD_NR)
            yield
            frames.contents[newpfns] = frames.contents[old]
            for i in range(HPAGE_PMD_NR):                      # migrate_huge_page_move_mapping
                file.cache[index + i] = new + i
            frames.get(newpfns)
            frames.put(old)
            self.set_page_mapping(newpfns, mapping, index + np.arange(HPAGE_PMD_NR))
            yield from self._hugetlb_remove_migration_ptes(head, new, mapping, index)
            frames.put(newpfns)                                # the allocation reference
            return HPAGE_PMD_NR
        finally:
            frames.put(old[1:])

    def _hugetlb_unmap_one(self, head):
        """``try_to_unmap_one`` for a hugetlb page (``TTU_MIGRATION``), one VMA; the walk
        stops once the page is mapped nowhere (``page_mapcount_is_zero``)."""
        frames = self.frames
        old = block(head)
        mode = self.hugetlb_pmd_unshare

        def one(vma, va):
            if frames.mapcount[head] == 0:
                return RMAP_STOP
            mm = vma.mm
            haddr = va & HPAGE_PMD_MASK
            hvpn = haddr >> PAGE_SHIFT
            start, end = haddr, min(vma.end, haddr + HPAGE_PMD_SIZE)
            if mode == "unshare_wide":
                start, end = adjust_range_if_pmd_sharing_possible(vma, start, end)
            subs = mm.notifier_subscriptions
            rng = mm._range(start, end, Event.CLEAR)
            yield from subs.mmu_notifier_invalidate_range_start(rng)
            cleared = False
            yield mm.page_table_lock
            try:
                word = mm.pt.lookup_pmd(hvpn)
                if word and pte_pfn(word) == head and not word & PTE_MIGRATION:
                    if mode != "none" and mm.pt.unshare_pmd(hvpn):
                        # "huge_pmd_unshare unmapped an entire PMD page ... start/end were
                        # already adjusted above to cover this range"
                        self.sched.stats["hugetlb_pmd_unshared"] += 1
                        yield from mm._flush_tlb_range(start, end)
                    else:
                        yield from set_pmd_migration_entry(frames, mm, hvpn, head, word)
                        cleared = True
            finally:
                mm.page_table_lock.release()
            yield from subs.mmu_notifier_invalidate_range_end(rng)
            if cleared:
                frames.put(old)
            return cleared
        return one

    def _hugetlb_remove_migration_ptes(self, head, target, mapping, index):
        """``remove_migration_ptes``: every PMD still holding the migration entry of
        ``head`` maps ``target`` (a shared table's entry is found, and replaced, once)."""
        frames = self.frames

        def one(vma, va):
            return restore_migration_pmd_at(frames, vma, va, head, target)
        yield from self._walk_mappings(head, mapping, index, one)
        self.migration_wq.wake_all()
