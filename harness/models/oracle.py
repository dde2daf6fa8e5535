"""The truth of a model's step: the plan (:func:`harness.models.plan.build_plan`) evaluated exactly,
or in rigorous arbitrary-precision ball arithmetic, and rounded only at the end.

Two arithmetics walk the same graph (:mod:`harness.models.graph`), node by node:

- **exact rationals** (python-flint ``fmpq``; matrix products with ``fmpq_mat``, about 30 times
  faster than NumPy object arrays of ``fmpq`` and 100 times faster than ``Fraction``) when every
  element-wise function of the graph maps rationals to rationals (ReLU, leaky ReLU, ``Abs``; the
  linear and polynomial models; expressions without transcendental functions). Every input is a
  binary float, hence a rational, so the result is the exact value.
- **Arb balls** (python-flint ``arb``/``arb_mat``: midpoint-radius intervals whose every operation,
  including ``exp``, ``log``, ``tanh``, ``erf``, ``sin``, ``cos``, ``sqrt``, returns a ball that
  contains the exact result; F. Johansson, "Arb: efficient arbitrary-precision midpoint-radius
  interval arithmetic", IEEE Trans. Computers 66(8), 2017) otherwise. The working precision is
  raised (128, 256, 512, 1024 bits) until every graded element's radius is below
  ``2**-20`` ULP of the dtype at its midpoint (or the ball is exact); whatever is left is decided
  by :func:`straddles_rounding_boundary`.

Rounding: a graded value is *decided* when both ends of its ball round (to nearest, ties to even,
:func:`harness.floats.round_fraction`, which handles the subnormal range and overflow) to the same
value of the dtype: rounding is monotone, so every point of the ball rounds there too. Otherwise
(the ball contains a midpoint between two adjacent values of the dtype, or straddles the overflow
threshold) it is ``undecided``: the correctly rounded result is not known and the record says so.
An exact rational value is always decided.

Kinks: the derivative of ReLU, leaky ReLU or ``Abs`` at an argument exactly 0 is a convention
(:mod:`harness.models.symbolic`); every graded element that depends on such a derivative is flagged
in ``kink`` (a boolean propagated through the graph: a matmul element depends on its row and
column, a sum on the summed elements, an element-wise operation on its arguments' elements). In
ball arithmetic an argument whose ball contains 0 without being exactly 0 cannot be placed on a
branch: the element is evaluated on the union of the branches and flagged undecided.

The learning rate (a ``const`` with ``held = True``) enters rounded to the dtype, as the
implementation holds it; the other constants (``1/(N K)``, leaky ReLU's slope) enter exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt
import sympy as sp
from flint import arb, arb_mat, ctx, fmpq, fmpq_mat

from ..floats import FloatFormat, round_fraction, round_to_format
from .graph import STRUCTURAL, Graph, Node, loss_residual, structural_value
from .symbolic import KINK_FUNCTIONS, RATIONAL_FUNCTIONS, element_function

F64 = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ObjArray = npt.NDArray[Any]

#: Method string of an exact evaluation.
EXACT_METHOD = "exact-rational"
#: Working precisions of the ball arithmetic, tried in order.
PRECISIONS = (128, 256, 512, 1024)
#: ... and after them, only while some ball is not finite: an elementary function of an argument far beyond
#: float64's range (a float64 hidden pre-activation reaches ``D * 2**2048``) needs a precision above the argument's
#: exponent (softplus, ``log(1 + exp(z))``, of ``z`` near ``2**1033`` is ``[+/- inf]`` at 1024 bits and finite at
#: 2048; tanh's derivative there at 4096).
WIDE_PRECISIONS = (2048, 4096)
#: A ball is narrow enough when its radius is at most this many ULPs of the dtype at its midpoint.
RADIUS_ULPS = 2.0**-20


@dataclass
class ModelTruth:
    """The truth of one step, per graded quantity (:meth:`ModelSpec.quantities` names).

    Attributes:
        hi, lo: float64 arrays of the quantity's shape: the unevaluated double-double ``hi + lo`` of
            the exact value, or of the ball's midpoint (relative error at most ``2**-106`` in
            float64's normal range; ``hi = ±inf`` beyond float64's range; NaN where the value is
            undefined, e.g. the log of a negative number).
        radius: absolute radius of the enclosure around its midpoint (0 where exact; ``inf`` where
            undefined), rounded up to float64.
        undecided: True where the enclosure straddles a rounding boundary of the dtype (or a kink's
            branch could not be decided): the correctly rounded value is not known.
        kink: True where the value depends on an activation's derivative taken exactly at its kink
            (the convention of the spec decides it).
        node_values: every node's value, nearest float64 (of the midpoint), in node order (the
            magnitudes for the bounds).
        method: ``"exact-rational"`` or ``"arb-ball-<prec>bit; round-to-nearest from the enclosure"``.
        precision_bits: the ball arithmetic's final working precision (0 for exact rationals).
        residual_radius: the enclosure radius of the loss's residual ``R = F - y`` (N, K) around its node value's
            midpoint (:func:`harness.models.graph.loss_residual`), rounded up to float64: 0 where exact, ``inf`` where
            the ball is not finite (the loss's floor, :func:`harness.models.bounds.model_bounds`); None: not formed.
    """

    hi: dict[str, F64]
    lo: dict[str, F64]
    radius: dict[str, F64]
    undecided: dict[str, BoolArray]
    kink: dict[str, BoolArray]
    node_values: list[F64]
    method: str
    precision_bits: int
    residual_radius: F64 | None = None


# ------------------------------------------------------------------ exact helpers


def hi_lo_of_ratio(p: int, q: int) -> tuple[float, float]:
    """Double-double ``hi + lo`` of ``p / q`` (``q > 0``): ``hi`` the nearest float64 (Python's
    int / int is correctly rounded), ``lo`` the nearest float64 to the remainder; ``(±inf, 0)``
    beyond float64's range."""
    try:
        h = p / q
    except OverflowError:
        return (math.inf if p > 0 else -math.inf), 0.0
    hn, hd = h.as_integer_ratio()
    return h, (p * hd - hn * q) / (q * hd)


def _dyadic(man: int, exp: int) -> tuple[int, int]:
    """``man * 2**exp`` as ``(p, q)``."""
    return (man << exp, 1) if exp >= 0 else (man, 1 << -exp)


#: Balls are handled exactly between ``2**-EXTREME_EXPONENT`` and ``2**EXTREME_EXPONENT``, far beyond
#: the range of every dtype (float64's smallest subnormal is ``2**-1074``, its overflow threshold
#: ``2**1024``); a ball entirely below (``sech(1e38)**2``, ``sigmoid(-1e38)``: exponents near -1e38,
#: whose exact fraction would have 1e38 digits) or entirely beyond is replaced by one that rounds the
#: same way in every dtype (:func:`_ball_parts`).
EXTREME_EXPONENT = 1500


def _ball_parts(v: Any) -> tuple[int, int, int, int] | None:
    """``(mid_p, mid_q, rad_p, rad_q)`` exactly, of an ``arb``; for a ball below
    ``2**-EXTREME_EXPONENT`` in magnitude the enclosing ball ``[-2**-E, 2**-E]`` (it rounds to 0 in
    every dtype); for one entirely beyond ``2**EXTREME_EXPONENT`` the point ``+-2**E`` (it rounds to
    the same infinity); None for a ball that reaches beyond ``2**E`` but not entirely (no exact
    fraction of it is computable: the caller grades it as undefined)."""
    m, e = (int(x) for x in v.mid().man_exp())
    r, f = (int(x) for x in v.rad().man_exp())
    top_mid = m.bit_length() + e if m else -math.inf  # |mid| < 2**top_mid
    top_rad = r.bit_length() + f if r else -math.inf
    if max(top_mid, top_rad) > EXTREME_EXPONENT:
        # |mid| >= 2**(top_mid - 1) and rad < 2**top_rad <= 2**(top_mid - 2): the whole ball lies beyond
        # 2**(top_mid - 2) >= 2**(E - 1) on mid's side, far beyond every dtype's overflow threshold (it rounds to that
        # infinity, as the point 2**E does). (The test asked for 2**(top_mid - 1) > rad + 2**E + ..., which left
        # the balls of midpoints in [2**E, 2**(E + 2)) unknown at every precision: any value passed there, helper-74)
        if m and top_rad <= top_mid - 2:
            return (1 << EXTREME_EXPONENT) * (1 if m > 0 else -1), 1, 0, 1
        return None
    # a part below 2**-E is dropped into the radius (the ball grows by at most 2**-E: it still
    # encloses the exact value, and rounds the same way in every dtype)
    tiny = Fraction(0)
    if m and top_mid < -EXTREME_EXPONENT:
        m, tiny = 0, Fraction(1, 1 << EXTREME_EXPONENT)
    if r and top_rad < -EXTREME_EXPONENT:
        r, tiny = 0, tiny + Fraction(1, 1 << EXTREME_EXPONENT)
    mp, mq = _dyadic(m, e) if m else (0, 1)
    rp, rq = _dyadic(r, f) if r else (0, 1)
    if tiny:
        rad = Fraction(rp, rq) + tiny
        rp, rq = rad.numerator, rad.denominator
    return mp, mq, rp, rq


def ulp_of(value: float, fmt: FloatFormat) -> float:
    """The ULP of ``fmt`` at ``value`` (a float64): ``2**(max(e, emin) - p + 1)`` with
    ``2**e <= |value| < 2**(e+1)``; the subnormal spacing at 0; ``inf`` for an infinite value."""
    if math.isinf(value) or math.isnan(value):
        return math.inf
    e = math.frexp(value)[1] - 1 if value != 0 else fmt.emin
    return math.ldexp(1.0, max(e, fmt.emin) - fmt.precision + 1)


def straddles_rounding_boundary(mid: Fraction, radius: Fraction, fmt: FloatFormat) -> bool:
    """Whether the ball ``[mid - radius, mid + radius]`` contains points that round (to nearest,
    ties to even) to different values of ``fmt``: a midpoint between two adjacent values, a
    boundary of the subnormal range or the overflow threshold lies inside it.

    Rounding is monotone, so it suffices to round both ends (:func:`harness.floats.round_fraction`).
    """
    if radius == 0:
        return False
    return round_fraction(mid - radius, fmt) != round_fraction(mid + radius, fmt)


# ------------------------------------------------------------------ arithmetics


class _Exact:
    """Exact rational arithmetic (``fmpq``)."""

    unsure = False

    def const(self, v: Fraction) -> Any:
        return fmpq(v.numerator, v.denominator)

    def from_float(self, x: float) -> Any:
        return fmpq(*x.as_integer_ratio())

    def sign(self, v: Any) -> int | None:
        return (v > 0) - (v < 0)

    def union(self, a: Any, b: Any) -> Any:  # pragma: no cover - an exact sign is always known
        raise AssertionError("exact arithmetic never needs a union")

    def matmul(self, a: ObjArray, b: ObjArray) -> ObjArray:
        (n, m), (_, p) = a.shape, b.shape
        out = fmpq_mat(n, m, list(a.ravel())) * fmpq_mat(m, p, list(b.ravel()))
        return np.array(out.entries(), dtype=object).reshape(n, p)

    def function(self, name: str, x: Any) -> Any:
        raise ValueError(f"{name} is not a rational function: the exact-rational truth cannot evaluate it")

    def to_float(self, v: Any) -> float:
        p, q = int(v.p), int(v.q)
        try:
            return p / q  # correctly rounded (Python's int / int)
        except OverflowError:
            return math.inf if p > 0 else -math.inf


class _Ball:
    """Arb ball arithmetic at the context's precision."""

    def __init__(self) -> None:
        self.unsure = False

    def const(self, v: Fraction) -> Any:
        return arb(fmpq(v.numerator, v.denominator))

    def from_float(self, x: float) -> Any:
        return arb(x)  # exact: a float64 is a dyadic rational

    def sign(self, v: Any) -> int | None:
        if v.is_exact() and v.is_zero():
            return 0
        if v > 0:
            return 1
        if v < 0:
            return -1
        return None

    def union(self, a: Any, b: Any) -> Any:
        return arb(a).union(arb(b))

    def matmul(self, a: ObjArray, b: ObjArray) -> ObjArray:
        (n, m), (_, p) = a.shape, b.shape
        out = arb_mat(n, m, list(a.ravel())) * arb_mat(m, p, list(b.ravel()))
        return np.array(out.entries(), dtype=object).reshape(n, p)

    def function(self, name: str, x: Any) -> Any:
        x = arb(x)
        if name == "pi":
            return arb.pi()
        return getattr(x, name)()

    def to_float(self, v: Any) -> float:
        if not v.is_finite():
            return math.nan
        return float(v)  # python-flint: arf_get_d of the midpoint, round to nearest


Arith = _Exact | _Ball
Compiled = Callable[[Arith, Mapping[str, Any]], Any]


def _compile(expr: sp.Basic) -> Compiled:
    """A function ``(arithmetic, {"z": .., "out": ..}) -> value`` evaluating a SymPy expression.
    A constant subexpression (``1/2``, ``sqrt(2)``, ``1/sqrt(pi)``) is evaluated once per arithmetic."""
    if not expr.free_symbols:
        inner = _compile_node(expr)
        memo: list[Any] = [None, None]  # (arithmetic, value): the arithmetic held, so never a reused id

        def constant(ar: Arith, env: Mapping[str, Any]) -> Any:
            if memo[0] is not ar:
                memo[0], memo[1] = ar, inner(ar, env)
            return memo[1]
        return constant
    return _compile_node(expr)


def _compile_node(expr: sp.Basic) -> Compiled:
    """:func:`_compile` of one node (its arguments through :func:`_compile`)."""
    if isinstance(expr, sp.Symbol):
        name = expr.name
        return lambda ar, env: env[name]
    if expr.is_Rational:
        q = Fraction(int(expr.p), int(expr.q))
        return lambda ar, env: ar.const(q)
    if expr == sp.pi:
        return lambda ar, env: ar.function("pi", 0)
    if expr == sp.E:
        return lambda ar, env: ar.function("exp", ar.const(Fraction(1)))
    if isinstance(expr, sp.Add):
        parts = [_compile(a) for a in _erfc_terms(expr)]

        def add(ar: Arith, env: Mapping[str, Any]) -> Any:
            acc = parts[0](ar, env)
            for p in parts[1:]:
                acc = acc + p(ar, env)
            return acc
        return add
    if isinstance(expr, sp.Mul):
        factors = [_compile(a) for a in expr.args]

        def mul(ar: Arith, env: Mapping[str, Any]) -> Any:
            acc = factors[0](ar, env)
            for f in factors[1:]:
                acc = acc * f(ar, env)
            return acc
        return mul
    if isinstance(expr, sp.Pow):
        base = _compile(expr.base)
        ex = expr.exp
        if ex.is_Integer:
            k = int(ex)
            if k >= 0:
                return lambda ar, env: base(ar, env) ** k
            return lambda ar, env: ar.const(Fraction(1)) / base(ar, env) ** (-k)
        if ex == sp.Rational(1, 2):
            return lambda ar, env: ar.function("sqrt", base(ar, env))
        if ex == sp.Rational(-1, 2):
            return lambda ar, env: ar.const(Fraction(1)) / ar.function("sqrt", base(ar, env))
        raise ValueError(f"power {expr} cannot be evaluated")
    if isinstance(expr, sp.Piecewise):
        return _compile_piecewise(expr)
    if isinstance(expr, sp.sign):
        arg = _compile(expr.args[0])

        def sign(ar: Arith, env: Mapping[str, Any]) -> Any:
            s = ar.sign(arg(ar, env))
            if s is None:
                ar.unsure = True
                return ar.union(ar.const(Fraction(-1)), ar.const(Fraction(1)))
            return ar.const(Fraction(s))
        return sign
    if isinstance(expr, sp.Abs):
        arg = _compile(expr.args[0])
        return lambda ar, env: abs(arg(ar, env))
    if isinstance(expr, sp.log) and isinstance(expr.args[0], sp.Add) and sp.Integer(1) in expr.args[0].args:
        rest = _compile(expr.args[0] - 1)  # log(1 + w) as log1p(w): no cancellation for small w
        return lambda ar, env: ar.function("log1p", rest(ar, env))
    names = {sp.exp: "exp", sp.log: "log", sp.tanh: "tanh", sp.erf: "erf", sp.sin: "sin", sp.cos: "cos",
             sp.Function("erfc_"): "erfc", sp.Function("sech_"): "sech"}
    if isinstance(expr, sp.Function) and expr.func in names:
        fname = names[expr.func]
        arg = _compile(expr.args[0])
        return lambda ar, env: ar.function(fname, arg(ar, env))
    raise ValueError(f"cannot evaluate {expr} ({type(expr).__name__})")


def _erfc_terms(expr: sp.Add) -> list[sp.Expr]:
    """The terms of a sum, with ``c + c erf(u)`` rewritten ``c erfc(-u)`` and ``1 - tanh(u)**2``
    rewritten ``sech(u)**2`` (the same values): GELU's ``1/2 + erf(z/sqrt 2)/2`` cancels for very
    negative ``z`` and tanh's derivative for large ``|z|``; a ball would lose as many bits as the
    result is small, ``erfc`` and ``sech`` have no cancellation."""
    terms = list(expr.args)
    for t in list(terms):
        coeff, rest = t.as_coeff_Mul()
        if coeff == -1 and isinstance(rest, sp.Pow) and rest.exp == 2 and isinstance(rest.base, sp.tanh) and 1 in terms:
            terms.remove(sp.Integer(1))
            terms.remove(t)
            terms.append(sp.Function("sech_")(rest.base.args[0]) ** 2)
            break
    for t in list(terms):
        coeff, rest = t.as_coeff_Mul()
        if isinstance(rest, sp.erf) and coeff in terms and coeff != 0:
            terms.remove(coeff)
            terms.remove(t)
            terms.append(coeff * sp.Function("erfc_")(-rest.args[0]))
            break
    return terms


def _compile_piecewise(expr: sp.Piecewise) -> Compiled:
    """Branches in order; a condition whose truth is unknown (a ball containing 0) makes the value
    the union of every branch that may apply, and the evaluation unsure."""
    ops = {sp.StrictGreaterThan: lambda s: s > 0, sp.StrictLessThan: lambda s: s < 0,
           sp.GreaterThan: lambda s: s >= 0, sp.LessThan: lambda s: s <= 0,
           sp.Equality: lambda s: s == 0, sp.Unequality: lambda s: s != 0}
    branches: list[tuple[Compiled | None, Callable[[int], bool] | None, Compiled]] = []
    for value, cond in expr.args:
        if cond == sp.true:
            branches.append((None, None, _compile(value)))
            continue
        if type(cond) not in ops:
            raise ValueError(f"condition {cond} cannot be evaluated")
        branches.append((_compile(cond.lhs - cond.rhs), ops[type(cond)], _compile(value)))

    def piecewise(ar: Arith, env: Mapping[str, Any]) -> Any:
        candidates: list[Any] = []
        for diff, test, value in branches:
            if diff is None or test is None:
                decided = True
            else:
                s = ar.sign(diff(ar, env))
                if s is None:
                    candidates.append(value(ar, env))
                    continue
                decided = test(s)
            if decided:
                v = value(ar, env)
                if not candidates:
                    return v
                ar.unsure = True
                for c in candidates:
                    v = ar.union(v, c)
                return v
        raise ValueError(f"no branch of {expr} applies")
    return piecewise


_COMPILED: dict[sp.Basic, Compiled] = {}


def _compiled(expr: sp.Basic) -> Compiled:
    if expr not in _COMPILED:
        _COMPILED[expr] = _compile(expr)
    return _COMPILED[expr]


# ------------------------------------------------------------------ the walk


def _obj(v: Any, shape: tuple[int, ...]) -> ObjArray:
    if isinstance(v, np.ndarray) and v.dtype == object:
        return v.reshape(shape)
    out = np.empty(shape, dtype=object)
    out[...] = v
    return out


def _flags(node: Node, args: list[BoolArray]) -> BoolArray:
    """The dependence flags of a node from its arguments' (module docstring)."""
    shape = node.shape
    op = node.op
    if not args:
        return np.zeros(shape, dtype=bool)
    if op == "matmul":
        rows = np.asarray(args[0].any(axis=1))
        cols = np.asarray(args[1].any(axis=0))
        return np.asarray(rows[:, None] | cols[None, :])
    if op == "sum":
        return np.asarray(args[0].any(axis=node.attrs.get("axis"))).reshape(shape)
    if op == "transpose":
        return args[0].T.copy()
    if op == "concat":
        return np.concatenate(args, axis=node.attrs["axis"])
    if op == "column":
        j = int(node.attrs["index"])
        return args[0][:, j:j + 1].copy()
    out = np.zeros(shape, dtype=bool)
    for a in args:
        out = out | np.broadcast_to(a, shape)
    return out


def is_rational(graph: Graph) -> bool:
    """Whether every element-wise function of the graph maps rationals to rationals."""
    return all(nd.attrs.get("fn") in RATIONAL_FUNCTIONS for nd in graph.nodes if nd.op in ("fn", "fn_grad"))


def _check_input(name: str, x: F64, fmt: FloatFormat) -> F64:
    arr = np.asarray(x, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"input {name}: the truth needs finite values")
    if not np.array_equal(round_to_format(arr, fmt), arr):
        raise ValueError(f"input {name}: values are not {fmt.name} values (the truth takes the floats the implementation saw)")
    return arr


def _walk(graph: Graph, inputs: Mapping[str, F64], fmt: FloatFormat, ar: Arith) -> tuple[list[ObjArray], list[BoolArray], list[BoolArray]]:
    """Every node's value, kink flags and unsure flags."""
    vals: list[ObjArray] = []
    kinks: list[BoolArray] = []
    unsure: list[BoolArray] = []
    for node in graph.nodes:
        a = [vals[i] for i in node.args]
        op = node.op
        shape = node.shape
        node_unsure: BoolArray | None = None
        kink_src: BoolArray | None = None
        if op in ("input", "param"):
            name = node.attrs["name"]
            x = _check_input(name, inputs[name], fmt)
            if x.shape != tuple(shape):  # no silent reshape: a (3, 2) W1 where (2, 3) is expected is a wrong input
                what = "parameter" if op == "param" else "input"
                raise ValueError(f"{what} {name}: shape {x.shape}, the plan expects {tuple(shape)} (no reshaping: "
                                 "pass the array in the model's layout)")
            v = _obj([ar.from_float(float(e)) for e in x.ravel()], (x.size,)).reshape(shape) if x.size else np.empty(shape, dtype=object)
        elif op == "const":
            c = Fraction(node.attrs["value"])
            if node.attrs.get("held"):
                r = round_fraction(c, fmt)
                if isinstance(r, float):
                    raise ValueError(f"constant {node.attrs.get('name', node.id)} = {c} overflows {fmt.name}")
                c = r
            v = _obj(ar.const(c), shape)
        elif op == "matmul":
            v = ar.matmul(a[0], a[1])
        elif op in ("add", "sub", "mul", "div"):
            try:
                v = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}[op](a[0], a[1])
            except ZeroDivisionError:
                raise ValueError(f"node {node.id} (div): division by an exact zero; the step is undefined") from None
        elif op == "square":
            v = a[0] * a[0]
        elif op == "pow":
            k = int(node.attrs["exponent"])
            v = np.vectorize(lambda e, k=k: e**k, otypes=[object])(a[0])
        elif op in ("fn", "fn_grad"):
            if op == "fn_grad" and len(a) == 2:
                # the derivative written in the forward value (tanh: 1 - out**2) equals SymPy's in z
                # (checked in harness.models.symbolic); the truth evaluates the z form, which keeps
                # a ball narrow where the out form cancels (1 - tanh(400)**2)
                f = _compiled(element_function(str(node.attrs["fn"])).grad)
                a = a[:1]
            else:
                f = _compiled(node.attrs["expr"])
            flat_z = a[0].ravel()
            flat_out = np.broadcast_to(a[1], a[0].shape).ravel() if len(a) == 2 else None
            res = np.empty(flat_z.size, dtype=object)
            uns = np.zeros(flat_z.size, dtype=bool)
            for i in range(flat_z.size):
                ar.unsure = False
                env = {"z": flat_z[i]} if flat_out is None else {"z": flat_z[i], "out": flat_out[i]}
                res[i] = f(ar, env)
                uns[i] = ar.unsure
            v = res.reshape(shape)
            node_unsure = uns.reshape(shape)
            if op == "fn_grad" and node.attrs.get("fn") in KINK_FUNCTIONS:
                kink_src = np.array([ar.sign(e) == 0 for e in flat_z], dtype=bool).reshape(shape)
        elif op in STRUCTURAL:
            v = structural_value(node, a)
        else:  # pragma: no cover - Graph.add refuses unknown operations
            raise ValueError(f"unknown operation {op!r}")
        vals.append(_obj(v, shape))
        kf = _flags(node, [kinks[i] for i in node.args])
        uf = _flags(node, [unsure[i] for i in node.args])
        if kink_src is not None:
            kf = kf | kink_src
        if node_unsure is not None:
            uf = uf | node_unsure
        kinks.append(kf)
        unsure.append(uf)
    return vals, kinks, unsure


