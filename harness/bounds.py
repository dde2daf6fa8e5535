"""Forward error bounds for one training step, per element.

Notation (shapes): X (N, D), W (D, K), b (K,), Y (N, K); residual
``R = X W + 1 b^T - Y``; ``c = 1`` (sum) or ``1/(N K)`` (mean); ``s = 2c``;
``u`` the unit roundoff of the dtype the step computes in, ``eta`` its
underflow quantum (half the subnormal spacing; in float16 and bfloat16 the
smallest normal number, so that kernels flushing subnormals to zero are
correct evaluations too), ``gamma_n = n u / (1 - n u)``.
All magnitudes below are of exact values (from the oracle).

**Rigorous bounds** (Higham, *Accuracy and Stability of Numerical Algorithms*,
2nd ed., SIAM 2002, §3.1 Lemma 3.1 and §3.5 eq. 3.12-3.13, with the underflow
model of §2.2: ``fl(x op y) = (x op y)(1 + d) + e``, ``|d| <= u``, ``|e| <= eta``
for products, ``e = 0`` for sums). Valid for any summation order, blocking
and FMA use, because each term of a sum of n terms passes through at most
n - 1 additions and one multiplication:

- residual: ``|R^ - R| <= E_R = gamma_{D+2} A + (1 + gamma_{D+2}) D eta`` with
  ``A = |X| |W| + 1 |b|^T + |Y|``;
- grad_W: ``|s| (gamma_{N+2} |X|^T (|R| + E_R) + |X|^T E_R)
  + (1 + gamma_{N+2}) eta (N + |X|^T 1)``; the ``+2`` covers the rounding of
  ``c`` and of ``c * 2R`` (Higham Lemma 3.3 for the chain);
- grad_b: the same with ``|X|`` replaced by ones;
- loss: ``|c| (gamma_{NK+2} sum (|R| + E_R)^2 + sum E_R (2|R| + E_R)) + (1 + gamma_{NK+2}) NK eta``;
- update ``W' = W - lr g``: ``(1 + u)((1 + gamma_2)|lr| E_g + gamma_2 |lr g| + eta (|g| + E_g)) + u |W'| + eta``,
  where ``gamma_2`` also covers a learning rate held in a wider type than the
  oracle's (rounded to the dtype), and ``eta (|g| + E_g)`` a learning rate that
  underflows when rounded to the dtype (``1e-12`` is 0 in float16, but torch
  multiplies by the Python float in float32 arithmetic).

With TF32 matmuls, every product in ``X W`` and ``X^T (sR)`` carries two more
roundings of unit ``2**-11`` (its inputs) and the product terms are scaled by
``(1 + 2**-11)**2``. With ``n u >= 1`` the bound is infinite (vacuous): a
worst-case error bound then says nothing.

**Expected bounds** (probabilistic, Higham and Mary, *A new approach to
probabilistic rounding error analysis*, SIAM J. Sci. Comput. 41(5), 2019,
Theorem 2.4 and its Azuma-Hoeffding argument). Model each rounding error
``d_m`` as independent, mean zero, ``|d_m| <= u``; to first order the error of a
computed value is ``sum_m a_m d_m`` where ``a_m`` is the value rounded at site m
times its downstream multiplier. Then ``|error| <= lambda u sqrt(sum_m a_m^2)``
with probability at least ``1 - 2 exp(-lambda^2 / 2)``. The sites counted are:
products, every partial sum of each reduction, the scale ``c`` and ``c * 2R``,
the learning-rate product and the update. Partial sums depend on the
summation order, which the harness cannot see; it takes the largest of the
forward order, the reverse order and the expectation over a random
permutation (sampling without replacement), which covers the sequential,
blocked and pairwise orders BLAS and reductions use on generic data. Where
Higham and Mary bound ``sum a_m^2`` by its worst case ``n max a_m^2`` (giving
their ``lambda sqrt(n) u`` constant), this keeps the sum itself, so that an
input perturbation such as TF32's ``2**-11`` rounding stands out at any N.

Two terms are not probabilistic: underflow errors (absolute, at most ``eta``
per product) enter the expected bounds with their first-order rigorous
terms, and the loss, which squares the residual, carries the second-order
term ``|c| u^2 min(sum V_R + lambda^3 sqrt(sum V_R^2 / 2), lambda^2 sum V_R)``
(mean plus a Hoeffding deviation: the sum of the squared residual errors
does not cancel and grows like N K; it dominates for near-zero residuals).

``LAMBDA = 6`` gives a failure probability below ``3e-8`` per element; the
calibration test (``tests/test_calibration.py``) measures the largest
observed error / expected-bound ratio over many evaluation orders and data
regimes. The expected bound is capped by the rigorous one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .floats import TF32, FloatFormat

F64 = npt.NDArray[np.float64]

#: Multiplier of the probabilistic (expected) bound. See the module docstring.
LAMBDA = 6.0
#: Relative safety margin for evaluating the bounds themselves in float64.
_SAFETY = 1.0 + 2.0**-30


@dataclass
class StepBounds:
    """Per-element bounds for every quantity of one step.

    Attributes:
        rigorous: quantity -> array of absolute error bounds (same shape as the quantity).
        expected: quantity -> array of probabilistic bounds (``<= rigorous``).
        may_overflow: quantity -> bool array, True where the exact value or an
            intermediate can leave the dtype's finite range.
        note: for an implementation's own error model (finite differences), a
            line saying what the bounds are; added to every record's message.
    """

    rigorous: dict[str, F64]
    expected: dict[str, F64]
    may_overflow: dict[str, npt.NDArray[np.bool_]]
    note: str = ""


def partial_sum_squares(terms: F64, axis: int) -> F64:
    """Model of ``sum_k s_k^2`` over the partial sums ``s_k`` of a reduction along ``axis``.

    The largest of: forward order, reverse order, and the expectation over a
    uniformly random order (sampling without replacement: ``E s_k = k mu``,
    ``Var s_k = k (n - k) / (n - 1) sigma^2`` for population mean ``mu`` and
    variance ``sigma^2``).

    Args:
        terms: float64 array, reduced along ``axis``.
        axis: the reduction axis.

    Returns:
        float64 array with ``axis`` removed.
    """
    t = np.moveaxis(terms, axis, -1)
    n = t.shape[-1]
    fwd = np.cumsum(t, axis=-1)
    total = fwd[..., -1:]
    forward = np.sum(fwd**2, axis=-1)
    rev_partial = total - np.concatenate([np.zeros_like(total), fwd[..., :-1]], axis=-1)
    reverse = np.sum(rev_partial**2, axis=-1)
    mu = total[..., 0] / n
    var = np.maximum(np.mean(t**2, axis=-1) - mu**2, 0.0)
    k = np.arange(1, n + 1, dtype=np.float64)
    sum_k2 = float(np.sum(k**2))
    sum_kvar = float(np.sum(k * (n - k) / (n - 1))) if n > 1 else 0.0
    random = mu**2 * sum_k2 + var * sum_kvar
    return np.maximum(np.maximum(forward, reverse), random)


def step_bounds(
    inputs: Mapping[str, F64],
    residual: F64,
    exact: Mapping[str, F64],
    *,
    lr: float,
    reduction: str,
    fmt: FloatFormat,
    tf32: bool = False,
    lr_held: float | None = None,
) -> StepBounds:
    """Rigorous and expected error bounds for loss, grad_W, grad_b, W and b.

    Args:
        inputs: ``X`` (N, D), ``y`` (N, K), ``W`` (D, K), ``b`` (K,) as the
            implementation saw them (float64 arrays of values exact in ``fmt``).
        residual: the exact residual ``R`` (N, K), as float64.
        exact: exact ``loss`` (0-d), ``grad_W``, ``grad_b``, ``W``, ``b`` as float64.
        lr: learning rate as the oracle used it (rounded to ``fmt``).
        reduction: ``"sum"`` or ``"mean"``.
        fmt: the dtype the implementation computed in.
        tf32: whether float32 matmul inputs are rounded to TF32.
        lr_held: the learning rate as the implementation may hold it (the
            Python float, wider than ``fmt``; PyTorch multiplies a float16 or
            bfloat16 tensor by a Python scalar in float32). The update bounds
            of W and b then add ``|lr_held - lr| (|g| + E_g)``: where ``lr``
            underflows in ``fmt`` (``1e-12`` is 0 in float16) the relative
            ``gamma_2`` term alone does not cover it.

    Returns:
        :class:`StepBounds` (absolute errors, same units as the quantities).
    """
    X, Y, W, b = (np.asarray(inputs[k], dtype=np.float64) for k in ("X", "y", "W", "b"))
    R = np.asarray(residual, dtype=np.float64)
    n, d = X.shape
    k = W.shape[1]
    u = fmt.unit_roundoff
    # Half-precision kernels commonly flush subnormal results to zero (oneDNN's
    # bfloat16 matmul on CPUs, tensor cores): a flushed result is off by less than
    # the smallest normal number, so in float16 and bfloat16 each operation may
    # carry an absolute error up to 2**emin instead of eta (Higham 2002, sec. 2.1,
    # on flush to zero). float32 and float64 keep gradual underflow.
    eta = fmt.min_normal if fmt.precision <= 11 else fmt.underflow_quantum
    c = 1.0 if reduction == "sum" else 1.0 / (n * k)
    s = 2.0 * c
    big = fmt.max_finite
    g = fmt.gamma
    with np.errstate(over="ignore", invalid="ignore"):
        # products may be perturbed by TF32 rounding of their inputs
        ut = TF32.unit_roundoff if (tf32 and fmt.precision > TF32.precision) else 0.0
        pscale = (1.0 + ut) ** 2
        aX, aR = np.abs(X), np.abs(R)
        absXW = aX @ np.abs(W)
        A = absXW * pscale + np.abs(b)[None, :] + np.abs(Y)
        gR = g(d + 2)
        E_R = gR * A + (pscale - 1.0) * absXW + (1.0 + gR) * d * eta
        Rh = aR + E_R

        gG = g(n + 2)
        gG_p = (1.0 + gG) * pscale - 1.0
        rig_gW = abs(s) * (gG_p * (aX.T @ Rh) + aX.T @ E_R) + (1.0 + gG) * eta * (n + aX.sum(axis=0)[:, None])
        rig_gb = abs(s) * (gG * Rh.sum(axis=0) + E_R.sum(axis=0)) + (1.0 + gG) * eta * n
        gL = g(n * k + 2)
        rig_L = abs(c) * (gL * np.sum(Rh**2) + np.sum(E_R * (2 * aR + E_R))) + (1.0 + gL) * n * k * eta

        g2 = g(2)
        gW_abs, gb_abs = np.abs(exact["grad_W"]), np.abs(exact["grad_b"])
        # eta (|g| + E_g): an implementation may multiply by the learning rate held
        # wider than the dtype (torch keeps a Python float scalar in float32 or
        # float64), while the oracle uses it rounded to the dtype; that rounding is
        # relative (covered by gamma_2) unless lr underflows: then |lr - fl(lr)| <= eta
        rig_W = (1 + u) * ((1 + g2) * lr * rig_gW + g2 * lr * gW_abs + eta * (gW_abs + rig_gW)) + u * np.abs(exact["W"]) + eta
        rig_b = (1 + u) * ((1 + g2) * lr * rig_gb + g2 * lr * gb_abs + eta * (gb_abs + rig_gb)) + u * np.abs(exact["b"]) + eta
        dlr = abs(float(lr_held) - lr) if lr_held is not None else 0.0
        if dlr:
            rig_W = rig_W + (1 + u) * (1 + g2) * dlr * (gW_abs + rig_gW)
            rig_b = rig_b + (1 + u) * (1 + g2) * dlr * (gb_abs + rig_gb)

        # ---------------- expected (probabilistic) bounds, variances in units of u^2
        wt = (ut / u) ** 2 if u > 0 else 0.0  # TF32 input roundings, relative to u
        P = X[:, :, None] * W[None, :, :]  # (N, D, K) products
        terms_R = np.concatenate([np.moveaxis(P, 1, 2), b[None, :, None] * np.ones((n, k, 1)), -Y[:, :, None]], axis=2)
        V_R = np.sum(P**2, axis=1) * (1 + 2 * wt) + partial_sum_squares(terms_R, axis=2)  # (N, K)

        T = X[:, :, None] * R[:, None, :]  # (N, D, K) terms of X^T R
        sumT = T.sum(axis=0)
        V_gW = (aX.T**2) @ V_R + (2 + 2 * wt) * np.sum(T**2, axis=0) + sumT**2 + partial_sum_squares(T, axis=0)
        sumR = R.sum(axis=0)
        V_gb = V_R.sum(axis=0) + np.sum(R**2, axis=0) + sumR**2 + partial_sum_squares(R, axis=0)
        sq = (R**2).ravel()
        V_L = 4 * np.sum(R**2 * V_R) + np.sum(sq**2) + 2 * np.sum(sq) ** 2 + partial_sum_squares(sq[None, :], axis=1)[0]
        lam = LAMBDA * u
        # underflow errors are absolute (not relative to u) and are not modelled
        # probabilistically: the expected bounds carry the first-order underflow
        # terms of the rigorous bounds (their gamma -> 0 limit)
        U_R = d * eta
        U_gW = abs(s) * U_R * aX.sum(axis=0)[:, None] + eta * (n + aX.sum(axis=0)[:, None])
        U_gb = (abs(s) * U_R + eta) * n
        U_L = abs(c) * np.sum(U_R * (2 * aR + U_R)) + n * k * eta
        exp_gW = lam * abs(s) * np.sqrt(V_gW) + U_gW
        exp_gb = lam * abs(s) * np.sqrt(V_gb) + U_gb
        # second order: the loss squares the residual, so its error has the term
        # sum dR^2 (>= 0, it does not cancel and grows like N K). Its mean is at most
        # u^2 sum V_R; each term lies in [0, lambda^2 u^2 V_R], so by Hoeffding the sum
        # exceeds the mean by more than lambda^3 u^2 sqrt(sum V_R^2 / 2) with probability
        # below exp(-lambda^2); never more than lambda^2 u^2 sum V_R. It dominates when
        # the residual is far smaller than its rounding errors (near-zero residuals)
        sum_VR = np.sum(V_R)
        second_L = u**2 * min(sum_VR + LAMBDA**3 * np.sqrt(np.sum(V_R**2) / 2), LAMBDA**2 * sum_VR)
        exp_L = lam * abs(c) * np.sqrt(V_L) + abs(c) * second_L + U_L
        exp_W = lam * np.sqrt(lr**2 * s**2 * V_gW + 2 * (lr * exact["grad_W"]) ** 2 + exact["W"] ** 2) + lr * U_gW + eta * gW_abs + eta
        exp_b = lam * np.sqrt(lr**2 * s**2 * V_gb + 2 * (lr * exact["grad_b"]) ** 2 + exact["b"] ** 2) + lr * U_gb + eta * gb_abs + eta
        if dlr:
            exp_W = exp_W + dlr * gW_abs
            exp_b = exp_b + dlr * gb_abs

        rigorous = {
            "loss": np.asarray(rig_L) * _SAFETY,
            "grad_W": rig_gW * _SAFETY,
            "grad_b": rig_gb * _SAFETY,
            "W": rig_W * _SAFETY,
            "b": rig_b * _SAFETY,
        }
        expected_raw = {"loss": np.asarray(exp_L), "grad_W": exp_gW, "grad_b": exp_gb, "W": exp_W, "b": exp_b}
        # NaN (inf * 0 in a vacuous bound) and inf stay inf: a vacuous bound says nothing
        expected = {q: np.minimum(np.nan_to_num(expected_raw[q], nan=np.inf, posinf=np.inf), rigorous[q]) for q in rigorous}
        rigorous = {q: np.nan_to_num(v, nan=np.inf, posinf=np.inf) for q, v in rigorous.items()}

        # ---------------- where the exact value or an intermediate leaves the range
        # the scale c and the factor 2 may be applied before or after the sum over N
        # (torch scales R first, a hand-written step often sums X^T R first): the
        # largest intermediate is max(2, |s|) times the unscaled sum, since |c| <= 1
        sc = max(2.0, abs(s))
        ov_R = (A > big) | (Rh > big)
        ov_terms = (sc * Rh > big) | ~np.isfinite(Rh)
        ovf = {
            "loss": np.asarray(bool(np.sum(Rh**2) > big or ov_R.any() or abs(float(exact["loss"])) > big)),
            "grad_W": (aX.T @ (sc * Rh) > big) | (ov_R | ov_terms).any(axis=0)[None, :] | (np.abs(exact["grad_W"]) > big),
            "grad_b": (sc * Rh.sum(axis=0) > big) | (ov_R | ov_terms).any(axis=0) | (np.abs(exact["grad_b"]) > big),
        }
        ovf["W"] = np.broadcast_to(ovf["grad_W"], W.shape) | (lr * (gW_abs + rig_gW) > big) | (np.abs(exact["W"]) > big)
        ovf["b"] = ovf["grad_b"] | (lr * (gb_abs + rig_gb) > big) | (np.abs(exact["b"]) > big)
    return StepBounds(rigorous=rigorous, expected=expected, may_overflow=ovf)
