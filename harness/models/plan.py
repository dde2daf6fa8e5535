"""The evaluation plan of one SGD step of a model: :func:`build_plan` turns a
:class:`harness.models.spec.ModelSpec` into a :class:`harness.models.graph.Graph`.

The plan is what reverse-mode automatic differentiation computes (as PyTorch's autograd does),
written once as a graph so that the truth (:mod:`harness.models.oracle`), the float64 reference
(:func:`harness.models.graph.evaluate_float64`) and the error analysis (:mod:`harness.models.bounds`)
all walk the same operations:

- forward: ``h0 = X``; per hidden layer ``z_l = h_{l-1} @ W_l (+ b_l)``, ``h_l = act(z_l)``; output
  ``F = h_L @ W_{L+1} (+ b_{L+1})``. Polynomial: ``phi = concat(X, X**2, ..., X**P)``,
  ``F = phi @ W (+ b)``. Expression: the SymPy tree element-wise over the N rows (``x_j`` is
  column j of ``X``, shape (N, 1); scalar parameters broadcast).
- loss: ``R = F - y``; ``loss = c * sum(square(R))``, ``c = 1`` (``"sum"``, no multiplication) or
  ``1/(N K)`` (``"mean"``), role ``"loss"``.
- backward (role ``"backward"``): seed ``G = (2c) * R`` (``dL/dF``; the constant's ``factors`` 2 and, under the mean, ``1/N``
  and ``1/K`` (:func:`seed_factors`), which an implementation may apply in any association: ``2 * (c * R)``,
  ``2 R / N / K``); per affine layer
  ``grad_W = h^T @ delta``, ``grad_b = sum(delta, axis=0)``, ``delta_prev = (delta @ W^T) * act'(z)``
  with ``act'`` the SymPy derivative (:mod:`harness.models.symbolic`: ``fn_grad`` of ``(z, out)``
  where autograd uses the output, e.g. tanh's ``1 - out**2``). Expression: reverse mode over the
  tree with each operation's local partials (``d(a b) = b da + a db``, ``d(a/b)``,
  ``d(a**n) = n a**(n-1) da`` from ``sympy.diff``, ``d f(a) = f'(a) da``), summed over rows for the
  scalar parameters. The last product of a chain an implementation may group otherwise declares the chain's
  factors (``attrs["chain"]``, up to :data:`CHAIN_LIMIT`): a product of three or more factors (``x1*a*b``) and a
  power's adjoint times its local derivative, ``g * (n * a**(n-1))``.
- update (role ``"update"``): ``p' = p - lr * grad_p`` with ``lr`` a ``const`` node
  (``value = Fraction(lr)`` as written, ``held = True``: the implementation holds lr rounded to
  the dtype and the truth uses that rounding).

``graph.outputs`` lists ``spec.quantities(d, k)`` in order.

:func:`cross_check` checks a plan against SymPy itself: the whole scalar loss of a small case
built with concrete symbols, differentiated by ``sympy.diff`` with respect to every parameter
element, compared with the plan's exact evaluation.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from fractions import Fraction

import numpy as np
import numpy.typing as npt
import sympy as sp

from ..bounds import seed_factors
from .graph import Graph
from .spec import ModelSpec
from .symbolic import (
    ElementFunction,
    activation,
    element_function,
    function_name,
    parse_expression,
    power_form,
    product_chain,
    sum_chain,
)

F64 = npt.NDArray[np.float64]

REDUCTIONS = ("sum", "mean")


def loss_scale(reduction: str, n: int, k: int) -> Fraction:
    """``c`` of ``loss = c sum(R**2)``: 1 for ``"sum"``, ``1/(N K)`` for ``"mean"``.

    Raises:
        ValueError: for another reduction.
    """
    if reduction == "sum":
        return Fraction(1)
    if reduction == "mean":
        return Fraction(1, n * k)
    raise ValueError(f"reduction: expected 'sum' or 'mean', got {reduction!r}")


#: The longest product chain the plan declares (``attrs["chain"]``): :func:`harness.bounds.chain_underflow`
#: takes the worst of its associations over every split of every subset of its factors (``3**m`` splits of ``m``).
CHAIN_LIMIT = 6


def _fn(g: Graph, f: ElementFunction, z: int, shape: tuple[int, ...]) -> int:
    attrs: dict[str, object] = {"fn": f.name, "expr": f.expr}
    if f.slope is not None:
        attrs["slope"] = f.slope
    return g.add("fn", (z,), shape, "forward", **attrs)


def _fn_grad(g: Graph, f: ElementFunction, z: int, out: int, shape: tuple[int, ...]) -> int:
    args = (z, out) if f.grad_uses_out else (z,)
    attrs: dict[str, object] = {"fn": f.name, "of": out, "expr": f.grad_expr}
    if f.slope is not None:
        attrs["slope"] = f.slope
    return g.add("fn_grad", args, shape, "backward", **attrs)


def _loss_and_seed(g: Graph, pred: int, y: int, n: int, k: int, reduction: str) -> tuple[int, int]:
    """``(loss, G)``: the loss node and ``dL/dF = 2c R``."""
    c = loss_scale(reduction, n, k)
    r = g.add("sub", (pred, y), (n, k), "loss")
    sq = g.add("square", (r,), (n, k), "loss")
    s = g.add("sum", (sq,), (), "loss", axis=None)
    loss = s if c == 1 else g.add("mul", (g.add("const", (), (), "loss", value=c, held=False), s), (), "loss")
    # factors: the square's 2 and the loss scale c as the mean's two divisions 1/N and 1/K, which an implementation may
    # apply in any association (2 fl(c R): a mean then doubled; 2 R / N / K: torch's mean of a mean);
    # harness.bounds.chain_underflow counts the underflows of each (helpers 128, 130)
    two_c = g.add("const", (), (), "backward", value=2 * c, held=False, factors=seed_factors(reduction, n, k))
    seed = g.add("mul", (two_c, r), (n, k), "backward")
    return loss, seed


def _affine_backward(g: Graph, h: int, delta: int, grads: dict[str, int], w_name: str, b_name: str | None,
                     shape_w: tuple[int, int], n: int) -> None:
    ht = g.add("transpose", (h,), (shape_w[0], n), "backward")
    grads[w_name] = g.add("matmul", (ht, delta), shape_w, "backward")
    if b_name is not None:
        grads[b_name] = g.add("sum", (delta,), (shape_w[1],), "backward", axis=0)


def _mlp(g: Graph, spec: ModelSpec, n: int, d: int, k: int, x: int, params: Mapping[str, int]) -> tuple[int, list[tuple[int, int, int]]]:
    """Forward pass of an mlp: ``(F, [(h_in, z, out) per hidden layer])``."""
    f = activation(spec)
    widths = (d, *spec.hidden, k)
    h = x
    layers: list[tuple[int, int, int]] = []
    for layer in range(1, len(widths)):
        shape = (n, widths[layer])
        z = g.add("matmul", (h, params[f"W{layer}"]), shape)
        if spec.bias:
            z = g.add("add", (z, params[f"b{layer}"]), shape)
        if layer == len(widths) - 1:
            return z, layers
        out = _fn(g, f, z, shape)
        layers.append((h, z, out))
        h = out
    raise AssertionError("unreachable")  # pragma: no cover


def _mlp_backward(g: Graph, spec: ModelSpec, n: int, d: int, k: int, x: int, params: Mapping[str, int],
                  layers: list[tuple[int, int, int]], seed: int) -> dict[str, int]:
    f = activation(spec)
    widths = (d, *spec.hidden, k)
    grads: dict[str, int] = {}
    delta = seed
    for layer in range(len(widths) - 1, 0, -1):
        h_in = x if layer == 1 else layers[layer - 2][2]
        _affine_backward(g, h_in, delta, grads, f"W{layer}", f"b{layer}" if spec.bias else None,
                         (widths[layer - 1], widths[layer]), n)
        if layer == 1:
            break
        wt = g.add("transpose", (params[f"W{layer}"],), (widths[layer], widths[layer - 1]), "backward")
        back = g.add("matmul", (delta, wt), (n, widths[layer - 1]), "backward")
        _, z, out = layers[layer - 2]
        fg = _fn_grad(g, f, z, out, (n, widths[layer - 1]))
        delta = g.add("mul", (back, fg), (n, widths[layer - 1]), "backward")
    return grads


class _ExpressionBuilder:
    """Forward and reverse-mode nodes of an expression model (element-wise over N rows)."""

    def __init__(self, g: Graph, spec: ModelSpec, n: int, d: int, x: int, params: Mapping[str, int]) -> None:
        assert spec.expression is not None
        self.g = g
        self.n = n
        self.parsed = parse_expression(spec.expression, tuple(spec.parameters), d)
        self.memo: dict[sp.Basic, int] = {}
        for j, s in enumerate(self.parsed.inputs):
            if s in self.parsed.expr.free_symbols:
                self.memo[s] = g.add("column", (x,), (n, 1), index=j)
        for s in self.parsed.parameters:
            self.memo[s] = params[s.name]
        self.params = set(params.values())

    def shape_of(self, nid: int) -> tuple[int, ...]:
        return self.g.nodes[nid].shape

    def joint(self, *ids: int) -> tuple[int, ...]:
        return (self.n, 1) if any(self.shape_of(i) != () for i in ids) else ()

    def const(self, value: sp.Basic | int, role: str = "forward") -> int:
        r = sp.Rational(value)
        return self.g.add("const", (), (), role, value=Fraction(int(r.p), int(r.q)), held=False)

    def build(self, e: sp.Basic) -> int:
        if e in self.memo:
            return self.memo[e]
        nid = self._build(e)
        self.memo[e] = nid
        return nid

    def term(self, t: sp.Basic) -> int:
        """The node of a sum's term ``t``: a sum itself only where the text brackets it (the parse merges the rest,
        :func:`harness.models.symbolic.parse_expression`), so its node is marked grouped (:func:`harness.models.graph.grouped`)."""
        nid = self.build(t)
        if isinstance(t, sp.Add) and self.g.nodes[nid].op in ("add", "sub"):
            self.g.mark_grouped(nid)
        return nid

    def _build(self, e: sp.Basic) -> int:
        g = self.g
        if e.is_Rational:
            return self.const(e)
        if isinstance(e, sp.Add):
            first, rest = sum_chain(e)
            acc = self.term(first)
            for op, t in rest:
                b = self.term(t)
                acc = g.add(op, (acc, b), self.joint(acc, b))
            return acc
        if isinstance(e, sp.Mul):
            num_e, den_e = product_chain(e)
            num = [self.build(f) for f in num_e]
            den = [self.build(f) for f in den_e]
            acc = num[0] if num else self.const(1)
            for i, b in enumerate(num[1:], 2):
                # the chain's last product declares its factors: an implementation may multiply them in any order
                chain: dict[str, object] = {"chain": tuple(num)} if i == len(num) and 3 <= len(num) <= CHAIN_LIMIT else {}
                acc = g.add("mul", (acc, b), self.joint(acc, b), "forward", **chain)
            if den:
                dd = den[0]
                for b in den[1:]:
                    dd = g.add("mul", (dd, b), self.joint(dd, b))
                acc = g.add("div", (acc, dd), self.joint(acc, dd))
            return acc
        if isinstance(e, sp.Pow):
            form, operand, n = power_form(e)
            if form == "one":  # (torch's pow(x, 0) and its backward: 1, derivative 0)
                return self.const(1)
            one = self.const(1) if form == "reciprocal" else None  # (the 1 first: the plan's node order as before)
            a = self.build(operand)
            if form == "base":  # (the unevaluated parse keeps x**1 as written)
                return a
            if one is not None:
                return g.add("div", (one, a), self.shape_of(a))
            if form == "sqrt":
                return _fn(g, element_function("sqrt"), a, self.shape_of(a))
            if form == "square":
                return g.add("square", (a,), self.shape_of(a))
            return g.add("pow", (a,), self.shape_of(a), exponent=n)
        if isinstance(e, sp.Function):
            a = self.build(e.args[0])
            return _fn(g, element_function(function_name(e)), a, self.shape_of(a))
        raise ValueError(f"expression node {e} ({type(e).__name__}) is not supported")

    def backward(self, root: int, seed: int) -> dict[int, int]:
        """Reverse mode from ``root`` with adjoint ``seed``: ``{param node: gradient node}``."""
        g = self.g
        needs: set[int] = set(self.params)
        for node in g.nodes[: root + 1]:
            if node.args and any(a in needs for a in node.args):
                needs.add(node.id)
        adj: dict[int, int] = {}

        def give(target: int, contrib: int) -> None:
            if target not in needs:
                return
            if self.shape_of(target) == () and self.shape_of(contrib) != ():
                contrib = g.add("sum", (contrib,), (), "backward", axis=None)
            adj[target] = contrib if target not in adj else g.add("add", (adj[target], contrib), self.shape_of(target), "backward")

        give(root, seed)  # the prediction may be a parameter itself (``"a"``): summed over the rows

        def bmul(a: int, b: int) -> int:
            return g.add("mul", (a, b), self.joint(a, b), "backward")

        for vid in range(root, -1, -1):
            if vid not in adj or not g.nodes[vid].args:
                continue
            node = g.nodes[vid]
            gv = adj[vid]
            a = node.args
            if node.op == "add":
                give(a[0], gv)
                give(a[1], gv)
            elif node.op == "sub":
                give(a[0], gv)
                if a[1] in needs:
                    give(a[1], bmul(self.const(-1, "backward"), gv))
            elif node.op == "mul":
                if a[0] in needs:
                    give(a[0], bmul(gv, a[1]))
                if a[1] in needs:
                    give(a[1], bmul(gv, a[0]))
            elif node.op == "div":
                if a[0] in needs:
                    give(a[0], g.add("div", (gv, a[1]), self.joint(gv, a[1]), "backward"))
                if a[1] in needs:
                    q = g.add("div", (bmul(gv, vid), a[1]), self.joint(gv, vid, a[1]), "backward")
                    give(a[1], bmul(self.const(-1, "backward"), q))
            elif node.op in ("square", "pow"):
                p = 2 if node.op == "square" else int(node.attrs["exponent"])
                local = sp.diff(sp.Symbol("z") ** p, sp.Symbol("z"))  # p z**(p-1), from SymPy
                coeff, rest = local.as_coeff_Mul()
                e1 = int(rest.as_base_exp()[1]) if rest != 1 else 0
                power = a[0] if e1 == 1 else g.add("pow" if e1 > 2 else "square", (a[0],), self.shape_of(a[0]), "backward",
                                                   **({"exponent": e1} if e1 > 2 else {}))
                k = self.const(sp.Rational(coeff), "backward")
                local_grad = bmul(k, power)
                # g * (coeff * power), which an implementation may group (g * power) * coeff or (g * coeff) * power
                give(a[0], g.add("mul", (gv, local_grad), self.joint(gv, local_grad), "backward", chain=(gv, k, power)))
            elif node.op == "fn":
                f = element_function(str(node.attrs["fn"]))
                give(a[0], bmul(gv, _fn_grad(g, f, a[0], vid, self.shape_of(vid))))
            elif node.op == "column":
                pass
            else:  # pragma: no cover - the builder creates only the operations above
                raise AssertionError(f"no backward rule for {node.op}")
        return {p: adj[p] for p in self.params if p in adj}


@functools.lru_cache(maxsize=256)
def build_plan(spec: ModelSpec, n: int, d: int, k: int, reduction: str, lr: Fraction | str | float) -> Graph:
    """The plan of one SGD step of ``spec`` for N rows, D inputs, K outputs (module docstring).

    Cached per arguments: the returned graph is shared, callers must not modify it.

    Args:
        spec: the model (checked with :meth:`ModelSpec.check`).
        n, d, k: N (rows of X), D (columns of X), K (columns of y).
        reduction: ``"sum"`` or ``"mean"``.
        lr: the learning rate as written (exact: a Fraction, a decimal string or a float); the
            ``const`` node holds ``Fraction(lr)`` with ``held=True`` (the truth rounds it to the dtype).

    Returns:
        the graph; inputs named ``X`` (N, D), ``y`` (N, K) and the parameters by name
        (:meth:`ModelSpec.parameter_shapes`); ``outputs`` in :meth:`ModelSpec.quantities` order.

    Raises:
        ValueError: for an inconsistent spec, a reduction other than sum/mean, non-positive sizes
            or an expression that does not parse (:func:`harness.models.symbolic.parse_expression`).
    """
    spec.check()
    if min(n, d, k) < 1:
        raise ValueError(f"shape: N, D, K must be >= 1, got N={n}, D={d}, K={k}")
    loss_scale(reduction, n, k)
    lr_exact = Fraction(lr)
    shapes = spec.parameter_shapes(d, k)
    g = Graph()
    x = g.add("input", (), (n, d), name="X")
    y = g.add("input", (), (n, k), name="y")
    params = {p: g.add("param", (), s, name=p) for p, s in shapes.items()}
    grads: dict[str, int]
    if spec.kind == "mlp":
        pred, layers = _mlp(g, spec, n, d, k, x, params)
        loss, seed = _loss_and_seed(g, pred, y, n, k, reduction)
        grads = _mlp_backward(g, spec, n, d, k, x, params, layers, seed)
    elif spec.kind in ("linear", "polynomial"):
        degree = spec.polynomial if spec.kind == "polynomial" and spec.polynomial else 1
        phi = x
        if degree > 1:
            powers = [x] + [g.add("square", (x,), (n, d)) if p == 2 else g.add("pow", (x,), (n, d), exponent=p)
                            for p in range(2, degree + 1)]
            phi = g.add("concat", tuple(powers), (n, degree * d), axis=1)
        pred = g.add("matmul", (phi, params["W"]), (n, k))
        if spec.bias:
            pred = g.add("add", (pred, params["b"]), (n, k))
        loss, seed = _loss_and_seed(g, pred, y, n, k, reduction)
        grads = {}
        _affine_backward(g, phi, seed, grads, "W", "b" if spec.bias else None, (degree * d, k), n)
    else:  # expression
        builder = _ExpressionBuilder(g, spec, n, d, x, params)
        root = builder.build(builder.parsed.expr)
        loss, seed = _loss_and_seed(g, root, y, n, k, reduction)
        by_node = builder.backward(root, seed)
        grads = {}
        for p, pid in params.items():
            grads[p] = by_node[pid] if pid in by_node else g.add("const", (), (), "backward", value=Fraction(0), held=False)
    lr_node = g.add("const", (), (), "update", value=lr_exact, held=True, name="lr")
    updated = {}
    for p, pid in params.items():
        step = g.add("mul", (lr_node, grads[p]), shapes[p], "update")
        updated[p] = g.add("sub", (pid, step), shapes[p], "update")
    g.outputs["loss"] = loss
    for p in params:
        g.outputs[f"grad_{p}"] = grads[p]
    for p in params:
        g.outputs[p] = updated[p]
    assert tuple(g.outputs) == spec.quantities(d, k)
    return g


def _sympy_prediction(spec: ModelSpec, xrow: list[sp.Expr], params: Mapping[str, sp.Matrix | sp.Symbol], k: int) -> list[sp.Expr]:
    """The prediction of one row, built directly from the spec with SymPy (not from the plan)."""
    if spec.kind == "expression":
        assert spec.expression is not None
        parsed = parse_expression(spec.expression, tuple(spec.parameters), len(xrow))
        subs: dict[sp.Basic, sp.Basic] = dict(zip(parsed.inputs, xrow, strict=True))
        subs.update({s: params[s.name] for s in parsed.parameters})
        return [parsed.expr.xreplace(subs)]
    if spec.kind == "mlp":
        act = activation(spec).expr
        from .symbolic import Z

        h = sp.Matrix([xrow])
        layers = len(spec.hidden) + 1
        for layer in range(1, layers + 1):
            z = h * params[f"W{layer}"]
            if spec.bias:
                z = z + params[f"b{layer}"]
            h = z if layer == layers else z.applyfunc(lambda e: act.xreplace({Z: e}))
        return list(h)
    degree = spec.polynomial if spec.kind == "polynomial" and spec.polynomial else 1
    phi = sp.Matrix([[xj**p for p in range(1, degree + 1) for xj in xrow]])
    out = phi * params["W"]
    if spec.bias:
        out = out + params["b"]
    return list(out)


def cross_check(spec: ModelSpec, n: int, d: int, k: int, reduction: str, values: Mapping[str, F64],
                lr: Fraction | str | float = Fraction(1, 8), fmt_name: str = "float64") -> list[str]:
    """Check the plan against SymPy: the whole scalar loss of a small case, built with one SymPy
    symbol per parameter element directly from the spec, differentiated by ``sympy.diff`` with
    respect to every parameter element, evaluated at ``values`` and compared with the truth of
    the plan (:func:`harness.models.oracle.model_truth`): loss, every gradient element and every
    updated parameter.

    Exact truths must agree exactly with SymPy's exact rationals (``hi + lo`` is the double-double
    of the exact value, so SymPy's rational must round to the same ``hi`` and ``lo``); balls must
    contain SymPy's value to within ``2**-100`` relative (SymPy evaluates to 60 digits, the
    double-double holds about 32). At a ReLU kink SymPy's ``diff`` of the ``Piecewise`` takes the
    branch its conditions give (PyTorch's convention): elements flagged ``kink`` are compared only
    when the spec declares that convention (``relu_grad_at_zero = 0``).

    Args:
        spec, n, d, k, reduction: the model and shape (keep them small: SymPy expands per element).
        values: float64 arrays ``X``, ``y`` and every parameter, values of ``fmt_name``.
        lr: the learning rate as written.
        fmt_name: the dtype (rounds the held learning rate).

    Returns:
        one message per disagreeing element (empty when every element agrees).
    """
    from ..floats import get_format, round_fraction
    from .oracle import model_truth

    fmt = get_format(fmt_name)
    graph = build_plan(spec, n, d, k, reduction, lr)
    truth = model_truth(graph, values, fmt)
    shapes = spec.parameter_shapes(d, k)
    psyms: dict[str, sp.Matrix | sp.Symbol] = {}
    flat: dict[str, list[sp.Symbol]] = {}
    for p, s in shapes.items():
        if s == ():
            sym = sp.Symbol(p, real=True)
            psyms[p], flat[p] = sym, [sym]
        else:
            rows, cols = (s[0], s[1]) if len(s) == 2 else (1, s[0])
            m = sp.Matrix(rows, cols, lambda i, j, p=p: sp.Symbol(f"{p}_{i}_{j}", real=True))
            psyms[p], flat[p] = m, list(m)

    def exact(x: float) -> sp.Rational:
        a, b = float(x).as_integer_ratio()
        return sp.Rational(a, b)

    X = np.asarray(values["X"], dtype=np.float64)
    Y = np.asarray(values["y"], dtype=np.float64)
    c = loss_scale(reduction, n, k)
    total = sp.Integer(0)
    for i in range(n):
        pred = _sympy_prediction(spec, [exact(v) for v in X[i]], psyms, k)
        for j in range(k):
            total += (pred[j] - exact(Y[i, j])) ** 2
    loss = sp.Rational(c.numerator, c.denominator) * total
    at: dict[sp.Basic, sp.Basic] = {}
    for p in shapes:
        arr = np.asarray(values[p], dtype=np.float64).reshape(-1)
        at.update({sym: exact(v) for sym, v in zip(flat[p], arr, strict=True)})
    lr_f = round_fraction(Fraction(lr), fmt)
    lr_sym = sp.Rational(Fraction(lr_f).numerator, Fraction(lr_f).denominator)
    messages: list[str] = []

    def compare(q: str, idx: int, value: sp.Expr) -> None:
        hi = float(truth.hi[q].reshape(-1)[idx])
        lo = float(truth.lo[q].reshape(-1)[idx])
        rad = float(truth.radius[q].reshape(-1)[idx])
        if truth.kink[q].reshape(-1)[idx] and spec.relu_grad_at_zero != 0:
            return
        if isinstance(value, sp.Rational) and rad == 0:  # an exact truth of an exact value: identical
            from .oracle import hi_lo_of_ratio

            want = hi_lo_of_ratio(int(value.p), int(value.q))
            if want != (hi, lo):
                messages.append(f"{q}[{idx}]: SymPy {value} = {want}, plan truth {(hi, lo)}")
            return
        num = sp.N(value, 60)
        diff = abs(num - (sp.Rational(Fraction(hi)) + sp.Rational(Fraction(lo))))
        tol = sp.Rational(Fraction(rad)) + abs(num) * sp.Rational(1, 2**100) + sp.Rational(1, 2**1000)
        if not diff <= tol:
            messages.append(f"{q}[{idx}]: SymPy {num} differs from the plan truth {hi!r} + {lo!r} by {sp.N(diff, 5)} > {sp.N(tol, 5)}")

    compare("loss", 0, loss.xreplace(at))
    for p in shapes:
        for idx, sym in enumerate(flat[p]):
            grad = sp.diff(loss, sym).xreplace(at)
            compare(f"grad_{p}", idx, grad)
            compare(p, idx, at[sym] - lr_sym * grad)
    return messages
