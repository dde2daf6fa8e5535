"""Exact linear-regression step at BLAS speed: error-free integer slicing.

Every float input is an integer times a power of two. Each array is written
over one common power of two ``2**q`` (``q`` the lowest last-significand-bit
exponent among its nonzero entries) as an integer array, split into signed
*digits* (slices) of ``B`` bits: ``A = 2**q * sum_s A_s 2**(B s)``,
``|A_s| < 2**B``. A product of digit arrays is computed by float64 BLAS and
is **exact**: every partial sum is an integer of magnitude at most
``L * 2**(Ba + Bb) <= 2**53`` (``L`` the contraction length per chunk; the
contraction axis is cut into chunks small enough), so no summation order,
blocking or FMA can round. Chunk results are gathered in int64 (at most
1024 terms of ``< 2**53``), then digit positions are combined by carry
propagation in int64 (N x K arrays) or in Python integers (the few D x K
results). This is the integer variant of the error-free transformation of
matrix products of Ozaki, Ogita, Oishi and Rump (Numer. Algorithms 59, 2012),
with the splitting taken to the full width, so the result is exact, not
merely accurate.

- ``R = X W + 1 b^T - Y`` exact, as base-``2**21`` digits (``K x N`` planes
  of ``R^T``, integers held in float64 for the ``X^T R`` product; two's
  complement: nonnegative digits and a top digit 0 or -1), over the scale
  ``2**q0``, computed column by column over contiguous memory, with its
  correctly rounded float64 value (round half to even, subnormals and
  overflow included, int64 operations only); its exact integers are built
  only when asked for.
- ``grad_W = 2c X^T R``, ``grad_b = 2c 1^T R``, ``loss = c sum R^2`` exact,
  then ``W' = W - lr grad_W`` and ``b' = b - lr grad_b`` in exact rationals.

The integer work runs in compiled one-pass kernels (:mod:`harness.slicekernels`, numba, imported
on first use); the two products stay in float64 BLAS. Large intermediates live in per-thread
scratch buffers (:func:`scratch`) reused across calls. The exact step (without the accurate
``X^T R``) runs over chunks of :data:`ROW_CHUNK` rows (:func:`_step_by_rows`): each chunk's digits
of X, ``X W`` positions, residual digits and ``X^T R`` products follow one another while they are
in the cache, instead of each pass running over all N rows (14-18% off the oracle at
N*D*K = 10^6 and 10^7 with mixed float64 data, one thread).

The result is the same rational as the reference path
(:mod:`harness.oracle`'s exact-rational evaluation); ``tests/test_fastexact.py``
checks that bit for bit on random, integer, huge, tiny, subnormal,
cancelling and mixed-magnitude data in every dtype. When the exponent range
of the data would need too many digits (:data:`MAX_PRODUCTS`), the caller
falls back to the reference path.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from .exact import ScaledInts
from .shapes import check_step_shapes

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

METHOD = "exact-integer-slices"
#: Digit width of the residual and of the first product's operands (21 + 21 + log2(2048) = 53).
B = 21
#: Contraction chunk lengths keeping every partial sum of digit products within 2**53
#: (digits of X, W and R all below 2**B in magnitude, the top ones of X and W at most 2**B).
CHUNK_D = 1 << (53 - 2 * B)
CHUNK_N = 1 << (53 - 2 * B)
#: Columns of X from which :func:`_first_product` multiplies W's digits by each digit plane of X apart (fewer
#: multiply-adds, no zero blocks) rather than by all of them at once: measured on this project's AMD EPYC VM (one
#: thread, N*D = 250,000, 5 x 3 digit planes), the planes apart took 0.55-0.93 of the time from D = 8 on and
#: 1.08-5.5 times it below (an inner dimension of a few columns is slow in BLAS).
PER_PLANE_MIN_D = 8
#: Chunk results (each below 2**53) summed in int64 at a time: 1024 of them stay below 2**63.
ACC_BLOCK = 1024
#: Give up (fall back to the reference path) past this many digit-pair products of either kind.
MAX_PRODUCTS = 400
_MASK = (1 << B) - 1


#: Scratch buffers above this many bytes are not kept between calls.
SCRATCH_MAX_BYTES = 256 << 20
_SCRATCH = threading.local()


def scratch(name: str, shape: tuple[int, ...], dtype: Any = np.float64) -> npt.NDArray[Any]:
    """A work array of ``shape`` reused across calls in this thread (contents undefined): large
    intermediates (X's digits, the digit products, the residual's digit planes) would otherwise be fresh
    memory on every call, each page faulted in anew (about a fifth of the oracle's time at N*D*K = 10^6).
    Only for arrays that do not outlive the call that asks for them."""
    size = math.prod(shape)
    pool: dict[str, npt.NDArray[Any]] = _SCRATCH.__dict__
    buf = pool.get(name)
    if buf is None or buf.size < size or buf.dtype != dtype:
        buf = np.empty(size, dtype=dtype)
        if buf.nbytes <= SCRATCH_MAX_BYTES:
            pool[name] = buf
    return buf[:size].reshape(shape)


class TooWideError(Exception):
    """The data's exponent range needs more digit products than :data:`MAX_PRODUCTS`."""


def lowest_exponent(x: F64) -> int | None:
    """Exponent of the lowest set bit among the nonzero entries (None if all are zero), from the bit pattern."""
    return float_range(x)[0]


def float_range(x: F64, name: str = "an input") -> tuple[int | None, float]:
    """(lowest set-bit exponent among the nonzero entries or None, largest magnitude) of a float array,
    one pass (:func:`harness.slicekernels.float_range`; numba is imported on first use, not with this module).

    Raises:
        ValueError: when ``x`` (``name`` in the message) holds a NaN or an infinity, which has no exact value
            (the kernel's largest magnitude is then inf or NaN: their bit patterns lie above every finite one)."""
    from .slicekernels import NO_BIT
    from .slicekernels import float_range as kernel

    low, top = kernel(np.ascontiguousarray(x, dtype=np.float64))
    if not math.isfinite(top):
        raise ValueError(f"{name} holds a NaN or an infinite value: it has no exact value")
    return (None if low == NO_BIT else int(low)), float(top)


def _plan_digits(x: F64, q: int, base: int, low: int | None, top: float) -> tuple[int, int, int]:
    """(``q1``, digits, zero digits below) for :func:`digits` of ``x`` over ``2**q``.

    Raises:
        ValueError: when ``q`` lies above ``low`` (``x / 2**q`` would not be an integer) or ``top`` is not finite."""
    if low is None or low < q:
        raise ValueError(f"digits over 2**{q}: the lowest set bit of x is 2**{low}, below it (x / 2**q is not an integer)")
    if not math.isfinite(top):
        raise ValueError("x holds a NaN or an infinite value: it has no exact value")
    s0 = (low - q) // base  # digits below s0 are zero: work over 2**(q + base s0)
    q1 = q + base * s0
    width = int(np.frexp(top)[1]) - q1  # |x / 2**q1| < 2**width
    if width > 1000:
        raise TooWideError(f"integer width {width} bits")
    return q1, max(1, -(-width // base)), s0


def digits_matrix(x: F64, q: int, low: int | None = None, top: float | None = None,
                  scratch_ok: bool = False) -> tuple[F64, int]:
    """Base-``2**B`` digits of the integers ``x / 2**q`` (2-D ``x``), plane-major and transposed:
    ``(out, S)`` with ``out`` float64 ``(S * cols, rows)``, digit ``s`` of ``x[i, j]`` at ``[s * cols + j, i]``
    (as :func:`digits`; one pass, :func:`harness.slicekernels.digits_cat`). ``scratch_ok``: ``out`` may be
    this thread's scratch buffer (:func:`scratch`), valid until the next call that uses it.

    Raises:
        TooWideError: when ``x / 2**q`` exceeds float64's range.
        ValueError: when ``x`` holds a NaN or an infinity (read from ``x`` unless ``low`` and ``top`` are given).
    """
    from .slicekernels import digits_cat

    x = np.ascontiguousarray(x, dtype=np.float64)
    if low is None or top is None:
        low, top = float_range(x)
    if top == 0.0:
        return np.zeros((x.shape[1], x.shape[0])), 1
    q1, n, s0 = _plan_digits(x, q, B, low, top)
    shape = ((s0 + n) * x.shape[1], x.shape[0])
    return digits_cat(x, q1, n, s0, scratch("xcat", shape) if scratch_ok else np.empty(shape)), s0 + n


def digits(x: F64, q: int, base: int = B, low: int | None = None) -> F64:
    """Base-``2**base`` digits of the integers ``x / 2**q`` (exact; ``q`` at most :func:`lowest_exponent`),
    as float64 arrays: each digit is a field of bits of a significand (:func:`digits_matrix`).

    Returns:
        float64 array ``(S, *x.shape)`` with ``x = 2**q sum_s out[s] 2**(base s)``, integer digits
        of the sign of ``x``, ``|out[s]| < 2**base`` below the top one, ``|out[S-1]| <= 2**base``.

    Raises:
        TooWideError: when ``x / 2**q`` exceeds float64's range (the data needs too many digits anyway).
        ValueError: when ``x`` holds a NaN or an infinity.
    """
    x = np.asarray(x, dtype=np.float64)
    if base != B:
        raise ValueError(f"digits are {B} bits wide")
    if x.size == 0:  # no element: one plane of no digits (a reshape to (-1, 0) has no size to infer)
        return np.zeros((1, *x.shape))
    x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]) if x.ndim >= 1 else x.reshape(1, 1))
    lo, top = float_range(x2)
    out, S = digits_matrix(x2, q, lo if low is None else low, top)
    rows, cols = x2.shape
    return out.reshape(S, cols, rows).transpose(0, 2, 1).reshape((S, *x.shape))


