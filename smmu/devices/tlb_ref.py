"""Pure-Python reference for :class:`smmu.devices.tlb.TLB`: same API, same semantics, no numba.

The differential tests drive a :class:`RefTLB` and a :class:`~smmu.devices.tlb.TLB` with the same
random operation sequences and require equal results, counters and contents (including
which way holds which entry, so evictions match). It is written for clarity, not speed,
and deliberately in a different style from the kernels: per-set recency lists for LRU and
a top-down tree walk for PLRU.
"""

from __future__ import annotations

import numpy as np

from smmu.base.constants import PAGE_SHIFT, PAGE_SIZE
from smmu.devices.tlb import (ASID_LIMIT, GEN_LIMIT, PFN_LIMIT, VPN_LIMIT, TLBEntries, _bad_args,
                              check_geometry)

__all__ = ["RefTLB"]

_METHODS = ("auto", "probe", "scan")


class _Entry:
    __slots__ = ("asid", "gen", "pfn", "vpn", "writable")

    def __init__(self, asid, vpn, pfn, writable, gen):
        self.asid, self.vpn, self.pfn, self.writable, self.gen = asid, vpn, pfn, writable, gen

    def __repr__(self):
        return (f"_Entry(asid={self.asid}, vpn={self.vpn:#x}, pfn={self.pfn:#x}, "
                f"writable={self.writable}, gen={self.gen})")


