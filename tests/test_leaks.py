"""Leaks at quiescence (smmu.oracle.leaks): once a scenario has ended the harness closes every
device (MMUNotifier.close) and reports, as a Leak naming the call that took it, a page
reference a driver never dropped, an interval notifier never removed and a subscription
never unregistered or put. The reference drivers keep nothing (PINNED's pins and XPMEM's go
when their device closes)."""

import drivers
import pytest

from smmu.explore import explore, run_once, make_strategy_schedule
from smmu.notifier import MMUNotifier


class LeakyKVM(drivers.KVM):
    """KVM that forgets kvm_release_pfn_clean on the fault's success path."""

    def page_fault(self, va, write):
        real_put = self.mm.put_page
        self.mm.put_page = lambda pfn: iter(())        # the reference is never dropped
        try:
            yield from super().page_fault(va, write)
        finally:
            self.mm.put_page = real_put


class ForgetfulMirror(drivers.HMM_MIRROR):
    """The issue's user-written mirror: its release neither removes its interval notifier
    nor marks the device gone (it only drops its device page table)."""

    def release(self, mm):
        with (yield self.mutex):
            self.pt.zap_all()

    close = MMUNotifier.close          # and no teardown of its own: the default close


class NeverUnregisters(MMUNotifier):
    """A device whose close forgets mmu_notifier_unregister."""

    def invalidate_range_start(self, range):
        return 0

    def access(self, va, *, write, value=None):
        return None
        yield

    def close(self):
        return None
        yield


def leaks(result):
    return [v for v in result.violations if v.kind == "Leak"]


def test_a_page_reference_never_put_is_a_leak_naming_the_gup():
    r = run_once("cow-after-fork", LeakyKVM, "modern", make_strategy_schedule("random", 0), 0,
                 stop_on_violation=False)
    found = leaks(r)
    assert found, r.kinds()
    v = found[0]
    assert v.details["taken_by"] == "get_user_pages"
    assert "drivers/kvm.py" in v.details["where"] and "faultin_pfn" in v.details["where"]
    assert "put_page" in v.message and "never be freed" in v.message


def test_the_mirror_whose_release_keeps_its_interval_notifier_leaks_it():
    """Caught by the default search, on the exit scenario (where its release is all the
    teardown it gets) and on an ordinary one; the reference mirror is clean on both."""
    for scenario in ("exit-while-device-active", "cow-after-fork"):
        ex = explore(scenario, ForgetfulMirror, "modern", schedules=60)
        found = [f.violation for f in ex.findings if f.kind == "Leak"]
        assert found and "interval notifier" in found[0].message, (scenario, ex)
        assert "mmu_interval_notifier_remove" in found[0].message
        assert "hmm_mirror.py" in found[0].details["where"]
        assert explore(scenario, drivers.HMM_MIRROR, "modern", schedules=60).ok


def test_a_subscription_never_unregistered_leaks_the_mm():
    r = run_once("munmap-during-device-fault", NeverUnregisters, "modern",
                 make_strategy_schedule("random", 0), 0, stop_on_violation=False)
    found = leaks(r)
    assert [v.details["driver"] for v in found] == ["NeverUnregisters"]
    assert "never unregistered or put" in found[0].message


@pytest.mark.parametrize("driver", sorted(drivers.BUILTIN))
def test_reference_drivers_keep_nothing_after_close(driver):
    cls = drivers.BUILTIN[driver]
    for scenario in ("cow-after-fork", "exit-while-device-active", "fork-after-pin",
                     "writeback-device-writes"):
        for api in cls.apis:
            r = run_once(scenario, cls, api, make_strategy_schedule("random", 1), 1,
                         stop_on_violation=False)
            assert not leaks(r), (scenario, api, [v.message for v in leaks(r)])


def test_leaks_are_found_by_the_default_search_and_not_by_a_plain_run():
    ex = explore("reclaim-while-device-reads", LeakyKVM, "modern", schedules=5)
    assert [f.kind for f in ex.findings] == ["Leak"]
    from smmu import Simulator
    sim = Simulator(notifier_api="modern")          # a plain run does not close devices
    mm = sim.new_process()
    buf = sim.do(mm.mmap(4096, prot="rw"))
    drv = sim.attach(LeakyKVM, mm)
    sim.spawn("dev0", drv.access(buf, write=False))
    assert sim.run().ok and drv.registered
    assert [w for w, _ in sim.close_devices()] == ["page"] and not drv.registered
