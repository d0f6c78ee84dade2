"""General architectures (sgdbook.models): seeded initialisation."""

import torch
from sgdbook import models
import pytest
import torchvision
from scipy import stats
from torch import nn
from sgdbook.data import label_noise
from sgdbook.models import count_parameters, mlp, preact_resnet, small_cnn, vgg


def test_initialisation_is_seeded_and_xavier():
    a = models.mlp([20, 30, 5], generator=torch.Generator().manual_seed(3))
    b = models.mlp([20, 30, 5], generator=torch.Generator().manual_seed(3))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    w = a[1].weight
    bound = (6 / (20 + 30)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound


# ---------------------------------------------------------------------- models_cnn

def test_vgg11_has_torchvisions_vgg11_bn_features_and_the_paper_head():
    model = vgg(generator=torch.Generator().manual_seed(0))
    tv = torchvision.models.vgg11_bn(weights=None).features
    ours = model[: len(tv)]
    assert [type(m) for m in ours] == [type(m) for m in tv]
    assert [p.shape for p in ours.parameters()] == [p.shape for p in tv.parameters()]
    head = [m for m in model[len(tv):] if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in head] == [(512, 512), (512, 512), (512, 10)]
    assert count_parameters(model) == 9_756_426
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_preact_resnet56_layout():
    model = preact_resnet(9, (16, 32, 64), in_channels=3, generator=torch.Generator().manual_seed(0))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    three = [m for m in convs if m.kernel_size == (3, 3)]
    assert len(three) == 1 + 2 * 27 and len(convs) - len(three) == 2  # 55 conv3×3 + the fc = 56; two 1×1 shortcuts
    assert count_parameters(model) == 855_578
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model.blocks[9].shortcut is not None and model.blocks[1].shortcut is None


def test_initialisation_comes_from_the_generator_only():
    state = torch.random.get_rng_state()
    a = small_cnn(bn=True, generator=torch.Generator().manual_seed(3))
    b = small_cnn(bn=True, generator=torch.Generator().manual_seed(3))
    r = preact_resnet(generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), state)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    bn = [m for m in r.modules() if isinstance(m, nn.BatchNorm2d)][0]
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    assert small_cnn((4, 8), (5,))(torch.randn(3, 1, 4, 4)).shape == (3, 10)
    assert count_parameters(mlp([784, 500, 350, 10], bias=True, bn=True)) == 573_060


def test_label_noise_flips_exactly_the_stated_fraction_to_other_classes():
    y = torch.arange(3000) % 10
    r = label_noise(y, 0.3, 10, torch.Generator().manual_seed(0))
    assert int(r.flipped.sum()) == 900 and r.fraction == pytest.approx(0.3)
    assert bool((r.y[r.flipped] != y[r.flipped]).all()) and torch.equal(r.y[~r.flipped], y[~r.flipped])
    assert torch.equal(y, torch.arange(3000) % 10)  # the input is not changed
    shift = (r.y[r.flipped] - y[r.flipped]) % 10  # uniform over 1..9
    counts = torch.bincount(shift, minlength=10)[1:].double()
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3
    with pytest.raises(ValueError, match="fraction"):
        label_noise(y, 1.5, 10, torch.Generator())
    with pytest.raises(ValueError, match="labels"):
        label_noise(y, 0.1, 5, torch.Generator())
