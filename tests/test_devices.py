"""Devices: inputs created on the device, absent devices, TF32 settings in
records, and the cross-device summary naming the device that disagrees."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import harness
from harness.devices import available_devices, parse_devices, to_framework
from harness.records import Record
from harness.runner import RunOptions, verify
from harness.summary import by_device_dtype
from tests.conftest import ROOT

HAS_CUDA = torch.cuda.is_available()
CASE = harness.case_from_arrays("dev", [[1.0, 2.0], [3.0, 4.0], [0.5, -1.0]], [[1.0], [0.0], [2.0]], [[0.25], [-0.5]], [0.125],
                                lr=0.0625, steps=2, reduction="sum", dtypes=["float32"])


def test_inputs_are_created_in_the_dtype_on_the_device():
    t = to_framework(np.array([[0.1, 2.0]]), "torch", "bfloat16", "cpu")
    assert t.dtype == torch.bfloat16 and t.device.type == "cpu" and t.is_leaf and not t.requires_grad
    assert t.tolist() == [[0.10009765625, 2.0]]  # 0.1 rounded once to bfloat16 (8 significant bits)


def test_cpu_is_always_available_and_cuda_means_every_visible_device():
    avail = available_devices()
    assert avail[0] == "cpu"
    assert parse_devices("cpu") == ["cpu"]
    expected = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if HAS_CUDA else ["cuda"]
    assert parse_devices("cuda") == expected
    with pytest.raises(harness.UsageError, match="unknown device 'tpu'"):
        parse_devices("tpu")


@pytest.mark.skipif(HAS_CUDA, reason="checks the record of an absent CUDA device")
def test_an_absent_device_is_unsupported_with_the_reason_not_an_error():
    (rec,) = verify([CASE], ["torch-seed"], devices=["cuda"], dtypes=["float32"])
    assert rec.verdict == "unsupported" and rec.message == "device cuda is not available on this machine"


def _rec(device, dtype, verdict, tf32=None):
    return Record(case="c", implementation="i", device=device, dtype=dtype, quantity="grad_W", step=1, verdict=verdict, tf32=tf32)


def test_cross_device_summary_names_the_device_that_disagrees():
    recs = [_rec("cpu", "float32", "agree"), _rec("cpu", "float64", "agree"),
            _rec("cuda:0", "float32", "agree", tf32=False), _rec("cuda:0", "float32", "disagree", tf32=True),
            _rec("cuda:0", "float32", "disagree", tf32=True), _rec("cuda:0", "float64", "agree", tf32=False)]
    assert by_device_dtype(recs).splitlines() == [
        "cpu float32: 1 agree",
        "cpu float64: 1 agree",
        "cuda:0 float32: 1 agree",
        "cuda:0 float64: 1 agree",
        "cuda:0 (tf32) float32: 2 disagree",
        "cross-device: cuda:0 (tf32) disagrees (float32: 2 disagree); cpu, cuda:0 agree with the oracle",
    ]
    assert by_device_dtype(recs[:2]).splitlines()[-1] == "cpu float64: 1 agree"  # one device: no cross-device line


def test_records_carry_the_matmul_settings():
    recs = verify([CASE], ["torch-seed"], devices=["cpu"], options=RunOptions(matmul_precision="high"))
    assert recs and all(r.matmul_precision == "high" and r.tf32 is None for r in recs)
    assert torch.get_float32_matmul_precision() == "highest"  # restored after the run


def test_cli_tf32_both_adds_a_tf32_pass_for_cuda_devices_only(tmp_path):
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "harness", "check", "--cases", "cases/seed.toml", "--devices", "all",
                           "--implementations", "torch-seed", "--dtypes", "float32", "--tf32", "both",
                           "--results", str(out), "--report", "none", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0]["tf32_option"] == "both"
    recs = lines[1:-1]
    cuda = [r for r in recs if r["device"].startswith("cuda")]
    assert {r["tf32"] for r in recs if r["device"] == "cpu"} == {None}
    assert {r["tf32"] for r in cuda} == ({False, True} if HAS_CUDA else set())
    assert {r["device"] for r in recs} == set(available_devices())


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device on this machine (torch.cuda.is_available() is False)")
def test_cuda_records_with_tf32_off_and_on():
    off = verify([CASE], ["torch-seed"], devices=["cuda"], options=RunOptions(tf32=False))
    on = verify([CASE], ["torch-seed"], devices=["cuda"], options=RunOptions(tf32=True))
    assert {r.tf32 for r in off} == {False} and {r.tf32 for r in on} == {True}
    assert not [r for r in off + on if r.verdict in ("disagree", "error")]


def test_the_tf32_option_is_applied_during_the_step_and_restored():
    seen = []

    def spy(X, y, W, b, *, lr, reduction, steps):
        seen.append((torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32))
        return harness.implementations.REGISTRY["torch-seed"].fn(X, y, W, b, lr=lr, reduction=reduction, steps=steps)

    impl = harness.Implementation("spy", framework="torch", fn=spy, kind="plugin")
    harness.implementations.load_builtins()
    on = verify([CASE], [impl], devices=["cpu"], options=RunOptions(tf32=True))
    off = verify([CASE], [impl], devices=["cpu"], options=RunOptions(tf32=False))
    assert seen == [("high", True), ("highest", False)]
    assert {r.matmul_precision for r in on} == {"high"} and {r.matmul_precision for r in off} == {"highest"}
    assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cuda.matmul.allow_tf32
