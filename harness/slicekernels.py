"""Compiled one-pass kernels of the integer-slice oracle (:mod:`harness.fastexact`), with numba.

Each kernel replaces several NumPy passes over ``N x D`` or ``N x K`` arrays
by one loop over the elements, in integer arithmetic that is exact by
construction (int64 digits of ``B = 21`` bits, every intermediate bounded
below ``2**63`` as stated at each kernel). They are compiled on first use
and cached on disk (numba ``cache=True``): the first call in a fresh
checkout compiles them (a few seconds, once), later processes load the cache.

- :func:`float_range`: lowest set-bit exponent and largest magnitude of a float64 array.
- :func:`digits_cat`: base-``2**B`` signed digits of ``x / 2**q``, digit-major per row.
- :func:`residual_digits`: the exact residual ``R = X W + 1 b^T - Y`` in two's complement
  digits, from the exact digit products of ``X W``, with in the same pass its correctly
  rounded float64 value, the digits side by side for the ``X^T R`` product, their column
  sums (``1^T R``) and the Gram sums of the digit planes (``sum R^2``).
- :func:`round_digits`: the correctly rounded float64 of normalised two's complement digits.

Loops run over blocks of elements with the digit plane outermost, so that the
inner loops are branch-free and LLVM vectorises them.

Rounding follows IEEE 754 round-to-nearest, ties to even, with gradual underflow
and overflow to ``±inf``; the reference is :meth:`harness.exact.ScaledInts.to_float64`
(``tests/test_fastexact.py`` compares them bit for bit).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Digit width, as in :mod:`harness.fastexact`.
B = 21
MASK = (1 << B) - 1
#: Elements per Gram block of :func:`residual_digits` (products of two digits are below 2**42: 2**20 of them sum below 2**62).
GRAM_BLOCK = 1 << 20
#: :func:`float_range`'s exponent for an array without a nonzero entry.
NO_BIT = 1 << 62


@njit(cache=True, nogil=True)
def float_range(x: np.ndarray) -> tuple[int, float]:  # pragma: no cover - compiled
    """(lowest set-bit exponent among the nonzero entries, largest magnitude) of a contiguous
    float64 array, from the bit patterns in one pass; ``2**62`` as the exponent when all are zero.
    Entries must be finite."""
    flat = x.ravel()
    bits = flat.view(np.int64)
    low = NO_BIT
    top = 0.0
    for i in range(bits.size):
        v = bits[i]
        ex = (v >> 52) & 0x7FF
        m = v & ((1 << 52) - 1)
        if ex > 0:
            m |= 1 << 52
        if m == 0:
            continue
        a = abs(flat[i])
        if a > top:
            top = a
        e = max(ex, 1) - 1075  # exponent of the significand's last bit
        if e >= low:
            continue
        e += math.frexp(float(m & -m))[1] - 1  # plus its trailing zero bits
        if e < low:
            low = e
    return low, top


@njit(cache=True, nogil=True)
def digits_cat(x: np.ndarray, q1: int, n: int, s0: int, out: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Signed base-``2**B`` digits of the integers ``x / 2**q1`` (``x`` 2-D float64, finite, ``q1`` at most
    its lowest set-bit exponent, every ``|x| / 2**q1 < 2**(B n)``): ``n`` digits, placed after ``s0`` zero
    digits (the digits of ``x / 2**(q1 - B s0)``).

    Args:
        out: float64 ``(rows, (s0 + n) * cols)``, written entirely and returned: digit ``s`` of ``x[i, j]`` at
            ``[i, s * cols + j]``, of the sign of ``x``, ``|digit| < 2**B``. Exact: each digit is a field of bits
            of the significand ``m`` of ``|x| = m 2**e`` (int64 shifts and masks), placed at bit ``e - q1``.
    """
    rows, cols = x.shape
    out[:, :s0 * cols] = 0.0
    out = out[:, s0 * cols:]
    xb = x.view(np.int64)
    for i in range(rows):
        for s in range(n):  # digit-major inner loops over j: branch-free, vectorised
            for j in range(cols):
                v = xb[i, j]
                ex = (v >> 52) & 0x7FF
                m = (v & ((1 << 52) - 1)) | (np.int64(ex > 0) << 52)
                t = max(ex, 1) - 1075 - q1  # |x| / 2**q1 = m 2**t (t < 0 only where m's low -t bits are 0)
                a = B * s - t  # digit s holds bits a .. a + B - 1 of m (shifts clamped to 63: m < 2**53)
                lo = m >> min(max(a, 0), 63)
                hi = m << min(max(-a, 0), 63)
                dg = (lo if a >= 0 else hi) & MASK
                out[i, s * cols + j] = -float(dg) if v < 0 else float(dg)
    return out


