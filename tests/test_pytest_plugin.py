"""The pytest plugin: inert until used, options and markers, fixtures for a
user's own tests, skips for absent devices, the terminal summary, and the same
records from a serial run and from ``pytest -n 2``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
import torch

from tests.conftest import HAND_STEP_SOURCE, ROOT

CASE_FILE = '''
[[case]]
id = "tiny-fit"
X = [[1.0, 2.0], [3.0, -1.0], [0.5, 0.25]]
y = [[1.0], [2.0], [-1.5]]
W = [["0.1"], ["-0.2"]]
b = ["0.3"]
lr = "0.1"
steps = 2
reduction = "mean"
dtypes = ["float32", "float64"]
'''

USER_TESTS = '''
import torch
import harness


def good_step(X, y, W, b, *, lr, reduction, steps):
    W = W.detach().clone().requires_grad_(True)
    b = b.detach().clone().requires_grad_(True)
    out = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(X @ W + b, y, reduction=reduction)
        loss.backward()
        gW, gb = W.grad.clone(), b.grad.clone()
        with torch.no_grad():
            W -= lr * W.grad
            b -= lr * b.grad
        W.grad = None
        b.grad = None
        out.append(harness.StepResult(loss.detach(), gW, gb, W.detach().clone(), b.detach().clone()))
    return out


def forgets_the_two(X, y, W, b, *, lr, reduction, steps):
    res = good_step(X, y, W, b, lr=lr, reduction=reduction, steps=steps)
    return [harness.StepResult(r.loss, r.grad_W / 2, r.grad_b, r.W, r.b) for r in res]


def test_good_step(harness_verify):
    records = harness_verify(good_step, dtypes="float32")
    assert {r.verdict for r in records} == {"agree"}
    assert {r.case for r in records} == {"tiny-fit"}


def test_wrong_step(harness_verify):
    harness_verify(forgets_the_two, dtypes="float32")
'''


def _env(monkeypatch):
    # subprocesses import this checkout's harness, whatever the venv has installed
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


def test_extension_packages_are_loaded_before_any_pytester_test(pytester):
    """pytester drops the modules a test imports first at its teardown; torch imported again later in the same process
    corrupted memory (a serial run of this file and tests/test_report.py crashed in the garbage collector, after
    "SystemError: ... bad call flags"). tests/conftest.py imports them before any test."""
    assert all(name in sys.modules for name in ("torch", "numpy", "numba", "flint"))


def test_the_entry_point_registers_the_plugin_module_from_outside_the_package():
    """pytest rewrites the asserts of the whole package that holds an editable install's ``pytest11`` entry point, in
    every pytest process: with the entry point in ``harness``, each harness module a session imported was parsed and
    compiled again (about 1 s of CPU a grading session where bytecode is not cached). The entry point's module is
    outside the package, and the object it names is :mod:`harness.pytest_plugin` itself, under the module's name."""
    import importlib
    import tomllib

    import harness.pytest_plugin

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    eps = project["project"]["entry-points"]["pytest11"]
    assert list(eps) == ["harness.pytest_plugin"]
    module, _, attr = eps["harness.pytest_plugin"].partition(":")
    assert module.split(".")[0] != "harness" and module in project["tool"]["setuptools"]["py-modules"]
    assert getattr(importlib.import_module(module), attr) is harness.pytest_plugin


