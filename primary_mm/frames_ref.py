"""Pure-Python reference of the frame-table kernels in ``primary_mm.frames``.

Same names, signatures and semantics (including the error recording in meta), written as
plain loops over Python ints; the hypothesis tests run both on copies of one table.
"""

from __future__ import annotations

from primary_mm.frames import (
    ERR_BAD_PAGE_STATE,
    ERR_BAD_PFN,
    ERR_FREE_FRAME,
    ERR_MAPCOUNT_UNDERFLOW,
    ERR_PINCOUNT_UNDERFLOW,
    ERR_PUT_PINNED,
    F_BAD_PFN,
    F_ERR_CODE,
    F_NERR,
    F_NFREE,
)


def _error(meta, pfn, code):
    if meta[F_NERR] == 0:
        meta[F_BAD_PFN] = pfn
        meta[F_ERR_CODE] = code
    meta[F_NERR] += 1


def frames_alloc_huge(
    free_stack, meta, refcount, mapcount, pincount, flags, owner, contents, nr, owner_id,
    flag_bits, zero,
):
    n = len(refcount)
    head = next((b for b in range(nr, n - nr + 1, nr)
                 if all(int(refcount[b + k]) == 0 for k in range(nr))), 0)
    if head == 0:
        return 0
    keep = [int(p) for p in free_stack[: int(meta[F_NFREE])] if not head <= int(p) < head + nr]
    for i, p in enumerate(keep):
        free_stack[i] = p
    meta[F_NFREE] = len(keep)
    for pfn in range(head, head + nr):
        refcount[pfn] = 1
        mapcount[pfn] = 0
        pincount[pfn] = 0
        flags[pfn] = int(flag_bits)
        owner[pfn] = owner_id
        if zero:
            contents[pfn] = 0
    return head


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
    if n > meta[F_NFREE]:
        return 0
    for k in range(n):
        top = int(meta[F_NFREE]) - 1
        pfn = int(free_stack[top])
        meta[F_NFREE] = top
        refcount[pfn] = 1
        mapcount[pfn] = 0
        pincount[pfn] = 0
        flags[pfn] = int(flag_bits)
        owner[pfn] = owner_id
        if zero:
            contents[pfn] = 0
        out[k] = pfn
    return n


def _bad(meta, refcount, pfn):
    """Record and return True if pfn cannot take a reference operation."""
    if not 0 < pfn < len(refcount):
        _error(meta, pfn, ERR_BAD_PFN)
        return True
    if refcount[pfn] <= 0:
        _error(meta, pfn, ERR_FREE_FRAME)
        return True
    return False


def frames_get(meta, refcount, pincount, pfns, pin):
    errors = 0
    for pfn in pfns:
        pfn = int(pfn)
        if _bad(meta, refcount, pfn):
            errors += 1
            continue
        refcount[pfn] += 1
        if pin:
            pincount[pfn] += 1
    return errors


def frames_put(
    free_stack, meta, refcount, mapcount, pincount, flags, generation, owner, pfns, unpin, out_freed
):
    freed = 0
    for pfn in pfns:
        pfn = int(pfn)
        if _bad(meta, refcount, pfn):
            continue
        if unpin:
            if pincount[pfn] <= 0:
                _error(meta, pfn, ERR_PINCOUNT_UNDERFLOW)
                continue
            pincount[pfn] -= 1
        elif refcount[pfn] <= pincount[pfn]:
            _error(meta, pfn, ERR_PUT_PINNED)
            continue
        refcount[pfn] -= 1
        if refcount[pfn] != 0:
            continue
        if mapcount[pfn] != 0 or pincount[pfn] != 0:
            _error(meta, pfn, ERR_BAD_PAGE_STATE)
            mapcount[pfn] = 0
            pincount[pfn] = 0
        generation[pfn] = (int(generation[pfn]) + 1) & 0xFFFFFFFF
        owner[pfn] = -1
        flags[pfn] = 0
        free_stack[meta[F_NFREE]] = pfn
        meta[F_NFREE] += 1
        out_freed[freed] = pfn
        freed += 1
    return freed


def frames_mapcount_add(meta, refcount, mapcount, pfns, delta):
    errors = 0
    for pfn in pfns:
        pfn = int(pfn)
        if _bad(meta, refcount, pfn):
            errors += 1
            continue
        if mapcount[pfn] + delta < 0:
            _error(meta, pfn, ERR_MAPCOUNT_UNDERFLOW)
            errors += 1
            continue
        mapcount[pfn] += delta
    return errors
