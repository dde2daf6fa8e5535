"""Per-element comparison of a computed quantity with its exact value.

For each element: ``abs_error = |c - e|``, the ULP error in the dtype, bits of
error, and the ratio of the error to the rigorous and to the expected bound
(see :mod:`harness.bounds`). Element verdicts:

- ``agree``: error within the expected bound (or zero);
- ``suspect``: above the expected bound, within the rigorous one;
- ``disagree``: above the rigorous bound (impossible for a correct evaluation);
- ``overflow``: the exact value or an intermediate leaves the dtype's range and
  the computed value is not finite (``inf`` is then the right answer), or the
  exact value itself is out of range.

The quantity's verdict is the worst element's (disagree > suspect > overflow > agree).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .floats import FloatFormat, bits_of_error, ulp_error

F64 = npt.NDArray[np.float64]

ELEMENT_SEVERITY = {"agree": 0, "overflow": 1, "suspect": 2, "disagree": 3}


@dataclass
class Comparison:
    """Outcome of comparing one quantity.

    Attributes:
        verdict: the worst element verdict.
        counts: number of elements per element verdict.
        size: number of elements.
        max_abs_error, max_ulp_error, bits_of_error: worst values over the elements
            (``bits_of_error`` is ``log2(1 + max_ulp_error)``).
        bound_ratio, expected_ratio: worst ``abs_error / bound`` (``inf`` if an
            element has error above a zero bound, ``0`` if every error is zero).
        worst_index: index (tuple) of the worst element: largest rigorous-bound
            ratio, then largest ULP error.
        rigorous_at_worst, expected_at_worst: the bounds at that element.
        abs_error_at_worst, ulp_error_at_worst: its absolute and ULP error (the
            ``max_*`` fields may come from other elements).
        ulp: the per-element ULP errors (for tests and plots).
    """

    verdict: str
    counts: dict[str, int]
    size: int
    max_abs_error: float
    max_ulp_error: float
    bits_of_error: float
    bound_ratio: float
    expected_ratio: float
    worst_index: tuple[int, ...]
    rigorous_at_worst: float
    expected_at_worst: float
    ulp: F64
    abs_error_at_worst: float = 0.0
    ulp_error_at_worst: float = 0.0


def _ratio(err: F64, bound: F64) -> F64:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = err / bound
    r = np.where(err == 0, 0.0, r)
    return np.where(np.isnan(r), np.inf, r)


def compare(
    computed: npt.ArrayLike,
    exact_hi: npt.ArrayLike,
    exact_lo: npt.ArrayLike,
    rigorous: npt.ArrayLike,
    expected: npt.ArrayLike,
    may_overflow: npt.ArrayLike,
    fmt: FloatFormat,
) -> Comparison:
    """Compare ``computed`` against the exact ``exact_hi + exact_lo``.

    Args:
        computed: the implementation's values as float64 (exact conversions of
            its dtype), any shape.
        exact_hi, exact_lo: exact values as an unevaluated double-double, same shape.
        rigorous, expected: per-element absolute error bounds, same shape.
        may_overflow: per-element bool: exact value or an intermediate can leave the range.
        fmt: the dtype computed in (ULPs are counted in it).

    Returns:
        a :class:`Comparison`.
    """
    c = np.asarray(computed, dtype=np.float64)
    hi = np.broadcast_to(np.asarray(exact_hi, dtype=np.float64), c.shape)
    lo = np.broadcast_to(np.asarray(exact_lo, dtype=np.float64), c.shape)
    rig = np.broadcast_to(np.asarray(rigorous, dtype=np.float64), c.shape)
    exp = np.broadcast_to(np.asarray(expected, dtype=np.float64), c.shape)
    ovf = np.broadcast_to(np.asarray(may_overflow, dtype=bool), c.shape)
    finite_c = np.isfinite(c)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs((c - hi) - lo)
    err = np.where(finite_c & np.isfinite(hi), err, np.inf)
    err = np.where((c == hi) & (lo == 0), 0.0, err)
    ulps = ulp_error(c, hi, lo, fmt)
    exact_out = ~np.isfinite(hi) | (np.abs(hi) > fmt.max_finite)
    overflowed = ovf & (~finite_c | exact_out)
    rr = _ratio(err, rig)
    er = _ratio(err, exp)
    verdicts = np.where(er <= 1.0, 0, np.where(rr <= 1.0, 2, 3))
    verdicts = np.where(overflowed, 1, verdicts)
    names = ["agree", "overflow", "suspect", "disagree"]
    counts = {name: int(np.sum(verdicts == i)) for i, name in enumerate(names)}
    worst_v = int(verdicts.max()) if verdicts.size else 0
    if c.size:
        key_rr = np.where(overflowed, -1.0, rr)
        order = np.lexsort((np.nan_to_num(ulps.ravel(), posinf=np.finfo(float).max), key_rr.ravel()))
        flat_worst = int(order[-1])
        worst_index = tuple(int(i) for i in np.unravel_index(flat_worst, c.shape))
    else:
        worst_index = ()
    judged = ~overflowed
    max_ulp = float(np.max(np.where(judged, ulps, 0.0))) if c.size else 0.0
    return Comparison(
        verdict=names[worst_v],
        counts={k: v for k, v in counts.items() if v},
        size=int(c.size),
        max_abs_error=float(np.max(np.where(judged, err, 0.0))) if c.size else 0.0,
        max_ulp_error=max_ulp,
        bits_of_error=float(bits_of_error(max_ulp)),
        bound_ratio=float(np.max(np.where(judged, rr, 0.0))) if c.size else 0.0,
        expected_ratio=float(np.max(np.where(judged, er, 0.0))) if c.size else 0.0,
        worst_index=worst_index,
        rigorous_at_worst=float(rig[worst_index]) if c.size else 0.0,
        expected_at_worst=float(exp[worst_index]) if c.size else 0.0,
        ulp=ulps,
        abs_error_at_worst=float(err[worst_index]) if c.size else 0.0,
        ulp_error_at_worst=float(ulps[worst_index]) if c.size else 0.0,
    )
