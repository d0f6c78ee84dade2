"""Shared helpers of the curvature estimators: operator spaces, probe vectors, orthogonalisation."""

from __future__ import annotations

from collections.abc import Callable

import torch

Operator = Callable[[torch.Tensor], torch.Tensor]

def _space(hvp, p: int, dtype, device, like: torch.Tensor | None = None):
    """dtype and device of the operator's vectors: explicit, else from ``like``, else the operator."""
    if like is not None:
        dtype = dtype or like.dtype
        device = device or like.device
    dtype = dtype or getattr(hvp, "dtype", None) or torch.get_default_dtype()
    device = torch.device(device or getattr(hvp, "device", None) or "cpu")
    op_p = getattr(hvp, "p", None)
    if op_p is not None and op_p != p:
        raise ValueError(f"p = {p} but the operator acts on vectors of length {op_p}")
    return dtype, device


def _apply_block(hvp, V: torch.Tensor) -> torch.Tensor:
    """``H`` applied to the rows of ``V``: batched where the operator has ``batch``."""
    if hasattr(hvp, "batch"):
        return hvp.batch(V)
    return torch.stack([hvp(v) for v in V])  # plain callables (autograd inside is not vmappable)


def _gaussian(shape, generator: torch.Generator, dtype, device) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=dtype, device=generator.device).to(device)


def _rademacher(shape, generator: torch.Generator, dtype, device) -> torch.Tensor:
    z = torch.randint(0, 2, shape, generator=generator, device=generator.device, dtype=dtype)
    return z.mul_(2).sub_(1).to(device)


def _start_vector(v0, generator, p: int, dtype, device) -> torch.Tensor:
    if v0 is None:
        return _gaussian((p,), generator, dtype, device)
    if v0.numel() != p:
        raise ValueError(f"v0 has {v0.numel()} entries, expected p = {p}")
    return v0.reshape(-1).to(device, dtype)


def _default_generator(generator: torch.Generator | None) -> torch.Generator:
    # a fresh, fixed-seed generator: reproducible and independent of the global RNG
    return generator if generator is not None else torch.Generator().manual_seed(0)


def _orthogonalize(w: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Classical Gram–Schmidt twice ("twice is enough") of ``w`` against the rows of ``V``."""
    h = V @ w
    w = w - h @ V
    h2 = V @ w
    return w - h2 @ V, h + h2


