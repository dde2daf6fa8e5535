"""helper-151's attack on helper-149's speed changes to the exact step (h149: the row chunks' ``X^T R`` with the
residual's sign plane folded into the digit below it, ``X W``'s positions carried with ``y``'s and ``b``'s digits in
the residual kernel, one matmul per position of ``X W``): every value against an independent reference in Python
integers, at the digit and int64 limits that the folding moves, at every bit shift of the positions, over row chunks
shrunk to a few rows (many chunks of different plane counts, the one-int64-block boundary), and with two threads.
These hold on main (a624a5f) as well: they pin the exact results that the faster code must keep."""

from __future__ import annotations

import math
import pickle
import threading
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, target
from hypothesis import strategies as st

from harness import fastexact
from harness.exact import ScaledInts
from harness.fastexact import step_parts

B = fastexact.B


def _ints(a: np.ndarray) -> tuple[list[int], int]:
    """The values of a float64 array as Python ints over ``2**q`` (flattened), ``q`` the least exponent of a
    significand bit among the nonzero values (0 for none): independent of the harness's own conversions."""
    m, e = np.frexp(np.asarray(a, dtype=np.float64).ravel())
    mi = [int(v) for v in np.ldexp(m, 53).astype(np.int64)]
    ex = [int(v) - 53 for v in e]
    q = min((x for v, x in zip(mi, ex, strict=True) if v), default=0)
    return [v << (x - q) if v else 0 for v, x in zip(mi, ex, strict=True)], q


def _reference(X: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray) -> dict[str, list[Fraction]]:
    """R = X W + 1 b^T - y (N x K, row-major), X^T R (D x K), 1^T R (K) and sum R^2, exact rationals."""
    n, d = X.shape
    k = y.shape[1]
    xi, qx = _ints(X)
    wi, qw = _ints(W)
    yi, qy = _ints(y)
    bi, qb = _ints(b)
    q = min(qx + qw, qy, qb)
    r = [sum(xi[i * d + j] * wi[j * k + c] for j in range(d)) * (1 << (qx + qw - q)) + bi[c] * (1 << (qb - q))
         - yi[i * k + c] * (1 << (qy - q)) for i in range(n) for c in range(k)]
    g = [sum(xi[i * d + j] * r[i * k + c] for i in range(n)) for j in range(d) for c in range(k)]
    cs = [sum(r[i * k + c] for i in range(n)) for c in range(k)]
    s = Fraction(2) ** q
    return {"R": [v * s for v in r], "gw": [v * s * Fraction(2) ** qx for v in g], "gb": [v * s for v in cs],
            "loss": [sum(v * v for v in r) * s * s]}


def _nearest(f: Fraction) -> float:
    """The float64 nearest ``f`` (ties to even: Python's correctly rounded int division), ``±inf`` beyond range."""
    try:
        return float(f)
    except OverflowError:
        return math.inf if f > 0 else -math.inf


def _fracs(v: ScaledInts) -> list[Fraction]:
    return [Fraction(int(i)) * v.scale for i in np.asarray(v.ints, dtype=object).ravel()]


def _agrees(parts: tuple[Any, ...], want: dict[str, list[Fraction]], exact_gw: bool = True) -> None:
    """step_parts' residual (its digits, put together from the row chunks, and their rounding), X^T R (exact, or
    within the stated radius), 1^T R and sum R^2 equal the reference."""
    R, gw, gb, loss, radius = parts
    assert _fracs(R) == want["R"]
    got = np.asarray(R.to_float64()).ravel()
    assert got.tobytes() == np.array([_nearest(f) for f in want["R"]], dtype=np.float64).tobytes()
    # the two's complement digits as read (from the row chunks: each chunk's planes as the kernel gave them back)
    dg = np.asarray(R._digits)
    assert ((dg[:-1] >= 0) & (dg[:-1] < 2**B)).all() and ((dg[-1] == 0) | (dg[-1] == -1)).all()
    assert (dg == np.round(dg)).all()
    flat = [[int(v) for v in dg[u].ravel().tolist()] for u in range(len(dg))]
    vals = [sum(flat[u][e] << (B * u) for u in range(len(dg))) for e in range(dg[0].size)]
    assert [Fraction(v) * Fraction(2) ** R._q0 for v in vals] == want["R"]
    assert _fracs(gb) == want["gb"] and _fracs(loss) == want["loss"]
    if exact_gw or radius is None:
        assert radius is None
        assert _fracs(gw) == want["gw"]
    else:
        for g, w, rad in zip(_fracs(gw), want["gw"], radius.ravel(), strict=True):
            assert abs(g - w) <= Fraction(float(rad))


