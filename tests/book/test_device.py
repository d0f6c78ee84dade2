"""Device resolution (sgdbook.book.device): "auto", and a clear error for CUDA without CUDA."""

import pytest
import torch

from sgdbook.book.device import DeviceError, resolve_device


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(DeviceError, match="no usable CUDA device.*DEVICE=cpu"):
        resolve_device("cuda")
