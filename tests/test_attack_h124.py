"""helper-124: results files edited by hand that `report --exit-status` passed (exit 0) while their own data showed a
failure or lost records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.records import Record, read_jsonl

ENV = {"kind": "environment", "hostname": "h", "run": "run-1"}


def disagree() -> dict[str, Any]:
    """A disagree record as `check` writes it (the figures of a grad_W off by 0.1% in float32; every field of a Record
    present, as check writes them: a record without one fails the run, helper-181)."""
    blank = Record(case="seed", implementation="wrong", device="cpu", dtype="float32", quantity="grad_W", step=1,
                   verdict="disagree").to_json()
    return {**blank, "case": "seed", "implementation": "wrong", "device": "cpu", "dtype": "float32", "quantity": "grad_W",
            "step": 1, "verdict": "disagree", "shape": [1, 1], "max_abs_error": 0.000180975, "bound_ratio": 81.47,
            "expected_ratio": 81.47, "worst_index": [0, 0], "exact": "0.18119835853576660156...",
            "exact_rational": "1520002/8388608", "computed": "0.18137933313846588", "rigorous_bound": 2.22137e-06,
            "expected_bound": 2.22137e-06, "abs_error_at_worst": 0.000180975, "counts": {"disagree": 1}, "kind": "record"}


def agree() -> dict[str, Any]:
    return {**disagree(), "quantity": "loss", "shape": [], "worst_index": [], "verdict": "agree", "bound_ratio": 0.1,
            "expected_ratio": 0.1, "computed": "0.18119835853576660156", "abs_error_at_worst": 0.0,
            "max_abs_error": 0.0, "counts": {"agree": 1}}


def write(path: Path, records: list[dict[str, Any]], footer_records: int | None = None) -> Path:
    n = len(records) if footer_records is None else footer_records
    verdicts: dict[str, int] = {}  # (as run_end counts them; a run-end line without them fails, helper-146)
    for r in records:
        verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
    bugs = sum(1 for r in records if r.get("known_bug"))
    lines = [ENV, *records, {"kind": "run-end", "run": "run-1", "completed": True, "records": n, "verdicts": verdicts,
                             "known_bugs": bugs, "load_errors": len(ENV.get("load_errors", []))}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def report_exit(path: Path) -> int:
    return main(["report", str(path), "-o", str(path.with_suffix(".html")), "--exit-status"])


EDITS = {
    # verdict and ratios edited, the worst element's exact and computed values left as they were
    "ratios": {"verdict": "agree", "counts": {"agree": 1}, "bound_ratio": 0.1, "expected_ratio": 0.1,
               "abs_error_at_worst": 2e-8, "max_abs_error": 2e-8},
    # negative figures
    "negative": {"verdict": "agree", "counts": {"agree": 1}, "bound_ratio": -1.0, "expected_ratio": -1.0,
                 "abs_error_at_worst": -1.0},
    # counts emptied and every figure nulled
    "nulls": {"verdict": "agree", "counts": {}, "bound_ratio": None, "expected_ratio": None,
              "abs_error_at_worst": None, "rigorous_bound": None, "expected_bound": None},
    # counts of fewer elements than the shape holds
    "counts": {"verdict": "agree", "shape": [4, 2], "counts": {"agree": 1}, "bound_ratio": 0.1, "expected_ratio": 0.1,
               "abs_error_at_worst": 2e-8, "computed": "0.18119835853576660156"},
    # disagree edited to overflow (its finite worst element still beyond the bounds)
    "overflow": {"verdict": "overflow", "counts": {"overflow": 1}},
    # disagree edited to a whole run's unsupported (not graded)
    "whole-run": {"verdict": "unsupported", "quantity": "*", "counts": {}},
    # disagree edited to unsupported (not graded), its exact value still there
    "unsupported": {"verdict": "unsupported", "counts": {"agree": 1}},
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_a_disagree_record_edited_to_pass_is_malformed(tmp_path, edit, capsys):
    path = write(tmp_path / "r.jsonl", [agree(), {**disagree(), **EDITS[edit]}])
    res = read_jsonl(path)
    assert res.malformed_count == 1, [r.verdict for r in res.records]
    assert report_exit(path) == 2
    assert "contradicts its own figures" in capsys.readouterr().err


def test_records_deleted_from_a_completed_run_fail_the_exit_status(tmp_path, capsys):
    """A completed run's file with its failing lines deleted: the footer still counts them. It was a warning and
    `report --exit-status` exited 0."""
    path = write(tmp_path / "r.jsonl", [agree()], footer_records=2)
    assert report_exit(path) == 2
    err = capsys.readouterr().err
    assert "its run-end line counts 2 record(s); the file holds 1" in err and "exit 2: bad input" in err
    whole = write(tmp_path / "ok.jsonl", [agree(), disagree()])
    assert report_exit(whole) == 1
    fine = write(tmp_path / "fine.jsonl", [agree()])
    assert report_exit(fine) == 0


def test_a_case_that_could_not_be_loaded_is_in_the_results_file(tmp_path, capsys):
    """`check` exits 2 when a case could not be loaded, but its results file read as a clean, completed run:
    `report --exit-status` on it (the shards' merge step) exited 0."""
    cases = tmp_path / "c.toml"
    body = ('X = [[1.0, 2.0]]\ny = [[3.0]]\nW = [[0.5], [0.25]]\nb = [1.0]\nsteps = 1\nreduction = "sum"\n'
            'dtypes = ["float64"]\n')
    cases.write_text(f'[[case]]\nid = "good"\n{body}lr = 0.1\n\n[[case]]\nid = "bad"\n{body}lr = -0.1\n')
    results = tmp_path / "r.jsonl"
    assert main(["check", "--cases", str(cases), "--implementations", "numpy-hand", "--isolation", "inline",
                 "--results", str(results), "--report", "none", "-q"]) == 2
    env = json.loads(results.read_text().splitlines()[0])
    assert len(env["load_errors"]) == 1 and "case 'bad', key 'lr'" in env["load_errors"][0]
    capsys.readouterr()
    assert report_exit(results) == 2
    err = capsys.readouterr().err
    assert "could not load" in err and "exit 2: bad input" in err


def test_a_run_ended_by_another_runs_footer_fails_the_exit_status(tmp_path, capsys):
    """A killed run's file (no footer) with another run's completed footer appended read as a completed run."""
    path = write(tmp_path / "r.jsonl", [agree()])
    lines = path.read_text().splitlines()
    end = {**json.loads(lines[-1]), "run": "run-0"}
    path.write_text("\n".join([*lines[:-1], json.dumps(end)]) + "\n")
    assert report_exit(path) == 2
    assert "its run-end line names another run, 'run-0'" in capsys.readouterr().err


def test_a_known_bug_added_by_hand_is_malformed(tmp_path, capsys):
    """A failing record given a known_bug by hand was reported, not counted: `report --exit-status` exited 0."""
    path = write(tmp_path / "r.jsonl", [agree(), {**disagree(), "known_bug": "fake"}])
    assert report_exit(path) == 2
    assert "its known_bug \"fake\" is not the one its message names" in capsys.readouterr().err
    named = {**disagree(), "known_bug": "fake", "message": "known framework bug: fake; grad_W: 1 of 1 element(s) above"}
    assert report_exit(write(tmp_path / "s.jsonl", [agree(), named])) == 0  # (as the harness writes it: not counted)


def test_a_dtype_given_twice_is_a_case_error(tmp_path, capsys):
    """`dtypes = ["float32", "float32"]` ran the case twice in float32: every record twice, without a word."""
    cases = tmp_path / "c.toml"
    body = 'X = [[1.0]]\ny = [[3.0]]\nW = [[0.5]]\nb = [1.0]\nsteps = 1\nreduction = "sum"\nlr = 0.1\n'
    cases.write_text(f'[[case]]\nid = "good"\n{body}\n[[case]]\nid = "twice"\n{body}dtypes = ["float32", "float32"]\n')
    assert main(["cases", "--cases", str(cases)]) == 2
    captured = capsys.readouterr()
    assert "case 'twice', key 'dtypes': dtype 'float32' given twice" in captured.err and "good" in captured.out
