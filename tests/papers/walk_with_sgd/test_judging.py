"""The walk chapters' judging: parts that hold, fail (with power) or cannot decide, and the regime gates."""

import math

import numpy as np
import pytest
from scipy import stats as ss

from sgdbook.papers.walk_with_sgd import walk as W


def test_threshold_status_decides_only_when_the_replicates_exclude_the_threshold():
    # a mean on the claim's side holds only if the one-sided t test (df = n − 1) excludes the threshold ...
    v = np.array([0.85, 0.95, 0.7])
    assert ss.ttest_1samp(v, 0.8, alternative="greater").pvalue > 0.05
    assert W.threshold_status(v, 0.8, at_least=True) == W.UNDECIDED
    assert W.threshold_status([-0.9, -0.7], -0.8, at_least=False) == W.UNDECIDED
    v = np.array([0.9, 0.92, 0.95])
    assert ss.ttest_1samp(v, 0.8, alternative="greater").pvalue < 0.05
    assert W.threshold_status(v, 0.8, at_least=True) == W.HOLDS
    # ... the rule before the review of the holding rule: whenever the mean is on the claim's side, one seed included
    assert W.threshold_status([0.85, 0.95, 0.7], 0.8, at_least=True, on_mean=True) == W.HOLDS
    assert W.threshold_status([0.85], 0.8, at_least=True, on_mean=True) == W.HOLDS
    assert W.threshold_status([0.85], 0.8, at_least=True) == W.UNDECIDED
    # a miss inside the spread of three seeds cannot decide ...
    assert W.threshold_status([0.1, 0.9, 0.5], 0.8, at_least=True) == W.UNDECIDED
    # ... a miss the t test resolves fails: t = (0.8 − 0.5)/(sd/√3) against t(2), under either rule
    v = np.array([0.48, 0.5, 0.52])
    t = (v.mean() - 0.8) / (v.std(ddof=1) / np.sqrt(3))
    assert ss.t.cdf(t, 2) < 0.05
    assert W.threshold_status(v, 0.8, at_least=True) == W.threshold_status(v, 0.8, at_least=True, on_mean=True) == W.FAILS
    # the same checks by brute force at the boundary of significance, on both sides
    for d in (2.0, 5.0):
        se = 0.1
        vals = -0.8 + d * se + np.array([-1.0, 0.0, 1.0]) * se * np.sqrt(3)  # mean −0.8 + d·se, standard error se
        p = ss.t.sf(d, 2)
        assert W.threshold_status(vals, -0.8, at_least=False) == (W.FAILS if p < 0.05 else W.UNDECIDED)
        assert W.threshold_status(-1.6 - vals, -0.8, at_least=False) == (W.HOLDS if p < 0.05 else W.UNDECIDED)
    # one replicate, or none, decides nothing
    assert W.threshold_status([0.1], 0.8, at_least=True) == W.UNDECIDED
    assert W.threshold_status([np.nan, np.nan], 0.8, at_least=True) == W.UNDECIDED
    # zero spread decides exactly; strict inequalities
    assert W.threshold_status([0.0, 0.0, 0.0], 0.2, at_least=True) == W.FAILS
    assert W.threshold_status([1.0, 1.0, 1.0], 0.8, at_least=True) == W.HOLDS
    assert W.threshold_status([0.8, 0.8], 0.8, at_least=True) == W.HOLDS
    assert W.threshold_status([0.0, 0.0], 0.0, at_least=True, strict=True) == W.UNDECIDED
    assert W.threshold_status([0.1, np.nan, 0.3], 0.0, at_least=True, strict=True) == W.UNDECIDED  # t(1) = 2
    assert W.threshold_status([0.1, np.nan, 0.3], 0.0, at_least=True, strict=True, on_mean=True) == W.HOLDS


def test_greater_status_and_the_papers_effect():
    rng = np.random.default_rng(1)
    base = rng.normal(2.0, 0.1, 4)
    assert W.greater_status(base + 0.5, base) == W.HOLDS
    assert W.greater_status(base - 0.5, base) == W.FAILS
    noise = np.array([0.01, -0.01, 0.005, -0.004])
    assert W.greater_status(base + noise, base) == W.UNDECIDED  # no difference, no effect size given
    # with the paper's effect (0.2): these pairs exclude it, so the claim fails with power
    assert W.greater_status(base + noise, base, effect=0.2) == W.FAILS
    # a noisy difference that cannot exclude 0.2 stays undecided
    wide = np.array([0.3, -0.3, 0.25, -0.2])
    assert W.greater_status(base + wide, base, effect=0.2) == W.UNDECIDED
    assert W.greater_status([1.0], [0.0]) == W.UNDECIDED
    with pytest.raises(ValueError, match="same length"):
        W.greater_status([1.0, 2.0], [1.0])


def test_parts_verdict_and_conjunctions():
    H, F, U = W.HOLDS, W.FAILS, W.UNDECIDED
    assert W.parts_verdict([H, H, H]) == "reproduced"
    assert W.parts_verdict([H, F, U]) == "partially-reproduced"
    assert W.parts_verdict([H, U, U]) == "inconclusive"
    assert W.parts_verdict([U, U]) == "inconclusive"
    assert W.parts_verdict([F, U]) == "not-reproduced"
    assert W.parts_verdict([F, H, H], key=(0,)) == "not-reproduced"
    assert W.parts_verdict([H, F, H], key=(0,)) == "partially-reproduced"
    assert W.all_status([H, H]) == H and W.all_status([H, U]) == U and W.all_status([U, F, H]) == F
    with pytest.raises(ValueError):
        W.parts_verdict(["maybe"])
    assert W.parts_text(["(a)", "(b)"], [H, F]) == "(a) holds; (b) fails"


def test_height_regime_uses_the_papers_table2_row():
    assert W.paper_height("cnn", 25) == 0.0104 and W.paper_height("resnet", 100) == 0.0017
    assert W.paper_height("mlp", 1) == 0.0625 and W.paper_height("cnn", 2) is None
    assert W.in_height_regime(0.00104, "cnn", 25) and not W.in_height_regime(0.00103, "cnn", 25)
    assert W.in_height_regime(1.0, "cnn", 3) is None


