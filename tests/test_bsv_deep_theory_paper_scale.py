"""Keep the paper scale of the deep-linear theory chapter from rotting: build every paper-scale
configuration and run one cheap step of each computation on CPU."""

import math
from fractions import Fraction

import torch

from sgdbook import data
from sgdbook.papers.batch_size_variance import deeplinear as dl
from sgdbook.papers.batch_size_variance import linreg as lr
from sgdbook.papers.batch_size_variance.settings.deep_linear_theory import SETTINGS as DEEP_THEORY

DT = torch.float64


def test_deep_theory_paper_scale_one_step():
    cfg = DEEP_THEORY("paper")
    p, p1, p2 = cfg["dims"]
    assert (p, p1, p2) == (64, 256, 128) and cfg["exact_T"] == 3
    g = torch.Generator().manual_seed(0)
    W1 = torch.randn(p1, p, generator=g, dtype=DT) / math.sqrt(p)
    W2 = torch.randn(p2, p1, generator=g, dtype=DT) / math.sqrt(p1)
    Wb1 = torch.randn(p1, p, generator=g, dtype=DT) / math.sqrt(p)
    Wb2 = torch.randn(p2, p1, generator=g, dtype=DT) / math.sqrt(p1)
    # Eqs. (1)-(2) and Lemma 8 Monte Carlo: 2 runs at the largest configured batch size
    bmax = max(cfg["lemma8_b"])
    x = torch.randn(2, bmax, p, generator=g, dtype=DT)
    g1, g2 = dl.minibatch_grads(W1, W2, Wb1, Wb2, x)
    assert g1.shape == (2, p1, p) and g2.shape == (2, p2, p1)
    m1, s1, m2, s2 = dl.lemma8_monte_carlo(W1, W2, Wb1, Wb2, bmax, 2, g)
    e1, e2 = dl.conditional_sq_norms(W1, W2, Wb1, Wb2, bmax)
    assert torch.isfinite(m1 + m2 + e1 + e2)
    # Lemma 6/7 at the input dimension: exact m = 3, a few Monte Carlo draws
    A, B = torch.randn(p, p, generator=g, dtype=DT), torch.randn(p, p, generator=g, dtype=DT)
    E3, n3 = dl.chain_moment([A, B], [(0, 0)] * 3)
    assert n3 == 15 and torch.allclose(E3, dl.magnus_m3(A, B), atol=1e-9)
    mc, se = dl.chain_monte_carlo([A, B], [(0, 0)] * 3, 4, g)
    assert mc.shape == (p, p) and cfg["mc_wick"] >= 10**6
    # the exact scalar polynomials at t = exact_T, quadrature at every b, a tiny Monte Carlo
    net = dl.ScalarNet(*(Fraction(v) for v in cfg["scalar_net"]))
    tr = dl.scalar_trajectory(net, cfg["exact_T"])
    P = dl.scalar_polys(tr, cfg["exact_T"])
    assert dl.poly_degree(P.var_g1) == 76 and P.var_g1[0] == 0
    for b in cfg["quad_b"]:
        q = dl.scalar_quadrature(net, cfg["exact_T"], b)
        assert math.isclose(q["var_g1"][-1], float(dl.poly_eval(P.var_g1, b)), rel_tol=1e-8)
    mcs = dl.scalar_monte_carlo(net, cfg["scalar_mc_T"], max(cfg["scalar_mc_b"]), 4, g)
    assert len(mcs["var_g1"]) == cfg["scalar_mc_T"] + 1
    assert not dl.increases_on(P.var_g1, range(1, 50))
    assert dl.b0_derivative(P.var_g1) < cfg["mono_b_max"]
    # one random net of the b0 search
    rp = dl.scalar_polys(dl.scalar_trajectory(dl.ScalarNet(Fraction(3, 8), Fraction(-5, 8), Fraction(1, 2), net.lr_c), cfg["b0_search_T"]), cfg["b0_search_T"])
    dl.b0_main_text(rp.var_g1)
    # the Section-3 remark: exact linear-regression moments, two steps of the configured run
    dia = data.diabetes()
    xd, yd = lr.standardise(dia.x, dia.y, scale_y=True)
    PD = lr.problem(xd, yd)
    qd = lr.moments(PD, torch.zeros(PD.p, dtype=DT), lr.harmonic_schedule(0.5, cfg["footnote_steps"])[:2], list(range(1, PD.n + 1)))
    assert qd.var_g.shape == (3, PD.n) and cfg["footnote_steps"] == 2000
