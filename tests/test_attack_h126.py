"""helper-126's adversarial round: defects found by attacking ``bench`` (arguments, a run that fails before it writes
its JSON) and ``check`` (a results file that cannot be written), each pinned here."""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from tests.conftest import CASES
from tests.test_bench import _synthetic

BENCH = ["bench", "--sweep", "tiny", "--devices", "cpu", "--dtypes", "float64", "--no-verification", "--target-time", "0.01"]


def test_a_bench_run_that_fails_before_writing_its_json_does_not_show_the_previous_runs_tables(tmp_path, capfd):
    # `bench` read the file at --json after pytest, whatever had written it: a run that failed before pytest-benchmark
    # wrote its JSON (an implementation it could not resolve, a plug-in that failed to import, a run killed halfway)
    # printed an earlier run's tables and wrote its HTML page from them, as this run's
    out_json, out_html = tmp_path / "bench.json", tmp_path / "bench.html"
    earlier = _synthetic()  # an earlier run's: torch-seed on cpu and cuda:0, float32, D=16, K=4
    earlier["machine_info"]["harness"]["note"] = "an-earlier-run"
    out_json.write_text(json.dumps(earlier))
    before = out_json.read_bytes()
    rc = main([*BENCH, "--implementations", "no-such-implementation", "--json", str(out_json), "--html", str(out_html)])
    out, err = capfd.readouterr()
    assert rc != 0
    assert "an-earlier-run" not in out and "D=16 K=4" not in out and "cuda:0" not in out, out[-2000:]
    assert not out_html.exists()
    assert not out_json.exists() and f"wrote no {out_json}" in err, err[-2000:]
    # the earlier run's file is not lost: kept beside it, as check keeps its earlier results
    assert (tmp_path / "bench.prev.json").read_bytes() == before
    assert "bench.prev.json" in err


@pytest.mark.parametrize(("option", "value"), [("--target-time", "nan"), ("--target-time", "-1"), ("--target-time", "inf"),
                                               ("--max-work", "0"), ("--max-work", "nan"), ("--max-work", "-5")])
def test_bench_arguments_that_cannot_time_anything_are_usage_errors(option, value, tmp_path, capfd):
    # --target-time nan failed every benchmark with pytest's ValueError tracebacks, -1 and inf were passed on
    # unchecked; --max-work 0 or nan skipped every size and exited 0 having timed no step
    with pytest.raises(SystemExit) as exc:
        main([*BENCH, "--implementations", "numpy-hand", option, value, "--json", str(tmp_path / "b.json"), "--html", "none"])
    assert exc.value.code == 2
    err = capfd.readouterr().err
    assert f"argument {option}" in err and value in err, err
    assert not (tmp_path / "b.json").exists()


def test_a_bench_run_that_timed_no_step_fails(tmp_path, capfd):
    # a valid --max-work below every size of the sweep (tiny: N*D*K from 2) timed nothing and exited 0
    rc = main([*BENCH, "--implementations", "numpy-hand", "--max-work", "1", "--json", str(tmp_path / "b.json"), "--html", "none"])
    out, err = capfd.readouterr()
    assert rc == 1, out[-2000:] + err[-2000:]
    assert "no update step was timed" in err, err[-2000:]


CHECK_ARGS = ["--cases", str(CASES / "seed.toml"), "--dtypes", "float64", "--implementations", "numpy-hand", "--isolation",
              "inline", "-q", "--report", "none"]


