"""The compiled partial sums (:mod:`harness.partialsums`) bit for bit against plain references.

Each kernel's accumulators must receive exactly the float64 operations, in exactly the order, of the
plain loops (forward sums row by row / term by term, reverse ones as the total minus the terms in
order, squares of the products). Two references spell that order out independently of numba:

- ``_*_loops``: explicit Python loops over Python floats (IEEE double, no FMA), for small shapes;
- ``_*_numpy``: the same order with element-wise NumPy ufuncs across the independent accumulators
  (one ufunc per operation: no contraction, no reassociation), for shapes beyond the kernels' blocks.

Outputs are compared bit for bit (``-0.0`` differs from ``0.0``); a NaN (from ``inf - inf`` with
infinite data) matches any NaN.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from harness.partialsums import product_partial_sums, product_partial_sums_and_ones, residual_partial_sums

Quad = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _same(got: np.ndarray, want: np.ndarray) -> bool:
    """Same shape and dtype float64, identical bits everywhere except that NaN matches NaN."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape or got.dtype != np.float64 or want.dtype != np.float64:
        return False
    nan = np.isnan(got)
    if not np.array_equal(nan, np.isnan(want)):
        return False
    return bool(np.array_equal(got.view(np.int64)[~nan], want.view(np.int64)[~nan]))


def _assert_same(got: Quad, want: Quad) -> None:
    assert len(got) == len(want) == 4
    for name, g, w in zip(("forward", "reverse", "total", "sum_sq"), got, want, strict=True):
        assert _same(g, w), f"{name} differs"


def _product_loops(A: np.ndarray, Bm: np.ndarray) -> Quad:
    """:func:`product_partial_sums` in explicit Python loops, one accumulator at a time."""
    n, d = A.shape
    k = Bm.shape[1]
    out = [np.zeros((d, k)) for _ in range(4)]
    for j in range(d):
        for c in range(k):
            F = fw = ss = 0.0
            for i in range(n):
                t = float(A[i, j]) * float(Bm[i, c])
                F = F + t
                fw = fw + F * F
                ss = ss + t * t
            S, rv = F, 0.0
            for i in range(n):
                rv = rv + S * S
                S = S - float(A[i, j]) * float(Bm[i, c])
            out[0][j, c], out[1][j, c], out[2][j, c], out[3][j, c] = fw, rv, F, ss
    return out[0], out[1], out[2], out[3]


def _residual_loops(X: np.ndarray, W: np.ndarray, b: np.ndarray, Y: np.ndarray) -> Quad:
    """:func:`residual_partial_sums` in explicit Python loops, one accumulator at a time."""
    n, d = X.shape
    k = W.shape[1]
    out = [np.zeros((n, k)) for _ in range(4)]
    for i in range(n):
        for c in range(k):
            F = fw = ss = 0.0
            for j in range(d):
                t = float(X[i, j]) * float(W[j, c])
                F = F + t
                fw = fw + F * F
                ss = ss + t * t
            F = F + float(b[c])
            fw = fw + F * F
            F = F - float(Y[i, c])
            fw = fw + F * F
            total, S, rv = F, F, 0.0
            for j in range(d):
                rv = rv + S * S
                S = S - float(X[i, j]) * float(W[j, c])
            rv = rv + S * S
            S = S - float(b[c])
            rv = rv + S * S
            out[0][i, c], out[1][i, c], out[2][i, c], out[3][i, c] = fw, rv, total, ss
    return out[0], out[1], out[2], out[3]


def _product_numpy(A: np.ndarray, Bm: np.ndarray) -> Quad:
    """:func:`product_partial_sums` row by row, element-wise across the ``(D, K)`` accumulators."""
    n, d = A.shape
    k = Bm.shape[1]
    F, fw, ss, rv = (np.zeros((d, k)) for _ in range(4))
    with np.errstate(all="ignore"):
        for i in range(n):
            t = np.multiply(A[i][:, None], Bm[i][None, :])
            F = F + t
            fw = fw + F * F
            ss = ss + t * t
        S = F.copy()
        for i in range(n):
            rv = rv + S * S
            S = S - np.multiply(A[i][:, None], Bm[i][None, :])
    return fw, rv, F, ss


def _residual_numpy(X: np.ndarray, W: np.ndarray, b: np.ndarray, Y: np.ndarray) -> Quad:
    """:func:`residual_partial_sums` term by term, element-wise across the ``(N, K)`` accumulators."""
    n, d = X.shape
    k = W.shape[1]
    F, fw, ss, rv = (np.zeros((n, k)) for _ in range(4))
    with np.errstate(all="ignore"):
        for j in range(d):
            t = np.multiply(X[:, j][:, None], W[j][None, :])
            F = F + t
            fw = fw + F * F
            ss = ss + t * t
        F = F + b[None, :]
        fw = fw + F * F
        F = F - Y
        fw = fw + F * F
        total = F.copy()
        S = F
        for j in range(d):
            rv = rv + S * S
            S = S - np.multiply(X[:, j][:, None], W[j][None, :])
        rv = rv + S * S
        S = S - b[None, :]
        rv = rv + S * S
    return fw, rv, total, ss