@dataclass
class _Graded:
    """One graded quantity's ball: float64 ``hi + lo`` of the midpoint, radius rounded up, the
    exact parts ``(mid_p, mid_q, rad_p, rad_q)`` per element, and the undecided flags."""

    hi: F64
    lo: F64
    radius: F64
    parts: list[tuple[int, int, int, int]]
    undecided: BoolArray
    not_finite: BoolArray  # the ball itself is not finite (undefined, or not enclosed at this precision)


def _graded(values: ObjArray, unsure: BoolArray, fmt: FloatFormat, ar: Arith) -> _Graded:
    flat = values.ravel()
    size = flat.size
    hi, lo, rad = np.empty(size), np.empty(size), np.zeros(size)
    und = unsure.ravel().copy()
    not_finite = np.zeros(size, dtype=bool)
    parts: list[tuple[int, int, int, int]] = []
    for i, v in enumerate(flat):
        if isinstance(ar, _Exact):
            p, q = int(v.p), int(v.q)
            hi[i], lo[i] = hi_lo_of_ratio(p, q)
            parts.append((p, q, 0, 1))
            continue
        got = _ball_parts(v) if v.is_finite() else None
        if got is None:
            hi[i], lo[i], rad[i], und[i], not_finite[i] = math.nan, math.nan, math.inf, True, True
            parts.append((0, 1, 0, 1))
            continue
        mp, mq, rp, rq = got
        hi[i], lo[i] = hi_lo_of_ratio(mp, mq)
        if rp:
            r = rp / rq if rp.bit_length() - rq.bit_length() < 1020 else math.inf
            # rp has at most 30 bits (Arb's radius type): rp / rq is exact unless it leaves
            # float64's normal range; round up there
            rad[i] = r if r >= 2.0**-1000 else math.nextafter(r, math.inf)
            if rp.bit_length() > 53 and math.isfinite(r) and Fraction(rad[i]) < Fraction(rp, rq):
                rad[i] = math.nextafter(rad[i], math.inf)  # a radius grown by _ball_parts: rounded up
        parts.append((mp, mq, rp, rq))
    shape = values.shape
    und |= _straddles(hi, lo, rad, parts, fmt)
    return _Graded(hi.reshape(shape), lo.reshape(shape), rad.reshape(shape), parts, und.reshape(shape),
                   not_finite.reshape(shape))


