"""The plug-in contract: registering, loading (--plugin, entry points, pytest), assert_agrees, the README example."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import harness
from harness.cases import load_cases
from harness.implementations import REGISTRY, load_entry_points, load_plugin
from tests.conftest import CASES, ROOT

ACCUMULATING_STEP = textwrap.dedent('''
    import torch
    import harness

    @harness.implementation("{name}", framework="torch")
    def step(X, y, W, b, *, lr, reduction, steps):
        W = W.detach().clone().requires_grad_(True)
        b = b.detach().clone().requires_grad_(True)
        optimizer = torch.optim.SGD([W, b], lr=lr)
        out = []
        for _ in range(steps):
            loss = torch.nn.functional.mse_loss(X @ W + b, y, reduction=reduction)
            loss.backward()  # never zero_grad(): .grad accumulates
            gW, gb = W.grad.clone(), b.grad.clone()
            optimizer.step()
            out.append(harness.StepResult(loss.detach(), gW, gb, W.detach().clone(), b.detach().clone()))
        return out
''')


def _env() -> dict[str, str]:
    """Subprocesses import this checkout's harness, wherever they run."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _pytest_plugin_args() -> list[str]:
    installed = any(ep.name == "harness.pytest_plugin" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "harness.pytest_plugin"]


#: The options of this file's pytest subprocesses: no cache folder, and no Hypothesis or pytest-benchmark plugin (as
#: tests/conftest.py gives the pytester sessions): no such session uses either, and they cost about 0.9 and 0.13 s of
#: CPU each.
NO_CACHE_NO_HYPOTHESIS = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark"]


def seed_case():
    return next(c for c in load_cases([CASES / "seed.toml"]).cases if c.id == "seed")


def test_public_surface():
    for name in ("implementation", "StepResult", "verify", "assert_agrees", "default_cases"):
        assert hasattr(harness, name)


def test_assert_agrees_message_and_repro_reproduces(tmp_path):
    plugin = tmp_path / "accumulating_step.py"
    plugin.write_text(ACCUMULATING_STEP.format(name="test-accumulating-step"))
    load_plugin(str(plugin))
    with pytest.raises(AssertionError) as info:
        harness.assert_agrees("test-accumulating-step", [seed_case()], dtypes=["float32"])
    msg = str(info.value)
    lines = msg.splitlines()
    assert lines[0] == "28 of 40 checks of 'test-accumulating-step' failed on 1 case/dtype pair(s): seed (float32)"
    assert lines[2] == "grad_W (step 2) of 'test-accumulating-step' on case 'seed' (cpu, float32): disagree"
    # the verdict's own measure comes first (error / bound), then the counts and the figures
    assert lines[3].startswith("Verdict measure at the worst element: error / rigorous bound ")
    assert lines[4] == "Mismatched elements: 1 / 1 (100.0%)"
    # 4 of 5 quantities wrong at steps 2..8 (the loss, at the step's own W and b, is right): 28 of 40
    # exact at step 2 = 2 (W1 + b1 - 3) = 0.84...; computed = that + step 1's 1.39999962 (float32 sums)
    assert lines[5].startswith("Worst element (largest error / rigorous bound) at index (0, 0): "
                               "error 1.4 (exact 0.840000152587890625, computed 2.239999771118164)")
    assert lines[6].startswith("Rigorous bound there: ") and "expected bound" in lines[6]
    assert lines[7].startswith("Over all elements: largest error 1.4") and "bits of error" in lines[7]
    assert lines[8].startswith("Diagnosis: looks like: gradient accumulation (.grad not reset between steps); grad_W at step 2 is")
    repro = lines[-1]
    assert re.match(r"Reproduce: (\.venv/bin/)?python -m harness check ", repro)
    argv = shlex.split(repro.removeprefix("Reproduce: "))
    assert argv[argv.index("--plugin") + 1] == os.path.relpath(plugin)
    out = subprocess.run([sys.executable, *argv[1:], "--results", str(tmp_path / "r.jsonl"), "--report", "none"],
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert out.returncode == 1, out.stderr
    assert re.search(r"seed\s+test-accumulating-step\s+cpu\s+float32\s+grad_W\s+.*disagree", out.stdout)
    assert "40 records" in out.stdout and "28 disagree" in out.stdout


def test_assert_agrees_returns_the_records_when_everything_agrees():
    recs = harness.assert_agrees("torch-seed", [seed_case()])
    assert len(recs) == 2 * 8 * 5 and {r.verdict for r in recs} == {"agree"}


def test_assert_agrees_reports_an_error_with_its_misuse():
    with pytest.raises(AssertionError) as info:
        harness.assert_agrees("mutant-inplace-grad-mode", [seed_case()], dtypes=["float64"])
    msg = str(info.value)
    assert "mutant-inplace-grad-mode on case 'seed' (cpu, float64): error: autograd misuse: in-place update" in msg
    assert re.search(r"Reproduce: (\.venv/bin/)?python -m harness check", msg)


def test_entry_point_group_loads_a_plugin(tmp_path, monkeypatch):
    (tmp_path / "ep_plugin_mod.py").write_text(ACCUMULATING_STEP.format(name="test-entry-point-step"))
    dist = tmp_path / "ep_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[harness.implementations]\ntest-entry-point-step = ep_plugin_mod\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "test-entry-point-step" in load_entry_points()
    assert REGISTRY["test-entry-point-step"].framework == "torch"


def test_an_entry_point_that_exits_on_import_is_an_error_not_a_green_run(tmp_path, monkeypatch):
    """``sys.exit(0)`` while an entry point's module is imported ended ``check`` with status 0, nothing graded and no
    results file (helper-60): it is a plug-in error, exit 2, naming the entry point and the SystemExit."""

    from harness.errors import PluginError

    (tmp_path / "ep_exit_mod.py").write_text("import sys\nsys.exit(0)\n")
    dist = tmp_path / "ep_exit-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-exit\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[harness.implementations]\nexiting-step = ep_exit_mod\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=r"entry point 'exiting-step' \(ep_exit_mod\) failed to load: SystemExit: 0"):
        load_entry_points()
    results = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "harness", "check", "--implementations", "exiting-step", "--cases",
                           str(CASES / "seed.toml"), "--results", str(results), "--report", "none"],
                          capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"},
                          timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "SystemExit" in proc.stderr and "exiting-step" in proc.stderr


