"""Violation kinds shared by the catalogue's ``expected`` sets."""

from __future__ import annotations

#: what a translation that outlives its page can show, depending on the schedule
STALE = frozenset({"UseAfterFree", "CrossMmAccess", "StaleRead", "LostWrite", "WriteToReadOnly",
                   "StaleMapping"})