# ------------------------------------------------------------------ the folded sign plane at the int64 limits


@pytest.mark.parametrize("extra", [0, 1])
@pytest.mark.parametrize("sx", [-1, 1])
def test_folded_sign_digits_at_the_int64_block_limit(extra: int, sx: int) -> None:
    # X = sx (2**B - 1): one digit, all ones; W = 1, b = 0, y = 1: R = sx (2**B - 1) - 1. For sx = -1, R = -2**B,
    # digits (0, sign -1) over 2 planes: folded, the digit below the sign is -2**B, every product
    # (2**B - 1) 2**B = 2**42 - 2**21 (the largest the folding allows: X's digits are below 2**B), each chunk's sum
    # 2**53 - 2**32 and one int64 block of ACC_BLOCK chunks 2**63 - 2**42 (the block limit itself, 2**63, would
    # wrap). N = ROW_CHUNK ACC_BLOCK rows (one int64 block, read by position_sum) and one more (a Python-int block
    # boundary).
    n = fastexact.ROW_CHUNK * fastexact.ACC_BLOCK + extra
    xv = sx * (2**B - 1)
    X = np.full((n, 1), float(xv))
    R, gw, gb, loss, radius = step_parts(X, np.ones((n, 1)), np.ones((1, 1)), np.zeros(1))
    r = xv - 1
    assert radius is None and R.shape == (n, 1)
    assert _fracs(gw) == [Fraction(n * xv * r)]
    if extra == 0 and sx == -1:
        assert n * xv * r == 2**63 - 2**42  # the int64 block's sum, as above
    assert _fracs(gb) == [Fraction(n * r)] and _fracs(loss) == [Fraction(n * r * r)]
    assert (np.asarray(R.to_float64()) == float(r)).all()  # (exact: |r| <= 2**B)


@pytest.mark.parametrize("j", [1, 2, 3])
def test_residuals_of_minus_a_power_of_the_base_in_every_chunk(j: int) -> None:
    # R = -2**(B j) exactly in every row (digits 0 below a sign -1 in plane j: the folded digit is -2**B), X with a
    # digit 2**B - 1 in the plane that meets it, over three chunks and a partial one; one row's R is +1 so that the
    # scale stays 2**0
    n = 3 * fastexact.ROW_CHUNK + 5
    X = np.full((n, 1), -float(2**B - 1) * 2.0 ** (B * (j - 1)))
    X[0, 0] = 1.0
    y = X + 2.0 ** (B * j)  # exact: X's bits and the power's lie within 53 bits of each other
    y[0, 0] = 0.0
    W, b = np.ones((1, 1)), np.zeros(1)
    assert (y[1:] - X[1:] == 2.0 ** (B * j)).all()
    _agrees(step_parts(X, y, W, b), _reference(X, y, W, b))


# ------------------------------------------------------------------ row chunks of a few rows against the rationals


def _minus_base_power(f: Fraction) -> bool:
    """Whether ``f`` is ``-2**(B j)``, ``j >= 1`` (digits 0 below a sign -1: the folded digit is ``-2**B``)."""
    m = -f.numerator
    return f.denominator == 1 and m > 1 and m & (m - 1) == 0 and (m.bit_length() - 1) % B == 0


