"""``coherence_test``: a pytest test of a driver's coherence, each scheduling choice drawn by
hypothesis, and the pieces it is made of."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smmu.base.errors import BadDriver, UsageError
from smmu.explore import (Finding, HypothesisSchedule, Replay, driver_spec, explore, replay,
                          run_once, shrink)
from smmu.notifier import API_GENERATIONS, MMUNotifier
from smmu.report import check_json, finding_text
from smmu.scenarios import SCENARIOS, default_names

#: the scenarios coherence_test runs by default: the ones ``smmu check`` runs (every
#: registered scenario but the slow load and the broken halves of historical pairs)
DEFAULT_SCENARIOS = tuple(default_names())

#: the kit's default budget: schedules per (scenario, api) of the directed search that runs
#: before hypothesis (``smmu check``'s portfolio: window-directed runs, the bounded
#: exhaustive search, PCT, random). With it the kit finds every driver of drivers/buggy and
#: a driver that drops its translations only in invalidate_range_end
#: (tests/test_kit_budget.py, examples/test_device_tlb.py)
DEFAULT_SCHEDULES = 60

#: where a failing coherence test writes the JSON report ``smmu replay`` reads (override
#: with the ``SMMU_REPORT_DIR`` environment variable)
REPORT_DIR_ENV = "SMMU_REPORT_DIR"


class CoherenceFailure(AssertionError):
    """A coherence test found a violation; the message is the full report, ending with the
    commands that reproduce it (``smmu replay FILE``, and ``smmu check ... --seed`` when the
    directed search found it). ``violation``, ``scenario``, ``api``, ``choices`` (the
    schedule), ``finding`` (the :class:`smmu.explore.Finding`), ``report_file`` and
    ``commands`` are attributes."""

    def __init__(self, report: str, violation=None, scenario=None, api=None, choices=(),
                 *, finding=None, report_file=None, commands=()):
        super().__init__(report)
        self.violation = violation
        self.scenario = scenario
        self.api = api
        self.choices = list(choices)
        self.finding = finding
        self.report_file = report_file
        self.commands = list(commands)


def check_class(driver_cls):
    """Raise ``BadDriver`` unless ``driver_cls`` is a driver class."""
    if not isinstance(driver_cls, type) or not issubclass(driver_cls, MMUNotifier):
        raise BadDriver(f"coherence_test needs a driver class derived from smmu.MMUNotifier, "
                        f"got {driver_cls!r}")


def coherence_pairs(driver_cls, api=None, scenarios=None) -> list[tuple[str, str]]:
    """The (scenario name, api) pairs a coherence test of ``driver_cls`` draws from:
    ``scenarios`` (names; default :data:`DEFAULT_SCENARIOS`) that apply to the driver, under
    ``api`` (a name or a list; default every generation the driver supports)."""
    check_class(driver_cls)
    supported = tuple(getattr(driver_cls, "apis", API_GENERATIONS))
    if api is None:
        apis = [a for a in API_GENERATIONS if a in supported]
    else:
        apis = [api] if isinstance(api, str) else list(api)
        for a in apis:
            if a not in API_GENERATIONS:
                raise UsageError(f"unknown api {a!r}: use one of {list(API_GENERATIONS)}")
            if a not in supported:
                raise UsageError(f"{driver_cls.__name__} supports {list(supported)}, not {a!r}")
    if scenarios is None:
        names = [n for n in DEFAULT_SCENARIOS if n in SCENARIOS]
        explicit = False
    else:
        names = [scenarios] if isinstance(scenarios, str) else list(scenarios)
        explicit = True
    pairs = []
    for n in names:
        sc = SCENARIOS.get(n) if isinstance(n, str) else n
        if sc is None:
            raise UsageError(f"unknown scenario {n!r}: use one of {sorted(SCENARIOS)}")
        if not sc.applies(driver_cls):
            if explicit:
                raise UsageError(f"scenario {sc.name!r} does not apply to "
                                 f"{driver_cls.__name__}")
            continue
        pairs.extend((sc.name, a) for a in apis if a in tuple(sc.apis))
    if not pairs:
        raise UsageError(f"no scenario applies to {driver_cls.__name__} under {apis}")
    return pairs


def run_schedule(driver_cls, scenario: str, api: str, schedule, *, driver_options=None,
                 record_steps=False):
    """One run of ``scenario`` with ``driver_cls`` under ``schedule`` (seed 0)."""
    return run_once(scenario, driver_cls, api, schedule, 0, record_steps=record_steps,
                    stop_on_violation=True, driver_options=driver_options)


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w./:,=@+-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


def _report_path(finding: Finding, spec: str) -> Path:
    """A file of its own for ``finding``'s JSON report, in ``$SMMU_REPORT_DIR`` (default:
    ``smmu-reports`` in the system's temporary folder)."""
    root = Path(os.environ.get(REPORT_DIR_ENV) or Path(tempfile.gettempdir()) / "smmu-reports")
    name = re.sub(r"[^\w.-]+", "_", spec.rsplit("/", 1)[-1].replace(":", "-"))
    return root / f"{name}-{finding.scenario}-{finding.api}-{finding.kind}.json"


