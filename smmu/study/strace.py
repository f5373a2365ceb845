"""``smmu replay-strace``: a real program's memory system calls as a primary-MM workload.

:func:`parse` reads the output of ``strace -f -e trace=memory,process`` (``-o FILE`` form,
``PID  call(args) = ret``; also ``[pid N] ...`` and, without ``-f``, lines with no pid; an
optional ``-t``/``-tt``/``-ttt`` timestamp). It understands ``mmap``, ``munmap``,
``mprotect``, ``brk``, ``madvise``, ``mremap``, ``clone``, ``clone3``, ``fork``, ``vfork``,
``execve``, ``exit_group`` and ``exit``; other system calls (``wait4``, ``arch_prctl``...),
signal lines (``--- SIGCHLD ... ---``) and exit lines (``+++ exited with 0 +++``) are kept
where they matter (wait4 waits for the child, ``+++`` ends a task) and otherwise counted and
skipped. A call split by another process's output (``call(args <unfinished ...>`` then
``<... call resumed>rest) = ret``) is joined into one call at the position of its first half.
A line that fits none of these forms, a resumed half with no unfinished one, or an argument
the replay needs that does not parse is a :class:`StraceError` naming the line.

:class:`Replay` runs the calls as tasks of a simulator: one task per traced pid (each on a
CPU of its own), processes as ``MM`` address spaces (``fork``/``clone`` without ``CLONE_VM``
fork the address space, ``CLONE_VM`` shares it, ``vfork`` blocks the parent until the child
execs or exits, a successful ``execve`` gives the process a new address space), ``wait4``
waiting for the child it reaped. Failed calls (``= -1 E...``) changed nothing and are
skipped. Mappings are made at the addresses the trace shows (``MAP_FIXED``); the heap moves
by the trace's ``brk`` deltas from this process's own heap start; file mappings use a
synthetic file per ``(pid, fd)`` (a new one whenever ``offset`` 0 is mapped without
``MAP_FIXED``: how the dynamic loader maps a library). Calls on memory the trace never showed
being mapped (the executable's own segments, mapped by ``execve``) are counted as skipped.
Synthetic touches: after each mapping and heap growth up to ``touch`` of its pages are
touched (written if private and writable, else read), and after a ``fork`` the parent writes
its most recent ``touch`` writable pages again (what makes COW traffic). Drivers are attached
to every address space by ``attach(mm)``, each with a device reading the pages the process
touched.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from smmu.base.constants import PAGE_SIZE, TASK_SIZE
from smmu.base.errors import SmmuError, UsageError

#: the calls the replay acts on
MEMORY_CALLS = ("mmap", "munmap", "mprotect", "brk", "madvise", "mremap")
PROCESS_CALLS = ("clone", "clone3", "fork", "vfork", "execve", "exit_group", "exit", "wait4")


class StraceError(UsageError):
    """A trace line the parser cannot read (its number and what is wrong)."""

    def __init__(self, lineno: int, line: str, why: str, path: str | None = None):
        where = f"{path}:{lineno}" if path else f"line {lineno}"
        text = line.strip()
        if len(text) > 100:
            text = text[:97] + "..."
        super().__init__(f"{where}: {why}: {text!r} (expected strace -f -e "
                         "trace=memory,process output: 'PID  call(args) = result')")
        self.lineno = lineno


@dataclass
class Call:
    """One system call of the trace: ``pid``, ``name``, ``args`` (top-level argument strings),
    ``ret`` (the result: an int, None for ``?``), ``errno`` (``"ENOENT"``... when it failed),
    ``lineno`` (where it starts)."""

    pid: int
    name: str
    args: list
    ret: int | None
    errno: str | None
    lineno: int

    @property
    def failed(self) -> bool:
        return self.errno is not None or (self.ret is not None and self.ret < 0)


@dataclass
class Trace:
    """A parsed trace: ``calls`` (in trace order, joined), ``exits`` (pid -> the line its
    ``+++ exited`` or ``+++ killed`` appears on), ``skipped`` (lines that are not calls:
    signals, other system calls, counts by kind), ``unfinished`` (calls never resumed)."""

    calls: list = field(default_factory=list)
    exits: dict = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)
    unfinished: int = 0
    path: str | None = None

    @property
    def pids(self) -> list[int]:
        seen = []
        for c in self.calls:
            if c.pid not in seen:
                seen.append(c.pid)
        return seen


_PREFIX = re.compile(r"^\s*(?:\[pid\s+(\d+)\]\s*|(\d+)\s+)?"
                     r"(?:(?:\d+:\d+:\d+(?:\.\d+)?|\d+\.\d+)\s+)?(.*)$")
_CALL = re.compile(r"^([a-z_][a-z0-9_]*)\((.*)$")
_RESUMED = re.compile(r"^<\.\.\.\s+([a-z_][a-z0-9_]*)\s+resumed>(.*)$")
_RESULT = re.compile(r"^(.*)\)\s+=\s+(\?|-?\d+|0x[0-9a-fA-F]+)(?:\s+([A-Z][A-Z0-9_]*))?"
                     r"(?:\s+\(.*\))?\s*$")
_UNFINISHED = " <unfinished ...>"


def split_args(text: str) -> list[str]:
    """The top-level comma-separated arguments of ``text`` (brackets, braces, parentheses
    and quoted strings nest)."""
    out, depth, cur, quote, esc = [], 0, [], False, False
    for ch in text:
        if quote:
            cur.append(ch)
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                quote = False
            continue
        if ch == '"':
            quote = True
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    last = "".join(cur).strip()
    if last or out:
        out.append(last)
    return out


def _ret(text: str) -> int | None:
    if text == "?":
        return None
    return int(text, 0)


def parse(lines, path: str | None = None) -> Trace:
    """Parse ``strace -f -e trace=memory,process`` output (an iterable of lines)."""
    tr = Trace(path=path)
    pending: dict[tuple, tuple] = {}          # (pid, name) -> (lineno, args text, index)
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        m = _PREFIX.match(line)
        pid = int(m.group(1) or m.group(2) or 0)
        body = m.group(3).strip()
        if body.startswith("+++"):
            if not re.match(r"^\+\+\+ (exited with -?\d+|killed by SIG[A-Z0-9]+( \(core "
                            r"dumped\))?) \+\+\+$", body):
                raise StraceError(lineno, line, "a malformed exit line", path)
            tr.exits.setdefault(pid, lineno)
            continue
        if body.startswith("---"):
            if not body.endswith("---"):
                raise StraceError(lineno, line, "a malformed signal line", path)
            tr.skipped["signal"] += 1
            continue
        rm = _RESUMED.match(body)
        if rm:
            name, rest = rm.group(1), rm.group(2)
            key = (pid, name)
            if key not in pending:
                raise StraceError(lineno, line, f"'{name} resumed' without an unfinished "
                                  f"{name} of pid {pid} before it", path)
            first, head, index = pending.pop(key)
            res = _RESULT.match(rest)
            if not res:
                raise StraceError(lineno, line, "a resumed call without ') = result'", path)
            args_text = (head + res.group(1)) if head else res.group(1)
            call = Call(pid, name, split_args(args_text), _ret(res.group(2)), res.group(3),
                        first)
            tr.calls[index] = call
            continue
        cm = _CALL.match(body)
        if not cm:
            raise StraceError(lineno, line, "not a system call, signal or exit line", path)
        name, rest = cm.group(1), cm.group(2)
        if rest.endswith(_UNFINISHED.strip()) or rest.endswith(_UNFINISHED):
            head = rest[: rest.rfind("<unfinished ...>")].rstrip()
            pending[(pid, name)] = (lineno, head, len(tr.calls))
            tr.calls.append(None)                 # its place in the order
            continue
        res = _RESULT.match(rest)
        if not res:
            raise StraceError(lineno, line, f"{name}(...) without ') = result'", path)
        tr.calls.append(Call(pid, name, split_args(res.group(1)), _ret(res.group(2)),
                             res.group(3), lineno))
    tr.unfinished = len(pending)
    tr.calls = [c for c in tr.calls if c is not None]
    for c in tr.calls:
        if c.name not in MEMORY_CALLS and c.name not in PROCESS_CALLS:
            tr.skipped[c.name] += 1
        else:
            _check_args(c, path)
    return tr


def parse_file(path) -> Trace:
    """Parse the trace in file ``path`` (a clear error if it cannot be read)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return parse(fh, path=str(path))
    except OSError as e:
        raise UsageError(f"cannot read strace file {str(path)!r}: {e.strerror or e}") from None


