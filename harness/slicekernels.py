"""Compiled one-pass kernels of the integer-slice oracle (:mod:`harness.fastexact`), with numba.

Each kernel replaces several NumPy passes over ``N x D`` or ``N x K`` arrays
by one loop over the elements, in integer arithmetic that is exact by
construction (int64 digits of ``B = 21`` bits, every intermediate bounded
below ``2**63`` as stated at each kernel). They are compiled on first use
and cached on disk (numba ``cache=True``): the first call in a fresh
checkout compiles them (a few seconds, once), later processes load the cache.

- :func:`float_range`: lowest set-bit exponent and largest magnitude of a float64 array.
- :func:`digits_cat`: base-``2**B`` signed digits of ``x / 2**q``, plane-major and transposed.
- :func:`residual_digits`: the exact residual ``R = X W + 1 b^T - Y`` in two's complement
  digits (planes of ``R^T``, float64, ready for the ``X^T R`` product), from the exact digit
  products of ``X W``, with in the same pass its correctly rounded float64 value, the column
  sums of the planes (``1^T R``) and their Gram sums (``sum R^2``).
- :func:`round_digits`: the correctly rounded float64 of normalised two's complement digits.
- :func:`weighted_plane_sum`, :func:`low_part`: the float64 parts of the accurate ``X^T R`` in one pass each.
- :func:`position_words`: sums of int64 digit products by digit position, carried to two's complement words.

Loops run over blocks of elements with the digit plane outermost, so that the
inner loops are branch-free and LLVM vectorises them. Each inner loop runs from 0
over slices of the block (``a[e0:e0 + n]``, not ``a[e0 + e]``), and writes few
arrays: LLVM vectorises such loops far better (the residual kernel's block loops
written so: 0.14-0.18 against 0.20 ms per call at 8,192 elements, 9 planes).

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
#: Elements per Gram block of :func:`residual_digits` (products of two digits, one of them a top digit folded with the sign,
#: in [-2**B, 2**B), are at most 2**42: 2**20 of them sum to at most 2**62, below it off the diagonal).
GRAM_BLOCK = 1 << 20
#: :func:`float_range`'s exponent for an array without a nonzero entry.
NO_BIT = 1 << 62


#: Elements per block of :func:`float_range`'s two branch-free passes.
RANGE_BLOCK = 1024


@njit(cache=True, nogil=True)
def float_range(x: np.ndarray) -> tuple[int, float]:  # pragma: no cover - compiled
    """(lowest set-bit exponent among the nonzero entries, largest magnitude) of a contiguous
    float64 array, from the bit patterns in one pass; ``2**62`` as the exponent when all are zero.
    Entries must be finite.

    Branch-free, in blocks: the lowest set bit of each significand ``m`` is ``m & -m``, a power of two that
    converts to float64 exactly, so its exponent field gives the trailing zero count; the largest
    magnitude is the largest bit pattern with the sign cleared (monotone in ``|x|`` for finite values).
    Integer operations only (but that conversion), the implicit bit and the subnormals' exponent 1 formed
    arithmetically rather than by comparisons: LLVM vectorises both loops (0.09 against 0.23 ms for
    N*D = 250,000, with ``max(ex, 1)`` and a comparison for the implicit bit)."""
    flat = x.ravel()
    bits = flat.view(np.int64)
    low = NO_BIT
    topb = np.int64(0)
    fbuf = np.empty(RANGE_BLOCK)
    fb = fbuf.view(np.int64)
    for e0 in range(0, bits.size, RANGE_BLOCK):
        n = min(RANGE_BLOCK, bits.size - e0)
        blk = bits[e0:e0 + n]
        for e in range(n):
            v = blk[e]
            topb = max(topb, v & 0x7FFFFFFFFFFFFFFF)
            # the significand with its implicit bit 2**52 where the exponent field ex is not 0 ((ex + 2047) >> 11 is
            # 1 for ex from 1 to 2047, 0 for ex = 0)
            m = (v & ((1 << 52) - 1)) | (((((v >> 52) & 0x7FF) + 0x7FF) >> 11) << 52)
            fbuf[e] = float(m & -m)  # the significand's lowest set bit 2**t (0.0 for a zero): exponent field 1023 + t
        for e in range(n):
            ex = (blk[e] >> 52) & 0x7FF
            z = fb[e]
            # the exponent of the significand's last bit is max(ex, 1) - 1075 = ex + [ex = 0] - 1075; its lowest set
            # bit's, that plus t: the offset 1075 + 1023 taken off once, after the minimum
            low = min(low, ex + np.int64(ex == 0) + (z >> 52) if z != 0 else NO_BIT)
    top = np.empty(1, dtype=np.int64)
    top[0] = topb
    return (low - 1075 - 1023 if low != NO_BIT else low), top.view(np.float64)[0]


#: Rows per block of :func:`digits_cat`: its two working columns (16 KiB) stay in the L1 or L2 cache, and each of the
#: S * D rows it writes at once gets 8 KiB runs (256 rows: 4-15% slower at N = 156,250, as fast at 15,625).
DIGIT_ROWS = 1024
#: Columns from which (to which) :func:`digits_cat` copies each block of rows transposed before cutting digits: at
#: N = 15,625, 0.52-0.66 against 0.69-0.95 ms for D = 16 (5 planes), 8.9 against 11.6 ms for D = 100 and 33 against
#: 46 ms for D = 300; the strided reads were faster at D = 2 (N = 100,000: 0.44 against 0.55 ms) and D = 2,100
#: (N = 3,000: 65 against 78 ms, a transposed block of 17 MB).
DIGIT_TRANSPOSE_COLS = 8
DIGIT_TRANSPOSE_MAX_COLS = 512


@njit(cache=True, nogil=True)
def digits_cat(x: np.ndarray, q1: int, n: int, s0: int, out: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Signed base-``2**B`` digits of the integers ``x / 2**q1`` (``x`` 2-D float64, finite, ``q1`` at most
    its lowest set-bit exponent, every ``|x| / 2**q1 < 2**(B n)``): ``n`` digits, placed after ``s0`` zero
    digits (the digits of ``x / 2**(q1 - B s0)``), plane-major and transposed.

    Args:
        out: float64 ``((s0 + n) * cols, rows)``, written entirely and returned: digit ``s`` of ``x[i, j]`` at
            ``[s * cols + j, i]`` (row block ``s`` is the transpose of plane ``s``, the layout in which the digit
            products of :mod:`harness.fastexact` read it), of the sign of ``x``, ``|digit| < 2**B``. Exact: each
            digit is a field of bits of the significand of ``x``, cut out by exact float64 scalings and integer parts.
    """
    rows, cols = x.shape
    out[:s0 * cols, :] = 0.0
    # In float64, exactly: y = x 2**-q1 is an integer below 2**(B n) <= 2**1000 (a scaling by a power of two,
    # in two factors where 2**-q1 is beyond float64's range), each t_s = trunc(y 2**(-B s)) is exact (a scaling
    # whose result is 0 or at least 2**-1008, normal, then an integer part), and digit s = t_s - 2**B t_(s+1)
    # is an integer below 2**B in magnitude, of the sign of x (the same bits as a shift of the significand).
    if q1 >= -1000:
        f1 = math.ldexp(1.0, -q1)
        f2 = 1.0
    else:
        f1 = math.ldexp(1.0, 600)
        f2 = math.ldexp(1.0, -q1 - 600)
    w = np.empty(n + 1)
    for s in range(n + 1):
        w[s] = math.ldexp(1.0, -B * s)
    base = float(1 << B)
    yv = np.empty(DIGIT_ROWS)
    tp = np.empty(DIGIT_ROWS)  # t_s of each row of the block (t_0 = y, an integer)
    # From DIGIT_TRANSPOSE_COLS to DIGIT_TRANSPOSE_MAX_COLS columns, the block is first copied transposed, row by row
    # (contiguous reads; its rows padded so that the columns do not alias in the cache), rather than read a column at a
    # time with a stride
    tr = DIGIT_TRANSPOSE_COLS <= cols <= DIGIT_TRANSPOSE_MAX_COLS
    xb = np.empty((cols if tr else 0, DIGIT_ROWS + 8))
    for i0 in range(0, rows, DIGIT_ROWS):
        m = min(rows, i0 + DIGIT_ROWS) - i0
        if tr:
            for r in range(m):
                for j in range(cols):
                    xb[j, r] = x[i0 + r, j]
        for j in range(cols):
            if tr:
                xj = xb[j]
                for r in range(m):
                    yv[r] = (xj[r] * f1) * f2
                    tp[r] = yv[r]
            else:
                for r in range(m):
                    yv[r] = (x[i0 + r, j] * f1) * f2
                    tp[r] = yv[r]
            for s in range(n):  # digit-major inner loops over the block's rows: contiguous stores, vectorised
                ws1 = w[s + 1]
                o = out[(s0 + s) * cols + j, i0:i0 + m]
                for r in range(m):
                    t1 = np.trunc(yv[r] * ws1)
                    o[r] = tp[r] - t1 * base
                    tp[r] = t1
    return out


