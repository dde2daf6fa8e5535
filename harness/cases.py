"""Cases: the inputs of one training-step check, and loading them from TOML.

A case is linear regression ``prediction = X W + 1 b^T`` with squared-error loss
and ``steps`` SGD steps of learning rate ``lr``:

- ``X``: (N, D) inputs, ``y``: (N, K) targets, ``W``: (D, K) weights, ``b``: (K,) bias.
- ``reduction``: ``"sum"`` (``L = sum (XW + 1b^T - y)^2``) or ``"mean"`` (the same
  divided by ``N*K``).

Values are kept twice: *as written* (exact rationals parsed from the decimal text
of the case file, so ``0.1`` is exactly 1/10) and as float64 arrays (what Python
floats hold; an implementation in another dtype sees these rounded once more,
exactly as ``torch.tensor(values, dtype=...)`` does).

Case files are TOML: ``[[case]]`` tables (inline values or a CSV file) and
``[[generate]]`` tables (expanded by :mod:`harness.generate`). See
``cases/README.md`` for every key.
"""

from __future__ import annotations

import csv
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import CaseFileError
from .floats import DTYPES, FloatFormat, round_to_format
from .generate import generate_table

REDUCTIONS = ("sum", "mean")
INPUT_NAMES = ("X", "y", "W", "b")
DEFAULT_DTYPES = ("float32", "float64")

CASE_KEYS = {
    "id", "X", "y", "W", "b", "lr", "steps", "reduction", "dtypes", "tags", "description",
    "source", "data", "x_columns", "y_columns", "polynomial_degree",
}

Written = npt.NDArray[Any]  # object array of Fraction (or float nan/inf for non-finite input)


