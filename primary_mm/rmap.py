"""Reverse maps: from a page to the (mm, address) pairs that map it.

As in Linux (mm/rmap.c), nothing stores the list of mappings per page. A page records its
``mapping`` (an :class:`AnonVma`, an :class:`AddressSpace` or a :class:`KsmStable`) and its
``index``; the walkers list the VMAs attached to the mapping and compute each address with
``vma.address_of(index)`` (``vma_address``), then check the PTE really maps the page.

Locks (``rmap_locks=``):

* ``"spinlock"`` (2.6.25): ``anon_vma->lock`` and ``mapping->i_mmap_lock`` are spinlocks; a
  notifier hook called from a reverse-map walk (``try_to_unmap_one``, ``page_mkclean_one``,
  ``page_referenced_one``, ``unmap_mapping_range``) runs atomic;
* ``"rwsem"`` (the seed's patches 09/10): ``anon_vma->sem`` / ``i_mmap_sem`` are rw
  semaphores, walkers take them shared, so hooks may sleep.

:class:`AnonVma` also carries the reference count of the seed's patch 09: ``grab_anon_vma``
takes a reference only if the count is not already zero (``atomic_inc_not_zero``), so a walker
racing with the last unmap cannot resurrect a dying anon_vma.
"""

from __future__ import annotations

import itertools

import numpy as np

from primary_mm.frames import (FRAME_ANON, FRAME_ANON_EXCLUSIVE, FRAME_DEVICE_PRIVATE, FRAME_DIRTY,
                               FRAME_FILE)
from smmu.base.constants import HPAGE_PMD_MASK, HPAGE_PMD_SIZE, PAGE_SHIFT, PAGE_SIZE
from smmu.base.errors import InvalidArgument, SegmentationFault, UsageError
from smmu.base.pte import (PTE_DEVICE_EXCLUSIVE, PTE_DEVICE_PRIVATE, PTE_DIRTY, PTE_HUGE,
                           PTE_MAPPED, PTE_MIGRATION, PTE_PRESENT, PTE_PROTNONE, PTE_SPECIAL,
                           PTE_SWAP, PTE_SWP_EXCLUSIVE, PTE_WRITE, PTE_YOUNG, mk_pte, pte_pfn)
from smmu.notifier import Event

_ids = itertools.count(1)

#: include/linux/mmzone.h: ``#define MIN_LRU_BATCH BITS_PER_LONG`` (the look-around window)
MIN_LRU_BATCH = 64
LRU_GEN = ("off", "look_around", "look_around_notify")


#: what a reverse-map ``one(vma, va)`` returns to end the walk (``rmap_one`` returning false:
#: modern ``rmap_walk`` breaks; 2.6.27's ``try_to_unmap_anon`` stops at ``SWAP_FAIL``)
RMAP_STOP = "stop"


def migration_entry(pfn: int, pte: int) -> int:
    """The migration entry replacing ``pte`` for page ``pfn``: writable if the PTE was
    (6.8 mm/rmap.c ``try_to_migrate_one``: ``if (pte_write(pteval)) entry =
    make_writable_migration_entry(page_to_pfn(subpage))``), so that
    ``remove_migration_ptes`` gives the write permission back."""
    return mk_pte(pfn, PTE_MIGRATION | (int(pte) & PTE_WRITE))


class RmapLock:
    """The lock of an anon_vma or address_space, either a spinlock or an rwsem.

    Use ``yield from lk.lock_read()`` / ``lk.unlock_read()`` (rmap walkers) and
    ``yield from lk.lock_write()`` / ``lk.unlock_write()`` (linking and unlinking VMAs,
    ``mm_take_all_locks``). With a spinlock both sides are the same exclusive lock.
    """

    def __init__(self, sched, kind: str, what: str):
        self.kind = kind
        if kind == "spinlock":
            # 2.6.25: anon_vma->lock, mapping->i_mmap_lock
            self.lock = sched.spinlock("anon_vma->lock" if what == "anon_vma" else "i_mmap_lock")
        else:
            # seed patches 09/10: anon_vma->sem, mapping->i_mmap_sem
            self.lock = sched.rwsem("anon_vma->sem" if what == "anon_vma" else "i_mmap_sem")

    def lock_read(self):
        if self.kind == "spinlock":
            yield self.lock
        else:
            yield self.lock.read()

    def unlock_read(self):
        if self.kind == "spinlock":
            self.lock.release()
        else:
            self.lock.up_read()

    def lock_write(self):
        if self.kind == "spinlock":
            yield self.lock
        else:
            yield self.lock.write()

    def unlock_write(self):
        if self.kind == "spinlock":
            self.lock.release()
        else:
            self.lock.up_write()

    def __repr__(self):
        return f"<RmapLock {self.lock!r}>"


