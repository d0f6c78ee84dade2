"""The curvature tests' shared problem: a smooth net whose Hessian is indefinite, with its dense Hessian."""

import pytest
from torch import nn

from cases import data, tiny_mlp
from sgdbook import curvature as cv
from sgdbook.functional import flat_loss


@pytest.fixture(scope="session")
def mlp_case():
    """``(model, f, theta, H)``: tiny_mlp() (6 → 10 → 4, tanh) on 48 points, its flat loss and the dense Hessian."""
    model = tiny_mlp()
    x, y = data(48, (6,), 4, seed=1)
    f, theta = flat_loss(model, nn.functional.cross_entropy, x, y)
    H = cv.full_hessian(f, theta)
    return model, f, theta, H
