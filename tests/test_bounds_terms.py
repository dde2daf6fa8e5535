"""Every term of the error bounds, against values derived by hand (exact powers of two, Fractions).

Each test builds a step whose exact result is known in closed form, a computed
result that a correct evaluation (or a flushing one) really produces, derived
by hand, and checks the bound against that error. Where a test covers a fix
of issue 10 its docstring says what the code before the fix did.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from harness.bounds import Regime, learning_rate_spread, step_bounds, update_bound
from harness.cases import case_from_arrays
from harness.compare import compare
from harness.floats import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, round_to_format
from harness.implementations.numpy_steps import numpy_hand
from harness.implementations.registry import Implementation, StepResult
from harness.oracle import exact_inputs_from_floats, exact_step
from harness.runner import RunOptions, verify
from harness.verdicts import QUANTITIES


def bounds_for(X, y, W, b, lr, reduction, fmt, **kw):
    inputs = {"X": np.asarray(X, float), "y": np.asarray(y, float), "W": np.asarray(W, float), "b": np.asarray(b, float)}
    ex = exact_step(exact_inputs_from_floats(inputs), Fraction(lr), reduction)
    hilo = {q: ex.values[q].to_hi_lo() for q in QUANTITIES}
    bnd = step_bounds(inputs, ex.residual.to_float64(), {q: hilo[q][0] for q in QUANTITIES}, lr=float(lr), reduction=reduction,
                      fmt=fmt, **kw)
    return bnd, hilo


def grade(bnd, hilo, q, computed, fmt):
    return compare(np.asarray(computed, float), *hilo[q], bnd.rigorous[q], bnd.expected[q], bnd.inf_allowed[q], fmt,
                   nan_allowed=bnd.nan_allowed[q])


# ---------------------------------------------------------------- the scale c = 1/(N K) underflows

def test_subnormal_scale_c_float16_reported_counterexample():
    """float16, mean, N = D = 1, K = 208412, X = 1, y = -1e4, W = b = 0. c = 1/208412 is a float16
    subnormal: 2**24 / 208412 = 80.50024..., so fl(c) = 81 * 2**-24, and torch and NumPy compute
    fl(2 fl(c) * 1e4) = fl(1620000 * 2**-24) = 1582 * 2**-14 = 0.0965576171875 (spacing 2**-14 in
    [2**-4, 2**-3)), where the exact gradient is 2e4 / 208412. Before the fix the bound had only
    the relative rounding of c: 1.47 x bound (grad_W), 1.73 x (grad_b)."""
    k = 208412
    assert round(Fraction(2**24, k)) == 81
    computed = float(round_to_format(np.array([float(Fraction(2 * 81 * 10**4, 2**24))]), FLOAT16)[0])
    assert computed == 1582 * 2.0**-14 == 0.0965576171875
    bnd, hilo = bounds_for([[1.0]], [[-1e4] * k], [[0.0] * k], [0.0] * k, 0.01, "mean", FLOAT16)
    exact = Fraction(2 * 10**4, k)
    assert hilo["grad_b"][0][0] == float(exact)
    for q, shape in (("grad_W", (1, k)), ("grad_b", (k,))):
        res = grade(bnd, hilo, q, np.full(shape, computed), FLOAT16)
        assert res.verdict != "disagree", (q, res.bound_ratio)
        # float16 may flush the subnormal c to zero: the gradient is then 0, also a correct evaluation
        assert grade(bnd, hilo, q, np.zeros(shape), FLOAT16).verdict != "disagree"


def test_subnormal_scale_c_float32_gradual_and_flushed():
    """float32 mean with N K = 2**127 is not testable, so the scale is checked through c's own
    term: Regime.scale_underflow(c) = min(c, eta) below the smallest normal and 0 above."""
    gradual, ftz = Regime(FLOAT32, False), Regime(FLOAT32, True)
    assert gradual.scale_underflow(2.0**-100) == 0.0
    assert gradual.scale_underflow(2.0**-140) == 2.0**-150  # half the subnormal spacing 2**-149
    assert gradual.scale_underflow(2.0**-160) == 2.0**-160  # rounds to 0: the error is c itself
    assert ftz.scale_underflow(2.0**-140) == 2.0**-140  # flushed to 0
    assert ftz.scale_underflow(2.0**-100) == 0.0


# ---------------------------------------------------------------- products underflow

def test_product_underflow_gradual():
    """float32, sum: X = [[3 * 2**-80, 2**40]], W = [[3 * 2**-80], [0]]. The product 9 * 2**-160 is
    below half the smallest subnormal (2**-150) and rounds to 0, so a correct evaluation gets R^ = 0
    and grad_W[1] = 2 * 2**40 * 0 = 0, where the exact value is 2 * 2**40 * 9 * 2**-160 = 9 * 2**-119."""
    X = [[3 * 2.0**-80, 2.0**40]]
    W = [[3 * 2.0**-80], [0.0]]
    bnd, hilo = bounds_for(X, [[0.0]], W, [0.0], 2.0**-4, "sum", FLOAT32)
    assert hilo["grad_W"][0][1, 0] == 9 * 2.0**-119
    assert grade(bnd, hilo, "grad_W", [[2 * 3 * 2.0**-80 * 0.0], [0.0]], FLOAT32).verdict != "disagree"


def test_a_mean_then_doubled_scale_underflows_once_and_is_doubled():
    """float32, mean, N = 1024: X = 2**60 in every row, W = b = 0, y = -666 * 2**-149, so R = 666 * 2**-149 (666
    smallest subnormals) and c = 2**-10. A step that takes the mean first and doubles it (``2 * (c R)``, then ``X^T``:
    JAX's ``g * x`` then 2 for the derivative of a mean of squares) holds ``fl(c R) = fl(0.65 * 2**-149) = 2**-149``,
    then ``2**-148``: grad_W = 1024 * 2**60 * 2**-148 = 2048 * 2**-89 where the exact value is 1332 * 2**-89. The
    underflow ``e`` of the per-element scale is doubled after it: ``2 eta |X_ij|`` per term. The bound counted one
    ``eta |X_ij|`` (512 * 2**-89 in all) and this correct step was disagree at 1.40 times it (helper-127); torch's
    ``2 R / 1024`` gives 1024 * 2**-89. Twice the exact gradient still disagrees."""
    n = 1024
    X, y = np.full((n, 1), 2.0**60), np.full((n, 1), -666 * 2.0**-149)
    bnd, hilo = bounds_for(X, y, [[0.0]], [0.0], 2.0**-4, "mean", FLOAT32)
    assert hilo["grad_W"][0][0, 0] == 1332 * 2.0**-89
    c_r = float(round_to_format(np.array([666 * 2.0**-159]), FLOAT32)[0])
    assert c_r == 2.0**-149
    for computed in (n * 2.0**60 * (2 * c_r), 1024 * 2.0**-89):  # mean then doubled; torch's 2 R / (N K)
        res = grade(bnd, hilo, "grad_W", [[computed]], FLOAT32)
        assert res.verdict != "disagree", (computed, res.bound_ratio)
    assert grade(bnd, hilo, "grad_W", [[2 * 1332 * 2.0**-89]], FLOAT32).verdict == "disagree"


def test_product_flushed_to_zero_needs_the_declaration():
    """float32, sum: X = [[2**-70, 2**60]], W = [[2**-70], [0]]: R = 2**-140 is a subnormal that
    gradual underflow keeps exactly (a multiple of 2**-149), so grad_W[1] = 2 * 2**60 * 2**-140
    = 2**-79. A kernel that flushes gets R^ = 0 and grad_W[1] = 0: an error of 2**-79, far above
    the gradual bound (about 2 * 2**60 * 2**-150 = 2**-89), within the flush-to-zero one
    (about 2 * 2**60 * 2**-126 = 2**-65)."""
    X = [[2.0**-70, 2.0**60]]
    W = [[2.0**-70], [0.0]]
    flushed = [[0.0], [0.0]]
    bnd, hilo = bounds_for(X, [[0.0]], W, [0.0], 2.0**-4, "sum", FLOAT32)
    assert hilo["grad_W"][0][1, 0] == 2.0**-79
    assert grade(bnd, hilo, "grad_W", flushed, FLOAT32).verdict == "disagree"
    ftz, hilo = bounds_for(X, [[0.0]], W, [0.0], 2.0**-4, "sum", FLOAT32, flush_to_zero=True)
    assert grade(ftz, hilo, "grad_W", flushed, FLOAT32).verdict != "disagree"
    assert ftz.flush_to_zero and not bnd.flush_to_zero


# ---------------------------------------------------------------- the learning rate

def test_learning_rate_flushed_to_zero():
    """float32, sum: X = 1, W = b = 0, y = -2**100: R = 2**100, g = 2**101, lr = 2**-130 (a float32
    subnormal), W' = -2**-29. Flushing lr to 0 leaves W unchanged: an error of 2**-29 = |W'|.
    Before the fix float32 had no flush-to-zero bound (2**-29 is 2**24 times u |W'|)."""
    args = ([[1.0]], [[-(2.0**100)]], [[0.0]], [0.0], 2.0**-130, "sum", FLOAT32)
    bnd, hilo = bounds_for(*args)
    assert hilo["W"][0][0, 0] == -(2.0**-29)
    assert grade(bnd, hilo, "W", [[0.0]], FLOAT32).verdict == "disagree"
    ftz, hilo = bounds_for(*args, flush_to_zero=True)
    assert grade(ftz, hilo, "W", [[0.0]], FLOAT32).verdict != "disagree"
    assert learning_rate_spread(2.0**-130, None, Regime(FLOAT32, True)) == 2.0**-130
    assert learning_rate_spread(2.0**-130, None, Regime(FLOAT32, False)) == 0.0


def test_learning_rate_held_in_a_wider_type():
    """float16: lr = 0.1 written, fl16(0.1) = 1638 * 2**-14 = 0.0999755859375 for the oracle;
    PyTorch multiplies a float16 tensor by the Python float in float32: fl32(0.1) = 13421773 * 2**-27.
    dlr is the larger distance, |fl32(0.1) - fl16(0.1)| = (13421773 - 1638 * 2**13) * 2**-27."""
    lr16 = float(Fraction(1638, 2**14))
    assert lr16 == float(round_to_format(np.array([0.1]), FLOAT16)[0])
    want = Fraction(13421773 - 1638 * 2**13, 2**27)
    assert Fraction(learning_rate_spread(lr16, 0.1, Regime(FLOAT16, True))) == want
    # the update by the Python lr: W = 0, g = 1 (X = 1, y = -0.5, sum), W' exact = -fl16(0.1),
    # computed fl16(0.1 * 1) = fl16(0.1) exactly here; with g = 3 (y = -1.5) fl16(0.3) vs 3 * fl16(0.1)
    bnd, hilo = bounds_for([[1.0]], [[-1.5]], [[0.0]], [0.0], lr16, "sum", FLOAT16, lr_held=0.1)
    computed = float(round_to_format(np.array([-0.3]), FLOAT16)[0])
    assert grade(bnd, hilo, "W", [[computed]], FLOAT16).verdict != "disagree"


def test_update_bound_terms_by_hand():
    """update_bound = u2 |W'| + (1 + u2) P + eta, P = (1 + u2)((lr + dlr) E_g + dlr |g|) + u2 lr |g| + eta."""
    u2, eta = 2.0**-10, 2.0**-30
    got = float(update_bound(np.array(3.0), np.array(4.0), np.array(0.5), 0.25, 0.125, u2, eta))
    P = (1 + Fraction(u2)) * (Fraction(3, 8) * Fraction(1, 2) + Fraction(1, 8) * 4) + Fraction(u2) / 4 * 4 + Fraction(eta)
    want = Fraction(u2) * 3 + (1 + Fraction(u2)) * P + Fraction(eta)
    assert abs(Fraction(got) - want) <= want * Fraction(1, 2**50)


def test_update_underflow_flushed_result():
    """float32, sum, X = 1, W = 3 * 2**-140, b = 0, y = 5 * 2**-141: R = 2**-141, g = 2**-140,
    lr = 1/2, W' = 3 * 2**-140 - 2**-141 = 5 * 2**-141 (subnormal). Flushed: W'^ = 0, error 5 * 2**-141."""
    args = ([[1.0]], [[5 * 2.0**-141]], [[3 * 2.0**-140]], [0.0], 0.5, "sum", FLOAT32)
    bnd, hilo = bounds_for(*args)
    assert hilo["W"][0][0, 0] == 5 * 2.0**-141
    assert grade(bnd, hilo, "W", [[0.0]], FLOAT32).verdict == "disagree"
    ftz, hilo = bounds_for(*args, flush_to_zero=True)
    assert grade(ftz, hilo, "W", [[0.0]], FLOAT32).verdict != "disagree"


# ---------------------------------------------------------------- TF32

def test_tf32_rounded_matmul_inputs():
    """float32, sum, X = W = 1 + 2**-20, y = b = 0. TF32 (10 fraction bits) rounds both to 1, so
    R^ = 1 and grad_W^ = fl(1 * fl(2 * 1)) = 2, where the exact gradient is
    2 (1 + 2**-20)**3 = 2 + 3 * 2**-19 + ...: an error about 3 * 2**-19, some 24 times the
    float32 bound without TF32."""
    v = 1 + 2.0**-20
    exact = 2 * Fraction(v) ** 3
    off, hilo = bounds_for([[v]], [[0.0]], [[v]], [0.0], 2.0**-4, "sum", FLOAT32)
    assert Fraction(hilo["grad_W"][0][0, 0]) + Fraction(hilo["grad_W"][1][0, 0]) == exact
    assert grade(off, hilo, "grad_W", [[2.0]], FLOAT32).verdict == "disagree"
    on, hilo = bounds_for([[v]], [[0.0]], [[v]], [0.0], 2.0**-4, "sum", FLOAT32, tf32=True)
    assert grade(on, hilo, "grad_W", [[2.0]], FLOAT32).verdict != "disagree"


# ---------------------------------------------------------------- near the overflow threshold

def test_near_overflow_inf_and_nan_masks():
    """float16, sum, X = [[1], [1]], W = b = 0. y = [[-40000], [40000]]: R = (40000, -40000),
    2R = (80000, -80000) is beyond 65504 with both signs: grad_b = 2 R1 + 2 R2 may be
    inf - inf = NaN in a correct evaluation (exact value 0). y = [[-40000], [-1]]: only +inf is
    possible (2 R2 = 2), so NaN is not. The loss (squares 1.6e9) may be inf, never NaN (c = 1)."""
    both, _ = bounds_for([[1.0], [1.0]], [[-40000.0], [40000.0]], [[0.0]], [0.0], 2.0**-10, "sum", FLOAT16)
    assert both.inf_allowed["grad_b"].all() and both.nan_allowed["grad_b"].all() and both.nan_allowed["grad_W"].all()
    one, _ = bounds_for([[1.0], [1.0]], [[-40000.0], [-1.0]], [[0.0]], [0.0], 2.0**-10, "sum", FLOAT16)
    assert one.inf_allowed["grad_b"].all() and not one.nan_allowed["grad_b"].any()
    assert bool(one.inf_allowed["loss"]) and not bool(one.nan_allowed["loss"])
    # W' = W - lr g: an infinite g times a nonzero lr is inf, not NaN
    assert one.inf_allowed["W"].all() and not one.nan_allowed["W"].any()


def test_far_from_overflow_nothing_is_allowed():
    bnd, _ = bounds_for([[1.0], [2.0]], [[3.0], [-1.0]], [[0.5]], [0.25], 0.125, "mean", FLOAT16)
    for q in QUANTITIES:
        assert not np.any(bnd.inf_allowed[q]) and not np.any(bnd.nan_allowed[q]), q


def test_reported_nan_where_the_exact_value_is_in_range_is_disagree():
    """float32, mean, X = 2**60 (256 x 1), y = -X, W = 1, b = 0: R = 2**61, grad_W = 2/256 * 256 *
    2**121 = 2**122 (in float32's range). X^T R summed before the scale is 2**129 > 2**128: inf is a
    correct answer, but every term is positive and nothing is 0, so NaN is not. Before the fix
    compare graded any non-finite value as overflow here, and assert_agrees passed a NaN step."""
    X = np.full((256, 1), 2.0**60)
    case = case_from_arrays("overflow-report", X, -X, [[1.0]], [0.0], lr=0.01, reduction="mean", dtypes=["float32"])

    def nan_step(X, y, W, b, *, lr, reduction, steps):
        r = numpy_hand(X, y, W, b, lr=lr, reduction=reduction, steps=steps)[0]
        return [StepResult(r.loss, np.full_like(r.grad_W, np.nan), r.grad_b, np.full_like(r.W, np.nan), r.b)]

    impl = Implementation("nan-step", "numpy", nan_step, kind="plugin")
    recs = {r.quantity: r for r in verify([case], [impl], dtypes=["float32"])}
    assert recs["grad_W"].verdict == "disagree"
    assert recs["grad_W"].exact_rational == str(2**122)
    assert "NaN where the exact value is 5.31691e+36" in recs["grad_W"].message
    assert recs["grad_W"].bound_ratio == np.inf and recs["grad_W"].max_abs_error == np.inf
    assert recs["W"].verdict == "disagree"
    # NumPy sums X^T R first: 2**129 overflows, inf is correct (overflow, not a failure)
    hand = {r.quantity: r for r in verify([case], ["numpy-hand"], dtypes=["float32"])}
    assert hand["grad_W"].computed == "inf" and hand["grad_W"].verdict == "overflow"


def test_inf_where_no_intermediate_can_overflow_is_disagree():
    case = case_from_arrays("small", [[1.0], [2.0]], [[3.0], [-1.0]], [[0.5]], [0.25], lr=0.125, reduction="mean",
                            dtypes=["float32"])

    def inf_step(X, y, W, b, *, lr, reduction, steps):
        r = numpy_hand(X, y, W, b, lr=lr, reduction=reduction, steps=steps)[0]
        return [StepResult(r.loss, r.grad_W, np.full_like(r.grad_b, np.inf), r.W, r.b)]

    recs = {r.quantity: r for r in verify([case], [Implementation("inf-step", "numpy", inf_step, kind="plugin")],
                                          dtypes=["float32"])}
    assert recs["grad_b"].verdict == "disagree" and "inf where the exact value is" in recs["grad_b"].message


# ---------------------------------------------------------------- long reductions: finite worst-case bounds

@pytest.mark.parametrize("fmt,n", [(FLOAT16, 3000), (BFLOAT16, 300)])
def test_long_reductions_keep_a_finite_worst_case_bound(fmt, n):
    """Past ``m u = 1`` (float16 with N + 3 >= 2048, bfloat16 with N + 3 >= 256) Higham's ``gamma_m = m u / (1 - m u)``
    does not exist, but ``m`` factors ``(1 + d)^(+-1)`` still lie within ``[(1 - u)^m, (1 - u)^-m]``: the rigorous
    bounds stay finite, at least ``((1 - u)^-(N + 3) - 1)`` times the gradient's sum of |terms| (computed here from
    Fractions), and nothing is called vacuous (until 2026-12-07 they were infinite there)."""
    rng = np.random.default_rng(0)
    X = round_to_format(rng.standard_normal((n, 1)), fmt)
    y = round_to_format(rng.standard_normal((n, 1)), fmt)
    bnd, _ = bounds_for(X, y, [[0.5]], [0.25], 2.0**-6, "mean", fmt)
    assert not bnd.vacuous
    u = Fraction(fmt.unit_roundoff)
    growth = float((1 / (1 - u)) ** (n + 3) - 1)
    R = X @ np.array([[0.5]]) + 0.25 - y  # exact in float64 (a few-bit products and sums)
    terms = float(np.abs(X[:, 0] * R[:, 0]).sum()) * 2 / n
    assert np.isfinite(bnd.rigorous["grad_W"]).all() and float(bnd.rigorous["grad_W"][0, 0]) >= growth * terms
    assert float(bnd.rigorous["grad_W"][0, 0]) < 4 * growth * terms  # (and not much more: the residual's own error)
    assert np.isfinite(bnd.rigorous["loss"]) and np.isfinite(bnd.expected["grad_W"]).all()


def test_vacuous_bound_says_why_where_the_growth_leaves_float64():
    """bfloat16 (u = 2**-8) with N = 200,000: ``(1 - u)^-(N + 3) = exp(783)`` exceeds float64, the one place a
    linear step's rigorous bound is still infinite; the message says which sum made it so."""
    n = 200_000
    rng = np.random.default_rng(0)
    X = round_to_format(rng.standard_normal((n, 1)), BFLOAT16)
    y = round_to_format(rng.standard_normal((n, 1)), BFLOAT16)
    bnd, _ = bounds_for(X, y, [[0.5]], [0.25], 2.0**-6, "mean", BFLOAT16)
    assert np.isinf(bnd.rigorous["grad_W"]).all()
    assert f"N = {n} rows" in bnd.vacuous["grad_W"] and "exceeds float64's range" in bnd.vacuous["grad_W"]
    assert "loss" in bnd.vacuous and f"N K = {n}" in bnd.vacuous["loss"]
    assert np.isfinite(bnd.expected["grad_W"]).all()  # the expected bound still grades


def test_vacuous_reason_reaches_the_record_message():
    n = 300
    rng = np.random.default_rng(1)
    case = case_from_arrays("long-bf16", rng.standard_normal((n, 1)), rng.standard_normal((n, 1)), [[0.5]], [0.25],
                            lr=0.01, reduction="mean", dtypes=["float32"])
    # float64 at N = 300 is far from vacuous: no note
    recs = verify([case], ["numpy-hand"], dtypes=["float64"])
    assert not any("vacuous" in r.message for r in recs)


def test_float64_underflow_quantum_is_the_smallest_subnormal():
    assert Regime(FLOAT64, False).eta == 2.0**-1074
    assert Regime(FLOAT64, True).eta == 2.0**-1022


def _uniform_case(seed, scale_bits=20):
    rng = np.random.default_rng(seed)
    n, d, k = 257, 5, 3
    X = rng.normal(size=(n, d)) * np.exp2(rng.integers(-scale_bits, scale_bits + 1, (n, d)))
    W, b = rng.normal(size=(d, k)), rng.normal(size=k)
    R = rng.normal(size=(n, k)) * np.exp2(rng.integers(-30, 31, (n, k)))
    return X, W, b, R


@pytest.mark.parametrize("seed", range(4))
def test_uniform_underflow_sums_in_closed_form_float64(seed):
    """float64, gradual underflow: U = D * 2**-1074 at every element (U_uniform), so |X|^T U and 1^T U are
    formed as (|X|^T 1) U_uniform and N U_uniform. Each must be the exact rational value of the model's
    first-order absolute part up to a few roundings (BLAS's |X|^T U rounds each of its N subnormal products
    to the grid of 2**-1074: an error up to N * 2**-1075)."""
    from harness.bounds import gradient_bounds, loss_bound, residual_bound, seed_underflow

    X, W, b, R = _uniform_case(seed)
    n, d = X.shape
    k = R.shape[1]
    y = X @ W + b - R
    reg = Regime(FLOAT64, False)
    eta = 2.0**-1074
    rb = residual_bound(X, W, b, y, reg, 0.0)
    assert rb.U_uniform == d * eta and bool((rb.U == d * eta).all())
    for c in (1.0, 1.0 / (n * k)):
        gb = gradient_bounds(X, R, rb, c, reg, 0.0)
        s = Fraction(2) * Fraction(c)
        ue = Fraction(d) * Fraction(eta)
        colx = [sum(Fraction(abs(v)) for v in X[:, j]) for j in range(d)]
        eta_s = Fraction(2 * reg.scale_underflow(c))
        # the seed's chain beyond m (grad_W) and 2 (grad_b) etas per element, where a residual's bound reaches it (|R| <=
        # E_R: the computed residual may be subnormal, and 2 ((R / N) / K) round twice there; helper-132)
        seed: dict[bool, dict[int, list[Fraction]]] = {True: {}, False: {}}
        more = seed_underflow(np.abs(R), rb.E, c, reg, (2.0 if c < 1 else 1.0, 2.0))
        if more is not None:
            for is_w, units in zip((True, False), more[1], strict=True):
                seed[is_w] = {int(i): [Fraction(v) * Fraction(eta) for v in row] for i, row in zip(more[0], units, strict=True)}
        for j in range(d):
            for m in range(k):
                xr = sum(Fraction(abs(X[i, j])) * Fraction(abs(R[i, m])) for i in range(n))
                # the products' underflows scaled by the seed's 2 where it comes after the sum (2 n: 2 (X^T R), and
                # 2 (X^T (R / N)) under a mean taken first, helper-138); the per-element scale's twice under a mean
                # (2 fl(c R), helper-127)
                exact = s * colx[j] * ue + eta_s * xr + Fraction(eta) * (2 * n + 1 + (2 if c < 1 else 1) * colx[j])
                exact += sum(Fraction(abs(X[i, j])) * row[m] for i, row in seed[True].items())
                assert abs(Fraction(gb.U_gW[j, m]) - exact) <= 4 * Fraction(eta) + exact * Fraction(1, 2**40), (j, m)
        for m in range(k):
            exact = s * n * ue + eta_s * sum(Fraction(abs(v)) for v in R[:, m]) + Fraction(eta) * (max(1, s) * n + n + 1)
            exact += sum(row[m] for row in seed[False].values())
            assert abs(Fraction(gb.U_gb[m]) - exact) <= 4 * Fraction(eta) + exact * Fraction(1, 2**40)
        _, U_L, _ = loss_bound(R, rb, c, reg)
        sum_r = sum(Fraction(abs(v)) for v in R.ravel())
        sum_r2 = sum(Fraction(v) ** 2 for v in R.ravel())
        exact = Fraction(c) * ue * (2 * sum_r + n * k * ue) + Fraction(reg.scale_underflow(c)) * sum_r2 + Fraction(eta) * (2 * n * k + 1)
        assert abs(Fraction(float(U_L)) - exact) <= 4 * Fraction(eta) + exact * Fraction(1, 2**40)


@pytest.mark.parametrize("seed", range(3))
def test_uniform_underflow_closed_form_equals_the_general_sums(seed):
    """float32 (U = D * 2**-150, a normal float64, so BLAS's sums are accurate): the closed form and the general
    sums of U (U_uniform=None) give the same U_gW, U_gb and loss part to float64 rounding; with flush-to-zero or
    TF32 U has flushed-input or TF32 parts and no uniform value (the general sums are used)."""
    import dataclasses

    from harness.bounds import gradient_bounds, loss_bound, residual_bound

    X, W, b, R = _uniform_case(seed, 10)
    y = X @ W + b - R
    reg = Regime(FLOAT32, False)
    rb = residual_bound(X, W, b, y, reg, 0.0)
    assert rb.U_uniform == X.shape[1] * reg.eta == X.shape[1] * 2.0**-150
    general = dataclasses.replace(rb, U_uniform=None)
    for c in (1.0, 1.0 / R.size):
        a, g = gradient_bounds(X, R, rb, c, reg, 0.0), gradient_bounds(X, R, general, c, reg, 0.0)
        np.testing.assert_allclose(a.U_gW, g.U_gW, rtol=2.0**-44, atol=0)
        np.testing.assert_allclose(a.U_gb, g.U_gb, rtol=2.0**-44, atol=0)
        np.testing.assert_allclose(loss_bound(R, rb, c, reg)[1], loss_bound(R, general, c, reg)[1], rtol=2.0**-44, atol=0)
        np.testing.assert_array_equal(a.gW, g.gW)  # the rigorous bounds do not use U
        np.testing.assert_array_equal(a.gb, g.gb)
    assert residual_bound(X, W, b, y, Regime(FLOAT16, True), 0.0).U_uniform is None
    assert residual_bound(X, W, b, y, reg, 2.0**-11).U_uniform is None


# ---------------------------------------------------------------- flush-to-zero named in the message

def _flushing_step(X, y, W, b, *, lr, reduction, steps):
    """numpy-hand with every subnormal intermediate and result flushed to zero (FTZ/DAZ)."""
    tiny = np.finfo(X.dtype).tiny

    def f(a):
        a = np.asarray(a)
        return np.where(np.abs(a) < tiny, a.dtype.type(0), a)

    n, k = y.shape
    dt = X.dtype.type
    c = dt(1.0) if reduction == "sum" else f(dt(1.0 / (n * k)))
    X, y, W, b = f(X), f(y), f(W), f(b)
    out = []
    for _ in range(steps):
        R = f(f(f(X @ W) + b) - y)
        loss = f(c * f(np.sum(f(R * R))))
        gW = f((dt(2) * c) * f(X.T @ R))
        gb = f((dt(2) * c) * f(R.sum(axis=0)))
        W = f(W - f(lr * gW))
        b = f(b - f(lr * gb))
        out.append(StepResult(loss, gW, gb, W, b))
    return out


def test_flush_to_zero_undeclared_is_disagree_and_named_declared_agrees():
    """The product-underflow example of above, through the runner: R = 2**-140 flushed to 0."""
    case = case_from_arrays("ftz", [[2.0**-70, 2.0**60]], [[0.0]], [[2.0**-70], [0.0]], [0.0], lr=2.0**-4,
                            reduction="sum", dtypes=["float32"])
    plain = Implementation("ftz-step", "numpy", _flushing_step, kind="plugin")
    recs = verify([case], [plain], dtypes=["float32"])
    bad = [r for r in recs if r.verdict == "disagree"]
    assert bad and any(r.quantity == "grad_W" for r in bad)
    assert all(r.message.startswith("flush-to-zero: ") for r in bad), [r.message for r in bad]
    declared = Implementation("ftz-step", "numpy", _flushing_step, kind="plugin", flush_to_zero=True)
    assert {r.verdict for r in verify([case], [declared], dtypes=["float32"])} == {"agree"}
    by_run = verify([case], [plain], dtypes=["float32"], options=RunOptions(flush_to_zero=True))
    assert {r.verdict for r in by_run} == {"agree"}
    # a correct gradual-underflow implementation is not touched by the diagnosis
    assert {r.verdict for r in verify([case], ["numpy-hand"], dtypes=["float32"])} == {"agree"}


def test_cli_flush_to_zero_option(tmp_path):
    """``check --flush-to-zero`` grades every implementation of the run with the flush-to-zero bounds."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    plugin = tmp_path / "ftz_plugin.py"
    plugin.write_text("import harness\nfrom tests.test_bounds_terms import _flushing_step\n"
                      "harness.implementation('ftz-plugin', framework='numpy')(_flushing_step)\n")
    cases = tmp_path / "ftz.toml"
    cases.write_text(f"[[case]]\nid = 'ftz'\nX = [[{2.0**-70!r}, {2.0**60!r}]]\ny = [[0.0]]\nW = [[{2.0**-70!r}], [0.0]]\n"
                     "b = [0.0]\nlr = 0.0625\nsteps = 1\nreduction = 'sum'\ndtypes = ['float32']\n")

    def run(*extra):
        res = subprocess.run([sys.executable, "-m", "harness", "check", "--cases", str(cases), "--plugin", str(plugin),
                              "--implementations", "ftz-plugin", "--devices", "cpu", "--results", str(tmp_path / "r.jsonl"),
                              "--report", "none", "-q", *extra], capture_output=True, text=True, cwd=ROOT, timeout=300,
                             env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
        recs = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()[1:]]
        return res, [r for r in recs if r.get("quantity") in QUANTITIES]

    res, recs = run()
    assert res.returncode == 1, res.stdout + res.stderr
    assert any(r["verdict"] == "disagree" and r["message"].startswith("flush-to-zero: ") for r in recs)
    res, recs = run("--flush-to-zero")
    assert res.returncode == 0, res.stdout + res.stderr
    assert {r["verdict"] for r in recs} == {"agree"} and "--flush-to-zero" in recs[0]["repro"]


# ---------------------------------------------------------------- long reductions, N or K = 10**6


@pytest.mark.slow
@pytest.mark.parametrize("n,k", [(10**6, 1), (1, 10**6)], ids=["N=1e6", "K=1e6"])
def test_long_reductions_float16_bfloat16_no_false_alarm(n, k):
    """Correct steps (NumPy's and torch's, as they really run) on reductions of 10**6 terms in float16
    and bfloat16: the rigorous bound is about 10**212 times the sum of |terms| in float16 ((1 - u)^-m - 1) and vacuous
    in bfloat16 ((1 - u)^-m beyond float64), and a correct evaluation must never be
    disagree; where a sum of 10**6 terms of magnitude ~1 can pass float16's 65504 an inf is overflow.
    Opt-in (HARNESS_RUN_SLOW=1): the exact oracle takes tens of seconds at this size."""
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((n, 1)), rng.standard_normal((n, k))
    W, b = rng.standard_normal((1, k)), rng.standard_normal(k)
    case = case_from_arrays(f"long-{n}-{k}", X, Y, W, b, lr=0.01, reduction="mean", dtypes=("float16", "bfloat16"))
    recs = verify([case], ["numpy-hand", "torch-seed"])
    assert recs and not [r for r in recs if r.verdict in ("disagree", "error")], [(r.implementation, r.dtype, r.quantity, r.message)
                                                                                    for r in recs if r.verdict in ("disagree", "error")]


def test_underflowing_products_scaled_after_the_sum() -> None:
    """float32, the sum reduction: every product of X^T R is 2**-150, which rounds to 0; NumPy's ``2c (X^T R)``
    doubles that loss after the sum. The underflow term did not count the doubling: the correct numpy-hand was
    ``disagree`` at 1.97 times the rigorous bound (helper-47); now 0.99 (this case is the bound's worst case)."""
    from harness.cases import case_from_arrays
    from harness.implementations import resolve
    from harness.runner import check_case

    n = 64
    X, y = np.full((n, 1), 2.0**-75), np.full((n, 1), -(2.0**-75))
    case = case_from_arrays("underflow", X, y, np.zeros((1, 1)), np.zeros(1), lr=1e-3, reduction="sum",
                            dtypes=("float32",))
    got = {r.quantity: r for r in check_case(case, resolve(["numpy-hand"])[0], "cpu", "float32")}
    assert got["grad_W"].max_abs_error == 2 * n * 2.0**-150  # every product lost: the error is exactly this
    assert got["grad_W"].verdict == "agree" and 0.9 < (got["grad_W"].bound_ratio or 0) <= 1


# ---------------------------------------------------------------- flush-to-zero in the update, element by element

def test_update_underflow_takes_the_flush_only_where_a_value_can_be_subnormal():
    """float16 with flush-to-zero declared: mn = 2**-14, u2 = 2**-11 here, floor 2**-25 (half the subnormal spacing).
    A gradient of 0.5 and lr = 2**-4 (product 2**-5) and a weight of 0.25: every value normal, both errors the floor.
    A subnormal gradient (2**-16, lr = 2**-4): the flushed g^ loses lr |g^| <= 2**-20 (1 + u2), less than mn. A
    product below mn (g = 2**-8, lr = 2**-8): at most 2**-16 (1 + u2). lr = 4, g = 2**-15: 4 |g| (1 + u2) = 2**-13
    (1 + u2). A subnormal weight (2**-15) or a difference that cancels below mn: e2 = mn. The product's least
    magnitude decides, not its largest: g^ within [2**-4, 3 * 2**-4] times 2**-10 may be below mn (e1 = mn), times
    2**-8 it is at least 2**-12 (1 - u2). Gradual underflow (not declared): the floor everywhere."""
    from harness.bounds import update_underflow

    ftz, mn, floor, u2 = Regime(FLOAT16, True), 2.0**-14, 2.0**-25, 2.0**-11

    def etas(old, new, g, lr, reg=ftz, E_g=0.0):
        e1, e2 = update_underflow(reg, np.array([old]), np.array([new]), np.array([g]), np.array([E_g]), lr, 0.0, u2)
        return float(np.asarray(e1).ravel()[0]), float(np.asarray(e2).ravel()[0])

    assert etas(0.25, 0.25 - 2.0**-5, 0.5, 2.0**-4) == (floor, floor)
    assert etas(0.25, 0.25, 2.0**-16, 2.0**-4)[0] == 2.0**-20 * (1 + u2) + floor
    assert etas(0.25, 0.25, 2.0**-8, 2.0**-8)[0] == 2.0**-16 * (1 + u2) + floor
    assert etas(0.25, 0.25, 2.0**-15, 4.0)[0] == 2.0**-13 * (1 + u2) + floor
    assert etas(2.0**-15, 0.25, 0.5, 2.0**-4)[1] == mn
    assert etas(0.25, 2.0**-15, 0.5, 2.0**-4)[1] == mn
    assert etas(0.25, 0.25, 2.0**-3, 2.0**-10, E_g=2.0**-4)[0] == mn + floor
    assert etas(0.25, 0.25, 2.0**-3, 2.0**-8, E_g=2.0**-4)[0] == floor
    assert etas(2.0**-15, 2.0**-15, 2.0**-16, 4.0, Regime(FLOAT16, False)) == (floor, floor)


def _float16_step(X, y, W, b, lr):
    """A float16 step evaluated in float16 operation by operation (NumPy's float16 arithmetic), the learning rate as
    given: (W', b')."""
    h = np.float16
    X16, y16, W16, b16 = (np.asarray(a, dtype=h) for a in (X, y, W, b))
    R = X16 @ W16 + b16 - y16
    g2 = h(2) / h(R.size)
    gW, gb = (X16.T @ R) * g2, R.sum(axis=0) * g2
    return (W16 - h(lr) * gW).astype(float), (b16 - h(lr) * gb).astype(float)


def test_float16_update_catches_a_wrong_learning_rate_on_small_weights():
    """helper-53's data (float16, mean, 4 x 2 -> 2, weights near 2**-6, lr = 5e-4) in the plain step: the flush-to-zero
    allowance of 2**-14 per operation on every element made W's bound 1.34e-4, about 9 ULPs of W near 0.019, and a
    learning rate 1.3 times too large (an error of about 5 ULPs) agreed. No value of the update is near float16's
    subnormal range, so the allowance is not taken: W's bound 1.19e-5, and that step disagrees; the correct
    float16 step still agrees."""
    X = [[0.75, 0.875], [0.625, 1.0], [0.5, 0.75], [0.875, 0.625]]
    y = [[-0.75, -0.5], [-0.625, -1.0], [-0.875, -0.5], [-0.5, -0.75]]
    W = (np.array([[1, 1.5], [1.25, 1.75]]) * 2.0**-6).tolist()
    b = (np.array([1, 1.5]) * 2.0**-6).tolist()
    lr = float(round_to_format(np.array([5e-4]), FLOAT16)[0])
    bnd, hilo = bounds_for(X, y, W, b, lr, "mean", FLOAT16)
    assert float(np.max(bnd.rigorous["W"])) < 2e-5
    good_W, good_b = _float16_step(X, y, W, b, lr)
    assert grade(bnd, hilo, "W", good_W, FLOAT16).verdict == "agree"
    assert grade(bnd, hilo, "b", good_b, FLOAT16).verdict == "agree"
    bad_W, bad_b = _float16_step(X, y, W, b, 1.3 * lr)
    assert grade(bnd, hilo, "W", bad_W, FLOAT16).verdict == "disagree"
    assert grade(bnd, hilo, "b", bad_b, FLOAT16).verdict == "disagree"


def test_float16_update_that_flushes_a_subnormal_weight_stays_within_its_bound():
    """float16, sum, X = 1, W = 2**-15 (subnormal), b = 0, y = W (R = 0, g = 0): W' = W. A step that flushes its
    subnormal input returns 0, an error of 2**-15 < mn: allowed where the step declares flush-to-zero, where the
    weight is subnormal; a weight of 0.25 flushed to 0 is not."""
    bnd, hilo = bounds_for([[1.0]], [[2.0**-15]], [[2.0**-15]], [0.0], 0.125, "sum", FLOAT16, flush_to_zero=True)
    assert hilo["W"][0][0, 0] == 2.0**-15
    assert grade(bnd, hilo, "W", [[0.0]], FLOAT16).verdict != "disagree"
    bnd, hilo = bounds_for([[1.0]], [[0.25]], [[0.25]], [0.0], 0.125, "sum", FLOAT16, flush_to_zero=True)
    assert grade(bnd, hilo, "W", [[0.0]], FLOAT16).verdict == "disagree"


def test_float16_update_with_a_learning_rate_below_the_smallest_normal():
    """helper-55: float16, lr = 1e-5 (below 2**-14, subnormal in float16). With float16's default flush-to-zero the
    learning rate could be held as 0 and the product flushed (the bound allowed all of lr g): a step that skipped the
    update agreed at 77-116 ULPs, one with lr 1.3 and 1.9 times too large at 23-104. The update holds lr and flushes
    only where the step declares it: the correct float16 step agrees, the skipped update disagrees. (The inputs are
    rounded to float16, as the harness hands them to a step: unrounded, the step's own rounding of W, up to 4.3e-7
    here, was graded as part of its update, which only the old update bound's ``u2 |W'|`` had room for, helper-136.)"""
    rng = np.random.default_rng(5)
    X, y = rng.uniform(0.5, 1.0, (8, 2)), rng.uniform(-1.0, -0.5, (8, 2))
    W, b = rng.uniform(0.5, 1.5, (2, 2)) * 2.0**-10, rng.uniform(0.5, 1.5, 2) * 2.0**-10
    X, y, W, b = (round_to_format(a, FLOAT16).tolist() for a in (X, y, W, b))
    lr = float(round_to_format(np.array([1e-5]), FLOAT16)[0])
    assert 0 < lr < 2.0**-14
    bnd, hilo = bounds_for(X, y, W, b, lr, "mean", FLOAT16, lr_held=1e-5)
    good_W, _ = _float16_step(X, y, W, b, 1e-5)
    assert grade(bnd, hilo, "W", good_W, FLOAT16).verdict == "agree"
    assert grade(bnd, hilo, "W", W, FLOAT16).verdict == "disagree"  # the update skipped