class AnonVma:
    """``struct anon_vma``: the VMAs that may map the anonymous pages of one lineage (a VMA
    and its fork copies and splits share it, as in 2.6.27 before anon_vma chains).

    ``refcount``: one per linked VMA plus one per :func:`grab_anon_vma` holder; at zero the
    anon_vma is dead and cannot be grabbed again."""

    def __init__(self, sched, rmap_locks: str):
        self.id = next(_ids)
        self.lock = RmapLock(sched, rmap_locks, "anon_vma")
        self.vmas: list = []
        self.refcount = 0

    def link(self, vma) -> None:
        """``anon_vma_link`` (the caller holds the write lock or the mm is private to it)."""
        self.vmas.append(vma)
        self.refcount += 1
        vma.anon_vma = self

    def unlink(self, vma) -> None:
        """``anon_vma_unlink``."""
        if vma in self.vmas:
            self.vmas.remove(vma)
            self.refcount -= 1
        vma.anon_vma = None

    def mappings(self, index: int, pfn: int | None = None):
        """``(vma, address)`` for each VMA where page ``index`` would be mapped."""
        out = []
        for vma in self.vmas:
            va = vma.address_of(index)
            if va is not None:
                out.append((vma, va))
        return out

    def __repr__(self):
        return f"<AnonVma #{self.id} {len(self.vmas)} vmas refcount={self.refcount}>"


def grab_anon_vma(anon_vma):
    """Seed patch 09: take a reference on ``anon_vma`` unless it is already dying (refcount
    0, ``atomic_inc_not_zero``). Returns it, or None; drop with :func:`put_anon_vma`."""
    if anon_vma is None or anon_vma.refcount <= 0:
        return None
    anon_vma.refcount += 1
    return anon_vma


def put_anon_vma(anon_vma) -> None:
    anon_vma.refcount -= 1


class AddressSpace:
    """``struct address_space`` of a file: ``i_mmap`` (the VMAs mapping the file, queried by
    page-offset interval as ``vma_interval_tree_foreach`` does) and its lock."""

    def __init__(self, sched, rmap_locks: str, file):
        self.id = next(_ids)
        self.file = file
        self.lock = RmapLock(sched, rmap_locks, "i_mmap")
        self.i_mmap: list = []

    def link(self, vma) -> None:
        self.i_mmap.append(vma)

    def unlink(self, vma) -> None:
        if vma in self.i_mmap:
            self.i_mmap.remove(vma)

    def vmas_overlapping(self, pgoff0: int, pgoff1: int) -> list:
        """VMAs mapping some page offset in ``[pgoff0, pgoff1)``."""
        return [v for v in self.i_mmap
                if v.pgoff < pgoff1 and pgoff0 < v.pgoff + v.npages]

    def mappings(self, index: int, pfn: int | None = None):
        out = []
        for vma in self.vmas_overlapping(index, index + 1):
            va = vma.address_of(index)
            if va is not None:
                out.append((vma, va))
        return out

    def __repr__(self):
        return f"<AddressSpace of {self.file.name!r}: {len(self.i_mmap)} vmas>"


class KsmStable:
    """A KSM stable page's reverse map (``stable_node`` + ``rmap_item``s): the
    ``(anon_vma, index)`` of every mapping merged into it (``rmap_walk_ksm``)."""

    def __init__(self, value: int):
        self.id = next(_ids)
        self.value = value
        self.items: list = []

    def mappings(self, index: int, pfn: int | None = None):
        out = []
        for av, idx in self.items:
            for vma, va in av.mappings(idx):
                out.append((vma, va))
        return out

    def __repr__(self):
        return f"<KsmStable value={self.value:#x} {len(self.items)} rmap items>"


