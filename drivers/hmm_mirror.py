"""A device mirroring a process's page tables with an interval notifier and HMM, with its
own device-private memory.

Models ``lib/test_hmm.c``'s dmirror (6.8): ``dmirror_fops_open`` inserting the interval
notifier over the whole address space, ``dmirror_interval_invalidate`` (with the owner skip
for its own migrations), ``dmirror_fault`` / ``dmirror_range_fault`` / ``dmirror_do_fault``,
the device memory of ``dmirror_allocate_chunk`` (``memremap_pages``, MEMORY_DEVICE_PRIVATE)
and the ioctls the kernel's selftests drive (``tools/testing/selftests/mm/hmm-tests.c``):
READ, WRITE, MIGRATE_TO_DEV, MIGRATE_TO_SYS, EXCLUSIVE, CHECK_EXCLUSIVE, SNAPSHOT, RELEASE.
It is the pattern nouveau_svm.c, amdgpu_hmm.c and mlx5's odp.c follow, on ``mm/hmm.c``
(``hmm_range_fault``), ``mm/migrate_device.c`` (``migrate_vma_*``) and ``mm/mmu_notifier.c``
(``mmu_interval_read_begin`` / ``read_retry`` / ``set_seq``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drivers._common import device_gone, page_of, user_window, vpn_of, vpn_span
from primary_mm.hmm import (HMM_PFN_ERROR, HMM_PFN_REQ_FAULT, HMM_PFN_REQ_WRITE, HMM_PFN_VALID,
                            HMM_PFN_WRITE, HmmRange, hmm_pfn_to_map_order, hmm_pfn_to_pfn)
from primary_mm.memremap import VM_FAULT_SIGBUS
from primary_mm.migrate_device import (MIGRATE_CHUNK, MIGRATE_PFN_MIGRATE, MIGRATE_PFN_VALID,
                                       MIGRATE_PFN_WRITE, MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
                                       MIGRATE_VMA_SELECT_SYSTEM, MigrateVma, migrate_pfn,
                                       migrate_pfn_to_page)
from smmu.base.constants import (EBUSY, EFAULT, EINVAL, ENOENT, EPERM, HPAGE_PMD_ORDER,
                                 PAGE_SHIFT, PAGE_SIZE)
from smmu.base.errors import SegmentationFault
from smmu.notifier import (MMUIntervalNotifier, mmu_interval_notifier_insert,
                           mmu_interval_notifier_remove, mmu_interval_read_begin,
                           mmu_interval_read_retry, mmu_interval_set_seq)
from smmu.notifier import Event, MMUNotifier
from smmu.devices.shadow import ShadowPageTable

# HMM_DMIRROR_PROT_* (lib/test_hmm_uapi.h): what HMM_DMIRROR_SNAPSHOT reports per page
HMM_DMIRROR_PROT_ERROR = 0xFF
HMM_DMIRROR_PROT_NONE = 0x00
HMM_DMIRROR_PROT_READ = 0x01
HMM_DMIRROR_PROT_WRITE = 0x02
HMM_DMIRROR_PROT_PMD = 0x04
HMM_DMIRROR_PROT_ZERO = 0x10
HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL = 0x20
HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE = 0x30


@dataclass
class DmirrorCmd:
    """``struct hmm_dmirror_cmd`` after an ioctl: ``ret`` (0 or -errno), ``cpages`` (pages
    processed), ``faults`` (fault passes), ``data`` (the values read or migrated, one per
    page, as the bounce buffer returns them) or the snapshot's ``HMM_DMIRROR_PROT_*``."""

    ret: int
    cpages: int = 0
    faults: int = 0
    data: list = field(default_factory=list)


class _DmirrorInterval(MMUIntervalNotifier):
    """``dmirror->notifier``: forwards ``invalidate`` to the driver."""

    def invalidate(self, range, cur_seq):
        return self.owner.interval_invalidate(range, cur_seq)


