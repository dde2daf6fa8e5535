"""The exact oracle: SymPy's derived expressions evaluated in exact arithmetic.

The expressions from :func:`harness.symbolic.derive` are compiled once per
reduction into a :class:`Plan` (closures over matrix products, sums,
transposes, traces and scalar factors; no SymPy at evaluation time) and
evaluated on :class:`harness.exact.ScaledInts`: integer arrays with one
rational scale. No step rounds, so the result is the exact rational value of
the formula on the given inputs; the oracle's own error is zero (method
``"exact-rational"``).

For float inputs with ``N*D*K >= FAST_MIN_WORK`` the same exact rationals come
from :mod:`harness.fastexact` (method ``"exact-integer-slices"``): the inputs
split into integer digit slices whose float64 BLAS products are exact, put
back together in int64 and Python integers. It falls back to the rational
path when the data's exponent range would need too many slices. Both methods
give the same rational, bit for bit (``tests/test_fastexact.py``); the scale
``c`` of the fast path comes from the plan.

With ``accurate=True`` (the graded step of a check, ``N*D*K >=
ACCURATE_MIN_WORK``, where :func:`harness.fastexact.accurate_pays`) the slice path may leave the lowest digit planes out of
``X^T R`` (:func:`harness.fastexact.truncation`: Ozaki, Ogita, Oishi and Rump's
accurate rather than error-free product): ``grad_W`` and ``W`` are then within a
proved radius of the exact value, at most ``2**-60`` times the sum of the
absolute terms (:attr:`ExactStep.radius`; method
:data:`harness.fastexact.ACCURATE_METHOD`); the loss, ``grad_b``, ``b`` and the
residual stay exact. The grading subtracts the radius from the bounds
(:func:`harness.runner`), so no value outside the bound of the exact value
can agree.

Inputs are either the values *as the implementation saw them* (float arrays
rounded to its dtype: dyadic rationals) or the values *as written* in the case
file (decimal rationals such as 1/10). The difference between the two exact
answers is the input representation error, reported apart from the
implementation's arithmetic error.

Cost of the rational path: one exact matrix product is ``N*D*K`` Python-integer
multiply-adds, about 0.5 s for N = 10^5, D*K = 64 on one core; the slice path
does a few float64 matmuls of the same shape per product.

The *trajectory* (:func:`exact_trajectory`, which feeds each step the previous
exact W and b) is exact while it stays small. Exact updates double the size of
the numbers every few steps (each step multiplies by the learning rate and adds
products of X), so after :data:`TRAJECTORY_EXACT_BITS` bits the W and b fed to
the next step are rounded to :data:`TRAJECTORY_BITS` significant bits, element
by element (relative error at most ``2**-TRAJECTORY_BITS`` per step, far below
float64's ``2**-53``). Drift is then measured against a trajectory exact to within
``2**-200`` relative per step: thousands of steps stay exact-grade without
numbers of unbounded size.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt
import sympy as sp

from .exact import FloatInts, ScaledInts
from .fastexact import ACCURATE_METHOD, TooWideError, step_parts
from .fastexact import METHOD as FAST_METHOD
from .symbolic import Derivation, derive

METHOD = "exact-rational"
#: Significant bits kept when the exact trajectory is rounded (relative error 2**-TRAJECTORY_BITS per step).
TRAJECTORY_BITS = 200
#: The trajectory stays exact while W's and b's integers and scale need at most this many bits.
TRAJECTORY_EXACT_BITS = 2048

Value = ScaledInts | Fraction


@dataclass
class ExactStep:
    """The exact values of one step.

    Attributes:
        values: ``loss`` (0-d), ``grad_W`` (D, K), ``grad_b`` (K,), ``W`` (D, K)
            and ``b`` (K,) after the update: exact rationals.
        residual: ``R = X W + 1 b^T - Y`` (N, K), exact.
        method: how the values were computed (``"exact-rational"`` or ``"exact-integer-slices"``, same rationals;
            :data:`harness.fastexact.ACCURATE_METHOD` when ``radius`` is not empty).
        rounded_bits: in a trajectory, ``None`` while the step is exact; else the significant
            bits W and b were rounded to, in this step or an earlier one (see :func:`exact_trajectory`).
        radius: quantity -> float64 array of its shape: ``|value - exact| <= radius`` element-wise
            (an upper bound, in the quantity's units); quantities not in it are exact. Empty unless
            the step was computed with ``accurate=True`` and the accurate product was used.
    """

    values: dict[str, ScaledInts]
    residual: ScaledInts
    method: str = METHOD
    rounded_bits: int | None = None
    radius: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)


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


Scalar = Callable[[Mapping[str, Fraction]], Fraction]
Node = Callable[[Mapping[str, ScaledInts], Mapping[str, Fraction], dict[int, Value]], Value]


class Plan:
    """An evaluation plan compiled once from a derivation's SymPy expressions.

    Every matrix node becomes a closure over its children (shared subexpressions
    are evaluated once per call, through a memo keyed by node); every scalar
    coefficient becomes a closure over ``N``, ``D``, ``K`` and ``eta`` in
    ``Fraction`` arithmetic. No SymPy object is touched at evaluation time.
    ``tests/test_fastexact.py`` checks the plan against the SymPy walker
    (:class:`_Evaluator`) on random exact inputs.
    """

    def __init__(self, der: Derivation) -> None:
        self.der = der
        self._names = {der.N: "N", der.D: "D", der.K: "K", der.lr: "eta"}
        self._nodes: dict[sp.Basic, tuple[int, Node]] = {}
        #: the memo key (negative) of each chain of matrix factors a MatMul multiplies, by the factors' nodes
        self._chains: dict[tuple[int, ...], int] = {}
        self._slots = 0  # coefficient products compiled (:meth:`_product`)
        self._scalars: dict[tuple[int, int, int, Fraction], _Scalars] = {}
        self.residual = self._compile(der.residual)
        self.outputs = {name: self._compile(expr) for name, expr in der.expressions().items()}
        self.scale = self._scalar(der.scale)

    # ---------------------------------------------------------------- scalars
    def _scalar(self, expr: sp.Basic) -> Scalar:
        if expr.is_Rational:
            c = Fraction(int(expr.p), int(expr.q))
            return lambda s: c
        if isinstance(expr, sp.Symbol):
            name = self._names[expr]
            return lambda s: s[name]
        if isinstance(expr, sp.Add):
            parts = [self._scalar(a) for a in expr.args]
            return lambda s: sum((p(s) for p in parts), Fraction(0))
        if isinstance(expr, sp.Mul):
            parts = [self._scalar(a) for a in expr.args]

            def mul(s: Mapping[str, Fraction]) -> Fraction:
                out = Fraction(1)
                for p in parts:
                    out *= p(s)
                return out
            return mul
        if isinstance(expr, sp.Pow) and expr.exp.is_Integer:
            base, e = self._scalar(expr.base), int(expr.exp)
            return lambda s: base(s) ** e
        raise ValueError(f"cannot compile scalar {expr}")

    # ---------------------------------------------------------------- matrices
    def _compile(self, expr: sp.Basic) -> Node:
        if expr in self._nodes:
            return self._nodes[expr][1]
        body = self._body(expr)
        key = len(self._nodes)  # after the children: each node its own key

        def node(env: Mapping[str, ScaledInts], sc: Mapping[str, Fraction], memo: dict[int, Value]) -> Value:
            if key not in memo:
                memo[key] = body(env, sc, memo)
            return memo[key]
        self._nodes[expr] = (key, node)
        return node

    def _body(self, expr: sp.Basic) -> Node:  # noqa: C901 - one branch per node type
        if isinstance(expr, sp.MatrixSymbol):
            name = expr.name
            return lambda env, sc, memo: env[name]
        if isinstance(expr, sp.OneMatrix):
            rows, cols = (self._scalar(x) for x in expr.shape)

            def ones(env: Mapping[str, ScaledInts], sc: Mapping[str, Fraction], memo: dict[int, Value]) -> Value:
                return ScaledInts(np.ones((int(rows(sc)), int(cols(sc))), dtype=object), Fraction(1))
            return ones
        if isinstance(expr, sp.Transpose):
            arg = self._compile(expr.arg)
            return lambda env, sc, memo: _mat(arg(env, sc, memo)).T
        if isinstance(expr, sp.MatAdd):
            flipped = _transpose_of(expr)
            if flipped in self._nodes:  # (A + B)^T: transpose the evaluated sum
                other = self._nodes[flipped][1]
                return lambda env, sc, memo: _mat(other(env, sc, memo)).T
            terms = [self._compile(a) for a in expr.args]

            def add(env: Mapping[str, ScaledInts], sc: Mapping[str, Fraction], memo: dict[int, Value]) -> Value:
                acc = _mat(terms[0](env, sc, memo))
                for t in terms[1:]:
                    acc = acc + _mat(t(env, sc, memo))
                return acc
            return add
        if isinstance(expr, sp.MatMul):
            mats = [self._compile(a) for a in expr.args if isinstance(a, sp.MatrixExpr)]
            coeff_of = self._product([self._scalar(a) for a in expr.args if not isinstance(a, sp.MatrixExpr)])
            # the product of the matrix factors, once per call for every MatMul of the same factors in the same order
            # (grad_W's and the update's (c X^T) R, grad_b's and the update's R^T 1: the same exact value either way)
            chain = self._chains.setdefault(tuple(id(m) for m in mats), -1 - len(self._chains))  # (node keys are >= 0)

            def matmul(env: Mapping[str, ScaledInts], sc: Mapping[str, Fraction], memo: dict[int, Value]) -> Value:
                acc = memo.get(chain)
                if acc is None:
                    acc = _mat(mats[0](env, sc, memo))
                    for m in mats[1:]:
                        acc = acc @ _mat(m(env, sc, memo))
                    memo[chain] = acc
                acc = _mat(acc)
                coeff = coeff_of(sc)
                return acc.times(coeff) if coeff != 1 else acc
            return matmul
        if isinstance(expr, sp.Trace):
            arg = expr.arg
            if isinstance(arg, sp.MatMul) and len(arg.args) == 2 and all(isinstance(a, sp.MatrixExpr) for a in arg.args):
                p, q = (self._compile(a) for a in arg.args)
                return lambda env, sc, memo: _mat(p(env, sc, memo)).hadamard(_mat(q(env, sc, memo)).T).sum()
            inner = self._compile(arg)

            def trace(env: Mapping[str, ScaledInts], sc: Mapping[str, Fraction], memo: dict[int, Value]) -> Value:
                m = _mat(inner(env, sc, memo))
                return ScaledInts(np.trace(m.ints), m.scale).sum()
            return trace
        if isinstance(expr, sp.Mul):
            parts = [self._compile(a) for a in expr.args if isinstance(a, sp.Trace | sp.MatrixExpr)]
            coeffs = [self._scalar(a) for a in expr.args if not isinstance(a, sp.Trace | sp.MatrixExpr)]
            if len(parts) != 1:
                raise ValueError(f"unsupported scalar product {expr}")
            part = parts[0]
            smul_coeff = self._product(coeffs)

            def smul(env: Mapping[str, ScaledInts], sc: Mapping[str, Fraction], memo: dict[int, Value]) -> Value:
                return _mat(part(env, sc, memo)).times(smul_coeff(sc))
            return smul
        if isinstance(expr, sp.MatrixExpr):
            raise ValueError(f"unsupported matrix expression node {type(expr).__name__}: {expr}")
        f = self._scalar(expr)
        return lambda env, sc, memo: f(sc)

    def _product(self, coeffs: list[Scalar]) -> Scalar:
        """The product of the scalars ``coeffs`` (1 for none), in their order from ``Fraction(1)`` on; kept in the
        :class:`_Scalars`' own cache (the same value for the same ``N``, ``D``, ``K`` and ``eta``, every step)."""
        slot = self._slots
        self._slots += 1

        def product(s: Mapping[str, Fraction]) -> Fraction:
            cache = s.coeffs if isinstance(s, _Scalars) else None
            if cache is not None and slot in cache:
                return cache[slot]
            out = Fraction(1)
            for c in coeffs:
                out *= c(s)
            if cache is not None:
                cache[slot] = out
            return out
        return product

    def scalars(self, n: int, d: int, k: int, lr: Fraction) -> dict[str, Fraction]:
        """``N``, ``D``, ``K`` and ``eta`` as Fractions: one :class:`_Scalars` per distinct ``(n, d, k, lr)``
        (the last :data:`_SCALARS_KEPT`), whose cache keeps the plan's coefficients of those sizes."""
        key = (n, d, k, lr)
        sc = self._scalars.get(key)
        if sc is None:
            if len(self._scalars) >= _SCALARS_KEPT:
                self._scalars.clear()
            sc = self._scalars[key] = _Scalars({"N": Fraction(n), "D": Fraction(d), "K": Fraction(k), "eta": Fraction(lr)})
        return sc


#: :meth:`Plan.scalars` keeps at most this many sizes and learning rates (then starts over).
_SCALARS_KEPT = 256


class _Scalars(dict[str, Fraction]):
    """A plan's scalars with a cache of its coefficients' values for them (:meth:`Plan._product`)."""

    __slots__ = ("coeffs",)

    def __init__(self, values: Mapping[str, Fraction]) -> None:
        super().__init__(values)
        self.coeffs: dict[int, Fraction] = {}


def _mat(v: Value) -> ScaledInts:
    if not isinstance(v, ScaledInts):
        raise ValueError("expected a matrix value")
    return v


@functools.cache
def plan(reduction: str) -> Plan:
    """The compiled evaluation plan of :func:`harness.symbolic.derive` (``reduction``), built once."""
    return Plan(derive(reduction))


#: Below this many multiply-adds (N*D*K) the exact-rational path is cheaper than the digit slices.
FAST_MIN_WORK = 512
#: Use the digit-slice path (:mod:`harness.fastexact`) when the inputs are floats; False: always exact rationals.
USE_FAST = True
#: With ``accurate=True``, the accurate ``X^T R`` is tried from this many multiply-adds (N*D*K) on; below, exact.
ACCURATE_MIN_WORK = 1 << 16


def exact_step(inputs: Mapping[str, ScaledInts], lr: Fraction, reduction: str, *, method: str | None = None,
               accurate: bool = False) -> ExactStep:
    """Evaluate loss, gradients and the SGD update exactly.

    Args:
        inputs: exact ``X`` (N, D), ``y`` (N, K), ``W`` (D, K), ``b`` (K,).
        lr: the learning rate, exact.
        reduction: ``"sum"`` or ``"mean"``.
        method: ``"exact-rational"`` (the reference: the compiled SymPy plan on exact
            rationals), ``"exact-integer-slices"`` (:mod:`harness.fastexact`; inputs must
            come from floats) or None (choose: slices for float inputs with
            ``N*D*K >= FAST_MIN_WORK``, falling back to rationals when the data's
            exponent range is too wide). Both give the same exact rationals.
        accurate: allow the slice path's accurate ``X^T R`` (``N*D*K >= ACCURATE_MIN_WORK``, and only where it has
            measured cheaper than the exact product: :func:`harness.fastexact.accurate_pays`): ``grad_W``
            and ``W`` then carry a proved radius (:attr:`ExactStep.radius`, at most ``2**-60`` times the
            sum of the absolute terms) and the method says so; False: exact.

    Returns:
        the exact step; vectors have the shapes of the inputs (``grad_b`` and ``b`` are (K,)).

    Raises:
        ValueError: for the mean over no element (``N K = 0``: its ``1 / (N K)`` is undefined), and for
            the slice method without float inputs.
    """
    X, y, W, b = inputs["X"], inputs["y"], inputs["W"], inputs["b"]
    n, d = X.shape
    k = W.shape[1]
    if reduction == "mean" and n * k == 0:  # (it raised ZeroDivisionError: helper-87)
        raise ValueError(f"the mean over N K = {n} x {k} = 0 elements is undefined: y needs a row and a column")
    floats = all(isinstance(inputs[key], FloatInts) for key in ("X", "y", "W", "b"))
    if method is None:
        method = FAST_METHOD if (USE_FAST and floats and n * d * k >= FAST_MIN_WORK) else METHOD
    if method == FAST_METHOD:
        if not floats:
            raise ValueError("the integer-slice oracle needs float inputs (ScaledInts.from_floats)")
        try:
            return _fast_step(inputs, lr, reduction, accurate and n * d * k >= ACCURATE_MIN_WORK)
        except TooWideError:
            pass
    pl = plan(reduction)
    env = {"X": X, "Y": y, "W": W, "b": ScaledInts(b.ints.reshape(k, 1), b.scale)}
    sc = pl.scalars(n, d, k, lr)
    memo: dict[int, Value] = {}
    residual = _mat(pl.residual(env, sc, memo))
    out: dict[str, ScaledInts] = {}
    for name, node in pl.outputs.items():
        v = _mat(node(env, sc, memo))
        if name in ("grad_b", "b"):
            v = ScaledInts(v.ints.reshape(k), v.scale)
        if name == "loss":
            v = ScaledInts(np.asarray(v.ints, dtype=object).reshape(()), v.scale)
        out[name] = v
    return ExactStep(values=out, residual=residual)


def scaled_radius(radius: npt.NDArray[np.float64], factor: Fraction) -> npt.NDArray[np.float64]:
    """``|factor| radius`` rounded up: a float64 upper bound, ``inf`` where it exceeds float64's range.

    ``|factor|`` is first rounded up to a float64 ``f`` (:func:`float_at_least`: ``f >= |factor|`` also where the
    factor is subnormal, below float64's least subnormal or beyond its range, where ``float()`` rounds it to 0 or
    raises: helper-59); then ``fl(fl(radius f) (1 + 2**-50)) + 2**-1073`` holds the two roundings to nearest of
    the products: relative ``2**-53`` each where normal (``(1 - 2**-53)**2 (1 + 2**-50) > 1``), absolute
    ``2**-1075`` each below (the added ``2**-1073`` is exact there). A zero radius stays ``2**-1073`` whatever the
    factor (``0 * inf`` would be NaN)."""
    f = float_at_least(abs(Fraction(factor)))
    r = np.asarray(radius, dtype=np.float64)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        out = (r * f) * (1 + 2.0**-50) + 2.0**-1073
    return np.where(r == 0, 2.0**-1073, out)


def float_at_least(q: Fraction) -> float:
    """The least float64 at or above the rational ``q`` (``inf`` above the largest finite float64)."""
    try:
        f = float(q)
    except OverflowError:  # Fraction's float() divides integers: a result beyond the range raises
        return math.inf
    return math.nextafter(f, math.inf) if Fraction(f) < q else f


def _fast_step(inputs: Mapping[str, ScaledInts], lr: Fraction, reduction: str, accurate: bool = False) -> ExactStep:
    """The step through :func:`harness.fastexact.step_parts`; the scale ``c`` comes from the plan."""
    fl = {key: inputs[key].floats for key in ("X", "y", "W", "b")}  # type: ignore[attr-defined]
    n, d = fl["X"].shape
    k = fl["W"].shape[1]
    R, xtr, sum_r, sum_r2, xtr_radius = step_parts(fl["X"], fl["y"], fl["W"], fl["b"].reshape(k), accurate=accurate,
                                                   when_cheaper=True)
    pl = plan(reduction)
    c = pl.scale(pl.scalars(n, d, k, lr))
    grad_W = xtr.times(2 * c)
    grad_b = sum_r.times(2 * c)
    W = ScaledInts(inputs["W"].ints, inputs["W"].scale)
    b = ScaledInts(inputs["b"].ints.reshape(k), inputs["b"].scale)
    values = {
        "loss": sum_r2.times(c),
        "grad_W": grad_W,
        "grad_b": grad_b,
        "W": W - grad_W.times(lr),
        "b": b - grad_b.times(lr),
    }
    if xtr_radius is None:
        return ExactStep(values=values, residual=R, method=FAST_METHOD)
    r_grad = scaled_radius(xtr_radius, 2 * c)
    radius = {"grad_W": r_grad, "W": scaled_radius(r_grad, lr)}
    return ExactStep(values=values, residual=R, method=ACCURATE_METHOD, radius=radius)


def exact_inputs_from_floats(arrays: Mapping[str, npt.NDArray[np.float64]], *, finite: bool = False) -> dict[str, ScaledInts]:
    """Exact values of float arrays (the inputs as an implementation saw them).

    Args:
        arrays: float arrays (any float dtype; float64 arrays are kept, not copied).
        finite: True where the caller has just checked that every value is finite (float64 arrays
            then skip :meth:`ScaledInts.from_floats`' own pass over them).

    Raises:
        ValueError: for a NaN or infinite value (``finite=False``)."""
    if finite:
        return {k: FloatInts(v) if isinstance(v, np.ndarray) and v.dtype == np.float64 else ScaledInts.from_floats(v)
                for k, v in arrays.items()}
    return {k: ScaledInts.from_floats(v) for k, v in arrays.items()}


def exact_inputs_from_written(arrays: Mapping[str, npt.NDArray[Any]]) -> dict[str, ScaledInts]:
    """Exact values of the inputs as written (object arrays of Fraction)."""
    return {k: ScaledInts.from_fractions(v) for k, v in arrays.items()}


def _bits(v: ScaledInts) -> int:
    """Bits of the largest integer plus those of the scale: the size of the representation."""
    ints = v.ints.ravel()
    top = max((abs(int(i)).bit_length() for i in ints), default=0)
    return top + v.scale.numerator.bit_length() + v.scale.denominator.bit_length()


def round_significant(v: ScaledInts, bits: int) -> ScaledInts:
    """Each element rounded to ``bits`` significant bits (relative error at most ``2**-bits``),
    over one common power-of-two scale. Values with at most ``bits`` significant bits are unchanged."""
    p, q = v.scale.numerator, v.scale.denominator
    ms: list[int] = []
    es: list[int] = []
    for i in v.ints.ravel():
        num = int(i) * p
        if num == 0:
            ms.append(0)
            es.append(0)
            continue
        e = abs(num).bit_length() - q.bit_length() - bits
        den = q << e if e >= 0 else q
        num = num if e >= 0 else num << -e
        m = (2 * num + den) // (2 * den)  # nearest (ties up)
        ms.append(m)
        es.append(e)
    live = [e for m, e in zip(ms, es, strict=True) if m]
    if not live:
        return ScaledInts(np.zeros(v.shape, dtype=object), Fraction(1))
    e_min = min(live)
    out = np.empty(len(ms), dtype=object)
    out[:] = [m << (e - e_min) if m else 0 for m, e in zip(ms, es, strict=True)]
    return ScaledInts(out.reshape(v.shape), Fraction(2) ** e_min)


def exact_trajectory(inputs: Mapping[str, ScaledInts], lr: Fraction, reduction: str, steps: int,
                     accurate_last: bool = False) -> list[ExactStep]:
    """The exact trajectory: ``steps`` updates, each fed the previous W and b.

    Exact while W and b need at most :data:`TRAJECTORY_EXACT_BITS` bits; past that,
    W and b are rounded to :data:`TRAJECTORY_BITS` significant bits before the next
    step (:func:`round_significant`; the step's ``W`` and ``b`` values are the rounded
    ones and ``rounded_bits`` says so), so the trajectory is exact to within
    ``2**-TRAJECTORY_BITS`` relative per step and its numbers stay bounded.
    ``accurate_last``: the last step (whose W and b feed no other) may be the accurate one
    (:func:`exact_step`'s ``accurate``); every earlier step is exact.

    Returns:
        one :class:`ExactStep` per step (its ``W`` and ``b`` are after that step).
    """
    out: list[ExactStep] = []
    cur = dict(inputs)
    rounded: int | None = None
    for i in range(steps):
        st = exact_step(cur, lr, reduction, accurate=accurate_last and i == steps - 1)
        W, b = st.values["W"], st.values["b"]
        if st.radius and (rounded is not None or max(_bits(W), _bits(b)) > TRAJECTORY_EXACT_BITS):
            st = exact_step(cur, lr, reduction)  # a rounded trajectory stays on exact steps: one error model per step
            W, b = st.values["W"], st.values["b"]
        if max(_bits(W), _bits(b)) > TRAJECTORY_EXACT_BITS:
            W, b = round_significant(W, TRAJECTORY_BITS), round_significant(b, TRAJECTORY_BITS)
            st.values["W"], st.values["b"] = W, b
            rounded = TRAJECTORY_BITS
        if rounded is not None:
            st.rounded_bits = rounded
            st.method = f"{METHOD}, trajectory rounded to {rounded} bits per step"
        out.append(st)
        cur = {**cur, "W": W, "b": b}
    return out
