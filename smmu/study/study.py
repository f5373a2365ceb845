"""The study itself: which runs, how they are compared, and what each claim of the 2008 thread
comes to.

:func:`run_study` runs the plan (:func:`plan`: the workload matrix over modes, driver sets and
seeds; the sweeps; the brk lock comparison; the shipped strace traces; the ``smmu check``
verdicts), groups the runs into cells (a workload with its drivers and knobs, one column per
mode), refuses to compare a cell whose modes did different work (saying which seed, which
count and by how much), and states a verdict on each of the five claims with the numbers
behind it. Everything is in one JSON-able document.
"""

from __future__ import annotations

import math
import subprocess
import time
from pathlib import Path


import smmu
from smmu.base.errors import UsageError
from smmu.base.log import get_logger
from smmu.explore import explore
from smmu.runtime.costs import cost_table
from smmu.scenarios import get_scenario
from smmu.study.stats import mean_ci, paired
from smmu.study.workloads import GRU, KVM, MODES, SINGLE_PAGE, XPMEM2008, Config, run

log = get_logger()

ROOT = Path(__file__).resolve().parents[2]
TRACE_DIR = ROOT / "benchmarks" / "traces"

#: the five claims, as the thread and the patch put them
CLAIMS = [
    {"id": "hooks", "who": "Andrea Arcangeli, 2008-04-22",
     "quote": "[invalidate_page] _halves_ the number of _hooks_ in the VM every time the VM "
              "deal with single pages (example: do_wp_page hot path)"},
    {"id": "window", "who": "Andrea Arcangeli, 2008-04-22",
     "quote": "it has the benefit of reducing the window of time the secondary page fault "
              "has to be masked"},
    {"id": "locking", "who": "Andrea Arcangeli, 2008-04-22",
     "quote": "invalidate_page as demonstrated in KVM pseudocode doesn't change the locking "
              "requirements"},
    {"id": "perf", "who": "Robin Holt, 2008-04-22",
     "quote": "no expected significant performance difference between the two"},
    {"id": "brk", "who": "Christoph Lameter, seed patch 09 (anon_vma rwsem)",
     "quote": "There is the potential for more frequent processor change due to up_xxx "
              "letting waiting tasks run first. This results in f.e. the Aim9 brk "
              "performance test to got down by 10-15%."},
]

#: a difference counts as "significant" for Robin's claim when its 95% interval excludes 0
#: AND it is at least this large relative to v2008 (a deterministic simulation makes every
#: difference statistically significant; this is the practical bar)
PRACTICAL = 0.05

#: the operation (outermost MM call) each workload's measured work goes through
OPS = {"cow": ("write",), "cow-mt": ("write",), "reclaim": ("reclaim",),
       "writeback": ("writeback",), "migrate": ("migrate",), "ksm": ("ksm_merge",),
       "munmap": ("munmap",), "madvise": ("madvise",), "brk": ("brk",)}

#: the brk analogue's reference walker pause (the wake-up and hand-off variants use it)
BRK_REF_GAP = 20_000.0

DRIVER_SETS = (("kvm",), ("gru",), ("xpmem",), ("kvm", "gru"), ("kvm", "gru", "xpmem"))
WORKLOAD_ORDER = ("cow", "cow-mt", "reclaim", "writeback", "migrate", "ksm", "munmap", "madvise")
TRACES = ("python-startup", "gcc-compile", "sort-large-file", "git-status")


def revision() -> str:
    """The git revision of the source tree (``+dirty`` when modified), or the version."""
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                "smmu", "primary_mm", "drivers"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if rev:
            return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return f"smmu {smmu.__version__}"


# ------------------------------------------------------------------ the plan

def plan(quick: bool = False, seeds: int = 10) -> dict:
    """The experiments: lists of :class:`Config` (one per run) by part."""
    npages = 8 if quick else 64
    seed_list = list(range(seeds))
    modes = list(MODES)
    main, sweeps, brk, traces = [], {}, [], []
    sets = (("kvm", "gru"), ("xpmem",)) if quick else DRIVER_SETS
    for wl in WORKLOAD_ORDER:
        for ds in sets:
            if quick and ds == ("xpmem",) and wl != "cow":
                continue
            for mode in modes:
                for s in seed_list:
                    main.append(Config(wl, mode, ds, s, npages,
                                       threads=2 if wl == "cow-mt" else 1))

    def sweep(name, values, make):
        cfgs = []
        for v in values:
            for mode in ("v2008", "range_only"):
                for s in seed_list:
                    cfgs.append((v, make(v, mode, s)))
        sweeps[name] = cfgs

    pair = ("kvm", "gru")
    sweep("hook_cost_ns", (40, 1000) if quick else (40, 200, 1000, 3000, 10000),
          lambda v, m, s: Config("cow", m, pair, s, npages, costs={"notifier_call": v}))
    sweep("secondary_flush_ns", (2000, 20000) if quick else (500, 2000, 5000, 20000, 50000),
          lambda v, m, s: Config("cow", m, pair, s, npages, costs={"secondary_flush": v}))
    sweep("drivers", (1, 2) if quick else (1, 2, 3, 4),
          lambda v, m, s: Config("cow", m, ("kvm", "gru", "kvm", "gru")[:v], s, npages))
    sweep("cpus", (1, 2) if quick else (1, 2, 4),
          lambda v, m, s: Config("cow" if v == 1 else "cow-mt", m, pair, s, npages, threads=v))
    gaps = (20_000.0,) if quick else (0.0, 5_000.0, 20_000.0, 100_000.0)
    wakeups = (2_000.0,) if quick else (2_000.0, 5_000.0)   # beside this VM's 20 us
    for locks in ("spinlock", "rwsem"):
        for mode in ("v2008", "range_only"):
            for s in seed_list:
                for gap in gaps:
                    brk.append(Config("brk", mode, ("kvm",), s, npages, rmap_locks=locks,
                                      walker_gap_ns=gap))
                if mode != "v2008":
                    continue
                for w in wakeups:               # a bare-metal wake-up
                    brk.append(Config("brk", mode, ("kvm",), s, npages, rmap_locks=locks,
                                      walker_gap_ns=BRK_REF_GAP, costs={"wakeup": w}))
                if locks == "rwsem":            # the hand-off's own share
                    brk.append(Config("brk", mode, ("kvm",), s, npages, rmap_locks=locks,
                                      walker_gap_ns=BRK_REF_GAP, fair_locks=False))
    names = ("git-status",) if quick else TRACES
    for name in names:
        path = TRACE_DIR / f"{name}.strace"
        for mode in modes:
            for s in (seed_list[:2] if quick else seed_list):
                traces.append(Config(f"strace:{name}", mode, pair, s, npages, trace=str(path),
                                     device_gap_ns=5000.0))
    return {"main": main, "sweeps": sweeps, "brk": brk, "traces": traces}


