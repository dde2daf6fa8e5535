"""helper-184: the records-format rule of helper-181 attacked: files the harness wrote, untouched, must read back as
``check`` ended (no false refusal), and edits of what the rule reads must not pass.

False refusals tried (each ``check`` exit status against ``report --exit-status`` of its file, none refused): inline
and ``--isolation process -j 2``, two ``--shard`` files reported together, ``--repeat 2``, the optimizer, model,
semantics (every dtype), generated and selftest cases, plug-in steps that raise, exit or hang (``--timeout``), a
generator step, invalid inputs, inputs beyond float16/float32 (overflow), subnormal inputs, numpy-model bfloat16
without ``ml_dtypes`` (unsupported), a run stopped by SIGINT or SIGKILL halfway (both fail the report: the run did
not complete), a results file kept as ``.prev`` reported beside the new one, two runs appended to one file, and the
pytest plugin (``-k``, ``-p xdist -n 2``). The one pinned here: two runs appended to one file.

Forgeries that passed ``report --exit-status`` (exit 0) and now fail it:

- one run read twice: a copy of one shard's passing file, its environment line's ``shard`` edited (``1/2`` to ``2/2``),
  stood in for the other shard (the failing one); or one file given twice, or a run's lines appended to its own file.
  A warning said its records were counted twice; the exit status was 0. Now exit 2;
- the environment line's ``named`` deleted (a whole-run ``error`` record of a named implementation edited to
  ``unsupported``, the run-end counts edited to match), or its ``unrun`` edited from true to false (a named
  implementation that ran on none of the cases, which ``check`` failed, read as one deselected): every run that
  declares ``records_format`` 2 writes both, so a run declaring it without them fails (exit 2);
- the same shard copy with its run id edited too (environment and run-end lines): a ``check --shard K/N`` run's records
  all grade cases of shard K (``harness.shard.shard_index``), so one holding another shard's case fails (exit 2);
- the environment line's ``kind`` edited (``"note"``: skipped as unknown) or the line deleted: the records read as a
  run without an environment line, naming nothing; such a run with its run-end line fails (exit 2).

The limits stay as helper-181 listed them: ``named`` edited to ``[]`` (a run that named none) cannot be told; nor can
``named`` deleted with ``records_format`` (a run of a harness before helper-181, whose records held every field).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.records import read_jsonl
from harness.shard import shard_index
from tests.conftest import main_in_process
from tests.edited_results import ONE_CASE, SEED_RUN, forget_plugins, raising_run_lines, report_exit_status


@pytest.fixture(autouse=True)
def _forget_test_plugins():
    yield
    forget_plugins("test-h184-")


def _dumps(d: dict[str, Any]) -> str:
    return json.dumps(d) + "\n"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[list[str], list[str]]:
    """The lines of two check runs (:data:`tests.edited_results.SEED_RUN`: numpy-hand on the seed case in float64, 40
    agree records each), each its own run id."""
    folder = tmp_path_factory.mktemp("h184")
    out = []
    for name in ("a.jsonl", "b.jsonl"):
        assert main([*SEED_RUN, "--results", str(folder / name)]) == 0
        out.append((folder / name).read_text().splitlines(keepends=True))
    assert json.loads(out[0][0])["run"] != json.loads(out[1][0])["run"]
    return out[0], out[1]


def _report(tmp_path: Path, capsys: Any, *files: list[str]) -> tuple[int, str]:
    paths = []
    for i, lines in enumerate(files):
        paths.append(tmp_path / f"f{i}.jsonl")
        paths[-1].write_text("".join(lines))
    rc, _, err = main_in_process(capsys, "report", *map(str, paths), "-o", str(tmp_path / "r.html"), "--exit-status")
    return rc, err


# --- no false refusal -------------------------------------------------------------------------------------------------

def test_two_runs_appended_to_one_file_read_back_cleanly(two_runs, tmp_path, capsys):
    """``cat a.jsonl b.jsonl > both.jsonl`` of two check runs: two runs, each checked on its own, and the file passes."""
    a, b = two_runs
    res = read_jsonl_of(a + b, tmp_path)
    assert [r.records for r in res.runs] == [40, 40] and [r.miscounted for r in res.runs] == [None, None]
    assert [r.named for r in res.runs] == [["numpy-hand"], ["numpy-hand"]] and res.malformed_count == 0
    rc, err = report_exit_status(tmp_path, a + b, capsys)
    assert rc == 0 and "exit 0: every graded record passes" in err and "read already" not in err


def test_two_runs_in_two_files_read_back_cleanly(two_runs, tmp_path, capsys):
    rc, err = _report(tmp_path, capsys, *two_runs)
    assert rc == 0 and "read already" not in err


def read_jsonl_of(lines: list[str], tmp_path: Path):
    path = tmp_path / "read.jsonl"
    path.write_text("".join(lines))
    return read_jsonl(path)


# --- one run read twice -------------------------------------------------------------------------------------------------

def _as_shard(lines: list[str], shard: str, run: str | None = None) -> list[str]:
    """``lines`` with the environment line's ``shard`` edited (and the run's id, in its environment and run-end lines)."""
    env = {**json.loads(lines[0]), "shard": shard}
    end = json.loads(lines[-1])
    assert end["kind"] == "run-end"
    if run is not None:
        env["run"] = end["run"] = run
    return [_dumps(env), *lines[1:-1], _dumps(end)]


@pytest.fixture(scope="module")
def shard_files(tmp_path_factory) -> tuple[list[str], list[str]]:
    """The lines of ``check --shard 1/2`` and ``--shard 2/2`` (numpy-hand, float64, inline) of four one-element cases,
    ``c1`` ... ``c4`` (CRC-32 puts c1, c2, c3 in shard 2/2 and c4 in 1/2)."""
    folder = tmp_path_factory.mktemp("h184s")
    cases = folder / "cases.toml"
    cases.write_text("".join(ONE_CASE.format(id=f"c{i}") for i in range(1, 5)))
    assert [shard_index(f"c{i}", 2) for i in range(1, 5)] == [2, 2, 2, 1]
    out = []
    for k in (1, 2):
        path = folder / f"s{k}.jsonl"
        assert main(["check", "--cases", str(cases), "--implementations", "numpy-hand", "--isolation", "inline", "-q",
                     "--report", "none", "--shard", f"{k}/2", "--results", str(path)]) == 0
        out.append(path.read_text().splitlines(keepends=True))
    return out[0], out[1]


def test_two_shards_of_a_split_read_back_cleanly(shard_files, tmp_path, capsys):
    res = [read_jsonl_of(lines, tmp_path) for lines in shard_files]
    assert [r.runs[0].shard for r in res] == [(1, 2), (2, 2)] and [r.runs[0].off_shard for r in res] == [0, 0]
    n = res[0].runs[0].records
    assert n > 0 and res[1].runs[0].records == 3 * n and {r.case for r in res[0].records} == {"c4"}
    rc, err = _report(tmp_path, capsys, *shard_files)
    assert rc == 0, err


def test_a_shard_copy_standing_in_for_the_other_shard_fails(shard_files, tmp_path, capsys):
    """Shard 1/2's passing file copied, its ``shard`` edited to 2/2, given for shard 2/2 (a failing one): exit 0."""
    one, _ = shard_files
    run = json.loads(one[0])["run"]
    rc, err = _report(tmp_path, capsys, one, _as_shard(one, "2/2"))
    assert rc == 2, err
    assert "its records counted twice" in err and f"run {run} (read already from" in err
    assert (f"its environment line says shard 2/2 but {len(one) - 2} of its record(s) grade cases of another shard "
            "(line 2: case 'c4', of shard 1/2" in err)
    # its run id edited too (in both its lines): its records still belong to shard 1/2
    rc, err = _report(tmp_path, capsys, one, _as_shard(one, "2/2", run="20261207T000000Z-000000000000"))
    assert rc == 2 and "read already" not in err and "grade cases of another shard" in err


