"""Settings of the vmf-directional chapter on training dynamics (Sections 3.1 Fig. 2a, 3.2 Fig. 3,
4 and Supplements E-G) at each scale, and the builders that turn a setting into a model.

``book`` and ``smoke`` use narrower networks than the paper (``mlp_width``, ``cnn_widths``) and a
spatially pooled copy of the 3×32×32 stand-in for the CNNs (``cnn_pool``); ``paper`` builds the
paper's eight setups exactly (:func:`sgdbook.models.vmf_model`, with their printed parameter
counts). :func:`build_model` and :func:`input_shape` are shared by the notebook and the
paper-scale test.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ..models import PaperCNN, mlp, vmf_model
from ..scales import ScaleTable

MLP_SETUPS = ["FNN", "DFNN", "FNN+BN", "DFNN+BN"]
CNN_SETUPS = ["CNN", "CNN+Res", "CNN+BN", "CNN+Res+BN"]
#: The setups of the paper's Figure 7 (and Figures 9-12).
FIG7_SETUPS = ["CNN", "CNN+BN", "CNN+Res+BN"]

#: Section 4.2: minimum average κ̂ near the end of training and the κ = 0 baselines (3,000 samples).
KAPPA_END_PAPER = {
    "DFNN+BN": (71_009.20, 35_075.99),
    "FNN+BN": (23_059.16, 11_621.63),
    "CNN+Res+BN": (20_320.43, 3_781.04),
}


def is_cnn(name: str) -> bool:
    return name.startswith("CNN")


def build_model(name: str, settings: Mapping[str, Any], generator: torch.Generator) -> nn.Module:
    """The setup ``name`` (one of the paper's eight) at the scale whose ``settings`` are given."""
    if settings["paper_models"]:
        return vmf_model(name, generator=generator)
    bn = "+BN" in name
    if is_cnn(name):
        return PaperCNN(
            bn=bn, res="+Res" in name, stages=settings["cnn_stages"], widths=settings["cnn_widths"],
            generator=generator,
        )
    depth = 3 if name.startswith("DFNN") else 1
    return mlp([784, *([settings["mlp_width"]] * depth), 10], bias=False, bn=bn, generator=generator)


def input_shape(name: str, settings: Mapping[str, Any]) -> tuple[int, ...]:
    """Shape of one input example of ``name`` at these settings (after the CNN's pooling)."""
    if is_cnn(name):
        side = 32 // settings["cnn_pool"]
        return (3, side, side)
    return (1, 28, 28)


_FIG5_NOTE = "not given ('various batch sizes')"

VMF_TRAINING = ScaleTable(
    settings={
        "smoke": dict(
            paper_models=False,
            mlp_width=16,
            cnn_stages=(1, 1, 1),
            cnn_widths=(4, 4, 8),
            cnn_pool=4,
            n_train=256,
            cnn_n_train=128,
            n_valid=128,
            batch_size=32,
            lr=0.01,
            n_s=40,
            cnn_n_s=16,
            seeds=2,
            fig7_runs=5,
            epochs=2,
            cnn_epochs=1,
            target_accuracy=0.999,
            trained_accuracy=0.5,
            measure_points=3,
            fig5_batch_sizes=[16, 64],
            fig2a_points=5,
            fig2a_batch_sizes=[1, 4, 16, 64],
            fig2a_n_s=20,
            fig2a_n=256,
            baseline_reps=20,
            check_n_s=6,
        ),
        "book": dict(
            paper_models=False,
            mlp_width=100,
            cnn_stages=(3, 4, 5),
            cnn_widths=(4, 8, 16),
            cnn_pool=4,
            n_train=2000,
            cnn_n_train=1000,
            n_valid=1000,
            batch_size=64,
            lr=0.01,
            n_s=300,
            cnn_n_s=64,
            seeds=3,
            fig7_runs=5,
            epochs=60,
            cnn_epochs=32,
            target_accuracy=0.999,
            trained_accuracy=0.5,
            measure_points=8,
            fig5_batch_sizes=[16, 64, 256],
            fig2a_points=5,
            fig2a_batch_sizes=[1, 4, 16, 64, 256, 1024],
            fig2a_n_s=100,
            fig2a_n=10_000,
            baseline_reps=50,
            check_n_s=12,
        ),
        "paper": dict(
            paper_models=True,
            mlp_width=800,
            cnn_stages=(3, 4, 5),
            cnn_widths=(16, 32, 64),
            cnn_pool=1,
            n_train=60_000,
            cnn_n_train=45_000,
            n_valid=10_000,
            batch_size=64,
            lr=0.01,
            n_s=3000,
            cnn_n_s=3000,
            seeds=5,
            fig7_runs=5,
            epochs=200,
            cnn_epochs=200,
            target_accuracy=0.999,
            trained_accuracy=0.5,
            measure_points=12,
            fig5_batch_sizes=[16, 64, 256, 1024],
            fig2a_points=5,
            fig2a_batch_sizes=[1, 4, 16, 64, 256, 1024, 4096],
            fig2a_n_s=3000,
            fig2a_n=60_000,
            baseline_reps=50,
            check_n_s=20,
        ),
    },
    descriptions={
        "paper_models": "build the paper's eight setups exactly (sgdbook.models.vmf_model)",
        "mlp_width": "hidden width of the FNN (1 layer) and DFNN (3 layers)",
        "cnn_stages": "3×3 convolutions per stage after the first convolution (3+4+5+1 = 13 convs)",
        "cnn_widths": "channels of the CNN's three stages",
        "cnn_pool": "average pooling of the 3×32×32 images before the CNN (1 = full size)",
        "n_train": "training examples of the FNN/DFNN setups (28×28)",
        "cnn_n_train": "training examples of the CNN setups (3×32×32)",
        "n_valid": "validation examples (from the test split)",
        "batch_size": "SGD batch size m (also the size of the measured minibatches)",
        "lr": "SGD learning rate (plain SGD, no momentum, no weight decay)",
        "n_s": "minibatch gradients per κ̂/SNR measurement, FNN/DFNN",
        "cnn_n_s": "minibatch gradients per measurement, CNN setups",
        "seeds": "random initialisations per setup (Figs. 5, 6)",
        "fig7_runs": "runs of the Fig. 7 setups (run 1: Fig. 7; runs 2-5: Figs. 9-12)",
        "epochs": "epoch cap, FNN/DFNN (training stops earlier at the target accuracy)",
        "cnn_epochs": "epoch cap, CNN setups",
        "target_accuracy": "training accuracy at which a run stops",
        "trained_accuracy": "mean final training accuracy below which a setup counts as untrained in Fig. 6",
        "measure_points": "log-spaced measurement epochs (0 included) up to the cap",
        "fig5_batch_sizes": "batch sizes of Fig. 5 (FNN)",
        "fig2a_points": "random initial points of the FNN in Fig. 2(a)",
        "fig2a_batch_sizes": "batch sizes of Fig. 2(a)",
        "fig2a_n_s": "minibatches per batch size in Fig. 2(a)",
        "fig2a_n": "training examples sampled from in Fig. 2(a)",
        "baseline_reps": "simulations of the κ = 0 baseline per (d, n_s)",
        "check_n_s": "minibatches of the brute-force check of the three metrics",
    },
    paper_value={
        "paper_models": "FNN 784-800-10, DFNN 784-800³-10, 14-layer CNN",
        "mlp_width": "800",
        "cnn_stages": "(3, 4, 5) for the printed counts (text: 4, 4, 3, 1)",
        "cnn_widths": "16, 32, 64",
        "cnn_pool": "1",
        "n_train": "60,000 (MNIST)",
        "cnn_n_train": "45,000 (CIFAR-10)",
        "n_valid": "MNIST: not given; CIFAR-10: 5,000 held out",
        "batch_size": "64",
        "lr": "0.01",
        "n_s": "3,000",
        "cnn_n_s": "3,000",
        "seeds": "5",
        "fig7_runs": "5 (Figs. 7, 9-12)",
        "epochs": "until > 99.9 % training accuracy",
        "cnn_epochs": "until > 99.9 % training accuracy",
        "target_accuracy": "0.999",
        "trained_accuracy": "not used (every run trains to 99.9 %)",
        "measure_points": "not given",
        "fig5_batch_sizes": _FIG5_NOTE,
        "fig2a_points": "5",
        "fig2a_batch_sizes": "not given",
        "fig2a_n_s": "not given",
        "fig2a_n": "60,000 (MNIST)",
    },
)
