"""Per-element comparison of a computed quantity with its exact value.

For each element: ``abs_error = |c - e|``, the ULP error in the dtype, bits of
error, and the ratio of the error to the rigorous and to the expected bound
(see :mod:`harness.bounds`). Element verdicts (:data:`harness.verdicts.ELEMENT_VERDICTS`):

- ``agree``: error within the expected bound and the rigorous one (or zero);
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
  These are left out of the statistics. A ``NaN`` that only an order summing the
  terms by sign forms (``nan_allowed`` but not ``nan_typical``:
  :attr:`harness.bounds.StepBounds.nan_typical`) is ``suspect`` instead, left out
  of the statistics too (no error is measured; its worst-element figures say so). A finite element whose exact value is
  beyond float64's range errs by at least ``2**970``: ``disagree`` unless the
  rigorous bound is that large (then ``suspect``).
- a finite element below its ``lower_limit`` (the least value any correct evaluation gives: the loss's floor,
  :class:`harness.bounds.LossFloor`) is ``disagree`` whatever its two-sided bounds say, ranked as the worst.

A finite element is always graded against its bounds, even where overflow was
possible. The quantity's verdict is the worst element's, in the order of
:data:`harness.verdicts.ELEMENT_VERDICTS`.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .floats import FloatFormat, bits_of_error, ulp_error, ulp_error_no_errstate
from .verdicts import ELEMENT_VERDICTS, failing_verdicts

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
        codes: the per-element verdicts, as indices into :data:`harness.verdicts.ELEMENT_VERDICTS`
            (:meth:`elements` reads them).
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
    codes: npt.NDArray[np.int64] | None = None

    def elements(self, verdicts: Iterable[str]) -> npt.NDArray[np.bool_]:
        """Bool array of the quantity's shape: the elements whose verdict is one of ``verdicts``."""
        if self.codes is None:
            raise ValueError("this comparison kept no per-element verdicts")
        wanted = [_IV[v] for v in verdicts if v in _IV]
        return np.isin(self.codes, wanted)


def _ratio(err: F64, bound: F64) -> F64:
    """``err / bound`` per element: 0 where ``err`` is 0, inf where the quotient is NaN or overflows (a huge error
    over a tiny bound). Called inside ``np.errstate(divide="ignore", invalid="ignore", over="ignore")`` (its
    callers' own: the quotient's warnings are not wanted)."""
    r = err / bound
    r = np.where(err == 0, 0.0, r)
    return np.where(np.isnan(r), np.inf, r)


_NAMES = list(ELEMENT_VERDICTS)
#: float64's largest finite value (what :func:`numpy.nan_to_num` puts for an infinity).
_F64_MAX = float(np.finfo(np.float64).max)


def _ulp_sort_key(ulps: F64) -> F64:
    """The ULP errors as the worst element's sort key: ``np.nan_to_num(ulps, posinf=_F64_MAX)`` (NaN read as 0,
    +-inf as +-float64's largest value), in four ufunc calls instead of its passes."""
    return np.maximum(np.minimum(np.where(np.isnan(ulps), 0.0, ulps), _F64_MAX), -_F64_MAX)
_IV = {v: i for i, v in enumerate(_NAMES)}


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """``tuple(int(j) for j in np.unravel_index(flat, shape))`` for an index within the (C-ordered) shape, in
    Python integers."""
    out = []
    for n in reversed(shape):
        flat, j = divmod(flat, n)
        out.append(j)
    return tuple(reversed(out))


