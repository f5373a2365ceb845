"""Historical bugs as scenario pairs: ``"<name>"`` (the broken configuration of a bug Linux or
a driver really had, tagged ``historical``) and ``"<name>-fixed"`` (tagged ``historical``,
``fixed``); see linux-notes section 3. :data:`HISTORICAL` describes each pair.
"""

from __future__ import annotations

from dataclasses import dataclass

from smmu.base.constants import PAGE_SIZE
from smmu.notifier import MMUNotifier
from smmu.scenarios.catalogue import (build_fork_after_pin, build_munmap, build_reclaim,
                                      build_writeback)
from smmu.scenarios.kit import (Join, anon_process, any_driver, cpu_reads, cpu_writes, device_loop,
                                has_notifier, notifier_only, ops, pages, reuse_frames, reused, seq,
                                setup_anon, tolerant)
from smmu.scenarios.registry import Scenario, attach_driver, driver_options, register
from smmu.scenarios.thp import build_thp_migration


class PipeReader(MMUNotifier):
    """A pipe holding a page that ``vmsplice`` put in it: ``get_user_pages`` without
    ``FOLL_WRITE`` (a plain reference, no pin, no COW break) at the first read, and every
    later read through that reference. No notifier and no declared translation: nothing in
    Linux tells a pipe that the process's page tables changed. Used by
    ``gup-read-cow-leak`` (CVE-2020-29374)."""

    name = "pipe"

    def __init__(self, sim, mm):
        super().__init__(sim, mm)
        self.page = None

    def access(self, va, *, write, value=None):
        yield
        if self.page is None:
            self.page = yield from self.mm.get_user_pages(va - va % PAGE_SIZE, write=False)
        return self.dma_read(va, self.page)


class RefusingNotifier(MMUNotifier):
    """A notifier whose non-blockable ``invalidate_range_start`` always refuses with
    ``-EAGAIN`` (what dmirror/amdgpu do when their lock is contended); like Linux requires
    of a notifier that may fail start, it has no ``end``. Used by ``nonblock-start-end``."""

    name = "refusing"

    def invalidate_range_start(self, range):
        if not range.blockable:
            return -11  # -EAGAIN
        return 0

    def access(self, va, *, write, value=None):  # pragma: no cover - never used as a device
        return None
        yield


def _fork_enomem(bug: bool):
    def build(sim, driver_cls):
        """fork fails with ENOMEM inside ``copy_page_range`` after the range was started.
        Broken (``fork_enomem_bug``, as posted in 2008): the error path returns without
        ``invalidate_range_end``; the driver's in-progress count never drops and its
        faults retry forever. Fixed: the loop breaks and falls through to ``end``."""
        mem = sim.memory
        mem.fork_enomem_bug = bug
        mm, buf, vas, drv = anon_process(sim, driver_cls, 2, "parent")
        j = Join(sim)

        def cpu():
            # the next frame allocation fails: the child's page-table page in
            # copy_page_range, after invalidate_range_start (the device only reads, so it
            # allocates nothing that could take the failure instead)
            mem.frames.fail_next()
            yield from tolerant(mm.fork())
            mem.frames.clear_fail()
            yield from cpu_writes(mm, vas, 1500)

        j.spawn("cpu0", cpu())
        j.spawn("dev0", device_loop(drv, vas, rounds=2, write=False))
        j.then("check", cpu_reads(mm, vas))
    return build


def _hlist_notifier(cls) -> bool:
    """A driver on the plain notifier list (not an interval notifier). nonblock-start-end is
    about the list: Linux's ``__mmu_notifier_invalidate_range_start`` runs the interval tree
    first and, when a list notifier then fails, returns without ``mn_itree_inv_end`` (the
    reaped mm is dying), so an interval driver's seq stays odd by design, not by this bug."""
    return has_notifier(cls) and not getattr(cls, "interval", False)


def _nonblock_end(sim, driver_cls):
    """The OOM reaper's non-blockable start succeeds in the driver under test, then a second
    notifier refuses with -EAGAIN. Before c2655835fd8c (2021) the reaper skipped the range
    and never called ``end``: the first driver's range stays open for ever."""
    mm = sim.new_process("victim")
    buf = setup_anon(sim, mm, 2)
    vas = pages(buf, 2)
    sim.attach(RefusingNotifier, mm)        # registered first: called last (hlist_add_head)
    drv = attach_driver(sim, driver_cls, mm)
    j = Join(sim)
    j.spawn("cpu0", sim.oom_reap(mm))
    j.spawn("dev0", device_loop(drv, vas, rounds=2, write=False))
    j.then("check", cpu_reads(mm, vas))


