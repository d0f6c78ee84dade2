"""The small-sample statistics behind verdicts, against scipy's own tests and closed forms."""

import math
import numpy as np
import pytest
from scipy import stats as ss
from sgdbook import stats
from scipy import stats as sps


def test_t_interval_matches_scipy_and_uses_t_not_z():
    x = np.array([1.0, 2.0, 4.0, 7.0])
    ci = stats.t_interval(x, level=0.95)
    lo, hi = ss.t.interval(0.95, 3, loc=x.mean(), scale=ss.sem(x))
    assert ci.low == pytest.approx(lo) and ci.high == pytest.approx(hi) and ci.df == 3
    assert ci.half_width > 1.96 * ci.se * 1.5  # t_{0.975, 3} = 3.18, not 1.96
    arr = stats.t_interval(np.stack([x, 2 * x], axis=1), axis=0)
    assert np.allclose(arr.mean, [x.mean(), 2 * x.mean()])
    with pytest.raises(ValueError, match="at least 2"):
        stats.t_interval([1.0])


def test_paired_welch_and_one_sample_agree_with_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=6), rng.normal(size=6) + 0.5
    assert stats.paired_t(a, b).p_two_sided == pytest.approx(ss.ttest_rel(a, b).pvalue)
    assert stats.welch_t(a, b).p_two_sided == pytest.approx(ss.ttest_ind(a, b, equal_var=False).pvalue)
    one = stats.one_sample_t(a, 0.2)
    assert one.p_two_sided == pytest.approx(ss.ttest_1samp(a, 0.2).pvalue)
    assert one.p_greater + one.p_less == pytest.approx(1.0)
    # the example: four paired differences with z = 2 have p ≈ 0.14 under t(3), not 0.046
    d = np.array([0.0, 1.0, 2.0, 3.0])
    d = d - d.mean() + 2 * d.std(ddof=1) / math.sqrt(4)  # mean = 2 standard errors
    res = stats.one_sample_t(d)
    assert res.t == pytest.approx(2.0) and res.p_two_sided == pytest.approx(2 * ss.t.sf(2, 3))
    assert 0.13 < res.p_two_sided < 0.15
    with pytest.raises(ValueError, match="same length"):
        stats.paired_t([1, 2], [1, 2, 3])


def test_step_changes_counts_only_significant_rises():
    rng = np.random.default_rng(1)
    base = np.array([10.0, 8.0, 6.0, 6.2, 4.0])  # one small rise, inside the noise
    curves = base + rng.normal(scale=0.5, size=(4, 5))
    sc = stats.step_changes(curves)
    assert not sc.significant_up.any()
    clear = np.array([10.0, 8.0, 12.0, 6.0]) + rng.normal(scale=0.01, size=(5, 4))
    sc2 = stats.step_changes(clear)
    assert sc2.significant_up.tolist() == [False, True, False]
    assert sc2.significant_down.tolist() == [True, False, True]


def test_slopes_match_polyfit_per_replicate():
    rng = np.random.default_rng(5)
    x, y = np.log2([25, 50, 100, 200]), rng.standard_normal((4, 4))
    np.testing.assert_allclose(stats.slopes(x, y), [np.polyfit(x, row, 1)[0] for row in y], rtol=1e-12)
    with pytest.raises(ValueError, match="replicates"):
        stats.slopes(x, y[:, :3])


def test_slope_t_treats_replicates_as_units():
    x = np.arange(10.0)
    rng = np.random.default_rng(2)
    curves = -0.5 * x + rng.normal(scale=0.1, size=(4, 10))
    res = stats.slope_t(x, curves)
    assert res.effect == pytest.approx(-0.5, abs=0.05) and res.p_less < 1e-3 and res.df == 3
    flat = np.cumsum(rng.normal(size=(4, 10)), axis=1)  # random walks: dependent points, no trend
    assert stats.slope_t(x, flat).df == 3


def test_verdict_from():
    assert stats.verdict_from([True, True]) == "reproduced"
    assert stats.verdict_from([True, False]) == "partially-reproduced"
    assert stats.verdict_from([False, False]) == "not-reproduced"
    assert stats.verdict_from([True, False], partial_if_any=False) == "not-reproduced"


