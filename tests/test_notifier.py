"""The notifier core: registration rules, dispatch per generation, failure paths, windows."""

import pytest
from notifier_kit import Recorder, setup

from smmu.base.constants import EAGAIN
from smmu.base.errors import BadDriver, InvalidArgument, UsageError
from smmu.notifier import Event, MMUNotifier, Range, check_driver_class


def rng(mm, a=0, b=0x2000, **kw):
    return Range(mm, a, b, **kw)


def invalidate(subs, r, nonblock=False):
    if nonblock:
        r = Range(r.mm, r.start, r.end, r.event, blockable=False)
        ret = yield from subs.mmu_notifier_invalidate_range_start_nonblock(r)
        if ret:
            return ret
    else:
        yield from subs.mmu_notifier_invalidate_range_start(r)
    yield
    yield from subs.mmu_notifier_invalidate_range_end(r)
    return 0


def test_range_validation_says_what_to_fix():
    with pytest.raises(InvalidArgument, match="empty"):
        Range(None, 0x2000, 0x2000)
    with pytest.raises(InvalidArgument, match="page aligned"):
        Range(None, 0x10, 0x2000)
    r = Range(None, 0, 0x3000, Event.CLEAR, blockable=False)
    assert r.pages == 3 and r.contains(0x2fff) and not r.contains(0x3000)
    assert "CLEAR" in repr(r) and "nonblock" in repr(r)


def test_events_are_documented():
    for e in Event:
        assert e.__doc__ and len(e.__doc__) > 20


def test_every_hook_documents_its_contract():
    for hook in ("release", "clear_flush_young", "clear_young", "test_young", "change_pte",
                 "invalidate_page", "invalidate_range_start", "invalidate_range_end",
                 "arch_invalidate_secondary_tlbs"):
        assert len(getattr(MMUNotifier, hook).__doc__) > 80, hook


@pytest.mark.parametrize("api", ["v2008", "range_only", "modern"])
def test_register_and_range_pairs(api):
    sim, mm, subs = setup(api)
    a = Recorder(sim, mm)
    sim.do(subs.register(a))
    sim.do(invalidate(subs, rng(mm)))
    assert a.log == [("start", 0, 0x2000), ("end", 0, 0x2000)]
    assert not sim.observer.open_ranges(mm) and not sim.observer.unpaired(mm)


def test_newest_registration_is_called_first():
    sim, mm, subs = setup()
    order = []

    class A(MMUNotifier):
        def invalidate_range_start(self, r):
            order.append(self.name)

    class B(A):
        pass

    sim.do(subs.register(A(sim, mm)))
    sim.do(subs.register(B(sim, mm)))
    sim.do(invalidate(subs, rng(mm)))
    assert order == ["B", "A"]   # hlist_add_head


def test_hooks_not_overridden_are_skipped():
    sim, mm, subs = setup()

    class OnlyEnd(MMUNotifier):
        ends = 0

        def invalidate_range_end(self, r):
            OnlyEnd.ends += 1

    sim.do(subs.register(OnlyEnd(sim, mm)))
    sim.do(invalidate(subs, rng(mm)))
    assert sim.hook_calls["invalidate_range_end"] == 1
    assert sim.hook_calls["invalidate_range_start"] == 0


def test_generation_specific_hooks():
    sim, mm, subs = setup("v2008")
    a = Recorder(sim, mm)
    sim.do(subs.register(a))
    sim.do(subs.mmu_notifier_invalidate_page(0x1000))
    sim.do(subs.mmu_notifier_change_pte(0x1000, 0))
    assert a.log == ["invalidate_page", "change_pte"]
    for api in ("range_only", "modern"):
        sim, mm, subs = setup(api)
        sim.do(subs.register(Recorder(sim, mm)))
        with pytest.raises(UsageError, match="invalidate_page does not exist"):
            sim.do(subs.mmu_notifier_invalidate_page(0x1000))


def test_young_results_or_and_test_young_stops_at_first_true():
    sim, mm, subs = setup()
    a = Recorder(sim, mm, young=False)
    b = Recorder(sim, mm, young=True)
    sim.do(subs.register(a))
    sim.do(subs.register(b))          # b is called first
    assert sim.do(subs.mmu_notifier_clear_flush_young(0, 0x1000)) is True
    assert a.log == ["clear_flush_young"] and b.log == ["clear_flush_young"]
    assert sim.do(subs.mmu_notifier_clear_young(0, 0x1000)) is True
    assert sim.do(subs.mmu_notifier_test_young(0)) is True
    assert "test_young" in b.log and "test_young" not in a.log


