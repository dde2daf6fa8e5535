"""Rough edges a new user meets first: case files where cases go, a CSV given as a case file, `derive --help`,
selecting pytest items by dtype."""

from __future__ import annotations

import subprocess
import sys

import pytest

import harness
from harness.cases import as_cases
from harness.cli import main
from harness.errors import CaseFileError
from tests.conftest import CASES, ROOT


def test_verify_and_assert_agrees_take_case_files_as_str_and_path():
    recs = harness.verify(str(CASES / "seed.toml"), ["numpy-hand"], dtypes="float64")
    assert {r.case for r in recs} == {"seed", "seed-mean"}
    recs = harness.assert_agrees("numpy-hand", CASES / "semantics.toml", dtypes="float64")
    assert {r.case for r in recs} == {"semantics-accumulation", "semantics-below-resolution"}
    mixed = as_cases([CASES / "seed.toml", *as_cases(str(CASES / "semantics.toml"))])
    assert [c.id for c in mixed] == ["seed", "seed-mean", "semantics-accumulation", "semantics-below-resolution"]


def test_as_cases_refuses_what_is_not_cases(tmp_path):
    with pytest.raises(CaseFileError, match="no such file or folder"):
        as_cases(str(tmp_path / "missing.toml"))
    with pytest.raises(TypeError, match="got dict"):
        as_cases([{"id": "x"}])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="got int"):
        as_cases(5)  # type: ignore[arg-type]


def test_a_csv_given_as_a_case_file_shows_the_data_form_and_that_form_loads(tmp_path, capsys):
    data = tmp_path / "mydata.csv"
    data.write_text("x,y\n1,3\n2,5\n4,9\n")
    assert main(["check", "--cases", str(data), "--report", "none", "--results", str(tmp_path / "r.jsonl")]) == 2
    err = capsys.readouterr().err
    assert 'a CSV file is data, not a case file; write a case file next to it, e.g. mydata.toml with the lines: [[case]] / ' \
           'id = "mydata" / data = "mydata.csv" / W = [[0.0]] / b = [0.0] / lr = "0.01"' in err
    assert f"then run --cases {tmp_path / 'mydata.toml'}" in err
    assert not (tmp_path / "r.jsonl").exists()
    # the form the message shows is a working case file
    (tmp_path / "mydata.toml").write_text('[[case]]\nid = "mydata"\ndata = "mydata.csv"\nW = [[0.0]]\nb = [0.0]\nlr = "0.01"\n')
    (case,) = as_cases(tmp_path / "mydata.toml")
    assert case.shape == (3, 1, 1)


def test_derive_help_describes_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["derive", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for described in ("--reduction {sum,mean,both} the loss:", "--format {text,latex,mathml} how to print the formulas:",
                      "--no-check skip the cross-check"):
        assert described in text


def test_the_readme_selection_of_float16_items_selects_no_bfloat16_item():
    readme = (ROOT / "README.md").read_text()
    expr = 'zeros and float16 and not bfloat16'
    assert f'-k "{expr}"' in readme
    out = subprocess.run([sys.executable, "-m", "pytest", "tests/test_sweep.py", "--collect-only", "-q", "-k", expr, "-m", "not cuda",
                          "-p", "no:randomly"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    ids = [line for line in out.stdout.splitlines() if line.startswith("tests/test_sweep.py::")]
    assert ids and all("-float16-" in i and "zeros" in i and "bfloat16" not in i for i in ids), out.stdout[-2000:]
    # why the README's expression says "and not bfloat16": -k matches substrings of the id
    assert "float16" in "gen-grid-zeros-n1-d1-k1-sum-s1-bfloat16-torch-seed-cpu"


def test_selftest_progress_moves_case_by_case_not_only_per_implementation():
    from harness.selftest import run_selftest

    cases = as_cases(CASES / "seed.toml")  # seed (float32, float64), seed-mean (four dtypes): 6 case/dtype units
    calls: list[tuple[int, int]] = []
    res = run_selftest(cases, progress_count=lambda done, total, label: calls.append((done, total)))
    (total,) = {t for _, t in calls}
    correct, rest = divmod(total - len(res.mutants), 6)  # the mutants, then each correct default built-in: 6 units each
    assert rest == 0 and correct >= 8
    impls = len(res.mutants) + correct
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and calls[-1][0] == total
    assert len(calls) > impls  # a call per case and dtype of each correct implementation, not one per implementation
