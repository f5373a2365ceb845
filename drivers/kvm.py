"""KVM's secondary MMU: shadow/EPT page tables kept coherent by MMU notifiers.

Models ``virt/kvm/kvm_main.c`` (``kvm_mmu_notifier_invalidate_range_start``,
``kvm_mmu_invalidate_begin``, ``kvm_mmu_invalidate_range_add``, ``kvm_mmu_invalidate_end``,
``kvm_mmu_notifier_clear_flush_young``, ``kvm_mmu_notifier_clear_young``,
``kvm_mmu_notifier_test_young``, ``kvm_mmu_notifier_release``; in 2.6.27 also
``kvm_mmu_notifier_invalidate_page`` and, from 2009, ``kvm_mmu_notifier_change_pte``),
``include/linux/kvm_host.h`` (``mmu_invalidate_retry_gfn``, and the 2008
``mmu_notifier_retry``) and the x86 fault path in ``arch/x86/kvm/mmu/mmu.c``
(``kvm_faultin_pfn`` -> ``hva_to_pfn``, ``is_page_fault_stale``, ``direct_page_fault``).

The guest-physical address space is identified with the host virtual one (gfn == hva page),
so the SPTE of ``va`` lives at ``va >> PAGE_SHIFT`` in a :class:`smmu.shadow.ShadowPageTable`.
"""

from __future__ import annotations

from drivers._common import device_gone, page_of, vpn_of, walk_pte
from smmu.base.constants import PAGE_SHIFT, TASK_SIZE
from smmu.base.pte import pte_pfn
from smmu.base.errors import BadDriver
from smmu.notifier import MMUNotifier
from smmu.devices.shadow import ShadowPageTable

STYLES = ("modern", "2008")


