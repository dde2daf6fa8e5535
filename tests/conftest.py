"""Shared test helpers."""

from __future__ import annotations

import textwrap
from pathlib import Path

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``slow`` tests (torch.compile: tens of seconds) are opt-in: set HARNESS_RUN_SLOW=1 to run them."""
    import os

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
