"""Case files: exact decimal parsing, CSV cases, and clear errors naming file, case and key."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from harness.cases import case_from_arrays, load_cases, make_case
from harness.errors import CaseFileError
from tests.conftest import CASES


def test_seed_case_is_exact_as_written():
    res = load_cases([CASES / "seed.toml"])
    assert not res.errors
    seed = next(c for c in res.cases if c.id == "seed")
    assert seed.written["W"][0, 0] == Fraction(23, 10)
    assert seed.lr == Fraction(1, 10)
    assert seed.values["W"][0, 0] == 2.3
    assert seed.steps == 8 and seed.reduction == "sum"
    assert seed.lr_in(__import__("harness.floats", fromlist=["FLOAT32"]).FLOAT32) == float(np.float32(0.1))


def _write(tmp_path, body):
    p = tmp_path / "c.toml"
    p.write_text(body)
    return p


GOOD = 'X = [[1.0]]\ny = [[2.0]]\nW = [[0.5]]\nb = [0.0]\nlr = 0.1\n'


@pytest.mark.parametrize("extra,key,needle", [
    ("colour = 1\n", "colour", "unknown key"),
    ('reduction = "median"\n', "reduction", "reduction must be one of"),
    ("steps = 0\n", "steps", "positive integer"),
    ('dtypes = ["float8"]\n', "dtypes", "unknown dtype"),
])
def test_bad_keys_are_named(tmp_path, extra, key, needle):
    p = _write(tmp_path, '[[case]]\nid = "c1"\n' + GOOD + extra)
    res = load_cases([p])
    assert not res.cases
    (err,) = res.errors
    assert err.key == key and err.case_id == "c1" and err.path == str(p)
    assert needle in str(err)
    assert str(err).startswith(f"{p}, case 'c1', key '{key}': ")


def test_wrong_types_and_shapes(tmp_path):
    body = ('[[case]]\nid = "a"\nX = [[1.0, "x"]]\ny = [[1.0]]\nW = [[1.0], [1.0]]\nb = [0.0]\nlr = 0.1\n'
            '[[case]]\nid = "b"\nX = [[1.0], [2.0, 3.0]]\ny = [[1.0]]\nW = [[1.0]]\nb = [0.0]\nlr = 0.1\n'
            '[[case]]\nid = "c"\nX = [[1.0]]\ny = [[1.0], [2.0]]\nW = [[1.0]]\nb = [0.0]\nlr = 0.1\n'
            '[[case]]\nid = "d"\nX = [[1.0]]\ny = [[1.0]]\nW = [[1.0]]\nb = [0.0]\nlr = -1\n'
            '[[case]]\nid = "e"\n' + GOOD)
    res = load_cases([_write(tmp_path, body)])
    assert [c.id for c in res.cases] == ["e"]
    assert [(e.case_id, e.key) for e in res.errors] == [("a", "X"), ("b", "X"), ("c", "y"), ("d", "lr")]


def test_nan_input_loads_and_is_invalid_input_at_run_time(tmp_path):
    p = _write(tmp_path, '[[case]]\nid = "nan"\nX = [[nan]]\ny = [[2.0]]\nW = [[0.5]]\nb = [0.0]\nlr = 0.1\n')
    (case,) = load_cases([p]).cases
    assert not case.finite
    from harness.runner import verify

    recs = verify([case], ["numpy-hand"], dtypes=["float32"])
    assert [r.verdict for r in recs] == ["invalid-input"]
    assert "NaN" in recs[0].message


def test_duplicate_ids_and_missing_files(tmp_path):
    p = _write(tmp_path, '[[case]]\nid = "x"\n' + GOOD + '[[case]]\nid = "x"\n' + GOOD)
    res = load_cases([p, tmp_path / "missing.toml"])
    assert len(res.cases) == 1
    assert [e.key for e in res.errors] == ["id", None]
    assert "duplicate id" in str(res.errors[0]) and "no such file" in str(res.errors[1])


def test_make_case_from_strings_is_exact():
    c = make_case("m", [["0.1", "0.2"]], ["0.3"], [["1"], ["1"]], ["0"], lr="0.5")
    assert c.written["X"][0, 0] == Fraction(1, 10)
    assert c.shape == (1, 2, 1)
    with pytest.raises(CaseFileError, match="key 'W'"):
        make_case("m", [["0.1", "0.2"]], ["0.3"], [["1"]], ["0"], lr="0.5")


@pytest.mark.parametrize(("settings", "key"), [
    ({"lr": -0.1}, "lr"),
    ({"lr": 0}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"steps": 0}, "steps"),
    ({"steps": 1.5}, "steps"),
    ({"steps": True}, "steps"),
    ({"reduction": "max"}, "reduction"),
    ({"dtypes": ["float8"]}, "dtypes"),
])
def test_both_constructors_share_one_validation(settings, key):
    """make_case and case_from_arrays reject the same settings with the same message (one function)."""
    kw = {"lr": "0.1", "steps": 1, "reduction": "sum", "dtypes": ["float32"], **settings}
    messages = []
    for build in (make_case, case_from_arrays):
        with pytest.raises(CaseFileError) as info:
            build("c", [[1.0]], [[2.0]], [[0.5]], [0.0], **kw)
        assert info.value.key == key
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def test_case_from_arrays_keeps_the_exact_learning_rate():
    case = case_from_arrays("c", [[1.0]], [[2.0]], [[0.5]], [0.0], lr=Fraction(1, 10), dtypes="float64")
    assert case.lr == Fraction(1, 10) and case.dtypes == ("float64",)
