"""Per-example and minibatch gradients and their moments against brute force, in float64."""

from __future__ import annotations

import copy
import itertools
import math
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from cases import cnn, data, randomize, tanh_net
from reference import batch_grad, enumerate_minibatch_grads, flat, loop_grads
from sgdbook import directional as vd
from sgdbook import functional as fn
from sgdbook import gradients as gr
from sgdbook.models import mlp
from sgdbook.papers.vmf_directional.models import PaperCNN
from reference import F64, load_run
from sgdbook import ensemble, gradients, models
from sgdbook.functional import functional_view


DT = torch.float64


# ------------------------------------------------------------------ per-example gradients


@pytest.mark.parametrize("method", ["auto", "vmap", "linear"])
def test_per_example_grads_match_a_loop(method):
    model = tanh_net()
    x, y = data()
    G = gr.per_example_grads(model, F.cross_entropy, x, y, method=method)
    assert G.shape == (7, fn.flat_parameters(model).numel()) and G.dtype == DT
    torch.testing.assert_close(G, loop_grads(model, F.cross_entropy, x, y), rtol=1e-12, atol=1e-14)


def test_per_example_grads_equal_the_loop_on_every_case(case):
    # the fast paths (per-layer outer products, vmap) against one autograd call per example;
    # batch norm with its running statistics (bn_mode="eval")
    model, (x, y) = case.model(), case.data()
    want = loop_grads(copy.deepcopy(model).eval() if case.bn else model, F.cross_entropy, x, y)
    methods = ["auto", "vmap"] + (["linear"] if gr.linear_fast_path_applies(model) else [])
    for method in methods:
        G = gr.per_example_grads(model, F.cross_entropy, x, y, method=method, bn_mode=case.bn_mode)
        torch.testing.assert_close(G, want, rtol=1e-10, atol=1e-13, msg=lambda m: f"{method}: {m}")


def test_per_example_grads_carry_no_batch_factor_and_average_to_the_full_gradient():
    model = tanh_net()
    x, y = data()
    G = gr.per_example_grads(model, F.cross_entropy, x, y)
    G_sum = gr.per_example_grads(
        model, lambda o, t: F.cross_entropy(o, t, reduction="sum"), x, y, method="vmap"
    )
    torch.testing.assert_close(
        G, G_sum, rtol=1e-12, atol=1e-14
    )  # a batch of one: no 1/N either way
    full = flat(torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters())))
    torch.testing.assert_close(G.mean(0), full, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(
        gr.full_gradient(model, F.cross_entropy, x, y, chunk=3), full, rtol=1e-12, atol=1e-14
    )
    torch.testing.assert_close(
        gr.per_example_grads(model, F.cross_entropy, x, y, chunk=2, method="vmap"), G
    )


def test_per_example_grads_of_a_general_network_use_vmap():
    model = PaperCNN(stages=(1, 1), widths=(2, 3), in_channels=1, classes=3,
                     generator=torch.Generator().manual_seed(0)).double()
    x, y = data(n=4, shape=(1, 6, 6))
    assert not gr.linear_fast_path_applies(model)
    G = gr.per_example_grads(model, F.cross_entropy, x, y)
    torch.testing.assert_close(G, loop_grads(model, F.cross_entropy, x, y), rtol=1e-10, atol=1e-13)
    with pytest.raises(ValueError, match="method='linear'"):
        gr.per_example_grads(model, F.cross_entropy, x, y, method="linear")


def mse(o, t):
    return F.mse_loss(o, t)


@pytest.mark.parametrize(
    "build,shape,target",
    [
        (
            lambda: mlp([6, 8, 7, 3], bias=True, generator=torch.Generator().manual_seed(1)),
            (2, 3),
            "class",
        ),
        (
            lambda: mlp([6, 8, 3], bias=False, generator=torch.Generator().manual_seed(2)),
            (6,),
            "class",
        ),
        (
            lambda: nn.Sequential(
                nn.Flatten(),
                nn.Sequential(nn.Linear(6, 5), nn.GELU()),
                nn.Linear(5, 4, bias=False),
                nn.Softplus(),
                nn.Identity(),
                nn.Linear(4, 2),
            ),
            (2, 3),
            "class",
        ),
        # a Linear along trailing positions ([n, T, in] inputs): outer products summed over T
        (lambda: nn.Sequential(nn.Linear(6, 5), nn.Sigmoid(), nn.Linear(5, 2)), (4, 6), "regress"),
    ],
)
def test_linear_fast_path_equals_vmap(build, shape, target):
    model = randomize(build())
    assert gr.linear_fast_path_applies(model)
    n = 9
    x = torch.randn(n, *shape, dtype=DT, generator=torch.Generator().manual_seed(3))
    if target == "class":
        y, loss = (
            torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(4)),
            F.cross_entropy,
        )
    else:
        y, loss = (
            torch.randn(n, shape[0], 2, dtype=DT, generator=torch.Generator().manual_seed(4)),
            mse,
        )
    fast = gr.per_example_grads(model, loss, x, y, method="linear")
    slow = gr.per_example_grads(model, loss, x, y, method="vmap")
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(fast, loop_grads(model, loss, x, y), rtol=1e-12, atol=1e-14)
    buf = torch.full_like(fast, float("nan"))
    assert gr.per_example_grads(model, loss, x, y, method="linear", chunk=4, out=buf) is buf
    torch.testing.assert_close(buf, fast, rtol=1e-12, atol=1e-14)