# ------------------------------------------------------------------ aggregating

def _op_counts(r, ops):
    """VM notifier calls and driver callbacks of a run's measured operations."""
    vm = sum(n for op, _site, _call, n in r["vm_calls"] if ops is None or op in ops)
    cb = sum(n for op, _site, _hook, _drv, n in r["hooks"] if ops is None or op in ops)
    by_driver = {}
    for op, _site, _hook, drv, n in r["hooks"]:
        if ops is None or op in ops:
            by_driver[drv] = by_driver.get(drv, 0) + n
    sites = {}
    for op, site, hook, _drv, n in r["hooks"]:
        if ops is None or op in ops:
            sites.setdefault(site, {}).setdefault(hook, 0)
            sites[site][hook] += n
    return vm, cb, by_driver, sites


def summarize(runs: list[dict], ops) -> dict:
    """One mode of one cell: every figure as mean and 95% interval over the seeds."""
    per_op = lambda x, r: x / r["ops"] if r["ops"] else float("nan")  # noqa: E731
    vm, cb, drv_cb = [], [], {}
    sites = {}
    for r in runs:
        v, c, d, st = _op_counts(r, ops)
        vm.append(per_op(v, r))
        cb.append(per_op(c, r))
        for k, n in d.items():
            drv_cb.setdefault(k, []).append(per_op(n, r))
        sites = st
    w = lambda kind, unit, q: [r["windows"][kind][unit][q] for r in runs]  # noqa: E731
    return {
        "seeds": len(runs),
        "ops": runs[0]["ops"] if runs else 0,
        "work": runs[0]["work"] if runs else {},
        "vm_calls_per_op": mean_ci(vm),
        "callbacks_per_op": mean_ci(cb),
        "callbacks_per_op_by_driver": {k: mean_ci(v) for k, v in drv_cb.items()},
        "hooks_by_site": sites,
        "latency_p50_ns": mean_ci([r["latency_ns"]["p50"] for r in runs]),
        "latency_p99_ns": mean_ci([r["latency_ns"]["p99"] for r in runs]),
        "latency_mean_ns": mean_ci([r["latency_ns"]["mean"] for r in runs]),
        "window_p50_ns": mean_ci(w("all", "ns", "p50")),
        "window_p99_ns": mean_ci(w("all", "ns", "p99")),
        "window_p50_steps": mean_ci(w("all", "steps", "p50")),
        "window_p99_steps": mean_ci(w("all", "steps", "p99")),
        "windows": sum(r["windows"]["all"]["ns"]["n"] for r in runs) / max(1, len(runs)),
        "device_per_us": mean_ci([r["device_per_us"] for r in runs]),
        "device_stall_frac": mean_ci([r["device_stall_frac"] for r in runs]),
        "retries": {k: mean_ci([r["retries"][k] for r in runs]) for k in runs[0]["retries"]}
        if runs else {},
        "violations": sorted({k for r in runs for k in r["violations"]}),
        "violation_example": next((r["violation_messages"][0] for r in runs
                                   if r["violation_messages"]), None),
        "wall_s": sum(r["wall_s"] for r in runs),
    }


