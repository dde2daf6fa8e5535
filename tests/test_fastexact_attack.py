"""Adversarial checks of the integer-slice oracle (harness.fastexact, harness.slicekernels) against the
exact-rational reference, bit for bit: block/column boundaries of the residual kernel, the sign plane, wide
exponent ranges, the Gram sums past one GRAM_BLOCK, the chunked first product, position_sum at the int64
extremes, DigitResidual's lazy parts and pickling, and the accurate X^T R's radius at extreme scales."""

from __future__ import annotations

import copy
import math
import pickle
import zlib
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, target
from hypothesis import strategies as st

from harness import fastexact
from harness.exact import ScaledInts
from harness.floats import get_format, round_to_format
from harness.oracle import ACCURATE_MIN_WORK, exact_inputs_from_floats, exact_step
from harness.slicekernels import BLOCK, GRAM_BLOCK, GRAM_CHUNK

B = fastexact.B


def _arrs(X, y, W, b) -> dict[str, np.ndarray]:
    return {"X": np.asarray(X, dtype=np.float64), "y": np.asarray(y, dtype=np.float64),
            "W": np.asarray(W, dtype=np.float64), "b": np.asarray(b, dtype=np.float64)}


def _same(arrs: dict[str, np.ndarray], lr: Fraction = Fraction(3, 64), reduction: str = "sum", fast_only: bool = True):
    """The slice oracle equals the rational reference in every value, the residual's fractions and its rounding
    (signed zeros included); returns the fast step."""
    ref = exact_step(exact_inputs_from_floats(arrs), lr, reduction, method="exact-rational")
    fast = exact_step(exact_inputs_from_floats(arrs), lr, reduction, method="exact-integer-slices")
    if fast_only:
        assert fast.method == fastexact.METHOD
    for q, v in ref.values.items():
        assert v.shape == fast.values[q].shape, q
        assert (v.to_fractions() == fast.values[q].to_fractions()).all(), q
    assert ref.residual.shape == fast.residual.shape
    assert (ref.residual.to_fractions() == fast.residual.to_fractions()).all()
    r_ref, r_fast = ref.residual.to_float64(), fast.residual.to_float64()
    assert np.array_equal(r_ref, r_fast) and np.array_equal(np.signbit(r_ref), np.signbit(r_fast))
    return fast


def _random(rng: np.random.Generator, shape: tuple[int, ...], lo: int, hi: int) -> np.ndarray:
    return rng.standard_normal(shape) * 2.0 ** rng.integers(lo, hi + 1, shape)


# ------------------------------------------------------------------ shapes: kernel blocks spanning columns


@pytest.mark.parametrize(("n", "d", "k"), [
    (1, 1, 600), (1, 2, 2000), (1, 1, BLOCK + 1), (2, 1, BLOCK + 3), (3, 2, 171), (5, 3, 103),
    (BLOCK - 1, 1, 1), (BLOCK, 1, 2), (BLOCK + 1, 2, 1), (2 * BLOCK - 1, 1, 3), (2 * BLOCK + 1, 1, 1),
    (GRAM_CHUNK + 1, 1, 1), (1, 1, 1), (7, 1, 1), (1, 3, 1)])
@pytest.mark.parametrize("kind", ["normal", "negative", "cancel", "pow2", "wide"])
def test_block_and_column_boundaries(n, d, k, kind):
    """Blocks of BLOCK elements of R^T that start mid-column and span many columns (N = 1 and K large, N not a
    multiple of BLOCK): b's digits and the column sums per column segment."""
    rng = np.random.default_rng(n * 7919 + d * 31 + k)
    X, W, b, y = rng.standard_normal((n, d)), rng.standard_normal((d, k)), rng.standard_normal(k), rng.standard_normal((n, k))
    if kind == "negative":  # every residual negative, of different sizes per column (the sign plane everywhere)
        b = -(2.0 ** rng.integers(0, 80, k))
        y = np.abs(y) * 2.0**40
    elif kind == "cancel":
        y = X @ W + b
    elif kind == "pow2":  # R = -2**(B m) over the scale: a carry out of every digit into the sign
        X, W, b = np.ones((n, d)), np.zeros((d, k)), np.zeros(k)
        y = 2.0 ** (B * rng.integers(0, 6, (n, k)))
    elif kind == "wide":
        # X over at most 2 digits and the rest wide: about 100 residual planes, still on the slice path
        X = rng.integers(-7, 8, (n, d)) * 2.0 ** rng.integers(0, 30, (n, d))
        W, b, y = _random(rng, (d, k), -500, 400), _random(rng, (k,), -1074, 900), _random(rng, (n, k), -1074, 1000)
    _same(_arrs(X, y, W, b), reduction="mean")


