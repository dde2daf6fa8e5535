"""helper-166's attack on the thirty-ninth round's speed changes (8648640..ec940fe), against references written here:

- ``partialsums``' one column-sum helper (``_add_rows``): every column sum of ``magnitude_scan`` (modes 0, 1, 2;
  ``sums`` 7 and 2) bit for bit, NaN payloads included, against a Python loop adding each column's rows in order
  where a NaN sum stays the NaN it is (the kernels' ``keep_nan``; with one NaN operand x86 returns it, quieted), on
  rows across three 256-row blocks with NaNs of both signs, signalling ones, ``inf - inf`` and ``-0.0``.
- ``compare_many``'s segment layout, kept per item sizes: items of the same sizes in other shapes (``(6,)``,
  ``(2, 3)``, ``(3, 2)``) name each worst element in their own shape; 0-d and one-element items among larger ones.
- ``ulp_error``'s one pass over the computed and exact values: 0-d, one-element and broadcast shapes, pinned values.
- ``runner._not_finite``'s joined test of small inputs: around its 4,096-element limit, the names in order.
- ``ScaledInts.to_float64``'s hi-only path: ties to even, the overflow threshold ``2**1024 - 2**970``, integers far
  beyond float64 brought back by the scale, subnormal results and ties at scales far below ``2**-1074``, 0-d arrays,
  a subclass's own ``to_hi_lo``; against Python's correctly rounded ``int / int``.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from harness.compare import compare, compare_many
from harness.exact import ScaledInts
from harness.floats import get_format, ulp_error
from harness.isolation import native_copies, snapshot
from harness.partialsums import magnitude_scan
from harness.runner import _not_finite

F64 = get_format("float64")


def _bits(a: np.ndarray) -> list[int]:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.uint64).reshape(-1).tolist()


def _f64(bits: int) -> float:
    return float(np.array([bits], dtype=np.uint64).view(np.float64)[0])


# ------------------------------------------------------------------------------------------------ column sums


def _nan_unsigned(a: np.ndarray) -> list[int]:
    """:func:`_bits` with each NaN's sign bit cleared (its payload kept)."""
    return [b & 0x7FFFFFFFFFFFFFFF if math.isnan(x) else b for b, x in zip(_bits(a), a.tolist(), strict=True)]


def _keep_nan_sum(terms: list[float]) -> float:
    """Terms added in order from 0.0; a NaN sum stays as it is (never two NaN operands in one addition)."""
    s = 0.0
    for x in terms:
        if s == s:
            s = s + x
    return s


def _hostile_columns() -> np.ndarray:
    rng = np.random.default_rng(166)
    rows, cols = 3 * 256 + 5, 7  # three full blocks and a partial one; 4 columns in registers, a tail of 3
    a = rng.standard_normal((rows, cols)) * np.exp2(rng.integers(-30, 30, (rows, cols)))
    a[rng.random((rows, cols)) < 0.05] = -0.0
    a[10, 0], a[300, 0] = _f64(0xFFF0000000000ABC), _f64(0x7FF8000000000123)  # signalling then quiet, blocks 0 and 1
    a[5, 1], a[6, 1], a[700, 1] = np.inf, -np.inf, _f64(0x7FF8000000000777)  # inf - inf first, a NaN later
    a[rows - 1, 5] = _f64(0xFFF4000000000001)  # the last, partial block; column 5 in the tail
    a[256, 6], a[257, 6] = _f64(0x7FF8000000000002), _f64(0xFFF8000000000003)  # two NaNs in one block
    a[:, 4] = np.where(np.arange(rows) == 0, 1.0, 2.0**-53)  # 1 then 2**-53s: 1.0 in row order only
    a[20:30, 3] = 2.0**600  # squares beyond float64: inf sums
    return a


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_magnitude_scan_column_sums_pinned_bits_nan_payloads_included(mode: int) -> None:
    a = _hostile_columns()
    n, m = a.shape
    ref = [[], [], []]
    for c in range(m):
        col = a[:, c].tolist()
        ref[0].append(_keep_nan_sum(col))
        ref[1].append(_keep_nan_sum([abs(x) for x in col]))
        ref[2].append(_keep_nan_sum([abs(x) * abs(x) for x in col] if mode == 1 else [x * x for x in col]) if mode else 0.0)
    assert math.isnan(ref[0][1]) and _bits(np.array(ref[0][1:2])) == [0xFFF8000000000000]  # (inf - inf's default NaN)
    for layout in ("C", "F"):
        v = np.ascontiguousarray(a) if layout == "C" else np.asfortranarray(a)
        for sums in (7, 2):
            absa, sq, cols = np.empty(a.shape), np.empty(a.shape) if mode else np.empty((0, 0)), np.full((3, m), 7.0)
            with np.errstate(all="ignore"):
                magnitude_scan(v, absa, sq, mode, cols, sums)
            assert _bits(cols[1]) == _bits(np.array(ref[1])), (layout, sums)
            if sums == 7:
                assert _bits(cols[0]) == _bits(np.array(ref[0])), layout
                # (a NaN square's sign: LLVM may fold abs(x) * abs(x) to x * x, which IEEE 754 leaves open)
                assert _nan_unsigned(cols[2]) == _nan_unsigned(np.array(ref[2])), layout
            else:
                assert _bits(cols[0]) == _bits(cols[2]) == [0] * m


