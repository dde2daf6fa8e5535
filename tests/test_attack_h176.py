"""helper-176: an adversary's pass over what the harness reads and writes besides a step's numbers (case files,
results files, reports, killed runs).

A loss below its floor (:class:`harness.bounds.LossFloor`) is ``disagree`` while its error is within every two-sided
bound; its record carried nothing that showed the floor, so a results file edited from ``disagree`` to ``agree`` (the
verdict and counts only) was read as one agreeing record and ``report --exit-status`` passed it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.records import check_record, read_jsonl
from tests.test_attack_h124 import agree, report_exit, write


def below_floor() -> dict[str, Any]:
    """A float16 loss record as `check` writes it for a loss of a thousandth of the exact one (tests/test_loss_floor's
    ``thousandth``, N = 12,288): computed 28.59 below the floor 70.30 (about exact (1 - u)^(m + 6), the hand formula
    there), its error 0.0025 of the rigorous bound and 0.27 of the expected one."""
    return {"case": "floor-float16-12288", "implementation": "t171", "device": "cpu", "dtype": "float16",
            "quantity": "loss", "step": 1, "verdict": "disagree", "shape": [], "max_abs_error": 28562.850463867188,
            "bound_ratio": 0.002467883784181102, "expected_ratio": 0.27310727642731536, "worst_index": [],
            "exact": "28591.4442138671875", "exact_rational": "234221111/8192", "computed": "28.59375",
            "rigorous_bound": 11573823.1463541, "expected_bound": 104584.72889303954,
            "abs_error_at_worst": 28562.850463867188, "lower_limit": 70.29897095806753, "counts": {"disagree": 1},
            "message": "loss: 28.59375 is below the least value any evaluation order can give for a sum of "
                       "non-negative terms", "kind": "record"}


EDITS = {
    "agree": {"verdict": "agree", "counts": {"agree": 1}, "message": ""},
    "suspect": {"verdict": "suspect", "counts": {"suspect": 1}, "message": ""},
    "unsupported": {"verdict": "unsupported", "counts": {"agree": 1}, "exact": "nan"},
    "floor-negative": {"verdict": "agree", "counts": {"agree": 1}, "lower_limit": -1.0},
    "floor-nan": {"verdict": "agree", "counts": {"agree": 1}, "lower_limit": "nan"},
    # the computed value written in a form no check reads (float.hex), so that nothing compares it with the floor
    "hex": {"verdict": "agree", "counts": {"agree": 1}, "computed": "0x1.c98p+4"},
}


def test_the_below_floor_record_itself_reads_back():
    """The record unedited is a valid disagree record (the check below is not a blanket refusal of lower_limit)."""
    assert check_record(below_floor())["lower_limit"] == pytest.approx(70.299, rel=1e-4)


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_a_below_floor_loss_edited_to_pass_is_malformed(tmp_path, edit, capsys):
    path = write(tmp_path / "r.jsonl", [agree(), {**below_floor(), **EDITS[edit]}])
    res = read_jsonl(path)
    assert res.malformed_count == 1 and [r.verdict for r in res.records] == ["agree"], res.warnings
    assert report_exit(path) == 2
    assert ("lower_limit" if edit != "hex" else "is not a number") in capsys.readouterr().err


def test_a_loss_above_its_floor_agrees_with_it():
    """A correct loss whose floor was formed (below the floor's ceiling, above the floor): agree reads back."""
    rec = {**below_floor(), "verdict": "agree", "counts": {"agree": 1}, "computed": "70.3125", "message": "",
           "abs_error_at_worst": 28521.1317138671875, "max_abs_error": 28521.1317138671875}
    assert check_record(rec)["verdict"] == "agree"


def test_check_writes_the_floor_into_a_below_floor_record():
    """The grader writes the floor it graded against (the figure the checks above rest on), for the linear step."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from tests.test_loss_floor import N16, _loss_record, _sum16, _values

    (rec,) = _loss_record(_values(N16, 171), "float16", lambda R, c, dt, t: dt(_sum16(R) / 1000))
    assert rec.verdict == "disagree" and rec.lower_limit is not None
    assert float(rec.computed or "nan") < rec.lower_limit < float(rec.exact or "nan")
    line = json.loads(json.dumps(rec.to_json()))
    assert check_record(line)["verdict"] == "disagree"
    with pytest.raises(ValueError, match="below its lower_limit"):
        check_record({**line, "verdict": "agree", "counts": {"agree": 1}})


def test_the_model_grader_writes_the_floor_too():
    """The same on the model path (tests/test_models_loss_floor's relu float16 case, N = 4,096, its loss / 1000)."""
    from tests.test_models_loss_floor import HOSTILE, RELU, _case, _loss_records

    (rec,) = _loss_records(_case(RELU, 4096, "float16"), "float16", HOSTILE["thousandth"])
    assert rec.verdict == "disagree" and rec.lower_limit is not None
    assert float(rec.computed or "nan") < rec.lower_limit
    with pytest.raises(ValueError, match="below its lower_limit"):
        check_record({**rec.to_json(), "verdict": "agree", "counts": {"agree": 1}})


# ---- an expression's constant beyond the dtype's range -------------------------------------------------------------

CONSTANT_CASE = """
[[case]]
id = "{id}"
X = [[1.0], [0.5]]
y = [[3.0], [1.0]]
lr = 0.125
model = {{ expression = "{expr}", parameters = ["a"] }}
params = {{ a = 1.0 }}
dtypes = ["float64", "float32"]
"""


@pytest.mark.parametrize(("expr", "over"), [("a*1e39*x", {"float32"}), ("a*1e400*x", {"float32", "float64"}),
                                            ("a*" + "9" * 322 + "*x", {"float32", "float64"})])
def test_a_constant_beyond_the_dtype_is_invalid_input_not_a_harness_failure(tmp_path, expr, over):
    """1e39 is above float32's largest finite value (3.4e38) and 1e400 above float64's (1.8e308): a step holds the
    constant as inf (or torch refuses the conversion), a property of the case, as a learning rate beyond the range is.
    Each was a harness failure while grading, an ``error`` record for a correct step (``float(Fraction(10**400))``
    overflowed; 1e39 rounded to float32 is inf, and ``Fraction(inf)`` raised)."""
    import harness
    from harness.cases import load_cases

    path = tmp_path / "c.toml"
    path.write_text(CONSTANT_CASE.format(id="big-constant", expr=expr))
    loaded = load_cases([str(path)])
    assert not loaded.errors
    recs = harness.verify(loaded.cases, ["torch-model-functional"])
    by_dtype: dict[str, list[Any]] = {}
    for r in recs:
        by_dtype.setdefault(r.dtype, []).append(r)
    for dtype, rs in by_dtype.items():
        if dtype in over:
            assert [(r.quantity, r.verdict) for r in rs] == [("*", "invalid-input")], [(r.verdict, r.message) for r in rs]
            assert "the model's constant" in rs[0].message and f"overflows {dtype}" in rs[0].message
        else:  # 1e39 in float64: graded, and a correct step passes
            assert {r.verdict for r in rs} <= {"agree", "suspect"}, [(r.verdict, r.message) for r in rs]
    assert set(by_dtype) == {"float32", "float64"}


# ---- an implementation named on the command line that runs on none of the cases ------------------------------------


def test_a_named_implementation_that_runs_on_no_case_fails_the_check(tmp_path, capsys):
    """numpy-model implements models only (linear, mlp, polynomial): on the linear seed case it has no task and no
    record, and ``check --implementations numpy-hand,numpy-model`` exited 0 on numpy-hand's 40 agree records, the
    implementation the user named unchecked (as one that runs on no device of the machine did, helper-60)."""
    from harness.cli import main
    from tests.edited_results import SEED_RUN

    run = [*SEED_RUN, "--results", str(tmp_path / "r.jsonl")]
    run[run.index("numpy-hand")] = "numpy-hand,numpy-model"
    assert main(run) == 1
    out = "".join(capsys.readouterr())
    assert "numpy-model, named in the implementations, ran on none of the cases" in out
    assert len(read_jsonl(tmp_path / "r.jsonl").records) == 40  # numpy-hand's, graded as ever


def test_the_pytest_plugin_fails_a_named_implementation_with_no_item(pytester, monkeypatch):
    """The plugin's parametrization skips a pair the implementation does not run (harness.runner.case_mismatch): with
    ``--harness-implementations numpy-hand,numpy-model`` on a linear case numpy-model got no item and no record, and
    the session passed (exit 0); its items deselected with ``-k`` are still not counted against it."""
    from tests.test_pytest_plugin import CASE_FILE, _env

    _env(monkeypatch)
    pytester.makefile(".toml", cases=CASE_FILE)
    pytester.makepyfile(test_sweep='''
def test_one(harness_case, harness_dtype, harness_implementation, harness_device, harness_check):
    harness_check(harness_case, harness_implementation, harness_device, harness_dtype)
''')
    args = ["-p", "harness.pytest_plugin", "-p", "no:cacheprovider", "--harness-cases", "cases.toml",
            "--harness-dtypes", "float64", "--harness-devices", "cpu"]
    result = pytester.runpytest_subprocess(*args, "--harness-implementations", "numpy-hand,numpy-model")
    assert result.ret == 1, result.stdout.str()
    assert "numpy-model, named in the implementations, ran on none of the cases" in result.stdout.str()
    ok = pytester.runpytest_subprocess(*args, "--harness-implementations", "numpy-hand,torch-seed", "-k", "not torch")
    assert ok.ret == 0, ok.stdout.str()


# ---- case ids that forge or hide lines of the output ---------------------------------------------------------------

ID_CASE = """
[[case]]
id = "{id}"
X = [[1.0]]
y = [[3.0]]
W = [[2.0]]
b = [1.0]
lr = 0.1
dtypes = ["float64"]
"""


@pytest.mark.parametrize(("written", "code"), [(r"x\nexit 0: every graded record passes", "U+000A"),
                                               (r"x\u001b[8m", "U+001B"), (r"x\r", "U+000D"),
                                               (r"x\u202Eevil", "U+202E"), (r"x\u2028y", "U+2028")])
def test_an_id_with_an_unprintable_character_is_refused_and_the_others_load(tmp_path, written, code):
    """A newline in an id printed a line of the id's choosing in check's table (``exit 0: every graded record
    passes`` above a failing run's real last line), ESC [ 8 m concealed the rest of the terminal's table, U+202E
    reversed it; each is refused naming the file, the case and the key, and the next case loads."""
    from harness.cases import load_cases

    path = tmp_path / "c.toml"
    path.write_text(ID_CASE.format(id=written) + ID_CASE.format(id="fine \u00fcn\u00efc\u00f8d\u00e9 $(id) a/b"))
    loaded = load_cases([str(path)])
    assert [c.id for c in loaded.cases] == ["fine \u00fcn\u00efc\u00f8d\u00e9 $(id) a/b"]
    (err,) = loaded.errors
    assert str(err).startswith(f"{path}, case ") and "key 'id'" in str(err) and code in str(err)
    assert "\n" not in str(err) and "\x1b" not in str(err)


def test_an_id_with_a_zero_width_joiner_or_non_joiner_loads():
    """U+200C and U+200D (format characters, as U+202E) spell Persian words and emoji sequences and neither move nor
    hide text: ids holding them load (helper-179 found them refused), while U+202E beside them is still refused."""
    import tempfile
    from pathlib import Path

    from harness.cases import load_cases

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.toml"
        ids = ["\u0646\u0645\u0648\u0646\u0647\u200c\u0627\u06cc", "\U0001F469\u200d\U0001F52C"]
        path.write_text("".join(ID_CASE.format(id=i) for i in [*ids, "x\\u200d\\u202Eevil"]))
        loaded = load_cases([str(path)])
        assert [c.id for c in loaded.cases] == ids
        (err,) = loaded.errors
        assert "U+202E" in str(err) and "key 'id'" in str(err)