@pytest.mark.parametrize(("n", "d", "k"), [(0, 2, 2), (2, 0, 2), (2, 2, 0), (0, 0, 0), (3, 1, 0)])
def test_empty_shapes_sum(n, d, k):
    """Empty arrays: the reference evaluates them (sum reduction); the slice oracle must as well."""
    rng = np.random.default_rng(1)
    _same(_arrs(rng.standard_normal((n, d)), rng.standard_normal((n, k)), rng.standard_normal((d, k)),
                rng.standard_normal(k)), reduction="sum", fast_only=False)


def test_chunked_first_product():
    """S * D > 2048 (the first product cut into chunks, its digits carried and transposed), D > 2048."""
    rng = np.random.default_rng(7)
    for n, d, k in ((BLOCK + 2, 2049, 2), (3, 4500, 3)):
        X = -(2.0**53 - 1) * 2.0 ** rng.integers(0, 40, (n, d))  # all-ones significands: the largest digits
        W = (2.0**53 - 1) * 2.0 ** rng.integers(0, 40, (d, k))
        b = rng.standard_normal(k)
        y = X @ W + b
        _same(_arrs(X, y, W, b), reduction="mean")
    X = rng.standard_normal((40, 1100)) * 2.0 ** rng.integers(-30, 30, (40, 1100))  # S = 2 or 3: S * D > 2048
    W = rng.standard_normal((1100, 2))
    _same(_arrs(X, X @ W, W, np.zeros(2)), reduction="sum")


@pytest.mark.parametrize(("n", "d", "xbits", "spread", "planes"), [
    (3, 512, 53, 20, 4), (300, 512, 53, 20, 4), (3, 1024, 21, 21, 2), (2, 2048, 21, 0, 1), (3, 682, 53, 0, 3),
    (5, 1, 53, 300, None)])
def test_first_product_at_its_exactness_edge(n, d, xbits, spread, planes):
    """S * D at or just under 2048 (= CHUNK_D, the last contraction summed in float64) with the largest digits of
    one sign in every plane (all-ones significands): each position sums up to min(S, T) * D products of up to
    2**42, added one digit of X at a time into the same float64 positions; an accumulation that rounded, or a
    position added twice, would show in X W's exact digits. And a wide X over one column (many digits, one product
    per plane)."""
    rng = np.random.default_rng(d + spread)
    X = -(2.0**xbits - 1) * 2.0 ** rng.integers(0, spread + 1, (n, d))
    X[0, 0] = -(2.0**xbits - 1)  # the lowest exponent and the widest spread both present
    X[-1, -1] = -(2.0**xbits - 1) * 2.0**spread
    W = -(2.0**53 - 1) * 2.0 ** rng.integers(0, 60, (d, 3))
    if planes is not None:
        qx = int(fastexact.float_range(X)[0])
        S = fastexact.digits_matrix(X, qx)[1]
        assert S == planes and S * d <= fastexact.CHUNK_D and S * (d + 1) > fastexact.CHUNK_D, (S, d)
    else:
        W = W[:, :1] / 2.0**59
    _same(_arrs(X, X @ W, W, np.zeros(W.shape[1])), reduction="sum")


@pytest.mark.parametrize("d", [1, fastexact.PER_PLANE_MIN_D - 1, fastexact.PER_PLANE_MIN_D, 17])
@pytest.mark.parametrize("kind", ["mixed", "wide", "largest"])
def test_first_product_either_side_of_its_per_plane_threshold(d, kind):
    """X W's digit positions by one stacked product (D < PER_PLANE_MIN_D) and by one product per digit plane of X
    (from it on), with many planes on each side (mixed magnitudes, a wide exponent range, the largest digits)."""
    rng = np.random.default_rng(d * 3 + len(kind))
    n, k = 700, 3
    if kind == "mixed":
        X, W = _random(rng, (n, d), -20, 20), _random(rng, (d, k), -3, 3)
    elif kind == "wide":
        X, W = _random(rng, (n, d), -100, 100), _random(rng, (d, k), -40, 40)
    else:
        X = -(2.0**53 - 1) * 2.0 ** rng.integers(0, 64, (n, d))
        W = (2.0**53 - 1) * 2.0 ** rng.integers(0, 64, (d, k))
    y = X @ W + rng.standard_normal((n, k))
    _same(_arrs(X, y, W, rng.standard_normal(k)), reduction="mean")


