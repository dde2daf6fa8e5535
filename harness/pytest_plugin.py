"""The pytest plugin: ``--plugin MODULE`` for pytest, as on the command line.

Registered through the ``pytest11`` entry point, so installing the harness
makes ``python -m pytest --plugin my_module`` import ``my_module`` (a dotted
name or a ``.py`` path) before the tests are collected, and every module in the
``harness.implementations`` entry-point group is loaded too. Tests then verify
the registered steps with :func:`harness.assert_agrees`. This is the only
module of the harness that imports pytest.
"""

from __future__ import annotations

import pytest

from .errors import PluginError
from .implementations import load_entry_points, load_plugin


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("autograd-harness")
    group.addoption("--plugin", action="append", default=[], dest="harness_plugins", metavar="MODULE",
                    help="autograd-harness: import MODULE (dotted name or .py file) that registers implementations (repeatable)")


def pytest_configure(config: pytest.Config) -> None:
    try:
        for module in config.getoption("harness_plugins") or []:
            load_plugin(module)
        load_entry_points()
    except PluginError as exc:
        raise pytest.UsageError(str(exc)) from exc
