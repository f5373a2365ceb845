"""The device TLB's tests, written with smmu's hypothesis kit: ``pytest examples/``.

``coherence_test(DeviceTLB)`` is a pytest test: ``smmu check``'s search over every scenario
and notifier generation (60 schedules each), then schedules drawn by hypothesis. The broken
variant must fail it, with the report and the command that replays the failure.
"""

import pytest

from smmu.testing import CoherenceFailure, coherence_test

from device_tlb import DeviceTLB
from device_tlb_end_only import EndOnlyTLB

test_device_tlb = coherence_test(DeviceTLB)


def test_flushing_only_in_end_is_caught():
    with pytest.raises(CoherenceFailure) as failure:
        coherence_test(EndOnlyTLB)()
    assert failure.value.violation.kind in {"StaleRead", "UseAfterFree", "LostWrite"}
    assert "smmu replay " in str(failure.value)
