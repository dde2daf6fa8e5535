"""Streamed results files (issue 11): nothing finished is lost to SIGINT or SIGKILL, a stale
file never looks current, bad output paths fail before the run, and --shard K/N."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import CASES, ROOT, main_in_process

# long enough (518 cases x every default implementation) that it is always interrupted mid-run
LONG = ["check", "--all", "--cases", str(CASES / "generated.toml"), "--devices", "cpu", "--dtypes", "float64,float32"]


def _ctrl_c_as_in_a_terminal() -> None:
    """SIGINT back to its default in the child, as in a terminal: pytest itself may run as a background job, where
    SIGINT is ignored and the child would inherit that (then no Ctrl-C could stop it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def harness_proc():
    """Start ``python -m harness ...`` in its own process group; the group is killed at teardown if still there."""
    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True, preexec_fn=_ctrl_c_as_in_a_terminal)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _wait_for_records(proc: subprocess.Popen, path: Path, n: int = 5, limit: float = 180.0) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"check ended (exit {proc.returncode}) before it was interrupted:\n{out}\n{err}")
        if sum('"kind": "record"' in line for line in _lines(path)) >= n:
            return
        time.sleep(0.2)
    pytest.fail(f"no record reached {path} in {limit:g} s: records are not streamed")


def _report(path: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", "report", str(path), "-o", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_sigint_keeps_finished_records_writes_interrupted_footer_and_exits_130(tmp_path, harness_proc):
    results, html = tmp_path / "r.jsonl", tmp_path / "r.html"
    results.write_text('{"kind": "environment", "run": "an-older-run"}\n' + '{"stale": 1}\n' * 5000)
    proc = harness_proc(*LONG, "--jobs", "2", "--results", str(results), "--report", str(html))
    _wait_for_records(proc, results)
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C: the whole process group, workers too
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and str(results) in err
    lines = [json.loads(line) for line in _lines(results)]  # every line is valid JSON
    env, recs, footer = lines[0], lines[1:-1], lines[-1]
    assert env["kind"] == "environment" and env["run"] != "an-older-run"
    assert recs and all(r["kind"] == "record" and r["case"].startswith("gen-") for r in recs)
    assert footer == {"kind": "run-end", "run": env["run"], "completed": False, "records": len(recs), "interrupted": True,
        # the verdicts, known bugs and load errors counted (a line pasted over another keeps the count: helper-131)
        "verdicts": dict(sorted(Counter(r["verdict"] for r in recs).items())), "known_bugs": sum(1 for r in recs if r["known_bug"]), "load_errors": 0}
    # every finished task is whole: one task's records are written together
    assert "INTERRUPTED" in html.read_text()
    res = _report(results, tmp_path / "again.html")
    assert res.returncode == 0, res.stderr
    assert f"{len(recs)} records" in res.stdout


def test_sigkill_leaves_every_finished_record_in_the_file(tmp_path, harness_proc):
    results = tmp_path / "r.jsonl"
    proc = harness_proc(*LONG, "--isolation", "inline", "--results", str(results), "--report", "none")
    _wait_for_records(proc, results)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    raw = _lines(results)
    lines = [json.loads(line) for line in raw]  # flushed line by line: nothing half-written
    assert lines[0]["kind"] == "environment" and "run" in lines[0]
    recs = [r for r in lines[1:] if r.get("kind") == "record"]
    assert len(recs) == len(lines) - 1 >= 5  # no footer: the run never ended
    res = _report(results, tmp_path / "r.html")
    assert res.returncode == 0, res.stderr
    assert f"{len(recs)} records" in res.stdout


def _refused(args: list[str], as_command: bool, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``check``'s exit code and stderr for ``args``: as the command (``python -m harness``, a process of its own) or
    through :func:`harness.cli.main` in this process (the same code after ``sys.exit``; a refusal before the run needs
    no process of its own: each command started torch and the fork server's preload, about 8 s of CPU, to refuse)."""
    if as_command:
        res = subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
        return res.returncode, res.stderr
    code, _, err = main_in_process(capsys, *args)
    return code, err


@pytest.mark.parametrize("bad", ["file/x.jsonl", "folder", "", "folder/", "x" * 300 + ".jsonl", "y" * 248 + ".jsonl"])
def test_bad_results_path_fails_before_the_run_with_exit_2(tmp_path, bad, capsys):
    """(helper-66: a name too long for the file system, 300 characters, raised OSError after the checks, a traceback
    and exit 1; one that fits, 254 characters, but whose temporary file for the final rewrite does not, passed them and
    failed at the run's end.) The first path as the command, the others through ``cli.main``."""
    (tmp_path / "file").write_text("a regular file")
    (tmp_path / "folder").mkdir()
    path = str(tmp_path / bad) if bad else ""
    start = time.monotonic()
    code, err = _refused([*LONG, "--results", path, "--report", "none"], bad == "file/x.jsonl", capsys)
    assert code == 2, err
    assert err.strip().splitlines()[-1].startswith(f"error: --results {path if path else repr('')}")
    assert "Traceback" not in err
    assert time.monotonic() - start < 60  # nothing was run (the whole set takes many minutes)


def test_bad_report_path_fails_before_the_run_and_keeps_the_old_results(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    old = tmp_path / "r.jsonl"
    old.write_text("older results\n")
    code, err = _refused([*LONG, "--results", str(old), "--report", str(tmp_path / "file" / "r.html")], False, capsys)
    assert code == 2 and "error: --report " in err and "is not a folder" in err
    assert old.read_text() == "older results\n"


def test_output_path_checks():
    from harness.errors import UsageError
    from harness.records import check_output_path

    with pytest.raises(UsageError, match="empty"):
        check_output_path("", "--results")
    with pytest.raises(UsageError, match="is a folder"):
        check_output_path(str(ROOT), "--results")
    if sys.platform.startswith("linux"):  # folders the checks of access rights let pass, where no file can be made
        with pytest.raises(UsageError, match="cannot write a file there"):
            check_output_path("/proc/x.jsonl", "--results")


# ------------------------------------------------------------------ sharding


def test_shards_are_disjoint_cover_everything_and_do_not_depend_on_order():
    from harness.cases import load_cases
    from harness.shard import parse_shard, select_shard, shard_index

    cases = load_cases([str(CASES)]).cases
    ids = [c.id for c in cases]
    for n in (1, 2, 3, 7):
        parts = [select_shard(cases, (k, n)) for k in range(1, n + 1)]
        got = [c.id for p in parts for c in p]
        assert sorted(got) == sorted(ids)  # covered, each once
        assert len(set(got)) == len(got)
        rev = [c.id for c in select_shard(list(reversed(cases)), (1, n))]
        assert sorted(rev) == sorted(c.id for c in parts[0])  # membership is by id, not position
        if n > 1:
            assert all(len(p) < len(cases) for p in parts)  # the hash spreads the cases
    import zlib

    assert shard_index("seed", 4) == zlib.crc32(b"seed") % 4 + 1  # stable: no PYTHONHASHSEED
    assert parse_shard("2/3") == (2, 3) and parse_shard(None) is None


@pytest.mark.parametrize("bad", ["0/2", "3/2", "2", "a/b", "1/0", "-1/2"])
def test_bad_shard_is_a_usage_error(bad):
    from harness.errors import UsageError
    from harness.shard import parse_shard

    with pytest.raises(UsageError, match="--shard"):
        parse_shard(bad)


def test_merged_shards_equal_one_run(tmp_path, capsys):
    """The one run and the shards (inline) through :func:`harness.cli.main` in this process, as the command runs them
    (a process each paid torch's import and the derivations again); the merge as the command ``report``."""
    common = ["check", "--cases", str(CASES / "semantics.toml"), "--cases", str(CASES / "seed.toml"), "--devices", "cpu",
              "--implementations", "numpy-hand,torch-seed", "--isolation", "inline", "--report", "none", "-q"]

    def run(*args: str) -> tuple[int, str]:
        code, _, err = main_in_process(capsys, *common, *args)
        return code, err

    assert run("--results", str(tmp_path / "all.jsonl"))[0] == 0
    parts = []
    for k in (1, 2, 3):
        code, err = run("--shard", f"{k}/3", "--results", str(tmp_path / f"s{k}.jsonl"))
        assert code in (0, 2), err  # 2: a shard that got no case (4 cases in 3 shards)
        if code == 0:
            parts.append(tmp_path / f"s{k}.jsonl")
        else:
            assert "no case to run in shard" in err
    assert len(parts) >= 2
    from harness.report import build_model

    def key(r):
        d = r.to_json()
        return json.dumps(d, sort_keys=True)

    one = sorted(key(r) for r in build_model([tmp_path / "all.jsonl"]).records)
    merged = sorted(key(r) for r in build_model(parts).records)
    assert merged == one and one
    res = subprocess.run([sys.executable, "-m", "harness", "report", *map(str, parts), "-o", str(tmp_path / "m.html")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and f"{len(one)} records" in res.stdout and f"from {len(parts)} file(s)" in res.stdout


def test_plain_progress_lines_have_done_total_elapsed_and_eta():
    import io

    from harness.progress import Progress

    buf = io.StringIO()
    p = Progress("check", stream=buf, tty=False, every=0.0)
    p(1, 4, "a")
    p(4, 4, "b")
    p.close()
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("check: [1/4]  25% elapsed ") and "ETA " in lines[0] and lines[0].endswith(" a")
    assert lines[1].startswith("check: [4/4] 100% ") and "ETA 0.0s" in lines[1]


def test_progress_bar_on_a_terminal():
    import io

    from harness.progress import Progress

    buf = io.StringIO()
    p = Progress("check", stream=buf, tty=True)
    p(2, 4, "x")
    p.close()
    assert "2/4" in buf.getvalue() and "%" in buf.getvalue()


def test_plain_progress_lines_get_sparser_as_the_run_gets_longer(monkeypatch):
    import io

    from harness import progress as progress_module
    from harness.progress import Progress

    clock = [1000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    buf = io.StringIO()
    p = Progress("check", stream=buf, tty=False)  # every 5 s, or a tenth of the elapsed time when that is longer
    for second in range(1, 901):  # a 15-minute run, one task a second
        clock[0] = 1000.0 + second
        p(second, 900, "")
    lines = buf.getvalue().splitlines()
    elapsed = [int(line.split("[")[1].split("/")[0]) for line in lines]
    assert elapsed[:10] == [1, 6, 11, 16, 21, 26, 31, 36, 41, 46]  # the first task, then every 5 s while the run is young
    assert 30 <= len(lines) <= 45 and elapsed[-1] == 900  # about 40 lines in all, the last one at the end
    gaps = [b - a for a, b in zip(elapsed, elapsed[1:], strict=False)]
    assert max(gaps) <= 90


def test_no_eta_from_the_first_two_percent_of_the_tasks():
    from harness.progress import Progress

    p = Progress("check", tty=False)
    assert p.line(1, 1648, "x").endswith("ETA ? x") and p.line(32, 1648, "x").endswith("ETA ? x")
    assert "ETA ?" not in p.line(33, 1648, "x") and "ETA ?" not in p.line(1, 4, "x")


def _check_args(tmp_path: Path) -> list[str]:
    return ["check", "--cases", str(CASES / "seed.toml"), "--implementations", "numpy-hand", "--dtypes", "float64",
            "--isolation", "inline", "-q", "--results", str(tmp_path / "r.jsonl"), "--report", str(tmp_path / "a.html")]


def test_ctrl_c_while_the_results_are_rewritten_leaves_no_earlier_report(tmp_path, monkeypatch, capsys):
    """helper-66: a Ctrl-C just after the last task, while the completed results were rewritten, left them without a
    footer and an earlier run's report at the ``--report`` path, where it looked like this run's. Now the earlier
    report is moved aside before the run starts, and the results end with an interrupted footer."""
    from harness import cli
    from harness.records import ResultsStream, has_footer, read_jsonl

    (tmp_path / "a.html").write_text("an earlier run's green report")
    finish = ResultsStream.finish

    def interrupted_rewrite(self, ordered=None, *, interrupted=False):  # type: ignore[no-untyped-def]
        if ordered is not None and not interrupted:
            raise KeyboardInterrupt
        return finish(self, ordered, interrupted=interrupted)

    monkeypatch.setattr(ResultsStream, "finish", interrupted_rewrite)
    assert cli.main(_check_args(tmp_path)) == 130
    assert (tmp_path / "a.prev.html").read_text() == "an earlier run's green report"
    assert not (tmp_path / "a.html").exists() or "INTERRUPTED" in (tmp_path / "a.html").read_text()
    assert has_footer(tmp_path / "r.jsonl")
    res = read_jsonl(tmp_path / "r.jsonl")
    end = res.runs[-1].end
    assert end is not None and end["interrupted"] is True and res.records


def test_ctrl_c_while_the_report_is_rendered_after_a_completed_run(tmp_path, monkeypatch, capsys):
    """The same after the results were completed: exit 130, the results complete (their footer says so), no report at
    the path, the earlier one kept, and stderr says which."""
    from harness import cli, report
    from harness.records import read_jsonl

    (tmp_path / "a.html").write_text("an earlier run's green report")

    def interrupted_render(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "render_report", interrupted_render)
    assert cli.main(_check_args(tmp_path)) == 130
    assert "the run had completed" in capsys.readouterr().err
    assert not (tmp_path / "a.html").exists()
    assert (tmp_path / "a.prev.html").read_text() == "an earlier run's green report"
    assert read_jsonl(tmp_path / "r.jsonl").completed


@pytest.mark.parametrize("results, report", [("r.jsonl", "r.prev.jsonl"), ("a.prev.html", "a.html"),
                                             ("r.jsonl", "z" * 244 + ".html")])
def test_outputs_that_would_fail_or_lose_a_file_are_refused_before_the_run(tmp_path, results, report, capsys):
    """helper-67: ``--results r.jsonl --report r.prev.jsonl`` (or the mirror) kept each earlier file in the other's
    place: the earlier report was lost and the notes named the wrong files; a 244-character report name passed the
    path check (the results' temporary name) and failed in the report's own temporary file, 4 characters longer, at
    the run's end. Both are exit 2 before the run now, and the earlier files stay as they were."""
    (tmp_path / results).write_text("earlier results")
    if len(report) < 200:
        (tmp_path / report).write_text("earlier report")
    code, err = _refused(["check", "--cases", str(CASES / "seed.toml"), "--implementations", "numpy-hand", "--dtypes", "float64",
                          "-q", "--results", str(tmp_path / results), "--report", str(tmp_path / report)], False, capsys)
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith(f"error: --report {tmp_path / report}")
    assert (tmp_path / results).read_text() == "earlier results"


def test_the_eta_leaves_out_the_start_up_carried_by_the_first_task(monkeypatch):
    # helper-77: a 3 s run's first plain line said "ETA 1m09s": the first task carried the start-up (imports, compiled
    # kernels), and the rate was taken from it. The first line now says "ETA ?", later ones use the rate since then
    import io

    from harness import progress as progress_module
    from harness.progress import Progress

    clock = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    buf = io.StringIO()
    p = Progress("check", stream=buf, tty=False, every=0.0)
    clock[0] = 160.0  # the first task: 60 s of start-up
    p(1, 10, "a")
    clock[0] = 170.0  # 2 more tasks in 10 s: 5 s each, 7 to go
    p(3, 10, "b")
    lines = buf.getvalue().splitlines()
    assert lines[0].endswith("ETA ? a") and lines[1].endswith("ETA 35.0s b"), lines


@pytest.mark.parametrize("completed", [True, False])
def test_a_results_file_replaced_by_another_writer_is_neither_mixed_nor_lost(tmp_path, completed):
    """helper-94: two ``check`` runs given one ``--results``: the second run's final rewrite read the streamed lines back
    from the path, where the first run's file now stood, so its completed file held the first run's records (all agree)
    under its own environment line and footer, and the first run's file was lost. A run reads back its own file; where
    the path holds another file, its own ends beside it as NAME.RUN.EXT."""
    from harness.records import ResultsStream, environment_record, read_jsonl, write_jsonl
    from tests.report_data import synthetic_records

    mine = [r for r in synthetic_records(1, seed=3) if r.verdict != "agree"][:5]
    theirs = synthetic_records(1, seed=4)[:7]
    path = tmp_path / "r.jsonl"
    stream = ResultsStream(path, environment_record({"argv": ["mine"]}))
    stream.add(mine)
    other = write_jsonl(tmp_path / "other.jsonl", theirs, environment_record({"argv": ["theirs"]}),
                        footer={"kind": "run-end", "run": "theirs", "completed": True, "records": len(theirs)})
    os.replace(other, path)  # the other run's atomic rewrite lands at the path
    got = stream.finish(list(reversed(mine))) if completed else stream.finish(interrupted=True)
    assert got == stream.diverted == tmp_path / f"r.{stream.run}.jsonl"
    at_path = read_jsonl(path)
    assert [r.case for r in at_path.records] == [r.case for r in theirs] and at_path.environments[0]["argv"] == ["theirs"]
    own = read_jsonl(got)
    assert own.environments[0]["run"] == stream.run and own.malformed_count == 0
    assert [r.to_json() for r in own.records] == [r.to_json() for r in (reversed(mine) if completed else mine)]
    assert [(span.run, span.end["completed"], span.end["records"], span.records) for span in own.runs] == \
        [(stream.run, completed, len(mine), len(mine))]
    # undisturbed, the run's file stays at its path
    quiet = ResultsStream(tmp_path / "q.jsonl", environment_record({}))
    quiet.add(mine)
    assert quiet.finish(mine) == tmp_path / "q.jsonl" and quiet.diverted is None
    assert len(read_jsonl(tmp_path / "q.jsonl").records) == len(mine)
