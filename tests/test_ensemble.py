"""Many SGD runs as one batched program (sgdbook.ensemble) against a sequential torch.optim.SGD loop per run."""

import math
import pytest
import torch
from torch import nn
from cases import blobs
from reference import load_run, sequential_sgd
from sgdbook import ensemble, models
import torch.nn.functional as F
import numpy as np
from reference import flat


def _make(g):
    return models.mlp([6, 5, 4, 3], bias=True, generator=g, flatten=False).double()


def test_run_matches_a_sequential_loop_given_init_and_indices():
    x, y = blobs()
    runs, steps, m, lr = 4, 30, 5, 0.1
    base, params, buffers = ensemble.stacked_init(_make, runs, torch.Generator().manual_seed(1))
    idx = torch.randint(0, x.shape[0], (steps, runs, m), generator=torch.Generator().manual_seed(2))
    res = ensemble.ensemble_sgd(base, params, x, y, nn.functional.cross_entropy, lr=lr, batch_size=m, steps=steps,
                                generator=torch.Generator(), indices=idx, eval_every=10)
    for r in (0, runs - 1):
        model = load_run(_make(torch.Generator()), params, r)
        losses, grads = sequential_sgd(model, nn.functional.cross_entropy, x, y, idx[:, r], lr)
        torch.testing.assert_close(res.loss[:, r], losses, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(res.grad_norm[:, r], grads.norm(dim=1), rtol=1e-12, atol=1e-12)
        cos = (grads[1:] * grads[:-1]).sum(1) / (grads[1:].norm(dim=1) * grads[:-1].norm(dim=1))
        torch.testing.assert_close(res.cos_prev[1:, r], cos, rtol=1e-10, atol=1e-12)
        for name, p in model.named_parameters():
            torch.testing.assert_close(res.params[name][r], p.detach(), rtol=1e-12, atol=1e-12)
        with torch.no_grad():
            torch.testing.assert_close(res.full_loss[-1, r], nn.functional.cross_entropy(model(x), y), rtol=1e-12, atol=1e-12)
    assert res.eval_steps == [0, 10, 20, 30]
    assert math.isnan(res.cos_prev[0, 0])
    q = res.quantiles([0.5, 0.9])
    assert q.shape == (2, 4) and (q[1] >= q[0]).all()


def test_sampling_is_seeded_and_without_replacement_option():
    x, y = blobs()
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
    x, y = blobs()
    base, params, _ = ensemble.stacked_init(_make, 3, torch.Generator().manual_seed(1))
    params = {k: v.clone() for k, v in params.items()}
    params["0.weight"][2] *= float("nan")
    with pytest.raises(ensemble.EnsembleDivergenceError, match=r"run 2 of 3: non-finite minibatch loss at step 0"):
        ensemble.ensemble_sgd(base, params, x, y, nn.functional.cross_entropy, lr=0.1, batch_size=4, steps=3,
                              generator=torch.Generator())


def test_group_gradient_variance_matches_a_per_run_loop():
    x, y = blobs()
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
        model = load_run(_make(torch.Generator()), params, r)
        grads[:, r] = sequential_sgd(model, nn.functional.cross_entropy, x, y, idx[:, r], lr)[1]
    for t in range(steps):
        for j in range(inits):
            g = grads[t, j * per:(j + 1) * per]
            expect = ((g - g.mean(0)) ** 2).sum() / (per - 1)
            torch.testing.assert_close(res.grad_var[t, j], expect, rtol=1e-10, atol=1e-14)
    plain = ensemble.ensemble_sgd(base, params, x, y, nn.functional.cross_entropy, lr=lr, batch_size=m, steps=steps,
                                  generator=torch.Generator(), indices=idx)
    assert plain.grad_var is None and torch.equal(plain.loss, res.loss)


def test_group_size_must_divide_the_runs():
    x, y = blobs()
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
    x, y = blobs(n=37)
    base, params, _ = ensemble.stacked_init(_make, 4, torch.Generator().manual_seed(5))
    loss, acc = ensemble.evaluate_runs(base, params, x, y, chunk=10)
    for r in range(4):
        model = load_run(_make(torch.Generator()), params, r)
        with torch.no_grad():
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


# ---------------------------------------------------------------------- ensemble_epochs
# ensemble.epoch_sgd (the epoch loop of many SGD runs), group_full_grad_var, evaluate_runs with

def _setup(gen, runs=4, n=24, d=5, k=3):
    def make(g):
        return nn.Sequential(nn.Linear(d, 7), nn.Tanh(), nn.Linear(7, k)).double()

    base, params, _ = ensemble.stacked_init(make, runs, gen)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=gen)
    return make, base, params, x, y


