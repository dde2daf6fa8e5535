"""Views of a pytest-benchmark JSON file: step times against the bandwidth floor,
CPU against GPU with the crossover size, and the cost of verification.

The JSON is the data (``pytest-benchmark --benchmark-json``); every table here is
computed from it, so tables from another machine's file are one call away.
Each benchmark's ``extra_info`` carries ``kind`` (``step``, ``bandwidth`` or
``verify``) and its parameters. Times are in seconds, by default the
**minimum** over the rounds (``stat="min"``): on a shared machine other
processes only ever add time, so the fastest round is the best estimate of
what the hardware does; ``stat="median"`` gives the typical round instead.

Definitions:

- **bandwidth** of a device: the largest ``bytes / time`` of its
  ``bandwidth`` benchmarks (a large ``sum`` and a large copy, timed like the
  step, in the same run).
- **floor** of a step: ``floor_bytes / bandwidth`` (see
  :func:`harness.bench.timing.floor_elements`): no implementation can be
  faster than moving its inputs and outputs once.
- **ratio**: step time / floor (>= 1 up to measurement noise).
- **regime** of a size, from the fixed cost ``t0`` (the time at the smallest
  N of the same implementation, device, dtype, D and K), in this order:
  ``bandwidth`` when ``ratio <= 10`` (an unfused autograd step reads X twice
  and writes and reads N*K intermediates: a few times the floor is what
  bandwidth-bound looks like); ``overhead`` when ``time <= 2 t0`` (the
  fixed per-call cost of dispatch, kernel launches and allocation dominates:
  time is flat in N); otherwise ``compute`` (far above both: arithmetic or a
  slow kernel, e.g. NumPy float16, which has no BLAS, or, on a shared
  machine, interference).
- **crossover** (per implementation, dtype, D, K): the smallest N of the sweep
  from which the GPU is faster at that N and at every larger N of the sweep;
  None when the GPU is not faster at the largest N.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BANDWIDTH_BOUND_RATIO = 10.0
OVERHEAD_FACTOR = 2.0


@dataclass(frozen=True)
class StepTiming:
    """One step benchmark: seconds (the chosen statistic) and what the floor says about it."""

    implementation: str
    device: str
    dtype: str
    n: int
    d: int
    k: int
    seconds: float
    bytes: int
    rounds: int
    floor: float | None = None
    regime: str = ""
    #: the correctness check's problem when the timed step failed it (``extra_info["check_failed"]``), else ``""``
    check_failed: str = ""

    @property
    def ratio(self) -> float | None:
        return self.seconds / self.floor if self.floor else None


@dataclass
class BenchData:
    """What a benchmark JSON holds, grouped for the tables."""

    path: str
    machine: dict[str, Any]
    steps: list[StepTiming]
    bandwidth: dict[str, float]  # device -> bytes per second
    verify: list[dict[str, Any]]
    stat: str = "min"
    oracle: list[dict[str, Any]] = field(default_factory=list)

    @property
    def devices(self) -> list[str]:
        seen: list[str] = []
        for s in self.steps:
            if s.device not in seen:
                seen.append(s.device)
        return sorted(seen, key=lambda d: (d != "cpu", d))


STATS = ("min", "median", "mean")


def load(path: str | Path, stat: str = "min") -> BenchData:
    """Read a pytest-benchmark JSON file written by ``python -m harness bench``.

    Args:
        stat: which statistic of the rounds is "the time": ``min`` (default), ``median`` or ``mean``.

    Raises:
        OSError: if the file cannot be read.
        ValueError: naming the file if it is not pytest-benchmark JSON.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(raw, dict) or "benchmarks" not in raw:
        raise ValueError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' key)")
    return from_json(raw, str(path), stat)


