"""Shared test problems: tiny float64 networks with their data (after curvlinops' ``cases.py``).

The builders are deterministic (their own generators, or a seeded fork of the global RNG that
leaves the caller's RNG alone) so a test gets the same numbers every time. :data:`CASES` is
the list the ``case`` fixture (``tests/conftest.py``) runs a test over: smooth and piecewise
linear nets, with and without biases, batch norm, a convolutional net with skips, a layer used
twice. A test that needs one specific problem calls its builder (``tanh_net()``, ``data()``...).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sgdbook.models import mlp
from sgdbook.papers.vmf_directional.models import PaperCNN

F64 = torch.float64


def data(n: int = 7, shape=(5,), classes: int = 3, seed: int = 0, dtype=F64):
    """``n`` standard-normal inputs of ``shape`` and uniform class labels, from one generator."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=dtype), torch.randint(0, classes, (n,), generator=g)


def blobs(n: int = 40, d: int = 6, k: int = 3, seed: int = 0, dtype=F64, spread: float = 2.0):
    """``k`` Gaussian classes around random centres (``spread`` · N(0, I)), labels ``i % k``: learnable."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = (spread * torch.randn(k, d, generator=g, dtype=dtype))[y] + torch.randn(n, d, generator=g, dtype=dtype)
    return x, y


def randomize(model: nn.Module, seed: int = 0, scale: float = 0.7) -> nn.Module:
    """float64, every parameter (biases too) drawn from N(0, scale²) from its own generator."""
    g = torch.Generator().manual_seed(seed)
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=F64))
    return model


def seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with torch's default initialisation drawn after ``torch.manual_seed(seed)`` in a
    fork of the global RNG (the caller's RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def tanh_net(seed: int = 0, bias: bool = True) -> nn.Sequential:
    """5 → 4 → 3 with tanh, every parameter N(0, 0.49): smooth, no exact zeros."""
    with torch.random.fork_rng(devices=[]):
        net = nn.Sequential(nn.Linear(5, 4, bias=bias), nn.Tanh(), nn.Linear(4, 3, bias=bias))
    return randomize(net, seed)


def tiny_mlp(seed: int = 0, sizes=(6, 10, 4), act=nn.Tanh) -> nn.Sequential:
    """A small smooth net with torch's default initialisation: tanh keeps the Hessian free of
    exact zeros and gives it negative eigenvalues."""

    def build():
        layers = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(act())
        return nn.Sequential(*layers).to(F64)

    return seeded(seed, build)


def bn_mlp(seed: int = 0) -> nn.Sequential:
    """5 → 7 → batch norm → tanh → 3."""
    return seeded(seed, lambda: nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.Tanh(), nn.Linear(7, 3)).to(F64))


def relu_mlp(sizes=(5, 4, 3), bn: bool = False, seed: int = 0) -> nn.Sequential:
    """The library's ReLU MLP with biases (the per-layer fast paths apply without batch norm)."""
    return mlp(list(sizes), bias=True, bn=bn, generator=torch.Generator().manual_seed(seed)).double()


def tied_net(seed: int = 0) -> nn.Sequential:
    """One 5 × 5 layer used twice (weight tying): the per-layer fast paths must step aside."""

    def build():
        shared = nn.Linear(5, 5)
        return nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(5, 3)).double()

    return seeded(seed, build)


def cnn(bn: bool = True, res: bool = True, seed: int = 0) -> nn.Module:
    """The vmf paper's CNN family at toy size: 1×6×6 inputs, two stages, 3 classes."""
    return PaperCNN(bn=bn, res=res, stages=(2, 2), widths=(2, 4), in_channels=1, classes=3,
                    generator=torch.Generator().manual_seed(seed)).double()


def with_running_stats(model: nn.Module, seed: int = 1) -> nn.Module:
    """Batch-norm running statistics set away from (0, 1), so that eval and train modes differ."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return model


@dataclass(frozen=True)
class Case:
    """A tiny classification problem: ``model()`` builds a fresh float64 network, ``data()`` its
    inputs and labels; ``bn`` marks batch norm (per-example quantities need ``bn_mode="eval"``)."""

    name: str
    build: Callable[[], nn.Module] = field(repr=False)
    input_shape: tuple[int, ...] = (5,)
    classes: int = 3
    n: int = 7
    bn: bool = False
    loss_fn: Callable = F.cross_entropy

    def model(self) -> nn.Module:
        m = self.build()
        return with_running_stats(m) if self.bn else m

    def data(self, n: int | None = None, seed: int = 0):
        return data(n or self.n, self.input_shape, self.classes, seed)

    @property
    def bn_mode(self) -> str:
        """The batch-norm mode for per-example quantities (``"train"`` where there is no batch norm)."""
        return "eval" if self.bn else "train"


CASES = [
    Case("tanh", tanh_net),
    Case("tanh-no-bias", lambda: tanh_net(bias=False)),
    Case("relu", relu_mlp),
    Case("relu-deep", lambda: relu_mlp((5, 6, 4, 3), seed=1)),
    Case("bn-tanh", bn_mlp, bn=True),
    Case("bn-relu", lambda: relu_mlp((5, 6, 3), bn=True), bn=True),
    Case("cnn-bn-res", cnn, input_shape=(1, 6, 6), n=10, bn=True),
    Case("tied", tied_net),
]
