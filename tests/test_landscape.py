import copy
import pytest
import torch
from torch import nn
from sgdbook import landscape, models
from sgdbook.functional import flat_parameters, unflatten
import torch.nn.functional as F
from sgdbook.models import mlp, small_cnn
from sgdbook.trajectory import record_trajectory


F64 = torch.float64


class Scalar(nn.Module):
    """A one-parameter 'network' whose output is its parameter: the loss is a function of w."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([w], dtype=F64))

    def forward(self, x):
        return self.w.expand(x.shape[0], 1)


def _run(model, loss_fn, a, b, **kw):
    x = torch.zeros(4, 1, dtype=F64)
    y = torch.zeros(4, dtype=F64)
    return landscape.segment_profile(model, loss_fn, x, y, torch.tensor([a], dtype=F64), torch.tensor([b], dtype=F64), **kw)


def test_bouncing_in_a_quadratic_matches_the_closed_form():
    lam, w = 2.0, 1.5
    quad = lambda out, y: 0.5 * lam * (out[:, 0] ** 2).mean()
    prof = _run(Scalar(0.0), quad, w, -w, n_alpha=11)  # GD with η = 2/λ bounces from w to −w
    assert prof.interior_minimum and not prof.barrier
    assert prof.floor_alpha == pytest.approx(0.5) and prof.floor_loss == pytest.approx(0.0, abs=1e-15)
    assert prof.height == pytest.approx(0.5 * lam * w**2)  # = L(θ_t)
    assert prof.noise == 0.0


def test_a_double_well_jump_is_a_barrier_and_a_convex_step_is_not():
    well = lambda out, y: ((out[:, 0] ** 2 - 1) ** 2).mean()
    jump = _run(Scalar(0.0), well, -1.2, 1.1, n_alpha=21)
    assert jump.barrier and jump.barrier_excess > 0.5
    down = _run(Scalar(0.0), well, 1.5, 1.2)
    assert not down.barrier and not down.interior_minimum and down.barrier_excess < 0


def test_segment_losses_match_a_loop_over_alpha_with_batch_norm(untouched):
    g = torch.Generator().manual_seed(0)
    model = models.mlp([5, 7, 3], bn=True, bias=True, generator=g).double()
    x, y = torch.randn(30, 5, generator=g, dtype=F64), torch.arange(30) % 3
    model.train()
    with torch.no_grad():  # give the running statistics something to hold
        model(x)
    a = flat_parameters(model)
    b = a + 0.3 * torch.randn(a.shape, generator=g, dtype=F64)
    alphas = torch.linspace(0, 1, 5, dtype=F64)
    thetas = a[None] + alphas[:, None] * (b - a)[None]
    for mode in ("eval", "train"):
        with untouched(model, what=f"segment_losses with bn_mode={mode!r}"):  # nothing of the model changes
            ours = landscape.segment_losses(model, nn.functional.cross_entropy, x, y, thetas, bn_mode=mode, chunk=2)
        for k in range(5):
            ref = copy.deepcopy(model)
            with torch.no_grad():
                for name, t in unflatten(model, thetas[k]).items():
                    ref.get_parameter(name).copy_(t)
            ref.train(mode == "train")
            with torch.no_grad():
                want = nn.functional.cross_entropy(ref(x), y)
            torch.testing.assert_close(ours[k], want, rtol=1e-12, atol=1e-12)
    assert model.training


def test_noise_from_reshuffled_batch_statistics_is_measured_and_suppresses_fake_barriers():
    g = torch.Generator().manual_seed(1)
    model = models.mlp([4, 6, 2], bn=True, generator=g).double()
    x, y = torch.randn(40, 4, generator=g, dtype=F64), torch.arange(40) % 2
    a = flat_parameters(model)
    b = a + 1e-6 * torch.randn(a.shape, generator=g, dtype=F64)  # a tiny step: any "barrier" is noise
    noisy = landscape.segment_profile(model, nn.functional.cross_entropy, x, y, a, b, bn_mode="train",
                                      eval_batch=10, generator=torch.Generator().manual_seed(2))
    assert noisy.noise > 1e-4
    assert not noisy.barrier
    exact = landscape.segment_profile(model, nn.functional.cross_entropy, x, y, a, b, bn_mode="train")
    assert exact.noise == 0.0
    with pytest.raises(ValueError, match="generator"):
        landscape.segment_losses(model, nn.functional.cross_entropy, x, y, a[None], bn_mode="train", eval_batch=10)


# ---------------------------------------------------------------------- landscape_window

F64 = torch.float64


def _setup(bn=True, n=24):
    g = torch.Generator().manual_seed(0)
    model = small_cnn((2, 3, 3), (4,), bn=bn, generator=g).double()
    x = torch.randn(n, 1, 8, 8, generator=g, dtype=F64)
    y = torch.randint(0, 10, (n,), generator=g)
    tr = record_trajectory(model, F.cross_entropy, x, y, steps=4, lr=0.5, batch_size=6, generator=g,
                           windows=[(1, 4)], store_buffers=True)
    return model, x, y, tr.window(1, 4)


def _brute(model, x, y, theta, buffers=None, train=True, batches=None):
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for name, t in unflatten(model, theta).items():
            ref.get_parameter(name).copy_(t)
        if buffers is not None:
            for name, b in buffers.items():
                ref.get_buffer(name).copy_(b)
    ref.eval()
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d) and train:
            m.train()
            m.track_running_stats = False
            m.running_mean = m.running_var = None
    batches = batches or [torch.arange(x.shape[0])]
    with torch.no_grad():
        return sum(float(F.cross_entropy(ref(x[i]), y[i])) * len(i) for i in batches) / x.shape[0]


@pytest.mark.parametrize("method", ["loop", "vmap"])
def test_window_losses_equal_brute_force_in_every_deterministic_mode(method):
    model, x, y, w = _setup()
    snap = copy.deepcopy(model.state_dict())
    th, k = w.thetas, 5
    alphas = torch.linspace(0, 1, k, dtype=F64)
    whole = landscape.window_losses(model, F.cross_entropy, x, y, th, n_alpha=k, bn_mode="train", method=method, chunk=3)
    part_gen = torch.Generator().manual_seed(9)
    parts = landscape.window_losses(model, F.cross_entropy, x, y, th, n_alpha=k, bn_mode="train", eval_batch=10,
                                    generator=part_gen, method=method, chunk=3)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(9))
    batches = [order[i : i + 10] for i in range(0, x.shape[0], 10)]
    ev = landscape.window_losses(model, F.cross_entropy, x, y, th, n_alpha=k, bn_mode="eval", buffers=w.buffers,
                                 method=method, chunk=3)
    for s in range(th.shape[0] - 1):
        for j, a in enumerate(alphas):
            theta = (1 - a) * th[s] + a * th[s + 1]
            bufs = {n: ((1 - a) * v[s] + a * v[s + 1]) if v.is_floating_point() else v[s] for n, v in w.buffers.items()}
            assert float(whole[s, j]) == pytest.approx(_brute(model, x, y, theta), rel=1e-12, abs=1e-13)
            assert float(parts[s, j]) == pytest.approx(_brute(model, x, y, theta, batches=batches), rel=1e-12, abs=1e-13)
            assert float(ev[s, j]) == pytest.approx(_brute(model, x, y, theta, bufs, train=False), rel=1e-12, abs=1e-13)
    assert torch.equal(whole[1:, 0], whole[:-1, -1])  # a shared end point is evaluated once
    for key, v in model.state_dict().items():
        assert torch.equal(v, snap[key])


def test_end_losses_are_reused_and_deterministic_noise_is_exactly_zero():
    model, x, y, w = _setup(bn=False)
    prof = landscape.window_profile(model, F.cross_entropy, x, y, w.thetas, n_alpha=7)
    assert prof.noise == 0.0 and prof.losses.shape == (3, 7)
    given = prof.losses[:, 0].tolist() + [float(prof.losses[-1, -1])]
    again = landscape.window_losses(model, F.cross_entropy, x, y, w.thetas, n_alpha=7, end_losses=torch.tensor(given, dtype=F64))
    assert torch.equal(again, prof.losses)


def test_reshuffled_evaluation_is_noisy_and_the_tolerance_absorbs_it():
    model, x, y, w = _setup()
    th = torch.stack([w.thetas[0], w.thetas[0] + 1e-7 * (w.thetas[1] - w.thetas[0])])  # a tiny step
    noisy = landscape.window_profile(model, F.cross_entropy, x, y, th, bn_mode="train", eval_batch=6, reshuffle=True,
                                     generator=torch.Generator().manual_seed(1), noise_repeats=3)
    assert noisy.noise > 1e-4
    assert int(noisy.raw_barrier.sum()) + int(noisy.interior.sum()) >= 0 and not bool(noisy.barrier.any())
    exact = landscape.window_profile(model, F.cross_entropy, x, y, th, bn_mode="train")
    assert exact.noise == 0.0


def test_quadratic_bounce_heights_match_the_closed_form():
    # GD on L(w) = λ w²/2 with η λ = 2 (symmetric bounce) and η λ = 1.25 (minimum at α = 0.8)
    lam, w0 = 3.0, 0.7
    for etal, alpha_star in [(2.0, 0.5), (1.25, 0.8)]:
        ws = torch.tensor([w0 * (1 - etal) ** t for t in range(4)], dtype=F64)
        k = 11
        alphas = torch.linspace(0, 1, k, dtype=F64)
        pts = ws[:-1, None] + alphas[None] * (ws[1:] - ws[:-1])[:, None]
        losses = 0.5 * lam * pts**2
        st = landscape.segment_stats(losses)
        L = 0.5 * lam * ws**2
        torch.testing.assert_close(st["height"], (L[:-1] + L[1:]) / 2, rtol=1e-12, atol=1e-15)  # floor = 0
        assert bool(st["interior"].all()) and not bool(st["barrier"].any())
        torch.testing.assert_close(st["floor_alpha"], torch.full((3,), alpha_star, dtype=F64))
        assert not bool(st["floor_rise"].any())


def test_a_double_well_jump_is_a_barrier():
    a = torch.linspace(0, 1, 21, dtype=F64)
    w = -1.1 + a * 2.2
    st = landscape.segment_stats(((w**2 - 1) ** 2)[None])
    assert bool(st["barrier"][0]) and float(st["excess"][0]) > 0.9  # the hump at w = 0
    assert bool(st["interior"][0]) and float(st["floor"][0]) < 1e-2  # after dipping into the well at w = −1


def test_clear_errors():
    model, x, y, w = _setup()
    with pytest.raises(ValueError, match="batch norm"):
        landscape.window_losses(model, F.cross_entropy, x, y, w.thetas)
    with pytest.raises(ValueError, match="at least 3"):
        landscape.window_losses(model, F.cross_entropy, x, y, w.thetas, n_alpha=2, bn_mode="train")
    with pytest.raises(ValueError, match="buffers"):
        landscape.window_losses(model, F.cross_entropy, x, y, w.thetas, bn_mode="eval")
    with pytest.raises(ValueError, match="generator"):
        landscape.window_losses(model, F.cross_entropy, x, y, w.thetas, bn_mode="train", eval_batch=5, reshuffle=True)
    plain = mlp([4, 3], generator=torch.Generator()).double()
    with pytest.raises(ValueError, match="columns"):
        landscape.window_losses(plain, F.cross_entropy, torch.zeros(3, 4, dtype=F64), torch.zeros(3, dtype=torch.long),
                                torch.zeros(2, 5, dtype=F64))
