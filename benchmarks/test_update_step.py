"""Benchmarks: the update step of every registered implementation, the memory-bandwidth
probe that gives its floor, and the cost of verification (harness check vs gradcheck).

Timing follows :mod:`harness.bench.timing`: ``benchmark.pedantic`` with an
untimed ``setup`` (device synchronize, ``.grad`` cleared), a timed call that
ends with a synchronize, warm-up rounds before timing, one iteration per round.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from harness.bench import timing


def _run(benchmark: Any, target: Any, setup: Any, target_time: float, warmup: int = 2) -> Any:
    if benchmark.disabled:  # --benchmark-disable: one call, correctness only
        return benchmark.pedantic(target, setup=setup, rounds=1, iterations=1)
    rounds, _ = timing.plan_rounds(target, setup, target_time=target_time, warmup=warmup)
    # plan_rounds has just warmed the target up (compilation, caches, allocator): no more warm-up rounds needed
    return benchmark.pedantic(target, setup=setup, rounds=rounds, warmup_rounds=0, iterations=1)


@pytest.mark.step
def test_step(benchmark: Any, step_params: tuple[Any, timing.Size, str, str, str | None], target_time: float) -> None:
    impl, size, device, dtype, rule = step_params
    target = timing.make_step_target(impl, size, device, dtype, rule=rule)
    benchmark.group = f"step {dtype} D={size.d} K={size.k}"
    # a plain-SGD step timed with another rule is its own row: "torch-optim-sgd+sgd" (momentum, Nesterov, weight decay)
    benchmark.extra_info.update({
        "kind": "step", "implementation": impl.name if rule is None else f"{impl.name}+{rule}", "framework": impl.framework,
        "optimizer": target.optimizer.describe() if target.optimizer is not None else "plain sgd", "device": device,
        "device_name": timing.device_name(device), "dtype": dtype, "n": size.n, "d": size.d, "k": size.k,
        "bytes": target.bytes, "reduction": timing.REDUCTION,
    })
    _run(benchmark, target, target.setup, target_time)
    problem = target.check()
    benchmark.extra_info["check_failed"] = problem or ""  # the tables mark the time of a step that failed its check
    assert problem is None, problem


@pytest.mark.bandwidth
def test_bandwidth(benchmark: Any, bandwidth_params: tuple[str, str], sweep: timing.Sweep, target_time: float) -> None:
    device, kind = bandwidth_params
    nbytes = sweep.bandwidth_bytes[device.split(":")[0]]
    target = timing.BandwidthTarget(device, kind, nbytes)
    benchmark.group = "bandwidth"
    benchmark.extra_info.update({"kind": "bandwidth", "device": device, "device_name": timing.device_name(device),
                                 "operation": kind, "bytes": target.bytes})
    out = _run(benchmark, target, target.setup, target_time)
    if kind == "read":  # a sum of ones is the element count (exact with pairwise/tree sums; tolerance for other orders)
        assert math.isclose(float(out), nbytes // 4, rel_tol=1e-6)
    else:
        assert float(out[-1]) == 1.0


@pytest.mark.verify
def test_verification_cost(benchmark: Any, verify_params: tuple[str, int, int], target_time: float) -> None:
    method, d, k = verify_params
    target = timing.VerifyTarget(method, d, k)
    benchmark.group = f"verify D*K={d * k}"
    benchmark.extra_info.update({"kind": "verify", "method": method, "d": d, "k": k, "n": target.n, "dtype": "float64"})
    passed = _run(benchmark, target, target.setup, target_time, warmup=1)
    benchmark.extra_info["passed"] = bool(passed)
    assert passed, f"{method} did not pass on a correct step (D={d}, K={k})"


@pytest.mark.verify
def test_oracle_cost(benchmark: Any, oracle_params: tuple[str, timing.Size, str, str], target_time: float) -> None:
    method, size, dtype, data = oracle_params
    target = timing.OracleTarget(method, size, dtype, data)
    benchmark.group = f"oracle {dtype} {data} {size.label}"
    benchmark.extra_info.update({"kind": "oracle", "method": method, "n": size.n, "d": size.d, "k": size.k,
                                 "dtype": dtype, "data": data})
    passed = _run(benchmark, target, target.setup, target_time, warmup=1)
    benchmark.extra_info["passed"] = bool(passed)
    assert passed, f"{method} did not pass on a correct step ({size.label}, {dtype}, {data})"