@pytest.mark.parametrize("d", [fastexact.CHUNK_D, fastexact.CHUNK_D + 1])
def test_first_product_sums_of_largest_digits_across_the_chunk_length(d):
    """One digit of X and two of W, every digit 2**21 - 1: a position sums D products of (2**21 - 1)**2. At D = 2048
    the sum, 2048 (2**21 - 1)**2, is below 2**53 (the float64 path, exact); at D = 2049 it is an odd integer of 54
    bits, which float64 would round, so it must take the chunked int64 path."""
    X = np.full((3, d), -(2.0**21 - 1))
    W = np.full((d, 2), -(2.0**42 - 1))
    assert fastexact.digits_matrix(X, 0)[1] == 1
    _same(_arrs(X, X @ W, W, np.zeros(2)), reduction="sum")
    _same(_arrs(X, np.zeros((3, 2)), W, np.ones(2)), reduction="sum")


# ------------------------------------------------------------------ values


@pytest.mark.parametrize("sgn", [1.0, -1.0])
@pytest.mark.parametrize("q0", [-1074, -600, 0, 971])
def test_powers_of_two_across_every_exponent(q0, sgn):
    """R = ±2**e (and ±(2 - 2**-52) 2**e, (1 - 2**-53) 2**e) for every e above several scales: carries out of
    every digit, negative powers of two whose magnitude needs the sign plane, rounding at the subnormal and
    overflow thresholds."""
    vals = [m * 2.0**e for e in range(q0, 1024) for m in (1.0, 1.5, 1 - 2.0**-53, 1 + 2.0**-52)
            if e < 1023 or m <= 1.5]
    y = np.concatenate([sgn * np.array(vals), [2.0**q0]])
    for yy in (y.reshape(-1, 1), y.reshape(1, -1)):
        n, k = yy.shape
        _same(_arrs(np.zeros((n, 1)), yy, np.zeros((1, k)), np.zeros(k)))
        _same(_arrs(np.ones((n, 1)), yy, np.full((1, k), 2.0**q0), np.full(k, -(2.0**q0))), reduction="mean")


@pytest.mark.parametrize("case", ["zeros", "zero-column", "y-zero", "b-zero", "x-zero", "w-zero", "negzero",
                                  "huge-tiny", "subnormal-product", "overflowing-residual"])
def test_special_values(case):
    rng = np.random.default_rng(zlib.crc32(case.encode()))  # (not hash(): salted per process)
    n, d, k = 37, 3, 5
    X, W, b, y = rng.standard_normal((n, d)), rng.standard_normal((d, k)), rng.standard_normal(k), rng.standard_normal((n, k))
    if case == "zeros":
        X, W, b, y = X * 0, W * 0, b * 0, y * 0
    elif case == "zero-column":
        X[:, 1] = 0.0
        y[:, 2] = 0.0
        W[:, 3] = 0.0
        b[3] = y[0, 3] = 0.0
    elif case == "y-zero":
        y[...] = 0.0
    elif case == "b-zero":
        b[...] = 0.0
    elif case == "x-zero":
        X[...] = 0.0
    elif case == "w-zero":
        W[...] = 0.0
    elif case == "negzero":
        X, W, b, y = -0.0 * X, -0.0 * W, -0.0 * b, -0.0 * y
    elif case == "huge-tiny":  # 2**1023-ish and 2**-1074 together in every array
        X[::2] *= 2.0**-1000  # X alone over 1500 bits: the fallback to the rationals
        X[1::2] *= 2.0**500
        W[0] *= 2.0**-74
        W[1:] *= 2.0**400
        b = np.array([2.0**-1074, -(2.0**1023), 5e-324, 1.7976931348623157e308, 0.0])
        y[::3] = 2.0**-1074
    elif case == "subnormal-product":  # X W far below the smallest subnormal: q0 = qx + qw < -2000
        X = np.round(X * 2**20) * 2.0**-1020  # 22 bits or fewer per value: few digit planes, no fallback
        W = np.full((d, k), 2.0**-1074)
        y = np.full((n, k), -(2.0**-1074))
    elif case == "overflowing-residual":  # exact X W beyond float64's range: R rounds to ±inf
        X = np.full((n, d), 2.0**1000) * np.sign(X)
        W = np.full((d, k), 2.0**1000) * np.sign(W)
    _same(_arrs(X, y, W, b), reduction="mean", fast_only=case != "huge-tiny")


