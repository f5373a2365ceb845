"""The chaos driver (drivers/chaos.py: KVM that yields, sleeps and takes locks at random
wherever a hook may) over every scenario, generation and rmap-lock mode: no internal error
and, the driver being correct, no violation either (issue 9, item 8). A CI-sized run; the
large one is ``make soak SCHEDULES=100000``. The twin puts back the KSM bug the chaos
found (the promoted page's reference dropped while a hook slept): the soak catches it."""


from drivers.chaos import CHAOS
from primary_mm.ksm import Ksm
from smmu.testing.soak import combos, main, soak


def test_chaos_everywhere_finds_no_internal_error_and_no_violation():
    plan = combos()
    assert len({sc.name for sc, _, _ in plan}) >= 30
    assert {api for _, api, _ in plan} == {"v2008", "range_only", "modern"}
    assert {rmap for _, _, rmap in plan} == {"rwsem", "spinlock"}
    res = soak(len(plan), seed=0)
    assert res.ok, "\n".join(str(e) for e in res.errors)
    assert not res.violations, res.violations
    assert res.runs == len(plan)


def test_chaos_hooks_really_block_where_they_may():
    from smmu.explore import run_once
    r = run_once("munmap-during-device-fault", CHAOS, "modern", "random", 3,
                 stop_on_violation=False)
    assert r.ok and r.stats.get("hooks")


def test_twin_the_soak_catches_the_ksm_reference_dropped_while_a_hook_slept(monkeypatch):
    promote = Ksm._ksm_promote

    def early_put(self, mm, va, pfn, value):
        ok = yield from promote(self, mm, va, pfn, value)
        if ok:                          # the old code: promote's own reference dropped at its
            self.frames.put(pfn)        # end (freeing a page a COW copied away while a
            self.frames.get(pfn)        # hook slept), ksm_merge's taken only then
        return ok

    monkeypatch.setattr(Ksm, "_ksm_promote", early_put)
    res = soak(120, seed=0, scenarios=["ksm-merge"])
    assert any("FrameStateError" in e.error for e in res.errors), res.errors


def test_soak_command_line(capsys):
    assert main(["--schedules", "0"]) == 2
    assert main(["--schedules", "3"]) == 0
    assert "0 internal error" in capsys.readouterr().out
