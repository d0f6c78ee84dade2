"""Brute-force checks of sgdbook.deeplinear_sgd in float64 on tiny cases: the lockstep runner
against a per-run Python loop with autograd on the same inputs, the gradient formulas against
autograd, the conditional-variance closed forms against Monte Carlo, the t = 0 identity, the
standard errors against replicate experiments, the fits in 1/b and b_0."""

import math

import numpy as np
import pytest
import torch

from sgdbook.papers.batch_size_variance import deeplinear_sgd as dl
from sgdbook.papers.batch_size_variance.linreg import harmonic_schedule

F64 = torch.float64


def _net(dims, seed):
    g = torch.Generator().manual_seed(seed)
    return dl.init_linear(dims, g, F64), dl.product(dl.init_linear(dims, g, F64))


def test_init_is_nn_linear_default():
    dims = [40, 60, 30]
    ws = dl.init_linear(dims, torch.Generator().manual_seed(0), F64)
    for w, fan_in, fan_out in zip(ws, dims[:-1], dims[1:]):
        assert w.shape == (fan_out, fan_in)
        ref = torch.nn.Linear(fan_in, fan_out, bias=False).weight.detach()  # PyTorch's own default
        bound = fan_in**-0.5
        for m in (w, ref):
            assert m.abs().max() <= bound and m.abs().max() > 0.95 * bound
        # U(−a, a) has variance a²/3
        assert abs(float(w.var()) / (bound**2 / 3) - 1) < 0.1


