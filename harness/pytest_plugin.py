"""The pytest plugin: run the harness inside ``pytest``, serially or under pytest-xdist.

Registered through the ``pytest11`` entry point (``harness.pytest_plugin``, which
names this module through the top-level ``harness_pytest_plugin``, so that pytest
rewrites the asserts of that module only, not of every ``harness`` module), so
installing the package makes it available in every project; it stays inert
until a test uses one of its fixtures: it imports neither torch nor SymPy at
start-up, collects nothing and prints nothing unless records were made. Only
this module of the harness imports pytest.

Options (group "autograd-harness" in ``pytest --help``):

``--harness-cases PATH`` (repeatable; default: ``$HARNESS_CASES``, ``./cases``
or the project's ``cases/``), ``--harness-case ID`` (id or glob, repeatable),
``--harness-tier quick|full|large`` (default quick; ``default`` is ``full``), ``--harness-devices LIST`` (``cpu``,
``cuda``, ``cuda:N``, ``mps``, ``all``; default all available),
``--harness-dtypes LIST`` (default: each case's own), ``--harness-implementations
LIST``, ``--harness-plugin MODULE`` (repeatable), ``--harness-tf32 off|on``,
``--harness-matmul-precision highest|high|medium``, ``--harness-results PATH``
(JSON lines, one file even under xdist), ``--harness-report PATH`` (HTML).

Markers: ``cuda`` and ``mps`` (put on every generated item that runs on that
device, so ``-m "not cuda"`` deselects them), ``harness(implementations=...,
dtypes=..., devices=..., tags=...)`` (a test's own defaults for the
parametrization below; command-line options win).

Fixtures:

- ``harness_case``, ``harness_dtype``, ``harness_implementation``,
  ``harness_device``: a test that asks for any of them is parametrized over
  the selected cases x dtypes x implementations x devices (one combined
  parametrization with ids ``{case}-{dtype}-{implementation}-{device}``);
  devices asked for but absent are skipped with the reason;
- ``harness_check``: ``check(case, implementation, device, dtype)`` grades one
  combination, keeps its records for the results file and the summary, and
  skips (with the reason) when the pair is ``unsupported``;
- ``harness_verify``: ``verify(step, cases=None, *, devices=None, dtypes=None,
  strict=False)`` runs the harness on a user's step function (registered with
  ``@harness.implementation`` or not) and raises ``AssertionError`` in the
  style of ``torch.testing.assert_close`` when a check fails;
- ``harness_cases``: the selected cases; ``harness_options``: the parsed options.

Under pytest-xdist each worker appends its records, item by item, to a part file
in a folder named in ``workerinput`` by the controller; the controller merges
every part there, sorted, into the one results file at the end of the session,
so ``pytest -n 2`` and a serial run write the same records. A worker that goes
down halfway (killed, crashed) leaves the records it finished, and the results
file's footer then says that the run did not complete.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported lazily at run time: the plugin must not slow down start-up
    from .cases import Case
    from .implementations import Implementation
    from .records import Record

#: The case tiers, as :data:`harness.cases.TIERS` (not imported here: the plugin imports no NumPy at start-up).
PLUGIN_TIERS = ("quick", "full", "large")
#: Parametrized fixtures, in the order their values appear in test ids.
PARAM_FIXTURES = ("harness_case", "harness_dtype", "harness_implementation", "harness_device")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "autograd-harness: grade gradients and training steps against the exact oracle")
    group.addoption("--harness-cases", action="append", metavar="PATH", default=None,
                    help="case file or folder (repeatable; default: $HARNESS_CASES, ./cases or the project's cases/)")
    group.addoption("--harness-case", action="append", metavar="ID", default=None,
                    help="only cases whose id matches (exact or glob; repeatable)")
    group.addoption("--harness-tier", choices=(*PLUGIN_TIERS, "default"), default=PLUGIN_TIERS[0],
                    help="which cases: quick (default): the hand-written cases and one generated case per regime x reduction x "
                         "steps of each [[generate]] table; full: every default-tier case (this project's CI); large: up to N = 100,000")
    group.addoption("--harness-devices", metavar="LIST", default=None,
                    help="comma-separated: cpu, cuda, cuda:N, mps, all (default: every available device)")
    group.addoption("--harness-dtypes", metavar="LIST", default=None,
                    help="comma-separated: float64,float32,float16,bfloat16 or all (default: each case's own)")
    group.addoption("--harness-implementations", metavar="LIST", default=None,
                    help="comma-separated implementation names (default: the test's harness marker, else every correct one)")
    group.addoption("--harness-plugin", action="append", metavar="MODULE", default=[], dest="harness_plugin",
                    help="import MODULE (dotted name or .py file) that registers implementations, before collection (repeatable)")
    group.addoption("--harness-tf32", choices=("off", "on"), default="off",
                    help="allow TF32 for float32 CUDA matmuls (default: off); recorded in every record")
    group.addoption("--harness-matmul-precision", choices=("highest", "high", "medium"), default="highest",
                    help="torch.set_float32_matmul_precision during each check (default: highest)")
    group.addoption("--harness-isolation", choices=("inline", "process"), default="inline",
                    help="inline (default): checks run in the pytest process (every call gets its own inputs, writing into them "
                         "or calling sys.exit is an error); process: each check runs in a supervised worker process, so that a step "
                         "that crashes, calls os._exit or hangs fails its own item and the session goes on")
    group.addoption("--harness-timeout", metavar="SECONDS", default=None,
                    help="with --harness-isolation process: seconds one case/implementation/device/dtype may take "
                         "(default: 60 s plus 1 s per million N*D*K*steps)")
    group.addoption("--harness-flush-to-zero", action="store_true", default=False,
                    help="grade every implementation with the flush-to-zero bounds (subnormal inputs, intermediates and results "
                         "may be flushed to zero), as `check --flush-to-zero`")
    group.addoption("--harness-shard", metavar="K/N", default=None,
                    help="only shard K of N of the cases, by a stable hash (CRC-32) of the case id: the N shards are disjoint and "
                         "cover every case (as `check --shard`); merge their results files with `python -m harness report`")
    group.addoption("--harness-results", metavar="PATH", default=None,
                    help="write every record to this JSON-lines file (one file, also under pytest-xdist)")
    group.addoption("--harness-report", metavar="PATH", default=None,
                    help="render the HTML agreement report of the records to PATH")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: runs on a CUDA device (generated harness items on cuda:N carry it)")
    config.addinivalue_line("markers", "mps: runs on Apple's MPS device (generated harness items on mps carry it)")
    config.addinivalue_line("markers", "harness_bad_case(message): set by the plugin on the item of a case file that could not be loaded")
    config.addinivalue_line(
        "markers",
        "harness(implementations=None, dtypes=None, devices=None, tags=None): defaults for the harness "
        "parametrization of this test (command-line --harness-* options win)",
    )
    config.stash[_STATE] = HarnessState(config)
    if getattr(config, "workerinput", None) is None:  # the controller (or a serial session) writes the outputs
        _check_outputs(config.stash[_STATE].options)
    if config.getoption("harness_plugin"):
        # asked for explicitly: import the user's modules now, so that tests calling
        # harness.assert_agrees("their-name") find them registered
        from .errors import PluginError

        try:
            config.stash[_STATE].load_plugins()
        except PluginError as exc:
            raise pytest.UsageError(str(exc)) from exc
    if getattr(config, "workerinput", None) is None:
        _keep_earlier_outputs(config.stash[_STATE])


def _keep_earlier_outputs(state: HarnessState) -> None:
    """Keep an earlier session's ``--harness-results`` and ``--harness-report`` files as ``NAME.prev.EXT``
    (:func:`harness.records.keep_previous`) as the session starts, as ``check`` does as its run starts: kept at the
    session's end, a session killed halfway (a CI timeout, SIGKILL) left the earlier session's completed file at the
    path, which ``report --exit-status`` passed as this session's (helper-126)."""
    from .records import keep_previous

    for path, option in ((state.options.results, "--harness-results"), (state.options.report, "--harness-report")):
        try:
            kept = keep_previous(path) if path is not None else None
        except OSError as exc:
            raise pytest.UsageError(f"autograd-harness: {option} {path}: cannot keep the previous file: "
                                    f"{exc.strerror or exc}; nothing was run") from None
        if kept is not None:
            state.kept.append(f"harness: the previous {path} is kept as {kept}")


