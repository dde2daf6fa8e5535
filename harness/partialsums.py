"""Compiled (numba) partial sums of the expected bounds' reductions, without the stacked terms.

:func:`harness.bounds.partial_sum_squares` models ``sum_k s_k^2`` over the partial
sums ``s_k`` of a reduction from its forward partial sums, its reverse ones and the
sum of squares of its terms. For the two large reductions of a step the terms are
products formed on the fly, so no ``(D, K, N)`` or ``(N, K, D + 2)`` array is built
and each kernel reads its inputs twice (forward, then reverse), in float64:

- :func:`product_partial_sums`: terms ``A[i, j] B[i, k]`` reduced over the rows ``i``
  (``X^T R``: ``A = X``, ``B = R``; ``1^T R``: ``A`` a column of ones);
- :func:`residual_partial_sums`: the residual's ``D + 2`` terms ``X[i, j] W[j, k]``,
  ``b[k]``, ``-Y[i, k]`` of each element, in that order.

Forward partial sums are accumulated in order; reverse ones as ``total`` minus the terms
in order (the same arithmetic as :func:`harness.bounds.partial_sum_squares_planes`).
Squares are of the products themselves (never ``X**2 W**2``, which can underflow or
overflow where the product does not). float64 only; the bounds' extended-precision
re-evaluation keeps the NumPy path.

Every accumulator gets exactly the float64 operations, in exactly the order, of the plain
loops (row by row for :func:`product_partial_sums`, term by term for
:func:`residual_partial_sums`; no fastmath, so no reassociation or FMA contraction): the
results do not depend on the layout below, which only decides how independent
accumulators are interleaved so that LLVM vectorises the innermost loop over contiguous
memory and keeps each accumulator in a register across a few consecutive terms (4 rows,
resp. 4 terms ``j``, per load/store of it):

- :func:`product_partial_sums` vectorises over the ``D`` columns of ``A`` (``D >= K``, one kernel with the
  operands swapped: IEEE multiplication commutes exactly) or the ``K`` columns of ``Bm`` (``D < K``), 4 rows per step;
- :func:`residual_partial_sums` vectorises over blocks of rows of a transposed copy of ``X``
  (``K <= 8``: few independent accumulators per row) or over the ``K`` columns of ``W``
  (``K > 8``), 4 terms ``j`` per step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

#: Rows per block of :func:`_residual_row_blocks` (the transposed block and its accumulators stay in cache) ...
_ROW_BLOCK = 256
#: ... and at most this many ``rows * K`` per block.
_ROW_BLOCK_ELEMENTS = 2048
#: Padding (float64) of the block's rows: no power-of-two stride between them.
_ROW_PAD = 8
#: :func:`residual_partial_sums` vectorises over rows up to this ``K``, over ``K`` above it.
_RESIDUAL_MAX_K_ROWS = 8


@njit(cache=True, nogil=True)
def _product_vec_k(A: np.ndarray, Bm: np.ndarray,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """:func:`product_partial_sums` with the accumulators laid out ``(D, K)``: inner loop over ``c`` (the columns of
    ``Bm``; called with the operands swapped for an inner loop over the columns of ``A``)."""
    n, d = A.shape
    k = Bm.shape[1]
    F = np.zeros((d, k))
    fwd = np.zeros((d, k))
    ss = np.zeros((d, k))
    n4 = n - n % 4
    for i in range(0, n4, 4):
        for j in range(d):
            a0 = A[i, j]
            a1 = A[i + 1, j]
            a2 = A[i + 2, j]
            a3 = A[i + 3, j]
            for c in range(k):
                x = F[j, c]
                fr = fwd[j, c]
                sr = ss[j, c]
                t = a0 * Bm[i, c]
                x = x + t
                fr = fr + x * x
                sr = sr + t * t
                t = a1 * Bm[i + 1, c]
                x = x + t
                fr = fr + x * x
                sr = sr + t * t
                t = a2 * Bm[i + 2, c]
                x = x + t
                fr = fr + x * x
                sr = sr + t * t
                t = a3 * Bm[i + 3, c]
                x = x + t
                fr = fr + x * x
                sr = sr + t * t
                F[j, c] = x
                fwd[j, c] = fr
                ss[j, c] = sr
    for i in range(n4, n):
        for j in range(d):
            a0 = A[i, j]
            for c in range(k):
                t = a0 * Bm[i, c]
                x = F[j, c] + t
                F[j, c] = x
                fwd[j, c] += x * x
                ss[j, c] += t * t
    total = F.copy()
    rev = np.zeros((d, k))
    S = F  # reverse partial sums, from the whole sum down
    for i in range(0, n4, 4):
        for j in range(d):
            a0 = A[i, j]
            a1 = A[i + 1, j]
            a2 = A[i + 2, j]
            a3 = A[i + 3, j]
            for c in range(k):
                x = S[j, c]
                vr = rev[j, c]
                vr = vr + x * x
                x = x - a0 * Bm[i, c]
                vr = vr + x * x
                x = x - a1 * Bm[i + 1, c]
                vr = vr + x * x
                x = x - a2 * Bm[i + 2, c]
                vr = vr + x * x
                x = x - a3 * Bm[i + 3, c]
                S[j, c] = x
                rev[j, c] = vr
    for i in range(n4, n):
        for j in range(d):
            a0 = A[i, j]
            for c in range(k):
                x = S[j, c]
                rev[j, c] += x * x
                S[j, c] = x - a0 * Bm[i, c]
    return fwd, rev, total, ss


@njit(cache=True, nogil=True)
def product_partial_sums(A: np.ndarray, Bm: np.ndarray,
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Partial sums over ``i`` of the terms ``A[i, j] * Bm[i, k]``.

    Args:
        A: float64 ``(N, D)``; Bm: float64 ``(N, K)``.

    Returns:
        ``(forward, reverse, total, sum_sq)``, float64 ``(D, K)`` each (C-contiguous, separate arrays):
        ``sum_i F_i^2`` with ``F_i`` the forward partial sums, ``sum_i S_i^2`` with
        ``S_i = total - (terms before i)``, the total ``F_N``, and ``sum_i (A[i, j] Bm[i, k])^2``.
        Each accumulator is formed in row order ``i`` exactly as by the plain loops.
    """
    if A.shape[1] >= Bm.shape[1]:  # the inner loop over the longer of D and K: the operands swapped (a * b == b * a)
        fwd, rev, total, ss = _product_vec_k(Bm, A)
        return fwd.T.copy(), rev.T.copy(), total.T.copy(), ss.T.copy()
    return _product_vec_k(A, Bm)


