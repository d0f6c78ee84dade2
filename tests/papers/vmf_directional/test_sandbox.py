"""The Corollary 3.1 sandbox against brute force: an epoch is a plain loop of SGD steps on the
per-example quadratics, and with isotropic Hessians the gradients point exactly at the local
solutions (so both κ̂ agree)."""

import itertools
import math

import pytest
import torch

from sgdbook import directional as vd
from sgdbook.papers.vmf_directional import sandbox, theory as vt

F64 = torch.float64


def _kw(**over):
    kw = dict(runs=3, d=6, n=6, m=2, epochs=40, cond=1.2, start_distance=30, cloud_factor=2,
              lr_per_epoch=0.1, generator=torch.Generator().manual_seed(0))
    kw.update(over)
    return kw


def test_isotropic_hessians_make_both_kappas_equal():
    res = sandbox.corollary_sandbox(**_kw(cond=1.0))
    torch.testing.assert_close(res.k_grad, res.k_local, rtol=1e-9, atol=1e-9)


def test_shapes_determinism_and_summary():
    a = sandbox.corollary_sandbox(**_kw())
    b = sandbox.corollary_sandbox(**_kw())
    assert a.k_grad.shape == (41, 3) and a.outside.shape == (40, 3) and a.decrease.shape == (40, 3)
    assert a.steps == math.comb(6, 2) and a.lr == pytest.approx(0.1 / 15)
    assert torch.equal(a.k_grad, b.k_grad)
    s = sandbox.summarise(a)
    assert s["epochs_all"] == 120 and 0 <= s["frac_decrease_all"] <= 1
    # the corollary's setting, far from the cloud: κ̂ falls and the gradients estimate it
    assert s["epochs_outside"] > 0 and s["frac_decrease_outside"] >= 0.9
    assert 2 / 3 <= s["median_ratio_grad_local"] <= 1.5
    p = sandbox.corollary_sandbox(**_kw(practice=True, n=12, m=3, measure_ns=20))
    assert p.steps == 4 and p.k_grad.shape == (41, 3)
    with pytest.raises(ValueError, match="exactly one"):
        sandbox.corollary_sandbox(**_kw(lr_per_step=0.1))


def test_sgd_epoch_equals_a_loop_over_per_example_gradients():
    g = torch.Generator().manual_seed(1)
    n, m, d = 5, 2, 3
    A = vt.random_spd((1, n), d, 3.0, g)
    a = torch.randn(1, n, d, generator=g, dtype=F64)
    c = (A @ a.unsqueeze(-1)).squeeze(-1)
    batches = torch.tensor(list(itertools.combinations(range(n), m)))
    H, b = vt.minibatch_quadratics(A, c, batches)
    w0 = torch.randn(1, d, generator=g, dtype=F64)
    w1, nsum = vt.sgd_epoch(H, b, w0, 0.05)
    w, s = w0[0].clone(), torch.zeros(d, dtype=F64)
    for batch in batches:  # brute force: the mean of the per-example negative gradients
        grad = torch.stack([-(A[0, j] @ (w - a[0, j])) for j in batch.tolist()]).mean(0)
        s += grad / grad.norm()
        w = w + 0.05 * grad
    torch.testing.assert_close(w1[0], w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(nsum[0], s, rtol=1e-12, atol=1e-12)
    # κ̂ from the directions to the minibatch minimisers, by hand
    p = torch.linalg.solve(H[0], b[0])
    x = (p - w0[0]) / (p - w0[0]).norm(dim=-1, keepdim=True)
    assert float(vt.kappa_hat_at(p, w0[0])) == pytest.approx(float(vd.kappa_hat(x.sum(0).norm() / len(x), d)), rel=1e-12)
