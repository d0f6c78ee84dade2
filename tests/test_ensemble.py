import math

import pytest
import torch
from torch import nn

from sgdbook import ensemble, models


def _data(n=40, d=6, k=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = (2 * torch.randn(k, d, generator=g, dtype=dtype))[y] + torch.randn(n, d, generator=g, dtype=dtype)
    return x, y


def _make(g):
    return models.mlp([6, 5, 4, 3], bias=True, generator=g, flatten=False).double()


def test_run_matches_a_sequential_loop_given_init_and_indices():
    x, y = _data()
    runs, steps, m, lr = 4, 30, 5, 0.1
    base, params, buffers = ensemble.stacked_init(_make, runs, torch.Generator().manual_seed(1))
    idx = torch.randint(0, x.shape[0], (steps, runs, m), generator=torch.Generator().manual_seed(2))
    res = ensemble.ensemble_sgd(base, params, x, y, nn.functional.cross_entropy, lr=lr, batch_size=m, steps=steps,
                                generator=torch.Generator(), indices=idx, eval_every=10)
    for r in (0, runs - 1):
        model = _make(torch.Generator())
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(params[name][r])
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        prev = None
        for t in range(steps):
            loss = nn.functional.cross_entropy(model(x[idx[t, r]]), y[idx[t, r]])
            opt.zero_grad()
            loss.backward()
            g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
            torch.testing.assert_close(res.loss[t, r], loss.detach(), rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(res.grad_norm[t, r], g.norm(), rtol=1e-12, atol=1e-12)
            if prev is not None:
                torch.testing.assert_close(res.cos_prev[t, r], g @ prev / (g.norm() * prev.norm()), rtol=1e-10, atol=1e-12)
            prev = g.clone()
            opt.step()
        for name, p in model.named_parameters():
            torch.testing.assert_close(res.params[name][r], p.detach(), rtol=1e-12, atol=1e-12)
        with torch.no_grad():
            torch.testing.assert_close(res.full_loss[-1, r], nn.functional.cross_entropy(model(x), y), rtol=1e-12, atol=1e-12)
    assert res.eval_steps == [0, 10, 20, 30]
    assert math.isnan(res.cos_prev[0, 0])
    q = res.quantiles([0.5, 0.9])
    assert q.shape == (2, 4) and (q[1] >= q[0]).all()


def test_sampling_is_seeded_and_without_replacement_option():
    x, y = _data()
    base, params, _ = ensemble.stacked_init(_make, 3, torch.Generator().manual_seed(1))
    kw = dict(lr=0.05, batch_size=8, steps=5)
    a = ensemble.ensemble_sgd(base, params, x, y, nn.functional.cross_entropy, generator=torch.Generator().manual_seed(3), **kw)
    b = ensemble.ensemble_sgd(base, params, x, y, nn.functional.cross_entropy, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(a.loss, b.loss)
    c = ensemble.ensemble_sgd(base, params, x, y, nn.functional.cross_entropy, generator=torch.Generator().manual_seed(3),
                              replacement=False, **kw)
    assert c.loss.shape == (5, 3) and torch.isfinite(c.loss).all()


def test_normal_init_shapes_and_scale():
    base = models.mlp([50, 10, 30, 10], bias=True, flatten=False).to("meta")
    p = ensemble.normal_init(base, 200, 0.5, torch.Generator().manual_seed(0))
    assert sum(v[0].numel() for v in p.values()) == 1150  # the Hessian paper's Gauss-10 count
    allv = torch.cat([v.reshape(-1) for v in p.values()])
    assert abs(allv.std().item() - 0.5) < 0.01


def test_divergence_names_the_run_and_step():
    x, y = _data()
    base, params, _ = ensemble.stacked_init(_make, 3, torch.Generator().manual_seed(1))
    params = {k: v.clone() for k, v in params.items()}
    params["0.weight"][2] *= float("nan")
    with pytest.raises(ensemble.EnsembleDivergenceError, match=r"run 2 of 3: non-finite minibatch loss at step 0"):
        ensemble.ensemble_sgd(base, params, x, y, nn.functional.cross_entropy, lr=0.1, batch_size=4, steps=3,
                              generator=torch.Generator())


def test_group_gradient_variance_matches_a_per_run_loop():
    x, y = _data()
    inits, per, steps, m, lr = 3, 4, 6, 5, 0.2
    base, p0, _ = ensemble.stacked_init(_make, inits, torch.Generator().manual_seed(1))
    params = {k: v.repeat_interleave(per, dim=0) for k, v in p0.items()}  # runs of one init are consecutive
    runs = inits * per
    idx = torch.randint(0, x.shape[0], (steps, runs, m), generator=torch.Generator().manual_seed(2))
    res = ensemble.ensemble_sgd(base, params, x, y, nn.functional.cross_entropy, lr=lr, batch_size=m, steps=steps,
                                generator=torch.Generator(), indices=idx, group_size=per)
    assert res.grad_var.shape == (steps, inits)
    grads = torch.empty(steps, runs, sum(v[0].numel() for v in p0.values()), dtype=torch.float64)
    for r in range(runs):
        model = _make(torch.Generator())
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(params[name][r])
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for t in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx[t, r]]), y[idx[t, r]]).backward()
            grads[t, r] = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
            opt.step()
    for t in range(steps):
        for j in range(inits):
            g = grads[t, j * per:(j + 1) * per]
            expect = ((g - g.mean(0)) ** 2).sum() / (per - 1)
            torch.testing.assert_close(res.grad_var[t, j], expect, rtol=1e-10, atol=1e-14)
    plain = ensemble.ensemble_sgd(base, params, x, y, nn.functional.cross_entropy, lr=lr, batch_size=m, steps=steps,
                                  generator=torch.Generator(), indices=idx)
    assert plain.grad_var is None and torch.equal(plain.loss, res.loss)


