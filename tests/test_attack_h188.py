"""helper-188: realistic training-step bugs that hide from a one-step check (a second campaign after helper-168).

**What it attacks.** Bugs that appear only after the first step (a gradient zeroed on even steps only, ``.grad`` of
b never reset, a per-batch ``StepLR``, results that alias the live parameters or ``.grad``, a stale loss or
gradient, Adam's step counter shared by W and b or frozen at 1, an optimizer re-created every step, Nesterov with
the old buffer, an MLP whose activation derivative or backward weights are cached from step 1), only in some shapes
(X transposed when N = D, grad_b summed over the axis of b's length when N = K, ``F.linear``'s (K, D) convention,
a loss or grad_b wrong only when K > 1, float16 accumulation only when N > 1024, a hidden bias gradient
"unbroadcast" by size) and only in some dtypes (a bfloat16 update truncated, bfloat16 computed in float16, a float16
loss scale that skips steps, float32 master weights truncated to float16, ``nan_to_num`` on float16 gradients).
53 variants were written as plug-ins and run on every case of the full tier (the 639 before the case added
below) in every dtype they support (216,494 + 85,532 records).

**What it found.** 47 bugs are caught (``disagree`` or ``error``) on some shipped case, every one already in the
quick tier; the catalogue below pins each on the smallest case that catches it. A 48th, float16 SGD with float32
master weights (rounded right), is a different algorithm (hidden sub-ULP state), ``disagree`` at 1.07-1.16 times
the rigorous bound of W on 4 case-dtypes from step 2. Five pass every applicable case:

- *a case-file gap, closed here*: an MLP whose hidden bias gradient sums the (N, H) delta over the axis that is not
  b's length (``list(delta.shape).index(H)`` picks axis 0 when N = H) is wrong only when N = H; the one shipped case
  with N = H (``gen-relu-2-kink-n3-d2-k2-mean-s1``, N = H2 = 3) has every hidden delta exactly 0 at ReLU's kink, so
  all 1,638 graded records agreed. ``cases/models.toml``'s ``tanh-square`` table now has the shape ``[3, 3, 2]``
  (N = D = H1 = 3, full tier only; the quick tier's case and every existing case's values unchanged), where the bug
  is ``disagree`` in float64, float32 and float16 (grad_b1 at 4.8e14, 9.0e5 and 114 times the rigorous bound) and
  the three built-in model steps agree in all four dtypes.
- *the step horizon of the case files* (reported, not changed): a learning rate halved from step 9 (linear plain
  SGD: the seed cases have 8 steps, no other more than 3), an Adam ``StepLR(step_size=3)`` stepped per batch (every
  optimizer case has 3 steps) and an MLP ``StepLR(step_size=2)`` per batch (every model case at most 2) change
  nothing a shipped case grades (10,000, 1,046 and 1,775 records, each agree, overflow or unsupported); a case of S
  steps cannot see a bug that starts at step S + 1.
- *not a bug*: Adam computed wholly in float16 for float16 parameters (``eps = 1e-8`` rounds to 0) gave 260 agree
  and 8 overflow records, nothing else: torch.optim's own for-loop Adam rounds the result of every operation to
  float16 too (``eps`` included), so the bounds must admit it.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

import harness
from harness.models.numpy_steps import activation, activation_grad, features, numpy_model_step, weight_layers
from harness.models.step import ModelStepResult
from harness.optim.config import PARAMS, OptimizerStepResult
from harness.optim.numpy_steps import numpy_update
from harness.verdicts import failures

NP = ("float64", "float32", "float16")
BUGS: dict[str, tuple[dict, object]] = {}  # name -> (keyword arguments of harness.implementation, step)


# ---- linear plain SGD in NumPy: the hand step with one hook ---------------------------------------------------------


def _lin(hook):
    """NumPy's hand step; ``hook(ctx)`` may change ``ctx``'s loss, gW, gb, W_new, b_new (ctx: t, X, y, W, b, R, c)."""
    def step(X, y, W, b, *, lr, reduction, steps):
        n, k = y.shape
        dt = X.dtype.type
        c = dt(1.0) if reduction == "sum" else dt(1.0 / (n * k))
        mem = {"W0": W, "b0": b}
        out = []
        for t in range(1, steps + 1):
            R = X @ W + b - y
            ctx = dict(t=t, X=X, y=y, W=W, b=b, R=R, c=c, dt=dt, lr=lr, n=n, k=k, mem=mem, reduction=reduction,
                       loss=c * np.sum(R * R), gW=(dt(2) * c) * (X.T @ R), gb=(dt(2) * c) * R.sum(axis=0),
                       W_new=None, b_new=None)
            hook(ctx)
            Wn = ctx["W_new"] if ctx["W_new"] is not None else W - dt(lr) * ctx["gW"]
            bn = ctx["b_new"] if ctx["b_new"] is not None else b - dt(lr) * ctx["gb"]
            out.append(harness.StepResult(ctx["loss"], ctx["gW"], ctx["gb"], Wn, bn))
            W, b = Wn, bn
        return out
    return step


def _grads_from(ctx, X, y, W, b):
    dt, c = ctx["dt"], ctx["c"]
    R = X @ W + b - y
    return dict(R=R, loss=c * np.sum(R * R), gW=(dt(2) * c) * (X.T @ R), gb=(dt(2) * c) * R.sum(axis=0))


def _x_transposed_when_square(ctx):
    X, W = ctx["X"], ctx["W"]  # "auto-orientation": X read as (D, N) when its first axis has W's row count (N == D)
    ctx.update(_grads_from(ctx, X.T if X.shape[0] == W.shape[0] else X, ctx["y"], W, ctx["b"]))


def _stale_loss(ctx):
    prev, ctx["mem"]["loss"] = ctx["mem"].get("loss"), ctx["loss"]
    if prev is not None:
        ctx["loss"] = prev  # the loss logged one step late


def _set_update(ctx, gW, gb, lr=None, W=None, b=None):
    dt = ctx["dt"]
    f = dt(ctx["lr"] if lr is None else lr)
    ctx["W_new"] = (ctx["W"] if W is None else W) - f * gW
    ctx["b_new"] = (ctx["b"] if b is None else b) - f * gb


def _previous_gradient(ctx):
    mem = ctx["mem"]
    gW, gb = mem.get("gW", ctx["gW"]), mem.get("gb", ctx["gb"])
    mem["gW"], mem["gb"] = ctx["gW"], ctx["gb"]
    _set_update(ctx, gW, gb)  # the update with the gradient kept from the previous iteration


def _loss_mean_over_n(ctx):
    if ctx["reduction"] == "mean":
        ctx["loss"] = np.sum(ctx["R"] * ctx["R"]) / ctx["dt"](ctx["n"])  # divided by N, not N K


def _gb_k_twice(ctx):
    if ctx["reduction"] == "mean" and ctx["k"] > 1:
        ctx["gb"] = ctx["gb"] / ctx["dt"](ctx["k"])


def _fp16_when_n_large(ctx):
    if ctx["n"] > 1024:  # a "fast path" for long batches that accumulates in float16
        X, R, dt, c, h = ctx["X"], ctx["R"], ctx["dt"], ctx["c"], np.float16
        ctx["gW"] = (dt(2) * c) * (X.astype(h).T @ R.astype(h)).astype(dt)
        ctx["gb"] = (dt(2) * c) * R.astype(h).sum(axis=0, dtype=h).astype(dt)


def _skip_small(ctx):
    dt = ctx["dt"]  # a "sparse" update: elements whose |g| is below 1e-3 of the largest keep their value
    for g, p, key in (("gW", "W", "W_new"), ("gb", "b", "b_new")):
        G = ctx[g]
        keep = np.abs(G) >= dt(1e-3) * np.max(np.abs(G))
        ctx[key] = np.where(keep, ctx[p] - dt(ctx["lr"]) * G, ctx[p]).astype(ctx[p].dtype)


def _skip_if_loss_rises(ctx):
    prev, ctx["mem"]["loss"] = ctx["mem"].get("loss"), ctx["loss"]
    if prev is not None and ctx["loss"] > prev:  # a "safeguard": no update on a step whose loss went up
        ctx["W_new"], ctx["b_new"] = ctx["W"], ctx["b"]


def _gb_unbroadcast(ctx):
    R, dt, c = ctx["R"], ctx["dt"], ctx["c"]  # sum_to_shape keeping the first axis of b's length (axis 0 if N == K)
    ctx["gb"] = (dt(2) * c) * R.sum(axis=1 - list(R.shape).index(R.shape[1]))


def _one_short(X, y, W, b, *, lr, reduction, steps):
    return _lin(lambda ctx: None)(X, y, W, b, lr=lr, reduction=reduction, steps=max(steps - 1, 1))  # range(1, steps)


def _initial_logged(X, y, W, b, *, lr, reduction, steps):
    res = _lin(lambda ctx: None)(X, y, W, b, lr=lr, reduction=reduction, steps=steps)
    return [harness.StepResult(res[0].loss, res[0].grad_W, res[0].grad_b, W, b)] + res[:-1]  # "step 0" logged first


LINEAR = {
    "b188-x-transposed-when-n-eq-d": _lin(_x_transposed_when_square),
    "b188-loss-from-previous-step": _lin(_stale_loss),
    "b188-update-applied-to-initial-params": _lin(lambda ctx: _set_update(ctx, ctx["gW"], ctx["gb"], W=ctx["mem"]["W0"],
                                                                          b=ctx["mem"]["b0"])),
    "b188-grad-always-at-initial-params": _lin(lambda ctx: ctx.update(
        {k: v for k, v in _grads_from(ctx, ctx["X"], ctx["y"], ctx["mem"]["W0"], ctx["mem"]["b0"]).items()
         if k in ("gW", "gb")})),
    "b188-mean-loss-over-n-only": _lin(_loss_mean_over_n),
    "b188-gradb-divided-by-k-twice": _lin(_gb_k_twice),
    "b188-targets-stored-as-float16": _lin(lambda ctx: ctx.update(
        _grads_from(ctx, ctx["X"], ctx["y"].astype(np.float16).astype(ctx["dt"]), ctx["W"], ctx["b"]))),
    "b188-lr-warmup-from-step-2": _lin(lambda ctx: ctx["t"] > 1 and _set_update(
        ctx, ctx["gW"], ctx["gb"], lr=ctx["lr"] * min(1.0, (ctx["t"] - 1) / 4))),
    "b188-update-with-previous-gradient": _lin(_previous_gradient),
    "b188-lr-as-float16-constant": _lin(lambda ctx: _set_update(ctx, ctx["gW"], ctx["gb"], lr=float(np.float16(ctx["lr"])))),
    "b188-gradb-unbroadcast-by-size": _lin(_gb_unbroadcast),
    "b188-update-skipped-when-loss-rises": _lin(_skip_if_loss_rises),
    "b188-update-skips-small-gradients": _lin(_skip_small),
    "b188-one-step-short": _one_short,
    "b188-initial-state-logged-as-step-1": _initial_logged,
}
for _name, _fn in LINEAR.items():
    BUGS[_name] = (dict(framework="numpy", dtypes=NP), _fn)
BUGS["b188-float16-accumulation-when-n-gt-1024"] = (dict(framework="numpy", dtypes=("float64", "float32")),
                                                     _lin(_fp16_when_n_large))


# ---- linear plain SGD in torch -------------------------------------------------------------------------------------


def _torch_loop(bug):
    def step(X, y, W, b, *, lr, reduction, steps):
        W = W.detach().clone().requires_grad_(True)
        b = b.detach().clone().requires_grad_(True)
        opt = torch.optim.SGD([W, b], lr=lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5) if bug == "sched" else None
        out = []
        for t in range(1, steps + 1):
            if bug == "zero-even":
                if t % 2 == 0:
                    opt.zero_grad()
            elif bug == "b-accum":
                W.grad = None  # b.grad never reset
            else:
                opt.zero_grad(set_to_none=bug != "alias-grad")
            pred = torch.nn.functional.linear(X, W, b) if bug == "linear" else X @ W + b  # linear: X @ W.T
            loss = torch.nn.functional.mse_loss(pred, y, reduction=reduction)
            loss.backward()
            if bug == "clip":
                torch.nn.utils.clip_grad_norm_([W, b], max_norm=1.0)
            gW, gb = (W.grad, b.grad) if bug == "alias-grad" else (W.grad.clone(), b.grad.clone())
            opt.step()
            if sched is not None:
                sched.step()  # stepped per batch, not per epoch
            keep = (lambda v: v.detach()) if bug == "alias-params" else (lambda v: v.detach().clone())
            out.append(harness.StepResult(loss.detach(), gW, gb, keep(W), keep(b)))
        return out
    return step


for _name, _bug in (("b188-zero-grad-on-even-steps-only", "zero-even"), ("b188-bias-grad-never-reset", "b-accum"),
                    ("b188-steplr-stepped-per-batch", "sched"), ("b188-grad-returned-without-clone", "alias-grad"),
                    ("b188-params-returned-without-clone", "alias-params"), ("b188-clip-grad-norm-left-on", "clip"),
                    ("b188-f-linear-weight-convention", "linear")):
    BUGS[_name] = (dict(framework="torch"), _torch_loop(_bug))


def _torch_bf16(bug):
    """A hand-written torch step; for bfloat16 ``"rtz"`` truncates the float32 update, ``"fp16"`` computes in float16."""
    def step(X, y, W, b, *, lr, reduction, steps):
        n, k = y.shape
        c = 1.0 if reduction == "sum" else 1.0 / (n * k)
        cdt = torch.float16 if bug == "fp16" else X.dtype  # autocast(dtype=float16) for bfloat16 parameters
        out = []
        for _ in range(steps):
            R = X.to(cdt) @ W.to(cdt) + b.to(cdt) - y.to(cdt)
            loss, gW, gb = (c * (R * R).sum()).to(X.dtype), ((2 * c) * (X.to(cdt).T @ R)).to(X.dtype), ((2 * c) * R.sum(0)).to(X.dtype)
            if bug == "rtz":
                def chop(v):
                    return (v.contiguous().view(torch.int32) & ~0xFFFF).view(torch.float32).to(torch.bfloat16)
                Wn, bn = chop(W.float() - lr * gW.float()), chop(b.float() - lr * gb.float())
            else:
                Wn, bn = W - lr * gW, b - lr * gb
            out.append(harness.StepResult(loss, gW, gb, Wn, bn))
            W, b = Wn, bn
        return out
    return step


def _amp_skip(X, y, W, b, *, lr, reduction, steps):
    """float16 with a GradScaler-like loss scale 2**16: a step whose scaled gradients overflow is skipped."""
    scale, out = 2.0**16, []
    for _ in range(steps):
        Wg, bg = W.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
        loss = torch.nn.functional.mse_loss(X @ Wg + bg, y, reduction=reduction)
        (loss * scale).backward()
        gW, gb = Wg.grad / scale, bg.grad / scale
        if torch.isfinite(Wg.grad).all() and torch.isfinite(bg.grad).all():
            W, b = W - lr * gW, b - lr * gb
        else:
            scale /= 2
        out.append(harness.StepResult(loss.detach(), gW, gb, W.clone(), b.clone()))
    return out


def _nan_to_num_grads(X, y, W, b, *, lr, reduction, steps):
    """Overflowed gradients "repaired" with torch.nan_to_num (inf -> the dtype's largest finite value)."""
    W, b = W.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
    out = []
    for _ in range(steps):
        W.grad = b.grad = None
        loss = torch.nn.functional.mse_loss(X @ W + b, y, reduction=reduction)
        loss.backward()
        gW, gb = torch.nan_to_num(W.grad), torch.nan_to_num(b.grad)
        with torch.no_grad():
            W -= lr * gW
            b -= lr * gb
        out.append(harness.StepResult(torch.nan_to_num(loss.detach()), gW, gb, W.detach().clone(), b.detach().clone()))
    return out


def _master_truncated(X, y, W, b, *, lr, reduction, steps):
    """float16 with float32 master weights whose float16 copy is made by chopping (toward zero), not rounding."""
    n, k = y.shape
    h, f = np.float16, np.float32
    c = h(1.0) if reduction == "sum" else h(1.0 / (n * k))

    def down(a):
        r = a.astype(h)
        return np.where(np.abs(r.astype(f)) > np.abs(a), np.nextafter(r, h(0)), r).astype(h)
    mW, mb, out = W.astype(f), b.astype(f), []
    for _ in range(steps):
        W16, b16 = down(mW), down(mb)
        R = X @ W16 + b16 - y
        gW, gb = (h(2) * c) * (X.T @ R), (h(2) * c) * R.sum(axis=0)
        mW, mb = mW - f(lr) * gW.astype(f), mb - f(lr) * gb.astype(f)
        out.append(harness.StepResult(c * np.sum(R * R), gW, gb, down(mW), down(mb)))
    return out


BUGS["b188-bfloat16-update-truncated"] = (dict(framework="torch", dtypes=("bfloat16",)), _torch_bf16("rtz"))
BUGS["b188-bfloat16-computed-in-float16"] = (dict(framework="torch", dtypes=("bfloat16",)), _torch_bf16("fp16"))
BUGS["b188-amp-loss-scale-skips-step"] = (dict(framework="torch", dtypes=("float16",)), _amp_skip)
BUGS["b188-nan-to-num-on-gradients"] = (dict(framework="torch"), _nan_to_num_grads)
BUGS["b188-master-weights-truncated-to-float16"] = (dict(framework="numpy", dtypes=("float16",)), _master_truncated)


# ---- optimizers: torch.optim's rules in NumPy with one bug ----------------------------------------------------------


def _optim(update):
    def step(X, y, W, b, *, lr, reduction, steps, optimizer):
        n, k = y.shape
        dt = X.dtype.type
        c = dt(1.0) if reduction == "sum" else dt(1.0 / (n * k))
        params, state, shared, out = {"W": W, "b": b}, {p: {} for p in PARAMS}, {"t": 0}, []
        for t in range(1, steps + 1):
            R = X @ params["W"] + params["b"] - y
            grads = {"W": (dt(2) * c) * (X.T @ R), "b": (dt(2) * c) * R.sum(axis=0)}
            for p in PARAMS:
                params[p], state[p] = update(p, params[p], grads[p], state[p], t, lr, optimizer, shared)
            out.append(OptimizerStepResult(c * np.sum(R * R), grads["W"], grads["b"], params["W"], params["b"],
                                           {p: dict(state[p]) for p in PARAMS}))
        return out
    return step


def _adam(w, g, st, t, lr, opt, *, t_shift=0, ams_m=False, bc2_nosqrt=False, eps_hat=False, decay_after=False,
          decay_no_lr=False, no_maximize=False, no_decay=False):
    """torch.optim.Adam/AdamW's rule (float32 for float16, as :func:`harness.optim.numpy_steps.numpy_update`) with
    one bug: the bias corrections' t shifted, amsgrad's maximum against m, 1 - beta2^t without its square root, the
    paper's eps-hat form, AdamW's decay after the update or without lr, maximize ignored, no weight decay."""
    dt = w.dtype
    ct = np.float32 if dt == np.float16 else dt.type
    w, g = w.astype(ct), g.astype(ct)
    st = {k: v.astype(ct) for k, v in st.items()}
    kw = opt.torch_kwargs()
    d = -g if (kw["maximize"] and not no_maximize) else g
    b1, b2 = kw["betas"]
    tb = t + t_shift
    wd = 0.0 if no_decay else kw["weight_decay"]
    if wd != 0 and not decay_after:
        if opt.name == "adamw":
            w = w * ct(1 - (1.0 if decay_no_lr else lr) * wd)
        else:
            d = d + ct(wd) * w
    zeros = np.zeros_like(w)
    m = ct(b1) * st.get("exp_avg", zeros) + ct(1 - b1) * d
    v = ct(b2) * st.get("exp_avg_sq", zeros) + ct(1 - b2) * (d * d)
    new = {"exp_avg": m, "exp_avg_sq": v}
    big_v = v
    if kw["amsgrad"]:
        big_v = np.maximum(st.get("max_exp_avg_sq", zeros), m if ams_m else v)
        new["max_exp_avg_sq"] = big_v
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        bc1, bc2 = 1 - b1**tb, 1 - b2**tb
        if eps_hat:
            w = w - ct(lr * math.sqrt(bc2) / bc1) * (m / (np.sqrt(big_v) + ct(kw["eps"])))
        else:
            denom = np.sqrt(big_v) / ct(bc2 if bc2_nosqrt else math.sqrt(bc2)) + ct(kw["eps"])
            w = w - ct(lr / bc1 if bc1 else math.inf) * (m / denom)
    if wd != 0 and decay_after and opt.name == "adamw":
        w = w * ct(1 - lr * wd)
    return w.astype(dt), {k: v.astype(dt) for k, v in new.items()}


def _ad(**flags):
    return lambda p, w, g, st, t, lr, opt, shared: _adam(w, g, st, t, lr, opt, **flags)


def _adam_shared_counter(p, w, g, st, t, lr, opt, shared):
    shared["t"] += 1  # one counter for every parameter: W sees t = 1, 3, 5 and b t = 2, 4, 6
    return numpy_update(opt.name, w, g, st, shared["t"], lr, opt)


def _sgd(p, w, g, st, t, lr, opt, shared, *, reinit=False, old_buf=False, damp_first=False, wd_after=False,
         wd_skip_b=False):
    """torch.optim.SGD's rule with one bug: the buffer restarted every step (the optimizer re-created), Nesterov's
    look-ahead with the previous buffer, the dampening applied at step 1, the decay after the update, none on b."""
    dt = w.dtype
    ct = np.float32 if dt == np.float16 else dt.type
    w, g = w.astype(ct), g.astype(ct)
    st = {k: v.astype(ct) for k, v in st.items()}
    kw = opt.torch_kwargs()
    mu, damp, wd = kw["momentum"], kw["dampening"], 0.0 if (wd_skip_b and p == "b") else kw["weight_decay"]
    d = -g if kw["maximize"] else g
    if wd != 0 and not wd_after:
        d = d + ct(wd) * w
    new = {}
    if mu != 0:
        first = t == 1 or reinit
        buf = (ct(1 - damp) * d if damp_first else d.copy()) if first else ct(mu) * st["momentum_buffer"] + ct(1 - damp) * d
        new["momentum_buffer"] = buf
        d = d + ct(mu) * (st["momentum_buffer"] if (old_buf and not first) else buf) if kw["nesterov"] else buf
    w = w - ct(lr) * d
    if wd != 0 and wd_after:
        w = w - ct(lr * wd) * w
    return w.astype(dt), {k: v.astype(dt) for k, v in new.items()}


def _sg(**flags):
    return lambda p, w, g, st, t, lr, opt, shared: _sgd(p, w, g, st, t, lr, opt, shared, **flags)


def _sgd_buffer_aliases_grad(p, w, g, st, t, lr, opt, shared):
    """torch-style in-place momentum in NumPy: at step 1 the buffer *is* the reported gradient array, then
    ``buf *= mu; buf += d`` in place changes that gradient and every buffer reported before."""
    kw = opt.torch_kwargs()
    if kw["momentum"] == 0 or kw["maximize"] or kw["weight_decay"] != 0:
        return numpy_update("sgd", w, g, st, t, lr, opt)
    dt = w.dtype.type
    if t == 1:
        buf = g
    else:
        buf = st["momentum_buffer"]
        buf *= dt(kw["momentum"])
        buf += dt(1 - kw["dampening"]) * g
    d = g + dt(kw["momentum"]) * buf if kw["nesterov"] else buf
    return (w - dt(lr) * d).astype(w.dtype), {"momentum_buffer": buf}


OPTIM = {
    "b188-adam-step-counter-shared-by-params": (("adam", "adamw"), _adam_shared_counter),
    "b188-adam-bias-correction-t-frozen-at-1": (("adam", "adamw"),
                                                lambda p, w, g, st, t, lr, opt, sh: numpy_update(opt.name, w, g, st, 1, lr, opt)),
    "b188-adam-step-counter-from-0": (("adam", "adamw"), _ad(t_shift=-1)),
    "b188-amsgrad-max-against-m": (("adam", "adamw"), _ad(ams_m=True)),
    "b188-amsgrad-max-not-carried": (("adam", "adamw"), lambda p, w, g, st, t, lr, opt, sh: numpy_update(
        opt.name, w, g, {k: v for k, v in st.items() if k != "max_exp_avg_sq"}, t, lr, opt)),
    "b188-adam-bias-correction2-without-sqrt": (("adam", "adamw"), _ad(bc2_nosqrt=True)),
    "b188-adam-paper-eps-hat-form": (("adam", "adamw"), _ad(eps_hat=True)),
    "b188-adamw-decay-after-update": (("adamw",), _ad(decay_after=True)),
    "b188-adamw-decay-without-lr": (("adamw",), _ad(decay_no_lr=True)),
    "b188-adam-maximize-ignored": (("adam", "adamw"), _ad(no_maximize=True)),
    "b188-adam-no-weight-decay-on-bias": (("adam", "adamw"), lambda p, w, g, st, t, lr, opt, sh: _adam(
        w, g, st, t, lr, opt, no_decay=p == "b")),
    "b188-sgd-optimizer-recreated-each-step": (("sgd",), _sg(reinit=True)),
    "b188-sgd-nesterov-with-old-buffer": (("sgd",), _sg(old_buf=True)),
    "b188-sgd-dampening-at-step-1": (("sgd",), _sg(damp_first=True)),
    "b188-sgd-weight-decay-after-update": (("sgd",), _sg(wd_after=True)),
    "b188-sgd-no-weight-decay-on-bias": (("sgd",), _sg(wd_skip_b=True)),
    "b188-sgd-buffer-aliases-gradient": (("sgd",), _sgd_buffer_aliases_grad),
}
for _name, (_rules, _update) in OPTIM.items():
    BUGS[_name] = (dict(framework="numpy", dtypes=NP, optimizers=_rules), _optim(_update))


# ---- MLPs in NumPy -------------------------------------------------------------------------------------------------


def _mlp(bug):
    """``numpy-model``'s step with one bug: ``"unbroadcast"`` (a hidden bias gradient summed to b's shape by keeping
    the first axis of b's length: the wrong axis when N == H), ``"cached"`` (the activation derivative from step 1's
    forward pass), ``"initial"`` (the backward pass through the initial weights)."""
    def step(X, y, params, *, model, lr, reduction, steps):
        dt = X.dtype.type
        n, d = X.shape
        k = y.shape[1]
        layers = weight_layers(model, model.parameter_names(d, k))
        c = 1.0 if reduction == "sum" else 1.0 / (n * k)
        act = model.activation or ""
        cur, init, first, out = dict(params), dict(params), None, []
        for _ in range(steps):
            hs, zs = [features(X, model)], []
            for i, (wn, bn) in enumerate(layers, start=1):
                zs.append(hs[-1] @ cur[wn] + (cur[bn] if bn is not None else 0))
                if i < len(layers):
                    hs.append(activation(act, zs[-1], model))
            first = first or (zs, hs)
            zd, hd = first if bug == "cached" else (zs, hs)
            R = zs[-1] - y
            delta, grads = dt(2 * c) * R, {}
            for i in range(len(layers), 0, -1):
                wn, bn = layers[i - 1]
                grads[wn] = hs[i - 1].T @ delta
                if bn is not None:
                    if bug == "unbroadcast" and i < len(layers):
                        grads[bn] = delta.sum(axis=1 - list(delta.shape).index(cur[bn].size)).astype(X.dtype)
                    else:
                        grads[bn] = np.sum(delta, axis=0, dtype=X.dtype)
                if i > 1:
                    back = init[wn] if bug == "initial" else cur[wn]
                    delta = (delta @ back.T) * activation_grad(act, zd[i - 2], hd[i - 1], model)
            new = {p: (cur[p] - dt(lr) * grads[p]).astype(X.dtype, copy=False) for p in cur}
            out.append(ModelStepResult(loss=np.asarray(dt(c) * np.sum(R * R, dtype=X.dtype), dtype=X.dtype),
                                       grads=grads, params=new))
            cur = dict(new)
        return out
    return step


def _mlp_steplr(X, y, params, *, model, lr, reduction, steps):
    out, cur = [], dict(params)
    for t in range(1, steps + 1):  # StepLR(step_size=2) stepped per batch: lr / 2 from step 3
        out.append(numpy_model_step(X, y, cur, model, lr * (0.5 if t >= 3 else 1.0), reduction))
        cur = dict(out[-1].params)
    return out


BUGS["b188-mlp-hidden-bias-unbroadcast-by-size"] = (dict(framework="numpy", dtypes=NP, models=("mlp",)), _mlp("unbroadcast"))
BUGS["b188-mlp-activation-derivative-cached-from-step-1"] = (dict(framework="numpy", dtypes=NP, models=("mlp",)), _mlp("cached"))
BUGS["b188-mlp-backward-with-initial-weights"] = (dict(framework="numpy", dtypes=NP, models=("mlp",)), _mlp("initial"))
BUGS["b188-mlp-steplr-2-per-batch"] = (dict(framework="numpy", dtypes=NP, models=("mlp",)), _mlp_steplr)


@pytest.fixture(scope="module", autouse=True)
def _registered():
    """Every bug registered (``correct=False``) while this module runs, and taken out after: left in the registry the
    optimizer and model bugs would count among the mutants other tests check are all caught."""
    from harness.implementations import REGISTRY

    for name, (kw, fn) in BUGS.items():
        harness.implementation(name, correct=False, **kw)(fn)
    yield
    for name in BUGS:
        REGISTRY.pop(name, None)


@functools.cache
def _cases(path: str) -> dict[str, harness.Case]:
    from harness.api import cases_dir
    from harness.cases import as_cases

    return {c.id: c for c in as_cases(cases_dir() / path)}


def _records(impl: str, path: str, case_id: str, dtype: str) -> list[harness.Record]:
    return harness.verify([_cases(path)[case_id]], [impl], dtypes=[dtype])


# ---- the case-file gap: N == H ------------------------------------------------------------------------------------

SQUARE = "gen-tanh-square-normal-n3-d3-k2-sum-s1"  # N = D = H1 = 3 (added by helper-188)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_a_hidden_bias_gradient_summed_over_the_wrong_axis_is_caught_where_n_equals_h(dtype):
    recs = {r.quantity: r for r in _records("b188-mlp-hidden-bias-unbroadcast-by-size", "models.toml", SQUARE, dtype)}
    assert recs["grad_b1"].verdict == "disagree" and recs["b1"].verdict == "disagree", {q: r.verdict for q, r in recs.items()}
    assert {q for q, r in recs.items() if r.verdict != "agree"} == {"grad_b1", "b1"}  # every other quantity right


def test_the_only_other_n_equals_h_case_has_every_hidden_gradient_zero():
    # relu-2's N = H2 = 3 case sits at ReLU's kink: the hidden deltas are exactly 0, so the wrong axis sums zeros
    recs = _records("b188-mlp-hidden-bias-unbroadcast-by-size", "models.toml", "gen-relu-2-kink-n3-d2-k2-mean-s1", "float64")
    assert not failures(recs)
    assert {r.quantity: r.computed for r in recs if r.quantity in ("grad_b1", "grad_b2")} == {"grad_b1": "0.0", "grad_b2": "0.0"}


# ---- the catalogue: each bug on the smallest shipped case that catches it -------------------------------------------

CATALOGUE = [
    ("b188-x-transposed-when-n-eq-d", "generated.toml", "gen-grid-tiny-n2-d2-k3-sum-s1", "float32"),
    ("b188-loss-from-previous-step", "semantics.toml", "semantics-below-resolution", "float32"),
    ("b188-update-applied-to-initial-params", "semantics.toml", "semantics-below-resolution", "float32"),
    ("b188-grad-always-at-initial-params", "semantics.toml", "semantics-below-resolution", "float32"),
    ("b188-mean-loss-over-n-only", "generated.toml", "gen-grid-normal-n1-d3-k2-mean-s1", "float32"),
    ("b188-gradb-divided-by-k-twice", "generated.toml", "gen-grid-normal-n1-d3-k2-mean-s1", "float32"),
    ("b188-float16-accumulation-when-n-gt-1024", "selftest.toml", "gen-selftest-wide-normal-n2000-d4-k2-mean-s1", "float32"),
    ("b188-targets-stored-as-float16", "generated.toml", "gen-grid-normal-n1-d1-k1-sum-s1", "float32"),
    ("b188-lr-warmup-from-step-2", "semantics.toml", "semantics-below-resolution", "float32"),
    ("b188-update-with-previous-gradient", "semantics.toml", "semantics-below-resolution", "float32"),
    ("b188-lr-as-float16-constant", "generated.toml", "gen-grid-normal-n1-d1-k1-sum-s1", "float32"),
    ("b188-gradb-unbroadcast-by-size", "generated.toml", "gen-steps-huge-n2-d2-k2-mean-s3", "float32"),
    ("b188-update-skipped-when-loss-rises", "selftest.toml", "gen-selftest-mixed-n1-d1-k1-sum-s3", "float32"),
    ("b188-update-skips-small-gradients", "generated.toml", "gen-grid-mixed-n3-d5-k1-sum-s1", "float32"),
    ("b188-one-step-short", "semantics.toml", "semantics-below-resolution", "float32"),
    ("b188-initial-state-logged-as-step-1", "generated.toml", "gen-grid-normal-n1-d1-k1-sum-s1", "float32"),
    ("b188-zero-grad-on-even-steps-only", "selftest.toml", "gen-selftest-normal-n1-d1-k1-sum-s3", "float32"),
    ("b188-bias-grad-never-reset", "semantics.toml", "semantics-below-resolution", "float32"),
    ("b188-steplr-stepped-per-batch", "selftest.toml", "gen-selftest-mixed-n1-d1-k1-sum-s3", "float32"),
    ("b188-grad-returned-without-clone", "semantics.toml", "semantics-below-resolution", "float32"),
    ("b188-params-returned-without-clone", "semantics.toml", "semantics-below-resolution", "float32"),
    ("b188-clip-grad-norm-left-on", "generated.toml", "gen-grid-normal-n1-d1-k1-sum-s1", "float32"),
    ("b188-f-linear-weight-convention", "generated.toml", "gen-grid-normal-n1-d3-k2-mean-s1", "float32"),
    ("b188-bfloat16-update-truncated", "generated.toml", "gen-grid-huge-n2-d1-k1-mean-s1", "bfloat16"),
    ("b188-bfloat16-computed-in-float16", "generated.toml", "gen-grid-huge-n2-d1-k1-mean-s1", "bfloat16"),
    ("b188-amp-loss-scale-skips-step", "generated.toml", "gen-grid-normal-n1-d1-k1-sum-s1", "float16"),
    ("b188-nan-to-num-on-gradients", "selftest.toml", "gen-selftest-mixed-n1-d1-k1-sum-s3", "float16"),
    ("b188-master-weights-truncated-to-float16", "generated.toml", "gen-grid-normal-n1-d1-k1-sum-s1", "float16"),
    ("b188-adam-step-counter-shared-by-params", "optim.toml", "gen-optim-adam-amsgrad-falling-normal-n3-d2-k1-sum-s3", "float32"),
    ("b188-adam-bias-correction-t-frozen-at-1", "optim.toml", "gen-optim-adam-amsgrad-falling-normal-n3-d2-k1-sum-s3", "float32"),
    ("b188-adam-step-counter-from-0", "optim.toml", "gen-optim-adam-amsgrad-falling-normal-n3-d2-k1-sum-s3", "float32"),
    ("b188-amsgrad-max-against-m", "optim.toml", "gen-optim-adam-amsgrad-falling-normal-n3-d2-k1-sum-s3", "float32"),
    ("b188-amsgrad-max-not-carried", "optim.toml", "gen-optim-adam-amsgrad-falling-normal-n3-d2-k1-sum-s3", "float32"),
    ("b188-adam-bias-correction2-without-sqrt", "optim.toml", "gen-optim-adam-amsgrad-falling-normal-n3-d2-k1-sum-s3", "float32"),
    ("b188-adam-paper-eps-hat-form", "optim.toml", "gen-optim-adam-amsgrad-falling-normal-n3-d2-k1-sum-s3", "float64"),
    ("b188-adamw-decay-after-update", "optim.toml", "gen-optim-adamw-normal-n3-d2-k2-mean-s3", "float32"),
    ("b188-adamw-decay-without-lr", "optim.toml", "gen-optim-adamw-normal-n3-d2-k2-mean-s3", "float32"),
    ("b188-adam-maximize-ignored", "optim.toml", "gen-optim-adam-amsgrad-l2-near-zero-residual-n3-d2-k2-sum-s3", "float32"),
    ("b188-adam-no-weight-decay-on-bias", "optim.toml", "gen-optim-adam-amsgrad-l2-near-zero-residual-n3-d2-k2-sum-s3", "float32"),
    ("b188-sgd-optimizer-recreated-each-step", "optim.toml", "gen-optim-sgd-momentum-normal-n3-d2-k2-mean-s3", "float32"),
    ("b188-sgd-nesterov-with-old-buffer", "optim.toml", "gen-optim-sgd-nesterov-normal-n3-d2-k2-sum-s3", "float32"),
    ("b188-sgd-dampening-at-step-1", "optim.toml", "gen-optim-sgd-momentum-normal-n3-d2-k2-mean-s3", "float32"),
    ("b188-sgd-weight-decay-after-update", "optim.toml", "gen-optim-sgd-momentum-normal-n3-d2-k2-mean-s3", "float32"),
    ("b188-sgd-no-weight-decay-on-bias", "optim.toml", "gen-optim-sgd-momentum-normal-n3-d2-k2-mean-s3", "float32"),
    ("b188-sgd-buffer-aliases-gradient", "optim.toml", "gen-optim-sgd-tiny-lr-normal-n3-d2-k2-mean-s3", "float32"),
    ("b188-mlp-activation-derivative-cached-from-step-1", "models.toml", "gen-tanh-2-wide-n1-d2-k1-mean-s2", "float32"),
    ("b188-mlp-backward-with-initial-weights", "models.toml", "gen-tanh-2-wide-n1-d2-k1-mean-s2", "float32"),
]


@pytest.mark.parametrize("impl,path,case_id,dtype", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_a_realistic_bug_is_caught_on_a_shipped_case(impl, path, case_id, dtype):
    recs = _records(impl, path, case_id, dtype)
    assert recs and all(r.implementation == impl for r in recs)
    assert failures(recs), {(r.quantity, r.step): r.verdict for r in recs}


def test_a_bug_from_step_3_of_an_mlp_is_beyond_every_model_case():
    # the step horizon (reported, not changed): model cases have at most 2 steps, so lr / 2 from step 3 changes
    # nothing graded; the same bug from step 2 (StepLR(step_size=1)) would be caught on the 2-step case
    recs = _records("b188-mlp-steplr-2-per-batch", "models.toml", "gen-tanh-2-wide-n1-d2-k1-mean-s2", "float32")
    assert recs and not failures(recs, strict=True)
    assert max(c.steps for c in _cases("models.toml").values()) == 2