def test_ema_against_its_recursion_and_settled():
    x = np.array([1.0, -2.0, np.nan, 4.0])
    beta = 0.8
    m, ref = 0.0, []
    for i, v in enumerate([1.0, -2.0, 0.0, 4.0]):
        m = beta * m + (1 - beta) * v
        ref.append(m / (1 - beta ** (i + 1)))
    assert np.allclose(W.ema(x, beta), ref)
    assert np.allclose(W.ema(np.stack([x, 2 * x]), beta), np.stack([ref, 2 * np.array(ref)]))
    assert W.ema([3.0], 0.9)[0] == pytest.approx(3.0)  # bias-corrected: a constant is returned unchanged
    c = np.r_[np.nan, np.full(20, 0.5), np.full(20, -0.5)]
    assert not W.settled(c, 21) and W.settled(c, 41)
    assert not W.settled(np.full(30, 0.2), 30)


def _gd(onset, inter, cos, rise, first=2.0, last=1.5):
    return {"onset": onset, "interior_frac": inter, "cos_last10": cos, "rise_frac": rise, "barriers": 0, "dist_window": 1.0,
            "segments": 30, "valley_pairs": 20, "window_loss_first": first, "loss_last": last, "loss_theta0": 2.0}


def test_judge_gd_window_gates_on_the_onset():
    inside = [_gd(15, 0.9, -0.9, 0.0), _gd(18, 0.95, -0.85, 0.05), _gd(12, 1.0, -0.95, 0.0)]
    assert W.judge_gd_window(inside, 40)[0] == "reproduced"
    late = [_gd(130, 0.2, 0.5, 0.5), _gd(140, 0.3, 0.4, 0.6), _gd(150, 0.25, 0.6, 0.4)]
    verdict, st, ev = W.judge_gd_window(late, 40)  # the same numbers outside the regime decide nothing
    assert verdict == "inconclusive" and st == [W.UNDECIDED] * 3 and ev["runs_in_regime"] == 0
    resolved_miss = [_gd(15, 0.9, -0.5, 0.0), _gd(16, 0.9, -0.52, 0.0), _gd(14, 0.9, -0.48, 0.0)]
    assert W.judge_gd_window(resolved_miss, 40)[:2] == ("partially-reproduced", [W.HOLDS, W.FAILS, W.HOLDS])
    no_onset = [_gd(float("nan"), 0.0, 0.9, float("nan"))] * 2
    assert W.judge_gd_window(no_onset, 40)[0] == "inconclusive"
    # a window that ends below half the initial loss (2.0 -> 0.26) is not early training; before the fourth review it was in
    fitted = [_gd(15, 0.9, -0.5, 0.0, last=0.26), _gd(16, 0.9, -0.52, 0.0, last=0.3), _gd(14, 0.9, -0.48, 0.0, last=0.2)]
    verdict, st, ev = W.judge_gd_window(fitted, 40)
    assert verdict == "inconclusive" and ev["runs_in_regime"] == 0 and ev["runs_with_onset_in_window"] == 3
    assert W.judge_gd_window(fitted, 40, before_fourth=True)[0] == "partially-reproduced"
    assert W.gd_in_regime(_gd(15, 0.9, -0.9, 0.0, last=1.0), 40) and not W.gd_in_regime(_gd(15, 0.9, -0.9, 0.0, last=0.99), 40)
    late_start = _gd(15, 0.9, -0.9, 0.0, first=1.1, last=1.0)  # against L(theta0) = 2.0, not against the window's start
    assert W.gd_in_regime(late_start, 40) and not W.gd_in_regime(dict(late_start, loss_last=0.9), 40)
    assert W.gd_in_regime(_gd(15, 0.9, -0.9, 0.0, last=0.99), 40, fit=None)


def _sgd(inter, rise, cos, bars=0, whole=None, valley=0.02):
    return {"interior_frac": inter, "rise_frac": rise, "cos_mean": cos if whole is None else whole, "cos_from_onset": cos,
            "barriers": bars, "raw_barriers": bars, "mean_height": 0.01, "valley_height": valley, "segments": 40,
            "valley_pairs": 20, "loss_first": 2.0, "loss_last": 1.5}


def test_judge_sgd_window_parts():
    gd = [{"rise_frac": 0.0, "cos_mean": c, "onset": 15.0} for c in (-0.8, -0.82, -0.78)]
    good = [_sgd(0.9, 0.3, -0.2), _sgd(0.95, 0.35, -0.25), _sgd(0.85, 0.4, -0.15)]
    assert W.judge_sgd_window(good, gd)[0] == "reproduced"
    flat_floor = [_sgd(0.9, 0.0, -0.2), _sgd(0.95, 0.0, -0.25), _sgd(0.85, 0.0, -0.15)]
    v, st, _ = W.judge_sgd_window(flat_floor, gd)
    assert v == "partially-reproduced" and st[1] == W.FAILS
    barrier = [_sgd(0.9, 0.3, -0.2, bars=1), _sgd(0.95, 0.35, -0.25), _sgd(0.85, 0.4, -0.15)]
    assert W.judge_sgd_window(barrier, gd)[0] == "not-reproduced"
    few_valleys = [_sgd(0.2, 0.3, -0.2), _sgd(0.8, 0.35, -0.25), _sgd(0.3, 0.4, -0.15)]  # mean 0.43, spread wide
    v, st, _ = W.judge_sgd_window(few_valleys, gd)
    assert st[0] == W.UNDECIDED and v == "inconclusive"
    # half the segments in every seed: on the threshold, nothing shown (before the fourth review it held exactly)
    half = [_sgd(0.5, 0.3, -0.2), _sgd(0.5, 0.35, -0.25), _sgd(0.5, 0.4, -0.15, valley=float("nan"))]
    assert W.judge_sgd_window(half, gd)[1][0] == W.UNDECIDED
    assert W.judge_sgd_window(half, gd, before_fourth=True)[1][0] == W.HOLDS
    # (b)'s comparison with GD: equal differences of fractions are ties too (3 valley pairs: one count is a third)
    same_gap = [dict(_sgd(0.9, 0.9, -0.2), valley_pairs=3), dict(_sgd(0.9, 0.9, -0.25), valley_pairs=3),
                dict(_sgd(0.9, 0.9, -0.15), valley_pairs=3)]
    gd_08 = [dict(g, rise_frac=0.8) for g in gd]
    assert W.threshold_status([0.9] * 3, 0.2, at_least=True, counts=[3] * 3) == W.HOLDS  # the first test still holds
    assert W.judge_sgd_window(same_gap, gd_08, before_fourth=True)[1][1] == W.HOLDS
    assert W.judge_sgd_window(same_gap, gd_08)[1][1] == W.UNDECIDED  # 0.1 above GD in each seed: one count is a third
    ev = W.judge_sgd_window(half, gd)[2]
    assert ev["valley_height"] == pytest.approx(0.02) and ev["mean_height"] == pytest.approx(0.01)
    assert (ev["loss_first"], ev["loss_last"]) == (2.0, 1.5)


