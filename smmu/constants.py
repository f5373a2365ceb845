"""Machine constants shared by every layer (x86-64 with 4-level paging, 4 KiB pages).

A PTE is one unsigned 64-bit word laid out like x86's, trimmed to what the model needs::

    bit 0   PTE_PRESENT    translation valid (hardware may walk it)
    bit 1   PTE_WRITE      writable (clear on COW-shared and write-protected pages)
    bit 2   PTE_YOUNG      accessed bit (set on access, cleared by page_referenced)
    bit 3   PTE_DIRTY      dirty bit (set on write, harvested by page_mkclean/zap)
    bit 4   PTE_SWAP       not present: a swap entry, the PFN field holds the swap slot
    bit 5   PTE_MIGRATION  not present: a migration entry, the PFN field holds the old pfn
    bit 6   PTE_SPECIAL    the shared zero page (read-only, never refcounted)
    bits 12..51            PFN (or swap slot)

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

PTE_PRESENT = 1 << 0
PTE_WRITE = 1 << 1
PTE_YOUNG = 1 << 2
PTE_DIRTY = 1 << 3
PTE_SWAP = 1 << 4
PTE_MIGRATION = 1 << 5
PTE_SPECIAL = 1 << 6
PTE_FLAGS_MASK = (1 << 12) - 1
PFN_SHIFT = 12
PFN_MASK = ((1 << 40) - 1) << PFN_SHIFT

EAGAIN = 11
ENOMEM = 12
EINVAL = 22
EFAULT = 14
EOVERFLOW = 75
ULONG_MAX = (1 << 64) - 1
