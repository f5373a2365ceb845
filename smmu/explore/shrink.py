"""Shrinking a finding's schedule: fewer context switches first, then delta debugging of the
choice list (:func:`shrink`)."""

from __future__ import annotations

from smmu.base.errors import UsageError
from smmu.explore.findings import Finding
from smmu.runtime.schedules import Replay


def _ddmin(items: list, test, budget: list) -> list:
    """Zeller's delta debugging: a 1-minimal sublist of ``items`` on which ``test`` holds
    (``test(items)`` is assumed to hold). ``budget[0]`` caps the number of tests."""
    n = 2
    while len(items) >= 2 and budget[0] > 0:
        chunk = len(items) / n
        parts = [items[int(i * chunk):int((i + 1) * chunk)] for i in range(n)]
        reduced = False
        for i in range(n):          # try each subset
            if budget[0] <= 0:
                break
            if parts[i] and len(parts[i]) < len(items) and test(parts[i]):
                items, n, reduced = parts[i], 2, True
                break
        if not reduced:
            for i in range(n):      # try each complement
                if budget[0] <= 0:
                    break
                comp = [x for j, p in enumerate(parts) if j != i for x in p]
                if len(comp) < len(items) and test(comp):
                    items, n, reduced = comp, max(n - 1, 2), True
                    break
        if not reduced:
            if n >= len(items):
                break
            n = min(len(items), 2 * n)
    return items


def _segments(choices: list) -> list:
    """Run-length encoding ``[[tid, count], ...]`` of a choice list."""
    segs: list = []
    for c in choices:
        if segs and segs[-1][0] == c:
            segs[-1][1] += 1
        else:
            segs.append([c, 1])
    return segs


def _merge_moves(segs: list, i: int):
    """Choice lists with segment ``i`` moved into its task's next, then previous, segment."""
    tid, n = segs[i]
    for rng in (range(i + 1, len(segs)), range(i - 1, -1, -1)):
        for j in rng:
            if segs[j][0] == tid:
                new = [list(s) for s in segs]
                new[j][1] += n
                del new[i]
                yield [t for t, k in new for _ in range(k)]
                break
    # no other segment of that task: just drop it (the fallback runs it later)
    rest = [list(s) for k, s in enumerate(segs) if k != i]
    yield [t for t, k in rest for _ in range(k)]


def _preemption_edits(cur: list, log_: list):
    """Candidate schedules with one context switch fewer: whole segments moved into the same
    task's next or previous segment (keeps every task's step count), then, at each preemption
    (last first), continuing the preempted task one choice longer or in place of the switch,
    or dropping the choice."""
    segs = _segments(cur)
    for i in range(len(segs) - 1, -1, -1):
        yield from _merge_moves(segs, i)
    for j in range(len(log_) - 1, -1, -1):
        tids, prev, ch = log_[j]
        if prev in tids and ch != prev:
            yield cur[:j] + [prev] + cur[j:]
            yield cur[:j] + [prev] + cur[j + 1:]
            yield cur[:j] + cur[j + 1:]


def shrink(finding: Finding, max_runs: int = 400) -> list:
    """Shrink ``finding``'s schedule: first remove context switches from the executed schedule
    while the violation (same kind) still happens, then delta-debug (ddmin) the choice list,
    keeping a candidate iff its replay still shows a violation of that kind with no more
    preemptions. Sets ``finding.minimal`` and ``finding.preemptions``; returns the minimal
    list. At most ``max_runs`` replays."""
    kind = finding.kind
    budget = [int(max_runs)]
    cache: dict = {}

    def attempt(choices):
        key = tuple(choices)
        if key not in cache:
            budget[0] -= 1
            sched = Replay(choices)
            r = finding.run(sched)
            hit = any(v.kind == kind for v in r.violations)
            cache[key] = (hit, sched.preemptions, list(r.schedule), sched.log)
        return cache[key]

    hit, best_pre, executed, log_ = attempt(finding.choices)
    if not hit:
        raise UsageError(f"{finding!r} does not reproduce under replay of its choices: the "
                         "scenario is not deterministic (does it use wall time or global "
                         "state?)")
    best = list(finding.choices)

    # 1. drop preemptions. The executed schedule is a sequence of segments (task, length);
    #    moving a whole segment's steps into the same task's next (or previous) segment keeps
    #    every task's steps and the order of all other steps, and removes a context switch.
    #    Keep any such move that reproduces with fewer preemptions.
    cur = executed
    improved = True
    while improved and budget[0] > 0:
        improved = False
        pre = attempt(cur)[1]
        for cand in _preemption_edits(cur, attempt(cur)[3]):
            if budget[0] <= 0:
                break
            h, p, ex_, _ = attempt(cand)
            if h and p < pre:
                cur, improved = ex_, True
                break
    hit, best_pre, _, _ = attempt(cur)
    best = cur

    # 2. ddmin over the choice list, never increasing preemptions
    def test(c):
        h, p, _, _ = attempt(c)
        return h and p <= best_pre

    best = _ddmin(list(best), test, budget)
    # trailing choices that equal the fallback are redundant: drop them
    while best and test(best[:-1]):
        best = best[:-1]
    finding.minimal = best
    finding.preemptions = attempt(best)[1]
    return best