def test_epoch_sgd_matches_a_loop_of_epochs(gen):
    _, base, params, x, y = _setup(gen)
    xv, yv = x[:10] + 0.1, y[:10]
    state = gen.get_state()
    res = ensemble.epoch_sgd(base, params, x, y, F.cross_entropy, lr=0.1, batch_size=5, epochs=4, generator=gen,
                             group_size=2, eval_sets={"train": (x, y), "val": (xv, yv)}, eval_every=2, full_grad_var=True)
    gen.set_state(state)
    p, gvar = params, []
    ev = [ensemble.evaluate_runs(base, p, xv, yv)]
    fv = [ensemble.group_full_grad_var(base, p, x, y, F.cross_entropy, 2)]
    for epoch in range(1, 5):
        idx = ensemble.epoch_indices(24, 4, 5, gen)
        r = ensemble.ensemble_sgd(base, p, x, y, F.cross_entropy, lr=0.1, batch_size=5, steps=idx.shape[0],
                                  generator=gen, indices=idx, group_size=2)
        p, _ = r.params, gvar.append(r.grad_var)
        if epoch % 2 == 0:
            ev.append(ensemble.evaluate_runs(base, p, xv, yv))
            fv.append(ensemble.group_full_grad_var(base, p, x, y, F.cross_entropy, 2))
    assert res.eval_epochs == [0, 2, 4] and res.steps_per_epoch == 4
    torch.testing.assert_close(res.grad_var, torch.cat(gvar))
    torch.testing.assert_close(res.evals["val_loss"], torch.stack([e[0] for e in ev]))
    torch.testing.assert_close(res.evals["val_acc"], torch.stack([e[1] for e in ev]))
    torch.testing.assert_close(res.full_grad_var, torch.stack(fv))
    for k in p:
        torch.testing.assert_close(res.params[k], p[k])
    assert res.epoch_grad_var().shape == (4, 2)
    torch.testing.assert_close(res.epoch_grad_var()[1], res.grad_var[4:8].mean(0))
    with pytest.raises(ValueError):
        ensemble.epoch_sgd(base, params, x, y, lr=0.1, batch_size=5, epochs=1, generator=gen, full_grad_var=True)


def test_group_full_grad_var_is_the_variance_of_full_gradients(gen):
    make, base, params, x, y = _setup(gen, runs=6)
    got = ensemble.group_full_grad_var(base, params, x, y, F.cross_entropy, 3)
    flat = []
    for r in range(6):
        m = make(gen)
        with torch.no_grad():
            for k, q in m.named_parameters():
                q.copy_(params[k][r])
        g = torch.autograd.grad(F.cross_entropy(m(x), y), list(m.parameters()))
        flat.append(torch.cat([t.flatten() for t in g]))
    flat = torch.stack(flat).reshape(2, 3, -1)
    torch.testing.assert_close(got, flat.var(1).sum(-1), rtol=1e-10, atol=1e-14)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3).double()

    def forward(self, a, b):
        return self.lin(a * b)


def test_evaluate_runs_takes_a_tuple_of_inputs(gen):
    base, params, _ = ensemble.stacked_init(lambda g: TwoInputs(), 3, gen)
    a, b = torch.randn(11, 4, generator=gen, dtype=torch.float64), torch.randn(11, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (11,), generator=gen)
    loss, acc = ensemble.evaluate_runs(base, params, (a, b), y, chunk=4)
    for r in range(3):
        out = (a * b) @ params["lin.weight"][r].T + params["lin.bias"][r]
        torch.testing.assert_close(loss[r], F.cross_entropy(out, y))
        torch.testing.assert_close(acc[r], (out.argmax(-1) == y).double().mean())
    with pytest.raises(ValueError):
        ensemble.evaluate_runs(base, params, (a, b[:5]), y)


