"""Kernel samepage merging, from ``mm/ksm.c``: ``write_protect_page``, ``replace_page``
and the stable tree.

:class:`Ksm` is mixed into :class:`primary_mm.memory.Memory`.
"""

from __future__ import annotations

import numpy as np

from primary_mm.frames import (FRAME_ANON, FRAME_ANON_EXCLUSIVE, FRAME_KSM, FRAME_LOCKED,
                               FRAME_SWAPCACHE, FRAME_ZERO, NO_OWNER)
from primary_mm.rmap import KsmStable
from smmu.base.constants import HPAGE_PMD_NR, PAGE_SHIFT
from smmu.base.pte import (PTE_PRESENT, PTE_SPECIAL, PTE_WRITE, PTE_YOUNG, expand_huge, huge_mask,
                           mk_pte, pte_pfn, pte_pfns)
from smmu.notifier import Event
from primary_mm.operation import mm_operation


class Ksm:
    """Merging identical anonymous pages (``mm/ksm.c``)."""

    def _ksm_split_huge(self, mm, start, end):
        """``try_to_merge_one_page``: "if (PageTransCompound(page)) { if (split_huge_page(page))
        goto out_unlock; }": a huge page with a page that has a twin in the range (or in the
        stable tree) is split before its pages are merged; the others stay huge."""
        frames = self.frames
        vpns, ptes = mm.pt.iter_present(start >> PAGE_SHIFT, end >> PAGE_SHIFT)
        h = huge_mask(ptes) & ((ptes & np.uint64(PTE_SPECIAL)) == 0) & \
            ((ptes & np.uint64(PTE_PRESENT)) != 0)
        if not h.any():
            return
        x = expand_huge(ptes[((ptes & np.uint64(PTE_PRESENT)) != 0) &
                             ((ptes & np.uint64(PTE_SPECIAL)) == 0)])
        values, counts = np.unique(frames.contents[pte_pfns(x)], return_counts=True)
        twins = set(values[counts > 1].tolist()) | set(self.ksm_stable)
        for head in pte_pfns(ptes[h]).tolist():
            if twins & set(frames.contents[head:head + HPAGE_PMD_NR].tolist()):
                yield from self.split_huge_page(head)

    @mm_operation
    def ksm_merge(self, mm, addr, length):
        """Merge identical anonymous pages of the range (and with existing KSM pages):
        ``write_protect_page`` (v2008: ``ptep_clear_flush`` + ``set_pte_at_notify`` ->
        ``change_pte``; otherwise start/end CLEAR), compare, ``replace_page`` (the same
        hooks) with the KSM page, which becomes FRAME_KSM and read-only everywhere.
        Returns the number of pages merged away.

        References, as mm/ksm.c holds them (6.6): each candidate is looked up again when
        its turn comes (``scan_get_next_rmap_item`` -> ``follow_page(FOLL_GET)``) and that
        reference is held until its merge is over (``ksm_do_scan``: ``put_page`` after
        ``cmp_and_merge_page``); a page promoted to KSM page keeps its scan reference until
        every page of its group was merged into it (``try_to_merge_two_pages``), an
        existing stable page the reference ``stable_tree_search`` -> ``get_ksm_page`` took.
        So a COW that copies the page away while a notifier hook of the merge sleeps cannot
        free it under the merge."""
        self._check_mm(mm, "ksm_merge")
        start, end = mm._check_range(addr, length, "ksm_merge")
        frames = self.frames
        merged = 0
        yield mm.mmap_lock.read()
        try:
            yield from self._ksm_split_huge(mm, start, end)
            vpns, ptes = mm.pt.iter_present(start >> PAGE_SHIFT, end >> PAGE_SHIFT)
            present = ((ptes & np.uint64(PTE_PRESENT)) != 0) & \
                ((ptes & np.uint64(PTE_SPECIAL)) == 0)
            vpns, ptes = vpns[present], ptes[present]
            pfns = pte_pfns(ptes)
            ok = ((frames.flags[pfns] & FRAME_ANON) != 0) & \
                ((frames.flags[pfns] & FRAME_KSM) == 0) & (frames.mapcount[pfns] == 1)
            groups: dict[int, list] = {}          # the candidates, by contents (checksum)
            for vpn, pfn in zip(vpns[ok].tolist(), pfns[ok].tolist()):
                groups.setdefault(int(frames.contents[pfn]), []).append(vpn << PAGE_SHIFT)
            for value, vas in groups.items():
                kpage = self._ksm_stable_page(value)
                if kpage is not None:
                    frames.get(kpage)             # get_ksm_page: held across the merges
                elif len(vas) < 2:
                    continue
                while kpage is None and vas:
                    va = vas.pop(0)
                    page = yield from self._ksm_candidate(mm, va, value)
                    if page is None:
                        continue
                    if (yield from self._ksm_promote(mm, va, page, value)):
                        kpage = page              # keeps its scan reference
                    else:
                        frames.put(page)          # ksm_do_scan: put_page(page)
                if kpage is None:
                    continue
                try:
                    for va in vas:
                        yield
                        page = yield from self._ksm_candidate(mm, va, value)
                        if page is None:
                            continue
                        try:
                            if (yield from self._ksm_merge_one(mm, va, page, kpage, value)):
                                merged += 1
                        finally:
                            frames.put(page)      # ksm_do_scan: put_page(page)
                finally:
                    frames.put(kpage)
        finally:
            mm.mmap_lock.up_read()
        self.sched.stats["ksm_merged"] += merged
        return merged

    def _ksm_candidate(self, mm, va, value):
        """``scan_get_next_rmap_item``: ``follow_page(vma, addr, FOLL_GET)`` at ``va`` now;
        the page with a reference if it is still an anonymous, non-KSM page holding
        ``value`` (else None, nothing held)."""
        frames = self.frames
        if mm.vma_at(va) is None:
            return None
        page = yield from mm.follow_page(va)
        if page is None:
            return None
        fl = int(frames.flags[page])
        if not fl & FRAME_ANON or fl & (FRAME_KSM | FRAME_ZERO) or \
                int(frames.contents[page]) != value:
            frames.put(page)
            return None
        return page

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
        def after(old, new):
            # "See page_try_share_anon_rmap(): clear PTE first": a KSM candidate is not
            # exclusive any more (a pinned one was refused by the count check above)
            frames.clear_flags(pfn, FRAME_ANON_EXCLUSIVE)
        old = yield from mm._pte_replace(va, check, lambda p: p & ~PTE_WRITE, Event.CLEAR,
                                         notify="set_pte_at_notify", after=after)
        return old

    def _ksm_promote(self, mm, va, pfn, value):
        """``try_to_merge_with_ksm_page(rmap_item, page, NULL)``: write-protect the page and
        make it the KSM page (``set_page_stable_node``). The caller holds the scan reference
        (the ``+ 1`` of ``write_protect_page``'s check) and keeps it if this succeeds."""
        frames = self.frames
        if not self.trylock_page(pfn):
            return False
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

    def _ksm_merge_one(self, mm, va, pfn, kpage, value):
        """``try_to_merge_with_ksm_page(rmap_item, page, kpage)``: write-protect ``pfn`` and
        ``replace_page`` it with ``kpage``. The caller holds a reference on both."""
        frames = self.frames
        if pfn == kpage:                                   # "ksm page forked"
            return False
        if not self.trylock_page(pfn):
            return False
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
                frames.get(kpage)                          # replace_page: get_page(kpage)
                frames.inc_mapcount(kpage)
                frames.dec_mapcount(pfn)                   # page_remove_rmap
            # replace_page
            # never map a KSM page that migration holds locked (its PTEs are being
            # replaced by migration entries right now)
            old = yield from mm._pte_replace(
                va, lambda p: p == wp and not frames.test_flags(kpage, FRAME_LOCKED),
                lambda p: mk_pte(kpage, PTE_PRESENT | PTE_YOUNG),
                Event.CLEAR, notify="set_pte_at_notify", after=after)
            if old is None:
                return False
            frames.put(pfn)                                # replace_page: put_page(page)
            stable, _ = self.page_mapping(kpage)
            stable.items.append((vma.anon_vma, vma.linear_page_index(va)))
            return True
        finally:
            self.unlock_page(pfn)
