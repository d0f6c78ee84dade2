"""Settings of chapter 02 (barriers: Table 1, Figures 8, 12, 13, 15, 16) at each scale."""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

#: The paper's Table 1: barriers crossed in a whole epoch (450 steps) at TABLE1_EPOCHS, per stand-in role
#: (VGG-11, ResNet-56, the MLP; the MLP has no epoch 100).
TABLE1_EPOCHS = (1, 10, 25, 100)
TABLE1_PAPER = {"cnn": (0, 0, 5, 13), "resnet": (0, 0, 2, 23), "mlp": (0, 3, 5, None)}

SETTINGS = ScaleTable(
    settings={
        "smoke": dict(
            paper_models=False, data="digits", n_train=150, eval_n=0, batch_size=50,
            lr_cnn=0.1, lr_resnet=0.3, lr_mlp=0.1, lr_factor=0.5, epochs=6, table_epochs=[1, 3, 6],
            fig8_epochs=4, early_epochs=2, fig_epochs=[3, 6], seeds=2, n_alpha=5, eval_float64=["mlp"], rtol32=1e-4,
            code_batch=50,
        ),
        "book": dict(
            paper_models=False, data="digits", n_train=1000, eval_n=0, batch_size=100,
            lr_cnn=0.1, lr_resnet=0.3, lr_mlp=0.1, lr_factor=0.5, epochs=100, table_epochs=[1, 10, 25, 100],
            fig8_epochs=40, early_epochs=10, fig_epochs=[25, 100], seeds=2, n_alpha=11, eval_float64=["mlp"], rtol32=1e-4,
            code_batch=100,
        ),
        "paper": dict(
            paper_models=True, data="paper", n_train=45000, eval_n=5000, batch_size=100,
            lr_cnn=0.1, lr_resnet=0.3, lr_mlp=0.1, lr_factor=0.5, epochs=100, table_epochs=[1, 10, 25, 100],
            fig8_epochs=40, early_epochs=1, fig_epochs=[25, 100], seeds=3, n_alpha=11, eval_float64=[], rtol32=1e-4,
            code_batch=100,
        ),
    },
    descriptions={
        "paper_models": "the paper's VGG-11 / ResNet-56 / MLP 784-500-350-10 (else the small stand-ins)",
        "data": "digits (scikit-learn) or the paper's data sets (CIFAR-10, MNIST; stand-ins where absent)",
        "n_train": "training images (an epoch is n_train / batch_size iterations)",
        "eval_n": "images on which the loss along a segment is evaluated (0 = the whole training set)",
        "batch_size": "SGD batch size",
        "lr_cnn": "learning rate of the CNN (VGG-11)",
        "lr_resnet": "learning rate of the residual net (ResNet-56)",
        "lr_mlp": "learning rate of the MLP",
        "lr_factor": "the second learning rate of every stand-in, as a fraction of the first",
        "epochs": "training epochs",
        "table_epochs": "epochs whose every step is profiled (Table 1)",
        "fig8_epochs": "first epochs profiled for Figure 8 (CNN, both learning rates, first seed)",
        "early_epochs": "first epochs profiled for the residual net and the MLP too (first seed, both learning rates): "
                        "steps in the paper's regime for claim-no-barrier-cross",
        "fig_epochs": "epochs shown in Figure-1 format (Figures 12, 13, 15, 16)",
        "seeds": "replicates per stand-in and learning rate",
        "n_alpha": "grid points per segment, both ends included",
        "eval_float64": "stand-ins evaluated in float64 (the others in float32)",
        "rtol32": "relative tolerance of a float32 evaluation",
        "code_batch": "batch of the authors' evaluation (train-mode BN, reshuffled at every point)",
    },
    paper_value={
        "paper_models": "VGG-11, ResNet-56, MLP",
        "data": "CIFAR-10, MNIST",
        "n_train": "45,000 (450 iterations per epoch)",
        "eval_n": "all (code: batches of 100, augmented)",
        "batch_size": "100",
        "lr_cnn": "0.1",
        "lr_resnet": "0.3 (App. A: 0.1)",
        "lr_mlp": "not given",
        "lr_factor": "'smaller learning rates' (Sec. 6); Table 2: 0.05 for VGG-11",
        "epochs": "100 (MLP: 40)",
        "table_epochs": "1, 10, 25, 100",
        "fig8_epochs": "40 (VGG-11)",
        "early_epochs": "not profiled (Table 1's epochs only)",
        "fig_epochs": "25, 100",
        "seeds": "1 (the `paper` scale runs 3: a t test needs replicates)",
        "n_alpha": "10",
        "code_batch": "100",
    },
)
