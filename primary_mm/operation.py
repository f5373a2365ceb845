"""MM operations as the observer port hears of them: :func:`mm_operation` marks a public
operation of the primary MM (a method of the address space or of the memory that returns a
generator), so that the observer is told when it begins and when it ends
(``mm_op_begin`` / ``mm_op_end``): the trace's spans of MM operations end where the
operation ends, not at the task's next one.

Only a trace recorder listens to those two events (the oracle does not): when the
scheduler's observer runs the no-op for both (the observer port's plan,
:func:`smmu.runtime.observer.handlers`), the operation is the method's own generator, with
no wrapper around it (a generator level every step of the operation would pass through:
83,000 of them per 1,000 explored schedules of cow-after-fork)."""

from __future__ import annotations

import functools
import inspect
import weakref

from smmu.runtime.observer import handlers

_EVENTS = ("mm_op_begin", "mm_op_end")
#: (a weak reference to the observer last asked about, does it listen to either event): one
#: entry; weak, so that it does not keep the last run's simulator alive (the explore loop
#: collects each run's garbage before the next), and a dead one never matches
_last = [None, True]


def _listens(observer) -> bool:
    ref = _last[0]
    if ref is not None and ref() is observer:
        return _last[1]
    begin, end = handlers(observer, _EVENTS)
    listens = begin is not None or end is not None
    try:
        _last[0] = weakref.ref(observer)
    except TypeError:               # an observer without weak references: not cached
        _last[0] = None
    _last[1] = listens
    return listens


def mm_operation(fn):
    """Decorate a generator method ``fn(self, ...)`` (``self.sched`` its scheduler): the
    observer hears ``mm_op_begin(self, name)`` when the operation starts to run (its first
    step) and ``mm_op_end(self, name)`` when it returns or raises. A run abandoned with the
    operation in flight (the generator closed) ends nothing. Whether anyone listens is
    decided when the operation is called (an observer that starts to listen between the
    call and the first step, ``sim.watch`` of a recorder then, hears neither event)."""
    name = fn.__name__

    def observed(self, args, kwargs):
        self.sched.observer.mm_op_begin(self, name)
        try:
            ret = yield from fn(self, *args, **kwargs)
        except GeneratorExit:
            raise
        except BaseException:
            self.sched.observer.mm_op_end(self, name)
            raise
        self.sched.observer.mm_op_end(self, name)
        return ret

    return functools.wraps(fn)(_forwarder(fn, observed))


def _forwarder(fn, observed):
    """The wrapper of ``fn``: with ``fn``'s own parameters (a call through ``*args,
    **kwargs`` costs twice as much, and an operation is called 83 times a cow-after-fork
    schedule), it returns ``fn``'s generator, or ``observed``'s when someone listens. A
    signature with ``*args`` or ``**kwargs`` gets the generic wrapper."""
    params = list(inspect.signature(fn).parameters.values())
    simple = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    if not params or any(p.kind not in simple for p in params):
        def operation(self, *args, **kwargs):
            if _listens(self.sched.observer):
                return observed(self, args, kwargs)
            return fn(self, *args, **kwargs)
        return operation
    env = {"_fn": fn, "_observed": observed, "_listens": _listens}
    head, pos, kw = [], [], []
    for p in params:
        if p.kind is inspect.Parameter.KEYWORD_ONLY and "*" not in head:
            head.append("*")
        if p.default is inspect.Parameter.empty:
            head.append(p.name)
        else:
            env[f"_default_{p.name}"] = p.default
            head.append(f"{p.name}=_default_{p.name}")
        (pos if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD else kw).append(p.name)
    me, rest = pos[0], pos[1:]
    args = "".join(f"{a}, " for a in rest)
    kwargs = ", ".join(f"{k!r}: {k}" for k in kw)
    call = ", ".join(pos + [f"{k}={k}" for k in kw])
    src = (f"def {fn.__name__}({', '.join(head)}):\n"
           f"    if _listens({me}.sched.observer):\n"
           f"        return _observed({me}, ({args}), {{{kwargs}}})\n"
           f"    return _fn({call})\n")
    # compiled as this file's code: tracebacks and the scheduler's "whose code raised"
    # (smmu.runtime.task.in_smmu) see the wrapper as smmu's, as they saw the generic one
    exec(compile(src, __file__, "exec"), env)  # noqa: S102
    return env[fn.__name__]
