"""ShadowPageTable against a dict model with the same semantics, plus edges and errors."""

import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shared_kit import Recorder

import smmu.devices.shadow as shadow_mod
from smmu.base.constants import PAGE_SHIFT, PAGE_SIZE
from smmu.devices.shadow import ShadowPageTable

VPN_LIMIT = 1 << 36


class RefShadow:
    """Pure-Python reference: vpn -> [pfn, writable, young] in a dict."""

    def __init__(self, observer=None):
        self.spte = {}
        self.observer = observer
        self.hits = self.misses = 0

    @staticmethod
    def _check(ok, **args):
        if not ok:
            raise ValueError(f"out of range {args}")

    def map(self, vpn, pfn, writable):
        self._check(0 <= vpn < VPN_LIMIT and 0 <= pfn < 1 << 40, vpn=vpn, pfn=pfn)
        self.spte[vpn] = [pfn, bool(writable), True]
        if self.observer:
            self.observer.note_map(vpn << PAGE_SHIFT, pfn, bool(writable))

    def lookup(self, vpn):
        self._check(0 <= vpn < VPN_LIMIT, vpn=vpn)
        e = self.spte.get(vpn)
        return None if e is None else (e[0], e[1])

    def access(self, vpn, write=False):
        self._check(0 <= vpn < VPN_LIMIT, vpn=vpn)
        e = self.spte.get(vpn)
        if e is None or (write and not e[1]):
            self.misses += 1
            return -1
        e[2] = True
        self.hits += 1
        return e[0]

    def zap(self, vpn):
        self._check(0 <= vpn < VPN_LIMIT, vpn=vpn)
        if self.observer:
            self.observer.note_unmap_range(vpn << PAGE_SHIFT, (vpn + 1) << PAGE_SHIFT)
        return self.spte.pop(vpn, None) is not None

    def zap_range(self, vpn0, vpn1):
        self._check(0 <= vpn0 <= min(vpn1, VPN_LIMIT), vpn0=vpn0, vpn1=vpn1)
        gone = [v for v in self.spte if vpn0 <= v < vpn1]
        for v in gone:
            del self.spte[v]
        if self.observer:
            self.observer.note_unmap_range(vpn0 << PAGE_SHIFT,
                                           min(vpn1, VPN_LIMIT) << PAGE_SHIFT)
        return len(gone)

    def zap_all(self):
        n = len(self.spte)
        self.spte.clear()
        if self.observer:
            self.observer.note_unmap_range(0, VPN_LIMIT << PAGE_SHIFT)
        return n

    def age_range(self, vpn0, vpn1):
        self._check(0 <= vpn0 <= min(vpn1, VPN_LIMIT), vpn0=vpn0, vpn1=vpn1)
        n = 0
        for v, e in self.spte.items():
            if vpn0 <= v < vpn1 and e[2]:
                e[2] = False
                n += 1
        return n

    def test_young(self, vpn):
        self._check(0 <= vpn < VPN_LIMIT, vpn=vpn)
        e = self.spte.get(vpn)
        return e is not None and e[2]

    def entries(self):
        items = sorted(self.spte.items())
        return ([v for v, _ in items], [e[0] for _, e in items], [e[1] for _, e in items],
                [e[2] for _, e in items])

    def __len__(self):
        return len(self.spte)


@contextlib.contextmanager
def scratch_of(n):
    """Shrink zap_range's scratch buffers so that every zap resumes several times."""
    saved = shadow_mod._SCRATCH, shadow_mod._scratch_vpns, shadow_mod._scratch_ptes
    shadow_mod._SCRATCH = n
    shadow_mod._scratch_vpns = np.empty(n, dtype=np.int64)
    shadow_mod._scratch_ptes = np.empty(n, dtype=np.uint64)
    try:
        yield
    finally:
        shadow_mod._SCRATCH, shadow_mod._scratch_vpns, shadow_mod._scratch_ptes = saved


# pages near table boundaries (511/512, 2**18, 2**27) and the top of the address space
vpns = st.one_of(st.integers(0, 20), st.integers(505, 520),
                 st.sampled_from([1 << 18, (1 << 18) - 1, 1 << 27, (1 << 27) + 3,
                                  VPN_LIMIT - 1, VPN_LIMIT - 600]))
