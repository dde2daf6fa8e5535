"""Central finite differences in float64: an independent cross-check of the gradient.

The gradient is taken from the loss alone, with no autograd and no closed form:

    g_p ~= (L(w_p + h_p) - L(w_p - h_p)) / (fl(w_p + h_p) - fl(w_p - h_p))

for every element p of W and b, with ``L`` evaluated in float64 in the standard
way (``R = X @ W + b - y``, ``L = c sum R^2``). The update is then
``W' = W - lr g``. It runs on float64 inputs only: it is a cross-check of the
gradient, not a dtype under test.

**Its own error model** (:func:`fd_error_model`; the harness grades these
records against it, never against the bounds of a standard evaluation, and
never uses them as the truth: the exact oracle stays the reference).

- *Truncation error*: Taylor's theorem gives ``h^2/6 |L'''|`` for central
  differences; ``L`` is a polynomial of degree 2 in each parameter (its third
  derivative vanishes; ``tests/test_update_step.py::test_finite_differences_reproduce_the_exact_gradient_on_the_seed``
  checks the gradient it gives against the exact one), so the truncation error is exactly 0 at any ``h``. In exact
  arithmetic the quotient at the points actually used is
  ``g + a s`` with ``a = (1/2) d^2L/dw_p^2`` (``c sum_i X_ij^2`` for W_jk,
  ``c N`` for b_k) and ``s = fl(w+h) + fl(w-h) - 2w`` (the rounding of the two
  perturbed points, ``|s| <= u(|w+h| + |w-h|)``).
- *Rounding error*: each loss evaluation errs by at most ``e+-``, the rigorous
  loss bound of :func:`harness.bounds.step_bounds` at the perturbed point
  (residual magnitudes ``|R| + |dw| |X_:j|``; evaluated column by column, batched over the points: a
  perturbation of ``W_jk`` or ``b_k`` changes only column ``k`` of its terms); the subtraction, the difference
  of the perturbed points and the division add three roundings. So

      |g_fd - g| <= (1 + gamma_3)(|a s| + (e+ + e-) / |den|) + gamma_3 |g| + 3 eta.

- *Choice of h*: the rounding term is about ``u L / h`` and the ``a s`` term
  about ``u a h``, so ``h = sqrt(L / a)`` (rounded to a power of two, kept within
  ``2^-30 .. 2^30`` times ``1 + |w|``) balances them. With no truncation error
  a large h costs nothing else.

The bound is rigorous, so a ``disagree`` here means the oracle (the SymPy
derivation) or this code is wrong: a correct run never raises a false alarm.
The update and the loss records use the standard float64 bounds with the
gradient's error replaced by this one: the update through
:func:`harness.bounds.update_bound`, the one update bound of the harness. There is no ``suspect`` band for the
gradient: the expected bound equals the rigorous one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from ..bounds import (
    Regime,
    StepBounds,
    flush_to_zero_default,
    learning_rate_spread,
    rigorous_loss_bound,
    step_bounds,
    update_bound,
)
from ..floats import get_format
from .registry import StepResult, implementation

F64 = npt.NDArray[np.float64]

#: the perturbation is kept within ``2**-H_RANGE .. 2**H_RANGE`` times ``1 + |w|``
H_RANGE = 30


def _scale(n: int, k: int, reduction: str) -> float:
    return 1.0 if reduction == "sum" else 1.0 / (n * k)


def loss64(X: F64, y: F64, W: F64, b: F64, reduction: str) -> float:
    """``c sum (X W + b - y)^2`` evaluated in float64 in the standard way (``inf`` or NaN past overflow, as any
    float64 evaluation gives: no warning)."""
    with np.errstate(over="ignore", invalid="ignore"):
        R = X @ W + b - y
        n, k = y.shape
        return float(_scale(n, k, reduction) * np.sum(R * R))


def _curvatures(X: F64, y: F64, reduction: str) -> tuple[F64, F64]:
    """``a = (1/2) d^2 L / dw^2`` for each element of W (D, K) and b (K,), in float64."""
    n, k = y.shape
    c = _scale(n, k, reduction)
    with np.errstate(over="ignore"):  # huge X: an infinite curvature, as float64 gives it (_step_size clamps the step)
        aW = np.repeat((c * np.sum(X * X, axis=0))[:, None], k, axis=1)
    ab = np.full(k, c * n)
    return aW, ab


def _step_size(w: float, a: float, loss: float) -> float:
    """The perturbation h for one parameter: a power of two near ``sqrt(L / a)``; 1 where the parameter is not
    finite (a step before overflowed it: its differences are then inf or NaN, graded as the overflow they are)."""
    base = 1.0 + abs(w)
    if not math.isfinite(base):
        return 1.0
    if a > 0 and loss > 0 and math.isfinite(loss):
        h = math.sqrt(loss / a)
        h = min(max(h, base * 2.0**-H_RANGE), base * 2.0**H_RANGE)
    else:
        h = base
    return 2.0 ** round(math.log2(h)) if math.isfinite(h) and h > 0 else 1.0


def perturbations(X: F64, y: F64, W: F64, b: F64, reduction: str) -> Iterator[tuple[str, tuple[int, ...], float, float, float]]:
    """Every parameter element and its perturbed values.

    Yields:
        ``(name, index, a, w_plus, w_minus)``: ``name`` ``"W"`` or ``"b"``, the
        element's index, its curvature ``a``, and ``fl(w + h)``, ``fl(w - h)``.
    """
    loss = loss64(X, y, W, b, reduction)
    aW, ab = _curvatures(X, y, reduction)
    for name, P, A in (("W", W, aW), ("b", b, ab)):
        for idx in np.ndindex(*P.shape):
            w = float(P[idx])
            h = _step_size(w, float(A[idx]), loss)
            yield name, idx, float(A[idx]), w + h, w - h


#: the relative safety margin :func:`harness.bounds.rigorous_loss_bound` multiplies its float64 evaluation by
#: (``harness.bounds._SAFETY``; ``tests/test_finite_differences_bounds.py`` checks the bounds agree)
_SAFETY = 1.0 + 2.0**-30
#: at most this many (N, perturbation) elements per batch of :func:`_perturbed_loss_bounds` (8 MiB per float64 array)
_BATCH_ELEMENTS = 1 << 20


def _perturbed_point(X: F64, Y: F64, W: F64, b: F64, R: F64, name: str, idx: tuple[int, ...], wq: float,
                     reduction: str, zeros: dict[str, F64]) -> tuple[float, bool]:
    """The rigorous loss bound at one perturbed point and whether its loss may spill past float64's range, from the
    whole perturbed residual (:func:`harness.bounds.rigorous_loss_bound`; where it overflows float64, the
    extended-precision re-evaluation of :func:`harness.bounds.step_bounds`). ``R``: the residual's magnitudes."""
    f64 = get_format("float64")
    w = float(W[idx] if name == "W" else b[idx])
    col = np.abs(X[:, idx[0]]) if name == "W" else np.ones(X.shape[0])
    k = idx[1] if name == "W" else idx[0]
    Wq, bq = W.copy(), b.copy()
    (Wq if name == "W" else bq)[idx] = wq
    Rq = R.copy()
    with np.errstate(over="ignore", invalid="ignore"):
        Rq[:, k] += abs(wq - w) * col
    q_inputs = {"X": X, "y": Y, "W": Wq, "b": bq}
    e_q = rigorous_loss_bound(q_inputs, Rq, reduction=reduction, fmt=f64)
    if not math.isfinite(e_q):  # overflowed in float64: the extended-precision re-evaluation
        e_q = float(step_bounds(q_inputs, Rq, zeros, lr=0.0, reduction=reduction, fmt=f64).rigorous["loss"])
    scale = 1.0 if reduction == "sum" else 1.0 / Y.size
    with np.errstate(over="ignore"):
        top = float(np.sum(np.square(Rq, dtype=np.longdouble))) * scale * (1 + 2.0**-40) + e_q
    return e_q, not top <= f64.max_finite