def test_judge_sgd_window_compares_cosines_from_the_onsets():
    """(d) compares SGD's cosine from its own onset with GD's from its onset; an initial descent with
    positive cosines inside SGD's window (``cos_mean`` over the whole window) must not make it hold."""
    gd = [{"rise_frac": 0.0, "cos_mean": c, "onset": 15.0} for c in (-0.3, -0.32, -0.28)]
    sgd = [_sgd(0.9, 0.3, -0.33, whole=0.1), _sgd(0.95, 0.35, -0.35, whole=0.12), _sgd(0.85, 0.4, -0.31, whole=0.08)]
    assert W.judge_sgd_window(sgd, gd)[1][3] == W.FAILS  # from the onsets SGD's cosine is the more negative
    assert W.judge_sgd_window(sgd, gd, whole_window=True)[1][3] == W.HOLDS  # the whole window: the descent decides
    no_onset = [_sgd(0.9, 0.3, float("nan"), whole=0.1)] + sgd[1:2]  # one pair left: too few for a test
    assert W.judge_sgd_window(no_onset, gd[:2])[1][3] == W.UNDECIDED
    gd_flat = gd[:2] + [{"rise_frac": 0.0, "cos_mean": 0.9, "onset": float("nan")}]  # a GD run that never bounces
    _, st, ev = W.judge_sgd_window(sgd, gd_flat)
    assert st[3] == W.FAILS and ev["cos_pairs"] == 2 and ev["gd_cos_mean"] == pytest.approx(-0.31)


def test_cos_roles_verdict_leaves_unsettled_runs_out():
    B, lrs = [25, 50, 100, 200], [0.025, 0.05, 0.1, 0.2]
    rng = np.random.default_rng(0)
    falling = np.array([-0.1, -0.2, -0.3, -0.4]) + 0.01 * rng.standard_normal((3, 4))
    dist = np.array([4.0, 3.5, 3.0, 2.5]) * (1 + 0.01 * rng.standard_normal((3, 4)))
    moving_lr = np.array([0.3, 0.0, -0.2, -0.4]) + 0.01 * rng.standard_normal((3, 4))
    v, ev = W.cos_roles_verdict(B, falling, dist, lrs, moving_lr)
    assert v == "partially-reproduced" and ev["status_3"] == W.FAILS
    # the two small rates still in their initial descent: too few settled rates to judge (3)
    settled_lr = np.array([[False, False, True, True]] * 3)
    v, ev = W.cos_roles_verdict(B, falling, dist, lrs, moving_lr, settled_lr=settled_lr)
    assert v == "inconclusive" and ev["status_3"] == W.UNDECIDED and ev["lrs_settled"] == [0.1, 0.2]
    # only the smallest rate unsettled: (3) is judged on the other three
    settled_lr[:, 1] = True
    flat_tail = np.array([0.3, -0.3, -0.3, -0.3]) + 0.01 * rng.standard_normal((3, 4))
    v, ev = W.cos_roles_verdict(B, falling, dist, lrs, flat_tail, settled_lr=settled_lr)
    assert v == "reproduced" and ev["lrs_settled"] == [0.05, 0.1, 0.2]
    # an unsettled batch-size run leaves (1), (2) and (3), which compares with the batch sizes' slope, undecided
    settled_bs = np.ones((3, 4), bool)
    settled_bs[0, 0] = False
    v, ev = W.cos_roles_verdict(B, falling, dist, lrs, flat_tail, settled_bs=settled_bs, settled_lr=settled_lr)
    assert (ev["status_1"], ev["status_2"], ev["status_3"], v) == (W.UNDECIDED, W.UNDECIDED, W.UNDECIDED, "inconclusive")


def test_cos_roles_judgement_judges_the_bouncing_runs_and_reports_the_other_versions():
    B, lrs = [25, 50, 100, 200], [0.025, 0.05, 0.1, 0.2]
    ones = np.ones((3, 4), bool)
    rng = np.random.default_rng(1)
    falling = np.array([-0.1, -0.2, -0.3, -0.4]) + 0.01 * rng.standard_normal((3, 4))
    dist = np.array([4.0, 3.5, 3.0, 2.5]) * (1 + 0.01 * rng.standard_normal((3, 4)))
    slow_start = np.array([0.3, 0.0, -0.3, -0.3]) + 0.01 * rng.standard_normal((3, 4))  # two small rates not yet bouncing
    settled_lr = np.array([[False, False, True, True]] * 3)
    v, ev, pilot = W.cos_roles_judgement(B, falling, dist, lrs, slow_start, settled_bs=ones, settled_lr=settled_lr)
    # judged on the bouncing runs: two rates are too few for (3); counting every run, the slow start would fail it
    assert v == "inconclusive" and ev["status_3"] == W.UNDECIDED and ev["lrs_unsettled"] == [0.025, 0.05]
    assert ev["every_run_verdict"] == "partially-reproduced" and np.isnan(ev["cos_slope_lr_ci"]).all()
    assert ev["first_version_verdict"] == "partially-reproduced"  # (1), (2) met; range over rates 0.6 > half that over B
    assert "first version" in pilot and "every run counted" in pilot and "0.025, 0.05" in pilot
    # three bouncing rates with a real effect of the rate: (3) fails there, with its interval recorded
    moving = np.array([0.3, -0.1, -0.3, -0.5]) + 0.01 * rng.standard_normal((3, 4))
    settled_lr[:, 1] = True
    v, ev, _ = W.cos_roles_judgement(B, falling, dist, lrs, moving, settled_bs=ones, settled_lr=settled_lr)
    assert ev["status_3"] == W.FAILS and v == "partially-reproduced"
    lo, hi = ev["cos_slope_lr_ci"]
    assert lo < ev["cos_slope_per_doubling_lr"] < hi < 0
    # the first version failed (2) at any p >= 0.05; the judged one leaves it undecided
    flat_dist = np.array([[3.0, 3.1, 2.9, 3.0], [3.0, 2.9, 3.1, 3.05], [3.1, 3.0, 3.0, 2.95]])  # no trend in B
    flat_lr = np.array([-0.3, -0.3, -0.3, -0.3]) + 0.01 * rng.standard_normal((3, 4))
    v, ev, _ = W.cos_roles_judgement(B, falling, flat_dist, lrs, flat_lr, settled_bs=ones, settled_lr=ones)
    assert ev["status_2"] == W.UNDECIDED and ev["logdist_slope_p"] >= 0.05
    assert v == "inconclusive" and ev["first_version_verdict"] == "partially-reproduced"  # (1) and (3) met
    # the first version: (1) not met makes it "not reproduced" whatever the others
    flat_b = np.array([[-0.3, -0.28, -0.31, -0.3], [-0.29, -0.3, -0.3, -0.31], [-0.3, -0.31, -0.29, -0.3]])
    v, ev, _ = W.cos_roles_judgement(B, flat_b, dist, lrs, flat_lr, settled_bs=ones, settled_lr=ones)
    assert ev["status_1"] == W.UNDECIDED and ev["first_version_verdict"] == "not-reproduced"
    # (1) met, (2) and (3) not: partially now, "not reproduced" in the first version
    moving = np.array([0.3, 0.0, -0.3, -0.6]) + 0.01 * rng.standard_normal((3, 4))
    rising = np.array([2.5, 3.0, 3.5, 4.0]) * (1 + 0.01 * rng.standard_normal((3, 4)))
    v, ev, _ = W.cos_roles_judgement(B, falling, rising, lrs, moving, settled_bs=ones, settled_lr=ones)
    assert (ev["status_1"], ev["status_2"], ev["status_3"]) == (W.HOLDS, W.FAILS, W.FAILS)
    assert v == "partially-reproduced" and ev["first_version_verdict"] == "not-reproduced"


