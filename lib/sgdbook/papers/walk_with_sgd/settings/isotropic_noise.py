"""Settings of chapter 05 (GD with isotropic noise: Figures 5, 25, 26 and footnote 6) at each scale."""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

#: Final parameter norms the paper reports for VGG-11 (Section 4).
NORMS_PAPER = {"GD": 87, "SGD": 82, "iso 0.05": 369, "iso 0.1": 443}

SETTINGS = ScaleTable(
    settings={
        "smoke": dict(
            paper_models=False, data="digits", n_train=150, eval_n=0, batch_size=50,
            lr_cnn=0.1, lr_resnet=0.1, lr_mlp=0.1, noise_factors=[0.05, 0.1], var_batches=10, steps=12, every=6,
            plateau_points=2, seeds=2, recover_steps=6, recover_lr_factor=0.1,
        ),
        "book": dict(
            paper_models=False, data="digits", n_train=1000, eval_n=0, batch_size=100,
            lr_cnn=0.1, lr_resnet=0.1, lr_mlp=0.1, noise_factors=[0.05, 0.1], var_batches=50, steps=150, every=25,
            plateau_points=4, seeds=3, recover_steps=60, recover_lr_factor=0.1,
        ),
        "paper": dict(
            paper_models=True, data="paper", n_train=45000, eval_n=5000, batch_size=100,
            lr_cnn=0.1, lr_resnet=0.1, lr_mlp=0.1, noise_factors=[0.05, 0.1], var_batches=50, steps=1500, every=50,
            plateau_points=10, seeds=3, recover_steps=500, recover_lr_factor=0.1,
        ),
    },
    descriptions={
        "paper_models": "the paper's VGG-11 / ResNet-56 / MLP 784-500-350-10 (else the small stand-ins)",
        "data": "digits (scikit-learn) or the paper's data sets (CIFAR-10, MNIST; stand-ins where absent)",
        "n_train": "training images (the rest of digits validates; at the paper scale the validation images of the authors' code: CIFAR-10 45,000–49,999, MNIST 50,000–59,999)",
        "eval_n": "unused here (the training loss is always on the whole training set)",
        "batch_size": "batch of the SGD reference run and of the variance estimate",
        "lr_cnn": "learning rate of the CNN (VGG-11) runs",
        "lr_resnet": "learning rate of the residual-net (ResNet-56) runs",
        "lr_mlp": "learning rate of the MLP runs",
        "noise_factors": "noise variance σ² as a multiple of the largest per-coordinate gradient variance at θ₀",
        "var_batches": "minibatches behind the variance estimate",
        "steps": "updates of every run (GD, GD + noise, SGD)",
        "every": "updates between evaluations (training loss, validation accuracy)",
        "plateau_points": "last evaluations over which a run's fall per interval is measured (the least-squares slope of its "
                          "log loss): has it stopped descending?",
        "seeds": "replicates (the same θ₀ for the four runs of a seed)",
        "recover_steps": "footnote 6: updates of each continuation of the stuck run",
        "recover_lr_factor": "footnote 6: the lowered learning rate, as a fraction of the run's",
    },
    paper_value={
        "paper_models": "VGG-11, ResNet-56, MLP",
        "data": "CIFAR-10, MNIST",
        "n_train": "45,000",
        "batch_size": "100",
        "lr_cnn": "0.1 (code's GD: 0.9 effective)",
        "lr_resnet": "0.1 (Section 4: 'a fixed learning rate of 0.1' for all three networks; 0.3 in Fig. 7 and Table 2)",
        "lr_mlp": "0.1",
        "noise_factors": "0.05, 0.1 (variances 0.014, 0.028; code: used as std, ÷ 9)",
        "steps": "'until training losses saturate' (GD cosine shown over 1,500)",
        "seeds": "1 (the `paper` scale runs 3: a t test needs replicates)",
        "recover_steps": "not given",
    },
)
