"""Hutchinson trace and diagonal, stochastic Lanczos quadrature (sgdbook.curvature.stochastic)
against the dense Hessian and exact moments, in float64.

Peer pitfalls checked here: every probe is used (PyHessian stops early), also more probes than
dimensions (curvlinops refuses them).
"""

import math

import pytest
import torch

from reference import F64, symmetric_with_spectrum
from sgdbook import curvature as cv
from sgdbook.curvature.stochastic import _lanczos_tridiag


def test_hutchinson_trace_and_its_standard_error(mlp_case):
    _, _, _, H = mlp_case
    p = H.shape[0]
    n = 4000  # more probes than dimensions (curvlinops refuses this)
    est = cv.hutchinson_trace(
        cv.MatrixHVP(H), p, n, torch.Generator().manual_seed(0), batch_size=999
    )
    assert est.n_probes == n and est.n_products == n
    assert abs(est.value - float(torch.trace(H))) < 4.5 * est.se
    sd_exact = math.sqrt(2 * (float((H**2).sum()) - float((H.diag() ** 2).sum())))
    assert est.sd == pytest.approx(sd_exact, rel=0.1)
    assert est.se == pytest.approx(est.sd / math.sqrt(n))


def test_hutchinson_uses_every_probe_through_the_hvp(mlp_case):
    _, f, theta, H = mlp_case
    op = cv.HVP(f, theta)
    few = cv.hutchinson_trace(
        op, theta.numel(), 37, torch.Generator().manual_seed(1), batch_size=10
    )
    assert few.n_products == 37 == op.n_products  # no early stop after two probes (PyHessian)
    assert abs(few.value - float(torch.trace(H))) < 4.5 * few.se


def test_hutchinson_diagonal_and_its_standard_errors(mlp_case):
    _, _, _, H = mlp_case
    p = H.shape[0]
    n = 4000
    est = cv.hutchinson_diag(
        cv.MatrixHVP(H), p, n, torch.Generator().manual_seed(2), batch_size=300
    )
    assert est.n_products == n and est.value.shape == (p,)
    z = (est.value - H.diag()) / est.se
    assert z.abs().max() < 4.5
    se_exact = (((H**2).sum(1) - H.diag() ** 2) / n).sqrt()
    ratio = est.se / se_exact
    assert 0.85 < ratio.min() and ratio.max() < 1.15


def test_hutchinson_diagonal_merges_blocks_exactly(mlp_case):
    _, _, _, H = mlp_case
    p = H.shape[0]
    a = cv.hutchinson_diag(cv.MatrixHVP(H), p, 50, torch.Generator().manual_seed(3), batch_size=7)
    Z = 2 * torch.randint(0, 2, (50, p), generator=torch.Generator().manual_seed(3)).to(F64) - 1
    samples = Z * (Z @ H)
    torch.testing.assert_close(a.value, samples.mean(0))
    torch.testing.assert_close(a.se, samples.std(0) / math.sqrt(50))


def test_lanczos_quadrature_is_exact_for_low_moments(mlp_case):
    _, _, _, H = mlp_case
    p = H.shape[0]
    g = torch.Generator().manual_seed(4)
    V0 = torch.randn(3, p, generator=g, dtype=F64)
    V0 = V0 / V0.norm(dim=1, keepdim=True)
    m = 8
    theta, Y = torch.linalg.eigh(_lanczos_tridiag(cv.MatrixHVP(H), V0, m, True))
    w = Y[:, 0, :] ** 2
    torch.testing.assert_close(w.sum(1), torch.ones(3, dtype=F64))
    Hk = torch.eye(p, dtype=F64)
    for k in range(1, 2 * m):  # Gauss quadrature with m nodes is exact to degree 2m − 1
        Hk = Hk @ H
        torch.testing.assert_close(
            (w * theta**k).sum(1), ((V0 @ Hk) * V0).sum(1), rtol=1e-8, atol=1e-14
        )


def test_spectral_density_mass_and_moments(mlp_case):
    _, f, theta, H = mlp_case
    p = H.shape[0]
    op = cv.HVP(f, theta)
    n_probes, n_steps = 40, 30
    sd = cv.spectral_density(op, p, n_probes, n_steps, torch.Generator().manual_seed(5), grid=4000)
    assert sd.n_products == n_probes * n_steps == op.n_products
    assert sd.nodes.shape == sd.weights.shape == (n_probes, n_steps)
    assert torch.trapezoid(sd.density, sd.grid).item() == pytest.approx(1.0, abs=1e-6)
    m1 = (sd.weights * sd.nodes).sum(1)  # per-probe first moments
    m2 = (sd.weights * sd.nodes**2).sum(1)
    for sample, exact in ((m1, torch.trace(H) / p), (m2, torch.trace(H @ H) / p)):
        assert abs(sample.mean() - exact) < 4.5 * sample.std() / math.sqrt(n_probes)
    # the smoothed density carries the same moments (plus sigma² in the second)
    torch.testing.assert_close(
        torch.trapezoid(sd.grid * sd.density, sd.grid), m1.mean(), rtol=1e-6, atol=1e-9
    )
    torch.testing.assert_close(
        torch.trapezoid(sd.grid**2 * sd.density, sd.grid),
        m2.mean() + sd.sigma**2,
        rtol=1e-6,
        atol=1e-9,
    )
    assert (sd.density_se >= 0).all() and sd.density.min() >= 0


def test_spectral_density_on_a_low_rank_operator():
    # three distinct eigenvalues: every run breaks down after three steps and stays finite
    spectrum = torch.tensor([2.0] * 10 + [0.0] * 25 + [-1.0] * 5, dtype=F64)
    H = symmetric_with_spectrum(spectrum)
    sd = cv.spectral_density(cv.MatrixHVP(H), 40, 6, 10, torch.Generator().manual_seed(6))
    assert torch.isfinite(sd.nodes).all() and torch.isfinite(sd.density).all()
    mass = {v: float(sd.weights[(sd.nodes - v).abs() < 1e-8].sum()) / 6 for v in (2.0, 0.0, -1.0)}
    assert sum(mass.values()) == pytest.approx(1.0)
    assert mass[2.0] == pytest.approx(10 / 40, abs=0.15) and mass[-1.0] == pytest.approx(
        5 / 40, abs=0.1
    )


def test_bad_arguments(mlp_case):
    _, f, theta, _ = mlp_case
    with pytest.raises(ValueError, match="probe"):
        cv.hutchinson_trace(cv.HVP(f, theta), theta.numel(), 0, torch.Generator())
