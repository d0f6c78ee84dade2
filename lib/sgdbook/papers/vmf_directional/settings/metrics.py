"""Settings of ``04_metrics``: the three metrics of Section 4.1 checked by brute force, and Figure 2(a)
(norm stochasticity against the batch size at random initial points of the FNN)."""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

from ._training import COMMON, DESCRIPTIONS, MLP, PAPER_VALUES

_OWN = {
    "smoke": dict(check_n_s=6, fig2a_points=5, fig2a_batch_sizes=[1, 4, 16, 64], fig2a_n_s=20, fig2a_n=256),
    "book": dict(check_n_s=12, fig2a_points=5, fig2a_batch_sizes=[1, 4, 16, 64, 256, 1024], fig2a_n_s=100,
                 fig2a_n=10_000),
    "paper": dict(check_n_s=20, fig2a_points=5, fig2a_batch_sizes=[1, 4, 16, 64, 256, 1024, 4096], fig2a_n_s=3000,
                  fig2a_n=60_000),
}
_KEYS = ("paper_models", "mlp_width", "n_train", "n_valid", "batch_size")

SETTINGS = ScaleTable(
    settings={s: {**{k: {**COMMON[s], **MLP[s]}[k] for k in _KEYS}, **_OWN[s]} for s in ("smoke", "book", "paper")},
    descriptions={
        **{k: DESCRIPTIONS[k] for k in _KEYS},
        "check_n_s": "minibatches of the brute-force check of the three metrics",
        "fig2a_points": "random initial points of the FNN in Fig. 2(a)",
        "fig2a_batch_sizes": "batch sizes of Fig. 2(a)",
        "fig2a_n_s": "minibatches per batch size in Fig. 2(a)",
        "fig2a_n": "training examples sampled from in Fig. 2(a)",
    },
    paper_value={
        **{k: PAPER_VALUES[k] for k in _KEYS},
        "check_n_s": "no check given",
        "fig2a_points": "5",
        "fig2a_batch_sizes": "not given",
        "fig2a_n_s": "not given",
        "fig2a_n": "60,000 (MNIST)",
    },
)
