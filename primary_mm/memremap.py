"""ZONE_DEVICE memory, from ``mm/memremap.c``: ``memremap_pages`` and ``struct dev_pagemap``
of type ``MEMORY_DEVICE_PRIVATE``.

A device driver (``lib/test_hmm.c``'s dmirror, nouveau, amdgpu's SVM) hands device memory to
the kernel as pages the CPU cannot address. Such a page is mapped in a process only through
a *device-private entry* (``PTE_DEVICE_PRIVATE``), installed by ``migrate_vma`` (see
:mod:`primary_mm.migrate_device`). A CPU access to one faults (``do_swap_page``) and calls
the pagemap's ``migrate_to_ram`` to bring the page back to system memory; ``hmm_range_fault``
reports it instead to the device that owns it (``dev_private_owner``).

Device pages are frames of the one frame table, flagged ``FRAME_DEVICE_PRIVATE``: their
``contents`` is the device memory, their reference count and generation work as for any
frame, so a device translation kept after a device page was freed is a use-after-free the
oracle sees. They are never on the LRU: reclaim, NUMA migration and KSM pass them by.
"""

from __future__ import annotations

import itertools
import types

from primary_mm.frames import FRAME_ANON, FRAME_DEVICE_PRIVATE, FRAME_LOCKED, NO_OWNER
from smmu.base.errors import UsageError

_ids = itertools.count(1)

#: what ``migrate_to_ram`` returns when it cannot bring the page back (the fault is a SIGBUS)
VM_FAULT_SIGBUS = 0x2


class Vmf:
    """``struct vm_fault`` as ``migrate_to_ram`` sees it: ``mm``, ``vma``, ``address`` (page
    aligned) and ``page`` (the device page faulted on)."""

    __slots__ = ("mm", "vma", "address", "page")

    def __init__(self, mm, vma, address, page):
        self.mm, self.vma, self.address, self.page = mm, vma, address, page

    def __repr__(self):
        return f"<Vmf {self.mm.name} {self.address:#x} page={self.page}>"


class DevPagemap:
    """``struct dev_pagemap`` (``MEMORY_DEVICE_PRIVATE``) of one device.

    ``owner``: what ``migrate_vma.pgmap_owner`` and ``hmm_range.dev_private_owner`` are
    compared with (dmirror: its ``dmirror_device``); ``migrate_to_ram(vmf)``: the
    ``dev_pagemap_ops`` callback, a generator run by the CPU fault on one of its pages
    (``vmf.page`` is the device page, ``vmf.vma`` / ``vmf.address`` where it faulted); it
    returns 0 or ``VM_FAULT_SIGBUS``. ``pages`` maps each live device page to its frame
    generation at allocation."""

    def __init__(self, memory, owner, migrate_to_ram, name: str | None = None):
        if not callable(migrate_to_ram):
            raise UsageError(f"memremap_pages: migrate_to_ram must be a callable (the "
                             f"dev_pagemap_ops callback), got {migrate_to_ram!r}")
        self.id = next(_ids)
        self.memory = memory
        self.owner = owner
        self.migrate_to_ram = migrate_to_ram
        self.name = name or f"pgmap{self.id}"
        self.pages: dict[int, int] = {}
        self.allocated = 0

    def __repr__(self):
        return (f"<DevPagemap {self.name} owner={getattr(self.owner, 'name', self.owner)} "
                f"{len(self.live_pages())} device pages>")

    def fault(self, vmf: Vmf):
        """Run ``migrate_to_ram(vmf)`` (a generator, or a plain callable) and return its
        result (0 or ``VM_FAULT_SIGBUS``)."""
        ret = self.migrate_to_ram(vmf)
        if isinstance(ret, types.GeneratorType):
            ret = yield from ret
        return ret or 0

    def alloc_page(self) -> int:
        """A free device page (``dmirror_devmem_alloc_page``), initialised as
        ``zone_device_page_init`` does: refcount 1 and locked. ``migrate_vma_finalize``
        unlocks it and drops that reference once the page is mapped."""
        frames = self.memory.frames
        pfn = frames.alloc_one(owner=NO_OWNER, flags=FRAME_DEVICE_PRIVATE | FRAME_ANON
                               | FRAME_LOCKED, zero=False)
        self.pages[pfn] = int(frames.generation[pfn])
        self.memory.device_pages[pfn] = self
        self.allocated += 1
        return pfn

    def owns(self, pfn: int) -> bool:
        """Is ``pfn`` a live device page of this pagemap (not freed since)?"""
        gen = self.pages.get(int(pfn))
        frames = self.memory.frames
        return gen is not None and int(frames.generation[pfn]) == gen and \
            int(frames.refcount[pfn]) > 0

    def live_pages(self) -> list[int]:
        """The device pages of this pagemap still allocated (freed ones are forgotten)."""
        dead = [p for p in self.pages if not self.owns(p)]
        for p in dead:
            del self.pages[p]
            if self.memory.device_pages.get(p) is self:
                del self.memory.device_pages[p]
        return sorted(self.pages)


class Memremap:
    """``memremap_pages`` and the page -> pagemap lookup, mixed into
    :class:`primary_mm.memory.Memory`."""

    def memremap_pages(self, owner, migrate_to_ram, name: str | None = None) -> DevPagemap:
        """``memremap_pages``: device-private memory for the device ``owner``, whose CPU
        faults go to ``migrate_to_ram(vmf)``. Needs the modern notifier API (HMM and
        ``MMU_NOTIFY_MIGRATE`` with an owner do not exist in the older generations)."""
        if self.api != "modern":
            raise UsageError(f"device-private memory needs notifier_api='modern' (HMM "
                             f"migration with an owner, Linux 5.9+), not {self.api!r}")
        pgmap = DevPagemap(self, owner, migrate_to_ram, name)
        self.pgmaps.append(pgmap)
        return pgmap

    def page_pgmap(self, pfn: int) -> DevPagemap | None:
        """``page->pgmap`` of a live device-private page, else None."""
        pgmap = self.device_pages.get(int(pfn))
        if pgmap is None or not pgmap.owns(pfn):
            return None
        return pgmap
