"""Settings of the vmf-directional chapter on Theorems 1 and 2 (norms and angles) at each scale."""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

#: The FNN 784-800-10 of the paper (no biases): the dimension of its Figure 3(b-c).
FNN_DIMENSION = 635_200

_LIMIT_DIMS = [2, 3, 5, 10, 30, 100, 1000, 10_000, 100_000, FNN_DIMENSION]
_FIG3A_DIMS = [1000, 10_000, 100_000, FNN_DIMENSION]

_COMMON = {
    "thm1_n": [6, 10],
    "thm1_d": [2, 8],
    "curve_n": 16,
    "hoffer_n": 100,
    "hoffer_m": 2,
    "blowup_n": 12,
    "blowup_m": 3,
    "blowup_features": 4,
    "mc_dims": [2, 3, 5, 10, 50],
    "limit_dims": _LIMIT_DIMS,
    "fig3a_dims": _FIG3A_DIMS,
    "fnn_d": FNN_DIMENSION,
    "slutsky_rhos": [0.5, 2.0],
    "slutsky_n": 10_000,
    "delta_ns": [1, 10, 100, 1000, 10_000, 100_000],
}

SETTINGS = ScaleTable(
    settings={
        "smoke": dict(
            _COMMON,
            thm1_problems=100,
            blowup_points=9,
            mc_pairs=5000,
            fnn_vectors=100,
            slutsky_samples=20_000,
        ),
        "book": dict(
            _COMMON,
            thm1_problems=5000,
            blowup_points=41,
            mc_pairs=400_000,
            fnn_vectors=3000,
            slutsky_samples=400_000,
        ),
        "paper": dict(
            _COMMON,
            thm1_problems=20_000,
            blowup_points=81,
            mc_pairs=1_000_000,
            fnn_vectors=3000,
            slutsky_samples=2_000_000,
        ),
    },
    descriptions={
        "thm1_problems": "random problems (n, m, d, g_i) on which every minibatch is enumerated",
        "thm1_n": "range of the number n of examples in a random problem",
        "thm1_d": "range of the dimension d of the per-example gradients",
        "curve_n": "examples n of the problem whose moments are drawn against the batch size",
        "hoffer_n": "examples n of the problems that test Hoffer's approximation (n ≫ m)",
        "hoffer_m": "batch size m of those problems",
        "blowup_n": "examples of the least-squares problem walked towards its minimiser",
        "blowup_m": "batch size on that walk",
        "blowup_features": "features (= gradient dimension) of the least-squares problem",
        "blowup_points": "points on the walk, log-spaced in the distance to the minimiser",
        "mc_dims": "dimensions of the Monte Carlo check with real random unit vectors",
        "mc_pairs": "pairs (u, v) of real uniform unit vectors per dimension",
        "limit_dims": "dimensions at which the exact laws are compared with their normal limits",
        "fig3a_dims": "dimensions drawn in Figure 3(a)",
        "fnn_d": "the FNN's dimension (Figure 3(b-c), Eq. 2's 0.0719°)",
        "fnn_vectors": "real uniform unit vectors of that dimension whose angles with a fixed one are drawn",
        "slutsky_rhos": "limits ρ of y_n in the Slutsky illustration",
        "slutsky_n": "n of x_n = √n(mean of n Exp(1) − 1) and y_n",
        "slutsky_samples": "draws of (x_n, y_n) per ρ",
        "delta_ns": "n at which the exact law of √n·log(mean of n Exp(1)) is compared with N(0, 1)",
    },
    paper_value={
        "thm1_problems": "none (proofs only)",
        "blowup_points": "none (argued from the form of Eq. 1)",
        "mc_pairs": "none (proofs only)",
        "fig3a_dims": "'each large dimension d', values not given",
        "fnn_d": "635,200",
        "fnn_vectors": "3,000 minibatch gradients",
    },
)
