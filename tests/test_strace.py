"""``smmu replay-strace``: the parser on traces it has never seen (synthetic, with every line
form strace writes, and malformed ones), the replay of processes, threads and forks, and the
shipped traces."""

import json
import re
from pathlib import Path

import pytest

from smmu import Simulator
from smmu.cli import main as smmu_main
from smmu.study.strace import Replay, StraceError, clone_flags, parse, parse_file, split_args
from smmu.study.workloads import Config, run

TRACES = Path(__file__).resolve().parents[1] / "benchmarks" / "traces"

SYNTHETIC = """\
100   execve("/bin/prog", ["prog"], 0x7ffd /* 3 vars */) = 0
100   brk(NULL)                         = 0x5555a000
100   mmap(NULL, 16384, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000010000
100   arch_prctl(ARCH_SET_FS, 0x7f00) = 0
100   brk(0x5557a000)                   = 0x5557a000
100   mprotect(0x7f0000010000, 4096, PROT_READ) = 0
100   mprotect(0x5555000000, 4096, PROT_READ) = 0
100   clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7f) = 101
101   mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000020000
101   exit_group(0)                     = ?
101   +++ exited with 0 +++
100   --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=101, si_status=0} ---
100   wait4(-1, [{WIFEXITED(s) && WEXITSTATUS(s) == 0}], 0, NULL) = 101
100   clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD, child_tid=0x7f, stack=0x7f00, stack_size=0x8000} => {parent_tid=[102]}, 88) = 102
102   mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0 <unfinished ...>
100   munmap(0x7f0000010000, 16384 <unfinished ...>
102   <... mmap resumed>)               = 0x7f0000030000
100   <... munmap resumed>)             = 0
102   madvise(0x7f0000030000, 8192, MADV_DONTNEED) = 0
102   exit(0)                           = ?
102   +++ exited with 0 +++
100   mremap(0x7f0000030000, 8192, 16384, MREMAP_MAYMOVE) = 0x7f0000040000
100   execve("/nonexistent", ["x"], 0x7ffd /* 3 vars */) = -1 ENOENT (No such file or directory)
100   exit_group(0)                     = ?
100   +++ exited with 0 +++
"""


def test_split_args_nests_brackets_braces_and_strings():
    assert split_args('"a, b", [1, 2], {x=1, y=[3, 4]}, f(5, 6), 7') == \
        ['"a, b"', "[1, 2]", "{x=1, y=[3, 4]}", "f(5, 6)", "7"]
    assert split_args("") == []


def test_parser_reads_every_line_form():
    tr = parse(SYNTHETIC.splitlines(True))
    names = [c.name for c in tr.calls]
    assert names.count("mmap") == 3 and "arch_prctl" in names and "mremap" in names
    assert tr.skipped["signal"] == 1 and tr.skipped["arch_prctl"] == 1
    assert tr.exits == {101: 11, 102: 21, 100: 25}
    assert tr.unfinished == 0
    # unfinished + resumed are one call at the first half's place, with the result
    (m,) = [c for c in tr.calls if c.pid == 102 and c.name == "mmap"]
    assert m.lineno == 15 and m.ret == 0x7F0000030000 and len(m.args) == 6
    (u,) = [c for c in tr.calls if c.name == "munmap"]
    assert u.args == ["0x7f0000010000", "16384"] and u.ret == 0
    assert names.index("mmap", 2) < names.index("munmap")       # the order of the first halves
    bad = [c for c in tr.calls if c.failed]
    assert [c.name for c in bad] == ["execve"] and bad[0].errno == "ENOENT"
    (c3,) = [c for c in tr.calls if c.name == "clone3"]
    assert clone_flags(c3) >= {"CLONE_VM", "CLONE_THREAD"} and c3.ret == 102


def test_parser_takes_bracket_pids_timestamps_and_no_pid():
    tr = parse(["[pid  7] 12:00:01.123456 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|"
                "MAP_ANONYMOUS, -1, 0) = 0x7f0000001000\n",
                "1700000000.5 munmap(0x7f0000001000, 4096) = 0\n", "\n"])
    assert [(c.pid, c.name) for c in tr.calls] == [(7, "mmap"), (0, "munmap")]


@pytest.mark.parametrize("line,why", [
    ("100 this is not strace output\n", "not a system call"),
    ("100 <... mmap resumed>) = 0x7f0000001000\n", "without an unfinished mmap"),
    ("100 mmap(NULL, 4096, PROT_READ\n", "without ') = result'"),
    ("100 mmap(NULL, 4096) = 0x7f0000001000\n", "mmap takes 6 arguments"),
    ("100 munmap(0xZZ, 4096) = 0\n", "bad arguments"),
    ("100 +++ exited with zero +++\n", "malformed exit line"),
    ("100 --- SIGSEGV {si_signo=SIGSEGV}\n", "malformed signal line"),
])
def test_a_malformed_line_is_an_error_naming_its_line(line, why):
    lines = ["100 brk(NULL) = 0x5555a000\n", "\n", line]
    with pytest.raises(StraceError, match=re.escape(why)) as e:
        parse(lines, path="t.strace")
    assert e.value.lineno == 3 and "t.strace:3" in str(e.value)


