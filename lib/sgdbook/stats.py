"""Small statistical tests used to turn measured numbers into verdicts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class JointTest:
    """z-scores of several independent comparisons and their joint χ² test."""

    z: np.ndarray
    chi2: float
    df: int
    p_value: float
    max_abs_z: float
    bonferroni_z: float  # two-sided threshold for the max |z| at the same level

    def passes(self) -> tuple[bool, bool]:
        """(joint test passes, no single |z| beyond the Bonferroni threshold)."""
        return self.p_value >= self.level, self.max_abs_z <= self.bonferroni_z

    level: float = 0.01


def z_scores(a, se_a, b, se_b) -> np.ndarray:
    """``(a − b) / √(se_a² + se_b²)`` elementwise, for independent estimates."""
    a, se_a, b, se_b = (np.asarray(v, dtype=float) for v in (a, se_a, b, se_b))
    return (a - b) / np.sqrt(se_a**2 + se_b**2)


def joint_z_test(z, level: float = 0.01) -> JointTest:
    """Σ z² against χ²(k), and the Bonferroni threshold for max |z| at ``level``."""
    z = np.asarray(z, dtype=float).ravel()
    chi2 = float((z**2).sum())
    return JointTest(
        z=z,
        chi2=chi2,
        df=z.size,
        p_value=float(stats.chi2.sf(chi2, z.size)),
        max_abs_z=float(np.abs(z).max()),
        bonferroni_z=float(stats.norm.isf(level / (2 * z.size))),
        level=level,
    )


@dataclass(frozen=True)
class HotellingTest:
    """One-sample Hotelling T² test that the mean of ``n`` i.i.d. rows (``p`` columns) is ``mu``."""

    t2: float
    f: float
    df: tuple[int, int]
    p_value: float
    n: int


def hotelling_test(rows, mu) -> HotellingTest:
    """Hotelling's T² = n (x̄ − μ)ᵀ S⁻¹ (x̄ − μ) of the rows of ``rows`` (``[n, p]``, i.i.d.; S the
    sample covariance, divisor n − 1) against ``mu``: (n − p) T² / (p (n − 1)) ~ F(p, n − p) for
    Gaussian rows, χ²(p) asymptotically for any rows with finite variance. Unlike Σ z² over the
    columns' z-scores, it accounts for the columns' correlation (for p = 1 it is the t test)."""
    x = np.asarray(rows, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"rows must be [n, p], got shape {x.shape}")
    n, p = x.shape
    if n <= p:
        raise ValueError(f"Hotelling's T² needs more rows than columns (n = {n}, p = {p})")
    d = x.mean(0) - np.broadcast_to(np.asarray(mu, dtype=float), (p,))
    S = np.cov(x, rowvar=False, ddof=1).reshape(p, p)
    t2 = float(n * d @ np.linalg.solve(S, d))
    f = (n - p) * t2 / (p * (n - 1))
    return HotellingTest(t2=t2, f=f, df=(p, n - p), p_value=float(stats.f.sf(f, p, n - p)), n=n)


def variance_ratio_test(sample_sd, n: int, sigma, ddof: int) -> tuple[float, int, float]:
    """Do sample sds (each from ``n`` draws, computed with ``ddof``) fit a known σ?

    Σ (n − ddof)·s²/σ² ~ χ²(k (n − 1)) under the hypothesis; returns (statistic, df, two-sided p).
    """
    s = np.asarray(sample_sd, dtype=float)
    sig = np.broadcast_to(np.asarray(sigma, dtype=float), s.shape).ravel()
    s = s.ravel()
    stat = float(((n - ddof) * s**2 / sig**2).sum())
    df = s.size * (n - 1)
    p = 2 * min(stats.chi2.sf(stat, df), stats.chi2.cdf(stat, df))
    return stat, df, float(min(p, 1.0))


# ------------------------------------------------------------------ small samples (few seeds)


@dataclass(frozen=True)
class MeanCI:
    """Mean of ``n`` independent replicates with its Student-t confidence interval.

    ``se`` is ``sd/√n`` (ddof = 1), ``half_width`` is ``t_{(1+level)/2, n−1} · se``; arrays when the
    replicates were given along an axis of a larger array.
    """

    mean: np.ndarray | float
    se: np.ndarray | float
    half_width: np.ndarray | float
    n: int
    df: int
    level: float

    @property
    def low(self):
        return self.mean - self.half_width

    @property
    def high(self):
        return self.mean + self.half_width


def t_interval(samples, axis: int = 0, level: float = 0.95) -> MeanCI:
    """Mean and Student-t interval of replicates along ``axis`` (e.g. seeds); needs n ≥ 2."""
    x = np.asarray(samples, dtype=float)
    n = x.shape[axis]
    if n < 2:
        raise ValueError(f"a t interval needs at least 2 replicates, got {n}")
    mean = x.mean(axis)
    se = x.std(axis, ddof=1) / math.sqrt(n)
    q = float(stats.t.ppf(0.5 + level / 2, n - 1))
    return MeanCI(mean=mean, se=se, half_width=q * se, n=n, df=n - 1, level=level)


@dataclass(frozen=True)
class BoundedCI:
    """A Student-t interval for replicates of a fraction in (0, 1), made on the logit scale and mapped
    back, so that it stays inside (0, 1): ``mean`` is the inverse logit of the replicates' mean logit
    (not their arithmetic mean), ``low``/``high`` the interval's ends; arrays as for :class:`MeanCI`."""

    mean: np.ndarray | float
    low: np.ndarray | float
    high: np.ndarray | float
    n: int
    df: int
    level: float


