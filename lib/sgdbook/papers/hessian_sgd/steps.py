"""Step rules of Sections 5.4–5.5 with exact per-run moments, and a batched runner for them.

Rules (``θ_{t+1} = θ_t − step``), with exact full-data ``μ_t``, ``M_t`` of each run
(:func:`sgdbook.papers.hessian_sgd.stacked_mlp.exact_moments`) and its minibatch gradient ``g_t``:

- ``"sgd"``: ``η g_t`` (Eq. 8, constant ``η``);
- ``"adaptive"``: ``η_t g_t`` with ``η_t = c ‖μ_t‖²/(2L Tr M_t)``, ``1 < c < 3`` (Eq. 35); ``trace="batch"``
  uses ``Tr M_t^(m)`` (what the proof's Eq. 76 needs) instead of the printed ``Tr M_t``;
- ``"precond"``: ``A_t g_t`` with ``a_{t,j} = c μ_{t,j}²/(2L M_{t,jj})`` (Eq. 36; 0 where ``M_jj = 0``);
- ``"adam"``: Eqs. (37)–(39) as printed, ``g ← γ₁g + (1−γ₁)g_t``, ``ν ← γ₂ν + (1−γ₂)g_t²``,
  step ``η g/√ν`` (no bias correction and no ε, as printed; 0 where ``ν = 0``);
- ``"ideal_adam"``: ``η μ_{t,j}/√M_{t,jj}`` (Eq. 40, deterministic);
- ``"proposed"``: ``η (μ_{t,j}²/M_{t,jj}) g_{t,j}`` (Eq. 41), which is ``"precond"`` with ``c = 2ηL``.

Minibatches are drawn with replacement (App. A), one ``[R, m]`` draw per step from the explicit
generator. A non-finite loss stops the run with the run and step named.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import stacked_mlp as sm
from .theory import check_positive

RULES = ("sgd", "adaptive", "precond", "adam", "ideal_adam", "proposed")

__all__ = ["RULES", "RuleResult", "adam_direction", "adaptive_lr", "ideal_adam_step", "preconditioner", "proposed_step", "run_rule"]


def _check_c(c: float) -> None:
    if not 1 < c < 3:
        raise ValueError(f"c must lie in the open interval (1, 3) of Eqs. (35)/(36), got {c!r} (2 is the midpoint)")


def adaptive_lr(mu_sq: torch.Tensor, trace: torch.Tensor, L, c: float = 2.0) -> torch.Tensor:
    """Eq. (35): ``η_t = c ‖μ_t‖²/(2L Tr M_t)`` (``trace`` = Tr M_t, or Tr M_t^(m)); 0 where the trace is 0."""
    _check_c(c)
    check_positive("L", L)
    return torch.where(trace > 0, c * mu_sq / (2 * L * trace.clamp_min(torch.finfo(trace.dtype).tiny)), torch.zeros_like(trace))


def preconditioner(mu: torch.Tensor, diag_m: torch.Tensor, L, c: float = 2.0) -> torch.Tensor:
    """Eq. (36): ``a_{t,j} = c μ_{t,j}²/(2L M_{t,jj})`` (0 where ``M_jj = 0``; then ``μ_j = 0`` too)."""
    _check_c(c)
    check_positive("L", L)
    L = torch.as_tensor(L, dtype=mu.dtype, device=mu.device)
    L = L[..., None] if L.ndim else L
    return torch.where(diag_m > 0, c * mu.square() / (2 * L * diag_m.clamp_min(torch.finfo(mu.dtype).tiny)), torch.zeros_like(mu))


def ideal_adam_step(mu: torch.Tensor, diag_m: torch.Tensor, lr: float) -> torch.Tensor:
    """Eq. (40): ``η μ_{t,j}/√M_{t,jj}`` (0 where ``M_jj = 0``)."""
    return torch.where(diag_m > 0, lr * mu * diag_m.clamp_min(torch.finfo(mu.dtype).tiny).rsqrt(), torch.zeros_like(mu))


def proposed_step(mu: torch.Tensor, diag_m: torch.Tensor, g: torch.Tensor, lr: float) -> torch.Tensor:
    """Eq. (41): ``η (μ_{t,j}/√M_{t,jj})² g_{t,j}`` (0 where ``M_jj = 0``)."""
    ratio = torch.where(diag_m > 0, mu.square() / diag_m.clamp_min(torch.finfo(mu.dtype).tiny), torch.zeros_like(mu))
    return lr * ratio * g


def adam_direction(g_avg: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    """``g/√ν`` of Eq. (39), 0 where ``ν = 0``."""
    return torch.where(nu > 0, g_avg * nu.clamp_min(torch.finfo(nu.dtype).tiny).rsqrt(), torch.zeros_like(nu))


@dataclass(frozen=True, eq=False)
class RuleResult:
    """A batched run of one rule. Per step ``t = 0 … steps`` (``[steps + 1, R]``): full training loss
    ``loss``, ``grad_sq`` = ‖μ_t‖², ``trace_m`` = Tr M_t; per step ``t < steps`` (``[steps, R]``):
    ``step_norm`` = ‖θ_{t+1} − θ_t‖ and ``lr`` (the scalar step size for ``sgd``/``adaptive``, else NaN);
    ``snapshots`` ``{t: [R, p]}`` at the requested steps; ``layers`` the final parameters."""

    loss: torch.Tensor
    grad_sq: torch.Tensor
    trace_m: torch.Tensor
    step_norm: torch.Tensor
    lr: torch.Tensor
    layers: sm.Layers
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)


def run_rule(
    layers: sm.Layers,
    x: torch.Tensor,
    y: torch.Tensor,
    rule: str,
    *,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
    lr: float = 0.1,
    L=None,
    c: float = 2.0,
    trace: str = "printed",
    gammas: tuple[float, float] = (0.9, 0.999),
    snapshot_steps=(),
) -> RuleResult:
    """Run ``rule`` (one of :data:`RULES`) for ``steps`` steps on every run of the stacked MLP ``layers``."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}: use one of {RULES}")
    if trace not in ("printed", "batch"):
        raise ValueError(f"trace must be 'printed' (Tr M_t) or 'batch' (Tr M_t^(m)), got {trace!r}")
    if rule in ("adaptive", "precond"):
        if L is None:
            raise ValueError(f"rule {rule!r} needs L, the smoothness constant of Assumption 1")
        _check_c(c)
    else:
        check_positive("lr", lr)
    n = x.shape[0]
    if not isinstance(batch_size, int) or not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be an integer in [1, n = {n}], got {batch_size!r}")
    R = layers[0][0].shape[0]
    theta = sm.flatten(layers).clone()
    shapes = [(W.shape[-2], W.shape[-1], b is not None) for W, b in layers]
    dtype, device = theta.dtype, theta.device
    loss = torch.empty(steps + 1, R, dtype=dtype, device=device)
    gsq, trm = torch.empty_like(loss), torch.empty_like(loss)
    snorm = torch.empty(steps, R, dtype=dtype, device=device)
    lrs = torch.full_like(snorm, float("nan"))
    g_avg = torch.zeros_like(theta)
    nu = torch.zeros_like(theta)
    snaps, want = {}, set(int(s) for s in snapshot_steps)
    for t in range(steps + 1):
        cur = sm.unflatten(theta, shapes)
        mo = sm.exact_moments(cur, x, y)
        loss[t], gsq[t], trm[t] = mo.loss, mo.mu_sq, mo.trace_m
        if not bool(torch.isfinite(mo.loss).all()):
            r = int((~torch.isfinite(mo.loss)).nonzero()[0])
            raise FloatingPointError(f"rule {rule!r}: run {r} of {R} has a non-finite training loss at step {t}")
        if t in want:
            snaps[t] = theta.clone()
        if t == steps:
            break
        idx = torch.randint(0, n, (R, batch_size), generator=generator, device=generator.device).to(device)
        flat = idx.reshape(-1)
        xb = x.index_select(0, flat).view(R, batch_size, *x.shape[1:])
        yb = y.index_select(0, flat).view(R, batch_size)
        g, _ = sm.minibatch_grads(cur, xb, yb)
        if rule == "sgd":
            step = lr * g
            lrs[t] = lr
        elif rule == "adaptive":
            tr = mo.trace_m if trace == "printed" else (mo.trace_m - mo.mu_sq) / batch_size + mo.mu_sq
            eta = adaptive_lr(mo.mu_sq, tr, L, c)
            step = eta[:, None] * g
            lrs[t] = eta
        elif rule == "precond":
            dm = mo.diag_m if trace == "printed" else (mo.diag_m - mo.mu.square()) / batch_size + mo.mu.square()
            step = preconditioner(mo.mu, dm, L, c) * g
        elif rule == "adam":
            g_avg = gammas[0] * g_avg + (1 - gammas[0]) * g
            nu = gammas[1] * nu + (1 - gammas[1]) * g.square()
            step = lr * adam_direction(g_avg, nu)
        elif rule == "ideal_adam":
            step = ideal_adam_step(mo.mu, mo.diag_m, lr)
        else:
            step = proposed_step(mo.mu, mo.diag_m, g, lr)
        snorm[t] = step.norm(dim=1)
        theta = theta - step
    return RuleResult(loss, gsq, trm, snorm, lrs, sm.unflatten(theta, shapes), snaps)
