"""Dry run of the performance appendix: every `paper`-scale problem built, each timed operation run once.

``performance(cfg, device)`` takes ``SETTINGS("paper")`` of ``book/appendix/performance.ipynb``,
builds each benchmarked problem at its configured size (models with their parameter counts, data
of the configured shapes, the ensemble's run count) and runs the library's side of each
comparison ONCE on ``device``, with no timing. Where a configured size only sets a batch
dimension (examples per batch, n_s, data rows) it is cut to a few, so that the dry run stays a
matter of seconds on a CPU; the sizes themselves are asserted. ``tests/test_paper_scale.py``
calls it on the CPU.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping

import torch
from torch import nn

from sgdbook import curvature, directional, ensemble, gradients, models
from sgdbook.models import count_parameters

Settings = Mapping[str, Any]


def performance(cfg: Settings, device: torch.device) -> None:
    gen = torch.Generator().manual_seed(0)
    ce = nn.functional.cross_entropy
    # per-example gradients: each MLP at its width, a batch of 2 (the batch only sets a dimension)
    assert len(cfg["pe_models"]) == len(cfg["pe_batches"]) and cfg["reps"] >= 3
    for widths, batch in zip(cfg["pe_models"], cfg["pe_batches"]):
        model = models.mlp(widths, bias=True, generator=gen).to(device)
        d = count_parameters(model)
        assert d == sum(a * b + b for a, b in zip(widths[:-1], widths[1:])) and batch >= 2
        x = torch.rand(2, widths[0], generator=gen).to(device)
        y = torch.randint(0, widths[-1], (2,), generator=gen).to(device)
        G = gradients.per_example_grads(model, ce, x, y)
        assert G.shape == (2, d) and torch.isfinite(G).all()
    # minibatch moments of the DFNN (d ≈ 1.9 M): one pass with n_s = 2 minibatches of the configured size
    widths = cfg["moments_width"]
    model = models.mlp(widths, generator=gen).to(device)
    d = count_parameters(model)
    assert 1_900_000 < d < 1_920_000 and cfg["moments_m"] <= cfg["moments_n"]
    n = 2 * cfg["moments_m"]
    xm = torch.rand(n, widths[0], generator=gen).to(device)
    ym = torch.randint(0, widths[-1], (n,), generator=gen).to(device)
    mom = gradients.minibatch_moments(model, ce, xm, ym, cfg["moments_m"], 2, torch.Generator().manual_seed(0))
    assert mom.d == d and mom.n_s == 2 and math.isfinite(mom.kappa_hat)
    # curvature: the two Lanczos problems (p ≈ 1,000 and p ≈ 100,000), one product each, and one Hutchinson probe
    for widths, (lo, hi) in ((cfg["lanczos_small"], (500, 2_000)), (cfg["lanczos_large"], (50_000, 200_000))):
        g = torch.Generator().manual_seed(len(widths))
        model = models.mlp(widths, bias=True, generator=g).double().to(device)
        x = torch.randn(cfg["points"], widths[0], generator=g, dtype=torch.float64).to(device)
        y = torch.randint(0, widths[-1], (cfg["points"],), generator=g).to(device)
        hvp = curvature.HVP.from_model(model, ce, x, y)
        assert lo < hvp.p < hi
        v = torch.randn(hvp.p, generator=g, dtype=torch.float64).to(device)
        assert torch.isfinite(hvp(v)).all()
        tr = curvature.hutchinson_trace(hvp, hvp.p, 2, torch.Generator().manual_seed(0))
        assert tr.n_products == 2 and math.isfinite(tr.value)
    assert cfg["trace_probes"] >= 2
    # the Gauss-10 ensemble: all configured runs, one SGD step
    make = lambda g: models.mlp([50, 10, 30, 10], bias=True, generator=g, flatten=False)  # noqa: E731
    base, two, _ = ensemble.stacked_init(make, 2, torch.Generator().manual_seed(0))
    assert sum(v[0].numel() for v in two.values()) == 1150  # the Hessian paper's Gauss-10 count
    # all runs at once (stacked_init builds one module per run: seconds for 10,000 runs)
    params = ensemble.normal_init(base, cfg["ens_runs"], 0.1, torch.Generator().manual_seed(0))
    params = {k: v.to(device) for k, v in params.items()}
    assert all(params[k].shape[1:] == v.shape[1:] for k, v in two.items())
    xb = torch.randn(100, 50, generator=gen).to(device)
    yb = (torch.arange(100) % 10).to(device)
    res = ensemble.ensemble_sgd(base, params, xb, yb, ce, lr=0.1, batch_size=5, steps=1,
                                generator=torch.Generator(device=device).manual_seed(1))
    assert res.loss.shape == (1, cfg["ens_runs"]) and torch.isfinite(res.loss).all()
    assert cfg["ens_steps"] >= 1 and 1 <= cfg["ens_loop_runs"] <= cfg["ens_runs"]
    # vMF sampling at every dimension, the configured sample size
    for dim in cfg["vmf_dims"]:
        mu = torch.zeros(dim, dtype=torch.float64, device=device)
        mu[0] = 1
        s = directional.sample_vmf(mu, 50.0, cfg["vmf_n"], torch.Generator(device=device).manual_seed(0))
        assert s.shape == (cfg["vmf_n"], dim) and torch.isfinite(s).all()
    # the walk-with-sgd CNNs: parameter counts, per-example gradients of 2 images, one Hessian-vector
    # product and one Hutchinson probe, one stacked SGD step of 2 runs
    from sgdbook.papers.walk_with_sgd.walk import standin

    counts = {"cnn-nobn": 7274, "cnn": 7386, "resnet": 5094}
    assert cfg["cnn_pe_batch"] >= 2 and cfg["cnn_points"] >= 2 and cfg["cnn_topk"] >= 1 and cfg["cnn_ens_runs"] >= 2
    xc = torch.randn(2, 1, 8, 8, generator=gen).to(device)
    yc = torch.tensor([1, 2], device=device)
    for name, count in counts.items():
        net = standin(name, torch.Generator().manual_seed(0)).to(device).eval()
        assert count_parameters(net) == count
        G = gradients.per_example_grads(net, ce, xc, yc, bn_mode="eval")
        assert G.shape == (2, count) and torch.isfinite(G).all()
    net = standin("cnn-nobn", torch.Generator().manual_seed(0)).to(device)
    hvp_c = curvature.HVP.from_model(net, ce, xc, yc)
    assert torch.isfinite(hvp_c(torch.ones(hvp_c.p, device=device))).all()
    assert math.isfinite(curvature.hutchinson_trace(hvp_c, hvp_c.p, 1, torch.Generator().manual_seed(0)).value)
    nets = [standin("cnn", torch.Generator().manual_seed(r)).to(device) for r in range(2)]
    p_st, b_st = torch.func.stack_module_state(nets)
    base_c = copy.deepcopy(nets[0]).to("meta")
    step_c = torch.func.vmap(torch.func.grad(lambda p, b, xb, yb: ce(torch.func.functional_call(base_c, (p, b), (xb,)), yb)))
    g_st = step_c(p_st, b_st, xc.expand(2, *xc.shape).contiguous(), yc.expand(2, 2).contiguous())
    assert all(torch.isfinite(v).all() for v in g_st.values())
