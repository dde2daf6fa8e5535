"""The floating-point environment the harness computes in (harness.fpenv).

Found by an attack on this harness: a step that calls ``torch.set_flush_denormal(True)`` (ordinary training
code), or a plug-in that loads a library built with ``-Ofast``, left flush-to-zero and denormals-are-zero on
for the process. The oracle then read subnormal inputs as zero, the truth of a subnormal gradient became 0,
and the step's flushed 0 was graded ``agree`` (as was every later implementation graded in that process).
The truths below are computed with fractions.Fraction from the case's floats, independently of the harness.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import platform
import shutil
import subprocess
import sys
import textwrap
import types
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import harness
from harness import StepResult, fpenv
from harness.cases import case_from_arrays

pytestmark = pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                                reason="sets the environment through glibc's <fenv.h> (fesetround, feenableexcept)")

FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO = 0x800, 0x400, 0xC00  # glibc, x86-64
FE_OVERFLOW, FE_UNDERFLOW = 0x08, 0x10
ROOT = Path(__file__).resolve().parents[1]


def _libm() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("m"))
    lib.fesetround.argtypes = [ctypes.c_int]
    lib.feenableexcept.argtypes = [ctypes.c_int]
    return lib


@pytest.fixture(autouse=True)
def _default_after():
    """Every test leaves the default environment behind, whatever it set."""
    yield
    fpenv.restore_default()
    assert fpenv.current().is_default


Y = np.array([[3e-320], [-5e-321]])  # subnormal targets: R = -y, so every gradient is subnormal


def _subnormal_case():
    return case_from_arrays("subnormal-residual", X=np.zeros((2, 1)), y=Y, W=np.zeros((1, 1)), b=np.zeros(1),
                            lr=1.0, reduction="sum", dtypes=("float64",))


def _truth() -> dict[str, Fraction]:
    """grad_b = 2 sum(R) with R = -y (X = W = b = 0, reduction sum); b' = b - lr grad_b; loss = sum R^2."""
    r = [-Fraction(float(v)) for v in Y.ravel()]
    gb = 2 * sum(r)
    return {"loss": sum(x * x for x in r), "grad_b": gb, "b": -gb}


def _np_step(X, y, W, b, *, lr, reduction, steps):
    out = []
    for _ in range(steps):
        r = X @ W + b - y
        gW, gb = 2 * (X.T @ r), 2 * r.sum(axis=0)
        W, b = W - lr * gW, b - lr * gb
        out.append(StepResult(np.asarray((r * r).sum()), gW, gb, W, b))
    return out


def _ftz_step(X, y, W, b, *, lr, reduction, steps):
    import torch

    torch.set_flush_denormal(True)  # and never turned off: FTZ and DAZ stay on in this thread
    return _np_step(X, y, W, b, lr=lr, reduction=reduction, steps=steps)


def _upward_step(X, y, W, b, *, lr, reduction, steps):
    _libm().fesetround(FE_UPWARD)
    return _np_step(X, y, W, b, lr=lr, reduction=reduction, steps=steps)


def _exact(rec) -> Fraction:
    """The record's exact value: its rational where short, else its 20 significant digits."""
    return Fraction(rec.exact_rational) if rec.exact_rational else Fraction(rec.exact.rstrip("."))


def _matches(rec, value: Fraction) -> bool:
    return abs(_exact(rec) - value) <= abs(value) * Fraction(1, 10**18)


def _by(records, impl):
    return {r.quantity: r for r in records if r.implementation == impl}


def test_current_reads_each_change_and_restore_default_undoes_it():
    import torch

    lib = _libm()
    assert fpenv.current() == fpenv.DEFAULT and fpenv.restore_default() is None
    torch.set_flush_denormal(True)
    env = fpenv.current()
    assert env.flush_to_zero and env.denormals_are_zero and not env.is_default
    assert "flush-to-zero and denormals-are-zero" in env.describe()
    assert fpenv.restore_default() == env and fpenv.current().is_default
    assert 5e-324 * float(np.float64(1.0)) == 5e-324  # gradual underflow again
    for mode, name in ((FE_UPWARD, "upward"), (FE_DOWNWARD, "downward"), (FE_TOWARDZERO, "toward zero")):
        assert lib.fesetround(mode) == 0
        assert fpenv.current().rounding == name
        assert fpenv.restore_default().rounding == name
        assert fpenv.current().rounding == "to nearest"
    lib.feenableexcept(FE_OVERFLOW)
    assert fpenv.current().traps == ("overflow",)
    fpenv.restore_default()
    assert fpenv.current().traps == ()
    assert float(np.float64(1e308)) * 10.0 == float("inf")  # masked again: no SIGFPE