def test_parts_reasons_name_the_failing_and_the_open_parts():
    H, F, U = W.HOLDS, W.FAILS, W.UNDECIDED
    r = W.parts_reasons(["(a)", "(b)", "(c)"], [H, F, U], ["x", "cos -0.5", "rises 30%"], decide="more seeds")
    assert r["why"] == "the measurement: (b) (cos -0.5) fails. this scale: (c) (rises 30%) cannot be decided"
    assert r["decide"] == "more seeds"
    assert W.parts_reasons(["(a)"], [H], ["x"], decide="more seeds") == {"why": "", "decide": ""}
    r = W.parts_reasons(["(a)"], [U], ["x"], regime="onset 137", decide="GPU")
    assert r == {"why": "this scale: onset 137", "decide": "GPU"}


def test_why_paragraph_lists_only_red_and_grey_items():
    from types import SimpleNamespace as R

    recs = [R(id="fig1", verdict="inconclusive", why="onset 137", decide="the paper scale"),
            R(id="fig9", verdict="partially-reproduced", why="(b) fails", decide=""),
            R(id="fig2", verdict="not-reproduced", why="no valleys", decide="")]
    text = W.why_paragraph(recs, {"fig1": "Figure 1"})
    assert text.startswith("**Why (the paper, or this scale).**")
    assert "- **Figure 1** (inconclusive): onset 137 *What would decide it:* the paper scale" in text
    assert "- **fig2** (not-reproduced): no valleys" in text and "fig9" not in text
    assert W.why_paragraph(recs[1:2]) == ""


def test_t_half_width():
    v = np.array([[1.0, 2.0], [3.0, 6.0]])
    assert np.allclose(W.t_half_width(v), ss.t.ppf(0.975, 1) * v.std(0, ddof=1) / np.sqrt(2))
    assert np.allclose(W.t_half_width(v[:1]), 0.0)


def test_plateau_status_needs_positive_evidence_of_a_flat_loss():
    prev = np.array([1.0, 1.0, 1.0])

    def two(last, previous):  # [replicates, evaluations] from the last two evaluations
        return np.stack([np.broadcast_to(previous, (3,)), np.broadcast_to(last, (3,))], axis=1)

    assert W.plateau_status(two(prev * 0.999, prev * np.array([1.0, 1.001, 0.9995]))) == W.HOLDS  # ~0.1 % per interval
    assert W.plateau_status(two(prev * 0.80, prev * np.array([1.0, 1.01, 0.99]))) == W.FAILS  # still 20 % per interval
    # 13 %, 2 %, 8 %: not flat enough to show a plateau, too spread to show a fall above 5 %
    assert W.plateau_status(two(prev * np.array([0.87, 0.98, 0.92]), prev)) == W.UNDECIDED
    assert W.plateau_status([[0.5, 0.5]]) == W.UNDECIDED  # one replicate decides nothing
    assert W.stuck_status(W.HOLDS, W.HOLDS) == W.HOLDS
    assert W.stuck_status(W.HOLDS, W.FAILS) == W.UNDECIDED  # higher, but still descending
    assert W.stuck_status(W.FAILS, W.HOLDS) == W.FAILS
    assert W.stuck_status(W.UNDECIDED, W.HOLDS) == W.UNDECIDED


def test_interval_falls_is_the_least_squares_slope():
    rng = np.random.default_rng(0)
    L = np.exp(rng.normal(size=(4, 7)))
    for points in (2, 3, 5, 7):
        want = [-np.polyfit(np.arange(points), np.log(row[-points:]), 1)[0] for row in L]
        assert np.allclose(W.interval_falls(L, points), want, rtol=1e-12)
    assert np.allclose(W.interval_falls(L, 2), np.log(L[:, -2] / L[:, -1]))
    for bad, match in ((dict(points=1), "points"), (dict(points=8), "fewer than")):
        with pytest.raises(ValueError, match=match):
            W.interval_falls(L, **bad)
    with pytest.raises(ValueError, match="replicates, evaluations"):
        W.interval_falls(L[0], 2)


def test_plateau_over_more_points_shows_a_flat_noisy_loss():
    # a flat loss with 3 % noise per evaluation: the last interval's change cannot show the plateau, four points can
    noise = np.array([[0.03, -0.03, 0.02, -0.01], [-0.02, 0.03, -0.03, 0.02], [0.01, -0.02, 0.03, -0.03]])
    L = 0.4 * np.exp(noise)
    assert W.plateau_status(L, points=2) == W.UNDECIDED
    assert W.plateau_status(L, points=4) == W.HOLDS
    falling = 0.4 * np.exp(-0.2 * np.arange(4) + noise)  # 18 % per interval
    assert W.plateau_status(falling, points=4) == W.FAILS


