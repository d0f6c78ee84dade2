"""General architectures, built with an explicit generator for their initialisation.

- :func:`mlp`: fully connected ReLU networks (the vmf paper's FNN and DFNN, bias-free, optional
  batch normalisation before each ReLU; the batch-size paper's 784-1024-512-10; the Hessian
  paper's small Gauss-k nets).
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
