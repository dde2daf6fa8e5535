"""helper-173: the loss's floor on the model path and on the optimizer steps.

**The defect.** A model's loss ``c sum (f(X) - y)^2`` (:mod:`harness.models`) is graded against the node-level
rigorous bound of :func:`harness.models.bounds.model_bounds`, two-sided: once ``gamma_{NK}`` is large its lower side
is below 0, and a correct step whose loss was replaced by 0, by the loss of an empty slice, by the exact loss / 1000,
or even by minus the loss, agreed (float16 ReLU MLP, N = 4,096: 0.156 of the bound; bfloat16 tanh MLP, N = 512:
0.151), as on the linear path before helper-171.

**The floor** is :class:`harness.bounds.LossFloor` (one formula), of the residual node ``R = F - y`` with
``E_i`` its rigorous bound plus the truth's enclosure radius (:func:`harness.models.bounds.model_loss_floor`):
``c_lo (1 - u2)^(m + 4) sum max(|R| - radius - E, 0)^2 - tau (8 m + 8)`` and the largest term's
``c_lo (1 - u2)^4 max t - 8 tau``; a finite loss below it is ``disagree``. The optimizer steps grade their loss
through :func:`harness.runner._grade_step`, which applies the linear floor: pinned here too. The figures are derived
by hand from those formulas; correct evaluations (orders of the sum, mean and sum, tiny residuals, flush-to-zero,
several steps) stay ``agree``; a Hypothesis search maximises ``floor / computed`` over correct model evaluations.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

import harness
from harness.bounds import Regime
from harness.cases import case_from_arrays, make_case
from harness.floats import BFLOAT16, FLOAT16, FLOAT32
from harness.implementations import REGISTRY, load_builtins
from harness.implementations.registry import Implementation
from harness.models import ModelStepResult
from harness.models.bounds import model_bounds, model_loss_floor
from harness.models.graph import loss_residual
from harness.models.oracle import model_truth
from harness.models.plan import build_plan
from harness.models.spec import ModelSpec
from harness.models.torch_steps import functional_forward, torch_model_functional
from tests.test_loss_floor import BF16, _evaluate

RELU = ModelSpec(kind="mlp", hidden=(2,), activation="relu")
TANH = ModelSpec(kind="mlp", hidden=(2,), activation="tanh")
POLY = ModelSpec(kind="polynomial", polynomial=2)
U16 = 2.0**-11
U2_16 = U16 + 2.0**-24 * (1 + U16)  # one rounding, possibly through float32 (harness.bounds.update_rounding)
BELOW = "below the least value"


def _params(spec: ModelSpec) -> dict[str, np.ndarray]:
    if spec.kind == "polynomial":
        return {"W": np.array([[0.5], [0.25]]), "b": np.array([0.125])}
    return {"W1": np.array([[0.5, 0.25]]), "b1": np.array([0.125, 0.25]), "W2": np.array([[0.5], [0.5]]), "b2": np.zeros(1)}


def _case(spec: ModelSpec, n: int, dtype: str, reduction: str = "sum", steps: int = 1, tiny: bool = False) -> Any:
    """X in [0.5, 1), y in [-2, -1): every residual above 1, no cancellation; ``tiny``: the output layer 0 (F = 0
    exactly) and y in [-2, -1) 2**-9, so R = -y."""
    rng = np.random.default_rng(n)
    params = _params(spec)
    if tiny:
        params["W2"], params["b2"] = np.zeros_like(params["W2"]), np.zeros_like(params["b2"])
    return case_from_arrays(f"floor-model-{spec.kind}-{n}", rng.uniform(0.5, 1, (n, 1)),
                            rng.uniform(-2, -1, (n, 1)) * (2.0**-9 if tiny else 1.0), model=spec, params=params,
                            lr=2.0**-20, dtypes=[dtype], reduction=reduction, steps=steps)


def _impl(name: str, loss_of: Any, flush_to_zero: bool = False) -> Implementation:
    """torch-model-functional's step (correct gradients and parameters) with the loss ``loss_of(loss, R, c)``: the
    step's own loss tensor, its residual ``F - y`` in the dtype (a tensor (N, K)) and the scale ``c``."""

    def step(X: torch.Tensor, y: torch.Tensor, params: dict[str, torch.Tensor], **kw: Any) -> list[ModelStepResult]:
        res = torch_model_functional(X, y, params, **kw)
        forward = functional_forward(kw["model"], X.shape[1])
        c = 1.0 if kw["reduction"] == "sum" else 1.0 / y.numel()
        out, p = [], dict(params)
        for r in res:
            with torch.no_grad():
                R = forward(X, p) - y
            out.append(ModelStepResult(loss_of(r.loss, R, c), r.grads, r.params))
            p = dict(r.params)
        return out

    return Implementation(name=name, framework="torch", fn=step, models=("any",), flush_to_zero=flush_to_zero)