def _chunked_case(n: int, d: int, k: int, seed: int, mode: str, spread: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    sgn = rng.choice([-1.0, 1.0], (n, d))
    if mode in ("fold", "negative-fold"):
        # X's digits all ones (2**B - 1 in one plane per element), W = +-1, b = 0, R = -+2**p: products of the
        # largest digits with the folded -2**B where p is a multiple of B
        X = sgn * float(2**B - 1) * 2.0 ** (B * rng.integers(0, 3, (n, d)))
        W = rng.choice([-1.0, 1.0], (d, k))
        b = np.zeros(k)
        p = rng.choice([0, 1, B - 1, B, B + 1, 2 * B, 2 * B + 1, 3 * B], (n, k))
        r = -(2.0 ** p) if mode == "negative-fold" else rng.choice([-1.0, 1.0], (n, k)) * 2.0**p
        y = X @ W - r  # rounded where the bits are more than 53 apart: the exact reference holds either way
        return X, y, W, b
    X = rng.standard_normal((n, d)) * 2.0 ** rng.integers(-spread, spread + 1, (n, 1))  # a scale per row
    W = rng.standard_normal((d, k))
    b = rng.standard_normal(k)
    if mode == "random":
        y = rng.standard_normal((n, k)) * 2.0 ** rng.integers(-spread, spread + 1, (n, 1))
    elif mode == "cancel":  # integers: X W + b exact, R = 0 ...
        X, W, b = np.round(X * 64), np.round(W * 64), np.round(b * 64)
        y = X @ W + b
    elif mode == "ulp":  # ... or one ulp of y either way
        X, W, b = np.round(X * 64), np.round(W * 64), np.round(b * 64)
        y = np.nextafter(X @ W + b, rng.choice([-np.inf, np.inf], (n, k)))
    else:  # "all-negative": R < 0 in every element, the sign plane all -1
        X, W, b = np.round(X * 64), np.round(W * 64), np.round(b * 64)
        y = X @ W + b + np.abs(np.round(rng.standard_normal((n, k)) * 2.0**20)) + 1
    return X, np.where(np.isfinite(y), y, 0.0), W, b


def test_row_chunks_of_a_few_rows_equal_the_rationals(monkeypatch: pytest.MonkeyPatch) -> None:
    # ROW_CHUNK and ACC_BLOCK shrunk (each chunk one to five rows, its residual with its own plane count and sign):
    # N around multiples of ROW_CHUNK and of ROW_CHUNK ACC_BLOCK (one int64 block or Python-int blocks), every value,
    # digit and rounding against the reference, by row chunks and over whole columns, and a pickled copy of the
    # residual taken from the row chunks
    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from([1, 2, 3, 5]), st.sampled_from([1, 2, 3]), st.integers(1, 3), st.integers(-1, 1),
           st.integers(1, 3), st.integers(1, 2), st.integers(0, 2**32 - 1),
           st.sampled_from(["fold", "negative-fold", "random", "cancel", "ulp", "all-negative"]), st.integers(0, 90))
    @example(rc=2, blocks=2, mult=1, extra=0, d=1, k=1, seed=0, mode="negative-fold", spread=0)
    def run(rc: int, blocks: int, mult: int, extra: int, d: int, k: int, seed: int, mode: str, spread: int) -> None:
        n = max(1, rc * blocks * mult + extra)
        X, y, W, b = _chunked_case(n, d, k, seed, mode, spread)
        want = _reference(X, y, W, b)
        target(sum(map(_minus_base_power, want["R"])) / len(want["R"]), label="share of residuals -2**(B j)")
        with monkeypatch.context() as m:
            m.setattr(fastexact, "ROW_CHUNK", rc)
            m.setattr(fastexact, "ACC_BLOCK", blocks)
            parts = step_parts(X, y, W, b)
            copy = pickle.loads(pickle.dumps(parts[0]))  # (from the row chunks, before their digits are read)
            _agrees(parts, want)
            _agrees((copy, *parts[1:]), want)
            m.setattr(fastexact, "_step_by_rows", lambda *a: None)
            _agrees(step_parts(X, y, W, b), want)

    run()


# ------------------------------------------------------------------ X W's positions at every bit shift


