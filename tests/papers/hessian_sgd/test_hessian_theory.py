"""papers.hessian_sgd.theory against brute force (dense p × p matrices, itertools loops), float64."""

import itertools
import math

import pytest
import torch

from sgdbook.gradients import all_minibatches
from sgdbook.papers.hessian_sgd import theory as th

D = torch.float64


def _dense_stats(G):
    n = G.shape[0]
    mu = G.mean(0)
    C = G - mu
    S = C.T @ C / n
    ev = torch.linalg.eigvalsh(S)
    return dict(mu_sq=mu @ mu, trace_m=(G * G).sum() / n, trace_sigma=S.trace(), sigma_fro=torch.linalg.matrix_norm(S),
                sigma_op=ev[-1], sigma_half_mu=(mu @ S @ mu).sqrt())


@pytest.mark.parametrize("n,p", [(6, 20), (12, 5)])
def test_sgstats_from_gram_against_dense_sigma(n, p, gen):
    G = torch.randn(3, n, p, generator=gen, dtype=D) + 0.3
    for st in (th.SGStats.from_grads(G), th.SGStats.from_gram(G @ G.mT)):
        for r in range(3):
            ref = _dense_stats(G[r])
            for k, v in ref.items():
                torch.testing.assert_close(getattr(st, k)[r], v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(st.trace_m_batch(4), st.trace_sigma / 4 + st.mu_sq)


def test_with_replacement_enumeration_gives_eq8_and_eq26(gen):
    n, m, p = 5, 3, 4
    G = torch.randn(n, p, generator=gen, dtype=D)
    idx = all_minibatches(n, m, replacement=True)
    assert idx.shape == (n**m, m)
    sg = G[idx].mean(1)
    mu = G.mean(0)
    S = (G - mu).T @ (G - mu) / n
    torch.testing.assert_close(sg.mean(0), mu, rtol=1e-12, atol=1e-13)  # Eq. 8: mean μ
    cov = (sg - mu).T @ (sg - mu) / sg.shape[0]
    torch.testing.assert_close(cov, S / m, rtol=1e-11, atol=1e-13)  # Eq. 8: covariance Σ/m
    torch.testing.assert_close(sg.T @ sg / sg.shape[0], S / m + torch.outer(mu, mu), rtol=1e-11, atol=1e-13)  # (26)


def _ls_problem(gen, n=6, p=10, sigma=1.0):
    X = torch.randn(n, p, generator=gen, dtype=D)
    y = torch.randn(n, generator=gen, dtype=D)
    theta = torch.randn(p, generator=gen, dtype=D)
    return X, y, theta


def test_delta_samples_against_a_loop(gen):
    X, y, theta = _ls_problem(gen)
    cf = th.least_squares(X, y, theta, 0.7)
    f = lambda T: (T @ X.T - y).square().sum(-1) / (2 * 6 * 0.49)
    idx = torch.randint(0, 6, (2, 11, 3), generator=gen)
    thetas = torch.stack([theta, theta + 0.1])
    Gs = torch.stack([cf.G, th.least_squares(X, y, theta + 0.1, 0.7).G])
    ds = th.delta_samples(f, thetas, Gs, 0.05, 3, 11, gen, indices=idx, chunk=5)
    for j in range(2):
        for k in range(11):
            sg = Gs[j][idx[j, k]].mean(0)
            ref = f((thetas[j] - 0.05 * sg)[None])[0] - f(thetas[j][None])[0]
            torch.testing.assert_close(ds.samples[j, k], ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ds.var, ds.samples.var(1))
    torch.testing.assert_close(ds.se, (ds.samples.var(1) / 11).sqrt())
    drawn = th.delta_samples(f, theta, cf.G, 0.05, 3, 50, torch.Generator().manual_seed(0))
    assert drawn.samples.shape == (1, 50)


def test_theorem1_on_least_squares_exact_mean_and_interval(gen):
    """Quadratic loss: E[Δ|θ] over all n^m minibatches equals the Taylor mean exactly, and lies
    in both versions of interval (27) with L = ‖H_f‖₂."""
    n, m, sigma, eta = 5, 2, 0.8, 0.3
    X, y, theta = _ls_problem(gen, n=n, p=7)
    cf = th.least_squares(X, y, theta, sigma)
    L = float(torch.linalg.eigvalsh(cf.H)[-1])
    f = lambda T: (T @ X.T - y).square().sum(-1) / (2 * n * sigma**2)
    idx = all_minibatches(n, m, replacement=True)
    ds = th.delta_samples(f, theta, cf.G, eta, m, 0, gen, indices=idx)
    tr = th.taylor_curvature(lambda V: V @ cf.H, cf.G, m)
    mu = cf.mu
    mm = (cf.M - torch.outer(mu, mu)) / m + torch.outer(mu, mu)
    torch.testing.assert_close(tr, (cf.H * mm).sum(), rtol=1e-12, atol=1e-14)
    t1 = th.theorem1(th.SGStats.from_grads(cf.G), eta, m, L, tr_h_mm=tr)
    torch.testing.assert_close(ds.mean[0], t1.taylor, rtol=1e-11, atol=1e-13)
    assert t1.lower_batch <= ds.mean[0] <= t1.upper_batch
    assert t1.lower <= t1.lower_batch and t1.upper_batch <= t1.upper  # M^(m) ⪯ M
    st = th.SGStats.from_grads(cf.G)
    torch.testing.assert_close(t1.alpha1, eta * abs(1 - eta * L) * st.sigma_half_mu / math.sqrt(m))
    torch.testing.assert_close(t1.beta1, eta * abs(1 + eta * L) * st.sigma_half_mu / math.sqrt(m))
    torch.testing.assert_close(t1.alpha2, eta**2 * L * st.sigma_fro / (2 * m))
    torch.testing.assert_close(t1.alpha3, eta**2 * L * st.sigma_op / (2 * m))
    torch.testing.assert_close(t1.varsigma, eta * abs(1 - eta * L / math.sqrt(m)) * st.sigma_half_mu)
    torch.testing.assert_close(t1.escape_centre, 0.5 * eta**2 * L * st.trace_m)


def test_tail_constant_against_a_loop(gen):
    x = torch.randn(2, 400, generator=gen, dtype=D)
    a = (torch.tensor([0.5, 1.0], dtype=D), torch.tensor([0.7, 0.2], dtype=D), torch.tensor([0.3, 0.4], dtype=D))
    s = torch.tensor([0.1, 0.5, 1.0, 2.0, 10.0], dtype=D)
    c = th.tail_constant(x, a, s)
    for r in range(2):
        best = math.inf
        for sv in s.tolist():
            P = float((x[r] >= sv).double().mean())
            if P > 0:
                rate = min(sv**2 / float(a[0][r]) ** 2, sv**2 / float(a[1][r]) ** 2, sv / float(a[2][r]))
                best = min(best, math.log(2 / P) / rate)
        assert math.isclose(float(c[r]), best, rel_tol=1e-12)
        # the bound holds at every s with that c
        for sv in s.tolist():
            P = float((x[r] >= sv).double().mean())
            rate = min(sv**2 / float(a[0][r]) ** 2, sv**2 / float(a[1][r]) ** 2, sv / float(a[2][r]))
            assert P <= 2 * math.exp(-float(c[r]) * rate) * (1 + 1e-12)


def _brute_ls_mean(X, y, theta, sigma, eta, m):
    n = X.shape[0]
    cf = th.least_squares(X, y, theta, sigma)
    f = lambda t: float((X @ t - y).square().sum() / (2 * n * sigma**2))
    tot = 0.0
    for tup in itertools.product(range(n), repeat=m):
        sg = cf.G[list(tup)].mean(0)
        tot += f(theta - eta * sg) - f(theta)
    return tot / n**m


@pytest.mark.parametrize("sigma,m", [(1.0, 1), (0.5, 2), (2.0, 1)])
def test_corollary1_exact_mean_and_bounds(sigma, m, gen):
    X, y, theta = _ls_problem(gen, n=5, p=9)
    c1 = th.corollary1(X, y, theta, sigma, m)
    assert math.isclose(c1.exact_mean, _brute_ls_mean(X, y, theta, sigma, c1.lr, m), rel_tol=1e-10, abs_tol=1e-14)
    assert math.isclose(c1.exact_mean_proof, _brute_ls_mean(X, y, theta, sigma, c1.lr_proof, m), rel_tol=1e-10, abs_tol=1e-14)
    n = 5
    assert math.isclose(c1.alpha, float(torch.linalg.eigvalsh(X @ X.T / n)[0]), rel_tol=1e-12)
    assert math.isclose(c1.L, float(torch.linalg.eigvalsh(X.T @ X / (n * sigma**2))[-1]), rel_tol=1e-12)
    assert c1.exact_mean <= c1.bound_corrected * (1 - 1e-12)  # the corrected bound always holds
    assert math.isclose(c1.bound_corrected, c1.bound_printed / sigma**4, rel_tol=1e-12)
    if sigma <= 1:
        assert c1.exact_mean <= c1.bound_printed


def test_corollary1_tight_design_breaks_the_printed_bound_for_sigma_above_one(gen):
    n, p = 4, 8
    Q, _ = torch.linalg.qr(torch.randn(p, n, generator=gen, dtype=D))
    X = 1.7 * Q.T  # orthogonal rows of equal norm
    y = torch.randn(n, generator=gen, dtype=D)
    theta = torch.randn(p, generator=gen, dtype=D)
    for sigma in (0.5, 1.0, 2.0):
        c1 = th.corollary1(X, y, theta, sigma, 1)
        assert math.isclose(c1.exact_mean, c1.bound_corrected, rel_tol=1e-10)  # tight
        if sigma > 1:
            assert c1.exact_mean > c1.bound_printed  # the printed statement fails
        # α_{t,1} as printed and Theorem 1's at the same η differ
        assert c1.alpha_t1_printed != pytest.approx(c1.alpha_t1_theorem1, rel=1e-3)


def _brute_logistic_mean(X, y, theta, eta, m):
    n = X.shape[0]
    f = lambda t: float((torch.nn.functional.softplus(X @ t) - y * (X @ t)).mean())
    G = (torch.sigmoid(X @ theta) - y)[:, None] * X
    tot = 0.0
    for tup in itertools.product(range(n), repeat=m):
        tot += f(theta - eta * G[list(tup)].mean(0)) - f(theta)
    return tot / n**m


def test_corollary2_singular_printed_alpha_and_the_gram_bound(gen):
    n, p = 6, 12
    X = torch.randn(n, p, generator=gen, dtype=D)
    y = (torch.rand(n, generator=gen, dtype=D) < 0.5).to(D)
    for _ in range(5):
        theta = 0.5 * torch.randn(p, generator=gen, dtype=D)
        c2 = th.corollary2(X, y, theta, 2)
        assert abs(c2.alpha_printed) < 1e-12  # p × p matrix of rank n < p
        assert c2.alpha > 0
        assert math.isclose(c2.L, float(torch.linalg.eigvalsh(X.T @ X)[-1]) / (4 * n), rel_tol=1e-12)
        assert math.isclose(c2.exact_mean, _brute_logistic_mean(X, y, theta, c2.lr, 2), rel_tol=1e-10, abs_tol=1e-15)
        assert c2.exact_mean <= c2.bound
        assert c2.minibatches == n**2


def test_closed_forms_against_autograd(gen):
    X, y, theta = _ls_problem(gen)
    cf = th.least_squares(X, y, theta, 0.6)
    f = lambda t: (X @ t - y).square().sum() / (2 * 6 * 0.36)
    torch.testing.assert_close(cf.mu, torch.func.grad(f)(theta))
    torch.testing.assert_close(cf.H, torch.func.hessian(f)(theta))
    yb = (y > 0).to(D)
    lg = th.logistic(X, yb, theta)
    g = lambda t: (torch.nn.functional.softplus(X @ t) - yb * (X @ t)).mean()
    torch.testing.assert_close(lg.mu, torch.func.grad(g)(theta))
    torch.testing.assert_close(lg.H, torch.func.hessian(g)(theta))
    torch.testing.assert_close(lg.loss, g(theta))


def test_theorem2_k2_formula():
    out = th.theorem2_k2(0.1, 2.0, 3.0, 50, 5, 4.0, 1.5)
    eta, mu, sig, p, m, L, L1 = 0.1, 2.0, 3.0, 50, 5, 4.0, 1.5
    K = eta**2 * L * (sig + mu**2) + eta * mu**2 / m**0.5 * (1 + eta * L) * sig**0.5 + (m + 1) * eta**2 * L * sig / (2 * m)
    K1 = 2 * L1 * eta * (mu + (sig * p) ** 0.5 / m**0.5)
    assert out == pytest.approx({"K": K, "K1": K1, "K2": max(K, K1)}, rel=1e-14)


def test_theorem3_decrease_factor_exact_on_a_quadratic(gen):
    """η = c‖μ‖²/(2L Tr M) with L = ‖H‖₂: E[Δ|θ] ≤ −c(4−c)/8 ‖μ‖⁴/(L Tr M) (and with Tr M^(m))."""
    X, y, theta = _ls_problem(gen, n=5, p=8)
    cf = th.least_squares(X, y, theta, 1.0)
    L = float(torch.linalg.eigvalsh(cf.H)[-1])
    st = th.SGStats.from_grads(cf.G)
    for m in (1, 3):
        for c in (1.01, 2.0, 2.99):
            for tr in (st.trace_m, st.trace_m_batch(m)):
                eta = float(c * st.mu_sq / (2 * L * tr))
                mean = _brute_ls_mean(X, y, theta, 1.0, eta, m)
                assert mean <= -th.theorem3_decrease_factor(c) * float(st.mu_sq**2 / (L * tr)) + 1e-14
    assert th.theorem3_decrease_factor(2.0) == 0.5
    assert th.theorem3_decrease_factor(1.0) == th.theorem3_decrease_factor(3.0) == 3 / 8


def test_theorem3_iterations_and_inverse():
    kw = dict(L=3.0, gap=2.0, sigma2=5.0, batch_size=5)
    T_pr = th.theorem3_iterations(eps=0.1, variant="printed", **kw)
    assert T_pr == pytest.approx(2 * 3.0 * 2.0 * (5.0 / 5 + 0.1) / 0.01)
    assert th.theorem3_iterations(eps=0.1, variant="proof", **kw) == pytest.approx(4 * 3.0 * 2.0 * (5.0 + 0.1) / 0.01)
    assert th.theorem3_iterations(eps=0.1, variant="interval", **kw) == pytest.approx(8 / 3 * 3.0 * 2.0 * (1.0 + 0.1) / 0.01)
    for v in ("printed", "proof", "midpoint", "interval"):
        T = th.theorem3_iterations(eps=0.07, variant=v, **kw)
        assert float(th.theorem3_eps(T, variant=v, **kw)) == pytest.approx(0.07, rel=1e-12)
    with pytest.raises(ValueError, match="unknown variant"):
        th.theorem3_iterations(eps=0.1, variant="nope", **kw)


def test_bad_inputs_name_the_fix(gen):
    X, y, theta = _ls_problem(gen)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        th.least_squares(X, y, theta, 0.0)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        th.corollary1(X, y, theta, -1.0, 1)
    st = th.SGStats.from_grads(th.least_squares(X, y, theta).G)
    with pytest.raises(ValueError, match="lr must be > 0"):
        th.theorem1(st, 0.0, 1, 1.0)
    with pytest.raises(ValueError, match="L must be > 0"):
        th.theorem1(st, 0.1, 1, -1.0)
    with pytest.raises(ValueError, match="batch size"):
        th.theorem1(st, 0.1, 0, 1.0)
    for r in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            th.check_fraction(r)
    assert th.check_fraction(0.15) == 0.15
    with pytest.raises(ValueError, match="linearly independent"):
        th.corollary1(torch.ones(3, 4, dtype=D), torch.zeros(3, dtype=D), torch.zeros(4, dtype=D), 1.0, 1)


def test_extreme_eigenvalues_batched_lanczos(gen):
    P, p = 4, 30
    A = torch.randn(P, p, p, generator=gen, dtype=D)
    H = A + A.mT
    lo, hi = th.extreme_eigenvalues(lambda V: torch.einsum("pij,pj->pi", H, V), P, p, p, gen)
    ev = torch.linalg.eigvalsh(H)
    torch.testing.assert_close(lo, ev[:, 0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(hi, ev[:, -1], rtol=1e-9, atol=1e-9)
    lo12, hi12 = th.extreme_eigenvalues(lambda V: torch.einsum("pij,pj->pi", H, V), P, p, 12, gen)
    assert bool((lo12 >= ev[:, 0] - 1e-9).all()) and bool((hi12 <= ev[:, -1] + 1e-9).all())  # Ritz values inside
    # a low-rank operator: breakdown before `steps`
    U = torch.randn(P, p, 3, generator=gen, dtype=D)
    Hl = U @ U.mT
    lo, hi = th.extreme_eigenvalues(lambda V: torch.einsum("pij,pj->pi", Hl, V), P, p, 20, gen)
    torch.testing.assert_close(hi, torch.linalg.eigvalsh(Hl)[:, -1], rtol=1e-9, atol=1e-9)


def test_delta_samples_with_per_point_and_diagonal_steps(gen):
    X, y, theta = _ls_problem(gen)
    cf = th.least_squares(X, y, theta, 1.0)
    f = lambda T: (T @ X.T - y).square().sum(-1) / 12
    idx = torch.randint(0, 6, (2, 5, 2), generator=gen)
    thetas, Gs = torch.stack([theta, theta]), torch.stack([cf.G, cf.G])
    a = th.delta_samples(f, thetas, Gs, torch.tensor([0.1, 0.2], dtype=D), 2, 5, gen, indices=idx)
    b0 = th.delta_samples(f, theta, cf.G, 0.1, 2, 5, gen, indices=idx[0])
    b1 = th.delta_samples(f, theta, cf.G, 0.2, 2, 5, gen, indices=idx[1])
    torch.testing.assert_close(a.samples, torch.cat([b0.samples, b1.samples]))
    A = torch.rand(2, 10, generator=gen, dtype=D)
    c = th.delta_samples(f, thetas, Gs, A, 2, 5, gen, indices=idx)
    for j in range(2):
        for k in range(5):
            sg = cf.G[idx[j, k]].mean(0)
            torch.testing.assert_close(c.samples[j, k], f((theta - A[j] * sg)[None])[0] - f(theta[None])[0])
    with pytest.raises(ValueError, match=">= 0"):
        th.delta_samples(f, thetas, Gs, -A, 2, 5, gen, indices=idx)


def test_segment_smoothness_on_a_quadratic_is_lambda_max(gen):
    X, y, theta = _ls_problem(gen, n=6, p=10)
    cf = th.least_squares(X, y, theta, 1.0)
    H = cf.H
    L = th.segment_smoothness(lambda pts: (lambda V: V @ H), torch.stack([theta, theta + 1]),
                              torch.stack([cf.G, th.least_squares(X, y, theta + 1, 1.0).G]), 0.1, 2, 3, gen, steps=10)
    torch.testing.assert_close(L, torch.linalg.eigvalsh(H)[-1].expand(2), rtol=1e-9, atol=1e-12)


def test_sphere_model_has_the_minibatch_mean_and_covariance(gen):
    n, p, m = 8, 5, 3
    G = torch.randn(n, p, generator=gen, dtype=D)
    g = th.sphere_model_grads(G, m, 200_000, gen)
    mu = G.mean(0)
    S = (G - mu).T @ (G - mu) / n
    torch.testing.assert_close(g.mean(0), mu, rtol=0, atol=0.01)
    torch.testing.assert_close(torch.cov(g.T, correction=0), S / m, rtol=0, atol=0.01)
    # every draw lies on the ellipsoid: ‖Σ^{-1/2}(g − μ)‖ = √(p/m) within the range of Σ (here rank p)
    w = torch.linalg.solve(torch.linalg.cholesky(S), (g[:100] - mu).T)
    torch.testing.assert_close(w.norm(dim=0), torch.full((100,), math.sqrt(p / m), dtype=D), rtol=1e-8, atol=0)


def test_logistic_mle_is_stationary(gen):
    X = torch.randn(200, 4, generator=gen, dtype=D)
    y = (torch.rand(200, generator=gen, dtype=D) < torch.sigmoid(X @ torch.tensor([1.0, -1, 0.5, 0], dtype=D))).to(D)
    th0 = th.logistic_mle(X, y)
    cf = th.logistic(X, y, th0)
    assert float(cf.mu.norm()) < 1e-12 and float(cf.M.trace()) > 0.01
    Xs = torch.randn(10, 20, generator=gen, dtype=D)
    with pytest.raises(ValueError, match="separable"):
        th.logistic_mle(Xs, (Xs[:, 0] > 0).to(D), iters=30)
