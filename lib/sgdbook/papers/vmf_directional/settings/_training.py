"""Settings shared by the vmf-directional training chapters (05–08), which read the same runs.

The notebooks ``05_training_mlp``, ``06_batch_sizes``, ``07_training_cnn`` and ``08_uniformity``
build their tables from these pieces, so that a run (setup, seed, batch size) has the same
settings wherever it is made and :func:`sgdbook.papers.vmf_directional.runs.cached_run` finds it.
``book`` trains 512 Fashion-MNIST images (batch sizes 64, 128 and 256 divide it) with narrower
networks than the paper's; ``paper`` builds the paper's eight networks on the full data sets.
"""

from __future__ import annotations

#: Section 4.2: minimum average κ̂ near the end of training and the κ = 0 baselines (3,000 samples).
KAPPA_END_PAPER = {
    "DFNN+BN": (71_009.20, 35_075.99),
    "FNN+BN": (23_059.16, 11_621.63),
    "CNN+Res+BN": (20_320.43, 3_781.04),
}

#: What every run shares (the optimiser, the stopping rule, the data split, the measurements).
COMMON = {
    "smoke": dict(paper_models=False, lr=0.01, batch_size=32, target_accuracy=0.999, n_valid=128,
                  jackknife_groups=4, seeds=2),
    "book": dict(paper_models=False, lr=0.01, batch_size=64, target_accuracy=0.999, n_valid=1000,
                 jackknife_groups=8, seeds=5),
    "paper": dict(paper_models=True, lr=0.01, batch_size=64, target_accuracy=0.999, n_valid=10_000,
                  jackknife_groups=10, seeds=5),
}

#: The FNN, DFNN and their +BN variants (MNIST or its stand-in, 28×28).
MLP = {
    "smoke": dict(mlp_width=16, n_train=128, n_s=32, epochs=3, measure_points=3),
    "book": dict(mlp_width=100, n_train=512, n_s=256, epochs=6000, measure_points=20),
    "paper": dict(mlp_width=800, n_train=60_000, n_s=3000, epochs=500, measure_points=20),
}

#: The 14-layer CNN and its +Res, +BN, +Res+BN variants (CIFAR-10 or its stand-in, 3×32×32).
CNN = {
    "smoke": dict(cnn_stages=(1, 1, 1), cnn_widths=(4, 4, 8), cnn_pool=4, cnn_n_train=64, cnn_n_s=16,
                  cnn_epochs=2, cnn_plain_epochs=1, cnn_measure_points=3),
    "book": dict(cnn_stages=(3, 4, 5), cnn_widths=(4, 8, 16), cnn_pool=4, cnn_n_train=512, cnn_n_s=64,
                 cnn_epochs=400, cnn_plain_epochs=40, cnn_measure_points=14),
    "paper": dict(cnn_stages=(3, 4, 5), cnn_widths=(16, 32, 64), cnn_pool=1, cnn_n_train=45_000, cnn_n_s=3000,
                  cnn_epochs=500, cnn_plain_epochs=500, cnn_measure_points=20),
}

DESCRIPTIONS = {
    "paper_models": "build the paper's eight setups exactly (models.vmf_model)",
    "lr": "SGD learning rate (plain SGD: no momentum, no weight decay)",
    "batch_size": "SGD batch size m, also the size of the measured minibatches",
    "target_accuracy": "stopping rule: training stops once the training accuracy exceeds this",
    "n_valid": "validation examples (from the test split)",
    "jackknife_groups": "groups of the n_s minibatches; the measurement's se is their jackknife",
    "seeds": "random initialisations per setup",
    "mlp_width": "hidden width of the FNN (1 layer) and DFNN (3 layers)",
    "n_train": "training examples of the FNN/DFNN setups (28×28)",
    "n_s": "minibatch gradients per κ̂/SNR measurement, FNN/DFNN",
    "epochs": "epoch cap of the FNN/DFNN runs (a run stops earlier at the stopping rule)",
    "measure_points": "log-spaced measurement epochs from 0 to the cap (and the stop), FNN/DFNN",
    "cnn_stages": "3×3 convolutions per stage after the first convolution (1 + 3 + 4 + 5 = 13)",
    "cnn_widths": "channels of the CNN's three stages",
    "cnn_pool": "average pooling of the 3×32×32 images before the CNN (1 = full size)",
    "cnn_n_train": "training examples of the CNN setups",
    "cnn_n_s": "minibatch gradients per measurement, CNN setups",
    "cnn_epochs": "epoch cap of CNN+BN and CNN+Res+BN",
    "cnn_plain_epochs": "epoch cap of CNN and CNN+Res (which do not reach the stopping rule at `book` scale)",
    "cnn_measure_points": "log-spaced measurement epochs from 0 to the cap (and the stop), CNN setups",
}

PAPER_VALUES = {
    "paper_models": "FNN 784-800-10, DFNN 784-800³-10, 14-layer CNN",
    "lr": "0.01",
    "batch_size": "64",
    "target_accuracy": "> 99.9 % training accuracy in every run",
    "n_valid": "MNIST: not given; CIFAR-10: 5,000 held out",
    "jackknife_groups": "no uncertainty of a measurement given",
    "seeds": "5",
    "mlp_width": "800",
    "n_train": "60,000 (MNIST)",
    "n_s": "3,000",
    "epochs": "until > 99.9 % training accuracy",
    "measure_points": "not given",
    "cnn_stages": "(3, 4, 5) for the printed counts (text: 4, 4, 3, 1)",
    "cnn_widths": "16, 32, 64",
    "cnn_pool": "1",
    "cnn_n_train": "45,000 (CIFAR-10)",
    "cnn_n_s": "3,000",
    "cnn_epochs": "until > 99.9 % training accuracy",
    "cnn_plain_epochs": "until > 99.9 % training accuracy",
    "cnn_measure_points": "not given",
}


def merged(*parts: dict, extra: dict | None = None) -> dict:
    """``{scale: settings}`` joining the per-scale dicts ``parts`` and ``extra`` (also per scale)."""
    out = {}
    for scale in ("smoke", "book", "paper"):
        d = {}
        for p in parts:
            d.update(p[scale])
        if extra:
            d.update(extra[scale])
        out[scale] = d
    return out


def described(settings: dict, descriptions: dict | None = None, paper: dict | None = None) -> tuple[dict, dict]:
    """The descriptions and paper values of the keys of ``settings["book"]`` (shared + ``descriptions``)."""
    keys = list(settings["book"])
    desc = {**DESCRIPTIONS, **(descriptions or {})}
    pap = {**PAPER_VALUES, **(paper or {})}
    return {k: desc[k] for k in keys}, {k: pap[k] for k in keys if k in pap}
