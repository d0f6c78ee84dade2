"""Stochastic estimates from operator products: Hutchinson's trace and diagonal, and the
spectral density by stochastic Lanczos quadrature."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._common import Operator, _apply_block, _rademacher, _space


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson trace: mean of ``zᵀHz`` over Rademacher ``z``, its standard error and sd."""

    value: float
    se: float
    sd: float
    n_probes: int
    n_products: int


@dataclass(frozen=True)
class DiagEstimate:
    """Hutchinson diagonal: mean of ``z ⊙ Hz`` per coordinate and its standard error."""

    value: torch.Tensor
    se: torch.Tensor
    n_probes: int
    n_products: int


@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic Lanczos quadrature of the eigenvalue density of ``H`` (mass 1 in total).

    ``density`` on ``grid`` is the Gaussian-smoothed (``sigma``) quadrature averaged over probes,
    ``density_se`` its pointwise standard error across probes; ``nodes`` and ``weights``
    (``[n_probes, n_steps]``, each row's weights summing to 1) are the Gauss quadrature of each
    probe's spectral measure ``vᵀ δ(H − λ) v``, with ``v`` a unit Rademacher vector.
    """

    grid: torch.Tensor
    density: torch.Tensor
    density_se: torch.Tensor
    nodes: torch.Tensor
    weights: torch.Tensor
    sigma: float
    n_products: int



# ----------------------------------------------------------------------------- Hutchinson


def _chan_update(count, mean, m2, block):
    """Merge a block of samples (rows) into running (count, mean, M2) — Chan et al.'s formula."""
    nb = block.shape[0]
    mb = block.mean(0)
    m2b = ((block - mb) ** 2).sum(0)
    total = count + nb
    delta = mb - mean
    mean = mean + delta * (nb / total)
    m2 = m2 + m2b + delta**2 * (count * nb / total)
    return total, mean, m2


def hutchinson_trace(
    hvp: Operator,
    p: int,
    n_probes: int,
    generator: torch.Generator,
    *,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> TraceEstimate:
    """``tr H`` by Hutchinson's estimator with ``n_probes`` Rademacher probes (all of them used).

    Unbiased; its variance per probe is ``2(‖H‖_F² − Σ H_ii²)``. ``se`` is the sample sd over
    probes divided by ``√n_probes`` (NaN for one probe). There is no early stop on a tolerance
    (PyHessian stops after as few as two probes); any ``n_probes ≥ 1`` is allowed, also more than
    ``p``. Probes are drawn and go through ``hvp.batch`` in blocks of ``batch_size`` (default:
    the operator's ``chunk``, else 64), and only ``zᵀHz`` is kept of each, so memory is
    ``O(batch_size · p)``.

    Returns a :class:`TraceEstimate` (value, se, sd, probes, products). Cost: ``n_probes``
    products. Timings against curvlinops and PyHessian: the performance appendix.

    Example::

        est = hutchinson_trace(HVP.from_model(model, F.cross_entropy, x, y), p, 100, torch.Generator().manual_seed(0))
        est.value, est.se
    """
    if n_probes < 1:
        raise ValueError("need at least one probe")
    dtype, device = _space(hvp, p, dtype, device)
    batch_size = batch_size or getattr(hvp, "chunk", None) or 64
    samples = []
    done = 0
    while done < n_probes:
        b = min(batch_size, n_probes - done)
        Z = _rademacher((b, p), generator, dtype, device)
        samples.append((Z * _apply_block(hvp, Z)).sum(1))
        done += b
    s = torch.cat(samples)
    sd = float(s.std()) if n_probes > 1 else float("nan")
    return TraceEstimate(float(s.mean()), sd / math.sqrt(n_probes), sd, n_probes, n_probes)


def hutchinson_diag(
    hvp: Operator,
    p: int,
    n_probes: int,
    generator: torch.Generator,
    *,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> DiagEstimate:
    """``diag H`` by the mean of ``z ⊙ Hz`` over ``n_probes`` Rademacher probes.

    Unbiased; coordinate ``i`` has per-probe variance ``Σ_{j≠i} H_ij²``; ``se`` is the sample sd
    per coordinate over ``√n_probes`` (NaN for one probe). Running moments are merged block by
    block (Chan et al.), so memory is ``O(batch_size · p)`` whatever ``n_probes``; the default
    block is the operator's ``chunk`` (else 64), as in :func:`hutchinson_trace`.
    """
    if n_probes < 1:
        raise ValueError("need at least one probe")
    dtype, device = _space(hvp, p, dtype, device)
    batch_size = batch_size or getattr(hvp, "chunk", None) or 64
    mean = torch.zeros(p, dtype=dtype, device=device)
    m2 = torch.zeros(p, dtype=dtype, device=device)
    count = 0
    while count < n_probes:
        b = min(batch_size, n_probes - count)
        Z = _rademacher((b, p), generator, dtype, device)
        count, mean, m2 = _chan_update(count, mean, m2, Z * _apply_block(hvp, Z))
    se = (
        (m2 / (n_probes - 1) / n_probes).sqrt()
        if n_probes > 1
        else torch.full_like(mean, float("nan"))
    )
    return DiagEstimate(mean, se, n_probes, n_probes)


# ----------------------------------------------------------------------------- spectral density


def _lanczos_tridiag(hvp, V0: torch.Tensor, n_steps: int, reorthogonalize: bool):
    """Independent Lanczos runs from the unit rows of ``V0`` in lockstep: tridiagonals ``[b, m, m]``.

    One batched product per step for all probes. A run that meets an invariant subspace gets a
    zero coupling from then on, so its later (meaningless) steps carry no quadrature weight.
    """
    b, p = V0.shape
    dtype = V0.dtype
    eps = torch.finfo(dtype).eps
    basis = V0.new_zeros(b, n_steps, p) if reorthogonalize else None
    alpha = V0.new_zeros(b, n_steps)
    beta = V0.new_zeros(b, n_steps)
    anorm = V0.new_zeros(b)
    alive = torch.ones(b, dtype=torch.bool, device=V0.device)
    v, v_prev, b_prev = V0, torch.zeros_like(V0), V0.new_zeros(b)
    for j in range(n_steps):
        if basis is not None:
            basis[:, j] = v
        w = _apply_block(hvp, v)
        anorm = torch.maximum(anorm, w.norm(dim=1))
        a = (w * v).sum(1)
        w = w - a[:, None] * v - b_prev[:, None] * v_prev
        if basis is not None:  # full reorthogonalization, twice
            for _ in range(2):
                c = torch.einsum("bjp,bp->bj", basis[:, : j + 1], w)
                w = w - torch.einsum("bjp,bj->bp", basis[:, : j + 1], c)
                a = a + c[:, j]
        alpha[:, j] = a
        bn = w.norm(dim=1)
        alive = alive & (bn > eps ** (2 / 3) * anorm)
        bn = torch.where(alive, bn, torch.zeros_like(bn))
        beta[:, j] = bn
        # a finished run continues with zero vectors: zero blocks of T, zero weight
        v_prev, v = (
            v,
            torch.where(alive[:, None], w / bn.clamp_min(torch.finfo(dtype).tiny)[:, None], 0),
        )
        b_prev = bn
    T = (
        torch.diag_embed(alpha)
        + torch.diag_embed(beta[:, :-1], 1)
        + torch.diag_embed(beta[:, :-1], -1)
    )
    return T


def spectral_density(
    hvp: Operator,
    p: int,
    n_probes: int,
    n_steps: int,
    generator: torch.Generator,
    grid: torch.Tensor | int | None = None,
    sigma: float | None = None,
    *,
    batch_size: int = 16,
    reorthogonalize: bool = True,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> SpectralDensity:
    """Eigenvalue density of ``H`` by stochastic Lanczos quadrature (Golub & Meurant; Ghorbani et al. 2019).

    For each unit Rademacher probe ``v``, ``n_steps`` Lanczos steps give the Gauss quadrature
    ``(nodes θ_i, weights τ_i = (Y_{0i})²)`` of the measure ``Σ_λ (vᵀu_λ)² δ_λ``, exact for
    polynomials of degree ``< 2·n_steps``; its mean over probes estimates ``(1/p) Σ_λ δ_λ``. The
    density is ``mean_probes Σ_i τ_i N(x; θ_i, sigma²)`` on ``grid`` (a tensor, or a number of
    points spanning the nodes ± 5 sigma; default 1000). Default ``sigma`` is 1 % of the nodes'
    range. The smoothed density integrates to 1 and has mean ``Σ τθ`` (whose expectation is
    ``tr H / p``) and second moment ``Σ τθ² + sigma²`` (expectation ``tr H² / p + sigma²``).

    Probes run in lockstep, ``batch_size`` at a time, one batched product per step; with
    ``reorthogonalize`` (default) each keeps its whole basis (``batch_size · n_steps · p``
    numbers) for full reorthogonalization. ``n_steps`` is capped at ``p``.
    """
    if n_probes < 1 or n_steps < 1:
        raise ValueError("need n_probes >= 1 and n_steps >= 1")
    dtype, device = _space(hvp, p, dtype, device)
    n_steps = min(n_steps, p)
    nodes, weights = [], []
    done = 0
    while done < n_probes:
        b = min(batch_size, n_probes - done)
        V0 = _rademacher((b, p), generator, dtype, device) / math.sqrt(p)
        theta, Y = torch.linalg.eigh(_lanczos_tridiag(hvp, V0, n_steps, reorthogonalize))
        nodes.append(theta)
        weights.append(Y[:, 0, :] ** 2)
        done += b
    nodes = torch.cat(nodes)
    weights = torch.cat(weights)
    if sigma is None:
        span = float(nodes.max() - nodes.min())
        sigma = 0.01 * span if span > 0 else 1e-3 * max(1.0, float(nodes.abs().max()))
    sigma = float(sigma)
    if grid is None or isinstance(grid, int):
        lo = float(nodes.min()) - 5 * sigma
        hi = float(nodes.max()) + 5 * sigma
        grid = torch.linspace(lo, hi, 1000 if grid is None else grid, dtype=dtype, device=device)
    grid = grid.to(device, dtype)
    kernel = torch.exp(-0.5 * ((grid[None, None, :] - nodes[:, :, None]) / sigma) ** 2)
    per_probe = (weights[:, :, None] * kernel).sum(1) / (sigma * math.sqrt(2 * math.pi))
    density = per_probe.mean(0)
    if n_probes > 1:
        se = per_probe.std(0) / math.sqrt(n_probes)
    else:
        se = torch.full_like(density, float("nan"))
    return SpectralDensity(grid, density, se, nodes, weights, sigma, n_probes * n_steps)


