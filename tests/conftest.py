"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

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