def _grade_elements(
    c: F64, hi: F64, lo: F64, rig: F64, exp: F64, pos_ok: npt.NDArray[np.bool_], neg_ok: npt.NDArray[np.bool_],
    nan_ok: npt.NDArray[np.bool_], finite_impossible: npt.NDArray[np.bool_] | None, fmt: FloatFormat,
    typical: Callable[[], tuple[npt.NDArray[np.bool_] | None, ...]] | None = None,
) -> tuple[F64, F64, F64, F64, npt.NDArray[np.int64], npt.NDArray[np.bool_], F64]:
    """The element-wise part of :func:`compare` (arrays of one shape): ``(abs_error, ulp_error,
    rigorous ratio, expected ratio, element verdict codes, overflowed, worst-element key)``. Every operation
    is per element, so a concatenation of several quantities grades each element as alone. ``typical``: returns
    ``(nan_typ, pos_typ, neg_typ)``, called only where an element is not finite (None: all three None).
    ``nan_typ``: where NaN is typical-possible (None: wherever ``nan_ok``); a NaN allowed by ``nan_ok`` alone is
    ``suspect``. ``pos_typ``, ``neg_typ``: the same for ``+inf`` and ``-inf`` (None: wherever ``pos_ok`` /
    ``neg_ok``)."""
    if bool(np.isfinite(c).all()) and bool(np.isfinite(hi).all()):
        return _grade_finite_elements(c, hi, lo, rig, exp, fmt)
    nan_typ, pos_typ, neg_typ = typical() if typical is not None else (None, None, None)
    # an exact value beyond the range allows the infinity of its own sign
    beyond_pos, beyond_neg = hi > fmt.max_finite, hi < -fmt.max_finite
    pos_ok = pos_ok | beyond_pos
    neg_ok = neg_ok | beyond_neg
    inf_ok = np.where(c > 0, pos_ok, neg_ok)
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
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # (the ratios: _ratio)
        rr = _ratio(err, rig)
        er = _ratio(err, exp)
    beyond = finite_c & ~np.isfinite(hi)
    if beyond.any():
        # error >= 2**970: above any finite bound below it; within a larger or infinite
        # bound nothing is known (no error measurable): graded suspect there, not agree
        imposs = rig < 2.0**970
        if finite_impossible is not None:
            imposs = imposs | finite_impossible
        rr = np.where(beyond, np.where(imposs, np.inf, 1.0), rr)
    iv = _IV
    er = np.where(beyond, np.inf, er)
    # above the rigorous bound first: disagree even where an expected bound exceeds the rigorous one (a plug-in's
    # error model may give one; the built-in expected bounds are capped by the rigorous ones)
    verdicts = np.where(rr <= 1.0, np.where(er <= 1.0, iv["agree"], iv["suspect"]), iv["disagree"])
    verdicts = np.where(overflowed, iv["overflow"], verdicts)
    # the worst element: the largest rigorous ratio (non-finite results a correct evaluation can produce: -1);
    # a NaN or an infinity that only a sign-sorted order forms is suspect, ranked as a ratio of 1 (above agreeing and suspect
    # finite elements but for a tie, below any disagreeing one), so that the record names it
    key_rr = np.where(overflowed, -1.0, rr)
    atypical = np.zeros(c.shape, dtype=bool)
    if nan_typ is not None:
        atypical = np.isnan(c) & nan_ok & ~nan_typ
    if pos_typ is not None or neg_typ is not None:
        # an infinity only the terms summed by sign form (the exact value beyond the range allows its own sign)
        pt = pos_ok if pos_typ is None else pos_typ | beyond_pos
        nt = neg_ok if neg_typ is None else neg_typ | beyond_neg
        atypical = atypical | (np.isinf(c) & inf_ok & ~np.where(c > 0, pt, nt))
    if atypical.any():
        verdicts = np.where(atypical, iv["suspect"], verdicts)
        key_rr = np.where(atypical, 1.0, key_rr)
    return err, ulps, rr, er, verdicts, overflowed, key_rr


def _below_lower_limit(c: F64, lower: float, verdicts: npt.NDArray[np.int64], key_rr: F64
                        ) -> tuple[npt.NDArray[np.int64], F64]:
    """``(verdicts, key_rr)`` with every finite element of ``c`` below ``lower`` made ``disagree`` and ranked first
    (key ``inf``): no correct evaluation gives a value below its lower limit."""
    below = np.isfinite(c) & (c < lower)
    if not below.any():
        return verdicts, key_rr
    return np.where(below, _IV["disagree"], verdicts), np.where(below, np.inf, key_rr)


