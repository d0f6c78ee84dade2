"""Chapter support for Sec. 5.1 (Figs. 8–10, 18–20, 23, 24): curves at loss quantiles, the
conditional distribution of Δ_t at the quantile runs, and the criteria fixed before the run.

- :func:`quantile_curves`: for an ensemble, on log-spaced windows of steps, the ``q``-quantiles of
  the full training loss (with distribution-free 95 % intervals) and, for the stochastic-gradient
  cosine and norm, the median over the runs whose loss rank lies within ``q ± band`` (the run at
  the quantile and its neighbours) of each run's window average, with its 95 % interval.
- :func:`delta_at_quantiles`: ``Δ_t | θ_t`` sampled at the runs holding chosen loss quantiles at
  chosen steps, with the gradient statistics of Theorem 1 at the same points.
- :func:`easy_criteria`, :func:`hard_criteria`, :func:`early_drop`, :func:`delta_phases`,
  :func:`count_phases`: the chapter's criteria, as functions of the measured curves.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from sgdbook import stats

from . import stacked_mlp as sm
from . import theory

__all__ = [
    "Band",
    "Curves",
    "DeltaAtQuantiles",
    "count_phases",
    "delta_at_quantiles",
    "delta_phases",
    "early_drop",
    "easy_criteria",
    "hard_criteria",
    "quantile_curves",
    "var_interval",
]


@dataclass(frozen=True)
class Band:
    """An estimated curve with its 95 % interval: arrays ``[Q, T]``."""

    est: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    def at(self, j: int, i: int) -> tuple[float, float, float]:
        return float(self.est[j, i]), float(self.lo[j, i]), float(self.hi[j, i])


@dataclass(frozen=True)
class Curves:
    """Loss quantiles and band medians of cos(g_t, g_{t−1}) and ‖g_t‖ at the steps ``t`` (``[T]``)."""

    t: np.ndarray
    q: tuple[float, ...]
    loss: Band
    cos: Band
    gnorm: Band


def quantile_curves(result, q=(0.1, 0.25, 0.5, 0.75, 0.9), band: float = 0.05, bins: int = 40) -> Curves:
    """Curves of an :class:`sgdbook.ensemble.EnsembleResult` on ``bins`` log-spaced windows of steps.

    In each window ``[a, b)`` (one step wide early on) the representative step is the middle of the
    window's loss evaluations: the loss quantiles (with distribution-free 95 % intervals) and the
    runs' loss ranks are taken there. For the cosine and the norm of the stochastic gradient, each
    run's values are averaged over all SGD steps of the window, and the median over the runs whose
    rank share lies within ``q ± band`` is reported with its 95 % interval (runs are independent,
    so the interval is honest; averaging over the window removes the step-to-step noise of a
    single minibatch). Windows without a loss evaluation are skipped.
    """
    steps = result.loss.shape[0]
    ev = [i for i, t in enumerate(result.eval_steps) if t < steps]
    te = np.array([result.eval_steps[i] for i in ev])
    full = result.full_loss[ev].double().cpu().numpy()  # [T, R]
    full = np.where(np.isfinite(full), full, np.inf)
    cos_all = result.cos_prev.double().cpu().numpy()
    gn_all = result.grad_norm.double().cpu().numpy()
    R = full.shape[1]
    edges = np.unique(np.concatenate([[0], np.round(np.geomspace(1, steps, bins)).astype(int), [steps]]))
    ts, L, C, G = [], ([], [], []), ([], [], []), ([], [], [])
    for a, b in zip(edges[:-1], edges[1:]):
        inside = np.nonzero((te >= a) & (te < b))[0]
        if inside.size == 0:
            continue
        rep = inside[inside.size // 2]
        ts.append(int(te[rep]))
        loss_rep = full[rep]
        rank = np.argsort(np.argsort(loss_rep, kind="stable"), kind="stable") / max(R - 1, 1)
        with warnings.catch_warnings():  # the cosine is NaN at t = 0 (no previous gradient)
            warnings.simplefilter("ignore", RuntimeWarning)
            cos_w = np.nanmean(cos_all[a:b], axis=0)
            gn_w = np.nanmean(gn_all[a:b], axis=0)
        for acc, arr in ((L, None), (C, cos_w), (G, gn_w)):
            rows = []
            for qq in q:
                if arr is None:
                    rows.append(stats.quantile_interval(np.where(np.isinf(loss_rep), np.nan, loss_rep), qq))
                else:
                    rows.append(stats.quantile_interval(np.where(np.abs(rank - qq) <= band + 1e-12, arr, np.nan), 0.5))
            for k in range(3):
                acc[k].append([float(r[k]) for r in rows])
    mk = lambda acc: Band(*(np.asarray(a).T for a in acc))  # noqa: E731  [Q, T]
    return Curves(np.asarray(ts), tuple(q), mk(L), mk(C), mk(G))


def _idx(c: Curves, t: int) -> int:
    return int(np.argmin(np.abs(c.t - t)))


def _window(c: Curves, a: float, b: float) -> np.ndarray:
    return (c.t >= a) & (c.t <= b)


def easy_criteria(c: Curves, steps: int) -> dict:
    """Fig. 8(a)'s claims for a problem with true labels (the thresholds are the chapter's criterion):

    - ``fast``: the upper 95 % bound of the 90th-percentile loss at t = 50 is below 0.1;
    - ``early_drop``: at the median, loss and ‖g‖ at t = 10 are below half their t = 0 values
      (interval against interval), and the mean cos over t = 1…5 exceeds its mean over the last half;
    - ``to_zero``: the 90th-percentile loss at the end is below 1 % of the initial median loss,
      and the 90th-percentile band's ‖g‖ below 5 % of the initial median ‖g‖;
    - ``steady_cos``: the median band's cos differs by less than 0.05 between the third and the
      last quarter of the run; ``cos_level`` (reported) is its median over the last half.
    """
    j50, j90 = c.q.index(0.5), c.q.index(0.9)
    i0, i10, i50, iT = _idx(c, 0), _idx(c, 10), _idx(c, 50), len(c.t) - 1
    fast = c.loss.hi[j90, i50] < 0.1
    drop_lg = bool((c.loss.hi[j50, i10] < 0.5 * c.loss.lo[j50, i0]) and (c.gnorm.hi[j50, i10] < 0.5 * c.gnorm.lo[j50, i0]))
    early_cos = np.nanmean(c.cos.est[j50, _window(c, 1, 5)])
    late_cos = np.nanmean(c.cos.est[j50, _window(c, steps / 2, steps)])
    drop = bool(drop_lg and early_cos > late_cos)
    to_zero = bool(c.loss.est[j90, iT] < 0.01 * c.loss.est[j50, i0] and c.gnorm.est[j90, iT] < 0.05 * c.gnorm.est[j50, i0])
    q3 = np.nanmedian(c.cos.est[j50, _window(c, steps / 2, 3 * steps / 4)])
    q4 = np.nanmedian(c.cos.est[j50, _window(c, 3 * steps / 4, steps)])
    return dict(fast=bool(fast), early_drop=drop, early_drop_loss_gnorm=drop_lg, early_drop_cos=bool(early_cos > late_cos),
                to_zero=to_zero, steady_cos=bool(abs(q3 - q4) < 0.05),
                loss_q90_t50=float(c.loss.est[j90, i50]), cos_level=float(np.nanmedian(c.cos.est[j50, _window(c, steps / 2, steps)])),
                cos_early=float(early_cos), final_loss_q90=float(c.loss.est[j90, iT]))


def hard_criteria(c: Curves, steps: int) -> dict:
    """Fig. 8(b)'s claims for a problem with random labels (the chapter's criterion):

    - ``early_drop``: every loss quantile at t = 20 is below half its t = 0 value (intervals), and
      the median band's cos falls by at least 0.1 below its t = 1 value within the first 10 % of the run;
    - ``hump``: the median band's ‖g‖ rises after a first low: some t₂ > t₁ ≥ 1 with the lower 95 %
      bound at t₂ above the upper bound at t₁ and a rise of at least 20 %; ``peak_t`` is the
      step of the largest ‖g‖ after that low;
    - ``valley_at_peak``: the lowest cos (median band, first half of the run) lies within a factor
      √10 of ``peak_t`` (only with a hump);
    - ``late``: at the end ‖g‖ is below 10 % of its maximum after t = 0, the median band's cos over
      the last quarter of the run is within 0.05 of 0, and the median loss is below 0.05.
    """
    j50 = c.q.index(0.5)
    i0, i1, i20, iT = _idx(c, 0), _idx(c, 1), _idx(c, 20), len(c.t) - 1
    loss_drop = bool(np.all(c.loss.hi[:, i20] < 0.5 * c.loss.lo[:, i0]))
    cos = c.cos.est[j50]
    early = _window(c, 1, steps / 10)
    cos_drop = bool(np.nanmin(cos[early]) <= cos[i1] - 0.1) if early.any() else False
    g, glo, ghi = c.gnorm.est[j50], c.gnorm.lo[j50], c.gnorm.hi[j50]
    hump, peak_t, t_low = False, None, None
    run_min_hi, run_min_est, arg_low = np.inf, np.inf, None
    for i in range(len(c.t)):
        if c.t[i] < 1:
            continue
        if glo[i] > run_min_hi and g[i] >= 1.2 * run_min_est:
            hump, t_low = True, int(c.t[arg_low])
            break
        if ghi[i] < run_min_hi:
            run_min_hi, run_min_est, arg_low = ghi[i], g[i], i
    if hump:
        after = c.t > t_low
        k = np.nanargmax(np.where(after, g, -np.inf))
        peak_t = int(c.t[k])
    first_half = _window(c, 1, steps / 2)
    smooth = np.array([np.nanmedian(cos[max(0, i - 2): i + 3]) for i in range(len(cos))])
    valley_t = int(c.t[first_half][np.nanargmin(smooth[first_half])]) if first_half.any() else -1
    valley = bool(hump and abs(np.log10((valley_t + 1) / (peak_t + 1))) <= 0.5)
    last = _window(c, 0.75 * steps, steps)
    late_cos = float(np.nanmedian(cos[last]))
    gmax = float(np.nanmax(g[c.t >= 1]))
    late = bool(g[iT] < 0.1 * gmax and abs(late_cos) < 0.05 and c.loss.est[j50, iT] < 0.05)
    return dict(early_drop=bool(loss_drop and cos_drop), early_drop_loss=loss_drop, early_drop_cos=cos_drop,
                hump=hump, valley_at_peak=valley, late=late,
                peak_t=-1 if peak_t is None else peak_t, valley_t=valley_t, late_cos=late_cos,
                final_gnorm_ratio=float(g[iT] / gmax), final_loss_median=float(c.loss.est[j50, iT]))


def early_drop(c: Curves, until: int = 10) -> np.ndarray:
    """Fig. 19's claim per quantile ``[Q]``: ‖g‖ (band median) falls significantly below its t = 0
    value at some 1 ≤ t ≤ ``until`` (upper 95 % bound below the lower bound at t = 0)."""
    i0 = _idx(c, 0)
    w = _window(c, 1, until)
    return np.array([bool(np.nanmin(c.gnorm.hi[j, w]) < c.gnorm.lo[j, i0]) for j in range(len(c.q))])


# ------------------------------------------------------------------ Δ at the quantile runs


def var_interval(samples: torch.Tensor, level: float = 0.95):
    """Sample variance per row of ``samples`` ``[P, K]`` with an asymptotic interval from the fourth
    moment, ``Var(s²) ≈ (μ₄ − σ⁴)/K`` (``K`` in the hundreds): ``(var, low, high)`` numpy arrays."""
    from scipy.stats import norm

    x = samples.double().cpu().numpy()
    K = x.shape[1]
    d = x - x.mean(1, keepdims=True)
    v = (d**2).sum(1) / (K - 1)
    m4 = (d**4).mean(1)
    se = np.sqrt(np.maximum(m4 - v**2, 0) / K)
    z = norm.ppf(0.5 + level / 2)
    return v, np.maximum(v - z * se, 0), v + z * se


@dataclass(frozen=True)
class DeltaAtQuantiles:
    """``Δ_t | θ_t`` at the runs holding the quantiles ``q`` at the steps ``t``: arrays ``[Q, T]``
    (``samples`` ``[Q, T, K]``) and Theorem 1's statistics at the same points."""

    t: np.ndarray
    q: tuple[float, ...]
    runs: np.ndarray
    samples: np.ndarray
    mean: np.ndarray
    mean_lo: np.ndarray
    mean_hi: np.ndarray
    var: np.ndarray
    var_lo: np.ndarray
    var_hi: np.ndarray
    skew: np.ndarray
    sigma_fro: np.ndarray
    sigma_op: np.ndarray
    sigma_half_mu: np.ndarray
    mu_sq: np.ndarray
    trace_m: np.ndarray
    theta: torch.Tensor  # [Q, T, p]


