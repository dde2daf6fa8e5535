"""helper-181: results files edited by hand that still read as passing.

Each attack edits a real results file (``check`` on ``cases/seed.toml``, numpy-hand, float64, inline: 40 agree
records), then reads it back (:func:`harness.records.read_jsonl`) and through ``report --exit-status``:

- a passing record whose ``computed`` was deleted (a disagree loss edited to agree: its computed value far from its
  exact one, beyond every bound, which ``contradiction`` names while the key is there), or whose ``lower_limit`` was
  deleted (a loss below its floor, within its two-sided bounds): nothing was left to check the verdict against, and
  the file passed. A run's environment line now declares its records' format (``records_format``): such a record is
  malformed; with the declaration deleted too, the run fails ``report --exit-status`` as one whose records cannot be
  checked;
- a whole-run ``error`` record edited to ``unsupported`` (the run-end line's counts edited to match) beside another
  implementation's agreeing records: ``check`` itself had failed (the implementation named graded nothing), ``report
  --exit-status`` passed. The environment line now names the implementations the run named (``named``), and ``report``
  applies the same rule (:func:`harness.verdicts.ungraded_named`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.records import RECORDS_FORMAT, Record, check_record, read_jsonl
from tests.edited_results import SEED_RUN, forget_plugins, raising_run_lines, report_exit_status


@pytest.fixture(autouse=True)
def _forget_test_plugins():
    yield
    forget_plugins("test-h181-")


@pytest.fixture(scope="module")
def seed_lines(tmp_path_factory) -> list[str]:
    """The lines of one check run's results file (numpy-hand on the seed case, float64: 40 agree records)."""
    path = tmp_path_factory.mktemp("h181") / "r.jsonl"
    assert main([*SEED_RUN, "--results", str(path)]) == 0
    return path.read_text().splitlines(keepends=True)


def _dumps(d: dict[str, Any]) -> str:
    return json.dumps(d) + "\n"


def _loss_far_from_exact(lines: list[str]) -> dict[str, Any]:
    """The seed run's loss record (line 2) with a computed value 0.11 from its exact value 0.49, beyond its rigorous
    bound 3.3e-15 (a wrong loss), its verdict left agree: the edit of a disagree record to agree."""
    d = json.loads(lines[1])
    assert d["quantity"] == "loss" and d["verdict"] == "agree" and d["computed"] == "0.4899999999999996"
    d["computed"] = "0.6"
    return d


def _loss_below_floor(lines: list[str]) -> dict[str, Any]:
    """The seed run's loss record with a computed value 1e-13 below its floor (``lower_limit`` 0.48999999999955), its
    bounds widened to 1e-11 so that the two-sided bounds allow it (as a float16 loss's do, helper-176), agree."""
    d = json.loads(lines[1])
    floor = d["lower_limit"]
    assert floor == pytest.approx(0.49, abs=1e-11) and floor < 0.49
    c = floor - 1e-13
    err = abs(c - 0.49)
    d.update(computed=repr(c), rigorous_bound=1e-11, expected_bound=1e-11, abs_error_at_worst=err, max_abs_error=err,
             bound_ratio=err / 1e-11, expected_ratio=err / 1e-11)
    return d


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


def test_the_environment_line_declares_the_records_format(seed_lines):
    env = json.loads(seed_lines[0])
    assert env["records_format"] == RECORDS_FORMAT == 2
    assert env["named"] == ["numpy-hand"] and env["unrun"] is True
    res = read_jsonl_of(seed_lines)
    assert res.malformed_count == 0 and res.runs[0].records_format == 2 and len(res.records) == 40


def read_jsonl_of(lines: list[str], tmp: Path | None = None):
    import tempfile

    folder = Path(tempfile.mkdtemp()) if tmp is None else tmp
    path = folder / "edited.jsonl"
    path.write_text("".join(lines))
    return read_jsonl(path)


