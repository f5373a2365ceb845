"""The user address-space layout the MM operations share (where ``mmap`` places mappings
and the heap starts, ``mmap_min_addr``), the integer check every system-call argument goes
through and the check of every value stored to memory (CPU stores and device writes).
"""

from __future__ import annotations

import operator

from smmu.base.constants import ULONG_MAX
from smmu.base.errors import InvalidArgument

#: where non-fixed mmaps are placed (bottom-up search) and where the heap starts
MMAP_BASE = 0x7F00_0000_0000
BRK_START = 0x0100_0000
MMAP_MIN_ADDR = 0x10000


def as_int(x, what: str) -> int:
    """``x`` as an int (any integer type), or ``InvalidArgument`` naming ``what``."""
    try:
        return operator.index(x)
    except TypeError:
        raise InvalidArgument(f"{what} must be an integer, got {x!r}") from None


def as_value(x, what: str) -> int:
    """A value stored to a page (a CPU store or a device write): any integer, wrapped to 64
    bits as a register would (-1 is 0xffff_ffff_ffff_ffff); else ``InvalidArgument``."""
    return as_int(x, what) & ULONG_MAX
