"""Settings of the hessian-sgd chapter on the PAC-Bayes bound (Sec. 6: Assumption 2, Definitions 1–2,
Lemma 1, Corollaries 3–4, Theorem 4; Figs. 11 and 25).

Gauss-10, 0 % and 15 % random labels, batch 5 (Fig. 11) and 50 (Fig. 25), Table 2's iterations,
``θ₀ ~ N(0, 0.5² I)`` on standardised features (the book's deviation). The prior is fixed before
training: isotropic with the initialisation's σ = 0.5, centred at 0 (the paper's Fig. 11) or at the
run's own θ₀; a declared grid of σ is tried with a union bound (``ln |grid|`` added).
"""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

#: (setting, batch size): Fig. 11 (m = 5) and Fig. 25 (m = 50), 0 % against 15 %.
PANELS = (("gauss10-0", 5), ("gauss10-15", 5), ("gauss10-0", 50), ("gauss10-15", 50))
#: δ of the bound (the paper does not state it).
DELTA = 0.05
#: The prior's σ: the initialisation's standard deviation, fixed before training.
PRIOR_SIGMA = 0.5
#: A declared grid of prior σ (Theorem 4 with a union bound over the grid): σ = 0.5 first; the larger
#: values let Hessian diagonals as small as 1/σ² = 0.01 count as "sharp".
SIGMA_GRID = (0.5, 1.0, 2.0, 5.0, 10.0)
#: α of the α-scale demonstration (Definition 1, Π α = 1; the notes' example).
ALPHAS = (4.0, 0.5, 0.5)

SETTINGS = ScaleTable(
    settings={
        "smoke": dict(runs_m5=16, runs_m50=8, max_steps=150, n_test=200, gibbs_draws=4, scale_runs=2),
        "book": dict(runs_m5=100, runs_m50=60, max_steps=None, n_test=1000, gibbs_draws=6, scale_runs=5),
        "paper": dict(runs_m5=10_000, runs_m50=10_000, max_steps=None, n_test=10_000, gibbs_draws=100, scale_runs=100),
    },
    descriptions={
        "runs_m5": "runs per label setting with m = 5 (Fig. 11)",
        "runs_m50": "runs per label setting with m = 50 (Fig. 25)",
        "max_steps": "cap on Table 2's iterations (None: 400 for 0 %, 10,000 for 15 %)",
        "n_test": "fresh test points from the same centres (labels noised as in training, and clean)",
        "gibbs_draws": "posterior samples θ' ~ Q per run for the Gibbs errors",
        "scale_runs": "trained runs on which the α-scale invariances are checked",
    },
    paper_value={
        "runs_m5": "10,000",
        "runs_m50": "10,000",
        "max_steps": "Table 2",
        "n_test": "not stated",
        "gibbs_draws": "not stated",
        "scale_runs": "— (no experiment)",
    },
)