def test_a_call_never_resumed_is_counted_not_replayed():
    tr = parse(["5 wait4(-1,  <unfinished ...>\n", "5 +++ killed by SIGKILL +++\n"])
    assert tr.unfinished == 1 and tr.calls == [] and tr.exits == {5: 2}


def test_replay_forks_threads_and_maps(tmp_path):
    tr = parse(SYNTHETIC.splitlines(True))
    sim = Simulator(notifier_api="v2008", schedule="timed")
    rep = Replay(sim, tr)
    for name, gen, cpu in rep.tasks():
        sim.spawn(name, gen, cpu=cpu)
    r = sim.run()
    assert r.ok, r.violations
    c = rep.counts
    assert c["forks"] == 1 and c["threads"] == 1 and c["mremap"] == 1 and c["madvise"] == 1
    assert c["failed"] == 1                            # the ENOENT execve changed nothing
    assert c["skipped.mprotect:SegmentationFault"] == 1   # the executable's own segment
    assert c["touches"] > 0 and c["cow_touches"] > 0
    # the thread ran on its own CPU in the parent's address space
    assert {"pid100", "pid101", "pid102"} <= set(r.times)
    assert r.times["pid102"]["cpu"] != r.times["pid100"]["cpu"]
    assert all(mm.exited for mm in sim.memory.mms) or not sim.memory.mms


def test_replay_traffic_differs_by_api_only_on_single_page_paths(tmp_path):
    f = tmp_path / "t.strace"
    f.write_text(SYNTHETIC)
    res = {api: run(Config("strace", api, ("kvm", "gru"), 0, trace=str(f)))
           for api in ("v2008", "range_only")}
    for r in res.values():
        assert not r["violations"]
    sites = {api: {(s, h) for _op, s, h, _d, _n in r["hooks"]} for api, r in res.items()}
    assert ("do_wp_page", "invalidate_page") in sites["v2008"]     # the fork's COW touches
    assert ("do_wp_page", "invalidate_range_start") in sites["range_only"]
    assert res["v2008"]["work"] == res["range_only"]["work"]


@pytest.mark.parametrize("name", ["git-status", "gcc-compile", "sort-large-file"])
def test_the_shipped_traces_replay(name):
    r = run(Config(f"strace:{name}", "range_only", ("kvm", "gru"), 0,
                   trace=str(TRACES / f"{name}.strace"), device_gap_ns=5000.0))
    assert not r["violations"], r["violation_messages"]
    assert r["work"]["touches"] > 50 and r["ops"] > 20


def test_the_python_startup_trace_parses_with_its_forks_and_execs():
    tr = parse_file(TRACES / "python-startup.strace")
    names = [c.name for c in tr.calls]
    assert names.count("clone") >= 30 and names.count("execve") >= 30 and len(tr.pids) > 30


def test_cli_replay_strace(tmp_path, capsys):
    f = tmp_path / "t.strace"
    f.write_text(SYNTHETIC)
    out = tmp_path / "r.json"
    assert smmu_main(["replay-strace", str(f), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "v2008" in printed and "modern" in printed and "do_wp_page" in printed
    doc = json.loads(out.read_text())
    assert [a["api"] for a in doc["apis"]] == ["v2008", "range_only", "modern"]
    v08 = doc["apis"][0]
    assert v08["callbacks_by_hook"].get("kvm.invalidate_page", 0) > 0


def test_cli_replay_strace_usage_errors(tmp_path, capsys):
    bad = tmp_path / "bad.strace"
    bad.write_text("1 brk(NULL) = 0x1000\n1 garbage here\n")
    assert smmu_main(["replay-strace", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.strace:2" in err and "Traceback" not in err
    assert smmu_main(["replay-strace", str(tmp_path / "missing.strace")]) == 2
    assert "cannot read" in capsys.readouterr().err
    good = tmp_path / "g.strace"
    good.write_text(SYNTHETIC)
    assert smmu_main(["replay-strace", str(good), "--api", "v2009"]) == 2
    assert smmu_main(["replay-strace", str(good), "--drivers", "kvm,nope"]) == 2
    assert smmu_main(["replay-strace", str(good), "--drivers", "xpmem", "--api", "v2008"]) == 2
    assert "PT lock" in capsys.readouterr().err
