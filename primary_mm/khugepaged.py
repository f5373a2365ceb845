"""khugepaged, from ``mm/khugepaged.c``: collapse 512 small pages of an aligned 2 MiB block into
one huge page (``hpage_collapse_scan_pmd``, ``collapse_huge_page``).

The scan looks at each PTE of the block under the PTE lock and counts it referenced when
"pte_young(pteval) || folio_test_young(folio) || folio_test_referenced(folio) ||
mmu_notifier_test_young(vma->vm_mm, address)" (6.8; the same test since 8ee53820edfd "thp:
mmu_notifier_test_young", 2.6.38, and still in 6.13): so ``test_young`` runs under the PT lock
and must not sleep. A block with no referenced page is not collapsed
(``SCAN_LACK_REFERENCED_PAGE``).
The collapse then takes ``mmap_lock`` for write and the anon_vma lock, starts an
``MMU_NOTIFY_CLEAR`` range over the 2 MiB, clears the PMD (``pmdp_collapse_flush``: the PTE
table is detached), ends the range, checks the pages again (``__collapse_huge_page_isolate``,
the same young test under the PTE lock), copies them into the new huge page and frees them
(``__collapse_huge_page_copy``) and maps the huge PMD.

Modelled limits (the khugepaged defaults): ``max_ptes_none`` 511 (empty PTEs or zero-page
PTEs are filled with zeros), ``max_ptes_swap`` 0 here (a block with swap entries is not
collapsed: khugepaged would swap them in first), ``max_ptes_shared`` 0 here (a page mapped
more than once is left alone). :class:`Khugepaged` is mixed into
:class:`primary_mm.memory.Memory`.
"""

from __future__ import annotations

import numpy as np

from primary_mm.frames import FRAME_ANON, FRAME_KSM, FRAME_REFERENCED, compound_block
from smmu.base.constants import HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SHIFT
from smmu.base.errors import OutOfMemory
from smmu.base.pte import (PTE_DIRTY, PTE_HUGE, PTE_PRESENT, PTE_SPECIAL, PTE_SWAP, PTE_WRITE,
                           PTE_YOUNG, mapped_mask, mk_pte, pte_pfns)

_U = np.uint64


