"""Step footprints: what each step of a run read and wrote, for partial-order reduction.

Two steps of different tasks that touch disjoint state commute: running them in either order
reaches the same state, so a search need explore only one order (Godefroid's sleep sets,
"Partial-Order Methods for the Verification of Concurrent Systems", LNCS 1032, 1996). The
scheduler cannot see Python state, so a step's footprint is made of what it can know:

* the *owners* of the code the step executed: the frames of the task's generator chain that
  ran between the step's resumption and its next yield (the innermost one resumed, those that
  returned, those newly called), each mapped to an owner token by ``owner_of(code)`` (the
  search classifies files: the primary MM, the drivers, the scenario's glue; see
  :mod:`smmu.explore.por`); plain calls made from those frames are attributed to them;
* the synchronisation objects it used: lock acquire and release, wait-queue wake-ups,
  completions (the primitives report themselves through :meth:`Footprints.write`);
* what the lower layers report to the observer port during the step (the search installs an
  observer that adds, e.g., a read of the primary for a device's DMA read).

A step that evaluated a wait predicate reads what the predicate's code owns. Steps that share
a written token are dependent. Recording is off (``sched.footprint is None``) except in a
search that asks for it, so ordinary runs pay nothing: the scheduler wraps each task's
generator in a :class:`Recorded` only then, and its loop is unchanged.
"""

from __future__ import annotations

#: the token a step reads or writes when what it touches cannot be narrowed down: it
#: conflicts with every other step
EVERYTHING = "*"


def chain(gen) -> list:
    """The generator chain of a task, outermost first (``gi_yieldfrom`` links)."""
    out = []
    while gen is not None and hasattr(gen, "gi_code"):
        out.append(gen)
        gen = gen.gi_yieldfrom
    return out


def executed(start: list, end: list) -> list:
    """The generators whose code ran in a step that began with chain ``start`` and ended
    with chain ``end`` (empty when the task finished): the innermost resumed one, every one
    that returned, the deepest common caller when anything below it changed, and every one
    newly called."""
    k = 0
    n = min(len(start), len(end))
    while k < n and start[k] is end[k]:
        k += 1
    if k == len(start) == len(end):
        return start[-1:]
    lo = max(k - 1, 0)
    return start[lo:] + end[k:]


def dependent(a, b) -> bool:
    """Do footprints ``a`` and ``b`` (``(reads, writes)`` frozensets) conflict: a write of
    one meets a read or write of the other, or either touches :data:`EVERYTHING`?"""
    ra, wa = a
    rb, wb = b
    if EVERYTHING in ra or EVERYTHING in wa or EVERYTHING in rb or EVERYTHING in wb:
        return True
    return bool(wa & wb or wa & rb or ra & wb)


class Footprints:
    """The footprint recorder a scheduler carries while a search wants footprints
    (``sched.footprint``). ``owner_of(code)`` gives the owner token of a code object (None:
    no state of its own, e.g. the runtime's plumbing); ``on_step(task, footprint)`` is told
    each step's ``(reads, writes)`` and returns True to end the run there.

    A step's footprint takes in everything up to the next step: what the scheduler does at
    the step's yield (granting the lock it asked for) and while choosing the next task
    (looking at pending requests) is charged to it, which can only add dependences. It is
    handed to ``on_step`` when the next step begins, or when the search asks
    (:meth:`flush`: a schedule does before it chooses)."""

    __slots__ = ("owner_of", "on_step", "reads", "writes", "halted", "_owners", "_pending")

    def __init__(self, owner_of, on_step):
        self.owner_of = owner_of
        self.on_step = on_step
        self.reads: set = set()
        self.writes: set = set()
        #: set when ``on_step`` (or the search) wants the run to end: the next step halts
        self.halted = False
        self._owners: dict = {}
        self._pending = None

    def read(self, token) -> None:
        self.reads.add(token)

    def write(self, token) -> None:
        self.writes.add(token)

    def read_by(self, fn) -> None:
        """``fn`` (a wait predicate) was evaluated: it read the state its code's owner
        keeps (:data:`EVERYTHING` if that cannot be told)."""
        code = getattr(fn, "__code__", None)
        if code is None:
            self.reads.add(EVERYTHING)
            return
        tok = self._owners.get(code, self._owners)
        if tok is self._owners:
            tok = self._owners[code] = self.owner_of(code)
        if tok is not None:
            self.reads.add(tok)

    def wrap(self, gen) -> "Recorded":
        """``gen`` wrapped so that each of its steps is recorded."""
        return Recorded(gen, self)

    def ran(self, task, start: list, end: list) -> None:
        """``task``'s step went from chain ``start`` to chain ``end``: charge the owners of
        the code it executed."""
        owners = self._owners
        for g in executed(start, end):
            code = g.gi_code
            tok = owners.get(code, owners)
            if tok is owners:
                tok = owners[code] = self.owner_of(code)
            if tok is not None:
                self.writes.add(tok)
        self._pending = task

    def flush(self) -> bool:
        """Hand the last step's footprint to ``on_step``; True if the run must end."""
        task = self._pending
        if task is not None:
            self._pending = None
            fp = (frozenset(self.reads), frozenset(self.writes))
            self.reads.clear()
            self.writes.clear()
            if self.on_step(task, fp):
                self.halted = True
        return self.halted


class Recorded:
    """A task's generator as the scheduler sees it while footprints are recorded: each
    ``send`` / ``throw`` is one step; the previous step's footprint is flushed first, and if
    the run must end :class:`Halt` is raised before this step runs (``Scheduler.run`` ends
    the run there, as a stopped one). Looks like the generator to stack walkers
    (``gi_frame``, ``gi_yieldfrom``, ``gi_running``, ``gi_code``)."""

    __slots__ = ("gen", "fp", "task")

    def __init__(self, gen, fp: Footprints):
        self.gen = gen
        self.fp = fp
        self.task = None

    def _step(self, fn, arg):
        fp = self.fp
        if fp.flush():
            raise Halt()
        start = chain(self.gen)
        try:
            out = fn(arg)
        except BaseException:
            fp.ran(self.task, start, [])
            raise
        fp.ran(self.task, start, chain(self.gen))
        return out

    def send(self, value):
        return self._step(self.gen.send, value)

    def throw(self, exc):
        return self._step(self.gen.throw, exc)

    def close(self):
        return self.gen.close()

    @property
    def gi_frame(self):
        return self.gen.gi_frame

    @property
    def gi_yieldfrom(self):
        return self.gen.gi_yieldfrom

    @property
    def gi_running(self):
        return self.gen.gi_running

    @property
    def gi_code(self):
        return self.gen.gi_code


class Halt(BaseException):
    """Raised out of a step when the search has seen all it needs from the run (a
    BaseException so that no task's ``except Exception`` swallows it)."""
