"""The numpy reference of fork's page-table copy kernels (``primary_mm.copy_pte``): the
same results computed as ``Fork._copy_page_range`` did before the kernels, with the frame
table's own methods (``get``, ``inc_mapcount``, ``clear_flags``). ``fork_share_ref`` is
also the path fork takes when it copies pinned pages for the child (``mapped`` then leaves
those entries out)."""

from __future__ import annotations

from primary_mm.frames import FRAME_ANON, FRAME_ANON_EXCLUSIVE, NO_OWNER
from smmu.base.constants import HPAGE_PMD_NR
from smmu.base.pte import (PTE_DEVICE_EXCLUSIVE, PTE_SPECIAL, expand_huge, huge_mask,
                           mapped_mask, mapped_pfns, pte_pfn, swap_mask)


def fork_dma_scan_ref(ptes, pincount, flags):
    """:func:`primary_mm.copy_pte.fork_dma_scan` (IndexError for an entry beyond the
    table, where the kernel returns ``npin`` -1)."""
    huge_pinned = False
    for word in ptes[huge_mask(ptes)].tolist():
        head = pte_pfn(word)
        if not word & PTE_SPECIAL and (pincount[head:head + HPAGE_PMD_NR] > 0).any():
            huge_pinned = True
    pfns = mapped_pfns(ptes)
    npin = int(((pincount[pfns] > 0) & ((flags[pfns] & FRAME_ANON) != 0)).sum())
    nexcl = int(((ptes & PTE_DEVICE_EXCLUSIVE) != 0).sum())
    return huge_pinned, npin, nexcl


def fork_share_ref(frames, ptes, clear_exclusive, mapped=None):
    """:func:`primary_mm.copy_pte.fork_share` on a ``FrameTable`` (raising its
    ``FrameStateError`` where the kernel returns -1 / -2); ``mapped``: which entries to
    take (default: every mapped one)."""
    if mapped is None:
        mapped = mapped_mask(ptes)
    shared = mapped_pfns(expand_huge(ptes[mapped]))
    frames.get(shared)
    frames.inc_mapcount(shared)
    anon = shared[(frames.flags[shared] & FRAME_ANON) != 0]
    frames.owner[anon] = NO_OWNER
    if clear_exclusive:
        frames.clear_flags(anon, FRAME_ANON_EXCLUSIVE)
    return int(swap_mask(ptes).sum())