#: :func:`carry` takes int64 values below this magnitude: a carry is below ``2**(63 - B)``, so that a value plus
#: the carry into it stays within int64.
CARRY_LIMIT = (1 << 63) - (1 << (63 - B))


def carry(d: I64) -> I64:
    """Normalise signed digits (int64 values of magnitude below :data:`CARRY_LIMIT`) to two's complement base
    ``2**B``: digits ``0 <= d < 2**B`` below a top digit that is 0 or -1 (planes appended as needed).

    Raises:
        ValueError: for a value at or beyond :data:`CARRY_LIMIT` in magnitude (its carry would overflow int64)."""
    if d.size and bool(((d >= CARRY_LIMIT) | (d <= -CARRY_LIMIT)).any()):
        raise ValueError(f"carry: a digit at or beyond 2**63 - 2**{63 - B} in magnitude would overflow int64")
    planes = list(d)
    out: list[I64] = []
    c = np.zeros_like(planes[0])
    u = 0
    while True:
        v = c + planes[u] if u < len(planes) else c
        if u >= len(planes) and bool(np.all((v == 0) | (v == -1))):
            out.append(v)
            break
        out.append(v & _MASK)
        c = v >> B
        u += 1
    return np.stack(out)


def _obj(a: I64) -> npt.NDArray[Any]:
    """An object array of Python ints with the values of the int64 array ``a`` (any shape, empty included)."""
    out = np.empty(a.shape, dtype=object)
    if a.size:
        out[...] = a.tolist() if a.ndim else int(a)
    return out