def _grade_finite_elements(c: F64, hi: F64, lo: F64, rig: F64, exp: F64, fmt: FloatFormat,
                           ) -> tuple[F64, F64, F64, F64, npt.NDArray[np.int64], npt.NDArray[np.bool_], F64]:
    """:func:`_grade_elements` where every computed and exact (high part) value is finite, its same expressions
    without the selections that every element then passes: no result overflowed (nothing to allow or to rank
    below the others), no exact value lies beyond float64 (``beyond`` is False everywhere), no NaN is computed."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # (the error's, and the ratios': _ratio)
        err = np.abs((c - hi) - lo)
        err = np.where((c == hi) & (lo == 0), 0.0, err)
        ulps = ulp_error_no_errstate(c, hi, lo, fmt)  # (inside this errstate: ulp_error's own, and more)
        ratios = _ratio(err, np.array((rig, exp)))  # (element-wise: both ratios in one pass, the same values)
        rr, er = ratios[0, ...], ratios[1, ...]  # (arrays, 0-d ones too)
    iv = _IV
    verdicts = np.where(rr <= 1.0, np.where(er <= 1.0, iv["agree"], iv["suspect"]), iv["disagree"])
    return err, ulps, rr, er, verdicts, np.zeros(verdicts.shape, dtype=bool), rr.copy()


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
    nan_typical: npt.ArrayLike | None = None,
    posinf_typical: npt.ArrayLike | None = None,
    neginf_typical: npt.ArrayLike | None = None,
    lower_limit: float | None = None,
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
        nan_typical: per-element bool: NaN is possible in the orders libraries sum in
            (:attr:`harness.bounds.StepBounds.nan_typical`); a NaN allowed by ``nan_allowed`` but not here
            (only the terms summed by sign give it) is ``suspect``. None = ``nan_allowed``.
        posinf_typical, neginf_typical: the same for ``+inf`` and ``-inf``
            (:attr:`harness.bounds.StepBounds.posinf_typical`); an infinity allowed by ``posinf_allowed``
            (``neginf_allowed``) but not here is ``suspect``. None = the allowed mask.
        lower_limit: the least value a correct evaluation gives (one value for every element; the loss's floor,
            :meth:`harness.bounds.LossFloor.lower_limit`): a finite element below it is ``disagree``. None = none.

    Returns:
        a :class:`Comparison`.

    Raises:
        ValueError: naming the argument, for an exact value, a bound or a mask of another shape than ``computed``
            (one value, 0-d, holds for every element), non-real values, or a negative bound.
    """
    c = _real(computed, "computed")
    shape = c.shape
    hi = _flat(exact_hi, shape, np.float64, "exact_hi").reshape(shape)
    lo = _flat(exact_lo, shape, np.float64, "exact_lo").reshape(shape)
    rig = _flat(rigorous, shape, np.float64, "rigorous").reshape(shape)
    exp = _flat(expected, shape, np.float64, "expected").reshape(shape)
    inf_any = _flat(inf_allowed, shape, bool, "inf_allowed").reshape(shape)
    pos_ok = inf_any if posinf_allowed is None else _flat(posinf_allowed, shape, bool, "posinf_allowed").reshape(shape)
    neg_ok = inf_any if neginf_allowed is None else _flat(neginf_allowed, shape, bool, "neginf_allowed").reshape(shape)
    nan_ok = np.zeros(shape, dtype=bool) if nan_allowed is None else _flat(nan_allowed, shape, bool, "nan_allowed").reshape(shape)
    imp = None if finite_impossible is None else _flat(finite_impossible, shape, bool, "finite_impossible").reshape(shape)
    typ = None if nan_typical is None else _flat(nan_typical, shape, bool, "nan_typical").reshape(shape)
    ptyp = None if posinf_typical is None else _flat(posinf_typical, shape, bool, "posinf_typical").reshape(shape)
    ntyp = None if neginf_typical is None else _flat(neginf_typical, shape, bool, "neginf_typical").reshape(shape)
    _nonnegative(rig, exp)
    err, ulps, rr, er, verdicts, overflowed, key_rr = _grade_elements(c, hi, lo, rig, exp, pos_ok, neg_ok, nan_ok, imp, fmt,
                                                                      lambda: (typ, ptyp, ntyp))
    if lower_limit is not None:
        verdicts, key_rr = _below_lower_limit(c, lower_limit, verdicts, key_rr)
    names = _NAMES
    counts = {name: int(np.sum(verdicts == i)) for i, name in enumerate(names)}
    worst_v = int(verdicts.max()) if verdicts.size else 0
    judged = ~overflowed
    if c.size:
        order = np.lexsort((_ulp_sort_key(ulps.ravel()), key_rr.ravel()))
        flat_worst = int(order[-1])
        worst_index = tuple(int(i) for i in np.unravel_index(flat_worst, c.shape))
    else:
        worst_index = ()
    if not c.size:
        return Comparison(verdict="agree", counts={}, size=0, max_abs_error=0.0, max_ulp_error=0.0, bits_of_error=0.0,
                          bound_ratio=0.0, expected_ratio=0.0, worst_index=(), rigorous_at_worst=0.0,
                          expected_at_worst=0.0, ulp=ulps, codes=verdicts.reshape(shape))
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
        codes=verdicts.reshape(shape),
    )