def from_json(raw: Mapping[str, Any], path: str = "<memory>", stat: str = "min") -> BenchData:
    """Group the benchmarks of a parsed pytest-benchmark JSON object (see :func:`load`).

    Raises:
        ValueError: for an unknown ``stat``.
    """
    if stat not in STATS:
        raise ValueError(f"stat must be one of {STATS}, got {stat!r}")

    def _time(bench: Mapping[str, Any]) -> float:
        return float(bench["stats"][stat])

    bw: dict[str, float] = {}
    steps: list[StepTiming] = []
    verify: list[dict[str, Any]] = []
    oracle: list[dict[str, Any]] = []
    for b in raw.get("benchmarks", []):
        info = b.get("extra_info") or {}
        kind = info.get("kind")
        if kind == "bandwidth":
            rate = info["bytes"] / _time(b)
            bw[info["device"]] = max(bw.get(info["device"], 0.0), rate)
        elif kind == "step":
            steps.append(StepTiming(info["implementation"], info["device"], info["dtype"], int(info["n"]), int(info["d"]),
                                    int(info["k"]), _time(b), int(info["bytes"]), int(b["stats"]["rounds"]),
                                    check_failed=str(info.get("check_failed") or "")))
        elif kind == "verify":
            verify.append({**info, "seconds": _time(b), "rounds": int(b["stats"]["rounds"])})
        elif kind == "oracle":
            oracle.append({**info, "seconds": _time(b), "rounds": int(b["stats"]["rounds"])})
    return BenchData(path, dict(raw.get("machine_info") or {}), classify(steps, bw), bw, verify, stat, oracle)


def regime(seconds: float, floor: float | None, t0: float) -> str:
    """``overhead``, ``bandwidth`` or ``compute`` (definitions in the module docstring); ``""`` without a floor."""
    if floor is None:
        return ""
    if seconds <= BANDWIDTH_BOUND_RATIO * floor:
        return "bandwidth"
    return "overhead" if seconds <= OVERHEAD_FACTOR * t0 else "compute"


def classify(steps: Iterable[StepTiming], bandwidth: Mapping[str, float]) -> list[StepTiming]:
    """Attach floor and regime to each timing (``t0`` = time at the smallest N of its series)."""
    steps = list(steps)
    t0: dict[tuple[str, str, str, int, int], tuple[int, float]] = {}
    for s in steps:
        key = (s.implementation, s.device, s.dtype, s.d, s.k)
        if key not in t0 or s.n < t0[key][0]:
            t0[key] = (s.n, s.seconds)
    out = []
    for s in steps:
        bw = bandwidth.get(s.device)
        floor = s.bytes / bw if bw else None
        out.append(StepTiming(s.implementation, s.device, s.dtype, s.n, s.d, s.k, s.seconds, s.bytes, s.rounds, floor,
                              regime(s.seconds, floor, t0[(s.implementation, s.device, s.dtype, s.d, s.k)][1]),
                              s.check_failed))
    return out


def crossover(cpu: Mapping[int, float], gpu: Mapping[int, float]) -> int | None:
    """The smallest N from which the GPU is faster at every N of the sweep (both sides timed).

    Args:
        cpu, gpu: seconds per step, keyed by N.

    Returns:
        that N, or None when the GPU is not faster at the largest common N (or nothing is common).
    """
    common = sorted(set(cpu) & set(gpu))
    best: int | None = None
    for n in reversed(common):
        if gpu[n] < cpu[n]:
            best = n
        else:
            break
    return best


def gpu_device(devices: Sequence[str]) -> str | None:
    """The accelerator compared with the CPU: the first CUDA device, else MPS, else None."""
    for d in devices:
        if d.startswith("cuda"):
            return d
    return "mps" if "mps" in devices else None


def format_seconds(s: float | None) -> str:
    """``1.23 us``, ``45.6 ms``, ``1.20 s``; ``n/a`` for None."""
    if s is None:
        return "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if s >= scale or unit == "ns":
            return f"{s / scale:.3g} {unit}"
    return f"{s:.3g} s"  # pragma: no cover


#: Written after the time of a step whose results failed its correctness check (the time of a wrong step).
CHECK_FAILED = " (check FAILED)"


