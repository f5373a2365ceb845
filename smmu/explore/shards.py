"""A campaign in shards: many explorations split into slices that workers run in any order
and on any machine, merged back into exactly what the serial runs find.

A *shard* is one call of :func:`~smmu.explore.search.explore` for one (scenario, api)
pair (and kernel) with a :class:`~smmu.explore.search.Shard`: the adaptive *head* of the
search (window-directed runs, the bounded exhaustive search: each run depends on the ones
before, so the head is one shard), then *sample* shards of the sampled part, a range of
seeds each (run ``i`` of the sampled part uses seed ``seed + i // len(kinds)``). The one
state the sampled part carries from run to run is PCT's ``steps`` estimate (the longest run
seen): a sample shard starts from the estimate the head ended with, and when an earlier shard
saw a longer run than that, the shard is run again from the right estimate before it is
merged (:class:`PairCampaign` checks every PCT run's ``steps`` against the serial order), so
the merged findings, schedule counts, strategy mix and coverage are the serial ones.

:func:`run_campaign` drives any executor with ``submit(fn, task) -> future`` and an
``as_completed`` over futures (a dask ``Client``: :mod:`smmu.explore.cluster`; or
:class:`InlineExecutor`, which runs each task at once, here in the same process).
"""

from __future__ import annotations

import dataclasses
import time

from smmu.base.errors import UsageError
from smmu.base.log import get_logger
from smmu.explore.coverage import Coverage
from smmu.explore.findings import driver_spec
from smmu.explore.loader import load_driver
from smmu.explore.search import Exploration, Shard, explore
from smmu.scenarios import get_scenario

log = get_logger()

#: sampled schedules per shard by default (small enough that the progress bar moves and a
#: lost worker costs little, large enough that a worker's start-up is paid back)
SHARD_SIZE = 25


def run_shard(task: dict) -> dict:
    """Run one shard (what a worker does): ``task`` names the driver by its spec string,
    the pair, the exploration's arguments and the :class:`Shard` as a dict. Returns the
    shard's :class:`Exploration` as plain data (findings name their driver by spec)."""
    cls = load_driver(task["driver"])
    ex = explore(task["scenario"], cls, task["api"], strategy=task["strategy"],
                 schedules=task["schedules"], seed=task["seed"],
                 stop_at_first=task["stop_at_first"], driver_options=task["driver_options"],
                 sim_options=task["sim_options"], shard=Shard(**task["shard"]))
    spec = task["driver"]
    return {"key": task["key"], "shard": task["shard"], "schedules_run": ex.schedules_run,
            "findings": [_portable(f, spec) for f in ex.findings],
            "mix": dict(ex.mix), "coverage": ex.coverage.table(), "complete": ex.complete,
            "bound": ex.bound, "por": ex.por, "pruned": ex.pruned, "elapsed": ex.elapsed,
            "resume": ex.resume}


def _portable(finding, spec):
    """``finding`` as it travels between processes: the driver by its spec, no scenario
    object, the violation's details as its JSON has them (no object a process may fail to
    unpickle)."""
    v = finding.violation
    return dataclasses.replace(finding, driver=spec, scenario_def=None,
                               violation=dataclasses.replace(v, details=v.to_dict()["details"]))


def _sample_valid(result: dict, steps: int):
    """Whether a sample shard's runs are the serial ones when the serial search had PCT
    estimate ``steps`` at its start: every PCT run used the estimate the serial order gives
    it. Returns the estimate after the shard, or None when the shard must run again."""
    for used, length in result["resume"]["runs"]:
        if used is not None and used != steps:
            return None
        steps = max(steps, length)
    return steps