def test_ieee_default_runs_a_block_in_the_default_and_gives_the_callers_environment_back():
    import torch

    torch.set_flush_denormal(True)
    with fpenv.ieee_default() as found:
        assert found.flush_to_zero and fpenv.current().is_default
    assert fpenv.current().flush_to_zero  # the caller's choice, given back


def test_a_step_that_leaves_flush_to_zero_on_is_graded_against_the_ieee_truth():
    """The false pass: every record agreed with an exact value of 0 once the step had turned FTZ/DAZ on."""
    truth = _truth()
    ftz = harness.Implementation("leaves-ftz-on", "numpy", _ftz_step, kind="plugin")
    hand = harness.Implementation("hand-after-ftz", "numpy", _np_step, kind="plugin")
    records = harness.verify([_subnormal_case()], [ftz, hand], dtypes="float64", isolation="inline")
    assert fpenv.current().is_default
    bad, good = _by(records, "leaves-ftz-on"), _by(records, "hand-after-ftz")
    for q in ("grad_b", "b"):
        assert truth[q] != 0 and _matches(bad[q], truth[q])
        assert bad[q].verdict == "disagree", bad[q].message  # it returned 0 for a subnormal value
        assert "left the floating-point environment changed: flush-to-zero" in bad[q].message
        assert _matches(good[q], truth[q])
        assert good[q].verdict == "agree" and float(good[q].computed) == float(truth[q])
        assert "floating-point environment" not in good[q].message  # the later check ran in the default
    assert _matches(good["loss"], truth["loss"])


def test_a_check_called_with_flush_to_zero_on_grades_in_the_default_and_says_so():
    import torch

    truth = _truth()
    hand = harness.Implementation("hand-called-in-ftz", "numpy", _np_step, kind="plugin")
    torch.set_flush_denormal(True)
    records = harness.verify([_subnormal_case()], [hand], dtypes="float64", isolation="inline")
    assert fpenv.current().flush_to_zero  # the caller's environment, given back
    fpenv.restore_default()
    got = _by(records, "hand-called-in-ftz")
    for q in ("grad_b", "b"):
        assert _matches(got[q], truth[q])
        assert got[q].verdict == "agree" and float(got[q].computed) == float(truth[q])
        assert "this check was called with flush-to-zero" in got[q].message


def test_a_step_that_changes_the_rounding_direction_is_named_and_the_next_check_rounds_to_nearest():
    up = harness.Implementation("rounds-upward", "numpy", _upward_step, kind="plugin")
    hand = harness.Implementation("hand-after-upward", "numpy", _np_step, kind="plugin")
    rng = np.random.default_rng(3)
    case = case_from_arrays("rounding", X=rng.standard_normal((8, 3)), y=rng.standard_normal((8, 2)),
                            W=rng.standard_normal((3, 2)), b=rng.standard_normal(2), lr=0.1, dtypes=("float64",))
    records = harness.verify([case], [up, hand], dtypes="float64", isolation="inline")
    assert fpenv.current().is_default
    assert all("rounding upward instead of to nearest" in r.message for r in records if r.implementation == "rounds-upward")
    later = [r for r in records if r.implementation == "hand-after-upward"]
    assert later and all(r.verdict == "agree" and "floating-point" not in r.message for r in later)


class _SetsFtzWhenRead:
    """A result whose ``__array__`` turns FTZ/DAZ on while the harness reads it."""

    def __init__(self, value):
        self.value = np.asarray(value)

    def __array__(self, dtype=None, copy=None):
        import torch

        torch.set_flush_denormal(True)
        return self.value if dtype is None else self.value.astype(dtype)


def _reads_with_ftz(X, y, W, b, *, lr, reduction, steps):
    out = _np_step(X, y, W, b, lr=lr, reduction=reduction, steps=steps)
    return [StepResult(o.loss, o.grad_W, _SetsFtzWhenRead(o.grad_b), o.W, o.b) for o in out]