def logit_t_interval(samples, axis: int = 0, level: float = 0.95) -> BoundedCI:
    """The Student-t interval of fractions in (0, 1) (shares, ratios to a maximum) along ``axis``,
    made on ``logit x = log(x / (1 − x))`` and mapped back with the inverse logit: an interval on the
    raw fractions can leave (0, 1) with few replicates near an end. Needs n ≥ 2 and every value
    strictly inside (0, 1)."""
    from scipy.special import expit, logit

    x = np.asarray(samples, dtype=float)
    if not np.all((x > 0) & (x < 1)):
        raise ValueError("logit_t_interval needs fractions strictly inside (0, 1); got values outside, at an end or NaN")
    ci = t_interval(logit(x), axis=axis, level=level)
    return BoundedCI(mean=expit(ci.mean), low=expit(ci.low), high=expit(ci.high), n=ci.n, df=ci.df, level=level)


@dataclass(frozen=True)
class TTest:
    """A t statistic with its degrees of freedom, two-sided and one-sided p-values and the effect."""

    t: float
    df: float
    p_two_sided: float
    p_greater: float  # H1: effect > 0
    p_less: float  # H1: effect < 0
    effect: float  # the mean difference (a − b) or the mean
    se: float


def _t(effect: float, se: float, df: float) -> TTest:
    if se == 0:
        t = math.copysign(math.inf, effect) if effect != 0 else 0.0
    else:
        t = effect / se
    return TTest(
        t=float(t), df=float(df), p_two_sided=float(2 * stats.t.sf(abs(t), df)),
        p_greater=float(stats.t.sf(t, df)), p_less=float(stats.t.cdf(t, df)), effect=float(effect), se=float(se),
    )


def one_sample_t(x, mu: float = 0.0) -> TTest:
    """t test of the mean of independent replicates ``x`` against ``mu`` (df = n − 1)."""
    x = np.asarray(x, dtype=float).ravel()
    if x.size < 2:
        raise ValueError(f"a t test needs at least 2 replicates, got {x.size}")
    return _t(float(x.mean() - mu), float(x.std(ddof=1) / math.sqrt(x.size)), x.size - 1)


def paired_t(a, b) -> TTest:
    """Paired t test of ``a − b`` over replicates (e.g. the same seeds under two settings)."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {a.size} and {b.size}")
    return one_sample_t(a - b)


def welch_t(a, b) -> TTest:
    """Welch's t test of mean(a) − mean(b) for two independent groups of replicates."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.size < 2 or b.size < 2:
        raise ValueError("Welch's test needs at least 2 replicates per group")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)) if se > 0 else a.size + b.size - 2
    return _t(float(a.mean() - b.mean()), se, df)


@dataclass(frozen=True)
class StepChanges:
    """Changes between consecutive points of a curve measured over replicates.

    ``t[k]`` is the paired t statistic of ``y[k+1] − y[k]`` over replicates, ``significant_up`` /
    ``significant_down`` the steps whose one-sided p-value is below ``level/steps`` (Bonferroni over
    the steps examined).
    """

    t: np.ndarray
    p_up: np.ndarray
    p_down: np.ndarray
    significant_up: np.ndarray
    significant_down: np.ndarray
    level: float


