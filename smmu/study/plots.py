"""PNG figures of the study (matplotlib, the ``plot`` extra): one per claim and one for the
sweeps, each with 95% intervals as error bars. :func:`write_all` returns ``{name: file}``."""

from __future__ import annotations

import math
from pathlib import Path

from smmu.study.workloads import SINGLE_PAGE

MODE_COLORS = {"v2008": "#1f77b4", "v2008-outside-ptl": "#9467bd", "range_only": "#d62728"}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _cells(doc, single_only=True):
    return [c for c in doc["cells"]
            if (not single_only or c["workload"] in SINGLE_PAGE) and c["refused"] is None]


def _label(c):
    wl = c["workload"].replace("strace:", "")
    if c.get("threads", 1) > 1:
        wl += f" x{c['threads']}"
    return f"{wl}  {'+'.join(c['drivers'])}"


def _bars(ax, cells, key, modes, scale=1.0, xlabel=""):
    """Horizontal bars, one group per cell (top to bottom), one bar per mode, with the 95%
    interval as error bars."""
    height = 0.8 / len(modes)
    n = len(cells)
    for j, m in enumerate(modes):
        ys, xs, es = [], [], []
        for i, c in enumerate(cells):
            st = c["modes"].get(m)
            if st is None or m in c["invalid_modes"]:
                continue
            v = st[key]
            ys.append(n - 1 - i + ((len(modes) - 1) / 2 - j) * height)
            xs.append(v["mean"] / scale)
            es.append(0.0 if math.isnan(v["ci95"]) else v["ci95"] / scale)
        ax.barh(ys, xs, height, xerr=es, capsize=2, label=m, color=MODE_COLORS.get(m))
    ax.set_yticks(range(n))
    ax.set_yticklabels([_label(c) for c in reversed(cells)], fontsize=7)
    ax.set_xlabel(xlabel)


def _height(cells):
    return max(3.5, 0.28 * len(cells) + 1.2)


