"""``ResultsStream.written`` (``harness.records.read_back``): ``check`` renders its report from the file it has just
written without reading it back; what it uses must be exactly what ``read_jsonl`` finds in that file, for real runs
and for hostile records (values JSON does not give back as they are, lines too long to read, records that break the
contract, escaped surrogates)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from harness import default_cases, verify
from harness.records import MAX_LINE_BYTES, Record, ResultsFile, ResultsStream, environment_record, read_jsonl
from harness.report import build_model, render_html


def _same_floats(a: object, b: object) -> bool:
    """Equal, NaN equal to NaN, and the same type (0 and 0.0 differ: a report may print them differently)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))  # type: ignore[arg-type]
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_floats(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_floats(a[k], b[k]) for k in a)  # type: ignore[union-attr,index]
    return a == b


def assert_same(view: ResultsFile | None, read: ResultsFile) -> None:
    assert view is not None
    assert view.path == read.path
    assert view.environments == read.environments
    assert view.warnings == read.warnings
    assert view.malformed == read.malformed and view.malformed_count == read.malformed_count
    assert view.notes == read.notes and view.runs == read.runs and view.status == read.status
    assert len(view.records) == len(read.records)
    for a, b in zip(view.records, read.records, strict=True):
        assert a.__dict__.keys() == b.__dict__.keys()
        bad = [k for k in a.__dict__ if not _same_floats(a.__dict__[k], b.__dict__[k])]
        assert not bad, f"{bad}: {[(a.__dict__[k], b.__dict__[k]) for k in bad]}"


def _written(tmp_path, records: list[Record], name: str = "r.jsonl") -> tuple[ResultsFile | None, ResultsFile]:
    path = tmp_path / name
    stream = ResultsStream(path, environment_record())
    stream.add(records[: len(records) // 2])  # streamed lines are copied by finish; the rest encoded there
    written = stream.finish(records)
    return stream.written, read_jsonl(written)


@pytest.fixture(scope="module")
def real_records() -> list[Record]:
    """A real run's records: every verdict a default run gives (agree, disagree and suspect of fused SGD's known
    bug, overflow, unsupported), float64 to bfloat16, with the trajectory's figures."""
    cases = [c for c in default_cases() if c.id in {"seed", "overflow-float16", "subnormal-float16"}] or default_cases()[:3]
    return verify(cases, ["numpy-hand", "torch-seed", "torch-optim-sgd-fused", "finite-differences"], devices="cpu",
                  dtypes="all")


def test_a_real_run_reads_back_as_read_jsonl_reads_it_and_renders_the_same_report(tmp_path, real_records, monkeypatch):
    import harness.report

    monkeypatch.setattr(harness.report.time, "strftime", lambda *a: "2026-12-05 00:00:00 UTC")  # the page's own clock
    assert {r.verdict for r in real_records} >= {"agree", "unsupported"}
    view, read = _written(tmp_path, real_records)
    assert_same(view, read)
    assert render_html(build_model([view])) == render_html(build_model([read.path]))
    # the records themselves are used as they are (no copy): nothing to convert in a run's own records
    assert all(a is b for a, b in zip(view.records, real_records, strict=True))  # type: ignore[union-attr]


def _base_record() -> Record:
    return Record(case="c", implementation="i", device="cpu", dtype="float32", quantity="W", step=1, verdict="agree",
                  shape=[2, 1], counts={"agree": 2}, max_abs_error=1e-8, max_ulp_error=0.5, bound_ratio=0.25,
                  expected_ratio=0.5, worst_index=[1, 0], rigorous_bound=4e-8, expected_bound=2e-8,
                  abs_error_at_worst=1e-8, ulp_error_at_worst=0.5, message="m", tags=["t"])


#: field -> hostile values: JSON's round trip changes some (tuples, float subclasses, int keys, int in a float
#: field), some break the contract (on the page as malformed lines), some make a line unreadable
HOSTILE: dict[str, list[object]] = {
    "max_abs_error": [0, 3, 2**80, -0.0, math.nan, math.inf, -math.inf, np.float64(1e-8), np.float64(math.nan), True,
                      "inf", "1e-8", None, 5e-324, 1.7976931348623157e308],
    "bound_ratio": [0, 2, math.nan, None, np.float32(0.25).item(), 2**1100],
    "worst_index": [(1, 0), [1, 0], [-1, 0], [1.0, 0], [True, 0], [2**63, 0], None, "1,0"],
    "shape": [(2, 1), [2, 1], [2], []],
    "step": [1, 0, -1, True, 1.0, 2**63, 2**62],
    "counts": [{"agree": 2}, {"agree": 2.0}, {1: 2}, {"agree": 2, 1: 0}, {"agree": 2, None: 0}, {"agree": -1}, {"agree": True}, {}, {"agree": 1, "disagree": 1}],
    "verdict": ["agree", "disagree", "suspect", "weird", "", 1],
    "message": ["m", "\udcff", "\U0001f600", "\\ud800", "a\nb\"c", "x" * (MAX_LINE_BYTES + 10), "\u00e9" * (MAX_LINE_BYTES // 2),
                "é" * (MAX_LINE_BYTES // 4 + 1)],
    "tags": [["t"], ("t",), [1], []],
    "case": ["c", "\x00", "\ud800x"],
    "exact_rational": [None, "1/3", 3],
    "kind": ["record", "other", "Record", 1],
}


class _Str(str):
    pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.sampled_from(sorted(HOSTILE)), st.integers(0, 10**6)), min_size=0, max_size=4),
       extra=st.booleans(), sub=st.booleans(), n=st.integers(1, 4))
def test_hostile_records_read_back_as_read_jsonl_reads_them(tmp_path_factory, edits, extra, sub, n):
    records = []
    for j in range(n):
        rec = _base_record()
        for key, pick in edits:
            values = HOSTILE[key]
            setattr(rec, key, values[(pick + j) % len(values)])
        if extra and j == 0:
            rec.not_a_field = 1  # type: ignore[attr-defined]  # not written: read without it
        if sub and j == n - 1:
            rec.dtype = _Str("float32")
        records.append(rec)
    tmp = tmp_path_factory.mktemp("hostile")
    try:
        view, read = _written(tmp, records)
    except (TypeError, ValueError) as exc:  # a value JSON cannot write at all (the run would fail loudly, not lose it)
        assert "JSON" in str(exc) or "serializable" in str(exc) or "Out of range" in str(exc)
        return
    target(float(read.malformed_count))
    assert_same(view, read)


def test_every_hostile_value_is_written_and_read_back_alone(tmp_path):
    """Each hostile value once, one record per value (the property above mixes them)."""
    records = []
    for key, values in HOSTILE.items():
        for v in values:
            rec = _base_record()
            setattr(rec, key, v)
            records.append(rec)
    view, read = _written(tmp_path, records)
    assert read.malformed_count > 0 and len(read.records) > 0  # both kinds occur
    assert_same(view, read)


def test_read_back_refuses_lines_that_are_not_the_records():
    from harness.records import read_back

    with pytest.raises(ValueError, match="records but"):
        read_back("x.jsonl", environment_record(), [_base_record()], [], {"kind": "run-end", "completed": True, "records": 1})


def test_the_record_fields_are_what_read_back_checks():
    """read_back's fast path compares every field by identity: a field it does not know would go unchecked."""
    from harness.records import check_record

    d = dataclasses.asdict(_base_record())
    assert set(check_record(d)) == {f.name for f in dataclasses.fields(Record)}
