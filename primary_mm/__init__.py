"""The primary MMU: frames, radix page tables, VMAs, reverse maps, swap, page cache and the
MM operations that call the MMU notifier hooks where Linux does.

``Memory`` (system-wide state and operations) and ``MM`` (one address space) are the entry
points; ``smmu.Simulator`` builds them. The operations live in one module per Linux file
they model: ``fault`` (mm/memory.c, mm/gup.c), ``mmap``, ``mprotect``, ``madvise``,
``mremap``, ``fork``, ``exit`` (mixed into ``MM``) and ``rmap``, ``vmscan``, ``writeback``,
``truncate``, ``migrate``, ``ksm``, ``oom`` (mixed into ``Memory``). The PTE format is
:mod:`smmu.base.pte`.
"""

# smmu's facade imports Simulator, which builds on this package (primary_mm.memory): load
# smmu first, so that entering through primary_mm never meets this package half-imported.
import smmu.base  # noqa: F401  isort: skip

from primary_mm.filemap import File
from primary_mm.frames import FrameTable
from primary_mm.memory import Memory
from primary_mm.mm import MM
from primary_mm.pagetable import PageTable, PageTablePool
from primary_mm.rmap import AddressSpace, AnonVma, KsmStable, grab_anon_vma
from primary_mm.swap import SwapSpace
from primary_mm.vma import VMA, parse_prot

__all__ = ["AddressSpace", "AnonVma", "File", "FrameTable", "KsmStable", "MM", "Memory",
           "PageTable", "PageTablePool", "SwapSpace", "VMA", "grab_anon_vma", "parse_prot"]
