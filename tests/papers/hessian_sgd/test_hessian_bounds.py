"""papers.hessian_sgd.bounds (and dynamics.delta_at_quantiles) on tiny problems, float64."""

import math

import numpy as np
import torch

from sgdbook.papers.hessian_sgd import bounds, dynamics, setup
from sgdbook.papers.hessian_sgd import stacked_mlp as sm
from sgdbook.papers.hessian_sgd import theory as th


def test_escape_problems_are_stationary_and_exact(gen):
    ls = bounds.escape_least_squares(30, 3, 2, gen)
    assert ls.grad_norm < 1e-12 and ls.minibatches == 900
    assert math.isclose(ls.mean, ls.taylor, rel_tol=1e-10)  # quadratic, μ = 0: E[Δ] = (η²/2) Tr(H M^(m))
    assert ls.share_positive == 1.0 and ls.centre >= ls.centre_batch >= ls.taylor
    lg = bounds.escape_logistic(30, 3, 1, gen)
    assert lg.grad_norm < 1e-10 and lg.mean > 0 and lg.centre_batch >= lg.taylor


def test_corollary_paths(gen):
    X = torch.randn(6, 12, generator=gen, dtype=torch.float64)
    y = torch.randn(6, generator=gen, dtype=torch.float64)
    for c in bounds.corollary1_path(X, y, 2.0, 2, 5, gen):
        assert c.exact_mean <= c.bound_corrected * (1 - 1e-12)
    for c in bounds.corollary2_path(X, (y > 0).double(), 2, 5, gen):
        assert c.exact_mean <= c.bound


def test_theorem1_points_and_taylor_on_a_tiny_ensemble(gen):
    tr = setup.train("gauss10-0", 5, 4, gen, steps=6, snapshot_at=[0, 3])
    d = dynamics.delta_at_quantiles(tr, (0.1, 0.9), 20, gen)
    assert d.theta.shape == (2, 2, 1150) and d.samples.shape == (2, 2, 20)
    # the selected runs hold the quantiles of the full loss at their steps
    for ti, t in enumerate(d.t):
        loss = sm.losses(sm.layers_from_params(tr.base, tr.result.snapshot(int(t))), tr.data.x, tr.data.y).mean(1)
        order = torch.argsort(loss, stable=True)
        assert d.runs[0, ti] == int(order[round(0.1 * 3)]) and d.runs[1, ti] == int(order[round(0.9 * 3)])
    t1p = bounds.theorem1_points(tr, d, 1, 30, gen)
    assert t1p.L.shape == (2, 2) and np.all(t1p.L >= t1p.L_point - 1e-8)
    spec = sm.spec_of(tr.base)
    th0 = d.theta[0, 0]
    G = sm.per_example_grads(sm.unflatten(th0, spec), tr.data.x, tr.data.y)
    H = torch.func.jacfwd(torch.func.grad(sm.flat_loss(spec, tr.data.x, tr.data.y)))(th0)
    ref = th.taylor_curvature(lambda V: V @ H, G[0], 5)
    got = bounds.taylor_at_points(spec, tr.data.x, tr.data.y, th0[None], G, 5)
    torch.testing.assert_close(got[0], ref, rtol=1e-9, atol=1e-12)


def test_fixed_init_runs_share_their_start(gen):
    ds, base, res = bounds.fixed_init_runs("gauss10-0", 2, 3, 4, 5, gen, snapshot_every=2)
    p0 = res.snapshot(0)
    for k, v in p0.items():
        assert torch.equal(v[0], v[2]) and not torch.equal(v[0], v[3])
    assert res.full_loss.shape == (5, 6) and res.snapshot_steps == [0, 2, 4]
