"""Issue 14: the ``model`` and ``params`` keys of case files, cases built in code with a model, and
``[[generate]]`` tables with a model (harness.cases, harness.models.generate, cases/models.toml).

Every bad input is one error naming the file, the case and the key (``model.<key>``,
``params.<name>``), and never stops the other cases of its file; the hand-written cases' step is
pinned against values derived by hand (the comments of cases/models.toml), recomputed here in exact
rationals; generation is deterministic per seed, and each regime does what it says (the kink regime's
zeros are checked in exact rationals)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from harness.cases import case_from_arrays, expand_generate_table, load_cases, make_case, model_spec
from harness.errors import CaseFileError, LimitError
from harness.floats import BFLOAT16, FLOAT16, round_to_format
from harness.models.generate import WIDE_WIDTHS, model_values
from harness.models.spec import ACTIVATIONS, ModelSpec

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "cases" / "models.toml"

GOOD_LINEAR = '\n[[case]]\nid = "good-linear"\nX = [[1.0]]\ny = [[3.0]]\nW = [[2.0]]\nb = [0.5]\nlr = "0.1"\n'
GOOD_MODEL = ('\n[[case]]\nid = "good-model"\nmodel = { hidden = [1], activation = "relu" }\nX = [[1.0]]\ny = [[3.0]]\n'
              'params = { W1 = [[2.0]], b1 = [0.5], W2 = [[1.0]], b2 = [0.0] }\nlr = "0.1"\n')
RELU_PARAMS = "{ W1 = [[2.0]], b1 = [0.5], W2 = [[1.0]], b2 = [0.0] }"


def _case(cid: str, **fields: str | None) -> str:
    base: dict[str, str | None] = {"model": '{ hidden = [1], activation = "relu" }', "X": "[[1.0]]", "y": "[[3.0]]",
                                   "params": RELU_PARAMS, "lr": '"0.1"'}
    base.update(fields)
    return f'\n[[case]]\nid = "{cid}"\n' + "".join(f"{k} = {v}\n" for k, v in base.items() if v is not None)


def _load_one_bad(tmp_path: Path, text: str) -> CaseFileError:
    """Load a file with a good linear case, the bad case and a good model case: the good ones load, one error."""
    path = tmp_path / "c.toml"
    path.write_text(GOOD_LINEAR + text + GOOD_MODEL, encoding="utf-8")
    res = load_cases([path])
    assert [c.id for c in res.cases] == ["good-linear", "good-model"], res.errors
    (err,) = res.errors
    assert err.path == str(path) and err.case_id == "bad" and str(err).startswith(str(path))
    assert "bad" in str(err) and "\n" not in str(err)
    return err


# ---------------------------------------------------------------- hostile [[case]] tables

HOSTILE = [
    ({"model": "5"}, "model", "inline table"),
    ({"model": '"tanh"'}, "model", "inline table"),
    ({"model": '{ hidden = "8", activation = "relu" }'}, "model.hidden", "list of hidden widths"),
    ({"model": '{ hidden = [1.5], activation = "relu" }'}, "model.hidden", "integers"),
    ({"model": '{ hidden = [true], activation = "relu" }'}, "model.hidden", "integers"),
    ({"model": '{ hidden = [0], activation = "relu" }'}, "model.hidden", ">= 1"),
    ({"model": '{ hidden = [-3], activation = "relu" }'}, "model.hidden", ">= 1"),
    ({"model": '{ hidden = [1, 2, 3], activation = "relu" }'}, "model.hidden", "1 to 2 hidden widths"),
    ({"model": '{ hidden = [1], activation = "swish" }'}, "model.activation", "swish"),
    ({"model": "{ hidden = [1] }"}, "model.activation", "expected one of"),
    ({"model": "{ hidden = [1], activation = 3 }"}, "model.activation", "expected a string"),
    ({"model": '{ polynomial = 2, activation = "tanh" }'}, "model.activation", "only a model with hidden layers"),
    ({"model": "{ polynomial = 0 }"}, "model.polynomial", "degree from 1 to 8"),
    ({"model": "{ polynomial = 99 }"}, "model.polynomial", "degree from 1 to 8"),
    ({"model": "{ polynomial = 2.5 }"}, "model.polynomial", "integer degree"),
    ({"model": "{ polynomial = true }"}, "model.polynomial", "integer degree"),
    ({"model": '{ hidden = [1], polynomial = 2, activation = "relu" }'}, "model.polynomial", "give one of"),
    ({"model": '{ hidden = [1], activation = "leaky_relu", negative_slope = -0.1 }'}, "model.negative_slope", ">= 0"),
    ({"model": '{ hidden = [1], activation = "leaky_relu", negative_slope = "steep" }'}, "model.negative_slope", "expected a number"),
    ({"model": '{ hidden = [1], activation = "leaky_relu", negative_slope = "nan" }'}, "model.negative_slope", "finite number"),
    ({"model": '{ hidden = [1], activation = "tanh", negative_slope = 0.2 }'}, "model.negative_slope", "only activation"),
    ({"model": '{ hidden = [1], activation = "relu", relu_grad_at_zero = 2 }'}, "model.relu_grad_at_zero", "[0, 1]"),
    ({"model": '{ hidden = [1], activation = "gelu", relu_grad_at_zero = 1 }'}, "model.relu_grad_at_zero", "kink"),
    ({"model": '{ hidden = [1], activation = "relu", bias = "yes" }'}, "model.bias", "true or false"),
    ({"model": '{ hidden = [1], activation = "relu", colour = 1 }'}, "model.colour", "unknown key"),
    ({"model": '{ hidden = [1], activation = "relu", parameters = ["a"] }'}, "model.parameters", "only an expression"),
    ({"model": '{ expression = "a*x1", parameters = ["x2"] }', "params": "{ x2 = 1.0 }"}, "model.parameters", "inputs"),
    ({"model": '{ expression = "y*x1", parameters = ["y"] }', "params": "{ y = 1.0 }"}, "model.parameters", "names the data"),
    ({"model": '{ expression = "a*x1", parameters = ["a", "a"] }', "params": "{ a = 1.0 }"}, "model.parameters", "repeat"),
    ({"model": '{ expression = "a*x1", parameters = [] }', "params": "{}"}, "model.parameters", "at least one"),
    ({"model": '{ expression = "", parameters = ["a"] }', "params": "{ a = 1.0 }"}, "model.expression", "text"),
    ({"model": '{ expression = 5, parameters = ["a"] }', "params": "{ a = 1.0 }"}, "model.expression", "text"),
    ({"model": '{ expression = "a*x1", parameters = ["a"] }', "y": "[[3.0, 1.0]]", "params": "{ a = 1.0 }"},
     "model.expression", "one output"),
    ({"model": '{ expression = "a*x1", parameters = ["a"] }', "params": "{ a = [1.0] }"}, "params.a", "a number"),
    ({"optimizer": '{ name = "adam" }'}, "optimizer", "plain SGD"),
    ({"params": None}, "params", "missing required key"),
    ({"params": "5"}, "params", "inline table"),
    ({"params": "{ W1 = [[2.0]], b1 = [0.5], W2 = [[1.0]] }"}, "params.b2", "missing parameter b2"),
    ({"params": "{ W1 = [[2.0]], b1 = [0.5], W2 = [[1.0]], b2 = [0.0], W9 = [[1.0]] }"}, "params.W9", "unknown parameter"),
    ({"params": "{ W1 = [[2.0, 1.0]], b1 = [0.5], W2 = [[1.0]], b2 = [0.0] }"}, "params.W1", "shape (1, 1)"),
    ({"params": "{ W1 = [2.0], b1 = [0.5], W2 = [[1.0]], b2 = [0.0] }"}, "params.W1", "shape (1, 1)"),
    ({"params": '{ W1 = [["abc"]], b1 = [0.5], W2 = [[1.0]], b2 = [0.0] }'}, "params.W1", "abc"),
    ({"params": "{ W1 = [[1e400]], b1 = [0.5], W2 = [[1.0]], b2 = [0.0] }"}, "params.W1", "float64's range"),
    ({"W": "[[2.0]]"}, "W", "give them in params"),
    ({"model": None}, "params", "has no model"),
]


@pytest.mark.parametrize(("fields", "key", "phrase"), HOSTILE, ids=[f"{k}-{i}" for i, (_, k, _p) in enumerate(HOSTILE)])
def test_a_bad_model_case_is_one_error_naming_file_case_and_key_and_the_others_load(tmp_path, fields, key, phrase):
    err = _load_one_bad(tmp_path, _case("bad", **fields))
    assert err.key == key, str(err)
    assert phrase in str(err), str(err)


def test_w_given_both_at_top_level_and_in_params_is_refused(tmp_path):
    err = _load_one_bad(tmp_path, _case("bad", model="{ hidden = [] }", params="{ W = [[2.0]], b = [0.5] }", W="[[2.0]]"))
    assert err.key == "W" and "twice" in str(err)


def test_huge_hidden_widths_are_refused_by_the_limits_before_any_array(tmp_path):
    err = _load_one_bad(tmp_path, _case("bad", model='{ hidden = [1000000000], activation = "relu" }'))
    assert isinstance(err, LimitError) and err.key == "model.hidden" and "--max-elements" in str(err)
    err = _load_one_bad(tmp_path, _case("bad", model='{ hidden = [4000, 4000], activation = "tanh" }'))
    assert isinstance(err, LimitError) and err.key == "model.hidden"


def test_a_huge_width_in_a_generate_table_is_refused_naming_the_table(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text('[[generate]]\nname = "big"\nseed = 1\nshapes = [[4, 2, 1]]\nmodel = { hidden = [100000000], activation = "tanh" }\n'
                    + GOOD_MODEL, encoding="utf-8")
    res = load_cases([path])
    assert [c.id for c in res.cases] == ["good-model"]
    (err,) = res.errors
    assert isinstance(err, LimitError) and err.case_id == "[[generate]] big" and err.key == "model.hidden"


# ---------------------------------------------------------------- the forms that are accepted


def test_a_linear_or_polynomial_model_takes_w_and_b_at_top_level_or_in_params(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        _case("top", model="{ hidden = [] }", params=None, W="[[2.0]]", b="[0.5]")
        + _case("inparams", model="{}", params="{ W = [[2.0]], b = [0.5] }")
        + _case("poly", model="{ polynomial = 2 }", params=None, W="[[2.0], [1.0]]", b="0.5")
        + _case("nobias", model="{ bias = false }", params="{ W = [[2.0]] }"),
        encoding="utf-8")
    res = load_cases([path])
    assert not res.errors
    top, inparams, poly, nobias = res.cases
    assert top.model == inparams.model == ModelSpec(kind="linear") and top.model.describe() == "linear"
    for c in (top, inparams):
        assert c.written is not None
        assert list(c.values) == ["X", "y", "W", "b"] and c.written["W"][0, 0] == 2 and c.written["b"][0] == Fraction(1, 2)
    assert poly.model == ModelSpec(kind="polynomial", polynomial=2) and poly.values["W"].shape == (2, 1)
    assert nobias.parameter_names == ("W",) and "b" not in nobias.values


def test_values_are_kept_exact_as_written_and_as_float64():
    c = make_case("m", [["0.1", 2]], [[1], [2]][:1], model={"hidden": [2], "activation": "leaky_relu", "negative_slope": "0.2"},
                  params={"W1": [["0.1", 1], [0, "1e-3"]], "b1": ["0.5", 0], "W2": [[1], ["0.3"]], "b2": [0]}, lr="0.1")
    assert c.model is not None and c.model.negative_slope == Fraction(1, 5) and c.shape == (1, 2, 1)
    assert c.written is not None
    assert c.written["W1"][0, 0] == Fraction(1, 10) and c.written["W1"][1, 1] == Fraction(1, 1000)
    assert c.values["W1"][0, 0] == 0.1 and c.values["W2"][1, 0] == 0.3
    assert c.parameter_names == ("W1", "b1", "W2", "b2") and list(c.values) == ["X", "y", "W1", "b1", "W2", "b2"]
    assert c.written_inputs()["b1"][0] == Fraction(1, 2)


def test_make_case_and_case_from_arrays_take_a_model_and_params():
    spec = ModelSpec(kind="mlp", hidden=(3,), activation="tanh")
    params = {"W1": np.ones((2, 3)), "b1": np.zeros(3), "W2": np.ones((3, 2)), "b2": np.zeros(2)}
    X, y = np.ones((4, 2)), np.zeros((4, 2))
    a = case_from_arrays("a", X, y, model=spec, params=params, lr=0.5)
    b = make_case("b", X, y, model=spec.as_table(), params=params, lr=0.5)
    assert a.model == b.model == spec and a.shape == b.shape == (4, 2, 2)
    assert a.written is None and b.written is not None
    for name in ("X", "y", *params):
        assert np.array_equal(a.values[name], b.values[name])
    with pytest.raises(CaseFileError) as e:
        case_from_arrays("c", X, y, model=spec, params={**params, "W2": np.ones((2, 3))}, lr=0.5)
    assert e.value.key == "params.W2" and e.value.case_id == "c"
    with pytest.raises(CaseFileError) as e:
        case_from_arrays("c", X, y, model=spec, params=params, lr=0.5, optimizer={"name": "sgd", "momentum": 0.9})
    assert e.value.key == "optimizer"
    with pytest.raises(CaseFileError) as e:
        case_from_arrays("c", X, y, lr=0.5)  # no model: W and b are required as before
    assert e.value.key == "W"
    linear = case_from_arrays("lin", X, y, np.ones((2, 2)), np.zeros(2), lr=0.5)
    assert linear.model is None and linear.shape == (4, 2, 2) and linear.parameter_names == ("W", "b")


def test_model_spec_passes_none_and_specs_through_and_checks_a_spec():
    def err(key, detail):
        return CaseFileError(detail, path="<memory>", case_id="x", key=key)

    assert model_spec(None, err) is None
    spec = ModelSpec(kind="polynomial", polynomial=3)
    assert model_spec(spec, err) is spec
    assert model_spec(spec.as_table(), err) == spec
    for act in ACTIVATIONS:
        for hidden in ((4,), (4, 3)):
            s = ModelSpec(kind="mlp", hidden=hidden, activation=act)
            assert model_spec(s.as_table(), err) == s  # as_table is the parser's inverse
    with pytest.raises(CaseFileError) as e:
        model_spec(ModelSpec(kind="mlp", hidden=(4,), activation="swish"), err)
    assert e.value.key == "model.activation"


# ---------------------------------------------------------------- the hand-written cases, pinned


def _relu_net_step(c):
    """One SGD step of a one-hidden-layer ReLU net in exact rationals (torch's relu'(0) = 0), written
    independently of the harness: loss, gradients and updated parameters."""
    w = c.written
    X, y, W1, b1, W2, b2 = (w[k] for k in ("X", "y", "W1", "b1", "W2", "b2"))
    n, k = y.shape
    scale = Fraction(1) if c.reduction == "sum" else Fraction(1, n * k)
    Z = X.dot(W1) + b1
    H = np.vectorize(lambda z: z if z > 0 else Fraction(0), otypes=[object])(Z)
    R = H.dot(W2) + b2 - y
    G = 2 * scale * R
    D1 = G.dot(W2.T) * np.vectorize(lambda z: Fraction(1) if z > 0 else Fraction(0), otypes=[object])(Z)
    grads = {"W1": X.T.dot(D1), "b1": D1.sum(axis=0), "W2": H.T.dot(G), "b2": G.sum(axis=0)}
    loss = scale * (R * R).sum()
    return loss, grads, {p: w[p] - c.lr * g for p, g in grads.items()}, Z


def test_the_hand_written_cases_load_with_their_values_and_their_step_is_the_hand_derived_one():
    res = load_cases([MODELS], tier="quick")
    assert not res.errors
    cases = {c.id: c for c in res.cases}
    one, kink = cases["model-relu-1-1-1"], cases["model-relu-kink"]
    assert one.model == kink.model == ModelSpec(kind="mlp", hidden=(1,), activation="relu")
    assert one.lr == Fraction(1, 64) and kink.lr == Fraction(1, 4)
    # model-relu-1-1-1: the comment in cases/models.toml
    loss, grads, new, _ = _relu_net_step(one)
    assert loss == 100
    assert {p: g.tolist() for p, g in grads.items()} == {"W1": [[80]], "b1": [40], "W2": [[100]], "b2": [20]}
    assert {p: v.tolist() for p, v in new.items()} == {"W1": [[Fraction(7, 4)]], "b1": [Fraction(-13, 8)],
                                                       "W2": [[Fraction(7, 16)]], "b2": [Fraction(11, 16)]}
    # every value is exact in float16 (and so in every dtype)
    for v in [*one.values.values(), *(np.array(x, dtype=np.float64) for x in new.values())]:
        assert np.array_equal(round_to_format(v, FLOAT16), v)
    # model-relu-kink
    loss, grads, new, Z = _relu_net_step(kink)
    assert Z.tolist() == [[0], [1]] and loss == 1
    assert {p: g.tolist() for p, g in grads.items()} == {"W1": [[0]], "b1": [0], "W2": [[0]], "b2": [2]}
    assert new["b2"].tolist() == [Fraction(1, 2)] and new["W1"].tolist() == [[1]]


# ---------------------------------------------------------------- generation


TABLE = {"name": "t", "seed": 7, "shapes": [[5, 3, 2], [1, 1, 1]], "reductions": ["sum"],
         "model": {"hidden": [6], "activation": "tanh"}, "regimes": ["normal", "saturate", "kink", "wide"]}


def _expand(table, tier="full"):
    return expand_generate_table(table, path="g.toml", index=0, tier=tier)


def test_generation_is_deterministic_per_seed_and_independent_of_the_other_shapes():
    a, b = _expand(TABLE), _expand(TABLE)
    assert [c.id for c in a] == [c.id for c in b]
    for x, y in zip(a, b, strict=True):
        assert x.values.keys() == y.values.keys() and all(np.array_equal(x.values[k], y.values[k]) for k in x.values)
    other = _expand({**TABLE, "seed": 8})
    assert not np.array_equal(a[0].values["W1"], other[0].values["W1"])
    alone = {c.id: c for c in _expand({**TABLE, "shapes": [[1, 1, 1]]})}
    for c in a:
        if c.id in alone:
            assert all(np.array_equal(c.values[k], alone[c.id].values[k]) for k in c.values)
    assert len(alone) == 4
    # the ids: gen-{name}-{regime}-n{N}-d{D}-k{K}-{reduction}-s{steps}, shape-major like the linear tables
    assert [c.id for c in a][:4] == ["gen-t-normal-n5-d3-k2-sum-s1", "gen-t-saturate-n5-d3-k2-sum-s1",
                                     "gen-t-kink-n5-d3-k2-sum-s1", "gen-t-wide-n5-d3-k2-sum-s1"]
    assert all("model" in c.tags and "generated" in c.tags for c in a)
    # the quick tier: one case per regime x reduction x steps, walking the shapes (harness.cases.quick_pick)
    assert [c.id for c in _expand(TABLE, "quick")] == ["gen-t-normal-n5-d3-k2-sum-s1", "gen-t-saturate-n1-d1-k1-sum-s1",
                                                       "gen-t-kink-n5-d3-k2-sum-s1", "gen-t-wide-n1-d1-k1-sum-s1"]


def test_model_values_have_the_models_shapes_and_glorot_scale():
    spec = ModelSpec(kind="mlp", hidden=(64, 48), activation="gelu")
    v = model_values(spec, "normal", 3, 32, 40, 2)
    assert {k: a.shape for k, a in v.items()} == {"X": (32, 40), "y": (32, 2), "W1": (40, 64), "b1": (64,), "W2": (64, 48),
                                                  "b2": (48,), "W3": (48, 2), "b3": (2,)}
    assert 0.8 < np.std(v["W1"]) / np.sqrt(2 / (40 + 64)) < 1.2 and np.std(v["b1"]) < 0.2
    expr = ModelSpec(kind="expression", expression="a*tanh(w*x1 + c)", parameters=("a", "w", "c"))
    e = model_values(expr, "normal", 3, 8, 1, 1)
    assert [k for k in e] == ["X", "y", "a", "w", "c"] and e["a"].shape == ()
    with pytest.raises(ValueError, match="needs hidden layers"):
        model_values(expr, "saturate", 3, 8, 1, 1)


def _exact(a):
    out = np.empty(a.shape, dtype=object)
    out.flat[:] = [Fraction(x) for x in a.ravel().tolist()]
    return out


@pytest.mark.parametrize("hidden", [(8,), (4, 3)])
def test_the_kink_regime_has_a_pre_activation_exactly_zero_in_every_column(hidden):
    spec = ModelSpec(kind="mlp", hidden=hidden, activation="relu")
    for n, d, k in ((1, 1, 1), (6, 3, 2), (32, 4, 2)):
        v = model_values(spec, "kink", 11, n, d, k)
        for a in v.values():  # integers, exact in every dtype
            assert np.array_equal(a, np.round(a)) and np.max(np.abs(a)) < 256
            assert np.array_equal(round_to_format(a, BFLOAT16), a)
        h = _exact(v["X"])
        for layer in range(1, len(hidden) + 1):
            Z = h.dot(_exact(v[f"W{layer}"])) + _exact(v[f"b{layer}"])
            assert all(any(z == 0 for z in Z[:, j]) for j in range(Z.shape[1])), (layer, Z)
            h = np.vectorize(lambda z: max(z, Fraction(0)), otypes=[object])(Z)


def _pre_activations(spec, v):
    """Every hidden layer's pre-activation in float64 and in float16 arithmetic on the float16-rounded values."""
    act = {"tanh": np.tanh, "sigmoid": lambda z: 1 / (1 + np.exp(-z)), "softplus": lambda z: np.logaddexp(0, z)}[spec.activation]
    out = []
    for dt in (np.float64, np.float16):  # sigmoid's exp(-z) overflows float16 for z < -11.1: 1/(1+inf) = 0, as meant
        h = v["X"].astype(dt)
        for layer in range(1, len(spec.hidden) + 1):
            z = h @ v[f"W{layer}"].astype(dt) + v[f"b{layer}"].astype(dt)
            out.append(z.astype(np.float64))
            with np.errstate(over="ignore"):
                h = act(z)
    return out


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "softplus"])
@pytest.mark.parametrize("exact_inputs", [False, True])
def test_the_saturate_and_large_regimes_put_every_pre_activation_in_their_band(activation, exact_inputs):
    crossed: set[bool] = set()
    below: set[bool] = set()
    for hidden in ((8,), (5, 4)):
        spec = ModelSpec(kind="mlp", hidden=hidden, activation=activation)
        for n, d, k in ((1, 1, 1), (12, 4, 2), (32, 3, 1)):
            sat = model_values(spec, "saturate", 5, n, d, k, exact_inputs=exact_inputs)
            for z in _pre_activations(spec, sat):
                assert np.all(np.abs(z) >= 5.4) and np.all(np.abs(z) <= 13.6), z
            big = model_values(spec, "large", 5, n, d, k, exact_inputs=exact_inputs)
            for z in _pre_activations(spec, big):
                assert np.all(z >= 8.4) and np.all(z <= 39.6), z
                crossed |= {bool(x > 20) for x in z.ravel()}
                below |= {bool(x < 16.6) for x in z.ravel()}  # where softplus' derivative is below 1 in float32
            if exact_inputs:  # exact in every dtype: bfloat16 values, nothing below float16's smallest normal
                for a in [*sat.values(), *big.values()]:
                    assert np.array_equal(round_to_format(a, BFLOAT16), a) and np.array_equal(round_to_format(a, FLOAT16), a)
                    assert np.all((a == 0) | (np.abs(a) >= FLOAT16.min_normal))
    assert crossed == {True, False} and below == {True, False}  # both sides of torch's threshold 20, and below 16.6


