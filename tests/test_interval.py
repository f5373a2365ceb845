"""Interval notifiers: the sequence protocol, deferral, waiting; and a hypothesis property test
of the pairing and sequence rules against a small pure-Python reference model."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from notifier_kit import Recorder, setup

from smmu.base.constants import EAGAIN
from smmu.base.errors import InvalidArgument
from smmu.notifier import (MMUIntervalNotifier, mmu_interval_check_retry,
                           mmu_interval_notifier_insert, mmu_interval_notifier_remove,
                           mmu_interval_read_begin, mmu_interval_read_retry, mmu_interval_set_seq)
from smmu.notifier import Event, Range


class Mirror(MMUIntervalNotifier):
    def __init__(self, name="mirror", refuse_nonblock=False, set_seq=True):
        super().__init__(name=name)
        self.calls = []
        self.refuse_nonblock = refuse_nonblock
        self.do_set_seq = set_seq

    def invalidate(self, range, cur_seq):
        self.calls.append((range.start, range.end, cur_seq))
        if self.refuse_nonblock and not range.blockable:
            return False
        if self.do_set_seq:
            mmu_interval_set_seq(self, cur_seq)
        return True


def test_insert_rejects_empty_and_overflow():
    sim, mm, subs = setup()
    with pytest.raises(InvalidArgument, match="EOVERFLOW"):
        sim.do(mmu_interval_notifier_insert(Mirror(), mm, 0x1000, 0))
    with pytest.raises(InvalidArgument, match="EOVERFLOW"):
        sim.do(mmu_interval_notifier_insert(Mirror(), mm, 2**64 - 0x1000, 0x2000))
    assert subs.itree == []


def test_seq_is_odd_while_invalidating_and_read_retry_sees_it():
    sim, mm, subs = setup()
    m = Mirror()
    sim.do(mmu_interval_notifier_insert(m, mm, 0x1000, 0x2000))
    seq = sim.do(mmu_interval_read_begin(m))
    assert not mmu_interval_read_retry(m, seq)
    r = Range(mm, 0x2000, 0x3000, Event.CLEAR)
    sim.do(subs.mmu_notifier_invalidate_range_start(r))
    assert subs.invalidate_seq % 2 == 1
    assert mmu_interval_read_retry(m, seq) and mmu_interval_check_retry(m, seq)
    sim.do(subs.mmu_notifier_invalidate_range_end(r))
    assert subs.invalidate_seq % 2 == 0
    assert m.calls == [(0x2000, 0x3000, subs.invalidate_seq - 1)]


def test_non_overlapping_range_leaves_seq_even():
    sim, mm, subs = setup()
    m = Mirror()
    sim.do(mmu_interval_notifier_insert(m, mm, 0x1000, 0x1000))
    r = Range(mm, 0x5000, 0x6000)
    sim.do(subs.mmu_notifier_invalidate_range_start(r))
    assert subs.invalidate_seq % 2 == 0 and m.calls == []
    sim.do(subs.mmu_notifier_invalidate_range_end(r))


def test_read_begin_waits_while_its_interval_is_invalidated():
    sim, mm, subs = setup("modern", schedule="round_robin")
    m = Mirror()
    sim.do(mmu_interval_notifier_insert(m, mm, 0, 0x4000))
    order = []
    r = Range(mm, 0, 0x1000)

    def cpu():
        yield from subs.mmu_notifier_invalidate_range_start(r)
        order.append("started")
        yield
        yield
        order.append("ending")
        yield from subs.mmu_notifier_invalidate_range_end(r)

    def dev():
        yield
        seq = yield from mmu_interval_read_begin(m)
        order.append(("read_begin", seq))

    sim.spawn("cpu", cpu())
    sim.spawn("dev", dev())
    assert sim.run().ok
    assert order.index("ending") < next(i for i, x in enumerate(order) if x[0] == "read_begin")
    assert order[-1][1] % 2 == 1 and order[-1][1] != subs.invalidate_seq


def test_insert_during_invalidation_is_deferred_and_starts_invalidated():
    sim, mm, subs = setup()
    a = Mirror("a")
    sim.do(mmu_interval_notifier_insert(a, mm, 0, 0x1000))
    r = Range(mm, 0, 0x1000)
    sim.do(subs.mmu_notifier_invalidate_range_start(r))
    b = Mirror("b")
    sim.do(mmu_interval_notifier_insert(b, mm, 0, 0x1000))
    assert b not in subs.itree and b.invalidate_seq == subs.invalidate_seq
    sim.do(subs.mmu_notifier_invalidate_range_end(r))
    assert b in subs.itree and b.calls == []


def test_remove_waits_for_invalidation_in_flight():
    sim, mm, subs = setup("modern", schedule="round_robin")
    m = Mirror()
    sim.do(mmu_interval_notifier_insert(m, mm, 0, 0x1000))
    r = Range(mm, 0, 0x1000)
    order = []

    def cpu():
        yield from subs.mmu_notifier_invalidate_range_start(r)
        yield
        yield
        order.append("end")
        yield from subs.mmu_notifier_invalidate_range_end(r)

    def remover():
        yield
        yield from mmu_interval_notifier_remove(m)
        order.append("removed")

    sim.spawn("cpu", cpu())
    sim.spawn("rm", remover())
    assert sim.run().ok
    assert order == ["end", "removed"] and m not in subs.itree


def test_nonblock_refusal_returns_eagain_and_keeps_seq_balanced():
    sim, mm, subs = setup()
    m = Mirror(refuse_nonblock=True)
    other = Recorder(sim, mm)
    sim.do(subs.register(other))
    sim.do(mmu_interval_notifier_insert(m, mm, 0, 0x1000))
    r = Range(mm, 0, 0x1000, blockable=False)
    assert sim.do(subs.mmu_notifier_invalidate_range_start_nonblock(r)) == -EAGAIN
    assert subs.active_invalidate_ranges == 0 and subs.invalidate_seq % 2 == 0
    assert other.log == []         # hlist starts are not called after an itree refusal
    assert not sim.observer.open_ranges(mm)


def test_refusing_a_blockable_range_is_bad_return():
    sim, mm, subs = setup()
    m = Mirror()
    m.invalidate = lambda range, cur_seq: False
    sim.do(mmu_interval_notifier_insert(m, mm, 0, 0x1000))
    r = Range(mm, 0, 0x1000)
    sim.do(subs.mmu_notifier_invalidate_range_start(r))
    sim.do(subs.mmu_notifier_invalidate_range_end(r))
    assert [v.kind for v in sim.violations] == ["BadReturn"]


def test_release_sends_release_range_to_intervals():
    sim, mm, subs = setup()
    m = Mirror()
    sim.do(mmu_interval_notifier_insert(m, mm, 0x1000, 0x1000))
    sim.do(subs.mmu_notifier_release())
    assert len(m.calls) == 1 and m.calls[0][0] == 0
    assert subs.invalidate_seq % 2 == 0


# ------------------------------------------------------------------ property test vs a model

class Model:
    """The rules of mm/mmu_notifier.c in a dozen lines."""

    def __init__(self):
        self.seq = 2
        self.active = 0
        self.itree = {}          # name -> (start, end)
        self.deferred = []
        self.sub_seq = {}
        self.open = []
        self.starts = {}         # hlist subscriber -> starts seen
        self.ends = {}
        self.has_itree = False

    def overlapping(self, a, b):
        return [n for n, (s, e) in self.itree.items() if s < b and a < e]

    def start(self, a, b):
        if self.has_itree:
            self.active += 1
        hit = self.overlapping(a, b)
        if hit:
            self.seq |= 1
        for n in hit:
            self.sub_seq[n] = self.seq
        self.open.append((a, b))
        for k in self.starts:
            self.starts[k] += 1

    def end(self, i):
        self.open.pop(i)
        for k in self.ends:
            self.ends[k] += 1
        if not self.has_itree:
            return
        self.active -= 1
        if self.active or not self.seq & 1:
            return
        self.seq += 1
        for n, rng, op in self.deferred:
            if op == "insert":
                self.itree[n] = rng
            else:
                self.itree.pop(n, None)
        self.deferred.clear()

    def insert(self, n, a, b):
        self.has_itree = True
        if self.active:
            if self.seq & 1:
                self.deferred.append((n, (a, b), "insert"))
            else:
                self.seq |= 1
                self.itree[n] = (a, b)
            self.sub_seq[n] = self.seq
        else:
            self.sub_seq[n] = self.seq - 1
            self.itree[n] = (a, b)


ops = st.lists(st.one_of(
    st.tuples(st.just("start"), st.integers(0, 7), st.integers(1, 4)),
    st.tuples(st.just("end"), st.integers(0, 100)),
    st.tuples(st.just("insert"), st.integers(0, 7), st.integers(1, 4)),
    st.tuples(st.just("remove"), st.integers(0, 100)),
    st.tuples(st.just("register"),),
    st.tuples(st.just("read_begin"), st.integers(0, 100)),
), max_size=40)


@given(ops)
def test_pairing_and_sequence_rules_match_reference_model(program):
    P = 0x1000
    sim, mm, subs = setup()
    model = Model()
    mirrors = {}
    recorders = []
    open_ranges = []
    for op in program:
        kind = op[0]
        if kind == "start":
            a, b = op[1] * P, (op[1] + op[2]) * P
            r = Range(mm, a, b)
            sim.do(subs.mmu_notifier_invalidate_range_start(r))
            open_ranges.append(r)
            model.start(a, b)
        elif kind == "end" and open_ranges:
            i = op[1] % len(open_ranges)
            sim.do(subs.mmu_notifier_invalidate_range_end(open_ranges.pop(i)))
            model.end(i)
        elif kind == "insert" and (subs.has_itree or not open_ranges):
            name = f"m{len(mirrors)}"
            m = Mirror(name)
            mirrors[name] = m
            a, b = op[1] * P, (op[1] + op[2]) * P
            sim.do(mmu_interval_notifier_insert(m, mm, a, b - a))
            model.insert(name, a, b)
        elif kind == "remove" and mirrors and not subs.is_invalidating():
            live = sorted(n for n in model.itree)
            if live:
                name = live[op[1] % len(live)]
                sim.do(mmu_interval_notifier_remove(mirrors[name]))
                del model.itree[name]
        elif kind == "register" and not open_ranges:
            r = Recorder(sim, mm)
            sim.do(subs.register(r))
            recorders.append(r)
            model.starts[r] = 0
            model.ends[r] = 0
        elif kind == "read_begin" and model.itree:
            live = sorted(model.itree)
            name = live[op[1] % len(live)]
            would_wait = model.sub_seq[name] == model.seq
            if not would_wait:
                assert sim.do(mmu_interval_read_begin(mirrors[name])) == model.sub_seq[name]
            else:
                with pytest.raises(Exception, match="could not finish"):
                    sim.do(mmu_interval_read_begin(mirrors[name]))
        # compare the whole observable state
        assert subs.invalidate_seq == model.seq
        assert subs.active_invalidate_ranges == model.active
        assert sorted(m.name for m in subs.itree) == sorted(model.itree)
        for name, s in model.sub_seq.items():
            assert mirrors[name].invalidate_seq == s
        for r in recorders:
            assert sum(1 for x in r.log if x[0] == "start") == model.starts[r]
            assert sum(1 for x in r.log if x[0] == "end") == model.ends[r]
    for r in open_ranges:
        sim.do(subs.mmu_notifier_invalidate_range_end(r))
    sim.quiesce()
    assert [v for v in sim.violations if v.kind == "UnpairedRange"] == []
    assert subs.invalidate_seq % 2 == 0


# ------------------------------------------------------------------ MapInWindow for mirrors

def _mirror_driver(sim, mm):
    from smmu.notifier import MMUNotifier

    class MirrorDriver(MMUNotifier):
        pass

    drv = MirrorDriver(sim, mm)
    sim.do(mm.notifier_subscriptions.register(drv))
    isub = Mirror()
    isub.owner = drv
    sim.do(mmu_interval_notifier_insert(isub, mm, 0, 0x4000))
    return drv, isub


def test_mirror_mapping_inside_its_interval_window_is_map_in_window():
    sim, mm, subs = setup()
    drv, isub = _mirror_driver(sim, mm)
    r = Range(mm, 0x1000, 0x2000)
    sim.do(subs.mmu_notifier_invalidate_range_start(r))
    drv.note_map(0x1000, 7, True)          # skipped read_retry: maps while invalidating
    assert [v.kind for v in sim.violations] == ["MapInWindow"]


def test_mirror_mapping_outside_or_after_the_window_is_clean():   # the twin
    sim, mm, subs = setup()
    drv, isub = _mirror_driver(sim, mm)
    r = Range(mm, 0x1000, 0x2000)
    sim.do(subs.mmu_notifier_invalidate_range_start(r))
    drv.note_map(0x3000, 7, True)          # inside the interval, outside the range
    sim.do(subs.mmu_notifier_invalidate_range_end(r))
    drv.note_map(0x1000, 8, True)          # after the last end: what read_retry allows
    assert sim.violations == []
