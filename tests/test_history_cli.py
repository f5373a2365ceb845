"""``smmu history``: a row per historical pair, exit 1 when a broken half is not caught or a
fixed half is not clean, usage errors exit 2."""

from __future__ import annotations

import dataclasses
import json

from smmu import cli, scenarios


def test_history_rows_and_json(tmp_path, capsys):
    out = tmp_path / "h.json"
    rc = cli.main(["history", "fork-enomem-unpaired", "nonblock-start-end", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "fork-enomem-unpaired" in text and "c2655835fd8c" in text
    doc = json.loads(out.read_text())
    assert doc["ok"] and [p["name"] for p in doc["pairs"]] == ["fork-enomem-unpaired",
                                                                 "nonblock-start-end"]
    row = doc["pairs"][1]
    assert row["commit"] == "c2655835fd8c" and row["year"] == 2021
    assert row["caught"] and set(row["broken"]) & {"UnpairedRange", "Livelock"}
    assert row["fixed_clean"] and row["fixed"] == []


def test_history_exits_1_when_a_fixed_half_is_not_clean(monkeypatch, capsys):
    h = scenarios.HISTORICAL["apic-page-remap"]
    monkeypatch.setitem(scenarios.HISTORICAL, h.name,
                        dataclasses.replace(h, fixed_driver=h.driver))   # "fixed" = broken
    assert cli.main(["history", h.name, "--fixed-schedules", "5"]) == 1
    assert "fixed shows" in capsys.readouterr().out


def test_history_exits_1_when_a_broken_half_is_not_caught(monkeypatch, capsys):
    h = scenarios.HISTORICAL["apic-page-remap"]
    monkeypatch.setitem(scenarios.HISTORICAL, h.name,
                        dataclasses.replace(h, driver=h.fixed_driver))   # "broken" = fixed
    assert cli.main(["history", h.name, "--budget", "5", "--fixed-schedules", "2"]) == 1
    assert "not caught" in capsys.readouterr().out


def test_history_unknown_pair_is_a_usage_error(capsys):
    assert cli.main(["history", "no-such-bug"]) == 2
    assert "unknown historical pair" in capsys.readouterr().err


def test_history_table_fits_80_columns_and_cuts_no_name():
    from rich.console import Console

    from smmu.base.errors import VIOLATION_KINDS
    from smmu.cli.history import history_table
    from smmu.explore.history import HistoryRow
    rows = [HistoryRow(name=n, commit=h.commit, year=h.year, ref="", expected=h.expected,
                       broken=list(h.expected), caught=True) for n, h in
            scenarios.HISTORICAL.items()]
    rows.append(HistoryRow(name="x" * 30, commit="0" * 12, year=2024, ref="", expected=(),
                           broken=sorted(VIOLATION_KINDS), caught=True))
    con = Console(width=80, record=True, color_system=None)
    con.print(history_table(rows, 1.0), width=80)
    text = con.export_text()
    assert max(map(len, text.splitlines())) <= 80
    assert "…" not in text
    words = set(text.replace(",", " ").split())
    for r in rows:
        assert r.name in words and r.commit.split()[0] in words
        assert set(r.broken) <= words, set(r.broken) - words
