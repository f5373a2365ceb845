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

from primary_mm.exit import Exit
from primary_mm.fault import Faults
from primary_mm.fork import Fork
from primary_mm.hmm import Hmm
from primary_mm.huge_memory import HugeMemory
from primary_mm.hugetlb import HugetlbFault
from primary_mm.layout import BRK_START, as_int, as_value
from primary_mm.madvise import Madvise
from primary_mm.mmap import Mmap
from primary_mm.mprotect import Mprotect
from primary_mm.mremap import Mremap
from primary_mm.rmap import DeviceExclusive
from primary_mm.task_mmu import PagemapScan
from primary_mm.vma import VMA, vma_start
from smmu.base.constants import PAGE_SHIFT, PAGE_SIZE, TASK_SIZE
from smmu.base.errors import InvalidArgument, SegmentationFault, UsageError
from smmu.base.pte import PTE_DEVICE, PTE_MAPPED, PTE_MIGRATION, PTE_SWAP, pte_pfn
from smmu.notifier import Event, NotifierSubscriptions, Range


class MM(Faults, Hmm, HugeMemory, HugetlbFault, Mmap, Mprotect, Madvise, Mremap, Fork, Exit,
         DeviceExclusive, PagemapScan):
    """One process address space (``struct mm_struct``). Make it with ``sim.new_process()``.

    Its operations are assembled from one class per Linux file they model: :class:`Faults`
    (``mm/memory.c``, ``mm/gup.c``), :class:`Hmm` (``mm/hmm.c``), :class:`HugeMemory`
    (``mm/huge_memory.c``), :class:`Mmap`, :class:`Mprotect`, :class:`Madvise`,
    :class:`Mremap`, :class:`Fork`, :class:`Exit` and :class:`DeviceExclusive`
    (``make_device_exclusive_range``, ``mm/rmap.c``); this class holds the state, the plain
    helpers, argument validation, and the notifier helpers those operations share
    (``_range``, ``_flush_tlb_range``, ``_young_under_ptl``, ``_pte_replace``).

    Attributes: ``id``, ``name``, ``memory``, ``notifier_subscriptions``, ``mmap_lock``,
    ``page_table_lock``, ``pt``, ``vmas`` (sorted by start), ``brk_start`` / ``brk_end``,
    ``cpu_vm_mask`` (the CPUs whose tasks have run in this mm: they may cache its
    translations, so a TLB flush must reach them).
    """

    def __init__(self, memory, mm_id: int, name: str | None = None):
        self.memory = memory
        self.sched = memory.sched
        self.api = memory.api
        self.id = mm_id
        self.name = name or f"mm{mm_id}"
        self.notifier_subscriptions = NotifierSubscriptions(
            self.sched, self, memory.api,
            nonblock_fail_calls_end=memory.nonblock_fail_calls_end,
            notifier_rcu=memory.notifier_rcu, release_order=memory.release_order,
            interval_remove_race=memory.interval_remove_race)
        self.mmap_lock = self.sched.rwsem("mmap_lock")
        self.page_table_lock = self.sched.spinlock("ptl")
        self.pt = memory.new_page_table()
        self.vmas: list[VMA] = []
        self.brk_start = BRK_START
        self.brk_end = BRK_START
        self.pt_pages: list[int] = []   # frames standing for page-table pages (pte_alloc)
        # mm->cpu_vm_mask (2.6.27; mm_cpumask today): set by switch_mm when a CPU starts
        # running the mm and, on x86, not cleared when it stops (only lazily, by leave_mm)
        self.cpu_vm_mask: set[int] = set()
        self.exited = False
        self.exiting = False            # mm_users reached 0: exit_mmap runs or ran
        self._users = 0                 # operations in flight holding an mm_users reference
        self._users_wq = self.sched.waitqueue("mm_users")
        self.oom_reaped = False      # MMF_OOM_SKIP: the reaper is done with it
        self.oom_unstable = False    # MMF_UNSTABLE: the reaper unmapped its memory
        self._held_rmap_locks: list = []

    def __repr__(self):
        st = " exited" if self.exited else " exiting" if self.exiting else ""
        return (f"<MM {self.id} {self.name!r}{st}: {len(self.vmas)} vmas, "
                f"{len(self.notifier_subscriptions.subs)} notifiers>")

    # ================================================================== plain helpers
    def vma_at(self, va: int) -> VMA | None:
        """``find_vma`` + containment: the VMA covering ``va``, or None."""
        i = bisect.bisect_right(self.vmas, va, key=vma_start) - 1
        if i >= 0 and self.vmas[i].end > va:
            return self.vmas[i]
        return None

    def vmas_in(self, start: int, end: int) -> list[VMA]:
        """VMAs overlapping ``[start, end)``, in address order."""
        i = max(bisect.bisect_right(self.vmas, start, key=vma_start) - 1, 0)
        out = []
        for v in self.vmas[i:]:
            if v.start >= end:
                break
            if v.end > start:
                out.append(v)
        return out

    def lookup_pte(self, va: int) -> int:
        """A lockless walk of the page table (GRU's ``atomic_pte_lookup``, an IOMMU's
        hardware walk): the entry for ``va`` now (0 = none). Use :func:`pte_pfn`. Reported
        to the observer (``pte_walk``): it is a device's view of the primary."""
        pte = self.pt.lookup(int(va) >> PAGE_SHIFT)
        self.sched.observer.pte_walk(self, va, pte)
        return pte

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
        if pte & (PTE_MAPPED | PTE_DEVICE):   # device pages: what migrate_to_ram brings back
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
        if self.exiting:
            raise SegmentationFault(f"{self!r} is exiting (mm_users is 0): its threads are "
                                    "gone and mmget_not_zero() fails", None)

    def _mmget(self):
        """``mmget_not_zero`` for an operation on this mm (a fault, GUP, hmm_range_fault):
        refused once the mm is exiting; ``exit_mmap`` waits for those in flight (the last
        ``mmput`` is what runs it). Pair with :meth:`_mmput`."""
        self._alive()
        self._users += 1

    def _mmput(self):
        self._users -= 1
        if not self._users and self._users_wq.waiters:
            self._users_wq.wake_all()

    def mmget_not_zero(self) -> bool:
        """``mmget_not_zero`` for a driver working on this mm from outside its threads
        (dmirror's ioctls: "Since the mm is for the mirrored process, get a reference
        first"): False once the mm is exiting. Drop the reference with :meth:`mmput`."""
        if self.exited or self.exiting:
            return False
        self._users += 1
        return True

    def mmput(self) -> None:
        """``mmput``: drop a reference :meth:`mmget_not_zero` took."""
        self._mmput()

    def _check_range(self, addr, length, op: str, round_len: bool = True) -> tuple[int, int]:
        addr = as_int(addr, f"{op}: address")
        length = as_int(length, f"{op}: length")
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

    def switch_mm(self) -> None:
        """The running task executes in this address space (its user accesses): its CPU joins
        ``cpu_vm_mask`` as ``switch_mm`` does (``cpu_set(cpu, next->cpu_vm_mask)``, 2.6.27
        include/asm-x86/mmu_context_64.h). Setup work outside ``run()`` runs on no CPU."""
        cpu = self.sched.cpu_of()
        if cpu is not None and cpu not in self.cpu_vm_mask:
            self.cpu_vm_mask.add(cpu)

    def flush_tlb_cpus(self) -> int:
        """The CPU side of a TLB flush of this mm, as 2.6.27 arch/x86/kernel/tlb_64.c
        ``flush_tlb_page`` / ``flush_tlb_range`` / ``flush_tlb_mm`` do: a local flush when the
        flushing CPU runs this mm (``current->active_mm == mm``: it is in ``cpu_vm_mask``),
        and if any other CPU of ``cpu_vm_mask`` is left, ``flush_tlb_others``: one IPI to
        each (``send_IPI_mask``), then spin until every one has flushed
        (``while (!cpus_empty(f->flush_cpumask)) cpu_relax()``), so the wait is one round
        trip (``tlb_shootdown``) plus ``ipi_send`` per remote CPU past the first. Returns the
        number of remote CPUs."""
        sched = self.sched
        mask = self.cpu_vm_mask
        cpu = sched.cpu_of()
        local = cpu in mask
        if local:
            sched.charge("tlb_flush_local")
        remote = len(mask) - local
        if remote:
            sched.charge("tlb_shootdown")
            if remote > 1:
                sched.charge("ipi_send", remote - 1)
            sched.stats["tlb_shootdown_ipis"] += remote
        return remote

    def _flush_tlb_range(self, start, end):
        """``flush_tlb_range``: the CPU TLB flush (:meth:`flush_tlb_cpus`), and in modern
        Linux the secondary TLBs that share the CPU tables
        (``mmu_notifier_arch_invalidate_secondary_tlbs``, called by the arch flush code under
        the PT lock)."""
        self.flush_tlb_cpus()
        if self.api == "modern":
            if self.memory.arch_flush_empty_range and end - start > PAGE_SIZE:
                # arm64 6.6..6.13: __flush_tlb_range_op advanced the caller's start while it
                # looped, so __flush_tlb_range_nosync passed [end, end) (f7edb07ad7c6)
                start = end
            yield from self.notifier_subscriptions.mmu_notifier_arch_invalidate_secondary_tlbs(
                start, end)

    def _young_under_ptl(self, va, size=PAGE_SIZE, flush=True):
        """``ptep_clear_flush_young_notify`` on the page of ``va`` (``size=HPAGE_PMD_SIZE``:
        ``pmdp_clear_flush_young_notify`` on the huge PMD), PT lock held: the accessed bit of
        the entry and ``mmu_notifier_clear_flush_young`` over ``[va, va + size)``. With
        ``flush=False``, ``ptep_clear_young_notify`` / ``pmdp_clear_young_notify`` (no TLB
        flush, ``mmu_notifier_clear_young``: page_idle, MGLRU). True if either was young."""
        young = self.pt.clear_young(va >> PAGE_SHIFT)
        if young and flush:
            self.flush_tlb_cpus()        # ptep_clear_flush_young: flush_tlb_page if young
        subs = self.notifier_subscriptions
        hook = subs.mmu_notifier_clear_flush_young if flush else subs.mmu_notifier_clear_young
        young |= bool((yield from hook(va, va + size)))
        return young

    def _pte_replace(self, va, check, make, event, *, owner=None, notify="invalidate_page",
                     after=None, young_fails=False, why=None):
        """Replace one PTE with the notifier calls of the selected generation and era.

        ``notify="invalidate_page"``: the reverse-map callers (``try_to_unmap_one``,
        ``page_mkclean_one``). v2008: PT lock; ``ptep_clear_flush_notify`` (clear, flush,
        ``invalidate_page`` under the PT lock) then set the new entry; with
        ``invalidate_page_outside_ptl`` (3.7..4.10, 2ec74c3ef2d8) the call comes after the
        PT lock is dropped (set, unlock, *yield*, invalidate_page).

        ``notify="cow"`` (``wp_page_copy``) and ``notify="set_pte_at_notify"`` (KSM's
        ``write_protect_page`` and ``replace_page``): a PTE pointed at a new page or
        write-protected in place. v2008 per ``cow_notify`` era: "clear_flush_notify" (2.6.27:
        a COW is ``ptep_clear_flush_notify`` under the PT lock, then ``set_pte_at``; KSM, from
        2.6.32, as in the next era), "set_pte_at_notify" (2.6.32..3.6:
        ``ptep_clear_flush``, then ``set_pte_at_notify``, which sets the PTE and then calls
        ``change_pte``, or ``invalidate_page`` for a driver without it; no start/end), "range"
        (3.7+, 6bdb913f0a70: ``invalidate_range_start`` before the PT lock, and under it
        ``ptep_clear_flush`` then ``set_pte_at_notify``, which notifies first: "Updating the
        secondary MMUs first is required when we change both the protection of the mapping
        from read-only to read-write and the pfn"; ``invalidate_range_end`` after). No kernel
        called ``invalidate_page`` for a COW after dropping the PT lock.

        ``notify=None``: no hook (v2008). range_only / modern: ``invalidate_range_start``
        (one page) before the PT lock, clear + flush (modern: ``arch_invalidate_secondary_tlbs``
        under the lock), set, unlock, ``invalidate_range_end``.

        ``check(old) -> bool`` runs under the PT lock first (``pte_same`` and friends);
        ``young_fails``: then, as the 2.6.2x ``try_to_unmap_one`` did, a page found young by
        ``ptep_clear_flush_young_notify`` is kept (SWAP_FAIL: returns None, and
        ``why["young"]`` is set when a ``why`` dict is given);
        ``make(old) -> new`` (0 clears); ``after(old, new)`` under the lock once set.
        Returns the old entry, or None if ``check`` refused (nothing changed).
        """
        vpn = va >> PAGE_SHIFT
        pt = self.pt
        ptl = self.page_table_lock
        subs = self.notifier_subscriptions
        v2008 = self.api == "v2008"
        era = self.memory.cow_notify
        setnotify = notify in ("cow", "set_pte_at_notify")
        if v2008 and not (setnotify and era == "range"):
            outside = notify == "invalidate_page" and self.memory.invalidate_page_outside_ptl
            clear_notify = notify == "invalidate_page" or (notify == "cow" and
                                                           era == "clear_flush_notify")
            yield ptl
            try:
                old = pt.lookup(vpn)
                if not check(old):
                    return None
                if young_fails and (yield from self._young_under_ptl(va)):
                    if why is not None:
                        why["young"] = True
                    return None
                new = make(old)
                pt.clear(vpn)                                    # ptep_clear_flush
                self.sched.observer.pte_cleared(
                    self, va, "invalidate_page" if clear_notify or outside else
                    "change_pte" if setnotify and new else None)
                yield from self._flush_tlb_range(va, va + PAGE_SIZE)
                if clear_notify and not outside:
                    yield from subs.mmu_notifier_invalidate_page(va)   # under the PT lock
                if new:
                    pt.set(vpn, new)
                if setnotify and not clear_notify and new:
                    # 2.6.32..3.6 set_pte_at_notify: set_pte_at, then change_pte
                    yield from subs.mmu_notifier_change_pte(va, new)
                if after is not None:
                    after(old, new)
            finally:
                ptl.release()
            if outside:
                yield   # the 3.7..4.10 window: the PTE changed, the old page still held
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
                if why is not None:
                    why["young"] = True
            if ok:
                new = make(old)
                pt.clear(vpn)                                    # ptep_clear_flush
                self.sched.observer.pte_cleared(
                    self, va, "change_pte" if v2008 and setnotify and new else None)
                yield from self._flush_tlb_range(va, va + PAGE_SIZE)
                if v2008 and setnotify and new:
                    # 3.7+ set_pte_at_notify: change_pte first, then set_pte_at (no
                    # invalidate_page fallback any more: the range already zapped)
                    yield from subs.mmu_notifier_change_pte(va, new, fallback=False)
                if new:
                    pt.set(vpn, new)
                if after is not None:
                    after(old, new)
        finally:
            ptl.release()
        # preemptible between pte_unmap_unlock and the end: "This is true even if the thread
        # doing the page table update is preempted right after releasing page table lock but
        # before call mmu_notifier_invalidate_range_end()" (Documentation/mm/mmu_notifier.rst)
        yield
        yield from subs.mmu_notifier_invalidate_range_end(rng)
        return old if ok else None

    def device_access(self, drv, va: int, pfn: int, write: bool, value):
        """A device access by driver ``drv`` to frame ``pfn`` through its translation of
        ``va``, one atomic step (``MMUNotifier.dma_read`` / ``dma_write``): reported to the
        observer, then the frame is read or written. Returns the value read or written."""
        frames = self.memory.frames
        if not (0 < pfn < len(frames.contents)):
            raise UsageError(f"{drv.name} accessed pfn {pfn}, which does not exist")
        if write:       # one check for every stored value, as a CPU store's (Faults.write)
            value = as_value(value, f"{drv.name}: dma_write value")
        self.sched.observer.device_access(drv, va, pfn, write, value)
        self.sched.charge("device_access")
        if write:
            frames.contents[pfn] = value
            return value
        return int(frames.contents[pfn])

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
        current task holds it). ``sub=None`` registers the interval tree (the first
        ``mmu_interval_notifier_insert``)."""
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
        """``mmu_notifier_unregister``: ``release`` if ``sub`` is still on the chain, then
        wait until no hook of ``sub`` can run (``synchronize_srcu``)."""
        yield from self.notifier_subscriptions.unregister(sub)

    def mmu_notifier_get(self, cls, factory=None):
        """``mmu_notifier_get``: under mmap_lock for write, the subscription of class
        ``cls`` on this mm with one more reference, or a new one (``factory()``, else
        ``cls.alloc_notifier(sim, mm)``) registered. Returns it."""
        self._alive()
        took = not self._mmap_lock_held()
        if took:
            yield self.mmap_lock.write()
        try:
            return (yield from self.notifier_subscriptions.get(cls, factory))
        finally:
            if took:
                self.mmap_lock.up_write()

    def mmu_notifier_put(self, sub):
        """``mmu_notifier_put``: drop a :meth:`mmu_notifier_get` reference; the last one
        unlinks ``sub`` and frees it (``free_notifier``) after a grace period. Returns at
        once."""
        yield from self.notifier_subscriptions.put(sub)

    def mmu_notifier_synchronize(self):
        """``mmu_notifier_synchronize``: wait until every subscription put so far was
        freed."""
        yield from self.notifier_subscriptions.mmu_notifier_synchronize()
