"""Cases: the inputs of one training-step check, and loading them from TOML.

A case is linear regression ``prediction = X W + 1 b^T`` with squared-error loss
and ``steps`` SGD steps of learning rate ``lr``:

- ``X``: (N, D) inputs, ``y``: (N, K) targets, ``W``: (D, K) weights, ``b``: (K,) bias.
- ``reduction``: ``"sum"`` (``L = sum (XW + 1b^T - y)^2``) or ``"mean"`` (the same
  divided by ``N*K``).

Values are kept twice: *as written* (exact rationals parsed from the decimal text
of the case file, so ``0.1`` is exactly 1/10) and as float64 arrays (what Python
floats hold; an implementation in another dtype sees these rounded once more,
exactly as ``torch.tensor(values, dtype=...)`` does).

A case may instead name another model under the same loss (``model``, validated once by
:func:`model_spec`; :mod:`harness.models.spec` defines the models): ``values`` then holds ``X``,
``y`` and the model's parameters by name (``params``, checked by :func:`model_parameters`), and
``[[generate]]`` tables with a model draw them with :mod:`harness.models.generate`.

Case files are TOML: ``[[case]]`` tables (inline values or a CSV file) and
``[[generate]]`` tables (expanded by :mod:`harness.generate`). See
``cases/README.md`` for every key.
"""

from __future__ import annotations

import csv
import importlib
import io
import itertools
import math
import os
import re
import stat
import tomllib
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from .errors import CaseFileError, LimitError, hidden_char, quote
from .floats import DTYPES, FloatFormat, inexact_in_float64, round_to_format
from .fpenv import in_ieee_default
from .generate import generate_table
from .limits import MAX_POLYNOMIAL_DEGREE, Limits, check_size, elements, exact_number
from .models.generate import MODEL_REGIMES, model_values, regime_model, regime_problem
from .models.spec import ModelSpec
from .optim.config import OPTIMIZER_ARGS, RULES, OptimizerConfig

REDUCTIONS = ("sum", "mean")
#: Case selections, smallest first (``--tier``, ``--harness-tier``; ``check --all`` is ``full``):
#:
#: - ``quick`` (the default of ``check``, ``cases``, ``selftest``, the pytest plugin and
#:   :func:`harness.api.default_cases`): every ``[[case]]`` table (the seed, the NIST StRD sets,
#:   the semantics cases) and, of each default-tier ``[[generate]]`` table, one case per
#:   combination of regime x reduction x steps (:func:`quick_pick`);
#: - ``full``: every case of every default-tier table (what CI and ``tests/test_sweep.py`` run);
#: - ``large``: also the ``tier = "large"`` tables (N up to 100,000).
#:
#: ``"default"``, the name ``full`` had before, is accepted as a synonym (:func:`tier_name`).
TIERS = ("quick", "full", "large")
DEFAULT_TIER = "quick"
INPUT_NAMES = ("X", "y", "W", "b")
DEFAULT_DTYPES = ("float32", "float64")

CASE_KEYS = {
    "id", "X", "y", "W", "b", "lr", "steps", "reduction", "dtypes", "tags", "description",
    "source", "data", "x_columns", "y_columns", "polynomial_degree", "optimizer", "model", "params",
}
#: Keys of the ``model`` inline table (:func:`model_spec`).
MODEL_KEYS = ("hidden", "activation", "polynomial", "expression", "parameters", "bias", "negative_slope",
              "relu_grad_at_zero")
#: Longest ``model.expression`` text accepted (characters).
MAX_EXPRESSION_CHARS = 2000
#: The message for ``params`` in a case without a model.
NO_MODEL_PARAMS = "params gives the parameters of a model, and this case has no model: add model = { ... }, or give W and b"
#: Keys a ``[[generate]]`` table with a ``model`` adds to those of :mod:`harness.generate`.
MODEL_GENERATE_KEYS = ("model", "exact_inputs")

Written = npt.NDArray[Any]  # object array of Fraction (or float nan/inf for non-finite input)


@dataclass(frozen=True, eq=False)
class Case:
    """One check: inputs, learning rate, number of steps and reduction.

    Attributes:
        id: stable, readable identifier (used as pytest id and report row).
        values: float64 arrays ``X`` (N, D), ``y`` (N, K), ``W`` (D, K), ``b`` (K,).
        written: the same as written in the case file, object arrays of
            ``Fraction`` (NaN/inf kept as float); ``None`` when the float64 values
            *are* the written values (generated cases).
        lr: learning rate as written (exact rational).
        steps: number of SGD steps (>= 1).
        reduction: ``"sum"`` or ``"mean"``.
        dtypes: dtypes the case runs in by default.
        tags: free-form labels (``seed``, ``nist``, ``generated``, ...).
        source: the file the case came from (``"<memory>"`` if built in code).
        optimizer: the update rule (:class:`harness.optim.OptimizerConfig`); None = plain SGD
            ``W' = W - lr dL/dW``.
        model: the model (:class:`harness.models.spec.ModelSpec`); None = today's linear path
            (``values`` holds ``X``, ``y``, ``W``, ``b``). With a model, ``values`` (and ``written``)
            hold ``X``, ``y`` and every parameter by name (:meth:`ModelSpec.parameter_shapes`), and
            the step is plain SGD.
    """

    id: str
    values: Mapping[str, npt.NDArray[np.float64]]
    lr: Fraction
    steps: int = 1
    reduction: str = "sum"
    dtypes: tuple[str, ...] = DEFAULT_DTYPES
    tags: tuple[str, ...] = ()
    source: str = "<memory>"
    description: str = ""
    written: Mapping[str, Written] | None = field(default=None, repr=False)
    optimizer: OptimizerConfig | None = None
    model: ModelSpec | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(N, D, K)``: from ``X`` (N, D) and ``y`` (N, K)."""
        n, d = self.values["X"].shape
        return n, d, self.values["y"].shape[1]

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """The names of the parameters one step updates: ``("W", "b")`` without a model, else the model's."""
        if self.model is None:
            return ("W", "b")
        _, d, k = self.shape
        return self.model.parameter_names(d, k)

    @property
    def finite(self) -> bool:
        """True when every input is finite (else the verdict is ``invalid-input``)."""
        return all(bool(np.isfinite(v).all()) for v in self.values.values())

    def lr_in(self, fmt: FloatFormat) -> float:
        """The learning rate as a float64 rounded to ``fmt`` (what the step multiplies by): :func:`lr_held`."""
        return lr_held(float(self.lr), fmt)

    def written_inputs(self) -> dict[str, Written]:
        """Inputs as written, exact: object arrays of Fraction (float for NaN/inf)."""
        if self.written is not None:
            return dict(self.written)
        return {k: _fractions_of(v) for k, v in self.values.items()}


def lr_held(lr: float, fmt: FloatFormat) -> float:
    """A learning rate ``lr`` (its float64) rounded to ``fmt``: what a step in ``fmt`` multiplies by (inf beyond
    ``fmt``'s range; NumPy's overflow warning is the caller's to silence)."""
    return float(round_to_format(np.array([lr]), fmt)[0])


