"""The fused element-wise kernels of :mod:`harness.partialsums` that :func:`harness.bounds.step_bounds` uses, bit for
bit against the NumPy expressions they replace, and step_bounds itself with and without them.

Each kernel must give every element exactly the IEEE operations, in the same order, of the NumPy expression named in
its docstring, and its column sums exactly ``a.sum(axis=0)`` of a C-contiguous array with at least two columns
(NumPy adds the rows in order into a zero-initialised output there; a single column it sums pairwise). Data:
random, huge, tiny, subnormal, zero (both signs), infinite and NaN values. Outputs are compared as uint64 bits
(the sign of zero included); a NaN matches any NaN (see :func:`_same`), and step_bounds' own outputs are compared
bit for bit with and without the kernels.
"""

from __future__ import annotations

import zlib
from fractions import Fraction

import numpy as np
import pytest

import harness.bounds as bounds_mod
from harness.bounds import order_model, step_bounds
from harness.floats import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, round_to_format
from harness.oracle import exact_inputs_from_floats, exact_step
from harness.partialsums import (
    gradient_terms,
    magnitude_scan,
    residual_partial_sums,
    residual_terms,
    residual_variance,
    residual_variance_fused,
)
from harness.verdicts import QUANTITIES

KINDS = ("random", "huge", "tiny", "subnormal", "special")


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64).reshape(-1).view(np.uint64)


