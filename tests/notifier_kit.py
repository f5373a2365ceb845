"""A scheduler-only harness for notifier-core tests (no primary MM needed)."""

from smmu.notifier import MMUNotifier, NotifierSubscriptions
from smmu.oracle import ProtocolChecker
from smmu.runtime.scheduler import Scheduler


class FakeSim(Scheduler):
    """A bare scheduler whose observer judges the notifier protocol (the windows: what the
    notifier core's tests check) and reports unpaired ranges at quiescence."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.observer = ProtocolChecker(self)

    def quiesce(self):
        obs = self.observer
        for mm in getattr(self, "mms", []):
            if obs.open_ranges(mm) or obs.unpaired(mm):
                self.violation("UnpairedRange", f"open ranges {obs.open_ranges(mm)} "
                               f"{obs.unpaired(mm)}", task=None)


class FakeMM:
    def __init__(self, sim, api="modern", **kw):
        self.notifier_subscriptions = NotifierSubscriptions(sim, self, api, **kw)
        sim.mms = getattr(sim, "mms", []) + [self]

    def __repr__(self):
        return "<FakeMM>"


class Recorder(MMUNotifier):
    """Logs every hook call; answers young queries from ``self.young``."""

    def __init__(self, sim, mm, young=False):
        super().__init__(sim, mm)
        self.log = []
        self.young = young

    def release(self, mm):
        self.log.append("release")

    def clear_flush_young(self, mm, start, end):
        self.log.append("clear_flush_young")
        return self.young

    def clear_young(self, mm, start, end):
        self.log.append("clear_young")
        return self.young

    def test_young(self, mm, address):
        self.log.append("test_young")
        return self.young

    def change_pte(self, mm, address, pte):
        self.log.append("change_pte")

    def invalidate_page(self, mm, address):
        self.log.append("invalidate_page")

    def invalidate_range_start(self, range):
        self.log.append(("start", range.start, range.end))

    def invalidate_range_end(self, range):
        self.log.append(("end", range.start, range.end))


def setup(api="modern", schedule="round_robin", seed=0, **kw):
    sim = FakeSim(schedule, seed)
    mm = FakeMM(sim, api, **kw)
    return sim, mm, mm.notifier_subscriptions