lengths = st.one_of(st.integers(0, 12), st.sampled_from([512, 1 << 20, 1 << 40]))
maps = st.tuples(st.just("map"), vpns, st.integers(0, 9), st.booleans())
ops = st.one_of(
    maps, maps, maps,
    st.tuples(st.just("map"), vpns, st.integers(0, (1 << 40) - 1), st.booleans()),
    st.one_of(st.tuples(st.just("lookup"), vpns), st.tuples(st.just("test_young"), vpns)),
    st.tuples(st.just("access"), vpns, st.booleans()),
    st.tuples(st.just("access"), vpns, st.booleans()),
    st.tuples(st.just("zap"), vpns),
    st.tuples(st.just("zap_range"), vpns, lengths),
    st.tuples(st.just("age_range"), vpns, lengths),
    st.tuples(st.just("zap_all")),
    st.one_of(   # out of range: both refuse and change nothing
        st.tuples(st.just("map"), st.sampled_from([-1, VPN_LIMIT]), st.just(1), st.booleans()),
        st.tuples(st.just("map"), vpns, st.just(1 << 40), st.booleans()),
        st.tuples(st.just("zap_range"), st.just(9), st.just(-2)),
    ),
)

def apply(t, op):
    name, *args = op
    if name in ("zap_range", "age_range"):
        args = [args[0], args[0] + args[1]]
    try:
        return ("ok", getattr(t, name)(*args))
    except ValueError:
        return ("error",)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=st.lists(ops, min_size=10, max_size=60), small_scratch=st.booleans(),
       observed=st.booleans())
def test_shadow_matches_reference(seq, small_scratch, observed):
    rec_fast, rec_ref = (Recorder(), Recorder()) if observed else (None, None)
    fast = ShadowPageTable(name="t", observer=rec_fast, capacity=2)
    ref = RefShadow(observer=rec_ref)
    with scratch_of(3) if small_scratch else contextlib.nullcontext():
        for op in seq:
            assert apply(fast, op) == apply(ref, op), op
            e = fast.entries()
            assert (e.vpn.tolist(), e.pfn.tolist(), e.writable.tolist(),
                    e.young.tolist()) == ref.entries()
            assert len(fast) == len(ref)
    assert (fast.hits, fast.misses) == (ref.hits, ref.misses)
    if observed:
        assert rec_fast.calls == rec_ref.calls


def random_ops(rng, n):
    """Seeded long sequences: reach what 80 short hypothesis runs rarely do (a zap resuming
    right before a present page, a read access re-marking an aged SPTE)."""
    hot = [0, 1, 2, 3, 4, 5, 6, 7, 510, 511, 512, 513, 1 << 27, VPN_LIMIT - 1]
    for _ in range(n):
        kind, vpn = rng.integers(8), hot[rng.integers(len(hot))]
        if kind <= 2:
            yield ("map", vpn, int(rng.integers(10)), bool(rng.integers(2)))
        elif kind <= 4:
            yield ("access", vpn, bool(rng.integers(2)))
        elif kind == 5:
            yield (("zap", vpn), ("test_young", vpn), ("lookup", vpn))[rng.integers(3)]
        elif kind == 6:
            yield ("age_range", vpn, int(rng.integers(600)))
        else:
            yield ("zap_range", vpn, int(rng.integers(600))) if rng.integers(20) else ("zap_all",)


@pytest.mark.parametrize("seed", range(4))
def test_long_random_sequences_match_reference(seed):
    fast, ref = ShadowPageTable(capacity=2), RefShadow()
    with scratch_of(2):
        for op in random_ops(np.random.default_rng(seed), 2500):
            assert apply(fast, op) == apply(ref, op), op
            assert len(fast) == len(ref)
    e = fast.entries()
    assert (e.vpn.tolist(), e.pfn.tolist(), e.writable.tolist(),
            e.young.tolist()) == ref.entries()


