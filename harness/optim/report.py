"""The optimizer rules in the HTML report's derivation: each rule's symbolic update with its state,
as SymPy derives it (:func:`harness.optim.rules.symbolic_rule`) in presentation MathML.

Records do not carry a case's hyper-parameters, so a report that holds optimizer records (their
quantities name the state: ``momentum_buffer_W``, ``exp_avg_b``, ...) shows the general form of each
rule family present: SGD with momentum, dampening, Nesterov and weight decay (the step ``t > 1``;
at ``t = 1`` the buffer is the gradient itself), Adam with L2 weight decay and amsgrad, AdamW.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from html import escape
from typing import Any

from .config import OptimizerConfig

#: The general form shown for each family, and the state quantity that says it is present.
FAMILIES = (
    ("momentum_buffer", "SGD with momentum (Nesterov and plain, weight decay, dampening)",
     [OptimizerConfig("sgd", {"momentum": 1, "dampening": 1, "nesterov": False, "weight_decay": 1, "maximize": False}),
      OptimizerConfig("sgd", {"momentum": 1, "dampening": 0, "nesterov": True, "weight_decay": 1, "maximize": False})]),
    ("exp_avg", "Adam (L2 weight decay, amsgrad) and AdamW (decoupled weight decay)",
     [OptimizerConfig("adam", {"betas": (1, 1), "eps": 1, "weight_decay": 1, "amsgrad": True, "maximize": False}),
      OptimizerConfig("adamw", {"betas": (1, 1), "eps": 1, "weight_decay": 1, "amsgrad": False, "maximize": False})]),
)
_NAMES = {"theta": "θ_t", "momentum_buffer": "b_t", "exp_avg": "m_t", "exp_avg_sq": "v_t", "max_exp_avg_sq": "v^max_t"}


@functools.cache
def family_html(key: str) -> str:
    """The HTML of the rule family whose state quantities start with ``key`` (a key of :data:`FAMILIES`):
    its title and each rule's update in presentation MathML. Derived once per process (SymPy: about 0.3 s
    for the three families; :func:`harness.report.warm_up` derives them while a run's workers start).

    Raises:
        KeyError: for a key not in :data:`FAMILIES`.
    """
    import sympy as sp

    from .rules import symbolic_rule

    families = {k: (t, c) for k, t, c in FAMILIES}
    if key not in families:
        raise KeyError(f"no optimizer rule family {key!r} (known: {', '.join(families)})")
    title, configs = families[key]
    parts = [f"<h4>{escape(title)}</h4>"]
    for opt in configs:
        label = f"{opt.name}{' (Nesterov)' if opt.name == 'sgd' and opt['nesterov'] else ''}"
        rows: list[Any] = []
        for name, expr in symbolic_rule(opt).items():
            rows.append(f"<tr><td>{escape(_NAMES[name])}</td><td>{sp.mathml(expr, printer='presentation')}</td></tr>")
        parts.append(f"<p>{escape(label)}</p><table class=\"derivation\">{''.join(rows)}</table>")
    return "".join(parts)


def rules_section(quantities: Iterable[str]) -> tuple[str, str] | None:
    """``(title, html)`` of the rules of the families whose state appears in ``quantities``
    (record quantities), or None when there is no optimizer record."""
    qs = set(quantities)
    parts = [family_html(key) for key, _, _ in FAMILIES if any(q.startswith(key + "_") for q in qs)]
    if not parts:
        return None
    intro = ("<p>Each optimizer update is graded against this rule applied to what the implementation held before "
             "the step (its parameters and state, its own gradient): exact rationals for SGD, 256-bit Arb ball "
             "enclosures for Adam and AdamW (harness/optim/).</p>")
    return "Optimizer update rules", intro + "".join(parts)
