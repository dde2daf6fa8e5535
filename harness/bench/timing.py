"""What is timed, and how: the update step, the memory-bandwidth probe and the cost of verification.

Everything here is plain Python (no pytest): the pytest-benchmark layer in
``benchmarks/`` and any other timer call these objects.

Timing rules (why a naive ``benchmark(step)`` is wrong on a GPU):

- GPU work is asynchronous: ``step()`` returns once the kernels are *queued*.
  Every timed call therefore ends with the device's synchronize
  (``torch.cuda.synchronize(device)``, ``torch.mps.synchronize()``), and the
  untimed ``setup()`` before each round synchronizes too, so no work from a
  previous round leaks into the next.
- Warm-up rounds run before timing: the CUDA context, cuBLAS handles, the
  caching allocator and ``torch.compile`` graphs are built there, not in the
  measurement.
- Each call runs the registered step function with ``steps=1`` on inputs that
  already live on the device; the function makes its own leaf tensors and
  resets ``.grad`` as it does in a check. ``setup()`` also clears any
  ``.grad`` left on the inputs.
- CPU thread counts (torch intra-op threads and the BLAS/OpenMP pools NumPy
  uses, via threadpoolctl) are pinned by :func:`pin_threads` and recorded.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..devices import available_devices, device_type
from ..frameworks import to_framework, unsupported_reason
from ..implementations import Implementation, StepResult
from ..models.spec import model_rule_mismatch
from ..optim.config import BENCHMARK_TABLES, OptimizerConfig, benchmark_optimizer, optimizer_keyword

#: Reduction and learning rate of the benchmarked step (mean keeps 16-bit losses finite at N = 10^6).
REDUCTION = "mean"
LR = 0.01
#: Dtypes benchmarked by default, per framework (NumPy has no bfloat16).
ALL_DTYPES = ("float32", "float64", "float16", "bfloat16")


@dataclass(frozen=True, order=True)
class Size:
    """A problem size: X is (n, d), y is (n, k), W is (d, k), b is (k,)."""

    n: int
    d: int
    k: int

    @property
    def label(self) -> str:
        return f"N={self.n}-D={self.d}-K={self.k}"


@dataclass(frozen=True)
class Sweep:
    """A size sweep: every ``n`` crossed with every ``(d, k)``, less the sizes over ``max_work``.

    Attributes:
        name: ``"tiny"`` (tests), ``"quick"`` (CI/smoke) or ``"full"``.
        ns: row counts N.
        dks: (D, K) pairs.
        bandwidth_bytes: buffer size of the memory-bandwidth probe, per device type.
        verify_dks: (D, K) pairs of the verification-cost comparison.
    """

    name: str
    ns: tuple[int, ...]
    dks: tuple[tuple[int, int], ...]
    bandwidth_bytes: dict[str, int]
    verify_dks: tuple[tuple[int, int], ...]
    oracle_sizes: tuple[tuple[int, int, int], ...] = ()

    def sizes(self, max_work: float = 2**26) -> list[Size]:
        """The sizes with ``N*D*K <= max_work`` (multiply-adds of ``X @ W``), smallest first."""
        return sorted(Size(n, d, k) for n in self.ns for d, k in self.dks if n * d * k <= max_work)


_MiB = 2**20
SWEEPS: dict[str, Sweep] = {
    "tiny": Sweep("tiny", (1, 8), ((2, 1),), {"cpu": _MiB, "cuda": _MiB, "mps": _MiB}, ((1, 1), (3, 2)),
                  ((1, 1, 1), (16, 1, 1))),
    "quick": Sweep("quick", (1, 100, 10_000, 1_000_000), ((1, 1), (16, 4)),
                   {"cpu": 64 * _MiB, "cuda": 256 * _MiB, "mps": 256 * _MiB}, ((1, 1), (4, 1), (4, 4), (10, 10), (100, 10)),
                   ((1, 1, 1), (16, 1, 1), (1_563, 16, 4), (15_625, 16, 4))),
    "full": Sweep("full", tuple(10**e for e in range(7)), ((1, 1), (16, 4), (128, 16)),
                  {"cpu": 256 * _MiB, "cuda": 1024 * _MiB, "mps": 512 * _MiB},
                  ((1, 1), (10, 1), (10, 10), (100, 10), (100, 100)),
                  ((1, 1, 1), (16, 1, 1), (100, 10, 1), (1_563, 16, 4), (15_625, 16, 4), (156_250, 16, 4))),
}


def floor_elements(size: Size, state_arrays: int = 0) -> int:
    """Elements the step must move at the very least: read X (N*D), y (N*K), W (D*K), b (K);
    write grad_W, W' (D*K each), grad_b, b' (K each) and the loss (1); and, for an optimizer with
    ``state_arrays`` state tensors per parameter (SGD's momentum buffer: 1; Adam's moments: 2;
    amsgrad: 3), read and write each (``2 * state_arrays * (D*K + K)``).

    A fused kernel could do the step in one pass over X and y; an unfused
    autograd step reads X twice (forward and backward) and writes and reads
    N*K intermediates, so its time is a small multiple of this floor.
    """
    n, d, k = size.n, size.d, size.k
    return n * d + n * k + 3 * (d * k + k) + 1 + 2 * state_arrays * (d * k + k)


def itemsize(dtype: str) -> int:
    """Bytes per element of ``dtype`` (``"float64"`` -> 8, ``"bfloat16"`` -> 2)."""
    return {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}[dtype]


def floor_bytes(size: Size, dtype: str, state_arrays: int = 0) -> int:
    """Bytes of :func:`floor_elements` in ``dtype`` (state held in the parameter's dtype, as torch.optim does)."""
    return floor_elements(size, state_arrays) * itemsize(dtype)


# ------------------------------------------------------------------ device helpers


def synchronizer(device: str) -> Callable[[], None]:
    """A function that waits for all queued work on ``device`` (a no-op on the CPU)."""
    kind = device_type(device)
    if kind == "cuda":
        import torch

        return lambda: torch.cuda.synchronize(device)
    if kind == "mps":
        import torch

        return torch.mps.synchronize
    return lambda: None


def device_name(device: str) -> str:
    """A human name: the CUDA device's name, else the CPU model from ``/proc/cpuinfo``."""
    kind = device_type(device)
    if kind == "cuda":
        import torch

        return str(torch.cuda.get_device_name(device))
    if kind == "mps":
        return "Apple MPS"
    return cpu_model()


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo``, else :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def default_threads() -> int:
    """CPUs this process may run on (``os.sched_getaffinity``), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


_POOL_LIMITS: list[Any] = []  # keeps threadpoolctl's limiter alive for the process


def pin_threads(threads: int) -> dict[str, Any]:
    """Pin torch's intra-op threads and NumPy's BLAS/OpenMP pools to ``threads``.

    Returns:
        what was set, for the machine info: ``torch_threads``, ``numpy_pools``
        (threadpoolctl's view: library, API, threads) or a note when
        threadpoolctl is missing.

    Raises:
        ValueError: if ``threads < 1``.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)
    info: dict[str, Any] = {"threads_requested": threads, "torch_threads": torch.get_num_threads()}
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        info["numpy_pools"] = "not pinned: threadpoolctl is not installed"
        return info
    _POOL_LIMITS.append(threadpool_limits(limits=threads))
    info["numpy_pools"] = [{"library": p.get("internal_api"), "api": p.get("user_api"), "threads": p.get("num_threads"),
                            "version": p.get("version")} for p in threadpool_info()]
    return info


def machine_info(devices: Iterable[str] | None = None) -> dict[str, Any]:
    """Versions, device names, CUDA version, TF32 and matmul-precision settings, threads.

    For pytest-benchmark's ``machine_info`` (the ``pytest_benchmark_update_machine_info`` hook).
    """
    import torch

    from ..records import git_commit

    devs = list(devices) if devices is not None else available_devices()
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "devices": {d: device_name(d) for d in devs},
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": default_threads(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "git_commit": git_commit(),
    }
    try:
        from threadpoolctl import threadpool_info

        info["numpy_pools"] = [{"library": p.get("internal_api"), "threads": p.get("num_threads")} for p in threadpool_info()]
    except ImportError:
        info["numpy_pools"] = None
    return info


