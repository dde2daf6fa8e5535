"""A training step of your own, registered with the harness under the name "my-step"."""

import torch

import harness


@harness.implementation("my-step", framework="torch")
def my_step(X, y, W, b, *, lr, reduction, steps):
    # X (N, D), y (N, K), W (D, K), b (K,): tensors on the case's device and dtype
    W = W.detach().clone().requires_grad_(True)
    b = b.detach().clone().requires_grad_(True)
    optimizer = torch.optim.SGD([W, b], lr=lr)
    results = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(X @ W + b, y, reduction=reduction)
        loss.backward()
        grad_W, grad_b = W.grad.clone(), b.grad.clone()
        optimizer.step()
        # one StepResult per step; W and b are the values after the update
        results.append(harness.StepResult(loss.detach(), grad_W, grad_b, W.detach().clone(), b.detach().clone()))
    return results
