"""papers.hessian_sgd.dynamics: criteria helpers on synthetic curves, and the Δ sampler on a tiny ensemble."""

import numpy as np
import torch

from sgdbook.papers.hessian_sgd import dynamics as dyn


def test_count_phases():
    z = np.zeros(5)
    assert dyn.count_phases(np.array([1, 1.1, 0.9, 1.0, 1.05]), np.array([0.5] * 5), np.array([1.5] * 5)) == 1
    up_down = np.array([1.0, 3, 5, 4, 1, 0.5])
    assert dyn.count_phases(up_down, up_down - 0.5, up_down + 0.5) == 2
    zig = np.array([1.0, 5, 5, 1, 1, 5, 5, 1, 1])
    assert dyn.count_phases(zig, zig - 0.5, zig + 0.5) == 4
    spike = np.array([1.0, 3, 5, 1, 5, 4, 2, 1])  # one outlying point is not a phase
    assert dyn.count_phases(spike, spike - 0.5, spike + 0.5) == 2
    noisy = np.array([1.0, 1.4, 0.8, 5, 4.6, 5.2, 1])  # small wiggles are not phases
    assert dyn.count_phases(noisy, noisy - 0.5, noisy + 0.5) == 2
    assert dyn.count_phases(z, z - 1, z + 1) == 1


def test_var_interval_coverage():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 400, generator=gen, dtype=torch.float64) * 2.0
    v, lo, hi = dyn.var_interval(x)
    np.testing.assert_allclose(v, x.var(1).numpy())
    cover = ((lo <= 4.0) & (4.0 <= hi)).mean()
    assert 0.93 <= cover <= 0.97


def _curves(t, loss, cos, g, q=(0.1, 0.25, 0.5, 0.75, 0.9), w=0.01):
    Q = len(q)
    band = lambda a: dyn.Band(np.tile(a, (Q, 1)), np.tile(a * (1 - w) - w, (Q, 1)), np.tile(a * (1 + w) + w, (Q, 1)))  # noqa: E731
    return dyn.Curves(np.asarray(t), q, band(loss), band(cos), band(g))


def test_easy_and_hard_criteria_on_shapes():
    t = np.arange(0, 401)
    easy = _curves(t, 10 * np.exp(-t / 5) + 1e-4, np.where(t < 6, 0.6, 0.1), 20 * np.exp(-t / 8) + 1e-4)
    e = dyn.easy_criteria(easy, 400)
    assert e["fast"] and e["early_drop"] and e["to_zero"] and e["steady_cos"]
    assert abs(e["cos_level"] - 0.1) < 1e-12
    T = 10_000
    t = np.concatenate([np.arange(100), np.arange(100, T, 10)])
    bump = 1 + 4 * np.exp(-((np.log(t + 1) - np.log(300)) ** 2))  # falls to 1, rises to 5 at t = 300
    g = np.where(t < 10, 10 - 0.9 * t, np.where(t < 2000, bump, bump[t == 1990][0] * np.exp(-(t - 2000) / 1000)))
    cos = np.where(t < 2, 0.3, -0.3 * np.exp(-((np.log(t + 1) - np.log(300)) ** 2)))
    loss = 10 * np.exp(-t / 10) + 0.001
    hard = _curves(t, loss, cos, g)
    h = dyn.hard_criteria(hard, T)
    assert h["early_drop"] and h["hump"] and h["valley_at_peak"] and h["late"], {k: v for k, v in h.items()}
    flat = _curves(t, loss, cos, 10 * np.exp(-t / 100) + 1e-3)
    assert not dyn.hard_criteria(flat, T)["hump"]
    assert dyn.early_drop(hard).all()


def test_quantile_curves_on_a_tiny_ensemble(gen):
    from sgdbook.papers.hessian_sgd import setup

    tr = setup.train("gauss10-0", 5, 12, gen, steps=40, eval_at=range(20), eval_every=5)
    c = dyn.quantile_curves(tr.result, (0.1, 0.5, 0.9), band=0.2, bins=10)
    assert np.all(np.diff(c.t) > 0) and c.t[0] == 0 and c.loss.est.shape == (3, c.t.size)
    # the loss quantiles are the order statistics of the full loss at the representative steps
    i = list(tr.result.eval_steps).index(int(c.t[-1]))
    v = np.sort(tr.result.full_loss[i].double().numpy())
    assert c.loss.est[1, -1] == v[round(0.5 * 11)]
    assert np.all(c.loss.lo <= c.loss.est + 1e-12) and np.all(c.loss.est <= c.loss.hi + 1e-12)
