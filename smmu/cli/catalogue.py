"""``smmu drivers``: built-in, buggy and entry-point drivers."""

from __future__ import annotations

from rich.table import Table

from smmu.cli.common import EXIT_CLEAN, console, first_line
from smmu.explore.loader import (BUGGY_PREFIX, buggy_drivers, builtin_drivers,
                                 entry_point_drivers)
from smmu.notifier import API_GENERATIONS


def cmd_drivers(args) -> int:
    builtin, buggy = builtin_drivers(), buggy_drivers()
    t = Table(title="smmu drivers (use the DRIVER name with smmu check)")
    t.add_column("DRIVER", no_wrap=True)
    t.add_column("apis", no_wrap=True)
    t.add_column("description")
    for n, c in sorted(builtin.items()):
        t.add_row(n, ",".join(getattr(c, "apis", API_GENERATIONS)), first_line(c.__doc__))
    for n, c in sorted(buggy.items()):
        desc = getattr(c, "breaks", None) or first_line(c.__doc__)
        exp = getattr(c, "expected", None)
        if exp:
            desc = f"{desc} (expect {', '.join(exp)})"
        t.add_row(BUGGY_PREFIX + n, ",".join(getattr(c, "apis", API_GENERATIONS)), str(desc))
    for n, ep in sorted(entry_point_drivers().items()):
        t.add_row(n, "?", f"entry point {ep.value}")
    console().print(t)
    return EXIT_CLEAN