def test_binomial_status_against_the_closed_form_and_scipy():
    from scipy.stats import binomtest

    # zero events: the upper bound is 1 - level**(1/n) exactly (about 3/n)
    for n in (10, 100, 299, 300, 1000):
        assert abs(W.binomial_upper(0, n) - (1 - 0.05 ** (1 / n))) < 1e-12
    assert W.binomial_status(0, 298, 0.01) == W.UNDECIDED and W.binomial_status(0, 299, 0.01) == W.HOLDS
    assert W.binomial_status(0, 0, 0.01) == W.UNDECIDED
    # the bounds are those of scipy's exact binomial test (one-sided intervals at 95 %)
    for k, n in ((3, 40), (12, 100), (30, 200)):
        hi = binomtest(k, n, alternative="less").proportion_ci(0.95, method="exact").high
        lo = binomtest(k, n, alternative="greater").proportion_ci(0.95, method="exact").low
        assert abs(W.binomial_upper(k, n) - hi) < 1e-10
        assert W.binomial_status(k, n, hi + 1e-9) == W.HOLDS and W.binomial_status(k, n, hi - 1e-9) != W.HOLDS
        assert W.binomial_status(k, n, lo - 1e-9) == W.FAILS and W.binomial_status(k, n, lo + 1e-9) == W.UNDECIDED
    with pytest.raises(ValueError):
        W.binomial_status(5, 3, 0.1)


def test_binomial_status_at_least_against_scipy():
    """"At least a threshold fraction": holds when scipy's exact one-sided lower bound reaches it, fails when its upper bound
    is below it; all events bound the rate from above by 1, none from below by 0."""
    from scipy.stats import binomtest

    for k, n in ((3, 40), (25, 100), (60, 200)):
        hi = binomtest(k, n, alternative="less").proportion_ci(0.95, method="exact").high
        lo = binomtest(k, n, alternative="greater").proportion_ci(0.95, method="exact").low
        assert abs(W.binomial_lower(k, n) - lo) < 1e-10
        assert W.binomial_status(k, n, lo - 1e-9, at_least=True) == W.HOLDS
        assert W.binomial_status(k, n, lo + 1e-9, at_least=True) == W.UNDECIDED
        assert W.binomial_status(k, n, hi + 1e-9, at_least=True) == W.FAILS
        assert W.binomial_status(k, n, hi - 1e-9, at_least=True) == W.UNDECIDED
    assert W.binomial_lower(0, 50) == 0.0 and W.binomial_upper(50, 50) == 1.0
    assert W.binomial_status(0, 50, 0.2, at_least=True) == W.FAILS and W.binomial_status(0, 0, 0.2, at_least=True) == W.UNDECIDED


def test_paper_height_at_rate_follows_table2s_two_rates():
    """At VGG-11's smaller rate it is Table 2's own row; at the row's rate the row; the exponent is the same for every row."""
    from sgdbook.papers.walk_with_sgd.settings.lr_and_batch import TABLE2_PAPER

    for i, e in enumerate((1, 10, 25, 100)):
        assert W.paper_height_at_rate("cnn", e, 0.05) == pytest.approx(TABLE2_PAPER[("VGG-11", 0.05)][i])
        assert W.paper_height_at_rate("cnn", e, 0.1) == pytest.approx(W.paper_height("cnn", e))
        k = np.log2(TABLE2_PAPER[("VGG-11", 0.1)][i] / TABLE2_PAPER[("VGG-11", 0.05)][i])
        assert W.paper_height_at_rate("resnet", e, 0.075) == pytest.approx(TABLE2_PAPER[("ResNet-56", 0.3)][i] * 0.25 ** k)
    assert W.paper_height_at_rate("cnn", 1, 0.2) == pytest.approx(0.0625 * 0.0625 / 0.0102)  # doubling: the halving's ratio
    assert W.paper_height_at_rate("cnn", 101, 0.1) is None


def test_paper_height_interpolates_between_table2_epochs():
    for e, h in zip((1, 10, 25, 100), (0.0625, 0.0199, 0.0104, 0.0025)):
        assert W.paper_height("cnn", e) == h and W.paper_height("cnn", e, interpolate=True) == h
    assert W.paper_height("cnn", 5) is None and W.paper_height("cnn", 101, interpolate=True) is None
    h5 = W.paper_height("cnn", 5, interpolate=True)
    # log-log linear between epochs 1 and 10: h(5) = h1 * (h10/h1) ** log10(5)
    assert abs(h5 - 0.0625 * (0.0199 / 0.0625) ** math.log10(5)) < 1e-12
    hs = [W.paper_height("resnet", e, interpolate=True) for e in range(1, 101)]
    assert all(a >= b for a, b in zip(hs, hs[1:]))  # the paper's heights fall; so does the interpolation
    assert W.in_height_regime(0.1 * h5, "cnn", 5, interpolate=True) and not W.in_height_regime(0.09 * h5, "cnn", 5, interpolate=True)
    assert W.in_height_regime(1.0, "cnn", 5) is None


def test_first_versions_fail_on_a_missed_mean_and_ignore_the_regime():
    late = [_gd(130, 0.2, 0.5, 0.5), _gd(140, 0.3, 0.4, 0.6), _gd(150, 0.25, 0.6, 0.4)]
    assert W.judge_gd_window(late, 40)[0] == "inconclusive"
    v, st, _ = W.judge_gd_window(late, 40, first_version=True)  # outside the regime, yet judged, and every miss fails
    assert v == "not-reproduced" and st == [W.FAILS] * 3
    only_a = [_gd(15, 0.9, -0.5, 0.5), _gd(16, 0.9, -0.52, 0.4), _gd(14, 0.9, -0.48, 0.6)]  # (a) met, (b) and (c) not
    assert W.judge_gd_window(only_a, 40)[0] == "partially-reproduced"
    assert W.judge_gd_window(only_a, 40, first_version=True)[0] == "not-reproduced"  # partially needed (a) and one other
    a_and_b = [_gd(15, 0.9, -0.9, 0.5), _gd(16, 0.9, -0.92, 0.4), _gd(14, 0.9, -0.88, 0.6)]
    assert W.judge_gd_window(a_and_b, 40, first_version=True)[0] == "partially-reproduced"
    wide_miss = [_gd(15, 0.95, -0.9, 0.0), _gd(16, 0.5, -0.9, 0.0), _gd(14, 0.9, -0.9, 0.0)]  # mean 0.78 < 0.8, wide
    assert W.judge_gd_window(wide_miss, 40)[1][0] == W.UNDECIDED
    assert W.judge_gd_window(wide_miss, 40, first_version=True)[1][0] == W.FAILS
    gd = [{"rise_frac": 0.0, "cos_mean": c, "onset": 15.0} for c in (-0.8, -0.82, -0.78)]
    close = [_sgd(0.9, 0.3, -0.79), _sgd(0.95, 0.35, -0.83), _sgd(0.85, 0.4, -0.77)]  # cos not above GD's: (d)
    assert W.judge_sgd_window(close, gd)[1][3] == W.UNDECIDED
    assert W.judge_sgd_window(close, gd, first_version=True)[1][3] == W.FAILS


