"""The residual operator H_p = M − H (sgdbook.curvature.residual) against the Hessian paper's
Proposition 1, from dense Hessians of the per-example probabilities."""

import torch
from torch import nn

from sgdbook.functional import flat_loss


def test_residual_operator_is_the_hessian_papers_h_p():
    # Proposition 1 of the Hessian paper, checked independently: M − H = (1/n) Σ ∇²p_i / p_i
    from sgdbook.curvature import HVP, ResidualOperator, full_hessian
    from sgdbook.functional import flat_parameters, unflatten
    from sgdbook.gradients import second_moment_operator

    g = torch.Generator().manual_seed(11)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x, y = torch.randn(9, 3, generator=g, dtype=torch.float64), torch.arange(9) % 3
    op = ResidualOperator(HVP.from_model(model, nn.functional.cross_entropy, x, y),
                          second_moment_operator(model, nn.functional.cross_entropy, x, y))
    theta = flat_parameters(model)
    p = theta.numel()
    eye = torch.eye(p, dtype=torch.float64)
    dense = op.batch(eye)

    def prob(th, i):
        out = torch.func.functional_call(model, unflatten(model, th), (x[i : i + 1],))
        return out.softmax(-1)[0, y[i]]

    want = sum(torch.func.hessian(lambda th: prob(th, i))(theta) / prob(theta, i) for i in range(9)) / 9
    torch.testing.assert_close(dense, want, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(op(eye[3]), dense[3], rtol=1e-12, atol=1e-12)
    from sgdbook.gradients import second_moment_matrix

    f, _ = flat_loss(model, nn.functional.cross_entropy, x, y)
    M = second_moment_matrix(model, nn.functional.cross_entropy, x, y)
    torch.testing.assert_close(M - full_hessian(f, theta), dense, rtol=1e-9, atol=1e-10)
    assert float(dense.norm()) > 0.1 * float(M.norm())  # away from a minimum H_p is far from negligible
