"""The automatic bounds of :mod:`harness.models.bounds` against the hand-derived ones on the linear model.

On ``f(x) = x W + b`` the plan (:func:`harness.models.plan.build_plan` of :data:`harness.models.spec.LINEAR`)
is the linear path's step, for which :func:`harness.bounds.step_bounds` has bounds derived by hand.
:func:`ratio_table` measures, per dtype and quantity, the ratio ``auto / hand`` of the rigorous (and
expected) bounds element by element over generated cases (:func:`linear_cases`): its median and
maximum (and minimum: below 1 the automatic bound is the tighter). Both are rigorous bounds of the
same computation; they differ where the derivations count differently: the automatic walk bounds
the residual's error once per node (``gamma_D`` for the product, ``u`` per addition) where the hand
bound takes ``gamma_{D+2}`` over the whole residual; it counts the underflow of each operation of
the graph; and its expected bound is the simpler ``min(gamma_n, lambda sqrt(n) u)`` model.

``python -m harness.models.compare_linear`` prints the table (Markdown).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from ..bounds import StepBounds, step_bounds
from ..floats import FORMATS, FloatFormat, round_to_format
from .bounds import ModelBounds, model_bounds
from .graph import Graph
from .oracle import ModelTruth, model_truth
from .plan import build_plan
from .spec import LINEAR

F64 = npt.NDArray[np.float64]

#: Quantities of the linear step, in record order.
QUANTITIES = LINEAR.quantities(1, 1)


@dataclass(frozen=True)
class LinearCase:
    """One linear step: inputs ``X`` (N, D), ``y`` (N, K), ``W`` (D, K), ``b`` (K,) as floats of ``fmt``."""

    inputs: dict[str, F64]
    lr: float
    reduction: str
    fmt: FloatFormat


@dataclass(frozen=True)
class RatioRow:
    """``auto / hand`` over the elements of one quantity in one dtype (finite, positive hand bounds)."""

    dtype: str
    quantity: str
    kind: str  # "rigorous" or "expected"
    median: float
    max: float
    min: float
    elements: int


def linear_cases(seed: int, count: int, dtypes: Sequence[str] = ("float64", "float32", "float16", "bfloat16")) -> list[LinearCase]:
    """``count`` cases per dtype: N in 1..32, D in 1..8, K in 1..3, standard normal X and y,
    Glorot-scaled W, b ~ N(0, 1/4), lr 0.1 or 0.01, sum or mean, from ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for name in dtypes:
        fmt = FORMATS[name]
        for _ in range(count):
            n, d, k = int(rng.integers(1, 33)), int(rng.integers(1, 9)), int(rng.integers(1, 4))
            raw = {"X": rng.normal(0, 1, (n, d)), "y": rng.normal(0, 1, (n, k)),
                   "W": rng.normal(0, 1 / math.sqrt(d), (d, k)), "b": rng.normal(0, 0.5, (k,))}
            inputs = {q: round_to_format(v, fmt) for q, v in raw.items()}
            out.append(LinearCase(inputs, float(rng.choice([0.1, 0.01])), str(rng.choice(["sum", "mean"])), fmt))
    return out


def linear_graph(case: LinearCase) -> Graph:
    """The plan of the linear step of ``case``."""
    n, d = case.inputs["X"].shape
    k = case.inputs["y"].shape[1]
    return build_plan(LINEAR, n, d, k, case.reduction, Fraction(case.lr))


def residual_node(graph: Graph) -> int:
    """The node of ``R = F - y`` (the plan's ``sub`` of the input ``y`` in the loss)."""
    for node in graph.nodes:
        if node.op == "sub" and node.role == "loss":
            return node.id
    raise ValueError("the plan has no residual node")


def auto_and_hand(case: LinearCase) -> tuple[ModelBounds, StepBounds, ModelTruth, Graph]:
    """The automatic bounds, the hand-derived ones, the truth and the plan of one linear case."""
    graph = linear_graph(case)
    truth = model_truth(graph, case.inputs, case.fmt)
    auto = model_bounds(graph, truth.node_values, case.fmt)
    lr_fmt = float(round_to_format(np.array([case.lr]), case.fmt)[0])
    exact = {q: truth.hi[q] + truth.lo[q] for q in QUANTITIES}
    hand = step_bounds(case.inputs, truth.node_values[residual_node(graph)], exact, lr=lr_fmt,
                       reduction=case.reduction, fmt=case.fmt, lr_held=case.lr)
    return auto, hand, truth, graph


def ratio_table(cases: Sequence[LinearCase]) -> list[RatioRow]:
    """Per dtype, quantity and bound kind: median, max and min of ``auto / hand`` over all elements
    of all cases where both bounds are finite and the hand bound is positive."""
    acc: dict[tuple[str, str, str], list[F64]] = {}
    for case in cases:
        auto, hand, _, _ = auto_and_hand(case)
        for q in QUANTITIES:
            for kind, a, h in (("rigorous", auto.rigorous[q], hand.rigorous[q]), ("expected", auto.expected[q], hand.expected[q])):
                a, h = np.ravel(a), np.ravel(h)
                ok = np.isfinite(a) & np.isfinite(h) & (h > 0)
                acc.setdefault((case.fmt.name, q, kind), []).append(a[ok] / h[ok])
    rows = []
    for (dtype, q, kind), parts in acc.items():
        r = np.concatenate(parts)
        if r.size:
            rows.append(RatioRow(dtype, q, kind, float(np.median(r)), float(r.max()), float(r.min()), int(r.size)))
    return rows


def format_ratio_table(rows: Sequence[RatioRow], kind: str = "rigorous") -> str:
    """A Markdown table: one row per dtype, ``median / max (min)`` of ``auto / hand`` per quantity."""
    dtypes = list(dict.fromkeys(r.dtype for r in rows))
    by = {(r.dtype, r.quantity): r for r in rows if r.kind == kind}
    lines = [f"| dtype ({kind}: auto / hand, median / max (min)) | " + " | ".join(QUANTITIES) + " |",
             "|---|" + "---|" * len(QUANTITIES)]
    for dt in dtypes:
        cells = [f"{by[(dt, q)].median:.2f} / {by[(dt, q)].max:.2f} ({by[(dt, q)].min:.2f})" if (dt, q) in by else "-" for q in QUANTITIES]
        lines.append(f"| {dt} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:  # pragma: no cover - a report
    rows = ratio_table(linear_cases(seed=14, count=20))
    print(format_ratio_table(rows, "rigorous"))
    print()
    print(format_ratio_table(rows, "expected"))


if __name__ == "__main__":  # pragma: no cover
    main()
