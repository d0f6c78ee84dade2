"""Settings of the batch-size-variance MNIST-MLP chapter (Section 4.1, Figures 1, 4, 5; App. A.1.3)
at each scale (the model is built by :mod:`sgdbook.papers.batch_size_variance.mlp`).

``paper`` is the paper's setup: 784→1024→512→10 ReLU MLP, softmax cross-entropy, plain SGD
with a constant learning rate 3·10⁻³, epoch-based minibatches, b = 64 vs 128, 5 initialisations
× 50 runs that differ only in the minibatch order, 1,000 epochs on the 60,000 training images,
10,000 validation images and their elastically distorted copy (α = 8, σ = 2). ``book`` and
``smoke`` train a narrower MLP on a subset with a larger learning rate, long enough that both
batch sizes fit the training set at ``book`` scale. The ``pilot_*`` runs repeat the first pass's
variance runs (a smaller rate for a few epochs, chosen there after the main rate failed) so that
the verdict box reports both; the paper scale has none.
"""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

SETTINGS = ScaleTable(
    settings={
        "smoke": dict(
            n_train=256, n_val=256, hidden=[32, 16], batch_sizes=[64, 128], lr=0.1, epochs=8, eval_every=2,
            inits=2, runs_per_init=4, pilot_lr=0.03, pilot_epochs=4, pilot_gap_epochs=4, fit_acc=0.99, compare_from=0.5,
            distort_alpha=8.0, distort_sigma=2.0,
        ),
        "book": dict(
            n_train=512, n_val=500, hidden=[128, 64], batch_sizes=[64, 128], lr=0.1, epochs=140, eval_every=5,
            inits=4, runs_per_init=8, pilot_lr=0.03, pilot_epochs=20, pilot_gap_epochs=60, fit_acc=0.99, compare_from=0.5,
            distort_alpha=8.0, distort_sigma=2.0,
        ),
        "paper": dict(
            n_train=60_000, n_val=10_000, hidden=[1024, 512], batch_sizes=[64, 128], lr=3e-3, epochs=1000,
            eval_every=10, inits=5, runs_per_init=50, pilot_lr=3e-3, pilot_epochs=0, pilot_gap_epochs=0, fit_acc=0.99, compare_from=0.5,
            distort_alpha=8.0, distort_sigma=2.0,
        ),
    },
    descriptions={
        "n_train": "training images (a fixed random subset below the full 60,000)",
        "n_val": "validation images (from the test split); the distorted test set is a copy of them",
        "hidden": "hidden widths of the ReLU MLP 784 → … → 10",
        "batch_sizes": "the two batch sizes compared",
        "lr": "constant learning rate of plain SGD (same for both batch sizes)",
        "epochs": "epochs (per-run reshuffled, epoch-based minibatches, last partial batch dropped)",
        "eval_every": "epochs between evaluations of loss/accuracy (train, validation, distorted validation) and of the full-gradient variance",
        "inits": "initial weights w_0",
        "runs_per_init": "runs from each w_0, differing only in the minibatch order",
        "pilot_lr": "learning rate of the first pass's variance runs (Fig. 4a), reported beside the verdict",
        "pilot_epochs": "epochs of those pilot runs (0: none)",
        "pilot_gap_epochs": "length of the first pass's training; the second half was its Figure 4(b) window (0: none)",
        "fit_acc": "training accuracy (mean over runs) from which a batch size counts as fitting the training set",
        "compare_from": "fraction of training after which the accuracy gaps are compared (paper: epoch 500 of 1,000)",
        "distort_alpha": "elastic distortion scale α (pixels)",
        "distort_sigma": "elastic distortion smoothing σ (pixels)",
    },
    paper_value={
        "n_train": "60,000 (MNIST)",
        "n_val": "10,000 (MNIST)",
        "hidden": "1024, 512",
        "batch_sizes": "64, 128",
        "lr": "3·10⁻³",
        "epochs": "1,000 ('enough for convergence')",
        "eval_every": "every epoch (Fig. 5), every 100 epochs (gap, Fig. 4b)",
        "inits": "5",
        "runs_per_init": "50 (Fig. 4a); '100 runs' for Fig. 5",
        "pilot_lr": "— (one set of runs)",
        "pilot_epochs": "—",
        "pilot_gap_epochs": "—",
        "fit_acc": "— (trained to convergence)",
        "compare_from": "epoch 500 of 1,000",
        "distort_alpha": "8",
        "distort_sigma": "2",
    },
)