def reproduce(finding: Finding, *, schedules: int | None = None, seed: int = 0,
              shrink_schedule: bool = True) -> CoherenceFailure:
    """The :class:`CoherenceFailure` of ``finding``: its schedule shrunk (unless
    ``shrink_schedule`` is False: hypothesis shrank it already), replayed with numbered
    steps, the text report, the JSON report written for ``smmu replay`` and the commands
    that reproduce it (``smmu check SPEC --scenario S --api A --seed SEED --schedules B``
    too when ``schedules`` is given: the directed search with ``seed`` found it)."""
    try:
        if shrink_schedule:
            shrink(finding)
    except UsageError:          # not reproducible by a shorter schedule: keep the full one
        pass
    res = replay(finding, record_steps=True, trace=True)
    spec = driver_spec(finding.driver)
    text = finding_text(finding, driver=spec, result=res)
    path = _report_path(finding, spec)
    doc = check_json(spec, finding.index or 1, [finding], seed=finding.seed,
                     strategy=finding.strategy)
    for v in doc["violations"]:
        v["driver"] = spec
    commands = []
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1, default=str))
        commands.append(f"smmu replay {_quote(str(path))}")
    except OSError as e:        # pragma: no cover - an unwritable temporary folder
        text += f"\n  (could not write the report for smmu replay: {e})"
    if schedules is not None:
        commands.append(" ".join(_quote(a) for a in (
            "smmu", "check", spec, "--scenario", finding.scenario, "--api", finding.api,
            "--seed", str(seed), "--schedules", str(schedules))))
    if finding.driver_options:
        text += (f"\n  driver options: {finding.driver_options} (the commands below run the "
                 "driver with its defaults)")
    text += "\n\nreproduce it:\n" + "\n".join(f"  {c}" for c in commands)
    v = finding.violation
    same = [w for w in res.violations if w.kind == v.kind] or res.violations
    return CoherenceFailure(text, same[0] if same else v, finding.scenario, finding.api,
                            finding.minimal if finding.minimal is not None else finding.choices,
                            finding=finding, report_file=str(path), commands=commands)


def failure_report(driver_cls, scenario, api, choices, *, driver_options=None,
                   violation=None):
    """The :class:`CoherenceFailure` of a run of ``scenario`` under the schedule
    ``choices`` (what hypothesis found; ``violation``: its violation, found again by a
    replay when omitted): shrunk, replayed with numbered steps, with the ``smmu replay``
    command."""
    if violation is None:
        res = run_schedule(driver_cls, scenario, api, Replay(choices),
                           driver_options=driver_options)
        if not res.violations:   # pragma: no cover - replay is deterministic
            return CoherenceFailure(f"{scenario} [{api}]: a violation that did not replay",
                                    None, scenario, api, choices)
        violation = res.violations[0]
    finding = Finding(violation, scenario, api, "replay", 0, list(choices), driver=driver_cls,
                      driver_options=dict(driver_options or {}))
    return reproduce(finding)