def delta_at_quantiles(trained, q, draws: int, generator: torch.Generator) -> DeltaAtQuantiles:
    """For a :class:`sgdbook.papers.hessian_sgd.setup.Trained` ensemble with snapshots, sample
    ``draws`` minibatches (with replacement) at the runs holding the loss quantiles ``q`` (ranked
    by the full training loss at each snapshot step)."""
    res, ds = trained.result, trained.data
    steps = [t for t in res.snapshot_steps if t < trained.steps]
    layers_of = lambda t: sm.layers_from_params(trained.base, res.snapshot(t))  # noqa: E731
    pts, runs = [], []
    for t in steps:
        layers = layers_of(t)
        loss = sm.losses(layers, ds.x, ds.y).mean(1)
        r = torch.as_tensor(np.asarray([int(v) for v in _quantile_rank_runs(loss, q)]))
        runs.append(r)
        pts.append(sm.flatten(layers)[r])
    theta = torch.stack(pts, 1)  # [Q, T, p]
    Q, T, p = theta.shape
    like = layers_of(steps[0])
    flat = theta.reshape(Q * T, p)
    G = sm.per_example_grads(sm.unflatten(flat, like), ds.x, ds.y)

    def batched_loss(th):
        return sm.losses(sm.unflatten(th, like), ds.x, ds.y).mean(1)

    d = theory.delta_samples(batched_loss, flat, G, trained.lr, trained.m, draws, generator)
    st = theory.SGStats.from_grads(G)
    s = d.samples
    mci = stats.t_interval(s.double().cpu().numpy(), axis=1)
    v, vlo, vhi = var_interval(s)
    x = s.double().cpu().numpy()
    dd = x - x.mean(1, keepdims=True)
    skew = (dd**3).mean(1) / np.maximum((dd**2).mean(1), 1e-300) ** 1.5
    rs = lambda a: np.asarray(a).reshape(Q, T)  # noqa: E731
    np_ = lambda a: a.double().cpu().numpy()  # noqa: E731
    return DeltaAtQuantiles(
        t=np.array(steps), q=tuple(q), runs=torch.stack(runs, 1).numpy(), samples=x.reshape(Q, T, -1),
        mean=rs(mci.mean), mean_lo=rs(mci.low), mean_hi=rs(mci.high), var=rs(v), var_lo=rs(vlo), var_hi=rs(vhi),
        skew=rs(skew), sigma_fro=rs(np_(st.sigma_fro)), sigma_op=rs(np_(st.sigma_op)), sigma_half_mu=rs(np_(st.sigma_half_mu)),
        mu_sq=rs(np_(st.mu_sq)), trace_m=rs(np_(st.trace_m)), theta=theta,
    )


