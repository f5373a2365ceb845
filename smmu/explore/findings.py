"""Findings: one violation :func:`~smmu.explore.search.explore` found, with what it takes to
replay it (:class:`Finding`, :func:`replay`, :func:`driver_spec`)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from smmu.base.errors import UsageError, Violation
from smmu.explore.loader import FILE_MODULE_PREFIX, load_driver
from smmu.explore.run import make_strategy_schedule, run_once
from smmu.runtime.scheduler import Result
from smmu.runtime.schedules import Replay
from smmu.scenarios import Scenario, script_scenario


def driver_spec(driver_cls) -> str:
    """The spec :func:`load_driver` reads back for a driver class: ``module:QualName``, or
    ``path/to/file.py:QualName`` (relative to the current directory when under it) for a
    class loaded from a file or defined in a script or test module that is not importable
    by its name."""
    if isinstance(driver_cls, str):
        return driver_cls
    if driver_cls is None:
        return ""
    mod = driver_cls.__module__
    path = getattr(sys.modules.get(mod), "__file__", None)
    if path and Path(path).is_file() and (mod.startswith(FILE_MODULE_PREFIX) or mod == "__main__" or
                 not _importable(mod) or ("." not in mod and _under_cwd(path))):
        # a top-level module of the user's (a test file, a script) loads by path anywhere
        p = Path(path).resolve()
        if _under_cwd(path):
            p = p.relative_to(Path.cwd().resolve())
        return f"{p}:{driver_cls.__qualname__}"
    return f"{mod}:{driver_cls.__qualname__}"


def _under_cwd(path: str) -> bool:
    try:
        Path(path).resolve().relative_to(Path.cwd().resolve())
        return True
    except ValueError:
        return False


def _importable(mod: str) -> bool:
    """Would ``import mod`` find the module that is loaded under that name?"""
    m = sys.modules.get(mod)
    if m is None:
        return False
    try:
        spec = importlib.util.find_spec(mod)
    except (ImportError, ValueError):
        return False
    return spec is not None and getattr(spec, "origin", None) == getattr(m, "__file__", None)


@dataclass
class Finding:
    """One violation found by :func:`explore`, with everything needed to replay it.

    ``choices``: the schedule (task ids per choice point) of the failing run; ``minimal``: a
    shortened list that still reproduces it (set by :func:`shrink`), ``preemptions``: how many
    preemptions the replay of ``minimal`` makes. ``driver``: the class or its spec string."""

    violation: Violation
    scenario: str
    api: str
    strategy: str
    seed: int
    choices: list
    driver: object = None
    driver_options: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    sim_options: dict = field(default_factory=dict)
    minimal: list | None = None
    preemptions: int | None = None
    #: which schedule of its exploration found it (1 = the first)
    index: int | None = None
    scenario_def: Scenario | None = field(default=None, repr=False, compare=False)

    @property
    def kind(self) -> str:
        return self.violation.kind

    def __repr__(self):
        mini = (f", minimal {len(self.minimal)} choices / {self.preemptions} preemptions"
                if self.minimal is not None else "")
        return (f"<Finding {self.kind} in {self.scenario!r} ({self.api}, {self.strategy} "
                f"seed {self.seed}): {len(self.choices)} choices{mini}>")

    def to_dict(self) -> dict:
        """JSON-able: what ``smmu replay FILE`` reads back with :meth:`from_dict` (with
        ``"script"``, the operations of a script scenario, when the finding is of one)."""
        v = self.violation
        script = getattr(self.scenario_def, "script", None)
        extra = {"script": script} if script is not None else {}
        return {**extra,
            "driver": driver_spec(self.driver),
            "driver_options": dict(self.driver_options),
            "scenario": self.scenario,
            "api": self.api,
            "strategy": self.strategy,
            "seed": self.seed,
            "params": dict(self.params),
            "sim_options": dict(self.sim_options),
            "choices": list(self.choices),
            "minimal": None if self.minimal is None else list(self.minimal),
            "preemptions": self.preemptions,
            "index": self.index,
            "kind": v.kind,
            "address": v.address,
            "message": v.message,
            "violation": v.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Finding":
        missing = [k for k in ("scenario", "api", "strategy", "seed", "kind") if k not in d]
        if missing:
            raise UsageError(f"not a smmu finding: keys {missing} are missing")
        vd = d.get("violation") or {}
        v = Violation(kind=d["kind"], message=d.get("message", vd.get("message", "")),
                      address=d.get("address"), task=vd.get("task"), step=vd.get("step", 0),
                      frames=tuple(vd.get("frames", ())), schedule=list(d.get("choices", [])),
                      details=vd.get("details", {}))
        return cls(violation=v, scenario=d["scenario"], api=d["api"], strategy=d["strategy"],
                   seed=int(d["seed"]), choices=list(d.get("choices") or []),
                   driver=d.get("driver") or None, driver_options=d.get("driver_options") or {},
                   params=d.get("params") or {}, sim_options=d.get("sim_options") or {},
                   minimal=d.get("minimal"), preemptions=d.get("preemptions"),
                   index=d.get("index"),
                   scenario_def=script_scenario(d["script"]) if d.get("script") else None)

    def _driver_cls(self):
        return load_driver(self.driver) if isinstance(self.driver, str) else self.driver

    def run(self, schedule, *, record_steps=False, trace=False) -> Result:
        """Re-run this finding's scenario under ``schedule`` (stopping at the first violation)."""
        return run_once(self.scenario_def or self.scenario, self._driver_cls(), self.api,
                        schedule, self.seed,
                        record_steps=record_steps, trace=trace, stop_on_violation=True,
                        driver_options=self.driver_options, **self.sim_options)


def replay(finding_or_dict, record_steps=True, trace=False, *, use_minimal=True,
           driver_cls=None) -> Result:
    """Re-run a finding deterministically: from its minimal or full choice list when it has
    one (always for strategy ``"replay"``: an explicit choice list, maybe empty), else from
    (strategy, seed, params). Accepts a :class:`Finding` or its ``to_dict()``;
    ``driver_cls`` overrides the driver the finding names (e.g. resolved by the CLI)."""
    f = finding_or_dict
    if isinstance(f, dict):
        f = Finding.from_dict(f)
    if not isinstance(f, Finding):
        raise UsageError(f"replay() takes a Finding or its to_dict(), got {type(f).__name__}")
    if driver_cls is not None:
        f = replace(f, driver=driver_cls)
    choices = f.minimal if (use_minimal and f.minimal is not None) else f.choices
    if choices or f.strategy in ("exhaustive", "windows", "replay"):
        sched = Replay(choices or ())
    else:
        sched = make_strategy_schedule(f.strategy, f.seed, f.params)
    return f.run(sched, record_steps=record_steps, trace=trace)