def test_linear_fast_path_with_a_frozen_layer_and_its_detection():
    model = mlp([5, 4, 3], bias=True, generator=torch.Generator().manual_seed(0)).double()
    model[1].weight.requires_grad_(False)
    x, y = data()
    fast = gr.per_example_grads(model, F.cross_entropy, x, y, method="linear")
    assert fast.shape == (7, 4 + 12 + 3)
    torch.testing.assert_close(
        fast, gr.per_example_grads(model, F.cross_entropy, x, y, method="vmap")
    )
    torch.testing.assert_close(fast, loop_grads(model, F.cross_entropy, x, y))
    assert not gr.linear_fast_path_applies(mlp([5, 4, 3], bn=True))
    assert not gr.linear_fast_path_applies(nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5)))
    hooked = mlp([5, 4, 3])
    hooked[1].register_forward_hook(lambda *a: None)
    assert not gr.linear_fast_path_applies(hooked)


def test_a_layer_used_twice_takes_the_general_path():
    # weight tying: the layer's gradient sums both uses, which the per-layer path does not do
    torch.manual_seed(0)
    shared = nn.Linear(5, 5)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(5, 3)).double()
    x, y = data()
    assert not gr.linear_fast_path_applies(model)
    before = list(model.parameters())
    got = gr.per_example_grads(model, F.cross_entropy, x, y, chunk=3)  # three chunks, one copy
    # torch 2.14's functional_call replaces a tied model's parameters by plain tensors: the
    # library only lets it see a copy, so the caller's model keeps its Parameter objects
    assert all(a is b for a, b in zip(model.parameters(), before)) and isinstance(model[0].weight, nn.Parameter)
    torch.testing.assert_close(got, loop_grads(model, F.cross_entropy, x, y))


# -------------------------------------------------------------------------- minibatches


def test_sample_minibatches_are_uniform_without_replacement(gen):
    n, m, n_s = 7, 3, 20_000
    idx = gr.sample_minibatches(n, m, n_s, gen, max_elements=1000)  # several blocks of rows
    assert idx.shape == (n_s, m) and idx.dtype == torch.int64
    assert int(idx.min()) >= 0 and int(idx.max()) < n
    srt = idx.sort(dim=1).values
    assert bool((srt[:, 1:] != srt[:, :-1]).all())  # no repeat within a minibatch
    counts = torch.bincount(idx.reshape(-1), minlength=n).double()
    p = m / n  # each index is in a minibatch with probability m/n
    assert (counts / n_s - p).abs().max() < 4.5 * math.sqrt(p * (1 - p) / n_s)
    pair = ((idx == 0).any(1) & (idx == 1).any(1)).double().mean()
    p2 = m * (m - 1) / (n * (n - 1))
    assert abs(float(pair) - p2) < 4.5 * math.sqrt(p2 * (1 - p2) / n_s)
    again = gr.sample_minibatches(n, m, n_s, torch.Generator().manual_seed(1234), max_elements=1000)
    assert torch.equal(idx, again)
    for n, m in [(7, 3), (5, 1), (5, 5), (9, 4)]:
        assert gr.all_minibatches(n, m).tolist() == [
            list(c) for c in itertools.combinations(range(n), m)
        ]
    assert gr.all_minibatches(20, 10).shape == (math.comb(20, 10), 10)


