"""Classify exceptions raised by an implementation into verdicts and plain-language messages.

Known autograd misuse gets its own explanation instead of a bare traceback:

- an in-place update of a leaf that requires grad, with grad mode on
  (``W -= lr * W.grad`` outside ``torch.no_grad()``);
- a parameter replaced by a new tensor (``W = W - lr * W.grad``): the new W is
  not a leaf, so ``W.grad`` is None on the next step;
- ``backward()`` called twice through the same graph.
"""

from __future__ import annotations

import re

#: (substring of the exception text, explanation) pairs, checked in order.
KNOWN_MISUSE: tuple[tuple[str, str], ...] = (
    ("a leaf Variable that requires grad is being used in an in-place operation",
     "autograd misuse: in-place update of a leaf tensor with grad mode on; do the update inside `with torch.no_grad():`"),
    ("unsupported operand type(s) for *: 'float' and 'NoneType'",
     "autograd misuse: .grad is None; the parameter was probably replaced by a new tensor (W = W - lr * W.grad makes W a non-leaf), or it was moved with .to(device) after requires_grad=True"),
    ("'NoneType' object has no attribute",
     "autograd misuse: .grad is None; the parameter is not a leaf that requires grad (replaced by a new tensor, or moved with .to(device) after requires_grad=True)"),
    ("Trying to backward through the graph a second time",
     "autograd misuse: backward() through a graph that was already freed (the forward pass must be recomputed each step)"),
    ("element 0 of tensors does not require grad",
     "autograd misuse: the loss does not depend on any tensor that requires grad (parameters lost requires_grad)"),
)


#: (substring of the exception text, explanation) pairs meaning the framework lacks a
#: kernel for this dtype/device pair: verdict ``unsupported``, not ``error``.
FRAMEWORK_LACKS: tuple[tuple[str, str], ...] = (
    ("`fused=True` requires all the params to be floating point Tensors of supported devices",
     "fused torch.optim kernels do not exist for this dtype/device pair"),
)

#: torch's kernel-missing error (``"addmm_impl_cpu_" not implemented for 'Half'``), and the scalar type it names.
TORCH_NO_KERNEL = re.compile(r"\" not implemented for '([^']*)'")
#: torch's names of the graded dtypes, as that error spells them.
TORCH_SCALAR_TYPES = {"float64": "Double", "float32": "Float", "float16": "Half", "bfloat16": "BFloat16"}


def classify_exception(exc: BaseException, dtype: str | None = None) -> tuple[str, str]:
    """Return ``(verdict, message)`` for an exception raised by an implementation graded in ``dtype``.

    The verdict is ``"unsupported"`` when the text says the framework lacks a
    kernel for the dtype/device pair (fused optimizers off their devices,
    ``"addmm_impl_cpu_" not implemented for 'Half'`` where ``dtype`` is float16, or
    ``dtype`` None), else ``"error"``: a missing kernel for another scalar type than
    the graded one (``'Long'`` in a float32 case) is the step's own cast, and
    was ``unsupported``, so a step that crashed so passed (helper-93); the
    message names known autograd misuse in plain words, otherwise the
    exception type and text.
    """
    text = f"{type(exc).__name__}: {exc}"
    for needle, explanation in FRAMEWORK_LACKS:
        if needle in text:
            return "unsupported", explanation
    lacks = TORCH_NO_KERNEL.search(text)
    if lacks is not None:
        named = lacks.group(1)
        if dtype is None or TORCH_SCALAR_TYPES.get(dtype) == named:
            return "unsupported", "the framework has no kernel for this dtype on this device"
        return "error", (f"the framework has no kernel for {named!r}, which is not the graded dtype {dtype} "
                         f"({TORCH_SCALAR_TYPES.get(dtype, dtype)!r}): the step computes in another type of its own")
    for needle, explanation in KNOWN_MISUSE:
        if needle in text:
            return "error", explanation
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        return "error", "out of memory: the case is too large for this device"
    return "error", f"the implementation raised {type(exc).__name__}"