@pytest.mark.slow
@pytest.mark.parametrize("dims", [[3, 4], [3, 5, 2], [2, 4, 3, 3], [3, 2, 4, 2, 3]])
def test_gradients_match_autograd(dims):
    g = torch.Generator().manual_seed(len(dims))
    lead = (2, 3)
    ws = [w.expand(*lead, *w.shape).clone() + 0.1 * torch.randn(*lead, *w.shape, generator=g, dtype=F64)
          for w in dl.init_linear(dims, g, F64)]
    teacher = dl.product(dl.init_linear(dims, g, F64))
    b = 4
    x = torch.randn(*lead, b, dims[0], generator=g, dtype=F64)
    sig = x.transpose(-1, -2) @ x / b
    gs, delta = dl.gradients(ws, teacher, sig)
    Gs, _ = dl.gradients(ws, teacher)
    req = [w.clone().requires_grad_(True) for w in ws]
    d = dl.product(req) - teacher
    mini = 0.5 * ((x @ d.transpose(-1, -2)) ** 2).sum((-2, -1)) / b  # (1/b) Σ_i ½‖Δ x_i‖², per run
    auto = torch.autograd.grad(mini.sum(), req, retain_graph=True)
    pop = 0.5 * (d**2).sum((-2, -1))
    auto_full = torch.autograd.grad(pop.sum(), req)
    for a, m in zip(auto, gs):
        torch.testing.assert_close(m, a, rtol=1e-12, atol=1e-14)
    for a, m in zip(auto_full, Gs):
        torch.testing.assert_close(m, a, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(delta, d.detach())


def test_two_layer_closed_forms_are_section_32():
    (w1, w2), tp = _net([5, 7, 4], 3)
    b = 3
    delta = w2 @ w1 - tp
    c = dl.conditional_variance([w1, w2], tp, b)
    p = 5
    c1 = (p + 1) * ((w2.T @ delta) ** 2).sum() / b
    c2 = (((delta @ w1.T) ** 2).sum() + (delta**2).sum() * (w1**2).sum()) / b
    torch.testing.assert_close(c, torch.stack([c1, c2]), rtol=1e-13, atol=0)


@pytest.mark.parametrize("dims", [[3, 4, 2], [2, 3, 3, 2]])
def test_conditional_variance_against_monte_carlo(dims):
    ws, tp = _net(dims, 7)
    b, M = 3, 40_000
    g = torch.Generator().manual_seed(11)
    x = torch.randn(M, b, dims[0], generator=g, dtype=F64)
    gs, _ = dl.gradients(ws, tp, x.transpose(-1, -2) @ x / b)
    exact = dl.conditional_variance(ws, tp, b)
    Gs, _ = dl.gradients(ws, tp)
    for k, gk in enumerate(gs):
        d = ((gk - gk.mean(0)) ** 2).sum((-2, -1))
        est, se = float(d.sum() / (M - 1)), float(d.std() / math.sqrt(M))
        assert abs(est - float(exact[k])) / se < 4.5, (k, est, float(exact[k]), se)
        # the mean of the minibatch gradient is the population gradient
        z = (gk.mean(0) - Gs[k]) / (gk.std(0) / math.sqrt(M))
        assert z.abs().max() < 5


def _reference(w0, tp, bs, runs, alphas, seed):
    """Per-run, per-sample Python loops with autograd, on inputs replayed from the same seed."""
    gen = torch.Generator().manual_seed(seed)
    T, L = len(alphas), len(w0)
    W = {(j, r): [w.clone() for w in w0] for j in range(len(bs)) for r in range(runs)}
    stats = {k: np.zeros((T + 1, len(bs), L)) for k in ("g", "grad", "rb", "g_se")}
    sq = np.zeros((T + 1, len(bs)))
    for t in range(T + 1):
        xs = dl.draw_inputs(gen, runs, bs, w0[0].shape[1], F64)
        for j, b in enumerate(bs):
            per_g, per_G, per_c, per_sq = [], [], [], []
            for r in range(runs):
                req = [w.clone().requires_grad_(True) for w in W[(j, r)]]
                d = dl.product(req) - tp
                loss = sum(0.5 * ((d @ xs[j][r, i]) ** 2).sum() for i in range(b)) / b
                per_g.append([a.detach() for a in torch.autograd.grad(loss, req, retain_graph=True)])
                per_G.append([a.detach() for a in torch.autograd.grad(0.5 * (d**2).sum(), req)])
                per_c.append(dl.conditional_variance(W[(j, r)], tp, b))
                per_sq.append(float((d.detach() ** 2).sum()))
            for k in range(L):
                gk = torch.stack([p[k] for p in per_g])
                Gk = torch.stack([p[k] for p in per_G])
                dg = ((gk - gk.mean(0)) ** 2).sum((-2, -1))
                dG = ((Gk - Gk.mean(0)) ** 2).sum((-2, -1))
                stats["g"][t, j, k] = float(dg.sum()) / (runs - 1)
                stats["grad"][t, j, k] = float(dG.sum()) / (runs - 1)
                stats["rb"][t, j, k] = float(torch.stack([c[k] for c in per_c]).mean()) + float(dG.sum()) / (runs - 1)
                stats["g_se"][t, j, k] = float(dg.std()) * runs / (runs - 1) / math.sqrt(runs)
            sq[t, j] = np.mean(per_sq)
            if t < T:
                for r in range(runs):
                    W[(j, r)] = [w - alphas[t] * gk for w, gk in zip(W[(j, r)], per_g[r])]
    return stats, sq, W


@pytest.mark.parametrize("dims", [[3, 4, 2], [2, 3, 3, 2]])
def test_runner_matches_per_run_loop(dims):
    w0, tp = _net(dims, 5)
    bs, runs, seed = [1, 2, 3], 4, 99
    alphas = harmonic_schedule(0.3, 4)
    res = dl.run_lockstep(w0, tp, bs, runs, alphas, torch.Generator().manual_seed(seed))
    ref, sq, W = _reference(w0, tp, bs, runs, alphas.tolist(), seed)
    kw = dict(rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(res.var_g.layer.numpy(), ref["g"], **kw)
    np.testing.assert_allclose(res.var_grad.layer.numpy(), ref["grad"], **kw)
    np.testing.assert_allclose(res.var_rb.layer.numpy(), ref["rb"], **kw)
    np.testing.assert_allclose(res.var_g.layer_se.numpy(), ref["g_se"], **kw)
    np.testing.assert_allclose(res.var_g.total.numpy(), ref["g"].sum(-1), **kw)
    np.testing.assert_allclose(res.sq_delta.numpy(), sq, **kw)
    for j in range(len(bs)):
        for r in range(runs):
            for k in range(len(w0)):
                torch.testing.assert_close(res.weights[k][j, r], W[(j, r)][k], rtol=1e-10, atol=1e-13)


def test_t0_variance_is_exactly_inverse_b():
    w0, tp = _net([4, 6, 3], 2)
    bs = [1, 2, 4, 8]
    res = dl.run_lockstep(w0, tp, bs, 50, harmonic_schedule(0.1, 2), torch.Generator().manual_seed(0))
    exact = dl.exact_var_g0(w0, tp, bs)
    assert float(res.var_grad.total[0].abs().max()) < 1e-25  # every run is at w_0
    torch.testing.assert_close(res.var_rb.layer[0], exact, rtol=1e-12, atol=0)
    bv = res.var_rb.total[0] * torch.tensor(bs, dtype=F64)
    assert float((bv / bv[0] - 1).abs().max()) < 1e-12
    z = (res.var_g.total[0] - exact.sum(-1)) / res.var_g.total_se[0]
    assert float(z.abs().max()) < 4.5


def test_divergence_is_counted():
    w0, tp = _net([3, 4, 2], 6)
    calm = dl.run_lockstep(w0, tp, [1, 4], 6, harmonic_schedule(0.1, 5), torch.Generator().manual_seed(0))
    assert calm.diverged.tolist() == [0, 0]
    wild = dl.run_lockstep([10 * w for w in w0], tp, [1, 4], 6, harmonic_schedule(50.0, 30), torch.Generator().manual_seed(0))
    assert int(wild.diverged.sum()) > 0
    assert not torch.isfinite(wild.var_g.total[-1]).all()


def test_determinism_by_seed():
    w0, tp = _net([3, 4, 2], 1)
    args = (w0, tp, [1, 3], 5, harmonic_schedule(0.2, 3))
    a = dl.run_lockstep(*args, torch.Generator().manual_seed(4))
    b = dl.run_lockstep(*args, torch.Generator().manual_seed(4))
    c = dl.run_lockstep(*args, torch.Generator().manual_seed(5))
    assert torch.equal(a.var_g.layer, b.var_g.layer) and torch.equal(a.sq_delta, b.sq_delta)
    assert not torch.equal(a.var_g.layer, c.var_g.layer)


def test_standard_error_matches_replicates():
    # repeated batch sizes are independent replicates: the sd of the estimates across replicates
    # should match the influence-function standard error
    w0, tp = _net([3, 4, 2], 8)
    K, runs = 400, 40
    res = dl.run_lockstep(w0, tp, [2] * K, runs, harmonic_schedule(0.3, 3), torch.Generator().manual_seed(1))
    for trace in (res.var_g, res.var_grad, res.var_rb):
        for t in (1, 3):
            ratio = float(trace.total[t].std() / trace.total_se[t].mean())
            assert 0.8 < ratio < 1.25, ratio


def test_fit_inverse_b_recovers_polynomial_and_intercept():
    bs = [1, 2, 4, 8, 16, 32, 64]
    beta = [0.0, 2.0, -0.5, 0.25]
    u = 1 / torch.tensor(bs, dtype=F64)
    v = sum(c * u**k for k, c in enumerate(beta))
    se = torch.full_like(v, 1e-3)
    fit = dl.fit_inverse_b(bs, v, se, 3, intercept=False)
    np.testing.assert_allclose(fit.beta, beta, atol=1e-10)
    free = dl.fit_inverse_b(bs, v + 0.7, se, 3, intercept=True)
    np.testing.assert_allclose(free.beta, [0.7] + beta[1:], atol=1e-9)
    assert free.chi2 < 1e-12 and free.dof == 3
    # the lowest adequate degree is chosen
    sel = dl.select_degree(bs, v, se, intercept=False, max_degree=5)
    assert sel.degree == 3
    torch.testing.assert_close(fit(torch.tensor(bs, dtype=F64)), v)
    with pytest.raises(ValueError):
        dl.fit_inverse_b(bs, v, se, 0, intercept=False)
    with pytest.raises(ValueError):
        dl.fit_inverse_b(bs[:2], v[:2], se[:2], 3, intercept=True)
    with pytest.raises(ValueError, match="finite"):
        dl.fit_inverse_b(bs, v * float("nan"), se, 2, intercept=True)
    with pytest.raises(ValueError, match="finite"):
        dl.b0_roots([0.0, 1.0, float("inf")])


def test_b0_roots_toy_polynomial():
    # the notes' toy β = (1, −3, 2): main-text b_0 = 2, derivative-condition b_0 = 3 + √3
    deriv, plain = dl.b0_roots([0.0, 1.0, -3.0, 2.0])
    assert abs(plain - 2.0) < 1e-9 and abs(deriv - (3 + math.sqrt(3))) < 1e-9
    b = torch.linspace(1.01, 20, 2000, dtype=F64)
    v = 1 / b - 3 / b**2 + 2 / b**3
    dv = torch.diff(v)
    assert (dv[b[:-1] > deriv + 1e-3] < 0).all()  # decreasing above the derivative root
    assert (dv[(b[1:] > 2.2) & (b[1:] < deriv - 0.1)] > 0).any()  # rising above the main-text b_0 = 2
    assert dl.b0_roots([0.0, 1.0, 0.5, 0.1])[0] == float("-inf")  # all β_k ≥ 0: decreasing everywhere
    assert dl.b0_roots([0.0, 1.0])[0] == float("-inf")


def test_bad_input_errors():
    w0, tp = _net([3, 4, 2], 0)
    gen = torch.Generator().manual_seed(0)
    al = harmonic_schedule(0.1, 2)
    with pytest.raises(ValueError, match="at least 2 runs"):
        dl.run_lockstep(w0, tp, [1], 1, al, gen)
    with pytest.raises(ValueError, match="positive"):
        dl.run_lockstep(w0, tp, [0, 2], 3, al, gen)
    with pytest.raises(ValueError, match="teacher"):
        dl.run_lockstep(w0, tp.T, [1], 3, al, gen)
    with pytest.raises(ValueError, match="layer 2"):
        dl.run_lockstep([w0[0], w0[1].T], tp, [1], 3, al, gen)
    with pytest.raises(ValueError, match="dims"):
        dl.init_linear([3], gen)
