"""The shortcuts of the check path (issue 12) against the slow definitions they replace.

- :meth:`ScaledInts.to_hi_lo` with a non-dyadic scale: integer true division against
  ``Fraction`` arithmetic, bit for bit (signs of zeros, subnormals, overflow included);
- :func:`harness.bounds.partial_sum_squares` against the three partial-sum models
  written out element by element in exact rationals;
- :func:`harness.bounds.expected_bounds`' matrix-product sums of squares against the
  element-wise ones (and the guard that keeps squares from under/overflowing);
- :func:`harness.bounds.rigorous_loss_bound` against ``step_bounds(...).rigorous["loss"]``;
- :meth:`Record.to_json` against :func:`dataclasses.asdict`;
- :class:`harness.exact.Difference` (the written inputs' update, element by element) against
  ``a - b.times(factor)`` formed whole;
- small arrays (:data:`harness.exact.SMALL_ARRAY`) converted element by element in Python against the
  NumPy path: the same integers and scale, the same double-doubles.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, target
from hypothesis import strategies as st

from harness import bounds as bounds_mod
from harness import exact as exact_mod
from harness.bounds import partial_sum_squares, partial_sum_squares_planes, rigorous_loss_bound, step_bounds
from harness.exact import Difference, ScaledInts
from harness.floats import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, round_to_format
from harness.oracle import exact_inputs_from_floats, exact_step
from harness.records import Record, _jsonable
from harness.verdicts import QUANTITIES

FORMATS = (FLOAT64, FLOAT32, FLOAT16, BFLOAT16)


# ------------------------------------------------------------------ to_hi_lo, non-dyadic scales

def _hi_lo_reference(i: int, s: Fraction) -> tuple[float, float]:
    f = Fraction(i) * s
    try:
        h = float(f)
    except OverflowError:
        return (math.inf if f > 0 else -math.inf), 0.0
    return h, float(f - Fraction(h))


@settings(max_examples=300, deadline=None)
@given(ints=st.lists(st.one_of(st.integers(-(2**70), 2**70), st.integers(-(2**1200), 2**1200), st.sampled_from([0, 1, -1])),
                     min_size=1, max_size=8),
       num=st.integers(1, 2**80), den_odd=st.integers(0, 2**40).map(lambda v: 2 * v + 1), shift=st.integers(-1200, 1200))
def test_to_hi_lo_non_dyadic_matches_fractions(ints, num, den_odd, shift):
    """Hostile scales: huge and tiny powers of two times odd denominators (overflow, subnormal hi and lo)."""
    s = Fraction(num, den_odd) * Fraction(2) ** shift
    hi, lo = ScaledInts(np.array(ints, dtype=object), s).to_hi_lo()
    for n, i in enumerate(ints):
        h, low = _hi_lo_reference(i, s)
        assert hi[n] == h and lo[n] == low and math.copysign(1, lo[n]) == math.copysign(1, low), (i, s)


_hostile_floats = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308]))


@settings(max_examples=200, deadline=None)
@given(a=st.lists(_hostile_floats, min_size=1, max_size=6), data=st.data(),
       factor=st.one_of(st.fractions(), st.sampled_from([Fraction(0), Fraction(1, 3), Fraction(-7, 10**30), Fraction(10**300, 3)])),
       num=st.integers(1, 2**80), den_odd=st.integers(0, 2**40).map(lambda v: 2 * v + 1), shift=st.integers(-1200, 1200))
def test_difference_equals_the_whole_subtraction(a, data, factor, num, den_odd, shift):
    """Element by element, and formed whole (ints, scale, hi and lo), ``Difference(a, b, f)`` is
    ``a - b.times(f)``: float ``a``, ``b`` over a non-dyadic scale, any factor (zero, negative, huge, tiny)."""
    ints = data.draw(st.lists(st.one_of(st.integers(-(2**200), 2**200), st.sampled_from([0, 1, -1])), min_size=len(a), max_size=len(a)))
    x = ScaledInts.from_floats(np.array(a))
    y = ScaledInts(np.array(ints, dtype=object), Fraction(num, den_odd) * Fraction(2) ** shift)
    lazy, whole = Difference(x, y, factor), x - y.times(factor)
    assert lazy.shape == whole.shape
    for n in range(len(a)):
        assert lazy.fraction_at((n,)) == whole.fraction_at((n,))
    assert list(lazy.to_fractions()) == list(whole.to_fractions())
    for got, want in zip(lazy.to_hi_lo(), whole.to_hi_lo(), strict=True):
        assert np.array_equal(np.signbit(got), np.signbit(want)) and np.array_equal(got, want)


def _both_paths(make):
    """``make()`` with every array small (element by element) and with none (NumPy), for comparing the paths."""
    with mock.patch.object(exact_mod, "SMALL_ARRAY", 10**9):
        small = make()
    with mock.patch.object(exact_mod, "SMALL_ARRAY", -1):
        large = make()
    return small, large


def _same_floats(a, b):
    return a.shape == b.shape and np.array_equal(a, b) and np.array_equal(np.signbit(a), np.signbit(b))


_any_floats = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                        st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.0**-1022, 2.0**-1021, 1.7976931348623157e308]))


@settings(max_examples=300, deadline=None)
@given(values=st.lists(_any_floats, min_size=0, max_size=30), cols=st.sampled_from([1, 2]))
@example(values=[0.0, -0.0], cols=1)
@example(values=[5e-324, 1.7976931348623157e308], cols=2)
def test_small_arrays_convert_as_numpy_does(values, cols):
    """Float64 values to exact integers and a scale, and back to double-doubles: bit for bit as the NumPy path,
    zeros, subnormals and the largest values included; a non-finite value refused alike."""
    x = np.array(values[: len(values) - len(values) % cols], dtype=np.float64).reshape(-1, cols)
    small, large = _both_paths(lambda: exact_mod.FloatInts(x))
    assert small.scale == large.scale and type(small.scale) is type(large.scale)
    assert small.ints.shape == large.ints.shape and small.ints.dtype == large.ints.dtype == object
    assert [type(i) for i in small.ints.ravel()] == [type(i) for i in large.ints.ravel()]
    assert list(small.ints.ravel()) == list(large.ints.ravel())
    hl_small, hl_large = _both_paths(lambda: ScaledInts(large.ints, large.scale).to_hi_lo())
    assert all(_same_floats(a, b) for a, b in zip(hl_small, hl_large, strict=True))
    for bad in (math.nan, math.inf, -math.inf):
        def refused(bad=bad):
            with pytest.raises(ValueError) as err:
                _ = exact_mod.FloatInts(np.append(x.ravel(), bad)).ints
            return str(err.value)
        assert len(set(_both_paths(refused))) == 1


@settings(max_examples=300, deadline=None)
@given(ints=st.lists(st.one_of(st.integers(-(2**70), 2**70), st.integers(-(2**1100), 2**1100), st.sampled_from([0, 1, -1])),
                     min_size=1, max_size=8),
       q=st.integers(0, 2300))
@example(ints=[1], q=1021)
@example(ints=[1, 2**60 + 1], q=1080)
@example(ints=[2**1100], q=0)
def test_small_dyadic_to_hi_lo_as_numpy_does(ints, q):
    """The dyadic path of ``to_hi_lo`` (scale ``2**-q``) element by element against NumPy's: values beyond the range,
    a ``hi`` or ``lo`` below the normal range (then the general path, in both), bit for bit."""
    v = ScaledInts(np.array(ints, dtype=object), Fraction(1, 2**q))
    small, large = _both_paths(v.to_hi_lo)
    assert all(_same_floats(a, b) for a, b in zip(small, large, strict=True))
    for n, i in enumerate(ints):
        h, low = _hi_lo_reference(i, Fraction(1, 2**q))
        if math.isfinite(h) and abs(h) >= 2.0**-1021:  # (the dyadic path is exact where normal)
            assert small[0][n] == h and small[1][n] == low


def test_to_hi_lo_non_dyadic_pinned():
    """1/3: hi = the float nearest 1/3, lo = 1/3 - hi rounded; a value beyond the range is +-inf with lo 0."""
    hi, lo = ScaledInts(np.array([1, -(2**1100)], dtype=object), Fraction(1, 3)).to_hi_lo()
    assert hi[0] == 1 / 3 and lo[0] == float(Fraction(1, 3) - Fraction(1 / 3)) and lo[0] != 0
    assert hi[1] == -math.inf and lo[1] == 0.0


# ------------------------------------------------------------------ partial_sum_squares

def _pss_reference(t: list[Fraction]) -> Fraction:
    n = len(t)
    fwd = sum((sum(t[: j + 1], Fraction(0)) ** 2 for j in range(n)), Fraction(0))
    rev = sum((sum(t[j:], Fraction(0)) ** 2 for j in range(n)), Fraction(0))
    mu = sum(t, Fraction(0)) / n
    var = max(sum((x * x for x in t), Fraction(0)) / n - mu * mu, Fraction(0))
    sum_k2 = sum(Fraction(k * k) for k in range(1, n + 1))
    sum_kvar = sum(Fraction(k * (n - k), n - 1) for k in range(1, n + 1)) if n > 1 else Fraction(0)
    return max(fwd, rev, mu * mu * sum_k2 + var * sum_kvar)


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.lists(st.integers(-1000, 1000), min_size=1, max_size=9), min_size=1, max_size=4),
       axis=st.sampled_from([0, 1]))
def test_partial_sum_squares_matches_exact_models(rows, axis):
    """Small integers: every partial sum is exact in float64, so the result is the exact model to a few roundings."""
    m = min(len(r) for r in rows)
    a = np.array([r[:m] for r in rows], dtype=np.float64)
    got = partial_sum_squares(a if axis == 1 else a.T, axis=axis)
    for i, r in enumerate(a):
        want = _pss_reference([Fraction(int(v)) for v in r])
        assert got[i] == pytest.approx(float(want), rel=1e-12, abs=0), (r, axis)


def test_partial_sum_squares_pinned():
    """[1, 2, 3]: forward 1 + 9 + 36 = 46, reverse 36 + 25 + 9 = 70, random mu = 2:
    4 * 14 + (2/3) * (2 + 2 + 0) = 56 + 8/3; the largest is 70. The caller's sum of squares is used as given."""
    assert partial_sum_squares(np.array([[1.0, 2.0, 3.0]]), axis=1)[0] == 70.0
    assert partial_sum_squares(np.array([[1.0], [2.0], [3.0]]), axis=0)[0] == 70.0
    # all-equal terms: forward = reverse = sum_k (k mu)^2 = random (variance 0)
    assert partial_sum_squares(np.array([[2.0, 2.0]]), axis=1)[0] == 4 + 16


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 12), m=st.integers(1, 20), seed=st.integers(0, 2**32 - 1), log_scale=st.integers(-300, 300))
def test_partial_sums_plane_by_plane_equal_stacked(n, m, seed, log_scale):
    """The plane-by-plane model (the residual's D + 2 terms) against the stacked one, any magnitude."""
    terms = np.random.default_rng(seed).standard_normal((n, m)) * 2.0**log_scale
    with np.errstate(all="ignore"):
        want = partial_sum_squares(terms.T.copy(), axis=1)
        got = partial_sum_squares_planes(lambda j: terms[j], n, sum_sq=np.sum(terms**2, axis=0))
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)


