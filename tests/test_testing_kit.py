"""The hypothesis kit: coherence_test passes a correct driver and fails a racy one with the
violation report; bad arguments are clear errors; the smmu_sim fixture; the profiles."""

import json
import re
from pathlib import Path

import drivers
import pytest
from hypothesis import Phase, settings

from smmu.base.errors import BadDriver, UsageError
from smmu.scenarios import SCRIPT_OPS
from smmu.testing import (CoherenceFailure, coherence_pairs, coherence_test,
                          register_profiles)
from test_cli import load_toy


@pytest.fixture(scope="module")
def toy():
    return load_toy()


def test_coherence_test_passes_a_correct_driver(toy):
    t = coherence_test(toy.ToyDevice, api="modern", scenarios=["toy-race"], max_examples=20)
    assert t.__name__ == "test_coherence_ToyDevice"
    assert t.pairs == [("toy-race", "modern")]
    t()     # raises if hypothesis finds a violation


def test_coherence_test_fails_a_racy_driver_with_the_report(toy):
    t = coherence_test(toy.RacyToyDevice, api="modern", scenarios=["toy-race"],
                       max_examples=60)
    assert t.schedules == 60
    with pytest.raises(CoherenceFailure) as ei:
        t()
    e = ei.value
    assert e.violation.kind == "LostWrite" and e.scenario == "toy-race" and e.api == "modern"
    text = str(e)
    assert text.startswith("LostWrite at 0x1000")
    assert re.search(r"^ +\d+  dev0  ", text, re.M) and " dev1 " in text   # numbered steps
    assert "\nreproduce it:\n  smmu replay " in text          # how to replay it
    assert e.report_file and e.commands[0] == f"smmu replay {e.report_file}"


def test_a_failure_hypothesis_finds_has_a_replay_command(toy):
    # no directed search: hypothesis alone finds it; its schedule replays from the JSON file
    t = coherence_test(toy.RacyToyDevice, api="modern", scenarios=["toy-race"],
                       max_examples=60, schedules=0)
    with pytest.raises(CoherenceFailure) as ei:
        t()
    e = ei.value
    assert e.finding.strategy == "replay" and len(e.commands) == 1
    assert e.commands[0].startswith("smmu replay ")
    from smmu.explore import Finding, replay
    import json
    doc = json.loads(open(e.report_file).read())
    again = replay(Finding.from_dict(doc["violations"][0]["finding"]), driver_cls=toy.RacyToyDevice)
    assert e.violation.kind in again.kinds()


def test_a_failure_the_directed_search_finds_has_a_check_command(toy):
    t = coherence_test(toy.RacyToyDevice, api="modern", scenarios=["toy-race"])
    with pytest.raises(CoherenceFailure) as ei:
        t()
    e = ei.value
    assert e.finding.strategy != "replay"
    assert e.commands[1].startswith("smmu check ") and e.commands[1].endswith(
        "--scenario toy-race --api modern --seed 0 --schedules 60")


def test_coherence_test_all_generations_by_default(toy):
    t = coherence_test(toy.ToyDevice, scenarios=["toy-race"])
    assert [a for _, a in t.pairs] == ["v2008", "range_only", "modern"]


def test_bad_arguments_are_clear_errors(toy):
    with pytest.raises(BadDriver, match="MMUNotifier"):
        coherence_test(object)
    with pytest.raises(UsageError, match="unknown scenario"):
        coherence_pairs(toy.ToyDevice, scenarios=["nope"])
    with pytest.raises(UsageError, match="unknown api"):
        coherence_pairs(toy.ToyDevice, api="v1999", scenarios=["toy-race"])
    with pytest.raises(UsageError, match="does not apply"):
        coherence_pairs(toy.ToyDevice, scenarios=["cow-after-fork"])


def test_profiles_are_registered():
    register_profiles()
    ci = settings.get_profile("ci")
    assert ci.derandomize and ci.database is None and ci.max_examples <= 100
    assert settings.get_profile("deep").max_examples >= 1000


def test_smmu_sim_fixture_makes_fresh_simulators(smmu_sim):
    a = smmu_sim(notifier_api="v2008", seed=3)
    b = smmu_sim()
    assert a is not b and a.notifier_api == "v2008" and b.notifier_api == "modern"
    assert a.seed == 3


def test_coherence_test_on_the_reference_kvm_is_clean():
    t = coherence_test(drivers.KVM, scenarios=["cow-after-fork", "mprotect-downgrade"],
                       max_examples=15)
    t()