def _check_outputs(options: HarnessOptions) -> None:
    """``--harness-results`` and ``--harness-report`` checked before any test runs, as ``check`` checks its outputs
    (:func:`harness.records.check_output_path`; and neither may be the other's ``NAME.prev.EXT``, where each keeps its
    earlier file): a bad path failed at the session's end, after every test had run (helper-66, helper-67)."""
    from .errors import UsageError
    from .records import check_output_path, check_previous_path, previous_path

    try:
        paths = []
        inputs = _input_paths(options) if options.results is not None or options.report is not None else []
        for path, option in ((options.results, "--harness-results"), (options.report, "--harness-report")):
            if path is not None:
                paths.append(check_output_path(path, option, inputs, _case_paths(options)))
                check_previous_path(path, option)
        if len(paths) == 2 and (paths[0].resolve() == paths[1].resolve()
                                or paths[1].resolve() == previous_path(paths[0]).resolve()
                                or paths[0].resolve() == previous_path(paths[1]).resolve()):
            raise UsageError(f"--harness-report {options.report}: the same file as --harness-results {options.results}, "
                             "or one keeps its earlier file in the other's place (NAME.prev.EXT); give them other names")
    except UsageError as exc:
        raise pytest.UsageError(f"autograd-harness: {exc}") from None


def _case_paths(options: HarnessOptions) -> list[str]:
    """The session's case files and folders: ``--harness-cases``, else the project's ``cases/``."""
    if options.cases is not None:
        return list(options.cases)
    from .api import cases_dir

    return [str(cases_dir())]


def _input_paths(options: HarnessOptions) -> list[str]:
    """The files the session's checks read, which no output may replace (:func:`harness.records.run_input_files`: the
    plug-ins, the case files given or found in the case folders, and the data files they name).
    ``--harness-results cases.toml`` replaced the case file with records (helper-78)."""
    from .cases import iter_case_files
    from .records import run_input_files

    return run_input_files([str(f) for f in iter_case_files(_case_paths(options))], options.plugins)


# ------------------------------------------------------------------ state


def _shard_option(text: str | None) -> tuple[int, int] | None:
    from .errors import UsageError
    from .shard import parse_shard

    try:
        return parse_shard(text, "--harness-shard")
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None


def _timeout_option(text: str | None, isolation: str) -> float | None:
    from .errors import UsageError
    from .timeouts import check_timeout_isolation, parse_timeout

    try:
        timeout = parse_timeout(text, "--harness-timeout")
        check_timeout_isolation(timeout, isolation, "--harness-timeout", "--harness-isolation process")
    except UsageError as exc:
        raise pytest.UsageError(f"autograd-harness: {exc}") from None
    return timeout