def set_tf32(enabled: bool) -> None:
    """Allow (or forbid) TF32 in float32 CUDA matmuls, and set the matching matmul precision."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    torch.set_float32_matmul_precision("high" if enabled else "highest")


# ------------------------------------------------------------------ targets


def benchmark_inputs(size: Size, seed: int = 0) -> dict[str, np.ndarray]:
    """Well-scaled float64 inputs: X ~ U(-1, 1), y = X W* + b* + 0.1 noise, W = W* + 0.1 perturbation.

    Residuals are O(0.1 sqrt(D)), far from overflow and from subnormals in
    every dtype (subnormals would slow CPU arithmetic and distort timings).
    """
    rng = np.random.default_rng(seed)
    n, d, k = size.n, size.d, size.k
    X = rng.uniform(-1.0, 1.0, size=(n, d))
    W_true = rng.normal(0.0, 1.0 / math.sqrt(d), size=(d, k))
    b_true = rng.normal(0.0, 1.0, size=k)
    y = X @ W_true + b_true + 0.1 * rng.normal(size=(n, k))
    W = W_true + 0.1 * rng.normal(0.0, 1.0 / math.sqrt(d), size=(d, k))
    b = b_true + 0.1 * rng.normal(size=k)
    return {"X": X, "y": y, "W": W, "b": b}


def applicable(impl: Implementation, device: str, dtype: str) -> str | None:
    """Why ``impl`` cannot be benchmarked on ``device`` in ``dtype`` (None when it can)."""
    reason = unsupported_reason(impl.framework, device, dtype, impl.dtypes)
    if reason is None and impl.dtypes is not None and dtype not in impl.dtypes:
        reason = f"{impl.name} does not support {dtype}"
    if reason is None and impl.devices is not None and device_type(device) not in impl.devices:
        reason = f"{impl.name} does not run on {device}"
    if reason is None:  # the benchmark times the linear model's step (the one rule: model_rule_mismatch)
        mismatch = model_rule_mismatch(impl.models, None)
        reason = f"{impl.name} {mismatch}" if mismatch else None
    return reason


@dataclass
class StepTarget:
    """One registered step on one size, device and dtype, ready to time.

    Call :meth:`setup` (untimed) then the object itself (timed): one update
    step with ``steps=1``, synchronized on the device before returning.
    """

    impl: Implementation
    size: Size
    device: str
    dtype: str
    inputs: dict[str, Any] = field(repr=False)
    reference: dict[str, np.ndarray] = field(repr=False)
    last: list[StepResult] | None = field(default=None, repr=False)
    #: the optimizer the step runs (None: plain SGD); :func:`make_step_target` chooses it
    optimizer: OptimizerConfig | None = None

    def __post_init__(self) -> None:
        self._sync = synchronizer(self.device)

    @property
    def bytes(self) -> int:
        """Floor bytes (see :func:`floor_bytes`), the optimizer's state included."""
        opt = self.optimizer
        return floor_bytes(self.size, self.dtype, len(opt.state_keys()) if opt is not None else 0)

    def setup(self) -> None:
        """Untimed, before each round: clear any ``.grad`` on the inputs and drain the device queue."""
        for v in self.inputs.values():
            if getattr(v, "grad", None) is not None:
                v.grad = None
        self._sync()

    def __call__(self) -> list[StepResult]:
        i = self.inputs
        out = self.impl.fn(i["X"], i["y"], i["W"], i["b"], lr=LR, reduction=REDUCTION, steps=1,
                           **optimizer_keyword(self.optimizer))
        self._sync()
        self.last = out
        return out

    def check(self) -> str | None:
        """Is the step correct? Graded by the harness itself: the result of the last timed call, on all the
        benchmark's inputs (as rounded to the dtype), is graded against the exact oracle by the runner; a record
        that fails by :func:`harness.verdicts.fails`, or nothing graded, is a wrong step. (It ran the step again on
        the first 256 rows, so a step that used only those rows was timed at 10^4 and passed, helper-86; the
        integer-slice oracle grades 10^6 elements in about 20 ms.)

        Returns:
            None when it is right, else a message (a benchmark of a wrong step is meaningless).
        """
        from ..cases import case_from_arrays
        from ..frameworks import to_float64
        from ..runner import RunOptions, check_case
        from ..verdicts import first_failure, nothing_graded

        if self.last is None:
            return "the step has not run"
        if not isinstance(self.last, list | tuple) or len(self.last) != 1:
            return f"expected a list of one StepResult, got {type(self.last).__name__} of length {len(self.last) if hasattr(self.last, '__len__') else '?'}"
        res = self.last[0]
        d, k = self.size.d, self.size.k
        got = {"grad_W": to_float64(res.grad_W).reshape(-1), "W": to_float64(res.W).reshape(-1)}
        for name, want in (("grad_W", d * k), ("W", d * k)):
            if got[name].size != want:
                return f"{name} has {got[name].size} elements, expected {want}"
        ref = self.reference
        case = case_from_arrays(f"bench-{self.size.label}", ref["X"], ref["y"], ref["W"], ref["b"],
                                lr=LR, reduction=REDUCTION, dtypes=(self.dtype,), tags=("bench",),
                                optimizer=self.optimizer)
        timed = self.last  # the runner reads and grades these values, whatever inputs it hands the step
        graded = dataclasses.replace(self.impl, fn=lambda *args, **kwargs: timed)
        tf32 = False
        if self.dtype == "float32" and device_type(self.device) == "cuda":
            import torch

            tf32 = bool(torch.backends.cuda.matmul.allow_tf32)
        records = check_case(case, graded, self.device, self.dtype, RunOptions(tf32=tf32, trajectory=False))
        bad = first_failure(records)
        if bad is not None:
            return (f"{bad.quantity}: {bad.verdict} against the exact oracle ({self.impl.name}, {self.device}, {self.dtype}, "
                    f"{self.size.label}, the timed call's results): {bad.message}")
        if nothing_graded(records):
            return f"nothing graded: {'; '.join(r.message for r in records) or 'no record'}"
        return None


