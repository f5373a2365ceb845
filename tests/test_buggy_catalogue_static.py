"""The broken-driver catalogue is well formed: every entry documents what it breaks, which
violation kinds the checker must report, which scenarios expose it, and breaks a reference
driver by subclassing it. (The dynamic "every broken driver is caught" tests live with the
checker and read these attributes.)"""

import inspect

import pytest

import drivers
from drivers import BUGGY, BUILTIN
from smmu.base.errors import VIOLATION_KINDS
from smmu.notifier import API_GENERATIONS, MMUNotifier

REFERENCE = tuple(BUILTIN.values())
SCENARIO_NAMES = {
    "cow-after-fork", "reclaim-while-device-reads", "writeback-device-writes", "migration",
    "ksm-merge", "munmap-during-device-fault", "mprotect-downgrade", "mremap", "truncate",
    "exit-while-device-active", "oom-reap", "fork-after-pin", "overlapping-invalidations",
    "attach-detach-during-invalidation", "apic-page-remap", "munmap-gather-batch",
    "dontneed-gather-batch", "device-migration", "peer-device-migration", "thp-partial-munmap",
    "thp-migration", "thp-cow-after-fork", "khugepaged-collapse", "thp-reclaim",
    "page-idle-tracking", "pageout-while-device-reads", "rst-cow-timeline", "gpc-refresh-race",
    "memslot-update-in-window"}


def test_catalogue_is_big_enough_and_covers_the_required_bugs():
    assert len(BUGGY) >= 13
    names = set(BUGGY)
    for required in ("kvm_no_in_progress", "kvm_no_seq", "kvm_seq_after_unlock",
                     "kvm_seq_in_start", "gru_no_range_active", "gru_flush_in_end",
                     "gru_ignore_invalidate_page", "kvm_cow_writable", "pinned_early_put",
                     "hmm_no_set_seq", "hmm_fail_blockable", "sva_sleep_in_flush",
                     "gru_release_leaves_tlb", "kvm_apic_remap"):
        assert required in names


@pytest.mark.parametrize("key", sorted(BUGGY))
def test_entry_is_documented(key):
    cls = BUGGY[key]
    assert isinstance(cls.breaks, str) and len(cls.breaks) > 20
    assert cls.mirrors is None or (isinstance(cls.mirrors, str) and cls.mirrors)
    assert inspect.getdoc(cls) and inspect.getdoc(cls) != inspect.getdoc(cls.__mro__[1])
    assert cls.name == key


@pytest.mark.parametrize("key", sorted(BUGGY))
def test_expected_kinds_are_real_violation_kinds(key):
    cls = BUGGY[key]
    assert isinstance(cls.expected, (set, frozenset)) and cls.expected
    unknown = set(cls.expected) - set(VIOLATION_KINDS)
    assert not unknown, f"{key}: unknown kinds {unknown}"


@pytest.mark.parametrize("key", sorted(BUGGY))
def test_scenarios_are_named_scenarios(key):
    cls = BUGGY[key]
    assert isinstance(cls.scenarios, tuple) and cls.scenarios
    assert set(cls.scenarios) <= SCENARIO_NAMES, set(cls.scenarios) - SCENARIO_NAMES


@pytest.mark.parametrize("key", sorted(BUGGY))
def test_subclasses_a_reference_driver_within_its_generations(key):
    cls = BUGGY[key]
    assert issubclass(cls, MMUNotifier)
    bases = [r for r in REFERENCE if issubclass(cls, r)]
    assert len(bases) == 1, f"{key} must break exactly one reference driver"
    assert cls.apis and set(cls.apis) <= set(bases[0].apis) <= set(API_GENERATIONS)


@pytest.mark.parametrize("key", sorted(BUGGY))
def test_overrides_only_a_few_methods(key):
    cls = BUGGY[key]
    own = {n for n, v in vars(cls).items()
           if callable(v) and (not n.startswith("__") or n == "__init__")}
    assert own, f"{key} overrides nothing: it breaks nothing"
    assert len(own) <= 3


def test_scenario_names_match_the_registry():
    import smmu.scenarios  # noqa: F401 - registers the scenarios
    from smmu.explore import SCENARIOS
    for key, cls in BUGGY.items():
        missing = set(cls.scenarios) - set(SCENARIOS)
        assert not missing, f"{key} names unregistered scenarios {missing}"


def test_reference_drivers_are_exported_and_documented():
    assert set(BUILTIN) == {"kvm", "gru", "xpmem", "iommu_sva", "hmm_mirror", "pinned"}
    for name, cls in BUILTIN.items():
        assert getattr(drivers, cls.__name__) is cls
        assert cls.name == name
        mod = inspect.getmodule(cls)
        assert "models" in (mod.__doc__ or "").lower() or "Models" in (mod.__doc__ or "")
        assert inspect.getdoc(cls)
    assert drivers.IOMMU_SVA.apis == ("modern",) and drivers.HMM_MIRROR.apis == ("modern",)
    assert drivers.XPMEM.may_sleep and not drivers.KVM.may_sleep