def test_pointwise_t_and_ordering_agree_with_scipy():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(5, 7)) + np.linspace(0, 2, 7)
    b = rng.normal(size=(5, 7))
    t, df = stats.pointwise_t(a, b)
    assert np.allclose(t, ss.ttest_rel(a, b, axis=0).statistic) and (df == 4).all()
    tw, dfw = stats.pointwise_t(a, b[:4], paired=False)
    ref = ss.ttest_ind(a, b[:4], axis=0, equal_var=False)
    assert np.allclose(tw, ref.statistic) and np.allclose(ss.t.sf(np.abs(tw), dfw) * 2, ref.pvalue)
    o = stats.ordering(a, b)
    assert o.overall.p_two_sided == pytest.approx(ss.ttest_rel(a.mean(1), b.mean(1)).pvalue)
    assert o.points == 7 and 0 <= o.frac_lower <= o.frac_higher <= 1
    big = stats.ordering(b - 5, b + rng.normal(scale=0.1, size=b.shape))
    assert big.direction == "a lower" and big.frac_lower == 1.0 and big.frac_higher == 0.0
    welch = stats.ordering(b + 3, b[:3], paired=False)
    assert welch.direction == "a higher" and welch.overall.df < 7
    with pytest.raises(ValueError):
        stats.pointwise_t(a[:1], b[:1])
    with pytest.raises(ValueError):
        stats.pointwise_t(a, b[:4])  # paired needs equal shapes


def test_ordering_with_four_seeds_needs_t_not_z():
    # paired differences with mean/se = 2.5 over 4 replicates: z would call it significant (p ≈ 0.012),
    # t with 3 degrees of freedom does not (p ≈ 0.088)
    d = np.array([1.0, 2.0, 3.0, 4.0])
    d = d - d.mean() + 2.5 * d.std(ddof=1) / 2
    o = stats.ordering(d[:, None] + 10, np.full((4, 1), 10.0))
    assert o.overall.t == pytest.approx(2.5) and o.direction == "no significant difference"


def test_combine_verdicts():
    r, p, n, i = "reproduced", "partially-reproduced", "not-reproduced", "inconclusive"
    assert stats.combine_verdicts([r, r]) == r
    assert stats.combine_verdicts([r, n]) == p
    assert stats.combine_verdicts([p, i]) == p
    assert stats.combine_verdicts([n, i]) == n
    assert stats.combine_verdicts([r, i, i]) == i
    assert stats.combine_verdicts([n, n]) == n
    assert stats.combine_verdicts(["not-run-at-this-scale", r]) == i
    with pytest.raises(ValueError):
        stats.combine_verdicts(["erratum", r])
    with pytest.raises(ValueError):
        stats.combine_verdicts([])


def test_joint_z_test_is_calibrated_on_normal_draws():
    rng = np.random.default_rng(0)
    p = [stats.joint_z_test(rng.standard_normal(18)).p_value for _ in range(2000)]
    assert abs(np.mean(np.array(p) < 0.05) - 0.05) < 0.02
    t = stats.joint_z_test(np.r_[np.zeros(17), 10.0])
    assert t.max_abs_z == 10.0 and t.passes() == (False, False)
    assert t.bonferroni_z == pytest.approx(3.4524, abs=1e-3)


def test_z_scores_and_variance_ratio():
    assert stats.z_scores(3.0, 3.0, 0.0, 4.0) == pytest.approx(0.6)
    rng = np.random.default_rng(1)
    draws = rng.normal(0.0, 2.0, size=(500, 5))
    _, df, p1 = stats.variance_ratio_test(draws.std(1, ddof=1), 5, 2.0, ddof=1)
    assert df == 2000 and p1 > 1e-3
    _, _, p0 = stats.variance_ratio_test(draws.std(1, ddof=1), 5, 2.0, ddof=0)
    assert p0 < 1e-6  # treating sample sds as population sds is detected
    assert math.isfinite(p0)


def test_threshold_sides_against_brute_force():
    from scipy import stats as sps

    from sgdbook.stats import threshold_sides

    rng = np.random.default_rng(3)
    x = rng.normal([0.95, 0.5, 0.88], 0.05, size=(6, 3))  # 6 replicates at 3 points
    sides = threshold_sides(x, 0.9)
    q = sps.t.ppf(0.975, 5)
    for j in range(3):
        m, se = x[:, j].mean(), x[:, j].std(ddof=1) / np.sqrt(6)
        assert sides.above[j] == (m - q * se >= 0.9)
        assert sides.below[j] == (m + q * se < 0.9)
    assert not (sides.above & sides.below).any()
    assert sides.below[1] and not sides.above[1]


