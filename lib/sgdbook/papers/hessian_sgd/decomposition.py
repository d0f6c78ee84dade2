"""Section 4.1 and 4.3 of the Hessian paper: the decomposition ``H_f = M − H_p`` (Proposition 1),
its closed forms for least squares and logistic regression (Table 1, App. B.4), and the
population (Fisher-information) version (Eqs. 14–16, 62–64).

- :func:`least_squares_table1` and :func:`logistic_table1` are Table 1's closed forms; the
  networks :func:`linear_gaussian_model` / :func:`linear_logistic_model` with the matching
  negative log-likelihoods (:func:`gaussian_nll`, :func:`bernoulli_nll`) let the general
  estimators (autograd Hessian, per-example gradients, the direct ``H_p``) compute the same
  matrices independently.
- :func:`population_terms` computes the exact expectations ``E[∇²f]``, ``E[∇f∇fᵀ]`` and
  ``E[(1/p)∇²p]`` over a distribution with finitely many inputs and labels drawn from a model
  ``p(y | x, θ*)``, at any ``θ``: Eq. (62)'s decomposition, and at ``θ = θ*`` Eqs. (63)–(64).
- :func:`sample_from_model` draws a finite sample ``(x_i, y_i)`` with ``y_i ~ p(· | x_i, θ*)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...curvature import HVP
from ...functional import flat_loss, per_example_losses
from ...gradients import per_example_grads

__all__ = [
    "PopulationTerms",
    "bernoulli_nll",
    "gaussian_nll",
    "least_squares_table1",
    "linear_gaussian_model",
    "linear_logistic_model",
    "logistic_table1",
    "population_terms",
    "sample_from_model",
]


# --------------------------------------------------------------------------------- Table 1


def least_squares_table1(X: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, sigma: float) -> dict[str, torch.Tensor]:
    """Table 1, least squares: ``H_f = XᵀX/(nσ²)``, ``M = (1/(nσ⁴)) Σ r_i² x_ixᵢᵀ`` and
    ``H_p = (1/(nσ⁴)) Σ (r_i² − σ²) x_ixᵢᵀ`` with residuals ``r_i = x_iᵀθ − y_i``."""
    n = X.shape[0]
    r = X @ theta - y
    return {
        "H_f": X.T @ X / (n * sigma**2),
        "M": (X.T * r.square()) @ X / (n * sigma**4),
        "H_p": (X.T * (r.square() - sigma**2)) @ X / (n * sigma**4),
    }


def logistic_table1(X: torch.Tensor, y: torch.Tensor, theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Table 1, binary logistic regression (``y ∈ {0, 1}``, ``p_θ(x) = 1/(1 + e^{−xᵀθ})``):
    ``H_f = (1/n) Σ σ_θ(x_i) x_ixᵢᵀ`` with ``σ_θ = p_θ(1 − p_θ)``, ``M = (1/n) Σ (p_θ(x_i) − y_i)² x_ixᵢᵀ``,
    ``H_p = (1/n) Σ [(p_θ(x_i) − y_i)² − σ_θ(x_i)] x_ixᵢᵀ``."""
    n = X.shape[0]
    p = torch.sigmoid(X @ theta)
    s = p * (1 - p)
    e2 = (p - y).square()
    return {
        "H_f": (X.T * s) @ X / n,
        "M": (X.T * e2) @ X / n,
        "H_p": (X.T * (e2 - s)) @ X / n,
    }


def linear_gaussian_model(theta: torch.Tensor) -> nn.Linear:
    """``x ↦ xᵀθ`` as a bias-free ``nn.Linear`` holding ``θ`` (the least-squares model)."""
    lin = nn.Linear(theta.numel(), 1, bias=False).to(dtype=theta.dtype, device=theta.device)
    with torch.no_grad():
        lin.weight.copy_(theta.reshape(1, -1))
    return lin


linear_logistic_model = linear_gaussian_model  # the same x ↦ xᵀθ; the likelihood differs


def gaussian_nll(sigma: float):
    """The mean negative log-likelihood of ``y ~ N(xᵀθ, σ²)`` (Table 1's least-squares model, with
    its constant ``log(√(2π) σ)``, so that ``exp(−f_i)`` is the density ``p(y_i | x_i, θ)``)."""
    const = math.log(math.sqrt(2 * math.pi) * sigma)

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (0.5 * ((out.reshape(-1) - y) / sigma).square() + const).mean()

    return loss