def test_partial_sums_plane_by_plane_pinned():
    """Planes [1, 2, 3] (one element): forward 46, reverse 70, random 56 + 8/3: 70 (as the stacked model)."""
    planes = [np.array([1.0]), np.array([2.0]), np.array([3.0])]
    assert partial_sum_squares_planes(lambda j: planes[j], 3, sum_sq=np.array([14.0]))[0] == 70.0


@pytest.mark.parametrize("fmt", [FLOAT64, FLOAT16], ids=lambda f: f.name)
def test_expected_bounds_planes_equal_stacked_terms(monkeypatch, fmt):
    """The residual's partial sums plane by plane (D + 2 <= 64) and from the stacked (N, K, D + 2) terms agree."""
    inputs = _inputs(np.random.default_rng(3), 40, 5, 3, 1.0)
    planes, _, _ = _bounds(inputs, fmt)
    monkeypatch.setattr(bounds_mod, "_PLANE_LOOP_MAX", 0)
    stacked, _, _ = _bounds(inputs, fmt)
    for q in QUANTITIES:
        np.testing.assert_allclose(planes.expected[q], stacked.expected[q], rtol=1e-13, atol=0)


# ------------------------------------------------------------------ expected bounds: matmul vs element-wise

def _inputs(rng: np.random.Generator, n: int, d: int, k: int, scale: float) -> dict[str, np.ndarray]:
    return {"X": rng.standard_normal((n, d)) * scale, "y": rng.standard_normal((n, k)) * scale,
            "W": rng.standard_normal((d, k)), "b": rng.standard_normal(k)}