#: The keyword arguments of :func:`compare` a :func:`compare_many` item may give (``computed``,
#: ``exact_hi``, ``exact_lo``, ``rigorous``, ``expected`` and ``inf_allowed`` are required).
COMPARE_KEYS = ("computed", "exact_hi", "exact_lo", "rigorous", "expected", "inf_allowed", "nan_allowed",
                "posinf_allowed", "neginf_allowed", "finite_impossible", "nan_typical", "posinf_typical", "neginf_typical",
                "lower_limit")


def _real(value: npt.ArrayLike, key: str) -> F64:
    """``value`` as a float64 array; complex, string and object values refused (a cast would drop or parse them)."""
    kind = np.asarray(value).dtype.kind
    if kind not in "fiub":
        raise ValueError(f"compare: {key} must hold real numbers, got dtype kind {kind!r}")
    return np.asarray(value, dtype=np.float64)


def _flat(value: npt.ArrayLike, shape: tuple[int, ...], dtype: type, key: str) -> npt.NDArray[Any]:
    """``value`` flattened, of ``shape`` exactly, or one value (0-d) that holds for every element.

    Raises:
        ValueError: naming ``key``, for another shape (no broadcasting: a ``(3,)`` exact value against ``(3, 3)``
            computed values would grade each row against it) or non-real values."""
    if type(value) is np.ndarray and value.dtype == dtype and value.shape == shape:  # already so (the usual case)
        return value.reshape(-1)
    a: npt.NDArray[Any] = _real(value, key) if dtype is np.float64 else np.asarray(value, dtype=dtype)
    if a.shape != shape:
        if a.ndim != 0:
            raise ValueError(f"compare: {key} has shape {a.shape}, the computed values {shape}")
        a = np.broadcast_to(a, shape)
    return a.reshape(-1)


def _nonnegative(rig: F64, exp: F64) -> None:
    """Raise ValueError if a bound holds a negative value (an error divided by it would be a negative ratio: within
    the bound, whatever the error). NaN is allowed: graded as no bound (``disagree`` unless the error is 0)."""
    if not bool((np.fmin(rig, exp) < 0).any()):  # (fmin: the smaller of the two, a NaN ignored: one test of both)
        return
    for key, a in (("rigorous", rig), ("expected", exp)):
        if bool((a < 0).any()):
            raise ValueError(f"compare: the {key} bound holds a negative value: an error bound is at least 0")


#: :func:`compare_many` keeps the layouts of at most this many elements in all (:func:`_kept_segments`): a large
#: step's layout (about 30 MB at 10^6 parameters) is formed each time instead of held for the rest of the run.
_KEPT_LAYOUT_ELEMENTS = 4096


def _segments(sizes: tuple[int, ...]) -> tuple[npt.NDArray[np.int64], ...]:
    """:func:`compare_many`'s layout of items of ``sizes`` elements concatenated (shape-only, read-only):
    ``(ends, starts, seg, seg * len(_NAMES))``, each item's end and start, and each element's item (int64).
    Small layouts are kept (:func:`_kept_segments`)."""
    if sum(sizes) <= _KEPT_LAYOUT_ELEMENTS:
        return _kept_segments(sizes)
    return _layout(sizes)


