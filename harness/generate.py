"""Deterministic generated cases from ``[[generate]]`` tables.

A table gives a seed, lists of shapes, value regimes, reductions and steps;
the generator takes their product and makes one case per combination with a
readable, stable id::

    gen-{name}-{regime}-n{N}-d{D}-k{K}-{reduction}-s{steps}

Values come from ``numpy.random.default_rng([seed, i])`` for the i-th
combination, so a case never depends on which others were generated.

Keys: ``name`` (str), ``seed`` (int), ``shapes`` (list of [N, D, K]),
``regimes`` (list of names below), ``reductions`` (default both), ``steps``
(list of ints, default [1]), ``lr`` (default "0.01"), ``dtypes`` (default all
four), ``tier`` ("default" or "large"; large tables run only with ``--tier large``),
``tags``.

Regimes:

- ``normal``: standard normal X, W, b, y;
- ``huge`` / ``tiny``: normal values scaled by 2**60 / 2**-60 (beyond float16's range);
- ``mixed``: each entry scaled by 2**e with e uniform in [-20, 20];
- ``near-zero-residual``: y = X W + b rounded to float16 so that it is exact in
  every dtype, plus noise of 2**-20: the gradient cancels heavily;
- ``zeros``: all-zero X, W, b, y (gradients must be exactly zero);
- ``integers``: small integers (every product and sum exact in float32 for small N);
- ``subnormal``: magnitudes around 2**-1060 (float64 subnormals; zero in the other dtypes).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from .cases import Case, case_from_arrays
from .errors import CaseFileError
from .floats import DTYPES, FLOAT16, round_to_format

REGIMES = ("normal", "huge", "tiny", "mixed", "near-zero-residual", "zeros", "integers", "subnormal")
GENERATE_KEYS = {"name", "seed", "shapes", "regimes", "reductions", "steps", "lr", "dtypes", "tier", "tags", "description"}


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
        X = round_to_format(normal(n, d), FLOAT16)
        W = round_to_format(normal(d, k), FLOAT16)
        b = round_to_format(normal(k), FLOAT16)
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


def expand_generate_table(spec: Mapping[str, Any], *, path: str, index: int, tier: str = "default") -> list[Case]:
    """Expand one ``[[generate]]`` table into cases.

    Args:
        spec: the table.
        path: the file (for messages).
        index: position of the table in the file (for messages).
        tier: ``"default"`` expands default-tier tables only; ``"large"`` expands both.

    Raises:
        CaseFileError: naming the file, the table and the key.
    """
    name = spec.get("name", f"table{index + 1}")
    label = f"[[generate]] {name}"

    def err(key: str, detail: str) -> CaseFileError:
        return CaseFileError(detail, path=path, case_id=label, key=key)

    unknown = sorted(set(spec) - GENERATE_KEYS)
    if unknown:
        raise err(unknown[0], f"unknown key(s) {unknown}; allowed: {sorted(GENERATE_KEYS)}")
    table_tier = spec.get("tier", "default")
    if table_tier not in ("default", "large"):
        raise err("tier", f"must be 'default' or 'large', got {table_tier!r}")
    if table_tier == "large" and tier != "large":
        return []
    seed = spec.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise err("seed", f"expected a non-negative integer, got {seed!r}")
    shapes = spec.get("shapes")
    if not isinstance(shapes, list) or not shapes or not all(
        isinstance(s, list) and len(s) == 3 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in s) for s in shapes
    ):
        raise err("shapes", f"expected a non-empty list of [N, D, K] positive integers, got {shapes!r}")
    regimes = spec.get("regimes", ["normal"])
    bad = [r for r in regimes if r not in REGIMES] if isinstance(regimes, list) else [regimes]
    if bad:
        raise err("regimes", f"unknown regime(s) {bad}; known: {', '.join(REGIMES)}")
    reductions = spec.get("reductions", ["sum", "mean"])
    if not isinstance(reductions, list) or any(r not in ("sum", "mean") for r in reductions):
        raise err("reductions", f"expected a list of 'sum'/'mean', got {reductions!r}")
    steps_list = spec.get("steps", [1])
    if not isinstance(steps_list, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in steps_list):
        raise err("steps", f"expected a list of positive integers, got {steps_list!r}")
    dtypes = spec.get("dtypes", list(DTYPES))
    if not isinstance(dtypes, list) or any(d not in DTYPES for d in dtypes):
        raise err("dtypes", f"expected a list of {DTYPES}, got {dtypes!r}")
    try:
        from decimal import Decimal
        from fractions import Fraction

        lr = Fraction(Decimal(str(spec.get("lr", "0.01"))))
    except Exception:
        raise err("lr", f"expected a number, got {spec.get('lr')!r}") from None
    if lr <= 0:
        raise err("lr", f"must be positive, got {spec.get('lr')!r}")
    tags = ["generated", *spec.get("tags", [])]
    out = []
    for i, (shape, regime, red, st) in enumerate(itertools.product(shapes, regimes, reductions, steps_list)):
        n, d, k = shape
        rng = np.random.default_rng([seed, i])
        v = _values(regime, rng, n, d, k)
        cid = f"gen-{name}-{regime}-n{n}-d{d}-k{k}-{red}-s{st}"
        out.append(case_from_arrays(cid, v["X"], v["y"], v["W"], v["b"], lr=lr, steps=st, reduction=red,
                                    dtypes=dtypes, tags=[*tags, regime], source=path,
                                    description=f"generated: {regime} values, seed {seed}, combination {i}"))
    return out
