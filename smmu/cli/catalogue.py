"""``smmu drivers`` (built-in, buggy and entry-point drivers) and ``smmu scenarios`` (the
scenario catalogue: what each runs, under which generations, what it exercises)."""

from __future__ import annotations

import json

from smmu.cli.common import EXIT_CLEAN, Command, console, first_line, plain, print_entries
from smmu.explore import run_once
from smmu.explore.loader import (BUGGY_PREFIX, buggy_drivers, builtin_drivers,
                                 entry_point_drivers)
from smmu.notifier import API_GENERATIONS
from smmu.runtime.schedules import RoundRobin
from smmu.scenarios import SCENARIOS, default_names


def driver_rows() -> list[dict]:
    """Every driver ``smmu check`` can name: ``{"name", "kind", "apis", "description"}``
    (buggy ones also ``breaks``, ``expected`` and ``scenarios``)."""
    rows = []
    for n, c in sorted(builtin_drivers().items()):
        rows.append({"name": n, "kind": "built-in", "class": f"{c.__module__}:{c.__qualname__}",
                     "apis": list(getattr(c, "apis", API_GENERATIONS)),
                     "description": first_line(c.__doc__)})
    for n, c in sorted(buggy_drivers().items()):
        rows.append({"name": BUGGY_PREFIX + n, "kind": "buggy",
                     "class": f"{c.__module__}:{c.__qualname__}",
                     "apis": list(getattr(c, "apis", API_GENERATIONS)),
                     "description": plain(getattr(c, "breaks", None)) or first_line(c.__doc__),
                     "expected": list(getattr(c, "expected", ()) or ()),
                     "scenarios": list(getattr(c, "scenarios", ()) or ())})
    for n, ep in sorted(entry_point_drivers().items()):
        rows.append({"name": n, "kind": "entry point", "class": ep.value, "apis": [],
                     "description": f"registered by an installed package ({ep.value})"})
    return rows


def cmd_drivers(args) -> int:
    rows = driver_rows()
    if args.json:
        print(json.dumps({"drivers": rows}, indent=2))
        return EXIT_CLEAN
    entries, kind = [], None
    for r in rows:
        if r["kind"] != kind:
            kind = r["kind"]
            entries.append((None, {"built-in": "reference drivers", "buggy": "documented "
                                   "broken drivers (each breaks one rule)", "entry point":
                                   "installed drivers"}[kind], None))
        desc = r["description"]
        if r.get("expected"):
            desc = f"{desc} (expect {', '.join(r['expected'])})"
        entries.append((r["name"], _apis(r["apis"]), desc))
    print_entries(console(), "smmu drivers: the DRIVER names of smmu check", entries)
    return EXIT_CLEAN


def _apis(apis) -> str:
    if len(apis) == len(API_GENERATIONS):
        return "every api"
    return ", ".join(apis) or "apis unknown"


def _probe(sc, api):
    """What ``sc`` exercises under ``api``: the notifier hooks called in one round-robin run
    with the first built-in driver it applies to, or None when none applies."""
    for _n, cls in sorted(builtin_drivers().items()):
        if sc.applies(cls) and api in tuple(getattr(cls, "apis", API_GENERATIONS)):
            res = run_once(sc, cls, api, RoundRobin(), 0, stop_on_violation=False)
            hooks = res.stats.get("hooks", {})
            return cls.__name__, sorted(h for h, n in hooks.items() if n)
    return None


def scenario_rows(probe: bool = True) -> list[dict]:
    """Every scenario: ``{"name", "description", "apis", "tags", "default", "exercises"}``;
    ``exercises`` maps each generation to the hooks one run calls (``probe``)."""
    defaults = set(default_names())
    rows = []
    for name, sc in SCENARIOS.items():
        row = {"name": name, "description": plain(sc.description),
               "summary": first_line(sc.description), "apis": list(sc.apis),
               "tags": list(sc.tags), "default": name in defaults}
        if probe:
            ex = {}
            for api in sc.apis:
                got = _probe(sc, api)
                if got is not None:
                    ex[api] = {"driver": got[0], "hooks": got[1]}
            row["exercises"] = ex
        rows.append(row)
    return rows


_SHORT = {"invalidate_range_start": "start", "invalidate_range_end": "end",
          "invalidate_page": "page", "clear_flush_young": "young", "clear_young": "young",
          "test_young": "test_young", "arch_invalidate_secondary_tlbs": "arch_inval",
          "interval_invalidate": "interval", "change_pte": "change_pte", "release": "release"}


def cmd_scenarios(args) -> int:
    rows = scenario_rows()
    if args.json:
        print(json.dumps({"scenarios": rows}, indent=2))
        return EXIT_CLEAN
    entries = []
    for r in rows:
        hooks = sorted({_SHORT.get(h, h) for e in r["exercises"].values() for h in e["hooks"]})
        what = r["summary"]
        extra = list(r["tags"]) + ([] if r["default"] else ["run by name only"])
        if extra:
            what += f" [{', '.join(extra)}]"
        if hooks:
            what += f" Hooks called: {', '.join(hooks)}."
        entries.append((r["name"], _apis(r["apis"]), what))
    print_entries(console(), "smmu scenarios: check --scenario NAME runs one", entries)
    return EXIT_CLEAN


def _json_flag(p) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


COMMANDS = [
    Command("drivers", "list built-in, buggy and entry-point drivers", cmd_drivers, _json_flag,
            order=20),
    Command("scenarios", "list the scenarios: what each runs, its generations, the hooks it "
            "exercises", cmd_scenarios, _json_flag, order=25),
]
