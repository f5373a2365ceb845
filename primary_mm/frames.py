"""The frame table: per-physical-page state in numpy arrays, batch kernels, ``FrameTable``.

Arrays (index = pfn; pfn 0 is reserved and never allocated, so 0 can mean "no frame")::

    refcount   int32   references (allocation, each mapping the MM takes, get_page, pins)
    mapcount   int32   page-table mappings (maintained by the MM through inc/dec_mapcount)
    pincount   int32   long-term / FOLL_PIN pins; each pin also holds one reference
    flags      uint32  FRAME_* bits below
    generation uint32  bumped on every free: (pfn, generation) names one lifetime of a frame,
                       which is how the oracle tells a use-after-free from a valid access
    owner      int32   id of the mm that owns the frame, -1 for none (free or shared)
    contents   uint64  the page's data, reduced to one 64-bit value (what the oracle compares);
                       kept as garbage on free, zeroed on allocation only when asked

Free frames sit on a LIFO stack (``free_stack[0:meta[F_NFREE]]``), so a frame just freed is
the next one handed out: a stale device mapping then hits a frame reused by someone else,
which is exactly what the checker must catch.

Kernels (``@numba.njit(cache=True)`` over these arrays; ``primary_mm.frames_ref`` has a
pure-Python twin of each) are batches over pfn arrays: one Python->jit crossing per
operation. A kernel never raises: a bad entry (pfn out of range or 0, reference taken on a
free frame, counter underflow) is skipped and recorded in meta (error count, first bad pfn,
error code); ``FrameTable`` raises ``FrameStateError`` after the call, naming the pfn.
Each pin holds one reference (Linux: GUP_PIN_COUNTING_BIAS), which only an unpin drops: a
plain put that would take refcount below pincount is refused (ERR_PUT_PINNED).
Freeing a frame that still has mappings or pins is recorded as ERR_BAD_PAGE_STATE (the
counters are reset and the frame is freed anyway, like Linux's bad_page()).
"""

from __future__ import annotations

import numba
import numpy as np

from smmu.base.constants import HPAGE_PMD_NR
from smmu.base.errors import OutOfMemory

# ----------------------------------------------------------------------------- flags
FRAME_ANON = 1 << 0  #: anonymous memory (anon_vma reverse map)
FRAME_DIRTY = 1 << 1  #: contents differ from backing store (file / swap)
FRAME_SWAPCACHE = 1 << 2  #: in the swap cache (has a swap slot)
FRAME_KSM = 1 << 3  #: a KSM stable page shared between mms
FRAME_FILE = 1 << 4  #: page-cache page of a file (address_space reverse map)
FRAME_ZERO = 1 << 5  #: the shared zero page (never written, never freed)
FRAME_LOCKED = 1 << 6  #: PG_locked (held during migration, swap I/O, truncate)
FRAME_REFERENCED = 1 << 7  #: PG_referenced (second-chance reclaim)
FRAME_WRITEBACK = 1 << 8  #: under writeback
FRAME_MLOCKED = 1 << 9  #: mlocked: reclaim must skip it
FRAME_IDLE = 1 << 10  #: PG_idle (mm/page_idle.c): not accessed since marked idle
#: PG_young: a young bit that page_idle cleared (``folio_set_young``), still owed to reclaim's
#: ``folio_referenced`` ("if (folio_test_clear_young(folio)) referenced++")
FRAME_YOUNG = 1 << 11
#: a ZONE_DEVICE page of MEMORY_DEVICE_PRIVATE memory (``memremap_pages``): device memory the
#: CPU cannot address, mapped by device-private entries; never on the LRU, so reclaim, NUMA
#: migration and KSM pass it by
FRAME_DEVICE_PRIVATE = 1 << 12
#: a frame of a transparent huge page: 512 contiguous frames whose first pfn is a multiple
#: of 512 (the head, ``pfn & ~511``), allocated together by ``alloc_huge``. Each frame keeps
#: its own counts (see ``FrameTable.alloc_huge``); the flag stays while the folio is whole
#: and goes when it is split (``split_huge_page``) or the frame is freed.
FRAME_COMPOUND = 1 << 13
#: PG_anon_exclusive (5.19, 6c287605fd56): this anonymous page is mapped by one process
#: only and may be mapped writable (reused on a write fault, pinned read-only) without
#: further checks; cleared when fork or KSM shares it, or when it is unmapped for swap
FRAME_ANON_EXCLUSIVE = 1 << 14
#: PG_lazyfree (MADV_FREE): clean anonymous page that reclaim may drop instead of swapping
FRAME_LAZYFREE = 1 << 16

