"""Symbolic derivation of the loss, its gradients and the SGD update (SymPy).

Model, in matrix form with symbolic sizes N (rows), D (features), K (outputs):

    P = X W + 1_N b^T             prediction, (N, K)
    R = P - Y                     residual,   (N, K)
    L = c * trace(R^T R)          loss: c = 1 (reduction "sum") or 1/(N K) ("mean")
    dL/dW = 2 c X^T R             (D, K)
    dL/db = 2 c R^T 1_N           (K, 1)
    W' = W - lr dL/dW,  b' = b - lr dL/db

SymPy's matrix calculus (``MatrixExpr.diff``) derives the gradients; they are
never typed in by hand. :func:`check_elementwise` cross-checks the closed form
against element-wise ``sympy.diff`` of the fully expanded scalar loss on small
concrete shapes, so neither route is trusted blindly.

Source: Petersen & Pedersen, *The Matrix Cookbook* (2012), eq. (103)-(108)
for the derivative of a trace of a quadratic form.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sympy as sp

from .verdicts import QUANTITIES as QUANTITIES  # re-exported: one definition of the quantity order


@dataclass(frozen=True)
class Derivation:
    """The derived expressions for one reduction.

    Attributes:
        reduction: ``"sum"`` or ``"mean"``.
        N, D, K: size symbols (positive integers).
        X, W, b, Y: matrix symbols of shapes (N, D), (D, K), (K, 1), (N, K).
        lr: learning-rate symbol.
        scale: ``c`` in ``L = c trace(R^T R)``.
        residual, loss, grad_W, grad_b, W_next, b_next: SymPy expressions.
    """

    reduction: str
    N: sp.Symbol
    D: sp.Symbol
    K: sp.Symbol
    X: sp.MatrixSymbol
    W: sp.MatrixSymbol
    b: sp.MatrixSymbol
    Y: sp.MatrixSymbol
    lr: sp.Symbol
    scale: sp.Expr
    residual: sp.MatrixExpr
    loss: sp.Expr
    grad_W: sp.MatrixExpr
    grad_b: sp.MatrixExpr
    W_next: sp.MatrixExpr
    b_next: sp.MatrixExpr

    def expressions(self) -> dict[str, sp.Basic]:
        """Quantity name -> expression (names as in result records)."""
        return {
            "loss": self.loss,
            "grad_W": self.grad_W,
            "grad_b": self.grad_b,
            "W": self.W_next,
            "b": self.b_next,
        }

    def equations(self) -> dict[str, sp.Eq]:
        """Display equations ``lhs = rhs`` for each quantity."""
        L, lr = sp.Symbol("L"), self.lr
        Wn, bn = sp.MatrixSymbol("W'", *self.W.shape), sp.MatrixSymbol("b'", *self.b.shape)
        dW = sp.MatrixSymbol(r"\partial L/\partial W", *self.W.shape)
        db = sp.MatrixSymbol(r"\partial L/\partial b", *self.b.shape)
        _ = lr
        return {
            "loss": sp.Eq(L, self.loss, evaluate=False),
            "grad_W": sp.Eq(dW, self.grad_W, evaluate=False),
            "grad_b": sp.Eq(db, self.grad_b, evaluate=False),
            "W": sp.Eq(Wn, self.W_next, evaluate=False),
            "b": sp.Eq(bn, self.b_next, evaluate=False),
        }

    def text(self) -> dict[str, str]:
        """Plain-text rendering of each quantity's formula."""
        names = {"loss": "L", "grad_W": "dL/dW", "grad_b": "dL/db", "W": "W'", "b": "b'"}
        return {q: f"{names[q]} = {sp.sstr(e)}" for q, e in self.expressions().items()}

    def latex(self) -> dict[str, str]:
        """LaTeX rendering of each quantity's formula."""
        names = {"loss": "L", "grad_W": r"\frac{\partial L}{\partial W}", "grad_b": r"\frac{\partial L}{\partial b}", "W": "W'", "b": "b'"}
        return {q: f"{names[q]} = {sp.latex(e)}" for q, e in self.expressions().items()}

    def mathml(self) -> dict[str, str]:
        """Presentation MathML (SymPy's presentation printer) of each formula,
        each wrapped in a ``<math>`` element ready to embed in HTML."""
        names = {"loss": "<mi>L</mi>", "grad_W": _frac_mathml("W"), "grad_b": _frac_mathml("b"), "W": "<msup><mi>W</mi><mo>&#x2032;</mo></msup>", "b": "<msup><mi>b</mi><mo>&#x2032;</mo></msup>"}
        out = {}
        for q, e in self.expressions().items():
            if q in ("W", "b"):
                # W' = W - eta dL/dW: SymPy would print the folded coefficient as (-1) 2 eta ...
                grad = self.grad_W if q == "W" else self.grad_b
                body = f"<mi>{q}</mi><mo>&#x2212;</mo><mi>&#x3B7;</mi><mo>&InvisibleTimes;</mo>{sp.mathml(grad, printer='presentation')}"
            else:
                body = sp.mathml(e, printer="presentation")
            out[q] = f'<math display="block"><mrow>{names[q]}<mo>=</mo>{body}</mrow></math>'
        return out