@dataclass
class HarnessOptions:
    """The ``--harness-*`` options, parsed (no torch needed)."""

    cases: list[str] | None
    case_ids: list[str] | None
    tier: str
    devices: str | None
    dtypes: str | None
    implementations: list[str] | None
    plugins: list[str]
    tf32: bool
    matmul_precision: str
    results: Path | None
    report: Path | None
    shard: tuple[int, int] | None = None
    isolation: str = "inline"
    timeout: float | None = None
    flush_to_zero: bool = False

    @classmethod
    def from_config(cls, config: pytest.Config) -> HarnessOptions:
        impls = config.getoption("--harness-implementations")
        report = config.getoption("--harness-report")
        results = config.getoption("--harness-results")
        if results is None and report is not None:
            results = str(Path(report).with_suffix(".jsonl"))
        return cls(
            cases=config.getoption("--harness-cases"),
            case_ids=config.getoption("--harness-case"),
            tier=config.getoption("--harness-tier"),
            devices=config.getoption("--harness-devices"),
            dtypes=config.getoption("--harness-dtypes"),
            implementations=[s.strip() for s in impls.split(",") if s.strip()] if impls else None,
            plugins=list(config.getoption("harness_plugin")),
            tf32=config.getoption("--harness-tf32") == "on",
            matmul_precision=config.getoption("--harness-matmul-precision"),
            results=Path(results) if results else None,
            report=Path(report) if report else None,
            isolation=config.getoption("--harness-isolation"),
            timeout=_timeout_option(config.getoption("--harness-timeout"), config.getoption("--harness-isolation")),
            shard=_shard_option(config.getoption("--harness-shard")),
            flush_to_zero=bool(config.getoption("--harness-flush-to-zero")),
        )


@dataclass
class HarnessState:
    """Per-process state: options, loaded cases, records made so far."""

    config: pytest.Config
    options: HarnessOptions = field(init=False)
    records: list[Record] = field(default_factory=list)
    part_files: list[Path] = field(default_factory=list)
    parts_dir: Path | None = None
    #: a pytest-xdist worker's part file, open while its session runs: each item's records are appended and flushed
    #: as they are made, so that a worker killed halfway leaves the records it had finished
    _part: Any = None
    #: the controller's list of pytest-xdist workers that went down without finishing their session (a crash, a kill)
    crashed_workers: list[str] = field(default_factory=list)
    _cases: list[Case] | None = None
    _case_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # "the previous results ... are kept as ..." lines
    #: the session's exit status once this plugin's rules have decided it (the terminal summary's own argument is the
    #: status before them)
    final_status: int | None = None
    _plugins_loaded: bool = False
    _caches: dict[tuple[str, Any], Any] = field(default_factory=dict)
    #: implementations named in a test's ``harness(implementations=...)`` marker (a worker's too, under xdist): each
    #: must grade something, as those named with ``--harness-implementations``
    marker_named: list[str] = field(default_factory=list)
    #: implementations that got an item of a test parametrized over ``harness_implementation`` (a worker's too), and
    #: whether any test was: a named one that got none ran on none of the cases (:func:`harness.verdicts.ungraded_named`)
    paired: list[str] = field(default_factory=list)
    parametrized: bool = False

    def __post_init__(self) -> None:
        self.options = HarnessOptions.from_config(self.config)
        workerinput = getattr(self.config, "workerinput", None)
        if workerinput is not None and "harness_parts_dir" in workerinput:
            self.parts_dir = Path(workerinput["harness_parts_dir"])
        elif workerinput is None:
            self.parts_dir = Path(tempfile.gettempdir()) / f"harness-parts-{uuid.uuid4().hex}"

    def keep(self, records: list[Record]) -> None:
        """Add a check's records to this process's; in a pytest-xdist worker also append them to its part file
        (flushed, one JSON line each), which the controller merges even when the worker does not finish."""
        self.records.extend(records)
        workerinput = getattr(self.config, "workerinput", None)
        if workerinput is None or self.parts_dir is None or not records:
            return
        from .records import encode_line

        if self._part is None:
            self.parts_dir.mkdir(parents=True, exist_ok=True)
            # one file per worker process: a worker that replaces a crashed one may take its id
            name = f"{workerinput.get('workerid', 'gw')}-{os.getpid()}.jsonl"
            self._part = (self.parts_dir / name).open("w", encoding="utf-8")
        self._part.write("".join(encode_line(r.to_json()) + "\n" for r in records))
        self._part.flush()

    def close_part(self) -> None:
        """Close a worker's part file (if it wrote one)."""
        if self._part is not None:
            self._part.close()

    # -------------------------------------------------------------- lazy loading
    def load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        from .implementations import load_builtins, load_entry_points, load_plugin

        load_builtins()
        for mod in self.options.plugins:
            load_plugin(mod)
        load_entry_points()
        self._plugins_loaded = True

    def cases(self) -> list[Case]:
        """The selected cases (loaded once per process).

        Raises:
            pytest.UsageError: if no case matches ``--harness-case``.
        """
        if self._cases is None:
            from .api import cases_dir
            from .cases import load_cases

            paths = self.options.cases or [str(cases_dir())]
            res = load_cases(paths, tier=self.options.tier)
            cases = res.cases
            ids = self.options.case_ids
            if ids:
                cases = [c for c in cases if any(c.id == i or fnmatch.fnmatchcase(c.id, i) for i in ids)]
            from .shard import select_shard

            cases = select_shard(cases, self.options.shard)
            self._case_errors = [str(e) for e in res.errors]
            self._cases = cases
        return self._cases

    def good_cases(self) -> list[Case]:
        """:meth:`cases`, failing the calling test when a case file (or a case in one) could not be loaded: a fixture
        that grades the selected cases never passes on the part that loaded (``harness_verify`` passed with a case
        file's misspelled key or invalid TOML ignored, helper-78)."""
        cases = self.cases()
        if self._case_errors:
            pytest.fail("bad case file(s):\n" + "\n".join(self._case_errors), pytrace=False)
        return cases

    def run_options(self) -> Any:
        """The :class:`harness.RunOptions` of the ``--harness-*`` options (TF32, matmul precision, repro)."""
        from .runner import RunOptions

        extra = [a for mod in self.options.plugins for a in ("--plugin", mod)]
        if self.options.timeout is not None:
            extra += ["--timeout", f"{self.options.timeout:g}"]
        if self.options.tf32:
            extra += ["--tf32", "on"]
        if self.options.matmul_precision != "highest":
            extra += ["--matmul-precision", self.options.matmul_precision]
        if self.options.flush_to_zero:
            extra += ["--flush-to-zero"]
        return RunOptions(tf32=self.options.tf32, matmul_precision=self.options.matmul_precision, extra_repro=extra,
                          flush_to_zero=self.options.flush_to_zero)

    def run_isolated(self, cases: Iterable[Case], impl: Implementation, devices: Sequence[str], dtypes: Any, opts: Any) -> list[Record]:
        """Grade ``impl`` in one supervised worker process (``--harness-isolation process``): a crash,
        ``os._exit`` or a hang becomes an ``error`` record, and so fails this item only."""
        from . import runner

        return runner.verify(cases, [impl], devices=devices, dtypes=dtypes, options=opts, isolation="process", jobs=1,
                             timeout=self.options.timeout, plugins=self.worker_plugins(impl))

    def worker_plugins(self, impl: Implementation) -> list[str]:
        """What a worker process imports to find ``impl``: the ``--harness-plugin`` modules, then the file that
        defines ``impl`` (``harness_verify`` gave the worker the file alone, and a step that a ``--harness-plugin``
        module registers from another file was not registered there: helper-95)."""
        from .runner import plugin_sources

        return [*self.options.plugins, *(p for p in plugin_sources([impl]) if p not in self.options.plugins)]

    def case_cache(self, case: Case) -> Any:
        """The exact results of ``case`` shared by its implementations, dtypes and devices
        (the last few cases are kept: items of one case run one after the other)."""
        from .runner import CaseCache

        key = (case.id, case.source)  # ids repeat across case files
        cache = self._caches.pop(key, None)
        if cache is None or not cache.serves(case):  # cases built in code share the source "<memory>"
            cache = CaseCache(case)
        self._caches[key] = cache
        while len(self._caches) > 8:
            self._caches.pop(next(iter(self._caches)))
        return cache