def _same(got: np.ndarray, want: np.ndarray) -> bool:
    """Same shape and identical float64 bits everywhere (-0.0 differs from 0.0), except that a NaN matches any NaN:
    where two NaNs meet in one operation, which of them propagates is the implementation's choice (x86 returns the
    first operand; LLVM may commute an addition, NumPy's SIMD loops may too), and no NaN reaches step_bounds'
    outputs (its bounds pass through ``_nan_as_inf``, its masks are comparisons)."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return False
    g, w = _bits(got), _bits(want)
    nan = np.isnan(np.asarray(got, dtype=np.float64).reshape(-1))
    if not np.array_equal(nan, np.isnan(np.asarray(want, dtype=np.float64).reshape(-1))):
        return False
    return bool(np.array_equal(g[~nan], w[~nan]))


def _data(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """float64 data of one kind; 'special' mixes zeros of both signs, infinities, NaNs and subnormals into normals."""
    x = rng.standard_normal(shape)
    if kind == "huge":
        x *= np.exp2(rng.integers(900, 1023, shape))
    elif kind == "tiny":
        x *= np.exp2(rng.integers(-1000, -900, shape))
    elif kind == "subnormal":
        x *= np.exp2(rng.integers(-1074, -1022, shape))
    elif kind == "special":
        x *= np.exp2(rng.integers(-60, 60, shape))
        pick = rng.integers(0, 8, shape)
        x = np.where(pick == 0, 0.0, x)
        x = np.where(pick == 1, -0.0, x)
        x = np.where(pick == 2, np.inf, x)
        x = np.where(pick == 3, -np.inf, x)
        x = np.where(pick == 4, np.nan, x)
        x = np.where(pick == 5, 2.0**-1074 * rng.integers(1, 50, shape), x)
    return np.ascontiguousarray(x)


def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


SHAPES = [(0, 3), (1, 1), (1, 2), (3, 5), (7, 4), (64, 3), (65, 8), (200, 9), (1000, 16), (333, 1)]


# ------------------------------------------------------------------------------------------------ magnitude_scan

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_magnitude_scan_equals_numpy(shape, kind):
    a = _data(_rng("scan", shape, kind), shape, kind)
    for mode in (0, 1, 2):
        absa, sq, cols = np.empty(shape), np.empty(shape), np.empty((3, shape[1]))
        with np.errstate(all="ignore"):
            top, low, nan = magnitude_scan(a, absa, sq, mode, cols)
            assert _same(absa, np.abs(a))
            want_sq = np.abs(a) ** 2 if mode == 1 else a**2
            if mode:
                assert _same(sq, want_sq)
            if shape[1] >= 2:  # NumPy's order for two columns or more; one column it sums pairwise
                assert _same(cols[0], a.sum(axis=0)) and _same(cols[1], np.abs(a).sum(axis=0))
                if mode:
                    assert _same(cols[2], want_sq.sum(axis=0))
        m = np.abs(a)[~np.isnan(a)]
        assert top == (float(m.max()) if m.size else 0.0)
        nz = m[m > 0]
        assert low == (float(nz.min()) if nz.size else np.inf)
        assert nan == bool(np.isnan(a).any())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES + [(300, 9), (520, 4)], ids=str)
def test_magnitude_scan_fewer_column_sums(shape, kind):
    """``sums=2`` (``np.abs(a)``'s column sums alone: X's in ``bounds._prepare``) and ``sums=0`` (none: y's): every
    other output and the sums formed are the full call's bits (NaN payloads included), the rows left out 0.0."""
    a = _data(_rng("scan-sums", shape, kind), shape, kind)
    for mode in (0, 1, 2):
        full = [np.full(shape, 7.0), np.full(shape, 7.0), np.full((3, shape[1]), 7.0)]
        with np.errstate(all="ignore"):
            want = magnitude_scan(a, *full[:2], mode, full[2])
            for sums in (2, 0):
                got = [np.full(shape, 7.0), np.full(shape, 7.0), np.full((3, shape[1]), 7.0)]
                assert magnitude_scan(a, *got[:2], mode, got[2], sums) == want
                assert np.array_equal(_bits(got[0]), _bits(full[0])) and np.array_equal(_bits(got[1]), _bits(full[1]))
                formed = (1,) if sums == 2 else ()
                for row in range(3):
                    if row in formed:
                        assert np.array_equal(_bits(got[2][row]), _bits(full[2][row])), (sums, row)
                    else:
                        assert not got[2][row].any() and not np.signbit(got[2][row]).any(), (sums, row)


def test_column_sums_add_the_rows_in_order_pinned():
    """Column [1, 2**-53 x 99]: in row order every 1 + 2**-53 rounds (to even) back to 1, so the sum is exactly 1;
    a pairwise sum would first add the small terms (to 99 * 2**-53) and give more. NumPy's ``sum(axis=0)`` of a
    C-contiguous array with two columns adds in row order (the kernels rely on it); the column of -0.0 sums to +0.0
    (NumPy starts from 0.0)."""
    a = np.full((100, 2), 2.0**-53)
    a[0, 0] = 1.0
    a[:, 1] = -0.0
    assert a.sum(axis=0)[0] == 1.0 and np.signbit(a.sum(axis=0)[1]) == np.False_
    absa, sq, cols = np.empty(a.shape), np.empty(a.shape), np.empty((3, 2))
    magnitude_scan(a, absa, sq, 2, cols)
    assert cols[0, 0] == 1.0 and cols[1, 0] == 1.0 and cols[2, 0] == 1.0
    assert _bits(cols[0, 1:])[0] == 0  # +0.0
    assert np.sum(a[:, :1], axis=0)[0] > 1.0  # one column: NumPy sums pairwise (the kernel's caller uses NumPy)


def test_magnitude_scan_abs_sums_of_signed_zeros_and_nan_payloads_pinned():
    """``sums == 2`` adds the block of ``np.abs(a)`` that the element pass wrote (``absa``, not ``abs`` formed again):
    -0.0 terms add as +0.0, and a column's NaN sum is its first NaN term with the sign cleared and quieted (x86 returns
    the NaN operand of an addition, quieted), whether that NaN is in the first block of rows, a later one, or the last
    partial one, with NaN-free blocks and other NaNs (in its block and later ones) after it; a column of 1.0 then
    2**-53s sums to 1.0 in row order only (each 1 + 2**-53 rounds to even, back to 1). Six columns: four in registers,
    a tail of two. The ``sums == 7`` pass (``abs`` formed again) gives the same bits."""
    from harness.partialsums import _SCAN_ROWS

    def f64(bits: int) -> float:
        return float(np.array([bits], dtype=np.uint64).view(np.float64)[0])

    rows = 3 * _SCAN_ROWS + 5
    a = np.full((rows, 6), -0.0)
    a[:, 1] = -0.5
    a[_SCAN_ROWS + 7, 1] = f64(0xFFF0000000000ABC)  # negative signalling NaN in block 1
    a[_SCAN_ROWS + 9, 1] = f64(0x7FF8000000000123)  # more NaNs after it, in its block and the next: the first stays
    a[2 * _SCAN_ROWS + 1, 1] = f64(0xFFF8000000000456)
    a[0, 2] = f64(0xFFF8000000000001)  # block 0 alone
    a[_SCAN_ROWS + 3, 3] = -1.0
    a[_SCAN_ROWS + 4:, 3] = -(2.0**-53)
    a[rows - 1, 4] = f64(0xFFF4000000000000)  # the last, partial block; column 4 is in the tail
    a[:rows - 1, 4] = 1.0
    want = [0, 0x7FF8000000000ABC, 0x7FF8000000000001, 0x3FF0000000000000, 0x7FFC000000000000, 0]
    for sums in (2, 7):
        absa, sq, cols = np.empty(a.shape), np.empty(a.shape), np.full((3, 6), 7.0)
        magnitude_scan(a, absa, sq, 2, cols, sums)
        assert _bits(cols[1]).tolist() == want, sums
        assert _bits(absa).tolist() == (_bits(a) & np.uint64(0x7FFFFFFFFFFFFFFF)).tolist()


# ------------------------------------------------------------------------------------------------ residual_terms

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (300, 4), (97, 9)], ids=str)
def test_residual_terms_equal_numpy(shape, kind):
    rng = _rng("residual", shape, kind)
    absXW, aY, d_in, tf_abs = (np.abs(_data(rng, shape, kind)) for _ in range(4))
    ab = np.abs(_data(rng, shape[1:], kind))
    for has_d_in, has_tf, pm1, g, n_under, eta in ((False, False, 0.0, 2.0**-52, 16, 2.0**-1075),
                                                   (True, True, (1 + 2.0**-11) ** 2 - 1, 1e-3, 33, 2.0**-126),
                                                   (True, False, 0.0, np.inf, 0, 2.0**-24)):
        A, E, U = np.empty(shape), np.empty(shape), np.empty(shape)
        c1, c2 = n_under * eta, (1.0 + g) * n_under * eta
        e_nan, u_max = residual_terms(absXW, ab, aY, d_in, tf_abs, has_d_in, has_tf, pm1, g, c1, c2, A, E, U)
        din = d_in if has_d_in else np.zeros(shape)
        ta = tf_abs if has_tf else np.zeros(shape)
        with np.errstate(all="ignore"):  # the NumPy expressions of bounds._residual_bound
            tf = pm1 * absXW + ta
            want_A = absXW + ab[None, :] + aY
            want_U = din + ta + n_under * eta
            want_E = g * (want_A + tf) + din + tf + (1.0 + g) * n_under * eta
        assert _same(A, want_A) and _same(U, want_U) and _same(E, want_E)
        assert e_nan == bool(np.isnan(want_E).any())
        want_max = float(np.abs(want_U).max())
        assert (np.isnan(u_max) and np.isnan(want_max)) or u_max == want_max


