"""Chapter support for Sec. 5.2–5.5 (the deviation-bounds chapter): Theorem 1 at many points of
Gauss-10 runs, the model (25) against real minibatches, the escape problems, the corollaries along
SGD paths, the loss process from fixed starting points (Theorem 2) and Monte-Carlo checks of the
step rules (Theorem 3). Everything is built from :mod:`.theory`, :mod:`.stacked_mlp` and
:mod:`.steps`; the criteria live in the notebook.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sgdbook import ensemble
from sgdbook.gradients import all_minibatches

from . import setup
from . import stacked_mlp as sm
from . import theory

__all__ = [
    "EscapeResult",
    "Theorem1Points",
    "corollary1_path",
    "corollary2_path",
    "escape_least_squares",
    "escape_logistic",
    "fixed_init_runs",
    "taylor_at_points",
    "theorem1_points",
]


def taylor_at_points(spec, x, y, theta: torch.Tensor, G: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``Tr(H_f M^(m))`` at each point ``θ`` (``[P, p]``; per-example gradients ``G`` ``[P, n, p]``):
    ``n + 1`` exact Hessian-vector products per point, batched over all points."""
    P, n, p = G.shape
    mu = G.mean(1, keepdim=True)
    V = torch.cat([G - mu, mu], 1)  # [P, n + 1, p]
    pts = theta[:, None, :].expand(P, n + 1, p).reshape(-1, p)
    HV = sm.hvp_at_points(spec, x, y, pts)(V.reshape(-1, p)).view(P, n + 1, p)
    q = (V * HV).sum(-1)
    return q[:, :-1].mean(1) / batch_size + q[:, -1]


@dataclass(frozen=True, eq=False)
class Theorem1Points:
    """Theorem 1 at the points of a :class:`.dynamics.DeltaAtQuantiles` (arrays ``[Q, T]``):
    ``L`` searched on the step segments, ``L_point`` = max |λ(H_f(θ_t))|, the bound's terms
    (``t1``, flattened to ``[Q·T]``) and the largest tail constants ``c_upper``, ``c_lower`` that
    make (28) and (29) hold at every threshold, with the share of draws above the upper end."""

    L: np.ndarray
    L_point: np.ndarray
    t1: theory.Theorem1
    c_upper: np.ndarray
    c_lower: np.ndarray
    above_upper: np.ndarray
    below_lower: np.ndarray


def theorem1_points(trained, d, segment_draws: int, lanczos_steps: int, generator: torch.Generator) -> Theorem1Points:
    """Theorem 1's quantities at every (quantile run, step) point ``d`` of the ensemble ``trained``."""
    spec = sm.spec_of(trained.base)
    x, y, lr, m = trained.data.x, trained.data.y, trained.lr, trained.m
    Q, T, p = d.theta.shape
    flat = d.theta.reshape(Q * T, p)
    G = sm.per_example_grads(sm.unflatten(flat, spec), x, y)
    hvp_at = lambda pts: sm.hvp_at_points(spec, x, y, pts)  # noqa: E731
    L = theory.segment_smoothness(hvp_at, flat, G, lr, m, segment_draws, generator, steps=lanczos_steps)
    lo, hi = theory.extreme_eigenvalues(hvp_at(flat), Q * T, p, lanczos_steps, generator, dtype=flat.dtype, device=flat.device)
    L_point = torch.maximum(lo.abs(), hi.abs())
    stats_ = theory.SGStats.from_grads(G)
    t1 = theory.theorem1(stats_, lr, m, L, tr_h_mm=taylor_at_points(spec, x, y, flat, G, m))
    samples = torch.as_tensor(d.samples.reshape(Q * T, -1), dtype=flat.dtype, device=flat.device)
    pos = samples - t1.upper[:, None]
    neg = t1.lower[:, None] - samples
    scale = samples.std(1)
    s = torch.logspace(-3, 1, 40, dtype=flat.dtype, device=flat.device)[None, :] * scale[:, None]  # thresholds per point
    c_up = torch.stack([theory.tail_constant(pos[j:j + 1], (t1.alpha1[j:j + 1], t1.alpha2[j:j + 1], t1.alpha3[j:j + 1]), s[j])[0]
                        for j in range(Q * T)])
    c_lo = torch.stack([theory.tail_constant(neg[j:j + 1], (t1.beta1[j:j + 1], t1.alpha2[j:j + 1], t1.alpha3[j:j + 1]), s[j])[0]
                        for j in range(Q * T)])
    rs = lambda a: a.reshape(Q, T).double().cpu().numpy()  # noqa: E731
    return Theorem1Points(rs(L), rs(L_point), t1, rs(c_up), rs(c_lo), rs((pos > 0).double().mean(1)), rs((neg > 0).double().mean(1)))


# --------------------------------------------------------------------------- escape


@dataclass(frozen=True)
class EscapeResult:
    """Δ at a stationary point (``μ = 0`` to rounding, ``M ≠ 0``) over all ``n^m`` minibatches:
    ``mean`` (exact), ``share_positive`` (P[Δ > 0]), the escape remark's centre ``(η²/2) L Tr M``
    (``centre``) and the same with ``Tr M^(m)`` (``centre_batch``), ``taylor`` = (η²/2) Tr(H M^(m)),
    ``grad_norm`` = ‖μ‖, ``L``, ``lr``."""

    mean: float
    share_positive: float
    centre: float
    centre_batch: float
    taylor: float
    grad_norm: float
    L: float
    lr: float
    minibatches: int


