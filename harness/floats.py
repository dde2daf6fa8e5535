"""Binary floating-point formats: unit roundoff, rounding, ULP distance.

Every format is IEEE-754-style binary with precision ``p`` (significand bits,
the implicit bit included), minimum normal exponent ``emin`` and maximum
exponent ``emax``. A nonzero finite value is ``m * 2**(e - p + 1)`` with integer
``|m| < 2**p`` and ``e >= emin``.

Definitions (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
SIAM 2002, §2.1-2.2; Muller et al., *Handbook of Floating-Point Arithmetic*,
2nd ed., §2.6):

- **unit roundoff** ``u = 2**-p``: with round-to-nearest, ``fl(x) = x(1 + d)``,
  ``|d| <= u``, for ``x`` in the normal range.
- **underflow quantum** ``eta = 2**(emin - p)``: half the subnormal spacing, the
  largest absolute error of rounding a product into the subnormal range.
- **ULP error** between a computed ``c`` and an exact ``e``: the number of
  representable values of the format between them, counted fractionally,
  i.e. ``|ord(c) - ord(e)|`` where ``ord`` maps the format's finite values to
  consecutive integers (0 maps to 0, the smallest subnormal to 1) and is
  linear between them. Within one binade this is ``|c - e| / ulp(e)``.
- **bits of error** ``log2(1 + ulp_error)``: 0 for an exact result, 1 for one ULP.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format.

    Attributes:
        name: the dtype's name as the harness spells it (``"float32"``, ...).
        precision: significand bits ``p``, implicit bit included.
        emin: exponent of the smallest positive normal number, ``2**emin``.
        emax: exponent of the largest binade.
    """

    name: str
    precision: int
    emin: int
    emax: int

    @functools.cached_property
    def unit_roundoff(self) -> float:
        """``u = 2**-p`` (Higham 2002, eq. 2.5)."""
        return 2.0 ** -self.precision

    @functools.cached_property
    def underflow_quantum(self) -> float:
        """``eta = 2**(emin - p)``, half the spacing of the subnormals.

        For float64 itself ``2**-1075`` is not a float64 (it rounds to 0), so the
        smallest float64 subnormal ``2**-1074 = 2 eta`` is returned: an upper
        bound of ``eta``, which keeps every bound that uses it valid.
        """
        return max(2.0 ** (self.emin - self.precision), math.ulp(0.0))

    @functools.cached_property
    def max_finite(self) -> float:
        """Largest finite value, ``(2 - 2**(1-p)) * 2**emax`` (computed once per format)."""
        return float((2 - Fraction(2) ** (1 - self.precision)) * Fraction(2) ** self.emax)

    @functools.cached_property
    def min_normal(self) -> float:
        """Smallest positive normal value, ``2**emin``."""
        return 2.0**self.emin

    @functools.cached_property
    def min_subnormal(self) -> float:
        """Smallest positive subnormal value, ``2**(emin - p + 1)``."""
        return 2.0 ** (self.emin - self.precision + 1)

    def gamma(self, n: int | float) -> float:
        """The bound ``|prod_i (1 + d_i)^(+-1) - 1| <= (1 - u)^-n - 1`` of ``n`` roundings, ``|d_i| <= u``.

        Each factor lies within ``[1 - u, 1 / (1 - u)]``, so the product lies within ``[(1 - u)^n, (1 - u)^-n]`` for
        every ``n``. Higham's ``gamma_n = n u / (1 - n u)`` (Higham 2002, Lemma 3.1) is its first-order form, at least
        as large where ``n u < 1`` (Bernoulli: ``(1 - u)^n >= 1 - n u``) and infinite from ``n u = 1`` on, where this
        stays finite: a sum of 4,096 terms in float16 or of 256 in bfloat16 still has a worst-case bound (until
        2026-12-07 the harness used ``gamma_n`` and graded those by the expected bound alone: a float16 gradient 4,096
        times too large was only ``suspect``). It composes as ``gamma_n`` does: ``(1 + g_a)(1 + g_b) = 1 + g_{a+b}``,
        ``u + g_n <= g_{n+1}``, ``c g_n <= g_{cn}``.

        Returns:
            ``expm1(-n log1p(-u))`` in float64 times ``1 + 2**-48`` (each of its three operations errs by at most an
            ULP or so of float64: the margin makes the result an upper bound); 0 for ``n <= 0``; ``inf`` where it
            exceeds float64's range.
        """
        if n <= 0:
            return 0.0
        try:
            return math.expm1(-n * math.log1p(-self.unit_roundoff)) * _GAMMA_MARGIN
        except OverflowError:
            return math.inf