def test_modern_refuses_secondary_tlbs_with_start_end():
    class Both(MMUNotifier):
        def arch_invalidate_secondary_tlbs(self, mm, s, e):
            pass

        def invalidate_range_start(self, r):
            pass

    with pytest.raises(BadDriver, match="-EINVAL"):
        check_driver_class(Both, "modern")

    class OnlyTlbs(MMUNotifier):  # the legal twin
        def arch_invalidate_secondary_tlbs(self, mm, s, e):
            pass

    check_driver_class(OnlyTlbs, "modern")


def test_bad_driver_classes_are_explained():
    with pytest.raises(BadDriver, match="derived from smmu.MMUNotifier"):
        check_driver_class(dict, "modern")

    class ModernOnly(MMUNotifier):
        apis = ("modern",)

    with pytest.raises(BadDriver, match="notifier_api='modern'"):
        check_driver_class(ModernOnly, "v2008")
    with pytest.raises(UsageError, match="unknown notifier_api"):
        check_driver_class(ModernOnly, "v2009")


def test_checked_driver_classes_are_remembered_per_api_and_not_kept_alive():
    import gc
    import weakref

    class ModernOnly(MMUNotifier):
        apis = ("modern",)

    check_driver_class(ModernOnly, "modern")
    check_driver_class(ModernOnly, "modern")           # remembered: passes again
    with pytest.raises(BadDriver, match="notifier_api='modern'"):
        check_driver_class(ModernOnly, "v2008")         # another api is checked anew
    with pytest.raises(BadDriver, match="derived from smmu.MMUNotifier"):
        check_driver_class(3, "modern")                # not weakly referenceable
    ref = weakref.ref(ModernOnly)
    del ModernOnly
    gc.collect()
    assert ref() is None, "a checked driver class must not be kept alive by the check"


class Refuser(MMUNotifier):
    """Refuses non-blockable ranges and (correctly) has no end."""

    def invalidate_range_start(self, r):
        return 0 if r.blockable else -EAGAIN


def test_nonblock_failure_calls_every_end():
    sim, mm, subs = setup("modern")
    a = Recorder(sim, mm)
    sim.do(subs.register(a))
    sim.do(subs.register(Refuser(sim, mm)))
    ret = sim.do(invalidate(subs, rng(mm), nonblock=True))
    assert ret == -EAGAIN
    assert a.log == [("start", 0, 0x2000), ("end", 0, 0x2000)]
    sim.quiesce()
    assert not sim.violations


def test_nonblock_failure_without_the_2021_fix_leaves_end_uncalled():  # the historical bug
    sim, mm, subs = setup("modern", nonblock_fail_calls_end=False)
    a = Recorder(sim, mm)
    sim.do(subs.register(a))
    sim.do(subs.register(Refuser(sim, mm)))
    assert sim.do(invalidate(subs, rng(mm), nonblock=True)) == -EAGAIN
    assert a.log == [("start", 0, 0x2000)]
    sim.quiesce()
    assert [v.kind for v in sim.violations] == ["UnpairedRange"]


def test_failing_a_blockable_start_is_bad_return():
    class Liar(MMUNotifier):
        def invalidate_range_start(self, r):
            return -EAGAIN

    sim, mm, subs = setup("modern")
    sim.do(subs.register(Liar(sim, mm)))
    sim.do(invalidate(subs, rng(mm)))
    assert [v.kind for v in sim.violations] == ["BadReturn"]


def test_failing_start_with_an_end_is_bad_return():
    class RefuserWithEnd(Refuser):
        def invalidate_range_end(self, r):
            pass

    sim, mm, subs = setup("modern")
    sim.do(subs.register(RefuserWithEnd(sim, mm)))
    sim.do(invalidate(subs, rng(mm), nonblock=True))
    assert "BadReturn" in [v.kind for v in sim.violations]


def test_nonblock_hooks_run_atomic():
    class Sleepy(MMUNotifier):
        def __init__(self, sim, mm):
            super().__init__(sim, mm)
            self.lock = sim.mutex("drv->mutex")

        def invalidate_range_start(self, r):
            yield self.lock
            self.lock.release()

    sim, mm, subs = setup("modern")
    sim.do(subs.register(Sleepy(sim, mm)))
    sim.do(invalidate(subs, rng(mm)))
    assert not sim.violations                      # blockable: may sleep
    sim.do(invalidate(subs, rng(mm), nonblock=True))
    assert [v.kind for v in sim.violations] == ["SleepInAtomic"]


def test_may_sleep_driver_called_atomic_is_reported_even_uncontended():
    class Declared(MMUNotifier):
        may_sleep = True

        def invalidate_range_end(self, r):
            pass

    sim, mm, subs = setup("modern")
    sim.do(subs.register(Declared(sim, mm)))
    sl = sim.spinlock("anon_vma->lock")

    def rmap_walk():
        yield sl
        r = rng(mm)
        yield from subs.mmu_notifier_invalidate_range_start(r)
        yield from subs.mmu_notifier_invalidate_range_end(r)
        sl.release()

    sim.do(rmap_walk())
    assert "SleepInAtomic" in [v.kind for v in sim.violations]


