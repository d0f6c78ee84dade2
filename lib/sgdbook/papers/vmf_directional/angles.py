"""Exact results behind the theory chapters: all-minibatch moments and the law of random angles.

Minibatches. A minibatch of size ``m`` drawn uniformly without replacement from ``n`` examples
with per-example gradients ``g_i`` (rows of ``g``) has mean gradient ``ĝ = (1/m) Σ_{i∈I} g_i``.
With only ``C(n, m)`` equally likely index sets, every moment of ``ĝ`` is a finite average;
:func:`exact_minibatch_moments` computes it exactly by enumerating all of them as one batched index
tensor (:func:`sgdbook.gradients.all_minibatches`; ``torch.combinations`` builds an ``n^m`` grid
first and runs out of memory already at ``n = 16, m = 8``). The closed forms it is checked against:
``E ĝ = g`` and ``Cov ĝ = (n − m)/(m (n − 1)) · (1/n) Σ (g_i − g)(g_i − g)ᵀ``.

Angles. For independent uniform unit vectors ``u, v`` in ``R^d``, ``⟨u, v⟩ = 2 B − 1`` with
``B ~ Beta((d − 1)/2, (d − 1)/2)``; the angle ``θ = arccos⟨u, v⟩`` has density
``sin^{d−2} θ / B(1/2, (d − 1)/2)`` on ``[0, π]`` and, exactly, ``Var θ = ψ′(d/2) / 2``
(ψ′ the trigamma function; from the characteristic function of the ``cos^{d−2}`` law), which
is ``1/d + 1/d² + O(d⁻³)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import special, stats

from sgdbook.gradients import all_minibatches

DEG = 180.0 / math.pi

# ------------------------------------------------------------------------ minibatches


@dataclass(frozen=True)
class ExactMinibatchMoments:
    """Exact moments of the minibatch gradient ``ĝ`` over all ``count`` equally likely minibatches."""

    mean: torch.Tensor  # E ĝ, shape [d]
    cov: torch.Tensor  # Cov ĝ, shape [d, d]
    mean_norm: float  # E‖ĝ‖
    mean_sq_norm: float  # E‖ĝ‖²
    var_norm: float  # Var‖ĝ‖
    mean_direction_length: float  # ‖E[ĝ/‖ĝ‖]‖ (a zero ĝ counts as the zero vector)
    count: int

    @property
    def gns(self) -> float:
        """Gradient norm stochasticity ``√Var‖ĝ‖ / E‖ĝ‖`` (left side of the paper's Eq. 1)."""
        return math.sqrt(max(self.var_norm, 0.0)) / self.mean_norm


def exact_minibatch_moments(g: torch.Tensor, m: int, chunk: int = 65536) -> ExactMinibatchMoments:
    """Exact moments of ``ĝ = mean of m rows of g`` over all ``C(n, m)`` minibatches.

    ``g`` is ``[n, d]`` (use float64 for exact checks). Two passes over the minibatches (the
    second centred at the first's mean), each in chunks of ``chunk`` minibatches.
    """
    if g.ndim != 2:
        raise ValueError(f"g must be [n, d], got shape {tuple(g.shape)}")
    n, d = g.shape
    idx = all_minibatches(n, m, device=g.device)
    count = idx.shape[0]

    def batches():
        for start in range(0, count, chunk):
            yield g[idx[start : start + chunk]].mean(1)  # [chunk, d]

    s1 = torch.zeros(d, dtype=g.dtype, device=g.device)
    s_norm = torch.zeros((), dtype=g.dtype, device=g.device)
    s_unit = torch.zeros(d, dtype=g.dtype, device=g.device)
    for gh in batches():
        norms = gh.norm(dim=1)
        s1 += gh.sum(0)
        s_norm += norms.sum()
        s_unit += (gh / torch.where(norms > 0, norms, 1.0)[:, None]).sum(0)
    mean, mean_norm = s1 / count, s_norm / count
    s2 = torch.zeros(d, d, dtype=g.dtype, device=g.device)
    s_sq, s_var = torch.zeros_like(s_norm), torch.zeros_like(s_norm)
    for gh in batches():
        c = gh - mean
        s2 += c.T @ c
        norms = gh.norm(dim=1)
        s_sq += (norms**2).sum()
        s_var += ((norms - mean_norm) ** 2).sum()
    return ExactMinibatchMoments(
        mean=mean,
        cov=s2 / count,
        mean_norm=float(mean_norm),
        mean_sq_norm=float(s_sq / count),
        var_norm=float(s_var / count),
        mean_direction_length=float((s_unit / count).norm()),
        count=count,
    )


def finite_population_factor(n: int, m: int) -> float:
    """``(n − m) / (m (n − 1))``: the variance of a mean of ``m`` draws without replacement,
    relative to the population variance."""
    return (n - m) / (m * (n - 1))


def exact_minibatch_cov(g: torch.Tensor, m: int) -> torch.Tensor:
    """``(n − m)/(m (n − 1)) · (1/n) Σ (g_i − g)(g_i − g)ᵀ``, the exact covariance of ``ĝ``."""
    n = g.shape[0]
    c = g - g.mean(0)
    return finite_population_factor(n, m) * (c.T @ c) / n


def hoffer_cov(g: torch.Tensor, m: int) -> torch.Tensor:
    """Hoffer et al.'s approximation ``(1/(m n)) Σ g_i g_iᵀ`` of the covariance of ``ĝ``.

    Exactly ``(n − 1)/(n − m) · Cov ĝ + g gᵀ / m``: it drops the finite-population factor and
    keeps the mean's outer product, so it is close only for ``n ≫ m`` *and* a small ``‖g‖``.
    """
    n = g.shape[0]
    return (g.T @ g) / (m * n)


def gamma_max_inner(g: torch.Tensor) -> float:
    """``γ = max_{i,j} |⟨g_i, g_j⟩|`` of Theorem 1 (equal to ``max_i ‖g_i‖²`` by Cauchy–Schwarz)."""
    return float((g @ g.T).abs().max())


def theorem1_sides(
    g: torch.Tensor, m: int, moments: ExactMinibatchMoments | None = None
) -> dict[str, tuple[float, float]]:
    """Left and right sides of Lemma A.1 and of Theorem 1's inequalities for one problem.

    Keys: ``lemma_a1`` (E‖ĝ‖² − ‖g‖² ≤ 2fγ), ``mean_gap_mid`` (E‖ĝ‖ − ‖g‖ ≤ 2fγ/(E‖ĝ‖ + ‖g‖)),
    ``mean_gap`` (E‖ĝ‖ − ‖g‖ ≤ fγ/‖g‖), ``var`` (Var‖ĝ‖ ≤ 2fγ), ``gns`` (Eq. 1,
    √Var‖ĝ‖/E‖ĝ‖ ≤ √(2fγ/‖g‖²)); ``f = (n − m)/(m (n − 1))``. Moments are enumerated unless given.
    """
    n = g.shape[0]
    mo = moments if moments is not None else exact_minibatch_moments(g, m)
    f = finite_population_factor(n, m)
    gam = gamma_max_inner(g)
    gn = float(g.mean(0).norm())
    inf = float("inf")
    return {
        "lemma_a1": (mo.mean_sq_norm - gn**2, 2 * f * gam),
        "mean_gap_mid": (mo.mean_norm - gn, 2 * f * gam / (mo.mean_norm + gn)),
        "mean_gap": (mo.mean_norm - gn, f * gam / gn if gn > 0 else inf),
        "var": (mo.var_norm, 2 * f * gam),
        "gns": (mo.gns, math.sqrt(2 * f * gam) / gn if gn > 0 else inf),
    }


# ----------------------------------------------------------------------------- angles


def inner_product_pdf(t, d: int) -> np.ndarray:
    """Density of ``⟨u, v⟩`` for independent uniform unit vectors in ``R^d`` (``d ≥ 2``):
    ``(1 − t²)^{(d−3)/2} / B(1/2, (d − 1)/2)`` on ``(−1, 1)``."""
    t = np.asarray(t, dtype=float)
    inside = np.abs(t) < 1
    tt = np.where(inside, t, 0.0)
    logp = 0.5 * (d - 3) * np.log1p(-(tt**2)) - special.betaln(0.5, 0.5 * (d - 1))
    return np.where(inside, np.exp(logp), 0.0)


def inner_product_cdf(t, d: int) -> np.ndarray:
    """``P(⟨u, v⟩ ≤ t) = I_{(1+t)/2}((d − 1)/2, (d − 1)/2)``."""
    a = 0.5 * (d - 1)
    return special.betainc(a, a, np.clip((1.0 + np.asarray(t, dtype=float)) / 2.0, 0.0, 1.0))


def angle_pdf_deg(theta_deg, d: int) -> np.ndarray:
    """Density (per degree) of the angle ``θ`` between independent uniform unit vectors:
    ``sin^{d−2} θ / B(1/2, (d − 1)/2)`` on ``[0°, 180°]``, evaluated stably for large ``d``."""
    th = np.deg2rad(np.asarray(theta_deg, dtype=float))
    inside = (th > 0) & (th < math.pi)
    eps = np.where(inside, th - math.pi / 2, 0.0)
    log_sin = np.log1p(-2.0 * np.sin(eps / 2) ** 2)  # log cos(ε) without cancellation
    logp = (d - 2) * log_sin - special.betaln(0.5, 0.5 * (d - 1))
    return np.where(inside, np.exp(logp), 0.0) / DEG


def angle_cdf_deg(theta_deg, d: int) -> np.ndarray:
    """``P(θ ≤ x) = P(⟨u, v⟩ ≥ cos x) = I_{sin²(x/2)}((d − 1)/2, (d − 1)/2)``."""
    a = 0.5 * (d - 1)
    x = np.clip(np.deg2rad(np.asarray(theta_deg, dtype=float)), 0.0, math.pi)
    return special.betainc(a, a, np.sin(x / 2) ** 2)


def angle_var_deg(d: int) -> float:
    """Exact variance of the angle in degrees²: ``(180/π)² ψ′(d/2) / 2`` (→ (180/π)²/d)."""
    return DEG**2 * float(special.polygamma(1, d / 2)) / 2


def angle_limit_sd_deg(d: int) -> float:
    """Standard deviation ``180/(π √d)`` of the paper's normal approximation (2)."""
    return DEG / math.sqrt(d)


def ks_to_standard_normal(
    cdf_of_z: Callable[[np.ndarray], np.ndarray], half_width: float = 8.0, points: int = 16001
) -> float:
    """``sup_z |F(z) − Φ(z)|`` over a grid of ``points`` on ``[−half_width, half_width]``."""
    z = np.linspace(-half_width, half_width, points)
    return float(np.abs(cdf_of_z(z) - stats.norm.cdf(z)).max())


def inner_product_ks(d: int) -> float:
    """Kolmogorov distance between the exact law of ``√d ⟨u, v⟩`` and N(0, 1) (Lemma B.1)."""
    return ks_to_standard_normal(lambda z: inner_product_cdf(z / math.sqrt(d), d))


def angle_ks(d: int) -> float:
    """Kolmogorov distance between the exact law of the angle and N(90°, (180/(π√d))²)
    (equivalently of √d(θ − 90°) and N(0, (180/π)²), Theorem 2)."""
    sd = angle_limit_sd_deg(d)
    return ks_to_standard_normal(lambda z: angle_cdf_deg(90.0 + z * sd, d))


def random_pair_inner_products(
    d: int, n: int, generator: torch.Generator, chunk: int = 65536
) -> np.ndarray:
    """``⟨u, v⟩`` for ``n`` independent pairs of real uniform unit vectors in ``R^d`` (float64),
    each vector a normalised standard Gaussian, as in the proof of Lemma B.1."""
    out = []
    dev = generator.device
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        x = torch.randn(k, d, generator=generator, dtype=torch.float64, device=dev)
        y = torch.randn(k, d, generator=generator, dtype=torch.float64, device=dev)
        out.append(((x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1))).cpu())
    return torch.cat(out).numpy()


def angles_to_random_direction(
    d: int, n: int, generator: torch.Generator, chunk: int = 64
) -> np.ndarray:
    """Angles in degrees between one fixed uniform unit vector ``u`` and ``n`` independent real
    uniform unit vectors in ``R^d`` (float32 vectors and sums, float64 angles; ``chunk`` vectors at
    a time).

    This is the ideal of the paper's Figure 3(c): what the angles of ``n`` minibatch gradients with
    a random direction look like if those gradients' directions are exactly uniform.
    """
    dev = generator.device
    u = torch.randn(d, generator=generator, device=dev)
    u = u / u.norm()
    out = []
    for start in range(0, n, chunk):
        x = torch.randn(min(chunk, n - start), d, generator=generator, device=dev)
        cos = (x @ u).double() / x.norm(dim=1).double()
        out.append(torch.rad2deg(torch.arccos(cos.clamp(-1, 1))).cpu())
    return torch.cat(out).numpy()