_STATE = pytest.StashKey[HarnessState]()


def _state(config: pytest.Config) -> HarnessState:
    return config.stash[_STATE]


# ------------------------------------------------------------------ parametrization


def _marker_kwargs(metafunc: pytest.Metafunc) -> dict[str, Any]:
    marker = metafunc.definition.get_closest_marker("harness")
    return dict(marker.kwargs) if marker else {}


def _as_list(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    return list(value)


#: The harness's own skip reasons, written by the skips and read by :func:`pytest_runtest_logreport` (one definition).
_SKIP_UNSUPPORTED = "unsupported: "
_SKIP_OVERFLOW = "overflow: "
_SKIP_NO_CASE = "no harness case matches the selection"
_SKIP_ABSENT = "is not available on this machine"
_SKIP_NONE_PRESENT = "none of the requested devices"


def _device_param(device: str, available: Sequence[str]) -> tuple[list[Any], str | None]:
    """Marks and skip reason for one device."""
    from .devices import device_type

    kind = device_type(device)
    marks: list[Any] = []
    if kind == "cuda":
        marks.append(pytest.mark.cuda)
    elif kind == "mps":
        marks.append(pytest.mark.mps)
    present = device in available or (device == "cuda" and any(d.startswith("cuda") for d in available))
    reason = None if present else f"device {device} {_SKIP_ABSENT} (available: {', '.join(available)})"
    return marks, reason


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    wanted = [f for f in PARAM_FIXTURES if f in metafunc.fixturenames]
    if not wanted:
        return  # inert for every test that does not ask for the harness
    import itertools

    from .devices import available_devices, parse_devices, parse_dtypes
    from .errors import HarnessError
    from .floats import DTYPES
    from .implementations import resolve
    from .runner import case_mismatch

    state = _state(metafunc.config)
    opts = state.options
    defaults = _marker_kwargs(metafunc)
    try:
        state.load_plugins()
        cases = state.cases() if "harness_case" in wanted else [None]
        if "harness_case" in wanted and defaults.get("tags"):
            want_tags = set(_as_list(defaults["tags"]) or [])
            cases = [c for c in cases if c is not None and want_tags & set(c.tags)]
        dtypes = parse_dtypes(opts.dtypes if opts.dtypes is not None else _as_list(defaults.get("dtypes")))
        impl_names = opts.implementations if opts.implementations is not None else _as_list(defaults.get("implementations"))
        impls = resolve(impl_names) if "harness_implementation" in wanted else [None]
        if opts.implementations is None and impl_names and "harness_implementation" in wanted:
            state.marker_named.extend(n for n in impl_names if n not in state.marker_named)
        available = available_devices() if "harness_device" in wanted else ["cpu"]
        device_spec = opts.devices if opts.devices is not None else defaults.get("devices")
        devices = parse_devices(device_spec) if "harness_device" in wanted else [None]
    except HarnessError as exc:
        raise pytest.UsageError(f"autograd-harness: {exc}") from None
    params = []
    state.parametrized = state.parametrized or "harness_implementation" in wanted
    if "harness_case" in wanted:
        # one failing item per bad case or file: the good cases still run (as on the command line)
        for n, message in enumerate(state._case_errors, start=1):
            values = dict.fromkeys(wanted)
            values["harness_case"] = _BadCase(message)
            params.append(pytest.param(*(values[f] for f in wanted), id=f"bad-case-file-{n}",
                                       marks=pytest.mark.harness_bad_case(message)))
    for case in cases:
        if "harness_dtype" in wanted:
            case_dtypes: Sequence[str | None] = dtypes or (case.dtypes if case is not None else DTYPES)
        else:
            case_dtypes = [None]
        for dtype, impl, device in itertools.product(case_dtypes, impls, devices):
            if case is not None and impl is not None and case_mismatch(impl, case) is not None:
                continue  # the one rule of which implementation runs which case (as verify): its update rule and model
            if impl is not None and impl.name not in state.paired:
                state.paired.append(impl.name)
            values = {"harness_case": case, "harness_dtype": dtype, "harness_implementation": impl, "harness_device": device}
            marks: list[Any] = []
            if device is not None:
                marks, reason = _device_param(device, available)
                if reason:
                    marks.append(pytest.mark.skip(reason=reason))
            pid = "-".join(_id_part(values[f]) for f in wanted)
            params.append(pytest.param(*(values[f] for f in wanted), marks=marks, id=pid))
    if not params:
        reason = f"{_SKIP_NO_CASE} (--harness-case, --harness-cases, marker tags)"
        metafunc.parametrize(wanted, [pytest.param(*([None] * len(wanted)), marks=pytest.mark.skip(reason=reason), id="no-cases")])
        return
    metafunc.parametrize(wanted, params)


def _id_part(value: Any) -> str:
    name = getattr(value, "id", None) or getattr(value, "name", None)
    return str(name if name is not None else value)


@dataclass(frozen=True)
class _BadCase:
    """Stands for a case that could not be loaded: its item fails with the message."""

    message: str


#: The user property that marks a report as one of the harness's own parametrized items.
_ITEM_PROPERTY = ("harness_item", True)


#: The fixtures that grade: a test that uses one is one of the harness's items too (a ``harness_verify`` test skipped
#: because no device asked for with ``--harness-devices`` is present went uncounted, and the session passed: helper-95).
GRADING_FIXTURES = ("harness_check", "harness_verify")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the harness's own items (parametrized by its fixtures, or grading with ``harness_check`` or
    ``harness_verify``): their reports tell whether anything was graded."""
    for item in items:
        if any(f in getattr(item, "fixturenames", ()) for f in (*PARAM_FIXTURES, *GRADING_FIXTURES)):
            item.user_properties.append(_ITEM_PROPERTY)


#: Why the harness skips an item (the start of the skip's reason, as the skips below write it), other than for an
#: absent device: an item skipped for another reason was skipped by its test (a skip marker, ``pytest.skip``), which is
#: not for the harness to judge.
_HARNESS_SKIPS = (_SKIP_UNSUPPORTED, _SKIP_OVERFLOW, _SKIP_NO_CASE)
#: Reasons of the items skipped for a device absent from this machine.
_NO_DEVICE_SKIPS = (_SKIP_ABSENT, _SKIP_NONE_PRESENT)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count the harness's items, and those that ran (passed or failed), were skipped for an absent device, or were
    skipped by their test (a skip marker: nothing graded there is the test's choice, helper-78)."""
    if _ITEM_PROPERTY not in [tuple(p) for p in report.user_properties]:
        return
    tally = _ITEMS.setdefault(id(_ITEMS), {"items": 0, "ran": 0, "no_device": 0, "skipped_by_test": 0})
    if report.when == "setup":
        tally["items"] += 1
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        if any(text in reason for text in _NO_DEVICE_SKIPS):
            tally["no_device"] += 1
        elif not reason.startswith(_HARNESS_SKIPS):
            tally["skipped_by_test"] += 1
    elif report.when == "call" or report.failed:
        tally["ran"] += 1