def test_results_whose_reading_changes_the_environment_are_not_graded():
    impl = harness.Implementation("ftz-when-read", "numpy", _reads_with_ftz, kind="plugin")
    records = harness.verify([_subnormal_case()], [impl], dtypes="float64", isolation="inline")
    assert [r.verdict for r in records] == ["error"]
    assert "changed the floating-point environment" in records[0].message
    assert fpenv.current().is_default


PLUGIN = textwrap.dedent('''
    import ctypes, harness
    from tests.test_fpenv import _np_step

    ctypes.CDLL({lib!r})  # built with -Ofast: its crtfastmath.o turns FTZ/DAZ on when it is loaded
    harness.implementation("after-ofast-import", framework="numpy")(_np_step)
''')

CASE_FILE = textwrap.dedent('''
    [[case]]
    id = "subnormal-residual"
    X = [[0.0], [0.0]]
    y = [[3e-320], [-5e-321]]
    W = [[0.0]]
    b = [0.0]
    lr = 1.0
    reduction = "sum"
    dtypes = ["float64"]
''')


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build a library with -Ofast")
@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_a_plugin_that_loads_an_ofast_library_does_not_change_the_truth(tmp_path, isolation):
    """Loading the library turns FTZ/DAZ on for the whole process (the CLI's, or a worker's): the case file's
    3e-320 was read as 0 (refused as a value that rounds to 0), and the oracle read subnormal inputs as 0."""
    (tmp_path / "fm.c").write_text("double twice(double x) { return 2 * x; }\n")
    lib = tmp_path / "libfm.so"
    subprocess.run(["gcc", "-Ofast", "-shared", "-fPIC", str(tmp_path / "fm.c"), "-o", str(lib)], check=True)
    probe = subprocess.run([sys.executable, "-c", f"import ctypes; from harness import fpenv; ctypes.CDLL({str(lib)!r}); "
                            "print(fpenv.current().flush_to_zero)"], capture_output=True, text=True, check=True)
    if probe.stdout.strip() != "True":
        pytest.skip("this gcc does not link crtfastmath.o into shared libraries")
    (tmp_path / "ofast_plugin.py").write_text(PLUGIN.format(lib=str(lib)))
    (tmp_path / "sub.toml").write_text(CASE_FILE)
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "harness", "check", "--plugin", str(tmp_path / "ofast_plugin.py"),
                           "--cases", str(tmp_path / "sub.toml"), "--implementations", "after-ofast-import,numpy-hand",
                           "--isolation", isolation, "--jobs", "1", "--results", str(out), "--report", "none", "-q"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    truth = _truth()
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    recs = [r for r in recs if r.get("kind", "record") == "record"]
    assert {r["implementation"] for r in recs} == {"after-ofast-import", "numpy-hand"}
    for r in recs:
        if r["quantity"] in truth:
            exact = Fraction(r["exact_rational"]) if r["exact_rational"] else Fraction(r["exact"].rstrip("."))
            assert abs(exact - truth[r["quantity"]]) <= abs(truth[r["quantity"]]) / 10**18, r
            assert r["verdict"] == "agree"
    assert "importing plug-in" in proc.stderr and "flush-to-zero and denormals-are-zero" in proc.stderr


def test_a_step_that_enables_traps_does_not_crash_the_grading(tmp_path):
    """With overflow trapping on, the harness's own float64 overflow (bounds past the format's range) would be a
    SIGFPE. Run in a child process: a regression would kill it, not this test process."""
    script = textwrap.dedent('''
        import ctypes, ctypes.util, numpy as np, harness
        from harness import StepResult
        from harness.cases import case_from_arrays

        def step(X, y, W, b, *, lr, reduction, steps):
            libm = ctypes.CDLL(ctypes.util.find_library("m"))
            libm.feenableexcept(0x08 | 0x10 | 0x01)  # overflow, underflow, invalid
            return [StepResult(np.asarray(np.inf), np.full(W.shape, np.inf), np.full(b.shape, np.inf),
                               np.full(W.shape, -np.inf), np.full(b.shape, -np.inf))]

        X = np.full((3, 2), 1e300)
        case = case_from_arrays("overflowing", X=X, y=np.ones((3, 1)), W=np.full((2, 1), 1e10), b=np.zeros(1),
                                lr=0.5, dtypes=("float64",))
        recs = harness.verify([case], [harness.Implementation("traps", "numpy", step, kind="plugin")], dtypes="float64",
                              isolation="inline")
        print(sorted({r.verdict for r in recs}))
        print(all("traps on invalid, overflow, underflow" in r.message for r in recs))
    ''')
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    verdicts, named = proc.stdout.split("\n")[:2]
    assert "'agree'" not in verdicts and named == "True", proc.stdout


