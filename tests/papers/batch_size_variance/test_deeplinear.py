"""Brute-force checks of sgdbook.deeplinear (two-layer linear teacher–student theory)."""

import math
from fractions import Fraction

import pytest
import torch
from scipy import stats

from sgdbook.papers.batch_size_variance import deeplinear as dl

DT = torch.float64


def _mats(p=3, p1=4, p2=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=DT)
    return r(p1, p), r(p2, p1), r(p1, p), r(p2, p1), g


def test_minibatch_grads_match_autograd_per_run():
    W1, W2, Wb1, Wb2, g = _mats()
    x = torch.randn(5, 7, 3, generator=g, dtype=DT)
    g1, g2 = dl.minibatch_grads(W1, W2, Wb1, Wb2, x)
    for r in range(5):  # a plain loop over runs: the brute-force reference
        A1, A2 = W1.clone().requires_grad_(), W2.clone().requires_grad_()
        dl.minibatch_loss(A1, A2, Wb1, Wb2, x[r]).backward()
        assert torch.allclose(g1[r], A1.grad, atol=1e-12, rtol=0)
        assert torch.allclose(g2[r], A2.grad, atol=1e-12, rtol=0)


def test_population_grads_are_grads_of_half_frobenius():
    W1, W2, Wb1, Wb2, _ = _mats()
    A1, A2 = W1.clone().requires_grad_(), W2.clone().requires_grad_()
    (0.5 * (dl.gap(A1, A2, Wb1, Wb2) ** 2).sum()).backward()
    G1, G2 = dl.population_grads(W1, W2, Wb1, Wb2)
    assert torch.allclose(G1, A1.grad, atol=1e-12) and torch.allclose(G2, A2.grad, atol=1e-12)


def test_shape_errors():
    W1, W2, Wb1, Wb2, _ = _mats()
    with pytest.raises(ValueError):
        dl.gap(W1, W2.T, Wb1, Wb2)
    with pytest.raises(ValueError):
        dl.minibatch_loss(W1, W2, Wb1, Wb2, torch.zeros(3, dtype=DT))
    with pytest.raises(ValueError):
        dl.conditional_sq_norms(W1, W2, Wb1, Wb2, 0)


def test_matchings_and_partitions_counts():
    for k in range(1, 6):
        ms = list(dl.perfect_matchings(range(2 * k)))
        assert len(ms) == math.prod(range(1, 2 * k, 2))
        assert len({tuple(sorted(tuple(sorted(p)) for p in m)) for m in ms}) == len(ms)
    bell = [1, 1, 2, 5, 15, 52]
    for n in range(6):
        assert len(list(dl.set_partitions(range(n)))) == bell[n]
    with pytest.raises(ValueError):
        list(dl.perfect_matchings(range(3)))


def test_chain_moment_scalar_gaussian_moments():
    one = torch.ones(1, 1, dtype=DT)
    for m in range(1, 6):  # E[x^{2m}] = (2m−1)!!
        M, c = dl.chain_moment([one] * (m - 1), [(0, 0)] * m, p=1)
        assert c == math.prod(range(1, 2 * m, 2)) and float(M) == c


def test_chain_moment_closed_forms_and_examples():
    W1, _, _, _, g = _mats()
    A = torch.randn(3, 3, generator=g, dtype=DT)
    B = torch.randn(3, 3, generator=g, dtype=DT)
    eye = torch.eye(3, dtype=DT)
    assert torch.allclose(dl.chain_moment([A], [(0, 0), (0, 0)])[0], dl.magnus_m2(A), atol=1e-12)
    M3, c3 = dl.chain_moment([A, B], [(0, 0)] * 3)
    assert c3 == 15 and torch.allclose(M3, dl.magnus_m3(A, B), atol=1e-12)
    assert torch.allclose(dl.chain_moment([A], [(0, 1), (1, 0)])[0], torch.trace(A) * eye, atol=1e-12)
    assert torch.allclose(dl.chain_moment([A], [(0, 0), (1, 1)])[0], A, atol=1e-12)
    M, c = dl.chain_moment([A, B], [(0, 1), (0, 0), (0, 0)])
    assert c == 0 and float(M.abs().max()) == 0.0


