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

:func:`segment_profile` profiles one segment; :func:`window_profile` profiles every segment of a
window of iterates kept by :func:`sgdbook.trajectory.record_trajectory`, evaluating each end point
once, the interior points in chunks, and the noise once per window (:func:`window_losses` has the
evaluation modes: the whole data set, one fixed partition, or a fresh partition per point as in
the authors' code; batch norm with batch statistics or interpolated running statistics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, vmap

import copy

from .functional import check_bn_mode, evaluation_copy, flat_loss, functional_view, has_batch_norm


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


# ----------------------------------------------------------------------------- windows of a trajectory


@dataclass(frozen=True)
class WindowProfile:
    """The loss along every segment ``θ_s → θ_{s+1}`` of a window of iterates, and what it shows.

    ``losses[s, j]`` is the loss at ``θ_s^{α_j}``; ``alphas`` includes both ends. Per segment:
    ``floor`` (the minimum over the grid), ``floor_alpha``, ``interior`` (the minimum lies
    strictly inside and below both ends by more than ``tol``), ``height`` (the paper's Table 2,
    ``(L_s + L_{s+1} − 2 floor)/2``), ``excess`` (``max`` over interior points ``− max(L_s,
    L_{s+1})``, the barrier's size), ``barrier`` (``excess > tol``) and ``raw_barrier``
    (``excess > 0``, no tolerance). ``floor_rise[s]``: the floor of segment ``s + 1`` is above
    that of segment ``s`` by more than ``tol``; ``both_interior[s]``: both have an interior
    minimum (the pairs joined by the paper's dashed line). ``noise``: the largest spread
    (max − min) of the window's first and last iterate over repeated evaluations (exactly 0 for
    a deterministic evaluation); ``tol = noise_factor · noise + atol + rtol · max |L|``.
    """

    alphas: torch.Tensor
    losses: torch.Tensor
    floor: torch.Tensor
    floor_alpha: torch.Tensor
    interior: torch.Tensor
    height: torch.Tensor
    excess: torch.Tensor
    barrier: torch.Tensor
    raw_barrier: torch.Tensor
    floor_rise: torch.Tensor
    both_interior: torch.Tensor
    loss_range: torch.Tensor
    noise: float
    tol: float

    @property
    def segments(self) -> int:
        return self.losses.shape[0]

    def counts(self) -> dict[str, float]:
        """Plain-number summary: segments, interior minima, barriers (with and without the
        tolerance), floor rises (all pairs, and pairs of interior minima), mean height, the
        largest excess, the noise and the median loss range along a segment."""
        pairs = int(self.both_interior.sum())
        return {
            "segments": self.segments,
            "interior": int(self.interior.sum()),
            "interior_fraction": float(self.interior.double().mean()),
            "barriers": int(self.barrier.sum()),
            "raw_barriers": int(self.raw_barrier.sum()),
            "floor_rises": int(self.floor_rise.sum()),
            "floor_rises_interior": int((self.floor_rise & self.both_interior).sum()),
            "interior_pairs": pairs,
            "mean_height": float(self.height.mean()),
            "max_excess": float(self.excess.max()),
            "noise": float(self.noise),
            "median_range": float(self.loss_range.median()),
        }


def segment_stats(losses: torch.Tensor, alphas: torch.Tensor | None = None, tol: float = 0.0) -> dict[str, torch.Tensor]:
    """The definitions of :class:`WindowProfile` on a ``[S, k]`` array of segment losses (ends included)."""
    if losses.ndim != 2 or losses.shape[1] < 3:
        raise ValueError(f"losses must be [segments, k >= 3] with both ends included, got {tuple(losses.shape)}")
    k = losses.shape[1]
    if alphas is None:
        alphas = torch.linspace(0, 1, k, dtype=torch.float64, device=losses.device)
    l0, l1 = losses[:, 0], losses[:, -1]
    inner = losses[:, 1:-1]
    floor, i_min = losses.min(dim=1)
    inner_min = inner.min(dim=1).values
    excess = inner.max(dim=1).values - torch.maximum(l0, l1)
    interior = (i_min > 0) & (i_min < k - 1) & (inner_min < torch.minimum(l0, l1) - tol)
    return {
        "floor": floor,
        "floor_alpha": alphas[i_min],
        "interior": interior,
        "height": (l0 + l1 - 2 * floor) / 2,
        "excess": excess,
        "barrier": excess > tol,
        "raw_barrier": excess > 0,
        "floor_rise": floor[1:] > floor[:-1] + tol,
        "both_interior": interior[1:] & interior[:-1],
        "loss_range": losses.max(dim=1).values - floor,
    }


def _eval_setup(model: nn.Module, bn_mode: str | None, dtype: torch.dtype | None):
    """The functional view used to evaluate ``model`` at many flat parameter vectors, and whether
    batch norm's running statistics must be supplied (``bn_mode="eval"`` on a model with BN)."""
    check_bn_mode(bn_mode)
    has_bn = has_batch_norm(model)
    if has_bn and bn_mode is None:
        raise ValueError(
            "the model has batch norm: say bn_mode='train' (statistics of the evaluation batch) "
            "or bn_mode='eval' (running statistics, interpolated between the stored buffers)"
        )
    if dtype is not None and next(model.parameters()).dtype != dtype:
        model = copy.deepcopy(model).to(dtype)
    model = evaluation_copy(model)  # evaluation runs without gradients: max-pools without indices
    view = functional_view(model, bn_mode if has_bn else "eval")
    if not has_bn and view.module is model:  # a copy in eval mode: dropout off, the model's flag untouched
        from .functional import sharing_copy

        view = functional_view(sharing_copy(model).eval(), "eval")
    return view, has_bn and bn_mode == "eval"


def window_losses(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    thetas: torch.Tensor,
    *,
    n_alpha: int = 11,
    bn_mode: str | None = None,
    buffers: dict[str, torch.Tensor] | None = None,
    eval_batch: int | None = None,
    reshuffle: bool = False,
    generator: torch.Generator | None = None,
    method: str = "loop",
    chunk: int = 8,
    dtype: torch.dtype | None = None,
    end_losses: torch.Tensor | None = None,
) -> torch.Tensor:
    """Losses ``[S, n_alpha]`` (float64) on the segments between consecutive rows of ``thetas``
    (``[S + 1, d]``), at ``α`` = ``linspace(0, 1, n_alpha)``.

    Every end point is evaluated once and shared by the two segments that meet there (or taken
    from ``end_losses``, ``[S + 1]``, e.g. the full-batch losses GD logged); the
    ``S (n_alpha − 2)`` interior points are evaluated in chunks of ``chunk`` parameter vectors,
    one forward pass each (``method="loop"``) or one ``vmap`` over the chunk (``"vmap"``).

    Evaluation modes. Without ``eval_batch`` the whole of ``x`` is one batch. With it, the data
    are cut into batches of ``eval_batch`` and the loss is their size-weighted mean: one fixed
    partition (a permutation drawn once from ``generator``, or the given order) or, with
    ``reshuffle=True``, a fresh random partition at every point (the authors' code; needs a
    generator and ``method="loop"``). Batch norm (``bn_mode``, required for a model with batch
    norm): ``"train"`` normalises with each evaluation batch's statistics, ``"eval"`` with
    running statistics interpolated linearly between the buffers stored at ``θ_s`` and
    ``θ_{s+1}`` (``buffers``, stacked ``[S + 1, ...]``, required). ``dtype`` evaluates a copy
    of the model and the data in that precision.
    """
    if n_alpha < 3:
        raise ValueError(f"the grid needs at least 3 points (both ends and one interior point), got n_alpha = {n_alpha}")
    if thetas.ndim != 2 or thetas.shape[0] < 2:
        raise ValueError(f"thetas must be [S + 1, d] with at least two iterates, got {tuple(thetas.shape)}")
    if method not in ("loop", "vmap"):
        raise ValueError(f"method must be 'loop' or 'vmap', got {method!r}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} inputs but {y.shape[0]} targets")
    view, interp_buffers = _eval_setup(model, bn_mode, dtype)
    if interp_buffers and buffers is None:
        raise ValueError("bn_mode='eval' needs the running statistics at every iterate: pass buffers (Window.buffers)")
    if thetas.shape[1] != view.d:
        raise ValueError(f"thetas have {thetas.shape[1]} columns but the model has {view.d} trainable parameters")
    if reshuffle and (eval_batch is None or generator is None):
        raise ValueError("reshuffle=True needs eval_batch and a generator")
    if reshuffle and method != "loop":
        raise ValueError("reshuffle=True (a fresh partition per point) needs method='loop'")
    if eval_batch is not None and generator is None and reshuffle:
        raise ValueError("eval_batch with reshuffle needs a generator")
    work = dtype or thetas.dtype
    thetas = thetas.to(work)
    x = x.to(work) if x.is_floating_point() else x
    n = x.shape[0]
    S = thetas.shape[0] - 1
    alphas = torch.linspace(0, 1, n_alpha, dtype=work, device=thetas.device)
    float_bufs = {}
    if interp_buffers:
        float_bufs = {k: v for k, v in buffers.items()}

    def bufs_at(s: torch.Tensor, a: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """Buffers at points (segment s, α a), batched over the leading dimension."""
        if not interp_buffers:
            return None
        out = {}
        for k, v in float_bufs.items():
            lo, hi = v[s], v[torch.clamp(s + 1, max=S)]
            if v.is_floating_point():
                shape = (-1,) + (1,) * (v.ndim - 1)
                out[k] = (lo + a.view(shape).to(v.dtype) * (hi - lo)).to(work)
            else:
                out[k] = lo
        return out

    def partition() -> list:
        if eval_batch is None:
            return [slice(None)]
        order = torch.randperm(n, generator=generator, device=generator.device).to(x.device) if generator is not None else torch.arange(n, device=x.device)
        return [order[i : i + eval_batch] for i in range(0, n, eval_batch)]

    fixed = None if reshuffle else [(x[i], y[i]) for i in partition()]

    def loss_one(theta, b):
        batches = fixed if fixed is not None else [(x[i], y[i]) for i in partition()]
        total = 0.0
        for xb, yb in batches:
            state = view.unflatten(theta) if b is None else {**view.unflatten(theta), **b}
            total = total + loss_fn(functional_call(view.module, state, (xb,)), yb).double() * yb.shape[0]
        return total / n

    def evaluate(points_s: torch.Tensor, points_a: torch.Tensor) -> torch.Tensor:
        out = torch.empty(points_s.shape[0], dtype=torch.float64, device=thetas.device)
        with torch.no_grad():
            for c in range(0, points_s.shape[0], chunk):
                s, a = points_s[c : c + chunk], points_a[c : c + chunk]
                lo = thetas[s]
                hi = thetas[torch.clamp(s + 1, max=S)]
                th = lo + a[:, None] * (hi - lo)
                bb = bufs_at(s, a)
                if method == "loop":
                    for r in range(th.shape[0]):
                        out[c + r] = loss_one(th[r], None if bb is None else {k: v[r] for k, v in bb.items()})
                else:
                    out[c : c + th.shape[0]] = vmap(loss_one, in_dims=(0, None if bb is None else 0))(th, bb)
        return out

    losses = torch.empty(S, n_alpha, dtype=torch.float64, device=thetas.device)
    if end_losses is not None:
        if end_losses.shape != (S + 1,):
            raise ValueError(f"end_losses must have shape ({S + 1},), got {tuple(end_losses.shape)}")
        ends = end_losses.to(torch.float64)
    else:
        idx = torch.arange(S + 1, device=thetas.device)
        ends = evaluate(idx, torch.zeros(S + 1, dtype=work, device=thetas.device))
    losses[:, 0], losses[:, -1] = ends[:-1], ends[1:]
    ss = torch.arange(S, device=thetas.device).repeat_interleave(n_alpha - 2)
    aa = alphas[1:-1].repeat(S)
    losses[:, 1:-1] = evaluate(ss, aa).view(S, n_alpha - 2)
    return losses


def window_profile(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    thetas: torch.Tensor,
    *,
    n_alpha: int = 11,
    bn_mode: str | None = None,
    buffers: dict[str, torch.Tensor] | None = None,
    eval_batch: int | None = None,
    reshuffle: bool = False,
    generator: torch.Generator | None = None,
    method: str = "loop",
    chunk: int = 8,
    dtype: torch.dtype | None = None,
    end_losses: torch.Tensor | None = None,
    noise_repeats: int = 2,
    noise_factor: float = 3.0,
    atol: float = 0.0,
    rtol: float = 1e-9,
) -> WindowProfile:
    """:func:`window_losses` and the per-segment statistics of :class:`WindowProfile`.

    The evaluation noise is measured once per window: the first and last iterate are evaluated
    ``noise_repeats`` more times under the same mode (fresh partitions when ``reshuffle``) and
    the largest spread is the noise (0 for a deterministic mode: the check that re-evaluating a
    point gives the same number).
    """
    kw = dict(n_alpha=n_alpha, bn_mode=bn_mode, buffers=buffers, eval_batch=eval_batch, reshuffle=reshuffle,
              generator=generator, method=method, chunk=chunk, dtype=dtype)
    losses = window_losses(model, loss_fn, x, y, thetas, end_losses=end_losses, **kw)
    ends = torch.stack([thetas[0], thetas[-1]])
    eb = None if buffers is None else {k: torch.stack([v[0], v[-1]]) for k, v in buffers.items()}
    kw.update(n_alpha=3, buffers=eb)
    reps = [window_losses(model, loss_fn, x, y, ends, **kw)[0, [0, -1]] for _ in range(noise_repeats)]
    if end_losses is None:  # the window's own evaluation of its ends is one more repeat
        reps.append(torch.stack([losses[0, 0], losses[-1, -1]]))
    allv = torch.stack(reps) if reps else losses.new_zeros(1, 2)
    noise = float((allv.max(0).values - allv.min(0).values).max())
    tol = noise_factor * noise + atol + rtol * float(losses.abs().max())
    alphas = torch.linspace(0, 1, n_alpha, dtype=torch.float64, device=losses.device)
    st = segment_stats(losses, alphas, tol)
    return WindowProfile(alphas=alphas, losses=losses, noise=noise, tol=tol, **st)