@functools.lru_cache(maxsize=256)
def _kept_segments(sizes: tuple[int, ...]) -> tuple[npt.NDArray[np.int64], ...]:
    """:func:`_layout`, kept per ``sizes`` (at most 256 layouts of at most :data:`_KEPT_LAYOUT_ELEMENTS` each)."""
    return _layout(sizes)


def _layout(sizes: tuple[int, ...]) -> tuple[npt.NDArray[np.int64], ...]:
    """:func:`_segments`' arrays, formed (read-only: a kept layout is shared by every later call)."""
    ends = np.cumsum(sizes)
    starts = ends - np.asarray(sizes)
    seg = np.repeat(np.arange(len(sizes)), sizes)
    out = (ends, starts, seg, seg * len(_NAMES))
    for a in out:
        a.flags.writeable = False
    return out


def compare_many(items: Sequence[Mapping[str, Any]], fmt: FloatFormat) -> list[Comparison]:
    """``[compare(**item, fmt=fmt) for item in items]``, field for field, in one pass.

    The quantities of a step are small in a small case, where :func:`compare`'s cost is
    its few dozen NumPy calls, not their work: here the elements of every item are
    concatenated, graded once by the same element-wise code (:func:`_grade_elements`),
    and reduced per item (segment maxima, a segment-keyed stable lexsort for the worst
    element, a keyed bincount for the counts), which picks the same values and the same
    worst index as :func:`compare` on each item alone. An item with no elements makes
    the whole call fall back to :func:`compare` per item.

    Args:
        items: the keyword arguments of :func:`compare` (:data:`COMPARE_KEYS`), one mapping per quantity.
        fmt: the dtype computed in (ULPs are counted in it).

    Returns:
        one :class:`Comparison` per item, in order.

    Raises:
        ValueError: as :func:`compare`.
    """
    shapes = [v.shape if type(v) is np.ndarray else np.shape(v) for v in (it["computed"] for it in items)]
    sizes = [math.prod(shp) for shp in shapes]
    if not items or min(sizes) == 0:
        return [compare(**it, fmt=fmt) for it in items]

    total = sum(sizes)

    def cat(keys: Sequence[tuple[str, str | None]], dtype: type, fill: bool = False) -> npt.NDArray[Any]:
        """The items' values of each key (its default key's where it has none; else ``fill``), each key's
        concatenated in one row of the result (one concatenation for all the keys)."""
        parts = []
        for key, default in keys:
            values = [it.get(key) for it in items]  # (each item's value read once)
            if default is None and all(v is None for v in values):  # (every part np.full(shp, fill): at once)
                parts.append(np.full(total, fill, dtype=dtype))
                continue
            for it, shp, v in zip(items, shapes, values, strict=True):
                if v is None:
                    v = it[default] if default is not None else np.full(shp, fill, dtype=dtype)
                # (an array of the dtype and shape already, the usual case, is what _flat checks first: flattened by
                # the concatenation below, in C order, as its reshape(-1) would)
                parts.append(v if type(v) is np.ndarray and v.dtype == dtype and v.shape == shp else _flat(v, shp, dtype, key))
        return np.concatenate(parts, axis=None).reshape(len(keys), total)

    c, hi, lo, rig, exp = cat((("computed", None), ("exact_hi", None), ("exact_lo", None), ("rigorous", None),
                               ("expected", None)), np.float64)
    pos_ok, neg_ok, nan_ok, imp = cat((("posinf_allowed", "inf_allowed"), ("neginf_allowed", "inf_allowed"),
                                       ("nan_allowed", None), ("finite_impossible", None)), bool)
    def typical_of(key: str, allowed: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_] | None:
        """The items' ``key`` masks concatenated (an item without one: its ``allowed``); None where no item has one."""
        if all(it.get(key) is None for it in items):
            return None
        first = itertools.accumulate(sizes[:-1], initial=0)  # each item's first element
        return np.concatenate([allowed[a:a + size] if it.get(key) is None else _flat(it[key], shp, bool, key)
                               for it, shp, a, size in zip(items, shapes, first, sizes, strict=True)])

    def typical() -> tuple[npt.NDArray[np.bool_] | None, ...]:  # (formed only where an element is not finite)
        return (typical_of("nan_typical", nan_ok), typical_of("posinf_typical", pos_ok),
                typical_of("neginf_typical", neg_ok))

    _nonnegative(rig, exp)
    err, ulps, rr, er, verdicts, overflowed, key_rr = _grade_elements(c, hi, lo, rig, exp, pos_ok, neg_ok, nan_ok, imp, fmt,
                                                                      typical)
    m = len(items)
    ends, starts, seg, seg_keys = _segments(tuple(sizes))
    for it, a, size in zip(items, itertools.accumulate(sizes[:-1], initial=0), sizes, strict=True):
        if it.get("lower_limit") is not None:  # (each item's own: the slice of its elements)
            verdicts[a:a + size], key_rr[a:a + size] = _below_lower_limit(c[a:a + size], it["lower_limit"],
                                                                          verdicts[a:a + size], key_rr[a:a + size])
    nv = len(_NAMES)
    counts = np.bincount(seg_keys + verdicts, minlength=m * nv).reshape(m, nv)
    worst_v = np.maximum.reduceat(verdicts, starts)
    judged = ~overflowed
    order = np.lexsort((_ulp_sort_key(ulps), key_rr, seg))
    worst_flat = order[ends - 1]
    # the segment maxima of the judged errors, ULPs and ratios, the four rows at once (maxima are exact)
    mx = np.maximum.reduceat(np.where(judged, np.array([err, ulps, rr, er]), 0.0), starts, axis=1)
    # the per-item values as Python ints and floats, each array converted once (tolist: the same values as float()),
    # one tuple per item; (bits_of_error is element-wise: of the maxima at once, the same values as of each alone)
    at_worst = list(zip(*(a[worst_flat].tolist() for a in (rig, exp, err, ulps, c, hi)), strict=True))
    maxima = list(zip(*mx.tolist(), bits_of_error(mx[1]).tolist(), strict=True))
    counts_l, worst_v_l, worst_l, starts_l = counts.tolist(), worst_v.tolist(), worst_flat.tolist(), starts.tolist()
    out = []
    for i, shp in enumerate(shapes):
        w = worst_l[i]
        start = starts_l[i]
        worst_index = _unravel(w - start, shp)
        rig_w, exp_w, err_w, ulp_w, c_w, hi_w = at_worst[i]
        abs_i, max_ulp, rr_i, er_i, bits_i = maxima[i]
        out.append(Comparison(
            verdict=_NAMES[worst_v_l[i]],
            counts={name: n for name, n in zip(_NAMES, counts_l[i], strict=True) if n},
            size=sizes[i],
            max_abs_error=abs_i,
            max_ulp_error=max_ulp,
            bits_of_error=bits_i,
            bound_ratio=rr_i,
            expected_ratio=er_i,
            worst_index=worst_index,
            rigorous_at_worst=rig_w,
            expected_at_worst=exp_w,
            ulp=ulps[start:start + sizes[i]].reshape(shp),
            abs_error_at_worst=err_w,
            ulp_error_at_worst=ulp_w,
            computed_at_worst=c_w,
            exact_at_worst=hi_w,
            codes=verdicts[start:start + sizes[i]].reshape(shp),
        ))
    return out


