"""Broken variants of :class:`drivers.KVM`: each overrides only what breaks."""

from __future__ import annotations

from drivers._common import device_gone, page_of, vpn_of, walk_pte
from drivers.buggy._kinds import STALE
from drivers.kvm import KVM
from drivers.kvm_gpc import KVM_GPC
from drivers.kvm_memslots import KVM_MEMSLOTS
from smmu.base.constants import HPAGE_PMD_SIZE, PAGE_SIZE
from smmu.notifier import MMUNotifier


class KVMNoInProgressCheck(KVM):
    """The fault's retry check looks only at the sequence, not at
    ``mmu_invalidate_in_progress``: a fault that GUPs the still-mapped old page after
    ``start`` zapped and installs it before ``end`` bumps the sequence maps inside the
    window."""

    breaks = ("no secondary mapping may be established between invalidate_range_start and "
              "_end: the fault must retry while an invalidation covering it is in progress")
    mirrors = ("the reason for mmu_notifier_count in the 2008 KVM patch (seed thread): "
               "'a page that GUP returns in that window can be freed without another "
               "notification'")
    expected = {"MapInWindow"} | STALE
    # the fault must GUP the old page inside the window: operations that hold mmap_lock for
    # write (munmap, mprotect) keep GUP out, so the exposing ones are rmap-side
    scenarios = ("reclaim-while-device-reads", "migration")
    apis = ("range_only", "modern")

    def fault_is_stale(self, vpn, mmu_seq):
        return self.mmu_invalidate_seq != mmu_seq


class KVMNoSeqCheck(KVM):
    """The fault's retry check looks only at the in-progress count: a whole start..end (or a
    v2008 ``invalidate_page``) that runs between the snapshot and the check goes unnoticed,
    and the fault installs the page GUP returned before the PTE was cleared."""

    breaks = ("a fault must retry if any invalidation ran since it snapshotted "
              "mmu_invalidate_seq (checked under mmu_lock)")
    mirrors = None
    expected = set(STALE)
    scenarios = ("munmap-during-device-fault", "cow-after-fork", "migration",
                 "reclaim-while-device-reads", "overlapping-invalidations")
    apis = ("v2008", "range_only", "modern")

    def fault_is_stale(self, vpn, mmu_seq):
        if self.mmu_invalidate_in_progress:
            if self.style == "2008":
                return True
            return self.mmu_invalidate_range_start <= vpn < self.mmu_invalidate_range_end
        return False


class KVMSeqInStart(KVM):
    """Bumps ``mmu_invalidate_seq`` in ``invalidate_range_start`` (before the zap) instead of
    in ``end``: a fault that snapshots after the bump, GUPs the old page inside the window and
    checks after ``end`` sees neither a count nor a moved sequence."""

    breaks = ("the sequence must move when an invalidation ends (seq++ then in_progress--, "
              "under mmu_lock), not before the zap")
    mirrors = None
    expected = set(STALE)
    scenarios = ("pageout-while-device-reads", "reclaim-while-device-reads", "migration")
    apis = ("range_only", "modern")
    # the window needs a snapshot after start, a GUP before the PTE is cleared and the check
    # after end: the default search's window-directed part places the fault that way
    # (smmu.explore.steer), and the map is caught as it is made (StaleMapping)

    def invalidate_range_start(self, range):
        with (yield self.mmu_lock):
            self.mmu_invalidate_seq += 1
            self.invalidate_begin(range.start, range.end)
            self.zap(range.start, range.end)
        return 0

    def invalidate_range_end(self, range):
        with (yield self.mmu_lock):
            self.mmu_invalidate_in_progress -= 1


class KVMSeqAfterUnlock(KVM):
    """Bumps the sequence only after dropping ``mmu_lock`` and flushing remote TLBs: in v2008
    ``invalidate_page`` zaps, unlocks, flushes, then bumps; in ``end`` the count drops under
    the lock and the sequence moves only after the flush. A fault that takes the lock in
    between sees neither a count nor a moved sequence and installs the old page."""

    breaks = ("the sequence must be bumped under mmu_lock, before the count drops: "
              "'increasing the sequence after the spin_unlock would be unsafe'")
    mirrors = ("the comment in 2.6.27 kvm_mmu_notifier_invalidate_page (virt/kvm/kvm_main.c): "
               "'Increasing the sequence after the spin_unlock would be unsafe because the kvm "
               "page fault could then establish the pte after kvm_unmap_hva returned'")
    expected = set(STALE)
    scenarios = ("reclaim-while-device-reads", "migration")
    apis = ("v2008", "range_only", "modern")

    def invalidate_page(self, mm, address):
        with (yield self.mmu_lock):
            self.zap(page_of(address), page_of(address) + PAGE_SIZE)
        yield from self._flush_remote_tlbs()
        self.mmu_invalidate_seq += 1

    def invalidate_range_end(self, range):
        with (yield self.mmu_lock):
            self.mmu_invalidate_in_progress -= 1
        yield from self._flush_remote_tlbs()
        self.mmu_invalidate_seq += 1

    def _flush_remote_tlbs(self):
        # kvm_flush_remote_tlbs: IPIs to every vCPU and wait for their acks
        self.sim.charge("tlb_shootdown")
        for _ in range(3):
            yield


