"""The four autograd-semantics checks, each firing on a deliberately wrong step (issue 5).

The issue's values: X = [1, 2, 3, 4] (N = 4, D = 1), y = 2X, w = 0, mean
reduction, lr = 0.01. Without a bias the loss is L(w) = (1/4) sum (w x - 2x)^2,
so dL/dw = (1/2)(w - 2) sum x^2 = 15 (w - 2): -30 at w = 0, w becomes 0.3, and
-25.5 at w = 0.3; a step that never resets .grad reports -30 + -25.5 = -55.5.
The harness always trains a bias: with it (b = 0) the step-1 gradient is still
-30 and W becomes 0.3, b becomes 0.1, and the exact gradient at step 2 is -25,
so the accumulated one is -55.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from harness.cases import load_cases
from harness.classify import classify_exception
from harness.diagnose import StepFacts, accumulation
from harness.floats import get_format
from harness.implementations import StepResult, implementation
from harness.runner import verify
from tests.conftest import CASES

X4 = [Fraction(v) for v in (1, 2, 3, 4)]


def no_bias_gradient(w: Fraction) -> Fraction:
    """dL/dw of L(w) = (1/4) sum (w x - 2x)^2, exactly."""
    return sum((2 * x * (w * x - 2 * x) for x in X4), Fraction(0)) / 4


def semantics_case(case_id: str):
    return next(c for c in load_cases([CASES / "semantics.toml"]).cases if c.id == case_id)


def rec(records, quantity, step):
    return next(r for r in records if r.quantity == quantity and r.step == step)


def test_issue_values_by_hand():
    assert no_bias_gradient(Fraction(0)) == -30
    w1 = 0 - Fraction(1, 100) * no_bias_gradient(Fraction(0))
    assert w1 == Fraction(3, 10)
    assert no_bias_gradient(w1) == Fraction(-51, 2)


def test_accumulation_diagnosis_on_the_issue_values_without_bias():
    """A real no-bias PyTorch loop that never resets .grad reports -55.5 at step 2."""
    X = torch.tensor([[1.0], [2.0], [3.0], [4.0]], dtype=torch.float64)
    y = 2 * X
    w = torch.zeros(1, 1, dtype=torch.float64, requires_grad=True)
    grads, ws = [], []
    for _ in range(2):
        ws.append(float(w.detach()))
        loss = ((X @ w - y) ** 2).mean()
        loss.backward()
        assert w.grad is not None
        grads.append(float(w.grad))
        with torch.no_grad():
            w -= 0.01 * w.grad
    assert grads == [-30.0, -55.5]
    assert ws[1] == pytest.approx(0.3, rel=1e-15)
    exact2 = float(no_bias_gradient(Fraction(ws[1])))  # the exact gradient at the float64 w the loop had, about -25.5
    assert exact2 == pytest.approx(-25.5, abs=1e-13)
    f64 = get_format("float64")

    def facts(computed: float, exact: float, previous: float) -> StepFacts:
        one = {"loss": np.array(0.0), "grad_b": np.zeros(1), "W": np.array([[0.3]]), "b": np.zeros(1)}
        inputs = {"X": X.numpy(), "y": y.numpy(), "W": np.array([[0.3]]), "b": np.zeros(1)}
        rig = {q: np.full_like(v, 1e-13) for q, v in one.items()} | {"grad_W": np.array([[1e-13]])}
        prev = StepFacts(1, f64, 0.01, 0.01, "mean", inputs, {**one, "grad_W": np.array([[previous]])}, one | {"grad_W": np.array([[previous]])}, rig)
        return StepFacts(2, f64, 0.01, 0.01, "mean", inputs, {**one, "grad_W": np.array([[computed]])},
                         {**one, "grad_W": np.array([[exact]])}, rig, failing=frozenset({"grad_W"}), previous=prev)

    found = accumulation(facts(-55.5, exact2, -30.0))
    assert found is not None and found.quantities == ("grad_W",)
    assert found.diagnosis == "gradient accumulation (.grad not reset between steps)"
    assert "-55.5 = -25.5" in found.detail and "+ -30 (the gradient of step 1)" in found.detail
    # the correct gradient, or a wrong one without the signature, is not called accumulation
    assert accumulation(facts(-25.5, -25.5, -30.0)) is None
    assert accumulation(facts(-40.0, -25.5, -30.0)) is None


def test_grad_never_reset_is_named_in_the_record():
    case = semantics_case("semantics-accumulation")
    recs = verify([case], ["mutant-grad-accumulation"], dtypes=["float64"])
    g1, w1 = rec(recs, "grad_W", 1), rec(recs, "W", 1)
    assert (g1.verdict, g1.computed, g1.exact) == ("agree", "-30.0", "-30")
    assert w1.verdict == "agree" and float(w1.computed) == pytest.approx(0.3, rel=1e-15)
    g2 = rec(recs, "grad_W", 2)
    assert g2.verdict == "disagree"
    assert g2.computed == "-55.0" and float(g2.exact.rstrip(".")) == pytest.approx(-25, abs=1e-14)
    assert g2.diagnosis == "gradient accumulation (.grad not reset between steps)"
    assert g2.message.startswith("looks like: gradient accumulation (.grad not reset between steps); grad_W at step 2 is")
    assert "-55 = -25 (the exact gradient at this step's parameters) + -30 (the gradient of step 1)" in g2.message
    assert "zero_grad" in g2.message
    assert rec(recs, "W", 2).diagnosis == g2.diagnosis  # the update used the accumulated gradient
    assert "gradient accumulation" in rec(recs, "grad_b", 2).message  # -18.3 = -8.3 + -10


def test_backward_twice_is_an_integer_multiple():
    case = semantics_case("semantics-accumulation")
    recs = verify([case], ["mutant-double-backward"], dtypes=["float32"])
    g1 = rec(recs, "grad_W", 1)
    assert g1.verdict == "disagree" and g1.computed == "-60.0"
    assert g1.diagnosis == "gradient off by a factor of 2 (backward() ran 2 times into one .grad)"
    assert g1.message.startswith("looks like: gradient off by a factor of 2")


def test_a_wrong_gradient_without_the_signature_keeps_the_plain_message():
    @implementation("test-gradient-times-1.5", framework="torch")
    def scaled(X, y, W, b, *, lr, reduction, steps):
        out = []
        for _ in range(steps):
            R = X @ W + b - y
            c = 2.0 / R.numel() if reduction == "mean" else 2.0
            gW, gb = 1.5 * c * (X.T @ R), 1.5 * c * R.sum(0)
            W, b = W - lr * gW, b - lr * gb
            out.append(StepResult((R * R).mean() if reduction == "mean" else (R * R).sum(), gW, gb, W, b))
        return out

    recs = verify([semantics_case("semantics-accumulation")], ["test-gradient-times-1.5"], dtypes=["float64"])
    g1, g2 = rec(recs, "grad_W", 1), rec(recs, "grad_W", 2)
    assert g1.verdict == g2.verdict == "disagree"
    assert "accumulation" not in g1.message + g2.message
    assert "above the rigorous error bound" in g2.message


@pytest.mark.parametrize("name", ["mutant-replaced-leaf", "mutant-replaced-leaf-no-grad"])
def test_parameter_replaced_by_a_new_tensor(name):
    recs = verify([semantics_case("semantics-accumulation")], [name], dtypes=["float32"])
    assert len(recs) == 1 and recs[0].verdict == "error" and recs[0].quantity == "*"
    assert recs[0].message.startswith("autograd misuse")
    assert "requires_grad" in recs[0].message or "replaced by a new tensor" in recs[0].message


def test_a_returned_none_gradient_is_explained():
    @implementation("test-returns-none-grad", framework="torch")
    def none_grad(X, y, W, b, *, lr, reduction, steps):
        W = W.clone().requires_grad_(True)
        b = b.clone().requires_grad_(True)
        out = []
        for _ in range(steps):
            loss = ((X @ W + b - y) ** 2).mean()
            loss.backward()
            gW, gb = W.grad, b.grad
            with torch.no_grad():
                W = W - lr * gW  # replaced: requires_grad lost
                b = b - lr * gb
            W.requires_grad_(True)
            b.requires_grad_(True)  # the new tensors are leaves again, but nobody copied .grad: the StepResult holds None
            out.append(StepResult(loss.detach(), gW if not out else None, gb, W.detach(), b.detach()))
        return out

    recs = verify([semantics_case("semantics-accumulation")], ["test-returns-none-grad"], dtypes=["float64"])
    assert [r.verdict for r in recs] == ["error"]
    assert recs[0].message.startswith("autograd misuse: grad_W is None at step 2")
    assert "W = W - lr * W.grad" in recs[0].message


def test_in_place_update_with_grad_mode_on():
    recs = verify([semantics_case("semantics-accumulation")], ["mutant-inplace-grad-mode"], dtypes=["float64"])
    assert [r.verdict for r in recs] == ["error"]
    assert "in-place update of a leaf tensor with grad mode on" in recs[0].message
    assert "RuntimeError: a leaf Variable that requires grad is being used in an in-place operation" in recs[0].message


def test_update_below_bfloat16_resolution_is_agree_not_skipped():
    case = semantics_case("semantics-below-resolution")
    recs = verify([case], ["torch-seed", "torch-optim-sgd", "mutant-skipped-update"], dtypes=["bfloat16", "float32"])
    for impl in ("torch-seed", "torch-optim-sgd"):
        w1 = next(r for r in recs if r.implementation == impl and r.dtype == "bfloat16" and r.quantity == "W" and r.step == 1)
        assert w1.verdict == "agree" and w1.computed == "1.0"
        # exact W' = 1 - bf16(0.001) * 1 = 1 - 0.00100040435791015625, under half an ULP (2**-9) below 1.0
        assert Fraction(w1.exact) == 1 - Fraction(float(torch.tensor(0.001, dtype=torch.bfloat16)))
        assert "update below the resolution of bfloat16" in w1.message and "not a skipped step" in w1.message
    # the same unchanged W from a step that skips the update: fine in bfloat16 (the correct answer), caught in float32
    skip_bf16 = [r for r in recs if r.implementation == "mutant-skipped-update" and r.dtype == "bfloat16" and r.quantity == "W"]
    assert all(r.verdict == "agree" for r in skip_bf16)
    skip_f32 = next(r for r in recs if r.implementation == "mutant-skipped-update" and r.dtype == "float32" and r.quantity == "W")
    assert skip_f32.verdict == "disagree" and skip_f32.diagnosis == "skipped update (W and b unchanged)"
    assert skip_f32.message.startswith("looks like: skipped update (W and b unchanged); W and b are unchanged by the step")
    skip_b = next(r for r in recs if r.implementation == "mutant-skipped-update" and r.dtype == "bfloat16" and r.quantity == "b")
    assert skip_b.verdict == "disagree"  # b = 0 moves to -0.001, which bfloat16 represents


def test_fused_sgd_off_its_devices_is_unsupported():
    p = torch.zeros(1, device="meta", requires_grad=True)
    p.grad = torch.zeros(1, device="meta")
    opt = torch.optim.SGD([p], lr=0.1, fused=True)
    with pytest.raises(RuntimeError) as info:
        opt.step()
    verdict, message = classify_exception(info.value)
    assert verdict == "unsupported" and "fused" in message


def _kernel_error(dtype: torch.dtype) -> RuntimeError:
    """torch's own missing-kernel error for ``dtype`` on the CPU (mse_loss has no integer kernel)."""
    with pytest.raises(RuntimeError) as info:
        torch.nn.functional.mse_loss(torch.ones(2, dtype=dtype), torch.ones(2, dtype=dtype))
    return info.value


