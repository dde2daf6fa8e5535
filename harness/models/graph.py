"""The evaluation plan of a model's step: a graph of array operations, built once per model and shape.

:func:`harness.models.plan.build_plan` turns a :class:`harness.models.spec.ModelSpec` (through the
SymPy derivation of :mod:`harness.models.symbolic`) into a :class:`Graph`: the forward pass, the
squared-error loss, the reverse-mode backward pass (local derivatives from SymPy) and the SGD
update. The same graph is then *evaluated* in several arithmetics, each walking the nodes in order
(every node's arguments come before it):

- exactly (:mod:`harness.models.oracle`: rationals, or arbitrary-precision balls for
  transcendental functions) -- the truth;
- in float64 (:func:`evaluate_float64`) -- magnitudes for the bounds, and a plain reference;
- in the error domain (:mod:`harness.models.bounds`): each operation's rounding (``u`` per basic
  operation, ``gamma_n`` per reduction of n terms, the documented ULPs of each elementary function)
  propagated through the exact local derivatives -- first-order forward error analysis.

Operations (``Node.op``) and their meaning; shapes are NumPy shapes, broadcasting as NumPy:

============  =========================================================================
``input``     a case input, ``attrs["name"]`` is ``"X"`` (N, D) or ``"y"`` (N, K): floats of the dtype
``param``     a parameter, ``attrs["name"]`` (``"W1"``, ``"b1"``, ...): floats of the dtype
``const``     a scalar ``attrs["value"]`` (a ``Fraction``); ``attrs["held"]``: True when the
              implementation holds the dtype-rounded value and the truth uses that (the learning
              rate, as on the linear path); False when the truth uses the exact value and the
              bounds count the constant's rounding to the dtype (leaky ReLU's slope); ``attrs["factors"]``
              (optional): Fractions whose product is the value, which an implementation may apply
              in any association (the seed's 2, ``1/N`` and ``1/K``: :func:`harness.bounds.chain_underflow`)
``matmul``    ``a @ b``, (n, m) @ (m, p): a reduction of m products per element
``add``       ``a + b`` (broadcasting: the bias add); ``attrs["grouped"]``: a sum the expression's text
              brackets (:func:`grouped`)
``sub``       ``a - b`` (``attrs["grouped"]`` as for ``add``)
``mul``       ``a * b`` element-wise (broadcasting: a scalar times an array); ``attrs["chain"]`` (optional, on the
              last product of a chain): the ids of the chain's factors, which an implementation may multiply in
              any association (an expression's product, a power's derivative ``g * (p * a**(p-1))``:
              :func:`harness.bounds.chain_underflow`)
``div``       ``a / b`` element-wise
``square``    ``a * a``
``pow``       ``a ** attrs["exponent"]`` (an integer >= 2), evaluated as repeated products
``fn``        ``f(a)`` element-wise, ``attrs["fn"]`` names it (``"tanh"``, ``"sigmoid"``,
              ``"softplus"``, ``"gelu"``, ``"relu"``, ``"leaky_relu"``, ``"exp"``, ``"log"``,
              ``"sin"``, ``"cos"``, ``"erf"``, ``"sqrt"``, ...); ``attrs["expr"]`` is its SymPy
              expression in the symbol ``z`` (``attrs["slope"]`` for leaky ReLU's slope)
``fn_grad``   ``f'(a)`` element-wise, the SymPy derivative of the ``fn`` node ``attrs["of"]``
              (``attrs["expr"]`` in ``z``); args ``(a,)`` or ``(a, out)`` where ``out`` is the
              forward node, for derivatives written in the forward value (tanh: ``1 - out**2``)
``sum``       sum over ``attrs["axis"]`` (an int, or None for all elements): a reduction
``transpose`` ``a.T`` (2-D)
``concat``    ``np.concatenate(args, axis=attrs["axis"])``
``column``    ``a[:, j:j+1]`` with ``j = attrs["index"]``: one column of a 2-D array, kept 2-D (N, 1)
              (the input ``x_{j+1}`` of an expression model; no arithmetic)
============  =========================================================================

``Graph.outputs`` maps each graded quantity of the step (``"loss"``, ``"grad_W1"``, ...,
``"W1"``, ...) to its node, in :meth:`harness.models.spec.ModelSpec.quantities` order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

#: The operations of a graph (module docstring).
OPS = ("input", "param", "const", "matmul", "add", "sub", "mul", "div", "square", "pow", "fn", "fn_grad",
       "sum", "transpose", "concat", "column")


@dataclass(frozen=True)
class Node:
    """One operation of a :class:`Graph`.

    Attributes:
        id: position in :attr:`Graph.nodes`.
        op: one of :data:`OPS`.
        args: ids of the argument nodes (all smaller than ``id``).
        shape: the result's shape.
        attrs: the operation's constants (module docstring); never arrays.
        role: where the node belongs, for messages and bounds: ``"forward"``, ``"loss"``,
            ``"backward"`` or ``"update"``.
    """

    id: int
    op: str
    args: tuple[int, ...]
    shape: tuple[int, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    role: str = "forward"


@dataclass
class Graph:
    """A model's step as a list of nodes in evaluation order, and the nodes of its graded quantities."""

    nodes: list[Node] = field(default_factory=list)
    outputs: dict[str, int] = field(default_factory=dict)

    def add(self, op: str, args: tuple[int, ...], shape: tuple[int, ...], role: str = "forward", **attrs: Any) -> int:
        """Append a node; its id.

        Raises:
            ValueError: for an unknown operation or an argument that is not an earlier node.
        """
        if op not in OPS:
            raise ValueError(f"unknown operation {op!r}; known: {', '.join(OPS)}")
        nid = len(self.nodes)
        if any(not 0 <= a < nid for a in args):
            raise ValueError(f"node {nid} ({op}): arguments {args} must be earlier nodes")
        self.nodes.append(Node(nid, op, tuple(args), tuple(shape), dict(attrs), role))
        return nid

    def mark_grouped(self, nid: int) -> None:
        """Mark node ``nid`` as a bracketed sum of an expression's text (:func:`grouped`)."""
        node = self.nodes[nid]
        self.nodes[nid] = Node(node.id, node.op, node.args, node.shape, {**node.attrs, "grouped": True}, node.role)