def plot_hooks(doc, path):
    plt = _plt()
    cells = _cells(doc)
    fig, axes = plt.subplots(1, 2, figsize=(11, _height(cells)))
    _bars(axes[0], cells, "vm_calls_per_op", ("v2008", "range_only"),
          xlabel="VM notifier calls per operation")
    axes[0].set_title("the VM's notifier calls")
    _bars(axes[1], cells, "callbacks_per_op", ("v2008", "range_only"),
          xlabel="driver callbacks per operation (all drivers)")
    axes[1].set_title("driver callbacks")
    axes[1].set_yticklabels([])
    axes[0].legend(loc="lower right", fontsize=7)
    fig.suptitle("Claim 1: invalidate_page halves the hooks on single-page paths")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_window(doc, path):
    plt = _plt()
    cells = _cells(doc)
    modes = ("v2008", "v2008-outside-ptl", "range_only")
    fig, axes = plt.subplots(1, 3, figsize=(15, _height(cells)))
    _bars(axes[0], cells, "window_p50_ns", modes, scale=1000.0, xlabel="us")
    axes[0].set_title("masked-fault window, median (us)")
    _bars(axes[1], cells, "window_p50_steps", modes, xlabel="scheduler steps")
    axes[1].set_title("the same in scheduler steps")
    _bars(axes[2], cells, "device_stall_frac", modes, xlabel="share of device time")
    axes[2].set_title("device time stalled in faults")
    for ax in axes[1:]:
        ax.set_yticklabels([])
    axes[2].legend(loc="lower right", fontsize=7)
    fig.suptitle("Claim 2: the window a secondary fault is masked, and what the devices pay "
                 "(95% intervals; XPMEM under v2008 is missing: SleepInAtomic)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_perf(doc, path):
    plt = _plt()
    cells = [c for c in doc["cells"] if "range_only" in c["comparisons"]]
    n = len(cells)
    fig, ax = plt.subplots(figsize=(9, _height(cells)))
    rel = [c["comparisons"]["range_only"]["latency_mean"]["rel"] for c in cells]
    xs = [r["mean"] * 100 for r in rel]
    es = [0 if math.isnan(r["ci95"]) else r["ci95"] * 100 for r in rel]
    colors = ["#d62728" if c["comparisons"]["range_only"]["practically_different"]
              else "#7f7f7f" for c in cells]
    ax.barh([n - 1 - i for i in range(n)], xs, xerr=es, capsize=2, color=colors)
    ax.axvspan(-5, 5, color="#2ca02c", alpha=0.12, label="within 5%")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(n))
    ax.set_yticklabels([_label(c) for c in reversed(cells)], fontsize=7)
    ax.set_xlabel("range_only against v2008: mean CPU latency per operation (%)")
    ax.set_title("Claim 4 (Robin Holt): 'no expected significant performance difference'\n"
                 "red: significant and 5% or more", fontsize=9)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sweeps(doc, path):
    plt = _plt()
    sweeps = doc["sweeps"]
    titles = {"hook_cost_ns": ("per-hook cost (ns)", True),
              "secondary_flush_ns": ("device flush cost (ns)", True),
              "drivers": ("drivers attached", False), "cpus": ("CPUs running the process", False)}
    fig, axes = plt.subplots(1, len(sweeps), figsize=(4 * len(sweeps), 3.6), squeeze=False)
    for ax, (name, pts) in zip(axes[0], sweeps.items()):
        xs = [p["value"] for p in pts]
        ys = [p["rel"] * 100 for p in pts]
        es = [0 if math.isnan(p["rel_ci"]) else p["rel_ci"] * 100 for p in pts]
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color="#d62728")
        ax.axhspan(-5, 5, color="#2ca02c", alpha=0.12)
        ax.axhline(0, color="black", lw=0.8)
        first = next((p for p in pts if p["practical"]), None)
        if first is not None:
            ax.axvline(first["value"], color="#ff7f0e", ls="--", lw=1)
            ax.annotate("claim stops holding", (first["value"], 0), fontsize=7,
                        xytext=(4, 8), textcoords="offset points", color="#ff7f0e")
        label, log = titles.get(name, (name, False))
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("range_only vs v2008 (%)")
        ax.set_title(f"COW latency vs {label}", fontsize=9)
    fig.suptitle("Sensitivity: where 'no significant difference' stops holding "
                 "(green: within 5%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_brk(doc, path):
    plt = _plt()
    allrows = doc["brk"]
    rows = [b for b in allrows if b.get("wakeup_ns") is None and b.get("handoff", True)]
    extra = [b for b in allrows if b not in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    gaps = [b["walker_gap_ns"] / 1000 for b in rows]
    for key, label, color in (("throughput_spinlock", "spinlock", "#1f77b4"),
                              ("throughput_rwsem", "rwsem (hand-off)", "#d62728")):
        axes[0].errorbar(gaps, [b[key]["mean"] / 1000 for b in rows],
                         yerr=[b[key]["ci95"] / 1000 for b in rows], marker="o", capsize=3,
                         label=label, color=color)
    axes[0].set_xlabel("walker pause between walks (us)")
    axes[0].set_ylabel("brk calls per ms")
    axes[0].set_title("brk throughput")
    axes[0].legend()
    axes[1].errorbar(gaps, [b["throughput_rel"] * 100 for b in rows],
                     yerr=[b["throughput_rel_ci"] * 100 for b in rows], marker="o", capsize=3,
                     color="#d62728")
    for b in extra:
        label = (f"wake-up {b['wakeup_ns'] / 1000:g} us" if b.get("wakeup_ns") is not None
                 else "no hand-off")
        axes[1].errorbar([b["walker_gap_ns"] / 1000], [b["throughput_rel"] * 100],
                         yerr=[b["throughput_rel_ci"] * 100], marker="s", capsize=3,
                         ls="none", label=label)
    axes[1].axhspan(-15, -10, color="#ff7f0e", alpha=0.2, label="patch 09: -10..-15%")
    axes[1].axhline(0, color="black", lw=0.8)
    axes[1].set_xlabel("walker pause between walks (us)")
    axes[1].set_ylabel("rwsem vs spinlock (%)")
    axes[1].set_title("throughput change")
    axes[1].legend()
    fig.suptitle("Claim 5: the Aim9 brk analogue, anon_vma rwsem vs spinlock")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


PLOTS = {"hooks": plot_hooks, "window": plot_window, "perf": plot_perf,
         "sweeps": plot_sweeps, "brk": plot_brk}


def write_all(doc, directory) -> dict:
    """Write every figure into ``directory`` (made if needed); ``{name: path}``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, fn in PLOTS.items():
        if name == "brk" and not doc.get("brk"):
            continue
        path = d / f"invalidate-page-{name}.png"
        fn(doc, path)
        out[name] = str(path)
    return out
