"""The exact results a case shares between implementations (harness.runner.CaseCache) are keyed by the
inputs each implementation saw: frameworks round the same written value differently, and an implementation
is graded against the exact step of its own inputs whatever ran before it in the process."""

from __future__ import annotations

import numpy as np
import torch

from harness.cases import case_from_arrays
from harness.implementations import resolve
from harness.runner import CaseCache, check_case, inputs_digest

# float64 values just above a float16 rounding midpoint and within half a float32 ULP of it: numpy (and the
# harness) round them up to float16, torch's float64-to-float16 conversion rounds twice (through float32) and down
TIES = [1.391113303138466, 2.625976565928814, 0.8088379075156921]


def _case():
    X = np.array([[0.5], [1.0], [-0.25]])
    y = np.array(TIES).reshape(3, 1)
    return case_from_arrays("double-rounding", X, y, np.array([[0.75]]), np.array([0.125]), lr=0.0625, reduction="sum",
                            dtypes=("float16",), steps=2, tags=("test",))


def test_frameworks_round_the_written_values_differently():
    y = np.array(TIES)
    numpy_f16 = y.astype(np.float16).astype(np.float64)
    torch_f16 = torch.tensor(y).to(torch.float16).double().numpy()
    assert (numpy_f16 != torch_f16).all()  # the premise of the test below (a torch that rounds once makes it moot)


def test_each_implementation_is_graded_on_its_own_inputs_whatever_ran_first():
    case = _case()
    numpy_hand, torch_seed = resolve(["numpy-hand", "torch-seed"])
    alone = {r.quantity + str(r.step): r for r in check_case(case, torch_seed, "cpu", "float16", cache=CaseCache(case))}
    shared = CaseCache(case)
    check_case(case, numpy_hand, "cpu", "float16", cache=shared)  # fills the shared cache with numpy's inputs first
    after = {r.quantity + str(r.step): r for r in check_case(case, torch_seed, "cpu", "float16", cache=shared)}
    assert alone.keys() == after.keys()
    for key, rec in alone.items():
        assert (rec.exact_rational, rec.trajectory_exact, rec.verdict, rec.rigorous_bound) == (
            after[key].exact_rational, after[key].trajectory_exact, after[key].verdict, after[key].rigorous_bound), key


def test_inputs_digest_tells_apart_values_shapes_and_names():
    a = {"X": np.zeros((2, 1)), "y": np.ones((2, 1))}
    assert inputs_digest(a) == inputs_digest({k: v.copy() for k, v in a.items()})
    assert inputs_digest(a) != inputs_digest({"X": np.zeros((1, 2)), "y": np.ones((2, 1))})
    assert inputs_digest(a) != inputs_digest({"X": np.zeros((2, 1)), "y": np.array([[1.0], [np.nextafter(1.0, 2)]])})
    assert inputs_digest(a) != inputs_digest({"Y": np.zeros((2, 1)), "y": np.ones((2, 1))})


def test_inputs_id_is_bitwise():
    cache = CaseCache(_case())
    a = {"X": np.zeros((2, 1)), "y": np.ones((2, 1))}
    first = cache.inputs_id(a)
    assert cache.inputs_id({k: v.copy() for k, v in a.items()}) == first
    assert cache.inputs_id({"X": -np.zeros((2, 1)), "y": np.ones((2, 1))}) != first  # -0.0 is not 0.0, bit for bit
    assert cache.inputs_id({"X": np.zeros((1, 2)), "y": np.ones((2, 1))}) not in (first,)
    assert cache.inputs_id({"X": np.zeros((2, 1)), "Y": np.ones((2, 1))}) not in (first,)


def test_pytest_plugin_keeps_cases_of_one_id_from_two_files_apart(pytestconfig, tmp_path):
    """Case ids repeat across case files: the plugin's cache of exact results is per id and file."""
    import dataclasses

    from harness.pytest_plugin import HarnessState

    state = HarnessState(pytestconfig)
    a = _case()
    b = dataclasses.replace(a, source=str(tmp_path / "other.toml"))
    assert a.id == b.id and a.source != b.source
    assert state.case_cache(a) is not state.case_cache(b)
    assert state.case_cache(a) is state.case_cache(a)


def test_cases_built_in_code_with_one_id_do_not_share_exact_results(pytestconfig):
    """Cases built in code all have the source "<memory>" and may repeat an id: a worker's cache (and the pytest
    plugin's) serves a case only if it is that case (same values, learning rate, steps, reduction...)."""
    import dataclasses

    from harness.pytest_plugin import HarnessState
    from harness.runner import RunOptions, grade_task

    a = _case()
    b = dataclasses.replace(a, reduction="mean")
    assert (a.id, a.source) == (b.id, b.source)
    fresh = [r.to_json() for r in check_case(b, resolve(["numpy-hand"])[0], "cpu", "float16", cache=CaseCache(b))]
    grade_task(a, "numpy-hand", "cpu", "float16", RunOptions())  # fills the worker's cache for (id, "<memory>")
    after = [r.to_json() for r in grade_task(b, "numpy-hand", "cpu", "float16", RunOptions())]
    assert after == fresh and {r["verdict"] for r in after} == {"agree"}
    state = HarnessState(pytestconfig)
    assert state.case_cache(a) is not state.case_cache(b)
    assert state.case_cache(b) is state.case_cache(b)
    assert CaseCache(a).serves(dataclasses.replace(a)) and not CaseCache(a).serves(b)
    c = dataclasses.replace(a, values={**a.values, "y": np.array(TIES[::-1]).reshape(3, 1)})
    assert not CaseCache(a).serves(c)


def test_serves_compares_the_written_values():
    from harness.cases import load_cases
    from tests.conftest import CASES

    a, b = (load_cases([CASES / "seed.toml"]).cases[0] for _ in range(2))
    assert a is not b and a.written is not None and CaseCache(a).serves(b)
    import dataclasses

    other = dict(a.written)
    key = next(iter(other))
    other[key] = other[key].copy()
    other[key].flat[0] = other[key].flat[0] + 1
    assert not CaseCache(a).serves(dataclasses.replace(b, written=other))


def test_a_case_changed_in_place_is_read_again_for_non_finite_inputs():
    """A caller that writes a NaN into a case's X between two checks sharing one cache gets invalid-input (the
    finiteness is read per check, not kept by the cache: a kept answer made it an overflow of the dtype)."""
    case = case_from_arrays("mutated", np.array([[0.5], [1.0]]), np.array([[1.0], [2.0]]), np.array([[0.75]]),
                            np.array([0.125]), lr=0.0625, reduction="sum", dtypes=("float64",), tags=("test",))
    impl = resolve(["numpy-hand"])[0]
    cache = CaseCache(case)
    assert {r.verdict for r in check_case(case, impl, "cpu", "float64", cache=cache)} == {"agree"}
    case.values["X"][0, 0] = np.nan
    records = check_case(case, impl, "cpu", "float64", cache=cache)
    assert [r.verdict for r in records] == ["invalid-input"] and "in X" in records[0].message
