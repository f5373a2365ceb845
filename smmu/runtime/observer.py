"""The observer port: what the lower layers tell whoever watches a run.

Every scheduler carries an :class:`Observer` (``sched.observer``; this no-op one by default).
The primary MM, the notifier chain and drivers (through ``MMUNotifier.note_map`` /
``note_unmap``, the declaration API the device structures use too) report what happens to
it and to nothing else; the harness installs its coherence oracle there (and, when a run is
traced, a :class:`FanOut` of the oracle and a trace recorder). Every call is cheap and made
once per operation, hook call or batch, never per page on a hot path.

Events are named after what happened; the arguments are the objects involved (``mm`` an
address space, ``drv`` / ``sub`` a subscription, ``isub`` an interval notifier, ``rng`` a
``smmu.notifier.Range``). An observer must not change the state it is told about; it may
record a violation (``sched.violation``), which can end the run.
"""

from __future__ import annotations


class Observer:
    """Every event a lower layer reports, each a no-op here. Subclass and override the ones
    you need."""

    # ------------------------------------------------------------------ runtime
    def violation(self, v):
        """The scheduler recorded violation ``v`` (a ``smmu.base.errors.Violation``)."""

    def quiesce(self):
        """The run is over: make the end-of-run checks."""

    # ------------------------------------------------------------------ primary MM
    def mm_op_begin(self, who, op):
        """The running task begins MM operation ``op`` (a public one: ``"write"``,
        ``"munmap"``, ``"migrate"``... the names of ``smmu.sim.trace_recorder.OPERATIONS``)
        on ``who``: the address space, or the machine's memory for the operations of the
        memory (reclaim, migration, KSM, truncate, writeback, the OOM reaper). Operations
        nest (a write faults: ``handle_mm_fault`` inside ``write``)."""

    def mm_op_end(self, who, op):
        """The running task's MM operation ``op`` on ``who`` is over: it returned or raised
        (a simulated fault) after its last step."""

    def cpu_access(self, mm, va, write, value):
        """A CPU read (``write`` False, ``value`` read) or write of ``value`` at ``va``,
        after the access."""

    def device_access(self, drv, va, pfn, write, value):
        """Driver ``drv`` is about to read or write frame ``pfn`` through its mapping of
        ``va`` (``MMUNotifier.dma_read`` / ``dma_write``); the frame is touched right after."""

    def pte_cleared(self, mm, va, hook):
        """A single-page path (``do_wp_page``, ``try_to_unmap_one``, ``page_mkclean_one``,
        KSM, migration) cleared the PTE of ``va`` (``ptep_clear_flush``), before its TLB
        flush. ``hook``: the v2008 hook the VM calls for it next (``"invalidate_page"``,
        ``"change_pte"``), or None (a range start/end brackets it, or no hook)."""

    def fork_copy(self, parent, child, start, end):
        """``copy_page_range`` copied ``[start, end)`` of ``parent`` into ``child``, now."""

    def discard(self, mm, start, end):
        """The private contents of ``[start, end)`` in ``mm`` are gone (munmap, DONTNEED...)."""

    def move(self, mm, old_start, new_start, length):
        """mremap moved ``[old_start, old_start + length)`` to ``new_start``."""

    def file_truncate(self, file, npages):
        """``file`` was truncated to ``npages`` pages."""

    def gup(self, mm, va, pfn, write, how):
        """``how`` (``"get_user_pages"``, ``"pin_user_pages"`` or ``"hmm_range_fault"``)
        resolved ``va`` of ``mm`` to frame ``pfn``, faulting it in for ``write`` if needed.
        The first two took a page reference (a pin) that ``gup_release`` gives back;
        ``hmm_range_fault`` keeps none."""

    def gup_release(self, mm, pfn, how):
        """``how`` (``"put_page"`` or ``"unpin_user_page"``) dropped one reference on frame
        ``pfn`` that get_user_pages / pin_user_pages of ``mm`` took."""

    def pte_walk(self, mm, va, pte):
        """A lockless walk of ``mm``'s page table read ``pte`` for ``va``
        (``mm.lookup_pte``: GRU's ``atomic_pte_lookup``, an IOMMU's hardware walk)."""

    # ------------------------------------------------------------------ drivers' declarations
    def secondary_map(self, drv, va, pfn, writable):
        """``drv`` installed the translation ``va -> pfn`` (``note_map``; ``va`` page
        aligned)."""

    def secondary_unmap(self, drv, start, end):
        """``drv`` dropped its translations in ``[start, end)`` (``note_unmap(_range)``)."""

    # ------------------------------------------------------------------ notifier chain
    def notifier_register(self, mm, sub):
        """``sub`` was registered on ``mm``'s chain (``mmu_notifier_register``)."""

    def notifier_unregister(self, mm, sub):
        """``sub`` was unlinked from ``mm``'s chain (unregister or the last ``put``); its
        hooks still running are waited for after this."""

    def hook_enter(self, sub, hook, args, span):
        """Hook ``hook`` of list subscription ``sub`` starts with ``args``. ``span``: the
        ``(start, end)`` it notifies about for ``invalidate_page``, ``change_pte`` and
        ``invalidate_range_start``, else None."""

    def hook_exit(self, sub, hook, args, span):
        """That hook call is over (returned or raised)."""

    def range_start(self, mm, rng):
        """A caller (the MM) begins ``mmu_notifier_invalidate_range_start[_nonblock](rng)``."""

    def range_start_returned(self, sub, rng, ret):
        """``sub.invalidate_range_start(rng)`` returned ``ret`` (0, None, True: success;
        False or a negative errno: it refused)."""

    def range_start_failed(self, mm, rng):
        """The caller's start of ``rng`` fails (``-EAGAIN``): the caller will not end it."""

    def range_start_unwind(self, sub, rng):
        """After a refused non-blockable start, ``sub``'s ``invalidate_range_end(rng)`` is
        about to be called to undo its successful start (c2655835fd8c)."""

    def range_end(self, mm, rng, subs):
        """A caller begins ``mmu_notifier_invalidate_range_end(rng)``; ``subs`` are the
        subscriptions whose ``invalidate_range_end`` is now called, in order."""

    def range_end_over(self, sub, rng):
        """``sub``'s ``invalidate_range_end(rng)`` of that end is over (it returned, or an
        earlier hook raised and it will not be called)."""

    def interval_invalidate(self, isub, rng, ret):
        """Interval notifier ``isub``'s ``invalidate`` for ``rng`` (``mn_itree_invalidate``,
        from a range start) returned ``ret`` (False: it refused)."""

    def interval_insert(self, mm, isub):
        """Interval notifier ``isub`` was inserted on ``mm``
        (``mmu_interval_notifier_insert``: it holds a reference on the mm until removed)."""

    def interval_remove(self, mm, isub):
        """Interval notifier ``isub`` was removed from ``mm``
        (``mmu_interval_notifier_remove``)."""

    def interval_release(self, isub, rng, ret):
        """Interval notifier ``isub``'s ``invalidate`` for the RELEASE range ``rng`` of an
        exiting mm (``mn_itree_release``) returned ``ret``."""

    def interval_tree_update(self, mm, isub, op):
        """``mn_itree_inv_end`` applies a deferred ``op`` (``"insert"`` or ``"remove"``) of
        interval notifier ``isub``, deferred because an invalidation was in progress."""

    def interval_invalidations_done(self, mm):
        """The last invalidation overlapping ``mm``'s interval notifiers ended
        (``mn_itree_inv_end`` bumped ``invalidate_seq``): read_retry fails from now on for
        readers that began before."""