class PairCampaign:
    """The shards of one (scenario, api[, kernel]) pair: what to submit next as results come
    in (:meth:`start`, :meth:`on_result`), and the merged :class:`Exploration` (:attr:`done`,
    :meth:`merged`)."""

    def __init__(self, key, scenario, driver, api, *, strategy="portfolio", schedules=200,
                 seed=0, stop_at_first=True, driver_options=None, sim_options=None,
                 shard_size=SHARD_SIZE, spec=None):
        """``driver``: the class (or its spec); ``spec``: how a worker loads it (default
        :func:`driver_spec`; a path/to/file.py:Class spec must name the file where the
        workers find it: :func:`~smmu.explore.loader.portable_spec`)."""
        if int(shard_size) < 1:
            raise UsageError(f"shard_size must be >= 1, got {shard_size}")
        self.key = key
        self.scenario = get_scenario(scenario)
        self.driver = driver if isinstance(driver, type) else None
        self.base = {"key": key, "driver": spec or driver_spec(driver),
                     "scenario": self.scenario.name, "api": api, "strategy": strategy,
                     "schedules": int(schedules),
                     "seed": int(seed), "stop_at_first": bool(stop_at_first),
                     "driver_options": dict(driver_options or {}),
                     "sim_options": dict(sim_options or {})}
        self.shard_size = int(shard_size)
        self.head: dict | None = None
        self.samples: list[dict | None] = []      # the latest result of each sample shard
        self.guess: list[int] = []                # the estimate each one was (last) run with
        self.valid = 0                            # sample shards merged so far, in order
        self.steps = None                         # the serial estimate after them
        self.done = False
        self.reruns = 0
        self.t0 = time.perf_counter()
        self.wall = 0.0

    def task(self, **shard) -> dict:
        return dict(self.base, shard=dataclasses.asdict(Shard(**shard)))

    def start(self) -> list[dict]:
        return [self.task(part="head")]

    def on_result(self, result: dict) -> list[dict]:
        """Take one shard's result; returns the tasks to submit now."""
        if self.done:
            return []
        shard = result["shard"]
        if shard["part"] == "head":
            self.head = result
            r = result["resume"]
            left = self.base["schedules"] - r["index"]
            if r["stopped"] or r["steps"] is None or left <= 0:
                return self._finish()
            self.steps = r["steps"]
            starts = range(0, left, self.shard_size)
            self.samples = [None] * len(starts)
            self.guess = [self.steps] * len(starts)
            return [self.task(part="sample", start=a, stop=min(a + self.shard_size, left),
                              steps=self.steps, index=r["index"] + a) for a in starts]
        j = shard["start"] // self.shard_size
        if shard["steps"] != self.guess[j]:
            return []                              # superseded by a rerun already submitted
        self.samples[j] = result
        return self._advance()

    def _advance(self) -> list[dict]:
        """Merge the sample shards that are in, in order; rerun the first whose estimate was
        wrong (and guess again for the later ones still out of order)."""
        while self.valid < len(self.samples) and self.samples[self.valid] is not None:
            res = self.samples[self.valid]
            after = _sample_valid(res, self.steps)
            if after is None:
                return self._rerun()
            self.steps = after
            self.valid += 1
            if res["findings"] and self.base["stop_at_first"]:
                return self._finish()
        if self.valid == len(self.samples):
            return self._finish()
        return []

    def _rerun(self) -> list[dict]:
        """The shard at ``valid`` ran from a wrong estimate: run it again from the serial one;
        a later shard whose estimate is now known to be low is run again from the longest run
        seen anywhere (the estimate only grows, towards that)."""
        longest = max([self.steps] + [n for r in self.samples if r is not None
                                      for _, n in r["resume"]["runs"]])
        out = []
        left = self.base["schedules"] - self.head["resume"]["index"]
        for j in range(self.valid, len(self.samples)):
            want = self.steps if j == self.valid else max(self.steps, longest)
            if want != self.guess[j]:
                self.guess[j] = want
                self.samples[j] = None
                self.reruns += 1
                a = j * self.shard_size
                out.append(self.task(part="sample", start=a, stop=min(a + self.shard_size, left),
                                     steps=want, index=self.head["resume"]["index"] + a))
        log.debug("shard rerun", scenario=self.base["scenario"], api=self.base["api"],
                 shards=len(out))
        return out

    def _finish(self) -> list[dict]:
        self.done = True
        self.wall = time.perf_counter() - self.t0
        return []

    def merged(self) -> Exploration:
        """The exploration the serial :func:`explore` gives: the head and the merged sample
        shards in order, each violation kind from the first run that showed it."""
        if not self.done:
            raise UsageError(f"pair {self.key!r} is not finished")
        b = self.base
        ex = Exploration(self.scenario.name, b["api"], b["strategy"], b["seed"])
        seen: set = set()
        driver = self.driver or load_driver(b["driver"])
        for part in [self.head] + self.samples[:self.valid]:
            ex.schedules_run += part["schedules_run"]
            for name, n in part["mix"].items():
                ex.mix[name] = ex.mix.get(name, 0) + n
            ex.coverage.merge(Coverage.from_table(part["coverage"]))
            ex.elapsed += part["elapsed"]
            for f in part["findings"]:
                if f.kind not in seen:
                    seen.add(f.kind)
                    ex.findings.append(dataclasses.replace(f, driver=driver,
                                                           scenario_def=self.scenario))
        h = self.head
        ex.complete, ex.bound, ex.por, ex.pruned = (h["complete"], h["bound"], h["por"],
                                                    h["pruned"])
        return ex