# ------------------------------------------------------------------------------------------------ compare_many


def _item(values: list[float], shape: tuple[int, ...]) -> dict[str, object]:
    """Exact values 1.0; computed 1 + v; rigorous bounds 1e-3: the worst element is the largest |v|."""
    v = np.array(values, dtype=np.float64).reshape(shape)
    return {"computed": 1.0 + v, "exact_hi": np.ones(shape), "exact_lo": np.zeros(shape),
            "rigorous": np.full(shape, 1e-3), "expected": np.full(shape, 1e-3), "inf_allowed": np.zeros(shape, bool)}


def test_compare_many_same_sizes_other_shapes_name_their_own_worst_element() -> None:
    fmt = F64
    vals = [0.0, 2.0**-20, 2.0**-12, 0.0, 2.0**-8, 0.0]  # worst at flat index 4 (2**-8 > 1e-3: disagree)
    for shapes in ([(6,), (1,), (2, 3), ()], [(3, 2), (1,), (6, 1), ()], [(1, 6), (1,), (6,), ()]):
        items = [_item(vals, shapes[0]), _item([2.0**-12], shapes[1]), _item(vals[::-1], shapes[2]),
                 _item([0.0], shapes[3])]
        got = compare_many(items, fmt)
        assert [g.worst_index for g in got] == [tuple(int(i) for i in np.unravel_index(4, shapes[0])), (0,),
                                                 tuple(int(i) for i in np.unravel_index(1, shapes[2])), ()]
        assert [g.verdict for g in got] == ["disagree", "agree", "disagree", "agree"]
        assert [g.counts for g in got] == [{"agree": 5, "disagree": 1}, {"agree": 1}, {"agree": 5, "disagree": 1},
                                           {"agree": 1}]
        assert got[0].abs_error_at_worst == got[2].abs_error_at_worst == 2.0**-8
        assert got[0].bound_ratio == 2.0**-8 / 1e-3 and got[1].bound_ratio == 2.0**-12 / 1e-3
        assert got[3].max_abs_error == 0.0 and got[3].ulp.shape == () and got[0].codes.shape == shapes[0]
        for g, it in zip(got, items, strict=True):  # each as compare gives it alone
            one = compare(**it, fmt=fmt)
            assert (g.worst_index, g.verdict, g.bound_ratio, g.max_ulp_error) == (
                one.worst_index, one.verdict, one.bound_ratio, one.max_ulp_error)


def test_compare_many_keeps_small_layouts_only() -> None:
    """A layout of more than 4,096 elements is formed for its call, not kept for the rest of the run (kept per size,
    a sweep of 10^6-parameter shapes held about 30 MB each); the large items still name their own worst element."""
    from harness import compare as cmp

    cmp._kept_segments.cache_clear()
    big = [0.0] * 5000
    big[4321] = 2.0**-8
    got = compare_many([_item(big, (50, 100)), _item([2.0**-12], (1,))], F64)
    assert [g.worst_index for g in got] == [(43, 21), (0,)]
    assert [g.verdict for g in got] == ["disagree", "agree"]
    assert cmp._kept_segments.cache_info().currsize == 0
    compare_many([_item(big[:4000], (4000,)), _item([0.0], (1,))], F64)  # 4,001 elements: kept
    assert cmp._kept_segments.cache_info().currsize == 1


# ------------------------------------------------------------------------------------------------ ulp_error


@pytest.mark.parametrize(("c", "hi", "lo", "want"), [
    (1.0 + 2.0**-52, 1.0, 0.0, 1.0),  # 0-d
    ([1.0 + 2.0**-51], [1.0], [0.0], [2.0]),  # one element
    ([1.0, 1.0 + 2.0**-52, 2.0], 1.0, 0.0, [0.0, 1.0, 2.0**52]),  # computed (3,), exact 0-d
    (1.0, [1.0, 1.0 + 2.0**-52, -1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 2.0 * 2.0**52 * 1023]),  # computed 0-d, exact (3,)
    ([[1.0], [2.0]], [[1.0, 2.0]], [[0.0, 0.0]], [[0.0, 2.0**52], [2.0**52, 0.0]]),  # (2, 1) against (1, 2)
    ([1.0, np.inf, np.nan, 5e-324], [1.0, 1.0, 1.0, 0.0], [2.0**-53, 0.0, 0.0, 5e-324], [0.5, np.inf, np.inf, 0.0]),
])
def test_ulp_error_shapes_pinned(c: object, hi: object, lo: object, want: object) -> None:
    got = ulp_error(c, hi, lo, F64)
    assert np.shape(got) == np.shape(want)
    assert np.asarray(got).tolist() == np.asarray(want, dtype=np.float64).tolist()


# ------------------------------------------------------------------------------------------------ _not_finite