def _loss_records(case: Any, dtype: str, loss_of: Any, flush_to_zero: bool = False) -> list[Any]:
    recs = harness.verify([case], [_impl("t173", loss_of, flush_to_zero)], dtypes=[dtype])
    assert all(r.verdict == "agree" for r in recs if r.quantity != "loss"), [(r.quantity, r.verdict) for r in recs]
    return [r for r in recs if r.quantity == "loss"]


# ---- the defect: losses far below every correct evaluation --------------------------------------------------------

HOSTILE = {
    "zero": lambda loss, R, c: loss * 0,
    "empty-slice": lambda loss, R, c: (R[:0] ** 2).sum(),
    "thousandth": lambda loss, R, c: loss / 1000,
    "negated": lambda loss, R, c: -loss,
}


@pytest.mark.parametrize("what", sorted(HOSTILE))
@pytest.mark.parametrize("spec, dtype, n", [(RELU, "float16", 4096), (TANH, "bfloat16", 512), (POLY, "float16", 4096)],
                         ids=["relu-float16", "tanh-bfloat16", "poly-float16"])
def test_a_far_too_small_model_loss_is_disagree(spec: ModelSpec, dtype: str, n: int, what: str) -> None:
    if dtype == "bfloat16" and BF16 is None:
        pytest.skip("bfloat16 needs ml_dtypes")
    (rec,) = _loss_records(_case(spec, n, dtype), dtype, HOSTILE[what])
    assert rec.verdict == "disagree" and BELOW in rec.message, (rec.verdict, rec.bound_ratio, rec.message)
    assert rec.bound_ratio < 1  # within the two-sided bound: the floor alone decides (it agreed before)


@pytest.mark.parametrize("spec, dtype, n", [(RELU, "float16", 4096), (TANH, "bfloat16", 512), (POLY, "float16", 4096)],
                         ids=["relu-float16", "tanh-bfloat16", "poly-float16"])
def test_the_correct_step_agrees(spec: ModelSpec, dtype: str, n: int) -> None:
    if dtype == "bfloat16" and BF16 is None:
        pytest.skip("bfloat16 needs ml_dtypes")
    (rec,) = _loss_records(_case(spec, n, dtype), dtype, lambda loss, R, c: loss)
    assert rec.verdict == "agree", rec.message


