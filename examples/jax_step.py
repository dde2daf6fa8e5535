"""A linear-regression SGD step in JAX, registered with the harness under the name "jax-sgd".

The harness hands X (N, D), y (N, K), W (D, K) and b (K,) as jax.Array on the case's
device and dtype (float64, float32, float16, bfloat16); jax.grad differentiates the loss.
"""

import jax
import jax.numpy as jnp

import harness

jax.config.update("jax_enable_x64", True)  # float64 cases: without it JAX computes in float32


# XLA on the CPU flushes subnormals to zero: declared, so that it is graded with the flush-to-zero bounds
@harness.implementation("jax-sgd", framework="jax", flush_to_zero=True)
def jax_sgd(X, y, W, b, *, lr, reduction, steps):
    def loss_fn(W, b):
        r = X @ W + b - y
        return jnp.sum(r * r) if reduction == "sum" else jnp.mean(r * r)

    value_and_grad = jax.value_and_grad(loss_fn, argnums=(0, 1))
    for _ in range(steps):
        loss, (grad_W, grad_b) = value_and_grad(W, b)
        W, b = W - lr * grad_W, b - lr * grad_b  # a Python float keeps the arrays' dtype (weak typing)
        yield loss, grad_W, grad_b, W, b  # one (loss, grad_W, grad_b, W, b) per step, W and b after the update