def grouped(node: Node) -> bool:
    """Whether ``node`` is a sum that an expression's text brackets (``a*x1 + (b - c)``: ``attrs["grouped"]``). An
    ``add``/``sub`` chain, a matrix product or a ``sum`` that feeds an ``add``/``sub`` is otherwise one sum with it,
    whose terms an implementation may add in any order (:mod:`harness.models.bounds`); a grouped one is computed
    first, as written, and is one term of the sum it feeds."""
    return bool(node.attrs.get("grouped"))


def loss_residual(graph: Graph) -> tuple[int, Fraction]:
    """``(r, c)``: the node ``r`` of the residual ``R = F - y`` (N, K) and the scale ``c`` (1, or the mean's
    ``1/(N K)``) of the loss ``c * sum(square(R))`` (:func:`harness.models.plan.build_plan`'s loss, read back from
    ``graph.outputs["loss"]``).

    Raises:
        ValueError: for a graph without a ``"loss"`` output, or a loss node of another form.
    """
    if "loss" not in graph.outputs:
        raise ValueError("the graph has no loss output")
    node = graph.nodes[graph.outputs["loss"]]
    c = Fraction(1)
    if node.op == "mul":
        a, b = (graph.nodes[i] for i in node.args)
        const, node = (a, b) if a.op == "const" else (b, a)
        c = Fraction(const.attrs["value"]) if const.op == "const" else Fraction(0)
    sq = graph.nodes[node.args[0]] if node.op == "sum" and len(node.args) == 1 else None
    if sq is None or sq.op != "square" or c <= 0:
        raise ValueError(f"the loss node {graph.outputs['loss']} is not c * sum(square(R))")
    return sq.args[0], c


