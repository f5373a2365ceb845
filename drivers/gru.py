"""The SGI GRU: a TLB-based coprocessor that drops translations in from the CPU page tables.

Models ``drivers/misc/sgi-gru/grutlbpurge.c`` (``gru_invalidate_range_start``,
``gru_invalidate_range_end``, the 2.6.27 ``gru_invalidate_page``, ``gru_release``,
``gru_flush_tlb_range``) and ``drivers/misc/sgi-gru/grufault.c`` (``gru_try_dropin``,
``atomic_pte_lookup``, and the user-level retry in ``gru_handle_user_call_os``).
"""

from __future__ import annotations

from drivers._common import device_gone, device_tlb, frame_generation, vpn_of, vpn_span, walk_pte
from smmu.notifier import MMUNotifier


class GRU(MMUNotifier):
    """The GRU's notifier and TLB-miss path.

    State: a :class:`smmu.tlb.TLB` tagged with ASIDs (this mm's id), ``ms_range_active``
    (ranges in flight) and ``ms_wait_queue``.

    * ``invalidate_range_start``: ``ms_range_active++`` then flush the range from the TLB;
    * ``invalidate_range_end``: ``ms_range_active--`` then wake every waiting dropin;
    * ``invalidate_page`` (v2008): flush one page, no count;
    * dropin (TLB miss in :meth:`access`): if ``ms_range_active`` is non-zero wait until it
      is zero and retry; walk the primary PTE without a lock or a page reference
      (``atomic_pte_lookup``); not present, or a write to a read-only/clean PTE: run the
      primary fault (``handle_mm_fault``, the user-level path) and retry; else write the TLB
      entry.

    The count is never re-checked after the walk. What makes that correct is the chip: a
    dropin raced by a TLB invalidate is dropped ("magic hardware" in the code comment). The
    model: ``hw_dropin_guard=True`` (default) records the TLB's flush count when the dropin
    starts and silently drops the insert (and retries) if any flush happened meanwhile.

    With ``hw_dropin_guard=False`` there is a window, and the checker must find it: the
    dropin sees ``ms_range_active == 0`` and reads the old PTE; ``start`` increments the count
    and flushes (nothing to flush yet); the dropin writes the stale translation into the TLB
    inside the open window (``MapInWindow``); the PTE is cleared and the page freed, and the
    device then reads or writes a freed or reused frame (``UseAfterFree``, ``StaleRead``,
    ``LostWrite``).

    Options: ``hw_dropin_guard``, ``sets``, ``ways``, ``policy`` (TLB geometry).
    """

    name = "gru"

    def __init__(self, sim, mm, *, hw_dropin_guard: bool = True, sets: int = 16,
                 ways: int = 4, policy: str = "plru"):
        super().__init__(sim, mm)
        # observer: every insert/flush reported
        self.tlb = device_tlb("GRU TLB", sets, ways, policy, name=f"gru{mm.id}.tlb",
                              observer=self)
        self.hw_dropin_guard = bool(hw_dropin_guard)
        self.asid = mm.id
        self.ms_range_active = 0
        self.ms_wait_queue = sim.waitqueue("gru->ms_wait_queue")
        self.ms_released = False
        self.dropins = 0
        self.dropped = 0

    def __repr__(self):
        return (f"<{self.name} on {self.mm!r} range_active={self.ms_range_active} "
                f"guard={self.hw_dropin_guard} {self.tlb!r}>")

    # ------------------------------------------------------------------ device side
    def access(self, va, *, write, value=None):
        """A GRU instruction touching ``va``: a TLB hit accesses memory; a miss runs the
        dropin and tries again."""
        vpn = vpn_of(va)
        while True:
            yield
            if self.ms_released:
                raise device_gone(self, "gru_release ran")
            pfn = self.tlb.lookup(self.asid, vpn, write)
            if pfn >= 0:
                return self.dma_write(va, pfn, value) if write else self.dma_read(va, pfn)
            yield from self.dropin(va, write)

    def dropin(self, va, write):
        """``gru_try_dropin`` plus the user-level retry loop around it. Each attempt is a TLB
        miss the chip raises again, charged a ``device_fault`` (interrupt, handler, return)
        once it is over; ``gru_dropin_wait`` counts the waits for ``ms_range_active`` to
        drop to zero, ``gru_hw_guard_drop`` the dropins the chip dropped because an
        invalidate raced them."""
        charge = self.sim.charge
        while True:
            guard = self.tlb.flushes                 # the chip notes invalidates from here
            yield                                    # read the TFH, rmb()
            if self.range_active_busy():
                self.sim.stats["gru_dropin_wait"] += 1
                charge("device_fault")
                yield self.ms_wait_queue.wait_until(lambda: self.ms_range_active == 0)
                continue
            hit = walk_pte(self.mm, va, write)   # atomic_pte_lookup
            yield                                    # the walk and the TLB write are apart
            if hit is None:
                charge("device_fault")
                yield from self.mm.handle_mm_fault(va, write)     # user path, then retry
                continue
            if self.ms_released:
                raise device_gone(self, "gru_release ran during a dropin")
            charge("device_fault")
            if self.hw_dropin_guard and self.tlb.flushes != guard:
                self.dropped += 1                    # raced by an invalidate: dropped
                self.sim.stats["gru_hw_guard_drop"] += 1
                continue
            pfn, _ = hit
            self.dropins += 1
            self.tlb.insert(self.asid, vpn_of(va), pfn, bool(write),
                            frame_generation(self.sim, pfn))
            return

    def range_active_busy(self) -> bool:
        """``if (atomic_read(&gts->ts_gms->ms_range_active)) goto failactive``."""
        return self.ms_range_active != 0

    def translation(self, va):
        """``(pfn, writable)`` of the TLB entry for ``va``, or None; touches no LRU state."""
        hit = self.tlb.peek(self.asid, vpn_of(va))
        return None if hit is None else (hit[0], hit[1])

    # ------------------------------------------------------------------ helpers
    def flush(self, start, end):
        """``gru_flush_tlb_range``: TGH invalidate of ``[start, end)`` for this ASID."""
        vpn0, vpn1 = vpn_span(start, end)
        if vpn0 < vpn1:
            self.tlb.flush_range(self.asid, vpn0, vpn1)
        self.sim.charge("secondary_flush")

    # ------------------------------------------------------------------ notifier hooks
    def invalidate_range_start(self, range):
        """``gru_invalidate_range_start``: ``atomic_inc(&ms_range_active)`` first (new dropins
        back off), then flush the range. Never sleeps, never fails."""
        self.ms_range_active += 1
        self.flush(range.start, range.end)
        return 0

    def invalidate_range_end(self, range):
        """``gru_invalidate_range_end``: ``atomic_dec_and_test`` then ``wake_up_all``: the
        waiting dropins retry and see the new PTEs."""
        self.ms_range_active -= 1
        self.ms_wait_queue.wake_all()

    def invalidate_page(self, mm, address):
        """2.6.27 ``gru_invalidate_page``: flush the one page (no count: the PTE is already
        cleared, so a new dropin cannot find the old page)."""
        self.flush(address, address + 1)

    def release(self, mm):
        """``gru_release`` sets ``ms_released``; the GRU contexts of a dying mm are unloaded
        before its pages are freed. Modelled as: mark released and drop the ASID's entries."""
        self.ms_released = True
        self.tlb.flush_asid(self.asid)
        self.ms_wait_queue.wake_all()