def test_the_floor_by_hand_on_the_model_path() -> None:
    """The linear model kind with X = 0 (F = 0 @ W + b = 0 exactly, R = -y exactly: E = 0 at every element, the
    truth exact, radius 0), float16 under its default flush-to-zero (tau = 2**-14), sum: the floor is
    ``(1 - u2)^2 (1 - u2)^(m + 4) sum y^2 - 2**-14 (8 m + 8)``, m = N = 4,096, y_i = 1 + i/8 mod 8 (exact in float16)."""
    n = 4096
    y = 1 + (np.arange(n) % 8) / 8
    spec = ModelSpec(kind="linear")
    graph = build_plan(spec, n, 1, 1, "sum", Fraction(1, 1024))
    truth = model_truth(graph, {"X": np.zeros((n, 1)), "y": -y[:, None], "W": np.zeros((1, 1)), "b": np.zeros(1)}, FLOAT16)
    bounds = model_bounds(graph, truth.node_values, FLOAT16, residual_radius=truth.residual_radius,
                          loss_radius=float(truth.radius["loss"]))
    total = 512 * sum((1 + j / 8) ** 2 for j in range(8))  # 512 copies of each of the 8 values
    by_hand = (1 - U2_16) ** (n + 6) * total - 2.0**-14 * (8 * n + 8)
    assert bounds.loss_floor is not None
    assert bounds.loss_floor.value() == pytest.approx(by_hand, rel=1e-10)  # (float64 margins: (m + 8) 2**-51)
    assert 0.13 < by_hand / total < 0.14  # (1 - u)^4102 = e^-2.003: the worst order's factor
    # the record cites it; the exact loss times (1 - u2)^(m + 6) agrees, a hundredth below the floor is disagree
    case = case_from_arrays("floor-by-hand", np.zeros((n, 1)), -y[:, None], model=spec,
                            params={"W": np.zeros((1, 1)), "b": np.zeros(1)}, lr=2.0**-10, dtypes=["float16"])
    for scale, verdict in ((1.0, "agree"), ((1 - U2_16) ** (n + 6), "agree"), (0.99 * by_hand / total, "disagree")):
        (rec,) = _loss_records(case, "float16", lambda loss, R, c, s=scale: torch.tensor(s * total).to(loss.dtype))
        assert rec.verdict == verdict, (scale, rec.message)
    # (the record's regime: torch's float16 does not flush on this CPU (harness.frameworks.subnormals), so its tau is
    # float16's half subnormal spacing 2**-25: the floor 2**-14 (8 m + 8) - 2**-25 (8 m + 8) = 2.0 higher)
    assert f"< floor {by_hand + (2.0**-14 - 2.0**-25) * (8 * n + 8):.6g} (" in rec.message, rec.message


def test_the_enclosure_radius_and_unknown_values_lower_the_floor() -> None:
    """:func:`model_loss_floor` on synthetic node values (float32, no flush: tau = 2**-150, nothing against these):
    R = 1 at 4 elements, E = 0: ``(1 - u2)^(2 + 4 + 4) sum max(1 - radius, 0)^2``; a NaN bound drops its term; an
    infinite radius (the residual or the loss not enclosed) gives no floor."""
    graph = build_plan(ModelSpec(kind="linear"), 4, 1, 1, "sum", Fraction(1, 8))
    r, c = loss_residual(graph)
    assert c == 1 and graph.nodes[graph.nodes[r].args[1]].attrs.get("name") == "y"  # R = F - y
    vals = [np.zeros(node.shape) for node in graph.nodes]
    vals[r] = np.ones((4, 1))
    vals[graph.outputs["loss"]] = np.array(4.0)
    Es = [np.zeros(node.shape) for node in graph.nodes]
    reg = Regime(FLOAT32, False)
    u2 = 2.0**-24 + 2.0**-53 * (1 + 2.0**-24)

    def floor(rad: Any, loss_rad: float = 0.0) -> float | None:
        f = model_loss_floor(graph, vals, Es, reg, None if rad is None else np.full((4, 1), rad), loss_rad)
        return None if f is None else f.value()

    assert floor(0.0) == pytest.approx((1 - u2) ** 10 * 4, rel=1e-12)
    # |R| - radius: 0.5 each (E taken up by 2**-30 against float64's roundings: (0.5 - 2**-31)^2, 2**-29 relative)
    assert floor(0.5) == pytest.approx((1 - u2) ** 10 * 4 * 0.25, rel=2e-9)
    assert floor(1.0) == 0.0 and floor(2.0) == 0.0
    assert floor(None) is None and floor(math.inf) is None and floor(0.0, math.inf) is None
    Es[r] = np.array([[np.nan], [np.inf], [0.0], [0.0]])
    assert floor(0.0) == pytest.approx((1 - u2) ** 10 * 2, rel=1e-12)  # the two unknown terms count 0