def _readme_blocks() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Verifying your own implementation", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)
    return {"python": [b for lang, b in blocks if lang == "python"], "sh": [b for lang, b in blocks if lang == "sh"]}  # type: ignore[dict-item]


def test_readme_example_is_the_examples_folder():
    blocks = _readme_blocks()
    assert blocks["python"][0] == (ROOT / "examples" / "my_step.py").read_text()
    assert blocks["python"][1] == (ROOT / "examples" / "test_my_step.py").read_text()
    assert len([ln for ln in blocks["python"][1].splitlines() if ln.strip()]) <= 5


def test_readme_commands_run_as_written(tmp_path):
    """Run the README's commands in a copy of the examples and cases (so reports/ lands in tmp)."""
    import shutil

    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    shutil.copytree(ROOT / "cases", tmp_path / "cases")
    commands = _readme_blocks()["sh"][0]  # the section's first sh block: the plug-in's commands (later ones: optimizer bench)
    assert "examples/my_step.py" in commands
    for line in commands.strip().splitlines():
        argv = shlex.split(line)
        assert argv[0] == ".venv/bin/python"  # as from a fresh clone; this interpreter stands for it
        extra = _pytest_plugin_args() + NO_CACHE_NO_HYPOTHESIS if argv[1:3] == ["-m", "pytest"] else []
        out = subprocess.run([sys.executable, *argv[1:3], *extra, *argv[3:]], cwd=tmp_path, capture_output=True, text=True,
                             env=_env(), timeout=600)
        assert out.returncode == 0, f"{line}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert (tmp_path / "reports" / "results.jsonl").is_file()


def test_pytest_plugin_option_loads_a_plugin(tmp_path):
    (tmp_path / "user_step.py").write_text(ACCUMULATING_STEP.format(name="user-step"))
    (tmp_path / "test_user.py").write_text(textwrap.dedent('''
        import harness
        from harness.cases import load_cases

        def test_user_step_fails_with_a_diagnosis():
            case = [c for c in load_cases([{cases!r}]).cases if c.id == "seed"]
            try:
                harness.assert_agrees("user-step", case, dtypes=["float64"])
            except AssertionError as exc:
                assert "gradient accumulation" in str(exc)
            else:
                raise AssertionError("the accumulating step passed")
    ''').format(cases=str(CASES / "seed.toml")))
    out = subprocess.run([sys.executable, "-m", "pytest", *_pytest_plugin_args(), *NO_CACHE_NO_HYPOTHESIS, "--harness-plugin", "user_step.py",
                          "-q", "test_user.py"], cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    bad = subprocess.run([sys.executable, "-m", "pytest", *_pytest_plugin_args(), *NO_CACHE_NO_HYPOTHESIS, "--harness-plugin", "no_such_module_xyz",
                          "-q", "test_user.py"], cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=300)
    assert bad.returncode != 0
    assert "cannot import plug-in 'no_such_module_xyz': ModuleNotFoundError" in bad.stderr


def test_cli_plugin_bad_module_is_a_usage_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "harness", "check", "--plugin", "no_such_module_xyz", "--results", str(tmp_path / "r.jsonl")],
                         capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)
    assert out.returncode == 2
    assert "cannot import plug-in 'no_such_module_xyz'" in out.stderr


@pytest.fixture(autouse=True)
def _forget_test_plugins():
    yield
    for name in [n for n in REGISTRY if n.startswith("test-") or n == "user-step"]:
        REGISTRY.pop(name, None)


