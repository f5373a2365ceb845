"""Page migration, from ``mm/migrate.c``: unmap with migration entries (``try_to_migrate``,
``mm/rmap.c``), copy, ``remove_migration_ptes``.

:class:`Migrate` is mixed into :class:`primary_mm.memory.Memory`.
"""

from __future__ import annotations

from primary_mm.frames import (FRAME_ANON, FRAME_ANON_EXCLUSIVE, FRAME_COMPOUND,
                               FRAME_DEVICE_PRIVATE, FRAME_FILE,
                               FRAME_KSM, FRAME_LOCKED, FRAME_SWAPCACHE, FRAME_ZERO)
from primary_mm.rmap import migration_entry
from smmu.base.pte import PTE_SWP_EXCLUSIVE
from smmu.base.errors import UsageError
from smmu.notifier import Event
from primary_mm.operation import mm_operation


class Migrate:
    """Migrating pages to new frames (``mm/migrate.c``)."""

    @mm_operation
    def migrate(self, mm, addr, length, owner=None):
        """Migrate the pages mapped in the range to new frames (``migrate_pages``, as NUMA
        balancing, compaction and memory offlining do): lock, unmap with migration entries
        (``try_to_migrate_one``: v2008 ``invalidate_page``; otherwise a one-page start/end
        ``MMU_NOTIFY_CLEAR`` with no owner), copy, ``remove_migration_ptes``. A page with
        extra references (GUP, pins) is put back unmigrated, as ``folio_migrate_mapping``
        refuses it. CPU and GUP accesses meanwhile wait. Returns the number of pages
        migrated.

        ``owner`` is refused: the reverse-map walk names no owner (6.8 mm/rmap.c
        ``try_to_migrate_one``: ``mmu_notifier_range_init(&range, MMU_NOTIFY_CLEAR, 0, ...)``);
        only a driver's own ``migrate_vma_setup`` sends ``MMU_NOTIFY_MIGRATE`` with its
        ``pgmap_owner`` (``migrate_vma_collect``), and that driver re-points its mirror
        itself (``dmirror_migrate_finalize_and_map``). A device that skipped an owned range
        without doing so would keep translations of the freed pages."""
        if owner is not None:
            raise UsageError(
                f"migrate(owner={getattr(owner, 'name', owner)!r}): the reverse-map migration "
                "sends MMU_NOTIFY_CLEAR with no owner (try_to_migrate_one); a MIGRATE range "
                "with an owner is the owner's own migrate_vma, which updates its mirror: call "
                "the driver's migrate_to_device (or sim.memory.migrate_vma_setup with "
                "pgmap_owner), or drop owner=")
        self._check_mm(mm, "migrate")
        work = list(reversed(self._range_pages(mm, addr, length, "migrate")))
        frames = self.frames
        done = 0
        seen = set()
        while work:
            pfn = work.pop()
            if pfn in seen:
                continue
            seen.add(pfn)
            yield
            if frames.refcount[pfn] <= 0 or \
                    frames.flags[pfn] & (FRAME_KSM | FRAME_ZERO | FRAME_DEVICE_PRIVATE) or \
                    not frames.flags[pfn] & (FRAME_ANON | FRAME_FILE):
                continue                       # device pages are not on the LRU
            # take the reference before lock_page may sleep, as isolation does with
            # folio_try_get (mm/migrate.c): a page freed while we slept must not be touched
            frames.get(pfn)                                # isolate
            yield from self.lock_page(pfn)
            split = None
            try:
                # it may have become a KSM page while we slept on the page lock
                if frames.flags[pfn] & (FRAME_KSM | FRAME_ZERO):
                    continue
                if self.is_hugetlb_page(pfn):              # unmap_and_move_huge_page
                    done += yield from self._migrate_hugetlb(pfn)
                elif frames.flags[pfn] & FRAME_COMPOUND:   # a huge page: whole or split
                    moved = yield from self._migrate_huge(pfn)
                    if isinstance(moved, list):
                        split = moved
                    else:
                        done += moved
                elif (yield from self._migrate_page(pfn)):
                    done += 1
            finally:
                self.unlock_page(pfn)
                frames.put(pfn)
            if split:
                seen.discard(pfn)                          # itself a small page now
                work.extend(reversed(split))               # its pages, one by one
        self.sched.stats["migrated"] += done
        return done

    def _migrate_page(self, old):
        frames = self.frames
        mapping, index = self.page_mapping(old)
        if mapping is None:
            return False
        # PageAnonExclusive travels in the migration entries (remove_migration_pte restores
        # it from them), not in the new page's flags
        keep = int(frames.flags[old]) & ~(FRAME_LOCKED | FRAME_SWAPCACHE | FRAME_ANON_EXCLUSIVE)
        new = frames.alloc_one(owner=int(frames.owner[old]), flags=keep, zero=False)
        anon = bool(keep & FRAME_ANON)

        def make(vma, p):
            # try_to_migrate_one: "else if (anon_exclusive) entry =
            # make_readable_exclusive_migration_entry(...)"
            excl = PTE_SWP_EXCLUSIVE if self.anon_exclusive and \
                frames.test_flags(old, FRAME_ANON_EXCLUSIVE) else 0
            return migration_entry(old, p) | excl
        yield from self._try_to_unmap(old, mapping, index, make, Event.CLEAR, share=anon)
        if not self.migrate_refs_ok(old, mapping, index):
            # folio_migrate_mapping: -EAGAIN; put the old page back
            yield from self._remove_migration_ptes(old, old, mapping, index)
            frames.put(new)
            return False
        frames.contents[new] = frames.contents[old]        # migrate_page_copy
        self.sched.charge("page_copy")
        yield
        frames.contents[new] = frames.contents[old]
        self.migrate_mapping(old, new, mapping, index)
        yield from self._remove_migration_ptes(old, new, mapping, index)
        frames.put(new)                                    # drop the allocation reference
        return True

    def migrate_refs_ok(self, old, mapping, index, extra: int = 0) -> bool:
        """``folio_migrate_mapping``'s reference check: ``old`` is mapped nowhere and only
        the migrator (``1 + extra``: dmirror's fault page holds one more), the page cache
        and the swap cache hold it; a GUP reference or a pin makes it -EAGAIN."""
        frames = self.frames
        file = getattr(mapping, "file", None)
        expected = 1 + extra + (file is not None and file.cache.get(index) == old) + \
            (self.swap.slot_of.get(old) is not None)
        return frames.mapcount[old] == 0 and frames.refcount[old] == expected

    def migrate_mapping(self, old, new, mapping, index) -> None:
        """The rest of ``folio_migrate_mapping`` / ``folio_migrate_flags``: the page-cache
        slot or swap-cache slot and ``page->mapping`` / ``index`` move from ``old`` to
        ``new`` (the contents were copied by the caller)."""
        frames = self.frames
        swap = self.swap
        file = getattr(mapping, "file", None)
        if file is not None and file.cache.get(index) == old:
            file.cache[index] = new
            frames.get(new)
            frames.put(old)
        slot = swap.slot_of.get(old)
        if slot is not None:
            swap.page[slot] = new
            del swap.slot_of[old]
            swap.slot_of[new] = slot
            frames.set_flags(new, FRAME_SWAPCACHE)
            frames.clear_flags(old, FRAME_SWAPCACHE)
            frames.get(new)
            frames.put(old)
        self.set_page_mapping(new, mapping, index)
