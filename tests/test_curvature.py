"""The curvature estimators against brute force (dense Hessians, eigvalsh, scipy) in float64.

Each peer-library pitfall listed in the design gets a test here: no mode switch, no ``.grad``,
no running-stat update, no doubling on a second construction, largest *algebraic* eigenvalue
from power iteration, every Hutchinson probe used (also more probes than dimensions).
"""

import copy
import itertools
import math

import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles
from sgdbook import curvature as cv
from sgdbook.functional import flat_loss
from sgdbook.curvature.stochastic import _lanczos_tridiag
from torch import nn

F64 = torch.float64


def tiny_mlp(seed: int = 0, sizes=(6, 10, 4), act=nn.Tanh) -> nn.Sequential:
    """A small smooth net: tanh keeps the Hessian free of exact zeros and has negative eigenvalues."""
    torch.manual_seed(seed)  # only the module initialisation; tests below never draw globally
    layers = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers).to(F64)


def bn_mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.Tanh(), nn.Linear(7, 3)).to(F64)


def data(n=48, d=6, c=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=F64), torch.randint(0, c, (n,), generator=g)


def state_of(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_untouched(model, before, training):
    assert model.training is training
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    for k, v in before.items():
        torch.testing.assert_close(after[k], v, rtol=0, atol=0)


@pytest.fixture(scope="module")
def mlp_case():
    model = tiny_mlp()
    x, y = data()
    f, theta = flat_loss(model, nn.functional.cross_entropy, x, y)
    H = cv.full_hessian(f, theta)
    return model, f, theta, H


def symmetric_with_spectrum(eigs, seed=0):
    g = torch.Generator().manual_seed(seed)
    eigs = torch.as_tensor(eigs, dtype=F64)
    q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=g, dtype=F64))
    return (q * eigs) @ q.mT


# ----------------------------------------------------------------------------- the loss and HVP


def test_flat_loss_is_the_loss_and_leaves_the_model_alone():
    model = tiny_mlp()
    model.train()
    x, y = data()
    before = state_of(model)
    f, theta = flat_loss(model, nn.functional.cross_entropy, x, y)
    assert theta.shape == (sum(p.numel() for p in model.parameters()),) and not theta.requires_grad
    torch.testing.assert_close(f(theta), nn.functional.cross_entropy(model(x), y))
    op = cv.HVP(f, theta)
    op(torch.ones_like(theta))
    cv.full_hessian(f, theta)
    assert_untouched(model, before, training=True)
    # theta is a copy: changing it changes neither the model nor an operator built from it
    theta.add_(1.0)
    torch.testing.assert_close(model.state_dict()["0.weight"], before["0.weight"], rtol=0, atol=0)
    assert not torch.equal(op.theta, theta)


def assert_fd_agrees(f, theta, H, n=4, h=1e-6):
    """Central finite differences of the gradient along random directions: the referee for H."""
    grad = torch.func.grad(f)
    V = torch.randn(n, theta.numel(), generator=torch.Generator().manual_seed(99), dtype=F64)
    fd = torch.stack([(grad(theta + h * v) - grad(theta - h * v)) / (2 * h) for v in V])
    torch.testing.assert_close(V @ H, fd, rtol=1e-6, atol=1e-8)


def test_full_hessian_agrees_with_torch_func_hessian(mlp_case):
    _, f, theta, H = mlp_case
    torch.testing.assert_close(H, torch.func.hessian(f)(theta))
    assert_fd_agrees(f, theta, H)


def test_full_hessian_of_a_quadratic():
    A = symmetric_with_spectrum([3.0, -1.0, 0.5, 2.0])
    b = torch.arange(4, dtype=F64)
    H = cv.full_hessian(lambda t: 0.5 * t @ A @ t + b @ t, torch.zeros(4, dtype=F64))
    torch.testing.assert_close(H, A)


