import pytest
import torch
from torch import nn

from sgdbook import models, training
from sgdbook.papers.vmf_directional import models as vmf_models


@pytest.mark.parametrize("name,count", sorted(vmf_models.VMF_PARAMETER_COUNTS.items()))
def test_vmf_models_have_the_papers_parameter_counts(name, count):
    model = vmf_models.vmf_model(name, torch.Generator().manual_seed(0))
    assert models.count_parameters(model) == count
    x = torch.rand(2, 1, 28, 28) if "FNN" in name else torch.rand(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    assert all(getattr(m, "bias", None) is None for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))


def test_initialisation_is_seeded_and_xavier():
    a = models.mlp([20, 30, 5], generator=torch.Generator().manual_seed(3))
    b = models.mlp([20, 30, 5], generator=torch.Generator().manual_seed(3))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    w = a[1].weight
    bound = (6 / (20 + 30)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound


def test_residual_shortcut_pads_and_subsamples():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    like = torch.zeros(2, 5, 2, 2)
    s = vmf_models._shortcut(x, like)
    assert s.shape == like.shape
    assert torch.equal(s[:, :3], x[:, :, ::2, ::2]) and (s[:, 3:] == 0).all()


def test_log_epochs():
    assert training.log_epochs(0, 5) == [0]
    e = training.log_epochs(100, 8)
    assert e[0] == 0 and e[1] == 1 and e[-1] == 100 and e == sorted(set(e))


def _blobs(n=120, d=5, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = 3 * torch.randn(k, d, generator=g)
    y = torch.arange(n) % k
    return centers[y] + torch.randn(n, d, generator=g), y


def test_sgd_train_learns_is_deterministic_and_measures():
    x, y = _blobs()
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
    x, y = _blobs()
    model = models.mlp([5, 8, 3], bn=True)
    model.train()
    training.evaluate(model, nn.functional.cross_entropy, x, y)
    assert all(m.training for m in model.modules())
    model.eval()
    training.evaluate(model, nn.functional.cross_entropy, x, y)
    assert not any(m.training for m in model.modules())


def test_divergence_names_run_epoch_and_step():
    x, y = _blobs()
    model = models.mlp([5, 8, 3], generator=torch.Generator().manual_seed(0))
    with pytest.raises(training.DivergenceError, match=r"seed 7: non-finite training loss at epoch 1, step \d+"):
        training.sgd_train(model, nn.functional.cross_entropy, x, y, lr=1e30, batch_size=10, epochs=3,
                           generator=torch.Generator(), run="seed 7", show_progress=False)


def test_bad_shapes_are_reported():
    x, y = _blobs()
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


def test_gd_is_one_full_batch_step_per_epoch_and_adam_runs():
    x, y = _blobs()
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