def test_left_descent_at_matches_settled():
    g = np.random.default_rng(0)
    for _ in range(20):
        c = np.r_[np.nan, np.cumsum(g.normal(0, 0.1, 60)) * -0.2 + 0.3]
        at = W.left_descent_at(c)
        for b in range(2, 62):
            assert W.settled(c, b) == (at is not None and at <= b - 1)
    assert W.left_descent_at(np.full(30, 0.2)) is None


def test_cos_roles_inputs_on_whole_and_truncated_runs():
    """Over the whole runs the inputs are late_mean_cos, the final distance and settled(cos, steps // 2); over the first n
    iterations they equal those of runs cut at n."""
    import types

    import torch

    g = np.random.default_rng(1)

    def run(steps, seed):
        rng = np.random.default_rng(seed)
        cos = np.r_[np.nan, np.linspace(0.5, -0.3, steps - 1) + rng.normal(0, 0.05, steps - 1)]
        return types.SimpleNamespace(traj=types.SimpleNamespace(cos=torch.tensor(cos), dist=torch.tensor(np.cumsum(rng.random(steps + 1)))))

    B, R, S = [10, 20], [0.1, 0.2, 0.4], range(3)
    keys = [("B", b, s) for b in B for s in S] + [("lr", r, s) for r in R for s in S]
    runs = {k: run(40, int(g.integers(1 << 30))) for k in keys}
    whole = W.cos_roles_inputs(runs, B, R, S)
    assert whole["cos_bs"] == [[W.late_mean_cos(runs[("B", b, s)].traj) for b in B] for s in S]
    assert whole["cos_lr"] == [[W.late_mean_cos(runs[("lr", r, s)].traj) for r in R] for s in S]
    assert whole["dist_bs"] == [[float(runs[("B", b, s)].traj.dist[-1]) for b in B] for s in S]
    assert whole["settled_lr"] == [[W.settled(runs[("lr", r, s)].traj.cos.numpy(), 20) for r in R] for s in S]
    cut = {k: types.SimpleNamespace(cos=v.traj.cos[:24], dist=v.traj.dist[:25]) for k, v in runs.items()}
    assert W.cos_roles_inputs(runs, B, R, S, n=24) == W.cos_roles_inputs(cut, B, R, S)


def test_pooled_rate_status():
    """Equal cluster sizes: the one-sample t test on the clusters' fractions (scipy); unequal: the ratio estimator's
    cluster-robust standard error, written out; a rate holds or fails only where the test decides; one cluster holds only
    under the rule before the review of the holding rule; no trials decide nothing."""
    n = np.array([40, 40, 40, 40])
    k = np.array([3, 5, 2, 6])
    st, r, p = W.pooled_rate_status(k, n, 0.2, at_least=True)
    ref = ss.ttest_1samp(k / n, 0.2, alternative="less").pvalue
    assert st == W.FAILS and r == k.sum() / n.sum() and abs(p - ref) < 1e-12
    assert W.threshold_status(k / n, 0.2, at_least=True) == st
    for thr, at_least in ((0.05, True), (0.2, False), (0.09, True), (0.14, False)):
        p_claim = ss.ttest_1samp(k / n, thr, alternative="greater" if at_least else "less").pvalue
        want = W.HOLDS if p_claim < 0.05 else W.threshold_status(k / n, thr, at_least=at_least)
        assert W.pooled_rate_status(k, n, thr, at_least=at_least)[0] == want == W.threshold_status(k / n, thr, at_least=at_least)
        assert W.pooled_rate_status(k, n, thr, at_least=at_least, on_mean=True)[0] == W.HOLDS
    assert W.pooled_rate_status(k, n, 0.09, at_least=True)[0] == W.UNDECIDED  # the mean 0.1 is on the side, not shown
    k2, n2 = np.array([1, 9, 4]), np.array([10, 60, 25])
    r2 = k2.sum() / n2.sum()
    se = np.sqrt(3 / 2 * ((k2 - r2 * n2) ** 2).sum()) / n2.sum()
    st2, rr, p2 = W.pooled_rate_status(k2, n2, 0.3, at_least=True)
    assert rr == r2 and abs(p2 - ss.t.cdf((r2 - 0.3) / se, 2)) < 1e-12 and st2 == (W.FAILS if p2 < 0.05 else W.UNDECIDED)
    st3 = W.pooled_rate_status(k2, n2, 0.05, at_least=True)[0]
    assert st3 == (W.HOLDS if ss.t.sf((r2 - 0.05) / se, 2) < 0.05 else W.UNDECIDED)
    assert W.pooled_rate_status([0], [30], 0.2, at_least=True)[0] == W.UNDECIDED
    assert W.pooled_rate_status([9], [30], 0.2, at_least=True)[0] == W.UNDECIDED
    assert W.pooled_rate_status([9], [30], 0.2, at_least=True, on_mean=True)[0] == W.HOLDS
    assert W.pooled_rate_status([6, 6], [30, 30], 0.2, at_least=True, exact_ties=True)[0] == W.HOLDS  # before the review
    assert W.pooled_rate_status([6, 6], [30, 30], 0.2, at_least=True)[0] == W.UNDECIDED  # on the threshold: nothing shown
    # equal rates away from the threshold: the test with one event moved toward it in the smallest cluster, written out
    kk, nn = np.array([8.0, 8.0, 4.0]), np.array([20.0, 20.0, 10.0])
    moved = np.array([8.0, 8.0, 3.0])
    rm = moved.sum() / nn.sum()
    se_m = np.sqrt(3 / 2 * ((moved - rm * nn) ** 2).sum()) / nn.sum()
    st_m, r_m, p_m = W.pooled_rate_status(kk, nn, 0.2, at_least=True)
    assert r_m == 0.4 and abs(p_m - ss.t.cdf((rm - 0.2) / se_m, 2)) < 1e-12
    assert st_m == (W.HOLDS if ss.t.sf((rm - 0.2) / se_m, 2) < 0.05 else W.UNDECIDED)
    # no event anywhere is not "exactly" below a rate: one event moved in, t with 1 df (se 1/60 written out)
    assert W.pooled_rate_status([0, 0], [30, 30], 0.02, at_least=False, exact_ties=True)[0] == W.HOLDS
    for thr in (0.2, 0.02):
        p_claim = ss.t.sf((thr - 1 / 60) / (1 / 60), 1)
        assert W.pooled_rate_status([0, 0], [30, 30], thr, at_least=False)[0] == (W.HOLDS if p_claim < 0.05 else W.UNDECIDED)
    assert W.pooled_rate_status([0, 0], [30, 30], 0.02, at_least=False)[0] == W.UNDECIDED
    assert W.pooled_rate_status([0, 0], [0, 0], 0.2, at_least=True)[0] == W.UNDECIDED
    assert W.pooled_rate_status([0, 0, 5], [0, 10, 10], 0.2, at_least=True)[1] == 0.25  # an empty cluster drops out
    with pytest.raises(ValueError):
        W.pooled_rate_status([5], [3], 0.2, at_least=True)


