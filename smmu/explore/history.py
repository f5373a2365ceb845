"""Replaying the kernel's own history: each historical pair of
:data:`smmu.scenarios.HISTORICAL` run broken (it must show one of its expected kinds) and
fixed (it must be clean). ``smmu history`` prints these rows; the catalogue tests assert
them.

Budgets are fixed and the seeds start at 0, so a row is deterministic: the broken half is
searched with PCT, then random schedules, up to ``budget`` schedules each (resuming after a
finding of another kind); the fixed half runs ``fixed_schedules`` of each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import drivers
from smmu.base.errors import UsageError
from smmu.explore.loader import load_driver
from smmu.explore.search import explore
from smmu.scenarios import HISTORICAL

#: per strategy, before the broken half counts as not caught
BROKEN_BUDGET = 150
#: per strategy on the fixed half
FIXED_SCHEDULES = 60
STRATEGIES = ("pct", "random")


def first_hit(name, cls, api, strategy, budget, expected):
    """The first finding of an ``expected`` kind within ``budget`` schedules (seeds 0..),
    resuming after any finding of another kind; ``(finding or None, kinds seen)``."""
    start, seen = 0, []
    while start < budget:
        ex = explore(name, cls, api, strategy=strategy, schedules=budget - start, seed=start)
        if not ex.findings:
            break
        f = ex.findings[0]
        seen.append(f.kind)
        if f.kind in expected:
            return f, seen
        start = f.seed + 1
    return None, seen


@dataclass
class HistoryRow:
    """One historical pair's verdict: ``broken`` the kinds its broken half showed (the
    expected one found first), ``caught`` whether one was expected, ``fixed`` the kinds its
    fixed half showed (empty: clean)."""

    name: str
    commit: str
    year: int
    ref: str
    expected: tuple
    broken: list = field(default_factory=list)
    caught: bool = False
    fixed: list = field(default_factory=list)
    broken_seed: int | None = None
    broken_strategy: str | None = None
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.fixed

    @property
    def ok(self) -> bool:
        return self.caught and self.clean

    def to_dict(self) -> dict:
        return {"name": self.name, "commit": self.commit, "year": self.year, "ref": self.ref,
                "expected": list(self.expected), "broken": list(self.broken),
                "caught": self.caught, "broken_strategy": self.broken_strategy,
                "broken_seed": self.broken_seed, "fixed": list(self.fixed),
                "fixed_clean": self.clean, "ok": self.ok, "seconds": round(self.seconds, 2)}


def historical_driver(spec):
    """The class a pair names: a ``drivers.BUILTIN`` or ``drivers.BUGGY`` key, or any driver
    spec :func:`~smmu.explore.loader.load_driver` accepts."""
    cls = {**drivers.BUILTIN, **drivers.BUGGY}.get(spec)
    return cls if cls is not None else load_driver(spec)


def check_history(name, *, budget=BROKEN_BUDGET, fixed_schedules=FIXED_SCHEDULES) -> HistoryRow:
    """Run pair ``name`` broken and fixed; see the module docstring."""
    if name not in HISTORICAL:
        raise UsageError(f"unknown historical pair {name!r}: use one of "
                         f"{', '.join(HISTORICAL)}")
    h = HISTORICAL[name]
    t0 = time.perf_counter()
    row = HistoryRow(h.name, h.commit, h.year, h.ref, tuple(h.expected))
    broken_cls = historical_driver(h.driver)
    expected = set(h.expected)
    for strategy in h.strategies:
        f, seen = first_hit(h.name, broken_cls, h.api, strategy, max(budget, h.budget or 0),
                            expected)
        row.broken.extend(k for k in seen if k not in row.broken)
        if f is not None:
            row.caught = True
            row.broken_seed, row.broken_strategy = f.seed, strategy
            break
    fixed_cls = historical_driver(h.fixed_driver)
    kinds = []
    for strategy in STRATEGIES:
        ex = explore(h.name + "-fixed", fixed_cls, h.apis[1], strategy=strategy,
                     schedules=fixed_schedules, seed=0)
        kinds.extend(f.kind for f in ex.findings if f.kind not in kinds)
    row.fixed = kinds
    row.seconds = time.perf_counter() - t0
    return row