def test_a_pytest_session_shard_is_not_checked_case_by_case(shard_files, tmp_path):
    """A pytest session's tests may grade cases of their own (``harness_check`` of any case): its records are not
    held to its shard."""
    one, _ = shard_files
    lines = _as_shard(one, "2/2")
    lines[0] = _dumps({**json.loads(lines[0]), "runner": "pytest"})
    run = read_jsonl_of(lines, tmp_path).runs[0]
    assert run.shard is None and run.off_shard == 0 and run.miscounted is None


def test_one_file_given_twice_fails(two_runs, tmp_path, capsys):
    a, _ = two_runs
    path = tmp_path / "a.jsonl"
    path.write_text("".join(a))
    rc, _, err = main_in_process(capsys, "report", str(path), str(path), "-o", str(tmp_path / "r.html"), "--exit-status")
    assert rc == 2 and "counted twice" in err
    # without --exit-status: the warning, exit 0 (helper-66)
    rc, _, err = main_in_process(capsys, "report", str(path), str(path), "-o", str(tmp_path / "r.html"))
    assert rc == 0 and "was read already" in err


def test_a_run_appended_to_its_own_file_fails(two_runs, tmp_path, capsys):
    a, _ = two_runs
    rc, err = report_exit_status(tmp_path, a + a, capsys)
    assert rc == 2 and "counted twice" in err


# --- named and unrun deleted or edited ----------------------------------------------------------------------------------

@pytest.fixture
def raises_lines(tmp_path) -> list[str]:
    """check of numpy-hand and a plug-in that always raises (one whole-run error record) on the seed case: exit 1."""
    return raising_run_lines(tmp_path, "test-h184-raises")