# ------------------------------------------------------------------------------------------------ gradient_terms

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (5, 3), (300, 4), (97, 9)], ids=str)
def test_gradient_terms_equal_numpy(shape, kind):
    rng = _rng("gradient", shape, kind)
    aR, E = np.abs(_data(rng, shape, kind)), np.abs(_data(rng, shape, kind))
    Rh, Rh2, EL, cols = np.empty(shape), np.empty(shape), np.empty(shape), np.empty((2, shape[1]))
    finite = gradient_terms(aR, E, Rh, Rh2, EL, cols)
    with np.errstate(all="ignore"):  # the NumPy expressions of bounds.gradient_bounds and bounds.loss_bound
        want_Rh = aR + E
        assert _same(Rh, want_Rh) and _same(Rh2, want_Rh**2) and _same(EL, E * (2 * aR + E))
        if shape[1] >= 2:
            assert _same(cols[0], want_Rh.sum(axis=0)) and _same(cols[1], E.sum(axis=0))
    assert finite == bool(np.isfinite(want_Rh).all())


def test_gradient_terms_pinned():
    """|R| = [1, 2], E = [0.5, 0.25]: Rh = [1.5, 2.25], Rh**2 = [2.25, 5.0625], E (2|R| + E) = [1.25, 1.0625]."""
    Rh, Rh2, EL, cols = np.empty((1, 2)), np.empty((1, 2)), np.empty((1, 2)), np.empty((2, 2))
    assert gradient_terms(np.array([[1.0, 2.0]]), np.array([[0.5, 0.25]]), Rh, Rh2, EL, cols)
    assert Rh.tolist() == [[1.5, 2.25]] and Rh2.tolist() == [[2.25, 5.0625]] and EL.tolist() == [[1.25, 1.0625]]
    assert cols.tolist() == [[1.5, 2.25], [0.5, 0.25]]


