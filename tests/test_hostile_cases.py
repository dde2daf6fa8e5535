"""Issue 11: hostile case files. Each bad input is one error naming the file, the case,
the key and the value (quoted, cut); the good cases of the same file and run still load;
data files are confined to the case file's folder; nothing is ever a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cases import load_cases
from harness.errors import CaseFileError, LimitError
from harness.limits import Limits
from harness.runner import verify
from tests.conftest import GOOD, ROOT


def _case(cid: str, **fields: str) -> str:
    base = {"X": "[[1.0]]", "y": "[[3.0]]", "W": "[[2.0]]", "b": "[0.5]", "lr": '"0.1"'}
    base.update(fields)
    return f'\n[[case]]\nid = "{cid}"\n' + "".join(f"{k} = {v}\n" for k, v in base.items() if v is not None)


def _write(folder: Path, name: str, text: str | bytes) -> Path:
    p = folder / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def _one_error(res, path: Path) -> CaseFileError:
    (err,) = res.errors
    assert err.path == str(path) and str(err).startswith(str(path))
    assert "\n" not in str(err)
    return err


# ---------------------------------------------------------------- one bad file never loses the run


def test_a_non_utf8_byte_in_a_comment_loses_only_its_file(tmp_path):
    bad = _write(tmp_path, "a.toml", b"# caf\xe9\n" + GOOD.replace("good", "other").encode())
    _write(tmp_path, "b.toml", GOOD)
    res = load_cases([tmp_path])
    assert [c.id for c in res.cases] == ["good"]
    err = _one_error(res, bad)
    assert err.line == 1 and "not UTF-8" in str(err)


@pytest.mark.parametrize("value", ["[[1e309]]", '[["1e400"]]', "[[" + "1" * 400 + "]]", '[["-1e309"]]', "[[1e-400]]"])
def test_values_outside_float64_are_refused_naming_the_key_and_the_good_case_stays(tmp_path, value):
    path = _write(tmp_path, "c.toml", GOOD + _case("bad", X=value))
    res = load_cases([path])
    assert [c.id for c in res.cases] == ["good"]
    err = _one_error(res, path)
    assert (err.case_id, err.key) == ("bad", "X")
    assert "outside float64's range" in str(err) or "rounds to 0 in float64" in str(err)
    assert len(str(err)) < 400  # the 400-digit integer is quoted cut


def test_huge_exponents_are_refused_at_once(tmp_path):
    path = _write(tmp_path, "c.toml", GOOD + _case("bad", X='[["1e999999999"]]') + _case("bad2", y='[["1e-999999999"]]'))
    res = load_cases([path])
    assert [c.id for c in res.cases] == ["good"]
    assert [(e.case_id, e.key) for e in res.errors] == [("bad", "X"), ("bad2", "y")]


@pytest.mark.parametrize(("text", "key", "needle"), [
    ('[case]\nid = "t"\n', "case", "write [[case]]"),
    ("case = 5\n", "case", "expected [[case]] tables"),
    ('[generate]\nname = "x"\n', "generate", "write [[generate]]"),
    ("generate = [2]\n", "generate", "not a table"),
    ("case = [1]\n", "case", "not a table"),
])
def test_case_and_generate_must_be_arrays_of_tables(tmp_path, text, key, needle):
    path = _write(tmp_path, "c.toml", text)
    _write(tmp_path, "d.toml", GOOD)
    res = load_cases([tmp_path])
    assert [c.id for c in res.cases] == ["good"]
    err = _one_error(res, path)
    assert err.key == key and needle in str(err)


def test_an_array_nested_100000_deep_is_an_error_not_a_crash(tmp_path):
    path = _write(tmp_path, "deep.toml", "a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    res = load_cases([path])
    assert "nested too deeply" in str(_one_error(res, path))


def test_an_integer_beyond_python_digit_limit_is_an_error(tmp_path):
    path = _write(tmp_path, "c.toml", GOOD + _case("bad", X="[[" + "7" * 5000 + "]]"))
    res = load_cases([path])
    assert "invalid TOML" in str(_one_error(res, path))


def test_a_huge_string_value_is_quoted_cut(tmp_path):
    path = _write(tmp_path, "c.toml", GOOD + _case("bad", X='[["' + "z" * 1_000_000 + '"]]'))
    res = load_cases([path])
    err = _one_error(res, path)
    assert err.key == "X" and len(str(err)) < 400 and "characters)" in str(err)


# ---------------------------------------------------------------- CSV data


def _csv_case(cid: str, data: str, **extra: str) -> str:
    fields = {"data": f'"{data}"', "W": "[[2.0]]", "b": "[0.5]", "lr": '"0.1"', **extra}
    return f'\n[[case]]\nid = "{cid}"\n' + "".join(f"{k} = {v}\n" for k, v in fields.items())


def test_nan_and_inf_in_csv_data_are_invalid_input_like_inline(tmp_path):
    _write(tmp_path, "nan.csv", "x,y\n1.0,nan\n2.0,3.0\n")
    _write(tmp_path, "inf.csv", "x,y\n-inf,1.0\n2.0,3.0\n")
    path = _write(tmp_path, "c.toml", GOOD + _csv_case("csv-nan", "nan.csv") + _csv_case("csv-inf", "inf.csv"))
    res = load_cases([path])
    assert not res.errors and [c.id for c in res.cases] == ["good", "csv-nan", "csv-inf"]
    recs = verify(res.cases, ["numpy-hand"], dtypes=["float32"])
    verdicts = {r.case: r.verdict for r in recs if r.quantity in ("*", "grad_W")}
    assert verdicts == {"good": "agree", "csv-nan": "invalid-input", "csv-inf": "invalid-input"}


@pytest.mark.parametrize(("content", "needle"), [
    (b"x,y\n1.0,1e400\n", "line 2, column 'y': a value outside float64's range"),
    ("x,y\n1.0,caf\u00e9\n".encode("latin-1"), "line 2 is not UTF-8"),
    (b"x,y\n1.0," + b"9" * 140_000 + b"\n", "line 2: not CSV"),
    (b"x,y\n1.0,2.0,3.0\n", "line 2 has 3 fields, the header has 2"),
    (b"x,y\n1.0,SECRET-VALUE\n", "line 2, column 'y': not a number"),
    (b"", "is empty"),
    (b"x,y\n", "no data rows"),
    (b"x,y\n1.0,\x00\n", "line 2"),
])
def test_bad_csv_content_is_an_error_naming_line_and_column_never_the_content(tmp_path, content, needle):
    _write(tmp_path, "d.csv", content)
    path = _write(tmp_path, "c.toml", GOOD + _csv_case("bad", "d.csv"))
    res = load_cases([path])
    assert [c.id for c in res.cases] == ["good"]
    err = _one_error(res, path)
    assert (err.case_id, err.key) == ("bad", "data") and needle in str(err)
    assert "SECRET" not in str(err) and "999999" not in str(err)


def test_data_outside_the_case_folder_is_refused_and_never_quoted(tmp_path):
    secret = _write(tmp_path, "secret/shadow", "root:SECRET-HASH:19000:0:99999:7:::\n")
    cases = tmp_path / "cases"
    path = _write(cases, "c.toml", GOOD + _csv_case("escape", "../secret/shadow") + _csv_case("absolute", str(secret))
                  + _csv_case("devzero", "/dev/zero"))
    res = load_cases([path])
    assert [c.id for c in res.cases] == ["good"]
    assert [(e.case_id, e.key) for e in res.errors] == [("escape", "data"), ("absolute", "data"), ("devzero", "data")]
    assert all("outside the case file's folder" in str(e) and "--data-root" in str(e) for e in res.errors)
    # allowed by --data-root, the file is read but its first line is never printed
    res = load_cases([path], data_roots=[tmp_path / "secret"])
    msg = str(res.errors[0])
    assert "column(s) ['y'] not in the header of shadow" in msg and "SECRET" not in msg and "root:" not in msg


def test_a_symlink_out_of_the_folder_is_refused(tmp_path):
    _write(tmp_path, "outside.csv", "x,y\n1,2\n")
    (tmp_path / "cases").mkdir()
    os.symlink(tmp_path / "outside.csv", tmp_path / "cases" / "link.csv")
    path = _write(tmp_path / "cases", "c.toml", _csv_case("link", "link.csv"))
    assert "outside the case file's folder" in str(_one_error(load_cases([path]), path))
    assert [c.id for c in load_cases([path], data_roots=[tmp_path]).cases] == ["link"]


@pytest.mark.parametrize("kind", ["devzero", "fifo", "folder"])
def test_only_regular_files_are_read(tmp_path, kind):
    if kind == "devzero":
        target, roots = "/dev/zero", ["/dev"]
    elif kind == "fifo":
        os.mkfifo(tmp_path / "pipe.csv")  # opening it would block forever
        target, roots = "pipe.csv", []
    else:
        (tmp_path / "sub").mkdir()
        target, roots = "sub", []
    path = _write(tmp_path, "c.toml", GOOD + _csv_case("special", target))
    res = load_cases([path], data_roots=roots)
    assert [c.id for c in res.cases] == ["good"]
    err = _one_error(res, path)
    assert err.key == "data" and ("not a regular file" in str(err) or "a folder" in str(err))


def test_a_data_file_over_the_size_limit_is_refused_unread(tmp_path):
    _write(tmp_path, "big.csv", "x,y\n" + "1.0,2.0\n" * 2000)
    path = _write(tmp_path, "c.toml", _csv_case("big", "big.csv"))
    err = _one_error(load_cases([path], limits=Limits(max_data_bytes=10_000)), path)
    assert isinstance(err, LimitError) and "over the limit of 10,000" in str(err) and "--max-data-bytes" in str(err)
    assert not load_cases([path]).errors


def test_a_csv_with_too_many_rows_is_refused_while_reading(tmp_path):
    _write(tmp_path, "rows.csv", "x,y\n" + "1,2\n" * 5000)
    path = _write(tmp_path, "c.toml", _csv_case("rows", "rows.csv"))
    err = _one_error(load_cases([path], limits=Limits(max_elements=1000)), path)
    assert isinstance(err, LimitError) and "--max-elements" in str(err)


# ---------------------------------------------------------------- silently accepted before


@pytest.mark.parametrize(("fields", "key", "needle"), [
    ({"dtypes": "[]"}, "dtypes", "no dtype given"),
    ({"x_columns": '["x"]'}, "x_columns", "only applies with 'data'"),
    ({"polynomial_degree": "2"}, "polynomial_degree", "only applies with 'data'"),
    ({"lr": '"1e-400"'}, "lr", "rounds to 0 in float64"),
    ({"lr": '"1e400"'}, "lr", "outside float64's range"),
    ({"description": "5"}, "description", "expected a string"),
])
def test_inputs_that_were_silently_accepted_are_refused(tmp_path, fields, key, needle):
    path = _write(tmp_path, "c.toml", GOOD + _case("bad", **fields))
    res = load_cases([path])
    assert [c.id for c in res.cases] == ["good"]
    err = _one_error(res, path)
    assert (err.case_id, err.key) == ("bad", key) and needle in str(err)


@pytest.mark.parametrize(("extra", "key"), [
    ("reductions = []", "reductions"), ("dtypes = []", "dtypes"), ("steps = []", "steps"), ('lr = "1e-400"', "lr"),
])
def test_generate_tables_with_empty_lists_are_refused(tmp_path, extra, key):
    path = _write(tmp_path, "g.toml", GOOD + f'\n[[generate]]\nname = "t"\nseed = 1\nshapes = [[1, 1, 1]]\n{extra}\n')
    res = load_cases([path])
    assert [c.id for c in res.cases] == ["good"]
    err = _one_error(res, path)
    assert err.key == key and err.case_id == "[[generate]] t"


# ---------------------------------------------------------------- the command line


def test_cli_one_error_line_per_bad_input_exit_2_no_traceback(tmp_path):
    _write(tmp_path, "a.toml", GOOD)
    _write(tmp_path, "b.toml", b"# \xff\n")
    _write(tmp_path, "c.toml", GOOD.replace("good", "good2") + _case("huge", X="[[1e309]]") + _case("long", steps="1000000000"))
    _write(tmp_path, "d.toml", "[case]\nid = 'x'\n")
    proc = subprocess.run([sys.executable, "-m", "harness", "cases", "--cases", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 4
    assert "2 cases" in proc.stderr and "good2" in proc.stdout
    assert any("case 'long', key 'steps'" in e and "--max-steps" in e for e in errors)
    proc = subprocess.run([sys.executable, "-m", "harness", "cases", "--cases", str(tmp_path / "c.toml"), "--max-steps", "1e9", "--max-oracle-cost", "1e10"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "long" in proc.stdout and "huge" in proc.stderr  # the limit is raised; the bad value stays bad


def test_cli_data_root_option_allows_a_folder(tmp_path):
    _write(tmp_path, "shared/d.csv", "x,y\n1,2\n2,3\n")
    _write(tmp_path, "cases/c.toml", _csv_case("shared", "../shared/d.csv"))
    cmd = [sys.executable, "-m", "harness", "cases", "--cases", str(tmp_path / "cases")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--data-root" in proc.stderr
    proc = subprocess.run([*cmd, "--data-root", str(tmp_path / "shared")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "shared" in proc.stdout


def test_cli_check_records_the_good_cases_of_a_file_with_bad_ones(tmp_path):
    import json

    cases = tmp_path / "cases"
    _write(cases, "a.toml", GOOD + _case("huge", X="[[1e309]]") + _case("long", steps="1000000000")
           + _csv_case("escape", "../../etc/passwd") + _case("good2", X="[[2.0]]"))
    _write(cases, "b.toml", b"# \xe9\n")
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "harness", "check", "--cases", str(cases), "--devices", "cpu", "--dtypes", "float64",
                           "--implementations", "numpy-hand", "--results", str(out), "--report", "none", "-q",
                           "--isolation", "inline"],  # (a file's validation: the workers change nothing of it)
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 4 and all(str(cases) in e for e in errors)
    recs = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert {r["case"] for r in recs if "case" in r} == {"good", "good2"}
    assert {r["verdict"] for r in recs if "verdict" in r} == {"agree"}