def _node_radius(values: ObjArray, ar: Arith) -> F64:
    """Every element's enclosure radius around its midpoint (the one :meth:`_Ball.to_float` rounds), rounded up to
    float64: 0 in exact arithmetic, ``inf`` for a ball that is not finite. (Arb's radius is an exact binary number of
    30 bits, ``v.rad()``; ``float`` rounds it to nearest, one step up covers that: 0.2 us an element, where
    :func:`_ball_parts`' exact parts take 3 us.)"""
    if isinstance(ar, _Exact):
        return np.zeros(values.shape)
    up, inf = math.nextafter, math.inf
    rad = [up(float(v.rad()), inf) if v.is_finite() else inf for v in values.ravel()]
    return np.asarray(rad, dtype=np.float64).reshape(values.shape)


def _residual_radius(graph: Graph, vals: list[ObjArray], ar: Arith) -> F64 | None:
    """:attr:`ModelTruth.residual_radius` (:func:`_node_radius` of the loss's residual); None for a graph without the
    plan's loss (:func:`harness.models.graph.loss_residual`)."""
    try:
        nid = loss_residual(graph)[0]
    except ValueError:
        return None
    return _node_radius(vals[nid], ar)


def straddle_flags(parts: list[tuple[int, int, int, int]], fmt: FloatFormat) -> BoolArray:
    """:func:`straddles_rounding_boundary` of many balls, each given exactly as
    ``(mid_p, mid_q, rad_p, rad_q)`` (midpoint ``mid_p / mid_q``, radius ``rad_p / rad_q >= 0``),
    with the float64 filter of the truth (cleared balls are decided, the rest exactly); a 1-D array."""
    size = len(parts)
    hi, lo, rad = np.empty(size), np.empty(size), np.empty(size)
    for i, (mp, mq, rp, rq) in enumerate(parts):
        hi[i], lo[i] = hi_lo_of_ratio(mp, mq)
        r = rp / rq if rp.bit_length() - rq.bit_length() < 1020 else math.inf
        rad[i] = r if r >= 2.0**-1000 or r == 0 else math.nextafter(r, math.inf)
        rad[i] = math.nextafter(rad[i], math.inf) if Fraction(rad[i]) < Fraction(rp, rq) else rad[i]
    return _straddles(hi, lo, rad, parts, fmt)