def make_step_target(impl: Implementation, size: Size, device: str, dtype: str, seed: int = 0,
                     rule: str | None = None) -> StepTarget:
    """Create the inputs directly on ``device`` in ``dtype`` and wrap the step.

    Raises:
        ValueError: if the implementation cannot run there (see :func:`applicable`).
    """
    reason = applicable(impl, device, dtype)
    if reason:
        raise ValueError(reason)
    vals = benchmark_inputs(size, seed)
    inputs = {key: to_framework(v, impl.framework, dtype, device) for key, v in vals.items()}
    from ..frameworks import to_float64

    reference = {key: to_float64(v) for key, v in inputs.items()}
    optimizer = benchmark_optimizer(impl.optimizers) if rule is None else OptimizerConfig(rule, BENCHMARK_TABLES[rule])
    return StepTarget(impl, size, device, dtype, inputs, reference, optimizer=optimizer)


@dataclass
class BandwidthTarget:
    """A plain large memory operation on ``device``, timed like the step.

    ``kind="read"``: ``torch.sum`` of a float32 buffer of ``nbytes`` (moves ``nbytes``).
    ``kind="copy"``: ``dst.copy_(src)`` (moves ``2 * nbytes``: read and write).
    """

    device: str
    kind: str
    nbytes: int

    def __post_init__(self) -> None:
        import torch

        if self.kind not in ("read", "copy"):
            raise ValueError(f"kind must be 'read' or 'copy', got {self.kind!r}")
        n = self.nbytes // 4
        self._src = torch.ones(n, dtype=torch.float32, device=self.device)
        self._dst = torch.empty_like(self._src) if self.kind == "copy" else None
        self._sync = synchronizer(self.device)

    @property
    def bytes(self) -> int:
        """Bytes moved by one call."""
        return self.nbytes * (2 if self.kind == "copy" else 1)

    def setup(self) -> None:
        self._sync()

    def __call__(self) -> Any:
        if self._dst is not None:
            self._dst.copy_(self._src)
            out = self._dst
        else:
            out = self._src.sum()
        self._sync()
        return out


