"""The documentation runs as written: every shell command and Python block of README.md, cases/README.md
and reports/README.md runs here, from the project's root, with this interpreter for `.venv/bin/python` (CI's
.ci/run makes .venv exactly as the README's set-up says and runs this suite in it). Each is a test item of its own,
so that pytest-xdist spreads them over its workers (one test ran them all, in document order: 328 s of one worker
in a loaded 2-core run, the suite's longest test; the longest item, the quick tier's `check`, is about a quarter of
it); a command that reads what earlier ones wrote runs in one item with them, in
document order (NEEDS), and the items that use `check`'s default outputs take turns (LOCK).

A command that cannot run here is listed in NOT_RUN with its reason; a block in a language that is not a
command (output, configuration) is listed in NOT_COMMANDS. A new command runs by default; a new kind of
block, or a NOT_RUN entry the documents no longer have, fails the test. The figures the README states
(counts) are checked against scripts/readme_figures.py, the one script that prints them.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.docblocks import Block, blocks

DOCS = ("README.md", "cases/README.md", "reports/README.md")
SHELL = {"sh", "bash", "shell", "console"}
PYTHON = {"python", "py"}
#: Fenced blocks that are not commands: language -> what they are.
NOT_COMMANDS = {
    "text": "output shown as a sample",
    "json": "a line of a results file, shown as a sample",
    "yaml": "a GitHub Actions workflow: it runs on GitHub's machines (its commands are the README's `check` and `report`)",
    "toml": "a snippet of a user's pyproject.toml",
}
SETUP = ".ci/run makes the virtual environment and installs exactly so before it runs this suite"
#: Commands not run here -> why (a command is the block's line, trailing comment included).
NOT_RUN = {
    "python3 -m venv .venv && .venv/bin/pip install -c constraints/cpu.txt -e . && .venv/bin/python -m harness check":
        SETUP + "; its `check` runs here as the line `.venv/bin/python -m harness check` of 'What check prints'",
    'python3 -m venv .venv && .venv/bin/pip install -c constraints/cpu.txt -e ".[test]" && .venv/bin/python -m pytest -n auto --dist worksteal':
        SETUP + "; its `pytest` is the suite this test is part of",
    ".venv/bin/python -m pytest -n auto --dist worksteal": "the whole suite, which this test is part of (CI runs it)",
    ".venv/bin/python -m pytest tests/test_sweep.py -n 2 --harness-results reports/results.jsonl":
        "the full sweep: the suite runs tests/test_sweep.py itself",
    ".venv/bin/python -m pytest tests/test_sweep.py --harness-tier large --harness-dtypes float32   # N up to 100,000":
        "the large tier: N up to 100,000, tens of minutes",
    ".venv/bin/python -m harness bench              # full sweep: N = 1..10^6, (D, K) = (1,1), (16,4), (128,16), every device and dtype":
        "the full benchmark: N up to 10^6 on every device and dtype, tens of minutes",
    ".venv/bin/python -m harness bench --quick      # CI/smoke sweep":
        "times the step at several sizes with warm-up rounds (minutes); tests/test_bench.py runs the benchmark module once, timing off",
    ".venv/bin/python -m harness bench --from-json reports/bench.json   # tables of an earlier run (or another machine's)":
        "needs reports/bench.json of the `bench` line above; tests/test_bench.py builds the tables from a JSON file",
    ".venv/bin/python -m pytest examples/test_my_step.py":
        "runs as written in tests/test_plugins.py::test_readme_commands_run_as_written (in a copy of examples/ and cases/)",
    ".venv/bin/python -m harness check --plugin examples/my_step.py --implementations my-step":
        "runs as written in tests/test_plugins.py::test_readme_commands_run_as_written (in a copy of examples/ and cases/)",
    ".venv/bin/python -m harness bench --sweep quick --dtypes float32 --no-verification --target-time 0.2 --implementations torch-optim-sgd,torch-optim-sgd-foreach,torch-optim-sgd-fused,torch-optim-adam,torch-optim-adam-foreach,torch-optim-adam-fused,torch-optim-adamw,torch-optim-adamw-foreach,torch-optim-adamw-fused,numpy-optim-sgd,numpy-optim-adam,numpy-optim-adamw":
        "times 15 steps at 8 sizes (about a minute, timings only); tests/test_bench.py runs the benchmark module once, timing off",
    ".venv/bin/python scripts/model_figures.py --plugin examples/fused_linear_tanh.py   # the tables above and below (about a minute)":
        "grades the full tier of cases/models.toml with 3 built-ins, 5 mutants and 3 plug-ins (about a minute); "
        "tests/test_sweep.py grades the same cases for false alarms and tests/test_models_impl.py catches each mutant",
    "scripts/cuda_check.sh OUT_DIR                  # on a CUDA machine: check (CPU+CUDA, TF32 off and on), CUDA tests, benchmark, one report":
        "needs a CUDA machine",
}
#: Python blocks not run here (by their first line) -> why.
NOT_RUN_PYTHON = {
    "from tinygrad import Tensor":
        "tinygrad finds no usable device on a machine without clang (CI's); the adapter it shows is"
        " harness.register_framework, run with tinygrad-like stand-ins in tests/test_frameworks.py",
}
#: Commands whose documented exit code is not 0 -> that code.
EXIT = {
    ".venv/bin/python -m harness check --plugin examples/fused_linear_tanh.py --cases cases/models.toml --implementations "
    "fused-linear-tanh,fused-linear-tanh-wrong --case gen-tanh-1-saturate-n4-d2-k1-sum-s1": 1,  # the wrong backward fails
}
VENV_PYTHON = ".venv/bin/python"


def all_blocks() -> list[Block]:
    return [b for doc in DOCS for b in blocks(ROOT, doc)]


def shell_commands() -> list[tuple[Block, str]]:
    return [(b, c) for b in all_blocks() if b.lang in SHELL for c in b.commands()]


def test_every_block_is_a_command_or_listed_with_what_it_is():
    found = all_blocks()
    assert len(found) >= 15  # the README's blocks were found (indented ones too)
    unclassified = [f"{b.path}:{b.line} ```{b.lang}" for b in found if b.lang not in SHELL | PYTHON | set(NOT_COMMANDS)]
    assert not unclassified, f"blocks that are neither commands nor listed in NOT_COMMANDS: {unclassified}"
    stale = sorted(set(NOT_RUN) - {c for _, c in shell_commands()})
    assert not stale, f"NOT_RUN lists commands the documents no longer have: {stale}"
    firsts = {b.text.splitlines()[0] for b in found if b.lang in PYTHON and b.text.strip()}
    stale = sorted(set(NOT_RUN_PYTHON) - firsts)
    assert not stale, f"NOT_RUN_PYTHON lists blocks the documents no longer have: {stale}"


def test_commands_are_written_as_they_run_from_a_fresh_clone():
    bare = re.compile(r"(?<![\w/.])python3? -m (?!venv\b)")
    wrong = [f"{b.path}:{b.line}: {c}" for b, c in shell_commands() if bare.search(c)]
    assert not wrong, f"commands that use a bare `python -m` instead of {VENV_PYTHON}: {wrong}"
    # pytest commands and the `python` blocks too: the examples run from the project's root as written
    assert "python -m pytest examples/test_my_step.py" not in (ROOT / "README.md").read_text().replace(f"{VENV_PYTHON} -m pytest", "")


def test_ci_runs_the_readme_test_command_as_written():
    """.ci/run's set-up line is the README's second set-up command, character for character."""
    readme = [c for b in blocks(ROOT, "README.md") if b.lang in SHELL for c in b.commands() if c.startswith("python3 -m venv")]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("python3 -m venv")]
    assert ci == [readme[1]]


def test_the_readme_shows_examples_my_step_py_as_it_is():
    readme_blocks = [b.text for b in blocks(ROOT, "README.md") if b.lang in PYTHON]
    assert (ROOT / "examples" / "my_step.py").read_text() in readme_blocks
    assert (ROOT / "examples" / "test_my_step.py").read_text() in readme_blocks


def _run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(command, comments=True)
    if argv[0] == VENV_PYTHON:
        argv[0] = sys.executable
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


#: Commands that read what earlier commands of the documents wrote -> those commands: they run in the same test
#: item, in document order, right before it (as they run in the document), and are not items of their own.
NEEDS = {
    ".venv/bin/python -m harness report reports/results.jsonl -o reports/agreement.html":
        (".venv/bin/python -m harness check --cases cases/seed.toml --dtypes float32",),
    ".venv/bin/python -m harness report reports/nist-1.jsonl reports/nist-2.jsonl -o reports/nist.html":
        (".venv/bin/python -m harness check --cases cases/nist.toml --shard 1/2 --results reports/nist-1.jsonl --report none",
         ".venv/bin/python -m harness check --cases cases/nist.toml --shard 2/2 --results reports/nist-2.jsonl --report none"),
}
#: The files that `check` and `report` write where no path is given (harness/cli.py's DEFAULT_RESULTS, DEFAULT_REPORT).
DEFAULT_OUTPUTS = ("reports/results.jsonl", "reports/agreement.html")
#: Held by each item with a command that writes or reads :data:`DEFAULT_OUTPUTS`, whichever xdist worker runs it: a
#: `check` renames reports/results.jsonl to results.prev.jsonl before it writes its own, so without it another
#: item's `check` could replace the file that a `report` reads, or hide it as the report starts.
LOCK = ROOT / "reports" / ".test_docs.lock"


def _default_outputs(command: str) -> bool:
    """Whether ``command`` writes or reads reports/results.jsonl or reports/agreement.html: a `check` without
    ``--results`` or ``--report``, a `report` without ``-o``, or either path named."""
    argv = shlex.split(command, comments=True)
    if any(a in DEFAULT_OUTPUTS for a in argv):
        return True
    if argv[1:3] == ["-m", "harness"] and argv[3:4] == ["check"]:
        return "--results" not in argv or "--report" not in argv
    if argv[1:3] == ["-m", "harness"] and argv[3:4] == ["report"]:
        return "-o" not in argv and "--output" not in argv
    return False


def documented_steps() -> list[pytest.ParameterSet]:
    """The blocks and commands that run, in document order, as test items: one per Python block and one per shell
    command, except that a command of :data:`NEEDS` takes the commands it needs into its item (before it). Each
    item is a list of (block, command), command None for a Python block; its id names the file and the command
    (or the Python block's first definition), the same from round to round as the documents' lines move."""
    steps: list[tuple[Block, str | None]] = []
    for block in all_blocks():
        if block.lang in PYTHON and block.text.strip() and block.text.splitlines()[0] not in NOT_RUN_PYTHON:
            steps.append((block, None))
        elif block.lang in SHELL:
            steps += [(block, c) for c in block.commands() if c not in NOT_RUN]
    needed = {c for cs in NEEDS.values() for c in cs}
    items = []
    for block, command in steps:
        if command in needed:
            continue
        group = [s for s in steps if s[1] in NEEDS.get(command or "", ())] + [(block, command)]
        if command is None:  # named by its first definition: the Python blocks of the README all define something
            first = next((line for line in block.text.splitlines() if line.startswith(("def ", "class ", "@"))), "")
            name = f"{block.path} python: {first.split('  #')[0].strip().rstrip(':')[:70]}"
        else:
            name = f"{block.path} " + " ".join(shlex.split(command, comments=True)).replace(VENV_PYTHON + " ", "")
        items.append(pytest.param(group, id=name))
    return items


def test_the_runnable_steps_are_all_there_and_needs_names_real_commands():
    """Every command and Python block that runs is in exactly one item; :data:`NEEDS` names commands the documents
    have, each before the command that needs it."""
    items = documented_steps()
    runs = [(b.path, b.line, c) for p in items for b, c in p.values[0]]
    assert len(runs) == len(set(runs)) >= 12  # 25 today, in 22 items: 19 commands and 6 python blocks (each once)
    order = [c for _, c in shell_commands()]
    for command, needs in NEEDS.items():
        assert command in order and all(n in order and order.index(n) < order.index(command) for n in needs), command

    def results(check: str) -> str:
        argv = shlex.split(check, comments=True)
        return argv[argv.index("--results") + 1] if "--results" in argv else DEFAULT_OUTPUTS[0]

    for command in order:  # each results file a `report` reads is written in its item, by what it NEEDS
        argv = shlex.split(command, comments=True)
        if argv[1:4] == ["-m", "harness", "report"]:
            read = {a for a in argv[4:] if a.endswith(".jsonl")}
            assert read and read <= {results(n) for n in NEEDS.get(command, ())}, command
    assert len({p.id for p in items}) == len(items)


#: The README's command that prints the figures it states: its run is shared by its item and
#: test_the_readme_states_the_counts_the_figures_script_prints (one run of the script, about 7 s of CPU, where both
#: run in the same xdist worker).
FIGURES = ".venv/bin/python scripts/readme_figures.py"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "examples")])}


@pytest.fixture(scope="module")
def figures_run() -> subprocess.CompletedProcess[str]:
    """The README's :data:`FIGURES` command, run as written (nothing writes a file the script reads)."""
    return _run(FIGURES, _env())


@pytest.mark.parametrize("steps", documented_steps())
def test_documented_command_or_python_block_runs_as_written(steps: list[tuple[Block, str | None]], request: pytest.FixtureRequest):
    """One item per command or Python block (with the commands it reads from before it, :data:`NEEDS`), so that
    pytest-xdist spreads them over its workers; items that use the default outputs hold :data:`LOCK`."""
    import fcntl

    env = _env()
    with open(LOCK, "a") as lock:
        if any(c is not None and _default_outputs(c) for _, c in steps):
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        for block, command in steps:
            if command is None:
                res = subprocess.run([sys.executable, "-c", block.text], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
                assert res.returncode == 0, f"{block.path}:{block.line}: the python block failed:\n{res.stderr[-3000:]}"
                continue
            if "|" in command or "&&" in command or "$(" in command:
                pytest.fail(f"{block.path}:{block.line}: {command!r} needs a shell: list it in NOT_RUN or run it here another way")
            res = request.getfixturevalue("figures_run") if command == FIGURES else _run(command, env)
            want = EXIT.get(command, 0)
            assert res.returncode == want, (f"{block.path}:{block.line}: {command!r} exited {res.returncode} (documented: {want})\n"
                                            f"{res.stdout[-2000:]}\n{res.stderr[-3000:]}")


def test_the_readme_states_the_counts_the_figures_script_prints(figures_run: subprocess.CompletedProcess[str]):
    assert FIGURES in [c for _, c in shell_commands()]  # the README's command, run as written
    res = figures_run
    assert res.returncode == 0, res.stderr
    figures = dict(line.split(": ", 1) for line in res.stdout.splitlines() if ": " in line and not line.startswith("time "))
    readme = (ROOT / "README.md").read_text()
    assert "@@" not in readme  # no placeholder left
    checks = [("cases quick", "{} cases, every regime"), ("cases full", "default tier ({} cases)"),
              ("cases large", "({} cases, N up to 100,000)"), ("cases of generated.toml full", "({} cases in\n`generated.toml`"),
              ("generated cases full", "NIST StRD, {} generated cases)"),
              ("cases quick", "the quick tier, {} cases")]
    cases_readme = (ROOT / "cases" / "README.md").read_text()
    assert f"{figures['cases of generated.toml full']} cases in the full tier ({figures['cases of generated.toml quick']} of them" in cases_readme
    import torch

    if not torch.cuda.is_available() and not torch.backends.mps.is_available():  # the README counts the items of a CPU machine
        checks.append(("sweep items", "{} items on this machine"))
    for key, phrase in checks:
        assert phrase.format(figures[key]) in readme, (key, figures[key])
