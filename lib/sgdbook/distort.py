"""Elastic distortion of images (Simard, Steinkraus and Platt, 2003), batched in torch.

Every image gets its own random displacement field: two fields (rows, columns) of independent
U(−1, 1) values per pixel, each smoothed by a Gaussian of standard deviation ``sigma`` pixels
(kernel truncated at 4σ and renormalised, zero outside the image, as
``scipy.ndimage.gaussian_filter(mode="constant", truncate=4)``), then scaled by ``alpha``.
The image is resampled at the displaced positions by bilinear interpolation with zeros outside
the image (``scipy.ndimage.map_coordinates(order=1, mode="grid-constant")``), which is what
``torch.nn.functional.grid_sample(align_corners=True, padding_mode="zeros")`` computes. The
zero background assumes pixel values with 0 as background (e.g. MNIST in [0, 1]): distort
before any mapping to [−1, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, dtype=torch.float32, device=None) -> torch.Tensor:
    """The normalised 1-D Gaussian kernel scipy uses (radius ``int(truncate·σ + 0.5)``)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_smooth(fields: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian smoothing of ``fields [N, H, W]`` with zero padding."""
    if fields.ndim != 3:
        raise ValueError(f"expected fields of shape [N, H, W], got {tuple(fields.shape)}")
    k = gaussian_kernel1d(sigma, truncate, fields.dtype, fields.device)
    r = (k.numel() - 1) // 2
    out = F.conv2d(fields[:, None], k.view(1, 1, -1, 1), padding=(r, 0))  # along rows (H)
    out = F.conv2d(out, k.view(1, 1, 1, -1), padding=(0, r))  # along columns (W)
    return out[:, 0]


def displacement_fields(n: int, h: int, w: int, alpha: float, sigma: float, generator: torch.Generator,
                        dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Smoothed, scaled random displacements (rows ``dy``, columns ``dx``), each ``[n, h, w]``."""
    u = 2 * torch.rand(2, n, h, w, generator=generator, dtype=dtype, device=generator.device) - 1
    dy = alpha * gaussian_smooth(u[0], sigma)
    dx = alpha * gaussian_smooth(u[1], sigma)
    return dy, dx


def warp(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling: ``out[n, i, j] = images[n](i + dy[n, i, j], j + dx[n, i, j])`` (zeros outside)."""
    if images.ndim != 3:
        raise ValueError(f"expected images of shape [N, H, W], got {tuple(images.shape)}")
    if dy.shape != images.shape or dx.shape != images.shape:
        raise ValueError(f"displacements {tuple(dy.shape)}, {tuple(dx.shape)} must match images {tuple(images.shape)}")
    n, h, w = images.shape
    ii = torch.arange(h, dtype=images.dtype, device=images.device).view(1, h, 1)
    jj = torch.arange(w, dtype=images.dtype, device=images.device).view(1, 1, w)
    # align_corners=True: −1 and +1 are the centres of the first and last pixels
    gy = 2 * (ii + dy) / max(h - 1, 1) - 1
    gx = 2 * (jj + dx) / max(w - 1, 1) - 1
    grid = torch.stack([gx, gy], dim=-1)
    out = F.grid_sample(images[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[:, 0]


def elastic_distort(images: torch.Tensor, alpha: float, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Elastically distorted copies of ``images [N, H, W]`` (one random field per image).

    ``alpha`` scales the smoothed U(−1, 1) displacement field (in pixels), ``sigma`` is the
    Gaussian's standard deviation in pixels (Simard et al. 2003 use α = 34, σ = 4 on MNIST; the
    batch-size paper uses α = 8, σ = 2). ``alpha = 0`` returns the images unchanged.
    """
    if images.ndim != 3:
        raise ValueError(f"expected images of shape [N, H, W], got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError("images must be floating point")
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite non-negative number, got {alpha}")
    n, h, w = images.shape
    dy, dx = displacement_fields(n, h, w, alpha, sigma, generator, dtype=images.dtype)
    return warp(images, dy.to(images.device), dx.to(images.device))
