"""Hessian-vector products and the dense Hessian (sgdbook.curvature.hvp) against
torch.func.hessian and finite differences, in float64.

Peer pitfalls checked here: no doubling on a second construction (PyHessian's accumulated
``.grad``), no mode switch or running-statistics update (batch norm, both modes).
"""

import copy

import pytest
import torch
from torch import nn

from cases import bn_mlp, data, tiny_mlp
from reference import F64, assert_fd_agrees, dense_hessian, symmetric_with_spectrum
from sgdbook import curvature as cv
from sgdbook.functional import flat_loss


def test_full_hessian_agrees_with_torch_func_hessian(mlp_case):
    _, f, theta, H = mlp_case
    torch.testing.assert_close(H, torch.func.hessian(f)(theta))
    assert_fd_agrees(f, theta, H)


def test_full_hessian_of_a_quadratic():
    A = symmetric_with_spectrum([3.0, -1.0, 0.5, 2.0])
    b = torch.arange(4, dtype=F64)
    H = cv.full_hessian(lambda t: 0.5 * t @ A @ t + b @ t, torch.zeros(4, dtype=F64))
    torch.testing.assert_close(H, A)


def test_hvp_matches_dense_hessian(mlp_case):
    _, f, theta, H = mlp_case
    op = cv.HVP(f, theta, chunk=7)
    g = torch.Generator().manual_seed(3)
    V = torch.randn(20, theta.numel(), generator=g, dtype=F64)
    torch.testing.assert_close(op(V[0]), H @ V[0])
    torch.testing.assert_close(op.batch(V), V @ H)  # 3 chunks of 7, 7, 6
    torch.testing.assert_close(op.batch(V[:1]), V[:1] @ H)
    assert op.n_products == 1 + 20 + 1
    single = cv.HVP(f, theta, chunk=1)  # one product at a time (the CPU default at large p)
    torch.testing.assert_close(single.batch(V[:5]), V[:5] @ H)
    assert single.n_products == 5
    assert cv.HVP(f, theta).chunk == 32  # small p on the CPU: chunks of 32
    assert cv.HVP(lambda t: (t**4).sum(), torch.zeros(200_000, dtype=F64)).chunk == 1
    torch.testing.assert_close(H, H.mT)
    torch.testing.assert_close(op.loss, f(theta))
    torch.testing.assert_close(op.gradient, torch.func.grad(f)(theta))


def test_hvp_built_twice_is_the_same():
    # PyHessian's accumulated .grad doubles every eigenvalue on a second construction
    model = tiny_mlp()
    x, y = data(48, (6,), 4, seed=1)
    v = torch.randn(
        sum(p.numel() for p in model.parameters()),
        generator=torch.Generator().manual_seed(0),
        dtype=F64,
    )
    first = cv.HVP.from_model(model, nn.functional.cross_entropy, x, y)(v)
    second = cv.HVP.from_model(model, nn.functional.cross_entropy, x, y)(v)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert all(p.grad is None for p in model.parameters())


def test_hvp_of_an_affine_loss_is_zero():
    c = torch.arange(5, dtype=F64)
    op = cv.HVP(lambda t: c @ t, torch.zeros(5, dtype=F64))
    assert torch.equal(op(torch.ones(5, dtype=F64)), torch.zeros(5, dtype=F64))
    assert torch.equal(op.batch(torch.ones(3, 5, dtype=F64)), torch.zeros(3, 5, dtype=F64))


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_batch_norm_modes(bn_mode, untouched):
    model = bn_mlp()
    x, y = data(32, (5,), 3, seed=1)
    with torch.no_grad():  # give the running stats non-trivial values first
        model.train()
        model(x * 2 + 1)
    model.eval() if bn_mode == "train" else model.train()  # the caller's mode must not matter
    with untouched(model, what=f"flat_loss, HVP, lanczos, hutchinson_trace with bn_mode={bn_mode!r}"):
        _batch_norm_modes(model, x, y, bn_mode)


