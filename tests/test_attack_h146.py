"""helper-146's adversarial round: case folders whose parts cannot be walked (a subfolder that cannot be read, a link to
a folder, a link that loops back to its own folder) and outputs written where the run's case walk reads case files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.cases import iter_case_files, load_cases
from harness.cli import main
from tests.edited_results import ONE_CASE, failing_line, report_exit_status, seed_run_lines

GOOD = ONE_CASE


def _case(folder: Path, name: str, case_id: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(GOOD.format(id=case_id))
    return path


def _deny(monkeypatch, denied: Path) -> None:
    """os.scandir of ``denied`` raises PermissionError, as for a folder of mode 000 read by a user other than root."""
    real = os.scandir

    def scandir(path=".", *args, **kwargs):
        if os.path.abspath(os.fspath(path)) == str(denied):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)


# ------------------------------------------------------------------ item 1: the case walk


def test_a_subfolder_that_cannot_be_read_is_an_error_naming_it_and_the_other_cases_load(tmp_path, monkeypatch):
    # pathlib's rglob skips a folder it cannot list: its cases were silently not run, and the run passed on the others
    _case(tmp_path, "good.toml", "good")
    _case(tmp_path / "locked", "hidden.toml", "hidden")
    _deny(monkeypatch, tmp_path / "locked")
    res = load_cases([tmp_path])
    assert [c.id for c in res.cases] == ["good"]
    (err,) = res.errors
    assert err.path == str(tmp_path / "locked") and "ermission denied" in str(err), str(err)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads a folder of mode 000")
def test_a_subfolder_of_mode_000_is_an_error_naming_it(tmp_path):
    _case(tmp_path, "good.toml", "good")
    locked = tmp_path / "locked"
    _case(locked, "hidden.toml", "hidden")
    locked.chmod(0)
    try:
        res = load_cases([tmp_path])
    finally:
        locked.chmod(0o755)
    assert [c.id for c in res.cases] == ["good"]
    (err,) = res.errors
    assert err.path == str(locked), str(err)


def test_a_case_file_that_cannot_be_read_is_an_error_naming_it(tmp_path, monkeypatch):
    _case(tmp_path, "good.toml", "good")
    bad = _case(tmp_path, "bad.toml", "bad")
    real_open = os.open

    def deny(path, *args, **kwargs):
        if os.fspath(path) == str(bad):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    res = load_cases([tmp_path])
    assert [c.id for c in res.cases] == ["good"]
    (err,) = res.errors
    assert err.path == str(bad) and "Permission denied" in str(err), str(err)


def test_a_link_to_a_folder_is_followed(tmp_path):
    # rglob does not follow a link to a folder: the cases in it were silently not run
    _case(tmp_path / "cases", "good.toml", "good")
    _case(tmp_path / "elsewhere", "far.toml", "far")
    (tmp_path / "cases" / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    res = load_cases([tmp_path / "cases"])
    assert not res.errors, [str(e) for e in res.errors]
    assert sorted(c.id for c in res.cases) == ["far", "good"]


def test_a_link_to_a_folder_above_it_is_an_error_naming_it_and_the_walk_ends(tmp_path):
    _case(tmp_path, "good.toml", "good")
    _case(tmp_path / "sub", "deep.toml", "deep")
    loop = tmp_path / "sub" / "up"
    loop.symlink_to(tmp_path, target_is_directory=True)
    res = load_cases([tmp_path])
    assert sorted(c.id for c in res.cases) == ["deep", "good"]
    (err,) = res.errors
    assert err.path == str(loop) and "loop" in str(err), str(err)


def test_a_folder_reached_twice_is_walked_once(tmp_path):
    # a link latest -> v2 next to v2: its cases are loaded once (no duplicate-id errors)
    _case(tmp_path / "v2", "one.toml", "one")
    (tmp_path / "latest").symlink_to(tmp_path / "v2", target_is_directory=True)
    res = load_cases([tmp_path])
    assert not res.errors, [str(e) for e in res.errors]
    assert [c.id for c in res.cases] == ["one"]


def test_broken_links_in_a_folder_are_errors_naming_them(tmp_path):
    _case(tmp_path, "good.toml", "good")
    (tmp_path / "gone.toml").symlink_to(tmp_path / "nowhere.toml")
    (tmp_path / "self.toml").symlink_to(tmp_path / "self.toml")
    (tmp_path / "gone-folder").symlink_to(tmp_path / "no-folder", target_is_directory=True)
    res = load_cases([tmp_path])
    assert [c.id for c in res.cases] == ["good"]
    paths = sorted(e.path for e in res.errors)
    assert paths == sorted(str(tmp_path / n) for n in ("gone.toml", "self.toml")), [str(e) for e in res.errors]


def test_check_and_cases_exit_2_naming_the_folder_that_cannot_be_read(tmp_path, monkeypatch, capsys):
    _case(tmp_path / "c", "good.toml", "good")
    _case(tmp_path / "c" / "locked", "hidden.toml", "hidden")
    _deny(monkeypatch, tmp_path / "c" / "locked")
    assert main(["cases", "--cases", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "c" / "locked") in err, err
    results = tmp_path / "r.jsonl"
    rc = main(["check", "--cases", str(tmp_path / "c"), "--implementations", "numpy-hand", "--isolation", "inline", "-q",
               "--report", "none", "--results", str(results)])
    assert rc == 2
    assert str(tmp_path / "c" / "locked") in capsys.readouterr().err
    assert '"case": "good"' in results.read_text()


def test_the_pytest_plugin_lists_the_same_files_as_load_cases(tmp_path):
    # one walk: the plugin's list of the run's input files (which no output may replace) is load_cases's
    _case(tmp_path / "cases", "good.toml", "good")
    _case(tmp_path / "elsewhere", "far.toml", "far")
    (tmp_path / "cases" / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    files = [str(f) for f in iter_case_files([tmp_path / "cases"])]
    assert files == [str(tmp_path / "cases" / "good.toml"), str(tmp_path / "cases" / "more" / "far.toml")]


# ------------------------------------------------------------------ item 2: an output where the case walk reads

CHECK = ["check", "--implementations", "numpy-hand", "--isolation", "inline", "-q", "--dtypes", "float64"]


def _two_case_files(tmp_path: Path) -> Path:
    folder = tmp_path / "cases"
    _case(folder, "seed.toml", "seed")
    _case(folder, "other.toml", "other")
    return folder


@pytest.mark.parametrize("option", ["--results", "--report"])
def test_an_output_over_a_case_file_that_the_run_does_not_select_is_refused(tmp_path, capsys, option):
    # check --case seed --results cases/other.toml replaced the case file with records (exit 0), kept it as
    # other.prev.toml (read as a case file by the next run), and the next such run lost it
    folder = _two_case_files(tmp_path)
    other = folder / "other.toml"
    before = other.read_text()
    outputs = {"--results": str(tmp_path / "r.jsonl"), "--report": "none"}
    outputs[option] = str(other)
    rc = main([*CHECK, "--cases", str(folder), "--case", "seed", "--results", outputs["--results"],
               "--report", outputs["--report"]])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"{option} {other}" in err, err
    assert other.read_text() == before
    assert sorted(p.name for p in folder.iterdir()) == ["other.toml", "seed.toml"]


@pytest.mark.parametrize("name", ["new.toml", "sub/new.toml"])
@pytest.mark.parametrize("option", ["--results", "--report"])
def test_an_output_that_the_next_run_would_read_as_a_case_file_is_refused(tmp_path, capsys, option, name):
    # check --cases cases --results cases/new.toml wrote records that the next run read as an invalid case file, and
    # replaced them (kept as new.prev.toml, read too)
    folder = _two_case_files(tmp_path)
    outputs = {"--results": str(tmp_path / "r.jsonl"), "--report": "none"}
    outputs[option] = str(folder / name)
    rc = main([*CHECK, "--cases", str(folder), "--results", outputs["--results"], "--report", outputs["--report"]])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"{option} {folder / name}" in err and "case file" in err, err
    assert sorted(p.name for p in folder.iterdir()) == ["other.toml", "seed.toml"]
    assert not (tmp_path / "r.jsonl").exists()


def test_an_output_that_keeps_its_earlier_file_as_a_case_file_given_to_cases_is_refused(tmp_path, capsys):
    # keep_previous renames r.jsonl to r.prev.jsonl: a file the run reads as its case file
    case = _case(tmp_path, "r.prev.jsonl", "odd")
    (tmp_path / "r.jsonl").write_text("earlier\n")
    rc = main([*CHECK, "--cases", str(case), "--results", str(tmp_path / "r.jsonl"), "--report", "none"])
    err = capsys.readouterr().err
    assert rc == 2 and f"--results {tmp_path / 'r.jsonl'}" in err, err
    assert case.read_text() == GOOD.format(id="odd")


def test_results_and_reports_inside_a_case_folder_are_still_written(tmp_path, capsys):
    # (helper-80: a results file kept in a case folder is not a case file)
    folder = _two_case_files(tmp_path)
    rc = main([*CHECK, "--cases", str(folder), "--results", str(folder / "r.jsonl"), "--report", str(folder / "r.html")])
    assert rc == 0, capsys.readouterr().err
    rc = main([*CHECK, "--cases", str(folder), "--results", str(folder / "r.jsonl"), "--report", str(folder / "r.html")])
    assert rc == 0, capsys.readouterr().err


@pytest.mark.parametrize("option", ["--harness-results", "--harness-report"])
def test_the_pytest_plugin_refuses_an_output_that_the_case_walk_would_read(tmp_path, option):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    folder = _two_case_files(tmp_path)
    (tmp_path / "test_user.py").write_text("def test_a():\n    pass\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "harness.pytest_plugin",
                           "test_user.py", "--harness-cases", str(folder), option, str(folder / "new.toml")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"{option} {folder / 'new.toml'}" in proc.stderr and "case file" in proc.stderr, proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["other.toml", "seed.toml"]


# ------------------------------------------------------------------ item 4: a results file edited by hand


@pytest.fixture(scope="module")
def one_run(tmp_path_factory) -> list[str]:
    """The lines of one check run's results file (numpy-hand on the seed case in float64: 40 agree records)."""
    return seed_run_lines(tmp_path_factory.mktemp("run"))


