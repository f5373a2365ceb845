"""``mm/mremap.c``: ``mremap``, ``move_vma`` and ``move_page_tables``.

:class:`Mremap` is mixed into :class:`primary_mm.mm.MM`.
"""

from __future__ import annotations

import numpy as np

from primary_mm.layout import MMAP_MIN_ADDR, as_int
from primary_mm.vma import VMA
from smmu.base.constants import HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SHIFT, PAGE_SIZE, TASK_SIZE
from smmu.base.errors import InvalidArgument, SegmentationFault
from smmu.base.pte import PFN_SHIFT, huge_mask
from smmu.notifier import Event
from primary_mm.operation import mm_operation

_U = np.uint64
_SUB = np.arange(HPAGE_PMD_NR, dtype=np.uint64) << _U(PFN_SHIFT)


class Mremap:
    """Resizing and moving a mapping (``mm/mremap.c``)."""

    # ------------------------------------------------------------------ mremap
    @mm_operation
    def mremap(self, old_addr, old_len, new_len, new_addr=None, *, dontunmap=False):
        """``mremap``: resize a mapping, moving it if needed (MREMAP_MAYMOVE) or to
        ``new_addr`` (MREMAP_FIXED). The old range must lie in one VMA. Returns the address.
        A move runs ``move_page_tables`` (start/end UNMAP on the old range) and then
        ``do_munmap`` of the old range.

        ``dontunmap`` (``MREMAP_DONTUNMAP``, 5.7; any mapping since 5.13): always a move,
        without resizing, and the old range stays mapped but empty: its page tables moved
        away, so a later touch faults in fresh pages (zero pages or the file's), and an
        anonymous old VMA loses its anon_vma (``unlink_anon_vmas``)."""
        self._alive()
        start, old_end = self._check_range(old_addr, old_len, "mremap")
        self._refuse_hugetlb(start, old_end, "mremap")
        new_len = as_int(new_len, "mremap: new length")
        if new_len <= 0:
            raise InvalidArgument(f"mremap: new length {new_len} is empty or negative")
        new_len = (new_len + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        old_len = old_end - start
        if dontunmap and new_len != old_len:
            # "MREMAP_DONTUNMAP is always a move and it does not allow resizing in the
            # process" (6.8 mm/mremap.c)
            raise InvalidArgument(f"mremap: MREMAP_DONTUNMAP moves without resizing: new "
                                  f"length {new_len:#x} must equal the old {old_len:#x}")
        if new_addr is not None:
            new_addr, _ = self._check_range(new_addr, new_len, "mremap(new_addr)")
            if new_addr < MMAP_MIN_ADDR:
                raise InvalidArgument(f"mremap: new_addr {new_addr:#x} is below "
                                      f"{MMAP_MIN_ADDR:#x}")
            if new_addr < old_end and start < new_addr + new_len:
                raise InvalidArgument("mremap: the new range overlaps the old one")
        yield self.mmap_lock.write()
        lock = {}
        try:
            yield
            vma = self.vma_at(start)
            if vma is None or vma.end < old_end:
                raise SegmentationFault(f"mremap: [{start:#x}, {old_end:#x}) is not inside "
                                        "one mapping (Linux: EFAULT)", address=start)
            if not dontunmap and new_addr is None and new_len <= old_len:
                if new_len < old_len:
                    # "Always allow a shrinking remap": __do_munmap(..., true) downgrades
                    # mmap_lock to read (4.20+)
                    yield from self._do_munmap(start + new_len, old_end, downgrade=lock)
                return start
            if not dontunmap and new_addr is None and old_end == vma.end and \
                    not self.vmas_in(old_end, start + new_len) and \
                    start + new_len <= TASK_SIZE and (vma.file is None or vma.shared):
                # vma_expandable: grow in place
                if vma.file is not None and vma.anon:
                    vma.file.resize(max(vma.file.npages, vma.pgoff + (new_len >> PAGE_SHIFT)))
                vma.end = start + new_len
                return start
            if new_addr is None:
                dest = self._get_unmapped_area(None, new_len)
            else:
                dest = new_addr
                yield from self._do_munmap(dest, dest + new_len)
            yield from self._move_vma(vma, start, old_end, dest, new_len, dontunmap)
            return dest
        finally:
            self._mmap_unlock(lock)

    def _move_vma(self, vma, start, old_end, dest, new_len, dontunmap=False):
        """``move_vma``: new VMA, ``move_page_tables``, then unmap the old range (with
        ``dontunmap`` keep it, empty: an anonymous one is split off and unlinked from its
        anon_vma, ``unlink_anon_vmas``)."""
        old_len = old_end - start
        moved = min(old_len, new_len)
        new = VMA(self, dest, dest + new_len, vma.prot, vma.shared, vma.file,
                  vma.pgoff + ((start - vma.start) >> PAGE_SHIFT), vma.flags, anon=vma.anon)
        av = vma.anon_vma
        if av is not None:
            yield from av.lock.lock_write()
            av.link(new)
            av.lock.unlock_write()
        if vma.file is not None and vma.anon and new_len > old_len:
            vma.file.resize(max(vma.file.npages, new.pgoff + (new_len >> PAGE_SHIFT)))
        self._insert_vma(new)
        yield from self._link_file(new)
        subs = self.notifier_subscriptions
        # move_page_tables: start/end (UNMAP) over the old range
        rng = self._range(start, start + moved, Event.UNMAP)
        yield from subs.mmu_notifier_invalidate_range_start(rng)
        # move_page_tables moves a huge PMD whole only when both addresses are PMD aligned
        # ("if (extent == HPAGE_PMD_SIZE && move_pgt_entry(HPAGE_PMD, ...)) continue;
        # split_huge_pmd(vma, old_pmd, old_addr);"): split the others (nested CLEAR)
        if (dest - start) % HPAGE_PMD_SIZE:
            for vpn, _word in self.huge_pmds(start, start + moved):
                yield from self._split_huge_pmd(vpn << PAGE_SHIFT)
        else:
            yield from self._split_huge_edges(start, start + moved)
        # take_rmap_locks: an rmap walk (remove_migration_ptes, try_to_unmap) must see each
        # PTE either at the old or at the new address, never miss it in flight
        rmap = [lk for lk in ((vma.file.mapping.lock if vma.file is not None else None),
                              (av.lock if av is not None else None)) if lk is not None]
        for lk in rmap:
            yield from lk.lock_write()
        yield self.page_table_lock
        try:
            v0 = start >> PAGE_SHIFT
            vpns, ptes = self.pt.clear_range(v0, (start + moved) >> PAGE_SHIFT)
            if len(vpns):
                d = (dest - start) >> PAGE_SHIFT
                arr = np.zeros(int(vpns[-1] - v0) + HPAGE_PMD_NR, dtype=np.uint64)
                arr[vpns - v0] = ptes
                for vpn, word in zip(vpns[huge_mask(ptes)].tolist(),
                                     ptes[huge_mask(ptes)].tolist()):
                    self.pt.set_pmd(vpn + d, word)          # move_huge_pmd
                    i = vpn - v0                            # mark its pages: not PTEs
                    arr[i:i + HPAGE_PMD_NR] = _U(word) + _SUB
                self._map_small(dest >> PAGE_SHIFT, arr[: int(vpns[-1] - v0) + 1])
            self.sched.observer.move(self, start, dest, moved)
            yield from self._flush_tlb_range(start, start + moved)
        finally:
            self.page_table_lock.release()
            for lk in reversed(rmap):
                lk.unlock_write()                  # drop_rmap_locks
        yield from subs.mmu_notifier_invalidate_range_end(rng)
        if not dontunmap:
            yield from self._do_munmap(start, old_end)
        elif av is not None:
            (old,) = self._split_at(start, old_end)
            yield from av.lock.lock_write()
            av.unlink(old)
            av.lock.unlock_write()
