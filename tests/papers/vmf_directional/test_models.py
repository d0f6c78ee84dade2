"""The vmf paper's architectures (sgdbook.papers.vmf_directional.models): its printed parameter
counts, shapes, bias-free layers, the residual shortcut."""

import pytest
import torch
from torch import nn

from sgdbook import models
from sgdbook.papers.vmf_directional import models as vmf_models


@pytest.mark.parametrize("name,count", sorted(vmf_models.VMF_PARAMETER_COUNTS.items()))
def test_vmf_models_have_the_papers_parameter_counts(name, count):
    model = vmf_models.vmf_model(name, torch.Generator().manual_seed(0))
    assert models.count_parameters(model) == count
    x = torch.rand(2, 1, 28, 28) if "FNN" in name else torch.rand(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    assert all(getattr(m, "bias", None) is None for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))


def test_residual_shortcut_pads_and_subsamples():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    like = torch.zeros(2, 5, 2, 2)
    s = vmf_models._shortcut(x, like)
    assert s.shape == like.shape
    assert torch.equal(s[:, :3], x[:, :, ::2, ::2]) and (s[:, 3:] == 0).all()


@pytest.mark.parametrize("scale", ["smoke", "book"])
def test_every_setup_builds_at_the_small_scales(scale):
    # the paper scale is built by the dry runs (tests/test_paper_scale.py); the smaller ones here
    from sgdbook.papers.vmf_directional.settings.training_cnn import SETTINGS as CNN
    from sgdbook.papers.vmf_directional.settings.training_mlp import SETTINGS as MLP

    gen = torch.Generator().manual_seed(0)
    for names, table in ((vmf_models.MLP_SETUPS, MLP), (vmf_models.CNN_SETUPS, CNN)):
        cfg = table(scale)
        for name in names:
            model = vmf_models.build_model(name, cfg, gen)
            x = torch.rand(4, *vmf_models.input_shape(name, cfg), generator=gen)
            with torch.no_grad():
                assert model.eval()(x).shape == (4, 10), name
