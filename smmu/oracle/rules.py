"""The Linux text every protocol-level rule of the checker rests on.

Data-level findings (``StaleRead``, ``LostWrite``, ``UseAfterFree``, ``CrossMmAccess``) are
bugs whatever the protocol says: some access saw or lost data it must not. A protocol-level
finding is a rule Linux states; :data:`RULES` quotes it (file, function or section, release)
and :func:`cite` appends the quote to the report, so a reader can check the rule against the
kernel. :func:`fix_hint` says, for each kind (and for ``StaleMapping`` each way a mapping
is stale), what a driver that breaks it has to change (the report's ``fix:`` line). Where
Linux documents a behaviour as correct, the checker does not report it unless it has a
data-level consequence: Documentation/mm/mmu_notifier.rst makes deferring the
secondary flush of a write-protect to ``invalidate_range_end`` legal (``WriteToReadOnly`` is
judged only outside the invalidation), and the header lets a driver that holds a page
reference from mapping time drop it, and its mapping, in ``invalidate_range_end`` (XPMEM).
"""

from __future__ import annotations

#: kind -> (where Linux states it, its words verbatim, what the checker reads in them)
RULES = {
    "MapInWindow": (
        "include/linux/mmu_notifier.h, invalidate_range_start (2.6.27..6.12)",
        "the establishment of sptes is forbidden in the range passed to "
        "invalidate_range_begin/end for the whole duration of the "
        "invalidate_range_begin/end critical section",
        "a mapping of the range made between a start and its end"),
    "UnpairedRange": (
        "include/linux/mmu_notifier.h, invalidate_range_start (2.6.27..6.12)",
        "invalidate_range_start() and invalidate_range_end() must be paired",
        "a start without its end, or an end without its start"),
    "BadReturn": (
        "include/linux/mmu_notifier.h, invalidate_range_start (4.19..6.12)",
        "If blockable argument is set to false then the callback cannot sleep and has to "
        "return with -EAGAIN if sleeping would be required. 0 should be returned otherwise. "
        "Please note that notifiers that can fail invalidate_range_start are not allowed to "
        "implement invalidate_range_end",
        "a refusal of a blockable range (mn_hlist_invalidate_range_start: "
        "WARN_ON(mmu_notifier_range_blockable(range) || _ret != -EAGAIN)), or by a "
        "notifier with an end"),
    "WriteToReadOnly": (
        "Documentation/mm/mmu_notifier.rst (4.15..6.12)",
        "When changing a pte to write protect or to point to a new write protected page "
        "with same content (KSM) it is fine to delay the mmu_notifier_invalidate_range call "
        "to mmu_notifier_invalidate_range_end() outside the page table lock",
        "a device may keep writing through its writable mapping until the invalidation's "
        "end (or its invalidate_page) returns, not after"),
    "StaleMapping": (
        "include/linux/mmu_notifier.h, invalidate_range_start (2.6.27..6.12)",
        "Pages will no longer be referenced by the linux address space but may still be "
        "referenced by sptes until the last refcount is dropped",
        "once the driver's end returned (it drops the last reference), no secondary "
        "mapping may disagree with the primary page table"),
    "BadRange": (
        "include/linux/mmu_notifier.h, arch_invalidate_secondary_tlbs (6.6..6.12); "
        "f7edb07ad7c6 (6.14)",
        "This is called by architecture code whenever invalidating a TLB entry. It is "
        "assumed that any secondary TLB has the same rules for when invalidations are "
        "required",
        "the range a TLB flush passes is the range flushed: start == end flushes nothing "
        "(f7edb07ad7c6: use the correct range instead of an empty range with start=end)"),
    "NotifierUseAfterFree": (
        "mm/mmu_notifier.c, mmu_interval_notifier_remove (5.5..6.12); 319561669a59",
        "Once this returns ops callbacks are no longer running on other CPUs and will not "
        "be called in future",
        "after remove returned, the owner may free the subscription: the core must not "
        "touch it again"),
    "Leak": (
        "mm/gup.c, get_user_pages_remote and pin_user_pages (6.12); mm/mmu_notifier.c, "
        "mmu_interval_notifier_remove and mmu_notifier_get (6.12)",
        "The caller is responsible for releasing returned @pages, via put_page() ... "
        "FOLL_PIN means that the pages must be released via unpin_user_page() ... This "
        "function must be paired with mmu_interval_notifier_insert() ... Each call to "
        "mmu_notifier_get() must be paired with a call to mmu_notifier_put()",
        "what a device took it gives back by the time its file is closed"),
}


def cite(kind: str) -> str:
    """`` [Linux, <where>: "<words>" (<what the checker reads in them>)]`` for a
    protocol-level ``kind``, else ``""``."""
    rule = RULES.get(kind)
    if rule is None:
        return ""
    where, words, gloss = rule
    return f' [Linux, {where}: "{words}" ({gloss})]'


