"""The catalogue of broken drivers: each a small subclass of a reference driver that
overrides only what breaks, and says so.

Class attributes every entry has:

``breaks``
    the rule it breaks, one sentence;
``mirrors``
    the real bug, commit or thread it mirrors, or None;
``expected``
    the violation kinds (:data:`smmu.base.errors.VIOLATION_KINDS`) that are a legitimate report of
    this bug; the checker must report at least one of them, and nothing outside them;
``scenarios``
    names of :mod:`smmu.scenarios` scenarios that expose it;
``apis``
    the notifier generations in which it is broken (narrower than its base where the bug
    only exists there).

``BUGGY`` maps a short name to each class (the names ``smmu check`` and the historical
scenarios use).
"""

from drivers.buggy.gru import (GRUFlushInEnd, GRUIgnoreInvalidatePage, GRUNoDropinGuard,
                               GRUNoRangeActiveCheck, GRUReleaseLeavesTLB)
from drivers.buggy.hmm import HMMFailBlockable, HMMNoFinalize, HMMNoSetSeq, HMMSkipAllMigrate
from drivers.buggy.iommu_sva import SVAFlushInEnd, SVASleepInFlush
from drivers.buggy.kvm import (KVMApicReloadNoRetry, KVMApicRemap, KVMCowWritable,
                               KVMGpcSpeculativeValid, KVMMemslotUpdateInWindow,
                               KVMHugeFirstPage, KVMNoInProgressCheck, KVMNoSeqCheck,
                               KVMSeqAfterUnlock, KVMSeqInStart, KVMSleepingAging,
                               KVMSleepsInInvalidatePage, RadeonUserptr)
from drivers.buggy.pinned import PinnedEarlyPut
from drivers.buggy.xpmem import XPMEMNoPin

BUGGY = {
    "kvm_no_in_progress": KVMNoInProgressCheck,
    "kvm_no_seq": KVMNoSeqCheck,
    "kvm_seq_in_start": KVMSeqInStart,
    "kvm_seq_after_unlock": KVMSeqAfterUnlock,
    "kvm_cow_writable": KVMCowWritable,
    "kvm_apic_remap": KVMApicRemap,
    "kvm_apic_reload_no_retry": KVMApicReloadNoRetry,
    "radeon_userptr": RadeonUserptr,
    "kvm_huge_first_page": KVMHugeFirstPage,
    "kvm_sleeping_aging": KVMSleepingAging,
    "gru_no_range_active": GRUNoRangeActiveCheck,
    "gru_flush_in_end": GRUFlushInEnd,
    "gru_no_dropin_guard": GRUNoDropinGuard,
    "gru_ignore_invalidate_page": GRUIgnoreInvalidatePage,
    "gru_release_leaves_tlb": GRUReleaseLeavesTLB,
    "hmm_no_set_seq": HMMNoSetSeq,
    "hmm_fail_blockable": HMMFailBlockable,
    "hmm_no_finalize": HMMNoFinalize,
    "hmm_skip_all_migrate": HMMSkipAllMigrate,
    "sva_sleep_in_flush": SVASleepInFlush,
    "sva_flush_in_end": SVAFlushInEnd,
    "pinned_early_put": PinnedEarlyPut,
    "xpmem_no_pin": XPMEMNoPin,
    "kvm_sleeps_in_invalidate_page": KVMSleepsInInvalidatePage,
    "kvm_gpc_speculative_valid": KVMGpcSpeculativeValid,
    "kvm_memslot_update_in_window": KVMMemslotUpdateInWindow,
}

for _name, _cls in BUGGY.items():
    _cls.name = _name

__all__ = ["BUGGY"] + sorted(c.__name__ for c in BUGGY.values())