# ------------------------------------------------------------------------------------------------ residual_variance

def _variance_numpy(fwd, rev, tot, sumP2, b, Y, R2, w1, n_terms):
    """The NumPy expression of bounds._kernel_partial_sums' V_R line, and what expected_bounds forms from it."""
    V_R = sumP2 * w1 + order_model(fwd, rev, tot, sumP2 + b[None, :] ** 2 + Y**2, n_terms)
    return V_R, R2 * V_R, V_R**2, V_R.sum(axis=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (5, 3), (300, 4), (97, 9)], ids=str)
def test_residual_variance_equals_numpy(shape, kind):
    rng = _rng("variance", shape, kind)
    fwd, rev, tot, Y, R2 = (_data(rng, shape, kind) for _ in range(5))
    sumP2 = np.abs(_data(rng, shape, kind))
    b = _data(rng, shape[1:], kind)
    for w1, n_terms in ((1.0, 18), (1 + 2 * 4.0**13, 3), (1.0, 2)):
        sum_k2, sum_kvar = bounds_mod._order_sums(n_terms)
        V_R, RV, VR2, cols = np.empty(shape), np.empty(shape), np.empty(shape), np.empty((1, shape[1]))
        residual_variance(fwd, rev, tot, sumP2, b, Y, R2, w1, n_terms, sum_k2, sum_kvar, V_R, RV, VR2, cols)
        with np.errstate(all="ignore"):
            want = _variance_numpy(fwd, rev, tot, sumP2, b, Y, R2, w1, n_terms)
        assert _same(V_R, want[0]) and _same(RV, want[1]) and _same(VR2, want[2])
        if shape[1] >= 2:
            assert _same(cols[0], want[3])


def test_residual_variance_maximum_of_zeros_and_nans_pinned():
    """``np.maximum`` returns its second operand for two zeros (``max(-0.0, 0.0) = 0.0``, ``max(0.0, -0.0) = -0.0``)
    and the first NaN; the kernel's maxima do the same. With sumP2 = b = Y = tot = 0 the random-order term is 0 and
    V_R = np.maximum(np.maximum(fwd, rev), 0.0): fwd = -0.0, rev = 0.0 -> 0.0; fwd = 0.0, rev = -0.0 -> -0.0 then
    np.maximum(-0.0, +0.0) = +0.0; fwd = NaN -> NaN."""
    z = np.zeros((1, 3))
    fwd = np.array([[-0.0, 0.0, np.nan]])
    rev = np.array([[0.0, -0.0, 1.0]])
    V_R, RV, VR2, cols = np.empty((1, 3)), np.empty((1, 3)), np.empty((1, 3)), np.empty((1, 3))
    residual_variance(fwd, rev, z, z, np.zeros(3), z, z, 1.0, 4, 30.0, 2.5, V_R, RV, VR2, cols)
    with np.errstate(all="ignore"):
        want = _variance_numpy(fwd, rev, z, z, np.zeros(3), z, z, 1.0, 4)[0]
    assert _same(V_R, want)
    assert _bits(V_R[:, :2]).tolist() == [0, 0] and np.isnan(V_R[0, 2])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 3, 2), (300, 4, 4), (261, 5, 8), (517, 16, 4), (97, 70, 1),
                                   (40, 6, 9), (1030, 2, 3)], ids=str)
