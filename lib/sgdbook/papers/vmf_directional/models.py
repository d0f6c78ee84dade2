"""The vmf-directional paper's architectures.

- :func:`vmf_fnn`: the FNN 784-800-10 and DFNN 784-800-800-800-10 (bias-free ReLU MLPs, optional
  batch normalisation before each ReLU).
- :class:`PaperCNN`: the 14-layer CNN (13 bias-free 3×3 convolutions, global average pooling, a
  10-way linear layer), optional batch normalisation before each ReLU and identity skips after
  every two convolutions (zero-padded channels, subsampled shortcut).
- :func:`vmf_model`: one of the eight setups by name, with the parameter counts of Table 1
  (:data:`VMF_PARAMETER_COUNTS`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from sgdbook.models import init_weights, mlp

#: Parameter counts the vmf paper reports (Table 1), used by the tests.
VMF_PARAMETER_COUNTS = {
    "FNN": 635_200,
    "FNN+BN": 636_800,
    "DFNN": 1_915_200,
    "DFNN+BN": 1_920_000,
    "CNN": 206_128,
    "CNN+Res": 206_128,
    "CNN+BN": 207_152,
    "CNN+Res+BN": 207_152,
}


def vmf_fnn(bn: bool = False, depth: int = 1, width: int = 800, generator: torch.Generator | None = None) -> nn.Sequential:
    """The vmf paper's FNN (``depth = 1``) or DFNN (``depth = 3``) for 28×28 inputs."""
    return mlp([784, *([width] * depth), 10], bias=False, bn=bn, generator=generator)


class _ConvUnit(nn.Module):
    """conv 3×3 (bias-free) → optional BN; the ReLU is applied by the caller (after the skip)."""

    def __init__(self, cin: int, cout: int, stride: int, bn: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout) if bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def _shortcut(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Identity shortcut: subsample spatially and zero-pad channels to the shape of ``like``."""
    if x.shape[-1] != like.shape[-1]:
        step = x.shape[-1] // like.shape[-1]
        x = x[..., ::step, ::step]
    extra = like.shape[1] - x.shape[1]
    if extra > 0:
        x = torch.cat([x, x.new_zeros(x.shape[0], extra, *x.shape[2:])], dim=1)
    return x


class PaperCNN(nn.Module):
    """The vmf paper's CNN: a first 3×3 convolution, then stages of 3×3 convolutions
    (the first of each later stage with stride 2), global average pooling, a linear layer.

    The default stages ``(3, 4, 5)`` × ``(16, 32, 64)`` reproduce the paper's parameter counts
    (206,128; 207,152 with BN on all 13 convolutions); the text's literal ``{4, 4, 3, 1}`` ×
    ``{16, 32, 64, 128}`` gives 209,072 instead (see the chapter's deviations). With ``res``,
    an identity skip is added after every two convolutions (counted after the first one),
    before the ReLU and after BN.
    """

    def __init__(
        self,
        bn: bool = False,
        res: bool = False,
        stages: Sequence[int] = (3, 4, 5),
        widths: Sequence[int] = (16, 32, 64),
        in_channels: int = 3,
        classes: int = 10,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.res = res
        self.stem = _ConvUnit(in_channels, widths[0], 1, bn)
        units = []
        cin = widths[0]
        for s, (count, width) in enumerate(zip(stages, widths)):
            for j in range(count):
                units.append(_ConvUnit(cin, width, 2 if (s > 0 and j == 0) else 1, bn))
                cin = width
        self.units = nn.ModuleList(units)
        self.fc = nn.Linear(cin, classes, bias=False)
        if generator is not None:
            init_weights(self, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        skip = x
        for i, unit in enumerate(self.units):
            y = unit(x)
            if self.res and i % 2 == 1:
                y = y + _shortcut(skip, y)
            x = torch.relu(y)
            if i % 2 == 1:
                skip = x
        return self.fc(x.mean(dim=(2, 3)))


def vmf_model(name: str, generator: torch.Generator | None = None, in_channels: int = 3) -> nn.Module:
    """One of the vmf paper's eight setups by name (``"FNN"``, ``"DFNN+BN"``, ``"CNN+Res+BN"``, …)."""
    if name not in VMF_PARAMETER_COUNTS:
        raise ValueError(f"unknown setup {name!r}: use one of {', '.join(VMF_PARAMETER_COUNTS)}")
    bn = "+BN" in name
    if name.startswith("DFNN"):
        return vmf_fnn(bn=bn, depth=3, generator=generator)
    if name.startswith("FNN"):
        return vmf_fnn(bn=bn, depth=1, generator=generator)
    return PaperCNN(bn=bn, res="+Res" in name, in_channels=in_channels, generator=generator)


# ------------------------------------------------------------------ the eight setups at a scale

MLP_SETUPS = ["FNN", "DFNN", "FNN+BN", "DFNN+BN"]
CNN_SETUPS = ["CNN", "CNN+Res", "CNN+BN", "CNN+Res+BN"]
#: The setups of the paper's Figure 7 (and Figures 9-12).
FIG7_SETUPS = ["CNN", "CNN+BN", "CNN+Res+BN"]

def is_cnn(name: str) -> bool:
    return name.startswith("CNN")


def build_model(name: str, settings: Mapping[str, Any], generator: torch.Generator) -> nn.Module:
    """The setup ``name`` (one of the paper's eight) at the scale whose ``settings`` are given."""
    if settings["paper_models"]:
        return vmf_model(name, generator=generator)
    bn = "+BN" in name
    if is_cnn(name):
        return PaperCNN(
            bn=bn, res="+Res" in name, stages=settings["cnn_stages"], widths=settings["cnn_widths"],
            generator=generator,
        )
    depth = 3 if name.startswith("DFNN") else 1
    return mlp([784, *([settings["mlp_width"]] * depth), 10], bias=False, bn=bn, generator=generator)


def input_shape(name: str, settings: Mapping[str, Any]) -> tuple[int, ...]:
    """Shape of one input example of ``name`` at these settings (after the CNN's pooling)."""
    if is_cnn(name):
        side = 32 // settings["cnn_pool"]
        return (3, side, side)
    return (1, 28, 28)