def test_cos_roles_part3_fails_only_beyond_its_threshold():
    """(3) fails when the rate slope is significantly beyond half the batch slope (the per-seed excess, paired over seeds,
    against scipy's one-sample t test on np.polyfit slopes), not merely significantly non-zero."""
    from scipy import stats as sps

    B, lrs = [25, 50, 100, 200], [0.025, 0.05, 0.1, 0.2]
    lb, ll = np.log2(B), np.log2(lrs)
    rng = np.random.default_rng(3)
    falling = -0.1 * lb + 0.003 * rng.standard_normal((3, 4))  # batch slope -0.1 per doubling
    dist = np.exp(-0.1 * lb) * (1 + 0.01 * rng.standard_normal((3, 4)))
    near = -0.06 * ll + np.array([[0.0], [0.02], [-0.02]]) * ll + 0.002 * rng.standard_normal((3, 4))
    v, ev = W.cos_roles_verdict(B, falling, dist, lrs, near)
    b = [np.polyfit(lb, row, 1)[0] for row in falling]
    r = [np.polyfit(ll, row, 1)[0] for row in near]
    excess = np.sign(np.mean(r)) * np.array(r) - 0.5 * np.sign(np.mean(b)) * np.array(b)
    assert ev["cos_slope_lr_excess"] == pytest.approx(excess.mean())
    assert ev["cos_slope_lr_excess_p"] == pytest.approx(sps.ttest_1samp(excess, 0.0, alternative="greater").pvalue)
    lo, hi = sps.t.interval(0.95, len(excess) - 1, loc=excess.mean(), scale=sps.sem(excess))
    assert ev["cos_slope_lr_excess_ci"] == pytest.approx([lo, hi])
    assert ev["cos_slope_lr_excess_p_below"] == pytest.approx(sps.ttest_1samp(excess, 0.0, alternative="less").pvalue)
    assert ev["cos_slope_lr_p_two_sided"] < 0.05 < ev["cos_slope_lr_excess_p"]  # non-zero, not beyond half
    assert ev["status_3"] == W.UNDECIDED and v == "inconclusive"
    assert W.cos_roles_verdict(B, falling, dist, lrs, near, part3_against="zero")[1]["status_3"] == W.FAILS
    # (3) holds only where the excess is shown below 0; on its mean before the review of the holding rule
    small = -0.02 * ll + np.array([[0.0], [0.01], [-0.01]]) * ll + 0.002 * rng.standard_normal((3, 4))
    assert W.cos_roles_verdict(B, falling, dist, lrs, small)[1]["status_3"] == W.HOLDS
    wobbly = -0.045 * ll + np.array([[0.0], [0.04], [-0.04]]) * ll
    assert W.cos_roles_verdict(B, falling, dist, lrs, wobbly)[1]["status_3"] == W.UNDECIDED
    assert W.cos_roles_verdict(B, falling, dist, lrs, wobbly, part3_against="on-mean")[1]["status_3"] == W.HOLDS
    _, ev_j, pilot = W.cos_roles_judgement(B, falling, dist, lrs, near, settled_bs=np.ones((3, 4), bool),
                                           settled_lr=np.ones((3, 4), bool))
    assert ev_j["part3_against_zero_verdict"] == "partially-reproduced" and "before the sixth review" in pilot
    assert ev_j["part3_on_mean_verdict"] == "inconclusive" and "before the review of the holding rule" in pilot
    # well beyond half the batch slope in every seed: fails; rising with the rate: the same on the other side
    far = -0.2 * ll + 0.002 * rng.standard_normal((3, 4))
    assert W.cos_roles_verdict(B, falling, dist, lrs, far)[1]["status_3"] == W.FAILS
    assert W.cos_roles_verdict(B, falling, dist, lrs, -far)[1]["status_3"] == W.FAILS
    with pytest.raises(ValueError, match="part3_against"):
        W.cos_roles_verdict(B, falling, dist, lrs, near, part3_against="mean")


def test_table2_judgement_counts_epochs_in_the_regime_over_every_seed():
    """Table 2's criterion on designed heights: epochs where a seed's walk is below a tenth of the paper's height are not
    judged and count neither way ("almost all" over Table 2's 4 epochs); the smaller rate above in every seed at two judged
    epochs fails (1); the height falling between the first and last judged epochs holds (2)."""
    E, S = [1, 10, 25, 100], range(3)
    paper = {e: W.paper_height("cnn", e) for e in E}
    rng = np.random.default_rng(2)

    def heights(scale_lo, fitted=()):
        h = {}
        for s in S:
            for e in E:
                f = 0.01 if e in fitted else 1.0  # fitted: a hundredth of the paper's height
                h[("cnn", 0.1, s, e)] = paper[e] * f * (1 + 0.05 * rng.random())
                h[("cnn", 0.05, s, e)] = paper[e] * f * scale_lo * (1 + 0.05 * rng.random())
        return h

    rates = {"cnn": (0.1, 0.05)}
    v, st, per, _, _ = W.table2_judgement(heights(0.5), rates, E, S, nets=("cnn",))
    assert v == "reproduced" and per["cnn"]["judged_epochs"] == 4 and per["cnn"]["smaller_lr_lower_epochs"] == 4
    v, st, per, _, _ = W.table2_judgement(heights(0.5, fitted=(25, 100)), rates, E, S, nets=("cnn",))
    assert st == [W.UNDECIDED, W.HOLDS] and v == "inconclusive" and per["cnn"]["falls_epochs"] == "1-10"
    assert "epoch 25: not judged (0 of 3 seeds in the regime)" in per["cnn"]["epochs_s"]
    v, st, _, _, _ = W.table2_judgement(heights(1.5), rates, E, S, nets=("cnn",))
    assert st[0] == W.FAILS and v == "partially-reproduced"
    h = heights(0.5)
    assert W.table2_in_regime(h, "cnn", (0.1, 0.05), 0, 10)
    h[("cnn", 0.05, 0, 10)] = 0.05 * paper[10]  # one rate of one seed below a tenth: the seed is out
    assert not W.table2_in_regime(h, "cnn", (0.1, 0.05), 0, 10)
    assert W.table2_judgement(h, rates, E, S, nets=("cnn",))[2]["cnn"]["judged_epochs"] == 3


