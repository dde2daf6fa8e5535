"""A step that yields its results: the generator's body is the step (helper-83).

The harness checks a step's inputs for writes and restores the global switches it left changed when the step
returns; a generator's body ran only later, while the results were read, after those checks. So a generator that
wrote into W and b agreed, and one that left grad mode off failed the next, correct, implementation. The generator
is now run to its end inside the call (:func:`harness.runner._call`), and JAX's configuration is restored as torch's
switches are (:mod:`harness.frameworks.jax_switches`)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch

import harness
from harness.records import read_jsonl
from harness.runner import RunOptions, verify
from tests.conftest import CASES, ROOT

SEED = CASES / "seed.toml"


def _numpy_steps(X, y, W, b, *, lr, reduction, steps, in_place=False):
    n, k = y.shape
    c = 2.0 if reduction == "sum" else 2.0 / (n * k)
    for _ in range(steps):
        R = X @ W + b - y
        loss = (R * R).sum() if reduction == "sum" else (R * R).mean()
        gW, gb = c * (X.T @ R), c * R.sum(axis=0)
        if in_place:  # the arrays it was handed
            W -= lr * gW
            b -= lr * gb
        else:
            W, b = W - lr * gW, b - lr * gb
        yield loss, gW, gb, W.copy(), b.copy()


def _impl(name, fn, framework="numpy"):
    return harness.Implementation(name=name, framework=framework, fn=fn, kind="plugin")


def test_a_generator_that_writes_into_its_inputs_is_an_error():
    def writes(X, y, W, b, *, lr, reduction, steps):
        yield from _numpy_steps(X, y, W, b, lr=lr, reduction=reduction, steps=steps, in_place=True)

    def reads(X, y, W, b, *, lr, reduction, steps):
        yield from _numpy_steps(X, y, W, b, lr=lr, reduction=reduction, steps=steps)

    recs = verify([SEED], [_impl("gen-writes", writes)], dtypes=["float64"], options=RunOptions(trajectory=False))
    assert recs and all(r.verdict == "error" for r in recs)
    assert recs[0].message.startswith("mutated its inputs W, b: a step must not write into"), recs[0].message
    recs = verify([SEED], [_impl("gen-reads", reads)], dtypes=["float64"], options=RunOptions(trajectory=False))
    assert recs and {r.verdict for r in recs} == {"agree"}


def test_a_generator_that_leaves_grad_mode_off_is_named_and_the_next_step_is_graded():
    def torch_steps(X, y, W, b, *, lr, reduction, steps):
        W, b = W.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
        for t in range(steps):
            loss = torch.nn.functional.mse_loss(X @ W + b, y, reduction=reduction)
            loss.backward()
            with torch.no_grad():
                W -= lr * W.grad
                b -= lr * b.grad
            out = (loss.detach(), W.grad.clone(), b.grad.clone(), W.detach().clone(), b.detach().clone())
            W.grad = b.grad = None
            if t == steps - 1:
                torch.set_grad_enabled(False)  # as evaluation code begins, left on
            yield out

    recs = verify([SEED], [_impl("gen-nograd", torch_steps, "torch"), "torch-seed"], dtypes=["float32"], jobs=1,
                  options=RunOptions(trajectory=False))
    assert torch.is_grad_enabled()
    assert {r.verdict for r in recs} == {"agree"}, {(r.implementation, r.verdict, r.message[:80]) for r in recs}
    mine = [r for r in recs if r.implementation == "gen-nograd"]
    assert all("grad mode off (torch.set_grad_enabled(False))" in r.message for r in mine)


LEAKS_X64 = '''
import jax
import jax.numpy as jnp

import harness

jax.config.update("jax_enable_x64", True)


def run(X, y, W, b, lr, reduction, steps):
    f = lambda W, b: (jnp.sum if reduction == "sum" else jnp.mean)((X @ W + b - y) ** 2)
    out = []
    for _ in range(steps):
        loss, (gW, gb) = jax.value_and_grad(f, argnums=(0, 1))(W, b)
        W, b = W - lr * gW, b - lr * gb
        out.append((loss, gW, gb, W, b))
    return out


@harness.implementation("jax-leaver", framework="jax", flush_to_zero=True)
def leaver(X, y, W, b, *, lr, reduction, steps):
    out = run(X, y, W, b, lr, reduction, steps)
    jax.config.update("jax_enable_x64", False)  # left changed for the next step
    return out


@harness.implementation("jax-good", framework="jax", flush_to_zero=True)
def good(X, y, W, b, *, lr, reduction, steps):
    return run(X, y, W, b, lr, reduction, steps)


@harness.implementation("jax-rank-leaver", framework="jax", flush_to_zero=True)
def rank_leaver(X, y, W, b, *, lr, reduction, steps):
    out = run(X, y, W, b, lr, reduction, steps)
    jax.config.update("jax_numpy_rank_promotion", "raise")  # an option with a context manager (not config.read-able)
    return out


@harness.implementation("jax-context-left", framework="jax", flush_to_zero=True)
def context_left(X, y, W, b, *, lr, reduction, steps):
    out = run(X, y, W, b, lr, reduction, steps)
    jax.enable_x64(False).__enter__()  # a thread-local value: no public function takes it back
    return out
'''


#: The three `check` runs of :func:`test_jax_configuration_left_changed_is_restored_and_named`, one item each (about
#: 25 s of one xdist worker each, in a 2-core CI run where the three in one test were the suite's third longest test):
#: implementations -> exit code, the verdict of every record, and what the leaver's records say.
JAX_LEAVERS = {
    "jax-leaver,jax-good": (0, "agree", ("jax-leaver", "JAX's jax_enable_x64 False (jax.config.update)")),
    # helper-84: the options with context managers were never read; a thread-local value left in effect is not graded,
    # nor any later JAX step in that process (the next step's records depended on it)
    "jax-rank-leaver,jax-good": (0, "agree", ("jax-rank-leaver", "JAX's jax_numpy_rank_promotion 'raise' (jax.config.update)")),
    "jax-context-left,jax-good": (1, "error", (None, "which the harness cannot undo")),
}


@pytest.mark.parametrize("impls", list(JAX_LEAVERS))
def test_jax_configuration_left_changed_is_restored_and_named(impls, tmp_path):
    """(In a ``check`` process of its own: JAX is never imported into the test workers, which fork.)"""
    if importlib.util.find_spec("jax") is None:
        pytest.skip("JAX is an optional extra: pip install 'autograd-harness[jax]'")
    code, verdict, (named, message) = JAX_LEAVERS[impls]
    plugin = tmp_path / "leaks_x64.py"
    plugin.write_text(LEAKS_X64)
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "harness", "check", "--cases", str(SEED), "--plugin", str(plugin),
           "--implementations", impls, "--dtypes", "float64", "--devices", "cpu",
           "--jobs", "1", "--results", str(out), "--report", "none"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == code, proc.stdout[-3000:] + proc.stderr[-2000:]
    recs = read_jsonl(out).records
    assert recs and {r.verdict for r in recs} == {verdict}
    assert all(message in r.message for r in recs if named is None or r.implementation == named), {r.message for r in recs}


@pytest.mark.parametrize("size", [4, 6])
def test_a_result_tuple_of_the_wrong_length_is_named(size):
    """helper-83: a 6-tuple (or a 4-tuple) per step was "result has no field 'loss'"."""
    def step(X, y, W, b, *, lr, reduction, steps):
        return [tuple([X.sum()] * size) for _ in range(steps)]

    recs = verify([SEED], [_impl(f"tuple-{size}", step)], dtypes=["float64"], options=RunOptions(trajectory=False))
    assert recs and all(r.verdict == "error" and f"step 1: a tuple of {size} value(s); a result is five, (loss, grad_W, "
                        "grad_b, W, b)" in r.message for r in recs), [r.message for r in recs]


def test_inputs_written_while_the_results_are_read_are_an_error():
    """helper-84: a result whose ``__array__`` wrote into W agreed (the inputs were compared before the results were
    read, which runs user code too)."""
    class Sneaky:
        def __init__(self, value, target):
            self.value, self.target = value, target

        def __array__(self, dtype=None, copy=None):
            self.target += 1.0
            return np.asarray(self.value, dtype=dtype)

    def step(X, y, W, b, *, lr, reduction, steps):
        return [(loss, gW, gb, Sneaky(W2, W), b2) for loss, gW, gb, W2, b2 in
                _numpy_steps(X, y, W.copy(), b.copy(), lr=lr, reduction=reduction, steps=steps)]

    recs = verify([SEED], [_impl("sneaky-reader", step)], dtypes=["float64"], options=RunOptions(trajectory=False))
    assert recs and all(r.verdict == "error" and r.message.startswith("mutated its input W") for r in recs), \
        [r.message for r in recs]