def _error_edited(lines: list[str], env_edit: dict[str, Any], drop: tuple[str, ...] = ()) -> list[str]:
    out = []
    for line in lines:
        d = json.loads(line)
        if d.get("kind") == "environment":
            d.update(env_edit)
            for k in drop:
                d.pop(k)
        elif d.get("kind", "record") == "record" and d["verdict"] == "error":
            d.update(verdict="unsupported", message="numpy does not support float64")
        elif d.get("kind") == "run-end":
            d["verdicts"] = {"agree": 40, "unsupported": 1}
        out.append(_dumps(d))
    return out


def test_the_named_list_deleted_fails_the_run(raises_lines, tmp_path, capsys):
    rc, err = report_exit_status(tmp_path, _error_edited(raises_lines, {}), capsys)
    assert rc == 1 and "test-h184-raises, named in the implementations, graded nothing" in err  # (helper-181's rule)
    lines = _error_edited(raises_lines, {}, drop=("named",))
    rc, err = report_exit_status(tmp_path, lines, capsys)
    assert rc == 2, err
    assert "declares records_format 2 but its 'named' (absent) is not" in err


@pytest.mark.parametrize("value", [None, "numpy-hand", [1]])
def test_a_named_list_edited_to_another_type_fails_the_run(raises_lines, tmp_path, capsys, value):
    rc, err = report_exit_status(tmp_path, _error_edited(raises_lines, {"named": value}), capsys)
    assert rc == 2 and "its 'named' (" in err


def test_the_named_list_emptied_still_passes(raises_lines, tmp_path, capsys):
    """The limit (helper-181's): a run that named none cannot be told from one whose list was emptied."""
    rc, err = report_exit_status(tmp_path, _error_edited(raises_lines, {"named": []}), capsys)
    assert rc == 0, err


@pytest.fixture(scope="module")
def unrun_lines(tmp_path_factory) -> list[str]:
    """check --implementations numpy-hand,numpy-model on the seed case (a linear model: numpy-model has no task, no
    record): exit 1 (helper-176)."""
    path = tmp_path_factory.mktemp("h184u") / "r.jsonl"
    args = [a if a != "numpy-hand" else "numpy-hand,numpy-model" for a in SEED_RUN]
    assert main([*args, "--results", str(path)]) == 1
    return path.read_text().splitlines(keepends=True)


def test_unrun_edited_to_false_fails_the_run(unrun_lines, tmp_path, capsys):
    env = json.loads(unrun_lines[0])
    assert env["named"] == ["numpy-hand", "numpy-model"] and env["unrun"] is True
    rc, err = report_exit_status(tmp_path, unrun_lines, capsys)
    assert rc == 1 and "numpy-model, named in the implementations, ran on none of the cases" in err
    for value in (False, None, "numpy-model"):
        rc, err = report_exit_status(tmp_path, [_dumps({**env, "unrun": value}), *unrun_lines[1:]], capsys)
        assert rc == 2 and "its 'unrun' (" in err, (value, err)
    rc, err = report_exit_status(tmp_path, [_dumps({k: v for k, v in env.items() if k != "unrun"}), *unrun_lines[1:]], capsys)
    assert rc == 2 and "its 'unrun' (absent)" in err


def test_a_run_without_the_declaration_is_not_asked_for_named(unrun_lines, tmp_path, capsys):
    """A run that declares no records format (a harness before helper-181) wrote no ``named``: not refused for it."""
    env = {k: v for k, v in json.loads(unrun_lines[0]).items() if k not in ("records_format", "named", "unrun")}
    res = read_jsonl_of([_dumps(env), *unrun_lines[1:]], tmp_path)
    assert res.runs[0].unnamed is None and res.runs[0].miscounted is None


def test_the_named_list_deleted_with_the_declaration_still_passes(raises_lines, tmp_path, capsys):
    """The limit: a run that declares no records format (a harness before helper-181, whose records already held
    every field from helper-176's round on) wrote no ``named``; ``records_format`` deleted (or edited to 1) with it,
    the edit reads as such a run."""
    for drop, edit in ((("named", "records_format"), {}), (("named",), {"records_format": 1})):
        rc, err = report_exit_status(tmp_path, _error_edited(raises_lines, edit, drop=drop), capsys)
        assert rc == 0, (drop, err)


@pytest.mark.parametrize("kind", ["note", "Environment"])
def test_the_environment_line_hidden_fails_the_run(raises_lines, tmp_path, capsys, kind):
    """The environment line's ``kind`` edited (skipped as a kind unknown to this version, with a note), the whole-run
    error edited to unsupported: the records read as a run without an environment line, naming nothing, and passed."""
    lines = _error_edited(raises_lines, {"kind": kind})
    rc, err = report_exit_status(tmp_path, lines, capsys)
    assert rc == 2, err
    assert "it has no environment line before its records and run-end line" in err
    # its lines deleted instead: the same
    rc, err = report_exit_status(tmp_path, _error_edited(raises_lines, {})[1:], capsys)
    assert rc == 2 and "it has no environment line" in err