@pytest.mark.parametrize("dropped", [("verdicts",), ("verdicts", "records"), ("verdicts", "records", "known_bugs", "load_errors")])
@pytest.mark.parametrize("how", ["deleted", "null"])
def test_a_failing_record_edited_to_agree_with_the_run_end_counts_deleted_fails_the_report(one_run, tmp_path, capsys,
                                                                                         dropped, how):
    # the run-end line's counts are compared only where present: a failing run whose disagree record was edited to
    # agree, and the counts deleted from its run-end line (or set to null), passed `report --exit-status` (exit 0)
    import json

    env, recs, end = one_run[0], one_run[1:-1], json.loads(one_run[-1])
    end["verdicts"] = {"agree": len(recs) - 1, "disagree": 1}
    rc, err = report_exit_status(tmp_path, [env, failing_line(recs[0]), *recs[1:], json.dumps(end) + "\n"], capsys)
    assert rc == 1, err  # the honest file fails
    for key in dropped:
        if how == "deleted":
            del end[key]
        else:
            end[key] = None
    rc, err = report_exit_status(tmp_path, [env, *recs, json.dumps(end) + "\n"], capsys)
    assert rc == 2, err
    assert "run-end line" in err, err


@pytest.mark.parametrize("how", ["deleted", "null"])
def test_a_failing_record_given_a_known_bug_with_the_known_bugs_count_deleted_fails_the_report(one_run, tmp_path,
                                                                                             capsys, how):
    # a disagree record given a known_bug and its message's head by hand (as the harness writes one: reported, not
    # counted), with the run-end line's known_bugs deleted: exit 0
    import json

    env, recs, end = one_run[0], one_run[1:-1], json.loads(one_run[-1])
    d = json.loads(failing_line(recs[0]))
    d["known_bug"] = "pytorch/pytorch#1"
    d["message"] = "known framework bug: pytorch/pytorch#1; " + d["message"]
    end["verdicts"] = {"agree": len(recs) - 1, "disagree": 1}
    if how == "deleted":
        del end["known_bugs"]
    else:
        end["known_bugs"] = None
    rc, err = report_exit_status(tmp_path, [env, json.dumps(d) + "\n", *recs[1:], json.dumps(end) + "\n"], capsys)
    assert rc == 2, err
    assert "run-end line" in err, err


