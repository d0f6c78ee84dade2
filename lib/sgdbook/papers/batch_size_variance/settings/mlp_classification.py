"""Settings of the batch-size-variance MNIST-MLP chapter (Section 4.1, Figures 1, 4, 5; App. A.1.3)
at each scale (the model is built by :mod:`sgdbook.papers.batch_size_variance.mlp`).

``paper`` is the paper's setup: 784→1024→512→10 ReLU MLP, softmax cross-entropy, plain SGD
with a constant learning rate 3·10⁻³, epoch-based minibatches, b = 64 vs 128, 5 initialisations
× 50 runs that differ only in the minibatch order, 1,000 epochs on the 60,000 training images,
10,000 validation images and their elastically distorted copy (α = 8, σ = 2). ``book`` and
``smoke`` train a narrower MLP on a subset with a larger learning rate so that the network
overfits within tens of epochs, and measure the gradient variance of Figure 4(a) on a second set
of runs at a smaller learning rate (``lr_var``, ``epochs_var``); at ``paper`` scale the two sets
coincide.
"""

from __future__ import annotations



from sgdbook.book.scales import ScaleTable

SETTINGS = ScaleTable(
    settings={
        "smoke": dict(
            n_train=256,
            n_val=256,
            hidden=[32, 16],
            batch_sizes=[64, 128],
            lr=0.1,
            epochs=8,
            lr_var=0.03,
            epochs_var=4,
            inits=2,
            runs_per_init=4,
            eval_every=2,
            distort_alpha=8.0,
            distort_sigma=2.0,
            compare_from=0.5,
        ),
        "book": dict(
            n_train=512,
            n_val=500,
            hidden=[128, 64],
            batch_sizes=[64, 128],
            lr=0.1,
            epochs=60,
            lr_var=0.03,
            epochs_var=20,
            inits=4,
            runs_per_init=8,
            eval_every=4,
            distort_alpha=8.0,
            distort_sigma=2.0,
            compare_from=0.5,
        ),
        "paper": dict(
            n_train=60_000,
            n_val=10_000,
            hidden=[1024, 512],
            batch_sizes=[64, 128],
            lr=3e-3,
            epochs=1000,
            lr_var=3e-3,
            epochs_var=1000,
            inits=5,
            runs_per_init=50,
            eval_every=10,
            distort_alpha=8.0,
            distort_sigma=2.0,
            compare_from=0.5,
        ),
    },
    descriptions={
        "n_train": "training images (a fixed random subset below the full 60,000)",
        "n_val": "validation images (from the test split); the distorted test set is a copy of them",
        "hidden": "hidden widths of the ReLU MLP 784 → … → 10",
        "batch_sizes": "the two batch sizes compared",
        "lr": "constant learning rate of plain SGD (same for both batch sizes)",
        "epochs": "epochs (per-run reshuffled, epoch-based minibatches, last partial batch dropped)",
        "lr_var": "learning rate of the runs that measure the gradient variance (Fig. 4a); = lr: the same runs",
        "epochs_var": "epochs of the variance runs (Fig. 4a); = epochs with lr_var = lr: the same runs",
        "inits": "initial weights w_0",
        "runs_per_init": "runs from each w_0, differing only in the minibatch order",
        "eval_every": "epochs between evaluations of loss/accuracy on train, validation, distorted validation",
        "distort_alpha": "elastic distortion scale α (pixels)",
        "distort_sigma": "elastic distortion smoothing σ (pixels)",
        "compare_from": "fraction of training after which the accuracy gaps are compared (paper: epoch 500 of 1,000)",
    },
    paper_value={
        "n_train": "60,000 (MNIST)",
        "n_val": "10,000 (MNIST)",
        "hidden": "1024, 512",
        "batch_sizes": "64, 128",
        "lr": "3·10⁻³",
        "epochs": "1,000",
        "lr_var": "3·10⁻³ (the same runs)",
        "epochs_var": "1,000 (the same runs)",
        "inits": "5",
        "runs_per_init": "50 (Fig. 4a); '100 runs' for Fig. 5",
        "eval_every": "every epoch (Fig. 5), every 100 epochs (gap, Fig. 4b)",
        "distort_alpha": "8",
        "distort_sigma": "2",
        "compare_from": "epoch 500 of 1,000",
    },
)