#: The controller's tally of the harness's items (see :func:`pytest_runtest_logreport`).
_ITEMS: dict[int, dict[str, int]] = {}


def _named_and_unrun(state: HarnessState) -> tuple[list[str], list[str]]:
    """The implementations the session names (``--harness-implementations``, or else its tests' harness markers; none
    for a shard), each of which must grade something, and those of them that got no item (:func:`harness.verdicts.ungraded_named`'s
    ``named`` and ``unrun``)."""
    if state.options.shard is not None:
        return [], []
    named = list(state.options.implementations or state.marker_named or [])
    return named, [n for n in named if n not in state.paired] if state.parametrized else []


def _named_in_env(state: HarnessState) -> dict[str, Any]:
    """The results file's environment line's ``named`` and ``unrun`` (:func:`_named_and_unrun`), for ``report
    --exit-status`` (:meth:`harness.records.ResultsFile.ungraded_named`)."""
    named, unrun = _named_and_unrun(state)
    return {"named": named, "unrun": unrun}


def _nothing_graded_note(state: HarnessState) -> str | None:
    """``"harness: nothing was graded ..."`` when the harness's own items were collected and none graded anything."""
    from .verdicts import nothing_graded

    tally = _ITEMS.get(id(_ITEMS))
    # items that their tests skipped (a skip marker) are not for the harness to judge, and count for nothing either way:
    # an unrelated skipif beside items skipped for an absent device made a session without a GPU pass (helper-80)
    if not tally or not tally["items"] - tally["skipped_by_test"]:
        return None
    if state.records and not nothing_graded(state.records):
        return None
    if not state.records and tally["ran"]:
        return None  # items that grade through their own code: not for the harness to judge
    if not state.records and tally["no_device"]:
        if state.options.devices is None:
            return None  # the devices of a test's harness marker, absent here: skipped with the reason
        from .devices import available_devices

        # asked for on the command line, as `check --devices cuda` (which exits 2): a GPU job whose runner has lost its
        # GPU skipped every item and passed (helper-78)
        return (f"harness: nothing was graded: no device asked for with --harness-devices {state.options.devices} is "
                f"available on this machine (available: {', '.join(available_devices())}); nothing graded is no pass")
    return ("harness: nothing was graded (every harness item was skipped as unsupported, or the case selection or "
            "shard selected no case, or every record is unsupported, invalid-input or a whole-run overflow): "
            "nothing graded is no pass")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Items standing for a case that could not be loaded fail with its message."""
    marker = item.get_closest_marker("harness_bad_case")
    if marker is not None:
        pytest.fail(f"bad case file: {marker.args[0]}", pytrace=False)


@pytest.fixture
def harness_case(request: pytest.FixtureRequest) -> Case:
    """The case of this item (see the module docstring)."""
    return request.param


@pytest.fixture
def harness_dtype(request: pytest.FixtureRequest) -> str:
    """The dtype name of this item."""
    return request.param


@pytest.fixture
def harness_implementation(request: pytest.FixtureRequest) -> Implementation:
    """The :class:`harness.Implementation` of this item."""
    return request.param


@pytest.fixture
def harness_device(request: pytest.FixtureRequest) -> str:
    """The device of this item (``cpu``, ``cuda:0``, ``mps``)."""
    return request.param


@pytest.fixture(scope="session")
def harness_options(pytestconfig: pytest.Config) -> HarnessOptions:
    """The parsed ``--harness-*`` options."""
    return _state(pytestconfig).options


@pytest.fixture(scope="session")
def harness_cases(pytestconfig: pytest.Config) -> list[Case]:
    """The cases selected by ``--harness-cases``, ``--harness-case`` and ``--harness-tier``."""
    return _state(pytestconfig).good_cases()


#: The records each item graded with ``harness_check`` (for :func:`pytest_runtest_makereport`).
_ITEM_RECORDS = pytest.StashKey[list]()


def _skip_now(request: pytest.FixtureRequest, case: Any, impl: Implementation, device: str, dtype: str) -> bool:
    """Whether a ``harness_check`` call that graded nothing skips its item at once: the item's first call, the item
    parametrized by the implementation and the dtype at least (what makes a pair unsupported) and by any of the other
    harness fixtures (:data:`PARAM_FIXTURES`), each with this call's value (the case by its id: a test may pass a
    modified copy; a device given in code need not be a parameter, helper-96). A test that loops over combinations its
    parameters do not give gets the records back instead: a skip ended the loop, and the combinations after it went
    ungraded (helper-95; a loop over implementations in an item parametrized by case and dtype, helper-97)."""
    if request.node.stash.get(_ITEM_RECORDS, None):
        return False
    callspec = getattr(request.node, "callspec", None)
    params = {f: v for f, v in (getattr(callspec, "params", None) or {}).items() if f in PARAM_FIXTURES}
    if not {"harness_implementation", "harness_dtype"} <= set(params):
        return False
    call = {"harness_case": case, "harness_implementation": impl, "harness_device": device, "harness_dtype": dtype}
    return all(_id_part(call[f]) == _id_part(v) for f, v in params.items())  # (as the item's id names them)


def _nothing_graded_reason(records: Sequence[Record]) -> str | None:
    """The skip reason of records that grade nothing (all ``unsupported``, or a whole-run ``overflow``: inputs that
    are inf once rounded to the dtype), or None where they grade something."""
    if records and all(r.verdict == "unsupported" for r in records):
        return f"{_SKIP_UNSUPPORTED}{records[0].message}"
    if records and all(r.quantity == "*" and r.verdict in ("unsupported", "overflow") for r in records):
        overflow = next(r for r in records if r.verdict == "overflow")
        return f"{_SKIP_OVERFLOW}{overflow.message}; not graded"
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A test that passed having graded nothing with ``harness_check`` (every call unsupported, in a loop), or failed
    only because :func:`harness.api.raise_on_failure` said so, is reported skipped with the reason, as an item that
    skipped at once (:func:`_skip_now`): it counts toward "nothing was graded", never as a pass."""
    outcome = yield
    report = outcome.get_result()
    records = item.stash.get(_ITEM_RECORDS, None)
    if report.when != "call" or not records:  # (inert for every test that graded nothing with harness_check)
        return
    from .api import NOTHING_GRADED

    # (or failed only because raise_on_failure found that its records grade nothing: a loop's unsupported pairs)
    said = call.excinfo is not None and call.excinfo.errisinstance(AssertionError) and \
        str(call.excinfo.value).startswith(NOTHING_GRADED)
    if report.passed or (report.failed and said):
        reason = _nothing_graded_reason(records)
        if reason is not None:
            report.outcome = "skipped"
            report.longrepr = (str(item.path), (item.location[1] or 0) + 1, f"Skipped: {reason}")


