"""The residual ``H_p = M − H`` of a second-moment operator and a Hessian."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..functional import flat_loss, per_example_losses
from .dense import DENSE_MAX_P, check_dense
from .hvp import HVP, full_hessian

class ResidualOperator:
    """``H_p v = M v − H v``: the part of the Hessian that the second moment ``M`` of the
    per-example gradients does not explain (the Hessian paper's Proposition 1, ``H = M − H_p``;
    for cross-entropy ``H_p = (1/n) Σ ∇²p_i / p_i`` with ``p_i`` the probability of the label).

    ``hvp`` is an :class:`HVP` (or anything with ``__call__``), ``second_moment`` a
    :class:`sgdbook.gradients.SecondMomentOperator` (or anything with ``@``) at the same point.
    """

    def __init__(self, hvp, second_moment) -> None:
        self.hvp = hvp
        self.second_moment = second_moment

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return self.second_moment @ v - self.hvp(v)

    def batch(self, V: torch.Tensor) -> torch.Tensor:
        """Rows of ``V`` (``[b, p]``) mapped to rows of ``H_p V``."""
        MV = (self.second_moment @ V.T).T
        HV = self.hvp.batch(V) if hasattr(self.hvp, "batch") else torch.stack([self.hvp(v) for v in V])
        return MV - HV


# ------------------------------------------------------------------ the residual H_p directly


class ProbabilityUnderflowError(FloatingPointError):
    """``p_i = exp(−f_i)`` is zero or subnormal in floating point, so ``∇²p_i / p_i`` is 0/0."""


def residual_function(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    method: str = "ratio",
) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """``(g, θ₀)`` with ``∇²g(θ₀) = H_p(θ₀) = (1/n) Σ_i ∇²p_i(θ₀) / p_i(θ₀)`` (the residual of the
    Hessian paper's Proposition 1, ``H_f = M − H_p``), computed from the probabilities themselves,
    independently of ``H_f`` and ``M``.

    ``loss_fn`` must be a negative log-likelihood: the per-example loss ``f_i = −log p_i`` (e.g.
    the cross-entropy, ``p_i`` the softmax probability of the label). ``method="ratio"`` is the
    definition as printed: ``g(θ) = (1/n) Σ p_i(θ) / c_i`` with ``p_i(θ) = exp(−f_i(θ))`` and the
    constants ``c_i = p_i(θ₀)``; it raises :class:`ProbabilityUnderflowError` when some ``p_i(θ₀)``
    is zero or subnormal (there the printed formula is 0/0). ``method="shifted"`` evaluates the
    same ratio from log-probabilities, ``g(θ) = (1/n) Σ exp(f_i(θ₀) − f_i(θ))``, which is 1 at θ₀
    for every example and never underflows there.
    """
    if method not in ("ratio", "shifted"):
        raise ValueError(f"method must be 'ratio' or 'shifted', got {method!r}")
    f_all, theta0 = flat_loss(model, lambda out, t: per_example_losses(loss_fn, out, t), x, y)
    with torch.no_grad():
        f0 = f_all(theta0).detach()
    n = f0.shape[0]
    if method == "ratio":
        c = torch.exp(-f0)
        tiny = torch.finfo(c.dtype).tiny
        bad = c < tiny
        if bool(bad.any()):
            raise ProbabilityUnderflowError(
                f"p_i = exp(-f_i) underflows (zero or subnormal in {c.dtype}) for {int(bad.sum())} of {n} "
                f"examples (largest per-example loss {float(f0.max()):.4g} > -log(tiny) = {-math.log(tiny):.4g}), "
                "so (1/p_i)∇²p_i is 0/0 there. Use method='shifted' (the same ratio from log-probabilities) "
                "or H_p = M - H_f (Proposition 1)."
            )

        def g(theta):
            return (torch.exp(-f_all(theta)) / c).mean()
    else:

        def g(theta):
            return torch.exp(f0 - f_all(theta)).mean()

    return g, theta0


def residual_hessian(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    method: str = "ratio",
    max_p: int = DENSE_MAX_P,
) -> torch.Tensor:
    """The dense ``H_p = (1/n) Σ ∇²p_i / p_i`` at the model's parameters (see :func:`residual_function`)."""
    g, theta0 = residual_function(model, loss_fn, x, y, method=method)
    check_dense(theta0.numel(), max_p, 1, theta0.element_size())
    return full_hessian(g, theta0)


def residual_hvp(model, loss_fn, x, y, *, method: str = "ratio") -> HVP:
    """``v ↦ H_p v`` as an :class:`HVP` (autograd graph of :func:`residual_function`'s ``g``)."""
    g, theta0 = residual_function(model, loss_fn, x, y, method=method)
    return HVP(g, theta0)
