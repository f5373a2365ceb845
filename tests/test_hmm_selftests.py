"""The kernel's HMM selftests (``tools/testing/selftests/mm/hmm-tests.c``, 6.8), ported to
smmu and run against :class:`drivers.HMM_MIRROR` (dmirror, ``lib/test_hmm.c``).

One test per ``TEST_F`` the emulation can express, each asserting what the kernel test
asserts: the ioctl's return value, ``cpages``, ``faults``, the values the device read or the
CPU sees afterwards, and the snapshot's ``HMM_DMIRROR_PROT_*`` codes. The device-private
variants (``hmm_device_private``, ``hmm2_device_private``) are the ones ported; the
device-coherent variants need SPM memory (``spm_addr_dev0``) and are skipped by the kernel
too when it is absent.

Translation: a page holds one 64-bit value in smmu, so ``ptr[i] = i`` over a buffer becomes
page ``p`` holding ``p`` (``-i`` becomes ``-p`` modulo 2**64, ``i + c`` becomes ``p + c``);
``HMM_BUFFER_SIZE`` is 1024 pages as in the kernel; a child process of ``fork()`` is the
``mm`` fork returns, and it opens its own mirror as ``hmm_open(0)`` does. Every test also
runs the coherence oracle: it must report nothing.

Not expressible (hence not here): ``anon_write_hugetlbfs`` and ``compound`` (hugetlbfs),
``mixedmap`` (an mmap of the dmirror file itself, ``vm_insert_page``: smmu has no driver
mmap). ``hmm_gup_test`` uses smmu's own
``get_user_pages`` / ``pin_user_pages`` in place of the ``gup_test`` module.
"""

from __future__ import annotations

import pytest

import drivers
from drivers.hmm_mirror import (HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL, HMM_DMIRROR_PROT_ERROR,
                                HMM_DMIRROR_PROT_NONE, HMM_DMIRROR_PROT_READ,
                                HMM_DMIRROR_PROT_WRITE, HMM_DMIRROR_PROT_ZERO)
from smmu import PAGE_SIZE, Simulator
from smmu.base.constants import EFAULT, EINVAL, ENOENT, EPERM
from smmu.runtime.schedules import RandomSchedule

P = PAGE_SIZE
NPAGES = (1024 << 12) // PAGE_SIZE       # HMM_BUFFER_SIZE
NTIMES = 10
M64 = (1 << 64) - 1


def neg(p):
    return (-p) & M64


class Hmm:
    """FIXTURE(hmm) / FIXTURE(hmm2): a process and one (or two) dmirror devices."""

    def __init__(self, ndev=1, **sim_options):
        self.sim = Simulator(notifier_api="modern", nframes=8192, **sim_options)
        self.mm = self.sim.new_process("hmm-tests")
        self.devs = [self.sim.attach(drivers.HMM_MIRROR, self.mm) for _ in range(ndev)]
        self.dev = self.devs[0]

    def do(self, gen):
        return self.sim.do(gen)

    def mmap(self, npages, prot="rw", shared=False, **kw):
        return self.do(self.mm.mmap(npages * P, prot=prot, shared=shared, **kw))

    def fill(self, buf, npages, f=lambda p: p, mm=None, first=0):
        mm = mm or self.mm

        def g():
            for p in range(first, npages):
                yield from mm.write(buf + p * P, f(p) & M64)
        self.do(g())

    def values(self, buf, npages, mm=None):
        mm = mm or self.mm

        def g():
            out = []
            for p in range(npages):
                out.append((yield from mm.read(buf + p * P)))
            return out
        return self.do(g())

    def clean(self):
        """The oracle found nothing and the MM's books balance."""
        assert self.sim.violations == [], self.sim.violations[:3]
        assert self.sim.memory.check_invariants() == []


@pytest.fixture
def hmm():
    h = Hmm()
    yield h
    h.clean()


@pytest.fixture
def hmm2():
    h = Hmm(ndev=2)
    yield h
    h.clean()


def test_open_close(hmm):
    """The fixture's open (an interval notifier over the whole address space) and close
    (``dmirror_fops_release``: the notifier is removed)."""
    hmm.do(hmm.dev.bind())          # the insert dmirror_fops_open makes (smmu binds lazily)
    assert hmm.dev.notifier._inserted and hmm.dev.notifier.start == 0
    hmm.sim.detach(hmm.dev)
    assert not hmm.dev.notifier._inserted


