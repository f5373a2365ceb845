"""Small pieces every reference driver shares: reading a primary PTE the way hardware or a
lockless driver walk does, the frame generation a device TLB tags its entries with, turning
an invalidated range into the vpns to drop, checking a driver's address window, and building
a device TLB from user options.

Kept here so that each driver file holds only what is particular to the real driver it
models (one concept, one place).
"""

from __future__ import annotations

from smmu.base.constants import PAGE_SHIFT, PAGE_SIZE, TASK_SIZE
from smmu.base.errors import BadDriver, SegmentationFault
from smmu.base.pte import PTE_MIGRATION, PTE_PRESENT, PTE_SWAP, PTE_WRITE, pte_pfn
from smmu.devices.tlb import TLB


def vpn_of(va: int) -> int:
    """The virtual page number of ``va``."""
    return va >> PAGE_SHIFT


def page_of(va: int) -> int:
    """``va`` rounded down to its page."""
    return va - va % PAGE_SIZE


def vpn_span(start: int, end: int, lo: int = 0, hi: int = TASK_SIZE) -> tuple[int, int]:
    """The vpns ``[vpn0, vpn1)`` of the pages ``[start, end)`` touches, clipped to the pages of
    ``[lo, hi)`` (the user address space, or the window a driver covers). Empty when
    ``vpn0 >= vpn1``. Clipping keeps Linux-style whole-space ends (``ULONG_MAX``) inside the
    range a shadow table or TLB accepts."""
    return (max(vpn_of(start), vpn_of(lo)),
            min(vpn_of(end + PAGE_SIZE - 1), vpn_of(hi)))


def user_window(what: str, start: int, length: int | None) -> tuple[int, int]:
    """``[start, start + length)`` as ``(start, end)``, checked to be page aligned, non-empty
    and within the user address space; ``length=None`` means up to ``TASK_SIZE``. ``what``
    names the window in the ``BadDriver`` error (e.g. ``"XPMEM segment"``)."""
    if length is None:
        length = TASK_SIZE - start
    if start % PAGE_SIZE or length <= 0 or length % PAGE_SIZE or start < 0 or \
            start + length > TASK_SIZE:
        raise BadDriver(f"{what} [{start:#x}, +{length:#x}) must be page aligned, "
                        f"non-empty and within the user space [0, {TASK_SIZE:#x})")
    return start, start + length


def walk_pte(mm, va: int, write: bool):
    """A lockless walk of the primary page table, as GRU's ``atomic_pte_lookup``
    (drivers/misc/sgi-gru/grufault.c) and an IOMMU's hardware walk of ``mm->pgd`` do.

    Returns ``(pfn, writable)`` if the PTE is present and allows the access (a write needs
    ``PTE_WRITE``), else ``None``: the caller then goes through the primary fault path
    (``handle_mm_fault`` / PRI). Swap, migration and PROT_NONE entries are not present to a
    hardware walker. (``atomic_pte_lookup`` also wants the dirty bit for a write; the primary
    here makes every writable PTE dirty when it grants write, so that check is not needed.)
    """
    pte = int(mm.lookup_pte(va))
    if not pte & PTE_PRESENT or pte & (PTE_SWAP | PTE_MIGRATION):
        return None
    writable = bool(pte & PTE_WRITE)
    if write and not writable:
        return None
    return pte_pfn(pte), writable


def device_tlb(what: str, sets: int, ways: int, policy: str, *, name: str, observer) -> TLB:
    """The device TLB of a driver (GRU TLB, IOTLB), built from the user's geometry options; a
    geometry :class:`smmu.tlb.TLB` rejects is a ``BadDriver`` naming ``what``."""
    try:
        return TLB(sets, ways, policy, name=name, observer=observer)
    except ValueError as e:
        raise BadDriver(f"{what} geometry: {e}") from None


def frame_generation(sim, pfn: int) -> int:
    """The generation of frame ``pfn`` now: what a TLB insert records so that the checker
    can tell a translation of a since-freed frame from a live one."""
    return int(sim.memory.frames.generation[pfn])


def device_gone(drv, why: str):
    """The error a device access gets once the driver has torn its context down (after
    ``release``, or detach): the device can no longer reach the address space."""
    return SegmentationFault(f"{drv.name}: the device context for {drv.mm!r} is gone ({why}); "
                             "the device cannot access it any more", None)
