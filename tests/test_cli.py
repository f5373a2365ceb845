"""The smmu command line: driver resolution, usage errors (exit 2, one line, no traceback),
check / replay / JSON / trace end to end on a toy world (no primary MM needed), and, when the
drivers exist, on the real catalogue."""

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import drivers
import pytest

from smmu import cli
from smmu.report.trace import validate

ROOT = Path(__file__).resolve().parent.parent

# A self-contained toy world: a scheduler-only "simulator", a device whose access is a
# read-modify-write of a shared counter (locked in ToyDevice, racy in RacyToyDevice), and a
# scenario that checks the count once both devices are done. Used through every CLI path.
TOY_SOURCE = '''
from smmu.explore import SCENARIOS, Scenario, register
from smmu.notifier import MMUNotifier
from smmu.runtime.scheduler import Scheduler


class ToySim(Scheduler):
    def __init__(self, notifier_api="modern", **kw):
        super().__init__(**kw)
        self.notifier_api = notifier_api
        self.counter = 0

    def attach(self, cls, mm, **opts):
        return cls(self, mm, **opts)


class ToyDevice(MMUNotifier):
    """A toy device incrementing a shared counter under a spinlock."""
    toy = True
    locked = True

    def __init__(self, sim, mm):
        super().__init__(sim, mm)
        self.lock = sim.spinlock("toy_lock")

    def access(self, va, *, write, value=None):
        sim = self.sim
        if sim.tracing:
            sim.trace_event("B", "toy.access", {"va": va})
        if self.locked:
            yield self.lock
        x = sim.counter
        yield
        sim.counter = x + 1
        if self.locked:
            self.lock.release()
        if sim.tracing:
            sim.trace_event("E", "toy.access")


class RacyToyDevice(ToyDevice):
    """The same without the lock: increments get lost."""
    locked = False


def build(sim, cls):
    drv = sim.attach(cls, None)
    done = []
    wq = sim.waitqueue("join")

    def dev(name):
        for i in range(2):
            yield from drv.access(0x1000, write=True, value=i)
        done.append(name)
        wq.wake_all()

    def check():
        yield wq.wait_until(lambda: len(done) == 2)
        if sim.counter != 4:
            sim.violation("LostWrite", f"counter is {sim.counter}, 4 increments were made",
                          address=0x1000)

    sim.spawn("dev0", dev("dev0"))
    sim.spawn("dev1", dev("dev1"))
    sim.spawn("check", check())


if "toy-race" not in SCENARIOS:
    register(Scenario("toy-race", build, "two devices increment a counter",
                      applies=lambda cls: getattr(cls, "toy", False),
                      simulator=ToySim, tags=("toy",)))
'''


def load_toy():
    """The toy module, importable as ``smmu_toy`` (so findings can name its classes)."""
    if "smmu_toy" in sys.modules:
        return sys.modules["smmu_toy"]
    mod = types.ModuleType("smmu_toy")
    mod.__file__ = "<smmu_toy>"
    sys.modules["smmu_toy"] = mod
    exec(compile(TOY_SOURCE, "smmu_toy.py", "exec"), mod.__dict__)
    return mod


@pytest.fixture
def toy():
    return load_toy()


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- usage errors