#: :meth:`FloatFormat.gamma`'s margin over the rounding errors of its float64 evaluation.
_GAMMA_MARGIN = 1.0 + 2.0**-48

FLOAT64 = FloatFormat("float64", 53, -1022, 1023)
FLOAT32 = FloatFormat("float32", 24, -126, 127)
FLOAT16 = FloatFormat("float16", 11, -14, 15)
BFLOAT16 = FloatFormat("bfloat16", 8, -126, 127)
#: TensorFloat-32: float32's range with a 10-bit fraction (NVIDIA Ampere and later),
#: used for the *inputs* of float32 matmuls when TF32 is enabled.
TF32 = FloatFormat("tf32", 11, -126, 127)

FORMATS: dict[str, FloatFormat] = {f.name: f for f in (FLOAT64, FLOAT32, FLOAT16, BFLOAT16, TF32)}

#: The dtypes an implementation can be asked to compute in (TF32 is a matmul mode, not a dtype).
DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")


def get_format(name: str) -> FloatFormat:
    """Return the format called ``name``.

    Raises:
        KeyError: with the known names, if ``name`` is not one of them.
    """
    try:
        return FORMATS[name]
    except KeyError:
        raise KeyError(f"unknown dtype {name!r}; known: {', '.join(FORMATS)}") from None


def round_to_format(values: npt.ArrayLike, fmt: FloatFormat) -> FloatArray:
    """Round float64 values to ``fmt``, round-to-nearest ties-to-even.

    This is what ``torch.tensor(values, dtype=...)`` and ``ndarray.astype`` do
    when a float64 array is converted (the same double rounding a user's
    Python floats go through). Values beyond the largest finite value become
    ``±inf``; NaN stays NaN.

    Args:
        values: any array-like of float64 values.
        fmt: the target format.

    Returns:
        float64 array of the same shape whose entries are exactly representable in ``fmt``.
    """
    x = np.asarray(values, dtype=np.float64)
    if fmt.precision == 53 and fmt.emin == -1022:
        return x.copy()
    if fmt.precision == 24 and fmt.emin == -126 and fmt.max_finite == float(np.finfo(np.float32).max):
        with np.errstate(over="ignore"):  # IEEE 754's conversion: the same rounding, in one pass
            return x.astype(np.float32).astype(np.float64)
    out = x.copy()
    finite = np.isfinite(x) & (x != 0)
    xf = x[finite]
    _, e = np.frexp(xf)  # xf = m * 2**e, 0.5 <= |m| < 1, so exponent is e - 1
    quantum_exp = np.maximum(e - 1, fmt.emin) - fmt.precision + 1
    rounded = np.ldexp(np.rint(np.ldexp(xf, -quantum_exp)), quantum_exp)
    rounded[np.abs(rounded) > fmt.max_finite] = np.inf * np.sign(rounded[np.abs(rounded) > fmt.max_finite])
    out[finite] = rounded
    return out


