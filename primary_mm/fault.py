"""Faults and page access, from ``mm/memory.c`` (CPU loads and stores, ``handle_mm_fault``,
``do_anonymous_page``, ``do_fault``, ``do_wp_page``, ``do_swap_page``) and ``mm/gup.c``
(``get_user_pages``, ``pin_user_pages``); the CPU fault on device-private and device-exclusive
entries (``do_swap_page``: ``migrate_to_ram``, ``remove_device_exclusive_entry``).

:class:`Faults` is mixed into :class:`primary_mm.mm.MM`; its methods use the address space's
state (``self.pt``, ``self.vmas``, ``self.memory``, the locks) and helpers defined there.
"""

from __future__ import annotations

from primary_mm.frames import FRAME_ANON, FRAME_ANON_EXCLUSIVE, FRAME_DIRTY, FRAME_KSM, FRAME_LOCKED
from primary_mm.layout import as_int, as_value
from primary_mm.memremap import VM_FAULT_SIGBUS, Vmf
from primary_mm.rmap import AnonVma
from smmu.base.constants import EMLINK, PAGE_SHIFT, PAGE_SIZE, TASK_SIZE
from smmu.base.errors import InvalidArgument, SegmentationFault
from smmu.base.pte import (PTE_DEVICE_EXCLUSIVE, PTE_DEVICE_PRIVATE, PTE_DIRTY, PTE_HUGE,
                           PTE_MIGRATION, PTE_PRESENT, PTE_PROTNONE, PTE_SPECIAL, PTE_SWAP,
                           PTE_SWP_EXCLUSIVE,
                           PTE_WRITE, PTE_YOUNG, mk_pte, pte_pfn)
from smmu.notifier import Event
from primary_mm.operation import mm_operation