def _straddles(hi: F64, lo: F64, rad: F64, parts: list[tuple[int, int, int, int]], fmt: FloatFormat) -> BoolArray:
    """:func:`straddles_rounding_boundary` per element, with a float64 filter first.

    Filter: ``r0`` the value of ``fmt`` nearest ``hi``; the rounding boundaries around it are
    half a spacing away (the spacing toward zero is half as large at a power of two); the
    midpoint's offset ``delta = (hi - r0) + lo``. The ball is inside one rounding interval when
    ``±delta + radius`` stays below each half-spacing by a margin of ``2**-40`` spacing, far above
    the float64 errors of these few operations and of the double-double (``2**-104 |hi|``, at most
    ``2**-50`` spacing for a format of at most 53 bits). Elements the filter does not clear are
    decided exactly (:func:`straddles_rounding_boundary`).
    """
    out = np.zeros(hi.shape, dtype=bool)
    todo = rad > 0
    if not todo.any():
        return out
    with np.errstate(all="ignore"):
        r0 = round_to_format(np.where(np.isfinite(hi), hi, 0.0), fmt)
        a = np.abs(r0)
        e = np.frexp(a)[1] - 1
        quantum = np.ldexp(1.0, np.maximum(e, fmt.emin) - fmt.precision + 1)
        quantum = np.where(a == 0, fmt.min_subnormal, quantum)
        power_of_two = (np.frexp(a)[0] == 0.5) & (a > fmt.min_normal)
        gap_away = quantum
        gap_toward = np.where(power_of_two, quantum / 2, quantum)
        sign = np.where(r0 < 0, -1.0, 1.0)
        delta = ((hi - r0) + lo) * sign
        margin = 2.0**-40 * gap_toward
        inside = (delta + rad + margin < gap_away / 2) & (-delta + rad + margin < gap_toward / 2)
        inside &= np.isfinite(r0) & np.isfinite(hi) & np.isfinite(rad)  # beyond float64's range: decided exactly
    for i in np.flatnonzero(todo & ~inside):
        mp, mq, rp, rq = parts[i]
        out[i] = straddles_rounding_boundary(Fraction(mp, mq), Fraction(rp, rq), fmt)
    return out


