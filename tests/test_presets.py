"""Kernel presets: Simulator(kernel=...), explicit options over them, the docs table, and
that each preset really behaves like its release (each check has its twin: the release
before or after the change)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import drivers
from smmu import MMUNotifier, PAGE_SIZE, Simulator, cli
from smmu.base.constants import HPAGE_PMD_SIZE
from smmu.base.errors import UsageError
from smmu.base.pte import PTE_HUGE, PTE_SPECIAL
from smmu.explore import explore
from smmu.scenarios import RefusingNotifier
from smmu.sim.presets import CHANGES, GENERATION_BOUND, KERNELS, PRESET_OPTIONS, kernel_preset, \
    kernels, markdown_table

P = PAGE_SIZE
DOCS = Path(__file__).resolve().parent.parent / "docs" / "kernels.md"


def test_every_preset_builds_a_simulator_with_its_options():
    for version, k in KERNELS.items():
        sim = Simulator(kernel=version)
        assert sim.kernel == version
        assert sim.notifier_api == k.options["notifier_api"]
        assert sim.rmap_locks == k.options["rmap_locks"]
        for opt in PRESET_OPTIONS:
            if opt in sim.options and GENERATION_BOUND.get(opt, sim.notifier_api) == \
                    sim.notifier_api:
                assert sim.options[opt] == k.options[opt], (version, opt)


def test_the_issue_versions_are_presets_and_change_points_are_ordered():
    for v in ("2.6.27", "2.6.32", "3.6", "4.12", "4.13", "5.5", "5.10", "6.6"):
        assert v in KERNELS
    versions = [tuple(int(x) for x in cp.version.split(".")) for cp in CHANGES]
    assert versions == sorted(versions)
    assert set(KERNELS["2.6.27"].options) == set(PRESET_OPTIONS)


def test_explicit_options_override_the_preset():
    sim = Simulator(kernel="3.6", notifier_rcu="srcu")
    assert sim.options["notifier_rcu"] == "srcu" and sim.options["mmu_gather"] == "unbounded"
    sim = Simulator("modern", kernel="2.6.27")                 # positional too
    assert sim.notifier_api == "modern" and sim.rmap_locks == "spinlock"
    # the generation overridden: 3.7's invalidate_page placement has no meaning there
    sim = Simulator(kernel="3.7", notifier_api="range_only")
    assert not sim.options["invalidate_page_outside_ptl"]
    assert Simulator(kernel="3.7").options["invalidate_page_outside_ptl"]


def test_a_release_between_change_points_runs_as_the_one_before():
    assert kernel_preset("5.15").version == "5.12"
    assert kernel_preset("4.10.17").version == "4.6"
    assert Simulator(kernel="4.14").notifier_api == "range_only"
    assert kernels("2.6.27, 5.10") == ["2.6.27", "5.10"]
    assert kernels(["all"]) == list(KERNELS)
    assert kernels(["5.10", "5.10.7"]) == ["5.10"]


@pytest.mark.parametrize("bad", ["banana", "2.4", "", "5"])
def test_a_bad_kernel_is_a_clear_usage_error(bad):
    with pytest.raises(UsageError, match="kernel|version"):
        Simulator(kernel=bad) if bad else kernels(bad)


def test_the_docs_table_is_the_generated_one():
    assert markdown_table() in DOCS.read_text()


# ------------------------------------------------------------------ behaviour per release

class Sleeper(MMUNotifier):
    """A hook that may sleep (ODP, XPMEM): legal only once the walk is SRCU."""

    name = "sleeper"
    may_sleep = True

    def invalidate_range_start(self, r):
        return 0

    def invalidate_range_end(self, r):
        return None


@pytest.mark.parametrize("version, sleeps_in_atomic", [("3.6", True), ("3.7", False)])
def test_rcu_before_3_7_srcu_after(version, sleeps_in_atomic):
    sim = Simulator(kernel=version)
    mm = sim.new_process()
    buf = sim.do(mm.mmap(2 * P, populate=True))
    sim.attach(Sleeper, mm)
    sim.spawn("cpu", mm.munmap(buf, 2 * P))
    res = sim.run()
    assert ("SleepInAtomic" in res.kinds()) == sleeps_in_atomic


class PtlProbe(MMUNotifier):
    name = "ptl_probe"

    def __init__(self, sim, mm):
        super().__init__(sim, mm)
        self.held = []

    def invalidate_page(self, mm, address):
        self.held.append(mm.page_table_lock.owner is not None)


@pytest.mark.parametrize("version, under_ptl", [("3.6", True), ("3.10", False),
                                                ("4.11", True)])
def test_invalidate_page_placement(version, under_ptl):
    """2.6.27..3.6 and 4.11..4.12: under the PT lock; 3.7..4.10: after it is dropped."""
    sim = Simulator(kernel=version)
    mm = sim.new_process()
    buf = sim.do(mm.mmap(P))
    sim.do(mm.write(buf, 1))
    probe = sim.attach(PtlProbe, mm)
    sim.do(sim.reclaim(mm, buf, P, force=True))
    assert probe.held == [under_ptl]


def test_4_13_has_no_invalidate_page():
    sim = Simulator(kernel="4.13")
    mm = sim.new_process()
    buf = sim.do(mm.mmap(P))
    sim.do(mm.write(buf, 1))
    probe = sim.attach(PtlProbe, mm)
    sim.do(sim.reclaim(mm, buf, P, force=True))
    assert probe.held == [] and sim.notifier_api == "range_only"


class Ender(MMUNotifier):
    name = "ender"

    def __init__(self, sim, mm):
        super().__init__(sim, mm)
        self.ends = 0

    def invalidate_range_start(self, r):
        return 0

    def invalidate_range_end(self, r):
        self.ends += 1


@pytest.mark.parametrize("version, paired", [("4.19", False), ("5.10", False), ("5.12", True)])
def test_nonblock_end_pairing(version, paired):
    sim = Simulator(kernel=version)
    mm = sim.new_process()
    sim.do(mm.mmap(2 * P, populate=True))
    sim.attach(RefusingNotifier, mm)
    ender = sim.attach(Ender, mm)
    sim.do(sim.oom_reap(mm))
    assert (ender.ends > 0) == paired


@pytest.mark.parametrize("version, reuse", [("5.8", "mapcount"), ("5.9", "page_count")])
def test_cow_rules(version, reuse):
    sim = Simulator(kernel=version)
    assert sim.options["cow_reuse"] == reuse
    assert sim.options["fork_copies_pinned"] == (reuse == "page_count")


# ------------------------------------------------------------------ smmu check --kernel

def test_check_prints_a_row_per_kernel_and_writes_them(tmp_path, capsys):
    out = tmp_path / "k.json"
    rc = cli.main(["check", "kvm", "--kernel", "2.6.27,4.13", "--kernel", "6.6",
                   "--scenario", "migration", "--schedules", "2", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "kvm by kernel" in text
    doc = json.loads(out.read_text())
    assert [k["kernel"] for k in doc["kernels"]] == ["2.6.27", "4.13", "6.6"]
    assert [k["api"] for k in doc["kernels"]] == ["v2008", "range_only", "modern"]
    assert all(k["verdict"] == "clean" for k in doc["kernels"])


def test_check_says_which_kernels_a_driver_cannot_run_on(tmp_path, capsys):
    out = tmp_path / "k.json"
    rc = cli.main(["check", "hmm_mirror", "--kernel", "2.6.27,6.6", "--scenario", "migration",
                   "--schedules", "1", "--json", str(out)])
    assert rc == 0
    verdicts = {k["kernel"]: k["verdict"] for k in json.loads(out.read_text())["kernels"]}
    assert verdicts["6.6"] == "clean" and verdicts["2.6.27"].startswith("not run")


@pytest.mark.parametrize("args, msg", [(["--kernel", "banana"], "not a version"),
                                       (["--kernel", "2.6.27"], "nothing to run")])
def test_check_kernel_usage_errors(args, msg, capsys):
    rc = cli.main(["check", "hmm_mirror", "--schedules", "1"] + args)
    assert rc == 2
    assert msg in capsys.readouterr().err


# ------------------------------------------------------------------ THP, aging, OOM reaper eras

@pytest.mark.parametrize("version, expect", [
    ("2.6.32", {"thp": "never", "huge_zero_page": False, "oom_reaper": "none"}),
    ("2.6.38", {"thp": "madvise", "thp_cow": "copy", "huge_zero_page": False}),
    ("3.7", {"huge_zero_page": False, "mmu_gather": "batch_limit"}),
    ("3.8", {"huge_zero_page": True}),
    ("4.5", {"oom_reaper": "none"}),
    ("4.6", {"oom_reaper": "no_notifier"}),
    ("4.13", {"thp_swap": False, "thp_migration": False, "oom_reaper": "no_notifier"}),
    ("4.14", {"thp_swap": True, "thp_migration": True, "oom_reaper": "no_notifier"}),
    ("4.15", {"oom_reaper": "skip_notifiers"}),
    ("4.18", {"oom_reaper": "blockable_check"}),
    ("4.19", {"oom_reaper": "nonblock"}),
    ("5.7", {"thp_cow": "copy"}),
    ("5.8", {"thp_cow": "split"}),
    ("5.19", {"lru_gen": "off"}),
    ("6.1", {"lru_gen": "look_around"}),
    ("6.9", {"lru_gen": "look_around"}),
    ("6.12", {"lru_gen": "look_around_notify"}),
    ("2.6.27", {"mmu_gather": "zap_block"}),
    ("3.0", {"mmu_gather": "unbounded"}),
])
def test_each_preset_sets_the_thp_aging_oom_and_gather_options(version, expect):
    sim = Simulator(kernel=version)
    for option, value in expect.items():
        assert sim.options[option] == value, (version, option)
        held = sim.memory.gather.mode if option == "mmu_gather" else getattr(sim.memory, option)
        assert held == value, (version, option)           # what the primary MM runs with


def _huge(sim, write=True):
    mm = sim.new_process()
    base = sim.do(mm.mmap(2 * HPAGE_PMD_SIZE))
    h = (base + HPAGE_PMD_SIZE - 1) & ~(HPAGE_PMD_SIZE - 1)
    sim.do(mm.madvise(h, HPAGE_PMD_SIZE, "hugepage"))
    sim.do(mm.write(h, 7) if write else mm.read(h))
    return mm, mm.pt.lookup_pmd(h // P)


@pytest.mark.parametrize("version, huge", [("2.6.32", False), ("2.6.38", True)])
def test_transparent_huge_pages_arrive_in_2_6_38(version, huge):
    _mm, word = _huge(Simulator(kernel=version))
    assert bool(word & PTE_HUGE) is huge


@pytest.mark.parametrize("version, zero", [("3.7", False), ("3.8", True)])
def test_the_huge_zero_page_arrives_in_3_8(version, zero):
    _mm, word = _huge(Simulator(kernel=version), write=False)
    assert word & PTE_HUGE and bool(word & PTE_SPECIAL) is zero


@pytest.mark.parametrize("version, whole", [("4.13", False), ("4.14", True)])
def test_a_thp_migrates_whole_from_4_14(version, whole):
    sim = Simulator(kernel=version)
    mm, _word = _huge(sim)
    h = mm.vmas[0].start + HPAGE_PMD_SIZE - 1 & ~(HPAGE_PMD_SIZE - 1)
    sim.do(sim.migrate(mm, h, HPAGE_PMD_SIZE))
    assert bool(mm.pt.lookup_pmd(h // P) & PTE_HUGE) is whole
    assert sim.do(mm.read(h)) == 7 and not sim.memory.check_invariants()


class Ranges(MMUNotifier):
    """Records the ranges it is invalidated for."""

    name = "range_probe"

    def __init__(self, sim, mm):
        super().__init__(sim, mm)
        self.ranges = []

    def invalidate_range_start(self, r):
        self.ranges.append((r.start, r.end))
        return 0

    def invalidate_range_end(self, r):
        return None


@pytest.mark.parametrize("version, split", [("5.7", False), ("5.8", True)])
def test_a_huge_cow_copies_until_5_7_and_splits_from_5_8(version, split):
    sim = Simulator(kernel=version)
    mm, _word = _huge(sim)
    h = mm.vmas[0].start + HPAGE_PMD_SIZE - 1 & ~(HPAGE_PMD_SIZE - 1)
    sim.do(mm.fork())
    sim.do(mm.write(h + P, 8))
    assert bool(mm.pt.lookup_pmd(h // P) & PTE_HUGE) is not split
    assert sim.do(mm.read(h)) == 7 and sim.do(mm.read(h + P)) == 8


class Young(MMUNotifier):
    name = "young_probe"

    def __init__(self, sim, mm):
        super().__init__(sim, mm)
        self.cleared = []

    def clear_flush_young(self, mm, start, end):
        return False

    def clear_young(self, mm, start, end):
        self.cleared.append(start)
        return False


@pytest.mark.parametrize("version, look_around_notifies", [("6.8", False), ("6.12", True)])
def test_the_mglru_look_around_calls_clear_young_from_6_12(version, look_around_notifies):
    sim = Simulator(kernel=version)
    mm = sim.new_process()
    buf = sim.do(mm.mmap(8 * P))
    for i in range(8):
        sim.do(mm.write(buf + i * P, i))
    probe = sim.attach(Young, mm)
    sim.do(sim.reclaim(mm, buf, P))
    assert bool(probe.cleared) is look_around_notifies


@pytest.mark.parametrize("version, reaped, notified", [
    ("4.14", True, False),          # 4.6..4.14: reaped behind the notifier's back
    ("4.15", False, False),         # 4d4bbd8526a8: an mm with notifiers is left alone
    ("4.16", True, True),           # a non-sleeping notifier: ordinary start/end
    ("4.19", True, True)])          # non-blockable start
def test_the_oom_reaper_per_era(version, reaped, notified):
    sim = Simulator(kernel=version)
    mm = sim.new_process()
    buf = sim.do(mm.mmap(2 * P))
    sim.do(mm.write(buf, 1))
    probe = sim.attach(Ranges, mm)
    sim.do(sim.oom_reap(mm))
    assert (mm.lookup_pte(buf) == 0) is reaped
    assert bool(probe.ranges) is notified


def test_no_oom_reaper_before_4_6():
    sim = Simulator(kernel="4.5")
    mm = sim.new_process()
    sim.do(mm.mmap(P, populate=True))
    with pytest.raises(UsageError, match="4.6"):
        sim.do(sim.oom_reap(mm))
    assert Simulator(kernel="4.5", oom_reaper="no_notifier").memory.oom_reaper == "no_notifier"


@pytest.mark.parametrize("version, corrupt", [("3.8", True), ("3.9", False), ("3.10", False)])
def test_unregister_racing_exit_per_era(version, corrupt):
    """3.6..3.8's mmu_notifier_unregister ran ->release, then hlist_del_rcu: when exit's
    __mmu_notifier_release unhashed the subscription meanwhile the kernel oopsed
    (751efd8610d3). 3.9 unlinks under the lock first; 3.10 (d34883d4e35c) uses
    hlist_del_init_rcu (a second ->release stays possible, harmlessly)."""
    ex = explore("release-unregister-race", drivers.KVM, "v2008", strategy="random",
                 schedules=40, seed=0, sim_options={"kernel": version}, stop_at_first=False)
    kinds = {f.kind for f in ex.findings}
    assert ("ListCorruption" in kinds) is corrupt, kinds
    assert kinds <= {"ListCorruption"}
