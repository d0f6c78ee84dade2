"""Settings of ``07_training_cnn``: the 14-layer CNN and its +Res, +BN, +Res+BN variants trained with
κ̂, the SNR and normSNR measured along the way (Figure 6 (c, d, g, h), Figures 7 and 9–12)."""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

from ._training import COMMON, CNN, described, merged

_EXTRA = {s: dict(baseline_reps=r) for s, r in (("smoke", 10), ("book", 50), ("paper", 50))}
_SETTINGS = merged(COMMON, CNN, extra=_EXTRA)
_DESC, _PAPER = described(_SETTINGS, {"baseline_reps": "simulations of the κ = 0 baseline per (d, n_s)"},
                          {"baseline_reps": "5 (Table 1)"})

SETTINGS = ScaleTable(settings=_SETTINGS, descriptions=_DESC, paper_value=_PAPER)
