"""Every protocol-level rule the checker enforces rests on Linux text, quoted in
smmu.oracle.rules and at the end of each report of it (issue 9, item 6). Data-level kinds
(a read or a write that saw or lost data) need no rule: they are bugs whatever the protocol
says. The static test fails when a rule is added to the oracle without its quote; the
dynamic ones run the documented bug of each protocol rule (its negative twin: the kernel's
own broken half, or a broken driver) and read the quote in the report."""

import pathlib
import re

import drivers
import pytest

import smmu.oracle
from smmu.base.errors import VIOLATION_KINDS
from smmu.explore import make_strategy_schedule, run_once
from smmu.explore.history import first_hit, historical_driver
from smmu.oracle.rules import RULES, cite
from smmu.scenarios import HISTORICAL

DATA_LEVEL = {"StaleRead", "LostWrite", "UseAfterFree", "CrossMmAccess"}


def _kinds_the_oracle_reports():
    src = "\n".join(p.read_text() for p in
                    pathlib.Path(smmu.oracle.__file__).parent.glob("*.py"))
    return set(re.findall(r'(?:_report|_violation|violation)\(\s*"([A-Za-z]+)"', src))


def test_every_protocol_rule_of_the_oracle_quotes_where_linux_states_it():
    kinds = _kinds_the_oracle_reports()
    assert {"MapInWindow", "UnpairedRange", "BadReturn", "StaleMapping", "Leak"} <= kinds
    assert DATA_LEVEL <= kinds
    assert kinds - DATA_LEVEL - set(RULES) == set(), "a protocol rule without its Linux text"
    for kind, (where, words, gloss) in RULES.items():
        assert kind in VIOLATION_KINDS and kind not in DATA_LEVEL
        # a Linux file (with its function or section) or a commit id, and a release
        assert re.search(r"(include/linux/|mm/|Documentation/)\S+", where), where
        assert re.search(r"\d\.\d+", where), where
        assert len(words.split()) >= 5 and gloss
        assert cite(kind).startswith(" [Linux, ") and words in cite(kind)
    assert cite("StaleRead") == ""


#: the kernel's own protocol bugs, one per rule where a pair has it (the pair's broken half
#: is found quickly: fork-enomem-unpaired and apic-page-remap show a data-level or Livelock
#: finding first)
PAIRS = ("pagemap-scan-unlocked", "writeback-device-write", "radeon-userptr-start-only",
         "interval-remove-race", "empty-secondary-tlb-range")


@pytest.mark.parametrize("name", PAIRS)
def test_the_report_of_a_historical_protocol_bug_ends_with_its_linux_text(name):
    h = HISTORICAL[name]
    cls = historical_driver(h.driver)
    expected = set(h.expected) & set(RULES)
    assert expected
    for strategy in h.strategies:
        f, seen = first_hit(h.name, cls, h.api, strategy, max(150, h.budget or 0), expected)
        if f is not None:
            break
    assert f is not None, f"{name}: no {sorted(expected)} (saw {seen})"
    assert f.violation.message.endswith(cite(f.kind)), f.violation.message


def test_bad_return_and_leak_reports_end_with_their_linux_text():
    f, seen = first_hit("migration", drivers.BUGGY["hmm_fail_blockable"], "modern", "random",
                        60, {"BadReturn"})
    assert f is not None, seen
    assert f.violation.message.endswith(cite("BadReturn")), f.violation.message

    from test_leaks import NeverUnregisters      # its close forgets to unregister

    r = run_once("cow-after-fork", NeverUnregisters, "modern",
                 make_strategy_schedule("random", 0), 0, stop_on_violation=False)
    leaks = [v for v in r.violations if v.kind == "Leak"]
    assert leaks and all(v.message.endswith(cite("Leak")) for v in leaks), r.kinds()
