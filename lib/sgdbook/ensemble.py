"""Many independent SGD runs of one small network at once, as one batched program.

Parameters of ``R`` runs are stacked along a leading dimension and every step is one
``vmap`` over runs of ``grad`` of the minibatch loss (``torch.func``), or, for networks of
Linear and elementwise layers, one batched forward pass and a hand-written reverse pass
(batched matrix products over the runs), with per-run minibatch indices drawn as one
``[R, m]`` tensor. Per-run minibatch loss, stochastic-gradient norm and
the cosine between consecutive stochastic gradients are tracked at every step, the full
training loss at chosen steps; a non-finite loss stops with a message naming the run and step.
With ``group_size = K`` the runs are read as consecutive groups of ``K`` (e.g. ``K`` runs from
each of several initialisations) and the variance across the runs of each group of the
stochastic gradient, summed over all parameters, is recorded at every step.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vjp, vmap

from .functional import call_safe, linear_leaves


class EnsembleDivergenceError(FloatingPointError):
    """A run of the ensemble produced a non-finite loss."""


def stacked_init(make_model: Callable[[torch.Generator], nn.Module], runs: int, generator: torch.Generator):
    """Initialise ``runs`` models with ``make_model(generator)`` and stack their parameters.

    Returns (base model on the meta device, stacked parameters, stacked buffers).
    """
    models = [make_model(generator) for _ in range(runs)]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    return base, params, buffers


def normal_init(base: nn.Module, runs: int, std: float, generator: torch.Generator, dtype=None, device=None):
    """Stacked parameters with every entry drawn from N(0, std²) (the Hessian paper's θ₀)."""
    out = {}
    for name, p in base.named_parameters():
        out[name] = std * torch.randn(runs, *p.shape, generator=generator, dtype=dtype or torch.float32,
                                      device=device or generator.device)
    return out


@dataclass
class EnsembleResult:
    params: dict[str, torch.Tensor]  # final parameters, stacked [R, ...]
    loss: torch.Tensor  # [steps, R] minibatch loss at θ_t (before the update)
    grad_norm: torch.Tensor  # [steps, R] ‖g_t‖ of the stochastic gradient
    cos_prev: torch.Tensor  # [steps, R] cos(g_t, g_{t−1}); NaN at t = 0
    eval_steps: list[int]
    full_loss: torch.Tensor  # [len(eval_steps), R] full training loss at θ_t
    grad_var: torch.Tensor | None = None  # [steps, R // group_size] across-run variance of g_t per group

    def quantiles(self, q: Sequence[float], which: str = "full_loss") -> torch.Tensor:
        """Quantiles across runs of a tracked quantity, shape ``[len(q), T]``."""
        values = getattr(self, which)
        return torch.nanquantile(values.double(), torch.tensor(q, dtype=torch.float64, device=values.device), dim=1)


def _stacked_linear_plan(base: nn.Module, params: dict[str, torch.Tensor]):
    """For an ``nn.Sequential`` of Linear and elementwise layers: its leaves, each with the names of
    its weight and bias in ``params`` (None where a parameter is not trained); otherwise None."""
    leaves = linear_leaves(base)
    if leaves is None:
        return None
    where = {id(m): prefix for prefix, m in base.named_modules()}
    plan = []
    for mod in leaves:
        if type(mod) is nn.Flatten and (mod.start_dim, mod.end_dim) != (1, -1):
            return None
        if type(mod) is nn.Linear:
            pre = where[id(mod)] + "." if where[id(mod)] else ""
            w, b = pre + "weight", pre + "bias"
            if w not in params or (mod.bias is not None and b not in params):
                return None  # frozen parameters: leave it to the general path
            plan.append((mod, w, b if mod.bias is not None else None))
        else:
            plan.append((mod, None, None))
    if len(params) != sum((w is not None) + (b is not None) for _, w, b in plan):
        return None
    return plan


def _stacked_linear_grads(plan, params, xb, yb, loss_fn, grads_out=None, transposed=frozenset()):
    """Minibatch gradients and losses of every run of a Linear/elementwise network, ``xb`` ``[R, m, …]``.

    One batched forward pass (``baddbmm`` with each run's weights), the loss and its gradient with
    respect to the outputs by ``vmap`` over runs, and a hand-written reverse pass: the weight
    gradient of a Linear layer is ``δᵀa`` summed over the minibatch, the bias gradient ``Σ δ``.
    Equal to ``vmap(grad(...))`` over runs (tested), about twice as fast on CPU for small nets.
    ``grads_out`` (``{name: tensor like params[name]}``) receives the gradients instead of new tensors.
    Weights named in ``transposed`` are held (and their gradients returned) as ``[R, in, out]``:
    the batched product ``a·W`` with ``W`` in that layout takes about 0.6× the time of ``a·Wᵀ`` on
    CPU, while the back-propagation ``δ·W`` prefers the usual layout, so it pays for a first layer.
    """
    runs = xb.shape[0]
    h, saved = xb, []
    for mod, w, b in plan:
        saved.append(h)
        if type(mod) is nn.Linear:
            a = h if h.ndim == 3 else h.reshape(runs, -1, h.shape[-1])
            wt = params[w] if w in transposed else params[w].transpose(1, 2)
            out = torch.bmm(a, wt) if b is None else torch.baddbmm(params[b][:, None, :], a, wt)
            h = out if h.ndim == 3 else out.reshape(*h.shape[:-1], out.shape[-1])
        elif type(mod) is nn.Flatten:
            h = h.flatten(2)
        else:
            h = mod(h.clone() if getattr(mod, "inplace", False) else h)  # keep the saved input intact
    if loss_fn is F.cross_entropy and h.ndim == 3 and yb.ndim == 2 and not yb.is_floating_point():
        # mean cross-entropy over the minibatch in closed form: δ = (softmax − onehot)/m
        # log-softmax written out: torch.log_softmax over a last dimension of a few classes is
        # about 4× slower on CPU than these three reductions
        z = h - h.amax(-1, keepdim=True)
        logp = z - z.exp().sum(-1, keepdim=True).log()
        value = -logp.gather(-1, yb[..., None]).squeeze(-1).mean(1)
        d = logp.exp_().scatter_add_(-1, yb[..., None], torch.full_like(h[..., :1], -1.0)).div_(h.shape[1])
    else:
        logits = h.detach().requires_grad_()
        with torch.enable_grad():
            value = vmap(loss_fn)(logits, yb)
            (d,) = torch.autograd.grad(value.sum(), logits)
    first = next(i for i, (mod, _, _) in enumerate(plan) if type(mod) is nn.Linear)
    grads: dict[str, torch.Tensor] = {}
    for i in range(len(plan) - 1, first - 1, -1):  # nothing to propagate below the first Linear
        mod, w, b = plan[i]
        z = saved[i]
        if type(mod) is nn.Linear:
            a = z if z.ndim == 3 else z.reshape(runs, -1, z.shape[-1])
            dd = d if d.ndim == 3 else d.reshape(runs, -1, d.shape[-1])
            g_out = None if grads_out is None else grads_out[w]
            if w in transposed:
                grads[w] = torch.bmm(a.transpose(1, 2), dd, out=g_out)
            else:
                grads[w] = torch.bmm(dd.transpose(1, 2), a, out=g_out)
            if b is not None:
                grads[b] = torch.sum(dd, 1, out=None if grads_out is None else grads_out[b])
            if i > first:
                wd = params[w].transpose(1, 2) if w in transposed else params[w]
                d = torch.bmm(dd, wd)
                d = d if z.ndim == 3 else d.reshape(z.shape)
        elif type(mod) is nn.Flatten:
            d = d.reshape(z.shape)
        elif type(mod) is nn.ReLU:
            d = torch.ops.aten.threshold_backward(d, z, 0)  # one pass; d * (z > 0) takes about 7× longer on CPU
        elif type(mod) is not nn.Identity:
            f = (lambda t, mod=mod: mod(t.clone())) if getattr(mod, "inplace", False) else mod
            d = vjp(f, z)[1](d)[0]
    return {k: grads[k] for k in params}, value.detach()


def _row_dots(g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``(g * h).sum(1)`` for ``[R, k]`` tensors.

    On CPU, for wide rows and even ``R``, as the diagonals of ``R/2`` batched 2×2 products
    ``[g_r; g_{r+1}][h_r; h_{r+1}]ᵀ``: nothing of size ``R × k`` is written, and it takes about
    half the time of ``linalg.vecdot`` (a product then a sum) at ``R = 1,000``, ``k ≥ 300``.
    """
    runs, k = g.shape
    if g.device.type != "cpu" or k < 128 or runs % 2:
        return torch.linalg.vecdot(g, h)
    pairs = torch.bmm(g.view(runs // 2, 2, k), h.view(runs // 2, 2, k).transpose(1, 2))
    return pairs.diagonal(dim1=1, dim2=2).reshape(runs)


def ensemble_sgd(
    base: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    lr: float,
    batch_size: int,
    steps: int,
    generator: torch.Generator,
    buffers: dict[str, torch.Tensor] | None = None,
    replacement: bool = True,
    indices: torch.Tensor | None = None,
    eval_every: int = 0,
    group_size: int = 0,
    fast_path: bool = True,
) -> EnsembleResult:
    """Run plain SGD independently for every run in the stack ``params`` (``{name: [R, ...]}``).

    ``base`` gives the architecture (any device; typically ``meta``). Minibatches are drawn per
    run and step, with replacement (the Hessian paper's "random samples with replacement") or
    without replacement within a minibatch; ``indices`` (``[steps, R, m]``) fixes them instead.
    ``eval_every > 0`` records the full training loss of every run every that many steps (and
    at the last step). ``group_size = K > 1`` records ``grad_var[t, j]``, the unbiased variance
    (divisor ``K − 1``) across runs ``jK, …, jK + K − 1`` of the stochastic gradient at step ``t``,
    summed over all parameters (needs ``R`` divisible by ``K``).
    For an ``nn.Sequential`` of Linear and elementwise layers without buffers the gradients come
    from a batched forward pass and a hand-written reverse pass (:func:`_stacked_linear_grads`)
    instead of ``vmap(grad(...))``; ``fast_path=False`` forces the general path.
    """
    runs = next(iter(params.values())).shape[0]
    if group_size and (group_size < 2 or runs % group_size):
        raise ValueError(f"group_size must be >= 2 and divide the number of runs ({runs}), got {group_size}")
    n = x.shape[0]
    device = x.device
    buffers = buffers or {}
    params = {k: v.detach().clone() for k, v in params.items()}
    base = call_safe(base)

    def loss_one(p, b, xb, yb):
        return loss_fn(functional_call(base, (p, b), (xb,)), yb)

    bdim = 0 if buffers else None
    grad_fn = vmap(grad_and_value(loss_one), in_dims=(0, bdim, 0, 0))
    step_fn = lambda p, b, xb, yb, t: grad_fn(p, b, xb, yb)  # noqa: E731
    plan = None if buffers or not fast_path else _stacked_linear_plan(base, params)
    transposed: frozenset[str] = frozenset()
    if plan is not None:
        if device.type == "cpu":  # the first layer's weights held as [R, in, out] while training
            transposed = frozenset({next(w for mod, w, _ in plan if type(mod) is nn.Linear)})
            params = {k: v.transpose(1, 2).contiguous() if k in transposed else v for k, v in params.items()}
        # gradients go to two preallocated sets in turn (the previous step's stays readable for
        # the cosine): no fresh memory per step, which on CPU costs as much as writing it
        grad_sets = [{k: torch.empty_like(v) for k, v in params.items()} for _ in range(2)]

        def step_fn(p, _b, xb, yb, t):
            return _stacked_linear_grads(plan, p, xb, yb, loss_fn, grads_out=grad_sets[t % 2], transposed=transposed)

    def natural(p):  # the parameters in the model's own layout (views)
        return {k: v.transpose(1, 2) if k in transposed else v for k, v in p.items()}

    full_fn = vmap(loss_one, in_dims=(0, bdim, None, None))

    dtype = next(iter(params.values())).dtype
    loss = torch.empty(steps, runs, device=device, dtype=dtype)
    gnorm = torch.empty_like(loss)
    cos = torch.full_like(loss, float("nan"))
    eval_steps = sorted({t for t in range(0, steps + 1, eval_every)} | {steps}) if eval_every > 0 else []
    full = torch.empty(len(eval_steps), runs, device=device, dtype=dtype)
    gvar = torch.empty(steps, runs // group_size, device=device, dtype=dtype) if group_size else None
    prev = prev_norm = None
    e = 0
    for t in range(steps + 1):
        if e < len(eval_steps) and eval_steps[e] == t:
            with torch.no_grad():
                full[e] = full_fn(natural(params), buffers, x, y)
            e += 1
        if t == steps:
            break
        if indices is not None:
            idx = indices[t]
        elif replacement:
            idx = torch.randint(0, n, (runs, batch_size), generator=generator, device=generator.device).to(device)
        else:
            idx = torch.rand(runs, n, generator=generator, device=generator.device).argsort(dim=1)[:, :batch_size].to(device)
        flat_idx = idx.reshape(-1)  # index_select: about 5× faster on CPU than x[idx]
        xb = x.index_select(0, flat_idx).view(*idx.shape, *x.shape[1:])
        yb = y.index_select(0, flat_idx).view(*idx.shape, *y.shape[1:])
        grads, value = step_fn(params, buffers, xb, yb, t)
        flat = [g.reshape(runs, -1) for g in grads.values()]  # views, no copy
        norm = torch.stack([torch.linalg.vector_norm(g, dim=1) for g in flat]).square_().sum(0).sqrt_()
        loss[t], gnorm[t] = value.detach(), norm
        if group_size:
            gvar[t] = sum(g.reshape(-1, group_size, g.shape[1]).var(dim=1).sum(-1) for g in flat)
        if prev is not None:
            cos[t] = torch.stack([_row_dots(g, h) for g, h in zip(flat, prev)]).sum(0).div_(norm * prev_norm)
        prev, prev_norm = flat, norm
        torch._foreach_add_(list(params.values()), [grads[k] for k in params], alpha=-lr)  # own copies
    bad = ~torch.isfinite(loss)
    if bool(bad.any()):
        t_bad, r_bad = (int(v) for v in bad.nonzero()[0])
        raise EnsembleDivergenceError(
            f"run {r_bad} of {runs}: non-finite minibatch loss at step {t_bad} (lr = {lr}, batch = {batch_size}); "
            f"{int(bad.any(0).sum())} runs diverged in all"
        )
    params = {k: v.contiguous() for k, v in natural(params).items()}
    return EnsembleResult(params, loss, gnorm, cos, eval_steps, full, gvar)


def epoch_indices(n: int, runs: int, batch_size: int, generator: torch.Generator, device=None) -> torch.Tensor:
    """Minibatch indices of one epoch for every run, ``[n // batch_size, runs, batch_size]``.

    Each run reshuffles ``[0, n)`` with its own random permutation and cuts it into consecutive
    minibatches (epoch-based, "cyclic" sampling); the last ``n mod batch_size`` examples of the
    permutation are left out of that epoch.
    """
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, n = {n}], got {batch_size}")
    if runs < 1:
        raise ValueError(f"runs must be positive, got {runs}")
    steps = n // batch_size
    perm = torch.rand(runs, n, generator=generator, device=generator.device).argsort(dim=1)
    return perm[:, : steps * batch_size].reshape(runs, steps, batch_size).transpose(0, 1).to(device or generator.device)


def evaluate_runs(
    base: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
    *,
    chunk: int = 1024,
    buffers: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and accuracy (argmax of the outputs) of every run on ``(x, y)``: two ``[R]`` tensors.

    One ``vmap`` over the runs per chunk of ``chunk`` examples; ``loss_fn`` must average over
    the examples (its value is re-weighted by the chunk's size).
    """
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"x and y must hold the same positive number of examples, got {x.shape[0]} and {y.shape[0]}")
    buffers = buffers or {}
    bdim = 0 if buffers else None
    base = call_safe(base)

    def one(p, b, xb, yb):
        out = functional_call(base, (p, b), (xb,))
        return loss_fn(out, yb) * xb.shape[0], (out.argmax(-1) == yb).sum()

    fn = vmap(one, in_dims=(0, bdim, None, None))
    runs = next(iter(params.values())).shape[0]
    dtype = next(iter(params.values())).dtype
    loss = torch.zeros(runs, dtype=dtype, device=x.device)
    correct = torch.zeros(runs, dtype=torch.int64, device=x.device)
    with torch.no_grad():
        for s in range(0, x.shape[0], chunk):
            lv, cv = fn(params, buffers, x[s : s + chunk], y[s : s + chunk])
            loss += lv
            correct += cv
    return loss / x.shape[0], correct.to(dtype) / x.shape[0]
