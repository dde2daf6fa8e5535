"""Issue 11: limits checked before any work, and long trajectories that stay exact-grade
with numbers of bounded size."""

from __future__ import annotations

import time
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import harness
from harness.cases import expand_generate_table, load_cases
from harness.errors import LimitError
from harness.exact import ScaledInts
from harness.floats import decimal_string
from harness.limits import DEFAULT_MAX_ELEMENTS, DEFAULT_MAX_ORACLE_COST, DEFAULT_MAX_STEPS, Limits, elements, oracle_cost
from harness.oracle import TRAJECTORY_BITS, TRAJECTORY_EXACT_BITS, exact_inputs_from_floats, exact_trajectory, round_significant
from harness.runner import verify
from tests.conftest import CASES


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text, encoding="utf-8")
    return p


def _case(cid: str, *, n: int = 1, steps: int = 1) -> str:
    X = "[" + ", ".join(["[1.0]"] * n) + "]"
    return f'\n[[case]]\nid = "{cid}"\nX = {X}\ny = {X}\nW = [[2.0]]\nb = [0.5]\nlr = "0.1"\nsteps = {steps}\n'


def test_the_defaults_fit_every_shipped_case_including_the_large_tier():
    res = load_cases([CASES], tier="large")
    assert not res.errors
    worst = max(res.cases, key=lambda c: elements(*c.shape))
    assert elements(*worst.shape) <= DEFAULT_MAX_ELEMENTS
    assert max(oracle_cost(*c.shape, c.steps) for c in res.cases) <= DEFAULT_MAX_ORACLE_COST
    assert max(c.steps for c in res.cases) <= DEFAULT_MAX_STEPS


def test_a_billion_steps_is_refused_at_once_with_the_figure_and_the_option(tmp_path):
    path = _write(tmp_path, _case("ok") + _case("forever", steps=1_000_000_000))
    res = load_cases([path])  # (refused from the figure: no step is simulated)
    assert [c.id for c in res.cases] == ["ok"]
    (err,) = res.errors
    assert isinstance(err, LimitError) and (err.case_id, err.key) == ("forever", "steps")
    assert "1,000,000,000 steps exceed the limit of 10,000; raise it with --max-steps" in str(err)


def test_the_oracle_cost_is_checked_and_can_be_raised(tmp_path):
    path = _write(tmp_path, _case("costly", n=50, steps=5000))
    lim = Limits(max_oracle_cost=1_000_000)
    (err,) = load_cases([path], limits=lim).errors
    assert isinstance(err, LimitError) and "--max-oracle-cost" in str(err) and "1.01e+06" in str(err)
    assert [c.id for c in load_cases([path], limits=Limits(max_oracle_cost=2_000_000)).cases] == ["costly"]


def test_inline_arrays_are_counted_before_they_are_converted(tmp_path):
    path = _write(tmp_path, _case("wide", n=600))
    (err,) = load_cases([path], limits=Limits(max_elements=1000)).errors
    assert isinstance(err, LimitError) and err.key == "X" and "1,202 numbers" in str(err) and "--max-elements" in str(err)