@njit(cache=True, nogil=True)
def round_digits(d: np.ndarray, q0: int) -> np.ndarray:  # pragma: no cover - compiled
    """Nearest float64 of each column of normalised two's complement digits ``d`` (int64 ``(U, M)``:
    ``0 <= d[u] < 2**B`` for ``u < U - 1``, ``d[U - 1]`` 0 or -1), over ``2**q0``. Returns ``(M,)``."""
    n1, m = d.shape
    n = n1 - 1
    mag = np.zeros((n + 1, m), dtype=np.int64)
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
        if c:  # -2**(B n): every digit below the sign is 0, the magnitude's carry lands in plane n
            mag[n, j] = 1
            h = n
        out[j] = _round_top(mag[h, j] if h >= 0 else 0, mag[h - 1, j] if h >= 1 else 0,
                            mag[h - 2, j] if h >= 2 else 0, mag[h - 3, j] if h >= 3 else 0, h, lowest, neg, q0)
    return out.view(np.float64)


#: Elements per block of :func:`residual_digits` (its int64 working planes stay in cache).
BLOCK = 512


@njit(cache=True, nogil=True)
def _significand_field(m: int, a: int) -> int:  # pragma: no cover - compiled
    """Bits ``a .. a + B - 1`` of the significand ``m`` (below ``2**53``; bits below 0 are 0), branch-free, the
    shifts clamped to 63."""
    lo = m >> min(max(a, 0), 63)
    hi = m << min(max(-a, 0), 63)
    return (lo if a >= 0 else hi) & MASK


