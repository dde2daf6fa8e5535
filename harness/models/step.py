"""The contract of a model implementation: what a step function takes and returns.

An implementation registered with ``models=(...)`` (see :func:`harness.models.spec.model_rule_mismatch`)
is called, for a case with a ``model``, as::

    fn(X, y, params, *, model, lr, reduction, steps) -> sequence of ModelStepResult (one per step)

``X`` (N, D) and ``y`` (N, K) are arrays or tensors of the framework in the case's dtype, on the
case's device; ``params`` a dict ``{name: array}`` in :meth:`ModelSpec.parameter_names` order
(``W1`` (D, H1), ``b1`` (H1,), ...), fresh copies for this call that the step must not write into
(clone them first: a step that updates them in place gets an ``error`` record naming the mutated
inputs, as on the linear path, :mod:`harness.isolation`); ``model`` the
:class:`harness.models.spec.ModelSpec`; ``lr`` a Python float; ``reduction`` ``"sum"`` or ``"mean"``;
``steps`` the number of plain SGD steps, each ``p <- p - lr dL/dp`` with ``L`` the squared-error
loss of :mod:`harness.models.spec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class ModelStepResult:
    """One step of a model implementation.

    Attributes:
        loss: the loss before the update (scalar).
        grads: ``{name: dL/dparam}``, each of the parameter's shape, for every parameter.
        params: ``{name: parameter after the update}``, every parameter.
    """

    loss: Any
    grads: Mapping[str, Any]
    params: Mapping[str, Any]
