"""Keep the `paper` scale of the deep-linear SGD chapter from rotting without a GPU: build the
paper-scale networks (Figure 3's 64-256-128 and the depth-3 sketch) with the full batch-size
grid and schedule, and run one lockstep step on CPU with a few runs instead of 1,000."""

import pytest
import torch

from sgdbook.papers.batch_size_variance import deeplinear_sgd as dl
from sgdbook.papers.batch_size_variance.settings.deep_linear_sgd import SETTINGS as DEEP_SGD


@pytest.mark.parametrize("prefix", ["", "deep_"])
def test_bsv_deep_sgd_paper_scale_one_step(prefix):
    cfg = DEEP_SGD("paper")
    dims, bs = cfg[prefix + "dims"], cfg[prefix + "bs"]
    assert cfg[prefix + "runs"] == 1000 and cfg[prefix + "steps"] == 1000
    if not prefix:
        assert dims == [64, 256, 128] and cfg["lr_scale"] == 0.1  # App. A.1.2
    assert bs == [1, 2, 4, 8, 16, 32, 64, 128]
    dtype = getattr(torch, cfg["dtype"])
    gen = torch.Generator().manual_seed(0)
    w0 = dl.init_linear(dims, gen, dtype)
    teacher = dl.init_linear(dims, gen, dtype)
    alphas = dl.harmonic_schedule(cfg["lr_scale"], cfg[prefix + "steps"], dtype)
    assert alphas.shape == (1000,) and abs(float(alphas[0]) - 0.1) < 1e-7
    runs = 3  # the run count only sets a batch dimension
    res = dl.run_lockstep(w0, teacher, bs, runs, alphas[:1], gen)
    assert res.var_g.layer.shape == (2, len(bs), len(dims) - 1)
    assert [tuple(w.shape) for w in res.weights] == [(len(bs), runs, o, i) for i, o in zip(dims[:-1], dims[1:])]
    for tr in (res.var_g, res.var_grad, res.var_rb):
        assert torch.isfinite(tr.total).all() and (tr.total[1] > 0).all()
    bv = res.var_rb.total[0] * torch.tensor(bs, dtype=res.var_rb.total.dtype)
    assert float((bv / bv[0] - 1).abs().max()) < 1e-4  # t = 0: exactly ∝ 1/b
    assert all(t <= cfg[prefix + "steps"] for t in cfg["fit_ts" if not prefix else "deep_ts"])
