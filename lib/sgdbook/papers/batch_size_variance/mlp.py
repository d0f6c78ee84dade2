"""The batch-size-variance paper's MNIST MLP (App. A.1.3): widths, builder and input map."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from sgdbook.models import mlp

#: The paper's architecture (App. A.1.3).
PAPER_WIDTHS = [784, 1024, 512, 10]


def widths(settings: Mapping[str, Any]) -> list[int]:
    """Layer widths, input first: ``[784, *hidden, 10]``."""
    return [784, *settings["hidden"], 10]


def make_model(settings: Mapping[str, Any]):
    """A function ``generator -> nn.Module`` building the MLP of these settings (with biases).

    Weights follow torch's default ``nn.Linear`` scheme (Kaiming-uniform with a = √5), biases
    start at 0 (the paper does not state its initialisation).
    """

    def make(generator: torch.Generator) -> nn.Module:
        return mlp(widths(settings), bias=True, generator=generator, init="kaiming_uniform", flatten=False)

    return make


def to_inputs(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] of shape ``[N, (1,) 28, 28]`` as flat vectors mapped to [−1, 1] (App. A.1.3)."""
    return images.reshape(images.shape[0], -1) * 2 - 1
