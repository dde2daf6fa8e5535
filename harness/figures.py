"""How to show a record's error figures so that they never contradict its verdict.

The verdict is made of one measure: the worst error divided by the rigorous
bound (``bound_ratio``; above 1 is ``disagree``) and by the expected bound
(``expected_ratio``; above 1 is ``suspect``). Every view (the assert message,
the terminal summary, the report's matrix) leads with that measure.

ULPs and bits of error are relative measures: they count representable values
between the exact and the computed value. They mean something only where the
exact value is a normal number well away from zero. Where the exact value is
below the dtype's smallest normal, or the error is graded against a bound
larger than the value itself (cancellation: the bound is absolute, and a
correct result may have no correct digit), a count of ULPs is astronomic while
the error is far inside its bound: the views then say so instead of showing it.
"""

from __future__ import annotations

from typing import Any

from .floats import FORMATS, FloatFormat, get_format
from .verdicts import record_float

#: The reasons :func:`ulp_caveat` gives.
BELOW_NORMAL = "ULPs not meaningful: exact value below the dtype's smallest normal"
ABSOLUTE_BOUND = "ULPs not meaningful: the bound exceeds the exact value (cancellation): error far inside an absolute bound"
NEAR_ZERO = "ULPs not meaningful: an element's exact value is near zero: error far inside an absolute bound"


#: dtype -> (its format, smallest normal, precision - 1): what :func:`ulp_caveat` reads of :func:`get_format`'s answer,
#: read once per dtype (``min_normal`` is a property); an entry is used only while ``FORMATS`` still holds that format.
_LIMITS: dict[str, tuple[FloatFormat, float, int]] = {}


def _limits(dtype: Any) -> tuple[float, int] | None:
    """``(min_normal, precision - 1)`` of ``dtype``'s format, None for a dtype :func:`get_format` does not know."""
    hit = _LIMITS.get(dtype) if type(dtype) is str else None
    if hit is not None and FORMATS.get(dtype) is hit[0]:
        return hit[1], hit[2]
    try:
        fmt = get_format(dtype)
    except KeyError:
        return None
    if type(dtype) is str:
        _LIMITS[dtype] = (fmt, fmt.min_normal, fmt.precision - 1)
    return fmt.min_normal, fmt.precision - 1


def ulp_caveat(rec: Any) -> str | None:
    """Why the ULP and bits-of-error figures of ``rec`` say nothing (None when they mean something).

    - the exact value at the worst element is below the dtype's smallest normal (or zero);
    - the rigorous bound there is at least the exact value (the error is graded
      against an absolute bound: cancellation);
    - the record is within its rigorous bound yet some element is off by half
      its value or more (``bits_of_error >= precision - 1``): that element's exact
      value is near zero and its error far inside the absolute bound.
    """
    if getattr(rec, "quantity", "*") == "*":
        return None
    bits = rec.bits_of_error
    if bits is None or rec.max_abs_error == 0:
        return None  # (an error of 0: the computed values are exact, and 0 ULPs says exactly that)
    limits = _limits(rec.dtype)
    if limits is None:
        return None
    exact = record_float(rec.exact)
    if exact is not None:
        exact = abs(exact)
        if exact < limits[0]:
            return BELOW_NORMAL
        bound = record_float(rec.rigorous_bound)
        if bound is not None and bound >= exact:
            return ABSOLUTE_BOUND
    ratio = rec.bound_ratio
    if ratio is not None and ratio <= 1.0 and bits >= limits[1]:
        return NEAR_ZERO
    return None


def meaningful_bits(rec: Any) -> float | None:
    """``rec.bits_of_error`` where it means something (see :func:`ulp_caveat`), else None."""
    return caveat_and_bits(rec)[1]


def caveat_and_bits(rec: Any) -> tuple[str | None, float | None]:
    """``(ulp_caveat(rec), meaningful_bits(rec))`` with the caveat worked out once."""
    why = ulp_caveat(rec)
    return why, (None if why else record_float(rec.bits_of_error))


def ratio_text(x: float | None) -> str:
    """``0.0123``, ``inf`` or ``-``."""
    return "-" if x is None else f"{x:.3g}"


def worst_ratio_text(rec: Any) -> str:
    """``rec``'s worst error / rigorous bound: ``0.0123``, or ``inf (the bound is 0: every correct evaluation is exact
    here)`` where an exact reduction's bound of 0 is exceeded (:func:`harness.repeatedsums.exact_reductions`)."""
    text = ratio_text(rec.bound_ratio)
    if text == "inf" and record_float(getattr(rec, "rigorous_bound", None)) == 0:
        text += " (the bound is 0: every correct evaluation is exact here)"
    return text


def lead(rec: Any) -> str:
    """The measure the verdict is made of: ``error / rigorous bound 0.0123, error / expected bound 0.456``."""
    return f"error / rigorous bound {worst_ratio_text(rec)}, error / expected bound {ratio_text(rec.expected_ratio)}"


def ulp_text(rec: Any) -> str:
    """The ULP figures with their meaning: ``"3 ULPs, 2 bits of error"`` or the reason they mean nothing."""
    why = ulp_caveat(rec)
    if why:
        return why
    u = record_float(rec.max_ulp_error)
    b = record_float(rec.bits_of_error)
    return f"{'-' if u is None else f'{u:.4g}'} ULPs, {'-' if b is None else f'{b:.2f}'} bits of error"
