"""Bad input: clear messages that name the file, case, key (and line), and one
bad case never stops a run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import harness.runner
from harness.cases import expand_generate_table, load_cases
from harness.errors import CaseFileError
from harness.runner import verify
from tests.conftest import GOOD, ROOT


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize(("tail", "line"), [
    ('\n[[case]]\nid = "broken" x\nlr = "0.1"\n', 11),  # GOOD is 8 lines; the bad id line is the 11th
    ('\n[[case]]\nid = "broken"\nX = [[1.0, 2.0]\n', 12),  # unclosed array: reported at the last line
])
def test_malformed_toml_names_the_file_and_line_and_other_files_still_load(tmp_path, tail, line):
    bad = _write(tmp_path, "a_bad.toml", GOOD + tail)
    _write(tmp_path, "b_good.toml", GOOD)
    res = load_cases([tmp_path])
    assert [c.id for c in res.cases] == ["good"]
    (err,) = res.errors
    assert err.path == str(bad) and err.line == line
    assert str(err).startswith(f"{bad}:{line}: invalid TOML")


@pytest.mark.parametrize(("line", "key", "needle"), [
    ('X = "abc"', "X", "expected a number, got 'abc'"),
    ("X = [[true]]", "X", "boolean"),
    ("steps = \"3\"", "steps", "positive integer"),
    ("reduction = 5", "reduction", "reduction must be one of"),
    ('dtypes = ["float8"]', "dtypes", "unknown dtype 'float8'"),
    ("lr = -1", "lr", "positive finite"),
    ("W = [[2.0, 1.0]]", "W", "W must be (D, K) = (1, 1)"),
    ("y = [[]]", "y", "y must have at least one column"),  # K = 0: a linear case was graded (helper-87)
    ("colour = 3", "colour", "unknown key(s) ['colour']"),
])
def test_wrong_types_and_values_name_case_and_key(tmp_path, line, key, needle):
    fields = {"X": "[[1.0]]", "y": "[[3.0]]", "W": "[[2.0]]", "b": "[0.5]", "lr": '"0.1"'}
    name, value = (part.strip() for part in line.split("=", 1))
    fields[name] = value
    bad = '[[case]]\nid = "bad"\n' + "".join(f"{k} = {v}\n" for k, v in fields.items())
    path = _write(tmp_path, "cases.toml", GOOD + "\n" + bad)
    res = load_cases([path])
    assert [c.id for c in res.cases] == ["good"]  # the good case in the same file still loads
    (err,) = res.errors
    assert err.case_id == "bad" and err.key == key and needle in str(err)
    assert str(err).startswith(f"{path}, case 'bad', key '{key}': ")


@pytest.mark.parametrize(("spec", "key", "needle"), [
    ({"seed": "x", "shapes": [[1, 1, 1]]}, "seed", "non-negative integer"),
    ({"seed": 1, "shapes": [[1, 0, 1]]}, "shapes", "positive integers"),
    ({"seed": 1, "shapes": [[1, 1, 1]], "regimes": "normal"}, "regimes", "non-empty list"),
    ({"seed": 1, "shapes": [[1, 1, 1]], "regimes": ["gaussian"]}, "regimes", "unknown regime(s) ['gaussian']"),
    ({"seed": 1, "shapes": [[1, 1, 1]], "tier": "huge"}, "tier", "'default' or 'large'"),
    ({"seed": 1, "shapes": [[1, 1, 1]], "tags": "x"}, "tags", "list of strings"),
    ({"seed": 1, "shapes": [[1, 1, 1]], "name": "a b"}, "name", "letters, digits"),
    ({"seed": 1, "shapes": [[1, 1, 1]], "size": 3}, "size", "unknown key(s) ['size']"),
])
def test_bad_generate_tables(spec, key, needle):
    with pytest.raises(CaseFileError) as info:
        expand_generate_table({"name": "t", **spec} if "name" not in spec else spec, path="g.toml", index=0)
    assert info.value.key == key and needle in str(info.value) and str(info.value).startswith("g.toml, case '[[generate]]")


def test_generated_values_do_not_depend_on_the_other_combinations():
    one = expand_generate_table({"name": "t", "seed": 7, "shapes": [[3, 2, 2]], "regimes": ["normal"]}, path="g", index=0)
    more = expand_generate_table({"name": "t", "seed": 7, "shapes": [[1, 1, 1], [3, 2, 2]], "regimes": ["mixed", "normal"]},
                                 path="g", index=0)
    by_id = {c.id: c for c in more}
    for c in one:
        for key in ("X", "y", "W", "b"):
            np.testing.assert_array_equal(by_id[c.id].values[key], c.values[key])
    assert [c.id for c in one] == ["gen-t-normal-n3-d2-k2-sum-s1", "gen-t-normal-n3-d2-k2-mean-s1"]


def test_nan_and_inf_inputs_are_invalid_input_and_the_run_goes_on(tmp_path):
    path = _write(tmp_path, "c.toml", GOOD + '''
[[case]]
id = "has-nan"
X = [["nan"]]
y = [[3.0]]
W = [[2.0]]
b = [0.5]
lr = "0.1"

[[case]]
id = "has-inf"
X = [[1.0]]
y = [["-inf"]]
W = [[2.0]]
b = [0.5]
lr = "0.1"
''')
    res = load_cases([path])
    assert not res.errors
    recs = verify(res.cases, ["torch-seed"], dtypes=["float32"])
    by_case = {r.case: r for r in recs if r.quantity in ("*", "grad_W")}
    assert by_case["good"].verdict == "agree"
    assert by_case["has-nan"].verdict == "invalid-input" and "in X" in by_case["has-nan"].message
    assert by_case["has-inf"].verdict == "invalid-input" and "in y" in by_case["has-inf"].message


@pytest.mark.parametrize("impl", ["numpy-hand", "torch-seed"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_non_finite_inputs_are_invalid_and_finite_ones_beyond_the_dtype_overflow(impl, dtype):
    """For NumPy and torch the case's finiteness is read only where the inputs as handed over are not finite (their
    conversion keeps a NaN or inf): the verdicts are those of reading it first, invalid-input before overflow."""
    big = {"float16": 1e5, "float32": 1e39, "float64": 1e300}[dtype]
    cases = [harness.case_from_arrays("nan", [[float("nan")], [1.0]], [[1.0], [big]], [[1.0]], [0.0], lr=0.5),
             harness.case_from_arrays("inf", [[1.0], [1.0]], [[1.0], [-np.inf]], [[1.0]], [0.0], lr=0.5),
             harness.case_from_arrays("big", [[1.0], [1.0]], [[1.0], [big]], [[1.0]], [0.0], lr=0.5)]
    recs = {r.case: r for r in verify(cases, [impl], dtypes=[dtype]) if r.quantity in ("*", "grad_W")}
    assert recs["nan"].verdict == "invalid-input" and "in X:" in recs["nan"].message
    assert recs["inf"].verdict == "invalid-input" and "in y:" in recs["inf"].message
    assert recs["big"].verdict == ("overflow" if dtype != "float64" else "agree"), recs["big"].message


def test_a_non_finite_case_whose_inputs_cannot_be_made_is_invalid_not_an_error(monkeypatch):
    """invalid-input comes before a failure to make the inputs (out of memory), as when the case's finiteness was
    read before making them."""
    def fails(arr, framework, dtype, device):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8 bytes")

    monkeypatch.setattr(harness.runner, "to_framework", fails)
    nan = harness.case_from_arrays("nan", [[float("nan")]], [[1.0]], [[1.0]], [0.0], lr=0.5)
    good = harness.case_from_arrays("good", [[1.0]], [[1.0]], [[1.0]], [0.0], lr=0.5)
    recs = {r.case: r for r in verify([nan, good], ["torch-seed", "numpy-hand"], dtypes=["float32"])}
    assert recs["nan"].verdict == "invalid-input" and "in X:" in recs["nan"].message
    assert recs["good"].verdict == "error" and "out of memory" in recs["good"].message

def test_a_case_too_large_for_device_memory_is_an_error_record_and_the_run_goes_on(monkeypatch):
    real = harness.runner.to_framework

    def limited(arr, framework, dtype, device):
        if arr.size > 1000:  # a device with room for 1000 elements per tensor
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {arr.size * 4} bytes")
        return real(arr, framework, dtype, device)

    monkeypatch.setattr(harness.runner, "to_framework", limited)
    big = harness.case_from_arrays("big", np.ones((2000, 1)), np.ones((2000, 1)), [[1.0]], [0.0], lr=0.5)
    small = harness.case_from_arrays("small", np.ones((2, 1)), np.ones((2, 1)), [[1.0]], [0.0], lr=0.5)
    recs = verify([big, small], ["torch-seed"], dtypes=["float32"])
    (big_rec,) = [r for r in recs if r.case == "big"]
    assert big_rec.verdict == "error" and big_rec.quantity == "*"
    assert "out of memory: the case is too large for this device" in big_rec.message and "OutOfMemoryError" in big_rec.message
    assert {r.verdict for r in recs if r.case == "small"} == {"agree"}


def test_an_implementation_running_out_of_memory_is_named(tmp_path):
    def oom_step(X, y, W, b, *, lr, reduction, steps):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    impl = harness.Implementation("oom-step", framework="torch", fn=oom_step, kind="plugin")
    case = harness.case_from_arrays("c", [[1.0]], [[1.0]], [[1.0]], [0.0], lr=0.5)
    (rec,) = verify([case], [impl], dtypes=["float32"])
    assert rec.verdict == "error" and rec.message.startswith("out of memory: the case is too large for this device")


def test_cli_reports_a_malformed_file_with_its_line_and_still_writes_the_other_results(tmp_path):
    _write(tmp_path, "a.toml", GOOD)
    bad = _write(tmp_path, "b.toml", "[[case]]\nid = 'x'\nX = [[1.0,\n")
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "harness", "check", "--cases", str(tmp_path), "--devices", "cpu",
                           "--dtypes", "float32", "--implementations", "numpy-hand", "--results", str(out), "--report", "none", "-q",
                           "--isolation", "inline"],  # (a file's validation: the workers change nothing of it)
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert f"error: {bad}:3: invalid TOML" in proc.stderr  # the unclosed array on line 3
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert lines[0]["kind"] == "environment" and {r["case"] for r in lines[1:-1]} == {"good"}
    assert lines[-1]["kind"] == "run-end" and lines[-1]["completed"]



