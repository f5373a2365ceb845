"""The OOM reaper as mm/oom_kill.c has it: private anonymous and private file mappings are
reaped (``vma_is_anonymous || !VM_SHARED``), ``mmap_read_trylock``, up to
``MAX_OOM_REAP_RETRIES`` attempts ``HZ/10`` apart, and per era what it does with the
notifiers (4.19+ non-blockable ranges, 4.16 blockable check, 4.15 skip, 4.6..4.14 none)."""

import pytest

import drivers
from primary_mm.oom import MAX_OOM_REAP_RETRIES, OOM_REAP_RETRY_NS
from smmu import MMUNotifier, PAGE_SIZE, Simulator
from smmu.base.errors import UsageError

P = PAGE_SIZE


class Rec(MMUNotifier):
    """Records ranges; refuses the first ``refuse`` non-blockable starts (-EAGAIN)."""

    def __init__(self, sim, mm, refuse=0):
        super().__init__(sim, mm)
        self.refuse = refuse
        self.log = []

    def invalidate_range_start(self, range):
        self.log.append(("start", range.start, range.end, range.event.name, range.blockable))
        if not range.blockable and self.refuse:
            self.refuse -= 1
            return -11
        return 0


def victim(sim):
    """Private anonymous, private file (with a COW copy) and shared file mappings."""
    mm = sim.new_process("victim")
    anon = sim.do(mm.mmap(2 * P))
    sim.do(mm.write(anon, 1))
    f = sim.new_file("lib", 2, fill=lambda i: 50 + i)
    priv = sim.do(mm.mmap(2 * P, file=f))
    sim.do(mm.write(priv, 2))                              # a private COW copy
    shared = sim.do(mm.mmap(2 * P, shared=True, file=f))
    sim.do(mm.write(shared + P, 3))
    return mm, anon, priv, shared


def test_private_anonymous_and_private_file_mappings_are_reaped_shared_ones_not():
    sim = Simulator()
    mm, anon, priv, shared = victim(sim)
    rec = sim.attach(Rec, mm)
    assert sim.do(sim.oom_reap(mm)) == []
    assert [(s, e) for _k, s, e, *_ in rec.log] == [(anon, anon + 2 * P), (priv, priv + 2 * P)]
    assert {e[3] for e in rec.log} == {"UNMAP"} and not any(e[4] for e in rec.log)
    assert mm.lookup_pte(anon) == 0 and mm.lookup_pte(priv) == 0   # the COW copy is gone
    assert mm.lookup_pte(shared + P) != 0 and mm.oom_unstable and mm.oom_reaped
    assert not sim.memory.check_invariants()


def test_a_refused_range_is_retried_until_it_is_reaped():
    sim = Simulator()
    mm, anon, priv, _shared = victim(sim)
    rec = sim.attach(Rec, mm, refuse=3)        # attempt 1: both VMAs, attempt 2: the first
    assert sim.do(sim.oom_reap(mm)) == []
    assert sim.stats["oom_reap_attempts"] == 3             # refusals, then reaped
    starts = [e for e in rec.log if e[1] == anon]
    assert len(starts) == 3 and mm.lookup_pte(anon) == 0


def test_a_refusal_that_lasts_gives_up_after_max_retries():
    sim = Simulator()
    mm, anon, _priv, _shared = victim(sim)
    sim.attach(Rec, mm, refuse=10 ** 6)
    skipped = sim.do(sim.oom_reap(mm))
    assert skipped and skipped[0][0] == anon
    assert sim.stats["oom_reap_attempts"] == MAX_OOM_REAP_RETRIES
    assert mm.lookup_pte(anon) != 0 and mm.oom_reaped      # MMF_OOM_SKIP all the same