def _batch_norm_modes(model, x, y, bn_mode):
    f, theta = flat_loss(model, nn.functional.cross_entropy, x, y, bn_mode=bn_mode)
    reference = copy.deepcopy(model)
    reference.train(bn_mode == "train")
    with torch.no_grad():
        expected = nn.functional.cross_entropy(reference(x), y)
    torch.testing.assert_close(f(theta), expected)
    H = cv.full_hessian(f, theta)
    # finite differences referee: torch.func.hessian itself is wrong here in train mode
    assert_fd_agrees(f, theta, H)
    if bn_mode == "eval":
        torch.testing.assert_close(H, torch.func.hessian(f)(theta))
    op = cv.HVP(f, theta)
    V = torch.randn(5, theta.numel(), generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(op.batch(V), V @ H)
    torch.testing.assert_close(op(V[0]), H @ V[0])
    cv.lanczos(op, op.p, 2)
    cv.hutchinson_trace(op, op.p, 4, torch.Generator().manual_seed(0))


def test_dtype_and_device_follow_the_parameters():
    model = tiny_mlp().float()
    x, y = data(48, (6,), 4, seed=1)
    op = cv.HVP.from_model(model, nn.functional.cross_entropy, x.float(), y)
    assert op.dtype == torch.float32 and op.device.type == "cpu"
    r = cv.lanczos(op, op.p, 3)
    assert r.eigenvalues.dtype == torch.float32 and r.eigenvectors.dtype == torch.float32
    assert (
        cv.hutchinson_diag(op, op.p, 3, torch.Generator().manual_seed(0)).value.dtype
        == torch.float32
    )


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 7), nn.ReLU(), nn.Linear(7, 4)), (23, 6)),
        (lambda: nn.Sequential(nn.Flatten(), nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Identity(), nn.Linear(5, 4)), (23, 2, 3)),
        (lambda: nn.Sequential(nn.Linear(6, 4), nn.ReLU()), (23, 6)),  # a ReLU on the logits
    ],
)
def test_linear_net_hvp_equals_the_autograd_graph_and_the_dense_hessian(make, shape):
    torch.manual_seed(0)
    model = make().double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g, dtype=F64)
    y = torch.randint(0, 4, (shape[0],), generator=g)
    fast = cv.HVP.from_model(model, nn.functional.cross_entropy, x, y, chunk=3)
    slow = cv.HVP.from_model(model, nn.functional.cross_entropy, x, y, fast_path=False)
    assert isinstance(fast, cv.LinearNetHVP) and isinstance(slow, cv.HVP)
    f, theta = flat_loss(model, nn.functional.cross_entropy, x, y)
    H = cv.full_hessian(f, theta)
    torch.testing.assert_close(fast.theta, theta)
    torch.testing.assert_close(fast.loss, slow.loss, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(fast.gradient, slow.gradient, rtol=1e-12, atol=1e-14)
    V = torch.randn(7, theta.numel(), generator=g, dtype=F64)
    torch.testing.assert_close(fast(V[0]), H @ V[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fast.batch(V), V @ H, rtol=1e-10, atol=1e-12)  # chunks of 3, 3, 1
    torch.testing.assert_close(fast.batch(V), slow.batch(V), rtol=1e-10, atol=1e-12)
    assert fast.n_products == 1 + 7 + 7
    assert all(q.grad is None for q in model.parameters())


def test_linear_net_hvp_is_not_used_where_it_does_not_apply():
    x, y = torch.randn(5, 6, dtype=F64), torch.randint(0, 4, (5,))
    tanh = tiny_mlp()  # tanh has a second derivative
    assert isinstance(cv.HVP.from_model(tanh, nn.functional.cross_entropy, x, y), cv.HVP)
    relu = nn.Sequential(nn.Linear(6, 4)).double()
    assert isinstance(cv.HVP.from_model(relu, nn.functional.mse_loss, x, torch.randn(5, 4, dtype=F64)), cv.HVP)
    relu[0].bias.requires_grad_(False)
    assert isinstance(cv.HVP.from_model(relu, nn.functional.cross_entropy, x, y), cv.HVP)
    shared = nn.Linear(6, 6).double()
    twice = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(6, 4)).double()  # one layer used twice
    op = cv.HVP.from_model(twice, nn.functional.cross_entropy, x, y)
    assert isinstance(op, cv.HVP)
    f, theta = flat_loss(twice, nn.functional.cross_entropy, x, y)
    v = torch.randn(theta.numel(), dtype=F64)
    torch.testing.assert_close(op(v), cv.full_hessian(f, theta) @ v)


def test_hvp_equals_the_dense_hessian_on_every_case(case):
    # the twin implementations (the R-operator for ReLU nets, autograd otherwise) against
    # torch.func.hessian on each shared problem; batch norm with the running statistics
    model, (x, y) = case.model(), case.data()
    kw = {"bn_mode": "eval"} if case.bn else {}
    f, theta = flat_loss(model, nn.functional.cross_entropy, x, y, **kw)
    H = dense_hessian(f, theta)
    V = torch.randn(3, theta.numel(), generator=torch.Generator().manual_seed(0), dtype=F64)
    for fast_path in (True, False):
        op = cv.HVP.from_model(model, nn.functional.cross_entropy, x, y, fast_path=fast_path, **kw)
        torch.testing.assert_close(op.batch(V), V @ H, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(op(V[0]), H @ V[0], rtol=1e-9, atol=1e-11)


def test_bad_arguments(mlp_case):
    _, f, theta, _ = mlp_case
    with pytest.raises(ValueError, match="flat"):
        cv.HVP(f, theta[None])


def test_linear_net_hvp_refuses_shared_and_unused_parameters():
    x, y = torch.randn(5, 6, dtype=F64), torch.randint(0, 4, (5,))
    shared = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 4)).double()
    shared[2].weight = shared[0].weight
    spare = nn.Sequential(nn.Linear(6, 4)).double()
    spare.register_parameter("unused", nn.Parameter(torch.randn(3, dtype=F64)))
    for model in (shared, spare):
        assert not cv.LinearNetHVP.applies(model, nn.functional.cross_entropy, x, y)
        op = cv.HVP.from_model(model, nn.functional.cross_entropy, x, y)
        f, theta = flat_loss(model, nn.functional.cross_entropy, x, y)
        v = torch.randn(theta.numel(), dtype=F64)
        torch.testing.assert_close(op(v), cv.full_hessian(f, theta) @ v)
