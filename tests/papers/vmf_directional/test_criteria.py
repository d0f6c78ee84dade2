"""The criteria of the vmf training chapters on synthetic runs whose answer is known."""

import math

import numpy as np
import pytest

from sgdbook import directional as vd
from sgdbook.papers.vmf_directional import criteria as C
from sgdbook.papers.vmf_directional import runs


def _run(kappa, *, reached=True, seed=0, epochs=None, rows=None, n_s=64, d=1000):
    kappa = np.asarray(kappa, dtype=float)
    epochs = np.arange(kappa.size) if epochs is None else np.asarray(epochs)
    r = {k: np.ones(kappa.size) for k in runs.ROW_KEYS}
    r["kappa"] = kappa
    r["train_acc"] = np.r_[np.full(kappa.size - 1, 0.5), 1.0 if reached else 0.5]
    r.update(rows or {})
    return runs.Run("FNN", seed, 64, d, n_s, epochs, r, np.zeros(2), np.zeros(2), int(epochs[-1]), reached)


def _family(shape, noise, n=5, seed=0, **kw):
    rng = np.random.default_rng(seed)
    return [_run(np.exp(np.log(shape) + noise * rng.normal(size=len(shape))), seed=k, **kw) for k in range(n)]


DOWN = np.geomspace(1000, 10, 10)


def test_decrease_holds_fails_on_a_consistent_rise_and_is_undecided_below_the_rule():
    assert C.decrease(_family(DOWN, 0.05)).status == C.HOLDS
    up = DOWN.copy()
    up[6] = up[5] * 3  # every run rises at step 5 -> 6
    d = C.decrease(_family(up, 0.02))
    assert d.status == C.FAILS and 5 in d.rises
    assert C.decrease(_family(up, 0.02), monotone=False).status == C.HOLDS  # it still ends below its start
    assert C.decrease(_family(DOWN, 0.05, reached=False)).status == C.UNDECIDED
    flat = C.decrease(_family(np.full(10, 100.0), 0.2))
    assert flat.status == C.FAILS and flat.end_vs_start.df == 4
    assert flat.ratio_end_start == pytest.approx(math.exp(flat.end_vs_start.effect))


def test_noise_alone_is_not_a_significant_rise():
    # a rise of the mean inside the run-to-run noise (the old Figure 5 failure) does not count
    fails = sum(bool(C.decrease(_family(DOWN, 0.3, seed=s)).rises) for s in range(200))
    assert fails / 200 < 0.05


def test_spread_lower_and_monotone_comparisons():
    wide, narrow = _family(DOWN, 0.5, seed=1), _family(DOWN, 0.02, seed=2)
    assert C.spread_lower(wide, narrow).status == C.HOLDS
    assert C.spread_lower(narrow, wide).status == C.FAILS
    assert C.spread_lower(wide, _family(DOWN, 0.02, reached=False)).status == C.UNDECIDED
    zigzag = _family(DOWN * np.tile([1, 2.5], 5), 0.05, seed=4)
    t = C.less_monotone(zigzag, _family(DOWN, 0.01, seed=5))
    assert t.status == C.HOLDS and t.a < t.b
    assert C.less_monotone(_family(DOWN, 0.01, seed=5), zigzag).status == C.FAILS
    g = C.gap_shrinks(_family(DOWN, 0.01, seed=6), zigzag, _family(DOWN, 0.01, seed=7), _family(DOWN, 0.01, seed=8))
    assert g.status == C.HOLDS and g.a > g.b  # the gap without BN (a) is larger than with BN (b)


def test_snr_drivers_separates_direction_from_norm():
    n_s, k = 64, 8
    rt = np.linspace(0.9, 0.1, k)
    calm = {"rtilde": rt, "norm_snr": np.full(k, 20.0), "rbar": rt, "norm_cv": np.full(k, 0.05)}
    calm["snr"] = 1 / np.sqrt(sum(runs.snr_parts(rt, calm["norm_snr"], n_s)))
    d = C.snr_drivers(_run(np.geomspace(1e4, 10, k), rows=calm, n_s=n_s))
    assert d.status == C.HOLDS and d.direction_share > 0.9 and d.rho_kappa > 0.99
    noisy = {"rtilde": np.full(k, 0.5), "norm_snr": np.geomspace(10, 0.5, k), "rbar": np.full(k, 0.5)}
    noisy["snr"] = 1 / np.sqrt(sum(runs.snr_parts(noisy["rtilde"], noisy["norm_snr"], n_s)))
    d = C.snr_drivers(_run(np.geomspace(1e4, 10, k), rows=noisy, n_s=n_s))
    assert d.status == C.FAILS and d.direction_share < 0.1
    assert abs(d.rho_norm) > 0.99  # a strong negative correlation with normSNR is not "less correlated"


def test_verdicts_reasons_kappa_end_and_angles():
    assert C.verdict_of([C.HOLDS, C.HOLDS]) == "reproduced"
    assert C.verdict_of([C.HOLDS, C.FAILS]) == "partially-reproduced"
    assert C.verdict_of([C.HOLDS, C.UNDECIDED]) == "inconclusive"
    assert C.verdict_of([C.FAILS, C.UNDECIDED]) == "not-reproduced"
    r = C.reasons("inconclusive", [C.HOLDS, C.UNDECIDED], ["a", "b"])
    assert "b cannot be judged" in r["why"] and r["decide"]
    assert C.reasons("reproduced", [C.HOLDS], ["a"]) == {"why": "", "decide": ""}
    d, n_s = 1000, 64
    rb = vd.rbar_of_kappa_hat(2 * d / math.sqrt(n_s), d)
    end = C.kappa_end([_run([500, 2 * d / math.sqrt(n_s)], rows={"rbar": np.array([0.5, rb])}, d=d, n_s=n_s)], d / math.sqrt(n_s))
    assert end.ratio == pytest.approx(2.0) and end.ratio_ok and not end.uniform_ok
    assert end.implied_kappa == pytest.approx(math.sqrt(3) * d / math.sqrt(n_s))
    rng = np.random.default_rng(0)
    u = rng.normal(size=(3000, 500))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    assert C.angle_fit(u[:, 0], 500).matches  # uniform directions follow Eq. (2)
    assert not C.angle_fit(np.full(3000, 0.3), 500).matches