def test_all_ones_significands_fill_every_digit():
    """Inputs of 53 one bits at exponents B apart: every digit of X, W and R at 2**B - 1 or carrying."""
    rng = np.random.default_rng(3)
    n, d, k = 2 * BLOCK + 5, 3, 3
    m = 2.0**53 - 1
    X = m * np.where(rng.random((n, d)) < 0.5, -1.0, 1.0) * 2.0 ** (B * rng.integers(-3, 3, (n, d)))
    W = m * np.where(rng.random((d, k)) < 0.5, -1.0, 1.0) * 2.0 ** (B * rng.integers(-3, 3, (d, k)))
    b = m * 2.0 ** (B * rng.integers(-2, 2, k))
    y = X @ W + b
    _same(_arrs(X, y, W, b), reduction="sum")
    _same(_arrs(X, -y, W, -b), reduction="mean")


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_low_precision_formats_wide_ranges(dtype):
    fmt = get_format(dtype)
    rng = np.random.default_rng(len(dtype))
    n, d, k = 300, 4, 3
    arrs = {"X": _random(rng, (n, d), -40, 20), "W": _random(rng, (d, k), -20, 20), "b": _random(rng, (k,), -30, 10),
            "y": _random(rng, (n, k), -40, 40)}
    with np.errstate(all="ignore"):
        arrs = {key: np.asarray(round_to_format(v, fmt), dtype=np.float64) for key, v in arrs.items()}
    arrs = {key: np.where(np.isfinite(v), v, 0.0) for key, v in arrs.items()}
    arrs["y"] = np.asarray(round_to_format(arrs["X"] @ arrs["W"] + arrs["b"], fmt), dtype=np.float64)
    arrs["y"] = np.where(np.isfinite(arrs["y"]), arrs["y"], 0.0)
    _same(arrs, reduction="mean")


# ------------------------------------------------------------------ the Gram sums


def test_gram_sums_past_one_gram_block_with_largest_digits():
    """More than GRAM_BLOCK residuals, each -2**-1074 over a scale of 2**-1074 next to a 2**1000 (about 100
    digit planes, every digit 2**B - 1): each Gram row's sum reaches 2**20 (2**21 - 1)**2, just below 2**62,
    doubled off the diagonal just below 2**63. The loss and 1^T R against closed forms (the reference would
    take too long on 2**20 residuals)."""
    n = GRAM_BLOCK + 3
    for big in (None, 2.0**1000):
        y = np.full((n, 1), 2.0**-1074)
        if big is not None:
            y[5, 0] = big
        R, _, gb, loss, _ = fastexact.step_parts(np.zeros((n, 1)), y, np.zeros((1, 1)), np.zeros(1))
        tiny = Fraction(2) ** -1074
        top = Fraction(big) if big is not None else tiny
        assert loss.fraction_at(()) == (n - 1) * tiny**2 + top**2
        assert gb.fraction_at((0,)) == -((n - 1) * tiny + top)
        assert np.array_equal(R.to_float64(), -y)


def test_gram_more_than_a_chunk_per_column():
    """N > GRAM_CHUNK rows per column and K columns, residuals of every digit at 2**B - 1 (R = -1 over q0)."""
    n, k = GRAM_CHUNK + 7, 3
    _same(_arrs(np.zeros((n, 1)), np.full((n, k), 1.0), np.zeros((1, k)), np.zeros(k)), reduction="sum")
    y = np.full((n, k), 2.0**-1074)
    y[0] = 2.0**60
    _same(_arrs(np.zeros((n, 1)), y, np.zeros((1, k)), np.zeros(k)), reduction="sum")


# ------------------------------------------------------------------ Hypothesis searches


_sizes = st.sampled_from([1, 2, 3, BLOCK - 1, BLOCK, BLOCK + 1])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(n=_sizes, d=st.integers(1, 3), k=st.sampled_from([1, 2, 3, 7, 600]), seed=st.integers(0, 2**32 - 1),
       ranges=st.lists(st.tuples(st.integers(-1074, 1000), st.integers(0, 1100)), min_size=4, max_size=4),
       mode=st.sampled_from(["free", "cancel", "cancel-low"]), reduction=st.sampled_from(["sum", "mean"]))