def validate_settings(
    lr: Any, steps: Any, reduction: Any, dtypes: Iterable[str], err: Callable[[str | None, str], CaseFileError],
) -> tuple[Fraction, tuple[str, ...]]:
    """The one validation of a case's settings, shared by :func:`make_case` and :func:`case_from_arrays`.

    Args:
        err: builds the :class:`CaseFileError` (naming the file and case) for a key and a detail.

    Returns:
        the learning rate as an exact rational, and the dtypes as a tuple.

    Raises:
        CaseFileError: unless ``lr`` is a positive finite number, ``steps`` a positive
            integer, ``reduction`` one of :data:`REDUCTIONS` and every dtype one of
            :data:`harness.floats.DTYPES`.
    """
    lr_exact = _exact_scalar(lr, "lr", err)
    if not isinstance(lr_exact, Fraction) or lr_exact <= 0:
        raise err("lr", f"learning rate must be a positive finite number, got {quote(lr)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise err("steps", f"steps must be a positive integer, got {quote(steps)}")
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise err("reduction", f"reduction must be one of {REDUCTIONS}, got {quote(reduction)}")
    dts = (dtypes,) if isinstance(dtypes, str) else tuple(dtypes)
    if not dts:
        raise err("dtypes", f"no dtype given (an empty list runs nothing); known: {', '.join(DTYPES)}")
    for i, dt in enumerate(dts):
        if not isinstance(dt, str) or dt not in DTYPES:
            raise err("dtypes", f"unknown dtype {quote(dt)}; known: {', '.join(DTYPES)}")
        if dt in dts[:i]:  # (it ran the case twice in that dtype: every record twice, helper-124)
            raise err("dtypes", f"dtype {quote(dt)} given twice")
    return lr_exact, dts


def optimizer_config(raw: Any, err: Callable[[str | None, str], CaseFileError]) -> OptimizerConfig | None:
    """The one validation of a case's ``optimizer`` table (``[[case]]``, ``[[generate]]``, :func:`make_case`).

    Args:
        raw: None (plain SGD), an :class:`OptimizerConfig` (taken as is), or a mapping with
            ``name`` (one of :data:`harness.optim.RULES`) and torch.optim's own argument names
            (:data:`harness.optim.OPTIMIZER_ARGS`; missing ones take torch.optim's defaults).
        err: builds the :class:`CaseFileError` naming the file and case, for a key and a detail.

    Returns:
        the configuration, or None for plain SGD.

    Raises:
        CaseFileError: with key ``optimizer.<argument>`` for an unknown rule or argument, a value of
            the wrong type, a negative momentum, dampening, weight decay or eps, betas outside
            [0, 1), and Nesterov without momentum or with dampening (torch.optim refuses it too).
    """
    if raw is None or isinstance(raw, OptimizerConfig):
        return raw
    if not isinstance(raw, Mapping):
        raise err("optimizer", f"expected an inline table such as {{ name = \"adam\", betas = [0.9, 0.999] }}, got {quote(raw)}")
    name = raw.get("name")
    if not isinstance(name, str) or name not in RULES:
        raise err("optimizer.name", f"expected one of {', '.join(map(repr, RULES))}, got {quote(name)}")
    allowed = OPTIMIZER_ARGS[name]
    unknown = sorted((k for k in raw if k != "name" and k not in allowed), key=str)
    if unknown:
        hint = (" (the form -- for-loop, foreach, fused -- is the implementation's: e.g. torch-optim-adam-fused)"
                if set(unknown) & {"foreach", "fused", "capturable", "differentiable"} else "")
        raise err(f"optimizer.{unknown[0]}", f"unknown argument(s) {quote(unknown)} of {name}; allowed: {sorted(allowed)}{hint}")
    args: dict[str, Any] = {}
    for key, default in allowed.items():
        val = raw.get(key, default)
        if isinstance(default, bool):
            if not isinstance(val, bool):
                raise err(f"optimizer.{key}", f"expected true or false, got {quote(val)}")
            args[key] = val
        elif key == "betas":
            if not isinstance(val, list | tuple) or len(val) != 2:
                raise err("optimizer.betas", f"expected two numbers [beta1, beta2], got {quote(val)}")
            pair = tuple(_exact_scalar(v, "optimizer.betas", err) for v in val)
            if not all(isinstance(v, Fraction) and 0 <= v < 1 for v in pair):
                raise err("optimizer.betas", f"each beta must be in [0, 1), got {quote(val)}")
            args[key] = pair
        else:
            if isinstance(val, bool):
                raise err(f"optimizer.{key}", f"expected a number, got {quote(val)}")
            exact = _exact_scalar(val, f"optimizer.{key}", err)
            if not isinstance(exact, Fraction) or exact < 0:
                raise err(f"optimizer.{key}", f"must be a finite number >= 0, got {quote(val)}")
            args[key] = exact
    if name == "sgd" and args["nesterov"] and (args["momentum"] == 0 or args["dampening"] != 0):
        raise err("optimizer.nesterov", "Nesterov momentum needs momentum > 0 and dampening = 0 (torch.optim.SGD refuses it too)")
    if name == "sgd" and args["dampening"] > 1:
        raise err("optimizer.dampening", f"dampening must be in [0, 1], got {quote(raw.get('dampening'))}")
    return OptimizerConfig(name, args)


def model_spec(raw: Any, err: Callable[[str | None, str], CaseFileError]) -> ModelSpec | None:
    """The one validation of a case's ``model`` table (``[[case]]``, ``[[generate]]``, :func:`make_case`).

    Args:
        raw: None (today's linear path), a :class:`ModelSpec` (checked, then taken as is), or a
            mapping with the keys of :data:`MODEL_KEYS`: ``hidden`` (list of widths; ``[]`` or no
            ``hidden``, ``polynomial`` or ``expression`` is the linear model described explicitly),
            ``activation`` (with ``hidden``), ``polynomial`` (the degree), ``expression`` (SymPy text)
            with ``parameters`` (its scalar names), ``bias`` (true/false), ``negative_slope`` (leaky
            ReLU's, exact as written), ``relu_grad_at_zero`` (ReLU's derivative at 0, exact).
        err: builds the :class:`CaseFileError` naming the file and case, for a key and a detail.

    Returns:
        the model, or None for today's linear path.

    Raises:
        CaseFileError: with key ``model.<key>`` for an unknown key, a value of the wrong type, keys
            that do not go together (``hidden`` with ``polynomial``, ``negative_slope`` without
            ``leaky_relu``, ...), and every inconsistency :meth:`ModelSpec.check` finds (1 or 2
            hidden widths >= 1, a known activation, a degree from 1 to 8, parameter names). The
            expression's text is parsed where D is known (:func:`check_expression`).
    """
    if raw is None:
        return None
    if isinstance(raw, ModelSpec):
        spec = raw
    else:
        spec = _model_from_table(raw, err)
    try:
        spec.check()
    except ValueError as exc:
        key = str(exc).split(":", 1)[0]
        raise err(f"model.{key}" if key in MODEL_KEYS else "model", str(exc)) from None
    if spec.kind == "expression":
        clash = [p for p in spec.parameters if p in ("X", "y")]
        if clash:
            raise err("model.parameters", f"{clash[0]!r} names the data (X, y); choose another parameter name")
    return spec


def _model_from_table(raw: Any, err: Callable[[str | None, str], CaseFileError]) -> ModelSpec:
    if not isinstance(raw, Mapping):
        raise err("model", f"expected an inline table such as {{ hidden = [8], activation = \"tanh\" }}, got {quote(raw)}")
    unknown = sorted((k for k in raw if k not in MODEL_KEYS), key=str)
    if unknown:
        raise err(f"model.{unknown[0]}", f"unknown key(s) {quote(unknown)} of model; allowed: {list(MODEL_KEYS)}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    hidden = raw.get("hidden", [])
    if not isinstance(hidden, list | tuple) or not all(is_int(h) for h in hidden):
        raise err("model.hidden", f"expected a list of hidden widths (integers), e.g. [8] or [8, 4], got {quote(hidden)}")
    activation = raw.get("activation")
    if activation is not None and not isinstance(activation, str):
        raise err("model.activation", f"expected a string such as \"tanh\", got {quote(activation)}")
    polynomial = raw.get("polynomial")
    if polynomial is not None and not is_int(polynomial):
        raise err("model.polynomial", f"expected an integer degree, got {quote(polynomial)}")
    expression = raw.get("expression")
    if expression is not None and (not isinstance(expression, str) or not expression.strip()):
        raise err("model.expression", f"expected the expression's text, e.g. \"a*tanh(w*x1 + c)\", got {quote(expression)}")
    if isinstance(expression, str) and len(expression) > MAX_EXPRESSION_CHARS:
        raise err("model.expression", f"the expression has {len(expression):,} characters, over the limit of {MAX_EXPRESSION_CHARS:,}")
    parameters = raw.get("parameters", [])
    if not isinstance(parameters, list | tuple) or not all(isinstance(p, str) for p in parameters):
        raise err("model.parameters", f"expected a list of parameter names, e.g. [\"a\", \"w\", \"c\"], got {quote(parameters)}")
    bias = raw.get("bias", True)
    if not isinstance(bias, bool):
        raise err("model.bias", f"expected true or false, got {quote(bias)}")
    exact: dict[str, Fraction] = {}
    for key, default in (("negative_slope", Fraction(1, 100)), ("relu_grad_at_zero", Fraction(0))):
        val = raw.get(key, default)
        value = _exact_scalar(val, f"model.{key}", err)
        if not isinstance(value, Fraction):
            raise err(f"model.{key}", f"expected a finite number, got {quote(val)}")
        exact[key] = value
    given = [k for k, present in (("hidden", bool(hidden)), ("polynomial", polynomial is not None),
                                  ("expression", expression is not None)) if present]
    if len(given) > 1:
        raise err(f"model.{given[1]}", f"give one of hidden, polynomial and expression, not {' and '.join(given)}")
    kind = {"hidden": "mlp", "polynomial": "polynomial", "expression": "expression"}[given[0]] if given else "linear"
    if "parameters" in raw and kind != "expression":
        raise err("model.parameters", "only an expression model names its parameters (the others are W1, b1, ... or W, b)")
    if kind == "expression" and "bias" in raw:
        raise err("model.bias", "an expression model has no bias of its own (write it in the expression)")
    if "negative_slope" in raw and activation != "leaky_relu":
        raise err("model.negative_slope", f"only activation = \"leaky_relu\" has a negative slope (the activation is {quote(activation)})")
    if "relu_grad_at_zero" in raw and activation not in ("relu", "leaky_relu"):
        raise err("model.relu_grad_at_zero", f"only relu and leaky_relu have a kink at 0 (the activation is {quote(activation)})")
    return ModelSpec(kind=kind, hidden=tuple(hidden), activation=activation, bias=bias, polynomial=polynomial,
                     expression=expression, parameters=tuple(parameters), negative_slope=exact["negative_slope"],
                     relu_grad_at_zero=exact["relu_grad_at_zero"])


def check_expression(spec: ModelSpec, d: int, err: Callable[[str | None, str], CaseFileError]) -> None:
    """Parse an expression model's text for D inputs with the safe parser of
    :mod:`harness.models.symbolic` (``parse_expression(text, parameters, d)``), where that module is
    present; called by :func:`model_parameters` (D is known there, not in :func:`model_spec`).

    Raises:
        CaseFileError: key ``model.expression`` with the parser's reason (an unknown symbol such as
            ``x3`` with D = 2, a function outside its allow-list, a construct that is not a formula).
    """
    if spec.kind != "expression" or spec.expression is None:
        return
    try:
        symbolic = importlib.import_module("harness.models.symbolic")
    except ImportError:  # the parser is not on this branch: the type checks of model_spec are all
        return
    parse = getattr(symbolic, "parse_expression", None)
    if parse is None:
        return
    try:
        parse(spec.expression, tuple(spec.parameters), d)
    except ValueError as exc:
        raise err("model.expression", f"{exc} (inputs {'x1 (or x)' if d == 1 else f'x1 .. x{d}'} for D = {d})") from None


def model_size(spec: ModelSpec, n: int, d: int, k: int) -> tuple[int, int]:
    """``(numbers, multiply-adds per step)`` of a model case: ``X``, ``y``, every parameter and every
    hidden layer's values (N per width); products of one step's forward pass, backward pass and
    update (3 per weight element and sample). Raises ValueError for an expression model with K != 1."""
    shapes = spec.parameter_shapes(d, k)
    params = sum(math.prod(s) for s in shapes.values())
    numbers = n * d + n * k + params + n * sum(spec.hidden)
    if spec.kind == "expression":
        work = n * len(shapes) * max(len(spec.expression or ""), 1)
    else:
        work = 3 * n * sum(math.prod(s) for s in shapes.values() if len(s) == 2) + n * sum(spec.hidden) + params
    return numbers, work


def check_model_size(limits: Limits, spec: ModelSpec, n: int, d: int, k: int, steps: int,
                     err: Callable[[str, str], CaseFileError]) -> None:
    """Refuse a model case over ``limits`` (call before building any array), naming ``model.hidden``
    when the model has hidden layers (their widths set the size), else ``X``/``steps`` as the linear path.

    Raises:
        LimitError: with the figure, the limit and the option that raises it.
        CaseFileError: key ``model.expression`` for an expression model with K != 1.
    """
    def refuse(key: str, detail: str) -> LimitError:
        base = err(key, detail)
        return LimitError(base.detail, path=base.path, case_id=base.case_id, key=base.key, line=base.line)

    try:
        numbers, work = model_size(spec, n, d, k)
    except ValueError as exc:
        raise err("model.expression", f"{exc} (y has {k} column(s))") from None
    if steps > limits.max_steps:
        raise refuse("steps", f"{steps:,} steps exceed the limit of {limits.max_steps:,}; raise it with --max-steps")
    where = "model.hidden" if spec.hidden else "X"
    if numbers > limits.max_elements:
        raise refuse(where, f"N={n:,}, D={d:,}, K={k:,} with the model {spec.describe()} is {numbers:,} numbers, over the limit "
                            f"of {limits.max_elements:,}; raise it with --max-elements")
    if steps * work > limits.max_oracle_cost:
        raise refuse(where if spec.hidden else "steps",
                     f"N={n:,}, D={d:,}, K={k:,} with the model {spec.describe()} and {steps:,} steps costs the exact oracle about "
                     f"{steps * work:.3g} multiply-adds, over the limit of {limits.max_oracle_cost:.3g}; raise it with --max-oracle-cost")


def model_parameters(spec: ModelSpec, params: Any, W: Any, b: Any, d: int, k: int,
                     err: Callable[[str | None, str], CaseFileError],
                     convert: Callable[[Any, str, Any], npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    """The parameters of a model case by name, each checked against :meth:`ModelSpec.parameter_shapes`.

    ``params`` is the mapping of the case (``{"W1": ..., "b1": ...}``); a model whose parameters are
    ``W`` and ``b`` may take them at top level (``W``, ``b``) instead. ``convert(raw, key, err)``
    makes one array (exact rationals for :func:`make_case`, float64 for :func:`case_from_arrays`).

    Raises:
        CaseFileError: key ``params`` when ``params`` is not a table, ``params.<name>`` for a
            missing or unknown parameter or a wrong shape, ``W``/``b`` when given at top level for a
            model with other parameter names (or given twice), ``model.expression`` for an
            expression model with K != 1 or an expression that does not parse (:func:`check_expression`).
    """
    try:
        shapes = spec.parameter_shapes(d, k)
    except ValueError as exc:
        raise err("model.expression", f"{exc} (y has {k} column(s))") from None
    check_expression(spec, d, err)
    if params is not None and not isinstance(params, Mapping):
        raise err("params", f"expected an inline table of the parameters by name, e.g. {{ W1 = [[0.5]], b1 = [0.0] }}, got {quote(params)}")
    given: dict[Any, tuple[str, Any]] = {name: (f"params.{name}", raw) for name, raw in (params or {}).items()}
    for key, raw in (("W", W), ("b", b)):
        if raw is None:
            continue
        if key not in shapes:
            raise err(key, f"the model {spec.describe()} has the parameters {list(shapes)}: give them in params = {{ ... }}, "
                           f"not {key} at top level")
        if key in given:
            raise err(key, f"{key} is given twice, at top level and in params")
        given[key] = (key, raw)
    unknown = sorted((p for p in given if p not in shapes), key=str)
    if unknown:
        raise err(f"params.{unknown[0]}", f"unknown parameter(s) {quote(unknown)}; the model {spec.describe()} with D={d}, K={k} "
                                          f"has {list(shapes)}")
    out: dict[str, npt.NDArray[Any]] = {}
    for name, shape in shapes.items():
        if name not in given:
            raise err(f"params.{name}", f"missing parameter {name} of shape {shape} (the model {spec.describe()} with D={d}, "
                                        f"K={k} has {list(shapes)})")
        key, raw = given[name]
        arr = convert(raw, key, err)
        if key == "b" and arr.ndim == 0 and shape == (1,):  # as on the linear path: a number is one bias
            arr = arr.reshape(1)
        if arr.shape != shape:
            want = "a number" if shape == () else f"shape {shape}"
            raise err(key, f"{name} must be {want} for the model {spec.describe()} with D={d}, K={k}, got shape {arr.shape}")
        out[name] = arr
    return out


def _model_settings(spec: ModelSpec | None, optimizer: Any, err: Callable[[str | None, str], CaseFileError]) -> None:
    if spec is not None and optimizer is not None:
        raise err("optimizer", f"model cases run plain SGD: remove optimizer, or the model {spec.describe()} "
                               "(an optimizer goes with the linear path only, for now)")


def make_case(
    id: str,
    X: Sequence[Sequence[Any]] | npt.ArrayLike,
    y: Sequence[Sequence[Any]] | npt.ArrayLike,
    W: Sequence[Sequence[Any]] | npt.ArrayLike | None = None,
    b: Sequence[Any] | npt.ArrayLike | None = None,
    *,
    lr: Any,
    steps: int = 1,
    reduction: str = "sum",
    dtypes: Iterable[str] = DEFAULT_DTYPES,
    tags: Iterable[str] = (),
    source: str = "<memory>",
    description: str = "",
    optimizer: Any = None,
    model: Any = None,
    params: Mapping[str, Any] | None = None,
) -> Case:
    """Build and validate a case from Python values.

    Numbers may be int, float, ``Decimal``, ``Fraction`` or decimal strings
    (``"0.1"`` is exactly 1/10 as written). A 1-D ``y`` is taken as one column.
    ``optimizer``: None (plain SGD), an :class:`harness.optim.OptimizerConfig` or the table of a
    case file (``{"name": "adam", "betas": [0.9, 0.999]}``; see :func:`optimizer_config`).
    ``model``: None (today's linear path: ``W`` (D, K) and ``b`` (K,) required), a
    :class:`harness.models.spec.ModelSpec` or the table of a case file (``{"hidden": [8],
    "activation": "tanh"}``; see :func:`model_spec`); with a model, ``params`` gives every
    parameter by name (``{"W1": ..., "b1": ..., "W2": ..., "b2": ...}``; see
    :func:`model_parameters`), and ``W``, ``b`` may stand for the parameters of a model that has
    exactly those (linear, polynomial). K comes from ``y``.

    Raises:
        CaseFileError: naming ``source``, ``id`` and the key, on a wrong shape,
            type or value (``model.<key>``, ``params.<name>`` for a model case; ``optimizer``
            with a model: model cases run plain SGD).
    """
    def err(key: str | None, detail: str) -> CaseFileError:
        return CaseFileError(detail, path=source, case_id=id, key=key)

    spec = model_spec(model, err)
    _model_settings(spec, optimizer, err)
    written: dict[str, Written] = {}
    if spec is None and params is not None:
        raise err("params", NO_MODEL_PARAMS)
    arrays = (("X", X, 2), ("y", y, 2)) + ((("W", W, 2), ("b", b, 1)) if spec is None else ())
    for key, raw, ndim in arrays:
        if raw is None:
            raise err(key, "missing required key")
        arr = _exact_array(raw, key, err)
        if key == "y" and arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        if key == "b" and arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != ndim:
            raise err(key, f"expected a {ndim}-D array, got {arr.ndim}-D (shape {arr.shape})")
        written[key] = arr
    n, d = written["X"].shape
    if n == 0 or d == 0:
        raise err("X", f"X must have at least one row and one column, got shape {written['X'].shape}")
    if written["y"].shape[0] != n:
        raise err("y", f"y has {written['y'].shape[0]} rows but X has {n}")
    k = written["y"].shape[1]
    if k == 0:  # (a linear case too: K = 0 was graded, an "overflow" of the empty W, and the mean's 1/(N K) raised)
        raise err("y", f"y must have at least one column, got shape {written['y'].shape}")
    if spec is not None:
        written.update(model_parameters(spec, params, W, b, d, k, err, _exact_array))
    else:
        if written["W"].shape != (d, k):
            raise err("W", f"W must be (D, K) = ({d}, {k}) for X {written['X'].shape} and y {written['y'].shape}, got {written['W'].shape}")
        if written["b"].shape != (k,):
            raise err("b", f"b must have K = {k} values, got shape {written['b'].shape}")
    lr_exact, dts = validate_settings(lr, steps, reduction, dtypes, err)
    values = {key: _floats_of(arr) for key, arr in written.items()}
    return Case(
        id=id, values=values, written=written, lr=lr_exact, steps=steps, reduction=reduction,
        dtypes=dts, tags=tuple(tags), source=source, description=description,
        optimizer=optimizer_config(optimizer, err), model=spec,
    )


@in_ieee_default  # decimal values become float64 by float arithmetic: with flush-to-zero on, 3e-320 would read as 0
def case_from_arrays(
    id: str,
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    W: npt.ArrayLike | None = None,
    b: npt.ArrayLike | None = None,
    *,
    lr: float | Fraction,
    steps: int = 1,
    reduction: str = "sum",
    dtypes: Iterable[str] = DEFAULT_DTYPES,
    tags: Iterable[str] = (),
    source: str = "<memory>",
    description: str = "",
    optimizer: Any = None,
    model: Any = None,
    params: Mapping[str, npt.ArrayLike] | None = None,
) -> Case:
    """Build a case from float64 arrays whose values are the written values
    (no decimal text: used by the generator and Hypothesis strategies).

    ``model`` and ``params`` as in :func:`make_case` (``W``, ``b`` optional with a model).

    Raises:
        CaseFileError: on inconsistent shapes, and on the learning rate, steps,
            reduction and dtypes exactly as :func:`make_case` (:func:`validate_settings`),
            the model as :func:`model_spec` and its parameters as :func:`model_parameters`.
    """
    def err(key: str | None, detail: str) -> CaseFileError:
        return CaseFileError(detail, path=source, case_id=id, key=key)

    spec = model_spec(model, err)
    _model_settings(spec, optimizer, err)
    vals = {"X": exact_float64_array(X, "X", err), "y": exact_float64_array(y, "y", err)}
    if vals["y"].ndim == 1:
        vals["y"] = vals["y"].reshape(-1, 1)
    n, d = vals["X"].shape if vals["X"].ndim == 2 else (0, 0)
    k = vals["y"].shape[1] if vals["y"].ndim == 2 else 0
    shapes: dict[str, tuple[int, ...]] = {"X": (n, d), "y": (n, k)}
    if spec is None:
        if params is not None:
            raise err("params", NO_MODEL_PARAMS)
        for key, raw in (("W", W), ("b", b)):
            if raw is None:
                raise err(key, "missing required key")
            vals[key] = exact_float64_array(raw, key, err)
        shapes.update({"W": (d, k), "b": (k,)})
    for key, want in shapes.items():
        if vals[key].shape != want or 0 in want:
            raise err(key, f"expected shape {want}, got {vals[key].shape}")
    if spec is not None:
        vals.update(model_parameters(spec, params, W, b, d, k, err, exact_float64_array))
    lr_exact, dts = validate_settings(lr, steps, reduction, dtypes, err)
    return Case(
        id=id, values=vals, lr=lr_exact, steps=steps, reduction=reduction, dtypes=dts,
        tags=tuple(tags), source=source, description=description, written=None,
        optimizer=optimizer_config(optimizer, err), model=spec,
    )


# ---------------------------------------------------------------- parsing values


#: What :func:`exact_float64_array` suggests for values float64 cannot hold.
_AS_WRITTEN = ("give values float64 holds exactly, or build the case with make_case, which reads numbers as written "
               "(Fractions, decimal strings)")


def exact_float64_array(raw: Any, key: str, err: Callable[[str | None, str], CaseFileError]) -> npt.NDArray[np.float64]:
    """``raw`` as a float64 array holding exactly the values given (:func:`case_from_arrays`' reading of an array).

    Converting is refused where it would change the case silently: complex values (NumPy drops the
    imaginary part with a warning only), strings and bytes (NumPy parses them), a masked array with
    a masked element (its hidden data would be read as a value), and values float64 cannot hold
    exactly -- integers above 2**53, long doubles with more bits, objects such as ``Fraction(1, 3)``
    -- compared after converting the float64 values back to the original dtype (as
    :meth:`harness.exact.ScaledInts.from_floats` refuses them for the oracle). Booleans, integers
    and floats that convert exactly are accepted.

    Raises:
        CaseFileError (from ``err``, naming ``key``): with the element and the reason.
    """
    if isinstance(raw, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(raw)
        if mask.any():
            first = [int(i) for i in np.argwhere(mask)[0]]
            raise err(key, f"is a masked array with {int(mask.sum())} masked element(s) (the first at {first}): a masked "
                           "element has no value to check, and converting would read the data under the mask; fill "
                           "or remove the masked elements first (numpy.ma.filled)")
        raw = np.ma.getdata(raw)
    try:
        a = np.asarray(raw)
    except (TypeError, ValueError) as exc:
        raise err(key, f"expected an array of numbers ({exc})") from None
    kind = a.dtype.kind
    if kind in "US":
        raise err(key, f"expected an array of numbers, got text (dtype {a.dtype}): strings are not parsed here; give "
                       "numbers, or build the case with make_case, which reads decimal strings exactly")
    if kind == "c":
        raise err(key, f"expected real numbers, got complex values (dtype {a.dtype}): float64 has no imaginary part, "
                       "and dropping it would change the case")
    if kind in "Mm":
        raise err(key, f"expected an array of numbers, got dtype {a.dtype}")
    if kind == "O":
        for v in a.flat:
            if v is None or isinstance(v, str | bytes | complex | np.complexfloating | np.ma.core.MaskedConstant):
                what = ("a masked element" if isinstance(v, np.ma.core.MaskedConstant)
                        else "None" if v is None else f"{type(v).__name__} {quote(v)}")
                raise err(key, f"expected an array of real numbers, got {what}")
    try:
        x = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        what = f"dtype {a.dtype}" if kind == "V" else str(exc)
        raise err(key, f"expected an array of numbers ({what})") from None
    inexact = inexact_in_float64(a, x)
    if inexact.any():
        at = tuple(int(i) for i in np.argwhere(inexact)[0])
        raise err(key, f"holds {int(inexact.sum())} value(s) of dtype {a.dtype} that float64 cannot hold exactly: "
                       f"converting would round them (element {list(at)}: {quote(a[at])} would become "
                       f"{float(x[at])!r}); {_AS_WRITTEN}")
    return x


def _exact_scalar(raw: Any, key: str, err: Any) -> Fraction | float:
    """Exact value of one number as written; NaN/inf returned as float (see :func:`harness.limits.exact_number`)."""
    return exact_number(raw, key, err)


def _exact_array(raw: Any, key: str, err: Any) -> Written:
    if isinstance(raw, np.ndarray) and raw.dtype != object:
        flat = [_exact_scalar(v, key, err) for v in raw.ravel().tolist()]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(raw.shape)

    def convert(v: Any, depth: int) -> Any:
        if isinstance(v, list | tuple):
            if depth >= 2:
                raise err(key, "nested too deeply: expected at most a list of rows")
            return [convert(e, depth + 1) for e in v]
        return _exact_scalar(v, key, err)

    nested = convert(raw, 0)
    if isinstance(nested, list) and nested and isinstance(nested[0], list):
        lengths = {len(r) if isinstance(r, list) else -1 for r in nested}
        if len(lengths) != 1 or -1 in lengths:
            row_lengths = [len(r) if isinstance(r, list) else "a number" for r in nested]
            raise err(key, f"rows have different lengths: {row_lengths[:10]}{' ...' if len(row_lengths) > 10 else ''}")
        out = np.empty((len(nested), len(nested[0])), dtype=object)
        for i, row in enumerate(nested):
            out[i, :] = row
        return out
    if isinstance(nested, list):
        if any(isinstance(e, list) for e in nested):
            raise err(key, "mixes numbers and lists")
        out = np.empty(len(nested), dtype=object)
        out[:] = nested
        return out
    out = np.empty((), dtype=object)
    out[()] = nested
    return out


def _floats_of(arr: Written) -> npt.NDArray[np.float64]:
    return np.array([float(v) for v in arr.ravel()], dtype=np.float64).reshape(arr.shape)


def _fractions_of(arr: npt.NDArray[np.float64]) -> Written:
    out = np.empty(arr.size, dtype=object)
    out[:] = [Fraction(v) if math.isfinite(v) else v for v in arr.ravel().tolist()]
    return out.reshape(arr.shape)


# ---------------------------------------------------------------- case files

_LINE_RE = re.compile(r"at line (\d+)")
#: ``[[case]]`` keys that only make sense with ``data``.
CSV_KEYS = ("x_columns", "y_columns", "polynomial_degree")


def _read_bounded(path: Path, limit: int, what: str, err: Callable[[str, str], CaseFileError], key: str) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (no device, fifo or folder is ever opened)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError) as exc:
        raise err(key, f"cannot read {what}: {getattr(exc, 'strerror', None) or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, fifo or socket)"
        raise err(key, f"{what} is {kind}")
    if st.st_size > limit:
        base = err(key, f"{what} is {st.st_size:,} bytes, over the limit of {limit:,}; raise it with --max-data-bytes")
        raise LimitError(base.detail, path=base.path, case_id=base.case_id, key=base.key)
    try:
        # opened without blocking and checked again once open: a file replaced by a fifo after the stat above (a case
        # file that changed between listing and reading) blocked the run in open() for ever (helper-131)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with open(fd, "rb", closefd=True) as fh:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, fifo or socket)"
                raise err(key, f"{what} is {kind} (it was replaced while it was read)")
            data = fh.read(limit + 1)
    except OSError as exc:
        raise err(key, f"cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > limit:
        base = err(key, f"{what} is over the limit of {limit:,} bytes; raise it with --max-data-bytes")
        raise LimitError(base.detail, path=base.path, case_id=base.case_id, key=base.key)
    return data


def _decode_utf8(data: bytes, what: str, err: Callable[[str, str], CaseFileError], key: str) -> str:
    """``data`` as UTF-8 (a byte-order mark allowed); the error names the line, never its content."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise err(key, f"{what} line {line} is not UTF-8 (byte offset {exc.start}); save the file as UTF-8") from None


def data_file_hint(path: Path) -> str:
    """The message for a data file given where a case file goes: the ``[[case]]`` table that uses it (one line)."""
    return (f"a {path.suffix.lstrip('.').upper()} file is data, not a case file; write a case file next to it, e.g. "
            f"{path.stem}.toml with the lines: [[case]] / id = \"{path.stem}\" / data = \"{path.name}\" / W = [[0.0]] / b = [0.0] / "
            f"lr = \"0.01\" (W: one row per input column, the columns other than \"y\"), then run --cases "
            f"{path.with_suffix('.toml')} (see cases/README.md, \"Data files\")")


def read_toml(path: Path, *, limits: Limits | None = None) -> dict[str, Any]:
    """Parse a TOML case file, keeping decimal literals exact (as ``Decimal``).

    Raises:
        CaseFileError: with the line number on a syntax error, on a non-UTF-8 byte,
            on nesting too deep to parse, or if the file cannot be read (not a regular
            file, or larger than ``limits.max_data_bytes``).
    """
    lim = limits or Limits()

    def err(key: str | None, detail: str) -> CaseFileError:
        return CaseFileError(detail, path=str(path))

    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        raise CaseFileError(data_file_hint(path), path=str(path))
    data = _read_bounded(path, lim.max_data_bytes, "the case file", err, "")
    try:
        # a byte-order mark (Windows editors write one) is read as the data files' and results files' is; tomllib
        # refused it as "Invalid statement (at line 1, column 1)", which names no cause (helper-131)
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CaseFileError(f"invalid TOML: not UTF-8 (byte offset {exc.start}); TOML files are UTF-8",
                            path=str(path), line=data[: exc.start].count(b"\n") + 1) from None
    try:
        return tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        m = _LINE_RE.search(str(exc))
        line = getattr(exc, "lineno", None) or (int(m.group(1)) if m else None)
        if line is None and "end of document" in str(exc):
            line = text.count("\n") + (0 if text.endswith("\n") else 1)  # the last line
        case_id, key, why = _repeated_key(text, line) if "Cannot overwrite" in str(exc) else (None, None, "")
        raise CaseFileError(f"invalid TOML: {exc}{why}", path=str(path), line=line, case_id=case_id, key=key) from None
    except RecursionError:
        raise CaseFileError("invalid TOML: arrays or tables nested too deeply to parse", path=str(path)) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise CaseFileError(f"invalid TOML: {quote(str(exc), 120)}", path=str(path)) from None


_KEY_RE = re.compile(r'\s*([A-Za-z0-9_-]+|"[^"\n]*")\s*=')
_ID_RE = re.compile(r'\s*id\s*=\s*"([^"\n]*)"')


def _repeated_key(text: str, line: int | None) -> tuple[str | None, str | None, str]:
    """For tomllib's "Cannot overwrite a value" at ``line``: the case it is in (the ``id`` of the ``[[case]]`` table
    above it, where one is written before it), the key written again, and a sentence that says so (the message named
    only the line and column, helper-131)."""
    lines = text.split("\n")
    if line is None or not 1 <= line <= len(lines):
        return None, None, ""
    m = _KEY_RE.match(lines[line - 1])
    if m is None:
        return None, None, ""
    key = m.group(1).strip('"')
    case_id = None
    for above in reversed(lines[: line - 1]):
        if above.strip().startswith("["):
            break
        found = _ID_RE.match(above)
        if found is not None:
            case_id = found.group(1)
    return case_id, key, (f"; the key {quote(key)} is given twice in one table (a file with a repeated key cannot be "
                          "read: none of its cases load)")


def _cell_problem(detail: str) -> str:
    """What is wrong with a CSV cell, without quoting the cell (file content never appears in a message)."""
    if "outside float64" in detail:
        return "a value outside float64's range"
    if "rounds to 0" in detail:
        return "a non-zero value that rounds to 0 in float64"
    if "digits" in detail:
        return "a number with too many digits"
    return "not a number"


def _data_path(data: str, base: Path, roots: Sequence[Path], err: Callable[[str, str], CaseFileError]) -> Path:
    """``data`` resolved against the case file's folder, refused unless inside one of ``roots``."""
    try:
        csv_path = (base / data).resolve()
    except (OSError, ValueError, RuntimeError):
        raise err("data", f"cannot resolve the path {quote(data)}") from None
    if not any(csv_path.is_relative_to(r) for r in roots):
        raise err("data", f"{quote(data)} resolves outside the case file's folder ({base}); data files must lie inside it "
                          "or inside a folder named with --data-root (load_cases(data_roots=...))")
    return csv_path


def _read_csv_case(spec: Mapping[str, Any], base: Path, path: str, case_id: str, *,
                   roots: Sequence[Path] = (), limits: Limits | None = None) -> dict[str, Any]:
    """Turn ``data = "file.csv"`` plus column keys into X and y lists of exact values.

    The file must resolve inside the case file's folder or one of ``roots``, be a
    regular UTF-8 file of at most ``limits.max_data_bytes``, and hold at most
    ``limits.max_elements`` numbers. Messages name lines and columns, never a cell's
    or a line's content.
    """
    lim = limits or Limits()

    def err(key: str | None, detail: str) -> CaseFileError:
        return CaseFileError(detail, path=path, case_id=case_id, key=key)

    data = spec["data"]
    if not isinstance(data, str) or not data:
        raise err("data", f"expected a CSV path string, got {quote(data)}")
    base = base.resolve()
    csv_path = _data_path(data, base, [base, *roots], err)
    name = csv_path.name
    text = _decode_utf8(_read_bounded(csv_path, lim.max_data_bytes, name, err, "data"), name, err, "data")
    y_cols = spec.get("y_columns", ["y"])
    x_cols = spec.get("x_columns")
    for key, cols in (("y_columns", y_cols), ("x_columns", x_cols)):
        if cols is None:
            continue
        if not isinstance(cols, list) or not cols or not all(isinstance(c, str) for c in cols):
            raise err(key, f"expected a non-empty list of column names, got {quote(cols)}")
    degree = spec.get("polynomial_degree")
    if degree is not None and (not isinstance(degree, int) or isinstance(degree, bool) or not 1 <= degree <= MAX_POLYNOMIAL_DEGREE):
        raise err("polynomial_degree", f"expected an integer from 1 to {MAX_POLYNOMIAL_DEGREE}, got {quote(degree)}")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        while header is not None and not header:  # leading blank lines
            header = next(reader, None)
    except csv.Error as exc:
        raise err("data", f"{name} line {reader.line_num}: not CSV ({exc})") from None
    if header is None:
        raise err("data", f"{name} is empty (no header line)")
    position: dict[str, int] = {}
    doubled_names: set[str] = set()
    for at, c in enumerate(header):
        if c in position:
            doubled_names.add(c)
        position.setdefault(c, at)
    if x_cols is None:
        y_set = set(y_cols)
        x_cols = [c for c in header if c not in y_set]
        if not x_cols:
            raise err("x_columns", f"{name} has no column besides {quote(y_cols)}")
    for key, cols in (("y_columns", y_cols), ("x_columns", x_cols)):
        missing = [c for c in cols if c not in position]
        if missing:
            raise err(key, f"column(s) {quote(missing)} not in the header of {name}")
        doubled = [c for c in cols if c in doubled_names]
        if doubled:
            raise err(key, f"column(s) {quote(doubled)} appear more than once in the header of {name}")
    if degree is not None and len(x_cols) != 1:
        raise err("polynomial_degree", f"needs exactly one x column, got {len(x_cols)}")
    x_at = [position[c] for c in x_cols]
    y_at = [position[c] for c in y_cols]
    d = degree if degree is not None else len(x_at)
    k = len(y_at)
    X: list[list[Any]] = []
    y: list[list[Any]] = []
    line = 1
    try:
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise err("data", f"{name} line {line} has {len(row)} fields, the header has {len(header)}")
            if elements(len(X) + 1, d, k) > lim.max_elements:
                check_size(lim, len(X) + 1, d, k, 1, lambda _key, detail: err("data", f"{name}: {detail}"))
            values = []
            for col, at in zip([*x_cols, *y_cols], [*x_at, *y_at], strict=True):
                try:
                    values.append(exact_number(row[at], None, err))
                except LimitError:
                    raise
                except CaseFileError as exc:
                    raise err("data", f"{name} line {line}, column {quote(col)}: {_cell_problem(exc.detail)}") from None
            xs, ys = values[: len(x_at)], values[len(x_at):]
            if degree is not None:
                xs = [xs[0] ** p for p in range(1, degree + 1)]
                for v in xs:
                    if isinstance(v, Fraction):
                        try:
                            float(v)
                        except OverflowError:
                            raise err("polynomial_degree", f"{name} line {line}: a power of column {quote(x_cols[0])} "
                                                           "is outside float64's range") from None
            X.append(xs)
            y.append(ys)
    except csv.Error as exc:
        raise err("data", f"{name} line {reader.line_num}: not CSV ({exc})") from None
    if not X:
        raise err("data", f"{name} has no data rows")
    return {"X": X, "y": y}


def _rough_shape(fields: Mapping[str, Any]) -> tuple[int, int, int]:
    """``(N, D, K)`` from the lengths of the written lists (1 where they are not lists): cheap, before any conversion."""
    def length(v: Any) -> int:
        return len(v) if isinstance(v, list) else 1

    def widest(rows: Any) -> int:  # the longest row, so that a ragged array is never undercounted
        return max((length(r) for r in rows), default=1) if isinstance(rows, list) else 1

    X, y, W, b = fields.get("X"), fields.get("y"), fields.get("W"), fields.get("b")
    n = max(length(X), length(y))
    d = max(widest(X), length(W))
    k = max(widest(y), widest(W), length(b))
    return max(n, 1), max(d, 1), max(k, 1)


def cases_from_table(spec: Mapping[str, Any], *, path: str, base: Path, index: int,
                     data_roots: Sequence[Path] = (), limits: Limits | None = None) -> Case:
    """Build one case from a ``[[case]]`` table.

    Args:
        data_roots: folders besides ``base`` that ``data`` may point into.
        limits: checked before any array is built (default :class:`harness.limits.Limits`).

    Raises:
        CaseFileError: naming the file, the case id and the key
            (:class:`harness.errors.LimitError` when a limit is exceeded).
    """
    lim = limits or Limits()
    if not isinstance(spec, Mapping):
        raise CaseFileError(f"[[case]] number {index + 1} is not a table: got {quote(spec)}", path=path, key="case")
    case_id = spec.get("id")
    if not isinstance(case_id, str) or not case_id:
        raise CaseFileError(f"[[case]] number {index + 1} has no string 'id' (got {quote(case_id)})", path=path, key="id")
    hidden = next((ch for ch in case_id if hidden_char(ch)), None)  # (one rule with the terminal's sanitiser)
    if hidden is not None:
        # an id is one printed line of every table, summary and pytest id: a newline, a carriage return or an escape
        # sequence (ESC [ 8 m conceals what follows) forged or hid lines of check's output (helper-176)
        raise CaseFileError(f"the id holds the unprintable character U+{ord(hidden):04X} ({unicodedata.name(hidden, 'a control character')}); "
                            "an id is one line of printable text", path=path, case_id=case_id, key="id")

    def err(key: str | None, detail: str) -> CaseFileError:
        return CaseFileError(detail, path=path, case_id=case_id, key=key)

    unknown = sorted((k for k in spec if k not in CASE_KEYS), key=str)
    if unknown:
        raise err(unknown[0], f"unknown key(s) {quote(unknown)}; allowed: {sorted(CASE_KEYS)}")
    for key in ("description", "source"):
        if key in spec and not isinstance(spec[key], str):
            raise err(key, f"expected a string, got {quote(spec[key])}")
    fields = dict(spec)
    model = model_spec(fields.get("model"), err)
    if model is not None and "optimizer" in fields:
        _model_settings(model, fields["optimizer"], err)
    steps = fields.get("steps", 1)
    if isinstance(steps, int) and not isinstance(steps, bool) and steps > lim.max_steps:
        check_size(lim, 1, 1, 1, steps, err)
    if "data" in fields:
        if "X" in fields or "y" in fields:
            raise err("data", "give either 'data' (a CSV file) or inline 'X' and 'y', not both")
        fields.update(_read_csv_case(fields, base, path, case_id, roots=data_roots, limits=lim))
    else:
        stray = [k for k in CSV_KEYS if k in fields]
        if stray:
            raise err(stray[0], f"{quote(stray[0])} only applies with 'data' (a CSV file); this case has inline values")
    if model is None and "params" in fields:
        raise err("params", NO_MODEL_PARAMS)
    required = ("X", "y", "W", "b", "lr") if model is None else ("X", "y", "lr")
    for key in required:
        if key not in fields:
            raise err(key, "missing required key")
    if model is not None and "params" not in fields and "W" not in fields and "b" not in fields:
        raise err("params", f"missing required key: the model {model.describe()} takes its parameters by name, "
                            "params = { W1 = [[...]], b1 = [...], ... }")
    if isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1:
        if model is None:
            check_size(lim, *_rough_shape(fields), steps, err)
        else:
            n, d, k = _rough_shape({"X": fields["X"], "y": fields["y"]})
            check_model_size(lim, model, n, d, k, steps, err)
    tags = fields.get("tags", [])
    dtypes = fields.get("dtypes", list(DEFAULT_DTYPES))
    for key, val in (("tags", tags), ("dtypes", dtypes)):
        if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
            raise err(key, f"expected a list of strings, got {quote(val)}")
    description = fields.get("description", "")
    if "source" in fields:
        description = f"{description} (source: {fields['source']})".strip()
    return make_case(
        case_id, fields["X"], fields["y"], fields.get("W"), fields.get("b"), lr=fields["lr"],
        steps=steps, reduction=fields.get("reduction", "sum"), dtypes=dtypes,
        tags=tags, source=path, description=description, optimizer=fields.get("optimizer"),
        model=model, params=fields.get("params"),
    )


@dataclass
class LoadResult:
    """Cases loaded from files, and the problems found (one bad case never stops the rest)."""

    cases: list[Case] = field(default_factory=list)
    errors: list[CaseFileError] = field(default_factory=list)


def iter_case_files(paths: Iterable[str | Path], errors: list[CaseFileError] | None = None) -> Iterator[Path]:
    """TOML files named by ``paths``: files as given, folders searched recursively (:func:`_walk`), each
    folder's files sorted. The one walk of ``check``, ``cases``, ``selftest``, the pytest plugin and
    :func:`harness.records.run_input_files`'s callers.

    Args:
        errors: where a part of a folder that cannot be walked is added (a subfolder that cannot be read, a link to a
            folder that holds it), naming its path; None: such parts are passed over.
    """
    for p in paths:
        p = Path(p)
        if p.is_dir():
            yield from _walk(p, errors if errors is not None else [])[0]
        else:
            yield p


def read_as_case_file(path: str | Path, case_paths: Iterable[str | Path]) -> bool:
    """Whether :func:`iter_case_files` of ``case_paths`` reads a file at ``path``, now or once it is written there: a
    ``*.toml`` name in or below one of the folders it walks (a subfolder not made yet included), or one of the files
    named. The rule by which ``check`` and the pytest plugin refuse an output path (:func:`harness.records.check_output_path`):
    ``--results cases/new.toml`` wrote records that the next run read as a case file (helper-146)."""
    p = Path(path)
    target = Path(os.path.realpath(p))
    for root in case_paths:
        r = Path(root)
        if r.is_dir():
            if p.name.endswith(".toml") and any(target.is_relative_to(f) for f in _walk(r, [])[1]):
                return True
        elif os.path.realpath(r) == str(target):
            return True
    return False


def _walk(root: Path, errors: list[CaseFileError]) -> tuple[list[Path], list[Path]]:
    """The ``*.toml`` files in ``root`` and below it, sorted (as ``sorted(root.rglob("*.toml"))`` was), and the folders
    walked (their real paths), with an error in ``errors`` for each subfolder that cannot be read and each link to a folder that holds it (a loop, not followed).

    pathlib's rglob passed a folder it could not list over in silence, and never entered a link to a folder: their case
    files were not run, and the run passed on the others (helper-146). Links to folders are followed (as pytest does);
    a folder reached a second time by another path (a link ``latest -> v2`` next to ``v2``) is walked once (under
    one of its paths, the same each time), so its cases are not loaded twice. A link to a file named ``*.toml`` is listed as it is: one that points
    nowhere or loops is that file's error when it is read (:func:`read_toml`)."""
    found: list[Path] = []
    try:
        st = os.stat(root)
    except OSError as exc:
        errors.append(CaseFileError(f"a folder that cannot be read ({exc.strerror or exc}): its case files are not run",
                                    path=str(root)))
        return found, []
    folders = [Path(os.path.realpath(root))]
    seen = {(st.st_dev, st.st_ino)}
    stack: list[tuple[Path, tuple[tuple[int, int], ...]]] = [(root, ((st.st_dev, st.st_ino),))]
    while stack:  # (a stack, not recursion: a tree deeper than Python's recursion limit is walked too)
        folder, above = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            errors.append(CaseFileError(f"a folder that cannot be read ({exc.strerror or exc}): its case files are not "
                                        "run", path=str(folder)))
            continue
        below: list[tuple[Path, tuple[tuple[int, int], ...]]] = []
        for entry in entries:
            path = folder / entry.name
            try:
                is_dir = entry.is_dir()  # (follows a link)
            except OSError:  # a link that loops, or that cannot be followed: a *.toml one is named when it is read
                is_dir = False
            if not is_dir:
                if entry.name.endswith(".toml"):
                    found.append(path)
                continue
            try:
                dst = os.stat(path)
            except OSError as exc:
                errors.append(CaseFileError(f"a folder that cannot be read ({exc.strerror or exc}): its case files are "
                                            "not run", path=str(path)))
                continue
            key = (dst.st_dev, dst.st_ino)
            if key in above:
                errors.append(CaseFileError("a link to a folder that holds it (a loop): not followed; its case files "
                                            "are walked once, from the folder itself", path=str(path)))
            elif key not in seen:
                seen.add(key)
                folders.append(Path(os.path.realpath(path)))
                below.append((path, (*above, key)))
        stack.extend(reversed(below))
    return sorted(found), folders


def _case_files(paths: Iterable[str | Path], result: LoadResult) -> Iterator[Path]:
    """:func:`iter_case_files` of ``paths``, with its errors in ``result``, and an error for each folder that holds no
    case file: a folder given to ``--cases`` that held none (empty, or a folder named like a case file) was silently
    nothing, and the run passed on the other cases (helper-131)."""
    for p in paths:
        found = False
        before = len(result.errors)
        for file in iter_case_files([p], result.errors):
            found = True
            yield file
        if not found and Path(p).is_dir() and len(result.errors) == before:
            result.errors.append(CaseFileError("a folder with no case file (*.toml) in it or below it", path=str(p)))


def tier_name(tier: str) -> str:
    """``tier`` as one of :data:`TIERS` (``"default"`` is ``"full"``).

    Raises:
        ValueError: for any other name.
    """
    name = "full" if tier == "default" else tier
    if name not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}")
    return name


def quick_pick(items: Sequence[Any], n_shapes: int) -> list[Any]:
    """The ``quick`` tier's rule, in one place: of a ``[[generate]]`` table's expansion (in its order:
    shape-major, then regime, reduction, steps; ``len(items)`` is ``n_shapes`` x the number C of
    regime x reduction x steps combinations), the i-th combination at the table's shape number
    ``i mod n_shapes``. Every regime, reduction and step count of the table runs once, and the
    combinations walk through the table's shapes from the smallest listed on, so the quick tier
    still has one-sample cases, parameters beyond SIMD widths and long reductions.

    Raises:
        ValueError: when ``len(items)`` is not a multiple of ``n_shapes``.
    """
    if n_shapes < 1 or len(items) % n_shapes:
        raise ValueError(f"{len(items)} items are not {n_shapes} shapes x the same combinations")
    combos = len(items) // n_shapes
    return [items[(i % n_shapes) * combos + i] for i in range(combos)]


def expand_generate_table(spec: Mapping[str, Any], *, path: str, index: int, tier: str = "full",
                          limits: Limits | None = None) -> list[Case]:
    """Expand one ``[[generate]]`` table into cases (see :mod:`harness.generate` for its keys).

    Args:
        spec: the table.
        path: the file (for messages).
        index: position of the table in the file (for messages).
        tier: one of :data:`TIERS`: ``"quick"`` picks :func:`quick_pick` of a default-tier table,
            ``"full"`` expands default-tier tables only, ``"large"`` expands both.
        limits: checked for every combination before any value is generated.

    Raises:
        CaseFileError: naming the file, the table and the key.
    """
    name = tier_name(tier)
    if "model" in spec:
        return _expand_model_table(spec, path=path, index=index, tier=name, limits=limits)
    if "exact_inputs" in spec:
        table = spec.get("name")
        where = f"[[generate]] {table!r}" if isinstance(table, str) else f"[[generate]] number {index + 1}"
        raise CaseFileError("exact_inputs only applies to a table with a model (the linear regimes have their own rule)",
                            path=path, case_id=where, key="exact_inputs")
    optimizer = None
    if "optimizer" in spec:  # a key of the cases it makes, validated here (the one place), not by the generator
        raw = spec["optimizer"]
        spec = {k: v for k, v in spec.items() if k != "optimizer"}
        table = spec.get("name")
        where = f"[[generate]] {table!r}" if isinstance(table, str) else f"[[generate]] number {index + 1}"
        optimizer = optimizer_config(raw, lambda key, detail: CaseFileError(detail, path=path, case_id=where, key=key))
    made = generate_table(spec, path=path, index=index, tier="large" if name == "large" else "default", limits=limits)
    if name == "quick" and made:
        made = quick_pick(made, len(spec["shapes"]))
    return [
        case_from_arrays(g.id, g.values["X"], g.values["y"], g.values["W"], g.values["b"], lr=g.lr, steps=g.steps,
                         reduction=g.reduction, dtypes=g.dtypes, tags=g.tags, source=g.source, description=g.description,
                         optimizer=optimizer)
        for g in made
    ]


def _expand_model_table(spec: Mapping[str, Any], *, path: str, index: int, tier: str, limits: Limits | None) -> list[Case]:
    """:func:`expand_generate_table` for a table with a ``model``: the common keys validated by
    :func:`harness.generate.generate_table` (the one place), the model by :func:`model_spec`, the
    values drawn by :func:`harness.models.generate.model_values`; the cases in the same order
    (shape-major, then regime, reduction, steps) so that :func:`quick_pick` applies unchanged."""
    lim = limits or Limits()
    table = spec.get("name")
    where = f"[[generate]] {table}" if isinstance(table, str) else f"[[generate]] number {index + 1}"

    def err(key: str | None, detail: str) -> CaseFileError:
        return CaseFileError(detail, path=path, case_id=where, key=key)

    model = model_spec(spec["model"], err)
    assert model is not None  # spec["model"] is never None in TOML
    if "optimizer" in spec:
        _model_settings(model, spec["optimizer"], err)
    exact_inputs = spec.get("exact_inputs", False)
    if not isinstance(exact_inputs, bool):
        raise err("exact_inputs", f"expected true or false, got {quote(exact_inputs)}")
    regimes = spec.get("regimes", ["normal"])
    if not isinstance(regimes, list) or not regimes or not all(isinstance(r, str) for r in regimes):
        raise err("regimes", f"expected a non-empty list of regime names ({', '.join(MODEL_REGIMES)}), got {quote(regimes)}")
    for r in regimes:
        problem = regime_problem(model, r)
        if problem:
            raise err("regimes", problem)
    if len(set(regimes)) != len(regimes):
        raise err("regimes", f"lists a regime more than once: {quote(regimes)}")
    common = {k: v for k, v in spec.items() if k not in (*MODEL_GENERATE_KEYS, "regimes")}
    common["regimes"] = ["normal"]
    made = generate_table(common, path=path, index=index, tier="large" if tier == "large" else "default", limits=lim)
    if not made:
        return []
    shapes = [tuple(s) for s in spec["shapes"]]
    combos = [(g.reduction, g.steps) for g in made[: len(made) // len(shapes)]]
    most_steps = max(st for _, st in combos)
    total = 0
    for (n, d, k), regime in itertools.product(shapes, regimes):
        m = regime_model(model, regime)
        def shape_err(key: str, detail: str, s: tuple[int, ...] = (n, d, k)) -> CaseFileError:
            return err("shapes" if key == "X" else key, f"shape {list(s)}: {detail}")

        check_model_size(lim, m, n, d, k, most_steps, shape_err)
        check_expression(m, d, err)
        total += model_size(m, n, d, k)[0]
    if total > 4 * lim.max_elements:
        raise LimitError(f"the table's arrays hold {total:,} numbers together, over 4 x the limit of {lim.max_elements:,}; "
                         "raise it with --max-elements", path=path, case_id=where, key="shapes")
    first = made[0]
    base_tags = [t for t in first.tags if t != "normal"]
    seed = spec["seed"]
    out: list[Case] = []
    for (n, d, k), regime in itertools.product(shapes, regimes):
        m = regime_model(model, regime)
        v = model_values(m, regime, seed, n, d, k, exact_inputs=exact_inputs)
        params = {p: v[p] for p in m.parameter_names(d, k)}
        extra = f"; {spec['description']}" if spec.get("description") else ""
        for red, st in combos:
            cid = f"gen-{table}-{regime}-n{n}-d{d}-k{k}-{red}-s{st}"
            out.append(case_from_arrays(
                cid, v["X"], v["y"], lr=first.lr, steps=st, reduction=red, dtypes=first.dtypes,
                tags=[*base_tags, "model", regime], source=path, model=m, params=params,
                description=f"generated: {m.describe()}, {regime} values, seed {seed}{extra}"))
    if tier == "quick":
        out = quick_pick(out, len(shapes))
    return out


def _tables(doc: Mapping[str, Any], name: str, path: str) -> tuple[list[Any], CaseFileError | None]:
    """The ``[[name]]`` tables of a document, or an error when ``name`` is not an array of tables."""
    val = doc.get(name, [])
    if isinstance(val, list):
        return val, None
    hint = f"write [[{name}]] (an array of tables), not [{name}]" if isinstance(val, dict) else f"expected [[{name}]] tables"
    return [], CaseFileError(f"{hint}; got {quote(val)}", path=path, key=name)


def _internal(exc: BaseException, path: str, what: str) -> CaseFileError:
    """An unexpected exception while loading, as a load error (never a traceback); a harness bug."""
    return CaseFileError(f"could not load {what} ({type(exc).__name__}: {quote(str(exc), 120)}); "
                         "this is a harness bug, please report it", path=path)


@in_ieee_default  # as case_from_arrays
def load_cases(paths: Iterable[str | Path], *, tier: str = "full", data_roots: Iterable[str | Path] = (),
               limits: Limits | None = None) -> LoadResult:
    """Load every case from the given files and folders.

    Args:
        paths: TOML files or folders holding them.
        tier: one of :data:`TIERS` (``"quick"``, ``"full"``, ``"large"``; ``"default"`` is ``"full"``).
        data_roots: folders (besides each case file's own) that ``data`` paths may point into.
        limits: size limits, checked before any array is built (default :class:`harness.limits.Limits`).

    Returns:
        the cases in file order, and one :class:`CaseFileError` per bad file or case.
        Duplicate ids are errors (the later one is dropped). Nothing else is raised:
        a file that cannot be parsed loses only itself, a bad case only itself.
    """
    lim = limits or Limits()
    tier = tier_name(tier)
    roots = [Path(r).resolve() for r in data_roots]
    result = LoadResult()
    seen: dict[str, str] = {}
    for file in _case_files(paths, result):
        path = str(file)
        try:
            if not file.exists() and not file.is_symlink():  # (a link that loops or points nowhere: read_toml says which)
                result.errors.append(CaseFileError("no such file or folder", path=path))
                continue
            doc = read_toml(file, limits=lim)
        except CaseFileError as exc:
            result.errors.append(exc)
            continue
        except Exception as exc:  # noqa: BLE001 - any failure is this file's error, never the run's
            result.errors.append(_internal(exc, path, "the file"))
            continue
        unknown = sorted(set(doc) - {"case", "generate", "title", "description"})
        if unknown:
            result.errors.append(CaseFileError(f"unknown top-level key(s) {quote(unknown)}; expected [[case]] or [[generate]] tables",
                                               path=path, key=unknown[0]))
        found: list[Case] = []
        case_tables, problem = _tables(doc, "case", path)
        if problem:
            result.errors.append(problem)
        for i, spec in enumerate(case_tables):
            try:
                found.append(cases_from_table(spec, path=path, base=file.parent, index=i, data_roots=roots, limits=lim))
            except CaseFileError as exc:
                result.errors.append(exc)
            except Exception as exc:  # noqa: BLE001
                result.errors.append(_internal(exc, path, f"[[case]] number {i + 1}"))
        gen_tables, problem = _tables(doc, "generate", path)
        if problem:
            result.errors.append(problem)
        for i, spec in enumerate(gen_tables):
            try:
                if not isinstance(spec, Mapping):
                    raise CaseFileError(f"[[generate]] number {i + 1} is not a table: got {quote(spec)}", path=path, key="generate")
                found.extend(expand_generate_table(spec, path=path, index=i, tier=tier, limits=lim))
            except CaseFileError as exc:
                result.errors.append(exc)
            except Exception as exc:  # noqa: BLE001
                result.errors.append(_internal(exc, path, f"[[generate]] number {i + 1}"))
        for case in found:
            if case.id in seen:
                result.errors.append(CaseFileError(f"duplicate id (first defined in {seen[case.id]})", path=path, case_id=case.id, key="id"))
                continue
            seen[case.id] = path
            result.cases.append(case)
    return result


#: What :func:`as_cases` accepts: a case, a case file or folder (str or path), or an iterable of them.
CaseSource = Union["Case", str, "os.PathLike[str]"]


def as_cases(cases: CaseSource | Iterable[CaseSource], *, tier: str = "full") -> list[Case]:
    """``cases`` as a list of cases: :class:`Case` objects as given, case files and folders
    (``"cases/seed.toml"``, ``Path("cases")``) loaded with :func:`load_cases` in ``tier``
    (default ``full``: every case of the files named), in the order given.

    Raises:
        CaseFileError: the first load error of a named file (a missing file, a bad case).
        TypeError: for anything else (a dict, a number), naming what was given.
    """
    if isinstance(cases, Case | str | os.PathLike):
        items: Iterable[Any] = [cases]
    elif isinstance(cases, Iterable):
        items = cases
    else:
        items = [cases]  # refused below, by its type
    out: list[Case] = []
    for item in items:
        if isinstance(item, Case):
            out.append(item)
        elif isinstance(item, str | os.PathLike):
            res = load_cases([os.fspath(item)], tier=tier)
            if res.errors:
                raise res.errors[0]
            out.extend(res.cases)
        else:
            raise TypeError(f"expected cases: a Case, a case file or folder (str or Path), or a list of them; got {type(item).__name__}")
    return out
