"""helper-131's adversarial round: defects found by attacking case files (an expression whose powers never finish, a
byte-order mark, a folder that holds no case file, a link that loops, a file replaced by a fifo between listing and
reading) and results files edited by hand (a line pasted over another, a known bug or the load errors edited), each
pinned here."""

from __future__ import annotations

import json
import os
import stat
import threading

import pytest

from harness.cases import load_cases
from harness.cli import main
from harness.records import read_jsonl
from tests.edited_results import ONE_CASE, failing_line, report_exit_status, seed_run_lines

GOOD = ONE_CASE.format(id="good")


def _expression_case(expression: str) -> str:
    return f"""
[[case]]
id = "bad-expr"
model = {{ expression = "{expression}", parameters = ["a"] }}
X = [[2.0]]
y = [[1.0]]
params = {{ a = 1 }}
lr = 0.1
dtypes = ["float64"]
"""


@pytest.mark.parametrize(("expression", "said"), [
    ("a*x**1000000000", "a power of 1,000,000,000, over the limit of 1,024"),
    ("a + 9**9**9", "the constant power 9 ** 9 ** 9 has more than 20,000 bits"),
    ("a*x^10^10", "a power of 10,000,000,000"),  # (^ is SymPy's **, right-associative: x**(10**10))
    ("(a*x**32)**33", "a power of 1,056"),
    ("a*x**(-2000)", "a power of 2,000"),
])
def test_an_expression_with_a_huge_power_is_refused_naming_the_key(expression, said, tmp_path):
    # x1**1000000000 and 9**9**9 took 50 s and 3.7 GB each to grade (overflow, exit 0); x1**(10**10**10) never finished
    # parsing (SymPy evaluated the constant exponent): one case stopped the whole run
    path = tmp_path / "c.toml"
    path.write_text(GOOD + _expression_case(expression))
    res = load_cases([path])
    assert [c.id for c in res.cases] == ["good"]
    (err,) = res.errors
    assert err.case_id == "bad-expr" and err.key == "model.expression" and said in str(err), str(err)


