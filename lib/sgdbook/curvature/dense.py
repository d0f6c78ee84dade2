"""Dense Hessians of small networks, many runs at once.

Dense matrices are for small nets only (``p²`` numbers): :func:`stacked_hessians` refuses
``p > max_p`` with a pointer to the matrix-free tools (:class:`HVP`, :func:`lanczos`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacfwd, vmap

from ..functional import materialize
from .hvp import LinearNetHVP

#: Largest ``p`` for which a dense ``[p, p]`` Hessian is built without being asked explicitly.
DENSE_MAX_P = 20_000


def check_dense(p: int, max_p: int, runs: int = 1, itemsize: int = 8) -> None:
    if p > max_p:
        gb = runs * p * p * itemsize / 1e9
        raise ValueError(
            f"a dense Hessian at p = {p:,} needs {runs} × p² numbers ({gb:.1f} GB): use the matrix-free "
            "operators instead (curvature.HVP.from_model with curvature.lanczos for the top of the "
            f"spectrum, hutchinson_trace/diag for traces), or raise max_p (now {max_p:,}) knowingly"
        )


def stacked_hessians(
    base: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    *,
    max_p: int = DENSE_MAX_P,
    chunk: int | None = None,
) -> torch.Tensor:
    """The dense Hessians ``∇²f(θ_r)`` of the training loss of every run of a stack ``params``
    (``{name: [R, ...]}``, as :func:`sgdbook.ensemble.ensemble_sgd` holds them): ``[R, p, p]``,
    in ``base.named_parameters()`` order.

    For Linear/ReLU networks with the mean cross-entropy of integer labels each run's Hessian is
    ``p`` written-out Hessian-vector products (:class:`LinearNetHVP` applied to the identity, in
    blocks); otherwise ``vmap`` over runs of ``jacfwd(grad(f))`` (:func:`full_hessian`), ``chunk``
    runs at a time. Feed the result to ``torch.linalg.eigh``/``eigvalsh``, which batch over runs.
    """
    names = [k for k, _ in base.named_parameters()]
    if set(names) != set(params):
        raise ValueError(f"params must hold exactly the parameters of base: {names}")
    runs = params[names[0]].shape[0]
    shapes = [params[k].shape[1:] for k in names]
    sizes = [math.prod(s) for s in shapes]
    p = sum(sizes)
    first = params[names[0]]
    check_dense(p, max_p, runs, first.element_size())
    out = torch.empty(runs, p, p, dtype=first.dtype, device=first.device)
    probe = materialize(base, params, 0)
    if LinearNetHVP.applies(probe, loss_fn, x, y):
        eye = torch.eye(p, dtype=first.dtype, device=first.device)
        for r in range(runs):
            hv = LinearNetHVP(materialize(base, params, r), x, y)
            out[r] = hv.batch(eye)
        return (out + out.mT) / 2
    skeleton = materialize(base, {k: params[k][0] for k in names}).to("meta")

    def f(theta):
        pr = {k: t.view(s) for k, t, s in zip(names, theta.split(sizes), shapes)}
        return loss_fn(functional_call(skeleton, pr, (x,)), y)

    flat = torch.cat([params[k].reshape(runs, -1) for k in names], 1)
    step = chunk or max(1, min(runs, 8))
    for a in range(0, runs, step):
        out[a : a + step] = vmap(jacfwd(grad(f)))(flat[a : a + step])
    return out
