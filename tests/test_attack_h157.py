"""helper-157's attack on helper-156's change to the row-chunked exact step (53c2736): the residual kernel writes each
chunk's digit planes into one reused float64 buffer per thread, the chunk keeps its used planes as float32, and the
sign plane is folded into the buffer (not unfolded). Every value against the Python-integer reference of
tests/test_attack_h151.py: the float32 chunks at the digit limits (``2**B - 1``, the sign -1), residuals read after
other checks reused the buffer (also after a check that failed half-way), two threads stepping several cases at once,
chunks of different plane counts next to each other, the chunk counts around ``ACC_BLOCK``, pickled copies, the
kernel given a buffer full of garbage, and the too-wide error. All but the float32 chunks' layout (their dtype and
plane count, new in 53c2736) hold on the commit before (6780c2f) as well. The thread tests catch a buffer shared by
the threads only where the two threads run on two cores at once."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from harness import fastexact
from harness.fastexact import TooWideError, step_parts
from tests.test_attack_h151 import _agrees, _chunked_case, _reference

B = fastexact.B
MASK = (1 << B) - 1


def _twos_digits(v: int, planes: int) -> list[int]:
    """``v``'s two's complement digits base ``2**B`` over ``planes`` planes, the top one the sign (0 or -1)."""
    out = []
    for _ in range(planes - 1):
        out.append(v & MASK)
        v >>= B
    assert v in (0, -1)
    return [*out, v]


def _ints_over(R: Any) -> list[int]:
    """The residual's values as integers over ``2**q0``, row-major."""
    return [int(v) for v in np.asarray(R.ints, dtype=object).ravel()]


def _limit_case(n: int, k: int) -> tuple[np.ndarray, ...]:
    """Integer data whose residuals, row by row, are -1, 2**B - 1, -2**B, 2**(2B) - 1, -(2**(2B)), 1 - 2**(3B), 0
    (digits all MASK, the sign -1, digits 0 under a sign -1), repeated, column c shifted by c: chunks of 2 to 4
    planes next to each other."""
    pattern = [-1, MASK, -(1 << B), (1 << (2 * B)) - 1, -(1 << (2 * B)), 1 - (1 << (3 * B)), 0]
    r = np.array([[float(pattern[(i + c) % len(pattern)]) for c in range(k)] for i in range(n)])
    X = np.arange(1, n + 1, dtype=np.float64).reshape(n, 1)
    W = np.ones((1, k))
    b = np.zeros(k)
    y = X @ W - r  # exact: below 2**63 with few bits
    assert ((X @ W - y) == r).all()
    return X, y, W, b


