"""The peer libraries' pitfalls (DESIGN.md), each reproduced on this torch, beside the library's
own behaviour on the same input. Peers are test and benchmark dependencies only."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from sgdbook import curvature as cv
from sgdbook.functional import flat_loss
from sgdbook import gradients as gr

warnings.filterwarnings("ignore", category=FutureWarning)
pyhessian = pytest.importorskip("pyhessian")
backpack = pytest.importorskip("backpack")
curvlinops = pytest.importorskip("curvlinops")


class TwoParams(nn.Module):
    """Output (a·x, b·x): with a quadratic criterion its loss is any 2×2 quadratic form in (a, b)."""

    def __init__(self, a=0.3, b=-0.2):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([a], dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor([b], dtype=torch.float64))

    def forward(self, x):
        return torch.cat([self.a * x, self.b * x], dim=1)


def quadratic(H):
    H = torch.as_tensor(H, dtype=torch.float64)
    return lambda out, y: 0.5 * torch.einsum("ni,ij,nj->n", out, H, out).mean()


X1 = torch.ones(4, 1, dtype=torch.float64)
Y1 = torch.zeros(4)


def _mlp(seed=0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(12, 5, generator=g, dtype=torch.float64)
    return model, x, torch.arange(12) % 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="the pitfall is the CUDA default on a CPU machine")
def test_pyhessian_defaults_to_cuda_and_fails_on_cpu():
    model, x, y = _mlp()
    with pytest.raises((AssertionError, RuntimeError)):
        pyhessian.hessian(model, nn.functional.cross_entropy, data=(x, y))  # cuda=True by default
    hvp = cv.HVP.from_model(model, nn.functional.cross_entropy, x, y)  # ours: device from the parameters
    assert hvp(torch.ones(hvp.p, dtype=torch.float64)).device.type == "cpu"


def test_pyhessian_switches_to_eval_leaves_a_graph_in_grad_and_doubles_on_reconstruction():
    model, x, y = _mlp()
    f, theta = flat_loss(model, nn.functional.cross_entropy, x, y)
    dense = torch.linalg.eigvalsh(cv.full_hessian(f, theta))
    largest_magnitude = float(dense[dense.abs().argmax()])
    model.train()
    pyhessian.hessian(model, nn.functional.cross_entropy, data=(x, y), cuda=False)
    assert not model.training  # switched to eval mode
    assert all(p.grad is not None and p.grad.requires_grad for p in model.parameters())  # a graph in .grad
    h2 = pyhessian.hessian(model, nn.functional.cross_entropy, data=(x, y), cuda=False)  # same model again
    torch.manual_seed(0)
    assert h2.eigenvalues(top_n=1)[0][0] == pytest.approx(2 * largest_magnitude, rel=1e-2)  # doubled

    model2, x, y = _mlp()
    model2.train()
    p = sum(q.numel() for q in model2.parameters())
    ours = [cv.lanczos(cv.HVP.from_model(model2, nn.functional.cross_entropy, x, y), p, 1,
                       generator=torch.Generator().manual_seed(0)).eigenvalues[0] for _ in range(2)]
    assert model2.training and all(q.grad is None for q in model2.parameters())
    assert float(ours[0]) == float(ours[1]) == pytest.approx(float(dense[-1]), rel=1e-8)


def test_pyhessian_power_iteration_returns_the_largest_magnitude():
    H = [[-10.0, 0.0], [0.0, 2.0]]
    h = pyhessian.hessian(TwoParams(), quadratic(H), data=(X1, Y1), cuda=False)
    torch.manual_seed(0)
    theirs = h.eigenvalues(top_n=1)[0][0]
    assert theirs == pytest.approx(-10.0, rel=1e-3)  # largest magnitude, not largest algebraic
    ours = cv.power_iteration(cv.MatrixHVP(torch.tensor(H, dtype=torch.float64)), 2, generator=torch.Generator().manual_seed(0))
    assert ours.eigenvalue == pytest.approx(2.0, rel=1e-6)


def test_pyhessian_trace_stops_after_a_few_probes():
    H = [[1.0, 5.0], [5.0, 1.0]]  # trace 2, while vᵀHv is 12 or −8
    used, estimates = [], []
    for seed in range(20):
        h = pyhessian.hessian(TwoParams(), quadratic(H), data=(X1, Y1), cuda=False)
        torch.manual_seed(seed)
        vhv = h.trace(maxIter=100, tol=1e-3)
        used.append(len(vhv))
        estimates.append(np.mean(vhv))
    assert np.median(used) <= 3  # maxIter was 100
    assert max(abs(e - 2.0) for e in estimates) >= 5.0
    est = cv.hutchinson_trace(cv.MatrixHVP(torch.tensor(H, dtype=torch.float64)), 2, 100, torch.Generator().manual_seed(0))
    assert est.n_probes == 100 and abs(est.value - 2.0) < 4.5 * est.se


def test_pyhessian_density_does_not_run_on_current_torch():
    model, x, y = _mlp()
    h = pyhessian.hessian(model, nn.functional.cross_entropy, data=(x, y), cuda=False)
    with pytest.raises(Exception):
        h.density(iter=5, n_v=1)
    hvp = cv.HVP.from_model(model, nn.functional.cross_entropy, x, y)
    dens = cv.spectral_density(hvp, hvp.p, 2, 5, torch.Generator().manual_seed(0))
    assert torch.isfinite(dens.density).all()


def test_backpack_extend_breaks_torch_func_and_batchgrad_carries_one_over_n():
    from backpack import backpack as bp_context
    from backpack import extend
    from backpack.extensions import BatchGrad

    model, x, y = _mlp()
    ours = gr.per_example_grads(model, nn.functional.cross_entropy, x, y)  # before extend: plain model
    ext = extend(model)
    params = {k: v.detach() for k, v in ext.named_parameters()}
    f = lambda p: nn.functional.cross_entropy(torch.func.functional_call(ext, p, (x,)), y)
    with pytest.raises(RuntimeError, match="setup_context"):
        torch.func.grad(f)(params)
    loss = extend(nn.CrossEntropyLoss())(ext(x), y)
    with bp_context(BatchGrad()):
        loss.backward()
    theirs = torch.cat([p.grad_batch.reshape(x.shape[0], -1) for p in ext.parameters()], dim=1)
    torch.testing.assert_close(theirs * x.shape[0], ours)  # BackPACK's per-example gradients are ours / N


def test_curvlinops_refuses_as_many_probes_as_dimensions():
    from curvlinops import hutchinson_trace as their_trace

    A = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
    with pytest.raises(ValueError):
        their_trace(A, num_matvecs=5)
    ours = cv.hutchinson_trace(cv.MatrixHVP(A), 5, 5, torch.Generator().manual_seed(0))
    assert ours.n_probes == 5 and ours.value == pytest.approx(15.0)  # diagonal: every probe is exact
