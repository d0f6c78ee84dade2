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


def slope_t(x, curves) -> TTest:
    """Trend of a curve over replicates: the least-squares slope of each replicate's curve against
    ``x``, tested across replicates with a one-sample t test (df = replicates − 1).

    The replicate is the unit, so dependence between the points of one curve (autocorrelated
    training measurements) does not inflate the evidence.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(curves, dtype=float)
    if y.ndim != 2 or y.shape[1] != x.size:
        raise ValueError(f"curves must be [replicates, {x.size}], got shape {y.shape}")
    xc = x - x.mean()
    slopes = (y - y.mean(1, keepdims=True)) @ xc / (xc @ xc)
    return one_sample_t(slopes)


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