VERIFY_METHODS = ("harness", "gradcheck", "gradcheck-fast")
VERIFY_N = 16


@dataclass
class VerifyTarget:
    """One way to verify the gradient of one case, timed end to end.

    - ``harness``: :func:`harness.runner.check_case` of ``torch-seed`` on the
      case in float64 on the CPU: the step, the exact oracle, both bounds and
      every comparison (loss, grad_W, grad_b, W, b).
    - ``gradcheck`` / ``gradcheck-fast``: ``torch.autograd.gradcheck`` of the
      loss with respect to W and b (float64, defaults eps=1e-6, atol=1e-5,
      rtol=1e-3), full Jacobian or ``fast_mode=True`` (one random projection).

    Calling returns whether the verification passed.
    """

    method: str
    d: int
    k: int
    n: int = VERIFY_N

    def __post_init__(self) -> None:
        import torch

        from ..cases import case_from_arrays
        from ..implementations import resolve

        if self.method not in VERIFY_METHODS:
            raise ValueError(f"method must be one of {VERIFY_METHODS}, got {self.method!r}")
        vals = benchmark_inputs(Size(self.n, self.d, self.k), seed=1)
        self.case = case_from_arrays(f"verify-D{self.d}-K{self.k}", vals["X"], vals["y"], vals["W"], vals["b"],
                                     lr=LR, reduction=REDUCTION, dtypes=("float64",), tags=("bench",))
        self.impl = resolve(["torch-seed"])[0]
        t = {key: torch.tensor(v, dtype=torch.float64) for key, v in vals.items()}
        self._X, self._y = t["X"], t["y"]
        self._W = t["W"].requires_grad_(True)
        self._b = t["b"].requires_grad_(True)

    @property
    def dk(self) -> int:
        return self.d * self.k

    def setup(self) -> None:
        self._W.grad = None
        self._b.grad = None

    def _loss(self, W: Any, b: Any) -> Any:
        return ((self._X @ W + b - self._y) ** 2).mean()

    def __call__(self) -> bool:
        if self.method == "harness":
            from ..runner import check_case
            from ..verdicts import failures, nothing_graded

            records = check_case(self.case, self.impl, "cpu", "float64")
            return not failures(records) and not nothing_graded(records)
        from torch.autograd import gradcheck

        return bool(gradcheck(self._loss, (self._W, self._b), fast_mode=self.method == "gradcheck-fast"))


