"""Grading an optimizer step: the state a step returns, and the records of its update.

For a case with an ``optimizer``, :func:`harness.runner.check_case` grades the loss and the gradients
of each step as for plain SGD (against the exact gradient at the implementation's own previous
parameters), and hands the update to :func:`grade_update`: ``W``, ``b`` and every state quantity
(``momentum_buffer_W``, ``exp_avg_b``, ...) against the truth of the rule applied to what the
implementation held -- its previous parameters and state and its own gradient of the step, the
inputs of ``optimizer.step()`` -- (:mod:`harness.optim.oracle`) with the bounds of
:mod:`harness.optim.bounds`. The drift of ``W`` and ``b`` from the exact trajectory (exact
gradients, exact updates from the initial inputs) is reported in their records, as for plain SGD.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from ..compare import FailingElements, bound_ratio_text, compare, drift, failing_elements
from ..floats import FloatFormat, decimal_string
from ..frameworks import to_float64
from ..records import Record
from ..shapes import same_up_to_size1
from ..verdicts import failing_verdicts
from .bounds import held_not_finite, intermediate_overflow, kept_parameter, sided_bound, update_bounds
from .config import PARAMS, OptimizerConfig
from .oracle import UpdateTruth, update_truth

F64 = npt.NDArray[np.float64]


def quantity_names(opt: OptimizerConfig) -> list[str]:
    """The graded quantities of an update, in record order: ``W``, ``b``, then the state per parameter."""
    return [*PARAMS, *(f"{k}_{p}" for p in PARAMS for k in opt.state_keys())]


def read_state(res: Any, opt: OptimizerConfig, shapes: Mapping[str, tuple[int, ...]], framework: str | None) -> tuple[dict[str, F64], str | None]:
    """The state of one step's result as float64 arrays ``{"<key>_<param>": array}``, or why it cannot be read.

    ``res.state`` must map ``"W"`` and ``"b"`` to mappings holding every key of
    :meth:`OptimizerConfig.state_keys` (extra keys such as torch.optim's ``step`` are ignored), each
    an array of the parameter's shape (size-1 axes aside; a transposed or flattened state is refused).
    Values may be of any floating dtype: a state kept narrower than the parameter is graded, not
    refused (that is a precision finding).
    """
    state = getattr(res, "state", None)
    keys = opt.state_keys()
    if not keys:
        return {}, None
    if not isinstance(state, Mapping):
        return {}, (f"the result has no state (got {type(state).__name__}): an optimizer step returns "
                    "harness.optim.OptimizerStepResult(loss, grad_W, grad_b, W, b, state={'W': {...}, 'b': {...}})")
    out: dict[str, F64] = {}
    for p in PARAMS:
        per = state.get(p)
        if not isinstance(per, Mapping):
            return {}, f"state[{p!r}] is missing or not a mapping (expected the keys {list(keys)})"
        for k in keys:
            if per.get(k) is None:
                return {}, f"state[{p!r}] has no {k!r} (expected the keys {list(keys)}, torch.optim's names)"
            try:
                arr = to_float64(per[k], framework)
            except Exception as exc:  # user objects: anything they raise is this implementation's error
                return {}, f"state[{p!r}][{k!r}] cannot be read as numbers: {type(exc).__name__}: {exc}"
            if not same_up_to_size1(tuple(arr.shape), shapes[p]):
                return {}, (f"state[{p!r}][{k!r}] has shape {tuple(arr.shape)}, expected {shapes[p]}, the shape of "
                            f"{p} (transposed or flattened?)")
            out[f"{k}_{p}"] = arr.reshape(shapes[p])
    return out, None


def split_state(flat: Mapping[str, F64], opt: OptimizerConfig) -> dict[str, dict[str, F64]]:
    """``{"exp_avg_W": a, ...}`` as ``{"W": {"exp_avg": a, ...}, "b": {...}}``."""
    return {p: {k: flat[f"{k}_{p}"] for k in opt.state_keys() if f"{k}_{p}" in flat} for p in PARAMS}


def _rational(value: Fraction) -> str | None:
    if value.numerator.bit_length() + value.denominator.bit_length() > 300:  # over 80 digits: str() could raise too
        return None
    s = f"{value.numerator}/{value.denominator}" if value.denominator != 1 else str(value.numerator)
    return s if len(s) <= 80 else None


def _message(q: str, cmp: Any, fmt: FloatFormat, no_exact_at_worst: bool = False) -> str:
    if cmp.verdict == "agree":
        return ""
    bad = cmp.counts.get(cmp.verdict, 0)
    what = {"disagree": "above the rigorous error bound of the update", "suspect": "above the expected bound of the update "
            "but within the rigorous one", "overflow": f"out of {fmt.name}'s range"}.get(cmp.verdict, cmp.verdict)
    rig = cmp.rigorous_at_worst
    if no_exact_at_worst:  # (no finite value is correct there: only the infinities or NaN the rule gives)
        what = ("not finite, as the rule applied to what the step held gives it" if cmp.verdict == "overflow" else
                "not what the rule applied to what the step held gives (no finite value is correct there)")
    elif cmp.verdict == "overflow" and not np.isfinite(rig):
        what = "not finite where the rigorous bound is vacuous (no correct value, inf or NaN included, is excluded there)"
    ratio = bound_ratio_text(cmp.abs_error_at_worst, rig)
    return (f"{q}: {bad} of {cmp.size} element(s) {what}; worst at {list(cmp.worst_index)}: error {cmp.abs_error_at_worst:.6g} "
            f"({ratio}), {cmp.ulp_error_at_worst:.4g} ULPs")


def grade_update(opt: OptimizerConfig, base: Mapping[str, Any], t: int, out: Mapping[str, F64], prev_params: Mapping[str, F64],
                 prev_state: Mapping[str, Mapping[str, F64]], lr: float, fmt: FloatFormat, flush_to_zero: bool,
                 traj: UpdateTruth | None, kept: dict[int, FailingElements] | None = None) -> list[Record]:
    """The records of the update of step ``t``: one per quantity of :func:`quantity_names`.

    Args:
        base: the fields every record of this run carries (case, implementation, device, ...).
        out: the step's results as float64 arrays: ``grad_W``, ``grad_b``, ``W``, ``b`` and the state.
        prev_params, prev_state: what the implementation held before the step (its own).
        lr: the learning rate handed to it; traj: the exact trajectory's step ``t`` (drift), or None.
        kept: filled, by ``id`` of each failing record, with :func:`harness.compare.failing_elements` (on the record's
            parameter, against its values before the step).
    """
    params = {p: np.asarray(prev_params[p], dtype=np.float64) for p in PARAMS}
    prev_state_in = prev_state
    grads = {p: out[f"grad_{p}"] for p in PARAMS}
    shapes = {p: np.shape(g) for p, g in grads.items()}
    # the rule applied to an infinite or NaN gradient element has no exact value (the gradient's own records grade
    # it); every rule here is element-wise, so the other elements are graded: a step that skipped the whole update
    # agreed where one element of its gradient overflowed (helper-60). There, and where the parameter is inf or NaN
    # (its output column overflowed at an earlier step), a correct step gives inf or NaN only ("inf_only"). Where a
    # state the step held is inf or NaN, what the rule gives in IEEE arithmetic (held_not_finite: Adam's exp_avg_sq
    # beyond float16 leaves W where it was, helper-63; those elements were not graded at all, and a step that wrote
    # -1234 into exp_avg there agreed, helper-69)
    inf_only = {p: ~np.isfinite(g) | ~np.isfinite(np.reshape(params[p], np.shape(g))) for p, g in grads.items()}
    if all(bool(m.all()) for m in inf_only.values()):
        return [Record(quantity="*", step=t, verdict="overflow", message=f"the gradient of step {t}, or the parameter the "
                       "step held, is not finite (see its records): the optimizer update of this step is not graded", **base)]
    held = held_not_finite(opt, prev_state, grads, lr, fmt, flush_to_zero)
    grads = {p: np.where(inf_only[p], 0.0, g) if inf_only[p].any() else g for p, g in grads.items()}
    params = {p: np.where(np.reshape(inf_only[p], np.shape(v)), 0.0, v) if inf_only[p].any() else v for p, v in params.items()}
    with np.errstate(invalid="ignore"):
        prev_state = {p: {k: _finite_or_zero(a, inf_only[p]) for k, a in per.items()} for p, per in prev_state.items()}
    truth = update_truth(opt, params, grads, prev_state, t, Fraction(lr), fmt)
    rigorous, expected = update_bounds(opt, params, grads, prev_state, t, lr, fmt, flush_to_zero)
    with np.errstate(over="ignore", invalid="ignore"):
        new_state = {q: truth.values[q].to_hi_lo()[0] for q in quantity_names(opt) if q not in PARAMS}
    spills = intermediate_overflow(opt, params, grads, prev_state, new_state, t, lr, fmt, returned=out,
                                   flush_to_zero=flush_to_zero, bounds=rigorous)
    kept_values = kept_parameter(opt, params, lr, fmt, flush_to_zero)
    records = []
    for q in quantity_names(opt):
        exact = truth.values[q]
        hi, lo = exact.to_hi_lo()
        # (Adam's parameter: the bound on the side of the exact value each element lies, where a correct update's
        # direction is certain, :func:`harness.optim.bounds.sided_bound`)
        rig, exp = (sided_bound(b, q, out[q], hi, lo) for b in (rigorous, expected))
        rule_vacuous = ~np.isfinite(rig)  # (the rule's own: eps below the dtype's resolution; named below as such)
        p = q if q in PARAMS else q.rsplit("_", 1)[1]
        skip = inf_only[p]
        sp, hd = spills[p], held[p]
        if q in PARAMS:
            impossible = skip | hd.param_impossible
            # (where the held state is not finite, this step's own overflows, found with it taken as 0, give no sign of
            # their own; against the held state's infinity, one of the other sign gives inf - inf: NaN)
            pos_ok = (sp.param_pos & ~hd.param_impossible) | hd.param_pos
            neg_ok = (sp.param_neg & ~hd.param_impossible) | hd.param_neg
            nan_ok = skip | sp.param_nan | hd.param_nan | (hd.param_pos & sp.param_neg) | (hd.param_neg & sp.param_pos)
            kept_ok = (sp.param_kept | hd.param_kept) & ~impossible
            no_exact = hd.param_no_exact & ~impossible
        else:
            k = q[: -len(p) - 1]
            impossible = skip | hd.state_impossible[k]
            pos_ok = (sp.state_pos[k] & ~hd.state_impossible[k]) | hd.state_pos[k]
            neg_ok = (sp.state_neg[k] & ~hd.state_impossible[k]) | hd.state_neg[k]
            nan_ok = (skip | sp.state_nan[k] | hd.state_nan[k] | (hd.state_pos[k] & sp.state_neg[k])
                      | (hd.state_neg[k] & sp.state_pos[k]))
            kept_ok = no_exact = hd.state_kept[k]  # (fused amsgrad's maximum: the held value itself, exactly)
            impossible = impossible & ~kept_ok
        inf_ok = skip | pos_ok | neg_ok
        kept_used = np.zeros(np.shape(skip), dtype=bool)
        if kept_ok.any():  # graded against the parameter kept where it is nearer (in bounds), or the only outcome
            zero = np.zeros(np.shape(skip))
            kv, kr, ke = kept_values[p] if q in PARAMS else (
                np.reshape(np.asarray(prev_state_in.get(p, {}).get(k, zero), dtype=np.float64), np.shape(skip)), zero, zero)
            kept_used = kept_ok & (no_exact | (_bound_distance(out[q], kv, kr) < _bound_distance(out[q], hi, rig)))
            hi, lo = np.where(kept_used, kv, hi), np.where(kept_used, 0.0, lo)
            rig, exp = np.where(kept_used, kr, rig), np.where(kept_used, ke, exp)
        if impossible.any():  # no exact value there: the rule applied to inf or NaN gives inf or NaN, never a finite value
            rig, exp = np.where(impossible, np.inf, rig), np.where(impossible, np.inf, exp)
            hi, lo = np.where(impossible, np.nan, hi), np.where(impossible, 0.0, lo)  # (no exact value: matches nothing)
        vacuous = ~np.isfinite(rig) & ~impossible  # (where nothing finite is correct, the outcomes say what is)
        # an infinity: of the exact value's sign where it (within its bound) may lie beyond the range; of the sign an
        # overflowing intermediate gives (Outcomes); either where the step's gradient or parameter is not finite
        with np.errstate(all="ignore"):
            reach = np.where(vacuous | impossible, 0.0, rig)
            pos = vacuous | skip | pos_ok | (~impossible & (hi + reach > fmt.max_finite))
            neg = vacuous | skip | neg_ok | (~impossible & (hi - reach < -fmt.max_finite))
        if q not in PARAMS and q.startswith(("exp_avg_sq_", "max_exp_avg_sq_")):
            neg = np.zeros_like(neg)  # (a second moment's terms are all >= 0)
        cmp = compare(out[q], hi, lo, rig, exp, pos | neg, fmt, nan_allowed=vacuous | nan_ok, posinf_allowed=pos,
                      neginf_allowed=neg, finite_impossible=impossible if impossible.any() else None)
        idx = cmp.worst_index
        ef = exact.fraction_at(idx)
        msg = _message(q, cmp, fmt, bool(impossible[idx]))
        graded_rule = ~impossible & ~inf_ok & ~kept_used
        if bool((rule_vacuous & graded_rule).any()):
            note = (f"{q}: the rigorous bound is vacuous at {int((rule_vacuous & graded_rule).sum())} element(s) (eps or a hyper-parameter "
                    f"below {fmt.name}'s resolution where the second moment is near 0: no correct value is excluded)")
            msg = f"{msg}; {note}" if msg else note
        if bool(skip.any()):
            note = (f"{q}: at {int(skip.sum())} of {skip.size} element(s) the step's gradient, or the parameter it held, "
                    "is not finite: the rule applied to inf or NaN has no exact value, and only inf or NaN is accepted "
                    "there (a finite value is disagree)")
            msg = f"{msg}; {note}" if msg else note
        held_bad = _held_bad(prev_state_in, p, shapes[p]) & ~skip
        if bool(held_bad.any()):
            note = (f"{q}: at {int(held_bad.sum())} of {skip.size} element(s) a state the step held is inf or NaN: graded "
                    "as the rule gives it in IEEE arithmetic (an infinite second moment leaves the parameter where it was, "
                    "or only decayed; an infinite first moment or momentum buffer leaves it inf or NaN)")
            msg = f"{msg}; {note}" if msg else note
        sp_inf = (sp.param_pos | sp.param_neg | sp.param_nan) if q in PARAMS else (
            sp.state_pos[q[: -len(p) - 1]] | sp.state_neg[q[: -len(p) - 1]] | sp.state_nan[q[: -len(p) - 1]])
        spilled = (sp_inf | sp.param_kept if q in PARAMS else sp_inf) & ~skip & ~held_bad
        if bool(spilled.any()):
            accepted = ("its exact value, " + ("inf (of the sign it gives) or NaN" if bool((sp_inf & spilled).any()) else "")
                        + (" or " if bool((sp_inf & spilled).any()) and bool((sp.param_kept & spilled).any()) else "")
                        + ("the parameter left where it was (or only decayed)" if bool((sp.param_kept & spilled).any()) else "")
                        if q in PARAMS else "its exact value, or inf (of the sign it gives) or NaN")
            note = (f"{q}: at {int(spilled.sum())} of {spilled.size} element(s) an intermediate of a correct evaluation may "
                    f"overflow {fmt.name} (a moment, lerp's g - m, the momentum term, the step size, AdamW's decay, lr "
                    f"times the update): {accepted} accepted there")
            msg = f"{msg}; {note}" if msg else note
        if bool(kept_used.any()):
            note = (f"{q}: {int(kept_used.sum())} element(s) graded against the parameter left where it was (or only "
                    "decayed), as a correct step whose second moment is inf leaves it")
            msg = f"{msg}; {note}" if msg else note
        if q in truth.straddles:
            note = (f"{q}: the exact value's enclosure straddles a rounding boundary of {fmt.name} at "
                    f"{[list(i) for i in truth.straddles[q][:3]]}: its correctly rounded value is not decided")
            msg = f"{msg}; {note}" if msg else note
        rec = Record(
            quantity=q, step=t, verdict=cmp.verdict, shape=list(out[q].shape),
            max_abs_error=cmp.max_abs_error, max_ulp_error=cmp.max_ulp_error, bits_of_error=cmp.bits_of_error,
            bound_ratio=cmp.bound_ratio if np.isfinite(cmp.rigorous_at_worst) or cmp.max_abs_error == 0 else None,
            expected_ratio=cmp.expected_ratio, worst_index=list(idx),
            exact=decimal_string(ef), exact_rational=_rational(ef), computed=repr(float(out[q][idx])),
            rigorous_bound=cmp.rigorous_at_worst, expected_bound=cmp.expected_at_worst,
            abs_error_at_worst=cmp.abs_error_at_worst, ulp_error_at_worst=cmp.ulp_error_at_worst,
            counts=cmp.counts, oracle_method=truth.method, message=msg, **base,
        )
        if traj is not None and q in PARAMS:
            gone = drift(out[q], *traj.values[q].to_hi_lo(), fmt)
            rec.drift_abs_error, rec.drift_ulp_error = gone.abs_error, gone.ulp_error
            rec.trajectory_exact = decimal_string(traj.values[q].fraction_at(idx))
        if kept is not None and cmp.verdict in failing_verdicts(strict=True):
            # (a state's failing elements are read on its parameter: did the step leave it where it was there?)
            kept[id(rec)] = failing_elements(cmp, out[p], np.asarray(prev_params[p], dtype=np.float64))
        records.append(rec)
    return records


def _finite_or_zero(a: F64, skip: npt.NDArray[np.bool_]) -> F64:
    """``a`` with 0 where it, or the gradient or parameter (``skip``), is not finite: inputs the exact rule can take
    (the outcomes there are :func:`harness.optim.bounds.held_not_finite`'s)."""
    a = np.asarray(a, dtype=np.float64)
    gone = ~np.isfinite(a) | np.reshape(skip, a.shape)
    return np.where(gone, 0.0, a) if gone.any() else a


def _held_bad(state: Mapping[str, Mapping[str, F64]], p: str, shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """Where a state of parameter ``p`` the step held is not finite."""
    bad = np.zeros(shape, dtype=bool)
    for a in state.get(p, {}).values():
        bad |= ~np.isfinite(np.reshape(np.asarray(a, dtype=np.float64), shape))
    return bad


def _bound_distance(computed: F64, ref: F64, bound: F64) -> F64:
    """``|computed - ref| / bound`` per element (0 where they are equal, inf where they differ and the bound is 0;
    NaN for a NaN ``computed``): how far, in bounds, a result lies from a reference."""
    with np.errstate(all="ignore"):
        diff = np.abs(np.asarray(computed, dtype=np.float64) - ref)
        return np.where(diff == 0, 0.0, diff / bound)


def finite_state(state: Mapping[str, Mapping[str, F64]]) -> bool:
    """Whether every state array is finite (a later step cannot be graded exactly otherwise)."""
    return all(bool(np.isfinite(a).all()) for per in state.values() for a in per.values())

