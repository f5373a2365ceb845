"""The mmu_gather (``include/asm-generic/tlb.h``, ``mm/mmu_gather.c``): when the pages of a
range being unmapped are freed, relative to ``invalidate_range_end``.

Linux never waited for ``invalidate_range_end`` to free every page of a range. The 2.6.27
header says so: "invalidate_range_end() is called when all pages in the range have been
unmapped and the pages have been freed by the VM", and warns that a driver that drops its
last reference only in ``end`` "must take care to flush any secondary tlb before doing the
final free on the page" (the same sentences are still in 6.8). What each era does:

``"zap_block"`` (2.6.27 .. 2.6.39)
    ``unmap_vmas`` zaps in chunks of ``ZAP_BLOCK_SIZE`` (1024 pages without
    ``CONFIG_PREEMPT``, 8 with it; each present or swap entry costs one page of work) and
    calls ``tlb_finish_mmu`` (flush the TLB, free the gathered pages) after every full chunk,
    then ``cond_resched``; inside a chunk ``tlb_remove_page`` flushes and frees as soon as
    ``FREE_PTE_NR`` (506) pages are gathered. The last, partial chunk is finished by the
    caller after ``end``.
``"unbounded"`` (3.0 .. 3.6)
    the preemptible on-stack gather ("mm: Preemptible mmu_gather", 3.0) allocates more batch
    pages with no limit: pages are freed after ``end`` unless a ``GFP_NOWAIT`` batch
    allocation fails (not modelled).
``"batch_limit"`` (3.7 onwards, the default)
    ``MAX_GATHER_BATCH_COUNT`` (53a59fc67f97, "to fix soft lockups on !CONFIG_PREEMPT")
    bounds the gather at ``MMU_GATHER_BUNDLE + MAX_GATHER_BATCH_COUNT * MAX_GATHER_BATCH``
    pages (8 + 19 * 510 = 9698 on x86-64 with 4 KiB pages); when it is full ``zap_pte_range``
    flushes the TLB before dropping the PT lock and frees the batch (``tlb_flush_mmu``), then
    the walk goes on after ``cond_resched`` (6.8 mm/memory.c: "If we forced a TLB flush
    (either due to running out of batch buffers ...) free the batched memory too").
    ``unmap_region`` / ``zap_page_range_single`` call ``tlb_finish_mmu`` for the rest after
    ``mmu_notifier_invalidate_range_end``. The pages are freed batch after batch
    (``tlb_batch_pages_flush``, with a ``cond_resched`` after each since 5.19): other CPUs see
    the first batches freed while the rest are still being freed.

A huge PMD is one entry of the gather (``zap_huge_pmd``: ``tlb_remove_page_size(tlb, page,
HPAGE_PMD_SIZE)``). ``gather_batch`` overrides the era's batch size (tests, benchmarks).
Not modelled: the one-CPU "fast mode" that frees each page at ``tlb_remove_page``, and the
flush after 8 pages when a batch page cannot be allocated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smmu.base.constants import HPAGE_PMD_NR
from smmu.base.errors import UsageError
from smmu.base.pte import PTE_HUGE, mapped_mask

GATHER_MODES = ("batch_limit", "zap_block", "unbounded")

#: 3.7+: the on-stack batch (MMU_GATHER_BUNDLE) and each allocated batch (MAX_GATHER_BATCH:
#: (PAGE_SIZE - sizeof(struct mmu_gather_batch)) / sizeof(void *) on x86-64)
MMU_GATHER_BUNDLE = 8
MAX_GATHER_BATCH = 510
#: MMU_GATHER_BUNDLE + MAX_GATHER_BATCH_COUNT (10000 / MAX_GATHER_BATCH = 19) batches
MAX_GATHER_PAGES = MMU_GATHER_BUNDLE + (10000 // MAX_GATHER_BATCH) * MAX_GATHER_BATCH
#: 2.6.27 include/asm-generic/tlb.h, CONFIG_SMP: ``#define FREE_PTE_NR 506``
FREE_PTE_NR = 506
#: 2.6.27 mm/memory.c without CONFIG_PREEMPT: ``# define ZAP_BLOCK_SIZE (1024 * PAGE_SIZE)``
ZAP_BLOCK_PAGES = 1024


@dataclass(frozen=True)
class MmuGather:
    """The gather of one era (see the module docstring): :meth:`plan` says where a zap of a
    range frees pages before ``invalidate_range_end``."""

    mode: str = "batch_limit"
    batch: int | None = None

    def __post_init__(self):
        if self.mode not in GATHER_MODES:
            raise UsageError(f"unknown mmu_gather {self.mode!r}: use one of {list(GATHER_MODES)}")
        if self.batch is not None and (not isinstance(self.batch, int) or self.batch < 1):
            raise UsageError(f"gather_batch must be a positive integer or None, got "
                             f"{self.batch!r}")

    @property
    def pages(self) -> int | None:
        """Gathered pages that force a flush and free inside the window (None: never)."""
        if self.batch is not None:
            return self.batch
        return {"batch_limit": MAX_GATHER_PAGES, "zap_block": FREE_PTE_NR}.get(self.mode)

    def __repr__(self):
        return f"<MmuGather {self.mode} batch={self.pages}>"

    def may_free_early(self, npages: int) -> bool:
        """Can a zap of ``npages`` pages free any of them before ``end``? (Cheap test that
        spares small zaps the planning walk.)"""
        n = self.pages
        if n is None:
            return False
        if self.mode == "zap_block":
            n = min(n, ZAP_BLOCK_PAGES)
        return npages >= n

    def free_slices(self, ptes: np.ndarray) -> list:
        """``ptes`` (the entries a full gather holds) cut where ``tlb_batch_pages_flush``
        moves to its next batch: 3.7+ frees the on-stack bundle, then each allocated batch
        (one slice per batch); 2.6.27 frees the whole gather in one call."""
        if self.mode != "batch_limit" or len(ptes) <= MMU_GATHER_BUNDLE:
            return [ptes]
        cg = np.cumsum(mapped_mask(ptes))
        cuts = np.searchsorted(cg, np.arange(MMU_GATHER_BUNDLE, int(cg[-1]), MAX_GATHER_BATCH),
                               side="right")
        return [p for p in np.split(ptes, cuts) if len(p)]

    def plan(self, vpn0: int, vpn1: int, vpns: np.ndarray, ptes: np.ndarray) -> list:
        """Segments ``[(lo, hi, free)]`` covering ``[vpn0, vpn1)`` in order, for the non-zero
        entries ``(vpns, ptes)`` of the range (vpn order; a huge PMD is one entry at its
        first vpn): after clearing segment ``[lo, hi)`` the TLB is flushed and every page
        gathered so far is freed when ``free`` is True. The last segment has ``free`` False:
        its pages are freed by ``tlb_finish_mmu`` after ``end``."""
        n = self.pages
        if n is None or not len(vpns):
            return [(vpn0, vpn1, False)]
        gathered = mapped_mask(ptes)              # pages tlb_remove_page puts in the gather
        span = np.where((ptes & np.uint64(PTE_HUGE)) != 0, HPAGE_PMD_NR, 1).astype(np.int64)
        ends = vpns + span                        # the vpn after each entry
        if self.mode == "batch_limit":
            cg = np.cumsum(gathered)
            idx = np.nonzero(gathered & (cg % n == 0))[0]
        else:
            # 2.6.27: chunks of ZAP_BLOCK_SIZE entries (finished and rescheduled), and a
            # flush whenever the chunk's gather holds FREE_PTE_NR pages
            k = np.arange(len(vpns)) // ZAP_BLOCK_PAGES
            cg = np.cumsum(gathered)
            first = np.searchsorted(k, np.arange(int(k[-1]) + 1))
            before = np.where(first > 0, cg[np.maximum(first - 1, 0)], 0)
            local = cg - before[k]
            full = gathered & (local % n == 0)
            chunk_end = (np.arange(len(vpns)) % ZAP_BLOCK_PAGES) == ZAP_BLOCK_PAGES - 1
            idx = np.nonzero(full | chunk_end)[0]
        out = []
        lo = vpn0
        for hi in ends[idx].tolist():
            out.append((lo, hi, True))
            lo = hi
        out.append((lo, vpn1, False))
        return out