class KVMCowWritable(KVM):
    """Resolves every fault with a read-only GUP (no ``FOLL_WRITE``, so no COW break) and
    installs the SPTE writable on a write fault anyway: device writes then land in a page the
    parent still shares with its child (or KSM with other mms), behind the primary's write
    protection."""

    breaks = ("a secondary mapping may be writable only if the primary PTE is writable: a "
              "write fault must GUP with FOLL_WRITE (breaking COW) before mapping writable")
    mirrors = ("the class of bug behind CVE-2020-29374 and the 2020-2021 GUP/COW rework: a "
               "write through a read-only GUP reference to a COW-shared page leaks into the "
               "other mm")
    expected = {"WriteToReadOnly", "StaleRead", "LostWrite", "StaleMapping"}
    scenarios = ("cow-after-fork", "ksm-merge")
    apis = ("v2008", "range_only", "modern")

    def faultin_pfn(self, va, write):
        return (yield from self.mm.get_user_pages(page_of(va), write=False))

    def install_spte(self, va, pfn, write):
        self.spt.map(vpn_of(va), pfn, bool(write))


class KVMApicRemap(KVM):
    """``invalidate_range_start`` re-resolves the APIC-access page while the primary PTE is
    still intact and maps it again (``KVM_REQ_APIC_PAGE_RELOAD`` processed before the PTE
    changed): the SPTE points at the old page, which is then freed."""

    breaks = ("no secondary mapping may be re-established inside start/end: re-resolve a "
              "page only after the PTE has been cleared (after end)")
    mirrors = ("e649b3f0188f (2020) 'KVM: x86: Fix APIC page invalidation race': the APIC "
               "page reload requested from the invalidation ran before the PTE was changed")
    expected = {"MapInWindow"} | STALE
    scenarios = ("apic-page-remap", "migration", "munmap-during-device-fault")
    apis = ("range_only", "modern")

    def invalidate_range_start(self, range):
        with (yield self.mmu_lock):
            vpn = vpn_of(range.start)
            had = self.spt.lookup(vpn) is not None
            self.invalidate_begin(range.start, range.end)
            self.zap(range.start, range.end)
            if had:                       # kvm_vcpu_reload_apic_access_page -> gfn_to_page
                hit = walk_pte(self.mm, range.start, False)
                if hit is not None:
                    self.spt.map(vpn, hit[0], hit[1])
        return 0


class KVMSleepsInInvalidatePage(KVM):
    """``invalidate_page`` takes a mutex (it sleeps) before doing KVM's work under
    ``mmu_lock``, as amdgpu's MMU notifier did: legal only where the kernel calls it after
    dropping the PT lock (3.7..4.10, ``invalidate_page_outside_ptl=True``, 2ec74c3ef2d8
    "move all mmu notifier invocations to be done outside the PT lock"). Under the PT lock
    (2.6.27..3.6, and 4.11..4.12 after c7ab0d2fdc84) the sleep is ``SleepInAtomic``."""

    breaks = ("invalidate_page must not sleep where the kernel calls it under the page table "
              "lock (ptep_clear_flush_notify, 2.6.27..3.6; page_vma_mapped_walk, 4.11..4.12)")
    mirrors = ("c7ab0d2fdc84 (4.11) called invalidate_page under the PT lock again: "
               "amdgpu_mn_invalidate_page's mutex_lock gave 'BUG: sleeping function called "
               "from invalid context' (A. Xie to akpm, 2017-08-03); the callback was removed "
               "in 4.13")
    expected = {"SleepInAtomic"}
    scenarios = ("reclaim-while-device-reads",)
    apis = ("v2008",)

    def __init__(self, sim, mm, **options):
        super().__init__(sim, mm, **options)
        self.mn_lock = sim.mutex("amdgpu_mn->lock")

    def invalidate_page(self, mm, address):
        with (yield self.mn_lock):                # mutex_lock(&rmn->lock): may sleep
            yield from super().invalidate_page(mm, address)


