"""Deterministic generated cases from ``[[generate]]`` tables (the values; :mod:`harness.cases` makes the cases).

A table gives a seed, lists of shapes, value regimes, reductions and steps;
the generator takes their product and makes one case per combination with a
readable, stable id::

    gen-{name}-{regime}-n{N}-d{D}-k{K}-{reduction}-s{steps}

Values come from ``numpy.random.default_rng([seed, crc32("{regime}/{N}/{D}/{K}")])``:
they depend only on the table's seed, the regime and the shape, never on the
position of the combination in the table, so adding or removing a shape does
not change the values behind any other id (and the sum and mean cases of one
shape share their inputs). NumPy's ``Generator`` streams are stable across
releases in practice but not guaranteed by NumPy (NEP 19).

Keys: ``name`` (str of letters, digits, ``_`` and ``-``), ``seed`` (int),
``shapes`` (list of [N, D, K]), ``regimes`` (list of names below, default
``["normal"]``), ``reductions`` (default both), ``steps`` (list of ints,
default [1]), ``lr`` (default "0.01"), ``dtypes`` (default all four), ``tier``
("default" or "large"; large tables run only with ``--tier large``), ``tags``
(list of str), ``description``.

Regimes (X (N, D), W (D, K), b (K,), y (N, K)):

- ``normal``: standard normal X, W, b, y;
- ``huge`` / ``tiny``: normal X, b, y scaled by 2**60 / 2**-60, W standard
  normal (beyond float16's range both ways; products and the loss of ``huge``
  overflow float32 at moderate N, ``tiny`` products reach float32's subnormals);
- ``mixed``: each entry scaled by 2**e with e uniform in [-20, 20];
- ``near-zero-residual``: X, W, b standard normal rounded to bfloat16 (and
  magnitudes below 2**-14 set to 0), so they are exact in all four dtypes, and
  ``y = X W + b + 2**-20 * noise`` (``X W + b`` is exact in float64): the
  residual is about 2**-20 of the terms it is computed from, so the gradient
  cancels heavily in float64 and float32 (in float16 and bfloat16 the
  rounding of y itself is larger than the noise: the residual is then the
  rounding error of y);
- ``zeros``: all-zero X, W, b, y (every gradient and the loss are exactly zero);
- ``integers``: integers in [-8, 8] (products and sums exact in float32 and
  float64 at these sizes; float16 and bfloat16 round or overflow large sums);
- ``subnormal``: standard normal X, and W, b, y around 2**-1060 (float64
  subnormals; every product underflows; they are zero in the other dtypes).
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from .errors import CaseFileError, LimitError, quote
from .floats import BFLOAT16, DTYPES, FLOAT16, round_to_format
from .limits import Limits, check_size, elements, exact_number

REGIMES = ("normal", "huge", "tiny", "mixed", "near-zero-residual", "zeros", "integers", "subnormal")
_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
GENERATE_KEYS = {"name", "seed", "shapes", "regimes", "reductions", "steps", "lr", "dtypes", "tier", "tags", "description"}


def _exact_in_every_dtype(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to bfloat16, with magnitudes below float16's smallest normal
    (2**-14) set to 0: the values are then exact in all four dtypes, so every
    dtype sees the same X, W and b (no input rounding error that the rows share)."""
    r = round_to_format(x, BFLOAT16)
    return np.where(np.abs(r) < FLOAT16.min_normal, 0.0, r)


