"""The loss along an SGD step: valley floor, height above it, barriers, with the evaluation noise.

For consecutive iterates ``θ_t → θ_{t+1}`` the walk-with-sgd paper evaluates the training loss at
``θ_t^α = (1 − α) θ_t + α θ_{t+1}`` on a grid of ``α ∈ [0, 1]``. A *barrier* is crossed when some
interior ``α`` has a loss above both endpoints; the *valley floor* is the minimum along the
segment; the *height* is ``(L(θ_t) + L(θ_{t+1}) − 2 L_floor) / 2`` (the paper's Table 2).

Evaluation is deterministic on a fixed data set in a stated batch-norm mode, batched over ``α``
with ``vmap``. Because a noisy evaluation fakes barriers (notes of the paper), every profile
carries the *evaluation noise*: the spread of the same endpoints re-evaluated under the same
mode (with the evaluation batches reshuffled when ``eval_batch`` is set), and a barrier is
reported only when its excess is above that noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.func import vmap

from .functional import flat_loss


@dataclass(frozen=True)
class SegmentProfile:
    alphas: torch.Tensor  # [k], 0 and 1 included
    losses: torch.Tensor  # [k] float64
    floor_alpha: float
    floor_loss: float
    interior_minimum: bool  # the floor lies strictly inside and below both endpoints by more than the noise
    height: float  # (L(θ_t) + L(θ_{t+1}) − 2 L_floor) / 2
    barrier_excess: float  # max over interior α of L − max(L(θ_t), L(θ_{t+1}))
    barrier: bool  # excess above the evaluation noise
    noise: float  # spread of the endpoints' losses over repeated evaluations


def segment_losses(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    thetas: torch.Tensor,
    *,
    bn_mode: str | None = None,
    eval_batch: int | None = None,
    generator: torch.Generator | None = None,
    chunk: int = 16,
) -> torch.Tensor:
    """The loss at each row of ``thetas`` (``[k, d]`` flat parameter vectors), in float64.

    The whole data set is one batch unless ``eval_batch`` is given; then the loss is the
    size-weighted mean over batches in an order drawn from ``generator`` (which matters only in
    batch-norm ``"train"`` mode, where each batch is normalised with its own statistics).
    """
    n = x.shape[0]
    if eval_batch is None:
        order, step = None, n
    else:
        if generator is None:
            raise ValueError("eval_batch needs a generator for the order of the evaluation batches")
        order = torch.randperm(n, generator=generator, device=generator.device).to(x.device)
        step = eval_batch
    total = torch.zeros(thetas.shape[0], dtype=torch.float64, device=thetas.device)
    for start in range(0, n, step):
        idx = slice(start, start + step) if order is None else order[start : start + step]
        xb, yb = x[idx], y[idx]
        f, _ = flat_loss(model, loss_fn, xb, yb, bn_mode=bn_mode)
        vf = vmap(f)
        with torch.no_grad():
            for a in range(0, thetas.shape[0], chunk):
                total[a : a + chunk] += vf(thetas[a : a + chunk]).double() * xb.shape[0]
    return total / n


def segment_profile(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    theta_a: torch.Tensor,
    theta_b: torch.Tensor,
    *,
    n_alpha: int = 11,
    bn_mode: str | None = None,
    eval_batch: int | None = None,
    generator: torch.Generator | None = None,
    noise_repeats: int = 3,
    noise_factor: float = 3.0,
    rtol: float = 1e-9,
) -> SegmentProfile:
    """Profile of the loss on the segment from ``theta_a`` to ``theta_b`` (flat vectors).

    ``n_alpha`` grid points including both endpoints. The noise is the largest spread (max − min)
    of either endpoint's loss over ``noise_repeats`` extra evaluations; a barrier or an interior
    minimum counts only beyond ``noise_factor × noise + rtol × max |L|``.
    """
    if n_alpha < 3:
        raise ValueError("n_alpha must be at least 3 (both endpoints and one interior point)")
    alphas = torch.linspace(0, 1, n_alpha, dtype=theta_a.dtype, device=theta_a.device)
    thetas = theta_a[None] + alphas[:, None] * (theta_b - theta_a)[None]
    kw = dict(bn_mode=bn_mode, eval_batch=eval_batch, generator=generator)
    losses = segment_losses(model, loss_fn, x, y, thetas, **kw)
    ends = torch.stack([theta_a, theta_b])
    again = torch.stack([segment_losses(model, loss_fn, x, y, ends, **kw) for _ in range(noise_repeats)])
    again = torch.cat([again, losses[[0, -1]][None]])
    noise = float((again.max(0).values - again.min(0).values).max())
    l0, l1 = float(losses[0]), float(losses[-1])
    tol = noise_factor * noise + rtol * float(losses.abs().max())
    i_min = int(losses.argmin())
    floor = float(losses[i_min])
    excess = float(losses[1:-1].max()) - max(l0, l1)
    return SegmentProfile(
        alphas=alphas,
        losses=losses,
        floor_alpha=float(alphas[i_min]),
        floor_loss=floor,
        interior_minimum=0 < i_min < n_alpha - 1 and floor < min(l0, l1) - tol,
        height=(l0 + l1 - 2 * floor) / 2,
        barrier_excess=excess,
        barrier=excess > tol,
        noise=noise,
    )
