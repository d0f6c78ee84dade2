import pytest
import torch

# Tiny kernels dominate the tests: one thread is faster and stable on a shared 2-core machine
# (OpenMP spinning made two threads 10–40× slower under load, see DESIGN.md).
torch.set_num_threads(1)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
