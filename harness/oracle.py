"""The exact oracle: SymPy's derived expressions evaluated in exact arithmetic.

The expressions from :func:`harness.symbolic.derive` are walked node by node
(matrix products, sums, transposes, traces, scalar factors) and evaluated on
:class:`harness.exact.ScaledInts`: integer arrays with one rational scale. No
step rounds, so the result is the exact rational value of the formula on the
given inputs; the oracle's own error is zero (method ``"exact-rational"``).

Inputs are either the values *as the implementation saw them* (float arrays
rounded to its dtype: dyadic rationals) or the values *as written* in the case
file (decimal rationals such as 1/10). The difference between the two exact
answers is the input representation error, reported apart from the
implementation's arithmetic error.

Cost: one exact matrix product is ``N*D*K`` Python-integer multiply-adds,
about 0.5 s for N = 10^5, D*K = 64 on one core.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt
import sympy as sp

from .exact import ScaledInts
from .symbolic import Derivation, derive

METHOD = "exact-rational"

Value = ScaledInts | Fraction


@dataclass
class ExactStep:
    """The exact values of one step.

    Attributes:
        values: ``loss`` (0-d), ``grad_W`` (D, K), ``grad_b`` (K,), ``W`` (D, K)
            and ``b`` (K,) after the update: exact rationals.
        residual: ``R = X W + 1 b^T - Y`` (N, K), exact.
        method: how the values were computed (``"exact-rational"``).
    """

    values: dict[str, ScaledInts]
    residual: ScaledInts
    method: str = METHOD


_TRANSPOSES: dict[sp.Basic, sp.Basic] = {}


def _transpose_of(expr: sp.Basic) -> sp.Basic:
    """``expr.T``, cached: SymPy's transpose rewrites the expression tree on
    every call, and the derived expressions are the same objects every step."""
    if expr not in _TRANSPOSES:
        _TRANSPOSES[expr] = expr.T
    return _TRANSPOSES[expr]


class _Evaluator:
    """Evaluates a SymPy matrix expression on exact arrays, memoising subexpressions."""

    def __init__(self, der: Derivation, env: Mapping[str, ScaledInts], sizes: Mapping[sp.Symbol, int], lr: Fraction) -> None:
        self.env = env
        self.subs: dict[sp.Basic, Any] = {**sizes, der.lr: sp.Rational(lr.numerator, lr.denominator)}
        self.memo: dict[sp.Basic, Value] = {}

    def scalar(self, expr: sp.Basic) -> Fraction:
        v = expr.subs(self.subs) if expr.free_symbols else expr
        if not v.is_Rational:  # substitution of integers and a rational is normally rational already
            v = sp.nsimplify(v)
        if not v.is_Rational:
            raise ValueError(f"cannot evaluate scalar {expr} exactly (got {v})")
        return Fraction(int(v.p), int(v.q))

    def __call__(self, expr: sp.Basic) -> Value:
        if expr in self.memo:
            return self.memo[expr]
        if isinstance(expr, sp.MatAdd):
            # (A + B)^T is computed once: reuse the transpose of an evaluated sum
            flipped = _transpose_of(expr)
            if flipped in self.memo:
                cached = self.memo[flipped]
                assert isinstance(cached, ScaledInts)
                self.memo[expr] = cached.T
                return cached.T
        out = self._eval(expr)
        self.memo[expr] = out
        return out

    def _eval(self, expr: sp.Basic) -> Value:
        if isinstance(expr, sp.MatrixSymbol):
            return self.env[expr.name]
        if isinstance(expr, sp.OneMatrix):
            rows, cols = (int(self.scalar(s)) for s in expr.shape)
            return ScaledInts(np.ones((rows, cols), dtype=object), Fraction(1))
        if isinstance(expr, sp.Transpose):
            return self._matrix(expr.arg).T
        if isinstance(expr, sp.MatAdd):
            terms = [self._matrix(a) for a in expr.args]
            acc = terms[0]
            for t in terms[1:]:
                acc = acc + t
            return acc
        if isinstance(expr, sp.MatMul):
            coeff = Fraction(1)
            mats: list[ScaledInts] = []
            for a in expr.args:
                if isinstance(a, sp.MatrixExpr):
                    mats.append(self._matrix(a))
                else:
                    coeff *= self.scalar(a)
            acc = mats[0]
            for m in mats[1:]:
                acc = acc @ m
            return acc.times(coeff) if coeff != 1 else acc
        if isinstance(expr, sp.Trace):
            arg = expr.arg
            if isinstance(arg, sp.MatMul) and all(isinstance(a, sp.MatrixExpr) for a in arg.args) and len(arg.args) == 2:
                p, q = (self._matrix(a) for a in arg.args)
                return p.hadamard(q.T).sum()  # trace(P Q) = sum(P * Q^T), no full product
            m = self._matrix(arg)
            return ScaledInts(np.trace(m.ints), m.scale).sum()
        if isinstance(expr, sp.Mul):
            coeff = Fraction(1)
            parts: list[ScaledInts] = []
            for a in expr.args:
                v = self(a) if isinstance(a, sp.Trace | sp.MatrixExpr) else self.scalar(a)
                if isinstance(v, ScaledInts):
                    parts.append(v)
                else:
                    coeff *= v
            if len(parts) != 1:
                raise ValueError(f"unsupported scalar product {expr}")
            return parts[0].times(coeff)
        if isinstance(expr, sp.MatrixExpr):
            raise ValueError(f"unsupported matrix expression node {type(expr).__name__}: {expr}")
        return self.scalar(expr)

    def _matrix(self, expr: sp.Basic) -> ScaledInts:
        v = self(expr)
        if not isinstance(v, ScaledInts):
            raise ValueError(f"expected a matrix for {expr}")
        return v


def exact_step(inputs: Mapping[str, ScaledInts], lr: Fraction, reduction: str) -> ExactStep:
    """Evaluate loss, gradients and the SGD update exactly.

    Args:
        inputs: exact ``X`` (N, D), ``y`` (N, K), ``W`` (D, K), ``b`` (K,).
        lr: the learning rate, exact.
        reduction: ``"sum"`` or ``"mean"``.

    Returns:
        the exact step; vectors have the shapes of the inputs (``grad_b`` and ``b`` are (K,)).
    """
    der = derive(reduction)
    X, y, W, b = inputs["X"], inputs["y"], inputs["W"], inputs["b"]
    n, d = X.shape
    k = W.shape[1]
    env = {"X": X, "Y": y, "W": W, "b": ScaledInts(b.ints.reshape(k, 1), b.scale)}
    ev = _Evaluator(der, env, {der.N: n, der.D: d, der.K: k}, lr)
    residual = ev(der.residual)
    assert isinstance(residual, ScaledInts)
    out: dict[str, ScaledInts] = {}
    for name, expr in der.expressions().items():
        v = ev(expr)
        assert isinstance(v, ScaledInts)
        if name in ("grad_b", "b"):
            v = ScaledInts(v.ints.reshape(k), v.scale)
        if name == "loss":
            v = ScaledInts(np.asarray(v.ints, dtype=object).reshape(()), v.scale)
        out[name] = v
    return ExactStep(values=out, residual=residual)


def exact_inputs_from_floats(arrays: Mapping[str, npt.NDArray[np.float64]]) -> dict[str, ScaledInts]:
    """Exact values of float arrays (the inputs as an implementation saw them)."""
    return {k: ScaledInts.from_floats(v) for k, v in arrays.items()}


def exact_inputs_from_written(arrays: Mapping[str, npt.NDArray[Any]]) -> dict[str, ScaledInts]:
    """Exact values of the inputs as written (object arrays of Fraction)."""
    return {k: ScaledInts.from_fractions(v) for k, v in arrays.items()}


def exact_trajectory(inputs: Mapping[str, ScaledInts], lr: Fraction, reduction: str, steps: int) -> list[ExactStep]:
    """The exact trajectory: ``steps`` updates, each fed the previous *exact* W and b.

    Returns:
        one :class:`ExactStep` per step (its ``W`` and ``b`` are after that step).
    """
    out: list[ExactStep] = []
    cur = dict(inputs)
    for _ in range(steps):
        st = exact_step(cur, lr, reduction)
        out.append(st)
        cur = {**cur, "W": st.values["W"], "b": st.values["b"]}
    return out
