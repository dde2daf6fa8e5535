"""What a case may ask for, checked before any work, and the exact reading of one written number.

A case file is data from anywhere: every figure that sets the cost of a run
(elements, steps, the exact oracle's work, the size of a cited CSV file) is
checked against a limit *before* an array is built or a file is read, so that
``N = 10**9`` or ``steps = 10**9`` is refused at once, with the figure and the
option that raises the limit.

Defaults fit a 2-core machine with 24 GiB of memory:

- :data:`DEFAULT_MAX_ELEMENTS` (``--max-elements``): ``N*D + N*K + D*K + K``
  numbers per case, 10^7. The exact oracle holds each as a Python integer
  (about 40 bytes, more as products grow) in several arrays: a few GiB at the limit.
- :data:`DEFAULT_MAX_STEPS` (``--max-steps``): 10,000 SGD steps.
- :data:`DEFAULT_MAX_ORACLE_COST` (``--max-oracle-cost``): 5 * 10^8 exact
  multiply-adds for one pass of the oracle over the case's steps
  (:func:`oracle_cost`), about a minute on one core; a run makes one such pass
  per implementation and dtype (each step graded locally) and one for the trajectory.
- :data:`DEFAULT_MAX_DATA_BYTES` (``--max-data-bytes``): 64 MiB per CSV or
  TOML file.

Written numbers (:func:`exact_number`) must lie inside float64's range: a
magnitude above float64's largest finite value, or a non-zero magnitude that
rounds to 0 in float64 (below ``2**-1075``), is refused naming the key, as is
a number written with more than :data:`MAX_DIGITS` significant digits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

import numpy as np

from .errors import CaseFileError, LimitError, quote

DEFAULT_MAX_ELEMENTS = 10_000_000
DEFAULT_MAX_STEPS = 10_000
DEFAULT_MAX_ORACLE_COST = 500_000_000
DEFAULT_MAX_DATA_BYTES = 64 * 2**20
#: Significant digits a written number may have (float64 needs 17).
MAX_DIGITS = 1000
#: Highest ``polynomial_degree`` of a CSV case.
MAX_POLYNOMIAL_DEGREE = 100

ErrorFactory = Callable[[str | None, str], CaseFileError]


@dataclass(frozen=True)
class Limits:
    """The limits a load checks (see the module docstring for the defaults and their reasons)."""

    max_elements: int = DEFAULT_MAX_ELEMENTS
    max_steps: int = DEFAULT_MAX_STEPS
    max_oracle_cost: int = DEFAULT_MAX_ORACLE_COST
    max_data_bytes: int = DEFAULT_MAX_DATA_BYTES


#: No limits at all (for cases built in code, where the caller chose the sizes).
UNLIMITED = Limits(max_elements=2**63, max_steps=2**63, max_oracle_cost=2**63, max_data_bytes=2**63)


def elements(n: int, d: int, k: int) -> int:
    """Numbers in one case: ``X`` (N, D), ``y`` (N, K), ``W`` (D, K), ``b`` (K,)."""
    return n * d + n * k + d * k + k


def oracle_cost(n: int, d: int, k: int, steps: int) -> int:
    """Exact multiply-adds of the oracle over ``steps`` steps: per step ``X W`` and
    ``X^T R`` (``N*D*K`` each), the loss and ``1^T R`` (``N*K`` each) and the update (``D*K + K``)."""
    return steps * (2 * n * d * k + 2 * n * k + d * k + k)


def check_size(limits: Limits, n: int, d: int, k: int, steps: int, err: Callable[[str, str], CaseFileError]) -> None:
    """Refuse a case whose shape or steps exceed ``limits`` (call before building any array).

    Raises:
        LimitError: with the figure, the limit and the option that raises it.
    """
    def refuse(key: str, detail: str) -> LimitError:
        base = err(key, detail)
        return LimitError(base.detail, path=base.path, case_id=base.case_id, key=base.key, line=base.line)

    if steps > limits.max_steps:
        raise refuse("steps", f"{steps:,} steps exceed the limit of {limits.max_steps:,}; raise it with --max-steps")
    count = elements(n, d, k)
    if count > limits.max_elements:
        raise refuse("X", f"N={n:,}, D={d:,}, K={k:,} is {count:,} numbers, over the limit of {limits.max_elements:,}; "
                          "raise it with --max-elements")
    cost = oracle_cost(n, d, k, steps)
    if cost > limits.max_oracle_cost:
        raise refuse("steps", f"N={n:,}, D={d:,}, K={k:,} with {steps:,} steps costs the exact oracle about {cost:.3g} "
                              f"multiply-adds, over the limit of {limits.max_oracle_cost:.3g}; raise it with --max-oracle-cost")


_F64_MAX = Fraction(float(np.finfo(np.float64).max))


def _in_float64_range(value: Fraction, raw: Any, key: str | None, err: ErrorFactory) -> Fraction:
    if value == 0:
        return value
    try:
        f = float(value)
    except OverflowError:
        f = float("inf")
    if f in (float("inf"), float("-inf")) or abs(value) > _F64_MAX:
        raise err(key, f"{quote(_shown(raw))} is outside float64's range (largest finite 1.797e308); values must be finite float64 numbers")
    if f == 0.0:
        raise err(key, f"{quote(_shown(raw))} is non-zero but rounds to 0 in float64 (smallest subnormal 4.9e-324); write 0 if 0 is meant")
    return value


def _shown(raw: Any) -> Any:
    return str(raw) if isinstance(raw, Decimal) else raw


def exact_number(raw: Any, key: str | None, err: ErrorFactory) -> Fraction | float:
    """The exact value of one written number; NaN and inf are returned as floats.

    Accepts int, float, ``Decimal``, ``Fraction``, NumPy scalars (a long double's exact value, not
    float64's rounding of it) and decimal strings.

    Raises:
        CaseFileError (from ``err``): on a non-number, more than :data:`MAX_DIGITS`
            significant digits, or a finite value outside float64's range.
    """
    if isinstance(raw, bool):
        raise err(key, f"expected a number, got boolean {raw!r}")
    if isinstance(raw, Fraction):
        return _in_float64_range(raw, raw, key, err)
    if isinstance(raw, int):
        if raw.bit_length() > 1100:
            raise err(key, f"{quote(_shown(raw))} is outside float64's range (largest finite 1.797e308); values must be finite float64 numbers")
        return _in_float64_range(Fraction(raw), raw, key, err)
    if isinstance(raw, float):
        return Fraction(raw) if raw == raw and abs(raw) != float("inf") else raw
    if isinstance(raw, str | Decimal):
        if isinstance(raw, str):
            text = raw.strip()
            if len(text) > MAX_DIGITS + 20:
                raise err(key, f"expected a number of at most {MAX_DIGITS} digits, got {quote(raw)}")
            try:
                d = Decimal(text)
            except (InvalidOperation, ValueError):
                raise err(key, f"expected a number, got {quote(raw)}") from None
        else:
            d = raw
        if d.is_nan():
            return float("nan")
        if d.is_infinite():
            return float("inf") if d > 0 else float("-inf")
        if d.is_zero():
            return Fraction(0)
        if len(d.as_tuple().digits) > MAX_DIGITS:
            raise err(key, f"{quote(_shown(raw))} has more than {MAX_DIGITS} significant digits")
        exponent = d.adjusted()
        if exponent > 309 or exponent < -330:
            if exponent > 309:
                raise err(key, f"{quote(_shown(raw))} is outside float64's range (largest finite 1.797e308); values must be finite float64 numbers")
            raise err(key, f"{quote(_shown(raw))} is non-zero but rounds to 0 in float64 (smallest subnormal 4.9e-324); write 0 if 0 is meant")
        return _in_float64_range(Fraction(d), raw, key, err)
    if isinstance(raw, np.integer):
        return exact_number(int(raw), key, err)
    if isinstance(raw, np.floating):
        # exactly, from the type's own ratio: ``.item()`` of a long double is a long double again
        # (an endless recursion here before), and ``float()`` of it would round it
        if not np.isfinite(raw):
            return float(raw)
        try:
            num, den = raw.as_integer_ratio()
        except (AttributeError, OverflowError, ValueError, TypeError):
            raise err(key, f"cannot read {type(raw).__name__} {quote(raw)} exactly; give a float, an int, "
                           "a Fraction or decimal text") from None
        return _in_float64_range(Fraction(num, den), raw, key, err)
    raise err(key, f"expected a number, got {type(raw).__name__} {quote(raw)}")
