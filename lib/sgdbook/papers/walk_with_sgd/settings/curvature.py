"""Settings of chapter 04 (curvature: Figures 3 and 7, Eqs. 2 and 3, H ≈ C, the noise's
alignment with sharp directions) at each scale."""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

SETTINGS = ScaleTable(
    settings={
        "smoke": dict(
            paper_models=False, data="digits", n_train=200, eval_n=0, batch_size=100, lr_cnn=0.1, lr_resnet=0.3, epochs=3,
            checkpoints=[1, 2, 3], seeds=2, hessian_n=200, hessian_chunk=None, lanczos_tol=1e-2,
            nobn_lr=0.1, nobn_epochs=4, nobn_checkpoints=[2, 4], nobn_n=200, topk=3,
            mc_checkpoint=2, mc_minibatches=200,
            tiny_n=12, tiny_side=4, tiny_widths=[2, 3], tiny_head=[4], tiny_lr=0.5, tiny_steps=300,
            softmax_side=4, softmax_noise=0.2, softmax_sizes=[300, 600], softmax_draws=2,
        ),
        "book": dict(
            paper_models=False, data="digits", n_train=1000, eval_n=0, batch_size=100, lr_cnn=0.1, lr_resnet=0.3, epochs=40,
            checkpoints=[1, 2, 5, 10, 20, 40], seeds=4, hessian_n=1000, hessian_chunk=None, lanczos_tol=1e-3,
            nobn_lr=0.1, nobn_epochs=80, nobn_checkpoints=[5, 20, 40, 80], nobn_n=1000, topk=10,
            mc_checkpoint=20, mc_minibatches=2000,
            tiny_n=40, tiny_side=4, tiny_widths=[2, 4], tiny_head=[8], tiny_lr=0.5, tiny_steps=4000,
            softmax_side=4, softmax_noise=0.2, softmax_sizes=[225, 450, 900, 1797], softmax_draws=4,
        ),
        "paper": dict(
            paper_models=True, data="paper", n_train=45000, eval_n=0, batch_size=100, lr_cnn=0.1, lr_resnet=0.3, epochs=100,
            checkpoints=[1, 10, 25, 100], seeds=3, hessian_n=25000, hessian_chunk=500, lanczos_tol=1e-3,
            nobn_lr=0.1, nobn_epochs=100, nobn_checkpoints=[1, 10, 25, 100], nobn_n=5000, topk=20,
            mc_checkpoint=10, mc_minibatches=2000,
            tiny_n=40, tiny_side=4, tiny_widths=[2, 4], tiny_head=[8], tiny_lr=0.5, tiny_steps=4000,
            softmax_side=4, softmax_noise=0.2, softmax_sizes=[225, 450, 900, 1797], softmax_draws=4,
        ),
    },
    descriptions={
        "paper_models": "the paper's VGG-11 and ResNet-56 on CIFAR-10 (else the small stand-ins on digits)",
        "data": "digits (scikit-learn) or the paper's CIFAR-10 (45k/5k; a stand-in where it cannot be loaded)",
        "n_train": "training images (digits: the rest of the 1,797 validate)",
        "eval_n": "unused here (the walk chapters' evaluation subset; 0 = all)",
        "batch_size": "SGD batch size",
        "lr_cnn": "learning rate of the CNN (VGG-11) runs, fixed",
        "lr_resnet": "learning rate of the residual-net (ResNet-56) runs, fixed",
        "epochs": "training epochs of the Figure 3 / 7 runs",
        "checkpoints": "epochs at which λ_max (batch-norm train and eval mode) and validation accuracy are measured",
        "seeds": "replicates (initialisation and minibatch order) per network",
        "hessian_n": "training images in the Hessian (one batch: its own batch-norm statistics in train mode)",
        "hessian_chunk": "λ_max's Hessian as the mean over chunks of this many images, each product rebuilding one chunk at a "
                         "time (train mode: each chunk's own statistics; the memory of one chunk: one graph over 25,000 "
                         "CIFAR-10 images would hold at least 40 GB for VGG-11 and 107 GB for ResNet-56, their saved "
                         "activations alone); none: one batch",
        "lanczos_tol": "relative residual tolerance of the Lanczos eigenvalues",
        "nobn_lr": "learning rate of the CNN without batch norm (Eqs. 2–3, H ≈ C, the noise's alignment)",
        "nobn_epochs": "epochs of the CNN without batch norm (to a near-interpolating minimum)",
        "nobn_checkpoints": "epochs at which H, C and the noise's share are measured on that CNN",
        "nobn_n": "training images on which H, C and the per-example gradients of that CNN are taken",
        "topk": "Hessian eigenvectors in the noise-share extension",
        "mc_checkpoint": "epoch (CNN without batch norm) at which Eq. 2 is checked by Monte Carlo",
        "mc_minibatches": "Monte Carlo minibatches for Eq. 2",
        "tiny_n": "examples of the tiny float64 CNN of Eq. 3 (dense matrices)",
        "tiny_side": "side of its inputs (digits average-pooled)",
        "tiny_widths": "its convolution widths",
        "tiny_head": "its hidden linear widths",
        "tiny_lr": "full-batch GD learning rate to its interpolating minimum",
        "tiny_steps": "full-batch GD steps to its interpolating minimum",
        "softmax_side": "side of the inputs of the linear softmax model (digits average-pooled)",
        "softmax_noise": "fraction of real labels replaced (makes the data non-separable)",
        "softmax_sizes": "sample sizes N with labels drawn from the fitted model",
        "softmax_draws": "independent draws of those labels per N (mean and t-interval)",
    },
    paper_value={
        "paper_models": "VGG-11, ResNet-56 (CIFAR-10)",
        "data": "CIFAR-10",
        "n_train": "45,000",
        "batch_size": "100",
        "lr_cnn": "0.1",
        "lr_resnet": "0.3 (Fig. 7; App. A says 0.1)",
        "epochs": "100",
        "checkpoints": "not given (code saves epochs 1, 10, 25, 100)",
        "seeds": "1 (the `paper` scale runs 3: a t test needs replicates)",
        "hessian_n": "25,000 in batches of 500 (code), augmented",
        "hessian_chunk": "500 (the code's batches)",
        "lanczos_tol": "15 power iterations (code)",
        "topk": "— (not tested in the paper)",
        "mc_minibatches": "— (Eq. 2 is not checked in the paper)",
    },
)
