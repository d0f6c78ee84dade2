"""A ReLU MLP with cross-entropy, its parameters stacked over ``R`` runs (or points), in closed form.

The Hessian paper's nets are small fully connected ReLU networks trained with the log-loss
(Sec. 3, Eqs. 10–11). For them every per-run quantity the chapters need is a few batched matrix
products over the runs, written here once and tested against ``torch.func`` in float64:

- :func:`forward` — logits of every run, inputs shared ``[N, d]`` or per run ``[R, N, d]``;
- :func:`minibatch_grads` — the stochastic gradient of each run's own minibatch (SGD's step);
- :func:`exact_moments` — exact full-data ``μ``, ``diag M``, ``Tr M``, ``‖μ‖²`` and the ``n × n``
  Gram matrix ``K = G Gᵀ`` of the per-example gradients, without forming the ``[R, n, p]``
  gradients: a weight gradient of example ``i`` is the outer product ``δ_i a_iᵀ``, so
  ``(1/n) Σ δ_i² (a_i²)ᵀ`` is the diagonal of ``M`` and ``(δ_i·δ_j)(a_i·a_j + 1)`` the Gram entry;
- :func:`per_example_grads` — the ``[R, n, p]`` gradients themselves (when they are needed);
- :func:`hessian_diag` — the exact diagonal of the Hessian. A ReLU network is linear in any one
  layer's parameters once the activation pattern is fixed, so ``∂²φ/∂θ_j² = 0`` almost everywhere
  and ``H_jj = (1/n) Σ_i a_{is}² [Σ_c p_ic J_icr² − (Σ_c p_ic J_icr)²]`` with ``J_ic = ∂φ_c/∂z``
  (the diagonal of the generalised Gauss–Newton matrix; the same argument that makes the paper's
  layer blocks G_h of Eq. 21 positive semi-definite);
- :func:`flat_loss` — the training loss as a function of one flat ``θ`` (for ``torch.func``).

Layout: a network is a list of ``(W [R, out, in], b [R, out])`` (``b`` may be ``None``), first layer
first, ReLU between layers. Flat vectors follow ``nn.Sequential.named_parameters()`` order
(each layer's weight row-major, then its bias), so they match ``sgdbook.gradients`` and the
ensemble's stacked ``{name: [R, ...]}`` dictionaries (:func:`layers_from_params`).
Everything is stateless; device and dtype come from the parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

Layers = list[tuple[torch.Tensor, torch.Tensor | None]]

__all__ = [
    "Layers",
    "MLPMoments",
    "exact_moments",
    "flat_loss",
    "flatten",
    "forward",
    "hvp_at_points",
    "hessian_diag",
    "layer_sizes",
    "layers_from_params",
    "minibatch_grads",
    "params_from_layers",
    "spec_of",
    "per_example_grads",
    "unflatten",
]


# ------------------------------------------------------------------------------ layout


def _linear_names(base: nn.Module) -> list[tuple[str, str | None]]:
    """(weight name, bias name) of each Linear of an ``nn.Sequential`` of Flatten/Linear/ReLU."""
    if not isinstance(base, nn.Sequential):
        raise TypeError("expected an nn.Sequential of Linear and ReLU layers")
    out, last = [], None
    for name, mod in base.named_children():
        if isinstance(mod, nn.Linear):
            if last == "linear":
                raise ValueError("two Linear layers without a ReLU between them")
            out.append((f"{name}.weight", f"{name}.bias" if mod.bias is not None else None))
            last = "linear"
        elif isinstance(mod, nn.ReLU):
            if last != "linear":
                raise ValueError("a ReLU must follow a Linear layer")
            last = "relu"
        elif isinstance(mod, nn.Flatten) and not out:
            continue
        else:
            raise ValueError(f"unsupported layer {type(mod).__name__}: only Flatten (first), Linear and ReLU")
    if last != "linear":
        raise ValueError("the network must end with a Linear layer (the logits)")
    return out


def layers_from_params(base: nn.Module, params: dict[str, torch.Tensor]) -> Layers:
    """The stacked ``{name: [R, ...]}`` parameters of ``base`` (an MLP) as a list of layers (views)."""
    return [(params[w], params[b] if b is not None else None) for w, b in _linear_names(base)]


def spec_of(base: nn.Module) -> list[tuple[int, int, bool]]:
    """``(out, in, has_bias)`` of each Linear of an MLP (works on a ``meta`` model): the ``like``
    argument of :func:`unflatten`, :func:`flat_loss` and :func:`hvp_at_points`."""
    _linear_names(base)  # checks the architecture
    return [(m.out_features, m.in_features, m.bias is not None) for m in base.children() if isinstance(m, nn.Linear)]


def params_from_layers(base: nn.Module, layers: Layers) -> dict[str, torch.Tensor]:
    """Inverse of :func:`layers_from_params`."""
    out = {}
    for (w, b), (W, bb) in zip(_linear_names(base), layers):
        out[w] = W
        if b is not None:
            out[b] = bb
    return out


def layer_sizes(layers: Layers) -> list[tuple[int, int]]:
    """(weight numel, bias numel) per layer, for one run."""
    return [(W[0].numel(), 0 if b is None else b.shape[-1]) for W, b in layers]


def flatten(layers: Layers) -> torch.Tensor:
    """``[R, p]``: each run's parameters as one vector (weights row-major, then bias, per layer)."""
    parts = []
    for W, b in layers:
        parts.append(W.reshape(W.shape[0], -1))
        if b is not None:
            parts.append(b)
    return torch.cat(parts, dim=1)


