"""The structural scan: declared secondary mappings compared with the primary page table
in one numba kernel call per driver (:func:`scan_secondary`), the end-of-run comparison of
model cells with the primary's memory (:func:`verify_cells`), their pure-Python references,
and :class:`SecondaryMap`, the arrays of one driver's declared translations that the scan
takes.
"""

from __future__ import annotations

import numba
import numpy as np

from smmu.base.pte import PFN_MASK, PFN_SHIFT, PTE_DEVICE, PTE_PRESENT, PTE_WRITE
from smmu.base.radix import pt_walk

#: why a secondary mapping is stale (codes returned by :func:`scan_secondary`)
STALE_ABSENT = 1      #: the primary PTE is not present (nor a device entry of the frame)
STALE_OTHER_PFN = 2   #: the primary maps another frame
STALE_FREED = 3       #: the frame was freed (and maybe reused) since the mapping was made
STALE_WRITABLE = 4    #: the secondary allows writes the primary PTE does not

STALE_REASONS = {
    STALE_ABSENT: "the primary PTE is gone",
    STALE_OTHER_PFN: "the primary now maps another frame",
    STALE_FREED: "the frame was freed (generation moved) since the mapping was made",
    STALE_WRITABLE: "the secondary is writable but the primary PTE is read-only",
}

#: entries through which a device may still legitimately translate: present PTEs, and the
#: device-private / device-exclusive entries of the page it maps
_UMAP = np.uint64(PTE_PRESENT | PTE_DEVICE)
_UW = np.uint64(PTE_WRITE)
_UP = np.uint64(PTE_PRESENT)
_U0 = np.uint64(0)
_UPFN = np.uint64(PFN_MASK)
_USHIFT = np.uint64(PFN_SHIFT)


@numba.njit(cache=True)
def scan_secondary(nodes, root, vpns, pfns, gens, writable, n, generation, ptes, out_idx,
                   out_why):
    """Compare secondary mappings ``i < n`` (``vpns[i] -> pfns[i]`` made when the frame had
    generation ``gens[i]``; ``pfns[i] < 0`` marks a free slot) with the primary radix table
    ``(nodes, root)`` and the frame generations. Writes the indices of stale entries to
    ``out_idx`` and their ``STALE_*`` reason to ``out_why``; returns how many. ``ptes`` is
    scratch (uint64, at least n). A page under a huge PMD reads as its 4 KiB view (the PMD
    word with that page's PFN, ``pt_walk``), so it is compared like any PTE."""
    pt_walk(nodes, root, vpns[:n], ptes[:n])
    ngen = generation.shape[0]
    cnt = 0
    for i in range(n):
        pfn = pfns[i]
        if pfn < 0:
            continue
        pte = ptes[i]
        why = 0
        if pfn >= ngen or np.int64(generation[pfn]) != gens[i]:
            why = STALE_FREED
        elif (pte & _UMAP) == 0:
            why = STALE_ABSENT
        elif np.int64((pte & _UPFN) >> _USHIFT) != pfn:
            why = STALE_OTHER_PFN
        elif writable[i] != 0 and (pte & _UW) == 0:
            why = STALE_WRITABLE
        if why != 0:
            out_idx[cnt] = i
            out_why[cnt] = why
            cnt += 1
    return cnt


def scan_secondary_ref(lookup, vpns, pfns, gens, writable, n, generation):
    """Pure-Python reference of :func:`scan_secondary`: ``lookup(vpn) -> pte``; returns the
    list of ``(index, reason)``."""
    out = []
    for i in range(n):
        pfn = int(pfns[i])
        if pfn < 0:
            continue
        pte = int(lookup(int(vpns[i])))
        if pfn >= len(generation) or int(generation[pfn]) != int(gens[i]):
            why = STALE_FREED
        elif not pte & (PTE_PRESENT | PTE_DEVICE):
            why = STALE_ABSENT
        elif (pte & PFN_MASK) >> PFN_SHIFT != pfn:
            why = STALE_OTHER_PFN
        elif writable[i] and not pte & PTE_WRITE:
            why = STALE_WRITABLE
        else:
            continue
        out.append((i, why))
    return out