#: kind -> what a driver that breaks the rule has to change (the report's "fix:" line)
FIXES = {
    "StaleRead": "the device read through a translation the primary no longer has: drop (or "
                 "flush) it in the hook the VM calls before it changes the PTE "
                 "(invalidate_range_start, invalidate_page) and do not re-establish it "
                 "before the range's end",
    "LostWrite": "a device write went where the primary no longer looks: drop the writable "
                 "translation before the PTE changes (invalidate_range_start, "
                 "invalidate_page); a write-protect (mprotect, page_mkclean, fork's COW) must "
                 "take write permission away too",
    "UseAfterFree": "the page may be freed as soon as invalidate_range_start (or "
                    "invalidate_page) returns: drop the translation and flush the device "
                    "TLB before returning, or hold a page reference until "
                    "invalidate_range_end drops it",
    "CrossMmAccess": "the frame went to another process after the primary freed it: drop "
                     "the translation before the invalidation hook returns (or hold a page "
                     "reference until invalidate_range_end)",
    "MapInWindow": "do not install a translation while an invalidation of its range is in "
                   "progress: count ranges in flight in invalidate_range_start/_end and, "
                   "under the driver lock, retry the fault while one covers the address "
                   "(mmu_invalidate_retry, mmu_interval_read_retry)",
    "WriteToReadOnly": "a write-protect (mprotect, page_mkclean, COW, KSM) must take write "
                       "permission from the device by the time its invalidation ends: drop "
                       "or downgrade the translation in invalidate_range_start/_end or "
                       "invalidate_page",
    "UnpairedRange": "keep per-range state balanced: every start that succeeded gets exactly "
                     "one end; a start that refused (-EAGAIN) gets none",
    "SleepInAtomic": "this hook runs where it must not sleep (a spinlock, the PT lock, a "
                     "non-blockable range): use a spinlock there, or in a non-blockable "
                     "invalidate_range_start return -EAGAIN instead of sleeping "
                     "(mmu_notifier_range_blockable)",
    "Deadlock": "a hook waits for something its caller holds, or for a fault that needs it: "
                "never wait in a hook for your own fault path; make the fault retry instead",
    "Livelock": "a retry loop never makes progress: the fault must stop retrying once the "
                "invalidation it waits for has ended (its end must clear what the fault "
                "checks), and device code must yield",
    "LockOrder": "take the two locks in the same order on every path (hooks run with the "
                 "MM's locks held: the fault path must not take them inside the driver lock "
                 "the hooks take)",
    "BadReturn": "a blockable invalidate_range_start must return 0; refuse (-EAGAIN) only a "
                 "non-blockable range, and a notifier that can refuse has no "
                 "invalidate_range_end",
    "Leak": "drop in close() (the file's release) what the device took: put_page or "
            "unpin_user_page every page, mmu_interval_notifier_remove every interval "
            "notifier, mmu_notifier_unregister (or _put) the subscription",
    "BadRange": "the core (not the driver) sent an empty range, as arm64 6.6..6.13 did "
                "(fixed by f7edb07ad7c6): run under a fixed kernel; a driver that must live "
                "with it treats start >= end as a flush of everything (the SMMU driver's "
                "size 0), never as nothing to do",
    "NotifierUseAfterFree": "the core called an interval notifier after "
                            "mmu_interval_notifier_remove returned (5.5..5.17, fixed by "
                            "319561669a59): run under a fixed kernel; until then a driver "
                            "must not free the notifier while an invalidation may still "
                            "reach it",
    "ListCorruption": "the core (not the driver) unlinked a subscription twice, as "
                      "mmu_notifier_unregister racing exit did in 3.6..3.8 (fixed by "
                      "751efd8610d3): run under a fixed kernel; until then unregister only "
                      "before the mm can exit (hold a reference with mmget_not_zero)",
    "DriverError": "the driver raised at the line shown: a hook must not raise (in Linux it "
                   "is an oops in the callback); return an error code its contract allows",
}

#: StaleMapping: how the mapping is stale (the report's ``reason``) -> what to change
STALE_FIXES = {
    "stale when made": "the fault's snapshot of the primary went stale before the map: "
                       "under the driver lock, check that no invalidation ran since the "
                       "snapshot (the sequence count, or the in-progress count) before "
                       "installing, and retry the fault if one did",
    "writable over read-only": "map writable only on a write fault that got the page for "
                               "write (FOLL_WRITE breaks COW), and only if the primary PTE "
                               "is writable: a read fault maps read-only",
    "the primary PTE is gone": "the invalidation of that unmap left the translation: "
                               "invalidate_range_start (or invalidate_page) must remove "
                               "every translation in its range",
    "the primary now maps another frame": "the PTE was replaced (COW, migration, KSM) and "
                                          "the device kept the old frame: drop the "
                                          "translation in the hook the VM calls for the "
                                          "replacement (invalidate_range_start; "
                                          "invalidate_page or change_pte in v2008)",
    "the frame was freed (generation moved) since the mapping was made":
        "the frame was freed while the device mapped it: drop the translation before the "
        "invalidation hook returns, or hold a page reference until invalidate_range_end",
    "the secondary is writable but the primary PTE is read-only":
        "the primary PTE was write-protected (mprotect, page_mkclean, fork's COW, KSM) and "
        "the device kept write permission: drop or downgrade the translation in that "
        "invalidation, and map writable only on write faults",
}


def fix_hint(kind: str, details: dict | None = None) -> str | None:
    """What a driver that broke ``kind`` has to change (for ``StaleMapping``, by the way
    the mapping is stale: ``details["reason"]``), or None for a kind with no rule here."""
    if kind == "StaleMapping":
        reason = (details or {}).get("reason")
        if reason in STALE_FIXES:
            return STALE_FIXES[reason]
    return FIXES.get(kind) or (STALE_FIXES["stale when made"] if kind == "StaleMapping"
                               else None)
