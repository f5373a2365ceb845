"""``mm/truncate.c``: ``truncate_setsize`` + ``truncate_pagecache`` (``unmap_mapping_range``).

:class:`Truncate` is mixed into :class:`primary_mm.memory.Memory`.
"""

from __future__ import annotations

from primary_mm.frames import FRAME_DIRTY
from smmu.base.constants import PAGE_SHIFT, PAGE_SIZE
from smmu.base.errors import InvalidArgument, UsageError
from smmu.notifier import Event
from primary_mm.operation import mm_operation


class Truncate:
    """Truncating a file (``mm/truncate.c``)."""

    @mm_operation
    def truncate(self, file, size):
        """``truncate_setsize`` + ``truncate_pagecache``: shrink (or grow) ``file`` to
        ``size`` bytes. Mappings of the pages beyond the new end are zapped
        (``unmap_mapping_range`` over i_mmap: start/end per VMA, CLEAR as in
        ``zap_page_range_single``; private COW copies too) and those pages leave the page
        cache. Later accesses beyond the end raise SegmentationFault (SIGBUS)."""
        self._check_file(file, "truncate")
        if file.hugetlb:
            raise UsageError(f"truncate({file.name}): truncating a hugetlbfs file "
                             "(hugetlb_vmdelete_list) is not modelled")
        try:
            size = int(size)
        except (TypeError, ValueError):
            raise InvalidArgument(f"truncate: size must be an integer, got {size!r}") from None
        if size < 0:
            raise InvalidArgument(f"truncate: size {size} is negative")
        npages = (size + PAGE_SIZE - 1) >> PAGE_SHIFT
        if npages >= file.npages:
            file.resize(npages)
            return
        file.resize(npages)                                # i_size_write first
        lk = file.mapping.lock
        yield from lk.lock_read()
        try:
            for vma in file.mapping.vmas_overlapping(npages, 1 << 62):
                s = vma.address_of(npages) if vma.pgoff < npages else vma.start
                if s is None or vma.mm.exited:
                    continue
                # unmap_mapping_range_vma -> zap_page_range_single
                yield from vma.mm._zap(s, vma.end, Event.CLEAR)
        finally:
            lk.unlock_read()
        self.sched.observer.file_truncate(file, npages)
        frames = self.frames
        for pgoff in sorted(p for p in file.cache if p >= npages):   # truncate_inode_pages
            pfn = file.cache.pop(pgoff)
            frames.clear_flags(pfn, FRAME_DIRTY)
            frames.put(pfn)
        yield
