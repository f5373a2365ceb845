"""Errors a user can cause, and the violations the checker reports.

Two families, kept apart on purpose:

* ``SmmuError`` subclasses are *user mistakes or simulated faults* (an unmapped address, a bad
  range, an allocation failure that was injected, a driver class that cannot be attached).
  They are raised, carry a message that says what to fix, and leave the simulator unchanged.
* ``Violation`` records are *findings*: the driver (or an MM configuration) broke a coherence
  or protocol rule. They are collected in ``Result.violations``; a run does not raise them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: every violation kind the checker can report, with the rule it stands for
VIOLATION_KINDS = {
    "StaleRead": "a read returned something other than the last write to that address",
    "LostWrite": "a write that later reads of the address space never see",
    "UseAfterFree": "a device touched a frame freed or reused since it was mapped",
    "CrossMmAccess": "a device touched a frame now owned by another address space",
    "MapInWindow": "a secondary mapping was established inside an open start/end window",
    "WriteToReadOnly": "a device wrote through a mapping whose primary PTE is read-only",
    "UnpairedRange": "invalidate_range_start without its invalidate_range_end at quiescence",
    "SleepInAtomic": "a sleeping primitive was used while atomic (spinlock, PT lock, non-block)",
    "Deadlock": "nothing can run while some tasks wait (a wait-for cycle)",
    "Livelock": "a task went past its step budget (retrying without bound)",
    "LockOrder": "two locks taken in both orders by different paths (lockdep)",
    "BadReturn": "a hook returned a value its contract forbids (e.g. failing a blockable start)",
    "Leak": "after its device was closed a driver still holds a page reference, an interval "
            "notifier or a registration it took (kmemleak, page_owner)",
    "StaleMapping": "a secondary mapping disagrees with the primary page table (when it is "
                    "made, or at quiescence)",
    "DriverError": "a driver's hook or device code raised an exception (in Linux, an oops in "
                   "the driver's callback)",
    "BadRange": "the core called a range hook with an empty range (start >= end), which "
    "invalidates nothing; Linux: arch_invalidate_secondary_tlbs \"is called by architecture "
    "code whenever invalidating a TLB entry. It is assumed that any secondary TLB has the same "
    "rules for when invalidations are required\" (include/linux/mmu_notifier.h), and "
    "f7edb07ad7c6: \"use the correct range instead of an empty range with start=end\"",
    "ListCorruption": "the core unlinked a subscription that was no longer on the list; "
    "Linux 3.6..3.8 mmu_notifier_unregister: \"hlist_del_rcu()  <--- NULL pointer deref.\" "
    "(751efd8610d3: a node __mmu_notifier_release had unhashed with hlist_del_init_rcu)",
    "NotifierUseAfterFree": "the core touched an interval notifier its owner freed after "
    "mmu_interval_notifier_remove returned; Linux: remove \"Once this returns ops callbacks "
    "are no longer running on other CPUs and will not be called in future\" "
    "(mm/mmu_notifier.c), and 319561669a59: \"use-after-free type errors if the caller frees "
    "the data structure containing the interval notifier subscription while it is still on a "
    "deferred list\"",
}


class SmmuError(Exception):
    """Base of every error smmu raises for a user mistake or a simulated fault."""


class UsageError(SmmuError):
    """The API or the command line was used wrongly; the message says how to fix it."""


class InvalidArgument(SmmuError):
    """EINVAL: a misaligned, empty, overflowing or otherwise malformed argument."""

    errno = 22


class SegmentationFault(SmmuError):
    """SIGSEGV: an access to an address with no VMA, or forbidden by the VMA's protection."""

    def __init__(self, message: str, address: int | None = None):
        super().__init__(message)
        self.address = address


class OutOfMemory(SmmuError):
    """ENOMEM: an allocation failed (usually one injected by a test)."""

    errno = 12


class BadDriver(UsageError):
    """A driver class cannot be used: not an MMUNotifier, wrong API generation, bad hooks."""


class CoreBug(RuntimeError):
    """smmu's own model broke one of its invariants (e.g. a notifier hook called after its
    subscription was unregistered): a bug in smmu, never the driver's fault. Not a
    ``SmmuError``: it is not a user mistake."""


class TaskCrashed(SmmuError):
    """A task raised an exception that is not a simulated fault: a bug in that task's code.

    The original exception is chained as ``__cause__``; ``task`` names the task.
    """

    def __init__(self, task: str, exc: BaseException):
        super().__init__(f"task {task!r} raised {type(exc).__name__}: {exc}")
        self.task = task
        self.exc = exc


class InternalError(Exception):
    """An exception inside smmu's own code: a bug in smmu, not a usage error. ``exc`` is the
    original exception (also ``__cause__``), ``task`` the task running, ``choices`` the
    schedule so far (what a replay needs), ``where`` the innermost frame outside smmu (the
    user's call that led there). The harness adds ``context`` (scenario, api, seed...)."""

    def __init__(self, exc: BaseException, *, task: str | None = None, choices=(),
                 where: str | None = None):
        super().__init__(f"{type(exc).__name__}: {exc}")
        self.exc = exc
        self.task = task
        self.choices = list(choices)
        self.where = where
        self.context: dict = {}


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run. ``tasks``: ``(name, state, file:line in function)`` of every
    task not done, where the interrupt found it."""

    def __init__(self, tasks=()):
        super().__init__()
        self.tasks = list(tasks)

    def __str__(self):
        return "; ".join(f"{n} {st} at {w}" for n, st, w in self.tasks) or "interrupted"


@dataclass
class Violation:
    """One finding. ``schedule`` is the list of task ids chosen at each choice point, enough
    to replay the run under ``smmu.explore.Replay``; ``steps`` (when recorded) is the readable
    numbered schedule; ``stacks`` maps a label to a list of ``file:line in function`` strings."""

    kind: str
    message: str
    address: int | None = None
    task: str | None = None
    step: int = 0
    time_ns: float = 0.0
    frames: tuple = ()
    schedule: list = field(default_factory=list)
    stacks: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    steps: list = field(default_factory=list)

    def __repr__(self) -> str:
        addr = f" at {self.address:#x}" if self.address is not None else ""
        return f"<Violation {self.kind}{addr} step {self.step} in {self.task}: {self.message}>"

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "message": self.message,
            "address": self.address,
            "task": self.task,
            "step": self.step,
            "frames": list(self.frames),
            "schedule": list(self.schedule),
            "stacks": self.stacks,
            "details": {k: (v if isinstance(v, (int, float, str, bool, type(None), list))
                            else repr(v)) for k, v in self.details.items()},
        }
