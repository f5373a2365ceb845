"""Device memory migration, from ``mm/migrate_device.c`` (6.8): ``migrate_vma_setup`` /
``migrate_vma_pages`` / ``migrate_vma_finalize`` and ``migrate_device_range``.

A driver moves a range of a process's anonymous memory to its device-private pages, or
back::

    args = MigrateVma(vma, start, end, pgmap_owner=drv, flags=MIGRATE_VMA_SELECT_SYSTEM)
    ret = yield from mem.migrate_vma_setup(args)     # collect + unmap (mmap_lock held)
    for i with args.src[i] & MIGRATE_PFN_MIGRATE:    # the driver: allocate, copy
        args.dst[i] = migrate_pfn(dpage) | (MIGRATE_PFN_WRITE if ...)
    yield from mem.migrate_vma_pages(args)           # move page->mapping, holes inserted
    ... the driver re-points its own mirror here (dmirror_migrate_finalize_and_map) ...
    yield from mem.migrate_vma_finalize(args)        # migration entries -> new pages

Notifier calls, as Linux makes them: ``migrate_vma_collect`` brackets the walk with one
``MMU_NOTIFY_MIGRATE`` range **with** ``owner = pgmap_owner`` (so the owner may skip it: it
re-points its mirror itself); pages still mapped elsewhere are unmapped by ``try_to_migrate``
(a ``MMU_NOTIFY_CLEAR`` per page, no owner); ``migrate_vma_pages`` opens a second MIGRATE
range (with the owner) before it fills holes.

``src`` / ``dst`` entries are ``migrate_pfn(pfn) | MIGRATE_PFN_*`` words (uint64), as in
``include/linux/migrate.h``.
"""

from __future__ import annotations

import numpy as np

from primary_mm.frames import FRAME_ANON, FRAME_DEVICE_PRIVATE, FRAME_DIRTY, FRAME_FILE, \
    FRAME_KSM, FRAME_LOCKED
from primary_mm.rmap import migration_entry
from smmu.base.constants import EINVAL, PAGE_SHIFT, PAGE_SIZE
from smmu.base.errors import UsageError
from smmu.base.pte import (PTE_DEVICE_PRIVATE, PTE_DIRTY, PTE_HUGE, PTE_MAPPED, PTE_MIGRATION,
                           PTE_PRESENT, PTE_SPECIAL, PTE_WRITE, PTE_YOUNG, mk_pte, pte_pfn)
from smmu.notifier import Event

MIGRATE_PFN_VALID = 1 << 0
MIGRATE_PFN_MIGRATE = 1 << 1
MIGRATE_PFN_WRITE = 1 << 3
MIGRATE_PFN_SHIFT = 6

MIGRATE_VMA_SELECT_SYSTEM = 1 << 0
MIGRATE_VMA_SELECT_DEVICE_PRIVATE = 1 << 1

#: one migrate_vma call covers at most this many pages in dmirror (``src_pfns[64]``)
MIGRATE_CHUNK = 64


def migrate_pfn(pfn: int) -> int:
    """``migrate_pfn``: the word naming page ``pfn`` (``MIGRATE_PFN_VALID`` set)."""
    return (int(pfn) << MIGRATE_PFN_SHIFT) | MIGRATE_PFN_VALID


def migrate_pfn_to_page(mpfn) -> int:
    """``migrate_pfn_to_page``: the page of a word, 0 if it names none."""
    mpfn = int(mpfn)
    return mpfn >> MIGRATE_PFN_SHIFT if mpfn & MIGRATE_PFN_VALID else 0


class MigrateVma:
    """``struct migrate_vma``: the range ``[start, end)`` of ``vma`` to migrate, the source
    selection (``flags``: ``MIGRATE_VMA_SELECT_SYSTEM`` and/or
    ``MIGRATE_VMA_SELECT_DEVICE_PRIVATE``), the ``pgmap_owner`` (the driver's device: the
    owner named in the MIGRATE ranges, and the owner a device-private page must have to be
    selected), ``fault_page`` (the device page a CPU fault is migrating back, which holds
    one more reference), and ``src`` / ``dst`` (uint64, one word per page), ``cpages``,
    ``npages``."""

    def __init__(self, vma, start: int, end: int, *, pgmap_owner, flags: int,
                 fault_page: int = 0):
        self.vma = vma
        self.start = int(start) & ~(PAGE_SIZE - 1)
        self.end = int(end) & ~(PAGE_SIZE - 1)
        self.pgmap_owner = pgmap_owner
        self.flags = int(flags)
        self.fault_page = int(fault_page)
        n = max((self.end - self.start) >> PAGE_SHIFT, 0)
        self.src = np.zeros(n, dtype=np.uint64)
        self.dst = np.zeros(n, dtype=np.uint64)
        self.cpages = 0
        self.npages = 0

    def __repr__(self):
        return (f"<MigrateVma [{self.start:#x}, {self.end:#x}) cpages={self.cpages} "
                f"npages={self.npages} owner={getattr(self.pgmap_owner, 'name', None)}>")

    def page(self, i: int) -> int:
        return migrate_pfn_to_page(self.src[i])

    def migrating(self) -> list[int]:
        """Indices whose ``src`` has ``MIGRATE_PFN_MIGRATE``."""
        return np.nonzero(self.src & np.uint64(MIGRATE_PFN_MIGRATE))[0].tolist()


