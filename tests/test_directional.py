"""The directional estimators against closed forms, scipy and direct sampling, in float64."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from sgdbook import directional as vd


def test_angle_deg_known_values():
    u = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    v = torch.tensor([[0.0, 2.0], [-3.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(vd.angle_deg(u, v), torch.tensor([90.0, 180.0, 0.0], dtype=torch.float64))


def test_kappa_hat_closed_form_and_derivative():
    d = 7
    r = np.linspace(0.0, 0.95, 40)
    assert np.allclose(vd.kappa_hat(r, d), r * (d - r**2) / (1 - r**2))
    h = 1e-6
    fd = (vd.kappa_hat(r + h, d) - vd.kappa_hat(r - h, d)) / (2 * h)
    assert np.allclose(vd.kappa_hat_derivative(r, d), fd, rtol=1e-6)
    # the paper's printed example of Lemma 1's erratum: d = 2, r = 0.5 gives 3.222...
    assert vd.kappa_hat_derivative(0.5, 2) == pytest.approx(3.2222222, rel=1e-6)


def test_mean_resultant_length_by_hand():
    x = torch.tensor([[2.0, 0.0], [0.0, 5.0]], dtype=torch.float64)
    assert vd.mean_resultant_length(x).item() == pytest.approx(math.sqrt(2) / 2)


@pytest.mark.parametrize("d,kappa", [(3, 0.0), (3, 2.0), (10, 5.0), (50, 40.0), (1000, 300.0)])
def test_wood_cosines_mean_matches_bessel_ratio(d, kappa):
    rng = np.random.default_rng(0)
    w = vd.wood_cosines(d, kappa, 40_000, rng)
    assert np.all(np.abs(w) <= 1)
    se = w.std() / math.sqrt(w.size)
    assert abs(w.mean() - vd.vmf_mean_cosine(d, kappa)) < 4.5 * se


def test_wood_cosines_match_scipy_vonmises_fisher():
    d, kappa = 5, 3.0
    mu = np.zeros(d)
    mu[0] = 1.0
    ref = stats.vonmises_fisher(mu, kappa).rvs(4000, random_state=np.random.default_rng(1)) @ mu
    ours = vd.wood_cosines(d, kappa, 4000, np.random.default_rng(2))
    assert stats.ks_2samp(ref, ours).pvalue > 1e-3


def test_sample_vmf_unit_norm_mean_direction_and_determinism(gen):
    d = 6
    mu = torch.tensor([1.0, 2.0, 0.0, -1.0, 0.5, 0.0], dtype=torch.float64)
    x = vd.sample_vmf(mu, 4.0, 20_000, gen, chunk=777)
    assert x.dtype == torch.float64 and x.shape == (20_000, d)
    torch.testing.assert_close(x.norm(dim=1), torch.ones(20_000, dtype=torch.float64))
    unit = mu / mu.norm()
    w = x @ unit
    assert abs(w.mean().item() - vd.vmf_mean_cosine(d, 4.0)) < 4.5 * w.std().item() / math.sqrt(20_000)
    # the tangent part has no preferred direction: its mean is ~0
    tangent = x - w[:, None] * unit
    assert tangent.mean(0).abs().max().item() < 4.5 * tangent.std(0).max().item() / math.sqrt(20_000)
    again = vd.sample_vmf(mu, 4.0, 20_000, torch.Generator().manual_seed(1234), chunk=777)
    torch.testing.assert_close(x, again, rtol=0, atol=0)


def test_sample_vmf_matches_scipy_in_distribution():
    d, kappa = 4, 6.0
    mu = np.array([0.0, 1.0, 0.0, 0.0])
    ref = stats.vonmises_fisher(mu, kappa).rvs(3000, random_state=np.random.default_rng(3))
    ours = vd.sample_vmf(torch.tensor(mu), kappa, 3000, torch.Generator().manual_seed(4)).numpy()
    for j in range(d):  # every coordinate's marginal
        assert stats.ks_2samp(ref[:, j], ours[:, j]).pvalue > 1e-3


@pytest.mark.parametrize("kappa", [0.0, 3.0, 30.0])
def test_resultant_recursion_matches_direct_sampling(kappa):
    d, ns, reps = 12, [5, 20, 40], 3000
    norms = vd.vmf_resultant_norms(d, kappa, ns, reps, torch.Generator().manual_seed(5))
    mu = torch.zeros(d, dtype=torch.float64)
    mu[0] = 1
    x = vd.sample_vmf(mu, kappa, reps * max(ns), torch.Generator().manual_seed(6)).reshape(reps, max(ns), d)
    direct = torch.stack([x[:, :n].sum(1).norm(dim=-1) for n in ns], dim=1).numpy()
    for j in range(len(ns)):
        assert stats.ks_2samp(norms[:, j], direct[:, j]).pvalue > 1e-3


def test_uniform_resultant_moments_are_exact():
    # E‖S_n‖² = n and Var‖S_n‖² = 2 n (n − 1) / d for uniform directions
    d, n, reps = 50, 30, 20_000
    s2 = vd.vmf_resultant_norms(d, 0.0, [n], reps, torch.Generator().manual_seed(7))[:, 0] ** 2
    assert abs(s2.mean() - n) < 4.5 * s2.std() / math.sqrt(reps)
    var = 2 * n * (n - 1) / d
    assert abs(s2.var() / var - 1) < 4.5 * math.sqrt(2 / reps) * 2  # generous: s² of a skewed law


def test_uniform_baseline_and_its_approximation(gen):
    d, n = 200_000, 1000
    est = vd.uniform_baseline(d, n, 400, gen)
    mean, sd = vd.uniform_kappa_hat_approx(d, n)
    assert abs(est.value - mean) < 4.5 * est.se + 1e-3 * mean
    assert est.sd == pytest.approx(sd, rel=0.15)
    assert mean == pytest.approx(d / math.sqrt(n), rel=2e-3)


def test_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="d >= 2"):
        vd.wood_cosines(1, 1.0, 3, rng)
    with pytest.raises(ValueError, match="kappa"):
        vd.wood_cosines(3, -1.0, 3, rng)
    with pytest.raises(ValueError, match="d >= 3"):
        vd.vmf_resultant_norms(2, 0.0, [3], 2, torch.Generator())
    with pytest.raises(ValueError, match="vector"):
        vd.sample_vmf(torch.ones(2, 2), 1.0, 3, torch.Generator())


@pytest.mark.cuda
def test_sample_vmf_on_cuda():
    mu = torch.zeros(100, device="cuda")
    mu[0] = 1
    x = vd.sample_vmf(mu, 10.0, 50, torch.Generator(device="cuda").manual_seed(0))
    assert x.device.type == "cuda"


@pytest.mark.parametrize("kappa", [0.3, 2.0, 25.0])
def test_kappa_mle_closed_form_d3(kappa):
    # in R^3 the mean resultant length of a vMF law is coth κ − 1/κ
    rbar = 1 / math.tanh(kappa) - 1 / kappa
    assert vd.kappa_mle(rbar, 3) == pytest.approx(kappa, rel=1e-8)
    assert vd.kappa_mle(0.0, 3) == 0.0
    with pytest.raises(ValueError):
        vd.kappa_mle(1.0, 3)


@pytest.mark.parametrize("d", [2, 3, 100, 1_920_000])
def test_rbar_of_kappa_hat_inverts_kappa_hat(d):
    assert vd.rbar_of_kappa_hat(0.0, d) == 0.0
    for rbar in (1e-6, 0.01, 0.3, 0.9, 0.999999):
        k = float(vd.kappa_hat(rbar, d))
        assert vd.rbar_of_kappa_hat(k, d) == pytest.approx(rbar, rel=1e-12)
    with pytest.raises(ValueError):
        vd.rbar_of_kappa_hat(-1.0, d)
    with pytest.raises(ValueError):
        vd.rbar_of_kappa_hat(1e20 * d, d)


def test_rayleigh_z_of_uniform_vectors_has_its_exact_mean_and_variance():
    # n uniform unit vectors in R^d: z = (n r̄² − 1) √(d/2) has mean 0 and variance (n − 1)/n
    d, n, reps = 40, 6, 20_000
    g = torch.Generator().manual_seed(5)
    x = torch.randn(reps, n, d, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=-1, keepdim=True)
    rbar = x.sum(1).norm(dim=-1) / n
    z = vd.rayleigh_z(rbar, n, d).numpy()
    var = (n - 1) / n
    assert abs(z.mean()) < 4 * math.sqrt(var / reps)
    # the sample variance's standard error from the sample fourth moment
    se_var = math.sqrt((np.mean((z - z.mean()) ** 4) - z.var() ** 2) / reps)
    assert abs(z.var(ddof=1) - var) < 4 * se_var
    # a concentrated sample is rejected
    assert vd.rayleigh_z(0.8, n, d) > 2.33