def test_minibatch_moments_equal_exhaustive_enumeration():
    model = tanh_net()
    x, y = data()
    idx, Gs = enumerate_minibatch_grads(model, F.cross_entropy, x, y, 3)
    u = torch.randn(Gs.shape[1], dtype=DT, generator=torch.Generator().manual_seed(5))
    r = gr.minibatch_moments(model, F.cross_entropy, x, y, indices=idx, ddof=0, u=u, chunk=4)
    norms = Gs.norm(dim=1)
    mean = Gs.mean(0)
    tol = {"rtol": 1e-11, "atol": 1e-13}
    torch.testing.assert_close(r.mean, mean, **tol)
    torch.testing.assert_close(r.norms, norms, **tol)
    assert r.mean_norm == pytest.approx(float(norms.mean()), rel=1e-12)
    assert r.mean_sq_norm == pytest.approx(float((norms**2).mean()), rel=1e-12)
    trace = float(((Gs - mean) ** 2).sum(1).mean())
    assert r.trace_cov == pytest.approx(trace, rel=1e-11)
    assert r.trace_cov == pytest.approx(r.mean_sq_norm - float(mean @ mean), rel=1e-11)  # ddof = 0
    assert r.snr == pytest.approx(float(norms.mean()) / math.sqrt(trace), rel=1e-11)
    assert r.norm_var == pytest.approx(float(norms.var(correction=0)), rel=1e-11)
    assert r.norm_stochasticity == pytest.approx(
        float(norms.std(correction=0) / norms.mean()), rel=1e-11
    )
    assert r.norm_snr == pytest.approx(1 / r.norm_stochasticity)
    unit = Gs / norms[:, None]
    torch.testing.assert_close(r.resultant, unit.sum(0), **tol)
    assert r.rbar == pytest.approx(float(unit.sum(0).norm()) / len(idx), rel=1e-12)
    assert r.kappa_hat == pytest.approx(vd.kappa_hat(r.rbar, r.d))
    torch.testing.assert_close(r.cosines, Gs @ u / (norms * u.norm()), **tol)
    assert (r.n_s, r.m, r.d) == (35, 3, Gs.shape[1])