class MigrateDevice:
    """``mm/migrate_device.c``, mixed into :class:`primary_mm.memory.Memory`."""

    # ------------------------------------------------------------------ setup
    def migrate_vma_setup(self, args: MigrateVma):
        """``migrate_vma_setup``: -EINVAL for a bad range; else collect (MIGRATE range with
        the owner; PTEs of pages it can lock become migration entries there) and unmap the
        rest (``try_to_migrate``: CLEAR, no owner); pinned pages are restored. Pages left
        with ``MIGRATE_PFN_MIGRATE`` are locked and unmapped. The caller holds mmap_lock.
        Returns 0 or -EINVAL."""
        vma = args.vma
        if vma is None or getattr(vma, "mm", None) is None or vma.mm.memory is not self:
            return -EINVAL
        mm = vma.mm
        if self.api != "modern":
            raise UsageError("migrate_vma needs notifier_api='modern' (MMU_NOTIFY_MIGRATE "
                             "with an owner: Linux 5.9+)")
        if not mm._mmap_lock_held():
            raise UsageError("migrate_vma_setup: hold mmap_lock (yield mm.mmap_lock.read()) "
                             "around migrate_vma_setup/pages/finalize, as the walk asserts")
        nr = (args.end - args.start) >> PAGE_SHIFT
        if nr <= 0 or not vma.start <= args.start < vma.end or \
                not vma.start < args.end <= vma.end:
            return -EINVAL
        if args.fault_page and not self.frames.test_flags(args.fault_page,
                                                          FRAME_DEVICE_PRIVATE):
            return -EINVAL
        args.src[:] = 0
        args.dst[:] = 0
        args.cpages = 0
        args.npages = 0
        yield from self._migrate_vma_collect(args)
        if args.cpages:
            args.cpages = yield from self.migrate_device_unmap(args.src, args.fault_page)
        return 0

    def _migrate_vma_collect(self, args):
        """``migrate_vma_collect`` + ``migrate_vma_collect_pmd``, under the PT lock."""
        vma = args.vma
        mm = vma.mm
        frames = self.frames
        subs = mm.notifier_subscriptions
        rng = mm._range(args.start, args.end, Event.MIGRATE, owner=args.pgmap_owner)
        yield from subs.mmu_notifier_invalidate_range_start(rng)
        yield from self._migrate_vma_split_huge(mm, args.start, args.end)
        n = (args.end - args.start) >> PAGE_SHIFT
        v0 = args.start >> PAGE_SHIFT
        anonymous = vma.file is None and not vma.shared       # vma_is_anonymous
        select_system = bool(args.flags & MIGRATE_VMA_SELECT_SYSTEM)
        select_device = bool(args.flags & MIGRATE_VMA_SELECT_DEVICE_PRIVATE)
        yield mm.page_table_lock
        try:
            ptes = mm.pt.walk(np.arange(v0, v0 + n, dtype=np.int64))
            unmapped = 0
            for i, pte in enumerate(ptes.tolist()):
                mpfn = 0
                page = 0
                if pte == 0:
                    if anonymous:                       # a hole the driver may fill
                        mpfn = MIGRATE_PFN_MIGRATE
                        args.cpages += 1
                elif pte & PTE_DEVICE_PRIVATE:
                    page = pte_pfn(pte)
                    pgmap = self.page_pgmap(page)
                    if select_device and pgmap is not None and \
                            pgmap.owner is args.pgmap_owner:
                        mpfn = migrate_pfn(page) | MIGRATE_PFN_MIGRATE | \
                            (MIGRATE_PFN_WRITE if pte & PTE_WRITE else 0)
                elif pte & PTE_MAPPED:                  # present (PROT_NONE is pte_present)
                    if pte & PTE_SPECIAL:
                        if select_system:               # the zero page: like a hole
                            mpfn = MIGRATE_PFN_MIGRATE
                            args.cpages += 1
                    elif select_system:
                        page = pte_pfn(pte)
                        mpfn = migrate_pfn(page) | MIGRATE_PFN_MIGRATE | \
                            (MIGRATE_PFN_WRITE if pte & PTE_WRITE else 0)
                # swap, migration and device-exclusive entries are not migrated
                if page and mpfn:
                    if pte & PTE_HUGE or frames.flags[page] & FRAME_KSM or \
                            not frames.flags[page] & (FRAME_ANON | FRAME_FILE):
                        mpfn = 0    # a THP left whole (locked: not split), !page->mapping
                    else:
                        frames.get(page)                # "pin it ... freezes the pte"
                        if self.trylock_page(page):
                            mm.pt.set(v0 + i, migration_entry(page, pte))
                            args.cpages += 1
                            # "Set the dirty flag on the folio now the pte is gone"
                            # (fd35ca3d12cc, 2022: the fast path used to lose it)
                            if pte & PTE_DIRTY:
                                frames.set_flags(page, FRAME_DIRTY)
                            frames.dec_mapcount(page)   # folio_remove_rmap_pte
                            frames.put(page)            # the mapping's reference
                            if pte & PTE_PRESENT:
                                unmapped += 1
                        else:
                            frames.put(page)
                            mpfn = 0
                args.src[i] = mpfn
                args.dst[i] = 0
            args.npages = n
            if unmapped:
                # 60bae7370896 (2022): flush while holding the PT lock, or a concurrent zap
                # finds the PTE gone, does not flush, and frees the page first
                yield from mm._flush_tlb_range(args.start, args.end)
        finally:
            mm.page_table_lock.release()
        yield from subs.mmu_notifier_invalidate_range_end(rng)
        args.end = args.start + (args.npages << PAGE_SHIFT)

    def _migrate_vma_split_huge(self, mm, start, end):
        """The huge PMDs ``migrate_vma_collect_pmd`` meets are split before their PTEs are
        collected, inside the MIGRATE window (6.8 mm/migrate_device.c: "if
        (is_huge_zero_page(page)) { spin_unlock(ptl); split_huge_pmd(vma, pmdp, addr); }
        else { get_page(page); spin_unlock(ptl); if (unlikely(!trylock_page(page))) return
        migrate_vma_collect_skip(start, end, walk); ret = split_huge_page(page); unlock_page
        (page); put_page(page); ..."): the huge zero page's PMD becomes 512 zero-page PTEs
        (a CLEAR of the 2 MiB, nested in the MIGRATE range), a THP becomes 512 small pages
        (``split_huge_page``: its PMD split in every mapping). A THP whose lock is taken is
        left whole, and its pages are skipped (``MIGRATE_PFN`` 0: "FIXME support THP")."""
        frames = self.frames
        for vpn, word in mm.huge_pmds(start, end):
            if word & PTE_MIGRATION:
                continue                    # a PMD migration entry: not collected
            va = vpn << PAGE_SHIFT
            if word & PTE_SPECIAL:
                yield from mm._split_huge_pmd(va)
                continue
            head = pte_pfn(word)
            frames.get(head)
            try:
                if not self.trylock_page(head):
                    continue
                try:
                    yield from self.split_huge_page(head)
                finally:
                    self.unlock_page(head)
            finally:
                frames.put(head)

    def _migrate_check_page(self, page: int, fault_page: int) -> bool:
        """``migrate_vma_check_page``: not pinned (no reference beyond the migrator's, the
        fault's, a device page's, the page or swap cache's)."""
        frames = self.frames
        extra = 1 + (page == fault_page)
        if frames.flags[page] & FRAME_DEVICE_PRIVATE:
            extra += 1                       # "Page from ZONE_DEVICE have one extra reference"
        mapping, index = self.page_mapping(page)
        file = getattr(mapping, "file", None)
        if (file is not None and file.cache.get(index) == page) or \
                self.swap.slot_of.get(page) is not None:
            extra += 1
        return int(frames.refcount[page]) - extra <= int(frames.mapcount[page])

    def migrate_device_unmap(self, src, fault_page: int = 0):
        """``migrate_device_unmap``: pages still mapped somewhere are unmapped by
        ``try_to_migrate`` (one CLEAR page range each, no owner); a page still mapped or
        pinned loses ``MIGRATE_PFN_MIGRATE`` and is restored, unlocked and put. Returns the
        number of pages left migrating (holes included)."""
        frames = self.frames
        restore = []
        unmapped = 0
        for i in range(len(src)):
            page = migrate_pfn_to_page(src[i])
            if not page:
                if int(src[i]) & MIGRATE_PFN_MIGRATE:
                    unmapped += 1
                continue
            if not int(src[i]) & MIGRATE_PFN_MIGRATE:
                continue
            mapping, index = self.page_mapping(page)
            if frames.mapcount[page] > 0 and mapping is not None:
                yield from self._try_to_unmap(page, mapping, index,
                                              lambda vma, p, page=page: migration_entry(page, p),
                                              Event.CLEAR)
            if frames.mapcount[page] > 0 or not self._migrate_check_page(page, fault_page):
                src[i] = np.uint64(int(src[i]) & ~MIGRATE_PFN_MIGRATE)
                restore.append(i)
                continue
            unmapped += 1
        for i in restore:
            page = migrate_pfn_to_page(src[i])
            mapping, index = self.page_mapping(page)
            yield from self._remove_migration_ptes(page, page, mapping, index)
            src[i] = 0
            self.unlock_page(page)
            frames.put(page)
        return unmapped

    # ------------------------------------------------------------------ pages
    def migrate_vma_pages(self, args: MigrateVma):
        """``migrate_vma_pages``: for every page still migrating with a destination, move
        ``page->mapping`` (the caller copied the contents); holes get the new page inserted
        (``migrate_vma_insert_page``, inside a second MIGRATE range with the owner). A page
        that cannot move loses ``MIGRATE_PFN_MIGRATE``."""
        yield from self.migrate_device_pages(args.src, args.dst, args)

    def migrate_device_pages(self, src, dst, migrate=None):
        """``__migrate_device_pages`` (``migrate`` is None for ``migrate_device_range``)."""
        frames = self.frames
        rng = None
        mm = migrate.vma.mm if migrate is not None else None
        for i in range(len(src)):
            new = migrate_pfn_to_page(dst[i])
            page = migrate_pfn_to_page(src[i])
            if not new:
                src[i] = np.uint64(int(src[i]) & ~MIGRATE_PFN_MIGRATE)
                continue
            if not page:
                if not int(src[i]) & MIGRATE_PFN_MIGRATE or migrate is None:
                    continue
                addr = migrate.start + i * PAGE_SIZE
                if rng is None:
                    rng = mm._range(addr, migrate.end, Event.MIGRATE, owner=migrate.pgmap_owner)
                    yield from mm.notifier_subscriptions.mmu_notifier_invalidate_range_start(rng)
                yield from self._migrate_vma_insert_page(migrate, addr, new, i)
                continue
            mapping, index = self.page_mapping(page)
            file = getattr(mapping, "file", None)
            extra = 1 if migrate is not None and migrate.fault_page == page else 0
            if frames.flags[new] & FRAME_DEVICE_PRIVATE:
                # "For now only support anonymous memory migrating to device private": a
                # file page, or a swap-cache page whose slot is still used, stays
                if file is not None or not frames.flags[page] & FRAME_ANON or \
                        not self._folio_free_swap(page):
                    src[i] = np.uint64(int(src[i]) & ~MIGRATE_PFN_MIGRATE)
                    continue
            elif file is not None:
                src[i] = np.uint64(int(src[i]) & ~MIGRATE_PFN_MIGRATE)   # not modelled
                continue
            # migrate_folio(..., MIGRATE_SYNC_NO_COPY): the references, then the mapping
            if mapping is None or not self.migrate_refs_ok(page, mapping, index, extra):
                src[i] = np.uint64(int(src[i]) & ~MIGRATE_PFN_MIGRATE)
                continue
            self.migrate_mapping(page, new, mapping, index)
            keep = int(frames.flags[page]) & (FRAME_ANON | FRAME_DIRTY)
            frames.set_flags(new, keep)
            frames.owner[new] = frames.owner[page]
        if rng is not None:
            yield from mm.notifier_subscriptions.mmu_notifier_invalidate_range_end(rng)

    def _folio_free_swap(self, page: int) -> bool:
        """``folio_free_swap``: drop the page's swap-cache slot if no swap entry uses it."""
        slot = self.swap.slot_of.get(page)
        if slot is None:
            return True
        if self.swap.count[slot] != 0:
            return False
        self.swap.delete_from_swap_cache(slot)
        return True

    def _migrate_vma_insert_page(self, args, addr, new, i):
        """``migrate_vma_insert_page``: map ``new`` at a hole (or over the zero page) of an
        anonymous VMA: a device-private entry (writable if the VMA is) or a present PTE."""
        vma = args.vma
        mm = vma.mm
        frames = self.frames
        if vma.file is not None or vma.shared:
            args.src[i] = np.uint64(int(args.src[i]) & ~MIGRATE_PFN_MIGRATE)
            return
        mm._anon_vma_prepare(vma)
        if frames.flags[new] & FRAME_DEVICE_PRIVATE:
            entry = mk_pte(new, PTE_DEVICE_PRIVATE | (PTE_WRITE if vma.writable else 0))
        else:
            bits = PTE_PRESENT | PTE_YOUNG | (PTE_WRITE | PTE_DIRTY if vma.writable else 0)
            entry = mk_pte(new, bits)
        vpn = addr >> PAGE_SHIFT
        yield mm.page_table_lock
        try:
            old = mm.pt.lookup(vpn)
            if old != 0 and not (old & PTE_PRESENT and old & PTE_SPECIAL):
                args.src[i] = np.uint64(int(args.src[i]) & ~MIGRATE_PFN_MIGRATE)
                return
            if old:
                mm.pt.clear(vpn)                         # ptep_clear_flush of the zero page
                yield from mm._flush_tlb_range(addr, addr + PAGE_SIZE)
            frames.inc_mapcount(new)                     # folio_add_new_anon_rmap
            self.set_page_mapping(new, vma.anon_vma, vma.linear_page_index(addr))
            frames.set_flags(new, self.new_anon_flags)  # "exclusive = 1" with anon_exclusive
            frames.owner[new] = mm.id
            frames.get(new)                              # the mapping's reference
            mm.pt.set(vpn, entry)
            args.src[i] = np.uint64(MIGRATE_PFN_MIGRATE)
        finally:
            mm.page_table_lock.release()

    # ------------------------------------------------------------------ finalize
    def migrate_vma_finalize(self, args: MigrateVma):
        """``migrate_vma_finalize``: migration entries become the new page where the page
        migrated, the old one otherwise; pages are unlocked and the migration's references
        dropped (the old page is freed if nothing else holds it)."""
        yield from self.migrate_device_finalize(args.src, args.dst)

    def migrate_device_finalize(self, src, dst):
        """``migrate_device_finalize``."""
        frames = self.frames
        for i in range(len(src)):
            new = migrate_pfn_to_page(dst[i])
            page = migrate_pfn_to_page(src[i])
            if not page:
                if new:
                    self.unlock_page(new)
                    frames.put(new)
                continue
            if not int(src[i]) & MIGRATE_PFN_MIGRATE or not new:
                if new:
                    self.unlock_page(new)
                    frames.put(new)
                new = page
            mapping, index = self.page_mapping(new)
            if mapping is not None:
                yield from self._remove_migration_ptes(page, new, mapping, index)
            self.unlock_page(page)
            frames.put(page)           # put_page (device) / putback_lru_page: the migrator's
            if new != page:
                self.unlock_page(new)
                frames.put(new)        # the destination's allocation reference

    # ------------------------------------------------------------------ device range
    def migrate_device_range(self, pfns):
        """``migrate_device_range``: select device pages by pfn (a driver freeing its
        memory, ``dmirror_device_evict_chunk``): each live page is referenced and
        trylocked, then unmapped from every process (``try_to_migrate``: CLEAR, no owner).
        Returns the ``src`` words (uint64)."""
        frames = self.frames
        src = np.zeros(len(pfns), dtype=np.uint64)
        for i, pfn in enumerate(pfns):
            pfn = int(pfn)
            if frames.refcount[pfn] <= 0:                # get_page_unless_zero
                continue
            frames.get(pfn)
            if not self.trylock_page(pfn):
                frames.put(pfn)
                continue
            src[i] = np.uint64(migrate_pfn(pfn) | MIGRATE_PFN_MIGRATE)
        yield from self.migrate_device_unmap(src)
        return src

    # ------------------------------------------------------------------ driver helpers
    def alloc_locked_page(self, owner: int) -> int:
        """``alloc_page_vma`` / ``alloc_page`` + ``lock_page``: a system page for the
        process ``owner`` (an mm id), locked, as a driver allocates the destination of a
        migration back to system memory."""
        return self.frames.alloc_one(owner=owner, flags=FRAME_ANON | FRAME_LOCKED, zero=False)

    def copy_highpage(self, dst: int, src: int) -> None:
        """``copy_highpage``: the page contents from ``src`` to ``dst`` (a driver's copy
        between system and device memory; ``src`` 0 clears, as ``clear_highpage``)."""
        self.frames.contents[dst] = self.frames.contents[src] if src else 0
        self.sched.charge("page_copy")