def test_the_probes_operands_survive_compilation_with_flush_to_zero_on():
    """A literal 5e-324 compiled with FTZ/DAZ on is 0.0, and a .pyc written then keeps it: the probe read every
    environment as denormals-are-zero, and restoring the default seemed to fail (found in a worker process that
    first imported harness.fpenv after loading a library built with -Ofast)."""
    import torch

    source = Path(fpenv.__file__).read_text()
    torch.set_flush_denormal(True)
    assert compile("x = 5e-324", "<literal>", "exec").co_consts[0] == 0.0  # the hazard, on this platform
    mod = types.ModuleType("fpenv_compiled_in_ftz")
    sys.modules[mod.__name__] = mod  # for its dataclasses
    try:
        exec(compile(source, mod.__name__, "exec"), mod.__dict__)
        fpenv.restore_default()
        assert mod._TINY == 5e-324 and mod._MIN_NORMAL == 2.0**-1022
        assert mod.current().is_default
    finally:
        del sys.modules[mod.__name__]


def test_cases_are_read_in_the_default_whatever_the_callers_environment(tmp_path):
    """A caller with FTZ/DAZ on (a conftest that loaded an -Ofast library) got a case file's 3e-320 refused as
    rounding to 0, and case_from_arrays refused Fraction(3e-320) the same way: both read in the default now."""
    import torch

    from harness.cases import load_cases

    (tmp_path / "sub.toml").write_text(CASE_FILE)
    y = [[Fraction(3e-320)]]  # made first: Fraction(float) is 0 under DAZ too (frexp of a subnormal scales it)
    torch.set_flush_denormal(True)
    loaded = load_cases([tmp_path / "sub.toml"])
    made = case_from_arrays("from-fractions", X=[[0.0]], y=y, W=[[0.0]], b=[0.0], lr=1.0)
    assert fpenv.current().flush_to_zero  # given back
    fpenv.restore_default()
    assert [c.values["y"][0, 0] for c in loaded.cases] == [3e-320] and made.values["y"][0, 0] == 3e-320


# ------------------------------------------------------------------ NumPy's error handling, int-to-string digits

def _underflowing_case():
    """Products below float64's range (1e-200 * 1e-200): NumPy signals underflow in the harness's own arithmetic."""
    return case_from_arrays("underflows", X=np.full((3, 2), 1e-200), y=np.full((3, 1), 1e-300), W=np.full((2, 1), 1e-200),
                            b=np.zeros(1), lr=0.5, reduction="sum", dtypes=("float64",))


def test_a_caller_with_numpy_errors_raising_gets_grades_not_errors():
    """Found by an attack (helper-40): np.seterr(all="raise") in the caller or at a plug-in's import made the
    harness's own arithmetic raise FloatingPointError: 'harness failure while grading' error records on numpy-hand
    and torch-seed, and generated case files that failed to load."""
    from harness.cases import load_cases

    with np.errstate(all="raise"):
        records = harness.verify([_underflowing_case()], ["numpy-hand", "torch-seed"], dtypes="float64", isolation="inline")
        loaded = load_cases([ROOT / "cases" / "generated.toml"], tier="quick")
        assert np.geterr()["under"] == "raise"  # the caller's, given back
    assert {r.verdict for r in records} == {"agree"}, [r.message for r in records if r.verdict != "agree"]
    assert loaded.cases and not loaded.errors


@pytest.mark.filterwarnings("ignore:plug-in .* registered no implementation:RuntimeWarning")  # (the plug-in registers none on purpose)
def test_a_plugin_that_sets_numpy_errors_to_raise_is_named_and_undone(tmp_path):
    from harness.implementations import load_plugin

    (tmp_path / "raises_plugin.py").write_text("import numpy as np\nnp.seterr(all='raise')\n")
    before = np.geterr()
    try:
        with pytest.warns(RuntimeWarning, match="NumPy's floating-point error handling changed"):
            load_plugin(str(tmp_path / "raises_plugin.py"))
        assert np.geterr() == fpenv.NUMPY_ERRORS
    finally:
        np.seterr(**before)