def _apic_remap(sim, driver_cls):
    """KVM's APIC-access page (e649b3f0188f, 2020): the page is migrated while the vCPU
    keeps using it. The broken driver reloads (re-maps) the page from inside
    ``invalidate_range_start`` while the PTE is still intact, so it maps the old page that
    is about to be freed; the fix re-resolves it after the PTE is cleared."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 1, "vm")
    j = Join(sim)
    j.spawn("cpu0", seq(sim.migrate(mm, buf, PAGE_SIZE), cpu_writes(mm, vas, 1600)))
    j.spawn("dev0", device_loop(drv, vas, rounds=3, write="alt", base=16000))
    j.then("check", cpu_reads(mm, vas))


#: the COW and pin rules before 5.9 (docs/kernels.md): do_wp_page reuses by mapcount,
#: no PageAnonExclusive and nothing that builds on it, reclaim swaps pinned pages out
PRE_5_9_RULES = {"cow_reuse": "mapcount", "anon_exclusive": False,
                 "reclaim_skips_pinned": False, "mprotect_writable_exclusive": False,
                 "unshare_longterm_ro_pins": False}


@dataclass(frozen=True)
class Historical:
    """A real bug as a pair of scenarios: ``name`` (broken) and ``name + "-fixed"``.
    ``driver`` / ``fixed_driver`` name the drivers to run them with (``drivers.BUILTIN`` or
    ``drivers.BUGGY`` keys), ``api`` the generation (``fixed_api`` that of the fixed half
    when the fix changed it, as 4.13 removing ``invalidate_page``), ``expected`` the kinds the
    broken one shows, ``ref`` where the bug is documented, ``commit`` the commit that fixed
    it (or the one the bug is known by) and ``year`` when."""

    name: str
    driver: str
    fixed_driver: str
    api: str
    expected: tuple
    ref: str
    commit: str = ""
    year: int = 0
    fixed_api: str | None = None
    #: how ``smmu history`` searches the broken half (a window few schedules hit: more of
    #: the one strategy that reaches it, as the buggy catalogue's ``search_budget``)
    strategies: tuple = ("pct", "random")
    budget: int | None = None

    @property
    def apis(self) -> tuple:
        """``(api of the broken half, api of the fixed half)``."""
        return self.api, self.fixed_api or self.api


HISTORICAL: dict[str, Historical] = {}


def _historical(h: Historical, *, broken=None, fixed=None, **common):
    """Register ``h`` and its pair of scenarios: ``h.name`` (tagged ``historical``) and
    ``h.name + "-fixed"`` (tagged ``historical``, ``fixed``). ``common`` holds the
    :class:`~smmu.scenarios.registry.Scenario` fields both share, ``broken`` / ``fixed``
    the ones that differ; ``applies`` defaults to drivers with notifier hooks and
    ``description`` to the builder's docstring, as in
    :func:`~smmu.scenarios.kit.register_builder`."""
    HISTORICAL[h.name] = h
    for name, tags, own in ((h.name, ("historical",), broken),
                            (h.name + "-fixed", ("historical", "fixed"), fixed)):
        kw = {"applies": notifier_only, **common, **(own or {})}
        kw.setdefault("description", kw["build"].__doc__)
        register(Scenario(name=name, tags=tags, **kw))


_historical(
    Historical("fork-enomem-unpaired", "kvm", "kvm", "v2008", ("UnpairedRange", "Livelock"),
               "2008 mmu-notifier review: copy_page_range -ENOMEM after start without end; "
               "fixed before the merge (the loop breaks to end)", "cddb8a5c14aa", 2008),
    broken=dict(build=_fork_enomem(True)), fixed=dict(build=_fork_enomem(False)))
_historical(
    Historical("invalidate-page-under-ptl", "kvm_sleeps_in_invalidate_page",
               "kvm_sleeps_in_invalidate_page", "v2008", ("SleepInAtomic",),
               "c7ab0d2fdc84 (4.11) called invalidate_page under the PT lock again; 2ec74c3ef2d8 "
               "(3.7..4.10) had called it after dropping the lock, where a sleeping driver was "
               "legal (the amdgpu report of 2017; the callback went in 4.13)",
               "c7ab0d2fdc84", 2017),
    build=build_reclaim, apis=("v2008",),
    broken=dict(description="reclaim with a driver whose invalidate_page sleeps, called "
                "under the PT lock (2.6.27..3.6, 4.11..4.12)",
                sim_options={"invalidate_page_outside_ptl": False}),
    fixed=dict(description="the same, invalidate_page called after the PT lock is dropped "
               "(3.7..4.10)", sim_options={"invalidate_page_outside_ptl": True}))
_historical(
    Historical("fork-pin-cow", "pinned", "pinned", "modern",
               ("LostWrite", "StaleRead", "CrossMmAccess"),
               "pre-5.9 RDMA: fork + long-term pin + COW; fixed by copying maybe-pinned pages "
               "at fork (70e806e4e645, 5.9)", "70e806e4e645", 2020),
    build=build_fork_after_pin, applies=any_driver,
    broken=dict(description="fork-after-pin without the 5.9 fix: the parent's COW gives it a "
                "new page while the device keeps DMAing into the pinned one",
                sim_options={**PRE_5_9_RULES, "fork_copies_pinned": False}),
    fixed=dict(description="fork-after-pin with fork copying maybe-DMA-pinned pages (5.9+)",
               sim_options={**PRE_5_9_RULES, "fork_copies_pinned": True,
                            "cow_reuse": "page_count"}))
_historical(
    Historical("nonblock-start-end", "kvm", "kvm", "modern", ("UnpairedRange", "Livelock"),
               "93065ac753e4 (4.19, 2018) introduced the non-blockable start without the end "
               "for the notifiers whose start succeeded; c2655835fd8c (5.12, 2021) fixed it",
               "c2655835fd8c", 2021),
    build=_nonblock_end, apis=("modern",), applies=_hlist_notifier,
    broken=dict(sim_options={"nonblock_fail_calls_end": False}),
    fixed=dict(sim_options={"nonblock_fail_calls_end": True}))
_historical(
    Historical("apic-page-remap", "kvm_apic_remap", "kvm", "modern",
               ("MapInWindow", "UseAfterFree", "StaleRead", "LostWrite"),
               "e649b3f0188f (2020): KVM APIC-access page re-looked-up inside start/end",
               "e649b3f0188f", 2020),
    build=_apic_remap)
_historical(
    Historical("writeback-device-write", "pinned", "kvm", "modern",
               # the device writes a page page_mkclean write-protected: WriteToReadOnly is
               # the bug itself; the lost data at eviction follows from it
               ("WriteToReadOnly", "LostWrite", "StaleRead"),
               "LWN 2018 'get_user_pages, pinned pages, and DAX': a device writing a page "
               "after page_mkclean through a long-term pin; fixed by following page_mkclean "
               "through notifiers (ODP/HMM) instead of pinning", "LWN 2018", 2018),
    build=build_writeback, broken=dict(applies=any_driver))


def _release_vs_reclaim(sim, driver_cls):
    """The process exits while reclaim on another CPU unmaps its pages and the device reads
    them. In 2.6.27..3.5 (and 3.9) ``__mmu_notifier_release`` unlinks a subscription
    before calling its ``release``: reclaim's ``try_to_unmap`` in between finds no notifier
    and frees a page the secondary MMU still maps (3ad3d901bbcf's diagram)."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 2)
    j = Join(sim)
    j.spawn("cpu1", tolerant(sim.reclaim(mm, buf, 2 * PAGE_SIZE, force=True)))
    j.spawn("dev0", device_loop(drv, vas, rounds=3, write=False))
    j.spawn("cpu0", tolerant(mm.exit()))


def _gup_read_cow_leak(sim, driver_cls):
    """CVE-2020-29374 (Project Zero 2045, the vmsplice reproducer): the parent writes a page
    and forks; the child's device takes a read-only GUP reference to it (the pipe), the
    child unmaps it, the parent writes a secret. With the old reuse rule (mapcount 1: reuse
    in place) the child's reference reads the parent's secret; with page_count (5.9) the
    parent copies."""
    parent = sim.new_process("parent")
    buf = sim.do(parent.mmap(PAGE_SIZE, prot="rw"))
    sim.do(parent.write(buf, 1111))
    child = sim.do(parent.fork())
    drv = attach_driver(sim, driver_cls, child)
    j = Join(sim)
    unmapped = sim.completion("child_unmapped")

    def child_task():
        yield from tolerant(drv.access(buf, write=False))       # vmsplice: GUP, read-only
        yield from child.munmap(buf, PAGE_SIZE)
        unmapped.complete_all()

    def parent_task():
        yield unmapped.wait()
        yield from parent.write(buf, 4242)                       # the secret

    def pipe_read():
        yield unmapped.wait()
        for _ in range(3):
            yield from tolerant(drv.access(buf, write=False))

    j.spawn("cpu1", child_task())
    j.spawn("cpu0", parent_task())
    j.spawn("dev0", pipe_read())
    j.then("check", cpu_reads(parent, [buf]))


_historical(
    Historical("rcu-callbacks-sleep", "xpmem", "xpmem", "range_only", ("SleepInAtomic",),
               "21a92735f660 'mm: mmu_notifier: have mmu_notifiers use a global SRCU so they "
               "may safely schedule' (3.7): until then every hook ran under rcu_read_lock, so "
               "XPMEM's and ODP's sleeping invalidations could not be correct",
               "21a92735f660", 2012),
    build=build_munmap, apis=("range_only",),
    broken=dict(description="munmap while the device faults, hooks called under "
                "rcu_read_lock (3.6): a hook that sleeps is a bug",
                sim_options={"kernel": "3.6"}),
    fixed=dict(description="munmap while the device faults, hooks called in an SRCU "
               "read-side section (3.7+)", sim_options={"kernel": "3.7"}))
_historical(
    Historical("release-unlink-first", "kvm", "kvm", "v2008", ("UseAfterFree",),
               "3ad3d901bbcf 'mm: mmu_notifier: fix freed page still mapped in secondary MMU' "
               "(3.6): __mmu_notifier_release unlinked a notifier before its ->release",
               "3ad3d901bbcf", 2012, strategies=("random",), budget=2000),
    build=_release_vs_reclaim, apis=("v2008",),
    broken=dict(sim_options={"kernel": "3.0"}), fixed=dict(sim_options={"kernel": "3.6"}))
_historical(
    Historical("release-refix", "kvm", "kvm", "v2008", ("UseAfterFree",),
               "751efd8610d3 (3.9) fixed the unregister race by unlinking before ->release "
               "again, reopening 3ad3d901bbcf's bug; d34883d4e35c 'mm: mmu_notifier: re-fix "
               "freed page still mapped in secondary MMU' (3.10)", "d34883d4e35c", 2013,
               strategies=("random",), budget=2000),
    build=_release_vs_reclaim, apis=("v2008",),
    broken=dict(description="exit racing reclaim under 751efd8610d3's release order (3.9)",
                sim_options={"kernel": "3.9"}),
    fixed=dict(description="exit racing reclaim, ->release first (3.10, d34883d4e35c)",
               sim_options={"kernel": "3.10"}))
_historical(
    Historical("gup-read-cow-leak", "smmu.scenarios.historical:PipeReader",
               "smmu.scenarios.historical:PipeReader", "modern", ("CrossMmAccess",),
               "CVE-2020-29374: a read-only GUP reference kept by the child, the parent's COW "
               "reused the page (mapcount 1); worked around by 17839856fd58 (5.8), fixed by "
               "09854ba94c6a 'mm: do_wp_page() simplification' (5.9): reuse only if "
               "page_count == 1", "09854ba94c6a", 2020),
    build=_gup_read_cow_leak, apis=("modern",),
    applies=lambda cls: issubclass(cls, PipeReader),
    broken=dict(sim_options={"kernel": "5.5"}), fixed=dict(sim_options={"kernel": "5.9"}))


def _interval_remove_race(sim, driver_cls):
    """The device's file is closed (``dmirror_fops_release`` -> ``mmu_interval_notifier_
    remove``, then ``kfree``) while the CPU unmaps the mirrored pages. Removing during an
    invalidation defers the unlink to ``mn_itree_inv_end``; before 319561669a59 remove
    waited for the sequence to move with a lockless read and returned while the subscription
    was still on the deferred list, which inv_end then touched after the free."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 4)
    subs = mm.notifier_subscriptions
    j = Join(sim)
    mirrored = sim.completion("mirrored")
    unmapped = []

    def dev():
        yield from device_loop(drv, vas, rounds=1, write=False)
        mirrored.complete_all()

    def close():
        yield mirrored.wait()
        for _ in range(64):                      # close while the munmap invalidates
            if subs.is_invalidating() or unmapped:
                break
            yield
        yield from mm.mmu_notifier_unregister(drv)
        drv.notifier.free()                      # kfree(dmirror)

    def cpu():
        yield mirrored.wait()
        yield from tolerant(mm.munmap(buf, 4 * PAGE_SIZE))
        unmapped.append(True)

    j.spawn("dev0", dev())
    j.spawn("cpu0", cpu())
    j.spawn("close", close())


_historical(
    Historical("interval-remove-race", "hmm_mirror", "hmm_mirror", "modern",
               ("NotifierUseAfterFree",),
               "319561669a59 'mm/mmu_notifier.c: fix race in mmu_interval_notifier_remove()' "
               "(5.18-rc4): remove returned while mn_itree_inv_end still had the "
               "subscription on its deferred list (99cb252f5e68, 5.5, introduced it)",
               "319561669a59", 2022),
    build=_interval_remove_race, apis=("modern",),
    applies=lambda cls: bool(getattr(cls, "interval", False)),
    broken=dict(sim_options={"kernel": "5.10"}), fixed=dict(sim_options={"kernel": "5.18"}))

_historical(
    Historical("empty-secondary-tlb-range", "iommu_sva", "iommu_sva", "modern",
               ("BadRange", "UseAfterFree", "CrossMmAccess", "StaleRead"),
               "f7edb07ad7c6 'Fix mmu notifiers for range-based invalidates' (2025, 6.14-rc; "
               "Fixes 6bbd42e2df8f): arm64's __flush_tlb_range_nosync passed start == end to "
               "arch_invalidate_secondary_tlbs; the SMMU driver took size 0 as 'everything', a "
               "driver that invalidates [start, end) as given invalidates nothing",
               "f7edb07ad7c6", 2025),
    build=build_munmap, apis=("modern",),
    broken=dict(description="munmap while the device faults, range flushes reaching the "
                "secondary TLB as [end, end) (arm64 6.6..6.13)",
                sim_options={"kernel": "6.6", "arch_flush_empty_range": True}),
    fixed=dict(description="munmap while the device faults, range flushes with their range",
               sim_options={"kernel": "6.6"}))


def _permission_upgrade(sim, driver_cls):
    """The page is writable but its PTE read-only (the child that shared it COW exited);
    the device reads it, so its IOTLB caches a read-only entry; the CPU writes it
    (``wp_page_reuse``: the PTE becomes writable in place, no range notifier); then the
    device writes it. An IOTLB that caches the read-only attribute and is flushed only
    through the notifier keeps faulting unless the upgrade's TLB flush reaches it
    (6bbd42e2df8f)."""
    mm = sim.new_process("vm")
    buf = setup_anon(sim, mm, 1)
    child = sim.do(mm.fork())
    sim.do(child.exit())                     # the page is exclusive again, its PTE R/O
    drv = attach_driver(sim, driver_cls, mm)
    j = Join(sim)
    cached = sim.completion("device_cached")
    upgraded = sim.completion("cpu_upgraded")

    def dev():
        yield from tolerant(drv.access(buf, write=False))
        cached.complete_all()
        yield upgraded.wait()
        yield from tolerant(drv.access(buf, write=True, value=1900))

    def cpu():
        yield cached.wait()
        yield from mm.write(buf, 1800)
        upgraded.complete_all()

    j.spawn("dev0", dev())
    j.spawn("cpu0", cpu())
    j.then("check", cpu_reads(mm, [buf]))


_historical(
    Historical("permission-upgrade-stale-iotlb", "drivers.iommu_sva:SMMU_SVA_NO_BTM",
               "drivers.iommu_sva:SMMU_SVA_NO_BTM", "modern", ("Livelock",),
               "6bbd42e2df8f 'mmu_notifiers: call invalidate_range() when invalidating TLBs' "
               "(6.6): on arm64 a permission upgrade flushed the CPU TLB but not the SMMU's, "
               "so a device with a cached read-only entry faulted forever",
               "6bbd42e2df8f", 2023),
    build=_permission_upgrade, apis=("modern",),
    applies=lambda cls: bool(getattr(cls, "caches_read_only", False)),
    broken=dict(description="a permission upgrade whose TLB flush does not reach the "
                "secondary TLB (arm64 before 6.6)", sim_options={"kernel": "6.1"}),
    fixed=dict(description="a permission upgrade whose TLB flush reaches "
               "arch_invalidate_secondary_tlbs (arm64 6.6+)",
               sim_options={"kernel": "6.6", "upgrade_flush_notify": True}))

_historical(
    Historical("radeon-userptr-start-only", "radeon_userptr", "hmm_mirror", "modern",
               ("MapInWindow", "UseAfterFree", "StaleRead", "StaleMapping"),
               "3506ff69c3ec 'drm/radeon: use mmu_interval_notifier_insert' (5.5): a "
               "start-only notifier with get_user_pages in the bind path cannot be correct; "
               "the fix is the interval notifier's read_begin/read_retry collision retry "
               "(the pattern HMM_MIRROR models)", "3506ff69c3ec", 2019),
    build=build_reclaim, apis=("modern",))
_historical(
    Historical("apic-reload-retry", "kvm_apic_reload_no_retry", "kvm", "modern",
               ("MapInWindow", "UseAfterFree", "StaleRead", "StaleMapping", "LostWrite"),
               "878940b33d76 'KVM: VMX: Retry APIC-access page reload if invalidation is "
               "in-progress' (6.5): the reload requested by the invalidation ignored the "
               "invalidation in progress; fixed by using KVM's retry check like its page "
               "faults (the reference KVM's fault path)", "878940b33d76", 2023,
               strategies=("random",), budget=600),
    build=_apic_remap)


def _pagemap_scan_attach(sim, driver_cls):
    """A process write-protects its pages with ``PAGEMAP_SCAN`` while its VMM attaches a
    KVM-style driver (``mmu_notifier_register``, mmap_lock for write) and the vCPU runs. In
    6.7 the scan held one PROTECTION_VMA range open across its whole loop while it dropped
    mmap_lock between walks: the driver registered in between gets the end without its
    start (CVE-2024-26617; syzbot saw KVM's WARN in kvm_mmu_notifier_change_pte)."""
    mm = sim.new_process("vm")
    buf = setup_anon(sim, mm, 4)
    vas = pages(buf, 4)
    j = Join(sim)
    attached = sim.completion("attached")
    box = {}

    def vmm():
        yield                                   # the scan is under way
        box["drv"] = drv = driver_cls(sim, mm, **driver_options(sim))
        yield from mm.mmu_notifier_register(drv)
        attached.complete_all()

    def vcpu():
        yield attached.wait()
        yield from device_loop(box["drv"], vas, rounds=2, write=False)

    j.spawn("cpu0", tolerant(mm.pagemap_scan(buf, 4 * PAGE_SIZE)))
    j.spawn("vmm", vmm())
    j.spawn("dev0", vcpu())
    j.then("check", cpu_reads(mm, vas))


_historical(
    Historical("pagemap-scan-unlocked", "kvm", "kvm", "modern", ("UnpairedRange", "Livelock"),
               "CVE-2024-26617, 4cccb6221cae 'fs/proc/task_mmu: move mmu notification "
               "mechanism inside mm lock' (6.8-rc, 6.7.3): PAGEMAP_SCAN (52526ca7fdb9, 6.7) "
               "started its range before the loop that drops mmap_lock", "4cccb6221cae", 2024),
    build=_pagemap_scan_attach, apis=("modern",),
    broken=dict(sim_options={"kernel": "6.7"}), fixed=dict(sim_options={"kernel": "6.8"}))


def _oom_reap_behind_notifier(sim, driver_cls):
    """An OOM victim whose memory a secondary MMU maps: the OOM reaper unmaps its private
    anonymous VMAs (``__oom_reap_task_mm``: ``unmap_page_range``) while the device keeps
    using them, and the freed frames go to another process. 4.6..4.14 called no notifier
    there, so the device's translations outlived the pages; 4d4bbd8526a8 (4.15) left an mm
    with notifiers alone ("doing mmu_notifier_invalidate_range_{start,end}() around the
    unmap_page_range(), which is needed, can block", as its 4.16 successor put it)."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 4, "victim")
    other = sim.new_process("other")
    j = Join(sim)
    mapped = sim.completion("mapped")
    box = {}

    def dev():
        yield from device_loop(drv, vas, rounds=1, write=False)
        mapped.complete_all()
        yield from device_loop(drv, vas, rounds=2, write=False)

    def reaper():
        yield mapped.wait()
        yield from sim.oom_reap(mm)
        yield from reuse_frames(other, box, 900, n=4)

    def check():
        yield from cpu_reads(other, reused(box, 4))
        yield from cpu_reads(mm, vas)

    j.spawn("oom_reaper", reaper())
    j.spawn("dev0", dev())
    j.then("check", check())


_historical(
    Historical("oom-reaper-no-notifier", "kvm", "kvm", "range_only",
               ("UseAfterFree", "CrossMmAccess", "StaleMapping"),
               "4d4bbd8526a8 'mm, oom_reaper: skip mm structs with mmu notifiers' (4.15): the "
               "OOM reaper (aac453635549, 4.6) unmapped a victim's private memory without any "
               "notifier call, so a secondary MMU kept translations of the freed pages",
               "4d4bbd8526a8", 2017),
    build=_oom_reap_behind_notifier, apis=("range_only",),
    broken=dict(description="the OOM reaper unmaps the victim's memory behind the device's "
                "back (4.6..4.14)", sim_options={"kernel": "4.14"}),
    fixed=dict(description="the OOM reaper leaves an mm with MMU notifiers alone (4.15)",
               sim_options={"kernel": "4.15"}))
_historical(
    Historical("invalidate-thp-as-4k", "kvm_huge_first_page", "kvm", "range_only",
               ("UseAfterFree", "StaleRead", "StaleMapping", "CrossMmAccess", "MapInWindow"),
               "5f32b265400d 'mm/mmu_notifier: kill invalidate_page' and the 4.13 series "
               "(369ea8242c0f): 'Lots of the callback implementers assumed this could never be "
               "THP and thus failed to invalidate the appropriate range for THP'; every driver "
               "was converted to ranges (e.g. 'KVM: update to new mmu_notifier semantic v2'). "
               "Replayed in range form: the model has anonymous THPs only, which 4.12 split "
               "before invalidate_page, so the broken driver takes a 2 MiB range for the page "
               "at its start", "5f32b265400d", 2017),
    build=build_thp_migration, apis=("range_only",),
    broken=dict(description="a whole THP migrates (one 2 MiB range, 4.14) while the device "
                "uses three of its pages; the driver drops only the first 4 KiB",
                sim_options={"kernel": "4.14"}),
    fixed=dict(description="the same migration with a driver that drops the whole range",
               sim_options={"kernel": "4.14"}))


def _release_vs_unregister(sim, driver_cls):
    """The device's file is closed (its ``->flush`` / ``->release`` file operation calls
    ``mmu_notifier_unregister``) while the process exits (``mmput`` -> ``exit_mmap`` ->
    ``__mmu_notifier_release``) and the device reads. 751efd8610d3's interleaving: the
    unregister finds the subscription hashed and runs ``->release``; meanwhile exit runs
    ``->release`` too and unhashes it (``hlist_del_init_rcu``); the unregister's
    ``hlist_del_rcu`` then dereferences the NULL ``pprev``."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 2)
    j = Join(sim)
    # the file's last release comes once nothing uses the device (KVM: kvm_destroy_vm runs
    # when the last vCPU and VM fd reference is gone), so the device's own faults are over
    # before its close; the close still races the exit
    j.spawn("dev0", seq(device_loop(drv, vas, rounds=2, write=False), tolerant(drv.close())))
    j.spawn("cpu0", tolerant(mm.exit()))


_historical(
    Historical("release-unregister-race", "kvm", "kvm", "v2008", ("ListCorruption",),
               "751efd8610d3 'mmu_notifier_unregister NULL Pointer deref and multiple "
               "->release() callouts' (3.9): 3ad3d901bbcf (3.6) had unregister call ->release "
               "and then hlist_del_rcu, racing __mmu_notifier_release's own ->release and "
               "hlist_del_init_rcu", "751efd8610d3", 2013, strategies=("random",),
               budget=2000),
    build=_release_vs_unregister, apis=("v2008",),
    broken=dict(description="exit racing the device's close, 3.8's unregister "
                "(->release, then hlist_del_rcu)", sim_options={"kernel": "3.8"}),
    fixed=dict(description="exit racing the device's close, 751efd8610d3's unregister "
               "(unlink under the lock if still hashed, then ->release) (3.9)",
               sim_options={"kernel": "3.9"}))


def _gpc_refresh_race(sim, driver_cls):
    """KVM's gfn=>pfn cache (Xen shared info, steal time) reads a guest page through a
    cached pfn while the page migrates (an invalidation that frees it). A refresh that
    runs after the notifier invalidated the cache but before KVM's in-progress count rose
    publishes the old pfn (58cd407ca4c6's diagram)."""
    mm, buf, vas, drv = anon_process(sim, driver_cls, 1, "vm")
    j = Join(sim)

    def kernel_reads():
        for _ in range(12):
            yield from tolerant(drv.gpc_read(buf))

    j.spawn("cpu0", seq(sim.migrate(mm, buf, PAGE_SIZE), cpu_writes(mm, vas, 700)))
    j.spawn("vcpu0", kernel_reads())
    j.then("check", cpu_reads(mm, vas))


_historical(
    Historical("gpc-refresh-race", "kvm_gpc_speculative_valid", "drivers.kvm_gpc:KVM_GPC",
               "modern", ("MapInWindow", "UseAfterFree", "StaleRead", "StaleMapping"),
               "58cd407ca4c6 'KVM: Fix multiple races in gfn=>pfn cache refresh' and "
               "93984f19e7bc 'KVM: Fully serialize gfn=>pfn cache refresh via mutex' (5.19): "
               "5.17's refresh (982ed0de4753) marked the cache valid before resolving the pfn "
               "and checked only mmu_notifier_count, raised after the notifier had "
               "invalidated the cache", "58cd407ca4c6", 2022),
    build=_gpc_refresh_race, apis=("modern",),
    applies=lambda cls: hasattr(cls, "gpc_read"))


def _memslot_update_in_window(sim, driver_cls):
    """The VMM adds a memslot over a range (``KVM_SET_USER_MEMORY_REGION``) while the CPU
    zaps that range (``MADV_DONTNEED``) and a vCPU uses the guest's memory. With 071064f14d87
    start and end take ``mmu_lock`` only for ranges that overlap a memslot: a memslot that
    appears between them makes the end drop a count its start never raised."""
    mm = sim.new_process("vm")
    buf = setup_anon(sim, mm, 4)
    vas = pages(buf, 4)
    low, high = (buf, buf + 2 * PAGE_SIZE), (buf + 2 * PAGE_SIZE, buf + 4 * PAGE_SIZE)
    drv = sim.attach(driver_cls, mm, memslots=[low], **driver_options(sim))
    j = Join(sim)
    added = sim.completion("memslot_added")

    def vmm():
        yield from drv.set_memslot(*high)
        added.complete_all()

    def vcpu():
        yield from device_loop(drv, vas[:2], rounds=1, write=False)
        yield added.wait()
        yield from device_loop(drv, vas, rounds=2, write=False)

    j.spawn("cpu0", tolerant(mm.madvise(high[0], 2 * PAGE_SIZE, "dontneed")))
    j.spawn("vmm0", vmm())
    j.spawn("vcpu0", vcpu())
    j.then("check", cpu_reads(mm, vas))


_historical(
    Historical("memslot-update-in-window", "kvm_memslot_update_in_window",
               "drivers.kvm_memslots:KVM_MEMSLOTS", "modern",
               ("DriverError", "MapInWindow", "Livelock", "UseAfterFree", "StaleRead"),
               "52ac8b358b0c 'KVM: Block memslot updates across range_start() and "
               "range_end()' with 071064f14d87 'KVM: Don't take mmu_lock for range "
               "invalidation unless necessary' (5.15): start and end elide mmu_lock for a "
               "range outside every memslot, so a memslot update between them unbalances "
               "the in-progress count (BUG_ON(kvm->mmu_notifier_count < 0))",
               "52ac8b358b0c", 2021),
    build=_memslot_update_in_window, apis=("modern",),
    applies=lambda cls: hasattr(cls, "set_memslot"))


def _hugetlb_shared_pmd_migration(sim, driver_cls):
    """Two processes map one hugetlbfs file ``MAP_SHARED`` over a PUD-aligned 1 GiB span,
    so the second shares the first's PMD table (``huge_pmd_share``); a device in each maps
    huge page A, the first's device maps B too. A migrates (``migrate_pages``, the rmap walk
    reaches the first process first), the second process unmaps the file, then B, mapped
    nowhere now, migrates by frame (``soft_offline_page``: ``unmap_and_move_huge_page``
    calls ``try_to_unmap`` only ``if (page_mapped(hpage))``); another process reuses the
    freed frames. Before 4.19 the walk for A stops at the first sharer (mapcount 1 for any
    number of sharers), so the second device keeps the old A; an unshare notified over A's
    2 MiB only leaves the first device's B in place after its process stopped mapping it,
    and nothing notifies it when B moves; 017b1660df89 notifies the whole PUD span."""
    from smmu.base.constants import HPAGE_PMD_NR, HPAGE_PMD_SIZE, PUD_SIZE
    mem = sim.memory
    f = mem.new_hugetlbfs_file("shm", PUD_SIZE // HPAGE_PMD_SIZE,
                               fill=lambda i: 30000 + i)
    base = 8 * PUD_SIZE
    mm1, mm2 = sim.new_process("db0"), sim.new_process("db1")
    v1 = sim.do(mm1.mmap(PUD_SIZE, shared=True, file=f, addr=base, fixed=True))
    v2 = sim.do(mm2.mmap(PUD_SIZE, shared=True, file=f, addr=base + PUD_SIZE, fixed=True))
    a1, b1 = [v1 + 3 * PAGE_SIZE, v1 + 200 * PAGE_SIZE], \
        [v1 + HPAGE_PMD_SIZE, v1 + HPAGE_PMD_SIZE + 7 * PAGE_SIZE]
    a2 = [v2 + 3 * PAGE_SIZE]
    for va in a1 + b1 + a2:                                # the first maps, the second shares
        sim.do(mm1.read(va) if va < v2 else mm2.read(va))
    drv1 = attach_driver(sim, driver_cls, mm1)
    drv2 = attach_driver(sim, driver_cls, mm2)
    other = sim.new_process("other")
    j = Join(sim)
    box, box2 = {}, {}
    mapped1, mapped2, moved, used2, offlined = (
        sim.completion(n) for n in ("mapped1", "mapped2", "moved", "used2", "offlined"))

    def dev1():
        yield from device_loop(drv1, a1 + b1, rounds=1, write=False)
        mapped1.complete_all()
        yield offlined.wait()                     # B moved by frame, its frames reused
        yield from device_loop(drv1, a1 + b1, rounds=2, write=False)

    def dev2():
        yield from device_loop(drv2, a2, rounds=1, write=False)
        mapped2.complete_all()
        yield moved.wait()                        # A moved and its old frames reused
        yield from device_loop(drv2, a2, rounds=1, write=False)
        yield from device_loop(drv2, a2, rounds=2, write="alt", base=27000)
        used2.complete_all()

    def cpu():
        yield mapped1.wait()
        yield mapped2.wait()
        yield from sim.migrate(mm1, v1, HPAGE_PMD_SIZE)
        yield from reuse_frames(other, box, 2600, n=4)
        moved.complete_all()
        yield used2.wait()
        yield from mm2.munmap(v2, PUD_SIZE)
        pfn = f.cache.get(HPAGE_PMD_NR)
        if pfn is not None:
            yield from tolerant(mem.soft_offline_page(pfn))
        yield from reuse_frames(other, box2, 2700, n=4)
        offlined.complete_all()

    j.spawn("cpu0", cpu())
    j.spawn("dev0", dev1())
    j.spawn("dev1", dev2())
    j.then("check", ops(lambda: cpu_reads(mm1, a1 + b1),
                        lambda: cpu_reads(other, reused(box, 4) + reused(box2, 4))))


_historical(
    Historical("hugetlb-shared-pmd-migration", "kvm", "kvm", "modern",
               ("UseAfterFree", "StaleRead", "StaleMapping", "CrossMmAccess"),
               "017b1660df89 'mm: migration: fix migration of huge PMD shared pages' (4.19): "
               "try_to_unmap_one calls huge_pmd_unshare on a shared hugetlb PMD table and "
               "adjust_range_if_pmd_sharing_possible first widens the notifier range to the "
               "PUD span ('mmu notifiers are called before locking page tables, but we can not "
               "be sure of PMD sharing until page tables are locked'). Replayed broken as 4.18 "
               "(hugetlb_pmd_unshare='none': the walk stopped at the first sharer; the "
               "option's 'unshare_narrow', which no release had, is caught too)",
               "017b1660df89", 2018),
    build=_hugetlb_shared_pmd_migration, apis=("modern",),
    broken=dict(description="4.18: migration of a page of a shared hugetlb PMD table stops "
                "its rmap walk at the first sharer (mapcount 1), never unsharing or notifying "
                "the others", sim_options={"kernel": "4.18"}),
    fixed=dict(description="the same with the notifier over the whole PUD span (4.19, "
               "017b1660df89)", sim_options={"kernel": "4.19"}))
