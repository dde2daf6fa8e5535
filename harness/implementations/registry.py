"""The registry of implementations under test, and the plug-in contract.

An implementation is a function

    step(X, y, W, b, *, lr, reduction, steps) -> list[StepResult]

taking plain inputs in its framework's objects on the case's device and dtype
(``torch.Tensor`` for ``framework="torch"``, ``numpy.ndarray`` for ``"numpy"``,
``jax.Array`` for ``"jax"``, ``tf.Tensor`` for ``"tensorflow"``, a DLPack producer
for ``"dlpack"``, or a framework registered with
:func:`harness.frameworks.register_framework`): X (N, D),
y (N, K), W (D, K), b (K,); ``lr`` a Python float; ``reduction`` ``"sum"`` or
``"mean"``. It returns (or yields) one :class:`StepResult` (or plain 5-tuple) per
step, whose ``W`` and ``b`` are the values *after* that step's update, as a list,
a tuple or a generator; the values may be any array that the interchange protocols
read (see :mod:`harness.frameworks.interchange`).

Register one with the :func:`implementation` decorator; plug-in modules do so
at import time (``--plugin MODULE`` or the entry-point group
``harness.implementations``).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import interpreter_state
from ..errors import PluginError
from ..frameworks import framework_of

if TYPE_CHECKING:  # the comparison's facts, read by KnownBug.explains (no import at run time: data flows to compare)
    from ..compare import FailingElements

ENTRY_POINT_GROUP = "harness.implementations"


class StepResult(NamedTuple):
    """What one step returns: loss (0-d), grad_W (D, K), grad_b (K,), and W (D, K),
    b (K,) after the update. Tensors or arrays in the dtype the step computed in."""

    loss: Any
    grad_W: Any
    grad_b: Any
    W: Any
    b: Any


StepFn = Callable[..., Any]  # returns a sequence (or generator) of StepResult or OptimizerStepResult


@dataclass(frozen=True)
class Implementation:
    """A registered implementation.

    Attributes:
        name: unique name (used on the command line and in records).
        framework: ``"torch"``, ``"numpy"``, ``"jax"``, ``"tensorflow"``, ``"dlpack"`` or a
            framework registered with :func:`harness.frameworks.register_framework`.
        fn: the step function (see module docstring).
        description: one line for listings.
        correct: False for deliberately buggy implementations (the selftest's
            mutants); only correct ones run by default.
        expected: for a mutant, the verdicts that count as catching it.
        dtypes: dtypes it supports (others give ``unsupported``); None = all the framework has.
        devices: device types it supports (``"cpu"``, ``"cuda"``, ``"mps"``); None = all.
        default: False for correct implementations that run only when named
            (``torch-compile``: compiling takes seconds per case and dtype).
        error_model: a function with the signature of
            :func:`harness.bounds.step_bounds` giving the bounds this
            implementation is graded against, for one that is not a standard
            evaluation in its dtype (``finite-differences``); None = the standard
            forward error model.
        known_bug: ``known_bug(device, dtype)`` describes a known bug of the
            framework that makes this pair fail (None if none): a :class:`KnownBug` (the
            quantities it can make fail, and whether it leaves parameters unchanged), or a
            string (then every quantity). Failing records it explains
            (:meth:`KnownBug.explains`) keep their verdict, their message names the bug and
            they are reported, not counted (``--strict`` counts them); the selftest does not
            count them as false alarms.
        flush_to_zero: the implementation may flush subnormal inputs, intermediates
            and results to zero (FTZ/DAZ kernels): it is graded with the
            flush-to-zero bounds in every dtype (as float16 and bfloat16 always
            are); undeclared, a float32 or float64 error only flushing explains
            is ``disagree`` and its message names flush-to-zero.
        optimizers: the update rules it implements: ``"plain"`` (``W' = W - lr dL/dW``, a case
            without ``optimizer``) and the rules of :data:`harness.optim.RULES` (``"sgd"``,
            ``"adam"``, ``"adamw"``). For a case with an ``optimizer`` the step is called with the
            keyword ``optimizer=`` (a :class:`harness.optim.OptimizerConfig`) and returns
            :class:`harness.optim.OptimizerStepResult` (the state after each step too).
        models: the models it implements, as patterns (``"any"``, a kind name such as ``"mlp"``, or
            a mapping of model-table keys such as ``{"activation": "tanh"}``): empty (the default) for
            an implementation of the linear path only (``fn(X, y, W, b, ...)``, cases without a
            ``model``); otherwise it takes the model contract of :mod:`harness.models.step`
            (``fn(X, y, params, *, model, lr, reduction, steps)``). Which cases it runs is decided by
            one rule, :func:`harness.models.spec.model_rule_mismatch`.
        function_ulps: for a model implementation, the accuracy of its elementary functions in ULPs
            (``{"tanh": 4}``), overriding :data:`harness.models.bounds.FUNCTION_ULPS` for its bounds;
            the values used are named in every record's ``oracle_method``.
    """

    name: str
    framework: str
    fn: StepFn
    description: str = ""
    correct: bool = True
    expected: tuple[str, ...] = ("disagree",)
    dtypes: tuple[str, ...] | None = None
    devices: tuple[str, ...] | None = None
    kind: str = "builtin"
    default: bool = True
    error_model: Callable[..., Any] | None = None
    known_bug: Callable[[str, str], str | KnownBug | None] | None = None
    flush_to_zero: bool = False
    optimizers: tuple[str, ...] = ("plain",)
    models: tuple[object, ...] = ()
    function_ulps: Mapping[str, float] | None = None


@dataclass(frozen=True)
class KnownBug:
    """A known framework bug behind some failing records of an implementation (what ``known_bug`` returns).

    Attributes:
        reason: the bug, in words (each explained record's ``known_bug`` field and message).
        quantities: the quantities it can make fail; None: every one. A failing record of another quantity
            is counted as usual (a fused-update bug explains no loss or gradient).
        skips_update: the bug leaves parameters (and their state) at their values before the step: a failing record
            is explained only where, at every failing element, the parameter kept its value from before the step (for
            ``W`` and ``b`` the record's own values; for a state, a momentum buffer, its parameter's: a wrong update is
            not a skipped one, and a record holding both is counted).
        block: the bug touches only whole blocks of this many elements (SIMD vectors: the first
            ``size // block * block`` elements of a parameter, in memory order): a failing element outside
            them is not explained (a step that skipped the update of a 1-element W is no instance of it).
    """

    reason: str
    quantities: tuple[str, ...] | None = None
    skips_update: bool = False
    block: int | None = None

    def explains(self, quantity: str, failing: FailingElements | None = None) -> bool:
        """Whether this bug explains a failing record of ``quantity`` whose failing elements are ``failing``
        (:func:`harness.compare.failing_elements`, ``unchanged`` read on the record's parameter; None where not
        known: then not explained where :attr:`skips_update` needs them)."""
        if self.quantities is not None and quantity not in self.quantities:
            return False
        if not self.skips_update:
            return True
        if failing is None:
            return False
        if self.block is not None and not bool((failing.flat < failing.size // self.block * self.block).all()):
            return False
        return failing.unchanged


def known_bug_of(impl: Implementation, device: str, dtype: str) -> KnownBug | None:
    """The known bug ``impl`` declares for ``device`` and ``dtype`` (its ``known_bug`` probe's answer, a string
    taken as a bug of every quantity), or None: the one reading of the declaration."""
    if impl.known_bug is None:
        return None
    found = impl.known_bug(device, dtype)
    if not found:
        return None
    return found if isinstance(found, KnownBug) else KnownBug(str(found))


REGISTRY: dict[str, Implementation] = {}


def implementation(
    name: str,
    *,
    framework: str = "torch",
    description: str = "",
    correct: bool = True,
    expected: Iterable[str] = ("disagree",),
    dtypes: Iterable[str] | None = None,
    devices: Iterable[str] | None = None,
    kind: str = "plugin",
    default: bool = True,
    error_model: Callable[..., Any] | None = None,
    known_bug: Callable[[str, str], str | KnownBug | None] | None = None,
    flush_to_zero: bool = False,
    optimizers: Iterable[str] = ("plain",),
    models: Iterable[object] = (),
    function_ulps: Mapping[str, float] | None = None,
) -> Callable[[StepFn], StepFn]:
    """Register a step function under ``name``.

    Example::

        @harness.implementation("my-step", framework="torch")
        def my_step(X, y, W, b, *, lr, reduction, steps):
            ...
            return [harness.StepResult(loss, grad_W, grad_b, W, b), ...]

    ``flush_to_zero=True`` declares that the step may flush subnormals to zero
    (see :attr:`Implementation.flush_to_zero`). ``optimizers=("adam",)`` declares the update rules
    the step implements (:attr:`Implementation.optimizers`; default: plain SGD only).

    ``models=(...)`` declares the models the step implements (:attr:`Implementation.models`; the rule:
    :func:`harness.models.spec.model_rule_mismatch`); the step then takes the model contract
    (:mod:`harness.models.step`)::

        @harness.implementation("my-mlp", framework="numpy", models=({"activation": "tanh"},))
        def my_mlp(X, y, params, *, model, lr, reduction, steps):
            ...
            return [harness.models.ModelStepResult(loss, grads, params), ...]

    ``function_ulps={"tanh": 4}`` states the accuracy of the step's elementary functions where it is
    not the documented one of :data:`harness.models.bounds.FUNCTION_ULPS` (a fast approximation).

    A PyTorch forward ``forward(X, params) -> prediction`` (a ``torch.autograd.Function`` called
    in it, say) becomes such a step with :func:`harness.models.torch_forward_step`.

    Raises:
        PluginError: for a name that is not printable text without commas or surrounding spaces, a malformed
            pattern in ``models`` (not ``"any"``, a kind name or a mapping
            of model-table keys), for an unknown rule in ``optimizers``, for an unknown framework (register it first with
            :func:`harness.frameworks.register_framework`), or a name already registered by another function.
    """
    if not isinstance(name, str) or not name or not name.isprintable() or "," in name or name != name.strip():
        # a name is printed in tables and messages and picked with --implementations a,b: a newline or an escape
        # sequence in it forged an "exit 0" line on a terminal, and one with a comma could never be picked (helper-93)
        raise PluginError(f"implementation name {name!r}: expected printable text without commas or surrounding spaces")
    try:
        framework_of(framework)
    except PluginError as exc:
        raise PluginError(f"implementation {name!r}: {exc}") from None
    rules = tuple(optimizers)
    known_rules = ("plain", "sgd", "adam", "adamw")
    if not rules or any(r not in known_rules for r in rules):
        raise PluginError(f"implementation {name!r}: optimizers must name some of {known_rules}, got {rules!r}")
    patterns = tuple(normal_model_pattern(p) for p in models)
    bad = model_pattern_problem(patterns)
    if bad:
        raise PluginError(f"implementation {name!r}: models: {bad}")
    ulps = dict(function_ulps) if function_ulps is not None else None
    if ulps is not None and not all(isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
                                    and 0 <= v < float("inf") for k, v in ulps.items()):
        raise PluginError(f"implementation {name!r}: function_ulps must map function names to finite ULP counts >= 0, got {ulps!r}")

    def deco(fn: StepFn) -> StepFn:
        old = REGISTRY.get(name)
        if old is not None and (old.fn.__module__, old.fn.__qualname__) != (fn.__module__, fn.__qualname__) \
                and _origin(old.fn) != _origin(fn):  # the same file imported by its name and by its path is no clash
            raise PluginError(f"implementation {name!r} is already registered by {old.fn.__module__}.{old.fn.__qualname__}")
        REGISTRY[name] = Implementation(
            name=name, framework=framework, fn=fn, description=description or (fn.__doc__ or "").strip().split("\n")[0],
            correct=correct, expected=tuple(expected), dtypes=tuple(dtypes) if dtypes is not None else None,
            devices=tuple(devices) if devices is not None else None, kind=kind,
            default=default, error_model=error_model, known_bug=known_bug, flush_to_zero=flush_to_zero,
            optimizers=rules, models=patterns, function_ulps=ulps,
        )
        return fn

    return deco


def normal_model_pattern(pattern: object) -> object:
    """A ``models`` pattern written as :meth:`harness.models.spec.ModelSpec.as_table` writes tables:
    ``hidden`` and ``parameters`` as lists (``(8,)`` -> ``[8]``), ``negative_slope`` and
    ``relu_grad_at_zero`` as exact fraction strings (``0.2`` -> ``"1/5"``, from the decimal as written),
    or None at their defaults (1/100 and 0), which tables leave out.
    Anything else is returned as given (:func:`model_pattern_problem` judges it)."""
    from fractions import Fraction

    if not isinstance(pattern, dict):
        return pattern
    out = dict(pattern)
    for key in ("hidden", "parameters"):
        if isinstance(out.get(key), tuple):
            out[key] = list(out[key])
    defaults = {"negative_slope": Fraction(1, 100), "relu_grad_at_zero": Fraction(0)}  # left out of as_table's tables
    for key, default in defaults.items():
        value = out.get(key)
        if isinstance(value, int | float | str | Fraction) and not isinstance(value, bool):
            try:
                exact = Fraction(str(value)) if isinstance(value, float) else Fraction(value)
            except (ValueError, ZeroDivisionError):
                continue  # left as written: it then matches no table
            out[key] = None if exact == default else str(exact)
    return out


def model_pattern_problem(patterns: tuple[object, ...]) -> str | None:
    """What is wrong with the ``models`` patterns of a registration (None: nothing).

    A pattern is ``"any"``, a kind of :data:`harness.models.spec.KINDS`, or a mapping (dict) from
    keys of the ``model`` table (:meth:`harness.models.spec.ModelSpec.as_table`, and ``kind``) to
    the values they must equal.
    """
    from ..models.spec import KINDS

    keys = ("kind", "hidden", "activation", "negative_slope", "polynomial", "expression", "parameters", "bias",
            "relu_grad_at_zero")
    for pat in patterns:
        if isinstance(pat, str):
            if pat != "any" and pat not in KINDS:
                return f"{pat!r} is not 'any' or a model kind ({', '.join(KINDS)})"
        elif isinstance(pat, dict):
            unknown = [k for k in pat if k not in keys]
            if unknown:
                return f"{unknown[0]!r} is not a key of the model table ({', '.join(keys)})"
        else:
            return f"{pat!r} is not 'any', a model kind or a dict of model-table keys"
    return None


def plugin_module_name(path: str) -> str:
    """The private module name a ``.py`` plug-in is loaded under: ``harness_plugin_<stem>_<hash of its real path>``
    (never its bare stem: a plug-in file named ``json.py`` must not replace the standard library's ``json``)."""
    import hashlib
    import os
    import re

    real = os.path.realpath(path)
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(real))[0])
    return f"harness_plugin_{stem}_{hashlib.sha256(real.encode()).hexdigest()[:12]}"


def _origin(fn: Callable[..., Any]) -> tuple[str, str]:
    import os

    code = getattr(fn, "__code__", None)
    return (os.path.realpath(code.co_filename) if code is not None else "", getattr(fn, "__qualname__", ""))


def load_plugin(module: str, *, warn_if_empty: bool = True) -> None:
    """Import a plug-in module by dotted name (or a path to a ``.py`` file).

    A ``.py`` file is loaded under a private name (:func:`plugin_module_name`), the same in the
    supervisor and in every worker; loading it again reuses the module. ``warn_if_empty``: a
    RuntimeWarning where the module registered no implementation and no framework (a worker process,
    which loads the plug-ins the supervisor loaded first, passes False: the supervisor said it once).

    Raises:
        PluginError: naming the module if it cannot be imported, whatever its import raised
            (``sys.exit()`` at import included; a ``KeyboardInterrupt`` is passed on: Ctrl-C).
    """
    import os
    import sys

    from ..frameworks.registry import FRAMEWORKS

    cwd = os.getcwd()
    sigint = _sigint_handler()
    state = interpreter_state.read()
    registered = (len(REGISTRY), len(FRAMEWORKS))
    try:
        if module.endswith(".py"):
            name = plugin_module_name(module)
            if name in sys.modules:
                return
            spec = importlib.util.spec_from_file_location(name, module)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {module}")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            try:
                spec.loader.exec_module(mod)
            except BaseException:
                sys.modules.pop(name, None)
                raise
        else:
            if module in sys.modules:
                return
            importlib.import_module(module)
        _restore_environment_after(f"plug-in {module!r}", cwd, sigint, state)
        if warn_if_empty and (len(REGISTRY), len(FRAMEWORKS)) == registered:
            import warnings

            warnings.warn(f"plug-in {module!r} registered no implementation and no framework (decorate a step with "
                          "@harness.implementation(name, framework=...); a folder or a package's __init__ imports no "
                          "module by itself)", RuntimeWarning, stacklevel=2)
    except PluginError:
        raise
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - any error in the user's module, SystemExit included, is reported
        raise PluginError(f"cannot import plug-in {module!r}: {type(exc).__name__}: {exc}") from exc


def load_entry_points() -> list[str]:
    """Load every module advertised in the ``harness.implementations`` entry-point group.

    Returns:
        the names of the entry points loaded.
    """
    import os

    loaded = []
    cwd = os.getcwd()
    sigint = _sigint_handler()
    state = interpreter_state.read()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - SystemExit included: sys.exit(0) on import ended check green (helper-60)
            raise PluginError(f"entry point {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}") from exc
        _restore_environment_after(f"entry point {ep.name!r} ({ep.value})", cwd, sigint, state)
        loaded.append(ep.name)
    return loaded


def _sigint_handler() -> Any:
    """The SIGINT handler (None outside the main thread, where it cannot be set)."""
    import signal
    import threading

    return signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None


def _restore_environment_after(what: str, cwd: str, sigint: Any, state: interpreter_state.InterpreterState) -> None:
    """Put IEEE 754's default floating-point environment, NumPy's error handling and the working directory ``cwd``
    back after importing user code, with a warning naming it: a library linked with -ffast-math turns flush-to-zero
    on when it is loaded, and the cases read afterwards (their decimal values parsed in that environment) would lose
    their subnormals (:mod:`harness.fpenv`); ``os.chdir(os.path.dirname(__file__))``, a common idiom, made relative
    ``--cases``, ``--results`` and ``--report`` paths resolve in the plug-in's folder; the SIGINT handler
    ``sigint`` (see :func:`harness.isolation.sigint_flag`); and the recursion limit and standard streams ``state``
    (:mod:`harness.interpreter_state`: a lowered limit failed the grading of every later step).

    Raises:
        PluginError: when the default cannot be restored."""
    import os
    import warnings

    try:
        now: str | None = os.getcwd()
    except OSError:
        now = None
    if now != cwd:
        os.chdir(cwd)
        warnings.warn(f"importing {what} changed the working directory to {now!r} (os.chdir); the harness changed it "
                      f"back to {cwd!r}, where relative paths are read and written", RuntimeWarning, stacklevel=3)
    if sigint is not None and _sigint_handler() is not sigint:  # e.g. "save a checkpoint on Ctrl-C": inline, every
        import signal  # KeyboardInterrupt a step raised was then taken for Ctrl-C, and the run stopped there

        signal.signal(signal.SIGINT, sigint)
        warnings.warn(f"importing {what} installed its own SIGINT (Ctrl-C) handler; the harness put its own back, so "
                      "that Ctrl-C stops the run and a step's KeyboardInterrupt is that step's error",
                      RuntimeWarning, stacklevel=3)
    for change in interpreter_state.restore(state):
        warnings.warn(f"importing {what} left {change}", RuntimeWarning, stacklevel=3)

    from ..fpenv import FPEnvironmentError, describe_numpy_errors, restore_default, restore_numpy_errors

    numpy_errors = restore_numpy_errors()
    if numpy_errors is not None:
        warnings.warn(f"importing {what} left {describe_numpy_errors(numpy_errors)}; the harness restored NumPy's "
                      "default (the harness's own arithmetic would raise FloatingPointError)", RuntimeWarning, stacklevel=3)
    try:
        found = restore_default()
    except FPEnvironmentError as exc:
        raise PluginError(f"importing {what} changed the floating-point environment: {exc}") from exc
    if found is not None:
        warnings.warn(f"importing {what} changed the floating-point environment: {found.describe()}; the harness "
                      "restored IEEE 754's default (rounding to nearest, gradual underflow, no traps), in which every step "
                      "runs and is graded", RuntimeWarning, stacklevel=3)
