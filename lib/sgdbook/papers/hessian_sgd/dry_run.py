"""Dry runs of the hessian-sgd chapters: the `paper` scale built and stepped once.

One function per notebook ``NN_<topic>.ipynb``: ``<topic>(cfg, device)`` takes the notebook's
``SETTINGS("paper")``, asserts the paper's own values (Table 2, 10,000 runs), builds every
paper-scale configuration (the Gauss-k data, the 50→10→30→k nets with their parameter counts) and
runs ONE step of each computation on ``device``. Run counts and numbers of draws only set a batch
dimension: every configuration runs with :data:`FEW` runs and at most :data:`DRAWS` draws (the
paper's counts are asserted), so that ``tests/test_paper_scale.py`` stays quick on the CPU.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from sgdbook import ensemble
from sgdbook.models import count_parameters

from . import pacbayes, setup, stacked_mlp, steps, theory

DT = torch.float64
Settings = Mapping[str, Any]
#: Minibatch draws per point in a dry run (the paper-scale count only sets a batch dimension).
DRAWS = 32
#: Runs per configuration in a dry run.
FEW = 3


def _stack(setting: str, runs: int, device, gen, n_test: int = 0):
    """The data, the net (parameter count asserted against Table 2) and ``runs`` initial points."""
    t = setup.TABLE2[setting]
    ds = setup.make_data(setting, n_test=n_test, dtype=DT, device=device)
    assert ds.x.shape == (setup.N_TRAIN, setup.DIM), ds.x.shape
    net = setup.gauss_net(t["k"], DT, device)
    assert count_parameters(net) == t["p"], (setting, count_parameters(net))
    base = net.to("meta")
    params = setup.init_params(base, runs, gen, dtype=DT, device=device)
    return t, ds, base, params


def _one_sgd_step(base, params, ds, lr, m, gen):
    res = ensemble.ensemble_sgd(base, params, ds.x, ds.y, F.cross_entropy, lr=lr, batch_size=m, steps=1,
                                generator=gen, eval_every=1)
    assert torch.isfinite(res.full_loss).all()
    return res


def _delta_step(base, params, ds, lr, m, draws, gen, points: int = 3):
    """Δ | θ at ``points`` runs (the quantile runs) with ``draws`` minibatches, and Theorem 1's terms."""
    layers = stacked_mlp.layers_from_params(base, {k: v[:points] for k, v in params.items()})
    theta = stacked_mlp.flatten(layers)
    G = stacked_mlp.per_example_grads(layers, ds.x, ds.y)

    def batched_loss(T):
        return stacked_mlp.losses(stacked_mlp.unflatten(T, layers), ds.x, ds.y).mean(1)

    d = theory.delta_samples(batched_loss, theta, G, lr, m, draws, gen)
    assert d.samples.shape == (points, draws) and torch.isfinite(d.samples).all()
    st = theory.SGStats.from_grads(G)
    t1 = theory.theorem1(st, lr, m, 1.0)
    assert torch.isfinite(t1.upper).all()
    return layers, G


def dynamics(cfg: Settings, device: torch.device) -> None:
    """Figs. 8–10, 18–20, 23, 24: every Table 2 setting at m = 5 and 50 with 10,000 runs, one SGD step;
    Δ | θ at the three quantile runs with the paper-scale number of draws."""
    from .settings.dynamics import DELTA_PANELS, PANELS

    assert cfg["runs_easy"] == cfg["runs_hard"] == cfg["runs_m50"] == setup.RUNS_PAPER and cfg["max_steps"] is None
    assert cfg["delta_draws"] >= DRAWS
    gen = torch.Generator().manual_seed(0)
    for i, (setting, m) in enumerate(PANELS):
        runs = cfg["runs_m50"] if m == 50 else (cfg["runs_easy"] if setup.TABLE2[setting]["label_noise"] == 0 else cfg["runs_hard"])
        assert runs == setup.RUNS_PAPER
        t, ds, base, params = _stack(setting, FEW, device, gen)
        res = _one_sgd_step(base, params, ds, t["lr"], m, gen)
        assert res.full_loss.shape == (2, FEW)
        if (setting, m) == DELTA_PANELS[0]:  # the same computation for every Δ panel
            _delta_step(base, res.params, ds, t["lr"], m, DRAWS, gen)


