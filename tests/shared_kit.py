"""Helpers several test modules share (one concept, one place)."""

import pytest


class Recorder:
    """An observer that logs what it is told, as a driver's note_map/note_unmap_range would
    (what a :class:`smmu.tlb.TLB` or :class:`smmu.shadow.ShadowPageTable` reports)."""

    def __init__(self):
        self.calls = []

    def note_map(self, va, pfn, writable):
        self.calls.append(("map", va, pfn, writable))

    def note_unmap_range(self, va0, va1):
        self.calls.append(("unmap", va0, va1))


def drivers_or_skip():
    """The :mod:`drivers` package, or skip the test while it is not built yet."""
    drivers = pytest.importorskip("drivers")
    if not hasattr(drivers, "BUILTIN"):
        pytest.skip("drivers not built yet")
    return drivers
