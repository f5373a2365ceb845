"""The base layer: what every other layer shares and that depends on nothing of smmu.

``constants`` (page geometry, errno values), ``pte`` (the PTE word's format and helpers),
``errors`` (the user-facing errors and the ``Violation`` record), ``radix`` (the numba radix
page-table kernels used by the primary MM, the shadow page table and the oracle's scan) and
``radix_ref`` (their pure-Python reference).
"""