def test_positions_at_every_shift_and_their_largest_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    # X and W integers (an odd element each: their lowest set bits are 2**0) of up to 53 one bits at any digit
    # offset, either sign, y with a bit at 2**-sh: X W's positions enter the residual's planes shifted by sh bits
    # (whole planes or split across two), the largest of them near 2**53 (D up to 682 columns of 3 all-ones digits)
    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.integers(0, 4 * B), st.sampled_from([1, 2, 7, 8, 9, 16, 100, 682, 683]), st.integers(1, 2),
           st.integers(1, 4), st.integers(0, 2**32 - 1), st.booleans(), st.sampled_from([0, 40, 120, 400]),
           st.sampled_from([0, 10, 2 * B]), st.sampled_from([0, 10, B]))
    @example(sh=0, d=682, k=1, n=3, seed=1, ones=True, ybig=0, xtop=10, wtop=10)
    @example(sh=B - 1, d=682, k=2, n=2, seed=2, ones=True, ybig=120, xtop=10, wtop=10)
    @example(sh=B + 1, d=9, k=1, n=1, seed=3, ones=False, ybig=400, xtop=2 * B, wtop=B)
    def run(sh: int, d: int, k: int, n: int, seed: int, ones: bool, ybig: int, xtop: int, wtop: int) -> None:
        rng = np.random.default_rng(seed)

        def ints(shape: tuple[int, int], top: int) -> np.ndarray:
            if ones:
                m = np.full(shape, float(2**53 - 1))
            else:
                m = rng.integers(1, 2**53, shape).astype(np.float64)
            return rng.choice([-1.0, 1.0], shape) * m * 2.0 ** rng.integers(0, top + 1, shape)

        # (53 bits shifted by at most 10: 3 digits, so S D <= 2048 at D = 682, the row chunks' product, positions of
        # up to 682 sums of three products near 2**42; wider X: whole columns)
        X, W = ints((n, d), xtop), ints((d, k), wtop)
        X[0, 0], W[0, 0] = 1.0, -1.0
        y = np.round(rng.standard_normal((n, k)) * 2.0**20) * 2.0**ybig
        y[0, 0] = 2.0**-sh  # the scale 2**-sh: X W's positions enter shifted by sh bits
        b = np.round(rng.standard_normal(k) * 2.0**10)
        want = _reference(X, y, W, b)
        _agrees(step_parts(X, y, W, b), want)
        with monkeypatch.context() as m:
            m.setattr(fastexact, "_step_by_rows", lambda *a: None)
            _agrees(step_parts(X, y, W, b), want)
        _agrees(step_parts(X, y, W, b, accurate=True), want, exact_gw=False)

    run()


# ------------------------------------------------------------------ two threads


