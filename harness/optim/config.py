"""The ``optimizer`` table of a case: which update rule, with torch.optim's own argument names.

``optimizer = { name = "sgd", momentum = 0.9, dampening = 0.0, nesterov = true, weight_decay = 0.01,
maximize = false }``, ``{ name = "adam", betas = [0.9, 0.999], eps = 1e-8, weight_decay = 0.0,
amsgrad = false, maximize = false }``, ``{ name = "adamw", ... }`` (AdamW's ``weight_decay`` defaults
to 0.01, as in torch.optim). The case's ``lr`` stays the learning rate. Defaults are torch.optim's.

The values are kept as written (exact rationals, like every number of a case file) and as the
Python floats an implementation is handed (:meth:`OptimizerConfig.torch_kwargs`). Validation lives in
:func:`harness.cases.optimizer_config` (the one place case validation lives).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

#: The rules a case may name.
RULES = ("sgd", "adam", "adamw")
#: Each rule's torch.optim arguments (besides ``lr``) and their defaults (torch.optim's).
OPTIMIZER_ARGS: Mapping[str, Mapping[str, Any]] = {
    "sgd": {"momentum": 0, "dampening": 0, "nesterov": False, "weight_decay": 0, "maximize": False},
    "adam": {"betas": (Fraction(9, 10), Fraction(999, 1000)), "eps": Fraction(1, 10**8), "weight_decay": 0,
             "amsgrad": False, "maximize": False},
    "adamw": {"betas": (Fraction(9, 10), Fraction(999, 1000)), "eps": Fraction(1, 10**8), "weight_decay": Fraction(1, 100),
              "amsgrad": False, "maximize": False},
}
#: The state each rule keeps per parameter (torch.optim's ``optimizer.state[p]`` keys that are graded).
STATE_KEYS: Mapping[str, tuple[str, ...]] = {
    "sgd": ("momentum_buffer",),
    "adam": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    "adamw": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
}
#: The parameters of the model, in the order torch.optim is handed them.
PARAMS = ("W", "b")


@dataclass(frozen=True)
class OptimizerConfig:
    """One optimizer: its rule and hyper-parameters (learning rate apart: the case's ``lr``).

    Attributes:
        name: one of :data:`RULES`.
        args: every argument of :data:`OPTIMIZER_ARGS` for the rule, defaults filled in:
            numbers as exact rationals (``Fraction``, as written), flags as bool, ``betas`` a pair.
    """

    name: str
    args: Mapping[str, Any]

    def __post_init__(self) -> None:
        if self.name not in RULES:
            raise ValueError(f"unknown optimizer {self.name!r}; known: {', '.join(RULES)}")

    def __getitem__(self, key: str) -> Any:
        return self.args[key]

    def exact(self, key: str) -> Fraction:
        """A number argument as the Python float an implementation is handed, as an exact rational."""
        return Fraction(float(self.args[key]))

    def betas(self) -> tuple[Fraction, Fraction]:
        """``(beta1, beta2)`` as the Python floats hold them, exactly (Adam, AdamW)."""
        b1, b2 = self.args["betas"]
        return Fraction(float(b1)), Fraction(float(b2))

    def torch_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``torch.optim.SGD/Adam/AdamW`` (lr apart): Python floats and bools."""
        out: dict[str, Any] = {}
        for key, val in self.args.items():
            if isinstance(val, bool):
                out[key] = val
            elif isinstance(val, tuple):
                out[key] = tuple(float(v) for v in val)
            else:
                out[key] = float(val)
        return out

    def numbers(self) -> list[tuple[str, float]]:
        """Every number argument as the Python float an implementation is handed: ``[("momentum", 0.9), ("beta1",
        0.9), ...]`` (``betas`` as ``beta1`` and ``beta2``)."""
        out: list[tuple[str, float]] = []
        for key, val in self.torch_kwargs().items():
            if isinstance(val, tuple):
                out += [(f"beta{i + 1}", v) for i, v in enumerate(val)]
            elif not isinstance(val, bool):
                out.append((key, val))
        return out

    def state_keys(self) -> tuple[str, ...]:
        """The state this configuration keeps per parameter (empty for SGD without momentum)."""
        if self.name == "sgd":
            return ("momentum_buffer",) if self.args["momentum"] != 0 else ()
        return STATE_KEYS[self.name] if self.args["amsgrad"] else STATE_KEYS[self.name][:2]

    def describe(self) -> str:
        """``adam(betas=(0.9, 0.999), eps=1e-08, ...)``: one line for messages."""
        kw = ", ".join(f"{k}={v!r}" for k, v in self.torch_kwargs().items())
        return f"{self.name}({kw})"


class OptimizerStepResult(NamedTuple):
    """What one step of an optimizer implementation returns: as :class:`harness.StepResult` plus the
    optimizer's state after the step: ``state = {"W": {"momentum_buffer": ...}, "b": {...}}``, the
    per-parameter ``optimizer.state[p]`` of torch.optim (tensors or arrays of the parameter's shape;
    other keys such as ``step`` are ignored). SGD without momentum has no state (``{}``)."""

    loss: Any
    grad_W: Any
    grad_b: Any
    W: Any
    b: Any
    state: Mapping[str, Mapping[str, Any]]


def rule_of(optimizer: OptimizerConfig | None) -> str:
    """The rule name of a case's optimizer: ``"plain"`` for none, else its name."""
    return "plain" if optimizer is None else optimizer.name


def rule_mismatch(implements: tuple[str, ...], optimizer: OptimizerConfig | None) -> str | None:
    """The one rule for which implementation runs which case: why an implementation that implements the
    rules ``implements`` (:attr:`harness.implementations.Implementation.optimizers`) cannot run a case
    with ``optimizer``, or None when it can. :func:`harness.runner.verify` leaves such pairs out; a
    direct :func:`harness.runner.check_case` grades them ``unsupported`` with this reason."""
    rule = rule_of(optimizer)
    if rule in implements:
        return None
    return (f"implements {', '.join(implements)} only; this case's update rule is "
            f"{'plain SGD' if optimizer is None else optimizer.describe()}")


def optimizer_keyword(optimizer: OptimizerConfig | None) -> dict[str, OptimizerConfig]:
    """The keyword arguments a step is called with for a case's optimizer: ``{"optimizer": config}``,
    none for plain SGD (so every plain-SGD step keeps its signature)."""
    return {} if optimizer is None else {"optimizer": optimizer}


#: The configuration each rule is benchmarked with (``harness bench``): momentum with Nesterov and weight
#: decay for SGD, torch.optim's defaults for Adam and AdamW.
BENCHMARK_TABLES: Mapping[str, Mapping[str, Any]] = {
    "sgd": {"momentum": Fraction(9, 10), "dampening": 0, "nesterov": True, "weight_decay": Fraction(1, 100), "maximize": False},
    "adam": dict(OPTIMIZER_ARGS["adam"]),
    "adamw": dict(OPTIMIZER_ARGS["adamw"]),
}


def benchmark_optimizer(implements: tuple[str, ...]) -> OptimizerConfig | None:
    """The optimizer a step implementing ``implements`` is benchmarked and checked with: None when it
    implements plain SGD (benchmarked as before), else its first rule with :data:`BENCHMARK_TABLES`."""
    if "plain" in implements:
        return None
    rule = implements[0]
    return OptimizerConfig(rule, BENCHMARK_TABLES[rule])
