"""``smmu replay FILE``: re-run one violation of a JSON report (``smmu check --json``), with
its numbered steps."""

from __future__ import annotations

import json
from pathlib import Path

from smmu.base.errors import UsageError
from smmu.cli.check import replay_finding, trace_name
from smmu.cli.common import (EXIT_CLEAN, EXIT_VIOLATIONS, CLIError, Command, console,
                             nonneg_int, resolve_driver, write_trace_file)
from smmu.explore import Finding
from smmu.explore.loader import driver_label
from smmu.report import driver_revision, finding_text, smmu_revision
from smmu.scenarios import SCENARIOS


def cmd_replay(args) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CLIError(f"report file {args.file!r} not found")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CLIError(f"{args.file!r} is not a JSON report: {e}") from None
    entries = doc.get("violations") if isinstance(doc, dict) and "violations" in doc else [doc]
    if not entries:
        raise CLIError(f"{args.file!r} reports no violation to replay (it was clean)")
    if not (0 <= args.index < len(entries)):
        raise CLIError(f"--index {args.index} out of range: the report has {len(entries)} "
                       "violation(s)")
    entry = entries[args.index]
    fd = entry.get("finding", entry) if isinstance(entry, dict) else None
    if not isinstance(fd, dict) or "scenario" not in fd:
        raise CLIError(f"{args.file!r} entry {args.index} is not a replayable finding (write "
                       "one with `smmu check --json FILE`)")
    spec = entry.get("driver") or fd.get("driver") or doc.get("driver")
    if not spec:
        raise CLIError(f"{args.file!r} does not say which driver ran; add \"driver\"")
    cls = resolve_driver(spec)
    try:
        finding = Finding.from_dict(fd)
    except (KeyError, TypeError, ValueError, UsageError) as e:
        raise CLIError(f"{args.file!r} entry {args.index} is malformed: {e}") from None
    finding.driver = cls
    if finding.scenario_def is None and finding.scenario not in SCENARIOS:
        raise CLIError(f"the report names scenario {finding.scenario!r}, unknown here")
    res = replay_finding(finding, cls, trace=True)
    out = console()
    for warning in revision_warnings(doc, entry, cls):
        console(stderr=True).print(f"smmu: warning: {warning}", markup=False, highlight=False)
    if res.violations:
        out.print(finding_text(finding, driver=spec, result=res), markup=False,
                  highlight=False, soft_wrap=True)
        same = any(v.kind == finding.violation.kind for v in res.violations)
        out.print(f"\nreplayed: {'reproduced' if same else 'a different violation:'} "
                  f"{', '.join(res.kinds())}", markup=False)
    else:
        out.print(f"replayed {finding.scenario} [{finding.api}]: no violation this time "
                  "(the driver or smmu changed since the report)", markup=False)
    if args.trace:
        path = write_trace_file(args.trace, trace_name(spec, finding), res,
                                title=f"smmu replay {finding.scenario}",
                                metadata={"driver": spec, "scenario": finding.scenario,
                                          "api": finding.api, "seed": finding.seed})
        out.print(f"trace: {path} (open it in https://ui.perfetto.dev)", markup=False,
                  soft_wrap=True)
    return EXIT_VIOLATIONS if res.violations else EXIT_CLEAN


def revision_warnings(doc, entry, cls) -> list[str]:
    """What differs between the code that wrote the report and the code replaying it: smmu's
    revision (``smmu_revision``) and the driver's source (``driver_revision``). Either may
    change the steps and the outcome of the replay."""
    out = []
    then = doc.get("smmu_revision") if isinstance(doc, dict) else None
    now = smmu_revision()
    if then and then != now:
        out.append(f"the report was written by smmu {then}, this is smmu {now}: the steps "
                   "and the outcome may differ")
    then = entry.get("driver_revision") if isinstance(entry, dict) else None
    now = driver_revision(cls)
    if then and now and then != now:
        out.append(f"the driver's source changed since the report (sha256 {then}, now "
                   f"{now}: {driver_label(cls, cls.__name__)}): the steps and the outcome "
                   "may differ")
    return out


def replay_arguments(r) -> None:
    r.add_argument("file", metavar="FILE", help="a report written by smmu check --json")
    r.add_argument("--index", type=nonneg_int, default=0,
                   help="which violation of the report (default 0)")
    r.add_argument("--trace", metavar="DIR|FILE.json", default=None,
                   help="write the Perfetto trace into the folder DIR or to FILE.json, as "
                   "smmu check --trace does")


COMMANDS = [Command("replay", "re-run one reported violation from a JSON report", cmd_replay,
                    replay_arguments, order=40)]
