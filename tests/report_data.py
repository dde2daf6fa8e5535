"""Synthetic results for the report's size and speed tests (not graded by the oracle: the
report is a view, so any well-formed records do; real records come from ``verify`` in the other tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.records import Record, environment_record, write_jsonl

QUANTITIES = ("loss", "grad_W", "grad_b", "W", "b")
IMPLS = ("torch-seed", "numpy-hand")
DEVICES = ("cpu", "cuda:0")
DTYPES = ("float32", "float64")
STEPS = 2


def synthetic_records(n_cases: int, seed: int = 0) -> list[Record]:
    """``n_cases * 80`` records (2 implementations x 2 devices x 2 dtypes x 2 steps x 5 quantities),
    mostly ``agree``, with a few ``suspect``, ``disagree`` and ``error`` records."""
    rng = np.random.default_rng(seed)
    n = n_cases * len(IMPLS) * len(DEVICES) * len(DTYPES) * STEPS * len(QUANTITIES)
    bits = rng.gamma(2.0, 1.2, size=n)
    ratio = rng.lognormal(-4.0, 1.5, size=n)
    pick = rng.random(n)
    out: list[Record] = []
    i = 0
    for c in range(n_cases):
        case = f"syn-{c:05d}"
        for impl in IMPLS:
            for dev in DEVICES:
                for dt in DTYPES:
                    repro = f"python -m harness check --case {case} --implementations {impl} --devices {dev} --dtypes {dt}"
                    for step in range(1, STEPS + 1):
                        for q in QUANTITIES:
                            verdict = "agree"
                            r = float(ratio[i])
                            if pick[i] < 0.0005:
                                verdict = "error"
                            elif pick[i] < 0.002:
                                verdict, r = "disagree", 1.0 + r * 100
                            elif pick[i] < 0.01:
                                verdict = "suspect"
                            # the ratios a verdict implies (harness.verdicts.contradiction): agree within the expected
                            # bound, suspect within the rigorous one
                            if verdict == "agree":
                                r = min(r, 0.5)
                            elif verdict == "suspect":
                                r = min(max(r, 0.51), 1.0)
                            b = float(bits[i])
                            ulp = 2.0**b - 1.0
                            exact = 0.5 + (i % 997) / 1000.0
                            err = ulp * 2.0**-24
                            # bounds the ratios are of (harness.verdicts.contradiction reads the worst element's
                            # exact and computed values against them)
                            rig = err / min(r, 50.0) if err and r else 1e-6
                            expd = err / min(r * 2, 100.0) if err and r else 5e-7
                            rec = Record(
                                case=case, implementation=impl, device=dev, dtype=dt, quantity=q, step=step, verdict=verdict,
                                shape=[] if q == "loss" else [4, 2] if q in ("grad_W", "W") else [2],
                                max_abs_error=ulp * 2.0**-24, max_ulp_error=ulp, bits_of_error=b, bound_ratio=min(r, 50.0),
                                expected_ratio=min(r * 2, 100.0), worst_index=[] if q == "loss" else [i % 4, i % 2] if q in ("grad_W", "W") else [i % 2],
                                exact=f"{exact:.20f}...", computed=repr(exact + err), rigorous_bound=rig, expected_bound=expd,
                                drift_ulp_error=float(bits[i] * step) if q in ("W", "b") else None,
                                message="RuntimeError: synthetic failure" if verdict == "error" else "",
                                oracle_method="exact-rational", repro=repro, reduction="sum",
                            )
                            if verdict == "error":
                                rec.bits_of_error = rec.max_ulp_error = rec.bound_ratio = None
                            out.append(rec)
                            i += 1
    return out


def write_synthetic(path: Path, records: list[Record], seed: int = 0) -> Path:
    """Write ``records`` to ``path`` as a results file with an environment line.

    Faster than :func:`harness.records.write_jsonl` (``dataclasses.asdict`` per record), same format.
    """
    env = environment_record({"hostname": f"synthetic-{seed}"})
    with path.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps(env) + "\n")
        for r in records:
            fh.write(json.dumps(r.__dict__) + "\n")
    return path


def real_results(folder: Path) -> tuple[Path, Path]:
    """Two results files graded by the exact oracle, as two CI jobs would write them.

    ``cpu-job.jsonl``: the seed notebook case in float32 and float64 (``torch-seed``, ``numpy-hand``);
    ``second-job.jsonl``: the same case in float16, from a machine whose environment says ``second-job``.
    """
    from harness.cases import load_cases
    from harness.runner import verify
    from tests.conftest import CASES

    seed = [c for c in load_cases([CASES / "seed.toml"]).cases if c.id == "seed"]
    a = verify(seed, ["torch-seed", "numpy-hand"], dtypes=["float32", "float64"])
    b = verify(seed, ["torch-seed", "numpy-hand"], dtypes=["float16"])
    pa = write_jsonl(folder / "cpu-job.jsonl", a, environment_record({"hostname": "cpu-job"}))
    pb = write_jsonl(folder / "second-job.jsonl", b, environment_record({"hostname": "second-job"}))
    return pa, pb