def test_anon_read(hmm):
    buf = hmm.mmap(NPAGES)
    hmm.fill(buf, NPAGES, first=2)            # the first two pages stay zero
    hmm.do(hmm.mm.mprotect(buf, NPAGES * P, "r"))
    assert hmm.do(hmm.mm.read(buf + P)) == 0  # a special zero page in the CPU table
    cmd = hmm.do(hmm.dev.dmirror_read(buf, NPAGES))
    assert cmd.ret == 0 and cmd.cpages == NPAGES and cmd.faults == 1
    assert cmd.data == [0, 0] + list(range(2, NPAGES))


def test_anon_read_prot(hmm):
    buf = hmm.mmap(NPAGES)
    hmm.fill(buf, NPAGES)
    hmm.do(hmm.mm.mprotect(buf, NPAGES * P, "none"))
    cmd = hmm.do(hmm.dev.dmirror_read(buf, NPAGES))
    assert cmd.ret == -EFAULT
    assert cmd.data == []                      # the mirror buffer was not written
    hmm.do(hmm.mm.mprotect(buf, NPAGES * P, "r"))
    assert hmm.values(buf, NPAGES) == list(range(NPAGES))


def test_anon_write(hmm):
    buf = hmm.mmap(NPAGES)
    cmd = hmm.do(hmm.dev.dmirror_write(buf, NPAGES, list(range(NPAGES))))
    assert cmd.ret == 0 and cmd.cpages == NPAGES and cmd.faults == 1
    assert hmm.values(buf, NPAGES) == list(range(NPAGES))


def test_anon_write_prot(hmm):
    buf = hmm.mmap(NPAGES, prot="r")
    cmd = hmm.do(hmm.dev.dmirror_read(buf, 1))           # reads a zero page
    assert cmd.ret == 0 and cmd.cpages == 1 and cmd.faults == 1
    cmd = hmm.do(hmm.dev.dmirror_write(buf, NPAGES, list(range(NPAGES))))
    assert cmd.ret == -EPERM
    assert hmm.values(buf, NPAGES) == [0] * NPAGES
    hmm.do(hmm.mm.mprotect(buf, NPAGES * P, "rw"))       # now the zero page is replaced
    cmd = hmm.do(hmm.dev.dmirror_write(buf, NPAGES, list(range(NPAGES))))
    assert cmd.ret == 0 and cmd.cpages == NPAGES and cmd.faults == 1
    assert hmm.values(buf, NPAGES) == list(range(NPAGES))


@pytest.mark.parametrize("shared", [False, True], ids=["anon_write_child",
                                                       "anon_write_child_shared"])
def test_anon_write_child(hmm, shared):
    """anon_write_child: the child's device write copies on write, the parent keeps its
    values; anon_write_child_shared: MAP_SHARED, no COW, the parent sees the write."""
    buf = hmm.mmap(NPAGES, shared=shared)
    hmm.fill(buf, NPAGES)
    child = hmm.do(hmm.mm.fork())
    assert hmm.values(buf, NPAGES, child) == list(range(NPAGES))
    child_dev = hmm.sim.attach(drivers.HMM_MIRROR, child)       # hmm_open(0) in the child
    cmd = hmm.do(child_dev.dmirror_write(buf, NPAGES, [neg(p) for p in range(NPAGES)]))
    assert cmd.ret == 0 and cmd.cpages == NPAGES and cmd.faults == 1
    assert hmm.values(buf, NPAGES, child) == [neg(p) for p in range(NPAGES)]
    hmm.do(child.exit())
    want = [neg(p) for p in range(NPAGES)] if shared else list(range(NPAGES))
    assert hmm.values(buf, NPAGES) == want


