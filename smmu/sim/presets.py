"""Kernel presets: ``Simulator(kernel="3.6")`` picks every era-dependent option as that
release had it; options given explicitly still win.

The table is a list of change points (:data:`CHANGES`): each Linux release where a modelled
behaviour changed, with the options it sets and the commit. A preset is the options of the
base (2.6.27) with every change up to its release applied (:data:`KERNELS`). A version that
is not a preset gets the latest preset at or before it (``"5.15"`` runs as ``"5.12"``): the
table lists every change point of every modelled option, so nothing modelled changed in
between. ``docs/kernels.md`` is generated from the table (:func:`markdown_table`; a test
keeps them equal).

Where the issue's or the background notes' version numbers differ from the kernel's, the
kernel's are used and the table says so (SRCU came in 3.7, not 3.6; ``invalidate_page``
ran outside the PT lock in 3.7..4.10, not "until 2017"; c7ab0d2fdc84 is 4.11). Each
behaviour was read in the source of the releases around it (2.6.27, 2.6.32, 3.6, 3.7, 3.10,
4.9, 4.10, 4.12, 4.13, 4.19, 5.8, 5.9, 5.10, 5.12, 5.19, 6.6, 6.8, 6.9, 6.12); a commit id
marked ``?`` is from memory, not re-checked.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from smmu.base.errors import UsageError


@dataclass(frozen=True)
class Change:
    """One modelled behaviour of one release: ``option = value`` (a ``Simulator`` keyword,
    or None for a change the generation or the model already covers), what Linux did
    (``what``) and the commit (``commit``)."""

    option: str | None
    value: object
    what: str
    commit: str


@dataclass(frozen=True)
class ChangePoint:
    version: str
    year: int
    changes: tuple


def _v(version: str) -> tuple:
    """``"2.6.27"`` -> ``(2, 6, 27)`` for ordering; UsageError when not a version."""
    try:
        parts = tuple(int(p) for p in str(version).split("."))
    except ValueError:
        parts = ()
    if not 2 <= len(parts) <= 3:
        raise UsageError(f"kernel {version!r} is not a version like 2.6.27 or 5.10: use one "
                         f"of {', '.join(KERNELS)} or all")
    return parts


C = Change
#: the change points, oldest first (the first one sets every option)
CHANGES = (
    ChangePoint("2.6.27", 2008, (
        C("notifier_api", "v2008", "the merged API: release, clear_flush_young, invalidate_page "
          "(ptep_clear_flush_notify), invalidate_range_start/end", "cddb8a5c14aa"),
        C("rmap_locks", "spinlock", "anon_vma->lock and mapping->i_mmap_lock are spinlocks: hooks "
          "called from reverse-map walks run atomic", "cddb8a5c14aa (tree as of 2.6.27)"),
        C("notifier_rcu", "rcu", "every hook dispatch walks the list under rcu_read_lock(): "
          "no hook may sleep", "cddb8a5c14aa"),
        C("release_order", "unlink_first", "__mmu_notifier_release unlinks a subscription "
          "(hlist_del_init_rcu) before calling its ->release", "cddb8a5c14aa"),
        C("invalidate_page_outside_ptl", False, "invalidate_page is called by "
          "ptep_clear_flush_notify, under the PT lock", "cddb8a5c14aa"),
        C("mmu_gather", "zap_block", "unmap_vmas frees every ZAP_BLOCK_SIZE chunk and every "
          "FREE_PTE_NR (506) gathered pages inside the start..end window", "tree as of 2.6.27"),
        C("cow_reuse", "mapcount", "do_wp_page reuses an anonymous page its mapping alone "
          "maps (can_share_swap_page / reuse_swap_page: mapcount)", "tree as of 2.6.27"),
        C("fork_copies_pinned", False, "fork shares a pinned page COW like any other",
          "tree as of 2.6.27"),
        C("nonblock_fail_calls_end", True, "no non-blockable start exists (the option has no "
          "effect before 4.19)", "-"),
        C("exit_mmap_lock", "none", "exit_mmap takes no mmap_lock after "
          "mmu_notifier_release (until 5.18)", "tree as of 2.6.27"),
        C("cow_notify", "clear_flush_notify", "do_wp_page replaces the PTE with "
          "ptep_clear_flush_notify (invalidate_page under the PT lock), then set_pte_at",
          "tree as of 2.6.27"),
        C("anon_exclusive", False, "no PageAnonExclusive: do_wp_page, GUP, reclaim and "
          "migration decide from page counts alone", "tree as of 2.6.27"),
        C("reclaim_skips_pinned", False, "reclaim swaps a pinned anonymous page out like any "
          "other (the pin keeps the page in the swap cache)", "tree as of 2.6.27"),
        C("mprotect_writable_exclusive", False, "mprotect adds write permission lazily: the "
          "next write fault does it", "tree as of 2.6.27"),
        C("unshare_longterm_ro_pins", False, "an R/O long-term pin of a non-anonymous page "
          "(the zero page, a page-cache page) in a COW mapping pins it as it is",
          "tree as of 2.6.27"),
        C("munmap_downgrade", False, "munmap, brk and mremap hold mmap_lock for write across "
          "the zap", "tree as of 2.6.27"),
        C("mprotect_notify", "change_protection", "mprotect_fixup brackets each VMA's part of "
          "the range with one start/end pair", "tree as of 2.6.27"),
        C("interval_remove_race", False, "no interval notifiers (the option has no effect "
          "before 5.5)", "-"),
        C("pagemap_scan_unlocked", False, "no PAGEMAP_SCAN (it came in 6.7; the model's "
          "pagemap_scan is the fixed one)", "-"),
        C("thp", "never", "no transparent huge pages (mm/huge_memory.c is absent in 2.6.32)",
          "tree as of 2.6.27"),
        C("thp_cow", "copy", "no THP (the option has no effect before 2.6.38)", "-"),
        C("huge_zero_page", False, "no huge zero page (absent in 3.7.2)", "tree as of 2.6.27"),
        C("thp_swap", False, "no THP swap-out (absent in 4.13.4)", "tree as of 2.6.27"),
        C("thp_migration", False, "no PMD migration entries (absent in 4.13.4)",
          "tree as of 2.6.27"),
        C("lru_gen", "off", "no multi-gen LRU (absent in 5.19)", "tree as of 2.6.27"),
        C("hugetlb_pmd_unshare", "none", "hugetlb PMD tables are shared between processes "
          "(huge_pmd_share, x86 since 2.6.20); try_to_unmap_one clears the huge PMD in the "
          "shared table and the mapcount drops to 0, so the rmap walk stops at the first "
          "sharer and no other sharer's notifier is called", "39dde65c9940"),
        C("oom_reaper", "none", "no OOM reaper: an OOM victim's memory is freed by its own "
          "exit (sim.oom_reap is a usage error before 4.6)", "tree as of 2.6.27"),
    )),
    ChangePoint("2.6.32", 2009, (
        C(None, None, "change_pte and KSM: set_pte_at_notify calls change_pte, or "
          "invalidate_page for a notifier without it (the v2008 generation has both; 2.6.27 "
          "had neither, so a KSM scenario is not a 2.6.27 workload)", "828502d30073"),
        C("cow_notify", "set_pte_at_notify", "do_wp_page: ptep_clear_flush, then "
          "set_pte_at_notify, which sets the PTE first and then calls change_pte (or "
          "invalidate_page), all under the PT lock, no start/end", "828502d30073"),
    )),
    ChangePoint("2.6.38", 2011, (
        C("thp", "madvise", "transparent huge pages: do_huge_pmd_anonymous_page maps a 2 MiB "
          "PMD where aligned and allowed (absent in 2.6.32, present in 3.6). The Kconfig "
          "default is TRANSPARENT_HUGEPAGE_ALWAYS; the presets use madvise (the Simulator's "
          "default), so only what madvise(MADV_HUGEPAGE) asks for is huge: pass thp='always' "
          "for the Kconfig default", "71e3aac0724f?"),
        C("thp_cow", "copy", "do_huge_pmd_wp_page copies a shared huge page into a new THP "
          "under a 2 MiB start/end (do_huge_pmd_wp_page_fallback: 512 small pages when that "
          "allocation fails)", "71e3aac0724f?"),
        C(None, None, "khugepaged calls test_young (khugepaged_scan_pmd, "
          "__collapse_huge_page_isolate) before it collapses 512 PTEs under a 2 MiB start/end; "
          "still so in 6.13", "8ee53820edfd"),
    )),
    ChangePoint("3.0", 2011, (
        C("rmap_locks", "rwsem", "anon_vma->mutex and i_mmap_mutex: hooks from reverse-map "
          "walks may sleep (rw semaphores from 3.8 and 3.19)", "2b575eb64f7a?, 3d48ae45e723"),
        C("mmu_gather", "unbounded", "the preemptible on-stack mmu_gather allocates batches "
          "without a limit: pages are freed after end unless a batch allocation fails",
          "'mm: Preemptible mmu_gather' (3.0)"),
    )),
    ChangePoint("3.6", 2012, (
        C("release_order", "release_first_del_rcu", "->release of every subscription under "
          "RCU, then unlink: a page freed after the unlink is no longer mapped by the "
          "secondary MMU; mmu_notifier_unregister calls ->release, then hlist_del_rcu, which "
          "oopses on a node exit unlinked meanwhile (until 3.9)", "3ad3d901bbcf"),
    )),
    ChangePoint("3.7", 2012, (
        C("notifier_rcu", "srcu", "a global SRCU domain so hooks may sleep (3.7, not 3.6 as "
          "the issue says: 3.6.5 still walks under rcu_read_lock)", "21a92735f660"),
        C("invalidate_page_outside_ptl", True, "try_to_unmap_one and page_mkclean_one call "
          "invalidate_page after pte_unmap_unlock", "2ec74c3ef2d8?"),
        C("cow_notify", "range", "do_wp_page and KSM bracket the PT-locked update with "
          "invalidate_range_start/end; set_pte_at_notify calls change_pte before it sets the "
          "PTE, with no invalidate_page fallback (no COW ever called invalidate_page after "
          "the PT lock was dropped)", "6bdb913f0a70"),
        C("mmu_gather", "batch_limit", "MAX_GATHER_BATCH_COUNT: a full gather (9698 pages) is "
          "freed inside the window", "53a59fc67f97?"),
    )),
    ChangePoint("3.8", 2013, (
        C("huge_zero_page", True, "a read fault of a THP-eligible range maps the huge zero "
          "page (set_huge_zero_page; absent in 3.7.2, present in 3.10)", "4a6c1297268c?"),
    )),
    ChangePoint("3.9", 2013, (
        C("release_order", "unlink_first", "the fix for the unregister race unlinks before "
          "->release again, reopening the 3.6 bug", "751efd8610d3"),
    )),
    ChangePoint("3.10", 2013, (
        C("release_order", "release_first", "->release first, then hlist_del_init_rcu (a "
          "second, harmless ->release stays possible)", "d34883d4e35c"),
    )),
    ChangePoint("3.15", 2014, (
        C("mprotect_notify", "change_pmd_range", "change_pmd_range opens one start/end pair "
          "per PUD span at its first populated PMD, to the end of the span; an empty span "
          "gets none", "a5338093bfb4"),
    )),
    ChangePoint("4.6", 2016, (
        C("oom_reaper", "no_notifier", "the OOM reaper unmaps the victim's private VMAs "
          "(unmap_page_range under down_read_trylock, MAX_OOM_REAP_RETRIES) without any "
          "notifier call: a secondary MMU keeps translations of the freed pages (4.12 "
          "mm/oom_kill.c has no mmu_notifier)", "aac453635549?"),
    )),
    ChangePoint("4.11", 2017, (
        C("invalidate_page_outside_ptl", False, "try_to_unmap_one, rewritten on "
          "page_vma_mapped_walk, calls invalidate_page under the PT lock again (4.11, not "
          "4.13: it broke drivers that slept there, reported during 4.13-rc)",
          "c7ab0d2fdc84"),
    )),
    ChangePoint("4.12", 2017, ()),
    ChangePoint("4.13", 2017, (
        C("notifier_api", "range_only", "invalidate_page is gone: every invalidation is "
          "bracketed by invalidate_range_start/end (invalidate_range, 3.19+, is not modelled "
          "in this generation)", "5f32b265400d, 369ea8242c0f"),
    )),
    ChangePoint("4.14", 2017, (
        C("thp_migration", True, "a PMD-mapped THP migrates whole through a PMD migration "
          "entry (set_pmd_migration_entry: absent in 4.13.4, present in 4.19)",
          "616b8371539a?"),
        C("thp_swap", True, "a PMD-mapped anonymous THP is swapped out whole, one range over "
          "the folio (4.14, not 4.13: 4.13.4 shrink_page_list still splits it after "
          "add_to_swap, '/* XXX: We don't support THP writes */'; 4.19 THP_SWAP 'Swap "
          "transparent huge pages in one piece')",
          "'mm, THP, swap: delay splitting THP after swapped out' (Huang Ying; id not checked)"),
    )),
    ChangePoint("4.15", 2018, (
        C("oom_reaper", "skip_notifiers", "the reaper leaves an mm with any MMU notifier "
          "alone (mm_has_notifiers)", "4d4bbd8526a8"),
    )),
    ChangePoint("4.16", 2018, (
        C("oom_reaper", "blockable_check", "the reaper skips only an mm with a notifier whose "
          "invalidate callbacks may block (mm_has_blockable_invalidate_notifiers); others "
          "get an ordinary start/end", "'mm, mmu_notifier: annotate mmu notifiers with "
          "blockable invalidate callbacks' (David Rientjes; id not checked)"),
    )),
    ChangePoint("4.19", 2018, (
        C("notifier_api", "modern", "invalidate_range_start may be non-blockable and fail "
          "with -EAGAIN (the OOM reaper)", "93065ac753e4"),
        C("nonblock_fail_calls_end", False, "after a failed non-blockable start no end is "
          "called for the notifiers whose start succeeded", "93065ac753e4"),
        C("oom_reaper", "nonblock", "the reaper calls "
          "mmu_notifier_invalidate_range_start_nonblock per VMA and skips a VMA whose start "
          "fails with -EAGAIN", "93065ac753e4"),
        C("hugetlb_pmd_unshare", "unshare_wide", "try_to_unmap_one calls huge_pmd_unshare "
          "on a shared hugetlb PMD table (the whole PUD span leaves this mm; the walk goes on "
          "to the other sharers) after adjust_range_if_pmd_sharing_possible widened the "
          "notifier range to the PUD span (present in 4.19.1 mm/rmap.c)", "017b1660df89"),
    )),
    ChangePoint("4.20", 2018, (
        C("munmap_downgrade", True, "munmap, a shrinking brk and a shrinking mremap detach the "
          "VMAs, then downgrade mmap_lock to read for the zap (faults elsewhere run "
          "meanwhile)", "dd2283f2605e"),
    )),
    ChangePoint("5.5", 2020, (
        C(None, None, "interval notifiers (mmu_interval_notifier_insert, read_begin, "
          "read_retry, set_seq); events and owner in struct mmu_notifier_range came in 5.0 and "
          "5.9: the modern generation has them all", "99cb252f5e68?"),
        C("interval_remove_race", True, "mmu_interval_notifier_remove waits for "
          "invalidate_seq to move with a lockless read: it can return while mn_itree_inv_end "
          "still has the subscription on its deferred list", "99cb252f5e68?"),
    )),
    ChangePoint("5.8", 2020, (
        C("thp_cow", "split", "do_huge_pmd_wp_page splits a shared huge PMD and the fault "
          "falls back to a 4 KiB COW (present in 5.8.1; 4.20 still copies)",
          "3917c80280c9?"),
    )),
    ChangePoint("5.9", 2020, (
        C("cow_reuse", "page_count", "do_wp_page reuses a page only if page_count == 1 (the "
          "CVE-2020-29374 fix)", "09854ba94c6a?"),
        C("fork_copies_pinned", True, "copy_present_page gives the child a copy of a page that "
          "may be DMA-pinned", "70e806e4e645?"),
        C(None, None, "MMU_NOTIFY_MIGRATE with the migrating driver as owner", "6b49bf6ddb70?"),
    )),
    ChangePoint("5.10", 2020, ()),
    ChangePoint("5.11", 2021, (
        C("reclaim_skips_pinned", True, "shrink_page_list keeps a maybe-DMA-pinned anonymous "
          "page ('if (page_maybe_dma_pinned(page)) goto keep_locked')", "feb889fb40fa"),
    )),
    ChangePoint("5.12", 2021, (
        C("nonblock_fail_calls_end", True, "a failed non-blockable start calls end on every "
          "notifier that has one (present in 5.12.9, absent in 5.10.7)", "c2655835fd8c"),
    )),
    ChangePoint("5.18", 2022, (
        C("interval_remove_race", False, "remove reads invalidate_seq under "
          "subscriptions->lock (mmu_interval_seq_released): it returns only after "
          "mn_itree_inv_end left its critical section", "319561669a59"),
    )),
    ChangePoint("5.19", 2022, (
        C("exit_mmap_lock", "write", "exit_mmap takes mmap_lock for write after "
          "mmu_notifier_release", "64591e8605d6"),
        C("anon_exclusive", True, "PageAnonExclusive: set on new anonymous pages, cleared when "
          "fork or KSM shares one, kept in swap and migration entries; do_wp_page reuses an "
          "exclusive page, an R/O FOLL_PIN of a shared one unshares first "
          "(FAULT_FLAG_UNSHARE), reclaim and migration refuse a pinned exclusive one",
          "6c287605fd56, a7f226604170, 1493a1913e34"),
    )),
    ChangePoint("6.0", 2022, (
        C("mprotect_writable_exclusive", True, "mprotect maps an exclusive anonymous page (and "
          "a dirty shared one) writable at once (can_change_pte_writable)", "64fe24a3e05e?"),
    )),
    ChangePoint("6.1", 2022, (
        C("exit_mmap_lock", "read_then_write", "exit_mmap: mmap_read_lock around unmap_vmas, "
          "mmap_write_lock for free_pgtables (seen in 6.6 and 6.12)", "tree as of 6.1"),
        C("lru_gen", "look_around", "the multi-gen LRU: folio_referenced_one looks around a "
          "young PTE (lru_gen_look_around) and clears its neighbours' accessed bits with "
          "plain ptep_test_and_clear_young, no notifier (absent in 5.19, present in 6.6 and "
          "6.8; with CONFIG_LRU_GEN_ENABLED, which distributions set)", "018ee47f1489?"),
    )),
    ChangePoint("6.2", 2022, (
        C("unshare_longterm_ro_pins", True, "gup_must_unshare: an R/O long-term pin of a "
          "non-anonymous page in a COW mapping unshares it first", "84209e87c696"),
    )),
    ChangePoint("6.6", 2023, (
        C(None, None, "invalidate_range is renamed arch_invalidate_secondary_tlbs and called "
          "from the architecture's TLB flush under the PT lock (the modern generation)",
          "1af5a8109904?"),
    )),
    ChangePoint("6.7", 2024, (
        C("pagemap_scan_unlocked", True, "PAGEMAP_SCAN's write-protecting walk starts one "
          "PROTECTION_VMA range before its loop and ends it after, taking and dropping "
          "mmap_lock around each walk in between", "52526ca7fdb9"),
    )),
    ChangePoint("6.8", 2024, (
        C("pagemap_scan_unlocked", False, "start/end per walk, inside mmap_lock "
          "(CVE-2024-26617; 6.8-rc, 6.7.3)", "4cccb6221cae"),
    )),
    ChangePoint("6.12", 2024, (
        C("lru_gen", "look_around_notify", "the multi-gen LRU ages through the notifiers: "
          "walk_pte_range, walk_pmd_range_locked and lru_gen_look_around call "
          "ptep/pmdp_clear_young_notify (clear_young) under the PT lock (absent in 6.9.0, "
          "present in 6.12 and 6.13.7; probably 6.11)", "'mm: multi-gen LRU: use "
          "{ptep,pmdp}_clear_young_notify()' (Yu Zhao, 2024; id not checked)"),
        C("mprotect_notify", "change_pud_range", "the pair moves to change_pud_range: per P4D "
          "span from the first populated PUD", "'mm/mprotect: push mmu notifier to PUDs' "
          "(Peter Xu, 2024; id not checked)"),
        C(None, None, "change_pte and set_pte_at_notify are removed (6.10; present in 6.9.0, "
          "absent in 6.12). The modern generation never calls change_pte: from 3.7 to 6.9 "
          "it ran inside start/end, where a driver that unmaps in start has nothing to "
          "change", "531f52002432"),
    )),
)


@dataclass(frozen=True)
class Kernel:
    """A preset: ``version``, ``year``, ``options`` (the ``Simulator`` keywords), and for
    each option the change point and commit that set it (``origin``)."""

    version: str
    year: int
    options: dict
    origin: dict
    notes: tuple

    def __repr__(self):
        return f"<Kernel {self.version} ({self.year}) {self.options['notifier_api']}>"


def _build():
    out = {}
    options, origin = {}, {}
    notes = []
    for cp in CHANGES:
        for ch in cp.changes:
            if ch.option is None:
                notes.append((cp.version, ch))
                continue
            options[ch.option] = ch.value
            origin[ch.option] = (cp.version, ch)
        out[cp.version] = Kernel(cp.version, cp.year, dict(options), dict(origin),
                                 tuple(notes))
    return out


#: every preset by version, oldest first
KERNELS: dict[str, Kernel] = _build()
#: the options a preset sets (every preset sets all of them)
PRESET_OPTIONS = tuple(KERNELS["2.6.27"].options)


def kernel_preset(version) -> Kernel:
    """The preset for ``version``: its own, or the latest preset at or before it (a
    version between two change points behaves like the earlier one). UsageError for
    something that is not a version or predates 2.6.27 (no MMU notifiers)."""
    if isinstance(version, Kernel):
        return version
    version = str(version).strip()
    if version in KERNELS:
        return KERNELS[version]
    want = _v(version)
    best = None
    for v in KERNELS:
        if _v(v) <= want:
            best = v
    if best is None:
        raise UsageError(f"kernel {version!r}: MMU notifiers arrived in 2.6.27; use one of "
                         f"{', '.join(KERNELS)}")
    return KERNELS[best]


def kernels(spec) -> list[str]:
    """The preset versions ``spec`` names: ``"all"``, one version, a comma-separated list,
    or a list of those (``smmu check --kernel``). Each resolves with :func:`kernel_preset`;
    duplicates are dropped, order kept."""
    items = spec if isinstance(spec, (list, tuple)) else [spec]
    out = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            names = list(KERNELS) if part == "all" else [kernel_preset(part).version]
            for n in names:
                if n not in out:
                    out.append(n)
    if not out:
        raise UsageError("no kernel given: use a version like 5.10, a comma-separated list, "
                         "or all")
    return out


#: preset options that exist only in one notifier generation: dropped when the caller
#: overrides the generation (``Simulator(kernel="3.7", notifier_api="modern")`` has no
#: invalidate_page to call outside the PT lock)
GENERATION_BOUND = {"invalidate_page_outside_ptl": "v2008", "cow_notify": "v2008"}


def apply_preset(version, explicit: dict) -> dict:
    """The keyword arguments for a Simulator of kernel ``version``: the preset's options,
    then ``explicit`` (what the caller passed) over them."""
    preset = dict(kernel_preset(version).options)
    api = explicit.get("notifier_api", preset["notifier_api"])
    for option, generation in GENERATION_BOUND.items():
        if api != generation and option not in explicit:
            preset.pop(option, None)
    return {**preset, **explicit}


def _cell(value) -> str:
    return f"`{value!r}`" if not isinstance(value, str) else f"`{value}`"


def markdown_table() -> str:
    """``docs/kernels.md``'s tables: every preset with every option, and each choice with
    its commit."""
    opts = PRESET_OPTIONS
    lines = ["| kernel | year | " + " | ".join(f"`{o}`" for o in opts) + " |",
             "|---|---|" + "---|" * len(opts)]
    for k in KERNELS.values():
        cells = []
        for o in opts:
            v, ch = k.origin[o]
            cells.append(_cell(k.options[o]) + (" *" if v == k.version and k.version !=
                                                 "2.6.27" else ""))
        lines.append(f"| {k.version} | {k.year} | " + " | ".join(cells) + " |")
    lines += ["", "`*`: changed in this release.", "",
              "| release | option | value | what Linux did | commit |", "|---|---|---|---|---|"]
    for cp in CHANGES:
        for ch in cp.changes:
            opt = f"`{ch.option}`" if ch.option else "(generation)"
            val = _cell(ch.value) if ch.option else ""
            lines.append(f"| {cp.version} | {opt} | {val} | {ch.what} | {ch.commit} |")
    return "\n".join(lines) + "\n"


class PresetCall(type):
    """The metaclass that lets ``Simulator(kernel=...)`` tell explicit keywords from
    defaults: the preset's options go in first and the caller's keywords (and positional
    arguments) over them, so an explicit option always wins."""

    def __call__(cls, *args, kernel=None, **kwargs):
        if kernel is None:
            return super().__call__(*args, **kwargs)
        params = list(inspect.signature(cls.__init__).parameters)[1:]
        explicit = dict(zip(params, args))
        explicit.update(kwargs)
        preset = kernel_preset(kernel)
        return super().__call__(kernel=preset.version, **apply_preset(preset, explicit))
