"""Model plumbing (sgdbook.functional): the flat loss, flat parameters and their views, batch-norm
modes, buffers."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from cases import bn_mlp, data, tanh_net, tiny_mlp
from sgdbook import curvature as cv
from sgdbook import functional as fn
from sgdbook.functional import flat_loss
import torch.nn.functional as F
from sgdbook import gradients, models
from sgdbook.functional import functional_view


def test_flat_loss_is_the_loss_and_leaves_the_model_alone(untouched):
    model = tiny_mlp()
    model.train()
    x, y = data(48, (6,), 4, seed=1)
    w0 = model.state_dict()["0.weight"].clone()
    with untouched(model, what="flat_loss, HVP and full_hessian"):
        f, theta = flat_loss(model, nn.functional.cross_entropy, x, y)
        assert theta.shape == (sum(p.numel() for p in model.parameters()),) and not theta.requires_grad
        torch.testing.assert_close(f(theta), nn.functional.cross_entropy(model(x), y))
        op = cv.HVP(f, theta)
        op(torch.ones_like(theta))
        cv.full_hessian(f, theta)
    # theta is a copy: changing it changes neither the model nor an operator built from it
    theta.add_(1.0)
    torch.testing.assert_close(model.state_dict()["0.weight"], w0, rtol=0, atol=0)
    assert not torch.equal(op.theta, theta)


def test_batch_norm_mode_must_be_stated():
    model = bn_mlp()
    x, y = data(8, (5,), 3, seed=1)
    with pytest.raises(ValueError, match="bn_mode"):
        flat_loss(model, nn.functional.cross_entropy, x, y)
    with pytest.raises(ValueError, match="bn_mode"):
        flat_loss(model, nn.functional.cross_entropy, x, y, bn_mode="training")


def test_flat_parameters_and_unflatten_are_inverse_views():
    model = tanh_net()
    model[0].bias.requires_grad_(False)  # frozen parameters are not in the flat layout
    theta = fn.flat_parameters(model)
    assert theta.shape == (20 + 12 + 3,) and not theta.requires_grad
    views = fn.unflatten(model, theta)
    assert list(views) == ["0.weight", "2.weight", "2.bias"]
    for k, p in model.named_parameters():
        if k in views:
            torch.testing.assert_close(views[k], p.detach(), rtol=0, atol=0)


def test_fresh_buffer_large_and_small():
    for rows, cols in [(3, 5), (64, 200_000)]:  # 51 MB: the huge-page branch on Linux
        buf = fn.fresh_buffer(rows, cols, torch.float32, "cpu")
        assert buf.shape == (rows, cols) and buf.dtype == torch.float32 and buf.is_contiguous()
        buf.fill_(2.0)
        assert float(buf.sum()) == 2.0 * rows * cols


# ---------------------------------------------------------------------- functional_bn_eval
# functional_view with bn_mode="eval" on a model whose batch norm is already in eval mode uses the

def test_eval_mode_batch_norm_needs_no_copy():
    g = torch.Generator().manual_seed(0)
    model = models.small_cnn((3, 4), (5,), bn=True, generator=g).double()
    x = torch.randn(9, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (9,), generator=g)
    model.train()
    with torch.no_grad():
        model(x)  # running statistics away from their initial values
    stats = {k: b.clone() for k, b in model.named_buffers()}
    G_train_mode = gradients.per_example_grads(model, F.cross_entropy, x, y, bn_mode="eval")  # copy path
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    assert functional_view(model, "eval", per_example=True).module is model
    assert functional_view(model, "train").module is not model  # train mode still needs the copy
    G_eval_mode = gradients.per_example_grads(model, F.cross_entropy, x, y, bn_mode="eval")
    assert torch.equal(G_train_mode, G_eval_mode)
    assert not any(m.training for m in model.modules())
    assert all(torch.equal(b, stats[k]) for k, b in model.named_buffers())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_index_max_pool_is_max_pool_bit_for_bit(dtype):
    g = torch.Generator().manual_seed(3)
    pool = fn.NoIndexMaxPool2d(2, 2)
    for shape in [(5, 3, 8, 8), (4, 2, 7, 9), (6, 1, 2, 2), (2, 3, 14, 14)]:
        x = torch.relu(torch.randn(shape, generator=g, dtype=dtype))  # ties at 0, as after a ReLU
        x[0, 0, 0, 1] = float("nan")
        with torch.no_grad():
            got, want = pool(x), F.max_pool2d(x, 2)
            assert torch.equal(torch.isnan(got), torch.isnan(want))
            assert torch.equal(got.nan_to_num(-1.0), want.nan_to_num(-1.0))
            # under vmap too (window_losses' vmap path), over a stack of inputs
            stacked = torch.stack([x, 2 * x])
            v = torch.vmap(pool)(stacked)
            assert torch.equal(v.nan_to_num(-1.0), torch.stack([want, F.max_pool2d(2 * x, 2)]).nan_to_num(-1.0))
    # with gradients on: torch's own pooling and backward
    x = torch.randn(3, 2, 6, 6, generator=g, dtype=dtype, requires_grad=True)
    y = x.detach().clone().requires_grad_()
    pool(x).square().sum().backward()
    F.max_pool2d(y, 2).square().sum().backward()
    assert torch.equal(x.grad, y.grad)


def test_evaluation_copy_swaps_pools_only_and_leaves_the_model_alone(untouched):
    cnn = models.small_cnn((4, 8), (8,), bn=True, generator=torch.Generator().manual_seed(0))
    net = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), cnn)  # not 2×2 stride 2: kept
    x = torch.randn(10, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    net.eval()
    with untouched(net, what="evaluation_copy"):
        copy = fn.evaluation_copy(net)
        kinds = [type(m) for m in copy.modules()]
        assert kinds.count(fn.NoIndexMaxPool2d) == 2 and kinds.count(nn.MaxPool2d) == 1
        assert [type(m) for m in net.modules()].count(fn.NoIndexMaxPool2d) == 0
        assert all(p is q for p, q in zip(copy.parameters(), net.parameters()))  # shared, not copied
        with torch.no_grad():
            assert torch.equal(copy(x), net(x))
    mlp = tiny_mlp()
    assert fn.evaluation_copy(mlp) is mlp