#: Value kinds of the parametrised tests: each maps (rng, shape) to float64 data.
SPECIAL = np.array([0.0, -0.0, 1.0, -1.0, 1e300, -1e300, 1e-300, -1e-300, 5e-324, -5e-324,
                    2.2250738585072014e-308, 1e-310, -3e-320, 1.7976931348623157e308, 0.1, -0.3, 3.0])


def _values(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    if kind == "random":
        return rng.standard_normal(shape)
    if kind == "huge":
        return rng.standard_normal(shape) * 1e300
    if kind == "tiny":
        return rng.standard_normal(shape) * 1e-300
    if kind == "subnormal":
        return rng.standard_normal(shape) * 1e-315
    if kind == "zeros":
        return np.where(rng.random(shape) < 0.5, 0.0, -0.0)
    if kind == "cancelling":  # equal magnitudes of alternating sign plus small noise: heavy cancellation
        base = np.where(np.arange(int(np.prod(shape))).reshape(shape) % 2 == 0, 1.0, -1.0)
        return base * (1e16 + rng.integers(0, 3, shape)) + rng.standard_normal(shape) * 1e-3
    if kind == "mixed":  # every magnitude from subnormal to near overflow, both signs
        return rng.choice([-1.0, 1.0], shape) * 10.0 ** rng.uniform(-320, 300, shape)
    if kind == "special":
        return rng.choice(SPECIAL, shape) * rng.choice([-1.0, 1.0], shape)
    if kind == "inf":
        v = rng.standard_normal(shape)
        v[rng.random(shape) < 0.15] = np.inf
        v[rng.random(shape) < 0.15] = -np.inf
        return v
    raise ValueError(kind)


KINDS = ["random", "huge", "tiny", "subnormal", "zeros", "cancelling", "mixed", "special", "inf"]
#: (N, D, K): the task's shapes (K = 1, K = 64, D = 1, D = 200, N = 1), remainders of the 4-row / 4-term
#: steps, both sides of the kernels' layout choices (D vs K; K = 8 / 9 for the residual), D = K.
SMALL_SHAPES = [(1, 1, 1), (1, 16, 4), (1, 3, 64), (3, 1, 1), (5, 1, 4), (7, 16, 4), (9, 4, 16), (6, 200, 1),
                (11, 1, 64), (13, 5, 3), (10, 8, 8), (9, 3, 9), (4, 4, 4), (2, 7, 2), (17, 2, 12)]
#: Shapes that cross the residual's row blocks (256 rows; fewer per block for larger K).
LARGE_SHAPES = [(1563, 16, 4), (600, 5, 3), (257, 200, 4), (300, 16, 64), (513, 1, 8), (530, 3, 9), (260, 1, 64)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("n", "d", "k"), SMALL_SHAPES)
def test_kernels_equal_loop_reference(n: int, d: int, k: int, kind: str) -> None:
    """Both kernels bit for bit equal to the explicit Python loops (and the NumPy reference to them too)."""
    rng = np.random.default_rng(zlib.crc32(f"{n}-{d}-{k}-{kind}".encode()))  # (not hash(): salted per process)
    X, W, b, Y = (_values(rng, s, kind) for s in ((n, d), (d, k), (k,), (n, k)))
    want = _product_loops(X, Y)
    _assert_same(product_partial_sums(X, Y), want)
    _assert_same(_product_numpy(X, Y), want)
    want = _residual_loops(X, W, b, Y)
    _assert_same(residual_partial_sums(X, W, b, Y), want)
    _assert_same(_residual_numpy(X, W, b, Y), want)
    ones = np.ones((n, 1))  # the 1^T R reduction of the bounds
    _assert_same(product_partial_sums(ones, Y), _product_loops(ones, Y))


@pytest.mark.parametrize("kind", ["random", "mixed", "cancelling", "inf"])
@pytest.mark.parametrize(("n", "d", "k"), LARGE_SHAPES)
def test_kernels_equal_numpy_reference_large(n: int, d: int, k: int, kind: str) -> None:
    """Beyond the kernels' blocks and unrolled steps: bit for bit equal to the element-wise NumPy reference."""
    rng = np.random.default_rng(zlib.crc32(f"{n}-{d}-{k}-{kind}-1".encode()))
    X, W, b, Y = (_values(rng, s, kind) for s in ((n, d), (d, k), (k,), (n, k)))
    _assert_same(residual_partial_sums(X, W, b, Y), _residual_numpy(X, W, b, Y))
    _assert_same(product_partial_sums(X, Y), _product_numpy(X, Y))
    ones = np.ones((n, 1))
    _assert_same(product_partial_sums(ones, Y), _product_numpy(ones, Y))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("n", "d", "k"), SMALL_SHAPES + LARGE_SHAPES[:3])
