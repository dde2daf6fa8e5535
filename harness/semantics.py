"""Autograd-semantics diagnoses: name the misuse behind a wrong step.

A numeric mismatch says *that* a step is wrong; these checks say *why*, when
the wrong numbers have the signature of a known autograd mistake. They only
rewrite the message of a record (the verdict stays what the error bounds
decided), so a diagnosis can never hide a failure or invent one.

- **Gradient accumulation** (``.grad`` never reset): PyTorch *adds* each
  backward pass into ``.grad``. If step t's computed gradient ``G_t`` equals the
  exact gradient at step t plus the gradient the implementation reported at
  step t-1 (itself accumulated), ``G_t = g_t + G_{t-1}``, within the rigorous
  bound of ``g_t`` plus one rounding of the addition, the record says so
  (verdict ``disagree``). If ``G_t = m g_t`` for an integer ``m >= 2``,
  ``backward()`` ran m times into the same ``.grad`` within one step.
- **Parameter replaced by a new tensor** (``W = W - lr * W.grad``): the new W is
  not a leaf, its ``.grad`` is None on the next step; the implementation
  either raises (classified in :mod:`harness.classify`, verdict ``error``) or
  returns None, which :func:`none_message` explains (verdict ``error``).
- **In-place update with grad mode on**: PyTorch raises; classified in
  :mod:`harness.classify` (verdict ``error``).
- **An update below the dtype's resolution** (bfloat16 ``W = 1.0``,
  ``lr * grad = 0.001``, below half an ULP of W): W unchanged *is* the correctly
  rounded answer. The verdict is whatever the bounds say (``agree``), and the
  record's message notes it, so nobody mistakes it for a skipped step. A W left
  unchanged where the exact update does move it (``disagree``) is named a
  skipped update.

Examples (issue 5, X = [1, 2, 3, 4], y = 2X, w = 0, no bias, mean reduction,
lr = 0.01): the exact gradient is -30 and w becomes 0.3; with ``.grad`` never
reset the second step's gradient is -55.5 = -25.5 + (-30), where -25.5 is the
exact gradient at w = 0.3: :func:`accumulation_diagnosis` returns the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from .floats import FloatFormat, decimal_string, round_fraction

F64 = npt.NDArray[np.float64]

#: Largest number of backward passes into one ``.grad`` that :func:`accumulation_diagnosis` tries.
MAX_MULTIPLE = 8

RESET_ADVICE = "reset it after each update (optimizer.zero_grad(), or W.grad = None)"


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def accumulation_diagnosis(
    quantity: str, step: int, computed: npt.ArrayLike, exact: npt.ArrayLike, previous: npt.ArrayLike | None,
    rigorous: npt.ArrayLike, fmt: FloatFormat,
) -> str | None:
    """Whether a wrong gradient is the signature of ``.grad`` accumulating.

    Args:
        quantity: ``"grad_W"`` or ``"grad_b"`` (for the message).
        step: the step number (1-based).
        computed: the implementation's gradient at this step, float64 array.
        exact: the exact gradient at the implementation's own parameters, float64
            (same shape).
        previous: the gradient it reported at the previous step (None at step 1).
        rigorous: per-element rigorous error bound of a correct gradient (same shape).
        fmt: the dtype computed in (its unit roundoff bounds the accumulation's addition).

    Returns:
        a message naming the accumulation, or None when the numbers do not have
        its signature (the caller keeps the plain mismatch message). Never
        claims a match where the exact gradient alone already fits.
    """
    c = np.asarray(computed, dtype=np.float64)
    e = np.asarray(exact, dtype=np.float64)
    rig = np.asarray(rigorous, dtype=np.float64)
    u, eta = fmt.unit_roundoff, fmt.underflow_quantum
    with np.errstate(invalid="ignore", over="ignore"):
        if not np.all(np.isfinite(c)) or np.all(np.abs(c - e) <= rig):
            return None
        if previous is not None:
            p = np.asarray(previous, dtype=np.float64).reshape(c.shape)
            tol = rig + u * np.abs(c) + eta
            if np.all(np.abs(c - (e + p)) <= tol):
                i = np.unravel_index(int(np.argmax(np.abs(c - e))), c.shape) if c.ndim else ()
                return (f"gradient accumulation: .grad was not reset between steps: {quantity} at step {step} is "
                        f"{_fmt(float(c[i]))} = {_fmt(float(e[i]))} (the exact gradient at this step's parameters) + "
                        f"{_fmt(float(p[i]))} (the gradient of step {step - 1}), within the error bound; {RESET_ADVICE}")
        nz = np.abs(e) > rig
        if np.any(nz):
            for m in range(2, MAX_MULTIPLE + 1):
                if np.all(np.abs(c - m * e) <= m * (rig + u * np.abs(c)) + eta):
                    return (f"gradient accumulation: {quantity} at step {step} is {m} x the exact gradient: backward() ran "
                            f"{m} times into the same .grad within one step (or the loss was counted {m} times); {RESET_ADVICE}")
    return None


def none_message(quantity: str, step: int) -> str:
    """The message for a step that returned None for a gradient (``.grad`` is None)."""
    return (f"autograd misuse: {quantity} is None at step {step}: .grad is None because the parameter is no longer a leaf "
            "tensor that requires grad (replaced by a new tensor, e.g. W = W - lr * W.grad, or moved with .to(device) after "
            "requires_grad=True); update it in place under torch.no_grad()")


def update_note(
    quantity: str, computed: F64, previous: F64, exact: Any, fmt: FloatFormat, verdict: str,
) -> str | None:
    """A note on a W or b record whose value did not move.

    Args:
        quantity: ``"W"`` or ``"b"``.
        computed: the updated value the implementation returned (float64).
        previous: its value before the step (float64, same shape).
        exact: the exact :class:`harness.exact.ScaledInts` value after the update.
        fmt: the dtype.
        verdict: the record's verdict.

    Returns:
        for an ``agree`` record with unchanged elements whose exact update rounds
        back to the old value: a note that the update is below the dtype's
        resolution (correctly rounded, not a skipped step); for a ``disagree``
        record where no element moved but the exact update does: a message
        naming a skipped update; otherwise None.
    """
    c = np.asarray(computed, dtype=np.float64)
    p = np.asarray(previous, dtype=np.float64).reshape(c.shape)
    same = c == p
    if not same.any():
        return None
    moved: list[tuple[tuple[int, ...], Fraction]] = []
    for idx in zip(*np.nonzero(same), strict=True):
        ef = exact.fraction_at(tuple(int(i) for i in idx))
        if ef != Fraction(float(p[idx])):
            moved.append((tuple(int(i) for i in idx), ef))
    if not moved:
        return None
    if verdict == "agree":
        idx, ef = moved[0]
        if round_fraction(ef, fmt) != Fraction(float(p[idx])):
            return None
        change = ef - Fraction(float(p[idx]))
        return (f"update below the resolution of {fmt.name}: {len(moved)} element(s) of {quantity} did not move; at {list(idx)} "
                f"the exact change {decimal_string(change, 6)} is under half an ULP of {_fmt(float(p[idx]))}, so the unchanged "
                f"value is the correctly rounded result, not a skipped step")
    if verdict == "disagree" and bool(same.all()) and len(moved) == c.size:
        return (f"skipped update: {quantity} is unchanged by the step although the exact update moves it "
                f"(the update was not applied: missing optimizer.step(), or it updated a copy)")
    return None


def annotate(
    records: list[Any], step: int, out: Mapping[str, F64], exact_hi: Mapping[str, F64], exact_values: Mapping[str, Any],
    rigorous: Mapping[str, F64], previous_out: Mapping[str, F64] | None, step_inputs: Mapping[str, F64], fmt: FloatFormat,
) -> None:
    """Rewrite the messages of one step's records where a diagnosis applies (in place).

    Args:
        records: the step's records (one per quantity).
        step: the step number.
        out: the implementation's quantities at this step (float64).
        exact_hi: the exact quantities rounded to float64.
        exact_values: the exact quantities (``ScaledInts``).
        rigorous: per-element rigorous bounds.
        previous_out: the implementation's quantities at the previous step (None at step 1).
        step_inputs: the inputs of this step (``W`` and ``b`` before the update).
        fmt: the dtype.
    """
    by_q = {r.quantity: r for r in records}
    for g, p in (("grad_W", "W"), ("grad_b", "b")):
        rec = by_q.get(g)
        if rec is None or rec.verdict != "disagree":
            continue
        prev = previous_out[g] if previous_out is not None else None
        msg = accumulation_diagnosis(g, step, out[g], exact_hi[g], prev, rigorous[g], fmt)
        if msg:
            rec.message = msg
            prec = by_q.get(p)
            if prec is not None and prec.verdict == "disagree":
                prec.message = f"{p}: the update used the accumulated {g} ({msg.split(': ', 1)[0]}); " + prec.message
    for p in ("W", "b"):
        rec = by_q.get(p)
        if rec is None:
            continue
        note = update_note(p, out[p], step_inputs[p], exact_values[p], fmt, rec.verdict)
        if note and note.startswith("skipped update") and rec.message.startswith("flush-to-zero: "):
            note = None  # a flushed gradient or learning rate explains the unchanged value
        if note:
            rec.message = f"{note}; {rec.message}" if rec.message else note