def _frac_mathml(var: str) -> str:
    return f"<mfrac><mrow><mo>&#x2202;</mo><mi>L</mi></mrow><mrow><mo>&#x2202;</mo><mi>{var}</mi></mrow></mfrac>"


@functools.cache
def derive(reduction: str) -> Derivation:
    """Derive loss, gradients and update for ``reduction`` (cached per reduction).

    Raises:
        ValueError: for a reduction other than ``"sum"`` or ``"mean"``.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"unknown reduction {reduction!r}; expected 'sum' or 'mean'")
    N, D, K = sp.symbols("N D K", integer=True, positive=True)
    X = sp.MatrixSymbol("X", N, D)
    W = sp.MatrixSymbol("W", D, K)
    b = sp.MatrixSymbol("b", K, 1)
    Y = sp.MatrixSymbol("Y", N, K)
    lr = sp.Symbol("eta", positive=True)
    ones = sp.OneMatrix(N, 1)
    scale: sp.Expr = sp.Integer(1) if reduction == "sum" else 1 / (N * K)
    residual = X * W + ones * b.T - Y
    loss = scale * sp.Trace(residual.T * residual)
    grad_W = loss.diff(W)
    grad_b = loss.diff(b)
    return Derivation(
        reduction=reduction, N=N, D=D, K=K, X=X, W=W, b=b, Y=Y, lr=lr, scale=scale,
        residual=residual, loss=loss, grad_W=grad_W, grad_b=grad_b,
        W_next=W - lr * grad_W, b_next=b - lr * grad_b,
    )


def check_elementwise(reduction: str, n: int, d: int, k: int) -> list[str]:
    """Cross-check the closed form against element-wise differentiation.

    Builds the scalar loss ``c * sum_ij (sum_l X_il W_lj + b_j - Y_ij)^2`` from
    explicit scalar symbols for an ``n x d`` X and ``d x k`` W, differentiates
    it with ``sympy.diff`` entry by entry, and compares every entry with the
    closed-form gradient evaluated on the same symbols.

    Returns:
        a list of mismatch descriptions; empty when both routes agree.
    """
    der = derive(reduction)
    Xs = sp.Matrix(n, d, lambda i, j: sp.Symbol(f"x{i}_{j}"))
    Ws = sp.Matrix(d, k, lambda i, j: sp.Symbol(f"w{i}_{j}"))
    bs = sp.Matrix(k, 1, lambda i, _j: sp.Symbol(f"b{i}"))
    Ys = sp.Matrix(n, k, lambda i, j: sp.Symbol(f"y{i}_{j}"))
    c = sp.Integer(1) if reduction == "sum" else sp.Rational(1, n * k)
    loss = c * sum(
        (sum(Xs[i, l] * Ws[l, j] for l in range(d)) + bs[j] - Ys[i, j]) ** 2
        for i in range(n) for j in range(k)
    )
    sizes = {der.N: n, der.D: d, der.K: k}

    def closed(expr: sp.Basic) -> sp.Matrix:
        concrete = expr.subs(sizes)
        concrete = concrete.subs({
            der.X.subs(sizes): Xs, der.W.subs(sizes): Ws, der.b.subs(sizes): bs, der.Y.subs(sizes): Ys,
        })
        concrete = concrete.replace(lambda e: isinstance(e, sp.OneMatrix), lambda e: sp.ones(*e.shape))
        concrete = concrete.doit()
        if isinstance(concrete, sp.MatrixExpr):
            concrete = concrete.as_explicit()
        return sp.Matrix(concrete) if isinstance(concrete, sp.MatrixBase) else concrete

    problems: list[str] = []
    gW = closed(der.grad_W)
    gb = closed(der.grad_b)
    for i in range(d):
        for j in range(k):
            if sp.expand(gW[i, j] - sp.diff(loss, Ws[i, j])) != 0:
                problems.append(f"grad_W[{i},{j}] differs ({reduction}, n={n}, d={d}, k={k})")
    for j in range(k):
        if sp.expand(gb[j, 0] - sp.diff(loss, bs[j])) != 0:
            problems.append(f"grad_b[{j}] differs ({reduction}, n={n}, d={d}, k={k})")
    lc = closed(der.loss)
    lc_val = lc[0, 0] if isinstance(lc, sp.MatrixBase) else lc
    if sp.expand(lc_val - loss) != 0:
        problems.append(f"loss differs ({reduction}, n={n}, d={d}, k={k})")
    return problems
