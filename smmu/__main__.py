"""``python -m smmu``: the command line (see :mod:`smmu.cli`)."""

import sys

from smmu.cli import main

sys.exit(main())