@pytest.fixture
def harness_check(pytestconfig: pytest.Config, request: pytest.FixtureRequest) -> Callable[..., list[Record]]:
    """``check(case, implementation, device, dtype) -> list[Record]``: grade one combination.

    The records are kept for ``--harness-results`` and the terminal summary. An
    ``unsupported`` combination, or one whose inputs overflow the dtype (a whole-run ``overflow``
    record: nothing graded), is recorded; in an item parametrized with this combination (its first
    call, :func:`_skip_now`), the test is then skipped with the reason. Elsewhere (a test that
    loops over combinations) the records are returned, and a test that passes having graded
    nothing is reported skipped; :func:`harness.api.raise_on_failure` of records that grade
    nothing raises.
    """
    state = _state(pytestconfig)

    def check(case: Case, implementation: str | Implementation, device: str, dtype: str) -> list[Record]:
        from .api import repro_options
        from .implementations import resolve
        from .runner import check_case

        impl = resolve([implementation])[0] if isinstance(implementation, str) else implementation
        opts = repro_options(state.run_options(), impl)  # a repro line names the plug-in's file (helper-82)
        if state.options.isolation == "process":
            records = state.run_isolated([case], impl, [device], [dtype], opts)
        else:
            records = check_case(case, impl, device, dtype, opts, state.case_cache(case))
        state.keep(records)
        first = _skip_now(request, case, impl, device, dtype)
        request.node.stash.setdefault(_ITEM_RECORDS, []).extend(records)
        reason = _nothing_graded_reason(records) if first else None
        if reason is not None:  # (the session fails if no item graded anything: see pytest_sessionfinish)
            pytest.skip(reason)
        return records

    return check


