"""Plain SGD training with measurement hooks, evaluation, and a clear stop on divergence."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .book.progress import progress
from .functional import evaluation_copy
from .schedules import Schedule, as_schedule


class DivergenceError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the run, epoch and step."""


def log_epochs(max_epoch: int, points: int) -> list[int]:
    """About ``points`` distinct integer epochs from 0 to ``max_epoch``, log-spaced after 1."""
    if max_epoch < 1:
        return [0]
    grid = np.unique(np.round(np.geomspace(1, max_epoch, max(points - 1, 1))).astype(int))
    return [0, *[int(e) for e in grid]]


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Evaluate in eval mode and restore every module's own mode afterwards."""
    modes = [m.training for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in zip(model.modules(), modes):
            m.training = mode


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor, batch: int = 2048) -> dict[str, float]:
    """Mean loss and accuracy over ``(x, y)`` in eval mode (the model's mode is restored)."""
    with eval_mode(model):
        net = evaluation_copy(model)  # the same outputs, max-pools without indices
        total, correct = x.new_zeros((), dtype=torch.float64), x.new_zeros((), dtype=torch.float64)
        for start in range(0, x.shape[0], batch):
            out = net(x[start : start + batch])
            yb = y[start : start + batch]
            total += loss_fn(out, yb).double() * yb.shape[0]
            if out.ndim == 2 and yb.ndim == 1:
                correct += (out.argmax(1) == yb).sum()
    n = x.shape[0]
    return {"loss": float(total / n), "accuracy": float(correct / n)}


def check_model_data(model: nn.Module, x: torch.Tensor, name: str = "the data") -> None:
    """Run the model on two examples (eval mode, no gradient) and turn a shape error into a clear one."""
    try:
        with torch.no_grad(), eval_mode(model):
            model(x[:2])
    except RuntimeError as err:
        first = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))), None)
        shape = tuple(x.shape[1:])
        flatten = any(isinstance(m, nn.Flatten) for m in model.modules())
        conv_fits = (isinstance(first, nn.Conv2d) and len(shape) == 3 and shape[0] == first.in_channels
                     and (isinstance(first.padding, str) or all(
                         s + 2 * p >= d * (k - 1) + 1
                         for s, p, d, k in zip(shape[1:], first.padding, first.dilation, first.kernel_size))))
        linear_fits = isinstance(first, nn.Linear) and (
            shape[-1] == first.in_features or (flatten and x[0].numel() == first.in_features))
        if conv_fits or linear_fits:  # the first layer takes them: a later one does not
            raise ValueError(
                f"{type(model).__name__} does not fit {name}: its first layer takes inputs of shape {shape} (per "
                f"example), but a later layer fails on them"
                + ("; the images may be too small for its pooling" if conv_fits else "") + f" ({err})"
            ) from err
        expects = (
            f"{first.in_features} input features" if isinstance(first, nn.Linear)
            else f"{first.in_channels} input channels" if isinstance(first, nn.Conv2d) else "another shape"
        )
        raise ValueError(
            f"{type(model).__name__} does not fit {name}: inputs of shape {shape} "
            f"(per example), while its first layer expects {expects} ({err})"
        ) from err


@dataclass
class TrainResult:
    """Per-epoch mean training loss, the measurements taken by the hook, and the steps taken."""

    epoch_loss: list[float]
    measurements: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    stopped_at: int | None = None  # the epoch after which ``stop`` ended training (None: ran all epochs)


def sgd_train(
    model: nn.Module,
    loss_fn: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float | Schedule | Callable[[int], float],
    batch_size: int,
    epochs: int,
    generator: torch.Generator,
    measure_at: Sequence[int] = (),
    measure: Callable[[int, nn.Module], dict[str, Any]] | None = None,
    run: str = "run",
    show_progress: bool = True,
    optimizer: str = "sgd",
    stop: Callable[[int, nn.Module], bool] | None = None,
) -> TrainResult:
    """Train ``model`` in place with plain SGD (no momentum, no weight decay), shuffling each epoch.

    ``optimizer="gd"`` takes full-batch gradient steps (``batch_size`` is then ignored: one step
    per epoch on all examples); ``optimizer="adam"`` uses ``torch.optim.Adam`` with ``lr`` and
    its default betas, for the papers that train with Adam. ``lr`` is a number, a
    :class:`sgdbook.schedules.Schedule` or a callable of the global step (0-based): the rate is set
    before every step (checked finite and ``>= 0`` over all the steps before training starts).

    ``measure(epoch, model)`` is called at every epoch in ``measure_at`` (0 = before training)
    and its dict is stored with the epoch. ``stop(epoch, model)`` is asked after every epoch
    (e.g. "training accuracy above 99.9 %"); when it answers True the epoch is measured (if a
    ``measure`` is given, whether or not the epoch is in ``measure_at``), ``stopped_at`` is set
    and training ends. A non-finite loss stops training at the end of the epoch with a
    :class:`DivergenceError` naming ``run``, the epoch and the first bad step.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} inputs but {y.shape[0]} targets")
    check_model_data(model, x)
    n = x.shape[0]
    if optimizer == "gd":
        batch_size = n
    if not 0 < batch_size <= n:
        raise ValueError(f"batch size {batch_size} must be in [1, {n}]")
    steps_per_epoch = n // batch_size  # drop the last incomplete minibatch
    schedule = as_schedule(lr)
    rates = schedule.values(epochs * steps_per_epoch).tolist()  # checked before any step
    lr0 = rates[0] if rates else 0.0
    if optimizer in ("sgd", "gd"):
        opt = torch.optim.SGD(model.parameters(), lr=lr0)
    elif optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr0)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}: use 'sgd', 'gd' or 'adam'")
    measure_at = set(int(e) for e in measure_at)
    result = TrainResult(epoch_loss=[])

    def take(epoch: int) -> None:
        if measure is not None and epoch in measure_at:
            result.measurements.append({"epoch": epoch, **measure(epoch, model)})

    take(0)
    model.train()
    epochs_iter = progress(range(1, epochs + 1), desc=f"training {run}") if show_progress else range(1, epochs + 1)
    for epoch in epochs_iter:
        perm = torch.randperm(n, generator=generator, device=generator.device).to(x.device)
        losses = torch.empty(steps_per_epoch, device=x.device)
        for step in range(steps_per_epoch):
            idx = perm[step * batch_size : (step + 1) * batch_size]
            for group in opt.param_groups:
                group["lr"] = rates[result.steps + step]
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses[step] = loss.detach()
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0, 0])
            raise DivergenceError(
                f"{run}: non-finite training loss at epoch {epoch}, step {first + 1} of {steps_per_epoch} "
                f"(global step {result.steps + first + 1}; lr = {schedule.describe()}, batch = {batch_size})"
            )
        result.steps += steps_per_epoch
        result.epoch_loss.append(float(losses.mean()))
        if stop is not None and stop(epoch, model):
            result.stopped_at = epoch
            measure_at.add(epoch)
            take(epoch)
            break
        take(epoch)
    for p in model.parameters():
        p.grad = None
    return result
