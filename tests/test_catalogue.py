"""The catalogue, end to end: every reference driver clean on every applicable scenario and
generation; every broken driver caught with one of its expected kinds on one of its
scenarios; the historical bugs flagged broken and clean fixed; replay and shrinking.

Budgets are small and fixed (PCT and random seeds 0..N-1), so the file is deterministic
whatever the hypothesis profile; they were chosen with benchmarks/bench_checker.py, which
reports how many schedules each detection actually needs."""

import drivers
import pytest

from smmu import scenarios
from smmu.explore import SCENARIOS, Replay, explore, replay, shrink
from smmu.explore.history import check_history, first_hit

CLEAN_SCHEDULES = 12         # per (driver, scenario, api), PCT
BUGGY_BUDGET = 150           # per (scenario, api, strategy) before giving up




def _pairs(cls):
    """The (scenario, api) pairs on which ``cls`` must be clean: those that apply, except
    load-small (tested below) and the windows the driver declares (``known_windows``)."""
    out = []
    for name in scenarios.default_names():
        sc = SCENARIOS[name]
        if name == "load-small" or not sc.applies(cls) or scenarios.known_window(cls, name):
            continue
        out.extend((name, a) for a in cls.apis if a in sc.apis)
    return out


@pytest.mark.parametrize("driver", sorted(drivers.BUILTIN))
def test_reference_driver_clean_everywhere(driver):
    cls = drivers.BUILTIN[driver]
    pairs = _pairs(cls)
    assert pairs
    bad = []
    for name, api in pairs:
        ex = explore(name, cls, api, strategy="pct", schedules=CLEAN_SCHEDULES, seed=0)
        bad.extend(f"{name}/{api}: {f.kind}: {f.violation.message}" for f in ex.findings)
    assert not bad, "false alarms:\n" + "\n".join(bad)


@pytest.mark.parametrize("driver", ["kvm", "gru"])
def test_reference_driver_clean_under_load(driver):
    cls = drivers.BUILTIN[driver]
    for api in cls.apis:
        ex = explore("load-small", cls, api, strategy="random", schedules=2, seed=0)
        assert not ex.findings, [(f.kind, f.violation.message) for f in ex.findings]


def first_expected(cls, strategies=("pct", "random")):
    """The first finding of an expected kind of ``cls`` on its documented scenarios, with
    each strategy in turn (BUGGY_BUDGET schedules per pair)."""
    expected = set(cls.expected)
    tried = []
    for strategy in strategies:
        for name in cls.scenarios:
            if name not in SCENARIOS:
                continue
            for api in cls.apis:
                if api not in SCENARIOS[name].apis:
                    continue
                f, seen = first_hit(name, cls, api, strategy, BUGGY_BUDGET, expected)
                tried.append(f"{name}/{api}/{strategy}: {seen}")
                if f is not None:
                    return f, tried
    return None, tried


DEFAULT_BUDGET = 200         # per (scenario, api): what `smmu check` runs by default


@pytest.mark.parametrize("name", sorted(drivers.BUGGY))
def test_buggy_driver_caught_by_the_default_search(name):
    """Every broken driver is found by the default search (no strategy named, nothing
    declared by the driver) within DEFAULT_BUDGET schedules per pair on the scenarios it
    documents, with one of its expected kinds, and no pair tried reports a kind outside
    them. Pairs are tried in the order documented until one catches it (every pair:
    benchmarks/bench_checker.py, strategy "portfolio")."""
    cls = drivers.BUGGY[name]
    assert cls.scenarios and cls.expected and cls.apis
    assert not hasattr(cls, "search_strategies") and not hasattr(cls, "search_budget")
    missing = [s for s in cls.scenarios if s not in SCENARIOS]
    assert not missing, f"{name} names scenarios that do not exist: {missing}"
    caught, wrong, tried = [], [], []
    for sname in cls.scenarios:
        for api in cls.apis:
            if api not in SCENARIOS[sname].apis:
                continue
            ex = explore(sname, cls, api, schedules=DEFAULT_BUDGET, seed=0)
            assert ex.strategy == "portfolio" and ex.schedules_run <= DEFAULT_BUDGET
            kinds = [f.kind for f in ex.findings]
            tried.append(f"{sname}/{api}: {kinds} after {ex.schedules_run}")
            caught += [k for k in kinds if k in cls.expected]
            wrong += [f"{sname}/{api}: {k}" for k in kinds if k not in cls.expected]
            if caught:
                break
        if caught:
            break
    assert caught, f"{name} ({cls.breaks}) not caught: " + "; ".join(tried)
    assert not wrong, f"{name} reported kinds outside {sorted(cls.expected)}: {wrong}"


@pytest.mark.parametrize("name", sorted(scenarios.HISTORICAL))
def test_historical_bug_flagged_broken_and_clean_fixed(name):
    row = check_history(name, budget=BUGGY_BUDGET, fixed_schedules=60)
    assert row.caught, f"{name} not flagged with {row.expected}: saw {row.broken}"
    assert row.clean, f"{name}-fixed is not clean: {row.fixed}"


def test_replay_and_shrink_are_deterministic():
    cls = drivers.BUGGY["kvm_no_seq"]
    f, tried = first_expected(cls, strategies=("pct",))
    assert f is not None, tried
    a = replay(f, record_steps=True)
    b = replay(f.to_dict(), record_steps=True)
    assert [v.kind for v in a.violations] == [v.kind for v in b.violations] != []
    assert a.schedule == b.schedule
    assert a.violations[0].steps == b.violations[0].steps
    full = Replay(f.choices)
    f.run(full)
    minimal = shrink(f)
    assert len(minimal) <= len(f.choices)
    assert f.preemptions <= full.preemptions       # no more preemptions than the bug needs
    again = replay(f)
    assert any(v.kind == f.kind for v in again.violations)