# ------------------------------------------------------------------ argument decoding

_NARGS = {"mmap": 6, "munmap": 2, "mprotect": 3, "brk": 1, "madvise": 3}


def num(text: str) -> int:
    """An integer argument: decimal, hex, or NULL."""
    t = text.strip()
    if t == "NULL":
        return 0
    return int(t, 0)


def flags(text: str) -> set[str]:
    t = text.strip()
    if t in ("0", ""):
        return set()
    return {f.strip() for f in t.split("|")}


def _check_args(c: Call, path) -> None:
    """Decode now what the replay will need, so that a bad argument is an error naming
    its line before anything runs."""
    try:
        want = _NARGS.get(c.name)
        if want is not None and len(c.args) < want:
            raise ValueError(f"{c.name} takes {want} arguments, got {len(c.args)}")
        if c.name == "mmap":
            num(c.args[0]), num(c.args[1]), num(c.args[4]), num(c.args[5])
        elif c.name in ("munmap", "mprotect", "madvise"):
            num(c.args[0]), num(c.args[1])
        elif c.name == "brk":
            num(c.args[0])
        elif c.name == "mremap":
            if len(c.args) < 4:
                raise ValueError(f"mremap takes 4 or 5 arguments, got {len(c.args)}")
            num(c.args[0]), num(c.args[1]), num(c.args[2])
        elif c.name in ("clone", "clone3", "fork", "vfork") and not c.failed and \
                c.ret is None:
            raise ValueError(f"{c.name} has no child pid as its result")
    except (ValueError, IndexError) as e:
        raise StraceError(c.lineno, f"{c.name}({', '.join(c.args)})", f"bad arguments: {e}",
                          path) from None