def test_a_generated_billion_rows_is_refused_instantly_without_allocating():
    spec = {"name": "huge", "seed": 1, "shapes": [[1, 1, 1], [10**9, 1, 1]]}
    tracemalloc.start()
    try:
        with pytest.raises(LimitError) as info:
            expand_generate_table(spec, path="g.toml", index=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # (refused from the shape: nothing allocated)
    assert info.value.key == "shapes" and "shape [1000000000, 1, 1]" in str(info.value) and "--max-elements" in str(info.value)


def test_a_generate_table_whose_arrays_together_are_too_big_is_refused():
    spec = {"name": "many", "seed": 1, "shapes": [[100, 10, 10 + i] for i in range(20)]}
    with pytest.raises(LimitError, match="4 x the limit"):
        expand_generate_table(spec, path="g.toml", index=0, limits=Limits(max_elements=10_000))
    assert expand_generate_table(spec, path="g.toml", index=0)  # within the defaults


# ---------------------------------------------------------------- the trajectory


def _fraction_trajectory(x, y, w, b, lr, steps):
    """1x1x1 sum-reduction SGD in plain Fractions (the reference, exact)."""
    out = []
    for _ in range(steps):
        r = x * w + b - y
        w, b = w - lr * 2 * x * r, b - lr * 2 * r
        out.append((w, b))
    return out


def test_short_trajectories_stay_exact():
    inp = exact_inputs_from_floats({"X": np.array([[1.0]]), "y": np.array([[3.0]]), "W": np.array([[2.3]]), "b": np.array([1.4])})
    lr = Fraction(float(np.float32(0.1)))
    traj = exact_trajectory(inp, lr, "sum", 3)
    ref = _fraction_trajectory(Fraction(1), Fraction(3), Fraction(2.3), Fraction(1.4), lr, 3)
    assert all(st.rounded_bits is None and st.method == "exact-rational" for st in traj)
    assert [(st.values["W"].fraction_at((0, 0)), st.values["b"].fraction_at((0,))) for st in traj] == ref


def test_long_trajectories_are_rounded_to_200_bits_and_stay_within_them():
    x, y, w, b = 1.5, 3.0, 2.3, 1.4
    lr = Fraction(float(np.float32(0.1)))
    inp = exact_inputs_from_floats({"X": np.array([[x]]), "y": np.array([[y]]), "W": np.array([[w]]), "b": np.array([b])})
    traj = exact_trajectory(inp, lr, "sum", 60)
    ref = _fraction_trajectory(Fraction(x), Fraction(y), Fraction(w), Fraction(b), lr, 60)
    assert traj[-1].rounded_bits == TRAJECTORY_BITS and "rounded to 200 bits" in traj[-1].method
    for st, (rw, rb) in zip(traj, ref, strict=True):
        for got, want in ((st.values["W"].fraction_at((0, 0)), rw), (st.values["b"].fraction_at((0,)), rb)):
            assert abs(got - want) <= abs(want) * Fraction(1, 2**180)  # 60 roundings of 2**-200, amplified a little
        bits = max(int(i).bit_length() for i in st.values["W"].ints.ravel())
        assert bits <= TRAJECTORY_EXACT_BITS  # rounded back to 200 bits whenever they pass it


def test_round_significant_keeps_short_values_and_rounds_long_ones_relatively():
    short = ScaledInts.from_floats(np.array([1.5, -2.0**-1074, 0.0, 2.0**1000]))
    same = round_significant(short, 200)
    assert [same.fraction_at((i,)) for i in range(4)] == [short.fraction_at((i,)) for i in range(4)]
    vals = [Fraction(1, 3), Fraction(-10**80, 7), Fraction(2, 3 * 10**90)]
    arr = np.empty(3, dtype=object)
    arr[:] = vals
    r = round_significant(ScaledInts.from_fractions(arr), 200)
    for i, v in enumerate(vals):
        assert abs(r.fraction_at((i,)) - v) <= abs(v) * Fraction(1, 2**199)
    assert r.scale.numerator == 1 and r.scale.denominator & (r.scale.denominator - 1) == 0  # a power of two


def test_a_thousand_steps_complete_and_are_graded_with_drift():
    case = harness.make_case("long", [[1.0], [2.0]], [[3.0], [5.0]], [[2.3]], [1.4], lr="0.1", steps=1000, dtypes=["float64"])
    inp = exact_inputs_from_floats(case.values)
    traj = exact_trajectory(inp, Fraction(float(case.lr)), case.reduction, 1000)
    assert len(traj) == 1000
    last = traj[-1].values["W"]
    assert decimal_string(last.fraction_at((0, 0))).startswith("1.99999999999998")  # no "Exceeds the limit (4300 digits)"
    recs = verify([case], ["numpy-hand"], dtypes=["float64"])
    assert len(recs) == 5000 and {r.verdict for r in recs} == {"agree"}
    drift = [r.drift_ulp_error for r in recs if r.quantity == "W"]
    assert all(d is not None and d < 1000 for d in drift)


def test_a_ragged_array_is_counted_by_its_longest_row(tmp_path):
    path = _write(tmp_path, '[[case]]\nid = "ragged"\nX = [[1.0], [' + ", ".join(["1.0"] * 5000) + ']]\ny = [[1.0], [2.0]]\n'
                  'W = [[1.0]]\nb = [0.0]\nlr = "0.1"\n')
    (err,) = load_cases([path], limits=Limits(max_elements=1000)).errors
    assert isinstance(err, LimitError) and "D=5,000" in str(err)


def test_long_lists_are_checked_in_linear_time(tmp_path):
    shapes = ", ".join(f"[1, 1, {i}]" for i in range(1, 20_001))
    header = ",".join(f"c{i}" for i in range(50_000))
    (tmp_path / "wide.csv").write_text(header + ",y\n" + ",".join(["1"] * 50_001) + "\n")
    path = _write(tmp_path, f'[[generate]]\nname = "many"\nseed = 1\nshapes = [{shapes}, [1, 1, 1]]\n'
                            '[[case]]\nid = "wide"\ndata = "wide.csv"\nW = [[1.0]]\nb = [0.0]\nlr = "0.1"\n')
    start = time.monotonic()
    errs = load_cases([path], limits=Limits(max_elements=10_000)).errors
    assert time.monotonic() - start < 5
    assert [e.key for e in errs] == ["data", "shapes"] and "[1, 1, 1]" in str(errs[1]) and "--max-elements" in str(errs[0])