@pytest.fixture
def harness_verify(pytestconfig: pytest.Config) -> Callable[..., list[Record]]:
    """``verify(step, cases=None, *, devices=None, dtypes=None, strict=False, framework="torch") -> list[Record]``.

    Runs the harness on ``step`` (a function registered with
    ``@harness.implementation``, its name, an :class:`harness.Implementation`,
    or a plain function ``step(X, y, W, b, *, lr, reduction, steps)`` taking
    torch tensors, or NumPy arrays with ``framework="numpy"``). ``cases`` defaults to the selected cases, ``devices`` and
    ``dtypes`` to the ``--harness-*`` options (devices: the available ones; a
    requested device that is absent is left out, and the test is skipped if
    none is left). Records are kept for the results file and the summary.

    Raises:
        AssertionError: as :func:`harness.assert_agrees`, of which this fixture is a thin
            layer: when the run fails by :mod:`harness.verdicts`' policy (describing the
            first failure) or when nothing was graded.
    """
    state = _state(pytestconfig)

    def verify(
        step: Any,
        cases: Iterable[Case] | None = None,
        *,
        devices: str | Iterable[str] | None = None,
        dtypes: str | Iterable[str] | None = None,
        strict: bool = False,
        framework: str = "torch",
    ) -> list[Record]:
        from .api import assert_agrees
        from .devices import available_devices, parse_devices
        from .implementations import REGISTRY, Implementation, implementation_of

        state.load_plugins()
        if callable(step) and not isinstance(step, Implementation) and all(i.fn is not step for i in REGISTRY.values()):
            if state.options.isolation == "process":
                pytest.fail(f"harness_verify: {getattr(step, '__name__', 'the step')} is a plain function, and "
                            "--harness-isolation process grades in a worker process, which imports implementations from "
                            "plug-in modules only: register it with @harness.implementation in a module given with "
                            "--harness-plugin (then pass its name), or run inline (the default)", pytrace=False)
            step = Implementation(name=getattr(step, "__name__", "step"), framework=framework, fn=step, kind="plugin")
        avail = available_devices()
        requested = parse_devices(devices if devices is not None else state.options.devices)
        present = [d for d in requested if d in avail or (d == "cuda" and any(a.startswith("cuda") for a in avail))]
        asked = set(parse_devices(state.options.devices)) if state.options.devices is not None else set()
        if not present and devices is not None and not asked & set(requested):
            # the test's own choice, as a marker's devices, and not asked for with --harness-devices: not for the harness
            # to judge (a test asking for cuda in code, run with --harness-devices cpu, was blamed on the option, helper-96)
            pytest.skip(f"the devices this test asks for ({', '.join(requested)}) are not available here "
                        f"(available: {', '.join(avail)})")
        if not present:  # asked for with --harness-devices (too): counted (see _nothing_graded_note; helper-97)
            pytest.skip(f"{_SKIP_NONE_PRESENT} {', '.join(requested)} is available (available: {', '.join(avail)})")
        # a thin layer over harness.assert_agrees: the same run, the same verdict policy, the same message
        process = state.options.isolation == "process"
        return assert_agrees(step, state.good_cases() if cases is None else cases, devices=present,
                             dtypes=dtypes if dtypes is not None else state.options.dtypes, strict=strict,
                             options=state.run_options(), on_records=state.keep,
                             isolation=state.options.isolation, timeout=state.options.timeout,
                             plugins=state.worker_plugins(implementation_of(step)) if process else None)

    return verify


# ------------------------------------------------------------------ xdist and results


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: tell each worker where to write its part file."""
    state = _state(node.config)
    if state.parts_dir is not None:
        node.workerinput["harness_parts_dir"] = str(state.parts_dir)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: note a worker that went down without finishing its session (``error`` set: killed, crashed);
    its part file is merged all the same (:func:`pytest_sessionfinish` reads every part in the folder)."""
    output = getattr(node, "workeroutput", {})
    state = _state(node.config)
    if error is not None:
        state.crashed_workers.append(str(getattr(getattr(node, "gateway", None), "id", None) or "a worker"))
    state.marker_named.extend(n for n in output.get("harness_marker_named", ()) if n not in state.marker_named)
    state.paired.extend(n for n in output.get("harness_paired", ()) if n not in state.paired)
    state.parametrized = state.parametrized or bool(output.get("harness_parametrized"))


