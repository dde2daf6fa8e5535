"""helper-180: false passes of SGD (momentum, Nesterov, dampening, weight decay, maximize) near the subnormals.

**The false pass.** The SGD family's bound (:func:`harness.optim.bounds.sgd_bounds`) charged every operation of the
fully expanded update ``sum_i c_i x_i`` (``N_ops = T - 1 + sum_i n_i``: 18 for Nesterov with weight decay) a whole
``eta`` (half the subnormal spacing) at the parameter's level, times the product of the hyper-parameters above 1. It
counted the learning rate's multiplication once per term (six times) and every underflow inside the direction
``D = d + mu buf`` as if it reached the parameter unscaled, where it is multiplied by ``lr`` first. In float16's
subnormals (spacing ``2**-24``) that is 9 spacings, and ``mutant-sgd-nesterov-dropped`` (plain momentum although
``nesterov = true``), 6.2 spacings off on ``b`` at step 1 of the case below and 7.8 off elsewhere, passed on every
step (0.986 x the bound); in the case that found it (W = 2**-20, 3 steps) its W at step 3, with a nonzero buffer,
7.8 spacings off, at 0.856 x. Now the underflows are carried through the rule's own association (``Terms.under``: each
product scales an earlier underflow by ``|h| (1 + r_h)(1 + u2)`` and adds ``eta``, each sum adds ``eta``; Higham 2002
sec. 2.1, underflow as an absolute error), plus ``SLACK`` unscaled extra roundings: that mutant is ``disagree``
there at 2.41 and 2.44 x the bound.

**The search** (:func:`test_sgd_near_the_subnormals_search`): one step ``t = 1..5`` of SGD graded given what each
evaluation held (its own parameter and buffer), against an exact rational update written here, over lr, momentum,
dampening, Nesterov, weight decay, maximize, float16, bfloat16 and float32 at their subnormal scales. Correct
evaluations: torch.optim.SGD's for-loop, foreach and fused forms, NumPy's hand step, and steps written here that
round every operation in the dtype, in the rule's association and with ``lr`` distributed over the look-ahead. They
must stay within the rigorous bound (the largest error / bound in a 4,000-example run of the same seed: 0.666 now,
0.661 before, both a momentum buffer's two roundings against its unchanged 3 eta); the wrong ones (Nesterov
dropped, in NumPy and as torch.optim without ``nesterov``, its sign flipped, a buffer started at 0) are tracked
(``target``) to report how close to the bound they pass (in float16's subnormals, at lr <= 1, a passing Nesterov
mutant was up to 10.3 spacings off before and 4.4 now, where the parameter's own roundings allow about that much).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings, target
from hypothesis import strategies as st

import harness
from harness.cases import case_from_arrays
from harness.floats import get_format
from harness.optim.bounds import sgd_bounds
from harness.optim.config import OptimizerConfig
from harness.optim.numpy_steps import numpy_update

U16 = 2.0**-24  # float16's subnormal spacing
CORRECT = ["numpy-optim-sgd", "torch-optim-sgd", "torch-optim-sgd-foreach", "torch-optim-sgd-fused"]


# ------------------------------------------------------------------ the pinned false pass


def _pinned_case() -> harness.Case:
    # X = 1, y = -76 U, W = -99 U, b = 55 U (U = 2**-24): R = 32 U, g_W = g_b = 64 U, all float16 subnormals
    return case_from_arrays("h180-nesterov-subnormal", [[1.0]], [[-76 * U16]], [[-99 * U16]], [55 * U16], lr=0.125,
                            reduction="sum", steps=4, dtypes=["float16"],
                            optimizer={"name": "sgd", "momentum": 0.5, "nesterov": True, "weight_decay": 0.5})


def test_the_pinned_step_is_what_the_docstring_says() -> None:
    # b at step 1, exactly (independent of the harness): d = g + wd b = 64 U + 27.5 U = 91.5 U, buf = d, Nesterov's
    # D = d + mu buf = 137.25 U, b' = 55 U - D / 8 = 37.84375 U; the mutant's D = buf: b' = 55 U - 11.4375 U =
    # 43.5625 U, computed in float32 and rounded to float16's grid of U: 44 U (6.15625 spacings off)
    u = Fraction(U16)
    g = 2 * ((-99 * u + 55 * u) - (-76 * u))
    d = g + Fraction(1, 2) * 55 * u
    exact = 55 * u - Fraction(1, 8) * (d + Fraction(1, 2) * d)
    mutant = 55 * u - Fraction(1, 8) * d
    assert exact == Fraction(3784375, 100000) * u and mutant == Fraction(435625, 10000) * u
    assert float(np.float16(np.float32(mutant))) == 44 * U16
    assert (44 * u - exact) / u == Fraction(615625, 100000)


def test_mutant_nesterov_dropped_in_float16_subnormals_disagrees() -> None:
    recs = harness.verify([_pinned_case()], ["mutant-sgd-nesterov-dropped"], dtypes=["float16"])
    got = {(r.quantity, r.step): r for r in recs}
    b1 = got[("b", 1)]
    assert float(b1.computed) == 44 * U16
    assert float(b1.exact.rstrip(".")) == pytest.approx(37.84375 * U16, rel=1e-15)  # (a 20-digit decimal)
    assert b1.max_ulp_error == pytest.approx(6.15625)
    assert b1.verdict == "disagree", b1.bound_ratio  # (0.986 x the bound before helper-180; 2.4 x now)


def test_mutant_nesterov_dropped_with_a_momentum_buffer_disagrees() -> None:
    # the case of the report that found it: W = 2**-20, X = 1, y = b = 0, lr 0.25, momentum 0.9, weight decay 0.5; at
    # step 3 (buffer nonzero) the mutant's W is -2 U against the exact 5.825 U from what it held (0.856 x the bound
    # before helper-180, 2.44 x now; step 1 disagreed at 1.47 x before too)
    case = case_from_arrays("h180-nesterov-buffer", [[1.0]], [[0.0]], [[2.0**-20]], [0.0], lr=0.25, reduction="sum",
                            steps=3, dtypes=["float16"],
                            optimizer={"name": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 0.5})
    got = {(r.quantity, r.step): r for r in harness.verify([case], ["mutant-sgd-nesterov-dropped"], dtypes=["float16"])}
    # the exact Nesterov step from the mutant's own W, buffer and gradient (independent of the harness's oracle)
    w2, buf2 = (Fraction(float(got[(q, 2)].computed)) for q in ("W", "momentum_buffer_W"))
    g3 = Fraction(float(got[("grad_W", 3)].computed))
    mu, lr, wd = Fraction(0.9), Fraction(1, 4), Fraction(1, 2)
    d = g3 + wd * w2
    exact = w2 - lr * (d + mu * (mu * buf2 + d))
    w3 = got[("W", 3)]
    assert float(w3.computed) == -2 * U16
    assert float(w3.exact.rstrip(".")) == pytest.approx(float(exact), rel=1e-15)
    assert float((exact + 2 * Fraction(U16)) / Fraction(U16)) == pytest.approx(7.825, abs=1e-3)
    assert w3.verdict == "disagree", w3.bound_ratio


def test_correct_steps_agree_on_the_pinned_case() -> None:
    recs = harness.verify([_pinned_case()], CORRECT, dtypes=["float16"])
    assert {r.implementation for r in recs} == set(CORRECT)
    bad = [(r.implementation, r.quantity, r.step, r.bound_ratio) for r in recs if r.verdict != "agree"]
    assert not bad, bad


# ------------------------------------------------------------------ the allowance itself


PLAIN = {"momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0, "maximize": False}


def _underflow_only(opt: OptimizerConfig, t: int, lr: float) -> float:
    """The rigorous bound of W where every input is 0 (no relative term): the underflow allowance alone."""
    z = np.zeros(1)
    state = {} if t == 1 else {"W": {"momentum_buffer": z}}
    return float(sgd_bounds(opt, {"W": z}, {"W": z}, state, t, lr, get_format("float16"))[0]["W"][0])


def test_nesterov_underflow_allowance_is_the_derived_inequality() -> None:
    # float16, t = 1, lr 0.25, momentum 0.5, weight decay 0.5 (normal, held with r = u2), written out by hand:
    # U(wd W) = eta; U(d) = eta (1 + u2) + eta; buf = d; U(mu buf) = mu (1 + u2)^2 U(d) + eta;
    # U(D) = (U(d) + U(mu buf)) (1 + u2) + eta; U(lr D) = lr (1 + u2)^2 U(D) + eta; U(W') = U(lr D)(1 + u2) + eta;
    # the bound min(N_ops eta amp, (U(W') + 2 eta amp)(1 + u2)^2) (1 + 2**-30), N_ops = 12 (terms W, lr g, lr wd W, lr mu g,
    # lr mu wd W: 4 additions, 0 + 1 + 2 + 2 + 3 multiplications). 12 eta is 6 subnormal spacings; this 2.63.
    eta, u2 = 2.0**-25, 2.0**-11 + 2.0**-24 * (1 + 2.0**-11)
    opt = OptimizerConfig("sgd", {**PLAIN, "momentum": 0.5, "nesterov": True, "weight_decay": 0.5})
    ud = eta * (1 + u2) + eta
    umb = 0.5 * (1 + u2) ** 2 * ud + eta
    uD = (ud + umb) * (1 + u2) + eta
    uw = (0.25 * (1 + u2) ** 2 * uD + eta) * (1 + u2) + eta
    amp = 1 + u2 + 2.0**-53  # (amplification: 1 - dampening = 1 held with r = u2 + u64, the one factor not below 1)
    want = min(12 * eta * amp, (uw + 2 * eta * amp) * (1 + u2) ** 2) * (1 + 2.0**-30)
    assert 5.25 * eta < want < 5.26 * eta
    assert _underflow_only(opt, 1, 0.25) == pytest.approx(want, rel=1e-12)


def test_plain_sgd_underflow_allowance_did_not_grow() -> None:
    # W - lr g: one multiplication, one subtraction: 2 eta, as before helper-180 (the rule's association plus SLACK
    # extra roundings would allow 4 eta; the smaller of the two is taken)
    amp = 1 + 2.0**-11 + 2.0**-24 * (1 + 2.0**-11) + 2.0**-53
    assert _underflow_only(OptimizerConfig("sgd", PLAIN), 1, 0.25) == pytest.approx(2 * 2.0**-25 * amp * (1 + 2.0**-30),
                                                                                   rel=1e-12)


# ------------------------------------------------------------------ the search

TORCH_DT = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
#: per dtype, the range of ``e``: elements are integers up to 4096 times ``2**(e - 12)`` (float16: 2**-38..2**-8)
SCALES = {"float16": (-26, -8), "bfloat16": (-135, -115), "float32": (-150, -115)}
N = 5  # elements: fewer than a SIMD block, where CPU fused SGD skips half updates (pytorch/pytorch#191763)


def _exact(opt: OptimizerConfig, w: np.ndarray, g: np.ndarray, buf: np.ndarray | None, t: int,
           lr: float) -> tuple[list[Fraction], list[Fraction] | None]:
    """The exact step of torch.optim.SGD's documented rule from the held float values (rationals)."""
    mu, tau, wd = (Fraction(float(opt[k])) for k in ("momentum", "dampening", "weight_decay"))
    out_w, out_b = [], []
    for i in range(w.size):
        wi, gi = Fraction(float(w[i])), Fraction(float(g[i]))
        d = -gi if opt["maximize"] else gi
        d = d + wd * wi
        if mu != 0:
            b = d if t == 1 else mu * Fraction(float(buf[i])) + (1 - tau) * d  # type: ignore[index]
            out_b.append(b)
            d = d + mu * b if opt["nesterov"] else b
        out_w.append(wi - Fraction(lr) * d)
    return out_w, (out_b if mu != 0 else None)


