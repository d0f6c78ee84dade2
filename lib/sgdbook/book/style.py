"""One matplotlib style for the whole book.

Titles, labels, ticks and legends get their sizes here, so that notebooks do not pass font sizes
(``fontsize=`` only where one text must differ from the rest, e.g. an annotation); panel labels
follow the paper's ("(a)", "(b)", ...) through :func:`panel_label`.
"""

from __future__ import annotations

import matplotlib as mpl

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