@pytest.mark.parametrize(("edit", "key"), [("far", "computed"), ("floor", "lower_limit")])
def test_the_edited_record_with_its_key_is_refused(seed_lines, tmp_path, capsys, edit, key):
    """The check the deletion defeated: with the key, the edited record is malformed and the run fails."""
    d = (_loss_far_from_exact if edit == "far" else _loss_below_floor)(seed_lines)
    lines = [seed_lines[0], _dumps(d), *seed_lines[2:]]
    rc, err = report_exit_status(tmp_path, lines, capsys)
    assert rc == 2 and ("from its exact value" if edit == "far" else "below its lower_limit") in err


@pytest.mark.parametrize(("edit", "key"), [("far", "computed"), ("floor", "lower_limit")])
def test_a_passing_record_with_a_key_deleted_is_malformed(seed_lines, tmp_path, capsys, edit, key):
    d = (_loss_far_from_exact if edit == "far" else _loss_below_floor)(seed_lines)
    lines = [seed_lines[0], _dumps(_without(d, key)), *seed_lines[2:]]
    res = read_jsonl_of(lines, tmp_path)
    assert res.malformed_count == 1 and len(res.records) == 39  # the others are kept
    assert res.malformed[0].line == 2 and f"missing key {key!r}" in res.malformed[0].reason
    rc, err = report_exit_status(tmp_path, lines, capsys)
    assert rc == 2 and "edited.jsonl:2" in err and f"missing key {key!r}" in err and "records_format 2" in err


@pytest.mark.parametrize(("edit", "key"), [("far", "computed"), ("floor", "lower_limit")])
def test_a_key_deleted_with_the_format_declaration_fails_the_run(seed_lines, tmp_path, capsys, edit, key):
    """The environment line's ``records_format`` deleted too: the record is read (as an older harness's), and the run
    fails as one whose records cannot be checked, naming the line and the key."""
    d = (_loss_far_from_exact if edit == "far" else _loss_below_floor)(seed_lines)
    env = _without(json.loads(seed_lines[0]), "records_format")
    lines = [_dumps(env), _dumps(_without(d, key)), *seed_lines[2:]]
    res = read_jsonl_of(lines, tmp_path)
    assert res.malformed_count == 0 and len(res.records) == 40
    assert res.runs[0].miscounted is not None and f"line 2 lacks {key!r}" in res.runs[0].miscounted
    rc, err = report_exit_status(tmp_path, lines, capsys)
    assert rc == 2 and f"line 2 lacks {key!r}" in err and "declares no records_format" in err


@pytest.mark.parametrize("fmt", ["2", 1, None, True])
def test_a_format_edited_to_another_value_reads_as_undeclared(seed_lines, tmp_path, capsys, fmt):
    d = _without(_loss_far_from_exact(seed_lines), "computed")
    env = {**json.loads(seed_lines[0]), "records_format": fmt}
    rc, err = report_exit_status(tmp_path, [_dumps(env), _dumps(d), *seed_lines[2:]], capsys)
    assert rc == 2 and "line 2 lacks 'computed'" in err


def test_an_unedited_file_without_the_declaration_still_passes(seed_lines, tmp_path, capsys):
    """An older harness's file whose records hold every field (written between helper-176's round and this one) is
    not refused: only a record without a field is."""
    env = _without(json.loads(seed_lines[0]), "records_format")
    rc, err = report_exit_status(tmp_path, [_dumps(env), *seed_lines[1:]], capsys)
    assert rc == 0, err


def test_a_record_from_an_older_harness_reads_but_fails_the_run(seed_lines, tmp_path, capsys):
    """Every record without ``lower_limit`` (helper-176's field), no declaration: read and reported, the run failed."""
    env = _without(_without(json.loads(seed_lines[0]), "records_format"), "named")
    body = [_dumps(_without(json.loads(line), "lower_limit")) for line in seed_lines[1:-1]]
    res = read_jsonl_of([_dumps(env), *body, seed_lines[-1]], tmp_path)
    assert res.malformed_count == 0 and len(res.records) == 40
    assert "40 of its record(s) lack fields" in (res.runs[0].miscounted or "")


