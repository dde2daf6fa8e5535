"""Optimizer update rules beyond plain SGD (issue 13): SGD with momentum, dampening, Nesterov,
weight decay and maximize; Adam and AdamW (amsgrad too).

Modules, one job each (data flows case -> rule -> oracle & implementations -> bounds -> grading):

- :mod:`harness.optim.config`: the ``optimizer`` table of a case (:class:`OptimizerConfig`);
  validated by :mod:`harness.cases`, the one place case validation lives;
- :mod:`harness.optim.rules`: each rule once, element-wise, generic over the number type,
  and its SymPy form (the symbolic update with its state);
- :mod:`harness.optim.reference`: a plain-Python transcription of the torch.optim docs'
  pseudo-code, the independent check of the rules;
- :mod:`harness.optim.oracle`: exact rationals (SGD family) or rigorous interval enclosures (Arb balls)
  (Adam, AdamW) of one update and of the exact trajectory;
- :mod:`harness.optim.bounds`: rigorous first-order forward error bounds and expected bounds
  of one update;
- :mod:`harness.optim.grade`: the state a step returns, and the records of an update;
- :mod:`harness.optim.torch_steps`, :mod:`harness.optim.numpy_steps`: built-in implementations;
- :mod:`harness.optim.mutants`: deliberately wrong update rules for ``selftest``.
"""

from .config import OPTIMIZER_ARGS, RULES, OptimizerConfig, OptimizerStepResult

__all__ = ["OPTIMIZER_ARGS", "RULES", "OptimizerConfig", "OptimizerStepResult"]
