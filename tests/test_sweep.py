"""The project's own sweep: every case in cases/ (seed, NIST StRD, the generated
default tier) x its dtypes x the torch-seed and NumPy hand implementations x
every available device, graded against the exact oracle.

Parametrized by the harness pytest plugin (``harness_case`` ... fixtures); the
``--harness-*`` options change the selection, e.g.
``pytest tests/test_sweep.py --harness-tier large --harness-dtypes float32 -n 2
--harness-results reports/results.jsonl``.
"""

from __future__ import annotations

import pytest

from harness.api import raise_on_failure


@pytest.mark.harness(implementations=["torch-seed", "numpy-hand"])
def test_sweep(harness_case, harness_dtype, harness_implementation, harness_device, harness_check):
    records = harness_check(harness_case, harness_implementation, harness_device, harness_dtype)
    assert records, "the harness returned no record"
    raise_on_failure(records, harness_implementation.name)  # the verdict policy of harness.verdicts
    if "zeros" in harness_case.tags:
        # all-zero X, W, b, y: every quantity must be exactly zero, on every device and dtype
        graded = [r for r in records if r.quantity != "*"]
        assert graded and all(r.verdict == "agree" and r.max_abs_error == 0.0 and float(r.computed) == 0.0 for r in graded)
