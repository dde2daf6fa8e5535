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
  (residual magnitudes ``|R| + |dw| |X_:j|``); the subtraction, the difference
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

from ..bounds import Regime, StepBounds, learning_rate_spread, rigorous_loss_bound, step_bounds, update_bound
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


def fd_error_model(
    inputs: Mapping[str, F64], residual: F64, exact: Mapping[str, F64], *, lr: float, reduction: str, fmt: Any,
    tf32: bool = False, lr_held: float | None = None, flush_to_zero: bool = False,
) -> StepBounds:
    """Bounds for :func:`finite_differences` (same signature as :func:`harness.bounds.step_bounds`).

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
    scale = 1.0 if reduction == "sum" else 1.0 / Y.size
    for name, idx, a, wp, wm in perturbations(X, Y, W, b, reduction):
        w = float(W[idx] if name == "W" else b[idx])
        col = np.abs(X[:, idx[0]]) if name == "W" else np.ones(X.shape[0])
        k = idx[1] if name == "W" else idx[0]
        e_pm = []
        for wq in (wp, wm):
            Wq, bq = W.copy(), b.copy()
            (Wq if name == "W" else bq)[idx] = wq
            Rq = R.copy()
            Rq[:, k] += abs(wq - w) * col
            q_inputs = {"X": X, "y": Y, "W": Wq, "b": bq}
            e_q = rigorous_loss_bound(q_inputs, Rq, reduction=reduction, fmt=f64)
            if not math.isfinite(e_q):  # overflowed in float64: the extended-precision re-evaluation
                e_q = float(step_bounds(q_inputs, Rq, zeros, lr=0.0, reduction=reduction, fmt=f64).rigorous["loss"])
            with np.errstate(over="ignore"):
                top = float(np.sum(np.square(Rq, dtype=np.longdouble))) * scale * (1 + 2.0**-40) + e_q
            if not top <= f64.max_finite:
                spills[name][idx] = True
            e_pm.append(e_q)
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
