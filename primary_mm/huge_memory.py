"""Transparent huge pages, from ``mm/huge_memory.c``: the anonymous huge-page fault
(``do_huge_pmd_anonymous_page``, the huge zero page), COW of a huge PMD
(``do_huge_pmd_wp_page``), ``__split_huge_pmd`` and its callers at VMA edges
(``vma_adjust_trans_huge``) and partial zaps (``zap_pmd_range``), and ``split_huge_page``.

A THP is a PMD-level entry of the radix table (``PTE_HUGE``, :mod:`smmu.base.radix`) mapping
512 aligned frames (``FRAME_COMPOUND``, :meth:`primary_mm.frames.FrameTable.alloc_huge`).
Which VMAs get one (``Memory(thp=...)``, ``/sys/kernel/mm/transparent_hugepage/enabled``):
``"never"``; ``"madvise"`` (the default here, and the distributions'), only VMAs given
``madvise(MADV_HUGEPAGE)``; ``"always"``, every private anonymous VMA without
``MADV_NOHUGEPAGE``. Only private anonymous memory is modelled (no shmem or file THPs).

Era options: ``thp_cow`` (``"split"``: 5.8+ "thp: change CoW semantics for anon-THP",
``do_huge_pmd_wp_page`` splits the PMD and the fault falls back to 4 KiB; ``"copy"``: up to
5.7, a new huge page is copied under a 2 MiB start/end), ``huge_zero_page`` (3.8+: a read
fault maps the huge zero page; before, a read fault allocates the THP too) and
``thp_migration`` (4.14+: a PMD-mapped THP migrates whole through a PMD migration entry;
before, it is split first).

Notifier ranges of PMD operations cover the whole 2 MiB in every generation: 6.8
``__split_huge_pmd``: ``mmu_notifier_range_init(&range, MMU_NOTIFY_CLEAR, 0, vma->vm_mm,
address & HPAGE_PMD_MASK, (address & HPAGE_PMD_MASK) + HPAGE_PMD_SIZE)``; 4.12
``do_huge_pmd_wp_page``: ``mmun_end = haddr + HPAGE_PMD_SIZE;
mmu_notifier_invalidate_range_start(vma->vm_mm, mmun_start, mmun_end)``. (3.6 issued the
split's start/end inside the page_table_lock, ``pmdp_splitting_flush_notify``; 3.7 moved them
out; the model issues them outside.)

:class:`HugeMemory` is mixed into :class:`primary_mm.mm.MM`, :class:`HugePages` into
:class:`primary_mm.memory.Memory`.
"""

from __future__ import annotations

import numpy as np

from primary_mm.frames import (FRAME_ANON, FRAME_ANON_EXCLUSIVE, FRAME_COMPOUND, FRAME_KSM,
                               FRAME_LOCKED,
                               FRAME_ZERO, NO_OWNER, compound_block as block, compound_head)
from smmu.base.constants import HPAGE_PMD_MASK, HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SHIFT
from smmu.base.errors import OutOfMemory, SegmentationFault, UsageError
from smmu.base.pte import (PTE_DIRTY, PTE_HUGE, PTE_MIGRATION, PTE_PRESENT, PTE_PROTNONE,
                           PTE_SPECIAL, PTE_SWP_EXCLUSIVE, PTE_WRITE, PTE_YOUNG, huge_mask,
                           mk_pte, pte_pfn)
from smmu.notifier import Event

THP_MODES = ("never", "madvise", "always")
THP_COW = ("split", "copy")

_HMASK = HPAGE_PMD_NR - 1


def hvpn_of(vpn: int) -> int:
    """The first vpn of the 2 MiB block holding ``vpn``."""
    return vpn & ~_HMASK


def check_thp_options(thp, thp_cow) -> None:
    if thp not in THP_MODES:
        raise UsageError(f"unknown thp {thp!r}: use one of {list(THP_MODES)} (as "
                         "/sys/kernel/mm/transparent_hugepage/enabled)")
    if thp_cow not in THP_COW:
        raise UsageError(f"unknown thp_cow {thp_cow!r}: use 'split' (5.8+) or 'copy' "
                         "(up to 5.7)")


