"""helper-196: a differential test of the forty-fifth round's bounds speed-up (07d2dc5..6473387) against 5e36f3b.

What it attacks and what it found: ``step_bounds`` of 5e36f3b and of this round compared field by field, bit for bit
(every bound, mask and reason), on random steps of every dtype with N across ``_PSS_BLOCK``'s and einsum's boundaries,
D around ``_PLANE_LOOP_MAX``, K = 1 and K > 1, sum and mean, C-, Fortran- and strided X, W, y and R, edge values
(zeros, subnormals, the overflow edge, integers, NaN and inf), TF32 and flush-to-zero, each with the compiled kernels,
without the shared passes and on the NumPy path; and hostile torch plug-ins through ``runner.verify`` (results that
alias the step's own tensors and are written into after the step returns, negative-bit, expanded and non-contiguous
results, inputs written into after returning, a torch-function mode and saved-tensor hooks left pushed): records
identical. Figures: 960 random steps' StepBounds in three variants each (N up to 70,000; 160 steps with 4,000 <= N <=
33,000), 96 more through the extended-precision re-evaluation; records identical: 4,703 of six hostile plug-ins,
12,526 of cases/models.toml (every model implementation and mutant), 17,280 of 70 quick-tier cases with TF32, matmul
precision "high", flush-to-zero and ``repeat`` 3; ``read_result`` of 22 odd tensors (views, neg bit, conj, expanded,
offset, sparse, channels-last, subclasses), copied and not: the same arrays, strides, sharing and aliasing. One
difference: on the NumPy path (``USE_KERNELS`` False, and the extended-precision re-evaluation, which always takes
it), with K = 1 and 8192 < N <= 32768, ``_numpy_partial_sums``' one joined ``partial_sum_squares`` call of grad_b's
and the loss's rows (0d97d51) gave other bits than their own calls (``expected["loss"]`` 2.676402266030844e-13 ->
...843e-13, ``expected["grad_b"]`` and ``expected["b"]`` by an ULP at N = 32767, D = 2): ``np.einsum("ij,ij->i")``
sums a row of more than 8192 terms in chunks whose grouping depends on the rows around it. The join is now limited to
rows of at most ``_EINSUM_ROW_MAX`` = 8192 terms; these tests pin it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from harness import bounds as hb
from harness.floats import FLOAT64
from tests.conftest import mixed_partial_sum_inputs, separate_partial_sums


@pytest.mark.parametrize("kernels", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.longdouble])
@pytest.mark.parametrize("n,d", [(8192, 1), (8193, 1), (12000, 2), (21845, 1), (32767, 2)])
def test_joined_partial_sums_equal_separate_calls_for_long_rows(monkeypatch, kernels, dtype, n, d):
    """K = 1, N from einsum's 8192 to _PSS_BLOCK / 2: grad_W's, grad_b's and the loss's models bit for bit as their
    own calls give them (with 0d97d51's join, N = 12000 and 32767 differed in grad_b's and the loss's)."""
    monkeypatch.setattr(hb, "USE_KERNELS", kernels)
    rng = np.random.default_rng(n + d)
    X, Y, W, b, R, sq, sum_sq2 = mixed_partial_sum_inputs(rng, n, d, 1, dtype)
    _, gW, _, gb, loss = hb._numpy_partial_sums(X, Y, W, b, R, 0.0, loss_row=(sq, sum_sq2))
    want_gW, want_gb, want_loss = separate_partial_sums(X, R, sq, sum_sq2)
    assert np.array_equal(gW, want_gW) and gW.shape == want_gW.shape
    assert np.array_equal(gb, want_gb) and gb.shape == want_gb.shape
    # (joined where each row holds at most 8192 terms; else None: the caller forms the loss's alone, as want_loss)
    assert (loss is not None) == (n <= 8192)
    assert loss is None or loss == want_loss


def test_step_bounds_of_the_numpy_path_as_without_the_join(monkeypatch):
    """The reproducer found: N = 32767, D = 2, K = 1, X strided, mean, float64, on the NumPy path. Every field of
    StepBounds is the same with the join as with none (``_EINSUM_ROW_MAX`` 0: 5e36f3b's separate calls)."""
    rng = np.random.default_rng(30)
    n, d = 32767, 2
    X = np.empty((n, 2 * d))[:, ::2]
    X[...] = rng.standard_normal((n, d))
    y, W, b = rng.standard_normal((n, 1)), rng.standard_normal((d, 1)), rng.standard_normal(1)
    R = X @ W + b - y
    c = 1.0 / n
    gW, gb = 2 * c * (X.T @ R), 2 * c * R.sum(axis=0)
    exact = {"loss": np.asarray(c * (R * R).sum()), "grad_W": gW, "grad_b": gb, "W": W - 1e-3 * gW, "b": b - 1e-3 * gb}
    monkeypatch.setattr(hb, "USE_KERNELS", False)
    monkeypatch.setattr(hb, "_prepare", lambda *a: None)

    def fields():
        sb = hb.step_bounds({"X": X, "y": y, "W": W, "b": b}, R, exact, lr=1e-3, reduction="mean", fmt=FLOAT64)
        out = []
        for f in dataclasses.fields(sb):
            v = getattr(sb, f.name)
            for key, x in sorted(v.items()) if isinstance(v, dict) else [("", v)]:  # (arrays by their bytes)
                out.append((f.name, key, x.tobytes() if isinstance(x, np.ndarray) else repr(x)))
        return out

    joined = fields()
    monkeypatch.setattr(hb, "_EINSUM_ROW_MAX", 0)
    assert joined == fields()
