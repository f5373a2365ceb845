"""Smaller per-era differences of issue 9, item 7, each as the kernels had it (options and
kernel presets in docs/kernels.md): munmap/brk/mremap downgrading mmap_lock before the zap
(4.20+), mprotect's notifier span (2.6.27 / 3.15 / 6.12), page_mkclean's start/end without a
change (modern) and 2.6.27's try_to_unmap stopping at SWAP_FAIL. Each with the other era as
its twin."""

import pytest

from smmu import PAGE_SIZE, MMUNotifier, Simulator
from smmu.base.pte import PTE_PRESENT, PTE_SWAP, PTE_WRITE

P = PAGE_SIZE
G = 1 << 30
M2 = 1 << 21


class _Log(MMUNotifier):
    def __init__(self, sim, mm):
        super().__init__(sim, mm)
        self.log = []

    def invalidate_range_start(self, r):
        self.log.append(("start", r.start, r.end))

    def invalidate_range_end(self, r):
        self.log.append(("end", r.start, r.end))

    def invalidate_page(self, mm, address):
        self.log.append(("page", address))


# ----------------------------------------------------------------------------- munmap downgrade

class _SlowStart(MMUNotifier):
    """Its start of the munmap sleeps until the other CPU's fault is done (or gives up)."""

    def __init__(self, sim, mm, order):
        super().__init__(sim, mm)
        self.order = order
        self.wq = sim.waitqueue("fault done")

    def invalidate_range_start(self, r):
        self.order.append("zap starts")
        for _ in range(6):              # sleeps a while (the device flush), then goes on
            if "fault done" in self.order:
                break
            yield self.sim.sleep(1000)

    def invalidate_range_end(self, r):
        self.order.append("zap ends")


@pytest.mark.parametrize("downgrade", [True, False])
def test_munmap_downgrades_mmap_lock_so_faults_elsewhere_run_during_the_zap(downgrade):
    """4.20+ (dd2283f2605e): munmap detaches the VMAs under the write lock, then downgrades
    to read for the zap, so a fault on another mapping completes while the zap's hooks
    sleep; before (the twin), the fault waits for the whole munmap."""
    sim = Simulator(notifier_api="modern", munmap_downgrade=downgrade,
                    schedule="round_robin")
    mm = sim.new_process("p")
    a = sim.do(mm.mmap(P, populate=True))
    b = sim.do(mm.mmap(P))
    order = []
    sim.attach(_SlowStart, mm, order=order)

    def unmapper():
        yield from mm.munmap(a, P)
        order.append("munmap returns")

    def faulter():
        yield mm.memory.sched.sleep(0)
        while "zap starts" not in order:
            yield
        yield from mm.write(b, 7)       # a fault: mmap_lock for read
        order.append("fault done")

    sim.spawn("munmap", unmapper())
    sim.spawn("fault", faulter())
    assert sim.run().ok
    if downgrade:
        assert order.index("fault done") < order.index("zap ends"), order
    else:
        assert order.index("fault done") > order.index("munmap returns"), order
    assert sim.do(mm.read(b)) == 7 and mm.vma_at(a) is None


def test_brk_and_mremap_shrink_downgrade_too_and_unlock_cleanly():
    sim = Simulator(notifier_api="modern")
    mm = sim.new_process("p")
    top = sim.do(mm.brk(mm.brk_start + 4 * P))
    sim.do(mm.write(mm.brk_start, 1))
    assert sim.do(mm.brk(mm.brk_start + P)) == mm.brk_start + P
    a = sim.do(mm.mmap(4 * P, populate=True))
    assert sim.do(mm.mremap(a, 4 * P, P)) == a
    assert not mm.mmap_lock.is_locked() and top == mm.brk_start + 4 * P
    assert mm.vma_at(a + P) is None and sim.do(mm.read(a)) == 0


# ----------------------------------------------------------------------------- mprotect spans

def _mprotect_spans(mode):
    sim = Simulator(notifier_api="modern", mprotect_notify=mode)
    mm = sim.new_process("p")
    base = sim.do(mm.mmap(2 * G))
    assert base % G == 0
    sim.do(mm.write(base + G + 2 * M2 + 3 * P, 5))     # one page, in the second PUD span
    rec = sim.attach(_Log, mm)
    sim.do(mm.mprotect(base, 2 * G, "r"))
    assert not mm.lookup_pte(base + G + 2 * M2 + 3 * P) & PTE_WRITE
    return base, rec.log


