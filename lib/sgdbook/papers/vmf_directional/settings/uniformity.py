"""Settings of ``08_uniformity``: Figure 6 and Section 4.2 judged on the runs of ``05_training_mlp``
and ``07_training_cnn`` (the same settings, so the runs are read from the run cache when those
notebooks ran first)."""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

from ._training import CNN, COMMON, MLP, described, merged

_EXTRA = {s: dict(baseline_reps=r) for s, r in (("smoke", 10), ("book", 50), ("paper", 50))}
_SETTINGS = merged(COMMON, MLP, CNN, extra=_EXTRA)
_DESC, _PAPER = described(_SETTINGS, {"baseline_reps": "simulations of the κ = 0 baseline per (d, n_s)"},
                          {"baseline_reps": "5 (Table 1)"})

SETTINGS = ScaleTable(settings=_SETTINGS, descriptions=_DESC, paper_value=_PAPER)
