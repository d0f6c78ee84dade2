"""What every curvature estimator shares (sgdbook.curvature._common): seeded draws from an explicit
generator only, the same numbers for the same seed, draws moved to the operator's device."""

import pytest
import torch
from torch import nn

from cases import data, tiny_mlp
from sgdbook import curvature as cv


def test_same_seed_same_numbers(mlp_case):
    _, f, theta, _ = mlp_case
    p = theta.numel()
    op = cv.HVP(f, theta)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return (
            cv.lanczos(op, p, 4, generator=g).eigenvalues,
            cv.power_iteration(op, p, generator=g).eigenvalue,
            cv.hutchinson_trace(op, p, 10, g).value,
            cv.hutchinson_diag(op, p, 10, g).value,
            cv.spectral_density(op, p, 3, 5, g).density,
        )

    for a, b in zip(run(11), run(11)):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    assert run(12)[2] != run(11)[2]


def test_no_global_rng_is_used(mlp_case):
    _, f, theta, _ = mlp_case
    p = theta.numel()
    op = cv.HVP(f, theta)
    state = torch.get_rng_state()
    g = torch.Generator().manual_seed(0)
    cv.lanczos(op, p, 3)
    cv.power_iteration(op, p)
    cv.hutchinson_trace(op, p, 3, g)
    cv.hutchinson_diag(op, p, 3, g)
    cv.spectral_density(op, p, 2, 4, g)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.cuda
def test_curvature_on_cuda():
    model = tiny_mlp().cuda()
    x, y = data(48, (6,), 4, seed=1)
    op = cv.HVP.from_model(model, nn.functional.cross_entropy, x.cuda(), y.cuda())
    g = torch.Generator(device="cuda").manual_seed(0)
    r = cv.lanczos(op, op.p, 3, generator=g)
    assert r.eigenvalues.device.type == "cuda" and r.converged
    assert cv.hutchinson_diag(op, op.p, 8, g).value.device.type == "cuda"
    sd = cv.spectral_density(op, op.p, 4, 8, g)
    assert sd.density.device.type == "cuda"
    # a CPU generator still works: draws are moved to the operator's device
    assert cv.hutchinson_trace(op, op.p, 4, torch.Generator().manual_seed(0)).n_products == 4
