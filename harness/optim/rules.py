"""The update rules, each written once, element-wise, generic over the arithmetic.

One definition per rule (:func:`sgd_rule`, :func:`adam_rule`) is evaluated in several arithmetics:

- SymPy symbols (:func:`symbolic_rule`): the symbolic update with its state, for the report's
  derivation and for the symbolic cross-check against :mod:`harness.optim.reference`;
- exact rationals (``Fraction`` object arrays): the SGD family's oracle (:mod:`harness.optim.oracle`);
- rigorous balls (python-flint ``arb``): Adam's and AdamW's oracle;
- error terms (:class:`harness.optim.bounds.Terms`): the SGD family's error bounds.

The rules are torch.optim's, as its documentation states them (torch 2.x ``SGD``, ``Adam``, ``AdamW``)
and its code computes them (``maximize`` negates the gradient first; the momentum buffer is the
first step's gradient, undamped; AdamW decays the parameter by ``1 - lr weight_decay`` before the
Adam step; amsgrad keeps the running maximum of the raw second moment):

SGD (``g`` the gradient, ``mu`` momentum, ``tau`` dampening, ``lambda`` weight decay, ``gamma`` lr)::

    d = -g if maximize else g;   d += lambda theta              (weight decay != 0)
    buf = d (t = 1)  or  mu buf + (1 - tau) d (t > 1)            (mu != 0)
    d = d + mu buf (nesterov)  or  buf
    theta' = theta - gamma d

Adam / AdamW (``beta1, beta2, eps``; ``t`` the step, from 1)::

    d = -g if maximize else g
    Adam:  d += lambda theta  (L2)     AdamW: theta *= 1 - gamma lambda  (decoupled)
    m = beta1 m + (1 - beta1) d;   v = beta2 v + (1 - beta2) d^2;   V = max(V_max, v) (amsgrad) or v
    theta' = theta - gamma / (1 - beta1^t) * m / (sqrt(V) / sqrt(1 - beta2^t) + eps)

Hyper-parameters are passed ready in the arithmetic as a mapping ``hp`` with the keys ``lr``,
``momentum``, ``one_minus_dampening``, ``weight_decay`` (SGD) and ``lr``, ``beta1``, ``beta2``,
``one_minus_beta1``, ``one_minus_beta2``, ``eps``, ``weight_decay``, ``lr_weight_decay``
(``1 - lr weight_decay``), ``step_size`` (``lr / (1 - beta1^t)``), ``bias_correction2_sqrt``
(``sqrt(1 - beta2^t)``) (Adam): each arithmetic decides how they are held (:func:`hyper_parameters`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

import sympy as sp

from .config import OptimizerConfig

Num = Any
State = dict[str, Num]


def sgd_rule(w: Num, g: Num, state: Mapping[str, Num], t: int, opt: OptimizerConfig, hp: Mapping[str, Num]) -> tuple[Num, State]:
    """One SGD step of one parameter (element-wise or whole arrays): ``(theta', state')``.

    Args:
        w: the parameter before the step; g: its gradient; state: ``{"momentum_buffer": buf}``
            from the previous step (empty at ``t = 1`` or without momentum); t: the step, from 1.
        opt: the configuration (its flags and which hyper-parameters are non-zero decide the
            structure); hp: the hyper-parameters in the arithmetic (module docstring).
    """
    d = -g if opt["maximize"] else g
    if opt["weight_decay"] != 0:
        d = d + hp["weight_decay"] * w
    new: State = {}
    if opt["momentum"] != 0:
        buf = d if t == 1 or "momentum_buffer" not in state else hp["momentum"] * state["momentum_buffer"] + hp["one_minus_dampening"] * d
        new["momentum_buffer"] = buf
        d = d + hp["momentum"] * buf if opt["nesterov"] else buf
    return w - hp["lr"] * d, new


def adam_rule(w: Num, g: Num, state: Mapping[str, Num], t: int, opt: OptimizerConfig, hp: Mapping[str, Num],
              sqrt: Callable[[Num], Num], maximum: Callable[[Num, Num], Num]) -> tuple[Num, State]:
    """One Adam or AdamW step of one parameter: ``(theta', state')``.

    Args:
        state: ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq`` with amsgrad) after step ``t - 1``
            (zeros at ``t = 1``: torch.optim initialises them so).
        sqrt, maximum: the arithmetic's square root and element-wise maximum.
    """
    d = -g if opt["maximize"] else g
    if opt["weight_decay"] != 0:
        if opt.name == "adamw":
            w = w * hp["lr_weight_decay"]
        else:
            d = d + hp["weight_decay"] * w
    m = hp["beta1"] * state["exp_avg"] + hp["one_minus_beta1"] * d
    v = hp["beta2"] * state["exp_avg_sq"] + hp["one_minus_beta2"] * (d * d)
    new: State = {"exp_avg": m, "exp_avg_sq": v}
    big_v = v
    if opt["amsgrad"]:
        big_v = maximum(state["max_exp_avg_sq"], v)
        new["max_exp_avg_sq"] = big_v
    denom = sqrt(big_v) / hp["bias_correction2_sqrt"] + hp["eps"]
    return w - hp["step_size"] * m / denom, new


def apply_rule(w: Num, g: Num, state: Mapping[str, Num], t: int, opt: OptimizerConfig, hp: Mapping[str, Num],
               sqrt: Callable[[Num], Num] | None = None, maximum: Callable[[Num, Num], Num] | None = None) -> tuple[Num, State]:
    """:func:`sgd_rule` or :func:`adam_rule`, by ``opt.name``."""
    if opt.name == "sgd":
        return sgd_rule(w, g, state, t, opt, hp)
    assert sqrt is not None and maximum is not None, "Adam needs the arithmetic's sqrt and maximum"
    return adam_rule(w, g, state, t, opt, hp, sqrt, maximum)


def exact_hyper_parameters(opt: OptimizerConfig, lr: Fraction, t: int) -> dict[str, Fraction]:
    """The hyper-parameters of step ``t`` as exact rationals of the Python floats an implementation is
    handed (the derived ones, such as ``1 - beta1^t``, computed exactly from those): what the oracle uses.
    ``bias_correction2_sqrt`` is irrational in general and is left out (the interval oracle encloses it)."""
    hp: dict[str, Fraction] = {"lr": lr}
    if opt.name == "sgd":
        hp.update(momentum=opt.exact("momentum"), one_minus_dampening=1 - opt.exact("dampening"),
                  weight_decay=opt.exact("weight_decay"))
        return hp
    b1, b2 = opt.betas()
    wd = opt.exact("weight_decay")
    hp.update(beta1=b1, beta2=b2, one_minus_beta1=1 - b1, one_minus_beta2=1 - b2, eps=opt.exact("eps"),
              weight_decay=wd, lr_weight_decay=1 - lr * wd, step_size=lr / (1 - b1**t), bias_correction2=1 - b2**t)
    return hp


#: SymPy symbols of the rules (names as in torch.optim's documentation).
SYMBOLS = {
    "theta": sp.Symbol("theta"), "g": sp.Symbol("g"), "t": sp.Symbol("t", positive=True, integer=True),
    "lr": sp.Symbol("gamma", positive=True), "momentum": sp.Symbol("mu", nonnegative=True),
    "dampening": sp.Symbol("tau", nonnegative=True), "weight_decay": sp.Symbol("lambda", nonnegative=True),
    "beta1": sp.Symbol("beta_1", positive=True), "beta2": sp.Symbol("beta_2", positive=True),
    "eps": sp.Symbol("epsilon", positive=True),
    "momentum_buffer": sp.Symbol("b_{t-1}"), "exp_avg": sp.Symbol("m_{t-1}"),
    "exp_avg_sq": sp.Symbol("v_{t-1}", nonnegative=True), "max_exp_avg_sq": sp.Symbol("v^{max}_{t-1}", nonnegative=True),
}


def symbolic_hyper_parameters(opt: OptimizerConfig) -> dict[str, sp.Expr]:
    """The hyper-parameters as SymPy expressions of :data:`SYMBOLS` (step ``t`` symbolic)."""
    s = SYMBOLS
    t = s["t"]
    return {
        "lr": s["lr"], "momentum": s["momentum"], "one_minus_dampening": 1 - s["dampening"], "weight_decay": s["weight_decay"],
        "beta1": s["beta1"], "beta2": s["beta2"], "one_minus_beta1": 1 - s["beta1"], "one_minus_beta2": 1 - s["beta2"],
        "eps": s["eps"], "lr_weight_decay": 1 - s["lr"] * s["weight_decay"], "step_size": s["lr"] / (1 - s["beta1"]**t),
        "bias_correction2_sqrt": sp.sqrt(1 - s["beta2"]**t),
    }


def symbolic_rule(opt: OptimizerConfig, first_step: bool = False) -> dict[str, sp.Expr]:
    """The update of ``opt`` as SymPy expressions: ``{"theta": theta', <state key>: ...}`` in the symbols
    of :data:`SYMBOLS` (the state of step ``t - 1`` as ``b_{t-1}``, ``m_{t-1}``, ``v_{t-1}``, ...).

    ``first_step``: the rule at ``t = 1`` (SGD's momentum buffer starts as the gradient itself).
    """
    s = SYMBOLS
    state = {k: s[k] for k in ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")}
    hp = symbolic_hyper_parameters(opt)
    if opt.name == "sgd":
        w, new = sgd_rule(s["theta"], s["g"], {} if first_step else state, 1 if first_step else 2, opt, hp)
    else:
        w, new = adam_rule(s["theta"], s["g"], state, 1, opt, hp, sp.sqrt, sp.Max)
    return {"theta": sp.simplify(w) if opt.name == "sgd" else w, **new}


def latex_rule(opt: OptimizerConfig) -> list[str]:
    """The symbolic update of ``opt`` as LaTeX lines (``theta_t = ...``, the state's), for the report."""
    out = []
    names = {"theta": r"\theta_t", "momentum_buffer": "b_t", "exp_avg": "m_t", "exp_avg_sq": "v_t", "max_exp_avg_sq": "v^{max}_t"}
    for key, expr in symbolic_rule(opt).items():
        out.append(f"{names[key]} = {sp.latex(expr)}")
    return out
