"""``hmm_range_fault``, from ``mm/hmm.c`` (6.8): a device driver's snapshot of the CPU page
table over a range, faulting pages in where asked.

:class:`Hmm` is mixed into :class:`primary_mm.mm.MM`. The range form follows Linux::

    rng = HmmRange(start, end, default_flags=HMM_PFN_REQ_FAULT, dev_private_owner=dev,
                   notifier=isub, notifier_seq=seq)
    yield mm.mmap_lock.read()
    ret = yield from mm.hmm_range_fault(rng)      # 0, -EBUSY, -EFAULT, -EPERM
    mm.mmap_lock.up_read()
    ... rng.hmm_pfns[i] is pfn | HMM_PFN_VALID [| HMM_PFN_WRITE], 0, or HMM_PFN_ERROR ...

With ``HMM_PFN_REQ_FAULT`` unset (in ``default_flags`` and for each page through
``pfn_flags_mask``) nothing is faulted: a missing page reads 0, an inaccessible one
``HMM_PFN_ERROR`` (a snapshot, as dmirror's ``HMM_DMIRROR_SNAPSHOT`` takes). A device-private
page of ``dev_private_owner`` is reported (valid, writable if its entry is), never faulted;
one of another device is faulted back to system memory (``migrate_to_ram``) when a fault is
requested, else reads 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from primary_mm.layout import as_int
from smmu.base.constants import EBUSY, EFAULT, ENOMEM, EPERM, PAGE_SHIFT, PAGE_SIZE
from smmu.base.errors import InvalidArgument, OutOfMemory, SegmentationFault, UsageError
from smmu.base.constants import HPAGE_PMD_ORDER
from smmu.base.pte import (PTE_DEVICE_PRIVATE, PTE_HUGE, PTE_MIGRATION, PTE_PRESENT, PTE_WRITE,
                           pte_pfn, pte_pfns)
from primary_mm.operation import mm_operation

HMM_PFN_VALID = 1 << 63
HMM_PFN_WRITE = 1 << 62
HMM_PFN_ERROR = 1 << 61
HMM_PFN_ORDER_SHIFT = 56
HMM_PFN_FLAGS = HMM_PFN_VALID | HMM_PFN_WRITE | HMM_PFN_ERROR | (0x1F << HMM_PFN_ORDER_SHIFT)
#: input flags: fault the page in (readable), and writable
HMM_PFN_REQ_FAULT = HMM_PFN_VALID
HMM_PFN_REQ_WRITE = HMM_PFN_WRITE

_U = np.uint64


def hmm_pfn_to_pfn(entry) -> int:
    """``hmm_pfn_to_page``'s pfn: the entry without its flags."""
    return int(entry) & ~HMM_PFN_FLAGS


def hmm_pfn_to_map_order(entry) -> int:
    """``hmm_pfn_to_map_order``: 0 for a PTE mapping, ``HPAGE_PMD_ORDER`` for a PMD one."""
    return (int(entry) >> HMM_PFN_ORDER_SHIFT) & 0x1F


@dataclass
class HmmRange:
    """``struct hmm_range``: ``[start, end)``, ``hmm_pfns`` (one uint64 per page: request
    flags in, ``pfn | flags`` out), ``default_flags`` / ``pfn_flags_mask``,
    ``dev_private_owner``, and the interval ``notifier`` whose ``notifier_seq`` (from
    ``mmu_interval_read_begin``) the walk checks (None: no check)."""

    start: int
    end: int
    default_flags: int = 0
    pfn_flags_mask: int = 0
    dev_private_owner: object = None
    notifier: object = None
    notifier_seq: int = 0
    hmm_pfns: np.ndarray = field(default=None, repr=False)

    def __post_init__(self):
        if self.start % PAGE_SIZE or self.end % PAGE_SIZE or self.end <= self.start:
            raise InvalidArgument(f"HmmRange [{self.start:#x}, {self.end:#x}) must be page "
                                  "aligned and non-empty")
        n = (self.end - self.start) >> PAGE_SHIFT
        if self.hmm_pfns is None:
            self.hmm_pfns = np.zeros(n, dtype=np.uint64)
        elif len(self.hmm_pfns) != n:
            raise InvalidArgument(f"HmmRange: hmm_pfns has {len(self.hmm_pfns)} entries for "
                                  f"{n} pages")

    @property
    def npages(self) -> int:
        return (self.end - self.start) >> PAGE_SHIFT


