import copy

import pytest
import torch
from torch import nn

from sgdbook import landscape, models
from sgdbook.functional import flat_parameters, unflatten

F64 = torch.float64


class Scalar(nn.Module):
    """A one-parameter 'network' whose output is its parameter: the loss is a function of w."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([w], dtype=F64))

    def forward(self, x):
        return self.w.expand(x.shape[0], 1)


def _run(model, loss_fn, a, b, **kw):
    x = torch.zeros(4, 1, dtype=F64)
    y = torch.zeros(4, dtype=F64)
    return landscape.segment_profile(model, loss_fn, x, y, torch.tensor([a], dtype=F64), torch.tensor([b], dtype=F64), **kw)


def test_bouncing_in_a_quadratic_matches_the_closed_form():
    lam, w = 2.0, 1.5
    quad = lambda out, y: 0.5 * lam * (out[:, 0] ** 2).mean()
    prof = _run(Scalar(0.0), quad, w, -w, n_alpha=11)  # GD with η = 2/λ bounces from w to −w
    assert prof.interior_minimum and not prof.barrier
    assert prof.floor_alpha == pytest.approx(0.5) and prof.floor_loss == pytest.approx(0.0, abs=1e-15)
    assert prof.height == pytest.approx(0.5 * lam * w**2)  # = L(θ_t)
    assert prof.noise == 0.0


def test_a_double_well_jump_is_a_barrier_and_a_convex_step_is_not():
    well = lambda out, y: ((out[:, 0] ** 2 - 1) ** 2).mean()
    jump = _run(Scalar(0.0), well, -1.2, 1.1, n_alpha=21)
    assert jump.barrier and jump.barrier_excess > 0.5
    down = _run(Scalar(0.0), well, 1.5, 1.2)
    assert not down.barrier and not down.interior_minimum and down.barrier_excess < 0


def test_segment_losses_match_a_loop_over_alpha_with_batch_norm():
    g = torch.Generator().manual_seed(0)
    model = models.mlp([5, 7, 3], bn=True, bias=True, generator=g).double()
    x, y = torch.randn(30, 5, generator=g, dtype=F64), torch.arange(30) % 3
    model.train()
    with torch.no_grad():  # give the running statistics something to hold
        model(x)
    state = copy.deepcopy(model.state_dict())
    a = flat_parameters(model)
    b = a + 0.3 * torch.randn(a.shape, generator=g, dtype=F64)
    alphas = torch.linspace(0, 1, 5, dtype=F64)
    thetas = a[None] + alphas[:, None] * (b - a)[None]
    for mode in ("eval", "train"):
        ours = landscape.segment_losses(model, nn.functional.cross_entropy, x, y, thetas, bn_mode=mode, chunk=2)
        for k in range(5):
            ref = copy.deepcopy(model)
            with torch.no_grad():
                for name, t in unflatten(model, thetas[k]).items():
                    ref.get_parameter(name).copy_(t)
            ref.train(mode == "train")
            with torch.no_grad():
                want = nn.functional.cross_entropy(ref(x), y)
            torch.testing.assert_close(ours[k], want, rtol=1e-12, atol=1e-12)
    for k, v in model.state_dict().items():  # nothing of the model changed
        assert torch.equal(v, state[k])
    assert model.training


def test_noise_from_reshuffled_batch_statistics_is_measured_and_suppresses_fake_barriers():
    g = torch.Generator().manual_seed(1)
    model = models.mlp([4, 6, 2], bn=True, generator=g).double()
    x, y = torch.randn(40, 4, generator=g, dtype=F64), torch.arange(40) % 2
    a = flat_parameters(model)
    b = a + 1e-6 * torch.randn(a.shape, generator=g, dtype=F64)  # a tiny step: any "barrier" is noise
    noisy = landscape.segment_profile(model, nn.functional.cross_entropy, x, y, a, b, bn_mode="train",
                                      eval_batch=10, generator=torch.Generator().manual_seed(2))
    assert noisy.noise > 1e-4
    assert not noisy.barrier
    exact = landscape.segment_profile(model, nn.functional.cross_entropy, x, y, a, b, bn_mode="train")
    assert exact.noise == 0.0
    with pytest.raises(ValueError, match="generator"):
        landscape.segment_losses(model, nn.functional.cross_entropy, x, y, a[None], bn_mode="train", eval_batch=10)
