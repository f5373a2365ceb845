"""Mappings, from ``mm/mmap.c``: ``mmap`` (and ``mm_populate``), ``split_vma``, the unmap path
(``unmap_region`` / ``zap_page_range``, ``do_munmap``, ``munmap``) and ``brk``.

:class:`Mmap` is mixed into :class:`primary_mm.mm.MM`.
"""

from __future__ import annotations

import bisect

import numpy as np

from primary_mm.filemap import File
from primary_mm.layout import MMAP_BASE, MMAP_MIN_ADDR, as_int
from primary_mm.vma import VMA, parse_prot, vma_start
from smmu.base.constants import HPAGE_PMD_MASK, HPAGE_PMD_SIZE, PAGE_SHIFT, PAGE_SIZE, TASK_SIZE
from smmu.base.errors import InvalidArgument, OutOfMemory
from smmu.base.pte import (PFN_SHIFT, PTE_DIRTY, PTE_PRESENT, PTE_SPECIAL, PTE_WRITE, PTE_YOUNG,
                           mk_pte)
from smmu.base.log import get_logger
from smmu.notifier import Event
from primary_mm.operation import mm_operation

log = get_logger()

_U = np.uint64


class Mmap:
    """Creating and removing mappings (``mm/mmap.c``)."""

    def _get_unmapped_area(self, hint, length) -> int:
        if hint is not None and hint >= MMAP_MIN_ADDR and hint + length <= TASK_SIZE \
                and not self.vmas_in(hint, hint + length):
            return hint
        cur = MMAP_BASE
        for v in self.vmas:
            if v.end <= cur:
                continue
            if v.start >= cur + length:
                break
            cur = max(cur, v.end)
        if cur + length > TASK_SIZE:
            raise OutOfMemory(f"no free area of {length:#x} bytes left in the address space")
        return cur

    def _insert_vma(self, vma):
        bisect.insort(self.vmas, vma, key=vma_start)

    def _link_file(self, vma):
        if vma.file is not None:
            lk = vma.file.mapping.lock
            yield from lk.lock_write()
            vma.file.mapping.link(vma)
            lk.unlock_write()

    @mm_operation
    def mmap(self, length, prot="rw", shared=False, file=None, offset=0, addr=None,
             fixed=False, populate=False, dontfork=False):
        """``mmap``: map ``length`` bytes (rounded up to pages); returns the address.

        ``prot``: subset of "rwx" or "none". ``shared``: MAP_SHARED (anonymous shared memory
        is shmem: it stays shared across fork). ``file``/``offset``: a file mapping.
        ``addr`` is a hint, or the exact place with ``fixed=True`` (MAP_FIXED: whatever is
        there is unmapped first). ``populate``: MAP_POPULATE. ``dontfork``: MADV_DONTFORK."""
        self._alive()
        prot = parse_prot(prot)
        length = as_int(length, "mmap: length")
        if length <= 0:
            raise InvalidArgument(f"mmap: length {length} is empty or negative")
        length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        if length > TASK_SIZE:
            raise InvalidArgument(f"mmap: length {length:#x} is larger than the address space")
        offset = as_int(offset, "mmap: offset")
        if file is not None:
            if not isinstance(file, File) or file.memory is not self.memory:
                raise InvalidArgument(f"mmap: {file!r} is not a file of this simulator: make "
                                      "it with sim.new_file(name, npages)")
            if offset < 0 or offset % PAGE_SIZE:
                raise InvalidArgument(f"mmap: file offset {offset:#x} must be a non-negative "
                                      "multiple of PAGE_SIZE")
        elif offset:
            raise InvalidArgument("mmap: offset is only meaningful with a file")
        if file is not None and file.hugetlb:
            # hugetlbfs: hugetlb_get_unmapped_area / hugetlbfs_file_mmap want huge-page
            # alignment; MAP_PRIVATE (hugetlb COW) and MAP_POPULATE are not modelled
            if not shared or populate:
                raise InvalidArgument("mmap: a hugetlbfs file is mapped with shared=True "
                                      "and without populate in this model")
            if (offset | length | (addr or 0)) % HPAGE_PMD_SIZE:
                raise InvalidArgument(f"mmap: a hugetlbfs mapping needs offset, length and "
                                      f"addr multiples of {HPAGE_PMD_SIZE:#x} (2 MiB)")
        if fixed and addr is None:
            raise InvalidArgument("mmap: fixed=True needs addr=")
        if addr is not None:
            addr = as_int(addr, "mmap: addr")
            if addr % PAGE_SIZE:
                raise InvalidArgument(f"mmap: addr {addr:#x} is not page aligned")
            if fixed and (addr < MMAP_MIN_ADDR or addr + length > TASK_SIZE):
                raise InvalidArgument(f"mmap: [{addr:#x}, {addr + length:#x}) is outside the "
                                      f"user address space [{MMAP_MIN_ADDR:#x}, {TASK_SIZE:#x})")
        yield self.mmap_lock.write()
        try:
            yield   # preemptible with mmap_lock held
            if fixed:
                start = addr
                yield from self._do_munmap(start, start + length)
            else:
                start = self._get_unmapped_area(addr, length)
            end = start + length
            anon = file is None
            pgoff = None
            if shared and file is None:
                # shmem_zero_setup: shared anonymous memory is a file that fork keeps shared
                file = File(self.memory, f"shmem@{self.name}:{start:#x}",
                            length >> PAGE_SHIFT, shmem=True)
                self.memory.files.append(file)
                pgoff = 0
            elif file is not None:
                pgoff = offset >> PAGE_SHIFT
            vma = VMA(self, start, end, prot, bool(shared), file, pgoff,
                      ("dontfork",) if dontfork else (), anon=anon)
            self._insert_vma(vma)
            yield from self._link_file(vma)
            if populate:
                yield from self._populate(vma, start, end)
        finally:
            self.mmap_lock.up_write()
        return start

    def _populate(self, vma, start, end):
        """``mm_populate`` -> ``populate_vma_page_range``: fault in the range (write faults
        for private writable mappings). Private anonymous ranges are done in one batch:
        one allocation, one ``map_range``, one mapcount update; an aligned 2 MiB block
        where huge pages are allowed (``thp="always"``) faults as one huge page first, as
        the page-by-page GUP of ``populate_vma_page_range`` would. Errors are ignored, as
        Linux ignores them."""
        if not vma.readable:
            return
        write = vma.writable and not vma.shared
        if vma.file is None:
            mem = self.memory
            h = (start + HPAGE_PMD_SIZE - 1) & HPAGE_PMD_MASK
            while h + HPAGE_PMD_SIZE <= end:
                if self.thp_allowed(vma, h) and self._pmd_none(h >> PAGE_SHIFT):
                    yield from self._do_huge_pmd_anonymous_page(vma, h, write)
                h += HPAGE_PMD_SIZE
            vpn0, vpn1 = start >> PAGE_SHIFT, end >> PAGE_SHIFT
            vpns = np.arange(vpn0, vpn1, dtype=np.int64)
            self._anon_vma_prepare(vma)
            yield self.page_table_lock
            try:
                cur = self.pt.walk(vpns)
                empty = cur == 0
                n = int(empty.sum())
                if n == 0:
                    return
                new = cur.copy()
                if write:
                    try:
                        pfns = mem.frames.alloc(n, owner=self.id, flags=mem.new_anon_flags,
                                                zero=True)
                    except OutOfMemory:
                        log.debug("populate: out of memory", mm=self.name)
                        return
                    new[empty] = (pfns.astype(np.uint64) << _U(PFN_SHIFT)) | _U(
                        PTE_PRESENT | PTE_WRITE | PTE_YOUNG | PTE_DIRTY)
                    self._map_small(vpn0, new)
                    mem.frames.inc_mapcount(pfns)
                    mem.set_page_mapping(pfns, vma.anon_vma,
                                         vma.pgoff + (vpns[empty] - vpn0)
                                         + ((start - vma.start) >> PAGE_SHIFT))
                    self.sched.charge("page_zero", n)
                else:
                    new[empty] = _U(mk_pte(mem.zero_pfn, PTE_PRESENT | PTE_SPECIAL | PTE_YOUNG))
                    self._map_small(vpn0, new)
            finally:
                self.page_table_lock.release()
            return
        for va in range(start, end, PAGE_SIZE):
            if vma.linear_page_index(va) >= vma.file.npages:
                break
            try:
                while True:
                    pte = self.pt.lookup(va >> PAGE_SHIFT)
                    if pte & PTE_PRESENT and (not write or pte & PTE_WRITE):
                        break
                    yield from self._handle_fault(va, write, "populate")
            except OutOfMemory:
                return

    # ------------------------------------------------------------------ unmapping
    def _split_vma(self, vma, addr):
        """``split_vma``: ``vma`` keeps ``[start, addr)``, a new VMA gets ``[addr, end)``."""
        new = VMA(self, addr, vma.end, vma.prot, vma.shared, vma.file,
                  vma.pgoff + ((addr - vma.start) >> PAGE_SHIFT), vma.flags, anon=vma.anon)
        vma.end = addr
        if vma.anon_vma is not None:
            vma.anon_vma.link(new)
        if vma.file is not None:
            vma.file.mapping.link(new)
        self._insert_vma(new)
        return new

    @staticmethod
    def _vma_mergeable(a, b) -> bool:
        """Can ``b`` (right after ``a``) join ``a``? 6.8 mm/mmap.c ``vma_merge``'s tests:
        ``is_mergeable_vma`` (same flags and file: here ``prot``, ``shared``, ``flags``),
        ``is_mergeable_anon_vma`` (here: the same anon_vma, which a split leaves both halves)
        and ``can_vma_merge_after`` ("vma->vm_pgoff + vm_pglen == vm_pgoff")."""
        return (a.end == b.start and a.prot == b.prot and a.shared == b.shared
                and a.anon == b.anon and a.file is b.file and a.flags == b.flags
                and a.anon_vma is b.anon_vma and b.pgoff == a.pgoff + a.npages)

    def _merge_vmas(self, start, end):
        """``vma_merge`` after a change of ``[start, end)`` (mprotect): every VMA in or
        next to it that the change made compatible with its neighbour joins it, the left one
        growing over the right one, which goes (``vma_prepare`` / ``vma_complete``: under the
        anon_vma and i_mmap write locks, so that no rmap walk sees it half done). 6.8
        ``mprotect_fixup``: "vma = vma_modify_flags(vmi, *pprev, vma, start, end,
        newflags)", which merges before it splits. Without it an mprotect that is undone
        leaves three VMAs where Linux has one, and every later fork, exit or munmap of the
        mm pays a notifier pair for each."""
        vmas = self.vmas_in(max(0, start - 1), end + 1)
        k = 0
        while k + 1 < len(vmas):
            a, b = vmas[k], vmas[k + 1]
            if not self._vma_mergeable(a, b):
                k += 1
                continue
            av, f = a.anon_vma, a.file
            if av is not None:
                yield from av.lock.lock_write()
            if f is not None:
                yield from f.mapping.lock.lock_write()
            a.end = b.end
            self.vmas.remove(b)
            if f is not None:
                f.mapping.unlink(b)
                f.mapping.lock.unlock_write()
            if av is not None:
                av.unlink(b)
                av.lock.unlock_write()
            vmas.pop(k + 1)

    def _split_at(self, start, end) -> list[VMA]:
        """Split VMAs so that ``start`` and ``end`` are VMA boundaries; return those inside."""
        for v in self.vmas_in(start, start + 1):
            if v.start < start:
                self._split_vma(v, start)
        for v in self.vmas_in(end - 1, end):
            if v.end > end:
                self._split_vma(v, end)
        return self.vmas_in(start, end)

    def _unlink_vma(self, v):
        """``unlink_anon_vmas`` / ``unlink_file_vma`` (under the rmap write locks)."""
        av = v.anon_vma
        if av is not None:
            yield from av.lock.lock_write()
            av.unlink(v)
            av.lock.unlock_write()
        if v.file is not None:
            lk = v.file.mapping.lock
            yield from lk.lock_write()
            v.file.mapping.unlink(v)
            lk.unlock_write()
            if v.file.shmem and not v.file.mapping.i_mmap:
                self.memory.release_shmem(v.file)      # the last reference to the shmem file

    def _zap(self, start, end, event, discard=(), nonblock=False):
        """``unmap_vmas`` / ``zap_page_range``: notifier start, :meth:`_unmap_page_range`
        (clear the PTEs under the PT lock, telling the checker which private contents are
        gone at that step; every full mmu_gather batch is flushed and freed on the way, inside
        the window), notifier end, and only then the pages of the last batch are freed
        (``tlb_finish_mmu``). With ``nonblock`` (the OOM reaper) a refused start skips the
        range: returns False."""
        subs = self.notifier_subscriptions
        rng = self._range(start, end, event, blockable=not nonblock)
        if nonblock:
            if (yield from subs.mmu_notifier_invalidate_range_start_nonblock(rng)):
                return False
        else:
            yield from subs.mmu_notifier_invalidate_range_start(rng)
        # zap_pmd_range: a huge PMD the range covers in part is split (nested CLEAR)
        yield from self._split_huge_edges(start, end)
        ptes = yield from self._unmap_page_range(start, end, discard)
        yield from subs.mmu_notifier_invalidate_range_end(rng)
        self.memory.release_entries(ptes)          # tlb_finish_mmu: the last batch
        return True

    def _zap_no_notifier(self, start, end, discard=()):
        """``unmap_page_range`` with no notifier call around it: the OOM reaper of 4.6 ..
        4.14 (``__oom_reap_task_mm`` in 4.12 calls no ``mmu_notifier``)."""
        ptes = yield from self._unmap_page_range(start, end, discard)
        self.memory.release_entries(ptes)          # tlb_finish_mmu

    def _unmap_page_range(self, start, end, discard=(), fullmm=False):
        """``unmap_page_range`` under an mmu_gather (:mod:`primary_mm.mmu_gather`): clear the
        entries of ``[start, end)`` under the PT lock, report the private contents of the
        ``discard`` ranges gone as they are cleared, and free the pages of every full batch
        on the way (TLB flushed first, then a preemption point: ``cond_resched``), as
        ``zap_pte_range`` does. Returns the entries gathered since the last free, which the
        caller frees after ``invalidate_range_end`` (``tlb_finish_mmu``). ``fullmm``:
        ``exit_mmap``'s gather (one flush of the whole mm, no notifier left to call).

        Simplification: the TLB flush of the last batch is made here, before ``end``, where
        Linux makes it in ``tlb_finish_mmu`` after ``end`` (the pages are freed after it in
        both)."""
        mem = self.memory
        if mem.pool.pmd_sharers:
            self._hugetlb_unshare_range(start, end)
        v0, v1 = start >> PAGE_SHIFT, end >> PAGE_SHIFT
        if mem.gather.may_free_early(v1 - v0):
            vpns, ptes = self.pt.iter_present(v0, v1)
            plan = mem.gather.plan(v0, v1, vpns, ptes)
        else:
            plan = [(v0, v1, False)]
        pending = []
        flushed = v0
        for lo, hi, free in plan:
            yield self.page_table_lock
            try:
                _vpns, ptes = self.pt.clear_range(lo, hi)
                a, b = lo << PAGE_SHIFT, hi << PAGE_SHIFT
                for s, e in discard:
                    if s < b and a < e:
                        self.sched.observer.discard(self, max(s, a), min(e, b))
                self.sched.charge("pte_update", len(ptes))
                if (free or hi == v1) and hi > flushed:
                    if fullmm:
                        self.flush_tlb_cpus()      # tlb_flush_mmu -> flush_tlb_mm
                    else:
                        yield from self._flush_tlb_range(flushed << PAGE_SHIFT, b)
                    flushed = hi
            finally:
                self.page_table_lock.release()
            pending.append(ptes)
            if free:                               # tlb_flush_mmu: the gather is full
                self.sched.stats["gather_flush"] += 1
                for part in mem.gather.free_slices(np.concatenate(pending)):
                    mem.release_entries(part)      # tlb_batch_pages_flush, batch by batch
                    yield                          # cond_resched
                pending = []
        return pending[0] if len(pending) == 1 else np.concatenate(pending)

    def _do_munmap(self, start, end, downgrade=None):
        """``do_munmap`` (mmap_lock held for write): split, detach, ``unmap_region``
        (start/end UNMAP around the zap, 2.6.27 ``unmap_vmas``), free page tables. With
        ``downgrade`` and ``munmap_downgrade`` (4.20+, dd2283f2605e "mm: mmap: zap pages with
        read mmap_sem in munmap") the lock is downgraded to read once the VMAs are detached
        (a fault there finds no VMA), so faults elsewhere, GUP and other readers run during
        the zap: "We can free page tables without write-locking mmap_lock because VMAs were
        isolated before we downgraded mmap_lock" (6.6 ``do_vmi_align_munmap``). ``downgrade``
        is the caller's lock state (:meth:`_mmap_unlock`), marked the moment it downgrades."""
        if not self.vmas_in(start, end):
            return
        vmas = yield from self._split_vmas(start, end)
        for v in vmas:                              # detach_vmas_to_be_unmapped
            self.vmas.remove(v)
        if downgrade is not None and self.memory.munmap_downgrade:
            self.mmap_lock.downgrade_write()        # "if (unlock) mmap_write_downgrade(mm)"
            downgrade["read"] = True
            yield
        yield from self._zap(start, end, Event.UNMAP, [(v.start, v.end) for v in vmas])
        for v in vmas:
            yield from self._unlink_vma(v)
        self.pt.free_empty(start >> PAGE_SHIFT, end >> PAGE_SHIFT)   # free_pgtables

    def _mmap_unlock(self, lock: dict) -> None:
        """Drop the mmap_lock a munmap-like call took for write: for read if
        :meth:`_do_munmap` downgraded it (``lock["read"]``)."""
        if lock.get("read"):
            self.mmap_lock.up_read()
        else:
            self.mmap_lock.up_write()

    @mm_operation
    def munmap(self, addr, length):
        """``munmap``: unmap ``[addr, addr + length)`` (length rounded up to pages). The
        munmap system call downgrades mmap_lock before the zap (4.20+, see
        :meth:`_do_munmap`)."""
        self._alive()
        start, end = self._check_range(addr, length, "munmap")
        yield self.mmap_lock.write()
        lock = {}
        try:
            yield
            yield from self._do_munmap(start, end, downgrade=lock)
        finally:
            self._mmap_unlock(lock)

    @mm_operation
    def brk(self, new_end=None):
        """``brk``: move the end of the heap; returns the new break (the current one for
        ``None``). Shrinking unmaps (start/end UNMAP) and discards the contents.

        The heap VMA's anon_vma lock is taken for write where the 2008 tree took it (the
        tree the seed's patch 09 turned the lock into an rwsem in, and measured Aim9 brk
        on): growing is ``vma_merge`` -> ``vma_adjust``, which then locked the anon_vma of
        any VMA that had one; shrinking splits the heap's tail off (``split_vma`` ->
        ``vma_adjust`` with an insert) before ``do_munmap`` unlinks it
        (``anon_vma_unlink``). 2.6.27's ``vma_adjust`` no longer locks when only
        ``vm_end`` changes ("we don't really need anon_vma lock"), so there a grow does not
        take it."""
        self._alive()
        if new_end is None:
            return self.brk_end
        new_end = as_int(new_end, "brk: address")
        if new_end < self.brk_start or new_end > MMAP_BASE:
            raise InvalidArgument(f"brk: {new_end:#x} is outside the heap area "
                                  f"[{self.brk_start:#x}, {MMAP_BASE:#x})")
        yield self.mmap_lock.write()
        lock = {}
        try:
            yield
            old_top = (self.brk_end + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
            new_top = (new_end + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
            heap = self.vma_at(old_top - 1) if old_top > self.brk_start else None
            if heap is not None and "heap" not in heap.flags:
                heap = None
            if new_top < old_top:
                if heap is not None and heap.anon_vma is not None and heap.start < new_top:
                    # split_vma -> vma_adjust(insert): anon_vma->lock around the split
                    lk = heap.anon_vma.lock
                    yield from lk.lock_write()
                    lk.unlock_write()
                # "mm->brk must to be protected by write mmap_sem so update it before
                # downgrading mmap_sem" (4.20 brk)
                self.brk_end = new_end
                yield from self._do_munmap(new_top, old_top, downgrade=lock)
            elif new_top > old_top:
                if self.vmas_in(old_top, new_top):
                    raise OutOfMemory(f"brk: growing the heap to {new_end:#x} would overlap "
                                      "a mapping (Linux: brk fails, ENOMEM)")
                if heap is not None:
                    av = heap.anon_vma
                    if av is not None:                       # vma_adjust (2008 tree)
                        yield from av.lock.lock_write()
                    heap.end = new_top                       # vma_adjust / do_brk_flags
                    if av is not None:
                        av.lock.unlock_write()
                else:
                    self._insert_vma(VMA(self, old_top, new_top, "rw", flags=("heap",)))
            self.brk_end = new_end
        finally:
            self._mmap_unlock(lock)
        return self.brk_end
