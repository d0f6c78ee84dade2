"""Settings of chapter 03 (the roles of learning rate and batch size: Figures 4, 22, 23, Table 2)."""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

#: The paper's Table 2 (average height above the valley floor at epochs 1, 10, 25, 100).
TABLE2_PAPER = {
    ("VGG-11", 0.1): [0.0625, 0.0199, 0.0104, 0.0025],
    ("VGG-11", 0.05): [0.0102, 0.0050, 0.0035, 0.0011],
    ("ResNet-56", 0.3): [0.0380, 0.0131, 0.0094, 0.0017],
}

SETTINGS = ScaleTable(
    settings={
        "smoke": dict(
            paper_models=False, data="digits", n_train=150, eval_n=0, batch_size=50,
            lr_cnn=0.1, lr_resnet=0.3, lr_mlp=0.1, batch_sizes=[25, 50], lr_factors=[0.5, 1.0], steps=12, regime_steps=2, seeds=2,
            sweep_data="fashion", sweep_n_train=200, sweep_side=14, digits_pilot=True,
            smooth=0.9, fn_batch=25, fn_ks=[1, 2], fn_epochs=2, fn_small=0.1,
            t2_epochs=[1, 3], t2_train_epochs=3, t2_factor=0.5, t2_seeds=2, n_alpha=5, eval_float64=["mlp"], rtol32=1e-4,
        ),
        "book": dict(
            paper_models=False, data="digits", n_train=1000, eval_n=0, batch_size=100,
            lr_cnn=0.1, lr_resnet=0.3, lr_mlp=0.1, batch_sizes=[25, 50, 100, 200], lr_factors=[0.25, 0.5, 1.0, 2.0],
            steps=300, regime_steps=5, seeds=3, sweep_data="fashion", sweep_n_train=1000, sweep_side=14, digits_pilot=True,
            smooth=0.9, fn_batch=25, fn_ks=[1, 2, 4], fn_epochs=10, fn_small=0.1,
            t2_epochs=[1, 10, 25, 100], t2_train_epochs=100, t2_factor=0.5, t2_seeds=5, n_alpha=11, eval_float64=["mlp"],
            rtol32=1e-4,
        ),
        "paper": dict(
            paper_models=True, data="paper", n_train=45000, eval_n=5000, batch_size=100,
            lr_cnn=0.1, lr_resnet=0.3, lr_mlp=0.1, batch_sizes=[25, 50, 100, 200, 400],
            lr_factors=[0.25, 0.5, 1.0, 2.0], steps=4500, regime_steps=10, seeds=3, sweep_data="paper", sweep_n_train=45000,
            sweep_side=32, digits_pilot=False, smooth=0.99, fn_batch=25, fn_ks=[1, 2, 4],
            fn_epochs=10, fn_small=0.1, t2_epochs=[1, 10, 25, 100], t2_train_epochs=100, t2_factor=0.5, t2_seeds=3,
            n_alpha=11, eval_float64=[], rtol32=1e-4,
        ),
    },
    descriptions={
        "paper_models": "the paper's VGG-11 / ResNet-56 / MLP 784-500-350-10 (else the small stand-ins)",
        "data": "digits (scikit-learn) or the paper's data sets (CIFAR-10, MNIST; stand-ins where absent)",
        "n_train": "training images",
        "eval_n": "images on which the loss along a segment is evaluated (0 = the whole training set)",
        "batch_size": "batch size of the learning-rate sweep and of Table 2",
        "lr_cnn": "base learning rate of the CNN (VGG-11)",
        "lr_resnet": "base learning rate of the residual net (ResNet-56)",
        "lr_mlp": "base learning rate of the MLP",
        "batch_sizes": "batch sizes of Figures 4, 22, 23 (at the base learning rate)",
        "lr_factors": "learning rates of Figures 4, 22, 23 as multiples of the base rate (at batch_size)",
        "steps": "iterations per run of Figures 4, 22, 23",
        "regime_steps": "steps profiled at the start of each run's late window: is it still oscillating as the paper's did?",
        "seeds": "replicates per setting (Figures 4, 22, 23 and footnote 1)",
        "sweep_data": "data of the Figure 4, 22, 23 sweeps: Fashion-MNIST (one split for the three stand-ins), digits, or the "
                      "paper's (CIFAR-10, MNIST; the chapter's `data`)",
        "sweep_n_train": "training images of the Figure 4, 22, 23 sweeps",
        "sweep_side": "image side of the Fashion-MNIST sweeps (2×2 average-pooled to 14; the MLP takes side² inputs)",
        "digits_pilot": "also judge the sweeps on the first setting, n_train digits (the batch sizes first; the rates only "
                        "if every batch-size run is in the regime), for the Pilot line",
        "smooth": "β of the bias-corrected exponential moving average that smooths the cosine curves",
        "fn_batch": "footnote 1: the small batch B",
        "fn_ks": "footnote 1: factors k of (kB, kη)",
        "fn_epochs": "footnote 1: epochs per run (the same number of examples for every k)",
        "fn_small": "footnote 1: the small learning rate as a fraction of the base rate",
        "t2_epochs": "epochs whose every step is profiled for Table 2",
        "t2_train_epochs": "training epochs of the Table 2 runs",
        "t2_factor": "Table 2's second learning rate as a fraction of the base rate",
        "t2_seeds": "replicates of the Table 2 runs",
        "n_alpha": "grid points per segment, both ends included",
        "eval_float64": "stand-ins evaluated in float64 (the others in float32)",
        "rtol32": "relative tolerance of a float32 evaluation",
    },
    paper_value={
        "paper_models": "VGG-11, ResNet-56, MLP",
        "data": "CIFAR-10, MNIST, Tiny-ImageNet",
        "n_train": "45,000",
        "batch_size": "100",
        "lr_cnn": "0.1",
        "lr_resnet": "0.3",
        "batch_sizes": "not given",
        "lr_factors": "not given",
        "steps": "not given",
        "seeds": "1 (the `paper` scale runs 3: a t test needs replicates)",
        "sweep_data": "CIFAR-10 (VGG-11, ResNet-56), MNIST (MLP)",
        "sweep_n_train": "45,000 (CIFAR-10); MNIST: not stated, the code's default 45,000",
        "smooth": "'smoothened', method not given",
        "fn_batch": "untested in the paper (footnote 1)",
        "t2_epochs": "1, 10, 25, 100",
        "t2_train_epochs": "100",
        "t2_factor": "0.5 (VGG-11: 0.1 and 0.05)",
        "t2_seeds": "1 (the `paper` scale runs 3: a t test needs replicates)",
        "n_alpha": "10",
    },
)