def test_check_record_requires_every_field_only_when_complete():
    full = Record(case="c", implementation="i", device="cpu", dtype="float64", quantity="grad_W", step=1,
                  verdict="agree").to_json()
    assert check_record(full, complete=True)["case"] == "c"
    assert check_record(_without(full, "computed"))["verdict"] == "agree"  # (a file built by hand, undeclared)
    with pytest.raises(ValueError, match="missing key 'computed'"):
        check_record(_without(full, "computed"), complete=True)


# --- a whole-run error record edited to unsupported -------------------------------------------------------------------

@pytest.fixture
def raises_lines(tmp_path) -> list[str]:
    """``check`` of numpy-hand and a plug-in that raises (named), on the seed case: 40 agree records and one whole-run
    error record; check exits 1."""
    return raising_run_lines(tmp_path, "test-h181-raises")


def _edit_error(lines: list[str], verdict: str, message: str | None = None) -> list[str]:
    out = []
    for line in lines:
        d = json.loads(line)
        if d.get("kind", "record") == "record" and d["verdict"] == "error":
            assert d["quantity"] == "*" and d["implementation"] == "test-h181-raises"
            d["verdict"] = verdict
            if message is not None:
                d["message"] = message
        elif d.get("kind") == "run-end":
            d["verdicts"] = {"agree": 40, verdict: 1}
        out.append(_dumps(d))
    return out


def test_the_error_record_unedited_fails_the_report(raises_lines, tmp_path, capsys):
    rc, err = report_exit_status(tmp_path, raises_lines, capsys)
    assert rc == 1 and "1 error record(s) fail" in err


@pytest.mark.parametrize("verdict", ["unsupported", "overflow"])
def test_a_whole_run_error_edited_to_a_neutral_verdict_fails_the_report(raises_lines, tmp_path, capsys, verdict):
    """``check`` failed this run (the named implementation graded nothing); ``report --exit-status`` passed it."""
    lines = _edit_error(raises_lines, verdict, "numpy does not support float64")
    assert read_jsonl_of(lines, tmp_path).runs[0].miscounted is None  # (the counts match: nothing else tells)
    rc, err = report_exit_status(tmp_path, lines, capsys)
    assert rc == 1 and "test-h181-raises, named in the implementations, graded nothing" in err
    assert "edited.jsonl:1: run" in err


def test_a_neutral_whole_run_record_of_an_unnamed_implementation_is_not_refused(raises_lines, tmp_path, capsys):
    """Where the run named no implementation (``check`` of every registered one: unsupported records are how a
    framework that is not installed shows), the edit cannot be told from the record: it passes (the limit)."""
    lines = _edit_error(raises_lines, "unsupported", "numpy does not support float64")
    env = {**json.loads(lines[0]), "named": []}
    rc, _ = report_exit_status(tmp_path, [_dumps(env), *lines[1:]], capsys)
    assert rc == 0


# --- exact edited to equal computed ---------------------------------------------------------------------------------

def _exact_edited(lines: list[str]) -> dict[str, Any]:
    """The wrong loss (computed 0.6 where the exact value is 0.49) edited to pass: its exact value made the computed one,
    its error and ratios made small; its exact_rational (the exact value as a fraction) left as written."""
    d = _loss_far_from_exact(lines)
    d.update(exact="0.6", abs_error_at_worst=0.0, max_abs_error=0.0, bound_ratio=0.0, expected_ratio=0.0)
    return d


def test_an_exact_value_edited_to_the_computed_one_is_malformed(seed_lines, tmp_path, capsys):
    d = _exact_edited(seed_lines)
    assert d["exact_rational"] == "2484595176447327735421694786929/5070602400912917605986812821504"
    lines = [seed_lines[0], _dumps(d), *seed_lines[2:]]
    res = read_jsonl_of(lines, tmp_path)
    assert res.malformed_count == 1 and "is not its exact_rational" in res.malformed[0].reason
    rc, err = report_exit_status(tmp_path, lines, capsys)
    assert rc == 2 and "edited.jsonl:2" in err and "exact_rational" in err


