import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from sgdbook import schedules
from sgdbook.functional import flat_parameters
from sgdbook.models import mlp, small_cnn
from sgdbook.trajectory import max_gradient_variance, minibatch_gradient_variance, record_trajectory
from sgdbook.training import DivergenceError

F64 = torch.float64


def _data(n=40, seed=0, shape=(1, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=F64), torch.randint(0, 10, (n,), generator=g)


def _cnn(seed=0, bn=True):
    return small_cnn((3, 4, 5), (6,), bn=bn, generator=torch.Generator().manual_seed(seed)).double()


def _snapshot(model):
    return (
        copy.deepcopy(model.state_dict()),
        [m.training for m in model.modules()],
        [p.grad for p in model.parameters()],
    )


def _assert_unchanged(model, snap):
    state, modes, grads = snap
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters()) and all(g is None for g in grads)


@pytest.mark.parametrize("batch_size", [10, None])
def test_steps_equal_torch_optim_sgd_with_batch_norm_buffers(batch_size):
    x, y = _data()
    model = _cnn()
    model.eval()  # the recorder trains in train mode whatever the model's flag
    snap = _snapshot(model)
    lr = schedules.step(0.3, [3, 5], gamma=0.5)
    steps = 7  # crosses an epoch boundary (4 minibatches of 10 per epoch)
    tr = record_trajectory(model, F.cross_entropy, x, y, steps=steps, lr=lr, batch_size=batch_size,
                           generator=torch.Generator().manual_seed(3), windows=[(0, steps)], keep_indices=True,
                           store_buffers=True)
    _assert_unchanged(model, snap)

    ref = copy.deepcopy(model).train()
    opt = torch.optim.SGD(ref.parameters(), lr=0.3, momentum=0.0, weight_decay=0.0)
    prev = None
    for t in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr(t)
        idx = tr.indices[t] if batch_size else torch.arange(x.shape[0])
        assert torch.equal(tr.window(0, steps).thetas[t], flat_parameters(ref))
        loss = F.cross_entropy(ref(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        g = torch.cat([p.grad.reshape(-1) for p in ref.parameters()])
        assert float(tr.loss[t]) == pytest.approx(loss.item(), rel=1e-13)
        assert float(tr.grad_norm[t]) == pytest.approx(float(g.norm()), rel=1e-12)
        if prev is not None:
            assert float(tr.cos[t]) == pytest.approx(float(F.cosine_similarity(g, prev, dim=0)), abs=1e-12)
        else:
            assert math.isnan(float(tr.cos[t]))
        prev = g.clone()
        opt.step()
    torch.testing.assert_close(tr.theta, flat_parameters(ref), rtol=1e-13, atol=1e-14)
    for name, buf in ref.named_buffers():
        torch.testing.assert_close(tr.buffers[name], buf, rtol=1e-13, atol=1e-14)
        torch.testing.assert_close(tr.window(0, steps).buffers[name][-1], buf, rtol=1e-13, atol=1e-14)
    thetas = tr.window(0, steps).thetas
    theta0 = thetas[0]
    torch.testing.assert_close(tr.dist, (thetas - theta0).norm(dim=1), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(tr.norm, thetas.norm(dim=1), rtol=1e-12, atol=1e-14)
    if batch_size:
        assert sorted(torch.cat(tr.indices[:4]).tolist()) == list(range(40))  # one epoch = a permutation


def test_cosine_uses_the_noisy_gradients_and_the_noise_has_the_stated_variance():
    x, y = _data(n=20, shape=(5,))
    model = mlp([5, 4, 3], bias=True, generator=torch.Generator().manual_seed(1)).double()
    zero = lambda out, t: 0.0 * out.sum()  # noqa: E731  a flat loss: every step is pure noise
    sigma, steps, lr = 0.7, 60, 0.5
    tr = record_trajectory(model, zero, x, y, steps=steps, lr=lr, generator=torch.Generator().manual_seed(2),
                           noise_std=sigma, windows=[(0, steps)])
    th = tr.window(0, steps).thetas
    used = -(th[1:] - th[:-1]) / lr  # the gradients actually used
    cos = F.cosine_similarity(used[1:], used[:-1], dim=1)
    torch.testing.assert_close(tr.cos[1:], cos, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(tr.grad_norm, used.norm(dim=1), rtol=1e-10, atol=1e-12)
    d = used.shape[1]
    ss = float((used**2).sum() / sigma**2)  # χ² with steps·d degrees of freedom
    assert stats.chi2.sf(ss, steps * d) > 1e-3 and stats.chi2.cdf(ss, steps * d) > 1e-3


def test_continuation_gives_the_same_run_for_gd():
    x, y = _data(n=30)
    model = _cnn(bn=False)
    full = record_trajectory(model, F.cross_entropy, x, y, steps=6, lr=0.2, generator=torch.Generator())
    a = record_trajectory(model, F.cross_entropy, x, y, steps=4, lr=0.2, generator=torch.Generator())
    b = record_trajectory(model, F.cross_entropy, x, y, steps=2, lr=0.2, generator=torch.Generator(), **a.continuation())
    torch.testing.assert_close(b.theta, full.theta, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(torch.cat([a.cos, b.cos]), full.cos, rtol=1e-12, atol=1e-12, equal_nan=True)
    torch.testing.assert_close(torch.cat([a.dist, b.dist[1:]]), full.dist, rtol=1e-12, atol=1e-14)


def test_chunked_gd_is_full_batch_gd_without_batch_norm_and_per_chunk_batch_norm_with_it():
    x, y = _data(n=23)  # chunks of 10, 10, 3: unequal weights
    kw = dict(steps=3, lr=0.2, generator=torch.Generator(), windows=[(0, 3)])
    one = record_trajectory(_cnn(bn=False), F.cross_entropy, x, y, **kw)
    chunked = record_trajectory(_cnn(bn=False), F.cross_entropy, x, y, grad_batch=10, **kw)
    torch.testing.assert_close(chunked.window(0, 3).thetas, one.window(0, 3).thetas, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(chunked.loss, one.loss, rtol=1e-13, atol=0)
    torch.testing.assert_close(chunked.cos, one.cos, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert torch.equal(record_trajectory(_cnn(bn=False), F.cross_entropy, x, y, grad_batch=23, **kw).theta, one.theta)
    # with batch norm: each chunk normalised by its own statistics, the buffers updated once per chunk
    model = _cnn()
    got = record_trajectory(model, F.cross_entropy, x, y, grad_batch=10, **{**kw, "steps": 1, "windows": [(0, 1)]})
    ref = copy.deepcopy(model).train()
    loss = sum(F.cross_entropy(ref(x[i : i + 10]), y[i : i + 10]) * min(10, 23 - i) / 23 for i in range(0, 23, 10))
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    g = torch.cat([q.reshape(-1) for q in grads])
    torch.testing.assert_close(got.theta, flat_parameters(model) - 0.2 * g, rtol=1e-13, atol=1e-14)
    assert float(got.loss[0]) == pytest.approx(loss.item(), rel=1e-13)
    for name, buf in ref.named_buffers():
        torch.testing.assert_close(got.buffers[name], buf, rtol=1e-13, atol=1e-14)
    with pytest.raises(ValueError, match="grad_batch"):
        record_trajectory(model, F.cross_entropy, x, y, grad_batch=0, **kw)


def test_divergence_names_the_step_and_bad_arguments_are_refused():
    x, y = _data(n=30)
    model = _cnn(bn=False)
    lin = mlp([5, 3], bias=True, generator=torch.Generator().manual_seed(0)).double()
    xl = torch.randn(30, 5, dtype=F64, generator=torch.Generator().manual_seed(1))
    square = lambda out, t: (out**2).mean()  # noqa: E731  GD at η ≫ 2/λ: |θ| grows geometrically
    with pytest.raises(DivergenceError, match="GD step"):
        record_trajectory(lin, square, xl, y, steps=400, lr=1e3, generator=torch.Generator())
    with pytest.raises(ValueError, match="window"):
        record_trajectory(model, F.cross_entropy, x, y, steps=3, lr=0.1, generator=torch.Generator(), windows=[(2, 5)])
    with pytest.raises(ValueError, match="batch size"):
        record_trajectory(model, F.cross_entropy, x, y, steps=3, lr=0.1, generator=torch.Generator(), batch_size=0)
    with pytest.raises(ValueError, match="rate"):
        record_trajectory(model, F.cross_entropy, x, y, steps=3, lr=-0.1, generator=torch.Generator())
    with pytest.raises(ValueError, match="invalid rate"):
        record_trajectory(model, F.cross_entropy, x, y, steps=3, lr=lambda t: float("nan"), generator=torch.Generator())


def test_tied_weights_and_the_callers_tensors_are_left_alone():
    """The network's parameters are views of θ: a weight used by two modules (tied) and a module reached twice move as
    torch.optim.SGD moves them; the θ and the buffers passed in are never changed; an unknown buffer is refused."""
    from torch import nn

    g = torch.Generator().manual_seed(4)
    first, last = nn.Linear(5, 5).double(), nn.Linear(5, 5).double()
    last.weight = first.weight  # tied
    with torch.no_grad():
        for p in (first.weight, first.bias, last.bias):
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * 0.5)
    shared = nn.Linear(5, 5).double()
    net = nn.Sequential(first, nn.Tanh(), shared, nn.Tanh(), shared, nn.BatchNorm1d(5).double(), last)
    x, y = torch.randn(12, 5, generator=g, dtype=F64), torch.randint(0, 5, (12,), generator=g)
    theta, bufs = flat_parameters(net), {k: v.clone() for k, v in net.named_buffers()}
    theta_in, bufs_in = theta.clone(), {k: v.clone() for k, v in bufs.items()}
    tr = record_trajectory(net, F.cross_entropy, x, y, steps=5, lr=0.2, batch_size=4, generator=torch.Generator().manual_seed(1),
                           theta=theta, buffers=bufs, keep_indices=True)
    assert torch.equal(theta, theta_in) and all(torch.equal(bufs[k], bufs_in[k]) for k in bufs)
    ref = copy.deepcopy(net).train()
    opt = torch.optim.SGD(ref.parameters(), lr=0.2)
    for idx in tr.indices:
        opt.zero_grad()
        F.cross_entropy(ref(x[idx]), y[idx]).backward()
        opt.step()
    torch.testing.assert_close(tr.theta, flat_parameters(ref), rtol=1e-13, atol=1e-14)
    for name, buf in ref.named_buffers():
        torch.testing.assert_close(tr.buffers[name], buf, rtol=1e-13, atol=1e-14)
    class Spare(nn.Module):  # a parameter the loss does not reach: a zero gradient, as for a flat θ
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(5, 5).double(), nn.Tanh(), nn.Linear(5, 3).double())
            self.unused = nn.Linear(2, 2).double()

        def forward(self, inputs):
            return self.net(inputs)

    spare = Spare()
    tr = record_trajectory(spare, F.cross_entropy, x, y % 3, steps=3, lr=0.2, generator=torch.Generator(), windows=[(0, 3)])
    n_unused = sum(p.numel() for p in spare.unused.parameters())
    torch.testing.assert_close(tr.theta[-n_unused:], flat_parameters(spare)[-n_unused:], rtol=0, atol=0)
    with pytest.raises(ValueError, match="buffer 'bn.running_mean'"):
        record_trajectory(net, F.cross_entropy, x, y, steps=1, lr=0.2, generator=torch.Generator(),
                          buffers={"bn.running_mean": torch.zeros(5, dtype=F64)})


def test_max_gradient_variance_over_every_minibatch_is_the_per_example_variance():
    x, y = _data(n=7, shape=(3,))
    y = y % 3
    model = mlp([3, 4, 3], bias=True, generator=torch.Generator().manual_seed(4)).double()
    n, b = 7, 3
    subsets = torch.tensor(list(itertools.combinations(range(n), b)))
    k = subsets.shape[0]
    var_batches = minibatch_gradient_variance(model, F.cross_entropy, x, y, subsets) * (k - 1) / k
    per = []
    for i in range(n):
        m = copy.deepcopy(model)
        F.cross_entropy(m(x[i : i + 1]), y[i : i + 1]).backward()
        per.append(torch.cat([p.grad.reshape(-1) for p in m.parameters()]))
    per = torch.stack(per)
    pop = per.var(dim=0, unbiased=False)  # σ² of the per-example gradients (divisor n)
    # sampling without replacement: Var(ĝ) = σ²/B · (N − B)/(N − 1)
    torch.testing.assert_close(var_batches, pop / b * (n - b) / (n - 1), rtol=1e-10, atol=1e-16)
    est = max_gradient_variance(model, F.cross_entropy, x, y, batch_size=b, n_batches=400,
                                generator=torch.Generator().manual_seed(5))
    true = float((per.var(dim=0, unbiased=True)).max())
    assert est == pytest.approx(true, rel=0.25)


def test_max_gradient_variance_split_sample_estimate():
    x, y = _data(n=7, shape=(3,))
    y = y % 3
    model = mlp([3, 4, 3], bias=True, generator=torch.Generator().manual_seed(4)).double()
    kw = dict(batch_size=3, n_batches=40)
    full, split = max_gradient_variance(model, F.cross_entropy, x, y, generator=torch.Generator().manual_seed(5), split=True, **kw)
    g = torch.Generator().manual_seed(5)
    idx = torch.stack([torch.randperm(7, generator=g)[:3] for _ in range(40)])
    # the maximum is split=False's to the bit, and that is the formula it always had (the noise level of chapter 05's runs)
    var = minibatch_gradient_variance(model, F.cross_entropy, x, y, idx)
    assert full == max_gradient_variance(model, F.cross_entropy, x, y, generator=torch.Generator().manual_seed(5), **kw)
    assert full == float(var.max()) * 3 * (7 - 1) / (7 - 3)
    # the halves of the one pass are the halves' own variances; the whole set's is unchanged to the bit
    v_all, va, vb = minibatch_gradient_variance(model, F.cross_entropy, x, y, idx, split_at=20)
    assert torch.equal(v_all, var)
    torch.testing.assert_close(va, minibatch_gradient_variance(model, F.cross_entropy, x, y, idx[:20]), rtol=1e-12, atol=0)
    torch.testing.assert_close(vb, minibatch_gradient_variance(model, F.cross_entropy, x, y, idx[20:]), rtol=1e-12, atol=0)
    assert split == pytest.approx(0.5 * float(vb[va.argmax()] + va[vb.argmax()]) * 3 * 6 / 4, rel=1e-12)
    with pytest.raises(ValueError, match="at least 4"):
        max_gradient_variance(model, F.cross_entropy, x, y, batch_size=3, n_batches=3, generator=g, split=True)
    with pytest.raises(ValueError, match="two rows on each side"):
        minibatch_gradient_variance(model, F.cross_entropy, x, y, idx, split_at=1)