def find(driver_cls, pairs, *, schedules: int = DEFAULT_SCHEDULES, seed: int = 0,
         driver_options=None) -> Finding | None:
    """The directed part of a coherence test: ``smmu check``'s default search (the
    portfolio, ``seed``) over every pair in turn, ``schedules`` schedules each; the first
    :class:`~smmu.explore.Finding`, or None."""
    for scenario, api in pairs:
        ex = explore(scenario, driver_cls, api, schedules=schedules, seed=seed,
                     stop_at_first=True, driver_options=driver_options)
        if ex.findings:
            return ex.findings[0]
    return None


def search(driver_cls, pairs, *, schedules: int = DEFAULT_SCHEDULES, seed: int = 0,
           driver_options=None) -> None:
    """:func:`find`, raising the :class:`CoherenceFailure` of what it found."""
    f = find(driver_cls, pairs, schedules=schedules, seed=seed, driver_options=driver_options)
    if f is not None:
        raise reproduce(f, schedules=schedules, seed=seed)


def coherence_test(driver_cls, api=None, scenarios=None, driver_options=None,
                   max_examples=None, schedules=None, **hypothesis_settings):
    """A pytest test function checking ``driver_cls`` for coherence.

    It runs in two parts over the (scenario, api) pairs of :func:`coherence_pairs`:

    1. the directed search ``smmu check`` runs (its portfolio of window-directed,
       exhaustive, PCT and random schedules), ``schedules`` per pair (default
       :data:`DEFAULT_SCHEDULES`; 0 skips it), deterministic;
    2. hypothesis: each example draws a pair and every scheduling choice from hypothesis
       data, so a failure shrinks to a short schedule; ``max_examples`` and any other
       ``hypothesis.settings`` keyword (``phases=``, ...) override the loaded profile.

    The first violation fails the test with :class:`CoherenceFailure`: the violation report
    with its numbered steps, and the ``smmu replay FILE`` / ``smmu check ... --seed N``
    command that reproduces it. ``driver_options`` go to the driver's constructor.
    Assign the result to a module-level name starting with ``test_``."""
    pairs = coherence_pairs(driver_cls, api, scenarios)
    opts = dict(driver_options or {})
    budget = DEFAULT_SCHEDULES if schedules is None else int(schedules)
    if budget < 0:
        raise UsageError(f"schedules must be >= 0, got {schedules}")

    @given(st.data())
    def explore_with_hypothesis(data):
        scenario, a = data.draw(st.sampled_from(pairs), label="scenario, api")
        sched = HypothesisSchedule(data)
        res = run_schedule(driver_cls, scenario, a, sched, driver_options=opts)
        if res.violations:      # the short form while hypothesis shrinks; test() reports
            v = res.violations[0]
            raise CoherenceFailure(f"{v.kind} in {scenario} [{a}]", v, scenario, a,
                                   res.schedule)

    # one failure, the first shrunk one, rather than an ExceptionGroup of every distinct bug;
    # no deadline (a run's wall time is no property of the driver, and the first examples
    # may load numba kernels) and no too-slow health check, whatever profile is loaded
    extra = {"report_multiple_bugs": False, "deadline": None,
             "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
             **hypothesis_settings}
    if max_examples is not None:
        extra["max_examples"] = int(max_examples)
    explore_with_hypothesis = settings(**extra)(explore_with_hypothesis)

    def test():
        if budget:
            search(driver_cls, pairs, schedules=budget, driver_options=opts)
        try:
            explore_with_hypothesis()
        except CoherenceFailure as e:
            if e.finding is not None:
                raise
            raise failure_report(driver_cls, e.scenario, e.api, e.choices,
                                 driver_options=opts, violation=e.violation) from None

    test.__name__ = test.__qualname__ = f"test_coherence_{driver_cls.__name__}"
    test.__doc__ = (f"Coherence of {driver_cls.__name__} over {len(pairs)} (scenario, api) "
                    f"pairs: smmu check's search ({budget} schedules each), then schedules "
                    "drawn by hypothesis.")
    test.pairs = pairs
    test.schedules = budget
    test.hypothesis_test = explore_with_hypothesis
    test._smmu_coherence = True     # the pytest plugin warms the JIT up before such tests
    return test
