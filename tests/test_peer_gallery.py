"""The peer gallery (examples/*_step.py): each framework's step graded by ``harness.assert_agrees``
on the seed cases, where the framework is installed (the ``test`` extra installs them); and the same
step with a realistic bug fails with a diagnosis, so the test can fail.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest

import harness
from harness.implementations import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "cases" / "seed.toml"

# example file, the framework module it needs, the name it registers, dtypes it grades (seed cases: 80 records
# per full-size dtype, 40 in float16/bfloat16, where the seed's lr and shapes leave half the case out)
GALLERY = [
    ("jax_step.py", "jax", "jax-sgd", {"float64": 80, "float32": 80, "float16": 40, "bfloat16": 40}),
    ("autograd_step.py", "autograd", "autograd-sgd", {"float64": 80, "float32": 80, "float16": 40}),
]


@pytest.fixture(autouse=True)
def _unregister():
    """What a test registers does not join the default implementations of later tests in this process."""
    before = set(REGISTRY)
    yield
    for name in set(REGISTRY) - before:
        REGISTRY.pop(name, None)


@pytest.mark.parametrize(("example", "module", "name", "graded"), GALLERY, ids=[g[2] for g in GALLERY])
def test_peer_example_agrees_on_the_seed_cases(example: str, module: str, name: str, graded: dict[str, int]) -> None:
    pytest.importorskip(module, reason=f"{module} is not installed: pip install -e '.[test]' installs it")
    spec = importlib.util.spec_from_file_location(f"peer_gallery_{name.replace('-', '_')}", ROOT / "examples" / example)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # registers `name`, again after _unregister
    records = harness.assert_agrees(name, SEED, dtypes=None)
    agree = Counter(r.dtype for r in records if r.verdict == "agree")
    assert dict(agree) == graded
    assert all(r.verdict in ("agree", "unsupported") for r in records)


def test_a_half_sum_autograd_step_fails_and_is_named() -> None:
    """The autograd example with the half-sum convention (0.5 * sum r^2, a realistic bug): assert_agrees
    fails, and the message names the factor."""
    pytest.importorskip("autograd", reason="autograd is not installed: pip install -e '.[test]' installs it")
    import autograd.numpy as anp
    from autograd import value_and_grad

    @harness.implementation("autograd-sgd-half-sum", framework="numpy", dtypes=("float64",), correct=False)
    def half_sum(X, y, W, b, *, lr, reduction, steps):  # noqa: N803 - the harness's argument names
        def loss_fn(W, b):  # noqa: N803
            r = anp.dot(X, W) + b - y
            return 0.5 * anp.sum(r * r) if reduction == "sum" else 0.5 * anp.mean(r * r)

        loss_and_grads = value_and_grad(loss_fn, argnum=(0, 1))
        for _ in range(steps):
            loss, (grad_W, grad_b) = loss_and_grads(W, b)
            W, b = W - lr * grad_W, b - lr * grad_b
            yield loss, grad_W, grad_b, W, b

    with pytest.raises(AssertionError, match=r"looks like: gradient off by a factor of 1/2"):
        harness.assert_agrees(half_sum, SEED, dtypes="float64")
