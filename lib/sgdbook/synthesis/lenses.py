"""Helpers of the synthesis chapter that no single paper needs.

:func:`model_fisher` is the second moment of the per-example gradients when every label is drawn
from the model's own predictive distribution,
``F = (1/n) Σ_i Σ_c p_ic ∇ℓ(x_i, c) ∇ℓ(x_i, c)ᵀ`` (``ℓ`` the cross-entropy, ``p_i`` the softmax
of the logits), i.e. ``E_{y ~ p_θ}[M]``. For a softmax cross-entropy it equals the generalised
Gauss–Newton matrix ``(1/n) Σ J_iᵀ (diag p_i − p_i p_iᵀ) J_i``, and ``H − F`` is the residual
term whose expectation over such labels vanishes: the condition under which "H ≈ C" can hold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sgdbook.functional import check_data
from sgdbook.gradients import per_example_grads


def model_fisher(model: nn.Module, x: torch.Tensor, *, bn_mode: str = "eval", classes: int | None = None) -> torch.Tensor:
    """The dense ``[d, d]`` Fisher matrix of a softmax classifier with labels drawn from the model.

    One :func:`~sgdbook.gradients.per_example_grads` pass per class (``classes`` passes of
    ``n × d`` gradients): cost ``classes`` times that of the empirical second moment ``M``.
    ``bn_mode`` as in :mod:`sgdbook.functional` (per-example losses need ``"eval"`` with batch
    norm; ignored without it).
    """
    with torch.no_grad():
        logits = model(x)
    if logits.ndim != 2:
        raise ValueError(f"the model must return [n, classes] logits, got shape {tuple(logits.shape)}")
    k = logits.shape[1] if classes is None else classes
    check_data(x, logits)
    p = torch.softmax(logits.double(), dim=1).to(logits.dtype)
    n = x.shape[0]
    out = None
    for c in range(k):
        G = per_example_grads(model, F.cross_entropy, x, torch.full((n,), c, dtype=torch.long, device=x.device),
                              bn_mode=bn_mode)
        G = G * p[:, c : c + 1].sqrt()
        out = G.T @ G if out is None else out.addmm_(G.T, G)
    return out / n