def test_hypothesis_wide_ranges_equal_rationals(n, d, k, seed, ranges, mode, reduction):
    """Each array's exponents drawn from its own range [lo, lo + width] (clipped to float64's): Hypothesis maximises
    the residual's digit planes and the exponent range; the slice oracle (or its fallback) equals the reference."""
    if n * k > 2000:
        n = 1
    rng = np.random.default_rng(seed)
    shapes = {"X": (n, d), "W": (d, k), "b": (k,), "y": (n, k)}
    arrs = {}
    for (key, shape), (lo, width) in zip(shapes.items(), ranges, strict=True):
        hi = min(lo + width, 1000)
        arrs[key] = rng.standard_normal(shape) * 2.0 ** rng.integers(lo, hi + 1, shape)
    with np.errstate(all="ignore"):
        if mode != "free":
            y = arrs["X"] @ arrs["W"] + arrs["b"]
            if mode == "cancel-low":
                y = y + rng.standard_normal(y.shape) * 2.0 ** float(ranges[3][0])
            if np.isfinite(y).all():
                arrs["y"] = y
    arrs = {key: np.where(np.isfinite(v), v, 0.0) for key, v in arrs.items()}
    low = [fastexact.float_range(v)[0] for v in arrs.values()]
    top = [fastexact.float_range(v)[1] for v in arrs.values()]
    lows = [v for v in low if v is not None]
    if lows:
        target(float(max(math.frexp(t)[1] for t in top) - min(lows)), label="exponent range")
    fast = _same(arrs, reduction=reduction, fast_only=False)
    if isinstance(fast.residual, fastexact.DigitResidual):
        target(float(fast.residual._digits.shape[0]), label="residual planes")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 40), d=st.integers(1, 3), k=st.integers(1, 3), seed=st.integers(0, 2**32 - 1),
       ex=st.integers(-1074, 600), ew=st.integers(-1074, 600), eb=st.integers(-1074, 1000), ey=st.integers(-1074, 1000))
