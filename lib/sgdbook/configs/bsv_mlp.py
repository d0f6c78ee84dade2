"""Settings of the batch-size-variance MNIST-MLP chapter (Section 4.1, Figures 1, 4, 5; App. A.1.3)
at each scale, and the builders shared by the notebook and the paper-scale test.

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

from typing import Any, Mapping

import torch
from torch import nn

from ..models import mlp
from ..scales import ScaleTable

#: The paper's architecture (App. A.1.3).
PAPER_WIDTHS = [784, 1024, 512, 10]


def widths(settings: Mapping[str, Any]) -> list[int]:
    """Layer widths, input first: ``[784, *hidden, 10]``."""
    return [784, *settings["hidden"], 10]


def make_model(settings: Mapping[str, Any]):
    """A function ``generator -> nn.Module`` building the MLP of these settings (with biases).

    Weights follow torch's default ``nn.Linear`` scheme (Kaiming-uniform with a = √5), biases
    start at 0 (the paper does not state its initialisation).
    """

    def make(generator: torch.Generator) -> nn.Module:
        return mlp(widths(settings), bias=True, generator=generator, init="kaiming_uniform", flatten=False)

    return make


def to_inputs(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] of shape ``[N, (1,) 28, 28]`` as flat vectors mapped to [−1, 1] (App. A.1.3)."""
    return images.reshape(images.shape[0], -1) * 2 - 1


BSV_MLP = ScaleTable(
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