class Hmm:
    """``hmm_range_fault`` (``mm/hmm.c``) of an address space."""

    @mm_operation
    def hmm_range_fault(self, range, write=False, *, dev_private_owner=None):
        """``hmm_range_fault(range)``: fill ``range.hmm_pfns`` (see the module docstring);
        returns 0, ``-EBUSY`` (the notifier sequence moved: retry), ``-EFAULT`` (a page
        asked for cannot be made valid) or ``-EPERM`` (a write asked for in a read-only
        VMA). The caller holds mmap_lock (``mmap_assert_locked``).

        The one-page form ``hmm_range_fault(va, write=False, dev_private_owner=None)``
        faults ``va`` in and returns its pfn (taking mmap_lock for read unless the task
        holds it), raising ``SegmentationFault`` where Linux returns -EFAULT / -EPERM; no
        reference is kept: the caller relies on its notifier."""
        if not isinstance(range, HmmRange):
            return (yield from self._hmm_fault_one(range, write, dev_private_owner))
        if not self._mmap_lock_held():
            raise UsageError("hmm_range_fault(range): hold mmap_lock (yield "
                             "mm.mmap_lock.read()) around it, as mmap_assert_locked demands")
        self._mmget()
        try:
            last = range.start
            while True:
                isub = range.notifier
                if isub is not None and isub.check_retry(range.notifier_seq):
                    return -EBUSY               # mmu_interval_check_retry
                ret, last = yield from self._hmm_walk(range, last)
                if ret != -EBUSY:
                    if ret == 0:                # the snapshot the device will program
                        self.sched.observer.gup(self, range.start,
                                                int(hmm_pfn_to_pfn(range.hmm_pfns[0])),
                                                bool(range.default_flags & HMM_PFN_REQ_WRITE),
                                                "hmm_range_fault")
                    return ret
        finally:
            self._mmput()

    def _hmm_fault_one(self, va, write, owner):
        va = as_int(va, "hmm_range_fault: address")
        page = va - va % PAGE_SIZE
        self._alive()
        took = not self._mmap_lock_held()
        if took:
            yield self.mmap_lock.read()
        try:
            flags = HMM_PFN_REQ_FAULT | (HMM_PFN_REQ_WRITE if write else 0)
            rng = HmmRange(page, page + PAGE_SIZE, default_flags=flags,
                           dev_private_owner=owner)
            ret = yield from self.hmm_range_fault(rng)
            if ret == -ENOMEM:
                raise OutOfMemory(f"hmm_range_fault: {va:#x}: out of memory")
            if ret:
                # the access check names the reason (no VMA, PROT_NONE, read-only, EOF)
                self._access_vma(va, bool(write), "hmm_range_fault")
                raise SegmentationFault(f"hmm_range_fault: {va:#x}: error {ret}", address=va)
            return hmm_pfn_to_pfn(rng.hmm_pfns[0])
        finally:
            if took:
                self.mmap_lock.up_read()

    def _hmm_walk(self, range, last):
        """One ``walk_page_range`` from ``last``: returns ``(ret, last)``; -EBUSY after a
        fault (the caller walks again from ``last``)."""
        out = range.hmm_pfns
        addr = last
        while addr < range.end:
            vma = self.vma_at(addr)
            if vma is None:                             # hmm_vma_walk_hole without a vma
                nxt = self.vmas_in(addr, range.end)
                stop = nxt[0].start if nxt else range.end
                j0, j1 = (addr - range.start) >> PAGE_SHIFT, (stop - range.start) >> PAGE_SHIFT
                if self._hmm_need_fault(range, out[j0:j1], None).any():
                    return -EFAULT, addr
                out[j0:j1] = _U(HMM_PFN_ERROR)
                addr = stop
                continue
            stop = min(vma.end, range.end)
            j0, j1 = (addr - range.start) >> PAGE_SHIFT, (stop - range.start) >> PAGE_SHIFT
            req = self._hmm_req(range, out[j0:j1])
            if not vma.readable:                        # hmm_vma_walk_test
                if (req & _U(HMM_PFN_REQ_FAULT)).any():
                    return -EFAULT, addr
                out[j0:j1] = _U(HMM_PFN_ERROR)
                addr = stop
                continue
            vpns = np.arange(addr >> PAGE_SHIFT, stop >> PAGE_SHIFT, dtype=np.int64)
            ptes = self.pt.walk(vpns)
            present = (ptes & _U(PTE_PRESENT)) != 0
            cpu = np.where(present, _U(HMM_PFN_VALID), _U(0))
            cpu |= np.where(present & ((ptes & _U(PTE_WRITE)) != 0), _U(HMM_PFN_WRITE), _U(0))
            own = self._hmm_own_device(ptes, range.dev_private_owner)
            cpu[own] = _U(HMM_PFN_VALID) | np.where((ptes[own] & _U(PTE_WRITE)) != 0,
                                                    _U(HMM_PFN_WRITE), _U(0))
            need = self._hmm_need_fault(range, out[j0:j1], cpu) & ~own
            # a page of a PMD mapping carries the map order (pmd_to_hmm_pfn_flags)
            cpu |= np.where(present & ((ptes & _U(PTE_HUGE)) != 0),
                            _U(HPAGE_PMD_ORDER << HMM_PFN_ORDER_SHIFT), _U(0))
            words = np.where((cpu & _U(HMM_PFN_VALID)) != 0, pte_pfns(ptes).astype(np.uint64)
                             | cpu, _U(0))
            if need.any():
                k = int(np.argmax(need))
                out[j0:j0 + k] = words[:k]
                fault_va = addr + k * PAGE_SIZE
                pte = int(ptes[k])
                if pte & PTE_MIGRATION:                 # migration_entry_wait, then -EBUSY
                    yield self.memory.migration_wq.wait_until(
                        lambda v=fault_va >> PAGE_SHIFT, p=pte: self.pt.lookup(v) != p)
                    return -EBUSY, fault_va
                wants_write = bool(req[k] & _U(HMM_PFN_REQ_WRITE)) and \
                    not cpu[k] & _U(HMM_PFN_WRITE)
                return (yield from self._hmm_vma_fault(vma, fault_va, wants_write)), fault_va
            out[j0:j1] = words
            addr = stop
        return 0, range.end

    @staticmethod
    def _hmm_req(range, inp):
        """The request flags of each page: ``(*hmm_pfn & pfn_flags_mask) | default_flags``."""
        return (inp & _U(range.pfn_flags_mask)) | _U(range.default_flags)

    def _hmm_need_fault(self, range, inp, cpu):
        """``hmm_pte_need_fault`` for each page (``cpu`` None: nothing mapped)."""
        req = self._hmm_req(range, inp)
        if cpu is None:
            cpu = np.zeros(len(inp), dtype=np.uint64)
        fault = (req & _U(HMM_PFN_REQ_FAULT)) != 0
        write = fault & ((req & _U(HMM_PFN_REQ_WRITE)) != 0) & ((cpu & _U(HMM_PFN_WRITE)) == 0)
        return write | (fault & ((cpu & _U(HMM_PFN_VALID)) == 0))

    def _hmm_own_device(self, ptes, owner):
        """Which entries are device-private pages of ``owner`` ("Don't fault in device
        private pages owned by the caller, just report the PFN")."""
        dev = (ptes & _U(PTE_DEVICE_PRIVATE)) != 0
        if owner is None or not dev.any():
            return np.zeros(len(ptes), dtype=bool)
        for k in np.nonzero(dev)[0].tolist():
            pgmap = self.memory.page_pgmap(pte_pfn(int(ptes[k])))
            dev[k] = pgmap is not None and pgmap.owner is owner
        return dev

    def _hmm_vma_fault(self, vma, va, write):
        """``hmm_vma_fault``: -EPERM for a write to a read-only VMA, -EFAULT if the fault
        fails (beyond EOF: SIGBUS), else fault and -EBUSY (walk again)."""
        if write and not vma.writable:
            return -EPERM
        try:
            yield from self._handle_fault(va, write, "hmm_range_fault")
        except SegmentationFault:
            return -EFAULT
        except OutOfMemory:
            return -ENOMEM
        return -EBUSY
