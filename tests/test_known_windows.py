"""Windows a reference driver really has, declared on the class (``known_windows``) rather
than hidden: the catalogue does not require a clean run there, and the checker flags them. A
declared window must lose or expose data (issue 9, item 6): XPMEM's old declarations were a
write between the primary's write-protect and ``invalidate_range_end``, which
Documentation/mm/mmu_notifier.rst allows, and lose nothing, so none remains. Where real users
close a window with a protocol, the scenario follows it and the driver must be clean
(XPMEM's fork ioctls), with a twin that skips the protocol and is caught."""

import drivers
import pytest

from smmu import scenarios
from smmu.explore import SCENARIOS, explore


def test_known_windows_name_scenarios_the_driver_runs():
    for name, cls in drivers.BUILTIN.items():
        for sc, why in (getattr(cls, "known_windows", None) or {}).items():
            assert sc in SCENARIOS and SCENARIOS[sc].applies(cls), (name, sc)
            assert why and scenarios.known_window(cls, sc) == why
    # the write-protect windows lose nothing and are no longer declared; the one left, the
    # .rst's case B, says what the attacher sees (the load scenarios have it too, by chance)
    assert set(drivers.XPMEM.known_windows) == {"rst-cow-timeline", "load", "load-small"}
    assert "rst-cow-timeline" in drivers.XPMEM.known_windows["load"]
    assert "pre-COW value" in drivers.XPMEM.known_windows["rst-cow-timeline"]
    assert scenarios.known_window(drivers.XPMEM, "mprotect-downgrade") is None
    assert scenarios.known_window(drivers.KVM, "mprotect-downgrade") is None


def test_xpmem_declared_window_is_a_data_level_finding():
    """The window XPMEM keeps (an end-only driver on a COW break, .rst case B) is caught as
    what it costs: the attacher reads the old value (StaleRead), not a protocol rule."""
    ex = explore("rst-cow-timeline", drivers.XPMEM, "modern", strategy="random",
                 schedules=100, seed=0)
    assert [f.kind for f in ex.findings] == ["StaleRead"], ex


def test_the_rst_timeline_catches_a_flush_deferred_to_end_and_clears_a_write_protect():
    """Documentation/mm/mmu_notifier.rst: an ATS/PASID-style TLB flushed only in
    invalidate_range_end is caught on the document's own COW timeline and is clean on pure
    write-protect scenarios (mprotect, page_mkclean, KSM), where the deferral is allowed."""
    bad = drivers.BUGGY["sva_flush_in_end"]
    ex = explore("rst-cow-timeline", bad, "modern", strategy="random", schedules=100, seed=0)
    assert [f.kind for f in ex.findings] == ["StaleRead"], ex
    for sc in ("mprotect-downgrade", "writeback-device-writes", "ksm-merge"):
        ok = explore(sc, bad, "modern", strategy="random", schedules=60, seed=0)
        assert ok.ok, (sc, [(f.kind, f.violation.message) for f in ok.findings])
    ref = explore("rst-cow-timeline", drivers.IOMMU_SVA, "modern", strategy="random",
                  schedules=100, seed=0)
    assert ref.ok, [(f.kind, f.violation.message) for f in ref.findings]


@pytest.mark.parametrize("scenario", ["mprotect-downgrade", "writeback-device-writes",
                                      "attach-detach-during-invalidation"])
def test_xpmem_writing_until_end_after_a_write_protect_is_clean(scenario):
    """XPMEM drops its mappings only in end: a device write between the primary's
    write-protect and end goes to the same page, which the .rst allows ("it is fine to delay
    ... to mmu_notifier_invalidate_range_end()"); nothing is lost (before: WriteToReadOnly,
    a declared window)."""
    for strategy in ("random", "pct"):
        ex = explore(scenario, drivers.XPMEM, "modern", strategy=strategy, schedules=100,
                     seed=0)
        assert ex.ok, [(f.kind, f.violation.message) for f in ex.findings]


class _XPMEMKeepsWritable(drivers.XPMEM):
    """Broken twin: its end drops nothing for a write-protect (PROTECTION_VMA), so the
    attacher keeps writing after mprotect(PROT_READ) returned."""

    def invalidate_range_end(self, range):
        if range.event.name == "PROTECTION_VMA":
            return
        yield from super().invalidate_range_end(range)


def test_twin_a_writable_mapping_kept_past_the_end_of_the_write_protect_is_caught():
    ex = explore("mprotect-downgrade", _XPMEMKeepsWritable, "modern", strategy="random",
                 schedules=100, seed=0)
    assert "WriteToReadOnly" in [f.kind for f in ex.findings], ex
    assert "Documentation/mm/mmu_notifier.rst" in ex.findings[0].violation.message


def test_xpmem_fork_without_the_fork_ioctls_exposes_post_fork_writes_and_with_them_clean():
    """Without XPMEM_CMD_FORK_BEGIN/END the attacher's writes during the fork reach the page
    the child now shares, and after it the parent's COW leaves the attacher on the child's
    page: the child sees writes made after it forked (StaleRead / LostWrite, data-level)."""
    class XPMEMNoForkIoctl(drivers.XPMEM):
        fork_begin = None          # the exporter forks without XPMEM_CMD_FORK_BEGIN / _END

    broken = explore("cow-after-fork", XPMEMNoForkIoctl, "modern", strategy="pct",
                     schedules=100, seed=0)
    assert {f.kind for f in broken.findings} & {"StaleRead", "LostWrite"}, broken
    fixed = explore("cow-after-fork", drivers.XPMEM, "modern", strategy="pct",
                    schedules=broken.findings[0].seed + 1, seed=0)
    assert fixed.ok, [(f.kind, f.violation.message) for f in fixed.findings]
