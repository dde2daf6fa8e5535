"""The ``pytest11`` entry point of autograd-harness: it names :mod:`harness.pytest_plugin`, and nothing else.

The entry point is ``harness.pytest_plugin = harness_pytest_plugin:pytest_plugin``: pytest registers the
module :mod:`harness.pytest_plugin` itself, under its own name (so ``-p harness.pytest_plugin``,
``-p no:harness.pytest_plugin`` and ``pytest_plugins = ["harness.pytest_plugin"]`` work as before and never
register it twice). The entry point's module sits outside the ``harness`` package because pytest rewrites the
asserts of the package that holds an editable install's plug-in: with ``harness.pytest_plugin`` there, every
``harness`` module a test imported was parsed and compiled again through pytest's rewriting in each pytest
process (about 1 s of CPU a session that grades, where bytecode is not cached). Only this module is rewritten now.
"""

from harness import pytest_plugin

__all__ = ["pytest_plugin"]
