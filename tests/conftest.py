"""Shared test helpers."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

# The packages with extension modules that the tests load, imported before any test: pytester drops, at a test's
# teardown, every module the test imported first, and a package imported again in the same process (its extension
# modules kept) corrupts memory. torch imported inside a pytester test made the next test that used it fail with
# "SystemError: ... bad call flags", and a serial run of tests/test_pytest_plugin.py and tests/test_report.py crash in
# the garbage collector (tests/test_pytest_plugin.py::test_extension_packages_are_loaded_before_any_pytester_test).
import flint  # noqa: F401
import numba  # noqa: F401
import numpy  # noqa: F401
import pytest
import torch  # noqa: F401

# The plugin is normally loaded through its pytest11 entry point; naming it here
# makes the suite work from a checkout that is not (re)installed. The entry point
# has the module's name, so pytest does not register it twice.
pytest_plugins = ["harness.pytest_plugin", "pytester"]

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "cases"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def inner_sessions_without_hypothesis(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pytest sessions a ``pytester`` test starts run without Hypothesis's pytest plugin (``-p
    no:hypothesispytest`` added to ``PYTEST_ADDOPTS``): no inner session uses Hypothesis, and the plugin imports
    all of it in every session's terminal summary, about 0.9 s of CPU each where bytecode is not cached
    (``PYTHONDONTWRITEBYTECODE``: pytest rewrites its modules' asserts again in every process); nor with
    pytest-benchmark's (``-p no:benchmark``: no inner session times anything; about 0.13 s of CPU each). The harness
    plugin's behaviour under test depends on neither."""
    if "pytester" in request.fixturenames:
        import os

        request.getfixturevalue("pytester")  # first: it clears PYTEST_ADDOPTS when it starts
        monkeypatch.setenv("PYTEST_ADDOPTS", " ".join(filter(None, (os.environ.get("PYTEST_ADDOPTS"), "-p no:hypothesispytest -p no:benchmark"))))


#: The suite's longest tests, longest first (``pytest --durations``, two xdist workers on the 2-core machine of the
#: thirty-eighth round, shared with other work, fresh clones, the longer of two runs: 254, 119, 53, 39, 36, 34, 34, 33,
#: 31, 28, 27, 26, 25, 22, 20, 19, 19, 18, 17, 16, 16, 15, 15, 15, 15, 13, 13 s: every test above 11 s in both).
#: :func:`long_tests_first` starts each of them early: a test of 15-25 s left to the end of a worker's queue kept the
#: other worker idle while it ran (twelve were listed before; the 13th-27th ran wherever they were collected). Not
#: listed: tests/test_peer_gallery.py's jax-sgd (19-23 s), which imports JAX into the worker's process: started first,
#: every later test of that worker that starts a process did so in a multithreaded JAX process (12 RuntimeWarnings
#: "os.fork() was called ... JAX is multithreaded"; a test that forks without exec could deadlock). Round 44 split
#: test_docs.py's one test of every documented command into an item per command (its longest two are listed; the
#: items that share `check`'s default outputs take turns on a lock, and only the first of them is listed, so that no
#: worker starts by waiting on it) and test_generator_steps.py's JAX test into its three `check` runs.
LONG_TESTS = (
    "tests/test_docs.py::test_documented_command_or_python_block_runs_as_written[README.md -m harness check]",
    "tests/test_error_model.py::test_selftest_catches_every_mutant_without_false_alarms",
    "tests/test_generator_steps.py::test_jax_configuration_left_changed_is_restored_and_named[jax-leaver,jax-good]",
    "tests/test_generator_steps.py::test_jax_configuration_left_changed_is_restored_and_named[jax-rank-leaver,jax-good]",
    "tests/test_generator_steps.py::test_jax_configuration_left_changed_is_restored_and_named[jax-context-left,jax-good]",
    "tests/test_pytest_plugin.py::test_partly_parametrized_items_and_loops_that_grade_nothing_are_skips",
    "tests/test_pytest_plugin.py::test_skipped_tests_built_in_models_and_plain_steps_under_isolation",
    "tests/test_isolation.py::test_bad_plugins_are_error_records_and_the_run_goes_on",
    "tests/test_fuzz_cases.py::test_fuzzed_case_files_never_crash_hang_leak_or_lose_good_cases",
    "tests/test_plugins.py::test_readme_commands_run_as_written",
    "tests/test_process_state.py::test_a_worker_that_dies_between_tasks_does_not_stop_the_run",
    "tests/test_pytest_plugin.py::test_a_session_stopped_by_x_writes_an_incomplete_results_file",
    "tests/test_pytest_plugin.py::test_serial_and_xdist_runs_write_the_same_records",
    "tests/test_attack_h147.py::test_row_chunks_against_whole_columns",
    "tests/test_docs.py::test_documented_command_or_python_block_runs_as_written[README.md -m harness report "
    "reports/nist-1.jsonl reports/nist-2.jsonl -o reports/nist.html]",
    "tests/test_bounds_terms.py::test_cli_flush_to_zero_option",
    "tests/test_shared_rounding.py::test_equal_pairs_match_a_counter",
    "tests/test_isolation.py::test_a_batch_that_dies_or_hangs_is_run_again_task_by_task",
    "tests/test_pytest_plugin.py::test_an_implementation_named_in_a_marker_that_grades_nothing_fails_the_session",
    "tests/test_attack_h126.py::test_a_results_file_that_cannot_be_written_is_a_clear_error_and_never_a_complete_run",
    "tests/test_pytest_plugin.py::test_a_killed_xdist_worker_keeps_its_records_and_the_file_says_incomplete",
    "tests/test_hardrun.py::test_repeat_2_grades_a_step_with_state_in_every_mode[mode1]",
    "tests/test_stream.py::test_sigint_keeps_finished_records_writes_interrupted_footer_and_exits_130",
    "tests/test_isolation.py::test_the_fork_server_preloads_torch_dynamo_only_for_a_run_that_may_make_a_torch_optimizer",
    "tests/test_report_browser.py::test_report_of_100000_records_opens_and_filters",
    "tests/test_pytest_plugin.py::test_sessions_that_graded_wrongly_or_nothing_do_not_pass_silently",
    "tests/test_isolation.py::test_workers_inherit_the_environment_the_plugins_set",
    "tests/test_hardrun.py::test_pytest_session_that_graded_nothing_fails",
    "tests/test_cli.py::test_a_plugins_own_error_model_is_named_in_the_last_lines",
    "tests/test_pytest_plugin.py::test_a_named_implementation_that_grades_nothing_fails_the_session",
)