def test_plugin_is_inert_when_unused(pytester, monkeypatch):
    _env(monkeypatch)
    pytester.makepyfile(test_plain='''
import sys

def test_plain():
    assert "torch" not in sys.modules and "sympy" not in sys.modules and "numpy" not in sys.modules
''')
    result = pytester.runpytest_subprocess("-p", "harness.pytest_plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    # no summary section of its own (the header may list the installed distribution)
    assert "- autograd-harness -" not in result.stdout.str() and " records: " not in result.stdout.str()


def test_options_and_markers_are_registered(pytester, monkeypatch):
    _env(monkeypatch)
    helptext = pytester.runpytest_subprocess("-p", "harness.pytest_plugin", "--help").stdout.str()
    for opt in ("--harness-cases", "--harness-devices", "--harness-dtypes", "--harness-implementations", "--harness-plugin",
                "--harness-results", "--harness-report", "--harness-tier", "--harness-tf32", "--harness-matmul-precision"):
        assert opt in helptext
    markers = pytester.runpytest_subprocess("-p", "harness.pytest_plugin", "--markers").stdout.str()
    assert "@pytest.mark.cuda:" in markers and "@pytest.mark.mps:" in markers and "@pytest.mark.harness(" in markers


def test_harness_verify_fixture_grades_a_users_step(pytester, monkeypatch):
    _env(monkeypatch)
    pytester.makefile(".toml", cases=CASE_FILE)
    pytester.makepyfile(test_user=USER_TESTS)
    results = pytester.path / "out" / "results.jsonl"
    result = pytester.runpytest_subprocess("-p", "harness.pytest_plugin", "-p", "no:cacheprovider",
                                           "--harness-cases", "cases.toml", "--harness-devices", "cpu", "--harness-results", str(results))
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    # the failure message of the wrong step, in the style of torch.testing.assert_close
    assert "checks of 'forgets_the_two' failed" in out and "grad_W (step 1)" in out and "Mismatched elements: 2 / 2 (100.0%)" in out
    # terminal summary: one line per device and dtype, then the verdict line
    assert "autograd-harness" in out and "cpu float32: " in out
    # and the failures grouped by cause, with a reproduce line, as `check` prints them
    assert "- forgets_the_two: " in out and "FAILS the run" in out and "    reproduce: python -m harness check" in out
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert lines[0]["kind"] == "environment" and lines[0]["runner"] == "pytest"
    recs = lines[1:-1]
    assert lines[-1] == {"kind": "run-end", "run": lines[0]["run"], "completed": True, "records": len(recs), "interrupted": False,
        # the verdicts, known bugs and load errors counted (a line pasted over another keeps the count: helper-131)
        "verdicts": dict(sorted(Counter(r["verdict"] for r in recs).items())), "known_bugs": sum(1 for r in recs if r["known_bug"]), "load_errors": 0}
    assert {r["implementation"] for r in recs} == {"good_step", "forgets_the_two"}
    assert len(recs) == 2 * 2 * 5  # two steps, five quantities, each implementation
    assert all(r["matmul_precision"] == "highest" and r["tf32"] is None for r in recs)  # tf32 is recorded for CUDA only
    # the report's "command" row: the pytest command line as it ran, not a `python -m harness` one
    assert "pytest" in lines[0]["command"] and f"--harness-results {results}" in lines[0]["command"]
    assert "harness check" not in lines[0]["command"]
    # a second session keeps the first one's results file (results.prev.jsonl) and says so
    first = results.read_text()
    again = pytester.runpytest_subprocess("-p", "harness.pytest_plugin", "-p", "no:cacheprovider",
                                          "--harness-cases", "cases.toml", "--harness-devices", "cpu", "--harness-results", str(results))
    assert f"harness: the previous {results} is kept as {results.parent / 'results.prev.jsonl'}" in again.stdout.str()
    assert (results.parent / "results.prev.jsonl").read_text() == first


def test_parametrized_fixtures_marks_and_absent_devices(pytester, monkeypatch):
    _env(monkeypatch)
    pytester.makefile(".toml", cases=CASE_FILE)
    pytester.makepyfile(test_sweep='''
def test_one(harness_case, harness_dtype, harness_implementation, harness_device, harness_check):
    records = harness_check(harness_case, harness_implementation, harness_device, harness_dtype)
    assert all(r.verdict == "agree" for r in records)
''')
    args = ["-p", "harness.pytest_plugin", "-p", "no:cacheprovider", "--harness-cases", "cases.toml",
            "--harness-implementations", "numpy-hand,torch-seed", "--harness-devices", "cpu,cuda,mps", "-rs", "-v",
            "--harness-matmul-precision", "high"]
    result = pytester.runpytest_subprocess(*args)
    out = result.stdout.str()
    # ids: case-dtype-implementation-device
    assert "test_one[tiny-fit-float32-numpy-hand-cpu] PASSED" in out
    assert "test_one[tiny-fit-float64-torch-seed-cpu] PASSED" in out
    if not torch.cuda.is_available():
        assert "test_one[tiny-fit-float32-torch-seed-cuda] SKIPPED" in out
        assert "device cuda is not available on this machine" in out
    if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        assert "device mps is not available on this machine" in out
    # -m "not cuda and not mps" deselects every item on those devices, and only them
    result = pytester.runpytest_subprocess(*args, "-m", "not cuda and not mps")
    result.assert_outcomes(passed=4)
    assert "8 deselected" in result.stdout.str()


def _records(path):
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["kind"] == "environment" and lines[-1]["kind"] == "run-end" and lines[-1]["completed"]
    return lines[1:-1]


def test_serial_and_xdist_runs_write_the_same_records(tmp_path):
    pytest.importorskip("xdist")
    # -p no:hypothesispytest -p no:benchmark, as tests/conftest.py gives the pytester sessions: these sessions use
    # neither, and the plugins cost about 0.9 and 0.13 s of CPU in each of the four processes (the serial session,
    # xdist's controller and workers)
    selection = ["tests/test_sweep.py", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark", "-q",
                 "--harness-case", "gen-grid-*-n5-d2-k7-*", "--harness-case", "seed"]
    files = {}
    for label, extra in (("serial", []), ("xdist", ["-n", "2"])):
        files[label] = tmp_path / f"{label}.jsonl"
        proc = subprocess.run([sys.executable, "-m", "pytest", *selection, *extra, "--harness-results", str(files[label])],
                              cwd=ROOT, capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "autograd-harness" in proc.stdout
    serial, xdist = _records(files["serial"]), _records(files["xdist"])
    assert len(serial) > 100
    assert {r["case"] for r in serial} >= {"seed", "gen-grid-normal-n5-d2-k7-sum-s1", "gen-grid-zeros-n5-d2-k7-mean-s1"}
    # the same records, in the same (sorted) order, merged into one file
    assert [json.dumps(r, sort_keys=True) for r in serial] == [json.dumps(r, sort_keys=True) for r in xdist]
    assert not list(tmp_path.glob("*.part*"))


def test_a_bad_case_file_fails_one_item_and_the_good_cases_still_run(pytester, monkeypatch):
    _env(monkeypatch)
    pytester.makefile(".toml", good='[[case]]\nid = "ok"\nX = [[1.0]]\ny = [[2.0]]\nW = [[0.5]]\nb = [0.0]\nlr = 0.1\n',
                      bad='[[case]]\nid = "bad"\nX = [[1.0]]\ny = [[2.0]]\nW = [[0.5]]\nb = [0.0]\nlr = 0.1\ncolour = 1\n')
    pytester.makepyfile(test_cases='''
def test_case(harness_case, harness_dtype, harness_implementation, harness_device, harness_check):
    harness_check(harness_case, harness_implementation, harness_device, harness_dtype)
''')
    result = pytester.runpytest_subprocess("-p", "harness.pytest_plugin", "-p", "no:cacheprovider", "--harness-cases", "good.toml",
                                           "--harness-cases", "bad.toml", "--harness-implementations", "numpy-hand")
    result.assert_outcomes(passed=2, errors=1)
    assert "case 'bad', key 'colour'" in result.stdout.str()


def test_harness_shard_splits_the_cases_disjointly(pytester, monkeypatch):
    _env(monkeypatch)
    from harness.shard import shard_index

    ids = [f"c{i}" for i in range(6)]
    pytester.makefile(".toml", cases="".join(CASE_FILE.replace('"tiny-fit"', f'"{i}"').replace('["float32", "float64"]', '["float64"]')
                                             for i in ids))
    pytester.makepyfile(test_sweep='''
def test_one(harness_case, harness_dtype, harness_implementation, harness_device, harness_check):
    assert all(r.verdict == "agree" for r in harness_check(harness_case, harness_implementation, harness_device, harness_dtype))
''')
    seen: list[str] = []
    for k in (1, 2):
        result = pytester.runpytest_subprocess("-p", "harness.pytest_plugin", "-p", "no:cacheprovider", "--harness-cases", "cases.toml",
                                               "--harness-implementations", "numpy-hand", "--harness-devices", "cpu", "-v",
                                               "--harness-shard", f"{k}/2", "--harness-results", f"r{k}.jsonl")
        want = [i for i in ids if shard_index(i, 2) == k]
        result.assert_outcomes(passed=len(want))
        got = [i for i in ids if f"test_one[{i}-float64-numpy-hand-cpu] PASSED" in result.stdout.str()]
        assert got == want
        seen += got
    assert sorted(seen) == ids
    # the results name their shard, as check's do: report warns of a shard not given (and not of one given)
    from harness.records import read_jsonl
    from harness.report.model import build_model

    assert [e.get("shard") for e in read_jsonl(pytester.path / "r1.jsonl").environments] == ["1/2"]
    assert any("shard 2/2 of a run split with --shard K/2 is not among the files read" in w
               for w in build_model([pytester.path / "r1.jsonl"]).warnings)
    assert not any("not among the files read" in w
                   for w in build_model([pytester.path / "r1.jsonl", pytester.path / "r2.jsonl"]).warnings)
    result = pytester.runpytest_subprocess("-p", "harness.pytest_plugin", "--harness-cases", "cases.toml", "--harness-shard", "3/2")
    assert result.ret != 0 and "--harness-shard '3/2'" in result.stderr.str()


FLOAT16_ONLY = '''
import torch
import harness


@harness.implementation("float16-only-step", framework="torch", dtypes=("float16",))
def float16_only(X, y, W, b, *, lr, reduction, steps):
    raise AssertionError("never called: this step supports float16 only")
'''

SWEEP_TEST = '''
from harness.api import raise_on_failure


def test_each(harness_case, harness_dtype, harness_implementation, harness_device, harness_check):
    raise_on_failure(harness_check(harness_case, harness_implementation, harness_device, harness_dtype), harness_implementation.name)
'''


def test_a_named_implementation_that_grades_nothing_fails_the_session(pytester, monkeypatch):
    """helper-60: ``--harness-implementations torch-seed,tf-step`` without TensorFlow: 6 passed, 6 skipped, exit 0. Each
    implementation named must grade something (as ``check``'s exit code, :func:`harness.verdicts.ungraded_named`); one
    unsupported in every selected dtype fails the session and says why. Named alone, it passes where it grades."""
    _env(monkeypatch)
    pytester.makefile(".toml", cases=CASE_FILE)
    pytester.makepyfile(f16plug=FLOAT16_ONLY, test_sweep=SWEEP_TEST)
    args = ("-p", "harness.pytest_plugin", "-p", "no:cacheprovider", "--harness-cases", "cases.toml", "--harness-devices", "cpu",
            "--harness-plugin", "f16plug.py", "--harness-dtypes", "float64")
    both = pytester.runpytest_subprocess(*args, "--harness-implementations", "torch-seed,float16-only-step")
    assert both.ret == pytest.ExitCode.TESTS_FAILED
    assert "harness: float16-only-step, named in the implementations, graded nothing" in both.stdout.str()
    assert "float16-only-step does not support float64" in both.stdout.str()
    alone = pytester.runpytest_subprocess(*args, "--harness-implementations", "torch-seed")
    assert alone.ret == pytest.ExitCode.OK
    # deselected by -k, its items never ran: not ungraded (helper-61)
    picked = pytester.runpytest_subprocess(*args, "--harness-implementations", "torch-seed,float16-only-step", "-k", "torch-seed")
    assert picked.ret == pytest.ExitCode.OK, picked.stdout.str()


MARKED_SWEEP_TEST = '''
import pytest
from harness.api import raise_on_failure


@pytest.mark.harness(implementations=["torch-seed", "float16-only-step"])
def test_each(harness_case, harness_dtype, harness_implementation, harness_device, harness_check):
    raise_on_failure(harness_check(harness_case, harness_implementation, harness_device, harness_dtype), harness_implementation.name)
'''


def test_an_implementation_named_in_a_marker_that_grades_nothing_fails_the_session(pytester, monkeypatch):
    """Left in issue 12's seventeenth round, done in the eighteenth: an implementation named in a test's ``harness``
    marker and unsupported in every selected dtype passed unseen beside torch-seed (exit 0), where the same name given
    with ``--harness-implementations`` fails the session. Now the marker's names are held to the same rule, serially
    and under xdist (each worker reports the names its markers gave to the controller)."""
    _env(monkeypatch)
    pytester.makefile(".toml", cases=CASE_FILE)
    pytester.makepyfile(f16plug=FLOAT16_ONLY, test_sweep=MARKED_SWEEP_TEST)
    args = ("-p", "harness.pytest_plugin", "-p", "no:cacheprovider", "--harness-cases", "cases.toml", "--harness-devices", "cpu",
            "--harness-plugin", "f16plug.py", "--harness-dtypes", "float64")
    for extra in ([], ["-n", "2"]):
        res = pytester.runpytest_subprocess(*args, *extra)
        assert res.ret == pytest.ExitCode.TESTS_FAILED, (extra, res.stdout.str()[-3000:])
        assert "harness: float16-only-step, named in the implementations, graded nothing" in res.stdout.str(), extra
    # deselected by -k, its items never ran: not ungraded
    res = pytester.runpytest_subprocess(*args, "-k", "torch-seed")
    assert res.ret == pytest.ExitCode.OK, res.stdout.str()[-3000:]


def test_bad_output_paths_stop_the_session_before_any_test(pytester, monkeypatch):
    """As ``check``: a ``--harness-results`` where no file can be made, or a ``--harness-report`` that is the results'
    ``NAME.prev.EXT`` (each keeps its earlier file there), is a usage error before any test runs; they failed at the
    session's end, after every test (helper-66, helper-67)."""
    _env(monkeypatch)
    pytester.makefile(".toml", cases=CASE_FILE)
    pytester.makepyfile(test_sweep=SWEEP_TEST)
    base = ("-p", "harness.pytest_plugin", "-p", "no:cacheprovider", "--harness-cases", "cases.toml", "--harness-devices", "cpu",
            "--harness-dtypes", "float64", "--harness-implementations", "numpy-hand")
    for extra, why in ((("--harness-results", "x" * 300 + ".jsonl"), "File name too long"),
                       (("--harness-results", "r.jsonl", "--harness-report", "r.prev.jsonl"), "other's place")):
        res = pytester.runpytest_subprocess(*base, *extra)
        assert res.ret == pytest.ExitCode.USAGE_ERROR, res.stdout.str()[-2000:]
        assert why in res.stderr.str() and "passed" not in res.stdout.str()
    ok = pytester.runpytest_subprocess(*base, "--harness-results", "out/r.jsonl")
    assert ok.ret == pytest.ExitCode.OK and (pytester.path / "out" / "r.jsonl").is_file()


BASE = ("-p", "harness.pytest_plugin", "-p", "no:cacheprovider", "--harness-cases", "cases.toml")


def test_sessions_that_graded_wrongly_or_nothing_do_not_pass_silently(pytester, monkeypatch):
    """helper-78's green sessions: ``harness_verify`` graded the good cases of a selection with a bad case file and
    passed; ``--harness-devices cuda`` on a machine without one skipped every item and passed (``check --devices
    cuda`` exits 2); and a test that calls ``harness_check`` without asserting passed under a summary that said
    "FAILS the run"."""
    _env(monkeypatch)
    pytester.makefile(".toml", cases=CASE_FILE, bad=CASE_FILE.replace('id = "tiny-fit"', 'id = "typo"') + "setps = 3\n")
    pytester.makepyfile(test_skipif='''
import sys

import pytest


@pytest.mark.skipif(sys.platform == "linux", reason="not on linux")
def test_elsewhere(harness_case, harness_dtype, harness_implementation, harness_device, harness_check):
    harness_check(harness_case, harness_implementation, harness_device, harness_dtype)
''')
    pytester.makepyfile(test_user=USER_TESTS, test_sweep=SWEEP_TEST, test_nocheck='''
def test_each(harness_case, harness_dtype, harness_implementation, harness_device, harness_check):
    harness_check(harness_case, harness_implementation, harness_device, harness_dtype)   # (no assertion)
''', test_plugin='''
import harness
from test_user import forgets_the_two
harness.implementation("forgets-the-two", framework="torch", default=False)(forgets_the_two)
''')
    res = pytester.runpytest_subprocess(*BASE, "--harness-cases", "bad.toml", "--harness-devices", "cpu",
                                        "test_user.py::test_good_step")
    assert res.ret == pytest.ExitCode.TESTS_FAILED and "bad case file(s)" in res.stdout.str() and "'setps'" in res.stdout.str()
    if not torch.cuda.is_available():
        # (also beside a harness test that its own skipif skips: it counts for nothing either way, helper-80)
        res = pytester.runpytest_subprocess(*BASE, "--harness-devices", "cuda", "--harness-implementations", "numpy-hand",
                                            "test_sweep.py", "test_skipif.py")
        assert res.ret == pytest.ExitCode.TESTS_FAILED, res.stdout.str()[-2000:]
        assert "harness: nothing was graded: no device asked for with --harness-devices cuda is available" in res.stdout.str()
    res = pytester.runpytest_subprocess(*BASE, "--harness-plugin", "test_plugin.py", "--harness-devices", "cpu",
                                        "--harness-implementations", "forgets-the-two", "--harness-dtypes", "float64",
                                        "test_nocheck.py")
    out = res.stdout.str()
    assert res.ret == pytest.ExitCode.OK and "FAILS the run" in out  # the test's own choice, as written
    assert "harness: the failing records above did not fail this session: the tests that graded them passed" in out
    assert "one that catches the failure harness_verify raises passes" in out  # (the other way to pass, helper-124)


def test_skipped_tests_built_in_models_and_plain_steps_under_isolation(pytester, monkeypatch):
    """helper-78's false alarms: a harness test skipped by its own marker made the session "nothing was graded";
    ``--harness-isolation process`` failed the built-in model implementations on a linear case (parametrized by the
    optimizer rule only, not by the one rule of :func:`harness.runner.case_mismatch`); a plain function given to
    ``harness_verify`` under process isolation failed with "not registered in the worker process"."""
    _env(monkeypatch)
    pytester.makefile(".toml", cases=CASE_FILE)
    pytester.makepyfile(test_skipped='''
import pytest

@pytest.mark.skip(reason="later")
def test_each(harness_case, harness_dtype, harness_implementation, harness_device, harness_check):
    harness_check(harness_case, harness_implementation, harness_device, harness_dtype)


def test_other():
    pass
''', test_sweep=SWEEP_TEST, test_user=USER_TESTS)
    res = pytester.runpytest_subprocess(*BASE, "test_skipped.py")
    assert res.ret == pytest.ExitCode.OK and "nothing was graded" not in res.stdout.str(), res.stdout.str()[-2000:]
    res = pytester.runpytest_subprocess(*BASE, "--harness-dtypes", "float64", "--harness-devices", "cpu",
                                        "--harness-isolation", "process", "test_sweep.py", "-v")
    out = res.stdout.str()
    assert res.ret == pytest.ExitCode.OK, out[-3000:]
    assert "numpy-model" not in out and "torch-model" not in out and "numpy-hand-cpu] PASSED" in out
    res = pytester.runpytest_subprocess(*BASE, "--harness-devices", "cpu", "--harness-isolation", "process",
                                        "test_user.py::test_good_step")
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    assert "good_step is a plain function, and --harness-isolation process grades in a worker process" in res.stdout.str()


def test_timeout_values_and_outputs_that_check_refuses(pytester, monkeypatch):
    """helper-78: ``--harness-timeout`` took -1, 0, nan and inf (``check --timeout`` refuses them, one parse:
    :func:`harness.timeouts.parse_timeout`); ``--harness-results cases.toml`` replaced the case file; a session that
    made no record left an earlier session's results file in place, marked completed."""
    _env(monkeypatch)
    pytester.makefile(".toml", cases=CASE_FILE)
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    for value in ("-1", "0", "nan", "inf", "soon"):
        res = pytester.runpytest_subprocess(*BASE, "--harness-timeout", value, "test_plain.py")
        assert res.ret == pytest.ExitCode.USAGE_ERROR
        assert f"--harness-timeout: expected a number of seconds > 0, got '{value}'" in res.stderr.str()
    before = (pytester.path / "cases.toml").read_text()
    res = pytester.runpytest_subprocess(*BASE, "--harness-results", "cases.toml", "test_plain.py")
    assert res.ret == pytest.ExitCode.USAGE_ERROR and "is one of the run's input files" in res.stderr.str()
    assert (pytester.path / "cases.toml").read_text() == before
    # a results file kept in the case folder: refused never (only case and data files are inputs, as for check)
    (pytester.path / "mc").mkdir()
    (pytester.path / "mc" / "cases.toml").write_text(before)
    for _ in range(2):
        res = pytester.runpytest_subprocess(*BASE[:-1], "mc", "--harness-results", "mc/r.jsonl", "test_plain.py")
        assert res.ret == pytest.ExitCode.OK, res.stderr.str()[-1000:]
    old = pytester.path / "res.jsonl"
    old.write_text('{"kind": "environment", "run": "old"}\n{"kind": "run-end", "run": "old", "completed": true, "records": 0}\n')
    res = pytester.runpytest_subprocess(*BASE, "--harness-results", "res.jsonl", "test_plain.py")
    assert res.ret == pytest.ExitCode.OK and "harness: this session graded nothing: res.jsonl holds no record" in res.stdout.str()
    lines = [json.loads(line) for line in old.read_text().splitlines()]
    assert [x["kind"] for x in lines] == ["environment", "run-end"] and lines[0]["run"] != "old" and lines[1]["records"] == 0
    assert '"old"' in (pytester.path / "res.prev.jsonl").read_text()


WRONG_NUMPY_PLUGIN = '''
import numpy as np
import harness
''' + HAND_STEP_SOURCE + '''

@harness.implementation("numpy-double", framework="numpy")
def step(X, y, W, b, *, lr, reduction, steps):  # wrong: grad_W a factor 2 too large (the update from the right one)
    return [r._replace(grad_W=2 * r.grad_W) for r in _hand(X, y, W, b, lr, reduction, steps)]
'''


def test_a_loop_of_checks_grades_every_combination_it_asks_for(pytester, monkeypatch):
    """helper-95: a test looping over dtypes with ``harness_check`` was skipped at its first unsupported pair
    (bfloat16 for a NumPy step), so the wrong float32 and float64 steps after it were never graded; the session passed,
    and the summary said that failing records did not fail it. Only an item parametrized with exactly that combination
    is skipped; a loop gets the records back."""
    _env(monkeypatch)
    pytester.makefile(".toml", cases=CASE_FILE)
    pytester.makepyfile(regnp=WRONG_NUMPY_PLUGIN, test_loop='''
from harness.api import raise_on_failure


def test_all_dtypes(harness_cases, harness_check):
    records = []
    for case in harness_cases:
        for dtype in ("bfloat16", "float32", "float64"):
            records += harness_check(case, "numpy-double", "cpu", dtype)
    assert {r.dtype for r in records if r.verdict == "unsupported"} == {"bfloat16"}
    raise_on_failure(records, "numpy-double")
''')
    res = pytester.runpytest_subprocess(*BASE, "--harness-plugin", "regnp.py", "test_loop.py")
    out = res.stdout.str()
    assert res.ret == pytest.ExitCode.TESTS_FAILED, out[-3000:]
    assert "1 failed" in out and "checks of 'numpy-double' failed" in out and "tiny-fit (float32)" in out, out[-3000:]
    assert "did not fail this session" not in out


def test_a_verify_test_without_its_requested_device_fails_the_session(pytester, monkeypatch):
    """helper-95: ``harness_verify`` with ``--harness-devices cuda`` on a machine without CUDA skipped its test and the
    session passed (the parametrized items already failed so: nothing graded is no pass)."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the device is present")
    _env(monkeypatch)
    pytester.makefile(".toml", cases=CASE_FILE)
    pytester.makepyfile(test_user=USER_TESTS)
    res = pytester.runpytest_subprocess(*BASE, "--harness-devices", "cuda", "test_user.py::test_wrong_step")
    out = res.stdout.str()
    assert res.ret == pytest.ExitCode.TESTS_FAILED, out[-3000:]
    assert "harness: nothing was graded: no device asked for with --harness-devices cuda is available" in out


def test_the_plugin_claims_only_harness_options_and_a_timeout_needs_process_isolation(pytester, monkeypatch):
    """helper-95: the plug-in option had the alias ``--plugin``, so any other suite defining ``--plugin`` failed with
    argparse's conflict once the harness was installed; ``--harness-timeout`` without process isolation was taken and
    ignored (a hanging step hung the session), as ``check --isolation inline --timeout`` was."""
    _env(monkeypatch)
    pytester.makeconftest('def pytest_addoption(parser):\n    parser.addoption("--plugin", default=None)\n')
    pytester.makepyfile(test_plain="def test_plain(pytestconfig):\n    assert pytestconfig.getoption('--plugin') == 'x'\n")
    res = pytester.runpytest_subprocess("-p", "harness.pytest_plugin", "-p", "no:cacheprovider", "--plugin", "x")
    assert res.ret == pytest.ExitCode.OK, res.stdout.str()[-2000:] + res.stderr.str()[-2000:]
    res = pytester.runpytest_subprocess("-p", "harness.pytest_plugin", "--harness-timeout", "3", "test_plain.py")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert "--harness-timeout 3: a timeout needs --harness-isolation process" in res.stderr.str()
    res = pytester.runpytest_subprocess("-p", "harness.pytest_plugin", "--harness-timeout", "3", "--harness-isolation",
                                        "process", "--plugin", "x", "test_plain.py")
    assert res.ret == pytest.ExitCode.OK, res.stdout.str()[-2000:] + res.stderr.str()[-2000:]
    cli = subprocess.run([sys.executable, "-m", "harness", "check", "--case", "seed", "--isolation", "inline", "--timeout", "2",
                          "--results", str(pytester.path / "r.jsonl")], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 2 and "--timeout 2: a timeout needs --isolation process" in cli.stderr
    assert not (pytester.path / "r.jsonl").exists()


def test_verify_in_a_worker_process_imports_the_harness_plugin_modules(pytester, monkeypatch):
    """helper-95: under ``--harness-isolation process``, ``harness_verify("name")`` of a step that a
    ``--harness-plugin`` module registers from another file was an error in every record ("not registered in the
    worker process"): the worker got the defining file only, not the plug-in modules (``harness_check`` got both)."""
    _env(monkeypatch)
    pytester.makefile(".toml", cases=CASE_FILE)
    pytester.makepyfile(user_steps=USER_TESTS.split("def test_good_step")[0],
                        register='import harness\nimport user_steps\n\nharness.implementation("u-good", framework="torch")'
                                 '(user_steps.good_step)\n',
                        test_named='def test_by_name(harness_verify):\n    assert harness_verify("u-good", dtypes="float64")\n')
    res = pytester.runpytest_subprocess(*BASE, "--harness-plugin", "register.py", "--harness-isolation", "process",
                                        "--harness-devices", "cpu", "test_named.py")
    out = res.stdout.str()
    assert res.ret == pytest.ExitCode.OK, out[-3000:]
    assert "1 passed" in out


def test_partly_parametrized_items_and_loops_that_grade_nothing_are_skips(pytester, monkeypatch):
    """helper-96: an item parametrized by case, dtype and implementation with the device fixed in code failed with
    "nothing was graded" on its unsupported pairs (it is one combination: skipped, as before); a loop whose every
    combination is unsupported passed (it graded nothing: skipped, and a session of only such items fails); a test
    asking for CUDA in code on a machine without it was blamed on --harness-devices."""
    _env(monkeypatch)
    pytester.makefile(".toml", cases=CASE_FILE)
    pytester.makepyfile(test_partial='''
import dataclasses

import pytest
from harness.api import raise_on_failure


@pytest.mark.harness(implementations=["numpy-hand"], dtypes=["float64", "bfloat16"])
def test_cpu_only(harness_case, harness_dtype, harness_implementation, harness_check):
    case = dataclasses.replace(harness_case, description="a copy")
    raise_on_failure(harness_check(case, harness_implementation, "cpu", harness_dtype), "numpy-hand")


def test_loop_of_unsupported(harness_cases, harness_check):
    for case in harness_cases:
        harness_check(case, "numpy-hand", "cpu", "bfloat16")


def test_cuda_in_code(harness_verify):
    harness_verify("numpy-hand", devices="cuda")


@pytest.mark.harness(dtypes=["bfloat16", "float64"])
def test_loop_over_implementations(harness_case, harness_dtype, harness_check):
    records = []
    for name in ("numpy-hand", "numpy-double"):
        records += harness_check(harness_case, name, "cpu", harness_dtype)
    raise_on_failure(records, "both")
''')
    pytester.makepyfile(regnp=WRONG_NUMPY_PLUGIN)
    res = pytester.runpytest_subprocess(*BASE, "test_partial.py::test_cpu_only", "-rs")
    out = res.stdout.str()
    assert res.ret == pytest.ExitCode.OK, out[-3000:]
    assert "1 passed, 1 skipped" in out and "unsupported: " in out
    res = pytester.runpytest_subprocess(*BASE, "test_partial.py::test_loop_of_unsupported", "-rs")
    out = res.stdout.str()
    assert res.ret == pytest.ExitCode.TESTS_FAILED and "1 skipped" in out and "harness: nothing was graded" in out, out[-3000:]
    res = pytester.runpytest_subprocess(*BASE, "test_partial.py::test_loop_of_unsupported", "test_partial.py::test_cpu_only")
    assert res.ret == pytest.ExitCode.OK and "1 passed, 2 skipped" in res.stdout.str(), res.stdout.str()[-3000:]
    if not torch.cuda.is_available():
        res = pytester.runpytest_subprocess(*BASE, "--harness-devices", "cpu", "test_partial.py::test_cuda_in_code", "-rs")
        out = res.stdout.str()
        assert res.ret == pytest.ExitCode.OK and "the devices this test asks for (cuda) are not available here" in out
        assert "--harness-devices cpu is available" not in out, out[-3000:]
        # asked for with --harness-devices too (a GPU job whose runner lost its GPU): nothing graded is no pass (helper-97)
        res = pytester.runpytest_subprocess(*BASE, "--harness-devices", "cuda", "test_partial.py::test_cuda_in_code")
        assert res.ret == pytest.ExitCode.TESTS_FAILED and "harness: nothing was graded" in res.stdout.str()
    # helper-97: an item parametrized by case and dtype looping over implementations skipped at its first unsupported
    # pair, and the wrong step after it was never graded
    res = pytester.runpytest_subprocess(*BASE, "--harness-plugin", "regnp.py", "test_partial.py::test_loop_over_implementations",
                                        "-rs")
    out = res.stdout.str()
    assert res.ret == pytest.ExitCode.TESTS_FAILED and "1 failed, 1 skipped" in out and "numpy-double" in out, out[-3000:]


def test_a_killed_xdist_worker_keeps_its_records_and_the_file_says_incomplete(pytester, monkeypatch, tmp_path):
    """A pytest-xdist worker killed halfway (SIGKILL, as the OOM killer does) lost every record it had made (they were
    written at the end of its session), and the merged file's footer said ``completed: true``: with a correct step,
    ``report --exit-status`` passed a file that lacked the killed worker's records (found by attack in the thirty-second
    round). Each worker now appends its records item by item, the controller merges every part, and a session with a
    worker that went down writes ``completed: false``."""
    pytest.importorskip("xdist")
    _env(monkeypatch)
    ids = [f"c{i}" for i in range(8)]
    pytester.makefile(".toml", cases="".join(CASE_FILE.replace('"tiny-fit"', f'"{i}"').replace('["float32", "float64"]', '["float64"]')
                                             .replace("steps = 2", "steps = 1") for i in ids))
    marker = tmp_path / "killed"
    pytester.makepyfile(plug=HAND_STEP_SOURCE.replace("def _hand(", "def _unused(") + f'''
import os, signal
import numpy as np
import harness
CALLS = []

@harness.implementation("dies-once", framework="numpy")
def dies_once(X, y, W, b, *, lr, reduction, steps):
    CALLS.append(1)
    if len(CALLS) == 3 and not os.path.exists({str(marker)!r}):  # the third check in one worker: that worker dies
        open({str(marker)!r}, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return _unused(X, y, W, b, lr, reduction, steps)
''', test_sweep='''
def test_one(harness_case, harness_dtype, harness_implementation, harness_device, harness_check):
    assert all(r.verdict == "agree" for r in harness_check(harness_case, harness_implementation, harness_device, harness_dtype))
''')
    results = pytester.path / "results.jsonl"
    result = pytester.runpytest_subprocess("-p", "harness.pytest_plugin", "-p", "no:cacheprovider", "-n", "2",
                                           "--harness-cases", "cases.toml", "--harness-plugin", "plug.py",
                                           "--harness-implementations", "dies-once", "--harness-devices", "cpu",
                                           "--harness-results", str(results))
    assert marker.exists()
    out = result.stdout.str()
    assert result.ret != 0 and "went down before finishing" in out, out[-3000:]
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    recs, footer = lines[1:-1], lines[-1]
    assert footer["kind"] == "run-end" and footer["completed"] is False and footer["interrupted"] is False
    # every item but the killed one graded its five quantities, the killed worker's two finished items included
    assert len(recs) == footer["records"] == 5 * (len(ids) - 1)
    assert {r["verdict"] for r in recs} == {"agree"}
    assert len({r["case"] for r in recs}) == len(ids) - 1
    # every record agrees, yet the file is not a pass: its run did not complete
    rep = subprocess.run([sys.executable, "-m", "harness", "report", "--exit-status", str(results), "--output",
                          str(tmp_path / "r.html")], capture_output=True, text=True, timeout=300, cwd=pytester.path)
    assert rep.returncode != 0 and "did not complete" in rep.stdout + rep.stderr, rep.stdout[-2000:] + rep.stderr[-2000:]



def test_a_session_stopped_by_x_writes_an_incomplete_results_file(pytester, monkeypatch, tmp_path):
    """``pytest -x`` stopped at a test's failure for a reason of its own before the later harness items ran, and the
    results file's footer said ``completed: true``: ``report --exit-status`` passed the agreeing records it held as the
    whole run (found by attack in the thirty-second round). A session stopped early (-x, --maxfail) now writes
    ``completed: false``."""
    _env(monkeypatch)
    pytester.makefile(".toml", cases="".join(CASE_FILE.replace('"tiny-fit"', f'"c{i}"').replace('["float32", "float64"]', '["float64"]')
                                             .replace("steps = 2", "steps = 1") for i in range(3)))
    pytester.makepyfile(test_sweep='''
def test_one(harness_case, harness_dtype, harness_implementation, harness_device, harness_check):
    assert all(r.verdict == "agree" for r in harness_check(harness_case, harness_implementation, harness_device, harness_dtype))
    assert harness_case.id != "c1", "a failure of the test's own"
''')
    results = pytester.path / "results.jsonl"
    args = ["-p", "harness.pytest_plugin", "-p", "no:cacheprovider", "--harness-cases", "cases.toml",
            "--harness-implementations", "numpy-hand", "--harness-devices", "cpu", "--harness-results", str(results)]
    for extra, ran, completed in (([], 3, True), (["-x"], 2, False), (["--maxfail", "1"], 2, False)):
        result = pytester.runpytest_subprocess(*args, *extra)
        out = result.stdout.str()
        lines = [json.loads(line) for line in results.read_text().splitlines()]
        assert result.ret != 0 and {r["verdict"] for r in lines[1:-1]} == {"agree"}
        assert len({r["case"] for r in lines[1:-1]}) == ran, out[-3000:]
        assert lines[-1]["completed"] is completed and lines[-1]["interrupted"] is False
        assert ("stopped early" in out) is not completed
    # the -x file holds only agreeing records, yet it is no pass: its run did not complete (case c2 never ran)
    rep = subprocess.run([sys.executable, "-m", "harness", "report", "--exit-status", str(results), "--output",
                          str(tmp_path / "r.html")], capture_output=True, text=True, timeout=300, cwd=pytester.path)
    assert rep.returncode != 0 and "did not complete" in rep.stdout + rep.stderr, rep.stdout[-2000:] + rep.stderr[-2000:]