class RmapWalk:
    """The reverse-map walks of ``mm/rmap.c`` (``rmap_walk``, ``page_referenced``,
    ``try_to_unmap``, ``remove_migration_ptes``), mixed into
    :class:`primary_mm.memory.Memory`: each visits every VMA that may map a page under the
    mapping's lock and works on the PTE there.
    """

    def _rmap_lock(self, mapping):
        return getattr(mapping, "lock", None)

    def _walk_mappings(self, pfn, mapping, index, one):
        """``rmap_walk``: under the mapping's lock (read side), call generator ``one(vma, va)``
        for every VMA where page ``index`` may be mapped, until one returns
        :data:`RMAP_STOP`. Returns how many returned True."""
        grabbed = None
        if isinstance(mapping, AnonVma):
            grabbed = grab_anon_vma(mapping)           # seed patch 09
            if grabbed is None:
                return 0
        lk = self._rmap_lock(mapping)
        n = 0
        try:
            if lk is not None:
                yield from lk.lock_read()
            try:
                for vma, va in mapping.mappings(index):
                    done = yield from one(vma, va)
                    if done is RMAP_STOP:
                        break
                    if done:
                        n += 1
            finally:
                if lk is not None:
                    lk.unlock_read()
        finally:
            if grabbed is not None:
                put_anon_vma(grabbed)
        return n

    @staticmethod
    def _maps(pte, pfn) -> bool:
        return bool(pte & PTE_MAPPED) and not pte & PTE_SPECIAL and pte_pfn(pte) == pfn

    def _page_referenced(self, pfn, mapping, index):
        """``folio_referenced`` -> ``folio_referenced_one`` under the PT lock of each
        mapping: ``ptep_clear_flush_young_notify`` (the PTE's accessed bit plus
        ``mmu_notifier_clear_flush_young`` for the page), ``pmdp_clear_flush_young_notify``
        over the 2 MiB of a huge PMD. With ``lru_gen`` the multi-gen LRU looks around the
        young PTE (``lru_gen_look_around``, up to ``MIN_LRU_BATCH`` = 64 pages of the same PMD
        table and VMA): ``"look_around"`` (6.1+) clears the neighbours' accessed bits with
        plain ``ptep_test_and_clear_young``; ``"look_around_notify"`` (6.13 mm/vmscan.c,
        "mm: multi-gen LRU: use {ptep,pmdp}_clear_young_notify()") ages the page itself and
        each neighbour with ``ptep_clear_young_notify`` (``mmu_notifier_clear_young``, no
        flush) instead of ``ptep_clear_flush_young_notify``. Returns how many mappings were
        young (``referenced``)."""
        lru_gen = self.lru_gen

        def one(vma, va):
            mm = vma.mm
            vpn = va >> PAGE_SHIFT
            yield mm.page_table_lock
            try:
                pte = mm.pt.lookup(vpn)
                if not self._maps(pte, pfn):
                    return False
                if pte & PTE_HUGE:
                    return (yield from mm._young_under_ptl(va & HPAGE_PMD_MASK,
                                                           HPAGE_PMD_SIZE))
                if lru_gen == "look_around_notify":
                    if not (yield from mm._young_under_ptl(va, flush=False)):
                        return False
                    for nva in self._look_around(mm, vma, va):
                        yield from mm._young_under_ptl(nva, flush=False)
                    return True
                young_cpu = bool(pte & PTE_YOUNG)
                young = yield from mm._young_under_ptl(va)
                if lru_gen == "look_around" and young_cpu:
                    for nva in self._look_around(mm, vma, va):
                        mm.pt.clear_young(nva >> PAGE_SHIFT)
                return young
            finally:
                mm.page_table_lock.release()
        return (yield from self._walk_mappings(pfn, mapping, index, one))

    @staticmethod
    def _look_around(mm, vma, va) -> list:
        """The neighbours ``lru_gen_look_around`` visits: the pages of ``[start, end)``
        (``max(addr & PMD_MASK, vm_start)`` .. ``min(addr | ~PMD_MASK, vm_end - 1) + 1``,
        narrowed to ``MIN_LRU_BATCH`` pages around ``va``) other than ``va`` that map a
        normal page (``get_pte_pfn``: present, not the zero page)."""
        start = max(va & HPAGE_PMD_MASK, vma.start)
        end = min(va | (HPAGE_PMD_SIZE - 1), vma.end - 1) + 1
        batch = MIN_LRU_BATCH * PAGE_SIZE
        if end - start > batch:
            if va - start < batch // 2:
                end = start + batch
            elif end - va < batch // 2:
                start = end - batch
            else:
                start, end = va - batch // 2, va + batch // 2
        vpns, ptes = mm.pt.iter_present(start >> PAGE_SHIFT, end >> PAGE_SHIFT)
        ok = ((ptes & np.uint64(PTE_PRESENT)) != 0) & ((ptes & np.uint64(PTE_SPECIAL)) == 0)
        return [v << PAGE_SHIFT for v in vpns[ok].tolist() if v << PAGE_SHIFT != va]

    def _try_to_unmap(self, pfn, mapping, index, make, event, owner=None, young_fails=False,
                      share=False):
        """``try_to_unmap`` -> ``try_to_unmap_one`` for each mapping: the entry becomes
        ``make(vma, old)``; v2008 ``invalidate_page`` (via ``ptep_clear_flush_notify``), else a
        one-page start/end. The mapping's reference is dropped after the notifier.

        The walk stops (the page stays mapped where it was not unmapped yet) when 2.6.27's
        young check fails (``young_fails``: "If it's recently referenced ... SWAP_FAIL",
        ``try_to_unmap_anon``: "if (ret == SWAP_FAIL ...) break") or, with ``share`` and
        ``anon_exclusive`` (5.19+, the swap-out and migration of an anonymous page),
        when ``page_try_share_anon_rmap`` refuses a maybe-DMA-pinned exclusive page ("ret =
        false; page_vma_mapped_walk_done(&pvmw); break"); otherwise ``share`` clears
        PageAnonExclusive as the page is unmapped (its swap or migration entry says whether
        it was, see the callers' ``make``)."""
        frames = self.frames

        def one(vma, va):
            mm = vma.mm
            why = {}

            def check(p):
                if not self._maps(p, pfn):
                    return False
                if share and self.maybe_pinned_exclusive(pfn):
                    why["pinned"] = True                   # page_try_share_anon_rmap: -EBUSY
                    return False
                return True

            def after(old, new):
                frames.dec_mapcount(pfn)                   # page_remove_rmap
                if share and self.anon_exclusive:
                    frames.clear_flags(pfn, FRAME_ANON_EXCLUSIVE)
                if new & PTE_SWAP:
                    self.swap.count[pte_pfn(new)] += 1     # swap_duplicate
                if old & PTE_DIRTY and frames.test_flags(pfn, FRAME_FILE):
                    frames.set_flags(pfn, FRAME_DIRTY)

            old = yield from mm._pte_replace(va, check, lambda p: make(vma, p), event,
                                             owner=owner, after=after,
                                             young_fails=young_fails, why=why)
            if old is None:
                return RMAP_STOP if why else False
            frames.put(pfn)                                # page_cache_release(page)
            return True
        return (yield from self._walk_mappings(pfn, mapping, index, one))

    def _remove_migration_ptes(self, old, new, mapping, index):
        """``remove_migration_ptes``: migration entries for ``old`` become PTEs of ``new``
        (``remove_migration_pte``): writable again if the entry was
        (``is_writable_migration_entry``) and the VMA allows it; a device-private ``new``
        gets a device-private entry (``make_writable/readable_device_private_entry``)."""
        frames = self.frames
        entry = mk_pte(old, PTE_MIGRATION)
        device = bool(frames.flags[new] & FRAME_DEVICE_PRIVATE)

        def one(vma, va):
            mm = vma.mm
            vpn = va >> PAGE_SHIFT
            yield mm.page_table_lock
            try:
                pte = mm.pt.lookup(vpn)
                if pte & ~(PTE_WRITE | PTE_SWP_EXCLUSIVE) != entry:
                    return False
                write = bool(pte & PTE_WRITE) and vma.writable
                if self.anon_exclusive and pte & (PTE_WRITE | PTE_SWP_EXCLUSIVE) and \
                        frames.test_flags(new, FRAME_ANON):
                    # "if (folio_test_anon(folio) && !is_readable_migration_entry(entry))
                    # rmap_flags |= RMAP_EXCLUSIVE"
                    frames.set_flags(new, FRAME_ANON_EXCLUSIVE)
                if device:
                    bits = PTE_DEVICE_PRIVATE | (PTE_WRITE if write else 0)
                elif not vma.readable:
                    bits = PTE_PROTNONE
                else:
                    bits = PTE_PRESENT | PTE_YOUNG | (PTE_WRITE | PTE_DIRTY if write else 0)
                mm.pt.set(vpn, mk_pte(new, bits))
                frames.get(new)
                frames.inc_mapcount(new)
                return True
            finally:
                mm.page_table_lock.release()
        n = yield from self._walk_mappings(old, mapping, index, one)
        self.migration_wq.wake_all()
        return n

    def _folio_make_device_exclusive(self, pfn, mm, address, owner):
        """``folio_make_device_exclusive`` -> ``page_make_device_exclusive_one`` on every
        mapping (6.8 mm/rmap.c): an ``MMU_NOTIFY_EXCLUSIVE`` range of the page with
        ``owner`` (the caller of ``make_device_exclusive_range``), and under the PT lock the
        present PTE is cleared and flushed and becomes a device-exclusive entry (writable if
        the PTE was); the mapcount drops, the reference stays with the entry. True if the
        page ended up mapped nowhere and ``mm`` had it writable at ``address``. Anonymous
        pages only ("to avoid potential writeback issues")."""
        frames = self.frames
        if not frames.flags[pfn] & FRAME_ANON or frames.flags[pfn] & FRAME_DEVICE_PRIVATE:
            return False
        mapping, index = self.page_mapping(pfn)
        if mapping is None:
            return False
        valid = []

        def one(vma, va):
            vmm = vma.mm
            vpn = va >> PAGE_SHIFT
            subs = vmm.notifier_subscriptions
            rng = vmm._range(va, va + PAGE_SIZE, Event.EXCLUSIVE, owner=owner)
            yield from subs.mmu_notifier_invalidate_range_start(rng)
            done = False
            yield vmm.page_table_lock
            try:
                pte = vmm.pt.lookup(vpn)
                if self._maps(pte, pfn) and pte & PTE_PRESENT:
                    vmm.pt.clear(vpn)                          # ptep_clear_flush
                    yield from vmm._flush_tlb_range(va, va + PAGE_SIZE)
                    if pte & PTE_DIRTY:
                        frames.set_flags(pfn, FRAME_DIRTY)     # folio_mark_dirty
                    if vmm is mm and va == address and pte & PTE_WRITE:
                        valid.append(True)
                    vmm.pt.set(vpn, mk_pte(pfn, PTE_DEVICE_EXCLUSIVE | (pte & PTE_WRITE)))
                    frames.dec_mapcount(pfn)                   # folio_remove_rmap_pte
                    done = True
            finally:
                vmm.page_table_lock.release()
            yield from subs.mmu_notifier_invalidate_range_end(rng)
            return done
        yield from self._walk_mappings(pfn, mapping, index, one)
        return bool(valid) and int(frames.mapcount[pfn]) == 0