def _torch_optim(form: str) -> Any:
    def step(opt: OptimizerConfig, w: torch.Tensor, g: torch.Tensor, buf: torch.Tensor | None, t: int,
             lr: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        p = w.clone().requires_grad_(True)
        p.grad = g.clone()
        kw = {"foreach": False} if form == "loop" else {"foreach": True} if form == "foreach" else {"fused": True}
        o = torch.optim.SGD([p], lr=lr, **opt.torch_kwargs(), **kw)
        if buf is not None:
            o.state[p]["momentum_buffer"] = buf.clone()
        o.step()
        nb = o.state[p].get("momentum_buffer") if opt["momentum"] != 0 else None
        return p.detach(), (None if nb is None else nb.detach().clone())
    return step


def _in_dtype(distributed: bool) -> Any:
    """Every operation rounded to the dtype (torch's CPU elementwise ops: one rounding each); ``distributed``:
    ``W - lr d - lr (mu buf)`` for Nesterov's ``W - lr (d + mu buf)``."""
    def step(opt: OptimizerConfig, w: torch.Tensor, g: torch.Tensor, buf: torch.Tensor | None, t: int,
             lr: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        mu, tau, wd = (float(opt[k]) for k in ("momentum", "dampening", "weight_decay"))
        d = -g if opt["maximize"] else g
        if wd != 0:
            d = d + w * wd
        nb = None
        if mu != 0:
            nb = d.clone() if t == 1 or buf is None else buf * mu + d * (1 - tau)
            if opt["nesterov"]:
                if distributed:
                    return w - d * lr - (nb * mu) * lr, nb
                d = d + nb * mu
            else:
                d = nb
        return w - d * lr, nb
    return step


def _numpy(kind: str) -> Any:
    from harness.optim import mutants
    fn = {"numpy": None, "nesterov-dropped": mutants._sgd_no_nesterov, "nesterov-sign": mutants._sgd_nesterov_sign,
          "zero-buffer": mutants._sgd_zero_buffer}[kind]

    def step(opt: OptimizerConfig, w: torch.Tensor, g: torch.Tensor, buf: torch.Tensor | None, t: int,
             lr: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        wn, gn = w.numpy(), g.numpy()
        stn = {} if buf is None else {"momentum_buffer": buf.numpy()}
        nw, new = (numpy_update("sgd", wn, gn, stn, t, lr, opt) if fn is None else fn(wn, gn, stn, t, lr, opt))
        nb = new.get("momentum_buffer")
        return torch.from_numpy(np.asarray(nw)), (None if nb is None else torch.from_numpy(np.asarray(nb)))
    return step


EVALUATIONS = {"torch-loop": _torch_optim("loop"), "torch-foreach": _torch_optim("foreach"),
               "torch-fused": _torch_optim("fused"), "numpy": _numpy("numpy"), "dtype-ops": _in_dtype(False),
               "dtype-ops-distributed": _in_dtype(True)}
def _torch_nesterov_dropped(opt: OptimizerConfig, w: torch.Tensor, g: torch.Tensor, buf: torch.Tensor | None, t: int,
                            lr: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """torch.optim's for-loop SGD with ``nesterov = false``: the bug in bfloat16 too (NumPy has no bfloat16)."""
    return _torch_optim("loop")(OptimizerConfig("sgd", {**opt.args, "nesterov": False}), w, g, buf, t, lr)


MUTANTS = {"nesterov-dropped": _numpy("nesterov-dropped"), "nesterov-sign": _numpy("nesterov-sign"),
           "zero-buffer": _numpy("zero-buffer"), "torch-nesterov-dropped": _torch_nesterov_dropped}


def grade_run(evaluate: Any, opt: OptimizerConfig, dtype: str, w0: np.ndarray, grads: list[np.ndarray],
              lr: float) -> tuple[float, float]:
    """Run ``len(grads)`` steps of ``evaluate`` and grade each against the rigorous bound given what it held.

    Returns ``(largest error / bound, largest error in subnormal spacings where the bound is below 64 of them)`` over
    every step's parameter and buffer (an exact result counts 0).
    """
    fmt = get_format(dtype)
    tdt = TORCH_DT[dtype]
    w = torch.tensor(w0, dtype=torch.float64).to(tdt)
    buf: torch.Tensor | None = None
    worst = spacings = 0.0
    spacing = Fraction(2 * fmt.underflow_quantum)
    for t, g64 in enumerate(grads, start=1):
        g = torch.tensor(g64, dtype=torch.float64).to(tdt)
        wh, gh = w.double().numpy(), g.double().numpy()
        bh = None if buf is None else buf.double().numpy()
        new_w, new_b = evaluate(opt, w, g, buf, t, lr)
        state = {} if bh is None else {"W": {"momentum_buffer": bh}}
        rig, _ = sgd_bounds(opt, {"W": wh}, {"W": gh}, state, t, lr, fmt)
        ex_w, ex_b = _exact(opt, wh, gh, bh, t, lr)
        pairs = [(new_w, ex_w, rig["W"])]
        if ex_b is not None:
            assert new_b is not None
            pairs.append((new_b, ex_b, rig["momentum_buffer_W"]))
        for comp, ex, bound in pairs:
            c = comp.double().numpy()
            for i in range(c.size):
                err = abs(Fraction(float(c[i])) - ex[i])
                if err:
                    if bound[i] < 64 * float(spacing):  # (spacings counted where underflow dominates the bound)
                        spacings = max(spacings, float(err / spacing))
                    worst = max(worst, float(err / Fraction(float(bound[i]))) if bound[i] > 0 else float("inf"))
        w, buf = new_w.to(tdt), (None if new_b is None else new_b.to(tdt))
    return worst, spacings


@st.composite
def sgd_setting(draw: Any) -> tuple[OptimizerConfig, str, np.ndarray, list[np.ndarray], float]:
    dtype = draw(st.sampled_from(sorted(SCALES)))
    lo, hi = SCALES[dtype]
    e = draw(st.integers(lo, hi))
    nesterov = draw(st.booleans())
    mu = draw(st.floats(0.01, 0.999)) if nesterov else draw(st.one_of(st.just(0.0), st.floats(0.01, 0.999)))
    tau = 0.0 if nesterov else draw(st.one_of(st.just(0.0), st.floats(0.0, 1.0)))
    wd = draw(st.one_of(st.just(0.0), st.floats(2.0**-8, 2.0)))
    lr = draw(st.one_of(st.sampled_from([2.0**-k for k in range(0, 9)]), st.floats(2.0**-10, 4.0)))
    opt = OptimizerConfig("sgd", {"momentum": mu, "dampening": tau, "nesterov": nesterov, "weight_decay": wd,
                                  "maximize": draw(st.booleans())})
    steps = draw(st.integers(1, 5))
    ints = st.lists(st.integers(-4096, 4096), min_size=N, max_size=N)
    w0 = np.array(draw(ints), dtype=np.float64) * 2.0 ** (e - 12)
    grads = [np.array(draw(ints), dtype=np.float64) * 2.0 ** (e - 12) for _ in range(steps)]
    return opt, dtype, w0, grads, lr


#: what the search saw (read by the report; the test asserts only on correct evaluations)
SEEN: dict[str, float] = {}


@settings(max_examples=300, deadline=None, database=None)
@given(sgd_setting())
def test_sgd_near_the_subnormals_search(setting: tuple[OptimizerConfig, str, np.ndarray, list[np.ndarray], float]) -> None:
    opt, dtype, w0, grads, lr = setting
    worst = 0.0
    for name, ev in EVALUATIONS.items():
        if name == "numpy" and dtype == "bfloat16":
            continue
        r, _ = grade_run(ev, opt, dtype, w0, grads, lr)
        worst = max(worst, r)
        SEEN[name] = max(SEEN.get(name, 0.0), r)
        assert r <= 1.0, (name, r)
    target(worst, label="correct: error / bound")
    if opt["momentum"] != 0:
        for name, ev in MUTANTS.items():
            if (opt["dampening"] == 0) if name == "zero-buffer" else not opt["nesterov"]:
                continue  # (the mutant is the correct rule there)
            if dtype == "bfloat16" and not name.startswith("torch"):
                continue
            r, sp = grade_run(ev, opt, dtype, w0, grads, lr)
            if r <= 1.0:  # the mutant passes: how close to the bound (its smallest passing margin), how far off
                target(r, label=f"mutant {name} passing: error / bound")
                target(sp, label=f"mutant {name} passing: subnormal spacings off")
                SEEN[f"pass {name}"] = max(SEEN.get(f"pass {name}", 0.0), r)
                SEEN[f"pass {name} spacings"] = max(SEEN.get(f"pass {name} spacings", 0.0), sp)
