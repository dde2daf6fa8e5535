"""A new run never silently replaces an earlier run's results or report: the earlier file is kept as
NAME.prev.EXT (one generation, like a log rotation), and `check` says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.records import keep_previous, previous_path
from tests.conftest import CASES, ROOT

SEED = ["check", "--cases", str(CASES / "seed.toml"), "--case", "seed", "--implementations", "numpy-hand", "--dtypes", "float64",
        "--isolation", "inline"]


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main([*SEED, "--results", str(tmp_path / "results.jsonl"), "--report", str(tmp_path / "agreement.html"), *extra])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_previous_path_names():
    assert previous_path("reports/results.jsonl") == Path("reports/results.prev.jsonl")
    assert previous_path("reports/agreement.html") == Path("reports/agreement.prev.html")
    assert previous_path("out") == Path("out.prev")


def test_a_second_run_keeps_the_first_runs_results_and_report_and_says_so(tmp_path, capsys):
    assert _run(tmp_path, capsys)[0] == 0
    first = (tmp_path / "results.jsonl").read_bytes()
    first_html = (tmp_path / "agreement.html").read_bytes()
    assert not (tmp_path / "results.prev.jsonl").exists()
    code, text = _run(tmp_path, capsys)
    assert code == 0
    assert (tmp_path / "results.prev.jsonl").read_bytes() == first
    assert (tmp_path / "agreement.prev.html").read_bytes() == first_html
    assert f"note: the previous results {tmp_path / 'results.jsonl'} are kept as {tmp_path / 'results.prev.jsonl'}" in text
    assert f"(the previous one kept as {tmp_path / 'agreement.prev.html'})" in text
    second = (tmp_path / "results.jsonl").read_bytes()
    assert json.loads(second.splitlines()[0])["run"] != json.loads(first.splitlines()[0])["run"]
    # a third run keeps the second (one generation: the older copy is replaced, as the note says)
    assert _run(tmp_path, capsys)[0] == 0
    assert (tmp_path / "results.prev.jsonl").read_bytes() == second


def test_a_file_that_is_not_results_is_kept_too(tmp_path, capsys):
    (tmp_path / "results.jsonl").write_text("my notes, not a results file\n")
    assert _run(tmp_path, capsys)[0] == 0
    assert (tmp_path / "results.prev.jsonl").read_text() == "my notes, not a results file\n"


def test_a_folder_where_the_previous_copy_goes_is_a_usage_error_before_the_run(tmp_path, capsys):
    (tmp_path / "results.jsonl").write_text("older results\n")
    (tmp_path / "results.prev.jsonl").mkdir()
    code, text = _run(tmp_path, capsys)
    assert code == 2
    assert "is not a regular file; move it away" in text
    assert (tmp_path / "results.jsonl").read_text() == "older results\n"


def test_a_folder_that_refuses_the_rename_is_a_usage_error_and_loses_nothing(tmp_path, capsys, monkeypatch):
    # a read-only folder, as root sees it too (root passes the os.access check; the rename is what fails)
    (tmp_path / "results.jsonl").write_text("older results\n")

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    code, text = _run(tmp_path, capsys)
    assert code == 2
    assert "cannot keep the previous file as" in text and "Permission denied; nothing was run" in text
    assert (tmp_path / "results.jsonl").read_text() == "older results\n"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_folder_fails_before_the_run(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "results.jsonl").write_text("older results\n")
    folder.chmod(0o555)
    try:
        code = main([*SEED, "--results", str(folder / "results.jsonl"), "--report", "none"])
    finally:
        folder.chmod(0o755)
    assert code == 2 and "is not writable" in capsys.readouterr().err
    assert (folder / "results.jsonl").read_text() == "older results\n"


def test_keep_previous_without_a_file_keeps_nothing(tmp_path):
    assert keep_previous(tmp_path / "none.jsonl") is None
    (tmp_path / "target").write_text("x")
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "target")
    assert keep_previous(tmp_path / "link.jsonl") is None  # a link is not moved (check_output_path refuses it anyway)


def test_a_killed_run_leaves_the_earlier_results_whole(tmp_path):
    results = tmp_path / "results.jsonl"
    earlier = '{"kind": "environment", "run": "an-earlier-run"}\n' + '{"kind": "record"}\n' * 100
    results.write_text(earlier)
    proc = subprocess.Popen([sys.executable, "-m", "harness", "check", "--all", "--cases", str(CASES / "generated.toml"), "--devices",
                             "cpu", "--dtypes", "float64", "--isolation", "inline", "--results", str(results), "--report", "none"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        end = time.monotonic() + 180
        while time.monotonic() < end and proc.poll() is None:
            if results.exists() and results.read_text().count('"kind": "record"') >= 3 and "an-earlier-run" not in results.read_text():
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it was killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert (tmp_path / "results.prev.jsonl").read_text() == earlier
    assert "an-earlier-run" not in results.read_text()


def test_report_keeps_the_earlier_page_too(tmp_path, capsys):
    assert _run(tmp_path, capsys)[0] == 0
    page = (tmp_path / "agreement.html").read_bytes()
    assert main(["report", str(tmp_path / "results.jsonl"), "-o", str(tmp_path / "agreement.html")]) == 0
    assert f"(the previous one kept as {tmp_path / 'agreement.prev.html'})" in capsys.readouterr().out
    assert (tmp_path / "agreement.prev.html").read_bytes() == page
    # a report written over its own results file is refused, and the results stay
    assert main(["report", str(tmp_path / "results.jsonl"), "-o", str(tmp_path / "results.jsonl")]) == 2
    assert "is one of the results files read" in capsys.readouterr().err
    assert (tmp_path / "results.jsonl").read_text().startswith('{"kind": "environment"')


@pytest.mark.parametrize("typo", [["--implementations", "numpy-hnad"], ["--dtypes", "float31"]])
def test_a_typo_in_a_name_is_a_usage_error_before_the_earlier_results_are_moved(tmp_path, capsys, typo):
    """Found by a new-user trial (helper-43): a typo in --implementations (or --dtypes) kept the earlier results as
    .prev, replaced them with an empty run and exited 2; a second typo replaced the .prev copy too: the good results
    were gone. The names are now checked before anything is moved."""
    assert _run(tmp_path, capsys)[0] == 0
    first = (tmp_path / "results.jsonl").read_bytes()
    args = [*SEED, "--results", str(tmp_path / "results.jsonl"), "--report", "none"]
    for i, a in enumerate(args):  # the typo replaces the run's own value of that option
        if a == typo[0]:
            args[i + 1] = typo[1]
    for _ in range(2):
        assert main(args) == 2
        assert typo[1] in capsys.readouterr().err
    assert (tmp_path / "results.jsonl").read_bytes() == first and not previous_path(tmp_path / "results.jsonl").exists()
