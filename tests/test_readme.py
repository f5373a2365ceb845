"""The README cannot drift: every code block in it is run or checked here.

* ``sh`` blocks: every command runs, from a scratch folder holding the clone's ``examples/``,
  ``benchmarks/`` and ``.venv`` (this venv), as a user runs them after ``make setup``; it must
  exit 0, or N when its comment says ``exit N``;
* ``python`` blocks: run as a script; a block whose first line is ``# examples/FILE`` is that
  file's code, verbatim;
* ``text`` blocks: each ``smmu`` command parses (``smmu.cli.build_parser``), every file it
  names exists, each ``make`` target exists;
* every path the README quotes (`` `docs/kernels.md` ``...) exists in the clone.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from smmu.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = [(m.group(1), m.group(2)) for m in
          re.finditer(r"^```(\w*)\n(.*?)^```$", README, re.M | re.S)]
VENV = Path(sys.prefix)


def commands(body):
    """(command, expected exit status) for each line of a shell block."""
    out = []
    for line in body.splitlines():
        m = re.match(r"(.*?)(?:\s+#\s(.*))?$", line)
        cmd, comment = m.group(1), m.group(2) or ""
        if not cmd.strip():
            continue
        m = re.search(r"\bexit (\d+)", comment)
        out.append((cmd.strip(), int(m.group(1)) if m else 0))
    return out


def test_every_block_has_a_kind():
    assert BLOCKS and all(kind in ("sh", "python", "text") for kind, _ in BLOCKS), \
        [k for k, _ in BLOCKS]
    assert README.startswith("# smmu\n\n```sh\nmake demo ") and "\nmake test " in BLOCKS[0][1]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    d = tmp_path_factory.mktemp("readme")
    for name in ("examples", "benchmarks"):
        (d / name).symlink_to(ROOT / name)
    (d / ".venv").symlink_to(VENV)
    return d


SH = [c for kind, body in BLOCKS[1:] if kind == "sh" for c in commands(body)]


@pytest.mark.parametrize("cmd,status", SH, ids=[c[:60] for c, _ in SH])
def test_sh_commands_run(cmd, status, scratch):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PYTHON"))}
    env["CI"] = "true"
    r = subprocess.run(cmd, shell=True, cwd=scratch, env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == status, (cmd, r.stdout[-3000:], r.stderr[-3000:])
    assert "Traceback" not in r.stderr


def test_the_examples_run_through_the_readme():
    assert any("pytest" in c and "examples/" in c for c, _ in SH)


PY = [body for kind, body in BLOCKS if kind == "python"]


@pytest.mark.parametrize("body", PY, ids=[b.splitlines()[0][:40] for b in PY])
def test_python_blocks(body, tmp_path):
    first = body.splitlines()[0]
    if first.startswith("# examples/"):
        path = ROOT / first[2:].strip()
        code = body.split("\n", 1)[1]
        assert code in path.read_text(), f"the README's copy of {path.name} drifted"
        return
    (tmp_path / "block.py").write_text(body)
    r = subprocess.run([sys.executable, "block.py"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, (body, r.stderr)


TARGETS = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))


def test_text_commands_parse_and_name_real_files():
    checked = 0
    for kind, body in BLOCKS:
        for cmd, _ in commands(body):
            argv = shlex.split(cmd)
            if argv[0] == "make":
                assert all(t in TARGETS for t in argv[1:] if "=" not in t), cmd
                checked += 1
                continue
            if kind != "text" or not argv[0].endswith("smmu"):
                continue
            try:
                build_parser().parse_args(argv[1:])
            except SystemExit as e:
                pytest.fail(f"README command does not parse ({e}): {cmd}")
            for a in argv[1:]:
                if "/" in a and re.search(r"\.(py|strace|md)(:|$)", a):
                    assert (ROOT / a.split(":")[0]).exists(), (cmd, a)
            checked += 1
    assert checked >= 5


def test_quoted_paths_exist():
    """A quoted path into the clone (its first folder is one of the clone's) exists; none
    points outside it (``../shared/...`` existed only on the machine it was written on)."""
    top = {p.name for p in ROOT.iterdir()}
    quoted = re.findall(r"`([\w./-]+/[\w./-]*)`", README)
    outside = [p for p in quoted if p.startswith("..")]
    missing = [p for p in quoted if p.split("/")[0] in top and not (ROOT / p).exists()]
    assert not outside and not missing, (outside, missing)