def _step_time(s: StepTiming | None) -> str:
    """A step's time for a table cell, marked :data:`CHECK_FAILED` where its results failed the check."""
    if s is None:
        return "n/a"
    return format_seconds(s.seconds) + (CHECK_FAILED if s.check_failed else "")


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}x"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def step_tables(data: BenchData) -> str:
    """One table per implementation: CPU time, floor ratio and regime, GPU time, ratio and regime,
    speedup (CPU time / GPU time), then the crossover size per dtype, D and K."""
    gpu = gpu_device(data.devices)
    by_impl: dict[str, list[StepTiming]] = defaultdict(list)
    for s in data.steps:
        by_impl[s.implementation].append(s)
    out = []
    gname = gpu or "GPU"
    for impl, timings in by_impl.items():
        idx = {(s.device, s.dtype, s.n, s.d, s.k): s for s in timings}
        keys = sorted({(s.dtype, s.d, s.k, s.n) for s in timings})
        rows = []
        for dtype, d, k, n in keys:
            c = idx.get(("cpu", dtype, n, d, k))
            g = idx.get((gpu, dtype, n, d, k)) if gpu else None
            speed = _ratio(c.seconds / g.seconds) if c and g else "n/a"
            rows.append([dtype, str(n), str(d), str(k),
                         _step_time(c), _ratio(c.ratio) if c else "n/a", c.regime if c else "",
                         _step_time(g), _ratio(g.ratio) if g else "n/a", g.regime if g else "", speed])
        header = ["dtype", "N", "D", "K", "cpu", "cpu/floor", "cpu regime", gname, f"{gname}/floor", f"{gname} regime", "speedup"]
        lines = [f"== {impl} ({data.stat} per step; floor = minimal bytes / measured bandwidth)", _table(header, rows)]
        series = sorted({(s.dtype, s.d, s.k) for s in timings})
        for dtype, d, k in series:
            cpu_t = {s.n: s.seconds for s in timings if s.device == "cpu" and (s.dtype, s.d, s.k) == (dtype, d, k)}
            gpu_t = {s.n: s.seconds for s in timings if s.device == gpu and (s.dtype, s.d, s.k) == (dtype, d, k)}
            if gpu is None:
                why = "n/a (no GPU in this run)"
            elif not cpu_t or not gpu_t:
                why = f"n/a (not timed on {'cpu' if not cpu_t else gpu})"
            else:
                cross = crossover(cpu_t, gpu_t)
                why = f"N = {cross}" if cross is not None else f"none up to N = {max(set(cpu_t) & set(gpu_t))} (GPU not faster)"
            lines.append(f"crossover {dtype} D={d} K={k}: {why}")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def bandwidth_table(data: BenchData) -> str:
    """Measured bandwidth per device, in GB/s (10^9 bytes per second)."""
    names = data.machine.get("harness", {}).get("devices", {}) if isinstance(data.machine.get("harness"), dict) else {}
    rows = [[dev, names.get(dev, ""), f"{bw / 1e9:.3g} GB/s"] for dev, bw in sorted(data.bandwidth.items())]
    return _table(["device", "name", "bandwidth"], rows)


def largest_size_ratios(data: BenchData) -> list[StepTiming]:
    """The timings at the largest size (most floor bytes) of each implementation, device and dtype."""
    best: dict[tuple[str, str, str], StepTiming] = {}
    for s in data.steps:
        key = (s.implementation, s.device, s.dtype)
        if key not in best or s.bytes > best[key].bytes:
            best[key] = s
    return [best[k] for k in sorted(best)]


def largest_table(data: BenchData) -> str:
    """Step time as a multiple of the bandwidth floor at the largest size of each series."""
    rows = [[s.implementation, s.device, s.dtype, f"N={s.n} D={s.d} K={s.k}", _step_time(s),
             format_seconds(s.floor), _ratio(s.ratio), s.regime] for s in largest_size_ratios(data)]
    return _table(["implementation", "device", "dtype", "largest size", "time", "floor", "time/floor", "regime"], rows)