def test_hvp_matches_dense_hessian(mlp_case):
    _, f, theta, H = mlp_case
    op = cv.HVP(f, theta, chunk=7)
    g = torch.Generator().manual_seed(3)
    V = torch.randn(20, theta.numel(), generator=g, dtype=F64)
    torch.testing.assert_close(op(V[0]), H @ V[0])
    torch.testing.assert_close(op.batch(V), V @ H)  # 3 chunks of 7, 7, 6
    torch.testing.assert_close(op.batch(V[:1]), V[:1] @ H)
    assert op.n_products == 1 + 20 + 1
    single = cv.HVP(f, theta, chunk=1)  # one product at a time (the CPU default at large p)
    torch.testing.assert_close(single.batch(V[:5]), V[:5] @ H)
    assert single.n_products == 5
    assert cv.HVP(f, theta).chunk == 32  # small p on the CPU: chunks of 32
    assert cv.HVP(lambda t: (t**4).sum(), torch.zeros(200_000, dtype=F64)).chunk == 1
    torch.testing.assert_close(H, H.mT)
    torch.testing.assert_close(op.loss, f(theta))
    torch.testing.assert_close(op.gradient, torch.func.grad(f)(theta))


def test_hvp_built_twice_is_the_same():
    # PyHessian's accumulated .grad doubles every eigenvalue on a second construction
    model = tiny_mlp()
    x, y = data()
    v = torch.randn(
        sum(p.numel() for p in model.parameters()),
        generator=torch.Generator().manual_seed(0),
        dtype=F64,
    )
    first = cv.HVP.from_model(model, nn.functional.cross_entropy, x, y)(v)
    second = cv.HVP.from_model(model, nn.functional.cross_entropy, x, y)(v)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert all(p.grad is None for p in model.parameters())