def _bounds(inputs, fmt, reduction="mean", lr=0.01):
    ex = exact_step(exact_inputs_from_floats(inputs), Fraction(lr), reduction)
    exact = {q: ex.values[q].to_hi_lo()[0] for q in QUANTITIES}
    return step_bounds(inputs, ex.residual.to_float64(), exact, lr=lr, reduction=reduction, fmt=fmt), ex, exact


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("n,d,k", [(1, 1, 1), (7, 3, 2), (300, 5, 3)])
def test_expected_bounds_matmul_equals_elementwise(monkeypatch, fmt, n, d, k):
    """The sums of squares as X^2 W^2 and (X^2)^T R^2 agree with the element-wise sums to roundings."""
    inputs = _inputs(np.random.default_rng(n * 31 + d), n, d, k, 1.0)
    fast, _, _ = _bounds(inputs, fmt)
    monkeypatch.setattr(bounds_mod, "_squares_safe", lambda *a: False)
    slow, _, _ = _bounds(inputs, fmt)
    for q in QUANTITIES:
        np.testing.assert_allclose(fast.expected[q], slow.expected[q], rtol=1e-13, atol=0)
        assert np.array_equal(fast.rigorous[q], slow.rigorous[q])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 40), d=st.integers(1, 7), k=st.integers(1, 4), seed=st.integers(0, 2**32 - 1),
       log_scale=st.integers(-200, 200), fmt=st.sampled_from(FORMATS), tf32=st.booleans())
