import numpy as np
import pytest
import torch
from scipy import ndimage

from sgdbook import distort


def _reference(images, u, alpha, sigma):
    """scipy brute force: gaussian_filter + map_coordinates, image by image, float64."""
    out = np.empty_like(images)
    n, h, w = images.shape
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    for k in range(n):
        dy = alpha * ndimage.gaussian_filter(u[0, k], sigma, mode="constant", cval=0.0, truncate=4.0)
        dx = alpha * ndimage.gaussian_filter(u[1, k], sigma, mode="constant", cval=0.0, truncate=4.0)
        out[k] = ndimage.map_coordinates(images[k], [ii + dy, jj + dx], order=1, mode="grid-constant", cval=0.0)
    return out


@pytest.mark.parametrize("alpha,sigma,shape", [(8.0, 2.0, (3, 12, 10)), (3.0, 1.0, (2, 9, 9)), (34.0, 4.0, (2, 28, 28))])
def test_elastic_distort_matches_scipy(alpha, sigma, shape):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(*shape, generator=g, dtype=torch.float64)
    seed = 7
    ours = distort.elastic_distort(images, alpha, sigma, torch.Generator().manual_seed(seed))
    u = (2 * torch.rand(2, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) - 1).numpy()
    ref = _reference(images.numpy(), u, alpha, sigma)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_gaussian_smooth_matches_scipy():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(2, 15, 11, generator=g, dtype=torch.float64)
    ours = distort.gaussian_smooth(f, 1.7)
    ref = np.stack([ndimage.gaussian_filter(a, 1.7, mode="constant", cval=0.0, truncate=4.0) for a in f.numpy()])
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12, atol=1e-14)


def test_alpha_zero_is_identity_and_seeded():
    g = torch.Generator().manual_seed(2)
    images = torch.rand(4, 28, 28, generator=g, dtype=torch.float64)
    same = distort.elastic_distort(images, 0.0, 2.0, torch.Generator().manual_seed(3))
    torch.testing.assert_close(same, images, rtol=1e-13, atol=1e-13)
    a = distort.elastic_distort(images, 8.0, 2.0, torch.Generator().manual_seed(3))
    b = distort.elastic_distort(images, 8.0, 2.0, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.allclose(a, images)


def test_bad_input_is_a_clear_error():
    g = torch.Generator()
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        distort.elastic_distort(torch.zeros(2, 1, 5, 5), 8.0, 2.0, g)
    with pytest.raises(ValueError, match="sigma"):
        distort.elastic_distort(torch.zeros(2, 5, 5), 8.0, 0.0, g)
    with pytest.raises(ValueError, match="alpha"):
        distort.elastic_distort(torch.zeros(2, 5, 5), -1.0, 2.0, g)
    with pytest.raises(ValueError, match="floating"):
        distort.elastic_distort(torch.zeros(2, 5, 5, dtype=torch.uint8), 8.0, 2.0, g)
