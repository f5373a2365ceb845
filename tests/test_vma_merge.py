"""mprotect merges the VMAs it split once their protections agree again (6.8 mm/mprotect.c
``mprotect_fixup`` -> ``vma_modify_flags`` -> ``vma_merge``): an mprotect that is undone
leaves one VMA, as in Linux, not three, and the reverse map still finds the pages."""

from smmu import PAGE_SIZE, MMUNotifier, Simulator
from smmu.base.pte import pte_pfn

P = PAGE_SIZE


class _Pairs(MMUNotifier):
    def __init__(self, sim, mm):
        super().__init__(sim, mm)
        self.starts = []

    def invalidate_range_start(self, r):
        self.starts.append((r.start, r.end))

    def invalidate_range_end(self, r):
        pass


def _process(n=16):
    sim = Simulator(notifier_api="modern", seed=1)
    mm = sim.new_process("p")
    buf = sim.do(mm.mmap(n * P, prot="rw", populate=True))
    for i in range(n):
        sim.do(mm.write(buf + i * P, 100 + i))
    return sim, mm, buf


def test_undone_mprotect_leaves_one_vma_and_fork_notifies_it_once():
    sim, mm, buf = _process()
    sim.do(mm.mprotect(buf + 4 * P, P, "r"))
    assert [v.prot for v in mm.vmas] == ["rw", "r", "rw"]
    sim.do(mm.mprotect(buf + 4 * P, P, "rw"))
    assert [(v.start, v.end, v.prot) for v in mm.vmas] == [(buf, buf + 16 * P, "rw")]
    assert mm.vmas[0].anon_vma.vmas == [mm.vmas[0]]     # the right half is unlinked
    drv = sim.attach(_Pairs, mm)
    sim.do(mm.fork())
    # copy_page_range's start/end for the one COW mapping (was three, one per piece)
    assert drv.starts == [(buf, buf + 16 * P)]


def test_merge_needs_the_same_protection_and_keeps_the_rmap():
    sim, mm, buf = _process()
    sim.do(mm.mprotect(buf + 4 * P, 2 * P, "r"))
    sim.do(mm.mprotect(buf + 5 * P, P, "rw"))            # [4] stays read-only
    assert [v.prot for v in mm.vmas] == ["rw", "r", "rw"]
    assert (mm.vmas[2].start, mm.vmas[2].end) == (buf + 5 * P, buf + 16 * P)
    sim.do(mm.mprotect(buf + 4 * P, P, "rw"))
    assert len(mm.vmas) == 1
    # the pages of the merged-away pieces migrate through the merged VMA's reverse map
    old = pte_pfn(mm.pt.lookup((buf + 9 * P) // P))
    sim.do(sim.migrate(mm, buf + 9 * P, P))
    assert pte_pfn(mm.pt.lookup((buf + 9 * P) // P)) != old
    assert sim.do(mm.read(buf + 9 * P)) == 109