@pytest.mark.parametrize("argv, needle", [
    (["check", "no_such_driver"], "unknown driver 'no_such_driver'"),
    (["check", "no_such_module_xyz:Cls"], "module 'no_such_module_xyz' not found"),
    (["check", "missing/file.py:Cls"], "not found"),
    (["check", "json:JSONDecoder"], "not an MMUNotifier subclass"),
    (["check", "smmu.notifier:NoSuchClass"], "has no class 'NoSuchClass'"),
    (["check", "smmu_toy:ToyDevice", "--scenario", "no-such-scenario"],
     "unknown scenario 'no-such-scenario'"),
    (["bench", "no-such-bench"], "unknown benchmark 'no-such-bench'"),
    (["replay", "/nonexistent/report.json"], "not found"),
])
def test_usage_errors_exit_2_with_one_line(argv, needle, capsys, toy):
    code, out, err = run(argv, capsys)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [
    ["check", "kvm", "--strategy", "dfs"],
    ["check", "kvm", "--api", "v2020"],
    ["check", "kvm", "--schedules", "zero"],
    ["check", "kvm", "--schedules", "0"],
    ["check", "kvm", "--seed", "-1"],
    ["frobnicate"],
    [],
])
def test_argparse_errors_exit_2(argv, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2
    assert "error" in err and "Traceback" not in err


def test_driver_file_spec_and_bad_file(tmp_path, capsys, toy):
    f = tmp_path / "mydrv.py"
    f.write_text("import smmu_toy\nclass Mine(smmu_toy.ToyDevice):\n    pass\n"
                 "class NotADriver:\n    pass\n")
    assert cli.resolve_driver(f"{f}:Mine").__name__ == "Mine"
    with pytest.raises(cli.CLIError, match="not an MMUNotifier"):
        cli.resolve_driver(f"{f}:NotADriver")
    bad = tmp_path / "broken.py"
    bad.write_text("def oops(:\n")
    with pytest.raises(cli.CLIError, match="cannot load"):
        cli.resolve_driver(f"{bad}:X")


def test_replay_rejects_non_report(tmp_path, capsys):
    p = tmp_path / "x.json"
    p.write_text("[1, 2")
    code, _, err = run(["replay", str(p)], capsys)
    assert code == 2 and "not a JSON report" in err
    p.write_text(json.dumps({"driver": "kvm", "violations": []}))
    code, _, err = run(["replay", str(p)], capsys)
    assert code == 2 and "no violation" in err


# --------------------------------------------------------------------------- check on the toy

def test_check_clean_driver_exits_0(capsys, toy, tmp_path):
    out_json = tmp_path / "r.json"
    code, out, err = run(["check", "smmu_toy:ToyDevice", "--scenario", "toy-race",
                          "--api", "modern", "--schedules", "30", "--json", str(out_json)],
                         capsys)
    assert code == 0, out + err
    doc = json.loads(out_json.read_text())
    assert doc["driver"] == "smmu_toy:ToyDevice"
    assert doc["schedules_run"] == 30
    assert doc["violations"] == []


def test_check_racy_driver_exits_1_with_report_json_trace_and_replay(capsys, toy, tmp_path):
    out_json = tmp_path / "r.json"
    tdir = tmp_path / "traces"
    code, out, err = run(["check", "smmu_toy:RacyToyDevice", "--scenario", "toy-race",
                          "--api", "modern", "--strategy", "random", "--schedules", "50",
                          "--json", str(out_json),
                          "--trace", str(tdir)], capsys)
    assert code == 1, out + err
    assert "LostWrite" in out
    assert "minimal schedule, " in out and "preempt dev" in out   # schedule as preemptions
    assert re.search(r"^ +\d+  dev\d  toy.access", out, re.M)    # the steps: events, task names
    doc = json.loads(out_json.read_text())
    assert set(doc) >= {"driver", "schedules_run", "violations"}
    (v,) = doc["violations"]
    assert set(v) >= {"kind", "scenario", "api", "seed", "address", "message", "schedule"}
    assert v["kind"] == "LostWrite" and v["scenario"] == "toy-race" and v["address"] == 0x1000
    assert isinstance(v["schedule"], list) and v["schedule"]
    traces = list(tdir.glob("*.json"))
    assert len(traces) == 1
    tdoc = json.loads(traces[0].read_text())
    assert validate(tdoc) == []
    assert any(e["ph"] == "i" and e["name"] == "LostWrite" for e in tdoc["traceEvents"])
    assert any(e["ph"] == "B" and e["name"] == "toy.access" for e in tdoc["traceEvents"])
    # replay the report: same violation, exit 1
    code, out, err = run(["replay", str(out_json)], capsys)
    assert code == 1, out + err
    assert "reproduced" in out and "LostWrite" in out


def test_check_and_replay_trace_take_the_same_argument(capsys, toy, tmp_path):
    """--trace is a folder or a FILE.json for both commands; one that cannot be written is a
    usage error (exit 2), not an internal error."""
    rep = tmp_path / "r.json"
    code, out, err = run(["check", "smmu_toy:RacyToyDevice", "--scenario", "toy-race",
                          "--api", "modern", "--strategy", "random", "--schedules", "50",
                          "--json", str(rep), "--trace", str(tmp_path / "check.json")], capsys)
    assert code == 1 and validate(json.loads((tmp_path / "check.json").read_text())) == []
    for arg in (tmp_path / "dir", tmp_path / "replay.json"):
        code, out, err = run(["replay", str(rep), "--trace", str(arg)], capsys)
        assert code == 1, out + err
        (f,) = [arg] if arg.suffix == ".json" else list(arg.glob("*.json"))
        assert validate(json.loads(f.read_text())) == [] and f"trace: {f}" in out
    (tmp_path / "a-file").write_text("")
    for cmd in (["replay", str(rep)], ["check", "smmu_toy:RacyToyDevice", "--scenario",
                                       "toy-race", "--api", "modern", "--schedules", "20"]):
        code, out, err = run(cmd + ["--trace", str(tmp_path / "a-file" / "t")], capsys)
        assert code == 2 and "--trace" in err and "cannot write" in err, err


def test_check_exhaustive_finds_the_race(capsys, toy):
    code, out, _ = run(["check", "smmu_toy:RacyToyDevice", "--scenario", "toy-race",
                        "--strategy", "exhaustive", "--schedules", "100"], capsys)
    assert code == 1 and "LostWrite" in out


def test_bench_list(capsys):
    code, out, _ = run(["bench", "list"], capsys)
    assert code == 0
    assert "invalidate-page-vs-range" in out and "checker" in out


def test_python_dash_m_runs_the_cli():
    r = subprocess.run([sys.executable, "-m", "smmu", "check", "nope_driver"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "unknown driver" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- real drivers

def test_drivers_lists_builtin_and_buggy(capsys):
    code, out, _ = run(["drivers"], capsys)
    assert code == 0
    for name in drivers.BUILTIN:
        assert name in out
    for name in drivers.BUGGY:
        assert f"buggy.{name}" in out


def test_resolve_builtin_and_buggy_names():
    for name, cls in drivers.BUILTIN.items():
        assert cli.resolve_driver(name) is cls
    for name, cls in drivers.BUGGY.items():
        assert cli.resolve_driver(f"buggy.{name}") is cls
    with pytest.raises(cli.CLIError, match="no buggy driver"):
        cli.resolve_driver("buggy.definitely_not_there")
