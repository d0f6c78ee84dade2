"""Model plumbing shared by the estimators: a functional view of a model's parameters, flat
parameter vectors, the loss as a function of one flat vector, and safe copies for ``functional_call``.

- :func:`functional_view` gives the module to call with ``torch.func.functional_call``, the
  parameters that require grad (detached), and their flat layout (``model.named_parameters()``
  order), with batch normalisation in the mode the caller names (``bn_mode``): ``"train"``
  normalises with each batch's statistics (the gradient SGD uses), on a copy whose batch-norm
  modules keep no running statistics, so the model's own are never updated; ``"eval"`` uses the
  running statistics (read only).
- :func:`flat_parameters` / :func:`unflatten` map between a model and one vector of length ``d``.
- :func:`flat_loss` is ``θ ↦ loss_fn(model_θ(x), y)`` for a flat ``θ``.
- :func:`linear_leaves` recognises the Linear/elementwise networks that have hand-written fast paths.

Nothing here changes the caller's model: modes, ``.grad``, buffers and parameters stay as they were.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.func import replace_all_batch_norm_modules_, vmap

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BNMode = Literal["train", "eval"]
BN_MODES = ("train", "eval")


def check_bn_mode(bn_mode: str | None) -> str | None:
    """``bn_mode`` if it is ``"train"``, ``"eval"`` or ``None``; otherwise a clear error."""
    if bn_mode not in (None, *BN_MODES):
        raise ValueError(
            f"bn_mode must be 'train' (batch-norm layers normalise with each batch's statistics) "
            f"or 'eval' (with the running statistics), got {bn_mode!r}"
        )
    return bn_mode


@dataclass(frozen=True)
class FunctionalView:
    """A functional view of the model: the module to call, the parameters, their flat layout."""

    module: nn.Module
    params: dict[str, torch.Tensor]
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]
    d: int
    dtype: torch.dtype
    device: torch.device

    def flatten(self, tensors: dict[str, torch.Tensor], batch: int | None = None) -> torch.Tensor:
        """Concatenate ``{name: [batch?, *shape]}`` into ``[batch?, d]``."""
        if batch is None:
            return torch.cat([tensors[k].reshape(-1) for k in self.names])
        return torch.cat([tensors[k].reshape(batch, -1) for k in self.names], dim=1)

    def unflatten(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``vec`` (``[d]``) shaped like the parameters."""
        return {
            k: vec[o : o + s.numel()].view(s)
            for k, s, o in zip(self.names, self.shapes, self.offsets)
        }


#: Buffers at least this large are asked for transparent huge pages before their first touch.
_HUGE_BYTES = 32 << 20


@functools.cache
def _madvise():
    """``madvise`` from the C library (Linux), or ``None`` where it cannot be had."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def fresh_buffer(rows: int, cols: int, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """An uninitialised ``[rows, cols]`` tensor for a large result such as per-example gradients.

    On Linux CPUs the first touch of every 4 KiB page of a fresh buffer costs a page fault; for a
    per-example gradient matrix of hundreds of MB that costs several times the arithmetic. A
    buffer of at least 32 MiB is therefore marked ``MADV_HUGEPAGE`` before it is written, so that
    the kernel backs it with 2 MiB pages where transparent huge pages are enabled in ``madvise``
    or ``always`` mode (elsewhere the call changes nothing). The values are untouched: the
    buffer is as uninitialised as ``torch.empty``'s.
    """
    out = torch.empty(rows, cols, dtype=dtype, device=device)
    nbytes = out.numel() * out.element_size()
    fn = _madvise() if out.device.type == "cpu" and nbytes >= _HUGE_BYTES else None
    if fn is not None:
        page = 4096
        start = (out.data_ptr() + page - 1) // page * page
        end = (out.data_ptr() + nbytes) // page * page
        if end > start:
            fn(start, end - start, 14)  # MADV_HUGEPAGE; a refusal (EINVAL) only means no huge pages
    return out


def has_batch_norm(model: nn.Module) -> bool:
    """Whether ``model`` holds a batch-normalisation layer."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def reaches_a_module_twice(model: nn.Module) -> bool:
    """Whether some submodule is used at two places (tied weights).

    torch 2.14's ``functional_call`` leaves such a model's parameters replaced by plain tensors
    afterwards (even outside ``vmap``), so the library hands it only a copy (:func:`call_safe`).
    """
    return sum(1 for _ in model.named_modules(remove_duplicate=False)) != sum(1 for _ in model.named_modules())


