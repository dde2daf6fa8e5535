"""Property tests of the error model (Hypothesis).

Every correct evaluation order (sequential, reversed, pairwise, random
permutation, float64-then-rounded, FMA) in every dtype must stay within the
rigorous bound; and the bound must not be absurdly loose.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.bounds import step_bounds
from harness.compare import compare
from harness.floats import FORMATS, round_to_format
from harness.oracle import exact_inputs_from_floats, exact_step
from harness.symbolic import QUANTITIES
from tests.orders import ORDERS, evaluate_step, normal_inputs

DTYPES = ("float64", "float32", "float16", "bfloat16")


@st.composite
def step_inputs(draw):
    fmt = FORMATS[draw(st.sampled_from(DTYPES))]
    n = draw(st.integers(1, 10))
    d = draw(st.integers(1, 4))
    k = draw(st.integers(1, 3))
    scale = 2.0 ** draw(st.integers(-6, 6))
    vals = st.floats(-4, 4, allow_nan=False, allow_infinity=False)

    def arr(*shape):
        a = np.array(draw(st.lists(vals, min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))), dtype=float).reshape(shape)
        return round_to_format(a * scale, fmt)

    X, W, b, y = arr(n, d), round_to_format(arr(d, k) / scale, fmt), arr(k), arr(n, k)
    lr = float(round_to_format(np.array([draw(st.sampled_from([0.5, 0.1, 0.01, 1e-3]))]), fmt)[0])
    return fmt, {"X": X, "y": y, "W": W, "b": b}, lr, draw(st.sampled_from(["sum", "mean"])), draw(st.sampled_from(ORDERS))


def grade(fmt, inputs, lr, reduction, order, seed=0):
    ex = exact_step(exact_inputs_from_floats(inputs), Fraction(lr), reduction)
    hilo = {q: ex.values[q].to_hi_lo() for q in QUANTITIES}
    bounds = step_bounds(inputs, ex.residual.to_float64(), {q: hilo[q][0] for q in QUANTITIES}, lr=lr, reduction=reduction, fmt=fmt)
    got = evaluate_step(inputs["X"], inputs["y"], inputs["W"], inputs["b"], lr, reduction, fmt, order, seed)
    return {q: compare(got[q], *hilo[q], bounds.rigorous[q], bounds.expected[q], bounds.inf_allowed[q], fmt, nan_allowed=bounds.nan_allowed[q]) for q in QUANTITIES}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(step_inputs())
def test_every_correct_order_stays_within_the_rigorous_bound(args):
    fmt, inputs, lr, reduction, order = args
    for q, cmp in grade(fmt, inputs, lr, reduction, order).items():
        assert cmp.verdict in ("agree", "suspect", "overflow"), (q, fmt.name, order, reduction, cmp.bound_ratio, inputs)
        if cmp.verdict != "overflow":
            assert cmp.bound_ratio <= 1.0


def test_bound_tightness_is_reported_and_not_absurd(capsys):
    """Median of error / rigorous bound over nonzero errors, per dtype, for random
    normal data with N = 32 (a fixed sample, so the figure is reproducible)."""
    rng = np.random.default_rng(3)
    medians = {}
    for name in ("float32", "float16", "bfloat16"):
        fmt = FORMATS[name]
        ratios = []
        for trial in range(6):
            inputs = normal_inputs(rng, fmt, 32, 3, 2)
            for order in ("sequential", "pairwise"):
                for cmp in grade(fmt, inputs, float(round_to_format(np.array([0.01]), fmt)[0]), "mean", order, trial).values():
                    if cmp.max_abs_error > 0:
                        ratios.append(cmp.bound_ratio)
        medians[name] = float(np.median(ratios))
    with capsys.disabled():
        print("\nmedian error / rigorous bound (N=32, normal data):", {k: f"{v:.3g}" for k, v in medians.items()})
    for v in medians.values():
        assert 1e-3 < v < 1.0  # within the bound, and not off by more than three orders of magnitude