def work_difference(by_mode: dict) -> str | None:
    """Why the modes of a cell cannot be compared, or None: the first seed where the work
    counts differ between two modes, or a mode that did no work at all (a mode whose runs
    found violations is no baseline: leave it out of ``by_mode``)."""
    modes = [m for m in by_mode if by_mode[m]]
    for m in modes:
        for r in by_mode[m]:
            if r["work"] and not any(r["work"].values()):
                return (f"seed {r['config']['seed']}: {m} did no work at all "
                        f"({', '.join(f'{k} 0' for k in r['work'])}): nothing to compare")
    if len(modes) < 2:
        return None
    seeds = sorted({r["config"]["seed"] for m in modes for r in by_mode[m]})
    for s in seeds:
        works = {m: next((r["work"] for r in by_mode[m] if r["config"]["seed"] == s), None)
                 for m in modes}
        base_m = modes[0]
        base = works[base_m]
        for m in modes[1:]:
            w = works[m]
            if w is None or base is None:
                return f"seed {s}: {m if w is None else base_m} did not run"
            if w != base:
                keys = sorted(set(w) | set(base))
                diff = ", ".join(f"{k} {base.get(k, 0)} vs {w.get(k, 0)}" for k in keys
                                 if w.get(k, 0) != base.get(k, 0))
                return f"seed {s}: {base_m} and {m} did different work ({diff})"
    return None


def _cell_key(cfg: dict, extra=()) -> tuple:
    return (cfg["workload"], tuple(cfg["drivers"]), cfg["threads"], cfg["rmap_locks"]) + \
        tuple(cfg[k] for k in extra)


def cells_of(runs: list[dict], ops_of=None, extra=()) -> list[dict]:
    """Group runs into cells, summarize each mode, compare v2008 with the others."""
    groups: dict = {}
    for r in runs:
        cfg = r["config"]
        groups.setdefault(_cell_key(cfg, extra), {}).setdefault(cfg["mode"], []).append(r)
    out = []
    for key, by_mode in groups.items():
        wl = key[0]
        ops = ops_of(wl) if ops_of else OPS.get(wl)
        cell = {"workload": wl, "drivers": list(key[1]), "threads": key[2],
                "rmap_locks": key[3], "modes": {}}
        for k, name in zip(key[4:], extra):
            cell[name] = k
        for m, rs in by_mode.items():
            cell["modes"][m] = summarize(sorted(rs, key=lambda r: r["config"]["seed"]), ops)
        bad = {m: s["violations"] for m, s in cell["modes"].items() if s["violations"]}
        cell["invalid_modes"] = {m: {"violations": v,
                                     "example": cell["modes"][m]["violation_example"]}
                                 for m, v in bad.items()}
        usable = {m: rs for m, rs in by_mode.items() if m not in bad}
        cell["refused"] = work_difference(usable)
        cell["comparisons"] = {}
        if cell["refused"] is None and "v2008" in usable:
            base = sorted(usable["v2008"], key=lambda r: r["config"]["seed"])
            for m, rs in usable.items():
                if m == "v2008":
                    continue
                rs = sorted(rs, key=lambda r: r["config"]["seed"])
                cell["comparisons"][m] = compare(base, rs)
        out.append(cell)
    return out


def compare(base: list[dict], other: list[dict]) -> dict:
    """Paired over seeds: ``other`` against ``base`` (v2008)."""
    def col(rs, f):
        return [f(r) for r in rs]
    lat = paired(col(base, lambda r: r["latency_ns"]["mean"]),
                 col(other, lambda r: r["latency_ns"]["mean"]))
    p99 = paired(col(base, lambda r: r["latency_ns"]["p99"]),
                 col(other, lambda r: r["latency_ns"]["p99"]))
    win = paired(col(base, lambda r: r["windows"]["all"]["ns"]["p50"]),
                 col(other, lambda r: r["windows"]["all"]["ns"]["p50"]))
    dev = paired(col(base, lambda r: r["device_per_us"]),
                 col(other, lambda r: r["device_per_us"]))
    rel = lat["rel"]["mean"]
    return {"latency_mean": lat, "latency_p99": p99, "window_p50": win, "device_per_us": dev,
            "latency_rel": rel,
            "practically_different": bool(lat["significant"] and abs(rel) >= PRACTICAL)}


# ------------------------------------------------------------------ verdicts of smmu check

VERDICT_SCENARIOS = ("cow-after-fork", "reclaim-while-device-reads", "writeback-device-writes",
                     "migration", "ksm-merge", "munmap-during-device-fault",
                     "mprotect-downgrade", "truncate", "exit-while-device-active",
                     "overlapping-invalidations")


def check_verdicts(quick: bool = False, schedules: int | None = None) -> list[dict]:
    """``smmu check`` of KVM (2008 style), GRU and XPMEM under v2008, v2008 with the
    pre-2017 ordering and range_only, with either kind of rmap lock: what each finds with
    ``schedules`` PCT and as many random schedules per scenario."""
    schedules = schedules or (3 if quick else 20)
    scenarios = VERDICT_SCENARIOS[:3] if quick else VERDICT_SCENARIOS
    drivers = (("kvm", KVM, {"style": "2008"}), ("gru", GRU, {}), ("xpmem", XPMEM2008, {}))
    rows = []
    for dname, cls, dopts in drivers:
        for mode in MODES.values():
            for locks in ("spinlock", "rwsem"):
                if quick and locks == "spinlock" and dname != "xpmem":
                    continue
                sim_opts = {"rmap_locks": locks}
                if mode.api == "v2008":
                    sim_opts["invalidate_page_outside_ptl"] = mode.outside_ptl
                kinds, known, ran, examples, where = set(), set(), 0, {}, {}
                t0 = time.perf_counter()
                for name in scenarios:
                    sc = get_scenario(name)
                    if mode.api not in sc.apis or not sc.applies(cls):
                        continue
                    for strategy in ("pct", "random"):
                        ex = explore(sc, cls, mode.api, strategy=strategy,
                                     schedules=schedules, seed=0, driver_options=dopts,
                                     sim_options=sim_opts)
                        ran += ex.schedules_run
                        for f in ex.findings:
                            k = f.violation.kind
                            if name in getattr(cls, "known_windows", {}) and \
                                    k == "WriteToReadOnly":
                                known.add(f"{k}@{name}")
                                continue
                            kinds.add(k)
                            where.setdefault(k, set()).add(name)
                            examples.setdefault(k, f"{name}: {f.violation.message}")
                rows.append({"driver": dname, "mode": mode.name, "rmap_locks": locks,
                             "schedules": ran, "findings": sorted(kinds),
                             "known_windows": sorted(known), "examples": examples,
                             "scenarios": {k: sorted(v) for k, v in where.items()},
                             "clean": not kinds, "wall_s": round(time.perf_counter() - t0, 2)})
    return rows