def evaluate_float64(graph: Graph, inputs: Mapping[str, F64], fn_float64: Mapping[str, Any] | None = None) -> list[F64]:
    """Every node's value in float64 (NumPy), in node order.

    Args:
        graph: the plan.
        inputs: float64 arrays by name: ``X``, ``y`` and every parameter.
        fn_float64: ``{fn name: callable(z) -> array}`` for ``fn`` nodes and ``{"grad:" + fn name: ...}``
            for ``fn_grad`` nodes; missing ones are made from the node's SymPy expression
            (``sympy.lambdify`` with NumPy and SciPy-free ``math.erf``).

    Returns:
        a list of float64 arrays (0-d for scalars), one per node.
    """
    from fractions import Fraction

    fns = dict(fn_float64 or {})
    vals: list[F64] = []
    with np.errstate(all="ignore"):
        for node in graph.nodes:
            a = [vals[i] for i in node.args]
            op = node.op
            if op in ("input", "param"):
                v = np.asarray(inputs[node.attrs["name"]], dtype=np.float64)
            elif op == "const":
                v = np.asarray(float(Fraction(node.attrs["value"])))
            elif op == "matmul":
                v = a[0] @ a[1]
            elif op == "add":
                v = a[0] + a[1]
            elif op == "sub":
                v = a[0] - a[1]
            elif op == "mul":
                v = a[0] * a[1]
            elif op == "div":
                v = a[0] / a[1]
            elif op == "square":
                v = a[0] * a[0]
            elif op == "pow":
                v = a[0] ** int(node.attrs["exponent"])
            elif op in ("fn", "fn_grad"):
                key = ("grad:" if op == "fn_grad" else "") + str(node.attrs["fn"])
                if key not in fns:
                    fns[key] = _lambdify(node)
                v = fns[key](*a)
            elif op in STRUCTURAL:
                v = np.asarray(structural_value(node, a))
            else:  # pragma: no cover - Graph.add refuses unknown operations
                raise ValueError(f"unknown operation {op!r}")
            vals.append(np.asarray(v, dtype=np.float64).reshape(node.shape))
    return vals


#: The operations that only add up or rearrange elements: the same in every arithmetic (:func:`structural_value`).
STRUCTURAL = ("sum", "transpose", "concat", "column")


def structural_value(node: Node, args: list[Any]) -> Any:
    """The value of a :data:`STRUCTURAL` node from its arguments' arrays of any element type (float64,
    exact rationals, balls): the one definition of these operations for every arithmetic.

    Raises:
        ValueError: for a node whose operation is not structural.
    """
    op = node.op
    if op == "sum":
        return np.sum(args[0], axis=node.attrs.get("axis"))
    if op == "transpose":
        return args[0].T
    if op == "concat":
        return np.concatenate(args, axis=node.attrs["axis"])
    if op == "column":
        j = int(node.attrs["index"])
        return args[0][:, j:j + 1]
    raise ValueError(f"{op!r} is not a structural operation ({', '.join(STRUCTURAL)})")


def _lambdify(node: Node) -> Any:
    """A NumPy function of the node's SymPy expression: of ``z``, or of ``(z, out)`` for a
    derivative written in the forward value."""
    import math

    import sympy

    expr = node.attrs["expr"]
    z = sympy.Symbol("z", real=True)
    out = sympy.Symbol("out", real=True)
    erf = np.vectorize(math.erf, otypes=[np.float64])
    modules = [{"erf": erf}, "numpy"]
    if len(node.args) == 2:
        return sympy.lambdify((z, out), expr, modules=modules)
    return sympy.lambdify((z,), expr, modules=modules)
