"""Device TLB throughput: the jitted smmu.tlb.TLB against pycachesim and a pure-Python dict
TLB on one address stream, plus the cost of flush_range by range size (probe vs scan).

    python benchmarks/bench_tlb.py [--json bench-results/tlb.json] [--accesses 1000000]

Every contender is true LRU with the same geometry, so their hit counts must be equal; the
cross-check is reported (not asserted). Goals: >= 2x pycachesim, >= 10x the dict TLB.
Timings are the best of --repeat rounds (contenders interleaved), each run on a fresh, cold
structure, after a warm-up that compiles (or loads) the kernels.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smmu.base.constants import PAGE_SHIFT  # noqa: E402
from smmu.devices.tlb import TLB  # noqa: E402
from smmu.devices.tlb_ref import RefTLB  # noqa: E402

GOAL_VS_PYCACHESIM = 2.0
GOAL_VS_DICT = 10.0
FLUSH_SIZES = (1, 8, 32, 64, 128, 512, 4096)


def address_stream(n, working_set, seed):
    """Zipf-like page stream over `working_set` pages scattered in a 1 GiB region."""
    rng = np.random.default_rng(seed)
    pages = rng.choice(1 << 18, size=working_set, replace=False).astype(np.int64) + (1 << 20)
    ranks = (rng.zipf(1.2, n) - 1) % working_set
    return pages[ranks]


def dict_tlb_hits(vpns, sets, ways):
    """The plain-Python baseline: one OrderedDict per set, move_to_end on hit."""
    table = [OrderedDict() for _ in range(sets)]
    mask = sets - 1
    hits = 0
    for vpn in vpns:
        s = table[vpn & mask]
        if vpn in s:
            s.move_to_end(vpn)
            hits += 1
        else:
            if len(s) >= ways:
                s.popitem(last=False)
            s[vpn] = vpn
    return hits


def bench_stream(vpns, sets, ways, repeat, ref_accesses):
    """Time each contender on the whole stream; rounds interleave the contenders so that a
    burst of load on a shared machine hits them alike; the best round counts."""
    n = len(vpns)
    contenders = {}     # name -> (fn, accesses, rounds)

    def jit(policy):
        return lambda: TLB(sets, ways, policy).access_stream(0, vpns)

    for policy in ("lru", "plru"):
        TLB(sets, ways, policy).access_stream(0, vpns[:1000])      # warm-up: load/compile
        contenders[f"smmu.tlb {policy} (access_stream)"] = (jit(policy), n, repeat)
    try:
        from cachesim import Cache, CacheSimulator, MainMemory
    except ImportError:
        pcs = None
    else:
        addrs = (vpns << PAGE_SHIFT).tolist()     # its fastest input: a Python list

        def pcs():
            mem = MainMemory()
            cache = Cache("tlb", sets, ways, 1 << PAGE_SHIFT, replacement_policy="LRU")
            mem.load_to(cache)
            mem.store_from(cache)
            CacheSimulator(cache, mem).load(addrs)
            return cache.stats()["HIT_count"]
        contenders["pycachesim LRU"] = (pcs, n, repeat)
    as_list = vpns.tolist()
    contenders["pure-Python dict TLB"] = (lambda: dict_tlb_hits(as_list, sets, ways), n,
                                          max(1, repeat // 2))
    part = vpns[:ref_accesses]
    contenders["smmu.tlb_ref.RefTLB (reference)"] = (
        lambda: RefTLB(sets, ways, "lru").access_stream(0, part), len(part), 1)

    rows = {name: {"seconds": float("inf"), "accesses": acc}
            for name, (_, acc, _) in contenders.items()}
    for r in range(repeat):
        for name, (fn, _, rounds) in contenders.items():
            if r >= rounds:
                continue
            t0 = time.perf_counter()
            hits = fn()
            rows[name]["seconds"] = min(rows[name]["seconds"], time.perf_counter() - t0)
            rows[name]["hits"] = int(hits)
    for row in rows.values():
        row["ns_per_access"] = row["seconds"] / row["accesses"] * 1e9
    if pcs is None:
        rows["pycachesim LRU"] = {"skipped": "pycachesim not installed (pip install pycachesim)"}
    return rows


def bench_single_ops(sets, ways, n=20000):
    """Per-call cost from Python (one crossing each): what a driver pays per access."""
    t = TLB(sets, ways)
    t.insert(0, 1, 1, True, 0)
    t.lookup(0, 1)
    out = {}
    for name, fn in (("lookup", lambda i: t.lookup(0, i & 1023)),
                     ("insert", lambda i: t.insert(0, i & 1023, i, True, 0)),
                     ("flush_page", lambda i: t.flush_page(0, i & 1023))):
        fn(0)                                              # warm-up: load the kernel
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        out[name] = (time.perf_counter() - t0) / n * 1e9
    return out


def bench_flush(sets, ways, calls):
    """flush_range cost by range size for each method, on a full TLB refilled (untimed)
    before each call with pages drawn from a window around the flushed range."""
    rng = np.random.default_rng(7)
    base = 1 << 20
    fills = [rng.choice(8192, size=4 * sets * ways, replace=False).astype(np.int64) + base
             for _ in range(8)]
    rows = []
    for pages in FLUSH_SIZES:
        row = {"pages": pages}
        for method in ("probe", "scan", "auto"):
            t = TLB(sets, ways)
            times, flushed = [], 0
            for i in range(calls):
                t.access_stream(0, fills[i % len(fills)])
                t0 = time.perf_counter()
                flushed += t.flush_range(0, base, base + pages, method)
                times.append(time.perf_counter() - t0)
            row[f"{method}_us"] = float(np.median(times) * 1e6)
            row["flushed_per_call"] = flushed / calls
        row["faster"] = "probe" if row["probe_us"] <= row["scan_us"] else "scan"
        row["auto_picks"] = "probe" if pages < sets else "scan"
        rows.append(row)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default="bench-results/tlb.json", help="where to write results")
    ap.add_argument("--accesses", type=int, default=1_000_000)
    ap.add_argument("--sets", type=int, default=64)
    ap.add_argument("--ways", type=int, default=8)
    ap.add_argument("--working-set", type=int, default=0,
                    help="distinct pages in the stream (default: 4x the TLB capacity)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--flush-calls", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        TLB(args.sets, args.ways)
    except ValueError as e:
        ap.error(str(e))
    ws = args.working_set or 4 * args.sets * args.ways
    vpns = address_stream(args.accesses, ws, args.seed)

    stream = bench_stream(vpns, args.sets, args.ways, args.repeat,
                          ref_accesses=min(args.accesses, 100_000))
    single = bench_single_ops(args.sets, args.ways)
    flush = bench_flush(args.sets, args.ways, args.flush_calls)

    jit = stream["smmu.tlb lru (access_stream)"]
    pcs = stream.get("pycachesim LRU", {})
    dct = stream["pure-Python dict TLB"]
    lru_hits = {k: v["hits"] for k, v in stream.items()
                if "hits" in v and v["accesses"] == args.accesses and "plru" not in k}
    goals = {"vs_dict": {"speedup": dct["ns_per_access"] / jit["ns_per_access"],
                         "goal": GOAL_VS_DICT}}
    if "ns_per_access" in pcs:
        goals["vs_pycachesim"] = {"speedup": pcs["ns_per_access"] / jit["ns_per_access"],
                                  "goal": GOAL_VS_PYCACHESIM}
    for g in goals.values():
        g["met"] = g["speedup"] >= g["goal"]
    crossover = next((r["pages"] for r in flush if r["faster"] == "scan"), None)
    from smmu.runtime.costs import cost_table
    result = {
        "benchmark": "tlb",
        "costs": cost_table(),       # the simulated cost model (not used by these wall timings)
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "geometry": {"sets": args.sets, "ways": args.ways, "policy": "lru"},
        "stream": {"accesses": args.accesses, "working_set_pages": ws, "seed": args.seed,
                   "distribution": "zipf(1.2) ranks over scattered pages"},
        "stream_results": stream,
        "cross_check": {"lru_hits": lru_hits, "equal": len(set(lru_hits.values())) == 1},
        "goals": goals,
        "single_op_ns": single,
        "flush_range": flush,
        "flush_crossover_pages": crossover,
    }

    print(f"TLB {args.sets} sets x {args.ways} ways, {args.accesses:,} accesses over {ws} "
          f"pages (zipf), best of {args.repeat}")
    print(f"  {'contender':36} {'ns/access':>10} {'hits':>10}")
    for name, row in stream.items():
        if "skipped" in row:
            print(f"  {name:36} skipped: {row['skipped']}")
            continue
        part = "" if row["accesses"] == args.accesses else f"  (first {row['accesses']:,})"
        print(f"  {name:36} {row['ns_per_access']:10.1f} {row['hits']:10,}{part}")
    print(f"  cross-check (LRU hit counts equal): {result['cross_check']['equal']}")
    for name, g in goals.items():
        print(f"  speedup {name}: {g['speedup']:.1f}x (goal {g['goal']:.0f}x) "
              f"{'met' if g['met'] else 'NOT met'}")
    print("  single calls from Python: " + ", ".join(
        f"{k} {v:.0f} ns" for k, v in single.items()))
    print(f"flush_range median us per call (sets={args.sets}: auto probes below that)")
    print(f"  {'pages':>6} {'probe':>8} {'scan':>8} {'auto':>8}  faster  auto picks")
    for r in flush:
        print(f"  {r['pages']:6} {r['probe_us']:8.2f} {r['scan_us']:8.2f} {r['auto_us']:8.2f}"
              f"  {r['faster']:6}  {r['auto_picks']}")
    print(f"  measured crossover: scan first faster at {crossover} pages")

    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    from smmu.cli import configure_logging  # a script, like the CLI: it configures logging
    configure_logging()
    main()