def test_an_exact_value_and_its_rational_edited_together_pass(seed_lines, tmp_path, capsys):
    """The limit: a record edited consistently in every field (exact_rational nulled, as the harness writes it where
    the fraction is over 80 characters) cannot be told from its own figures."""
    d = {**_exact_edited(seed_lines), "exact_rational": None}
    rc, _ = report_exit_status(tmp_path, [seed_lines[0], _dumps(d), *seed_lines[2:]], capsys)
    assert rc == 0


def test_the_rational_check_reads_the_harness_own_records(seed_lines):
    """Each record of the seed run with an exact_rational agrees with it (no refusal of what the harness writes)."""
    from harness.verdicts import _not_its_rational

    held = [json.loads(line) for line in seed_lines[1:-1]]
    assert sum(1 for d in held if d["exact_rational"]) == 40
    assert all(_not_its_rational(d["exact"], d["exact_rational"]) is None for d in held)
    assert _not_its_rational("0.49", "49/100") is None and _not_its_rational("0.5", "49/100") is not None
    assert _not_its_rational("0.49", "x/100") is None and _not_its_rational("0.49", "1/0") is None


# --- a killed run's cut last line, a byte-order mark, CRLF line ends --------------------------------------------------

def test_a_cut_last_line_is_flagged_and_the_others_kept(seed_lines, tmp_path, capsys):
    """A killed run: no run-end line, its last record cut in the middle. Read without a traceback, the cut line named
    malformed, the 39 whole records kept, and the run fails."""
    lines = [*seed_lines[:-2], seed_lines[-2][:70]]
    res = read_jsonl_of(lines, tmp_path)
    assert len(res.records) == 39 and res.malformed_count == 1 and res.malformed[0].line == 41
    rc, err = report_exit_status(tmp_path, lines, capsys)
    assert rc == 2 and "not valid JSON" in err and "its run did not complete" in err


@pytest.mark.parametrize("form", ["bom", "crlf", "both"])
def test_a_byte_order_mark_or_crlf_line_ends_read_as_the_same_run(seed_lines, tmp_path, capsys, form):
    """An editor's re-save (a UTF-8 byte-order mark, Windows line ends) changes no record: the file still passes, and a
    key deleted in it is still refused."""
    text = "".join(seed_lines)
    if form in ("crlf", "both"):
        text = text.replace("\n", "\r\n")
    data = (b"\xef\xbb\xbf" if form in ("bom", "both") else b"") + text.encode()
    path = tmp_path / "saved.jsonl"
    path.write_bytes(data)
    res = read_jsonl(path)
    assert len(res.records) == 40 and res.malformed_count == 0 and res.runs[0].records_format == 2
    assert main(["report", str(path), "-o", str(tmp_path / "r.html"), "--exit-status"]) == 0
    cut = _without(json.loads(seed_lines[1]), "computed")
    path.write_bytes(data.replace(seed_lines[1].rstrip("\n").encode(), json.dumps(cut).encode()))
    assert read_jsonl(path).malformed_count == 1


def test_exact_beside_a_subnormal_midpoint_is_its_rational() -> None:
    """An exact value 2**-1135 above the midpoint of float64's subnormals 12345 and 12346 spacings (its rational
    ``(24691 * 2**60 + 1) / 2**1135``, written by hand: the harness writes no rational over 80 characters) rounds up,
    its decimal cut at 20 digits rounds down: the two are one subnormal spacing apart, not a contradiction. An
    ``exact`` of 1.5e-320 against a rational of 3/2 still is."""
    import decimal

    from harness.verdicts import contradiction

    num, den = 24691 * 2**60 + 1, 2**1135
    with decimal.localcontext() as ctx:
        ctx.prec = 20
        cut = str(decimal.Decimal(num) / decimal.Decimal(den)) + "..."
    assert float(cut.rstrip(".")) != num / den  # the two roundings differ (by one spacing)
    assert contradiction("agree", "grad_W", {"agree": 1}, 0.5, 0.5, exact=cut, exact_rational=f"{num}/{den}") is None
    assert "exact_rational" in (contradiction("agree", "grad_W", {"agree": 1}, 0.5, 0.5, exact="1.5e-320",
                                              exact_rational="3/2") or "")
