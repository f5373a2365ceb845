"""``fork``: ``dup_mmap`` (``kernel/fork.c``) and ``copy_page_range`` (``mm/memory.c``).

:class:`Fork` is mixed into :class:`primary_mm.mm.MM`.
"""

from __future__ import annotations

import numpy as np

from primary_mm.copy_pte import fork_dma_scan, fork_share
from primary_mm.copy_pte_ref import fork_dma_scan_ref, fork_share_ref
from primary_mm.frames import FRAME_ANON
from primary_mm.vma import VMA
from smmu.base.constants import PAGE_SHIFT
from smmu.base.errors import OutOfMemory
from smmu.base.pte import (PTE_DEVICE_EXCLUSIVE, PTE_DIRTY, PTE_PRESENT, PTE_WRITE, PTE_YOUNG,
                           mapped_mask, mk_pte, pte_pfn, pte_pfns,
                           swap_slots)
from smmu.notifier import Event
from primary_mm.operation import mm_operation


class Fork:
    """Copying an address space into a child (``kernel/fork.c``, ``mm/memory.c``)."""

    # ------------------------------------------------------------------ fork
    def _pte_alloc(self, child):
        """``pte_alloc``: a page-table page for the child, taken from the frame allocator
        (so that injected allocation failures hit fork mid-copy, as ENOMEM from
        ``copy_pte_range`` did)."""
        pfn = self.memory.frames.alloc_one(owner=child.id, flags=0, zero=True)
        child.pt_pages.append(pfn)

    @mm_operation
    def fork(self):
        """``fork`` -> ``dup_mmap``: a child address space. Private mappings are copied
        with ``copy_page_range`` (start/end on *this* mm around COW mappings, both sides
        write-protected); shared mappings are re-faulted by the child; DONTFORK VMAs are
        skipped. An allocation failure mid-copy raises OutOfMemory after the child is torn
        down (and, unless ``fork_enomem_bug``, after the matching end)."""
        self._alive()
        mem = self.memory
        yield self.mmap_lock.write()
        child = None
        try:
            yield
            child = mem._new_mm(f"{self.name}-child")
            child.brk_start, child.brk_end = self.brk_start, self.brk_end
            for vma in list(self.vmas):
                if vma.dontfork:
                    continue
                nv = VMA(child, vma.start, vma.end, vma.prot, vma.shared, vma.file,
                         vma.pgoff, vma.flags, anon=vma.anon)
                if vma.anon_vma is not None:
                    # anon_vma_fork (2.6.27: the child joins the parent's anon_vma)
                    yield from vma.anon_vma.lock.lock_write()
                    vma.anon_vma.link(nv)
                    vma.anon_vma.lock.unlock_write()
                child._insert_vma(nv)
                yield from child._link_file(nv)
                yield from self._copy_page_range(child, vma)
                yield
            child.sched.stats["fork"] += 1
        except OutOfMemory:
            if child is not None:
                yield from child._teardown()
            raise
        finally:
            self.mmap_lock.up_write()
        return child

    def _copy_page_range(self, child, vma):
        """``copy_page_range``: copy the PTEs of one VMA into the child."""
        mem = self.memory
        frames = mem.frames
        if vma.shared or vma.anon_vma is None:
            # "Don't copy ptes where a page fault will fill them correctly."
            self.sched.observer.fork_copy(self, child, vma.start, vma.end)
            return
        subs = self.notifier_subscriptions
        cow = vma.is_cow
        rng = self._range(vma.start, vma.end, Event.PROTECTION_PAGE)
        if cow:
            yield from subs.mmu_notifier_invalidate_range_start(rng)
        v0, v1 = vma.start >> PAGE_SHIFT, vma.end >> PAGE_SHIFT
        scan = None
        if mem.fork_copies_pinned:
            # one read of the range: huge PMDs to split, pinned pages, device-exclusive ones
            scan = self._dma_scan(v0, v1)
            if scan[0]:
                yield from self._split_pinned_huge(vma.start, vma.end)
                scan = None                     # the split changed the entries: read again
        try:
            self._pte_alloc(child)
            pinned_new = None
            if mem.fork_copies_pinned:
                # page_needs_cow_for_dma (5.9+): pages that may be DMA-pinned are copied for
                # the child; preallocate before taking the locks (copy_present_page)
                if scan is None:
                    scan = self._dma_scan(v0, v1)
                npin = scan[1]
                if npin:
                    pinned_new = frames.alloc(npin, owner=child.id, flags=mem.new_anon_flags,
                                              zero=False)
        except OutOfMemory:
            if cow and not mem.fork_enomem_bug:
                # the fix from the 2008 review: break out of the loop, fall through to end
                yield from subs.mmu_notifier_invalidate_range_end(rng)
            # fork_enomem_bug: "return -ENOMEM" straight out of the loop, end never called
            raise
        if scan is None or scan[2]:
            excl = yield from self._lock_exclusive_pages(v0, v1)
        else:
            excl = ()                           # the scan found no device-exclusive entry
        yield child.page_table_lock                 # dst_ptl = pte_alloc_map_lock
        yield self.page_table_lock                  # spin_lock_nested(src_ptl)
        try:
            self._restore_exclusive_ptes(vma, excl)
            vpns, ptes = self.pt.copy_range(child.pt, v0, v1, cow)
            self.sched.observer.fork_copy(self, child, vma.start, vma.end)
            if pinned_new is not None:
                pfns_all = pte_pfns(ptes)
                mapped = mapped_mask(ptes)
                pin = mapped.copy()
                pin[mapped] = ((frames.pincount[pfns_all[mapped]] > 0)
                               & ((frames.flags[pfns_all[mapped]] & FRAME_ANON) != 0))
                idx = np.nonzero(pin)[0][: len(pinned_new)]
                for k, i in enumerate(idx.tolist()):
                    vpn = int(vpns[i])
                    old_pfn = int(pfns_all[i])
                    newp = int(pinned_new[k])
                    frames.contents[newp] = frames.contents[old_pfn]
                    bits = PTE_PRESENT | PTE_YOUNG | PTE_DIRTY
                    if vma.writable:
                        bits |= PTE_WRITE
                    child.pt.set(vpn, mk_pte(newp, bits))
                    # the parent keeps its PTE as it was (writable)
                    src_pte = self.pt.lookup(vpn)
                    if vma.writable and src_pte & PTE_PRESENT:
                        self.pt.set(vpn, src_pte | PTE_WRITE)
                    mem.set_page_mapping(newp, vma.anon_vma,
                                         vma.linear_page_index(vpn << PAGE_SHIFT))
                    self.sched.charge("page_copy")
                frames.inc_mapcount(pinned_new[: len(idx)])
                if len(idx) < len(pinned_new):     # unpinned meanwhile: not needed
                    frames.put(pinned_new[len(idx):])
                mapped[idx] = False
                nswap = fork_share_ref(frames, ptes, mem.anon_exclusive, mapped)
            else:
                # copy_huge_pmd: a huge PMD maps (and now shares) each of its 512 frames;
                # anonymous pages are COW-shared between parent and child (no owner) and,
                # with anon_exclusive, page_try_dup_anon_rmap: "It's okay to share the anon
                # page between both processes, mapping the page R/O into both processes":
                # ClearPageAnonExclusive (copy_range cleared the exclusive bit of swap and
                # migration entries, as copy_nonpresent_pte does)
                nswap = fork_share(frames.meta, frames.refcount, frames.mapcount,
                                   frames.pincount, frames.flags, frames.owner, ptes,
                                   mem.anon_exclusive)
                if nswap < 0:
                    frames._raise_errors("get" if nswap == -1 else "inc_mapcount")
            if nswap:
                mem.swap.dup(swap_slots(ptes))
            self.sched.charge("pte_update", len(ptes))
            if cow and self.api == "modern" and len(ptes):
                yield from self._flush_tlb_range(vma.start, vma.end)
        finally:
            self.page_table_lock.release()
            child.page_table_lock.release()
            for _vpn, _pte, pfn in excl:
                mem.unlock_page(pfn)
        if cow:
            yield from subs.mmu_notifier_invalidate_range_end(rng)

    def _dma_scan(self, v0, v1):
        """``(huge_pinned, npin, nexcl)`` of the entries of ``[v0, v1)``
        (:func:`primary_mm.copy_pte.fork_dma_scan`; its numpy reference raises for an entry
        beyond the frame table)."""
        frames = self.memory.frames
        _vpns, ptes = self.pt.iter_present(v0, v1)
        scan = fork_dma_scan(ptes, frames.pincount, frames.flags)
        if scan[1] < 0:
            return fork_dma_scan_ref(ptes, frames.pincount, frames.flags)
        return scan

    def _lock_exclusive_pages(self, v0, v1):
        """The device-exclusive entries of ``[v0, v1)`` and their pages, locked
        (``try_restore_exclusive_pte`` needs the page lock; Linux trylocks and fails the
        fork with -EBUSY when it is taken; here fork waits for it)."""
        vpns, ptes = self.pt.iter_present(v0, v1)
        hit = (ptes & np.uint64(PTE_DEVICE_EXCLUSIVE)) != 0
        out = []
        for vpn, pte in zip(vpns[hit].tolist(), ptes[hit].tolist()):
            pfn = pte_pfn(pte)
            yield from self.memory.lock_page(pfn)
            out.append((vpn, pte, pfn))
        return out

    def _restore_exclusive_ptes(self, vma, excl):
        """``copy_nonpresent_pte`` on a device-exclusive entry: "Make device exclusive
        entries present by restoring the original entry then copying as for a present pte"
        (``restore_exclusive_pte``: writable if the entry was, not young; the entry's
        reference becomes the mapping's). PT lock held."""
        frames = self.memory.frames
        for vpn, pte, pfn in excl:
            if self.pt.lookup(vpn) != pte:
                continue
            bits = PTE_PRESENT | (PTE_WRITE | PTE_DIRTY if pte & PTE_WRITE and vma.writable
                                  else 0)
            self.pt.set(vpn, mk_pte(pfn, bits))
            frames.inc_mapcount(pfn)
