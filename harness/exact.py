"""Exact rational matrices as integer arrays with one common rational scale.

A :class:`ScaledInts` holds ``value = ints * scale`` where ``ints`` is a NumPy
object array of Python integers and ``scale`` a ``Fraction``. Binary floats
are dyadic rationals, so a float array converts exactly with ``scale = 2**q``
(``q`` the smallest exponent of a last significand bit). Matrix products,
sums and element-wise products are then plain integer arithmetic, which NumPy
runs over object arrays without any rounding and without the gcd work of
``Fraction`` arithmetic: exact, and fast enough for N = 10^5 rows.

Nothing here rounds. Conversion out (:meth:`ScaledInts.to_fractions`,
:meth:`ScaledInts.to_hi_lo`) is the only place where a value becomes a float.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from fractions import Fraction
from math import gcd, lcm
from typing import Any

import numpy as np
import numpy.typing as npt

from .floats import inexact_in_float64

ObjArray = npt.NDArray[Any]


#: Arrays of at most this many elements are converted element by element in Python (:func:`_int_scale_of`,
#: :meth:`ScaledInts.to_hi_lo`'s dyadic path): the same operations on the same values (``math.frexp`` and
#: ``math.ldexp`` are C's, as NumPy's are), without the fixed cost of a dozen NumPy calls (the two paths cost the
#: same at about 32 elements: a small case's inputs and the oracle's K-vectors and scalars take this one).
SMALL_ARRAY = 32


@functools.lru_cache(maxsize=4096)
def _power_of_two(q: int) -> Fraction:
    """``Fraction(2) ** q``, kept per exponent (Fractions are immutable: shared; a float64 array's scale is one of
    about 2,100 of them)."""
    return Fraction(2) ** q


def _int_scale_of(values: npt.NDArray[np.float64]) -> tuple[ObjArray, Fraction]:
    """Exact ``(ints, 2**q)`` for a float64 array: ``q`` the least exponent of a last bit of a 53-bit significand
    among the non-zero values, ``ints`` each significand shifted left by its exponent less ``q`` (``(zeros, 1)``
    where every value is 0).

    Raises:
        ValueError: for a NaN or an infinity (no exact value; a :class:`FloatInts` built without
            :meth:`ScaledInts.from_floats`' check reaches here when its integers are first read)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size <= SMALL_ARRAY:
        return _int_scale_of_small(x)
    if not np.isfinite(x).all():
        raise ValueError("cannot represent NaN or inf exactly")
    mant, exp = np.frexp(x)  # x = mant * 2**exp, 0.5 <= |mant| < 1
    m53 = np.ldexp(mant, 53).astype(np.int64)  # exact integer significand
    e = exp.astype(np.int64) - 53
    nz = m53 != 0
    if not nz.any():
        return np.zeros(x.shape, dtype=object), Fraction(1)
    q = int(e[nz].min())
    shifts = np.where(nz, e - q, 0)
    ints = np.empty(x.size, dtype=object)
    ints[:] = [m << s for m, s in zip(m53.ravel().tolist(), shifts.ravel().tolist(), strict=True)]
    return ints.reshape(x.shape), _power_of_two(q)


def _int_scale_of_small(x: npt.NDArray[np.float64]) -> tuple[ObjArray, Fraction]:
    """:func:`_int_scale_of` of a small array, element by element: the same significands, exponents and shifts."""
    m53: list[int] = []
    e: list[int] = []
    isfinite, frexp, ldexp = math.isfinite, math.frexp, math.ldexp  # (local names: one lookup each)
    for v in x.ravel().tolist():  # one pass: each value checked, then split (as three passes did)
        if not isfinite(v):
            raise ValueError("cannot represent NaN or inf exactly")
        mant, exp = frexp(v)  # v = mant * 2**exp, 0.5 <= |mant| < 1
        m53.append(int(ldexp(mant, 53)))  # exact integer significand
        e.append(exp - 53)
    live = [ej for mj, ej in zip(m53, e, strict=True) if mj != 0]
    if not live:
        return np.zeros(x.shape, dtype=object), Fraction(1)
    q = min(live)
    ints = np.empty(x.size, dtype=object)
    ints[:] = [m << (ej - q) if m != 0 else m for m, ej in zip(m53, e, strict=True)]
    return ints.reshape(x.shape), _power_of_two(q)


def _dyadic_hi_lo_small(ints: ObjArray, q: int, with_lo: bool = True
                        ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None] | None:
    """:meth:`ScaledInts.to_hi_lo`'s dyadic path (scale ``2**-q``) for a small array, element by element: the same
    ``hi``, ``lo`` and the same test of the normal range; None where that test fails (a value whose ``hi`` or
    nonzero ``lo`` falls below ``2**-1021`` once scaled, or a value or its scaled ``hi`` is beyond float64's range):
    the caller then takes the general path, as for a large array. ``with_lo`` False (:meth:`ScaledInts.to_float64`):
    ``hi`` alone, the same values, and ``lo`` None (neither formed nor tested; each element still read as an integer,
    so one that is not, NaN or inf, fails as it does with ``lo``): where only ``lo``'s test would fail, the general path
    gives this same ``hi`` (both the value correctly rounded: ``float(i)`` scaled exactly by ``2**-q`` within the
    normal range)."""
    his: list[float] = []
    los: list[float] = []
    ldexp = math.ldexp  # (a local name: one lookup)
    for i in ints.ravel().tolist():
        try:
            h = float(i)
            if with_lo:
                ls = ldexp(float(int(i) - int(h)), -q)  # (C's ldexp, as NumPy's; where NumPy's gives inf, this raises)
            else:
                int(i)  # (lo's read of i: an element that is not an integer, NaN or inf, fails as it does with lo)
                ls = 0.0
            hs = ldexp(h, -q)
        except OverflowError:
            return None
        if (h != 0 and abs(hs) < 2.0**-1021) or (ls != 0 and abs(ls) < 2.0**-1021):
            return None
        his.append(hs)
        los.append(ls)
    shape = ints.shape
    hi = np.array(his, dtype=np.float64).reshape(shape)
    return hi, (np.array(los, dtype=np.float64).reshape(shape) if with_lo else None)


class ScaledInts:
    """An exact rational array ``ints * scale``.

    Args:
        ints: object array of Python ``int``.
        scale: positive ``Fraction``.
    """

    __slots__ = ("ints", "scale")

    def __init__(self, ints: ObjArray, scale: Fraction) -> None:
        self.ints = ints
        self.scale = scale if type(scale) is Fraction else Fraction(scale)  # (Fractions are immutable: shared)

    # -------------------------------------------------------------- construction
    @classmethod
    def from_floats(cls, values: npt.ArrayLike) -> ScaledInts:
        """Exact value of a finite float array (float64 or narrower: float16, bfloat16, float32; integers and wider
        floats where float64 holds every value exactly).

        Raises:
            ValueError: if a value is NaN or infinite, complex, or not exactly a float64 (a long double with more
                bits, an integer above 2**53, a Fraction in an object array): converting it would round it.
        """
        a = np.asarray(values)
        if a.dtype.kind == "c":
            raise ValueError(f"cannot represent complex values (dtype {a.dtype}) as real exact values")
        x = np.asarray(a, dtype=np.float64)
        if not np.isfinite(x).all():
            raise ValueError("cannot represent NaN or inf exactly")
        if inexact_in_float64(a, x).any():
            raise ValueError(f"values of dtype {a.dtype} that float64 cannot hold exactly: converting them would round them")
        return FloatInts(x)

    @classmethod
    def from_fractions(cls, values: ObjArray) -> ScaledInts:
        """Exact value of an object array of ``Fraction`` (or ints).

        Raises:
            ValueError: if an entry is a non-finite float.
        """
        flat = [Fraction(v) for v in np.asarray(values, dtype=object).ravel()]
        shape = np.shape(values)
        den = 1
        for f in flat:
            den = lcm(den, f.denominator)
        scale = Fraction(1, den)
        ints = np.empty(len(flat), dtype=object)
        ints[:] = [f.numerator * (den // f.denominator) for f in flat]
        return cls(ints.reshape(shape), scale)

    @classmethod
    def scalar(cls, value: Fraction | int) -> ScaledInts:
        """A 0-d exact value."""
        v = Fraction(value)
        ints = np.empty((), dtype=object)
        ints[()] = v.numerator
        return cls(ints, Fraction(1, v.denominator))

    # -------------------------------------------------------------- arithmetic
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.ints))

    @property
    def T(self) -> ScaledInts:  # noqa: N802 - matrix transpose, as in NumPy
        return ScaledInts(self.ints.T, self.scale)

    def _aligned(self, other: ScaledInts) -> tuple[ObjArray, ObjArray, Fraction]:
        """Both operands over one common scale ``s`` with integer multipliers."""
        a, b = self.scale, other.scale
        an, ad, bn, bd = a.numerator, a.denominator, b.numerator, b.denominator
        g, m = gcd(an, bn), lcm(ad, bd)
        s = Fraction(g, m)  # (g and m are coprime: g's primes divide a's and b's numerators, m's their denominators)
        fa, fb = (an // g) * (m // ad), (bn // g) * (m // bd)  # a / s and b / s, integers by construction
        ia = self.ints if fa == 1 else self.ints * fa
        ib = other.ints if fb == 1 else other.ints * fb
        return ia, ib, s

    def __add__(self, other: ScaledInts) -> ScaledInts:
        ia, ib, s = self._aligned(other)
        return ScaledInts(ia + ib, s)

    def __sub__(self, other: ScaledInts) -> ScaledInts:
        ia, ib, s = self._aligned(other)
        return ScaledInts(ia - ib, s)

    def __neg__(self) -> ScaledInts:
        return ScaledInts(-self.ints, self.scale)

    def __matmul__(self, other: ScaledInts) -> ScaledInts:
        return ScaledInts(np.matmul(self.ints, other.ints), self.scale * other.scale)

    def hadamard(self, other: ScaledInts) -> ScaledInts:
        """Element-wise product (with NumPy broadcasting)."""
        return ScaledInts(self.ints * other.ints, self.scale * other.scale)

    def times(self, factor: Fraction | int) -> ScaledInts:
        """Multiply by an exact scalar (changes the scale, or the sign of the ints)."""
        f = factor if type(factor) is Fraction else Fraction(factor)  # (Fractions are immutable: the same value)
        sign = f.numerator  # (a Fraction's sign is its numerator's: the denominator is positive)
        if sign < 0:
            return ScaledInts(-self.ints, self.scale * -f)
        if sign == 0:
            return ScaledInts(np.zeros(self.shape, dtype=object), Fraction(1))
        return ScaledInts(self.ints, self.scale * f)

    def sum(self, axis: int | None = None) -> ScaledInts:
        """Exact sum (all axes when ``axis`` is None, giving a 0-d value)."""
        s = self.ints.sum(axis=axis) if self.ints.size else np.zeros((), dtype=object)
        out = np.empty(np.shape(s), dtype=object)
        out[...] = s
        return ScaledInts(out, self.scale)

    def abs(self) -> ScaledInts:
        return ScaledInts(np.abs(self.ints), self.scale)

    # -------------------------------------------------------------- conversion
    def to_fractions(self) -> ObjArray:
        """Object array of ``Fraction``, exact."""
        out = np.empty(self.ints.size, dtype=object)
        s = self.scale
        out[:] = [Fraction(int(i)) * s for i in self.ints.ravel()]
        return out.reshape(self.shape)

    def fraction_at(self, index: tuple[int, ...]) -> Fraction:
        """The exact value at ``index``."""
        s = self.scale  # (one normalizing gcd, not the two of a Fraction product)
        return Fraction(int(self.ints[index]) * s.numerator, s.denominator)

    def to_hi_lo(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Unevaluated double-double ``hi + lo`` (error at most ``2**-106`` relative
        in float64's normal range); ``±inf`` where the value exceeds float64's range.
        """
        s = self.scale
        q = s.denominator.bit_length() - 1
        flat = self.ints.ravel().tolist()  # (an object array's own elements)
        if s.numerator == 1 and s.denominator == 1 << q:
            # dyadic fast path: float(int) is correctly rounded; scaling by 2**-q is exact
            # unless the result leaves float64's normal range, which falls back below
            if self.ints.size <= SMALL_ARRAY:
                small = _dyadic_hi_lo_small(self.ints, q)
                if small is not None and small[1] is not None:  # (with lo: always an array)
                    return small[0], small[1]
            else:
                try:
                    rounded = [float(i) for i in flat]
                    hi = np.array(rounded, dtype=np.float64)
                    lo = np.array([float(int(i) - int(h)) for i, h in zip(flat, rounded, strict=True)], dtype=np.float64)
                    hi_s, lo_s = np.ldexp(hi, -q), np.ldexp(lo, -q)
                    nz = hi != 0  # before scaling: a value whose hi underflows to zero falls back below
                    small_lo = (lo_s != 0) & (np.abs(lo_s) < 2.0**-1021)
                    if np.all(np.abs(hi_s[nz]) >= 2.0**-1021) and np.isfinite(hi_s).all() and not small_lo.any():
                        return hi_s.reshape(self.shape), lo_s.reshape(self.shape)
                except OverflowError:
                    pass
        # value = i p / d; Python's int / int is correctly rounded (as float(Fraction) is, which
        # uses it), and the remainder i p / d - h = (i p h_d - h_n d) / (d h_d) with h = h_n / h_d
        # exactly: the same two roundings as float(f) and float(f - h), without Fraction objects
        p, den = s.numerator, s.denominator
        his: list[float] = []
        los: list[float] = []
        for i in flat:
            num = int(i) * p
            try:
                h = num / den
            except OverflowError:
                his.append(np.inf if num > 0 else -np.inf)
                los.append(0.0)
                continue
            his.append(h)
            hn, hd = h.as_integer_ratio()
            los.append((num * hd - hn * den) / (den * hd))
        shape = self.shape
        return np.array(his, dtype=np.float64).reshape(shape), np.array(los, dtype=np.float64).reshape(shape)

    def to_float64(self) -> npt.NDArray[np.float64]:
        """Nearest float64 to each value (``±inf`` beyond range). Correctly rounded: :meth:`to_hi_lo`'s ``hi``."""
        if type(self).to_hi_lo is ScaledInts.to_hi_lo and self.ints.size <= SMALL_ARRAY:  # (not a subclass's own)
            s = self.scale
            q = s.denominator.bit_length() - 1
            if s.numerator == 1 and s.denominator == 1 << q:
                small = _dyadic_hi_lo_small(self.ints, q, with_lo=False)
                if small is not None:
                    return small[0]
        return self.to_hi_lo()[0]


def _difference_parts(a: ScaledInts, b: ScaledInts, factor: Fraction) -> tuple[ObjArray, Fraction]:
    """``(ints, scale)`` of ``a - factor b``, exactly (:class:`Difference`)."""
    whole = a - b.times(factor)
    return whole.ints, whole.scale


class LazyScaledInts(ScaledInts):
    """A :class:`ScaledInts` whose integer array and scale are formed on first use, by ``form(*args)`` (a module-level
    function, so that the value pickles), for values that are often read only through their own cheaper views.

    Args:
        form: returns ``(ints, scale)``; args: its arguments."""

    __slots__ = ("_ints", "_scale", "_form")

    def __init__(self, form: Callable[..., tuple[ObjArray, Fraction]], *args: Any) -> None:  # noqa: D107 - see class
        self._ints: ObjArray | None = None
        self._scale: Fraction | None = None
        self._form: tuple[Callable[..., tuple[ObjArray, Fraction]], tuple[Any, ...]] | None = (form, args)

    def _build(self) -> None:
        assert self._form is not None
        form, args = self._form
        self._ints, self._scale = form(*args)
        self._form = None  # (its arguments are no longer needed for the integers)

    @property
    def ints(self) -> ObjArray:
        if self._ints is None:
            self._build()
        assert self._ints is not None
        return self._ints

    @ints.setter
    def ints(self, value: ObjArray) -> None:
        self._ints = value

    @property
    def scale(self) -> Fraction:
        if self._scale is None:
            self._build()
        assert self._scale is not None
        return self._scale

    @scale.setter
    def scale(self, value: Fraction) -> None:
        self._scale = Fraction(value)


class FloatInts(LazyScaledInts):
    """The exact value of a finite float64 array, kept as the floats: the integer array and
    its scale are built on first use (the fast oracle reads :attr:`floats` and never needs them)."""

    __slots__ = ("floats",)

    def __init__(self, floats: npt.NDArray[np.float64]) -> None:  # noqa: D107 - see class
        super().__init__(_int_scale_of, floats)
        self.floats = floats

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.floats.shape)

    def to_hi_lo(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        return self.floats.copy(), np.zeros(self.floats.shape)

    def fraction_at(self, index: tuple[int, ...]) -> Fraction:
        return Fraction(float(self.floats[index]))


class Difference(LazyScaledInts):
    """The exact value ``a - factor b``, kept as its operands: the integer array and its scale (``a - b.times(factor)``)
    are formed on first use, and :meth:`fraction_at` reads one element of each operand without forming them (a
    record that reads a few elements of a step's update never pays for the whole array)."""

    __slots__ = ("a", "b", "factor")

    def __init__(self, a: ScaledInts, b: ScaledInts, factor: Fraction) -> None:  # noqa: D107 - see class
        factor = Fraction(factor)
        super().__init__(_difference_parts, a, b, factor)
        self.a, self.b, self.factor = a, b, factor

    @property
    def shape(self) -> tuple[int, ...]:
        return self.a.shape

    def fraction_at(self, index: tuple[int, ...]) -> Fraction:
        return self.a.fraction_at(index) - self.factor * self.b.fraction_at(index)
