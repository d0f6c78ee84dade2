"""walk-with-sgd chapters 04 and 06 support: the schedules' shapes, the data split, the judgement of
sharpness curves, and the runs' bookkeeping on a tiny problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgdbook.papers.walk_with_sgd import lr_schedules as LS
from sgdbook.papers.walk_with_sgd import sharpness as S

SHAPE = dict(base_ratio=0.1, half_cycle=0.125, anneal=0.375, milestones=(0.5, 0.75), gamma=0.1)


def test_schedule_shapes():
    T = 400
    clr, trap, step = (LS.make_schedule(k, 0.2, T, **SHAPE) for k in LS.KINDS)
    hc = 50
    # CLR: base at 0, peak at every odd half cycle, four cycles in the run
    assert clr(0) == pytest.approx(0.02) and clr(hc) == pytest.approx(0.2) and clr(2 * hc) == pytest.approx(0.02)
    assert clr(7 * hc) == pytest.approx(0.2)
    # the trapezoid rises exactly as CLR's first half cycle, stays at the peak, ends at 0
    assert all(trap(t) == pytest.approx(clr(t)) for t in range(hc + 1))
    assert trap(hc + 10) == pytest.approx(0.2) and trap(T - 150) == pytest.approx(0.2)
    assert trap(T) == pytest.approx(0.0) and trap(T - 1) < 0.01
    # step: ×0.1 at 1/2 and 3/4 of the run
    assert step(199) == pytest.approx(0.2) and step(200) == pytest.approx(0.02) and step(300) == pytest.approx(0.002)
    with pytest.raises(ValueError, match="unknown schedule"):
        LS.make_schedule("cosine", 0.1, T, **SHAPE)
    with pytest.raises(ValueError, match="exceeds the run"):
        LS.make_schedule("trapezoid", 0.1, T, **{**SHAPE, "half_cycle": 0.7, "anneal": 0.5})


def test_schedule_data_is_disjoint_and_standardised():
    cfg = dict(data="fashion", side=14, n_train=50, n_valid=20, n_test=30)
    d = LS.schedule_data(cfg, "cpu")
    assert d.x.shape == (50, 1, 14, 14) and d.xv.shape[0] == 20 and d.xt.shape[0] == 30
    assert abs(float(d.x.mean())) < 1e-5 and abs(float(d.x.std()) - 1) < 1e-4
    rows = torch.cat([d.x, d.xv, d.xt]).flatten(1)
    assert torch.unique(rows, dim=0).shape[0] == 100  # no image in two sets
    with pytest.raises(ValueError, match="data must be"):
        LS.schedule_data({**cfg, "data": "mnist"}, "cpu")


def _runs(lam, val, lam_eval=None):
    eps = [0, 1, 2, 5, 10]
    lam_eval = lam if lam_eval is None else lam_eval
    return [S.SharpnessRun(eps, list(lt), list(le), list(v), [0.0] * 5, [1.0] * 5) for lt, le, v in zip(lam, lam_eval, val)]


def test_judge_sharpness_reads_the_trends():
    rng = np.random.default_rng(0)
    base = np.array([1.0, 10.0, 8.0, 4.0, 2.0])
    lam = base * np.exp(0.05 * rng.standard_normal((4, 5)))
    val = np.array([0.1, 0.5, 0.7, 0.9, 0.95]) + 0.005 * rng.standard_normal((4, 5))
    j = S.judge_sharpness(_runs(lam, val, lam_eval=lam * 3))
    assert j.parts == {"decreases": True, "rises_at_end": False, "val_improves": True, "val_drops_at_end": False,
                       "eval_mode_larger": True}
    # a late rise of λ and a late drop of accuracy are detected
    lam2 = lam.copy()
    lam2[:, -1] = lam[:, -2] * 1.5
    val2 = val.copy()
    val2[:, -1] = val[:, -2] - 0.05
    j2 = S.judge_sharpness(_runs(lam2, val2))
    assert j2.parts["rises_at_end"] and j2.parts["val_drops_at_end"] and not j2.parts["eval_mode_larger"]


def test_bracket_search_extends_until_the_best_is_inside():
    calls = []

    def peaked(at):
        def f(r):
            calls.append(r)
            return -abs(np.log2(r / at))
        return f

    t = LS.bracket_search(peaked(0.8), [0.1, 0.2, 0.4], low=0.025, high=1.6)
    assert t.best == pytest.approx(0.8) and t.tuned and t.edge is None and t.grid == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert calls == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])  # each rate run once, in this order
    # the optimum beyond the bound: not tuned, on the top edge
    t = LS.bracket_search(peaked(5.0), [0.1, 0.2, 0.4], low=0.025, high=1.6)
    assert t.best == pytest.approx(1.6) and not t.tuned and t.edge == "top"
    # below the grid: extended downwards
    t = LS.bracket_search(peaked(0.05), [0.1, 0.2, 0.4], low=0.025, high=1.6)
    assert t.best == pytest.approx(0.05) and t.tuned and min(t.grid) == pytest.approx(0.025)
    # an interior optimum needs no extension
    t = LS.bracket_search(peaked(0.2), [0.1, 0.2, 0.4], low=0.025, high=1.6)
    assert t.grid == pytest.approx([0.1, 0.2, 0.4]) and t.tuned
    # a diverged run (NaN) ranks last: it brackets the best from above
    t = LS.bracket_search(lambda r: float("nan") if r > 0.5 else r, [0.1, 0.2, 0.4], low=0.025, high=1.6)
    assert t.best == pytest.approx(0.4) and t.tuned and np.isnan(t.scores[0.8])
    # a tie does not bracket: the best of a tie is the smaller rate, and the search goes on past the other
    plateau = {0.1: 0.80, 0.2: 0.83, 0.4: 0.83, 0.8: 0.81, 1.6: 0.5}
    t = LS.bracket_search(plateau.__getitem__, [0.1, 0.2, 0.4], low=0.025, high=1.6)
    assert t.best == pytest.approx(0.2) and t.tuned and t.grid == pytest.approx([0.1, 0.2, 0.4, 0.8])
    # the rates the validation set cannot tell from the best: within one binomial standard error of its score
    se = np.sqrt(0.83 * 0.17 / 1000)
    assert LS.tied_rates(t, 1000) == pytest.approx([r for r, v in plateau.items() if r in t.scores and v >= 0.83 - se])
    assert LS.tied_rates(t, 1000) == pytest.approx([0.2, 0.4]) and LS.tied_rates(t, 100) == pytest.approx([0.1, 0.2, 0.4, 0.8])
    t = LS.bracket_search(lambda r: min(r, 0.4), [0.1, 0.2, 0.4], low=0.025, high=1.6)  # flat from 0.4 up
    assert t.best == pytest.approx(0.4) and not t.tuned and t.edge == "top" and max(t.grid) == pytest.approx(1.6)
    with pytest.raises(ValueError, match="at least 3"):
        LS.bracket_search(peaked(0.2), [0.1, 0.2], low=0.05, high=1.0)
    with pytest.raises(ValueError, match="need 0 < low"):
        LS.bracket_search(peaked(0.2), [0.1, 0.2, 0.4], low=0.2, high=1.0)



def test_bracket_searches_equal_the_searches_one_by_one():
    optima = {"a": 0.8, "b": 5.0, "c": 0.05, "d": 0.2}

    def f(key, r):
        return float("nan") if key == "d" and r > 0.3 else -abs(np.log2(r / optima[key]))

    rounds = []

    def score_many(pairs):
        rounds.append(list(pairs))
        return [f(k, r) for k, r in pairs]

    got = LS.bracket_searches(score_many, optima, [0.1, 0.2, 0.4], low=0.025, high=1.6)
    for k in optima:
        want = LS.bracket_search(lambda r, k=k: f(k, r), [0.1, 0.2, 0.4], low=0.025, high=1.6)
        assert list(got[k].scores) == list(want.scores)  # the same rates, in order
        np.testing.assert_array_equal(list(got[k].scores.values()), list(want.scores.values()))  # NaN where diverged
        assert (got[k].best, got[k].tuned, got[k].edge) == (want.best, want.tuned, want.edge)
    assert len(rounds[0]) == 12 and max(len(r) for r in rounds[1:]) <= 4  # the grids together, then one rate per search
    assert len(rounds) == 1 + max(len(t.scores) - 3 for t in got.values())
    with pytest.raises(ValueError, match="returned 1 scores"):
        LS.bracket_searches(lambda pairs: [0.0], ["a"], [0.1, 0.2, 0.4], low=0.025, high=1.6)


def test_run_schedules_in_the_pool_equal_train_curves_with_one_thread():
    from sgdbook.papers.walk_with_sgd import walk as W

    cfg = dict(data="fashion", side=14, n_train=200, n_valid=100, n_test=100)
    d = LS.schedule_data(cfg, "cpu")
    steps = 2 * (200 // 50)
    base = dict(data=d, steps=steps, shape=SHAPE, epochs=2, batch_size=50, diverged_ok=True)
    jobs = [dict(base, model=W.model_builder(n, {"paper_models": False}), init=W.init_seed(n, 0), generator_seed=5, kind=k,
                 peak=p, curves=c, run=f"{n} {k} {p}")
            for n, k, p, c in (("cnn", "CLR", 0.1, True), ("resnet", "step", 0.2, False), ("cnn", "step", 1e30, False))]
    pool = LS.run_schedules(jobs, workers=2)
    here = LS.run_schedules(jobs, workers=1)
    assert pool[2] is None and here[2] is None  # diverged, allowed
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for j, a, b in zip(jobs[:2], pool, here):
            model = W.make_model(j["run"].split()[0], {"paper_models": False}, torch.Generator().manual_seed(j["init"]))
            ref = LS.train_curves(model, d, LS.make_schedule(j["kind"], j["peak"], steps, **SHAPE), epochs=2, batch_size=50,
                                  generator=torch.Generator().manual_seed(5), curves=j["curves"])
            assert a == ref and b == ref
    finally:
        torch.set_num_threads(before)
    assert len(pool[0].val_acc) == 2 and len(pool[1].val_acc) == 1
    with pytest.raises(Exception, match="non-finite"):
        LS.run_schedules([dict(jobs[2], diverged_ok=False)], workers=1)

def test_sharpness_statuses_gate_the_end_effects_on_the_regime():
    rng = np.random.default_rng(1)
    base = np.array([1.0, 10.0, 8.0, 4.0, 2.0])
    lam = base * np.exp(0.05 * rng.standard_normal((4, 5)))
    val = np.array([0.1, 0.5, 0.7, 0.9, 0.95]) + 0.005 * rng.standard_normal((4, 5))
    j = S.judge_sharpness(_runs(lam, val, lam_eval=lam * 3))
    # λ falls at the end and accuracy still rises: in the late regime both end effects fail ...
    late = S.sharpness_statuses(j, in_regime=True, late_regime=True)
    assert late == {"decreases": "holds", "rises_at_end": "fails", "val_improves": "holds",
                    "val_drops_at_end": "fails", "eval_mode_larger": "holds"}
    # ... runs shorter than the paper's leave them undecided, and runs outside the regime everything
    short = S.sharpness_statuses(j, in_regime=True, late_regime=False)
    assert short["rises_at_end"] == short["val_drops_at_end"] == "undecided" and short["decreases"] == "holds"
    assert set(S.sharpness_statuses(j, in_regime=False, late_regime=True).values()) == {"undecided"}
    assert S.PAPER_FIXED_RATE_STEPS == 45_000


def test_sharpness_reasons_name_failing_and_open_parts():
    rng = np.random.default_rng(1)
    lam = np.array([1.0, 10.0, 8.0, 4.0, 2.0]) * np.exp(0.05 * rng.standard_normal((4, 5)))
    val = np.array([0.1, 0.5, 0.7, 0.9, 0.95]) + 0.005 * rng.standard_normal((4, 5))
    j = S.judge_sharpness(_runs(lam, val, lam_eval=lam * 3))
    st = S.sharpness_statuses(j, in_regime=True, late_regime=False)
    why, decide = S.sharpness_reasons(st, j, run_steps=400, in_regime=True, final_train_acc=1.0)
    assert why.startswith("this scale: (b) λ_max rises at the end and (d)") and "45,000" in why and "400" in why
    assert "paper scale" in decide and "fails" not in why
    st = S.sharpness_statuses(j, in_regime=True, late_regime=True)
    why, decide = S.sharpness_reasons(st, j, run_steps=45_000, in_regime=True, final_train_acc=1.0)
    assert why.startswith("the measurement: (b)") and why.endswith(" fail") and decide == ""
    why, decide = S.sharpness_reasons(S.sharpness_statuses(j, in_regime=False, late_regime=False), j, run_steps=30,
                                      in_regime=False, final_train_acc=0.3)
    assert "30.0% training accuracy" in why and "99 %" in decide
    all_hold = dict.fromkeys(st, "holds")
    assert S.sharpness_reasons(all_hold, j, run_steps=45_000, in_regime=True, final_train_acc=1.0) == ("", "")


def test_run_many_in_the_pool_equals_the_runs_with_one_thread():
    from sgdbook.papers.walk_with_sgd import walk as W

    d = W.digits_split(150)
    cfg = {"paper_models": False}
    common = dict(data=d, lr=0.1, batch_size=50, epochs=2, tol=1e-3)
    sharp = [dict(common, model=W.model_builder(n, cfg), init=W.init_seed(n, 0), generator_seed=4, checkpoints=[1, 2],
                  hessian_n=60, run=n) for n in ("cnn", "resnet")]
    cov = [dict(common, model=W.model_builder("cnn-nobn", cfg), init=W.init_seed("cnn-nobn", s), generator_seed=8 + s,
                checkpoints=[2], n=60, k=2, snapshot_at=1 if s == 0 else None, run=f"nobn {s}") for s in range(2)]
    got_s, got_c = S.run_many("sharpness", sharp, workers=2), S.run_many("covariance", cov, workers=2)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for j, got in zip(sharp, got_s):
            model = W.make_model(j["run"], cfg, torch.Generator().manual_seed(j["init"]))
            ref = S.sharpness_run(model, d, lr=0.1, batch_size=50, epochs=2, checkpoints=[1, 2], hessian_n=60, tol=1e-3,
                                  generator=torch.Generator().manual_seed(4), show_progress=False)
            assert got == ref and got.epochs == [0, 1, 2]
        for s, (j, got) in enumerate(zip(cov, got_c)):
            model = W.make_model("cnn-nobn", cfg, torch.Generator().manual_seed(j["init"]))
            ref = S.covariance_run(model, d, lr=0.1, batch_size=50, epochs=2, checkpoints=[2], n=60, k=2, tol=1e-3,
                                   generator=torch.Generator().manual_seed(8 + s), snapshot_at=j["snapshot_at"],
                                   show_progress=False)
            assert (got.epochs, got.lam_h, got.train_loss) == (ref.epochs, ref.lam_h, ref.train_loss)
            # C and the noise share come from per-example gradients, whose convolution form is picked by
            # timing in each process (gradients.conv_forms): equal up to rounding, not bit for bit
            np.testing.assert_allclose(got.lam_c, ref.lam_c, rtol=1e-9)
            np.testing.assert_allclose(got.share[0].share, ref.share[0].share, rtol=1e-9)
            assert (got.snapshot is None) == (ref.snapshot is None) == (s == 1)
            if ref.snapshot is not None:  # the model at epoch 1, for Eq. 2
                for a, b in zip(got.snapshot.state_dict().values(), ref.snapshot.state_dict().values()):
                    assert torch.equal(a, b)
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="unknown kind"):
        S.run_many("hessian", sharp)


def test_a_constant_schedule_for_the_exercises():
    sched = LS.make_schedule("constant", 0.3, 100, **SHAPE)
    assert torch.equal(sched.values(100), torch.full((100,), 0.3, dtype=sched.values(100).dtype))
    assert "constant" not in LS.KINDS  # not one of the compared schedules


def test_chunked_hessian_is_the_mean_of_the_chunks_hessians():
    import torch.nn.functional as F

    from sgdbook import curvature
    from sgdbook.papers.walk_with_sgd import walk as W

    d = W.digits_split(150)
    x, y = d.x[:23].double(), d.y[:23]  # chunks of 10, 10, 3
    model = W.standin("cnn", torch.Generator().manual_seed(0)).double()
    v = torch.randn(sum(q.numel() for q in model.parameters()), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for mode in ("train", "eval"):
        got = S.ChunkedHessian(model, x, y, bn_mode=mode, chunk=10)(v)
        want = sum(curvature.HVP.from_model(model, F.cross_entropy, x[i : i + 10], y[i : i + 10], bn_mode=mode)(v)
                   * min(10, 23 - i) / 23 for i in range(0, 23, 10))
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        whole = curvature.HVP.from_model(model, F.cross_entropy, x, y, bn_mode=mode)(v)
        if mode == "eval":  # running statistics: the mean over chunks is the whole set's Hessian
            torch.testing.assert_close(got, whole, rtol=1e-10, atol=1e-12)
        else:  # each chunk normalised by its own statistics: another matrix
            assert not torch.allclose(got, whole, rtol=1e-6, atol=1e-8)
    top = S.top_eigen(model, x, y, 1, bn_mode="eval", tol=1e-8, chunk=10)
    ref = S.top_eigen(model, x, y, 1, bn_mode="eval", tol=1e-8)
    assert top.converged and float(top.eigenvalues[0]) == pytest.approx(float(ref.eigenvalues[0]), rel=1e-7)
    with pytest.raises(ValueError, match="chunk"):
        S.ChunkedHessian(model, x, y, bn_mode="eval", chunk=0)


def test_sharpness_run_spectral_norm_against_the_dense_hessian():
    import dataclasses

    import torch.nn.functional as F
    from torch import nn

    from sgdbook.curvature import full_hessian
    from sgdbook.functional import flat_loss
    from sgdbook.papers.walk_with_sgd import walk as W

    d = W.digits_split(150)
    d = dataclasses.replace(d, x=d.x.double().flatten(1), xv=d.xv.double().flatten(1))
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 10)).double()
    with torch.no_grad():
        for q in model.parameters():
            q.copy_(torch.randn(q.shape, generator=g, dtype=q.dtype) * 0.5)
    start = [q.detach().clone() for q in model.parameters()]
    r = S.sharpness_run(model, d, lr=0.1, batch_size=50, epochs=1, checkpoints=[1], hessian_n=60, tol=1e-8,
                        generator=torch.Generator().manual_seed(1), spectral=True, show_progress=False)
    assert r.converged and len(r.norm_train) == len(r.norm_eval) == 2
    with torch.no_grad():
        for q, s0 in zip(model.parameters(), start):
            q.copy_(s0)  # back to epoch 0 (the buffers do not enter train mode's Hessian)
    f, theta = flat_loss(model, F.cross_entropy, d.x[:60], d.y[:60], bn_mode="train")
    ev = torch.linalg.eigvalsh(full_hessian(f, theta))
    assert r.norm_train[0] == pytest.approx(float(ev.abs().max()), rel=1e-6)
    assert r.lam_train[0] == pytest.approx(float(ev[-1]), rel=1e-6)
    assert all(nv >= lm * (1 - 1e-6) for nv, lm in zip(r.norm_eval, r.lam_eval))  # max|λ| >= the largest λ


def test_spectral_norm_is_the_largest_magnitude_not_the_largest_eigenvalue():
    from sgdbook.curvature.hvp import MatrixHVP

    Q = torch.linalg.qr(torch.randn(30, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)).Q
    lam = torch.cat([torch.tensor([-3.0, 1.0, 0.5], dtype=torch.float64), torch.linspace(-0.4, 0.4, 27, dtype=torch.float64)])
    h = MatrixHVP(Q @ torch.diag(lam) @ Q.T)
    norm, products, ok = S.spectral_norm(h, tol=1e-10)
    assert ok and norm == pytest.approx(3.0, rel=1e-9) and products == h.n_products
    from sgdbook import curvature

    # λ_max of the same operator is 1: the two differ where a negative eigenvalue dominates
    assert float(curvature.lanczos(h, h.p, 1, tol=1e-10).eigenvalues[0]) == pytest.approx(1.0, rel=1e-9)
