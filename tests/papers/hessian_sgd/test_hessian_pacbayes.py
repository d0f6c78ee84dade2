"""papers.hessian_sgd.pacbayes against closed forms, torch.distributions and brute force, float64."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from sgdbook.papers.hessian_sgd import pacbayes as pb
from sgdbook.papers.hessian_sgd import stacked_mlp as sm

D = torch.float64


def test_kl_bernoulli_and_its_inverse():
    p = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=D)
    q = torch.tensor([0.3, 0.2, 0.5, 0.6, 0.8], dtype=D)
    ref = [-math.log(0.7), 0.1 * math.log(0.1 / 0.2) + 0.9 * math.log(0.9 / 0.8), 0.0,
           0.9 * math.log(0.9 / 0.6) + 0.1 * math.log(0.1 / 0.4), -math.log(0.8)]
    torch.testing.assert_close(pb.kl_bernoulli(p, q), torch.tensor(ref, dtype=D), rtol=1e-14, atol=1e-15)
    B = torch.tensor([0.3, 0.05, 0.01, 2.0], dtype=D)
    ph = torch.tensor([0.0, 0.2, 0.5, 0.1], dtype=D)
    qs = pb.kl_inverse(ph, B)
    torch.testing.assert_close(qs[0], 1 - torch.exp(-B[0]), rtol=1e-14, atol=0)  # closed form at p̂ = 0
    torch.testing.assert_close(pb.kl_bernoulli(ph, qs), B, rtol=1e-10, atol=1e-12)
    assert bool((qs >= ph).all())
    assert float(pb.kl_inverse(0.3, 1e4)) == pytest.approx(1.0, abs=1e-12)  # vacuous
    assert float(pb.kl_inverse(1.0, 0.1)) == 1.0
    # kl is quadratic near p̂: at B = 0 the root is resolved to about √(machine ε), not ε
    assert float(pb.kl_inverse(0.3, 0.0)) == pytest.approx(0.3, abs=1e-7)
    with pytest.raises(ValueError, match=">= 0"):
        pb.kl_inverse(0.1, -1.0)


def test_gaussian_kl_against_torch_distributions(gen):
    p = 5
    mq, mp = torch.randn(p, generator=gen, dtype=D), torch.randn(p, generator=gen, dtype=D)
    vq, vp = torch.rand(p, generator=gen, dtype=D) + 0.1, torch.rand(p, generator=gen, dtype=D) + 0.1
    ref = kl_divergence(Normal(mq, vq.sqrt()), Normal(mp, vp.sqrt())).sum()
    torch.testing.assert_close(pb.gaussian_kl_diag(mq, vq, mp, vp), ref, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(pb.gaussian_kl(mq, torch.diag(vq), mp, torch.diag(vp)), ref, rtol=1e-12, atol=1e-13)
    A, B = torch.randn(p, p, generator=gen, dtype=D), torch.randn(p, p, generator=gen, dtype=D)
    Sq, Sp = A @ A.T + 0.1 * torch.eye(p, dtype=D), B @ B.T + 0.1 * torch.eye(p, dtype=D)
    ref = kl_divergence(MultivariateNormal(mq, Sq), MultivariateNormal(mp, Sp))
    torch.testing.assert_close(pb.gaussian_kl(mq, Sq, mp, Sp), ref, rtol=1e-11, atol=1e-12)


def test_lemma1_kl_invariant_under_an_invertible_linear_map(gen):
    p = 6
    mq, mp = torch.randn(p, generator=gen, dtype=D), torch.randn(p, generator=gen, dtype=D)
    A, B = torch.randn(p, p, generator=gen, dtype=D), torch.randn(p, p, generator=gen, dtype=D)
    Sq, Sp = A @ A.T + 0.2 * torch.eye(p, dtype=D), B @ B.T + 0.2 * torch.eye(p, dtype=D)
    T = torch.randn(p, p, generator=gen, dtype=D) + 2 * torch.eye(p, dtype=D)
    before = pb.gaussian_kl(mq, Sq, mp, Sp)
    after = pb.gaussian_kl(T @ mq, T @ Sq @ T.T, T @ mp, T @ Sp @ T.T)
    torch.testing.assert_close(after, before, rtol=1e-9, atol=1e-10)


def test_bound_terms_exact_kl_and_eq106(gen):
    R, p, n = 4, 30, 100
    theta = torch.randn(R, p, generator=gen, dtype=D)
    theta0 = torch.randn(R, p, generator=gen, dtype=D)
    h = torch.rand(R, p, generator=gen, dtype=D) * 8
    sigma = torch.rand(p, generator=gen, dtype=D) + 0.3
    bt = pb.bound_terms(theta, theta0, h, sigma, n, delta=0.05)
    s2 = sigma.square()
    nu = torch.maximum(h, 1 / s2)
    torch.testing.assert_close(bt.precision, nu)
    torch.testing.assert_close(bt.kl, pb.gaussian_kl_diag(theta, 1 / nu, theta0, s2.expand(R, p)), rtol=1e-12, atol=1e-12)
    for r in range(R):
        sharp = [j for j in range(p) if h[r, j] > 1 / s2[j]]
        assert int(bt.d_tilde[r]) == len(sharp)
        eff = sum(math.log(float(h[r, j] * s2[j])) for j in sharp)
        assert float(bt.effective_curvature[r]) == pytest.approx(eff, rel=1e-12, abs=1e-12)
    torch.testing.assert_close(bt.frobenius, ((theta - theta0).square() / s2).sum(1))
    assert bool((bt.first_sum <= 0).all())
    assert bool((2 * bt.kl <= bt.effective_curvature + bt.frobenius + 1e-12).all())  # (106)
    torch.testing.assert_close(bt.rhs, (bt.effective_curvature + bt.frobenius) / (2 * n) + math.log(101 / 0.05) / n)
    torch.testing.assert_close(bt.rhs_exact, (bt.kl + math.log(101 / 0.05)) / n)
    torch.testing.assert_close(pb.pac_bayes_rhs(bt.kl, n, 0.05, 4), bt.rhs_exact + math.log(4) / n)
    iso = pb.bound_terms(theta, 0.0, h, 0.5, n)  # Corollary 4: isotropic prior, θ₀ = 0
    torch.testing.assert_close(iso.frobenius, theta.square().sum(1) / 0.25)


def test_bad_inputs_name_the_fix(gen):
    th = torch.zeros(3, dtype=D)
    for d in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"delta must be in \(0, 1\)"):
            pb.bound_terms(th, th, th, 1.0, 10, delta=d)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        pb.bound_terms(th, th, th, 0.0, 10)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        pb.posterior_precision(th, torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="> 0"):
        pb.check_alphas([2.0, -0.5, -1.0])
    with pytest.raises(ValueError, match="Π α_l = 1"):
        pb.check_alphas([2.0, 0.6, 1.0])
    with pytest.raises(ValueError, match="one α per layer"):
        pb.check_alphas([2.0, 0.5], layers=3)


def _net(gen, R=2, sizes=(5, 4, 6, 3)):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers.append((torch.randn(R, b, a, generator=gen, dtype=D), torch.randn(R, b, generator=gen, dtype=D)))
    x = torch.randn(12, sizes[0], generator=gen, dtype=D)
    y = torch.randint(0, sizes[-1], (12,), generator=gen)
    return layers, x, y


def test_alpha_scale_keeps_the_function_and_corollary3(gen):
    layers, x, y = _net(gen)
    alphas = [4.0, 0.5, 0.5]
    scaled = pb.alpha_scale(layers, alphas)
    torch.testing.assert_close(sm.forward(scaled, x), sm.forward(layers, x), rtol=1e-12, atol=1e-12)  # Def. 1
    a = pb.alpha_scale_vector(sm.layer_sizes(layers), alphas)
    theta, theta_a = sm.flatten(layers), sm.flatten(scaled)
    torch.testing.assert_close(theta_a, a * theta, rtol=0, atol=0)
    h, h_a = sm.hessian_diag(layers, x, y), sm.hessian_diag(scaled, x, y)
    torch.testing.assert_close(h_a, h / a.square(), rtol=1e-10, atol=1e-13)  # diag of (99)
    theta0 = torch.randn_like(theta)
    sigma = 0.7
    bt = pb.bound_terms(theta, theta0, h, sigma, 12)
    bt_a = pb.bound_terms(theta_a, a * theta0, h_a, sigma * a, 12)  # prior transformed too (98)
    for k in ("kl", "effective_curvature", "frobenius", "d_tilde"):
        torch.testing.assert_close(getattr(bt_a, k), getattr(bt, k), rtol=1e-10, atol=1e-12)  # Corollary 3
    fixed = pb.bound_terms(theta_a, theta0, h_a, sigma, 12)  # a fixed isotropic prior: not invariant
    assert not torch.allclose(fixed.kl, bt.kl, rtol=1e-3)
    with pytest.raises(ValueError):
        pb.alpha_scale(layers, [2.0, 2.0, 2.0])


def test_gibbs_error_against_a_loop(gen):
    layers, x, y = _net(gen, R=3)
    theta = sm.flatten(layers)
    shapes = [(W.shape[-2], W.shape[-1], True) for W, _ in layers]

    def err(T):
        return (sm.forward(sm.unflatten(T, shapes), x).argmax(-1) != y).to(D).mean(1)

    prec = torch.rand_like(theta) * 5 + 1
    ge = pb.gibbs_error(err, theta, prec, 7, torch.Generator().manual_seed(3), chunk=4)
    noise = torch.randn(3, 7, theta.shape[1], generator=torch.Generator().manual_seed(3), dtype=D)
    ref = torch.stack([err(theta[r] + noise[r] / prec[r].sqrt()) for r in range(3)])
    torch.testing.assert_close(ge.per_draw, ref)
    torch.testing.assert_close(ge.mean, ref.mean(1))
    torch.testing.assert_close(ge.se, ref.std(1) / math.sqrt(7))
    sharp = pb.gibbs_error(err, theta, torch.full_like(theta, 1e20), 3, gen)
    torch.testing.assert_close(sharp.mean, err(theta))