def test_a_torch_step_that_leaves_numpy_errors_raising_is_named_and_the_grading_goes_on():
    def step(X, y, W, b, *, lr, reduction, steps):
        np.seterr(all="raise")  # left on (a torch step is not called inside an errstate)
        return _np_step(X.numpy(), y.numpy(), W.numpy(), b.numpy(), lr=lr, reduction=reduction, steps=steps)

    before = np.geterr()
    impl = harness.Implementation("leaves-numpy-raising", "torch", step, kind="plugin")
    try:
        records = harness.verify([_underflowing_case()], [impl, "numpy-hand"], dtypes="float64", isolation="inline")
    finally:
        np.seterr(**before)
    mine = [r for r in records if r.implementation == "leaves-numpy-raising"]
    assert all("NumPy's floating-point error handling changed" in r.message for r in mine)
    assert {r.verdict for r in records if r.implementation == "numpy-hand"} == {"agree"}


def test_a_lower_int_to_string_limit_does_not_make_errors_of_long_exact_values():
    """sys.set_int_max_str_digits(640) (or PYTHONINTMAXSTRDIGITS=640): the exact loss of a subnormal residual has a
    denominator of about 650 digits, and writing it raised ValueError: an error record for a correct step."""
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        records = harness.verify([_subnormal_case()], ["numpy-hand"], dtypes="float64", isolation="inline")
    finally:
        sys.set_int_max_str_digits(limit)
    assert {r.verdict for r in records} == {"agree"}, [r.message for r in records]


SET_REGISTERS = textwrap.dedent('''
    import ctypes, ctypes.util, struct

    LIBM = ctypes.CDLL(ctypes.util.find_library("m"))

    def set_fenv(cw=None, mxcsr=None):
        """Write the x87 control word and/or the MXCSR alone (glibc's x86-64 fenv_t: bytes 0 and 28)."""
        buf = ctypes.create_string_buffer(512)
        LIBM.fegetenv(buf)
        raw = bytearray(buf.raw)
        if cw is not None:
            struct.pack_into("<H", raw, 0, cw)
        if mxcsr is not None:
            struct.pack_into("<I", raw, 28, mxcsr)
        LIBM.fesetenv(ctypes.create_string_buffer(bytes(raw), 512))
''')


@pytest.mark.skipif(platform.machine() != "x86_64", reason="writes x86-64's MXCSR and x87 control word")
def test_a_trap_unmasked_in_the_mxcsr_alone_is_read_and_undone_without_firing(tmp_path):
    """Found by a review (helper-41): glibc's fegetexcept reads the x87 masks only, so a trap unmasked in the MXCSR
    alone (what _MM_SET_EXCEPTION_MASK does in a C extension) was 'no trap', and the probe's own subnormal product
    raised SIGFPE: an inline run ended with exit 136 and no records. In a child process: a regression kills it."""
    script = SET_REGISTERS + textwrap.dedent('''
        from harness import fpenv
        set_fenv(mxcsr=0x1F80 & ~(0x10 << 7))  # underflow unmasked in the MXCSR only
        env = fpenv.current()
        print(env.traps, fpenv.restore_default() == env, fpenv.current().is_default)
    ''')
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and proc.stdout.splitlines()[0] == "('underflow',) True True", (proc.returncode, proc.stdout)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="writes x86-64's x87 control word")
def test_the_x87_control_word_is_read_and_restored(tmp_path):
    """Found by the same review: 24-bit precision and rounding toward zero in the x87 control word went unseen; the
    bounds' long double rescue of overflowed values was computed in it (other bounds on a case near 1e300)."""
    namespace: dict = {}
    exec(SET_REGISTERS, namespace)
    namespace["set_fenv"](cw=0x0C7F)
    assert np.longdouble(1) + np.longdouble(2.0**-30) == np.longdouble(1)  # the hazard: 24-bit long doubles
    env = fpenv.current()
    assert env.x87_control == "0x0c7f" and "x87 control word 0x0c7f" in env.describe()
    assert fpenv.restore_default() == env and fpenv.current().is_default
    assert np.longdouble(1) + np.longdouble(2.0**-30) > np.longdouble(1)
