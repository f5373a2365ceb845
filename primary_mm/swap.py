"""Swap space: slots that keep a page's contents, with a use count and a swap cache.

``count[slot]`` is Linux's ``swap_map``: how many swap PTEs refer to the slot. ``page[slot]``
is the swap cache (``0`` = none): while a page being reclaimed is still mapped somewhere, or
after a shared swap-in, swap PTEs resolve to that frame instead of the slot contents. A
frame in the swap cache carries FRAME_SWAPCACHE and one reference held by the cache.
All batch operations are numpy expressions over slot arrays (no per-page Python loop).
"""

from __future__ import annotations

import numpy as np

from primary_mm.frames import FRAME_LOCKED, FRAME_SWAPCACHE


#: a fresh swap space's free-slot stack, by size (copied: a list copy costs less than range)
_FREE: dict[int, list] = {}


class SwapSpace:
    """Swap slots. Slot 0 is never used (a swap PTE with slot 0 would read as "none")."""

    def __init__(self, frames, nslots: int = 256):
        self.frames = frames
        n = max(int(nslots), 2)
        self.contents = np.zeros(n, dtype=np.uint64)
        self.count = np.zeros(n, dtype=np.int32)
        self.page = np.zeros(n, dtype=np.int64)
        self.used = np.zeros(n, dtype=bool)
        free = _FREE.get(n)
        if free is None:
            free = _FREE[n] = list(range(n - 1, 0, -1))
        self._free = free.copy()               # slot stack, lowest on top
        self.slot_of: dict[int, int] = {}          # swap-cache pfn -> slot
        self.writes = 0
        self.reads = 0

    @property
    def nslots(self) -> int:
        return self.contents.shape[0]

    @property
    def nused(self) -> int:
        return int(self.used.sum())

    def _grow(self):
        old = self.nslots
        new = old * 2
        for name in ("contents", "count", "page", "used"):
            a = getattr(self, name)
            b = np.zeros(new, dtype=a.dtype)
            b[:old] = a
            setattr(self, name, b)
        self._free.extend(range(new - 1, old - 1, -1))

    def alloc(self) -> int:
        """``get_swap_page``: a free slot with count 0."""
        if not self._free:
            self._grow()
        slot = self._free.pop()
        self.used[slot] = True
        self.count[slot] = 0
        self.page[slot] = 0
        return slot

    def _release_slot(self, slot: int) -> None:
        self.used[slot] = False
        self.count[slot] = 0
        self.page[slot] = 0
        self._free.append(slot)

    # -- swap cache ---------------------------------------------------------------------------
    def add_to_swap_cache(self, slot: int, pfn: int) -> None:
        self.page[slot] = pfn
        self.slot_of[pfn] = slot
        self.frames.get(pfn)
        self.frames.set_flags(pfn, FRAME_SWAPCACHE)

    def delete_from_swap_cache(self, slot: int) -> None:
        """Drop the cache's page (and its reference); frees the slot if no PTE uses it."""
        pfn = int(self.page[slot])
        if pfn:
            self.page[slot] = 0
            self.slot_of.pop(pfn, None)
            self.frames.clear_flags(pfn, FRAME_SWAPCACHE)
            self.frames.put(pfn)
        if self.count[slot] == 0:
            self._release_slot(slot)

    # -- batch reference counting -------------------------------------------------------------
    def dup(self, slots) -> None:
        """``swap_duplicate`` for each slot (fork copies swap PTEs)."""
        slots = np.asarray(slots, dtype=np.int64)
        if len(slots):
            np.add.at(self.count, slots, 1)

    def free(self, slots) -> None:
        """``free_swap_and_cache`` for each slot: count -= 1; a slot reaching 0 loses its
        swap-cache page (if any) and is freed. A locked swap-cache page stays in the cache
        and keeps its slot (``__try_to_reclaim_swap`` only ``folio_trylock``s, mm/swapfile.c):
        reclaim, migration or a swap-in holds it and is still working with that slot."""
        slots = np.asarray(slots, dtype=np.int64)
        if not len(slots):
            return
        np.subtract.at(self.count, slots, 1)
        dead = np.unique(slots[self.count[slots] <= 0])
        if not len(dead):
            return
        pages = self.page[dead]
        locked = (pages != 0) & ((self.frames.flags[pages] & FRAME_LOCKED) != 0)
        if locked.any():
            dead, pages = dead[~locked], pages[~locked]
        cached = pages[pages != 0]
        if len(cached):
            for p in cached.tolist():
                self.slot_of.pop(p, None)
            self.frames.clear_flags(cached, FRAME_SWAPCACHE)
            self.frames.put(cached)
        self.page[dead] = 0
        self.count[dead] = 0
        self.used[dead] = False
        self._free.extend(dead.tolist())

    def free_swap_cache(self, pfns) -> None:
        """``free_swap_cache`` (from ``free_pages_and_swap_cache`` as a zap drops the pages):
        a swap-cache page no longer mapped, not locked, whose slot no swap entry uses any
        more (left so by :meth:`free` while it was locked), leaves the cache, freeing the
        slot (``folio_free_swap``). ``pfns``: the zapped pages, mapcounts already dropped.
        Nothing to do while the swap cache is empty (every zap of a load that never
        swapped: the mask and the sort over the batch's pages are skipped)."""
        if not self.slot_of:
            return
        pfns = np.asarray(pfns, dtype=np.int64)
        f = self.frames
        pfns = np.unique(pfns[(f.flags[pfns] & (FRAME_SWAPCACHE | FRAME_LOCKED))
                              == FRAME_SWAPCACHE])
        for pfn in pfns[f.mapcount[pfns] == 0].tolist():
            slot = self.slot_of.get(pfn)
            if slot is not None and self.count[slot] == 0:
                self.delete_from_swap_cache(slot)

    def value(self, slot: int) -> int:
        """What a read through a swap PTE of ``slot`` would return."""
        pfn = int(self.page[slot])
        if pfn:
            return int(self.frames.contents[pfn])
        return int(self.contents[slot])

    def check_invariants(self) -> list[str]:
        problems = []
        if (self.count < 0).any():
            problems.append(f"negative swap count: slots {np.nonzero(self.count < 0)[0][:8]}")
        stale = np.nonzero(self.used & (self.count == 0) & (self.page == 0))[0]
        if len(stale):
            problems.append(f"swap slots in use with no user: {stale[:8].tolist()}")
        free = np.asarray(self._free, dtype=np.int64)
        twice = np.unique(free[self.used[free]]).tolist() + \
            [int(s) for s, n in zip(*np.unique(free, return_counts=True)) if n > 1]
        if twice:
            problems.append(f"swap slots on the free list while in use or twice (freed "
                            f"twice?): {sorted(set(twice))[:8]}")
        return problems

    def __repr__(self):
        return (f"<SwapSpace {self.nused} of {self.nslots - 1} slots used, "
                f"{len(self.slot_of)} in swap cache>")