def test_threshold_status_on_log_ratios():
    # one large ratio among three: the raw mean test is swayed by it, the test on the logs is scipy's on the logs
    v = np.array([1.8, 2.6, 9.0])
    for thr in (1.5, 2.0, 3.0):
        p = ss.ttest_1samp(np.log(v), np.log(thr), alternative="greater").pvalue
        q = ss.ttest_1samp(np.log(v), np.log(thr), alternative="less").pvalue
        want = W.HOLDS if p < 0.05 else W.FAILS if q < 0.05 else W.UNDECIDED
        assert W.threshold_status(v, thr, at_least=True, log=True) == want
    r = np.array([2.1, 2.2, 2.3])
    assert W.threshold_status(r, 2.0, at_least=True, log=True) == W.HOLDS
    assert W.threshold_status(r, 2.0, at_least=False, log=True) == W.FAILS
    with pytest.raises(ValueError, match="positive"):
        W.threshold_status([0.0, 1.0], 2.0, at_least=True, log=True)


def test_geometric_mean_and_its_interval():
    v = [1.0, 2.0, 8.0]
    assert W.geo_mean(v) == pytest.approx(2.5198420997897464)
    ci = ss.t.interval(0.95, 2, loc=np.log(v).mean(), scale=np.log(v).std(ddof=1) / np.sqrt(3))
    assert W.geo_mean_ci(v, 3) == f"{W.geo_mean(v):.3f} [{np.exp(ci[0]):.3f}, {np.exp(ci[1]):.3f}]"
    assert W.geo_mean_ci([3.0]) == "3.00" and W.geo_mean_ci([]) == "—"
    with pytest.raises(ValueError, match="positive"):
        W.geo_mean_ci([1.0, -1.0])


def test_threshold_status_on_equal_fractions_of_counts():
    """Fractions of counts equal in every seed are not a spread of zero: the t test with the seed of fewest trials moved
    one count toward the threshold (scipy), and nothing on the threshold; without counts, zero spread decides exactly."""
    assert W.threshold_status([0.5, 0.5], 0.5, at_least=True) == W.HOLDS  # before the review
    assert W.threshold_status([0.5, 0.5], 0.5, at_least=True, counts=[10, 10]) == W.UNDECIDED
    assert W.threshold_status([0.4, 0.4], 0.5, at_least=True) == W.FAILS
    assert W.threshold_status([0.4, 0.4], 0.5, at_least=True, counts=[10, 10]) == W.UNDECIDED
    ref = ss.ttest_1samp([0.9, 1.0, 1.0, 1.0], 0.5, alternative="greater").pvalue
    assert ref < 0.05 and W.threshold_status([1.0] * 4, 0.5, at_least=True, counts=[10, 20, 10, 30]) == W.HOLDS
    # the seed with the fewest trials moves: 0/3 -> 1/3 against <= 0.1 with three seeds
    p = ss.ttest_1samp([0.0, 0.0, 1 / 3], 0.1, alternative="greater").pvalue
    assert W.threshold_status([0.0, 0.0, 0.0], 0.1, at_least=False, counts=[20, 20, 3]) == (W.FAILS if p < 0.05 else W.UNDECIDED)
    assert W.threshold_status([0.0, 0.0, 0.0], 0.1, at_least=False, counts=[40, 40, 40]) == W.HOLDS
    # NaN replicates drop out with their counts; unequal fractions: the plain t test, counts or not
    assert W.threshold_status([1.0, np.nan, 1.0], 0.5, at_least=True, counts=[10, 0, 10]) == W.threshold_status(
        [1.0, 0.9], 0.5, at_least=True)
    v = [0.3, 0.6, 0.7]
    assert W.threshold_status(v, 0.2, at_least=True, counts=[10, 10, 10]) == W.threshold_status(v, 0.2, at_least=True)
    with pytest.raises(ValueError):
        W.threshold_status([0.1, 0.2], 0.5, at_least=True, counts=[10])


def test_units_bound_status_bounds_the_rate_over_independent_units():
    """Rare events over runs: the Clopper-Pearson bound on the runs with any event (scipy's beta), whatever the number of
    steps; fails only where the cluster-robust test puts the rate above the threshold."""
    from scipy.stats import beta

    st, b = W.units_bound_status([0] * 6, [100] * 6, 0.05)
    assert st == W.UNDECIDED and b == pytest.approx(beta.ppf(0.95, 1, 6)) and b == pytest.approx(1 - 0.05 ** (1 / 6))
    assert W.units_bound_status([0] * 59, [10] * 59, 0.05)[0] == W.HOLDS
    assert W.units_bound_status([0] * 58, [10] * 58, 0.05)[0] == W.UNDECIDED
    st, b = W.units_bound_status([1] + [0] * 99, [10] * 100, 0.05)
    assert st == W.HOLDS and b == pytest.approx(beta.ppf(0.95, 2, 99))
    assert W.units_bound_status([5, 6, 4, 5], [20] * 4, 0.05)[0] == W.FAILS
    # fails by the t test on the runs' fractions (scipy), every run weighing alike
    k, n = np.array([5, 1, 1, 2]), np.array([20, 40, 40, 40])
    p = ss.ttest_1samp(k / n, 0.05, alternative="greater").pvalue
    assert W.units_bound_status(k, n, 0.05)[0] == (W.FAILS if p < 0.05 else W.UNDECIDED)
    assert W.units_bound_status([0, 0], [0, 0], 0.05) == (W.UNDECIDED, 1.0)
    with pytest.raises(ValueError):
        W.units_bound_status([3], [2], 0.05)