def test_part_verdict_truth_table():
    from sgdbook.stats import part_verdict

    assert part_verdict(True, False) == "reproduced"
    assert part_verdict(False, True) == "not-reproduced"
    assert part_verdict(True, True) == "not-reproduced"  # a significant contradiction wins
    assert part_verdict(False, False) == "inconclusive"


# ---------------------------------------------------------------------- stats_quantiles
# stats.quantile_interval (coverage, brute-force order statistics) and stats.rank_test (scipy, effect).

def test_quantile_interval_order_statistics_and_coverage():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 101))
    est, lo, hi = stats.quantile_interval(x, 0.9, axis=1)
    v = np.sort(x, axis=1)
    np.testing.assert_array_equal(est, v[:, 90])
    lr, ur = int(sps.binom.ppf(0.025, 101, 0.9)), int(sps.binom.ppf(0.975, 101, 0.9)) + 1
    np.testing.assert_array_equal(lo, v[:, lr - 1])
    np.testing.assert_array_equal(hi, v[:, ur - 1])
    # coverage of the true 0.25-quantile of N(0, 1) over many samples of 60
    xi = sps.norm.ppf(0.25)
    s = rng.normal(size=(4000, 60))
    _, lo, hi = stats.quantile_interval(s, 0.25, axis=1)
    assert ((lo <= xi) & (xi <= hi)).mean() >= 0.94
    # NaN ignored, empty slice NaN
    e, l_, h = stats.quantile_interval(np.array([[np.nan, 1.0, 2.0, 3.0], [np.nan] * 4]), 0.5)
    assert e[0] == 2.0 and np.isnan(e[1]) and l_[0] <= 2.0 <= h[0]


def test_rank_test_matches_scipy_and_effect():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.5, 1, 40), rng.normal(0, 1, 50)
    r = stats.rank_test(a, b)
    assert r.p_greater == pytest.approx(sps.mannwhitneyu(a, b, alternative="greater").pvalue)
    assert r.p_two_sided == pytest.approx(sps.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    brute = np.mean([(ai > bj) + 0.5 * (ai == bj) for ai in a for bj in b])
    assert r.effect == pytest.approx(brute)
    ties = stats.rank_test(np.zeros(10), np.zeros(12))
    assert ties.effect == 0.5 and ties.p_two_sided == pytest.approx(1.0)
    with pytest.raises(ValueError):
        stats.rank_test([], [1.0])


# ---------------------------------------------------------------------- stats_spread
# stats.f_test, stats.rank_correlation and stats.jackknife_se against scipy and brute force.

def test_f_test_matches_scipy_and_its_null_calibration():
    t = stats.f_test(2.0, 4, 1.0, 4)
    assert t.f == pytest.approx(4.0)
    assert t.p_greater == pytest.approx(ss.f.sf(4.0, 4, 4)) and t.p_less == pytest.approx(ss.f.cdf(4.0, 4, 4))
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20000, 5)), rng.normal(size=(20000, 5))
    p = np.array([stats.f_test(x.std(ddof=1), 4, y.std(ddof=1), 4).p_greater for x, y in zip(a[:2000], b[:2000])])
    assert abs((p < 0.05).mean() - 0.05) < 0.015  # the level holds under equal variances
    assert stats.f_test(1.0, 3, 0.0, 3).f == math.inf


def test_rank_correlation_is_spearman_and_nan_when_undefined():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=12), rng.normal(size=12)
    assert stats.rank_correlation(a, b) == pytest.approx(ss.spearmanr(a, b).statistic)
    assert stats.rank_correlation(a, np.exp(a)) == pytest.approx(1.0)
    assert stats.rank_correlation(a, -a) == pytest.approx(-1.0)
    assert math.isnan(stats.rank_correlation([1, 2], [3, 4]))
    assert math.isnan(stats.rank_correlation([1, 1, 1], [3, 4, 5]))
    with pytest.raises(ValueError, match="different lengths"):
        stats.rank_correlation([1, 2, 3], [1, 2])


def test_jackknife_se_of_a_mean_is_the_standard_error():
    rng = np.random.default_rng(2)
    x = rng.normal(size=10)
    loo = [(x.sum() - v) / (x.size - 1) for v in x]  # leave-one-out means
    assert stats.jackknife_se(loo) == pytest.approx(x.std(ddof=1) / math.sqrt(x.size))
    assert math.isnan(stats.jackknife_se([1.0]))


