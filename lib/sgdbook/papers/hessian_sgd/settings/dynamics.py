"""Settings of the hessian-sgd chapter on SGD dynamics (Sec. 5.1; Figs. 8–10, App. C Figs. 18–20, 23, 24).

Every Gauss-k setting of Table 2 at both batch sizes, trained from ``θ₀ ~ N(0, 0.5² I)`` on
standardised features (the book's deviation, see :mod:`sgdbook.papers.hessian_sgd.setup`).
``book`` keeps Table 2's iterations and learning rates and uses fewer runs; ``smoke`` also caps
the iterations (``max_steps``).
"""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

#: (setting, batch size) of every panel of Figs. 8, 18, 19, 20, in this order.
PANELS = (
    ("gauss10-0", 5), ("gauss10-15", 5), ("gauss10-0", 50), ("gauss10-15", 50),
    ("gauss2-0", 5), ("gauss2-20", 5), ("gauss2-0", 50), ("gauss2-20", 50),
)
#: Panels whose conditional Δ distributions are drawn: Fig. 9 (a, b), Fig. 23 (a, b), Fig. 24 (a, b).
DELTA_PANELS = (
    ("gauss10-0", 5), ("gauss10-15", 5), ("gauss10-0", 50), ("gauss10-15", 50), ("gauss2-0", 50), ("gauss2-20", 50),
)
#: Loss quantiles of Figs. 8, 18–20 (the paper names the 75th and 90th) and of Figs. 9, 23, 24.
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
DELTA_QUANTILES = (0.1, 0.5, 0.9)

SETTINGS = ScaleTable(
    settings={
        "smoke": dict(
            runs_easy=20, runs_hard=12, runs_m50=8, max_steps=100, dense_until=30, eval_every=5,
            band=0.1, bins=15, delta_checkpoints=4, delta_draws=30, dtype="float64",
        ),
        "book": dict(
            runs_easy=500, runs_hard=200, runs_m50=100, max_steps=None, dense_until=100, eval_every=10,
            band=0.05, bins=40, delta_checkpoints=18, delta_draws=300, dtype="float64",
        ),
        "paper": dict(
            runs_easy=10_000, runs_hard=10_000, runs_m50=10_000, max_steps=None, dense_until=100, eval_every=1,
            band=0.01, bins=200, delta_checkpoints=60, delta_draws=10_000, dtype="float64",
        ),
    },
    descriptions={
        "runs_easy": "runs per 0 % setting with m = 5 (Gauss-10, Gauss-2)",
        "runs_hard": "runs per random-label setting with m = 5 (Gauss-10 15 %, Gauss-2 20 %)",
        "runs_m50": "runs per setting with m = 50",
        "max_steps": "cap on Table 2's iterations (None: Table 2's 100 / 3,000 / 400 / 10,000)",
        "dense_until": "full training loss recorded at every step below this one",
        "eval_every": "then every this many steps",
        "band": "half-width of the loss-rank band whose median cos and ‖g‖ stand for a quantile",
        "bins": "log-spaced windows of steps over which each run's cos and ‖g‖ are averaged",
        "delta_checkpoints": "log-spaced steps at which Δ_t | θ_t is sampled",
        "delta_draws": "minibatches drawn per (step, quantile run) for Δ_t | θ_t",
        "dtype": "floating-point type of the runs",
    },
    paper_value={
        "runs_easy": "10,000",
        "runs_hard": "10,000",
        "runs_m50": "10,000",
        "max_steps": "Table 2",
        "dense_until": "'at each iteration'",
        "eval_every": "1",
        "band": "the run at the quantile",
        "bins": "every iteration",
        "delta_checkpoints": "every iteration",
        "delta_draws": "not stated (from 10,000 runs)",
        "dtype": "not stated",
    },
)