def unflatten(flat: torch.Tensor, like: Layers | Sequence[tuple[int, int, bool]]) -> Layers:
    """``[R, p]`` (or ``[p]``, read as one run) back into layers shaped like ``like``.

    ``like`` is a list of layers or of ``(out, in, has_bias)``. The result holds views of ``flat``.
    """
    if flat.ndim == 1:
        flat = flat[None]
    shapes = [(W.shape[-2], W.shape[-1], b is not None) for W, b in like] if like and isinstance(like[0][0], torch.Tensor) else list(like)
    p = sum(o * i + (o if hb else 0) for o, i, hb in shapes)
    if flat.shape[-1] != p:
        raise ValueError(f"flat parameters have {flat.shape[-1]} entries, the network {p}")
    out, k, R = [], 0, flat.shape[0]
    for o, i, hb in shapes:
        W = flat[:, k : k + o * i].reshape(R, o, i)
        k += o * i
        b = None
        if hb:
            b = flat[:, k : k + o]
            k += o
        out.append((W, b))
    return out


# ----------------------------------------------------------------------------- forward


def _affine(a: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``a Wᵀ + b`` per run; ``a`` is ``[R, N, in]`` or shared ``[N, in]``."""
    if a.ndim == 2:  # shared inputs: one GEMM for all runs, [N, in] @ [in, R·out]
        R, o, i = W.shape
        z = (a @ W.reshape(R * o, i).T).reshape(a.shape[0], R, o).transpose(0, 1)
        return z if b is None else z + b[:, None, :]
    wt = W.transpose(1, 2)
    return torch.bmm(a, wt) if b is None else torch.baddbmm(b[:, None, :], a, wt)


def _forward_saved(layers: Layers, x: torch.Tensor):
    """Logits and, per layer, its input ``a`` and the pre-activation mask of the next ReLU."""
    h, inputs, masks = x, [], []
    for li, (W, b) in enumerate(layers):
        inputs.append(h)
        z = _affine(h, W, b)
        if li < len(layers) - 1:
            mask = z > 0
            masks.append(mask)
            h = z * mask
        else:
            h = z
    return h, inputs, masks


def forward(layers: Layers, x: torch.Tensor) -> torch.Tensor:
    """Logits ``[R, N, k]`` of every run on inputs ``[N, d]`` (shared) or ``[R, N, d]``."""
    return _forward_saved(layers, x)[0]


def _log_softmax(z: torch.Tensor) -> torch.Tensor:
    z = z - z.amax(-1, keepdim=True)
    return z - z.exp().sum(-1, keepdim=True).log()


def losses(layers: Layers, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example log-losses ``[R, N]`` (``y`` shared ``[N]`` or ``[R, N]``)."""
    logp = _log_softmax(forward(layers, x))
    yy = y.expand(logp.shape[0], -1) if y.ndim == 1 else y
    return -logp.gather(-1, yy[..., None]).squeeze(-1)


def _batched_inputs(a: torch.Tensor, R: int) -> torch.Tensor:
    return a.expand(R, *a.shape) if a.ndim == 2 else a


def _backward_deltas(layers: Layers, masks, d_out: torch.Tensor) -> list[torch.Tensor]:
    """Per-layer ``∂/∂z_l`` for output sensitivities ``d_out`` ``[R, N, (c,) k]`` (extra dims kept)."""
    deltas = [d_out]
    d = d_out
    for li in range(len(layers) - 1, 0, -1):
        W = layers[li][0]  # [R, out, in]
        if d.ndim == 3:
            d = torch.bmm(d, W)
        else:  # [R, N, c, out] @ [R, out, in]
            R, N, c, o = d.shape
            d = torch.bmm(d.reshape(R, N * c, o), W).reshape(R, N, c, -1)
        mask = masks[li - 1]
        d = d * (mask if d.ndim == 3 else mask[:, :, None, :])
        deltas.append(d)
    return deltas[::-1]


def minibatch_grads(layers: Layers, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient ``[R, p]`` of each run's mean log-loss on its own minibatch (``xb`` ``[R, m, d]``,
    ``yb`` ``[R, m]``; or shared ``[m, d]``, ``[m]``), and the minibatch losses ``[R]``."""
    R = layers[0][0].shape[0]
    logits, inputs, masks = _forward_saved(layers, xb)
    logp = _log_softmax(logits)
    yy = yb.expand(R, -1) if yb.ndim == 1 else yb
    m = logits.shape[1]
    value = -logp.gather(-1, yy[..., None]).squeeze(-1).mean(1)
    d = logp.exp().scatter_add(-1, yy[..., None], torch.full_like(logits[..., :1], -1.0)) / m
    deltas = _backward_deltas(layers, masks, d)
    parts = []
    for (W, b), a, dl in zip(layers, inputs, deltas):
        a3 = _batched_inputs(a, R)
        parts.append(torch.bmm(dl.transpose(1, 2), a3).reshape(R, -1))
        if b is not None:
            parts.append(dl.sum(1))
    return torch.cat(parts, dim=1), value


# ----------------------------------------------------------------------------- moments


@dataclass(frozen=True, eq=False)
class MLPMoments:
    """Exact full-data moments of the per-example gradients of every run (``1/n`` normalisation).

    ``mu`` ``[R, p]`` = ∇f (Eq. 4); ``diag_m`` ``[R, p]`` the diagonal of ``M`` (Eq. 7);
    ``trace_m`` ``[R]`` = Tr M; ``mu_sq`` ``[R]`` = ‖μ‖²; ``gram`` ``[R, n, n]`` = ``G Gᵀ``
    (``G`` the per-example gradients as rows), or ``None``; ``loss`` ``[R]`` = f(θ).
    """

    mu: torch.Tensor
    diag_m: torch.Tensor
    trace_m: torch.Tensor
    mu_sq: torch.Tensor
    loss: torch.Tensor
    gram: torch.Tensor | None = None


def exact_moments(layers: Layers, x: torch.Tensor, y: torch.Tensor, gram: bool = False) -> MLPMoments:
    """μ, diag M, Tr M, ‖μ‖² (and with ``gram=True`` the ``n × n`` Gram) of every run on ``(x, y)``.

    Cost: one forward and one backward pass over the ``n`` examples per run; the per-example
    gradients are never formed.
    """
    R = layers[0][0].shape[0]
    logits, inputs, masks = _forward_saved(layers, x)
    logp = _log_softmax(logits)
    yy = y.expand(R, -1) if y.ndim == 1 else y
    n = logits.shape[1]
    loss = -logp.gather(-1, yy[..., None]).squeeze(-1).mean(1)
    d = logp.exp().scatter_add(-1, yy[..., None], torch.full_like(logits[..., :1], -1.0))  # per-example δ
    deltas = _backward_deltas(layers, masks, d)
    mu_parts, dm_parts = [], []
    K = torch.zeros(R, n, n, dtype=logits.dtype, device=logits.device) if gram else None
    for (W, b), a, dl in zip(layers, inputs, deltas):
        a3 = _batched_inputs(a, R)
        mu_parts.append(torch.bmm(dl.transpose(1, 2), a3).reshape(R, -1) / n)
        dm_parts.append(torch.bmm(dl.square().transpose(1, 2), a3.square()).reshape(R, -1) / n)
        if b is not None:
            mu_parts.append(dl.mean(1))
            dm_parts.append(dl.square().mean(1))
        if gram:
            aa = torch.bmm(a3, a3.transpose(1, 2))
            if b is not None:
                aa = aa + 1
            K += torch.bmm(dl, dl.transpose(1, 2)) * aa
    mu = torch.cat(mu_parts, 1)
    diag_m = torch.cat(dm_parts, 1)
    return MLPMoments(mu, diag_m, diag_m.sum(1), mu.square().sum(1), loss, K)


def per_example_grads(layers: Layers, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[R, n, p]``: the gradient of every example's own log-loss, for every run."""
    R = layers[0][0].shape[0]
    logits, inputs, masks = _forward_saved(layers, x)
    logp = _log_softmax(logits)
    yy = y.expand(R, -1) if y.ndim == 1 else y
    d = logp.exp().scatter_add(-1, yy[..., None], torch.full_like(logits[..., :1], -1.0))
    deltas = _backward_deltas(layers, masks, d)
    parts = []
    for (W, b), a, dl in zip(layers, inputs, deltas):
        a3 = _batched_inputs(a, R)
        parts.append((dl[..., :, None] * a3[..., None, :]).reshape(R, a3.shape[1], -1))
        if b is not None:
            parts.append(dl)
    return torch.cat(parts, dim=2)


def hessian_diag(layers: Layers, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[R, p]``: the exact diagonal of the Hessian of the mean log-loss of every run.

    Exact wherever no pre-activation is exactly 0 (almost everywhere): see the module docstring.
    One backward pass of the ``k`` output directions per example. ``y`` is accepted for symmetry
    with the other functions: the Hessian of the softmax log-loss in the logits, ``diag p − p pᵀ``,
    does not depend on the label.
    """
    R = layers[0][0].shape[0]
    logits, inputs, masks = _forward_saved(layers, x)
    p = _log_softmax(logits).exp()  # [R, N, k]
    N = logits.shape[1]
    parts: list[torch.Tensor] = []
    J = None  # ∂φ/∂z_l per example, [R, N, k, out_l]; the identity at the output layer
    for li in range(len(layers) - 1, -1, -1):
        W, b = layers[li]
        a3 = _batched_inputs(inputs[li], R)
        if J is None:  # output layer: Σ_c p_c δ_cr² − (Σ_c p_c δ_cr)² = p_r − p_r²
            v = p - p.square()
        else:
            pj = (p[..., :, None] * J).sum(2)  # Σ_c p_c J_c, [R, N, out]
            v = (p[..., :, None] * J.square()).sum(2) - pj.square()
        if b is not None:
            parts.append(v.mean(1))
        parts.append(torch.bmm(v.transpose(1, 2), a3.square()).reshape(R, -1) / N)
        if li > 0:  # propagate to the layer below: J ← (J W_l) ⊙ mask
            mask = masks[li - 1][:, :, None, :]
            if J is None:
                J = W[:, None, :, :] * mask  # [R, 1, k, in] ⊙ [R, N, 1, in]
            else:
                Rr, Nn, c, o = J.shape
                J = torch.bmm(J.reshape(Rr, Nn * c, o), W).reshape(Rr, Nn, c, -1) * mask
    return torch.cat(parts[::-1], dim=1)


def flat_loss(like: Layers | Sequence[tuple[int, int, bool]], x: torch.Tensor, y: torch.Tensor):
    """``f(θ)``: the mean log-loss on ``(x, y)`` of one flat parameter vector ``θ`` ``[p]``,
    written with plain tensor operations so that ``torch.func`` (grad, jvp, vmap, jacfwd) applies."""
    shapes = [(W.shape[-2], W.shape[-1], b is not None) for W, b in like] if like and isinstance(like[0][0], torch.Tensor) else list(like)

    def f(theta: torch.Tensor) -> torch.Tensor:
        h, k = x, 0
        for li, (o, i, hb) in enumerate(shapes):
            W = theta[k : k + o * i].reshape(o, i)
            k += o * i
            h = h @ W.T
            if hb:
                h = h + theta[k : k + o]
                k += o
            if li < len(shapes) - 1:
                h = torch.relu(h)
        return torch.nn.functional.cross_entropy(h, y)

    return f


def hvp_at_points(like: Layers | Sequence[tuple[int, int, bool]], x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, chunk: int = 256):
    """``hvp(V)``: Hessian-vector products of the mean log-loss on ``(x, y)`` at each of the points
    ``theta`` (``[P, p]``), row ``j`` of ``V`` with the Hessian at ``theta[j]`` (``torch.func``:
    ``vmap`` over points of ``jvp`` of ``grad``), in chunks of ``chunk`` points."""
    f = flat_loss(like, x, y)

    def one(th, v):
        return torch.func.jvp(torch.func.grad(f), (th,), (v,))[1]

    batched = torch.func.vmap(one)

    def hvp(V: torch.Tensor) -> torch.Tensor:
        return torch.cat([batched(theta[a : a + chunk], V[a : a + chunk]) for a in range(0, theta.shape[0], chunk)])

    return hvp
