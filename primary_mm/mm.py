"""``MM``: one address space (``struct mm_struct``) and its operations.

Every operation is a generator (run it with ``sim.do(...)`` or ``yield from`` it in a task).
It yields where Linux can be preempted or another CPU can act, and calls the MMU notifier
hooks at the Linux call sites for the simulator's ``notifier_api`` (each site cites the
Linux function it models). Range work goes through the radix kernels (``clear_range``,
``protect_range``, ``copy_range``, ``iter_present``...) and batched frame updates; there is no
per-page Python loop on the range paths.

Locks, in Linux's order: ``mmap_lock`` (rwsem) -> rmap locks (``anon_vma`` / ``i_mmap``) ->
``page_table_lock`` (spinlock "ptl", one per mm; holding it is atomic).

Bad input raises an :mod:`smmu.base.errors` exception *before* anything changes.
"""

from __future__ import annotations

import bisect
import operator

import numpy as np
import structlog

from primary_mm.frames import FRAME_ANON, FRAME_DIRTY, FRAME_KSM, NO_OWNER
from primary_mm.rmap import AnonVma
from primary_mm.vma import VMA, parse_prot
from smmu.base.constants import PAGE_SHIFT, PAGE_SIZE, TASK_SIZE
from smmu.base.pte import (PFN_MASK, PFN_SHIFT, PTE_DIRTY, PTE_MAPPED, PTE_MIGRATION,
                           PTE_PRESENT, PTE_PROTNONE, PTE_SPECIAL, PTE_SWAP, PTE_WRITE, PTE_YOUNG,
                           mapped_pfns, mk_pte, pte_pfn, swap_slots)
from smmu.base.errors import InvalidArgument, OutOfMemory, SegmentationFault, UsageError
from smmu.notifier import Event, NotifierSubscriptions, Range

log = structlog.get_logger("smmu")

#: where non-fixed mmaps are placed (bottom-up search) and where the heap starts
MMAP_BASE = 0x7F00_0000_0000
BRK_START = 0x0100_0000
MMAP_MIN_ADDR = 0x10000

_U = np.uint64
_PFN_MASK = _U(PFN_MASK)
_BITS_MAPPED = _U(PTE_MAPPED)
_BITS_SPECIAL = _U(PTE_SPECIAL)
_BITS_NONPRESENT = _U(PTE_SWAP | PTE_MIGRATION)
_BITS_SWAP = _U(PTE_SWAP)
_BITS_DIRTY = _U(PTE_DIRTY)
ADVICE = ("dontneed", "free", "dontfork", "dofork")


def _int(x, what: str) -> int:
    try:
        return operator.index(x)
    except TypeError:
        raise InvalidArgument(f"{what} must be an integer, got {x!r}") from None


