"""The figures the vmf training chapters share: a κ̂-over-training panel (Figures 5 and 6) and a
Figure 7 column (normalised curves and SNR scatters of one run)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from sgdbook import stats

from .criteria import SNRDrivers
from .runs import Run, aligned

__all__ = ["kappa_panel", "fig7_column"]


def kappa_panel(ax, runs: Sequence[Run], baseline: float | None = None, *, color: str = "black") -> None:
    """κ̂ over training on log-log axes (epoch + 1, so that the initialisation shows): every run as a
    thin line with ± 2 standard errors of each measurement, the geometric mean over runs at the
    epochs all runs measured with its 95 % t band (on log κ̂, df = runs − 1), the end of training
    as a square at the runs' mean stopping epoch (bars: t interval; horizontal: range of stopping
    epochs) and the κ = 0 baseline of this d and n_s (dotted red)."""
    for r in runs:
        k, se = r.rows["kappa"], r.rows["kappa_se"]
        ax.errorbar(r.epochs + 1, k, yerr=2 * se, color="gray", lw=0.6, alpha=0.6, capsize=0, elinewidth=0.6)
    ep, ends, v = aligned(runs, "kappa", log=True)
    if len(runs) > 1:
        ci = stats.t_interval(v)
        mean, low, high = np.exp(ci.mean), np.exp(ci.low), np.exp(ci.high)
    else:
        mean = low = high = np.exp(v[0])
    ax.plot(ep + 1, mean[:-1], "o-", color=color, ms=3)
    ax.fill_between(ep + 1, low[:-1], high[:-1], color=color, alpha=0.2, lw=0)
    x_end = ends.mean() + 1
    ax.errorbar([x_end], [mean[-1]], yerr=[[mean[-1] - low[-1]], [high[-1] - mean[-1]]],
                xerr=[[x_end - ends.min() - 1], [ends.max() + 1 - x_end]], fmt="s", color=color, ms=5)
    if baseline is not None:
        ax.axhline(baseline, color="tab:red", ls=":", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="epoch + 1", ylabel="κ̂")


def _log_ticks(axis, lo: float, hi: float, count: int = 3) -> None:
    """A few labelled ticks evenly spaced on a log axis (two significant digits), whatever its range:
    the default locator labels nothing on an axis spanning less than a decade."""
    ticks = [float(f"{t:.2g}") for t in np.geomspace(lo, hi, count + 2)[1:-1]]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(NullLocator())


_CURVES = [("train_loss", "train loss", "tab:green"), ("valid_loss", "valid loss", "tab:purple"),
           ("snr", "SNR", "tab:orange"), ("norm_snr", "normSNR", "tab:blue"), ("kappa", "κ̂", "tab:red")]


def fig7_column(top, bottom, run: Run, drivers: SNRDrivers, *, legend: bool = False) -> None:
    """One setup of Figure 7 for one run: (top) training and validation loss, SNR, normSNR and κ̂, each
    divided by its maximum over training, against epoch + 1; (bottom) SNR against κ̂ (red, bottom
    axis) and against normSNR (blue, top axis), log-log, with Spearman's ρ in the legend."""
    w, ep = run.rows, run.epochs + 1
    for key, label, color in _CURVES:
        top.plot(ep, w[key] / np.nanmax(w[key]), "-o", ms=2.5, color=color, label=label)
    top.set(xscale="log", xlabel="epoch + 1", ylabel="value / its maximum")
    if legend:
        top.legend()
    bottom.loglog(w["kappa"], w["snr"], "o", color="tab:red", label=f"SNR–κ̂, ρ = {drivers.rho_kappa:.2f}")
    twin = bottom.twiny()
    twin.loglog(w["norm_snr"], w["snr"], "s", color="tab:blue", mfc="none", label=f"SNR–normSNR, ρ = {drivers.rho_norm:.2f}")
    bottom.set(xlabel="κ̂ (red, bottom axis)", ylabel="SNR")
    twin.set_xlabel("normSNR (blue, top axis)")
    for axis, lim in ((bottom.xaxis, bottom.get_xlim()), (twin.xaxis, twin.get_xlim()), (bottom.yaxis, bottom.get_ylim())):
        _log_ticks(axis, *lim)
    h1, l1 = bottom.get_legend_handles_labels()
    h2, l2 = twin.get_legend_handles_labels()
    bottom.legend(h1 + h2, l1 + l2, loc="lower right")