@njit(cache=True, nogil=True)
def round_digits(d: np.ndarray, q0: int) -> np.ndarray:  # pragma: no cover - compiled
    """Nearest float64 of each column of normalised two's complement digits ``d`` (int64 ``(U, M)``:
    ``0 <= d[u] < 2**B`` for ``u < U - 1``, ``d[U - 1]`` 0 or -1), over ``2**q0``. Returns ``(M,)``."""
    n1, m = d.shape
    n = n1 - 1
    mag = np.empty((max(n, 1), m), dtype=np.int64)
    out = np.empty(m, dtype=np.int64)
    for j in range(m):
        neg = d[n, j] < 0
        c = 1 if neg else 0  # -value = sum (MASK - d_u) 2**(B u) + 1
        h = -1
        lowest = n
        for u in range(n):
            v = (MASK - d[u, j]) + c
            mag[u, j] = (v & MASK) if neg else d[u, j]
            c = (v >> B) if neg else 0
            if mag[u, j] != 0:
                h = u
                lowest = min(lowest, u)
        out[j] = _round_bits(mag, j, h, lowest, neg, q0)
    return out.view(np.float64)


#: Elements per block of :func:`residual_digits` (its int64 working planes stay in cache).
BLOCK = 512


@njit(cache=True, nogil=True)
def _float_digits(z: np.ndarray, q0: int, u: int, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """``out[e]`` = signed digit ``u`` (base ``2**B``) of ``z[e] / 2**q0`` (set bits of ``z`` at or above ``2**q0``),
    branch-free: a field of bits of the significand, shifts clamped to 63 (the significand is below 2**53)."""
    zb = z.view(np.int64)
    for e in range(z.size):
        v = zb[e]
        ex = (v >> 52) & 0x7FF
        m = (v & ((1 << 52) - 1)) | (np.int64(ex > 0) << 52)
        a = B * u - (max(ex, 1) - 1075 - q0)
        lo = m >> min(max(a, 0), 63)
        hi = m << min(max(-a, 0), 63)
        dg = (lo if a >= 0 else hi) & MASK
        out[e] = -dg if v < 0 else dg


@njit(cache=True, nogil=True)
def residual_digits(P: np.ndarray, sh: int, y: np.ndarray, bfull: np.ndarray, K: int, q0: int, n_alloc: int,
                    rcat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:  # pragma: no cover
    """The exact residual ``R = X W + 1 b^T - y`` over ``2**q0``, in blocks of :data:`BLOCK` elements,
    every pass over a block's digit planes branch-free.

    Args:
        P: float64 ``(U1, N*K)``: digit position ``u`` of the integer ``X W / 2**(q0 + sh)`` for each
            element (row-major over ``(N, K)``): exact integers below ``2**53`` in magnitude, any sign.
        sh: ``q_XW - q0 >= 0``, bits.
        y, bfull: float64 ``(N*K,)``, ``y`` and ``b`` broadcast over the rows: set bits at or above ``2**q0``.
        K: columns.
        q0: the scale's exponent.
        n_alloc: digit planes to work in (enough for every value plus a sign digit).
        rcat: float64 ``(N, n_alloc, K)``, written entirely: the digits side by side per row.

    Returns:
        ``digs`` int64 ``(n_alloc, N*K)`` in ``[0, 2**B)`` and ``sign`` int64 ``(N*K,)`` (0 or -1): the value is
        ``sum_u digs[u] 2**(B u) + sign 2**(B n_alloc)`` (``rcat`` holds the same digits);
        ``colsum`` int64 ``(n_alloc + 1, K)``: column sums of the planes, the sign plane last;
        ``gram`` int64 ``(blocks, n_alloc + 1, n_alloc + 1)``: ``sum d_u d_v`` (``u <= v``, sign plane last) over
        :data:`GRAM_BLOCK` elements each; the rounded residual's float64 bit patterns ``(N*K,)``; and ``U``, the
        planes needed (the value is also ``sum_{u < U-1} digs[u] 2**(B u) + sign 2**(B (U-1))``).
        Raises ValueError if ``n_alloc`` is too small.

    Bounds: ``P``'s digits carried in int64 (carries below ``2**33``), shifted left by under ``B`` bits
    (below ``2**41``), plus digits of ``y`` and ``b`` (below ``2**B``): no int64 overflow; the Gram products are
    below ``2**42``, so :data:`GRAM_BLOCK` of them sum below ``2**62``; the column sums below ``N 2**B``.
    """
    U1 = P.shape[0]
    M = y.size
    a0 = sh // B
    r0 = sh - a0 * B
    nu = n_alloc + 1  # with the sign plane
    blk = max(1, BLOCK // K) * K  # a multiple of K: slot e of every block is column e % K
    digs = np.empty((n_alloc, M), dtype=np.int64)
    sign = np.empty(M, dtype=np.int64)
    rbits = np.empty(M, dtype=np.int64)
    colacc = np.zeros((nu, blk), dtype=np.int64)
    nb = max(1, -(-M // GRAM_BLOCK))
    gram = np.zeros((nb, nu, nu), dtype=np.int64)
    acc = np.empty((nu, blk), dtype=np.int64)
    c = np.empty(blk, dtype=np.int64)
    tmp = np.empty(blk, dtype=np.int64)
    mag = np.empty((n_alloc, blk), dtype=np.int64)
    h = np.empty(blk, dtype=np.int64)
    lowest = np.empty(blk, dtype=np.int64)
    used = 1
    bad = False
    for e0 in range(0, M, blk):
        n = min(blk, M - e0)
        acc[:, :n] = 0
        # X W's digit positions, carried to B-bit digits and shifted by sh bits
        if U1 > 0:
            c[:n] = 0
            for u in range(U1 + 3):  # after U1 + 3 digits the carry is the sign (0 or -1)
                dst = acc[a0 + u]
                if u < U1:
                    src = P[u]
                    for e in range(n):
                        v = c[e] + np.int64(src[e0 + e])
                        dst[e] += (v & MASK) << r0
                        c[e] = v >> B
                else:
                    for e in range(n):
                        v = c[e]
                        dst[e] += (v & MASK) << r0
                        c[e] = v >> B
            dst = acc[a0 + U1 + 3]
            for e in range(n):
                dst[e] += c[e] << r0
        # - y + b, digit by digit
        for u in range(n_alloc):
            _float_digits(y[e0:e0 + n], q0, u, tmp)
            dst = acc[u]
            for e in range(n):
                dst[e] -= tmp[e]
            _float_digits(bfull[e0:e0 + n], q0, u, tmp)
            for e in range(n):
                dst[e] += tmp[e]
        # carry to two's complement digits
        c[:n] = 0
        for u in range(n_alloc):
            src = acc[u]
            out = digs[u]
            for e in range(n):
                v = c[e] + src[e]
                d = v & MASK
                out[e0 + e] = d
                src[e] = d
                c[e] = v >> B
        src = acc[n_alloc]
        for e in range(n):
            v = c[e] + src[e]
            bad |= (v != 0) & (v != -1)
            src[e] = v
            sign[e0 + e] = v
        # column sums and Gram sums of the planes (sign plane last)
        for u in range(nu):
            du = acc[u]
            cu = colacc[u]
            for e in range(n):
                cu[e] += du[e]
        # into the Gram block of the block's first element: each takes at most GRAM_BLOCK + blk elements
        # products, below (2**20 + 2**9) 2**42 < 2**63
        g = gram[e0 // GRAM_BLOCK]
        for u in range(nu):
            du = acc[u]
            for v_ in range(u, nu):
                dv = acc[v_]
                t = np.int64(0)
                for e in range(n):
                    t += du[e] * dv[e]
                g[u, v_] += t
        # digits for X^T R, side by side per row
        i0 = e0 // K  # blocks start on a row
        for u in range(n_alloc):
            src = acc[u]
            for r in range(n // K):
                dst = rcat[i0 + r, u]
                for j in range(K):
                    dst[j] = src[r * K + j]
        # planes needed: the highest digit that is not the sign's extension, plus a sign digit
        h[:n] = -1
        for u in range(n_alloc):
            src = acc[u]
            sg = acc[n_alloc]
            for e in range(n):
                h[e] = u if src[e] != (sg[e] & MASK) else h[e]
        for e in range(n):
            used = max(used, h[e] + 2)
        # magnitudes: -value = sum (MASK - d_u) 2**(B u) + 1 for the negative ones
        sg = acc[n_alloc]
        for e in range(n):
            c[e] = -sg[e]  # 1 where negative
        for u in range(n_alloc):
            src = acc[u]
            dst = mag[u]
            for e in range(n):
                neg = sg[e] < 0
                v = (MASK - src[e]) + c[e]
                dst[e] = (v & MASK) if neg else src[e]
                c[e] = (v >> B) if neg else 0
        h[:n] = -1
        lowest[:n] = n_alloc
        for u in range(n_alloc):
            src = mag[u]
            for e in range(n):
                h[e] = u if src[e] != 0 else h[e]
        for u in range(n_alloc - 1, -1, -1):
            src = mag[u]
            for e in range(n):
                lowest[e] = u if src[e] != 0 else lowest[e]
        for e in range(n):
            rbits[e0 + e] = _round_bits(mag, e, h[e], lowest[e], sg[e] < 0, q0)
    if bad:
        raise ValueError("residual digits: too few planes")
    colsum = np.zeros((nu, K), dtype=np.int64)
    for u in range(nu):
        for e in range(blk):
            colsum[u, e % K] += colacc[u, e]
    return digs, sign, colsum, gram, rbits, used


@njit(cache=True, nogil=True)
def _round_bits(mag: np.ndarray, e: int, h: int, lowest: int, neg: bool, q0: int) -> np.int64:  # pragma: no cover
    """Bit pattern of the nearest float64 (ties to even, subnormals, ``±inf``) of ``±sum_u mag[u, e] 2**(B u + q0)``
    (``h``, ``lowest``: the highest and lowest nonzero digit, ``h = -1`` for 0). The pattern of ``q 2**t`` with
    ``t >= -1074`` the last kept bit and ``q <= 2**53`` is ``(t + 1074) 2**52 + q`` for normal and subnormal
    results alike (a carry into bit 53 or 52 moves the exponent field)."""
    if h < 0:
        return np.int64(0)
    dh = mag[h, e]
    d1 = mag[h - 1, e] if h >= 1 else 0
    d2 = mag[h - 2, e] if h >= 2 else 0
    d3 = mag[h - 3, e] if h >= 3 else 0
    p = 64 - _clz(dh)  # bit length of the top digit, 1..B
    # M: the top 62 bits (top bit at 61); sticky: any lower bit set
    M = (dh << (62 - p)) | (d1 << (41 - p))
    s2 = 20 - p
    sticky = lowest < h - 3
    if s2 >= 0:
        M |= d2 << s2
    else:
        M |= d2 >> 1
        sticky |= (d2 & 1) != 0
    r3 = p + 1
    M |= d3 >> r3
    sticky |= (d3 & ((1 << r3) - 1)) != 0
    E = B * h + p - 62 + q0  # value = (M + frac) * 2**E
    t = max(E + 61 - 52, -1074)  # exponent of the last kept bit
    drop = t - E  # >= 9
    if drop > 62:
        q = np.int64(0)  # below half the smallest subnormal
    else:
        q = M >> drop
        rr = M & ((1 << drop) - 1)
        half = np.int64(1) << (drop - 1)
        if rr > half or (rr == half and (sticky or (q & 1) == 1)):
            q += 1
    if t > 971:  # (t = 971 with q = 2**53 gives the pattern of inf as it is)
        bits = np.int64(0x7FF) << 52  # beyond the largest finite float64
    else:
        bits = (np.int64(t + 1074) << 52) + q
    return bits | (np.int64(1) << 63) if neg else bits


@njit(cache=True, nogil=True)
def _clz(x: np.int64) -> int:  # pragma: no cover - compiled
    """Leading zero bits of a positive int64 below ``2**53``."""
    return 64 - (math.frexp(float(x))[1])