def deviation_bounds(cfg: Settings, device: torch.device) -> None:
    """Theorems 1–3, Corollaries 1–2, escape, ADAM: Gauss-10 (m = 5) at 10,000 runs, one step each;
    the L search (Lanczos) at the quantile runs; the exact corollary and escape problems; one step of
    every step rule."""
    from .settings.deviation_bounds import ADAM_RULES, BATCH

    assert cfg["runs"] == setup.RUNS_PAPER and cfg["max_steps"] is None
    gen = torch.Generator().manual_seed(0)
    for setting in ("gauss10-0", "gauss10-15"):
        t, ds, base, params = _stack(setting, FEW, device, gen)
        res = _one_sgd_step(base, params, ds, t["lr"], BATCH, gen)
        layers, G = _delta_step(base, res.params, ds, t["lr"], BATCH, min(cfg["draws"], DRAWS), gen)
        if setting == "gauss10-15":  # the L search: one Lanczos step at the points (same code for both settings)
            theta = stacked_mlp.flatten(layers)
            hvp = stacked_mlp.hvp_at_points(layers, ds.x, ds.y, theta)
            lo, hi = theory.extreme_eigenvalues(hvp, theta.shape[0], theta.shape[1], 1, gen, dtype=DT)
            assert torch.isfinite(lo).all() and torch.isfinite(hi).all()
    # Corollaries 1–2 at paper-like sizes (n = 100 examples, p = 1,150), one point each
    n, p = cfg["cor_n"], cfg["cor_p"]
    X = torch.randn(n, p, generator=gen, dtype=DT).to(device)
    y = torch.randn(n, generator=gen, dtype=DT).to(device)
    th0 = torch.zeros(p, dtype=DT, device=device)
    c1 = theory.corollary1(X, y, th0, 1.0, cfg["cor_batch"])
    assert c1.exact_mean <= c1.bound_corrected
    c2 = theory.corollary2(X, (y > 0).to(DT), th0, cfg["cor_batch"])
    assert c2.exact_mean <= c2.bound and c2.minibatches == n ** cfg["cor_batch"]
    # escape problems (n > p)
    Xe = torch.randn(cfg["escape_n"], cfg["escape_p"], generator=gen, dtype=DT).to(device)
    ye = torch.randn(cfg["escape_n"], generator=gen, dtype=DT).to(device)
    theory.least_squares(Xe, ye, torch.linalg.lstsq(Xe, ye[:, None]).solution[:, 0], 1.0)
    # one step of every step rule at the paper's run counts (Theorem 2's runs are plain SGD)
    t, ds, base, params = _stack("gauss10-15", FEW, device, gen)
    layers = stacked_mlp.layers_from_params(base, params)
    for rule in ("adaptive", "precond", *ADAM_RULES):
        r = steps.run_rule(layers, ds.x, ds.y, rule, steps=1, batch_size=BATCH, generator=gen, lr=t["lr"], L=10.0)
        assert torch.isfinite(r.loss).all()
    assert cfg["thm2_inits"] * cfg["thm2_runs_per_init"] <= cfg["runs"]