def test_the_wide_regime_takes_hidden_widths_beyond_simd_widths():
    one = _expand({**TABLE, "regimes": ["wide"]})
    two = _expand({**TABLE, "regimes": ["wide"], "model": {"hidden": [4, 4], "activation": "gelu"}})
    assert {c.model.hidden for c in one} == {WIDE_WIDTHS[1]} == {(65,)}
    assert {c.model.hidden for c in two} == {WIDE_WIDTHS[2]} == {(33, 17)}
    assert two[0].values["W2"].shape == (33, 17) and "hidden=[33, 17]" in two[0].description


@pytest.mark.parametrize(("change", "key", "phrase"), [
    ({"model": {"polynomial": 2}, "regimes": ["saturate"]}, "regimes", "needs hidden layers"),
    ({"regimes": ["huge"]}, "regimes", "unknown regime"),
    ({"model": {"hidden": [4], "activation": "tanh", "bias": False}, "regimes": ["saturate"]}, "regimes", "bias = false"),
    ({"regimes": ["kink", "kink"]}, "regimes", "more than once"),
    ({"regimes": "kink"}, "regimes", "non-empty list"),
    ({"model": {"hidden": [4], "activation": "swish"}}, "model.activation", "swish"),
    ({"model": {"expression": "a*x1", "parameters": ["a"]}, "regimes": ["normal"]}, "model.expression", "one output"),
    ({"optimizer": {"name": "adam"}}, "optimizer", "plain SGD"),
    ({"exact_inputs": "yes"}, "exact_inputs", "true or false"),
    ({"seed": -1}, "seed", "non-negative"),
    ({"shapes": [[0, 1, 1]]}, "shapes", "positive integers"),
    ({"colour": 1}, "colour", "unknown key"),
])
def test_a_bad_generate_table_with_a_model_names_the_table_and_the_key(change, key, phrase):
    with pytest.raises(CaseFileError) as e:
        _expand({**TABLE, **change})
    assert e.value.key == key and e.value.case_id == "[[generate]] t" and e.value.path == "g.toml", str(e.value)
    assert phrase in str(e.value), str(e.value)