def test_finite_population_formulas_equal_the_enumeration():
    model = tanh_net()
    x, y = data()
    n, m = 7, 3
    G = gr.per_example_grads(model, F.cross_entropy, x, y)
    idx = gr.all_minibatches(n, m)
    Gs = G[idx].mean(1)  # mean-loss minibatch gradients = means of per-example gradients
    torch.testing.assert_close(
        Gs, enumerate_minibatch_grads(model, F.cross_entropy, x, y, m)[1], rtol=1e-12, atol=1e-14
    )
    fp = gr.finite_population_moments(G, m, matrix=True)
    centred = Gs - Gs.mean(0)
    torch.testing.assert_close(fp.cov, centred.T @ centred / len(idx), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(fp.mean, Gs.mean(0), rtol=1e-12, atol=1e-15)
    assert fp.mean_sq_norm == pytest.approx(float((Gs**2).sum(1).mean()), rel=1e-12)
    assert fp.trace_cov == pytest.approx(float(torch.trace(fp.cov)), rel=1e-12)
    assert fp.factor == pytest.approx((n - m) / (m * (n - 1)))
    assert 0 <= fp.mean_sq_norm - float(fp.mean @ fp.mean) <= fp.lemma_a1_bound


def test_finite_population_bound_without_factor_two_is_attained():
    # the notes' example: g_i = ±2 e_k, n = 6, m = 2:
    # E‖ĝ‖² − ‖g‖² = (n − m) γ / (m (n − 1)) = 1.6, half the paper's bound
    e = 2 * torch.eye(3, dtype=DT)
    fp = gr.finite_population_moments(torch.cat([e, -e]), 2)
    assert fp.trace_cov == pytest.approx(1.6) and fp.gamma == pytest.approx(4.0)
    assert fp.lemma_a1_bound == pytest.approx(3.2)
    G = torch.randn(12, 7, dtype=DT, generator=torch.Generator().manual_seed(6))
    Gs = G[gr.all_minibatches(12, 4)].mean(1)
    assert gr.finite_population_moments(G, 4).mean_sq_norm == pytest.approx(
        float((Gs**2).sum(1).mean()), rel=1e-12
    )


def population_values(Gs):
    """Exact moments of one random minibatch gradient, from all of them."""
    a = Gs.norm(dim=1)
    mu = Gs.mean(0)
    dev2 = ((Gs - mu) ** 2).sum(1)
    A, B, V = a.mean(), dev2.mean(), a.var(correction=0)
    if_snr = (a - A) / B.sqrt() - A * (dev2 - B) / (2 * B**1.5)
    if_gns = ((a - A) ** 2 - V) / (2 * V.sqrt() * A) - V.sqrt() * (a - A) / A**2
    return {
        "mean_norm": (A, a.std(correction=0)),
        "mean_sq_norm": ((a**2).mean(), (a**2).std(correction=0)),
        "trace_cov": (B, dev2.std(correction=0)),
        "snr": (A / B.sqrt(), if_snr.std(correction=0)),
        "norm_stochasticity": (V.sqrt() / A, if_gns.std(correction=0)),
    }


def test_random_minibatch_moments_agree_with_the_enumeration_within_their_errors(gen):
    model = tanh_net()
    x, y = data()
    _, Gs = enumerate_minibatch_grads(model, F.cross_entropy, x, y, 3)
    exact = population_values(Gs)
    n_s = 6000
    u = Gs.mean(0)
    r = gr.minibatch_moments(model, F.cross_entropy, x, y, 3, n_s, gen, chunk=700, u=u)
    for name, (value, sd) in exact.items():
        est, se = getattr(r, name), getattr(r, name + "_se")
        assert abs(est - float(value)) < 4.5 * se, name
        assert se == pytest.approx(float(sd) / math.sqrt(n_s), rel=0.15), (
            name
        )  # the se is calibrated
    cov = torch.cov(Gs.T, correction=0)
    assert ((r.mean - Gs.mean(0)).abs() < 4.5 * (cov.diagonal() / n_s).sqrt()).all()
    unit = Gs / Gs.norm(dim=1, keepdim=True)
    mu_x = unit.mean(0)
    cov_x = torch.cov(unit.T, correction=0)
    expect = float(mu_x @ mu_x + cov_x.trace() / n_s)  # E ‖x̄‖² for n_s draws
    se = 2 * math.sqrt(float(mu_x @ cov_x @ mu_x) / n_s)
    assert abs(r.rbar**2 - expect) < 4.5 * se
    cos = Gs @ u / (Gs.norm(dim=1) * u.norm())
    assert abs(float(r.cosines.mean() - cos.mean())) < 4.5 * float(cos.std()) / math.sqrt(n_s)


def test_minibatch_moments_are_deterministic_and_chunk_invariant():
    model = tanh_net()
    x, y = data()
    runs = [
        gr.minibatch_moments(
            model, F.cross_entropy, x, y, 3, 200, torch.Generator().manual_seed(9), chunk=c
        )
        for c in (1, 7, 64, 64)
    ]
    a, b = runs[-2], runs[-1]
    torch.testing.assert_close(a.norms, b.norms, rtol=0, atol=0)
    torch.testing.assert_close(a.resultant, b.resultant, rtol=0, atol=0)
    assert a.snr == b.snr and a.trace_cov == b.trace_cov and a.kappa_hat == b.kappa_hat
    for other in runs[:2]:
        torch.testing.assert_close(other.mean, a.mean, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(other.resultant, a.resultant, rtol=1e-12, atol=1e-13)
        assert other.trace_cov == pytest.approx(a.trace_cov, rel=1e-10)
        assert other.snr == pytest.approx(a.snr, rel=1e-10)
    c = gr.minibatch_moments(
        model, F.cross_entropy, x, y, 3, 200, torch.Generator().manual_seed(10)
    )
    assert not torch.equal(c.norms, a.norms)
    assert (
        a.trace_cov
        == pytest.approx(  # ddof = 1 by default: n_s/(n_s − 1) times the plug-in value
            (a.mean_sq_norm - float(a.mean @ a.mean)) * 200 / 199, rel=1e-9
        )
    )


# ------------------------------------------------------------------------ batch norm


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_minibatch_gradients_use_batch_statistics_and_touch_nothing(training, untouched):
    model = mlp([5, 6, 3], bn=True, generator=torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        model[2].running_mean.normal_(generator=torch.Generator().manual_seed(1))
        model[2].running_var.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(2))
    model.train(training)
    x, y = data(n=9)
    with untouched(model, what="minibatch_moments, per_example_grads and full_gradient with batch norm"):
        _batch_norm_minibatch_gradients(model, x, y)


def _batch_norm_minibatch_gradients(model, x, y):
    idx = gr.sample_minibatches(9, 4, 3, torch.Generator().manual_seed(3))
    r = gr.minibatch_moments(model, F.cross_entropy, x, y, indices=idx, ddof=0)
    brute = torch.stack([batch_grad(model, F.cross_entropy, x[i], y[i], train=True) for i in idx])
    torch.testing.assert_close(r.mean, brute.mean(0), rtol=1e-11, atol=1e-13)
    torch.testing.assert_close(r.norms, brute.norm(dim=1), rtol=1e-11, atol=1e-13)
    ev = gr.minibatch_moments(model, F.cross_entropy, x, y, indices=idx, ddof=0, bn_mode="eval")
    brute_eval = torch.stack(
        [batch_grad(model, F.cross_entropy, x[i], y[i], train=False) for i in idx]
    )
    torch.testing.assert_close(ev.mean, brute_eval.mean(0), rtol=1e-11, atol=1e-13)
    with pytest.raises(ValueError, match="bn_mode='eval'"):
        gr.per_example_grads(model, F.cross_entropy, x, y)
    G = gr.per_example_grads(model, F.cross_entropy, x, y, bn_mode="eval")
    torch.testing.assert_close(G, loop_grads(copy.deepcopy(model).eval(), F.cross_entropy, x, y))
    full = gr.full_gradient(model, F.cross_entropy, x, y)  # whole-batch statistics
    torch.testing.assert_close(full, batch_grad(model, F.cross_entropy, x, y, train=True))


def test_batch_norm_cnn_with_skips_runs_without_side_effects(untouched):
    model = cnn(bn=True, res=True)
    x, y = data(n=10, shape=(1, 6, 6))
    idx = gr.sample_minibatches(10, 4, 2, torch.Generator().manual_seed(1))
    with untouched(model, what="minibatch_moments of a CNN with batch norm and skips"):
        r = gr.minibatch_moments(model, F.cross_entropy, x, y, indices=idx, chunk=1)
    brute = torch.stack([batch_grad(model, F.cross_entropy, x[i], y[i]) for i in idx])
    torch.testing.assert_close(r.mean, brute.mean(0), rtol=1e-10, atol=1e-13)


# ---------------------------------------------------------------- second-moment matrix


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("chunk", [None, 3])
def test_second_moment_operator_matches_the_dense_matrix(centered, chunk):
    model = mlp([5, 4, 3], bias=True, generator=torch.Generator().manual_seed(0)).double()
    x, y = data()
    G = gr.per_example_grads(model, F.cross_entropy, x, y)
    M = G.T @ G / 7
    if centered:
        M = M - torch.outer(G.mean(0), G.mean(0))
    torch.testing.assert_close(
        gr.second_moment_matrix(model, F.cross_entropy, x, y, centered=centered, chunk=chunk), M
    )
    op = gr.second_moment_operator(model, F.cross_entropy, x, y, centered=centered, chunk=chunk)
    assert op.shape == (G.shape[1], G.shape[1]) and op.n == 7
    torch.testing.assert_close(op.mean, G.mean(0), rtol=1e-12, atol=1e-14)
    V = torch.randn(G.shape[1], 4, dtype=DT, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(op @ V[:, 0], M @ V[:, 0], rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(op @ V, M @ V, rtol=1e-10, atol=1e-13)
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------- hygiene and errors


def test_nothing_is_left_behind(untouched):
    model = tanh_net()
    x, y = data()
    flags = [p.requires_grad for p in model.parameters()]
    with untouched(model, what="the gradient estimators"):
        gr.per_example_grads(model, F.cross_entropy, x, y, method="linear")
        gr.per_example_grads(model, F.cross_entropy, x, y, method="vmap")
        gr.minibatch_moments(model, F.cross_entropy, x, y, 3, 10, torch.Generator().manual_seed(0))
        gr.full_gradient(model, F.cross_entropy, x, y)
        gr.second_moment_operator(model, F.cross_entropy, x, y) @ fn.flat_parameters(model)
        with torch.no_grad():  # works under no_grad too
            gr.per_example_grads(model, F.cross_entropy, x, y, method="linear")
    assert [p.requires_grad for p in model.parameters()] == flags
    views = fn.unflatten(model, fn.flat_parameters(model))
    for k, p in model.named_parameters():
        torch.testing.assert_close(views[k], p.detach(), rtol=0, atol=0)


def test_bad_arguments(gen):
    model = tanh_net()
    x, y = data()
    with pytest.raises(ValueError, match="minibatch size"):
        gr.minibatch_moments(model, F.cross_entropy, x, y, 8, 10, gen)
    with pytest.raises(ValueError, match="give m, n_s and generator"):
        gr.minibatch_moments(model, F.cross_entropy, x, y, 3)
    with pytest.raises(ValueError, match="ddof"):
        gr.minibatch_moments(model, F.cross_entropy, x, y, 3, 1, gen)
    with pytest.raises(ValueError, match="u must be"):
        gr.minibatch_moments(model, F.cross_entropy, x, y, 3, 4, gen, u=torch.ones(3, dtype=DT))
    with pytest.raises(ValueError, match="bn_mode"):
        gr.minibatch_moments(model, F.cross_entropy, x, y, 3, 4, gen, bn_mode="running")
    with pytest.raises(ValueError, match="inputs but"):
        gr.per_example_grads(model, F.cross_entropy, x, y[:3])
    with pytest.raises(ValueError, match="n >= 2"):
        gr.finite_population_moments(torch.ones(4, 2), 5)
    with pytest.raises(ValueError, match="out must be"):
        gr.per_example_grads(model, F.cross_entropy, x, y, out=torch.empty(7, 2, dtype=DT))


@pytest.mark.cuda
def test_gradients_on_cuda(untouched):
    model = mlp([20, 16, 4], bias=True, generator=torch.Generator().manual_seed(0)).cuda()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 20, generator=g).cuda()
    y = torch.randint(0, 4, (64,), generator=g).cuda()
    fast = gr.per_example_grads(model, F.cross_entropy, x, y, method="linear")
    slow = gr.per_example_grads(model, F.cross_entropy, x, y, method="vmap")
    assert fast.device.type == "cuda"
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6)
    r = gr.minibatch_moments(
        model,
        F.cross_entropy,
        x,
        y,
        8,
        100,
        torch.Generator(device="cuda").manual_seed(2),
        u=fast.mean(0),
    )
    assert r.mean.device.type == "cuda" and r.cosines.device.type == "cuda" and math.isfinite(r.snr)
    op = gr.second_moment_operator(model, F.cross_entropy, x, y)
    v = torch.randn(op.d, device="cuda")
    torch.testing.assert_close(op @ v, fast.T @ (fast @ v) / 64, rtol=1e-4, atol=1e-6)
    bn = mlp([20, 16, 4], bn=True, generator=torch.Generator().manual_seed(0)).cuda()
    with untouched(bn, what="minibatch_moments on CUDA"):
        gr.minibatch_moments(
            bn, F.cross_entropy, x, y, 8, 50, torch.Generator(device="cuda").manual_seed(3)
        )


# ---------------------------------------------------------------------- gradients_gram
# Moments of the stochastic gradient through the n × n Gram matrix, batched over runs, and the

def _G(runs=3, n=7, p=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(runs, n, p, generator=g, dtype=F64) + 0.3 * torch.randn(runs, 1, p, generator=g, dtype=F64)


def test_gram_moments_equal_the_dense_matrices():
    G = _G()
    r = gradients.gram_moments(G, m=3)
    for i in range(G.shape[0]):
        mu = G[i].mean(0)
        M = G[i].T @ G[i] / G.shape[1]
        S = M - torch.outer(mu, mu)
        ref = dict(mu_sq=mu @ mu, tr_M=M.trace(), tr_Sigma=S.trace(), sigma_fro=torch.linalg.matrix_norm(S),
                   sigma_2=torch.linalg.eigvalsh(S)[-1], sigma_half_mu=(mu @ S @ mu).sqrt(), tr_M_m=S.trace() / 3 + mu @ mu)
        for k, v in ref.items():
            torch.testing.assert_close(getattr(r, k)[i], v, rtol=1e-11, atol=1e-13)
        torch.testing.assert_close(r.mu[i], mu)
    wo = gradients.gram_moments(G, m=3, replacement=False)
    torch.testing.assert_close(wo.tr_M_m, (7 - 3) / (3 * 6) * r.tr_Sigma + r.mu_sq)
    assert torch.isnan(gradients.gram_moments(G).tr_M_m).all()


def test_second_moment_top_via_the_gram_is_an_eigendecomposition():
    G = _G(runs=2, n=6, p=15)
    for centered in (False, True):
        lam, V = gradients.second_moment_top(G, 4, centered=centered)
        for i in range(2):
            A = G[i] - G[i].mean(0) if centered else G[i]
            M = A.T @ A / 6
            torch.testing.assert_close(lam[i], torch.linalg.eigvalsh(M).flip(0)[:4], rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(M @ V[i], V[i] * lam[i], rtol=1e-9, atol=1e-11)
            torch.testing.assert_close(V[i].T @ V[i], torch.eye(4, dtype=F64), rtol=0, atol=1e-10)
    # a zero eigenvalue (rank-deficient G): its vector comes back as zeros, not as noise
    Z = torch.zeros(1, 3, 5, dtype=F64)
    Z[0, :, 0] = 1.0
    lam, V = gradients.second_moment_top(Z, 2)
    assert lam[0, 1] == 0 and (V[0, :, 1] == 0).all()
    with pytest.raises(ValueError, match="k = 9"):
        gradients.second_moment_top(G, 9)


@pytest.mark.parametrize("replacement", [True, False])
def test_minibatch_second_moment_by_enumeration(replacement):
    G = _G(runs=1, n=5, p=8)[0]
    m = 3
    idx = itertools.product(range(5), repeat=m) if replacement else itertools.combinations(range(5), m)
    gh = G[torch.tensor(list(idx))].mean(1)
    torch.testing.assert_close(gradients.minibatch_second_moment(G, m, replacement=replacement), gh.T @ gh / len(gh),
                               rtol=1e-11, atol=1e-13)


def test_samplers_with_replacement():
    idx = gradients.all_minibatches(4, 3, replacement=True)
    assert idx.shape == (64, 3)
    assert idx.tolist() == [list(t) for t in itertools.product(range(4), repeat=3)]
    s = gradients.sample_minibatches(5, 12, 2000, torch.Generator().manual_seed(0), replacement=True)
    assert s.shape == (2000, 12) and s.min() == 0 and s.max() == 4
    assert (torch.bincount(s.reshape(-1), minlength=5).double() / s.numel() - 0.2).abs().max() < 0.01
    with pytest.raises(ValueError, match="m = 12"):
        gradients.sample_minibatches(5, 12, 3, torch.Generator())


def _net(g):
    return models.mlp([6, 5, 4, 3], bias=True, generator=g, flatten=False).double()


def test_stacked_per_example_grads_equal_a_loop_per_run():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 6, generator=g, dtype=F64)
    y = torch.randint(0, 3, (9,), generator=g)
    base, params, _ = ensemble.stacked_init(_net, 3, torch.Generator().manual_seed(1))
    sum_ce = lambda o, t: F.cross_entropy(o, t, reduction="sum")  # noqa: E731  (the general loss path)
    for kw in ({}, {"fast_path": False}, {"loss_fn": sum_ce}, {"chunk": 2}):
        G = gradients.stacked_per_example_grads(base, params, x, y, **kw)
        for r in range(3):
            ref = loop_grads(load_run(_net(torch.Generator()), params, r), F.cross_entropy, x, y)
            torch.testing.assert_close(G[r], ref, rtol=1e-11, atol=1e-13)


def test_minibatch_grads_equal_one_autograd_call_per_minibatch():
    g = torch.Generator().manual_seed(3)
    model = _net(g)
    x = torch.randn(8, 6, generator=g, dtype=F64)
    y = torch.randint(0, 3, (8,), generator=g)
    idx = gradients.sample_minibatches(8, 3, 11, g, replacement=True)
    got = gradients.minibatch_grads(model, F.cross_entropy, x, y, idx, chunk=4)
    ref = torch.stack([batch_grad(model, F.cross_entropy, x[i], y[i]) for i in idx])
    torch.testing.assert_close(got, ref, rtol=1e-11, atol=1e-13)


def test_second_moment_operator_has_the_operator_interface_for_lanczos():
    from sgdbook import curvature

    g = torch.Generator().manual_seed(4)
    model = _net(g)
    x = torch.randn(10, 6, generator=g, dtype=F64)
    y = torch.randint(0, 3, (10,), generator=g)
    op = gradients.second_moment_operator(model, F.cross_entropy, x, y)
    G = loop_grads(model, F.cross_entropy, x, y)
    M = G.T @ G / 10
    V = torch.randn(3, M.shape[0], generator=g, dtype=F64)
    torch.testing.assert_close(op.batch(V), V @ M, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op(V[0]), M @ V[0], rtol=1e-10, atol=1e-12)
    lz = curvature.lanczos(op, M.shape[0], 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(lz.eigenvalues, torch.linalg.eigvalsh(M).flip(0)[:3], rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------------- gradients_layer
# per_example_grads' layer path (Linear, Conv2d and eval-mode batch norm, any code between them)



def _loop(model, x, y, loss_fn=F.cross_entropy):
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(x.shape[0]):
        g = torch.autograd.grad(loss_fn(model(x[i : i + 1]), y[i : i + 1]), params)
        rows.append(torch.cat([t.reshape(-1) for t in g]))
    return torch.stack(rows)


def _nets(g):
    return {
        "cnn": models.small_cnn((2, 3, 3), (4,), generator=g).double(),
        "cnn+bn": models.small_cnn((2, 3, 3), (4,), bn=True, generator=g).double(),
        "resnet": models.preact_resnet(1, (2, 3), generator=g).double(),
        "strided conv with bias": nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(),
                                                nn.Conv2d(3, 2, 2, dilation=2), nn.Flatten(), nn.LazyLinear(5)).double(),
    }


@pytest.mark.parametrize("name", ["cnn", "cnn+bn", "resnet", "strided conv with bias"])
def test_layer_path_equals_loop(name):
    g = torch.Generator().manual_seed(0)
    model = _nets(g)[name]
    x = torch.randn(7, 1, 8, 8, generator=g, dtype=F64)
    y = torch.randint(0, 5, (7,), generator=g)
    model(x)  # materialise lazy layers; set running statistics
    model.eval()
    s = functional_view(model, "eval", per_example=True)
    assert gradients.layer_plan(s) is not None
    G = gradients.per_example_grads(model, F.cross_entropy, x, y, bn_mode="eval", method="layer")
    assert torch.allclose(G, _loop(model, x, y), atol=1e-12)
    # a loss other than cross-entropy goes through the per-example losses
    mse = lambda out, t: ((out - F.one_hot(t, out.shape[1]).to(out)) ** 2).mean()  # noqa: E731
    G2 = gradients.per_example_grads(model, mse, x, y, bn_mode="eval", method="layer", chunk=3)
    assert torch.allclose(G2, _loop(model, x, y, mse), atol=1e-12)
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("form", ["grouped", "unfold"])
def test_both_forms_of_the_convolution_weight_gradients_equal_the_loop(form, monkeypatch):
    # the layer path times both forms at the first call of a shape and keeps the faster: force
    # each one for every shape of these nets and compare with the loop
    g = torch.Generator().manual_seed(0)
    forced = {}
    monkeypatch.setattr(gradients, "_CONV_FORM", type("Forced", (dict,), {"get": lambda self, key, default=None: form})(forced))
    for name in ("cnn", "resnet", "strided conv with bias"):
        model = _nets(g)[name]
        x = torch.randn(5, 1, 8, 8, generator=g, dtype=F64)
        y = torch.randint(0, 5, (5,), generator=g)
        model(x)
        model.eval()
        G = gradients.per_example_grads(model, F.cross_entropy, x, y, bn_mode="eval", method="layer")
        assert torch.allclose(G, _loop(model, x, y), atol=1e-12), name


def test_the_faster_convolution_form_is_chosen_once_per_shape(monkeypatch):
    monkeypatch.setattr(gradients, "_CONV_FORM", {})
    g = torch.Generator().manual_seed(0)
    model = _nets(g)["cnn"].eval()
    x = torch.randn(6, 1, 8, 8, generator=g, dtype=F64)
    y = torch.randint(0, 5, (6,), generator=g)
    gradients.per_example_grads(model, F.cross_entropy, x, y, bn_mode="eval", method="layer")
    chosen = dict(gradients._CONV_FORM)
    assert len(chosen) == 3 and set(chosen.values()) <= {"grouped", "unfold"}  # one entry per convolution
    gradients.per_example_grads(model, F.cross_entropy, x, y, bn_mode="eval", method="layer")
    assert gradients._CONV_FORM == chosen


class _Mixing(nn.Module):
    """Examples interact: the batch mean is subtracted."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 1, 1)
        self.l = nn.Linear(4, 3)

    def forward(self, x):
        h = self.c(x).flatten(1)
        return self.l(h - h.mean(0))


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(3, 3)

    def forward(self, x):
        return self.l(torch.relu(self.l(x)))


def test_the_independence_check_runs_once_per_model_loss_and_shape(monkeypatch):
    calls = []
    check = gradients._row_matches
    monkeypatch.setattr(gradients, "_row_matches", lambda *a: calls.append(1) or check(*a))
    g = torch.Generator().manual_seed(0)
    model = _nets(g)["cnn"].eval()
    y = torch.randint(0, 5, (6,), generator=g)
    for _ in range(2):
        gradients.per_example_grads(model, F.cross_entropy, torch.randn(6, 1, 8, 8, generator=g, dtype=F64), y)
    assert len(calls) == 1
    G = gradients.per_example_grads(model, F.nll_loss, torch.randn(6, 1, 8, 8, generator=g, dtype=F64), y)  # another loss
    assert len(calls) == 2 and G.shape[0] == 6
    mixing = _Mixing().double()  # fails its check at every call, never cached as independent
    x = torch.randn(5, 1, 2, 2, generator=g, dtype=F64)
    for _ in range(2):
        auto = gradients.per_example_grads(mixing, F.cross_entropy, x, y[:5] % 3)
        assert torch.allclose(auto, gradients.per_example_grads(mixing, F.cross_entropy, x, y[:5] % 3, method="vmap"), atol=1e-12)


class _Center(nn.Module):
    def forward(self, h):
        return h - h.mean(0)


def test_the_independence_check_is_not_cached_from_one_example_or_across_a_replaced_layer():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 1, 4, 4, generator=g, dtype=F64)
    y = torch.randint(0, 3, (6,), generator=g)
    mixing = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), _Center(), nn.Linear(8, 3)).double()
    # one example (or chunks of one) cannot show the centring: that call must not certify the model
    gradients.per_example_grads(mixing, F.cross_entropy, x[:1], y[:1])
    gradients.per_example_grads(mixing, F.cross_entropy, x, y, chunk=1)
    vm = gradients.per_example_grads(mixing, F.cross_entropy, x, y, method="vmap")
    assert torch.allclose(gradients.per_example_grads(mixing, F.cross_entropy, x, y), vm, atol=1e-12)
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Identity(), nn.Linear(8, 3)).double()
    gradients.per_example_grads(plain, F.cross_entropy, x, y)  # checked and certified
    plain[2] = _Center()  # the same model object with a layer that mixes the examples
    vm = gradients.per_example_grads(plain, F.cross_entropy, x, y, method="vmap")
    assert torch.allclose(gradients.per_example_grads(plain, F.cross_entropy, x, y), vm, atol=1e-12)


def test_layer_path_falls_back_when_it_does_not_apply():
    g = torch.Generator().manual_seed(1)
    for model, x in ((_Mixing().double(), torch.randn(5, 1, 2, 2, generator=g, dtype=F64)),
                     (_Twice().double(), torch.randn(5, 3, generator=g, dtype=F64))):
        y = torch.randint(0, 3, (5,), generator=g)
        with pytest.raises(ValueError, match="does not apply"):
            gradients.per_example_grads(model, F.cross_entropy, x, y, method="layer")
        auto = gradients.per_example_grads(model, F.cross_entropy, x, y)
        vm = gradients.per_example_grads(model, F.cross_entropy, x, y, method="vmap")
        assert torch.allclose(auto, vm, atol=1e-12)
    drop = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Dropout(0.5), nn.Flatten(), nn.LazyLinear(3)).double()
    drop(torch.randn(2, 1, 4, 4, dtype=F64))
    drop.train()
    assert gradients.layer_plan(functional_view(drop, "eval", per_example=True)) is None
    grouped = nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.Flatten()).double()
    assert gradients.layer_plan(functional_view(grouped, "eval", per_example=True)) is None
    with pytest.raises(ValueError, match="method='layer' needs"):
        gradients.per_example_grads(grouped, F.cross_entropy, torch.randn(2, 2, 3, 3, dtype=F64), torch.tensor([0, 1]), method="layer")
