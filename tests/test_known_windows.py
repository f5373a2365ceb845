"""Windows a reference driver really has, declared on the class (``known_windows``) rather
than hidden: the catalogue does not require a clean run there, and the checker does flag
them (documented true positives). Where real users close the window with a protocol, the
scenario follows it and the driver must be clean (XPMEM's fork ioctls), with a twin that
skips the protocol and is caught."""

import drivers
import pytest

from smmu import scenarios
from smmu.explore import SCENARIOS, explore


def test_known_windows_name_scenarios_the_driver_runs():
    for name, cls in drivers.BUILTIN.items():
        for sc, why in (getattr(cls, "known_windows", None) or {}).items():
            assert sc in SCENARIOS and SCENARIOS[sc].applies(cls), (name, sc)
            assert why and scenarios.known_window(cls, sc) == why
    assert scenarios.known_window(drivers.XPMEM, "mprotect-downgrade")
    # closed by the fork ioctls the scenario issues: XPMEM must be clean there
    assert scenarios.known_window(drivers.XPMEM, "cow-after-fork") is None
    assert scenarios.known_window(drivers.KVM, "mprotect-downgrade") is None


@pytest.mark.parametrize("scenario", ["mprotect-downgrade", "writeback-device-writes"])
def test_xpmem_declared_window_is_reported(scenario):
    """XPMEM drops its mappings only in end: the checker flags the write between the
    primary's write-protect and end on the windows it declares."""
    ex = explore(scenario, drivers.XPMEM, "modern", strategy="random", schedules=60, seed=0)
    assert [f.kind for f in ex.findings] == ["WriteToReadOnly"], ex


def test_xpmem_fork_without_the_fork_ioctls_is_caught_and_with_them_clean():
    class XPMEMNoForkIoctl(drivers.XPMEM):
        fork_begin = None          # the exporter forks without XPMEM_CMD_FORK_BEGIN / _END

    broken = explore("cow-after-fork", XPMEMNoForkIoctl, "modern", strategy="pct",
                     schedules=100, seed=0)
    assert [f.kind for f in broken.findings] == ["WriteToReadOnly"], broken
    fixed = explore("cow-after-fork", drivers.XPMEM, "modern", strategy="pct",
                    schedules=broken.findings[0].seed + 1, seed=0)
    assert fixed.ok, [(f.kind, f.violation.message) for f in fixed.findings]