def float_bits(x: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """``(lsb, msb)``: the exponents of the lowest and highest set bits of each float64 value
    (``x = sum of bits 2**lsb .. 2**msb``); ``(+inf, -inf)`` for 0, ``(-inf, +inf)`` for inf/NaN."""
    x = np.asarray(x, dtype=np.float64)
    ax = np.abs(x)
    fin = np.isfinite(ax) & (ax > 0)
    if fin.all():  # (every value finite and nonzero: the same values as below, without the selections)
        m, e = np.frexp(ax)
        M = np.ldexp(m, 53).astype(np.int64)
        return np.asarray(e - 53 + np.log2((M & -M).astype(np.float64))), np.asarray(e - 1.0)
    m, e = np.frexp(np.where(fin, ax, 1.0))
    M = np.ldexp(m, 53).astype(np.int64)  # the 53-bit significand, an integer
    tz = np.log2((M & -M).astype(np.float64))
    lsb = np.where(fin, e - 53 + tz, np.where(ax == 0, np.inf, -np.inf))
    msb = np.where(fin, e - 1.0, np.where(ax == 0, -np.inf, np.inf))
    return np.asarray(lsb), np.asarray(msb)


def lowest_exponent(fmt: FloatFormat, flush_to_zero: bool) -> int:
    """The exponent of the finest grid of ``fmt``'s floats: the smallest subnormal's (``emin - p + 1``), or with
    flush-to-zero the smallest normal number's (``emin``)."""
    return fmt.emin if flush_to_zero else fmt.emin - fmt.precision + 1


def sums_exactly(S: npt.ArrayLike, q: npt.ArrayLike, fmt: FloatFormat, flush_to_zero: bool) -> npt.NDArray[np.bool_]:
    """Where a sum of exact terms, all multiples of ``2**q`` with ``sum |t| = S``, is exact in ``fmt`` in any order:
    every partial sum is a multiple of ``2**q`` of magnitude at most ``S``, a float of the dtype when
    ``S <= (2**p - 1) 2**q``, ``2**q`` is not below :func:`lowest_exponent`'s grid and ``S`` is finite in ``fmt``.
    Element-wise (broadcast); ``q = +inf`` (no nonzero term) passes the grid test."""
    with np.errstate(over="ignore", invalid="ignore"):
        return sums_exactly_no_errstate(S, q, fmt, flush_to_zero)


def sums_exactly_no_errstate(S: npt.ArrayLike, q: npt.ArrayLike, fmt: FloatFormat, flush_to_zero: bool) -> npt.NDArray[np.bool_]:
    """The same values as :func:`sums_exactly`, for a caller already inside ``np.errstate(over="ignore", invalid="ignore")`` (or one that ignores
    more): it enters no errstate of its own (each costs about 3 us; helper-195). Public so that the step's graders
    can call it inside their own errstate."""
    S = np.asarray(S, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    fits = S <= (2.0**fmt.precision - 1) * np.exp2(np.minimum(q, 2000.0))
    return np.asarray(fits & (q >= lowest_exponent(fmt, flush_to_zero)) & (S <= fmt.max_finite))


def round_fraction(value: Fraction, fmt: FloatFormat) -> Fraction | float:
    """Round an exact rational to ``fmt`` (nearest, ties to even), exactly.

    Returns:
        the representable value as a Fraction, or ``±inf`` (float) on overflow.
    """
    if value == 0:
        return Fraction(0)
    sign = -1 if value < 0 else 1
    a = abs(value)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    q = max(e, fmt.emin) - fmt.precision + 1
    scaled = a / Fraction(2) ** q
    m = round(scaled)  # Python's round on Fraction is ties-to-even
    r = m * Fraction(2) ** q
    if r > Fraction(fmt.max_finite):
        return sign * float("inf")
    return sign * r


def _ord_parts(x: FloatArray, fmt: FloatFormat) -> tuple[npt.NDArray[np.int64], FloatArray, npt.NDArray[np.int64]]:
    """Binade index and offset of ``|x|``: ``ord(|x|) = binade * 2**(p-1) + offset``; and the exponent
    of ``|x|``'s quantum (``qexp``: the offset is ``|x| / 2**qexp`` less the binade's first value)."""
    a = np.abs(x)
    _, e = np.frexp(a)
    e = e.astype(np.int64) - 1  # a = m * 2**e with 1 <= m < 2
    normal = a >= fmt.min_normal
    qexp = np.where(normal, e, fmt.emin) - fmt.precision + 1
    half = 2.0 ** (fmt.precision - 1)
    offset = np.ldexp(a, -qexp) - np.where(normal, half, 0.0)
    binade = np.where(normal, e - fmt.emin + 1, 0)
    return binade, offset, qexp


def ulp_error(computed: npt.ArrayLike, exact_hi: npt.ArrayLike, exact_lo: npt.ArrayLike | None, fmt: FloatFormat) -> FloatArray:
    """ULP error of ``computed`` against the exact value ``exact_hi + exact_lo``.

    Args:
        computed: float64 array of values representable in ``fmt`` (the implementation's output).
        exact_hi, exact_lo: the exact value as an unevaluated double-double
            (``exact_lo`` may be ``None``); same shape as ``computed``. Where ``exact_hi``
            is 0 the exact value is ``exact_lo`` (its sign and binade); a low part that
            takes the value across a binade boundary is counted in the spacing beyond it.
        fmt: the dtype the implementation computed in; ULPs are counted in it.

    Returns:
        float64 array: the number of ``fmt`` values between computed and exact,
        fractional (see module docstring). ``inf`` where either side is not finite
        or beyond ``fmt``'s range, ``0`` where both are equal.
    """
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite and out-of-range elements: inf, set below
        return ulp_error_no_errstate(computed, exact_hi, exact_lo, fmt)


def ulp_error_no_errstate(computed: npt.ArrayLike, exact_hi: npt.ArrayLike, exact_lo: npt.ArrayLike | None, fmt: FloatFormat) -> FloatArray:
    """The same values as :func:`ulp_error`, for a caller already inside ``np.errstate(invalid="ignore", over="ignore")``
    (or one that ignores more): it enters no errstate of its own (each costs about 3 us; helper-195); non-finite and
    out-of-range elements are inf, set below."""
    c = np.asarray(computed, dtype=np.float64)
    hi = np.asarray(exact_hi, dtype=np.float64)
    lo = np.zeros_like(hi) if exact_lo is None else np.asarray(exact_lo, dtype=np.float64)
    # a zero high part: the exact value is the low part alone (its sign, its binade)
    if hi.shape != lo.shape:
        hi, lo = np.broadcast_arrays(hi, lo)
    hi_zero = hi == 0
    if hi_zero.any():
        hi, lo = np.where(hi_zero, lo, hi), np.where(hi_zero, 0.0, lo)
    if c.shape == hi.shape:  # (element-wise: c's and hi's parts from one pass over both, the same values)
        both = np.array((c, hi))
        fits = np.abs(both) <= fmt.max_finite  # (False for inf and NaN: not finite)
        ok = fits[0] & fits[1]
        (cb, eb), (co, eo), (_, eq) = _ord_parts(both, fmt)
    else:
        ok = (np.abs(c) <= fmt.max_finite) & (np.abs(hi) <= fmt.max_finite)
        cb, co, _ = _ord_parts(c, fmt)
        eb, eo, eq = _ord_parts(hi, fmt)  # eq: the exponent of hi's quantum
    half = 2.0 ** (fmt.precision - 1)
    # the low part moves the exact value within (or just across) hi's binade: in units of hi's
    # quantum, positive away from zero
    sign_hi = np.sign(hi)
    lo_q = np.ldexp(lo * sign_hi, -eq)
    eo = eo + lo_q
    # across the binade's lower end (hi a power of two, lo towards zero) the quantum is half as
    # large below a normal binade above the smallest one; across its upper end twice as large
    # (subnormals and the smallest normal binade share one quantum)
    below = (eo < 0) & (eb >= 2)
    above = (eo > half) & (eb >= 1)
    if (below | above).any():  # (one test of both)
        eo = np.where(below, 2 * eo, np.where(above, half + (eo - half) / 2, eo))
    same_sign = (np.sign(c) * sign_hi >= 0)
    # same sign: difference of ords, computed binade part first to keep precision
    diff_same = np.abs((cb - eb).astype(np.float64) * half + (co - eo))
    # opposite signs: ords add up
    diff_opp = np.abs((cb + eb).astype(np.float64) * half + co + eo)
    dist = np.where(same_sign, diff_same, diff_opp)
    exact_equal = (c == hi) & (lo == 0)
    dist = np.where(exact_equal, 0.0, dist)
    if ok.all():
        return dist
    out = np.full(np.broadcast(c, hi).shape, np.inf)
    out[ok] = dist[ok]
    return out


def inexact_in_float64(a: npt.NDArray[Any], x: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Where ``x`` (the array ``a`` converted to float64) differs from ``a``: the one rule for values float64 cannot hold
    exactly (a case's arrays, the oracle's inputs, a step's results). All False for the dtypes that convert exactly
    (bool, float16, float32, float64); integers and long doubles converted back to ``a``'s dtype and compared (NaN
    matching NaN; integers at or above the type's range never equal); plug-in float types (dtype kind ``"V"``,
    ``ml_dtypes.bfloat16``) likewise; object entries compared one by one with the Python floats (Python compares ints,
    floats, Fractions and Decimals exactly; NumPy scalars by their exact values; an entry that cannot be compared
    counts as inexact).

    Returns:
        bool array of ``a``'s shape."""
    kind = a.dtype.kind
    if not (kind in "iuOV" or (kind == "f" and a.dtype.itemsize > 8)):
        return np.zeros(a.shape, dtype=bool)
    if kind == "O":
        out = np.zeros(a.shape, dtype=bool)
        for i, (v, f) in enumerate(zip(a.flat, x.ravel().tolist(), strict=True)):
            try:  # NumPy scalars by their exact values: NumPy compares int64 with float64 in float64
                if isinstance(v, np.integer):
                    v = int(v)
                elif isinstance(v, np.floating) and np.isfinite(v):
                    v = Fraction(*v.as_integer_ratio())
                same = bool(v == f) or (f != f and bool(v != v))
            except Exception:  # noqa: BLE001 - an object that cannot be compared is not known to be exact
                same = False
            out.flat[i] = not same
        return out
    with np.errstate(invalid="ignore", over="ignore"):
        back = x.astype(a.dtype)
        differ = back != a
        if kind in "fV":
            differ &= ~(np.isnan(x) & (a != a))
        else:  # above the integer type's range the cast back is undefined: rounded up past its largest value
            differ |= x >= 2.0 ** (8 * a.dtype.itemsize - (1 if kind == "i" else 0))
    return np.asarray(differ, dtype=bool)


def bits_of_error(ulps: npt.ArrayLike) -> FloatArray:
    """``log2(1 + ulp_error)``: 0 when exact, 1 at one ULP, ``inf`` for ``inf``."""
    return np.log2(1.0 + np.asarray(ulps, dtype=np.float64))


def _floor_log10(p: int, q: int) -> int:
    """``floor(log10(p / q))`` of positive integers ``p``, ``q``, exactly, from the bit lengths and integer
    comparisons (no decimal string of ``p``: Python refuses ``str()`` of an int over 4,300 digits)."""
    bits = p.bit_length() - q.bit_length()  # p / q in (2**(bits - 1), 2**(bits + 1))
    e = math.floor(bits * math.log10(2))
    while _pow10_above(e, p, q):
        e -= 1
    while not _pow10_above(e + 1, p, q):
        e += 1
    return e


def _pow10_above(e: int, p: int, q: int) -> bool:
    """Whether ``10**e > p / q`` (``p``, ``q`` positive integers), in integers."""
    return 10**e * q > p if e >= 0 else q > p * 10**-e


def decimal_string(value: Fraction | float, digits: int = 20) -> str:
    """Exact rational as a decimal string with ``digits`` significant digits.

    Exact (no trailing ellipsis) when the decimal expansion terminates within the
    digits; otherwise correctly rounded (half to even, as ``round`` of a
    :class:`fractions.Fraction`) and followed by ``"..."``. Any magnitude:
    a rational with thousands of digits is written with an exponent (``1.5e+5000``).
    Integer arithmetic on the numerator and denominator throughout (a few
    microseconds, against about 30 in :class:`fractions.Fraction` arithmetic).
    """
    if isinstance(value, float):
        if not math.isfinite(value):
            return repr(value)
        p, q = value.as_integer_ratio()
    else:
        p, q = value.numerator, value.denominator
    if p == 0:
        return "0"
    sign = "-" if p < 0 else ""
    p = abs(p)
    exp10 = _floor_log10(p, q)
    m, exact = _scaled_round(p, q, digits - 1 - exp10)
    if m >= 10**digits:  # rounding carried into a new digit (then the value is not exact at these digits)
        exp10 += 1
        m, exact = _scaled_round(p, q, digits - 1 - exp10)
        exact = False
    s = str(m).rstrip("0") if exact else str(m)
    point = exp10 + 1
    if -6 < exp10 < digits:
        if point <= 0:
            body = "0." + "0" * (-point) + s
        elif point >= len(s):
            body = s + "0" * (point - len(s))
        else:
            body = s[:point] + "." + s[point:]
    else:
        body = (s[0] + ("." + s[1:] if len(s) > 1 else "")) + f"e{exp10:+d}"
    return sign + body + ("" if exact else "...")


def _scaled_round(p: int, q: int, e: int) -> tuple[int, bool]:
    """``p / q * 10**e`` rounded to the nearest integer, ties to even, and whether it was an integer already."""
    num, den = (p * 10**e, q) if e >= 0 else (p, q * 10**-e)
    m, r = divmod(num, den)
    if 2 * r > den or (2 * r == den and m & 1):
        m += 1
    return m, r == 0
