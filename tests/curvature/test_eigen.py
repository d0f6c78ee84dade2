"""Lanczos and power iteration (sgdbook.curvature.eigen) against eigvalsh, in float64.

Peer pitfall checked here: power iteration returns the largest *algebraic* eigenvalue (PyHessian
returns the one of largest magnitude).
"""

import math

import pytest
import torch

from reference import F64, symmetric_with_spectrum
from sgdbook import curvature as cv


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


@pytest.mark.parametrize("dtype, n, decay, rtol", [(torch.float64, 256, 0.3, 1e-10), (torch.float32, 100, 0.5, 1e-4)])
def test_lanczos_keeps_its_basis_orthonormal_on_low_rank_operators(dtype, n, decay, rtol):
    # G^T G / n with n slowly decaying rows, as a gradient second-moment operator: one Gram-Schmidt
    # pass with a second only under Kahan and Parlett's criterion returned ghost copies of the top
    # eigenvalues here (orthogonality lost to 0.99, eigenvalues 10-30x off), reported as converged
    for seed in range(2):
        g = torch.Generator().manual_seed(seed)
        G = torch.randn(n, 3000, generator=g, dtype=torch.float64) / math.sqrt(3000)
        G = (G * torch.arange(1, n + 1, dtype=torch.float64)[:, None] ** -decay).to(dtype)
        truth = torch.linalg.svdvals(G.double())[:15] ** 2 / n
        r = cv.lanczos(lambda v: G.T @ (G @ v) / n, 3000, 15, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype)
        V = r.eigenvectors.double()
        assert r.converged
        assert float((V.T @ V - torch.eye(15, dtype=torch.float64)).abs().max()) < 10 * math.sqrt(torch.finfo(dtype).eps)
        torch.testing.assert_close(r.eigenvalues.double(), truth, rtol=rtol, atol=0)