def remove_migration_pmd(frames, vma, hvpn, word, target) -> None:
    """``remove_migration_pmd`` (under the PT lock): the PMD migration entry ``word`` at
    ``hvpn`` maps the huge page ``target`` again (writable if the entry was and the VMA is;
    ``PROT_NONE`` in an inaccessible VMA), with a reference and a mapcount on each frame."""
    write = bool(word & PTE_WRITE) and vma.writable
    bits = (PTE_PRESENT | PTE_YOUNG | (PTE_WRITE | PTE_DIRTY if write else 0)
            if vma.readable else PTE_PROTNONE)
    vma.mm.pt.set_pmd(hvpn, mk_pte(target, bits) | PTE_HUGE)
    frames.get(block(target))
    frames.inc_mapcount(block(target))


def set_pmd_migration_entry(frames, mm, hvpn, head, word):
    """Replace the huge PMD ``word`` at ``hvpn`` (mapping ``head``'s 2 MiB, the PT lock held)
    by ``head``'s migration entry, keeping its write bit, flush the TLB for the 2 MiB and drop
    the PMD's mapcount of every frame of the block (a generator: the flush may yield). THP:
    ``set_pmd_migration_entry`` (mm/huge_memory.c, 6.8) then ``folio_remove_rmap_pmd``;
    hugetlb: ``try_to_migrate_one``'s ``set_huge_pte_at`` of the migration entry then
    ``page_remove_rmap`` (mm/rmap.c). The page reference is the caller's to drop after the
    range's end."""
    mm.pt.set_pmd(hvpn, mk_pte(head, PTE_MIGRATION | (word & PTE_WRITE)) | PTE_HUGE)
    haddr = hvpn << PAGE_SHIFT
    yield from mm._flush_tlb_range(haddr, haddr + HPAGE_PMD_SIZE)
    frames.dec_mapcount(block(head))


def restore_migration_pmd_at(frames, vma, va, head, target, split=None):
    """One mapping's step of ``remove_migration_ptes`` for a PMD migration entry (a
    generator; takes the PT lock): if the PMD at ``va`` still holds ``head``'s migration
    entry, it maps ``target`` again (:func:`remove_migration_pmd`). ``split(mm, vma, hvpn,
    target)`` handles a PMD found empty (THP: a split turned the entry into PTE migration
    entries); without it an empty PMD is not ours. True if something was restored."""
    mm = vma.mm
    hvpn = hvpn_of(va >> PAGE_SHIFT)
    yield mm.page_table_lock
    try:
        word = mm.pt.lookup_pmd(hvpn)
        if not word and split is not None:
            return split(mm, vma, hvpn, target)
        if not (word & PTE_MIGRATION and pte_pfn(word) == head):
            return False
        remove_migration_pmd(frames, vma, hvpn, word, target)
        return True
    finally:
        mm.page_table_lock.release()


