"""The model Fisher against brute force: a per-example, per-label autograd loop and the
generalised Gauss–Newton matrix built from the logits' Jacobian."""

import torch
import torch.nn.functional as F
from torch.func import functional_call, jacrev

from sgdbook import models
from sgdbook.functional import flat_parameters, unflatten
from sgdbook.synthesis.lenses import model_fisher


def _problem():
    gen = torch.Generator().manual_seed(3)
    model = models.mlp([5, 4, 3], bias=True, generator=gen).double()
    x = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    return model, x


def test_model_fisher_is_the_expected_second_moment_under_model_labels():
    model, x = _problem()
    theta = flat_parameters(model)
    d = theta.numel()
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
    ref = torch.zeros(d, d, dtype=torch.float64)
    for i in range(x.shape[0]):
        for c in range(3):
            loss = F.cross_entropy(model(x[i : i + 1]), torch.tensor([c]))
            g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, list(model.parameters()))])
            ref += p[i, c] * torch.outer(g, g)
    ref /= x.shape[0]
    assert torch.allclose(model_fisher(model, x), ref, atol=1e-13, rtol=1e-11)


def test_model_fisher_equals_the_gauss_newton_matrix():
    model, x = _problem()
    theta = flat_parameters(model)
    logits = lambda th: functional_call(model, unflatten(model, th), (x,))
    J = jacrev(logits)(theta)  # [n, k, d]
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
    Lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    ggn = torch.einsum("nkd,nkl,nle->de", J, Lam, J) / x.shape[0]
    assert torch.allclose(model_fisher(model, x), ggn, atol=1e-13, rtol=1e-11)
    assert not any(q.grad is not None for q in model.parameters())  # the model is left alone
