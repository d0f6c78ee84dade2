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
from dataclasses import dataclass, field
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
    snapshot_steps: list[int] = field(default_factory=list)
    snapshots: dict[str, torch.Tensor] = field(default_factory=dict)  # {name: [S, R, ...]} θ_t at snapshot_steps
    diverged_at: torch.Tensor | None = None  # [R] step at which a run was frozen (−1: never); on_nonfinite="freeze"

    def quantiles(self, q: Sequence[float], which: str = "full_loss") -> torch.Tensor:
        """Quantiles across runs of a tracked quantity, shape ``[len(q), T]`` (NaN entries left out;
        a frozen run's full loss is +inf and counts)."""
        values = getattr(self, which)
        return torch.nanquantile(values.double(), torch.tensor(q, dtype=torch.float64, device=values.device), dim=1)

    def run_at_quantile(self, q: Sequence[float], which: str = "full_loss") -> torch.Tensor:
        """The run holding the ``q``-quantile of ``which`` at each recorded step: ``[len(q), T]`` run
        indices (see :func:`quantile_runs`)."""
        return quantile_runs(getattr(self, which), q)

    def take(self, which: str, runs: torch.Tensor) -> torch.Tensor:
        """Values of ``which`` (``[T, R]``) at the runs ``runs`` (``[Q, T]``, e.g. from
        :meth:`run_at_quantile` of a quantity recorded at the same steps): ``[Q, T]``."""
        values = getattr(self, which)
        if runs.shape[-1] != values.shape[0]:
            raise ValueError(f"runs has {runs.shape[-1]} steps but {which} has {values.shape[0]}")
        return values.T.gather(0, runs.to(values.device))

    def snapshot(self, step: int) -> dict[str, torch.Tensor]:
        """The stacked parameters ``{name: [R, ...]}`` recorded at ``step``."""
        if step not in self.snapshot_steps:
            raise KeyError(f"no snapshot at step {step}; snapshots were taken at {self.snapshot_steps}")
        i = self.snapshot_steps.index(step)
        return {k: v[i] for k, v in self.snapshots.items()}


def quantile_runs(values: torch.Tensor, q: Sequence[float]) -> torch.Tensor:
    """For ``values`` ``[T, R]`` (a quantity of ``R`` runs at ``T`` steps), the index of the run at
    the ``q``-quantile at each step: ``[len(q), T]``.

    Nearest rank: the runs are sorted at each step (NaN ranked as +inf, ties by run index) and
    the one at position ``round(q · (R − 1))`` is taken, so the selected run's value is the
    lower/upper empirical quantile and the run itself is a real trajectory.
    """
    qs = torch.as_tensor(list(q), dtype=torch.float64)
    if qs.ndim != 1 or bool(((qs < 0) | (qs > 1)).any()):
        raise ValueError(f"quantile levels must lie in [0, 1], got {list(q)}")
    if values.ndim != 2:
        raise ValueError(f"values must be [T, R], got shape {tuple(values.shape)}")
    runs = values.shape[1]
    key = torch.nan_to_num(values.double(), nan=float("inf"))
    order = torch.sort(key, dim=1, stable=True).indices  # [T, R]
    pos = torch.round(qs * (runs - 1)).long().to(values.device)
    return order[:, pos].T.contiguous()


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