def _check_with_file_size_limit(tmp_path, limit: int | None, name: str):
    """``check`` of numpy-hand on the seed cases in float64, inline, its results file limited to ``limit`` bytes
    (RLIMIT_FSIZE: a write past it fails with EFBIG, as a full disk fails with ENOSPC; Python ignores SIGXFSZ)."""
    import resource
    import subprocess
    import sys

    from tests.conftest import ROOT

    def limited() -> None:  # pragma: no cover - runs in the child
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    # (the environment line holds the command line and the path: one folder name length for every run, so that the
    # unlimited run's size is the limited runs' size; an in-process run's line held pytest's own command line)
    (tmp_path / name).mkdir()
    results = tmp_path / name / "r.jsonl"
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "harness", "check", *CHECK_ARGS, "--results", str(results)],
                         preexec_fn=limited, env=env, cwd=tmp_path / name, capture_output=True, text=True, timeout=240)
    return out, results


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="RLIMIT_FSIZE in a forked child")
def test_a_results_file_that_cannot_be_written_is_a_clear_error_and_never_a_complete_run(tmp_path):
    # a full disk (or a file size limit) ended check with two chained tracebacks (the write, then the footer's write
    # in the handler); the run must say what failed, exit nonzero, and leave a file that reads as unfinished
    out, full_path = _check_with_file_size_limit(tmp_path, None, "n0")  # the same run without a limit: its file's size
    assert out.returncode == 0, out.stderr[-3000:]
    size = full_path.stat().st_size
    footer = full_path.read_text().splitlines()[-1]
    assert '"completed": true' in footer
    # mid-stream (the second case's records), and at the final rewrite (every record streamed, the footer not)
    for j, limit in enumerate((size * 2 // 3, size - len(footer) // 2)):
        out, path = _check_with_file_size_limit(tmp_path, limit, f"n{j + 1}")
        assert out.returncode == 2, (limit, out.returncode, out.stderr[-3000:])
        assert "Traceback" not in out.stderr, out.stderr[-3000:]
        assert f"error: results file {path}: cannot be written" in out.stderr and "File too large" in out.stderr, out.stderr[-3000:]
        text = path.read_text(errors="replace")
        assert '"completed": true' not in text
        assert main(["report", str(path), "-o", str(tmp_path / "r.html"), "--exit-status"]) != 0


def test_a_pytest_session_killed_halfway_leaves_no_earlier_sessions_results_at_its_path(tmp_path):
    # the plugin kept the earlier results file (NAME.prev.jsonl) only at the session's end: a session killed halfway
    # (a CI timeout, SIGKILL; here os._exit in a test) left the earlier session's completed, passing file at
    # --harness-results, which `report --exit-status` then passed as this session's (check replaces it as it starts)
    import subprocess
    import sys

    from tests.conftest import ROOT

    results, page = tmp_path / "results.jsonl", tmp_path / "agreement.html"
    earlier = '{"kind": "environment", "run": "an-earlier-session"}\n'
    results.write_text(earlier)
    page.write_text("<p>an earlier session's page</p>")
    (tmp_path / "test_dies.py").write_text("import os\n\n\ndef test_killed_halfway():\n    os._exit(1)\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "harness.pytest_plugin",
                          "test_dies.py", "--harness-results", str(results), "--harness-report", str(page)],
                         cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert not results.exists() and not page.exists()
    assert (tmp_path / "results.prev.jsonl").read_text() == earlier
    assert (tmp_path / "agreement.prev.html").read_text() == "<p>an earlier session's page</p>"


STALE_FD_PLUGIN = '''
import os
import harness
from harness.implementations.numpy_steps import numpy_hand


def _stale_write(data):
    # a C library writing to a descriptor it closed long ago, which the harness's results file now holds
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").endswith(".jsonl"):
                os.write(int(fd), data)
        except OSError:
            pass


@harness.implementation("stale-fd", framework="numpy")
def stale_fd(X, y, W, b, *, lr, reduction, steps):
    out = numpy_hand(X, y, W, b, lr=lr, reduction=reduction, steps=steps)
    _stale_write(os.environ["STALE_BYTES"].encode("latin-1"))
    last = out[-1]  # and one wrong value: b of the last step, the run's last record
    return out[:-1] + [harness.StepResult(last.loss, last.grad_W, last.grad_b, last.W, last.b + 1.0)]
'''


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/fd"), reason="finds its descriptor through /proc")
@pytest.mark.parametrize("stray", ["\n", "\x80junk"])
def test_a_stray_write_into_the_results_files_descriptor_does_not_turn_a_failing_record_into_a_pass(tmp_path, stray):
    # the completed run's rewrite copied each record's line from the file as streamed, by its index: one newline written
    # into the file's descriptor during the run (inline) shifted every later line by one, the run's one disagree record
    # (its last) was dropped and another repeated, and `report --exit-status` passed the file check had failed (exit 1);
    # a byte that is not UTF-8 ended the run with a UnicodeDecodeError and no footer. The file is now checked against
    # what the run wrote (length and CRC-32) and, where it differs, written again from the records in memory
    import subprocess
    import sys

    from tests.conftest import ROOT

    (tmp_path / "stale_fd.py").write_text(STALE_FD_PLUGIN)
    results = tmp_path / "r.jsonl"
    out = subprocess.run([sys.executable, "-m", "harness", "check", "--cases", str(CASES / "seed.toml"), "--case", "seed",
                          "--dtypes", "float64", "--plugin", str(tmp_path / "stale_fd.py"), "--implementations", "stale-fd",
                          "--isolation", "inline", "-q", "--report", "none", "--results", str(results)], cwd=tmp_path,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "STALE_BYTES": stray},
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 1 and "exit 1: 1 disagree record(s) fail" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "was written by something other than this run" in out.stderr, out.stderr[-2000:]
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    recs = [r for r in lines if r["kind"] == "record"]
    assert len(recs) == 40 and len({(r["step"], r["quantity"]) for r in recs}) == 40
    assert [(r["step"], r["quantity"]) for r in recs if r["verdict"] == "disagree"] == [(8, "b")]
    assert lines[-1]["kind"] == "run-end" and lines[-1]["completed"] is True
    assert main(["report", str(results), "-o", str(tmp_path / "r.html"), "--exit-status"]) == 1


def test_a_bench_json_path_that_cannot_be_written_is_a_usage_error_before_the_run(tmp_path, capfd):
    # --json /proc/x.json ran the whole benchmark, then pytest-benchmark's FileNotFoundError traceback and "wrote no"
    rc = main([*BENCH, "--implementations", "numpy-hand", "--json", str(tmp_path), "--html", "none"])
    out, err = capfd.readouterr()
    assert rc == 2 and f"error: --json {tmp_path}: is a folder" in err, err[-2000:]
    assert "running:" not in err  # refused before pytest ran