class InlineExecutor:
    """Runs each submitted task at once in this process (the executor interface
    :func:`run_campaign` needs, without a cluster): for tests and for comparing."""

    class Future:
        def __init__(self, value):
            self.value = value

        def result(self):
            return self.value

    class Completed:
        """Futures in the order they were added (they are all done already)."""

        def __init__(self, futures):
            self.pending = list(futures)

        def __iter__(self):
            while self.pending:
                yield self.pending.pop(0)

        def add(self, future):
            self.pending.append(future)

    def __init__(self):
        self.submitted = 0

    def submit(self, fn, task):
        self.submitted += 1
        return self.Future(fn(task))

    def as_completed(self, futures):
        return self.Completed(futures)


def run_campaign(pairs: list[PairCampaign], submit, completed, *, fn=run_shard,
                 progress=None) -> list[Exploration]:
    """Run every pair's shards through an executor: ``submit(fn, task)`` returns a future,
    ``completed(futures)`` iterates over futures as they finish and takes more with
    ``.add(future)`` (``distributed.as_completed``). ``progress(pair, schedules)`` is told
    the schedules each merged shard adds (and, when a pair ends early, the ones it will not
    run). A pair that is done has its shards still out cancelled. Returns the merged
    explorations in the order of ``pairs``."""
    by_key = {p.key: p for p in pairs}
    if len(by_key) != len(pairs):
        raise UsageError("every pair of a campaign needs its own key")
    owner: dict = {}

    def send(pair, task):
        fut = submit(fn, task)
        owner[fut] = pair
        return fut

    it = completed([send(p, t) for p in pairs for t in p.start()])
    counted = {p.key: 0 for p in pairs}
    for fut in it:
        pair = owner.pop(fut, None)
        if pair is None or pair.done:
            continue                       # a shard of a pair that ended early
        for task in pair.on_result(fut.result()):
            it.add(send(pair, task))
        if pair.done:
            for other, p in list(owner.items()):
                if p is pair and hasattr(other, "cancel"):
                    other.cancel()
        if progress is not None:
            now = pair.base["schedules"] if pair.done else (
                pair.head["schedules_run"] if pair.head else 0) + \
                sum(pair.samples[j]["schedules_run"] for j in range(pair.valid))
            if now > counted[pair.key]:
                progress(pair, now - counted[pair.key])
                counted[pair.key] = now
    unfinished = [p.key for p in pairs if not p.done]
    if unfinished:
        raise UsageError(f"the campaign ended with pairs unfinished: {unfinished}")
    return [p.merged() for p in pairs]
