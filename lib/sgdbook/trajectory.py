"""Record a GD or SGD trajectory on a flat parameter vector, for the loss along each step.

:func:`record_trajectory` runs plain gradient descent (the whole data set every step) or SGD
(a fresh permutation every epoch, the last incomplete minibatch dropped, as
:func:`sgdbook.training.sgd_train`) on ``θ``, the model's trainable parameters flattened in
``named_parameters`` order (the layout of :func:`sgdbook.gradients.flat_parameters`), with a
learning-rate schedule and optional isotropic Gaussian gradient noise. Batch normalisation runs
in train mode and its running buffers are updated as ``torch.nn`` does, so the run equals
``torch.optim.SGD`` (no momentum, no weight decay) on ``model.train()`` step for step.

At every step it logs the minibatch loss at ``θ_t``, the norm of the gradient actually used
(noise included), the cosine between consecutive used gradients (the walk-with-sgd paper's
``cos(g_{t−1}, g_t)``), the distance ``‖θ_t − θ_0‖`` and the norm ``‖θ_t‖``. The iterates of
chosen *windows* of steps are kept (with the batch-norm buffers if asked) so that the loss along
their segments can be evaluated afterwards, batched, by :func:`sgdbook.landscape.window_profile`.

The model itself is never changed (parameters, buffers, ``.grad``, ``training`` flags); random
draws come from the explicit generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from .book.progress import progress
from .functional import flat_parameters, functional_view, sharing_copy
from .schedules import ScheduleLike, as_schedule
from .training import DivergenceError, check_model_data

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["Window", "Trajectory", "record_trajectory", "minibatch_gradient_variance", "max_gradient_variance"]


class _TrainingModule:
    """The model as SGD trains it, on a flat ``θ``: a sharing copy (new modules, the model's own
    tensors) in eval mode except batch norm, which normalises with the batch and updates the
    running buffers it is given (the caller's copies, never the model's). Its trainable parameters
    are views of ``theta``, so an in-place update of ``theta`` moves the network; measured 20–30 %
    faster per step on the walk chapters' stand-ins than a ``functional_call`` per step."""

    def __init__(self, model: nn.Module, theta: torch.Tensor, buffers: dict[str, torch.Tensor]) -> None:
        named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("the model has no trainable parameters")
        self.d = sum(p.numel() for _, p in named)
        if theta.shape != (self.d,):
            raise ValueError(f"theta must have shape ({self.d},), got {tuple(theta.shape)}")
        module = sharing_copy(model)
        module.eval()
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()
        views, offset = {}, 0
        for _, p in named:
            views[id(p)] = nn.Parameter(theta[offset : offset + p.numel()].view(p.shape))
            offset += p.numel()
        self.params = list(views.values())
        own = dict(model.named_buffers())
        for k in buffers:
            if k not in own:
                raise ValueError(f"buffer {k!r} is not one of the model's ({', '.join(own) or 'none'})")
        by_id = {id(own[k]): t for k, t in buffers.items()}
        # every name of a tensor (tied weights, shared modules) gets the view / the caller's buffer
        for name, p in list(module.named_parameters(remove_duplicate=False)):
            if id(p) in views:
                prefix, _, leaf = name.rpartition(".")
                module.get_submodule(prefix)._parameters[leaf] = views[id(p)]
        for name, b in list(module.named_buffers(remove_duplicate=False)):
            if id(b) in by_id:
                prefix, _, leaf = name.rpartition(".")
                module.get_submodule(prefix)._buffers[leaf] = by_id[id(b)]
        self.module = module

    def gradient(self, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss on ``(x, y)`` at the current ``θ`` and its flat gradient."""
        value = loss_fn(self.module(x), y)
        grads = torch.autograd.grad(value, self.params, allow_unused=True, materialize_grads=True)  # unused: zero
        return value.detach(), torch.cat([g.reshape(-1) for g in grads])

    def chunked_gradient(self, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor,
                         chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`gradient` over consecutive chunks of ``chunk`` examples, each chunk's loss and
        gradient weighted by its share of the examples (a mean loss's full-batch values without
        batch norm; with it, each chunk is normalised by its own statistics)."""
        n = x.shape[0]
        value, g = None, None
        for i in range(0, n, chunk):
            v, gc = self.gradient(loss_fn, x[i : i + chunk], y[i : i + chunk])
            w = min(chunk, n - i) / n
            value = v * w if value is None else value + v * w
            g = gc.mul_(w) if g is None else g.add_(gc, alpha=w)
        return value, g


@dataclass
class Window:
    """Iterates ``θ_a … θ_b`` (``[b − a + 1, d]``) kept for segment evaluation, with the batch-norm
    buffers at each iterate (stacked, ``{name: [b − a + 1, ...]}``) when they were stored."""

    a: int
    b: int
    thetas: torch.Tensor
    buffers: dict[str, torch.Tensor] | None = None

    @property
    def segments(self) -> int:
        return self.b - self.a


@dataclass
class Trajectory:
    """What :func:`record_trajectory` logged; step ``t`` goes from ``θ_t`` to ``θ_{t+1}``."""

    loss: torch.Tensor  # [T] minibatch loss at θ_t (full-data loss for GD), float64
    grad_norm: torch.Tensor  # [T] ‖g_t‖ of the gradient used (noise included)
    cos: torch.Tensor  # [T] cos(g_{t−1}, g_t); NaN at t = 0 unless prev_grad was given
    dist: torch.Tensor  # [T + 1] ‖θ_t − θ_0‖ (θ_0 = theta0 if given, else the start)
    norm: torch.Tensor  # [T + 1] ‖θ_t‖
    lr: torch.Tensor  # [T] the rate of each step
    theta: torch.Tensor  # [d] the last iterate
    buffers: dict[str, torch.Tensor]  # batch-norm (and other) buffers after the last step
    last_grad: torch.Tensor  # [d] the gradient of the last step (to continue the cosine)
    theta0: torch.Tensor  # [d] the reference of dist
    windows: list[Window] = field(default_factory=list)
    indices: list[torch.Tensor] | None = None  # minibatch indices of every step, if kept
    steps_per_epoch: int = 1

    @property
    def steps(self) -> int:
        return self.loss.shape[0]

    def window(self, a: int, b: int) -> Window:
        for w in self.windows:
            if w.a == a and w.b == b:
                return w
        raise KeyError(f"no stored window ({a}, {b}); stored: {[(w.a, w.b) for w in self.windows]}")

    def continuation(self) -> dict:
        """Keyword arguments that continue this run with :func:`record_trajectory`."""
        return dict(theta=self.theta, buffers=self.buffers, prev_grad=self.last_grad, theta0=self.theta0)


def record_trajectory(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    lr: ScheduleLike,
    generator: torch.Generator,
    batch_size: int | None = None,
    noise_std: float = 0.0,
    theta: torch.Tensor | None = None,
    buffers: dict[str, torch.Tensor] | None = None,
    theta0: torch.Tensor | None = None,
    prev_grad: torch.Tensor | None = None,
    windows: Sequence[tuple[int, int]] = (),
    store_buffers: bool = False,
    keep_indices: bool = False,
    grad_batch: int | None = None,
    run: str = "run",
    show_progress: bool = False,
) -> Trajectory:
    """Run ``steps`` steps of GD (``batch_size=None``) or SGD from ``theta`` (default: the model's
    parameters) and the model's buffers (or ``buffers``), logging the walk (see the module doc).

    ``lr``: a number, a :class:`~sgdbook.schedules.Schedule` or a callable of the step.
    ``noise_std``: σ of isotropic N(0, σ² I) noise added to every gradient (drawn from
    ``generator``). ``windows``: ``(a, b)`` step ranges whose iterates ``θ_a … θ_b`` are kept.
    ``grad_batch``: GD's gradient (and logged loss) accumulated over consecutive chunks of this many
    examples, each chunk's mean weighted by its size (the memory of one chunk's backward pass, not
    the whole set's: the authors' code used 9 chunks of 5,000). Without batch norm the sum is the
    full-batch gradient; with it, each chunk is normalised by its own statistics and the running
    buffers are updated once per chunk. None: one pass over the whole set. SGD ignores it.
    A non-finite loss stops with a :class:`~sgdbook.training.DivergenceError` naming the step.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} inputs but {y.shape[0]} targets")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    check_model_data(model, x)
    n = x.shape[0]
    if batch_size is not None and not 1 <= batch_size <= n:
        raise ValueError(f"batch size {batch_size} must be in [1, {n}] (or None for full-batch GD)")
    if grad_batch is not None and (int(grad_batch) != grad_batch or grad_batch < 1):
        raise ValueError(f"grad_batch must be a positive integer (or None for one pass), got {grad_batch}")
    if noise_std < 0 or noise_std != noise_std:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    for a, b in windows:
        if not 0 <= a < b <= steps:
            raise ValueError(f"window ({a}, {b}) must satisfy 0 <= a < b <= steps = {steps}")
    lrs = as_schedule(lr).values(steps)
    theta = (flat_parameters(model) if theta is None else theta).detach().clone()  # updated in place below
    bufs = {k: v.detach().clone() for k, v in (buffers if buffers is not None else dict(model.named_buffers())).items()}
    fm = _TrainingModule(model, theta, bufs)
    theta0 = theta.clone() if theta0 is None else theta0.detach().clone()
    dtype, device = theta.dtype, theta.device
    spe = 1 if batch_size is None else n // batch_size
    loss = torch.empty(steps, dtype=torch.float64, device=device)
    gnorm = torch.empty(steps, dtype=torch.float64, device=device)
    cos = torch.full((steps,), float("nan"), dtype=torch.float64, device=device)
    dist = torch.empty(steps + 1, dtype=torch.float64, device=device)
    norm = torch.empty(steps + 1, dtype=torch.float64, device=device)
    dist[0] = torch.linalg.vector_norm(theta - theta0)
    norm[0] = torch.linalg.vector_norm(theta)
    lr_list = lrs.tolist()  # Python floats: the update is θ.add(g, alpha=−η), as torch.optim.SGD
    kept: dict[tuple[int, int], list] = {(a, b): [] for a, b in windows}
    kept_buf: dict[tuple[int, int], list] = {(a, b): [] for a, b in windows}
    indices = [] if keep_indices else None
    prev = None if prev_grad is None else prev_grad.detach().to(dtype)
    prev_norm = None if prev is None else torch.linalg.vector_norm(prev)
    perm = None
    check_every = spe if batch_size is not None else 10
    last_checked = 0

    def keep(t: int, th: torch.Tensor) -> None:
        for (a, b), lst in kept.items():
            if a <= t <= b:
                lst.append(th.clone())
                if store_buffers:
                    kept_buf[(a, b)].append({k: v.clone() for k, v in bufs.items()})

    def check(upto: int) -> None:
        seg = loss[last_checked:upto]
        bad = ~torch.isfinite(seg)
        if bool(bad.any()):
            t = last_checked + int(bad.nonzero()[0, 0])
            where = f"step {t + 1} (epoch {t // spe + 1}, step {t % spe + 1} of {spe})" if batch_size else f"GD step {t + 1}"
            raise DivergenceError(f"{run}: non-finite training loss at {where}; lr = {float(lrs[t]):g}")

    keep(0, theta)
    it = range(steps)
    if show_progress:
        it = progress(it, desc=run)
    g = None
    for t in it:
        if batch_size is None:
            xb, yb = x, y
        else:
            if t % spe == 0:
                perm = torch.randperm(n, generator=generator, device=generator.device).to(x.device)
            idx = perm[(t % spe) * batch_size : (t % spe + 1) * batch_size]
            if indices is not None:
                indices.append(idx)
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
        if batch_size is None and grad_batch is not None and grad_batch < n:
            value, g = fm.chunked_gradient(loss_fn, x, y, int(grad_batch))
        else:
            value, g = fm.gradient(loss_fn, xb, yb)
        if noise_std > 0:
            g = g + noise_std * torch.randn(fm.d, generator=generator, device=generator.device, dtype=dtype).to(device)
        gn = torch.linalg.vector_norm(g)
        loss[t] = value
        gnorm[t] = gn
        if prev is not None:
            cos[t] = torch.dot(g, prev) / (gn * prev_norm)
        prev, prev_norm = g, gn
        theta.add_(g, alpha=-lr_list[t])  # the network's parameters are views of theta
        dist[t + 1] = torch.linalg.vector_norm(theta - theta0)
        norm[t + 1] = torch.linalg.vector_norm(theta)
        keep(t + 1, theta)
        if t + 1 - last_checked >= check_every:
            check(t + 1)
            last_checked = t + 1
    check(steps)
    wins = []
    for (a, b), lst in kept.items():
        wb = None
        if store_buffers and bufs:
            wb = {k: torch.stack([d[k] for d in kept_buf[(a, b)]]) for k in bufs}
        wins.append(Window(a, b, torch.stack(lst), wb))
    return Trajectory(
        loss=loss, grad_norm=gnorm, cos=cos, dist=dist, norm=norm, lr=lrs,
        theta=theta.detach(), buffers=bufs, last_grad=g.detach(), theta0=theta0,
        windows=wins, indices=indices, steps_per_epoch=spe,
    )


def minibatch_gradient_variance(
    model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor,
    *, theta: torch.Tensor | None = None, split_at: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-coordinate unbiased variance (divisor K − 1) of the K minibatch gradients
    ``∇ loss_fn(model(x[I_k]), y[I_k])`` for the rows ``I_k`` of ``indices`` (``[K, B]``), at
    ``theta`` (default: the model's parameters). Batch norm uses each minibatch's statistics
    (what SGD sees), without touching any running buffer. ``split_at=h``: also the variances of
    the rows before ``h`` and of the rest, from the same gradients (one pass; the whole set's
    variance accumulated exactly as without it)."""
    if indices.ndim != 2 or indices.shape[0] < 2:
        raise ValueError(f"indices must be [K, B] with K >= 2, got {tuple(indices.shape)}")
    K = indices.shape[0]
    if split_at is not None and not 2 <= split_at <= K - 2:
        raise ValueError(f"split_at must leave at least two rows on each side, got {split_at} of {K}")
    view = functional_view(model, "train")  # batch statistics, no running buffers touched
    th = (flat_parameters(model) if theta is None else theta.detach()).clone()
    mean = torch.zeros(view.d, dtype=torch.float64, device=th.device)
    m2 = torch.zeros_like(mean)
    halves = [[torch.zeros_like(mean), torch.zeros_like(mean), 0] for _ in range(2)] if split_at is not None else None
    for k, row in enumerate(indices):
        row = row.to(x.device)
        t = th.clone().requires_grad_(True)
        out = functional_call(view.module, view.unflatten(t), (x[row],))
        (g,) = torch.autograd.grad(loss_fn(out, y[row]), t)
        g = g.double()
        delta = g - mean
        mean += delta / (k + 1)
        m2 += delta * (g - mean)
        if halves is not None:  # Welford in the half the row belongs to
            h = halves[0 if k < split_at else 1]
            h[2] += 1
            dh = g - h[0]
            h[0] += dh / h[2]
            h[1] += dh * (g - h[0])
    var = m2 / (K - 1)
    if halves is None:
        return var
    return var, halves[0][1] / (halves[0][2] - 1), halves[1][1] / (halves[1][2] - 1)


def max_gradient_variance(
    model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, *,
    batch_size: int, n_batches: int, generator: torch.Generator, theta: torch.Tensor | None = None,
    split: bool = False,
) -> float | tuple[float, float]:
    """The walk-with-sgd paper's "maximum gradient variance": ``max_j Var_i[∂_j f_i]``, estimated as
    ``B (N − 1)/(N − B) · Var_k[ĝ_{k,j}]`` from ``n_batches`` minibatch gradients of size ``B``
    drawn without replacement (unbiased for the per-example variance of a network without batch
    norm; with batch norm, the per-batch statistics are those SGD sees).

    The maximum over ``d`` noisy estimates is biased upward (the authors' code takes it so).
    ``split=True`` also returns a split-sample estimate: the coordinate is chosen on one half of
    the minibatches and its variance measured on the other, both ways, averaged (unbiased for the
    chosen coordinates' variance, so at most the true maximum in expectation)."""
    n = x.shape[0]
    if not 1 <= batch_size < n:
        raise ValueError(f"batch_size must be in [1, {n - 1}], got {batch_size}")
    if split and n_batches < 4:
        raise ValueError(f"split=True needs at least 4 minibatches (two per half), got {n_batches}")
    idx = torch.stack([torch.randperm(n, generator=generator, device=generator.device)[:batch_size] for _ in range(n_batches)])
    def per_example(v: float) -> float:  # minibatch variance → per-example variance (this order of operations, always)
        return v * batch_size * (n - 1) / (n - batch_size)

    if not split:
        return per_example(float(minibatch_gradient_variance(model, loss_fn, x, y, idx, theta=theta).max()))
    var, va, vb = minibatch_gradient_variance(model, loss_fn, x, y, idx, theta=theta, split_at=n_batches // 2)
    return per_example(float(var.max())), per_example(0.5 * float(vb[va.argmax()] + va[vb.argmax()]))
