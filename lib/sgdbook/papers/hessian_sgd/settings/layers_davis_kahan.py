"""Settings of the hessian-sgd chapter on the layer-wise Hessian and the Davis–Kahan bounds (Sec. 4.4;
Figs. 5–7; App. B.2.2, Eqs. 53–59, Figs. 16–17): dense Hessians of every Table 2 setting at both batch
sizes, in the book's set-up (standardised features, θ₀ ~ N(0, 0.5² I)).
"""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

SETTINGS = ScaleTable(
    settings={
        "smoke": dict(runs=2, loading_runs=3, checkpoints=3, steps_cap=20, top_vectors=10),
        "book": dict(runs=4, loading_runs=12, checkpoints=10, steps_cap=10_000, top_vectors=10),
        "paper": dict(runs=1000, loading_runs=1000, checkpoints=20, steps_cap=10_000, top_vectors=10),
    },
    descriptions={
        "runs": "runs per (setting, batch size) whose dense Hessians are taken apart",
        "loading_runs": "runs whose top eigenvectors of H_f (Lanczos on Hessian-vector products) give the layer loadings (Fig. 7) and the angle to the top of M_t (Figs. 16–17)",
        "checkpoints": "log-spaced iterations (0 and the last included) at which they are",
        "steps_cap": "cap on Table 2's iterations (10,000: none)",
        "top_vectors": "top eigenvectors of H_0 = H_f whose layer loadings are averaged (Fig. 7)",
    },
    paper_value={
        "runs": "10,000",
        "loading_runs": "10,000",
        "checkpoints": "'each iteration'",
        "steps_cap": "Table 2: 100 / 3,000 / 400 / 10,000",
        "top_vectors": "not stated ('the top eigenvalues')",
    },
)
