"""The values of a ``[[generate]]`` table with a ``model``: X, y and every parameter, drawn from the seed.

:func:`harness.cases.expand_generate_table` validates the table (its common keys through
:func:`harness.generate.generate_table`, the ``model`` through :func:`harness.cases.model_spec`)
and calls :func:`model_values` once per shape and regime; this module only draws numbers (it never
imports :mod:`harness.cases`).

Values come from ``numpy.random.default_rng([seed, crc32("model/{regime}/{N}/{D}/{K}/{describe}")])``
where ``describe`` is :meth:`ModelSpec.describe` of the case's model: they depend only on the
table's seed, the regime, the shape and the model, never on the position of the combination.

Regimes (:data:`MODEL_REGIMES`); fan_in, fan_out are a weight's (rows, columns):

- ``normal``: X and y standard normal; each weight normal with variance ``2 / (fan_in + fan_out)``
  (Glorot), each bias normal with standard deviation 0.1; an expression's scalars standard normal.
- ``saturate`` (``mlp``): every pre-activation of every hidden layer has ``|z|`` in [5.48, 13.52]
  in every dtype (tanh and sigmoid saturated: tanh'(z) <= 7e-5, sigmoid'(z) <= 4.2e-3): X uniform in [-1, 1];
  hidden layer l's weights uniform with ``|W_l| <= 1.5 / (fan_in * M)`` where M is the largest
  ``|h_{l-1}|`` (so ``|h_{l-1} W_l| <= 1.5``) and its bias ``+-`` uniform in [7, 12].
- ``large`` (``mlp``): as ``saturate`` with biases uniform in [10, 38]: every pre-activation lies in
  [8.48, 39.52], on both sides of torch's softplus threshold 20, and through the band below it where softplus'
  derivative ``sigmoid(z)`` differs from 1 in float32 (``z < 16.6``; from [17, 38] a backward that took it as 1
  from ``z = 10`` on passed every case: helper-89).
- ``kink`` (``mlp``): integers: X in [-2, 2], weights in [-1, 1], y in [-4, 4]; the first hidden
  layer's bias is chosen so that in each column h one pre-activation (at a row drawn per column) is
  exactly 0: ``b1[h] = -(X W1)[i_h, h]``. For ``relu`` the next hidden layer gets the same
  construction (its input is then integer too); otherwise its bias is an integer in [-2, 2].
  Every value is an integer below 256 in magnitude at the shapes of ``cases/models.toml``: exact in
  all four dtypes (the zeros then stay exact zeros in every dtype's products and sums while the
  partial sums stay below 256).
- ``wide``  (``mlp``): the ``normal`` values for the model with its hidden widths replaced by
  :data:`WIDE_WIDTHS` (65 for one hidden layer, 33 and 17 for two): widths beyond SIMD widths.

``exact_inputs = true`` in the table rounds every drawn value to bfloat16 and sets magnitudes below
float16's smallest normal (2**-14) to 0: the values are then exact in float64, float32, float16 and
bfloat16, so every dtype sees the same model and data (the ``saturate`` and ``large`` bands keep
their margins under that rounding).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from ..floats import BFLOAT16, FLOAT16, round_to_format
from .spec import ModelSpec

F64 = npt.NDArray[np.float64]

#: The value regimes of a ``[[generate]]`` table with a model (module docstring).
MODEL_REGIMES = ("normal", "saturate", "large", "kink", "wide")
#: Regimes that need hidden layers.
MLP_REGIMES = ("saturate", "large", "kink", "wide")
#: The hidden widths of the ``wide`` regime, by the number of hidden layers.
WIDE_WIDTHS = {1: (65,), 2: (33, 17)}

_erf = np.frompyfunc(math.erf, 1, 1)


def _activation(name: str, slope: float) -> Callable[[F64], F64]:
    """The activation in float64 (only to size the next layer's weights; never graded)."""
    table: dict[str, Callable[[F64], F64]] = {
        "relu": lambda z: np.maximum(z, 0.0),
        "leaky_relu": lambda z: np.where(z > 0, z, slope * z),
        "tanh": np.tanh,
        "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
        "softplus": lambda z: np.logaddexp(0.0, z),
        "gelu": lambda z: z / 2 * (1 + np.asarray(_erf(z / math.sqrt(2)), dtype=np.float64)),
    }
    return table[name]


def regime_problem(spec: ModelSpec, regime: str) -> str | None:
    """Why ``regime`` does not apply to the model ``spec`` (None: it applies)."""
    if regime not in MODEL_REGIMES:
        return f"unknown regime {regime!r} for a model; known: {', '.join(MODEL_REGIMES)}"
    if regime in MLP_REGIMES and spec.kind != "mlp":
        return f"the regime {regime!r} needs hidden layers; the model {spec.describe()} has none (use 'normal')"
    if regime in ("saturate", "large", "kink") and not spec.bias:
        return f"the regime {regime!r} sets the hidden layers' biases; the model {spec.describe()} has none (bias = false)"
    return None


def regime_model(spec: ModelSpec, regime: str) -> ModelSpec:
    """The model a case of ``regime`` runs: ``spec`` itself, or for ``wide`` its hidden widths replaced."""
    if regime == "wide":
        return replace(spec, hidden=WIDE_WIDTHS[len(spec.hidden)])
    return spec


def exact_in_every_dtype(x: F64) -> F64:
    """``x`` rounded to bfloat16 with magnitudes below float16's smallest normal set to 0 (exact in all four dtypes)."""
    r = round_to_format(x, BFLOAT16)
    return np.where(np.abs(r) < FLOAT16.min_normal, 0.0, r)


def _layers(spec: ModelSpec, d: int, k: int) -> list[tuple[str, str | None]]:
    """(weight name, bias name or None) of each affine layer of an ``mlp``, in order."""
    names = spec.parameter_names(d, k)
    return [(f"W{i}", f"b{i}" if f"b{i}" in names else None) for i in range(1, len(spec.hidden) + 2)]


def model_values(spec: ModelSpec, regime: str, seed: int, n: int, d: int, k: int, *,
                 exact_inputs: bool = False) -> dict[str, F64]:
    """X (N, D), y (N, K) and every parameter of ``spec`` (shapes of :meth:`ModelSpec.parameter_shapes`),
    drawn for ``regime`` (module docstring) from ``seed``.

    ``spec`` is the case's model (for ``wide``: :func:`regime_model` of the table's).

    Raises:
        ValueError: for a regime that does not apply (:func:`regime_problem`), or an expression model with K != 1.
    """
    problem = regime_problem(spec, regime)
    if problem:
        raise ValueError(problem)
    shapes = spec.parameter_shapes(d, k)
    rng = np.random.default_rng([seed, zlib.crc32(f"model/{regime}/{n}/{d}/{k}/{spec.describe()}".encode())])
    fix: Callable[[F64], F64] = exact_in_every_dtype if exact_inputs else (lambda a: a)
    out: dict[str, F64] = {}
    if regime == "kink":
        _kink(spec, rng, n, d, k, out)
    elif regime in ("saturate", "large"):
        _banded(spec, rng, n, d, k, out, (10.0, 38.0) if regime == "large" else (7.0, 12.0), regime == "saturate", fix)
    else:
        out["X"] = fix(rng.standard_normal((n, d)))
        for name, shape in shapes.items():
            if len(shape) == 2:
                out[name] = fix(rng.standard_normal(shape) * math.sqrt(2.0 / (shape[0] + shape[1])))
            elif len(shape) == 1:
                out[name] = fix(rng.standard_normal(shape) * 0.1)
            else:
                out[name] = fix(np.array(rng.standard_normal()))
        out["y"] = fix(rng.standard_normal((n, k)))
    return {name: out[name] for name in ("X", "y", *shapes)}


def _banded(spec: ModelSpec, rng: np.random.Generator, n: int, d: int, k: int, out: dict[str, F64],
            band: tuple[float, float], both_signs: bool, fix: Callable[[F64], F64]) -> None:
    """``saturate`` / ``large``: every hidden pre-activation is ``b + s`` with ``|b|`` in ``band`` and
    ``|s| <= 1.5`` (``1.5 (1 + 2**-8)**2`` once the weights and the layer's input are rounded to bfloat16)."""
    act = _activation(spec.activation or "relu", float(spec.negative_slope))
    h = fix(rng.uniform(-1.0, 1.0, (n, d)))
    out["X"] = h
    layers = _layers(spec, d, k)
    for li, (wname, bname) in enumerate(layers):
        fan_in = h.shape[1]
        fan_out = k if li == len(layers) - 1 else spec.hidden[li]
        m = max(float(np.max(np.abs(h))), 1e-3)
        if li == len(layers) - 1:  # the linear output layer: Glorot, scaled to the size of its input
            W = fix(rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / (fan_in + fan_out)) / max(m, 1.0))
            out[wname] = W
            if bname:
                out[bname] = fix(rng.standard_normal(fan_out) * 0.1)
            break
        if bname is None:
            raise ValueError("the saturate and large regimes need a bias in the hidden layers (bias = true)")
        W = fix(rng.uniform(-1.0, 1.0, (fan_in, fan_out)) * (1.5 / (fan_in * m)))
        b = rng.uniform(*band, fan_out)
        if both_signs:
            b = b * np.where(rng.random(fan_out) < 0.5, -1.0, 1.0)
        out[wname], out[bname] = W, fix(b)
        h = act(h @ W + out[bname])
    out["y"] = fix(rng.standard_normal((n, k)))


