"""The MNIST-MLP chapter's settings (sgdbook.papers.batch_size_variance.mlp and its settings table)."""

import numpy as np
import torch

from sgdbook import ensemble
from sgdbook.book.scales import SCALES
from sgdbook.papers.batch_size_variance import mlp
from sgdbook.papers.batch_size_variance.mlp import widths
from sgdbook.papers.batch_size_variance.settings.mlp_classification import SETTINGS


def test_mlp_settings_are_consistent_at_every_scale():
    for scale in SCALES:
        c = SETTINGS(scale)
        assert c["epochs"] % c["eval_every"] == 0 and max(c["batch_sizes"]) <= c["n_train"]
        assert widths(c)[0] == 784 and widths(c)[-1] == 10
        assert c["pilot_gap_epochs"] <= c["epochs"] and 0 < c["fit_acc"] <= 1


def _runs(grad_var, epochs, spe, full=None):
    return ensemble.EpochRuns(params={}, steps_per_epoch=spe, grad_var=grad_var, eval_epochs=list(range(epochs + 1)),
                              evals={}, full_grad_var=full)


def test_compare_variance_bands_ratio_and_spread_share():
    g = torch.Generator().manual_seed(0)
    I, E = 4, 3  # noqa: E741 (the chapter's notation: I initial weights)
    lo = torch.exp(torch.randn(E * 4, I, generator=g, dtype=torch.float64) * 0.1 + 1.0)  # [steps, I], 4 steps per epoch
    hi = torch.exp(torch.randn(E * 2, I, generator=g, dtype=torch.float64) * 0.1)  # 2 steps per epoch, about e times lower
    full_lo = 0.25 * torch.ones(E + 1, I, dtype=torch.float64)
    c = mlp.compare_variance(_runs(lo, E, 4, full_lo), _runs(hi, E, 2))
    assert c.frac_epochs_separated == 1.0 and c.ordering.direction == "a higher" and c.frac_epochs_significant == 1.0
    e_lo = lo.reshape(E, 4, I).mean(1).log()
    e_hi = hi.reshape(E, 2, I).mean(1).log()
    np.testing.assert_allclose(c.log_ratio_epochs, (e_lo - e_hi).T.numpy())
    assert c.iterations == 5  # t = 1 … 5: both batch sizes reach 6 steps
    assert abs(c.spread_share[0] - float((0.25 / lo.reshape(E, 4, I).mean(1)[-1]).median())) < 1e-12
    assert np.isnan(c.spread_share[1])
    flipped = mlp.compare_variance(_runs(hi.repeat(2, 1), E, 4), _runs(lo[: E * 2], E, 2))
    assert flipped.ordering.direction == "a lower" and flipped.frac_epochs_separated == 0.0


def test_fit_epoch_pairs_and_init_means():
    acc = torch.tensor([[0.5, 0.5], [0.995, 0.99], [0.98, 0.99], [0.995, 0.999], [1.0, 1.0]])
    assert mlp.fit_epoch(acc, [0, 5, 10, 15, 20], 0.99) == 15  # from 15 on it stays above
    assert mlp.fit_epoch(acc[:3], [0, 5, 10], 0.999) is None
    assert mlp.equal_step_pairs([0, 5, 10, 15, 20], 2) == [(1, 2), (2, 4)]
    np.testing.assert_allclose(mlp.init_means(torch.arange(12.0).reshape(2, 6), 3), [[0.5, 2.5, 4.5], [6.5, 8.5, 10.5]])
    assert mlp.c_b(512, 64) / mlp.c_b(512, 128) == (512 - 64) * 128 / ((512 - 128) * 64)