def test_residual_variance_fused_equals_two_passes(shape, kind):
    """``residual_variance_fused`` (the partial sums of each block of rows straight into ``residual_variance``'s
    expressions) gives the bits of ``residual_variance`` of ``residual_partial_sums`` (NaN payloads included) and of
    the NumPy expressions of ``_kernel_partial_sums``: tails of D past a multiple of 4, K past 8 (the row-by-row
    kernel), N past a block of rows."""
    n, d, k = shape
    rng = _rng("fused-variance", shape, kind)
    X, W, Y, R2 = _data(rng, (n, d), kind), _data(rng, (d, k), kind), _data(rng, (n, k), kind), _data(rng, (n, k), kind)
    b = _data(rng, (k,), kind)
    for w1 in (1.0, 1 + 2 * 4.0**13):
        sum_k2, sum_kvar = bounds_mod._order_sums(d + 2)
        got = [np.full((n, k), 7.0), np.full((n, k), 7.0), np.full((n, k), 7.0), np.full((1, k), 7.0)]
        want = [np.empty((n, k)), np.empty((n, k)), np.empty((n, k)), np.empty((1, k))]
        with np.errstate(all="ignore"):
            residual_variance_fused(X, W, b, Y, R2, w1, d + 2, sum_k2, sum_kvar, *got)
            residual_variance(*residual_partial_sums(X, W, b, Y), b, Y, R2, w1, d + 2, sum_k2, sum_kvar, *want)
            fwd, rev, tot, sumP2 = residual_partial_sums(X, W, b, Y)
            numpy = _variance_numpy(fwd, rev, tot, sumP2, b, Y, R2, w1, d + 2)
        for g, w in zip(got, want, strict=True):
            assert np.array_equal(_bits(g), _bits(w))
        assert _same(got[0], numpy[0]) and _same(got[1], numpy[1]) and _same(got[2], numpy[2])
        if k >= 2:
            assert _same(got[3][0], numpy[3])


# ------------------------------------------------------------------------------------------------ step_bounds

def _step_inputs(rng, n, d, k, fmt, kind):
    """Inputs exact in ``fmt``, their residual and step rounded from extended precision (bounds need not be exact
    here: both paths get the same values)."""
    X, W = rng.standard_normal((n, d)), rng.standard_normal((d, k))
    b, Y = rng.standard_normal(k), rng.standard_normal((n, k))
    with np.errstate(all="ignore"):
        if kind == "mixed":
            X *= np.exp2(rng.integers(-20, 21, X.shape))
        elif kind == "subnormal":
            X, Y = X * fmt.min_normal * 2.0**-3, Y * fmt.min_normal
        elif kind == "near_overflow":
            X, W, Y = X * np.sqrt(fmt.max_finite) / 2, W * np.sqrt(fmt.max_finite) / 2, Y * fmt.max_finite / 8
        inputs = {q: np.asarray(round_to_format(v, fmt), dtype=np.float64) for q, v in (("X", X), ("y", Y), ("W", W), ("b", b))}
        ld = {q: v.astype(np.longdouble) for q, v in inputs.items()}
        R = ld["X"] @ ld["W"] + ld["b"] - ld["y"]
        c = np.longdouble(1) / (n * k)
        gW, gb = 2 * c * (ld["X"].T @ R), 2 * c * R.sum(axis=0)
        exact = {"loss": np.asarray(c * np.sum(R * R)), "grad_W": gW, "grad_b": gb,
                 "W": ld["W"] - gW / 64, "b": ld["b"] - gb / 64}
        return inputs, R.astype(np.float64), {q: np.asarray(v, dtype=np.float64) for q, v in exact.items()}