def test_two_threads_stepping_at_once_get_the_one_threads_results() -> None:
    # the kernels release the GIL and the work buffers are per thread; the folding writes into each chunk's own planes:
    # two threads stepping different data at the same time get what one thread gets, digits and all
    rng = np.random.default_rng(3)

    def case(scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n = 2 * fastexact.ROW_CHUNK + 17
        X = rng.standard_normal((n, 3)) * 2.0 ** rng.integers(-40, 40, (n, 1))
        return X, -np.abs(rng.standard_normal((n, 2))) * scale, rng.standard_normal((3, 2)), rng.standard_normal(2)

    cases = [case(2.0**e) for e in (0, 60, -30, 200)]

    def digest(parts: tuple[Any, ...]) -> tuple[Any, ...]:
        R, gw, gb, loss, _ = parts
        return (np.ascontiguousarray(R._digits).tobytes(), R.to_float64().tobytes(), _fracs(gw), _fracs(gb),
                _fracs(loss))

    want = [digest(step_parts(*c)) for c in cases]
    got: dict[tuple[int, int], tuple[Any, ...]] = {}
    barrier = threading.Barrier(2)

    def work(t: int) -> None:
        barrier.wait()
        for rep in range(3):
            for i in range(t, len(cases), 2):
                got[(i, rep)] = digest(step_parts(*cases[i]))

    threads = [threading.Thread(target=work, args=(t,)) for t in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(got) == 3 * len(cases)
    for (i, _), v in got.items():
        assert v == want[i]


# ------------------------------------------------------------------ the Gram sums with the top digit folded (059dee5)


@pytest.mark.parametrize("r", [-(2**B), -(2 ** (2 * B) - 2**B + 1), -1, 2**B - 1])
@pytest.mark.parametrize("path", ["rows", "columns"])
def test_gram_sums_of_one_full_gram_block_at_the_digit_limits(monkeypatch: pytest.MonkeyPatch, r: int,
                                                              path: str) -> None:
    # GRAM_BLOCK elements of one residual r (X = 1, W = 1, b = 0, y = 1 - r; over 2**0) in one Gram block: by row
    # chunks (N = 2048, K = GRAM_BLOCK / 2048 columns) or over whole columns (N = GRAM_BLOCK, K = 1). r = -2**B:
    # digit 0 below the sign, folded -2**B, its square 2**42 summed to 2**62 on the diagonal; r = -(2**(2B) - 2**B + 1):
    # digits (MASK, 0), the 0 folded to -2**B, the off-diagonal sum -(2**62 - 2**41) (doubled within int64); sum R**2
    # and 1^T R exact either way
    from harness.slicekernels import GRAM_BLOCK

    n = 2048 if path == "rows" else GRAM_BLOCK
    k = GRAM_BLOCK // n
    X = np.ones((n, 1))
    y = np.full((n, k), float(1 - r))
    if path == "columns":
        monkeypatch.setattr(fastexact, "_step_by_rows", lambda *a: None)
    R, gw, gb, loss, radius = step_parts(X, y, np.ones((1, k)), np.zeros(k))
    assert _fracs(loss) == [Fraction(GRAM_BLOCK * r * r)]
    assert _fracs(gb) == [Fraction(n * r)] * k and _fracs(gw) == [Fraction(n * r)] * k and radius is None
    assert (np.asarray(R.to_float64()) == float(r)).all()


# ------------------------------------------------------------------ hand-made extremes, by rows, over whole columns


_MAX, _TINY = float(np.finfo(np.float64).max), 2.0**-1074
_EXTREMES = {  # X, y, W, b
    "largest": ([[_MAX]], [[-_MAX]], [[_MAX]], [_MAX]),
    "largest-signs": ([[-_MAX, _MAX]], [[_MAX, -_MAX]], [[_MAX, _MAX], [-_MAX, _MAX]], [-_MAX, _MAX]),
    "subnormal": ([[_TINY]], [[_TINY]], [[_TINY]], [0.0]),
    "subnormal-mixed": ([[_TINY, 3 * _TINY]], [[-_TINY]], [[_TINY], [2.0**-1000]], [_TINY]),
    "cancel-largest": ([[_MAX / 2]], [[_MAX]], [[2.0]], [0.0]),
    "minus-powers-of-the-base": ([[1.0], [3.0]], [[1.0 + 2.0**42], [3.0 + 2.0**63]], [[1.0]], [0.0]),
    "half-ulp": ([[1.0]], [[1.0 + 2.0**-52]], [[1.0]], [2.0**-53]),
    "signed-zeros": ([[-0.0]], [[-0.0]], [[-0.0]], [-0.0]),
    "one-plane": ([[1.0], [1.0], [1.0]], [[1.0], [2.0], [1.0]], [[1.0]], [0.0]),  # R = 0, -1, 0: the sign alone
    "widest-residual": ([[1.0], [3.0]], [[_MAX], [-_MAX]], [[_TINY]], [3 * _TINY]),  # 2**-1074 .. 2**1024: 101 planes
}


@pytest.mark.parametrize("name", list(_EXTREMES))
@pytest.mark.parametrize("path", ["rows", "columns", "accurate"])
def test_hand_made_extremes(monkeypatch: pytest.MonkeyPatch, name: str, path: str) -> None:
    X, y, W, b = (np.array(a, dtype=np.float64) for a in _EXTREMES[name])
    if path == "columns":
        monkeypatch.setattr(fastexact, "_step_by_rows", lambda *a: None)
    _agrees(step_parts(X, y, W, b, accurate=path == "accurate"), _reference(X, y, W, b), exact_gw=path != "accurate")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_narrow_formats_over_several_row_chunks(monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    # values of a narrower format (as an implementation in that dtype saw them), rows of mixed scales over two chunks and
    # a partial one, y its format's rounding of X W + b (small cancelling residuals) with some rows negated
    from harness.floats import get_format, round_to_format

    fmt = get_format(dtype)
    rng = np.random.default_rng(len(dtype))
    n, d, k = 2 * fastexact.ROW_CHUNK + 1, 4, 3
    raw = {"X": rng.standard_normal((n, d)) * 2.0 ** rng.integers(-12, 12, (n, 1)), "W": rng.standard_normal((d, k)),
           "b": rng.standard_normal(k)}
    with np.errstate(all="ignore"):
        a = {key: np.nan_to_num(np.asarray(round_to_format(v, fmt), dtype=np.float64), posinf=0.0, neginf=0.0)
             for key, v in raw.items()}
        y = np.asarray(round_to_format(a["X"] @ a["W"] + a["b"], fmt), dtype=np.float64)
    y = np.nan_to_num(y, posinf=0.0, neginf=0.0)
    y[::7] = -y[::7]
    want = _reference(a["X"], y, a["W"], a["b"])
    _agrees(step_parts(a["X"], y, a["W"], a["b"]), want)
    monkeypatch.setattr(fastexact, "_step_by_rows", lambda *args: None)
    _agrees(step_parts(a["X"], y, a["W"], a["b"]), want)
