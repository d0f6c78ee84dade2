"""Dense Hessians of many runs, the residual H_p computed directly, layer blocks and loadings,
and the Davis–Kahan bounds, against torch.func.hessian, Proposition 1 and scipy, in float64."""

import math

import pytest
import scipy.linalg as sl
import torch
import torch.nn.functional as F
from torch import nn

from reference import F64, dense_hessian, load_run, loop_grads, symmetric_with_spectrum
from sgdbook import curvature, ensemble, models
from sgdbook.functional import flat_loss, materialize


def _data(n=12, d=5, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=F64), torch.randint(0, k, (n,), generator=g)


def _relu(g):
    return models.mlp([5, 4, 3, 3], bias=True, generator=g, flatten=False).double()


def _tanh(g):
    return models.init_weights(nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double(), g, "xavier_normal")


@pytest.mark.parametrize("make", [_relu, _tanh])
def test_stacked_hessians_equal_torch_func_hessian_per_run(make):
    x, y = _data()
    base, params, _ = ensemble.stacked_init(make, 3, torch.Generator().manual_seed(1))
    H = curvature.stacked_hessians(base, params, x, y)
    for r in range(3):
        f, theta = flat_loss(load_run(make(torch.Generator()), params, r), F.cross_entropy, x, y)
        torch.testing.assert_close(H[r], dense_hessian(f, theta), rtol=1e-10, atol=1e-12)


def test_dense_hessian_refuses_a_large_p_and_says_what_to_use():
    base = models.mlp([784, 128, 10], bias=True, flatten=False).to("meta")
    params = ensemble.normal_init(base, 1, 0.1, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="lanczos"):
        curvature.stacked_hessians(base, params, torch.zeros(2, 784), torch.zeros(2, dtype=torch.long))


def test_materialize_copies_one_run_onto_a_real_module():
    base, params, _ = ensemble.stacked_init(_relu, 2, torch.Generator().manual_seed(1))
    m = materialize(base.to("meta"), params, 1)
    for k, p in m.named_parameters():
        assert torch.equal(p, params[k][1]) and p.device.type == "cpu" and p.dtype == F64


@pytest.mark.parametrize("method", ["ratio", "shifted"])
def test_residual_hessian_is_proposition_1(method):
    x, y = _data()
    model = _relu(torch.Generator().manual_seed(2))
    f, theta = flat_loss(model, F.cross_entropy, x, y)
    H = dense_hessian(f, theta)
    G = loop_grads(model, F.cross_entropy, x, y)
    Hp = curvature.residual_hessian(model, F.cross_entropy, x, y, method=method)
    torch.testing.assert_close(H, G.T @ G / len(x) - Hp, rtol=1e-10, atol=1e-12)
    # against the definition itself: (1/n) Σ hessian(p_i)/p_i, one example at a time
    ps = []
    for i in range(len(x)):
        fi, _ = flat_loss(model, F.cross_entropy, x[i : i + 1], y[i : i + 1])
        pi = lambda th, fi=fi: torch.exp(-fi(th))  # noqa: E731
        ps.append(dense_hessian(pi, theta) / pi(theta))
    torch.testing.assert_close(Hp, torch.stack(ps).mean(0), rtol=1e-10, atol=1e-12)
    v = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(curvature.residual_hvp(model, F.cross_entropy, x, y, method=method)(v), Hp @ v,
                               rtol=1e-10, atol=1e-12)


def test_residual_underflow_is_a_clear_error_and_shifted_survives():
    x, y = _data()
    model = _relu(torch.Generator().manual_seed(2))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(60.0)  # per-example losses in the thousands: exp(-f_i) = 0 in float64
    with pytest.raises(curvature.ProbabilityUnderflowError, match="method='shifted'"):
        curvature.residual_hessian(model, F.cross_entropy, x, y)
    Hp = curvature.residual_hessian(model, F.cross_entropy, x, y, method="shifted")
    assert torch.isfinite(Hp).all()


def test_layer_index_blocks_and_loadings():
    model = _relu(torch.Generator().manual_seed(0))
    layers = curvature.layer_index(model)
    assert [(b.name, b.start, b.stop) for b in layers] == [("0", 0, 24), ("2", 24, 39), ("4", 39, 51)]
    H = torch.arange(51 * 51, dtype=F64).reshape(51, 51)
    G, Hs = curvature.layer_blocks(H, layers)
    assert torch.equal(G[1], H[24:39, 24:39]) and torch.equal(Hs[1], H[24:, 24:])
    assert torch.equal(Hs[0], H) and torch.equal(Hs[2], G[2])
    V = torch.randn(51, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    V = V / V.norm(dim=0)
    share = curvature.layer_loadings(V, layers, kind="share")
    torch.testing.assert_close(share.sum(0), torch.ones(4, dtype=F64))
    rms = curvature.layer_loadings(V, layers)
    torch.testing.assert_close(rms[0], V[:24].square().mean(0).sqrt())
    with pytest.raises(ValueError, match="tile"):
        curvature.layer_blocks(H[:50, :50], layers)


def test_gauss_k_layer_sizes():
    layers = curvature.layer_index(models.mlp([50, 10, 30, 10], bias=True, flatten=False))
    assert [b.size for b in layers] == [510, 330, 310] and layers[-1].stop == 1150


def test_davis_kahan_bounds_hold_and_sines_match_scipy():
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for trial in range(40):
        P = symmetric_with_spectrum(torch.linspace(-1, 3, 10) + 0.3 * torch.rand(10, generator=g, dtype=F64), seed=trial)
        E = torch.randn(10, 10, generator=g, dtype=F64)
        D = (E + E.mT) * 10 ** (-3 * float(torch.rand((), generator=g)))
        pv, pV = torch.linalg.eigh(P)
        qv, qV = torch.linalg.eigh(P + D)
        pv, pV, qv, qV = pv.flip(0), pV.flip(-1), qv.flip(0), qV.flip(-1)
        dv = torch.linalg.eigvalsh(D)
        dk = curvature.davis_kahan(pv, pV[:, :3], qv, qV[:, :3], dv.abs().max(), torch.linalg.matrix_norm(D))
        assert (dk.sin_vec <= dk.bound_vec * (1 + 1e-10)).all() and (dk.sin_sub <= dk.bound_sub * (1 + 1e-10)).all()
        for j, s in enumerate(dk.s_values):
            ang = sl.subspace_angles(pV[:, :s].numpy(), qV[:, :s].numpy())
            assert abs(math.sqrt(sum(math.sin(a) ** 2 for a in ang)) - float(dk.sin_sub[j])) < 1e-8
        torch.testing.assert_close(dk.cos_vec, (pV[:, :3] * qV[:, :3]).sum(0).abs(), rtol=1e-10, atol=1e-10)
        worst = max(worst, float((dk.sin_vec / dk.bound_vec).max()))
    assert worst > 0.05  # the bounds are not vacuous on these problems