def test_product_partial_sums_and_ones_equal_two_calls(n: int, d: int, k: int, kind: str) -> None:
    """``product_partial_sums_and_ones(X, R)``: ``product_partial_sums(X, R)`` and ``product_partial_sums(ones, R)``'s
    forward, reverse and total (its row 0) bit for bit, NaN payloads included (the fused pass where D >= K, the two
    calls where D < K), and the NumPy reference of both; C-contiguous outputs of the two calls' shapes."""
    rng = np.random.default_rng(zlib.crc32(f"{n}-{d}-{k}-{kind}-ones".encode()))
    X, R = _values(rng, (n, d), kind), _values(rng, (n, k), kind)
    got = product_partial_sums_and_ones(X, R)
    ones = np.ones((n, 1))
    want = (*product_partial_sums(X, R), *(a[0] for a in product_partial_sums(ones, R)[:3]))
    assert len(got) == 7
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.flags.c_contiguous and g.dtype == np.float64
        assert np.array_equal(g.view(np.int64), np.ascontiguousarray(w).view(np.int64))
    _assert_same(got[:4], _product_numpy(X, R))
    ref = _product_numpy(ones, R)
    for g, w in zip(got[4:], ref[:3], strict=True):
        assert _same(g, w[0])


def test_kernels_non_contiguous_inputs() -> None:
    """Strided (non C-contiguous) inputs give the same bits as their contiguous copies."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 14))[::2, ::2]
    W = rng.standard_normal((7, 6))[:, ::2]
    b = rng.standard_normal(6)[::2]
    Y = rng.standard_normal((20, 6))[:, ::2]
    want = _residual_loops(X, W, b, Y)
    _assert_same(residual_partial_sums(X, W, b, Y), want)
    _assert_same(residual_partial_sums(*(np.ascontiguousarray(a) for a in (X, W, b, Y))), want)
    _assert_same(product_partial_sums(X, Y), _product_loops(X, Y))
    _assert_same(product_partial_sums(Y.T.copy().T, X), _product_loops(Y, X))


def test_kernels_empty_shapes() -> None:
    """No rows, no columns: zeros (or empty arrays) of the documented shapes."""
    for n, d, k in ((0, 3, 2), (4, 0, 2), (4, 3, 0), (0, 0, 0)):
        X, W, b, Y = np.ones((n, d)), np.ones((d, k)), np.ones(k), np.ones((n, k))
        _assert_same(product_partial_sums(X, Y), _product_loops(X, Y))
        _assert_same(residual_partial_sums(X, W, b, Y), _residual_loops(X, W, b, Y))


def test_output_shapes_and_layout() -> None:
    """Documented shapes, dtype float64, C-contiguous."""
    rng = np.random.default_rng(4)
    X, W, b, Y = rng.standard_normal((9, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3), rng.standard_normal((9, 3))
    for a in product_partial_sums(X, Y) + product_partial_sums(Y, X):
        assert a.dtype == np.float64 and a.flags.c_contiguous
    assert [a.shape for a in product_partial_sums(X, Y)] == [(5, 3)] * 4
    assert [a.shape for a in product_partial_sums(Y, X)] == [(3, 5)] * 4
    res = residual_partial_sums(X, W, b, Y)
    assert [a.shape for a in res] == [(9, 3)] * 4
    assert all(a.dtype == np.float64 and a.flags.c_contiguous for a in res)


#: Finite doubles of every magnitude (subnormals included) and the special values above.
_floats = st.one_of(
    st.floats(min_value=-1e300, max_value=1e300, allow_nan=False, allow_infinity=False, allow_subnormal=True),
    st.sampled_from([float(v) for v in SPECIAL] + [-float(v) for v in SPECIAL]),
    st.integers(-8, 8).map(float),  # small integers: exact sums, exact cancellation
)


@st.composite
def _problems(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 11))
    d = draw(st.integers(1, 9))
    k = draw(st.sampled_from([1, 2, 3, 4, 5, 8, 9, 12]))

    def arr(shape: tuple[int, ...]) -> np.ndarray:
        return np.array(draw(st.lists(_floats, min_size=math.prod(shape), max_size=math.prod(shape))),
                        dtype=np.float64).reshape(shape)

    return arr((n, d)), arr((d, k)), arr((k,)), arr((n, k))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(problem=_problems())
def test_kernels_equal_loop_reference_hypothesis(problem: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> None:
    """Any shapes, any finite values: both kernels bit for bit equal to the explicit loops. Hypothesis is steered
    towards inputs where the summation order shows: the totals' cancellation (how far below the sum of the
    terms' magnitudes they fall), where any change of a sum's order would change its bits."""
    X, W, b, Y = problem
    want = _residual_loops(X, W, b, Y)
    _assert_same(residual_partial_sums(X, W, b, Y), want)
    want_p = _product_loops(X, Y)
    _assert_same(product_partial_sums(X, Y), want_p)
    with np.errstate(all="ignore"):
        mags = np.abs(X) @ np.abs(W) + np.abs(b) + np.abs(Y)
        ratio = mags / np.abs(want[2])
    finite = ratio[np.isfinite(ratio)]
    target(float(np.log2(finite.max())) if finite.size and finite.max() > 0 else 0.0,
           label="log2 cancellation of the residual's totals")
