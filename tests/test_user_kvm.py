"""The user-written KVM-style driver (tests/user_kvm.py: from the public documentation only,
dict-based, not drivers/kvm.py) is clean on every scenario and generation; the same driver
with its fault ignoring the in-flight count and the sequence is caught (issue 9: no false
alarm on a correct driver, and the rule still bites). The large runs (`smmu check
tests/user_kvm.py:UserKVM --strategy pct|random --schedules 1000`) are outside CI."""

import pytest
from user_kvm import UserKVM

from smmu import scenarios
from smmu.explore import SCENARIOS, explore
from smmu.explore.history import first_hit
from smmu.notifier import API_GENERATIONS

SCHEDULES = 6          # PCT, per (scenario, api)


def _pairs():
    return [(n, a) for n in scenarios.default_names() if SCENARIOS[n].applies(UserKVM)
            for a in API_GENERATIONS if a in SCENARIOS[n].apis and a in UserKVM.apis]


@pytest.mark.parametrize("api", API_GENERATIONS)
def test_user_written_kvm_is_clean_everywhere(api):
    pairs = [(n, a) for n, a in _pairs() if a == api]
    assert len(pairs) >= 20
    bad = []
    for name, a in pairs:
        ex = explore(name, UserKVM, a, strategy="pct", schedules=SCHEDULES, seed=0)
        bad += [f"{name}/{a}: {f.kind}: {f.violation.message}" for f in ex.findings]
    assert not bad, "false alarms:\n" + "\n".join(bad)


class UserKVMNoRetry(UserKVM):
    """Twin: installs whatever GUP returned, even while a range is in flight or after the
    sequence moved (the header's 'establishment of sptes is forbidden' broken)."""

    name = "user_kvm_no_retry"

    def may_install(self, seq) -> bool:
        return not self.dead


def test_twin_user_written_kvm_that_ignores_the_sequence_is_caught():
    kinds = {"StaleRead", "LostWrite", "UseAfterFree", "CrossMmAccess", "MapInWindow",
             "StaleMapping", "WriteToReadOnly"}
    f, seen = first_hit("munmap-during-device-fault", UserKVMNoRetry, "modern", "pct", 100,
                        kinds)
    assert f is not None, seen


def _load_small_v2008(driver, seed):
    from smmu.explore import make_strategy_schedule, run_once
    return run_once("load-small", driver, "v2008", make_strategy_schedule("random", seed, {}),
                    seed)


def test_user_written_kvm_writing_while_reclaims_invalidate_page_waits_is_clean():
    """load-small v2008, the 51st random schedule (seed 50): reclaim cleared a PTE and
    invalidate_page waited for the lock while the vCPU wrote through its SPTE; pageout saved
    the page with that write and the CPU read it back. It was a false StaleRead (the
    oracle gave the write to the ghost of a DONTNEED long over; tests/test_oracle.py has the
    deterministic form). The twin on the same scenario: the reference KVM bumping the
    sequence after dropping mmu_lock (a fault installs the page after invalidate_page zapped:
    a stale translation the device keeps using) is still caught within the first 40
    schedules (at the 59th when this was written; the load now churns a page under the
    job's vCPUs on purpose, which catches it within a few)."""
    from drivers.buggy.kvm import KVMSeqAfterUnlock

    r = _load_small_v2008(UserKVM, 50)
    assert r.ok, r.violations
    expected = set(KVMSeqAfterUnlock.expected)
    caught = next((s for s in range(40)
                   if set(_load_small_v2008(KVMSeqAfterUnlock, s).kinds()) & expected), None)
    assert caught is not None, "KVMSeqAfterUnlock clean on 40 load-small v2008 schedules"
