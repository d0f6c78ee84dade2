"""Per-example and minibatch gradients and their moments against brute force, in float64."""

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from sgdbook import directional as vd
from sgdbook import functional as fn
from sgdbook import gradients as gr
from sgdbook.models import mlp
from sgdbook.papers.vmf_directional.models import PaperCNN
from torch import nn

DT = torch.float64


def data(n=7, shape=(5,), classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=DT), torch.randint(
        0, classes, (n,), generator=g
    )


def randomize(model, seed=0):
    """float64 with every parameter drawn from N(0, 0.5) (biases too), from its own generator."""
    g = torch.Generator().manual_seed(seed)
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.7 * torch.randn(p.shape, generator=g, dtype=DT))
    return model


def tanh_net(seed=0, bias=True):
    return randomize(
        nn.Sequential(nn.Linear(5, 4, bias=bias), nn.Tanh(), nn.Linear(4, 3, bias=bias)), seed
    )


def flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


def loop_grads(model, loss_fn, x, y):
    """One torch.autograd.grad per example, on a batch of one."""
    ps = [p for p in model.parameters() if p.requires_grad]
    return torch.stack(
        [
            flat(torch.autograd.grad(loss_fn(model(x[i : i + 1]), y[i : i + 1]), ps))
            for i in range(len(x))
        ]
    )


def batch_grad(model, loss_fn, xb, yb, train=True):
    """One minibatch gradient, on a throw-away copy (whose batch norm may update its own stats)."""
    c = copy.deepcopy(model).train(train)
    return flat(
        torch.autograd.grad(loss_fn(c(xb), yb), [p for p in c.parameters() if p.requires_grad])
    )


def state(model):
    return {k: v.detach().clone() for k, v in [*model.named_parameters(), *model.named_buffers()]}


def assert_untouched(model, before, training):
    for k, v in [*model.named_parameters(), *model.named_buffers()]:
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert [m.training for m in model.modules()] == training
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------ per-example gradients


@pytest.mark.parametrize("method", ["auto", "vmap", "linear"])
def test_per_example_grads_match_a_loop(method):
    model = tanh_net()
    x, y = data()
    G = gr.per_example_grads(model, F.cross_entropy, x, y, method=method)
    assert G.shape == (7, fn.flat_parameters(model).numel()) and G.dtype == DT
    torch.testing.assert_close(G, loop_grads(model, F.cross_entropy, x, y), rtol=1e-12, atol=1e-14)


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
    model = PaperCNN(
        stages=(1, 1),
        widths=(2, 3),
        in_channels=1,
        classes=3,
        generator=torch.Generator().manual_seed(0),
    ).double()
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


def enumerate_exactly(model, loss_fn, x, y, m, train=True):
    """Every minibatch gradient by brute force (one autograd call per subset): [C(n, m), d]."""
    idx = gr.all_minibatches(x.shape[0], m)
    return idx, torch.stack([batch_grad(model, loss_fn, x[i], y[i], train) for i in idx])


def test_minibatch_moments_equal_exhaustive_enumeration():
    model = tanh_net()
    x, y = data()
    idx, Gs = enumerate_exactly(model, F.cross_entropy, x, y, 3)
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
        Gs, enumerate_exactly(model, F.cross_entropy, x, y, m)[1], rtol=1e-12, atol=1e-14
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
    _, Gs = enumerate_exactly(model, F.cross_entropy, x, y, 3)
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
def test_batch_norm_minibatch_gradients_use_batch_statistics_and_touch_nothing(training):
    model = mlp([5, 6, 3], bn=True, generator=torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        model[2].running_mean.normal_(generator=torch.Generator().manual_seed(1))
        model[2].running_var.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(2))
    model.train(training)
    x, y = data(n=9)
    before, modes = state(model), [m.training for m in model.modules()]
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
    assert_untouched(model, before, modes)


def test_batch_norm_cnn_with_skips_runs_without_side_effects():
    model = PaperCNN(
        bn=True,
        res=True,
        stages=(2, 2),
        widths=(2, 4),
        in_channels=1,
        classes=3,
        generator=torch.Generator().manual_seed(0),
    ).double()
    x, y = data(n=10, shape=(1, 6, 6))
    before, modes = state(model), [m.training for m in model.modules()]
    idx = gr.sample_minibatches(10, 4, 2, torch.Generator().manual_seed(1))
    r = gr.minibatch_moments(model, F.cross_entropy, x, y, indices=idx, chunk=1)
    brute = torch.stack([batch_grad(model, F.cross_entropy, x[i], y[i]) for i in idx])
    torch.testing.assert_close(r.mean, brute.mean(0), rtol=1e-10, atol=1e-13)
    assert_untouched(model, before, modes)


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


def test_nothing_is_left_behind():
    model = tanh_net()
    x, y = data()
    before, modes = state(model), [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    gr.per_example_grads(model, F.cross_entropy, x, y, method="linear")
    gr.per_example_grads(model, F.cross_entropy, x, y, method="vmap")
    gr.minibatch_moments(model, F.cross_entropy, x, y, 3, 10, torch.Generator().manual_seed(0))
    gr.full_gradient(model, F.cross_entropy, x, y)
    gr.second_moment_operator(model, F.cross_entropy, x, y) @ fn.flat_parameters(model)
    with torch.no_grad():  # works under no_grad too
        gr.per_example_grads(model, F.cross_entropy, x, y, method="linear")
    assert_untouched(model, before, modes)
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
def test_gradients_on_cuda():
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
    before = state(bn)
    gr.minibatch_moments(
        bn, F.cross_entropy, x, y, 8, 50, torch.Generator(device="cuda").manual_seed(3)
    )
    assert_untouched(bn, before, [m.training for m in bn.modules()])


def test_fresh_buffer_large_and_small():
    from sgdbook.functional import fresh_buffer

    for rows, cols in [(3, 5), (64, 200_000)]:  # 51 MB: the huge-page branch on Linux
        buf = fresh_buffer(rows, cols, torch.float32, "cpu")
        assert buf.shape == (rows, cols) and buf.dtype == torch.float32 and buf.is_contiguous()
        buf.fill_(2.0)
        assert float(buf.sum()) == 2.0 * rows * cols