def generalization(cfg: Settings, device: torch.device) -> None:
    """Figs. 11 and 25: Gauss-10, 0 % / 15 %, m = 5 / 50, 10,000 runs each, one SGD step; the exact
    Hessian diagonal, the bound's terms on the prior grid, the Gibbs errors on the paper-scale test
    set (for a few runs: the draws only set a batch dimension) and the α-scale map."""
    from .settings.generalization import ALPHAS, DELTA, PANELS, PRIOR_SIGMA, SIGMA_GRID

    assert cfg["runs_m5"] == cfg["runs_m50"] == setup.RUNS_PAPER and cfg["max_steps"] is None
    gen = torch.Generator().manual_seed(0)
    for setting, m in PANELS:
        runs = cfg["runs_m5"] if m == 5 else cfg["runs_m50"]
        assert runs == setup.RUNS_PAPER
        t, ds, base, params = _stack(setting, FEW, device, gen, n_test=cfg["n_test"])
        assert ds.x_test.shape[0] == cfg["n_test"]
        res = _one_sgd_step(base, params, ds, t["lr"], m, gen)
        layers = stacked_mlp.layers_from_params(base, res.params)
        h = stacked_mlp.hessian_diag(layers, ds.x, ds.y)
        theta = stacked_mlp.flatten(layers)
        theta0 = stacked_mlp.flatten(stacked_mlp.layers_from_params(base, params))
        for s in SIGMA_GRID:
            bt = pacbayes.bound_terms(theta, theta0, h, s, ds.x.shape[0], DELTA, len(SIGMA_GRID))
            assert bool((2 * bt.kl <= bt.effective_curvature + bt.frobenius + 1e-9).all())
        few = slice(0, 3)

        def err(T, x=ds.x_test, y=ds.y_test_noisy):
            return (stacked_mlp.forward(stacked_mlp.unflatten(T, layers), x).argmax(-1) != y).to(DT).mean(1)

        prec = pacbayes.posterior_precision(h[few], PRIOR_SIGMA)
        draws = min(cfg["gibbs_draws"], 4)  # the posterior draws only set a batch dimension
        ge = pacbayes.gibbs_error(err, theta[few], prec, draws, gen)
        assert ge.per_draw.shape == (3, draws)
        scaled = pacbayes.alpha_scale([(W[few], b[few]) for W, b in layers], ALPHAS)
        torch.testing.assert_close(stacked_mlp.forward(scaled, ds.x), stacked_mlp.forward([(W[few], b[few]) for W, b in layers], ds.x))


# --------------------------------------------------------------------- H17a's chapters (01, 02, 03, 07)


def _pairs():
    return [(s, m) for s in setup.SETTINGS for m in setup.BATCH_SIZES]


def decomposition(cfg: Settings, device: torch.device) -> None:
    """Table 2 as printed and as run (10,000 runs, one SGD step; the largest setting at full size),
    Proposition 1 at one point with the direct H_p, a chunk of the n^m enumeration (Eqs. 8, 26),
    Table 1 at the paper-like sizes, and one product of each population / finite-sample residual at
    the largest support and sample size."""
    from sgdbook import curvature, gradients
    from sgdbook.functional import materialize

    from . import decomposition as dc

    assert cfg["literal_runs"] == cfg["dev_runs"] == setup.RUNS_PAPER and cfg["literal_steps_cap"] >= 10_000
    gen = torch.Generator().manual_seed(0)
    for setting, m in _pairs():
        t = setup.TABLE2[setting]
        for literal in (True, False):
            runs = setup.RUNS_PAPER if (setting, m, literal) == ("gauss10-15", 50, True) else FEW
            ds = setup.make_data(setting, literal=literal, dtype=DT, device=device)
            base = setup.gauss_net(t["k"], DT, device)
            assert count_parameters(base) == t["p"]
            base = base.to("meta")
            params = setup.init_params(base, runs, gen, literal=literal, dtype=DT, device=device)
            res = ensemble.ensemble_sgd(base, params, ds.x, ds.y, F.cross_entropy, lr=t["lr"], batch_size=m, steps=1,
                                        generator=gen, eval_every=1, snapshot_at=[0], on_nonfinite="freeze")
            assert res.diverged_at.shape == (runs,) and setup.dead_layers(base, {k: v[:FEW] for k, v in res.params.items()}, ds.x).shape == (FEW, 2)
    model = materialize(base, res.params, 0)
    H = curvature.stacked_hessians(base, {k: v[:1] for k, v in res.params.items()}, ds.x, ds.y)[0]
    Hp = curvature.residual_hessian(model, F.cross_entropy, ds.x, ds.y, method="shifted")
    G = gradients.per_example_grads(model, F.cross_entropy, ds.x, ds.y)
    assert torch.linalg.matrix_norm(H - (G.T @ G / ds.x.shape[0] - Hp)) <= 1e-8 * torch.linalg.matrix_norm(Hp)
    idx = gradients.all_minibatches(cfg["enum_n"], cfg["enum_m"], replacement=True, device=device)
    assert idx.shape == (cfg["enum_n"] ** cfg["enum_m"], cfg["enum_m"])
    B = gradients.minibatch_grads(model, F.cross_entropy, ds.x, ds.y, idx[:256])
    assert B.shape == (256, H.shape[0])
    X = torch.randn(cfg["ls_n"], cfg["ls_p"], generator=gen, dtype=DT).to(device)
    th = torch.randn(cfg["ls_p"], generator=gen, dtype=DT).to(device)
    dc.least_squares_table1(X, X @ th, th, 1.0)
    dc.logistic_table1(X, (X @ th > 0).to(DT), th)
    support = setup.make_data("gauss10-0", dtype=DT, device=device).x[: min(cfg["support"], setup.N_TRAIN)]
    xs = support[torch.randint(0, support.shape[0], (max(cfg["sample_sizes"]),), generator=gen).to(device)]
    ys = dc.sample_from_model(model, xs, gen)
    V = torch.randn(1, H.shape[0], generator=gen, dtype=DT).to(device)  # one of the cfg["probes"] products
    assert torch.isfinite(curvature.residual_hvp(model, F.cross_entropy, xs, ys).batch(V)).all()


