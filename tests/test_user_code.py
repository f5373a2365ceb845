"""User code that fails: a driver that spins, raises (in a hook, in access, in __init__),
writes bad values; an exception inside smmu's own code; Ctrl-C. Each ends as a finding or a
clear error, never a hang or a bare traceback."""

import os
import signal
import sys
import threading
import time

import pytest

from smmu import PAGE_SIZE, MMUNotifier, Simulator
from smmu.base.errors import BadDriver, InternalError, Interrupted, InvalidArgument, TaskCrashed
from smmu.runtime import watchdog

HERE = os.path.basename(__file__)


def _sim(cls, timeout=0.3, api="modern"):
    sim = Simulator(notifier_api=api, step_timeout=timeout)
    mm = sim.new_process()
    buf = sim.do(mm.mmap(4 * PAGE_SIZE, prot="rw"))
    dev = sim.attach(cls, mm)
    return sim, mm, buf, dev


def _cpu_munmap(mm, buf):
    def cpu():
        yield from mm.write(buf, 1)
        yield from mm.munmap(buf, PAGE_SIZE)
    return cpu()


class SpinningDevice(MMUNotifier):
    """A device fault path that polls a condition nobody can make true, never yielding."""

    def access(self, va, *, write, value=None):
        yield from self.mm.get_user_pages(va, write)
        ready = False
        while not ready:            # never yields: the scheduler cannot pre-empt it
            ready = self.sim.steps < 0
        return 0


class SpinningHook(MMUNotifier):
    def invalidate_range_start(self, rng):
        while True:
            pass

    def access(self, va, *, write, value=None):
        yield
        return 0


def _spin_run(cls):
    sim, mm, buf, dev = _sim(cls)
    sim.spawn("cpu0", _cpu_munmap(mm, buf))
    sim.spawn("dev0", dev.access(buf, write=False))
    t0 = time.monotonic()
    res = sim.run()
    return res, time.monotonic() - t0


@pytest.mark.parametrize("cls, task, lines", [
    (SpinningDevice, "dev0", ("ready = self.sim.steps", "while not ready")),
    (SpinningHook, "cpu0", ("while True", "pass"))])
def test_a_loop_that_never_yields_is_a_livelock_at_the_users_line(cls, task, lines):
    res, took = _spin_run(cls)
    assert took < 5, "the watchdog did not stop the spinning step"
    [v] = res.violations
    assert v.kind == "Livelock" and v.task == task
    where = v.details["where"]
    assert HERE in where
    lineno = int(where.split(":")[1].split()[0])
    src = open(__file__).read().splitlines()[lineno - 1]
    assert any(line in src for line in lines)      # a line of the loop
    assert "never yields" in v.message


def test_the_watchdog_works_off_the_main_thread_too():
    out = {}
    th = threading.Thread(target=lambda: out.update(r=_spin_run(SpinningDevice)))
    th.start()
    th.join(20)
    assert not th.is_alive()
    res, took = out["r"]
    assert [v.kind for v in res.violations] == ["Livelock"] and took < 5


def test_the_watchdog_leaves_sigalrm_alone():
    """pytest-timeout's signal method owns SIGALRM: the watchdog never touches it."""
    fired = []
    old = signal.signal(signal.SIGALRM, lambda s, f: fired.append(s))
    try:
        res, took = _spin_run(SpinningDevice)
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert [v.kind for v in res.violations] == ["Livelock"] and took < 5 and not fired


def test_a_clean_run_is_untouched_by_the_watchdog():
    sim, mm, buf, dev = _sim(Quiet)
    sim.spawn("dev0", dev.access(buf, write=False))
    assert sim.run().ok
    assert not any(watchdog._runs.values())      # nothing left registered


def test_a_step_compiling_numba_is_not_spinning():
    """The first call of a jitted kernel compiles for seconds inside one step."""
    ns = {}
    fake = os.path.join(os.sep, "x", "numba", "core", "compiler.py")
    exec(compile("def compile_():\n    import sys\n    return sys._getframe()\n", fake, "exec"),
         ns)
    assert watchdog._compiling(ns["compile_"]())
    assert not watchdog._compiling(sys._getframe())


class Quiet(MMUNotifier):
    def access(self, va, *, write, value=None):
        pfn = yield from self.mm.get_user_pages(va, write)
        got = self.dma_write(va, pfn, value) if write else self.dma_read(va, pfn)
        yield from self.mm.put_page(pfn)
        return got


class RaisingHook(Quiet):
    def invalidate_range_start(self, rng):
        self._flush(rng)

    def _flush(self, rng):
        raise ValueError(f"no such range {rng.start:#x}")


class RaisingAccess(MMUNotifier):
    def access(self, va, *, write, value=None):
        yield from self.mm.get_user_pages(va, write)
        return {}["tlb entry"]