class MM:
    """One process address space. Make it with ``sim.new_process()``.

    Attributes: ``id``, ``name``, ``memory``, ``notifier_subscriptions``, ``mmap_lock``,
    ``page_table_lock``, ``pt``, ``vmas`` (sorted by start), ``brk_start`` / ``brk_end``.
    """

    def __init__(self, memory, mm_id: int, name: str | None = None):
        self.memory = memory
        self.sched = memory.sched
        self.api = memory.api
        self.id = mm_id
        self.name = name or f"mm{mm_id}"
        self.notifier_subscriptions = NotifierSubscriptions(
            self.sched, self, memory.api,
            nonblock_fail_calls_end=memory.nonblock_fail_calls_end)
        self.mmap_lock = self.sched.rwsem("mmap_lock")
        self.page_table_lock = self.sched.spinlock("ptl")
        self.pt = memory.new_page_table()
        self.vmas: list[VMA] = []
        self.brk_start = BRK_START
        self.brk_end = BRK_START
        self.pt_pages: list[int] = []   # frames standing for page-table pages (pte_alloc)
        self.exited = False
        self.oom_reaped = False
        self._held_rmap_locks: list = []

    def __repr__(self):
        st = " exited" if self.exited else ""
        return (f"<MM {self.id} {self.name!r}{st}: {len(self.vmas)} vmas, "
                f"{len(self.notifier_subscriptions.subs)} notifiers>")

    # ================================================================== plain helpers
    def vma_at(self, va: int) -> VMA | None:
        """``find_vma`` + containment: the VMA covering ``va``, or None."""
        i = bisect.bisect_right(self.vmas, va, key=_vma_start) - 1
        if i >= 0 and self.vmas[i].end > va:
            return self.vmas[i]
        return None

    def vmas_in(self, start: int, end: int) -> list[VMA]:
        """VMAs overlapping ``[start, end)``, in address order."""
        i = max(bisect.bisect_right(self.vmas, start, key=_vma_start) - 1, 0)
        out = []
        for v in self.vmas[i:]:
            if v.start >= end:
                break
            if v.end > start:
                out.append(v)
        return out

    def lookup_pte(self, va: int) -> int:
        """A lockless walk of the page table (GRU's ``atomic_pte_lookup``, an IOMMU's
        hardware walk): the entry for ``va`` now (0 = none). Use :func:`pte_pfn`."""
        return self.pt.lookup(int(va) >> PAGE_SHIFT)

    pte_pfn = staticmethod(pte_pfn)

    def peek(self, va: int):
        """What a CPU read of ``va`` would return now, with no fault and no side effect;
        None if nothing readable is there (no VMA, PROT_NONE, beyond EOF)."""
        va = int(va)
        vma = self.vma_at(va)
        if vma is None or not vma.readable:
            return None
        pte = self.pt.lookup(va >> PAGE_SHIFT)
        frames = self.memory.frames
        if pte & PTE_MAPPED:
            return int(frames.contents[pte_pfn(pte)])
        if pte & PTE_SWAP:
            return self.memory.swap.value(pte_pfn(pte))
        if pte & PTE_MIGRATION:
            return int(frames.contents[pte_pfn(pte)])
        if vma.file is not None:
            return vma.file.value(vma.linear_page_index(va))
        return 0

    def snapshot(self) -> dict:
        """Comparable state of this address space (tests: "unchanged after an error")."""
        vpns, ptes = self.pt.iter_present()
        return {"vmas": [v.snapshot() for v in self.vmas],
                "ptes": dict(zip(vpns.tolist(), ptes.tolist())),
                "brk": (self.brk_start, self.brk_end)}

    # ================================================================== validation
    def _alive(self):
        if self.exited:
            raise UsageError(f"{self!r} has exited: make a new process with sim.new_process()")

    def _check_range(self, addr, length, op: str, round_len: bool = True) -> tuple[int, int]:
        addr = _int(addr, f"{op}: address")
        length = _int(length, f"{op}: length")
        if addr % PAGE_SIZE:
            raise InvalidArgument(f"{op}: address {addr:#x} is not page aligned: pass a "
                                  f"multiple of PAGE_SIZE ({PAGE_SIZE:#x})")
        if length <= 0:
            raise InvalidArgument(f"{op}: length {length} is empty or negative: pass at least "
                                  "one byte")
        if round_len:
            length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        elif length % PAGE_SIZE:
            raise InvalidArgument(f"{op}: length {length:#x} is not page aligned")
        if addr < 0 or addr + length > TASK_SIZE:
            raise InvalidArgument(f"{op}: [{addr:#x}, {addr + length:#x}) overflows the user "
                                  f"address space [0, {TASK_SIZE:#x})")
        return addr, addr + length

    def _check_mapped(self, start: int, end: int, op: str) -> None:
        cur = start
        for v in self.vmas_in(start, end):
            if v.start > cur:
                break
            cur = v.end
        if cur < end:
            raise SegmentationFault(
                f"{op}: [{start:#x}, {end:#x}) is not fully mapped (nothing at {cur:#x}; "
                "Linux returns ENOMEM): mmap the whole range first", address=cur)

    def _access_vma(self, va: int, write: bool, op: str) -> VMA:
        vma = self.vma_at(va)
        what = "write" if write else "read"
        if vma is None:
            raise SegmentationFault(f"{op}: {what} at {va:#x}: no mapping there (SIGSEGV); "
                                    "mmap it first", address=va)
        if not vma.readable:
            raise SegmentationFault(f"{op}: {what} at {va:#x}: the mapping {vma.describe()} "
                                    "is PROT_NONE (SIGSEGV); mprotect it first", address=va)
        if write and not vma.writable:
            raise SegmentationFault(f"{op}: write at {va:#x}: the mapping {vma.describe()} is "
                                    "read-only (SIGSEGV); mprotect it 'rw' first", address=va)
        if vma.file is not None and vma.linear_page_index(va) >= vma.file.npages:
            raise SegmentationFault(
                f"{op}: {what} at {va:#x} is beyond the end of file {vma.file.name!r} "
                f"({vma.file.npages} pages): SIGBUS", address=va)
        return vma

    def _mmap_lock_held(self) -> bool:
        t = self.sched.running
        return self.mmap_lock.writer is t or t in self.mmap_lock.readers

    # ================================================================== notifier helpers
    def _range(self, start, end, event, owner=None, blockable=True) -> Range:
        if self.api == "v2008":   # the 2008 hooks carried (mm, start, end) only
            return Range(self, start, end, Event.UNMAP, True, None)
        return Range(self, start, end, event, blockable, owner)

    def _flush_tlb_range(self, start, end):
        """``flush_tlb_range``: the CPU TLB flush, and in modern Linux the secondary TLBs
        that share the CPU tables (``mmu_notifier_arch_invalidate_secondary_tlbs``, called by
        the arch flush code under the PT lock)."""
        self.sched.charge("tlb_shootdown")
        if self.api == "modern":
            yield from self.notifier_subscriptions.mmu_notifier_arch_invalidate_secondary_tlbs(
                start, end)

    def _young_under_ptl(self, va):
        """``ptep_clear_flush_young_notify`` on one page, PT lock held."""
        young = self.pt.clear_young(va >> PAGE_SHIFT)
        if young:
            self.sched.charge("tlb_flush_local")
        young |= bool((yield from self.notifier_subscriptions.mmu_notifier_clear_flush_young(
            va, va + PAGE_SIZE)))
        return young

    def _pte_replace(self, va, check, make, event, *, owner=None, notify="invalidate_page",
                     after=None, outside_ok=True, young_fails=False):
        """Replace one PTE with the notifier calls of the selected generation.

        v2008: PT lock; ``ptep_clear_flush_notify`` (clear, flush, ``invalidate_page`` under
        the PT lock) then set the new entry; or with ``invalidate_page_outside_ptl`` the
        pre-2017 order (set, unlock, *yield*, invalidate_page); with ``notify="change_pte"``
        ``ptep_clear_flush`` + ``set_pte_at_notify`` (KSM); ``notify=None``: no hook.
        range_only / modern: ``invalidate_range_start`` (one page) before the PT lock,
        clear + flush (modern: ``arch_invalidate_secondary_tlbs`` under the lock), set,
        unlock, ``invalidate_range_end``.

        ``check(old) -> bool`` runs under the PT lock first (``pte_same`` and friends);
        ``young_fails``: then, as the 2.6.2x ``try_to_unmap_one`` did, a page found young by
        ``ptep_clear_flush_young_notify`` is kept (SWAP_FAIL: returns None);
        ``make(old) -> new`` (0 clears); ``after(old, new)`` under the lock once set.
        Returns the old entry, or None if ``check`` refused (nothing changed).
        """
        vpn = va >> PAGE_SHIFT
        pt = self.pt
        ptl = self.page_table_lock
        subs = self.notifier_subscriptions
        if self.api == "v2008":
            outside = outside_ok and self.memory.invalidate_page_outside_ptl
            yield ptl
            try:
                old = pt.lookup(vpn)
                if not check(old):
                    return None
                if young_fails and (yield from self._young_under_ptl(va)):
                    return None
                new = make(old)
                pt.clear(vpn)                                    # ptep_clear_flush
                yield from self._flush_tlb_range(va, va + PAGE_SIZE)
                if notify == "invalidate_page" and not outside:
                    yield from subs.mmu_notifier_invalidate_page(va)   # under the PT lock
                if new:
                    pt.set(vpn, new)
                if notify == "change_pte" and new:
                    yield from subs.mmu_notifier_change_pte(va, new)   # set_pte_at_notify
                if after is not None:
                    after(old, new)
            finally:
                ptl.release()
            if notify == "invalidate_page" and outside:
                yield   # the pre-2017 window: the new PTE is visible, the old page not yet
                yield from subs.mmu_notifier_invalidate_page(va)
            return old
        rng = self._range(va, va + PAGE_SIZE, event, owner)
        yield from subs.mmu_notifier_invalidate_range_start(rng)
        yield ptl
        try:
            old = pt.lookup(vpn)
            ok = check(old)
            if ok and young_fails and (yield from self._young_under_ptl(va)):
                ok = False
            if ok:
                new = make(old)
                pt.clear(vpn)                                    # ptep_clear_flush
                yield from self._flush_tlb_range(va, va + PAGE_SIZE)
                if new:
                    pt.set(vpn, new)
                if after is not None:
                    after(old, new)
        finally:
            ptl.release()
        yield from subs.mmu_notifier_invalidate_range_end(rng)
        return old if ok else None

    # ================================================================== CPU access
    def read(self, va):
        """A CPU load from ``va``: returns the page's value (faulting it in as needed)."""
        self._alive()
        va = _int(va, "read: address")
        vpn = va >> PAGE_SHIFT
        frames = self.memory.frames
        while True:
            pte = self.pt.lookup(vpn) if 0 <= va < TASK_SIZE else 0
            if pte & PTE_PRESENT:
                if not pte & PTE_YOUNG:
                    self.pt.set(vpn, pte | PTE_YOUNG)       # the hardware sets the A bit
                value = int(frames.contents[pte_pfn(pte)])
                self.sched.observer.cpu_access(self, va, False, value)
                return value
            yield from self.handle_mm_fault(va, False)

    def write(self, va, value):
        """A CPU store of ``value`` (a 64-bit integer: the page's new value) to ``va``."""
        self._alive()
        va = _int(va, "write: address")
        value = _int(value, "write: value") & 0xFFFF_FFFF_FFFF_FFFF
        vpn = va >> PAGE_SHIFT
        frames = self.memory.frames
        while True:
            pte = self.pt.lookup(vpn) if 0 <= va < TASK_SIZE else 0
            if pte & PTE_PRESENT and pte & PTE_WRITE:
                if (pte & (PTE_YOUNG | PTE_DIRTY)) != (PTE_YOUNG | PTE_DIRTY):
                    self.pt.set(vpn, pte | PTE_YOUNG | PTE_DIRTY)   # A and D bits
                frames.contents[pte_pfn(pte)] = value
                self.sched.observer.cpu_access(self, va, True, value)
                return value
            yield from self.handle_mm_fault(va, True)

    def device_access(self, drv, va: int, pfn: int, write: bool, value):
        """A device access by driver ``drv`` to frame ``pfn`` through its translation of
        ``va``, one atomic step (``MMUNotifier.dma_read`` / ``dma_write``): reported to the
        observer, then the frame is read or written. Returns the value read or written."""
        frames = self.memory.frames
        if not (0 < pfn < len(frames.contents)):
            raise UsageError(f"{drv.name} accessed pfn {pfn}, which does not exist")
        self.sched.observer.device_access(drv, va, pfn, write, value)
        self.sched.charge("device_access")
        if write:
            frames.contents[pfn] = value
            return value
        return int(frames.contents[pfn])

    # ================================================================== faults
    def handle_mm_fault(self, va, write=False):
        """Resolve one fault at ``va`` (``handle_mm_fault``). Takes ``mmap_lock`` for read
        unless the current task already holds it. Raises ``SegmentationFault`` for an
        access the VMA forbids (SIGBUS beyond the end of a file)."""
        self._alive()
        va = _int(va, "handle_mm_fault: address")
        took = not self._mmap_lock_held()
        if took:
            yield self.mmap_lock.read()
        try:
            yield from self._handle_fault(va, bool(write))
        finally:
            if took:
                self.mmap_lock.up_read()

    def _handle_fault(self, va, write, op="fault"):
        """``__handle_mm_fault`` -> ``handle_pte_fault``; mmap_lock held. One step of
        progress: the caller re-checks the PTE and calls again if needed."""
        vma = self._access_vma(va, write, op)
        va &= ~(PAGE_SIZE - 1)
        self.sched.charge("page_fault")
        vpn = va >> PAGE_SHIFT
        pte = self.pt.lookup(vpn)
        if pte & PTE_PRESENT:
            if write and not pte & PTE_WRITE:
                yield from self._do_wp_page(vma, va, pte)
            return
        if pte & PTE_SWAP:
            yield from self._do_swap_page(vma, va, pte, write)
        elif pte & PTE_MIGRATION:
            # migration_entry_wait: sleep until the migration entry is gone
            yield self.memory.migration_wq.wait_until(lambda: self.pt.lookup(vpn) != pte)
        elif pte & PTE_PROTNONE:
            # mprotect changes the VMA and its PTEs under mmap_lock for write: a PROT_NONE
            # entry under an accessible VMA cannot be seen here
            raise SegmentationFault(f"{op}: {va:#x} is PROT_NONE (SIGSEGV)", address=va)
        elif vma.file is not None:
            yield from self._do_fault(vma, va, write)
        else:
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
        pfn = mem.frames.alloc_one(owner=self.id, flags=FRAME_ANON, zero=True)
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
            new = mem.frames.alloc_one(owner=self.id, flags=FRAME_ANON, zero=False)
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

    def _can_reuse(self, pfn: int) -> bool:
        """May ``do_wp_page`` reuse this page in place? Anonymous, not KSM, and exclusively
        ours: modern rule ``page_count == 1`` (the CVE-2020-29374 fix, 5.8/5.9), or the old
        rule ``page_mapcount == 1`` with ``cow_reuse="mapcount"``."""
        f = self.memory.frames
        fl = int(f.flags[pfn])
        if not fl & FRAME_ANON or fl & FRAME_KSM:
            return False
        if self.memory.cow_reuse == "mapcount":
            return int(f.mapcount[pfn]) == 1
        return int(f.refcount[pfn]) == 1

    def _do_wp_page(self, vma, va, pte):
        """``do_wp_page``: a write to a present read-only PTE in a writable VMA."""
        mem = self.memory
        frames = mem.frames
        vpn = va >> PAGE_SHIFT
        pfn = pte_pfn(pte)
        special = bool(pte & PTE_SPECIAL)
        if vma.shared and not special:
            # wp_page_shared -> wp_page_reuse: make the shared page writable and dirty
            yield from mem.lock_page(pfn)
            try:
                yield self.page_table_lock
                try:
                    if self.pt.lookup(vpn) == pte:
                        self.pt.set(vpn, pte | PTE_WRITE | PTE_DIRTY | PTE_YOUNG)
                        frames.set_flags(pfn, FRAME_DIRTY)
                finally:
                    self.page_table_lock.release()
            finally:
                mem.unlock_page(pfn)
            return
        if not special and self._can_reuse(pfn):
            # wp_page_reuse: no notifier (the mapping only gains rights)
            yield self.page_table_lock
            try:
                if self.pt.lookup(vpn) == pte and self._can_reuse(pfn):
                    self.pt.set(vpn, pte | PTE_WRITE | PTE_DIRTY | PTE_YOUNG)
                    frames.owner[pfn] = self.id
                    return
            finally:
                self.page_table_lock.release()
            return
        # wp_page_copy: allocate and copy, then replace the PTE
        self._anon_vma_prepare(vma)
        new = frames.alloc_one(owner=self.id, flags=FRAME_ANON, zero=special)
        if special:
            self.sched.charge("page_zero")
        else:
            frames.contents[new] = frames.contents[pfn]
            self.sched.charge("page_copy")
        yield   # between the copy and the PTE update
        new_pte = mk_pte(new, PTE_PRESENT | PTE_WRITE | PTE_DIRTY | PTE_YOUNG)
        index = vma.linear_page_index(va)

        def after(old, _new):
            frames.inc_mapcount(new)
            mem.set_page_mapping(new, vma.anon_vma, index)
            if not special:
                frames.dec_mapcount(pfn)           # page_remove_rmap(old_page)

        old = yield from self._pte_replace(va, lambda p: p == pte, lambda p: new_pte,
                                           Event.CLEAR, after=after)
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
            pfn = frames.alloc_one(owner=self.id, flags=FRAME_ANON, zero=False)
            frames.contents[pfn] = swap.contents[slot]
            self.sched.charge("swap_io")
            swap.reads += 1
            yield   # swap I/O
        else:
            frames.get(pfn)                                    # swap_cache_get_folio
            yield from mem.lock_page(pfn)                      # folio_lock_or_retry
        try:
            yield self.page_table_lock
            try:
                # pte_same, and (swap cache) folio_test_swapcache + the same entry; a fresh
                # read loses to one that put its page in the swap cache first (swapcache_prepare
                # -EEXIST in __read_swap_cache_async): drop ours and fault again to use theirs
                ok = self.pt.lookup(vpn) == pte and \
                    int(swap.page[slot]) == (0 if fresh else pfn)
                if ok:
                    frames.inc_mapcount(pfn)
                    swap.count[slot] -= 1                      # swap_free(entry)
                    if swap.count[slot] == 0:
                        if fresh:
                            swap._release_slot(slot)
                        else:
                            swap.delete_from_swap_cache(slot)  # folio_free_swap (locked)
                        exclusive = int(frames.mapcount[pfn]) == 1
                    else:
                        if fresh:
                            swap.add_to_swap_cache(slot, pfn)
                        exclusive = False
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
            if not fresh:
                mem.unlock_page(pfn)
        if not ok:
            frames.put(pfn)     # the fresh page, or the swap cache lookup's reference

    # ================================================================== GUP
    def _follow(self, va, write, pin, op):
        """``__get_user_pages``: ``follow_page`` under the PT lock (taking the reference
        there), else ``handle_mm_fault`` and retry. mmap_lock held."""
        frames = self.memory.frames
        vpn = va >> PAGE_SHIFT
        while True:
            self._access_vma(va, write, op)
            yield self.page_table_lock
            try:
                pte = self.pt.lookup(vpn)
                ok = bool(pte & PTE_PRESENT) and (not write or bool(pte & PTE_WRITE))
                if ok:
                    pfn = pte_pfn(pte)
                    if pin:
                        frames.pin(pfn)
                    else:
                        frames.get(pfn)
            finally:
                self.page_table_lock.release()
            if ok:
                return pfn
            yield from self._handle_fault(va, write, op)

    def _gup(self, va, write, pin, op):
        self._alive()
        va = _int(va, f"{op}: address")
        took = not self._mmap_lock_held()
        if took:
            yield self.mmap_lock.read()
        try:
            return (yield from self._follow(va, bool(write), pin, op))
        finally:
            if took:
                self.mmap_lock.up_read()

    def get_user_pages(self, va, write=False):
        """``get_user_pages``: fault in ``va`` (a write breaks COW) and return its pfn with a
        reference taken; drop it with :meth:`put_page`."""
        return (yield from self._gup(va, write, False, "get_user_pages"))

    def pin_user_pages(self, va, write=False, longterm=True):
        """``pin_user_pages`` (FOLL_PIN; ``longterm``: FOLL_LONGTERM): like get_user_pages
        but the page's pincount rises too (``page_maybe_dma_pinned``); undo with
        :meth:`unpin_user_page`."""
        pfn = yield from self._gup(va, write, True, "pin_user_pages")
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
        return None
        yield  # pragma: no cover - a generator like every operation

    def unpin_user_page(self, pfn):
        """``unpin_user_page``: undo one :meth:`pin_user_pages`."""
        pfn = self.memory.check_ref(pfn, "unpin_user_page")
        if int(self.memory.frames.pincount[pfn]) <= 0:
            raise InvalidArgument(f"unpin_user_page({pfn}): the frame is not pinned: unpin "
                                  "only what pin_user_pages returned, once")
        self.memory.frames.unpin(pfn)
        return None
        yield  # pragma: no cover

    def hmm_range_fault(self, va, write=False):
        """``hmm_range_fault`` for one page: fault it in and return its pfn, keeping no
        reference (the caller relies on its interval notifier). Takes mmap_lock for read
        unless the current task holds it."""
        self._alive()
        va = _int(va, "hmm_range_fault: address")
        vpn = va >> PAGE_SHIFT
        took = not self._mmap_lock_held()
        if took:
            yield self.mmap_lock.read()
        try:
            while True:
                self._access_vma(va, write, "hmm_range_fault")
                pte = self.pt.lookup(vpn)
                if pte & PTE_PRESENT and (not write or pte & PTE_WRITE):
                    return pte_pfn(pte)
                yield from self._handle_fault(va, bool(write), "hmm_range_fault")
        finally:
            if took:
                self.mmap_lock.up_read()

    # ================================================================== mmap & co
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
        bisect.insort(self.vmas, vma, key=_vma_start)

    def _link_file(self, vma):
        if vma.file is not None:
            lk = vma.file.mapping.lock
            yield from lk.lock_write()
            vma.file.mapping.link(vma)
            lk.unlock_write()

    def mmap(self, length, prot="rw", shared=False, file=None, offset=0, addr=None,
             fixed=False, populate=False, dontfork=False):
        """``mmap``: map ``length`` bytes (rounded up to pages); returns the address.

        ``prot``: subset of "rwx" or "none". ``shared``: MAP_SHARED (anonymous shared memory
        is shmem: it stays shared across fork). ``file``/``offset``: a file mapping.
        ``addr`` is a hint, or the exact place with ``fixed=True`` (MAP_FIXED: whatever is
        there is unmapped first). ``populate``: MAP_POPULATE. ``dontfork``: MADV_DONTFORK."""
        from primary_mm.filemap import File
        self._alive()
        prot = parse_prot(prot)
        length = _int(length, "mmap: length")
        if length <= 0:
            raise InvalidArgument(f"mmap: length {length} is empty or negative")
        length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        if length > TASK_SIZE:
            raise InvalidArgument(f"mmap: length {length:#x} is larger than the address space")
        offset = _int(offset, "mmap: offset")
        if file is not None:
            if not isinstance(file, File) or file.memory is not self.memory:
                raise InvalidArgument(f"mmap: {file!r} is not a file of this simulator: make "
                                      "it with sim.new_file(name, npages)")
            if offset < 0 or offset % PAGE_SIZE:
                raise InvalidArgument(f"mmap: file offset {offset:#x} must be a non-negative "
                                      "multiple of PAGE_SIZE")
        elif offset:
            raise InvalidArgument("mmap: offset is only meaningful with a file")
        if fixed and addr is None:
            raise InvalidArgument("mmap: fixed=True needs addr=")
        if addr is not None:
            addr = _int(addr, "mmap: addr")
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
        one allocation, one ``map_range``, one mapcount update. Errors are ignored, as
        Linux ignores them."""
        if not vma.readable:
            return
        write = vma.writable and not vma.shared
        if vma.file is None:
            mem = self.memory
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
                        pfns = mem.frames.alloc(n, owner=self.id, flags=FRAME_ANON, zero=True)
                    except OutOfMemory:
                        log.debug("populate: out of memory", mm=self.name)
                        return
                    new[empty] = (pfns.astype(np.uint64) << _U(PFN_SHIFT)) | _U(
                        PTE_PRESENT | PTE_WRITE | PTE_YOUNG | PTE_DIRTY)
                    self.pt.map_range(vpn0, new)
                    mem.frames.inc_mapcount(pfns)
                    mem.set_page_mapping(pfns, vma.anon_vma,
                                         vma.pgoff + (vpns[empty] - vpn0)
                                         + ((start - vma.start) >> PAGE_SHIFT))
                    self.sched.charge("page_zero", n)
                else:
                    new[empty] = _U(mk_pte(mem.zero_pfn, PTE_PRESENT | PTE_SPECIAL | PTE_YOUNG))
                    self.pt.map_range(vpn0, new)
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
        """``unmap_vmas`` / ``zap_page_range``: notifier start, clear the PTEs under the PT
        lock (telling the checker which private contents are gone, at that step), flush the
        TLB, notifier end, and only then free the pages (``tlb_finish_mmu``). With
        ``nonblock`` (the OOM reaper) a refused start skips the range: returns False."""
        subs = self.notifier_subscriptions
        rng = self._range(start, end, event, blockable=not nonblock)
        if nonblock:
            if (yield from subs.mmu_notifier_invalidate_range_start_nonblock(rng)):
                return False
        else:
            yield from subs.mmu_notifier_invalidate_range_start(rng)
        yield self.page_table_lock
        try:
            _vpns, ptes = self.pt.clear_range(start >> PAGE_SHIFT, end >> PAGE_SHIFT)
            for s, e in discard:
                self.sched.observer.discard(self, s, e)
            self.sched.charge("pte_update", len(ptes))
            yield from self._flush_tlb_range(start, end)
        finally:
            self.page_table_lock.release()
        yield from subs.mmu_notifier_invalidate_range_end(rng)
        self.memory.release_entries(ptes)          # tlb_finish_mmu: free after end
        return True

    def _do_munmap(self, start, end):
        """``do_munmap`` (mmap_lock held for write): split, detach, ``unmap_region``
        (start/end UNMAP around the zap, 2.6.27 ``unmap_vmas``), free page tables."""
        if not self.vmas_in(start, end):
            return
        vmas = self._split_at(start, end)
        for v in vmas:                              # detach_vmas_to_be_unmapped
            self.vmas.remove(v)
        yield from self._zap(start, end, Event.UNMAP, [(v.start, v.end) for v in vmas])
        for v in vmas:
            yield from self._unlink_vma(v)
        self.pt.free_empty(start >> PAGE_SHIFT, end >> PAGE_SHIFT)   # free_pgtables

    def munmap(self, addr, length):
        """``munmap``: unmap ``[addr, addr + length)`` (length rounded up to pages)."""
        self._alive()
        start, end = self._check_range(addr, length, "munmap")
        yield self.mmap_lock.write()
        try:
            yield
            yield from self._do_munmap(start, end)
        finally:
            self.mmap_lock.up_write()

    def brk(self, new_end=None):
        """``brk``: move the end of the heap; returns the new break (the current one for
        ``None``). Shrinking unmaps (start/end UNMAP) and discards the contents."""
        self._alive()
        if new_end is None:
            return self.brk_end
        new_end = _int(new_end, "brk: address")
        if new_end < self.brk_start or new_end > MMAP_BASE:
            raise InvalidArgument(f"brk: {new_end:#x} is outside the heap area "
                                  f"[{self.brk_start:#x}, {MMAP_BASE:#x})")
        yield self.mmap_lock.write()
        try:
            yield
            old_top = (self.brk_end + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
            new_top = (new_end + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
            if new_top < old_top:
                yield from self._do_munmap(new_top, old_top)
            elif new_top > old_top:
                if self.vmas_in(old_top, new_top):
                    raise OutOfMemory(f"brk: growing the heap to {new_end:#x} would overlap "
                                      "a mapping (Linux: brk fails, ENOMEM)")
                heap = self.vma_at(old_top - 1) if old_top > self.brk_start else None
                if heap is not None and "heap" in heap.flags:
                    heap.end = new_top                       # vma_adjust / do_brk_flags
                else:
                    self._insert_vma(VMA(self, old_top, new_top, "rw", flags=("heap",)))
            self.brk_end = new_end
        finally:
            self.mmap_lock.up_write()
        return self.brk_end

    # ------------------------------------------------------------------ mprotect
    def mprotect(self, addr, length, prot):
        """``mprotect``: change the protection of a fully mapped range. PTEs follow
        (``change_protection``, start/end PROTECTION_VMA per VMA): write access is removed at
        once, added lazily by faults; PROT_NONE entries stay mapped but are not present."""
        self._alive()
        start, end = self._check_range(addr, length, "mprotect")
        prot = parse_prot(prot)
        yield self.mmap_lock.write()
        try:
            yield
            self._check_mapped(start, end, "mprotect")
            for vma in self._split_at(start, end):
                old = vma.prot
                vma.prot = prot
                yield from self._change_protection(vma, old, prot)
                yield
        finally:
            self.mmap_lock.up_write()

    def _change_protection(self, vma, old, new):
        """``change_protection`` (2.6.27: start/end around ``change_pud_range``, then
        ``flush_tlb_range``)."""
        subs = self.notifier_subscriptions
        rng = self._range(vma.start, vma.end, Event.PROTECTION_VMA)
        yield from subs.mmu_notifier_invalidate_range_start(rng)
        v0, v1 = vma.start >> PAGE_SHIFT, vma.end >> PAGE_SHIFT
        yield self.page_table_lock
        try:
            changed = 0
            if new == "none":
                changed = self.pt.protect_range(v0, v1, PTE_PRESENT | PTE_WRITE, PTE_PROTNONE)
            else:
                if old == "none":
                    vpns = np.arange(v0, v1, dtype=np.int64)
                    cur = self.pt.walk(vpns)
                    pn = (cur & _U(PTE_PROTNONE | PTE_SWAP | PTE_MIGRATION)) == _U(PTE_PROTNONE)
                    if pn.any():
                        cur[pn] = (cur[pn] & ~_U(PTE_PROTNONE)) | _U(PTE_PRESENT)
                        self.pt.map_range(v0, cur)
                if "w" not in new:
                    changed = self.pt.protect_range(v0, v1, PTE_WRITE, 0)
            if changed:
                self.sched.charge("pte_update", changed)
                yield from self._flush_tlb_range(vma.start, vma.end)
        finally:
            self.page_table_lock.release()
        yield from subs.mmu_notifier_invalidate_range_end(rng)

    # ------------------------------------------------------------------ madvise
    def madvise(self, addr, length, advice):
        """``madvise``: ``"dontneed"`` (zap: start/end CLEAR; private contents are gone),
        ``"free"`` (MADV_FREE: private anonymous pages become lazily freeable until written
        again), ``"dontfork"`` / ``"dofork"``."""
        self._alive()
        if not isinstance(advice, str) or advice.lower() not in ADVICE:
            raise InvalidArgument(f"madvise: unknown advice {advice!r}: use one of "
                                  f"{list(ADVICE)}")
        advice = advice.lower()
        start, end = self._check_range(addr, length, "madvise")
        write_lock = advice in ("dontfork", "dofork")
        yield self.mmap_lock.write() if write_lock else self.mmap_lock.read()
        try:
            yield
            self._check_mapped(start, end, "madvise")
            if advice == "free":
                for v in self.vmas_in(start, end):
                    if v.file is not None:
                        raise InvalidArgument(
                            f"madvise(free): {v.describe()} is not private anonymous memory "
                            "(Linux: EINVAL); MADV_FREE works on private anonymous mappings")
            if write_lock:
                for v in self._split_at(start, end):
                    if advice == "dontfork":
                        v.flags.add("dontfork")
                    else:
                        v.flags.discard("dontfork")
                return
            for v in self.vmas_in(start, end):
                s, e = max(start, v.start), min(end, v.end)
                if advice == "dontneed":
                    # madvise_dontneed_single_vma -> zap_page_range_single (CLEAR)
                    yield from self._zap(s, e, Event.CLEAR, [] if v.shared else [(s, e)])
                else:
                    yield from self._madvise_free(v, s, e)
                yield
        finally:
            if write_lock:
                self.mmap_lock.up_write()
            else:
                self.mmap_lock.up_read()

    def _madvise_free(self, vma, start, end):
        """``madvise_free_single_vma`` (4.5+): start/end CLEAR; exclusively mapped pages get
        clean, old PTEs and become lazily freeable (reclaim drops them if still clean); swap
        entries are freed."""
        mem = self.memory
        subs = self.notifier_subscriptions
        rng = self._range(start, end, Event.CLEAR)
        yield from subs.mmu_notifier_invalidate_range_start(rng)
        v0, v1 = start >> PAGE_SHIFT, end >> PAGE_SHIFT
        yield self.page_table_lock
        try:
            vpns = np.arange(v0, v1, dtype=np.int64)
            cur = self.pt.walk(vpns)
            new = cur.copy()
            sw = (cur & _BITS_SWAP) != 0
            slots = swap_slots(cur)
            new[sw] = 0
            present = ((cur & _U(PTE_PRESENT)) != 0) & ((cur & _BITS_SPECIAL) == 0)
            pfns = ((cur & _PFN_MASK) >> _U(PFN_SHIFT)).astype(np.int64)
            f = mem.frames
            excl = present.copy()
            excl[present] = ((f.mapcount[pfns[present]] == 1)
                             & ((f.flags[pfns[present]] & FRAME_KSM) == 0))
            new[excl] &= ~_U(PTE_DIRTY | PTE_YOUNG)
            self.pt.map_range(v0, new)
            self.sched.observer.discard(self, start, end)
            f.set_flags(pfns[excl], mem.FRAME_LAZYFREE)
            yield from self._flush_tlb_range(start, end)
        finally:
            self.page_table_lock.release()
        yield from subs.mmu_notifier_invalidate_range_end(rng)
        mem.swap.free(slots)

    # ------------------------------------------------------------------ mremap
    def mremap(self, old_addr, old_len, new_len, new_addr=None):
        """``mremap``: resize a mapping, moving it if needed (MREMAP_MAYMOVE) or to
        ``new_addr`` (MREMAP_FIXED). The old range must lie in one VMA. Returns the address.
        A move runs ``move_page_tables`` (start/end UNMAP on the old range) and then
        ``do_munmap`` of the old range."""
        self._alive()
        start, old_end = self._check_range(old_addr, old_len, "mremap")
        new_len = _int(new_len, "mremap: new length")
        if new_len <= 0:
            raise InvalidArgument(f"mremap: new length {new_len} is empty or negative")
        new_len = (new_len + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        old_len = old_end - start
        if new_addr is not None:
            new_addr, _ = self._check_range(new_addr, new_len, "mremap(new_addr)")
            if new_addr < MMAP_MIN_ADDR:
                raise InvalidArgument(f"mremap: new_addr {new_addr:#x} is below "
                                      f"{MMAP_MIN_ADDR:#x}")
            if new_addr < old_end and start < new_addr + new_len:
                raise InvalidArgument("mremap: the new range overlaps the old one")
        yield self.mmap_lock.write()
        try:
            yield
            vma = self.vma_at(start)
            if vma is None or vma.end < old_end:
                raise SegmentationFault(f"mremap: [{start:#x}, {old_end:#x}) is not inside "
                                        "one mapping (Linux: EFAULT)", address=start)
            if new_addr is None and new_len <= old_len:
                if new_len < old_len:
                    yield from self._do_munmap(start + new_len, old_end)
                return start
            if new_addr is None and old_end == vma.end and \
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
            yield from self._move_vma(vma, start, old_end, dest, new_len)
            return dest
        finally:
            self.mmap_lock.up_write()

    def _move_vma(self, vma, start, old_end, dest, new_len):
        """``move_vma``: new VMA, ``move_page_tables``, then unmap the old range."""
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
                arr = np.zeros(int(vpns[-1] - v0) + 1, dtype=np.uint64)
                arr[vpns - v0] = ptes
                self.pt.map_range(dest >> PAGE_SHIFT, arr)
            self.sched.observer.move(self, start, dest, moved)
            yield from self._flush_tlb_range(start, start + moved)
        finally:
            self.page_table_lock.release()
            for lk in reversed(rmap):
                lk.unlock_write()                  # drop_rmap_locks
        yield from subs.mmu_notifier_invalidate_range_end(rng)
        yield from self._do_munmap(start, old_end)

    # ------------------------------------------------------------------ fork
    def _pte_alloc(self, child):
        """``pte_alloc``: a page-table page for the child, taken from the frame allocator
        (so that injected allocation failures hit fork mid-copy, as ENOMEM from
        ``copy_pte_range`` did)."""
        pfn = self.memory.frames.alloc_one(owner=child.id, flags=0, zero=True)
        child.pt_pages.append(pfn)

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
        try:
            self._pte_alloc(child)
            v0, v1 = vma.start >> PAGE_SHIFT, vma.end >> PAGE_SHIFT
            pinned_new = None
            if mem.fork_copies_pinned:
                # page_needs_cow_for_dma (5.9+): pages that may be DMA-pinned are copied for
                # the child; preallocate before taking the locks (copy_present_page)
                _pv, pp = self.pt.iter_present(v0, v1)
                pfns = mapped_pfns(pp)
                npin = int(((frames.pincount[pfns] > 0)
                            & ((frames.flags[pfns] & FRAME_ANON) != 0)).sum())
                if npin:
                    pinned_new = frames.alloc(npin, owner=child.id, flags=FRAME_ANON,
                                              zero=False)
        except OutOfMemory:
            if cow and not mem.fork_enomem_bug:
                # the fix from the 2008 review: break out of the loop, fall through to end
                yield from subs.mmu_notifier_invalidate_range_end(rng)
            # fork_enomem_bug: "return -ENOMEM" straight out of the loop, end never called
            raise
        yield child.page_table_lock                 # dst_ptl = pte_alloc_map_lock
        yield self.page_table_lock                  # spin_lock_nested(src_ptl)
        try:
            vpns, ptes = self.pt.copy_range(child.pt, v0, v1, cow)
            self.sched.observer.fork_copy(self, child, vma.start, vma.end)
            pfns_all = ((ptes & _PFN_MASK) >> _U(PFN_SHIFT)).astype(np.int64)
            mapped = ((ptes & _BITS_MAPPED) != 0) & ((ptes & (_BITS_SPECIAL |
                                                               _BITS_NONPRESENT)) == 0)
            if pinned_new is not None:
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
            shared = pfns_all[mapped]
            frames.get(shared)
            frames.inc_mapcount(shared)
            anon = shared[(frames.flags[shared] & FRAME_ANON) != 0]
            frames.owner[anon] = NO_OWNER        # COW-shared between parent and child
            mem.swap.dup(swap_slots(ptes))
            self.sched.charge("pte_update", len(ptes))
            if cow and self.api == "modern" and len(ptes):
                yield from self._flush_tlb_range(vma.start, vma.end)
        finally:
            self.page_table_lock.release()
            child.page_table_lock.release()
        if cow:
            yield from subs.mmu_notifier_invalidate_range_end(rng)

    # ------------------------------------------------------------------ exit
    def exit(self):
        """``exit_mmap``: ``mmu_notifier_release`` first (interval notifiers get a RELEASE
        range), while every page is still mapped; then unmap everything and free it."""
        self._alive()
        yield self.mmap_lock.write()
        try:
            yield
            yield from self.notifier_subscriptions.mmu_notifier_release()
            yield
            yield from self._teardown()
        finally:
            self.mmap_lock.up_write()

    def _teardown(self):
        """Unmap every VMA and free the page tables (after release; no notifier is left on
        the chain: ``__mmu_notifier_release`` unhashed them)."""
        mem = self.memory
        ranges = [(v.start, v.end) for v in self.vmas]
        vmas = list(self.vmas)
        self.vmas = []
        yield self.page_table_lock
        try:
            _vpns, ptes = self.pt.clear_range(0, self.pt_limit())
            for s, e in ranges:
                self.sched.observer.discard(self, s, e)
            self.sched.charge("tlb_shootdown")
        finally:
            self.page_table_lock.release()
        mem.release_entries(ptes)
        for v in vmas:
            yield from self._unlink_vma(v)
        self.pt.destroy()
        if self.pt_pages:
            mem.frames.put(np.array(self.pt_pages, dtype=np.int64))
            self.pt_pages = []
        self.exited = True
        if self in mem.mms:
            mem.mms.remove(self)

    @staticmethod
    def pt_limit():
        from primary_mm.pagetable import VPN_LIMIT
        return VPN_LIMIT

    # ------------------------------------------------------------------ notifiers
    def mm_take_all_locks(self):
        """``mm_take_all_locks``: every i_mmap lock, then every anon_vma lock, of this mm
        (each once), so that no reverse-map walk is in flight during registration."""
        seen = set()
        locks = []
        for v in self.vmas:
            if v.file is not None and id(v.file.mapping) not in seen:
                seen.add(id(v.file.mapping))
                locks.append(v.file.mapping.lock)
        for v in self.vmas:
            if v.anon_vma is not None and id(v.anon_vma) not in seen:
                seen.add(id(v.anon_vma))
                locks.append(v.anon_vma.lock)
        for lk in locks:
            yield from lk.lock_write()
            self._held_rmap_locks.append(lk)

    def mm_drop_all_locks(self):
        while self._held_rmap_locks:
            self._held_rmap_locks.pop().unlock_write()

    def mmu_notifier_register(self, sub):
        """``mmu_notifier_register``: with mmap_lock held for write (taken here unless the
        current task holds it)."""
        self._alive()
        took = not self._mmap_lock_held()
        if took:
            yield self.mmap_lock.write()
        try:
            yield from self.notifier_subscriptions.register(sub)
        finally:
            if took:
                self.mmap_lock.up_write()

    def mmu_notifier_unregister(self, sub):
        """``mmu_notifier_unregister``: ``release`` if it has not run, then wait until no
        hook of ``sub`` can run."""
        yield from self.notifier_subscriptions.unregister(sub)


def _vma_start(v):
    return v.start
