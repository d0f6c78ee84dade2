"""Dry runs of the batch-size-variance chapters: the `paper` scale built and stepped once.

One function per notebook ``NN_<topic>.ipynb``: ``<topic>(cfg, device)`` takes the notebook's
``SETTINGS("paper")``, asserts the paper's own values (its appendices), builds every paper-scale
configuration (data of the paper's shapes, models with their parameter counts, the full grids of
batch sizes and schedules) and runs ONE step of each computation on ``device``. A run count
that only sets a batch dimension is cut to 2–3 runs. ``tests/test_paper_scale.py`` calls every
function on the CPU, so the `paper` scale cannot rot on a machine without a GPU.

Example::

    from sgdbook.papers.batch_size_variance import dry_run
    from sgdbook.papers.batch_size_variance.settings.deep_linear_sgd import SETTINGS
    dry_run.deep_linear_sgd(SETTINGS("paper"), torch.device("cpu"))  # raises if anything is off
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Mapping

import torch
from torch import nn

from sgdbook import data, distort, ensemble
from sgdbook.models import count_parameters

from . import deeplinear, deeplinear_sgd, linreg, seqmodels
from .mlp import PAPER_WIDTHS, make_model, to_inputs, widths

DT = torch.float64
Settings = Mapping[str, Any]


def linear_regression(cfg: Settings, device: torch.device) -> None:
    """§3.1 / App. A.2: the Admission (n = 400, p = 7 + intercept) and diabetes problems, the
    exact moment recursion at every b ∈ [1, n], the Figure 2(a) and 2(b) Monte Carlo at their
    run counts, the polynomial coefficients and the exact rational check, each for one step.
    The chapter computes on the CPU in float64 (exact recursions, small problems), whatever
    ``device`` is; so does its dry run."""
    assert cfg["lr_scale"] == 0.5 and cfg["fig2a_steps"] == 2000 and cfg["fig2a_runs"] == 1000
    assert cfg["fig2b_ts"] == [10, 20, 30, 40] and cfg["fig2b_runs"] == 10_000 and cfg["fig2b_degree"] == 6
    assert len(cfg["fig2a_b"]) == 4 and cfg["exact_t_max"] >= 1 and cfg["poly_max_t"] >= cfg["exact_t_max"]
    gen = torch.Generator().manual_seed(0)
    adm = data.admission()
    xa, ya = linreg.standardise(adm.x, adm.y)
    PA = linreg.problem(xa, ya)
    assert (PA.n, PA.p) == (400, 8)
    dia = data.diabetes()
    xd, yd = linreg.standardise(dia.x, dia.y, scale_y=True)
    PD = linreg.problem(xd, yd)
    assert (PD.n, PD.p) == (442, 11)
    alphas = linreg.harmonic_schedule(cfg["lr_scale"], cfg["fig2a_steps"])
    assert alphas.shape == (2000,) and float(alphas[0]) == 0.5 and float(alphas[-1]) == 0.5 / 2000
    for P in (PA, PD):
        w0 = torch.randn(P.p, generator=gen, dtype=DT)
        q = linreg.moments(P, w0, alphas[:1], list(range(1, P.n + 1)))  # one step at every b
        assert q.var_g.shape == (2, P.n) and float(q.var_grad[0].abs().max()) < 1e-12
        for b in cfg["fig2a_b"]:
            mc = linreg.monte_carlo(P, w0, alphas[:1], b, cfg["fig2a_runs"], gen)
            assert torch.isfinite(mc.var_g).all() and mc.var_g.shape == (2,)
    grid = linreg.fig2b_grid(PA.n)
    assert min(grid) >= 2 and max(grid) == PA.n and cfg["fig2b_degree"] < len(grid)
    w0 = torch.randn(PA.p, generator=gen, dtype=DT)
    mc = linreg.monte_carlo(PA, w0, alphas[:1], grid[0], cfg["fig2b_runs"], gen)
    assert torch.isfinite(mc.var_g_se).all()
    coefs = linreg.var_g_polynomial(PA, w0, alphas, keep=[1])
    assert len(coefs[1]) == 3  # var(g_1 | F_0) has degree 2 in c_b
    n8, cols = 8, [0, 5, 7]  # the exact rational check's subset: GRE, CGPA, intercept
    x8 = [[Fraction(float(v)) for v in r] for r in xa[:n8, cols]]
    y8 = [Fraction(float(v)) for v in ya[:n8]]
    w8 = [Fraction(float(v)) for v in w0[cols]]
    vals = [linreg.var_g_rational(x8, y8, w8, [Fraction(1, 2)], b)[1] for b in range(1, n8 + 1)]
    cs = [Fraction(n8 - b, b * (n8 - 1)) for b in range(1, n8 + 1)]
    assert linreg.exact_degree(cs, vals) == 2


def deep_linear_theory(cfg: Settings, device: torch.device) -> None:
    """§3.2 / App. B.2: Eqs. (1)–(2) and the Lemma 8 Monte Carlo at 64-256-128, Lemmas 6/7 at
    the input dimension, the exact scalar-network polynomials, and the Section-3 remark."""
    p, p1, p2 = cfg["dims"]
    assert (p, p1, p2) == (64, 256, 128) and cfg["exact_T"] == 3
    g = torch.Generator().manual_seed(0)
    W1 = (torch.randn(p1, p, generator=g, dtype=DT) / math.sqrt(p)).to(device)
    W2 = (torch.randn(p2, p1, generator=g, dtype=DT) / math.sqrt(p1)).to(device)
    Wb1 = (torch.randn(p1, p, generator=g, dtype=DT) / math.sqrt(p)).to(device)
    Wb2 = (torch.randn(p2, p1, generator=g, dtype=DT) / math.sqrt(p1)).to(device)
    gd = torch.Generator(device=device).manual_seed(1)
    # Eqs. (1)-(2) and Lemma 8 Monte Carlo: 2 runs at the largest configured batch size
    bmax = max(cfg["lemma8_b"])
    x = torch.randn(2, bmax, p, generator=g, dtype=DT).to(device)
    g1, g2 = deeplinear.minibatch_grads(W1, W2, Wb1, Wb2, x)
    assert g1.shape == (2, p1, p) and g2.shape == (2, p2, p1)
    m1, s1, m2, s2 = deeplinear.lemma8_monte_carlo(W1, W2, Wb1, Wb2, bmax, 2, gd)
    e1, e2 = deeplinear.conditional_sq_norms(W1, W2, Wb1, Wb2, bmax)
    assert torch.isfinite(m1 + m2 + e1 + e2)
    # Lemma 6/7 at the input dimension: exact m = 3, a few Monte Carlo draws
    A = torch.randn(p, p, generator=g, dtype=DT).to(device)
    B = torch.randn(p, p, generator=g, dtype=DT).to(device)
    E3, n3 = deeplinear.chain_moment([A, B], [(0, 0)] * 3)
    assert n3 == 15 and torch.allclose(E3, deeplinear.magnus_m3(A, B), atol=1e-9)
    mc, se = deeplinear.chain_monte_carlo([A, B], [(0, 0)] * 3, 4, gd)
    assert mc.shape == (p, p) and cfg["mc_wick"] >= 10**6
    # the exact scalar polynomials at t = exact_T, quadrature at every b, a tiny Monte Carlo
    net = deeplinear.ScalarNet(*(Fraction(v) for v in cfg["scalar_net"]))
    tr = deeplinear.scalar_trajectory(net, cfg["exact_T"])
    P = deeplinear.scalar_polys(tr, cfg["exact_T"])
    assert deeplinear.poly_degree(P.var_g1) == 76 and P.var_g1[0] == 0
    for b in cfg["quad_b"]:
        q = deeplinear.scalar_quadrature(net, cfg["exact_T"], b)
        assert math.isclose(q["var_g1"][-1], float(deeplinear.poly_eval(P.var_g1, b)), rel_tol=1e-8)
    mcs = deeplinear.scalar_monte_carlo(net, cfg["scalar_mc_T"], max(cfg["scalar_mc_b"]), 4, gd, device=device)
    assert len(mcs["var_g1"]) == cfg["scalar_mc_T"] + 1
    assert not deeplinear.increases_on(P.var_g1, range(1, 50))
    assert deeplinear.b0_derivative(P.var_g1) < cfg["mono_b_max"]
    # one random net of the b0 search
    rnet = deeplinear.ScalarNet(Fraction(3, 8), Fraction(-5, 8), Fraction(1, 2), net.lr_c)
    rp = deeplinear.scalar_polys(deeplinear.scalar_trajectory(rnet, cfg["b0_search_T"]), cfg["b0_search_T"])
    deeplinear.b0_main_text(rp.var_g1)
    # the Section-3 remark: exact linear-regression moments, two steps of the configured run
    dia = data.diabetes()
    xd, yd = linreg.standardise(dia.x, dia.y, scale_y=True)
    PD = linreg.problem(xd, yd)  # on the CPU, as in the chapter
    alphas = linreg.harmonic_schedule(0.5, cfg["footnote_steps"])[:2]
    qd = linreg.moments(PD, torch.zeros(PD.p, dtype=DT), alphas, list(range(1, PD.n + 1)))
    assert qd.var_g.shape == (3, PD.n) and cfg["footnote_steps"] == 2000


def deep_linear_sgd(cfg: Settings, device: torch.device) -> None:
    """Figure 3 / App. A.1.2: the 64-256-128 network and the depth-3 sketch with the full
    batch-size grid and schedule, one lockstep step of 3 runs each (the paper's 1,000 runs only
    set a batch dimension)."""
    for prefix in ("", "deep_"):
        dims, bs = cfg[prefix + "dims"], cfg[prefix + "bs"]
        assert cfg[prefix + "runs"] == 1000 and cfg[prefix + "steps"] == 1000
        if not prefix:
            assert dims == [64, 256, 128] and cfg["lr_scale"] == 0.1  # App. A.1.2
        assert bs == [1, 2, 4, 8, 16, 32, 64, 128]
        dtype = getattr(torch, cfg["dtype"])
        gen = torch.Generator().manual_seed(0)
        w0 = [w.to(device) for w in deeplinear_sgd.init_linear(dims, gen, dtype)]
        teacher = [w.to(device) for w in deeplinear_sgd.init_linear(dims, gen, dtype)]
        alphas = linreg.harmonic_schedule(cfg["lr_scale"], cfg[prefix + "steps"], dtype).to(device)
        assert alphas.shape == (1000,) and abs(float(alphas[0]) - 0.1) < 1e-7
        runs = 3  # the run count only sets a batch dimension
        res = deeplinear_sgd.run_lockstep(w0, teacher, bs, runs, alphas[:1], torch.Generator(device=device).manual_seed(1))
        assert res.var_g.layer.shape == (2, len(bs), len(dims) - 1)
        assert [tuple(w.shape) for w in res.weights] == [(len(bs), runs, o, i) for i, o in zip(dims[:-1], dims[1:])]
        for tr in (res.var_g, res.var_grad, res.var_rb):
            assert torch.isfinite(tr.total).all() and (tr.total[1] > 0).all()
        bv = res.var_rb.total[0] * torch.tensor(bs, dtype=res.var_rb.total.dtype, device=res.var_rb.total.device)
        assert float((bv / bv[0] - 1).abs().max()) < 1e-4  # t = 0: exactly ∝ 1/b
        assert all(t <= cfg[prefix + "steps"] for t in cfg["fit_ts" if not prefix else "deep_ts"])


def mlp_classification(cfg: Settings, device: torch.device) -> None:
    """Figure 4 / App. A.1.3: the 784-1024-512-10 MLP, the 5 inits × 50 runs stacking (2 runs per
    init here), data of MNIST's shapes, elastic distortion, and one epoch-indexed SGD step with the
    per-init gradient variance at each batch size."""
    assert widths(cfg) == PAPER_WIDTHS == [784, 1024, 512, 10]
    assert cfg["batch_sizes"] == [64, 128] and cfg["lr"] == 3e-3 and cfg["epochs"] == 1000
    assert cfg["pilot_epochs"] == 0  # one set of runs, as in the paper
    assert cfg["inits"] == 5 and cfg["runs_per_init"] == 50
    assert cfg["n_train"] == 60_000 and cfg["n_val"] == 10_000
    assert (cfg["distort_alpha"], cfg["distort_sigma"]) == (8.0, 2.0)
    assert cfg["epochs"] % cfg["eval_every"] == 0 and max(cfg["batch_sizes"]) <= cfg["n_train"]
    gen = torch.Generator().manual_seed(0)
    make = make_model(cfg)
    assert count_parameters(make(gen)) == 784 * 1024 + 1024 + 1024 * 512 + 512 + 512 * 10 + 10  # 1,333,770
    per = 2  # the configured 50 runs per init only set a batch dimension
    inits = cfg["inits"]
    base, p0, _ = ensemble.stacked_init(make, inits, gen)
    params = {k: v.repeat_interleave(per, dim=0).to(device) for k, v in p0.items()}
    assert params["0.weight"].shape == (inits * per, 1024, 784)
    n = 256  # random stand-in images of MNIST's shape
    images = torch.rand(n, 28, 28, generator=gen)
    x = to_inputs(images)
    assert x.shape == (n, 784) and x.min() >= -1 and x.max() <= 1
    x, y = x.to(device), torch.randint(0, 10, (n,), generator=gen).to(device)
    dist = distort.elastic_distort(images[:16], cfg["distort_alpha"], cfg["distort_sigma"], gen)
    assert dist.shape == (16, 28, 28) and torch.isfinite(dist).all()
    for b in cfg["batch_sizes"]:
        idx = ensemble.epoch_indices(n, inits * per, b, gen, device=device)[:1]  # one step
        assert idx.shape == (1, inits * per, b)
        res = ensemble.ensemble_sgd(base, params, x, y, nn.functional.cross_entropy, lr=cfg["lr"], batch_size=b,
                                    steps=1, generator=gen, indices=idx, group_size=per)
        assert res.grad_var.shape == (1, inits) and (res.grad_var > 0).all()
        assert math.isfinite(float(res.loss.sum()))
        loss, acc = ensemble.evaluate_runs(base, res.params, x[:64], y[:64], chunk=32)
        assert loss.shape == acc.shape == (inits * per,) and torch.isfinite(loss).all()


def transformer_adam(cfg: Settings, device: torch.device) -> None:
    """Figure 6 / App. A.1.4: the 6-layer, 384-wide transformer (the paper's XLNet has 35,493,122
    parameters), data of the configured shapes, and ONE lockstep AdamW step of 2 runs."""
    assert cfg["batch_sizes"] == [32, 64] and cfg["runs"] == 100 and cfg["epochs"] == 20
    assert (cfg["n_train"], cfg["n_val"], cfg["seq_len"]) == (10_000, 1_000, 128)
    assert (cfg["n_layers"], cfg["d_model"], cfg["n_heads"]) == (6, 384, 12)
    assert cfg["runs"] % cfg["run_group"] == 0
    assert (cfg["lr"], cfg["eps"], cfg["max_grad_norm"]) == (4e-5, 1e-8, 1.0)
    gen = torch.Generator(device=device).manual_seed(0)
    sent = seqmodels.synthetic_sentiment(cfg["n_train"] + cfg["n_val"], cfg["vocab_size"], cfg["seq_len"], gen,
                                         n_keywords=cfg["n_keywords"], keyword_rate=cfg["keyword_rate"],
                                         label_noise=cfg["label_noise"])
    train, val = sent.subset(slice(0, cfg["n_train"])), sent.subset(slice(cfg["n_train"], None))
    assert train.tokens.shape == (10_000, 128) and val.tokens.shape == (1_000, 128)
    model = seqmodels.transformer_classifier(cfg["vocab_size"], cfg["seq_len"], cfg["d_model"], cfg["n_heads"],
                                             cfg["n_layers"], cfg["d_ff"], gen, init_std=cfg["init_std"],
                                             emb_std=cfg["emb_std"])
    n_params = count_parameters(model)
    assert abs(n_params - 35_493_122) / 35_493_122 < 0.03  # the paper's XLNet: 35,493,122 parameters
    seqmodels.check_data(train, model.vocab_size, model.max_len)
    adam = seqmodels.AdamConfig(lr=cfg["lr"], eps=cfg["eps"], weight_decay=cfg["weight_decay"],
                                max_grad_norm=cfg["max_grad_norm"], warmup_steps=cfg["warmup_steps"])
    # one step of 2 runs (the run count and b only set batch dimensions; one sequence per run keeps it cheap)
    R, m = 2, 1
    idx = ensemble.epoch_indices(cfg["n_train"], R, cfg["batch_sizes"][0], gen)[0, :, :m]
    params = seqmodels.stack_params(dict(model.named_parameters()), R)
    state = seqmodels.adam_init(params)
    new, state, st = seqmodels.lockstep_step(seqmodels._meta(model), params, state, 0, train.tokens[idx],
                                             train.mask[idx], train.labels[idx], adam)
    assert new["tok.weight"].shape == (R, cfg["vocab_size"], cfg["d_model"])
    assert torch.isfinite(st["var_raw"]) and float(st["var_raw"]) > 0 and st["grad_norm"].shape == (R,)
    assert not torch.equal(new["layers.0.qkv.weight"], params["layers.0.qkv.weight"])
    loss, err = seqmodels.evaluate(model, new, val.subset(slice(0, 2)), chunk=2)
    assert loss.shape == err.shape == (R,) and torch.isfinite(loss).all()