def test_a_hook_that_raises_is_a_finding_naming_hook_driver_and_line():
    sim, mm, buf, dev = _sim(RaisingHook)
    sim.spawn("cpu0", _cpu_munmap(mm, buf))
    res = sim.run()        # no TaskCrashed: a finding
    [v] = res.violations
    assert v.kind == "DriverError" and v.task == "cpu0"
    assert v.details["driver"] == "RaisingHook"
    assert v.details["hook"] == "invalidate_range_start"
    assert "ValueError: no such range" in v.message and HERE in v.details["where"]
    assert "_flush" in v.details["where"]          # the line that raised, in the helper
    assert sim.stopped


def test_device_code_that_raises_is_a_finding():
    sim, mm, buf, dev = _sim(RaisingAccess)
    sim.spawn("dev0", dev.access(buf, write=False))
    [v] = sim.run().violations
    assert v.kind == "DriverError" and v.details["hook"] == "access"
    assert "KeyError" in v.message and HERE in v.details["where"]


def test_a_driver_init_that_raises_names_driver_exception_and_line():
    class NoDevice(MMUNotifier):
        def __init__(self, sim, mm):
            super().__init__(sim, mm)
            raise OSError("no such device")
    sim = Simulator()
    mm = sim.new_process()
    with pytest.raises(BadDriver, match=r"NoDevice\(sim, mm\) raised OSError: no such device "
                       rf"\(at .*{HERE}:\d+ in __init__\)"):
        sim.attach(NoDevice, mm)


@pytest.mark.parametrize("value, ok", [(-1, 2**64 - 1), (2**64 + 5, 5), (7, 7), ("x", None),
                                       (None, None), (1.5, None)])
def test_device_write_values_are_checked_as_cpu_stores_are(value, ok):
    sim, mm, buf, dev = _sim(Quiet)
    if ok is None:
        with pytest.raises(InvalidArgument, match="must be an integer") as dev_err:
            sim.do(dev.access(buf, write=True, value=value))
        with pytest.raises(InvalidArgument, match="must be an integer") as cpu_err:
            sim.do(mm.write(buf, value))
        assert type(dev_err.value) is type(cpu_err.value)
        assert sim.do(mm.read(buf)) == 0          # nothing was written
    else:
        assert sim.do(dev.access(buf, write=True, value=value)) == ok
        assert sim.do(mm.read(buf)) == ok == sim.do(mm.write(buf, value))
    assert not sim.violations


def test_an_exception_in_smmus_own_code_is_an_internal_error(monkeypatch):
    """A model bug (here a fault path that breaks) is InternalError, not a usage error."""
    sim, mm, buf, dev = _sim(Quiet)
    real = type(mm).get_user_pages

    def broken(self, va, write=False):
        yield
        raise RuntimeError("frame table corrupt")
    # the broken function must look like smmu's own code: give it primary_mm's file name
    broken.__code__ = broken.__code__.replace(co_filename=real.__code__.co_filename)
    monkeypatch.setattr(type(mm), "get_user_pages", broken)
    sim.spawn("dev0", dev.access(buf, write=False))
    with pytest.raises(InternalError) as e:
        sim.run()
    assert not isinstance(e.value, TaskCrashed)
    assert e.value.task == "dev0" and "frame table corrupt" in str(e.value)
    assert HERE in e.value.where                      # the driver's call that led there
    assert isinstance(e.value.__cause__, RuntimeError)


def test_user_task_bugs_stay_task_crashed():
    sim = Simulator()

    def cpu():
        yield
        raise KeyError("my test's bug")
    sim.spawn("cpu0", cpu())
    with pytest.raises(TaskCrashed, match="cpu0"):
        sim.run()


def test_ctrl_c_says_where_each_task_was():
    sim, mm, buf, dev = _sim(Quiet, timeout=None)
    deadline = time.monotonic() + 30     # the test fails, never hangs, if no SIGINT comes

    def cpu():
        while time.monotonic() < deadline:
            yield from mm.read(buf)
            time.sleep(0.001)

    def other():
        while time.monotonic() < deadline:
            yield
    sim.spawn("cpu0", cpu())
    sim.spawn("idle", other())
    # A process started in the background by a shell without job control (``cmd &`` in a
    # script, as some CI runners do) inherits SIGINT ignored, and Python then keeps it
    # ignored: the test gives SIGINT Python's own handler, as an interactive ``smmu`` has it.
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(Interrupted) as e:
            sim.run()
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, old)
    places = {name: (state, where) for name, state, where in e.value.tasks}
    assert set(places) == {"cpu0", "idle"}
    assert all(HERE in where for _, where in places.values())
    assert isinstance(e.value, KeyboardInterrupt)
