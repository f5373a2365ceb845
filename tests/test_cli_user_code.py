"""``smmu check`` on user code that fails, run as a user runs it (a subprocess): a driver
whose __init__ raises (exit 2, one message, no traceback), a hook that raises (a finding,
exit 1), a driver importing a sibling module, and a bug inside smmu (exit 3, "internal
error in smmu", a replay command and smmu's traceback)."""

import subprocess
import sys
import textwrap

import pytest


def smmu(*args, cwd):
    return subprocess.run([sys.executable, "-m", "smmu", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


BASE = '''
from smmu import MMUNotifier


class MyBase(MMUNotifier):
    """A device that GUPs, uses the page once and drops its reference: it keeps no
    translation, so it has nothing to invalidate."""
    apis = ("modern",)

    def invalidate_range_start(self, rng):
        pass

    def access(self, va, *, write, value=None):
        pfn = yield from self.mm.get_user_pages(va, write)
        got = self.dma_write(va, pfn, value) if write else self.dma_read(va, pfn)
        yield from self.mm.put_page(pfn)
        return got
'''

DRIVER = '''
from mybase import MyBase       # a sibling module: the driver's folder is importable


class Fine(MyBase):
    pass


class InitFails(MyBase):
    def __init__(self, sim, mm):
        super().__init__(sim, mm)
        self.dev = open("/nonexistent/dev/mydevice")


class HookFails(MyBase):
    def invalidate_range_start(self, rng):
        raise RuntimeError("lost the device")
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    d = tmp_path_factory.mktemp("userproj")
    (d / "drv").mkdir()
    (d / "drv" / "mybase.py").write_text(BASE)
    (d / "drv" / "mydriver.py").write_text(DRIVER)
    return d


def test_a_driver_file_importing_a_sibling_module_loads(project):
    r = smmu("check", "drv/mydriver.py:Fine", "--scenario", "munmap-during-device-fault",
             "--schedules", "5", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ModuleNotFoundError" not in r.stderr


def test_a_driver_init_that_raises_is_exit_2_naming_driver_exception_and_line(project):
    r = smmu("check", "drv/mydriver.py:InitFails", "--scenario", "munmap-during-device-fault",
             "--schedules", "3", cwd=project)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "InitFails(sim, mm) raised FileNotFoundError" in r.stderr
    assert "mydriver.py:12 in __init__" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_a_hook_that_raises_is_a_finding_not_a_crash(project):
    r = smmu("check", "drv/mydriver.py:HookFails", "--scenario", "munmap-during-device-fault",
             "--schedules", "3", cwd=project)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "DriverError" in r.stdout
    assert "HookFails.invalidate_range_start raised RuntimeError: lost the device" in r.stdout
    assert "mydriver.py:17 in invalidate_range_start" in r.stdout
    assert "Traceback" not in r.stderr


BROKEN_SMMU = '''
from smmu import MMUNotifier
import primary_mm.mm as M

_real = M.MM.get_user_pages


def _broken(self, va, write=False):
    yield
    raise AssertionError("mapcount went negative")


# a bug planted in smmu's own code (the function carries primary_mm's file name)
_broken.__code__ = _broken.__code__.replace(co_filename=_real.__code__.co_filename)
M.MM.get_user_pages = _broken


class Victim(MMUNotifier):
    def invalidate_range_start(self, rng):
        pass

    def access(self, va, *, write, value=None):
        pfn = yield from self.mm.get_user_pages(va, write)
        return self.dma_read(va, pfn)
'''


def test_a_bug_inside_smmu_is_an_internal_error_with_a_replay_command(tmp_path):
    (tmp_path / "victim.py").write_text(BROKEN_SMMU)
    r = smmu("check", "victim.py:Victim", "--scenario", "munmap-during-device-fault",
             "--api", "modern", "--schedules", "2", cwd=tmp_path)
    assert r.returncode == 3, r.stdout + r.stderr
    err = r.stderr
    assert "internal error in smmu" in err
    assert "AssertionError: mapcount went negative" in err
    assert "Traceback" in err and "primary_mm" in err       # smmu's traceback
    replay = [ln for ln in err.splitlines() if "replay: smmu replay" in ln]
    assert replay, err
    # the replay command reproduces it (same status, same error)
    path = replay[0].split("smmu replay", 1)[1].strip()
    r2 = smmu("replay", path, cwd=tmp_path)
    assert r2.returncode == 3 and "mapcount went negative" in r2.stderr, r2.stderr


def test_exit_statuses_are_documented():
    r = subprocess.run([sys.executable, "-m", "smmu", "--help"], capture_output=True, text=True)
    from smmu import cli
    doc = textwrap.dedent(cli.__doc__)
    assert "3 internal error" in doc and "2 usage error" in doc
    assert r.returncode == 0


def test_a_folder_named_smmu_is_the_namespace_package_trap(tmp_path):
    (tmp_path / "smmu").mkdir()                 # e.g. a folder of the user's notes or output
    (tmp_path / "smmu" / "notes.txt").write_text("")
    probe = subprocess.run([sys.executable, "-c", "import smmu; print(smmu.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True)
    r = smmu("--version", cwd=tmp_path)
    if probe.stdout.strip() != "None":          # a regular install: its package wins
        assert r.returncode == 0, r.stderr
        return
    # an editable install (make setup): the folder is imported instead, as an empty namespace
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert f"found the folder {tmp_path / 'smmu'}" in r.stderr and "rename" in r.stderr
    # the negative twin: anywhere else it runs
    assert smmu("--version", cwd=tmp_path / "smmu").returncode == 0