@example(n=1, d=1, k=1, seed=0, ex=-1000, ew=-1074, eb=110, ey=-1074)  # the low planes' weights overflowed
def test_hypothesis_accurate_product_within_radius(n, d, k, seed, ex, ew, eb, ey):
    """The accurate X^T R (step_parts(accurate=True)) at extreme scales: it must not raise (other than TooWideError,
    the documented fallback), its error must lie within its radius, the radius within 2**-60 sum|terms|, and the
    residual, 1^T R and sum R^2 must equal the exact path's."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * 2.0 ** rng.integers(ex, ex + 60, (n, d))
    W = rng.standard_normal((d, k)) * 2.0 ** rng.integers(ew, ew + 60, (d, k))
    b = rng.standard_normal(k) * 2.0**eb
    y = rng.standard_normal((n, k)) * 2.0**ey
    X, W, b, y = (np.where(np.isfinite(v), v, 0.0) for v in (X, W, b, y))
    try:
        exact = fastexact.step_parts(X, y, W, b, accurate=False)
    except fastexact.TooWideError:
        return
    R, gw, gb, loss, radius = fastexact.step_parts(X, y, W, b, accurate=True)
    R0, gw0, gb0, loss0, none = exact
    assert none is None
    assert (R.to_fractions() == R0.to_fractions()).all()
    assert (gb.to_fractions() == gb0.to_fractions()).all() and loss.fraction_at(()) == loss0.fraction_at(())
    a, e = gw.to_fractions(), gw0.to_fractions()
    if radius is None:
        assert (a == e).all()
        return
    xs = ScaledInts.from_floats(X)
    terms = ScaledInts(np.abs(xs.ints).T @ np.abs(R0.ints), xs.scale * R0.scale).to_fractions()
    worst = 0.0
    for i in np.ndindex(a.shape):
        r = Fraction(float(radius[i]))
        assert abs(a[i] - e[i]) <= r, (i, float(abs(a[i] - e[i])), float(r))
        assert r <= terms[i] / 2**fastexact.ACCURATE_BITS
        if terms[i]:
            worst = max(worst, float(abs(a[i] - e[i]) / (terms[i] / 2**fastexact.ACCURATE_BITS)))
    target(worst, label="error / (2^-60 sum|terms|)")


def _accurate_within_radius(arrs: dict[str, np.ndarray], lr: Fraction):
    """The oracle's accurate step against the rational reference: grad_W and W within their radius, the rest exact.
    Returns (accurate, reference)."""
    inp = exact_inputs_from_floats(arrs)
    acc = exact_step(inp, lr, "mean", accurate=True)
    ref = exact_step(inp, lr, "mean", method="exact-rational")
    for q, v in ref.values.items():
        a, e = acc.values[q].to_fractions(), v.to_fractions()
        if q in acc.radius:
            assert all(abs(a[i] - e[i]) <= Fraction(float(acc.radius[q][i])) for i in np.ndindex(a.shape)), q
        else:
            assert (a == e).all(), q
    return acc, ref


def test_oracle_accurate_step_with_subnormal_scale_and_large_residual(accurate_everywhere):
    """Through the oracle (N*D*K >= ACCURATE_MIN_WORK, accurate=True): q0 = qx + qw near -2126 and a residual of
    about 2**110, so that the low digit planes left to float64 span more than 2000 bits. Must not raise; grad_W and
    W within their radius of the reference, the rest exact."""
    n = ACCURATE_MIN_WORK
    rng = np.random.default_rng(0)
    arrs = _arrs(rng.standard_normal((n, 1)) * 2.0**-1000, rng.standard_normal((n, 1)) * 2.0**90,
                 np.array([[3 * 2.0**-1074]]), np.array([2.0**110]))
    _accurate_within_radius(arrs, Fraction(1, 8))


def test_oracle_accurate_radius_on_column_scaled_data(accurate_everywhere):
    """The accurate step through the oracle on columns of X scaled 2**-300 .. 2**300 (the budget set by the
    smallest sum of terms): grad_W and W within their radius of the reference, the rest exact."""
    rng = np.random.default_rng(9)
    n, d, k = 4096, 4, 4
    X = rng.standard_normal((n, d)) * 2.0 ** np.array([-300, -20, 40, 300])
    W = rng.standard_normal((d, k)) * 2.0 ** np.array([[280], [0], [-60], [-290]])
    b = rng.standard_normal(k)
    y = X @ W + b + rng.standard_normal((n, k)) * 2.0**-30
    acc, ref = _accurate_within_radius(_arrs(X, y, W, b), Fraction(1, 10))
    assert (acc.residual.to_fractions() == ref.residual.to_fractions()).all()


@pytest.mark.parametrize("lr", [Fraction(1, 2**1100), Fraction(3, 10**320), Fraction(2**1100), Fraction(5, 2**1074)],
                         ids=["below-least-subnormal", "subnormal-decimal", "beyond-range", "subnormal"])
def test_accurate_radius_holds_for_learning_rates_outside_float64s_normal_range(accurate_everywhere, lr):
    """W's radius is lr times grad_W's: float(lr) rounded an exact lr below float64's least subnormal to 0 (a radius
    of 2**-1073 against an error of 1.5e-318), rounded a subnormal one by up to a quarter, and raised OverflowError
    beyond the range (helper-59). Every W within its radius of the exact-rational reference (an infinite radius
    bounds anything), the rest exact."""
    rng = np.random.default_rng(3)
    n, d, k = 64, 32, 32
    X = rng.standard_normal((n, d)) * 2.0 ** rng.integers(-60, 60, (n, d))
    W = rng.standard_normal((d, k)) * 2.0 ** rng.integers(-30, 30, (d, k))
    b, y = rng.standard_normal(k), rng.standard_normal((n, k)) * 2.0 ** rng.integers(-100, 60, (n, k))
    inp = exact_inputs_from_floats(_arrs(X, y, W, b))
    acc = exact_step(inp, lr, "sum", accurate=True)
    ref = exact_step(inp, lr, "sum", method="exact-rational")
    assert "W" in acc.radius
    for q, v in ref.values.items():
        a, e = acc.values[q].to_fractions(), v.to_fractions()
        if q not in acc.radius:
            assert (a == e).all(), q
            continue
        r = acc.radius[q]
        assert not np.isnan(r).any() and (r > 0).all(), q
        for i in np.ndindex(a.shape):
            assert math.isinf(r[i]) or abs(a[i] - e[i]) <= Fraction(float(r[i])), (q, i)


def test_scaled_radius_rounds_the_factor_up():
    """By hand: the factor's float64 at or above it, then the radius times it rounded up."""
    from harness.oracle import float_at_least, scaled_radius

    assert float_at_least(Fraction(1, 2**1100)) == 2.0**-1074
    assert float_at_least(Fraction(2**1100)) == math.inf
    assert float_at_least(Fraction(1, 3)) == math.nextafter(1 / 3, math.inf)  # 1/3 rounds down to nearest
    assert float_at_least(Fraction(1, 10)) == 0.1  # 1/10 rounds up to nearest (0.1000000000000000055...)
    assert float_at_least(Fraction(3, 10**320)) == math.nextafter(3e-320, math.inf)  # the subnormal 3e-320 lies below 3/10**320
    r = scaled_radius(np.array([1.0, 0.0, 2.0**-1074]), Fraction(1, 2**1100))
    assert r[0] >= 2.0**-1074 and r[1] == 2.0**-1073 and r[2] >= 2.0**-1074
    big = scaled_radius(np.array([1.0, 0.0]), Fraction(2**1100))
    assert big[0] == math.inf and big[1] == 2.0**-1073  # 0 times an unbounded factor: 0, not NaN


