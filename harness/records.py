"""Result records and JSON-lines files: the harness's data (reports are views).

A results file holds one JSON object per line. The first line is an
*environment record* (``"kind": "environment"``): the run's id (``"run"``),
versions, devices, CPU, threads, TF32 and matmul-precision settings, git
commit, time. Then one :class:`Record` per line (``"kind": "record"``), one
per case, implementation, device, dtype, quantity and step. The last line of a
run that ended is the *run-end footer* (``"kind": "run-end"``)::

    {"kind": "run-end", "run": ID, "completed": true, "records": N, "interrupted": false,
     "verdicts": {"agree": N}, "known_bugs": 0, "load_errors": 0}

``check`` streams its file (:class:`ResultsStream`): the environment line is
written (replacing any older file at that path) before the first case runs,
each record is written and flushed as soon as its task is graded (in completion
order), and at the end the file is rewritten atomically in the deterministic
order (case, implementation, device, dtype, step, quantity) with a completed
footer. An interrupted run (SIGINT) keeps every record it finished and ends
with ``"completed": false, "interrupted": true``; a killed run (SIGKILL) has
no footer, and its finished records are all in the file.

Reading (:func:`read_jsonl`) never trusts a line: each is decoded and checked
against the Record contract (:func:`check_record`) on its own, and a line that
fails is *malformed*: counted, named with file and line number, never graded.

The environment line declares the version of its run's records (``"records_format"``: :data:`RECORDS_FORMAT`). A
record of a run that declares it holds every :class:`Record` field (as :meth:`Record.to_json` writes them all); a
record without one is malformed. A run that declares none (a harness before helper-181's round, or a file built by
hand) may hold records without some fields (read with the field's default), and then fails ``report --exit-status``
(:attr:`RunSpan.miscounted`): a field deleted by hand cannot be told from one an older harness never wrote.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from .errors import HarnessError
from .verdicts import FAILING, SEVERITY, contradiction

#: The version of the records a run writes, declared in its environment line (``"records_format"``). Format 2
#: (helper-181): every record holds every :class:`Record` field, and :func:`read_jsonl` refuses one without a field (a
#: passing record whose ``computed`` or ``lower_limit`` was deleted could not be checked against its exact value or its
#: floor, and read as passing). Files without it come from a harness before helper-181's round (format 1: records
#: may lack ``lower_limit``, added in helper-176's), or were built by hand.
RECORDS_FORMAT = 2


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
    ``exact_rational`` is the exact value as a fraction (None when it would take
    over 80 characters); ``exact_radius`` is None when ``exact`` is exact, else
    (an accurate step of the integer-slice oracle, named in ``oracle_method``)
    the proved radius of ``exact`` at ``worst_index``: ``|exact - true| <=
    exact_radius`` (``exact_rational`` and ``exact_written_rational`` are then
    None).
    ``lower_limit`` is the loss's floor where it was formed (a loss record whose computed value is below the floor's
    ceiling: :meth:`harness.bounds.LossFloor.lower_limit`, the loss's units; None elsewhere): a finite loss below it
    is ``disagree`` whatever its two-sided bounds say, so a record whose ``computed`` is below it never passes
    (:func:`harness.verdicts.contradiction`).
    ``known_bug`` names a known framework bug that the implementation probed for
    and found (see :mod:`harness.verdicts` for how it counts). ``diagnosis`` names
    the likely cause of a failing record in a few words ("gradient accumulation",
    "gradient off by a factor of 1/2", ...; empty when none was found); the
    message then says "looks like: <diagnosis>". ``repeat_*``
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
    exact_radius: float | None = None
    computed: str | None = None
    rigorous_bound: float | None = None
    expected_bound: float | None = None
    abs_error_at_worst: float | None = None
    ulp_error_at_worst: float | None = None
    lower_limit: float | None = None
    exact_written: str | None = None
    exact_written_rational: str | None = None
    ulp_error_written: float | None = None
    trajectory_exact: str | None = None
    drift_abs_error: float | None = None
    drift_ulp_error: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    oracle_method: str | None = None
    message: str = ""
    diagnosis: str = ""
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
        d = self.__dict__  # the fields' values, copied as dataclasses.asdict does (without its deepcopy of leaves)
        out: dict[str, Any] = {}
        for k in _FIELD_NAMES:
            v = d[k]
            if isinstance(v, float):
                v = _jsonable(v)
            elif isinstance(v, (list, tuple, dict)):
                v = _plain(v)
            out[k] = v
        return out

    @classmethod
    def from_json(cls, obj: Any, *, known_verdict: bool = False, complete: bool = False) -> Record:
        """Inverse of :meth:`to_json`, checked against the Record contract.

        Unknown keys are ignored (forward compatibility). Every known key must have
        its contract type (see :func:`check_record`); ``"inf"``, ``"-inf"`` and
        ``"nan"`` strings in float fields become floats. With ``known_verdict``
        (how :func:`read_jsonl` reads files) the verdict must also be one of
        :data:`harness.verdicts.VERDICTS`; without it any string passes, and the
        verdict policy treats an unknown one as a failure. With ``complete`` (a record of a run that declares
        :data:`RECORDS_FORMAT`) every field of :class:`Record` must be present.

        Raises:
            MalformedRecordError: (a ``ValueError``) naming the first key whose value breaks the contract.
        """
        kw = check_record(obj, known_verdict=known_verdict, complete=complete)
        rec = cls.__new__(cls)
        # the checked values are exactly the dataclass fields: skip __init__'s ~40 keyword
        # arguments (reading large results files spent most of its time there)
        rec.__dict__.update(_DEFAULTS)
        for name in _FACTORY_FIELDS:
            if name not in kw:
                rec.__dict__[name] = _FACTORY_FIELDS[name]()
        rec.__dict__.update(kw)
        return rec


#: The head of the message of each record a known framework bug explains (:func:`harness.runner.check_case` writes
#: it; :func:`check_record` reads it).
KNOWN_BUG = "known framework bug: "


class MalformedRecordError(ValueError):
    """A line of a results file breaks the Record contract (a wrong type, a missing field, an unknown verdict)."""


#: Largest integer a record may hold (shape, index, step, counts): int64, what numpy and the plots can take.
_INT_MAX = 2**63 - 1
_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
_NoneType = type(None)


def _quote(v: Any) -> str:
    try:
        text = json.dumps(v)
    except (ValueError, TypeError, RecursionError):  # pragma: no cover - values come from json.loads
        text = "<unprintable>"
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(key: str, v: Any, want: str) -> MalformedRecordError:
    return MalformedRecordError(f"key {key!r}: expected {want}, got {_quote(v)}")


def _int(key: str, v: Any) -> int:
    if type(v) is not int or not 0 <= v <= _INT_MAX:
        raise _bad(key, v, "a non-negative integer")
    return v


def _float(key: str, v: Any) -> float | None:
    if v is None:
        return None
    t = type(v)
    if t is float:
        return v
    if t is int:
        try:
            return float(v)
        except OverflowError:
            raise _bad(key, v, "a float") from None
    if t is str and v in _NON_FINITE:
        return _NON_FINITE[v]
    raise _bad(key, v, 'a number, "inf", "-inf", "nan" or null')


def _int_list(key: str, v: Any) -> list[int]:
    if type(v) is not list:
        raise _bad(key, v, "a list of integers")
    for x in v:
        if type(x) is not int or not 0 <= x <= _INT_MAX:
            raise _bad(key, v, "a list of non-negative integers")
    return v


def _opt_int_list(key: str, v: Any) -> list[int] | None:
    return None if v is None else _int_list(key, v)


def _str_list(key: str, v: Any) -> list[str]:
    if type(v) is not list or any(type(x) is not str for x in v):
        raise _bad(key, v, "a list of strings")
    return v


def _counts(key: str, v: Any) -> dict[str, int]:
    if type(v) is not dict:
        raise _bad(key, v, "an object of counts")
    for x in v.values():
        if type(x) is not int or not 0 <= x <= _INT_MAX:
            raise _bad(key, v, "an object of non-negative integer counts")
    return v


def _strict(want: str) -> Any:
    def check(key: str, v: Any) -> Any:
        raise _bad(key, v, want)
    return check


def _verdict(key: str, v: Any) -> str:
    if type(v) is str and v in SEVERITY:
        return v
    raise _bad(key, v, "one of " + ", ".join(SEVERITY))


def _any_verdict(key: str, v: Any) -> str:
    if type(v) is str:
        return v
    raise _bad(key, v, "a verdict (a string)")


def _kind(key: str, v: Any) -> str:
    if v == "record" and type(v) is str:
        return v
    raise _bad(key, v, '"record"')


#: annotation of a Record field -> (types accepted as they are, checker for anything else).
_CHECKERS: dict[str, tuple[tuple[type, ...], Any]] = {
    "str": ((str,), _strict("a string")),
    "str | None": ((str, _NoneType), _strict("a string or null")),
    "int": ((), _int),
    "int | None": ((_NoneType,), _int),
    "float | None": ((float, _NoneType), _float),
    "bool | None": ((bool, _NoneType), _strict("true, false or null")),
    "list[int]": ((), _int_list),
    "list[int] | None": ((_NoneType,), _opt_int_list),
    "list[str]": ((), _str_list),
    "dict[str, int]": ((), _counts),
}


def _unchecked(key: str, v: Any) -> Any:
    return v


#: Record fields whose annotation has no check in :data:`_CHECKERS` (read as they are; the tests
#: require this to be empty, so a new field gets a check rather than breaking every import).
UNCHECKED_FIELDS: list[str] = []


def _record_checks() -> dict[str, tuple[tuple[type, ...], Any]]:
    checks: dict[str, tuple[tuple[type, ...], Any]] = {}
    for f in dataclasses.fields(Record):
        ann = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if ann not in _CHECKERS:  # pragma: no cover - test_report_hostile fails the moment such a field is added
            UNCHECKED_FIELDS.append(f.name)
            checks[f.name] = ((), _unchecked)
            continue
        checks[f.name] = _CHECKERS[ann]
    checks["verdict"] = ((), _verdict)
    checks["kind"] = ((), _kind)
    return checks


_CHECKS = _record_checks()
_CHECKS_ANY_VERDICT = {**_CHECKS, "verdict": ((str,), _any_verdict)}
_REQUIRED = tuple(f.name for f in dataclasses.fields(Record)
                  if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Record))
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Record) if f.default is not dataclasses.MISSING}
_FACTORY_FIELDS = {f.name: f.default_factory for f in dataclasses.fields(Record) if f.default_factory is not dataclasses.MISSING}


def check_record(obj: Any, *, known_verdict: bool = True, complete: bool = False) -> dict[str, Any]:
    """Check a decoded JSON object against the Record contract; return the known fields, converted.

    The contract: ``case``, ``implementation``, ``device``, ``dtype``, ``quantity``
    (strings), ``step`` (a non-negative integer) and ``verdict`` (one of
    :data:`harness.verdicts.VERDICTS`) are required; optional fields have the types of
    :class:`Record`: strings, integers, floats (or ``"inf"``, ``"-inf"``, ``"nan"``),
    lists of non-negative integers (``shape``, ``worst_index``), a list of strings
    (``tags``) and an object of non-negative integer counts (``counts``). ``null`` is
    accepted only where the field is optional (``... | None``). Unknown keys are ignored.
    With ``known_verdict`` the verdict must also agree with the record's own counts and ratios
    (:func:`harness.verdicts.contradiction`); without it the verdict may be any string. With ``complete`` (a record of
    a run whose environment line declares :data:`RECORDS_FORMAT`) every field of :class:`Record` is required: the
    harness writes them all, and a passing record whose ``computed`` or ``lower_limit`` was deleted left nothing to
    check its verdict against (helper-181).

    Raises:
        MalformedRecordError: naming the first offending key and quoting its value.
    """
    if type(obj) is not dict:
        raise MalformedRecordError(f"expected a JSON object, got {type(obj).__name__}")
    checks = _CHECKS if known_verdict else _CHECKS_ANY_VERDICT
    # Lines written by one harness share their keys, key order and value types: plan the checks once
    # per such signature (which keys need more than a type test, whether any key is unknown).
    sig = (known_verdict, complete, tuple(obj), tuple(map(type, obj.values())))
    plan = _PLANS.get(sig)
    if plan is None:
        plan = _plan(obj, checks, complete)
        if len(_PLANS) < _MAX_PLANS:
            _PLANS[sig] = plan
    slow, unknown = plan
    kw = {k: v for k, v in obj.items() if k in checks} if unknown else dict(obj)
    for k in slow:
        kw[k] = checks[k][1](k, kw[k])
    if known_verdict:
        why = contradiction(kw["verdict"], kw["quantity"], kw.get("counts") or {}, kw.get("bound_ratio"),
                            kw.get("expected_ratio"), abs_error_at_worst=kw.get("abs_error_at_worst"),
                            rigorous_bound=kw.get("rigorous_bound"), expected_bound=kw.get("expected_bound"),
                            shape=kw.get("shape"), exact=kw.get("exact"),
                            computed=kw.get("computed"), lower_limit=kw.get("lower_limit"),
                            exact_rational=kw.get("exact_rational"))
        if why is not None:
            raise MalformedRecordError(f"its verdict {kw['verdict']!r} contradicts its own figures: {why} (edited by hand?)")
        bug = kw.get("known_bug")
        if bug and not str(kw.get("message") or "").startswith(f"{KNOWN_BUG}{bug}"):
            # the harness names the bug at the head of the message of each record it explains (runner._mark_known_bug):
            # a known_bug added by hand to a failing record took it out of the exit status (helper-124)
            raise MalformedRecordError(f"its known_bug {_quote(bug)} is not the one its message names (edited by hand?)")
    return kw


_PLANS: dict[tuple[Any, ...], tuple[tuple[str, ...], bool]] = {}
_MAX_PLANS = 512


def _plan(obj: dict[str, Any], checks: dict[str, tuple[tuple[type, ...], Any]],
          complete: bool = False) -> tuple[tuple[str, ...], bool]:
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise MalformedRecordError(f"missing required key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")
    absent = absent_fields(obj) if complete else ()
    if absent:
        raise MalformedRecordError(
            f"missing key{'s' if len(absent) > 1 else ''} {', '.join(map(repr, absent[:5]))}{', ...' if len(absent) > 5 else ''}"
            f": every record of a run that declares records_format {RECORDS_FORMAT} holds all {len(_FIELD_NAMES)} fields "
            "(deleted by hand?)")
    slow = tuple(k for k, v in obj.items() if k in checks and type(v) not in checks[k][0])
    return slow, any(k not in checks for k in obj)


_ABSENT: dict[tuple[str, ...], tuple[str, ...]] = {}


def absent_fields(obj: dict[str, Any]) -> tuple[str, ...]:
    """The :class:`Record` fields that the decoded record line ``obj`` lacks, in field order (one look-up per key order:
    lines written by one harness share theirs)."""
    keys = tuple(obj)
    got = _ABSENT.get(keys)
    if got is None:
        held = set(keys)
        got = tuple(k for k in _FIELD_NAMES if k not in held)
        if len(_ABSENT) < _MAX_PLANS:
            _ABSENT[keys] = got
    return got


def _plain(v: Any) -> Any:
    """A copy of lists, tuples and dicts (recursively); other values as they are."""
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, tuple):
        return tuple(_plain(x) for x in v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def encode_line(obj: dict[str, Any]) -> str:
    """One line of a results file (without its newline): ``obj`` as JSON, where every string holds only text that
    UTF-8 can carry. A lone surrogate (``"\\udcff"``: an undecodable byte of a file name or an exception text, as
    Python's ``surrogateescape`` keeps it) is written as its escape in words, ``\\udcff``: written as JSON's
    ``\\udcff`` escape, :func:`read_jsonl` (rightly) finds the line malformed, and a failing record was lost from
    every count (helper-79)."""
    text = json.dumps(obj)
    if ("\\ud" in text or "\\uD" in text) and _lone_surrogate(obj):
        text = json.dumps(_text_only(obj))
    return text


def _text_only(v: Any) -> Any:
    """``v`` with each lone surrogate in its strings (keys included) replaced by its backslash escape."""
    if isinstance(v, str):
        return v.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(v, list | tuple):
        return [_text_only(x) for x in v]
    if isinstance(v, dict):
        return {_text_only(k): _text_only(x) for k, x in v.items()}
    return v


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
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


def command_line() -> str:
    """The command line of this process as it was typed, as one shell-quoted string
    (``sys.orig_argv``: ``.venv/bin/python -m harness check --all``, ``.venv/bin/python -m pytest tests/test_sweep.py``)."""
    import shlex

    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    if argv and os.path.isabs(argv[0]):
        try:
            rel = os.path.relpath(argv[0])
            argv[0] = rel if not rel.startswith("..") else argv[0]
        except ValueError:  # another drive on Windows
            pass
    return shlex.join(argv)


def previous_path(path: str | Path) -> Path:
    """Where :func:`keep_previous` keeps the file at ``path``: ``reports/results.jsonl`` ->
    ``reports/results.prev.jsonl``, ``reports/agreement.html`` -> ``reports/agreement.prev.html``."""
    p = Path(path)
    return p.with_name(f"{p.stem}.prev{p.suffix}")


def check_previous_path(path: str | Path, option: str) -> None:
    """Check, before a run starts, that :func:`keep_previous` can keep the file at ``path``.

    Raises:
        UsageError: when :func:`previous_path` is a folder, a symbolic link or not a regular file.
    """
    from .errors import UsageError

    prev = previous_path(path)
    if prev.is_symlink() or (prev.exists() and not prev.is_file()):
        raise UsageError(f"{option} {path}: {prev}, where the previous run's file is kept, is not a regular file; move it away")


def has_footer(path: str | Path) -> bool:
    """Whether the results file at ``path`` ends with a ``run-end`` footer (False for a missing or unreadable file)."""
    try:
        with Path(path).open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4096))
            lines = [line for line in fh.read().splitlines() if line.strip()]
        return bool(lines) and json.loads(lines[-1]).get("kind") == "run-end"
    except (OSError, ValueError, AttributeError):
        return False


def keep_previous(path: str | Path) -> Path | None:
    """Keep the file at ``path`` as :func:`previous_path` before a new run replaces it.

    One generation is kept (an older previous copy is replaced), as a rename: atomic, and
    free for a 100 MB results file. Returns the previous copy's path, or None when there was
    no file at ``path``.

    Raises:
        OSError: when the rename fails (a folder that is not writable; checked before the run
            by :func:`check_output_path`).
    """
    p = Path(path)
    if not p.is_file() or p.is_symlink():
        return None
    prev = previous_path(p)
    os.replace(p, prev)
    return prev


def environment_record(extra: dict[str, Any] | None = None, run: str | None = None) -> dict[str, Any]:
    """Describe the machine: versions, devices, CPU, threads, TF32 settings, commit, time.

    ``run`` names the run (default: a new :func:`new_run_id`); the run-end footer repeats it. It declares
    :data:`RECORDS_FORMAT` and so holds the implementations the run named, ``"named"`` (default: none) and ``"unrun"``
    (default: true), which ``extra`` sets (``check``'s, the pytest plugin's): a line of that format without them is
    read as edited (:attr:`RunSpan.unnamed`)."""
    import numpy as np

    env: dict[str, Any] = {
        "kind": "environment",
        "run": run or new_run_id(),
        "records_format": RECORDS_FORMAT,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hostname": platform.node(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "git_commit": git_commit(),
        "command": command_line(),
        "named": [],
        "unrun": True,
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
    for name in ("jax", "jaxlib", "tensorflow", "cupy", "ml_dtypes"):  # the plug-ins' frameworks, never imported here
        module = sys.modules.get(name)
        if module is not None:
            env[name] = getattr(module, "__version__", None)
    if extra:
        env.update(extra)
    return env


def write_jsonl(path: str | Path, records: Iterable[Record], env: dict[str, Any] | None = None,
                footer: dict[str, Any] | None = None, lines: Iterable[str] = ()) -> Path:
    """Write an environment line then one line per record (and the ``footer`` line, if given), atomically.
    ``lines``: records already encoded (JSON, without the newline), written after ``records``.

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
            fh.write(encode_line(env if env is not None else environment_record()) + "\n")
            for r in records:
                fh.write(encode_line(r.to_json()) + "\n")
            for line in lines:
                fh.write(line + "\n")
            if footer is not None:
                fh.write(encode_line(footer) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


#: Lines longer than this (bytes) are skipped as malformed without being read into memory whole.
MAX_LINE_BYTES = 1 << 20
#: Malformed lines listed one by one per file (all are counted).
MAX_MALFORMED_LISTED = 1000


@dataclass
class Malformed:
    """A line of a results file left out of every figure: where, and why."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class RunSpan:
    """One run in a results file: from its environment line to its ``run-end`` line (if any).

    ``end`` is the ``{"kind": "run-end", "completed": ..., "records": N}`` footer, or None
    when the file stops before it (the run was interrupted or is still running).
    ``records`` and ``malformed`` count the record lines read in this run.
    """

    line: int
    run: str | None = None
    end: dict[str, Any] | None = None
    end_line: int | None = None
    records: int = 0
    malformed: int = 0
    #: the records read in this run, by verdict (compared with the ``run-end`` line's ``verdicts``)
    verdicts: dict[str, int] = field(default_factory=dict)
    #: how many of them carry a known framework bug (``known_bug``; compared with the ``run-end`` line's ``known_bugs``)
    known_bugs: int = 0
    #: how many load errors its environment line lists (``load_errors``; None: no environment line, or not a list)
    load_errors: int | None = None
    #: the ``records_format`` its environment line declares (None: none, or not a positive integer; see
    #: :data:`RECORDS_FORMAT`)
    records_format: int | None = None
    #: how many of its records lack a :class:`Record` field (read in a run that declares no format), and the first
    #: one's line and the first field it lacks
    partial: int = 0
    partial_first: tuple[int, str] | None = None
    #: the implementations its run named (its environment line's ``"named"``: ``check --implementations``, the pytest
    #: plugin's; None where it names none), and which of them had no task (``"unrun"``: True, every one without a
    #: record): each must grade something, as the run's own exit status required (:func:`harness.verdicts.ungraded_named`)
    named: list[str] | None = None
    unrun: bool | list[str] = False
    #: the index of its first record among the file's records (its records follow one another)
    first_record: int = 0
    #: why its environment line, which declares :data:`RECORDS_FORMAT`, does not name the implementations its run named
    #: as every harness of that format writes them (``named``: a list of names; ``unrun``: true or a list of names), or
    #: None: ``named`` deleted, or ``unrun`` edited to false, read as a run that named none, or whose named
    #: implementations without a record were deselected, and a run that ``check`` failed passed (helper-184)
    unnamed: str | None = None
    #: ``(K, N)`` of a ``check --shard K/N`` run (its environment line's ``"shard"``; None for a whole run, or a
    #: pytest session's, whose own tests may grade cases of their own), how many of its records grade a case of another
    #: shard (:func:`harness.shard.shard_index`: never one of ``check``'s), and the first one's line and case
    shard: tuple[int, int] | None = None
    off_shard: int = 0
    #: whether it has no environment line (its first line is a record or its run-end line): no harness writes one so,
    #: and an environment line whose ``kind`` was edited (``"note"``: skipped as a kind unknown to this version) hid its
    #: ``named`` and ``records_format`` (helper-184)
    headless: bool = False
    off_shard_first: tuple[int, str] | None = None

    @property
    def completed(self) -> bool:
        # (a run stopped by SIGINT never completed: its run-end line's "completed" edited to true left "interrupted":
        # true, and the report passed the interrupted run's records as a whole run, helper-131)
        return self.end is not None and self.end.get("completed") is True and self.end.get("interrupted") is not True

    @property
    def miscounted(self) -> str | None:
        """Why this run's lines do not match its ``run-end`` line (another run's id, or another count of records: lines
        of it deleted, repeated or another run's pasted in), or None where they match or it has no id or count."""
        ended = self.end.get("run") if self.end is not None else None
        if self.run is not None and ended is not None and str(ended)[:200] != self.run:
            return f"its run-end line names another run, {str(ended)[:200]!r}"
        count = self.end.get("records") if self.end is not None else None
        if type(count) is int and count != self.records + self.malformed:
            return (f"its run-end line counts {count} record(s); the file holds {self.records + self.malformed}"
                    + (f" ({self.malformed} malformed)" if self.malformed else ""))
        # a line pasted over another (a disagree record replaced by a copy of an agree one) keeps the count: the
        # run-end line's verdicts tell (helper-131); with malformed lines the file fails already, and says why
        said = self.end.get("verdicts") if self.end is not None else None
        if type(said) is dict and not self.malformed and said != self.verdicts:
            return (f"its run-end line counts the verdicts {_tally_text(said)}; the file holds {_tally_text(self.verdicts)} "
                    "(a record's line edited, or pasted over another)")
        bugs = self.end.get("known_bugs") if self.end is not None else None
        if type(bugs) is int and not self.malformed and bugs != self.known_bugs:
            return (f"its run-end line counts {bugs} record(s) a known framework bug explains; the file holds "
                    f"{self.known_bugs} (a record's known_bug edited?)")
        errors = self.end.get("load_errors") if self.end is not None else None
        if type(errors) is int and self.load_errors is not None and errors != self.load_errors:
            return (f"its run-end line counts {errors} case file(s) or case(s) that could not be loaded; its environment "
                    f"line lists {self.load_errors} (its load_errors edited?)")
        if self.unnamed is not None:
            return self.unnamed
        if self.headless and self.end is not None:
            # (a run without a run-end line fails already, as interrupted or still running)
            return ("it has no environment line before its records and run-end line (every run's first line; deleted, "
                    "or its \"kind\" edited?): the implementations it named and its records' format cannot be read")
        if self.off_shard and self.shard is not None and self.off_shard_first is not None:
            # (a copy of shard 1/2's passing file, its shard edited to 2/2, stood in for the failing shard 2/2: every
            # case of a check run's shard is of that shard, helper-184)
            line, case = self.off_shard_first
            return (f"its environment line says shard {self.shard[0]}/{self.shard[1]} but {self.off_shard} of its "
                    f"record(s) grade cases of another shard (line {line}: case {case[:80]!r}, of shard "
                    f"{_shard_index(case, self.shard[1])}/{self.shard[1]}; its shard edited?)")
        if self.partial and self.partial_first is not None:
            # (a run that declares the format refuses such a record as malformed; one that declares none is read, but a
            # field deleted by hand, computed or lower_limit, cannot be told from one an older harness never wrote)
            line, key = self.partial_first
            return (f"{self.partial} of its record(s) lack fields that every record of this version holds (line {line} "
                    f"lacks {key!r}) and its environment line declares no records_format (written by a harness before "
                    "helper-181's round, or edited since): their verdicts cannot be checked; run the check again")
        end = self.end or {}
        missing = [k for k, kind in (("records", int), ("verdicts", dict), ("known_bugs", int), ("load_errors", int))
                   if type(end.get(k)) is not kind]
        if self.completed and not self.malformed and missing:
            # the counts were compared only where present: a failing run's disagree record edited to agree (or given a
            # known_bug), its load errors emptied, with the count deleted from its run-end line or set to null, passed
            # `report --exit-status` (helper-146). Every run-end line written since helper-131's round holds all four
            # (run_end); a run that did not complete fails already, and says so.
            return (f"its run-end line does not hold {', '.join(repr(k) for k in missing)} (written before the harness's "
                    "helper-131 round, or edited since): its records cannot be checked against it; run the check again")
        return None


def verdict_tally(records: Iterable[Record]) -> dict[str, int]:
    """How many of ``records`` have each verdict, in sorted order of the verdicts: the ``run-end`` line's ``verdicts``
    (a line edited or pasted over another changes it, where the count of lines stays)."""
    tally: dict[str, int] = {}
    for r in records:
        v = r.verdict if type(r.verdict) is str else str(r.verdict)  # (as JSON writes a key; such a record reads malformed)
        tally[v] = tally.get(v, 0) + 1
    return dict(sorted(tally.items()))


def _tally_text(tally: dict[Any, Any]) -> str:
    return "{" + ", ".join(f"{str(k)[:40]}: {str(v)[:20]}" for k, v in sorted(tally.items(), key=lambda kv: str(kv[0]))[:10]) + "}"


def run_end(run: str, env: dict[str, Any], *, completed: bool, interrupted: bool, records: Sequence[Record]) -> dict[str, Any]:
    """The ``run-end`` line of a run: whether it completed, how many records it wrote, of which verdicts
    (:func:`verdict_tally`) and how many of them a known framework bug explains (``known_bugs``), and how many load
    errors its environment line lists (``load_errors``)."""
    errors = env.get("load_errors")
    return {"kind": "run-end", "run": run, "completed": completed, "records": len(records), "interrupted": interrupted,
            "verdicts": verdict_tally(records), "known_bugs": sum(1 for r in records if isinstance(r.known_bug, str) and r.known_bug),
            "load_errors": len(errors) if isinstance(errors, list) else 0}


def run_input_files(case_files: Iterable[str], plugins: Iterable[str]) -> list[str]:
    """The files a run reads, which no output may replace: its ``.py`` plug-ins, its case files and the CSV data
    files they name (``data = "..."``, next to the case file). One list for ``check`` and the pytest plugin (the
    plugin listed every file under a case folder, so a results file kept there was refused on the second run,
    helper-80)."""
    import tomllib

    out = [p for p in plugins if p.endswith(".py")]
    for source in dict.fromkeys(case_files):
        out.append(source)
        try:
            doc = tomllib.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for spec in doc.get("case", []) if isinstance(doc.get("case"), list) else []:
            data = spec.get("data") if isinstance(spec, dict) else None
            if isinstance(data, str) and data:
                out.append(str(Path(source).parent / data))
    return out


def check_output_path(path: str | Path, option: str, inputs: Iterable[str | Path] = (),
                      case_paths: Iterable[str | Path] = ()) -> Path:
    """Check, before a run starts, that a file can be written at ``path``; create its folder.

    Args:
        inputs: files the run reads (case files, data files, plug-ins): neither the output nor the file where it keeps
            its earlier one (:func:`previous_path`) may be one of them.
        case_paths: the run's case files and folders (``--cases``): neither the output nor its previous path may be a
            file that their walk reads (:func:`harness.cases.read_as_case_file`): ``--results cases/new.toml`` wrote
            records that the next run read as a case file, and ``--case seed --results cases/other.toml`` replaced a
            case file the run did not select (helper-146).

    Raises:
        UsageError: ``"--results PATH: ..."`` naming why not (empty, a folder, a parent
        that is a file, a folder that is not writable, an existing path that is not a
        regular file: a symlink, a FIFO, a device such as /dev/null; one of the run's inputs).
    """
    import stat

    from .errors import UsageError

    text = str(path)
    if not text.strip():
        raise UsageError(f"{option} {text!r}: empty path; give a file name")
    p = Path(text)
    try:
        os.lstat(p)
    except (FileNotFoundError, NotADirectoryError):
        pass  # (a new file; a parent that is a file is named below)
    except OSError as exc:  # a name too long for the file system, a loop of links: Path's own checks raise these
        raise UsageError(f"{option} {text}: {exc.strerror or exc}") from exc
    if p.is_symlink():
        raise UsageError(f"{option} {text}: is a symbolic link; give the path of a regular file (the run replaces the file)")
    try:
        mode = os.stat(p).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISDIR(mode) and not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise UsageError(f"{option} {text}: is {kind}, not a regular file; the run replaces the file at this path: "
                         "give the path of a regular file (--report none writes no report)")
    from .cases import read_as_case_file

    prev = previous_path(p)
    for src in inputs:
        for out, what in ((p, "is"), (prev, f"keeps its earlier file as {prev}, which is")):
            try:
                same = os.path.realpath(src) == os.path.realpath(out) or (out.exists() and os.path.samefile(src, out))
            except OSError:
                same = False
            if same:
                raise UsageError(f"{option} {text}: {what} one of the run's input files ({src}); the run would overwrite it")
    case_paths = list(case_paths)
    for out, what in ((p, "is"), (prev, f"keeps its earlier file as {prev}, which is")):
        if read_as_case_file(out, case_paths):
            raise UsageError(f"{option} {text}: {what} a case file of this run (its cases: {', '.join(map(str, case_paths))}): "
                             "the run would replace it, or the next run read the output as a case file; give a path "
                             "outside the case folders or a name that does not end in .toml")
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
    # a file is created there, under the longest name the run uses (the temporary files of write_jsonl and of the
    # report's write_atomic: a dot, the name, a dot, 8 random characters, ".tmp"): a name too long for the file system,
    # /proc or /sys passed the checks above and failed at the run's end (a traceback, exit 1; helpers 66 and 67)
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{option} {text}: cannot write a file there: {exc.strerror or exc}") from exc
    return p


class ResultsWriteError(HarnessError):
    """The results file could not be written as the run went (a full disk: ENOSPC; a file size limit: EFBIG). ``check``
    ended with two chained tracebacks (the write, then the footer's in its handler; helper-126); it now stops the run
    with this message and exit 2, the file holding the records written before it and no ``completed`` footer."""

    def __init__(self, path: Path, written: int, exc: OSError) -> None:
        self.path, self.written = path, written
        super().__init__(f"results file {path}: cannot be written ({exc.strerror or exc}) after {written} record(s); the "
                         "run was stopped, its file holds those records and does not read as a completed run")


class ResultsStream:
    """A results file written as the run goes (see the module docstring).

    ``open`` replaces any older file at the path with the environment line;
    :meth:`add` writes and flushes records as they are graded; :meth:`finish`
    ends the file with the run-end footer (completed runs: rewritten atomically
    in the given order). The run reads back its own file, never the path: where another
    writer replaced the file at the path meanwhile (two runs given one ``--results``),
    the run's file ends beside it as ``NAME.RUN.EXT`` (:attr:`diverted`) and neither
    run's records are lost or mixed (the second run's completed file held the first
    one's records under its own environment line, helper-94)."""

    def __init__(self, path: str | Path, env: dict[str, Any]) -> None:
        self.path = Path(path)
        self.env = env
        self.run = str(env.setdefault("run", new_run_id()))
        self.count = 0
        # id(record) -> (record, its line's index among the streamed record lines): the final rewrite copies the
        # streamed lines instead of encoding every record a second time (the record is held, so its id stays its own)
        self._streamed: dict[int, tuple[Record, int]] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: Any = self.path.open("w+", encoding="utf-8")
        st = os.fstat(self._fh.fileno())
        self._identity = (st.st_dev, st.st_ino)
        #: where the run's file ended, when not at :attr:`path` (another writer had replaced the file there)
        self.diverted: Path | None = None
        #: after :meth:`finish` of a completed run: what :func:`read_jsonl` finds in the file it wrote, found without
        #: reading it back (:func:`read_back`); None before, or for an incomplete run
        self.written: ResultsFile | None = None
        #: set by :meth:`finish` where the file did not hold what this run wrote (something else wrote into it)
        self.tampered: str | None = None
        # the bytes this run wrote, and their CRC-32: finish reuses the streamed lines only where the file holds them
        self._size = 0
        self._crc = 0
        self._write_line(env)

    def _written(self, text: str) -> None:
        data = text.encode("utf-8")
        self._size += len(data)
        self._crc = zlib.crc32(data, self._crc)

    def _write_line(self, obj: dict[str, Any]) -> None:
        line = encode_line(obj) + "\n"
        self._fh.write(line)
        self._fh.flush()
        self._written(line)

    def add(self, records: Iterable[Record]) -> None:
        """Write and flush records (one line each).

        Raises:
            ResultsWriteError: the file cannot be written (a full disk, a file size limit): the file is closed, holding
                the records written before without a footer, and :meth:`finish` ends it as an unfinished run if it can.
        """
        if self._fh is None:
            return
        lines: list[str] = []
        for r in records:
            self._streamed[id(r)] = (r, self.count + len(lines))
            lines.append(encode_line(r.to_json()) + "\n")
        text = "".join(lines)
        try:
            self._fh.write(text)
            self._fh.flush()
        except OSError as exc:
            # the text left in the buffer is dropped: closing flushes it again, which fails again
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None
            raise ResultsWriteError(self.path, self.count, exc) from exc
        self._written(text)
        self.count += len(lines)

    def footer(self, completed: bool, interrupted: bool, records: Sequence[Record]) -> dict[str, Any]:
        return run_end(self.run, self.env, completed=completed, interrupted=interrupted, records=records)

    def _streamed_records(self) -> list[Record]:
        """The records streamed so far, in the order written (not those of a write that failed)."""
        return [r for r, i in sorted(self._streamed.values(), key=operator.itemgetter(1)) if i < self.count]

    def _target(self) -> Path:
        """Where the run's file ends: :attr:`path` while the file there is the one this run opened, else
        ``NAME.RUN.EXT`` beside it (recorded in :attr:`diverted`)."""
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                return self.path
        except OSError:
            pass
        self.diverted = self.path.with_name(f"{self.path.stem}.{self.run}{self.path.suffix}")
        return self.diverted

    def finish(self, ordered: Iterable[Record] | None = None, *, interrupted: bool = False) -> Path:
        """End the file. ``ordered`` (a completed run's records): rewrite the file atomically
        in that order with a completed footer; else append an incomplete footer to what was
        streamed (``interrupted``: stopped by SIGINT).

        Returns:
            the path of the run's file: :attr:`path`, or :attr:`diverted` where another writer replaced it."""
        target = self._target()
        if self._fh is not None:  # the lines as this run wrote them, from its own file (records do not change once graded)
            self._fh.flush()
            self._fh.buffer.seek(0)
            raw = self._fh.buffer.read()
            self._fh.close()
            self._fh = None
            if len(raw) == self._size and zlib.crc32(raw) == self._crc:
                text = raw.decode("utf-8")
            else:
                # a stray write into the file's descriptor (a C library's stale descriptor, a plug-in): its lines are not
                # this run's as written, and copying them by index shifted records (one newline dropped a disagree
                # record and repeated another: a completed file that passed where check failed, helper-126); every
                # record is written again from memory
                self.tampered = (f"{target} was written by something other than this run while it ran ({len(raw)} bytes "
                                 f"where the run wrote {self._size}); its records were written again from memory")
                text = ""
        else:
            text = target.read_text(encoding="utf-8") if target == self.path and self.tampered is None else ""
        streamed = text.split("\n")[1:]
        if self.tampered is not None and ordered is None:  # an unfinished run: its records from memory, as streamed
            written = self._streamed_records()
            streamed = [encode_line(r.to_json()) for r in written]
            self._streamed.clear()
            footer = self.footer(False, interrupted, written)
            return write_jsonl(target, (), self.env, footer=footer, lines=streamed)
        if ordered is not None and not interrupted:
            recs = list(ordered)
            lines: list[str] = []
            for r in recs:
                seen = self._streamed.get(id(r))
                line = streamed[seen[1]] if seen is not None and seen[0] is r and seen[1] < len(streamed) else None
                lines.append(line if line else encode_line(r.to_json()))
            as_streamed = self._streamed_records()  # (what the streamed file holds, should the rewrite fail)
            self._streamed.clear()
            footer = self.footer(True, False, recs)
            try:
                path = write_jsonl(target, (), self.env, footer=footer, lines=lines)
            except OSError as exc:  # the streamed file is left as it was (write_jsonl replaces it only when written)
                try:
                    with target.open("a", encoding="utf-8") as fh:
                        fh.write(encode_line(self.footer(False, False, as_streamed)) + "\n")
                except OSError:
                    pass  # no footer: the file reads as unfinished all the same
                raise ResultsWriteError(target, self.count, exc) from exc
            self.written = read_back(path, self.env, recs, lines, footer)
            return path
        footer = self.footer(False, interrupted, self._streamed_records())
        if target == self.path:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(encode_line(footer) + "\n")
            return self.path
        return write_jsonl(target, (), self.env, footer=footer, lines=[line for line in streamed if line])

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@dataclass
class ResultsFile:
    """What :func:`read_jsonl` found in one file.

    ``warnings`` are messages to show (``"path:line: ..."``), malformed lines included
    (the first :data:`MAX_MALFORMED_LISTED`); ``malformed`` lists those lines and
    ``malformed_count`` counts all of them; ``notes`` name lines of a kind this
    version does not know (skipped, not malformed); ``runs`` say whether each run in
    the file completed (a ``run-end`` footer).
    """

    path: str
    environments: list[dict[str, Any]]
    records: list[Record]
    warnings: list[str]
    malformed: list[Malformed] = field(default_factory=list)
    malformed_count: int = 0
    notes: list[str] = field(default_factory=list)
    runs: list[RunSpan] = field(default_factory=list)

    def ungraded_named(self) -> list[str]:
        """Per run whose environment line names implementations (``"named"``), why each of them that graded nothing in
        that run fails it (:func:`harness.verdicts.ungraded_named` of the run's records: the rule of the run's own exit
        status), ``"PATH:LINE: run ID: ..."``. A whole-run ``error`` record edited to ``unsupported`` (its counts edited
        to match) read as passing beside the other implementations' records, where the run itself had failed: where
        the implementation was named and graded nothing else, this says so (helper-181)."""
        from .verdicts import ungraded_named

        out: list[str] = []
        for r in self.runs:
            if r.named:
                recs = self.records[r.first_record:r.first_record + r.records]
                label = f"{self.path}:{r.line}: run {r.run!r}" if r.run else f"{self.path}:{r.line}"
                out.extend(f"{label}: {line}" for line in ungraded_named(recs, r.named, unrun=r.unrun))
        return out

    @property
    def completed(self) -> bool:
        """Every run in the file has a ``run-end`` line that says it completed."""
        return bool(self.runs) and all(r.completed for r in self.runs)

    @property
    def status(self) -> str:
        """``"completed"``, ``"interrupted or still running"``, ``"incomplete"`` (a footer that
        says so) or ``"no environment line"``."""
        if not self.environments and all(r.end is None for r in self.runs):
            return "no environment line"
        if self.completed:
            return "completed"
        if any(r.end is not None and not r.completed for r in self.runs):
            return "incomplete"
        return "interrupted or still running"


def _strings(v: Any) -> TypeGuard[list[str]]:
    """Whether ``v`` is a list of strings (an environment line's ``named``, ``unrun``)."""
    return type(v) is list and all(type(x) is str for x in v)


def _unnamed(env: dict[str, Any], fmt: Any) -> str | None:
    """Why the environment line ``env``, declaring the records format ``fmt``, lacks the implementations its run named
    as every harness that declares :data:`RECORDS_FORMAT` writes them (``check``: ``"named"``, a list, and ``"unrun":
    true``; the pytest plugin: two lists), or None (also for a run that declares no format: written before them)."""
    if type(fmt) is not int or fmt < RECORDS_FORMAT:
        return None
    named, unrun = env.get("named"), env.get("unrun")
    bad = [f"{k!r} ({_quote(v) if k in env else 'absent'})" for k, v, ok in (("named", named, _strings(named)),
                                                   ("unrun", unrun, unrun is True or _strings(unrun))) if not ok]
    if not bad:
        return None
    return (f"its environment line declares records_format {fmt} but its {' and '.join(bad)} "
            f"{'are' if len(bad) > 1 else 'is'} not the implementations' list{'s' if len(bad) > 1 else ''} every run of "
            "that format writes (\"named\": a list of names, \"unrun\": true or a list of names; deleted or edited?): "
            "whether an implementation its run named graded nothing cannot be checked")


def _shard_index(case: str, n: int) -> int:
    from .shard import shard_index

    return shard_index(case, n)


def _check_shard(env: dict[str, Any]) -> tuple[int, int] | None:
    """``(K, N)`` of the environment line of a ``check --shard K/N`` run, or None (a whole run, a value that is not
    ``K/N``, or a pytest session's line, ``"runner": "pytest"``: a test of its own may grade any case)."""
    from .shard import parse_shard

    text = env.get("shard")
    if type(text) is not str or "runner" in env:
        return None
    try:
        return parse_shard(text)
    except HarnessError:
        return None


def _lines(fh: Any) -> Iterable[tuple[int, bytes | None]]:
    """(line number, bytes) per line of a binary file; None for a line over :data:`MAX_LINE_BYTES` (never read whole)."""
    lineno = 0
    while True:
        line = fh.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        lineno += 1
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while True:  # skip the rest of the overlong line in bounded pieces
                rest = fh.readline(MAX_LINE_BYTES)
                if not rest or rest.endswith(b"\n"):
                    break
            yield lineno, None
        else:
            yield lineno, line


def _lone_surrogate(obj: Any) -> bool:
    """Whether a decoded JSON value holds a lone surrogate (``"\\ud800"``): a string no UTF-8 file can hold."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except (ValueError, RecursionError):  # pragma: no cover - json.loads produced it
        return True
    return False


def read_jsonl(path: str | Path) -> ResultsFile:
    """Read a results file; never fails on its contents, only on the file itself.

    Every line is decoded and checked on its own: a line that is not UTF-8, not JSON
    (e.g. cut off by an interrupted run), nested too deeply, longer than
    :data:`MAX_LINE_BYTES`, not an object, or a record that breaks the Record
    contract (:func:`check_record`) is *malformed*: skipped, counted and named with
    the file and line number, never graded. ``{"kind": "environment", ...}`` lines
    start a run (optionally with a ``"run"`` id), ``{"kind": "run-end", "completed":
    true, "records": N}`` ends it; a file that stops before its ``run-end`` line was
    interrupted or is still running (a warning). Lines of another ``kind`` are skipped
    with a note (a newer harness's data, not an error).

    Raises:
        OSError: if the file cannot be opened or read (IsADirectoryError for a directory).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "is a directory, not a results file", str(path))
    reader = _LineReader(str(path))
    with path.open("rb") as fh:
        for lineno, raw in _lines(fh):
            reader.raw_line(lineno, raw)
    return reader.result()


def read_back(path: str | Path, env: dict[str, Any], records: list[Record], lines: list[str],
              footer: dict[str, Any]) -> ResultsFile:
    """What :func:`read_jsonl` finds in a file this process has just written with :func:`write_jsonl` (``env``, then
    ``lines``, the encodings of ``records`` one for one, then ``footer``), without reading it back: every line goes
    through :func:`read_jsonl`'s own reader, and a record whose line is plain JSON (no ``\\u`` escape of a
    surrogate, within :data:`MAX_LINE_BYTES`) and whose fields hold only JSON's own types (which a JSON round
    trip gives back unchanged) is checked against the contract as it is (:func:`check_record`, the same rule)
    instead of being decoded again from its line. ``check`` renders its report from it: reading back a run's
    file of 90,000 records cost about 2 s.

    Raises:
        ValueError: if ``lines`` and ``records`` differ in length.
    """
    if len(lines) != len(records):
        raise ValueError(f"{len(records)} records but {len(lines)} lines")
    reader = _LineReader(str(path))
    reader.raw_line(1, _within(encode_line(env).encode("utf-8")))
    for lineno, (rec, line) in enumerate(zip(records, lines, strict=True), start=2):
        as_read = None
        try:
            as_read = _as_read(rec, line)
        except MalformedRecordError as exc:
            reader.last_line = lineno
            reader.bad(lineno, f"skipped a malformed record: {exc}")
            continue
        if as_read is None:  # read from its line, as read_jsonl would
            raw = line.encode("utf-8")
            reader.raw_line(lineno, _within(raw))
        else:
            reader.record(lineno, as_read)
    reader.raw_line(len(lines) + 2, _within(encode_line(footer).encode("utf-8")))
    return reader.result()


def _within(raw: bytes) -> bytes | None:
    """A line's bytes as :func:`_lines` reads them: None where longer than :data:`MAX_LINE_BYTES`."""
    return raw if len(raw) <= MAX_LINE_BYTES else None


#: the types a JSON round trip gives back as they are (a tuple comes back a list, a float subclass a float)
_JSON_TYPES = frozenset({str, int, float, bool, type(None), list, dict})
#: the scalar types a JSON round trip gives back as they are (inside a list or a dict: nothing nested deeper)
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def _as_read(rec: Record, line: str) -> Record | None:
    """``rec`` as :func:`read_jsonl` would read it from ``line`` (its encoding), or None where only decoding the
    line tells (an escaped surrogate, a line that may be too long, a value of a type JSON does not give back).

    Raises:
        MalformedRecordError: the record breaks the contract (:func:`check_record`), as its line read would."""
    if "\\ud" in line or "\\uD" in line or 4 * len(line) > MAX_LINE_BYTES:
        return None
    d = rec.__dict__
    if d.get("kind") != "record":  # another kind is a note or malformed by its own rule: read_jsonl's, from the line
        return None
    if len(d) != len(_FIELD_NAMES) or not _JSON_TYPES.issuperset(map(type, d.values())):
        return None  # (an attribute beyond the fields is not written: checked as read, without it)
    for v in d.values():  # inside a list or a dict too: JSON gives back only its own scalar types, keys as strings
        if type(v) is list and not _JSON_SCALARS.issuperset(map(type, v)):
            return None  # (a str or int subclass in tags or shape: a str or int read back, helper-111)
        if type(v) is dict and (any(type(k) is not str for k in v) or not _JSON_SCALARS.issuperset(map(type, v.values()))):
            return None
    kw = check_record(d, known_verdict=True)
    if all(map(operator.is_, map(kw.__getitem__, _FIELD_NAMES), map(d.__getitem__, _FIELD_NAMES))):
        return rec
    out = Record.__new__(Record)  # a value converted (an int in a float field reads back as a float)
    out.__dict__.update(kw)
    return out


#: The text fields whose values repeat from record to record (one per run, implementation, dtype, quantity, ...): each
#: value is held once per file read (:meth:`_LineReader.record`). A results file of a million records read 1,024 bytes
#: of separate copies of them per record, about a quarter of the memory it took (helper-131).
_SHARED_TEXT = ("case", "implementation", "device", "dtype", "quantity", "verdict", "kind", "reduction", "matmul_precision",
                "oracle_method", "repro", "message", "diagnosis", "known_bug")


class _LineReader:
    """:func:`read_jsonl`'s reading of a results file, one line at a time: the one definition of what a line holds
    (also used by :meth:`ResultsStream.finish` for the file it has just written, without reading it back)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.envs: list[dict[str, Any]] = []
        self.recs: list[Record] = []
        self.warnings: list[str] = []
        self.malformed: list[Malformed] = []
        self.unknown: dict[str, list[int]] = {}
        self.runs: list[RunSpan] = []
        self.n_bad = 0
        self.last_line = 0
        self._texts: dict[str, str] = {}  # one copy of each value of the _SHARED_TEXT fields

    def bad(self, lineno: int, reason: str) -> None:
        self.n_bad += 1
        if self.runs:
            self.runs[-1].malformed += 1
        if len(self.malformed) < MAX_MALFORMED_LISTED:
            m = Malformed(self.where, lineno, reason)
            self.malformed.append(m)
            self.warnings.append(str(m))

    def raw_line(self, lineno: int, raw: bytes | None) -> None:
        """One line as read from the file (its bytes, newline included or not; None: longer than
        :data:`MAX_LINE_BYTES`)."""
        self.last_line = lineno
        if raw is None:
            self.bad(lineno, f"skipped a line longer than {MAX_LINE_BYTES} bytes")
            return
        try:
            text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            self.bad(lineno, f"skipped a line that is not UTF-8 (byte {exc.start + 1})")
            return
        if not text.strip():
            return
        try:
            obj = json.loads(text)
        except RecursionError:
            self.bad(lineno, "skipped a line nested too deeply to read")
            return
        except ValueError as exc:
            msg = getattr(exc, "msg", None) or str(exc)
            self.bad(lineno, f"skipped a line that is not valid JSON ({msg[:100]}): cut off by an interrupted run, or "
                             "damaged or edited since")
            return
        if type(obj) is not dict:
            self.bad(lineno, f"skipped a line that is not a JSON object (a JSON {type(obj).__name__})")
            return
        if ("\\ud" in text or "\\uD" in text) and _lone_surrogate(obj):
            self.bad(lineno, "skipped a line with a \\u escape that is half a UTF-16 surrogate pair (not text)")
            return
        kind = obj.get("kind", "record")
        if kind == "record":
            run = self.runs[-1] if self.runs and self.runs[-1].end is None else None
            declared = run is not None and run.records_format is not None
            try:
                rec = Record.from_json(obj, known_verdict=True, complete=declared)
            except MalformedRecordError as exc:
                self.bad(lineno, f"skipped a malformed record: {exc}")
                return
            self.record(lineno, rec)
            if not declared:
                absent = absent_fields(obj)
                if absent:
                    span = self.runs[-1]
                    span.partial += 1
                    if span.partial_first is None:
                        span.partial_first = (lineno, absent[0])
        elif kind == "environment":
            self.envs.append(obj)
            run_id = obj.get("run")
            errors = obj.get("load_errors", [])
            fmt = obj.get("records_format")
            named, unrun = obj.get("named"), obj.get("unrun")
            self.runs.append(RunSpan(lineno, None if run_id is None else str(run_id)[:200],
                                     load_errors=len(errors) if isinstance(errors, list) else None,
                                     records_format=fmt if type(fmt) is int and fmt >= 2 else None,
                                     named=named if _strings(named) else None,
                                     unrun=True if unrun is True else unrun if _strings(unrun) else False,
                                     first_record=len(self.recs), unnamed=_unnamed(obj, fmt),
                                     shard=_check_shard(obj)))
        elif kind == "run-end":
            completed, count = obj.get("completed"), obj.get("records")
            if type(completed) is not bool or (count is not None and (type(count) is not int or count < 0)):
                self.bad(lineno, f"skipped a malformed run-end line: expected \"completed\": true/false and \"records\": a "
                                 f"count, got {_quote(completed)} and {_quote(count)}")
                return
            tally = obj.get("verdicts")
            if tally is not None and (type(tally) is not dict or not all(type(n) is int and n >= 0 for n in tally.values())):
                self.bad(lineno, f"skipped a malformed run-end line: expected \"verdicts\": counts by verdict, got {_quote(tally)}")
                return
            bad = next((k for k in ("known_bugs", "load_errors") if obj.get(k) is not None
                        and (type(obj[k]) is not int or obj[k] < 0)), None)
            if bad is not None:
                self.bad(lineno, f"skipped a malformed run-end line: expected \"{bad}\": a count, got {_quote(obj[bad])}")
                return
            if not self.runs or self.runs[-1].end is not None:
                self.runs.append(RunSpan(lineno, headless=True))  # a footer without its header: count it as its own run
            self.runs[-1].end, self.runs[-1].end_line = obj, lineno
        elif type(kind) is str and obj.get("verdict") in FAILING:
            # a newer kind is skipped with a note, but not one that carries a failing verdict: a record whose kind
            # was edited ("Record") hid its failure in a note (helper-79)
            self.bad(lineno, f"skipped a line of kind {kind[:40]!r}, unknown to this version, that holds the failing "
                             f"verdict {obj['verdict']!r} (a record whose \"kind\" was edited?)")
        elif type(kind) is str:
            self.unknown.setdefault(kind[:40], []).append(lineno)
        else:
            self.bad(lineno, f"skipped a line whose \"kind\" is not a string (got {_quote(kind)})")

    def record(self, lineno: int, rec: Record) -> None:
        """A record line read (checked against the contract)."""
        self.last_line = lineno
        d, texts = rec.__dict__, self._texts
        for name in _SHARED_TEXT:
            v = d[name]
            if type(v) is str:
                d[name] = texts.setdefault(v, v)
        self.recs.append(rec)
        if not self.runs or self.runs[-1].end is not None:
            self.runs.append(RunSpan(lineno, first_record=len(self.recs) - 1, headless=True))  # records without an environment line: a run of their own (its
            # footer's count was compared with none of them, helper-94)
        span = self.runs[-1]
        if span.shard is not None and _shard_index(rec.case, span.shard[1]) != span.shard[0]:
            span.off_shard += 1
            if span.off_shard_first is None:
                span.off_shard_first = (lineno, rec.case)
        self.runs[-1].records += 1
        tally = self.runs[-1].verdicts
        tally[rec.verdict] = tally.get(rec.verdict, 0) + 1
        if rec.known_bug:
            self.runs[-1].known_bugs += 1

    def result(self) -> ResultsFile:
        where = self.where
        notes = [f"{where}: skipped {len(lines)} line(s) of kind {k!r}, unknown to this version (line{'s' if len(lines) > 1 else ''} "
                 f"{', '.join(map(str, lines[:5]))}{', ...' if len(lines) > 5 else ''})" for k, lines in self.unknown.items()]
        warnings = list(self.warnings)
        if self.n_bad > len(self.malformed):
            warnings.append(f"{where}: {self.n_bad - len(self.malformed)} more malformed line(s) not listed")
        for r in self.runs:
            label = f"{where}:{r.line}" + (f": run {r.run!r}" if r.run else ": run")
            if r.end is None:
                warnings.append(f"{label} has no run-end line (the file stops at line {self.last_line}): interrupted or still "
                                "running" + ("" if r.run else ", or written before results files had one"))
            elif not r.completed:
                said = ("says both completed: true and interrupted: true (edited by hand?)" if r.end.get("completed") is True
                        else "says completed: false")
                warnings.append(f"{label} ended without completing (its run-end line {r.end_line} {said})")
            if r.miscounted:
                warnings.append(f"{label}: {r.miscounted}")
        return ResultsFile(where, self.envs, self.recs, warnings, self.malformed, self.n_bad, notes, self.runs)
