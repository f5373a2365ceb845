"""Reports that read like a kernel oops (issue 12, section 2), on a real broken driver's
findings: the summary first and at most --max-reports full reports, one per distinct
(kind, scenario); steps that are events with their source lines and one name per task; the
schedule as preemptions; fix hints that follow the rule broken; step numbers equal between
``check`` and ``replay`` and a warning when the revision differs; a Perfetto trace with every
task's track and the violation at its simulated time, valid Chrome trace-event JSON."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from smmu import cli
from smmu.base.errors import VIOLATION_KINDS, Violation
from smmu.cli.check import plan, print_reports, run_check
from smmu.explore import replay, shrink
from smmu.explore.loader import load_driver
from smmu.oracle.rules import FIXES, STALE_FIXES, fix_hint
from smmu.oracle.scan import STALE_REASONS
from smmu.report import check_json, finding_text, report_groups, trace, violation_text

BROKEN = "buggy.kvm_no_seq"
#: scenarios where BROKEN is caught quickly: five distinct (StaleMapping, scenario) groups
SCENARIOS = ("cow-after-fork", "munmap-during-device-fault", "mremap", "truncate",
             "overlapping-invalidations")
STEP = re.compile(r"^ +(\d+)  (\S+) +(.*?)(?:  +(\S+\.py:\d+))?$")


@pytest.fixture(scope="module")
def broken():
    cls = load_driver(BROKEN)
    pairs = [p for name in SCENARIOS for p in plan(cls, name, "v2008")]
    findings, _total, _rows = run_check(cls, pairs, schedules=120)
    assert len({f.scenario for f in findings}) == len(SCENARIOS), findings
    return cls, findings


def _printed(cls, findings, n):
    buf = io.StringIO()
    out = Console(file=buf, width=80, highlight=False)
    print_reports(out, cls, BROKEN, findings, n)
    return buf.getvalue()


def _reports(text):
    return [ln for ln in text.splitlines() if re.match(r"^[A-Z]\w+ at 0x", ln)]


@pytest.fixture(scope="module")
def printed(broken):
    cls, findings = broken
    return _printed(cls, findings, 3)


def _step_lines(text):
    return [m.groups() for m in map(STEP.match, text.splitlines()) if m]


# ---------------------------------------------------------------- summary + max reports

def test_summary_first_then_at_most_max_reports(broken, printed):
    cls, findings = broken
    groups = report_groups(findings)
    assert len(groups) == len(SCENARIOS)
    lines = printed.strip().splitlines()
    assert lines[0].startswith(f"{len(findings)} finding(s) in {len(SCENARIOS)} distinct "
                               "(kind, scenario)")
    assert "--max-reports N shows more" in lines[1]
    # the summary names every group, before the first report
    first_report = next(i for i, ln in enumerate(lines) if re.match(r"^[A-Z]\w+ at 0x", ln))
    summary = "\n".join(lines[:first_report])
    for sc in SCENARIOS:
        assert sc in summary
    assert summary.count(" * ") == 3                       # which ones get a full report
    heads = _reports(printed)
    assert len(heads) == 3
    assert len({re.search(r"scenario ([\w-]+)", h).group(1) for h in heads}) == 3


def test_max_reports_zero_and_more(broken):
    cls, findings = broken
    assert _reports(_printed(cls, findings, 0)) == []
    assert len(_reports(_printed(cls, findings, 10))) == len(SCENARIOS)


def test_each_report_is_the_shortest_schedule_of_its_group(broken, printed):
    cls, findings = broken
    for g in report_groups(findings):
        same = [f for f in findings if (f.kind, f.scenario) == (g["kind"], g["scenario"])]
        assert g["count"] == len(same)
        lengths = [len(f.minimal if f.minimal is not None else f.choices) for f in same]
        assert g["shortest"] == min(lengths)


def test_json_keeps_every_finding(broken, printed):
    cls, findings = broken
    doc = check_json(BROKEN, 1, findings)
    assert len(doc["violations"]) == len(findings)
    assert sum(g["count"] for g in doc["groups"]) == len(findings)
    assert doc["smmu_revision"] and all(v["driver_revision"] for v in doc["violations"])


def test_step_lines_fit_80_columns_with_their_source_line(printed):
    """A step's source line moves left from column 60 so that the line fits 80 columns (in
    make demo, ``smmu/scenarios/kit.py:72`` at column 60 made the terminal wrap it onto a
    line of its own); only an event whose own text is too long for that goes past 80, with
    its source two spaces after it."""
    steps = [ln for ln in printed.splitlines() if STEP.match(ln)]
    sited = [ln for ln in steps if re.search(r"\.py:\d+$", ln)]
    assert sited
    for ln in sited:
        gap = re.search(r"( +)\S+\.py:\d+$", ln).group(1)
        assert len(ln) <= 80 or gap == "  ", ln


def test_a_correct_driver_prints_no_report():
    cls = load_driver("kvm")
    findings, _, _ = run_check(cls, plan(cls, "cow-after-fork", "v2008"), schedules=40)
    assert findings == []
    assert _printed(cls, findings, 3) == ""


# ---------------------------------------------------------------- steps are events

def test_steps_are_events_with_source_lines_and_one_name_per_task(printed):
    steps = _step_lines(printed)
    assert steps
    texts = [t for _, _, t, _ in steps]
    assert any(re.match(r"(GUP|walk) 0x7f[0-9a-f]+ -> p", t) for t in texts)
    assert any(re.match(r"map r[ow] 0x7f[0-9a-f]+ -> pfn \d+", t) for t in texts)
    assert any(re.match(r"\w+ 0x7f[0-9a-f]+-0x7f[0-9a-f]+: start", t) for t in texts)
    assert any(t.startswith("kvm_no_seq.invalidate_") for t in texts)
    # every event but the CPU's own stores names its source line
    assert all(where for _, _, t, where in steps if not t.startswith("StaleMapping"))
    assert any(where.startswith("drivers/kvm.py:") for _, _, _, where in steps)
    assert any(where.startswith("primary_mm/") for _, _, _, where in steps)
    # no yield points, no "[task N]": the tasks' own names, the same in every part
    assert "[task " not in printed and ". [" not in printed
    names = {n for _, n, _, _ in steps}
    assert names <= {"cpu0", "cpu1", "dev0", "dev1"}, names
    for m in re.finditer(r"task: (\S+)", printed):
        assert m.group(1) in names


def test_schedule_is_described_as_preemptions(printed):
    sched = [ln for ln in printed.splitlines() if "schedule, " in ln and "preemption" in ln]
    assert len(sched) == 3
    for ln in sched:
        assert "choices [" not in ln
        assert re.search(r"preempt (dev|cpu)\d, run (dev|cpu)\d", ln), ln
        assert ln.rstrip().endswith(")") and "until the violation (step" in ln


def test_schedule_text_marks_only_real_preemptions():
    v = Violation(kind="LostWrite", message="m", step=6,
                  steps=[(1, 0, "a", "x"), (2, 0, "a", "x"), (3, 1, "b", "x"), (4, 1, "b", "x"),
                         (5, 0, "a", "x"), (6, 0, "a", "x")])
    ev = [("i", "GUP", 0, "a", 1.0, 2, {"text": "GUP 0x1000 -> pfn 3", "where": "d.py:1"})]

    class R:
        results = {"b": None}
        # at step 3 a could have continued (preemption); at step 5 b was done
        choice_log = [(3, (0, 1), 0, 1), (5, (0,), 1, 0)]
    from smmu.report import schedule_text
    text = schedule_text(v, ev, R())
    assert text == ("run a until after GUP 0x1000 -> pfn 3 (step 2); preempt a, run b until "
                    "end (step 4); run a until the violation (step 6)")
    R.choice_log = [(5, (0,), 1, 0)]           # a waited at step 2: no preemption
    assert "preempt" not in schedule_text(v, ev, R())


# ---------------------------------------------------------------- fix hints per rule

def test_every_kind_has_a_fix_hint_and_stale_mappings_follow_their_reason():
    for kind in VIOLATION_KINDS:
        assert fix_hint(kind), kind
    assert set(STALE_REASONS.values()) <= set(STALE_FIXES)
    hints = {r: fix_hint("StaleMapping", {"reason": r}) for r in STALE_FIXES}
    assert len(set(hints.values())) == len(hints)           # one per way of being stale
    assert "write fault" in hints["writable over read-only"]
    assert "sequence" in hints["stale when made"]
    assert "notifier call was ignored" not in " ".join(FIXES.values())


def test_writable_map_on_a_read_fault_says_so():
    """buggy.kvm_cow_writable maps writable on a read fault: the report's fix says that,
    not what a missed invalidation would need."""
    cls = load_driver("buggy.kvm_cow_writable")
    findings, _, _ = run_check(cls, plan(cls, "cow-after-fork", None), schedules=200)
    f = next(f for f in findings if f.kind == "StaleMapping")
    shrink(f, max_runs=60)
    text = finding_text(f, driver="buggy.kvm_cow_writable",
                        result=replay(f, record_steps=True, trace=True))
    fix = next(ln for ln in text.splitlines() if ln.startswith("  fix: "))
    assert "map writable only on" in fix and "sequence" not in fix
    # and its negative twin: a stale snapshot gets the sequence-count hint
    v = Violation(kind="StaleMapping", message="m", details={"reason": "stale when made"})
    assert "sequence" in violation_text(v)


# ---------------------------------------------------------------- check vs replay

@pytest.fixture(scope="module")
def report_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rep") / "r.json"
    code = cli.main(["check", BROKEN, "--scenario", "cow-after-fork", "--api", "v2008",
                     "--json", str(path)])
    assert code == 1
    return path


def test_step_numbers_agree_between_check_and_replay(report_file, capsys):
    capsys.readouterr()
    cli.main(["check", BROKEN, "--scenario", "cow-after-fork", "--api", "v2008", "--json",
              str(report_file)])
    checked = capsys.readouterr().out
    assert cli.main(["replay", str(report_file)]) == 1
    out, err = capsys.readouterr()
    assert _step_lines(checked) and _step_lines(checked) == _step_lines(out)
    assert "warning" not in err


def test_replay_warns_when_the_revision_differs(report_file, tmp_path, capsys):
    doc = json.loads(report_file.read_text())
    doc["smmu_revision"] = "0.0.1+gdeadbeef0000"
    doc["violations"][0]["driver_revision"] = "0123456789ab"
    other = tmp_path / "old.json"
    other.write_text(json.dumps(doc))
    capsys.readouterr()
    assert cli.main(["replay", str(other)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "written by smmu 0.0.1+gdeadbeef0000" in err
    assert "driver's source changed since the report (sha256 0123456789ab" in err


# ---------------------------------------------------------------- Perfetto trace

def test_trace_of_a_broken_driver_has_every_track_and_the_violation_at_its_time():
    cls = load_driver("buggy.gru_ignore_invalidate_page")
    findings, _, _ = run_check(cls, plan(cls, "reclaim-while-device-reads", "v2008"),
                               schedules=100)
    f = findings[0]
    res = replay(f, record_steps=True, trace=True)
    doc = trace.result_trace(res, title="t")
    assert trace.validate(doc) == []
    evs = doc["traceEvents"]
    tracks = {e["tid"]: e["args"]["name"] for e in evs
              if e["ph"] == "M" and e["name"] == "thread_name"}
    for name, d in res.times.items():
        assert tracks[d["tid"]] == f"{name} (task {d['tid']})"
    cats = {(e.get("cat"), e["ph"]) for e in evs if e["ph"] != "M"}
    for want in (("mm", "B"), ("mm", "E"), ("mm", "i"), ("hook", "B"), ("hook", "E"),
                 ("fault", "B"), ("fault", "E"), ("gup", "i"), ("map", "i"), ("dma", "i"),
                 ("violation", "i")):
        assert want in cats, want
    # device events sit on the device's track at the driver's line; MM events at the MM's
    for e in evs:
        if e.get("cat") in ("dma", "gup", "map") and e["args"]["where"] and \
                tracks[e["tid"]].startswith("dev"):
            assert "/drivers/" in e["args"]["where"], e
        if e.get("cat") == "mm" and e["ph"] == "B" and "note" not in e["args"]:
            assert "/primary_mm/" in e["args"]["where"], e
    insts = [e for e in evs if e.get("cat") == "violation"]
    assert len(insts) == len(res.violations)
    end = max(e["ts"] for e in evs if e["ph"] != "M")
    for v, inst in zip(res.violations, insts):
        assert inst["args"]["step"] == v.step and inst["name"] == v.kind
        if v.task is None:      # judged when the run ended: a global instant at its end
            assert inst["s"] == "g" and inst["ts"] == end > 0
            assert inst["ts"] == pytest.approx(v.time_ns / 1000.0)
        else:
            assert inst["ts"] == pytest.approx(v.time_ns / 1000.0) and inst["ts"] > 0
            assert tracks[inst["tid"]].startswith(v.task + " ")


def test_a_violation_judged_at_the_end_is_a_global_instant_at_the_end():
    v = Violation(kind="UnpairedRange", message="m", task=None, step=9, time_ns=0.0)
    doc = trace.chrome_trace([("B", "x.y", 0, "cpu0", 1000.0, 1, {}),
                              ("E", "x.y", 0, "cpu0", 4000.0, 2, {})], [v],
                             tasks={"cpu0": 0, "dev0": 1})
    assert trace.validate(doc) == []
    (inst,) = [e for e in doc["traceEvents"] if e["ph"] == "i"]
    assert inst["s"] == "g" and inst["ts"] == 4.0
    names = {e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"}
    assert "dev0 (task 1)" in names                    # a task that recorded nothing


def test_crossing_spans_are_renested():
    events = [("B", "munmap 0x0-0x1000", 0, "cpu0", 1.0, 1, {"cat": "mm"}),
              ("B", "device fault 0x0", 0, "cpu0", 2.0, 2, {"cat": "fault"}),
              ("E", "munmap 0x0-0x1000", 0, "cpu0", 3.0, 3, {"cat": "mm"}),
              ("E", "device fault 0x0", 0, "cpu0", 4.0, 4, {"cat": "fault"})]
    doc = trace.chrome_trace(events)
    assert trace.validate(doc) == []
    spans = [(e["ph"], e["name"], e["ts"]) for e in doc["traceEvents"] if e["ph"] in "BE"]
    assert spans == [("B", "munmap 0x0-0x1000", 0.001), ("B", "device fault 0x0", 0.002),
                     ("E", "device fault 0x0", 0.003), ("E", "munmap 0x0-0x1000", 0.003),
                     ("B", "device fault 0x0", 0.003), ("E", "device fault 0x0", 0.004)]


def test_validate_knows_the_trace_event_format():
    ok = {"name": "a", "ph": "i", "s": "t", "ts": 1.0, "pid": 1, "tid": 0}
    assert trace.validate({"traceEvents": [ok]}) == []
    cases = {
        "closes": [{"name": "a", "ph": "B", "ts": 1, "pid": 1, "tid": 0},
                   {"name": "b", "ph": "B", "ts": 1, "pid": 1, "tid": 0},
                   {"name": "a", "ph": "E", "ts": 2, "pid": 1, "tid": 0},
                   {"name": "b", "ph": "E", "ts": 2, "pid": 1, "tid": 0}],
        "without a dur": [{"name": "x", "ph": "X", "ts": 1, "pid": 1, "tid": 0}],
        "instant scope": [dict(ok, s="q")],
        "unknown metadata": [{"name": "thread_colour", "ph": "M", "pid": 1, "tid": 0,
                              "args": {}}],
        "has no args.name": [{"name": "thread_name", "ph": "M", "pid": 1, "tid": 0,
                              "args": {}}],
        "not an integer": [dict(ok, tid="0")],
        "not a string": [dict(ok, name=3)],
    }
    for needle, evs in cases.items():
        assert needle in " | ".join(trace.validate({"traceEvents": evs})), needle
    assert "displayTimeUnit" in trace.validate({"traceEvents": [], "displayTimeUnit": "s"})[0]


def test_an_mm_operation_span_ends_where_the_operation_ends():
    """The primary MM reports each public operation's begin and end (mm_op_begin /
    mm_op_end on the observer port): the write's span ends at its store, not when the task's
    next operation (a read 10 us of sleep later) begins; the fault inside it is no span of
    its own, and the munmap's span holds its invalidation window."""
    import drivers
    from smmu import Simulator
    sim = Simulator(notifier_api="modern", trace=True, seed=0)
    mm = sim.new_process()
    buf = sim.do(mm.mmap(2 * 4096, prot="rw"))
    sim.attach(drivers.KVM, mm)

    def cpu():
        yield from mm.write(buf, 7)
        yield sim.sleep(10_000)
        yield from mm.read(buf)
        yield from mm.munmap(buf, 2 * 4096)
    sim.spawn("cpu0", cpu())
    doc = trace.result_trace(sim.run(), title="t")
    assert trace.validate(doc) == []
    evs = [e for e in doc["traceEvents"] if e["ph"] != "M" and e["tid"] == 0]
    spans = [(e["ph"], e["name"], e["ts"]) for e in evs if e["ph"] in "BE" and
             e.get("cat") == "mm" and " " not in e["name"]]
    assert [(ph, n) for ph, n, _ in spans] == [("B", "write"), ("E", "write"), ("B", "read"),
                                              ("E", "read"), ("B", "munmap"), ("E", "munmap")]
    ts = {(ph, n): t for ph, n, t in spans}
    store = next(e["ts"] for e in evs if e.get("cat") == "cpu" and
                 e["args"]["text"].startswith("write"))
    assert ts[("E", "write")] == store                      # ends at its last event
    assert ts[("B", "read")] - ts[("E", "write")] >= 10.0  # the sleep is outside both
    window = [e["ts"] for e in evs if e["ph"] in "BE" and e["name"].startswith("munmap 0x")]
    assert window and ts[("B", "munmap")] <= min(window) <= max(window) <= ts[("E", "munmap")]


def test_every_operation_the_trace_names_reports_its_begin_and_end():
    from primary_mm.memory import Memory
    from primary_mm.mm import MM
    from smmu.sim.trace_recorder import OPERATIONS
    for op in OPERATIONS:
        fn = getattr(MM, op, None) or getattr(Memory, op)
        assert getattr(fn, "__wrapped__", None) is not None, f"{op} is no @mm_operation"