def _perturbed_loss_bounds(X: F64, Y: F64, W: F64, b: F64, R: F64, names: list[str], idxs: list[tuple[int, ...]],
                           wqs: F64, reduction: str, zeros: dict[str, F64]) -> tuple[F64, npt.NDArray[np.bool_]]:
    """:func:`_perturbed_point` for every perturbed point ``(names[p], idxs[p]) -> wqs[p]``, column by column, batched.

    Perturbing ``W[j, k]`` (``b[k]``) changes only column ``k`` of :func:`harness.bounds.rigorous_loss_bound`'s
    element-wise terms (float64, gradual underflow: ``flush_to_zero_default(float64)`` is False, no TF32):
    ``|X| |W|``, ``A``, the residual's bound ``E = gamma_{D+2} A + (1 + gamma_{D+2}) D eta`` and the residual's
    magnitudes ``|R| + |dw| |X_:j|`` (``+ |dw|``); only the loss bound's two sums over all N K elements (``(|R| +
    E)^2`` and ``E (2 |R| + E)``) and the longdouble sum of the squared residual (the spill test) mix the columns.
    So each column of the base point is summed once, and for each perturbed point the perturbed column's terms are
    formed (the same float64 expressions as ``rigorous_loss_bound``'s, in a ``(points, N)`` array, at most
    :data:`_BATCH_ELEMENTS` elements at a time) and summed and
    added to the other columns' sums: the same formula, only the order of its sums (and of the ``|X| |W|``
    column's dot product) differs.

    Why it stays rigorous: every term is a nonnegative float64 value formed as in ``rigorous_loss_bound`` (its
    underflows are the formula's ``eta`` terms), and a float64 sum of ``m`` nonnegative values in any order lies
    within a factor ``(1 - u)^m .. (1 + u)^m`` of their exact sum (likewise the dot product of D terms). Along the
    longest chain there are at most ``m = N K + D + 16`` roundings, so where ``m u <= 2^-32`` the float64 value in
    this order is at least ``(1 - 2^-32)`` times the exact value of the formula, and ``_SAFETY = 1 + 2^-30`` (which
    ``rigorous_loss_bound`` applies as well) more than covers it; past that the bound is multiplied by
    ``1 + 2 m u >= 1 / (1 - m u)`` explicitly.

    Where the inputs or a perturbed value are not finite, or a point's float64 bound is not finite (overflow: the
    extended-precision re-evaluation), that point is evaluated by :func:`_perturbed_point`.
    """
    f64 = get_format("float64")
    reg = Regime(f64, flush_to_zero_default(f64))
    npts = len(names)
    e_out = np.empty(npts)
    spill = np.zeros(npts, dtype=bool)
    n, k = Y.shape
    d = X.shape[1]
    batched = np.isfinite(wqs)
    if reg.ftz or not all(bool(np.isfinite(a).all()) for a in (X, Y, W, b)):
        batched[:] = False
    todo = [p for p in range(npts) if not batched[p]]
    pts = np.flatnonzero(batched)
    if pts.size:
        nk = n * k
        c = 1.0 if reduction == "sum" else 1.0 / (n * k)
        scale = 1.0 if reduction == "sum" else 1.0 / Y.size
        g_R, g_L = reg.gamma(d + 2), reg.gamma(nk + 3)
        e_const = (1.0 + g_R) * d * reg.eta  # residual_bound's (1 + g) n_under eta, n_under = D (no flush-to-zero)
        eta_c = reg.scale_underflow(c)
        n_L = 2 * nk + 1
        m = nk + d + 16
        order = 1.0 if m * reg.u <= 2.0**-32 else 1.0 + 2 * m * reg.u
        aXT = np.ascontiguousarray(np.abs(X).T)  # (D, N)
        aYT, aRT = np.ascontiguousarray(np.abs(Y).T), np.ascontiguousarray(R.T)  # (K, N)
        aW, ab = np.abs(W), np.abs(b)
        with np.errstate(over="ignore", invalid="ignore"):
            # the base point's terms, column by column (rows of the transposed (K, N) arrays)
            E0 = g_R * (np.ascontiguousarray((np.abs(X) @ aW).T) + ab[:, None] + aYT) + e_const
            Rh0 = aRT + E0
            cols = np.stack([np.sum(Rh0**2, axis=1), np.sum(E0 * (2 * aRT + E0), axis=1)])  # (2, K)
            cols_top = np.sum(np.square(aRT, dtype=np.longdouble), axis=1)  # (K,)
        # the sums of the other columns (in order; in longdouble for the spill test)
        others = np.array([[sum((float(cols[r, q]) for q in range(k) if q != kk), 0.0) for kk in range(k)]
                           for r in range(2)])
        others_top = np.array([sum((cols_top[q] for q in range(k) if q != kk), np.longdouble(0)) for kk in range(k)],
                              dtype=np.longdouble)
        is_w = np.array([names[p] == "W" for p in pts], dtype=bool)
        kq = np.array([idxs[p][1] if names[p] == "W" else idxs[p][0] for p in pts], dtype=np.intp)
        jq = np.array([idxs[p][0] if names[p] == "W" else 0 for p in pts], dtype=np.intp)
        w = np.where(is_w, W[jq, kq], b[kq])
        wq = wqs[pts]
        step = max(1, _BATCH_ELEMENTS // max(n, 1))
        for lo in range(0, pts.size, step):
            sl = slice(lo, lo + step)
            p_w, p_k, p_j, p_wq = is_w[sl], kq[sl], jq[sl], wq[sl]
            pcount = p_k.size
            aWq = aW[:, p_k]  # (D, P): each point's column of |W|
            rows = np.arange(pcount)
            aWq[p_j[p_w], rows[p_w]] = np.abs(p_wq[p_w])
            abq = ab[p_k]
            abq[~p_w] = np.abs(p_wq[~p_w])
            dq = np.abs(p_wq - w[sl])
            colq = np.where(p_w[:, None], aXT[p_j], 1.0)  # (P, N): |X_:j|, or ones for b
            with np.errstate(over="ignore", invalid="ignore"):
                Aq = aWq.T @ aXT + abq[:, None] + aYT[p_k]
                Eq = g_R * Aq + e_const
                Rq = aRT[p_k] + dq[:, None] * colq
                Rh = Rq + Eq
                sRh2 = others[0, p_k] + np.sum(Rh**2, axis=1)
                sEL = others[1, p_k] + np.sum(Eq * (2 * Rq + Eq), axis=1)
                rig = abs(c) * (g_L * sRh2 + sEL) + eta_c * (1 + g_L) * sRh2 + (1 + g_L) * reg.eta * n_L
                e_q = rig * _SAFETY * order
                top_sq = others_top[p_k] + np.sum(np.square(Rq, dtype=np.longdouble), axis=1)
                top = top_sq.astype(np.float64) * scale * (1 + 2.0**-40) + e_q
            ok = np.isfinite(e_q)
            e_out[pts[sl][ok]] = e_q[ok]
            spill[pts[sl][ok]] = ~(top[ok] <= f64.max_finite)
            todo.extend(int(p) for p in pts[sl][~ok])
    for p in todo:
        e_out[p], spill[p] = _perturbed_point(X, Y, W, b, R, names[p], idxs[p], float(wqs[p]), reduction, zeros)
    return e_out, spill


def fd_error_model(
    inputs: Mapping[str, F64], residual: F64, exact: Mapping[str, F64], *, lr: float, reduction: str, fmt: Any,
    tf32: bool = False, lr_held: float | None = None, flush_to_zero: bool = False,
) -> StepBounds:
    """Bounds for :func:`finite_differences` (same signature as :func:`harness.bounds.step_bounds`).

    The rigorous loss bounds of the perturbed points (two per parameter element) are evaluated column by column,
    batched over the points (:func:`_perturbed_loss_bounds`): a perturbation of ``W[j, k]`` or ``b[k]`` changes only
    column ``k`` of the loss bound's terms.

    Args:
        inputs: ``X``, ``y``, ``W``, ``b`` of the step (float64).
        residual: the exact residual at W, b (float64).
        exact: the exact quantities (float64).
        lr, reduction, lr_held: as :func:`harness.bounds.step_bounds`.
        fmt, tf32, flush_to_zero: ignored: the finite differences always compute in
            float64 with NumPy (gradual underflow).

    Returns:
        :class:`StepBounds`: loss from the standard float64 model; grad_W, grad_b
        from the finite-difference bound of the module docstring (expected =
        rigorous); W, b from the update bound with that gradient error.
    """
    f64 = get_format("float64")
    u, eta, g3, g2 = f64.unit_roundoff, f64.underflow_quantum, f64.gamma(3), f64.gamma(2)
    X, Y, W, b = (np.asarray(inputs[k], dtype=np.float64) for k in ("X", "y", "W", "b"))
    R = np.abs(np.asarray(residual, dtype=np.float64))
    zeros: dict[str, F64] = {"loss": np.zeros(()), "grad_W": np.zeros_like(W), "grad_b": np.zeros_like(b), "W": W, "b": b}
    base = step_bounds(inputs, residual, exact, lr=lr, reduction=reduction, fmt=f64, lr_held=lr_held)
    grad_bound = {"W": np.zeros_like(W), "b": np.zeros_like(b)}
    # where a perturbed loss may overflow float64, its difference may be inf - inf: the gradient NaN or inf, and the
    # update with it (an upper bound of the perturbed loss from the residual's magnitudes, plus its rounding bound)
    spills = {"W": np.zeros(W.shape, dtype=bool), "b": np.zeros(b.shape, dtype=bool)}
    perts = list(perturbations(X, Y, W, b, reduction))
    names = [name for name, *_ in perts for _q in (0, 1)]
    idxs = [idx for _n, idx, *_ in perts for _q in (0, 1)]
    wqs = np.array([wq for *_r, wp, wm in perts for wq in (wp, wm)], dtype=np.float64)
    e_all, spill_all = _perturbed_loss_bounds(X, Y, W, b, R, names, idxs, wqs, reduction, zeros)
    for i, (name, idx, a, wp, wm) in enumerate(perts):
        w = float(W[idx] if name == "W" else b[idx])
        spills[name][idx] = bool(spill_all[2 * i] or spill_all[2 * i + 1])
        e_pm = (float(e_all[2 * i]), float(e_all[2 * i + 1]))
        den = Fraction(wp) - Fraction(wm)
        s = abs(Fraction(wp) + Fraction(wm) - 2 * Fraction(w))
        g = abs(float(exact["grad_W"][idx] if name == "W" else exact["grad_b"][idx]))
        core = a * float(s) * (1 + u) + (e_pm[0] + e_pm[1]) / float(den) * (1 + u)
        grad_bound[name][idx] = (1 + g3) * core + g3 * g + 3 * eta
    safety = 1.0 + 2.0**-30
    rig_gW, rig_gb = grad_bound["W"] * safety, grad_bound["b"] * safety
    dlr = learning_rate_spread(lr, lr_held, Regime(f64, False))
    gW_abs, gb_abs = np.abs(exact["grad_W"]), np.abs(exact["grad_b"])
    rig_W = update_bound(np.abs(exact["W"]), gW_abs, rig_gW, lr, dlr, g2, eta) * safety
    rig_b = update_bound(np.abs(exact["b"]), gb_abs, rig_gb, lr, dlr, g2, eta) * safety
    rigorous = {"loss": base.rigorous["loss"], "grad_W": rig_gW, "grad_b": rig_gb, "W": rig_W, "b": rig_b}
    expected = {**rigorous, "loss": base.expected["loss"]}
    inf_ok, nan_ok = dict(base.inf_allowed), dict(base.nan_allowed)
    for q, p in (("grad_W", "W"), ("grad_b", "b")):
        for d in (inf_ok, nan_ok):
            d[q] = np.asarray(d[q], dtype=bool) | spills[p]
            d[p] = np.asarray(d[p], dtype=bool) | spills[p]
    return StepBounds(rigorous=rigorous, expected=expected, inf_allowed=inf_ok, nan_allowed=nan_ok,
                      note="finite differences: graded against their own error bound (truncation 0: L is quadratic in "
                           "each parameter; rounding of the two loss evaluations and of the perturbed points)")


@implementation("finite-differences", framework="numpy", kind="builtin", dtypes=("float64",), error_model=fd_error_model,
                description="central finite differences of the float64 loss: an independent cross-check of the gradient")
def finite_differences(X: F64, y: F64, W: F64, b: F64, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
    W, b = np.array(W, np.float64), np.array(b, np.float64)
    out = []
    for _ in range(steps):
        loss = loss64(X, y, W, b, reduction)
        grads = {"W": np.zeros_like(W), "b": np.zeros_like(b)}
        for name, idx, _a, wp, wm in perturbations(X, y, W, b, reduction):
            params = {"W": W.copy(), "b": b.copy()}
            params[name][idx] = wp
            lp = loss64(X, y, params["W"], params["b"], reduction)
            params[name][idx] = wm
            lm = loss64(X, y, params["W"], params["b"], reduction)
            grads[name][idx] = (lp - lm) / (wp - wm)
        W = W - lr * grads["W"]
        b = b - lr * grads["b"]
        out.append(StepResult(np.float64(loss), grads["W"], grads["b"], W.copy(), b.copy()))
    return out