def test_the_residual_radius_is_never_below_the_balls_own() -> None:
    """:attr:`ModelTruth.residual_radius` of Arb balls: at least each ball's exact radius (``rad()``'s mantissa and
    exponent), inf for a ball that is not finite or whose radius is past float64's range."""
    from flint import arb

    from harness.models.oracle import _Ball, _node_radius

    balls = np.array([arb(1) / 3, arb(1, 2.0**-1200), arb(5, 2**2000), arb("nan"), arb(2), arb(0, 3.0)], dtype=object)
    got = _node_radius(balls, _Ball())
    assert math.isinf(got[2]) and math.isinf(got[3])
    for v, r in zip(balls, got, strict=True):
        if v.is_finite() and math.isfinite(r):
            m, e = (int(x) for x in v.rad().man_exp())
            assert Fraction(r) >= Fraction(m) * Fraction(2) ** e > 0 or m == 0
    assert got[5] >= 3.0 and got[1] > 0


# ---- correct evaluations: never below the floor ------------------------------------------------------------------


def _own_order(order: str) -> Any:
    """The loss summed by this test from the step's own residual (squares rounded to the dtype) in ``order``."""

    def loss_of(loss: torch.Tensor, R: torch.Tensor, c: float) -> torch.Tensor:
        dt = BF16 if R.dtype == torch.bfloat16 else {torch.float16: np.float16, torch.float32: np.float32}[R.dtype]
        r = R.float().numpy().astype(dt).ravel()
        return torch.tensor(float(np.asarray(_evaluate(r, order, dt, c), dtype=np.float64))).to(R.dtype)

    return loss_of