def record_sort_key(rec: Record) -> tuple[Any, ...]:
    """Order of records in a results file: case, implementation, device, dtype, step, quantity
    (in :data:`harness.verdicts.QUANTITY_ORDER`)."""
    from .verdicts import quantity_rank

    return (rec.case, rec.implementation, rec.device, rec.dtype, rec.tf32 is True, rec.step, quantity_rank(rec.quantity))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = _state(session.config)
    workerinput = getattr(session.config, "workerinput", None)
    runner = sys.modules.get("harness.runner")  # (imported by the first check: else nothing ran here)
    if runner is not None:
        state.keep(runner.left_thread_records())  # a thread a step left running that called os._exit after the last check
    if workerinput is not None:
        session.config.workeroutput["harness_marker_named"] = list(state.marker_named)  # type: ignore[attr-defined]
        session.config.workeroutput["harness_paired"] = list(state.paired)  # type: ignore[attr-defined]
        session.config.workeroutput["harness_parametrized"] = state.parametrized  # type: ignore[attr-defined]
        state.close_part()  # (written item by item, HarnessState.keep; the controller reads every part in the folder)
        return
    lost_records = False
    if state.parts_dir is not None and state.parts_dir.is_dir():
        # every worker's part, a crashed worker's too (the records it finished), in a stable order
        state.part_files = sorted(state.parts_dir.glob("*.jsonl"))
    if state.crashed_workers:
        state.notes.append(f"harness: pytest-xdist worker(s) {', '.join(state.crashed_workers)} went down before "
                           "finishing: the records they had finished are kept, and the results file says that the "
                           "run did not complete")
    if state.part_files:
        from .records import read_jsonl

        for part in state.part_files:
            got = read_jsonl(part)
            state.records.extend(got.records)
            if got.malformed_count:  # a worker's records that did not read back: never dropped without a word
                state.notes.append(f"harness: {got.malformed_count} record line(s) of a pytest-xdist worker could not be "
                                   f"read back and are not in the results: {'; '.join(map(str, got.malformed[:3]))}")
                lost_records = True
            part.unlink(missing_ok=True)
        if state.parts_dir is not None and state.parts_dir.is_dir():
            try:
                state.parts_dir.rmdir()
            except OSError:
                pass
    if lost_records and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    from .isolation import is_left_thread_record

    exits = [r for r in state.records if is_left_thread_record(r)]
    if exits:
        state.notes.append(f"harness: {len(exits)} thread(s) that a step started called os._exit in the "
                           f"session (the harness ended the thread instead of pytest's process), first started by "
                           f"{exits[0].implementation!r} on case {exits[0].case!r} ({exits[0].device}, {exits[0].dtype}): "
                           "see its error record")
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    note = _nothing_graded_note(state)
    _ITEMS.clear()
    if note is not None and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        state.notes.append(note)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif note is None and (state.options.implementations or state.marker_named) and state.options.shard is None:
        from .verdicts import ungraded_named

        # each implementation named with --harness-implementations, or else in a test's harness marker, must grade
        # something (as `check`'s exit code)
        named, unrun = _named_and_unrun(state)
        silent = ungraded_named(state.records, named, unrun=unrun)
        if silent:
            state.notes.extend(f"harness: {line}" for line in silent)
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
    state.final_status = session.exitstatus
    if not state.records and state.options.results is None:
        return
    state.records.sort(key=record_sort_key)
    if state.options.results is not None:  # (also with no record: an earlier session's file must not pass for this one's)
        from .records import environment_record, run_end, write_jsonl

        env = environment_record({
            "argv": sys.argv[1:], "runner": "pytest", "xdist_workers": len(state.part_files),
            "tf32_option": "on" if state.options.tf32 else "off", "matmul_precision_option": state.options.matmul_precision,
            # as check's: `report` names the shards of a split run that it was not given
            "shard": None if state.options.shard is None else "{}/{}".format(*state.options.shard),
            "flush_to_zero": state.options.flush_to_zero,  # (report: a run with it grades under other bounds)
            # the implementations named, each of which had to grade something (above): `report --exit-status` applies
            # the same rule (helper-181)
            **_named_in_env(state),
        })
        # the run-end footer of every results file (see harness.records); a session stopped by Ctrl-C is not complete
        stopped = exitstatus == pytest.ExitCode.INTERRUPTED
        # nor is a session stopped early by -x or --maxfail (the items after the failure never ran), or one whose xdist
        # worker went down (its items after the crash never ran there)
        cut_short = bool(session.shouldstop or session.shouldfail)
        if cut_short and not stopped:
            state.notes.append("harness: the session stopped early (-x or --maxfail): the results file says that the "
                               "run did not complete")
        footer = run_end(env["run"], env, completed=not (stopped or cut_short or state.crashed_workers),
                         interrupted=stopped, records=state.records)
        # (an earlier session's files were kept as the session started: _keep_earlier_outputs)
        write_jsonl(state.options.results, state.records, env, footer=footer)
        if not state.records:
            state.notes.append(f"harness: this session graded nothing: {state.options.results} holds no record"
                               + (", and no report was written" if state.options.report is not None else ""))
        elif state.options.report is not None:
            try:
                from .report import render_report  # type: ignore[import-not-found,unused-ignore]
            except ImportError:
                state.notes.append(f"--harness-report: the HTML report needs harness.report, which this installation lacks; results are in {state.options.results}")
            else:
                render_report([state.options.results], state.options.report)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = _state(config)
    if getattr(config, "workerinput", None) is not None:
        return
    from .errors import terminal_text  # (every line: a step's exception text holds no escape sequence here, helper-190)

    if not state.records:
        for line in state.notes:
            terminalreporter.write_line(terminal_text(line))
        return
    from .summary import by_device_dtype, explain_failures, verdict_line

    tr = terminalreporter
    tr.write_sep("-", "autograd-harness")
    for line in terminal_text(by_device_dtype(state.records)).splitlines():
        tr.write_line(line)
    for line in terminal_text(explain_failures(state.records, max_groups=6)).splitlines():  # the failures grouped by cause, as `check` shows them
        tr.write_line(line)
    note = f"; results {state.options.results}" if state.options.results is not None else ""
    if state.options.report is not None and not state.notes:
        note += f", report {state.options.report}"
    tr.write_line(terminal_text(verdict_line(state.records) + note))
    from .verdicts import failures, run_outcome

    outcome = run_outcome(state.records)
    for line in outcome.reasons:  # a probed known framework bug: reported, not counted
        if line.startswith("not counted"):
            tr.write_line(terminal_text(line))
    final = exitstatus if state.final_status is None else state.final_status
    # (only for failing records: records that graded nothing are the "nothing was graded" note's, which fails the
    # session; the line was printed above that note, helper-95)
    if failures(state.records) and final == pytest.ExitCode.OK:
        # the tests that graded them passed: a test that calls harness_check judges its records itself (the summary said
        # "FAILS the run" above a green session, helper-78)
        tr.write_line("harness: the failing records above did not fail this session: the tests that graded them passed; "
                      "a test that calls harness_check decides with its own assertions (harness.api.raise_on_failure(records, "
                      "name) raises on them), and one that catches the failure harness_verify raises passes")
    for line in [*state.kept, *state.notes]:
        tr.write_line(terminal_text(line))