class RefTLB:
    """Plain-Python set-associative TLB; see :class:`smmu.devices.tlb.TLB` for the contract."""

    def __init__(self, sets=64, ways=8, policy="lru", name="ref-tlb", observer=None):
        check_geometry(sets, ways, policy)
        self.sets, self.ways, self.policy, self.name = int(sets), int(ways), policy, name
        self.observer = observer
        self.slots = [[None] * self.ways for _ in range(self.sets)]   # _Entry or None
        self.recency = [list(range(self.ways)) for _ in range(self.sets)]  # LRU first
        self.tree = [0] * self.sets        # PLRU: bit n = 1 means "victim is right of node n"
        self.counters = dict.fromkeys(
            ("hits", "misses", "inserts", "evictions", "flushes", "flushed"), 0)

    # -- replacement --------------------------------------------------------------------

    def _touch(self, s, w):
        if self.policy == "lru":
            self.recency[s].remove(w)
            self.recency[s].append(w)
            return
        lo, hi, node = 0, self.ways, 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if w < mid:                      # used the left half: point right
                self.tree[s] |= 1 << node
                hi, node = mid, 2 * node
            else:                            # used the right half: point left
                self.tree[s] &= ~(1 << node)
                lo, node = mid, 2 * node + 1

    def _victim(self, s):
        for w, e in enumerate(self.slots[s]):
            if e is None:
                return w
        if self.policy == "lru":
            return self.recency[s][0]
        lo, hi, node = 0, self.ways, 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.tree[s] >> node & 1:
                lo, node = mid, 2 * node + 1
            else:
                hi, node = mid, 2 * node
        return lo

    def _find(self, asid, vpn):
        s = vpn % self.sets
        for w, e in enumerate(self.slots[s]):
            if e is not None and e.asid == asid and e.vpn == vpn:
                return s, w, e
        return s, -1, None

    @staticmethod
    def _ok(asid, vpn):
        return 0 <= asid < ASID_LIMIT and 0 <= vpn < VPN_LIMIT

    # -- lookups ------------------------------------------------------------------------

    def lookup(self, asid, vpn, write=False):
        if not self._ok(asid, vpn):
            raise _bad_args("TLB.lookup", asid=asid, vpn=vpn)
        s, w, e = self._find(asid, vpn)
        if e is None or (write and not e.writable):
            self.counters["misses"] += 1
            return -1
        self.counters["hits"] += 1
        self._touch(s, w)
        return e.pfn

    def lookup_batch(self, asid, vpns, write=False):
        vpns = [int(v) for v in vpns]
        if not all(self._ok(asid, v) for v in vpns) or not self._ok(asid, 0):
            raise _bad_args("TLB.lookup_batch", asid=asid, vpns="(some element)")
        pfns = np.array([self.lookup(asid, v, write) for v in vpns], dtype=np.int64)
        return pfns, pfns >= 0

    def peek(self, asid, vpn):
        if not self._ok(asid, vpn):
            raise _bad_args("TLB.peek", asid=asid, vpn=vpn)
        e = self._find(asid, vpn)[2]
        return None if e is None else (e.pfn, e.writable, e.gen)

    def access_stream(self, asid, vpns, pfns=None, writable=True, gen=0):
        if self.observer is not None:
            raise ValueError(f"{self.name}: access_stream() does not report inserts to the "
                             f"observer; use lookup()/insert() on an observed TLB")
        vpns = [int(v) for v in vpns]
        pfns = vpns if pfns is None else [int(p) for p in pfns]
        if len(pfns) != len(vpns):
            raise ValueError(f"pfns has {len(pfns)} elements but vpns has {len(vpns)}")
        if (not all(self._ok(asid, v) for v in vpns) or not self._ok(asid, 0)
                or not all(0 <= p < PFN_LIMIT for p in pfns) or not 0 <= gen < GEN_LIMIT):
            raise _bad_args("TLB.access_stream", asid=asid, gen=gen, vpns="(some element)")
        hits = 0
        for v, p in zip(vpns, pfns, strict=True):
            if self.lookup(asid, v, writable) >= 0:
                hits += 1
            else:
                self.insert(asid, v, p, writable, gen)
        return hits

    # -- updates ------------------------------------------------------------------------

    def insert(self, asid, vpn, pfn, writable, gen):
        if not (self._ok(asid, vpn) and 0 <= pfn < PFN_LIMIT and 0 <= gen < GEN_LIMIT):
            raise _bad_args("TLB.insert", asid=asid, vpn=vpn, pfn=pfn, gen=gen)
        s, w, e = self._find(asid, vpn)
        evicted = None
        if e is None:
            w = self._victim(s)
            evicted = self.slots[s][w]
            if evicted is not None:
                self.counters["evictions"] += 1
        self.slots[s][w] = _Entry(asid, vpn, pfn, bool(writable), gen)
        self.counters["inserts"] += 1
        self._touch(s, w)
        if self.observer is not None:
            if evicted is not None:
                va = evicted.vpn << PAGE_SHIFT
                self.observer.note_unmap_range(va, va + PAGE_SIZE)
            self.observer.note_map(vpn << PAGE_SHIFT, pfn, bool(writable))
        return -1 if evicted is None else evicted.vpn

    def _flush(self, what, asid, vpn0, vpn1, match):
        if asid is not None and not (0 <= asid < ASID_LIMIT and 0 <= vpn0 <= VPN_LIMIT
                                     and vpn1 >= vpn0):
            raise _bad_args(what, asid=asid, vpn0=vpn0, vpn1=vpn1)
        n = 0
        for row in self.slots:
            for w, e in enumerate(row):
                if e is not None and match(e):
                    row[w] = None
                    n += 1
        self.counters["flushes"] += 1
        self.counters["flushed"] += n
        if self.observer is not None:
            self.observer.note_unmap_range(vpn0 << PAGE_SHIFT,
                                           min(vpn1, VPN_LIMIT) << PAGE_SHIFT)
        return n

    def flush_page(self, asid, vpn):
        return self._flush("TLB.flush_page", asid, vpn, vpn + 1,
                           lambda e: e.asid == asid and e.vpn == vpn)

    def flush_range(self, asid, vpn0, vpn1, method="auto"):
        if method not in _METHODS:
            raise ValueError(f"flush_range method must be one of "
                             f"{', '.join(map(repr, _METHODS))}, got {method!r}")
        return self._flush("TLB.flush_range", asid, vpn0, vpn1,
                           lambda e: e.asid == asid and vpn0 <= e.vpn < vpn1)

    def flush_asid(self, asid):
        return self._flush("TLB.flush_asid", asid, 0, VPN_LIMIT, lambda e: e.asid == asid)

    def flush_all(self):
        return self._flush("TLB.flush_all", None, 0, VPN_LIMIT, lambda e: True)

    # -- inspection ---------------------------------------------------------------------

    def entries(self):
        valid = [e for row in self.slots for e in row if e is not None]
        return TLBEntries(np.array([e.asid for e in valid], dtype=np.int64),
                          np.array([e.vpn for e in valid], dtype=np.int64),
                          np.array([e.pfn for e in valid], dtype=np.int64),
                          np.array([e.writable for e in valid], dtype=np.bool_),
                          np.array([e.gen for e in valid], dtype=np.uint32))

    def __len__(self):
        return sum(e is not None for row in self.slots for e in row)

    def stats(self):
        return dict(self.counters)

    def reset_stats(self):
        for k in self.counters:
            self.counters[k] = 0

    hits = property(lambda self: self.counters["hits"])
    misses = property(lambda self: self.counters["misses"])
    inserts = property(lambda self: self.counters["inserts"])
    evictions = property(lambda self: self.counters["evictions"])
    flushes = property(lambda self: self.counters["flushes"])

    @property
    def capacity(self):
        return self.sets * self.ways

    def __repr__(self):
        c = self.counters
        return (f"RefTLB({self.name!r}, sets={self.sets}, ways={self.ways}, "
                f"policy={self.policy!r}, valid={len(self)}/{self.capacity}, "
                f"hits={c['hits']}, misses={c['misses']}, inserts={c['inserts']}, "
                f"flushes={c['flushes']})")