FRAME_FLAG_NAMES = {
    FRAME_ANON: "anon",
    FRAME_DIRTY: "dirty",
    FRAME_SWAPCACHE: "swapcache",
    FRAME_KSM: "ksm",
    FRAME_FILE: "file",
    FRAME_ZERO: "zero",
    FRAME_LOCKED: "locked",
    FRAME_REFERENCED: "referenced",
    FRAME_WRITEBACK: "writeback",
    FRAME_MLOCKED: "mlocked",
    FRAME_IDLE: "idle",
    FRAME_YOUNG: "young",
    FRAME_COMPOUND: "compound",
    FRAME_DEVICE_PRIVATE: "device_private",
    FRAME_ANON_EXCLUSIVE: "anon_exclusive",
}

NO_OWNER = -1

# ----------------------------------------------------------------------------- meta / errors
F_NFREE = 0  #: frames on the free stack
F_NERR = 1  #: errors recorded since the last reset
F_BAD_PFN = 2  #: pfn of the first error
F_ERR_CODE = 3  #: code of the first error
FMETA_SIZE = 4

ERR_BAD_PFN = 1  #: pfn 0 or beyond the table
ERR_FREE_FRAME = 2  #: get/put/mapcount on a frame whose refcount is 0
ERR_MAPCOUNT_UNDERFLOW = 3
ERR_PINCOUNT_UNDERFLOW = 4
ERR_BAD_PAGE_STATE = 5  #: refcount reached 0 with mappings or pins left
ERR_PUT_PINNED = 6  #: a plain put would drop a reference that belongs to a pin

ERROR_NAMES = {
    ERR_BAD_PFN: "pfn 0 or out of range",
    ERR_FREE_FRAME: "frame is free (refcount 0)",
    ERR_MAPCOUNT_UNDERFLOW: "mapcount would go negative",
    ERR_PINCOUNT_UNDERFLOW: "pincount would go negative",
    ERR_BAD_PAGE_STATE: "freed while still mapped or pinned",
    ERR_PUT_PINNED: "put would drop a reference that a pin holds (refcount <= pincount): "
    "use unpin (unpin_user_page) to drop a pin",
}

_U32_1 = np.uint32(1)
_U32_0 = np.uint32(0)


def compound_head(pfn: int) -> int:
    """The head of the huge page (``FRAME_COMPOUND`` block) holding ``pfn``."""
    return int(pfn) & ~(HPAGE_PMD_NR - 1)


def compound_block(head: int) -> np.ndarray:
    """The 512 pfns of the huge page whose head is ``head``."""
    return np.arange(head, head + HPAGE_PMD_NR, dtype=np.int64)


class FrameStateError(RuntimeError):
    """A frame operation broke the refcount rules (a bug in the caller, like Linux's
    'Bad page state'); the message names the pfn."""


# ----------------------------------------------------------------------------- kernels
# The batch kernels call a per-frame helper (_live, _alloc1, _get1, _put1, _mapcount1) for
# each pfn, passing the arrays: compiled with numba's reference counting (NRT), every such
# call increfs and decrefs each array argument, which made a batch ~20x slower per pfn
# (frames_mapcount_add of 9,762 pfns: 9 us with the body inline, 200 us through the
# helper). None of these kernels allocates, so they are compiled without NRT (_nrt=False).


@numba.njit(cache=True, _nrt=False)
def _error(meta, pfn, code):
    if meta[F_NERR] == 0:
        meta[F_BAD_PFN] = pfn
        meta[F_ERR_CODE] = code
    meta[F_NERR] += 1