def sharing_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose modules are new but whose parameter and buffer tensors are the
    model's own (nothing is duplicated): changes to the copy's modules leave the model alone."""
    return copy.deepcopy(model, {id(t): t for t in [*model.parameters(), *model.buffers()]})


class NoIndexMaxPool2d(nn.MaxPool2d):
    """A 2×2, stride-2 max-pool that, when no gradient is being recorded, takes the maximum of the
    four strided views of its input instead of calling ``F.max_pool2d``: the same values (a
    maximum is exact; NaN propagates in both; only the sign of a zero or a NaN may differ where a
    window mixes +0 and −0, or holds −NaN), without the argmax indices that torch's CPU kernel
    computes even under ``no_grad`` (measured 6–13× faster on the walk chapters' CNN feature maps,
    one thread). With gradients recorded it is ``nn.MaxPool2d``, torch's backward included. For
    forward values only: under forward-mode AD without recorded gradients (``torch.func.jvp``
    inside ``no_grad``) its tangent at a tie is the maximum's, not the pool's (:func:`evaluation_copy`
    is used only in no-gradient evaluation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.requires_grad:
            return super().forward(x)
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        x = x[..., :h, :w]
        return torch.maximum(torch.maximum(x[..., 0::2, 0::2], x[..., 1::2, 0::2]),
                             torch.maximum(x[..., 0::2, 1::2], x[..., 1::2, 1::2]))


def _pool_2x2(m: nn.Module) -> bool:
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
    return (type(m) is nn.MaxPool2d and pair(m.kernel_size) == (2, 2) and pair(m.stride or m.kernel_size) == (2, 2)
            and pair(m.padding) == (0, 0) and pair(m.dilation) == (1, 1) and not m.ceil_mode and not m.return_indices)


def evaluation_copy(model: nn.Module) -> nn.Module:
    """``model`` for forward passes without gradients: where it has 2×2 stride-2 max-pools, a
    :func:`sharing_copy` with each replaced by :class:`NoIndexMaxPool2d` (the same outputs up to
    the sign of a zero, faster); otherwise ``model`` itself."""
    if not any(_pool_2x2(m) for m in model.modules()):
        return model
    out = sharing_copy(model)
    for m in list(out.modules()):
        for child_name, child in list(m.named_children()):
            if _pool_2x2(child):
                setattr(m, child_name, NoIndexMaxPool2d(2, 2))
    return out


def call_safe(model: nn.Module) -> nn.Module:
    """``model``, or where it reaches a module twice a :func:`sharing_copy`, for ``functional_call``."""
    return sharing_copy(model) if reaches_a_module_twice(model) else model


def functional_view(model: nn.Module, bn_mode: str, per_example: bool = False) -> FunctionalView:
    """The :class:`FunctionalView` of ``model`` with batch norm in ``bn_mode`` (``"train"`` or
    ``"eval"``; see the module's docstring). ``per_example=True`` refuses ``"train"`` for a
    network with batch norm (one example's loss would depend on the others)."""
    check_bn_mode(bn_mode)
    if bn_mode is None:
        raise ValueError("bn_mode must be 'train' or 'eval'")
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no parameter that requires grad")
    module = model
    has_bn = has_batch_norm(model)
    # batch norm already in eval mode with bn_mode="eval" needs no change of mode: no copy
    bn_as_is = has_bn and bn_mode == "eval" and not any(
        m.training for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    )
    if (has_bn and not bn_as_is) or reaches_a_module_twice(model):
        if has_bn and per_example and bn_mode == "train":
            raise ValueError(
                "per-example gradients of a network with batch normalisation are not defined "
                "with per-batch statistics (each example's loss depends on the others): pass "
                "bn_mode='eval' to use the running statistics"
            )
        # only the copy's modules are changed: the caller's model keeps its modes and statistics
        module = sharing_copy(model)
    if has_bn:
        if bn_mode == "train":
            replace_all_batch_norm_modules_(module)
        else:
            for m in module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    if m.running_mean is None:
                        raise ValueError(
                            "bn_mode='eval' needs batch-norm running statistics; "
                            "this model keeps none"
                        )
                    m.eval()
    names = tuple(k for k, _ in named)
    shapes = tuple(p.shape for _, p in named)
    offsets, o = [], 0
    for s in shapes:
        offsets.append(o)
        o += s.numel()
    p0 = named[0][1]
    return FunctionalView(
        module=module,
        params={k: p.detach() for k, p in named},
        names=names,
        shapes=shapes,
        offsets=tuple(offsets),
        d=o,
        dtype=p0.dtype,
        device=p0.device,
    )


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """The parameters that require grad as one detached vector ``[d]`` (the gradients' layout)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])


def unflatten(model: nn.Module, vec: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split a ``[d]`` vector into views ``{name: tensor}`` shaped like the model's parameters."""
    s = functional_view(model, "eval" if has_batch_norm(model) else "train")
    if vec.shape != (s.d,):
        raise ValueError(f"expected a vector of length {s.d}, got shape {tuple(vec.shape)}")
    return s.unflatten(vec)


def check_data(x: torch.Tensor, y: torch.Tensor) -> int:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} inputs but {y.shape[0]} targets")
    return x.shape[0]


