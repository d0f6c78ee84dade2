"""The residual ``H_p = M − H`` of a second-moment operator and a Hessian."""

from __future__ import annotations

import torch

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

