"""The library logs nothing below WARNING unless the application configures logging, and
every module logs through smmu.base.log (an unconfigured structlog logger prints every
event, debug included, to stdout: a user's test output drowned in 2,364 debug lines)."""

import logging
import re
from pathlib import Path

from smmu.base.log import get_logger

ROOT = Path(__file__).resolve().parent.parent


def test_every_module_logs_through_smmu_base_log():
    bad = []
    for pkg in ("smmu", "primary_mm", "drivers"):
        for f in (ROOT / pkg).rglob("*.py"):
            if f == ROOT / "smmu" / "base" / "log.py":
                continue
            text = f.read_text()
            if re.search(r"structlog\.get_logger|^\s*(import structlog|from structlog)",
                         text, re.M):
                bad.append(str(f.relative_to(ROOT)))
    assert not bad, f"use smmu.base.log.get_logger() instead of structlog's: {bad}"


def test_nothing_below_warning_unless_configured(capsys, caplog):
    log = get_logger()
    log.debug("violation", kind="StaleRead")
    log.info("finding", kind="StaleRead")
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert not [r for r in caplog.records if r.name == "smmu" and r.levelno < logging.WARNING]


def test_a_configured_level_shows_debug(caplog):
    with caplog.at_level(logging.DEBUG, logger="smmu"):
        get_logger().debug("violation", kind="StaleRead")
    assert any("violation" in r.getMessage() and "StaleRead" in r.getMessage()
               for r in caplog.records)