@dataclass(frozen=True)
class FailingElements:
    """The failing elements of one quantity's comparison (:func:`failing_elements`).

    Attributes:
        flat: their flat indices in C order (a contiguous parameter's memory order), int64.
        size: the quantity's number of elements.
        unchanged: whether every one kept its value from before the step, bit for bit (the values given: a
            state's failing elements are read on its parameter).
    """

    flat: npt.NDArray[np.int64]
    size: int
    unchanged: bool


#: :func:`bound_ratio_text` where the rigorous bound is 0.
EXACT_BOUND_TEXT = "rigorous bound 0: every correct evaluation is exact here"


def bound_ratio_text(error: float, rigorous: float, infinite: str = "rigorous bound vacuous") -> str:
    """The worst element's error against its rigorous bound, for a record's message (every grader writes it
    so): ``"2.5 x rigorous bound"``; :data:`EXACT_BOUND_TEXT` where the bound is 0 (a reduction every
    correct evaluation computes exactly: :func:`harness.repeatedsums.exact_reductions`); ``infinite`` where it
    is infinite (the caller says why)."""
    if not math.isfinite(rigorous):
        return infinite
    return EXACT_BOUND_TEXT if rigorous == 0 else f"{error / rigorous:.3g} x rigorous bound"


def below_floor_text(q: str, cmp: Comparison, lower: float | None) -> str:
    """A record's message where a quantity is ``disagree`` because of its ``lower_limit`` alone (:func:`compare`;
    the loss's floor, :class:`harness.bounds.LossFloor`): its worst value is finite, below ``lower``, and within the
    two-sided rigorous bound; ``""`` otherwise (a value above the two-sided bound too reads as it did without it)."""
    c = cmp.computed_at_worst
    if cmp.verdict != "disagree" or lower is None or not math.isfinite(c) or not c < lower or cmp.bound_ratio > 1:
        return ""
    return (f"{q}: {c!r} is below the least value any evaluation order can give for a sum of non-negative terms: "
            f"{c:.6g} < floor {lower:.6g} (the exact value is {cmp.exact_at_worst:.6g}; the floor: c (1 - u)^(m + 4) "
            f"sum max(|R| - E_R, 0)^2 less the underflows, or the largest term's, harness.bounds.LossFloor); "
            f"within the two-sided rigorous bound ({bound_ratio_text(cmp.abs_error_at_worst, cmp.rigorous_at_worst)})")


