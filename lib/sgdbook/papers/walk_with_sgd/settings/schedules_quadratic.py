"""Settings of chapter 06 (learning-rate schedules, Figures 6 and 27; the quadratic analogy,
Section 6 and Figure 28) at each scale."""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

SETTINGS = ScaleTable(
    settings={
        "smoke": dict(
            paper_models=False, data="fashion", side=14, n_train=400, n_valid=200, n_test=200, eval_n=0,
            batch_size=100, epochs=3, lr_grid=[0.1, 0.2, 0.4], lr_low=0.1, lr_high=0.4, seeds=2, tune_seed=100,
            base_ratio=0.1, half_cycle=0.125, anneal=0.375, milestones=[0.5, 0.75], gamma=0.1, margin=0.01,
            quad_problems=20, quad_dim=6, quad_steps=12, quad_etas=[0.5, 1.0, 1.5, 1.9, 2.2],
        ),
        "book": dict(
            paper_models=False, data="fashion", side=14, n_train=3000, n_valid=1000, n_test=2000, eval_n=0,
            batch_size=100, epochs=15, lr_grid=[0.1, 0.2, 0.4], lr_low=0.025, lr_high=1.6, seeds=4, tune_seed=100,
            base_ratio=0.1, half_cycle=0.125, anneal=0.375, milestones=[0.5, 0.75], gamma=0.1, margin=0.01,
            quad_problems=200, quad_dim=10, quad_steps=20, quad_etas=[0.5, 1.0, 1.5, 1.9, 2.2],
        ),
        "paper": dict(
            paper_models=True, data="paper", side=32, n_train=45000, n_valid=5000, n_test=10000, eval_n=0,
            batch_size=100, epochs=100, lr_grid=[0.05, 0.1, 0.2, 0.4], lr_low=0.0125, lr_high=1.6, seeds=3, tune_seed=100,
            base_ratio=0.1, half_cycle=0.125, anneal=0.375, milestones=[0.5, 0.75], gamma=0.1, margin=0.01,
            quad_problems=200, quad_dim=10, quad_steps=20, quad_etas=[0.5, 1.0, 1.5, 1.9, 2.2],
        ),
    },
    descriptions={
        "paper_models": "the paper's VGG-11 and ResNet-56 (else the small stand-ins of the other chapters)",
        "data": "Fashion-MNIST (the book's real-image stand-in) or the paper's CIFAR-10",
        "side": "image side (Fashion-MNIST average-pooled from 28)",
        "n_train": "training images",
        "n_valid": "validation images (the grid search chooses on them)",
        "n_test": "held-out images (the schedules are compared on them)",
        "eval_n": "unused here (kept for the walk chapters' loaders; 0 = all)",
        "batch_size": "SGD batch size",
        "epochs": "epochs per run",
        "lr_grid": "peak rate (CLR, trapezoid) or initial rate (step): the starting grid of each schedule's search",
        "lr_low": "the search may halve the rate down to this bound (while the best rate is the grid's lowest)",
        "lr_high": "the search may double the rate up to this bound (while the best rate is the grid's highest)",
        "seeds": "fresh replicates per schedule after tuning (same initialisations and minibatch orders across schedules)",
        "tune_seed": "replicate used for the grid search (not reused in the comparison)",
        "base_ratio": "lowest rate of CLR and the trapezoid, as a fraction of the peak",
        "half_cycle": "CLR's half cycle (= the trapezoid's rise), as a fraction of the run",
        "anneal": "the trapezoid's final linear anneal to 0, as a fraction of the run",
        "milestones": "step annealing's milestones, as fractions of the run",
        "gamma": "step annealing's factor at each milestone",
        "margin": "accuracy margin of 'does as well' (non-inferiority of the trapezoid to CLR)",
        "quad_problems": "random quadratics per learning rate in the exact checks",
        "quad_dim": "their dimension",
        "quad_steps": "GD steps on each",
        "quad_etas": "learning rates, in units of 1/λ_max (below 2: convergent)",
    },
    paper_value={
        "paper_models": "VGG-11, ResNet-56",
        "data": "CIFAR-10 (45k/5k, test)",
        "batch_size": "100",
        "epochs": "'apparent from the figures'",
        "lr_grid": "a grid search, not given",
        "seeds": "1 (the `paper` scale runs 3: a t test needs replicates)",
        "half_cycle": "not given",
        "milestones": "not given",
    },
)