def test_a_missing_kernel_is_unsupported_only_for_the_graded_dtype():
    """helper-93: any text with ``" not implemented for '`` was ``unsupported``, so a step that cast its loss to
    integers (``"mse_cpu" not implemented for 'Long'``) passed every float dtype of the case that took that path."""
    err = _kernel_error(torch.long)
    assert "not implemented for 'Long'" in str(err)
    for dtype in ("float64", "float32", "float16", "bfloat16"):
        verdict, message = classify_exception(err, dtype)
        assert verdict == "error" and f"no kernel for 'Long', which is not the graded dtype {dtype}" in message
    own = RuntimeError('"addmm_impl_cpu_" not implemented for \'Half\'')
    assert classify_exception(own, "float16")[0] == "unsupported"
    assert classify_exception(own, "float32")[0] == "error"
    assert classify_exception(own)[0] == "unsupported"  # no dtype known (the inputs' creation)

    @implementation("casts-to-long-on-mean", framework="torch")
    def casts(X, y, W, b, *, lr, reduction, steps):
        if reduction == "mean":
            torch.nn.functional.mse_loss((X @ W + b).long(), y.long())
        raise AssertionError("only the mean path is tried here")

    from harness.implementations import REGISTRY

    cases = [c for c in load_cases([CASES / "seed.toml"]).cases if c.reduction == "mean"][:1]
    try:
        recs = verify(cases, ["casts-to-long-on-mean"], dtypes=("float32", "float64"))
    finally:
        REGISTRY.pop("casts-to-long-on-mean", None)
    assert [(r.verdict, r.quantity) for r in recs] == [("error", "*"), ("error", "*")]
    assert "which is not the graded dtype float32 ('Float')" in recs[0].message


def test_mutants_never_run_by_default():
    from harness.implementations import resolve

    names = {i.name for i in resolve(None)}
    assert not any(n.startswith("mutant-") for n in names)
    assert "torch-compile" not in names
    assert {"torch-seed", "torch-add_", "torch-optim-sgd", "torch-optim-sgd-foreach", "torch-optim-sgd-fused", "torch-func",
            "numpy-hand", "finite-differences"} <= names
