"""Window-directed search (smmu.explore.steer) and the rule judged when a mapping is made:
a fault placed across a window is caught at note_map, naming the task, the step and the
driver's source line; the reference driver stays clean under the same placements."""

import drivers

from smmu.explore import Steer, explore, run_once, window_plans
from smmu.explore.steer import windows_of


def recorded(scenario, cls, api):
    rec = Steer(record=True)
    r = run_once(scenario, cls, api, rec, 0, stop_on_violation=False)
    return rec, r


def test_a_recording_run_shows_the_windows_and_the_plans_place_faults_around_them():
    rec, r = recorded("reclaim-while-device-reads", drivers.KVM, "modern")
    wins = windows_of(rec.events)
    assert wins and all(kind == "range_start" for _, kind, _, _, _ in wins)
    plans = window_plans(rec.events, r.schedule, set())
    tags = {key[4] for key, _, _ in plans}
    assert {"before-end", "inside-end", "inside-over", "inside-map", "before-map"} <= tags
    done = {key for key, _, _ in plans}
    assert window_plans(rec.events, r.schedule, done) == []      # each placement once


def test_windows_find_the_sequence_bumped_in_start_at_the_map():
    cls = drivers.BUGGY["kvm_seq_in_start"]
    ex = explore("reclaim-while-device-reads", cls, "modern", strategy="windows",
                 schedules=50)
    assert ex.findings, ex
    f = ex.findings[0]
    v = f.violation
    assert f.strategy == "windows" and v.kind == "StaleMapping"
    assert v.task == "dev0" and v.step > 0                      # when and who
    assert "drivers/kvm.py" in v.details["where"] and "install_spte" in v.details["where"]
    assert v.details["reason"] == "stale when made"
    assert "the primary maps nothing there now" in v.message


def test_the_reference_kvm_is_clean_under_every_placement():
    ex = explore("reclaim-while-device-reads", drivers.KVM, "modern", strategy="windows",
                 schedules=200)
    assert ex.ok, [f.violation.message for f in ex.findings]
    assert ex.schedules_run > 10


def test_a_writable_map_over_a_read_only_pte_is_caught_when_it_is_made():
    cls = drivers.BUGGY["kvm_cow_writable"]
    ex = explore("ksm-merge", cls, "modern", strategy="windows", schedules=20)
    v = ex.findings[0].violation
    assert v.kind == "StaleMapping" and v.details["reason"] == "writable over read-only"
    assert v.task == "dev0" and "install_spte" in v.details["where"]


def test_steer_follows_its_prefix_then_its_directives():
    rec, r = recorded("cow-after-fork", drivers.KVM, "modern")
    key, prefix, directives = window_plans(rec.events, r.schedule, set())[0]
    st = Steer(prefix, directives, record=True)
    r2 = run_once("cow-after-fork", drivers.KVM, "modern", st, 0)
    assert r2.schedule[:len(prefix)] == prefix
    assert st.pos >= 1                                           # a directive was met


def test_hook_plans_preempt_the_cpu_inside_its_start_hook():
    """5.17's gfn=>pfn cache (buggy.kvm_gpc_speculative_valid): a refresh after the start hook
    invalidated the cache and before KVM's in-progress count rose publishes the pfn the
    migration frees. Only a fault completed between two statements of the start hook shows
    it: a hook placement finds it in a few schedules; the fixed 5.19 cache is clean under
    every placement."""
    from drivers.kvm_gpc import KVM_GPC
    from smmu.explore.steer import hook_plans
    cls = drivers.BUGGY["kvm_gpc_speculative_valid"]
    rec, r = recorded("gpc-refresh-race", cls, "modern")
    plans = hook_plans(rec.events, r.schedule, set())
    assert plans and {key[4] for key, _, _ in plans} <= {"hook-1", "hook-2", "hook-3"}
    assert hook_plans(rec.events, r.schedule, {key for key, _, _ in plans}) == []
    ex = explore("gpc-refresh-race", cls, "modern", strategy="windows", schedules=20)
    assert ex.findings, ex
    f = ex.findings[0]
    assert f.kind in cls.expected and f.params["plan"][4].startswith("hook-")
    fixed = explore("gpc-refresh-race", KVM_GPC, "modern", strategy="windows", schedules=50)
    assert fixed.ok and fixed.schedules_run > len(plans), fixed


def test_without_hook_plans_the_window_placements_miss_the_gpc_race(monkeypatch):
    """The negative twin: with only the placements around windows, the search misses it."""
    import smmu.explore.search as search
    monkeypatch.setattr(search, "hook_plans", lambda *a, **k: [])
    ex = explore("gpc-refresh-race", drivers.BUGGY["kvm_gpc_speculative_valid"], "modern",
                 strategy="windows", schedules=20)
    assert ex.ok, ex