@pytest.mark.parametrize("sizes", [(4096,), (4095, 1), (4000, 97), (1, 4096), (0, 4096), (4097,), (2048, 2049)])
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_not_finite_names_each_input_around_the_joined_limit(sizes: tuple[int, ...], dtype: str) -> None:
    inputs = {f"k{i}": np.linspace(-1.0, 1.0, s).astype(dtype) for i, s in enumerate(sizes)}
    seen = snapshot(inputs)
    assert _not_finite(seen, native_copies(inputs, seen)) == []
    for bad in [(), *((k,) for k in inputs), tuple(inputs)]:
        held = {k: v.copy() for k, v in inputs.items()}
        for j, k in enumerate(bad):
            if held[k].size:
                held[k][-1 if j % 2 else 0] = (np.inf, -np.inf, np.nan)[j % 3]
        seen = snapshot(held)
        want = [k for k in held if not np.isfinite(held[k].astype(np.float64)).all()]
        assert _not_finite(seen, native_copies(held, seen)) == want


def test_not_finite_zero_d_and_empty_inputs() -> None:
    seen = {"a": np.array(np.inf), "b": np.zeros(0), "c": np.array(1.0), "d": np.array([[np.nan]])}
    assert _not_finite(seen, {}) == ["a", "d"]
    assert _not_finite({"b": np.zeros((0, 3)), "c": np.array(-0.0)}, {}) == []


# ------------------------------------------------------------------------------------------------ to_float64


def _nearest(i: int, q: int) -> float:
    """Python's correctly rounded ``i / 2**q`` (ties to even), inf beyond float64's range."""
    try:
        return i / (1 << q) if q >= 0 else float(i << -q)
    except OverflowError:
        return math.inf if i > 0 else -math.inf


def _ints(values: list[int], shape: tuple[int, ...]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out.reshape(shape)


TIE = (1 << 53) + 1  # 2**53 + 1: halfway between 2**53 and 2**53 + 2


@pytest.mark.parametrize(("values", "q"), [
    ([TIE, TIE + 2, -TIE, -(TIE + 2), 3 * 2**60 + 2**8, 2**53 - 1], 0),  # ties to even both ways, both signs
    ([TIE << 900, (TIE + 2) << 900], 900),
    ([2**1024 - 2**970, 2**1024 - 2**970 - 1, -(2**1024 - 2**970), 2**1024], 0),  # the overflow threshold
    ([(2**1024 - 2**970) << 50, ((2**1024 - 2**970) << 50) - 1], 50),
    ([2**1100 + 1, -(2**2000 + 3**500), 3**900], 1100),  # beyond float64 before the scale, within it after
    ([1, 3, 2**52 + 1, TIE, -1], 1074),  # subnormal results; 2**52 + 1 at 2**-1074 is exact
    ([1, 2, 3, 5, -3], 1075),  # 0.5, 1, 1.5, 2.5 quanta of 2**-1074: ties to even, 0.0 and -0.0 kept apart?
    ([(1 << 60) + 1, 7, -(1 << 40)], 1200),  # far below 2**-1074
    ([TIE << 10], 1022 + 53 + 10),  # the tie at the normal range's edge
    ([0, 0], 5000),
])
def test_to_float64_small_dyadic_is_the_nearest_float(values: list[int], q: int) -> None:
    for shape in ((len(values),), (1, len(values))):
        got = ScaledInts(_ints(values, shape), Fraction(1, 1 << q)).to_float64()
        want = [_nearest(i, q) for i in values]
        assert got.shape == shape and got.dtype == np.float64
        assert _bits(got) == _bits(np.array(want)), (values, q)


def test_to_float64_zero_d_and_a_subclass_with_its_own_hi_lo() -> None:
    zero_d = ScaledInts(_ints([TIE], ()), Fraction(1, 4)).to_float64()
    assert zero_d.shape == () and float(zero_d) == 2.0**51

    class Shifted(ScaledInts):
        __slots__ = ()

        def to_hi_lo(self) -> tuple[np.ndarray, np.ndarray]:
            return np.full(self.shape, 42.0), np.zeros(self.shape)

    assert Shifted(_ints([1, 2], (2,)), Fraction(1, 2)).to_float64().tolist() == [42.0, 42.0]


@pytest.mark.parametrize("n", [1, 100])
@pytest.mark.parametrize(("bad", "error"), [(float("nan"), ValueError), (float("inf"), OverflowError)])
def test_to_float64_refuses_an_element_that_is_not_an_integer_at_every_size(n: int, bad: float, error: type) -> None:
    """helper-166: with a float NaN or inf among the ints (outside the class's contract), arrays of at most 32
    elements returned nan / inf from the hi-only path while larger ones raised; now each size raises as to_hi_lo does."""
    ints = np.array([3] * (n - 1) + [bad], dtype=object)
    with pytest.raises(error):
        ScaledInts(ints, Fraction(1, 4)).to_float64()
    with pytest.raises(error):
        ScaledInts(ints, Fraction(1, 4)).to_hi_lo()
