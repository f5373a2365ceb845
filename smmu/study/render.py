"""The study as text: an 80-column table per part and one paragraph per claim (what ``smmu bench
invalidate-page-vs-range`` prints), and the Markdown of ``docs/study-invalidate-page.md``."""

from __future__ import annotations

import math
import textwrap

from smmu.study import method

WIDTH = 80
DRIVER_ABBREV = {"xpmem": "xp"}
SHORT_MODE = {"v2008": "v2008", "v2008-outside-ptl": "v08-out", "range_only": "range"}


def _n(x, digits=1, scale=1.0):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x / scale:.{digits}f}"


def _ci(ci, digits=1, scale=1.0):
    if not ci or ci.get("n", 0) == 0 or math.isnan(ci["mean"]):
        return "-"
    if ci["ci95"] / scale < 0.5 * 10 ** -digits:
        return f"{ci['mean'] / scale:.{digits}f}"
    return f"{ci['mean'] / scale:.{digits}f}~{ci['ci95'] / scale:.{digits}f}"


def _rows(header, rows, widths):
    fmt = " ".join(f"{{:{'<' if i < 3 else '>'}{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*header), "-" * min(WIDTH, sum(widths) + len(widths) - 1)]
    for r in rows:
        out.append(fmt.format(*[str(x)[:w] for x, w in zip(r, widths)]))
    return out


def cell_table(cells) -> list[str]:
    """Per cell and mode: VM calls and driver callbacks per operation, CPU latency p50 (with
    its 95% interval) and p99 in us, masked window p50 in ns and steps, device accesses per
    us and stall %. A refused or invalid cell says why below its rows."""
    head = ("workload", "drivers", "mode", "vm/op", "cb/op", "p50 us", "p99us", "win",
            "st", "dev/us", "stall")
    widths = (9, 10, 7, 5, 5, 10, 5, 5, 3, 6, 5)
    lines = []
    rows = []
    notes = []
    for c in cells:
        label = c["workload"].replace("strace:", "")
        drv = "+".join(DRIVER_ABBREV.get(d, d) for d in c["drivers"])
        if c["threads"] > 1:
            label = f"{label}x{c['threads']}"
        for m, s in c["modes"].items():
            bad = m in c["invalid_modes"]
            rows.append((label, drv, SHORT_MODE.get(m, m) + ("!" if bad else ""),
                         _n(s["vm_calls_per_op"]["mean"], 2),
                         _n(s["callbacks_per_op"]["mean"], 2),
                         _ci(s["latency_p50_ns"], 2, 1000.0),
                         _n(s["latency_p99_ns"]["mean"], 1, 1000.0),
                         _n(s["window_p50_ns"]["mean"], 0),
                         _n(s["window_p50_steps"]["mean"], 0),
                         _n(s["device_per_us"]["mean"], 2),
                         _n(s["device_stall_frac"]["mean"] * 100, 0) + "%"))
            label, drv = "", ""
        for m, why in c["invalid_modes"].items():
            notes.append(f"! {c['workload']}/{'+'.join(c['drivers'])} {m}: "
                         f"{', '.join(why['violations'])}"
                         + (f" ({why['example'][:120]})" if why.get("example") else ""))
        if c["refused"]:
            notes.append(f"x {c['workload']}/{'+'.join(c['drivers'])}: not compared: "
                         f"{c['refused']}")
    lines += _rows(head, rows, widths)
    for n in notes:
        lines += textwrap.wrap(n, WIDTH, subsequent_indent="    ")
    return lines


def sweep_table(sweeps) -> list[str]:
    lines = []
    for name, pts in sweeps.items():
        rows = [(f"{p['value']:g}", "", "", _ci(p["v2008"], 2, 1000.0),
                 _ci(p["range_only"], 2, 1000.0),
                 ("-" if math.isnan(p["rel"]) else f"{p['rel'] * 100:+.1f}%"),
                 "yes" if p["practical"] else ("refused" if p["refused"] else "no"))
                for p in pts]
        lines += [f"sweep {name}: mean CPU latency per COW (us), range_only vs v2008"]
        lines += _rows((name[:12], "", "", "v2008", "range_only", "diff", ">5%"), rows,
                       (12, 0, 0, 14, 14, 8, 7))
        lines.append("")
    return lines


def brk_variant(b) -> str:
    """``gap 20us``, ``gap 20us wake 2us``, ``gap 20us no hand-off``."""
    out = f"gap {b['walker_gap_ns'] / 1000:g}us"
    if b.get("wakeup_ns") is not None:
        out += f" wake {b['wakeup_ns'] / 1000:g}us"
    if not b.get("handoff", True):
        out += " no hand-off"
    return out


def brk_table(rows) -> list[str]:
    out = ["brk (Aim9 analogue): brk calls per second, rwsem vs spinlock rmap locks"]
    out += _rows(("variant", "", "", "spinlock/s", "rwsem/s", "change", "p99 sp us",
                  "p99 rw us"),
                 [(brk_variant(b), "", "",
                   _n(b["throughput_spinlock"]["mean"], 0), _n(b["throughput_rwsem"]["mean"], 0),
                   f"{b['throughput_rel'] * 100:+.1f}%", _n(b["p99_spinlock"], 1, 1000.0),
                   _n(b["p99_rwsem"], 1, 1000.0)) for b in rows],
                 (24, 0, 0, 10, 9, 7, 9, 9))
    return out


def verdict_table(rows) -> list[str]:
    out = ["smmu check verdicts (pct schedules over the study's scenarios)"]
    out += _rows(("driver", "mode", "rmap", "schedules", "findings"),
                 [(v["driver"], v["mode"], v["rmap_locks"], v["schedules"],
                   ", ".join(v["findings"]) or ("clean" + (" (known window)"
                                                           if v["known_windows"] else "")))
                  for v in rows], (7, 17, 8, 9, 34))
    return out


def conclusions(claims) -> list[str]:
    out = []
    for c in claims:
        out += textwrap.wrap(f"[{c['id']}] {c['who']}: \"{c['quote']}\"", WIDTH)
        out += textwrap.wrap(f"-> {c['text']}", WIDTH, initial_indent="  ",
                             subsequent_indent="  ")
        out.append("")
    return out


def text(doc) -> str:
    """Everything ``smmu bench invalidate-page-vs-range`` prints (80 columns)."""
    o = doc["options"]
    lines = [f"invalidate_page vs range-only: {o['seeds']} seeds, {o['npages']} pages, "
             f"revision {doc['revision']}",
             "modes: " + "; ".join(f"{SHORT_MODE.get(k, k)} = {v}" for k, v in o["modes"].items()),
             "mean over seeds; p50 'a~b': mean ~ 95% interval. vm/op: the VM's notifier calls "
             "per operation; cb/op: driver callbacks; win: masked-fault window, median "
             "ns; st: its median in scheduler steps; dev/us: device accesses per us; "
             "stall: device time in faults. '!' a mode with violations (not compared).", ""]
    lines = [x for line in lines for x in (textwrap.wrap(line, WIDTH) or [""])]
    lines += cell_table(doc["cells"]) + [""]
    lines += sweep_table(doc["sweeps"])
    if doc.get("brk"):
        lines += brk_table(doc["brk"]) + [""]
    if doc.get("verdicts"):
        lines += verdict_table(doc["verdicts"]) + [""]
    lines += ["Conclusions", "-----------"] + conclusions(doc["claims"])
    return "\n".join(lines)


def markdown(doc, plots: dict | None = None) -> str:
    """``docs/study-invalidate-page.md``: claims, method, tables, plots, conclusions, limits."""
    o = doc["options"]
    plots = plots or {}
    md = [method.TITLE, "",
          f"Generated by `make study` (`smmu bench invalidate-page-vs-range --seeds {o['seeds']}"
          f"`) at revision `{doc['revision']}` in {doc.get('wall_s', 0):.0f} s; the JSON "
          "with every run is written to `bench-results/study-invalidate-page.json` (not "
          "committed: several MB). Do not edit by hand.", ""]
    if doc.get("answer"):
        md += ["## The answer", "", doc["answer"], ""]
    md += ["## The claims", ""]
    for c in doc["claims"]:
        md.append(f"* **{c['id']}** — {c['who']}: *\"{c['quote']}\"*")
    md += ["", "## Verdicts", ""]
    for c in doc["claims"]:
        md += [f"### {c['id']}: {c['verdict']}", "", c["text"], ""]
        if c["id"] in plots:
            md += [f"![{c['id']}]({plots[c['id']]})", ""]
    md += [method.METHOD.format(seeds=o["seeds"], npages=o["npages"],
                                threshold=int(o["practical_threshold"] * 100),
                                jitter=int(o["jitter"] * 100), gap=o["device_gap_ns"]), ""]
    md += ["## Cost model", "", "| cost | ns | source |", "|---|---:|---|"]
    for k, v in doc["costs"].items():
        md.append(f"| `{k}` | {v['ns']:g} | {v['source']} |")
    md += ["", "## Tables", "", "```", *cell_table(doc["cells"]), "```", ""]
    for key in ("sweeps", "brk", "verdicts"):
        if key in plots:
            md += [f"![{key}]({plots[key]})", ""]
    md += ["```", *sweep_table(doc["sweeps"]), "```", ""]
    if doc.get("brk"):
        md += ["```", *brk_table(doc["brk"]), "```", ""]
    if doc.get("verdicts"):
        md += ["```", *verdict_table(doc["verdicts"]), "```", ""]
    md += [method.LIMITS, ""]
    return "\n".join(md)
