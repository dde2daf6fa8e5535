"""Model descriptions: the per-sample prediction under the squared-error loss.

A :class:`ModelSpec` names a prediction ``f(x; params)`` for one sample ``x`` (a row of ``X``,
D features) with K outputs; the loss is today's squared-error loss on top,
``L = sum_i sum_j (f(x_i)_j - y_ij)^2`` (reduction ``"sum"``) or that divided by ``N K``
(``"mean"``), and one plain SGD step updates every parameter, ``p' = p - lr dL/dp``.

Kinds (the ``model`` inline table of a case file, :func:`harness.cases.model_spec` validates it):

- ``linear``: ``f(x) = x W + b`` -- today's model; parameters ``W`` (D, K), ``b`` (K,)
  (``bias = false``: ``W`` only). No ``model`` in a case means this model on the linear path.
- ``mlp`` (``hidden = [H1, ..., HL]``, L = 1 or 2, ``activation``): ``h0 = x``,
  ``h_l = act(h_{l-1} W_l + b_l)`` for l = 1..L, ``f(x) = h_L W_{L+1} + b_{L+1}`` (linear
  output layer). Parameters ``W1`` (D, H1), ``b1`` (H1,), ..., ``W{L+1}`` (HL, K), ``b{L+1}`` (K,).
- ``polynomial`` (``polynomial = P``): features ``phi(x) = [x, x^2, ..., x^P]`` (element-wise
  powers, concatenated: P*D features, power-major: column ``(p-1)*D + j`` is ``x_j^p``),
  ``f(x) = phi(x) W + b``; parameters ``W`` (P*D, K), ``b`` (K,).
- ``expression`` (``expression = "..."``, ``parameters = [...]``): a SymPy expression in the
  inputs ``x1 .. xD`` (``x`` is accepted for ``x1`` when D = 1) and scalar parameters, one
  output (K = 1). Each parameter has shape ().

Activations (:data:`ACTIVATIONS`), with PyTorch's definitions: ``relu`` (derivative at 0 is
:attr:`ModelSpec.relu_grad_at_zero`, 0 as in torch), ``leaky_relu`` (``negative_slope``,
torch's default 0.01, held in the dtype computed in), ``tanh``, ``sigmoid``, ``softplus``
(``log(1 + exp(z))``: torch's ``beta = 1``; torch returns ``z`` itself above ``threshold = 20``,
an approximation its error model names), ``gelu`` (``z/2 (1 + erf(z/sqrt 2))``, torch's
``approximate="none"``).

This module holds the description only (no SymPy, no NumPy): the derivation is
:mod:`harness.models.symbolic`, the truth :mod:`harness.models.oracle`, the bounds
:mod:`harness.models.bounds`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction

#: The element-wise activations of the ``mlp`` kind, with PyTorch's definitions (module docstring).
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "softplus", "gelu")
#: The model kinds.
KINDS = ("linear", "mlp", "polynomial", "expression")
#: Activations whose value and derivative are rational functions of a rational argument (exact truth).
RATIONAL_ACTIVATIONS = ("relu", "leaky_relu")
#: Largest number of hidden layers of the ``mlp`` kind.
MAX_HIDDEN_LAYERS = 2
#: Largest polynomial degree.
MAX_POLYNOMIAL_DEGREE = 8

_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ModelSpec:
    """One model: kind, layer widths, activation and its constants.

    Attributes:
        kind: one of :data:`KINDS`.
        hidden: hidden widths in order (``mlp`` only; 1 or 2 layers).
        activation: one of :data:`ACTIVATIONS` (``mlp`` only).
        bias: every affine layer has a bias (``b``, ``b1``, ...).
        polynomial: the degree P (``polynomial`` only).
        expression: the SymPy expression's text (``expression`` only).
        parameters: the expression's scalar parameter names, in order (``expression`` only).
        negative_slope: leaky ReLU's slope for negative arguments (exact, as written; torch's 0.01).
        relu_grad_at_zero: the derivative of ReLU (and leaky ReLU) taken at exactly 0: 0 is
            PyTorch's convention (``torch.where(z > 0, g, 0)``); an implementation that declares
            another convention is graded against its own.
    """

    kind: str = "linear"
    hidden: tuple[int, ...] = ()
    activation: str | None = None
    bias: bool = True
    polynomial: int | None = None
    expression: str | None = None
    parameters: tuple[str, ...] = ()
    negative_slope: Fraction = field(default=Fraction(1, 100))
    relu_grad_at_zero: Fraction = field(default=Fraction(0))

    def parameter_shapes(self, d: int, k: int) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the parameters, in order, for D inputs and K outputs.

        Raises:
            ValueError: for an ``expression`` model with K != 1.
        """
        if self.kind == "expression":
            if k != 1:
                raise ValueError(f"an expression model has one output (K = 1), got K = {k}")
            return {p: () for p in self.parameters}
        if self.kind == "mlp":
            widths = (d, *self.hidden, k)
            out: dict[str, tuple[int, ...]] = {}
            for layer in range(1, len(widths)):
                out[f"W{layer}"] = (widths[layer - 1], widths[layer])
                if self.bias:
                    out[f"b{layer}"] = (widths[layer],)
            return out
        rows = d * (self.polynomial or 1) if self.kind == "polynomial" else d
        return {"W": (rows, k), "b": (k,)} if self.bias else {"W": (rows, k)}

    def parameter_names(self, d: int, k: int) -> tuple[str, ...]:
        """The parameter names in order (W before b, layer by layer)."""
        return tuple(self.parameter_shapes(d, k))

    def quantities(self, d: int, k: int) -> tuple[str, ...]:
        """The graded quantities of one step, in record order: ``loss``, ``grad_<p>`` for every
        parameter, then every updated parameter ``<p>``."""
        names = self.parameter_names(d, k)
        return ("loss", *(f"grad_{p}" for p in names), *names)

    def describe(self) -> str:
        """One line: ``"mlp hidden=[8] tanh"``, ``"polynomial degree 3"``, ``"linear"``, ..."""
        if self.kind == "mlp":
            extra = "" if self.activation != "leaky_relu" else f" slope {self.negative_slope}"
            return f"mlp hidden={list(self.hidden)} {self.activation}{extra}{'' if self.bias else ' no bias'}"
        if self.kind == "polynomial":
            return f"polynomial degree {self.polynomial}{'' if self.bias else ' no bias'}"
        if self.kind == "expression":
            return f"expression {self.expression} in {', '.join(self.parameters)}"
        return "linear" if self.bias else "linear no bias"

    def as_table(self) -> dict[str, object]:
        """The ``model`` inline table that describes this model (inverse of the case-file parser)."""
        out: dict[str, object] = {}
        if self.kind == "mlp":
            out["hidden"] = list(self.hidden)
            out["activation"] = self.activation
            if self.activation == "leaky_relu" and self.negative_slope != Fraction(1, 100):
                out["negative_slope"] = str(self.negative_slope)
        elif self.kind == "polynomial":
            out["polynomial"] = self.polynomial
        elif self.kind == "expression":
            out["expression"] = self.expression
            out["parameters"] = list(self.parameters)
        else:
            out["hidden"] = []
        if not self.bias:
            out["bias"] = False
        if self.relu_grad_at_zero != 0:
            out["relu_grad_at_zero"] = str(self.relu_grad_at_zero)
        return out

    def check(self) -> None:
        """Raise ValueError naming the key when the description is inconsistent."""
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {self.kind!r}")
        if self.kind == "mlp":
            if not 1 <= len(self.hidden) <= MAX_HIDDEN_LAYERS:
                raise ValueError(f"hidden: 1 to {MAX_HIDDEN_LAYERS} hidden widths, got {list(self.hidden)}")
            if any(h < 1 for h in self.hidden):
                raise ValueError(f"hidden: widths must be >= 1, got {list(self.hidden)}")
            if self.activation not in ACTIVATIONS:
                raise ValueError(f"activation: expected one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        elif self.activation is not None:
            raise ValueError("activation: only a model with hidden layers has an activation")
        if self.kind == "polynomial" and not (isinstance(self.polynomial, int) and 1 <= self.polynomial <= MAX_POLYNOMIAL_DEGREE):
            raise ValueError(f"polynomial: a degree from 1 to {MAX_POLYNOMIAL_DEGREE}, got {self.polynomial!r}")
        if self.kind == "expression":
            if not self.expression:
                raise ValueError("expression: an expression is required")
            if not self.parameters:
                raise ValueError("parameters: name at least one parameter of the expression")
            bad = [p for p in self.parameters if not _IDENT.match(p) or re.fullmatch(r"x\d*", p)]
            if bad:
                raise ValueError(f"parameters: {bad[0]!r} is not a parameter name (letters, digits, _; x, x1, ... are the inputs)")
            if len(set(self.parameters)) != len(self.parameters):
                raise ValueError(f"parameters: names repeat in {list(self.parameters)}")
        if self.negative_slope < 0:
            raise ValueError(f"negative_slope: must be >= 0, got {self.negative_slope}")
        if not 0 <= self.relu_grad_at_zero <= 1:
            raise ValueError(f"relu_grad_at_zero: must be in [0, 1], got {self.relu_grad_at_zero}")


#: Today's model, as a description.
LINEAR = ModelSpec()


def kink_derivative(activation: str, negative_slope: Fraction, relu_grad_at_zero: Fraction) -> Fraction:
    """The derivative taken at exactly 0 by ``relu`` / ``leaky_relu`` (the one definition of the
    convention): ``g0`` for ReLU, ``s + (1 - s) g0`` for leaky ReLU (``g0 = relu_grad_at_zero``,
    ``s = negative_slope``; PyTorch's: 0 and ``s``, from ``g0 = 0``)."""
    g0 = Fraction(relu_grad_at_zero)
    if activation == "relu":
        return g0
    s = Fraction(negative_slope)
    return s + (1 - s) * g0


def model_rule_mismatch(patterns: tuple[object, ...], spec: ModelSpec | None) -> str | None:
    """Why an implementation declaring ``patterns`` does not run a case of model ``spec`` (None: it runs it).

    The one rule deciding which implementation runs which case's model. ``patterns`` is
    :attr:`harness.implementations.registry.Implementation.models`: empty for an implementation of
    the linear path only (today's contract: ``fn(X, y, W, b, ...)``), which runs the cases without
    ``model``; otherwise the implementation takes the model contract
    (:class:`harness.models.step.ModelStepResult`) and runs a case with a ``model`` when one
    pattern matches it: ``"any"``, a kind name (``"mlp"``), or a mapping whose every key equals the
    same key of :meth:`ModelSpec.as_table` (``{"activation": "tanh"}``; ``kind`` may be given too).
    """
    if not patterns:
        return None if spec is None else f"implements the linear path only, not the model {spec.describe()}"
    if spec is None:
        return "implements models only (the case has no model)"
    table = {**spec.as_table(), "kind": spec.kind}
    for pat in patterns:
        if pat == "any" or pat == spec.kind:
            return None
        if isinstance(pat, dict) and all(table.get(k) == v for k, v in pat.items()):
            return None
    return f"does not implement the model {spec.describe()} (it declares {list(patterns)})"
