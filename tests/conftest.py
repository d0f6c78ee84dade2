import contextlib

import pytest
import torch

from cases import CASES

# Tiny kernels dominate the tests: one thread is faster and stable on a shared 2-core machine
# (OpenMP spinning made two threads 10–40× slower under load).
torch.set_num_threads(1)


_DTYPE_CHANGED_AT_IMPORT: set[str] = set()


@pytest.fixture(autouse=True)
def _default_dtype_kept(request):
    """A test that changes torch's default dtype would change every later test's numbers."""
    if request.node.path and str(request.node.path) in _DTYPE_CHANGED_AT_IMPORT:
        pytest.fail(f"{request.node.path.name} changed torch's default dtype at import (reset to float32 for the "
                    "other tests): pass dtypes explicitly", pytrace=False)
    yield
    if torch.get_default_dtype() is not torch.float32:
        torch.set_default_dtype(torch.float32)
        pytest.fail("this test changed torch's default dtype: pass dtypes explicitly", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    # the same at import time: the default goes back to float32 and the module's tests fail
    report = yield
    if torch.get_default_dtype() is not torch.float32:
        torch.set_default_dtype(torch.float32)
        _DTYPE_CHANGED_AT_IMPORT.add(str(collector.path))
    return report


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


@pytest.fixture(params=CASES, ids=lambda c: c.name)
def case(request):
    """Each shared problem of ``tests/cases.py`` in turn."""
    return request.param


def _snapshot(model):
    return {
        "modes": [(name, m.training) for name, m in model.named_modules()],
        "params": [(name, p, p.detach().clone(), p.requires_grad, None if p.grad is None else (p.grad, p.grad.clone()))
                   for name, p in model.named_parameters()],
        "buffers": [(name, b, b.clone()) for name, b in model.named_buffers()],
    }


def _check(model, before, what):
    after = _snapshot(model)
    assert after["modes"] == before["modes"], f"{what} changed the modules' train/eval modes"
    assert [n for n, *_ in after["params"]] == [n for n, *_ in before["params"]], f"{what} changed the parameters"
    for (name, p, value, req, grad), (_, q, *_) in zip(before["params"], after["params"]):
        assert q is p and isinstance(q, torch.nn.Parameter), f"{what} replaced parameter {name}"
        assert torch.equal(q.detach(), value), f"{what} changed parameter {name}"
        assert q.requires_grad == req, f"{what} changed requires_grad of {name}"
        if grad is None:
            assert q.grad is None, f"{what} left a .grad on {name}"
        else:
            assert q.grad is grad[0] and torch.equal(q.grad, grad[1]), f"{what} changed the .grad of {name}"
    assert [n for n, *_ in after["buffers"]] == [n for n, *_ in before["buffers"]], f"{what} changed the buffers"
    for (name, b, value), (_, c, _) in zip(before["buffers"], after["buffers"]):
        assert c is b and torch.equal(c, value), f"{what} changed buffer {name}"


@pytest.fixture
def untouched():
    """``with untouched(model, ..., what="..."):`` — the block must leave each model as it found it:
    every module's train/eval mode, the parameter objects, their values, ``requires_grad`` and
    ``.grad`` (absent, or the same tensor with the same values), the buffers (batch-norm running
    statistics and counters) — and the global random state (estimators take a generator)."""

    @contextlib.contextmanager
    def check(*models, what="the call", rng=True):
        before = [_snapshot(m) for m in models]
        state = torch.get_rng_state()
        yield
        for m, b in zip(models, before):
            _check(m, b, what)
        if rng:
            assert torch.equal(torch.get_rng_state(), state), f"{what} drew from the global random generator"

    return check


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