def long_tests_first(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """``items`` with :data:`LONG_TESTS` moved to the heads of the ``workers`` runs that pytest-xdist's
    ``--dist worksteal`` first hands out, longest first, round robin (the others keep their order).

    worksteal splits the collection into ``workers`` contiguous runs (``len // workers`` items each, the last one the
    rest) and later lets an idle worker take the tail of another's queue, never its head: a long test collected late
    (test_optim_* comes near the end) started when the others were done and one worker ran alone for minutes (a 13 min
    18 s CI run whose tests took 9 min in the runs before). At their heads every long test starts in the first minutes.
    """
    rank = {nodeid: i for i, nodeid in enumerate(LONG_TESTS)}
    long = sorted((it for it in items if it.nodeid in rank), key=lambda it: rank[it.nodeid])
    if not long or workers < 1:
        return items
    rest = [it for it in items if it.nodeid not in rank]
    heads: list[list[pytest.Item]] = [[] for _ in range(workers)]
    for i, it in enumerate(long):
        heads[i % workers].append(it)
    out: list[pytest.Item] = []
    left, start = len(items), 0
    for w in range(workers):  # worksteal's split: run w has left // (workers - w) items
        size = left // (workers - w)
        take = max(0, size - len(heads[w]))
        out += heads[w] + rest[start:start + take]
        start += take
        left -= size
    return out + rest[start:]


#: Run by :func:`pytest_configure` in a fresh interpreter, in the default floating-point environment (a module
#: compiled with flush-to-zero on keeps a subnormal literal as 0 in its .pyc, harness/fpenv.py); argv[1]: the root.
_COMPILE_BYTECODE = """
import compileall, sys
from pathlib import Path
from typing import Any
root = Path(sys.argv[1])
compileall.compile_dir(str(root / "harness"), quiet=2)
compileall.compile_file(str(root / "harness_pytest_plugin.py"), quiet=2)
"""
#: Set by :func:`pytest_configure` for the processes the run starts: a pytest session that a test starts with this
#: conftest (a run of tests/test_sweep.py) does not compile the bytecode again.
BYTECODE_DONE = "AUTOGRAD_HARNESS_TESTS_BYTECODE"


def pytest_configure(config: pytest.Config) -> None:
    """The bytecode of ``harness`` and ``harness_pytest_plugin.py`` is compiled into their ``__pycache__`` folders
    (``compileall``, in a fresh interpreter: :data:`_COMPILE_BYTECODE`) once, by the process that starts the run (not
    by an xdist worker), before any test: every later process reads it. Where bytecode is not written
    (``PYTHONDONTWRITEBYTECODE``, as on the CI machine) each of the suite's ~400 Python processes compiled again every
    harness module it imported (about 0.1 s of CPU for a `check`'s, 0.4 s for a collection of the suite: helper-194).
    It changes nothing a test runs or checks: the bytecode is what Python compiles from the same files itself."""
    import os
    import subprocess
    import sys

    if hasattr(config, "workerinput") or BYTECODE_DONE in os.environ:
        return
    os.environ[BYTECODE_DONE] = "1"
    subprocess.run([sys.executable, "-c", _COMPILE_BYTECODE, str(ROOT)], capture_output=True, timeout=300, check=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``slow`` tests (torch.compile: tens of seconds) are opt-in: set HARNESS_RUN_SLOW=1 to run them.
    Under pytest-xdist the longest tests go to the heads of the workers' first runs (:func:`long_tests_first`)."""
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1:
        items[:] = long_tests_first(items, workers)
    if os.environ.get("HARNESS_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set HARNESS_RUN_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


#: A correct NumPy step for plug-in modules that tests write to files (needs ``numpy as np`` and ``harness``
#: imported above it): the plain SGD step of the seed notebook, as a hand implementation writes it.
HAND_STEP_SOURCE = textwrap.dedent('''
    def _hand(X, y, W, b, lr, reduction, steps):
        out = []
        for _ in range(steps):
            R = X @ W + b - y
            c = X.dtype.type(1.0 if reduction == "sum" else 1.0 / R.size)
            gW, gb = 2 * c * (X.T @ R), 2 * c * R.sum(axis=0)
            W, b = W - lr * gW, b - lr * gb
            out.append(harness.StepResult(c * np.sum(R * R), gW, gb, W, b))
        return out
''')


#: One good case (N = D = K = 1) for case-file tests that put bad cases next to a good one.
GOOD = '''
[[case]]
id = "good"
X = [[1.0]]
y = [[3.0]]
W = [[2.0]]
b = [0.5]
lr = "0.1"
'''


def main_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``python -m harness ARGS`` as :func:`harness.cli.main` in this process: its exit code, stdout and stderr, for
    the tests of what a command prints and returns that need no process of their own (a process pays torch's import
    and the start-up again). An exception other than a refusal propagates (the command would print its traceback)."""
    from harness.cli import main

    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def optimizer_of(table: dict):
    """An ``OptimizerConfig`` from a case file's ``optimizer`` table, through the one validation (harness.cases)."""
    from harness.cases import optimizer_config
    from harness.errors import CaseFileError

    def err(key: str | None, detail: str) -> CaseFileError:
        return CaseFileError(detail, key=key)

    out = optimizer_config(table, err)
    assert out is not None
    return out


@pytest.fixture
def accurate_everywhere(monkeypatch):
    """The oracle tries the accurate X^T R at every size from ACCURATE_MIN_WORK (not only where
    harness.fastexact.accurate_pays): for the tests of the accurate product through the oracle."""
    from harness import fastexact

    monkeypatch.setattr(fastexact, "ACCURATE_MIN_DK", 0)
    monkeypatch.setattr(fastexact, "ACCURATE_MIN_PAIRS", 0)


def separate_partial_sums(X: Any, R: Any, sq: Any, sum_sq2: Any) -> tuple[Any, Any, Any]:
    """The partial-sum models of grad_W's, grad_b's and the loss's reductions from three separate
    :func:`harness.bounds.partial_sum_squares` calls, as 5e36f3b formed them (before the round-45 join): X^T R's terms
    ``(D, K, N)``, R^T ``(K, N)`` and the loss's row ``(1, N K)`` of squares ``sq`` with sum of squares ``sum_sq2``.
    tests/test_attack_h195.py and _h196.py compare the joined call with them."""
    import numpy as np

    from harness import bounds as hb

    T = X.T[:, None, :] * R.T[None, :, :]
    gW = hb.partial_sum_squares(T, axis=2, sum_sq=(X**2).T @ R**2)
    gb = hb.partial_sum_squares(np.ascontiguousarray(R.T), axis=1, sum_sq=(R**2).sum(axis=0))
    loss = hb.partial_sum_squares(sq[None, :], axis=1, sum_sq=np.reshape(sum_sq2, (1,)))[0]
    return gW, gb, loss


def mixed_partial_sum_inputs(rng: Any, n: int, d: int, k: int, dtype: Any) -> tuple[Any, ...]:
    """``X (N, D)`` and ``R (N, K)`` of mixed magnitudes (normal times ``2**U(-20, 19)``: the sums' roundings differ by
    order), ``W (D, K)``, ``b (K,)``, ``Y (N, K)`` normal, in ``dtype``, and the loss's row ``sq = (R**2).ravel()`` with
    its sum of squares: ``(X, Y, W, b, R, sq, sum_sq2)``, the arguments of the joined and separate partial-sum models
    (:func:`separate_partial_sums`)."""
    import numpy as np

    X = (rng.normal(size=(n, d)) * np.exp2(rng.integers(-20, 20, (n, d)))).astype(dtype)
    R = (rng.normal(size=(n, k)) * np.exp2(rng.integers(-20, 20, (n, k)))).astype(dtype)
    W, b, Y = rng.normal(size=(d, k)).astype(dtype), rng.normal(size=k).astype(dtype), rng.normal(size=(n, k)).astype(dtype)
    sq = (R**2).ravel()
    return X, Y, W, b, R, sq, (sq**2).sum()