def verify_table(data: BenchData, markdown: bool = False) -> str:
    """Seconds per verification of one case, by D*K: harness check vs gradcheck (default, fast mode)."""
    by: dict[tuple[int, int], dict[str, dict[str, Any]]] = defaultdict(dict)
    for v in data.verify:
        by[(int(v["d"]), int(v["k"]))][v["method"]] = v
    header = ["D*K", "D", "K", "N", "harness check", "gradcheck", "gradcheck fast", "harness / gradcheck", "verdicts passed"]
    rows = []
    for (d, k), m in sorted(by.items(), key=lambda kv: (kv[0][0] * kv[0][1], kv[0])):
        def sec(method: str, m: dict[str, dict[str, Any]] = m) -> float | None:
            return m[method]["seconds"] if method in m else None

        h, g, f = sec("harness"), sec("gradcheck"), sec("gradcheck-fast")
        n = next(iter(m.values())).get("n", "")
        failed = [meth for meth, v in sorted(m.items()) if not v.get("passed")]
        passed = "all" if not failed else "FAILED: " + ", ".join(failed)
        rows.append([str(d * k), str(d), str(k), str(n), format_seconds(h), format_seconds(g), format_seconds(f),
                     _ratio(h / g) if h and g else "n/a", passed])
    if not markdown:
        return _table(header, rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def oracle_table(data: BenchData, markdown: bool = False) -> str:
    """The exact oracle and one whole check as multiples of a NumPy float64 step on the same inputs,
    and the whole check against ``torch.autograd.gradcheck`` (full and fast mode), by N*D*K."""
    by: dict[tuple[int, int, int, str, str], dict[str, float]] = defaultdict(dict)
    for v in data.oracle:
        by[(int(v["n"]), int(v["d"]), int(v["k"]), str(v["dtype"]), str(v["data"]))][str(v["method"])] = float(v["seconds"])
    ref = {(n, d, k): m for (n, d, k, dt, da), m in by.items() if dt == "float64" and da == "normal"}
    header = ["N*D*K", "N", "D", "K", "dtype", "data", "NumPy step", "oracle", "oracle / step", "check", "check / step",
              "gradcheck", "gradcheck fast", "check / gradcheck", "check / fast"]
    rows = []
    for (n, d, k, dt, da), m in sorted(by.items(), key=lambda kv: (kv[0][0] * kv[0][1] * kv[0][2], kv[0][3], kv[0][4])):
        step, orc, chk = m.get("numpy-step"), m.get("oracle"), m.get("check")
        g, f = ref.get((n, d, k), {}).get("gradcheck"), ref.get((n, d, k), {}).get("gradcheck-fast")
        rows.append([str(n * d * k), str(n), str(d), str(k), dt, da, format_seconds(step), format_seconds(orc),
                     _ratio(orc / step) if orc and step else "n/a", format_seconds(chk), _ratio(chk / step) if chk and step else "n/a",
                     format_seconds(g), format_seconds(f), _ratio(chk / g) if chk and g else "n/a",
                     _ratio(chk / f) if chk and f else "n/a"])
    if not markdown:
        return _table(header, rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def not_timed(data: BenchData) -> list[str]:
    """The implementations the run had a step to time for (``machine_info["harness"]["implementations"]``, written by
    ``benchmarks/conftest.py``) with no timing in ``data``: each of their benchmarks failed (pytest printed why), so
    the tables leave them out. Empty for a file without that list (an earlier version's) or without step timings."""
    harness = data.machine.get("harness")
    wanted = harness.get("implementations") if isinstance(harness, dict) else None
    if not isinstance(wanted, list) or not data.steps:
        return []
    timed = {s.implementation.split("+", 1)[0] for s in data.steps}
    return [str(name) for name in wanted if str(name) not in timed]


def report_text(data: BenchData) -> str:
    """Everything ``python -m harness bench`` prints after a run."""
    parts = [f"benchmark data: {data.path}"]
    note = data.machine.get("harness", {}).get("note") if isinstance(data.machine.get("harness"), dict) else None
    if note:
        parts.append(f"note: {note}")
    if data.bandwidth:
        parts += ["", "Measured memory bandwidth (large sum / copy, timed like the step):", bandwidth_table(data)]
    if data.steps:
        parts += ["", step_tables(data), "", "At the largest size (time as a multiple of the bandwidth floor):", largest_table(data)]
        missing = not_timed(data)
        if missing:  # (an implementation that raised at every size was left out of the tables without a word, helper-126)
            parts += ["", f"not timed: {', '.join(missing)}: every benchmark of theirs failed (pytest's FAILED lines above say why)"]
    if data.verify:
        parts += ["", f"Cost of verifying one case (float64, CPU; {data.stat} of the rounds):", verify_table(data)]
    if data.oracle:
        parts += ["", f"Cost of the exact oracle and of one whole check (CPU; {data.stat} of the rounds; gradcheck in float64):",
                  oracle_table(data)]
    return "\n".join(parts)