def test_load_errors_deleted_from_both_lines_fail_the_report(tmp_path, capsys):
    # check exited 2 (a case that could not be loaded); its environment line's load_errors emptied and the run-end
    # line's count deleted: exit 0
    import json

    cases = tmp_path / "c.toml"
    cases.write_text(GOOD.format(id="good") + GOOD.format(id="bad").replace("lr = 0.1", "lr = 1e400"))
    results = tmp_path / "r.jsonl"
    assert main([*CHECK, "--cases", str(cases), "--report", "none", "--results", str(results)]) == 2
    lines = results.read_text().splitlines(keepends=True)
    env, end = json.loads(lines[0]), json.loads(lines[-1])
    env["load_errors"] = []
    del end["load_errors"]
    rc, err = report_exit_status(tmp_path, [json.dumps(env) + "\n", *lines[1:-1], json.dumps(end) + "\n"], capsys)
    assert rc == 2, err


def test_report_refuses_an_output_that_keeps_its_earlier_file_over_a_results_file_it_reads(one_run, tmp_path, capsys):
    # report r.prev.jsonl -o r.jsonl moved an earlier r.jsonl over r.prev.jsonl, the results file it had just read
    read = tmp_path / "r.prev.jsonl"
    read.write_text("".join(one_run))
    out = tmp_path / "r.jsonl"
    out.write_text("an earlier page\n")
    rc = main(["report", str(read), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and f"--output {out}" in err, err
    assert read.read_text() == "".join(one_run) and out.read_text() == "an earlier page\n"