def test_map_lookup_zap_roundtrip():
    spt = ShadowPageTable(name="kvm.spt")
    spt.map(0x1234, 77, True)
    assert spt.lookup(0x1234) == (77, True) and spt.lookup(0x1235) is None
    spt.map(0x1234, 78, False)                       # replace in place
    assert spt.lookup(0x1234) == (78, False) and len(spt) == 1
    assert spt.zap(0x1234) is True and spt.zap(0x1234) is False
    assert len(spt) == 0 and spt.stats()["zapped"] == 1


def test_access_sets_young_and_respects_write_permission():
    spt = ShadowPageTable()
    spt.map(5, 50, False)
    assert spt.age_range(0, 10) == 1 and not spt.test_young(5)
    assert spt.access(5, write=True) == -1 and not spt.test_young(5)   # a protection fault
    assert spt.access(5) == 50 and spt.test_young(5)
    assert spt.age_range(0, 10) == 1 and spt.age_range(0, 10) == 0
    assert (spt.hits, spt.misses) == (1, 1)
    assert spt.lookup(5) == (50, False)              # lookup does not set young
    assert not spt.test_young(5)


def test_zap_range_spans_tables_and_resumes_past_scratch():
    spt = ShadowPageTable(capacity=2)
    pages = list(range(0, 3000, 1)) + [1 << 27, (1 << 27) + 1, VPN_LIMIT - 1]
    for v in pages:
        spt.map(v, v, v % 2 == 0)
    assert spt.tables > 8                              # the pool grew from 2 nodes
    with scratch_of(64):
        assert spt.zap_range(10, 1 << 60) == len(pages) - 10   # clipped end
    assert spt.entries().vpn.tolist() == list(range(10))
    assert spt.zap_all() == 10 and len(spt) == 0 and spt.tables == 1
    spt.map(3, 4, True)                                # usable after zap_all
    assert spt.lookup(3) == (4, True)


def test_observer_hears_map_and_one_unmap_per_zap_call():
    rec = Recorder()
    spt = ShadowPageTable(observer=rec)
    for v in range(8):
        spt.map(v, 100 + v, v == 0)
    rec.calls.clear()
    spt.zap_range(0, 8)
    spt.zap(9)
    spt.zap_all()
    assert rec.calls == [("unmap", 0, 8 * PAGE_SIZE),
                         ("unmap", 9 * PAGE_SIZE, 10 * PAGE_SIZE),
                         ("unmap", 0, VPN_LIMIT << PAGE_SHIFT)]


def test_entries_are_typed_arrays_in_vpn_order():
    spt = ShadowPageTable()
    for v in (900, 3, 1 << 30):
        spt.map(v, v + 1, v == 3)
    e = spt.entries()
    assert e.vpn.dtype == np.int64 and e.pfn.dtype == np.int64
    assert e.writable.dtype == np.bool_ and e.young.dtype == np.bool_
    assert e.vpn.tolist() == [3, 900, 1 << 30] and e.pfn.tolist() == [4, 901, (1 << 30) + 1]
    assert e.writable.tolist() == [True, False, False]


@pytest.mark.parametrize("call", [
    lambda t: t.map(-1, 1, True),
    lambda t: t.map(VPN_LIMIT, 1, True),
    lambda t: t.map(1, 1 << 40, True),
    lambda t: t.lookup(-5),
    lambda t: t.zap(VPN_LIMIT),
    lambda t: t.zap_range(10, 9),
    lambda t: t.zap_range(VPN_LIMIT + 1, VPN_LIMIT + 5),
    lambda t: t.age_range(-1, 3),
])
def test_bad_arguments_raise_a_message_and_change_nothing(call):
    spt = ShadowPageTable(name="dev")
    spt.map(1, 2, True)
    with pytest.raises(ValueError, match=r"dev\..*out of range.*0 <= vpn < 2\*\*36"):
        call(spt)
    assert spt.entries().vpn.tolist() == [1] and spt.stats()["zaps"] == 0


def test_repr_is_readable():
    spt = ShadowPageTable(name="xpmem1.att")
    spt.map(1, 2, True)
    assert repr(spt) == "ShadowPageTable('xpmem1.att', entries=1, tables=4, maps=1, zaps=0)"