# ------------------------------------------------------------------ the claims

def _fmt(ci: dict, scale=1.0, digits=2) -> str:
    if ci is None or ci.get("n", 0) == 0 or math.isnan(ci["mean"]):
        return "n/a"
    return f"{ci['mean'] / scale:.{digits}f} +- {ci['ci95'] / scale:.{digits}f}"


def judge(doc: dict) -> list[dict]:
    """A verdict on each claim, with the numbers it rests on."""
    cells = [c for c in doc["cells"] if c["refused"] is None]
    out = []
    by = {c["id"]: dict(c) for c in CLAIMS}

    # ---- 1. hooks
    rows = []
    for c in cells:
        if c["workload"] not in SINGLE_PAGE:
            continue
        m = c["modes"]
        # counting calls needs no correct driver: XPMEM's v2008 runs (SleepInAtomic under
        # the PT lock) make the same VM calls as any other driver's. (Not the 3.7..4.10
        # order instead: there COW and KSM were bracketed by start/end, 6bdb913f0a70.)
        v08 = "v2008"
        if v08 not in m or "range_only" not in m:
            continue
        v, r = m[v08]["vm_calls_per_op"]["mean"], m["range_only"]["vm_calls_per_op"]["mean"]
        cbv = m[v08]["callbacks_per_op_by_driver"]
        cbr = m["range_only"]["callbacks_per_op_by_driver"]
        rows.append({"workload": c["workload"], "drivers": "+".join(c["drivers"]),
                     "vm_v2008": v, "vm_range_only": r, "ratio": v / r if r else float("nan"),
                     "callbacks": {d: [cbv[d]["mean"], cbr.get(d, {}).get("mean")]
                                   for d in cbv}})
    ratios = [x["ratio"] for x in rows if not math.isnan(x["ratio"])]
    cow = [x for x in rows if x["workload"] == "cow"]
    xp = [x for x in rows if x["drivers"] == "xpmem"]
    c1 = by["hooks"]
    c1["rows"] = rows
    if ratios:
        lo, hi = min(ratios), max(ratios)
        exact = all(abs(x - 0.5) < 1e-9 for x in ratios)
        cowtxt = ""
        if cow:
            k = cow[0]
            cowtxt = (f" On do_wp_page the VM makes {k['vm_v2008']:.2f} notifier call per COW "
                      f"in v2008 and {k['vm_range_only']:.2f} in range_only (fork's own pair "
                      "is at copy_page_range and not counted).")
        xptxt = ""
        if xp:
            k = next((v for d, v in xp[0]["callbacks"].items() if d.startswith("xpmem")),
                     None)
            if k:
                xptxt = (f" Driver callbacks halve only for drivers with a start hook: XPMEM "
                         f"(end only) gets {k[0]:.2f} callback per page in v2008 and "
                         f"{k[1]:.2f} in range_only.")
        c1["verdict"] = "supported" if exact else "partly supported"
        span = f"exactly {lo:.2f}" if exact else f"{lo:.2f} to {hi:.2f}"
        c1["text"] = (f"{c1['verdict'].capitalize()}: on every single-page path "
                      f"({', '.join(sorted({x['workload'] for x in rows}))}) v2008 makes "
                      f"{span} times the VM notifier calls of range_only, with one driver or "
                      f"several ({len(rows)} cells).{cowtxt}{xptxt}")
    else:
        c1["verdict"], c1["text"] = "not measured", "No comparable single-page cell ran."
    out.append(c1)

    # ---- 2. window
    wrows = []
    for c in cells:
        comp = c["comparisons"].get("range_only")
        if comp is None or c["workload"] not in SINGLE_PAGE:
            continue
        m = c["modes"]
        wrows.append({"workload": c["workload"], "drivers": "+".join(c["drivers"]),
                      "v2008_ns": m["v2008"]["window_p50_ns"]["mean"],
                      "range_only_ns": m["range_only"]["window_p50_ns"]["mean"],
                      "v2008_steps": m["v2008"]["window_p50_steps"]["mean"],
                      "range_only_steps": m["range_only"]["window_p50_steps"]["mean"],
                      "rel": comp["window_p50"]["rel"]["mean"],
                      "device_rel": comp["device_per_us"]["rel"]["mean"],
                      "stall_v2008": m["v2008"]["device_stall_frac"]["mean"],
                      "stall_range_only": m["range_only"]["device_stall_frac"]["mean"]})
    c2 = by["window"]
    c2["rows"] = wrows
    if wrows:
        shorter = [x for x in wrows if x["v2008_ns"] < x["range_only_ns"]]
        rels = [x["rel"] for x in wrows if not math.isnan(x["rel"])]
        longest = max(wrows, key=lambda x: x["rel"] if not math.isnan(x["rel"]) else -1)
        single = [x for x in wrows if x["workload"] != "cow-mt"]
        srel = [x["rel"] for x in single if not math.isnan(x["rel"])]
        worst = max(wrows, key=lambda x: (x["stall_range_only"] - x["stall_v2008"]))
        c2["verdict"] = ("supported" if len(shorter) == len(wrows) else
                         "partly supported" if shorter else "not supported")
        c2["text"] = (
            f"{c2['verdict'].capitalize()}: the masked window (from the PTE clear to the end "
            "of invalidate_page; from the start to the last end of a range) is shorter in "
            f"v2008 on {len(shorter)} of {len(wrows)} single-page cells. With one CPU "
            f"running the process range_only's median window is "
            f"{min(srel) * 100:+.0f}% to {max(srel) * 100:+.0f}% longer: both contain the "
            "same TLB flush and the range adds the start hook before the PT lock. It is "
            f"longest on {longest['workload']}/{longest['drivers']} "
            f"({longest['v2008_ns'] / 1000:.1f} vs {longest['range_only_ns'] / 1000:.1f} us, "
            f"{longest['rel'] * 100:+.0f}%): there the range opens before the PT lock and so "
            "also covers the wait for the lock, held by the other thread through its 15 us "
            "shootdown. What the window costs the devices is larger still: on "
            f"{worst['workload']}/{worst['drivers']} they stall "
            f"{worst['stall_v2008'] * 100:.0f}% of the time in v2008 and "
            f"{worst['stall_range_only'] * 100:.0f}% in range_only, because the 2008 KVM "
            "and GRU hold every fault off while any range is open. (In scheduler steps the "
            "comparison is muddier: a step is any task's, and devices stalled in a range "
            "take fewer of them.)")
    else:
        c2["verdict"], c2["text"] = "not measured", "No comparable single-page cell ran."
    out.append(c2)

    # ---- 3. locking
    vrows = doc.get("verdicts", [])
    c3 = by["locking"]
    c3["rows"] = vrows
    if vrows:
        def find(d, m, lk):
            return next((v for v in vrows if v["driver"] == d and v["mode"] == m and
                         v["rmap_locks"] == lk), None)
        kv = [v for v in vrows if v["driver"] in ("kvm", "gru") and v["mode"] == "v2008"]
        kvm_clean = all(v["clean"] for v in kv)
        xp = find("xpmem", "v2008", "rwsem")
        xpo = find("xpmem", "v2008-outside-ptl", "rwsem")
        xpr = find("xpmem", "range_only", "rwsem")
        xps = find("xpmem", "range_only", "spinlock")
        outside = [v for v in vrows if v["mode"] == "v2008-outside-ptl" and not v["clean"]]
        def said(v):
            if v is None:
                return "not run"
            if v["clean"]:
                return f"clean ({v['schedules']} schedules)"
            return "; ".join(f"{k} in {', '.join(v['scenarios'].get(k, []))}"
                             for k in v["findings"])
        parts = [f"KVM and GRU are {'clean' if kvm_clean else 'not clean'} under v2008 "
                 "(their invalidate_page takes only spinlocks, as Andrea's KVM pseudocode "
                 "does)"]
        if xp:
            parts.append(f"XPMEM, whose invalidation sleeps on a mutex, is {said(xp)} under "
                         "v2008, where invalidate_page runs under the PT lock")
        if xpo:
            ksm = "ksm-merge" in xpo.get("scenarios", {}).get("SleepInAtomic", [])
            parts.append(f"{said(xpo)} with invalidate_page moved after the PT lock (the "
                         "3.7-4.10 order" + ("; KSM's change_pte still falls back to "
                                             "invalidate_page under the lock" if ksm else
                                             "; COW and KSM are ranges there") + ")")
        if xpr:
            parts.append(f"{said(xpr)} under range_only with rwsem rmap locks")
        if xps:
            parts.append(f"and {said(xps)} with spinlock rmap locks (hooks called from rmap "
                         "walks are atomic: why patches 09/10 made them rwsems)")
        others = [v for v in outside if v["driver"] != "xpmem"]
        if others:
            parts.append("the pre-2017 order itself breaks " + "; ".join(
                f"{v['driver']} ({v['rmap_locks']}): {said(v)}" for v in others)
                + " — pitfall 1 of the 2017 removal: the new PTE is visible before "
                "invalidate_page")
        holds = kvm_clean and (xp is None or xp["clean"])
        c3["verdict"] = ("supported for KVM and GRU, not for sleeping drivers"
                         if kvm_clean and not holds else "supported" if holds else
                         "not supported")
        c3["text"] = c3["verdict"].capitalize() + ": " + "; ".join(parts) + ". " + \
            ("So invalidate_page adds a requirement range_only does not have: it must not "
             "sleep (under the PT lock) — the requirement XPMEM could not meet, and the one "
             "that broke amdgpu when 4.11 moved the call back under the lock."
             if xp is not None and not xp["clean"] else "")
    else:
        c3["verdict"], c3["text"] = "not measured", "No verdicts were run."
    out.append(c3)

    # ---- 4. Robin: performance
    prow = []
    for c in cells:
        comp = c["comparisons"].get("range_only")
        if comp is None:
            continue
        prow.append({"workload": c["workload"], "drivers": "+".join(c["drivers"]),
                     "threads": c["threads"], "rel": comp["latency_rel"],
                     "significant": comp["latency_mean"]["significant"],
                     "practical": comp["practically_different"],
                     "device_rel": comp["device_per_us"]["rel"]["mean"]})
    c4 = by["perf"]
    c4["rows"] = prow
    sweeps = doc.get("sweeps", {})
    breaks = []
    for name, pts in sweeps.items():
        first = next((p for p in pts if p.get("practical")), None)
        if first is not None:
            breaks.append(f"{name} = {first['value']:g} ({first['rel'] * 100:+.1f}%)")
    if prow:
        diff = [x for x in prow if x["practical"]]
        small = [x for x in prow if not x["practical"]]
        big = sorted(diff, key=lambda x: -abs(x["rel"]))[:3]
        rels = [x["rel"] for x in prow if not math.isnan(x["rel"])]
        c4["verdict"] = ("supported" if not diff else
                         "not supported" if len(diff) > len(small) else "partly supported")
        c4["text"] = (f"{c4['verdict'].capitalize()}: mean CPU latency per operation "
                      f"differs by {min(rels) * 100:+.1f}% to {max(rels) * 100:+.1f}% "
                      f"(range_only against v2008); in {len(small)} of {len(prow)} comparable "
                      f"cells the difference is not both significant and {PRACTICAL * 100:.0f}% "
                      "or more"
                      + (", the largest differences: " + "; ".join(
                          f"{x['workload']}/{x['drivers']} {x['rel'] * 100:+.1f}%" for x in big)
                         if big else "")
                      + ". With the default costs (40 ns a hook) the extra hook is small "
                      "beside a fault, a copy and a TLB flush. Where the difference exceeds "
                      "5% it goes both ways: on the multithreaded COW storm range_only is "
                      "faster, because v2008 calls invalidate_page, and the drivers' device "
                      "flushes, with the PT lock held, so the other thread waits longer for "
                      "the lock; on KSM it is slower (two ranges per merge against two "
                      "change_pte). The devices feel more than the CPU (see the window claim)."
                      + (" The claim stops holding at " + ", ".join(breaks) + "."
                         if breaks else " No sweep point crossed the bar."))
    else:
        c4["verdict"], c4["text"] = "not measured", "No comparable cell ran."
    out.append(c4)

    # ---- 5. brk
    c5 = by["brk"]
    brows = doc.get("brk", [])
    c5["rows"] = brows
    if brows:
        base = [b for b in brows if b["wakeup_ns"] is None and b["handoff"]]
        wake = [b for b in brows if b["wakeup_ns"] is not None]
        nohand = next((b for b in brows if not b["handoff"]), None)
        ref = next((b for b in base if b["walker_gap_ns"] == BRK_REF_GAP), base[0]
                   if base else brows[0])
        inband = [b for b in brows if 0.10 <= -b["throughput_rel"] <= 0.15]
        rel = [b["throughput_rel"] for b in brows]
        losses = sorted(-b["throughput_rel"] for b in [ref] + wake)
        bracket = bool(losses) and losses[0] <= 0.125 <= losses[-1]
        if inband and not any(b in base for b in inband):
            c5["verdict"] = "supported for a bare-metal wake-up cost"
        elif inband:
            c5["verdict"] = "supported"
        elif bracket:
            c5["verdict"] = "supported in direction; its size depends on the wake-up cost"
        elif all(r < 0 for r in rel):
            c5["verdict"] = "supported in direction, not in size"
        else:
            c5["verdict"] = "not supported"
        pct = lambda b: f"{b['throughput_rel'] * 100:+.1f}%"  # noqa: E731
        txt = (f"{c5['verdict'].capitalize()}: with a reverse-map walker pausing "
               f"{ref['walker_gap_ns'] / 1000:g} us between walks, brk throughput with the "
               f"rwsem is {pct(ref)} against the spinlock's (p99 latency "
               f"{ref['p99_rwsem'] / 1000:.1f} vs {ref['p99_spinlock'] / 1000:.1f} us); "
               "over walker pauses of "
               + ", ".join(f"{b['walker_gap_ns'] / 1000:g}" for b in base) + " us: "
               + ", ".join(pct(b) for b in base) + ".")
        if wake:
            txt += (" The size rests on the wake-up a sleeping brk pays (20 us on this VM): "
                    "with " + ", ".join(f"{b['wakeup_ns'] / 1000:g} us" for b in wake)
                    + " (bare metal) it is " + ", ".join(pct(b) for b in wake)
                    + (" — the 10-15% of patch 09 falls in this range"
                       if any(0.10 <= -b["throughput_rel"] <= 0.15 for b in wake) else "")
                    + ".")
        if nohand is not None:
            delta = (nohand["throughput_rel"] - ref["throughput_rel"]) * 100
            txt += (f" Without the hand-off (a released rwsem goes to whoever runs first) it "
                    f"is {pct(nohand)}: "
                    + (f"letting the waiter run first costs {-delta:.1f} points of it"
                       if abs(delta) >= 2 else
                       "the hand-off itself changes little; the sleeping does it") + ".")
        txt += (" The spinlock spins for the rest of the walk; the rwsem sleeps and pays a "
                "wake-up each time. v2008 and range_only agree (brk is a range in both).")
        c5["text"] = txt
    else:
        c5["verdict"], c5["text"] = "not measured", "No brk runs."
    out.append(c5)
    return out