def test_examples_folder_is_importable_as_a_plugin():
    load_plugin(str(Path("examples") / "my_step.py") if Path("examples").is_dir() else str(ROOT / "examples" / "my_step.py"))
    assert REGISTRY["my-step"].kind == "plugin"


def test_verify_takes_the_registered_function_itself():
    @harness.implementation("test-verify-by-function", framework="numpy")
    def step(X, y, W, b, *, lr, reduction, steps):
        import numpy as np

        out = []
        for _ in range(steps):
            R = X @ W + b - y
            c = X.dtype.type(1.0 if reduction == "sum" else 1.0 / R.size)
            gW, gb = 2 * c * (X.T @ R), 2 * c * R.sum(axis=0)
            loss = c * np.sum(R * R)
            W, b = W - lr * gW, b - lr * gb
            out.append(harness.StepResult(loss, gW, gb, W, b))
        return out

    recs = harness.verify([seed_case()], [step], dtypes=["float64"])
    assert len(recs) == 40 and {r.implementation for r in recs} == {"test-verify-by-function"}
    assert {r.verdict for r in recs} == {"agree"}

    def unregistered(X, y, W, b, *, lr, reduction, steps):
        return []

    with pytest.raises(harness.UsageError, match="is not registered: decorate it with @harness.implementation"):
        harness.verify([seed_case()], [unregistered])


def test_a_plugin_that_registers_nothing_gets_a_warning(tmp_path):
    """Found by a new-user trial (helper-43): ``--plugin examples`` (a folder, imported as a namespace package) or a
    module whose step lacks the decorator was accepted silently, and the next error only said ``unknown implementation
    'my-step'``."""
    from harness.implementations import load_plugin

    (tmp_path / "undecorated_step.py").write_text("def step(X, y, W, b, *, lr, reduction, steps):\n    return []\n")
    with pytest.warns(RuntimeWarning, match="registered no implementation and no framework"):
        load_plugin(str(tmp_path / "undecorated_step.py"))


def test_a_plugin_that_registers_nothing_is_named_once_per_run(tmp_path):
    """helper-66: ``check --plugin`` of such a module warned in the supervisor and again in every worker process
    that loaded it (three times with two workers). The supervisor's warning is the one."""
    (tmp_path / "undecorated_step.py").write_text("def step(X, y, W, b, *, lr, reduction, steps):\n    return []\n")
    out = subprocess.run([sys.executable, "-m", "harness", "check", "--plugin", "undecorated_step.py", "--cases",
                          str(CASES / "seed.toml"), "--implementations", "numpy-hand", "--isolation", "process", "--jobs", "2",
                          "--results", str(tmp_path / "r.jsonl"), "--report", "none", "-q"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr.count("registered no implementation and no framework") == 1, out.stderr[-2000:]


def test_a_plain_functions_repro_line_says_what_check_needs(tmp_path):
    """helper-82: the ``Reproduce:`` line of a plain function given to ``assert_agrees`` named ``--plugin`` its file, which
    registers nothing, so the command failed with "unknown implementation". It now names no plug-in and says what the
    command needs; a registered step's line names its file."""
    import harness
    from harness.api import repro_line
    from harness.records import Record

    def loose_step(X, y, W, b, *, lr, reduction, steps):  # never registered
        raise AssertionError("not called")

    impl = harness.Implementation(name="loose_step", framework="numpy", fn=loose_step, kind="plugin")
    from harness.api import plugin_arg

    assert plugin_arg(impl) == []
    rec = Record(case="seed", implementation="loose_step", device="cpu", dtype="float32", quantity="*", step=0,
                 verdict="error", repro="python -m harness check --cases cases/seed.toml --implementations loose_step")
    assert repro_line(rec).endswith("(loose_step is a plain function: decorate it with @harness.implementation("
                                    "\"loose_step\", framework=...) in its module and add --plugin FILE for check to find it)")
    from harness.implementations import implementation_of

    assert plugin_arg(implementation_of("numpy-hand")) == []  # a built-in: check finds it by name


@pytest.mark.parametrize("name", ["g-name\n\nexit 0: every graded record passes\x1b[8m", "a,b", " padded", "", "tab\there", 7])
def test_an_implementation_name_that_tables_or_the_command_line_cannot_carry_is_refused(name):
    """helper-93: a name with a newline and an escape sequence printed a forged "exit 0" line in the summary and hid
    the rest on a terminal; one with a comma could never be picked with --implementations."""
    from harness.errors import PluginError
    from harness.implementations import REGISTRY, implementation

    with pytest.raises(PluginError, match="expected printable text without commas or surrounding spaces"):
        implementation(name, framework="numpy")
    assert name not in REGISTRY
    ok = implementation("plain name-1.2_x", framework="numpy")
    try:
        ok(lambda X, y, W, b, *, lr, reduction, steps: [])
        assert "plain name-1.2_x" in REGISTRY
    finally:
        REGISTRY.pop("plain name-1.2_x", None)
