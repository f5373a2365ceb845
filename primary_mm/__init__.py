"""The primary MMU: frames, radix page tables, VMAs, reverse maps, swap, page cache and the
MM operations that call the MMU notifier hooks where Linux does.

``Memory`` (system-wide state and operations) and ``MM`` (one address space) are the entry
points; ``smmu.Simulator`` builds them. Names are imported lazily so that importing
``primary_mm`` does not compile the numba kernels until something is used.
"""

from __future__ import annotations

_EXPORTS = {
    "Memory": "primary_mm.memory",
    "MM": "primary_mm.mm",
    "pte_pfn": "smmu.base.pte",
    "PTE_PROTNONE": "smmu.base.pte",
    "VMA": "primary_mm.vma",
    "parse_prot": "primary_mm.vma",
    "File": "primary_mm.filemap",
    "AnonVma": "primary_mm.rmap",
    "AddressSpace": "primary_mm.rmap",
    "KsmStable": "primary_mm.rmap",
    "grab_anon_vma": "primary_mm.rmap",
    "SwapSpace": "primary_mm.swap",
    "FrameTable": "primary_mm.frames",
    "PageTable": "primary_mm.pagetable",
    "PageTablePool": "primary_mm.pagetable",
}


def __getattr__(name):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'primary_mm' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = list(_EXPORTS)
