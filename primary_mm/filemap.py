"""Files: a backing store of page values plus the page cache over it.

``File.contents`` (uint64 per page) is the backing store (what is on disk); ``cache`` maps a
page offset to the frame holding it in memory (``find_get_page``). A cached frame carries
FRAME_FILE, one reference held by the cache, and FRAME_DIRTY when it is newer than the store;
``writeback`` cleans it. Shared anonymous mappings are backed by an internal shmem file
(``shmem=True``) so that they alias across fork, as in Linux.
"""

from __future__ import annotations

import itertools

import numpy as np

from primary_mm.frames import FRAME_DIRTY
from primary_mm.rmap import AddressSpace
from smmu.base.constants import PAGE_SIZE

_ids = itertools.count(1)


class File:
    """A file of ``npages`` pages. ``size`` in bytes is ``npages * PAGE_SIZE``."""

    def __init__(self, memory, name: str, npages: int, fill=None, shmem: bool = False):
        self.id = next(_ids)
        self.memory = memory
        self.name = name
        self.shmem = shmem
        #: a hugetlbfs file (:mod:`primary_mm.hugetlb`): read in and mapped by 2 MiB page
        self.hugetlb = False
        self.contents = np.zeros(npages, dtype=np.uint64)
        if fill is not None:
            if callable(fill):
                self.contents[:] = np.array([int(fill(i)) for i in range(npages)],
                                            dtype=np.uint64)
            else:
                self.contents[:] = np.uint64(int(fill))
        self.cache: dict[int, int] = {}
        self.mapping = AddressSpace(memory.sched, memory.rmap_locks, self)
        self.writebacks = 0

    @property
    def npages(self) -> int:
        return self.contents.shape[0]

    @property
    def size(self) -> int:
        return self.npages * PAGE_SIZE

    def resize(self, npages: int) -> None:
        old = self.npages
        if npages == old:
            return
        c = np.zeros(npages, dtype=np.uint64)
        c[: min(old, npages)] = self.contents[: min(old, npages)]
        self.contents = c

    def value(self, pgoff: int) -> int | None:
        """What a read of page ``pgoff`` returns now (cache first), or None beyond EOF."""
        if pgoff >= self.npages or pgoff < 0:
            return None
        pfn = self.cache.get(pgoff)
        if pfn is not None:
            return int(self.memory.frames.contents[pfn])
        return int(self.contents[pgoff])

    def dirty_pages(self) -> list[int]:
        fl = self.memory.frames.flags
        return sorted(p for p, pfn in self.cache.items() if int(fl[pfn]) & FRAME_DIRTY)

    def __repr__(self):
        kind = "shmem " if self.shmem else ""
        return (f"<File {kind}{self.name!r} {self.npages} pages, {len(self.cache)} cached, "
                f"{len(self.dirty_pages())} dirty, {len(self.mapping.i_mmap)} mappings>")
