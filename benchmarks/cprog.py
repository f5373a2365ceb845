"""Compile a C program of this folder with the host compiler and run it: the host kernel's
own numbers (faults, wake-ups, shootdowns) that the emulator's cost model is checked against.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_c(source: str, args=(), flags=("-O2",), timeout=300) -> dict:
    """Build ``benchmarks/<source>`` with ``cc`` in a temporary directory, run it with
    ``args`` and return the JSON object it prints (with ``compiler``), or ``{"error": why}``."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return {"error": f"no C compiler (cc) on PATH: {source} not measured"}
    name = Path(source).stem
    with tempfile.TemporaryDirectory(prefix=f"smmu-{name}-") as tmp:
        exe = Path(tmp) / name
        build = subprocess.run([cc, *flags, "-o", str(exe), str(HERE / source)],
                               capture_output=True, text=True)
        if build.returncode:
            return {"error": f"{cc} failed: {build.stderr.strip()[:500]}"}
        run = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                             timeout=timeout)
        if run.returncode:
            return {"error": f"{name} exited {run.returncode}: {run.stderr.strip()[:500]}"}
        result = json.loads(run.stdout)
    result["compiler"] = cc
    return result
