"""A device-side page table (KVM SPTEs, an HMM mirror's device table, an XPMEM attachment, a
pinned RDMA memory region), built on the radix kernels of :mod:`smmu.base.radix`.

A :class:`ShadowPageTable` maps vpn (``va >> 12``) to an SPTE word with the bit layout of
:mod:`smmu.base.pte`: ``PTE_PRESENT``, ``PTE_WRITE``, ``PTE_YOUNG`` (set when mapped and
by :meth:`~ShadowPageTable.access`, cleared by :meth:`~ShadowPageTable.age_range`) and
the pfn in bits 12 and up. Only present SPTEs are
ever stored. Each table owns a small node pool (nodes ``uint64[capacity, 512]``, a free
stack, counters) that grows in Python before a kernel that may allocate runs, so kernels
never run out midway; every method is one crossing into compiled code (range methods cross
once per 4096 entries cleared).

The table never holds huge PMDs (``PTE_HUGE``): a device maps 4 KiB translations, also of
the pages of a huge page.

Ranges are half-open ``[vpn0, vpn1)``; ``vpn1`` beyond the 48-bit space is clipped, so a
driver may pass Linux's ``end`` of ``ULONG_MAX``-style ranges straight through.

Observer hook: ``ShadowPageTable(observer=obj)`` makes :meth:`~ShadowPageTable.map` call
``obj.note_map(va, pfn, writable)`` and every zap call ``obj.note_unmap_range(va0, va1)``
once per call (not per page). A driver passes itself so the checker sees its mappings.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from smmu.base.radix import (M_ENOMEM, M_NFREE, M_USED, META_SIZE, VPN_LIMIT, pt_clear,
                             pt_clear_range, pt_clear_young_range, pt_destroy, pt_iter_present,
                             pt_lookup, pt_set)
from smmu.base.constants import PAGE_SHIFT, PAGE_SIZE, PTRS_PER_TABLE
from smmu.base.pte import PFN_SHIFT, PTE_PRESENT, PTE_WRITE, PTE_YOUNG, pte_pfns

__all__ = ["ShadowEntries", "ShadowPageTable"]

PFN_LIMIT = 1 << 40
_ALL_VA_END = VPN_LIMIT << PAGE_SHIFT
_MAP_NODES = 3                   # worst case new tables for one page (levels 2, 1, 0)
_SCRATCH = 1 << 12               # entries a zap_range crossing reports
_scratch_vpns = np.empty(_SCRATCH, dtype=np.int64)       # kernels run one at a time
_scratch_ptes = np.empty(_SCRATCH, dtype=np.uint64)

_U0 = np.uint64(0)
_P = np.uint64(PTE_PRESENT)
_W = np.uint64(PTE_WRITE)
_YOUNG = np.uint64(PTE_YOUNG)
_P_Y = np.uint64(PTE_PRESENT | PTE_YOUNG)
_PW_Y = np.uint64(PTE_PRESENT | PTE_WRITE | PTE_YOUNG)
_GROW = -1
_ENOMEM = -2


class ShadowEntries(NamedTuple):
    """The present SPTEs of a table, one array per field, in vpn order."""

    vpn: np.ndarray        # int64
    pfn: np.ndarray        # int64
    writable: np.ndarray   # bool
    young: np.ndarray      # bool


@numba.njit(cache=True)
def _map(nodes, free, meta, root, vpn, pfn, writable):
    """Store a present, young SPTE; 1 if one was there before, 0 if not, _GROW when the pool
    must grow first (nothing stored), _ENOMEM if a kernel ran out despite that."""
    if meta[M_NFREE] < _MAP_NODES:
        return _GROW
    pte = (np.uint64(pfn) << np.uint64(PFN_SHIFT)) | (_PW_Y if writable else _P_Y)
    old = pt_set(nodes, free, meta, root, vpn, pte)
    if meta[M_ENOMEM]:
        return _ENOMEM
    return 1 if old != _U0 else 0


@numba.njit(cache=True)
def _access(nodes, free, meta, root, vpn, write):
    """Hardware walk for a device access: pfn if the SPTE allows it (also setting its young
    bit), else -1."""
    pte = pt_lookup(nodes, root, vpn)
    need = _P | _W if write else _P
    if (pte & need) != need:
        return -1
    if (pte & _YOUNG) == _U0:
        pt_set(nodes, free, meta, root, vpn, pte | _YOUNG)   # the leaf exists: no allocation
    return np.int64(pte >> np.uint64(PFN_SHIFT))


def _bad(what, **args):
    shown = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return ValueError(f"{what}: argument out of range ({shown}); need 0 <= vpn < 2**36 "
                      f"(vpn = va >> {PAGE_SHIFT}), 0 <= pfn < 2**40, vpn0 <= vpn1, vpn0 <= 2**36")


class ShadowPageTable:
    """A secondary (device) page table: vpn -> (pfn, writable, young). See the module doc.

    >>> spt = ShadowPageTable(name="kvm.spt")
    >>> spt.map(0x10, pfn=7, writable=False)
    >>> spt.lookup(0x10), spt.lookup(0x11)
    ((7, False), None)
    >>> spt.zap_range(0, 0x100)
    1
    """

    def __init__(self, name="spt", observer=None, capacity=8):
        self.name = name
        self._observer = observer
        capacity = max(int(capacity), 2)
        self._nodes = np.zeros((capacity, PTRS_PER_TABLE), dtype=np.uint64)
        self._free = np.zeros(capacity, dtype=np.int64)
        self._free[: capacity - 1] = np.arange(capacity - 1, 0, -1)   # lowest index on top
        self._meta = np.zeros(META_SIZE, dtype=np.int64)
        self._meta[M_NFREE] = capacity - 1
        self._root = self._alloc_root()
        self._count = 0                 # present SPTEs
        self.maps = 0
        self.zaps = 0                   # zap / zap_range / zap_all calls
        self.zapped = 0                 # SPTEs removed by them
        self.hits = 0                   # access() calls that translated
        self.misses = 0

    # -- node pool ------------------------------------------------------------------------

    def _reserve(self, n):
        """Make at least n nodes free, doubling the pool as often as needed."""
        meta = self._meta
        if meta[M_NFREE] >= n:
            return
        old = self._nodes.shape[0]
        new = old
        while new - old + meta[M_NFREE] < n:
            new *= 2
        nodes = np.zeros((new, PTRS_PER_TABLE), dtype=np.uint64)
        nodes[:old] = self._nodes
        nfree = int(meta[M_NFREE])
        free = np.zeros(new, dtype=np.int64)
        free[:nfree] = self._free[:nfree]
        free[nfree: nfree + new - old] = np.arange(new - 1, old - 1, -1)
        self._nodes, self._free = nodes, free
        meta[M_NFREE] = nfree + new - old

    def _alloc_root(self):
        self._reserve(1)
        top = int(self._meta[M_NFREE]) - 1
        self._meta[M_NFREE] = top
        self._meta[M_USED] += 1
        return int(self._free[top])      # free nodes are all zeros (radix invariant)

    # -- translation ----------------------------------------------------------------------

    def map(self, vpn, pfn, writable):
        """Install (or replace) the SPTE of vpn: present, young, writable as asked."""
        if not (0 <= vpn < VPN_LIMIT and 0 <= pfn < PFN_LIMIT):
            raise _bad(f"{self.name}.map", vpn=vpn, pfn=pfn)
        had = _map(self._nodes, self._free, self._meta, self._root, vpn, pfn, writable)
        if had == _GROW:
            self._reserve(_MAP_NODES)
            had = _map(self._nodes, self._free, self._meta, self._root, vpn, pfn, writable)
        if had == _ENOMEM:                 # cannot happen after _reserve; never silent
            raise RuntimeError(f"{self.name}: radix pool ran out of nodes after reserving")
        self._count += 1 - had
        self.maps += 1
        if self._observer is not None:
            self._observer.note_map(vpn << PAGE_SHIFT, pfn, bool(writable))

    def lookup(self, vpn):
        """(pfn, writable) of vpn's SPTE, or None. Changes nothing (an inspection)."""
        if not 0 <= vpn < VPN_LIMIT:
            raise _bad(f"{self.name}.lookup", vpn=vpn)
        pte = int(pt_lookup(self._nodes, self._root, vpn))
        if not pte:
            return None
        return pte >> PFN_SHIFT, bool(pte & PTE_WRITE)

    def access(self, vpn, write=False):
        """A device access through the table, as the hardware walker does it: the pfn if the
        SPTE allows the access (setting its young bit), else -1 (a fault)."""
        if not 0 <= vpn < VPN_LIMIT:
            raise _bad(f"{self.name}.access", vpn=vpn)
        pfn = _access(self._nodes, self._free, self._meta, self._root, vpn, bool(write))
        if pfn < 0:
            self.misses += 1
        else:
            self.hits += 1
        return pfn

    # -- invalidation ---------------------------------------------------------------------

    def zap(self, vpn):
        """Remove vpn's SPTE; return whether there was one."""
        if not 0 <= vpn < VPN_LIMIT:
            raise _bad(f"{self.name}.zap", vpn=vpn)
        had = bool(pt_clear(self._nodes, self._root, vpn))
        self._count -= had
        self.zaps += 1
        self.zapped += had
        if self._observer is not None:
            va = vpn << PAGE_SHIFT
            self._observer.note_unmap_range(va, va + PAGE_SIZE)
        return had

    def zap_range(self, vpn0, vpn1):
        """Remove every SPTE with vpn0 <= vpn < vpn1; return how many there were."""
        if not 0 <= vpn0 <= min(vpn1, VPN_LIMIT):
            raise _bad(f"{self.name}.zap_range", vpn0=vpn0, vpn1=vpn1)
        vpn1 = min(vpn1, VPN_LIMIT)
        n = 0
        start = vpn0
        while start < vpn1:
            got = pt_clear_range(self._nodes, self._root, start, vpn1,
                                 _scratch_vpns, _scratch_ptes)
            n += got
            if got < _SCRATCH:
                break
            start = int(_scratch_vpns[got - 1]) + 1
        self._count -= n
        self.zaps += 1
        self.zapped += n
        if self._observer is not None:
            self._observer.note_unmap_range(vpn0 << PAGE_SHIFT, vpn1 << PAGE_SHIFT)
        return n

    def zap_all(self):
        """Remove every SPTE and free every table; return how many SPTEs there were."""
        n = self._count
        pt_destroy(self._nodes, self._free, self._meta, self._root)
        self._root = self._alloc_root()
        self._count = 0
        self.zaps += 1
        self.zapped += n
        if self._observer is not None:
            self._observer.note_unmap_range(0, _ALL_VA_END)
        return n

    # -- accessed bits --------------------------------------------------------------------

    def age_range(self, vpn0, vpn1):
        """Clear the young bit of the SPTEs in [vpn0, vpn1); return how many had it (the
        secondary side of ``clear_flush_young`` / ``clear_young``)."""
        if not 0 <= vpn0 <= min(vpn1, VPN_LIMIT):
            raise _bad(f"{self.name}.age_range", vpn0=vpn0, vpn1=vpn1)
        return int(pt_clear_young_range(self._nodes, self._root, vpn0, min(vpn1, VPN_LIMIT)))

    def test_young(self, vpn):
        """Is vpn mapped with its young bit set? Changes nothing."""
        if not 0 <= vpn < VPN_LIMIT:
            raise _bad(f"{self.name}.test_young", vpn=vpn)
        return bool(int(pt_lookup(self._nodes, self._root, vpn)) & PTE_YOUNG)

    # -- inspection -----------------------------------------------------------------------

    def entries(self):
        """Every SPTE as a ShadowEntries of arrays (vpn, pfn, writable, young), in vpn
        order: one crossing, no per-entry Python."""
        vpns = np.empty(self._count, dtype=np.int64)
        ptes = np.empty(self._count, dtype=np.uint64)
        if self._count:
            pt_iter_present(self._nodes, self._root, 0, VPN_LIMIT, vpns, ptes)
        return ShadowEntries(vpns, pte_pfns(ptes), (ptes & _W) != 0, (ptes & _YOUNG) != 0)

    def __len__(self):
        return self._count

    @property
    def tables(self):
        """Table nodes in use, root included."""
        return int(self._meta[M_USED])

    @property
    def observer(self):
        return self._observer

    def stats(self):
        return {"entries": self._count, "tables": self.tables, "maps": self.maps,
                "zaps": self.zaps, "zapped": self.zapped, "hits": self.hits,
                "misses": self.misses}

    def __repr__(self):
        return (f"ShadowPageTable({self.name!r}, entries={self._count}, "
                f"tables={self.tables}, maps={self.maps}, zaps={self.zaps})")