# ------------------------------------------------------------------ position_sum, plus_floats


def test_position_sum_extremes_many_pairs():
    """Up to 401 x 401 digit pairs (the Gram's size) at -2**63 and 2**63 - 1, random int64 values, non-contiguous
    input, empty outputs."""
    for val in (-(2**63), 2**63 - 1):
        p4 = np.full((401, 1, 401, 1), val, dtype=np.int64)
        assert int(fastexact.position_sum(p4, 0)[0, 0]) == val * sum(1 << (B * w) for w in range(401)) ** 2
    rng = np.random.default_rng(4)
    for S, U, w0 in ((1, 1, 0), (3, 50, 7), (50, 2, 0), (17, 19, 100)):
        p4 = rng.integers(-(2**63), 2**63 - 1, (S, 2, U, 3), dtype=np.int64, endpoint=True)
        p4[0, 0, 0, 0] = -(2**63)
        view = np.ascontiguousarray(p4.transpose(2, 1, 0, 3)).transpose(2, 1, 0, 3)  # same values, other strides
        for arr in (p4, view):
            got = fastexact.position_sum(arr, w0)
            for a in range(2):
                for j in range(3):
                    want = sum(int(p4[s, a, u, j]) << (B * (w0 + s + u)) for s in range(S) for u in range(U))
                    assert int(got[a, j]) == want
    assert fastexact.position_sum(np.zeros((2, 0, 3, 4), dtype=np.int64), 0).shape == (0, 4)


def test_plus_floats_extremes():
    ints = np.empty((2, 2), dtype=object)
    ints[:] = [[-(2**300), 0], [2**63, -1]]
    fs = (np.array([[5e-324, -1.7976931348623157e308], [-0.0, 2.0**-1022]]), np.array([[0.0, 0.0], [-5e-324, 1.0]]))
    for q in (-1200, -1074, 0, 1100):
        got = fastexact.plus_floats(ints, q, fs)
        want = ScaledInts(ints, Fraction(2) ** q) + ScaledInts.from_floats(fs[0]) + ScaledInts.from_floats(fs[1])
        assert (got.to_fractions() == want.to_fractions()).all()
    got = fastexact.plus_floats(ints, 3, (np.zeros((2, 2)),))
    assert (got.to_fractions() == ScaledInts(ints, Fraction(8)).to_fractions()).all()


# ------------------------------------------------------------------ DigitResidual


def _some_step():
    rng = np.random.default_rng(12)
    n, k = 2 * BLOCK + 9, 3
    X = rng.standard_normal((n, 2))
    W = rng.standard_normal((2, k))
    y = X @ W + rng.standard_normal((n, k)) * 2.0 ** rng.integers(-80, 10, (n, k))
    arrs = _arrs(X, y, W, rng.standard_normal(k))
    return arrs, exact_step(exact_inputs_from_floats(arrs), Fraction(1, 8), "mean", method="exact-integer-slices")


