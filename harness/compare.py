"""Per-element comparison of a computed quantity with its exact value.

For each element: ``abs_error = |c - e|``, the ULP error in the dtype, bits of
error, and the ratio of the error to the rigorous and to the expected bound
(see :mod:`harness.bounds`). Element verdicts (:data:`harness.verdicts.ELEMENT_VERDICTS`):

- ``agree``: error within the expected bound (or zero);
- ``suspect``: above the expected bound, within the rigorous one;
- ``disagree``: above the rigorous bound (impossible for a correct evaluation),
  and every non-finite element that no correct evaluation produces: ``inf``
  where no intermediate of a correct evaluation leaves the range, ``NaN``
  where no correct evaluation forms ``inf - inf`` or ``0 * inf``. These count
  in the statistics (``max_abs_error`` and ``bound_ratio`` are then ``inf``);
- ``overflow``: a non-finite element that a correct evaluation can produce
  (``inf`` where the exact value or an intermediate of some correct evaluation
  order leaves the range, *of a sign* some correct evaluation produces: the loss
  is never ``-inf``; ``NaN`` where ``inf - inf`` or ``0 * inf`` is possible).
  These are left out of the statistics. A finite element whose exact value is
  beyond float64's range errs by at least ``2**970``: ``disagree`` unless the
  rigorous bound is that large (then ``suspect``).

A finite element is always graded against its bounds, even where overflow was
possible. The quantity's verdict is the worst element's, in the order of
:data:`harness.verdicts.ELEMENT_VERDICTS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .floats import FloatFormat, bits_of_error, ulp_error
from .verdicts import ELEMENT_VERDICTS

F64 = npt.NDArray[np.float64]

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
        computed_at_worst, exact_at_worst: the computed value and the exact value
            (rounded to float64) at the worst element.
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
    computed_at_worst: float = 0.0
    exact_at_worst: float = 0.0


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
    inf_allowed: npt.ArrayLike,
    fmt: FloatFormat,
    nan_allowed: npt.ArrayLike | None = None,
    posinf_allowed: npt.ArrayLike | None = None,
    neginf_allowed: npt.ArrayLike | None = None,
    finite_impossible: npt.ArrayLike | None = None,
) -> Comparison:
    """Compare ``computed`` against the exact ``exact_hi + exact_lo``.

    Args:
        computed: the implementation's values as float64 (exact conversions of
            its dtype), any shape.
        exact_hi, exact_lo: exact values as an unevaluated double-double, same shape.
        rigorous, expected: per-element absolute error bounds, same shape.
        inf_allowed: per-element bool: some correct evaluation forms an intermediate
            beyond the range (:attr:`harness.bounds.StepBounds.inf_allowed`); an
            exact value beyond the range always allows ``inf``.
        fmt: the dtype computed in (ULPs are counted in it).
        nan_allowed: per-element bool: a correct evaluation can form ``inf - inf``
            or ``0 * inf`` (:attr:`harness.bounds.StepBounds.nan_allowed`); None = nowhere.
        posinf_allowed, neginf_allowed: per-element bool: ``+inf`` (``-inf``) is a correct
            answer (:attr:`harness.bounds.StepBounds.posinf_allowed`); None = ``inf_allowed``.
            An infinity of a sign no correct evaluation produces is ``disagree``.
        finite_impossible: per-element bool: the exact value is beyond float64 by more than
            the rigorous bound (:attr:`harness.bounds.StepBounds.finite_impossible`): a finite
            result there is ``disagree``.

    Returns:
        a :class:`Comparison`.
    """
    c = np.asarray(computed, dtype=np.float64)
    hi = np.broadcast_to(np.asarray(exact_hi, dtype=np.float64), c.shape)
    lo = np.broadcast_to(np.asarray(exact_lo, dtype=np.float64), c.shape)
    rig = np.broadcast_to(np.asarray(rigorous, dtype=np.float64), c.shape)
    exp = np.broadcast_to(np.asarray(expected, dtype=np.float64), c.shape)
    inf_any = np.broadcast_to(np.asarray(inf_allowed, dtype=bool), c.shape)
    pos_ok = inf_any if posinf_allowed is None else np.broadcast_to(np.asarray(posinf_allowed, dtype=bool), c.shape)
    neg_ok = inf_any if neginf_allowed is None else np.broadcast_to(np.asarray(neginf_allowed, dtype=bool), c.shape)
    # an exact value beyond the range allows the infinity of its own sign
    pos_ok = pos_ok | (hi > fmt.max_finite)
    neg_ok = neg_ok | (hi < -fmt.max_finite)
    inf_ok = np.where(c > 0, pos_ok, neg_ok)
    nan_ok = np.zeros(c.shape, dtype=bool) if nan_allowed is None else np.broadcast_to(np.asarray(nan_allowed, dtype=bool), c.shape)
    finite_c = np.isfinite(c)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs((c - hi) - lo)
    err = np.where(finite_c & np.isfinite(hi), err, np.inf)
    err = np.where((c == hi) & (lo == 0), 0.0, err)
    ulps = ulp_error(c, hi, lo, fmt)
    # a non-finite result a correct evaluation can produce, or a finite one whose exact
    # value float64 cannot hold (no error to measure): not graded against the bounds
    # (a finite result whose exact value float64 cannot hold is graded: its error is
    # at least 2**970, the distance from the overflow threshold to the largest double)
    overflowed = (np.isinf(c) & inf_ok) | (np.isnan(c) & nan_ok)
    rr = _ratio(err, rig)
    beyond = finite_c & ~np.isfinite(hi)
    if beyond.any():
        # error >= 2**970: above any finite bound below it; within a larger or infinite
        # bound nothing is known (no error measurable): graded suspect there, not agree
        imposs = rig < 2.0**970
        if finite_impossible is not None:
            imposs = imposs | np.broadcast_to(np.asarray(finite_impossible, dtype=bool), c.shape)
        rr = np.where(beyond, np.where(imposs, np.inf, 1.0), rr)
    er = _ratio(err, exp)
    names = list(ELEMENT_VERDICTS)
    iv = {v: i for i, v in enumerate(names)}
    er = np.where(beyond, np.inf, er)
    verdicts = np.where(er <= 1.0, iv["agree"], np.where(rr <= 1.0, iv["suspect"], iv["disagree"]))
    verdicts = np.where(overflowed, iv["overflow"], verdicts)
    counts = {name: int(np.sum(verdicts == i)) for i, name in enumerate(names)}
    worst_v = int(verdicts.max()) if verdicts.size else 0
    judged = ~overflowed
    if c.size:
        key_rr = np.where(overflowed, -1.0, rr)
        order = np.lexsort((np.nan_to_num(ulps.ravel(), posinf=np.finfo(float).max), key_rr.ravel()))
        flat_worst = int(order[-1])
        worst_index = tuple(int(i) for i in np.unravel_index(flat_worst, c.shape))
    else:
        worst_index = ()
    if not c.size:
        return Comparison(verdict="agree", counts={}, size=0, max_abs_error=0.0, max_ulp_error=0.0, bits_of_error=0.0,
                          bound_ratio=0.0, expected_ratio=0.0, worst_index=(), rigorous_at_worst=0.0,
                          expected_at_worst=0.0, ulp=ulps)
    max_ulp = float(np.max(np.where(judged, ulps, 0.0)))
    return Comparison(
        verdict=names[worst_v],
        counts={k: v for k, v in counts.items() if v},
        size=int(c.size),
        max_abs_error=float(np.max(np.where(judged, err, 0.0))),
        max_ulp_error=max_ulp,
        bits_of_error=float(bits_of_error(max_ulp)),
        bound_ratio=float(np.max(np.where(judged, rr, 0.0))),
        expected_ratio=float(np.max(np.where(judged, er, 0.0))),
        worst_index=worst_index,
        rigorous_at_worst=float(rig[worst_index]),
        expected_at_worst=float(exp[worst_index]),
        ulp=ulps,
        abs_error_at_worst=float(err[worst_index]),
        ulp_error_at_worst=float(ulps[worst_index]),
        computed_at_worst=float(c[worst_index]),
        exact_at_worst=float(hi[worst_index]),
    )


@dataclass
class Drift:
    """How far a computed array is from the exact trajectory (the result of exact steps from the start).

    Attributes:
        abs_error: the largest ``|computed - exact|`` (0 for an empty array).
        ulp_error: the largest error in ULPs of ``fmt`` (0 for an empty array).
    """

    abs_error: float
    ulp_error: float


def drift(computed: F64, exact_hi: F64, exact_lo: F64, fmt: FloatFormat) -> Drift:
    """The drift of ``computed`` (float64, any shape) from the exact trajectory given as the
    unevaluated sums ``exact_hi + exact_lo`` (same shape); overflow and NaN are not errors here."""
    with np.errstate(all="ignore"):
        err = np.abs((computed - exact_hi) - exact_lo)
        dul = ulp_error(computed, exact_hi, exact_lo, fmt)
    return Drift(float(err.max()) if err.size else 0.0, float(dul.max()) if dul.size else 0.0)