class KVMHugeFirstPage(KVM):
    """Zaps only the first 4 KiB of a range that is one huge page (2 MiB, aligned): the
    driver takes such a range for "the page at range.start", as the 2017 implementers of
    ``invalidate_page`` who "assumed this could never be THP" did when they turned to
    ranges. Every PMD operation notifies the whole 2 MiB (a split, a COW, a migration, a
    collapse), so the other 511 pages keep their SPTEs after the huge page's frames are
    freed or remapped. Before THP there were no such ranges: with ``Simulator(thp="never")``
    the same scenarios are clean."""

    breaks = ("a range covers every page from start to end: a 2 MiB range (a huge PMD) must "
              "drop all 512 pages' translations, not the first one")
    mirrors = ("5f32b265400d 'mm/mmu_notifier: kill invalidate_page' (2017): 'Lots of the "
               "callback implementers assumed this could never be THP and thus failed to "
               "invalidate the appropriate range for THP'")
    expected = set(STALE) | {"MapInWindow"}
    scenarios = ("thp-migration", "thp-partial-munmap", "khugepaged-collapse", "thp-cow-after-fork")
    apis = ("v2008", "range_only", "modern")

    def zap(self, start, end):
        if end - start == HPAGE_PMD_SIZE and start % HPAGE_PMD_SIZE == 0:
            end = start + PAGE_SIZE                       # "the page" at range.start
        super().zap(start, end)


class KVMSleepingAging(KVM):
    """Takes a mutex (it sleeps) in its aging hooks before KVM's work under ``mmu_lock``, as a
    driver that shares one lock between its fault path and aging would. Linux calls
    ``clear_flush_young`` from ``folio_referenced_one`` under the PT lock and ``clear_young``
    from ``page_idle_clear_pte_refs_one`` (and the 6.13 MGLRU look-around) under it too, so
    the sleep is ``SleepInAtomic``. It showed only once the scenarios aged pages: with every
    reclaim forced (``force=True``, no ``folio_check_references``) neither hook ran."""

    breaks = ("the aging hooks (clear_flush_young, clear_young, test_young) are called under "
              "the page table lock: they must not sleep")
    mirrors = ("the issue's user-written KVM-style driver with a mutex in clear_flush_young, "
               "clean over 1,000 PCT schedules while every scenario reclaimed with force=True")
    expected = {"SleepInAtomic"}
    scenarios = ("reclaim-while-device-reads", "page-idle-tracking", "thp-reclaim")
    apis = ("v2008", "range_only", "modern")

    def __init__(self, sim, mm, **options):
        super().__init__(sim, mm, **options)
        self.age_lock = sim.mutex("drv->age_lock")

    def clear_flush_young(self, mm, start, end):
        with (yield self.age_lock):               # mutex_lock: may sleep
            return (yield from super().clear_flush_young(mm, start, end))

    def clear_young(self, mm, start, end):
        with (yield self.age_lock):
            return (yield from super().clear_young(mm, start, end))


class RadeonUserptr(KVM):
    """radeon's userptr notifier before 3506ff69c3ec (``drivers/gpu/drm/radeon/radeon_mn.c``,
    the KVM model's SPTE machinery standing for the GPU's buffer objects): only
    ``invalidate_range_start``, which drops the mappings of the range, and a bind path that
    calls ``get_user_pages`` and maps what it got with no sequence or in-progress check. A
    bind whose GUP returned the old page before ``start`` ran maps it after ``start`` found
    nothing to drop: a mapping established in the window, of a page about to be freed."""

    breaks = ("a driver that looks up pages with GUP must order that against invalidations "
              "(in-progress count or sequence under its lock, or an interval notifier's "
              "read_begin/read_retry); a start-only notifier cannot")
    mirrors = ("3506ff69c3ec 'drm/radeon: use mmu_interval_notifier_insert' (5.5): 'Since "
               "this driver is missing a invalidate_range_end callback, but still calls "
               "get_user_pages(), it cannot be correct against all races'")
    expected = {"MapInWindow"} | STALE
    scenarios = ("reclaim-while-device-reads", "migration")
    apis = ("range_only", "modern")
    invalidate_range_end = MMUNotifier.invalidate_range_end      # no end callback

    def invalidate_range_start(self, range):
        with (yield self.mmu_lock):
            self.zap(range.start, range.end)                       # no count, no range
        return 0

    def fault_is_stale(self, vpn, mmu_seq):
        return False                                               # nothing to check


