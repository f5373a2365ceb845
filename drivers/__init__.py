"""Reference secondary-MMU drivers, modelled on the real ones, and a catalogue of broken ones.

=================  ===================================================================
``KVM``            shadow/EPT page tables: mmu_lock, invalidate seq / in-progress count /
                   tracked range, GUP then lock then retry check (virt/kvm/kvm_main.c)
``GRU``            SGI GRU TLB: ms_range_active, flush in start, dropins that wait for the
                   count to reach zero (drivers/misc/sgi-gru)
``XPMEM``          cross-process attachments that pin pages; sleeping invalidation (hpc/xpmem)
``IOMMU_SVA``      the device walks the CPU tables; IOTLB flushed at
                   arch_invalidate_secondary_tlbs (drivers/iommu/intel/svm.c); modern only
``HMM_MIRROR``     interval notifier + hmm_range_fault collision retry (lib/test_hmm.c);
                   modern only
``PINNED``         long-term pin, no notifier: the pre-notifier RDMA model
=================  ===================================================================

``BUILTIN`` maps the command-line names to the classes; ``BUGGY`` maps the names of the
documented broken variants in :mod:`drivers.buggy` (each names the rule it breaks, the real
bug it mirrors, the violation kinds the checker must report and the scenarios that expose
it).
"""

from drivers.gru import GRU
from drivers.hmm_mirror import HMM_MIRROR
from drivers.iommu_sva import IOMMU_SVA
from drivers.kvm import KVM
from drivers.pinned import PINNED
from drivers.xpmem import XPMEM
from drivers.buggy import BUGGY

BUILTIN = {"kvm": KVM, "gru": GRU, "xpmem": XPMEM, "iommu_sva": IOMMU_SVA,
           "hmm_mirror": HMM_MIRROR, "pinned": PINNED}

__all__ = ["KVM", "GRU", "XPMEM", "IOMMU_SVA", "HMM_MIRROR", "PINNED", "BUILTIN", "BUGGY"]
