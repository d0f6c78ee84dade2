"""papers.hessian_sgd.steps: the rules against their formulas and a plain loop, float64."""

import pytest
import torch

from sgdbook.papers.hessian_sgd import stacked_mlp as sm
from sgdbook.papers.hessian_sgd import steps as st

D = torch.float64


def _net(gen, R=3, sizes=(5, 4, 6, 3), n=10):
    layers = [(0.7 * torch.randn(R, b, a, generator=gen, dtype=D), 0.3 * torch.randn(R, b, generator=gen, dtype=D))
              for a, b in zip(sizes[:-1], sizes[1:])]
    x = torch.randn(n, sizes[0], generator=gen, dtype=D)
    y = torch.randint(0, sizes[-1], (n,), generator=gen)
    return layers, x, y


def test_rule_formulas():
    mu = torch.tensor([[1.0, -2.0, 0.0]], dtype=D)
    dm = torch.tensor([[2.0, 8.0, 0.0]], dtype=D)
    torch.testing.assert_close(st.adaptive_lr(torch.tensor([5.0], dtype=D), torch.tensor([10.0], dtype=D), 2.0, 2.0),
                               torch.tensor([2.0 * 5 / (2 * 2 * 10)], dtype=D))
    torch.testing.assert_close(st.preconditioner(mu, dm, 2.0, 1.5), torch.tensor([[1.5 * 1 / 8, 1.5 * 4 / 32, 0.0]], dtype=D))
    torch.testing.assert_close(st.ideal_adam_step(mu, dm, 0.1), torch.tensor([[0.1 / 2**0.5, -0.2 / 8**0.5, 0.0]], dtype=D))
    g = torch.tensor([[3.0, 1.0, 7.0]], dtype=D)
    torch.testing.assert_close(st.proposed_step(mu, dm, g, 0.1), torch.tensor([[0.1 * 0.5 * 3, 0.1 * 0.5 * 1, 0.0]], dtype=D))
    for c in (1.0, 3.0, 0.5):
        with pytest.raises(ValueError, match=r"open interval \(1, 3\)"):
            st.adaptive_lr(mu[0], dm[0], 1.0, c)
    with pytest.raises(ValueError, match="L must be > 0"):
        st.preconditioner(mu, dm, 0.0)


def test_sgd_rule_matches_a_plain_loop(gen):
    layers, x, y = _net(gen)
    res = st.run_rule(layers, x, y, "sgd", steps=6, batch_size=4, lr=0.2, generator=torch.Generator().manual_seed(5),
                      snapshot_steps=[0, 3])
    g2 = torch.Generator().manual_seed(5)
    theta = sm.flatten(layers).clone()
    shapes = [(W.shape[-2], W.shape[-1], True) for W, _ in layers]
    for t in range(6):
        f = [sm.flat_loss(layers, x, y)(theta[r]) for r in range(3)]
        torch.testing.assert_close(res.loss[t], torch.stack(f))
        if t == 3:
            torch.testing.assert_close(res.snapshots[3], theta)
        idx = torch.randint(0, 10, (3, 4), generator=g2)
        g = torch.stack([torch.func.grad(sm.flat_loss(shapes, x[idx[r]], y[idx[r]]))(theta[r]) for r in range(3)])
        theta = theta - 0.2 * g
    torch.testing.assert_close(sm.flatten(res.layers), theta, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(res.snapshots[0], sm.flatten(layers))
    mo = sm.exact_moments(res.layers, x, y)
    torch.testing.assert_close(res.grad_sq[-1], mo.mu_sq)
    torch.testing.assert_close(res.trace_m[-1], mo.trace_m)


def test_proposed_rule_is_the_preconditioner_with_c_2_eta_L(gen):
    layers, x, y = _net(gen)
    lr, L = 0.5, 2.0  # c = 2ηL = 2
    a = st.run_rule(layers, x, y, "proposed", steps=5, batch_size=3, lr=lr, generator=torch.Generator().manual_seed(1))
    b = st.run_rule(layers, x, y, "precond", steps=5, batch_size=3, L=L, c=2 * lr * L, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.loss, b.loss, rtol=1e-12, atol=1e-14)


def test_adaptive_rule_uses_the_exact_moments(gen):
    layers, x, y = _net(gen)
    for trace in ("printed", "batch"):
        res = st.run_rule(layers, x, y, "adaptive", steps=1, batch_size=3, L=1.5, c=2.5, trace=trace,
                          generator=torch.Generator().manual_seed(2))
        mo = sm.exact_moments(layers, x, y)
        tr = mo.trace_m if trace == "printed" else (mo.trace_m - mo.mu_sq) / 3 + mo.mu_sq
        torch.testing.assert_close(res.lr[0], 2.5 * mo.mu_sq / (2 * 1.5 * tr))


def test_adam_and_ideal_adam_rules(gen):
    layers, x, y = _net(gen, R=2)
    res = st.run_rule(layers, x, y, "adam", steps=3, batch_size=2, lr=0.05, gammas=(0.8, 0.9),
                      generator=torch.Generator().manual_seed(4))
    g2 = torch.Generator().manual_seed(4)
    theta = sm.flatten(layers).clone()
    shapes = [(W.shape[-2], W.shape[-1], True) for W, _ in layers]
    m = torch.zeros_like(theta)
    v = torch.zeros_like(theta)
    for _ in range(3):
        idx = torch.randint(0, 10, (2, 2), generator=g2)
        g, _ = sm.minibatch_grads(sm.unflatten(theta, shapes), x[idx], y[idx])
        m = 0.8 * m + 0.2 * g
        v = 0.9 * v + 0.1 * g.square()
        theta = theta - 0.05 * torch.where(v > 0, m / v.sqrt(), torch.zeros_like(v))  # 0/0 (dead units) → 0
    torch.testing.assert_close(sm.flatten(res.layers), theta)
    ideal = st.run_rule(layers, x, y, "ideal_adam", steps=1, batch_size=2, lr=0.05, generator=gen)
    mo = sm.exact_moments(layers, x, y)
    ref = torch.where(mo.diag_m > 0, mo.mu / mo.diag_m.sqrt(), torch.zeros_like(mo.mu))
    torch.testing.assert_close(sm.flatten(ideal.layers), sm.flatten(layers) - 0.05 * ref)


def test_errors(gen):
    layers, x, y = _net(gen)
    with pytest.raises(ValueError, match="unknown rule"):
        st.run_rule(layers, x, y, "newton", steps=1, batch_size=2, generator=gen)
    with pytest.raises(ValueError, match="needs L"):
        st.run_rule(layers, x, y, "adaptive", steps=1, batch_size=2, generator=gen)
    with pytest.raises(ValueError, match="batch_size"):
        st.run_rule(layers, x, y, "sgd", steps=1, batch_size=11, generator=gen)
    with pytest.raises(FloatingPointError, match="non-finite"):
        st.run_rule(layers, x, y, "sgd", steps=5, batch_size=2, lr=1e200, generator=gen)