def test_digit_residual_ints_rounding_and_transpose():
    arrs, st_ = _some_step()
    R = st_.residual
    ref = exact_step(exact_inputs_from_floats(arrs), Fraction(1, 8), "mean", method="exact-rational").residual
    assert isinstance(R, fastexact.DigitResidual)
    assert R.shape == ref.shape
    assert (R.to_fractions() == ref.to_fractions()).all()
    assert (R.T.to_fractions() == ref.T.to_fractions()).all()
    assert np.array_equal(R._round(), R.to_float64())  # the rounding from the (transposed, float64) digits again
    hi, lo = R.to_hi_lo()
    rh, rl = ref.to_hi_lo()
    assert np.array_equal(hi, rh) and np.array_equal(lo, rl)
    digs, q0, rounded = fastexact.residual_digits(arrs["X"], arrs["y"], arrs["W"], arrs["b"])
    again = fastexact.DigitResidual(digs, q0)
    assert (again.to_fractions() == ref.to_fractions()).all()
    assert np.array_equal(again.to_float64(), rounded) and np.array_equal(rounded, R.to_float64())


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_digit_residual_round_trip_keeps_values_and_read_only_float64(how):
    _, st_ = _some_step()
    R = st_.residual
    other = pickle.loads(pickle.dumps(R)) if how == "pickle" else copy.deepcopy(R)
    assert (other.to_fractions() == R.to_fractions()).all()
    assert np.array_equal(other.to_float64(), R.to_float64())
    other.ints = None  # the integers rebuilt from the round-tripped digits
    assert (other.to_fractions() == R.to_fractions()).all()
    # the rounded residual is shared by every grading of a check: read-only after a round trip too
    assert not other.to_float64().flags.writeable


@pytest.mark.parametrize("base", [-1020, -990, -500, 0, 700, 1023])
@pytest.mark.parametrize(("n", "k"), [(1, 700), (3, 2 * BLOCK + 1), (BLOCK + 1, 2)])
def test_rounding_ties_and_sticky_bits_across_blocks(n, k, base):
    """Every residual on a rounding tie or next to one: R = b - y + X W with y of 53 bits at a per-column exponent,
    b half an ULP of y (to even or away, of either sign), X W a sticky bit far below (of either sign, or none), at
    exponents from the subnormal range to the overflow threshold, in blocks that span columns."""
    rng = np.random.default_rng(n * k + base + 2000)
    e = np.clip(rng.integers(base - 30, base + 31, k), -1020, 1023)  # y's top bit: 2**(e - 1); b = 2**(e - 54) representable
    m = rng.integers(2**52, 2**53, (n, k)).astype(np.float64)
    y = np.where(rng.random((n, k)) < 0.5, -1.0, 1.0) * m * 2.0 ** (e - 53)
    b = np.where(rng.random(k) < 0.5, -1.0, 1.0) * 2.0 ** (e - 54)  # half an ULP of every y of the column
    sticky = np.minimum(rng.integers(1, 150, k), e - 54 + 1074)  # X W's bit at 2**-1074 or above
    X = rng.choice([-1.0, 0.0, 1.0], (n, 1))
    W = (2.0 ** (e - 54 - sticky)).reshape(1, k)
    _same(_arrs(X, y, W, b), reduction="sum")


def test_residual_kernel_refuses_a_digit_in_its_top_plane():
    """:func:`harness.slicekernels.residual_digits` given too few planes for its value (a caller's plan that is off):
    ``X W``'s position 2**42 needs planes 0 .. 2 (the digit 1 in plane 2) and a sign plane above, four planes, where
    three are given; its carry into the sign is 0, so the kernel's test of the sign alone passes. It must raise
    ValueError rather than write the sign plane (plane 3) past its array of three (numba checks no bounds)."""
    from harness.slicekernels import NO_BIT, residual_digits

    P = np.full((1, 1, 1), 2.0**42)
    with pytest.raises(ValueError, match="too few planes"):
        residual_digits(P, 0, np.zeros((1, 1)), (NO_BIT, 0), np.zeros(1), (NO_BIT, 0), 0, np.empty((3, 1, 1)))
    given = np.full((4, 1, 1), 7.0)  # (the planes given are written, whatever they held)
    planes, _, _, _, used = residual_digits(P, 0, np.zeros((1, 1)), (NO_BIT, 0), np.zeros(1), (NO_BIT, 0), 0, given)
    assert used == 4 and planes is given
    assert planes[:, 0, 0].tolist() == [0.0, 0.0, 1.0, 0.0]  # 2**42 = 1 * 2**(2 B), sign 0 in plane 3