def answer(doc: dict) -> str:
    """One paragraph: was invalidate_page worth keeping, by the numbers of the claims."""
    by = {c["id"]: c for c in doc["claims"]}
    parts = []
    h = by["hooks"]
    if h.get("rows"):
        parts.append("Its benefits are real. It halves the VM's notifier calls on "
                     "single-page paths")
    w = by["window"]
    if w.get("rows"):
        srel = [x["rel"] for x in w["rows"] if x["workload"] != "cow-mt"
                and not math.isnan(x["rel"])]
        mt = [x["rel"] for x in w["rows"] if x["workload"] == "cow-mt"
              and not math.isnan(x["rel"])]
        stall = max(w["rows"], key=lambda x: x["stall_range_only"] - x["stall_v2008"])
        parts.append(
            "and it shortens the masked-fault window: range_only's is "
            + (f"{min(srel) * 100:.0f}-{max(srel) * 100:.0f}% longer with one CPU" if srel
               else "longer")
            + (f" and up to {max(mt) * 100:.0f}% longer on a multithreaded COW storm" if mt
               else "")
            + f", which the 2008 KVM and GRU feel as device stalls ({stall['workload']}/"
            f"{stall['drivers']}: {stall['stall_v2008'] * 100:.0f}% of device time in v2008, "
            f"{stall['stall_range_only'] * 100:.0f}% in range_only)")
    p = by["perf"]
    if p.get("rows"):
        within = sum(1 for x in p["rows"] if not x["practical"])
        first = {k: next((pt for pt in pts if pt.get("practical")), None)
                 for k, pts in doc.get("sweeps", {}).items()}
        hook = first.get("hook_cost_ns")
        parts.append(
            f". On the CPU the two are within {PRACTICAL * 100:.0f}% on {within} of "
            f"{len(p['rows'])} comparable cells with 40 ns hooks, as Robin expected"
            + (f"; the difference passes {PRACTICAL * 100:.0f}% once a hook costs "
               f"{hook['value']:g} ns ({hook['rel'] * 100:+.1f}%)" if hook else "")
            + ", and on a multithreaded COW storm range_only is the faster one, because "
            "invalidate_page keeps the PT lock held through the drivers' flushes")
    lk = by["locking"]
    if lk.get("rows"):
        parts.append(". Its cost is a locking rule: invalidate_page runs under the PT lock "
                     "and must not sleep (XPMEM is SleepInAtomic there), and calling it after "
                     "the lock instead (3.7-4.10) leaves the new PTE visible before the "
                     "secondary MMU is told (GRU writes through a stale writable entry after "
                     "page_mkclean): the two pitfalls that removed it in 4.13")
    tr = [c for c in doc["cells"] if c["workload"].startswith("strace:") and
          "v2008" in c["modes"] and "range_only" in c["modes"]]
    if tr:
        diff = [c["workload"].split(":", 1)[1] for c in tr
                if c["modes"]["v2008"]["vm_calls_per_op"]["mean"] !=
                c["modes"]["range_only"]["vm_calls_per_op"]["mean"]]
        parts.append(". On the real programs replayed, single-page invalidations are rare: "
                     + (f"only {', '.join(diff)} (COW after its forks) makes v2008 and "
                        "range_only differ at all" if diff else
                        "none of them makes v2008 and range_only differ"))
    b = by["brk"]
    rows = b.get("rows") or []
    ref = next((r for r in rows if r["walker_gap_ns"] == BRK_REF_GAP and r["handoff"] and
                r["wakeup_ns"] is None), None)
    wake = [r for r in rows if r["wakeup_ns"] is not None]
    if ref is not None:
        parts.append(". Patch 09's brk regression is reproduced, its size set by what waking "
                     "a sleeping brk costs: "
                     + ", ".join(f"{r['throughput_rel'] * 100:+.0f}% with a "
                                 f"{r['wakeup_ns'] / 1000:g} us wake-up" for r in wake)
                     + f" and {ref['throughput_rel'] * 100:+.0f}% with this VM's 20 us")
    text = " ".join(parts).replace(" .", ".").replace(" ,", ",")
    return ("Was invalidate_page worth keeping? " + text + ".") if text else ""


