"""Helpers several test modules share (one concept, one place)."""


class Recorder:
    """An observer that logs what it is told, as a driver's note_map/note_unmap_range would
    (what a :class:`smmu.tlb.TLB` or :class:`smmu.shadow.ShadowPageTable` reports)."""

    def __init__(self):
        self.calls = []

    def note_map(self, va, pfn, writable):
        self.calls.append(("map", va, pfn, writable))

    def note_unmap_range(self, va0, va1):
        self.calls.append(("unmap", va0, va1))
