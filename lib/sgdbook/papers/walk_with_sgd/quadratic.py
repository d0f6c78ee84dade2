"""Section 6 and App. E of the walk-with-sgd paper: gradient descent on a quadratic, in closed form.

On ``L(θ) = ½ θᵀHθ`` (``H`` symmetric positive semi-definite) gradient descent with rate ``η`` maps
each eigen-coordinate ``c_i`` of ``H`` (eigenvalue ``λ_i``) to ``(1 − ηλ_i) c_i``: over-damped
(monotone) for ``η < 1/λ_i``, one step at ``η = 1/λ_i``, under-damped (alternating sign, shrinking)
for ``1/λ_i < η < 2/λ_i``, divergent for ``η > 2/λ_i`` (LeCun et al. 1998, Sec. 5; the paper's
Section 6). Figure 28 plots the rate ``|1 − ηλ_i|`` against ``η``.

- :func:`regime`, :func:`rate`: the 1-D classification and the per-step contraction factor.
- :func:`gd`: the iterates and gradients of full-batch GD on ``H`` (any ``η``, no clipping).
- :func:`segment_minimum`: the exact minimum of ``L`` on the segment ``θ_t → θ_{t+1}`` (the
  paper's valley floor, without a grid): ``L`` along the segment is a convex parabola in ``α``.
- :func:`segment_losses`: ``L`` at grid points of every segment (for plots and for the grid-based
  estimators of :mod:`sgdbook.landscape`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["GDRun", "SegmentMinimum", "gd", "rate", "regime", "segment_losses", "segment_minimum"]

REGIMES = ("over-damped", "critical", "under-damped", "boundary", "divergent")


def rate(eta, lam):
    """The per-step contraction factor ``|1 − ηλ|`` of GD along an eigenvector with eigenvalue ``λ``."""
    return abs(1 - eta * lam)


def regime(eta: float, lam: float, rtol: float = 1e-12) -> str:
    """The 1-D regime of GD with rate ``η > 0`` on ``½λx²`` (``λ > 0``): ``"over-damped"``
    (``η < 1/λ``), ``"critical"`` (``η = 1/λ``: one step), ``"under-damped"`` (``1/λ < η < 2/λ``),
    ``"boundary"`` (``η = 2/λ``: bounces forever), ``"divergent"`` (``η > 2/λ``); equalities to
    ``rtol``."""
    if eta <= 0 or lam <= 0:
        raise ValueError(f"need eta > 0 and lam > 0, got eta = {eta}, lam = {lam}")
    x = eta * lam
    if abs(x - 1) <= rtol:
        return "critical"
    if abs(x - 2) <= rtol * 2:
        return "boundary"
    return "over-damped" if x < 1 else "under-damped" if x < 2 else "divergent"


@dataclass(frozen=True)
class GDRun:
    """Iterates ``theta [T + 1, P]``, gradients ``grads [T + 1, P]`` (``g_t = Hθ_t``) and losses
    ``loss [T + 1]`` of full-batch GD on ``½θᵀHθ``."""

    theta: torch.Tensor
    grads: torch.Tensor
    loss: torch.Tensor


def gd(H: torch.Tensor, theta0: torch.Tensor, eta: float, steps: int) -> GDRun:
    """``steps`` steps of ``θ_{t+1} = θ_t − η H θ_t`` from ``theta0`` (dtype and device of ``H``)."""
    if H.ndim != 2 or H.shape[0] != H.shape[1] or theta0.shape != (H.shape[0],):
        raise ValueError(f"need H [P, P] and theta0 [P], got {tuple(H.shape)} and {tuple(theta0.shape)}")
    th = [theta0.to(H)]
    for _ in range(int(steps)):
        th.append(th[-1] - eta * (H @ th[-1]))
    theta = torch.stack(th)
    grads = theta @ H.T
    loss = 0.5 * (theta * grads).sum(1)
    return GDRun(theta, grads, loss)


@dataclass(frozen=True)
class SegmentMinimum:
    """Per segment ``θ_t → θ_{t+1}``: the minimiser ``alpha`` of ``L`` over ``[0, 1]``, the floor
    ``L`` there, and whether it lies strictly inside (``interior``)."""

    alpha: torch.Tensor
    floor: torch.Tensor
    interior: torch.Tensor


def segment_minimum(H: torch.Tensor, theta: torch.Tensor) -> SegmentMinimum:
    """The exact valley floor of every segment of a trajectory ``theta [T + 1, P]`` on ``½θᵀHθ``.

    Along ``θ_t + αΔ`` (``Δ = θ_{t+1} − θ_t``) the loss is ``L_t + α g_tᵀΔ + ½α² ΔᵀHΔ``, minimised
    at ``α* = −g_tᵀΔ / ΔᵀHΔ`` (clipped to ``[0, 1]``; ``α = 0`` where ``ΔᵀHΔ = 0``).
    """
    a, b = theta[:-1], theta[1:]
    d = b - a
    g = a @ H.T
    curv = ((d @ H.T) * d).sum(1)
    slope = (g * d).sum(1)
    safe = torch.where(curv > 0, curv, torch.ones_like(curv))
    star = torch.where(curv > 0, -slope / safe, torch.zeros_like(curv))
    alpha = star.clamp(0, 1)
    pts = a + alpha[:, None] * d  # the loss evaluated at the minimiser, not expanded (no cancellation)
    floor = 0.5 * ((pts @ H.T) * pts).sum(1)
    return SegmentMinimum(alpha, floor, (star > 0) & (star < 1))


def segment_losses(H: torch.Tensor, theta: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """``L`` at ``θ_t + α(θ_{t+1} − θ_t)`` for every segment and every ``α``: ``[T, len(alphas)]``."""
    a, b = theta[:-1], theta[1:]
    pts = a[:, None, :] + alphas.to(theta)[None, :, None] * (b - a)[:, None, :]
    return 0.5 * ((pts @ H.T) * pts).sum(-1)