def _group_var(g: torch.Tensor) -> torch.Tensor:
    """``g.var(dim=1).sum(-1)`` for ``[groups, K, d]``: the unbiased variance over each group's ``K``
    rows, summed over the ``d`` coordinates, written out (``Tensor.var`` over a middle dimension is
    an order of magnitude slower on CPU for wide rows)."""
    return (g - g.mean(1, keepdim=True)).square_().sum((1, 2)) / (g.shape[1] - 1)


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
    eval_at: Sequence[int] = (),
    snapshot_at: Sequence[int] = (),
    on_nonfinite: str = "raise",
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

    ``eval_at`` adds steps (in ``[0, steps]``) at which the full training loss is recorded, merged
    with the ``eval_every`` grid into ``eval_steps``. ``snapshot_at`` records the parameters
    ``θ_t`` of every run (before the update of step ``t``; ``t = steps`` is the final point) into
    ``snapshots`` (``{name: [S, R, ...]}``, see :meth:`EnsembleResult.snapshot`).

    ``on_nonfinite="raise"`` (default) stops with :class:`EnsembleDivergenceError` naming the first
    run and step with a non-finite minibatch loss. ``"freeze"`` keeps going: a run whose minibatch
    loss or stochastic-gradient norm is non-finite at step ``t`` is frozen at ``θ_t`` (it takes no
    further step), ``diverged_at[r] = t`` (−1 for runs never frozen), its ``loss``, ``grad_norm``
    and ``cos_prev`` read NaN from step ``t`` on and its ``full_loss`` reads +inf at every
    evaluation from step ``t`` on (so that loss quantiles rank it above every finite run).

    Returns an :class:`EnsembleResult`: the final stacked parameters, ``loss``, ``grad_norm`` and
    ``cos_prev`` (``[steps, R]``), ``eval_steps`` and ``full_loss`` (``[len(eval_steps), R]``),
    ``grad_var`` (``[steps, R // K]`` or None), ``snapshots``, ``diverged_at``. The given
    ``params`` and ``base`` are left as they were. Cost per step: one batched gradient of ``R``
    minibatches (``R · m`` example passes), plus one full pass over ``x`` per run at each
    evaluation; memory: a few copies of the stacked parameters. Timings against a sequential loop
    and a bare ``vmap`` loop: the performance appendix.

    Example::

        base, params, _ = stacked_init(lambda g: mlp([50, 10, 30, 10], bias=True, generator=g, flatten=False),
                                       1000, torch.Generator().manual_seed(0))
        res = ensemble_sgd(base, params, x, y, F.cross_entropy, lr=0.1, batch_size=5, steps=400,
                           generator=torch.Generator().manual_seed(1), eval_every=10)
        res.full_loss[-1].median()
    """
    runs = next(iter(params.values())).shape[0]
    if group_size and (group_size < 2 or runs % group_size):
        raise ValueError(f"group_size must be >= 2 and divide the number of runs ({runs}), got {group_size}")
    if on_nonfinite not in ("raise", "freeze"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'freeze', got {on_nonfinite!r}")
    extra = sorted({int(t) for t in eval_at} | {int(t) for t in snapshot_at})
    if extra and (extra[0] < 0 or extra[-1] > steps):
        raise ValueError(f"eval_at and snapshot_at must lie in [0, steps = {steps}], got {extra[0]} … {extra[-1]}")
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
    grid = {t for t in range(0, steps + 1, eval_every)} | {steps} if eval_every > 0 else set()
    eval_steps = sorted(grid | {int(t) for t in eval_at})
    full = torch.empty(len(eval_steps), runs, device=device, dtype=dtype)
    gvar = torch.empty(steps, runs // group_size, device=device, dtype=dtype) if group_size else None
    snap_steps = sorted({int(t) for t in snapshot_at})
    snaps = {k: torch.empty(len(snap_steps), *v.shape, device=v.device, dtype=v.dtype) for k, v in natural(params).items()}
    freeze = on_nonfinite == "freeze"
    if freeze:
        frozen = torch.zeros(runs, dtype=torch.bool, device=device)
        diverged = torch.full((runs,), -1, dtype=torch.int64, device=device)
    prev = prev_norm = None
    e = s_i = 0
    for t in range(steps + 1):
        if e < len(eval_steps) and eval_steps[e] == t:
            with torch.no_grad():
                full[e] = full_fn(natural(params), buffers, x, y)
            e += 1
        if s_i < len(snap_steps) and snap_steps[s_i] == t:
            for k, v in natural(params).items():
                snaps[k][s_i] = v
            s_i += 1
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
        if freeze:  # no host synchronisation: the masks stay on the device
            bad = ~(torch.isfinite(value) & torch.isfinite(norm))
            diverged = torch.where(bad & ~frozen, t, diverged)
            frozen |= bad
            for g in grads.values():
                g.masked_fill_(frozen.view(-1, *([1] * (g.ndim - 1))), 0.0)  # a frozen run takes no step
        loss[t], gnorm[t] = value.detach(), norm
        if group_size:
            gvar[t] = sum(_group_var(g.reshape(-1, group_size, g.shape[1])) for g in flat)
        if prev is not None:
            cos[t] = torch.stack([_row_dots(g, h) for g, h in zip(flat, prev)]).sum(0).div_(norm * prev_norm)
        prev, prev_norm = flat, norm
        torch._foreach_add_(list(params.values()), [grads[k] for k in params], alpha=-lr)  # own copies
    diverged_at = None
    if freeze:
        hit = diverged >= 0
        after = hit & (torch.arange(steps, device=device)[:, None] >= diverged)  # [steps, R]
        for rec in (loss, gnorm, cos):
            rec.masked_fill_(after, float("nan"))
        es = torch.tensor(eval_steps, device=device, dtype=torch.int64)[:, None]
        full.masked_fill_(hit & (es >= diverged), float("inf"))
        diverged_at = diverged
    else:
        bad = ~torch.isfinite(loss)
        if bool(bad.any()):
            t_bad, r_bad = (int(v) for v in bad.nonzero()[0])
            raise EnsembleDivergenceError(
                f"run {r_bad} of {runs}: non-finite minibatch loss at step {t_bad} (lr = {lr}, batch = {batch_size}); "
                f"{int(bad.any(0).sum())} runs diverged in all; on_nonfinite='freeze' keeps going and reports them"
            )
    params = {k: v.contiguous() for k, v in natural(params).items()}
    snaps = {k: v.contiguous() for k, v in snaps.items()} if snap_steps else {}
    return EnsembleResult(params, loss, gnorm, cos, eval_steps, full, gvar, snap_steps, snaps, diverged_at)


def epoch_indices(
    n: int, runs: int, batch_size: int, generator: torch.Generator, device=None, *, epochs: int = 1
) -> torch.Tensor:
    """Minibatch indices of ``epochs`` epochs for every run, ``[epochs · (n // batch_size), runs, batch_size]``.

    Each run reshuffles ``[0, n)`` with its own random permutation every epoch and cuts it into
    consecutive minibatches (epoch-based, "cyclic" sampling); the last ``n mod batch_size``
    examples of each permutation are left out of that epoch. One call with ``epochs = E`` draws the
    same indices as ``E`` calls with ``epochs = 1`` from the same generator state.
    """
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, n = {n}], got {batch_size}")
    if runs < 1 or epochs < 1:
        raise ValueError(f"runs and epochs must be positive, got runs = {runs}, epochs = {epochs}")
    steps = n // batch_size
    perm = torch.rand(epochs, runs, n, generator=generator, device=generator.device).argsort(dim=-1)
    idx = perm[..., : steps * batch_size].reshape(epochs, runs, steps, batch_size).transpose(1, 2)
    return idx.reshape(epochs * steps, runs, batch_size).to(device or generator.device)


def evaluate_runs(
    base: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor | tuple[torch.Tensor, ...],
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
    *,
    chunk: int = 1024,
    buffers: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and accuracy (argmax of the outputs) of every run on ``(x, y)``: two ``[R]`` tensors.

    ``x`` is the model's input, or a tuple of its inputs (e.g. ``(tokens, mask)``), each with the
    examples along dimension 0. One ``vmap`` over the runs per chunk of ``chunk`` examples;
    ``loss_fn`` must average over the examples (its value is re-weighted by the chunk's size).
    """
    inputs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    n = y.shape[0]
    if n == 0 or any(t.shape[0] != n for t in inputs):
        raise ValueError(f"inputs and y must hold the same positive number of examples, got {[t.shape[0] for t in inputs]} and {n}")
    buffers = buffers or {}
    bdim = 0 if buffers else None
    base = call_safe(base)

    def one(p, b, xb, yb):
        out = functional_call(base, (p, b), xb)
        return loss_fn(out, yb) * yb.shape[0], (out.argmax(-1) == yb).sum()

    fn = vmap(one, in_dims=(0, bdim, None, None))
    runs = next(iter(params.values())).shape[0]
    dtype = next(iter(params.values())).dtype
    loss = torch.zeros(runs, dtype=dtype, device=y.device)
    correct = torch.zeros(runs, dtype=torch.int64, device=y.device)
    with torch.no_grad():
        for s in range(0, n, chunk):
            lv, cv = fn(params, buffers, tuple(t[s : s + chunk] for t in inputs), y[s : s + chunk])
            loss += lv
            correct += cv
    return loss / n, correct.to(dtype) / n


@dataclass
class EpochRuns:
    """Result of :func:`epoch_sgd`: ``R`` runs trained for ``epochs`` epochs of ``steps_per_epoch`` steps."""

    params: dict[str, torch.Tensor]  # final parameters, stacked [R, ...]
    steps_per_epoch: int
    grad_var: torch.Tensor | None  # [epochs · steps_per_epoch, R // group_size]: across-run SG variance per group
    eval_epochs: list[int]  # epochs after which the evaluation sets were measured (0: at θ_0)
    evals: dict[str, torch.Tensor]  # "<set>_loss", "<set>_acc" → [len(eval_epochs), R]
    full_grad_var: torch.Tensor | None = None  # [len(eval_epochs), R // group_size]: across-run variance of ∇L(θ)

    def epoch_grad_var(self) -> torch.Tensor:
        """The SG variance averaged over the steps of each epoch, ``[epochs, R // group_size]``."""
        if self.grad_var is None:
            raise ValueError("no gradient variance was recorded (group_size = 0)")
        return self.grad_var.reshape(-1, self.steps_per_epoch, self.grad_var.shape[-1]).mean(1)


def group_full_grad_var(base, params, x, y, loss_fn, group_size: int) -> torch.Tensor:
    """Across-run variance (divisor ``K − 1``, summed over parameters) of the full-batch gradient
    ``∇L(θ_r)`` on ``(x, y)`` within each consecutive group of ``K = group_size`` runs: ``[R // K]``.

    One :func:`ensemble_sgd` step of learning rate 0 whose minibatch is the whole of ``x``.
    """
    runs = next(iter(params.values())).shape[0]
    idx = torch.arange(x.shape[0], device=x.device).expand(1, runs, x.shape[0])
    res = ensemble_sgd(base, params, x, y, loss_fn, lr=0.0, batch_size=x.shape[0], steps=1,
                       generator=torch.Generator(device=x.device), indices=idx, group_size=group_size)
    return res.grad_var[0]


def epoch_sgd(
    base: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
    *,
    lr: float,
    batch_size: int,
    epochs: int,
    generator: torch.Generator,
    group_size: int = 0,
    eval_sets: dict[str, tuple] | None = None,
    eval_every: int = 1,
    full_grad_var: bool = False,
    chunk: int = 1024,
    progress: str | None = None,
) -> EpochRuns:
    """Plain SGD for every run of the stack ``params`` with epoch-based minibatches.

    Each epoch every run reshuffles the training set with its own permutation
    (:func:`epoch_indices`, drawn from ``generator``) and takes ``len(x) // batch_size`` steps of
    :func:`ensemble_sgd`; ``group_size = K`` records the across-run SG variance of each group of
    ``K`` consecutive runs at every step. At θ_0 and after every ``eval_every``-th epoch each named
    set of ``eval_sets`` (``{name: (inputs, labels)}``) is evaluated with :func:`evaluate_runs`
    (mean loss and accuracy of every run), and with ``full_grad_var`` the across-run variance of
    the full training gradient per group (:func:`group_full_grad_var`). ``progress``: a label for
    a progress bar over the epochs. Cost: ``epochs`` × (an epoch of :func:`ensemble_sgd` + the
    evaluations).
    """
    if epochs < 1 or eval_every < 1:
        raise ValueError(f"epochs and eval_every must be positive, got {epochs} and {eval_every}")
    if full_grad_var and group_size < 2:
        raise ValueError("full_grad_var needs group_size >= 2")
    eval_sets = eval_sets or {}
    runs = next(iter(params.values())).shape[0]
    n = x.shape[0]
    evals: dict[str, list[torch.Tensor]] = {}
    fvar: list[torch.Tensor] = []
    eval_epochs: list[int] = []

    def evaluate(epoch: int, p) -> None:
        eval_epochs.append(epoch)
        for name, (xs, ys) in eval_sets.items():
            loss, acc = evaluate_runs(base, p, xs, ys, loss_fn, chunk=chunk)
            evals.setdefault(f"{name}_loss", []).append(loss)
            evals.setdefault(f"{name}_acc", []).append(acc)
        if full_grad_var:
            fvar.append(group_full_grad_var(base, p, x, y, loss_fn, group_size))

    evaluate(0, params)
    starts = range(0, epochs, eval_every)  # one ensemble_sgd call per stretch between evaluations
    if progress:
        from .book.progress import progress as bar

        starts = bar(starts, desc=progress)
    gvar = []
    for start in starts:
        k = min(eval_every, epochs - start)
        idx = epoch_indices(n, runs, batch_size, generator, device=x.device, epochs=k)
        res = ensemble_sgd(base, params, x, y, loss_fn, lr=lr, batch_size=batch_size, steps=idx.shape[0],
                           generator=generator, indices=idx, group_size=group_size)
        params = res.params
        if group_size:
            gvar.append(res.grad_var)
        if (start + k) % eval_every == 0:
            evaluate(start + k, params)
    return EpochRuns(
        params=params, steps_per_epoch=n // batch_size, grad_var=torch.cat(gvar) if gvar else None,
        eval_epochs=eval_epochs, evals={k: torch.stack(v) for k, v in evals.items()},
        full_grad_var=torch.stack(fvar) if fvar else None,
    )

