"""vmf training runs: the grouped measurement against brute force, the SNR split, the stopping rule,
the run cache and the alignment of runs that stop at different epochs."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sgdbook.gradients import minibatch_moments, sample_minibatches
from sgdbook.papers.vmf_directional import runs
from sgdbook.papers.vmf_directional.models import build_model
from sgdbook.papers.vmf_directional.settings.uniformity import SETTINGS


def _blobs(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = (torch.randn(10, 1, 28, 28, generator=g)[y] + 0.5 * torch.randn(n, 1, 28, 28, generator=g)).clamp(0, 1)
    return x, y


def _data(n=96):
    x, y = _blobs(n)
    xv, yv = _blobs(32, seed=1)
    return runs.RunData(x, y, xv, yv, note="synthetic", key=f"blobs-{n}")


def _cfg(**over):
    cfg = SETTINGS("smoke")
    cfg.update(over)
    return cfg


def test_grouped_measurement_equals_the_pooled_brute_force():
    cfg = _cfg()
    torch.manual_seed(0)
    model = build_model("FNN+BN", cfg, torch.Generator().manual_seed(0)).double()
    x, y = _blobs()
    x = x.double()
    g = torch.Generator().manual_seed(3)
    m = runs.measure_directions(model, F.cross_entropy, x, y, 8, 24, g, groups=4)
    # the same 24 minibatches, drawn again from a generator in the same state, in one call
    g2 = torch.Generator().manual_seed(3)
    idx = torch.cat([sample_minibatches(96, 8, k, g2) for k in runs._group_sizes(24, 4)])
    ref = runs.brute_force_metrics(model, F.cross_entropy, x, y, idx)
    one = minibatch_moments(model, F.cross_entropy, x, y, indices=idx)
    assert m.n_s == 24 and m.d == one.d
    assert m.kappa == pytest.approx(ref["kappa_hat"], rel=1e-9)
    assert m.snr == pytest.approx(ref["snr"], rel=1e-9) and m.snr == pytest.approx(one.snr, rel=1e-9)
    assert m.norm_snr == pytest.approx(ref["norm_snr"], rel=1e-9)
    assert m.rbar == pytest.approx(one.rbar, rel=1e-9)
    assert all(p.grad is None for p in model.parameters())
    # the exact split of 1/SNR² into a direction part and a norm part
    direction, norm = m.snr_parts()
    assert direction + norm == pytest.approx(1 / m.snr**2, rel=1e-9)


def test_jackknife_standard_error_is_calibrated_across_repeated_measurements():
    cfg = _cfg()
    model = build_model("FNN", cfg, torch.Generator().manual_seed(1))
    x, y = _blobs(256)
    g = torch.Generator().manual_seed(0)
    ms = [runs.measure_directions(model, F.cross_entropy, x, y, 16, 64, g, groups=8) for _ in range(24)]
    sd = np.std([m.kappa for m in ms], ddof=1)
    se = np.mean([m.kappa_se for m in ms])
    assert 0.5 < se / sd < 2.0  # the jackknife estimates the spread of another draw of n_s minibatches
    sd_snr, se_snr = np.std([m.snr for m in ms], ddof=1), np.mean([m.snr_se for m in ms])
    assert 0.5 < se_snr / sd_snr < 2.0


def test_train_run_stops_at_the_rule_and_is_deterministic():
    cfg = _cfg(lr=0.1, epochs=200, target_accuracy=0.95, n_s=8, measure_points=4, jackknife_groups=2)
    data = _data()
    a = runs.train_run("FNN", 0, cfg, data)
    b = runs.train_run("FNN", 0, cfg, data)
    assert a.reached and a.stopped < 200 and a.epochs[-1] == a.stopped
    assert a.rows["train_acc"][-1] > 0.95 and (a.rows["train_acc"][:-1] <= 0.95).all()
    assert list(a.epochs[:2]) == [0, 1] and set(runs.ROW_KEYS) == set(a.rows)
    assert np.array_equal(a.rows["kappa"], b.rows["kappa"]) and a.stopped == b.stopped
    assert a.cos_first.shape == (8,) and np.isfinite(a.rows["kappa_se"]).all()
    capped = runs.train_run("FNN", 0, cfg, data, epochs=3)
    assert not capped.reached and capped.stopped == 3 and capped.epochs[-1] == 3


def test_cached_run_round_trip_and_key(tmp_path, monkeypatch):
    monkeypatch.setenv("SGDBOOK_BUILD", str(tmp_path))
    cfg = _cfg(epochs=2, n_s=8, jackknife_groups=2)
    data = _data()
    path = runs.cache_path("FNN", 0, cfg, data)
    assert not path.exists()
    a = runs.cached_run("FNN", 0, cfg, data)
    assert path.is_file()
    b = runs.cached_run("FNN", 0, cfg, data)
    assert np.array_equal(a.rows["kappa"], b.rows["kappa"]) and a.stopped == b.stopped
    assert runs.cache_path("FNN", 1, cfg, data) != path  # another seed
    assert runs.cache_path("FNN", 0, cfg, data, batch_size=2 * cfg["batch_size"]) != path  # another batch size
    assert runs.cache_path("FNN", 0, cfg, data, batch_size=cfg["batch_size"]) == path
    assert runs.cache_path("FNN", 0, _cfg(epochs=2, n_s=16, jackknife_groups=2), data) != path
    assert runs.cache_path("FNN", 0, {**cfg, "cnn_n_s": 999}, data) == path  # CNN settings do not touch an FNN run
    assert runs.cap_of("CNN", SETTINGS("book")) == SETTINGS("book")["cnn_plain_epochs"]
    assert runs.cap_of("CNN+BN", SETTINGS("book")) == SETTINGS("book")["cnn_epochs"]


def _fake(epochs, kappa, stopped=None, reached=True, seed=0):
    rows = {k: np.ones(len(epochs)) for k in runs.ROW_KEYS}
    rows["kappa"] = np.asarray(kappa, dtype=float)
    rows["train_acc"] = np.r_[np.full(len(epochs) - 1, 0.5), 1.0 if reached else 0.5]
    return runs.Run("FNN", seed, 64, 100, 32, np.asarray(epochs), rows, np.zeros(2), np.zeros(2),
                    stopped or epochs[-1], reached)


def test_aligned_keeps_the_common_epochs_and_each_end():
    a = _fake([0, 1, 2, 4, 7], [10, 8, 6, 4, 3])
    b = _fake([0, 1, 2, 4, 8, 13], [12, 9, 7, 5, 4, 2])
    ep, ends, v = runs.aligned([a, b])
    assert ep.tolist() == [0, 1, 2, 4] and ends.tolist() == [7, 13]
    assert v.tolist() == [[10, 8, 6, 4, 3], [12, 9, 7, 5, 2]]
    assert np.allclose(runs.aligned([a, b], log=True)[2], np.log(v))
    assert runs.monotone_fraction(a) == 1.0
    assert runs.monotone_fraction(_fake([0, 1, 2], [1, 2, 1])) == 0.5
    assert runs.trained([a, b]) and not runs.trained([a, _fake([0, 1], [1, 2], reached=False)])
    s = runs.setup_summary([a, b])
    assert s["reached"] == 2 and s["epochs_min"] == 7 and s["kappa_start"] == pytest.approx(math.sqrt(120))
    assert "| FNN |" in runs.summary_table({"FNN": s})