class HMM_MIRROR(MMUNotifier):
    """dmirror: a device page table (a :class:`smmu.shadow.ShadowPageTable`) filled from
    ``hmm_range_fault`` snapshots and kept coherent by the collision-retry protocol, and a
    pagemap of device-private memory the device can migrate pages to.

    Fault (:meth:`fault`, ``dmirror_range_fault``)::

        loop:
            seq = mmu_interval_read_begin(notifier)      # sleeps while invalidating
            mmap_read_lock; hmm_range_fault(range); ...  # faults in; NO reference kept;
                                                         # our own device pages: reported
            lock(mutex)
            if mmu_interval_read_retry(notifier, seq):   # an invalidation ran: retry
                unlock; continue
            program the device PTEs (writable if HMM_PFN_WRITE); unlock; done

    Invalidate (:meth:`interval_invalidate`): a MIGRATE this device owns is skipped (it
    re-points its PTEs itself, :meth:`migrate_to_device`); a non-blockable range may not
    sleep: ``mutex_trylock`` or return False (the OOM reaper then skips the range); else take
    the mutex; ``mmu_interval_set_seq``; erase the device PTEs of the range; unlock.

    Device memory (:meth:`migrate_to_device`): ``migrate_vma_setup`` (MIGRATE with this
    device as owner), copy into device pages, ``migrate_vma_pages``, map them in the device
    table, ``migrate_vma_finalize``; a CPU touch of such a page faults into
    :meth:`devmem_fault`, which migrates it back.

    The ioctl commands (generators returning a :class:`DmirrorCmd`) are the dmirror ones:
    :meth:`dmirror_read`, :meth:`dmirror_write`, :meth:`migrate_to_device`,
    :meth:`migrate_to_system`, :meth:`exclusive`, :meth:`check_exclusive`,
    :meth:`snapshot`, :meth:`release_devmem`.

    The interval notifier is inserted at the first device fault or command that maps
    (:meth:`bind`), not at attach: the first insert on an mm registers the interval tree
    under mmap_lock for write, and nothing was mirrored before, so no invalidation is missed.

    Options: ``start`` / ``length`` of the mirrored interval. Default: the whole user
    address space, as dmirror inserts ``[0, ULONG_MAX & PAGE_MASK)``: it then follows
    mappings created after attach too, at the cost of being called for every invalidation
    of the mm.
    """

    name = "hmm_mirror"
    apis = ("modern",)
    interval = True          # tells the harness it uses an interval notifier
    _LOAD_WINDOW = (
        "migrate_to_device maps the moved pages (dmirror_migrate_finalize_and_map, between "
        "migrate_vma_pages and migrate_vma_finalize) under dmirror->mutex with no notifier "
        "sequence check (6.8 lib/test_hmm.c): a MADV_DONTNEED of the page meanwhile (its "
        "CLEAR range open, the migration entry zapped) leaves the device mapping a page the "
        "CPU no longer maps; the load migrates hot pages while it zaps them. And the way "
        "back: when a peer's fault moves one of its device pages to system memory "
        "(dmirror_devmem_fault), dmirror_interval_invalidate ignores the MIGRATE range its "
        "own mdevice owns and dmirror_devmem_fault_alloc_and_copy erases the device entry "
        "without dmirror->mutex, so a fault of its own that resolved the device page just "
        "before passes mmu_interval_read_retry and maps it after the erase: the device then "
        "reads the device page the migration frees (the load's devices share a focus page)")
    known_windows = {"load": _LOAD_WINDOW, "load-small": _LOAD_WINDOW}

    def __init__(self, sim, mm, *, start: int = 0, length: int | None = None):
        start, end = user_window("HMM_MIRROR interval", start, length)
        super().__init__(sim, mm)
        self.mutex = sim.mutex("dmirror->mutex")
        self.pt = ShadowPageTable(name=f"dmirror{mm.id}.pt", observer=self)
        self.atomic: set[int] = set()          # vpns tagged DPT_XA_TAG_ATOMIC
        self.notifier = _DmirrorInterval(owner=self, name=f"{self.name}.notifier")
        self.interval = (start, end)
        self.pgmap = sim.memory.memremap_pages(self, self.devmem_fault,
                                               name=f"{self.name}{mm.id}.devmem")
        self.dead = False
        self.faults = 0
        self.retries = 0

    def __repr__(self):
        return (f"<{self.name} on {self.mm!r} [{self.interval[0]:#x}, "
                f"{self.interval[1]:#x}) seq={self.notifier.invalidate_seq} "
                f"ptes={len(self.pt)} device_pages={len(self.pgmap.live_pages())}>")

    # ------------------------------------------------------------------ device side
    def access(self, va, *, write, value=None):
        """A device access: through the device PTE if present and allowing it, else
        :meth:`fault` and try again."""
        vpn = vpn_of(va)
        while True:
            yield
            if self.dead:
                raise device_gone(self, "the mirror was released")
            if not self.interval[0] <= va < self.interval[1]:
                raise device_gone(self, f"{va:#x} is outside the mirrored interval")
            pfn = self.pt.access(vpn, write)
            if pfn >= 0:
                return self.dma_write(va, pfn, value) if write else self.dma_read(va, pfn)
            yield from self.fault(va, write)

    def bind(self):
        """Insert the interval notifier (``mmu_interval_notifier_insert``) if it is not yet:
        done at the first device fault, as drivers that bind lazily do (the first insert on
        an mm registers the interval tree under mmap_lock for write, so the caller must not
        hold mmap_lock)."""
        if not self.notifier._inserted and not self.dead:
            start, end = self.interval
            yield from mmu_interval_notifier_insert(self.notifier, self.mm, start, end - start)

    def fault(self, va, write):
        """``dmirror_fault`` of one page: :meth:`range_fault`; a failure is the device's
        SIGSEGV."""
        self.faults += 1
        self.sim.charge("device_fault")
        page = page_of(va)
        ret = yield from self.range_fault(page, page + PAGE_SIZE, write)
        if ret:
            raise SegmentationFault(f"{self.name}: device {'write' if write else 'read'} at "
                                    f"{va:#x}: hmm_range_fault returned {ret} (no mapping, "
                                    "PROT_NONE, or a write to a read-only one)", address=va)

    def range_fault(self, start, end, write):
        """``dmirror_range_fault``: the collision-retry loop over ``[start, end)`` (at most
        64 pages); returns 0 or hmm_range_fault's error."""
        isub = self.notifier
        mm = self.mm
        flags = HMM_PFN_REQ_FAULT | (HMM_PFN_REQ_WRITE if write else 0)
        yield from self.bind()
        while True:
            rng = HmmRange(start, end, default_flags=flags, dev_private_owner=self,
                           notifier=isub)
            rng.notifier_seq = yield from mmu_interval_read_begin(isub)
            yield mm.mmap_lock.read()
            try:
                ret = yield from mm.hmm_range_fault(rng)
            finally:
                mm.mmap_lock.up_read()
            if ret == -EBUSY:
                self.retries += 1
                yield
                continue
            if ret:
                return ret
            yield                                # snapshot taken; the mutex is not yet
            with (yield self.mutex):
                if self.dead:
                    raise device_gone(self, "the mirror was released during a fault")
                retry = mmu_interval_read_retry(isub, rng.notifier_seq)
                if not retry:
                    ret = self.do_fault(rng)
            if not retry:
                return ret
            self.retries += 1
            self.sim.stats["hmm_fault_retry"] += 1
            yield                                # -EBUSY: go round again

    def do_fault(self, rng):
        """``dmirror_do_fault``: write the device PTEs of a valid snapshot, under the mutex
        with the sequence checked: writable where the snapshot was (``HMM_PFN_WRITE``).
        Returns 0, or -EFAULT for a write fault whose snapshot has a page that is not
        writable: hmm_range_fault reports the caller's own device-private page as it is, a
        read-only one too (6.8 mm/hmm.c hmm_vma_handle_pte: "Don't fault in device private
        pages owned by the caller, just report the PFN"; fork write-protects it), and 6.8
        lib/test_hmm.c gives up on it: ``else if (WARN_ON(range->default_flags &
        HMM_PFN_WRITE)) return -EFAULT;`` (a device write that retried instead would spin
        for ever)."""
        v0 = rng.start >> PAGE_SHIFT
        words = rng.hmm_pfns.tolist()
        for i, word in enumerate(words):
            if not word & HMM_PFN_WRITE and rng.default_flags & HMM_PFN_REQ_WRITE:
                return -EFAULT
            self.pt.map(v0 + i, hmm_pfn_to_pfn(word), bool(word & HMM_PFN_WRITE))
            self.atomic.discard(v0 + i)
        return 0

    def translation(self, va):
        """``(pfn, writable)`` of the device PTE for ``va``, or None (inspection only)."""
        return self.pt.lookup(vpn_of(va))

    # ------------------------------------------------------------------ invalidation
    def interval_invalidate(self, range, cur_seq):
        """``dmirror_interval_invalidate``: skip our own migration, take the mutex
        (:meth:`lock_mutex`; refuse if a non-blockable range finds it busy), then
        :meth:`invalidate_locked`."""
        if range.event is Event.MIGRATE and range.owner is self:
            return True       # "the invalidation is handled as part of the migration process"
        if not (yield from self.lock_mutex(range)):
            return False
        try:
            self.invalidate_locked(range, cur_seq)
        finally:
            self.mutex.release()
        return True

    def lock_mutex(self, range):
        """``mutex_lock`` (sleeps) for a blockable range, else ``mutex_trylock``: True once
        the mutex is held, False if a non-blockable range found it busy."""
        if range.blockable:
            yield self.mutex
        elif not self.mutex.trylock():
            return False
        return True

    def invalidate_locked(self, range, cur_seq):
        """Under the mutex: ``mmu_interval_set_seq`` (faults that snapshotted before now
        retry), then erase the device PTEs of the range."""
        mmu_interval_set_seq(self.notifier, cur_seq)
        self.erase(range.start, range.end)

    def erase(self, start, end):
        """``dmirror_do_update``: erase the device PTEs of ``[start, end)`` (atomic ones
        too)."""
        vpn0, vpn1 = vpn_span(start, end, *self.interval)
        if vpn0 < vpn1:
            self.pt.zap_range(vpn0, vpn1)
            if self.atomic:
                self.atomic -= {v for v in self.atomic if vpn0 <= v < vpn1}
            self.sim.charge("secondary_flush")

    def release(self, mm):
        """The mm is going away (or the mirror is detached): interval notifiers already got
        a RELEASE invalidation over everything; remove ours (``dmirror_fops_release`` ->
        ``mmu_interval_notifier_remove``, which waits for an invalidation in flight) and
        drop whatever is left."""
        self.dead = True
        if self.notifier._inserted:
            yield from mmu_interval_notifier_remove(self.notifier)
        with (yield self.mutex):
            self.pt.zap_all()
            self.atomic.clear()

    def close(self):
        """``dmirror_fops_release``: the device file is closed: remove the interval notifier
        (``mmu_interval_notifier_remove``; a fault may have bound it after ``release`` ran),
        then drop the registration."""
        self.dead = True
        if self.notifier.inserted:
            yield from mmu_interval_notifier_remove(self.notifier)
        yield from super().close()

    # ------------------------------------------------------------------ ioctls
    @staticmethod
    def _bad_cmd(addr, npages) -> bool:
        """``dmirror_fops_unlocked_ioctl``'s checks: page aligned, at least one page."""
        return int(addr) % PAGE_SIZE != 0 or int(npages) <= 0

    def _do_read(self, start, end, out):
        """``dmirror_do_read``: every page of ``[start, end)`` through the device table
        (one device read each) into ``out``; -ENOENT at the first missing entry."""
        for va in range(start, end, PAGE_SIZE):
            hit = self.pt.lookup(vpn_of(va))
            if hit is None:
                return -ENOENT
            out.append(self.dma_read(va, hit[0]))
        return 0

    def _do_write(self, start, end, values):
        """``dmirror_do_write``: -ENOENT at the first page without a writable
        (``DPT_XA_TAG_WRITE``) entry; atomic entries are not write entries."""
        for k, va in enumerate(range(start, end, PAGE_SIZE)):
            vpn = vpn_of(va)
            hit = self.pt.lookup(vpn)
            if hit is None or not hit[1] or vpn in self.atomic:
                return -ENOENT, k
            self.dma_write(va, hit[0], values[k])
        return 0, (end - start) >> PAGE_SHIFT

    def dmirror_fault(self, start, end, write):
        """``dmirror_fault``: :meth:`range_fault` in chunks of 64 pages (0 at once if the mm
        is exiting: ``mmget_not_zero`` failed)."""
        if not self.mm.mmget_not_zero():
            return 0
        try:
            for a in range(start, end, MIGRATE_CHUNK * PAGE_SIZE):
                ret = yield from self.range_fault(a, min(end, a + MIGRATE_CHUNK * PAGE_SIZE),
                                                  write)
                if ret:
                    return ret
            return 0
        finally:
            self.mm.mmput()

    def dmirror_read(self, addr, npages):
        """``HMM_DMIRROR_READ``: read ``npages`` through the device, faulting in what is
        missing (each fault pass counts in ``faults``)."""
        if self._bad_cmd(addr, npages):
            return DmirrorCmd(-EINVAL)
        end = addr + npages * PAGE_SIZE
        cmd = DmirrorCmd(0)
        start = addr
        while True:
            with (yield self.mutex):
                ret = self._do_read(start, end, cmd.data)
            cmd.cpages = len(cmd.data)
            if ret != -ENOENT:
                break
            start = addr + cmd.cpages * PAGE_SIZE
            ret = yield from self.dmirror_fault(start, end, False)
            if ret:
                break
            cmd.faults += 1
        cmd.ret = ret
        return cmd

    def dmirror_write(self, addr, npages, values):
        """``HMM_DMIRROR_WRITE``: write ``values`` (one per page) through the device,
        faulting in for write what is missing or read-only."""
        if self._bad_cmd(addr, npages) or len(values) != npages:
            return DmirrorCmd(-EINVAL)
        end = addr + npages * PAGE_SIZE
        cmd = DmirrorCmd(0)
        start = addr
        while True:
            with (yield self.mutex):
                ret, done = self._do_write(start, end, values[cmd.cpages:])
            cmd.cpages += done
            if ret != -ENOENT:
                break
            start = addr + cmd.cpages * PAGE_SIZE
            ret = yield from self.dmirror_fault(start, end, True)
            if ret:
                break
            cmd.faults += 1
        cmd.ret = ret
        return cmd

    def _chunks(self, addr, npages):
        """``(vma, start, next)`` per migrate chunk (at most 64 pages, within one VMA), or
        None where dmirror returns -EINVAL (no VMA, or not readable)."""
        end = addr + npages * PAGE_SIZE
        a = addr
        while a < end:
            vma = self.mm.vma_at(a)
            if vma is None or not vma.readable:
                yield None
                return
            nxt = min(end, a + MIGRATE_CHUNK * PAGE_SIZE, vma.end)
            yield vma, a, nxt
            a = nxt

    def migrate_to_device(self, addr, npages):
        """``HMM_DMIRROR_MIGRATE_TO_DEV`` (``dmirror_migrate_to_device``): move the range's
        anonymous pages into this device's memory, map them in the device table, and read
        them back through it (-ENOENT if some page did not move)."""
        if self._bad_cmd(addr, npages):
            return DmirrorCmd(-EINVAL)
        mm, mem = self.mm, self.sim.memory
        yield from self.bind()                   # it maps the device pages it migrates
        if not mm.mmget_not_zero():
            return DmirrorCmd(-EINVAL)
        yield mm.mmap_lock.read()
        try:
            for chunk in list(self._chunks(addr, npages)):
                if chunk is None:
                    return DmirrorCmd(-EINVAL)
                vma, a, nxt = chunk
                args = MigrateVma(vma, a, nxt, pgmap_owner=self,
                                  flags=MIGRATE_VMA_SELECT_SYSTEM)
                ret = yield from mem.migrate_vma_setup(args)
                if ret:
                    return DmirrorCmd(ret)
                self._migrate_alloc_and_copy(args)
                yield from mem.migrate_vma_pages(args)
                yield from self._migrate_finalize_and_map(args)
                yield from mem.migrate_vma_finalize(args)
        finally:
            mm.mmap_lock.up_read()
            mm.mmput()
        cmd = DmirrorCmd(0)
        with (yield self.mutex):                 # "Return the migrated data for verification"
            cmd.ret = self._do_read(addr, addr + npages * PAGE_SIZE, cmd.data)
        cmd.cpages = len(cmd.data)
        return cmd

    def _migrate_alloc_and_copy(self, args):
        """``dmirror_migrate_alloc_and_copy``: a device page for every page migrating, its
        contents copied (a hole or the zero page: cleared); writable if the source was (or a
        hole in a writable VMA)."""
        mem = self.sim.memory
        for i in args.migrating():
            spage = args.page(i)
            if spage and mem.page_pgmap(spage) is not None:
                continue                          # "page already in device"
            dpage = self.pgmap.alloc_page()
            mem.copy_highpage(dpage, spage)
            write = bool(int(args.src[i]) & MIGRATE_PFN_WRITE) or \
                (not spage and args.vma.writable)
            args.dst[i] = migrate_pfn(dpage) | (MIGRATE_PFN_WRITE if write else 0)

    def _migrate_finalize_and_map(self, args):
        """``dmirror_migrate_finalize_and_map``: under the mutex, point the device PTEs of
        the pages that moved at their device pages (what the owner skip leaves to us)."""
        with (yield self.mutex):
            v0 = args.start >> PAGE_SHIFT
            for i in args.migrating():
                dpage = migrate_pfn_to_page(args.dst[i])
                if not dpage:
                    continue
                self.pt.map(v0 + i, dpage, bool(int(args.dst[i]) & MIGRATE_PFN_WRITE))
                self.atomic.discard(v0 + i)

    def migrate_to_system(self, addr, npages):
        """``HMM_DMIRROR_MIGRATE_TO_SYS`` (``dmirror_migrate_to_system``): move this
        device's pages of the range back to system memory; ``cpages`` counts them."""
        if self._bad_cmd(addr, npages):
            return DmirrorCmd(-EINVAL)
        mm, mem = self.mm, self.sim.memory
        cmd = DmirrorCmd(0)
        if not mm.mmget_not_zero():
            return DmirrorCmd(-EINVAL)
        yield mm.mmap_lock.read()
        try:
            for chunk in list(self._chunks(addr, npages)):
                if chunk is None:
                    return DmirrorCmd(-EINVAL)
                vma, a, nxt = chunk
                args = MigrateVma(vma, a, nxt, pgmap_owner=self,
                                  flags=MIGRATE_VMA_SELECT_DEVICE_PRIVATE)
                ret = yield from mem.migrate_vma_setup(args)
                if ret:
                    return DmirrorCmd(ret)
                self._devmem_alloc_and_copy(args)
                yield from mem.migrate_vma_pages(args)
                cmd.cpages += sum(1 for i in args.migrating()
                                  if int(args.src[i]) & MIGRATE_PFN_VALID)
                yield from mem.migrate_vma_finalize(args)
        finally:
            mm.mmap_lock.up_read()
            mm.mmput()
        return cmd

    def _devmem_alloc_and_copy(self, args):
        """``dmirror_devmem_fault_alloc_and_copy``: a system page for every device page
        migrating back, the device PTE erased, the contents copied."""
        mem = self.sim.memory
        v0 = args.start >> PAGE_SHIFT
        for i in args.migrating():
            spage = args.page(i)
            if not spage or mem.page_pgmap(spage) is None:
                continue
            dpage = mem.alloc_locked_page(self.mm.id)
            self.pt.zap(v0 + i)                   # xa_erase(&dmirror->pt, addr >> PAGE_SHIFT)
            self.atomic.discard(v0 + i)
            mem.copy_highpage(dpage, spage)
            args.dst[i] = migrate_pfn(dpage) | (int(args.src[i]) & MIGRATE_PFN_WRITE)

    def devmem_fault(self, vmf):
        """``dmirror_devmem_fault``, the pagemap's ``migrate_to_ram``: the CPU touched one
        of our pages; migrate that page back ("No device finalize step is needed since
        dmirror_devmem_fault_alloc_and_copy() will have already invalidated the device page
        table")."""
        mem = self.sim.memory
        args = MigrateVma(vmf.vma, vmf.address, vmf.address + PAGE_SIZE, pgmap_owner=self,
                          flags=MIGRATE_VMA_SELECT_DEVICE_PRIVATE, fault_page=vmf.page)
        if (yield from mem.migrate_vma_setup(args)):
            return VM_FAULT_SIGBUS
        self._devmem_alloc_and_copy(args)
        yield from mem.migrate_vma_pages(args)
        yield from mem.migrate_vma_finalize(args)
        return 0

    def exclusive(self, addr, npages):
        """``HMM_DMIRROR_EXCLUSIVE`` (``dmirror_exclusive``): make the pages the device's
        exclusively (``make_device_exclusive_range``, owner NULL as dmirror passes), map
        them atomic in the device table while they are still locked, then read them back.
        -EBUSY if some page could not be made exclusive."""
        if self._bad_cmd(addr, npages):
            return DmirrorCmd(-EINVAL)
        mm, mem = self.mm, self.sim.memory
        end = addr + npages * PAGE_SIZE
        yield from self.bind()                   # it maps the pages atomic
        if not mm.mmget_not_zero():
            return DmirrorCmd(-EINVAL)
        yield mm.mmap_lock.read()
        try:
            for a in range(addr, end, MIGRATE_CHUNK * PAGE_SIZE):
                nxt = min(end, a + MIGRATE_CHUNK * PAGE_SIZE)
                pages = yield from mm.make_device_exclusive_range(a, nxt, None)
                mapped = 0
                if len(pages) == (nxt - a) >> PAGE_SHIFT:
                    mapped = yield from self._atomic_map(a, pages)
                for p in pages:
                    if p:
                        mem.unlock_page(p)
                        yield from mm.put_page(p)
                if a + mapped * PAGE_SIZE < nxt:
                    return DmirrorCmd(-EBUSY)
        finally:
            mm.mmap_lock.up_read()
            mm.mmput()
        cmd = DmirrorCmd(0)
        with (yield self.mutex):
            cmd.ret = self._do_read(addr, end, cmd.data)
        cmd.cpages = len(cmd.data)
        return cmd

    def _atomic_map(self, start, pages):
        """``dmirror_atomic_map``: the exclusive pages in the device table, tagged atomic."""
        mapped = 0
        with (yield self.mutex):
            v0 = start >> PAGE_SHIFT
            for i, p in enumerate(pages):
                if not p:
                    continue
                self.pt.map(v0 + i, p, True)
                self.atomic.add(v0 + i)
                mapped += 1
        return mapped

    def check_exclusive(self, addr, npages):
        """``HMM_DMIRROR_CHECK_EXCLUSIVE`` (``dmirror_check_atomic``): -EPERM while some
        page of the range is still mapped atomic in the device."""
        if self._bad_cmd(addr, npages):
            return DmirrorCmd(-EINVAL)
        v0 = vpn_of(addr)
        busy = any(v0 <= v < v0 + npages for v in self.atomic)
        return DmirrorCmd(-EPERM if busy else 0)
        yield  # pragma: no cover - a command like the others

    def snapshot(self, addr, npages):
        """``HMM_DMIRROR_SNAPSHOT``: ``hmm_range_fault`` without ``HMM_PFN_REQ_FAULT``
        under a temporary interval notifier, one ``HMM_DMIRROR_PROT_*`` per page in
        ``data``; nothing is faulted in."""
        if self._bad_cmd(addr, npages):
            return DmirrorCmd(-EINVAL)
        end = addr + npages * PAGE_SIZE
        cmd = DmirrorCmd(0)
        if not self.mm.mmget_not_zero():
            return DmirrorCmd(-EINVAL)
        try:
            for a in range(addr, end, MIGRATE_CHUNK * PAGE_SIZE):
                nxt = min(end, a + MIGRATE_CHUNK * PAGE_SIZE)
                ret = yield from self._range_snapshot(a, nxt, cmd.data)
                if ret:
                    cmd.ret = ret
                    break
                cmd.cpages = len(cmd.data)
        finally:
            self.mm.mmput()
        return cmd

    def _range_snapshot(self, start, end, out):
        """``dmirror_range_snapshot``."""
        mm = self.mm
        isub = MMUIntervalNotifier(self._snapshot_invalidate, owner=self,
                                   name=f"{self.name}.snapshot")
        yield from mmu_interval_notifier_insert(isub, mm, start, end - start)
        try:
            while True:
                rng = HmmRange(start, end, dev_private_owner=self, notifier=isub)
                rng.notifier_seq = yield from mmu_interval_read_begin(isub)
                yield mm.mmap_lock.read()
                try:
                    ret = yield from mm.hmm_range_fault(rng)
                finally:
                    mm.mmap_lock.up_read()
                if ret == -EBUSY:
                    continue
                if ret:
                    return ret
                with (yield self.mutex):
                    if mmu_interval_read_retry(isub, rng.notifier_seq):
                        continue
                    out.extend(self._mkentry(w) for w in rng.hmm_pfns.tolist())
                return 0
        finally:
            yield from mmu_interval_notifier_remove(isub)

    def _snapshot_invalidate(self, isub, range, cur_seq):
        """``dmirror_snapshot_invalidate``: "Snapshots only need to set the sequence number
        since any invalidation in the interval invalidates the whole snapshot"."""
        if not (yield from self.lock_mutex(range)):
            return False
        mmu_interval_set_seq(isub, cur_seq)
        self.mutex.release()
        return True

    def _mkentry(self, word) -> int:
        """``dmirror_mkentry``."""
        if word & HMM_PFN_ERROR:
            return HMM_DMIRROR_PROT_ERROR
        if not word & HMM_PFN_VALID:
            return HMM_DMIRROR_PROT_NONE
        mem = self.sim.memory
        pfn = hmm_pfn_to_pfn(word)
        pgmap = mem.page_pgmap(pfn)
        if pgmap is not None:
            perm = (HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL if pgmap.owner is self
                    else HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE)
        elif pfn == mem.zero_pfn:
            perm = HMM_DMIRROR_PROT_ZERO
        else:
            perm = HMM_DMIRROR_PROT_NONE
        perm |= HMM_DMIRROR_PROT_WRITE if word & HMM_PFN_WRITE else HMM_DMIRROR_PROT_READ
        if hmm_pfn_to_map_order(word) == HPAGE_PMD_ORDER:
            perm |= HMM_DMIRROR_PROT_PMD
        return perm

    def release_devmem(self):
        """``HMM_DMIRROR_RELEASE`` (``dmirror_device_remove_chunks`` ->
        ``dmirror_device_evict_chunk``): every page of this device's memory goes back to
        system memory (``migrate_device_range``: its mappings are unmapped with CLEAR, no
        owner, so the device PTEs go too)."""
        mem = self.sim.memory
        src = yield from mem.migrate_device_range(self.pgmap.live_pages())
        dst = src.copy()
        dst[:] = 0
        for i, word in enumerate(src.tolist()):
            if not word & MIGRATE_PFN_MIGRATE or not word & MIGRATE_PFN_VALID:
                continue
            spage = migrate_pfn_to_page(word)
            dpage = mem.alloc_locked_page(self.mm.id)
            mem.copy_highpage(dpage, spage)
            dst[i] = migrate_pfn(dpage) | (word & MIGRATE_PFN_WRITE)
        yield from mem.migrate_device_pages(src, dst)
        yield from mem.migrate_device_finalize(src, dst)
        return DmirrorCmd(0)
