"""HVP.batch by forward-over-reverse (batch_mode="forward", what from_model picks for convolutional
networks) equals the reverse-over-reverse products and the dense Hessian, batch norm in both modes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sgdbook import curvature, functional, models

F64 = torch.float64


@pytest.mark.parametrize("bn,bn_mode", [(False, None), (True, "train"), (True, "eval")])
def test_forward_batch_equals_reverse_and_dense(bn, bn_mode):
    g = torch.Generator().manual_seed(0)
    model = models.small_cnn((2, 3), (4,), bn=bn, generator=g).double()
    x = torch.randn(10, 1, 4, 4, generator=g, dtype=F64)
    y = torch.randint(0, 10, (10,), generator=g)
    if bn:
        model.train()
        with torch.no_grad():
            model(x)
        model.eval()
    # without batch norm from_model would take the written-out ConvNetHVP (tests of its own)
    op = curvature.HVP.from_model(model, F.cross_entropy, x, y, bn_mode=bn_mode, chunk=3, fast_path=bn)
    assert op.batch_mode == "forward"
    f, theta = functional.flat_loss(model, F.cross_entropy, x, y, bn_mode=bn_mode)
    rev = curvature.HVP(f, theta, chunk=3)
    assert rev.batch_mode == "reverse"
    V = torch.randn(7, op.p, generator=g, dtype=F64)
    H = curvature.full_hessian(f, theta)
    assert torch.allclose(op.batch(V), V @ H, atol=1e-12)
    assert torch.allclose(rev.batch(V), V @ H, atol=1e-12)
    assert op.n_products == 7


def test_batch_mode_checked_and_mlp_keeps_reverse():
    f, theta = lambda t: (t**3).sum(), torch.ones(3, dtype=F64)
    with pytest.raises(ValueError, match="batch_mode"):
        curvature.HVP(f, theta, batch_mode="sideways")
    op = curvature.HVP(f, theta, batch_mode="forward", chunk=2)
    assert torch.allclose(op.batch(torch.eye(3, dtype=F64)), 6 * torch.eye(3, dtype=F64))
    mlp = models.mlp([4, 3, 2], bias=True, bn=True, generator=torch.Generator().manual_seed(1)).double()
    x = torch.randn(6, 4, dtype=F64)
    assert curvature.HVP.from_model(mlp, F.cross_entropy, x, torch.tensor([0, 1] * 3), bn_mode="train").batch_mode == "reverse"


def test_forward_mode_builds_the_graph_only_when_asked():
    """A forward-mode operator builds no create_graph pass for its blocks (a Hutchinson estimate
    never needs one); a single product, ``loss`` or ``gradient`` builds it once, with the values of
    a reverse-mode operator. An affine f gives zero products either way."""
    calls = []

    def f(t):
        calls.append(1)
        return (t**3).sum() + t[0] * t[1]

    theta = torch.tensor([1.0, 2.0, -1.0], dtype=F64)
    H = torch.diag(6 * theta) + torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=F64)
    op = curvature.HVP(f, theta, batch_mode="forward", chunk=2)
    assert calls == []
    V = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert torch.allclose(op.batch(V), V @ H, atol=1e-12) and not op._built
    assert torch.allclose(op.gradient, 3 * theta**2 + torch.tensor([2.0, 1.0, 0.0], dtype=F64)) and op._built
    n = len(calls)
    assert torch.allclose(op(V[0]), H @ V[0]) and len(calls) == n  # the graph is reused
    assert float(op.loss) == float(f(theta))
    rev = curvature.HVP(f, theta)
    assert rev._built and torch.equal(rev.gradient, op.gradient)
    aff = curvature.HVP(lambda t: (t * torch.arange(3.0, dtype=F64)).sum(), theta, batch_mode="forward", chunk=2)
    assert torch.equal(aff.batch(V), torch.zeros_like(V)) and torch.equal(aff(V[0]), torch.zeros(3, dtype=F64))