def brk_rows(runs: list[dict]) -> list[dict]:
    """brk: rwsem against spinlock per variant (walker pause; wake-up cost; rwsem without
    the hand-off), in v2008 (range_only runs the same ranges and is checked to match)."""
    def variant(r):
        c = r["config"]
        return (c["walker_gap_ns"], c["costs"].get("wakeup", None), c["fair_locks"])

    def thr(rs):
        return [r["ops"] / (r["span_ns"] / 1e9) for r in rs]

    def pick(v, locks, mode="v2008", fair=None):
        return sorted([r for r in runs if variant(r)[:2] == v[:2] and
                       r["config"]["fair_locks"] == (v[2] if fair is None else fair) and
                       r["config"]["rmap_locks"] == locks and r["config"]["mode"] == mode],
                      key=lambda r: r["config"]["seed"])

    rows = []
    for v in sorted({variant(r) for r in runs}, key=lambda v: (v[2] is False, v[1] or 0, v[0])):
        gap, wake, fair = v
        rw = pick(v, "rwsem")
        sp = pick(v, "spinlock", fair=True)       # spinlocks: the ticket lock either way
        if not sp or not rw:
            continue
        p = paired(thr(sp), thr(rw))
        other = pick(v, "rwsem", "range_only")
        rows.append({"walker_gap_ns": gap, "wakeup_ns": wake, "handoff": fair,
                     "throughput_spinlock": mean_ci(thr(sp)),
                     "throughput_rwsem": mean_ci(thr(rw)),
                     "throughput_rel": p["rel"]["mean"], "throughput_rel_ci": p["rel"]["ci95"],
                     "p99_spinlock": mean_ci([r["latency_ns"]["p99"] for r in sp])["mean"],
                     "p99_rwsem": mean_ci([r["latency_ns"]["p99"] for r in rw])["mean"],
                     "walks_spinlock": mean_ci([r["extra"].get("walks", 0) for r in sp]),
                     "walks_rwsem": mean_ci([r["extra"].get("walks", 0) for r in rw]),
                     "wakeups_rwsem": mean_ci([r["retries"]["wakeup"] for r in rw]),
                     "range_only_identical": (all(a["latency_ns"] == b["latency_ns"]
                                                  for a, b in zip(rw, other))
                                              if other else None)})
    return rows