@pytest.mark.parametrize("rc", [1, 2, 3])
@pytest.mark.parametrize("k", [1, 3])
def test_float32_chunks_at_the_digit_limits_equal_the_twos_complement_digits(monkeypatch: pytest.MonkeyPatch,
                                                                             rc: int, k: int) -> None:
    # each chunk's kept planes are float32 (the kernel's float64 buffer converted), as many as the chunk uses, and
    # equal the two's complement digits of the reference's integers over the chunk's own plane count: the digit
    # 2**B - 1 = 2**21 - 1 and the sign -1 survive the float32 copy and come back in ints, to_float64, the Gram sum
    n = 7 * 2 + 1
    X, y, W, b = _limit_case(n, k)
    want = _reference(X, y, W, b)
    monkeypatch.setattr(fastexact, "ROW_CHUNK", rc)
    monkeypatch.setattr(fastexact, "ACC_BLOCK", 2)
    parts = step_parts(X, y, W, b)
    R = parts[0]
    chunks = R._chunks
    assert chunks is not None and len(chunks) == -(-n // rc)
    ref = [[int(f * Fraction(2) ** -R._q0) for f in want["R"][i * k:(i + 1) * k]] for i in range(n)]
    seen = set()
    for r0, r1, pl, used in chunks:
        assert pl.dtype == np.float32 and pl.shape == (used, k, r1 - r0) and pl.flags.c_contiguous
        seen.add(used)
        for i in range(r0, r1):
            for c in range(k):
                assert [int(v) for v in pl[:, c, i - r0].tolist()] == _twos_digits(ref[i][c], used)
    if rc >= 2:
        assert len(seen) >= 2  # (chunks of different plane counts next to each other)
    assert MASK in {int(v) for _, _, pl, _ in chunks for v in pl.ravel().tolist()}
    copy = pickle.loads(pickle.dumps(R))  # from the float32 chunks, before they are read
    assert copy._chunks is not None and all(pl.dtype == np.float32 for _, _, pl, _ in copy._chunks)
    _agrees(parts, want)
    _agrees((copy, *parts[1:]), want)
    again = pickle.loads(pickle.dumps(R))  # after they were read: the digits over whole columns
    _agrees((again, *parts[1:]), want)
    assert _ints_over(again) == [v for row in ref for v in row]


def test_residuals_read_after_other_checks_reused_the_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    # five checks of the same shapes in one thread (the same scratch buffer, each chunk written over the last), their
    # residuals read only after all ran, and after a sixth check that raised half-way (a NaN in its last rows): each
    # still its own data's; no chunk's planes share memory with the thread's buffer
    monkeypatch.setattr(fastexact, "ROW_CHUNK", 3)
    monkeypatch.setattr(fastexact, "ACC_BLOCK", 2)
    n, d, k = 20, 2, 2
    cases = [_chunked_case(n, d, k, seed, mode, 40) for seed, mode in
             enumerate(["random", "fold", "negative-fold", "all-negative", "ulp"])]
    results = [step_parts(*c) for c in cases]
    buf = fastexact.scratch("rplanes-rows", (1,))
    bad_y = cases[0][1].copy()
    bad_y[-1, 0] = np.nan
    with pytest.raises(ValueError):
        step_parts(cases[0][0], bad_y, cases[0][2], cases[0][3])
    for parts in results:
        assert parts[0]._chunks is not None
        assert not any(np.shares_memory(pl, buf) for _, _, pl, _ in parts[0]._chunks)
    for c, parts in zip(cases, results, strict=True):
        _agrees(parts, _reference(*c))
    # and a check after the failed one
    _agrees(step_parts(*cases[1]), _reference(*cases[1]))


def test_kernel_given_a_buffer_of_garbage_returns_what_a_fresh_buffer_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    # the buffer's previous contents (NaN, infinities, huge values, a previous chunk's folded digit) change nothing:
    # the thread's buffer filled with garbage before each of several checks gives the same parts as a first run
    monkeypatch.setattr(fastexact, "ROW_CHUNK", 4)
    n, d, k = 13, 1, 2
    for seed, mode in enumerate(["random", "negative-fold", "cancel"]):
        case = _chunked_case(n, d, k, seed, mode, 30)
        want = _reference(*case)
        for fill in (np.nan, np.inf, -2.0**60, float(-(1 << B))):
            fastexact.scratch("rplanes-rows", (64, k, fastexact.ROW_CHUNK))[...] = fill
            _agrees(step_parts(*case), want)


def _in_two_threads(work: Callable[[int], None]) -> None:
    """``work(0)`` and ``work(1)`` in two threads at once; what either raised, raised here (an AssertionError naming
    them)."""
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            work(t)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors


def test_two_threads_stepping_several_cases_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # each thread its own buffer: two threads step four cases each at the same time (residuals kept unread), then
    # read them all (the float32 chunks put together while the other thread builds its own): each equals the
    # reference of its data
    monkeypatch.setattr(fastexact, "ROW_CHUNK", 5)
    monkeypatch.setattr(fastexact, "ACC_BLOCK", 2)
    n, d, k = 23, 2, 2
    cases = {t: [_chunked_case(n, d, k, 100 * t + s, mode, 50) for s, mode in
                 enumerate(["random", "fold", "all-negative", "negative-fold"])] for t in (0, 1)}
    wants = {t: [_reference(*c) for c in cases[t]] for t in (0, 1)}
    got: dict[int, list[Any]] = {}
    barrier = threading.Barrier(2, timeout=120)  # (a thread that raised never hangs the other)

    def work(t: int) -> None:
        barrier.wait()
        got[t] = [step_parts(*c) for c in cases[t] * 3]
        barrier.wait()
        for parts, want in zip(got[t], wants[t] * 3, strict=True):
            _agrees(parts, want)

    _in_two_threads(work)
    assert len(got[0]) == len(got[1]) == 12


@pytest.mark.parametrize("chunks", [1, 2, 3, 4, 5])  # ACC_BLOCK = 4: one int64 block, one and two Python-int blocks
@pytest.mark.parametrize("extra", [-1, 0])
def test_chunk_counts_around_the_int64_block(monkeypatch: pytest.MonkeyPatch, chunks: int, extra: int) -> None:
    # N around multiples of the chunk (a last chunk of fewer rows), K = 1 and K = 2, rows of very different scales
    # (chunks of different plane counts), a pickled copy from the chunks
    rc = 3
    monkeypatch.setattr(fastexact, "ROW_CHUNK", rc)
    monkeypatch.setattr(fastexact, "ACC_BLOCK", 4)
    n = max(1, chunks * rc + extra)
    for k, mode in ((1, "random"), (2, "negative-fold"), (2, "all-negative")):
        case = _chunked_case(n, 2, k, 7 * chunks + k, mode, 60)
        want = _reference(*case)
        parts = step_parts(*case)
        assert parts[0]._chunks is not None and len(parts[0]._chunks) == -(-n // rc)
        copy = pickle.loads(pickle.dumps(parts[0]))
        _agrees(parts, want)
        _agrees((copy, *parts[1:]), want)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_narrow_formats_and_a_nan_elsewhere(monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    # data rounded to a narrow format (widened to float64, as the checks do), over several chunks; the residual of a
    # first check still right after a second one raised on an infinity in W
    monkeypatch.setattr(fastexact, "ROW_CHUNK", 4)
    rng = np.random.default_rng(5)
    n, d, k = 17, 3, 2
    X, y, W, b = (rng.standard_normal(s).astype(dtype).astype(np.float64) for s in ((n, d), (n, k), (d, k), (k,)))
    parts = step_parts(X, y, W, b)
    W2 = W.copy()
    W2[0, 0] = np.inf
    with pytest.raises(ValueError):
        step_parts(X, y, W2, b)
    _agrees(parts, _reference(X, y, W, b))


def test_too_wide_rows_name_the_same_products_as_whole_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    # X W fits but X^T R does not (a residual spread over many planes in one chunk only): the row chunks raise
    # TooWideError naming the same S x U as the product over whole columns; a later check in the thread is right
    monkeypatch.setattr(fastexact, "ROW_CHUNK", 2)
    n = 7
    X = np.ones((n, 1))
    X[0, 0] = 2.0**-60  # X's digits: S = 3
    W, b = np.ones((1, 1)), np.zeros(1)
    y = np.zeros((n, 1))
    y[3, 0] = 2.0**40  # row 3 (chunk 1 of 4): R = 1 - 2**40 over 2**-60, U = 6 planes; 3 x 6 > 10 >= the plan's planes
    monkeypatch.setattr(fastexact, "MAX_PRODUCTS", 10)
    with pytest.raises(TooWideError) as by_rows:
        step_parts(X, y, W, b)
    with monkeypatch.context() as m:
        m.setattr(fastexact, "_step_by_rows", lambda *a: None)
        with pytest.raises(TooWideError) as whole:
            step_parts(X, y, W, b)
    assert str(by_rows.value) == str(whole.value) == "X^T R needs 3 x 6 digit products"
    monkeypatch.setattr(fastexact, "MAX_PRODUCTS", 400)
    case = _chunked_case(n, 1, 1, 3, "negative-fold", 0)
    _agrees(step_parts(*case), _reference(*case))


def _parts_key(parts: Any) -> tuple[Any, ...]:
    R, gw, gb, loss, _ = parts
    return (np.asarray(R._planes()).tobytes(), np.asarray(R.to_float64()).tobytes(), R._q0,
            [int(v) for v in np.asarray(gw.ints).ravel()], [int(v) for v in np.asarray(gb.ints).ravel()],
            [int(v) for v in np.asarray(loss.ints).ravel()], gw.scale, gb.scale, loss.scale)


def test_two_threads_over_full_size_chunks_get_the_one_threads_results() -> None:
    # chunks of ROW_CHUNK rows (the kernels long enough, without the GIL, for two threads' chunks to overlap): two
    # threads stepping different data, eight times each, get what one thread got, digit by digit
    n, d, k = 6 * fastexact.ROW_CHUNK + 17, 2, 2
    cases = [_chunked_case(n, d, k, 900 + t, mode, 40) for t, mode in enumerate(["random", "all-negative"])]
    want = [_parts_key(step_parts(*c)) for c in cases]
    got: dict[int, list[Any]] = {0: [], 1: []}
    barrier = threading.Barrier(2, timeout=120)  # (a thread that raised never hangs the other)

    def work(t: int) -> None:
        barrier.wait()
        got[t] = [step_parts(*cases[t]) for _ in range(8)]

    _in_two_threads(work)
    for t in (0, 1):
        assert len(got[t]) == 8 and all(_parts_key(p) == want[t] for p in got[t])
