"""Script scenarios: a run written down as the operations a caller made and the steps it
let the simulator take between them, so that ``smmu replay`` can run it again.

The hypothesis state machine (:func:`smmu.testing.coherence_machine`) decides one rule at a
time what to start (a CPU write, a migration, a device access...) and how far the simulator
runs before the next rule. It does every operation through :data:`SCRIPT_OPS` on a
:class:`ScriptState` and writes each one down, ``[name, {arguments}]``; a ``["run",
{"steps": n}]`` entry is one ``sim.run_steps(n)``. :func:`script_scenario` turns that list
into a :class:`~smmu.scenarios.registry.Scenario` whose build does the same operations in
the same order (the schedule's choices, task ids per choice point, replay the
interleavings), and a finding of it carries the script in its JSON report (``"script"``).
"""

from __future__ import annotations

from smmu.base.constants import PAGE_SIZE
from smmu.base.errors import UsageError
from smmu.notifier import API_GENERATIONS
from smmu.scenarios.kit import tolerant
from smmu.scenarios.registry import Scenario, attach_driver

#: the name findings of a script scenario carry (it is no registered scenario: the
#: script itself, in the report, says what runs)
SCRIPT_SCENARIO = "coherence-machine"


class ScriptState:
    """One process with ``pages`` read-write anonymous pages and the driver attached
    (``attach_driver``: the run's ``driver_options`` apply), and the tasks started so far
    (each named ``<operation><n>``)."""

    def __init__(self, sim, driver_cls, pages: int):
        self.sim = sim
        self.pages = int(pages)
        self.mm = sim.new_process()
        self.buf = sim.do(self.mm.mmap(self.pages * PAGE_SIZE, prot="rw"))
        self.drv = attach_driver(sim, driver_cls, self.mm)
        self.n = 0
        self.children: list = []

    def va(self, i: int) -> int:
        return self.buf + i * PAGE_SIZE

    def spawn(self, what: str, gen) -> None:
        self.n += 1
        self.sim.spawn(f"{what}{self.n}", tolerant(gen))

    def __repr__(self):
        return f"<ScriptState {self.pages} page(s) at {self.buf:#x}, {self.n} task(s)>"


def _cpu_write(s, i, value):
    s.spawn("cpu_write", s.mm.write(s.va(i), value))


def _cpu_read(s, i):
    s.spawn("cpu_read", s.mm.read(s.va(i)))


def _device_access(s, i, write, value):
    s.spawn("dev", s.drv.access(s.va(i), write=write, value=value if write else None))


def _mprotect_ro_rw(s, i, n):
    n = min(n, s.pages - i)

    def g():
        yield from s.mm.mprotect(s.va(i), n * PAGE_SIZE, "r")
        yield from s.mm.mprotect(s.va(i), n * PAGE_SIZE, "rw")
    s.spawn("mprotect", g())


def _dontneed(s, i):
    s.spawn("dontneed", s.mm.madvise(s.va(i), PAGE_SIZE, "dontneed"))


def _reclaim(s, i):
    s.spawn("reclaim", s.sim.reclaim(s.mm, s.va(i), PAGE_SIZE, force=True))


def _migrate(s, i):
    s.spawn("migrate", s.sim.migrate(s.mm, s.va(i), PAGE_SIZE))


def _fork(s):
    if not s.children:
        def g():
            s.children.append((yield from s.mm.fork()))
        s.spawn("fork", g())


def _run(s, steps):
    s.sim.run_steps(steps)


def _final_reads(s):
    """The CPU reads every page back (the end of a run: a lost write shows)."""
    for i in range(s.pages):
        s.spawn("final_read", s.mm.read(s.va(i)))


#: the operations of a script: name -> ``f(state, **arguments)``; the page index ``i`` is
#: an index into the state's pages
SCRIPT_OPS = {
    "cpu_write": _cpu_write, "cpu_read": _cpu_read, "device_access": _device_access,
    "mprotect_ro_rw": _mprotect_ro_rw, "dontneed": _dontneed, "reclaim": _reclaim,
    "migrate": _migrate, "fork": _fork, "run": _run, "final_reads": _final_reads,
}
#: each operation's arguments
_ARGS = {"cpu_write": ("i", "value"), "cpu_read": ("i",), "device_access": ("i", "write", "value"),
         "mprotect_ro_rw": ("i", "n"), "dontneed": ("i",), "reclaim": ("i",), "migrate": ("i",),
         "fork": (), "run": ("steps",), "final_reads": ()}


def check_script(script) -> tuple[int, list]:
    """``(pages, ops)`` of a script ``{"pages": N, "ops": [[name, {arguments}], ...]}``;
    a ``UsageError`` that names the bad entry otherwise."""
    if not isinstance(script, dict) or not isinstance(script.get("ops"), list):
        raise UsageError("a script is {'pages': N, 'ops': [[name, {arguments}], ...]}, got "
                         f"{type(script).__name__}")
    pages = script.get("pages")
    if isinstance(pages, bool) or not isinstance(pages, int) or pages < 1:
        raise UsageError(f"a script's 'pages' must be an integer >= 1, got {pages!r}")
    ops = []
    for k, op in enumerate(script["ops"]):
        if not (isinstance(op, (list, tuple)) and len(op) == 2 and isinstance(op[1], dict)):
            raise UsageError(f"script operation {k} is not [name, {{arguments}}]: {op!r}")
        name, args = op
        if name not in SCRIPT_OPS:
            raise UsageError(f"script operation {k}: unknown operation {name!r}: use one of "
                             f"{sorted(SCRIPT_OPS)}")
        if set(args) != set(_ARGS[name]):
            raise UsageError(f"script operation {k} ({name}) takes {list(_ARGS[name])}, got "
                             f"{sorted(args)}")
        i = args.get("i", 0)
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < pages:
            raise UsageError(f"script operation {k} ({name}): page {i!r} is not in 0..{pages - 1}")
        ops.append((name, dict(args)))
    return pages, ops


def do(state: ScriptState, name: str, **args) -> None:
    """Do operation ``name`` of :data:`SCRIPT_OPS` on ``state``."""
    SCRIPT_OPS[name](state, **args)


def script_scenario(script: dict, apis=API_GENERATIONS) -> Scenario:
    """The scenario that does ``script``'s operations in order (checked first:
    :func:`check_script`); ``Scenario.script`` is the script."""
    pages, ops = check_script(script)

    def build(sim, driver_cls):
        state = ScriptState(sim, driver_cls, pages)
        for name, args in ops:
            do(state, name, **args)

    return Scenario(SCRIPT_SCENARIO, build, description=f"a script of {len(ops)} operation(s) "
                    f"on {pages} page(s) (coherence_machine)", apis=tuple(apis),
                    tags=("script",), script={"pages": pages, "ops": [list(o) for o in ops]})
