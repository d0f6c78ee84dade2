"""The written-out R-operator of plain convolutional networks (sgdbook.curvature.ConvNetHVP)
against the dense Hessian and the autograd double backward, in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdbook import curvature as cv
from sgdbook import models
from sgdbook.curvature import convnet
from sgdbook.functional import flat_loss

F64 = torch.float64


def _case(make, shape, classes, seed=0):
    torch.manual_seed(seed)
    model = make().double()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(*shape, generator=g, dtype=F64)
    y = torch.randint(0, classes, (shape[0],), generator=g)
    return model, x, y


CASES = {
    "small_cnn": (lambda: models.small_cnn((2, 3), (4,), generator=torch.Generator().manual_seed(3)), (11, 1, 4, 4), 10),
    # strides, padding, dilation, overlapping pools with padding, a conv without bias, nesting
    "irregular": (lambda: nn.Sequential(
        nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU()),
        nn.MaxPool2d(3, stride=2, padding=1), nn.Conv2d(3, 4, 2, dilation=2, bias=False), nn.Identity(),
        nn.Flatten(), nn.Linear(4, 5)), (9, 2, 11, 11), 5),
    # rectangular kernels and images, a pool with ceil_mode, a ReLU on the logits
    "rectangular": (lambda: nn.Sequential(
        nn.Conv2d(1, 2, (3, 2), padding=(1, 0)), nn.MaxPool2d(2, ceil_mode=True), nn.ReLU(),
        nn.Flatten(), nn.Linear(2 * 4 * 3, 3), nn.ReLU()), (8, 1, 7, 7), 3),
}


@pytest.mark.parametrize("name", list(CASES))
def test_convnet_hvp_equals_the_dense_hessian_and_the_autograd_graph(name):
    model, x, y = _case(*CASES[name])
    op = cv.HVP.from_model(model, F.cross_entropy, x, y, chunk=3)
    slow = cv.HVP.from_model(model, F.cross_entropy, x, y, fast_path=False)
    assert isinstance(op, cv.ConvNetHVP) and isinstance(slow, cv.HVP)
    f, theta = flat_loss(model, F.cross_entropy, x, y)
    H = cv.full_hessian(f, theta)
    assert H.abs().max() > 1e-3  # not a trivial case
    torch.testing.assert_close(op.theta, theta)
    torch.testing.assert_close(op.loss, slow.loss, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(op.gradient, slow.gradient, rtol=1e-12, atol=1e-14)
    V = torch.randn(7, theta.numel(), generator=torch.Generator().manual_seed(2), dtype=F64)
    torch.testing.assert_close(op(V[0]), H @ V[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.batch(V), V @ H, rtol=1e-10, atol=1e-12)  # blocks of 3, 3, 1
    torch.testing.assert_close(op.batch(V), slow.batch(V), rtol=1e-10, atol=1e-12)
    assert op.n_products == 1 + 7 + 7
    assert all(q.grad is None for q in model.parameters())


def test_ties_in_a_max_pool_go_where_autograd_sends_them():
    # a first convolution that sees only its bias: every pixel of a channel is equal, so every
    # window of the first max-pool is a tie (the directions still move the weights)
    model, x, y = _case(*CASES["small_cnn"])
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(0.5)
    op = cv.ConvNetHVP(model, x, y)
    f, theta = flat_loss(model, F.cross_entropy, x, y)
    ref = cv.HVP(f, theta)
    V = torch.randn(4, op.p, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(op.batch(V), ref.batch(V), rtol=1e-10, atol=1e-12)


def test_float32_and_the_default_block():
    model, x, y = _case(*CASES["small_cnn"])
    model, x = model.float(), x.float()
    op = cv.HVP.from_model(model, F.cross_entropy, x, y)
    assert isinstance(op, cv.ConvNetHVP) and op.dtype == torch.float32
    assert 1 <= op.chunk <= 32
    big = torch.randn(4000, 1, 4, 4)  # 4,000 × 2 channels × 16 pixels × 4 bytes = 512 KiB per direction
    op_big = cv.ConvNetHVP(model, big, torch.randint(0, 10, (4000,)))
    assert op_big.chunk == convnet.BLOCK_BYTES // (4000 * 2 * 16 * 4)
    r = cv.lanczos(op, op.p, 2)
    assert r.eigenvalues.dtype == torch.float32 and r.converged


@pytest.mark.parametrize("make, channels", [
    (lambda: models.small_cnn((2, 3), (4,), bn=True), 1),  # batch norm
    (lambda: nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 2 * 2, 3)), 2),
    (lambda: nn.Sequential(nn.Conv2d(2, 2, 3, padding="same"), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)), 2),
    (lambda: nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular"), nn.Flatten(), nn.Linear(32, 3)), 2),
    (lambda: nn.Sequential(nn.Conv2d(2, 2, 3), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(2, 3)), 2),
    (lambda: nn.Sequential(nn.Conv2d(2, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 3)), 2),
    (lambda: models.preact_resnet(1, (2, 2), in_channels=2, classes=3), 2),
])
def test_convnet_hvp_is_not_used_where_it_does_not_apply(make, channels):
    torch.manual_seed(0)
    model = make().double()
    x = torch.randn(6, channels, 4, 4, dtype=F64)
    y = torch.randint(0, 3, (6,))
    assert not cv.ConvNetHVP.applies(model, F.cross_entropy, x, y)
    op = cv.HVP.from_model(model, F.cross_entropy, x, y, bn_mode="eval")
    assert isinstance(op, cv.HVP) and op.batch_mode == "forward"


def test_other_losses_and_layers_used_twice_take_the_autograd_path():
    model, x, y = _case(*CASES["small_cnn"])
    assert not cv.ConvNetHVP.applies(model, F.mse_loss, x, torch.randn(11, 10, dtype=F64))
    assert not cv.ConvNetHVP.applies(model, F.cross_entropy, x, y.double())
    conv = nn.Conv2d(2, 2, 3, padding=1)
    twice = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), conv, nn.ReLU(), conv, nn.Flatten(), nn.Linear(32, 3)).double()
    assert not cv.ConvNetHVP.applies(twice, F.cross_entropy, x, y % 3)
    with pytest.raises(ValueError, match="ConvNetHVP needs"):
        cv.ConvNetHVP(twice, x, y % 3)


def _shared_weight_net():
    net = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1), nn.Flatten(), nn.Linear(32, 3))
    net[2].weight = net[0].weight  # one parameter, two layers: its gradient sums both uses
    return net


def _unused_parameter_net():
    net = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
    net.register_parameter("spare", nn.Parameter(torch.randn(4)))  # never touched by the forward pass
    return net


@pytest.mark.parametrize("make", [_shared_weight_net, _unused_parameter_net])
def test_shared_or_unused_parameters_take_the_autograd_path(make):
    torch.manual_seed(0)
    model = make().double()
    x, y = torch.randn(5, 2, 4, 4, dtype=F64), torch.randint(0, 3, (5,))
    assert not cv.ConvNetHVP.applies(model, F.cross_entropy, x, y)
    with pytest.raises(ValueError, match="own every parameter"):
        cv.ConvNetHVP(model, x, y)
    op = cv.HVP.from_model(model, F.cross_entropy, x, y)
    f, theta = flat_loss(model, F.cross_entropy, x, y)
    v = torch.randn(theta.numel(), dtype=F64)
    torch.testing.assert_close(op(v), cv.full_hessian(f, theta) @ v)


def test_the_operator_keeps_its_point_when_the_model_moves_on():
    model, x, y = _case(*CASES["small_cnn"])
    f, theta = flat_loss(model, F.cross_entropy, x, y)
    H = cv.full_hessian(f, theta)
    op = cv.ConvNetHVP(model, x, y)
    with torch.no_grad():  # an optimiser step after the operator was built
        for q in model.parameters():
            q.add_(0.1)
    v = torch.randn(op.p, generator=torch.Generator().manual_seed(3), dtype=F64)
    torch.testing.assert_close(op(v), H @ v, rtol=1e-10, atol=1e-12)


def test_a_pool_that_returns_indices_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, return_indices=True), nn.Flatten(), nn.Linear(2, 3)).double()
    assert not cv.ConvNetHVP.applies(model, F.cross_entropy, torch.randn(3, 1, 4, 4, dtype=F64), torch.tensor([0, 1, 2]))
