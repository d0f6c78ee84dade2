"""Settings of the hessian-sgd chapter on the spectra of H_f, M_t and H_p and the alignment of their
top eigenspaces (Sec. 4.1–4.2; Figs. 1, 2; App. B.1–B.2.1, Figs. 12–15): every Table 2 setting at
both batch sizes, in the book's set-up (standardised features, θ₀ ~ N(0, 0.5² I)).
"""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

SETTINGS = ScaleTable(
    settings={
        "smoke": dict(runs=2, spectrum_runs=2, checkpoints=3, steps_cap=20, lanczos_tol=1e-8),
        "book": dict(runs=8, spectrum_runs=4, checkpoints=10, steps_cap=10_000, lanczos_tol=1e-8),
        "paper": dict(runs=1000, spectrum_runs=1000, checkpoints=25, steps_cap=10_000, lanczos_tol=1e-10),
    },
    descriptions={
        "runs": "runs per (setting, batch size) whose top-15 (top-5) eigenspaces are compared over iterations",
        "spectrum_runs": "of these, runs whose full spectra of H_f, M_t, H_p are computed (dense, float64)",
        "checkpoints": "log-spaced iterations (0 and the last included) of the alignment curves",
        "steps_cap": "cap on Table 2's iterations (10,000: none)",
        "lanczos_tol": "relative residual tolerance of the Lanczos eigenpairs of H_f",
    },
    paper_value={
        "runs": "10,000",
        "spectrum_runs": "10,000 ('averaged over 10,000 runs')",
        "checkpoints": "'each iteration'",
        "steps_cap": "Table 2: 100 / 3,000 / 400 / 10,000",
        "lanczos_tol": "— (numpy's full eigendecomposition)",
    },
)