def _quantile_rank_runs(loss: torch.Tensor, q) -> list[int]:
    from sgdbook.ensemble import quantile_runs

    return [int(v) for v in quantile_runs(loss[None], q)[:, 0]]


def delta_phases(d: DeltaAtQuantiles, j: int) -> dict:
    """Fig. 9's two phases for quantile run ``j`` (the chapter's criterion):

    - ``var_rises``: the variance at some t > 0 is significantly above its t = 0 value (intervals);
    - ``mean_falls``: the mean at some t > 0 is significantly below its t = 0 value;
    - ``settles``: the final variance is below 1 % of the largest and the final |mean| below 1 % of
      the largest |mean|;
    - ``symmetric``: the median |skewness| over the steps is below 1.
    """
    v, vlo, vhi = d.var[j], d.var_lo[j], d.var_hi[j]
    m, mlo, mhi = d.mean[j], d.mean_lo[j], d.mean_hi[j]
    rises = bool(np.any(vlo[1:] > vhi[0]))
    falls = bool(np.any(mhi[1:] < mlo[0]))
    settles = bool(v[-1] < 0.01 * v.max() and abs(m[-1]) < 0.01 * np.abs(m).max())
    return dict(var_rises=rises, mean_falls=falls, settles=settles, symmetric=bool(np.median(np.abs(d.skew[j])) < 1),
                t_var_max=int(d.t[int(np.argmax(v))]), var_ratio_end=float(v[-1] / v.max()),
                median_abs_skew=float(np.median(np.abs(d.skew[j]))))


def count_phases(est: np.ndarray, lo: np.ndarray, hi: np.ndarray, persist: int = 2) -> int:
    """Monotone phases of a curve known up to intervals ``[lo, hi]`` around ``est`` along its points.

    Walking along the curve, the current extremum is the highest (in a rising phase) or lowest
    (falling) point so far; a new phase starts when ``persist`` consecutive points lie significantly
    on the other side of it (their intervals do not overlap the extremum's), so that a single
    outlying point does not count. A rise-then-fall curve has 2 phases, a curve with no
    significant move 1.
    """
    phases, d, e, n = 1, 0, 0, len(est)

    def beyond(i, sign, ref):
        return all((lo[j] > hi[ref]) if sign > 0 else (hi[j] < lo[ref]) for j in range(i, min(i + persist, n)))

    for i in range(1, n):
        if d == 0:
            if beyond(i, 1, e):
                d, e = 1, i
            elif beyond(i, -1, e):
                d, e = -1, i
        elif beyond(i, -d, e):
            phases, d, e = phases + 1, -d, i
        elif (est[i] - est[e]) * d > 0:
            e = i
    return phases
