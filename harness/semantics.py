"""Autograd-semantics diagnoses: name the misuse behind a wrong step.

A numeric mismatch says *that* a step is wrong; these checks say *why*, when
the wrong numbers have the signature of a known autograd mistake. They only
rewrite the message of a record (the verdict stays what the error bounds
decided), so a diagnosis can never hide a failure or invent one.

- **Gradient accumulation** (``.grad`` never reset) and a **skipped update**
  (W unchanged where the exact update moves it) are named among the other
  hypotheses about failing records, in :mod:`harness.diagnose`.
- **Parameter replaced by a new tensor** (``W = W - lr * W.grad``): the new W is
  not a leaf, its ``.grad`` is None on the next step; the implementation
  either raises (classified in :mod:`harness.classify`, verdict ``error``) or
  returns None, which :func:`none_message` explains (verdict ``error``).
- **In-place update with grad mode on**: PyTorch raises; classified in
  :mod:`harness.classify` (verdict ``error``).
- **An update below the dtype's resolution** (bfloat16 ``W = 1.0``,
  ``lr * grad = 0.001``, below half an ULP of W): W unchanged *is* the correctly
  rounded answer. The verdict is whatever the bounds say (``agree``), and the
  record's message notes it (:func:`annotate`), so nobody mistakes it for a
  skipped step.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from .floats import FloatFormat, decimal_string, round_fraction

F64 = npt.NDArray[np.float64]

def _fmt(x: float) -> str:
    return f"{x:.6g}"


def none_message(quantity: str, step: int) -> str:
    """The message for a step that returned None for a gradient (``.grad`` is None)."""
    return (f"autograd misuse: {quantity} is None at step {step}: .grad is None because the parameter is no longer a leaf "
            "tensor that requires grad (replaced by a new tensor, e.g. W = W - lr * W.grad, or moved with .to(device) after "
            "requires_grad=True); update it in place under torch.no_grad()")


def update_note(
    quantity: str, computed: F64, previous: F64, exact: Any, fmt: FloatFormat, verdict: str,
    exact_hi: F64 | None = None,
) -> str | None:
    """A note on a W or b record whose value did not move.

    Args:
        quantity: ``"W"`` or ``"b"``.
        computed: the updated value the implementation returned (float64).
        previous: its value before the step (float64, same shape).
        exact: the exact :class:`harness.exact.ScaledInts` value after the update.
        fmt: the dtype.
        verdict: the record's verdict.
        exact_hi: ``exact`` rounded to float64 (the high part of its ``to_hi_lo``), when at hand: an element
            where it is finite and differs from the old value moved (an exact value equal to a float rounds to
            it), with no exact value read.

    Returns:
        for an ``agree`` record with unchanged elements whose exact update rounds
        back to the old value: a note that the update is below the dtype's
        resolution (correctly rounded, not a skipped step); otherwise None (a
        skipped update is named in :mod:`harness.diagnose`).
    """
    c = np.asarray(computed, dtype=np.float64)
    p = np.asarray(previous, dtype=np.float64).reshape(c.shape)
    same = c == p
    if not same.any():
        return None
    if verdict != "agree":
        return None
    if exact_hi is None:
        surely = [False] * int(np.count_nonzero(same))
    else:  # (an infinite one, beyond float64 or standing for a lost column, is not read: the exact value decides)
        hi = np.asarray(exact_hi, dtype=np.float64).reshape(c.shape)
        surely = ((hi != p) & np.isfinite(hi))[same].tolist()
    moved = 0
    first: tuple[tuple[int, ...], Fraction] | None = None  # the first element that moved (C order)
    for idx, known in zip(zip(*(i.tolist() for i in np.nonzero(same)), strict=True), surely, strict=True):
        if known:
            moved += 1
            if first is None:
                first = (idx, exact.fraction_at(idx))
            continue
        ef = exact.fraction_at(idx)
        # ef != Fraction(p[idx]): both in lowest terms with a positive denominator (no Fraction built per element)
        if (ef.numerator, ef.denominator) != float(p[idx]).as_integer_ratio():
            moved += 1
            if first is None:
                first = (idx, ef)
    if first is None:
        return None
    idx, ef = first
    if round_fraction(ef, fmt) != Fraction(float(p[idx])):
        return None
    change = ef - Fraction(float(p[idx]))
    return (f"update below the resolution of {fmt.name}: {moved} element(s) of {quantity} did not move; at {list(idx)} "
            f"the exact change {decimal_string(change, 6)} is under half an ULP of {_fmt(float(p[idx]))}, so the unchanged "
            f"value is the correctly rounded result, not a skipped step")


def annotate(records: list[Any], out: Mapping[str, F64], exact_values: Mapping[str, Any], step_inputs: Mapping[str, F64],
             fmt: FloatFormat, exact_hi: Mapping[str, F64] | None = None) -> None:
    """Note, in the messages of one step's ``agree`` W and b records, elements left unchanged because
    the exact update is below the dtype's resolution (in place; see :func:`update_note`).

    Args:
        records: the step's records (one per quantity).
        out: the implementation's quantities at this step (float64).
        exact_values: the exact quantities (``ScaledInts``).
        step_inputs: the inputs of this step (``W`` and ``b`` before the update).
        fmt: the dtype.
        exact_hi: the exact quantities rounded to float64, when at hand (:func:`update_note`).
    """
    for rec in records:
        if rec.quantity not in ("W", "b") or rec.verdict != "agree":
            continue
        q = rec.quantity
        note = update_note(q, out[q], step_inputs[q], exact_values[q], fmt, rec.verdict,
                           None if exact_hi is None else exact_hi[q])
        if note:
            rec.message = f"{note}; {rec.message}" if rec.message else note
