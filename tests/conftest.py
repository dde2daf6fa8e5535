"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

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