def test_coherence_test_catches_a_buggy_kvm():
    cls = drivers.BUGGY["kvm_no_in_progress"]
    # no shrinking: finding it is what is tested here, and shrinking replays a lot
    t = coherence_test(cls, api="range_only", scenarios=["reclaim-while-device-reads"],
                       max_examples=100, phases=[Phase.explicit, Phase.generate])
    with pytest.raises(CoherenceFailure) as ei:
        t()
    assert ei.value.violation.kind in cls.expected


# ------------------------------------------------------------------ the state-machine variant

def _run_machine(cls, api, max_examples, pages=4):
    from hypothesis.stateful import run_state_machine_as_test
    from smmu.testing import coherence_machine
    machine = coherence_machine(cls, api=api, pages=pages)
    run_state_machine_as_test(machine, settings=settings(
        max_examples=max_examples, stateful_step_count=25, deadline=None, derandomize=True,
        database=None, phases=[Phase.explicit, Phase.generate, Phase.shrink]))


def test_coherence_machine_passes_the_reference_kvm(tmp_path, monkeypatch):
    monkeypatch.setenv("SMMU_REPORT_DIR", str(tmp_path))
    _run_machine(drivers.KVM, "modern", 25)
    assert list(tmp_path.iterdir()) == []                   # a correct driver: no report


def test_coherence_machine_catches_kvm_without_the_sequence_check(tmp_path, monkeypatch,
                                                                   capsys):
    # the negative twin. Two pages make collisions likely enough that the derandomized
    # search does not hinge on the layout of unrelated code (with four it needed 300, then
    # 500, then more examples)
    monkeypatch.setenv("SMMU_REPORT_DIR", str(tmp_path))
    cls = drivers.BUGGY["kvm_no_seq"]
    with pytest.raises((CoherenceFailure, BaseExceptionGroup)) as ei:
        _run_machine(cls, "modern", 500, pages=2)
    found = ei.value.exceptions if isinstance(ei.value, BaseExceptionGroup) else [ei.value]
    assert all(isinstance(e, CoherenceFailure) for e in found)
    assert {e.violation.kind for e in found} <= cls.expected
    # the failure hypothesis reports ends with an smmu replay command, and it reproduces it
    e = found[0]
    assert str(e).rstrip().endswith(f"reproduce it:\n  smmu replay {e.report_file}")
    assert e.commands == [f"smmu replay {e.report_file}"] and e.scenario == "coherence-machine"
    assert [p.name for p in tmp_path.iterdir()] == [Path(e.report_file).name]
    doc = json.loads(Path(e.report_file).read_text())
    ops = doc["violations"][0]["finding"]["script"]["ops"]
    assert ops and {name for name, _ in ops} <= set(SCRIPT_OPS)
    from smmu import cli
    capsys.readouterr()
    assert cli.main(["replay", e.report_file]) == 1
    out = capsys.readouterr().out
    assert f"replayed: reproduced {e.violation.kind}" in out
    report_steps = [ln for ln in str(e).splitlines() if f"{e.violation.kind} at" in ln and
                    ln.lstrip()[:1].isdigit()]
    assert report_steps and report_steps[-1] in out           # the same step, same number


def test_a_script_is_checked_before_it_runs():
    from smmu.scenarios import script_scenario
    ok = script_scenario({"pages": 2, "ops": [["cpu_write", {"i": 1, "value": 3}],
                                              ["run", {"steps": 4}], ["final_reads", {}]]})
    assert ok.script["pages"] == 2 and len(ok.script["ops"]) == 3
    for bad, says in [({"pages": 0, "ops": []}, "pages"),
                      ({"pages": 2, "ops": [["swapoff", {}]]}, "unknown operation 'swapoff'"),
                      ({"pages": 2, "ops": [["cpu_read", {"i": 2}]]}, "not in 0..1"),
                      ({"pages": 2, "ops": [["cpu_read", {}]]}, "takes ['i']"),
                      ({"pages": 2, "ops": ["cpu_read"]}, "not [name, {arguments}]")]:
        with pytest.raises(UsageError, match=re.escape(says)):
            script_scenario(bad)


def test_replay_of_a_report_with_a_bad_script_is_a_usage_error(tmp_path, capsys):
    from smmu import cli
    from smmu.explore import Finding
    from smmu.base.errors import Violation
    from smmu.scenarios import script_scenario
    sc = script_scenario({"pages": 1, "ops": [["cpu_read", {"i": 0}]]})
    f = Finding(Violation("StaleRead", "x"), "coherence-machine", "modern", "replay", 0, [],
                driver="kvm", scenario_def=sc)
    d = f.to_dict()
    d["script"]["ops"] = [["fly", {}]]
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"driver": "kvm", "violations": [{"finding": d}]}))
    assert cli.main(["replay", str(path)]) == 2
    err = capsys.readouterr().err
    assert "malformed" in err and "unknown operation 'fly'" in err and "Traceback" not in err