def test_mprotect_notifies_per_pud_span_from_the_first_populated_pmd():
    """3.15..6.11 change_pmd_range (a5338093bfb4): "invoke the mmu notifier if the pmd is
    populated": no pair for the empty first GiB, one from the populated PMD to the span's
    end for the second."""
    base, log = _mprotect_spans("change_pmd_range")
    s = base + G + 2 * M2
    assert log == [("start", s, base + 2 * G), ("end", s, base + 2 * G)], log


@pytest.mark.parametrize("mode", ["change_protection", "change_pud_range"])
def test_twin_mprotect_spans_of_the_other_eras(mode):
    """2.6.27..3.14: one pair over the VMA's range; 6.12: per P4D span from the first
    populated PUD (here the second GiB)."""
    base, log = _mprotect_spans(mode)
    s = base if mode == "change_protection" else base + G
    assert log == [("start", s, base + 2 * G), ("end", s, base + 2 * G)], log


# ----------------------------------------------------------------------------- page_mkclean

@pytest.mark.parametrize("api", ["v2008", "modern"])
def test_page_mkclean_notifies_the_folio_even_when_no_pte_changes_in_modern(api):
    """6.6 page_vma_mkclean_one issues start/end over the folio's extent before the walk and
    only a dirty or writable PTE changes; 2.6.27 page_mkclean_one (the twin) calls
    invalidate_page only for a PTE it changes."""
    sim = Simulator(notifier_api=api)
    f = sim.new_file("f", 1, fill=3)
    mm = sim.new_process("p")
    a = sim.do(mm.mmap(P, shared=True, file=f))
    other = sim.new_process("q")
    b = sim.do(other.mmap(P, shared=True, file=f))
    sim.do(other.write(b, 4))                       # dirties the page through q
    assert sim.do(mm.read(a)) == 4                  # p maps it clean and read-only
    before = mm.lookup_pte(a)
    rec = sim.attach(_Log, mm)
    flushed = []
    if api == "modern":
        class Iotlb(MMUNotifier):
            apis = ("modern",)

            def arch_invalidate_secondary_tlbs(self, mm_, start, end):
                flushed.append((start, end))
        sim.attach(Iotlb, mm)
    assert sim.do(sim.writeback(f)) == 1
    assert mm.lookup_pte(a) == before and flushed == []   # nothing cleaned, nothing flushed
    assert rec.log == ([] if api == "v2008" else [("start", a, a + P), ("end", a, a + P)])
    assert sim.run().ok


# ----------------------------------------------------------------------------- 2.6.27 SWAP_FAIL

class _YoungOnSecondAsk(MMUNotifier):
    """Reports the page young the second time reclaim asks (in try_to_unmap_one, after
    page_referenced found it old)."""

    def __init__(self, sim, mm):
        super().__init__(sim, mm)
        self.asked = 0

    def clear_flush_young(self, mm, start, end):
        self.asked += 1
        return self.asked == 2


@pytest.mark.parametrize("api", ["v2008", "modern"])
def test_2_6_27_try_to_unmap_stops_at_swap_fail(api):
    """2.6.27 try_to_unmap_one returns SWAP_FAIL for a page found young
    (ptep_clear_flush_young_notify) and try_to_unmap_anon breaks: the mappings after it are
    left as they are. Modern try_to_unmap_one checks no young bit (the twin): every mapping
    is unmapped."""
    sim = Simulator(notifier_api=api)
    mm = sim.new_process("p")
    a = sim.do(mm.mmap(P))
    sim.do(mm.write(a, 9))
    child = sim.do(mm.fork())                       # the page is mapped twice
    sim.attach(_YoungOnSecondAsk, mm)
    for m in (mm, child):
        m.pt.set(a >> 12, m.lookup_pte(a) & ~4)      # both PTEs old (clear the A bit)
    sim.do(sim.reclaim(mm, a, P, force=False))
    parent, kid = mm.lookup_pte(a), child.lookup_pte(a)
    if api == "v2008":
        assert parent & PTE_PRESENT and kid & PTE_PRESENT, (hex(parent), hex(kid))
    else:
        assert parent & PTE_SWAP and kid & PTE_SWAP, (hex(parent), hex(kid))
    assert sim.do(mm.read(a)) == 9 and sim.do(child.read(a)) == 9
    assert sim.memory.check_invariants() == []
