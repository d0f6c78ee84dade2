"""Principal angles between subspaces (e.g. top eigenspaces at two times), and the Davis–Kahan
bounds on the angles between the top eigenvectors of a matrix and of a perturbed one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

def principal_angles(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending) between the column spaces of ``A`` and ``B``.

    ``min(rank)`` angles for full-column-rank ``A`` (``[n, a]``) and ``B`` (``[n, b]``): QR of
    each, then the singular values of ``Q_Aᵀ Q_B`` (cosines) and of ``Q_B − Q_A Q_Aᵀ Q_B``
    (sines); small angles come from the sines, large ones from the cosines (Knyazev & Argentati
    2002), as in ``scipy.linalg.subspace_angles`` (which lists them in descending order).
    """
    if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[0]:
        raise ValueError(
            f"need two matrices with the same number of rows, got {tuple(A.shape)}, {tuple(B.shape)}"
        )
    qa = torch.linalg.qr(A).Q
    qb = torch.linalg.qr(B).Q
    if qa.shape[1] < qb.shape[1]:
        qa, qb = qb, qa
    m = qa.mT @ qb
    cos = torch.linalg.svdvals(m).clamp(-1, 1)  # descending → ascending angles
    sin = torch.linalg.svdvals(qb - qa @ m).flip(0).clamp(-1, 1)  # ascending
    return torch.where(cos**2 >= 0.5, torch.arcsin(sin), torch.arccos(cos))


# ------------------------------------------------------------------------------ Davis–Kahan


@dataclass(frozen=True, eq=False)
class DavisKahan:
    """Angles between the top eigenvectors of ``P`` and ``Q = P + Δ`` and their Davis–Kahan bounds.

    ``sin_vec[..., r]``: ``sin θ_r = √(1 − (v_rᵀṽ_r)²)`` for ``r = 1 … q``; ``bound_vec``: the
    single-vector bound ``‖Δ‖₂ / δ_r`` with ``δ_r = min_{s≠r} |λ̃_s − λ_r|`` (Eq. 56 of the
    Hessian paper; ``inf`` where ``δ_r = 0``); ``sin_sub[..., j]``: ``‖sin Θ(Ṽ, V)‖_F`` of the
    top-``s`` subspaces for ``s = s_values[j]``; ``bound_sub``: ``2 min(√s ‖Δ‖₂, ‖Δ‖_F) / (λ_s − λ_{s+1})``
    (Eqs. 57–59, Yu, Wang & Samworth 2015; ``inf`` where the gap is 0).
    """

    sin_vec: torch.Tensor
    bound_vec: torch.Tensor
    sin_sub: torch.Tensor
    bound_sub: torch.Tensor
    s_values: tuple[int, ...]

    @property
    def cos_vec(self) -> torch.Tensor:
        return (1 - self.sin_vec.square()).clamp_min(0).sqrt()


def davis_kahan(
    p_vals: torch.Tensor,
    p_vecs: torch.Tensor,
    q_vals: torch.Tensor,
    q_vecs: torch.Tensor,
    delta_2: torch.Tensor,
    delta_fro: torch.Tensor,
    *,
    s_values: Sequence[int] = (1, 2, 3),
) -> DavisKahan:
    """Davis–Kahan comparison of the top eigenvectors of ``P`` (``p_vals`` ``[..., a]`` descending,
    at least ``max(s_values) + 1`` of them; ``p_vecs`` ``[..., p, q]`` the top ``q`` orthonormal
    eigenvectors) and of ``Q = P + Δ`` (``q_vals`` ``[..., p]``: ALL eigenvalues of ``Q``, descending,
    since ``δ_r`` looks at every one; ``q_vecs`` ``[..., p, q]``), given ``‖Δ‖₂`` and ``‖Δ‖_F``
    (``[...]``). Every returned bound is a theorem: ``sin ≤ bound`` up to rounding."""
    q = p_vecs.shape[-1]
    if q_vecs.shape[-1] != q:
        raise ValueError("p_vecs and q_vecs must hold the same number of eigenvectors")
    s_values = tuple(int(s) for s in s_values)
    if max(s_values) > min(q, p_vals.shape[-1] - 1):
        raise ValueError(f"s_values up to {max(s_values)} need that many eigenvectors and one more eigenvalue of P")
    dots = (p_vecs * q_vecs).sum(-2)  # [..., q]
    sin_vec = (1 - dots.square()).clamp_min(0).sqrt()
    lam = p_vals[..., :q]
    diff = (q_vals.unsqueeze(-2) - lam.unsqueeze(-1)).abs()  # [..., q, p]
    idx = torch.arange(q, device=diff.device)
    diff[..., idx, idx] = float("inf")  # s ≠ r
    delta_r = diff.amin(-1)
    bound_vec = delta_2.unsqueeze(-1) / delta_r
    sin_sub, bound_sub = [], []
    for s in s_values:
        overlap = (p_vecs[..., :s].mT @ q_vecs[..., :s]).square().sum((-2, -1))
        sin_sub.append((s - overlap).clamp_min(0).sqrt())
        gap = p_vals[..., s - 1] - p_vals[..., s]
        num = 2 * torch.minimum(s**0.5 * delta_2, delta_fro)
        bound_sub.append(num / gap)
    return DavisKahan(sin_vec, bound_vec, torch.stack(sin_sub, -1), torch.stack(bound_sub, -1), s_values)
