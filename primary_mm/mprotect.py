"""``mm/mprotect.c``: ``mprotect`` and ``change_protection``.

:class:`Mprotect` is mixed into :class:`primary_mm.mm.MM`.
"""

from __future__ import annotations

import numpy as np

from primary_mm.frames import FRAME_ANON, FRAME_ANON_EXCLUSIVE, FRAME_KSM
from primary_mm.vma import parse_prot
from smmu.base.constants import HPAGE_PMD_NR, HPAGE_PMD_SIZE, LEVEL_BITS, PAGE_SHIFT
from smmu.base.pte import (PTE_DIRTY, PTE_HUGE, PTE_MIGRATION, PTE_PRESENT, PTE_PROTNONE,
                           PTE_SPECIAL, PTE_SWAP, PTE_WRITE, pte_pfns)
from smmu.notifier import Event
from primary_mm.operation import mm_operation

_U = np.uint64


class Mprotect:
    """Changing the protection of a range (``mm/mprotect.c``)."""

    # ------------------------------------------------------------------ mprotect
    @mm_operation
    def mprotect(self, addr, length, prot):
        """``mprotect``: change the protection of a fully mapped range. PTEs follow
        (``change_protection``, start/end PROTECTION_VMA per VMA): write access is removed at
        once, added lazily by faults; PROT_NONE entries stay mapped but are not present."""
        self._alive()
        start, end = self._check_range(addr, length, "mprotect")
        self._refuse_hugetlb(start, end, "mprotect")
        prot = parse_prot(prot)
        yield self.mmap_lock.write()
        try:
            yield
            self._check_mapped(start, end, "mprotect")
            for vma in (yield from self._split_vmas(start, end)):
                old = vma.prot
                vma.prot = prot
                yield from self._change_protection(vma, old, prot)
                yield
            yield from self._merge_vmas(start, end)
        finally:
            self.mmap_lock.up_write()

    def _notify_spans(self, start, end) -> list:
        """The ranges mprotect's ``mmu_notifier_invalidate_range_start/end`` pairs cover in
        ``[start, end)``, per ``mprotect_notify`` era: "change_protection" (2.6.27..3.14: one
        pair over the whole range, 2.6.27 ``mprotect_fixup``, 3.10 ``change_protection``);
        "change_pmd_range" (3.15..6.11, a5338093bfb4: at most one pair per PUD-sized span,
        opened lazily "if the pmd is populated", from the first populated PMD to the end of
        the span, none if the span is empty); "change_pud_range" (6.12: the same one level
        up, per P4D span from the first populated PUD). A PMD counts as populated when it
        maps a page-table entry (an empty table left by munmap is not one here)."""
        mode = self.memory.mprotect_notify
        if mode == "change_protection":
            return [(start, end)]
        sub, span = (HPAGE_PMD_SIZE, HPAGE_PMD_SIZE << LEVEL_BITS)
        if mode == "change_pud_range":
            sub, span = span, span << LEVEL_BITS
        vpns, _ptes = self.pt.iter_present(start >> PAGE_SHIFT, end >> PAGE_SHIFT)
        out = []
        a = start
        i = 0
        n = len(vpns)
        while a < end:
            b = min(end, (a // span + 1) * span)           # pud_addr_end / p4d_addr_end
            while i < n and int(vpns[i]) << PAGE_SHIFT < a:
                i += 1
            if i < n and int(vpns[i]) << PAGE_SHIFT < b:
                first = int(vpns[i]) << PAGE_SHIFT
                out.append((max(a, first - first % sub), b))
            a = b
        return out

    def _change_protection(self, vma, old, new):
        """``change_protection``: the PTEs of ``vma`` follow its new protection, under the PT
        lock, with the notifier pairs of the era (:meth:`_notify_spans`, PROTECTION_VMA)
        around them and the TLB flushed inside each pair."""
        subs = self.notifier_subscriptions
        for s, e in self._notify_spans(vma.start, vma.end):
            rng = self._range(s, e, Event.PROTECTION_VMA)
            yield from subs.mmu_notifier_invalidate_range_start(rng)
            yield self.page_table_lock
            try:
                changed = self._change_pte_range(vma, old, new, s >> PAGE_SHIFT, e >> PAGE_SHIFT)
                if changed:
                    self.sched.charge("pte_update", changed)
                    yield from self._flush_tlb_range(s, e)
            finally:
                self.page_table_lock.release()
            yield from subs.mmu_notifier_invalidate_range_end(rng)

    def _change_pte_range(self, vma, old, new, v0, v1) -> int:
        """``change_pte_range`` over ``[v0, v1)``, PT lock held: returns how many entries
        lost rights (what the TLB flush must cover)."""
        changed = self._readonly_nonpresent(v0, v1)
        if new == "none":
            return changed + self.pt.protect_range(v0, v1, PTE_PRESENT | PTE_WRITE, PTE_PROTNONE)
        if old == "none":
            vpns = np.arange(v0, v1, dtype=np.int64)
            cur = self.pt.walk(vpns)
            pn = (cur & _U(PTE_PROTNONE | PTE_SWAP | PTE_MIGRATION)) == _U(PTE_PROTNONE)
            if pn.any():
                cur[pn] = (cur[pn] & ~_U(PTE_PROTNONE)) | _U(PTE_PRESENT)
                self._map_small(v0, cur)
            for vpn, word in self.huge_pmds(v0 << PAGE_SHIFT, v1 << PAGE_SHIFT):
                if word & PTE_PROTNONE:                        # change_huge_pmd
                    self.pt.set_pmd(vpn, (word & ~PTE_PROTNONE) | PTE_PRESENT)
        if "w" not in new:
            changed += self.pt.protect_range(v0, v1, PTE_WRITE, 0)
        elif "w" not in old and self.memory.mprotect_writable_exclusive:
            self._try_change_writable(vma, v0, v1)
        return changed

    def _try_change_writable(self, vma, v0, v1) -> None:
        """``MM_CP_TRY_CHANGE_WRITABLE`` (6.0+, 64fe24a3e05e ``can_change_pte_writable``), PT
        lock held: a read-only PTE becomes writable at once where the write fault would make
        it writable without further checks: in a private mapping an exclusive anonymous page
        ("We can only special-case on exclusive anonymous pages, because we know that our
        write-fault handler similarly would map them writable"), in a shared one a dirty
        PTE ("the FS was already notified"). One batch over the range."""
        cur = self.pt.walk(np.arange(v0, v1, dtype=np.int64))
        cand = ((cur & _U(PTE_PRESENT)) != 0) & ((cur & _U(PTE_WRITE | PTE_SPECIAL)) == 0)
        if not cand.any():
            return
        if vma.shared:
            cand &= (cur & _U(PTE_DIRTY)) != 0
        else:
            fl = self.memory.frames.flags[pte_pfns(cur)]
            cand &= ((fl & FRAME_ANON_EXCLUSIVE) != 0) & ((fl & FRAME_KSM) == 0) & \
                ((fl & FRAME_ANON) != 0)
        if cand.any():
            # change_huge_pmd: "can_change_pmd_writable" (PageAnonExclusive of the PMD's
            # page) for a huge PMD, whole
            for vpn, word in self.huge_pmds(v0 << PAGE_SHIFT, v1 << PAGE_SHIFT):
                i = vpn - v0
                if not vma.shared and cand[i:i + HPAGE_PMD_NR].all():
                    self.pt.set_pmd(vpn, word | PTE_WRITE)
            cur[cand] |= _U(PTE_WRITE)
            self._map_small(v0, cur)
            self.sched.charge("pte_update", int(cand.sum()))

    def _readonly_nonpresent(self, v0, v1) -> int:
        """``change_pte_range`` on non-present entries (PT lock held): every writable
        migration, device-private or device-exclusive entry becomes readable, whatever the
        new protection ("A protection check is difficult so just be safe and disable
        write", 6.8 mm/mprotect.c). Returns how many changed; usually none, so the loop runs
        over the few entries found."""
        vpns, ptes = self.pt.iter_present(v0, v1)
        hit = ((ptes & _U(PTE_PRESENT)) == 0) & ((ptes & _U(PTE_WRITE)) != 0)
        for vpn, pte in zip(vpns[hit].tolist(), ptes[hit].tolist()):
            if pte & PTE_HUGE:                     # a PMD migration entry
                self.pt.set_pmd(vpn, pte & ~PTE_WRITE)
            else:
                self.pt.set(vpn, pte & ~PTE_WRITE)
        return int(hit.sum())
