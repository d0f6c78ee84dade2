"""Settings of the hessian-sgd chapter on real data (Sec. 4.2 Figs. 3–4; App. A.2 Table 3; App. C.1
Figs. 21–22): Table 3's networks on MNIST and CIFAR-10, or on their stand-ins where those cannot be
loaded (Fashion-MNIST, padded to 3×32×32 for CIFAR-10). ``book`` trains on image subsets until
they are fitted (training accuracy ≥ 0.99, the regime of the claims), for fewer iterations than
Table 3, and narrows the CIFAR-10 network (``cifar_width``); ``paper`` is Table 3.
"""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

SETTINGS = ScaleTable(
    settings={
        "smoke": dict(
            mnist_n=256, cifar_n=256, n_eval=128, runs=2, lanczos_runs=2, checkpoints=2,
            mnist_depths=[3, 6], mnist_batches=[64], mnist_steps=[20, 20],
            cifar_depths=[3, 6], cifar_batches=[256], cifar_width=16, cifar_steps=[8, 8],
        ),
        "book": dict(
            mnist_n=512, cifar_n=512, n_eval=512, runs=2, lanczos_runs=2, checkpoints=5,
            mnist_depths=[3, 6], mnist_batches=[64, 256], mnist_steps=[1000, 2000],
            cifar_depths=[3, 6], cifar_batches=[256, 512], cifar_width=64, cifar_steps=[800, 1500],
        ),
        "paper": dict(
            mnist_n=60_000, cifar_n=50_000, n_eval=60_000, runs=10, lanczos_runs=10, checkpoints=12,
            mnist_depths=[3, 4, 5, 6], mnist_batches=[64, 128, 256, 512], mnist_steps=[2000, 10_000, 10_000, 10_000],
            cifar_depths=[3, 6], cifar_batches=[256, 512], cifar_width=256, cifar_steps=[10_000, 15_000],
        ),
    },
    descriptions={
        "mnist_n": "training images of MNIST (or its stand-in)",
        "cifar_n": "training images of CIFAR-10 (or its stand-in)",
        "n_eval": "training images on which the top eigenpairs of H_f and M_t are computed (Figs. 3–4)",
        "runs": "independent runs per (network, batch size)",
        "lanczos_runs": "of these, runs whose top-15 eigenspaces are followed (Figs. 3–4)",
        "checkpoints": "iterations of Figs. 3–4: 0, then log-spaced from 5 % of the run to its end",
        "mnist_depths": "hidden layers of the MNIST networks (128 units each)",
        "mnist_batches": "batch sizes on MNIST",
        "mnist_steps": "iterations per MNIST depth",
        "cifar_depths": "hidden layers of the CIFAR-10 networks",
        "cifar_batches": "batch sizes on CIFAR-10",
        "cifar_width": "units per hidden layer of the CIFAR-10 networks",
        "cifar_steps": "iterations per CIFAR-10 depth",
    },
    paper_value={
        "mnist_n": "60,000",
        "cifar_n": "50,000",
        "n_eval": "the training set",
        "runs": "10",
        "lanczos_runs": "10",
        "checkpoints": "not stated",
        "mnist_depths": "3, 4, 5, 6",
        "mnist_batches": "64, 128, 256, 512",
        "mnist_steps": "'20,00' (typo), 10,000, 10,000, 10,000",
        "cifar_depths": "3, 6",
        "cifar_batches": "256, 512",
        "cifar_width": "256",
        "cifar_steps": "10,000, 15,000",
    },
)
