"""Read-copy-update for tasks: an SRCU domain (``struct srcu_struct``, kernel/rcu/srcutree.c)
or, with ``sleepable=False``, classic RCU (``rcu_read_lock``: a non-preemptible read side).

A reader brackets its walk with ``tok = d.read_lock()`` / ``d.read_unlock(tok)``, or, for
a walk that cannot yield, with ``d.lazy = task`` ... ``d.lazy_unlock(task)`` (a *lazy*
section: see :attr:`RCUDomain.lazy`);
``yield d.synchronize()`` (``synchronize_srcu`` / ``synchronize_rcu``) sleeps until every
read-side section that began before it has ended (sections begun later are not waited for);
``d.call(fn)`` (``call_srcu``) runs ``fn()`` once such a grace period has elapsed, in the
context of whichever task ends it, atomic (an RCU callback cannot sleep); ``yield
d.barrier()`` (``srcu_barrier``) sleeps until every queued callback has run. Under classic
RCU the read side is atomic: sleeping in it is ``SleepInAtomic`` (why 2.6.27..3.6 notifier
callbacks could not sleep, 21a92735f660).
"""

from __future__ import annotations

from smmu.base.errors import UsageError


class RCUDomain:
    """One RCU or SRCU domain (``DEFINE_STATIC_SRCU``). Make it with
    ``sched.rcu_domain(name, sleepable=...)``: one per name per machine, as the kernel's
    static domains are."""

    def __init__(self, sched, name: str, sleepable: bool = True):
        self.sched = sched
        self.name = name
        self.sleepable = bool(sleepable)
        self.readers: dict[int, object] = {}     # token -> task in a read-side section
        self._next = 1
        self._callbacks: list = []                # (token snapshot, fn), in call order
        self.wq = sched.waitqueue(f"{name} grace period")
        #: the tasks waiting for a grace period or a barrier (``wq.waiters``, the same list)
        self.waiting = self.wq.waiters
        self.grace_periods = 0
        self._reason = (f"srcu_read_lock({name})" if self.sleepable
                        else f"rcu_read_lock ({name}: classic RCU, no sleeping)")
        #: the task of a read-side section begun without registering it (a lazy section),
        #: or None. A walk that runs within one step (no yield) may open one instead of
        #: calling read_lock, when :meth:`lazy_ok` holds: SRCU, no lazy section open,
        #: nobody waiting for a grace period or a barrier. Nobody can tell it from a
        #: registered one: every method of the domain registers it first (with the token
        #: read_lock would have given it, nothing having happened to the domain since), and
        #: when it ends unregistered there was nothing for read_unlock to do: no waiter to
        #: wake, and no callback whose grace period it ends (a callback queued before it
        #: began does not wait for it, and one queued since went through the domain). Other
        #: sections may be held meanwhile (their tokens are older). End it with lazy_unlock.
        self.lazy = None
        self._lazy_tok = None

    def __repr__(self):
        kind = "SRCU" if self.sleepable else "RCU"
        readers = len(self.readers) + (self.lazy is not None)
        return (f"<{kind} {self.name!r} {readers} readers, "
                f"{len(self._callbacks)} callbacks pending>")

    # ------------------------------------------------------------------ read side
    def lazy_ok(self) -> bool:
        """May a walk open a lazy section now (:attr:`lazy`)? (A walk on a hot path tests
        the same things inline.)"""
        return self.sleepable and self.lazy is None and not self.waiting

    def _register_lazy(self) -> None:
        # the lazy section becomes a registered one, with the token it would have had
        task = self.lazy
        self.lazy = None
        tok = self._lazy_tok = self._next
        self._next += 1
        self.readers[tok] = task

    def lazy_begin(self, task) -> int:
        """Begin a read-side section of ``task``'s step: a lazy one (returns 0) when
        :meth:`lazy_ok`, else ``read_lock()``'s token. End it with :meth:`lazy_end`."""
        if self.sleepable and self.lazy is None and not self.waiting:
            self.lazy = task
            return 0
        return self.read_lock()

    def lazy_end(self, task, tok: int) -> None:
        """End the section :meth:`lazy_begin` gave ``tok``."""
        if tok:
            self.read_unlock(tok)
        else:
            self.lazy_unlock(task)

    def lazy_unlock(self, task) -> None:
        """End the lazy section ``task`` opened (``read_unlock`` if it was registered
        meanwhile)."""
        if self.lazy is task:
            self.lazy = None
        else:
            self.read_unlock(self._lazy_tok)

    def lazy_to_token(self, task) -> int:
        """The lazy section of ``task`` is to outlive its step (the walk met a hook that is
        a generator): register it; returns its token for :meth:`read_unlock`."""
        if self.lazy is task:
            self._register_lazy()
        return self._lazy_tok

    def read_lock(self) -> int:
        """``srcu_read_lock`` / ``rcu_read_lock``: begin a read-side section; returns its
        token for :meth:`read_unlock`."""
        if self.lazy is not None:
            self._register_lazy()
        tok = self._next
        self._next += 1
        task = self.sched.running
        self.readers[tok] = task
        if not self.sleepable:
            self.sched.atomic_begin(self._reason, task)
        return tok

    def read_unlock(self, tok: int) -> None:
        """End the section ``tok``; run the callbacks whose grace period it completes."""
        if self.lazy is not None:
            self._register_lazy()
        task = self.readers.pop(tok, None)
        if task is None:
            raise UsageError(f"{self.name}: read_unlock({tok}) of a section that is not held")
        if not self.sleepable:
            self.sched.atomic_end(self._reason, task)
        if self._callbacks:
            self._run_callbacks()
        if self.wq.waiters:
            self.wq.wake_all()

    def held(self) -> bool:
        """Is the running task inside a read-side section of this domain?"""
        if self.lazy is not None:
            self._register_lazy()
        task = self.sched.running
        return any(t is task for t in self.readers.values())

    # ------------------------------------------------------------------ grace periods
    def _elapsed(self, snap: int) -> bool:
        """Has every section begun before ``snap`` ended?"""
        return all(tok >= snap for tok in self.readers)

    def synchronize(self):
        """What to yield for ``synchronize_srcu`` / ``synchronize_rcu``: sleep until every
        section begun before now has ended. (Called inside a section of the same domain it
        waits for itself: a Deadlock, as in the kernel.)"""
        if self.lazy is not None:
            self._register_lazy()
        self.sched.might_sleep(f"synchronize_srcu({self.name})")
        snap = self._next
        self.grace_periods += 1
        return self.wq.wait_until(lambda: self._elapsed(snap))

    def call(self, fn) -> None:
        """``call_srcu``: run ``fn()`` once the sections begun before now have ended (at
        once if there are none), atomic, in the task that ends the grace period."""
        if self.lazy is not None:
            self._register_lazy()
        self._callbacks.append((self._next, fn))
        self._run_callbacks()

    def _run_callbacks(self) -> None:
        while self._callbacks and self._elapsed(self._callbacks[0][0]):
            _snap, fn = self._callbacks.pop(0)
            reason = f"{self.name} RCU callback"
            self.sched.atomic_begin(reason)
            try:
                fn()
            finally:
                self.sched.atomic_end(reason)
        if not self._callbacks and self.wq.waiters:
            self.wq.wake_all()

    def barrier(self):
        """What to yield for ``srcu_barrier``: sleep until every queued callback has run."""
        if self.lazy is not None:
            self._register_lazy()
        self.sched.might_sleep(f"srcu_barrier({self.name})")
        return self.wq.wait_until(lambda: not self._callbacks)
