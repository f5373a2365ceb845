"""The coherence oracle, an observer of the run (:mod:`smmu.runtime.observer`).

``protocol`` (:class:`ProtocolChecker`: the notifier windows and the rules judged from them),
``cells`` (:class:`Cell`: the model's value of one page),
``scan`` (the structural scan kernel, its reference, the arrays of declared translations),
``oracle`` (:class:`Oracle`: the data and frame models and the end-of-run checks).
"""

from smmu.oracle.cells import Cell
from smmu.oracle.oracle import Oracle
from smmu.oracle.protocol import ProtocolChecker
from smmu.oracle.scan import (STALE_ABSENT, STALE_FREED, STALE_OTHER_PFN, STALE_REASONS,
                              STALE_WRITABLE, SecondaryMap, scan_secondary, scan_secondary_ref)

__all__ = ["Cell", "Oracle", "ProtocolChecker", "STALE_ABSENT", "STALE_FREED",
           "STALE_OTHER_PFN", "STALE_REASONS", "STALE_WRITABLE", "SecondaryMap",
           "scan_secondary", "scan_secondary_ref"]
