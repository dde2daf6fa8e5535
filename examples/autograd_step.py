"""A linear-regression SGD step in HIPS autograd, registered with the harness under the name "autograd-sgd".

HIPS autograd (https://github.com/HIPS/autograd) differentiates NumPy code: the harness hands X (N, D),
y (N, K), W (D, K) and b (K,) as NumPy arrays of the case's dtype (framework="numpy"); autograd's
value_and_grad differentiates the loss written with autograd.numpy. NumPy has no bfloat16 arithmetic of
its own, so the step declares the dtypes it computes in; bfloat16 cases are recorded as unsupported.
"""

import autograd.numpy as anp
from autograd import value_and_grad

import harness


@harness.implementation("autograd-sgd", framework="numpy", dtypes=("float64", "float32", "float16"))
def autograd_sgd(X, y, W, b, *, lr, reduction, steps):
    def loss_fn(W, b):
        r = anp.dot(X, W) + b - y
        return anp.sum(r * r) if reduction == "sum" else anp.mean(r * r)

    loss_and_grads = value_and_grad(loss_fn, argnum=(0, 1))
    for _ in range(steps):
        loss, (grad_W, grad_b) = loss_and_grads(W, b)
        W, b = W - lr * grad_W, b - lr * grad_b  # NumPy 2: a Python float keeps the arrays' dtype
        yield loss, grad_W, grad_b, W, b  # one (loss, grad_W, grad_b, W, b) per step, W and b after the update