def clone_flags(c: Call) -> set[str]:
    """The CLONE_* flags of a clone/clone3/vfork/fork call."""
    if c.name == "vfork":
        return {"CLONE_VM", "CLONE_VFORK"}
    if c.name == "fork":
        return set()
    for a in c.args:
        m = re.search(r"flags=([A-Z0-9_|]+)", a)
        if m:
            return flags(m.group(1))
    return set()


def prot_of(text: str) -> str:
    f = flags(text)
    if "PROT_NONE" in f or not f:
        return "none"
    return "".join(ch for ch, name in (("r", "PROT_READ"), ("w", "PROT_WRITE"),
                                       ("x", "PROT_EXEC")) if name in f) or "none"


ADVICE = {"MADV_DONTNEED": "dontneed", "MADV_FREE": "free", "MADV_DONTFORK": "dontfork",
          "MADV_DOFORK": "dofork"}


# ------------------------------------------------------------------ replay

class _Group:
    """The calls of the tasks sharing one address space (threads, a vfork child before its
    exec), in trace order: each waits for the one before it, as the kernel serialised them
    (the trace's order is the order they happened in)."""

    def __init__(self, sim, name):
        self.order: list[int] = []
        self.pos = 0
        self.wq = sim.waitqueue(f"replay turn {name}")

    def wait_turn(self, c):
        me = id(c)
        if self.order[self.pos] != me:
            yield self.wq.wait_until(lambda: self.pos >= len(self.order) or
                                     self.order[self.pos] == me)

    def done(self, c):
        if self.pos < len(self.order) and self.order[self.pos] == id(c):
            self.pos += 1
            self.wq.wake_all()

    def drop(self, c):
        """``c`` will never run (its task ended first): the others need not wait for it."""
        me = id(c)
        for i in range(self.pos, len(self.order)):
            if self.order[i] == me:
                del self.order[i]
                self.wq.wake_all()
                return


