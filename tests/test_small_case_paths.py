"""The small-case fast paths of the oracle and the bounds give the same bits as the general ones."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest

import harness.bounds as hb
from harness.bench.timing import Size, oracle_inputs
from harness.exact import ScaledInts
from harness.floats import get_format
from harness.oracle import exact_inputs_from_floats, exact_step, plan

Q = ("loss", "grad_W", "grad_b", "W", "b")


def _bits(x: object) -> object:
    if isinstance(x, np.ndarray | np.generic):
        a = np.asarray(x)
        return (str(a.dtype), a.shape, a.tobytes())
    if isinstance(x, dict):
        return {k: _bits(v) for k, v in x.items()}
    if isinstance(x, tuple | list):
        return tuple(_bits(v) for v in x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):  # (StepBounds.loss_floor: arrays inside)
        return (type(x).__name__, tuple((f.name, _bits(getattr(x, f.name))) for f in dataclasses.fields(x)))
    return x


def _fields(sb: hb.StepBounds) -> dict[str, object]:
    return {f.name: _bits(getattr(sb, f.name)) for f in dataclasses.fields(sb)}


def _cases() -> list[tuple[dict[str, np.ndarray], str, str]]:
    out = []
    for size in (Size(1, 1, 1), Size(16, 1, 1), Size(16, 10, 1), Size(9, 3, 2)):
        base = oracle_inputs(size, "float64", "normal")
        out.append((base, "float64", "mean"))
        out.append(({k: v * 2.0**600 for k, v in base.items()}, "float64", "sum"))  # extreme magnitudes
        out.append(({k: v * 1e300 for k, v in base.items()}, "float64", "sum"))  # bounds overflow
        out.append(({**base, "b": np.zeros_like(base["b"])}, "float64", "mean"))  # zeros
        tiny = base["X"].copy()
        tiny.flat[0] = 2.0**-600
        out.append(({**base, "X": tiny}, "float64", "mean"))  # one extreme element of X (W, b, y, the values not)
        out.append((oracle_inputs(size, "float16", "mixed"), "float16", "mean"))
    return out


@pytest.mark.parametrize("kernels", [False, True])
@pytest.mark.parametrize("case", range(24))
def test_rescue_shortcut_changes_nothing(case: int, kernels: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``_nothing_to_rescue``'s True answers: the full test of ``_rescue_overflowed_bounds`` returns the same bits;
    ``kernels``: with the shared passes (``_prepare``; the shortcut then takes X, y and R's flags from them)."""
    vals, dt, red = _cases()[case]
    if not all(np.isfinite(v).all() for v in vals.values()):
        pytest.skip("inputs beyond the dtype's range")
    if kernels:
        monkeypatch.setattr(hb, "KERNEL_MIN_WORK", 1)
        assert hb._prepare(vals, vals["y"]) is not None
    ex = exact_step(exact_inputs_from_floats(vals), Fraction(0.01), red)
    hi = {q: ex.values[q].to_hi_lo()[0] for q in Q}
    R = ex.residual.to_float64()
    kw = {"lr": 0.01, "reduction": red, "fmt": get_format(dt), "lr_held": 0.01}
    fast = hb.step_bounds(vals, R, hi, **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(hb, "_nothing_to_rescue", lambda *a: False)
    full = hb.step_bounds(vals, R, hi, **kw)  # type: ignore[arg-type]
    assert _fields(fast) == _fields(full)


@pytest.mark.parametrize("shape,axis", [((3, 5, 7), 2), ((4, 9), 1), ((1, 40), 1), ((6, 5), 0), ((2, 3, 4), 1)])
def test_partial_sum_squares_one_block(shape: tuple[int, ...], axis: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-block path against the block loop over that one block, bit for bit, float64 and longdouble."""
    rng = np.random.default_rng(5)
    for dtype in (np.float64, np.longdouble):
        t = (rng.normal(size=shape) * np.exp2(rng.integers(-30, 30, shape))).astype(dtype)
        one = hb.partial_sum_squares(t, axis)
        monkeypatch.setattr(hb, "_PSS_ONE_BLOCK", False)
        loop = hb.partial_sum_squares(t, axis)
        monkeypatch.undo()
        assert one.dtype == loop.dtype and one.shape == loop.shape
        if dtype == np.float64:
            assert one.tobytes() == loop.tobytes()
        else:  # (a long double's padding bytes are not its value)
            assert np.array_equal(one, loop) and np.array_equal(np.signbit(one), np.signbit(loop))


def test_plan_coefficients_cached_per_size() -> None:
    """A step computed with the plan's coefficient cache filled equals one computed from a fresh cache."""
    for red in ("sum", "mean"):
        vals = oracle_inputs(Size(6, 3, 2), "float64", "mixed")
        first = exact_step(exact_inputs_from_floats(vals), Fraction(1, 10), red)
        again = exact_step(exact_inputs_from_floats(vals), Fraction(1, 10), red)
        plan(red)._scalars.clear()
        fresh = exact_step(exact_inputs_from_floats(vals), Fraction(1, 10), red)
        for st in (again, fresh):
            for q in Q:
                assert st.values[q].scale == first.values[q].scale
                assert st.values[q].ints.tolist() == first.values[q].ints.tolist()


def test_to_hi_lo_matches_fractions() -> None:
    """``to_hi_lo`` of arrays above SMALL_ARRAY: hi the nearest float64, lo the nearest to the remainder (normal range),
    on dyadic and non-dyadic scales, with values beyond float64's range as inf."""
    rng = np.random.default_rng(3)
    ints = np.empty(40, dtype=object)
    ints[:] = [int(v) << int(s) for v, s in zip(rng.integers(-2**62, 2**62, 40), rng.integers(0, 80, 40), strict=True)]
    for scale in (Fraction(1, 2**70), Fraction(1, 3 * 2**40), Fraction(7, 160)):
        hi, lo = ScaledInts(ints, scale).to_hi_lo()
        for i, h, low in zip(ints, hi, lo, strict=True):
            f = Fraction(i) * scale
            assert h == float(f) and low == float(f - Fraction(h))
    hi, _ = ScaledInts(ints, Fraction(2) ** 1100).to_hi_lo()
    assert all((h == np.inf) == (i > 0) and (h == -np.inf) == (i < 0) for i, h in zip(ints, hi, strict=True))


@pytest.mark.parametrize("exp", [70, 1000, 1070, 1130, -1000, -1100])
def test_small_to_float64_is_the_nearest_float(exp: int) -> None:
    """``to_float64`` of small arrays (at most SMALL_ARRAY values, a dyadic scale: its hi-only path) is the nearest
    float64 of each exact value: in the normal range, where the low part would be subnormal (2**-1070), where the value
    itself is subnormal or 0 once rounded (2**-1130), and beyond float64's range (inf of the value's sign)."""
    rng = np.random.default_rng(exp % 97)
    ints = np.empty(12, dtype=object)
    ints[:] = [int(v) << int(s) for v, s in zip(rng.integers(-2**62, 2**62, 12), rng.integers(0, 40, 12), strict=True)]
    ints[3] = 0
    scale = Fraction(2) ** -exp
    got = ScaledInts(ints, scale).to_float64()
    assert got.shape == (12,) and got.dtype == np.float64
    for i, h in zip(ints, got.tolist(), strict=True):
        f = Fraction(i) * scale
        want = float(f) if abs(f) < 2**1024 else math.copysign(math.inf, i)
        assert h == want and math.copysign(1.0, h) == math.copysign(1.0, want if i else 1.0), (i, h, want)


def test_max_abs_each_is_max_abs_of_each() -> None:
    """One pass over several arrays gives each array's own ``_max_abs``: NaN where it holds one, inf, -0.0, 0-d
    arrays; an empty or a long double array takes the one-by-one path (0.0 for the empty one)."""
    nan, inf = float("nan"), float("inf")
    groups = [
        (np.array([[1.5, -3.0]]), np.array([-0.0]), np.asarray(-7.25), np.array([2.0, nan, -9.0]), np.array([-inf, 1.0])),
        (np.array([[0.0, -0.0]]), np.array([5e-324]), np.array([-1e308, 1e308])),
        (np.array([1.0, -2.0]), np.zeros(0), np.array([-4.0])),
        (np.array([1.0, -2.0]), np.array([-3.0], dtype=np.longdouble)),
    ]
    want = [[3.0, 0.0, 7.25, nan, inf], [0.0, 5e-324, 1e308], [2.0, 0.0, 4.0], [2.0, 3.0]]
    for arrays, expected in zip(groups, want, strict=True):
        got = hb._max_abs_each(*arrays)
        assert len(got) == len(expected)
        for g, e, a in zip(got, expected, arrays, strict=True):
            assert type(g) is float
            assert (math.isnan(g) and math.isnan(e)) or g == e, (g, e)
            m = hb._max_abs(a)
            assert (math.isnan(g) and math.isnan(m)) or g == m


def test_dtype_name_held_answers() -> None:
    """dtype_name's answers, asked once and again (the names held per dtype object), and past the number held."""
    from harness.frameworks import dtype_name

    cases = [(np.zeros(2), "float64"), (np.zeros(2, dtype=">f8"), "float64"), (np.zeros(2, dtype=np.float32), "float32"),
             (np.zeros(2, dtype=np.float16), "float16"), (np.zeros(2, dtype=np.int64), None),
             (np.zeros(2, dtype=np.longdouble), None), (np.float32(1.0), "float32"), (1.5, None), ([1.0], None)]
    for _ in range(2):
        for value, name in cases:
            assert dtype_name(value) == name
    # many distinct dtype objects (each with its own metadata), more than are held: each answered as itself
    many = [np.zeros(1, dtype=np.dtype("f4" if i % 2 else "i2", metadata={"i": i})) for i in range(600)]
    for _ in range(2):
        assert [dtype_name(a) for a in many] == ["float32" if i % 2 else None for i in range(600)]
    torch = pytest.importorskip("torch")
    for _ in range(2):
        assert dtype_name(torch.zeros(1, dtype=torch.bfloat16)) == "bfloat16"
        assert dtype_name(torch.zeros(1, dtype=torch.float64)) == "float64"
        assert dtype_name(torch.zeros(1, dtype=torch.int32)) is None
