"""Principal angles between subspaces (e.g. top eigenspaces at two times)."""

from __future__ import annotations

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