def test_anon_write_huge(hmm):
    """A 2 MiB-aligned window of a 4 MiB mapping given MADV_HUGEPAGE, written by the device:
    its fault (hmm_range_fault, HMM_PFN_REQ_WRITE) maps one transparent huge page."""
    twomeg = 2 << 20
    buf = hmm.mmap(2 * twomeg // P)
    window = (buf + twomeg - 1) & ~(twomeg - 1)
    hmm.do(hmm.mm.madvise(window, twomeg, "hugepage"))       # ASSERT_EQ(ret, 0): raises if not
    npages = twomeg // P
    cmd = hmm.do(hmm.dev.dmirror_write(window, npages, list(range(npages))))
    assert cmd.ret == 0 and cmd.cpages == npages and cmd.faults == 1
    assert hmm.mm.pt.lookup_pmd(window // P)             # (smmu's own check: one huge PMD)
    assert hmm.values(window, npages) == list(range(npages))


def test_file_read(hmm):
    f = hmm.sim.new_file("hmm-file", NPAGES, fill=lambda p: p)    # pwrite(fd, i)
    buf = hmm.mmap(NPAGES, prot="r", shared=True, file=f)
    cmd = hmm.do(hmm.dev.dmirror_read(buf, NPAGES))
    assert cmd.ret == 0 and cmd.cpages == NPAGES and cmd.faults == 1
    assert cmd.data == list(range(NPAGES))


def test_file_write(hmm):
    f = hmm.sim.new_file("hmm-file", NPAGES)
    buf = hmm.mmap(NPAGES, shared=True, file=f)
    cmd = hmm.do(hmm.dev.dmirror_write(buf, NPAGES, list(range(NPAGES))))
    assert cmd.ret == 0 and cmd.cpages == NPAGES and cmd.faults == 1
    assert hmm.values(buf, NPAGES) == list(range(NPAGES))
    assert [f.value(p) for p in range(NPAGES)] == list(range(NPAGES))    # pread


def test_migrate(hmm):
    buf = hmm.mmap(NPAGES)
    hmm.fill(buf, NPAGES)
    cmd = hmm.do(hmm.dev.migrate_to_device(buf, NPAGES))
    assert cmd.ret == 0 and cmd.cpages == NPAGES
    assert cmd.data == list(range(NPAGES))


def test_migrate_fault(hmm):
    buf = hmm.mmap(NPAGES)
    hmm.fill(buf, NPAGES)
    cmd = hmm.do(hmm.dev.migrate_to_device(buf, NPAGES))
    assert cmd.ret == 0 and cmd.cpages == NPAGES and cmd.data == list(range(NPAGES))
    # fault half the pages back to system memory (migrate_to_ram) and check them
    assert hmm.values(buf, NPAGES // 2) == list(range(NPAGES // 2))
    cmd = hmm.do(hmm.dev.migrate_to_device(buf, NPAGES))      # the mix of both, again
    assert cmd.ret == 0 and cmd.cpages == NPAGES and cmd.data == list(range(NPAGES))


def test_migrate_release(hmm):
    buf = hmm.mmap(NPAGES)
    hmm.fill(buf, NPAGES)
    cmd = hmm.do(hmm.dev.migrate_to_device(buf, NPAGES))
    assert cmd.ret == 0 and cmd.cpages == NPAGES and cmd.data == list(range(NPAGES))
    assert hmm.do(hmm.dev.release_devmem()).ret == 0      # evict every device page
    assert hmm.dev.pgmap.live_pages() == []
    assert hmm.values(buf, NPAGES // 2) == list(range(NPAGES // 2))


def test_migrate_shared(hmm):
    buf = hmm.mmap(NPAGES, shared=True)
    cmd = hmm.do(hmm.dev.migrate_to_device(buf, NPAGES))
    assert cmd.ret == -ENOENT                  # shmem is not vma_is_anonymous: nothing moves


def test_migrate_mixed(hmm2):
    h = hmm2
    dev0, dev1 = h.devs
    buf = h.mmap(6, prot="none")
    assert h.do(dev1.migrate_to_device(buf, 6)).ret == -EINVAL    # a protected area
    h.do(h.mm.munmap(buf + P, P))                                 # punch a hole
    assert h.do(dev1.migrate_to_device(buf, 3)).ret == -EINVAL    # the vma has a hole
    h.do(h.mm.mprotect(buf + 2 * P, P, "r"))
    assert h.do(h.mm.read(buf + 2 * P)) + 3 == 3                  # page 2: read-only zero page
    h.do(h.mm.mprotect(buf + 3 * P, P, "rw"))
    h.do(h.mm.write(buf + 3 * P, 3))
    h.do(h.mm.mprotect(buf + 3 * P, P, "r"))                      # page 3: read-only
    h.do(h.mm.mprotect(buf + 4 * P, 2 * P, "rw"))                 # pages 4-5: read-write
    h.do(h.mm.write(buf + 4 * P, 3))
    h.do(h.mm.write(buf + 5 * P, 3))
    cmd = h.do(dev1.migrate_to_device(buf + 2 * P, 4))
    assert cmd.ret == 0 and cmd.cpages == 4
    # page 5 won't be migrated to device 0 because it's on device 1
    assert h.do(dev0.migrate_to_device(buf + 5 * P, 1)).ret == -ENOENT


def test_migrate_multiple(hmm):
    for _c in range(NTIMES):
        buf = hmm.mmap(NPAGES)
        hmm.fill(buf, NPAGES)
        cmd = hmm.do(hmm.dev.migrate_to_device(buf, NPAGES))
        assert cmd.ret == 0 and cmd.cpages == NPAGES and cmd.data == list(range(NPAGES))
        assert hmm.values(buf, NPAGES) == list(range(NPAGES))     # migrate_to_ram faults
        hmm.do(hmm.mm.munmap(buf, NPAGES * P))


def test_anon_read_multiple(hmm):
    for c in range(NTIMES):
        buf = hmm.mmap(NPAGES)
        hmm.fill(buf, NPAGES, lambda p, c=c: p + c)
        cmd = hmm.do(hmm.dev.dmirror_read(buf, NPAGES))
        assert cmd.ret == 0 and cmd.cpages == NPAGES and cmd.faults == 1
        assert cmd.data == [p + c for p in range(NPAGES)]
        hmm.do(hmm.mm.munmap(buf, NPAGES * P))


def test_anon_teardown():
    """A thread unmaps the second half while the device reads: any error is tolerated,
    a success must have read everything right. Each round delays the unmap a little
    more and runs under another seeded random schedule (the kernel's random delay): the
    early rounds see the unmap first (-EFAULT), the late ones read everything."""
    outcomes = set()
    for c in range(NTIMES):
        h = Hmm(schedule=RandomSchedule(), seed=c)
        buf = h.mmap(NPAGES)
        h.fill(buf, NPAGES, lambda p, c=c: p + c)

        def unmap(h=h, buf=buf, c=c):
            for _ in range(c * 8):
                yield
            yield from h.mm.munmap(buf + NPAGES // 2 * P, NPAGES // 2 * P)
        h.sim.spawn("unmap", unmap())
        reader = h.sim.spawn("dev", h.dev.dmirror_read(buf, NPAGES))
        res = h.sim.run()
        cmd = res.results["dev"] if "dev" in res.results else None
        assert reader.done
        if cmd is not None and cmd.ret == 0:
            assert cmd.cpages == NPAGES and cmd.faults == 1
            assert cmd.data == [p + c for p in range(NPAGES)]
        outcomes.add(cmd.ret if cmd is not None else "raised")
        h.clean()
    assert outcomes == {0, -EFAULT}


def test_snapshot(hmm2):
    h = hmm2
    dev0, dev1 = h.devs
    buf = h.mmap(7, prot="none")
    h.do(h.mm.munmap(buf + P, P))                                 # page 1: a hole
    h.do(h.mm.mprotect(buf + 2 * P, P, "r"))
    assert h.do(h.mm.read(buf + 2 * P)) + 3 == 3                  # page 2: zero page
    h.do(h.mm.mprotect(buf + 3 * P, P, "rw"))
    h.do(h.mm.write(buf + 3 * P, 3))
    h.do(h.mm.mprotect(buf + 3 * P, P, "r"))                      # page 3: read-only
    h.do(h.mm.mprotect(buf + 4 * P, 3 * P, "rw"))                 # pages 4-6: read-write
    h.do(h.mm.write(buf + 4 * P, 3))
    cmd = h.do(dev0.migrate_to_device(buf + 5 * P, 1))            # page 5 on device 0
    assert cmd.ret == 0 and cmd.cpages == 1
    cmd = h.do(dev1.migrate_to_device(buf + 6 * P, 1))            # page 6 on device 1
    assert cmd.ret == 0 and cmd.cpages == 1
    cmd = h.do(dev0.snapshot(buf, 7))
    assert cmd.ret == 0 and cmd.cpages == 7
    assert cmd.data == [HMM_DMIRROR_PROT_ERROR, HMM_DMIRROR_PROT_ERROR,
                        HMM_DMIRROR_PROT_ZERO | HMM_DMIRROR_PROT_READ,
                        HMM_DMIRROR_PROT_READ, HMM_DMIRROR_PROT_WRITE,
                        HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE,
                        HMM_DMIRROR_PROT_NONE]
    # nothing was faulted: page 6 is still on device 1
    assert h.do(dev1.snapshot(buf + 6 * P, 1)).data == [
        HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE]


def test_double_map(hmm2):
    h = hmm2
    dev0, dev1 = h.devs
    buf = h.mmap(6)
    h.fill(buf, 6)
    h.do(h.mm.mprotect(buf, 6 * P, "r"))
    for dev in (dev0, dev1):
        cmd = h.do(dev.dmirror_read(buf, 6))
        assert cmd.ret == 0 and cmd.cpages == 6 and cmd.faults == 1
        assert cmd.data == list(range(6))
    cmd = h.do(dev1.migrate_to_device(buf, 6))
    assert cmd.ret == 0 and cmd.cpages == 6
    cmd = h.do(dev0.dmirror_read(buf, 6))      # faults device 1's pages back
    assert cmd.ret == 0 and cmd.cpages == 6 and cmd.faults == 1
    assert cmd.data == list(range(6))


def test_exclusive(hmm):
    buf = hmm.mmap(NPAGES)
    hmm.fill(buf, NPAGES)
    cmd = hmm.do(hmm.dev.exclusive(buf, NPAGES))
    assert cmd.ret == 0 and cmd.cpages == NPAGES and cmd.data == list(range(NPAGES))

    def bump():                                 # ASSERT_EQ(ptr[i]++, i)
        for p in range(NPAGES):
            v = yield from hmm.mm.read(buf + p * P)
            assert v == p
            yield from hmm.mm.write(buf + p * P, v + 1)
    hmm.do(bump())
    assert hmm.values(buf, NPAGES) == [p + 1 for p in range(NPAGES)]
    assert hmm.do(hmm.dev.check_exclusive(buf, NPAGES)).ret == 0   # atomic access revoked


def test_exclusive_mprotect(hmm):
    buf = hmm.mmap(NPAGES)
    hmm.fill(buf, NPAGES)
    cmd = hmm.do(hmm.dev.exclusive(buf, NPAGES))
    assert cmd.ret == 0 and cmd.cpages == NPAGES and cmd.data == list(range(NPAGES))
    hmm.do(hmm.mm.mprotect(buf, NPAGES * P, "r"))
    cmd = hmm.do(hmm.dev.dmirror_write(buf, NPAGES, list(range(NPAGES))))
    assert cmd.ret == -EPERM


def test_exclusive_cow(hmm):
    buf = hmm.mmap(NPAGES)
    hmm.fill(buf, NPAGES)
    cmd = hmm.do(hmm.dev.exclusive(buf, NPAGES))
    assert cmd.ret == 0 and cmd.cpages == NPAGES
    child = hmm.do(hmm.mm.fork())               # both processes go on
    for mm in (hmm.mm, child):
        def bump(mm=mm):
            for p in range(NPAGES):
                v = yield from mm.read(buf + p * P)
                assert v == p
                yield from mm.write(buf + p * P, v + 1)
        hmm.do(bump())
        assert hmm.values(buf, NPAGES, mm) == [p + 1 for p in range(NPAGES)]


def test_hmm_gup_test(hmm):
    buf = hmm.mmap(4)
    hmm.fill(buf, 4)
    cmd = hmm.do(hmm.dev.migrate_to_device(buf, 4))
    assert cmd.ret == 0 and cmd.cpages == 4 and cmd.data == list(range(4))
    mm = hmm.mm
    # GUP_BASIC_TEST, GUP_FAST_BENCHMARK: FOLL_WRITE get_user_pages, then put_page
    for p in (0, 1):
        pfn = hmm.do(mm.get_user_pages(buf + p * P, write=True))
        hmm.do(mm.put_page(pfn))
    # PIN_FAST_BENCHMARK (FOLL_LONGTERM), PIN_LONGTERM_BENCHMARK: pin, then unpin
    for p in (2, 3):
        pfn = hmm.do(mm.pin_user_pages(buf + p * P, write=True, longterm=True))
        hmm.do(mm.unpin_user_page(pfn))
    cmd = hmm.do(hmm.dev.snapshot(buf, 4))
    assert cmd.ret == 0 and cmd.cpages == 4
    assert cmd.data == [HMM_DMIRROR_PROT_WRITE] * 4      # GUP migrated them back
    assert hmm.values(buf, 4) == list(range(4))


def test_hmm_cow_in_device(hmm):
    buf = hmm.mmap(4)
    hmm.fill(buf, 4)
    cmd = hmm.do(hmm.dev.migrate_to_device(buf, 4))
    assert cmd.ret == 0 and cmd.cpages == 4
    child = hmm.do(hmm.mm.fork())               # the child spins until killed
    hmm.fill(buf, 4)                            # migrate_to_ram first, then COW
    hmm.do(child.exit())                        # kill(pid, SIGTERM)
    cmd = hmm.do(hmm.dev.snapshot(buf, 4))
    assert cmd.ret == 0 and cmd.cpages == 4
    assert cmd.data == [HMM_DMIRROR_PROT_WRITE] * 4

