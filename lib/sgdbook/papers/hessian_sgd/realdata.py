"""App. A.2 of the Hessian paper (Table 3): the MNIST and CIFAR-10 networks and their data.

MNIST: images standardised by the training set's mean and standard deviation and flattened to
784; fully connected ReLU networks with 3–6 hidden layers of 128 units. CIFAR-10: images scaled to
[0, 1], standardised per colour channel and flattened to 3,072; 3 or 6 hidden layers of 256 units.
Neither data set can be downloaded on these machines: :func:`sgdbook.data.paper_dataset` loads
them where they exist and otherwise returns the stand-in (Fashion-MNIST, padded to 3×32×32 for
CIFAR-10) with a note saying which ran.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ... import data as _data
from ...models import mlp

#: Table 3: data set → (input dimension, hidden width, {hidden layers: (parameters, max iterations)}),
#: batch sizes and learning rate. MNIST's 3-layer "20,00" iterations is a typo (2,000 or 20,000).
TABLE3 = {
    "mnist": dict(d=784, width=128, layers={3: (134_794, "20,00"), 4: (151_306, 10_000), 5: (167_818, 10_000), 6: (184_330, 10_000)},
                  batch_sizes=(64, 128, 256, 512), lr=0.1, n=60_000),
    "cifar10": dict(d=3072, width=256, layers={3: (920_842, 10_000), 6: (1_118_218, 15_000)},
                    batch_sizes=(256, 512), lr=0.1, n=50_000),
}
REPEATS_PAPER = 10


def real_net(dataset: str, depth: int, width: int | None = None, *, generator: torch.Generator | None = None,
             dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """Table 3's network for ``dataset`` (``"mnist"`` or ``"cifar10"``) with ``depth`` hidden ReLU
    layers of ``width`` units (default: the paper's 128 / 256), biases, inputs already flattened;
    initialised by PyTorch's default scheme from ``generator`` (the paper does not say)."""
    if dataset not in TABLE3:
        raise ValueError(f"unknown data set {dataset!r}: use one of {', '.join(TABLE3)}")
    t = TABLE3[dataset]
    w = t["width"] if width is None else int(width)
    return mlp([t["d"], *([w] * depth), 10], bias=True, flatten=False, generator=generator,
               init="kaiming_uniform").to(dtype)


@dataclass
class RealData:
    """Standardised, flattened training images (a subset) with their labels and where they came from."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    note: str


def real_data(dataset: str, n: int, *, seed: int = 0, dtype: torch.dtype = torch.float32, device=None) -> RealData:
    """``n`` training images of ``dataset`` (the paper's data where it loads, else the stand-in),
    chosen at random with ``seed``, preprocessed as App. A.2 says: MNIST standardised by the mean
    and standard deviation of the (subset's) pixels, CIFAR-10 per colour channel; flattened."""
    ds, note = _data.paper_dataset(dataset, "train")
    ds = ds.subset(n, torch.Generator().manual_seed(seed))
    x = ds.x.to(torch.float64)
    if dataset == "mnist":
        x = (x - x.mean()) / x.std()
    else:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True)
        x = (x - mean) / std
    x = x.reshape(n, -1).to(dtype)
    if device is not None:
        x = x.to(device)
    return RealData(ds.name, x, ds.y.to(x.device), note)