ORACLE_METHODS = ("numpy-step", "oracle", "check", "gradcheck", "gradcheck-fast")
ORACLE_DATA = ("normal", "mixed")


def oracle_inputs(size: Size, dtype: str, data: str, seed: int = 2) -> dict[str, np.ndarray]:
    """Benchmark inputs rounded to ``dtype`` (as float64 arrays). ``data="mixed"``: each element of X
    scaled by ``2**U(-20, 20)`` (mixed magnitudes within every row and column; y from the same model)."""
    vals = benchmark_inputs(size, seed)
    if data == "mixed":
        rng = np.random.default_rng(seed + 1)
        vals["X"] = vals["X"] * np.exp2(rng.integers(-20, 21, vals["X"].shape))
        vals["y"] = vals["X"] @ vals["W"] + vals["b"] + 0.1 * rng.normal(size=vals["y"].shape)
    from ..floats import get_format, round_to_format

    fmt = get_format(dtype)
    return {key: np.asarray(round_to_format(v, fmt), dtype=np.float64) for key, v in vals.items()}


@dataclass
class OracleTarget:
    """The cost of the exact oracle and of one whole check, against a NumPy float64 step and gradcheck.

    - ``numpy-step``: the float64 NumPy step (loss, grad_W, grad_b, W', b') on the inputs.
    - ``oracle``: :func:`harness.oracle.exact_step` on the same inputs and the correctly rounded
      residual, as a check's graded step uses them (``accurate=True``: exact values, or from
      N*D*K = 2**16 on, where :func:`harness.fastexact.accurate_pays`, ``grad_W`` and ``W`` within a proved
      ``2**-60`` of the sum of the absolute terms).
    - ``check``: :func:`harness.runner.check_case` of ``numpy-hand`` in ``dtype`` (the step, the
      oracle, both bounds, every comparison).
    - ``gradcheck`` / ``gradcheck-fast``: ``torch.autograd.gradcheck`` of the same (mean) loss with
      respect to W and b in float64, full or ``fast_mode=True``.

    Calling returns whether the method passed (the oracle: True).
    """

    method: str
    size: Size
    dtype: str = "float64"
    data: str = "normal"

    def __post_init__(self) -> None:
        if self.method not in ORACLE_METHODS:
            raise ValueError(f"method must be one of {ORACLE_METHODS}, got {self.method!r}")
        self.vals = oracle_inputs(self.size, self.dtype, self.data)
        if self.method == "check":
            from ..cases import case_from_arrays
            from ..implementations import resolve

            v = self.vals
            self.case = case_from_arrays(f"oracle-{self.size.label}", v["X"], v["y"], v["W"], v["b"], lr=LR,
                                         reduction=REDUCTION, dtypes=(self.dtype,), tags=("bench",))
            self.impl = resolve(["numpy-hand"])[0]
        if self.method.startswith("gradcheck"):
            import torch

            t = {key: torch.tensor(v, dtype=torch.float64) for key, v in self.vals.items()}
            self._X, self._y = t["X"], t["y"]
            self._W = t["W"].requires_grad_(True)
            self._b = t["b"].requires_grad_(True)

    def setup(self) -> None:
        if self.method.startswith("gradcheck"):
            self._W.grad = None
            self._b.grad = None

    def _loss(self, W: Any, b: Any) -> Any:
        return ((self._X @ W + b - self._y) ** 2).mean()

    def __call__(self) -> bool:
        v = self.vals
        if self.method == "numpy-step":
            X, y, W, b = v["X"], v["y"], v["W"], v["b"]
            R = X @ W + b - y
            _loss = float(np.mean(R * R))
            g = (2.0 / R.size) * R
            gW, gb = X.T @ g, g.sum(axis=0)
            _ = (W - LR * gW, b - LR * gb)
            return True
        if self.method == "oracle":
            from fractions import Fraction

            from ..oracle import exact_inputs_from_floats, exact_step

            st = exact_step(exact_inputs_from_floats(v), Fraction(LR), REDUCTION, accurate=True)
            st.residual.to_float64()
            return True
        if self.method == "check":
            from ..runner import check_case
            from ..verdicts import failures, nothing_graded

            records = check_case(self.case, self.impl, "cpu", self.dtype)
            return not failures(records) and not nothing_graded(records)
        from torch.autograd import gradcheck

        return bool(gradcheck(self._loss, (self._W, self._b), fast_mode=self.method == "gradcheck-fast"))


# ------------------------------------------------------------------ a timer without pytest


def plan_rounds(fn: Callable[[], Any], setup: Callable[[], Any], *, target_time: float, warmup: int = 2,
                min_rounds: int = 3, max_rounds: int = 1000) -> tuple[int, float]:
    """Warm ``fn`` up and choose how many rounds fill ``target_time`` seconds.

    Runs ``warmup`` untimed calls (compilation, caches, allocator), then times
    one more.

    Returns:
        (rounds, seconds of the probe call).
    """
    for _ in range(warmup):
        setup()
        fn()
    setup()
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    rounds = int(target_time / dt) if dt > 0 else max_rounds
    return max(min_rounds, min(max_rounds, rounds)), dt


def time_rounds(fn: Callable[[], Any], setup: Callable[[], Any], rounds: int) -> list[float]:
    """Seconds of each of ``rounds`` calls of ``fn`` (``setup`` untimed before each)."""
    out = []
    for _ in range(rounds):
        setup()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out
