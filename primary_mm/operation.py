"""MM operations as the observer port hears of them: :func:`mm_operation` marks a public
operation of the primary MM (a method of the address space or of the memory that returns a
generator), so that the observer is told when it begins and when it ends
(``mm_op_begin`` / ``mm_op_end``): the trace's spans of MM operations end where the
operation ends, not at the task's next one."""

from __future__ import annotations

import functools


def mm_operation(fn):
    """Decorate a generator method ``fn(self, ...)`` (``self.sched`` its scheduler): the
    observer hears ``mm_op_begin(self, name)`` when the operation starts to run (its first
    step) and ``mm_op_end(self, name)`` when it returns or raises. A run abandoned with the
    operation in flight (the generator closed) ends nothing."""
    name = fn.__name__

    @functools.wraps(fn)
    def operation(self, *args, **kwargs):
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
    return operation
