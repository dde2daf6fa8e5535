"""Any model under the squared-error loss: description, derivation, exact truth, bounds, grading.

See :mod:`harness.models.spec` for the descriptions, :mod:`harness.models.graph` for the evaluation plan.
"""

from typing import Any

from .spec import ACTIVATIONS, KINDS, LINEAR, ModelSpec, model_rule_mismatch
from .step import ModelStepResult

__all__ = ["ACTIVATIONS", "KINDS", "LINEAR", "ModelSpec", "ModelStepResult", "model_rule_mismatch", "torch_forward_step"]


def __getattr__(name: str) -> Any:
    """``torch_forward_step`` (:mod:`harness.models.forward`) is imported on first use: it imports torch."""
    if name == "torch_forward_step":
        from .forward import torch_forward_step

        return torch_forward_step
    raise AttributeError(f"module 'harness.models' has no attribute {name!r}")
