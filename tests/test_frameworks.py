"""Plug-ins from any array framework: results read through __array__, __dlpack__ and .numpy(),
inputs handed through adapters (JAX, TensorFlow, DLPack, registered ones), generators and
tuples as result sequences, and a narrower result dtype named. Hostile results first."""

from __future__ import annotations

import inspect
import json
import re
import shlex
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import harness
from harness.errors import PluginError
from harness.frameworks import FRAMEWORKS, ResultReadError, case_array, read_result, register_framework
from harness.implementations import REGISTRY
from harness.records import Record

PY = sys.executable


def _sgd(X: Any, y: Any, W: Any, b: Any, lr: float, reduction: str, steps: int) -> Iterator[tuple[Any, ...]]:
    """The correct SGD step in NumPy, in the inputs' dtype: yields (loss, grad_W, grad_b, W, b).
    (ml_dtypes' bfloat16 matmul returns float32: rounded back to the inputs' dtype.)"""
    dt = X.dtype
    for _ in range(steps):
        R = (X @ W).astype(dt) + b - y
        c = dt.type(1.0 if reduction == "sum" else 1.0 / R.size)
        gW, gb = 2 * c * (X.T @ R).astype(dt), 2 * c * R.sum(axis=0)
        W, b = W - lr * gW, b - lr * gb
        yield c * np.sum(R * R), gW, gb, W, b


def _case(steps: int = 3, dtypes: tuple[str, ...] = ("float64", "float32")) -> harness.Case:
    return harness.make_case("fw", [[1.0, 2.0], [3.0, -1.0]], [[0.5], [2.0]], [[0.25], [-0.5]], [0.125],
                             lr="0.1", steps=steps, dtypes=dtypes)


def _register(name: str, fn: Callable[..., Any], framework: str = "numpy", **kw: Any) -> str:
    """Register ``fn`` as ``name``; the name (one function may be registered under several names)."""
    REGISTRY.pop(name, None)
    harness.implementation(name, framework=framework, **kw)(fn)
    return name