@pytest.mark.parametrize("fmt", [FLOAT16, BFLOAT16, FLOAT32, FLOAT64], ids=lambda f: f.name)
@pytest.mark.parametrize("kind", ["normal", "mixed", "subnormal", "near_overflow"])
@pytest.mark.parametrize("n,d,k", [(2000, 3, 1), (700, 1, 8), (600, 4, 3)])
def test_step_bounds_with_and_without_shared_passes(monkeypatch, fmt, kind, n, d, k):
    """Every field of StepBounds is the same, bit for bit, whether the shared passes and fused kernels are used or the
    NumPy expressions (``_prepare`` refused); near the overflow threshold the masks and the extended-precision
    re-evaluation take part."""
    inputs, R, exact = _step_inputs(_rng("step", fmt.name, kind, n, d, k), n, d, k, fmt, kind)
    kws = [dict(tf32=False, flush_to_zero=False), dict(tf32=fmt is FLOAT32, flush_to_zero=True, lr_held=1 / 64)]
    for kw in kws[(n + len(kind)) % 2:] if fmt is not FLOAT32 else kws:  # both for float32 (TF32), else one each
        for R_used in (R, np.where(np.arange(R.size).reshape(R.shape) % 5 == 0, np.inf, R)):
            args = (inputs, R_used, exact)
            opts = dict(lr=1 / 64, reduction="mean", fmt=fmt, **kw)
            with np.errstate(all="ignore"):
                fast = step_bounds(*args, **opts)
                with monkeypatch.context() as mp:
                    mp.setattr(bounds_mod, "_prepare", lambda *a: None)
                    slow = step_bounds(*args, **opts)
            _assert_same_bounds(fast, slow)
            if kind == "near_overflow":  # the overflow masks' products and the wide re-evaluation took part
                assert any(np.any(m) for m in fast.inf_allowed.values())


def test_step_bounds_shared_passes_taken_and_exact_oracle():
    """The shared passes are taken for a case at KERNEL_MIN_WORK, and agree with the NumPy path on oracle values."""
    rng = _rng("oracle")
    inputs = {"X": rng.standard_normal((256, 4)), "y": rng.standard_normal((256, 4)),
              "W": rng.standard_normal((4, 4)), "b": rng.standard_normal(4)}
    inputs = {q: np.asarray(round_to_format(v, FLOAT32), dtype=np.float64) for q, v in inputs.items()}
    assert bounds_mod._prepare(inputs, np.zeros((256, 4))) is not None
    ex = exact_step(exact_inputs_from_floats(inputs), Fraction(1, 64), "sum")
    exact = {q: ex.values[q].to_hi_lo()[0] for q in QUANTITIES}
    fast = step_bounds(inputs, ex.residual.to_float64(), exact, lr=1 / 64, reduction="sum", fmt=FLOAT32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bounds_mod, "_prepare", lambda *a: None)
        slow = step_bounds(inputs, ex.residual.to_float64(), exact, lr=1 / 64, reduction="sum", fmt=FLOAT32)
    _assert_same_bounds(fast, slow)


def _assert_same_bounds(fast, slow):
    for name in ("rigorous", "expected", "inf_allowed", "nan_allowed", "posinf_allowed", "neginf_allowed",
                 "finite_impossible"):
        a, b = getattr(fast, name), getattr(slow, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert set(a) == set(b), name
            for q in a:
                x, y = np.asarray(a[q]), np.asarray(b[q])
                assert x.dtype == y.dtype and x.shape == y.shape, (name, q)
                ok = _same(x, y) if x.dtype.kind == "f" else np.array_equal(x, y)
                assert ok, (name, q)
    assert fast.vacuous == slow.vacuous and fast.out_of_range == slow.out_of_range
    assert fast.flush_to_zero == slow.flush_to_zero and fast.note == slow.note

