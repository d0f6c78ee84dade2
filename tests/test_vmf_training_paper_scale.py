"""Keep the `paper` scale of the training-dynamics chapter from rotting without a GPU: build every
paper-scale setup with its data shape, take one SGD step and one minibatch-moments measurement
on small random tensors, on CPU."""

import math

import pytest
import torch
import torch.nn.functional as F

from sgdbook import directional as vd
from sgdbook.papers.vmf_directional.models import CNN_SETUPS, FIG7_SETUPS, MLP_SETUPS, build_model, input_shape
from sgdbook.papers.vmf_directional.settings.training_dynamics import SETTINGS as VMF_TRAINING
from sgdbook.gradients import minibatch_moments
from sgdbook.models import count_parameters
from sgdbook.papers.vmf_directional.models import VMF_PARAMETER_COUNTS
from sgdbook.training import log_epochs, sgd_train


@pytest.mark.parametrize("name", MLP_SETUPS + CNN_SETUPS)
def test_vmf_training_paper_scale_one_step(name):
    cfg = VMF_TRAINING("paper")
    gen = torch.Generator().manual_seed(0)
    model = build_model(name, cfg, gen)
    d = count_parameters(model)
    assert d == VMF_PARAMETER_COUNTS[name]  # the paper's printed parameter counts
    shape = input_shape(name, cfg)
    assert shape == ((3, 32, 32) if name.startswith("CNN") else (1, 28, 28))
    m = cfg["batch_size"]
    x = torch.rand(m, *shape, generator=gen)
    y = torch.randint(0, 10, (m,), generator=gen)
    before = [p.detach().clone() for p in model.parameters()]
    res = sgd_train(model, F.cross_entropy, x, y, lr=cfg["lr"], batch_size=m, epochs=1, generator=gen,
                    show_progress=False)
    assert res.steps == 1 and math.isfinite(res.epoch_loss[0])
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    u = torch.randn(d, generator=gen)
    mm = minibatch_moments(model, F.cross_entropy, x, y, 8, 3, gen, u=u / u.norm())
    assert mm.d == d and mm.n_s == 3
    assert math.isfinite(mm.kappa_hat) and math.isfinite(mm.snr) and math.isfinite(mm.norm_snr)
    assert mm.cosines is not None and torch.isfinite(mm.cosines).all()


def test_vmf_training_paper_scale_settings():
    cfg = VMF_TRAINING("paper")
    assert cfg["paper_models"] and cfg["batch_size"] == 64 and cfg["lr"] == 0.01
    assert cfg["n_s"] == cfg["cnn_n_s"] == 3000 and cfg["seeds"] == 5 and cfg["fig7_runs"] == 5
    assert set(FIG7_SETUPS) <= set(CNN_SETUPS)
    assert max(cfg["fig2a_batch_sizes"]) <= cfg["fig2a_n"]
    assert max(cfg["fig5_batch_sizes"]) <= cfg["n_train"]
    assert log_epochs(cfg["epochs"], cfg["measure_points"])[0] == 0
    # the κ = 0 baseline of the largest network at n_s = 3,000 (one simulation)
    b = vd.uniform_baseline(VMF_PARAMETER_COUNTS["DFNN+BN"], cfg["n_s"], 2, torch.Generator().manual_seed(0))
    assert 30_000 < b.value < 40_000


@pytest.mark.parametrize("scale", ["smoke", "book"])
def test_vmf_training_small_scales_build(scale):
    cfg = VMF_TRAINING(scale)
    gen = torch.Generator().manual_seed(0)
    for name in MLP_SETUPS + CNN_SETUPS:
        model = build_model(name, cfg, gen)
        x = torch.rand(4, *input_shape(name, cfg), generator=gen)
        with torch.no_grad():
            assert model.eval()(x).shape == (4, 10)