def bernoulli_nll(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The mean negative log-likelihood of ``y ∈ {0, 1}`` under ``p = sigmoid(out)`` (Eq. 19)."""
    return F.binary_cross_entropy_with_logits(out.reshape(-1), y.to(out.dtype))


# ------------------------------------------------------------------- population expectations


@dataclass(frozen=True, eq=False)
class PopulationTerms:
    """Exact expectations over ``(x, y)`` at parameters ``θ``: ``H_f = E[∇²f]``, ``M = E[∇f∇fᵀ]``,
    ``H_p = E[(1/p)∇²p]`` and ``mu = E[∇f]``."""

    H_f: torch.Tensor
    M: torch.Tensor
    H_p: torch.Tensor
    mu: torch.Tensor


def _support(model: nn.Module, xs: torch.Tensor, weights: torch.Tensor, classes: int, teacher: nn.Module):
    """Every (x, y) pair of the finite support with its probability ``w_x p*(y | x)``."""
    with torch.no_grad():
        probs = torch.softmax(teacher(xs), -1)  # [S, k]
    pair_x = xs.repeat_interleave(classes, 0)
    pair_y = torch.arange(classes, device=xs.device).repeat(xs.shape[0])
    pair_w = (weights[:, None] * probs).reshape(-1)
    return pair_x, pair_y, pair_w


def population_terms(model: nn.Module, teacher: nn.Module, xs: torch.Tensor, weights: torch.Tensor) -> PopulationTerms:
    """Exact population terms of the cross-entropy at ``model``'s parameters, for inputs on the
    finite support ``xs`` (``[S, d]``, probabilities ``weights`` summing to 1) and labels drawn from
    ``teacher``'s softmax (the true model ``p(y | x, θ*)``; pass the same network at θ* to evaluate
    at the true parameter). Every expectation is a finite weighted sum over the ``S·k`` pairs, so
    Eq. (62) ``H_f = M − H_p`` holds at every θ and, at θ = θ*, Eqs. (63)–(64) ``μ = 0``,
    ``H_p = 0`` and so ``H_f = M`` (Eq. 15) hold exactly, up to rounding."""
    if abs(float(weights.sum()) - 1) > 1e-10:
        raise ValueError(f"weights must sum to 1, got {float(weights.sum())}")
    out0 = teacher(xs[:1])
    px, py, pw = _support(model, xs, weights, out0.shape[-1], teacher)
    G = per_example_grads(model, F.cross_entropy, px, py)
    M = (G.T * pw) @ G
    mu = pw @ G
    f, theta = flat_loss(model, lambda o, t: (per_example_losses(F.cross_entropy, o, t) * pw).sum(), px, py)
    fl, _ = flat_loss(model, lambda o, t: per_example_losses(F.cross_entropy, o, t), px, py)
    with torch.no_grad():
        f0 = fl(theta)

    def g(th):  # Σ w_i p_i(θ)/p_i(θ₀): its Hessian at θ₀ is E[(1/p)∇²p]
        return (pw * torch.exp(f0 - fl(th))).sum()

    eye = torch.eye(theta.numel(), dtype=theta.dtype, device=theta.device)
    H_f, H_p = (_dense(fn, theta, eye) for fn in (f, g))
    return PopulationTerms(H_f=H_f, M=M, H_p=H_p, mu=mu)


def _dense(fn, theta, eye):
    """The dense Hessian of ``fn`` as ``p`` Hessian-vector products in blocks (memory of one block,
    where ``jacfwd`` would hold all ``p`` tangents over every example at once)."""
    H = HVP(fn, theta).batch(eye)
    return (H + H.mT) / 2


def sample_from_model(teacher: nn.Module, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Labels ``y_i ~ softmax(teacher(x_i))`` (a well-specified sample of the model at θ*)."""
    with torch.no_grad():
        probs = torch.softmax(teacher(x), -1)
    u = torch.rand(x.shape[0], 1, generator=generator, dtype=probs.dtype, device=generator.device).to(probs.device)
    return (probs.cumsum(-1) < u).sum(-1).clamp_max(probs.shape[-1] - 1)