@numba.njit(cache=True, _nrt=False, inline="always")
def _live(meta, refcount, pfn):
    """Is ``pfn`` an allocated frame? If not, the error (ERR_BAD_PFN for pfn 0 or beyond the
    table, ERR_FREE_FRAME for a free one) is recorded in meta."""
    if pfn <= 0 or pfn >= refcount.shape[0]:
        _error(meta, pfn, ERR_BAD_PFN)
        return False
    if refcount[pfn] <= 0:
        _error(meta, pfn, ERR_FREE_FRAME)
        return False
    return True


@numba.njit(cache=True, _nrt=False, inline="always")
def _alloc1(pfn, refcount, mapcount, pincount, flags, owner, contents, owner_id, flag_bits,
            zero):
    """One frame of an allocation: refcount 1, no mappings or pins, its flags and owner,
    contents zeroed if ``zero``."""
    refcount[pfn] = 1
    mapcount[pfn] = 0
    pincount[pfn] = 0
    flags[pfn] = flag_bits
    owner[pfn] = owner_id
    if zero:
        contents[pfn] = 0


@numba.njit(cache=True, _nrt=False)
def frames_alloc(
    free_stack,
    meta,
    refcount,
    mapcount,
    pincount,
    flags,
    owner,
    contents,
    n,
    owner_id,
    flag_bits,
    zero,
    out,
):
    """Pop n frames: refcount 1, no mappings or pins, flags = flag_bits, owner = owner_id,
    contents zeroed if zero. Writes them to out[0:n] and returns n; returns 0 and changes
    nothing if fewer than n are free."""
    nfree = meta[F_NFREE]
    if n > nfree:
        return 0
    for k in range(n):
        pfn = free_stack[nfree - 1 - k]
        _alloc1(pfn, refcount, mapcount, pincount, flags, owner, contents, owner_id, flag_bits,
                zero)
        out[k] = pfn
    meta[F_NFREE] = nfree - n
    return n


@numba.njit(cache=True, _nrt=False)
def frames_alloc_one(free_stack, meta, refcount, mapcount, pincount, flags, owner, contents,
                     owner_id, flag_bits, zero):
    """:func:`frames_alloc` of one frame, returned (0 if none is free)."""
    nfree = meta[F_NFREE]
    if nfree < 1:
        return 0
    pfn = free_stack[nfree - 1]
    _alloc1(pfn, refcount, mapcount, pincount, flags, owner, contents, owner_id, flag_bits,
            zero)
    meta[F_NFREE] = nfree - 1
    return pfn


@numba.njit(cache=True, _nrt=False, inline="always")
def _get1(meta, refcount, pincount, pfn, pin):
    """One frame of :func:`frames_get`: 1 if it was skipped as an error."""
    if not _live(meta, refcount, pfn):
        return 1
    refcount[pfn] += 1
    if pin:
        pincount[pfn] += 1
    return 0


@numba.njit(cache=True, _nrt=False)
def frames_get(meta, refcount, pincount, pfns, pin):
    """refcount += 1 for each pfn (a pfn listed twice gets two); with pin, pincount += 1 too.
    Returns the number of entries skipped as errors (bad pfn, frame free)."""
    errors = 0
    for k in range(pfns.shape[0]):
        errors += _get1(meta, refcount, pincount, pfns[k], pin)
    return errors


@numba.njit(cache=True, _nrt=False)
def frames_get_one(meta, refcount, pincount, pfn, pin):
    """:func:`frames_get` of one pfn (an int)."""
    return _get1(meta, refcount, pincount, pfn, pin)


@numba.njit(cache=True, _nrt=False, inline="always")
def _put1(free_stack, meta, refcount, mapcount, pincount, flags, generation, owner, pfn, unpin):
    """One frame of :func:`frames_put`: True if it was freed."""
    if not _live(meta, refcount, pfn):
        return False
    if unpin:
        if pincount[pfn] <= 0:
            _error(meta, pfn, ERR_PINCOUNT_UNDERFLOW)
            return False
        pincount[pfn] -= 1
    elif refcount[pfn] <= pincount[pfn]:
        _error(meta, pfn, ERR_PUT_PINNED)
        return False
    rc = refcount[pfn] - 1
    refcount[pfn] = rc
    if rc != 0:
        return False
    if mapcount[pfn] != 0 or pincount[pfn] != 0:
        _error(meta, pfn, ERR_BAD_PAGE_STATE)
        mapcount[pfn] = 0
        pincount[pfn] = 0
    generation[pfn] += _U32_1
    owner[pfn] = -1
    flags[pfn] = _U32_0
    nfree = meta[F_NFREE]
    free_stack[nfree] = pfn
    meta[F_NFREE] = nfree + 1
    return True


