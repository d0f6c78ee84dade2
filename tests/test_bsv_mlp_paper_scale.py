"""Keep the `paper` scale of the MNIST-MLP chapter from rotting without a GPU: build the paper's
784-1024-512-10 MLP, the 5 × 50 run stacking (for two runs per init), data of MNIST's shapes and
one epoch-indexed SGD step with the per-init gradient variance, on CPU."""

import math

import torch
from torch import nn

from sgdbook import distort, ensemble
from sgdbook.papers.batch_size_variance.mlp import PAPER_WIDTHS, make_model, to_inputs, widths
from sgdbook.papers.batch_size_variance.settings.mlp_classification import SETTINGS as BSV_MLP
from sgdbook.models import count_parameters


def test_bsv_mlp_paper_settings():
    cfg = BSV_MLP("paper")
    assert widths(cfg) == PAPER_WIDTHS == [784, 1024, 512, 10]
    assert cfg["batch_sizes"] == [64, 128] and cfg["lr"] == 3e-3 and cfg["epochs"] == 1000
    assert (cfg["lr_var"], cfg["epochs_var"]) == (cfg["lr"], cfg["epochs"])  # one set of runs, as in the paper
    assert cfg["inits"] == 5 and cfg["runs_per_init"] == 50
    assert cfg["n_train"] == 60_000 and cfg["n_val"] == 10_000
    assert (cfg["distort_alpha"], cfg["distort_sigma"]) == (8.0, 2.0)
    for scale in ("smoke", "book", "paper"):
        c = BSV_MLP(scale)
        assert c["epochs"] % c["eval_every"] == 0 and max(c["batch_sizes"]) <= c["n_train"]


def test_bsv_mlp_paper_scale_one_step():
    cfg = BSV_MLP("paper")
    gen = torch.Generator().manual_seed(0)
    make = make_model(cfg)
    model = make(gen)
    assert count_parameters(model) == 784 * 1024 + 1024 + 1024 * 512 + 512 + 512 * 10 + 10  # 1,333,770
    per = 2  # the configured 50 runs per init only set a batch dimension
    inits = cfg["inits"]
    base, p0, _ = ensemble.stacked_init(make, inits, gen)
    params = {k: v.repeat_interleave(per, dim=0) for k, v in p0.items()}
    assert params["0.weight"].shape == (inits * per, 1024, 784)
    n = 256  # random stand-in images of MNIST's shape
    images = torch.rand(n, 28, 28, generator=gen)
    x = to_inputs(images)
    assert x.shape == (n, 784) and x.min() >= -1 and x.max() <= 1
    y = torch.randint(0, 10, (n,), generator=gen)
    dist = distort.elastic_distort(images[:16], cfg["distort_alpha"], cfg["distort_sigma"], gen)
    assert dist.shape == (16, 28, 28) and torch.isfinite(dist).all()
    for b in cfg["batch_sizes"]:
        idx = ensemble.epoch_indices(n, inits * per, b, gen)[:1]  # one step
        assert idx.shape == (1, inits * per, b)
        res = ensemble.ensemble_sgd(base, params, x, y, nn.functional.cross_entropy, lr=cfg["lr"], batch_size=b,
                                    steps=1, generator=gen, indices=idx, group_size=per)
        assert res.grad_var.shape == (1, inits) and (res.grad_var > 0).all()
        assert math.isfinite(float(res.loss.sum()))
        loss, acc = ensemble.evaluate_runs(base, res.params, x[:64], y[:64], chunk=32)
        assert loss.shape == acc.shape == (inits * per,) and torch.isfinite(loss).all()
