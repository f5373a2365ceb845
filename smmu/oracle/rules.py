"""The Linux text every protocol-level rule of the checker rests on.

Data-level findings (``StaleRead``, ``LostWrite``, ``UseAfterFree``, ``CrossMmAccess``) are
bugs whatever the protocol says: some access saw or lost data it must not. A protocol-level
finding is a rule Linux states; :data:`RULES` quotes it (file, function or section, release)
and :func:`cite` appends the quote to the report, so a reader can check the rule against the
kernel. Where Linux documents a behaviour as correct, the checker does not report it unless
it has a data-level consequence: Documentation/mm/mmu_notifier.rst makes deferring the
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
}


def cite(kind: str) -> str:
    """`` [Linux, <where>: "<words>" (<what the checker reads in them>)]`` for a
    protocol-level ``kind``, else ``""``."""
    rule = RULES.get(kind)
    if rule is None:
        return ""
    where, words, gloss = rule
    return f' [Linux, {where}: "{words}" ({gloss})]'