def _ulp_exact(mid: Fraction, fmt: FloatFormat) -> Fraction:
    """The ULP of ``fmt`` at the exact ``mid`` (its subnormal spacing at and near 0)."""
    a = abs(mid)
    if a == 0:
        return Fraction(2) ** (fmt.emin - fmt.precision + 1)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    return Fraction(2) ** (max(e, fmt.emin) - fmt.precision + 1)


def _narrow_enough(graded: Mapping[str, _Graded], fmt: FloatFormat) -> bool:
    """Whether every graded ball is exact, or narrower than :data:`RADIUS_ULPS` ULP of ``fmt`` and
    inside one rounding interval (which also means no undecided kink branch): otherwise more
    precision may help. A ball that is not finite (Arb's ``[+/- inf]`` or ``nan``) asks for more
    too: it is what an undefined value gives, but also what a precision too low gives (``exp`` of an
    argument above ``2**256`` at 128 bits is ``[+/- inf]``, and ``log`` of that ``nan``; at 512 bits it
    is finite): left at the first precision, every quantity it reaches went ungraded and a wrong
    step passed (helper-73). Radii near float64's underflow threshold are compared exactly."""
    for g in graded.values():
        if g.not_finite.any():
            return False
        finite = np.isfinite(g.hi)
        if (g.undecided & finite).any():
            return False
        for i, (h, r) in enumerate(zip(g.hi.ravel(), g.radius.ravel(), strict=True)):
            if r == 0 or not math.isfinite(h):
                continue
            ulp = ulp_of(float(h), fmt)
            if r >= 2.0**-1000 and ulp >= 2.0**-1000:
                if r > RADIUS_ULPS * ulp:
                    return False
                continue
            mp, mq, rp, rq = g.parts[i]
            if Fraction(rp, rq) > Fraction(RADIUS_ULPS) * _ulp_exact(Fraction(mp, mq), fmt):
                return False
    return True