def test_compiled_partial_sums_equal_numpy(n, d, k, seed, log_scale, fmt, tf32):
    """The compiled partial sums (harness.partialsums) give the NumPy path's expected bounds to roundings,
    at any magnitude (their squares are of the products, so they never under/overflow where NumPy's do not)."""
    inputs = _inputs(np.random.default_rng(seed), n, d, k, 2.0**log_scale)
    ex = exact_step(exact_inputs_from_floats(inputs), Fraction(1, 64), "mean")
    exact = {q: ex.values[q].to_hi_lo()[0] for q in QUANTITIES}
    kw = {"lr": 1 / 64, "reduction": "mean", "fmt": fmt, "tf32": tf32}
    with np.errstate(all="ignore"), pytest.MonkeyPatch.context() as mp:
        mp.setattr(bounds_mod, "KERNEL_MIN_WORK", 0)  # the compiled path at every size
        compiled = step_bounds(inputs, ex.residual.to_float64(), exact, **kw)
        mp.setattr(bounds_mod, "USE_KERNELS", False)
        numpy_path = step_bounds(inputs, ex.residual.to_float64(), exact, **kw)
    for q in QUANTITIES:
        np.testing.assert_allclose(compiled.expected[q], numpy_path.expected[q], rtol=1e-12, atol=0)
        assert np.array_equal(compiled.rigorous[q], numpy_path.rigorous[q])


def test_compiled_partial_sums_pinned():
    """Terms [1, 2, 3] of one reduction (X = [[1], [2], [3]] against R = ones): forward 1 + 9 + 36 = 46,
    reverse 36 + 25 + 9 = 70, total 6, squares 14; the residual's terms 1*2, b = 3, -y = -4:
    forward 4 + 25 + 1 = 30, reverse 1 + 1 + 16 = 18, total 1, squared products 4."""
    from harness.partialsums import product_partial_sums, residual_partial_sums

    fwd, rev, tot, ss = product_partial_sums(np.array([[1.0], [2.0], [3.0]]), np.ones((3, 1)))
    assert (fwd[0, 0], rev[0, 0], tot[0, 0], ss[0, 0]) == (46.0, 70.0, 6.0, 14.0)
    fwd, rev, tot, ss = residual_partial_sums(np.array([[1.0]]), np.array([[2.0]]), np.array([3.0]), np.array([[4.0]]))
    assert (fwd[0, 0], rev[0, 0], tot[0, 0], ss[0, 0]) == (30.0, 18.0, 1.0, 4.0)


@pytest.mark.parametrize("scale", [2.0**-300, 2.0**300, 2.0**-540, 1e150])
def test_squares_guard_refuses_extreme_magnitudes(scale):
    """Beyond 2**+-250 the squares of products could under/overflow: the element-wise sums are used."""
    x = np.array([[scale, 1.0]])
    assert not bounds_mod._squares_safe(x, np.ones((2, 1)), np.ones((1, 1)))
    assert bounds_mod._squares_safe(np.array([[2.0**-250, 2.0**250, 0.0]]))
    assert bounds_mod._squares_safe(np.array([[scale]], dtype=np.longdouble))  # the wide re-evaluation


@pytest.mark.parametrize("scale", [2.0**-600, 2.0**-300, 2.0**200, 2.0**500])
def test_expected_bounds_extreme_data_finite_and_positive(scale):
    """Extreme magnitudes (the guard's fallback and the extended-precision rescue): bounds stay positive and finite."""
    inputs = _inputs(np.random.default_rng(5), 12, 3, 2, scale)
    sb, _, _ = _bounds(inputs, FLOAT64, reduction="sum")
    for q in ("grad_W", "grad_b"):
        e = np.asarray(sb.expected[q])
        assert np.all(np.isfinite(e)) and np.all(e > 0), (q, e)



