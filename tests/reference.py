"""Brute-force references that the tests hold the library to: slow, obvious, independent.

Each helper computes a quantity the plainest way there is (one autograd call per example or per
minibatch, ``torch.func.hessian``, finite differences, a Python loop of ``torch.optim.SGD`` per
run, ``itertools`` enumeration), so that a fast implementation can be compared with it on a tiny
float64 case (BackPACK's twin-implementation pattern). Nothing here imports the code under test
except where stated (an index layout to compare against).
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

F64 = torch.float64


def flat(tensors) -> torch.Tensor:
    """Concatenate tensors into one vector (the library's flat-parameter layout)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def trainable(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


# ----------------------------------------------------------------------------- gradients


def loop_grads(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example gradients ``[n, d]``: one ``torch.autograd.grad`` per example, on a batch of one."""
    ps = trainable(model)
    return torch.stack([flat(torch.autograd.grad(loss_fn(model(x[i : i + 1]), y[i : i + 1]), ps)) for i in range(len(x))])


def batch_grad(model: nn.Module, loss_fn, xb: torch.Tensor, yb: torch.Tensor, train: bool = True) -> torch.Tensor:
    """One minibatch gradient ``[d]`` on a throw-away copy (whose batch norm may update its own
    statistics); ``train`` picks the copy's mode (batch statistics or running statistics)."""
    c = copy.deepcopy(model).train(train)
    return flat(torch.autograd.grad(loss_fn(c(xb), yb), trainable(c)))


def all_subsets(n: int, m: int) -> torch.Tensor:
    """Every m-subset of range(n) in ``itertools.combinations`` order: ``[C(n, m), m]``."""
    return torch.tensor(list(itertools.combinations(range(n), m)), dtype=torch.long)


def enumerate_minibatch_grads(model: nn.Module, loss_fn, x, y, m: int, train: bool = True):
    """Every minibatch gradient of size ``m`` (without replacement), one autograd call per
    subset: ``(indices [C(n, m), m], gradients [C(n, m), d])``."""
    idx = all_subsets(x.shape[0], m)
    return idx, torch.stack([batch_grad(model, loss_fn, x[i], y[i], train) for i in idx])


def sequential_sgd(model: nn.Module, loss_fn, x, y, indices: torch.Tensor, lr: float):
    """Plain ``torch.optim.SGD`` on ``model`` (trained in place) with minibatch ``indices[t]`` at
    step ``t``: ``(losses [T], gradients [T, d])``, each at θ_t before its update."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses, grads = [], []
    for rows in indices:
        loss = loss_fn(model(x[rows]), y[rows])
        opt.zero_grad()
        loss.backward()
        losses.append(loss.detach())
        grads.append(flat([p.grad for p in model.parameters()]))
        opt.step()
    return torch.stack(losses), torch.stack(grads)


def load_run(model: nn.Module, params: dict[str, torch.Tensor], r: int) -> nn.Module:
    """``model`` (changed in place and returned) holding run ``r`` of stacked ``params`` ``{name: [R, ...]}``."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name][r])
    return model


# ----------------------------------------------------------------------------- curvature


def dense_hessian(f, theta: torch.Tensor) -> torch.Tensor:
    """``torch.func.hessian`` of a scalar function of one flat vector."""
    return torch.func.hessian(f)(theta)


def assert_fd_agrees(f, theta: torch.Tensor, H: torch.Tensor, n: int = 4, h: float = 1e-6) -> None:
    """Central finite differences of the gradient along ``n`` random directions: the referee for
    ``H`` where ``torch.func.hessian`` itself is not to be trusted (batch norm in train mode)."""
    grad = torch.func.grad(f)
    V = torch.randn(n, theta.numel(), generator=torch.Generator().manual_seed(99), dtype=F64)
    fd = torch.stack([(grad(theta + h * v) - grad(theta - h * v)) / (2 * h) for v in V])
    torch.testing.assert_close(V @ H, fd, rtol=1e-6, atol=1e-8)


def symmetric_with_spectrum(eigs, seed: int = 0) -> torch.Tensor:
    """A dense symmetric matrix ``Q diag(eigs) Qᵀ`` with a random orthogonal ``Q``."""
    g = torch.Generator().manual_seed(seed)
    eigs = torch.as_tensor(eigs, dtype=F64)
    q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=g, dtype=F64))
    return (q * eigs) @ q.mT
