"""Issue 12 section 4, the command line's surface: --version, scenarios [--json], drivers
--json, -v/-q after the command, listings and --help within 80 columns with whole names and
no docstring markup, bench --help describing each benchmark, the SPDX license string, and a
reader that closes the pipe early."""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from drivers.buggy import BUGGY
from smmu import __version__, cli
from smmu.cli.bench import BENCHES
from smmu.notifier import API_GENERATIONS
from smmu.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parent.parent
MARKUP = re.compile(r":(meth|func|class|mod|data|attr):`|``")


def run(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.startswith(f"smmu {__version__} (")


def test_scenarios_json_lists_every_scenario_with_its_generations(capsys):
    code, out, _ = run(["scenarios", "--json"], capsys)
    assert code == 0
    rows = json.loads(out)["scenarios"]
    assert {r["name"] for r in rows} == set(SCENARIOS)
    for r in rows:
        assert r["description"] and set(r["apis"]) <= set(API_GENERATIONS), r["name"]


def test_drivers_json_names_what_check_accepts(capsys):
    code, out, _ = run(["drivers", "--json"], capsys)
    assert code == 0
    names = {d["name"] for d in json.loads(out)["drivers"]}
    assert {"kvm", "gru", "xpmem"} <= names
    assert {f"buggy.{n}" for n in BUGGY} <= names


@pytest.mark.parametrize("cmd", [["scenarios"], ["drivers"]])
def test_listings_fit_80_columns_whole_names_no_markup(cmd, capsys):
    code, out, _ = run(cmd, capsys)
    assert code == 0
    assert max(map(len, out.splitlines())) <= 80
    assert not MARKUP.search(out), MARKUP.search(out)
    words = set(out.split())
    names = SCENARIOS if cmd == ["scenarios"] else [f"buggy.{n}" for n in BUGGY]
    assert set(names) <= words, set(names) - words


def test_verbosity_goes_before_or_after_the_command(capsys):
    p = cli.build_parser()
    assert p.parse_args(["drivers", "-vv"]).verbose == 2
    assert p.parse_args(["-v", "drivers"]).verbose == 1
    assert p.parse_args(["-q", "drivers", "-v"]).quiet == 1
    assert p.parse_args(["check", "kvm", "-q"]).quiet == 1
    assert run(["drivers", "-q"], capsys)[0] == 0


def test_every_help_fits_80_columns(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    for c in cli.commands():
        assert cli.main([c.name, "--help"]) == 0
        out = capsys.readouterr().out
        long = [ln for ln in out.splitlines() if len(ln) > 80]
        assert not long, (c.name, long)
        assert not MARKUP.search(out), (c.name, MARKUP.search(out))


def test_bench_help_describes_each_benchmark_and_option(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    assert cli.main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    for name in BENCHES:
        assert re.search(rf"^  {re.escape(name)}: \w", out, re.M), name
    for opt in ("--json", "--plot", "--seeds", "--quick"):
        assert re.search(rf"^  {opt}\b.*\s\w+", out, re.M), opt


def test_license_is_an_spdx_string():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"      # not the deprecated {text = ...} table


def test_a_reader_closing_the_pipe_is_no_internal_error():
    p = subprocess.run(f"{sys.executable} -m smmu scenarios --json | head -c 10", shell=True,
                       capture_output=True, text=True, timeout=120)
    assert p.stdout.startswith("{") and "internal error" not in p.stderr
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr
