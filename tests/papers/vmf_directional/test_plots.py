"""The shared figures draw every run, the mean band and the labels they promise."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sgdbook.papers.vmf_directional import criteria, plots, runs  # noqa: E402


def _run(seed, k):
    e = np.array([0, 1, 2, 4, 8])
    rows = {key: np.linspace(1, 2, 5) for key in runs.ROW_KEYS}
    rows.update(kappa=np.geomspace(1000, 50, 5) * (1 + 0.1 * seed), kappa_se=np.full(5, 5.0), rtilde=np.linspace(0.9, 0.2, 5),
                rbar=np.linspace(0.9, 0.2, 5), norm_snr=np.full(5, 10.0), snr=np.linspace(3, 1, 5))
    return runs.Run("CNN+BN", seed, 64, 100, 64, e, rows, np.zeros(3), np.zeros(3), 8, True)


def test_kappa_panel_and_fig7_column_draw_with_labels():
    rr = [_run(s, 0) for s in range(3)]
    fig, ax = plt.subplots(1, 3)
    plots.kappa_panel(ax[0], rr, baseline=40.0)
    assert ax[0].get_xscale() == "log" and ax[0].get_ylabel() == "κ̂" and ax[0].get_xlabel() == "epoch + 1"
    plots.kappa_panel(ax[0], rr[:1])  # a single run: no band, no error
    plots.fig7_column(ax[1], ax[2], rr[0], criteria.snr_drivers(rr[0]), legend=True)
    assert ax[1].get_ylabel() and ax[2].get_ylabel() == "SNR" and ax[2].get_legend() is not None
    plt.close(fig)
