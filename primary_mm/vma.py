"""Virtual memory areas (``struct vm_area_struct``) and protection strings.

A VMA covers ``[start, end)`` of one address space with one protection and one backing:

* private anonymous (``file is None``, ``shared False``): pages come from the zero page and
  fresh frames, reverse-mapped through ``anon_vma``;
* shared anonymous (``anon True``, ``shared True``): backed by an internal shmem
  :class:`~primary_mm.filemap.File` (Linux: ``shmem_zero_setup``), so that fork aliases it;
* file-backed, private (COW: written pages become anonymous) or shared (writes go to the
  page cache and, on writeback, to the file).

``pgoff`` is the page offset of ``start`` in the file, or for anonymous VMAs ``start >>
PAGE_SHIFT`` at creation (Linux sets ``vm_pgoff`` that way so that the reverse map can
compute an anonymous page's address as ``start + (index - pgoff) * PAGE_SIZE``; mremap keeps
``pgoff``, which is why moved pages are still found).
"""

from __future__ import annotations

from smmu.base.constants import PAGE_SHIFT
from smmu.base.errors import InvalidArgument

PROT_CHARS = "rwx"


def vma_start(v) -> int:
    """Sort key of VMAs (``mm.vmas`` is kept sorted by start)."""
    return v.start


#: protection strings already normalised -> their canonical form (every mmap and mprotect
#: of a scenario passes one of a handful)
_CANON: dict[str, str] = {}


def parse_prot(prot) -> str:
    """Normalise a protection string: any subset of ``"rwx"`` in any order, or ``"none"``
    / ``""`` for PROT_NONE. Returns the canonical form (``"rw"``, ``"r"``, ``"none"``...)."""
    if type(prot) is str:
        canon = _CANON.get(prot)
        if canon is None:
            canon = _parse_prot(prot)
            if len(_CANON) < 256:
                _CANON[prot] = canon
        return canon
    return _parse_prot(prot)


def _parse_prot(prot) -> str:
    if not isinstance(prot, str):
        raise InvalidArgument(f"prot must be a string such as 'rw', 'r', 'rwx' or 'none', "
                              f"got {prot!r}")
    p = prot.strip().lower()
    if p in ("none", "", "---"):
        return "none"
    bad = [c for c in p if c not in PROT_CHARS + "-"]
    if bad or len(set(p.replace("-", ""))) != len(p.replace("-", "")):
        raise InvalidArgument(f"unknown protection {prot!r}: use a subset of 'rwx' such as "
                              "'r', 'rw', 'rwx', or 'none'")
    canon = "".join(c for c in PROT_CHARS if c in p)
    return canon or "none"


class VMA:
    """One virtual memory area. ``flags`` is a set of strings (``"dontfork"``, ``"heap"``...).

    Attributes the oracle reads: ``start``, ``end``, ``prot``, ``shared``, ``anon``, ``file``,
    ``pgoff``; plus ``anon_vma`` (reverse map of its anonymous pages, made on first need),
    ``mm`` (the address space) and ``dontfork``.
    """

    __slots__ = ("mm", "start", "end", "prot", "shared", "anon", "file", "pgoff", "flags",
                 "anon_vma")

    def __init__(self, mm, start: int, end: int, prot: str = "rw", shared: bool = False,
                 file=None, pgoff: int | None = None, flags=(), anon: bool | None = None):
        self.mm = mm
        self.start = start
        self.end = end
        self.prot = prot
        self.shared = shared
        self.file = file
        self.anon = (file is None) if anon is None else anon
        self.pgoff = (start >> PAGE_SHIFT) if pgoff is None else pgoff
        self.flags = set(flags)
        self.anon_vma = None

    # -- protection ------------------------------------------------------------------------
    @property
    def readable(self) -> bool:
        return "r" in self.prot

    @property
    def writable(self) -> bool:
        return "w" in self.prot

    @property
    def executable(self) -> bool:
        return "x" in self.prot

    @property
    def dontfork(self) -> bool:
        return "dontfork" in self.flags

    @property
    def is_cow(self) -> bool:
        """``is_cow_mapping``: private (VM_MAYWRITE without VM_SHARED)."""
        return not self.shared

    # -- geometry ------------------------------------------------------------------------
    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def npages(self) -> int:
        return (self.end - self.start) >> PAGE_SHIFT

    def contains(self, va: int) -> bool:
        return self.start <= va < self.end

    def linear_page_index(self, va: int) -> int:
        """``linear_page_index``: the page's index in the file / anon_vma."""
        return self.pgoff + ((va - self.start) >> PAGE_SHIFT)

    def address_of(self, index: int) -> int | None:
        """``vma_address``: where page ``index`` is mapped in this VMA, or None."""
        va = self.start + ((index - self.pgoff) << PAGE_SHIFT)
        return va if self.start <= va < self.end else None

    def describe(self) -> str:
        if self.file is not None and not self.anon:
            kind = f"file {self.file.name}+{self.pgoff:#x}"
        elif self.file is not None:
            kind = "shmem"
        else:
            kind = "anon"
        share = "shared" if self.shared else "private"
        extra = f" {','.join(sorted(self.flags))}" if self.flags else ""
        return f"[{self.start:#x}, {self.end:#x}) {self.prot} {share} {kind}{extra}"

    def snapshot(self) -> tuple:
        """A comparable summary (tests use it to check 'state unchanged')."""
        return (self.start, self.end, self.prot, self.shared, self.anon,
                None if self.file is None else id(self.file), self.pgoff,
                tuple(sorted(self.flags)))

    def __repr__(self) -> str:
        return f"<VMA {self.describe()}>"
