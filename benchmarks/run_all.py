"""Run every benchmark in this folder; each writes its JSON under bench-results/."""

import subprocess
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
failed = []
for bench in sorted(here.glob("bench_*.py")):
    out = Path("bench-results") / (bench.stem.removeprefix("bench_") + ".json")
    print(f"== {bench.name} -> {out}", flush=True)
    rc = subprocess.call([sys.executable, str(bench), "--json", str(out)])
    if rc:
        failed.append(bench.name)
if failed:
    print("failed:", ", ".join(failed))
    sys.exit(1)
