"""Any model under the squared-error loss: description, derivation, exact truth, bounds, grading.

See :mod:`harness.models.spec` for the descriptions, :mod:`harness.models.graph` for the evaluation plan.
"""

from .spec import ACTIVATIONS, KINDS, LINEAR, ModelSpec, model_rule_mismatch

__all__ = ["ACTIVATIONS", "KINDS", "LINEAR", "ModelSpec", "model_rule_mismatch"]
