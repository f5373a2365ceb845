"""``python -m smmu``: the command line (see :mod:`smmu.cli`)."""

import sys

_pkg = sys.modules.get("smmu")
if getattr(_pkg, "__file__", None) is None:
    # the namespace-package trap: a folder named smmu (with no __init__.py) in the current
    # directory or on sys.path ahead of the installed package; with an editable install
    # (make setup) Python's path search finds that folder first and imports it as an empty
    # namespace package, and nothing of smmu is in it (README, "A folder named smmu")
    where = ", ".join(getattr(_pkg, "__path__", None) or ["?"])
    sys.stderr.write(
        f"smmu: error: `import smmu` found the folder {where}, not the installed smmu (a "
        "folder with no __init__.py is imported as an empty namespace package); rename that "
        "folder or run from another directory\n")
    sys.exit(2)

from smmu.cli import main  # noqa: E402

sys.exit(main())
