"""Corollary 3.1 in a quadratic sandbox, where the local minibatch solutions are known exactly.

Each of ``n`` examples has the loss ``f_j(w) = ½ (w − a_j)ᵀ A_j (w − a_j)`` with a random
positive-definite ``A_j`` of condition number ``cond`` (largest eigenvalue 1). A minibatch loss is
again quadratic with minimiser ``p_I`` (:func:`theory.minibatch_quadratics`), so the local
minibatch solutions of Definition 2 are the same everywhere: the corollary's region ``R`` is all
of ``R^d``. :func:`corollary_sandbox` runs ``runs`` independent sandboxes side by side (batched)
from a start far from the cloud of ``p_I`` and records, at the start of every epoch, κ̂ from the
normalised minibatch gradients (what the paper measures) and from the directions to the ``p_I``
(what the theory is about), together with the premise of Theorem 3 (ξ of Eq. 3 against the
proof's ξ* and the exact threshold).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from sgdbook import directional as vd

from . import theory as vt

__all__ = ["SandboxRun", "corollary_sandbox", "summarise"]


@dataclass
class SandboxRun:
    """Per-epoch measurements of :func:`corollary_sandbox`, tensors ``[epochs + 1, runs]``
    (``k_grad``, ``k_local``) or ``[epochs, runs]`` for the transitions ``t → t + 1``
    (``outside``: ``‖w_t − w*‖ ≥ cloud_factor`` × the median ``‖p_I − w*‖``; ``decrease``:
    κ̂ from gradients fell; ``xi``, ``xi_star``, ``xi_true``: Theorem 3's premise; ``mean_dir_err``:
    relative gap between the epoch's average normalised gradient and the average direction to the
    ``p_I``)."""

    k_grad: torch.Tensor
    k_local: torch.Tensor
    outside: torch.Tensor
    decrease: torch.Tensor
    xi: torch.Tensor
    xi_star: torch.Tensor
    xi_true: torch.Tensor
    mean_dir_err: torch.Tensor
    steps: int
    lr: float


def corollary_sandbox(
    *,
    runs: int,
    d: int,
    n: int,
    m: int,
    epochs: int,
    cond: float,
    start_distance: float,
    cloud_factor: float,
    generator: torch.Generator,
    lr_per_epoch: float | None = None,
    lr_per_step: float | None = None,
    practice: bool = False,
    measure_ns: int | None = None,
) -> SandboxRun:
    """Run SGD on ``runs`` random quadratic sandboxes (float64, on the generator's device).

    Without ``practice`` every epoch visits all ``C(n, m)`` minibatches in random order (the
    corollary's setting) and κ̂ is measured on all of them; with ``practice`` an epoch is a
    random partition into ``n // m`` minibatches ("in practice") and κ̂ is measured on
    ``measure_ns`` fixed random minibatches. The learning rate is ``lr_per_step`` or
    ``lr_per_epoch / steps``. Cost: ``epochs × steps`` batched ``d × d`` products per run.
    """
    dev = generator.device
    f64 = dict(dtype=torch.float64, device=dev)
    A = vt.random_spd((runs, n), d, cond, generator)
    c = (A @ torch.randn(runs, n, d, 1, generator=generator, **f64)).squeeze(-1)  # A_j a_j
    w_star = torch.linalg.solve(A.sum(1), c.sum(1))
    if practice:  # fixed random measurement minibatches, without replacement inside each
        measure = torch.argsort(torch.rand(measure_ns, n, generator=generator, device=dev), 1)[:, :m]
        steps = n // m
    else:
        measure = torch.tensor(list(itertools.combinations(range(n), m)), device=dev)
        steps = len(measure)
    H, b = vt.minibatch_quadratics(A, c, measure)
    p = torch.linalg.solve(H, b.unsqueeze(-1)).squeeze(-1)  # the local minibatch solutions p_I
    radius = (p - w_star[:, None]).norm(dim=-1).median(1).values
    u = torch.randn(runs, d, generator=generator, **f64)
    w = w_star + start_distance * radius[:, None] * u / u.norm(dim=-1, keepdim=True)
    if (lr_per_step is None) == (lr_per_epoch is None):
        raise ValueError("give exactly one of lr_per_epoch and lr_per_step")
    lr = lr_per_step if lr_per_step is not None else lr_per_epoch / steps
    rows = torch.arange(runs, device=dev)[:, None]
    out = {k: [] for k in ("k_grad", "k_local", "outside", "xi", "xi_star", "xi_true", "mean_dir_err")}
    for t in range(epochs + 1):
        g = vt.negative_gradients(H, b, w)
        out["k_grad"].append(vd.kappa_hat(torch.vmap(vd.mean_resultant_length)(g), d))
        out["k_local"].append(vt.kappa_hat_at(p, w))
        out["outside"].append((w - w_star).norm(dim=-1) >= cloud_factor * radius)
        if t == epochs:
            break
        if practice:
            batches = torch.argsort(torch.rand(runs, n, generator=generator, device=dev), 1)[:, : steps * m]
            h_e, b_e = vt.minibatch_quadratics(A, c, batches.reshape(runs, steps, m))
        else:
            order = torch.argsort(torch.rand(runs, steps, generator=generator, device=dev), 1)
            h_e, b_e = H[rows, order], b[rows, order]
        w_next, nsum = vt.sgd_epoch(h_e, b_e, w, lr)
        s = vt.normalised_sum(p, w)
        out["xi"].append((s - nsum).norm(dim=-1))
        out["xi_star"].append(vt.theorem3_bound(p, w))
        out["xi_true"].append(vt.theorem3_threshold(p, w)[0])
        mean_s = s / len(measure)
        out["mean_dir_err"].append((mean_s - nsum / steps).norm(dim=-1) / mean_s.norm(dim=-1))
        w = w_next
    res = {k: torch.stack(v).cpu() for k, v in out.items()}
    return SandboxRun(
        k_grad=res["k_grad"], k_local=res["k_local"], outside=res["outside"][:-1],
        decrease=res["k_grad"][1:] < res["k_grad"][:-1], xi=res["xi"], xi_star=res["xi_star"],
        xi_true=res["xi_true"], mean_dir_err=res["mean_dir_err"], steps=steps, lr=float(lr),
    )


def _share(mask: torch.Tensor, where: torch.Tensor) -> float:
    return float(mask[where].double().mean()) if bool(where.any()) else math.nan


def summarise(res: SandboxRun) -> dict[str, float]:
    """Epochs outside the cloud (over all runs), the share of epochs at which κ̂ from gradients
    fell (outside, inside, all) and the median ratio κ̂(gradients)/κ̂(local solutions) outside."""
    out = res.outside
    ratio = (res.k_grad[:-1] / res.k_local[:-1])[out]
    return dict(
        epochs_outside=int(out.sum()),
        epochs_all=int(out.numel()),
        frac_decrease_outside=_share(res.decrease, out),
        frac_decrease_inside=_share(res.decrease, ~out),
        frac_decrease_all=float(res.decrease.double().mean()),
        median_ratio_grad_local=float(ratio.median()) if ratio.numel() else math.nan,
        premise_below_bound=_share(res.xi < res.xi_star, out),
        premise_below_exact=_share(res.xi < res.xi_true, out),
    )