def per_example_losses(loss_fn: LossFn, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[loss_fn(out[i:i+1], y[i:i+1]) for i]`` as one batched call: the per-example losses."""
    return vmap(lambda o, t: loss_fn(o.unsqueeze(0), t.unsqueeze(0)))(out, y)



ELEMENTWISE = (
    nn.Identity,
    nn.Flatten,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.Hardtanh,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.LogSigmoid,
    nn.Tanhshrink,
)  # nn.Flatten reshapes each example on its own; PReLU's weight is excluded below


def sequential_leaves(model: nn.Module, accept) -> list[nn.Module] | None:
    """The leaves of a (nested) ``nn.Sequential`` in forward order when ``accept(leaf)`` holds for
    every one, else None; also None for a module with hooks and for a layer that owns parameters
    and is used twice (shared weights: its gradient sums two uses)."""
    leaves: list[nn.Module] = []

    def walk(mod: nn.Module) -> bool:
        if mod._forward_hooks or mod._forward_pre_hooks:
            return False
        if type(mod) is nn.Sequential:
            return all(walk(c) for c in mod)
        if accept(mod):
            leaves.append(mod)
            return True
        return False

    if not walk(model):
        return None
    owners = [id(m) for m in leaves if any(True for _ in m.parameters(recurse=False))]
    return leaves if len(set(owners)) == len(owners) else None


def linear_leaves(model: nn.Module) -> list[nn.Module] | None:
    """The leaves of a (nested) ``nn.Sequential`` of Linear and elementwise layers, or None."""
    leaves = sequential_leaves(
        model, lambda m: type(m) is nn.Linear or (type(m) in ELEMENTWISE and type(m) is not nn.PReLU))
    return leaves if leaves is not None and any(type(m) is nn.Linear for m in leaves) else None


# ----------------------------------------------------------------------------- the loss


def flat_loss(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    bn_mode: str | None = None,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """``(f, θ₀)``: the loss ``loss_fn(model(x), y)`` as a function of a flat parameter vector.

    ``θ₀`` is a detached copy of the trainable parameters (``requires_grad=True`` ones, in
    ``named_parameters`` order) concatenated; frozen parameters and buffers are used as they
    are. ``f`` evaluates a shallow copy of the model (sharing its parameter and buffer tensors)
    through ``torch.func.functional_call``, so the model itself, its ``training`` flag, its
    ``.grad`` and its buffers are never touched. The copy runs in eval mode (dropout off: ``f``
    is deterministic) except for batch-norm layers, which follow ``bn_mode``:

    - ``"eval"``: normalise with the running statistics;
    - ``"train"``: normalise with the statistics of the batch ``x`` (the training loss), without
      updating any running statistic (``torch.func.replace_all_batch_norm_modules_`` on the copy).

    A model with batch norm needs ``bn_mode`` stated; without batch norm it is ignored.

    Cost: one forward pass of the batch per call of ``f`` (no graph is kept between calls); the
    copy shares the model's tensors, so no parameter memory is duplicated.

    Example::

        f, theta = flat_loss(model, F.cross_entropy, x, y)
        g = torch.func.grad(f)(theta)                  # ∇L(θ₀) as a [d] vector
        f(theta + 0.1 * torch.randn_like(theta))       # the loss at a nearby point
    """
    check_bn_mode(bn_mode)
    has_bn = has_batch_norm(model)
    if has_bn and bn_mode is None:
        raise ValueError("the model has batch norm: say bn_mode='eval' or bn_mode='train'")
    named = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters")
    names = [n for n, _ in named]
    shapes = [q.shape for _, q in named]
    sizes = [q.numel() for _, q in named]
    theta0 = torch.cat([q.detach().reshape(-1) for _, q in named]).clone()

    clone = sharing_copy(model)  # shares every tensor with the model: no parameter memory
    clone.eval()
    if has_bn and bn_mode == "train":
        torch.func.replace_all_batch_norm_modules_(clone)  # drops the copy's running stats only
        for m in clone.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()

    def f(theta: torch.Tensor) -> torch.Tensor:
        params = {n: t.view(s) for n, t, s in zip(names, theta.split(sizes), shapes)}
        return loss_fn(torch.func.functional_call(clone, params, (x,)), y)

    return f, theta0


def materialize(base: nn.Module, params: dict[str, torch.Tensor], run: int | None = None) -> nn.Module:
    """A real module with the architecture of ``base`` (which may live on the meta device, as the
    base of :func:`sgdbook.ensemble.ensemble_sgd` does) holding a copy of ``params`` (``{name:
    tensor}``), or of run ``run`` of a stack ``{name: [R, ...]}``, on their device and dtype.
    Buffers of ``base`` are allocated uninitialised: set them if the architecture has any."""
    first = next(iter(params.values()))
    model = copy.deepcopy(base).to_empty(device=first.device).to(first.dtype)
    with torch.no_grad():
        for k, q in model.named_parameters():
            if k not in params:
                raise ValueError(f"params has no entry for the parameter {k!r} of base")
            q.copy_(params[k] if run is None else params[k][run])
    return model