def run_reaper_against_a_writer(hold_ns):
    """A task holds mmap_lock for write for ``hold_ns`` while the reaper starts."""
    sim = Simulator(schedule="timed")            # earliest simulated clock first
    mm, anon, _priv, _shared = victim(sim)
    held = sim.completion("held")
    box = {}

    def writer():
        yield mm.mmap_lock.write()
        held.complete_all()
        yield sim.sleep(hold_ns)
        mm.mmap_lock.up_write()

    def reaper():
        yield held.wait()
        box["skipped"] = yield from sim.oom_reap(mm)

    sim.spawn("writer", writer())
    sim.spawn("reaper", reaper())
    sim.run()
    return sim, mm, anon, box["skipped"]


def test_mmap_read_trylock_fails_while_a_writer_holds_the_lock():
    sim, mm, anon, skipped = run_reaper_against_a_writer(3.5 * OOM_REAP_RETRY_NS)
    assert skipped == [] and sim.stats["oom_reap_trylock_failed"] == 4
    assert mm.lookup_pte(anon) == 0                        # the fifth attempt reaped it
    sim, mm, anon, skipped = run_reaper_against_a_writer(100 * OOM_REAP_RETRY_NS)
    assert skipped is None
    assert sim.stats["oom_reap_trylock_failed"] == MAX_OOM_REAP_RETRIES
    assert mm.lookup_pte(anon) != 0


def test_eras_skip_or_ignore_the_notifiers():
    # 4.15: an mm with a notifier is not reaped
    sim = Simulator(oom_reaper="skip_notifiers")
    mm, anon, _p, _s = victim(sim)
    rec = sim.attach(Rec, mm)
    assert sim.do(sim.oom_reap(mm)) == [] and rec.log == [] and mm.lookup_pte(anon) != 0
    # 4.16..4.18: only a notifier whose callbacks may block keeps the reaper away
    sim = Simulator(oom_reaper="blockable_check", notifier_api="range_only")
    mm, anon, _p, _s = victim(sim)
    rec = sim.attach(Rec, mm)
    assert sim.do(sim.oom_reap(mm)) == [] and mm.lookup_pte(anon) == 0
    assert rec.log and all(e[4] for e in rec.log)          # ordinary (blockable) ranges
    sim = Simulator(oom_reaper="blockable_check", notifier_api="range_only")
    mm, anon, _p, _s = victim(sim)
    sim.attach(drivers.XPMEM, mm)
    assert sim.do(sim.oom_reap(mm)) == [] and mm.lookup_pte(anon) != 0
    # 4.6..4.14: no notifier at all, in any generation
    sim = Simulator(oom_reaper="no_notifier", notifier_api="v2008")
    mm, anon, _p, _s = victim(sim)
    rec = sim.attach(Rec, mm)
    assert sim.do(sim.oom_reap(mm)) == [] and rec.log == [] and mm.lookup_pte(anon) == 0


@pytest.mark.parametrize("mode, caught", [("no_notifier", True), ("nonblock", False)])
def test_the_pre_4_15_reaper_frees_pages_under_a_reference_driver(mode, caught):
    """The bug 4d4bbd8526a8 fixed: the reaper unmapped the victim's memory without telling
    the secondary MMUs, so KVM's SPTEs outlived the pages: a device access after the reap
    reaches a freed frame. The 4.19+ reaper's UNMAP range zaps them first."""
    sim = Simulator(oom_reaper=mode, schedule="round_robin")
    mm = sim.new_process("victim")
    buf = sim.do(mm.mmap(2 * P))
    sim.do(mm.write(buf, 7))
    kvm = sim.attach(drivers.KVM, mm)
    sim.do(kvm.access(buf, write=False))
    sim.do(sim.oom_reap(mm))
    sim.spawn("dev0", kvm.access(buf, write=False))
    kinds = {v.kind for v in sim.run().violations}
    assert bool(kinds & {"UseAfterFree", "StaleMapping"}) is caught, kinds


def test_bad_reaper_options_are_usage_errors():
    with pytest.raises(UsageError):
        Simulator(oom_reaper="gentle")
    sim = Simulator(notifier_api="v2008")
    mm = sim.new_process()
    with pytest.raises(UsageError, match="no_notifier"):
        sim.do(sim.oom_reap(mm))