def sweep_rows(name: str, pts: list[tuple]) -> list[dict]:
    rows = []
    for v in sorted({p[0] for p in pts}):
        rs = {m: sorted([r for val, r in pts if val == v and r["config"]["mode"] == m],
                        key=lambda r: r["config"]["seed"]) for m in ("v2008", "range_only")}
        lat = {m: [r["latency_ns"]["mean"] for r in rs[m]] for m in rs}
        p = paired(lat["v2008"], lat["range_only"])
        refused = work_difference(rs)
        rows.append({"value": v, "v2008": mean_ci(lat["v2008"]),
                     "range_only": mean_ci(lat["range_only"]),
                     "rel": p["rel"]["mean"], "rel_ci": p["rel"]["ci95"],
                     "significant": p["significant"], "refused": refused,
                     "practical": bool(refused is None and p["significant"] and
                                       abs(p["rel"]["mean"]) >= PRACTICAL),
                     "device_v2008": mean_ci([r["device_per_us"] for r in rs["v2008"]]),
                     "device_range_only": mean_ci([r["device_per_us"]
                                                   for r in rs["range_only"]])})
    return rows


def _trim(r: dict) -> dict:
    """A run as the JSON keeps it (no per-operation arrays)."""
    return {k: v for k, v in r.items() if k not in ("stats",)} | \
        {"stats": {k: v for k, v in r["stats"].items() if isinstance(v, (int, float))}}


