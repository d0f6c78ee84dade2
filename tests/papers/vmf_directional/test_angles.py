"""sgdbook.papers.vmf_directional.angles against brute force (Python loops over itertools, quadrature, sampling), float64."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats
from sgdbook.papers.vmf_directional import angles as th


def _brute_moments(g, m):
    """A plain Python loop over itertools.combinations."""
    n = g.shape[0]
    ghs = [g[list(c)].mean(0) for c in itertools.combinations(range(n), m)]
    G = torch.stack(ghs)
    norms = G.norm(dim=1)
    mean = G.mean(0)
    cov = sum(torch.outer(x - mean, x - mean) for x in ghs) / len(ghs)
    units = torch.stack([x / x.norm() if x.norm() > 0 else x for x in ghs])
    return (
        mean,
        cov,
        norms.mean(),
        (norms**2).mean(),
        norms.var(unbiased=False),
        units.mean(0).norm(),
    )


@pytest.mark.parametrize("n,m,d", [(6, 1, 3), (6, 2, 2), (7, 3, 4), (8, 8, 2), (10, 4, 5)])
def test_minibatch_moments_against_a_loop_and_closed_forms(n, m, d):
    gen = torch.Generator().manual_seed(n * 100 + m * 10 + d)
    g = torch.randn(n, d, generator=gen, dtype=torch.float64) + 0.7
    mo = th.exact_minibatch_moments(g, m, chunk=7)  # a small chunk exercises the chunking
    mean, cov, mn, msq, var, rbar = _brute_moments(g, m)
    assert mo.count == math.comb(n, m)
    torch.testing.assert_close(mo.mean, mean, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(mo.cov, cov, rtol=1e-11, atol=1e-13)
    assert mo.mean_norm == pytest.approx(float(mn), rel=1e-12)
    assert mo.mean_sq_norm == pytest.approx(float(msq), rel=1e-12)
    assert mo.var_norm == pytest.approx(float(var), rel=1e-9, abs=1e-14)
    assert mo.mean_direction_length == pytest.approx(float(rbar), rel=1e-12)
    # closed forms: E ĝ = g, exact finite-population covariance, Hoffer's decomposition
    torch.testing.assert_close(mo.mean, g.mean(0), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(mo.cov, th.exact_minibatch_cov(g, m), rtol=1e-11, atol=1e-13)
    gbar = g.mean(0)
    if m < n:
        torch.testing.assert_close(
            th.hoffer_cov(g, m),
            (n - 1) / (n - m) * mo.cov + torch.outer(gbar, gbar) / m,
            rtol=1e-11,
            atol=1e-13,
        )


def test_theorem1_sides_on_the_extremal_case():
    # g_i = ±2 e_k, n = 6, m = 2: E‖ĝ‖² − ‖g‖² = 1.6 = (n − m)γ/(m(n − 1)), half the printed bound 3.2
    g = torch.cat([2 * torch.eye(3), -2 * torch.eye(3)]).double()
    sides = th.theorem1_sides(g, 2)
    lhs, rhs = sides["lemma_a1"]
    assert lhs == pytest.approx(1.6, rel=1e-12) and rhs == pytest.approx(3.2, rel=1e-12)
    assert th.gamma_max_inner(g) == 4.0
    assert sides["gns"][1] == math.inf  # ‖g‖ = 0: Eq. (1) says nothing
    # by hand: 3 of the 15 pairs cancel, the other 12 have ‖ĝ‖ = √2
    assert sides["mean_gap"][0] == pytest.approx(12 / 15 * math.sqrt(2), rel=1e-12)
    assert sides["var"][0] == pytest.approx(1.6 - (12 / 15 * math.sqrt(2)) ** 2, rel=1e-12)


def test_theorem1_sides_hold_with_half_the_constant():
    gen = torch.Generator().manual_seed(3)
    for _ in range(50):
        n = int(torch.randint(3, 9, (1,), generator=gen))
        m = int(torch.randint(1, n, (1,), generator=gen))
        g = torch.randn(n, 3, generator=gen, dtype=torch.float64) + torch.randn(
            3, generator=gen, dtype=torch.float64
        )
        for name, (lhs, rhs) in th.theorem1_sides(g, m).items():
            assert -1e-12 <= lhs <= (0.5 if name != "gns" else math.sqrt(0.5)) * rhs + 1e-12, name


@pytest.mark.parametrize("d", [2, 3, 4, 7, 40])
def test_inner_product_law_against_quadrature_and_sampling(d):
    mass = integrate.quad(lambda t: th.inner_product_pdf(t, d), -1, 1)[0]
    var = integrate.quad(lambda t: t * t * th.inner_product_pdf(t, d), -1, 1)[0]
    assert mass == pytest.approx(1, abs=1e-7) and var == pytest.approx(1 / d, abs=1e-7)
    for t in (-0.5, 0.1, 0.8):
        assert th.inner_product_cdf(t, d) == pytest.approx(
            integrate.quad(lambda s: th.inner_product_pdf(s, d), -1, t)[0], abs=1e-7
        )
    x = th.random_pair_inner_products(d, 20000, torch.Generator().manual_seed(d))
    assert stats.kstest(x, lambda t: th.inner_product_cdf(t, d)).pvalue > 1e-3


@pytest.mark.parametrize("d", [2, 3, 5, 12, 1000, 635_200])
def test_angle_law_against_quadrature(d):
    sd = th.angle_limit_sd_deg(d)
    lo, hi = (0.0, 180.0) if d < 100 else (90 - 12 * sd, 90 + 12 * sd)
    mass = integrate.quad(lambda x: th.angle_pdf_deg(x, d), lo, hi, points=[90.0], limit=200)[0]
    var = integrate.quad(
        lambda x: (x - 90) ** 2 * th.angle_pdf_deg(x, d), lo, hi, points=[90.0], limit=200
    )[0]
    assert mass == pytest.approx(1, abs=1e-8)
    assert var == pytest.approx(th.angle_var_deg(d), rel=1e-7)
    for z in (-1.3, 0.4):
        x = 90 + z * sd
        assert th.angle_cdf_deg(x, d) == pytest.approx(
            0.5 + integrate.quad(lambda s: th.angle_pdf_deg(s, d), 90.0, x)[0], abs=1e-9
        )


def test_angle_variance_closed_forms():
    assert th.angle_var_deg(2) == pytest.approx(180**2 / 12)  # uniform on [0°, 180°]
    assert th.angle_var_deg(3) == pytest.approx(
        th.DEG**2 * (math.pi**2 / 4 - 2)
    )  # density sin θ / 2
    d = np.array([10, 100, 10**4])
    assert np.allclose(
        [th.angle_var_deg(int(k)) * k / th.DEG**2 for k in d], 1 + 1 / d, rtol=0, atol=2 / d**2
    )
    assert th.angle_limit_sd_deg(635_200) == pytest.approx(0.07189, abs=5e-6)


def test_angles_to_random_direction_follow_the_exact_law():
    a = th.angles_to_random_direction(50, 5000, torch.Generator().manual_seed(5), chunk=999)
    assert a.shape == (5000,)
    assert stats.kstest(a, lambda x: th.angle_cdf_deg(x, 50)).pvalue > 1e-3


def test_ks_distances_shrink_like_one_over_d():
    ks = [th.angle_ks(d) for d in (10, 100, 1000)]
    assert ks[0] > ks[1] > ks[2] and ks[2] * 1000 == pytest.approx(0.1635, rel=0.02)
    assert th.inner_product_ks(1000) * 1000 == pytest.approx(0.1377, rel=0.02)
    assert th.ks_to_standard_normal(special.ndtr) == 0.0