class DigitResidual(ScaledInts):
    """The exact residual as two's complement base-``2**B`` digits over ``2**q0`` (a :class:`ScaledInts`
    whose integer array is built only when read).

    Args:
        d: ``(U, N, K)`` digits (int64 or float64 holding integers; any strides: the planes of ``R^T``
            transposed are a view): ``[0, 2**B)`` below the top one, which is 0 or -1.
        q0: the scale's exponent.
    """

    __slots__ = ("_chunks", "_digit_array", "_f64", "_ints", "_q0", "_shape")

    def __init__(self, d: npt.NDArray[Any], q0: int) -> None:  # noqa: D107 - see class
        self._digit_array: npt.NDArray[Any] | None = d
        self._chunks: list[tuple[int, int, F32, int]] | None = None
        self._shape: tuple[int, ...] = tuple(d.shape[1:])
        self._q0 = q0
        self._ints: npt.NDArray[Any] | None = None
        self._f64: F64 | None = None

    @classmethod
    def from_row_chunks(cls, chunks: list[tuple[int, int, F32, int]], n: int, k: int, q0: int) -> DigitResidual:
        """The residual of :func:`_step_by_rows`, from its row chunks ``(r0, r1, planes, used)``: rows ``r0 .. r1 - 1``
        as :func:`harness.slicekernels.residual_digits` gave them (``planes`` float32 ``(P, K, r1 - r0)``, the sign in
        plane ``used - 1``). The digits over the common number of planes are put together only when read (a check reads
        the rounded values alone)."""
        out = cls(np.zeros((1, 0, 0)), q0)
        out._digit_array = None
        out._chunks = chunks
        out._shape = (n, k)
        return out

    def _planes(self) -> npt.NDArray[Any]:
        """The digits ``(U, N, K)`` (built from the row chunks on first use: below a chunk's sign plane its digits,
        from there up to plane ``U - 2`` its sign's extension, ``2**B - 1`` or 0, and its sign in plane ``U - 1``)."""
        dg = self._digit_array
        if dg is None:
            with _PLANES_LOCK:  # one thread builds them (another that waited finds them built)
                dg = self._digit_array
                if dg is None:
                    assert self._chunks is not None
                    chunks, n, k = self._chunks, *self._shape
                    u_all = max(used for _, _, _, used in chunks)
                    full = np.empty((u_all, k, n))
                    for r0, r1, pl, used in chunks:
                        sign = pl[used - 1]
                        full[:used - 1, :, r0:r1] = pl[:used - 1]
                        full[used - 1:u_all - 1, :, r0:r1] = (sign != 0) * float(_MASK)  # (+0.0 for a sign 0, as the kernel writes)
                        full[u_all - 1, :, r0:r1] = sign
                    dg = np.transpose(full, (0, 2, 1))
                    self._digit_array = dg
                    self._chunks = None
        return dg

    @property
    def _digits(self) -> npt.NDArray[Any]:
        return self._planes()

    @property
    def ints(self) -> npt.NDArray[Any]:
        if self._ints is None:
            dg = self._planes()
            acc = np.zeros(dg.shape[1:], dtype=object)
            for u in range(len(dg) - 1, -1, -1):
                acc = acc * (1 << B) + _obj(dg[u].astype(np.int64))
            self._ints = acc
        return self._ints

    @ints.setter
    def ints(self, value: npt.NDArray[Any]) -> None:
        self._ints = value

    @property
    def scale(self) -> Fraction:
        return Fraction(2) ** self._q0

    @scale.setter
    def scale(self, value: Fraction) -> None:  # copy and pickle set every slot back
        if Fraction(value) != Fraction(2) ** self._q0:
            raise AttributeError("the scale of a DigitResidual is fixed")

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    def to_float64(self) -> F64:
        """Nearest float64 to each value (ties to even, subnormals, ``±inf`` beyond range), int64 arithmetic only.

        Computed once per object (a check reads it for the bounds and for the grading); the
        array returned is read-only."""
        if self._f64 is None:
            out = self._round()
            out.flags.writeable = False
            self._f64 = out
        return self._f64

    def _round(self) -> F64:
        dg = self._planes()
        d = np.ascontiguousarray(dg.reshape(len(dg), -1), dtype=np.int64)
        from .slicekernels import round_digits

        return round_digits(d, self._q0).reshape(dg.shape[1:])

    def to_hi_lo(self) -> tuple[F64, F64]:
        return ScaledInts(self.ints, self.scale).to_hi_lo()

    @property
    def T(self) -> ScaledInts:  # noqa: N802
        return ScaledInts(self.ints.T, self.scale)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle and copy the digits (not the Python integers, rebuilt when read) and the rounded values,
        which stay read-only in the copy."""
        chunks = self._chunks  # (read once, as in _planes)
        if self._digit_array is None and chunks is not None:
            # from row chunks: each chunk's planes up to its sign, as they are (the whole residual's digits are not
            # put together for a copy: at N = 10^7 that peaked above the digits over whole columns)
            return (_restore_row_chunks, ([(r0, r1, pl[:used], used) for r0, r1, pl, used in chunks], self._shape,
                                          self._q0, self._f64))
        return (_restore_digit_residual, (self._planes(), self._q0, self._f64))


def _restore_row_chunks(chunks: list[tuple[int, int, F32, int]], shape: tuple[int, int], q0: int, f64: F64 | None
                        ) -> DigitResidual:
    out = DigitResidual.from_row_chunks(chunks, *shape, q0)
    if f64 is not None:
        f64 = np.array(f64, dtype=np.float64)
        f64.flags.writeable = False
        out._f64 = f64
    return out


def _restore_digit_residual(digits: npt.NDArray[Any], q0: int, f64: F64 | None) -> DigitResidual:
    out = DigitResidual(digits, q0)
    if f64 is not None:
        f64 = np.array(f64, dtype=np.float64)
        f64.flags.writeable = False
        out._f64 = f64
    return out


def _first_product(xt: F64, S: int, W: F64, qw: int) -> F64:
    """Digit positions of the integer ``((X / 2**qx) @ (W / 2**qw))^T``, exact, as float64 ``(U1, K, N)``:
    position ``u`` holds ``sum_{s+t=u} X_s W_t``, integers below ``2**53`` in magnitude.

    ``xt``: X's digits, plane-major and transposed, ``(S*D, N)`` (:func:`digits_matrix`). From
    :data:`PER_PLANE_MIN_D` columns on, for each position ``u`` one matmul of the digits ``W_{u-s}^T`` that meet
    there, side by side (:func:`_xw_blocks`), against X's digit planes ``s`` (contiguous rows of ``xt``), written
    into position ``u``: ``S*T*K*D*N`` multiply-adds, none of them of a zero block (0.09 against 0.12 ms per chunk
    of 2,048 rows, D = 16, K = 4, 5 x 3 digits, for one matmul per digit of X added into its T positions, in place
    by SciPy's dgemm, which this no longer needs). Below it (a contraction
    of a few columns, which BLAS runs slowly), one matmul of W's digits stacked so that row block ``u`` holds
    ``W_{u-s}^T`` in column block ``s`` (zero blocks included) against all of ``xt``. Position ``u`` sums at most
    ``min(S, T) * D <= S*D`` products, each at most ``2**(2B)``, so while ``S*D`` is at most :data:`CHUNK_D`
    every partial sum stays within ``2**53`` and is exact in any order, either way; longer contractions are cut
    into chunks of ``D`` whose int64 sums are carried to digits below ``2**B``."""
    return _xw_positions(xt, S, digits(W, qw, B, qw))


def _xw_blocks(S: int, wd: F64) -> list[tuple[F64, int, int]]:
    """For each digit position ``u`` of ``X W`` (``U1 = S + T - 1`` of them), W's digits that meet X's there, side by
    side: ``(Wu, r0, r1)`` with ``Wu`` float64 ``(K, r1 - r0)`` holding ``W_{u-s}^T`` in column block ``s - s_lo``
    for X's digits ``s = s_lo .. s_hi`` (those with ``0 <= u - s < T``), ``r0 = s_lo D`` and ``r1 = (s_hi + 1) D``:
    the rows of X's digits, plane-major and transposed (``(S*D, N)``), that it multiplies. ``wd``: W's digits
    ``(T, D, K)``."""
    T, d, k = wd.shape
    out = []
    for u in range(S + T - 1):
        lo, hi = max(0, u - T + 1), min(S - 1, u)
        ws = wd[u - hi:u - lo + 1][::-1]  # W_{u-s} for s = lo .. hi
        out.append((np.ascontiguousarray(np.transpose(ws, (2, 0, 1)).reshape(k, (hi - lo + 1) * d)), lo * d,
                    (hi + 1) * d))
    return out


def _xw_positions(xt: F64, S: int, wd: F64, blocks: list[tuple[F64, int, int]] | None = None) -> F64:
    """:func:`_first_product` from W's digits ``wd`` (``(T, D, K)``, :func:`digits` over ``2**qw``); ``blocks``:
    :func:`_xw_blocks` of these ``S`` and ``wd`` where the caller formed them (once for many row chunks), or None."""
    sd, n = xt.shape
    _, d, k = wd.shape
    T = len(wd)
    if S * T > MAX_PRODUCTS:
        raise TooWideError(f"X W needs {S} x {T} digit products")
    U = S + T - 1
    if sd <= CHUNK_D:
        out = scratch("xw", (U, k, n))
        if d < PER_PLANE_MIN_D:
            wbig = np.zeros((U, k, S, d))
            for s_ in range(S):
                wbig[s_:s_ + T, :, s_, :] = np.transpose(wd, (0, 2, 1))
            return np.matmul(wbig.reshape(U * k, S * d), xt, out=out.reshape(U * k, n)).reshape(U, k, n)
        # position u: W's digits that meet X's there, side by side, times X's digits s_lo .. s_hi (contiguous rows of
        # xt), written in place: one product per position, none of a zero block (exact, as above: every partial sum an
        # integer, of at most min(S, T) * D products of at most 2**(2B))
        for u, (wu, r0, r1) in enumerate(blocks if blocks is not None else _xw_blocks(S, wd)):
            np.matmul(wu, xt[r0:r1], out=out[u])
        return out
    wc = np.ascontiguousarray(np.transpose(wd, (0, 2, 1)).reshape(T * k, d))  # row t*K + j: W_t[:, j]
    x3 = xt.reshape(S, d, n)
    if -(-d // CHUNK_D) * min(S, T) >= 1024:
        raise TooWideError("too many chunk terms for int64 accumulation")
    acc = np.zeros((U, k, n), dtype=np.int64)
    for c0 in range(0, d, CHUNK_D):
        for s_ in range(S):
            P = wc[:, c0:c0 + CHUNK_D] @ x3[s_, c0:c0 + CHUNK_D]  # exact: |sum| <= CHUNK_D * 2**(2B) = 2**53
            acc[s_:s_ + T] += P.reshape(T, k, n).astype(np.int64)
    return carry(acc).astype(np.float64)  # digits below 2**B


def residual_digits(X: F64, y: F64, W: F64, b: F64) -> tuple[I64, int, F64]:
    """Exact ``R = X W + 1 b^T - y`` as two's complement base-``2**B`` digits ``(U, N, K)`` over ``2**q0``
    (digits ``[0, 2**B)``, the top one 0 or -1), and its correctly rounded float64 value: ``(digits, q0, rounded)``.

    Raises:
        ValueError: when an input holds a NaN or an infinity, or the shapes do not agree (:func:`harness.shapes.check_step_shapes`;
            the message names the input).
        TooWideError: when the exponent range needs more than :data:`MAX_PRODUCTS` digit products."""
    check_step_shapes(X, y, W, b)
    X = np.ascontiguousarray(X, dtype=np.float64)
    qx, tx = float_range(X, "X")
    res = _residual(X, y, W, b, qx, tx, None if qx is None else digits_matrix(X, qx, qx, tx))
    return np.ascontiguousarray(np.transpose(res.planes, (0, 2, 1)), dtype=np.int64), res.q0, res.rounded


def _span(low: int | None, top: float) -> tuple[int, int]:
    """(lowest set-bit exponent, top bit's exponent) of an array's :func:`float_range`, as the residual kernel reads it."""
    from .slicekernels import NO_BIT

    return (NO_BIT, 0) if low is None else (low, int(np.frexp(top)[1]) - 1)


def _residual_plan(d: int, q0: int, xr: tuple[int | None, float], wr: tuple[int | None, float],
                   yr: tuple[int | None, float], br: tuple[int | None, float], u1: int | None) -> tuple[int, int]:
    """``(sh, n_alloc)`` of :func:`harness.slicekernels.residual_digits` over ``2**q0``, from the
    :func:`float_range` of X, W, y and b and ``u1``, the digit positions of ``X W`` (None without ``X W``).

    Raises:
        TooWideError: when the residual needs more than :data:`MAX_PRODUCTS` planes."""
    (qx, tx), (qw, tw) = xr, wr
    bits = 0  # bits of every value over 2**q0, a bound
    if u1 is not None:
        assert qx is not None and qw is not None
        sh = qx + qw - q0
        # |X W| < 2**top_xw (d products, each below 2**(top_x + top_w)): once its U1 positions are carried, the
        # carry is the sign (0 or -1) after xw_planes planes, often fewer than the U1 + 3 that the positions'
        # sizes alone guarantee
        top_xw = int(np.frexp(tx)[1]) + int(np.frexp(tw)[1]) + (d - 1).bit_length()
        xw_planes = min(u1 + 3, max(u1, -(-(top_xw - qx - qw + 1) // B)))
        bits = top_xw - q0
    else:
        sh = 0
        xw_planes = 0
    for low, top in (yr, br):
        if low is not None:
            bits = max(bits, int(np.frexp(top)[1]) - q0)
    # |R| < 3 * 2**bits: R and a sign digit fit in n_alloc planes; so do X W and its sign (xw_planes planes), and the
    # kernel's planes sh // B .. sh // B + U1 that take X W's positions (U1 <= xw_planes)
    n_alloc = max(-(-(bits + 4) // B) + 1, sh // B + xw_planes + 1)
    if n_alloc > MAX_PRODUCTS:
        raise TooWideError("residual too wide")
    return sh, n_alloc


@dataclass
class _Residual:
    planes: F64  # (U, K, N): the digits of R^T, float64 integers (the top plane the sign, 0 or -1)
    q0: int
    rounded: F64  # (N, K), read-only
    colsum: list[int]  # 1^T R over 2**q0, per column
    sumsq: int  # sum R^2 over 2**(2 q0)


def _residual(X: F64, y: F64, W: F64, b: F64, qx: int | None, tx: float, xcat: tuple[F64, int] | None) -> _Residual:
    n, k = y.shape
    y = np.ascontiguousarray(y, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64).reshape(k)
    W = np.ascontiguousarray(W, dtype=np.float64)
    from .slicekernels import residual_digits as residual_kernel

    (qy, ty), (qb, tb), (qw, tw) = float_range(y, "y"), float_range(b, "b"), float_range(W, "W")
    xw = qx is not None and qw is not None
    qs = [q for q in ((qx + qw) if xw else None, qy, qb) if q is not None]  # type: ignore[operator]
    if not qs:
        z = np.zeros((n, k))
        z.flags.writeable = False
        return _Residual(np.zeros((1, k, n)), 0, z, [0] * k, 0)
    q0 = min(qs)
    if xw:
        assert qx is not None and qw is not None
        xc, S = digits_matrix(X, qx) if xcat is None else xcat
        P = _first_product(xc, S, W, qw)  # (U1, K, N)
    else:
        P = np.zeros((0, k, n))
    sh, n_alloc = _residual_plan(X.shape[1], q0, (qx, tx), (qw, tw), (qy, ty), (qb, tb), P.shape[0] if xw else None)
    yt = np.ascontiguousarray(y.T)
    planes, colsum, gram, rbits, U = residual_kernel(P, sh, yt, _span(qy, ty), b, _span(qb, tb), q0,
                                                     np.empty((n_alloc, k, n)))
    cs, total = _residual_sums(colsum, gram, n_alloc)
    # U planes: the digits below U - 1, then the sign (the kernel wrote it there)
    rounded = np.ascontiguousarray(rbits.view(np.float64).T)
    rounded.flags.writeable = False
    return _Residual(planes[:U], q0, rounded, cs, total)


def _residual_sums(colsum: I64, gram: I64, n_alloc: int) -> tuple[list[int], int]:
    """``(1^T R, sum R^2)`` over ``2**q0`` (per column, and ``2**(2 q0)``) as Python ints, from the residual kernel's
    column sums ``(n_alloc + 1, K)`` and Gram blocks ``(blocks, n_alloc + 1, n_alloc + 1)``
    (:func:`harness.slicekernels.residual_digits`)."""
    # sums over the n_alloc digit planes and the sign plane (weight 2**(B n_alloc))
    cs = list(position_sum(colsum[:, :, None, None], 0)[:, 0])
    # sum R^2 = sum_{u <= v} (2 - [u = v]) gram[u, v] 2**(B (u + v)) (off the diagonal each entry sums at most
    # GRAM_BLOCK products of at most (2**B - 1) 2**B, below 2**62: doubled below 2**63; the diagonal, up to 2**62 (the
    # top digit folded with the sign, -2**B, squared), is not doubled: its doubled copy in g2 wraps and is overwritten)
    g2 = gram * 2  # the kernel writes u <= v only: the strict upper triangle doubled, the diagonal once
    diag = np.arange(n_alloc + 1)
    g2[:, diag, diag] = gram[:, diag, diag]
    total = int(position_sum(np.ascontiguousarray(g2.transpose(1, 0, 2))[:, :, :, None], 0).sum())
    return cs, total


def _combine(planes: I64, weights: list[int]) -> npt.NDArray[Any]:
    """``sum_i planes[i] * 2**weights[i]`` as an object array of Python ints."""
    acc: Any = None
    for pl, w in zip(planes, weights, strict=True):
        term = _obj(pl) * (1 << w)
        acc = term if acc is None else acc + term
    return acc


def position_sum(p4: I64, w0: int) -> npt.NDArray[Any]:
    """``sum_{s,u} p4[s, :, u, :] 2**(B (w0 + s + u))`` as Python ints (object ``(D, K)``), from int64 ``p4``
    ``(S, D, U, K)`` of any values: the sums by digit position and their carries in int64, as two's complement
    words (:func:`harness.slicekernels.position_words`), each value read from its bytes."""
    from .slicekernels import position_words

    _, d, _, k = p4.shape
    words = position_words(np.ascontiguousarray(p4, dtype=np.int64))
    buf = words.tobytes()
    step = words.shape[1] * 8
    sh = B * w0
    out = np.empty(d * k, dtype=object)
    out[:] = [int.from_bytes(buf[i:i + step], "little", signed=True) << sh for i in range(0, len(buf), step)]
    return out.reshape(d, k)


def plus_floats(ints: npt.NDArray[Any], q: int, floats: tuple[F64, ...]) -> ScaledInts:
    """``ints 2**q + sum(floats)`` exactly, in one pass over the elements in Python integers (the value of
    ``ScaledInts(ints, 2**q) + ScaledInts.from_floats(f) + ...``, over the same scale: the least of ``2**q`` and of
    each array's scale, the lowest ``2**(e - 53)`` of a nonzero float ``m 2**e`` (``m`` its significand in
    ``[1/2, 1)``), or 1 for an all-zero array).

    Args:
        ints: object array of Python ints; floats: finite float64 arrays of its shape.

    Raises:
        ValueError: for a NaN or an infinity in ``floats`` (no exact value).
    """
    parts = []
    low = q
    for f in floats:
        f = np.asarray(f, dtype=np.float64)
        if not np.isfinite(f).all():
            raise ValueError("plus_floats: a NaN or an infinite value has no exact value")
        mant, ex = np.frexp(f)
        m = np.ldexp(mant, 53).astype(np.int64)  # exact: f = m 2**(ex - 53)
        e = ex.astype(np.int64) - 53
        nz = m != 0
        low = min(low, int(e[nz].min()) if nz.any() else 0)  # (an all-zero array: scale 1, as from_floats)
        parts.append((m.ravel().tolist(), np.where(nz, e, 1 << 30).ravel().tolist()))
    vals = [int(v) << (q - low) for v in ints.ravel().tolist()]
    for ms, es in parts:
        vals = [v + (mm << (ee - low)) if mm else v for v, mm, ee in zip(vals, ms, es, strict=True)]
    out = np.empty(len(vals), dtype=object)
    out[:] = vals
    return ScaledInts(out.reshape(np.shape(ints)), Fraction(2) ** low)


def exact_parts(X: F64, y: F64, W: F64, b: F64) -> tuple[DigitResidual, ScaledInts, ScaledInts, ScaledInts]:
    """The exact residual, ``X^T R`` (D, K), ``1^T R`` (K,) and ``sum R^2`` (0-d): no scale factor ``c`` applied.

    Raises:
        ValueError: when an input holds a NaN or an infinity, or the shapes do not agree (:func:`harness.shapes.check_step_shapes`;
            the message names the input).
        TooWideError: when the exponent range needs more than :data:`MAX_PRODUCTS` digit products.
    """
    R, gw, gb, loss, _ = step_parts(X, y, W, b, accurate=False)
    return R, gw, gb, loss


#: The accurate variant's method (:func:`step_parts` with ``accurate=True``), as records name it.
ACCURATE_METHOD = ("ozaki-accurate integer slices; grad_W and W: |error| <= 2^-60 sum|terms| (radius subtracted "
                   "from the bounds); loss, grad_b, b exact")
#: The accurate variant's error bound: ``|X^T R - computed| <= 2**-ACCURATE_BITS sum_n |X[n, d] R[n, k]|`` per element.
ACCURATE_BITS = 60


@dataclass
class Truncation:
    """The split of the accurate ``X^T R`` (:func:`truncation`).

    Attributes:
        smin: X's digit planes ``s < smin`` form ``X_l`` (``|X_l| < 2**(qx + B smin)``, same sign as X),
            the others ``X_t``.
        umin: R's digit planes ``u < umin`` form ``R_l`` (``0 <= R_l < 2**(q0 + B umin)``), the others ``R_t``.
        remainder: float64 ``(D, K)``: ``fl(X^T fl(R_l)) + fl(fl(X_l)^T fl(R_t))``, the float64 value of the
            part of ``X^T R`` that the exact digit products of ``X_t^T R_t`` leave out (summed as rationals).
        radius: float64 ``(D, K)``, an upper bound of ``|X^T R - X_t^T R_t - remainder|`` (real units), at most
            ``2**-ACCURATE_BITS`` times a lower bound of ``sum_n |X[n, d] R[n, k]|``.
    """

    smin: int
    umin: int
    remainder: tuple[F64, F64]
    radius: F64


#: The most low digit planes of R that :func:`truncation` leaves to float64 (:func:`_plane_sum` scales their weights by
#: one power of two into float64's range: from 2**-1000, the top one below 2**(B (MAX_LOW_PLANES - 1) - 1000) = 2**869).
MAX_LOW_PLANES = 90
#: Slack factors covering the rounding of the few float64 operations of :func:`truncation` itself.
_UP = 1.0 + 2.0**-40
_DOWN = 1.0 - 2.0**-40


def _plane_sum(planes_: F64, planes: int, base_exp: int) -> F64:
    """``fl(sum_{p < planes} planes_[p] 2**(B p + base_exp))`` (``planes_`` ``(P, ...)``, contiguous, digits below
    ``2**B`` of one sign): each term exact (a digit times a power of two, scaled into the normal range), the
    sum of at most ``planes`` terms of one sign in float64 (relative error ``<= planes u``), then one scaling
    back (an absolute error ``<= 2**-1075`` where it underflows)."""
    from .slicekernels import weighted_plane_sum

    top = B * (planes - 1) + base_exp
    shift = max(0, -1000 - base_exp) if top < 900 else 0  # the scaled weights 2**(B p + base_exp + shift) stay normal
    weights = np.array([2.0 ** (B * p + base_exp + shift) for p in range(planes)])
    out = weighted_plane_sum(planes_.reshape(len(planes_), -1), weights).reshape(planes_.shape[1:])
    if shift:
        out *= 2.0**-shift
    return out


def _low_part(x: F64, h: int) -> F64:
    """``sign(x) (|x| mod 2**h)``, exact: the bits of ``x`` below ``2**h`` (``-960 <= h <= 960``), i.e. X's digit
    planes below ``2**h``. ``trunc(x 2**-h) 2**h`` clears them exactly (a scaling by a power of two, exact
    unless it underflows, and then below 1, where ``trunc`` gives 0 either way); the difference is exact."""
    from .slicekernels import low_part

    out = scratch("xlow", x.shape)  # reused: fresh pages would cost more than the arithmetic
    low_part(x, 2.0**-h, 2.0**h, out)
    return out


def truncation(X: F64, S: int, qx: int, rounded: F64, rplanes: F64, q0: int) -> Truncation | None:
    """The accurate ``X^T R`` of Ozaki, Ogita, Oishi and Rump (Numer. Algorithms 59, 2012): the high digit
    planes exactly, the low ones by one float64 product each, the whole within ``2**-ACCURATE_BITS`` of
    the sum of the absolute terms of each element. None when nothing can be left to float64 or the bound
    cannot be proved in float64 (non-finite sums, a tiny or zero sum of terms, underflow).

    With ``X = X_t + X_l`` (X's digit planes ``s >= smin`` and below; ``|X_l| < 2**h``, ``h = qx + B smin``)
    and ``R = R_t + R_l`` (``0 <= R_l < 2**g``, ``g = q0 + B umin``),
    ``X^T R = X_t^T R_t + X^T R_l + X_l^T R_t``: the first term exact (digit products, as the exact path),
    the other two in float64 from ``fl(R_l)`` (a sum of at most ``U`` exact planes: relative error
    ``<= 2**-48``), ``X_l`` (exact, :func:`_low_part`) and ``fl(R_t) = fl(fl(R) - fl(R_l))`` (``fl(R)`` the correctly rounded
    residual). Their error is at most ``f (2**g sum_n |X[n, d]| + 2**h (sum_n |R[n, k]| + N 2**g))`` plus
    absolute ``2**-1074`` terms for underflow, with ``f = 2**-45 + 2 gamma_N`` (``gamma_N = N u / (1 - N u)``,
    the forward error bound of a float64 dot product of length ``N`` in any order, Higham, Accuracy and
    Stability of Numerical Algorithms, 2nd ed., section 3.1). The sums are bounded above, and
    ``T = sum_n |X[n, d]| |R[n, k]|`` below, from float64 sums and one float64 product of ``|X|`` and
    ``|fl(R)|`` (``|R| <= |fl(R)| (1 + 2**-52) + 2**-1075``); the planes are chosen so that the bound is at
    most ``2**-60 T``, which is then checked element-wise.

    Args:
        X: float64 ``(N, D)``, ``S`` digit planes over ``2**qx`` (:func:`digits_matrix`);
        rounded: the correctly rounded residual ``(N, K)``; rplanes: the ``U`` digit planes of its transpose over
        ``2**q0`` (float64 integers ``(U, K, N)``, the top plane the sign).
    """
    n, d = X.shape
    k = rounded.shape[1]
    U = len(rplanes)
    if n >= 1 << 40:
        return None
    gam = (n + 4) * 2.0**-52  # >= 2 gamma_n for u = 2**-53 (n u < 1/2)
    f = 2.0**-45 + gam
    tiny = 2.0**-1074
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        ax = np.abs(X, out=scratch("absx", X.shape))
        ar = np.abs(rounded)
        ones = np.ones(n)
        col_x = (ones @ ax) * (1 + gam) * _UP  # >= sum_n |X[n, d]| (nonnegative terms: sums of subnormals are exact)
        col_r = ((ones @ ar) * (1 + gam) * (1 + 2.0**-52) + (n + 1) * tiny) * _UP  # >= sum_n |R[n, k]|
        t = ax.T @ ar  # fl(sum_n |X| |fl(R)|)
        t_lo = ((t - (n + 1) * 2.0 * tiny) / (1 + gam) * (1 - 2.0**-52) - (col_x[:, None] + 1) * tiny) * _DOWN
    if not (np.isfinite(col_x).all() and np.isfinite(col_r).all() and np.isfinite(t).all()):
        return None
    live = col_x > 0  # a zero column of X: that row of X^T R is exactly 0 (every term below is 0 there)
    if not live.any():
        return None
    tl = t_lo[live]
    if not bool((tl >= 2.0**-900).all()):
        return None  # a zero, tiny or unprovable sum of terms: no relative budget, exact instead (and no underflow below)
    budget = tl * 2.0**-(ACCURATE_BITS + 2)  # a quarter of the budget for each operand's float64 part
    # f col_x (or f col_r) below the smallest subnormal makes a ratio inf, whose frexp exponent is 0: g0 (h0) -1, which
    # leaves more planes to the exact product than needed (the radius is checked below in any case)
    with np.errstate(divide="ignore", over="ignore"):
        ratio_x = float(np.min(budget / (f * col_x[live][:, None]))) * _DOWN  # 2**g f col_x <= budget
        ratio_r = float(np.min(budget / (f * col_r[None, :]))) * _DOWN
    if not (ratio_x > 0 and ratio_r > 0):
        return None
    g0 = math.frexp(ratio_x)[1] - 1
    h0 = math.frexp(ratio_r)[1] - 1
    for shrink in range(3):  # one digit plane fewer for both if the cross term does not fit
        # keep the sign plane; at most MAX_LOW_PLANES planes left to float64 (their weights, scaled into float64's range
        # by _plane_sum, then span under 2**(B MAX_LOW_PLANES) = 2**1890)
        umin = min(max((g0 - q0) // B - shrink, 0), U - 1, MAX_LOW_PLANES)
        smin = min(max((h0 - qx) // B - shrink, 0), S - 1)
        if umin and q0 + B * umin < -960:  # grid exponents where float64's arithmetic would underflow: not left out
            umin = 0
        if smin and not -960 <= qx + B * smin <= 960:
            smin = 0
        if umin == 0 and smin == 0:
            return None
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            pg = math.ldexp(1.0, q0 + B * umin) if umin else 0.0
            ph = math.ldexp(1.0, qx + B * smin) if smin else 0.0
            rel = f * (pg * col_x[:, None] + ph * (col_r[None, :] + n * pg))
            absolute = tiny * (4 * n + 2 * U * col_x[:, None] + 8 * n * ph + 2 * S * (col_r[None, :] + n * pg))
            r = np.where(live[:, None], (rel + absolute) * _UP + 2 * tiny, 0.0)
        if np.isfinite(r).all() and bool((r[live] <= 2.0**-ACCURATE_BITS * t_lo[live]).all()):
            break
    else:
        return None
    with np.errstate(over="ignore", under="ignore"):
        r_low = _plane_sum(rplanes, umin, q0).T if umin else np.zeros((n, k))  # fl(R_l), nonnegative
        r_top = rounded - r_low  # fl(fl(R) - fl(R_l))
        rem_a = X.T @ r_low if umin else np.zeros((d, k))
        # X_l (exact) only where there is one (no array of zeros the size of X for smin = 0, whose product is not formed)
        rem_b = _low_part(X, qx + B * smin).T @ r_top if smin else np.zeros((d, k))
    if not (np.isfinite(rem_a).all() and np.isfinite(rem_b).all()):
        return None
    return Truncation(smin, umin, (rem_a, rem_b), r)


#: :func:`accurate_pays`' thresholds: the accurate product is tried from this many elements of X^T R (D*K) ...
ACCURATE_MIN_DK = 1024
#: ... and this many digit-plane pairs of the exact product (S planes of X times U of R).
ACCURATE_MIN_PAIRS = 40


def accurate_pays(d: int, k: int, S: int, U: int) -> bool:
    """Whether the accurate ``X^T R`` (:func:`truncation`) is likely cheaper than the exact one, from measurements
    on a 2-core Intel Xeon (this project's machine; one thread, the minimum of 3-40 calls of :func:`step_parts`):
    the exact product of ``S x U`` digit-plane pairs is a single float64 matrix product, while the truncation costs
    passes over X and R and three more products, so it pays only for many elements and many planes. Exact was faster
    for D*K = 64 at every N from 1,563 to 156,250 (by 5-40%, float32 and float64, normal and mixed-magnitude data),
    and for D*K = 512 and 2048 with normal float64 data (3 x 7 planes: 9.7 against 13.4 ms and 17.3 against 18.3 ms);
    the accurate one for D*K = 2048 with mixed float64 data (5 x 9 planes: 26.1 against 30.3 ms; even at D*K = 4096)."""
    return d * k >= ACCURATE_MIN_DK and S * U >= ACCURATE_MIN_PAIRS


#: Held while a :class:`DigitResidual` built from row chunks puts its digits together (once, for every thread).
_PLANES_LOCK = threading.Lock()

#: Rows of X per chunk of :func:`_step_by_rows` (at most :data:`CHUNK_N`, so that each chunk's ``X^T R`` is one
#: exact float64 product): the chunk's digits of X (``S * D`` rows), its ``X W`` positions and residual planes stay
#: in the cache from one pass to the next (N*D*K = 10^6, mixed float64 data: 1024 and 1536 rows were 1-5% slower
#: than 2048 for the oracle, the same for a whole check).
ROW_CHUNK = 2048


def _step_by_rows(X: F64, y: F64, W: F64, b: F64, qx: int | None, tx: float
                  ) -> tuple[DigitResidual, ScaledInts, ScaledInts, ScaledInts] | None:
    """:func:`exact_parts` (the exact ``X^T R``) over chunks of :data:`ROW_CHUNK` rows: for each chunk, X's digits
    (:func:`harness.slicekernels.digits_cat`, over the whole array's grid), the positions of ``X W``
    (:func:`_xw_positions`), the residual's digits (:func:`harness.slicekernels.residual_digits`, with the
    planes of the whole array's plan) and the chunk's ``X^T R`` digit products, added up in int64 by digit pair.
    Each chunk's residual is in two's complement over its own number of planes (its sign in its top one), which
    gives the same value in every product. None where X or W is zero or X's digits need more than
    :data:`CHUNK_D` columns (:func:`_residual` and the product over whole columns then).

    Raises:
        ValueError, TooWideError: as :func:`step_parts`, in the same order.
    """
    from .slicekernels import digits_cat
    from .slicekernels import residual_digits as residual_kernel

    n, d = X.shape
    k = y.shape[1]
    if qx is None:
        return None
    q1, nd, s0 = _plan_digits(X, qx, B, qx, tx)
    S = s0 + nd
    y = np.ascontiguousarray(y, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64).reshape(k)
    W = np.ascontiguousarray(W, dtype=np.float64)
    yr, br, wr = float_range(y, "y"), float_range(b, "b"), float_range(W, "W")
    qw = wr[0]
    if qw is None or S * d > CHUNK_D:
        return None
    wd = digits(W, qw, B, qw)
    T = len(wd)
    if S * T > MAX_PRODUCTS:
        raise TooWideError(f"X W needs {S} x {T} digit products")
    xw_blocks = _xw_blocks(S, wd)  # (once for every chunk)
    q0 = min([qx + qw] + [q for q in (yr[0], br[0]) if q is not None])
    sh, n_alloc = _residual_plan(d, q0, (qx, tx), wr, yr, br, S + T - 1)
    yt = np.ascontiguousarray(y.T)
    ysp, bsp = _span(*yr), _span(*br)
    rounded = np.empty((n, k))
    colsum = np.zeros((n_alloc + 1, k), dtype=np.int64)
    grams = []
    chunks: list[tuple[int, int, F32, int]] = []
    # X^T R by digit pair: the products of one chunk (at most CHUNK_N rows) are exact in float64, as in step_parts;
    # up to ACC_BLOCK chunk sums add up in int64, blocks of them in Python integers. Held transposed, (S*D, planes*K):
    # each chunk's product is X's digits (S*D, m) times the residual's planes transposed (a product of this shape ran
    # 10% faster than the residual's planes times X's digits transposed, for the same sums)
    blk = np.zeros((S * d, n_alloc * k), dtype=np.int64)
    acc: Any = None
    one_block = n <= ROW_CHUNK * ACC_BLOCK
    U = 1
    for j, r0 in enumerate(range(0, n, ROW_CHUNK)):
        r1 = min(n, r0 + ROW_CHUNK)
        m = r1 - r0
        xc = digits_cat(X[r0:r1], q1, nd, s0, scratch("xcat-rows", (S * d, m)))
        P = _xw_positions(xc, S, wd, xw_blocks)
        # the chunk's digits into a reused float64 buffer (in the cache from one chunk to the next: at N*D*K = 10^6,
        # mixed float64 data, the kernel took ~210 us per chunk in a check writing fresh planes, ~165 us into the
        # buffer, ~137 us alone), kept for the residual as float32 (exact: below 2**B = 2**21, the sign 0 or -1; half
        # the bytes), its used planes alone
        planes, cs, gram, rbits, used = residual_kernel(P, sh, np.ascontiguousarray(yt[:, r0:r1]), ysp, b, bsp, q0,
                                                        scratch("rplanes-rows", (n_alloc, k, m)))
        U = max(U, used)
        if S * U > MAX_PRODUCTS:
            # too wide: the remaining chunks' residual digits only, for the planes of the whole residual (the error
            # names them, as the product over whole columns does) and its errors (a chunk's ValueError first)
            chunks.clear()
            continue
        colsum += cs
        grams.append(gram)
        rounded[r0:r1] = rbits.view(np.float64).T
        chunks.append((r0, r1, planes[:used].astype(np.float32), used))
        # the sign plane (0 or -1) folded into the digit below it for the product (digit + 2**B sign, in [-2**B, 2**B)),
        # in the float64 buffer (the digit products are 42 bits, their sums more):
        # one plane of products fewer (an eighth of them at 8 planes); every product is at most (2**B - 1) 2**B in
        # magnitude (X's digits are below 2**B, digits_cat), so every partial sum of the chunk is an integer of
        # magnitude at most CHUNK_N (2**B - 1) 2**B = 2**53 - 2**32, exact in float64 in any order, and ACC_BLOCK
        # chunks' sums at most 2**63 - 2**42 in int64 (a chunk's sum of 2**53 would let them reach 2**63, which wraps).
        # (The chunk's residual keeps its two's complement digits: its float32 copy was made before the fold.)
        fold = used - 1 if used >= 2 else used
        if fold < used:
            planes[used - 2] += planes[used - 1] * float(1 << B)
        blk[:, :fold * k] += (xc @ planes[:fold].reshape(fold * k, m).T).astype(np.int64)
        if not one_block and ((j + 1) % ACC_BLOCK == 0 or r1 >= n):
            acc = _obj(blk) if acc is None else acc + _obj(blk)
            blk[...] = 0
    if S * U > MAX_PRODUCTS:
        raise TooWideError(f"X^T R needs {S} x {U} digit products")
    if one_block:
        gw_int = position_sum(blk[:, :U * k].reshape(S, d, U, k), 0)
    else:
        acc4 = acc[:, :U * k].reshape(S, d, U, k)
        gw_int = _combine(np.stack([acc4[s, :, u, :] for s in range(S) for u in range(U)]),
                          [B * (s + u) for s in range(S) for u in range(U)])
    cs_all, total = _residual_sums(colsum, np.concatenate(grams), n_alloc)
    rounded.flags.writeable = False
    R = DigitResidual.from_row_chunks(chunks, n, k, q0)
    R._f64 = rounded
    gb = np.empty(k, dtype=object)
    gb[:] = cs_all
    loss = ScaledInts(ScaledInts.scalar(total).ints, Fraction(2) ** (2 * q0))
    return R, ScaledInts(gw_int, Fraction(2) ** (qx + q0)), ScaledInts(gb, Fraction(2) ** q0), loss


def step_parts(X: F64, y: F64, W: F64, b: F64, accurate: bool = False, when_cheaper: bool = False
               ) -> tuple[DigitResidual, ScaledInts, ScaledInts, ScaledInts, F64 | None]:
    """:func:`exact_parts` and, with ``accurate``, ``X^T R`` from fewer digit products and two float64
    products (:func:`truncation`):
    then the fifth value is the radius of ``X^T R``, float64 ``(D, K)`` (real units: ``|X^T R - value|
    <= radius <= 2**-60 sum_n |X[n, d] R[n, k]|``), None when the product is exact (always without ``accurate``).
    The residual, ``1^T R`` and ``sum R^2`` are exact either way. ``when_cheaper``: try the truncation only where
    it has measured faster than the exact product (:func:`accurate_pays`).

    Raises:
        ValueError: when an input holds a NaN or an infinity, or the shapes do not agree (:func:`harness.shapes.check_step_shapes`;
            the message names the input).
        TooWideError: when the exponent range needs more than :data:`MAX_PRODUCTS` digit products.
    """
    check_step_shapes(X, y, W, b)
    X = np.ascontiguousarray(X, dtype=np.float64)
    n, d = X.shape
    k = y.shape[1]
    qx, tx = float_range(X, "X")
    if not accurate or (when_cheaper and d * k < ACCURATE_MIN_DK):  # exact X^T R (accurate_pays is False)
        by_rows = _step_by_rows(X, y, W, b, qx, tx)
        if by_rows is not None:
            return (*by_rows, None)
    xcat = None if qx is None else digits_matrix(X, qx, qx, tx, scratch_ok=True)  # once, for X W and for X^T R
    res = _residual(X, y, W, b, qx, tx, xcat)
    pl, q0 = res.planes, res.q0  # (U, K, N)
    U = len(pl)
    R = DigitResidual(np.transpose(pl, (0, 2, 1)), q0)
    R._f64 = res.rounded
    gb = np.empty(k, dtype=object)
    gb[:] = res.colsum
    loss = ScaledInts(ScaledInts.scalar(res.sumsq).ints, Fraction(2) ** (2 * q0))
    radius: F64 | None = None
    # X^T R: the digits of X (base 2**B, as in X W) against R's digits, rows in chunks of CHUNK_N = 2**(53 - 2B):
    # |X digit| <= 2**B and 0 <= R digit < 2**B or R digit = -1, so each product is below 2**(2B) in magnitude and
    # every partial sum of a chunk below CHUNK_N * 2**(2B) = 2**53 (exact in float64, any order); up to ACC_BLOCK
    # chunk sums (< 2**53 each) add up in int64 below 2**63; blocks of chunks add up in Python integers
    if xcat is None or qx is None:
        gw = ScaledInts(np.zeros((d, k), dtype=object) + 0, Fraction(1))
    else:
        xc, S = xcat
        tr = truncation(X, S, qx, res.rounded, pl, q0) if accurate and (
            not when_cheaper or accurate_pays(d, k, S, U)) else None
        smin, umin = (tr.smin, tr.umin) if tr is not None else (0, 0)
        if (S - smin) * (U - umin) > MAX_PRODUCTS:
            raise TooWideError(f"X^T R needs {S - smin} x {U - umin} digit products")
        xs = xc[smin * d:].T  # (N, (S - smin) * D), a view of the transposed digits
        rs = pl[umin:].reshape((U - umin) * k, n)  # R^T's planes u >= umin, one row per (plane, column)
        acc: Any = None
        blk = np.zeros(((U - umin) * k, (S - smin) * d), dtype=np.int64)
        for j, c0 in enumerate(range(0, n, CHUNK_N)):
            blk += (rs[:, c0:c0 + CHUNK_N] @ xs[c0:c0 + CHUNK_N]).astype(np.int64)
            if n <= CHUNK_N * ACC_BLOCK:
                continue  # a single block: blk holds the whole sum
            if (j + 1) % ACC_BLOCK == 0 or c0 + CHUNK_N >= n:
                acc = _obj(blk) if acc is None else acc + _obj(blk)
                blk[...] = 0
        blk_last = blk
        if n <= CHUNK_N * ACC_BLOCK:  # one int64 block: combined by digit position in int64
            gw_int = position_sum(blk_last.reshape(U - umin, k, S - smin, d).transpose(2, 3, 0, 1), smin + umin)
        else:
            acc4 = acc.reshape(U - umin, k, S - smin, d).transpose(2, 3, 0, 1)
            planes = np.stack([acc4[s - smin, :, u - umin, :] for s in range(smin, S) for u in range(umin, U)])
            gw_int = _combine(planes, [B * (s + u) for s in range(smin, S) for u in range(umin, U)])
        gw = ScaledInts(gw_int, Fraction(2) ** (qx + q0))
        if tr is not None:  # the low planes' part, in float64 (within the radius)
            gw = plus_floats(gw_int, qx + q0, tr.remainder)
            radius = tr.radius
    return R, gw, ScaledInts(gb, Fraction(2) ** q0), loss, radius