def _escape(loss, theta, cf, L, lr, m) -> EscapeResult:
    n = cf.G.shape[0]
    idx = all_minibatches(n, m, device=cf.G.device, replacement=True)
    sg = cf.G[idx].mean(1)
    delta = loss(theta[None] - lr * sg) - loss(theta[None])
    st = theory.SGStats.from_grads(cf.G)
    mu = cf.mu
    mm = (cf.M - torch.outer(mu, mu)) / m + torch.outer(mu, mu)
    return EscapeResult(
        mean=float(delta.mean()), share_positive=float((delta > 0).double().mean()),
        centre=0.5 * lr**2 * L * float(st.trace_m), centre_batch=0.5 * lr**2 * L * float(st.trace_m_batch(m)),
        taylor=0.5 * lr**2 * float((cf.H * mm).sum()), grad_norm=float(mu.norm()), L=L, lr=lr, minibatches=idx.shape[0],
    )


def escape_least_squares(n: int, p: int, batch_size: int, generator: torch.Generator, lr_times_L: float = 1.0) -> EscapeResult:
    """Least squares with ``n > p`` noisy targets at its minimiser (``μ = 0``, ``M ≠ 0``), ``η = lr_times_L / L``."""
    X = torch.randn(n, p, generator=generator, dtype=torch.float64)
    y = X @ torch.randn(p, generator=generator, dtype=torch.float64) + torch.randn(n, generator=generator, dtype=torch.float64)
    theta = torch.linalg.lstsq(X, y[:, None]).solution[:, 0]
    cf = theory.least_squares(X, y, theta, 1.0)
    L = float(torch.linalg.eigvalsh(cf.H)[-1])
    return _escape(lambda T: (T @ X.T - y).square().sum(-1) / (2 * n), theta, cf, L, lr_times_L / L, batch_size)


def escape_logistic(n: int, p: int, batch_size: int, generator: torch.Generator, lr_times_L: float = 1.0) -> EscapeResult:
    """Logistic regression with overlapping classes (``n > p``) at its minimiser (Newton), with the
    global ``L = λ_max(XᵀX)/(4n)`` and ``η = lr_times_L / L``."""
    X = torch.randn(n, p, generator=generator, dtype=torch.float64)
    prob = torch.sigmoid(X @ torch.randn(p, generator=generator, dtype=torch.float64))
    y = (torch.rand(n, generator=generator, dtype=torch.float64) < prob).to(torch.float64)
    theta = theory.logistic_mle(X, y)
    cf = theory.logistic(X, y, theta)
    L = float(torch.linalg.eigvalsh(X.T @ X)[-1]) / (4 * n)
    loss = lambda T: (F.softplus(T @ X.T) - y * (T @ X.T)).mean(-1)  # noqa: E731
    return _escape(loss, theta, cf, L, lr_times_L / L, batch_size)


# ---------------------------------------------------------------------- corollaries


def _sgd_path(grad_rows, theta0, lr, m, points, generator, n):
    """``points`` iterates of SGD (with replacement) from ``theta0``: ``grad_rows(θ)`` gives ``[n, p]``."""
    out, theta = [theta0], theta0
    for _ in range(points - 1):
        idx = torch.randint(0, n, (m,), generator=generator)
        theta = theta - lr * grad_rows(theta)[idx].mean(0)
        out.append(theta)
    return out


def corollary1_path(X, y, sigma: float, batch_size: int, points: int, generator: torch.Generator) -> list[theory.Corollary1]:
    """Corollary 1 at ``points`` iterates of SGD run with the corollary's own step ``η = α/(βL)``."""
    n, p = X.shape
    c0 = theory.corollary1(X, y, torch.zeros(p, dtype=X.dtype), sigma, batch_size)
    path = _sgd_path(lambda t: theory.least_squares(X, y, t, sigma).G, torch.zeros(p, dtype=X.dtype), c0.lr, batch_size, points, generator, n)
    return [theory.corollary1(X, y, t, sigma, batch_size) for t in path]


def corollary2_path(X, y, batch_size: int, points: int, generator: torch.Generator) -> list[theory.Corollary2]:
    """Corollary 2 at ``points`` iterates of SGD run with ``η = α/(βL)`` (the proof's ``n × n`` α)."""
    n, p = X.shape
    c0 = theory.corollary2(X, y, torch.zeros(p, dtype=X.dtype), batch_size)
    path = _sgd_path(lambda t: theory.logistic(X, y, t).G, torch.zeros(p, dtype=X.dtype), c0.lr, batch_size, points, generator, n)
    return [theory.corollary2(X, y, t, batch_size) for t in path]


# ------------------------------------------------------------------------ Theorem 2


def fixed_init_runs(setting: str, inits: int, per_init: int, steps: int, batch_size: int, generator: torch.Generator,
                    snapshot_every: int, device=None):
    """``inits`` starting points ``θ₀`` each trained ``per_init`` times (the runs of one ``θ₀`` differ
    only in their minibatches), full loss at every step, snapshots every ``snapshot_every`` steps.
    Returns (data, base, result); run ``r`` belongs to start ``r // per_init``."""
    t = setup.TABLE2[setting]
    ds = setup.make_data(setting, dtype=torch.float64, device=device)
    base = setup.gauss_net(t["k"]).to("meta")
    p0 = setup.init_params(base, inits, generator, dtype=torch.float64, device=device)
    params = {k: v.repeat_interleave(per_init, 0) for k, v in p0.items()}
    snaps = sorted(set(range(0, steps, snapshot_every)) | {steps})
    res = ensemble.ensemble_sgd(base, params, ds.x, ds.y, F.cross_entropy, lr=t["lr"], batch_size=batch_size, steps=steps,
                                generator=generator, eval_every=1, snapshot_at=snaps)
    return ds, base, res
