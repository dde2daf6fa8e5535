"""The truth of a model's step (harness.models.oracle): values derived independently (by hand, as
exact fractions or mpmath expressions at 60 digits), SymPy's element-wise derivative of the whole
loss (plan.cross_check), kink and undecided flags."""

from __future__ import annotations

from fractions import Fraction

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.floats import FLOAT16, FLOAT32, FLOAT64, get_format, round_fraction, round_to_format
from harness.models import oracle as oracle_mod
from harness.models.oracle import (
    EXACT_METHOD,
    hi_lo_of_ratio,
    model_truth,
    straddles_rounding_boundary,
)
from harness.models.plan import build_plan, cross_check
from harness.models.spec import ACTIVATIONS, ModelSpec


def _values(spec: ModelSpec, n: int, d: int, k: int, seed: int, fmt_name: str = "float64") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    fmt = get_format(fmt_name)
    vals = {"X": rng.standard_normal((n, d)), "y": rng.standard_normal((n, k))}
    for p, s in spec.parameter_shapes(d, k).items():
        vals[p] = rng.standard_normal(s) * 0.7
    return {name: round_to_format(v, fmt) for name, v in vals.items()}


def _value(truth: oracle_mod.ModelTruth, q: str, idx: tuple[int, ...] = ()) -> mpmath.mpf:
    return mpmath.mpf(float(truth.hi[q][idx])) + mpmath.mpf(float(truth.lo[q][idx]))


# ------------------------------------------------------------------ SymPy's derivative of the whole loss


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize(("hidden", "reduction", "n"), [((2,), "sum", 2), ((2,), "mean", 2), ((2, 1), "mean", 1)])
def test_cross_check_mlp(act: str, hidden: tuple[int, ...], reduction: str, n: int) -> None:
    spec = ModelSpec(kind="mlp", hidden=hidden, activation=act)
    assert cross_check(spec, n, 2, 2 if len(hidden) == 1 else 1, reduction,
                       _values(spec, n, 2, 2 if len(hidden) == 1 else 1, seed=7, fmt_name="float32"), lr="0.1", fmt_name="float32") == []


@pytest.mark.parametrize("degree", [2, 3])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_cross_check_polynomial(degree: int, reduction: str) -> None:
    spec = ModelSpec(kind="polynomial", polynomial=degree)
    assert cross_check(spec, 2, 2, 2, reduction, _values(spec, 2, 2, 2, seed=degree)) == []


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_cross_check_expression(reduction: str) -> None:
    spec = ModelSpec(kind="expression", expression="a*tanh(w*x1 + c) - sqrt(x2**2 + 1)/c + abs(x1)*erf(a) + log(1 + w**2)",
                     parameters=("a", "w", "c"))
    assert cross_check(spec, 3, 2, 1, reduction, _values(spec, 3, 2, 1, seed=11, fmt_name="bfloat16"), lr="0.01", fmt_name="bfloat16") == []


@pytest.mark.parametrize("text", ["a", "a*b + b", "-x1/a - b**2", "x1**3 - a", "x**2 * exp(-b) / (1 + a**2)"])
def test_cross_check_expression_shapes(text: str) -> None:
    """Predictions that are a parameter, do not use the input, are all negative terms, leave a
    parameter unused, or divide: exact where rational, within the ball where not."""
    spec = ModelSpec(kind="expression", expression=text, parameters=("a", "b"))
    vals = {"X": np.array([[1.5], [-2.0], [0.25]]), "y": np.array([[0.5], [1.0], [-1.0]]), "a": np.array(0.75),
            "b": np.array(-1.25)}
    assert cross_check(spec, 3, 1, 1, "mean", vals) == []


