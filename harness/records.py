"""Result records and JSON-lines files: the harness's data (reports are views).

A results file holds one JSON object per line. The first line is an
*environment record* (``"kind": "environment"``): versions, devices, CPU,
threads, TF32 and matmul-precision settings, git commit, time. Every other
line is a :class:`Record` (``"kind": "record"``), one per case,
implementation, device, dtype, quantity and step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Record:
    """One verdict: a quantity of one step of one implementation on one case, device and dtype.

    Errors are absolute (units of the quantity) and in ULPs of ``dtype``;
    ``bound_ratio`` is the worst error divided by the rigorous bound (> 1 means
    ``disagree``), ``expected_ratio`` the same for the expected bound.
    ``exact`` is the oracle's value at ``worst_index`` for the inputs as the
    implementation saw them (rounded to ``dtype``); ``exact_written`` for the
    inputs as written (decimal), with ``ulp_error_written`` counting ULPs from
    it: the difference is input representation error, not arithmetic error.
    ``known_bug`` names a known framework bug that the implementation probed for
    and found (see :mod:`harness.verdicts` for how it counts). ``repeat_*``
    describe run-to-run determinism with ``--repeat R`` (see :mod:`harness.repeat`;
    None without it).
    """

    case: str
    implementation: str
    device: str
    dtype: str
    quantity: str
    step: int
    verdict: str
    shape: list[int] = field(default_factory=list)
    max_abs_error: float | None = None
    max_ulp_error: float | None = None
    bits_of_error: float | None = None
    bound_ratio: float | None = None
    expected_ratio: float | None = None
    worst_index: list[int] | None = None
    exact: str | None = None
    exact_rational: str | None = None
    computed: str | None = None
    rigorous_bound: float | None = None
    expected_bound: float | None = None
    abs_error_at_worst: float | None = None
    ulp_error_at_worst: float | None = None
    exact_written: str | None = None
    exact_written_rational: str | None = None
    ulp_error_written: float | None = None
    trajectory_exact: str | None = None
    drift_abs_error: float | None = None
    drift_ulp_error: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    oracle_method: str | None = None
    message: str = ""
    known_bug: str = ""
    repeat_count: int | None = None
    repeat_identical: float | None = None
    repeat_spread_abs: float | None = None
    repeat_spread_ulps: float | None = None
    repro: str = ""
    reduction: str | None = None
    tf32: bool | None = None
    matmul_precision: str | None = None
    tags: list[str] = field(default_factory=list)
    kind: str = "record"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (non-finite floats become the strings ``"inf"``, ``"-inf"``, ``"nan"``)."""
        return {k: _jsonable(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Record:
        """Inverse of :meth:`to_json`; unknown keys are ignored (forward compatibility)."""
        names = _field_names(cls)
        kw = {k: _unjson(v) for k, v in obj.items() if k in names}
        return cls(**kw)


_FIELD_NAMES: dict[type, frozenset[str]] = {}


def _field_names(cls: type) -> frozenset[str]:
    # cached: dataclasses.fields() per line dominated reading large results files
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    return names


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def _unjson(v: Any) -> Any:
    if v in ("inf", "-inf", "nan"):
        return float(v)
    return v


def git_commit() -> str | None:
    """The git commit of the harness checkout (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment_record(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Describe the machine: versions, devices, CPU, threads, TF32 settings, commit, time."""
    import numpy as np

    env: dict[str, Any] = {
        "kind": "environment",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hostname": platform.node(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "git_commit": git_commit(),
    }
    try:
        import sympy

        env["sympy"] = sympy.__version__
    except ImportError:  # pragma: no cover - sympy is a hard dependency
        pass
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
        env["float32_matmul_precision"] = torch.get_float32_matmul_precision()
        env["cuda_available"] = torch.cuda.is_available()
        env["cuda_version"] = torch.version.cuda
        if torch.cuda.is_available():
            env["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            env["cuda_matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
            env["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        env["mps_available"] = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    except ImportError:
        env["torch"] = None
    if extra:
        env.update(extra)
    return env


def write_jsonl(path: str | Path, records: Iterable[Record], env: dict[str, Any] | None = None) -> Path:
    """Write an environment line then one line per record, atomically.

    The file is written to a temporary file in the same folder and renamed, so a
    crash never leaves a half-written results file.

    Returns:
        the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a results file is shared like any other output
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(env if env is not None else environment_record()) + "\n")
            for r in records:
                fh.write(json.dumps(r.to_json()) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass
class ResultsFile:
    """What :func:`read_jsonl` found in one file."""

    path: str
    environments: list[dict[str, Any]]
    records: list[Record]
    warnings: list[str]


def read_jsonl(path: str | Path) -> ResultsFile:
    """Read a results file, tolerating a last line cut off by an interrupted run.

    Bad lines are skipped with a warning that names the file and line number.

    Raises:
        OSError: if the file cannot be read.
    """
    path = Path(path)
    envs: list[dict[str, Any]] = []
    recs: list[Record] = []
    warnings: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                warnings.append(f"{path}:{lineno}: skipped a line that is not valid JSON ({exc.msg}); the run was probably interrupted")
                continue
            if not isinstance(obj, dict):
                warnings.append(f"{path}:{lineno}: skipped a line that is not a JSON object")
            elif obj.get("kind") == "environment":
                envs.append(obj)
            else:
                try:
                    recs.append(Record.from_json(obj))
                except TypeError as exc:
                    warnings.append(f"{path}:{lineno}: skipped a record with missing fields ({exc})")
    return ResultsFile(str(path), envs, recs, warnings)
