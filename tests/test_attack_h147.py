"""helper-147's attack on the row-chunked exact step (helper-144) and the small-array fast paths (helper-145): the
discrepancies found against the code before them (fcf4169), each pinned here."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from harness import fastexact
from harness.fastexact import TooWideError, step_parts


def _two_paths(X, y, W, b):  # noqa: ANN001, ANN202
    """The residual by row chunks (exact X^T R) and over whole columns (the accurate product's path)."""
    return step_parts(X, y, W, b)[0], step_parts(X, y, W, b, accurate=True)[0]


def test_too_wide_names_the_whole_residuals_planes() -> None:
    # the first chunk's residual (X = 2**-220) needs 10 planes, the second's (X = 2**500) 44: with S = 43 digits of X
    # both exceed MAX_PRODUCTS; the error named the first chunk's 10 planes where the whole residual needs 44
    n = 5000
    X = np.full((n, 1), 2.0**-220)
    X[0, 0] = 2.0**-400
    X[2048:, 0] = 2.0**500
    with pytest.raises(TooWideError, match=r"^X\^T R needs 43 x 44 digit products$"):
        step_parts(X, np.zeros((n, 1)), np.ones((1, 1)), np.zeros(1))


def test_chunked_digits_are_the_whole_arrays_bit_for_bit() -> None:
    # a chunk whose residual needs fewer planes, positive: its sign's extension was -0.0 (0 * -(2**B - 1)), the whole
    # array's kernel writes +0.0
    rng = np.random.default_rng(3)
    n = 2048 + 100
    X = rng.standard_normal((n, 2))
    X[2048:] *= 2.0**80
    y = np.zeros((n, 1))
    W = np.abs(rng.standard_normal((2, 1)))
    X = np.abs(X)
    R, R_whole = _two_paths(X, y, W, np.zeros(1))
    assert R._digits.shape == R_whole._digits.shape
    assert np.ascontiguousarray(R._digits).tobytes() == np.ascontiguousarray(R_whole._digits).tobytes()


def test_digits_put_together_while_another_thread_reads_them() -> None:
    # a second thread that puts the digits together while the first is between its two reads of the chunks: the
    # first read None (TypeError: 'NoneType' object is not iterable)
    rng = np.random.default_rng(5)
    n = 2048 * 2 + 9
    X, y, W, b = rng.standard_normal((n, 2)), rng.standard_normal((n, 2)), rng.standard_normal((2, 2)), rng.standard_normal(2)
    R = step_parts(X, y, W, b)[0]
    errors: list[BaseException] = []

    def other() -> None:
        try:
            R._planes()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    class Chunks(list):  # type: ignore[type-arg]
        started = False

        def __iter__(self):  # noqa: ANN204
            if not Chunks.started:
                Chunks.started = True
                t = threading.Thread(target=other)
                t.start()
                t.join(timeout=2.0)  # (where the digits are built under a lock, the other thread waits for it)
                threads.append(t)
            return super().__iter__()

    threads: list[threading.Thread] = []
    R._chunks = Chunks(R._chunks)
    digits = R._planes()
    for t in threads:
        t.join()
    assert not errors
    assert R._planes() is digits
    assert np.array_equal(R.to_hi_lo()[0], step_parts(X, y, W, b, accurate=True)[0].to_hi_lo()[0])


def test_threads_read_one_residual() -> None:
    rng = np.random.default_rng(7)
    n = 2048 * 3 + 5
    X, y, W, b = rng.standard_normal((n, 2)), rng.standard_normal((n, 2)), rng.standard_normal((2, 2)), rng.standard_normal(2)
    errors: list[BaseException] = []
    for _ in range(10):
        R = step_parts(X, y, W, b)[0]
        bar = threading.Barrier(4)

        def go(R: fastexact.DigitResidual = R, bar: threading.Barrier = bar) -> None:
            bar.wait()
            try:
                R._round()
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        ts = [threading.Thread(target=go) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert not errors


def test_nearest_rounding_bound_of_integers_where_no_wider_type() -> None:
    # precision 64 (u_w = 0): z stays integer-typed, and u in its type was 0, a bound of 0 for |z| = 1 and 3
    from harness.bounds import nearest_rounding_bound
    from harness.floats import FloatFormat

    fmt = FloatFormat("x87", 64, -16382, 16383)
    z = np.array([[0, 1], [3, 2**40]])
    got = nearest_rounding_bound(z, fmt)
    want = nearest_rounding_bound(z.astype(np.float64), fmt)
    assert got.dtype == want.dtype == np.float64
    assert np.array_equal(got, want)
    assert got[0, 1] == 2.0**-64


def test_seed_factors_of_other_types_as_before_the_cache() -> None:
    # int(n) rounded a Fraction N (5/2 gave 1/2, not 2/5) and let a float through (Fraction(1, 3.0) is a TypeError),
    # and an equal float would share the int's cache entry
    from fractions import Fraction

    from harness.bounds import seed_factors

    assert seed_factors("mean", Fraction(5, 2), 2) == (Fraction(2), Fraction(2, 5), Fraction(1, 2))
    assert seed_factors("mean", 3, 2) == (Fraction(2), Fraction(1, 3), Fraction(1, 2))
    with pytest.raises(TypeError):
        seed_factors("mean", 3.0, 2)
    assert seed_factors("mean", np.int64(3), 2) == (Fraction(2), Fraction(1, 3), Fraction(1, 2))
    assert seed_factors("sum", True, 1) == (Fraction(2), Fraction(1))


def _whole(monkeypatch: pytest.MonkeyPatch, X, y, W, b):  # noqa: ANN001, ANN202
    """step_parts over whole columns (the path before the row chunks), or its exception."""
    with monkeypatch.context() as m:
        m.setattr(fastexact, "_step_by_rows", lambda *a: None)
        return _parts_or_error(X, y, W, b)


def _parts_or_error(X, y, W, b):  # noqa: ANN001, ANN202
    try:
        R, gw, gb, loss, radius = step_parts(X, y, W, b)
    except (ValueError, TooWideError) as e:
        return type(e).__name__, str(e)
    return (R.ints.tolist(), R.scale, R.shape, np.ascontiguousarray(R._digits).tobytes(), R._digits.shape,
            R.to_float64().tobytes(), R.to_float64().flags.writeable, gw.ints.tolist(), gw.scale, gb.ints.tolist(),
            gb.scale, loss.ints.tolist(), loss.scale, radius)


def test_row_chunks_against_whole_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    # chunks whose residuals need different numbers of planes, of either sign, zero ones, too-wide ones: every value,
    # digit (bit for bit), rounding and error message as over whole columns
    from hypothesis import HealthCheck, given, settings, target
    from hypothesis import strategies as st

    @settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.integers(1, 3), st.sampled_from([1, 2047, 2048, 700]), st.integers(1, 3), st.integers(1, 2),
           st.integers(0, 2**32 - 1), st.lists(st.integers(-400, 400), min_size=6, max_size=6),
           st.sampled_from(["random", "exact", "zero", "sign"]))
    def run(nch: int, last: int, d: int, k: int, seed: int, ex: list[int], ymode: str) -> None:
        n = 2048 * (nch - 1) + last
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((n, d))
        y = rng.standard_normal((n, k))
        for j in range(nch):
            X[2048 * j:2048 * (j + 1)] *= 2.0 ** ex[j]
            y[2048 * j:2048 * (j + 1)] *= 2.0 ** ex[3 + j]
        W = rng.standard_normal((d, k))
        b = rng.standard_normal(k)
        if ymode == "exact":
            y = X @ W + b
        elif ymode == "zero":
            y[:] = 0
        elif ymode == "sign":
            X, W, b = np.abs(X), np.abs(W), np.abs(b)
            y[2048:] = -np.abs(y[2048:]) * 2.0**60
        y = np.where(np.isfinite(y), y, 0.0)
        target(float(len({e // 21 for e in ex[:nch]})), label="distinct plane counts")
        got = _parts_or_error(X, y, W, b)
        want = _whole(monkeypatch, X, y, W, b)
        assert got == want

    run()


def test_pickled_row_chunks_without_the_whole_digits() -> None:
    # a copy pickled from the row chunks (the digits not put together), and one pickled after they were: the same
    # values, digits, rounding (read-only) as over whole columns
    import pickle

    rng = np.random.default_rng(9)
    n = 2048 * 2 + 300
    X = rng.standard_normal((n, 2))
    X[2048:4096] *= 2.0**70
    y = -np.abs(rng.standard_normal((n, 1)))
    R, R_whole = _two_paths(X, y, rng.standard_normal((2, 1)), np.ones(1))
    copy = pickle.loads(pickle.dumps(R))
    assert R._digit_array is None and copy._digit_array is None
    assert len(pickle.dumps(R)) <= len(pickle.dumps(R_whole)) + 4096
    for r in (copy, pickle.loads(pickle.dumps(copy)), R):
        assert np.ascontiguousarray(r._digits).tobytes() == np.ascontiguousarray(R_whole._digits).tobytes()
        assert r.ints.tolist() == R_whole.ints.tolist() and r.scale == R_whole.scale
        assert r.to_float64().tobytes() == R_whole.to_float64().tobytes() and not r.to_float64().flags.writeable
    again = pickle.loads(pickle.dumps(R))  # (from the digits put together)
    assert again.ints.tolist() == R_whole.ints.tolist()