@njit(cache=True, nogil=True)
def _digit_of(v: int, q0: int, u: int) -> np.int64:  # pragma: no cover - compiled
    """Signed digit ``u`` (base ``2**B``) of ``z / 2**q0`` for the float64 ``z`` whose bit pattern is ``v`` (set bits
    at or above ``2**q0``), branch-free: a field of bits of the significand (:func:`_significand_field`)."""
    ex = (v >> 52) & 0x7FF
    m = (v & ((1 << 52) - 1)) | (np.int64(ex > 0) << 52)
    dg = np.int64(_significand_field(int(m), B * u - (max(ex, 1) - 1075 - q0)))
    return -dg if v < 0 else dg


#: Elements whose digit products :func:`_gram_block` sums in float64 at a time (``2**11`` products below ``2**42``
#: sum below ``2**53``: exact).
GRAM_CHUNK = 1 << 11


@njit(cache=True, nogil=True, fastmath=True)
def _gram_block(f: np.ndarray, n: int, e0: int, gram: np.ndarray) -> None:  # pragma: no cover - compiled
    """``gram[(e0 + c) // GRAM_BLOCK, u, v] += sum f[u, e] f[v, e]`` (``u <= v``) over the first ``n`` elements of a
    block that starts at element ``e0``, for digit planes held as float64 integers in ``[-2**B, 2**B)``, in
    chunks ``c`` of :data:`GRAM_CHUNK` elements: each product is at most ``2**42`` and a chunk's sum at most
    ``2**53``, so every partial sum is exact in float64 in any order (which is why reassociation, ``fastmath``, changes
    nothing); each chunk's sum goes to the int64 row of the :data:`GRAM_BLOCK` elements its first element belongs to,
    which thus takes at most ``GRAM_BLOCK + GRAM_CHUNK`` products: below ``2**63`` (exactly ``GRAM_BLOCK`` where the
    blocks of :func:`residual_digits`, :data:`BLOCK` elements, divide ``GRAM_BLOCK``: the sum of squares doubles
    the entries off the diagonal)."""
    nu = f.shape[0]
    for c0 in range(0, n, GRAM_CHUNK):
        c1 = min(n, c0 + GRAM_CHUNK)
        g = gram[(e0 + c0) // GRAM_BLOCK]
        for u in range(nu):
            fu = f[u, c0:c1]
            v = u
            while v + 4 <= nu:  # four planes against plane u in one pass (plane u read once for the four)
                t0, t1, t2, t3 = _dot4(fu, f[v, c0:c1], f[v + 1, c0:c1], f[v + 2, c0:c1], f[v + 3, c0:c1])
                g[u, v] += np.int64(t0)
                g[u, v + 1] += np.int64(t1)
                g[u, v + 2] += np.int64(t2)
                g[u, v + 3] += np.int64(t3)
                v += 4
            for w in range(v, nu):
                g[u, w] += np.int64(_dot(fu, f[w, c0:c1]))


@njit(cache=True, nogil=True, fastmath=True)
def _dot4(a: np.ndarray, b0: np.ndarray, b1: np.ndarray, b2: np.ndarray,
          b3: np.ndarray) -> tuple[float, float, float, float]:  # pragma: no cover - compiled
    """``sum a[e] b_i[e]`` for four arrays ``b_i`` in one loop, in float64 in any order (as :func:`_dot`, whose
    conditions it is called under: every partial sum an exact integer)."""
    t0 = 0.0
    t1 = 0.0
    t2 = 0.0
    t3 = 0.0
    for e in range(a.size):
        x = a[e]
        t0 += x * b0[e]
        t1 += x * b1[e]
        t2 += x * b2[e]
        t3 += x * b3[e]
    return t0, t1, t2, t3


@njit(cache=True, nogil=True, fastmath=True)
def _dot(a: np.ndarray, b: np.ndarray) -> float:  # pragma: no cover - compiled
    """``sum a[e] b[e]`` in float64, in any order (``fastmath``: vectorised; :func:`_gram_block` calls it only where
    every partial sum is an exact integer, so the order changes nothing). A loop from 0 over whole arrays: LLVM
    vectorises it about four times better than the same loop over an offset range."""
    t = 0.0
    for e in range(a.size):
        t += a[e] * b[e]
    return t


@njit(cache=True, nogil=True)
def _plane_range(lo: int, top_exp: int, q0: int, n_alloc: int) -> tuple[int, int]:  # pragma: no cover - compiled
    """Digit planes ``[first, last]`` (base ``2**B`` over ``2**q0``) that can hold set bits of values whose set bits
    lie between exponents ``lo`` and ``top_exp`` (``lo = NO_BIT``: no values), clipped to ``n_alloc`` planes."""
    if lo == NO_BIT:
        return 0, -1
    return max(0, (lo - q0) // B), min(n_alloc - 1, (top_exp - q0) // B)


@njit(cache=True, nogil=True)
def residual_digits(P: np.ndarray, sh: int, y: np.ndarray, yrange: tuple[int, int], b: np.ndarray,
                    brange: tuple[int, int], q0: int, planes: np.ndarray,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:  # pragma: no cover - compiled
    """The exact residual ``R = X W + 1 b^T - y`` over ``2**q0``, column by column (the elements of ``R^T`` in
    order, ``e = j N + i``), in blocks of :data:`BLOCK` elements, every pass over a block's digit planes
    branch-free and over contiguous memory (``b``'s digits and the column sums by the block's column segments).

    Args:
        P: float64 ``(U1, K, N)``: digit position ``u`` of the integer ``X W / 2**(q0 + sh)`` for each
            element of ``(X W)^T``: exact integers below ``2**53`` in magnitude, any sign.
        sh: ``q_XW - q0 >= 0``, bits.
        y: float64 ``(K, N)`` (``Y^T``, contiguous); b: float64 ``(K,)``: set bits at or above ``2**q0``.
        yrange, brange: (lowest set-bit exponent or :data:`NO_BIT`, exponent of the top bit) of ``y`` and ``b``:
            only the digit planes that can hold their bits are visited.
        q0: the scale's exponent.
        planes: float64 ``(n_alloc, K, N)``, C-contiguous, written (its contents on entry are not read; a caller may
            reuse one buffer): ``n_alloc`` digit planes to work in (enough for every value plus a sign digit, and more
            than ``sh // B + U1``).

    Returns:
        ``planes`` (the array given): the digits of ``R^T``, ``[0, 2**B)`` in planes below ``U - 1`` and
        the sign (0 or -1) in plane ``U - 1`` (the planes above are not meaningful): ``R^T = sum_{u < U} planes[u]
        2**(B u)``; ``colsum`` int64 ``(n_alloc + 1, K)``: column sums of the planes ``0 .. n_alloc - 1`` and of
        the sign plane (last), for the value ``sum_u digit_u 2**(B u) + sign 2**(B n_alloc)``; ``gram`` int64
        ``(blocks, n_alloc + 1, n_alloc + 1)``: ``sum d_u d_v`` (``u <= v``) over :data:`GRAM_BLOCK` elements each, of
        digits for which ``R = sum_u d_u 2**(B u)`` (each block of :data:`BLOCK` elements over its planes up to its
        highest digit that is not a sign extension, that digit folded with the sign; the entries of higher planes 0),
        so that ``sum R**2 = sum_{u <= v} (2 - [u = v]) gram[u, v] 2**(B (u + v))`` as before; the rounded residual's
        float64 bit patterns ``(K, N)``; and ``U``, the
        planes needed. Raises ValueError if ``n_alloc`` is too small.

    Bounds: ``P``'s positions in int64 as they are (below ``2**53``), or split at ``B - r0`` bits (parts below
    ``2**B`` and ``2**52``), at most one whole or two parts per plane, plus digits of ``y`` and ``b`` (below
    ``2**B``): every plane below ``2**54`` before the carry, whose carries stay below ``2**34``: no int64 overflow
    (the value is the same, so are its two's complement digits and its sign); the Gram products are
    below ``2**42``, so :data:`GRAM_BLOCK` of them sum below ``2**62``; the column sums below ``N 2**B``.
    """
    U1 = P.shape[0]
    K = y.shape[0]
    N = y.shape[1]
    M = K * N
    n_alloc = planes.shape[0]
    if planes.shape[1] != K or planes.shape[2] != N:
        raise ValueError("residual digits: planes of another shape")
    a0 = sh // B
    r0 = sh - a0 * B
    nu = n_alloc + 1  # with the sign plane
    blk = BLOCK
    pf = planes.reshape(n_alloc, M)
    Pf = P.reshape(U1, M)
    yf = y.reshape(M)
    yb = yf.view(np.int64)
    sign = np.empty(M, dtype=np.int64)
    rbits = np.empty(M, dtype=np.int64)
    colsum = np.zeros((nu, K), dtype=np.int64)
    nb = max(1, -(-M // GRAM_BLOCK))
    gram = np.zeros((nb, nu, nu), dtype=np.int64)
    if U1 > 0 and a0 + U1 >= n_alloc:
        raise ValueError("residual digits: too few planes")
    acc = np.empty((nu, blk), dtype=np.int64)
    c = np.empty(blk, dtype=np.int64)
    ym = np.empty(blk, dtype=np.int64)
    ys = np.empty(blk, dtype=np.int64)
    yn = np.empty(blk, dtype=np.int64)
    w0 = np.empty(blk, dtype=np.int64)
    w1 = np.empty(blk, dtype=np.int64)
    w2 = np.empty(blk, dtype=np.int64)
    w3 = np.empty(blk, dtype=np.int64)
    facc = np.empty((nu, blk))
    h = np.empty(blk, dtype=np.int64)
    hm = np.empty(blk, dtype=np.int64)
    lowest = np.empty(blk, dtype=np.int64)
    y0, y1 = _plane_range(yrange[0], yrange[1], q0, n_alloc)
    b0, b1 = _plane_range(brange[0], brange[1], q0, n_alloc)
    bdig = np.zeros((K, max(b1 - b0 + 1, 0)), dtype=np.int64)  # b's digits, per column
    bbits = b.view(np.int64)
    for j in range(K):
        for u in range(b0, b1 + 1):
            bdig[j, u - b0] = _digit_of(bbits[j], q0, u)
    used = 1
    bad = False
    lbits = B - r0  # P's positions shifted by r0 bits: the low lbits bits stay in their plane, the rest go up one
    lmask = (np.int64(1) << lbits) - 1
    for e0 in range(0, M, blk):
        n = min(blk, M - e0)
        j0 = e0 // N  # the block's elements lie in columns j0 .. j1 (a block may span several columns)
        j1 = (e0 + n - 1) // N
        acc[:, :n] = 0
        # X W's digit positions shifted by sh bits, as they are (not carried: the carry below carries them with y's
        # and b's digits, to the same two's complement digits): position u into plane a0 + u where the shift is whole
        # planes, else its low B - r0 bits shifted by r0 there and the rest (arithmetic shift) in plane a0 + u + 1
        if U1 > 0:
            if r0 == 0:
                for u in range(U1):
                    dst = acc[a0 + u]
                    src = Pf[u, e0:e0 + n]
                    for e in range(n):
                        dst[e] = np.int64(src[e])
            else:
                for u in range(U1):
                    dst = acc[a0 + u]
                    up = acc[a0 + u + 1]
                    src = Pf[u, e0:e0 + n]
                    for e in range(n):
                        v = np.int64(src[e])
                        dst[e] += (v & lmask) << r0
                        up[e] += v >> lbits
        # - y + b, digit by digit, over the planes that can hold their bits (a field of bits of each significand):
        # y's significand, the exponent of its bit 0 over 2**q0 and its sign decoded once per element
        if y1 >= y0:
            yblk = yb[e0:e0 + n]
            for e in range(n):
                v = yblk[e]
                ex = (v >> 52) & 0x7FF
                ym[e] = (v & ((1 << 52) - 1)) | (np.int64(ex > 0) << 52)
                ys[e] = max(ex, 1) - 1075 - q0
                yn[e] = ~(v >> 63)  # -1 for y >= 0 (its digits subtracted), 0 for y < 0 (added)
        for u in range(y0, y1 + 1):
            dst = acc[u]
            for e in range(n):
                dg = _significand_field(ym[e], B * u - ys[e])  # as _digit_of, the decoding done above
                sn = yn[e]
                dst[e] += (dg ^ sn) - sn
        for j in range(j0, j1 + 1):
            s0 = max(e0, j * N) - e0
            s1 = min(e0 + n, (j + 1) * N) - e0
            for u in range(b0, b1 + 1):
                dst = acc[u, s0:s1]  # (loops from 0 over whole arrays: see _dot)
                bd = bdig[j, u - b0]
                for e in range(dst.size):
                    dst[e] += bd
        # carry to two's complement digits, written out as float64 (exact: below 2**B) to the block's float64 copy
        # that the Gram sums read, then copied to the planes (a loop of its own: one array fewer in the carry's loop)
        c[:n] = 0
        for u in range(n_alloc):
            src = acc[u]
            out = pf[u]
            fdst = facc[u]
            for e in range(n):
                v = c[e] + src[e]
                d = v & MASK
                fdst[e] = float(d)
                src[e] = d
                c[e] = v >> B
            ob = out[e0:e0 + n]
            for e in range(n):
                ob[e] = fdst[e]
        # the lowest nonzero digit (``lowest``, ``n_alloc`` if none) and the highest digit that is not 0 (``h``) and
        # not MASK (``hm``), -1 if none: the highest digit that is not the sign's extension, for either sign (a loop
        # of its own: with more arrays in one loop LLVM's checks that they do not overlap exceed its limit, and it
        # would not vectorise)
        h[:n] = -1
        hm[:n] = -1
        lowest[:n] = n_alloc
        for u in range(n_alloc):
            src = acc[u]
            for e in range(n):
                d = src[e]
                h[e] = u if d != 0 else h[e]
                hm[e] = u if d != MASK else hm[e]
                lowest[e] = min(lowest[e], u if d != 0 else n_alloc)
        # the sign (0 or -1), and the magnitude's highest nonzero digit h: the value's for a positive one; for a
        # negative one, whose magnitude's digits are (MASK - d_u) above its lowest nonzero digit, 2**B - d_u there
        # and 0 below (the +1 of -value = sum (MASK - d_u) 2**(B u) + 1 carries up to the lowest nonzero digit),
        # the highest digit not MASK or the lowest nonzero one, whichever is higher (-1 for no nonzero digit)
        src = acc[n_alloc]
        top = -1  # the highest digit of the block that is not its value's sign extension
        sgb = sign[e0:e0 + n]
        for e in range(n):
            v = c[e] + src[e]
            bad |= (v != 0) & (v != -1)
            src[e] = v
            sgb[e] = v
            neg = v < 0
            lo = lowest[e]
            hx = hm[e] if neg else h[e]
            top = max(top, hx)
            h[e] = ((max(hx, lo) if lo < n_alloc else np.int64(-1)) if neg else hx)
        # column sums of the planes (sign plane last)
        for j in range(j0, j1 + 1):
            s0 = max(e0, j * N) - e0
            s1 = min(e0 + n, (j + 1) * N) - e0
            for u in range(nu):
                du = acc[u, s0:s1]
                t = np.int64(0)
                for e in range(du.size):
                    t += du[e]
                colsum[u, j] += t
        # the Gram sums of the planes, exact (in float64 over chunks of GRAM_CHUNK elements, see _gram_block), over the
        # block's planes 0 .. t (t = max(top, 0)) alone: above top every digit is its value's sign extension, so the
        # value is sum_{u < t} d_u 2**(B u) + (d_t + sign 2**B) 2**(B t), the top digit folded with the sign, in
        # [-2**B, 2**B) (the digit planes' float64 copies were written by the carry; row t is overwritten with the
        # folded digit): (t + 1)(t + 2) / 2 sums, not (n_alloc + 1)(n_alloc + 2) / 2, each product still at most 2**(2B)
        tt = top if top >= 0 else 0
        src = acc[n_alloc]  # the sign (0 or -1)
        dt = acc[tt]
        dst = facc[tt]
        for e in range(n):
            dst[e] = float(dt[e] + (src[e] << B))
        _gram_block(facc[:tt + 1], n, e0, gram)
        # planes needed: the highest plane where some digit is not the sign's extension (sg & MASK), plus a sign
        # digit
        used = max(used, top + 2)
        # the two's complement digits in planes h .. h - 3 (0 below plane 0), from which _round_block takes the
        # magnitude's top digits: read where they lie (the block's planes stay in cache; selecting them plane by plane,
        # branch-free, cost a fifth of the kernel on mixed-magnitude data: 3.66 against 2.97 ms at N K = 62,500)
        for e in range(n):
            hh = h[e]
            w0[e] = acc[hh, e] if hh >= 0 else 0
            w1[e] = acc[hh - 1, e] if hh >= 1 else 0
            w2[e] = acc[hh - 2, e] if hh >= 2 else 0
            w3[e] = acc[hh - 3, e] if hh >= 3 else 0
        _round_block(w0, w1, w2, w3, h, lowest, acc[n_alloc], n, q0, rbits[e0:e0 + n])
    if bad or used > n_alloc:  # (a digit in the top plane that is not the sign's extension: its sign plane, U - 1,
        # would lie past the planes, and writing it there would write past the array, which numba does not check)
        raise ValueError("residual digits: too few planes")
    # the sign in plane U - 1 (the planes U - 1 .. n_alloc - 1 hold its extension)
    out = pf[used - 1]
    for e in range(M):
        out[e] = sign[e]
    return planes, colsum, gram, rbits.reshape(K, N), used


@njit(cache=True, nogil=True)
def _mag_digit(d: int, u: int, lowest: int, neg: bool) -> np.int64:  # pragma: no cover - compiled
    """Digit ``u`` of the magnitude of a value from its two's complement digit ``d`` (``[0, 2**B)``) there and its
    lowest nonzero digit ``lowest``, branch-free: ``d`` for a positive value; for a negative one (``-value = sum
    (MASK - d_v) 2**(B v) + 1``, the +1 carried up to the lowest nonzero digit) ``MASK - d`` above ``lowest``,
    ``2**B - d`` at it (``d >= 1``: at most MASK) and 0 below it."""
    m = (MASK - d + np.int64(u == lowest)) * np.int64(u >= lowest)
    return m if neg else np.int64(d)


@njit(cache=True, nogil=True)
def _round_block(w0: np.ndarray, w1: np.ndarray, w2: np.ndarray, w3: np.ndarray, h: np.ndarray, lowest: np.ndarray,
                 sg: np.ndarray, n: int, q0: int, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """:func:`_round_top` of the first ``n`` values into ``out`` (int64 bit patterns), given their magnitudes'
    highest and lowest nonzero digits ``h`` and ``lowest``, their signs ``sg`` (0 or -1) and their two's complement
    digits ``w0 .. w3`` in planes ``h .. h - 3`` (0 below plane 0; the magnitude's digits from :func:`_mag_digit`),
    branch-free for results in float64's normal range: the top 62 bits ``M`` of the magnitude (top bit at 61) with
    a sticky bit ``s`` for every lower bit ORed into bit 0, rounded to 53 bits to nearest, ties to even, in integer
    arithmetic (``q = (M + 255 + bit 9 of M) >> 9``, below ``2**62 + 2**9``: 9 bits dropped, bit 0 acting only as a
    sticky bit: exactly the correct rounding, ``q <= 2**53``), whose ``q 2**(E + 9)`` has the pattern
    ``(E + 9 + 1074) 2**52 + q`` while the result is normal. Subnormal results, results near the overflow threshold
    and zero go through :func:`_round_top`. One loop writing one array, so that LLVM vectorises it."""
    slow = False
    for e in range(n):
        hh = h[e]
        lw = lowest[e]
        neg = sg[e] < 0
        dh = _mag_digit(w0[e], hh, lw, neg)
        d1 = _mag_digit(w1[e], hh - 1, lw, neg)
        d2 = _mag_digit(w2[e], hh - 2, lw, neg)
        d3 = _mag_digit(w3[e], hh - 3, lw, neg)
        # p: bit length of the top digit (1..B), a branch-free binary search
        t = dh
        p = np.int64(0)
        s = np.int64(t >= (1 << 16)) * 16
        t >>= s
        p += s
        s = np.int64(t >= (1 << 8)) * 8
        t >>= s
        p += s
        s = np.int64(t >= (1 << 4)) * 4
        t >>= s
        p += s
        s = np.int64(t >= (1 << 2)) * 2
        t >>= s
        p += s
        s = np.int64(t >= 2)
        t >>= s
        p += s + t
        p = max(p, np.int64(1))  # (dh = 0 only for a zero value, which is not taken from here)
        M = (dh << (62 - p)) | (d1 << (41 - p))
        s2 = 20 - p
        M |= (d2 << max(s2, np.int64(0))) if s2 >= 0 else (d2 >> 1)
        stk = (lw < hh - 3) | ((s2 < 0) & ((d2 & 1) != 0))
        r3 = p + 1
        M |= d3 >> r3
        stk |= (d3 & ((np.int64(1) << r3) - 1)) != 0
        M |= np.int64(stk)
        q = (M + 0xFF + ((M >> 9) & 1)) >> 9
        E = B * hh + p - 62 + q0  # value = (M + fraction) 2**E
        good = (hh >= 0) & (E >= -1083) & (E <= 961)  # q 2**(E + 9) normal: biased exponent 1084 + E (+1) in [1, 2046]
        slow |= not good
        out[e] = (((E + 1083) << 52) + q) | (np.int64(neg) << 63)
    if slow:
        for e in range(n):
            hh = h[e]
            lw = lowest[e]
            neg = sg[e] < 0
            dtop = int(_mag_digit(w0[e], hh, lw, neg))
            E = B * hh + (64 - _clz(max(dtop, 1))) - 62 + q0  # as above (p: the bit length of dtop, at least 1)
            if not ((hh >= 0) & (E >= -1083) & (E <= 961)):
                out[e] = _round_top(dtop if hh >= 0 else 0, int(_mag_digit(w1[e], hh - 1, lw, neg)) if hh >= 1 else 0,
                                    int(_mag_digit(w2[e], hh - 2, lw, neg)) if hh >= 2 else 0,
                                    int(_mag_digit(w3[e], hh - 3, lw, neg)) if hh >= 3 else 0, hh, lw, neg, q0)


@njit(cache=True, nogil=True)
def _round_top(dh: int, d1: int, d2: int, d3: int, h: int, lowest: int, neg: bool,
               q0: int) -> np.int64:  # pragma: no cover - compiled
    """Bit pattern of the nearest float64 (ties to even, subnormals, ``±inf``) of ``±sum_u mag_u 2**(B u + q0)``
    from the magnitude's digits ``mag_h .. mag_(h-3)`` (``dh .. d3``; 0 below plane 0) and ``h``, ``lowest``: its
    highest and lowest nonzero digit, ``h = -1`` for 0. The pattern of ``q 2**t`` with
    ``t >= -1074`` the last kept bit and ``q <= 2**53`` is ``(t + 1074) 2**52 + q`` for normal and subnormal
    results alike (a carry into bit 53 or 52 moves the exponent field)."""
    if h < 0:
        return np.int64(0)
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
        q = 0  # below half the smallest subnormal
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
def _clz(x: int) -> int:  # pragma: no cover - compiled
    """Leading zero bits of a positive int64 below ``2**53``."""
    return 64 - (math.frexp(float(x))[1])


@njit(cache=True, nogil=True)
def position_words(p4: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """``sum_{s,u} p4[s, a, u, j] 2**(B (s + u))`` for every ``(a, j)``, as two's complement words: int64
    ``(D * K, words)``, little-endian (element ``a K + j``; the bytes of a row are the value's two's complement,
    the last word's top bit its sign).

    Args:
        p4: int64 ``(S, D, U, K)``, any values.

    Exact in int64: each entry is split into its low ``B`` bits and the rest (``v = lo + 2**B hi``, ``0 <= lo < 2**B``,
    ``|hi| <= 2**(63 - B)``); at most ``min(S, U)`` pairs share a digit position, so each position's sum is below
    ``min(S, U) 2**(64 - B) < 2**63`` for ``min(S, U) < 2**20``; the sums are carried to two's complement digits of
    ``B`` bits (the carry settles to the sign, 0 or -1, within three digits past the last position), whose bits are
    laid end to end and the rest of the last word filled with the sign. Raises ValueError if ``min(S, U) >= 2**20``."""
    S, d, U, k = p4.shape
    if min(S, U) >= 1 << 20:
        raise ValueError("position_words: too many digit pairs per position")
    npos = S + U + 3
    nw = (npos * B) // 64 + 1  # at least one sign bit above the digits
    out = np.zeros((d * k, nw), dtype=np.int64)
    pos = np.empty(npos, dtype=np.int64)
    for a in range(d):
        for j in range(k):
            pos[:] = 0
            for s in range(S):
                for u in range(U):
                    v = p4[s, a, u, j]
                    pos[s + u] += v & MASK
                    pos[s + u + 1] += v >> B
            c = np.int64(0)
            for w in range(npos):
                v = c + pos[w]
                pos[w] = v & MASK
                c = v >> B
            row = out[a * k + j]
            cur = np.uint64(0)
            nb = 0
            o = 0
            for w in range(npos):
                dg = np.uint64(pos[w])
                cur |= dg << np.uint64(nb)
                nb += B
                if nb >= 64:
                    row[o] = np.int64(cur)
                    o += 1
                    nb -= 64
                    cur = dg >> np.uint64(B - nb)  # the digit's bits that did not fit (nb of them)
            if c < 0:  # the sign: every bit above the digits set
                cur |= ~np.uint64(0) << np.uint64(nb)
            row[o] = np.int64(cur)
            for m in range(o + 1, nw):
                row[m] = c
    return out


@njit(cache=True, nogil=True)
def weighted_plane_sum(planes: np.ndarray, weights: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """``fl(...fl(fl(planes[P-1] w[P-1]) + planes[P-2] w[P-2]) ... + planes[0] w[0])`` per element, in that order
    (``planes`` int64 or float64 integers ``(>= P, M)``, ``weights`` float64 ``(P,)``): the float64 operations of NumPy's
    ``out = planes[P-1] * w[P-1]; out += planes[p] * w[p]`` for ``p = P-2 .. 0``, in one pass over blocks of
    :data:`PLANE_SUM_BLOCK` elements (plane by plane within a block: contiguous, vectorised loops; each element's
    operations in the same order, a product then a sum, each rounded). Returns ``(M,)``."""
    P = weights.size
    m = planes.shape[1]
    out = np.empty(m)
    for e0 in range(0, m, PLANE_SUM_BLOCK):
        e1 = min(m, e0 + PLANE_SUM_BLOCK)
        o = out[e0:e1]
        src = planes[P - 1, e0:e1]
        w = weights[P - 1]
        for e in range(o.size):
            o[e] = float(src[e]) * w
        for p in range(P - 2, -1, -1):
            src = planes[p, e0:e1]
            w = weights[p]
            for e in range(o.size):
                o[e] += float(src[e]) * w
    return out


#: Elements per block of :func:`weighted_plane_sum` (its block of sums stays in the L1 cache).
PLANE_SUM_BLOCK = 1024


@njit(cache=True, nogil=True)
def low_part(x: np.ndarray, down: float, up: float, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """``out = x - trunc(x down) up`` element-wise (2-D float64 arrays of one shape, ``down = 2**-h``, ``up = 2**h``):
    the bits of ``x`` below ``2**h``, as :func:`harness.fastexact.truncation` defines them, in one pass."""
    rows, cols = x.shape
    for i in range(rows):
        for j in range(cols):
            out[i, j] = x[i, j] - np.trunc(x[i, j] * down) * up
