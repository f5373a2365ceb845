"""Machine constants shared by every layer (x86-64 with 4-level paging, 4 KiB pages), and
the errno values the model returns. The PTE word's layout is :mod:`smmu.base.pte`.

Upper levels of the radix tree store a node index (0 = no table).
"""

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)
LEVELS = 4
LEVEL_BITS = 9
PTRS_PER_TABLE = 1 << LEVEL_BITS
VA_BITS = PAGE_SHIFT + LEVELS * LEVEL_BITS          # 48
TASK_SIZE = 1 << (VA_BITS - 1)                      # user half of the canonical space
MAX_VPN = TASK_SIZE >> PAGE_SHIFT
#: a transparent huge page: one PMD entry maps 512 pages (2 MiB)
HPAGE_PMD_SHIFT = PAGE_SHIFT + LEVEL_BITS                 # 21
HPAGE_PMD_SIZE = 1 << HPAGE_PMD_SHIFT
HPAGE_PMD_MASK = ~(HPAGE_PMD_SIZE - 1)
HPAGE_PMD_NR = 1 << LEVEL_BITS                            # 512
HPAGE_PMD_ORDER = LEVEL_BITS                               # 9
PUD_SHIFT = HPAGE_PMD_SHIFT + LEVEL_BITS                   # 30: what one PMD table maps
PUD_SIZE = 1 << PUD_SHIFT                                  # 1 GiB
PUD_MASK = ~(PUD_SIZE - 1)

EPERM = 1
ENOENT = 2
EAGAIN = 11
ENOMEM = 12
EFAULT = 14
EBUSY = 16
EINVAL = 22
EMLINK = 31
EOVERFLOW = 75
ULONG_MAX = (1 << 64) - 1
