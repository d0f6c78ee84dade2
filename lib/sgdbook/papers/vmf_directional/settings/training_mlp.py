"""Settings of ``05_training_mlp``: FNN, DFNN, FNN+BN and DFNN+BN trained to the stopping rule with
κ̂, the SNR and normSNR measured along the way (Figure 6 (a, b, e, f) and Figure 3(b–c))."""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

from ._training import COMMON, MLP, described, merged

_EXTRA = {s: dict(baseline_reps=r) for s, r in (("smoke", 10), ("book", 50), ("paper", 50))}
_SETTINGS = merged(COMMON, MLP, extra=_EXTRA)
_DESC, _PAPER = described(_SETTINGS, {"baseline_reps": "simulations of the κ = 0 baseline per (d, n_s)"},
                          {"baseline_reps": "5 (Table 1)"})

SETTINGS = ScaleTable(settings=_SETTINGS, descriptions=_DESC, paper_value=_PAPER)
