"""Run-to-run determinism (``--repeat R``): the same implementation, R times, on the same inputs.

Each run gets fresh copies of the same inputs. Run 1 is graded as usual; the
records of every step and quantity then carry

- ``repeat_count``: R;
- ``repeat_identical``: the fraction of the R runs whose values are bitwise equal
  to run 1's (1.0: deterministic; 1/R: every other run differed);
- ``repeat_spread_abs``: the largest difference, over the elements, between the
  largest and the smallest value the runs computed (0.0 when all are equal;
  inf where the runs disagree about NaN or inf);
- ``repeat_spread_ulps``: the same in ULPs of the dtype.

A spread is graded too: at a step whose inputs (X, y and the previous W, b) are
the same in every run, every run is compared with the exact value and its
rigorous bound, element by element, as run 1 is, and below the quantity's lower
limit where it has one (the loss's floor, :class:`harness.bounds.LossFloor`). A run
above the rigorous bound, or below that limit, is impossible for a correct evaluation
(a spread beyond twice the rigorous bound always implies one), so the record becomes
``disagree`` with a message saying which run and by how much. Once the runs' W and b have drifted apart (a
multi-step run whose earlier steps differed) their later steps have different
exact values: the spread is still reported, not graded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .compare import bound_ratio_text
from .floats import FloatFormat, ulp_error
from .symbolic import QUANTITIES
from .verdicts import severity

F64 = npt.NDArray[np.float64]
#: one run's quantities, per step: ``outs[t - 1][q]``.
RunOutputs = Sequence[Mapping[str, F64]]


def _same(a: F64, b: F64) -> bool:
    return a.shape == b.shape and bool(np.array_equal(np.ascontiguousarray(a).view(np.uint64), np.ascontiguousarray(b).view(np.uint64)))


@dataclass
class Spread:
    """Determinism of one quantity at one step."""

    count: int
    identical: float
    spread_abs: float
    spread_ulps: float


def spread(values: Sequence[F64], fmt: FloatFormat) -> Spread:
    """How far ``values`` (one array per run) are apart."""
    first = values[0]
    same = sum(1 for v in values if _same(v, first))
    if same == len(values):
        return Spread(len(values), 1.0, 0.0, 0.0)
    stack = np.stack([np.asarray(v, dtype=np.float64) for v in values])
    finite = np.isfinite(stack)
    if not finite.all():
        # the runs agree about where the non-finite values are only if they are bitwise the same there
        nf = ~finite.all(axis=0)
        if not all(np.array_equal(stack[0][nf], s[nf], equal_nan=True) for s in stack[1:]):
            return Spread(len(values), same / len(values), float("inf"), float("inf"))
        stack = np.where(finite, stack, 0.0)
    lo, hi = stack.min(axis=0), stack.max(axis=0)
    dist = hi - lo
    ulps = ulp_error(hi, lo, None, fmt)
    return Spread(len(values), same / len(values), float(dist.max()) if dist.size else 0.0, float(ulps.max()) if ulps.size else 0.0)


def apply_repeat(
    records: list[Any], runs: Sequence[RunOutputs], fmt: FloatFormat,
    exact_of_step: Callable[[int], tuple[Mapping[str, tuple[F64, F64]], Mapping[str, F64],
                                         Mapping[str, Callable[[F64], float]]] | None],
    quantities: Sequence[str] = QUANTITIES, params: Sequence[str] = ("W", "b"),
) -> None:
    """Add the ``repeat_*`` fields to ``records`` (in place) and grade the other runs.

    Args:
        records: run 1's records (every step and quantity).
        runs: each run's outputs, run 1 first.
        fmt: the dtype.
        exact_of_step: ``exact_of_step(t)`` gives, for step t of run 1, the exact
            values as double-doubles ``{q: (hi, lo)}``, the per-element rigorous
            bounds ``{q: bound}`` and the lower limits ``{q: limit}`` of the quantities
            that have one (``limit(computed)``: :meth:`harness.bounds.LossFloor.lower_limit`;
            a finite value below it is ``disagree``), or None where step t was not graded.
        quantities: the quantities of a step (a model's: :meth:`harness.models.ModelSpec.quantities`).
        params: the parameters a step updates (a later step starts from them).
    """
    n_runs = len(runs)
    by_key = {(r.step, r.quantity): r for r in records if r.quantity != "*"}
    steps = min(len(o) for o in runs)
    same_inputs = True  # every run's step t starts from the same W and b as run 1's
    for t in range(1, steps + 1):
        stats = {q: spread([o[t - 1][q] for o in runs], fmt) for q in quantities}
        graded: Any = None
        if same_inputs and any(s.identical < 1.0 for s in stats.values()):
            graded = exact_of_step(t)
        for q in quantities:
            rec = by_key.get((t, q))
            if rec is None:
                continue
            s = stats[q]
            rec.repeat_count, rec.repeat_identical = s.count, s.identical
            rec.repeat_spread_abs, rec.repeat_spread_ulps = s.spread_abs, s.spread_ulps
            if graded is None or s.identical == 1.0:
                continue
            hilo, rigorous, lower = graded
            hi, lo = hilo[q]
            bound = rigorous[q]
            worst: tuple[float, int, tuple[int, ...], float] | None = None
            floor: tuple[int, tuple[int, ...], float, float] | None = None  # (run, index, value, its lower limit)
            for k, o in enumerate(runs[1:], start=2):
                v = o[t - 1][q]
                err = np.abs((v - hi) - lo)
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio = np.where(err == 0, 0.0, err / bound)
                ratio = np.where(np.isnan(ratio), np.inf, ratio)
                if ratio.size and ratio.max() > 1.0 and (worst is None or ratio.max() > worst[0]):
                    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(ratio)), ratio.shape))
                    worst = (float(ratio.max()), k, idx, float(err[idx]))
                if q in lower and floor is None:
                    limit = lower[q](v)
                    below = np.isfinite(v) & (v < limit)
                    if below.any():
                        idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(below)), below.shape))
                        floor = (k, idx, float(v[idx]), float(limit))
            if severity(rec.verdict) >= severity("disagree") or (worst is None and floor is None):
                continue
            if worst is not None:
                _, k, idx, err_w = worst
                rig_w = float(np.broadcast_to(bound, np.shape(hi))[idx]) if np.ndim(bound) else float(bound)
                what = (f"beyond the rigorous bound: run {k} of {n_runs} on the same inputs is off by {err_w:.6g} at "
                        f"{list(idx)} ({bound_ratio_text(err_w, rig_w)})")
            else:
                assert floor is not None
                k, idx, value, limit = floor
                what = (f"below its floor: run {k} of {n_runs} on the same inputs gives {value!r} at {list(idx)}, below "
                        f"the least value any correct evaluation gives ({limit:.6g}, harness.bounds.LossFloor)")
            rec.verdict = "disagree"
            note = (f"{q}: not deterministic {what}; the runs spread by {s.spread_abs:.6g} ({s.spread_ulps:.4g} ULPs), "
                    f"{s.identical:.0%} of them bitwise equal to run 1")
            rec.message = f"{note}; {rec.message}" if rec.message else note
        same_inputs = same_inputs and all(_same(o[t - 1][p], runs[0][t - 1][p]) for o in runs for p in params)