# ------------------------------------------------------------------ overflow masks: the proof of no overflow

def _masks(sb):
    return (sb.inf_allowed, sb.nan_allowed, sb.posinf_allowed, sb.neginf_allowed)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 30), d=st.integers(1, 5), k=st.integers(1, 3), seed=st.integers(0, 2**32 - 1),
       log_scale=st.integers(-40, 1030), fmt=st.sampled_from(FORMATS), reduction=st.sampled_from(("sum", "mean")),
       log_lr=st.integers(-10, 1000), tf32=st.booleans(), ftz=st.booleans())
@example(n=1, d=1, k=1, seed=0, log_scale=-1, fmt=FLOAT64, reduction="sum", log_lr=0, tf32=False, ftz=False)  # 2**1026
def test_overflow_masks_fast_path_equals_products(n, d, k, seed, log_scale, fmt, reduction, log_lr, tf32, ftz):
    """Where _far_from_overflow proves every magnitude far below the range, the masks it returns (all False)
    are the masks the products give, mask for mask, in every format and near each format's overflow threshold."""
    # from tiny to beyond the format's largest value (float64's largest power of two: 2**1023, a Python float)
    scale = 2.0 ** min(log_scale % (fmt.emax + 24) - 20, 1023)
    with np.errstate(all="ignore"):  # (scale up to 2**1023: a draw beyond float64 is inf, skipped below)
        inputs = _inputs(np.random.default_rng(seed), n, d, k, scale)
        inputs = {key: np.asarray(v, dtype=np.float64) for key, v in inputs.items()}
        if not all(np.isfinite(v).all() for v in inputs.values()):
            return
        lr = 2.0 ** (log_lr % 140 - 10)
        ex = exact_step(exact_inputs_from_floats(inputs), Fraction(lr), reduction)
        exact = {q: ex.values[q].to_hi_lo()[0] for q in QUANTITIES}
        kw = {"lr": lr, "reduction": reduction, "fmt": fmt, "tf32": tf32, "flush_to_zero": ftz}
        taken = []
        real = bounds_mod._far_from_overflow
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(bounds_mod, "_far_from_overflow", lambda *a: taken.append(real(*a)) or taken[-1])
            fast = step_bounds(inputs, ex.residual.to_float64(), exact, **kw)
            mp.setattr(bounds_mod, "OVERFLOW_FAST_PATH", False)
            slow = step_bounds(inputs, ex.residual.to_float64(), exact, **kw)
    target(float(any(taken)), label="fast path taken")
    for got, want in zip(_masks(fast), _masks(slow), strict=True):
        for q in QUANTITIES:
            assert np.asarray(got[q]).shape == np.asarray(want[q]).shape, q
            assert np.array_equal(got[q], want[q]), (q, got[q], want[q])
    for q in QUANTITIES:
        assert np.array_equal(fast.rigorous[q], slow.rigorous[q]) and np.array_equal(fast.expected[q], slow.expected[q])


def test_overflow_fast_path_taken_for_ordinary_data_and_refused_near_the_range():
    inputs = _inputs(np.random.default_rng(4), 16, 3, 2, 1.0)
    sb, ex, exact = _bounds(inputs, FLOAT32)
    R = ex.residual.to_float64()
    args = dict(X=inputs["X"], Y=inputs["y"], W=inputs["W"], b=inputs["b"], R=R, exact=exact)
    reg = bounds_mod.Regime(FLOAT32, False)
    rb = bounds_mod.residual_bound(inputs["X"], inputs["W"], inputs["b"], inputs["y"], reg, 0.0)
    gb = bounds_mod.gradient_bounds(inputs["X"], R, rb, 1 / 32, reg, 0.0)
    ok = bounds_mod._far_from_overflow(*args.values(), rb, gb, 1 / 32, [0.01], reg, 1.0, 1.0, 1.0)
    assert ok is True
    near = {**args, "Y": inputs["y"] + FLOAT32.max_finite / 2}  # a residual term near float32's largest value
    assert bounds_mod._far_from_overflow(*near.values(), rb, gb, 1 / 32, [0.01], reg, 1.0, 1.0, 1.0) is False
    nan_rb = bounds_mod.ResidualBound(A=rb.A, E=rb.E * np.nan, U=rb.U, gamma=rb.gamma)
    assert bounds_mod._far_from_overflow(*args.values(), nan_rb, gb, 1 / 32, [0.01], reg, 1.0, 1.0, 1.0) is False


