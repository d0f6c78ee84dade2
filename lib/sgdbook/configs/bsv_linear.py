"""Settings of the batch-size-variance linear-regression chapter at each scale."""

from __future__ import annotations

from ..scales import ScaleTable

#: Figure 2(b)'s grid: every power of 2 or multiple of 40 in [2, n] (App. A.2).
def fig2b_grid(n: int) -> list[int]:
    return sorted({2**k for k in range(1, 20) if 2**k <= n} | {40 * k for k in range(1, n // 40 + 1)})


LINEAR = ScaleTable(
    settings={
        "smoke": dict(
            lr_scale=0.5,
            fig2a_steps=60,
            fig2a_b=[2, 16, 64, 256],
            fig2a_runs=200,
            fig2b_ts=[10, 20, 30, 40],
            fig2b_runs=300,
            fig2b_degree=6,
            check_steps=20,
            n_random_matrices=2,
            poly_max_t=4,
            exact_t_max=3,
        ),
        "book": dict(
            lr_scale=0.5,
            fig2a_steps=2000,
            fig2a_b=[2, 16, 64, 256],
            fig2a_runs=300,
            fig2b_ts=[10, 20, 30, 40],
            fig2b_runs=1000,
            fig2b_degree=6,
            check_steps=200,
            n_random_matrices=5,
            poly_max_t=6,
            exact_t_max=5,
        ),
        "paper": dict(
            lr_scale=0.5,
            fig2a_steps=2000,
            fig2a_b=[2, 16, 64, 256],
            fig2a_runs=1000,
            fig2b_ts=[10, 20, 30, 40],
            fig2b_runs=10000,
            fig2b_degree=6,
            check_steps=2000,
            n_random_matrices=10,
            poly_max_t=8,
            exact_t_max=6,
        ),
    },
    descriptions={
        "lr_scale": "learning rate α_t = lr_scale / t, t = 1, 2, … (α_1 is used for w_0 → w_1)",
        "fig2a_steps": "SGD iterations in Figure 2(a)",
        "fig2a_b": "the four batch sizes of Figure 2(a)",
        "fig2a_runs": "Monte Carlo runs per batch size in Figure 2(a), from one w_0",
        "fig2b_ts": "iterations at which Figure 2(b) fits a polynomial in 1/b",
        "fig2b_runs": "Monte Carlo runs per batch size in Figure 2(b)",
        "fig2b_degree": "degree of the fitted polynomial in 1/b",
        "check_steps": "iterations over which the theorems are checked at every b in [1, n]",
        "n_random_matrices": "random matrices A_i (Theorem 1) and B (Theorem 2) drawn",
        "poly_max_t": "largest t of the float64 polynomial-degree check",
        "exact_t_max": "largest t of the exact rational-arithmetic degree check",
    },
    paper_value={
        "lr_scale": "1/2 (α_t = 1/(2t), t ∈ [2000])",
        "fig2a_steps": "2,000",
        "fig2a_b": "4 values, not stated",
        "fig2a_runs": "1,000",
        "fig2b_ts": "10, 20, 30, 40",
        "fig2b_runs": "10,000 (200,000 in total over 20 b's)",
        "fig2b_degree": "6",
        "check_steps": "— (proofs)",
        "n_random_matrices": "— (proofs)",
        "poly_max_t": "— (stated in App. A.2)",
        "exact_t_max": "—",
    },
)
