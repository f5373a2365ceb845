"""Kernel samepage merging, from ``mm/ksm.c``: ``write_protect_page``, ``replace_page``
and the stable tree.

:class:`Ksm` is mixed into :class:`primary_mm.memory.Memory`.
"""

from __future__ import annotations

import numpy as np

from primary_mm.frames import FRAME_ANON, FRAME_KSM, FRAME_LOCKED, FRAME_SWAPCACHE, NO_OWNER
from primary_mm.rmap import KsmStable
from smmu.base.constants import PAGE_SHIFT
from smmu.base.pte import PTE_PRESENT, PTE_SPECIAL, PTE_WRITE, PTE_YOUNG, mk_pte, pte_pfn, pte_pfns
from smmu.notifier import Event


class Ksm:
    """Merging identical anonymous pages (``mm/ksm.c``)."""

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
            pfns = pte_pfns(ptes)
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
