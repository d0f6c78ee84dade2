"""Settings of the vmf-directional chapters at each scale."""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

#: The paper's Table 1: network → (d, {n_s: (mean, sd over 5 simulations)}).
TABLE1_PAPER = {
    "CNN": (206_128, {1000: (6527.09, 5.98), 2000: (4608.16, 6.18), 3000: (3762.45, 7.23)}),
    "CNN+Res": (206_128, {1000: (6527.09, 5.98), 2000: (4608.16, 6.18), 3000: (3762.45, 7.23)}),
    "CNN+BN": (207_152, {1000: (6563.62, 8.68), 2000: (4633.84, 5.60), 3000: (3781.04, 3.12)}),
    "CNN+Res+BN": (207_152, {1000: (6563.62, 8.68), 2000: (4633.84, 5.60), 3000: (3781.04, 3.12)}),
    "FNN": (635_200, {1000: (20111.90, 13.04), 2000: (14196.89, 14.91), 3000: (11607.39, 9.27)}),
    "FNN+BN": (636_800, {1000: (20157.57, 14.06), 2000: (14259.83, 16.38), 3000: (11621.63, 6.83)}),
    "DFNN": (1_915_200, {1000: (60619.02, 13.49), 2000: (42849.86, 18.90), 3000: (34983.31, 15.62)}),
    "DFNN+BN": (1_920_000, {1000: (60789.84, 17.93), 2000: (42958.71, 25.61), 3000: (35075.99, 12.39)}),
}
TABLE1_SIMULATIONS_IN_PAPER = 5

_KAPPAS = [0, 10, 30, 100, 300, 1000, 3000, 10000, 30000]

SETTINGS = ScaleTable(
    settings={
        "smoke": dict(
            sample_sizes=[1000, 2000, 3000],
            table1_reps=40,
            protocol_reps=5,
            fig8_d=10_000,
            fig8_kappas=[0, 100, 1000, 10000],
            fig8_exact_reps=40,
            fig8_direct_reps=1,
        ),
        "book": dict(
            sample_sizes=[1000, 2000, 3000],
            table1_reps=2000,
            protocol_reps=5,
            fig8_d=10_000,
            fig8_kappas=_KAPPAS,
            fig8_exact_reps=1000,
            fig8_direct_reps=3,
        ),
        "paper": dict(
            sample_sizes=[1000, 2000, 3000],
            table1_reps=2000,
            protocol_reps=5,
            fig8_d=10_000,
            fig8_kappas=_KAPPAS,
            fig8_exact_reps=1000,
            fig8_direct_reps=5,
        ),
    },
    descriptions={
        "sample_sizes": "numbers n of unit vectors behind one κ̂",
        "table1_reps": "simulations per Table 1 cell (exact resultant recursion)",
        "protocol_reps": "simulations of the paper's own protocol (mean ± sd shown like Table 1)",
        "fig8_d": "dimension of the vMF samples in Figure 8",
        "fig8_kappas": "true concentrations κ in Figure 8",
        "fig8_exact_reps": "simulations per Figure 8 point (exact resultant recursion)",
        "fig8_direct_reps": "simulations per Figure 8 point with real d-dimensional vMF vectors",
    },
    paper_value={
        "sample_sizes": "1,000, 2,000, 3,000",
        "table1_reps": "5",
        "protocol_reps": "5",
        "fig8_d": "10,000",
        "fig8_kappas": "not stated (log axis, 'except 0')",
        "fig8_exact_reps": "not stated",
        "fig8_direct_reps": "not stated",
    },
)