# ---------------------------------------------------------------------- ensemble_snapshots
# ensemble_sgd's snapshots, extra evaluation steps, keep-going mode, and the run at a loss quantile,

def _data(n=40, d=6, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = (2 * torch.randn(k, d, generator=g, dtype=torch.float64))[y] + torch.randn(n, d, generator=g, dtype=torch.float64)
    return x, y


def _make_snapshot_net(g):
    return models.mlp([6, 5, 4, 3], bias=True, generator=g, flatten=False).double()


def _stack(runs, seed=1):
    base, params, _ = ensemble.stacked_init(_make_snapshot_net, runs, torch.Generator().manual_seed(seed))
    return base, {k: v.clone() for k, v in params.items()}


def test_snapshots_and_eval_at_match_a_sequential_loop():
    x, y = _data()
    runs, steps, m, lr = 3, 12, 5, 0.1
    base, params = _stack(runs)
    idx = torch.randint(0, x.shape[0], (steps, runs, m), generator=torch.Generator().manual_seed(2))
    res = ensemble.ensemble_sgd(base, params, x, y, F.cross_entropy, lr=lr, batch_size=m, steps=steps,
                                generator=torch.Generator(), indices=idx, eval_every=5, eval_at=[1, 3],
                                snapshot_at=[0, 4, 12])
    assert res.eval_steps == [0, 1, 3, 5, 10, 12] and res.snapshot_steps == [0, 4, 12]
    for r in range(runs):
        model = load_run(_make_snapshot_net(torch.Generator()), params, r)
        thetas = [flat(p.detach().clone() for p in model.parameters())]
        for t in range(steps):
            sequential_sgd(model, F.cross_entropy, x, y, idx[t : t + 1, r], lr)
            thetas.append(flat(p.detach().clone() for p in model.parameters()))
        for j, t in enumerate(res.snapshot_steps):
            got = flat(res.snapshots[k][j, r] for k, _ in _make_snapshot_net(torch.Generator()).named_parameters())
            torch.testing.assert_close(got, thetas[t], rtol=1e-12, atol=1e-12)
        for j, t in enumerate(res.eval_steps):
            ref = load_run(_make_snapshot_net(torch.Generator()), {k: v[None] for k, v in _unflat(model, thetas[t]).items()}, 0)
            with torch.no_grad():
                torch.testing.assert_close(res.full_loss[j, r], F.cross_entropy(ref(x), y), rtol=1e-12, atol=1e-12)
    snap = res.snapshot(12)
    for k, v in res.params.items():
        torch.testing.assert_close(snap[k], v, rtol=0, atol=0)
    with pytest.raises(KeyError, match="snapshots were taken"):
        res.snapshot(5)


def _unflat(model, vec):
    out, o = {}, 0
    for k, p in model.named_parameters():
        out[k] = vec[o : o + p.numel()].view(p.shape)
        o += p.numel()
    return out


def test_freeze_keeps_the_other_runs_exact_and_reports_the_bad_one():
    x, y = _data()
    runs, steps, m, lr = 4, 15, 5, 0.1
    base, params = _stack(runs)
    bad = {k: v.clone() for k, v in params.items()}
    bad["2.weight"][2] = float("nan")  # run 2 is non-finite from the start
    idx = torch.randint(0, x.shape[0], (steps, runs, m), generator=torch.Generator().manual_seed(5))
    kw = dict(lr=lr, batch_size=m, steps=steps, generator=torch.Generator(), indices=idx, eval_every=5)
    with pytest.raises(ensemble.EnsembleDivergenceError, match="run 2 of 4.*freeze"):
        ensemble.ensemble_sgd(base, bad, x, y, F.cross_entropy, **kw)
    ref = ensemble.ensemble_sgd(base, params, x, y, F.cross_entropy, **kw)
    res = ensemble.ensemble_sgd(base, bad, x, y, F.cross_entropy, on_nonfinite="freeze", snapshot_at=[0], **kw)
    assert res.diverged_at.tolist() == [-1, -1, 0, -1] and ref.diverged_at is None
    ok = [0, 1, 3]
    for k in params:
        torch.testing.assert_close(res.params[k][ok], ref.params[k][ok], rtol=0, atol=0)
        torch.testing.assert_close(res.params[k][2], bad[k][2], rtol=0, atol=0, equal_nan=True)  # frozen at θ_0
    torch.testing.assert_close(res.loss[:, ok], ref.loss[:, ok], rtol=0, atol=0)
    assert torch.isnan(res.loss[:, 2]).all() and torch.isnan(res.grad_norm[:, 2]).all()
    assert torch.isinf(res.full_loss[:, 2]).all() and (res.full_loss[:, 2] > 0).all()


def test_freeze_starts_at_the_first_non_finite_step():
    x, y = _data()
    base, params = _stack(3)
    params["0.weight"][1] *= 1e150  # blows up after a few steps in float64
    res = ensemble.ensemble_sgd(base, params, x, y, F.cross_entropy, lr=0.5, batch_size=5, steps=30,
                                generator=torch.Generator().manual_seed(0), eval_every=1, on_nonfinite="freeze")
    t = int(res.diverged_at[1])
    assert 0 <= t < 30 and res.diverged_at[[0, 2]].tolist() == [-1, -1]
    assert torch.isfinite(res.loss[:t, 1]).all() and torch.isnan(res.loss[t:, 1]).all()
    assert torch.isinf(res.full_loss[t:, 1]).all()
    with pytest.raises(ValueError, match="raise' or 'freeze"):
        ensemble.ensemble_sgd(base, params, x, y, F.cross_entropy, lr=0.1, batch_size=5, steps=2,
                              generator=torch.Generator(), on_nonfinite="ignore")
    with pytest.raises(ValueError, match=r"\[0, steps = 2\]"):
        ensemble.ensemble_sgd(base, params, x, y, F.cross_entropy, lr=0.1, batch_size=5, steps=2,
                              generator=torch.Generator(), snapshot_at=[3])


def test_quantile_runs_is_the_nearest_rank_of_a_plain_sort():
    g = torch.Generator().manual_seed(0)
    values = torch.rand(7, 11, generator=g, dtype=torch.float64)
    values[2, 4] = float("nan")
    values[3, 0] = float("inf")
    q = [0.0, 0.1, 0.5, 0.9, 1.0]
    runs = ensemble.quantile_runs(values, q)
    assert runs.shape == (5, 7)
    for t in range(7):
        key = np.nan_to_num(values[t].numpy(), nan=np.inf)
        order = np.argsort(key, kind="stable")
        for i, level in enumerate(q):
            assert runs[i, t] == order[int(round(level * 10))]
    assert runs[-1, 2] == 4  # NaN ranks last
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ensemble.quantile_runs(values, [1.5])


def test_run_at_quantile_and_take_follow_one_run():
    x, y = _data()
    base, params = _stack(6)
    res = ensemble.ensemble_sgd(base, params, x, y, F.cross_entropy, lr=0.1, batch_size=5, steps=8,
                                generator=torch.Generator().manual_seed(1), eval_every=1)
    runs = res.run_at_quantile([0.5, 1.0])
    loss_at = res.take("full_loss", runs)
    torch.testing.assert_close(loss_at[1], res.full_loss.max(1).values)
    median_rank = torch.sort(res.full_loss, dim=1).values[:, round(0.5 * 5)]
    torch.testing.assert_close(loss_at[0], median_rank)
    with pytest.raises(ValueError, match="steps"):
        res.take("loss", runs)  # 8 steps of minibatch loss against 9 evaluations
    assert math.isnan(float(res.cos_prev[0, 0]))
