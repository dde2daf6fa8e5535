"""The public array functions of the oracle and the error model on input outside their contracts: each raises a
ValueError that names the array, where it used to crash the process or return a wrong value (found by an adversarial
review of the compiled kernels, which index arrays by the shapes of others and check no bounds). The runner never
passes such input (cases are checked when built, results reshaped when read); these functions are public."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from harness import fastexact
from harness.bounds import step_bounds
from harness.exact import FloatInts, ScaledInts
from harness.floats import get_format
from harness.oracle import exact_step

B = fastexact.B


def _step(n: int, d: int, k: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"X": rng.standard_normal((n, d)), "y": rng.standard_normal((n, k)), "W": rng.standard_normal((d, k)),
            "b": rng.standard_normal(k)}


@pytest.mark.parametrize(("name", "shape", "message"), [
    ("y", (2, 2), "y has shape"),  # X W is (4, 1): 4 elements, as many as y's, read as (2, 2) before
    ("y", (4, 2), "y has shape"),
    ("W", (3, 1), "W has shape"),
    ("b", (2,), "b has shape"),
    ("X", (8,), "X must be 2-D"),
])
def test_oracle_shapes_that_do_not_agree_raise(name, shape, message):
    arrs = {"X": np.arange(8.0).reshape(4, 2), "y": np.zeros((4, 1)), "W": np.ones((2, 1)), "b": np.zeros(1)}
    arrs[name] = np.zeros(shape) if name != "X" else np.arange(8.0)
    for call in (fastexact.residual_digits, fastexact.exact_parts, fastexact.step_parts):
        with pytest.raises(ValueError, match=message):
            call(arrs["X"], arrs["y"], arrs["W"], arrs["b"])


def test_oracle_takes_b_as_a_column_or_a_row():
    arrs = _step(50, 3, 2)
    want = fastexact.residual_digits(arrs["X"], arrs["y"], arrs["W"], arrs["b"])[2]
    for b in (arrs["b"].reshape(2, 1), arrs["b"].reshape(1, 2)):
        assert np.array_equal(fastexact.residual_digits(arrs["X"], arrs["y"], arrs["W"], b)[2], want)


@pytest.mark.parametrize(("key", "shape", "message"), [
    ("y", (1, 2), "y has shape"),  # broadcast by NumPy, read past its end by the compiled partial sums before
    ("b", (1,), "b has shape"),
    ("W", (2, 2), "W has shape"),
    ("residual", (1, 2), "residual has shape"),
])
def test_step_bounds_shapes_that_do_not_agree_raise(key, shape, message):
    n, d, k = 20_000, 1, 2  # compiled path (N*D*K >= KERNEL_MIN_WORK): a wrong expected loss bound (460.7, not 6.53) before
    inputs = {"X": np.ones((n, d)), "y": np.ones((n, k)), "W": np.ones((d, k)), "b": np.ones(k)}
    residual = np.zeros((n, k))
    if key == "residual":
        residual = np.zeros(shape)
    else:
        inputs[key] = np.ones(shape)
    exact = {"loss": np.array(1.0), "grad_W": np.ones((d, k)), "grad_b": np.ones(k), "W": np.ones((d, k)), "b": np.ones(k)}
    with pytest.raises(ValueError, match=message):
        step_bounds(inputs, residual, exact, lr=0.1, reduction="sum", fmt=get_format("float32"))


def test_step_bounds_reads_b_as_a_column_as_it_reads_a_vector():
    arrs = _step(64, 3, 2, seed=4)
    R = arrs["X"] @ arrs["W"] + arrs["b"] - arrs["y"]
    exact = {"loss": np.array(float((R * R).sum())), "grad_W": 2 * arrs["X"].T @ R, "grad_b": 2 * R.sum(axis=0),
             "W": arrs["W"], "b": arrs["b"]}
    kw = {"lr": 0.01, "reduction": "sum", "fmt": get_format("float32")}
    want = step_bounds(arrs, R, exact, **kw)
    got = step_bounds({**arrs, "b": arrs["b"].reshape(2, 1)}, R, exact, **kw)
    for q in want.rigorous:
        assert np.array_equal(got.rigorous[q], want.rigorous[q]) and np.array_equal(got.expected[q], want.expected[q])


def test_digits_over_a_scale_above_the_lowest_bit_raise():
    """Only an assert guarded it: under ``python -O`` the kernel wrote past its buffer (free(): invalid pointer)."""
    with pytest.raises(ValueError, match="not an integer"):
        fastexact.digits(np.array([1.5, 0.75]), 0)
    with pytest.raises(ValueError, match="not an integer"):
        fastexact.digits_matrix(np.array([[1.5]]), 0, low=-2, top=1.5)


@pytest.mark.parametrize("q", [-100, -60, -21, -22, -52])
def test_digits_over_a_scale_far_below_the_lowest_bit_decode_to_the_value(q):
    """Zero digits below the first nonzero one (``q`` more than B bits under the lowest set bit): the kernel returned
    the digits after them, while the count included them (1.0 decoded as 5.2e-26 for q = -100)."""
    x = np.array([[1.0, -3.5, 2.0**40 + 1, 0.0]])
    out, S = fastexact.digits_matrix(x, q)
    assert out.shape == (S * x.shape[1], 1)  # plane-major, transposed: digit s of x[0, j] at [s * cols + j, 0]
    for j, v in enumerate(x[0]):
        value = sum(Fraction(int(out[s * x.shape[1] + j, 0])) * 2 ** (B * s) for s in range(S)) * Fraction(2) ** q
        assert value == Fraction(v)
    d = fastexact.digits(x, q)
    assert [sum(Fraction(int(d[s, 0, j])) * 2 ** (B * s) for s in range(len(d))) * Fraction(2) ** q
            for j in range(4)] == [Fraction(v) for v in x[0]]


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 3), (2, 0, 4)])
def test_digits_of_an_empty_array_are_one_plane_of_its_shape(shape):
    """``digits`` of an array without elements (helper-68: a last dimension of 0 raised ValueError from a reshape)."""
    d = fastexact.digits(np.zeros(shape), 0)
    assert d.shape == (1, *shape)


@pytest.mark.parametrize("rows", [1, 1023, 1024, 1025, 2100])
def test_digits_matrix_is_plane_major_and_transposed_across_row_blocks(rows):
    """Every digit at ``[s * cols + j, i]``, for row counts around the kernel's 1024-row blocks (a block's last rows
    written into the wrong columns, or left unwritten, would decode to another value)."""
    from harness.slicekernels import DIGIT_ROWS

    assert DIGIT_ROWS == 1024
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, 3)) * 2.0 ** rng.integers(-40, 41, (rows, 3))
    x[rows // 2, 1] = 0.0
    q = int(fastexact.float_range(x)[0])
    out, S = fastexact.digits_matrix(x, q)
    assert out.shape == (S * 3, rows)
    for i in range(rows):
        for j in range(3):
            value = sum(Fraction(int(out[s * 3 + j, i])) * 2 ** (B * s) for s in range(S)) * Fraction(2) ** q
            assert value == Fraction(float(x[i, j])), (i, j)


def test_digits_matrix_rejects_a_non_finite_top():
    with pytest.raises(ValueError, match="NaN or an infinite"):
        fastexact.digits_matrix(np.array([[1.0, math.inf]]), -52, low=-52, top=math.inf)


def test_carry_within_its_limit_is_exact_and_beyond_it_raises():
    lim = fastexact.CARRY_LIMIT
    d = np.array([[lim - 1, -(lim - 1), 5], [lim - 1, 7, -(lim - 1)], [0, 0, 0]], dtype=np.int64)
    out = fastexact.carry(d)
    for j in range(3):
        want = sum(int(d[u, j]) << (B * u) for u in range(3))
        got = sum(int(out[u, j]) << (B * u) for u in range(len(out)))
        assert got == want
        assert all(0 <= int(out[u, j]) < 1 << B for u in range(len(out) - 1)) and int(out[-1, j]) in (0, -1)
    for bad in (lim, -lim, np.iinfo(np.int64).max, np.iinfo(np.int64).min):
        with pytest.raises(ValueError, match="overflow int64"):
            fastexact.carry(np.array([[bad], [bad], [0]], dtype=np.int64))


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_values_have_no_exact_value(bad):
    ints = np.empty(1, dtype=object)
    ints[0] = 3
    with pytest.raises(ValueError, match="NaN or an infinite"):
        fastexact.plus_floats(ints, 0, (np.array([bad]),))  # returned -1023 for inf before
    inputs = {"X": FloatInts(np.array([[bad]])), "y": FloatInts(np.zeros((1, 1))), "W": FloatInts(np.ones((1, 1))),
              "b": FloatInts(np.zeros(1))}
    for method in (None, "exact-rational"):  # the rational path read inf as -1023 before
        with pytest.raises(ValueError, match="NaN or inf"):
            exact_step(inputs, Fraction(1, 10), "sum", method=method)


def test_from_floats_refuses_what_float64_would_round():
    with pytest.raises(ValueError, match="complex"):
        ScaledInts.from_floats(np.array([1 + 2j]))
    with pytest.raises(ValueError, match="cannot hold exactly"):
        ScaledInts.from_floats(np.array([2**53 + 1], dtype=np.int64))
    with pytest.raises(ValueError, match="cannot hold exactly"):
        ScaledInts.from_floats(np.array([Fraction(1, 3)], dtype=object))
    if np.finfo(np.longdouble).nmant > 52:  # x86: 64-bit significand
        with pytest.raises(ValueError, match="cannot hold exactly"):
            ScaledInts.from_floats(np.array([1], dtype=np.longdouble) + np.longdouble(2.0) ** -60)
        assert ScaledInts.from_floats(np.array([0.5, -3.0], dtype=np.longdouble)).to_fractions().tolist() == [
            Fraction(1, 2), Fraction(-3)]
    exact = ScaledInts.from_floats(np.array([2**53, -7], dtype=np.int64)).to_fractions().tolist()
    assert exact == [Fraction(2**53), Fraction(-7)]
    assert ScaledInts.from_floats(np.array([Fraction(1, 2)], dtype=object)).to_fractions().tolist() == [Fraction(1, 2)]