def step_changes(curves, level: float = 0.05) -> StepChanges:
    """Which consecutive steps of a curve rise or fall significantly.

    ``curves`` is ``[replicates, points]`` (replicates independent, e.g. seeds; the points of one
    replicate may be dependent: each step is tested on the replicates' own differences). A
    "decreasing" claim should fail only on ``significant_up`` steps, not on any rise of the mean.
    """
    y = np.asarray(curves, dtype=float)
    if y.ndim != 2 or y.shape[0] < 2 or y.shape[1] < 2:
        raise ValueError(f"curves must be [replicates ≥ 2, points ≥ 2], got shape {y.shape}")
    d = np.diff(y, axis=1)
    n = y.shape[0]
    se = d.std(0, ddof=1) / math.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, d.mean(0) / np.where(se > 0, se, 1), np.sign(d.mean(0)) * np.inf)
    p_up = stats.t.sf(t, n - 1)
    p_down = stats.t.cdf(t, n - 1)
    cut = level / d.shape[1]
    return StepChanges(t=t, p_up=p_up, p_down=p_down, significant_up=p_up < cut, significant_down=p_down < cut, level=level)


def replicates_to_decide(samples, threshold: float = 0.0, level: float = 0.05, power: float = 0.8,
                         max_n: int = 10_000) -> int | None:
    """The smallest number of replicates at which a one-sided t test of the mean against
    ``threshold`` (at ``level``, df = n − 1, on the side of the observed mean) would reach
    p < ``level`` with probability ``power`` if the observed mean and standard deviation (ddof 1)
    were the truth and the replicates normal (the noncentral t: ``P(T_{n−1}(δ√n) > t_{1−level,
    n−1}) ≥ power``, ``δ`` = gap / sd). A planning number for "more seeds would decide it", not a
    promise: the estimates move with every seed. ``power=0.5`` gives, about, the n at which the
    observed t would first cross the critical value. None if the mean sits on the threshold or
    more than ``max_n`` replicates would be needed."""
    x = np.asarray(samples, dtype=float).ravel()
    if x.size < 2:
        raise ValueError(f"needs at least 2 replicates, got {x.size}")
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")
    gap, sd = abs(float(x.mean()) - threshold), float(x.std(ddof=1))
    if gap == 0:
        return None
    if sd == 0:
        return 2
    n = np.arange(2, max_n + 1)
    reach = stats.nct.sf(stats.t.ppf(1 - level, n - 1), n - 1, gap / sd * np.sqrt(n))
    ok = reach >= power
    return int(n[ok.argmax()]) if ok.any() else None