def test_group_size_must_divide_the_runs():
    x, y = _data()
    base, params, _ = ensemble.stacked_init(_make, 3, torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="group_size"):
        ensemble.ensemble_sgd(base, params, x, y, nn.functional.cross_entropy, lr=0.1, batch_size=4, steps=2,
                              generator=torch.Generator(), group_size=2)


def test_epoch_indices_are_per_run_permutations():
    idx = ensemble.epoch_indices(23, 5, 4, torch.Generator().manual_seed(0))
    assert idx.shape == (5, 5, 4)
    for r in range(5):
        seen = idx[:, r].reshape(-1)
        assert seen.unique().numel() == 20 and seen.min() >= 0 and seen.max() < 23
    assert not torch.equal(idx[:, 0], idx[:, 1])
    again = ensemble.epoch_indices(23, 5, 4, torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)
    with pytest.raises(ValueError, match="batch_size"):
        ensemble.epoch_indices(3, 2, 4, torch.Generator())


def test_evaluate_runs_matches_a_per_run_loop():
    x, y = _data(n=37)
    base, params, _ = ensemble.stacked_init(_make, 4, torch.Generator().manual_seed(5))
    loss, acc = ensemble.evaluate_runs(base, params, x, y, chunk=10)
    for r in range(4):
        model = _make(torch.Generator())
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(params[name][r])
            out = model(x)
        torch.testing.assert_close(loss[r], nn.functional.cross_entropy(out, y), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(acc[r], (out.argmax(1) == y).double().mean(), rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="same positive number"):
        ensemble.evaluate_runs(base, params, x, y[:3])


@pytest.mark.parametrize(
    "layers, loss",
    [
        (lambda: nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4)), "ce"),
        (lambda: nn.Sequential(nn.Flatten(), nn.Linear(6, 5, bias=False), nn.Tanh(), nn.Linear(5, 3)), "ce"),
        (lambda: nn.Sequential(nn.Linear(6, 5), nn.LeakyReLU(0.1, inplace=True), nn.Linear(5, 3)), "mse"),
    ],
)
def test_linear_fast_path_equals_the_vmap_path(layers, loss):
    torch.manual_seed(0)
    if loss == "ce":
        loss_fn, y = nn.functional.cross_entropy, torch.randint(0, 4 if "4" in str(layers()) else 3, (20,))
        x = torch.randn(20, 6, dtype=torch.float64) if "Flatten" not in str(layers()) else torch.randn(20, 2, 3, dtype=torch.float64)
    else:
        loss_fn, y = nn.functional.mse_loss, torch.randn(20, 3, dtype=torch.float64)
        x = torch.randn(20, 6, dtype=torch.float64)
    make = lambda g: layers().double()  # noqa: E731
    base, params, _ = ensemble.stacked_init(make, 7, torch.Generator().manual_seed(1))
    assert ensemble._stacked_linear_plan(base, params) is not None
    idx = torch.randint(0, 20, (12, 7, 4), generator=torch.Generator().manual_seed(2))
    kw = dict(lr=0.05, batch_size=4, steps=12, generator=torch.Generator(), indices=idx, group_size=7, eval_every=4)
    fast = ensemble.ensemble_sgd(base, params, x, y, loss_fn, **kw)
    slow = ensemble.ensemble_sgd(base, params, x, y, loss_fn, fast_path=False, **kw)
    for k in params:
        torch.testing.assert_close(fast.params[k], slow.params[k], rtol=1e-12, atol=1e-12)
    for name in ("loss", "grad_norm", "grad_var", "full_loss"):
        torch.testing.assert_close(getattr(fast, name), getattr(slow, name), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast.cos_prev[1:], slow.cos_prev[1:], rtol=1e-12, atol=1e-12)