def _wrapped(name: str, wrap: Callable[[Any], Any]) -> str:
    def step(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> list[harness.StepResult]:
        return [harness.StepResult(*(wrap(v) for v in r)) for r in _sgd(X, y, W, b, lr, reduction, steps)]

    return _register(name, step)


def _verdicts(records: list[Record]) -> set[str]:
    return {r.verdict for r in records}


def _only(records: list[Record]) -> Record:
    assert len(records) == 1, [(r.quantity, r.verdict, r.message) for r in records]
    return records[0]


# ------------------------------------------------------------------ hostile results


class _ArrayRaises:
    def __array__(self, *a: Any, **k: Any) -> Any:
        raise ValueError("no conversion today")


class _ArrayExits:
    def __array__(self, *a: Any, **k: Any) -> Any:
        sys.exit(3)


class _ArrayObjects:
    def __init__(self, v: Any) -> None:
        self.v = v

    def __array__(self, *a: Any, **k: Any) -> Any:
        return np.asarray(self.v).astype(object)


class _ArrayWrongShape:
    def __init__(self, v: Any) -> None:
        self.v = v

    def __array__(self, *a: Any, **k: Any) -> Any:
        return np.zeros((7, 3))


class _TinyLike:
    """Neither __array__, __dlpack__ nor .numpy(): only arithmetic, as an unknown framework's tensor."""

    def __init__(self, v: Any) -> None:
        self.v = v


def test_array_that_raises_is_an_error_naming_the_protocol() -> None:
    rec = _only(harness.verify([_case()], [_wrapped("fw-array-raises", lambda v: _ArrayRaises())], dtypes="float64"))
    assert rec.verdict == "error"
    assert "cannot be read as numbers" in rec.message and "__array__ raised ValueError: no conversion today" in rec.message


def test_array_that_exits_is_an_error_not_the_end_of_the_run() -> None:
    rec = _only(harness.verify([_case()], [_wrapped("fw-array-exits", lambda v: _ArrayExits())], dtypes="float64"))
    assert rec.verdict == "error" and "called sys.exit(3)" in rec.message


def test_array_of_objects_is_an_error() -> None:
    rec = _only(harness.verify([_case()], [_wrapped("fw-array-objects", _ArrayObjects)], dtypes="float64"))
    assert rec.verdict == "error" and "object values" in rec.message


def test_array_of_the_wrong_shape_is_an_error() -> None:
    rec = _only(harness.verify([_case()], [_wrapped("fw-array-shape", _ArrayWrongShape)], dtypes="float64"))
    assert rec.verdict == "error" and "has shape (7, 3)" in rec.message


def test_an_object_that_is_not_array_like_gets_the_protocols_as_a_hint() -> None:
    rec = _only(harness.verify([_case()], [_wrapped("fw-tiny-like", _TinyLike)], dtypes="float64"))
    assert rec.verdict == "error"
    assert "_TinyLike is not array-like" in rec.message and "__array__, __dlpack__ or .numpy()" in rec.message


def test_read_result_rejects_strings_and_complex() -> None:
    with pytest.raises(ResultReadError, match="string values"):
        read_result(np.array(["1.0"]))
    with pytest.raises(ResultReadError, match="complex values"):
        read_result(np.array([1 + 2j]))


# ------------------------------------------------------------------ result sequences


def test_a_generator_of_results_is_graded() -> None:
    def step(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> Iterator[tuple[Any, ...]]:
        yield from _sgd(X, y, W, b, lr, reduction, steps)  # plain 5-tuples, yielded

    records = harness.verify([_case()], [_register("fw-generator", step)], dtypes="float64,float32")
    assert _verdicts(records) == {"agree"} and len(records) == 2 * 3 * 5


def test_a_tuple_of_results_is_graded() -> None:
    def step(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> tuple[Any, ...]:
        return tuple(_sgd(X, y, W, b, lr, reduction, steps))

    records = harness.verify([_case()], [_register("fw-tuple", step)], dtypes="float64")
    assert _verdicts(records) == {"agree"} and len(records) == 3 * 5


def test_a_generator_that_raises_midway_is_an_error() -> None:
    def step(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> Iterator[tuple[Any, ...]]:
        for t, r in enumerate(_sgd(X, y, W, b, lr, reduction, steps), start=1):
            if t == 2:
                raise RuntimeError("diverged at step 2")
            yield r

    rec = _only(harness.verify([_case()], [_register("fw-gen-raises", step)], dtypes="float64"))
    assert rec.verdict == "error" and "RuntimeError: diverged at step 2" in rec.message


def test_a_generator_that_never_ends_is_read_steps_plus_one_times_and_is_an_error() -> None:
    pulled = []

    def step(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> Iterator[tuple[Any, ...]]:
        while True:  # ignores steps
            for r in _sgd(X, y, W, b, lr, reduction, 1):
                pulled.append(1)
                W, b = r[3], r[4]
                yield r

    rec = _only(harness.verify([_case(steps=3)], [_register("fw-gen-endless", step)], dtypes="float64"))
    assert rec.verdict == "error" and "yielded more than steps=3 results" in rec.message
    assert len(pulled) == 4


def test_a_generator_that_yields_too_few_is_an_error() -> None:
    def step(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> Iterator[tuple[Any, ...]]:
        yield from _sgd(X, y, W, b, lr, reduction, steps - 1)

    rec = _only(harness.verify([_case(steps=3)], [_register("fw-gen-short", step)], dtypes="float64"))
    assert rec.verdict == "error" and "expected 3 StepResult(s), one per step, got 2" in rec.message


# ------------------------------------------------------------------ dtype named


def test_a_float32_result_for_a_float64_case_is_named_never_graded() -> None:
    def step(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> list[Any]:
        f = np.float32
        return list(_sgd(X.astype(f), y.astype(f), W.astype(f), b.astype(f), lr, reduction, steps))

    rec = _only(harness.verify([_case()], [_register("fw-narrow", step)], dtypes="float64"))
    assert rec.verdict == "error"
    assert "loss returned float32 for a float64 case" in rec.message and "narrower dtype" in rec.message


def test_a_wider_result_is_still_judged_by_its_values() -> None:
    """float64 arrays for a float32 case: the values decide (unchanged behaviour): float32 numbers pass."""
    def step(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> list[Any]:
        return [tuple(np.asarray(v, dtype=np.float64) for v in r) for r in _sgd(X, y, W, b, lr, reduction, steps)]

    assert _verdicts(harness.verify([_case()], [_register("fw-wide", step)], dtypes="float32")) == {"agree"}


# ------------------------------------------------------------------ protocols that read results


class _NumpyOnly:
    """A tinygrad-like tensor: no __array__, no __dlpack__, a .numpy() method."""

    def __init__(self, v: Any) -> None:
        self._v = np.asarray(v)

    def numpy(self) -> Any:
        return self._v.copy()


class _DLPackOnly:
    """A DLPack producer that is nothing else (delegates to a NumPy array, which implements the protocol)."""

    def __init__(self, v: Any) -> None:
        self._v = np.ascontiguousarray(v)

    def __dlpack__(self, **kw: Any) -> Any:
        return self._v.__dlpack__(**kw)

    def __dlpack_device__(self) -> Any:
        return self._v.__dlpack_device__()


@pytest.mark.parametrize("wrap", [_NumpyOnly, _DLPackOnly], ids=["numpy-method", "dlpack"])
def test_results_read_through_numpy_method_and_dlpack(wrap: Callable[[Any], Any]) -> None:
    records = harness.verify([_case()], [_wrapped(f"fw-{wrap.__name__}", wrap)], dtypes="float64,float32")
    assert _verdicts(records) == {"agree"} and len(records) == 2 * 3 * 5


# ------------------------------------------------------------------ bfloat16 through ml_dtypes


def test_bfloat16_through_ml_dtypes_rounds_once_and_reads_back_exactly() -> None:
    pytest.importorskip("ml_dtypes", reason="ml_dtypes (installed with JAX) carries bfloat16 through NumPy")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(15)
    random = rng.standard_normal(2000) * 10.0 ** rng.integers(-45, 39, 2000)
    one = 1.0
    # ties at 8 bits: 1 + 2**-8 rounds to even (1), 1 + 3 * 2**-8 up to 1 + 2**-6; 1 + 2**-8 + 2**-30 is above the
    # tie, so it rounds up to 1 + 2**-7 (torch.tensor(float64, dtype=bfloat16) rounds through float32 first, which
    # loses the 2**-30 bit and gives 1); 2**-133 is bfloat16's smallest subnormal, 2**-134 a tie that rounds to 0
    special = np.array([one + 2.0**-8, one + 3 * 2.0**-8, one + 2.0**-8 + 2.0**-30, 2.0**-133, 2.0**-134, 3.4e38, -3.4e38, 0.0, -0.0])
    got, name = read_result(case_array(np.concatenate([random, special]), "bfloat16"))
    assert name == "bfloat16"
    want_random = torch.tensor(random, dtype=torch.bfloat16).to(torch.float64).numpy()
    assert np.array_equal(got[:2000], want_random)
    want_special = [1.0, 1.0 + 2.0**-6, 1.0 + 2.0**-7, 2.0**-133, 0.0, np.inf, -np.inf, 0.0, -0.0]
    assert got[2000:].tolist() == want_special
    assert np.array_equal(np.signbit(got[2000:]), np.signbit(want_special))


# ------------------------------------------------------------------ registered adapters


class _FakeTensor:
    """A framework's tensor that only .numpy() reads (as tinygrad's), with a dtype object that has a name."""

    def __init__(self, v: Any) -> None:
        self._v = np.asarray(v)
        self.dtype = types.SimpleNamespace(name=self._v.dtype.name)
        self.shape = self._v.shape

    def numpy(self) -> Any:
        return self._v.copy()


def _fake_step(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> Iterator[Any]:
    assert all(isinstance(v, _FakeTensor) for v in (X, y, W, b)), "the adapter hands its own objects"
    for r in _sgd(X.numpy(), y.numpy(), W.numpy(), b.numpy(), lr, reduction, steps):
        yield harness.StepResult(*(_FakeTensor(v) for v in r))


def test_a_registered_framework_gets_its_objects_and_is_graded_in_bfloat16() -> None:
    pytest.importorskip("ml_dtypes", reason="bfloat16 through NumPy needs ml_dtypes")
    seen_devices = []

    def make(a: Any, device: str) -> _FakeTensor:
        seen_devices.append(device)
        return _FakeTensor(a)

    harness.register_framework("fake-fw", to_framework=make, dtypes=("float32", "bfloat16"))
    records = harness.verify([_case(dtypes=("float64", "float32", "bfloat16"))], [_register("fw-fake", _fake_step, "fake-fw")])
    by_dtype = {dt: {r.verdict for r in records if r.dtype == dt} for dt in ("float64", "float32", "bfloat16")}
    assert by_dtype == {"float64": {"unsupported"}, "float32": {"agree"}, "bfloat16": {"agree"}}
    assert set(seen_devices) == {"cpu"}


def test_a_registered_reader_reads_what_no_protocol_does() -> None:
    class Opaque:
        def __init__(self, v: Any) -> None:
            self.payload = np.asarray(v)

    def step(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> Iterator[Any]:
        for r in _sgd(X.payload, y.payload, W.payload, b.payload, lr, reduction, steps):
            yield tuple(Opaque(v) for v in r)

    harness.register_framework("opaque-fw", to_framework=lambda a, device: Opaque(a), to_numpy=lambda o: o.payload)
    assert _verdicts(harness.verify([_case()], [_register("fw-opaque", step, "opaque-fw")])) == {"agree"}


def test_an_adapter_that_changes_the_dtype_is_an_error_naming_it() -> None:
    harness.register_framework("narrowing-fw", to_framework=lambda a, device: _FakeTensor(a.astype(np.float32)),
                               dtype_hint=lambda case, got: f"hint for {got} in {case}")
    rec = _only(harness.verify([_case()], [_register("fw-narrowing", _fake_step, "narrowing-fw")], dtypes="float64"))
    assert rec.verdict == "error"
    assert "narrowing-fw made a float32 input for a float64 case; hint for float32 in float64" in rec.message


def test_masked_arrays_are_read_as_their_data() -> None:
    """``np.isfinite(masked).all()`` skips masked elements: an input or a result read as a masked array would let a
    masked inf or NaN through. Both are read as their data: an input that overflows float16 is an ``overflow``
    record (not graded: a step returning zeros must not agree), a masked NaN result is graded as NaN."""
    harness.register_framework("masked-fw", to_framework=lambda a, device: np.ma.masked_invalid(a))

    def zeros(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> list[harness.StepResult]:
        z = lambda *s: np.zeros(s, np.float16)  # noqa: E731
        return [harness.StepResult(np.float16(0), z(1, 1), z(1), z(1, 1), z(1))] * steps

    case = harness.make_case("masked-overflow", [[100000.0], [1.0]], [[1.0], [1.0]], [[1.0]], [0.0], lr="0.5",
                             steps=1, dtypes=("float16",), reduction="sum")
    rec = _only(harness.verify([case], [_register("fw-masked-zeros", zeros, "masked-fw")], dtypes="float16"))
    assert rec.verdict == "overflow" and "inputs X overflow float16" in rec.message

    def masked_nan(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> Iterator[Any]:
        for loss, gW, gb, W1, b1 in _sgd(np.asarray(X), np.asarray(y), np.asarray(W), np.asarray(b), lr, reduction, steps):
            yield harness.StepResult(loss, np.ma.masked_invalid(np.full_like(gW, np.nan)), gb, W1, b1)

    records = harness.verify([_case(steps=1)], [_register("fw-masked-nan", masked_nan, "masked-fw")], dtypes="float64")
    assert {r.verdict for r in records if r.quantity == "grad_W"} == {"disagree"}
    assert {r.verdict for r in records if r.quantity != "grad_W"} == {"agree"}
    assert read_result(np.ma.masked_invalid(np.array([1.0, np.inf])))[0].tolist() == [1.0, np.inf]


def test_builtin_frameworks_cannot_be_replaced_and_unknown_ones_are_named() -> None:
    with pytest.raises(PluginError, match="built in"):
        register_framework("jax", to_framework=lambda a, d: a)
    with pytest.raises(PluginError, match="unknown dtype"):
        register_framework("odd-fw", to_framework=lambda a, d: a, dtypes=("float128",))
    with pytest.raises(PluginError, match="unknown framework 'mxnet'.*register_framework"):
        harness.implementation("fw-mxnet", framework="mxnet")
    assert {"torch", "numpy", "jax", "tensorflow", "dlpack"} <= set(FRAMEWORKS)


# ------------------------------------------------------------------ the TensorFlow adapter, with a fake TensorFlow


class _FakeTF(types.ModuleType):
    """The few names of TensorFlow the adapter uses: tf.device, tf.constant, tf.config.list_physical_devices."""

    def __init__(self) -> None:
        super().__init__("tensorflow")
        self.placed: list[str] = []
        self.config = types.SimpleNamespace(list_physical_devices=lambda kind: [])
        self._device = ""

    def device(self, name: str) -> Any:
        import contextlib

        @contextlib.contextmanager
        def ctx() -> Iterator[None]:
            self._device = name
            yield
            self._device = ""

        return ctx()

    def constant(self, value: Any, dtype: Any = None) -> _FakeTensor:
        self.placed.append(self._device)
        return _FakeTensor(np.asarray(value, dtype=dtype))


def test_tensorflow_adapter_with_a_fake_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ml_dtypes", reason="bfloat16 through NumPy needs ml_dtypes")
    fake = _FakeTF()
    monkeypatch.setitem(sys.modules, "tensorflow", fake)
    records = harness.verify([_case(dtypes=("float64", "float32", "bfloat16"))],
                             [_register("fw-fake-tf", _fake_step, "tensorflow")])
    assert _verdicts(records) == {"agree"} and len(records) == 3 * 3 * 5
    # the inputs of 3 dtypes, 4 each, and the bfloat16 subnormal probe's (harness.frameworks.flushes_subnormals)
    assert set(fake.placed) == {"/CPU:0"} and len(fake.placed) >= 3 * 4


def test_tensorflow_not_installed_is_unsupported_with_the_install_line() -> None:
    if "tensorflow" in sys.modules or __import__("importlib").util.find_spec("tensorflow") is not None:
        pytest.skip("TensorFlow is installed here")
    rec = _only(harness.verify([_case()], [_register("fw-real-tf", _fake_step, "tensorflow")], dtypes="float32"))
    assert rec.verdict == "unsupported" and "tensorflow is not installed (pip install tensorflow)" in rec.message


# ------------------------------------------------------------------ the DLPack adapter


def test_dlpack_framework_hands_dlpack_producers() -> None:
    def step(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> Iterator[Any]:
        assert hasattr(X, "__dlpack__") and not isinstance(X, np.ndarray)
        yield from _sgd(*(np.from_dlpack(v).copy() for v in (X, y, W, b)), lr, reduction, steps)

    assert _verdicts(harness.verify([_case()], [_register("fw-dlpack", step, "dlpack")])) == {"agree"}


# ------------------------------------------------------------------ JAX


def test_the_core_imports_no_framework() -> None:
    code = ("import sys, harness, harness.runner, harness.cli, harness.frameworks, harness.api; "
            "bad = [m for m in ('jax', 'tensorflow', 'cupy', 'ml_dtypes') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([PY, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


def _check(root: Path, tmp_path: Path, plugin: Path, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    out = tmp_path / "results.jsonl"
    proc = subprocess.run([PY, "-m", "harness", "check", "--plugin", str(plugin), "--cases", str(root / "cases" / "seed.toml"),
                           "--results", str(out), "--report", "none", *args], cwd=root, capture_output=True, text=True, timeout=600)
    lines = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    recs = [r for r in lines if "verdict" in r]  # records, not the environment line
    return proc.returncode, recs, proc.stdout + proc.stderr


def _readme_section(root: Path) -> list[tuple[str, str]]:
    text = (root / "README.md").read_text()
    section = text.split("### Every argument of `@harness.implementation`", 1)[1].split("\n## ", 1)[0]
    section = section.split("### Built-in implementations", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def test_readme_documents_every_argument_of_implementation(root: Path) -> None:
    text = (root / "README.md").read_text().split("### Every argument of `@harness.implementation`", 1)[1].split("\n### ", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", text, flags=re.M)
    assert documented == list(inspect.signature(harness.implementation).parameters)


def test_readme_jax_example_is_the_examples_file(root: Path) -> None:
    blocks = _readme_section(root)
    python = [b for lang, b in blocks if lang == "python"]
    assert python[0] == (root / "examples" / "jax_step.py").read_text()


def test_jax_example_is_graded_in_every_dtype(root: Path, tmp_path: Path) -> None:
    """The README's command, as written (its records and report sent to tmp_path)."""
    pytest.importorskip("jax", reason="JAX is an optional extra: pip install 'autograd-harness[jax]'")
    (command,) = [b for lang, b in _readme_section(root) if lang == "bash" and "examples/jax_step.py" in b]
    argv = shlex.split(command)
    assert argv[0].endswith("python") and argv[1:5] == ["-m", "harness", "check", "--plugin"]
    out = tmp_path / "results.jsonl"
    proc = subprocess.run([PY, *argv[1:], "--results", str(out), "--report", "none"], cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    recs = [r for r in lines if "verdict" in r]
    (env,) = [r for r in lines if r.get("kind") == "environment"]
    assert env["jax"] == pytest.importorskip("jax").__version__  # the plug-in's framework is on record
    by_dtype = {dt: {r["verdict"] for r in recs if r["dtype"] == dt} for dt in ("float64", "float32", "float16", "bfloat16")}
    assert by_dtype == {dt: {"agree"} for dt in by_dtype}
    assert sum(r["dtype"] == "bfloat16" for r in recs) == 8 * 5  # seed-mean: 8 steps x 5 quantities


JAX_NO_X64 = '''
import jax
import jax.numpy as jnp

import harness


@harness.implementation("jax-no-x64", framework="jax")
def step(X, y, W, b, *, lr, reduction, steps):
    grad = jax.value_and_grad(lambda W, b: jnp.sum((X @ W + b - y) ** 2), argnums=(0, 1))
    for _ in range(steps):
        loss, (gW, gb) = grad(W, b)
        W, b = W - lr * gW, b - lr * gb
        yield loss, gW, gb, W, b
'''


def test_jax_without_x64_on_a_float64_case_is_an_error_naming_the_setting(root: Path, tmp_path: Path) -> None:
    pytest.importorskip("jax", reason="JAX is an optional extra: pip install 'autograd-harness[jax]'")
    plugin = tmp_path / "jax_no_x64.py"
    plugin.write_text(JAX_NO_X64)
    rc, recs, text = _check(root, tmp_path, plugin, "--implementations", "jax-no-x64", "--case", "seed", "--dtypes", "float64,float32")
    assert rc != 0, text
    f64 = [r for r in recs if r["dtype"] == "float64"]
    assert [r["verdict"] for r in f64] == ["error"]
    assert "jax made a float32 input for a float64 case; with JAX, enable jax_enable_x64" in f64[0]["message"]
    assert {r["verdict"] for r in recs if r["dtype"] == "float32"} == {"agree"}


JAX_CAST = '''
import jax
import jax.numpy as jnp

import harness

jax.config.update("jax_enable_x64", True)


@harness.implementation("jax-cast32", framework="jax")
def step(X, y, W, b, *, lr, reduction, steps):
    X, y, W, b = (v.astype(jnp.float32) for v in (X, y, W, b))
    grad = jax.value_and_grad(lambda W, b: jnp.sum((X @ W + b - y) ** 2), argnums=(0, 1))
    for _ in range(steps):
        loss, (gW, gb) = grad(W, b)
        W, b = W - lr * gW, b - lr * gb
        yield loss, gW, gb, W, b
'''


def test_jax_step_computing_in_float32_is_named_for_a_float64_case(root: Path, tmp_path: Path) -> None:
    pytest.importorskip("jax", reason="JAX is an optional extra: pip install 'autograd-harness[jax]'")
    plugin = tmp_path / "jax_cast32.py"
    plugin.write_text(JAX_CAST)
    rc, recs, text = _check(root, tmp_path, plugin, "--implementations", "jax-cast32", "--case", "seed", "--dtypes", "float64")
    assert rc != 0, text
    rec = recs[0]
    assert len(recs) == 1 and rec["verdict"] == "error"
    assert "step 1: loss returned float32 for a float64 case" in rec["message"] and "with JAX, keep the inputs' dtype" in rec["message"]


REGISTERED_PLUGIN = '''
import numpy as np

import harness


class Boxed:
    """A framework's tensor that no interchange protocol reads: only the registered to_numpy."""

    def __init__(self, v):
        self.payload = np.asarray(v)


harness.register_framework("boxed", to_framework=lambda array, device: Boxed(array), to_numpy=lambda t: t.payload,
                           dtypes=("float32", "bfloat16"))


@harness.implementation("boxed-sgd", framework="boxed")
def boxed_sgd(X, y, W, b, *, lr, reduction, steps):
    X, y, W, b = (v.payload for v in (X, y, W, b))
    dt = X.dtype
    for _ in range(steps):
        R = (X @ W).astype(dt) + b - y
        c = dt.type(1.0 if reduction == "sum" else 1.0 / R.size)
        gW, gb = 2 * c * (X.T @ R).astype(dt), 2 * c * R.sum(axis=0)
        W, b = W - lr * gW, b - lr * gb
        yield tuple(Boxed(v) for v in (c * np.sum(R * R), gW, gb, W, b))
'''


def test_a_framework_registered_in_a_plugin_module_works_in_worker_processes(root: Path, tmp_path: Path) -> None:
    pytest.importorskip("ml_dtypes", reason="bfloat16 through NumPy needs ml_dtypes")
    plugin = tmp_path / "boxed_plugin.py"
    plugin.write_text(REGISTERED_PLUGIN)
    rc, recs, text = _check(root, tmp_path, plugin, "--implementations", "boxed-sgd", "--case", "seed-mean", "--isolation", "process")
    assert rc == 0, text
    by_dtype = {dt: {r["verdict"] for r in recs if r["dtype"] == dt} for dt in ("float64", "float32", "float16", "bfloat16")}
    assert by_dtype == {"float64": {"unsupported"}, "float32": {"agree"}, "float16": {"unsupported"}, "bfloat16": {"agree"}}


def test_dlpack_follows_torch_on_which_pairs_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.devices as devices

    monkeypatch.setattr(devices, "available_devices", lambda: ["cpu", "mps"])
    assert devices.unsupported_reason("dlpack", "mps", "float64") == "the MPS backend does not support float64"
    assert devices.unsupported_reason("dlpack", "mps", "bfloat16") is None
    assert devices.unsupported_reason("dlpack", "cuda:0", "float32") == "device cuda:0 is not available on this machine"