def _values(regime: str, rng: np.random.Generator, n: int, d: int, k: int) -> dict[str, np.ndarray]:
    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape)

    if regime == "normal":
        return {"X": normal(n, d), "W": normal(d, k), "b": normal(k), "y": normal(n, k)}
    if regime in ("huge", "tiny"):
        s = 2.0**60 if regime == "huge" else 2.0**-60
        return {"X": normal(n, d) * s, "W": normal(d, k), "b": normal(k) * s, "y": normal(n, k) * s}
    if regime == "mixed":
        def mixed(*shape: int) -> np.ndarray:
            return normal(*shape) * np.exp2(rng.integers(-20, 21, size=shape))
        return {"X": mixed(n, d), "W": mixed(d, k), "b": mixed(k), "y": mixed(n, k)}
    if regime == "near-zero-residual":
        X, W, b = (_exact_in_every_dtype(normal(*shape)) for shape in ((n, d), (d, k), (k,)))
        y = X @ W + b + normal(n, k) * 2.0**-20
        return {"X": X, "W": W, "b": b, "y": y}
    if regime == "zeros":
        return {"X": np.zeros((n, d)), "W": np.zeros((d, k)), "b": np.zeros(k), "y": np.zeros((n, k))}
    if regime == "integers":
        def ints(*shape: int) -> np.ndarray:
            return rng.integers(-8, 9, size=shape).astype(np.float64)
        return {"X": ints(n, d), "W": ints(d, k), "b": ints(k), "y": ints(n, k)}
    if regime == "subnormal":
        s = 2.0**-1060
        return {"X": normal(n, d), "W": normal(d, k) * s, "b": normal(k) * s, "y": normal(n, k) * s}
    raise ValueError(regime)


class Generated(NamedTuple):
    """One combination of a ``[[generate]]`` table: the arguments of :func:`harness.cases.case_from_arrays`."""

    id: str
    values: dict[str, np.ndarray]
    lr: Fraction
    steps: int
    reduction: str
    dtypes: list[str]
    tags: list[str]
    source: str
    description: str