@numba.njit(cache=True, _nrt=False)
def frames_put(
    free_stack, meta, refcount, mapcount, pincount, flags, generation, owner, pfns, unpin, out_freed
):
    """refcount -= 1 for each pfn (with unpin, pincount -= 1 first). A frame whose refcount
    reaches 0 is freed: generation += 1, owner = -1, flags = 0, contents kept, pushed on the
    free stack, and written to out_freed. Returns the number freed. Without unpin, a put
    that would leave refcount < pincount is skipped as ERR_PUT_PINNED: those references
    belong to pins (GUP_PIN_COUNTING_BIAS) and only unpin_user_page drops them."""
    freed = 0
    for k in range(pfns.shape[0]):
        pfn = pfns[k]
        if _put1(free_stack, meta, refcount, mapcount, pincount, flags, generation, owner, pfn,
                 unpin):
            out_freed[freed] = pfn
            freed += 1
    return freed


@numba.njit(cache=True, _nrt=False)
def frames_put_one(free_stack, meta, refcount, mapcount, pincount, flags, generation, owner, pfn,
                   unpin):
    """:func:`frames_put` of one pfn (an int): the pfn if it was freed, else 0."""
    if _put1(free_stack, meta, refcount, mapcount, pincount, flags, generation, owner, pfn,
             unpin):
        return pfn
    return 0


@numba.njit(cache=True, _nrt=False, inline="always")
def _mapcount1(meta, refcount, mapcount, pfn, delta):
    """One frame of :func:`frames_mapcount_add`: 1 if it was skipped as an error."""
    if not _live(meta, refcount, pfn):
        return 1
    m = mapcount[pfn] + delta
    if m < 0:
        _error(meta, pfn, ERR_MAPCOUNT_UNDERFLOW)
        return 1
    mapcount[pfn] = m
    return 0


@numba.njit(cache=True, _nrt=False)
def frames_mapcount_add(meta, refcount, mapcount, pfns, delta):
    """mapcount += delta for each pfn; skipped as errors: bad pfn, free frame, result < 0.
    Returns the number of errors."""
    errors = 0
    for k in range(pfns.shape[0]):
        errors += _mapcount1(meta, refcount, mapcount, pfns[k], delta)
    return errors


@numba.njit(cache=True, _nrt=False)
def frames_mapcount_add_one(meta, refcount, mapcount, pfn, delta):
    """:func:`frames_mapcount_add` of one pfn (an int)."""
    return _mapcount1(meta, refcount, mapcount, pfn, delta)


@numba.njit(cache=True, _nrt=False)
def frames_alloc_huge(
    free_stack, meta, refcount, mapcount, pincount, flags, owner, contents, nr, owner_id,
    flag_bits, zero,
):
    """Allocate ``nr`` contiguous frames whose first pfn is a nonzero multiple of ``nr``
    (the lowest such free block): refcount 1 each, no mappings or pins, flags = flag_bits,
    owner = owner_id, contents zeroed if zero. They leave the free stack (which keeps the
    order of the others). Returns the first pfn, or 0 (nothing changed) when no block is
    free."""
    n = refcount.shape[0]
    head = 0
    b = nr
    while b + nr <= n:
        k = 0
        while k < nr and refcount[b + k] == 0:
            k += 1
        if k == nr:
            head = b
            break
        b += nr
    if head == 0:
        return 0
    nfree = meta[F_NFREE]
    j = 0
    for i in range(nfree):
        p = free_stack[i]
        if p >= head and p < head + nr:
            continue
        free_stack[j] = p
        j += 1
    meta[F_NFREE] = j
    for k in range(nr):
        _alloc1(head + k, refcount, mapcount, pincount, flags, owner, contents, owner_id,
                flag_bits, zero)
    return head