@njit(cache=True, nogil=True)
def _product_vec_k_ones(A: np.ndarray, Bm: np.ndarray,
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                   np.ndarray]:  # pragma: no cover - compiled
    """:func:`_product_vec_k` of ``(A, Bm)`` and of ``(A, ones((N, 1)))`` in one pass: the second's terms
    ``A[i, j] * 1.0`` (``A[i, j]`` itself) in accumulators of their own, with the same operations in the same order as
    their own call's. Returns the first's four ``(D, K)`` and the second's forward, reverse and total, ``(D,)``."""
    n, d = A.shape
    k = Bm.shape[1]
    F = np.zeros((d, k))
    fwd = np.zeros((d, k))
    ss = np.zeros((d, k))
    F1 = np.zeros(d)
    fwd1 = np.zeros(d)
    n4 = n - n % 4
    for i in range(0, n4, 4):
        for j in range(d):
            a0 = A[i, j]
            a1 = A[i + 1, j]
            a2 = A[i + 2, j]
            a3 = A[i + 3, j]
            for c in range(k):
                x = F[j, c]
                fr = fwd[j, c]
                sr = ss[j, c]
                t = a0 * Bm[i, c]
                x = x + t
                fr = fr + x * x
                sr = sr + t * t
                t = a1 * Bm[i + 1, c]
                x = x + t
                fr = fr + x * x
                sr = sr + t * t
                t = a2 * Bm[i + 2, c]
                x = x + t
                fr = fr + x * x
                sr = sr + t * t
                t = a3 * Bm[i + 3, c]
                x = x + t
                fr = fr + x * x
                sr = sr + t * t
                F[j, c] = x
                fwd[j, c] = fr
                ss[j, c] = sr
            x = F1[j]
            fr = fwd1[j]
            x = x + a0 * 1.0
            fr = fr + x * x
            x = x + a1 * 1.0
            fr = fr + x * x
            x = x + a2 * 1.0
            fr = fr + x * x
            x = x + a3 * 1.0
            fr = fr + x * x
            F1[j] = x
            fwd1[j] = fr
    for i in range(n4, n):
        for j in range(d):
            a0 = A[i, j]
            for c in range(k):
                t = a0 * Bm[i, c]
                x = F[j, c] + t
                F[j, c] = x
                fwd[j, c] += x * x
                ss[j, c] += t * t
            x = F1[j] + a0 * 1.0
            F1[j] = x
            fwd1[j] += x * x
    total = F.copy()
    total1 = F1.copy()
    rev = np.zeros((d, k))
    rev1 = np.zeros(d)
    S = F  # reverse partial sums, from the whole sum down
    S1 = F1
    for i in range(0, n4, 4):
        for j in range(d):
            a0 = A[i, j]
            a1 = A[i + 1, j]
            a2 = A[i + 2, j]
            a3 = A[i + 3, j]
            for c in range(k):
                x = S[j, c]
                vr = rev[j, c]
                vr = vr + x * x
                x = x - a0 * Bm[i, c]
                vr = vr + x * x
                x = x - a1 * Bm[i + 1, c]
                vr = vr + x * x
                x = x - a2 * Bm[i + 2, c]
                vr = vr + x * x
                x = x - a3 * Bm[i + 3, c]
                S[j, c] = x
                rev[j, c] = vr
            x = S1[j]
            vr = rev1[j]
            vr = vr + x * x
            x = x - a0 * 1.0
            vr = vr + x * x
            x = x - a1 * 1.0
            vr = vr + x * x
            x = x - a2 * 1.0
            vr = vr + x * x
            x = x - a3 * 1.0
            S1[j] = x
            rev1[j] = vr
    for i in range(n4, n):
        for j in range(d):
            a0 = A[i, j]
            for c in range(k):
                x = S[j, c]
                rev[j, c] += x * x
                S[j, c] = x - a0 * Bm[i, c]
            x = S1[j]
            rev1[j] += x * x
            S1[j] = x - a0 * 1.0
    return fwd, rev, total, ss, fwd1, rev1, total1


@njit(cache=True, nogil=True)
def product_partial_sums_and_ones(X: np.ndarray, R: np.ndarray,
                                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                             np.ndarray]:  # pragma: no cover - compiled
    """``product_partial_sums(X, R)`` and the forward, reverse and total of ``product_partial_sums(ones((N, 1)), R)``
    (``(K,)`` each, its ``[0]``), the same bits, in one pass over ``R`` where ``D >= K`` (``X^T R``'s kernel has
    ``R``'s columns outermost there: each gets the accumulators of ``1^T R`` beside it); else the two calls."""
    if X.shape[1] >= R.shape[1]:
        fwd, rev, total, ss, fwd1, rev1, total1 = _product_vec_k_ones(R, X)
        return fwd.T.copy(), rev.T.copy(), total.T.copy(), ss.T.copy(), fwd1, rev1, total1
    fwd, rev, total, ss = product_partial_sums(X, R)
    f1, r1, t1, _ = product_partial_sums(np.ones((X.shape[0], 1)), R)
    return fwd, rev, total, ss, f1[0].copy(), r1[0].copy(), t1[0].copy()


