"""Settings of ``06_batch_sizes``: Figure 5, the FNN trained to the stopping rule at several batch sizes."""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

from ._training import COMMON, MLP, described, merged

_EXTRA = {
    "smoke": dict(fig5_batch_sizes=[32, 64], baseline_reps=10),
    "book": dict(fig5_batch_sizes=[64, 128, 256], baseline_reps=50),
    "paper": dict(fig5_batch_sizes=[64, 128, 256, 512, 1024], baseline_reps=50),
}
_SETTINGS = merged(COMMON, MLP, extra=_EXTRA)
_DESC, _PAPER = described(
    _SETTINGS,
    {"fig5_batch_sizes": "batch sizes of Figure 5 (FNN; training and measurement)",
     "baseline_reps": "simulations of the κ = 0 baseline per (d, n_s)"},
    {"fig5_batch_sizes": "not given ('various batch sizes'; 64 among them)", "baseline_reps": "5 (Table 1)"},
)

SETTINGS = ScaleTable(settings=_SETTINGS, descriptions=_DESC, paper_value=_PAPER)
