"""The scenario registry: :class:`Scenario` (a workload runnable with any driver),
:data:`SCENARIOS`, :func:`register`, :func:`get_scenario`, :func:`attach_driver` and the default
set :func:`default_names`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from smmu.base.errors import UsageError
from smmu.notifier import API_GENERATIONS

#: tag of scenarios left out of the default ``all`` set (too slow for a quick check)
SLOW_TAGS = ("load",)


@dataclass
class Scenario:
    """A workload runnable with any driver.

    ``build(sim, driver_cls)`` makes processes and files, attaches the driver (use
    :func:`attach_driver` so that ``driver_options`` reach it), spawns the CPU and device tasks
    and returns nothing; the run itself is ``sim.run()``. ``apis``: the notifier generations
    it makes sense under; ``sim_options``: extra ``Simulator`` arguments (``rmap_locks``,
    ``fork_copies_pinned``...); ``applies(driver_cls)``: whether it fits a driver (e.g. only
    drivers with a device side); ``tags``: free-form labels ("historical", "load"...).
    ``simulator``: what to build instead of ``smmu.sim.Simulator`` (a callable taking the same
    keyword arguments); tests of exploration itself use a bare ``smmu.runtime.scheduler.Scheduler``.
    ``portfolio``: the default search's mix for this scenario, ``((part, share), ...)`` as
    :data:`smmu.explore.search.PORTFOLIO` (None: that one); a scenario too large for the
    bounded-exhaustive and window-directed parts (thousands of choice points, hundreds of
    windows) says so here. ``script``: for a script scenario (:mod:`smmu.scenarios.script`,
    not registered), the operations it does, ``{"pages", "ops"}``; None otherwise.
    """

    name: str
    build: Callable
    description: str = ""
    apis: tuple = API_GENERATIONS
    sim_options: dict = field(default_factory=dict)
    applies: Callable = lambda cls: True
    tags: tuple = ()
    simulator: Callable | None = None
    portfolio: tuple | None = None
    script: dict | None = None

    def __repr__(self) -> str:
        tags = f" [{', '.join(self.tags)}]" if self.tags else ""
        return f"<Scenario {self.name!r}{tags}: {self.description or 'no description'}>"


#: every registered scenario by name, in registration order (the catalogue fills it when
#: ``smmu.scenarios`` is imported)
SCENARIOS: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    """Add ``scenario`` to :data:`SCENARIOS` (usable as a plain call); returns it."""
    if not isinstance(scenario, Scenario):
        raise UsageError(f"register() takes a Scenario, got {type(scenario).__name__}")
    old = SCENARIOS.get(scenario.name)
    if old is not None and old is not scenario and old.build is not scenario.build:
        raise UsageError(f"a scenario named {scenario.name!r} is already registered: "
                         "choose another name")
    SCENARIOS[scenario.name] = scenario
    return scenario


def get_scenario(scenario) -> Scenario:
    """A :class:`Scenario` from itself or its registered name."""
    if isinstance(scenario, Scenario):
        return scenario
    if not isinstance(scenario, str):
        raise UsageError(f"scenario must be a Scenario or a name, got {scenario!r}")
    if scenario not in SCENARIOS:
        raise UsageError(f"unknown scenario {scenario!r}: use one of {sorted(SCENARIOS)}")
    return SCENARIOS[scenario]


def driver_options(sim) -> dict:
    """Options for ``sim.attach`` that ``run_once(..., driver_options=...)`` put on the sim."""
    return dict(getattr(sim, "driver_options", None) or {})


def attach_driver(sim, driver_cls, mm):
    """``sim.attach(driver_cls, mm, **options)`` with the options given to ``run_once``
    (scenarios call this rather than ``sim.attach`` so that ``driver_options`` apply)."""
    return sim.attach(driver_cls, mm, **driver_options(sim))


def default_names() -> list[str]:
    """The scenarios ``--scenario all`` (and no ``--scenario``) runs: every registered
    scenario except the slow load one and the broken halves of historical pairs (those are
    bugs by construction; run them by name)."""
    out = []
    for name, sc in SCENARIOS.items():
        if any(t in SLOW_TAGS for t in sc.tags):
            continue
        if "historical" in sc.tags and "fixed" not in sc.tags:
            continue
        out.append(name)
    return out
