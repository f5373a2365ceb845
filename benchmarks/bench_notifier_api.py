"""invalidate-page-vs-range: was invalidate_page worth keeping? The 2008 thread's five claims
measured with causal simulated time (smmu.study).

Workloads (COW storm single- and multi-threaded, reclaim, writeback, migration, KSM, the
munmap/madvise control, brk against a reverse-map walker with both kinds of rmap lock, and
four real programs replayed from strace traces in benchmarks/traces/) under v2008, v2008
with the pre-2017 ordering and range_only, with KVM (2008 style), GRU and XPMEM alone and
together, N seeds each; sweeps of the per-hook cost, the device flush cost, the number of
drivers and the CPUs; smmu check verdicts beside the numbers. The JSON holds every run, the
cost table, the revision and the options. See docs/study-invalidate-page.md (make study).

    smmu bench invalidate-page-vs-range [--seeds N] [--json FILE] [--plot DIR] [--quick]
    python benchmarks/bench_notifier_api.py [same options] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from smmu.study import plots as study_plots  # noqa: E402
from smmu.study import render as study_render  # noqa: E402
from smmu.study.study import answer, judge, run_study  # noqa: E402


def run(quick: bool = False, seeds: int | None = None, progress=None) -> dict:
    """The whole study (``--quick``: 2 seeds, 8 pages, the smallest sweeps: seconds)."""
    return run_study(quick=quick, seeds=seeds, progress=progress)


def render(doc, console) -> None:
    """What ``smmu bench`` prints: the 80-column tables and one paragraph per claim."""
    console.print(study_render.text(doc), markup=False, highlight=False, soft_wrap=True)


def plot(doc, directory) -> dict:
    """PNGs into ``directory`` (one per claim, and the sweeps); ``{name: path}``."""
    return study_plots.write_all(doc, directory)


def write_markdown(doc, path, figures: dict) -> None:
    """``docs/study-invalidate-page.md``, the figures linked relative to it."""
    md = Path(path)
    rel = {k: str(Path(v).resolve().relative_to(md.resolve().parent))
           for k, v in figures.items()}
    md.write_text(study_render.markdown(doc, plots=rel))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--plot", default=None, metavar="DIR")
    ap.add_argument("--markdown", default=None, metavar="FILE")
    ap.add_argument("--from-json", default=None, metavar="FILE",
                    help="render a study already run (its --json) instead of running it")
    a = ap.parse_args(argv)
    if a.from_json:
        doc = json.loads(Path(a.from_json).read_text())
        doc["claims"] = judge(doc)           # the verdicts, from the data as it stands
        doc["answer"] = answer(doc)
    else:
        doc = run(quick=a.quick, seeds=a.seeds)
    print(study_render.text(doc))
    if a.json and not a.from_json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(doc, indent=1, default=repr) + "\n")
    figures = plot(doc, a.plot) if a.plot else {}
    if a.markdown:
        write_markdown(doc, a.markdown, figures)
    return 0


if __name__ == "__main__":
    from smmu.cli import configure_logging  # a script, like the CLI: it configures logging
    configure_logging()
    sys.exit(main())