class KVM(MMUNotifier):
    """KVM's MMU: SPTEs in a shadow page table, ``mmu_lock``, ``mmu_invalidate_seq``,
    ``mmu_invalidate_in_progress`` and the tracked range.

    Options: ``style="modern"`` (range tracking: a fault retries only if an invalidation in
    progress covers its address, or the sequence moved; Linux 6.3+) or ``style="2008"``
    (``mmu_notifier_count`` / ``mmu_notifier_seq`` of 2.6.27: any invalidation in progress
    blocks every fault).

    Fault (:meth:`access` on a missing or read-only SPTE): snapshot the sequence; GUP the
    page (a reference is held); take ``mmu_lock``; retry (unlock, drop the reference, start
    over) if :meth:`fault_is_stale`; else install the SPTE, writable only for a write fault
    whose primary PTE is writable; unlock; drop the reference (``kvm_release_pfn_clean``).
    Why each guard is needed: the in-progress count catches a fault whose check lands inside
    a start/end window (the sequence has not moved yet); the sequence catches a whole
    start..end (or a v2008 ``invalidate_page``) that ran between the snapshot and the check;
    holding ``mmu_lock`` from the check to the install leaves no gap for an invalidation; the
    GUP reference keeps the page from being freed while the fault is in flight.

    A fault that keeps retrying yields each time round, so an in-progress count that never
    drops (an unpaired start) ends as a ``Livelock`` report, not a hang.
    """

    name = "kvm"

    def __init__(self, sim, mm, *, style: str = "modern"):
        if style not in STYLES:
            raise BadDriver(f"KVM style must be one of {list(STYLES)}, got {style!r}")
        super().__init__(sim, mm)
        self.style = style
        self.mmu_lock = sim.spinlock("kvm->mmu_lock")
        self.mmu_invalidate_seq = 0
        self.mmu_invalidate_in_progress = 0
        self.mmu_invalidate_range_start = 0
        self.mmu_invalidate_range_end = 0
        self.spt = ShadowPageTable(name=f"kvm{mm.id}.spt", observer=self)
        self.dead = False
        self.faults = 0
        self.retries = 0

    def __repr__(self):
        return (f"<{self.name} style={self.style} on {self.mm!r} seq={self.mmu_invalidate_seq} "
                f"in_progress={self.mmu_invalidate_in_progress} sptes={len(self.spt)}>")

    # ------------------------------------------------------------------ device side
    def access(self, va, *, write, value=None):
        """A guest access to ``va``: through the SPTE if there is one allowing it (hardware
        sets its accessed bit), else :meth:`page_fault` and try again."""
        vpn = vpn_of(va)
        while True:
            yield                              # the vCPU runs; other CPUs may act here
            if self.dead:
                raise device_gone(self, "the VM's mm was released")
            pfn = self.spt.access(vpn, write)  # the hardware walk sets A (and D)
            if pfn >= 0:
                return self.dma_write(va, pfn, value) if write else self.dma_read(va, pfn)
            yield from self.page_fault(va, write)

    def page_fault(self, va, write):
        """``direct_page_fault``: snapshot, GUP, lock, stale check, install, unlock, put.
        Each attempt is charged a ``device_fault`` (the exit, the handler's entry and the
        return to the guest) once it is over, so that its sequence snapshot is as close to
        its check as the handler makes it: a retry (``RET_PF_RETRY``) re-enters the guest,
        which takes the EPT violation again."""
        mm = self.mm
        vpn = vpn_of(va)
        self.faults += 1
        while True:
            mmu_seq = self.mmu_invalidate_seq
            yield                              # smp_rmb(): the snapshot precedes the GUP
            pfn = yield from self.faultin_pfn(va, write)
            yield                              # the page is ours; mmu_lock is not yet
            with (yield self.mmu_lock):
                stale = self.dead or self.fault_is_stale(vpn, mmu_seq)
                if not stale:
                    self.install_spte(va, pfn, write)
            yield from mm.put_page(pfn)        # kvm_release_pfn_clean, after unlock
            self.sim.charge("device_fault")    # the round trip of this attempt
            if not stale:
                return
            if self.dead:
                raise device_gone(self, "the VM's mm was released during the fault")
            self.retries += 1                  # RET_PF_RETRY; the loop yields again
            self.sim.stats["kvm_fault_retry"] += 1

    def faultin_pfn(self, va, write):
        """``kvm_faultin_pfn`` -> ``hva_to_pfn``: GUP the page, for write on a write fault
        (``FOLL_WRITE`` breaks COW first), keeping the reference."""
        return (yield from self.mm.get_user_pages(page_of(va), write=write))

    def fault_is_stale(self, vpn: int, mmu_seq: int) -> bool:
        """``mmu_invalidate_retry_gfn`` (modern) / ``mmu_notifier_retry`` (2008), under
        ``mmu_lock``: must the fault be retried?"""
        if self.mmu_invalidate_in_progress:
            if self.style == "2008":
                return True
            if self.mmu_invalidate_range_start <= vpn < self.mmu_invalidate_range_end:
                return True
        return self.mmu_invalidate_seq != mmu_seq

    def install_spte(self, va, pfn, write):
        """Map the SPTE (``mmu_set_spte``), under ``mmu_lock``. Writable only for a write
        fault whose primary PTE is writable and maps the page GUP returned: a read fault on
        a COW-shared page must stay read-only, or device writes would land in a page the
        primary shares with another mm."""
        hit = walk_pte(self.mm, va, False)
        writable = bool(write and hit is not None and hit[0] == pfn and hit[1])
        self.spt.map(vpn_of(va), pfn, writable)

    def translation(self, va):
        """``(pfn, writable)`` of the SPTE for ``va``, or None (inspection only)."""
        return self.spt.lookup(vpn_of(va))

    # ------------------------------------------------------------------ helpers
    def zap(self, start, end):
        """``kvm_unmap_gfn_range`` + ``kvm_flush_remote_tlbs`` over ``[start, end)``, under
        ``mmu_lock``."""
        vpn0 = vpn_of(start)
        vpn1 = min(vpn_of(end + (1 << PAGE_SHIFT) - 1), vpn_of(TASK_SIZE))
        if vpn0 < vpn1 and self.spt.zap_range(vpn0, vpn1):
            self.sim.charge("secondary_flush")

    def invalidate_begin(self, start, end):
        """``kvm_mmu_invalidate_begin`` + ``kvm_mmu_invalidate_range_add``: count the range
        in flight and widen the tracked range (reset when the count was zero)."""
        self.mmu_invalidate_in_progress += 1
        vpn0, vpn1 = vpn_of(start), vpn_of(end + (1 << PAGE_SHIFT) - 1)
        if self.mmu_invalidate_in_progress == 1:
            self.mmu_invalidate_range_start, self.mmu_invalidate_range_end = vpn0, vpn1
        else:
            self.mmu_invalidate_range_start = min(self.mmu_invalidate_range_start, vpn0)
            self.mmu_invalidate_range_end = max(self.mmu_invalidate_range_end, vpn1)

    def invalidate_finish(self):
        """``kvm_mmu_invalidate_end``: ``seq++``, ``smp_wmb()``, ``in_progress--`` — in that
        order, so a fault that sees the count drop also sees the new sequence."""
        self.mmu_invalidate_seq += 1
        self.mmu_invalidate_in_progress -= 1

    # ------------------------------------------------------------------ notifier hooks
    def invalidate_range_start(self, range):
        """``kvm_mmu_notifier_invalidate_range_start``: under ``mmu_lock`` count the range in
        flight (faults over it now retry), zap its SPTEs and flush. A spinlock: legal in a
        non-blockable range, never fails."""
        with (yield self.mmu_lock):
            self.invalidate_begin(range.start, range.end)
            self.zap(range.start, range.end)
        return 0

    def invalidate_range_end(self, range):
        """``kvm_mmu_notifier_invalidate_range_end``: under ``mmu_lock``, bump the sequence
        then drop the count (faults that snapshotted before the range now retry)."""
        with (yield self.mmu_lock):
            self.invalidate_finish()

    def invalidate_page(self, mm, address):
        """v2008 ``kvm_mmu_notifier_invalidate_page``: under ``mmu_lock`` bump the sequence
        and zap the one SPTE. The PTE is already cleared and the page stays allocated until
        this returns; "increasing the sequence after the spin_unlock would be unsafe because
        the kvm page fault could then establish the pte after kvm_unmap_hva returned"."""
        with (yield self.mmu_lock):
            self.mmu_invalidate_seq += 1
            self.zap(page_of(address), page_of(address) + (1 << PAGE_SHIFT))

    def change_pte(self, mm, address, pte):
        """v2008 ``kvm_mmu_notifier_change_pte`` (``kvm_set_spte_hva``, KSM): if an SPTE maps
        ``address``, point it read-only at the new page in place instead of zapping. Since
        2012 it runs inside start/end after ``start`` already zapped, so it finds nothing
        (why it was removed in 2024)."""
        with (yield self.mmu_lock):
            self.mmu_invalidate_seq += 1
            vpn = vpn_of(address)
            if self.spt.lookup(vpn) is not None:
                self.spt.zap(vpn)
                self.spt.map(vpn, pte_pfn(int(pte)), False)

    def clear_flush_young(self, mm, start, end):
        """``kvm_mmu_notifier_clear_flush_young``: test and clear the SPTE accessed bits of
        the range and flush, so reclaim sees guest use of the pages."""
        with (yield self.mmu_lock):
            young = self._age(start, end)
            if young:
                self.sim.charge("secondary_flush")
        return young

    def clear_young(self, mm, start, end):
        """``kvm_mmu_notifier_clear_young``: as ``clear_flush_young`` without the flush."""
        with (yield self.mmu_lock):
            return self._age(start, end)

    def test_young(self, mm, address):
        """``kvm_mmu_notifier_test_young``: is the SPTE's accessed bit set? Clears nothing."""
        with (yield self.mmu_lock):
            return bool(self.spt.test_young(vpn_of(address)))

    def _age(self, start, end):
        vpn0 = vpn_of(start)
        vpn1 = min(vpn_of(end + (1 << PAGE_SHIFT) - 1), vpn_of(TASK_SIZE))
        return bool(self.spt.age_range(vpn0, vpn1)) if vpn0 < vpn1 else False

    def release(self, mm):
        """``kvm_mmu_notifier_release`` -> ``kvm_flush_shadow_all``: zap every SPTE; the VM
        cannot touch the mm any more (its vCPUs would fail ``mmget_not_zero``)."""
        with (yield self.mmu_lock):
            self.dead = True
            self.spt.zap_all()
