"""The per-check shortcuts of a small check (helper-119) change no record and blind no guard.

- :func:`harness.fpenv.current` answers the default from the registers' bits without building it: every other bit
  pattern still goes through :func:`harness.fpenv._from_registers`, and a step that turns flush-to-zero on in its
  second call only (after a check in the default) is still named;
- :func:`harness.frameworks.interchange.read_result` reads a plain contiguous float64 CPU tensor's memory as it is:
  the same values, shape and layout as its ``.to(float64)`` conversion; other tensors (a view, a subclass, a
  negative view) take the conversion; a step that writes into a float64 tensor input is still caught;
- :func:`harness.isolation.same_bits` compares small arrays as bytes: ``-0.0`` is not ``0.0`` and NaN payloads differ;
- :func:`harness.runner.repro_command`'s lines are kept by their strings: a repro names the case's source and tier
  as they are at each check;
- :func:`harness.verdicts.failing_verdicts` is kept by the tuples it reads: a rebound tuple is read again.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch

import harness
from harness import StepResult, fpenv, verdicts
from harness.cases import case_from_arrays
from harness.diagnose import StepFacts, _replaced
from harness.floats import get_format
from harness.frameworks.interchange import read_result
from harness.implementations import resolve
from harness.isolation import same_bits
from harness.runner import check_case, repro_command


@pytest.fixture(autouse=True)
def _default_after():
    yield
    torch.set_flush_denormal(False)
    fpenv.restore_default()
    assert fpenv.current().is_default


def _case(n=8, d=2, k=1, seed=5):
    rng = np.random.default_rng(seed)
    return case_from_arrays("fast-paths", X=rng.standard_normal((n, d)), y=rng.standard_normal((n, k)),
                            W=rng.standard_normal((d, k)), b=rng.standard_normal(k), lr=0.125, reduction="mean",
                            dtypes=("float64",))


def test_the_default_from_the_register_bits_is_what_from_registers_says():
    rng = random.Random(119)
    patterns = [(rng.getrandbits(16), rng.getrandbits(32)) for _ in range(20000)]
    patterns += [(cw, mx) for cw in (0x037F, 0x027F, 0x0C7F, 0x037E, 0x0F7F, 0x033F, 0x137F)
                 for mx in (0x1F80, 0x1FBF, 0x9F80, 0x1FC0, 0x3F80, 0x5F80, 0x1F00, 0x0F80, 0x11F80)]
    for cw in range(1 << 12):  # every x87 mask, precision and rounding bit with a default MXCSR, and the reverse
        patterns += [(cw, 0x1F80), (0x037F, cw << 4)]
    for cw, mx in patterns:
        fast = (cw & fpenv._CW_DEFAULT_MASK) == fpenv._CW_DEFAULT and (mx & fpenv._MXCSR_DEFAULT_MASK) == fpenv._MXCSR_DEFAULT
        assert fast == (fpenv._from_registers(cw, mx) == fpenv.DEFAULT), (hex(cw), hex(mx))


def test_flush_to_zero_turned_on_in_the_second_call_only_is_still_named():
    calls = []

    def step(X, y, W, b, *, lr, reduction, steps):
        calls.append(1)
        if len(calls) == 2:
            torch.set_flush_denormal(True)
        out = []
        for _ in range(steps):
            r = X @ W + b - y
            gW, gb = 2 * (X.T @ r) / len(X), 2 * r.sum(axis=0) / len(X)
            W, b = W - lr * gW, b - lr * gb
            out.append(StepResult(np.asarray((r * r).mean()), gW, gb, W, b))
        return out

    impl = harness.Implementation("ftz-second-call", "numpy", step, kind="plugin")
    case = _case()
    first = check_case(case, impl, "cpu", "float64")
    assert fpenv.current().is_default
    second = check_case(case, impl, "cpu", "float64")
    assert fpenv.current().is_default
    assert all("floating-point environment" not in r.message for r in first)
    assert second and all("left the floating-point environment changed: flush-to-zero" in r.message for r in second)


@pytest.mark.parametrize("copy", [True, False])
def test_a_contiguous_float64_tensor_reads_as_its_conversion(copy):
    base = torch.tensor(np.random.default_rng(1).standard_normal((5, 3)))
    values = [base, base[1], base[:, 0], base.T, base.clone().requires_grad_(True), torch.tensor(-0.0, dtype=torch.float64),
              torch.zeros((0, 3), dtype=torch.float64), torch.nn.Parameter(base.clone()), base.float(),
              torch.tensor([float("nan"), float("inf"), -5e-324], dtype=torch.float64)]
    if hasattr(torch, "_neg_view"):
        values.append(torch._neg_view(base))
    for v in values:
        try:
            want = v.detach().to(device="cpu", dtype=torch.float64, copy=copy).numpy()
        except RuntimeError:  # (a negative view, not copied: the conversion refuses it, and so does the reading)
            with pytest.raises(RuntimeError):
                read_result(v, None, copy)
            continue
        arr, name = read_result(v, None, copy)
        assert arr.dtype == np.float64 and arr.shape == want.shape and arr.strides == want.strides
        assert same_bits(arr, want) and name == str(v.dtype).removeprefix("torch.")
        if copy:
            assert not np.shares_memory(arr, v.detach().numpy() if not v.is_neg() else arr.copy())


def test_a_step_that_writes_into_a_float64_tensor_input_is_still_caught():
    seed = resolve(["torch-seed"])[0]

    def writes(X, y, W, b, *, lr, reduction, steps):
        got = seed.fn(X, y, W, b, lr=lr, reduction=reduction, steps=steps)
        with torch.no_grad():
            W.view(-1)[0] = torch.nextafter(W.view(-1)[0], torch.tensor(np.inf, dtype=W.dtype))  # one ULP
        return got

    impl = harness.Implementation("writes-one-ulp", "torch", writes, kind="plugin")
    case = _case()
    assert [r.verdict for r in check_case(case, seed, "cpu", "float64")] == ["agree"] * 5
    rec, = check_case(case, impl, "cpu", "float64")
    assert rec.verdict == "error" and rec.message.startswith("mutated its input W")


def test_small_arrays_compare_bit_for_bit():
    a = np.array([0.0, 1.0, np.nan])
    b = a.copy()
    assert same_bits(a, b)
    b[0] = -0.0
    assert not same_bits(a, b) and np.array_equal(a[:2], b[:2])
    c = a.copy()
    c.view(np.uint64)[2] ^= 1  # another NaN payload
    assert not same_bits(a, c)
    assert not same_bits(a, a.astype(np.float32)) and not same_bits(a, a[:2])
    assert same_bits(np.asfortranarray(np.arange(6.0).reshape(2, 3)), np.arange(6.0).reshape(2, 3))
    big = np.zeros(4096)  # past the bytes path: the same answers
    other = big.copy()
    other[-1] = -0.0
    assert same_bits(big, big.copy()) and not same_bits(big, other)


def test_a_repro_line_follows_the_case_as_it_is_at_each_check():
    case = _case()
    first = repro_command(case, "torch-seed", "cpu", "float64")
    assert "--cases" not in first
    moved = dataclasses.replace(case, source="cases/x.toml", tags=("generated",))
    assert "--cases cases/x.toml --all" in repro_command(moved, "torch-seed", "cpu", "float64")
    large = dataclasses.replace(moved, tags=("generated", "large"))
    assert "--tier large" in repro_command(large, "torch-seed", "cpu", "float64")
    assert repro_command(case, "torch-seed", "cpu", "float64", ["--strict"]).endswith("--dtypes float64 --strict")
    assert repro_command(case, "torch-seed", "cpu", "float64") == first


def test_failing_verdicts_reads_its_tuples_again_when_rebound(monkeypatch):
    assert verdicts.failing_verdicts() == frozenset(verdicts.FAILING)
    assert verdicts.failing_verdicts(strict=True) == frozenset(verdicts.FAILING) | {"suspect"}
    monkeypatch.setattr(verdicts, "STRICT_ONLY", ("suspect", "overflow"))
    assert "overflow" in verdicts.failing_verdicts(strict=True)
    assert "overflow" not in verdicts.failing_verdicts()


def test_replaced_step_facts_equal_dataclasses_replace():
    fmt = get_format("float64")
    facts = StepFacts(2, fmt, 0.5, 0.5, "sum", {"X": np.zeros((1, 1))}, {}, {}, {}, previous=None)
    for changes in ({"failing": frozenset({"W"})}, {"failing": frozenset(), "previous": None, "right_before": frozenset({"b"})}):
        got, want = _replaced(facts, **changes), dataclasses.replace(facts, **changes)
        assert type(got) is StepFacts and got == want and list(vars(got)) == list(vars(want))
        with pytest.raises(dataclasses.FrozenInstanceError):
            got.step = 3  # type: ignore[misc]
