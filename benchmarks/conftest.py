"""pytest-benchmark layer over :mod:`harness.bench.timing` (run with ``python -m harness bench``).

Not collected by the default ``pytest`` run (``testpaths = ["tests"]``). Options:

``--bench-sweep`` tiny|quick|full, ``--bench-devices``, ``--bench-dtypes``,
``--bench-implementations``, ``--bench-plugin`` (repeatable), ``--bench-threads``,
``--bench-tf32`` off|on, ``--bench-max-work``, ``--bench-target-time``, ``--bench-note``.

Run without xdist (``-p no:xdist``): pytest-benchmark disables itself under xdist.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness.bench import timing
from harness.devices import parse_devices, parse_dtypes
from harness.implementations import load_entry_points, load_plugin, resolve
from harness.memory import keep_freed_memory


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("harness-bench", "autograd-harness benchmarks")
    g.addoption("--bench-sweep", choices=sorted(timing.SWEEPS), default="quick", help="size sweep (default: quick)")
    g.addoption("--bench-devices", default=None, help="comma-separated devices (default: all available)")
    g.addoption("--bench-dtypes", default=None, help="comma-separated dtypes (default: every dtype each implementation supports)")
    g.addoption("--bench-implementations", default=None, help="comma-separated implementation names (default: every correct one)")
    g.addoption("--bench-plugin", action="append", default=[], help="module registering implementations (repeatable)")
    g.addoption("--bench-threads", type=int, default=None, help="CPU threads for torch and BLAS (default: CPUs available)")
    g.addoption("--bench-tf32", choices=("off", "on"), default="off", help="TF32 for float32 CUDA matmuls")
    g.addoption("--bench-max-work", type=float, default=2**26, help="skip sizes with N*D*K above this")
    g.addoption("--bench-target-time", type=float, default=0.3, help="seconds of timed rounds per benchmark")
    g.addoption("--bench-note", default="", help="free text for machine_info")


def pytest_configure(config: pytest.Config) -> None:
    for name, what in (("step", "times the update step"), ("bandwidth", "measures memory bandwidth"),
                       ("verify", "times the verification of one case")):
        config.addinivalue_line("markers", f"{name}: {what}")
    for mod in config.getoption("--bench-plugin"):
        load_plugin(mod)
    load_entry_points()
    timing.set_tf32(config.getoption("--bench-tf32") == "on")
    threads = config.getoption("--bench-threads") or timing.default_threads()
    config.stash[_PINNED] = timing.pin_threads(threads)
    keep_freed_memory()  # as the command line and its workers do (harness.memory): the steps and checks alike


_PINNED = pytest.StashKey[dict]()


def _selection(config: pytest.Config) -> tuple[list[Any], list[str], list[str] | None, timing.Sweep]:
    names = config.getoption("--bench-implementations")
    impls = resolve([n.strip() for n in names.split(",") if n.strip()] if names else None)
    devices = parse_devices(config.getoption("--bench-devices"))
    dtypes = parse_dtypes(config.getoption("--bench-dtypes"))
    return impls, devices, dtypes, timing.SWEEPS[config.getoption("--bench-sweep")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    config = metafunc.config
    impls, devices, dtypes, sweep = _selection(config)
    if "step_params" in metafunc.fixturenames:
        params = []
        for size in sweep.sizes(config.getoption("--bench-max-work")):
            for impl in impls:
                for device in devices:
                    for dtype in dtypes or timing.ALL_DTYPES:
                        if timing.applicable(impl, device, dtype) is None:
                            params.append(pytest.param((impl, size, device, dtype, None), id=f"{impl.name}-{device}-{dtype}-{size.label}"))
                            # a step of plain SGD that also implements SGD's full rule is timed with it too (momentum, ...)
                            for rule in (r for r in impl.optimizers if "plain" in impl.optimizers and r != "plain"):
                                params.append(pytest.param((impl, size, device, dtype, rule),
                                                           id=f"{impl.name}+{rule}-{device}-{dtype}-{size.label}"))
        metafunc.parametrize("step_params", params)
    if "bandwidth_params" in metafunc.fixturenames:
        metafunc.parametrize("bandwidth_params", [pytest.param((dev, kind), id=f"{dev}-{kind}") for dev in devices for kind in ("read", "copy")])
    if "oracle_params" in metafunc.fixturenames:
        params = []
        for n, d, k in sweep.oracle_sizes:
            size = timing.Size(n, d, k)
            for dtype in ("float64", "float32"):
                for data in timing.ORACLE_DATA:
                    for method in timing.ORACLE_METHODS:
                        if method.startswith("gradcheck") and (dtype != "float64" or data != "normal"):
                            continue  # gradcheck runs in float64 on the normal data only
                        params.append(pytest.param((method, size, dtype, data), id=f"{method}-{dtype}-{data}-{size.label}"))
        metafunc.parametrize("oracle_params", params)
    if "verify_params" in metafunc.fixturenames:
        metafunc.parametrize("verify_params", [pytest.param((method, d, k), id=f"{method}-DK{d * k}-D{d}-K{k}")
                                               for d, k in sweep.verify_dks for method in timing.VERIFY_METHODS])


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    """Add torch/CUDA versions, device names, TF32 settings and the pinned threads to the JSON."""
    impls, devices, dtypes, sweep = _selection(config)
    sizes = sweep.sizes(config.getoption("--bench-max-work"))
    machine_info["harness"] = {
        **timing.machine_info(devices),
        "pinned": config.stash.get(_PINNED, {}),
        "sweep": sweep.name,
        "max_work": config.getoption("--bench-max-work"),
        "tf32_option": config.getoption("--bench-tf32"),
        "reduction": timing.REDUCTION,
        "lr": timing.LR,
        "note": config.getoption("--bench-note"),
        # the implementations with a step to time (a size within --bench-max-work, a device and dtype they run in): the
        # tables name those of them with no timing (harness.bench.analysis.not_timed)
        "implementations": [impl.name for impl in impls if sizes and any(
            timing.applicable(impl, device, dtype) is None for device in devices for dtype in dtypes or timing.ALL_DTYPES)],
    }


@pytest.fixture
def target_time(request: pytest.FixtureRequest) -> float:
    return float(request.config.getoption("--bench-target-time"))


@pytest.fixture
def sweep(request: pytest.FixtureRequest) -> timing.Sweep:
    return timing.SWEEPS[request.config.getoption("--bench-sweep")]
