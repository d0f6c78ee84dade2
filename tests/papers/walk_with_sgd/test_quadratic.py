"""walk-with-sgd Section 6: GD on quadratics, against brute force in float64."""

from __future__ import annotations

import pytest
import torch

from sgdbook.papers.walk_with_sgd import quadratic as q


def test_regime_and_rate():
    lam = 4.0
    assert q.regime(0.1, lam) == "over-damped"
    assert q.regime(0.25, lam) == "critical"
    assert q.regime(0.4, lam) == "under-damped"
    assert q.regime(0.5, lam) == "boundary"
    assert q.regime(0.6, lam) == "divergent"
    assert q.rate(0.4, lam) == pytest.approx(0.6)
    with pytest.raises(ValueError):
        q.regime(-1, lam)


def test_gd_matches_loop_and_rates():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(5, 5, generator=g, dtype=torch.float64)
    H = A @ A.T
    th0 = torch.randn(5, generator=g, dtype=torch.float64)
    run = q.gd(H, th0, 0.05, 7)
    t = th0.clone()
    for s in range(7):
        t = t - 0.05 * H @ t
        assert torch.allclose(run.theta[s + 1], t, atol=1e-14)
    assert torch.allclose(run.grads, run.theta @ H, atol=1e-12)
    lam, U = torch.linalg.eigh(H)
    c = run.theta @ U  # eigen-coordinates shrink by (1 − ηλ) per step
    assert torch.allclose(c[1:], c[:-1] * (1 - 0.05 * lam), atol=1e-12)


def test_segment_minimum_against_a_fine_grid():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(4, 4, generator=g, dtype=torch.float64)
    H = A @ A.T + 0.1 * torch.eye(4, dtype=torch.float64)
    lmax = float(torch.linalg.eigvalsh(H).max())
    for eta in (0.5 / lmax, 1.5 / lmax, 2.2 / lmax):
        run = q.gd(H, torch.randn(4, generator=g, dtype=torch.float64), eta, 6)
        sm = q.segment_minimum(H, run.theta)
        grid = torch.linspace(0, 1, 20001, dtype=torch.float64)
        L = q.segment_losses(H, run.theta, grid)
        assert torch.allclose(sm.floor, L.min(1).values, rtol=1e-7, atol=1e-8 * float(L.max()))
        assert bool((sm.floor <= L.min(1).values + 1e-12).all())  # exact: never above the grid
        inside = (L.argmin(1) > 0) & (L.argmin(1) < grid.numel() - 1)
        assert torch.equal(sm.interior, inside)
        # the exact criterion: interior minimum iff consecutive gradients point against each other
        cos = torch.nn.functional.cosine_similarity(run.grads[:-1], run.grads[1:], dim=1)
        assert torch.equal(sm.interior, cos < 0)