def test_chain_moment_against_monte_carlo():
    g = torch.Generator().manual_seed(3)
    A = torch.randn(2, 2, generator=g, dtype=DT)
    B = torch.randn(2, 2, generator=g, dtype=DT)
    idx = [(0, 1), (1, 0), (0, 0)]
    exact, _ = dl.chain_moment([A, B], idx)
    mc, se = dl.chain_monte_carlo([A, B], idx, 200_000, g)
    z = ((mc - exact) / se).abs().max()
    assert z < stats.norm.isf(0.001 / 8)


def test_minibatch_trace_poly_scalar_and_monte_carlo():
    # p = 1: tr(Σ̂a_1 ⋯ Σ̂a_d) = (Π a) s^d with E[s^d] = Π_{j<d}(1 + 2j/b)
    a = [torch.full((1, 1), v, dtype=DT) for v in (0.5, -2.0, 3.0)]
    coef = dl.minibatch_trace_poly(a)
    ref = [float(c) * (0.5 * -2.0 * 3.0) for c in dl.chi2_moment_poly(3)]
    assert torch.allclose(coef, torch.tensor(ref, dtype=DT), atol=1e-12)
    g = torch.Generator().manual_seed(4)
    A = torch.randn(3, 3, generator=g, dtype=DT)
    B = torch.randn(3, 3, generator=g, dtype=DT)
    co = dl.minibatch_trace_poly([A, B, A])
    for b in (1, 5):
        m, s = dl.minibatch_trace_monte_carlo([A, B, A], b, 100_000, g)
        v = sum(co[k] / b**k for k in range(3))
        assert abs(float((m - v) / s)) < 4.5


def test_lemma8_closed_forms_against_pairings_and_monte_carlo():
    W1, W2, Wb1, Wb2, g = _mats()
    D = dl.gap(W1, W2, Wb1, Wb2)
    K = W2.T @ D
    eye = torch.eye(3, dtype=DT)
    c1 = dl.minibatch_trace_poly([K.T @ K, eye])  # ‖KΣ̂‖² = tr(Σ̂ KᵀK Σ̂ I)
    c2 = dl.minibatch_trace_poly([D.T @ D, W1.T @ W1])  # ‖ΔΣ̂W_1ᵀ‖²
    for b in (1, 2, 7):
        e1, e2 = dl.conditional_sq_norms(W1, W2, Wb1, Wb2, b)
        assert math.isclose(float(e1), float(c1[0] + c1[1] / b), rel_tol=1e-12)
        assert math.isclose(float(e2), float(c2[0] + c2[1] / b), rel_tol=1e-12)
        m1, s1, m2, s2 = dl.lemma8_monte_carlo(W1, W2, Wb1, Wb2, b, 50_000, g)
        assert abs(float((m1 - e1) / s1)) < 4.5 and abs(float((m2 - e2) / s2)) < 4.5
    v1, v2 = dl.conditional_variances(W1, W2, Wb1, Wb2, 4)
    assert math.isclose(float(v1), 4 / 4 * float((K**2).sum()), rel_tol=1e-12)


def test_words_degrees_rotation_and_substitution():
    w = dl.word("W2' W2 W1 x x' Wb1'")
    assert dl.degrees(w, ["W1", "W2", "x"]) == {"W1": 1, "W2": 2, "x": 2}
    assert dl.total_degree(w, ["W1", "W2"]) == 3
    with pytest.raises(ValueError):
        dl.word("")
    g = torch.Generator().manual_seed(5)
    env = {k: torch.randn(3, 3, generator=g, dtype=DT) for k in ("A", "B", "C")}
    env["u"] = torch.randn(3, 1, generator=g, dtype=DT)
    env["v"] = torch.randn(3, 1, generator=g, dtype=DT)
    term = dl.word("A B u v' C A'")
    v, Mp, u = dl.rotate_trace(term, 2, "u", "v")
    lhs = torch.trace(dl.evaluate(term, env))
    rhs = (env[v].T @ dl.evaluate(Mp, env) @ env[u]).squeeze()
    assert torch.allclose(lhs, rhs, atol=1e-12)
    with pytest.raises(ValueError):
        dl.rotate_trace(term, 0, "u", "v")
    # Lemma 9: W → Wp − α G, every occurrence: 2^{Σd} terms that add up to the original
    env.update({"Wp": torch.randn(3, 3, generator=g, dtype=DT), "G": torch.randn(3, 3, generator=g, dtype=DT)})
    alpha = 0.3
    env["W"] = env["Wp"] - alpha * env["G"]
    traces, m0 = [dl.word("W A W'"), dl.word("W")], dl.word("W' B")
    terms = dl.expand_substitution(traces, m0, {"W": [(1.0, "Wp"), (-alpha, "G")]})
    assert len(terms) == 2**4
    total = sum(c * dl.evaluate_trace_product(t, m, env) for c, t, m in terms)
    assert torch.allclose(total, dl.evaluate_trace_product(traces, m0, env), atol=1e-12)