def generate_table(spec: Mapping[str, Any], *, path: str, index: int, tier: str = "default",
                   limits: Limits | None = None) -> list[Generated]:
    """Expand one ``[[generate]]`` table into its combinations (the values of each case;
    :func:`harness.cases.expand_generate_table` makes them cases, so that this module
    never imports :mod:`harness.cases`).

    Args:
        spec: the table.
        path: the file (for messages).
        index: position of the table in the file (for messages).
        tier: ``"default"`` expands default-tier tables only; ``"large"`` expands both.
        limits: every combination is checked against them (:func:`harness.limits.check_size`)
            before any value is generated, and the table's distinct arrays together may hold at
            most ``4 * limits.max_elements`` numbers.

    Raises:
        CaseFileError: naming the file, the table and the key
            (:class:`harness.errors.LimitError` for a limit).
    """
    lim = limits or Limits()
    name = spec.get("name", f"table{index + 1}")
    label = f"[[generate]] {name}"
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise CaseFileError(f"expected letters, digits, '_' and '-', got {quote(name)}", path=path,
                            case_id=f"[[generate]] number {index + 1}", key="name")

    def err(key: str, detail: str) -> CaseFileError:
        return CaseFileError(detail, path=path, case_id=label, key=key)

    unknown = sorted((k for k in spec if k not in GENERATE_KEYS), key=str)
    if unknown:
        raise err(unknown[0], f"unknown key(s) {quote(unknown)}; allowed: {sorted(GENERATE_KEYS)}")
    table_tier = spec.get("tier", "default")
    if not isinstance(table_tier, str) or table_tier not in ("default", "large"):
        raise err("tier", f"must be 'default' or 'large', got {quote(table_tier)}")
    if table_tier == "large" and tier != "large":
        return []
    seed = spec.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise err("seed", f"expected a non-negative integer, got {quote(seed)}")
    shapes = spec.get("shapes")
    if not isinstance(shapes, list) or not shapes or not all(
        isinstance(s, list) and len(s) == 3 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in s) for s in shapes
    ):
        raise err("shapes", f"expected a non-empty list of [N, D, K] positive integers, got {quote(shapes)}")
    regimes = spec.get("regimes", ["normal"])
    if not isinstance(regimes, list) or not regimes:
        raise err("regimes", f"expected a non-empty list of regime names, got {quote(regimes)}")
    bad = [r for r in regimes if not isinstance(r, str) or r not in REGIMES]
    if bad:
        raise err("regimes", f"unknown regime(s) {quote(bad)}; known: {', '.join(REGIMES)}")
    reductions = spec.get("reductions", ["sum", "mean"])
    if not isinstance(reductions, list) or not reductions or any(not isinstance(r, str) or r not in ("sum", "mean") for r in reductions):
        raise err("reductions", f"expected a non-empty list of 'sum'/'mean', got {quote(reductions)}")
    steps_list = spec.get("steps", [1])
    if not isinstance(steps_list, list) or not steps_list or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in steps_list
    ):
        raise err("steps", f"expected a non-empty list of positive integers, got {quote(steps_list)}")
    dtypes = spec.get("dtypes", list(DTYPES))
    if not isinstance(dtypes, list) or not dtypes or any(not isinstance(d, str) or d not in DTYPES for d in dtypes):
        raise err("dtypes", f"expected a non-empty list of {DTYPES}, got {quote(dtypes)}")
    lr_raw = spec.get("lr", "0.01")
    if isinstance(lr_raw, float | int | str | Decimal) and not isinstance(lr_raw, bool):
        lr = exact_number(lr_raw, "lr", lambda key, detail: err("lr", detail))
    else:
        raise err("lr", f"expected a number, got {quote(lr_raw)}")
    if not isinstance(lr, Fraction) or lr <= 0:
        raise err("lr", f"must be a positive finite number, got {quote(lr_raw)}")
    extra_tags = spec.get("tags", [])
    if not isinstance(extra_tags, list) or not all(isinstance(t, str) for t in extra_tags):
        raise err("tags", f"expected a list of strings, got {quote(extra_tags)}")
    description = spec.get("description", "")
    if not isinstance(description, str):
        raise err("description", f"expected a string, got {quote(description)}")
    for list_key, items in (("shapes", [tuple(x) for x in shapes]), ("regimes", regimes), ("reductions", reductions),
                            ("steps", steps_list)):
        seen_counts = Counter(items)
        twice = sorted(repr(list(x) if isinstance(x, tuple) else x) for x, c in seen_counts.items() if c > 1)
        if twice:  # each repeat would make a duplicate id
            raise err(list_key, f"lists {quote(', '.join(twice))} more than once")
    distinct = {(n, d, k) for n, d, k in shapes}
    def shape_err(shape: tuple[int, int, int]) -> Callable[[str, str], CaseFileError]:
        return lambda key, detail: err("steps" if key == "steps" else "shapes", f"shape {list(shape)}: {detail}")

    for (n, d, k), st in itertools.product(sorted(distinct), sorted(set(steps_list))):
        check_size(lim, n, d, k, st, shape_err((n, d, k)))
    total = len(set(regimes)) * sum(elements(n, d, k) for n, d, k in distinct)
    if total > 4 * lim.max_elements:
        raise LimitError(f"the table's arrays hold {total:,} numbers together, over 4 x the limit of {lim.max_elements:,}; "
                         "raise it with --max-elements", path=path, case_id=label, key="shapes")
    tags = ["generated", *(["large"] if table_tier == "large" else []), *extra_tags]
    out = []
    made: dict[tuple[str, int, int, int], dict[str, np.ndarray]] = {}
    for shape, regime, red, st in itertools.product(shapes, regimes, reductions, steps_list):
        n, d, k = shape
        key = (regime, n, d, k)
        if key not in made:
            made[key] = _values(regime, np.random.default_rng([seed, zlib.crc32(f"{regime}/{n}/{d}/{k}".encode())]), n, d, k)
        v = made[key]
        cid = f"gen-{name}-{regime}-n{n}-d{d}-k{k}-{red}-s{st}"
        out.append(Generated(cid, v, lr, st, red, dtypes, [*tags, regime], path,
                             f"generated: {regime} values, seed {seed}" + (f"; {description}" if description else "")))
    return out
