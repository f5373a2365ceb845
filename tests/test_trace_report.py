"""Reports (text, JSON) and Perfetto trace export, on the toy world of test_cli (no MM)."""

import json

import pytest

from smmu.report import text as report
from smmu.report import trace
from smmu.base.errors import Violation
from smmu.explore import Replay, explore, replay, run_once, shrink
from test_cli import load_toy


@pytest.fixture(scope="module")
def toy():
    return load_toy()


@pytest.fixture(scope="module")
def finding(toy):
    ex = explore("toy-race", toy.RacyToyDevice, "modern", strategy="random", schedules=50)
    assert ex.findings, "the racy toy device must be caught"
    f = ex.findings[0]
    shrink(f)
    return f


def test_chrome_trace_of_a_failing_run_is_loadable(finding):
    res = replay(finding, record_steps=True, trace=True)
    doc = trace.result_trace(res, title="toy")
    assert trace.validate(doc) == []
    evs = doc["traceEvents"]
    names = {e["args"]["name"] for e in evs if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"dev0 (task 0)", "dev1 (task 1)"} <= names      # one track per task, tid = task id
    spans = [e for e in evs if e["ph"] == "B"]
    assert spans and all(e["tid"] in (0, 1) for e in spans)
    inst = [e for e in evs if e["ph"] == "i"]
    assert [e["name"] for e in inst] == ["LostWrite"]
    assert all(isinstance(e["ts"], float) for e in evs if e["ph"] != "M")
    json.dumps(doc)


def test_unbalanced_spans_are_closed_and_stray_ends_dropped():
    events = [("B", "KVM.invalidate_range_start", 0, "cpu0", 10.0, 1, {}),
              ("E", "KVM.nothing_open", 1, "dev0", 12.0, 2, {}),
              ("B", "GRU.invalidate_range_end", 1, "dev0", 20.0, 3, {"x": object()}),
              ("i", "UnpairedRange", -1, "setup", 30.0, 4, {})]
    doc = trace.chrome_trace(events)
    assert trace.validate(doc) == []
    ends = [e for e in doc["traceEvents"] if e["ph"] == "E"]
    assert sorted(e["tid"] for e in ends) == [0, 1]
    assert any(e["tid"] == trace.SETUP_TID for e in doc["traceEvents"] if e["ph"] == "i")


def test_validate_catches_broken_traces():
    assert trace.validate([]) != []
    bad = {"traceEvents": [{"name": "a", "ph": "B", "ts": 1.0, "pid": 1, "tid": 0},
                           {"name": "b", "ph": "E", "ts": 0.5, "pid": 1, "tid": 0},
                           {"name": "c", "ph": "E", "ts": 2.0, "pid": 1, "tid": 3},
                           {"name": "d", "ph": "Q", "ts": 2.0, "pid": 1, "tid": 3},
                           {"name": "e", "ph": "B", "ts": -1, "pid": 1, "tid": 4},
                           {"ph": "B", "ts": 3.0, "pid": 1, "tid": 5}]}
    problems = " | ".join(trace.validate(bad))
    for needle in ("backwards", "E without B", "unknown phase", "bad ts", "no 'name'",
                   "never ended"):
        assert needle in problems


def test_violation_without_traced_instant_gets_one():
    v = Violation(kind="UseAfterFree", message="m", address=0x2000, task="dev0", step=7,
                  time_ns=500.0, frames=(3,))
    doc = trace.chrome_trace([("B", "x.y", 0, "dev0", 100.0, 1, {}),
                              ("E", "x.y", 0, "dev0", 200.0, 2, {})], [v])
    inst = [e for e in doc["traceEvents"] if e["ph"] == "i"]
    assert len(inst) == 1 and inst[0]["tid"] == 0 and inst[0]["args"]["frames"] == [3]
    assert trace.validate(doc) == []


def test_write_trace(tmp_path, finding):
    res = replay(finding, trace=True)
    p = trace.write_trace(tmp_path / "sub" / "t.json", res, metadata={"k": object()})
    assert trace.validate(json.loads(p.read_text())) == []


def test_text_report_has_kind_address_hooks_and_numbered_steps(finding):
    res = replay(finding, record_steps=True, trace=True)
    text = report.finding_text(finding, driver="racy", result=res)
    lines = text.splitlines()
    assert lines[0].startswith("LostWrite at 0x1000")
    assert "scenario toy-race" in lines[0] and "api modern" in lines[0]
    assert "minimal schedule, 1 preemption(s): run dev1 " in text   # as preemptions
    assert "preempt dev1, run dev0" in text and "choices [" not in text
    steps = [ln.split() for ln in lines if ln[:7].strip().isdigit()]
    # the events other code traced (the toy's own spans) are the steps, by task name
    assert steps and all(s[1] in ("dev0", "dev1") and s[2] == "toy.access" for s in steps)
    # without a trace, the recorded yield points with their source lines
    plain = report.violation_text(res.violations[0])
    numbered = [ln for ln in plain.splitlines() if ". [" in ln]
    assert numbered and all("smmu_toy.py:" in ln for ln in numbered)


def test_text_report_truncates_long_schedules():
    v = Violation(kind="StaleRead", message="m", steps=[(i, 0, "cpu0", "/x.py:1 in f")
                                                       for i in range(1, 200)])
    text = report.violation_text(v)
    assert "139 earlier step(s) not shown" in text
    assert text.count(". [cpu0]") == report.MAX_STEPS_SHOWN


def test_check_json_shape(finding):
    doc = report.check_json("kvm", 50, [finding], runs=[{"scenario": "toy-race"}])
    assert doc["driver"] == "kvm" and doc["schedules_run"] == 50 and doc["clean"] is False
    (v,) = doc["violations"]
    assert {k: v[k] for k in ("kind", "scenario", "api", "seed", "address")} == {
        "kind": "LostWrite", "scenario": "toy-race", "api": "modern", "seed": finding.seed,
        "address": 0x1000}
    assert v["schedule"] == finding.minimal
    json.dumps(doc)
    # the embedded finding replays to the same violation
    res = replay(v["finding"])
    assert [w.kind for w in res.violations] == ["LostWrite"]


def test_replay_is_deterministic(toy, finding):
    a = run_once("toy-race", toy.RacyToyDevice, "modern", Replay(finding.choices), finding.seed,
                 record_steps=True)
    b = run_once("toy-race", toy.RacyToyDevice, "modern", Replay(finding.choices), finding.seed,
                 record_steps=True)
    assert a.schedule == b.schedule and a.steps == b.steps
    assert [v.steps for v in a.violations] == [v.steps for v in b.violations]


def test_short_path_strips_the_project_root():
    where = report._ROOT + "smmu/sched.py:12 in f"
    assert report.short_path(where) == "smmu/sched.py:12 in f"