def test_chi2_moments():
    for k in range(6):
        for b in (1, 3, 10):
            exact = Fraction(math.prod(b + 2 * j for j in range(k)), b**k)  # E[(χ²_b)^k] = b(b+2)⋯(b+2k−2)
            assert dl.poly_eval(dl.chi2_moment_poly(k), b) == exact
            assert math.isclose(float(exact), stats.chi2(b).moment(k) / b**k, rel_tol=1e-6)
    with pytest.raises(ValueError):
        dl.chi2_moment_poly(-1)


def _net():
    return dl.ScalarNet(Fraction(1, 2), Fraction(1, 3), Fraction(1), Fraction(1, 4))


def test_scalar_polys_against_quadrature_and_exhaustive_t1():
    net = _net()
    tr = dl.scalar_trajectory(net, 2)
    for b in (1, 3):
        q = dl.scalar_quadrature(net, 2, b)
        for t in range(3):
            P = dl.scalar_polys(tr, t)
            assert math.isclose(float(dl.poly_eval(P.var_g1, b)), q["var_g1"][t], rel_tol=1e-9)
            assert math.isclose(float(dl.poly_eval(P.var_g2, b)), q["var_g2"][t], rel_tol=1e-9)
            assert math.isclose(float(dl.poly_eval(P.loss2, b)), q["loss2"][t], rel_tol=1e-9)
    # t = 1 by hand: the step is linear in s_0, so E[K_1^2] is a polynomial in s_0 of degree 6
    P1 = dl.scalar_polys(tr, 1)
    a = net.alpha(0)
    w1, w2, c = net.w1, net.w2, net.teacher
    D0 = w1 * w2 - c
    for b in (1, 2, 5):
        mom = [dl.poly_eval(dl.chi2_moment_poly(k), b) for k in range(7)]

        def expect(f):  # f: coefficients in s_0 of a polynomial, exact expectation
            return sum(cf * mom[k] for k, cf in enumerate(f))

        W1 = [w1, -a * w2 * D0]
        W2 = [w2, -a * D0 * w1]
        D = dl.poly_add(dl.poly_mul(W1, W2), [c], Fraction(-1))
        K = dl.poly_mul(W2, D)
        var = (1 + Fraction(2, b)) * expect(dl.poly_mul(K, K)) - expect(K) ** 2
        assert dl.poly_eval(P1.var_g1, b) == var


def test_scalar_degrees_and_no_constant_term():
    tr = dl.scalar_trajectory(_net(), 2)
    degs = [dl.poly_degree(dl.scalar_polys(tr, t).var_g1) for t in range(3)]
    assert degs == [1, 6, 23]
    for t in range(3):
        P = dl.scalar_polys(tr, t)
        assert P.var_g1[0] == 0 and P.var_g2[0] == 0
        # the proof's display = truth − (1 − u) var(K)
        varK = dl.poly_add(P.EK2, dl.poly_mul(P.EK, P.EK), Fraction(-1))
        corr = dl.poly_mul([Fraction(1), Fraction(-1)], varK)
        assert all(v == 0 for v in dl.poly_add(P.display_g1, dl.poly_add(P.var_g1, corr, Fraction(-1)), Fraction(-1)))


def test_scalar_monte_carlo_matches():
    net = _net()
    tr = dl.scalar_trajectory(net, 2)
    g = torch.Generator().manual_seed(6)
    mc = dl.scalar_monte_carlo(net, 2, 16, 100_000, g)
    for t in range(3):
        P = dl.scalar_polys(tr, t)
        assert abs(mc["var_g1"][t] - float(dl.poly_eval(P.var_g1, 16))) < 4.5 * mc["var_g1_se"][t]
    with pytest.raises(ValueError):
        dl.scalar_monte_carlo(net, 2, 0, 10, g)