def _kink(spec: ModelSpec, rng: np.random.Generator, n: int, d: int, k: int, out: dict[str, F64]) -> None:
    """``kink``: integers, with a pre-activation exactly 0 in every column of the first hidden layer
    (and of the next ones for ReLU)."""
    def ints(lo: int, hi: int, shape: tuple[int, ...]) -> F64:
        return rng.integers(lo, hi + 1, size=shape).astype(np.float64)

    h = ints(-2, 2, (n, d))
    out["X"] = h
    layers = _layers(spec, d, k)
    for li, (wname, bname) in enumerate(layers):
        fan_in = h.shape[1]
        last = li == len(layers) - 1
        fan_out = k if last else spec.hidden[li]
        W = ints(-1, 1, (fan_in, fan_out))
        out[wname] = W
        z = h @ W
        if bname is None:
            if not last:
                raise ValueError("the kink regime needs a bias in the hidden layers (bias = true)")
        elif not last and (li == 0 or spec.activation == "relu"):
            rows = rng.integers(0, n, size=fan_out)
            out[bname] = -z[rows, np.arange(fan_out)]
        else:
            out[bname] = ints(-2, 2, (fan_out,))
        if not last:
            z = z + out[bname] if bname else z
            h = np.maximum(z, 0.0) if spec.activation == "relu" else z  # only integers matter for ReLU's next layer
    out["y"] = ints(-4, 4, (n, k))