@pytest.mark.parametrize("order", ["serial", "pairwise", "float32", "reversed", "ascending", "descending", "kahan"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_correct_model_losses_agree(order: str, reduction: str) -> None:
    case = _case(RELU, 4096, "float16", reduction, steps=2)
    recs = _loss_records(case, "float16", _own_order(order))
    assert [r.verdict for r in recs] == ["agree", "agree"], [r.message for r in recs]


def test_correct_bfloat16_tanh_losses_agree() -> None:
    if BF16 is None:
        pytest.skip("bfloat16 needs ml_dtypes")
    for order in ("serial", "ascending", "float32"):
        (rec,) = _loss_records(_case(TANH, 512, "bfloat16", "mean"), "bfloat16", _own_order(order))
        assert rec.verdict == "agree", (order, rec.message)


@pytest.mark.parametrize("ftz", [False, True])
def test_tiny_residuals_whose_squares_underflow_agree(ftz: bool) -> None:
    """Residuals in [2**-9, 2**-8) (squares below 2**-16, float16 subnormals): kept, they agree; flushed (declared),
    the underflow allowance ``tau (8 m + 8)`` takes the floor to 0 (tau = 2**-14: 2**-14 (8 * 1024 + 8) > 1024 *
    2**-16), so a loss of 0 from flushed squares agrees too."""
    case = _case(RELU, 1024, "float16", tiny=True)
    flushed = [lambda loss, R, c: (R * R).sum() * 0] if ftz else []
    for loss_of in (_own_order("serial"), _own_order("ascending"), *flushed):
        (rec,) = _loss_records(case, "float16", loss_of, flush_to_zero=ftz)
        assert rec.verdict == "agree", rec.message


@st.composite
def _draws(draw: Any) -> tuple[Any, ...]:
    dtype = draw(st.sampled_from(["float16", "bfloat16"] if BF16 is not None else ["float16"]))
    spec = draw(st.sampled_from([RELU, TANH, POLY]))
    n = draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = 2.0 ** draw(st.integers(-8, 3))
    spread = draw(st.integers(0, 4))
    return spec, dtype, n, seed, scale, spread, draw(st.sampled_from(["serial", "pairwise", "float32", "ascending",
                                                                      "descending", "reversed"])), \
        draw(st.sampled_from(["sum", "mean"]))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_draws())
def test_no_correct_model_evaluation_is_below_the_floor(draw: tuple[Any, ...]) -> None:
    """The floor from the model path's own pieces (plan, truth, bounds with the truth's radii) against a correct
    float16 / bfloat16 forward (torch, in the dtype) and a correct sum of its squares in several orders."""
    spec, dtype, n, seed, scale, spread, order, reduction = draw
    fmt, tdt = (FLOAT16, torch.float16) if dtype == "float16" else (BFLOAT16, torch.bfloat16)
    rng = np.random.default_rng(seed)
    X = torch.tensor(rng.uniform(0.5, 1, (n, 1))).to(tdt)
    y = torch.tensor(-rng.uniform(1, 2, (n, 1)) * scale * 2.0 ** rng.integers(-spread, 1, (n, 1))).to(tdt)
    params = {p: torch.tensor(v).to(tdt) for p, v in _params(spec).items()}
    graph = build_plan(spec, n, 1, 1, reduction, Fraction(1, 1024))
    seen = {"X": X.double().numpy(), "y": y.double().numpy(), **{p: v.double().numpy() for p, v in params.items()}}
    truth = model_truth(graph, seen, fmt)
    bounds = model_bounds(graph, truth.node_values, fmt, residual_radius=truth.residual_radius,
                          loss_radius=float(truth.radius["loss"]))
    with torch.no_grad():
        R = functional_forward(spec, 1)(X, params) - y
    c = 1.0 if reduction == "sum" else 1.0 / n
    got = float(_own_order(order)(None, R, c))  # type: ignore[arg-type]
    assert bounds.loss_floor is not None
    floor = bounds.loss_floor.value()
    if math.isfinite(got) and got > 0:
        target(floor / got, label=f"floor / computed ({dtype})")
    assert not (math.isfinite(got) and got < floor), (got, floor, spec.describe(), dtype, n, order, reduction)


# ---- the optimizer steps: the linear path's floor applies (runner._grade_step) -------------------------------------


@pytest.mark.parametrize("optimizer, builtin", [({"name": "sgd", "momentum": 0.9}, "torch-optim-sgd"),
                                                ({"name": "adam"}, "torch-optim-adam")], ids=["sgd-momentum", "adam"])
def test_an_optimizer_steps_zero_loss_is_disagree(optimizer: dict[str, Any], builtin: str) -> None:
    load_builtins()
    base = REGISTRY[builtin].fn
    n = 4096
    rng = np.random.default_rng(3)
    case = make_case("floor-optim", rng.uniform(0.5, 1, (n, 1)).tolist(), rng.uniform(-2, -1, (n, 1)).tolist(), [[0.5]],
                     [0.25], lr="0.0009765625", steps=2, optimizer=optimizer, dtypes=["float16"], reduction="mean")

    def tampered(scale: float) -> Implementation:
        def step(*args: Any, **kw: Any) -> Any:
            return [r._replace(loss=r.loss * scale) for r in base(*args, **kw)]

        return Implementation(name=f"t173-{scale}", framework="torch", fn=step, optimizers=(optimizer["name"],))

    for scale, verdict in ((1.0, "agree"), (0.0, "disagree"), (1e-3, "disagree")):
        recs = harness.verify([case], [tampered(scale)], dtypes=["float16"])
        loss = [r for r in recs if r.quantity == "loss"]
        assert [r.verdict for r in loss] == [verdict, verdict], [r.message for r in loss]
        assert all(r.verdict == "agree" for r in recs if r.quantity != "loss")
        if verdict == "disagree":
            assert all(BELOW in r.message and r.bound_ratio < 1 for r in loss)


def test_repeat_a_later_model_run_below_the_floor_is_disagree() -> None:
    """``--repeat 2`` on the model path: the second call's loss is 0 (its gradients and parameters correct); the other
    runs are held to the floor as run 1 is (helper-173 found a second run's 0 agreed)."""
    from harness.runner import RunOptions

    calls: list[int] = []

    def loss_of(loss: Any, R: Any, c: float) -> Any:
        calls.append(1)
        return loss if len(calls) == 1 else loss * 0

    recs = harness.verify([_case(RELU, 4096, "float16")], [_impl("t173-repeat", loss_of)], dtypes=["float16"],
                          options=RunOptions(repeat=2))
    assert len(calls) == 2
    (rec,) = [r for r in recs if r.quantity == "loss"]
    assert rec.verdict == "disagree" and "run 2 of 2" in rec.message and "below its floor" in rec.message, rec.message
    assert all(r.verdict == "agree" for r in recs if r.quantity != "loss")
