"""KVM's gfn=>pfn cache (``virt/kvm/pfncache.c``, 5.17+): a one-entry cache through which the
kernel itself (Xen shared info, steal time, the vCPU's pvclock) reads a guest page by its
host pfn, outside the SPTEs, kept coherent by the same MMU notifier.

:class:`KVM_GPC` is 5.19's cache, after 58cd407ca4c6 "KVM: Fix multiple races in gfn=>pfn
cache refresh" and 93984f19e7bc "KVM: Fully serialize gfn=>pfn cache refresh via mutex":
``invalidate_range_start`` raises ``mn_active_invalidate_count`` (under
``mn_invalidate_lock``) *before* it invalidates the cache, and a refresh marks the cache
invalid, resolves the pfn (``hva_to_pfn``, no reference kept: 85165781c5d9 "KVM: Do not pin
pages tracked by gfn=>pfn caches"), and publishes it only if no invalidation is active and
the sequence did not move ("mn_active_invalidate_count is guaranteed to be elevated prior to
an invalidation acquiring gpc->lock"), all serialized by ``refresh_lock``. The cached entry
is the device's mapping of the page (declared with ``note_map``), read by :meth:`gpc_read`.

Not in ``drivers.BUILTIN``: name it as ``drivers.kvm_gpc:KVM_GPC``. The broken 5.17 refresh
is ``drivers.BUGGY["kvm_gpc_speculative_valid"]``.
"""

from __future__ import annotations

from drivers._common import device_gone, page_of, walk_pte
from drivers.kvm import KVM

#: the wait for an evicted vCPU to leave guest mode (an IPI and its acknowledgement), in ns
VCPU_KICK_NS = 2_000


class KVM_GPC(KVM):
    """KVM with one gfn=>pfn cache (``struct gfn_to_pfn_cache``: ``uhva``, ``pfn``,
    ``valid``, ``lock``, ``refresh_lock``)."""

    name = "kvm_gpc"
    #: the cache is 5.17's (982ed0de4753): the modern generation only. Under v2008 the
    #: single-page ``invalidate_page`` of migration and reclaim would not reach it, a
    #: kernel that never had both
    apis = ("modern",)

    def __init__(self, sim, mm, **kw):
        super().__init__(sim, mm, **kw)
        self.mn_invalidate_lock = sim.spinlock("kvm->mn_invalidate_lock")
        self.mn_active_invalidate_count = 0
        self.gpc_lock = sim.spinlock("gpc->lock")
        self.gpc_refresh_lock = sim.mutex("gpc->refresh_lock")
        self.gpc_uhva = None
        self.gpc_pfn = -1
        self.gpc_valid = False

    # ------------------------------------------------------------------ the cache
    def gpc_read(self, va):
        """A kernel read of the guest page at ``va`` through the cache:
        ``kvm_gpc_check`` (valid and for this address), else ``kvm_gpc_refresh`` and again."""
        va = page_of(va)
        while True:
            yield
            if self.dead:
                raise device_gone(self, "the VM's mm was released")
            with (yield self.gpc_lock):
                hit = self.gpc_valid and self.gpc_uhva == va and self.gpc_pfn >= 0
                pfn = self.gpc_pfn
            if hit:
                return self.dma_read(va, pfn)
            yield from self.gpc_refresh(va)

    def _hva_to_pfn(self, va):
        """``hva_to_pfn``: ``hva_to_pfn_fast`` (``get_user_page_fast_only``: a lockless walk
        of a present PTE, no fault), else the slow GUP; the reference is dropped at once (the
        cache does not pin the page)."""
        hit = walk_pte(self.mm, va, False)
        if hit is not None:
            return hit[0]
        pfn = yield from self.mm.get_user_pages(va)
        yield from self.mm.put_page(pfn)
        return pfn

    def gpc_refresh(self, va):
        """5.19 ``kvm_gpc_refresh`` -> ``hva_to_pfn_retry`` (58cd407ca4c6, 93984f19e7bc)."""
        with (yield self.gpc_refresh_lock):
            with (yield self.gpc_lock):
                self._gpc_drop()
                self.gpc_valid = False           # "mark the cache invalid before dropping"
                self.gpc_uhva = va
            while True:
                mmu_seq = self.mmu_invalidate_seq
                yield                            # smp_rmb()
                pfn = yield from self._hva_to_pfn(va)
                with (yield self.gpc_lock):
                    if self.dead:
                        # the VM's mm went (release) while the refresh was in flight: a
                        # vCPU of a live VM cannot see that (its own mm), a model's can
                        raise device_gone(self, "the VM's mm was released during a refresh")
                    retry = self.mn_active_invalidate_count or \
                        mmu_seq != self.mmu_invalidate_seq
                    if not retry:
                        self._gpc_publish(va, pfn)
                if not retry:
                    return
                self.retries += 1                # mmu_notifier_retry_cache: retry

    def _gpc_publish(self, va, pfn):
        self.gpc_pfn = pfn
        self.gpc_valid = True
        self.note_map(va, pfn, False)

    def _gpc_drop(self):
        if self.gpc_uhva is not None and self.gpc_pfn >= 0:
            self.note_unmap(self.gpc_uhva)
        self.gpc_pfn = -1

    def gfn_to_pfn_cache_invalidate_start(self, start, end, may_block):
        """``gfn_to_pfn_cache_invalidate_start``: under ``gpc->lock``, a valid cache whose
        ``uhva`` is in the range becomes invalid; a cache the guest uses through its pfn
        (``KVM_GUEST_USES_PFN``) then evicts its vCPU and, in a blockable range, waits until
        it is out of guest mode ("KVM needs to ensure the vCPU is fully out of guest context
        before allowing the invalidation to continue": ``kvm_make_vcpus_request_mask(kvm,
        KVM_REQ_OUTSIDE_GUEST_MODE | KVM_REQUEST_WAIT, ...)``, one IPI round trip)."""
        evict = False
        with (yield self.gpc_lock):
            if self.gpc_valid and self.gpc_uhva is not None and start <= self.gpc_uhva < end:
                self.gpc_valid = False
                self._gpc_drop()
                evict = True
        if evict and may_block:
            yield self.sim.sleep(VCPU_KICK_NS)

    # ------------------------------------------------------------------ notifier hooks
    def invalidate_range_start(self, range):
        """5.17+ ``kvm_mmu_notifier_invalidate_range_start``: ``mn_active_invalidate_count++``
        under ``mn_invalidate_lock``, ``gfn_to_pfn_cache_invalidate_start``, then the SPTE
        part (``mmu_lock``, in-progress count, zap)."""
        with (yield self.mn_invalidate_lock):
            self.mn_active_invalidate_count += 1
        yield from self.gfn_to_pfn_cache_invalidate_start(range.start, range.end,
                                                          range.blockable)
        return (yield from super().invalidate_range_start(range))

    def invalidate_range_end(self, range):
        """``kvm_mmu_notifier_invalidate_range_end``: the SPTE part, then
        ``mn_active_invalidate_count--``."""
        yield from super().invalidate_range_end(range)
        with (yield self.mn_invalidate_lock):
            self.mn_active_invalidate_count -= 1

    def release(self, mm):
        yield from super().release(mm)
        with (yield self.gpc_lock):
            self.gpc_valid = False
            self._gpc_drop()
