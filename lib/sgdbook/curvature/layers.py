"""Layer structure of a Hessian.

- :func:`layer_index` maps each layer (the parameters owned by one module, e.g. a Linear layer's
  weight and bias) to its index range in the flat parameter layout.
- :func:`layer_blocks` cuts a Hessian into the diagonal blocks ``G_h`` (one layer) and the
  trailing blocks ``H_h`` (layers ``h`` and above: the Hessian of the sub-network starting at
  layer ``h``), as in Section 4.4 of Li et al.'s Hessian paper.
- :func:`layer_loadings` says how much of an eigenvector lies in each layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayerBlock:
    """One layer's parameters: ``name`` (the owning module's name), its flat index range
    ``[start, stop)`` and the parameter names it holds."""

    name: str
    start: int
    stop: int
    params: tuple[str, ...]

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)


def layer_index(model: nn.Module) -> list[LayerBlock]:
    """The layers of ``model`` in the flat layout of its trainable parameters
    (``named_parameters()`` order, as :func:`sgdbook.functional.flat_parameters`): consecutive
    parameters owned by the same module form one layer (a Linear layer's weight and bias)."""
    blocks: list[list] = []
    offset = 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        owner = name.rpartition(".")[0]
        if blocks and blocks[-1][0] == owner and blocks[-1][2] == offset:
            blocks[-1][2] = offset + p.numel()
            blocks[-1][3].append(name)
        else:
            blocks.append([owner, offset, offset + p.numel(), [name]])
        offset += p.numel()
    if not blocks:
        raise ValueError("the model has no trainable parameters")
    return [LayerBlock(o, a, b, tuple(ns)) for o, a, b, ns in blocks]


def _check_layers(p: int, layers: Sequence[LayerBlock]) -> None:
    if not layers or layers[0].start != 0 or layers[-1].stop != p or any(
        a.stop != b.start for a, b in zip(layers[:-1], layers[1:])
    ):
        raise ValueError(f"the layers must tile [0, {p}) in order (use layer_index(model))")


def layer_blocks(H: torch.Tensor, layers: Sequence[LayerBlock]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(G, Hs)`` for a Hessian ``H`` ``[..., p, p]``: ``G[h] = H[I_h, I_h]`` (the diagonal block of
    layer ``h``) and ``Hs[h] = H[I_{≥h}, I_{≥h}]`` (the Hessian with respect to layers ``h, h+1, …``
    only: the sub-network starting at layer ``h``), views of ``H``. ``Hs[0] = H`` and
    ``Hs[-1] = G[-1]``."""
    _check_layers(H.shape[-1], layers)
    G = [H[..., b.slice, b.slice] for b in layers]
    Hs = [H[..., b.start :, b.start :] for b in layers]
    return G, Hs


def layer_loadings(V: torch.Tensor, layers: Sequence[LayerBlock], *, kind: str = "rms") -> torch.Tensor:
    """How much of each column of ``V`` ``[..., p, k]`` (e.g. unit eigenvectors) lies in each
    layer: ``[..., L, k]``. ``kind="rms"``: ``‖v_{I_h}‖ / √|I_h|``, the root-mean-square component
    of the layer (the magnitude normalised by the layer's size); ``kind="share"``:
    ``‖v_{I_h}‖² / ‖v‖²`` (fractions summing to 1 over the layers)."""
    _check_layers(V.shape[-2], layers)
    sq = torch.stack([V[..., b.slice, :].square().sum(-2) for b in layers], -2)  # [..., L, k]
    if kind == "rms":
        sizes = torch.tensor([b.size for b in layers], dtype=V.dtype, device=V.device)
        return (sq / sizes[:, None]).sqrt()
    if kind == "share":
        return sq / sq.sum(-2, keepdim=True)
    raise ValueError(f"kind must be 'rms' or 'share', got {kind!r}")