@pytest.mark.parametrize("expression", ["a*x**1024", "(a*x**32)**32", "a*x^2^10", "a*2**-1074*x", "a*x1**(1/2)", "a*x**(3 - 1)"])
def test_powers_within_the_limits_still_load(expression, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(_expression_case(expression))
    res = load_cases([path])
    assert not res.errors and [c.id for c in res.cases] == ["bad-expr"]


def test_a_case_file_with_a_byte_order_mark_loads(tmp_path):
    # tomllib refused it as "Invalid statement (at line 1, column 1)", which names no cause; data files and results
    # files read one
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    res = load_cases([path])
    assert not res.errors and [c.id for c in res.cases] == ["good"]


def test_a_folder_with_no_case_file_is_an_error_and_the_other_cases_run(tmp_path):
    # a folder given to --cases that held no *.toml (empty, or a folder named like a case file) was silently nothing,
    # and the run passed on the other cases
    (tmp_path / "good.toml").write_text(GOOD)
    (tmp_path / "empty").mkdir()
    (tmp_path / "named.toml").mkdir()
    res = load_cases([tmp_path / "good.toml", tmp_path / "empty", tmp_path / "named.toml"])
    assert [c.id for c in res.cases] == ["good"]
    assert sorted(e.path for e in res.errors) == sorted([str(tmp_path / "empty"), str(tmp_path / "named.toml")])
    assert all("a folder with no case file (*.toml)" in str(e) for e in res.errors)


def test_a_link_that_loops_is_named_as_such(tmp_path):
    # it was "no such file or folder"
    link = tmp_path / "loop.toml"
    link.symlink_to(link)
    (tmp_path / "good.toml").write_text(GOOD)
    res = load_cases([tmp_path / "good.toml", link])
    assert [c.id for c in res.cases] == ["good"]
    (err,) = res.errors
    assert err.path == str(link) and "symbolic links" in str(err), str(err)


def test_a_case_file_replaced_by_a_fifo_after_its_stat_is_refused_without_blocking(tmp_path, monkeypatch):
    # the case file was checked with os.stat, then opened: a file replaced by a fifo in between (a case file that
    # changed between listing and reading) blocked the run in open() for ever
    fifo = tmp_path / "swapped.toml"
    os.mkfifo(fifo)
    regular = tmp_path / "good.toml"
    regular.write_text(GOOD)
    real_stat = os.stat

    def stat_before_the_swap(path, *args, **kwargs):
        return real_stat(regular) if str(path) == str(fifo) else real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat_before_the_swap)
    out: list = []
    t = threading.Thread(target=lambda: out.append(load_cases([regular, fifo])), daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # release the blocked open() so that the thread ends, then fail
        monkeypatch.undo()
        with open(fifo, "wb"):
            pass
        t.join(10)
        pytest.fail("load_cases blocked in open() on a fifo")
    (res,) = out
    assert [c.id for c in res.cases] == ["good"]
    (err,) = res.errors
    assert err.path == str(fifo) and "not a regular file" in str(err), str(err)
    assert stat.S_ISFIFO(real_stat(fifo).st_mode)


def test_a_key_given_twice_is_named_with_its_case(tmp_path):
    # the message named only the line and column ("Cannot overwrite a value (at line 10, column 9)")
    path = tmp_path / "dup.toml"
    path.write_text(GOOD.replace('"good"', '"dup"') + "lr = 0.2\n")
    res = load_cases([tmp_path / "dup.toml"])
    (err,) = res.errors
    assert (err.path, err.line, err.case_id, err.key) == (str(path), 10, "dup", "lr"), str(err)
    assert "given twice" in str(err) and "none of its cases load" in str(err)


# ------------------------------------------------------------------ results files edited by hand

@pytest.fixture(scope="module")
def one_run(tmp_path_factory) -> list[str]:
    """The lines of one check run's results file (numpy-hand on the seed case in float64: 40 agree records)."""
    return seed_run_lines(tmp_path_factory.mktemp("run"))


def test_the_run_end_line_counts_the_verdicts(one_run):
    end = json.loads(one_run[-1])
    assert end["verdicts"] == {"agree": len(one_run) - 2} and end["known_bugs"] == 0 and end["load_errors"] == 0


def test_a_failing_line_pasted_over_with_a_copy_of_an_agree_line_fails_the_report(one_run, tmp_path, capsys):
    # the record count stays: a file whose disagree lines were each replaced by a copy of an agree line passed
    # `report --exit-status` (a run that failed, read as one that passed)
    env, recs, end = one_run[0], one_run[1:-1], json.loads(one_run[-1])
    failing = [failing_line(recs[3])] + recs[1:]
    end["verdicts"] = {"agree": len(recs) - 1, "disagree": 1}
    honest = [env, *failing, json.dumps(end) + "\n"]
    rc, err = report_exit_status(tmp_path, honest, capsys)
    assert rc == 1, err
    pasted = [env, recs[5], *failing[1:], json.dumps(end) + "\n"]
    rc, err = report_exit_status(tmp_path, pasted, capsys)
    assert rc == 2, err
    assert "its run-end line counts the verdicts {agree: 39, disagree: 1}; the file holds {agree: 40}" in err, err
    res = read_jsonl(tmp_path / "edited.jsonl")
    assert res.runs[0].miscounted and len(res.records) == 40


def test_a_known_bug_written_into_records_fails_the_report(one_run, tmp_path, capsys):
    # a failing record given a known_bug (and its message's head) was reported, NOT counted: exit 0
    env, recs, end = one_run[0], one_run[1:-1], json.loads(one_run[-1])
    d = json.loads(failing_line(recs[3]))
    d["known_bug"] = "pytorch/pytorch#191763"
    d["message"] = "known framework bug: pytorch/pytorch#191763 " + d["message"]
    end["verdicts"] = {"agree": len(recs) - 1, "disagree": 1}
    rc, err = report_exit_status(tmp_path, [env, json.dumps(d) + "\n", *recs[1:], json.dumps(end) + "\n"], capsys)
    assert rc == 2 and "counts 0 record(s) a known framework bug explains; the file holds 1" in err, err


def test_load_errors_deleted_from_the_environment_line_fail_the_report(tmp_path, capsys):
    # check exited 2 (a case that could not be loaded); deleting the environment line's load_errors made the report pass
    cases = tmp_path / "c.toml"
    cases.write_text(GOOD + GOOD.replace('"good"', '"bad"').replace("lr = 0.1", "lr = 1e400"))
    results = tmp_path / "r.jsonl"
    assert main(["check", "--cases", str(cases), "--implementations", "numpy-hand", "--isolation", "inline", "-q",
                 "--report", "none", "--results", str(results)]) == 2
    lines = results.read_text().splitlines(keepends=True)
    env = json.loads(lines[0])
    assert len(env.pop("load_errors")) == 1 and json.loads(lines[-1])["load_errors"] == 1
    capsys.readouterr()
    rc, err = report_exit_status(tmp_path, [json.dumps(env) + "\n", *lines[1:]], capsys)
    assert rc == 2 and "counts 1 case file(s) or case(s) that could not be loaded; its environment line lists 0" in err, err


def test_a_malformed_tally_makes_the_run_end_line_malformed(one_run, tmp_path, capsys):
    end = json.loads(one_run[-1])
    end["verdicts"] = {"agree": "40"}
    rc, err = report_exit_status(tmp_path, [*one_run[:-1], json.dumps(end) + "\n"], capsys)
    assert rc == 2 and "malformed run-end line" in err, err


# ------------------------------------------------------------------ a results file of a million records


def test_the_repeated_text_of_records_is_held_once_per_file_read(one_run, tmp_path):
    # `report` of 1,000,000 records (1.4 GB) took 4.8 GB: each record held its own copies of its case, implementation,
    # repro command, ... (about 1 KB of the 3.4 KB per record); held once, 3.9 GB
    path = tmp_path / "r.jsonl"
    path.write_text("".join(one_run))
    recs = read_jsonl(path).records
    assert len(recs) == 40 and len({r.repro for r in recs}) == 1
    for name in ("case", "implementation", "device", "dtype", "verdict", "kind", "repro", "oracle_method"):
        assert len({id(getattr(r, name)) for r in recs}) == 1, name
    assert len({id(r.quantity) for r in recs}) == len({r.quantity for r in recs})


def test_a_final_rewrite_that_fails_ends_the_streamed_file_with_its_own_counts(one_run, tmp_path, monkeypatch):
    # the footer appended when the completed run's rewrite fails (a full disk) counts the records the streamed file
    # holds, and their verdicts: a file that reads back as an unfinished run, never as a miscounted or passing one
    import harness.records as records_module
    from harness.records import Record, ResultsFile, ResultsStream, ResultsWriteError

    recs = [Record.from_json(json.loads(line)) for line in one_run[1:-1]]
    recs[3].verdict, recs[3].bound_ratio, recs[3].counts = "disagree", 2.0, {"disagree": 1}
    path = tmp_path / "r.jsonl"
    stream = ResultsStream(path, {"kind": "environment"})
    stream.add(recs)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(records_module, "write_jsonl", full_disk)
    with pytest.raises(ResultsWriteError):
        stream.finish(recs)
    end = json.loads(path.read_text().splitlines()[-1])
    assert end["completed"] is False and end["records"] == 40 and end["verdicts"] == {"agree": 39, "disagree": 1}
    res: ResultsFile = read_jsonl(path)
    assert not res.runs[0].miscounted and not res.completed


def test_an_interrupted_run_edited_to_completed_fails_the_report(one_run, tmp_path, capsys):
    # check exited 130 (SIGINT); its run-end line's "completed": false edited to true, with "interrupted": true left,
    # passed `report --exit-status` as a whole run
    env, recs, end = one_run[0], one_run[1:21], json.loads(one_run[-1])
    end.update(completed=False, interrupted=True, records=20, verdicts={"agree": 20})
    rc, err = report_exit_status(tmp_path, [env, *recs, json.dumps(end) + "\n"], capsys)
    assert rc == 2 and "says completed: false" in err, err
    end["completed"] = True
    rc, err = report_exit_status(tmp_path, [env, *recs, json.dumps(end) + "\n"], capsys)
    assert rc == 2 and "says both completed: true and interrupted: true" in err, err