class KVMApicReloadNoRetry(KVM):
    """KVM between 0a8a5f2c8c26 and 878940b33d76 (6.5): the invalidation requests an
    APIC-access page reload (``KVM_REQ_APIC_PAGE_RELOAD`` from ``kvm_unmap_gfn_range``),
    and the vCPU serves it before re-entering the guest with ``gfn_to_pfn`` and a VMCS write,
    ignoring the invalidation still in progress: inside the window GUP still finds the old
    page (its PTE not yet cleared), and the VMCS keeps pointing at it after it is freed."""

    breaks = ("a reload of a page the invalidation is about must wait until the "
              "invalidation is over (mmu_invalidate_retry_hva, then request the reload "
              "again)")
    mirrors = ("878940b33d76 'KVM: VMX: Retry APIC-access page reload if invalidation is "
               "in-progress' (6.5); the same hole as b1394e745b94 before e649b3f0188f")
    expected = {"MapInWindow"} | STALE
    scenarios = ("apic-page-remap",)
    apis = ("modern",)
    apic_va = None                  # the APIC-access page (the first the vCPU touches)
    reload_requested = False        # KVM_REQ_APIC_PAGE_RELOAD pending

    def invalidate_range_start(self, range):
        if self.apic_va is not None and range.start <= self.apic_va < range.end:
            self.reload_requested = True                # kvm_make_all_cpus_request
        return (yield from super().invalidate_range_start(range))

    def access(self, va, *, write, value=None):
        if self.apic_va is None:
            self.apic_va = page_of(va)                  # the APIC-access page
        if self.reload_requested and page_of(va) == self.apic_va:
            yield from self.reload_apic_access_page()
        return (yield from super().access(va, write=write, value=value))

    def reload_apic_access_page(self):
        """``vmx_set_apic_access_page_addr`` without the retry: ``gfn_to_pfn``, then the
        VMCS write (the SPTE stands for the VMCS's APIC_ACCESS_ADDR), then release the
        page."""
        self.reload_requested = False
        pfn = yield from self.mm.get_user_pages(self.apic_va, write=False)
        yield
        with (yield self.mmu_lock):
            self.spt.map(vpn_of(self.apic_va), pfn, False)
        yield from self.mm.put_page(pfn)


class KVMGpcSpeculativeValid(KVM_GPC):
    """5.17's gfn=>pfn cache refresh (982ed0de4753 "KVM: Reinstate gfn_to_pfn_cache with
    invalidation support"): it marks the cache valid *before* resolving the pfn and checks
    only KVM's in-progress count and sequence (``mmu_notifier_retry_hva``). An invalidation
    clears ``valid`` in ``gfn_to_pfn_cache_invalidate_start`` before it raises the count; a
    refresh in between sets ``valid`` again, sees no invalidation and publishes the pfn the
    invalidation is about to free."""

    breaks = ("a cache filled while an invalidation of its address is in flight must not be "
              "published: check an indication raised before the invalidation touches the "
              "cache (mn_active_invalidate_count), not one raised after")
    mirrors = ("58cd407ca4c6 'KVM: Fix multiple races in gfn=>pfn cache refresh' (5.19): "
               "'the cache is refreshed after the cache was invalidated by the notifier, but "
               "before the notifier elevates mmu_notifier_count'")
    expected = set(STALE) | {"MapInWindow"}
    scenarios = ("gpc-refresh-race",)
    apis = ("modern",)

    def gpc_refresh(self, va):
        with (yield self.gpc_lock):
            self._gpc_drop()
            self.gpc_uhva = va
            self.gpc_valid = True                # "Placeholders for hva is valid"
        while True:                              # hva_to_pfn_retry
            mmu_seq = self.mmu_invalidate_seq
            yield
            pfn = yield from self._hva_to_pfn(va)
            with (yield self.mmu_lock):
                retry = self.fault_is_stale(vpn_of(va), mmu_seq)
            if not retry:
                break
            self.retries += 1
        with (yield self.gpc_lock):
            if self.dead:                        # as KVM_GPC.gpc_refresh
                raise device_gone(self, "the VM's mm was released during a refresh")
            # "At this point, gpc->valid may already have been cleared"
            self.gpc_pfn = pfn
            if self.gpc_valid:
                self.note_map(va, pfn, False)


class KVMMemslotUpdateInWindow(KVM_MEMSLOTS):
    """071064f14d87 without 52ac8b358b0c: the memslots change whenever the VMM asks, also
    between an invalidation's start and its end, so start and end disagree on whether the
    range overlaps a memslot: a start that elided the lock is followed by an end that drops
    the in-progress count below zero, where 5.15 has ``BUG_ON(kvm->mmu_notifier_count <
    0)`` (an oops: ``DriverError``), and a vCPU fault over the new slot meanwhile maps it
    inside the window (``MapInWindow``: the elided start counted nothing); the other way
    round, a count that never drops, every fault over the range retries for ever
    (``Livelock``)."""

    breaks = ("start and end must take the same decision about a range: nothing they test "
              "may change in between (block memslot updates while an invalidation is active)")
    mirrors = ("52ac8b358b0c 'KVM: Block memslot updates across range_start() and "
               "range_end()' (5.15): 'lock elision must happen in both or none'")
    expected = set(STALE) | {"DriverError", "Livelock", "MapInWindow"}
    scenarios = ("memslot-update-in-window",)
    apis = ("modern",)

    def set_memslot(self, start, end):
        with (yield self.mn_invalidate_lock):
            self.memslots.append((start, end))
