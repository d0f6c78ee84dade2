"""Settings of the synthesis chapter (one network, four lenses) at each scale."""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

SETTINGS = ScaleTable(
    settings={
        "smoke": dict(
            n_train=300, widths=[64, 8, 10], lr=0.1, batch_size=32, steps=400,
            checkpoints=[0, 40, 380], window=6, seeds=2, n_s=100, baseline_reps=5,
            batch_sizes=[4, 16, 64], top_k=5, approx_tol=0.2,
        ),
        "book": dict(
            n_train=1000, widths=[64, 16, 16, 10], lr=0.1, batch_size=32, steps=3000,
            checkpoints=[0, 30, 300, 2980], window=20, seeds=4, n_s=500, baseline_reps=20,
            batch_sizes=[4, 16, 64, 256], top_k=10, approx_tol=0.2,
        ),
        "paper": dict(
            n_train=1000, widths=[64, 32, 32, 10], lr=0.1, batch_size=32, steps=20000,
            checkpoints=[0, 30, 300, 3000, 19980], window=20, seeds=8, n_s=3000, baseline_reps=20,
            batch_sizes=[4, 16, 64, 256], top_k=15, approx_tol=0.2,
        ),
    },
    descriptions={
        "n_train": "digits images for training (the rest of the 1,797 is the validation split)",
        "widths": "MLP layer widths, input first (ReLU, biases; small enough for dense Hessians)",
        "lr": "SGD learning rate (constant)",
        "batch_size": "SGD minibatch size b",
        "steps": "SGD steps per run",
        "checkpoints": "steps t at which the four lenses look",
        "window": "SGD steps after each checkpoint whose segments the walk lens evaluates",
        "seeds": "independent runs (initialisation and minibatch order)",
        "n_s": "minibatch gradients behind one κ̂ and SNR",
        "baseline_reps": "simulations of the κ = 0 baseline of κ̂",
        "batch_sizes": "minibatch sizes m of the variance lens",
        "top_k": "top eigenvectors compared between H and M",
        "approx_tol": "'A ≈ B' means ‖A − B‖_F / ‖A‖_F below this (upper end of the 95 % interval over seeds)",
    },
    paper_value={
        "widths": "each paper its own; here one network for all four",
        "batch_size": "32–128 in the papers",
        "checkpoints": "the papers look at the start, mid-training and the end",
        "approx_tol": "not given: none of the papers defines '≈' numerically",
    },
)