def _turns(sim, calls) -> dict:
    """``id(call) -> _Group`` for the calls of address spaces shared by several pids,
    found by following the trace's process structure (``clone`` with ``CLONE_VM`` joins the
    parent's address space, without it or after a successful ``execve`` a pid has its own)."""
    group_of: dict[int, int] = {}
    members: dict[int, set] = {}
    seq: dict[int, list] = {}
    nxt = 0
    for c in calls:
        if c.pid not in group_of:
            group_of[c.pid] = nxt
            members[nxt] = {c.pid}
            nxt += 1
        g = group_of[c.pid]
        seq.setdefault(g, []).append(c)
        if c.name in ("clone", "clone3", "fork", "vfork") and not c.failed and c.ret:
            if "CLONE_VM" in clone_flags(c):
                group_of[c.ret] = g
                members[g].add(c.ret)
            else:
                group_of[c.ret] = nxt
                members[nxt] = {c.ret}
                nxt += 1
        elif c.name == "execve" and not c.failed:
            members[g].discard(c.pid)
            group_of[c.pid] = nxt
            members[nxt] = {c.pid}
            nxt += 1
    out = {}
    for g, cs in seq.items():
        if len({c.pid for c in cs}) < 2:
            continue                               # one pid: its own order is enough
        grp = _Group(sim, str(g))
        grp.order = [id(c) for c in cs]
        for c in cs:
            out[id(c)] = grp
    return out


class _Proc:
    """One traced process (thread group): its address space and bookkeeping."""

    def __init__(self, mm, tgid: int):
        self.mm = mm
        self.tgid = tgid
        self.users = 0               # live pids using this mm
        self.brk_base = None         # the trace's first brk (ours is mm.brk_start)
        self.files: dict = {}        # fd -> synthetic file
        self.touched: list[int] = []
        self.writable: list[int] = []


