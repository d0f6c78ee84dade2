"""Principal angles (sgdbook.curvature.subspace) against scipy.linalg.subspace_angles."""

import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles

from reference import F64
from sgdbook import curvature as cv


def test_principal_angles_match_scipy():
    g = torch.Generator().manual_seed(7)
    A = torch.randn(30, 5, generator=g, dtype=F64)
    B = torch.randn(30, 3, generator=g, dtype=F64)
    near = A[:, :3] @ torch.randn(3, 3, generator=g, dtype=F64) + 1e-9 * B  # tiny angles
    for a, b in ((A, B), (B, A), (A, near), (A, A[:, [1, 0, 4]] * 3)):
        ours = cv.principal_angles(a, b).numpy()
        ref = np.sort(subspace_angles(a.numpy(), b.numpy()))
        assert np.allclose(ours, ref, rtol=1e-6, atol=1e-12)
        assert np.all(np.diff(ours) >= 0)
    assert cv.principal_angles(A, near).max() < 1e-7


def test_bad_arguments():
    with pytest.raises(ValueError, match="rows"):
        cv.principal_angles(torch.ones(3, 2), torch.ones(4, 2))
