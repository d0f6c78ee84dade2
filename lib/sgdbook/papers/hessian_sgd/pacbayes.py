"""Section 6 of the Hessian paper: the PAC-Bayes bound (51)/(52), the α-scale map and its invariances.

- Prior ``P = N(θ₀, diag σ_j²)`` fixed before training; posterior ``Q_θ = N(θ, diag 1/ν_j)`` with
  ``ν_j = max{H_f(θ)[j,j], 1/σ_j²}`` (Assumption 2, Eqs. 42–44: :func:`posterior_precision`).
- The exact KL of two Gaussians (Eq. 103; :func:`gaussian_kl_diag`, :func:`gaussian_kl`) and its
  split (106): ``2KL = Σ(1/(σ_j²ν_j) − 1) + Σ(θ_j − θ₀_j)²/σ_j² + Σ ln(ν_jσ_j²)``, where the first
  sum is ≤ 0 and the last is the *effective curvature* ``Σ_{H_jj > 1/σ_j²} ln(H_jj σ_j²)``, so
  ``2KL ≤ effective curvature + precision-weighted Frobenius norm`` (:func:`bound_terms`).
- The PAC-Bayes-kl inequality (105) ``kl(ℓ̂(Q,S) ‖ ℓ(Q,D)) ≤ (KL + ln((n+1)/δ))/n``, turned into an
  upper bound on the Gibbs error by inverting the binary kl (:func:`kl_inverse`); a prior chosen
  from a declared grid of ``G`` values pays ``ln G`` more (a union bound).
- The Gibbs (posterior-averaged) 0-1 error estimated by sampling ``θ' ~ Q`` (:func:`gibbs_error`).
- Definition 1's α-scale transformation with biases scaled cumulatively, ``b_l → (Π_{i≤l} α_i) b_l``,
  which keeps a ReLU network's function (:func:`alpha_scale_vector`, :func:`alpha_scale`); the
  prior transforms with it (``θ₀ → Aθ₀``, ``σ_j → a_jσ_j``, Eq. 98).

Bad input raises a ValueError naming the fix: ``σ ≤ 0``, ``α ≤ 0``, ``Π α ≠ 1``, ``δ ∉ (0, 1)``.
Exact quantities are computed in the inputs' dtype (use float64 for checks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .theory import check_positive

__all__ = [
    "BoundTerms",
    "GibbsError",
    "alpha_scale",
    "alpha_scale_vector",
    "bound_terms",
    "check_alphas",
    "check_delta",
    "gaussian_kl",
    "gaussian_kl_diag",
    "gibbs_error",
    "kl_bernoulli",
    "kl_inverse",
    "pac_bayes_rhs",
    "posterior_precision",
]


def check_delta(delta: float) -> float:
    """``δ`` in ``(0, 1)`` (the bound holds with probability ≥ 1 − δ); else a ValueError."""
    if not (isinstance(delta, (int, float)) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1) (the bound holds with probability >= 1 − delta; 0.05 is usual), got {delta!r}")
    return float(delta)


def _sigma_like(sigma, like: torch.Tensor) -> torch.Tensor:
    check_positive("sigma", sigma, "the prior standard deviation(s) σ_j (Assumption 2) must be positive")
    return torch.as_tensor(sigma, dtype=like.dtype, device=like.device).expand_as(like)


# --------------------------------------------------------------------------------- KL


def kl_bernoulli(p, q) -> torch.Tensor:
    """``kl(p‖q) = p ln(p/q) + (1 − p) ln((1 − p)/(1 − q))`` elementwise, with ``0 ln 0 = 0``."""
    p = torch.as_tensor(p, dtype=torch.float64)
    q = torch.as_tensor(q, dtype=torch.float64)
    if bool(((p < 0) | (p > 1) | (q < 0) | (q > 1)).any()):
        raise ValueError("kl(p‖q) needs p and q in [0, 1]")
    a = torch.where(p > 0, p * (torch.log(p) - torch.log(q)), torch.zeros_like(p * q))
    b = torch.where(p < 1, (1 - p) * (torch.log1p(-p) - torch.log1p(-q)), torch.zeros_like(p * q))
    return a + b


def kl_inverse(p_hat, bound, iters: int = 100) -> torch.Tensor:
    """``sup{q ∈ [p̂, 1] : kl(p̂‖q) ≤ B}`` elementwise, by bisection in float64 (to ≈ 2⁻¹⁰⁰).

    For ``p̂ < 1`` the supremum is < 1 (``kl(p̂‖q) → ∞`` as ``q → 1``) but rounds to 1 once ``B``
    is large (a vacuous bound); ``p̂ = 1`` gives 1. ``B < 0`` is an error.
    """
    p = torch.as_tensor(p_hat, dtype=torch.float64)
    B = torch.as_tensor(bound, dtype=torch.float64)
    p, B = torch.broadcast_tensors(p, B)
    if bool((B < 0).any()) or bool(torch.isnan(B).any()):
        raise ValueError("the kl bound B must be >= 0")
    lo, hi = p.clone(), torch.ones_like(p)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        ok = kl_bernoulli(p, mid) <= B
        lo = torch.where(ok, mid, lo)
        hi = torch.where(ok, hi, mid)
    return hi  # the upper end of the final bracket: never below the supremum


def gaussian_kl_diag(mu_q, var_q, mu_p, var_p) -> torch.Tensor:
    """``KL(N(μ_q, diag v_q) ‖ N(μ_p, diag v_p))`` summed over the last dimension (Eq. 103)."""
    d2 = (mu_q - mu_p).square()
    return 0.5 * (var_q / var_p + d2 / var_p - 1 + torch.log(var_p) - torch.log(var_q)).sum(-1)


def gaussian_kl(mu_q: torch.Tensor, cov_q: torch.Tensor, mu_p: torch.Tensor, cov_p: torch.Tensor) -> torch.Tensor:
    """``KL(N(μ_q, Σ_q) ‖ N(μ_p, Σ_p))`` for full covariances (Eq. 103), via Cholesky factors."""
    d = mu_q.shape[-1]
    Lp = torch.linalg.cholesky(cov_p)
    Lq = torch.linalg.cholesky(cov_q)
    A = torch.linalg.solve_triangular(Lp, Lq, upper=False)
    diff = torch.linalg.solve_triangular(Lp, (mu_q - mu_p)[..., None], upper=False)[..., 0]
    logdet = 2 * (torch.log(Lp.diagonal(dim1=-2, dim2=-1)).sum(-1) - torch.log(Lq.diagonal(dim1=-2, dim2=-1)).sum(-1))
    return 0.5 * (A.square().sum((-2, -1)) + diff.square().sum(-1) - d + logdet)


# ----------------------------------------------------------------------- the bound's terms


def posterior_precision(h_diag: torch.Tensor, sigma) -> torch.Tensor:
    """``ν_j = max{H_f(θ)[j,j], 1/σ_j²}`` (Eq. 44)."""
    s = _sigma_like(sigma, h_diag)
    return torch.maximum(h_diag, 1 / s.square())


@dataclass(frozen=True, eq=False)
class BoundTerms:
    """Theorem 4's terms for each run (tensors over the leading dims).

    ``precision`` = ν; ``d_tilde`` = #{j : H_jj > 1/σ_j²}; ``effective_curvature`` =
    Σ_{l ≤ d̃} ln(ν̃_(l) σ̃_(l)²); ``frobenius`` = Σ (θ_j − θ₀_j)²/σ_j²; ``first_sum`` =
    Σ (1/(σ_j²ν_j) − 1) ≤ 0; ``kl`` the exact KL(Q‖P) (Eq. 103 = half of Eq. 106's sum);
    ``rhs`` = (effective curvature + frobenius)/(2n) + ln((n+1)G/δ)/n (Eq. 51, ``G`` the prior grid's
    size, 1 for a single prior); ``rhs_exact`` the same with the exact KL (Eq. 105).
    """

    precision: torch.Tensor
    d_tilde: torch.Tensor
    effective_curvature: torch.Tensor
    frobenius: torch.Tensor
    first_sum: torch.Tensor
    kl: torch.Tensor
    rhs: torch.Tensor
    rhs_exact: torch.Tensor


def pac_bayes_rhs(kl, n: int, delta: float, grid_size: int = 1):
    """``(KL + ln((n + 1)/δ) + ln G)/n``: the right side of (105), ``G`` priors in a declared grid."""
    check_delta(delta)
    if n < 1 or grid_size < 1:
        raise ValueError(f"n and grid_size must be >= 1, got {n}, {grid_size}")
    return (kl + math.log((n + 1) / delta) + math.log(grid_size)) / n


def bound_terms(theta: torch.Tensor, theta0, h_diag: torch.Tensor, sigma, n: int, delta: float = 0.05, grid_size: int = 1) -> BoundTerms:
    """Theorem 4's terms at ``θ`` (``[..., p]``) for the prior ``N(θ₀, diag σ_j²)`` and ``H_f``'s diagonal."""
    check_delta(delta)
    s2 = _sigma_like(sigma, theta).square()
    theta0 = torch.as_tensor(theta0, dtype=theta.dtype, device=theta.device).expand_as(theta)
    nu = torch.maximum(h_diag, 1 / s2)
    sharp = h_diag > 1 / s2
    eff = torch.where(sharp, torch.log(torch.where(sharp, h_diag, torch.ones_like(h_diag)) * s2), torch.zeros_like(h_diag)).sum(-1)
    fro = ((theta - theta0).square() / s2).sum(-1)
    first = (1 / (s2 * nu) - 1).sum(-1)
    kl = 0.5 * (first + fro + torch.log(nu * s2).sum(-1))
    const = math.log((n + 1) / delta) + math.log(grid_size)
    return BoundTerms(
        precision=nu,
        d_tilde=sharp.sum(-1),
        effective_curvature=eff,
        frobenius=fro,
        first_sum=first,
        kl=kl,
        rhs=(eff + fro) / (2 * n) + const / n,
        rhs_exact=(kl + const) / n,
    )


# ------------------------------------------------------------------------ Gibbs error


@dataclass(frozen=True, eq=False)
class GibbsError:
    """Posterior-averaged 0-1 error per run: ``mean`` and its ``se`` over ``draws`` samples ``θ' ~ Q``."""

    mean: torch.Tensor
    se: torch.Tensor
    per_draw: torch.Tensor  # [R, draws]


def gibbs_error(
    error_fn: Callable[[torch.Tensor], torch.Tensor],
    theta: torch.Tensor,
    precision: torch.Tensor,
    draws: int,
    generator: torch.Generator,
    chunk: int = 4096,
) -> GibbsError:
    """``E_{θ'~N(θ, diag 1/ν)} err(θ')`` for every run, by ``draws`` samples per run.

    ``theta``, ``precision`` are ``[R, p]``; ``error_fn`` maps ``[B, p]`` parameter vectors to
    their 0-1 errors ``[B]`` on a fixed data set.
    """
    if theta.ndim == 1:
        theta, precision = theta[None], precision[None]
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    check_positive("precision", precision)
    R, p = theta.shape
    noise = torch.randn(R, draws, p, generator=generator, dtype=theta.dtype, device=generator.device).to(theta.device)
    samples = (theta[:, None, :] + noise * precision.rsqrt()[:, None, :]).reshape(R * draws, p)
    err = torch.cat([error_fn(samples[a : a + chunk]) for a in range(0, R * draws, chunk)]).view(R, draws)
    se = err.std(1) / math.sqrt(draws) if draws > 1 else torch.full((R,), float("nan"), dtype=err.dtype, device=err.device)
    return GibbsError(err.mean(1), se, err)


# ---------------------------------------------------------------------- α-scale map


def check_alphas(alphas: Sequence[float], layers: int | None = None, rtol: float = 1e-9) -> list[float]:
    """Definition 1: every ``α_l > 0`` and ``Π α_l = 1`` (to ``rtol``); one per layer if ``layers`` given."""
    a = [float(v) for v in alphas]
    if layers is not None and len(a) != layers:
        raise ValueError(f"need one α per layer ({layers}), got {len(a)}")
    if any(not math.isfinite(v) or v <= 0 for v in a):
        raise ValueError(f"every α_l must be > 0 (Definition 1), got {a}")
    prod = math.prod(a)
    if abs(prod - 1) > rtol:
        raise ValueError(f"Definition 1 needs Π α_l = 1, got {prod!r}: divide one α_l by that product")
    return a


def alpha_scale_vector(sizes: Sequence[tuple[int, int]], alphas: Sequence[float], dtype=torch.float64, device=None) -> torch.Tensor:
    """The diagonal ``a`` of ``A`` with ``T_α(θ) = a ⊙ θ`` (flat layout: each layer's weight, then bias).

    Layer ``l``'s weights get ``α_l``; its bias ``Π_{i≤l} α_i`` (so that a ReLU net's function is
    unchanged; the paper's model (70) has no biases). ``sizes`` = (weight numel, bias numel) per layer.
    """
    a = check_alphas(alphas, len(sizes))
    parts, cum = [], 1.0
    for (nw, nb), al in zip(sizes, a):
        cum *= al
        parts.append(torch.full((nw,), al, dtype=dtype, device=device))
        parts.append(torch.full((nb,), cum, dtype=dtype, device=device))
    return torch.cat(parts)


def alpha_scale(layers, alphas: Sequence[float]):
    """``T_α`` applied to a stacked MLP (list of ``(W, b)``, see :mod:`.stacked_mlp`): new layers."""
    a = check_alphas(alphas, len(layers))
    out, cum = [], 1.0
    for (W, b), al in zip(layers, a):
        cum *= al
        out.append((W * al, None if b is None else b * cum))
    return out