def run_study(quick: bool = False, seeds: int | None = None, progress=None,
              verdicts: bool = True) -> dict:
    """Run the whole study; ``progress(done, total, label)`` is told about each run."""
    seeds = seeds if seeds is not None else (2 if quick else 10)
    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")
    p = plan(quick, seeds)
    total = len(p["main"]) + sum(len(v) for v in p["sweeps"].values()) + len(p["brk"]) + \
        len(p["traces"])
    done = 0
    t0 = time.perf_counter()

    def go(cfg: Config) -> dict:
        nonlocal done
        r = run(cfg)
        done += 1
        if progress is not None:
            progress(done, total, f"{cfg.workload} {cfg.mode} {'+'.join(cfg.drivers)}")
        return r

    # JIT warm-up outside every measured run's wall time
    run(Config("cow", "v2008", ("kvm", "gru"), 0, 4))
    main = [go(c) for c in p["main"]]
    sweeps = {name: [(v, go(c)) for v, c in cfgs] for name, cfgs in p["sweeps"].items()}
    brk = [go(c) for c in p["brk"]]
    traces = [go(c) for c in p["traces"]]
    doc = {
        "benchmark": "invalidate-page-vs-range",
        "revision": revision(),
        "version": smmu.__version__,
        "options": {"quick": quick, "seeds": seeds, "npages": p["main"][0].npages,
                    "modes": {m.name: m.describe for m in MODES.values()},
                    "practical_threshold": PRACTICAL,
                    "fair_locks": True, "jitter": p["main"][0].jitter,
                    "device_gap_ns": p["main"][0].device_gap_ns},
        "costs": cost_table(),
        "claims_quoted": CLAIMS,
    }
    doc["cells"] = cells_of(main) + cells_of(traces, ops_of=lambda wl: None)
    doc["sweeps"] = {name: sweep_rows(name, pts) for name, pts in sweeps.items()}
    doc["brk"] = brk_rows(brk)
    doc["brk_cells"] = cells_of(brk, extra=("walker_gap_ns",))
    doc["verdicts"] = check_verdicts(quick) if verdicts else []
    doc["claims"] = judge(doc)
    doc["answer"] = answer(doc)
    doc["runs"] = [_trim(r) for r in main + traces + brk] + \
        [_trim(r) | {"sweep": name, "value": v} for name, pts in sweeps.items() for v, r in pts]
    doc["wall_s"] = round(time.perf_counter() - t0, 1)
    return doc
