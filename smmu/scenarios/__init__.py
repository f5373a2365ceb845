"""The scenario catalogue: small concurrent workloads that any driver can be checked on.

Every scenario is a registered :class:`~smmu.scenarios.registry.Scenario`. Its
``build(sim, driver_cls)`` makes one or more processes, attaches the driver
(``attach_driver``), spawns CPU tasks doing the MM operation under test and device tasks
running a plain ``drv.access(va, write=..., value=...)`` loop, and ends with CPU reads of
every touched page (run once all other tasks are done) so that a lost write surfaces as a
``LostWrite`` / ``StaleRead``. Scenarios are kept to a few pages and a few tasks so that
thousands of schedules a second can be explored.

Modules: ``registry`` (Scenario, SCENARIOS, register, get_scenario, attach_driver),
``kit`` (the pieces builders use), ``catalogue`` (operation scenarios), ``gather``
(operations large enough to cross an mmu_gather batch), ``thp`` (transparent huge pages),
``aging`` (page-idle tracking),
``load``,
``historical``, ``script`` (a run written down as operations: what coherence_machine did,
for ``smmu replay``); everything public is importable from here.

Families:

* operation scenarios (``cow-after-fork``, ``reclaim-while-device-reads``, ...): every
  reference driver must be clean on them under every generation it supports;
* load scenarios (``load-small``; ``load``, tagged ``"load"``, not in the default set):
  several CPUs and devices, random operation mixes from a seeded RNG;
* historical bugs (``HISTORICAL``, :mod:`smmu.scenarios.historical`): pairs ``"<name>"`` /
  ``"<name>-fixed"``, the broken and the fixed configuration of a bug Linux or a driver
  really had (linux-notes section 3).

Which driver a scenario applies to: ``applies(cls)``. A driver with no notifier hooks at all
(the long-term-pin model, ``drivers.PINNED``) cannot follow any invalidation, so it only runs
the scenarios in which the pages it pins are never invalidated behind its back
(:data:`PIN_SAFE`).

Applying is not the same as having to be clean: a reference driver may declare
``known_windows = {scenario: why}`` for windows the real driver has (XPMEM drops its
mappings only in ``end``); the checker reports them as true positives, and
:func:`known_window` is what the catalogue test and the demo consult before requiring a
clean run. Where real users have a protocol that closes the window, the scenario follows it
instead (:func:`exporter_fork`: XPMEM's fork ioctls).
"""

from smmu.scenarios.registry import (SCENARIOS, SLOW_TAGS, Scenario, attach_driver, default_names,
                                     driver_options, get_scenario, register)
from smmu.scenarios.kit import (Join, PIN_SAFE, anon_process, cpu_reads, cpu_writes, device_loop,
                                exporter_fork, has_notifier, known_window, kswapd, ops, pages,
                                reuse_frames, reused, seq, setup_anon, tolerant)
from smmu.scenarios import catalogue  # noqa: F401  (registers the operation scenarios)
from smmu.scenarios import gather  # noqa: F401  (scenarios that cross an mmu_gather batch)
from smmu.scenarios import thp  # noqa: F401  (scenarios on transparent huge pages)
from smmu.scenarios import aging  # noqa: F401  (scenarios that age pages)
from smmu.scenarios.load import LOAD, LOAD_OPS, LOAD_SMALL, LoadShape
from smmu.scenarios.historical import HISTORICAL, Historical, RefusingNotifier
from smmu.scenarios.script import SCRIPT_OPS, SCRIPT_SCENARIO, ScriptState, script_scenario

__all__ = ["HISTORICAL", "Historical", "Join", "LOAD", "LOAD_OPS", "LOAD_SMALL", "LoadShape",
           "PIN_SAFE", "RefusingNotifier", "SCENARIOS", "SCRIPT_OPS", "SCRIPT_SCENARIO",
           "SLOW_TAGS", "Scenario", "ScriptState", "anon_process",
           "attach_driver", "cpu_reads", "cpu_writes", "default_names", "device_loop",
           "driver_options", "exporter_fork", "get_scenario", "has_notifier", "known_window",
           "kswapd", "ops", "pages", "register", "reuse_frames", "reused", "script_scenario",
           "seq", "setup_anon", "tolerant"]
