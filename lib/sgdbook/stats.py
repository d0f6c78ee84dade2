"""Small statistical tests used to turn measured numbers into verdicts."""

from __future__ import annotations

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
