"""Pure-Python reference of the PTE kernels in ``smmu.base.pte`` (:func:`release_scan`):
the same name, arguments and results, written as plain loops over Python ints, for the
differential tests."""

from __future__ import annotations

import numpy as np

from smmu.base.constants import HPAGE_PMD_NR
from smmu.base.pte import (PFN_MASK, PFN_SHIFT, PTE_DEVICE_EXCLUSIVE, PTE_DIRTY, PTE_HUGE,
                           PTE_MAPPED, PTE_MIGRATION, PTE_SPECIAL, PTE_SWAP)


def release_scan(ptes, frame_flags, file_bit):
    pfns, dirty, slots, excl = [], [], [], []
    words = [int(e) for e in ptes]
    for huge in (False, True):            # small entries first, then each huge one's pages
        for e in words:
            if bool(e & PTE_HUGE) != huge:
                continue
            first = (e & PFN_MASK) >> PFN_SHIFT
            holds = bool(e & PTE_MAPPED) and not e & (PTE_SPECIAL | PTE_SWAP | PTE_MIGRATION)
            for pfn in range(first, first + (HPAGE_PMD_NR if huge else 1)):
                if holds:
                    pfns.append(pfn)
                    if e & PTE_DIRTY and int(frame_flags[pfn]) & file_bit:
                        dirty.append(pfn)
                if e & PTE_SWAP:
                    slots.append(pfn)
                if e & PTE_DEVICE_EXCLUSIVE:
                    excl.append(pfn)

    def arr(x):
        return np.asarray(x, dtype=np.int64)
    return arr(pfns), arr(dirty), arr(slots), arr(excl)
