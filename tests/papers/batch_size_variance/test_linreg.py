"""The exact linear-regression moment recursion against exhaustive enumeration and Monte Carlo."""

import math
from fractions import Fraction

import pytest
import torch

from sgdbook.papers.batch_size_variance import linreg as lr


def _toy(n=5, p=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    w0 = torch.randn(p, generator=g, dtype=torch.float64)
    return lr.problem(x, y), w0


@pytest.mark.parametrize("T", [0, 1, 2])
def test_recursion_equals_enumeration(T):
    P, w0 = _toy()
    alphas = torch.tensor([0.3, 0.2, 0.15], dtype=torch.float64)[:T]
    g = torch.Generator().manual_seed(1)
    Bm = torch.randn(P.p, P.p, generator=g, dtype=torch.float64)
    bs = list(range(1, P.n + 1))
    q = lr.moments(P, w0, alphas, bs, B=Bm)
    mus, Ss = lr.second_moments(P, w0, alphas, bs)
    for j, b in enumerate(bs):
        ws, subsets = lr.enumerate_paths(P, w0, alphas.tolist(), b)
        # E[w_T], E[w_T w_Tᵀ]
        assert torch.allclose(mus[T, j, : P.p], ws.mean(0), atol=1e-12)
        assert torch.allclose(Ss[T, j, : P.p, : P.p], ws.T @ ws / len(ws), atol=1e-12)
        # g_T over every (path, batch) pair
        r = ws @ P.x.T - P.y
        gs = torch.stack([(r[:, s, None] * P.x[s]).mean(1) for s in subsets], 1).reshape(-1, P.p) @ Bm.T
        var_g = ((gs - gs.mean(0)) ** 2).sum(-1).mean()
        full = (r @ P.x / P.n) @ Bm.T
        var_grad = ((full - full.mean(0)) ** 2).sum(-1).mean()
        assert math.isclose(float(q.var_g[T, j]), float(var_g), rel_tol=1e-10, abs_tol=1e-13)
        assert math.isclose(float(q.var_grad[T, j]), float(var_grad), rel_tol=1e-10, abs_tol=1e-13)
        assert math.isclose(float(q.loss[T, j]), float((r**2).mean() / 2), rel_tol=1e-12)


def test_combination_and_pair_sums_match_enumeration():
    P, w0 = _toy(n=5, p=2, seed=3)
    alphas = torch.tensor([0.25, 0.2], dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    A = torch.randn(P.n, P.p, P.p, generator=g, dtype=torch.float64)
    A0 = torch.randn(P.p, P.p, generator=g, dtype=torch.float64)
    _, Ss = lr.second_moments(P, w0, alphas, [2])
    ws, _ = lr.enumerate_paths(P, w0, alphas.tolist(), 2)
    r = ws @ P.x.T - P.y
    grads = r[..., None] * P.x  # [N, n, p]
    comb = torch.einsum("nij,Nnj->Ni", A, grads)
    assert math.isclose(float(lr.combination_sq_norm(P, Ss[2, 0], A)), float((comb**2).sum(-1).mean()), rel_tol=1e-11)
    u = grads @ A0.T
    for sign in (-1, 1):
        tot = sum(((u[:, k] + sign * u[:, j]) ** 2).sum(-1).mean() for k in range(P.n) for j in range(P.n) if k != j)
        assert math.isclose(float(lr.pair_sum(P, Ss[2, 0], A0, sign)), float(tot), rel_tol=1e-11)


def test_polynomial_coefficients_reproduce_var_g():
    P, w0 = _toy(n=9, p=3, seed=4)
    alphas = torch.full((4,), 0.2, dtype=torch.float64)
    bs = list(range(1, P.n + 1))
    q = lr.moments(P, w0, alphas, bs)
    coefs = lr.var_g_polynomial(P, w0, alphas, keep=range(5))
    c = lr.c_b(P.n, bs)
    for t, beta in coefs.items():
        assert len(beta) == t + 2
        val = sum(beta[k] * c**k for k in range(len(beta)))
        assert torch.allclose(val, q.var_g[t], rtol=1e-10, atol=1e-14)


def test_monte_carlo_agrees():
    P, w0 = _toy(n=12, p=3, seed=5)
    alphas = lr.harmonic_schedule(0.3, 20)
    q = lr.moments(P, w0, alphas, [3])
    mc = lr.monte_carlo(P, w0, alphas, 3, 20000, torch.Generator().manual_seed(0))
    z = (mc.var_g[1:] - q.var_g[1:, 0]) / mc.var_g_se[1:]
    assert z.abs().max() < 5
    z = (mc.var_grad[1:] - q.var_grad[1:, 0]) / mc.var_grad_se[1:]
    assert z.abs().max() < 5
    assert ((mc.loss[1:] - q.loss[1:, 0]).abs() / mc.loss_se[1:]).max() < 5


def test_batch_n_is_gradient_descent():
    P, w0 = _toy(n=6, p=2, seed=6)
    alphas = torch.full((5,), 0.2, dtype=torch.float64)
    q = lr.moments(P, w0, alphas, [P.n])
    assert q.var_g.abs().max() < 1e-12 and q.var_grad.abs().max() < 1e-12
    assert float(lr.c_b(P.n, [P.n])[0]) == 0.0 and float(lr.c_b(P.n, [1])[0]) == 1.0


def test_rational_recursion_matches_float_and_has_degree_t_plus_1():
    x = [[Fraction(1), Fraction(2)], [Fraction(-1), Fraction(1)], [Fraction(0), Fraction(-2)], [Fraction(3), Fraction(1)], [Fraction(1), Fraction(-1)]]
    y = [Fraction(1), Fraction(0), Fraction(2), Fraction(-1), Fraction(1, 2)]
    w0 = [Fraction(1), Fraction(-1)]
    alphas = [Fraction(1, 5), Fraction(1, 7)]
    vals = {b: lr.var_g_rational(x, y, w0, alphas, b) for b in range(1, 6)}
    P = lr.problem(torch.tensor([[float(v) for v in r] for r in x]), torch.tensor([float(v) for v in y]))
    q = lr.moments(P, torch.tensor([float(v) for v in w0], dtype=torch.float64), torch.tensor([float(a) for a in alphas], dtype=torch.float64), range(1, 6))
    for b in range(1, 6):
        for t in range(3):
            assert math.isclose(float(vals[b][t]), float(q.var_g[t, b - 1]), rel_tol=1e-12, abs_tol=1e-12)
    for t in range(3):
        cs = [Fraction(5 - b, b * 4) for b in range(1, 6)]
        assert lr.exact_degree(cs, [vals[b][t] for b in range(1, 6)]) == t + 1


def test_chapter_checks_lemma1_lemma2_and_proof_identities():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    P = lr.problem(x, y)
    w0 = torch.randn(3, generator=g, dtype=torch.float64)
    A = torch.randn(3, 3, generator=g, dtype=torch.float64)
    assert max(lr.lemma1_errors(P, A, w0)) < 1e-10
    rows = lr.lemma2_table(P, w0, torch.randn(6, 3, 3, generator=g, dtype=torch.float64), [0.3, 0.2])
    assert len(rows) == 6
    for b, lhs, rhs in rows:
        assert abs(rhs["corrected (-A, 1/(2n^2))"] - lhs) <= 1e-10 * abs(lhs)
    assert max(abs(r[2]["printed (+A, 1/n^2)"] - r[1]) / abs(r[1]) for r in rows[:-1]) > 1e-3
    errs = lr.proof_identity_errors(P, w0, lr.harmonic_schedule(0.3, 4), A, 3)
    assert errs["thm6"]["corrected"] < 1e-9 and errs["thm7"]["corrected"] < 1e-9
    assert errs["thm6"]["printed"] > 1e-3 and errs["thm7"]["printed"] > 1e-3
    assert lr.worst_increase(torch.tensor([[3.0, 2.0, 2.0], [1.0, 0.5, 0.6]])) == pytest.approx(0.1)
