"""Page migration, from ``mm/migrate.c``: unmap with migration entries, copy,
``remove_migration_ptes``.

:class:`Migrate` is mixed into :class:`primary_mm.memory.Memory`.
"""

from __future__ import annotations

from primary_mm.frames import (FRAME_ANON, FRAME_FILE, FRAME_KSM, FRAME_LOCKED, FRAME_SWAPCACHE,
                               FRAME_ZERO)
from smmu.base.pte import PTE_MIGRATION, mk_pte
from smmu.notifier import Event


class Migrate:
    """Migrating pages to new frames (``mm/migrate.c``)."""

    def migrate(self, mm, addr, length, owner=None):
        """Migrate the pages mapped in the range to new frames: lock, unmap with migration
        entries (``try_to_migrate_one``: v2008 ``invalidate_page``; range_only start/end;
        modern start/end MIGRATE with ``owner``), copy, ``remove_migration_ptes``. A page
        with extra references (GUP, pins) is put back unmigrated, as
        ``migrate_page_move_mapping`` refuses it. CPU and GUP accesses meanwhile wait.
        Returns the number of pages migrated."""
        self._check_mm(mm, "migrate")
        pages = self._range_pages(mm, addr, length, "migrate")
        frames = self.frames
        done = 0
        for pfn in pages:
            yield
            if frames.refcount[pfn] <= 0 or frames.flags[pfn] & (FRAME_KSM | FRAME_ZERO) or \
                    not frames.flags[pfn] & (FRAME_ANON | FRAME_FILE):
                continue
            # take the reference before lock_page may sleep, as isolation does with
            # folio_try_get (mm/migrate.c): a page freed while we slept must not be touched
            frames.get(pfn)                                # isolate
            yield from self.lock_page(pfn)
            try:
                # it may have become a KSM page while we slept on the page lock
                if frames.flags[pfn] & (FRAME_KSM | FRAME_ZERO):
                    continue
                if (yield from self._migrate_page(pfn, owner)):
                    done += 1
            finally:
                self.unlock_page(pfn)
                frames.put(pfn)
        self.sched.stats["migrated"] += done
        return done

    def _migrate_page(self, old, owner):
        frames = self.frames
        swap = self.swap
        mapping, index = self.page_mapping(old)
        if mapping is None:
            return False
        keep = int(frames.flags[old]) & ~FRAME_LOCKED & ~FRAME_SWAPCACHE
        new = frames.alloc_one(owner=int(frames.owner[old]), flags=keep, zero=False)
        yield from self._try_to_unmap(old, mapping, index,
                                      lambda vma, p: mk_pte(old, PTE_MIGRATION),
                                      Event.MIGRATE, owner=owner)
        file = getattr(mapping, "file", None)
        slot = swap.slot_of.get(old)
        expected = 1 + (file is not None and file.cache.get(index) == old) + (slot is not None)
        if frames.mapcount[old] != 0 or frames.refcount[old] != expected:
            # migrate_page_move_mapping: -EAGAIN; put the old page back
            yield from self._remove_migration_ptes(old, old, mapping, index)
            frames.put(new)
            return False
        frames.contents[new] = frames.contents[old]        # migrate_page_copy
        self.sched.charge("page_copy")
        yield
        frames.contents[new] = frames.contents[old]
        if file is not None and file.cache.get(index) == old:
            file.cache[index] = new
            frames.get(new)
            frames.put(old)
        if slot is not None:
            swap.page[slot] = new
            del swap.slot_of[old]
            swap.slot_of[new] = slot
            frames.set_flags(new, FRAME_SWAPCACHE)
            frames.clear_flags(old, FRAME_SWAPCACHE)
            frames.get(new)
            frames.put(old)
        self.set_page_mapping(new, mapping, index)
        yield from self._remove_migration_ptes(old, new, mapping, index)
        frames.put(new)                                    # drop the allocation reference
        return True