# ------------------------------------------------------------------ rigorous loss bound alone

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 12), d=st.integers(1, 4), k=st.integers(1, 3), seed=st.integers(0, 2**32 - 1),
       log_scale=st.integers(-330, 330), fmt=st.sampled_from(FORMATS), reduction=st.sampled_from(("sum", "mean")))
def test_rigorous_loss_bound_equals_step_bounds(n, d, k, seed, log_scale, fmt, reduction):
    inputs = _inputs(np.random.default_rng(seed), n, d, k, 2.0**log_scale)
    with np.errstate(all="ignore"):
        if not all(np.isfinite(v).all() for v in inputs.values()):
            return
        sb, ex, _ = _bounds(inputs, fmt, reduction=reduction)
        got = rigorous_loss_bound(inputs, ex.residual.to_float64(), reduction=reduction, fmt=fmt)
    want = float(np.asarray(sb.rigorous["loss"]))
    target(float(abs(log_scale)), label="magnitude")
    if math.isfinite(got):
        assert got == want
    else:  # the float64 evaluation overflowed: step_bounds re-evaluates it (the caller falls back to it)
        assert want >= fmt.max_finite or not math.isfinite(want) or "loss" in sb.vacuous


# ------------------------------------------------------------------ records

def test_to_json_equals_asdict_and_copies_containers():
    r = Record(case="c", implementation="i", device="cpu", dtype="float64", quantity="W", step=0, verdict="agree",
               shape=[2, 3], worst_index=[1, 2], counts={"agree": 6}, tags=["x"], max_abs_error=math.inf,
               bound_ratio=-math.inf, expected_ratio=math.nan)
    want = {key: _jsonable(v) for key, v in dataclasses.asdict(r).items()}
    got = r.to_json()
    assert got == {**want, "expected_ratio": "nan"} and want["expected_ratio"] == "nan"
    assert list(got) == list(want)
    got["shape"].append(9)
    got["counts"]["x"] = 1
    assert r.shape == [2, 3] and r.counts == {"agree": 6}


# ------------------------------------------------------------------ the written inputs' step, from the trajectory's

@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_written_step_reused_with_its_own_learning_rate(dtype):
    """A case whose values are exact in the dtype: the written inputs' exact step is the trajectory's first
    step with the case's learning rate (not the dtype's rounding of it) applied exactly, value for value."""
    from harness.cases import case_from_arrays
    from harness.implementations import resolve
    from harness.runner import CaseCache, check_case

    fmt = {"float32": FLOAT32, "float64": FLOAT64, "float16": FLOAT16}[dtype]
    rng = np.random.default_rng(7)
    vals = {key: round_to_format(v, fmt) for key, v in _inputs(rng, 20, 3, 2, 1.0).items()}
    case = case_from_arrays("reuse", vals["X"], vals["y"], vals["W"], vals["b"], lr=0.1, reduction="mean", dtypes=(dtype,))
    cache = CaseCache(case)
    check_case(case, resolve(["numpy-hand"])[0], "cpu", dtype, cache=cache)
    got = cache.written_step()
    want = exact_step(exact_inputs_from_floats(case.values), case.lr, case.reduction)
    (traj,) = cache.trajectories()  # computed by check_case: not recomputed
    first = traj[0]
    assert got.residual is first.residual  # reused, not computed again
    assert (got is first) == (dtype == "float64")  # float64 holds lr = 0.1 as written; the others round it
    for q in QUANTITIES:
        for idx in np.ndindex(*want.values[q].shape):  # (the records read single elements: W and b formed lazily)
            assert got.values[q].fraction_at(idx) == want.values[q].fraction_at(idx), (q, idx)
        assert list(got.values[q].to_fractions().ravel()) == list(want.values[q].to_fractions().ravel()), q
    assert list(got.residual.to_fractions().ravel()) == list(want.residual.to_fractions().ravel())


# ------------------------------------------------------------------ no flush-to-zero: no products with zeros