def model_truth(graph: Graph, inputs: Mapping[str, F64], fmt: FloatFormat) -> ModelTruth:
    """The truth of one SGD step of the plan ``graph`` on ``inputs`` in the dtype ``fmt``.

    Args:
        graph: the plan (:func:`harness.models.plan.build_plan`).
        inputs: float64 arrays by name: ``X`` (N, D), ``y`` (N, K) and every parameter, each holding
            values of ``fmt`` (the values the implementation saw).
        fmt: the dtype the step is computed in (rounds the held learning rate; sets the ULP of the
            narrowness test and the rounding boundaries of ``undecided``).

    Returns:
        a :class:`ModelTruth` keyed by ``graph.outputs``.

    Raises:
        ValueError: for a non-finite or non-``fmt`` input, an input or parameter of another shape than
            the plan's (named; never reshaped, even with the same size), an exact division by zero, or a
            held constant beyond ``fmt``'s range.
        KeyError: for a missing input name.
    """
    for node in graph.nodes:
        if node.op in ("input", "param") and node.attrs["name"] not in inputs:
            raise KeyError(f"model_truth: input {node.attrs['name']!r} is missing")
    if is_rational(graph):
        ar: Arith = _Exact()
        vals, kinks, unsure = _walk(graph, inputs, fmt, ar)
        graded = {q: _graded(vals[nid], unsure[nid], fmt, ar) for q, nid in graph.outputs.items()}
        return _truth(graph, vals, kinks, graded, ar, EXACT_METHOD, 0)
    old = ctx.prec
    try:
        used = 0
        for prec in PRECISIONS + WIDE_PRECISIONS:
            if prec > PRECISIONS[-1] and not any(g.not_finite.any() for g in graded.values()):
                break  # (finite balls straddling a rounding boundary stay undecided: not worth these precisions)
            ctx.prec = used = prec
            ar = _Ball()
            vals, kinks, unsure = _walk(graph, inputs, fmt, ar)
            graded = {q: _graded(vals[nid], unsure[nid], fmt, ar) for q, nid in graph.outputs.items()}
            if _narrow_enough(graded, fmt):
                break
        return _truth(graph, vals, kinks, graded, ar, f"arb-ball-{used}bit; round-to-nearest from the enclosure", used)
    finally:
        ctx.prec = old


def _truth(graph: Graph, vals: list[ObjArray], kinks: list[BoolArray], graded: Mapping[str, _Graded], ar: Arith,
           method: str, prec: int) -> ModelTruth:
    node_values = [np.array([ar.to_float(v) for v in val.ravel()], dtype=np.float64).reshape(val.shape) for val in vals]
    return ModelTruth(
        hi={q: g.hi for q, g in graded.items()}, lo={q: g.lo for q, g in graded.items()},
        radius={q: g.radius for q, g in graded.items()}, undecided={q: g.undecided for q, g in graded.items()},
        kink={q: kinks[nid].copy() for q, nid in graph.outputs.items()}, node_values=node_values,
        method=method, precision_bits=prec, residual_radius=_residual_radius(graph, vals, ar))
