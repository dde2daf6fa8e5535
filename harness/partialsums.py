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
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def product_partial_sums(A: np.ndarray, Bm: np.ndarray,
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Partial sums over ``i`` of the terms ``A[i, j] * Bm[i, k]``.

    Args:
        A: float64 ``(N, D)``; Bm: float64 ``(N, K)``.

    Returns:
        ``(forward, reverse, total, sum_sq)``, float64 ``(D, K)`` each: ``sum_i F_i^2`` with ``F_i`` the
        forward partial sums, ``sum_i S_i^2`` with ``S_i = total - (terms before i)``, the total ``F_N``,
        and ``sum_i (A[i, j] Bm[i, k])^2``.
    """
    n, d = A.shape
    k = Bm.shape[1]
    F = np.zeros((d, k))
    fwd = np.zeros((d, k))
    ss = np.zeros((d, k))
    for i in range(n):
        for j in range(d):
            a = A[i, j]
            Fj = F[j]
            fj = fwd[j]
            sj = ss[j]
            for c in range(k):
                t = a * Bm[i, c]
                Fj[c] += t
                fj[c] += Fj[c] * Fj[c]
                sj[c] += t * t
    total = F.copy()
    rev = np.zeros((d, k))
    S = F  # reverse partial sums, from the whole sum down
    for i in range(n):
        for j in range(d):
            a = A[i, j]
            Sj = S[j]
            rj = rev[j]
            for c in range(k):
                rj[c] += Sj[c] * Sj[c]
                Sj[c] -= a * Bm[i, c]
    return fwd, rev, total, ss


@njit(cache=True, nogil=True)
def residual_partial_sums(X: np.ndarray, W: np.ndarray, b: np.ndarray, Y: np.ndarray,
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Partial sums of the residual's terms ``X[i, j] W[j, k]`` (``j < D``), ``b[k]``, ``-Y[i, k]``, in that order.

    Args:
        X: float64 ``(N, D)``; W: ``(D, K)``; b: ``(K,)``; Y: ``(N, K)``.

    Returns:
        ``(forward, reverse, total, sum_sq_products)``, float64 ``(N, K)`` each: as
        :func:`product_partial_sums`, with ``sum_sq_products = sum_j (X[i, j] W[j, k])^2`` (the products
        only; the caller adds ``b^2 + Y^2``).
    """
    n, d = X.shape
    k = W.shape[1]
    fwd = np.empty((n, k))
    rev = np.empty((n, k))
    total = np.empty((n, k))
    ssp = np.empty((n, k))
    F = np.empty(k)
    f = np.empty(k)
    s = np.empty(k)
    r = np.empty(k)
    for i in range(n):
        F[:] = 0.0
        f[:] = 0.0
        s[:] = 0.0
        for j in range(d):
            a = X[i, j]
            Wj = W[j]
            for c in range(k):
                t = a * Wj[c]
                F[c] += t
                f[c] += F[c] * F[c]
                s[c] += t * t
        for c in range(k):
            F[c] += b[c]
            f[c] += F[c] * F[c]
            F[c] -= Y[i, c]
            f[c] += F[c] * F[c]
            total[i, c] = F[c]
            fwd[i, c] = f[c]
            ssp[i, c] = s[c]
            r[c] = 0.0
        for j in range(d):
            a = X[i, j]
            Wj = W[j]
            for c in range(k):
                r[c] += F[c] * F[c]
                F[c] -= a * Wj[c]
        for c in range(k):
            r[c] += F[c] * F[c]
            F[c] -= b[c]
            r[c] += F[c] * F[c]
            rev[i, c] = r[c]
    return fwd, rev, total, ssp
