"""The book's plotting helper: a mean line with its Student-t band."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scipy.stats as ss  # noqa: E402

from sgdbook.book.style import band  # noqa: E402


def _band_limits(ax):
    (poly,) = ax.collections
    v = poly.get_paths()[0].vertices
    return v[:, 1].min(), v[:, 1].max()


def test_band_draws_the_t_interval():
    fig, ax = plt.subplots()
    y = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    line = band(ax, [0, 1], y, label="m")
    assert np.allclose(line.get_ydata(), [2.0, 3.0])
    hw = ss.t.ppf(0.975, 2) * 2.0 / np.sqrt(3)
    lo, hi = _band_limits(ax)
    assert np.isclose(hi, 3.0 + hw) and np.isclose(lo, 2.0 - hw)
    band(ax, [0, 1], [1.0, 2.0])  # one replicate: a line, no band
    assert len(ax.collections) == 1
    plt.close(fig)
    fig, ax = plt.subplots()  # cut at the limits the quantity cannot leave
    band(ax, [0, 1], y / 5.0, limits=(0, 1))
    lo, hi = _band_limits(ax)
    assert lo == 0.0 and hi == 1.0
    plt.close(fig)


def test_band_on_a_log_scale_is_the_geometric_mean_and_its_interval():
    fig, ax = plt.subplots()
    y = np.array([[1.0, 10.0], [100.0, 1000.0]])
    line = band(ax, [0, 1], y, log=True, color="k", marker="o")
    assert np.allclose(line.get_ydata(), [10.0, 100.0]) and line.get_marker() == "o"
    hw = ss.t.ppf(0.975, 1) * np.log(100.0) / np.sqrt(2) / np.sqrt(2)  # sd of (0, ln 100) / sqrt(2)
    lo, hi = _band_limits(ax)
    assert np.isclose(hi, 100.0 * np.exp(hw)) and np.isclose(lo, 10.0 * np.exp(-hw))
    plt.close(fig)