def test_hvp_of_an_affine_loss_is_zero():
    c = torch.arange(5, dtype=F64)
    op = cv.HVP(lambda t: c @ t, torch.zeros(5, dtype=F64))
    assert torch.equal(op(torch.ones(5, dtype=F64)), torch.zeros(5, dtype=F64))
    assert torch.equal(op.batch(torch.ones(3, 5, dtype=F64)), torch.zeros(3, 5, dtype=F64))


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_batch_norm_modes(bn_mode):
    model = bn_mlp()
    x, y = data(n=32, d=5, c=3)
    with torch.no_grad():  # give the running stats non-trivial values first
        model.train()
        model(x * 2 + 1)
    model.eval() if bn_mode == "train" else model.train()  # the caller's mode must not matter
    training = model.training
    before = state_of(model)
    f, theta = flat_loss(model, nn.functional.cross_entropy, x, y, bn_mode=bn_mode)
    reference = copy.deepcopy(model)
    reference.train(bn_mode == "train")
    with torch.no_grad():
        expected = nn.functional.cross_entropy(reference(x), y)
    torch.testing.assert_close(f(theta), expected)
    H = cv.full_hessian(f, theta)
    # finite differences referee: torch.func.hessian itself is wrong here in train mode
    assert_fd_agrees(f, theta, H)
    if bn_mode == "eval":
        torch.testing.assert_close(H, torch.func.hessian(f)(theta))
    op = cv.HVP(f, theta)
    V = torch.randn(5, theta.numel(), generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(op.batch(V), V @ H)
    torch.testing.assert_close(op(V[0]), H @ V[0])
    cv.lanczos(op, op.p, 2)
    cv.hutchinson_trace(op, op.p, 4, torch.Generator().manual_seed(0))
    assert_untouched(model, before, training)


def test_batch_norm_mode_must_be_stated():
    model = bn_mlp()
    x, y = data(n=8, d=5, c=3)
    with pytest.raises(ValueError, match="bn_mode"):
        flat_loss(model, nn.functional.cross_entropy, x, y)
    with pytest.raises(ValueError, match="bn_mode"):
        flat_loss(model, nn.functional.cross_entropy, x, y, bn_mode="training")


def test_dtype_and_device_follow_the_parameters():
    model = tiny_mlp().float()
    x, y = data()
    op = cv.HVP.from_model(model, nn.functional.cross_entropy, x.float(), y)
    assert op.dtype == torch.float32 and op.device.type == "cpu"
    r = cv.lanczos(op, op.p, 3)
    assert r.eigenvalues.dtype == torch.float32 and r.eigenvectors.dtype == torch.float32
    assert (
        cv.hutchinson_diag(op, op.p, 3, torch.Generator().manual_seed(0)).value.dtype
        == torch.float32
    )


# ----------------------------------------------------------------------------- eigenvalues


@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_lanczos_matches_eigvalsh(mlp_case, which):
    _, f, theta, H = mlp_case
    evals = torch.linalg.eigvalsh(H)
    assert evals[0] < -1e-3 and evals[-1] > 1e-3  # an indefinite Hessian
    k = 6
    truth = evals.flip(0)[:k] if which == "largest" else evals[:k]
    op = cv.HVP(f, theta)
    p = theta.numel()
    r = cv.lanczos(op, p, k, which, max_basis=24, tol=1e-10)
    assert r.converged and r.n_restarts > 0  # a basis of 24 < p forces thick restarts
    assert r.n_products == op.n_products
    torch.testing.assert_close(r.eigenvalues, truth, rtol=1e-9, atol=1e-12)
    assert r.eigenvectors.shape == (p, k)
    torch.testing.assert_close(
        r.eigenvectors.mT @ r.eigenvectors, torch.eye(k, dtype=F64), rtol=0, atol=1e-10
    )
    # the residual estimates meet the tolerance, and so do the true residuals
    true = (H @ r.eigenvectors - r.eigenvectors * r.eigenvalues).norm(dim=0)
    scale = torch.maximum(r.eigenvalues.abs(), 6e-6 * evals.abs().max())
    assert (r.residuals <= 1e-10 * scale).all()
    assert (true <= 1e-10 * scale + 1e-13).all()


def test_lanczos_exact_residuals(mlp_case):
    _, _, _, H = mlp_case
    p = H.shape[0]
    plain = cv.lanczos(cv.MatrixHVP(H), p, 4, max_basis=20)
    exact = cv.lanczos(cv.MatrixHVP(H), p, 4, max_basis=20, exact_residuals=True)
    true = (H @ exact.eigenvectors - exact.eigenvectors * exact.eigenvalues).norm(dim=0)
    torch.testing.assert_close(exact.residuals, true)
    assert exact.n_products == plain.n_products + 4


def test_lanczos_in_default_float64_settings_and_full_space(mlp_case):
    _, f, theta, H = mlp_case
    evals = torch.linalg.eigvalsh(H)
    p = theta.numel()
    op = cv.HVP(f, theta)
    r = cv.lanczos(op, p, 10)
    torch.testing.assert_close(r.eigenvalues, evals.flip(0)[:10], rtol=1e-7, atol=0)
    full = cv.lanczos(cv.MatrixHVP(H), p, p, "smallest")  # k = p: the whole spectrum
    assert full.converged
    torch.testing.assert_close(full.eigenvalues, evals, rtol=0, atol=1e-10)


def test_lanczos_finds_repeated_eigenvalues():
    # ten distinct eigenvalues, each five times: every Krylov sequence breaks down after ten steps
    spectrum = torch.arange(1.0, 11.0, dtype=F64).repeat_interleave(5) - 3.5
    H = symmetric_with_spectrum(spectrum, seed=2)
    for max_basis in (None, 50):  # with thick restarts, and with the whole space at once
        big = cv.lanczos(cv.MatrixHVP(H), 50, 3, "largest", max_basis=max_basis)
        small = cv.lanczos(cv.MatrixHVP(H), 50, 3, "smallest", max_basis=max_basis)
        assert big.converged and small.converged
        torch.testing.assert_close(big.eigenvalues, torch.full((3,), 6.5, dtype=F64))
        torch.testing.assert_close(small.eigenvalues, torch.full((3,), -2.5, dtype=F64))


def test_lanczos_reports_no_convergence_when_out_of_products(mlp_case):
    _, f, theta, _ = mlp_case
    r = cv.lanczos(cv.HVP(f, theta), theta.numel(), 5, max_basis=10, max_products=12, tol=1e-14)
    assert not r.converged and r.n_products == 12


def test_power_iteration_takes_the_largest_algebraic_eigenvalue():
    # the dominant eigenvalue is -5 (PyHessian would return it); the largest algebraic is 3
    spectrum = torch.tensor([-5.0, 3.0, 2.0, 1.0, 0.5, -1.0, 0.0, 0.2], dtype=F64)
    H = symmetric_with_spectrum(spectrum, seed=1)
    r = cv.power_iteration(cv.MatrixHVP(H), 8, tol=1e-9, generator=torch.Generator().manual_seed(0))
    assert r.converged and r.shift < 0
    assert r.eigenvalue == pytest.approx(3.0, rel=1e-9)
    assert torch.linalg.vector_norm(H @ r.eigenvector - 3.0 * r.eigenvector) < 1e-6


def test_power_iteration_on_a_network(mlp_case):
    _, f, theta, H = mlp_case
    evals = torch.linalg.eigvalsh(H)
    assert evals[-1] > -evals[0]
    op = cv.HVP(f, theta)
    r = cv.power_iteration(op, theta.numel(), tol=1e-8, generator=torch.Generator().manual_seed(0))
    assert r.converged and r.shift == 0.0 and r.n_products == op.n_products
    assert r.eigenvalue == pytest.approx(float(evals[-1]), rel=1e-10)


# ----------------------------------------------------------------------------- Hutchinson


def test_hutchinson_trace_and_its_standard_error(mlp_case):
    _, _, _, H = mlp_case
    p = H.shape[0]
    n = 4000  # more probes than dimensions (curvlinops refuses this)
    est = cv.hutchinson_trace(
        cv.MatrixHVP(H), p, n, torch.Generator().manual_seed(0), batch_size=999
    )
    assert est.n_probes == n and est.n_products == n
    assert abs(est.value - float(torch.trace(H))) < 4.5 * est.se
    sd_exact = math.sqrt(2 * (float((H**2).sum()) - float((H.diag() ** 2).sum())))
    assert est.sd == pytest.approx(sd_exact, rel=0.1)
    assert est.se == pytest.approx(est.sd / math.sqrt(n))


def test_hutchinson_uses_every_probe_through_the_hvp(mlp_case):
    _, f, theta, H = mlp_case
    op = cv.HVP(f, theta)
    few = cv.hutchinson_trace(
        op, theta.numel(), 37, torch.Generator().manual_seed(1), batch_size=10
    )
    assert few.n_products == 37 == op.n_products  # no early stop after two probes (PyHessian)
    assert abs(few.value - float(torch.trace(H))) < 4.5 * few.se


def test_hutchinson_diagonal_and_its_standard_errors(mlp_case):
    _, _, _, H = mlp_case
    p = H.shape[0]
    n = 4000
    est = cv.hutchinson_diag(
        cv.MatrixHVP(H), p, n, torch.Generator().manual_seed(2), batch_size=300
    )
    assert est.n_products == n and est.value.shape == (p,)
    z = (est.value - H.diag()) / est.se
    assert z.abs().max() < 4.5
    se_exact = (((H**2).sum(1) - H.diag() ** 2) / n).sqrt()
    ratio = est.se / se_exact
    assert 0.85 < ratio.min() and ratio.max() < 1.15


def test_hutchinson_diagonal_merges_blocks_exactly(mlp_case):
    _, _, _, H = mlp_case
    p = H.shape[0]
    a = cv.hutchinson_diag(cv.MatrixHVP(H), p, 50, torch.Generator().manual_seed(3), batch_size=7)
    Z = 2 * torch.randint(0, 2, (50, p), generator=torch.Generator().manual_seed(3)).to(F64) - 1
    samples = Z * (Z @ H)
    torch.testing.assert_close(a.value, samples.mean(0))
    torch.testing.assert_close(a.se, samples.std(0) / math.sqrt(50))


# ----------------------------------------------------------------------------- spectral density


def test_lanczos_quadrature_is_exact_for_low_moments(mlp_case):
    _, _, _, H = mlp_case
    p = H.shape[0]
    g = torch.Generator().manual_seed(4)
    V0 = torch.randn(3, p, generator=g, dtype=F64)
    V0 = V0 / V0.norm(dim=1, keepdim=True)
    m = 8
    theta, Y = torch.linalg.eigh(_lanczos_tridiag(cv.MatrixHVP(H), V0, m, True))
    w = Y[:, 0, :] ** 2
    torch.testing.assert_close(w.sum(1), torch.ones(3, dtype=F64))
    Hk = torch.eye(p, dtype=F64)
    for k in range(1, 2 * m):  # Gauss quadrature with m nodes is exact to degree 2m − 1
        Hk = Hk @ H
        torch.testing.assert_close(
            (w * theta**k).sum(1), ((V0 @ Hk) * V0).sum(1), rtol=1e-8, atol=1e-14
        )


def test_spectral_density_mass_and_moments(mlp_case):
    _, f, theta, H = mlp_case
    p = H.shape[0]
    op = cv.HVP(f, theta)
    n_probes, n_steps = 40, 30
    sd = cv.spectral_density(op, p, n_probes, n_steps, torch.Generator().manual_seed(5), grid=4000)
    assert sd.n_products == n_probes * n_steps == op.n_products
    assert sd.nodes.shape == sd.weights.shape == (n_probes, n_steps)
    assert torch.trapezoid(sd.density, sd.grid).item() == pytest.approx(1.0, abs=1e-6)
    m1 = (sd.weights * sd.nodes).sum(1)  # per-probe first moments
    m2 = (sd.weights * sd.nodes**2).sum(1)
    for sample, exact in ((m1, torch.trace(H) / p), (m2, torch.trace(H @ H) / p)):
        assert abs(sample.mean() - exact) < 4.5 * sample.std() / math.sqrt(n_probes)
    # the smoothed density carries the same moments (plus sigma² in the second)
    torch.testing.assert_close(
        torch.trapezoid(sd.grid * sd.density, sd.grid), m1.mean(), rtol=1e-6, atol=1e-9
    )
    torch.testing.assert_close(
        torch.trapezoid(sd.grid**2 * sd.density, sd.grid),
        m2.mean() + sd.sigma**2,
        rtol=1e-6,
        atol=1e-9,
    )
    assert (sd.density_se >= 0).all() and sd.density.min() >= 0


def test_spectral_density_on_a_low_rank_operator():
    # three distinct eigenvalues: every run breaks down after three steps and stays finite
    spectrum = torch.tensor([2.0] * 10 + [0.0] * 25 + [-1.0] * 5, dtype=F64)
    H = symmetric_with_spectrum(spectrum)
    sd = cv.spectral_density(cv.MatrixHVP(H), 40, 6, 10, torch.Generator().manual_seed(6))
    assert torch.isfinite(sd.nodes).all() and torch.isfinite(sd.density).all()
    mass = {v: float(sd.weights[(sd.nodes - v).abs() < 1e-8].sum()) / 6 for v in (2.0, 0.0, -1.0)}
    assert sum(mass.values()) == pytest.approx(1.0)
    assert mass[2.0] == pytest.approx(10 / 40, abs=0.15) and mass[-1.0] == pytest.approx(
        5 / 40, abs=0.1
    )


# ----------------------------------------------------------------------------- angles, determinism


def test_principal_angles_match_scipy():
    g = torch.Generator().manual_seed(7)
    A = torch.randn(30, 5, generator=g, dtype=F64)
    B = torch.randn(30, 3, generator=g, dtype=F64)
    near = A[:, :3] @ torch.randn(3, 3, generator=g, dtype=F64) + 1e-9 * B  # tiny angles
    for a, b in ((A, B), (B, A), (A, near), (A, A[:, [1, 0, 4]] * 3)):
        ours = cv.principal_angles(a, b).numpy()
        ref = np.sort(subspace_angles(a.numpy(), b.numpy()))
        assert np.allclose(ours, ref, rtol=1e-6, atol=1e-12)
        assert np.all(np.diff(ours) >= 0)
    assert cv.principal_angles(A, near).max() < 1e-7


def test_same_seed_same_numbers(mlp_case):
    _, f, theta, _ = mlp_case
    p = theta.numel()
    op = cv.HVP(f, theta)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return (
            cv.lanczos(op, p, 4, generator=g).eigenvalues,
            cv.power_iteration(op, p, generator=g).eigenvalue,
            cv.hutchinson_trace(op, p, 10, g).value,
            cv.hutchinson_diag(op, p, 10, g).value,
            cv.spectral_density(op, p, 3, 5, g).density,
        )

    for a, b in zip(run(11), run(11)):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    assert run(12)[2] != run(11)[2]


def test_no_global_rng_is_used(mlp_case):
    _, f, theta, _ = mlp_case
    p = theta.numel()
    op = cv.HVP(f, theta)
    state = torch.get_rng_state()
    g = torch.Generator().manual_seed(0)
    cv.lanczos(op, p, 3)
    cv.power_iteration(op, p)
    cv.hutchinson_trace(op, p, 3, g)
    cv.hutchinson_diag(op, p, 3, g)
    cv.spectral_density(op, p, 2, 4, g)
    assert torch.equal(torch.get_rng_state(), state)


def test_bad_arguments(mlp_case):
    _, f, theta, _ = mlp_case
    op = cv.HVP(f, theta)
    p = theta.numel()
    with pytest.raises(ValueError, match="which"):
        cv.lanczos(op, p, 2, "largest_magnitude")
    with pytest.raises(ValueError, match="k <= p"):
        cv.lanczos(op, p, p + 1)
    with pytest.raises(ValueError, match="length"):
        cv.lanczos(op, p + 1, 2)
    with pytest.raises(ValueError, match="probe"):
        cv.hutchinson_trace(op, p, 0, torch.Generator())
    with pytest.raises(ValueError, match="flat"):
        cv.HVP(f, theta[None])
    with pytest.raises(ValueError, match="rows"):
        cv.principal_angles(torch.ones(3, 2), torch.ones(4, 2))


@pytest.mark.cuda
def test_curvature_on_cuda():
    model = tiny_mlp().cuda()
    x, y = data()
    op = cv.HVP.from_model(model, nn.functional.cross_entropy, x.cuda(), y.cuda())
    g = torch.Generator(device="cuda").manual_seed(0)
    r = cv.lanczos(op, op.p, 3, generator=g)
    assert r.eigenvalues.device.type == "cuda" and r.converged
    assert cv.hutchinson_diag(op, op.p, 8, g).value.device.type == "cuda"
    sd = cv.spectral_density(op, op.p, 4, 8, g)
    assert sd.density.device.type == "cuda"
    # a CPU generator still works: draws are moved to the operator's device
    assert cv.hutchinson_trace(op, op.p, 4, torch.Generator().manual_seed(0)).n_products == 4


def test_residual_operator_is_the_hessian_papers_h_p():
    # Proposition 1 of the Hessian paper, checked independently: M − H = (1/n) Σ ∇²p_i / p_i
    from sgdbook.curvature import HVP, ResidualOperator, full_hessian
    from sgdbook.functional import flat_parameters, unflatten
    from sgdbook.gradients import second_moment_operator

    g = torch.Generator().manual_seed(11)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x, y = torch.randn(9, 3, generator=g, dtype=torch.float64), torch.arange(9) % 3
    op = ResidualOperator(HVP.from_model(model, nn.functional.cross_entropy, x, y),
                          second_moment_operator(model, nn.functional.cross_entropy, x, y))
    theta = flat_parameters(model)
    p = theta.numel()
    eye = torch.eye(p, dtype=torch.float64)
    dense = op.batch(eye)

    def prob(th, i):
        out = torch.func.functional_call(model, unflatten(model, th), (x[i : i + 1],))
        return out.softmax(-1)[0, y[i]]

    want = sum(torch.func.hessian(lambda th: prob(th, i))(theta) / prob(theta, i) for i in range(9)) / 9
    torch.testing.assert_close(dense, want, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(op(eye[3]), dense[3], rtol=1e-12, atol=1e-12)
    from sgdbook.gradients import second_moment_matrix

    f, _ = flat_loss(model, nn.functional.cross_entropy, x, y)
    M = second_moment_matrix(model, nn.functional.cross_entropy, x, y)
    torch.testing.assert_close(M - full_hessian(f, theta), dense, rtol=1e-9, atol=1e-10)
    assert float(dense.norm()) > 0.1 * float(M.norm())  # away from a minimum H_p is far from negligible


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 7), nn.ReLU(), nn.Linear(7, 4)), (23, 6)),
        (lambda: nn.Sequential(nn.Flatten(), nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Identity(), nn.Linear(5, 4)), (23, 2, 3)),
        (lambda: nn.Sequential(nn.Linear(6, 4), nn.ReLU()), (23, 6)),  # a ReLU on the logits
    ],
)
def test_linear_net_hvp_equals_the_autograd_graph_and_the_dense_hessian(make, shape):
    torch.manual_seed(0)
    model = make().double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g, dtype=F64)
    y = torch.randint(0, 4, (shape[0],), generator=g)
    fast = cv.HVP.from_model(model, nn.functional.cross_entropy, x, y, chunk=3)
    slow = cv.HVP.from_model(model, nn.functional.cross_entropy, x, y, fast_path=False)
    assert isinstance(fast, cv.LinearNetHVP) and isinstance(slow, cv.HVP)
    f, theta = flat_loss(model, nn.functional.cross_entropy, x, y)
    H = cv.full_hessian(f, theta)
    torch.testing.assert_close(fast.theta, theta)
    torch.testing.assert_close(fast.loss, slow.loss, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(fast.gradient, slow.gradient, rtol=1e-12, atol=1e-14)
    V = torch.randn(7, theta.numel(), generator=g, dtype=F64)
    torch.testing.assert_close(fast(V[0]), H @ V[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fast.batch(V), V @ H, rtol=1e-10, atol=1e-12)  # chunks of 3, 3, 1
    torch.testing.assert_close(fast.batch(V), slow.batch(V), rtol=1e-10, atol=1e-12)
    assert fast.n_products == 1 + 7 + 7
    assert all(q.grad is None for q in model.parameters())


def test_linear_net_hvp_is_not_used_where_it_does_not_apply():
    x, y = torch.randn(5, 6, dtype=F64), torch.randint(0, 4, (5,))
    tanh = tiny_mlp()  # tanh has a second derivative
    assert isinstance(cv.HVP.from_model(tanh, nn.functional.cross_entropy, x, y), cv.HVP)
    relu = nn.Sequential(nn.Linear(6, 4)).double()
    assert isinstance(cv.HVP.from_model(relu, nn.functional.mse_loss, x, torch.randn(5, 4, dtype=F64)), cv.HVP)
    relu[0].bias.requires_grad_(False)
    assert isinstance(cv.HVP.from_model(relu, nn.functional.cross_entropy, x, y), cv.HVP)
    shared = nn.Linear(6, 6).double()
    twice = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(6, 4)).double()  # one layer used twice
    op = cv.HVP.from_model(twice, nn.functional.cross_entropy, x, y)
    assert isinstance(op, cv.HVP)
    f, theta = flat_loss(twice, nn.functional.cross_entropy, x, y)
    v = torch.randn(theta.numel(), dtype=F64)
    torch.testing.assert_close(op(v), cv.full_hessian(f, theta) @ v)


def test_lanczos_records_kept_on_the_device_give_the_same_result(mlp_case, monkeypatch):
    # the GPU code path (records stay tensors until a check), exercised on the CPU
    _, f, theta, H = mlp_case
    op = cv.MatrixHVP(H)
    host = cv.lanczos(op, theta.numel(), 4, max_basis=12, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(cv.eigen, "_READ_AT_ONCE", ())
    device = cv.lanczos(op, theta.numel(), 4, max_basis=12, generator=torch.Generator().manual_seed(0))
    # the same iteration: the host path divides by β read as a float, the device path by β as
    # a tensor (the last bit of the basis may differ)
    torch.testing.assert_close(host.eigenvalues, device.eigenvalues, rtol=1e-13, atol=0)
    assert (host.n_products, host.n_restarts) == (device.n_products, device.n_restarts)
    torch.testing.assert_close(device.eigenvalues, torch.linalg.eigvalsh(H).flip(0)[:4], rtol=1e-9, atol=1e-12)


def test_lanczos_records_kept_on_the_device_through_breakdowns_and_restarts(monkeypatch):
    # the GPU code path (α and β read only at the checks) where Krylov sequences break down
    spectrum = torch.arange(1.0, 11.0, dtype=F64).repeat_interleave(5) - 3.5
    H = symmetric_with_spectrum(spectrum, seed=2)
    host = cv.lanczos(cv.MatrixHVP(H), 50, 3, "largest", max_basis=20)
    monkeypatch.setattr(cv.eigen, "_READ_AT_ONCE", ())
    device = cv.lanczos(cv.MatrixHVP(H), 50, 3, "largest", max_basis=20)
    assert device.converged and device.n_restarts > 0
    torch.testing.assert_close(device.eigenvalues, torch.full((3,), 6.5, dtype=F64))
    torch.testing.assert_close(host.eigenvalues, device.eigenvalues)
    # the host path notices a breakdown at its step, the device path at the next check
    assert host.n_products <= device.n_products


@pytest.mark.parametrize("read_at_once", [("cpu",), ()])
@pytest.mark.parametrize("dim, noise", [(1, 1e-9), (5, 1e-8), (5, 1e-9)])
def test_lanczos_from_a_start_close_to_an_invariant_subspace(monkeypatch, read_at_once, dim, noise):
    # a start vector within `noise` of the span of the top `dim` eigenvectors: some Gram–Schmidt
    # pass removes most of H v; the basis, hence the eigenvectors, must stay orthogonal (with a
    # second pass only where the first took the norm down by more than 100, they drifted to
    # 6e-12 for dim = 5)
    monkeypatch.setattr(cv.eigen, "_READ_AT_ONCE", read_at_once)
    spectrum = torch.linspace(-1.0, 3.0, 60, dtype=F64)
    H = symmetric_with_spectrum(spectrum, seed=3)
    evals, evecs = torch.linalg.eigh(H)
    g = torch.Generator().manual_seed(1)
    v0 = evecs[:, 60 - dim :] @ torch.randn(dim, generator=g, dtype=F64) + noise * torch.randn(60, generator=g, dtype=F64)
    r = cv.lanczos(cv.MatrixHVP(H), 60, 5, v0=v0, max_basis=20)
    assert r.converged
    torch.testing.assert_close(r.eigenvalues, evals.flip(0)[:5], rtol=1e-10, atol=0)
    Q = r.eigenvectors
    assert (Q.mT @ Q - torch.eye(5, dtype=F64)).abs().max() < 1e-13


@pytest.mark.parametrize("read_at_once", [("cpu",), ()])
@pytest.mark.parametrize("which", ["largest", "smallest"])
@pytest.mark.parametrize("k", [3, 5, 7])
def test_lanczos_on_a_low_rank_operator(which, k, read_at_once, monkeypatch):
    # rank 5 in 40 dimensions: after the first sequence every fresh start breaks down at once
    # (the null space); the null space's copies of 0 must be found where they are wanted, and
    # not searched for where they are not (also on the device path, which notices breakdowns
    # only at its checks)
    monkeypatch.setattr(cv.eigen, "_READ_AT_ONCE", read_at_once)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(100, 5, generator=g, dtype=F64)
    spectrum = torch.cat([torch.linalg.eigvalsh(X.mT @ X), torch.zeros(35, dtype=F64)])
    H = symmetric_with_spectrum(spectrum, seed=4)
    r = cv.lanczos(cv.MatrixHVP(H), 40, k, which)
    truth = spectrum.sort(descending=which == "largest").values[:k]
    assert r.converged
    torch.testing.assert_close(r.eigenvalues, truth, rtol=1e-10, atol=1e-10)
    assert r.n_products <= 40 + (10 if not read_at_once else 0)
    if which == "largest" and k <= 5:
        assert r.n_products <= 10  # no search for copies of an unwanted 0
