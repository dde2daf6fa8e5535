"""Hostile records for read_back (helper-111): values nested in lists and dicts whose type JSON normalizes."""
from __future__ import annotations

import enum

import numpy as np

from harness.records import Record
from tests.test_read_back import _written, assert_same


class Dim(enum.IntEnum):
    TWO = 2


class Tag(enum.StrEnum):
    SEED = "seed"


def _rec(**kw) -> Record:
    base = dict(case="c", implementation="i", device="cpu", dtype="float32", quantity="loss", step=0, verdict="agree")
    base.update(kw)
    return Record(**base)


def test_nested_subclass_values_read_as_the_file_reads(tmp_path) -> None:
    recs = [_rec(tags=[np.str_("seed")]), _rec(tags=[Tag.SEED]), _rec(shape=[Dim.TWO], worst_index=[Dim.TWO], counts={"agree": 2}),
            _rec(shape=[2], counts={"agree": Dim.TWO}), _rec(step=1, tags=["plain"])]
    # (an agree record's counts cover its shape's elements: harness.verdicts.contradiction, helper-124)
    view, read = _written(tmp_path, recs)
    assert len(read.records) == len(recs)
    assert_same(view, read)


def test_an_environment_line_too_long_to_read(tmp_path) -> None:
    from harness.records import MAX_LINE_BYTES, ResultsStream, environment_record, read_jsonl
    env = environment_record()
    env["argv"] = ["x" * (MAX_LINE_BYTES + 10)]
    stream = ResultsStream(tmp_path / "r.jsonl", env)
    path = stream.finish([_rec()])
    assert_same(stream.written, read_jsonl(path))