class Khugepaged:
    """Collapsing small pages into huge pages (``mm/khugepaged.c``)."""

    def khugepaged(self, mm, addr=None, length=None):
        """One ``khugepaged_scan_mm_slot`` pass over ``mm`` (or over ``[addr, addr +
        length)``): every aligned 2 MiB block of a VMA huge pages are allowed in
        (``thp_vma_allowable_order``: ``MADV_HUGEPAGE`` with ``thp="madvise"``) that PTEs
        map is scanned and, if a page of it is referenced and all are private anonymous
        pages mapped once, collapsed. Returns the number of blocks collapsed."""
        self._check_mm(mm, "khugepaged")
        if addr is None:
            start, end = 0, 1 << 62
        else:
            start, end = mm._check_range(addr, length, "khugepaged")
        collapsed = 0
        blocks = []
        for vma in list(mm.vmas):
            h = max(vma.start, start)
            h = (h + HPAGE_PMD_SIZE - 1) & ~(HPAGE_PMD_SIZE - 1)
            while h + HPAGE_PMD_SIZE <= min(vma.end, end):
                if mm.thp_allowed(vma, h):
                    blocks.append(h)
                h += HPAGE_PMD_SIZE
        for haddr in blocks:
            yield                                   # khugepaged_scan: cond_resched
            if mm.exited:
                break
            ok = yield from self._scan_pmd(mm, haddr)
            if ok and (yield from self._collapse_huge_page(mm, haddr)):
                collapsed += 1
        self.sched.stats["thp_collapse_alloc"] += collapsed
        return collapsed

    def _young_refs(self, mm, haddr, vpns, ptes):
        """The referenced test of the scan, PT lock held: CPU young bit, ``PG_referenced``,
        else ``mmu_notifier_test_young`` for the page (one hook call per page still
        undecided, in address order, as the scan loop makes them). Returns the count."""
        f = self.frames
        pfns = pte_pfns(ptes)
        young = ((ptes & _U(PTE_YOUNG)) != 0) | ((f.flags[pfns] & FRAME_REFERENCED) != 0)
        referenced = int(young.sum())
        subs = mm.notifier_subscriptions
        for vpn in vpns[~young].tolist():
            if (yield from subs.mmu_notifier_test_young(vpn << PAGE_SHIFT)):
                referenced += 1
        return referenced

    def _collapsible(self, ptes) -> bool:
        """Every entry a private anonymous page mapped once, the zero page, or none; at least
        one writable (``SCAN_PAGE_RO`` otherwise)."""
        f = self.frames
        if (ptes & _U(PTE_HUGE | PTE_SWAP)).any() or ((ptes & _U(PTE_PRESENT)) == 0).any():
            return False
        normal = (ptes & _U(PTE_SPECIAL)) == 0
        pfns = pte_pfns(ptes[normal])
        fl = f.flags[pfns]
        return (len(pfns) > 0 and bool(((fl & FRAME_ANON) != 0).all())
                and not ((fl & FRAME_KSM) != 0).any() and bool((f.mapcount[pfns] == 1).all())
                and bool(((ptes & _U(PTE_WRITE)) != 0).any()))

    def _scan_pmd(self, mm, haddr):
        """``hpage_collapse_scan_pmd``: under ``mmap_lock`` (read) and the PTE lock, may the
        block be collapsed?"""
        hvpn = haddr >> PAGE_SHIFT
        yield mm.mmap_lock.read()
        try:
            if mm.exited or mm.pt.lookup_pmd(hvpn) or mm._pmd_none(hvpn):
                return False                        # SCAN_PMD_MAPPED / SCAN_PMD_NULL
            yield mm.page_table_lock
            try:
                vpns, ptes = mm.pt.iter_present(hvpn, hvpn + HPAGE_PMD_NR)
                if not len(ptes) or not self._collapsible(ptes):
                    return False
                normal = (ptes & _U(PTE_SPECIAL)) == 0
                referenced = yield from self._young_refs(mm, haddr, vpns[normal], ptes[normal])
            finally:
                mm.page_table_lock.release()
        finally:
            mm.mmap_lock.up_read()
        return referenced > 0

    def _collapse_huge_page(self, mm, haddr):
        """``collapse_huge_page``, after a successful scan."""
        frames = self.frames
        hvpn = haddr >> PAGE_SHIFT
        try:
            # alloc_charge_hpage
            new = frames.alloc_huge(owner=mm.id, flags=self.new_anon_flags, zero=True)
        except OutOfMemory:
            return False
        newpfns = compound_block(new)
        yield mm.mmap_lock.write()
        try:
            vma = mm.vma_at(haddr)
            if mm.exited or vma is None or not mm.thp_allowed(vma, haddr) or \
                    mm.pt.lookup_pmd(hvpn) or mm._pmd_none(hvpn):
                frames.put(newpfns)                 # hugepage_vma_revalidate failed
                return False
            av = vma.anon_vma
            if av is not None:
                yield from av.lock.lock_write()     # anon_vma_lock_write
            try:
                subs = mm.notifier_subscriptions
                rng = yield from mm._start_pmd_range(haddr)
                yield mm.page_table_lock
                try:                                # pmdp_collapse_flush: detach the table
                    vpns, ptes = mm.pt.clear_range(hvpn, hvpn + HPAGE_PMD_NR)
                    yield from mm._flush_tlb_range(haddr, haddr + HPAGE_PMD_SIZE)
                finally:
                    mm.page_table_lock.release()
                yield from subs.mmu_notifier_invalidate_range_end(rng)
                yield mm.page_table_lock
                try:                                # __collapse_huge_page_isolate
                    normal = (ptes & _U(PTE_SPECIAL)) == 0
                    ok = self._collapsible(ptes) and \
                        (yield from self._young_refs(mm, haddr, vpns[normal], ptes[normal])) > 0
                    if not ok:                      # put the PTE table back (pmd_populate)
                        arr = np.zeros(HPAGE_PMD_NR, dtype=np.uint64)
                        arr[vpns - hvpn] = ptes
                        mm.pt.map_range(hvpn, arr)
                finally:
                    mm.page_table_lock.release()
            finally:
                if av is not None:
                    av.lock.unlock_write()
            if not ok:
                frames.put(newpfns)
                return False
            # __collapse_huge_page_copy: the pages' contents (none and zero pages read 0)
            pages = mapped_mask(ptes)
            frames.contents[new + (vpns[pages] - hvpn)] = frames.contents[pte_pfns(ptes[pages])]
            self.sched.charge("page_copy", HPAGE_PMD_NR)
            yield
            self.release_entries(ptes)              # release_pte_folio / free the old pages
            yield mm.page_table_lock
            try:
                # maybe_pmd_mkwrite(pmd_mkdirty(_pmd), vma)
                bits = PTE_PRESENT | PTE_YOUNG | PTE_DIRTY | (PTE_WRITE if vma.writable else 0)
                mm.pt.set_pmd(hvpn, mk_pte(new, bits) | PTE_HUGE)
                frames.inc_mapcount(newpfns)
                self.set_page_mapping(newpfns, vma.anon_vma,
                                      vma.linear_page_index(haddr) + np.arange(HPAGE_PMD_NR))
            finally:
                mm.page_table_lock.release()
        finally:
            mm.mmap_lock.up_write()
        return True

