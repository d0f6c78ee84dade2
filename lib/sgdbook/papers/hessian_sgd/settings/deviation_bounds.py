"""Settings of the hessian-sgd chapter on the deviation bounds (Sec. 5.2–5.5: Assumption 1, Eq. 25,
Theorems 1–3, Corollaries 1–2, the escape remark and the ADAM comparison).

Gauss-10 with batch 5 (0 % and 15 % random labels) for Theorems 1–3; exact least-squares and
logistic problems for Corollaries 1–2 and the escape remark. ``book`` keeps Table 2's iterations
for the Theorem 1 runs and shortens the runs of Theorems 2 and 3 (``thm2_steps``, ``thm3_steps``).
"""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

#: Loss quantiles whose runs are examined at each checkpoint (as Fig. 9).
QUANTILES = (0.1, 0.5, 0.9)
#: Batch size of the Gauss-10 runs (Fig. 9's).
BATCH = 5
#: Theorem 3's step rules compared, and the ADAM comparison's (Sec. 5.5).
THM3_RULES = ("sgd", "adaptive-printed", "adaptive-batch", "precond")
ADAM_RULES = ("sgd", "adam", "ideal_adam", "proposed")

SETTINGS = ScaleTable(
    settings={
        "smoke": dict(
            runs=12, max_steps=120, checkpoints=4, draws=60, segment_draws=1, lanczos_steps=10,
            cor_n=6, cor_p=12, cor_points=4, cor_batch=2, escape_n=40, escape_p=5, escape_batch=2,
            thm2_inits=2, thm2_runs_per_init=6, thm2_steps=60,
            thm3_runs=6, thm3_steps=60, thm3_checkpoints=3, adam_runs=4, adam_steps=60,
        ),
        "book": dict(
            runs=60, max_steps=None, checkpoints=12, draws=600, segment_draws=2, lanczos_steps=25,
            cor_n=20, cor_p=50, cor_points=60, cor_batch=2, escape_n=200, escape_p=10, escape_batch=2,
            thm2_inits=4, thm2_runs_per_init=50, thm2_steps=2000,
            thm3_runs=20, thm3_steps=1000, thm3_checkpoints=6, adam_runs=20, adam_steps=1000,
        ),
        "paper": dict(
            runs=10_000, max_steps=None, checkpoints=60, draws=10_000, segment_draws=8, lanczos_steps=60,
            cor_n=50, cor_p=500, cor_points=200, cor_batch=2, escape_n=1000, escape_p=20, escape_batch=2,
            thm2_inits=10, thm2_runs_per_init=1000, thm2_steps=10_000,
            thm3_runs=1000, thm3_steps=10_000, thm3_checkpoints=20, adam_runs=1000, adam_steps=10_000,
        ),
    },
    descriptions={
        "runs": "Gauss-10 runs per label setting (m = 5) for Assumption 1, Eq. (25), Theorem 1",
        "max_steps": "cap on Table 2's iterations (None: 400 / 10,000)",
        "checkpoints": "log-spaced steps at which the quantile runs are examined",
        "draws": "minibatches drawn per point for E[Δ | θ_t] and its tails",
        "segment_draws": "minibatch steps per point whose segments are searched for L (τ = ½, 1)",
        "lanczos_steps": "Lanczos steps for the extreme Hessian eigenvalues (L = max |λ|)",
        "cor_n": "examples in the Corollary 1–2 problems (n < p)",
        "cor_p": "dimension of the Corollary 1–2 problems",
        "cor_points": "θ_t along an SGD path at which Corollaries 1–2 are checked",
        "cor_batch": "batch size in Corollaries 1–2 (all n^m minibatches enumerated)",
        "escape_n": "examples of the escape problems (n > p: a stationary point with M ≠ 0)",
        "escape_p": "dimension of the escape problems",
        "escape_batch": "batch size of the escape problems (all n^m minibatches enumerated)",
        "thm2_inits": "fixed initial points θ₀ for Theorem 2 (the loss process given θ₀)",
        "thm2_runs_per_init": "runs per initial point (they differ only in their minibatches)",
        "thm2_steps": "iterations of the Theorem 2 runs (15 % labels; 0 %: Table 2's 400)",
        "thm3_runs": "runs per step rule of Theorem 3 (Gauss-10, 15 %, m = 5)",
        "thm3_steps": "iterations per Theorem 3 run",
        "thm3_checkpoints": "steps at which E[Δ | θ_t] ≤ 0 is checked on the adaptive runs",
        "adam_runs": "runs per rule of the ADAM comparison (Sec. 5.5)",
        "adam_steps": "iterations per run of the ADAM comparison",
    },
    paper_value={
        "runs": "10,000",
        "max_steps": "Table 2",
        "checkpoints": "—",
        "draws": "—",
        "segment_draws": "— (L is assumed)",
        "lanczos_steps": "—",
        "cor_n": "— (no experiment)",
        "cor_p": "—",
        "cor_points": "—",
        "cor_batch": "—",
        "escape_n": "— (no experiment)",
        "escape_p": "—",
        "escape_batch": "—",
        "thm2_inits": "— (no experiment)",
        "thm2_runs_per_init": "—",
        "thm2_steps": "—",
        "thm3_runs": "— (no experiment)",
        "thm3_steps": "—",
        "thm3_checkpoints": "—",
        "adam_runs": "— (no experiment)",
        "adam_steps": "—",
    },
)