def test_cross_check_reports_a_wrong_truth(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison is not vacuous: a truth off by one float64 ULP in one gradient element is reported."""
    spec = ModelSpec(kind="mlp", hidden=(2,), activation="relu")
    real = oracle_mod.model_truth

    def off_by_one_ulp(graph, inputs, fmt):  # noqa: ANN001, ANN202
        t = real(graph, inputs, fmt)
        t.hi["grad_W1"] = t.hi["grad_W1"].copy()
        t.hi["grad_W1"][0, 1] = np.nextafter(t.hi["grad_W1"][0, 1], np.inf)
        return t

    monkeypatch.setattr(oracle_mod, "model_truth", off_by_one_ulp)
    msgs = cross_check(spec, 2, 2, 1, "sum", _values(spec, 2, 2, 1, seed=3))
    assert len(msgs) == 1 and msgs[0].startswith("grad_W1[1]")


# ------------------------------------------------------------------ values derived by hand


@mpmath.workdps(60)
def test_tanh_network_by_hand() -> None:
    """f = w2 tanh(w1 x + b1) + b2, N = D = H = K = 1, L = (f - y)^2; by hand (chain rule):
    dL/dw2 = 2 r t, dL/db2 = 2 r, dL/dw1 = 2 r w2 (1 - t^2) x, dL/db1 = 2 r w2 (1 - t^2)."""
    x, y, w1, b1, w2, b2 = 0.75, -0.5, 1.25, -0.375, 0.875, 0.125  # float32 values
    vals = {"X": np.array([[x]]), "y": np.array([[y]]), "W1": np.array([[w1]]), "b1": np.array([b1]),
            "W2": np.array([[w2]]), "b2": np.array([b2])}
    spec = ModelSpec(kind="mlp", hidden=(1,), activation="tanh")
    truth = model_truth(build_plan(spec, 1, 1, 1, "sum", "0.1"), vals, FLOAT32)
    t = mpmath.tanh(mpmath.mpf(w1) * x + b1)
    r = mpmath.mpf(w2) * t + b2 - y
    want = {"loss": r**2, "grad_W2": 2 * r * t, "grad_b2": 2 * r, "grad_W1": 2 * r * w2 * (1 - t**2) * x,
            "grad_b1": 2 * r * w2 * (1 - t**2)}
    lr32 = mpmath.mpf(float(np.float32(0.1)))  # the dtype-rounded learning rate
    want.update({"W1": w1 - lr32 * want["grad_W1"], "b1": b1 - lr32 * want["grad_b1"],
                 "W2": w2 - lr32 * want["grad_W2"], "b2": b2 - lr32 * want["grad_b2"]})
    assert truth.method.startswith("arb-ball-") and truth.precision_bits >= 128
    for q, w in want.items():
        idx = (0,) * truth.hi[q].ndim
        got = _value(truth, q, idx)
        assert abs(got - w) <= mpmath.mpf(2) ** -100 * abs(w) + mpmath.mpf(float(truth.radius[q][idx])), q
        assert 0 < truth.radius[q][idx] < 2.0**-20 * 2.0**-23 * abs(float(w)), q
        assert not truth.undecided[q][idx] and not truth.kink[q][idx]


def _relu_by_hand(x: list[Fraction], y: list[Fraction], w1: list[Fraction], b1: list[Fraction], w2: list[Fraction],
                  b2: Fraction, at_zero: Fraction, slope: Fraction = Fraction(0)) -> dict[str, list[Fraction]]:
    """N rows, D = 1, H hidden (leaky) ReLU units, K = 1, reduction sum: the chain rule written out.
    The derivative at 0 is ``slope + at_zero (1 - slope)`` (PyTorch's for at_zero = 0)."""
    h_n = len(w1)
    z = [[x[i] * w1[j] + b1[j] for j in range(h_n)] for i in range(len(x))]
    h = [[v if v > 0 else slope * v for v in row] for row in z]
    d = [[Fraction(1) if v > 0 else (slope + at_zero * (1 - slope) if v == 0 else slope) for v in row] for row in z]
    r = [sum(h[i][j] * w2[j] for j in range(h_n)) + b2 - y[i] for i in range(len(x))]
    g = [2 * ri for ri in r]
    return {
        "loss": [sum(ri * ri for ri in r)],
        "grad_W1": [sum(g[i] * w2[j] * d[i][j] * x[i] for i in range(len(x))) for j in range(h_n)],
        "grad_b1": [sum(g[i] * w2[j] * d[i][j] for i in range(len(x))) for j in range(h_n)],
        "grad_W2": [sum(g[i] * h[i][j] for i in range(len(x))) for j in range(h_n)],
        "grad_b2": [sum(g)],
    }


@pytest.mark.parametrize("at_zero", [Fraction(0), Fraction(1)])
def test_relu_network_with_kink_by_hand(at_zero: Fraction) -> None:
    """Integer inputs; rows put two units exactly at ReLU's kink (z = 0): exact fractions by hand,
    the convention at 0 from the spec, and the kink flags exactly where the convention matters."""
    x, y = [Fraction(1), Fraction(2), Fraction(-1)], [Fraction(1), Fraction(0), Fraction(3)]
    w1, b1 = [Fraction(1), Fraction(-1), Fraction(1, 2)], [Fraction(-1), Fraction(2), Fraction(1, 4)]
    w2, b2 = [Fraction(2), Fraction(3), Fraction(-5, 4)], Fraction(-1)
    # z: row 0 = [0, 1, 3/4] (unit 0 at the kink), row 1 = [1, 0, 5/4] (unit 1), row 2 = [-2, 3, -1/4]
    spec = ModelSpec(kind="mlp", hidden=(3,), activation="relu", relu_grad_at_zero=at_zero)
    vals = {"X": np.array([[float(v)] for v in x]), "y": np.array([[float(v)] for v in y]),
            "W1": np.array([[float(v) for v in w1]]), "b1": np.array([float(v) for v in b1]),
            "W2": np.array([[float(v)] for v in w2]), "b2": np.array([float(b2)])}
    lr = Fraction(1, 16)
    truth = model_truth(build_plan(spec, 3, 1, 1, "sum", lr), vals, FLOAT16)
    assert truth.method == EXACT_METHOD and truth.precision_bits == 0
    want = _relu_by_hand(x, y, w1, b1, w2, b2, at_zero)
    for q, ws in want.items():
        for j, w in enumerate(ws):
            idx = (j,) if truth.hi[q].ndim == 1 else ((0, j) if q == "grad_W1" else (j, 0))
            if truth.hi[q].ndim == 0:
                idx = ()
            assert (truth.hi[q][idx], truth.lo[q][idx]) == hi_lo_of_ratio(w.numerator, w.denominator), (q, j)
            assert truth.radius[q][idx] == 0 and not truth.undecided[q][idx]
    # updated W1 with the exact gradient and lr (1/16 is a float16 value)
    for j in range(3):
        w_next = w1[j] - lr * want["grad_W1"][j]
        assert truth.hi["W1"][0, j] == float(w_next)
    # kinks: units 0 and 1 each have a row at z = 0; unit 2 never does; the loss and the output
    # layer's gradients do not depend on a derivative at the kink
    assert truth.kink["grad_W1"].tolist() == [[True, True, False]]
    assert truth.kink["grad_b1"].tolist() == [True, True, False]
    assert truth.kink["W1"].tolist() == [[True, True, False]]
    assert not truth.kink["loss"] and not truth.kink["grad_W2"].any() and not truth.kink["grad_b2"].any()
    # the convention matters: units 0 and 1's gradients differ between the two conventions
    other = _relu_by_hand(x, y, w1, b1, w2, b2, 1 - at_zero)
    assert other["grad_W1"][0] != want["grad_W1"][0] and other["grad_W1"][2] == want["grad_W1"][2]


_SMALL = st.integers(-6, 6).map(lambda i: Fraction(i, 2))


@settings(max_examples=25, deadline=None)
@given(rows=st.lists(st.tuples(_SMALL, _SMALL), min_size=1, max_size=4),
       units=st.lists(st.tuples(_SMALL, _SMALL, _SMALL), min_size=1, max_size=4), b2=_SMALL,
       leaky=st.booleans(), at_zero=st.sampled_from([Fraction(0), Fraction(1), Fraction(1, 2)]))
def test_relu_networks_match_the_chain_rule(rows: list[tuple[Fraction, Fraction]], units: list[tuple[Fraction, Fraction, Fraction]],
                                            b2: Fraction, leaky: bool, at_zero: Fraction) -> None:
    """Random (leaky) ReLU networks on half-integers (so pre-activations hit 0 often): every graded
    value equals the chain rule written out in Fractions, and the kink flags of grad_b1 are set
    exactly for the units with a row at z = 0."""
    slope = Fraction(1, 8) if leaky else Fraction(0)
    x, y = [r[0] for r in rows], [r[1] for r in rows]
    w1, b1, w2 = [u[0] for u in units], [u[1] for u in units], [u[2] for u in units]
    spec = ModelSpec(kind="mlp", hidden=(len(units),), activation="leaky_relu" if leaky else "relu",
                     negative_slope=slope if leaky else Fraction(1, 100), relu_grad_at_zero=at_zero)
    vals = {"X": np.array([[float(v)] for v in x]), "y": np.array([[float(v)] for v in y]),
            "W1": np.array([[float(v) for v in w1]]), "b1": np.array([float(v) for v in b1]),
            "W2": np.array([[float(v)] for v in w2]), "b2": np.array([float(b2)])}
    truth = model_truth(build_plan(spec, len(x), 1, 1, "sum", "0.25"), vals, FLOAT32)
    want = _relu_by_hand(x, y, w1, b1, w2, b2, at_zero, slope)
    got = {"loss": [truth.hi["loss"][()]], "grad_W1": list(truth.hi["grad_W1"][0]), "grad_b1": list(truth.hi["grad_b1"]),
           "grad_W2": list(truth.hi["grad_W2"][:, 0]), "grad_b2": list(truth.hi["grad_b2"])}
    for q, ws in want.items():
        assert got[q] == [float(w) for w in ws], q  # half-integer data: every value is a float32 value here
    at_kink = [any(x[i] * w1[j] + b1[j] == 0 for i in range(len(x))) for j in range(len(w1))]
    assert truth.kink["grad_b1"].tolist() == at_kink


def test_leaky_relu_slope_is_exact_and_kink_uses_the_convention() -> None:
    """Leaky ReLU with slope 1/100 (not a binary float: the truth holds it exactly), one row."""
    spec = ModelSpec(kind="mlp", hidden=(2,), activation="leaky_relu")
    vals = {"X": np.array([[2.0]]), "y": np.array([[0.0]]), "W1": np.array([[-1.0, 0.5]]), "b1": np.array([0.0, -1.0]),
            "W2": np.array([[1.0], [1.0]]), "b2": np.array([0.0])}
    # z = [-2, 0]: h = [-2/100, 0]; unit 1 at the kink, torch's derivative there is the slope
    truth = model_truth(build_plan(spec, 1, 1, 1, "sum", 1), vals, FLOAT64)
    r = Fraction(-2, 100)
    assert (truth.hi["loss"][()], truth.lo["loss"][()]) == hi_lo_of_ratio((r * r).numerator, (r * r).denominator)
    g_b1 = [2 * r * Fraction(1, 100), 2 * r * Fraction(1, 100)]
    assert [(truth.hi["grad_b1"][j], truth.lo["grad_b1"][j]) for j in range(2)] == [
        hi_lo_of_ratio(v.numerator, v.denominator) for v in g_b1]
    assert truth.kink["grad_b1"].tolist() == [False, True]


def test_value_beyond_the_dtype_range_is_kept() -> None:
    """A float16 step whose exact loss exceeds float16's largest value (65504): the truth is the
    exact value (finite in float64), not a rounding to the dtype."""
    spec = ModelSpec(kind="polynomial", polynomial=2)
    vals = {"X": np.array([[200.0]]), "y": np.array([[0.0]]), "W": np.array([[0.0], [1.0]]), "b": np.array([0.0])}
    truth = model_truth(build_plan(spec, 1, 1, 1, "sum", "0.01"), vals, FLOAT16)
    assert truth.hi["loss"][()] == 200.0**4 and truth.lo["loss"][()] == 0
    assert truth.hi["grad_W"][1, 0] == 2 * 200.0**2 * 200.0**2  # 2 r x^2, r = 200^2
    assert not truth.undecided["loss"]


# ------------------------------------------------------------------ undecided


def test_straddle_of_built_balls() -> None:
    mid16 = Fraction(1) + Fraction(1, 2**11)  # midpoint between 1 and 1 + 2**-10 (float16)
    tiny = Fraction(1, 2**40)
    assert straddles_rounding_boundary(mid16, tiny, FLOAT16)
    assert not straddles_rounding_boundary(mid16, Fraction(0), FLOAT16)  # exact: ties to even decide it
    assert not straddles_rounding_boundary(mid16 + Fraction(1, 2**20), tiny, FLOAT16)
    assert not straddles_rounding_boundary(mid16, tiny, FLOAT32)  # a float32 value
    assert straddles_rounding_boundary(Fraction(65520), tiny, FLOAT16)  # overflow threshold of float16
    assert not straddles_rounding_boundary(Fraction(65519), tiny, FLOAT16)
    assert straddles_rounding_boundary(Fraction(1, 2**25), tiny**2, FLOAT16)  # half the smallest subnormal
    assert straddles_rounding_boundary(Fraction(3, 2**26) * 2, tiny**2, FLOAT16)  # 1.5 subnormal quanta
    assert round_fraction(mid16, FLOAT16) == 1  # ties to even


def test_undecided_loss_at_a_float16_midpoint() -> None:
    """sin(c)**2 + cos(c)**2 is 1, but a ball that contains 1 is all Arb can say: the loss
    (47/64)**2 = 2209/4096 is a float16 midpoint (2209 odd, spacing 2**-11 in [1/2, 1)), so
    the ball straddles it at every precision and the truth says undecided; the gradient 2 r x1 =
    47/32 is a float16 value, decided."""
    spec = ModelSpec(kind="expression", expression="a*x1 + sin(c)**2 + cos(c)**2", parameters=("a", "c"))
    vals = {"X": np.array([[1.0]]), "y": np.array([[81 / 64]]), "a": np.array(1.0), "c": np.array(0.5)}
    truth = model_truth(build_plan(spec, 1, 1, 1, "sum", "0.125"), vals, FLOAT16)
    assert truth.undecided["loss"][()]
    assert truth.precision_bits == 1024
    assert abs(_value(truth, "loss") - mpmath.mpf(2209) / 4096) <= truth.radius["loss"][()] + 2.0**-100
    assert 0 < truth.radius["loss"][()] < 2.0**-1000
    assert not truth.undecided["grad_a"][()] and truth.hi["grad_a"][()] == 47 / 32
    # a rational model's value exactly at a midpoint is exact, not undecided
    poly = ModelSpec(kind="polynomial", polynomial=1)
    exact = model_truth(build_plan(poly, 1, 1, 1, "sum", "0.125"),
                        {"X": np.array([[1.0]]), "y": np.array([[81 / 64]]), "W": np.array([[2.0]]), "b": np.array([0.0])},
                        FLOAT16)
    assert exact.hi["loss"][()] == 2209 / 4096 and not exact.undecided["loss"][()]


# ------------------------------------------------------------------ inputs and held constants


def test_held_lr_is_rounded_to_the_dtype_and_inputs_checked() -> None:
    spec = ModelSpec()
    vals = {"X": np.array([[1.0]]), "y": np.array([[0.0]]), "W": np.array([[1.0]]), "b": np.array([0.0])}
    g = build_plan(spec, 1, 1, 1, "sum", "0.1")
    t16 = model_truth(g, vals, FLOAT16)
    lr16 = round_fraction(Fraction(1, 10), FLOAT16)
    assert t16.hi["W"][0, 0] == float(1 - lr16 * 2)  # grad_W = 2 r x = 2
    with pytest.raises(ValueError, match="input X: values are not float16"):
        model_truth(g, {**vals, "X": np.array([[0.1]])}, FLOAT16)
    with pytest.raises(KeyError, match="'b'"):
        model_truth(g, {k: v for k, v in vals.items() if k != "b"}, FLOAT16)
    assert t16.node_values[g.outputs["loss"]] == 1.0


def test_node_values_match_float64_evaluation() -> None:
    """node_values is the nearest float64 of each node's exact value: close to a float64 evaluation."""
    from harness.models.graph import evaluate_float64

    spec = ModelSpec(kind="mlp", hidden=(4,), activation="gelu")
    vals = _values(spec, 5, 3, 2, seed=5)
    g = build_plan(spec, 5, 3, 2, "mean", "0.5")
    truth = model_truth(g, vals, FLOAT64)
    ref = evaluate_float64(g, vals)
    assert len(truth.node_values) == len(g.nodes)
    for nv, rv, node in zip(truth.node_values, ref, g.nodes, strict=True):
        assert nv.shape == node.shape
        np.testing.assert_allclose(nv, rv, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("fmt_name", ["float64", "float32", "bfloat16", "float16"])
def test_straddle_filter_agrees_with_exact_rounding(fmt_name: str) -> None:
    """The truth's float64 filter never clears a ball that straddles a rounding boundary: balls
    placed at, just inside and just outside boundaries (midpoints, powers of two, the subnormal
    range, the overflow threshold) agree with rounding both ends exactly."""
    fmt = get_format(fmt_name)
    rng = np.random.default_rng(42)
    p = fmt.precision
    anchors: list[Fraction] = []
    for e in [fmt.emin - p + 1, fmt.emin - 1, fmt.emin, fmt.emin + 1, -3, 0, 1, 7, fmt.emax]:
        q = Fraction(2) ** (max(e, fmt.emin) - p + 1)
        for m in [2 ** (p - 1), 2 ** (p - 1) + 1, 2**p - 1, 2 ** (p - 1) + 12345 % 2 ** (p - 1)]:
            v = m * q
            anchors += [v, v + q / 2, v - q / 2, v - q / 4]
    anchors.append(Fraction(fmt.max_finite) + Fraction(2) ** (fmt.emax - p) )  # overflow threshold
    parts: list[tuple[int, int, int, int]] = []
    for a in anchors:
        for sgn in (1, -1):
            for shift_bits in (None, 30, 60, 90):
                base = sgn * a
                mid = base if shift_bits is None else base + sgn * Fraction(int(rng.integers(-4, 5)), 2**shift_bits) * abs(a or 1)
                for rad_bits in (0, 20, 40, 70, 100, 120):
                    rad = Fraction(0) if rad_bits == 0 else abs(a or Fraction(1)) / 2**rad_bits
                    rad = Fraction(int(rad * 2**1200) + 1, 2**1200) if rad else rad  # dyadic, like Arb's
                    m = Fraction(mid)
                    parts.append((m.numerator, m.denominator, rad.numerator, rad.denominator))
    got = oracle_mod.straddle_flags(parts, fmt)
    want = [straddles_rounding_boundary(Fraction(a, b), Fraction(c, d), fmt) for a, b, c, d in parts]
    assert got.tolist() == want
    assert sum(want) > 50 and len(want) - sum(want) > 50  # both outcomes exercised


_MP_ACT = {  # PyTorch's definitions and their derivatives, written out for mpmath
    "tanh": (mpmath.tanh, lambda z: mpmath.sech(z) ** 2),
    "sigmoid": (lambda z: 1 / (1 + mpmath.exp(-z)), lambda z: mpmath.exp(-z) / (1 + mpmath.exp(-z)) ** 2),
    "softplus": (lambda z: mpmath.log(1 + mpmath.exp(z)), lambda z: 1 / (1 + mpmath.exp(-z))),
    "gelu": (lambda z: z / 2 * mpmath.erfc(-z / mpmath.sqrt(2)),
             lambda z: mpmath.erfc(-z / mpmath.sqrt(2)) / 2 + z * mpmath.exp(-z * z / 2) / mpmath.sqrt(2 * mpmath.pi)),
}


@pytest.mark.parametrize(("act", "z"), [("tanh", 19.0), ("tanh", 400.0), ("sigmoid", -20.0), ("sigmoid", 60.0),
                                        ("softplus", 40.0), ("softplus", -40.0), ("gelu", -12.0), ("gelu", -40.0)])
@mpmath.workdps(500)
def test_delicate_regimes_against_mpmath(act: str, z: float) -> None:
    """Saturation, large softplus arguments, GELU's far tail: one unit, x = z, W1 = W2 = 1, b = 0,
    y = 1/2: grad_b1 = 2 (act(z) - 1/2) act'(z), evaluated by mpmath at 500 digits; the truth's
    hi + lo within its radius (plus float64's underflow for values below its range), decided."""
    f, df = _MP_ACT[act]
    spec = ModelSpec(kind="mlp", hidden=(1,), activation=act)
    vals = {"X": np.array([[z]]), "y": np.array([[0.5]]), "W1": np.array([[1.0]]), "b1": np.array([0.0]),
            "W2": np.array([[1.0]]), "b2": np.array([0.0])}
    truth = model_truth(build_plan(spec, 1, 1, 1, "sum", "0.125"), vals, FLOAT64)
    zm = mpmath.mpf(z)
    want = {"loss": (f(zm) - mpmath.mpf(0.5)) ** 2, "grad_b1": 2 * (f(zm) - mpmath.mpf(0.5)) * df(zm),
            "grad_W2": 2 * (f(zm) - mpmath.mpf(0.5)) * f(zm)}
    for q, w in want.items():
        idx = (0,) * truth.hi[q].ndim
        got = _value(truth, q, idx)
        tol = mpmath.mpf(float(truth.radius[q][idx])) + abs(w) * mpmath.mpf(2) ** -100 + mpmath.mpf(2) ** -1074
        assert abs(got - w) <= tol, (q, got, w)
        assert not truth.undecided[q][idx], q


def test_kink_in_an_expression_with_a_transcendental_factor() -> None:
    """Abs(x1 - a) exp(c): the ball arithmetic sees x1 - a exactly 0 in row 0 (a kink), so grad_a
    (through Abs's derivative) is flagged and takes sign(0) = 0 there; grad_c and the loss do not
    depend on the derivative at the kink."""
    spec = ModelSpec(kind="expression", expression="Abs(x1 - a) * exp(c)", parameters=("a", "c"))
    vals = {"X": np.array([[1.0], [3.0]]), "y": np.array([[0.0], [1.0]]), "a": np.array(1.0), "c": np.array(0.0)}
    truth = model_truth(build_plan(spec, 2, 1, 1, "sum", "0.125"), vals, FLOAT32)
    assert truth.method.startswith("arb-ball")
    assert truth.kink["grad_a"][()] and truth.kink["a"][()]
    assert not truth.kink["grad_c"][()] and not truth.kink["loss"][()]
    # row 0: r = 0; row 1: r = 2 - 1 = 1, d/da |x1 - a| = -1: grad_a = 2 * 1 * (-1) * e^0 = -2 exactly
    assert truth.hi["grad_a"][()] == -2.0 and truth.hi["grad_c"][()] == 4.0  # grad_c = sum 2 r |x1 - a| e^c = 2 * 1 * 2
    assert cross_check(spec, 2, 1, 1, "sum", vals, lr="0.125", fmt_name="float32") == []


def test_cross_check_at_relu_kinks() -> None:
    """SymPy's diff of the whole loss at z = 0 takes torch's convention (Piecewise branch order),
    so the kink elements are compared too and agree with the truth."""
    spec = ModelSpec(kind="mlp", hidden=(2,), activation="relu")
    vals = {"X": np.array([[1.0], [2.0]]), "y": np.array([[1.0], [0.0]]), "W1": np.array([[1.0, -1.0]]),
            "b1": np.array([-1.0, 2.0]), "W2": np.array([[2.0], [3.0]]), "b2": np.array([-1.0])}
    truth = model_truth(build_plan(spec, 2, 1, 1, "sum", "0.125"), vals, FLOAT64)
    assert truth.kink["grad_W1"].all()
    assert cross_check(spec, 2, 1, 1, "sum", vals, lr="0.125") == []


def test_undefined_values() -> None:
    """log of a negative parameter: the ball is not finite, the truth says NaN and undecided; an
    exact division by zero in a rational model is an error naming the node."""
    spec = ModelSpec(kind="expression", expression="log(a) * x1", parameters=("a",))
    vals = {"X": np.array([[1.0]]), "y": np.array([[0.0]]), "a": np.array(-1.0)}
    truth = model_truth(build_plan(spec, 1, 1, 1, "sum", "0.125"), vals, FLOAT32)
    assert np.isnan(truth.hi["loss"][()]) and truth.undecided["loss"][()] and truth.radius["loss"][()] == np.inf
    rational = ModelSpec(kind="expression", expression="x1 / a", parameters=("a",))
    with pytest.raises(ValueError, match="division by an exact zero"):
        model_truth(build_plan(rational, 1, 1, 1, "sum", "0.125"), {**vals, "a": np.array(0.0)}, FLOAT32)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("fmt_name", ["float32", "float16"])
def test_linear_model_matches_the_linear_path_oracle(reduction: str, fmt_name: str) -> None:
    """The linear model through the plan and through today's exact oracle (harness.oracle, its own
    SymPy derivation and integer arithmetic) give the same double-doubles, with the same
    dtype-rounded learning rate."""
    from harness.oracle import exact_inputs_from_floats, exact_step

    fmt = get_format(fmt_name)
    spec = ModelSpec()
    vals = _values(spec, 7, 3, 2, seed=21, fmt_name=fmt_name)
    lr = Fraction(1, 10)
    truth = model_truth(build_plan(spec, 7, 3, 2, reduction, lr), vals, fmt)
    lr_held = round_fraction(lr, fmt)
    assert isinstance(lr_held, Fraction)
    ref = exact_step(exact_inputs_from_floats(vals), lr_held, reduction, method="exact-rational")
    for q in ("loss", "grad_W", "grad_b", "W", "b"):
        hi, lo = ref.values[q].to_hi_lo()
        np.testing.assert_array_equal(truth.hi[q], hi, err_msg=q)
        np.testing.assert_array_equal(truth.lo[q], lo, err_msg=q)
