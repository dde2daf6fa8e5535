"""helper-160's attack on helper-159's speed changes (5f076ef..0a7881a): the caches, the merged reductions and the
moved ``np.errstate`` blocks against the plain forms they replaced, on hostile inputs (NaN payloads, infinities,
-0.0, subnormals, the overflow edge, 0-d, empty, Fortran-order and strided arrays, byte-swapped dtypes and dtypes with
metadata, many dtypes, threads, warnings turned into errors).

Two findings are pinned here: ``bounds._typed`` (the unit roundoff in the type an array of a dtype times it has) was
cached without ``typed=True``, so a NumPy float and a Python float of one value shared an entry and the dtype of
:func:`harness.bounds.nearest_rounding_bound` depended on the order of the calls; and the rigorous bounds at the
overflow edge (a bound finite below ``_SAFETY`` times it) warned ``overflow encountered in multiply`` at 5f076ef, so
a run under ``warnings.simplefilter("error")`` recorded ``error`` for the whole implementation (helper-159's single
``np.errstate`` for the update bounds fixed that; the test keeps it fixed).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from harness import bounds
from harness.compare import compare, compare_many
from harness.floats import FloatFormat, get_format
from harness.frameworks import interchange
from harness.frameworks.interchange import dtype_name
from harness.runner import _equal_arrays

# NaN with a payload, both signs of zero and infinity, subnormals, the overflow edge, float16's and float32's limits
_HOSTILE = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1e-300, 6e-8, 1.0, -1.5, 3.0, 65504.0, 3.4e38,
            1e154, 1e300, 1.7976931348623157e308, -1.7976931348623157e308, np.inf, -np.inf, np.nan,
            float(np.array([0x7FF8000000000123], dtype=np.uint64).view(np.float64)[0])]
_FMTS = [get_format(n) for n in ("float64", "float32", "float16", "bfloat16")]


def _same(a: object, b: object) -> bool:
    """Equal values of equal types, NaN equal to NaN (a Comparison's fields, a tuple's or a list's items, arrays of
    one dtype and shape)."""
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
        return type(a) is type(b) and _same(dataclasses.asdict(a), dataclasses.asdict(b))  # type: ignore[arg-type]
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return (a.dtype == b.dtype and a.shape == b.shape
                and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")))
    if isinstance(a, float) and isinstance(b, float) and a != a:
        return b != b
    return type(a) is type(b) and a == b


# ------------------------------------------------------------------ bounds._typed: a cache keyed by value and type
def test_nearest_rounding_bound_dtype_independent_of_call_order() -> None:
    # a format whose precision is a NumPy integer has u = 2.0 ** -np.int64(11), an np.float64 equal (and hashing
    # equal) to float16's Python-float u; under NEP 50 a float16 array times np.float64(u) is float64, times the
    # Python float float16. Both orders of the two calls must give each format its own dtype (at 0a7881a the second
    # call read the first's cached scalar: float16 where float64 is due, or the reverse).
    f16 = get_format("float16")
    numpy_p = FloatFormat(f16.name, np.int64(f16.precision), f16.emin, f16.emax)  # type: ignore[arg-type]
    assert type(numpy_p.unit_roundoff) is np.float64 and numpy_p.unit_roundoff == f16.unit_roundoff
    z = np.array([1.0, 3.0], dtype=np.float16)
    for order in ((f16, numpy_p), (numpy_p, f16), (f16, numpy_p)):
        got = {fmt.precision.__class__: bounds.nearest_rounding_bound(z, fmt) for fmt in order}
        assert got[int].dtype == np.float16 and got[np.int64].dtype == np.float64
        # float16: 2**-11 * 2**(e - 1) of 1 and 3, exact; float64: with u_w = 2**-24's share
        assert got[int].tolist() == [2.0**-11, 2.0**-10]
        assert got[np.int64].tolist() == [2.0**-11 + 2.0**-24, 2.0**-10 + 3 * 2.0**-24]


@pytest.mark.parametrize("dt", [np.float64, np.float32, np.float16, np.longdouble, ">f8", ">f4"])
def test_nearest_rounding_bound_typed_unit_roundoff(dt: object) -> None:
    # the cached scalar against the expression it replaced, every format, finite and not, 0-d, strided, Fortran order
    with np.errstate(all="ignore"):
        z = np.abs(np.array(_HOSTILE)).astype(dt)
    for fmt in _FMTS:
        u, u_w = fmt.unit_roundoff, bounds.wider_roundoff(fmt)
        for a in (z, z[::3], z[7], np.asfortranarray(np.abs(np.array([[1.0, 3.0], [5e-324, 6e-8]])).astype(dt))):
            got = bounds.nearest_rounding_bound(a, fmt)
            with np.errstate(all="ignore"):
                zw = np.asarray(a) * (1 + u_w) if u_w else np.asarray(a)
                fin = np.isfinite(zw)
                _, ex = np.frexp(np.where(fin, zw, 0))
                half = np.where(fin & (zw > 0), np.ldexp(np.ones_like(zw) * u, ex - 1), 0)
                want = np.where(fin, half + u_w * np.asarray(a), bounds.update_rounding(fmt) * np.asarray(a))
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)


# ------------------------------------------------- the update bounds' errstate: the overflow edge under -W error
_EDGE_X = np.array([[1.0], [1.0]])
_EDGE_Y = np.array([[-1e150], [1e150]])  # R = (1e150, -1e150): grad_W = 0 exactly, |X|^T |R| = 2e150
_EDGE_LR = 5.0600563279701986e172  # the largest lr whose rigorous W bound is finite (found by bisection, again after
_EDGE_LR_UP = 5.060056327970199e172  # gamma_n became (1 - u)^-n - 1): its bound times _SAFETY overflows; one ulp above, inf


def _edge_bounds(lr: float) -> bounds.StepBounds:
    W, b = np.zeros((1, 1)), np.zeros(1)
    ex = {"loss": np.asarray(2e300), "grad_W": np.zeros((1, 1)), "grad_b": np.zeros(1), "W": W, "b": b}
    return bounds.step_bounds({"X": _EDGE_X, "y": _EDGE_Y, "W": W, "b": b}, -_EDGE_Y, ex, lr=lr, reduction="sum",
                              fmt=get_format("float64"))


def test_update_bound_at_the_overflow_edge_warns_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet = [_edge_bounds(lr) for lr in (_EDGE_LR, _EDGE_LR_UP)]
    assert float(quiet[0].rigorous["W"].max()) == 1.7976931348623157e308  # the edge: finite, then inf
    assert float(quiet[1].rigorous["W"].max()) == np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (5f076ef: RuntimeWarning: overflow encountered in multiply)
        loud = [_edge_bounds(lr) for lr in (_EDGE_LR, _EDGE_LR_UP)]
    for a, b in zip(quiet, loud, strict=True):
        for q in a.rigorous:
            np.testing.assert_array_equal(a.rigorous[q], b.rigorous[q])
            np.testing.assert_array_equal(a.expected[q], b.expected[q])


def test_run_at_the_overflow_edge_same_records_under_warnings_as_errors(tmp_path: Path) -> None:
    from harness.cases import load_cases
    from harness.implementations import load_builtins
    from harness.runner import verify

    load_builtins()
    (tmp_path / "edge.toml").write_text(
        '[[case]]\nid = "edge"\nX = [[1.0], [1.0]]\ny = [["-1e150"], ["1e150"]]\nW = [[0.0]]\nb = [0.0]\n'
        f'lr = "{_EDGE_LR!r}"\nreduction = "sum"\ndtypes = ["float64"]\n', encoding="utf-8")
    cases = load_cases([str(tmp_path)], tier="quick").cases

    def records(mode: str) -> list[str]:
        with warnings.catch_warnings():
            warnings.simplefilter(mode)
            return [json.dumps(dataclasses.asdict(r), sort_keys=True) for r in verify(cases, ["numpy-hand"], dtypes=None)]

    quiet, loud = records("ignore"), records("error")
    assert loud == quiet  # (5f076ef: one record, verdict "error", "harness failure while grading: RuntimeWarning")
    assert {json.loads(r)["quantity"] for r in quiet} == {"loss", "grad_W", "grad_b", "W", "b"}
    assert all(json.loads(r)["verdict"] != "error" for r in quiet)


# ------------------------------------------------------ compare_many: one reduceat of four rows, tuples per item
_VAL = st.sampled_from(_HOSTILE) | st.floats(allow_nan=True, allow_infinity=True, width=64)
_SHAPES = st.sampled_from([(), (1,), (3,), (2, 3), (1, 1), (0,), (2, 0)])


@st.composite
def _item(draw: st.DrawFn) -> dict[str, object]:
    shp = draw(_SHAPES)
    size = int(np.prod(shp))

    def arr(nonneg: bool = False) -> np.ndarray:
        a = np.array(draw(st.lists(_VAL, min_size=size, max_size=size)), dtype=np.float64).reshape(shp)
        return np.abs(a) if nonneg else a

    hi = arr()
    c = hi if draw(st.booleans()) else arr()
    rig = np.where(np.isnan(arr(True)), np.inf, arr(True))
    exp = np.minimum(rig, np.where(np.isnan(arr(True)), 0.0, arr(True)))
    it: dict[str, object] = dict(computed=c, exact_hi=hi, exact_lo=np.zeros(shp), rigorous=rig, expected=exp,
                                 inf_allowed=np.array(draw(st.lists(st.booleans(), min_size=size, max_size=size)),
                                                      dtype=bool).reshape(shp))
    for key in ("nan_allowed", "posinf_allowed", "neginf_allowed", "finite_impossible", "nan_typical"):
        if draw(st.booleans()):
            it[key] = np.array(draw(st.lists(st.booleans(), min_size=size, max_size=size)), dtype=bool).reshape(shp)
    if draw(st.booleans()) and np.ndim(c) == 2:
        it["computed"] = np.asfortranarray(c)  # another memory order: the same values
    if draw(st.booleans()) and np.ndim(c) == 0:
        it["computed"] = float(c)  # a Python float where an array is usual
    return it


def test_compare_many_matches_compare_each() -> None:
    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(_item(), min_size=1, max_size=5), st.sampled_from(_FMTS))
    def run(items: list[dict[str, object]], fmt: FloatFormat) -> None:
        with np.errstate(all="ignore"):
            many = compare_many(items, fmt)
            each = [compare(**it, fmt=fmt) for it in items]  # type: ignore[arg-type]
        # search towards many segments of one element and many non-finite values
        target(float(sum(np.size(it["computed"]) == 1 for it in items)), label="size-1 segments")
        target(float(sum(int(np.sum(~np.isfinite(np.asarray(it["computed"])))) for it in items)), label="non-finite")
        assert len(many) == len(each)
        for a, b in zip(many, each, strict=True):
            assert _same(a, b), (a, b)

    run()


def test_compare_many_under_raising_errstate_and_warnings_as_errors() -> None:
    # a plug-in that left np.seterr(all="raise") or warnings as errors: the quotients' warnings stay silenced
    # (compare_many's callers' errstate now covers _ratio), as at 5f076ef
    fmt = get_format("float32")
    items = [dict(computed=np.array([1e300, 0.0, 3.0]), exact_hi=np.array([1.0, 0.0, np.inf]), exact_lo=np.zeros(3),
                  rigorous=np.array([5e-324, 0.0, 1.0]), expected=np.array([0.0, 0.0, 1.0]),
                  inf_allowed=np.array([False, False, True])),
             dict(computed=np.array([2.0]), exact_hi=np.array([2.0]), exact_lo=np.array([1e-300]),
                  rigorous=np.array([0.0]), expected=np.array([0.0]), inf_allowed=np.array([False]))]
    with np.errstate(all="ignore"):
        quiet = compare_many(items, fmt)
    old = np.seterr(all="raise")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loud = compare_many(items, fmt)
    finally:
        np.seterr(**old)
    assert _same(quiet, loud)
    assert quiet[0].verdict == "disagree" and quiet[0].bound_ratio == np.inf  # 1e300 / 5e-324: inf, no warning
    assert quiet[1].verdict == "disagree" and quiet[1].bound_ratio == np.inf  # 2**-997ish over a zero bound


# ---------------------------------------------------------------- bounds._max_abs_each: segment maxima at once
def test_max_abs_each_matches_max_abs() -> None:
    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(_SHAPES, st.sampled_from(["f8", ">f8", "f4", "g"]), st.data()), max_size=6))
    def run(specs: list[tuple[tuple[int, ...], str, st.DataObject]]) -> None:
        arrays = []
        for shp, dt, data in specs:
            vals = data.draw(st.lists(_VAL, min_size=int(np.prod(shp)), max_size=int(np.prod(shp))))
            with np.errstate(all="ignore"):
                a = np.array(vals, dtype=np.float64).reshape(shp).astype(dt)
            arrays.append(np.asfortranarray(a) if a.ndim == 2 else a)
        target(float(len(arrays)), label="arrays")
        got = bounds._max_abs_each(*arrays)
        want = [bounds._max_abs(a) for a in arrays]
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert (g != g and w != w) or (g == w and type(g) is type(w)), (g, w)

    run()


# ------------------------------------------------------------------ runner._equal_arrays: np.array_equal's answer
def test_equal_arrays_matches_array_equal() -> None:
    pool = [np.array(1.0), np.array([0.0]), np.array([-0.0]), np.array([np.nan]), np.array([np.inf]),
            np.array([[1.0, 2.0]]), np.array([[1.0], [2.0]]), np.array([1.0, 2.0]), np.zeros((0, 2)), np.zeros((2, 0)),
            np.asfortranarray(np.array([[1.0, 2.0], [3.0, 4.0]])), np.array([[1.0, 2.0], [3.0, 4.0]]),
            np.array([[1.0, 3.0], [2.0, 4.0]]).T, np.array([5e-324]), np.array([0.0])]
    for a in pool:
        for b in pool:
            assert _equal_arrays(a, b) is bool(np.array_equal(a, b)), (a, b)


# ---------------------------------------------------------------- interchange.dtype_name: a cache by id
def _uncached(dt: object) -> str | None:
    name = getattr(dt, "name", None)
    if not isinstance(name, str):
        name = str(dt).removeprefix("torch.")
    return name if name in interchange.DTYPES else None


def test_dtype_name_cache_against_uncached() -> None:
    import torch

    class Holder:
        def __init__(self, dt: object) -> None:
            self.dtype = dt

    dts: list[object] = [np.dtype("f8"), np.dtype(">f8"), np.dtype(">f2"), np.dtype("f4", metadata={"k": 1}),
                         np.dtype("g"), np.dtype("i4"), np.dtype([("a", "f8")]), np.dtype("U3"), np.dtype("O"),
                         torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int32, "float32", 3]
    dts += [np.dtype("f8", metadata={"i": i}) if i % 2 else np.dtype(f"S{i + 1}") for i in range(600)]  # past the limit
    for _ in range(2):
        for dt in dts:
            assert dtype_name(Holder(dt)) == _uncached(dt), dt
    assert len(interchange._NAMES) <= interchange._NAMES_HELD
    assert dtype_name(torch.zeros(1, dtype=torch.bfloat16)) == "bfloat16"
    assert dtype_name(np.zeros(1, dtype=">f2")) == "float16"
    assert dtype_name(1.0) is None

    # two threads past the limit at once: every answer the uncached one
    bad: list[object] = []

    def worker(offset: int) -> None:
        for _rep in range(3):
            for dt in dts[offset::2]:
                if dtype_name(Holder(dt)) != _uncached(dt):
                    bad.append(dt)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


# ------------------------------------------------- the oracle plan's chain memo: steps > 1, both reductions, threads
# X = [1, 2], y = [2, 4], W = 0, b = 0, lr = 1/4, derived by hand. Sum: R = (-2, -4), loss 20, grad_W 2 X^T R = -20,
# grad_b -12, W 5, b 3; then R = (6, 9), loss 117, grad_W 48, grad_b 30, W -7, b -9/2. Mean (N K = 2): loss 10,
# grad_W -10, grad_b -6, W 5/2, b 3/2; then R = (2, 5/2), loss 41/8, grad_W 7, grad_b 9/2, W 3/4, b 3/8.
_HAND = {
    "sum": [(20, -20, -12, 5, 3), (117, 48, 30, -7, Fraction(-9, 2))],
    "mean": [(10, -10, -6, Fraction(5, 2), Fraction(3, 2)), (Fraction(41, 8), 7, Fraction(9, 2), Fraction(3, 4),
                                                            Fraction(3, 8))],
}


def _trajectory_values(reduction: str) -> list[tuple[Fraction, ...]]:
    from harness.oracle import exact_inputs_from_floats, exact_trajectory

    start = exact_inputs_from_floats({"X": np.array([[1.0], [2.0]]), "y": np.array([[2.0], [4.0]]),
                                      "W": np.zeros((1, 1)), "b": np.zeros(1)})
    traj = exact_trajectory(start, Fraction(1, 4), reduction, 2)
    idx = {"loss": (), "grad_W": (0, 0), "grad_b": (0,), "W": (0, 0), "b": (0,)}
    return [tuple(s.values[q].fraction_at(idx[q]) for q in idx) for s in traj]


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_oracle_two_steps_by_hand_and_in_two_threads(reduction: str) -> None:
    assert _trajectory_values(reduction) == [tuple(Fraction(v) for v in step) for step in _HAND[reduction]]
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(_trajectory_values(reduction))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [_trajectory_values(reduction)] * 2