class HugeMemory:
    """The per-address-space THP paths (``mm/huge_memory.c``)."""

    # ------------------------------------------------------------------ eligibility
    def thp_allowed(self, vma, va: int) -> bool:
        """``thp_vma_allowable_order`` + ``thp_vma_suitable_order``: may the fault at ``va``
        map a huge page? Private anonymous, THP enabled for the VMA, and the aligned 2 MiB
        around ``va`` inside it ("if (haddr < vma->vm_start || haddr + hpage_size >
        vma->vm_end) return false")."""
        mode = self.memory.thp
        if mode == "never" or vma.file is not None or vma.shared:
            return False
        if "nohugepage" in vma.flags or (mode == "madvise" and "hugepage" not in vma.flags):
            return False
        haddr = va & HPAGE_PMD_MASK
        return haddr >= vma.start and haddr + HPAGE_PMD_SIZE <= vma.end

    def _start_pmd_range(self, haddr):
        """Start the notifier range of a PMD operation at ``haddr``: ``MMU_NOTIFY_CLEAR``
        over the whole 2 MiB, in every generation. Returns the range (end it with
        ``mmu_notifier_invalidate_range_end``)."""
        rng = self._range(haddr, haddr + HPAGE_PMD_SIZE, Event.CLEAR)
        yield from self.notifier_subscriptions.mmu_notifier_invalidate_range_start(rng)
        return rng

    def _pmd_none(self, vpn: int) -> bool:
        """``pmd_none``: no huge PMD and no PTE table in the PMD slot of ``vpn`` (an empty PTE
        table left by MADV_DONTNEED still counts as one, as in Linux)."""
        h = hvpn_of(vpn)
        return not self.pt.lookup_pmd(h) and self.pt.count_tables(h, h + HPAGE_PMD_NR) < 3

    # ------------------------------------------------------------------ faults
    def _do_huge_pmd_anonymous_page(self, vma, va, write):
        """``do_huge_pmd_anonymous_page``: a read fault maps the huge zero page when it is
        enabled (``set_huge_zero_page``); otherwise a zeroed huge page is allocated and
        mapped writable and dirty (``maybe_pmd_mkwrite(pmd_mkdirty(entry), vma)``). Returns
        False to fall back to 4 KiB (``VM_FAULT_FALLBACK``: no huge page free)."""
        mem = self.memory
        hvpn = hvpn_of(va >> PAGE_SHIFT)
        haddr = hvpn << PAGE_SHIFT
        self._anon_vma_prepare(vma)
        if not write and mem.huge_zero_page:
            word = mk_pte(mem.huge_zero_pfn(), PTE_PRESENT | PTE_SPECIAL | PTE_YOUNG) | PTE_HUGE
            yield self.page_table_lock
            try:
                if self._pmd_none(hvpn):
                    self.pt.set_pmd(hvpn, word)
            finally:
                self.page_table_lock.release()
            return True
        try:
            head = mem.frames.alloc_huge(owner=self.id, flags=mem.new_anon_flags, zero=True)
        except OutOfMemory:
            self.sched.stats["thp_fault_fallback"] += 1
            return False
        self.sched.charge("page_zero", HPAGE_PMD_NR)
        yield   # clear_huge_page: preemptible before the PMD lock
        pfns = block(head)
        bits = PTE_PRESENT | PTE_YOUNG | PTE_DIRTY | (PTE_WRITE if vma.writable else 0)
        yield self.page_table_lock
        try:
            installed = self._pmd_none(hvpn)
            if installed:
                self.pt.set_pmd(hvpn, mk_pte(head, bits) | PTE_HUGE)
                mem.frames.inc_mapcount(pfns)
                mem.set_page_mapping(pfns, vma.anon_vma,
                                     vma.linear_page_index(haddr) + np.arange(HPAGE_PMD_NR))
                self.sched.stats["thp_fault_alloc"] += 1
        finally:
            self.page_table_lock.release()
        if not installed:
            mem.frames.put(pfns)
        return True

    def _huge_pmd_fault(self, vma, va, pte, write, op):
        """A fault on a huge PMD (``__handle_mm_fault``): wait for a PMD migration entry
        (``pmd_migration_entry_wait``), COW a write to a read-only one
        (``do_huge_pmd_wp_page``), else mark it accessed (``huge_pmd_set_accessed``)."""
        vpn = va >> PAGE_SHIFT
        word = self.pt.lookup_pmd(vpn)
        if not word:
            return                              # split meanwhile: the caller retries
        if word & PTE_MIGRATION:
            yield self.memory.migration_wq.wait_until(lambda: self.pt.lookup_pmd(vpn) != word)
            return
        if word & PTE_PROTNONE:
            raise SegmentationFault(f"{op}: {va:#x} is PROT_NONE (SIGSEGV)", address=va)
        if write and not word & PTE_WRITE:
            yield from self._do_huge_pmd_wp_page(vma, va, word)
            return
        self.pt.touch(vpn, PTE_YOUNG | (PTE_DIRTY if write else 0))

    def _can_reuse_huge(self, head: int) -> bool:
        """The reuse test of ``do_huge_pmd_wp_page`` for the whole huge page, the rule of
        ``do_wp_page`` for each of its frames: anonymous, not KSM, and ours: with
        ``anon_exclusive`` PageAnonExclusive (6.8: "if (PageAnonExclusive(page)) goto
        reuse;"), else every frame's ``page_count`` (6.8: "folio_ref_count(folio) > 1 + ...
        goto unlock_fallback") or, with ``cow_reuse="mapcount"``, ``page_mapcount`` (3.6: "if
        (page_mapcount(page) == 1)") is 1."""
        mem = self.memory
        f = mem.frames
        blk = slice(head, head + HPAGE_PMD_NR)
        fl = f.flags[blk]
        if not (fl & FRAME_ANON).all() or (fl & FRAME_KSM).any():
            return False
        if mem.anon_exclusive and (fl & FRAME_ANON_EXCLUSIVE).all():
            return True
        counts = f.mapcount[blk] if mem.cow_reuse == "mapcount" else f.refcount[blk]
        return bool((counts == 1).all())

    def _do_huge_pmd_wp_page(self, vma, va, word):
        """``do_huge_pmd_wp_page``: a write to a read-only huge PMD. Reuse in place when the
        huge page is exclusively ours (no notifier: the mapping only gains rights). Else,
        with ``thp_cow="split"`` (5.8+), split the PMD (``__split_huge_pmd``) and let the
        fault fall back to a 4 KiB COW of the page written (a write to the huge zero page
        too); with ``"copy"`` (up to 5.7) copy into a new huge page (zeroed for the huge
        zero page) and replace the PMD under a 2 MiB start/end."""
        mem = self.memory
        frames = mem.frames
        vpn = va >> PAGE_SHIFT
        hvpn = hvpn_of(vpn)
        haddr = hvpn << PAGE_SHIFT
        head = pte_pfn(word)
        special = bool(word & PTE_SPECIAL)
        if not special and self._can_reuse_huge(head):
            yield self.page_table_lock
            try:
                if self.pt.lookup_pmd(hvpn) == word and self._can_reuse_huge(head):
                    self.pt.set_pmd(hvpn, word | PTE_WRITE | PTE_DIRTY | PTE_YOUNG)
                    frames.owner[head:head + HPAGE_PMD_NR] = self.id
                    if mem.anon_exclusive:                 # page_move_anon_rmap
                        frames.set_flags(block(head), FRAME_ANON_EXCLUSIVE)
            finally:
                self.page_table_lock.release()
            return
        if mem.thp_cow == "split":
            yield from self._split_huge_pmd(va)    # VM_FAULT_FALLBACK: 4 KiB COW follows
            return
        self._anon_vma_prepare(vma)
        try:
            new = frames.alloc_huge(owner=self.id, flags=mem.new_anon_flags, zero=special)
        except OutOfMemory:
            yield from self._split_huge_pmd(va)    # the fallback: 4 KiB pages
            return
        if special:
            self.sched.charge("page_zero", HPAGE_PMD_NR)
        else:
            frames.contents[new:new + HPAGE_PMD_NR] = frames.contents[head:head + HPAGE_PMD_NR]
            self.sched.charge("page_copy", HPAGE_PMD_NR)
        yield   # copy_user_huge_page: between the copy and the PMD lock
        newpfns = block(new)
        subs = self.notifier_subscriptions
        rng = yield from self._start_pmd_range(haddr)
        yield self.page_table_lock
        try:
            ok = self.pt.lookup_pmd(hvpn) == word
            if ok:
                # pmdp_huge_clear_flush_notify + set_pmd_at
                self.pt.set_pmd(hvpn, mk_pte(new, PTE_PRESENT | PTE_WRITE | PTE_DIRTY |
                                             PTE_YOUNG) | PTE_HUGE)
                yield from self._flush_tlb_range(haddr, haddr + HPAGE_PMD_SIZE)
                frames.inc_mapcount(newpfns)
                mem.set_page_mapping(newpfns, vma.anon_vma,
                                     vma.linear_page_index(haddr) + np.arange(HPAGE_PMD_NR))
                if not special:
                    frames.dec_mapcount(block(head))   # page_remove_rmap(page, true)
        finally:
            self.page_table_lock.release()
        yield from subs.mmu_notifier_invalidate_range_end(rng)
        if not ok:
            frames.put(newpfns)
        elif not special:
            frames.put(block(head))                    # put_page(page), after end

    # ------------------------------------------------------------------ splitting
    def _split_huge_pmd(self, va):
        """``__split_huge_pmd``: start/end ``MMU_NOTIFY_CLEAR`` over the 2 MiB around ``va``,
        and under the PMD lock the huge PMD becomes a PTE table of 512 entries with its bits
        (``__split_huge_pmd_locked``; the huge zero page becomes 512 entries of the 4 KiB
        zero page, ``__split_huge_zero_page_pmd``; a PMD migration entry 512 migration
        entries). No frame count changes (each frame already counts its own mapping, see
        ``FrameTable.alloc_huge``). Returns True if a PMD was split."""
        hvpn = hvpn_of(va >> PAGE_SHIFT)
        if not self.pt.lookup_pmd(hvpn):
            return False
        haddr = hvpn << PAGE_SHIFT
        subs = self.notifier_subscriptions
        rng = yield from self._start_pmd_range(haddr)
        yield self.page_table_lock
        try:
            word = self.pt.lookup_pmd(hvpn)
            if word:
                if word & PTE_SPECIAL:
                    self.pt.split_pmd(hvpn, new_pfn=self.memory.zero_pfn, pfn_step=0)
                else:
                    self.pt.split_pmd(hvpn)
                if word & PTE_PRESENT:
                    yield from self._flush_tlb_range(haddr, haddr + HPAGE_PMD_SIZE)
                self.sched.stats["thp_split_pmd"] += 1
        finally:
            self.page_table_lock.release()
        yield from subs.mmu_notifier_invalidate_range_end(rng)
        return bool(word)

    def _split_huge_edges(self, start, end):
        """Split the huge PMDs that ``[start, end)`` covers only in part: at a VMA split
        (``vma_adjust_trans_huge`` -> ``split_huge_pmd_if_needed``: "if
        (!IS_ALIGNED(address, HPAGE_PMD_SIZE) && range_in_vma(...))
        split_huge_pmd_address"), in ``zap_pmd_range`` and ``change_pmd_range`` ("if (next -
        addr != HPAGE_PMD_SIZE) __split_huge_pmd")."""
        for addr in (start, end):
            if addr % HPAGE_PMD_SIZE and self.pt.lookup_pmd(addr >> PAGE_SHIFT):
                yield from self._split_huge_pmd(addr)

    def _split_vmas(self, start, end):
        """``split_vma`` at ``start`` and ``end`` (huge PMDs across them split first);
        returns the VMAs inside."""
        yield from self._split_huge_edges(start, end)
        return self._split_at(start, end)

    def huge_pmds(self, start, end) -> list:
        """``[(vpn, word)]`` of the huge PMDs overlapping ``[start, end)``."""
        vpns, ptes = self.pt.iter_present(start >> PAGE_SHIFT, -(-end >> PAGE_SHIFT))
        h = huge_mask(ptes)
        return list(zip(vpns[h].tolist(), ptes[h].tolist()))

    def _map_small(self, vpn0: int, ptes: np.ndarray) -> None:
        """``map_range`` of ``ptes`` from ``vpn0``, skipping the entries that lie under huge
        PMDs (``PTE_HUGE`` views from a ``walk``): one call per run of small entries."""
        hm = huge_mask(ptes)
        if not hm.any():
            self.pt.map_range(vpn0, ptes)
            return
        edges = np.flatnonzero(np.diff(np.concatenate(([True], hm, [True])).astype(np.int8)))
        for a, b in zip(edges[::2].tolist(), edges[1::2].tolist()):
            self.pt.map_range(vpn0 + a, ptes[a:b])

    def _split_pinned_huge(self, start, end):
        """5.9+ ``copy_huge_pmd``: "if (unlikely(page_needs_cow_for_dma(src_vma,
        src_page))) { ... __split_huge_pmd(src_vma, src_pmd, addr, false, NULL); return
        -EAGAIN; }": a huge page with a maybe-pinned frame is split so that fork copies the
        pinned page for the child at PTE level."""
        f = self.memory.frames
        for vpn, word in self.huge_pmds(start, end):
            head = pte_pfn(word)
            if not word & PTE_SPECIAL and (f.pincount[head:head + HPAGE_PMD_NR] > 0).any():
                yield from self._split_huge_pmd(vpn << PAGE_SHIFT)


