"""Settings of the hessian-sgd chapter on the Hessian decomposition (Sec. 3, 4.1, 4.3; App. A.1, B.1,
B.3, B.4): Table 2's set-up run literally and as the book runs it, Proposition 1, the moments of
minibatch gradients (Eqs. 7, 8, 26), Table 1 with Examples 1–2, and the Fisher-information
identities (Eqs. 15, 16, 64).
"""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

SETTINGS = ScaleTable(
    settings={
        "smoke": dict(
            literal_runs=8, literal_steps_cap=20, dev_runs=8, dev_steps_cap=20,
            enum_n=12, enum_m=2, ls_n=10, ls_p=30, logistic_steps=200, logistic_points=6,
            support=10, sample_sizes=[100, 1000], sample_reps=3, probes=4,
        ),
        "book": dict(
            literal_runs=32, literal_steps_cap=10_000, dev_runs=32, dev_steps_cap=400,
            enum_n=100, enum_m=2, ls_n=50, ls_p=200, logistic_steps=20_000, logistic_points=12,
            support=50, sample_sizes=[100, 316, 1000, 3162, 10_000], sample_reps=8, probes=8,
        ),
        "paper": dict(
            literal_runs=10_000, literal_steps_cap=10_000, dev_runs=10_000, dev_steps_cap=10_000,
            enum_n=100, enum_m=2, ls_n=50, ls_p=200, logistic_steps=100_000, logistic_points=16,
            support=500, sample_sizes=[100, 1000, 10_000, 100_000], sample_reps=30, probes=16,
        ),
    },
    descriptions={
        "literal_runs": "runs per (setting, batch size) of Table 2 as printed (raw features, θ₀ ~ N(0, I))",
        "literal_steps_cap": "cap on Table 2's iterations for those runs (10,000: none)",
        "dev_runs": "runs per (setting, batch size) of the book's set-up (standardised, θ₀ ~ N(0, 0.5² I))",
        "dev_steps_cap": "cap on Table 2's iterations for those runs",
        "enum_n": "training points whose n^m minibatches (with replacement) are all enumerated",
        "enum_m": "minibatch size of that enumeration",
        "ls_n": "points n of the least-squares / logistic examples (n < p)",
        "ls_p": "dimension p of those examples",
        "logistic_steps": "gradient-descent steps towards the separating direction (Example 2)",
        "logistic_points": "log-spaced points of that path where Table 1's matrices are compared",
        "support": "inputs of the finite distribution on which population expectations are exact",
        "sample_sizes": "sample sizes N of the finite-sample residual Ĥ_p(θ*) (Eq. 64)",
        "sample_reps": "independent samples per N",
        "probes": "fixed random directions v on which ‖Ĥ_p v‖ is measured",
    },
    paper_value={
        "literal_runs": "10,000",
        "literal_steps_cap": "Table 2: 100 / 3,000 / 400 / 10,000",
        "dev_runs": "— (the book's deviation)",
        "dev_steps_cap": "Table 2",
        "enum_n": "100 (Eq. 8 is stated, not measured)",
        "enum_m": "5, 50",
        "ls_n": "not given (n < p)",
        "ls_p": "not given",
        "logistic_steps": "θ_t → optimum (not run)",
        "logistic_points": "—",
        "support": "— (the population of Eqs. 14–16)",
        "sample_sizes": "—",
        "sample_reps": "—",
        "probes": "—",
    },
)