def test_fast_path_is_skipped_for_frozen_parameters_and_other_layers():
    base = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2))
    _, params, _ = ensemble.stacked_init(lambda g: nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2)), 2, torch.Generator())
    del params["0.bias"]
    assert ensemble._stacked_linear_plan(base, params) is None
    conv = nn.Sequential(nn.Conv1d(1, 1, 2), nn.Flatten(), nn.Linear(2, 2))
    _, cparams, _ = ensemble.stacked_init(lambda g: nn.Sequential(nn.Conv1d(1, 1, 2), nn.Flatten(), nn.Linear(2, 2)), 2, torch.Generator())
    assert ensemble._stacked_linear_plan(conv, cparams) is None


def test_row_dots_equal_vecdot():
    g = torch.Generator().manual_seed(3)
    for runs, k in [(6, 300), (5, 300), (6, 20)]:
        a, b = torch.randn(runs, k, generator=g, dtype=torch.float64), torch.randn(runs, k, generator=g, dtype=torch.float64)
        torch.testing.assert_close(ensemble._row_dots(a, b), torch.linalg.vecdot(a, b), rtol=1e-13, atol=1e-13)


def test_linear_fast_path_with_a_wide_first_layer_and_an_even_run_count():
    # the first layer's weights are held transposed while training and its cosine terms go
    # through the paired products of _row_dots (k = 40·8 ≥ 128, R even)
    torch.manual_seed(1)
    x, y = torch.randn(30, 40, dtype=torch.float64), torch.randint(0, 3, (30,))
    make = lambda g: nn.Sequential(nn.Linear(40, 8), nn.ReLU(), nn.Linear(8, 3)).double()  # noqa: E731
    base, params, _ = ensemble.stacked_init(make, 6, torch.Generator().manual_seed(1))
    idx = torch.randint(0, 30, (9, 6, 5), generator=torch.Generator().manual_seed(2))
    kw = dict(lr=0.1, batch_size=5, steps=9, generator=torch.Generator(), indices=idx, group_size=3, eval_every=3)
    fast = ensemble.ensemble_sgd(base, params, x, y, nn.functional.cross_entropy, **kw)
    slow = ensemble.ensemble_sgd(base, params, x, y, nn.functional.cross_entropy, fast_path=False, **kw)
    for k in params:
        assert fast.params[k].is_contiguous() and fast.params[k].shape == params[k].shape
        torch.testing.assert_close(fast.params[k], slow.params[k], rtol=1e-12, atol=1e-12)
    for name in ("loss", "grad_norm", "grad_var", "full_loss"):
        torch.testing.assert_close(getattr(fast, name), getattr(slow, name), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast.cos_prev[1:], slow.cos_prev[1:], rtol=1e-12, atol=1e-12)


def test_a_tied_base_model_is_left_alone():
    # torch 2.14's functional_call replaces the parameters of a model that uses a module twice;
    # the runner and the evaluator hand it a tensor-sharing copy instead
    def make(g):
        torch.manual_seed(int(torch.randint(0, 1000, (1,), generator=g)))
        shared = nn.Linear(4, 4)
        return nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(4, 3)).double()

    base = make(torch.Generator().manual_seed(0))
    _, params, _ = ensemble.stacked_init(make, 3, torch.Generator().manual_seed(1))
    x, y = torch.randn(12, 4, dtype=torch.float64), torch.randint(0, 3, (12,))
    before = list(base.parameters())
    res = ensemble.ensemble_sgd(base, params, x, y, nn.functional.cross_entropy, lr=0.1, batch_size=4, steps=3,
                                generator=torch.Generator().manual_seed(2), eval_every=1)
    ensemble.evaluate_runs(base, res.params, x, y)
    assert all(a is b for a, b in zip(base.parameters(), before)) and isinstance(base[0].weight, nn.Parameter)
    assert torch.isfinite(res.full_loss).all()
