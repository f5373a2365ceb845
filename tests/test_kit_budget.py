"""The kit's default budget (``coherence_test``'s directed search: smmu check's portfolio,
DEFAULT_SCHEDULES per (scenario, api)) finds every driver of drivers/buggy and a user's
driver that drops its translations only in invalidate_range_end (examples/).

In CI each driver is searched on the default pairs of the scenarios it documents first,
then on the others (a second or so each); ``make soak`` runs the kit exactly as a user's
test does: every default pair in the kit's order, no hint of where the bug is (about two
minutes for all of them)."""

import os
import sys
from pathlib import Path

import pytest

from drivers.buggy import BUGGY
from smmu.testing import DEFAULT_SCHEDULES, coherence_pairs, find

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from device_tlb_end_only import EndOnlyTLB  # noqa: E402

#: what a report of the end-only flush may be: the device used a translation of a page the
#: primary freed (UseAfterFree) or replaced (StaleRead, LostWrite)
END_ONLY_EXPECTED = {"StaleRead", "UseAfterFree", "LostWrite"}

#: broken drivers the kit's default budget misses (each a known gap, strict: the test fails
#: once the kit finds it, so the entry must go). None now: kvm_gpc_speculative_valid (issue
#: 10's gfn=>pfn cache pair), once found only by a random schedule, is the window-directed
#: search's placement of a fault inside the driver's start hook (steer.hook_plans); the
#: load-small scenario finds it too (vCPUs read a page through the cache while it migrates
#: again and again)
KNOWN_MISSES: set = set()

BROKEN = [pytest.param(name, cls, cls.expected, id=name, marks=pytest.mark.xfail(
              strict=True, reason="a known gap of the kit's budget (KNOWN_MISSES)"))
          if name in KNOWN_MISSES else pytest.param(name, cls, cls.expected, id=name)
          for name, cls in BUGGY.items()] + \
    [pytest.param("examples.EndOnlyTLB", EndOnlyTLB, END_ONLY_EXPECTED, id="EndOnlyTLB")]


def documented_first(cls):
    """The kit's default pairs, those of the scenarios ``cls`` documents first."""
    pairs = coherence_pairs(cls)
    mine = [p for p in pairs if p[0] in tuple(getattr(cls, "scenarios", ()))]
    return mine + [p for p in pairs if p not in mine]


@pytest.mark.parametrize("name,cls,expected", BROKEN)
def test_default_budget_finds_it_in_its_scenarios(name, cls, expected):
    f = find(cls, documented_first(cls))
    assert f is not None, f"{name}: the kit's budget ({DEFAULT_SCHEDULES}) missed it"
    assert f.kind in expected, (name, f)


soak = pytest.mark.skipif(not os.environ.get("SMMU_SOAK"), reason="make soak (SMMU_SOAK=1)")


@soak
@pytest.mark.parametrize("name,cls,expected", BROKEN)
def test_soak_default_budget_finds_it_with_no_hint(name, cls, expected):
    f = find(cls, coherence_pairs(cls))
    assert f is not None, f"{name}: the kit's default budget missed it"
    assert f.kind in expected, (name, f)