def test_exact_inputs_without_a_model_is_refused():
    table = {k: v for k, v in TABLE.items() if k not in ("model", "regimes")}
    with pytest.raises(CaseFileError) as e:
        _expand({**table, "exact_inputs": True})
    assert e.value.key == "exact_inputs"


# ---------------------------------------------------------------- cases/models.toml


def test_models_toml_covers_every_activation_depth_polynomial_expression_and_regime():
    quick, full = (load_cases([MODELS], tier=t) for t in ("quick", "full"))
    assert not quick.errors and not full.errors
    assert len(quick.cases) == 18 and len(full.cases) == 51
    assert {c.id for c in quick.cases} < {c.id for c in full.cases}
    specs = {c.model for c in full.cases}
    for act in ACTIVATIONS:
        assert {len(s.hidden) for s in specs if s is not None and s.activation == act} == {1, 2}, act
    assert {s.polynomial for s in specs if s is not None and s.kind == "polynomial"} == {2, 3}
    assert any(s is not None and s.kind == "expression" for s in specs)
    gen = [c for c in full.cases if "generated" in c.tags]
    assert {r for c in gen for r in c.tags} >= {"normal", "saturate", "large", "kink", "wide"}
    assert {c.model.activation for c in gen if "saturate" in c.tags} == {"tanh", "sigmoid"}
    assert {c.model.activation for c in gen if "large" in c.tags} == {"softplus"}
    assert {w for c in gen for w in c.model.hidden} >= {17, 33, 65}
    assert max(c.shape[0] for c in full.cases) <= 32 and max(w for s in specs if s for w in s.hidden) <= 65
    assert {c.reduction for c in quick.cases} == {"sum", "mean"}
    assert all(c.model is not None and c.optimizer is None for c in full.cases)