def spectra_alignment(cfg: Settings, device: torch.device) -> None:
    """Figs. 1, 2, 12–15: every Table 2 setting at m = 5 and 50 with 1,000 runs (the largest at full
    size), one SGD step with snapshots; dense spectra and the top-q Lanczos/Gram eigenspaces of a few runs."""
    from sgdbook import curvature, gradients
    from sgdbook.functional import materialize

    assert cfg["runs"] >= 1000 and cfg["spectrum_runs"] >= 1000 and cfg["steps_cap"] >= 10_000
    gen = torch.Generator().manual_seed(0)
    for setting, m in _pairs():
        t = setup.TABLE2[setting]
        runs = cfg["runs"] if (setting, m) == ("gauss10-15", 50) else FEW
        t, ds, base, params = _stack(setting, runs, device, gen)
        res = ensemble.ensemble_sgd(base, params, ds.x, ds.y, F.cross_entropy, lr=t["lr"], batch_size=m, steps=1,
                                    generator=gen, snapshot_at=[0, 1])
        P = {k: v[:2] for k, v in res.snapshot(1).items()}
        H = curvature.stacked_hessians(base, P, ds.x, ds.y)
        G = gradients.stacked_per_example_grads(base, P, ds.x, ds.y)
        ev = torch.linalg.eigvalsh(G.mT @ G / ds.x.shape[0] - H)
        q = 15 if t["k"] == 10 else 5
        lam, V = gradients.second_moment_top(G, q)
        hv = curvature.HVP.from_model(materialize(base, P, 0), F.cross_entropy, ds.x, ds.y)
        lz = curvature.lanczos(hv, hv.p, q, tol=cfg["lanczos_tol"], generator=gen)
        cos = torch.cos(curvature.principal_angles(lz.eigenvectors, V[0]))
        assert torch.isfinite(ev).all() and cos.shape == (q,)


