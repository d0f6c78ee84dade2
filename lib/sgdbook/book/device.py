"""Device selection with clear errors."""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda")


class DeviceError(RuntimeError):
    """A device that was asked for but cannot be used."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; ``"cuda"`` without CUDA is an error."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {name!r} was asked for, but this machine has no usable CUDA device "
                f"(torch {torch.__version__}, torch.cuda.is_available() is False); "
                "use DEVICE=cpu or DEVICE=auto"
            )
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"unknown device {name!r}: use one of {', '.join(DEVICES)}")
