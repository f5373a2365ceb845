"""The oracle's data model unit: :class:`Cell`, the value one page should hold and who wrote
it last."""

from __future__ import annotations


class Cell:
    """The model's value of one page, and who wrote it last: ``writer`` is ``"cpu"`` or a
    driver name, ``task``/``step`` where, ``pfn`` the frame a device wrote through."""

    __slots__ = ("value", "writer", "task", "step", "pfn", "device", "resynced", "lazy")

    def __init__(self, value, writer, task, step, pfn=None, device=False, resynced=False,
                 lazy=False):
        self.value = value
        self.writer = writer
        self.task = task
        self.step = step
        self.pfn = pfn
        self.device = device
        self.resynced = resynced
        self.lazy = lazy     # MADV_FREE: the old value until reclaim drops the page, then 0

    def copy(self):
        c = Cell(self.value, self.writer, self.task, self.step, self.pfn, self.device,
                 self.resynced)
        c.lazy = self.lazy
        return c

    def matches(self, value: int) -> bool:
        return value == self.value or (self.lazy and value == 0)

    def describe(self) -> str:
        if self.lazy:
            return (f"{self.value} or 0 (lazily freed by MADV_FREE at step {self.step}: "
                    "either until the page is written again)")
        if self.resynced:
            return f"{self.value} (as last observed at step {self.step})"
        via = f" through frame {self.pfn}" if self.pfn is not None else ""
        return f"{self.value} written by {self.writer} ({self.task}) at step {self.step}{via}"

    def __repr__(self):
        return f"<Cell {self.describe()}>"
