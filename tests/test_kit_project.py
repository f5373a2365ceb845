"""The kit as a driver author meets it: a project of their own outside this tree (a driver
module, a broken variant importing it, a test file importing the kit), pytest run there
with this venv's python. The correct driver passes, the broken one fails with a readable
report and commands that reproduce it, and those commands run; nothing is logged."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

TEST_FILE = '''
from smmu.testing import coherence_test

from device_tlb import DeviceTLB
from device_tlb_end_only import EndOnlyTLB

# two scenarios keep this quick; coherence_test(DeviceTLB) runs every one
SCENARIOS = ["munmap-during-device-fault", "rst-cow-timeline"]

test_device_tlb = coherence_test(DeviceTLB, scenarios=SCENARIOS)
test_end_only = coherence_test(EndOnlyTLB, scenarios=SCENARIOS)
'''


def user_env(project):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PYTHON"))}
    env.update(CI="true", SMMU_REPORT_DIR=str(project / "reports"))
    return env


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    project = tmp_path_factory.mktemp("driverproj")
    assert REPO not in project.parents
    for f in ("device_tlb.py", "device_tlb_end_only.py"):
        shutil.copy(REPO / "examples" / f, project / f)
    (project / "test_mine.py").write_text(TEST_FILE)
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "test_mine.py"], cwd=project, env=user_env(project),
                       capture_output=True, text=True, timeout=900)
    return project, p


def test_correct_driver_passes_broken_one_fails_with_a_report(run):
    project, p = run
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert re.search(r"\b1 failed, 1 passed\b", out), out
    assert "FAILED test_mine.py::test_end_only" in out
    assert "test_mine.py::test_device_tlb" not in out.replace("PASSED test_mine.py", "")
    m = re.search(r"CoherenceFailure: (\w+) at 0x[0-9a-f]+ +\(driver device_tlb_end_only"
                  r"\.py:EndOnlyTLB, scenario ([\w-]+), api (\w+)", out)
    assert m, out
    assert m.group(1) in {"StaleRead", "UseAfterFree", "LostWrite"}
    assert "reproduce it:" in out


def test_no_debug_or_log_output(run):
    _, p = run
    out = p.stdout + p.stderr
    assert "debug" not in out.lower()
    assert "Captured" not in out            # nothing printed or logged by the library
    assert "Traceback" not in out


def commands(out):
    found = [m.group(1).strip() for m in re.finditer(
        r"^(?:E )?\s+(smmu (?:replay|check) \S.*)$", out, re.M)]
    return list(dict.fromkeys(found))       # pytest shows the message more than once


def test_the_printed_commands_reproduce_it(run):
    project, p = run
    cmds = commands(p.stdout)
    assert [c.split()[1] for c in cmds] == ["replay", "check"], p.stdout
    kind = re.search(r"CoherenceFailure: (\w+) at", p.stdout).group(1)
    for c in cmds:
        argv = c.split()
        r = subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=project,
                           env=user_env(project), capture_output=True, text=True, timeout=600)
        assert r.returncode == 1, (c, r.stdout, r.stderr)
        assert kind in r.stdout, (c, r.stdout)
        assert "Traceback" not in r.stderr
    assert "reproduced" in subprocess.run(
        [str(BIN / "smmu"), *cmds[0].split()[1:]], cwd=project, env=user_env(project),
        capture_output=True, text=True, timeout=600).stdout
