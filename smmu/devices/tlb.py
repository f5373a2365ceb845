"""A set-associative device TLB whose hot paths are numba kernels.

Drivers modelled on TLB-based devices (the SGI GRU, IOMMU IOTLBs, RDMA NICs) keep one
:class:`TLB` and consult it on every device access; the coherence checker scans it with
:meth:`TLB.entries` to find translations that outlived their primary PTE.

Geometry: ``sets`` (a power of two) times ``ways``. A translation of ``vpn`` (``va >> 12``)
in address space ``asid`` lives in set ``vpn % sets``. Each entry holds the pfn, whether
it is writable, and ``gen``: the generation of the frame when the translation was
inserted (the frame table bumps it on every free), which lets the checker tell a stale
translation from a live one.

Replacement: ``"lru"`` (true LRU by global access stamps) or ``"plru"`` (tree pseudo-LRU,
one bit per internal node of a binary tree over the ways; ``ways`` must be a power of two).
Both fill an invalid way (the lowest-numbered) before evicting anything.

State is one int64 array ``[sets, 4, ways]`` (per set: keys, PTE words, generations,
replacement state) plus a small int64 ``meta`` array (counters, LRU clock, policy), so a
call from Python passes two arrays; each operation or batch is one crossing into compiled
code. The key of an entry is ``asid << 36 | vpn`` (-1 when invalid); the PTE word uses the
bit layout of :mod:`smmu.base.pte` (``PTE_PRESENT``, ``PTE_WRITE``, pfn in bits 12..).

Ranges are half-open, ``[vpn0, vpn1)``, like Linux's ``[start, end)``.

Observer hook: ``TLB(..., observer=obj)`` makes :meth:`TLB.insert` call
``obj.note_map(va, pfn, writable)``, an eviction call ``obj.note_unmap_range(va, va + 4096)``
and every flush call ``obj.note_unmap_range(va0, va1)`` once per call (not per page). A
driver passes itself so the checker sees the device's translations come and go.

:mod:`smmu.devices.tlb_ref` holds :class:`~smmu.devices.tlb_ref.RefTLB`, the pure-Python
reference with the same semantics, used by the differential tests and as the benchmark
baseline.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numba
import numpy as np

from smmu.base.constants import PAGE_SHIFT, PAGE_SIZE
from smmu.base.pte import PFN_SHIFT, PTE_PRESENT, PTE_WRITE

__all__ = ["ASID_BITS", "POLICIES", "TLB", "VPN_BITS", "TLBEntries"]

VPN_BITS = 36            # any 48-bit virtual address, user or kernel half
ASID_BITS = 27           # asid << VPN_BITS must fit a signed 64-bit key
PFN_BITS = 40
GEN_BITS = 32
VPN_LIMIT = 1 << VPN_BITS
ASID_LIMIT = 1 << ASID_BITS
PFN_LIMIT = 1 << PFN_BITS
GEN_LIMIT = 1 << GEN_BITS
_VPN_MASK = VPN_LIMIT - 1
_ALL_VA_END = VPN_LIMIT << PAGE_SHIFT

POLICIES = ("lru", "plru")
PLRU_MAX_WAYS = 64       # the tree bits of a set live in one int64

# rows of the per-set state block ent[set, row, way]
_KEY = 0                 # asid << VPN_BITS | vpn, or -1 when the way is invalid
_PTE = 1                 # pfn << PFN_SHIFT | PTE_PRESENT | PTE_WRITE?
_GEN = 2                 # frame generation at insert time
_REPL = 3                # LRU: last-use stamp per way; PLRU: tree bits in way 0

# slots of meta[]
M_HITS = 0
M_MISSES = 1
M_INSERTS = 2
M_EVICTIONS = 3
M_FLUSHES = 4            # flush calls
M_FLUSHED = 5            # entries invalidated by flushes
M_VALID = 6              # valid entries now
M_CLOCK = 7              # LRU stamp source
M_PLRU = 8               # 1 for tree-PLRU
M_LEVELS = 9             # log2(ways) for PLRU
_META_SIZE = 10

# flush_range methods
FLUSH_AUTO = 0
FLUSH_PROBE = 1
FLUSH_SCAN = 2
_FLUSH_METHODS = {"auto": FLUSH_AUTO, "probe": FLUSH_PROBE, "scan": FLUSH_SCAN}

_NEVER = (1 << 63) - 1   # above every LRU stamp
_BAD = -2                # kernels return this for an argument out of range


class TLBEntries(NamedTuple):
    """The valid entries of a TLB, one array per field, in set-major, way-minor order."""

    asid: np.ndarray      # int64
    vpn: np.ndarray       # int64
    pfn: np.ndarray       # int64
    writable: np.ndarray  # bool
    gen: np.ndarray       # uint32


# --------------------------------------------------------------------------- kernels
#
# Replacement-state updates are written out in each kernel (no shared helper): the kernels
# stay flat, as the performance notes ask. Tree-PLRU uses heap numbering: node 1 is the
# root, node n has children 2n and 2n+1, way w is leaf w + ways. A node's bit says which
# child holds the next victim (0: left, 1: right); touching a way points every node on its
# path away from it. Both walks are branchless.


@numba.njit(cache=True)
def _lookup1(ent, meta, asid, vpn, write):
    """pfn of (asid, vpn), or -1 on a miss (write=1 also misses a read-only entry)."""
    if (vpn >> VPN_BITS) | (asid >> ASID_BITS) | ((vpn | asid) < 0):
        return _BAD
    sets = ent.shape[0]
    ways = ent.shape[2]
    s = vpn & (sets - 1)
    key = (asid << VPN_BITS) | vpn
    need = PTE_PRESENT | (PTE_WRITE if write else 0)
    w = -1
    for x in range(ways):
        if ent[s, _KEY, x] == key:
            w = x
            break
    if w < 0 or (ent[s, _PTE, w] & need) != need:
        meta[M_MISSES] += 1
        return -1
    meta[M_HITS] += 1
    if meta[M_PLRU]:
        bits = ent[s, _REPL, 0]
        node = w + ways
        for _ in range(meta[M_LEVELS]):
            parent = node >> 1
            bits = (bits & ~(1 << parent)) | (((node & 1) ^ 1) << parent)
            node = parent
        ent[s, _REPL, 0] = bits
    else:
        meta[M_CLOCK] += 1
        ent[s, _REPL, w] = meta[M_CLOCK]
    return ent[s, _PTE, w] >> PFN_SHIFT


@numba.njit(cache=True)
def _insert(ent, meta, asid, vpn, pfn, writable, gen):
    """Insert or update (asid, vpn); return the evicted key, -1 if none, _BAD on bad input."""
    if ((vpn >> VPN_BITS) | (asid >> ASID_BITS) | (pfn >> PFN_BITS) | (gen >> GEN_BITS)
            | ((vpn | asid | pfn | gen) < 0)):
        return _BAD
    sets = ent.shape[0]
    ways = ent.shape[2]
    plru = meta[M_PLRU]
    s = vpn & (sets - 1)
    key = (asid << VPN_BITS) | vpn
    w = -1
    for x in range(ways):
        if ent[s, _KEY, x] == key:
            w = x
            break
    evicted = -1
    if w < 0:
        if plru:
            for x in range(ways):
                if ent[s, _KEY, x] < 0:
                    w = x
                    break
            if w < 0:
                bits = ent[s, _REPL, 0]
                node = 1
                for _ in range(meta[M_LEVELS]):
                    node = 2 * node + ((bits >> node) & 1)
                w = node - ways
        else:
            w = 0
            oldest = _NEVER
            for x in range(ways):
                stamp = ent[s, _REPL, x] if ent[s, _KEY, x] >= 0 else -1
                if stamp < oldest:
                    oldest = stamp
                    w = x
        evicted = ent[s, _KEY, w]
        if evicted >= 0:
            meta[M_EVICTIONS] += 1
        else:
            meta[M_VALID] += 1
        ent[s, _KEY, w] = key
    ent[s, _PTE, w] = (pfn << PFN_SHIFT) | PTE_PRESENT | (PTE_WRITE if writable else 0)
    ent[s, _GEN, w] = gen
    meta[M_INSERTS] += 1
    if plru:
        bits = ent[s, _REPL, 0]
        node = w + ways
        for _ in range(meta[M_LEVELS]):
            parent = node >> 1
            bits = (bits & ~(1 << parent)) | (((node & 1) ^ 1) << parent)
            node = parent
        ent[s, _REPL, 0] = bits
    else:
        meta[M_CLOCK] += 1
        ent[s, _REPL, w] = meta[M_CLOCK]
    return evicted


@numba.njit(cache=True)
def _lookup_batch(ent, meta, asid, vpns, write, pfns, hits):
    """Look every vpn up in order; fill pfns (-1 on miss) and hits; return the hit count."""
    bad = asid >> ASID_BITS
    for i in range(vpns.shape[0]):
        bad |= vpns[i] >> VPN_BITS
    if bad | (asid < 0):
        return _BAD
    sets = ent.shape[0]
    ways = ent.shape[2]
    levels = meta[M_LEVELS]
    plru = meta[M_PLRU]
    need = PTE_PRESENT | (PTE_WRITE if write else 0)
    tag = asid << VPN_BITS
    clock = meta[M_CLOCK]
    nhit = 0
    for i in range(vpns.shape[0]):
        vpn = vpns[i]
        s = vpn & (sets - 1)
        key = tag | vpn
        w = -1
        for x in range(ways):
            if ent[s, _KEY, x] == key:
                w = x
                break
        if w < 0 or (ent[s, _PTE, w] & need) != need:
            pfns[i] = -1
            hits[i] = False
        else:
            nhit += 1
            pfns[i] = ent[s, _PTE, w] >> PFN_SHIFT
            hits[i] = True
            if plru:
                bits = ent[s, _REPL, 0]
                node = w + ways
                for _ in range(levels):
                    parent = node >> 1
                    bits = (bits & ~(1 << parent)) | (((node & 1) ^ 1) << parent)
                    node = parent
                ent[s, _REPL, 0] = bits
            else:
                clock += 1
                ent[s, _REPL, w] = clock
    meta[M_CLOCK] = clock
    meta[M_HITS] += nhit
    meta[M_MISSES] += vpns.shape[0] - nhit
    return nhit


@functools.lru_cache(maxsize=None)
def _stream_kernel(ways, plru):
    """access_stream specialised for one (ways, policy): with both compile-time constants
    the way loops unroll and the policy branch folds away (about 1.5x faster per access than
    reading them at run time, which the other kernels do). Compiled on first use, cached on
    disk per pair."""
    levels = ways.bit_length() - 1

    @numba.njit(cache=True)
    def access_stream(ent, meta, asid, vpns, pfns, writable, gen):
        """Simulate accesses: look each vpn up, insert pfns[i] on a miss. Return the hit count.

        Same effect as lookup() then, on a miss, insert() per element."""
        bad = (asid >> ASID_BITS) | (gen >> GEN_BITS)
        for i in range(vpns.shape[0]):
            bad |= (vpns[i] >> VPN_BITS) | (pfns[i] >> PFN_BITS)
        if bad | (asid < 0) | (gen < 0):
            return _BAD
        sets = ent.shape[0]
        need = PTE_PRESENT | (PTE_WRITE if writable else 0)
        tag = asid << VPN_BITS
        clock = meta[M_CLOCK]
        nhit = 0
        nvalid = meta[M_VALID]
        nevict = 0
        for i in range(vpns.shape[0]):
            vpn = vpns[i]
            s = vpn & (sets - 1)
            key = tag | vpn
            w = -1
            for x in range(ways):
                if ent[s, _KEY, x] == key:
                    w = x
                    break
            if w >= 0 and (ent[s, _PTE, w] & need) == need:
                nhit += 1
            else:
                if w < 0:
                    if plru:
                        for x in range(ways):
                            if ent[s, _KEY, x] < 0:
                                w = x
                                break
                        if w < 0:
                            bits = ent[s, _REPL, 0]
                            node = 1
                            for _ in range(levels):
                                node = 2 * node + ((bits >> node) & 1)
                            w = node - ways
                    else:
                        w = 0
                        oldest = _NEVER
                        for x in range(ways):
                            stamp = ent[s, _REPL, x] if ent[s, _KEY, x] >= 0 else -1
                            if stamp < oldest:
                                oldest = stamp
                                w = x
                    if ent[s, _KEY, w] >= 0:
                        nevict += 1
                    else:
                        nvalid += 1
                    ent[s, _KEY, w] = key
                ent[s, _PTE, w] = (pfns[i] << PFN_SHIFT) | need
                ent[s, _GEN, w] = gen
            if plru:
                bits = ent[s, _REPL, 0]
                node = w + ways
                for _ in range(levels):
                    parent = node >> 1
                    bits = (bits & ~(1 << parent)) | (((node & 1) ^ 1) << parent)
                    node = parent
                ent[s, _REPL, 0] = bits
            else:
                clock += 1
                ent[s, _REPL, w] = clock
        n = vpns.shape[0]
        meta[M_CLOCK] = clock
        meta[M_HITS] += nhit
        meta[M_MISSES] += n - nhit
        meta[M_INSERTS] += n - nhit
        meta[M_EVICTIONS] += nevict
        meta[M_VALID] = nvalid
        return nhit

    return access_stream


@numba.njit(cache=True)
def _flush_range(ent, meta, asid, vpn0, vpn1, method):
    """Invalidate asid's entries with vpn in [vpn0, vpn1) (vpn1 is clipped to VPN_LIMIT).

    method FLUSH_PROBE looks each page up (~ways compares per page), FLUSH_SCAN walks every
    entry (sets * ways compares); FLUSH_AUTO probes while the range is shorter than the
    number of sets. Returns the number of entries invalidated.
    """
    if (asid >> ASID_BITS) | (asid < 0) | (vpn0 < 0) | (vpn0 > VPN_LIMIT) | (vpn1 < vpn0):
        return _BAD
    sets = ent.shape[0]
    ways = ent.shape[2]
    vpn1 = min(vpn1, VPN_LIMIT)
    n = 0
    if method == FLUSH_PROBE or (method == FLUSH_AUTO and vpn1 - vpn0 < sets):
        tag = asid << VPN_BITS
        for vpn in range(vpn0, vpn1):
            s = vpn & (sets - 1)
            key = tag | vpn
            for w in range(ways):
                if ent[s, _KEY, w] == key:
                    ent[s, _KEY, w] = -1
                    n += 1
    else:
        for s in range(sets):
            for w in range(ways):
                k = ent[s, _KEY, w]
                v = k & _VPN_MASK
                if k >= 0 and (k >> VPN_BITS) == asid and v >= vpn0 and v < vpn1:
                    ent[s, _KEY, w] = -1
                    n += 1
    meta[M_FLUSHES] += 1
    meta[M_FLUSHED] += n
    meta[M_VALID] -= n
    return n


@numba.njit(cache=True)
def _flush_all(ent, meta):
    """Invalidate every entry; return how many were valid."""
    n = meta[M_VALID]
    ent[:, _KEY, :] = -1
    meta[M_FLUSHES] += 1
    meta[M_FLUSHED] += n
    meta[M_VALID] = 0
    return n


@numba.njit(cache=True)
def _peek(ent, asid, vpn, out):
    """Fill out with (pfn, writable, gen) of (asid, vpn) without touching any state."""
    if (vpn >> VPN_BITS) | (asid >> ASID_BITS) | ((vpn | asid) < 0):
        return _BAD
    s = vpn & (ent.shape[0] - 1)
    key = (asid << VPN_BITS) | vpn
    found = 0
    for w in range(ent.shape[2]):
        if ent[s, _KEY, w] == key:
            pte = ent[s, _PTE, w]
            out[0] = pte >> PFN_SHIFT
            out[1] = (pte & PTE_WRITE) != 0
            out[2] = ent[s, _GEN, w]
            found = 1
    return found


@numba.njit(cache=True)
def _entries(ent, asids, vpns, pfns, writable, gens):
    """Copy the valid entries out in set-major order; return how many there are."""
    n = 0
    for s in range(ent.shape[0]):
        for w in range(ent.shape[2]):
            k = ent[s, _KEY, w]
            if k >= 0:
                pte = ent[s, _PTE, w]
                asids[n] = k >> VPN_BITS
                vpns[n] = k & _VPN_MASK
                pfns[n] = pte >> PFN_SHIFT
                writable[n] = (pte & PTE_WRITE) != 0
                gens[n] = ent[s, _GEN, w]
                n += 1
    return n


# --------------------------------------------------------------------------- Python face


def check_geometry(sets, ways, policy):
    """Raise ValueError, saying what to change, unless (sets, ways, policy) is usable."""
    if isinstance(sets, bool) or not isinstance(sets, (int, np.integer)) or sets < 1 \
            or sets & (sets - 1):
        raise ValueError(f"TLB sets must be a power of two >= 1 (1, 2, 4, ... 64...), "
                         f"got {sets!r}")
    if isinstance(ways, bool) or not isinstance(ways, (int, np.integer)) or ways < 1:
        raise ValueError(f"TLB ways must be an integer >= 1, got {ways!r}")
    if policy not in POLICIES:
        raise ValueError(f"TLB policy must be one of {', '.join(map(repr, POLICIES))}, "
                         f"got {policy!r}")
    if policy == "plru" and (ways & (ways - 1) or ways > PLRU_MAX_WAYS):
        raise ValueError(f"tree-PLRU needs ways to be a power of two <= {PLRU_MAX_WAYS} "
                         f"(1, 2, 4, 8, ...), got ways={ways}; pick such a ways or use "
                         f"policy='lru'")


def _bad_args(what, **args):
    shown = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return ValueError(
        f"{what}: argument out of range ({shown}); need 0 <= asid < 2**{ASID_BITS}, "
        f"0 <= vpn < 2**{VPN_BITS} (vpn = va >> {PAGE_SHIFT}), 0 <= pfn < 2**{PFN_BITS}, "
        f"0 <= gen < 2**{GEN_BITS}, vpn0 <= vpn1")


def _as_vpns(vpns):
    a = np.asarray(vpns)
    if a.size == 0:
        return np.empty(0, dtype=np.int64)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise ValueError(f"vpns must be a 1-d integer array, got shape {a.shape} "
                         f"dtype {a.dtype}")
    return a if a.dtype == np.int64 else a.astype(np.int64)


class TLB:
    """A set-associative device TLB (see the module docstring).

    >>> t = TLB(sets=4, ways=2)
    >>> t.insert(asid=1, vpn=5, pfn=99, writable=True, gen=0)
    -1
    >>> t.lookup(1, 5), t.lookup(1, 6)
    (99, -1)
    """

    __slots__ = ("_access_stream", "_ent", "_meta", "_observer", "name", "policy", "sets",
                 "ways")

    def __init__(self, sets=64, ways=8, policy="lru", name="tlb", observer=None):
        check_geometry(sets, ways, policy)
        self.sets = int(sets)
        self.ways = int(ways)
        self.policy = policy
        self.name = name
        self._observer = observer
        self._ent = np.zeros((self.sets, 4, self.ways), dtype=np.int64)
        self._meta = np.zeros(_META_SIZE, dtype=np.int64)
        self._meta[M_PLRU] = policy == "plru"
        self._meta[M_LEVELS] = self.ways.bit_length() - 1
        self._ent[:, _KEY, :] = -1
        self._access_stream = _stream_kernel(self.ways, policy == "plru")

    # -- lookups ------------------------------------------------------------------------

    def lookup(self, asid, vpn, write=False):
        """pfn mapped for (asid, vpn), or -1 on a miss; counts a hit or a miss and, on a hit,
        marks the entry most recently used. With write=True a read-only entry misses too
        (the device takes a protection fault and re-inserts it writable)."""
        r = _lookup1(self._ent, self._meta, asid, vpn, write)
        if r < -1:
            raise _bad_args("TLB.lookup", asid=asid, vpn=vpn)
        return r

    def lookup_batch(self, asid, vpns, write=False):
        """Look up every vpn of an array in order, as that many lookup() calls would.

        Returns (pfns int64 with -1 for misses, hit mask bool)."""
        v = _as_vpns(vpns)
        pfns = np.empty(v.shape[0], dtype=np.int64)
        hits = np.empty(v.shape[0], dtype=np.bool_)
        if _lookup_batch(self._ent, self._meta, asid, v, write, pfns, hits) < 0:
            raise _bad_args("TLB.lookup_batch", asid=asid, vpns="(some element)")
        return pfns, hits

    def peek(self, asid, vpn):
        """(pfn, writable, gen) of (asid, vpn) or None, touching no counter or LRU state."""
        out = np.zeros(3, dtype=np.int64)
        r = _peek(self._ent, asid, vpn, out)
        if r < 0:
            raise _bad_args("TLB.peek", asid=asid, vpn=vpn)
        return (int(out[0]), bool(out[1]), int(out[2])) if r else None

    def access_stream(self, asid, vpns, pfns=None, writable=True, gen=0):
        """Simulate a stream of device accesses in one kernel call: look each vpn up and on
        a miss insert it (pfn = pfns[i], or vpn itself when pfns is None). Returns the hit
        count; counters and replacement state end as after the same lookups and inserts
        one by one. The observer is not told (the stream is synthetic), so a TLB with an
        observer refuses it."""
        if self._observer is not None:
            raise ValueError(f"{self.name}: access_stream() does not report inserts to the "
                             f"observer; use lookup()/insert() on an observed TLB")
        v = _as_vpns(vpns)
        p = v if pfns is None else _as_vpns(pfns)
        if p.shape != v.shape:
            raise ValueError(f"pfns has {p.shape[0]} elements but vpns has {v.shape[0]}")
        r = self._access_stream(self._ent, self._meta, asid, v, p, writable, gen)
        if r < 0:
            raise _bad_args("TLB.access_stream", asid=asid, gen=gen, vpns="(some element)")
        return r

    # -- updates ------------------------------------------------------------------------

    def insert(self, asid, vpn, pfn, writable, gen):
        """Map (asid, vpn) -> pfn, replacing an entry for the same page in place, else
        filling an invalid way, else evicting per policy. Returns the evicted vpn or -1."""
        k = _insert(self._ent, self._meta, asid, vpn, pfn, writable, gen)
        if k < -1:
            raise _bad_args("TLB.insert", asid=asid, vpn=vpn, pfn=pfn, gen=gen)
        obs = self._observer
        if obs is not None:
            if k >= 0:
                va = (k & _VPN_MASK) << PAGE_SHIFT
                obs.note_unmap_range(va, va + PAGE_SIZE)
            obs.note_map(vpn << PAGE_SHIFT, pfn, bool(writable))
        return k & _VPN_MASK if k >= 0 else -1

    def flush_page(self, asid, vpn):
        """Invalidate the entry of (asid, vpn); return 1 if there was one, else 0."""
        return self._flush(asid, vpn, vpn + 1, FLUSH_PROBE, "TLB.flush_page")

    def flush_range(self, asid, vpn0, vpn1, method="auto"):
        """Invalidate asid's entries with vpn0 <= vpn < vpn1; return how many.

        method "probe" looks each page up, "scan" walks all entries, "auto" (default)
        probes ranges shorter than the number of sets and scans longer ones."""
        m = _FLUSH_METHODS.get(method)
        if m is None:
            raise ValueError(f"flush_range method must be one of "
                             f"{', '.join(map(repr, _FLUSH_METHODS))}, got {method!r}")
        return self._flush(asid, vpn0, vpn1, m, "TLB.flush_range")

    def flush_asid(self, asid):
        """Invalidate every entry of one address space; return how many."""
        return self._flush(asid, 0, VPN_LIMIT, FLUSH_SCAN, "TLB.flush_asid")

    def flush_all(self):
        """Invalidate every entry of every address space; return how many."""
        n = int(_flush_all(self._ent, self._meta))
        if self._observer is not None:
            self._observer.note_unmap_range(0, _ALL_VA_END)
        return n

    def _flush(self, asid, vpn0, vpn1, method, what):
        if vpn1 > VPN_LIMIT:     # e.g. a Linux range ending at ULONG_MAX: clip in Python,
            vpn1 = VPN_LIMIT     # where ints do not overflow
        n = _flush_range(self._ent, self._meta, asid, vpn0, vpn1, method)
        if n < 0:
            raise _bad_args(what, asid=asid, vpn0=vpn0, vpn1=vpn1)
        obs = self._observer
        if obs is not None:
            obs.note_unmap_range(vpn0 << PAGE_SHIFT, vpn1 << PAGE_SHIFT)
        return n

    # -- inspection ---------------------------------------------------------------------

    def entries(self):
        """The valid entries as a TLBEntries of arrays (asid, vpn, pfn, writable, gen),
        set-major, way-minor; one call into compiled code, no per-entry Python."""
        n = int(self._meta[M_VALID])
        out = TLBEntries(np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64),
                         np.empty(n, np.bool_), np.empty(n, np.uint32))
        _entries(self._ent, *out)
        return out

    def __len__(self):
        return int(self._meta[M_VALID])

    def stats(self):
        """Counters: hits, misses, inserts, evictions, flushes (calls), flushed (entries)."""
        m = self._meta
        return {"hits": int(m[M_HITS]), "misses": int(m[M_MISSES]),
                "inserts": int(m[M_INSERTS]), "evictions": int(m[M_EVICTIONS]),
                "flushes": int(m[M_FLUSHES]), "flushed": int(m[M_FLUSHED])}

    def reset_stats(self):
        """Zero the counters (not the contents)."""
        self._meta[[M_HITS, M_MISSES, M_INSERTS, M_EVICTIONS, M_FLUSHES, M_FLUSHED]] = 0

    hits = property(lambda self: int(self._meta[M_HITS]), doc="lookups that hit")
    misses = property(lambda self: int(self._meta[M_MISSES]), doc="lookups that missed")
    inserts = property(lambda self: int(self._meta[M_INSERTS]), doc="insert calls")
    evictions = property(lambda self: int(self._meta[M_EVICTIONS]),
                         doc="valid entries displaced by inserts")
    flushes = property(lambda self: int(self._meta[M_FLUSHES]), doc="flush calls")

    @property
    def capacity(self):
        return self.sets * self.ways

    @property
    def observer(self):
        return self._observer

    def __repr__(self):
        m = self._meta
        return (f"TLB({self.name!r}, sets={self.sets}, ways={self.ways}, "
                f"policy={self.policy!r}, valid={len(self)}/{self.capacity}, "
                f"hits={m[M_HITS]}, misses={m[M_MISSES]}, inserts={m[M_INSERTS]}, "
                f"flushes={m[M_FLUSHES]})")
