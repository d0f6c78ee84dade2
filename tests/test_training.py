"""SGD training with measurement hooks (sgdbook.training) against plain torch loops."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from cases import blobs
from sgdbook import models, training
from sgdbook.papers.vmf_directional import models as vmf_models
from sgdbook import schedules


def test_log_epochs():
    assert training.log_epochs(0, 5) == [0]
    e = training.log_epochs(100, 8)
    assert e[0] == 0 and e[1] == 1 and e[-1] == 100 and e == sorted(set(e))


def test_sgd_train_learns_is_deterministic_and_measures():
    x, y = blobs(120, 5, 3, dtype=torch.float32, spread=3.0)
    runs = []
    for _ in range(2):
        model = models.mlp([5, 16, 3], bn=True, bias=True, generator=torch.Generator().manual_seed(1))
        res = training.sgd_train(
            model, nn.functional.cross_entropy, x, y, lr=0.1, batch_size=10, epochs=5,
            generator=torch.Generator().manual_seed(2), measure_at=[0, 2, 5],
            measure=lambda e, m: training.evaluate(m, nn.functional.cross_entropy, x, y), show_progress=False,
        )
        runs.append((res, [p.detach().clone() for p in model.parameters()]))
        assert all(p.grad is None for p in model.parameters())
    (r1, p1), (r2, p2) = runs
    assert [m["epoch"] for m in r1.measurements] == [0, 2, 5]
    assert r1.measurements[-1]["loss"] < r1.measurements[0]["loss"]
    assert r1.epoch_loss == r2.epoch_loss and all(torch.equal(a, b) for a, b in zip(p1, p2))
    assert r1.steps == 5 * 12


def test_evaluate_restores_the_mode():
    x, y = blobs(120, 5, 3, dtype=torch.float32, spread=3.0)
    model = models.mlp([5, 8, 3], bn=True)
    model.train()
    training.evaluate(model, nn.functional.cross_entropy, x, y)
    assert all(m.training for m in model.modules())
    model.eval()
    training.evaluate(model, nn.functional.cross_entropy, x, y)
    assert not any(m.training for m in model.modules())


def test_divergence_names_run_epoch_and_step():
    x, y = blobs(120, 5, 3, dtype=torch.float32, spread=3.0)
    model = models.mlp([5, 8, 3], generator=torch.Generator().manual_seed(0))
    with pytest.raises(training.DivergenceError, match=r"seed 7: non-finite training loss at epoch 1, step \d+"):
        training.sgd_train(model, nn.functional.cross_entropy, x, y, lr=1e30, batch_size=10, epochs=3,
                           generator=torch.Generator(), run="seed 7", show_progress=False)


def test_bad_shapes_are_reported():
    x, y = blobs(120, 5, 3, dtype=torch.float32, spread=3.0)
    model = models.mlp([5, 8, 3])
    with pytest.raises(ValueError, match="120 inputs but 119 targets"):
        training.sgd_train(model, nn.functional.cross_entropy, x, y[:-1], lr=0.1, batch_size=10, epochs=1,
                           generator=torch.Generator(), show_progress=False)
    with pytest.raises(ValueError, match="batch size"):
        training.sgd_train(model, nn.functional.cross_entropy, x, y, lr=0.1, batch_size=0, epochs=1,
                           generator=torch.Generator(), show_progress=False)


def test_model_data_mismatch_is_a_clear_error():
    model = vmf_models.vmf_model("FNN")
    with pytest.raises(ValueError, match=r"does not fit the data: inputs of shape \(3, 32, 32\).*784 input features"):
        training.check_model_data(model, torch.rand(4, 3, 32, 32))
    cnn = vmf_models.vmf_model("CNN")
    with pytest.raises(ValueError, match="3 input channels"):
        training.check_model_data(cnn, torch.rand(4, 1, 28, 28))
    small = models.small_cnn((8, 16, 32), (32,), bn=True, generator=torch.Generator().manual_seed(0))
    training.check_model_data(small, torch.rand(4, 1, 8, 8))  # digits fit
    with pytest.raises(ValueError, match=r"first layer takes inputs of shape \(1, 2, 2\).*too small for its pooling"):
        training.check_model_data(small, torch.rand(4, 1, 2, 2))
    head_first = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(5, 2))  # the second layer is wrong
    with pytest.raises(ValueError, match=r"first layer takes inputs of shape \(4,\) \(per example\), but a later layer fails on them \(mat1"):
        training.check_model_data(head_first, torch.rand(4, 4))
    with pytest.raises(ValueError, match="first layer expects 3 input channels"):  # a kernel larger than the image
        training.check_model_data(nn.Sequential(nn.Conv2d(3, 2, 5)), torch.rand(4, 3, 2, 2))


def test_gd_is_one_full_batch_step_per_epoch_and_adam_runs():
    x, y = blobs(120, 5, 3, dtype=torch.float32, spread=3.0)
    model = models.mlp([5, 8, 3], bias=True, generator=torch.Generator().manual_seed(0)).double()
    ref = models.mlp([5, 8, 3], bias=True, generator=torch.Generator().manual_seed(0)).double()
    x = x.double()
    res = training.sgd_train(model, nn.functional.cross_entropy, x, y, lr=0.1, batch_size=7, epochs=2,
                             generator=torch.Generator(), optimizer="gd", show_progress=False)
    assert res.steps == 2
    for _ in range(2):
        loss = nn.functional.cross_entropy(ref(x), y)
        grads = torch.autograd.grad(loss, list(ref.parameters()))
        with torch.no_grad():
            for p, g in zip(ref.parameters(), grads):
                p -= 0.1 * g
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
    res = training.sgd_train(model, nn.functional.cross_entropy, x, y, lr=1e-3, batch_size=10, epochs=1,
                             generator=torch.Generator(), optimizer="adam", show_progress=False)
    assert res.steps == 12
    with pytest.raises(ValueError, match="unknown optimizer"):
        training.sgd_train(model, nn.functional.cross_entropy, x, y, lr=0.1, batch_size=10, epochs=1,
                           generator=torch.Generator(), optimizer="lbfgs", show_progress=False)


# ---------------------------------------------------------------------- training_schedule
# training.sgd_train with a learning-rate schedule equals a hand-written loop that sets the rate

def _setup():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    model = models.mlp([6, 5, 3], bias=True, generator=torch.Generator().manual_seed(1)).double()
    return model, x, y


def test_schedule_equals_manual_loop():
    model, x, y = _setup()
    ref = models.mlp([6, 5, 3], bias=True).double()
    ref.load_state_dict(model.state_dict())
    sched = schedules.trapezoid(0.05, 0.4, 3, 2, 4, final_lr=0.01)
    training.sgd_train(model, nn.functional.cross_entropy, x, y, lr=sched, batch_size=10, epochs=3,
                       generator=torch.Generator().manual_seed(2), show_progress=False)
    gen = torch.Generator().manual_seed(2)
    t = 0
    for _ in range(3):
        perm = torch.randperm(40, generator=gen)
        for s in range(4):
            idx = perm[s * 10 : (s + 1) * 10]
            loss = nn.functional.cross_entropy(ref(x[idx]), y[idx])
            grads = torch.autograd.grad(loss, list(ref.parameters()))
            with torch.no_grad():
                for p, gr in zip(ref.parameters(), grads):
                    p -= sched(t) * gr
            t += 1
    for a, b in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-13)


def test_constant_number_unchanged_and_bad_schedule_refused():
    model, x, y = _setup()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="invalid rate"):
        training.sgd_train(model, nn.functional.cross_entropy, x, y, lr=lambda t: 0.1 if t < 5 else float("nan"),
                           batch_size=10, epochs=2, generator=torch.Generator().manual_seed(0), show_progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    m2 = models.mlp([6, 5, 3], bias=True).double()
    m2.load_state_dict(model.state_dict())
    training.sgd_train(model, nn.functional.cross_entropy, x, y, lr=0.1, batch_size=10, epochs=1,
                       generator=torch.Generator().manual_seed(0), show_progress=False)
    training.sgd_train(m2, nn.functional.cross_entropy, x, y, lr=schedules.constant(0.1), batch_size=10, epochs=1,
                       generator=torch.Generator().manual_seed(0), show_progress=False)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), m2.parameters()))


# ---------------------------------------------------------------------- training_stop
# sgd_train's ``stop`` hook: training ends after the first epoch where it answers True, that epoch

def _blobs(n=120, d=5, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = 3 * torch.randn(k, d, generator=g)
    y = torch.arange(n) % k
    return centers[y] + torch.randn(n, d, generator=g), y


def _train(epochs, stop=None, measure_at=(0, 4)):
    x, y = _blobs()
    model = models.mlp([5, 16, 3], bias=True, generator=torch.Generator().manual_seed(1))
    asked = []

    def hook(epoch, m):
        asked.append(epoch)
        return stop is not None and stop(epoch, m)

    res = training.sgd_train(
        model, nn.functional.cross_entropy, x, y, lr=0.1, batch_size=10, epochs=epochs,
        generator=torch.Generator().manual_seed(2), measure_at=measure_at,
        measure=lambda e, m: training.evaluate(m, nn.functional.cross_entropy, x, y), show_progress=False,
        stop=hook if stop is not None else None,
    )
    return res, model, asked


def test_stop_ends_training_measures_that_epoch_and_matches_a_shorter_run():
    res, model, asked = _train(10, stop=lambda e, m: e == 3)
    assert res.stopped_at == 3 and asked == [1, 2, 3]
    assert [m["epoch"] for m in res.measurements] == [0, 3]  # 3 is measured though not in measure_at
    assert res.steps == 3 * 12 and len(res.epoch_loss) == 3
    ref, ref_model, _ = _train(3)
    assert ref.stopped_at is None and ref.epoch_loss == res.epoch_loss
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), ref_model.parameters()))
    assert all(p.grad is None for p in model.parameters())


def test_stop_on_a_measured_epoch_measures_it_once_and_never_stopping_runs_all_epochs():
    res, _, _ = _train(10, stop=lambda e, m: e == 4)
    assert [m["epoch"] for m in res.measurements] == [0, 4] and res.stopped_at == 4
    res, _, asked = _train(5, stop=lambda e, m: False)
    assert res.stopped_at is None and asked == [1, 2, 3, 4, 5] and res.steps == 5 * 12


def test_stop_by_training_accuracy():
    x, y = _blobs()
    res, model, _ = _train(50, stop=lambda e, m: training.evaluate(m, nn.functional.cross_entropy, x, y)["accuracy"] >= 0.99)
    assert res.stopped_at is not None and res.stopped_at < 50
    assert training.evaluate(model, nn.functional.cross_entropy, x, y)["accuracy"] >= 0.99
