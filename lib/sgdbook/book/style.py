"""One matplotlib style for the whole book.

Titles, labels, ticks and legends get their sizes here, so that notebooks do not pass font sizes
(``fontsize=`` only where one text must differ from the rest, e.g. an annotation); panel labels
follow the paper's ("(a)", "(b)", ...) through :func:`panel_label`.
"""

from __future__ import annotations

import matplotlib as mpl
import numpy as np

#: The book's rcParams: legible at the page width of the rendered book (about 800 px).
RC: dict[str, object] = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "figure.figsize": (6.4, 4.0),
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8,
    "legend.framealpha": 0.8,
    "figure.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "lines.linewidth": 1.5,
    "lines.markersize": 4,
    "errorbar.capsize": 2,
    "image.cmap": "viridis",
}

#: Small text (annotations, dense legends), the one size notebooks may ask for by name.
SMALL = 8


def apply() -> None:
    """Set the book's style for the rest of the session (idempotent)."""
    mpl.rcParams.update(RC)


def panel_label(ax, label: str) -> None:
    """Write the paper's panel label (e.g. ``"(a)"``) in the top-left corner of ``ax``."""
    ax.text(-0.12, 1.04, label, transform=ax.transAxes, fontweight="bold", va="bottom", ha="left")


def band(ax, x, curves, *, log: bool = False, level: float = 0.95, alpha: float = 0.2, limits=None, **kw):
    """Plot the mean of ``curves`` (``[replicates, points]``) against ``x`` with its Student-t
    ``level`` interval as a band (no band for a single replicate); returns the line.

    ``log=True`` takes the mean and interval of ``log(curves)`` and draws them back on the original
    scale (the geometric mean, for positive quantities on a log axis). ``kw`` goes to ``ax.plot``
    (``color``, ``label``, ``marker``, ``ls``, ...); the band takes the line's colour. ``limits``:
    ``(low, high)`` the quantity cannot leave (an accuracy's ``(0, 1)``, a cosine's ``(-1, 1)``):
    the band is cut there, and the caption should say so.
    """
    from ..stats import t_interval

    y = np.asarray(curves, dtype=float)
    if y.ndim == 1:
        y = y[None]
    z = np.log(y) if log else y
    back = np.exp if log else (lambda v: v)
    (line,) = ax.plot(x, back(z.mean(0)), **kw)
    if y.shape[0] > 1:
        ci = t_interval(z, level=level)
        lo, hi = back(ci.low), back(ci.high)
        if limits is not None:
            lo, hi = np.clip(lo, *limits), np.clip(hi, *limits)
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=alpha, lw=0)
    return line