def test_the_cases_listing_shows_each_cases_model(capsys):
    from harness.cli import main

    assert main(["cases", "--cases", str(MODELS)]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert len(lines) == 18 and out.err.strip().splitlines()[-1] == "18 cases"
    (tanh,) = [ln for ln in lines if ln.startswith("gen-tanh-1-saturate-")]
    assert tanh.endswith("model: mlp hidden=[8] tanh")
    (expr,) = [ln for ln in lines if ln.startswith("gen-expr-")]
    assert expr.endswith("model: expression a*tanh(w*x1 + c) in a, w, c")


# ---------------------------------------------------------------- the expression's text (harness.models.symbolic's parser)


@pytest.mark.parametrize(("expression", "phrase"), [
    ("a*x3", "x3"),  # D = 1: only x1 (and x)
    ("a*swish(x1)", "swish"),
    ("__import__('os').system('true')", "expression"),
    ("a*x1 +", "not a formula"),
    ("a.real * x1", "Attribute"),
])
def test_an_expression_that_does_not_parse_is_an_error_naming_model_expression(tmp_path, expression, phrase):
    pytest.importorskip("harness.models.symbolic", reason="the parser is on the m-oracle branch")
    err = _load_one_bad(tmp_path, _case("bad", model=f'{{ expression = "{expression}", parameters = ["a"] }}', params="{ a = 1.0 }"))
    assert err.key == "model.expression" and phrase in str(err), str(err)
    with pytest.raises(CaseFileError) as e:
        _expand({**TABLE, "model": {"expression": expression, "parameters": ["a"]}, "regimes": ["normal"], "shapes": [[4, 1, 1]]})
    assert e.value.key == "model.expression" and e.value.case_id == "[[generate]] t"


def test_a_good_expression_with_two_inputs_loads(tmp_path):
    pytest.importorskip("harness.models.symbolic", reason="the parser is on the m-oracle branch")
    path = tmp_path / "c.toml"
    path.write_text(_case("two", model='{ expression = "a*tanh(w*x1 + c*x2)", parameters = ["a", "w", "c"] }',
                          X="[[1.0, 2.0]]", params="{ a = 1.0, w = 0.5, c = -0.25 }"), encoding="utf-8")
    res = load_cases([path])
    assert not res.errors and res.cases[0].shape == (1, 2, 1) and res.cases[0].written["c"] == Fraction(-1, 4)