def test_unflushed_bounds_skip_zero_products_but_keep_inf_times_zero():
    """Without flush-to-zero the flushed inputs are zeros: their products with finite magnitudes are +0 and
    are not formed; an infinite error bound still makes them NaN (0 * inf), as the products would."""
    rng = np.random.default_rng(9)
    inputs = _inputs(rng, 12, 3, 2, 1.0)
    X, Y, W, b = (inputs[key] for key in ("X", "y", "W", "b"))
    reg = bounds_mod.Regime(FLOAT32, False)
    rb = bounds_mod.residual_bound(X, W, b, Y, reg, 0.0)
    zeros = reg.flushed(X)
    assert np.array_equal(rb.U - reg.fmt.underflow_quantum * 3, zeros @ np.abs(W))  # d_in = +0: U = 3 eta
    R = X @ W + b - Y
    gb = bounds_mod.gradient_bounds(X, R, rb, 1.0, reg, 0.0)
    assert np.isfinite(gb.gW).all()
    E = rb.E.copy()
    E[4, 1] = np.inf
    inf_rb = bounds_mod.ResidualBound(A=rb.A, E=E, U=rb.U, gamma=rb.gamma)
    gb_inf = bounds_mod.gradient_bounds(X, R, inf_rb, 1.0, reg, 0.0)
    assert np.isnan(gb_inf.gW[:, 1]).all() and np.isfinite(gb_inf.gW[:, 0]).all()
    with np.errstate(invalid="ignore"):  # inf * 0: the NaN the bound must have where it does
        want_nan = np.isnan(zeros.T @ (np.abs(R) + E))
    assert np.array_equal(np.isnan(gb_inf.gW), want_nan)


@pytest.mark.parametrize("values", [np.array([1.0, np.inf, 0.0]), np.array([np.nan, -np.inf, 2.0, np.inf]),
                                    np.asarray(3.0), np.asarray(np.nan), np.array([[1.0, -2.0]], dtype=np.longdouble),
                                    np.array([-np.inf], dtype=np.longdouble), np.zeros((0, 2)), np.array([1, 2])])
def test_nan_as_inf_is_nan_to_num(values):
    got = bounds_mod._nan_as_inf(values)
    want = np.nan_to_num(values, nan=np.inf, posinf=np.inf)
    assert type(got) is type(want) and np.asarray(got).dtype == np.asarray(want).dtype
    assert np.array_equal(got, want) and got is not values


def test_order_sums_cached_equal_direct():
    for n in (1, 2, 7, 1000):
        k = np.arange(1, n + 1, dtype=np.float64)
        want = (float(np.sum(k**2)), float(np.sum(k * (n - k) / (n - 1))) if n > 1 else 0.0)
        assert bounds_mod._order_sums(n) == want


# ------------------------------------------------------------------ whole records: fast paths on and off

def test_records_identical_with_the_fast_paths_off(monkeypatch):
    """Every field of every record of seed, semantics and some NIST cases (a correct step, a mutant, a float32
    one) is the same with the fused comparison and the overflow proof as with compare per quantity and the
    overflow products (scripts/record_identity.py compares whole runs across commits)."""
    import dataclasses
    import json

    from harness import compare as compare_mod
    from harness import runner as runner_mod
    from harness.cases import load_cases
    from harness.implementations import load_mutants
    from harness.runner import verify
    from tests.conftest import CASES

    load_mutants()
    cases = [*load_cases([CASES / "seed.toml", CASES / "semantics.toml"]).cases, *load_cases([CASES / "nist.toml"], tier="quick").cases[:4]]
    impls = ["numpy-hand", "torch-seed", "mutant-float16-accumulation"]

    def run() -> list[str]:
        return [json.dumps(dataclasses.asdict(r), sort_keys=True) for r in verify(cases, impls, dtypes=None)]

    fast = run()
    monkeypatch.setattr(runner_mod, "compare_many", lambda items, fmt: [compare_mod.compare(**it, fmt=fmt) for it in items])
    monkeypatch.setattr(bounds_mod, "OVERFLOW_FAST_PATH", False)
    slow = run()
    assert len(fast) == len(slow) > 100
    assert fast == slow


def test_an_accurate_step_names_its_radius_and_claims_no_exact_rational():
    """Found by an attack (helper-42): on the accurate X^T R (N*D*K >= 2**16, D*K >= 1024, mixed-magnitude float64)
    the records of grad_W and W gave the accurate value as ``exact_rational``, a fraction that is not the exact one
    (only ``oracle_method`` said otherwise). Now ``exact_rational`` is None there and ``exact_radius`` bounds
    ``|exact - true|``; the other quantities, exact on that path too, have no radius."""
    from harness.cases import case_from_arrays
    from harness.implementations import resolve
    from harness.runner import check_case

    rng = np.random.default_rng(0)
    n, d, k = 64, 32, 32

    def mix(shape):
        return rng.standard_normal(shape) * 2.0 ** rng.integers(-40, 41, shape)

    X, W, b, y = mix((n, d)), mix((d, k)), mix((k,)), mix((n, k))
    case = case_from_arrays("mixed-accurate", X, y, W, b, lr=0.001, reduction="mean", dtypes=("float64",))
    recs = {r.quantity: r for r in check_case(case, resolve(["numpy-hand"])[0], "cpu", "float64")}
    truth = exact_step(exact_inputs_from_floats({"X": X, "y": y, "W": W, "b": b}), Fraction(0.001), "mean",
                       method="exact-rational")
    for q in ("grad_W", "W"):
        r = recs[q]
        assert r.oracle_method.startswith("ozaki-accurate") and r.exact_rational is None, (q, r.oracle_method)
        assert r.exact_radius is not None and 0 < r.exact_radius
        true = truth.values[q].fraction_at(tuple(r.worst_index))
        assert abs(Fraction(r.exact_radius)) <= abs(true) * Fraction(2) ** -40  # the radius is tiny against the value
    assert all(recs[q].exact_radius is None for q in ("loss", "grad_b", "b"))
    assert all(r.verdict == "agree" for r in recs.values())