class HugePages:
    """The machine-wide THP state and ``split_huge_page`` (mixed into ``Memory``)."""

    def huge_zero_pfn(self) -> int:
        """``mm_get_huge_zero_page``: the huge zero page (512 zeroed frames, allocated at
        first use and never freed)."""
        if self._huge_zero_pfn is None:
            self._huge_zero_pfn = self.frames.alloc_huge(owner=NO_OWNER, flags=FRAME_ZERO)
        return self._huge_zero_pfn

    def split_huge_page(self, head):
        """``split_huge_page``: the huge page of ``head`` becomes 512 pages. Each mapping
        that maps it with a PMD is split first (``unmap_folio`` -> ``try_to_migrate`` with
        ``TTU_SPLIT_HUGE_PMD`` -> ``split_huge_pmd_address``: the 2 MiB CLEAR start/end);
        then the frames lose ``FRAME_COMPOUND``. Simplification: Linux also turns the PTEs
        of a PTE-mapped folio into migration entries and back (``remap_page``) under a CLEAR
        range over the folio; here those PTEs stay (the pages are the same frames)."""
        frames = self.frames
        blk = block(head)
        if not (frames.flags[blk] & FRAME_COMPOUND).any():
            return
        # only a whole folio can be PMD-mapped: its head is mapped then
        mapping, index = (self.page_mapping(head) if frames.test_flags(head, FRAME_COMPOUND)
                          else (None, 0))
        if mapping is not None:
            def one(vma, va):
                mm = vma.mm
                word = mm.pt.lookup_pmd(va >> PAGE_SHIFT)
                if word and pte_pfn(word) == head and not word & PTE_SPECIAL:
                    return (yield from mm._split_huge_pmd(va))
                return False
            yield from self._walk_mappings(head, mapping, index, one)
        frames.clear_flags(blk, FRAME_COMPOUND)
        self.sched.stats["thp_split_page"] += 1

    compound_head = staticmethod(compound_head)

    def _pmd_mapped(self, head: int) -> bool:
        """Is the huge page of ``head`` whole and mapped by at least one huge PMD?"""
        f = self.frames
        if not f.test_flags(head, FRAME_COMPOUND) or int(f.mapcount[head]) <= 0:
            return False
        mapping, index = self.page_mapping(head)
        if mapping is None:
            return False
        for vma, va in mapping.mappings(index):
            word = vma.mm.pt.lookup_pmd(va >> PAGE_SHIFT)
            if word and not word & (PTE_SPECIAL | PTE_MIGRATION) and pte_pfn(word) == head:
                return True
        return False

    def _migrate_huge(self, pfn):
        """Migrate the huge page holding ``pfn`` (its frame is isolated and locked by the
        caller). 4.14+ (``thp_migration``) moves a PMD-mapped one whole: ``try_to_migrate_one``
        on the PMD (a 2 MiB ``MMU_NOTIFY_CLEAR`` start/end, "For THP, we have to assume the
        worse case ie pmd for invalidation", the PMD becomes a PMD migration entry:
        ``set_pmd_migration_entry``), copy, ``remove_migration_pmd``; returns the number of
        pages migrated. Otherwise (before 4.14, or a PTE-mapped folio) it is split
        (``split_huge_page``, as ``migrate_pages_batch`` -> ``try_split_folio`` does) and the
        list of its pages is returned, for the caller to migrate one by one."""
        frames = self.frames
        head = compound_head(pfn)
        if not (self.thp_migration and pfn == head and self._pmd_mapped(head)):
            yield from self.split_huge_page(head)
            pages = block(head)
            return pages[(frames.refcount[pages] > 0) & (frames.mapcount[pages] > 0)].tolist()
        old = block(head)
        frames.get(old[1:])                                # isolate the whole folio
        try:
            return int((yield from self._move_huge(head)))
        finally:
            frames.put(old[1:])

    def _move_huge(self, head):
        frames = self.frames
        old = block(head)
        steps = np.arange(HPAGE_PMD_NR, dtype=np.uint64) << np.uint64(PAGE_SHIFT)
        entries = np.uint64(mk_pte(head, PTE_MIGRATION)) + steps

        def _remove_split_entries(mm, vma, hvpn, target):
            """The PMD migration entry was split while the folio was being copied
            (``__split_huge_pmd`` of a MADV_DONTNEED, munmap or mprotect of part of the 2 MiB:
            6.8 ``__split_huge_pmd_locked``, "if (pmd_migration) ... entry =
            make_writable_migration_entry(page_to_pfn(page + i))" for each of the 512 PTEs):
            ``remove_migration_pte`` finds those PTE migration entries too
            (``page_vma_mapped_walk`` matches a PTE of any page of the folio) and maps each
            one still there to the matching page of ``target``. Under the PT lock."""
            vpns = np.arange(hvpn, hvpn + HPAGE_PMD_NR, dtype=np.int64)
            ptes = mm.pt.walk(vpns)
            match = (ptes & np.uint64(~(PTE_WRITE | PTE_SWP_EXCLUSIVE) & (2**64 - 1))) == \
                entries
            if not match.any():
                return False
            idx = np.flatnonzero(match)
            if not vma.readable:
                bits = np.full(idx.shape[0], PTE_PROTNONE, dtype=np.uint64)
            else:
                w = (ptes[idx] & np.uint64(PTE_WRITE)) != 0 if vma.writable else \
                    np.zeros(idx.shape[0], dtype=bool)
                bits = np.where(w, np.uint64(PTE_PRESENT | PTE_YOUNG | PTE_WRITE | PTE_DIRTY),
                                np.uint64(PTE_PRESENT | PTE_YOUNG))
            new = ptes.copy()
            new[idx] = np.uint64(mk_pte(target, 0)) + steps[idx] + bits
            mm.pt.map_range(hvpn, new)
            pfns = target + idx
            frames.get(pfns)
            frames.inc_mapcount(pfns)
            return True
        mapping, index = self.page_mapping(head)
        keep = int(frames.flags[head]) & ~FRAME_LOCKED
        new = frames.alloc_huge(owner=int(frames.owner[head]), flags=keep & ~FRAME_COMPOUND,
                                zero=False)
        newpfns = block(new)

        def unmap(vma, va):
            mm = vma.mm
            hvpn = hvpn_of(va >> PAGE_SHIFT)
            haddr = hvpn << PAGE_SHIFT
            subs = mm.notifier_subscriptions
            rng = yield from mm._start_pmd_range(haddr)
            yield mm.page_table_lock
            try:
                word = mm.pt.lookup_pmd(hvpn)
                ok = bool(word) and pte_pfn(word) == head and \
                    not word & (PTE_SPECIAL | PTE_MIGRATION)
                if ok:
                    yield from set_pmd_migration_entry(frames, mm, hvpn, head, word)
            finally:
                mm.page_table_lock.release()
            yield from subs.mmu_notifier_invalidate_range_end(rng)
            if ok:
                frames.put(old)
            return ok

        def remove(target):
            def one(vma, va):
                return restore_migration_pmd_at(frames, vma, va, head, target,
                                                _remove_split_entries)
            yield from self._walk_mappings(head, mapping, index, one)
            self.migration_wq.wake_all()

        yield from self._walk_mappings(head, mapping, index, unmap)
        # folio_migrate_mapping: only our isolation references may be left
        if (frames.mapcount[old] != 0).any() or (frames.refcount[old] != 1).any():
            yield from remove(head)                        # -EAGAIN: put it back
            frames.put(newpfns)
            return False
        frames.contents[newpfns] = frames.contents[old]   # folio_copy
        self.sched.charge("page_copy", HPAGE_PMD_NR)
        yield
        frames.contents[newpfns] = frames.contents[old]
        self.set_page_mapping(newpfns, mapping, index + np.arange(HPAGE_PMD_NR))
        yield from remove(new)
        frames.put(newpfns)                                # the allocation reference
        self.sched.stats["thp_migration_success"] += 1
        return HPAGE_PMD_NR
