"""helper-146's adversarial round: case folders whose parts cannot be walked (a subfolder that cannot be read, a link to
a folder, a link that loops back to its own folder) and outputs written where the run's case walk reads case files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.cases import iter_case_files, load_cases
from harness.cli import main

GOOD = """
[[case]]
id = "{id}"
X = [[1.0]]
y = [[3.0]]
W = [[2.3]]
b = [1.4]
lr = 0.1
dtypes = ["float64"]
"""


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