def failing_elements(cmp: Comparison, computed: npt.ArrayLike, before: npt.ArrayLike) -> FailingElements:
    """The elements of a quantity that fail its comparison ``cmp`` (:func:`harness.verdicts.failing_verdicts`, strict),
    and whether each kept its value ``before`` the step: an update skipped there, not a wrong one
    (:meth:`harness.implementations.KnownBug.explains`)."""
    failing = cmp.elements(failing_verdicts(strict=True))
    c = np.asarray(computed, dtype=np.float64)
    kept = bool(np.array_equal(c[failing], np.reshape(np.asarray(before, dtype=np.float64), c.shape)[failing]))
    return FailingElements(np.flatnonzero(failing), int(c.size), kept)


@dataclass
class Drift:
    """How far a computed array is from the exact trajectory (the result of exact steps from the start).

    Attributes:
        abs_error: the largest ``|computed - exact|`` (0 for an empty array).
        ulp_error: the largest error in ULPs of ``fmt`` (0 for an empty array).
    """

    abs_error: float
    ulp_error: float


def drift(computed: F64, exact_hi: F64, exact_lo: F64, fmt: FloatFormat, ulps: F64 | None = None) -> Drift:
    """The drift of ``computed`` (float64, any shape) from the exact trajectory given as the
    unevaluated sums ``exact_hi + exact_lo`` (same shape); overflow and NaN are not errors here.
    ``ulps``: ``ulp_error(computed, exact_hi, exact_lo, fmt)`` when the caller has it already
    (a step whose exact trajectory value is the graded exact value: :attr:`Comparison.ulp`)."""
    with np.errstate(all="ignore"):
        return drift_no_errstate(computed, exact_hi, exact_lo, fmt, ulps)


def drift_no_errstate(computed: F64, exact_hi: F64, exact_lo: F64, fmt: FloatFormat, ulps: F64 | None = None) -> Drift:
    """The same values as :func:`drift`, for a caller already inside ``np.errstate(all="ignore")`` (or one that ignores
    more): it enters no errstate of its own (each costs about 3 us; helper-195). Public so that the step's graders
    can call it inside their own errstate."""
    err = np.abs((computed - exact_hi) - exact_lo)
    dul = ulp_error_no_errstate(computed, exact_hi, exact_lo, fmt) if ulps is None else ulps
    return Drift(float(err.max()) if err.size else 0.0, float(dul.max()) if dul.size else 0.0)