#: the name of every event an :class:`Observer` receives
EVENTS = tuple(n for n, v in vars(Observer).items() if callable(v) and not n.startswith("_"))


class FanOut(Observer):
    """Several observers as one: each event goes to each, in the order given. The bound
    methods are looked up once, when the fan-out is made, so an event costs one call per
    observer that overrides it (observers that keep the no-op are skipped)."""

    def __init__(self, *observers):
        self.observers = obs = tuple(observers)
        # which observers override each event depends on their classes only (plus methods
        # set on an instance): worked out once per combination of classes and instance
        # overrides, as the (event, indices) pairs that have a target
        own = []
        for i, o in enumerate(obs):
            d = getattr(o, "__dict__", None)
            if d:
                names = _EVENT_SET.intersection(d.keys())
                if names:
                    own.append((i, frozenset(names)))
        key = (tuple([type(o) for o in obs]), tuple(own))
        plan = _PLANS.get(key)
        if plan is None:
            plan = _PLANS[key] = _plan(key[0], own)
        single, several = plan
        d = self.__dict__
        for name, i in single:
            d[name] = getattr(obs[i], name)
        for name, idx in several:
            d[name] = _fan(tuple([getattr(obs[i], name) for i in idx]))

    def __repr__(self):
        return f"<FanOut {', '.join(type(o).__name__ for o in self.observers)}>"


def handlers(observer, names) -> tuple:
    """For each event of ``names``, the bound method ``observer`` runs for it, or None if it
    runs the no-op (neither its class nor the instance overrides the event): a hot path
    calls only the events somebody listens to. Work it out again when ``sched.observer``
    is another object (``Scheduler.watch`` makes a new :class:`FanOut`)."""
    out = []
    for name in names:
        fn = getattr(observer, name)
        out.append(None if getattr(fn, "__func__", None) is _BASE[name] else fn)
    return tuple(out)


_BASE = {name: getattr(Observer, name) for name in EVENTS}
_EVENT_SET = frozenset(EVENTS)
#: (observer classes, instance overrides) -> [(event, indices of the observers that take it)]
_PLANS: dict = {}


def _plan(classes, own) -> tuple:
    """For a fan-out of observers of ``classes`` whose instances override the events in
    ``own`` (``[(index, names)]``): each event that some observer takes, with the indices
    of those observers in order (events nobody takes keep the class's no-op), as the
    events one observer takes (``(name, index)``) and those several take (``(name,
    indices)``)."""
    single, several = [], []
    for name, base in _BASE.items():
        idx = [i for i, cls in enumerate(classes) if getattr(cls, name, base) is not base]
        extra = [i for i, names in own if name in names and i not in idx]
        if extra:
            idx = sorted(idx + extra)
        if len(idx) == 1:
            single.append((name, idx[0]))
        elif idx:
            several.append((name, tuple(idx)))
    return tuple(single), tuple(several)


def _fan(targets):
    if not targets:
        return _noop
    if len(targets) == 1:
        return targets[0]
    if len(targets) == 2:
        a, b = targets

        def two(*args):
            a(*args)
            b(*args)
        return two

    def event(*args):
        for t in targets:
            t(*args)
    return event


def _noop(*args):
    return None
