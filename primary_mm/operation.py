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

    @functools.wraps(fn)
    def operation(self, *args, **kwargs):
        if _listens(self.sched.observer):
            return observed(self, args, kwargs)
        return fn(self, *args, **kwargs)
    return operation
