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

- ``R = X W + 1 b^T - Y`` exact, as base-``2**21`` digits (``N x K`` int64
  planes, two's complement: nonnegative digits and a top digit 0 or -1),
  over the scale ``2**q0``. :meth:`DigitResidual.to_float64` rounds it
  correctly (round half to even, subnormals and overflow included) with
  int64 operations only; its exact integers are built only when asked for.
- ``grad_W = 2c X^T R``, ``grad_b = 2c 1^T R``, ``loss = c sum R^2`` exact,
  then ``W' = W - lr grad_W`` and ``b' = b - lr grad_b`` in exact rationals.

The result is the same rational as the reference path
(:mod:`harness.oracle`'s exact-rational evaluation); ``tests/test_fastexact.py``
checks that bit for bit on random, integer, huge, tiny, subnormal,
cancelling and mixed-magnitude data in every dtype. When the exponent range
of the data would need too many digits (:data:`MAX_PRODUCTS`), the caller
falls back to the reference path.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from .exact import ScaledInts

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

METHOD = "exact-integer-slices"
#: Digit width of the residual and of the first product's operands (21 + 21 + log2(2048) = 53).
B = 21
#: Contraction chunk lengths keeping every partial sum of digit products within 2**53
#: (digits of X, W and R all below 2**B in magnitude, the top ones of X and W at most 2**B).
CHUNK_D = 1 << (53 - 2 * B)
CHUNK_N = 1 << (53 - 2 * B)
#: Chunk results (each below 2**53) summed in int64 at a time: 1024 of them stay below 2**63.
ACC_BLOCK = 1024
#: Give up (fall back to the reference path) past this many digit-pair products of either kind.
MAX_PRODUCTS = 400
_MASK = (1 << B) - 1


class TooWideError(Exception):
    """The data's exponent range needs more digit products than :data:`MAX_PRODUCTS`."""


def lowest_exponent(x: F64) -> int | None:
    """Exponent of the lowest set bit among the nonzero entries (None if all are zero), from the bit pattern."""
    bits = np.ascontiguousarray(x, dtype=np.float64).view(np.int64).ravel()
    ex = (bits >> 52) & 0x7FF
    m = (bits & ((1 << 52) - 1)) | ((ex > 0).astype(np.int64) << 52)
    low = (m & -m).astype(np.float64)  # lowest set bit of the significand, a power of two (0 for zeros)
    val = ((low.view(np.int64) >> 52) - 1023) + np.maximum(ex, 1) - 1075
    val = np.where(m != 0, val, np.iinfo(np.int64).max)
    out = int(val.min()) if val.size else np.iinfo(np.int64).max
    return None if out == np.iinfo(np.int64).max else out


def digits(x: F64, q: int, base: int, low: int | None = None) -> F64:
    """Base-``2**base`` digits of the integers ``x / 2**q`` (exact; ``q`` at most :func:`lowest_exponent`),
    as float64 arrays: every operation below is exact (power-of-two scalings, ``floor``, and
    subtractions whose result ``r mod 2**(base s)`` keeps at most 53 significant bits).

    Returns:
        float64 array ``(S, *x.shape)`` with ``x = 2**q sum_s out[s] 2**(base s)``, integer digits
        of the sign of ``x``, ``|out[s]| < 2**base`` below the top one, ``|out[S-1]| <= 2**base``.

    Raises:
        TooWideError: when ``x / 2**q`` exceeds float64's range (the data needs too many digits anyway).
    """
    x = np.asarray(x, dtype=np.float64)
    top = float(np.max(np.abs(x))) if x.size else 0.0
    if top == 0.0:
        return np.zeros((1, *x.shape))
    low = lowest_exponent(x) if low is None else low
    assert low is not None and low >= q
    s0 = (low - q) // base  # digits below s0 are zero: work over 2**(q + base s0)
    q1 = q + base * s0
    width = int(np.frexp(top)[1]) - q1  # |x / 2**q1| < 2**width
    if width > 1000:
        raise TooWideError(f"integer width {width} bits")
    n = max(1, -(-width // base))
    out = np.empty((n, *x.shape))
    r = np.abs(np.ldexp(x, -q1))
    for s in range(n - 1, 0, -1):
        w = 2.0 ** (base * s)
        dg = np.floor(r * (1.0 / w))
        out[s] = dg
        r -= dg * w  # r mod w: the low bits of r, exact
    out[0] = r
    out = np.copysign(out, x)  # signed digits, |digit| <= 2**base
    if s0:
        out = np.concatenate([np.zeros((s0, *x.shape)), out])
    return out


def carry(d: I64) -> I64:
    """Normalise signed digits (any int64 values) to two's complement base ``2**B``:
    digits ``0 <= d < 2**B`` below a top digit that is 0 or -1 (planes appended as needed)."""
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


def _shift(d: I64, bits: int) -> I64:
    """Two's complement digits of ``value * 2**bits`` (``bits >= 0``)."""
    a, r = divmod(bits, B)
    if r:
        d = carry(d << r)  # digits < 2**B times 2**r < 2**(2B): no overflow
    if a:
        d = np.concatenate([np.zeros((a, *d.shape[1:]), dtype=np.int64), d])
    return d


def _add(*ds: I64) -> I64:
    n = max(len(d) for d in ds)
    acc = np.zeros((n, *ds[0].shape[1:]), dtype=np.int64)
    for d in ds:
        acc[: len(d)] += d
    return carry(acc)


def _obj(a: I64) -> npt.NDArray[Any]:
    out = np.empty(a.shape, dtype=object)
    out[...] = a.tolist() if a.ndim else int(a)
    return out


class DigitResidual(ScaledInts):
    """The exact residual as two's complement base-``2**B`` digits over ``2**q0`` (a :class:`ScaledInts`
    whose integer array is built only when read)."""

    __slots__ = ("_digits", "_f64", "_ints", "_q0")

    def __init__(self, d: I64, q0: int) -> None:  # noqa: D107 - see class
        self._digits = d
        self._q0 = q0
        self._ints: npt.NDArray[Any] | None = None
        self._f64: F64 | None = None

    @property
    def ints(self) -> npt.NDArray[Any]:
        if self._ints is None:
            acc = np.zeros(self._digits.shape[1:], dtype=object)
            for u in range(len(self._digits) - 1, -1, -1):
                acc = acc * (1 << B) + _obj(self._digits[u])
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
        return tuple(self._digits.shape[1:])

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
        shape = self._digits.shape[1:]
        d = self._digits.reshape(len(self._digits), -1)
        neg = d[-1] < 0
        # magnitudes: -v for the negative values (their digits negated, then carried: top digit 0 as -v > 0);
        # the nonnegative values' digits are normalised already, which carry() leaves as they are
        mag = carry(np.where(neg, -d, d)) if bool(neg.any()) else d
        n, m = mag.shape
        # index of the highest nonzero digit (-1 where the value is 0)
        # and of the lowest (n where 0): one pass per digit plane (n is small; argmax along axis 0 is slower)
        h = np.full(m, -1, dtype=np.int64)
        lowest = np.full(m, n, dtype=np.int64)
        for u in range(n):
            nz_u = mag[u] != 0
            h[nz_u] = u
        for u in range(n - 1, -1, -1):
            lowest[mag[u] != 0] = u
        any_nz = h >= 0
        h = np.maximum(h, 0)
        pad = np.concatenate([np.zeros((4, m), dtype=np.int64), mag]).ravel()  # digit u of column j at (u + 4) m + j
        cols = np.arange(m)

        def at(idx: I64) -> I64:
            return pad[(idx + 4) * m + cols]

        dh = at(h)
        p = np.where(any_nz, np.frexp(dh.astype(np.float64))[1], 1).astype(np.int64)  # bit length of the top digit
        d1, d2, d3 = at(h - 1), at(h - 2), at(h - 3)
        # M: the top 62 bits (top bit at 61), sticky: any lower bit set
        M = (dh << (62 - p)) | (d1 << (41 - p))
        s2 = 20 - p  # in [-1, 19]
        M |= np.where(s2 >= 0, d2 << np.clip(s2, 0, 63), d2 >> 1)
        sticky = (s2 < 0) & ((d2 & 1) != 0)
        r3 = p + 1  # right shift of d3, in [2, 22]
        M |= d3 >> r3
        sticky |= (d3 & ((np.int64(1) << r3) - 1)) != 0
        # any nonzero digit below h - 3
        sticky |= any_nz & (lowest < h - 3)
        E = B * h + p - 62 + self._q0  # value = (M + frac) * 2**E
        top = E + 61
        t = np.maximum(top - 52, -1074)  # exponent of the last kept bit
        drop = t - E  # >= 9
        big = drop > 62
        dr = np.clip(drop, 1, 62)
        q = M >> dr
        r = M & ((np.int64(1) << dr) - 1)
        half = np.int64(1) << (dr - 1)
        up = (r > half) | ((r == half) & (sticky | ((q & 1) == 1)))
        q = np.where(big, 0, q + up)
        with np.errstate(over="ignore"):
            val = np.ldexp(q.astype(np.float64), np.clip(t, -2000, 2000).astype(np.int64))
        val = np.where(any_nz, val, 0.0)
        return np.where(neg, -val, val).reshape(shape)

    def to_hi_lo(self) -> tuple[F64, F64]:
        return ScaledInts(self.ints, self.scale).to_hi_lo()

    @property
    def T(self) -> ScaledInts:  # noqa: N802
        return ScaledInts(self.ints.T, self.scale)


def _first_product(X: F64, W: F64, qx: int, qw: int, xd: F64 | None = None) -> I64:
    """Two's complement base-``2**B`` digits of the integer ``(X / 2**qx) @ (W / 2**qw)``, exact.

    Digit position ``u`` of the product is ``sum_{s+t=u} X_s W_t``: one matmul of the digits of X side
    by side, ``(N, S*D)``, with the digits of W stacked so that column block ``u`` holds ``W_{u-s}``
    in row block ``s``: contraction length ``S*D`` per chunk, at most :data:`CHUNK_D`.
    ``xd``: the digits of X (:func:`digits` ``(X, qx, B, qx)``) when the caller has them."""
    xd = digits(X, qx, B, qx) if xd is None else xd
    wd = digits(W, qw, B, qw)
    S, T = len(xd), len(wd)
    if S * T > MAX_PRODUCTS:
        raise TooWideError(f"X W needs {S} x {T} digit products")
    n, d = X.shape
    k = W.shape[1]
    U = S + T - 1
    if S * d <= CHUNK_D:
        xcat = np.moveaxis(xd, 0, 1).reshape(n, S * d)
        wbig = np.zeros((S, d, U, k))
        for s_ in range(S):
            wbig[s_, :, s_:s_ + T, :] = np.moveaxis(wd, 0, 1)
        P = xcat @ wbig.reshape(S * d, U * k)  # exact: |sum| <= S*D * 2**(2B) <= 2**53
        return carry(np.moveaxis(P.reshape(n, U, k), 1, 0).astype(np.int64))
    if -(-d // CHUNK_D) * min(S, T) >= 1024:
        raise TooWideError("too many chunk terms for int64 accumulation")
    acc = np.zeros((U, n, k), dtype=np.int64)
    for c0 in range(0, d, CHUNK_D):
        xs = xd[:, :, c0:c0 + CHUNK_D].reshape(S * n, -1)
        wc = np.moveaxis(wd[:, c0:c0 + CHUNK_D, :], 0, 1).reshape(-1, T * k)
        P = (xs @ wc).reshape(S, n, T, k)  # exact: |sum| <= CHUNK_D * 2**(2B) = 2**53 (top digits <= 2**B)
        for s_ in range(S):
            for t in range(T):
                acc[s_ + t] += P[s_, :, t, :].astype(np.int64)
    return carry(acc)


def residual_digits(X: F64, y: F64, W: F64, b: F64, qx: int | None = None, xd: F64 | None = None) -> tuple[I64, int]:
    """Exact ``R = X W + 1 b^T - y`` as two's complement base-``2**B`` digits over ``2**q0``
    (``xd``: X's digits over ``2**qx``, as :func:`_first_product` takes them)."""
    n, k = y.shape
    qx = lowest_exponent(X) if qx is None else qx
    qw, qy, qb = (lowest_exponent(a) for a in (W, y, b))
    parts: list[tuple[int, Any]] = []
    if qx is not None and qw is not None:
        parts.append((qx + qw, "xw"))
    if qb is not None:
        parts.append((qb, "b"))
    if qy is not None:
        parts.append((qy, "y"))
    if not parts:
        return np.zeros((1, n, k), dtype=np.int64), 0
    q0 = min(q for q, _ in parts)
    terms: list[I64] = []
    for q, what in parts:
        if what == "xw":
            assert qx is not None and qw is not None
            terms.append(_shift(_first_product(X, W, qx, qw, xd), q - q0))
        elif what == "b":
            bd = digits(b.reshape(1, k), q0, B, qb).astype(np.int64)
            terms.append(np.broadcast_to(bd, (len(bd), n, k)))
        else:
            terms.append(-digits(y, q0, B, qy).astype(np.int64))
    if max(len(t) for t in terms) > MAX_PRODUCTS:
        raise TooWideError("residual too wide")
    return _add(*terms), q0


def _combine(planes: I64, weights: list[int]) -> npt.NDArray[Any]:
    """``sum_i planes[i] * 2**weights[i]`` as an object array of Python ints."""
    acc: Any = None
    for pl, w in zip(planes, weights, strict=True):
        term = _obj(pl) * (1 << w)
        acc = term if acc is None else acc + term
    return acc


def exact_parts(X: F64, y: F64, W: F64, b: F64) -> tuple[DigitResidual, ScaledInts, ScaledInts, ScaledInts]:
    """The exact residual, ``X^T R`` (D, K), ``1^T R`` (K,) and ``sum R^2`` (0-d): no scale factor ``c`` applied.

    Raises:
        TooWideError: when the exponent range needs more than :data:`MAX_PRODUCTS` digit products.
    """
    n, d = X.shape
    k = y.shape[1]
    qx = lowest_exponent(X)
    xd = None if qx is None else digits(X, qx, B, qx)  # once, for X W and for X^T R
    rd, q0 = residual_digits(X, y, W, b, qx, xd)
    U = len(rd)
    R = DigitResidual(rd, q0)
    # 1^T R: column sums of each plane (|digit| < 2**21, N < 2**42)
    colsum = rd.sum(axis=1)  # (U, K)
    gb = _combine(colsum, [B * u for u in range(U)])
    # sum R^2 = sum_{u,v} 2**(B(u+v)) sum(D_u D_v): Gram matrices of the digit planes over chunks of
    # 2**11 elements (|D_u D_v| < 2**42: every partial sum within 2**53, exact), chunk sums in int64
    flat = rd.reshape(U, -1).astype(np.float64)
    m = flat.shape[1]
    cl = 1 << (53 - 2 * B)
    pad = (-m) % cl
    if pad:
        flat = np.concatenate([flat, np.zeros((U, pad))], axis=1)
    blocks = flat.reshape(U, -1, cl).transpose(1, 0, 2)  # (chunks, U, cl)
    total = 0
    for c0 in range(0, blocks.shape[0], 1024):
        g = np.matmul(blocks[c0:c0 + 1024], blocks[c0:c0 + 1024].transpose(0, 2, 1)).astype(np.int64).sum(axis=0)
        for u in range(U):
            for v in range(u, U):
                total += (int(g[u, v]) << (B * (u + v))) * (1 if u == v else 2)
    loss = ScaledInts.scalar(total)
    loss = ScaledInts(loss.ints, Fraction(2) ** (2 * q0))
    # X^T R: the digits of X (base 2**B, as in X W) against R's digits, rows in chunks of CHUNK_N = 2**(53 - 2B):
    # |X digit| <= 2**B and 0 <= R digit < 2**B or R digit = -1, so each product is below 2**(2B) in magnitude and
    # every partial sum of a chunk below CHUNK_N * 2**(2B) = 2**53 (exact in float64, any order); up to ACC_BLOCK
    # chunk sums (< 2**53 each) add up in int64 below 2**63; blocks of chunks add up in Python integers
    if qx is None or xd is None:
        gw = ScaledInts(np.zeros((d, k), dtype=object) + 0, Fraction(1))
    else:
        S = len(xd)
        if S * U > MAX_PRODUCTS:
            raise TooWideError(f"X^T R needs {S} x {U} digit products")
        xcat = np.moveaxis(xd, 0, 1).reshape(n, S * d)  # column s*d + l: digit s of X[:, l]
        rcat = np.moveaxis(rd, 0, 1).reshape(n, U * k).astype(np.float64)
        pad = (-n) % CHUNK_N
        if pad:
            xcat = np.concatenate([xcat, np.zeros((pad, S * d))])
            rcat = np.concatenate([rcat, np.zeros((pad, U * k))])
        nc = (n + pad) // CHUNK_N
        xb = xcat.reshape(nc, CHUNK_N, S * d).transpose(0, 2, 1)
        rb = rcat.reshape(nc, CHUNK_N, U * k)
        acc: Any = None
        for c0 in range(0, nc, ACC_BLOCK):
            part = np.matmul(xb[c0:c0 + ACC_BLOCK], rb[c0:c0 + ACC_BLOCK]).astype(np.int64).sum(axis=0)
            acc = part if acc is None else (acc if acc.dtype == object else _obj(acc)) + _obj(part)
        acc4 = acc.reshape(S, d, U, k)
        planes = np.stack([acc4[s, :, u, :] for s in range(S) for u in range(U)])
        gw_int = _combine(planes, [B * (s + u) for s in range(S) for u in range(U)])
        gw = ScaledInts(gw_int, Fraction(2) ** (qx + q0))
    return R, gw, ScaledInts(gb, Fraction(2) ** q0), loss