def test_arch_invalidate_secondary_tlbs_is_atomic():
    class SleepingFlush(MMUNotifier):
        def __init__(self, sim, mm):
            super().__init__(sim, mm)
            self.m = sim.mutex("iommu->lock")

        def arch_invalidate_secondary_tlbs(self, mm, s, e):
            with (yield self.m):
                pass

    sim, mm, subs = setup("modern")
    sim.do(subs.register(SleepingFlush(sim, mm)))
    sim.do(subs.mmu_notifier_arch_invalidate_secondary_tlbs(0, 0x1000))
    assert [v.kind for v in sim.violations] == ["SleepInAtomic"]


def test_end_without_start_is_unpaired():
    sim, mm, subs = setup()
    sim.do(subs.register(Recorder(sim, mm)))
    sim.do(subs.mmu_notifier_invalidate_range_end(rng(mm)))
    assert [v.kind for v in sim.violations] == ["UnpairedRange"]


def test_start_without_end_is_unpaired_at_quiescence():
    sim, mm, subs = setup()
    sim.do(subs.register(Recorder(sim, mm)))
    sim.do(subs.mmu_notifier_invalidate_range_start(rng(mm)))
    sim.quiesce()
    assert [v.kind for v in sim.violations] == ["UnpairedRange"]


def test_map_in_window_and_not_before_or_after():
    sim, mm, subs = setup()
    d = Recorder(sim, mm)
    sim.do(subs.register(d))
    r = rng(mm)
    d.note_map(0x1000, 7, True)                    # before: fine
    sim.do(subs.mmu_notifier_invalidate_range_start(r))
    d.note_map(0x3000, 8, True)                    # outside the range: fine
    assert not sim.violations
    d.note_map(0x1000, 9, True)                    # inside the window
    assert [v.kind for v in sim.violations] == ["MapInWindow"]
    sim.do(subs.mmu_notifier_invalidate_range_end(r))
    d.note_map(0x1000, 10, True)                   # after: fine
    assert len(sim.violations) == 1


def test_own_migrate_range_opens_no_window():
    sim, mm, subs = setup()
    d = Recorder(sim, mm)
    sim.do(subs.register(d))
    r = rng(mm, event=Event.MIGRATE, owner=d)
    sim.do(subs.mmu_notifier_invalidate_range_start(r))
    d.note_map(0x1000, 9, True)
    assert not sim.violations


def test_unregister_calls_release_once_and_waits_for_running_hooks():
    sim, mm, subs = setup("modern", schedule="round_robin")
    progress = []

    class Slow(MMUNotifier):
        def invalidate_range_start(self, r):
            progress.append("start-in")
            yield
            yield
            progress.append("start-out")

        def release(self, mm):
            progress.append("release")

    d = Slow(sim, mm)
    sim.do(subs.register(d))

    def cpu():
        r = rng(mm)
        yield from subs.mmu_notifier_invalidate_range_start(r)
        yield from subs.mmu_notifier_invalidate_range_end(r)

    def detacher():
        yield
        yield from subs.unregister(d)
        progress.append("unregistered")

    sim.spawn("cpu", cpu())
    sim.spawn("detach", detacher())
    r = sim.run()
    assert r.ok
    assert progress.index("unregistered") > progress.index("start-out")
    assert progress.count("release") == 1
    with pytest.raises(UsageError, match="not registered"):
        sim.do(subs.unregister(d))


def test_release_runs_once_for_exit_then_unregister():
    sim, mm, subs = setup()
    d = Recorder(sim, mm)
    sim.do(subs.register(d))
    sim.do(subs.mmu_notifier_release())
    sim.do(subs.unregister(d))
    assert d.log.count("release") == 1


def test_get_put_share_one_subscription():
    sim, mm, subs = setup()
    a = sim.do(subs.get(Recorder, lambda: Recorder(sim, mm)))
    b = sim.do(subs.get(Recorder, lambda: Recorder(sim, mm)))
    assert a is b and len(subs.subs) == 1
    sim.do(subs.put(a))
    assert len(subs.subs) == 1
    sim.do(subs.put(b))
    assert subs.subs == [] and "release" not in a.log


def test_register_twice_is_refused():
    sim, mm, subs = setup()
    d = Recorder(sim, mm)
    sim.do(subs.register(d))
    with pytest.raises(UsageError, match="already registered"):
        sim.do(subs.register(d))


def test_driver_options_checked():
    sim, mm, subs = setup()
    with pytest.raises(BadDriver, match="takes no options"):
        MMUNotifier(sim, mm, colour="red")
