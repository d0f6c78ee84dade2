"""Per-example and minibatch gradients, and their moments.

Conventions (notation of the vmf-directional paper, with gradients instead of negative gradients;
every second moment below is invariant to the sign):

- ``loss_fn(output, target)`` is the loss of a batch, e.g. ``torch.nn.functional.cross_entropy``
  (a mean over the batch). The *per-example* loss ``f_i`` is ``loss_fn`` on a batch of one, so a
  per-example gradient never carries the batch's ``1/N`` (BackPACK's per-example gradients do),
  whichever reduction ``loss_fn`` uses.
- A *minibatch gradient* ``ĝ = ∇ loss_fn(model(x[I]), y[I])`` for an index set ``I`` of size ``m``:
  for a mean-reduced loss and a network without batch normalisation ``ĝ = (1/m) Σ_{i∈I} ∇f_i``.
- Gradients are taken with respect to the parameters that require grad, in
  ``model.named_parameters()`` order, flattened and concatenated into vectors of length ``d``
  (:func:`flat_parameters` and :func:`unflatten` use the same layout).
- Batch normalisation (``bn_mode``, see :mod:`sgdbook.functional`): ``"train"`` normalises with
  the statistics of each minibatch (the gradient SGD uses) without touching the model's running
  statistics; ``"eval"`` uses the running statistics (read only). A per-example gradient is
  defined only in ``"eval"`` mode for a network with batch norm.

Every function is stateless: the model's parameters, buffers, ``.grad`` and ``training`` flags are
left as they were; device and dtype come from the parameters; random draws use the explicit
``torch.Generator``. Stochastic layers (dropout) must be in eval mode (``vmap`` refuses random
operations).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from .directional import kappa_hat as _kappa_hat
from .functional import (
    BNMode,
    FunctionalView,
    LossFn,
    check_data,
    fresh_buffer,
    functional_view,
    has_batch_norm,
    linear_leaves,
    per_example_losses,
)


def _one(t: torch.Tensor) -> torch.Tensor:
    return t.unsqueeze(0)

__all__ = [
    "FinitePopulationMoments",
    "GramMoments",
    "MinibatchMoments",
    "SecondMomentOperator",
    "all_minibatches",
    "finite_population_moments",
    "full_gradient",
    "gram_moments",
    "linear_fast_path_applies",
    "minibatch_grads",
    "minibatch_moments",
    "minibatch_second_moment",
    "per_example_grads",
    "sample_minibatches",
    "second_moment_matrix",
    "second_moment_operator",
    "second_moment_top",
    "stacked_per_example_grads",
]


# ------------------------------------------------------------------ per-example gradients


def linear_fast_path_applies(model: nn.Module) -> bool:
    """Whether :func:`per_example_grads` can use the per-layer outer-product path for ``model``."""
    return linear_leaves(model) is not None


def _linear_per_example(leaves, s: FunctionalView, loss_fn, x, y, out: torch.Tensor) -> None:
    """Per-example gradients of a Linear/elementwise network written into ``out`` (``[n, d]``).

    One forward pass keeps each Linear layer's input ``a_l``; one reverse pass gives the
    per-example back-propagated signals ``δ_l = ∂f_i/∂s_l`` (``s_l`` the layer's output); the
    per-example weight gradient is the outer product ``δ_l a_lᵀ``, the bias gradient ``δ_l``.
    """
    named = dict(s.module.named_parameters())
    where = {id(named[k]): (o, shape) for k, o, shape in zip(s.names, s.offsets, s.shapes)}
    n = x.shape[0]
    with torch.enable_grad():
        h = x.detach()
        inputs, outputs, layers = [], [], []
        for mod in leaves:
            if type(mod) is nn.Linear:
                inputs.append(h.detach())
                z = F.linear(
                    h, mod.weight.detach(), None if mod.bias is None else mod.bias.detach()
                )
                if not z.requires_grad:
                    z.requires_grad_()
                outputs.append(z)
                layers.append(mod)
                h = z
            else:
                h = mod(h)
        total = per_example_losses(loss_fn, h, y).sum()
        signals = torch.autograd.grad(total, outputs)
    for mod, a, delta in zip(layers, inputs, signals):
        if a.ndim > 2:  # a Linear along trailing positions: outer products summed over them
            a = a.reshape(n, -1, a.shape[-1])
            delta = delta.reshape(n, -1, delta.shape[-1])
        if id(mod.weight) in where:
            o, shape = where[id(mod.weight)]
            view = out[:, o : o + shape.numel()].view(n, *shape)
            if a.ndim == 2:
                torch.mul(delta[:, :, None], a[:, None, :], out=view)
            else:
                torch.bmm(delta.transpose(1, 2), a, out=view)
        if mod.bias is not None and id(mod.bias) in where:
            o, shape = where[id(mod.bias)]
            out[:, o : o + shape.numel()] = delta if delta.ndim == 2 else delta.sum(1)


#: Layers whose per-example parameter gradients :func:`_layer_per_example` writes out.
_LAYER_TYPES = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)


def layer_plan(s: FunctionalView) -> list[nn.Module] | None:
    """The modules of ``s.module`` that own the trainable parameters, if every one of them is an
    ``nn.Linear``, an ``nn.Conv2d`` (one group, zero padding given as numbers) or a batch norm in
    eval mode with running statistics, owning only ``weight``/``bias``; else None. No active
    dropout may be present (its randomness would enter the gradients)."""
    plan = []
    trained = {id(p) for p in s.module.parameters() if p.requires_grad}
    for m in s.module.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
            return None
        own = [(k, p) for k, p in m.named_parameters(recurse=False) if id(p) in trained]
        if not own:
            continue
        if type(m) not in _LAYER_TYPES or any(k not in ("weight", "bias") for k, _ in own):
            return None
        if type(m) is nn.Conv2d and (m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str)):
            return None
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None):
            return None
        plan.append(m)
    return plan or None


#: The faster form of a convolution's per-example weight gradients on the CPU, per problem shape
#: (see :func:`_conv_weight_per_example`).
_CONV_FORM: dict[tuple, str] = {}


def conv_forms() -> dict[tuple, str]:
    """The form of per-example convolution weight gradients chosen so far on the CPU, per problem
    shape: ``{(input shape, output-signal shape, kernel, stride, padding, dilation, dtype):
    "grouped" | "unfold"}`` (see :func:`per_example_grads`'s layer path)."""
    return dict(_CONV_FORM)


def _conv_weight_per_example(m: nn.Conv2d, a: torch.Tensor, delta: torch.Tensor, out: torch.Tensor) -> None:
    """Per-example weight gradients of the convolution ``m`` with inputs ``a`` and output signals
    ``delta`` (``[n, ...]``), written into ``out`` (``[n, C_out·C_in·k_h·k_w]``), in one of two equal
    forms: one weight-gradient convolution with the examples as groups (what ``vmap``'s batching
    rule runs), or ``δ`` times the unfolded input (``F.unfold``, im2col) in one batched matrix
    product. Which is faster depends on the shapes in ways no simple rule captured (the
    performance appendix prints the choice for each layer of the chapters' networks), so on the
    CPU both are timed at the first call of a shape (best of three, after a
    warm-up call) and the faster is kept for that shape; on other devices the grouped form."""
    n, cout = delta.shape[:2]

    def grouped():
        shape_only = m.weight.new_zeros(()).expand(n * cout, *m.weight.shape[1:])  # values not read
        return torch.ops.aten.convolution_backward(
            delta.reshape(1, n * cout, *delta.shape[2:]), a.reshape(1, n * a.shape[1], *a.shape[2:]),
            shape_only, None, m.stride, m.padding, m.dilation, False, (0, 0), n, (False, True, False),
        )[1].view(n, -1)

    def unfolded():
        cols = F.unfold(a, m.kernel_size, m.dilation, m.padding, m.stride)  # [n, C_in·k_h·k_w, L]
        return torch.bmm(delta.flatten(2), cols.mT).view(n, -1)

    forms = {"grouped": grouped, "unfold": unfolded}
    if a.device.type != "cpu":
        out.copy_(grouped())
        return
    key = (tuple(a.shape), tuple(delta.shape), m.kernel_size, m.stride, m.padding, m.dilation, a.dtype)
    form = _CONV_FORM.get(key)
    if form is None:  # the first call of each form pays for its allocations; then the best of 3, interleaved
        best = {}
        for name, fn in forms.items():
            fn()
            best[name] = math.inf
        for _ in range(3):
            for name, fn in forms.items():
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
        form = _CONV_FORM[key] = min(best, key=best.get)
    out.copy_(forms[form]())


class _UsedTwice(RuntimeError):
    """A layer of the plan ran twice in one forward pass (shared weights): the layer path does not apply."""


def _layer_per_example(plan, s: FunctionalView, loss_fn, x, y, out: torch.Tensor) -> None:
    """Per-example gradients of a network whose parameters all sit in :func:`layer_plan`'s layers,
    written into ``out`` (``[n, d]``): one batched forward pass (hooks keep each layer's input
    ``a`` and output), one backward pass of ``Σ_i f_i`` for the output signals ``δ``, then per
    layer the per-example products: ``δ aᵀ`` (Linear), a grouped weight-gradient convolution
    or an unfolded product, whichever is faster (Conv2d, :func:`_conv_weight_per_example`), ``Σ δ·â`` and ``Σ δ`` (batch
    norm, ``â`` the input normalised by the running statistics). Examples must not interact in
    the forward pass: the caller checks one row against its own single-example gradient."""
    named = dict(s.module.named_parameters())
    where = {id(named[k]): (o, shape) for k, o, shape in zip(s.names, s.offsets, s.shapes)}
    n = x.shape[0]
    seen: dict[nn.Module, tuple] = {}

    def keep(mod, inputs, output):
        if mod in seen:
            raise _UsedTwice
        seen[mod] = (inputs[0].detach(), output)

    handles = [m.register_forward_hook(keep) for m in plan]
    try:
        with torch.enable_grad():
            logits = s.module(x)
            if loss_fn in (F.cross_entropy, F.nll_loss) and logits.ndim == 2 and y.ndim == 1:
                total = loss_fn(logits, y, reduction="sum")  # Σ_i f_i without vmap's overhead
            else:
                total = per_example_losses(loss_fn, logits, y).sum()
            signals = torch.autograd.grad(total, [seen[m][1] for m in plan], allow_unused=True, materialize_grads=True)
    finally:
        for h in handles:
            h.remove()
    for m, delta in zip(plan, signals):
        a = seen[m][0]
        w_at = where.get(id(m.weight)) if m.weight is not None else None
        b_at = where.get(id(m.bias)) if getattr(m, "bias", None) is not None else None
        w_view = out[:, w_at[0] : w_at[0] + w_at[1].numel()] if w_at else None
        b_view = out[:, b_at[0] : b_at[0] + b_at[1].numel()] if b_at else None
        if type(m) is nn.Linear:
            if a.ndim > 2:
                a, delta = a.reshape(n, -1, a.shape[-1]), delta.reshape(n, -1, delta.shape[-1])
            if w_view is not None:
                if a.ndim == 2:
                    torch.mul(delta[:, :, None], a[:, None, :], out=w_view.view(n, *w_at[1]))
                else:
                    torch.bmm(delta.transpose(1, 2), a, out=w_view.view(n, *w_at[1]))
            if b_view is not None:
                b_view.copy_(delta if delta.ndim == 2 else delta.sum(1))
        elif type(m) is nn.Conv2d:
            if w_view is not None:
                _conv_weight_per_example(m, a, delta, w_view)
            if b_view is not None:
                b_view.copy_(delta.sum((2, 3)))
        else:  # batch norm in eval mode
            shape = (1, -1) + (1,) * (a.ndim - 2)
            dims = tuple(range(2, a.ndim))
            if w_view is not None:
                xhat = (a - m.running_mean.view(shape)) * torch.rsqrt(m.running_var.view(shape) + m.eps)
                prod = delta * xhat
                w_view.copy_(prod.sum(dims) if dims else prod)
            if b_view is not None:
                b_view.copy_(delta.sum(dims) if dims else delta)


#: For each model, the (loss, input shape, dtype, modules) combinations whose layer path passed
#: :func:`_row_matches`: whether examples interact is a property of the forward code, not of the
#: parameter values, so it is checked once per combination (modes are checked at every call by
#: :func:`layer_plan`).
_INDEPENDENT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _row_matches(s: FunctionalView, loss_fn, x, y, row: torch.Tensor) -> bool:
    """Whether ``row`` equals the gradient of example 0's loss computed on its own (a batch of
    one), to rounding: the check that examples do not interact in the batched forward pass."""
    named = dict(s.module.named_parameters())
    with torch.enable_grad():
        g = torch.autograd.grad(loss_fn(s.module(x[:1]), y[:1]), [named[k] for k in s.names], allow_unused=True,
                                materialize_grads=True)
    ref = torch.cat([t.reshape(-1) for t in g])
    tol = (1e-9 if ref.dtype == torch.float64 else 1e-4) * float(torch.linalg.vector_norm(ref)) + 1e-30
    return float(torch.linalg.vector_norm(row - ref)) <= tol


def per_example_grads(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    method: Literal["auto", "vmap", "linear", "layer"] = "auto",
    chunk: int | None = None,
    bn_mode: BNMode = "train",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The gradients ``∇f_i`` of every example's own loss, as rows of an ``[n, d]`` tensor.

    ``f_i = loss_fn(model(x[i:i+1]), y[i:i+1])``: no ``1/n`` factor, whatever the reduction of
    ``loss_fn``; the mean of the rows is the full-batch gradient of a mean-reduced loss.

    Arguments: ``method="vmap"``: ``vmap`` over examples of ``grad`` of the functional model on a
    batch of one; ``method="linear"``: for networks made only of ``nn.Linear`` and elementwise
    layers (nested ``nn.Sequential``), one batched forward and backward pass and per-layer outer
    products ``δ_l a_lᵀ``, written straight into the output; ``method="layer"``: for networks
    whose trainable parameters all sit in Linear, Conv2d and (eval-mode) batch-norm layers, with
    any code between them (residual connections, pooling), one batched forward and backward pass
    and the per-layer per-example products written into the output (example 0's gradient is
    recomputed on its own and compared, at the first call for a model, loss and input shape: a
    model whose examples interact falls back to ``vmap``);
    ``"auto"`` takes the linear path where it applies (:func:`linear_fast_path_applies`), else the
    layer path where it applies (:func:`layer_plan`), else ``vmap``. ``chunk`` bounds the examples
    processed at once (default: all for the linear and layer paths; for the vmap path as many as
    keep each chunk's gradients near 2²³ numbers). A network with batch normalisation needs ``bn_mode="eval"`` (running
    statistics). ``out`` (``[n, d]``, the parameters' dtype and device) is filled and returned
    instead of a fresh tensor: reuse one buffer across repeated calls (a fresh ``n × d`` buffer
    costs first-touch page faults on the CPU; :func:`fresh_buffer` asks for huge pages).

    Returns ``[n, d]`` in the parameters' dtype and device, columns in the flat-parameter layout.
    Cost: ``n · d`` numbers of output; the linear path is one forward and one backward pass of the
    batch plus the outer products; the vmap path about ``n`` single-example passes, batched.
    Timings against BackPACK and plain ``vmap``: the performance appendix.

    Example::

        G = per_example_grads(model, F.cross_entropy, x, y)      # [n, d]
        G.mean(0)                                                # the full-batch gradient
    """
    n = check_data(x, y)
    if method not in ("auto", "vmap", "linear", "layer"):
        raise ValueError(f"unknown method {method!r}: use 'auto', 'vmap', 'linear' or 'layer'")
    s = functional_view(model, bn_mode, per_example=True)
    leaves = linear_leaves(model) if method in ("auto", "linear") else None
    if method == "linear" and leaves is None:
        raise ValueError(
            "method='linear' needs an nn.Sequential of nn.Linear and elementwise layers only"
        )
    plan = layer_plan(s) if leaves is None and method in ("auto", "layer") else None
    if method == "layer" and plan is None:
        raise ValueError(
            "method='layer' needs every trainable parameter in an nn.Linear, nn.Conv2d (one group) or "
            "eval-mode batch-norm layer, and no active dropout"
        )
    if out is None:
        out = fresh_buffer(n, s.d, s.dtype, s.device)
    elif out.shape != (n, s.d) or out.dtype != s.dtype or out.device != s.device:
        raise ValueError(f"out must be a {s.dtype} tensor of shape [{n}, {s.d}] on {s.device}")
    if chunk is not None:
        step = max(1, int(chunk))
    else:
        step = n if (leaves is not None or plan is not None) else max(1, (1 << 23) // s.d)
    if leaves is not None:
        for a in range(0, n, step):
            _linear_per_example(
                leaves, s, loss_fn, x[a : a + step], y[a : a + step], out[a : a + step]
            )
        return out
    if plan is not None:
        try:
            for a in range(0, n, step):
                _layer_per_example(plan, s, loss_fn, x[a : a + step], y[a : a + step], out[a : a + step])
            checked = _INDEPENDENT.setdefault(model, set())
            # the modules themselves are in the key (a layer replaced in place is checked again)
            key = (loss_fn, tuple(x.shape[1:]), x.dtype, tuple(id(m) for m in model.modules()))
            if key in checked or _row_matches(s, loss_fn, x, y, out[0]):
                if min(step, n) >= 2:  # a chunk of one example cannot show examples interacting
                    checked.add(key)
                return out
        except _UsedTwice:
            pass
        if method == "layer":
            raise ValueError("method='layer' does not apply: a layer runs twice, or the examples interact")

    def loss_one(p, xi, yi):
        return loss_fn(functional_call(s.module, p, (_one(xi),)), _one(yi))

    g_fn = vmap(grad(loss_one), in_dims=(None, 0, 0))
    for a in range(0, n, step):
        g = g_fn(s.params, x[a : a + step], y[a : a + step])
        k = min(step, n - a)
        for name, o, shape in zip(s.names, s.offsets, s.shapes):
            out[a : a + k, o : o + shape.numel()] = g[name].reshape(k, -1)
        del g
    return out


def full_gradient(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    chunk: int | None = None,
    bn_mode: BNMode = "train",
) -> torch.Tensor:
    """The full-batch gradient ``g`` as a ``[d]`` vector.

    Without batch normalisation (or with ``bn_mode="eval"``) this is the mean of the per-example
    gradients, ``(1/n) Σ ∇f_i``, summed over chunks of ``chunk`` examples. With per-batch
    statistics (``bn_mode="train"`` on a batch-normalised network) it is the gradient of
    ``loss_fn`` on the whole of ``x`` in one pass (no chunking).
    """
    n = check_data(x, y)
    s = functional_view(model, bn_mode)
    if has_batch_norm(model) and bn_mode == "train":
        if chunk is not None and chunk < n:
            raise ValueError(
                "with bn_mode='train' the full-batch statistics need one pass: chunk must be None"
            )
        g = grad(lambda p: loss_fn(functional_call(s.module, p, (x,)), y))(s.params)
        return s.flatten(g)

    def total(p, xb, yb):
        return per_example_losses(loss_fn, functional_call(s.module, p, (xb,)), yb).sum()

    step = n if chunk is None else max(1, int(chunk))
    acc = torch.zeros(s.d, dtype=s.dtype, device=s.device)
    for a in range(0, n, step):
        acc += s.flatten(grad(total)(s.params, x[a : a + step], y[a : a + step]))
    return acc / n


# ----------------------------------------------------------------------------- minibatches


def sample_minibatches(
    n: int,
    m: int,
    n_s: int,
    generator: torch.Generator,
    *,
    device: torch.device | str | None = None,
    max_elements: int = 1 << 20,
    replacement: bool = False,
) -> torch.Tensor:
    """``n_s`` independent uniform random minibatches of size ``m`` from ``range(n)``: ``[n_s, m]``.

    Each row is drawn without replacement (the ``m`` largest of ``n`` i.i.d. uniform keys, in
    float64), rows independently; with ``replacement=True`` its ``m`` indices are i.i.d. uniform
    (the Hessian paper's "random samples with replacement", for which ``Cov ĝ = Σ/m`` exactly).
    The keys are drawn for blocks of rows of at most ``max_elements`` keys, so memory stays
    bounded for large ``n``. The draw happens on the generator's device; the result is moved to
    ``device`` (default: the generator's).
    """
    if not 1 <= m or (not replacement and m > n):
        raise ValueError(f"minibatch size m = {m} must be in [1, n = {n}] (any m >= 1 with replacement)")
    if n_s < 1:
        raise ValueError(f"n_s = {n_s} must be >= 1")
    if replacement:
        idx = torch.randint(0, n, (n_s, m), generator=generator, device=generator.device)
        return idx if device is None else idx.to(device)
    rows = max(1, max_elements // n)
    parts = []
    for a in range(0, n_s, rows):
        k = min(rows, n_s - a)
        keys = torch.rand(k, n, generator=generator, device=generator.device, dtype=torch.float64)
        parts.append(keys.topk(m, dim=1, sorted=False).indices)
    idx = torch.cat(parts) if len(parts) > 1 else parts[0]
    return idx if device is None else idx.to(device)


def all_minibatches(
    n: int, m: int, device: torch.device | str | None = None, *, replacement: bool = False
) -> torch.Tensor:
    """Every ``m``-subset of ``range(n)`` as a ``[C(n, m), m]`` index tensor (exact enumeration).

    Lexicographic order, grown one position at a time (``m`` batched steps), so memory is
    ``C(n, m) · m`` integers (``torch.combinations`` forms an ``n^m`` grid first).
    With ``replacement=True``: every ordered ``m``-tuple, ``[n^m, m]`` in lexicographic order,
    each as likely as any other under i.i.d. uniform sampling with replacement (so averages over
    the rows are exact expectations for :func:`sample_minibatches` with ``replacement=True``).
    """
    if replacement:
        if m < 1 or n < 1:
            raise ValueError(f"need n >= 1 and m >= 1, got n = {n}, m = {m}")
        digits = torch.arange(n ** m, device=device)[:, None] // (n ** torch.arange(m - 1, -1, -1, device=device))
        return digits % n
    if not 1 <= m <= n:
        raise ValueError(f"minibatch size m = {m} must be in [1, n = {n}]")
    rows = torch.arange(n - m + 1, device=device)[:, None]
    for k in range(1, m):
        last = rows[:, -1]
        counts = n - m + k - last  # the next entry runs over last + 1 … n − m + k
        offsets = torch.arange(int(counts.sum()), device=device)
        offsets -= torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        nxt = torch.repeat_interleave(last + 1, counts) + offsets
        rows = torch.cat([torch.repeat_interleave(rows, counts, dim=0), nxt[:, None]], dim=1)
    return rows


@dataclass(frozen=True, eq=False)  # tensor fields: compare fields, not objects
class MinibatchMoments:
    """Moments of ``n_s`` minibatch gradients ``ĝ_1 … ĝ_{n_s}`` (each a ``[d]`` vector).

    Normalisation: means over minibatches divide by ``n_s``; the two variances (``trace_cov``,
    ``norm_var``) divide by ``n_s − ddof`` (``ddof = 1``, the unbiased estimates, by default;
    ``ddof = 0`` gives the plug-in values, for which ``trace_cov = mean_sq_norm − ‖mean‖²`` holds
    exactly: use it with :func:`all_minibatches` to get exact population values). ``snr`` and
    ``norm_stochasticity`` are built from these two variances. Standard errors (``*_se``) are
    ``sd/√n_s`` of the per-minibatch terms, through the delta method for the ratios; that of
    ``trace_cov`` uses ``‖ĝ_i − c‖²`` with ``c`` the first chunk's mean in place of the unknown
    ``E ĝ`` (slightly conservative when the first chunk is small). ``rbar`` and ``kappa_hat``
    are the plug-in values over the ``n_s`` directions, with no standard error: compare
    ``kappa_hat`` with its κ = 0 baseline for ``n_s`` draws
    (:func:`sgdbook.directional.uniform_baseline`, about ``d/√n_s``).
    """

    mean: torch.Tensor  # [d] (1/n_s) Σ ĝ_i, estimates E ĝ = g
    mean_norm: float  # E‖ĝ‖
    mean_norm_se: float
    mean_sq_norm: float  # E‖ĝ‖²
    mean_sq_norm_se: float
    trace_cov: float  # tr Cov(ĝ) = E‖ĝ‖² − ‖E ĝ‖² (with the ddof correction)
    trace_cov_se: float
    snr: float  # E‖ĝ‖ / √tr Cov(ĝ) (the paper's inverse gradient stochasticity)
    snr_se: float
    norm_var: float  # Var‖ĝ‖ (divides by n_s − ddof)
    norm_stochasticity: float  # √Var‖ĝ‖ / E‖ĝ‖ (GNS, Sec. 3.1)
    norm_stochasticity_se: float
    resultant: torch.Tensor  # [d] Σ ĝ_i/‖ĝ_i‖
    resultant_length: float  # ‖Σ ĝ_i/‖ĝ_i‖‖
    norms: torch.Tensor  # [n_s] ‖ĝ_i‖ (float64)
    cosines: torch.Tensor | None  # [n_s] cos(u, ĝ_i) when a vector u was given (float64)
    n_s: int
    m: int
    d: int
    ddof: int

    @property
    def norm_snr(self) -> float:
        """``E‖ĝ‖ / √Var‖ĝ‖``, the inverse of the norm stochasticity (the paper's normSNR)."""
        return 1.0 / self.norm_stochasticity

    @property
    def rbar(self) -> float:
        """Mean resultant length ``‖Σ ĝ_i/‖ĝ_i‖‖ / n_s``."""
        return self.resultant_length / self.n_s

    @property
    def kappa_hat(self) -> float:
        """Banerjee et al.'s ``κ̂ = r̄ (d − r̄²) / (1 − r̄²)`` of the normalised minibatch gradients."""
        return float(_kappa_hat(self.rbar, self.d))


def _se(values: torch.Tensor) -> float:
    k = values.numel()
    return float(values.std() / math.sqrt(k)) if k > 1 else float("nan")


def minibatch_moments(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    m: int | None = None,
    n_s: int | None = None,
    generator: torch.Generator | None = None,
    *,
    chunk: int | None = None,
    u: torch.Tensor | None = None,
    bn_mode: BNMode = "train",
    indices: torch.Tensor | None = None,
    ddof: int = 1,
) -> MinibatchMoments:
    """Moments of the gradients of ``n_s`` random minibatches of size ``m`` at the parameters.

    The minibatches are one ``[n_s, m]`` index tensor from :func:`sample_minibatches` (without
    replacement within a minibatch, independent across minibatches), or the given ``indices``
    (e.g. :func:`all_minibatches` for an exact enumeration). Their mean-loss gradients are computed
    ``chunk`` minibatches at a time by ``vmap`` over minibatches of ``grad``, and reduced at once
    into running sums: peak extra memory is about ``chunk · d`` numbers (the chunk's gradients,
    reduced in place) plus the activations of ``chunk · m`` examples and three float64
    ``d``-vectors, never ``n_s · d``. The default ``chunk`` keeps ``chunk · d`` near 2²² numbers
    on CPU (small chunks let the allocator reuse memory instead of faulting in fresh pages) and
    2²⁶ on a GPU. With batch normalisation and ``bn_mode="train"``
    every minibatch uses its own batch statistics. ``u`` (a ``[d]`` vector) adds the cosines
    ``cos(u, ĝ_i)``; ``ddof`` is the divisor's offset of the variances (``n_s − ddof``).

    Returns a :class:`MinibatchMoments`: the mean ``ĝ̄``, the norms ``‖ĝ_i‖``, ``E‖ĝ‖``, ``E‖ĝ‖²``,
    ``tr Cov(ĝ)``, the SNR ``E‖ĝ‖ / √tr Cov``, the norm stochasticity ``sd‖ĝ‖ / E‖ĝ‖``, the
    resultant ``Σ ĝ_i/‖ĝ_i‖``, its mean length ``r̄`` and ``κ̂`` (:func:`sgdbook.directional.kappa_hat`);
    standard errors ``*_se`` for the moments and ratios (not for ``r̄`` and ``κ̂``; see the class).
    Cost: ``n_s`` minibatch gradients
    (``n_s · m`` example passes, batched by ``vmap``). Memory and timings against a stored
    ``n_s × d`` matrix: the performance appendix.

    Numerics: sums are accumulated in float64; ``tr Cov`` is computed from the shifted sums
    ``Σ ‖ĝ_i − c‖²`` and ``Σ (ĝ_i − c)`` with ``c`` the first chunk's mean, which avoids the
    cancellation in ``E‖ĝ‖² − ‖E ĝ‖²`` when the SNR is large. A minibatch gradient of norm zero
    has no direction: the resultant and cosines are then NaN.

    Example::

        r = minibatch_moments(model, F.cross_entropy, x, y, 64, 3000, torch.Generator().manual_seed(0))
        r.kappa_hat, r.snr, r.norm_stochasticity
    """
    n = check_data(x, y)
    if indices is None:
        if m is None or n_s is None or generator is None:
            raise ValueError("give m, n_s and generator, or an index tensor `indices`")
        indices = sample_minibatches(n, m, n_s, generator, device=x.device)
    else:
        if indices.ndim != 2:
            raise ValueError(f"indices must have shape [n_s, m], got {tuple(indices.shape)}")
        indices = indices.to(x.device)
    n_s, m = indices.shape
    if not 0 <= ddof < n_s:
        raise ValueError(f"ddof = {ddof} must be in [0, n_s = {n_s})")
    s = functional_view(model, bn_mode)
    if u is not None:
        if u.shape != (s.d,):
            raise ValueError(f"u must be a vector of length d = {s.d}, got shape {tuple(u.shape)}")
        u = u.to(dtype=s.dtype, device=s.device)
        u_parts = [u[o : o + sh.numel()] for o, sh in zip(s.offsets, s.shapes)]
        u_norm = torch.linalg.vector_norm(u).double()

    def batch_loss(p, xb, yb):
        return loss_fn(functional_call(s.module, p, (xb,)), yb)

    g_fn = vmap(grad(batch_loss), in_dims=(None, 0, 0))
    acc = torch.float64
    norms = torch.empty(n_s, dtype=acc, device=s.device)
    shifted = torch.empty(n_s, dtype=acc, device=s.device)  # ‖ĝ_i − c‖²
    cos = torch.empty(n_s, dtype=acc, device=s.device) if u is not None else None
    sum_shift = torch.zeros(s.d, dtype=acc, device=s.device)  # Σ (ĝ_i − c)
    resultant = torch.zeros(s.d, dtype=acc, device=s.device)
    centre: list[torch.Tensor] | None = None
    if chunk is None:
        budget = 1 << 22 if s.device.type == "cpu" else 1 << 26
        step = max(1, min(n_s, budget // s.d))
    else:
        step = max(1, int(chunk))
    for a in range(0, n_s, step):
        idx = indices[a : a + step]
        k = idx.shape[0]
        g = g_fn(s.params, x[idx], y[idx])
        flat = [g[name].reshape(k, -1) for name in s.names]  # views of buffers we own
        del g
        if centre is None:
            centre = [f.mean(0) for f in flat]
            centre64 = [c.double() for c in centre]
        # every pass below reads the chunk once and allocates nothing of its size: norms by
        # reductions, the shift in place, the two column sums as one [2, k] @ [k, ·] product
        nrm = (
            torch.stack([torch.linalg.vector_norm(f, dim=1) for f in flat], 1).double().norm(dim=1)
        )
        inv = nrm.reciprocal()
        weights = torch.stack([inv, torch.ones_like(inv)]).to(s.dtype)
        inv_sum = inv.sum()
        q = torch.zeros(k, dtype=acc, device=s.device)
        dot = torch.zeros(k, dtype=acc, device=s.device) if u is not None else None
        for j, (f, c, c64, o) in enumerate(zip(flat, centre, centre64, s.offsets)):
            if dot is not None:
                dot += (f @ u_parts[j]).double()
            f = f.sub_(c)  # now ĝ_i − c
            q += torch.linalg.vector_norm(f, dim=1).double() ** 2
            sums = (weights @ f).double()  # Σ (ĝ_i − c)/‖ĝ_i‖ and Σ (ĝ_i − c)
            resultant[o : o + f.shape[1]] += sums[0] + inv_sum * c64
            sum_shift[o : o + f.shape[1]] += sums[1]
        norms[a : a + k] = nrm
        shifted[a : a + k] = q
        if cos is not None:
            cos[a : a + k] = dot / (nrm * u_norm)
        del flat

    c_flat = torch.cat([c.reshape(-1) for c in centre]).double()
    delta = sum_shift / n_s
    mean = c_flat + delta
    scale = n_s / (n_s - ddof)
    q_mean = shifted.mean()
    trace_cov = (q_mean - delta.dot(delta)) * scale
    A = norms.mean()
    sq_norms = norms**2
    V = norms.var(correction=ddof)
    # influence functions (delta method) of the ratios, from the stored per-minibatch scalars
    B0 = trace_cov / scale
    if_snr = (norms - A) / B0.sqrt() - A * (shifted - q_mean) / (2 * B0**1.5)
    V0 = V * (n_s - ddof) / n_s
    if_gns = ((norms - A) ** 2 - V0) / (2 * V0.sqrt() * A) - V0.sqrt() * (norms - A) / A**2
    return MinibatchMoments(
        mean=mean.to(s.dtype),
        mean_norm=float(A),
        mean_norm_se=_se(norms),
        mean_sq_norm=float(sq_norms.mean()),
        mean_sq_norm_se=_se(sq_norms),
        trace_cov=float(trace_cov),
        trace_cov_se=_se(shifted) * scale,
        snr=float(A / trace_cov.sqrt()),
        snr_se=_se(if_snr),
        norm_var=float(V),
        norm_stochasticity=float(V.sqrt() / A),
        norm_stochasticity_se=_se(if_gns),
        resultant=resultant.to(s.dtype),
        resultant_length=float(torch.linalg.vector_norm(resultant)),
        norms=norms,
        cosines=cos,
        n_s=n_s,
        m=m,
        d=s.d,
        ddof=ddof,
    )


# ------------------------------------------------------------ finite-population formulas


@dataclass(frozen=True, eq=False)  # tensor fields: compare fields, not objects
class FinitePopulationMoments:
    """Exact moments of ``ĝ = (1/m) Σ_{i∈I} g_i``, ``I`` a uniform ``m``-subset of ``range(n)``."""

    mean: torch.Tensor  # [d] g = (1/n) Σ g_i = E ĝ
    mean_sq_norm: float  # E‖ĝ‖² = ‖g‖² + trace_cov
    trace_cov: float  # tr Cov(ĝ) = factor · (1/n) Σ ‖g_i − g‖²
    factor: float  # (n − m) / (m (n − 1))
    gamma: float  # max_{i,j} |⟨g_i, g_j⟩| = max_i ‖g_i‖²
    lemma_a1_bound: float  # the paper's 2 (n − m) γ / (m (n − 1)) ≥ E‖ĝ‖² − ‖g‖²
    cov: torch.Tensor | None  # [d, d] Cov(ĝ) when asked for
    n: int
    m: int


def finite_population_moments(
    G: torch.Tensor, m: int, *, matrix: bool = False
) -> FinitePopulationMoments:
    """Exact mean, ``E‖ĝ‖²`` and covariance of a minibatch mean drawn without replacement.

    ``G`` holds the per-example gradients ``g_i`` as rows (``[n, d]``, e.g. from
    :func:`per_example_grads`). With ``Σ_pop = (1/n) Σ (g_i − g)(g_i − g)ᵀ``:
    ``Cov(ĝ) = (n − m)/(m (n − 1)) · Σ_pop`` and ``E‖ĝ‖² = ‖g‖² + tr Cov(ĝ)`` (the exact form of
    the vmf paper's Lemma A.1, whose bound ``lemma_a1_bound`` is loose by at least 2×).
    ``matrix=True`` also returns the ``[d, d]`` covariance.
    """
    if G.ndim != 2:
        raise ValueError(f"G must have shape [n, d], got {tuple(G.shape)}")
    n = G.shape[0]
    if n < 2 or not 1 <= m <= n:
        raise ValueError(f"need n >= 2 and 1 <= m <= n, got n = {n}, m = {m}")
    factor = (n - m) / (m * (n - 1))
    g = G.mean(0)
    centred = G - g
    pop_trace = float(torch.linalg.vecdot(centred, centred).mean())
    gamma = float(torch.linalg.vecdot(G, G).max())
    return FinitePopulationMoments(
        mean=g,
        mean_sq_norm=float(g.dot(g)) + factor * pop_trace,
        trace_cov=factor * pop_trace,
        factor=factor,
        gamma=gamma,
        lemma_a1_bound=2 * factor * gamma,
        cov=(centred.T @ centred) * (factor / n) if matrix else None,
        n=n,
        m=m,
    )


# ----------------------------------------------------------------- second-moment matrix


@dataclass(frozen=True, eq=False)  # tensor fields: compare fields, not objects
class SecondMomentOperator:
    """``M = (1/n) Σ ∇f_i ∇f_iᵀ`` (or, ``centered``, ``M − g gᵀ``) as a matrix-free operator.

    ``op @ v`` for ``v`` of shape ``[d]`` or ``[d, k]`` (columns batched with ``vmap``); each
    product costs one forward-mode pass (``J v``, the ``n`` directional derivatives of the
    per-example losses) and one reverse pass (``Jᵀ (J v) / n``), per chunk of examples.
    ``op(v)`` and ``op.batch(V)`` (rows of ``V``) give it the operator interface of
    :mod:`sgdbook.curvature`, so that :func:`sgdbook.curvature.lanczos` takes it directly.
    """

    d: int
    n: int
    centered: bool
    dtype: torch.dtype
    device: torch.device
    mean: torch.Tensor = field(repr=False)  # [d] the mean gradient g
    _matvec: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.d, self.d)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        if v.shape != (self.d,):
            raise ValueError(f"expected a vector of length {self.d}, got shape {tuple(v.shape)}")
        return self._matvec(v)

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        if v.ndim == 1:
            return self.matvec(v)
        if v.ndim == 2 and v.shape[0] == self.d:
            return vmap(self._matvec, in_dims=1, out_dims=1)(v)
        raise ValueError(f"expected shape [{self.d}] or [{self.d}, k], got {tuple(v.shape)}")

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return self.matvec(v)

    def batch(self, V: torch.Tensor) -> torch.Tensor:
        """``V M`` for a block of row vectors ``V`` (``[b, d]``): ``b`` products."""
        return (self @ V.mT).mT


def _load_jvp_decompositions() -> None:
    """Import torch's forward-mode decompositions once, hiding the ``torch.jit.script``
    deprecation warning that torch itself raises while loading them (on the first ``jvp``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
        with contextlib.suppress(ImportError):  # private module; jvp loads it itself if needed
            import torch._decomp.decompositions_for_jvp  # noqa: F401


def _swap(f, xb, yb, p):
    return f(p, xb, yb)


def second_moment_operator(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    centered: bool = False,
    chunk: int | None = None,
    bn_mode: BNMode = "train",
) -> SecondMomentOperator:
    """The second-moment matrix of the per-example gradients as an operator, without storing them.

    ``M v = (1/n) Jᵀ (J v)`` with ``J`` the ``[n, d]`` Jacobian of the per-example losses:
    ``J v`` by ``torch.func.jvp``, then one ``vjp``. With ``chunk=None`` the reverse graph of
    the whole batch is built once and reused by every product (fastest; memory of one
    forward pass over ``x``); with a ``chunk`` the examples are processed in chunks and each
    product re-runs the forward passes. ``centered=True`` gives the covariance
    ``M − g gᵀ`` (population normalisation ``1/n``). Batch-normalised networks need
    ``bn_mode="eval"`` (per-example losses).
    """
    n = check_data(x, y)
    s = functional_view(model, bn_mode, per_example=True)
    _load_jvp_decompositions()

    def losses(p, xb, yb):
        return per_example_losses(loss_fn, functional_call(s.module, p, (xb,)), yb)

    step = n if chunk is None else max(1, int(chunk))
    blocks = [(x[a : a + step], y[a : a + step]) for a in range(0, n, step)]
    cached = None
    if len(blocks) == 1:
        _, vjp_fn = vjp(lambda p: losses(p, x, y), s.params)
        cached = vjp_fn

    def raw(v: torch.Tensor) -> torch.Tensor:
        tangent = s.unflatten(v)
        out = None
        for xb, yb in blocks:
            f = functools.partial(_swap, losses, xb, yb)
            _, jv = jvp(f, (s.params,), (tangent,))
            back = cached if cached is not None else vjp(f, s.params)[1]
            part = s.flatten(back(jv / n)[0])
            out = part if out is None else out + part
        return out

    if cached is not None:
        g = s.flatten(cached(torch.full((n,), 1.0 / n, dtype=s.dtype, device=s.device))[0])
    else:
        g = full_gradient(model, loss_fn, x, y, chunk=chunk, bn_mode=bn_mode)

    def matvec(v: torch.Tensor) -> torch.Tensor:
        out = raw(v)
        return out - g * g.dot(v) if centered else out

    return SecondMomentOperator(
        d=s.d, n=n, centered=centered, dtype=s.dtype, device=s.device, mean=g, _matvec=matvec
    )


def second_moment_matrix(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    centered: bool = False,
    chunk: int | None = None,
    bn_mode: BNMode = "train",
) -> torch.Tensor:
    """The dense ``[d, d]`` matrix ``(1/n) Σ ∇f_i ∇f_iᵀ`` (``centered``: − ``g gᵀ``), small nets.

    Accumulated as ``Gᵀ G`` over chunks of per-example gradients (``[chunk, d]`` at a time).
    """
    n = check_data(x, y)
    step = n if chunk is None else max(1, int(chunk))
    M = None
    total = None
    for a in range(0, n, step):
        G = per_example_grads(model, loss_fn, x[a : a + step], y[a : a + step], bn_mode=bn_mode)
        M = G.T @ G if M is None else M.addmm_(G.T, G)
        total = G.sum(0) if total is None else total + G.sum(0)
    M /= n
    if centered:
        g = total / n
        M -= torch.outer(g, g)
    return M


# ------------------------------------------- moments through the n × n Gram, batched over runs
#
# For per-example gradients ``G`` (rows ``g_i``, shape ``[..., n, p]`` with any leading run
# dimensions): ``μ = (1/n) Σ g_i``, ``M = (1/n) GᵀG``, ``Σ = M − μμᵀ`` (divisor ``n``) and the
# second moment of a minibatch mean gradient of size ``m``, ``M^(m) = c Σ + μμᵀ`` with ``c = 1/m``
# for minibatches drawn with replacement and ``c = (n − m)/(m (n − 1))`` without. Quantities that
# depend on ``M`` or ``Σ`` only through their non-zero spectrum come from the ``n × n`` Gram
# matrices ``GGᵀ/n`` and ``G_cG_cᵀ/n`` (``G_c = G − μ``): ``n²p + n³`` work instead of ``p³``.


def _check_G(G: torch.Tensor) -> tuple[int, int]:
    if G.ndim < 2:
        raise ValueError(f"G must have shape [..., n, p] (per-example gradients as rows), got {tuple(G.shape)}")
    return G.shape[-2], G.shape[-1]


def _minibatch_factor(n: int, m: int, replacement: bool) -> float:
    if not 1 <= m or (not replacement and m > n):
        raise ValueError(f"minibatch size m = {m} must be >= 1 (and <= n = {n} without replacement)")
    if replacement:
        return 1.0 / m
    return (n - m) / (m * (n - 1)) if n > 1 else 0.0


@dataclass(frozen=True, eq=False)  # tensor fields
class GramMoments:
    """Moments of the per-example gradients of one or many runs (each field ``[...]``, ``mu``
    ``[..., p]``), computed by :func:`gram_moments`."""

    mu: torch.Tensor  # μ = (1/n) Σ g_i
    mu_sq: torch.Tensor  # ‖μ‖²
    tr_M: torch.Tensor  # Tr M = (1/n) Σ ‖g_i‖²
    tr_Sigma: torch.Tensor  # Tr Σ = Tr M − ‖μ‖²
    tr_M_m: torch.Tensor  # Tr M^(m) = c Tr Σ + ‖μ‖² (NaN when no m was given)
    sigma_fro: torch.Tensor  # ‖Σ‖_F
    sigma_2: torch.Tensor  # ‖Σ‖₂ = λ_max(Σ)
    sigma_half_mu: torch.Tensor  # ‖Σ^{1/2} μ‖ = √(μᵀ Σ μ)
    n: int
    p: int
    m: int | None
    replacement: bool


def gram_moments(G: torch.Tensor, m: int | None = None, *, replacement: bool = True) -> GramMoments:
    """Trace, Frobenius and spectral norms of ``M`` and ``Σ``, and ``‖Σ^{1/2}μ‖``, for per-example
    gradients ``G`` ``[..., n, p]`` (any leading run dimensions), through the ``n × n`` Gram matrix.

    ``‖Σ‖_F² = ‖G_cG_cᵀ‖_F²/n²`` and ``‖Σ‖₂ = λ_max(G_cG_cᵀ)/n`` (the non-zero spectra of
    ``G_cᵀG_c`` and ``G_cG_cᵀ`` agree), ``μᵀΣμ = ‖G_c μ‖²/n``. With ``m``, ``tr_M_m`` is the trace of
    the minibatch second moment ``M^(m)`` (Eq. 26; with or without ``replacement``).
    """
    n, p = _check_G(G)
    mu = G.mean(-2)
    Gc = G - mu.unsqueeze(-2)
    mu_sq = torch.linalg.vecdot(mu, mu)
    tr_sigma = (Gc * Gc).sum((-2, -1)) / n
    gram = Gc @ Gc.mT / n  # [..., n, n]
    ev = torch.linalg.eigvalsh(gram)
    sigma_fro = torch.linalg.matrix_norm(gram)  # = √Σλ² of Σ's non-zero spectrum
    proj = Gc @ mu.unsqueeze(-1)  # [..., n, 1]
    sigma_half_mu = (proj.squeeze(-1).square().sum(-1) / n).clamp_min(0).sqrt()
    if m is not None:
        tr_m = _minibatch_factor(n, m, replacement) * tr_sigma + mu_sq
    else:
        tr_m = torch.full_like(mu_sq, float("nan"))
    return GramMoments(
        mu=mu,
        mu_sq=mu_sq,
        tr_M=tr_sigma + mu_sq,
        tr_Sigma=tr_sigma,
        tr_M_m=tr_m,
        sigma_fro=sigma_fro,
        sigma_2=ev[..., -1].clamp_min(0),
        sigma_half_mu=sigma_half_mu,
        n=n,
        p=p,
        m=m,
        replacement=replacement,
    )


def second_moment_top(G: torch.Tensor, k: int, *, centered: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest eigenpairs of ``M = (1/n) GᵀG`` (``centered``: of ``Σ``) for per-example
    gradients ``G`` ``[..., n, p]``, through the ``n × n`` Gram matrix.

    If ``K = AAᵀ/n = U Λ Uᵀ`` (``A = G`` or ``G_c``), then ``AᵀA/n`` has the same non-zero
    eigenvalues with orthonormal eigenvectors ``v_j = Aᵀu_j/√(n λ_j)``. Returns eigenvalues
    ``[..., k]`` (descending) and eigenvectors ``[..., p, k]``; ``k`` is at most ``min(n, p)``.
    Eigenvalues at most 1e-12 of the largest are numerically zero: they are returned as 0 and
    their eigenvectors (not determined by the Gram matrix) as zero columns.
    """
    n, p = _check_G(G)
    if not 1 <= k <= min(n, p):
        raise ValueError(f"k = {k} must be in [1, min(n, p) = {min(n, p)}]")
    A = G - G.mean(-2, keepdim=True) if centered else G
    lam, U = torch.linalg.eigh(A @ A.mT / n)
    lam, U = lam.flip(-1)[..., :k], U.flip(-1)[..., :k]
    tiny = lam[..., :1].abs() * 1e-12
    ok = lam > tiny
    scale = torch.where(ok, (n * lam.clamp_min(torch.finfo(lam.dtype).tiny)).rsqrt(), torch.zeros_like(lam))
    V = (A.mT @ U) * scale.unsqueeze(-2)
    return torch.where(ok, lam, torch.zeros_like(lam)), V


def minibatch_second_moment(G: torch.Tensor, m: int, *, replacement: bool = True) -> torch.Tensor:
    """The exact second moment ``E[ĝĝᵀ] = c Σ + μμᵀ`` of a minibatch mean gradient ``ĝ`` of size ``m``
    (Eq. 26), ``[..., p, p]``: ``c = 1/m`` when the ``m`` indices are drawn independently with
    replacement (the Hessian paper's App. A), ``c = (n − m)/(m (n − 1))`` for a uniform ``m``-subset."""
    n, p = _check_G(G)
    c = _minibatch_factor(n, m, replacement)
    mu = G.mean(-2)
    Gc = G - mu.unsqueeze(-2)
    return (c / n) * (Gc.mT @ Gc) + mu.unsqueeze(-1) * mu.unsqueeze(-2)


def _stacked_linear_per_example(leaves, where, params, x, y, loss_fn, out):
    """Per-example gradients of every run of a Linear/elementwise network into ``out`` ``[R, n, p]``:
    one batched forward pass (``baddbmm`` with each run's weights), the per-example loss gradient
    with respect to the outputs, and a reverse pass in which a Linear layer's per-example weight
    gradient is the outer product ``δ aᵀ`` and its bias gradient ``δ``."""
    runs, n = out.shape[0], out.shape[1]
    h = x.unsqueeze(0).expand(runs, *x.shape)
    saved = []
    for mod in leaves:
        saved.append(h)
        if type(mod) is nn.Linear:
            (w, _), (b, _) = where[id(mod.weight)], where.get(id(mod.bias), (None, None))
            a = h.reshape(runs, -1, h.shape[-1])
            z = torch.bmm(a, params[w].transpose(1, 2)) if b is None else torch.baddbmm(params[b][:, None, :], a, params[w].transpose(1, 2))
            h = z.reshape(*h.shape[:-1], z.shape[-1])
        elif type(mod) is nn.Flatten:
            h = h.flatten(2)
        else:
            h = mod(h.clone() if getattr(mod, "inplace", False) else h)
    if loss_fn is F.cross_entropy and h.ndim == 3 and y.ndim == 1 and not y.is_floating_point():
        d = torch.softmax(h, -1)
        d[..., :].scatter_add_(-1, y.expand(runs, n)[..., None], torch.full_like(d[..., :1], -1.0))
    else:
        logits = h.detach().requires_grad_()
        with torch.enable_grad():
            total = vmap(lambda o: per_example_losses(loss_fn, o, y))(logits).sum()
            (d,) = torch.autograd.grad(total, logits)
    first = next(i for i, m in enumerate(leaves) if type(m) is nn.Linear)
    for i in range(len(leaves) - 1, first - 1, -1):
        mod, z = leaves[i], saved[i]
        if type(mod) is nn.Linear:
            (w, (o, shape)) = where[id(mod.weight)]
            a = z.reshape(runs, n, z.shape[-1]) if z.ndim == 3 else None
            if a is None:
                raise ValueError("the stacked per-example path takes inputs of one vector per example")
            torch.mul(d[:, :, :, None], a[:, :, None, :], out=out[:, :, o : o + shape.numel()].view(runs, n, *shape))
            if id(mod.bias) in where:
                ob, sb = where[id(mod.bias)][1]
                out[:, :, ob : ob + sb.numel()] = d
            if i > first:
                d = torch.bmm(d, params[w])
        elif type(mod) is nn.Flatten:
            d = d.reshape(z.shape)
        elif type(mod) is nn.ReLU:
            d = torch.ops.aten.threshold_backward(d, z, 0)
        elif type(mod) is not nn.Identity:
            f = (lambda t, mod=mod: mod(t.clone())) if getattr(mod, "inplace", False) else mod
            d = vjp(f, z)[1](d)[0]


def stacked_per_example_grads(
    base: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn=F.cross_entropy,
    *,
    chunk: int | None = None,
    buffers: dict[str, torch.Tensor] | None = None,
    fast_path: bool = True,
) -> torch.Tensor:
    """Per-example gradients of every run of a stack ``params`` (``{name: [R, ...]}``, as in
    :func:`sgdbook.ensemble.ensemble_sgd`): ``[R, n, p]``, flattened in ``base.named_parameters()``
    order (the layout of :func:`flat_parameters`). ``vmap`` over runs of ``vmap`` over examples of
    ``grad`` of ``loss_fn`` on a batch of one, ``chunk`` runs at a time (default: as many as keep
    ``chunk · n · p`` near 2²⁴ numbers).
    """
    names = [k for k, _ in base.named_parameters()]
    if set(names) != set(params):
        raise ValueError(f"params must hold exactly the parameters of base: {names}")
    runs = params[names[0]].shape[0]
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"{n} inputs but {y.shape[0]} targets")
    buffers = buffers or {}
    params = {k: v.detach() for k, v in params.items()}
    p = sum(params[k][0].numel() for k in names)

    def loss_one(pr, xi, yi):
        return loss_fn(functional_call(base, (pr, buffers), (xi.unsqueeze(0),)), yi.unsqueeze(0))

    first = params[names[0]]
    out = torch.empty(runs, n, p, dtype=first.dtype, device=first.device)
    leaves = linear_leaves(base) if not buffers and fast_path else None
    if leaves is not None:
        named = dict(base.named_parameters())
        offsets, o = {}, 0
        for k in names:
            offsets[k] = (o, named[k].shape)
            o += named[k].numel()
        where = {id(named[k]): (k, offsets[k]) for k in names}
        for a in range(0, runs, chunk or runs):
            sub = {k: params[k][a : a + (chunk or runs)] for k in names}
            _stacked_linear_per_example(leaves, where, sub, x.to(first.dtype), y, loss_fn, out[a : a + (chunk or runs)])
        return out
    fn = vmap(vmap(grad(loss_one), in_dims=(None, 0, 0)), in_dims=(0, None, None))
    step = chunk or max(1, (1 << 24) // max(1, n * p))
    for a in range(0, runs, step):
        g = fn({k: params[k][a : a + step] for k in names}, x, y)
        k_runs = g[names[0]].shape[0]
        out[a : a + k_runs] = torch.cat([g[k].reshape(k_runs, n, -1) for k in names], dim=-1)
    return out


def minibatch_grads(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    indices: torch.Tensor,
    *,
    chunk: int | None = None,
) -> torch.Tensor:
    """The gradients of ``loss_fn`` on the minibatches ``x[indices[j]]`` (``indices`` ``[N_b, m]``),
    as rows of an ``[N_b, d]`` tensor: ``vmap`` over minibatches of ``grad`` of the functional
    model, ``chunk`` minibatches at a time (default: about 2²² numbers of gradients per chunk).
    For a network without batch normalisation and a mean-reduced loss each row equals the mean of
    the per-example gradients of its minibatch (computed here independently of them)."""
    check_data(x, y)
    if indices.ndim != 2:
        raise ValueError(f"indices must have shape [N_b, m], got {tuple(indices.shape)}")
    s = functional_view(model, "train")
    g_fn = vmap(grad(lambda p, xb, yb: loss_fn(functional_call(s.module, p, (xb,)), yb)), in_dims=(None, 0, 0))
    n_b = indices.shape[0]
    step = chunk or max(1, (1 << 22) // s.d)
    out = torch.empty(n_b, s.d, dtype=s.dtype, device=s.device)
    indices = indices.to(x.device)
    for a in range(0, n_b, step):
        idx = indices[a : a + step]
        out[a : a + idx.shape[0]] = s.flatten(g_fn(s.params, x[idx], y[idx]), batch=idx.shape[0])
    return out
