"""walk-with-sgd Section 4 support, against brute force in float64."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdbook import models
from sgdbook.curvature import residual_hessian
from sgdbook.papers.walk_with_sgd import curvature_checks as cc

F64 = torch.float64


def _tiny_cnn(seed=0, bn=False):
    g = torch.Generator().manual_seed(seed)
    return models.small_cnn((2, 3), (4,), bn=bn, generator=g).double()


def _data(n=9, side=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, side, side, generator=g, dtype=F64), torch.randint(0, 10, (n,), generator=g)


def _loop_hessian(f, theta):
    return torch.autograd.functional.hessian(f, theta)


def test_eq3_terms_brute_force():
    model = _tiny_cnn()
    x, y = _data()
    t = cc.eq3_terms(model, x, y)
    params = [q for q in model.parameters()]
    theta = torch.cat([q.detach().reshape(-1) for q in params])
    sizes = [q.numel() for q in params]
    names = [k for k, _ in model.named_parameters()]

    def call(th, xb):
        d = {k: v.view_as(q) for k, v, q in zip(names, th.split(sizes), params)}
        return torch.func.functional_call(model, d, (xb,))

    H = _loop_hessian(lambda th: F.cross_entropy(call(th, x), y), theta)
    assert torch.allclose(t.H, H, atol=1e-12)
    G = torch.stack([torch.autograd.functional.jacobian(lambda th: F.cross_entropy(call(th, x[i : i + 1]), y[i : i + 1]), theta) for i in range(len(y))])
    M = G.T @ G / len(y)
    assert torch.allclose(t.M, M, atol=1e-12)
    g = G.mean(0)
    assert torch.allclose(t.C, M - torch.outer(g, g), atol=1e-12)
    R = torch.zeros_like(H)
    for i in range(len(y)):
        pi = lambda th: torch.softmax(call(th, x[i : i + 1]), 1)[0, y[i]]
        p0 = float(pi(theta))
        R += -_loop_hessian(pi, theta) / p0
    R /= len(y)
    assert torch.allclose(t.R, R, atol=1e-12)
    # Eq. 3 holds with M, and with C exactly up to ḡḡᵀ
    assert t.err_with_M < 1e-12
    assert t.err_of_gap < 1e-12
    assert t.err_with_C == pytest.approx(t.gap_predicted, rel=1e-9)
    assert t.err_with_C > 1e-3  # away from a stationary point the covariance version fails
    # the library's independent H_p (Hessian paper) is −R
    assert torch.allclose(residual_hessian(model, F.cross_entropy, x, y), -t.R, atol=1e-12)


def test_eq3_terms_eval_mode_batch_norm_and_refuses_train():
    model = _tiny_cnn(bn=True)
    x, y = _data()
    model.train()
    with torch.no_grad():
        model(x)
    t = cc.eq3_terms(model, x, y, bn_mode="eval")
    assert t.err_with_M < 1e-11 and t.err_of_gap < 1e-11
    with pytest.raises(ValueError, match="per-example"):
        cc.eq3_terms(model, x, y, bn_mode="train")


def test_softmax_mle_is_a_stationary_point_and_refuses_separable_data():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 3, generator=g, dtype=F64)
    teacher = nn.Linear(3, 4).double()
    with torch.no_grad():
        teacher.weight.copy_(torch.randn(4, 3, generator=g, dtype=F64))
        teacher.bias.zero_()
        y = torch.multinomial(torch.softmax(teacher(x), 1), 1, generator=g).squeeze(1)
    model, gn, it = cc.softmax_mle(x, y, 4)
    assert gn < 1e-9 and it < 50
    with torch.no_grad():
        loss = float(F.cross_entropy(model(x), y))
    for _ in range(5):  # convex: every perturbation is worse
        m2 = nn.Linear(3, 4).double()
        with torch.no_grad():
            m2.weight.copy_(model.weight + 1e-3 * torch.randn(4, 3, generator=g, dtype=F64))
            m2.bias.copy_(model.bias + 1e-3 * torch.randn(4, generator=g, dtype=F64))
            assert float(F.cross_entropy(m2(x), y)) >= loss
    xs = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [2.0, 0.0], [-2.0, 0.0]], dtype=F64)
    with pytest.raises(RuntimeError, match="separable"):
        cc.softmax_mle(xs, torch.tensor([1, 0, 1, 0]), 2, max_iter=30)


@pytest.mark.parametrize("bn", [False, True])
def test_minibatch_gradients_loop(bn):
    model = _tiny_cnn(bn=bn)
    x, y = _data(n=12)
    idx = torch.tensor([[0, 3, 5], [1, 2, 11], [4, 6, 7]])
    U = torch.randn(sum(q.numel() for q in model.parameters()), 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    G = cc.minibatch_gradients(model, F.cross_entropy, x, y, idx, bn_mode="train", chunk=2)
    P = cc.minibatch_gradients(model, F.cross_entropy, x, y, idx, directions=U, bn_mode="train")
    model.train()
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    for j, row in enumerate(idx):
        gr = torch.autograd.grad(F.cross_entropy(model(x[row]), y[row]), list(model.parameters()))
        ref = torch.cat([a.reshape(-1) for a in gr])
        assert torch.allclose(G[j], ref, atol=1e-12)
        assert torch.allclose(P[j], ref @ U, atol=1e-12)
    for k, b in model.named_buffers():  # restore what the reference loop changed
        b.copy_(buffers[k])


def test_eq2_check_exact_enumeration():
    """With every minibatch of the population as the 'sample', the Monte Carlo variance (population
    normalisation) equals Eq. 2 with C and the finite-population factor, exactly."""
    g = torch.Generator().manual_seed(5)
    N, P, B = 7, 5, 3
    G = torch.randn(N, P, generator=g, dtype=F64) + 0.5
    idx = torch.tensor(list(itertools.combinations(range(N), B)))
    Z = G[idx].mean(1)
    U = torch.linalg.qr(torch.randn(P, 3, generator=g, dtype=F64)).Q
    r = cc.eq2_check(G, Z, U, B)
    n_s = idx.shape[0]
    assert r.mc_var * (n_s - 1) / n_s == pytest.approx(r.pred_centered, rel=1e-12)
    assert r.trace_mc * (n_s - 1) / n_s == pytest.approx(r.trace_centered, rel=1e-12)
    # the uncentered version, with the same factor, differs by exactly the factor times (uᵀḡ)² (and ‖ḡ‖² in trace)
    factor, gbar = (N - B) / (B * (N - 1)), G.mean(0)
    assert r.pred_uncentered - r.pred_centered == pytest.approx(factor * ((gbar @ U) ** 2).numpy(), rel=1e-10)
    assert r.trace_uncentered - r.trace_centered == pytest.approx(factor * float(gbar @ gbar), rel=1e-10)
    with pytest.raises(ValueError, match="batch size"):
        cc.eq2_check(G, Z, U, N)


def test_noise_share_brute_force():
    g = torch.Generator().manual_seed(6)
    N, P, k = 30, 8, 3
    G = torch.randn(N, P, generator=g, dtype=F64) @ torch.diag(torch.linspace(0.2, 3, P, dtype=F64))
    V = torch.linalg.qr(torch.randn(P, k, generator=g, dtype=F64)).Q
    r = cc.noise_share(G, V)
    Gc = G - G.mean(0)
    S = Gc.T @ Gc / N
    for j in range(1, k + 1):
        Vj = V[:, :j]
        assert r.share[j - 1] == pytest.approx(float(torch.trace(Vj.T @ S @ Vj) / torch.trace(S)), rel=1e-12)
        ev = torch.linalg.eigvalsh(S).flip(0)
        assert r.best[j - 1] == pytest.approx(float(ev[:j].sum() / ev.sum()), rel=1e-10)
        assert r.isotropic[j - 1] == pytest.approx(j / P)
    assert r.trace == pytest.approx(float(torch.trace(S)), rel=1e-12)
    assert all(r.share <= r.best + 1e-12)


def test_noise_share_of_model_chunked_equals_stored():
    model = _tiny_cnn()
    x, y = _data(n=20)
    P = sum(q.numel() for q in model.parameters())
    V = torch.linalg.qr(torch.randn(P, 4, generator=torch.Generator().manual_seed(2), dtype=F64)).Q
    a = cc.noise_share_of_model(model, F.cross_entropy, x, y, V)
    b = cc.noise_share_of_model(model, F.cross_entropy, x, y, V, chunk=7, max_stored=10)
    assert a.share == pytest.approx(b.share, rel=1e-9)
    assert a.trace == pytest.approx(b.trace, rel=1e-9)
    assert all(a.best >= a.share - 1e-12)
    # chunked: the largest share from Lanczos on the covariance operator, the stored Gram matrix's to its tolerance
    c = cc.noise_share_of_model(model, F.cross_entropy, x, y, V, chunk=7, max_stored=10, tol=1e-10)
    assert c.best == pytest.approx(a.best, rel=1e-8)


def test_eq2_check_model_equals_the_matrix_version():
    model = _tiny_cnn()
    x, y = _data(n=30)
    P = sum(q.numel() for q in model.parameters())
    U = torch.linalg.qr(torch.randn(P, 3, generator=torch.Generator().manual_seed(4), dtype=F64)).Q
    idx = torch.stack([torch.randperm(30, generator=torch.Generator().manual_seed(i))[:6] for i in range(40)])
    a, ZU = cc.eq2_check_model(model, F.cross_entropy, x, y, U, idx, chunk=7)
    G = cc.per_example_grads(model, F.cross_entropy, x, y)
    Z = cc.minibatch_gradients(model, F.cross_entropy, x, y, idx)
    b = cc.eq2_check(G, Z, U, 6)
    assert torch.allclose(ZU, Z @ U, atol=1e-12)
    for k in ("mc_var", "pred_centered", "pred_uncentered", "z_centered", "mean_z"):
        assert getattr(a, k) == pytest.approx(getattr(b, k), rel=1e-9, abs=1e-12)
    for k in ("trace_mc", "trace_centered", "trace_uncentered"):
        assert getattr(a, k) == pytest.approx(getattr(b, k), rel=1e-9)
    # minibatch_moments' standard error centres on the first chunk's mean (slightly conservative)
    assert a.trace_mc_se == pytest.approx(b.trace_mc_se, rel=0.1)
    # the per-minibatch squared deviations from ḡ, brute force, and the joint test on them
    gbar = G.mean(0)
    want = torch.cat([((Z - gbar) @ U) ** 2, ((Z - gbar) ** 2).sum(1, keepdim=True)], 1).numpy()
    assert a.sq_dev == pytest.approx(want, rel=1e-9, abs=1e-14) and b.sq_dev == pytest.approx(want, rel=1e-12, abs=1e-15)
    h = a.hotelling(a.pred_centered, a.trace_centered)
    from sgdbook.stats import hotelling_test

    assert h.p_value == pytest.approx(hotelling_test(want, np.append(b.pred_centered, b.trace_centered)).p_value, rel=1e-6)


def test_shape_check_against_scipy_and_known_laws():
    """Point estimates are scipy's; a Gaussian sample holds, an exponential one (skewness 2, excess
    kurtosis 6) fails, and a small Gaussian sample is undecided (its intervals are too wide)."""
    import numpy as np
    from scipy import stats as ss

    rng = np.random.default_rng(0)
    x = np.column_stack([rng.standard_normal(4000), rng.exponential(size=4000)])
    r = cc.shape_check(x, n_boot=400, seed=1)
    assert r.skew == pytest.approx(ss.skew(x, axis=0)) and r.kurt == pytest.approx(ss.kurtosis(x, axis=0))
    assert r.status == ["holds", "fails"] and r.overall == "fails"
    assert r.skew_ci[1, 0] > 0.5 and r.skew_ci[0, 0] < r.skew[0] < r.skew_ci[0, 1]
    small = cc.shape_check(rng.standard_normal((30, 1)), n_boot=400, seed=2)
    assert small.status == ["undecided"] and small.overall == "undecided"
    again = cc.shape_check(x, n_boot=400, seed=1)
    assert np.array_equal(again.kurt_ci, r.kurt_ci)  # the seed fixes the bootstrap
    with pytest.raises(ValueError, match="at least 8"):
        cc.shape_check(np.zeros((5, 2)))
