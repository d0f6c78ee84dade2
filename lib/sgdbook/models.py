"""General architectures, built with an explicit generator for their initialisation.

- :func:`mlp`: fully connected ReLU networks (the vmf paper's FNN and DFNN, bias-free, optional
  batch normalisation before each ReLU; the batch-size paper's 784-1024-512-10; the Hessian
  paper's small Gauss-k nets).
- :func:`vgg` (VGG-style conv/BN/ReLU/max-pool stacks with a ReLU head; ``vgg()`` is VGG-11 with
  ``vgg11_bn``'s features and a 512-512-10 head) and :func:`small_cnn` (a small one for 8×8 or
  16×16 images).
- :func:`preact_resnet`: pre-activation residual nets for small images (ResNet-56 at
  ``blocks=9, widths=(16, 32, 64)``).
- :func:`init_weights`, :func:`count_parameters`.

A paper's own architectures live in its package (e.g. :mod:`sgdbook.papers.vmf_directional.models`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def init_weights(model: nn.Module, generator: torch.Generator, scheme: str = "xavier_uniform") -> nn.Module:
    """Re-initialise every Linear/Conv weight (biases to 0, BN to γ = 1, β = 0), in place."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                if scheme == "xavier_uniform":
                    nn.init.xavier_uniform_(m.weight, generator=generator)
                elif scheme == "xavier_normal":
                    nn.init.xavier_normal_(m.weight, generator=generator)
                elif scheme == "kaiming_uniform":  # torch's default for Linear/Conv
                    nn.init.kaiming_uniform_(m.weight, a=5**0.5, generator=generator)
                else:
                    raise ValueError(f"unknown initialisation {scheme!r}")
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.reset_parameters()
    return model


def mlp(
    sizes: Sequence[int],
    *,
    bias: bool = False,
    bn: bool = False,
    generator: torch.Generator | None = None,
    init: str = "xavier_uniform",
    flatten: bool = True,
) -> nn.Sequential:
    """A ReLU network with layer widths ``sizes`` (input first, classes last).

    ``bn`` puts a BatchNorm1d (affine) right before every ReLU. ``flatten`` accepts image-shaped
    inputs. With ``generator`` the weights are initialised from it (``init`` scheme).
    """
    if len(sizes) < 2:
        raise ValueError("an MLP needs at least an input and an output size")
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(sizes) - 2:
            if bn:
                layers.append(nn.BatchNorm1d(b))
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    if generator is not None:
        init_weights(model, generator, init)
    return model


# ----------------------------------------------------------------------------- VGG-style and pre-activation residual nets


def _materialise(model: nn.Module, generator: torch.Generator | None, init: str) -> nn.Module:
    """A model built on the meta device, allocated on the CPU and initialised from ``generator``
    (never from the global random state); without a generator, torch's default initialisation."""
    model = model.to_empty(device="cpu")
    if generator is None:
        for m in model.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        return model
    init_weights(model, generator, init)
    for m in model.modules():  # to_empty left the running statistics uninitialised
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
    return model


#: VGG configuration "A" (VGG-11): channel counts, "M" = 2×2 max-pooling.
VGG11_CONFIG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def vgg(
    config: Sequence[int | str] = VGG11_CONFIG,
    head: Sequence[int] = (512, 512),
    *,
    bn: bool = True,
    in_channels: int = 3,
    classes: int = 10,
    spatial: int = 1,
    generator: torch.Generator | None = None,
    init: str = "kaiming_uniform",
) -> nn.Sequential:
    """A VGG-style network: for each entry of ``config`` a 3×3 convolution (padding 1, bias) →
    optional BatchNorm2d → ReLU, or a 2×2 max-pool for ``"M"`` (torchvision's ``make_layers``),
    then ``Flatten`` and a ReLU head of widths ``head`` and a linear layer to ``classes``, no dropout.

    ``spatial`` is the side of the feature map left after the pools (1 for 32×32 inputs and
    VGG-11). ``vgg()`` is the walk-with-sgd paper's VGG-11: ``vgg11_bn``'s features and a
    512-512-10 head. Built on the meta device and initialised from ``generator`` (``init``
    scheme of :func:`init_weights`; biases 0, BN γ = 1, β = 0).
    """
    with torch.device("meta"):
        layers: list[nn.Module] = []
        c = in_channels
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(c, int(v), 3, padding=1))
            if bn:
                layers.append(nn.BatchNorm2d(int(v)))
            layers.append(nn.ReLU())
            c = int(v)
        layers.append(nn.Flatten())
        c = c * spatial * spatial
        for h in head:
            layers += [nn.Linear(c, h), nn.ReLU()]
            c = h
        layers.append(nn.Linear(c, classes))
        model = nn.Sequential(*layers)
    return _materialise(model, generator, init)


def small_cnn(
    widths: Sequence[int] = (8, 16, 32),
    head: Sequence[int] = (32,),
    *,
    bn: bool = False,
    in_channels: int = 1,
    classes: int = 10,
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """A small VGG-style CNN: one conv → (BN) → ReLU → max-pool stage per width (a 2^k-pixel
    input ends at 1×1 after k stages), a ReLU head, a linear layer (:func:`vgg`)."""
    config: list[int | str] = []
    for w in widths:
        config += [int(w), "M"]
    return vgg(config, head, bn=bn, in_channels=in_channels, classes=classes, generator=generator)


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016b): BN → ReLU → conv3×3 (stride) → BN → ReLU
    → conv3×3, plus the input, or a 1×1 convolution of the pre-activated input where the shape
    changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if (stride != 1 or cin != cout) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


class PreActResNet(nn.Module):
    """Pre-activation ResNet for small images: a 3×3 stem convolution, ``blocks`` pre-activation
    blocks per stage at each of ``widths`` (the first of every later stage with stride 2), then
    BN → ReLU → global average pooling → linear. ``blocks=9, widths=(16, 32, 64)`` is ResNet-56."""

    def __init__(self, blocks: int = 1, widths: Sequence[int] = (4, 8, 16), in_channels: int = 1, classes: int = 10) -> None:
        super().__init__()
        if blocks < 1 or not widths:
            raise ValueError("a PreActResNet needs at least one block and one stage")
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        layers, c = [], widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks):
                layers.append(PreActBlock(c, w, 2 if (i > 0 and j == 0) else 1))
                c = w
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(out.mean(dim=(2, 3)))


def preact_resnet(
    blocks: int = 1,
    widths: Sequence[int] = (4, 8, 16),
    *,
    in_channels: int = 1,
    classes: int = 10,
    generator: torch.Generator | None = None,
    init: str = "kaiming_uniform",
) -> PreActResNet:
    """A :class:`PreActResNet` built on the meta device and initialised from ``generator``."""
    with torch.device("meta"):
        model = PreActResNet(blocks, widths, in_channels, classes)
    return _materialise(model, generator, init)
