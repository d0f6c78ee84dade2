"""The Gauss-k set-up (Table 2), Table 1's closed forms, the exact population terms (Eqs. 14–16,
62–64) and Table 3's networks, against brute force in float64."""

import math

import pytest
import torch
import torch.nn.functional as F

from reference import F64, dense_hessian, loop_grads
from sgdbook import curvature
from sgdbook.functional import flat_loss, materialize
from sgdbook.models import count_parameters
from sgdbook.papers.hessian_sgd import decomposition as dc
from sgdbook.papers.hessian_sgd import realdata as rd
from sgdbook.papers.hessian_sgd import setup as gs


def test_table2_networks_and_data():
    for name, t in gs.TABLE2.items():
        assert count_parameters(gs.gauss_net(t["k"])) == t["p"]
        raw, std = gs.make_data(name, literal=True), gs.make_data(name)
        assert raw.x.shape == std.x.shape == (100, 50)
        assert float(raw.x.norm(dim=1).mean()) > 20 and abs(float(std.x.mean())) < 1e-6
        assert int(std.noised.sum()) == round(100 * t["label_noise"]) and torch.equal(raw.y, std.y)
    assert gs.label("gauss10-15", 5) == "Gauss-10, 15 %, m = 5"
    with pytest.raises(ValueError, match="unknown Gauss-k setting"):
        gs.make_data("gauss3-0")
    with pytest.raises(ValueError, match="batch size 7"):
        gs.train("gauss2-0", 7, 2, torch.Generator())


def test_init_scales_and_training_wrapper():
    base = gs.gauss_net(10).to("meta")
    for literal, std in ((True, 1.0), (False, 0.5)):
        P = gs.init_params(base, 50, torch.Generator().manual_seed(0), literal=literal)
        allv = torch.cat([v.reshape(-1) for v in P.values()])
        assert abs(float(allv.std()) - std) < 0.02 * std
    tr = gs.train("gauss2-0", 5, 3, torch.Generator().manual_seed(1), steps=12, snapshot_at=[0, 6])
    assert tr.steps == 12 and tr.lr == 0.1 and tr.result.snapshot_steps == [0, 6]
    assert tr.result.diverged_at.tolist() == [-1, -1, -1]
    assert gs.log_checkpoints(400, 6)[0] == 0 and gs.log_checkpoints(400, 6)[-1] == 400


def test_dead_layers_against_a_forward_loop():
    base = gs.gauss_net(2).to("meta")
    P = gs.init_params(base, 4, torch.Generator().manual_seed(2))
    P["0.bias"][1] = -1e3  # run 1: layer 0 never fires
    P["2.bias"][3] = -1e3  # run 3: layer 1 never fires
    x = gs.make_data("gauss2-0").x
    dead = gs.dead_layers(base, P, x)
    for r in range(4):
        m = materialize(base, P, r)
        h1 = torch.relu(m[0](x))
        h2 = torch.relu(m[2](h1))
        assert dead[r].tolist() == [bool((h1 <= 0).all()), bool((h2 <= 0).all())]
    assert dead[1, 0] and dead[3, 1] and not dead[0].any()


def test_table1_closed_forms_against_autograd():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(6, 9, generator=g, dtype=F64)
    th = torch.randn(9, generator=g, dtype=F64) / 3
    y = torch.randn(6, generator=g, dtype=F64)
    yb = (torch.rand(6, generator=g, dtype=F64) > 0.5).to(F64)
    for closed, loss, target in ((dc.least_squares_table1(X, y, th, 0.8), dc.gaussian_nll(0.8), y),
                                 (dc.logistic_table1(X, yb, th), dc.bernoulli_nll, yb)):
        model = dc.linear_gaussian_model(th)
        f, theta = flat_loss(model, loss, X, target)
        G = loop_grads(model, loss, X, target)
        torch.testing.assert_close(closed["H_f"], dense_hessian(f, theta), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(closed["M"], G.T @ G / 6, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(closed["H_p"], curvature.residual_hessian(model, loss, X, target), rtol=1e-10, atol=1e-12)
    # the Gaussian negative log-likelihood is the log-density (its exp integrates p(y | x))
    assert abs(float(dc.gaussian_nll(1.0)(torch.zeros(1, 1, dtype=F64), torch.zeros(1, dtype=F64))) - 0.5 * math.log(2 * math.pi)) < 1e-14


def _small(seed):
    from sgdbook.models import mlp

    m = mlp([3, 4, 3], bias=True, flatten=False).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + p.numel()), dtype=F64))
    return m


def test_population_terms_equal_a_pair_by_pair_sum():
    teacher, model = _small(0), _small(1)
    xs = torch.randn(4, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    w = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64)
    pop = dc.population_terms(model, teacher, xs, w)
    probs = torch.softmax(teacher(xs), -1).detach()
    Hf = Mm = Hp = 0
    for i in range(4):
        for c in range(3):
            yi = torch.tensor([c])
            f, th = flat_loss(model, F.cross_entropy, xs[i : i + 1], yi)
            g = torch.func.grad(f)(th)
            pi = lambda t, f=f: torch.exp(-f(t))  # noqa: E731
            wt = w[i] * probs[i, c]
            Hf = Hf + wt * dense_hessian(f, th)
            Mm = Mm + wt * torch.outer(g, g)
            Hp = Hp + wt * dense_hessian(pi, th) / pi(th)
    for got, ref in ((pop.H_f, Hf), (pop.M, Mm), (pop.H_p, Hp)):
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    star = dc.population_terms(teacher, teacher, xs, w)
    assert float(star.mu.norm()) < 1e-12 and float(star.H_p.abs().max()) < 1e-12
    torch.testing.assert_close(star.H_f, star.M, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="sum to 1"):
        dc.population_terms(model, teacher, xs, w * 2)


def test_sample_from_model_matches_the_softmax():
    teacher = _small(0)
    x = torch.randn(1, 3, generator=torch.Generator().manual_seed(5), dtype=F64).expand(20_000, 3)
    y = dc.sample_from_model(teacher, x, torch.Generator().manual_seed(6))
    freq = torch.bincount(y, minlength=3).double() / 20_000
    torch.testing.assert_close(freq, torch.softmax(teacher(x[:1]), -1)[0].detach(), rtol=0, atol=0.015)


def test_table3_parameter_counts():
    for name, t in rd.TABLE3.items():
        for depth, (p, _) in t["layers"].items():
            assert count_parameters(rd.real_net(name, depth)) == p
    with pytest.raises(ValueError, match="unknown data set"):
        rd.real_net("svhn", 3)


def test_budget_is_table2_capped_by_the_scale():
    for name, t in gs.TABLE2.items():
        assert gs.budget(name) == t["max_iter"]
        assert gs.budget(name, 7) == min(7, t["max_iter"])
        assert gs.budget(name, 10**9) == t["max_iter"]
    with pytest.raises(ValueError):
        gs.budget("gauss-3")