def slopes(x, curves) -> np.ndarray:
    """The least-squares slope of each replicate's curve (a row of ``curves``) against ``x``."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(curves, dtype=float)
    if y.ndim != 2 or y.shape[1] != x.size:
        raise ValueError(f"curves must be [replicates, {x.size}], got shape {y.shape}")
    xc = x - x.mean()
    return (y - y.mean(1, keepdims=True)) @ xc / (xc @ xc)


def slope_t(x, curves) -> TTest:
    """Trend of a curve over replicates: the least-squares slope of each replicate's curve against
    ``x`` (:func:`slopes`), tested across replicates with a one-sample t test (df = replicates − 1).

    The replicate is the unit, so dependence between the points of one curve (autocorrelated
    training measurements) does not inflate the evidence.
    """
    return one_sample_t(slopes(x, curves))


def verdict_from(met, *, partial_if_any: bool = True) -> str:
    """``reproduced`` if every criterion in ``met`` holds, ``partially-reproduced`` if some (and
    ``partial_if_any``), ``not-reproduced`` if none."""
    met = [bool(m) for m in met]
    if not met:
        raise ValueError("no criterion given")
    if all(met):
        return "reproduced"
    if any(met) and partial_if_any:
        return "partially-reproduced"
    return "not-reproduced"


# ------------------------------------------------------------------ orderings of two curves


@dataclass(frozen=True)
class Ordering:
    """Which of two curves is higher, measured over replicates (e.g. the same seeds under two settings).

    ``overall`` is one paired (or Welch) t test of the per-replicate mean over the points of
    ``a − b`` (the replicate is the unit, so dependence between the points of a curve does not
    inflate the evidence); ``direction`` is ``"a higher"``, ``"a lower"`` (two-sided p below
    ``level``) or ``"no significant difference"``. ``frac_higher`` / ``frac_lower`` describe the
    curve: the share of points whose own test (one-sided, at ``level``) finds ``a`` higher / lower.
    """

    overall: TTest
    direction: str
    frac_higher: float
    frac_lower: float
    points: int
    level: float


def pointwise_t(a, b, paired: bool = True):
    """Per-point t statistics and degrees of freedom of ``a − b`` for curves ``[replicates, points]``
    (paired over the replicates, or Welch's test for independent groups). Returns ``(t, df)``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(a.shape[0], b.shape[0]) < 2:
        raise ValueError(f"curves must be [replicates >= 2, points] with the same points, got {a.shape} and {b.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        if paired:
            if a.shape != b.shape:
                raise ValueError(f"paired curves must have the same shape, got {a.shape} and {b.shape}")
            d = a - b
            se = d.std(0, ddof=1) / math.sqrt(d.shape[0])
            df = np.full(d.shape[1], d.shape[0] - 1.0)
            eff = d.mean(0)
        else:
            va, vb = a.var(0, ddof=1) / a.shape[0], b.var(0, ddof=1) / b.shape[0]
            se = np.sqrt(va + vb)
            df = (va + vb) ** 2 / (va**2 / (a.shape[0] - 1) + vb**2 / (b.shape[0] - 1))
            df = np.where(se > 0, df, a.shape[0] + b.shape[0] - 2.0)
            eff = a.mean(0) - b.mean(0)
        t = np.where(se > 0, eff / np.where(se > 0, se, 1), np.sign(eff) * np.inf)
    return t, df


def ordering(a, b, paired: bool = True, level: float = 0.05) -> Ordering:
    """Is curve ``a`` above or below curve ``b``? ``a``, ``b``: ``[replicates, points]`` (see :class:`Ordering`)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    t, df = pointwise_t(a, b, paired)
    overall = paired_t(a.mean(1), b.mean(1)) if paired else welch_t(a.mean(1), b.mean(1))
    if overall.p_two_sided < level:
        direction = "a higher" if overall.effect > 0 else "a lower"
    else:
        direction = "no significant difference"
    return Ordering(
        overall=overall, direction=direction,
        frac_higher=float((stats.t.sf(t, df) < level).mean()), frac_lower=float((stats.t.cdf(t, df) < level).mean()),
        points=int(t.size), level=level,
    )


#: How a conjunction of parts is judged by :func:`combine_verdicts`.
_TRUE, _FALSE, _OPEN = ("reproduced",), ("not-reproduced",), ("inconclusive", "not-run-at-this-scale")


def combine_verdicts(parts) -> str:
    """The verdict of a claim that is the conjunction of ``parts`` (e.g. a figure whose panels are
    judged separately): ``reproduced`` if every part is; ``not-reproduced`` if some part is and
    none is (partially) reproduced; ``partially-reproduced`` if parts hold and others fail (or a
    part is itself partial); ``inconclusive`` if no part fails but some cannot be decided.
    ``erratum`` parts are not combinable (ValueError)."""
    parts = list(parts)
    if not parts:
        raise ValueError("no parts to combine")
    bad = [p for p in parts if p not in _TRUE + _FALSE + _OPEN + ("partially-reproduced",)]
    if bad:
        raise ValueError(f"cannot combine verdicts {bad}")
    holds = any(p in _TRUE + ("partially-reproduced",) for p in parts)
    fails = any(p in _FALSE + ("partially-reproduced",) for p in parts)
    if all(p in _TRUE for p in parts):
        return "reproduced"
    if holds and fails:
        return "partially-reproduced"
    if fails:
        return "not-reproduced"
    return "inconclusive"


# ------------------------------------------------------------------ spreads, ranks, jackknife


@dataclass(frozen=True)
class FTest:
    """Ratio of two variances ``f = sd_a² / sd_b²`` against Fisher's F(``df_a``, ``df_b``)."""

    f: float
    df_a: float
    df_b: float
    p_greater: float  # H1: var a > var b
    p_less: float  # H1: var a < var b


def f_test(sd_a: float, df_a: float, sd_b: float, df_b: float) -> FTest:
    """F test of two independent spreads (e.g. the run-to-run sd of two setups over their seeds:
    ``df = runs − 1``). With spreads averaged over dependent points of a curve, the replicate
    degrees of freedom are the conservative choice."""
    if sd_b == 0:
        f = math.inf if sd_a > 0 else 1.0
    else:
        f = (float(sd_a) / float(sd_b)) ** 2
    return FTest(f=float(f), df_a=float(df_a), df_b=float(df_b),
                 p_greater=float(stats.f.sf(f, df_a, df_b)), p_less=float(stats.f.cdf(f, df_a, df_b)))


def rank_correlation(a, b) -> float:
    """Spearman's ρ of two series; NaN when there are fewer than 3 points or one series is constant."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.size != b.size:
        raise ValueError(f"series of different lengths: {a.size} and {b.size}")
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def jackknife_se(leave_one_out) -> float:
    """Jackknife standard error from the ``G`` leave-one-group-out values of a statistic:
    ``√((G − 1)/G · Σ (θ_(g) − θ̄)²)``; NaN for fewer than two groups."""
    v = np.asarray(leave_one_out, dtype=float).ravel()
    if v.size < 2:
        return float("nan")
    return float(math.sqrt((v.size - 1) / v.size * ((v - v.mean()) ** 2).sum()))


# ------------------------------------------------------------------ quantiles and ranks (many runs)


def quantile_interval(x, q: float, axis: int = -1, level: float = 0.95):
    """The ``q``-quantile of ``x`` along ``axis`` with its distribution-free confidence interval.

    Returns ``(estimate, low, high)``: the nearest-rank order statistic ``x_(⌊q(n−1)⌉)`` and the
    order statistics ``x_(l)``, ``x_(u)`` with ``l``, ``u`` the binomial ``(1 ∓ level)/2`` quantiles
    of ``Bin(n, q)`` (ranks counted from 1), so that ``P(x_(l) ≤ ξ_q ≤ x_(u)) ≥ level`` for any
    continuous distribution. NaN entries are ignored (a slice with fewer than one value gives NaN).
    """
    a = np.moveaxis(np.asarray(x, dtype=float), axis, -1)
    flat = a.reshape(-1, a.shape[-1])
    est, lo, hi = (np.full(flat.shape[0], np.nan) for _ in range(3))
    for i, row in enumerate(flat):
        v = np.sort(row[~np.isnan(row)])
        n = v.size
        if n == 0:
            continue
        est[i] = v[int(round(q * (n - 1)))]
        l_rank = int(stats.binom.ppf((1 - level) / 2, n, q))  # x_(l) with l = this rank, 1-based
        u_rank = int(stats.binom.ppf((1 + level) / 2, n, q)) + 1
        lo[i] = v[max(l_rank, 1) - 1]
        hi[i] = v[min(u_rank, n) - 1]
    shape = a.shape[:-1]
    return est.reshape(shape), lo.reshape(shape), hi.reshape(shape)


@dataclass(frozen=True)
class RankTest:
    """Mann–Whitney U test of two independent samples: ``p_greater`` for H1 "a tends to exceed b",
    ``effect`` = P(a > b) + ½ P(a = b) (the common-language effect size)."""

    u: float
    p_greater: float
    p_less: float
    p_two_sided: float
    effect: float
    n_a: int
    n_b: int


def rank_test(a, b) -> RankTest:
    """Mann–Whitney U test (ties handled; exact or normal approximation as scipy chooses)."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if a.size < 1 or b.size < 1:
        raise ValueError("a rank test needs at least one value in each sample")
    g = stats.mannwhitneyu(a, b, alternative="greater")
    l_ = stats.mannwhitneyu(a, b, alternative="less")
    t = stats.mannwhitneyu(a, b, alternative="two-sided")
    return RankTest(u=float(g.statistic), p_greater=float(g.pvalue), p_less=float(l_.pvalue), p_two_sided=float(t.pvalue),
                    effect=float(g.statistic) / (a.size * b.size), n_a=int(a.size), n_b=int(b.size))


# ------------------------------------------------------------------ thresholds and parts of a claim


@dataclass(frozen=True)
class ThresholdSides:
    """Where the mean of replicates lies against a threshold, point by point: ``above`` where the
    lower end of its t-interval is at least ``threshold``, ``below`` where the upper end is under
    it (neither: the interval straddles the threshold, undecided); ``ci`` the intervals."""

    above: np.ndarray
    below: np.ndarray
    ci: MeanCI


def threshold_sides(samples, threshold: float, axis: int = 0, level: float = 0.95) -> ThresholdSides:
    """Compare the mean of replicates along ``axis`` (e.g. runs) with ``threshold`` at every other
    index (e.g. checkpoints), by the Student-t interval of :func:`t_interval`."""
    ci = t_interval(samples, axis=axis, level=level)
    return ThresholdSides(above=np.asarray(ci.low >= threshold), below=np.asarray(ci.high < threshold), ci=ci)


def part_verdict(holds: bool, fails: bool) -> str:
    """The verdict of one part (or panel) of a claim judged three ways: ``not-reproduced`` if the
    measurement contradicts it significantly (``fails``: a contradiction wins), else ``reproduced``
    if it ``holds``, else ``inconclusive`` (undecided at this power). Combine parts with
    :func:`combine_verdicts`."""
    if fails:
        return "not-reproduced"
    return "reproduced" if holds else "inconclusive"
