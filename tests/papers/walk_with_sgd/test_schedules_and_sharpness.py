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
    with pytest.raises(ValueError, match="at least 3"):
        LS.bracket_search(peaked(0.2), [0.1, 0.2], low=0.05, high=1.0)
    with pytest.raises(ValueError, match="need 0 < low"):
        LS.bracket_search(peaked(0.2), [0.1, 0.2, 0.4], low=0.2, high=1.0)


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
