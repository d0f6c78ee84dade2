"""papers.hessian_sgd.stacked_mlp against torch.func (functional_call, grad, vmap, jacfwd), float64."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from sgdbook.models import mlp
from sgdbook.papers.hessian_sgd import stacked_mlp as sm

SIZES = [6, 4, 5, 3]


def _stack(R, gen, bias=True, flatten=False, sizes=SIZES):
    models = [mlp(sizes, bias=bias, flatten=flatten).double() for _ in range(R)]
    with torch.no_grad():
        for m in models:
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    params, _ = stack_module_state(models)
    base = models[0]
    return base, {k: v.detach() for k, v in params.items()}


def _data(n, gen, d=SIZES[0], k=SIZES[-1]):
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=gen)
    return x, y


@pytest.mark.parametrize("bias,flatten", [(True, False), (False, False), (True, True)])
def test_layout_forward_and_flat_order(bias, flatten, gen):
    base, params = _stack(3, gen, bias, flatten)
    layers = sm.layers_from_params(base, params)
    x, y = _data(7, gen)
    out = sm.forward(layers, x)
    ref = vmap(lambda p: functional_call(base, p, (x,)))(params)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    # per-run inputs give the same
    torch.testing.assert_close(sm.forward(layers, x.expand(3, -1, -1)), ref, rtol=1e-12, atol=1e-12)
    flat = sm.flatten(layers)
    ref_flat = torch.cat([params[k].reshape(3, -1) for k, _ in base.named_parameters()], 1)
    torch.testing.assert_close(flat, ref_flat, rtol=0, atol=0)
    back = sm.unflatten(flat, layers)
    for (W, b), (W2, b2) in zip(layers, back):
        assert torch.equal(W, W2) and (b is None and b2 is None or torch.equal(b, b2))
    f = sm.flat_loss(layers, x, y)
    torch.testing.assert_close(f(flat[1]), F.cross_entropy(ref[1], y), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sm.losses(layers, x, y).mean(1), vmap(lambda o: F.cross_entropy(o, y))(ref))


def test_minibatch_grads_match_torch_func(gen):
    base, params = _stack(4, gen)
    layers = sm.layers_from_params(base, params)
    x, y = _data(9, gen)
    idx = torch.randint(0, 9, (4, 3), generator=gen)
    g, val = sm.minibatch_grads(layers, x[idx], y[idx])

    def loss(p, xb, yb):
        return F.cross_entropy(functional_call(base, p, (xb,)), yb)

    ref = vmap(grad(loss))(params, x[idx], y[idx])
    ref_flat = torch.cat([ref[k].reshape(4, -1) for k, _ in base.named_parameters()], 1)
    torch.testing.assert_close(g, ref_flat, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(val, vmap(loss)(params, x[idx], y[idx]), rtol=1e-12, atol=1e-12)


def _per_example_ref(base, params, x, y):
    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(base, p, (xi[None],)), yi[None])

    g = vmap(vmap(grad(loss), in_dims=(None, 0, 0)), in_dims=(0, None, None))(params, x, y)
    return torch.cat([g[k].reshape(g[k].shape[0], g[k].shape[1], -1) for k, _ in base.named_parameters()], 2)


@pytest.mark.parametrize("bias", [True, False])
def test_exact_moments_and_per_example_grads(bias, gen):
    base, params = _stack(3, gen, bias)
    layers = sm.layers_from_params(base, params)
    x, y = _data(8, gen)
    G = _per_example_ref(base, params, x, y)  # [R, n, p]
    torch.testing.assert_close(sm.per_example_grads(layers, x, y), G, rtol=1e-11, atol=1e-12)
    mo = sm.exact_moments(layers, x, y, gram=True)
    torch.testing.assert_close(mo.mu, G.mean(1), rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(mo.diag_m, G.square().mean(1), rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(mo.trace_m, G.square().sum((1, 2)) / 8, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(mo.mu_sq, G.mean(1).square().sum(1), rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(mo.gram, G @ G.mT, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(mo.loss, sm.losses(layers, x, y).mean(1))


@pytest.mark.parametrize("bias", [True, False])
def test_hessian_diag_is_the_exact_diagonal(bias, gen):
    base, params = _stack(3, gen, bias)
    layers = sm.layers_from_params(base, params)
    x, y = _data(10, gen)
    hd = sm.hessian_diag(layers, x, y)
    flat = sm.flatten(layers)
    for r in range(3):
        f = sm.flat_loss(layers, x, y)
        H = torch.func.jacfwd(torch.func.grad(f))(flat[r])
        torch.testing.assert_close(hd[r], H.diagonal(), rtol=1e-10, atol=1e-12)


def test_layout_errors():
    with pytest.raises(ValueError, match="unsupported layer"):
        sm.layers_from_params(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)), {})
    with pytest.raises(ValueError, match="end with a Linear"):
        sm.layers_from_params(nn.Sequential(nn.Linear(2, 3), nn.ReLU()), {})
    with pytest.raises(TypeError):
        sm.layers_from_params(nn.Linear(2, 3), {})
    with pytest.raises(ValueError, match="entries"):
        sm.unflatten(torch.zeros(5), [(2, 2, True)])


def test_hvp_at_points_against_dense_hessians(gen):
    base, params = _stack(3, gen)
    layers = sm.layers_from_params(base, params)
    x, y = _data(8, gen)
    theta = sm.flatten(layers)
    V = torch.randn_like(theta)
    hv = sm.hvp_at_points(layers, x, y, theta, chunk=2)(V)
    f = sm.flat_loss(layers, x, y)
    for r in range(3):
        H = torch.func.jacfwd(torch.func.grad(f))(theta[r])
        torch.testing.assert_close(hv[r], H @ V[r], rtol=1e-10, atol=1e-12)
