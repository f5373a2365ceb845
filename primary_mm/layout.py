"""The user address-space layout the MM operations share (where ``mmap`` places mappings
and the heap starts, ``mmap_min_addr``) and the integer check every system-call argument
goes through.
"""

from __future__ import annotations

import operator

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