KERNELS = ("frames_alloc", "frames_alloc_huge", "frames_get", "frames_put",
           "frames_mapcount_add")


# ----------------------------------------------------------------------------- FrameTable


def _pfn_array(pfns) -> np.ndarray:
    if isinstance(pfns, np.ndarray) and pfns.dtype == np.int64 and pfns.ndim == 1:
        return pfns if pfns.flags.c_contiguous else np.ascontiguousarray(pfns)
    return np.ascontiguousarray(np.atleast_1d(pfns), dtype=np.int64)


#: nframes -> (owner, free_stack) as a new table starts: copied, never written
_FRESH: dict = {}


def _fresh(nframes: int):
    t = _FRESH.get(nframes)
    if t is None:
        owner = np.full(nframes, NO_OWNER, dtype=np.int32)
        free_stack = np.zeros(nframes, dtype=np.int64)
        free_stack[: nframes - 1] = np.arange(nframes - 1, 0, -1, dtype=np.int64)
        owner.flags.writeable = free_stack.flags.writeable = False
        if len(_FRESH) < 16:
            _FRESH[nframes] = (owner, free_stack)
        t = (owner, free_stack)
    return t


class FrameTable:
    """All physical frames of the simulated machine.

    ``FrameTable(nframes)`` starts with nframes slots (pfn 0 reserved) and doubles when an
    allocation finds too few free frames, up to ``max_frames`` if given (beyond which
    ``alloc`` raises ``OutOfMemory``, as a machine with that much RAM would).

    Failure injection: ``fail_after(n)`` lets the next n frames be allocated and makes the
    allocation that would take the (n+1)-th raise ``OutOfMemory`` (once, allocating nothing);
    ``fail_next()`` is ``fail_after(0)``; ``clear_fail()`` disarms.
    """

    def __init__(self, nframes: int = 1024, max_frames: int | None = None):
        nframes = max(int(nframes), 2)
        if max_frames is not None and max_frames < nframes:
            nframes = max(int(max_frames), 2)
        self.max_frames = max_frames
        # a simulator is built per explored schedule: the per-frame arrays of one dtype are
        # the rows of one block (each row a contiguous array of its own, as the kernels
        # take it; _grow replaces them one by one), the non-zero ones copied from a template
        i32 = np.zeros((3, nframes), dtype=np.int32)
        self.refcount, self.mapcount, self.pincount = i32[0], i32[1], i32[2]
        u32 = np.zeros((2, nframes), dtype=np.uint32)
        self.flags, self.generation = u32[0], u32[1]
        owner, free_stack = _fresh(nframes)
        self.owner = owner.copy()
        self.contents = np.zeros(nframes, dtype=np.uint64)
        # lowest pfn on top: pfns are handed out in increasing order at first
        self.free_stack = free_stack.copy()
        # meta, then the one-element scratch arrays: a single-pfn call must not build
        # arrays (fault path)
        small = np.zeros(FMETA_SIZE + 2, dtype=np.int64)
        self.meta = small[:FMETA_SIZE]
        self.meta[F_NFREE] = nframes - 1
        self._one = small[FMETA_SIZE:FMETA_SIZE + 1]
        self._one_out = small[FMETA_SIZE + 1:]
        self._fail_budget: int | None = None
        self.allocations = 0  # frames handed out since creation
        self.frees = 0  # frames freed since creation
        self.failures_injected = 0

    # -- sizes ---------------------------------------------------------------------------
    @property
    def nframes(self) -> int:
        return self.refcount.shape[0]

    @property
    def nfree(self) -> int:
        return int(self.meta[F_NFREE])

    @property
    def nallocated(self) -> int:
        return self.nframes - 1 - self.nfree

    def __repr__(self) -> str:
        fail = "" if self._fail_budget is None else f", failing after {self._fail_budget}"
        limit = "" if self.max_frames is None else f" (max {self.max_frames})"
        return (
            f"<FrameTable {self.nallocated} allocated, {self.nfree} free of "
            f"{self.nframes - 1}{limit}{fail}>"
        )

    def describe(self, pfn: int) -> dict:
        """Everything known about one frame, for messages and debugging."""
        pfn = int(pfn)
        bits = int(self.flags[pfn])
        return {
            "pfn": pfn,
            "refcount": int(self.refcount[pfn]),
            "mapcount": int(self.mapcount[pfn]),
            "pincount": int(self.pincount[pfn]),
            "flags": [name for bit, name in FRAME_FLAG_NAMES.items() if bits & bit],
            "generation": int(self.generation[pfn]),
            "owner": int(self.owner[pfn]),
            "contents": int(self.contents[pfn]),
            "free": self.is_free(pfn),
        }

    def is_free(self, pfn: int) -> bool:
        return pfn != 0 and int(self.refcount[pfn]) == 0

    # -- growth --------------------------------------------------------------------------
    def _grow(self, n: int) -> None:
        """Make n frames free by doubling the table (up to max_frames)."""
        old = self.nframes
        new = old
        while new - old + self.nfree < n:
            if self.max_frames is not None and new >= self.max_frames:
                raise OutOfMemory(
                    f"out of frames: {n} wanted, {self.nfree} free, max_frames={self.max_frames}"
                )
            new *= 2
            if self.max_frames is not None:
                new = min(new, self.max_frames)
        for name, fill in (
            ("refcount", 0),
            ("mapcount", 0),
            ("pincount", 0),
            ("flags", 0),
            ("generation", 0),
            ("owner", NO_OWNER),
            ("contents", 0),
        ):
            arr = getattr(self, name)
            grown = np.full(new, fill, dtype=arr.dtype)
            grown[:old] = arr
            setattr(self, name, grown)
        nfree = self.nfree
        stack = np.zeros(new, dtype=np.int64)
        stack[:nfree] = self.free_stack[:nfree]
        stack[nfree : nfree + new - old] = np.arange(new - 1, old - 1, -1, dtype=np.int64)
        self.free_stack = stack
        self.meta[F_NFREE] = nfree + new - old

    # -- failure injection ---------------------------------------------------------------
    def fail_after(self, n: int) -> None:
        """Let n more frames be allocated; the allocation needing one more raises."""
        if n < 0:
            raise ValueError("fail_after needs n >= 0")
        self._fail_budget = int(n)

    def fail_next(self) -> None:
        """Make the next allocation raise OutOfMemory."""
        self._fail_budget = 0

    def clear_fail(self) -> None:
        self._fail_budget = None

    def _take_budget(self, n: int, what: str) -> None:
        """Count ``n`` frames against an armed ``fail_after``; raise when they exceed it."""
        if self._fail_budget is None:
            return
        if n > self._fail_budget:
            self._fail_budget = None
            self.failures_injected += 1
            raise OutOfMemory(f"injected allocation failure ({what})")
        self._fail_budget -= n

    # -- operations ----------------------------------------------------------------------
    def _pfns(self, pfns) -> np.ndarray:
        """pfns as a contiguous int64 array; a single int goes through a scratch array."""
        if isinstance(pfns, (int, np.integer)):
            one = self._one
            one[0] = pfns
            return one
        return _pfn_array(pfns)

    def _raise_errors(self, what: str) -> None:
        nerr = int(self.meta[F_NERR])
        if not nerr:
            return
        pfn, code = int(self.meta[F_BAD_PFN]), int(self.meta[F_ERR_CODE])
        self.meta[F_NERR] = 0
        raise FrameStateError(
            f"{what}: pfn {pfn}: {ERROR_NAMES.get(code, code)}"
            + (f" (and {nerr - 1} more errors in the batch)" if nerr > 1 else "")
        )

    def alloc(
        self, n: int = 1, owner: int = NO_OWNER, flags: int = 0, zero: bool = True, out=None
    ) -> np.ndarray:
        """Allocate n frames (refcount 1); returns their pfns (int64 array, ``out`` if given)."""
        n = int(n)
        if n < 0:
            raise ValueError("alloc needs n >= 0")
        self._take_budget(n, f"{n} frame(s) requested")
        if n > self.meta[F_NFREE]:
            self._grow(n)
        out = np.empty(n, dtype=np.int64) if out is None else out
        got = frames_alloc(
            self.free_stack,
            self.meta,
            self.refcount,
            self.mapcount,
            self.pincount,
            self.flags,
            self.owner,
            self.contents,
            n,
            int(owner),
            np.uint32(flags),
            bool(zero),
            out,
        )
        assert got == n, "frames_alloc failed after the table was grown"
        self.allocations += n
        return out

    def alloc_one(self, owner: int = NO_OWNER, flags: int = 0, zero: bool = True) -> int:
        if self._fail_budget is None:
            # one frame through its own kernel (no pfn array); none free: alloc grows
            pfn = frames_alloc_one(self.free_stack, self.meta, self.refcount, self.mapcount,
                                   self.pincount, self.flags, self.owner, self.contents,
                                   int(owner), int(flags), bool(zero))
            if pfn:
                self.allocations += 1
                return int(pfn)
        return int(self.alloc(1, owner, flags, zero, self._one_out)[0])

    def alloc_huge(self, owner: int = NO_OWNER, flags: int = 0, zero: bool = True,
                   nr: int = HPAGE_PMD_NR) -> int:
        """Allocate a transparent huge page: ``nr`` contiguous frames from a pfn that is a
        multiple of ``nr`` (the head), each with refcount 1 and ``flags | FRAME_COMPOUND``;
        returns the head pfn. The table grows when no aligned block is free.

        Accounting, a simplification of Linux's folio: every frame keeps its own counts, as
        if each subpage were mapped and referenced by itself (a PMD mapping holds one
        mapcount and one reference on each of the 512 frames; splitting the PMD into PTEs
        changes no count). Linux counts the references on the folio and the PMD mappings in
        its entire mapcount, so a reference on one subpage keeps all 512 allocated; here it
        keeps its own frame. A frame is still free exactly when nothing maps or references
        it, which is what the checker's use-after-free rule reads."""
        nr = int(nr)
        self._take_budget(nr, f"a huge page, {nr} frames")
        for _attempt in range(4):
            head = frames_alloc_huge(
                self.free_stack, self.meta, self.refcount, self.mapcount, self.pincount,
                self.flags, self.owner, self.contents, nr, int(owner),
                np.uint32(flags | FRAME_COMPOUND), bool(zero))
            if head:
                self.allocations += nr
                return int(head)
            self._grow(self.nfree + nr)     # doubling appends aligned free blocks
        raise AssertionError("frames_alloc_huge found no block after the table grew")

    def get(self, pfns) -> None:
        """Take one reference on each pfn (get_page)."""
        self._get(pfns, False, "get")

    def pin(self, pfns) -> None:
        """Pin each pfn: pincount += 1 and one reference (pin_user_pages)."""
        self._get(pfns, True, "pin")

    def _get(self, pfns, pin: bool, what: str) -> None:
        if type(pfns) is int:                   # one pfn: its own kernel, no pfn array
            errors = frames_get_one(self.meta, self.refcount, self.pincount, pfns, pin)
        else:
            errors = frames_get(self.meta, self.refcount, self.pincount, self._pfns(pfns), pin)
        if errors:
            self._raise_errors(what)

    def _put(self, pfns, unpin: bool) -> np.ndarray:
        if type(pfns) is int:                   # one pfn: its own kernel, no pfn array
            freed = frames_put_one(self.free_stack, self.meta, self.refcount, self.mapcount,
                                   self.pincount, self.flags, self.generation, self.owner,
                                   pfns, unpin)
            if freed:
                self.frees += 1
            if self.meta[F_NERR]:
                self._raise_errors("unpin" if unpin else "put")
            return np.array([freed], dtype=np.int64) if freed else np.empty(0, dtype=np.int64)
        pfns = self._pfns(pfns)
        out = self._one_out if pfns is self._one else np.empty(pfns.shape[0], dtype=np.int64)
        freed = frames_put(
            self.free_stack,
            self.meta,
            self.refcount,
            self.mapcount,
            self.pincount,
            self.flags,
            self.generation,
            self.owner,
            pfns,
            unpin,
            out,
        )
        self.frees += freed
        if self.meta[F_NERR]:
            self._raise_errors("unpin" if unpin else "put")
        return out[:freed].copy() if out is self._one_out else out[:freed]

    def put(self, pfns) -> np.ndarray:
        """Drop one reference from each pfn (put_page); returns the pfns that were freed."""
        return self._put(pfns, False)

    def unpin(self, pfns) -> np.ndarray:
        """Undo pin(): pincount -= 1 and drop the reference; returns the pfns freed."""
        return self._put(pfns, True)

    def inc_mapcount(self, pfns) -> None:
        self._mapcount(pfns, 1, "inc_mapcount")

    def dec_mapcount(self, pfns) -> None:
        self._mapcount(pfns, -1, "dec_mapcount")

    def _mapcount(self, pfns, delta: int, what: str) -> None:
        if type(pfns) is int:                   # one pfn: its own kernel, no pfn array
            errors = frames_mapcount_add_one(self.meta, self.refcount, self.mapcount, pfns,
                                             delta)
        else:
            errors = frames_mapcount_add(self.meta, self.refcount, self.mapcount,
                                         self._pfns(pfns), delta)
        if errors:
            self._raise_errors(what)

    def set_flags(self, pfns, bits: int) -> None:
        if isinstance(pfns, (int, np.integer)):
            self.flags[pfns] |= np.uint32(bits)
        else:
            self.flags[_pfn_array(pfns)] |= np.uint32(bits)

    def clear_flags(self, pfns, bits: int) -> None:
        mask = np.uint32(~bits & 0xFFFFFFFF)
        if isinstance(pfns, (int, np.integer)):
            self.flags[pfns] &= mask
        else:
            self.flags[_pfn_array(pfns)] &= mask

    def test_flags(self, pfn: int, bits: int) -> bool:
        return bool(int(self.flags[int(pfn)]) & bits)

    # -- checking ------------------------------------------------------------------------
    def check_invariants(self, strict: bool = False) -> list[str]:
        """Problems with the frame table, as readable strings (empty list: all good).

        Always: counters non-negative, pincount <= refcount, free stack sane (in range, no
        pfn 0, no duplicates), free frames have refcount/mapcount/pincount 0, owner -1 and no
        flags, allocated frames (not free, not pfn 0) have refcount >= 1, no error left
        pending. With strict (an MM that takes one reference per mapping, as Linux does):
        refcount >= mapcount + pincount.
        """
        problems: list[str] = []

        def report(mask, what):
            bad = np.nonzero(mask)[0]
            if len(bad):
                problems.append(
                    f"{what}: pfns {bad[:8].tolist()}" + (" ..." if len(bad) > 8 else "")
                )

        rc, mc, pc = self.refcount, self.mapcount, self.pincount
        report(rc < 0, "negative refcount")
        report(mc < 0, "negative mapcount")
        report(pc < 0, "negative pincount")
        report(pc > rc, "pincount > refcount")
        if strict:
            report(
                rc.astype(np.int64) < mc.astype(np.int64) + pc.astype(np.int64),
                "refcount < mapcount + pincount",
            )
        if self.meta[F_NERR]:
            problems.append(f"{int(self.meta[F_NERR])} frame error(s) left pending")
        nfree = self.nfree
        if not 0 <= nfree <= self.nframes - 1:
            problems.append(f"free count {nfree} outside [0, {self.nframes - 1}]")
            return problems
        stack = self.free_stack[:nfree]
        if ((stack <= 0) | (stack >= self.nframes)).any():
            problems.append("free stack holds pfn 0 or an out-of-range pfn")
            return problems
        if len(np.unique(stack)) != nfree:
            problems.append("a frame is on the free stack twice")
        is_free = np.zeros(self.nframes, dtype=bool)
        is_free[stack] = True
        report(is_free & (rc != 0), "free frame with references")
        report(is_free & ((mc != 0) | (pc != 0)), "free frame still mapped or pinned")
        report(is_free & (self.owner != NO_OWNER), "free frame with an owner")
        report(is_free & (self.flags != 0), "free frame with flags")
        allocated = ~is_free
        allocated[0] = False
        report(allocated & (rc <= 0), "allocated frame with refcount <= 0 (leaked or lost)")
        if rc[0] or mc[0] or pc[0]:
            problems.append("reserved pfn 0 has references")
        return problems