class DeviceExclusive:
    """``make_device_exclusive_range`` (6.8 mm/rmap.c), mixed into
    :class:`primary_mm.mm.MM`."""

    def make_device_exclusive_range(self, start, end, owner=None):
        """``make_device_exclusive_range(mm, start, end, pages, owner)``: fault the pages
        in for write and take a reference (``get_user_pages_remote(FOLL_GET | FOLL_WRITE |
        FOLL_SPLIT_PMD)``: a huge PMD is split into PTEs first, its 2 MiB CLEAR range),
        then make each one the device's exclusively: every CPU mapping becomes a
        device-exclusive entry (an ``MMU_NOTIFY_EXCLUSIVE`` range naming ``owner``), so a
        CPU access faults and takes it back (``remove_device_exclusive_entry``: EXCLUSIVE,
        no owner). Returns the pages, one per page GUP reached (it stops at the first
        inaccessible page): a pfn, **locked and referenced** (the caller maps it, then
        ``unlock_page`` and ``put_page``), or 0 where the page could not be made exclusive.
        The caller holds mmap_lock."""
        self._alive()
        if self.api != "modern":
            raise UsageError("make_device_exclusive_range needs notifier_api='modern' "
                             "(MMU_NOTIFY_EXCLUSIVE: Linux 5.14+)")
        if not self._mmap_lock_held():
            raise UsageError("make_device_exclusive_range: hold mmap_lock (yield "
                             "mm.mmap_lock.read()) around it")
        start, end = int(start), int(end)
        if start % PAGE_SIZE or end % PAGE_SIZE or end <= start:
            raise InvalidArgument(f"make_device_exclusive_range: [{start:#x}, {end:#x}) "
                                  "must be page aligned and non-empty")
        mem = self.memory
        frames = mem.frames
        pages = []
        self._mmget()
        try:
            for va in range(start, end, PAGE_SIZE):
                if self.pt.lookup_pmd(va >> PAGE_SHIFT) & PTE_PRESENT:
                    # FOLL_SPLIT_PMD (6.8 follow_pmd_mask: "if (flags & FOLL_SPLIT_PMD) {
                    # spin_unlock(ptl); split_huge_pmd(vma, pmd, address); ..."): the
                    # device-exclusive entries are PTEs, so a huge PMD is split first
                    yield from self._split_huge_pmd(va)
                try:
                    pages.append((yield from self._follow(va, True, False,
                                                          "make_device_exclusive_range")))
                except SegmentationFault:
                    break                  # get_user_pages_remote: the pages so far
        finally:
            self._mmput()
        for i, pfn in enumerate(pages):
            va = start + i * PAGE_SIZE
            if not mem.trylock_page(pfn):
                frames.put(pfn)
                pages[i] = 0
                continue
            if not (yield from mem._folio_make_device_exclusive(pfn, self, va, owner)):
                mem.unlock_page(pfn)
                frames.put(pfn)
                pages[i] = 0
        return pages