def test_replicates_to_decide_against_a_simulation_of_the_t_test():
    """At the returned n, normal replicates with the observed mean and sd reach p < 0.05 in a one-sided t test (scipy) with
    probability >= 0.8 (20,000 simulated experiments, within their Monte Carlo error); at n - 1 with less."""
    x = np.array([0.012, -0.004, 0.015, 0.001])  # mean 0.006: undecided at 4 replicates
    assert ss.ttest_1samp(x, 0.0, alternative="greater").pvalue > 0.05
    n = stats.replicates_to_decide(x)
    rng = np.random.default_rng(1)

    def reached(k, reps=20_000):
        sims = x.mean() + x.std(ddof=1) * rng.standard_normal((reps, k))
        return float(np.mean(ss.ttest_1samp(sims, 0.0, axis=1, alternative="greater").pvalue < 0.05))

    se = math.sqrt(0.8 * 0.2 / 20_000)
    assert reached(n) >= 0.8 - 3 * se and reached(n - 1) < 0.8 + 3 * se
    assert stats.replicates_to_decide(-x) == n  # the side of the observed mean
    half = stats.replicates_to_decide(x, power=0.5)
    assert half < n and abs(reached(half) - 0.5) < 0.05
    assert stats.replicates_to_decide(x + 0.5, threshold=0.5 + x.mean()) is None  # on the threshold
    assert stats.replicates_to_decide([1.0, 1.0], threshold=0.0) == 2
    assert stats.replicates_to_decide([1.0, -1.0, 0.01], max_n=50) is None  # would need about 500,000
    with pytest.raises(ValueError, match="at least 2"):
        stats.replicates_to_decide([1.0])
    with pytest.raises(ValueError, match="power"):
        stats.replicates_to_decide(x, power=1.0)


def test_hotelling_is_the_t_test_in_one_dimension_and_sees_correlation():
    rng = np.random.default_rng(5)
    x = rng.normal(0.3, 1.0, size=(40, 1))
    h = stats.hotelling_test(x, [0.0])
    from scipy import stats as sst

    t = sst.ttest_1samp(x[:, 0], 0.0)
    assert h.t2 == pytest.approx(t.statistic**2, rel=1e-12) and h.p_value == pytest.approx(t.pvalue, rel=1e-9)
    # two strongly correlated columns off in opposite directions: Σ z² sees little, T² sees it
    n, r = 400, 0.98
    z = rng.standard_normal((n, 2))
    rows = np.c_[z[:, 0], r * z[:, 0] + np.sqrt(1 - r**2) * z[:, 1]] + np.array([0.08, -0.08])
    se = rows.std(0, ddof=1) / np.sqrt(n)
    assert stats.joint_z_test(rows.mean(0) / se).p_value > 0.01 > stats.hotelling_test(rows, [0.0, 0.0]).p_value
    # calibrated under the hypothesis
    p = [stats.hotelling_test(rng.standard_normal((60, 3)), np.zeros(3)).p_value for _ in range(2000)]
    assert 0.04 < np.mean(np.array(p) < 0.05) < 0.06
    with pytest.raises(ValueError, match="more rows than columns"):
        stats.hotelling_test(np.zeros((2, 3)), np.zeros(3))


def test_logit_t_interval_is_scipys_t_interval_on_the_logits_mapped_back():
    """The interval of fractions on the logit scale (scipy's t interval there, mapped back with the inverse logit) stays
    inside (0, 1) where the raw interval leaves it; along an axis as t_interval; ends and NaN refused."""
    from scipy.special import expit, logit

    x = np.array([0.62, 0.98, 0.95, 0.99])
    lo, hi = sps.t.interval(0.95, 3, loc=logit(x).mean(), scale=sps.sem(logit(x)))
    ci = stats.logit_t_interval(x)
    assert ci.low == pytest.approx(expit(lo)) and ci.high == pytest.approx(expit(hi)) and ci.mean == pytest.approx(expit(logit(x).mean()))
    assert 0 < ci.low < ci.mean < ci.high < 1 and stats.t_interval(x).high > 1  # the raw interval leaves (0, 1)
    grid = np.array([[0.2, 0.5], [0.3, 0.6], [0.25, 0.7]])
    both = stats.logit_t_interval(grid)
    for j in range(2):
        col = stats.logit_t_interval(grid[:, j])
        assert both.low[j] == pytest.approx(col.low) and both.high[j] == pytest.approx(col.high)
    for bad in ([0.5, 1.0], [0.0, 0.5], [0.5, np.nan]):
        with pytest.raises(ValueError):
            stats.logit_t_interval(bad)