class Replay:
    """Replays a :class:`Trace` in simulator ``sim``; :meth:`tasks` returns the first task
    (the others are spawned as the trace creates them). ``attach(mm)`` attaches the drivers
    to each new address space and returns them; ``touch`` pages are touched per mapping.
    ``ctx``: a study context (its ``work`` counts what was replayed, ``cpu_done`` is called
    when the traced program is over). After the run ``counts`` holds what was replayed."""

    def __init__(self, sim, trace: Trace, attach=None, touch: int = 4, ctx=None):
        self.sim = sim
        self.trace = trace
        self.attach = attach or (lambda mm: [])
        self.touch = int(touch)
        self.ctx = ctx
        self.counts: Counter = Counter()
        self.by_pid: dict[int, list[Call]] = {}
        for c in trace.calls:
            self.by_pid.setdefault(c.pid, []).append(c)
        self.turn = _turns(sim, trace.calls)
        self.proc_of: dict[int, _Proc] = {}
        self.exited = {}             # pid -> completion (wait4, vfork)
        self.exec_done = {}          # pid -> completion (vfork parent)
        self.live = 0
        self.drivers: list = []
        self.cpu = 0
        self.started = False         # the run has begun: new drivers get devices at once

    # -------------------------------------------------------------- processes
    def _new_proc(self, tgid, mm=None):
        mm = mm or self.sim.new_process(f"pid{tgid}")
        p = _Proc(mm, tgid)
        drvs = self.attach(mm)
        self.drivers.extend(drvs)
        if self.ctx is not None:
            self.ctx.mm_pages[id(mm)] = p.touched
            self.ctx.drivers.extend(drvs)
            if self.started:
                for d in drvs:
                    self.ctx.start_device(d)
        return p

    def _use(self, pid, proc):
        self.proc_of[pid] = proc
        proc.users += 1

    def _leave(self, pid):
        proc = self.proc_of.pop(pid, None)
        if proc is None:
            return
        proc.users -= 1
        if proc.users == 0 and not proc.mm.exited:
            yield from proc.mm.exit()
            self.counts["mm_exit"] += 1

    def _spawn(self, pid):
        if pid not in self.exited:
            self.exited[pid] = self.sim.completion(f"exit{pid}")
            self.exec_done[pid] = self.sim.completion(f"exec{pid}")
        self.live += 1
        cpu = self.cpu
        self.cpu += 1
        self.sim.spawn(f"pid{pid}", self._run(pid), cpu=cpu)

    def tasks(self):
        """The root process's task ``[(name, gen, cpu)]`` (its address space is made now)."""
        if not self.trace.calls:
            raise UsageError("the trace has no system calls to replay")
        root = self.trace.calls[0].pid
        proc = self._new_proc(root)
        self._use(root, proc)
        self.exited[root] = self.sim.completion(f"exit{root}")
        self.exec_done[root] = self.sim.completion(f"exec{root}")
        self.live = 1
        self.cpu = 1
        if self.ctx is not None:
            self.ctx.mm = proc.mm
            self.ctx.cpu_left = 1
        self.started = True
        return [(f"pid{root}", self._run(root), 0)]

    # -------------------------------------------------------------- one pid
    def _run(self, pid):
        calls = self.by_pid.get(pid, ())
        ran = 0
        try:
            for c in calls:
                ran += 1
                group = self.turn.get(id(c))
                if group is not None:              # tasks of one address space: in order
                    yield from group.wait_turn(c)
                proc = self.proc_of.get(pid)
                if proc is None:
                    if group is not None:
                        group.done(c)
                    break                          # exited (exit_group of its group)
                if c.failed and c.name not in ("exit", "exit_group"):
                    self.counts["failed"] += 1
                    if group is not None:
                        group.done(c)
                    continue
                try:
                    done, then = yield from self._call(pid, proc, c)
                finally:
                    if group is not None:
                        group.done(c)
                if then is not None:               # vfork, wait4: block after the turn
                    yield then.wait()
                if done:
                    break
        finally:
            for c in calls[ran:]:                   # never to run: nobody waits for them
                group = self.turn.get(id(c))
                if group is not None:
                    group.drop(c)
            yield from self._leave(pid)
            self.exited[pid].complete_all()
            self.exec_done[pid].complete_all()
            self.live -= 1
            if self.live == 0 and self.ctx is not None:
                self.ctx.cpu_done()

    def _call(self, pid, proc, c: Call):
        name = c.name
        mm = proc.mm
        self.counts[name] += 1
        if self.ctx is not None:
            self.ctx.work[f"calls.{name}"] += 1
        try:
            if name == "mmap":
                yield from self._mmap(pid, proc, c)
            elif name == "munmap":
                yield from self._op(mm.munmap(num(c.args[0]), num(c.args[1])))
            elif name == "mprotect":
                yield from self._op(mm.mprotect(num(c.args[0]), num(c.args[1]),
                                                prot_of(c.args[2])))
            elif name == "madvise":
                adv = ADVICE.get(c.args[2].strip())
                if adv is None:
                    self.counts["skipped.madvise_advice"] += 1
                else:
                    yield from self._op(mm.madvise(num(c.args[0]), num(c.args[1]), adv))
            elif name == "brk":
                yield from self._brk(proc, c)
            elif name == "mremap":
                old, oldlen, newlen = num(c.args[0]), num(c.args[1]), num(c.args[2])
                fixed = "MREMAP_FIXED" in flags(c.args[3])
                dest = num(c.args[4]) if fixed and len(c.args) > 4 else None
                yield from self._op(mm.mremap(old, oldlen, newlen, dest))
            elif name in ("clone", "clone3", "fork", "vfork"):
                child = yield from self._clone(pid, proc, c)
                if child is not None and "CLONE_VFORK" in clone_flags(c):
                    return False, self.exec_done[child]
            elif name == "execve":
                yield from self._execve(pid, proc)
            elif name == "wait4":
                if c.ret is not None and c.ret > 0 and c.ret in self.exited:
                    return False, self.exited[c.ret]
            elif name == "exit_group":
                for other, p in list(self.proc_of.items()):
                    if p is proc and other != pid:
                        yield from self._leave(other)
                return True, None
            elif name == "exit":
                return True, None
        except SmmuError as e:
            self.counts[f"skipped.{name}:{type(e).__name__}"] += 1
        return False, None

    def _op(self, gen):
        if self.ctx is not None:
            return (yield from self.ctx.op(gen))
        return (yield from gen)

    def _mmap(self, pid, proc, c: Call):
        mm = proc.mm
        addr, length = num(c.args[0]), num(c.args[1])
        prot = prot_of(c.args[2])
        fl = flags(c.args[3])
        fd, off = num(c.args[4]), num(c.args[5])
        where = c.ret if c.ret is not None else addr
        if not 0 < where < TASK_SIZE or length <= 0:
            self.counts["skipped.mmap_address"] += 1
            return
        shared = "MAP_SHARED" in fl or "MAP_SHARED_VALIDATE" in fl
        file = None
        npages = (length + PAGE_SIZE - 1) // PAGE_SIZE
        if "MAP_ANONYMOUS" not in fl and fd >= 0:
            file = proc.files.get(fd)
            need = off // PAGE_SIZE + npages
            if file is None or (off == 0 and "MAP_FIXED" not in fl) or file.npages < need:
                file = self.sim.new_file(f"pid{proc.tgid}.fd{fd}.{c.lineno}", need,
                                         fill=lambda i: i + 1)
                proc.files[fd] = file
        va = yield from self._op(mm.mmap(length, prot=prot, shared=shared, file=file,
                                         offset=off if file is not None else 0, addr=where,
                                         fixed=True))
        yield from self._touch(proc, va, npages, prot, shared, file)

    def _touch(self, proc, va, npages, prot, shared, file):
        if prot == "none" or self.touch <= 0:
            return
        mm = proc.mm
        n = min(npages, self.touch)
        step = max(1, npages // n)
        write = "w" in prot and not (shared and file is not None)
        for k in range(n):
            a = va + k * step * PAGE_SIZE
            try:
                if write:
                    yield from mm.write(a, a)
                    proc.writable.append(a)
                else:
                    yield from mm.read(a)
                proc.touched.append(a)
                self.counts["touches"] += 1
                if self.ctx is not None:
                    self.ctx.work["touches"] += 1
            except SmmuError:
                self.counts["touch_faults"] += 1

    def _brk(self, proc, c: Call):
        mm = proc.mm
        want = num(c.args[0])
        if want == 0 or c.ret is None:
            if proc.brk_base is None and c.ret:
                proc.brk_base = c.ret
            return
        if proc.brk_base is None:
            proc.brk_base = want
        old_top = mm.brk_end
        new = mm.brk_start + (c.ret - proc.brk_base)
        if new < mm.brk_start:
            self.counts["skipped.brk_below_start"] += 1
            return
        yield from self._op(mm.brk(new))
        grown = (new - old_top) // PAGE_SIZE
        if grown > 0:
            start = (old_top + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
            yield from self._touch(proc, start, grown, "rw", False, None)

    def _clone(self, pid, proc, c: Call):
        child = c.ret
        fl = clone_flags(c)
        if child is None or child <= 0:
            return None
        if "CLONE_VM" in fl:
            self._use(child, proc)                 # a thread, or vfork/posix_spawn
            self.counts["threads" if "CLONE_THREAD" in fl else "vm_clones"] += 1
        else:
            newmm = yield from proc.mm.fork()
            cp = self._new_proc(child, newmm)
            cp.brk_base = proc.brk_base
            cp.files = dict(proc.files)
            cp.writable = list(proc.writable)
            self._use(child, cp)
            self.counts["forks"] += 1
            # the parent goes on writing its data: COW of its recent writable pages
            for a in proc.writable[-self.touch:]:
                try:
                    yield from proc.mm.write(a, a + 1)
                    self.counts["cow_touches"] += 1
                except SmmuError:
                    self.counts["touch_faults"] += 1
        self._spawn(child)
        return child

    def _execve(self, pid, proc):
        """A successful execve: the process gets a new address space (the old one goes when
        nothing else uses it; a vfork child stops sharing its parent's)."""
        yield from self._leave(pid)
        newp = self._new_proc(pid)
        self._use(pid, newp)
        self.counts["execs"] += 1
        self.exec_done[pid].complete_all()