@dataclass(frozen=True, eq=False)
class Case:
    """One check: inputs, learning rate, number of steps and reduction.

    Attributes:
        id: stable, readable identifier (used as pytest id and report row).
        values: float64 arrays ``X`` (N, D), ``y`` (N, K), ``W`` (D, K), ``b`` (K,).
        written: the same as written in the case file, object arrays of
            ``Fraction`` (NaN/inf kept as float); ``None`` when the float64 values
            *are* the written values (generated cases).
        lr: learning rate as written (exact rational).
        steps: number of SGD steps (>= 1).
        reduction: ``"sum"`` or ``"mean"``.
        dtypes: dtypes the case runs in by default.
        tags: free-form labels (``seed``, ``nist``, ``generated``, ...).
        source: the file the case came from (``"<memory>"`` if built in code).
    """

    id: str
    values: Mapping[str, npt.NDArray[np.float64]]
    lr: Fraction
    steps: int = 1
    reduction: str = "sum"
    dtypes: tuple[str, ...] = DEFAULT_DTYPES
    tags: tuple[str, ...] = ()
    source: str = "<memory>"
    description: str = ""
    written: Mapping[str, Written] | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(N, D, K)``."""
        n, d = self.values["X"].shape
        return n, d, self.values["W"].shape[1]

    @property
    def finite(self) -> bool:
        """True when every input is finite (else the verdict is ``invalid-input``)."""
        return all(bool(np.isfinite(v).all()) for v in self.values.values())

    def lr_in(self, fmt: FloatFormat) -> float:
        """The learning rate as a float64 rounded to ``fmt`` (what the step multiplies by)."""
        return float(round_to_format(np.array([float(self.lr)]), fmt)[0])

    def written_inputs(self) -> dict[str, Written]:
        """Inputs as written, exact: object arrays of Fraction (float for NaN/inf)."""
        if self.written is not None:
            return dict(self.written)
        return {k: _fractions_of(v) for k, v in self.values.items()}


def validate_settings(
    lr: Any, steps: Any, reduction: Any, dtypes: Iterable[str], err: Callable[[str | None, str], CaseFileError],
) -> tuple[Fraction, tuple[str, ...]]:
    """The one validation of a case's settings, shared by :func:`make_case` and :func:`case_from_arrays`.

    Args:
        err: builds the :class:`CaseFileError` (naming the file and case) for a key and a detail.

    Returns:
        the learning rate as an exact rational, and the dtypes as a tuple.

    Raises:
        CaseFileError: unless ``lr`` is a positive finite number, ``steps`` a positive
            integer, ``reduction`` one of :data:`REDUCTIONS` and every dtype one of
            :data:`harness.floats.DTYPES`.
    """
    lr_exact = _exact_scalar(lr, "lr", err)
    if not isinstance(lr_exact, Fraction) or lr_exact <= 0:
        raise err("lr", f"learning rate must be a positive finite number, got {lr!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise err("steps", f"steps must be a positive integer, got {steps!r}")
    if reduction not in REDUCTIONS:
        raise err("reduction", f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    dts = (dtypes,) if isinstance(dtypes, str) else tuple(dtypes)
    for dt in dts:
        if dt not in DTYPES:
            raise err("dtypes", f"unknown dtype {dt!r}; known: {', '.join(DTYPES)}")
    return lr_exact, dts


def make_case(
    id: str,
    X: Sequence[Sequence[Any]] | npt.ArrayLike,
    y: Sequence[Sequence[Any]] | npt.ArrayLike,
    W: Sequence[Sequence[Any]] | npt.ArrayLike,
    b: Sequence[Any] | npt.ArrayLike,
    *,
    lr: Any,
    steps: int = 1,
    reduction: str = "sum",
    dtypes: Iterable[str] = DEFAULT_DTYPES,
    tags: Iterable[str] = (),
    source: str = "<memory>",
    description: str = "",
) -> Case:
    """Build and validate a case from Python values.

    Numbers may be int, float, ``Decimal``, ``Fraction`` or decimal strings
    (``"0.1"`` is exactly 1/10 as written). A 1-D ``y`` is taken as one column.

    Raises:
        CaseFileError: naming ``source``, ``id`` and the key, on a wrong shape,
            type or value.
    """
    def err(key: str | None, detail: str) -> CaseFileError:
        return CaseFileError(detail, path=source, case_id=id, key=key)

    written: dict[str, Written] = {}
    for key, raw, ndim in (("X", X, 2), ("y", y, 2), ("W", W, 2), ("b", b, 1)):
        arr = _exact_array(raw, key, err)
        if key == "y" and arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        if key == "b" and arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != ndim:
            raise err(key, f"expected a {ndim}-D array, got {arr.ndim}-D (shape {arr.shape})")
        written[key] = arr
    n, d = written["X"].shape
    if n == 0 or d == 0:
        raise err("X", f"X must have at least one row and one column, got shape {written['X'].shape}")
    if written["y"].shape[0] != n:
        raise err("y", f"y has {written['y'].shape[0]} rows but X has {n}")
    k = written["y"].shape[1]
    if written["W"].shape != (d, k):
        raise err("W", f"W must be (D, K) = ({d}, {k}) for X {written['X'].shape} and y {written['y'].shape}, got {written['W'].shape}")
    if written["b"].shape != (k,):
        raise err("b", f"b must have K = {k} values, got shape {written['b'].shape}")
    lr_exact, dts = validate_settings(lr, steps, reduction, dtypes, err)
    values = {key: _floats_of(arr) for key, arr in written.items()}
    return Case(
        id=id, values=values, written=written, lr=lr_exact, steps=steps, reduction=reduction,
        dtypes=dts, tags=tuple(tags), source=source, description=description,
    )


def case_from_arrays(
    id: str,
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    W: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    lr: float | Fraction,
    steps: int = 1,
    reduction: str = "sum",
    dtypes: Iterable[str] = DEFAULT_DTYPES,
    tags: Iterable[str] = (),
    source: str = "<memory>",
    description: str = "",
) -> Case:
    """Build a case from float64 arrays whose values are the written values
    (no decimal text: used by the generator and Hypothesis strategies).

    Raises:
        CaseFileError: on inconsistent shapes, and on the learning rate, steps,
            reduction and dtypes exactly as :func:`make_case` (:func:`validate_settings`).
    """
    def err(key: str | None, detail: str) -> CaseFileError:
        return CaseFileError(detail, path=source, case_id=id, key=key)

    vals = {
        "X": np.asarray(X, dtype=np.float64),
        "y": np.asarray(y, dtype=np.float64),
        "W": np.asarray(W, dtype=np.float64),
        "b": np.asarray(b, dtype=np.float64),
    }
    if vals["y"].ndim == 1:
        vals["y"] = vals["y"].reshape(-1, 1)
    n, d = vals["X"].shape if vals["X"].ndim == 2 else (0, 0)
    k = vals["y"].shape[1] if vals["y"].ndim == 2 else 0
    shapes = {"X": (n, d), "y": (n, k), "W": (d, k), "b": (k,)}
    for key, want in shapes.items():
        if vals[key].shape != want or 0 in want:
            raise err(key, f"expected shape {want}, got {vals[key].shape}")
    lr_exact, dts = validate_settings(lr, steps, reduction, dtypes, err)
    return Case(
        id=id, values=vals, lr=lr_exact, steps=steps, reduction=reduction, dtypes=dts,
        tags=tuple(tags), source=source, description=description, written=None,
    )


# ---------------------------------------------------------------- parsing values


def _exact_scalar(raw: Any, key: str, err: Any) -> Fraction | float:
    """Exact value of one number as written; NaN/inf returned as float."""
    if isinstance(raw, bool):
        raise err(key, f"expected a number, got boolean {raw!r}")
    if isinstance(raw, Fraction):
        return raw
    if isinstance(raw, int):
        return Fraction(raw)
    if isinstance(raw, float):
        return Fraction(raw) if math.isfinite(raw) else raw
    if isinstance(raw, (Decimal, str)):
        try:
            d = Decimal(raw.strip()) if isinstance(raw, str) else raw
        except InvalidOperation:
            raise err(key, f"expected a number, got {raw!r}") from None
        if d.is_nan():
            return float("nan")
        if d.is_infinite():
            return float("inf") if d > 0 else float("-inf")
        return Fraction(d)
    if isinstance(raw, np.floating | np.integer):
        return _exact_scalar(raw.item(), key, err)
    raise err(key, f"expected a number, got {type(raw).__name__} {raw!r}")


def _exact_array(raw: Any, key: str, err: Any) -> Written:
    if isinstance(raw, np.ndarray) and raw.dtype != object:
        flat = [_exact_scalar(v, key, err) for v in raw.ravel().tolist()]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(raw.shape)

    def convert(v: Any, depth: int) -> Any:
        if isinstance(v, list | tuple):
            if depth >= 2:
                raise err(key, "nested too deeply: expected at most a list of rows")
            return [convert(e, depth + 1) for e in v]
        return _exact_scalar(v, key, err)

    nested = convert(raw, 0)
    if isinstance(nested, list) and nested and isinstance(nested[0], list):
        lengths = {len(r) if isinstance(r, list) else -1 for r in nested}
        if len(lengths) != 1 or -1 in lengths:
            row_lengths = [len(r) if isinstance(r, list) else "a number" for r in nested]
            raise err(key, f"rows have different lengths: {row_lengths[:10]}{' ...' if len(row_lengths) > 10 else ''}")
        out = np.empty((len(nested), len(nested[0])), dtype=object)
        for i, row in enumerate(nested):
            out[i, :] = row
        return out
    if isinstance(nested, list):
        if any(isinstance(e, list) for e in nested):
            raise err(key, "mixes numbers and lists")
        out = np.empty(len(nested), dtype=object)
        out[:] = nested
        return out
    out = np.empty((), dtype=object)
    out[()] = nested
    return out


def _floats_of(arr: Written) -> npt.NDArray[np.float64]:
    return np.array([float(v) for v in arr.ravel()], dtype=np.float64).reshape(arr.shape)


def _fractions_of(arr: npt.NDArray[np.float64]) -> Written:
    out = np.empty(arr.size, dtype=object)
    out[:] = [Fraction(v) if math.isfinite(v) else v for v in arr.ravel().tolist()]
    return out.reshape(arr.shape)


# ---------------------------------------------------------------- case files

_LINE_RE = re.compile(r"at line (\d+)")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML case file, keeping decimal literals exact (as ``Decimal``).

    Raises:
        CaseFileError: with the line number on a syntax error, or if the file cannot be read.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CaseFileError(f"cannot read: {exc.strerror or exc}", path=str(path)) from None
    try:
        return tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        m = _LINE_RE.search(str(exc))
        line = getattr(exc, "lineno", None) or (int(m.group(1)) if m else None)
        if line is None and "end of document" in str(exc):
            line = text.count("\n") + (0 if text.endswith("\n") else 1)  # the last line
        raise CaseFileError(f"invalid TOML: {exc}", path=str(path), line=line) from None


def _read_csv_case(spec: Mapping[str, Any], base: Path, path: str, case_id: str) -> dict[str, Any]:
    """Turn ``data = "file.csv"`` plus column keys into X and y lists of decimal strings."""
    def err(key: str, detail: str) -> CaseFileError:
        return CaseFileError(detail, path=path, case_id=case_id, key=key)

    data = spec["data"]
    if not isinstance(data, str):
        raise err("data", f"expected a CSV path string, got {data!r}")
    csv_path = (base / data).resolve()
    try:
        with csv_path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise err("data", f"cannot read {csv_path}: {exc.strerror or exc}") from None
    if not rows:
        raise err("data", f"{csv_path} has no data rows")
    header = list(rows[0].keys())
    y_cols = spec.get("y_columns", ["y"])
    x_cols = spec.get("x_columns")
    if x_cols is None:
        x_cols = [c for c in header if c not in y_cols]
    for key, cols in (("y_columns", y_cols), ("x_columns", x_cols)):
        if not isinstance(cols, list) or not cols or not all(isinstance(c, str) for c in cols):
            raise err(key, f"expected a non-empty list of column names, got {cols!r}")
        missing = [c for c in cols if c not in header]
        if missing:
            raise err(key, f"columns {missing} not in {csv_path.name} (header: {header})")
    degree = spec.get("polynomial_degree")
    X: list[list[Any]] = []
    y: list[list[Any]] = []
    for i, row in enumerate(rows, start=2):
        try:
            xs = [Fraction(Decimal(row[c])) for c in x_cols]
            y.append([Fraction(Decimal(row[c])) for c in y_cols])
        except (InvalidOperation, TypeError):
            raise err("data", f"{csv_path.name} line {i}: not a number in {row}") from None
        if degree is not None:
            if not isinstance(degree, int) or isinstance(degree, bool) or degree < 1 or len(xs) != 1:
                raise err("polynomial_degree", f"needs one x column and a positive integer degree, got {degree!r}")
            xs = [xs[0] ** p for p in range(1, degree + 1)]
        X.append(xs)
    return {"X": X, "y": y}


def cases_from_table(spec: Mapping[str, Any], *, path: str, base: Path, index: int) -> Case:
    """Build one case from a ``[[case]]`` table.

    Raises:
        CaseFileError: naming the file, the case id and the key.
    """
    case_id = spec.get("id")
    if not isinstance(case_id, str) or not case_id:
        raise CaseFileError(f"[[case]] number {index + 1} has no string 'id'", path=path, key="id")
    unknown = sorted(set(spec) - CASE_KEYS)
    if unknown:
        raise CaseFileError(f"unknown key(s) {unknown}; allowed: {sorted(CASE_KEYS)}", path=path, case_id=case_id, key=unknown[0])
    fields = dict(spec)
    if "data" in fields:
        if "X" in fields or "y" in fields:
            raise CaseFileError("give either 'data' (a CSV file) or inline 'X' and 'y', not both", path=path, case_id=case_id, key="data")
        fields.update(_read_csv_case(fields, base, path, case_id))
    for key in ("X", "y", "W", "b", "lr"):
        if key not in fields:
            raise CaseFileError("missing required key", path=path, case_id=case_id, key=key)
    tags = fields.get("tags", [])
    dtypes = fields.get("dtypes", list(DEFAULT_DTYPES))
    for key, val in (("tags", tags), ("dtypes", dtypes)):
        if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
            raise CaseFileError(f"expected a list of strings, got {val!r}", path=path, case_id=case_id, key=key)
    description = fields.get("description", "")
    if "source" in fields:
        description = f"{description} (source: {fields['source']})".strip()
    return make_case(
        case_id, fields["X"], fields["y"], fields["W"], fields["b"], lr=fields["lr"],
        steps=fields.get("steps", 1), reduction=fields.get("reduction", "sum"), dtypes=dtypes,
        tags=tags, source=path, description=description,
    )


@dataclass
class LoadResult:
    """Cases loaded from files, and the problems found (one bad case never stops the rest)."""

    cases: list[Case] = field(default_factory=list)
    errors: list[CaseFileError] = field(default_factory=list)


def iter_case_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """TOML files named by ``paths`` (files as given, folders searched recursively, sorted)."""
    for p in paths:
        p = Path(p)
        if p.is_dir():
            yield from sorted(p.rglob("*.toml"))
        else:
            yield p


def expand_generate_table(spec: Mapping[str, Any], *, path: str, index: int, tier: str = "default") -> list[Case]:
    """Expand one ``[[generate]]`` table into cases (see :mod:`harness.generate` for its keys).

    Args:
        spec: the table.
        path: the file (for messages).
        index: position of the table in the file (for messages).
        tier: ``"default"`` expands default-tier tables only; ``"large"`` expands both.

    Raises:
        CaseFileError: naming the file, the table and the key.
    """
    return [
        case_from_arrays(g.id, g.values["X"], g.values["y"], g.values["W"], g.values["b"], lr=g.lr, steps=g.steps,
                         reduction=g.reduction, dtypes=g.dtypes, tags=g.tags, source=g.source, description=g.description)
        for g in generate_table(spec, path=path, index=index, tier=tier)
    ]


def load_cases(paths: Iterable[str | Path], *, tier: str = "default") -> LoadResult:
    """Load every case from the given files and folders.

    Args:
        paths: TOML files or folders holding them.
        tier: generator tier to expand (``"default"`` or ``"large"``; see :mod:`harness.generate`).

    Returns:
        the cases in file order, and one :class:`CaseFileError` per bad file or case.
        Duplicate ids are errors (the later one is dropped).
    """
    result = LoadResult()
    seen: dict[str, str] = {}
    for file in iter_case_files(paths):
        if not file.exists():
            result.errors.append(CaseFileError("no such file or folder", path=str(file)))
            continue
        try:
            doc = read_toml(file)
        except CaseFileError as exc:
            result.errors.append(exc)
            continue
        unknown = sorted(set(doc) - {"case", "generate", "title", "description"})
        if unknown:
            result.errors.append(CaseFileError(f"unknown top-level key(s) {unknown}; expected [[case]] or [[generate]] tables", path=str(file), key=unknown[0]))
        found: list[Case] = []
        for i, spec in enumerate(doc.get("case", [])):
            try:
                found.append(cases_from_table(spec, path=str(file), base=file.parent, index=i))
            except CaseFileError as exc:
                result.errors.append(exc)
        for i, spec in enumerate(doc.get("generate", [])):
            try:
                found.extend(expand_generate_table(spec, path=str(file), index=i, tier=tier))
            except CaseFileError as exc:
                result.errors.append(exc)
        for case in found:
            if case.id in seen:
                result.errors.append(CaseFileError(f"duplicate id (first defined in {seen[case.id]})", path=str(file), case_id=case.id, key="id"))
                continue
            seen[case.id] = str(file)
            result.cases.append(case)
    return result
