"""The Section 3.3 geometry against brute force, in float64."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate
from sgdbook import directional as vd
from sgdbook.papers.vmf_directional import theory as vt

F64 = torch.float64


# ------------------------------------------------------------------ vMF density and MLE


@pytest.mark.parametrize("d", [2, 3, 4])
def test_sphere_quadrature_moments(d):
    x, w = vt.sphere_quadrature(d, 24)
    area = vt.sphere_area(d)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0)
    assert w.sum() == pytest.approx(area, rel=1e-12)
    second = (w[:, None, None] * x[:, :, None] * x[:, None, :]).sum(0)
    assert np.allclose(second, np.eye(d) * area / d, atol=1e-12)  # ∫ x xᵀ = area/d · I
    assert np.allclose((w[:, None] * x).sum(0), 0.0, atol=1e-12)


def test_vmf_normaliser_against_scipy_quad_in_3d():
    # on S² the vMF density depends on the polar angle only: ∫ = 2π ∫_0^π e^{κ cos θ} sin θ dθ
    for kappa in (0.0, 0.5, 5.0, 40.0):
        val, _ = integrate.quad(lambda t, k=kappa: 2 * math.pi * math.exp(k * math.cos(t)) * math.sin(t), 0, math.pi)
        assert math.exp(vt.vmf_log_normaliser(3, kappa)) * val == pytest.approx(1.0, rel=1e-10)
    # and the closed form C_3(κ) = κ / (4π sinh κ)
    assert math.exp(vt.vmf_log_normaliser(3, 2.0)) == pytest.approx(2.0 / (4 * math.pi * math.sinh(2.0)), rel=1e-12)


@pytest.mark.parametrize("d,kappa", [(2, 3.0), (4, 10.0), (4, 0.0)])
def test_vmf_density_integrates_to_one_with_the_quadrature(d, kappa):
    rng = np.random.default_rng(0)
    mu = rng.standard_normal(d)
    mu /= np.linalg.norm(mu)
    x, w = vt.sphere_quadrature(d, 60)
    total = (w * np.exp(vt.vmf_log_normaliser(d, kappa) + kappa * (x @ mu))).sum()
    assert total == pytest.approx(1.0, rel=1e-10)


@pytest.mark.parametrize("d,kappa", [(2, 5.0), (3, 0.3), (10, 10.0), (1000, 2500.0)])
def test_kappa_mle_inverts_the_bessel_ratio(d, kappa):
    rbar = vd.vmf_mean_cosine(d, kappa)
    assert vt.kappa_mle(rbar, d) == pytest.approx(kappa, rel=1e-8)
    assert vt.kappa_mle(0.0, d) == 0.0


# ------------------------------------------------------------------------------ Lemma 1


def test_second_derivative_by_finite_differences():
    r = np.linspace(0.0, 0.9, 31)
    for d in (2, 5, 100):
        h = 1e-5
        fd = (vd.kappa_hat_derivative(r + h, d) - vd.kappa_hat_derivative(r - h, d)) / (2 * h)
        assert np.allclose(vt.kappa_hat_second_derivative(r, d), fd, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------- Lemma 2 and Theorem 3 geometry


def _random_points(gen, shape, n_b, d):
    return torch.randn(*shape, n_b, d, generator=gen, dtype=F64), torch.randn(*shape, d, generator=gen, dtype=F64)


def test_normalised_sum_and_kappa_hat_at_by_hand():
    p = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=F64)
    w = torch.zeros(2, dtype=F64)
    torch.testing.assert_close(vt.normalised_sum(p, w), torch.tensor([1.0, 1.0], dtype=F64))
    rbar = math.sqrt(2) / 2
    assert float(vt.kappa_hat_at(p, w)) == pytest.approx(rbar * (2 - rbar**2) / (1 - rbar**2))


def test_resultant_slope_matches_finite_differences(gen):
    p, w = _random_points(gen, (50,), 7, 5)
    v = torch.randn(50, 5, generator=gen, dtype=F64)
    h = 1e-6
    f = lambda e: vt.normalised_sum(p, w + e * v).norm(dim=-1) ** 2
    fd = (f(h) - f(-h)) / (2 * h)
    torch.testing.assert_close(vt.resultant_slope(p, w, v), fd, rtol=1e-6, atol=1e-8)
    # the paper's closed form of f'(0) is the slope along S
    torch.testing.assert_close(vt.lemma2_slope(p, w), vt.resultant_slope(p, w, vt.normalised_sum(p, w)))
    assert (vt.lemma2_slope(p, w) < 0).all()


def test_theorem3_threshold_is_exact_and_at_least_twice_the_bound(gen):
    p, w = _random_points(gen, (200,), 6, 4)
    s = vt.normalised_sum(p, w)
    xi, tdir = vt.theorem3_threshold(p, w)
    below = vt.resultant_slope(p, w, s - 0.999 * xi[:, None] * tdir)
    above = vt.resultant_slope(p, w, s - 1.001 * xi[:, None] * tdir)
    assert (below < 0).all() and (above > 0).all()
    # no other direction does worse: random directions at 0.999 ξ_true keep the decrease
    t = torch.randn(200, 16, 4, generator=gen, dtype=F64)
    t = 0.999 * xi[:, None, None] * t / t.norm(dim=-1, keepdim=True)
    slopes = vt.resultant_slope(p[:, None], w[:, None], s[:, None] - t)
    assert (slopes < 0).all()
    assert (xi / vt.theorem3_bound(p, w) >= 2 - 1e-12).all()


def test_collinear_counterexample_of_lemma2():
    p = torch.tensor([[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]], dtype=F64)
    w = torch.zeros(2, dtype=F64)
    s = vt.normalised_sum(p, w)
    for eps in (1e-1, 1e-3, 1e-6):
        assert float(vt.normalised_sum(p, w + eps * s).norm()) == pytest.approx(float(s.norm()), abs=1e-14)
    assert float(vt.lemma2_slope(p, w)) == 0.0


# ---------------------------------------------------------------------- Supplement D


def test_condition_number_equals_eigenvalue_ratio_for_spd(gen):
    h = vt.random_spd((20,), 6, 7.5, gen)
    lam = torch.linalg.eigvalsh(h)
    torch.testing.assert_close(vt.condition_number(h), lam[:, -1] / lam[:, 0])
    torch.testing.assert_close(vt.condition_number(h), torch.full((20,), 7.5, dtype=F64))
    torch.testing.assert_close(h, h.transpose(-1, -2))


def test_kantorovich_bound_is_attained_and_never_beaten(gen):
    for c in (1.5, 4.0, 100.0):
        h = vt.random_spd((10,), 5, c, gen)
        x = torch.randn(10, 2000, 5, generator=gen, dtype=F64)
        gap = vt.direction_gap_sq(h[:, None], x)
        tight = 2 - 2 * vt.kantorovich_min_cosine(c)
        assert (gap <= tight + 1e-12).all() and (tight <= 2 - 2 / c)
        worst = vt.direction_gap_sq(h, vt.kantorovich_worst_vector(h))
        torch.testing.assert_close(worst, torch.full((10,), tight, dtype=F64))
    assert vt.kantorovich_min_cosine(4.0) == pytest.approx(0.8)


# --------------------------------------------------------------- Definition 2 and SGD


@pytest.mark.slow
def test_ball_minimiser_against_projected_gradient(gen):
    h = vt.random_spd((30,), 3, 10.0, gen)
    p = torch.randn(30, 3, generator=gen, dtype=F64)
    w = torch.randn(30, 3, generator=gen, dtype=F64)
    r = (p - w).norm(dim=-1) * torch.linspace(0.05, 1.5, 30, dtype=F64)
    got = vt.ball_minimiser(h, p, w, r)
    v = w.clone()
    step = 1.0 / torch.linalg.eigvalsh(h)[:, -1:]
    for _ in range(20000):  # brute force: projected gradient descent onto the ball
        v = v - step * (h @ (v - p).unsqueeze(-1)).squeeze(-1)
        off = v - w
        v = w + off * torch.clamp(r / off.norm(dim=-1), max=1.0).unsqueeze(-1)
    torch.testing.assert_close(got, v, atol=1e-8, rtol=0)
    inside = (p - w).norm(dim=-1) <= r
    torch.testing.assert_close(got[inside], p[inside])


def test_minibatch_quadratics_and_sgd_epoch_by_hand(gen):
    n, m, d = 5, 2, 3
    a = vt.random_spd((n,), d, 3.0, gen)
    anchors = torch.randn(n, d, generator=gen, dtype=F64)
    c = (a @ anchors.unsqueeze(-1)).squeeze(-1)
    idx = torch.tensor(list(itertools.combinations(range(n), m)))
    h, b = vt.minibatch_quadratics(a[None], c[None], idx)
    h, b = h[0], b[0]
    # per-run minibatches give the same result
    h2, b2 = vt.minibatch_quadratics(a[None].expand(2, -1, -1, -1), c[None].expand(2, -1, -1), idx.expand(2, -1, -1))
    torch.testing.assert_close(h2[1], h)
    torch.testing.assert_close(b2[1], b)
    w = torch.randn(d, generator=gen, dtype=F64)
    for k, batch in enumerate(idx.tolist()):  # the gradient of the mean of the examples' losses
        want = -sum(a[j] @ (w - anchors[j]) for j in batch) / m
        torch.testing.assert_close(vt.negative_gradients(h, b, w)[k], want)
    w_end, nsum = vt.sgd_epoch(h[None], b[None], w[None], 0.1)
    v, s = w.clone(), torch.zeros(d, dtype=F64)
    for k in range(len(idx)):
        g = b[k] - h[k] @ v
        s, v = s + g / g.norm(), v + 0.1 * g
    torch.testing.assert_close(w_end[0], v)
    torch.testing.assert_close(nsum[0], s)
