"""Leaks, as kmemleak and page_owner see them: what a driver took and never gave back once
its device was closed.

The harness closes every device when a scenario has ended (``MMUNotifier.close``, the
device file's last release; ``Simulator(teardown=True)``), then asks :class:`LeakTracker`
what is left. Each of these is a ``Leak`` naming the call that took it:

* a page reference a driver took with ``get_user_pages`` (``put_page`` gives it back) or
  ``pin_user_pages`` (``unpin_user_page``): the page can never be freed;
* an interval notifier still inserted: ``mmu_interval_notifier_insert`` takes a reference on
  the mm ("pairs with mmdrop in mmu_interval_notifier_remove()", mm/mmu_notifier.c 6.6
  ``__mmu_interval_notifier_insert``) and the notifier keeps being called;
* a subscription never unregistered or put: ``__mmu_notifier_register`` takes one too
  ("Pairs with the mmdrop in mmu_notifier_unregister_*"; ``mmu_notifier_put`` drops it from
  ``mmu_notifier_free_rcu``): the mm_struct is never freed.

Who took a page reference is the driver whose code called GUP: the innermost frame outside
smmu's own packages, if its ``self`` is a driver (references a scenario's own code takes
are its business). Releases match the owner's latest reference of that frame, else any.
"""

from __future__ import annotations

from smmu.notifier import MMUNotifier
from smmu.runtime.task import caller_frame, frame_site

#: the call that takes a page reference, and the one that gives it back
TAKES = {"get_user_pages": "put_page", "pin_user_pages": "unpin_user_page"}
#: what each release gives back
RELEASES = {"put_page": "get_user_pages", "unpin_user_page": "pin_user_pages"}


def _driver_of(frame):
    """The driver whose code ``frame`` runs (its ``self``), or None."""
    if frame is None or "self" not in frame.f_code.co_varnames:
        return None
    obj = frame.f_locals.get("self")
    if isinstance(obj, MMUNotifier):
        return obj
    owner = getattr(obj, "owner", None)       # an interval notifier's owner
    return owner if isinstance(owner, MMUNotifier) else None


class LeakTracker:
    """What drivers took (page references, interval notifiers, registrations), with the
    call site of each, and what is still held (:meth:`leaks`)."""

    def __init__(self):
        self._refs: dict = {}           # (pfn, how) -> [[driver, site], ...], oldest first
        self._intervals: dict = {}      # id(isub) -> (isub, mm, site)
        self._subs: dict = {}           # id(sub) -> (sub, mm, site)

    def subscriptions(self) -> list:
        """Every subscription that was ever linked on a chain, in that order."""
        return [s for s, _, _ in self._subs.values()]

    # ------------------------------------------------------------------ events
    def took(self, mm, pfn, how) -> None:
        if how not in TAKES:
            return
        f = caller_frame()
        drv = _driver_of(f)
        if drv is not None:
            self._refs.setdefault((int(pfn), how), []).append([drv, frame_site(f)])

    def gave(self, mm, pfn, how) -> None:
        held = self._refs.get((int(pfn), RELEASES.get(how)))
        if not held:
            return
        if len(held) == 1:          # the owner's or not, the one reference goes (below)
            held.pop()
            return
        drv = _driver_of(caller_frame())
        for i in range(len(held) - 1, -1, -1):
            if held[i][0] is drv:
                del held[i]
                return
        held.pop()

    def inserted(self, mm, isub) -> None:
        self._intervals[id(isub)] = (isub, mm, frame_site(caller_frame()))

    def removed(self, mm, isub) -> None:
        self._intervals.pop(id(isub), None)

    def registered(self, mm, sub) -> None:
        if id(sub) not in self._subs:
            self._subs[id(sub)] = (sub, mm, frame_site(caller_frame()))

    # ------------------------------------------------------------------ the verdict
    def leaks(self) -> list:
        """``[(what, key, message, details)]`` for everything still held."""
        out = []
        for (pfn, how), held in sorted(self._refs.items()):
            for drv, site in held:
                out.append((
                    "page", (id(drv), pfn, how, site),
                    f"{drv.name} took a reference on frame {pfn} with {how} at {site} and "
                    "still holds it after its device was closed: the page can never be freed "
                    f"(page_owner would name that call). Every {how} needs a "
                    f"{TAKES[how]} once the device no longer uses the page (in close(), "
                    "release or the invalidation that drops the mapping)",
                    {"driver": drv.name, "frame": pfn, "taken_by": how, "where": site}))
        for isub, mm, site in self._intervals.values():
            if not isub.inserted:
                continue
            owner = getattr(isub, "owner", None)
            who = getattr(owner, "name", None) or isub.name
            out.append((
                "interval", (id(isub),),
                f"{who}'s interval notifier {isub.name}, inserted at {site}, is still in the "
                f"tree of {mm.name} after its device was closed: "
                "mmu_interval_notifier_insert took a reference on the mm (mmgrab) that only "
                "mmu_interval_notifier_remove drops, so the mm_struct leaks and the notifier "
                "keeps being called; remove it in close() (dmirror_fops_release) or release",
                {"driver": who, "where": site}))
        for sub, mm, site in self._subs.values():
            if not sub.holds_mm:
                continue
            out.append((
                "subscription", (id(sub),),
                f"{sub.name}, registered on {mm.name} at {site}, was never unregistered or "
                "put after its device was closed: __mmu_notifier_register took a reference "
                "on the mm (mmgrab) that mmu_notifier_unregister / mmu_notifier_put drop, so "
                "the mm_struct leaks",
                {"driver": sub.name, "where": site}))
        return out
