"""Result records and JSON-lines files: the harness's data (reports are views).

A results file holds one JSON object per line. The first line is an
*environment record* (``"kind": "environment"``): the run's id (``"run"``),
versions, devices, CPU, threads, TF32 and matmul-precision settings, git
commit, time. Then one :class:`Record` per line (``"kind": "record"``), one
per case, implementation, device, dtype, quantity and step. The last line of a
run that ended is the *run-end footer* (``"kind": "run-end"``)::

    {"kind": "run-end", "run": ID, "completed": true, "records": N, "interrupted": false}

``check`` streams its file (:class:`ResultsStream`): the environment line is
written (replacing any older file at that path) before the first case runs,
each record is written and flushed as soon as its task is graded (in completion
order), and at the end the file is rewritten atomically in the deterministic
order (case, implementation, device, dtype, step, quantity) with a completed
footer. An interrupted run (SIGINT) keeps every record it finished and ends
with ``"completed": false, "interrupted": true``; a killed run (SIGKILL) has
no footer, and its finished records are all in the file.
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
import uuid
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


def new_run_id() -> str:
    """A run id: UTC time (sortable, readable) and a random suffix (unique across machines)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:12]


def environment_record(extra: dict[str, Any] | None = None, run: str | None = None) -> dict[str, Any]:
    """Describe the machine: versions, devices, CPU, threads, TF32 settings, commit, time.

    ``run`` names the run (default: a new :func:`new_run_id`); the run-end footer repeats it."""
    import numpy as np

    env: dict[str, Any] = {
        "kind": "environment",
        "run": run or new_run_id(),
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


def write_jsonl(path: str | Path, records: Iterable[Record], env: dict[str, Any] | None = None,
                footer: dict[str, Any] | None = None) -> Path:
    """Write an environment line then one line per record (and the ``footer`` line, if given), atomically.

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
            if footer is not None:
                fh.write(json.dumps(footer) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_output_path(path: str | Path, option: str) -> Path:
    """Check, before a run starts, that a file can be written at ``path``; create its folder.

    Raises:
        UsageError: ``"--results PATH: ..."`` naming why not (empty, a folder, a parent
        that is a file, a folder that is not writable).
    """
    from .errors import UsageError

    text = str(path)
    if not text.strip():
        raise UsageError(f"{option} {text!r}: empty path; give a file name")
    p = Path(text)
    if p.is_dir():
        raise UsageError(f"{option} {text}: is a folder; give a file name inside it")
    if text.endswith(("/", os.sep)):
        raise UsageError(f"{option} {text}: names a folder; give a file name")
    parent = p.parent
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{option} {text}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {text}: folder {existing} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"{option} {text}: file is not writable")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {text}: cannot create folder {parent}: {exc.strerror or exc}") from exc
    return p


class ResultsStream:
    """A results file written as the run goes (see the module docstring).

    ``open`` replaces any older file at the path with the environment line;
    :meth:`add` writes and flushes records as they are graded; :meth:`finish`
    ends the file with the run-end footer (completed runs: rewritten atomically
    in the given order)."""

    def __init__(self, path: str | Path, env: dict[str, Any]) -> None:
        self.path = Path(path)
        self.env = env
        self.run = str(env.setdefault("run", new_run_id()))
        self.count = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: Any = self.path.open("w", encoding="utf-8")
        self._write_line(env)

    def _write_line(self, obj: dict[str, Any]) -> None:
        self._fh.write(json.dumps(obj) + "\n")
        self._fh.flush()

    def add(self, records: Iterable[Record]) -> None:
        """Write and flush records (one line each)."""
        if self._fh is None:
            return
        lines = [json.dumps(r.to_json()) + "\n" for r in records]
        self._fh.write("".join(lines))
        self._fh.flush()
        self.count += len(lines)

    def footer(self, completed: bool, interrupted: bool, records: int) -> dict[str, Any]:
        return {"kind": "run-end", "run": self.run, "completed": completed, "records": records, "interrupted": interrupted}

    def finish(self, ordered: Iterable[Record] | None = None, *, interrupted: bool = False) -> Path:
        """End the file. ``ordered`` (a completed run's records): rewrite the file atomically
        in that order with a completed footer; else append an incomplete footer to what was
        streamed (``interrupted``: stopped by SIGINT)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if ordered is not None and not interrupted:
            recs = list(ordered)
            return write_jsonl(self.path, recs, self.env, footer=self.footer(True, False, len(recs)))
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(self.footer(False, interrupted, self.count)) + "\n")
        return self.path

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


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