def layers_davis_kahan(cfg: Settings, device: torch.device) -> None:
    """Figs. 5–7, 16–17: every Table 2 setting at 1,000 runs (the largest at full size), one SGD step; the
    layer blocks, loadings and Davis–Kahan terms of one dense Hessian per setting."""
    from sgdbook import curvature, gradients

    assert cfg["runs"] >= 1000 and cfg["steps_cap"] >= 10_000
    gen = torch.Generator().manual_seed(0)
    for setting, m in _pairs():
        runs = cfg["runs"] if (setting, m) == ("gauss10-15", 50) else FEW
        t, ds, base, params = _stack(setting, runs, device, gen)
        res = _one_sgd_step(base, params, ds, t["lr"], m, gen)
        P = {k: v[:1] for k, v in res.params.items()}
        H = curvature.stacked_hessians(base, P, ds.x, ds.y)
        G = gradients.stacked_per_example_grads(base, P, ds.x, ds.y)
        layers = curvature.layer_index(setup.gauss_net(t["k"]))
        blocks, _ = curvature.layer_blocks(H, layers)
        assert all(torch.linalg.eigvalsh(b)[..., 0].min() >= -1e-8 * H.abs().max() for b in blocks)
        ev, vec = torch.linalg.eigh(H[0])
        ev, vec = ev.flip(0), vec.flip(1)
        lam, VM = gradients.second_moment_top(G, 3)
        n = ds.x.shape[0]
        q_vals = torch.cat([torch.linalg.eigvalsh(G[0] @ G[0].T / n).flip(0), ev.new_zeros(H.shape[-1] - n)])
        Hp = G[0].T @ G[0] / n - H[0]
        d = torch.linalg.eigvalsh(Hp)
        dk = curvature.davis_kahan(ev, vec[:, :3], q_vals, VM[0], d.abs().max(), torch.linalg.matrix_norm(Hp))
        assert (dk.sin_sub <= dk.bound_sub * (1 + 1e-9)).all()
        assert curvature.layer_loadings(vec[:, : cfg["top_vectors"]], layers).shape == (3, cfg["top_vectors"])


def real_data(cfg: Settings, device: torch.device) -> None:
    """Table 3, Figs. 3, 4, 21, 22: every MNIST and CIFAR-10 network at its printed size (parameter
    counts asserted), one SGD step of stacked runs at the largest batch on inputs of the data's shape,
    and one Hessian- and second-moment-vector product (the Lanczos step) on a batch of examples."""
    from sgdbook import curvature, gradients
    from sgdbook.functional import materialize

    from . import realdata as rd

    assert cfg["runs"] == rd.REPEATS_PAPER and cfg["cifar_width"] == rd.TABLE3["cifar10"]["width"]
    assert cfg["mnist_depths"] == sorted(rd.TABLE3["mnist"]["layers"]) and cfg["cifar_depths"] == sorted(rd.TABLE3["cifar10"]["layers"])
    assert tuple(cfg["mnist_batches"]) == rd.TABLE3["mnist"]["batch_sizes"] and tuple(cfg["cifar_batches"]) == rd.TABLE3["cifar10"]["batch_sizes"]
    gen = torch.Generator().manual_seed(0)
    for name, depths in (("mnist", cfg["mnist_depths"]), ("cifar10", cfg["cifar_depths"])):
        t = rd.TABLE3[name]
        for depth in depths:
            runs = cfg["runs"] if (name, depth) == ("mnist", 3) else 2
            base, params, _ = ensemble.stacked_init(lambda g, d=depth: rd.real_net(name, d, generator=g), runs, gen)
            assert sum(v[0].numel() for v in params.values()) == t["layers"][depth][0]
            params = {k: v.detach().to(device) for k, v in params.items()}
            m = max(t["batch_sizes"])
            x = torch.randn(m, t["d"], generator=gen).to(device)
            y = torch.randint(0, 10, (m,), generator=gen).to(device)
            res = ensemble.ensemble_sgd(base.to("meta"), params, x, y, F.cross_entropy, lr=t["lr"], batch_size=m, steps=1,
                                        generator=gen, snapshot_at=[1])
            model = materialize(base.to("meta"), res.params, 0)
            xe, ye = x[:64], y[:64]
            v = torch.randn(t["layers"][depth][0], generator=gen).to(device)
            hv = curvature.HVP.from_model(model, F.cross_entropy, xe, ye)
            mop = gradients.second_moment_operator(model, F.cross_entropy, xe, ye)
            assert torch.isfinite(hv(v)).all() and torch.isfinite(mop(v)).all()
