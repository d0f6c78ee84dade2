"""The small-sample statistics behind verdicts, against scipy's own tests and closed forms."""

import math

import numpy as np
import pytest
from scipy import stats as ss

from sgdbook import stats


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