class Faults:
    """The fault and GUP paths of an address space (``mm/memory.c``, ``mm/gup.c``)."""

    @mm_operation
    def read(self, va):
        """A CPU load from ``va``: returns the page's value (faulting it in as needed)."""
        self._alive()
        va = as_int(va, "read: address")
        self.switch_mm()              # the load runs on the task's CPU, in this mm
        vpn = va >> PAGE_SHIFT
        frames = self.memory.frames
        while True:
            pte = self.pt.lookup(vpn) if 0 <= va < TASK_SIZE else 0
            if pte & PTE_PRESENT:
                if not pte & PTE_YOUNG:
                    self.pt.touch(vpn, PTE_YOUNG)           # the hardware sets the A bit
                value = int(frames.contents[pte_pfn(pte)])
                self.sched.observer.cpu_access(self, va, False, value)
                return value
            yield from self.handle_mm_fault(va, False)

    @mm_operation
    def write(self, va, value):
        """A CPU store of ``value`` (a 64-bit integer: the page's new value) to ``va``."""
        self._alive()
        va = as_int(va, "write: address")
        value = as_value(value, "write: value")
        self.switch_mm()
        vpn = va >> PAGE_SHIFT
        frames = self.memory.frames
        while True:
            pte = self.pt.lookup(vpn) if 0 <= va < TASK_SIZE else 0
            if pte & PTE_PRESENT and pte & PTE_WRITE:
                if (pte & (PTE_YOUNG | PTE_DIRTY)) != (PTE_YOUNG | PTE_DIRTY):
                    self.pt.touch(vpn, PTE_YOUNG | PTE_DIRTY)       # A and D bits
                frames.contents[pte_pfn(pte)] = value
                self.sched.observer.cpu_access(self, va, True, value)
                return value
            yield from self.handle_mm_fault(va, True)

    @mm_operation
    def handle_mm_fault(self, va, write=False):
        """Resolve one fault at ``va`` (``handle_mm_fault``). Takes ``mmap_lock`` for read
        unless the current task already holds it. Raises ``SegmentationFault`` for an
        access the VMA forbids (SIGBUS beyond the end of a file)."""
        va = as_int(va, "handle_mm_fault: address")
        self._mmget()
        try:
            took = not self._mmap_lock_held()
            if took:
                yield self.mmap_lock.read()
            try:
                yield from self._handle_fault(va, bool(write))
            finally:
                if took:
                    self.mmap_lock.up_read()
        finally:
            self._mmput()

    def _handle_fault(self, va, write, op="fault", unshare=False):
        """``__handle_mm_fault`` -> ``handle_pte_fault``; mmap_lock held. One step of
        progress: the caller re-checks the PTE and calls again if needed. ``unshare``:
        ``FAULT_FLAG_UNSHARE`` (GUP's R/O pin of a possibly shared page, 5.19+)."""
        vma = self._access_vma(va, write, op)
        va &= ~(PAGE_SIZE - 1)
        self.sched.charge("page_fault")
        vpn = va >> PAGE_SHIFT
        pte = self.pt.lookup(vpn)
        if pte & PTE_HUGE:
            yield from self._huge_pmd_fault(vma, va, pte, write, op)
            return
        if pte & PTE_PRESENT:
            if (write or unshare) and not pte & PTE_WRITE:
                yield from self._do_wp_page(vma, va, pte, unshare=unshare and not write)
            return
        if pte & PTE_DEVICE_PRIVATE:
            yield from self._do_device_private_fault(vma, va, pte)
        elif pte & PTE_DEVICE_EXCLUSIVE:
            yield from self._remove_device_exclusive_entry(vma, va, pte)
        elif pte & PTE_SWAP:
            yield from self._do_swap_page(vma, va, pte, write)
        elif pte & PTE_MIGRATION:
            # migration_entry_wait: sleep until the migration entry is gone
            yield self.memory.migration_wq.wait_until(lambda: self.pt.lookup(vpn) != pte)
        elif pte & PTE_PROTNONE:
            # mprotect changes the VMA and its PTEs under mmap_lock for write: a PROT_NONE
            # entry under an accessible VMA cannot be seen here
            raise SegmentationFault(f"{op}: {va:#x} is PROT_NONE (SIGSEGV)", address=va)
        elif vma.file is not None and vma.file.hugetlb:
            yield from self._hugetlb_fault(vma, va, write)
        elif vma.file is not None:
            yield from self._do_fault(vma, va, write)
        elif not (pte == 0 and self.thp_allowed(vma, va) and self._pmd_none(vpn)
                  and (yield from self._do_huge_pmd_anonymous_page(vma, va, write))):
            yield from self._do_anonymous_page(vma, va, write)

    def _anon_vma_prepare(self, vma):
        """``anon_vma_prepare``: give the VMA an anon_vma before its first anonymous page."""
        if vma.anon_vma is None:
            av = AnonVma(self.sched, self.memory.rmap_locks)
            av.link(vma)

    def _do_anonymous_page(self, vma, va, write):
        """``do_anonymous_page``: a read maps the shared zero page (PTE_SPECIAL, read-only);
        a write maps a new zeroed page."""
        mem = self.memory
        vpn = va >> PAGE_SHIFT
        self._anon_vma_prepare(vma)
        if not write:
            zero = mk_pte(mem.zero_pfn, PTE_PRESENT | PTE_SPECIAL | PTE_YOUNG)
            yield self.page_table_lock
            try:
                if self.pt.lookup(vpn) == 0:
                    self.pt.set(vpn, zero)
            finally:
                self.page_table_lock.release()
            return
        pfn = mem.frames.alloc_one(owner=self.id, flags=mem.new_anon_flags, zero=True)
        self.sched.charge("page_zero")
        yield   # preemptible between the allocation and the PT lock
        yield self.page_table_lock
        try:
            installed = self.pt.lookup(vpn) == 0
            if installed:
                self.pt.set(vpn, mk_pte(pfn, PTE_PRESENT | PTE_WRITE | PTE_YOUNG | PTE_DIRTY))
                mem.frames.inc_mapcount(pfn)
                mem.set_page_mapping(pfn, vma.anon_vma, vma.linear_page_index(va))
        finally:
            self.page_table_lock.release()
        if not installed:
            mem.frames.put(pfn)

    def _do_fault(self, vma, va, write):
        """``do_fault``: ``do_read_fault`` / ``do_shared_fault`` map the page-cache page;
        ``do_cow_fault`` (private write) maps a private copy."""
        mem = self.memory
        file = vma.file
        vpn = va >> PAGE_SHIFT
        pgoff = vma.linear_page_index(va)
        cow = write and not vma.shared
        pfn = mem.filemap_get_page(file, pgoff)     # filemap_fault / shmem_fault
        new = 0
        if cow:
            self._anon_vma_prepare(vma)
            new = mem.frames.alloc_one(owner=self.id, flags=mem.new_anon_flags, zero=False)
            mem.frames.contents[new] = mem.frames.contents[pfn]
            self.sched.charge("page_copy")
        locked = False
        if write and not cow:
            yield from mem.lock_page(pfn)   # do_shared_fault: page_mkwrite under the page lock
            locked = True
        else:
            yield
        try:
            yield self.page_table_lock
            try:
                ok = (self.pt.lookup(vpn) == 0 and file.cache.get(pgoff) == pfn
                      and pgoff < file.npages)
                if ok:
                    if cow:
                        self.pt.set(vpn, mk_pte(new, PTE_PRESENT | PTE_WRITE | PTE_YOUNG |
                                                PTE_DIRTY))
                        mem.frames.inc_mapcount(new)
                        mem.set_page_mapping(new, vma.anon_vma, pgoff)
                    else:
                        bits = PTE_PRESENT | PTE_YOUNG
                        if write:
                            bits |= PTE_WRITE | PTE_DIRTY
                            mem.frames.set_flags(pfn, FRAME_DIRTY)   # set_page_dirty
                        self.pt.set(vpn, mk_pte(pfn, bits))
                        mem.frames.get(pfn)
                        mem.frames.inc_mapcount(pfn)
            finally:
                self.page_table_lock.release()
        finally:
            if locked:
                mem.unlock_page(pfn)
        if not ok and new:
            mem.frames.put(new)

    def _wp_can_reuse(self, pfn: int) -> bool:
        """May ``do_wp_page`` reuse this page in place? An anonymous page that is not KSM
        ("KSM doesn't necessarily raise the folio refcount": never reused) and is ours:
        with ``anon_exclusive`` (5.19+) PageAnonExclusive ("If the page is exclusive to this
        process we must reuse the page without further checks"), else the refcount test
        that ``wp_can_reuse_anon_folio`` makes (6.8; inline in 6.6): ``page_count == 1``
        (5.9, 09854ba94c6a, the CVE-2020-29374 fix), or ``page_mapcount == 1`` with
        ``cow_reuse="mapcount"`` (the rule before it)."""
        mem = self.memory
        f = mem.frames
        fl = int(f.flags[pfn])
        if not fl & FRAME_ANON or fl & FRAME_KSM:
            return False
        if mem.anon_exclusive and fl & FRAME_ANON_EXCLUSIVE:
            return True
        if mem.cow_reuse == "mapcount":
            return int(f.mapcount[pfn]) == 1
        return int(f.refcount[pfn]) == 1

    def _upgrade_flush(self, va):
        """``wp_page_reuse`` -> ``ptep_set_access_flags`` made the PTE writable (PT lock
        held). x86 does not flush a TLB for an upgrade; arm64 does (``flush_tlb_page``), and
        from 6.6 that flush reaches ``arch_invalidate_secondary_tlbs`` (6bbd42e2df8f: "On
        ARM64 PTE permission upgrades require a TLB invalidation ... this doesn't call the
        notifier resulting in infinite faults being generated by devices using the SMMU if
        it has previously cached a read-only PTE"): with ``upgrade_flush_notify``."""
        if self.memory.upgrade_flush_notify:
            yield from self._flush_tlb_range(va, va + PAGE_SIZE)

    def _do_wp_page(self, vma, va, pte, unshare=False):
        """``do_wp_page``: a write to a present read-only PTE in a writable VMA, or with
        ``unshare`` GUP's ``FAULT_FLAG_UNSHARE`` (an R/O pin of a page that may be shared):
        the same decision, but the PTE stays read-only ("if (unlikely(unshare)) ... return
        0" on reuse; ``wp_page_copy`` maps the copy R/O: "BUG_ON(unshare &&
        pte_write(entry))"). A reused or new anonymous page is PageAnonExclusive
        (``page_move_anon_rmap`` / ``folio_add_new_anon_rmap``) with ``anon_exclusive``."""
        mem = self.memory
        frames = mem.frames
        vpn = va >> PAGE_SHIFT
        pfn = pte_pfn(pte)
        special = bool(pte & PTE_SPECIAL)
        if vma.shared and not special:
            if unshare:
                return                  # gup_must_unshare: nothing to unshare in MAP_SHARED
            # wp_page_shared -> wp_page_reuse: make the shared page writable and dirty
            yield from mem.lock_page(pfn)
            try:
                yield self.page_table_lock
                try:
                    if self.pt.lookup(vpn) == pte:
                        self.pt.set(vpn, pte | PTE_WRITE | PTE_DIRTY | PTE_YOUNG)
                        frames.set_flags(pfn, FRAME_DIRTY)
                        yield from self._upgrade_flush(va)
                finally:
                    self.page_table_lock.release()
            finally:
                mem.unlock_page(pfn)
            return
        if not special and self._wp_can_reuse(pfn):
            # wp_page_reuse: no range notifier (the mapping only gains rights)
            yield self.page_table_lock
            try:
                if self.pt.lookup(vpn) == pte and self._wp_can_reuse(pfn):
                    if mem.anon_exclusive:
                        frames.set_flags(pfn, FRAME_ANON_EXCLUSIVE)   # page_move_anon_rmap
                    frames.owner[pfn] = self.id
                    if not unshare:
                        self.pt.set(vpn, pte | PTE_WRITE | PTE_DIRTY | PTE_YOUNG)
                        yield from self._upgrade_flush(va)
                    return
            finally:
                self.page_table_lock.release()
            return
        # wp_page_copy: allocate and copy, then replace the PTE
        self._anon_vma_prepare(vma)
        new = frames.alloc_one(owner=self.id, flags=mem.new_anon_flags, zero=special)
        if special:
            self.sched.charge("page_zero")
        else:
            frames.contents[new] = frames.contents[pfn]
            self.sched.charge("page_copy")
        yield   # between the copy and the PTE update
        bits = PTE_PRESENT | PTE_YOUNG | (0 if unshare else PTE_WRITE | PTE_DIRTY)
        new_pte = mk_pte(new, bits)
        index = vma.linear_page_index(va)

        def after(old, _new):
            frames.inc_mapcount(new)
            mem.set_page_mapping(new, vma.anon_vma, index)
            if not special:
                frames.dec_mapcount(pfn)           # page_remove_rmap(old_page)

        old = yield from self._pte_replace(va, lambda p: p == pte, lambda p: new_pte,
                                           Event.CLEAR, notify="cow", after=after)
        if old is None:
            frames.put(new)
            return
        if not special:
            frames.put(pfn)    # put_page(old_page): after the notifier, never before

    def _do_swap_page(self, vma, va, pte, write):
        """``do_swap_page``: swap cache first (``swap_cache_get_folio``), else read the slot.
        A swap-cache page is taken with a reference and locked (``folio_lock_or_retry``)
        before anything is done with it, and it must still be the slot's cache page once
        locked, as in mm/memory.c: reclaim (``shrink_folio_list``) and migration hold the
        page lock while they work on it, and a swap-in that went ahead would free the swap
        slot under them (which reclaim then freed a second time)."""
        mem = self.memory
        frames = mem.frames
        swap = mem.swap
        vpn = va >> PAGE_SHIFT
        slot = pte_pfn(pte)
        pfn = int(swap.page[slot])
        fresh = pfn == 0
        if fresh:
            # swapin_readahead -> __read_swap_cache_async (mm/swap_state.c): the new folio is
            # locked and put in the swap cache ("swapcache_prepare" claims the entry, then
            # "add_to_swap_cache") before the read is submitted, so a fault racing this one
            # finds it there and waits on its lock, and the slot cannot be freed and handed
            # out again while the read is in flight: a read that had not claimed it could
            # pass pte_same on a reused slot's identical swap PTE and map stale data (the
            # race 13ddaf26be32 "mm/swap: fix race when skipping swapcache" closed for the
            # one path that skips the cache)
            pfn = frames.alloc_one(owner=self.id, flags=FRAME_ANON, zero=False)
            frames.set_flags(pfn, FRAME_LOCKED)
            swap.add_to_swap_cache(slot, pfn)
            frames.contents[pfn] = swap.contents[slot]
            self.sched.wait_io("swap_io")
            swap.reads += 1
            yield   # swap I/O
        else:
            frames.get(pfn)                                    # swap_cache_get_folio
            yield from mem.lock_page(pfn)                      # folio_lock_or_retry
        ok = False
        try:
            yield self.page_table_lock
            try:
                # pte_same, and (swap cache) folio_test_swapcache + the same entry; a fresh
                # read loses to one that put its page in the swap cache first (swapcache_prepare
                # -EEXIST in __read_swap_cache_async): drop ours and fault again to use theirs
                ok = self.pt.lookup(vpn) == pte and int(swap.page[slot]) == pfn
                if ok:
                    frames.inc_mapcount(pfn)
                    swap.count[slot] -= 1                      # swap_free(entry)
                    last = swap.count[slot] == 0
                    if last:
                        swap.delete_from_swap_cache(slot)      # folio_free_swap (locked)
                    if mem.anon_exclusive:
                        # 6.6: exclusive if the swap PTE says so (pte_swp_exclusive), if the
                        # page is a fresh one nobody else can see, or "folio_ref_count(folio)
                        # == 1" once the swap cache let go of it
                        exclusive = bool(pte & PTE_SWP_EXCLUSIVE) or (last and (
                            fresh or int(frames.refcount[pfn]) == 1))
                        if exclusive:
                            frames.set_flags(pfn, FRAME_ANON_EXCLUSIVE)    # RMAP_EXCLUSIVE
                    else:   # reuse_swap_page: the mapcount (and swap count) rule
                        exclusive = last and int(frames.mapcount[pfn]) == 1
                    if fresh:
                        mem.set_page_mapping(pfn, vma.anon_vma, vma.linear_page_index(va))
                    bits = PTE_PRESENT | PTE_YOUNG
                    if exclusive and write and vma.writable:
                        bits |= PTE_WRITE | PTE_DIRTY
                        frames.owner[pfn] = self.id
                    self.pt.set(vpn, mk_pte(pfn, bits))
            finally:
                self.page_table_lock.release()
        finally:
            if not ok and int(swap.page[slot]) == pfn and swap.count[slot] == 0:
                # the entry went away while the page was read or locked (a zap freed it,
                # leaving the locked page in the cache): nothing can find it there again
                swap.delete_from_swap_cache(slot)
            mem.unlock_page(pfn)
        if not ok:
            frames.put(pfn)     # the swap-in's reference (the fresh page's, or the lookup's)

    def follow_page(self, va, write=False, pin=False, longterm=False):
        """``follow_page_pte`` (``FOLL_GET``, or ``FOLL_PIN`` with ``pin``): under the PT
        lock, the page mapped at ``va`` with a reference (or a pin) taken there, or None if
        no present PTE allows the access (no fault is taken), or ``-EMLINK`` when an R/O pin
        must unshare the page first (``gup_must_unshare``; the caller faults with
        ``FAULT_FLAG_UNSHARE`` and retries). The caller drops the reference (``put_page`` /
        ``unpin_user_page``). mmap_lock held (KSM's ``scan_get_next_rmap_item``, GUP)."""
        frames = self.memory.frames
        vpn = va >> PAGE_SHIFT
        yield self.page_table_lock
        try:
            pte = self.pt.lookup(vpn)
            if not pte & PTE_PRESENT or (write and not pte & PTE_WRITE):
                return None
            pfn = pte_pfn(pte)
            if pin and not write and not pte & PTE_WRITE and \
                    self._gup_must_unshare(va, pfn, longterm):
                return -EMLINK                 # "page = ERR_PTR(-EMLINK)"
            if pin:
                frames.pin(pfn)
            else:
                frames.get(pfn)
            return pfn
        finally:
            self.page_table_lock.release()

    def _gup_must_unshare(self, va, pfn, longterm) -> bool:
        """``gup_must_unshare`` (6.6 mm/internal.h) for an R/O ``FOLL_PIN`` (``FOLL_WRITE``
        "is implicitly handled correctly as the page table entry has to be writable"): an
        anonymous page must be unshared unless PageAnonExclusive (``anon_exclusive``, 5.19,
        a7f226604170; "PageKsm() pages cannot be exclusive, and consequently, cannot get
        pinned"); any other page only for a ``FOLL_LONGTERM`` pin in a COW mapping ("We
        only care about R/O long-term pining", ``unshare_longterm_ro_pins``, 6.2,
        84209e87c696)."""
        mem = self.memory
        if not mem.anon_exclusive:
            return False
        fl = int(mem.frames.flags[pfn])
        if not fl & FRAME_ANON:
            vma = self.vma_at(va)
            return bool(mem.unshare_longterm_ro_pins and longterm and vma is not None
                        and vma.is_cow)
        return not fl & FRAME_ANON_EXCLUSIVE

    def _follow(self, va, write, pin, op, longterm=False):
        """``__get_user_pages``: ``follow_page`` under the PT lock (taking the reference
        there), else ``handle_mm_fault`` (with ``FAULT_FLAG_UNSHARE`` when the pin must
        unshare) and retry. mmap_lock held."""
        while True:
            self._access_vma(va, write, op)
            pfn = yield from self.follow_page(va, write, pin, longterm)
            if pfn is not None and pfn > 0:
                return pfn
            yield from self._handle_fault(va, write, op, unshare=pfn == -EMLINK)

    def _gup(self, va, write, pin, op, longterm=False):
        va = as_int(va, f"{op}: address")
        self._mmget()
        try:
            took = not self._mmap_lock_held()
            if took:
                yield self.mmap_lock.read()
            try:
                pfn = yield from self._follow(va, bool(write), pin, op, longterm)
            finally:
                if took:
                    self.mmap_lock.up_read()
        finally:
            self._mmput()
        self.sched.observer.gup(self, va, pfn, bool(write), op)
        return pfn

    @mm_operation
    def get_user_pages(self, va, write=False):
        """``get_user_pages``: fault in ``va`` (a write breaks COW) and return its pfn with a
        reference taken; drop it with :meth:`put_page`."""
        return (yield from self._gup(va, write, False, "get_user_pages"))

    @mm_operation
    def pin_user_pages(self, va, write=False, longterm=True):
        """``pin_user_pages`` (FOLL_PIN; ``longterm``: FOLL_LONGTERM): like get_user_pages
        but the page's pincount rises too (``page_maybe_dma_pinned``); undo with
        :meth:`unpin_user_page`."""
        pfn = yield from self._gup(va, write, True, "pin_user_pages", bool(longterm))
        self.sched.stats["pin_longterm" if longterm else "pin"] += 1
        return pfn

    def put_page(self, pfn):
        """``put_page``: drop a reference from get_user_pages (the frame is freed, its
        generation bumped, at refcount 0)."""
        pfn = self.memory.check_ref(pfn, "put_page")
        frames = self.memory.frames
        if int(frames.refcount[pfn]) <= int(frames.pincount[pfn]):
            raise InvalidArgument(f"put_page({pfn}): the references left on the frame belong "
                                  "to its pins: use unpin_user_page for a page from "
                                  "pin_user_pages")
        frames.put(pfn)
        self.sched.observer.gup_release(self, pfn, "put_page")
        return None
        yield  # pragma: no cover - a generator like every operation

    def unpin_user_page(self, pfn):
        """``unpin_user_page``: undo one :meth:`pin_user_pages`."""
        pfn = self.memory.check_ref(pfn, "unpin_user_page")
        if int(self.memory.frames.pincount[pfn]) <= 0:
            raise InvalidArgument(f"unpin_user_page({pfn}): the frame is not pinned: unpin "
                                  "only what pin_user_pages returned, once")
        self.memory.frames.unpin(pfn)
        self.sched.observer.gup_release(self, pfn, "unpin_user_page")
        return None
        yield  # pragma: no cover

    # ------------------------------------------------------------------ device entries
    def _do_device_private_fault(self, vma, va, pte):
        """``do_swap_page`` on a device-private entry: under the PT lock check the entry is
        still there and take a page reference, drop the lock, and call the pagemap's
        ``migrate_to_ram`` (the driver migrates the page back with ``migrate_vma``); the
        caller then faults again. ``VM_FAULT_SIGBUS`` from the driver is a SIGBUS."""
        mem = self.memory
        pfn = pte_pfn(pte)
        vpn = va >> PAGE_SHIFT
        yield self.page_table_lock
        try:
            if self.pt.lookup(vpn) != pte:
                return
            pgmap = mem.page_pgmap(pfn)
            mem.frames.get(pfn)          # "Get a page reference while we know the page can't
        finally:                         # be freed"
            self.page_table_lock.release()
        try:
            if pgmap is None:
                raise SegmentationFault(f"fault at {va:#x}: device-private page {pfn} has no "
                                        "pagemap (SIGBUS)", address=va)
            ret = yield from pgmap.fault(Vmf(self, vma, va, pfn))
        finally:
            mem.frames.put(pfn)
        if ret == VM_FAULT_SIGBUS:
            raise SegmentationFault(f"fault at {va:#x}: {pgmap.name} could not migrate device "
                                    "page back to system memory (VM_FAULT_SIGBUS)", address=va)

    def _remove_device_exclusive_entry(self, vma, va, pte):
        """``remove_device_exclusive_entry`` (6.8 mm/memory.c): lock the page, then an
        ``MMU_NOTIFY_EXCLUSIVE`` range of one page with no owner (the device loses its
        exclusive access), and under the PT lock ``restore_exclusive_pte``: the original
        PTE, writable if the entry was, not young; the entry's reference becomes the
        mapping's (``folio_add_anon_rmap_pte``)."""
        mem = self.memory
        frames = mem.frames
        pfn = pte_pfn(pte)
        vpn = va >> PAGE_SHIFT
        if frames.refcount[pfn] <= 0:                  # folio_try_get
            return
        frames.get(pfn)
        try:
            yield from mem.lock_page(pfn)              # folio_lock_or_retry
            try:
                rng = self._range(va, va + PAGE_SIZE, Event.EXCLUSIVE)
                subs = self.notifier_subscriptions
                yield from subs.mmu_notifier_invalidate_range_start(rng)
                yield self.page_table_lock
                try:
                    if self.pt.lookup(vpn) == pte:
                        bits = PTE_PRESENT
                        if pte & PTE_WRITE and vma.writable:
                            bits |= PTE_WRITE | PTE_DIRTY
                        self.pt.set(vpn, mk_pte(pfn, bits))
                        frames.inc_mapcount(pfn)
                finally:
                    self.page_table_lock.release()
            finally:
                mem.unlock_page(pfn)
        finally:
            frames.put(pfn)
        yield from subs.mmu_notifier_invalidate_range_end(rng)