@njit(cache=True, nogil=True)
def _residual_row_blocks(X: np.ndarray, W: np.ndarray, b: np.ndarray, Y: np.ndarray, out: np.ndarray,
                         fuse: bool, R2: np.ndarray, weight: float, n_terms: int, sum_k2: float, sum_kvar: float,
                         V_R: np.ndarray, RV: np.ndarray, VR2: np.ndarray, cols: np.ndarray,
                         ) -> None:  # pragma: no cover - compiled
    """:func:`residual_partial_sums` into ``out`` ``(4, N, K)``, vectorised over blocks of rows; ``fuse``: instead
    of ``out``, :func:`residual_variance` of each block's partial sums as it is formed (its ``w1`` is ``weight``:
    ``w1`` names a weight of ``W`` here; ``out`` is not written;
    ``cols[0]`` still adds each column's rows in order: the blocks in order, each block's rows in order)."""
    n, d = X.shape
    k = W.shape[1]
    bs = max(1, min(_ROW_BLOCK, max(16, _ROW_BLOCK_ELEMENTS // max(k, 1)), n))
    w = bs + _ROW_PAD
    xt = np.empty((d, w))  # X's block, transposed
    F = np.empty((k, w))
    f = np.empty((k, w))
    s = np.empty((k, w))
    v = np.empty((k, w))
    tot = np.empty((k, w))
    d4 = d - d % 4
    for i0 in range(0, n, bs):
        nb = min(bs, n - i0)
        r = 0
        while r + 4 <= nb:
            for j in range(d):
                xt[j, r] = X[i0 + r, j]
                xt[j, r + 1] = X[i0 + r + 1, j]
                xt[j, r + 2] = X[i0 + r + 2, j]
                xt[j, r + 3] = X[i0 + r + 3, j]
            r += 4
        while r < nb:
            for j in range(d):
                xt[j, r] = X[i0 + r, j]
            r += 1
        for c in range(k):
            for r in range(nb):
                F[c, r] = 0.0
                f[c, r] = 0.0
                s[c, r] = 0.0
            for j in range(0, d4, 4):
                w0 = W[j, c]
                w1 = W[j + 1, c]
                w2 = W[j + 2, c]
                w3 = W[j + 3, c]
                for r in range(nb):
                    x = F[c, r]
                    fr = f[c, r]
                    sr = s[c, r]
                    t = xt[j, r] * w0
                    x = x + t
                    fr = fr + x * x
                    sr = sr + t * t
                    t = xt[j + 1, r] * w1
                    x = x + t
                    fr = fr + x * x
                    sr = sr + t * t
                    t = xt[j + 2, r] * w2
                    x = x + t
                    fr = fr + x * x
                    sr = sr + t * t
                    t = xt[j + 3, r] * w3
                    x = x + t
                    fr = fr + x * x
                    sr = sr + t * t
                    F[c, r] = x
                    f[c, r] = fr
                    s[c, r] = sr
            for j in range(d4, d):
                w0 = W[j, c]
                for r in range(nb):
                    t = xt[j, r] * w0
                    x = F[c, r] + t
                    F[c, r] = x
                    f[c, r] += x * x
                    s[c, r] += t * t
            bc = b[c]
            for r in range(nb):
                x = F[c, r] + bc
                fr = f[c, r] + x * x
                x = x - Y[i0 + r, c]
                fr += x * x
                F[c, r] = x
                tot[c, r] = x
                f[c, r] = fr
                v[c, r] = 0.0
            for j in range(0, d4, 4):
                w0 = W[j, c]
                w1 = W[j + 1, c]
                w2 = W[j + 2, c]
                w3 = W[j + 3, c]
                for r in range(nb):
                    x = F[c, r]
                    vr = v[c, r]
                    vr = vr + x * x
                    x = x - xt[j, r] * w0
                    vr = vr + x * x
                    x = x - xt[j + 1, r] * w1
                    vr = vr + x * x
                    x = x - xt[j + 2, r] * w2
                    vr = vr + x * x
                    x = x - xt[j + 3, r] * w3
                    F[c, r] = x
                    v[c, r] = vr
            for j in range(d4, d):
                w0 = W[j, c]
                for r in range(nb):
                    x = F[c, r]
                    v[c, r] += x * x
                    F[c, r] = x - xt[j, r] * w0
            for r in range(nb):
                x = F[c, r]
                vr = v[c, r] + x * x
                x = x - bc
                vr += x * x
                v[c, r] = vr
            if fuse:  # residual_variance's expressions, element by element (the block's column c)
                nt = float(n_terms)
                for r in range(nb):
                    vv = _variance_value(f[c, r], v[c, r], tot[c, r], s[c, r], bc, Y[i0 + r, c], weight, nt, sum_k2,
                                         sum_kvar)
                    V_R[i0 + r, c] = vv
                    RV[i0 + r, c] = R2[i0 + r, c] * vv
                    VR2[i0 + r, c] = vv * vv
                    cols[0, c] = cols[0, c] + vv
        if not fuse:
            for r in range(nb):
                for c in range(k):
                    out[0, i0 + r, c] = f[c, r]
                    out[1, i0 + r, c] = v[c, r]
                    out[2, i0 + r, c] = tot[c, r]
                    out[3, i0 + r, c] = s[c, r]


@njit(cache=True, nogil=True)
def _residual_rows(X: np.ndarray, W: np.ndarray, b: np.ndarray, Y: np.ndarray, out: np.ndarray,
                   ) -> None:  # pragma: no cover - compiled
    """:func:`residual_partial_sums` into ``out`` ``(4, N, K)``, row by row, vectorised over ``K``."""
    n, d = X.shape
    k = W.shape[1]
    F = np.empty(k)
    f = np.empty(k)
    s = np.empty(k)
    v = np.empty(k)
    d4 = d - d % 4
    for i in range(n):
        for c in range(k):
            F[c] = 0.0
            f[c] = 0.0
            s[c] = 0.0
        for j in range(0, d4, 4):
            a0 = X[i, j]
            a1 = X[i, j + 1]
            a2 = X[i, j + 2]
            a3 = X[i, j + 3]
            for c in range(k):
                x = F[c]
                fr = f[c]
                sr = s[c]
                t = a0 * W[j, c]
                x = x + t
                fr = fr + x * x
                sr = sr + t * t
                t = a1 * W[j + 1, c]
                x = x + t
                fr = fr + x * x
                sr = sr + t * t
                t = a2 * W[j + 2, c]
                x = x + t
                fr = fr + x * x
                sr = sr + t * t
                t = a3 * W[j + 3, c]
                x = x + t
                fr = fr + x * x
                sr = sr + t * t
                F[c] = x
                f[c] = fr
                s[c] = sr
        for j in range(d4, d):
            a0 = X[i, j]
            for c in range(k):
                t = a0 * W[j, c]
                x = F[c] + t
                F[c] = x
                f[c] += x * x
                s[c] += t * t
        for c in range(k):
            x = F[c] + b[c]
            fr = f[c] + x * x
            x = x - Y[i, c]
            fr += x * x
            F[c] = x
            out[0, i, c] = fr
            out[2, i, c] = x
            out[3, i, c] = s[c]
            v[c] = 0.0
        for j in range(0, d4, 4):
            a0 = X[i, j]
            a1 = X[i, j + 1]
            a2 = X[i, j + 2]
            a3 = X[i, j + 3]
            for c in range(k):
                x = F[c]
                vr = v[c]
                vr = vr + x * x
                x = x - a0 * W[j, c]
                vr = vr + x * x
                x = x - a1 * W[j + 1, c]
                vr = vr + x * x
                x = x - a2 * W[j + 2, c]
                vr = vr + x * x
                x = x - a3 * W[j + 3, c]
                F[c] = x
                v[c] = vr
        for j in range(d4, d):
            a0 = X[i, j]
            for c in range(k):
                x = F[c]
                v[c] += x * x
                F[c] = x - a0 * W[j, c]
        for c in range(k):
            x = F[c]
            vr = v[c] + x * x
            x = x - b[c]
            vr += x * x
            out[1, i, c] = vr


@njit(cache=True, nogil=True)
def residual_partial_sums(X: np.ndarray, W: np.ndarray, b: np.ndarray, Y: np.ndarray,
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Partial sums of the residual's terms ``X[i, j] W[j, k]`` (``j < D``), ``b[k]``, ``-Y[i, k]``, in that order.

    Args:
        X: float64 ``(N, D)``; W: ``(D, K)``; b: ``(K,)``; Y: ``(N, K)``.

    Returns:
        ``(forward, reverse, total, sum_sq_products)``, float64 ``(N, K)`` each: as
        :func:`product_partial_sums`, with ``sum_sq_products = sum_j (X[i, j] W[j, k])^2`` (the products
        only; the caller adds ``b^2 + Y^2``). The four are C-contiguous views of one ``(4, N, K)`` array
        (one allocation instead of four). Each accumulator is formed term by term exactly as by the
        plain loops.
    """
    n = X.shape[0]
    k = W.shape[1]
    out = np.empty((4, n, k))
    if k <= _RESIDUAL_MAX_K_ROWS:
        none = np.empty((0, 0))
        _residual_row_blocks(X, W, b, Y, out, False, none, 0.0, 1, 0.0, 0.0, none, none, none, none)
    else:
        _residual_rows(X, W, b, Y, out)
    return out[0], out[1], out[2], out[3]


# ---------------------------------------------------------------------------------------------------------------
# Fused element-wise passes of :func:`harness.bounds.step_bounds` (float64, C-contiguous arrays).
#
# Each kernel replaces a few whole-array NumPy expressions of :mod:`harness.bounds` by one pass. Every element gets
# exactly the IEEE operations, in exactly the order, of the NumPy expression it replaces (named in each docstring;
# no fastmath, so no contraction or reassociation); outputs are written into arrays the caller allocates with NumPy.
# Column sums reproduce ``a.sum(axis=0)`` of a C-contiguous ``(N, M)`` array with ``M >= 2``: NumPy then adds the
# rows in order into a zero-initialised output (``((0.0 + a[0]) + a[1]) + ...``; with ``M == 1`` it sums pairwise,
# and the caller uses NumPy). ``np.maximum(a, b)`` is reproduced as :func:`_np_maximum`.

@njit(cache=True, nogil=True, inline="always")
def _np_maximum(a: float, b: float) -> float:  # pragma: no cover - compiled
    """``np.maximum(a, b)`` on float64 bit for bit: a NaN ``a``, else a NaN ``b``, else ``a`` where ``a > b``, else
    ``b`` (so ``np.maximum(-0.0, 0.0)`` is ``0.0`` and ``np.maximum(0.0, -0.0)`` is ``-0.0``)."""
    return a if (a > b) | (a != a) else b  # (bitwise: no branch per element)


@njit(cache=True, nogil=True, inline="always")
def _add(s: float, x: float, keep_nan: bool) -> float:  # pragma: no cover - compiled
    """``s + x``; with ``keep_nan`` a NaN ``s`` stays the NaN it is (where ``s`` and ``x`` are both NaN, x86 returns
    its first operand's, and the compiler may order an addition's operands either way)."""
    return s if keep_nan and s != s else s + x


#: Terms of :func:`_add_rows`: an element ``x`` itself, ``abs(x)``, ``abs(x) * abs(x)``, ``x * x``.
_TERM_X, _TERM_ABS, _TERM_ABS_SQUARE, _TERM_SQUARE = 0, 1, 2, 3


@njit(cache=True, nogil=True, inline="always")
def _term(x: float, kind: int) -> float:  # pragma: no cover - compiled
    """The term of :func:`_add_rows` of an element ``x``: ``kind`` one of :data:`_TERM_X` ... :data:`_TERM_SQUARE`."""
    if kind == _TERM_ABS:
        return abs(x)
    if kind == _TERM_ABS_SQUARE:
        y = abs(x)
        return y * y
    if kind == _TERM_SQUARE:
        return x * x
    return x


@njit(cache=True, nogil=True, inline="always")
def _add_rows(sums: np.ndarray, row: int, keep_nan: bool, arrays: int, a: np.ndarray, b: np.ndarray, kb: int,
              c: np.ndarray, kc: int) -> None:  # pragma: no cover - compiled
    """Column sums of a block of rows, the one definition of their order (:func:`column_sums`, :func:`magnitude_scan`,
    :func:`gradient_terms`): ``sums[row, col] += a[i, col]``, and where ``arrays >= 2`` (``3``) ``sums[row + 1, col]
    += _term(b[i, col], kb)`` (``sums[row + 2, col] += _term(c[i, col], kc)``), each column's rows ``i`` added in
    order by :func:`_add` (``keep_nan``) to the sum read from ``sums`` and written back there.

    Args:
        sums: float64 ``(R, M)``, ``R > row + arrays - 1``. a, b, c: float64 ``(N, M)``, the block's rows (any
            layout); one array may be passed as two or three of them; those not used (``arrays`` 1 or 2): any of the
            used ones, neither read nor written. kb, kc: one of :data:`_TERM_X` ... :data:`_TERM_SQUARE`.

    Columns 4 at a time with their ``4 * arrays`` sums in registers (numba does not SLP-vectorise the 4 columns; the
    independent sums' additions overlap, each sum's own wait on each other's latency), the last ``M % 4`` one at a
    time. Inlined where it is called, with constant ``arrays``, ``kb`` and ``kc`` (and ``keep_nan`` from
    :func:`column_sums` and :func:`gradient_terms`): LLVM folds their tests out of the loop and merges the loads of
    one array passed twice. The callers pass the block as a slice: its row index from 0 needs no test for a negative
    index (gradient_terms, N = 15,625, K = 4: 51 against 55 us for ``range(i0, i1)`` over the whole arrays).
    """
    m = a.shape[1]
    m4 = m - m % 4
    r1, r2 = row + 1, row + 2
    for c0 in range(0, m4, 4):
        p0, p1, p2, p3 = sums[row, c0], sums[row, c0 + 1], sums[row, c0 + 2], sums[row, c0 + 3]
        if arrays >= 2:
            q0, q1, q2, q3 = sums[r1, c0], sums[r1, c0 + 1], sums[r1, c0 + 2], sums[r1, c0 + 3]
        else:
            q0, q1, q2, q3 = p0, p1, p2, p3
        if arrays >= 3:
            t0, t1, t2, t3 = sums[r2, c0], sums[r2, c0 + 1], sums[r2, c0 + 2], sums[r2, c0 + 3]
        else:
            t0, t1, t2, t3 = p0, p1, p2, p3
        for i in range(a.shape[0]):
            p0, p1 = _add(p0, a[i, c0], keep_nan), _add(p1, a[i, c0 + 1], keep_nan)
            p2, p3 = _add(p2, a[i, c0 + 2], keep_nan), _add(p3, a[i, c0 + 3], keep_nan)
            if arrays >= 2:
                q0, q1 = _add(q0, _term(b[i, c0], kb), keep_nan), _add(q1, _term(b[i, c0 + 1], kb), keep_nan)
                q2, q3 = _add(q2, _term(b[i, c0 + 2], kb), keep_nan), _add(q3, _term(b[i, c0 + 3], kb), keep_nan)
            if arrays >= 3:
                t0, t1 = _add(t0, _term(c[i, c0], kc), keep_nan), _add(t1, _term(c[i, c0 + 1], kc), keep_nan)
                t2, t3 = _add(t2, _term(c[i, c0 + 2], kc), keep_nan), _add(t3, _term(c[i, c0 + 3], kc), keep_nan)
        sums[row, c0], sums[row, c0 + 1], sums[row, c0 + 2], sums[row, c0 + 3] = p0, p1, p2, p3
        if arrays >= 2:
            sums[r1, c0], sums[r1, c0 + 1], sums[r1, c0 + 2], sums[r1, c0 + 3] = q0, q1, q2, q3
        if arrays >= 3:
            sums[r2, c0], sums[r2, c0 + 1], sums[r2, c0 + 2], sums[r2, c0 + 3] = t0, t1, t2, t3
    for col in range(m4, m):
        p = sums[row, col]
        q = sums[r1, col] if arrays >= 2 else p
        t = sums[r2, col] if arrays >= 3 else p
        for i in range(a.shape[0]):
            p = _add(p, a[i, col], keep_nan)
            if arrays >= 2:
                q = _add(q, _term(b[i, col], kb), keep_nan)
            if arrays >= 3:
                t = _add(t, _term(c[i, col], kc), keep_nan)
        sums[row, col] = p
        if arrays >= 2:
            sums[r1, col] = q
        if arrays >= 3:
            sums[r2, col] = t


@njit(cache=True, nogil=True)
def column_sums(a: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """``a.sum(axis=0)`` of a C-contiguous float64 ``(N, M)`` array with ``M >= 2``, bit for bit (but a NaN's payload:
    where two NaNs meet NumPy's vector tail keeps the second's, this the first's, helper-57), into ``out`` ``(M,)``: the
    rows added in order into a zero-initialised output, as NumPy adds them (a strided reduction that NumPy runs as N
    additions of M-element rows: 0.28 ms against 0.03 at N = 15,625, M = 4). Columns 4 at a time with their sums in
    registers (each still adds its column's rows in order): an addition's latency per row and 4 columns, not a store
    and a load as well (N = 15,625, M = 4: 13 against 55 us); rows in blocks of :data:`_SCAN_ROWS` (each block in
    the cache while its columns are taken). Each block's sums: :func:`_add_rows`."""
    n = a.shape[0]
    for c in range(a.shape[1]):
        out[c] = 0.0
    sums = out[np.newaxis, :]
    for i0 in range(0, n, _SCAN_ROWS):
        rows = a[i0:i0 + _SCAN_ROWS]
        _add_rows(sums, 0, False, 1, rows, rows, _TERM_X, rows, _TERM_X)


@njit(cache=True, nogil=True)
def running_sums(a: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """``np.cumsum(a, axis=1)`` of a float64 ``(M, N)`` array (any strides), bit for bit, into ``out`` (each row's
    partial sums in order, the first its first term: the additions of NumPy's accumulation, without its per-element
    dispatch: 0.24 against 0.08 ms for 62,500 terms)."""
    m, n = a.shape
    for r in range(m):
        if n == 0:
            continue
        s = a[r, 0]
        out[r, 0] = s
        for i in range(1, n):
            s = s + a[r, i]
            out[r, i] = s


#: Rows per block of :func:`magnitude_scan` (the block of the input stays in the first- or second-level cache from the
#: element-wise pass to the column sums' pass; N*D = 250,000, D = 16: 187 us against 190 at 128 rows, 205 at 32).
_SCAN_ROWS = 256
#: Bits of a float64's magnitude, and of +inf: magnitudes order as their bit patterns do (as int64), NaN's above inf's.
_MAG_BITS = 0x7FFFFFFFFFFFFFFF
_INF_BITS = 0x7FF0000000000000


@njit(cache=True, nogil=True)
def _scan_elements(af: np.ndarray, ai: np.ndarray, bf: np.ndarray, sf: np.ndarray, mode: int, top: Any, low: Any,
                   nan: Any) -> tuple[Any, Any, Any]:  # pragma: no cover - compiled
    """:func:`magnitude_scan`'s element-wise part over one block of elements ``af`` (1-d, contiguous; ``ai`` its
    int64 view): ``bf = |af|``, ``sf`` the square (``mode`` 1: ``|a| |a|``, 2: ``a a``, 0: not written); and the
    running extremes as bit patterns of magnitudes (int64): ``top`` the largest non-NaN one, ``low`` the smallest
    nonzero non-NaN one (``_INF_BITS`` for none), ``nan`` 1 once a NaN was seen. Integer maxima and minima (exact in any
    order; LLVM vectorises them, where a float comparison's select does not: it needs no-NaN fast-math); one loop per
    mode, each element's operations alone, from 0 over whole arrays (so that LLVM vectorises it)."""
    if mode == 1:
        for e in range(af.size):
            y = abs(af[e])
            bf[e] = y
            sf[e] = y * y
            yb = ai[e] & _MAG_BITS
            top = max(top, yb if yb <= _INF_BITS else 0)
            low = min(low, yb if (yb > 0) & (yb <= _INF_BITS) else _INF_BITS)
            nan = max(nan, np.int64(yb > _INF_BITS))
    elif mode == 2:
        for e in range(af.size):
            x = af[e]
            bf[e] = abs(x)
            sf[e] = x * x
            yb = ai[e] & _MAG_BITS
            top = max(top, yb if yb <= _INF_BITS else 0)
            low = min(low, yb if (yb > 0) & (yb <= _INF_BITS) else _INF_BITS)
            nan = max(nan, np.int64(yb > _INF_BITS))
    else:
        for e in range(af.size):
            bf[e] = abs(af[e])
            yb = ai[e] & _MAG_BITS
            top = max(top, yb if yb <= _INF_BITS else 0)
            low = min(low, yb if (yb > 0) & (yb <= _INF_BITS) else _INF_BITS)
            nan = max(nan, np.int64(yb > _INF_BITS))
    return top, low, nan


@njit(cache=True, nogil=True)
def _scan_sums_abs_square(ac: np.ndarray, i0: int, i1: int, cols: np.ndarray, keep_nan: bool,
                          ) -> None:  # pragma: no cover - compiled
    """:func:`magnitude_scan`'s column sums for ``mode == 1``: rows ``i0 .. i1 - 1`` of ``ac`` (float64 ``(N, M)``),
    of ``abs(ac)`` and of ``abs(ac) * abs(ac)`` added to ``cols[0]``, ``[1]``, ``[2]`` (``(3, M)``; :func:`_add_rows`).

    One function per mode (this, :func:`_scan_sums_square`, :func:`_scan_sums_no_square`), each compiled on its own
    with constant terms: N = 15,625, M = 4, mode 2, 49 against 50 us with the three calls in one function taking
    ``mode``, 79 with one call whose term is chosen at run time (base 8648640's single loop: 48-49). The element-wise
    values formed again from ``ac``, the same operations as :func:`_scan_elements`' (reading its ``absa`` and ``sq``
    instead: 308 against 210 us, N = 15,625, M = 16, mode 1)."""
    rows = ac[i0:i1]
    _add_rows(cols, 0, keep_nan, 3, rows, rows, _TERM_ABS, rows, _TERM_ABS_SQUARE)


@njit(cache=True, nogil=True)
def _scan_sums_square(ac: np.ndarray, i0: int, i1: int, cols: np.ndarray, keep_nan: bool,
                      ) -> None:  # pragma: no cover - compiled
    """:func:`_scan_sums_abs_square` for ``mode == 2``: the square ``ac * ac``."""
    rows = ac[i0:i1]
    _add_rows(cols, 0, keep_nan, 3, rows, rows, _TERM_ABS, rows, _TERM_SQUARE)


@njit(cache=True, nogil=True)
def _scan_sums_no_square(ac: np.ndarray, i0: int, i1: int, cols: np.ndarray, keep_nan: bool,
                         ) -> None:  # pragma: no cover - compiled
    """:func:`_scan_sums_abs_square` for ``mode == 0``: no square, ``cols[2]`` not added to."""
    rows = ac[i0:i1]
    _add_rows(cols, 0, keep_nan, 2, rows, rows, _TERM_ABS, rows, _TERM_ABS)


@njit(cache=True, nogil=True)
def _scan_abs_sums(absa: np.ndarray, i0: int, i1: int, cols: np.ndarray, keep_nan: bool) -> None:  # pragma: no cover
    """:func:`magnitude_scan`'s column sums of rows ``i0 .. i1 - 1`` of ``absa`` (float64 ``(N, M)``, ``np.abs(a)``
    as :func:`_scan_elements` wrote it: read, not formed again; the same bits, ``abs(-0.0)`` 0.0 and NaNs' signs
    cleared either way) added to ``cols[1]`` (``(3, M)``; :func:`_add_rows`; rows 0 and 2 not added to)."""
    rows = absa[i0:i1]
    _add_rows(cols, 1, keep_nan, 1, rows, rows, _TERM_X, rows, _TERM_X)


@njit(cache=True, nogil=True)
def magnitude_scan(a: np.ndarray, absa: np.ndarray, sq: np.ndarray, mode: int, cols: np.ndarray, sums: int = 7,
                   ) -> tuple[float, float, bool]:  # pragma: no cover - compiled
    """One pass over ``a`` (float64 ``(N, M)``): ``np.abs(a)``, a square, column sums and the extreme magnitudes.

    Args:
        a: the array (any layout: a C-contiguous copy is read where it is not one); absa: out ``(N, M)``,
            C-contiguous, ``np.abs(a)``; sq: out ``(N, M)``, C-contiguous, ``np.abs(a)**2`` (``mode == 1``),
            ``a**2`` (``mode == 2``), not written (``mode == 0``: a C-contiguous array of any shape); cols: out ``(3, M)``: ``a.sum(axis=0)``,
            ``np.abs(a).sum(axis=0)`` and the square's ``.sum(axis=0)`` (rows added in order from 0.0, as NumPy
            does for ``M >= 2``; the third is 0 for ``mode == 0``).
        sums: which rows of ``cols`` are formed: 7 all three (the default), 2 ``np.abs(a)``'s alone, 0 none (the
            others 0.0: ``harness.bounds`` reads X's ``np.abs`` sums alone and none of y's, whose additions are left
            out).

    Returns:
        ``(largest, smallest_nonzero, any_nan)``: the largest magnitude (NaNs skipped, ``inf`` counted; 0.0 when
        empty), the smallest nonzero one (NaNs skipped; ``inf`` when there is none), and ``np.isnan(a).any()``.

    Rows in blocks of :data:`_SCAN_ROWS`: first the block's elements in one vectorised loop (:func:`_scan_elements`:
    ``absa``, ``sq`` and the extremes, from the magnitudes' bit patterns), then its column sums (:func:`_add_rows`),
    columns 4 at a time with their 12 sums in registers, each sum adding its column's rows in order
    (:func:`_scan_sums_abs_square` and the like: the element-wise values formed again from the block of ``a``;
    :func:`_scan_abs_sums` for ``sums == 2``: the block of ``absa`` read). N*D = 250,000, D = 16, mode 1: 187 against 266 us for one loop
    doing both (scalar: numba does not SLP-vectorise the 4 columns).

    NaN sums: in a block holding a NaN each sum that is NaN keeps its NaN (:func:`_add`'s ``keep_nan``), the first of
    its column's NaN terms (quieted) or ``inf - inf``'s, as the sums of one loop over the elements gave it; elsewhere
    at most one operand of each addition is NaN, whose NaN it gives in either order.
    """
    n, m = a.shape
    ac = np.ascontiguousarray(a)
    af = ac.reshape(n * m)
    ai = af.view(np.int64)
    bf = absa.reshape(n * m)
    sf = sq.reshape(sq.size)
    for c in range(m):
        cols[0, c] = 0.0
        cols[1, c] = 0.0
        cols[2, c] = 0.0
    top: Any = np.int64(0)
    low: Any = np.int64(_INF_BITS)
    nan: Any = np.int64(0)
    for i0 in range(0, n, _SCAN_ROWS):
        i1 = min(n, i0 + _SCAN_ROWS)
        e0, e1 = i0 * m, i1 * m
        top, low, nan_block = _scan_elements(af[e0:e1], ai[e0:e1], bf[e0:e1], sf[e0:e1] if mode else sf[:0], mode,
                                             top, low, np.int64(0))
        nan = max(nan, nan_block)
        # the block's column sums; where it holds a NaN, each sum that is NaN kept as it is (the docstring's NaN sums)
        if sums == 2:
            _scan_abs_sums(absa, i0, i1, cols, nan_block != 0)
        elif sums != 0 and mode == 1:
            _scan_sums_abs_square(ac, i0, i1, cols, nan_block != 0)
        elif sums != 0 and mode == 2:
            _scan_sums_square(ac, i0, i1, cols, nan_block != 0)
        elif sums != 0:
            _scan_sums_no_square(ac, i0, i1, cols, nan_block != 0)
    bits = np.empty(2, dtype=np.int64)
    bits[0] = top
    bits[1] = low
    extremes = bits.view(np.float64)
    return extremes[0], extremes[1], nan != 0


@njit(cache=True, nogil=True)
def residual_terms(absXW: np.ndarray, ab: np.ndarray, aY: np.ndarray, d_in: np.ndarray, tf_abs: np.ndarray,
                   has_d_in: bool, has_tf: bool, pm1: float, g: float, c1: float, c2: float,
                   A: np.ndarray, E: np.ndarray, U: np.ndarray) -> tuple[bool, float]:  # pragma: no cover - compiled
    """``A``, ``E`` and ``U`` of ``bounds.residual_bound`` in one pass (float64 ``(N, K)``; ``ab`` ``(K,)``)::

        tf = pm1 * absXW + tf_abs                # pm1 = (1 + ut)**2 - 1
        A = absXW + ab[None, :] + aY
        U = d_in + tf_abs + c1                   # c1 = n_under * eta
        E = g * (A + tf) + d_in + tf + c2        # c2 = (1 + g) * n_under * eta

    ``d_in`` and ``tf_abs`` are read only where ``has_d_in`` / ``has_tf`` (else they are zeros: 0.0 is used).

    Returns:
        ``(np.isnan(E).any(), float(np.abs(U).max()))`` (the latter 0.0 when empty, NaN where ``U`` holds a NaN).

    ``A``, ``E``, ``U`` C-contiguous. Rows in blocks of :data:`_SCAN_ROWS`, each block's elements in loops from 0 over
    contiguous memory (``ab`` tiled along a block's rows), which LLVM vectorises (numba does not SLP-vectorise a row's
    K elements): ``max |U|`` and its NaN as int64 maxima of ``U``'s magnitudes' bit patterns (exact in any order).
    N = 15,625, K = 4: 24 against 82 us for the loop over rows and columns.
    """
    n, k = absXW.shape
    xr, yr = np.ascontiguousarray(absXW), np.ascontiguousarray(aY)
    dr = np.ascontiguousarray(d_in) if has_d_in else xr
    tr = np.ascontiguousarray(tf_abs) if has_tf else xr
    xf, yf, df, tff = xr.reshape(n * k), yr.reshape(n * k), dr.reshape(dr.size), tr.reshape(tr.size)
    af, ef, uf = A.reshape(n * k), E.reshape(n * k), U.reshape(n * k)
    ub = uf.view(np.int64)
    rows = min(n, _SCAN_ROWS)
    abt = np.empty(rows * k)  # ab along a block's rows, C order
    for r in range(rows):
        for c in range(k):
            abt[r * k + c] = ab[c]
    e_nan = 0
    u_top: Any = np.int64(0)
    u_nan: Any = np.int64(0)
    for i0 in range(0, n, _SCAN_ROWS):
        e0, e1 = i0 * k, min(n, i0 + _SCAN_ROWS) * k
        e_nan += _residual_elements(xf[e0:e1], abt[:e1 - e0], yf[e0:e1], df[e0:e1], tff[e0:e1], has_d_in, has_tf,
                                    pm1, g, c1, c2, af[e0:e1], ef[e0:e1], uf[e0:e1])
        ubk = ub[e0:e1]
        for e in range(ubk.size):
            b = ubk[e] & _MAG_BITS
            u_top = max(u_top, b if b <= _INF_BITS else 0)
            u_nan = max(u_nan, np.int64(b > _INF_BITS))
    bits = np.empty(1, dtype=np.int64)
    bits[0] = u_top
    return e_nan != 0, (np.nan if u_nan else bits.view(np.float64)[0])


@njit(cache=True, nogil=True)
def _residual_elements(xf: np.ndarray, abt: np.ndarray, yf: np.ndarray, df: np.ndarray, tff: np.ndarray,
                       has_d_in: bool, has_tf: bool, pm1: float, g: float, c1: float, c2: float, af: np.ndarray,
                       ef: np.ndarray, uf: np.ndarray) -> int:  # pragma: no cover - compiled
    """:func:`residual_terms`' expressions over one block of elements (1-d, contiguous; ``abt`` ``ab`` at each
    element's column); returns how many ``E`` are NaN."""
    nan = 0
    for e in range(xf.size):
        x = xf[e]
        di = df[e] if has_d_in else 0.0
        ta = tff[e] if has_tf else 0.0
        tf = pm1 * x + ta
        a = (x + abt[e]) + yf[e]
        u = (di + ta) + c1
        v = ((g * (a + tf) + di) + tf) + c2
        af[e] = a
        uf[e] = u
        ef[e] = v
        nan += 0 if v == v else 1
    return nan


@njit(cache=True, nogil=True)
def gradient_terms(aR: np.ndarray, E: np.ndarray, Rh: np.ndarray, Rh2: np.ndarray, EL: np.ndarray,
                   cols: np.ndarray) -> bool:  # pragma: no cover - compiled
    """The element-wise terms of ``bounds.gradient_bounds`` and ``bounds.loss_bound`` (float64 ``(N, K)``; the outputs
    C-contiguous)::

        Rh = aR + E;  Rh2 = Rh**2;  EL = E * (2 * aR + E)
        cols[0] = Rh.sum(axis=0);  cols[1] = E.sum(axis=0)      # rows in order from 0.0 (K >= 2)

    Rows in blocks of :data:`_SCAN_ROWS`: the block's elements in one loop from 0 over contiguous memory (which LLVM
    vectorises; numba does not SLP-vectorise a row's K elements), then its column sums (:func:`_add_rows`: 4 columns
    at a time in registers, each adding its column's rows in order; N = 15,625, K = 4: 32 against 87 us for one loop
    doing both).

    Returns:
        ``np.isfinite(Rh).all()``.
    """
    n, k = aR.shape
    ar = np.ascontiguousarray(aR)
    er = np.ascontiguousarray(E)
    af, ef = ar.reshape(n * k), er.reshape(n * k)
    hf, h2f, lf = Rh.reshape(n * k), Rh2.reshape(n * k), EL.reshape(n * k)
    for c in range(k):
        cols[0, c] = 0.0
        cols[1, c] = 0.0
    bad = 0
    for i0 in range(0, n, _SCAN_ROWS):
        i1 = min(n, i0 + _SCAN_ROWS)
        bad += _gradient_elements(af[i0 * k:i1 * k], ef[i0 * k:i1 * k], hf[i0 * k:i1 * k], h2f[i0 * k:i1 * k],
                                  lf[i0 * k:i1 * k])
        rows = er[i0:i1]
        _add_rows(cols, 0, False, 2, Rh[i0:i1], rows, _TERM_X, rows, _TERM_X)
    return bad == 0


@njit(cache=True, nogil=True)
def _gradient_elements(af: np.ndarray, ef: np.ndarray, hf: np.ndarray, h2f: np.ndarray, lf: np.ndarray,
                       ) -> int:  # pragma: no cover - compiled
    """:func:`gradient_terms`' element-wise expressions over one block of elements (1-d, contiguous); returns how many
    ``Rh`` are not finite."""
    bad = 0
    for e in range(af.size):
        r = af[e]
        x = ef[e]
        h = r + x
        hf[e] = h
        h2f[e] = h * h
        lf[e] = x * (2.0 * r + x)
        bad += 0 if abs(h) < np.inf else 1
    return bad


@njit(cache=True, nogil=True)
def residual_variance(fwd: np.ndarray, rev: np.ndarray, tot: np.ndarray, sumP2: np.ndarray, b: np.ndarray,
                      Y: np.ndarray, R2: np.ndarray, w1: float, n_terms: int, sum_k2: float, sum_kvar: float,
                      V_R: np.ndarray, RV: np.ndarray, VR2: np.ndarray, cols: np.ndarray,
                      ) -> None:  # pragma: no cover - compiled
    """``V_R`` of ``bounds.expected_bounds`` from :func:`residual_partial_sums`' outputs, in one pass (float64
    ``(N, K)``; ``b`` ``(K,)``), with ``order_model`` written out element-wise::

        sum_sq = sumP2 + b[None, :]**2 + Y**2
        mu = tot / n_terms
        var = np.maximum(sum_sq / n_terms - mu**2, 0.0)
        random = mu**2 * sum_k2 + var * sum_kvar
        V_R = sumP2 * w1 + np.maximum(np.maximum(fwd, rev), random)     # w1 = 1 + 2 wt
        RV = R2 * V_R;  VR2 = V_R**2;  cols[0] = V_R.sum(axis=0)         # R2 = R**2; rows in order (K >= 2)
    """
    n, k = V_R.shape
    nt = float(n_terms)
    for c in range(k):
        cols[0, c] = 0.0
    for i in range(n):
        for c in range(k):
            _variance_element(fwd[i, c], rev[i, c], tot[i, c], sumP2[i, c], b[c], Y[i, c], R2[i, c], w1, nt, sum_k2,
                              sum_kvar, V_R, RV, VR2, cols, i, c)


@njit(cache=True, nogil=True, inline="always")
def _variance_element(fw: float, rv: float, to: float, p2: float, bc: float, y: float, r2: float, w1: float,
                      nt: float, sum_k2: float, sum_kvar: float, V_R: np.ndarray, RV: np.ndarray, VR2: np.ndarray,
                      cols: np.ndarray, i: int, c: int) -> None:  # pragma: no cover - compiled
    """One element of :func:`residual_variance` (its docstring's expressions), written at ``[i, c]``, and
    ``cols[0, c] += V_R[i, c]``."""
    v = _variance_value(fw, rv, to, p2, bc, y, w1, nt, sum_k2, sum_kvar)
    V_R[i, c] = v
    RV[i, c] = r2 * v
    VR2[i, c] = v * v
    cols[0, c] = cols[0, c] + v


@njit(cache=True, nogil=True, inline="always")
def _variance_value(fw: float, rv: float, to: float, p2: float, bc: float, y: float, w1: float, nt: float,
                    sum_k2: float, sum_kvar: float) -> float:  # pragma: no cover - compiled
    """``V_R`` of one element: :func:`residual_variance`'s expressions (``order_model`` written out)."""
    ss = (p2 + bc * bc) + y * y
    mu = to / nt
    var = _np_maximum(ss / nt - mu * mu, 0.0)
    rnd = mu * mu * sum_k2 + var * sum_kvar
    return p2 * w1 + _np_maximum(_np_maximum(fw, rv), rnd)


@njit(cache=True, nogil=True)
def residual_variance_fused(X: np.ndarray, W: np.ndarray, b: np.ndarray, Y: np.ndarray, R2: np.ndarray, w1: float,
                            n_terms: int, sum_k2: float, sum_kvar: float, V_R: np.ndarray, RV: np.ndarray,
                            VR2: np.ndarray, cols: np.ndarray) -> None:  # pragma: no cover - compiled
    """:func:`residual_variance` of :func:`residual_partial_sums` ``(X, W, b, Y)`` (the same outputs bit for bit),
    without the ``(4, N, K)`` array of partial sums where ``K <= 8``: each block of rows' sums go straight into the
    element-wise expressions (one pass fewer over N K elements, and no 4 N K allocation)."""
    k = W.shape[1]
    if k <= _RESIDUAL_MAX_K_ROWS:
        for c in range(k):
            cols[0, c] = 0.0
        _residual_row_blocks(X, W, b, Y, np.empty((0, 0, 0)), True, R2, w1, n_terms, sum_k2, sum_kvar, V_R, RV, VR2,
                             cols)
    else:
        fwd, rev, tot, sumP2 = residual_partial_sums(X, W, b, Y)
        residual_variance(fwd, rev, tot, sumP2, b, Y, R2, w1, n_terms, sum_k2, sum_kvar, V_R, RV, VR2, cols)