def test_b0_rules():
    toy = [0, 1, -3, 2]  # (b − 1)(b − 2)/b³
    assert abs(dl.b0_main_text(toy) - 2) < 1e-8
    assert abs(dl.b0_derivative(toy) - (3 + math.sqrt(3))) < 1e-8
    assert dl.increases_on(toy, range(1, 8)) == [2, 3, 4]  # f(1) = f(2) = 0, then up to b = 5
    assert dl.b0_main_text([0, 1]) == -math.inf
    with pytest.raises(ValueError):
        dl.b0_main_text([1, 1])
    # beyond the derivative root the function never increases (real b: dense grid)
    beta = [Fraction(0), Fraction(1), Fraction(-7), Fraction(10), Fraction(3)]
    b0 = dl.b0_derivative(beta)
    grid = [b0 + 0.01 * k for k in range(1, 2000)]
    vals = [sum(float(beta[k]) / x**k for k in range(1, 5)) for x in grid]
    assert all(v1 >= v2 for v1, v2 in zip(vals, vals[1:]))


@pytest.mark.slow
def test_gradient_monte_carlo_chunked_matches_closed_forms():
    W1, W2, Wb1, Wb2, g = _mats()
    G1, G2 = dl.population_grads(W1, W2, Wb1, Wb2)
    K = W2.T @ dl.gap(W1, W2, Wb1, Wb2)
    eye = torch.eye(3, dtype=DT)
    c4 = dl.minibatch_trace_poly([eye, K.T @ K, eye, K.T @ K])
    for chunk in (None, 7):
        r = dl.gradient_monte_carlo(W1, W2, Wb1, Wb2, 3, 40_000, g, chunk=chunk)
        z = torch.cat([((r["g1"][0] - G1) / r["g1"][1]).flatten(), ((r["g2"][0] - G2) / r["g2"][1]).flatten()])
        assert z.abs().max() < stats.norm.isf(0.001 / (2 * z.numel()))
        e1, e2 = dl.conditional_sq_norms(W1, W2, Wb1, Wb2, 3)
        assert abs(float((r["sq1"][0] - e1) / r["sq1"][1])) < 4.5 and abs(float((r["sq2"][0] - e2) / r["sq2"][1])) < 4.5
        pred = sum(float(c4[k]) / 3**k for k in range(4))
        assert abs(float((r["quart1"][0] - pred) / r["quart1"][1])) < 4.5
    A = torch.randn(3, 3, generator=g, dtype=DT)
    m1, s1 = dl.chain_monte_carlo([A], [(0, 0), (0, 0)], 30_000, g, chunk=1000)
    assert ((m1 - dl.magnus_m2(A)) / s1).abs().max() < 4.5
    with pytest.raises(ValueError):
        dl.gradient_monte_carlo(W1, W2, Wb1, Wb2, 3, 1, g)


def test_scalar_coefficient_degrees():
    net = _net()
    # t = 0: E[g_{0,1}^2] = (1 + 2u) (w2 (w1 w2 − c))^2, degree 6 in (w1, w2) for both powers of u
    assert dl.scalar_coefficient_degrees(net, 0, g1=2) == [6, 6]
    # t = 1: each iterate has degree 3 in the initial weights, so K_1^2 has degree 18
    d = dl.scalar_coefficient_degrees(net, 1, g1=2)
    assert max(d) == 18 and len(d) - 1 == dl.poly_degree(dl.scalar_moment(dl.scalar_trajectory(net, 1), 1, g1=2))


def test_chapter_checks_of_theorems_3_to_5():
    net = dl.ScalarNet(Fraction(1, 2), Fraction(1, 3), Fraction(1), Fraction(1, 4))
    tr = dl.scalar_trajectory(net, 2)
    rows3, rows2 = dl.degree_table(tr, 2)
    assert all(q <= bound for *_, q, bound in rows3) and all(q <= bound for *_, q, bound in rows2)
    assert [q for t, m, q, _ in rows3 if m == (2, 0, 0, 0)] == [1, 6, 23]
    assert dl.thm3_bound(1, 2, 0) == 8
    assert min(dl.term_degree_slacks(net, 1)) >= 0
    assert all(dl.thm4_decomposition_holds(dl.scalar_polys(tr, t)) for t in range(3))
    res = dl.b0_search(net, 3, 1, torch.Generator().manual_seed(0))
    assert res["beta1_negative"] == 0 and len(res["b0_derivative"]) >= 1
