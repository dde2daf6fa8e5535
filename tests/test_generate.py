"""The generated cases (cases/generated.toml) and the bound fixes their regimes exposed."""

from __future__ import annotations

import math

import numpy as np

import harness
from harness.cases import load_cases
from harness.floats import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, round_to_format
from harness.runner import verify
from tests.conftest import CASES

GENERATED = CASES / "generated.toml"


def test_default_tier_covers_shapes_regimes_and_reductions():
    res = load_cases([GENERATED])
    assert not res.errors
    cases = res.cases
    assert len(cases) >= 500
    shapes = {c.shape for c in cases}
    assert (1, 1, 1) in shapes and any(n == 1 and d * k >= 64 for n, d, k in shapes)
    assert max(d * k for _, d, k in shapes) >= 64 and min(d for _, d, _ in shapes) == 1 and min(k for *_, k in shapes) == 1
    assert max(n for n, _, _ in shapes) <= 256  # the exact oracle stays cheap in CI
    assert {c.reduction for c in cases} == {"sum", "mean"}
    assert {t for c in cases for t in c.tags} >= {"normal", "huge", "tiny", "mixed", "near-zero-residual", "zeros", "integers", "subnormal"}
    assert all(c.dtypes == ("float64", "float32", "float16", "bfloat16") for c in cases)
    assert any(c.steps == 3 for c in cases)
    assert len({c.id for c in cases}) == len(cases)
    assert cases[0].id == "gen-grid-normal-n1-d1-k1-sum-s1"


def test_large_tier_is_opt_in_and_reaches_n_100000():
    default_ids = {c.id for c in load_cases([GENERATED]).cases}
    large = load_cases([GENERATED], tier="large").cases
    extra = [c for c in large if c.id not in default_ids]
    assert extra and all(c.id.startswith("gen-large-") for c in extra)
    assert max(c.shape[0] for c in extra) == 100_000


def test_generation_is_deterministic_and_regimes_have_their_values():
    a = {c.id: c for c in load_cases([GENERATED]).cases}
    b = {c.id: c for c in load_cases([GENERATED]).cases}
    for cid in a:
        for key in ("X", "y", "W", "b"):
            np.testing.assert_array_equal(a[cid].values[key], b[cid].values[key])
    zeros = a["gen-grid-zeros-n8-d8-k8-sum-s1"]
    assert all(not v.any() for v in zeros.values.values())
    ints = a["gen-grid-integers-n32-d8-k8-mean-s1"]
    assert all((v == np.round(v)).all() and np.abs(v).max() <= 8 for v in ints.values.values())
    sub = a["gen-grid-subnormal-n16-d2-k2-sum-s1"].values
    assert 0 < np.abs(sub["W"]).max() < FLOAT64.min_normal and np.abs(sub["X"]).min() > 0
    nz = a["gen-grid-near-zero-residual-n32-d8-k8-sum-s1"].values
    for key in ("X", "W", "b"):  # exact in every dtype
        np.testing.assert_array_equal(nz[key], round_to_format(nz[key], FLOAT16))
        np.testing.assert_array_equal(nz[key], round_to_format(nz[key], BFLOAT16))
    residual = nz["X"] @ nz["W"] + nz["b"] - nz["y"]
    assert np.abs(residual).max() < 2.0**-16 < np.abs(nz["y"]).max()
    # the same shape and regime give the same inputs for sum and mean
    np.testing.assert_array_equal(a["gen-grid-normal-n4-d4-k4-sum-s1"].values["X"], a["gen-grid-normal-n4-d4-k4-mean-s1"].values["X"])


def test_float64_underflow_quantum_is_a_representable_upper_bound():
    assert FLOAT32.underflow_quantum == 2.0**-150 and FLOAT16.underflow_quantum == 2.0**-25
    assert 2.0**-1075 == 0.0  # why float64's own quantum cannot be used as a float64
    assert FLOAT64.underflow_quantum == math.ulp(0.0) == 2.0**-1074


def test_float64_subnormal_gradients_agree():
    """Every product underflows into float64's subnormals: the errors are a few
    subnormal spacings, within the underflow terms of both bounds (they were
    'disagree' when eta = 2**-1075 rounded to 0)."""
    case = next(c for c in load_cases([GENERATED]).cases if c.id == "gen-grid-subnormal-n200-d4-k4-sum-s1")
    recs = verify([case], ["torch-seed", "numpy-hand"], dtypes=["float64"])
    assert {r.verdict for r in recs} == {"agree"}
    assert max(r.max_ulp_error for r in recs) >= 1  # the underflow errors are real, not zero


def test_an_intermediate_overflow_is_overflow_not_disagree():
    """NumPy sums X^T R before scaling by 2/(N K): the sum overflows float32 although the
    exact gradient is in range; torch scales R first and gets a finite gradient."""
    x = 2.0**60
    n = 256
    case = harness.case_from_arrays("ovf", np.full((n, 1), x), np.full((n, 1), -x), [[1.0]], [0.0], lr=2**-7, reduction="mean")
    recs = {(r.implementation, r.quantity): r for r in verify([case], ["numpy-hand", "torch-seed"], dtypes=["float32"])}
    assert recs[("numpy-hand", "grad_W")].verdict == "overflow" and recs[("numpy-hand", "grad_W")].computed == "inf"
    assert recs[("torch-seed", "grad_W")].verdict == "agree"
    assert float(recs[("torch-seed", "grad_W")].computed) == 2 * 2 * x * x  # 2/N * N * x * 2x, exact


def test_a_learning_rate_that_underflows_in_the_dtype_is_not_a_false_alarm():
    """lr = 1e-12 is 0 in float16, but torch multiplies by the Python float in float32
    arithmetic: b' = -fl16(1e-12 * 30208) = -2**-24 instead of 0 (was 'disagree')."""
    case = harness.make_case("lr-underflow", [[1.0]], [[-15104]], [[0]], [0], lr="1e-12", dtypes=["float16"])
    recs = {r.quantity: r for r in verify([case], ["torch-seed"], dtypes=["float16"])}
    assert recs["grad_b"].computed == "30208.0" and recs["grad_b"].verdict == "agree"
    assert recs["b"].computed == repr(-(2.0**-24)) and recs["b"].exact == "0" and recs["b"].verdict == "agree"


def test_the_expected_loss_bound_has_the_second_order_term():
    """Residuals of 2**-20 computed from terms of size 1 in float32: the loss error is
    dominated by sum dR^2, which grows like N K and does not cancel. The first-order
    expected bound alone put this correct result at 1.44 x the bound ('suspect')."""
    rng = np.random.default_rng(5)
    n = 20000
    X = round_to_format(rng.standard_normal((n, 8)), FLOAT16)
    W = round_to_format(rng.standard_normal((8, 8)), FLOAT16)
    b = round_to_format(rng.standard_normal(8), FLOAT16)
    y = X @ W + b + rng.standard_normal((n, 8)) * 2.0**-20
    case = harness.case_from_arrays("near-zero-loss", X, y, W, b, lr=2**-10)
    (loss,) = [r for r in verify([case], ["numpy-hand"], dtypes=["float32"], options=harness.RunOptions(trajectory=False))
               if r.quantity == "loss"]
    assert loss.verdict == "agree" and 0.01 < loss.expected_ratio < 1
    assert loss.max_ulp_error > 100  # the error is real: the residual cancels