@numba.njit(cache=True)
def verify_cells(nodes, root, vpns, expect, lazy, contents, ptes, out_idx):
    """The end-of-run comparison of model cells with the primary's memory: for each
    ``vpns[i]`` (``n = vpns.shape[0]``), what a CPU read through the radix table
    ``(nodes, root)`` finds (``contents`` of the present PTE's frame, 0 for an entry that is
    not present) against the cell's ``expect[i]``; a ``lazy[i]`` cell (MADV_FREE) may also
    read 0. Writes every entry to ``ptes`` (uint64, at least n) and the indices that differ
    to ``out_idx``; returns how many differ."""
    n = vpns.shape[0]
    pt_walk(nodes, root, vpns, ptes[:n])
    nc = contents.shape[0]
    cnt = 0
    for i in range(n):
        pte = ptes[i]
        got = _U0
        if (pte & _UP) != 0:
            pfn = np.int64((pte & _UPFN) >> _USHIFT)
            if pfn < nc:
                got = contents[pfn]
        if got != expect[i] and not (lazy[i] and got == _U0):
            out_idx[cnt] = i
            cnt += 1
    return cnt


def verify_cells_ref(lookup, vpns, expect, lazy, contents):
    """Pure-Python reference of :func:`verify_cells`: ``lookup(vpn) -> pte``; returns the
    list of the indices that differ."""
    out = []
    for i in range(len(vpns)):
        pte = int(lookup(int(vpns[i])))
        got = 0
        if pte & PTE_PRESENT:
            pfn = (pte & PFN_MASK) >> PFN_SHIFT
            if pfn < len(contents):
                got = int(contents[pfn])
        if got != int(expect[i]) and not (lazy[i] and got == 0):
            out.append(i)
    return out


class SecondaryMap:
    """The translations one driver declared (``note_map``), as arrays the scan kernel takes:
    ``vpns``, ``pfns`` (-1 = free slot), ``gens`` (frame generation at map time), ``writable``;
    ``slot`` maps a vpn to its index."""

    def __init__(self, cap: int = 16):
        self.vpns = np.zeros(cap, dtype=np.int64)
        self.pfns = np.full(cap, -1, dtype=np.int64)
        self.gens = np.zeros(cap, dtype=np.int64)
        self.writable = np.zeros(cap, dtype=np.uint8)
        self.slot: dict[int, int] = {}
        self.free: list[int] = []
        self.n = 0                      # slots in use or freed: [0, n) is scanned

    def __len__(self):
        return len(self.slot)

    def __repr__(self):
        return f"<SecondaryMap {len(self.slot)} translations>"

    def add(self, vpn: int, pfn: int, gen: int, writable: bool) -> None:
        i = self.slot.get(vpn)
        if i is None:
            if self.free:
                i = self.free.pop()
            else:
                if self.n == len(self.vpns):
                    self._grow()
                i = self.n
                self.n += 1
            self.slot[vpn] = i
        self.vpns[i] = vpn
        self.pfns[i] = pfn
        self.gens[i] = gen
        self.writable[i] = 1 if writable else 0

    def _grow(self):
        cap = 2 * len(self.vpns)
        for name, fill in (("vpns", 0), ("pfns", -1), ("gens", 0), ("writable", 0)):
            old = getattr(self, name)
            new = np.full(cap, fill, dtype=old.dtype)
            new[:len(old)] = old
            setattr(self, name, new)

    def get(self, vpn: int):
        i = self.slot.get(vpn)
        if i is None:
            return None
        return int(self.pfns[i]), int(self.gens[i]), bool(self.writable[i])

    def remove_range(self, vpn0: int, vpn1: int) -> None:
        slot = self.slot
        if vpn1 - vpn0 <= len(slot):
            keys = [v for v in range(vpn0, vpn1) if v in slot]
        else:
            keys = [v for v in slot if vpn0 <= v < vpn1]
        for v in keys:
            i = slot.pop(v)
            self.pfns[i] = -1
            self.free.append(i)
        if not slot:
            self.n = 0
            self.free.clear()
