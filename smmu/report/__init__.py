"""Reports of what the checker found: ``text`` (the readable report of a violation or a
finding, and the JSON document ``smmu check --json`` writes) and ``trace`` (a run as a
Chrome / Perfetto trace-event file). The text functions are importable from here too."""

from smmu.report import trace
from smmu.report.text import (MAX_STEPS_SHOWN, check_json, driver_revision, events_text,
                              finding_text, findings_summary, mix_text, report_groups,
                              schedule_text, short_path, smmu_revision, steps_text, verdict,
                              violation_json, violation_text)

__all__ = ["MAX_STEPS_SHOWN", "check_json", "driver_revision", "events_text", "finding_text",
           "findings_summary", "mix_text", "report_groups", "schedule_text", "short_path",
           "smmu_revision", "steps_text", "trace", "verdict", "violation_json",
           "violation_text"]