# ------------------------------------------------------------------ compiled column sums

@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 3000), m=st.integers(2, 9), seed=st.integers(0, 2**32 - 1), spread=st.integers(0, 80),
       special=st.booleans())
def test_compiled_column_sums_are_numpy_column_sums_bit_for_bit(n, m, seed, spread, special):
    """``partialsums.column_sums`` (and ``bounds._row_sum``, which calls it) against ``a.sum(axis=0)``, bit for bit:
    mixed magnitudes make every change of the order of the additions visible (the sums of values of spread
    ``2**spread`` round at every step); -0.0 alone (NumPy adds from +0.0: the sum is +0.0), NaN and infinities."""
    from harness.partialsums import column_sums

    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, m)) * np.exp2(rng.integers(-spread, spread + 1, (n, m)))
    if special:
        a[:, 0] = -0.0
        a[rng.integers(0, n), 1] = np.inf
        if m > 2:
            a[rng.integers(0, n), 2] = np.nan
    out = np.empty(m)
    column_sums(a, out)
    want = a.sum(axis=0)
    assert out.tobytes() == want.tobytes()
    assert bounds_mod._row_sum(a).tobytes() == want.tobytes()
    if special:
        assert math.copysign(1.0, out[0]) == 1.0  # 0.0 + -0.0 ... = +0.0, as NumPy's
    # one column (NumPy sums it pairwise) and other dtypes go to NumPy
    one = a[:, :1].copy()
    assert bounds_mod._row_sum(one).tobytes() == one.sum(axis=0).tobytes()
    wide = a.astype(np.longdouble)
    np.testing.assert_array_equal(bounds_mod._row_sum(wide), wide.sum(axis=0))  # (80 bits in 16 bytes: no tobytes)


@settings(max_examples=80, deadline=None)
@given(m=st.integers(0, 4), n=st.integers(0, 3000), seed=st.integers(0, 2**32 - 1), spread=st.integers(0, 80),
       special=st.booleans())
def test_compiled_running_sums_are_numpy_cumsum_bit_for_bit(m, n, seed, spread, special):
    """``partialsums.running_sums`` (through ``bounds._running_sums``, which ``partial_sum_squares`` uses) against
    ``np.cumsum(a, axis=1)``, bit for bit: mixed magnitudes (every addition rounds), a first term of -0.0 (kept as
    the first partial sum, as NumPy keeps it), NaN and infinities, empty rows; longdouble goes to NumPy."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, n)) * np.exp2(rng.integers(-spread, spread + 1, (m, n)))
    if special and n:
        a[:, 0] = -0.0
        a[:, rng.integers(0, n)] = np.inf if n % 2 else np.nan
    assert bounds_mod._running_sums(a).tobytes() == np.cumsum(a, axis=1).tobytes()
    wide = a.astype(np.longdouble)
    np.testing.assert_array_equal(bounds_mod._running_sums(wide), np.cumsum(wide, axis=1))  # (80 bits in 16 bytes)
    for view in (a[:, ::2], a.T.copy().T, a[::-1, 1:]):  # strided, Fortran-ordered, negative strides: values and layout
        got, want = bounds_mod._running_sums(view), np.cumsum(view, axis=1)
        assert got.tobytes() == want.tobytes() and got.strides == want.strides
        # the layout matters: a reduction over it (partial_sum_squares' einsum) sums in its order (the quick tier's
        # records changed in the last bit of 115 expected bounds with a C-ordered copy of a Fortran-ordered block)
        assert np.einsum("ij,ij->i", got, got).tobytes() == np.einsum("ij,ij->i", want, want).tobytes()
