import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sgdbook import data as sgd_data
from sgdbook import stats
from sgdbook.landscape import segment_stats, window_profile
from sgdbook.models import count_parameters
from sgdbook.papers.walk_with_sgd import walk as W
from sgdbook.trajectory import record_trajectory

F64 = torch.float64


def test_digits_split_is_standardised_and_noise_only_touches_training_labels():
    clean = W.digits_split(1000)
    assert clean.x.shape == (1000, 1, 8, 8) and clean.xv.shape == (797, 1, 8, 8)
    assert abs(float(clean.x.mean())) < 1e-6 and abs(float(clean.x.std()) - 1) < 1e-6
    noisy = W.digits_split(1000, label_noise_fraction=0.3)
    assert int(noisy.flipped.sum()) == 300 and int((noisy.y != clean.y).sum()) == 300
    assert torch.equal(noisy.yv, clean.yv) and torch.equal(noisy.x, clean.x)
    with pytest.raises(ValueError, match="n_train"):
        W.digits_split(1797)


def test_standins_and_paper_models_have_their_parameter_counts():
    counts = {"cnn": 7386, "cnn-nobn": 7274, "resnet": 5094, "mlp": 26634}
    for name, n in counts.items():
        m = W.standin(name, torch.Generator().manual_seed(0))
        assert count_parameters(m) == n and m(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    for name, n in W.PAPER_PARAMETER_COUNTS.items():
        assert count_parameters(W.paper_model(name)) == n
    with pytest.raises(ValueError, match="stand-in"):
        W.standin("vgg", torch.Generator())
    with pytest.raises(ValueError, match="paper model"):
        W.paper_model("resnet18")


def test_missing_fashion_mnist_says_how_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SGDBOOK_DATA", str(tmp_path))
    monkeypatch.setenv("SGDBOOK_DOWNLOAD", "0")
    monkeypatch.setattr(sgd_data, "FASHION_MNIST_SYSTEM", tmp_path / "nowhere")
    with pytest.raises(sgd_data.DataError, match="dataset-fashion-mnist"):
        W.fashion_split(100)


def test_onset_and_window_metrics_against_loops():
    assert W.onset([np.nan, 0.9, 0.2, -0.1, 0.3]) == 3 and W.onset([np.nan, 1.0, 0.5]) is None
    g = torch.Generator().manual_seed(0)
    losses = torch.rand(12, 5, generator=g, dtype=F64)
    st = segment_stats(losses)
    cos = np.linspace(-1, 1, 12)
    from sgdbook.landscape import WindowProfile

    prof = WindowProfile(alphas=torch.linspace(0, 1, 5, dtype=F64), losses=losses, noise=0.0, tol=0.0, **st)
    m = W.window_metrics(prof, cos, 2, 9)
    L = losses.numpy()
    inter = [(0 < L[s].argmin() < 4) and L[s, 1:-1].min() < min(L[s, 0], L[s, -1]) for s in range(12)]
    floor = L.min(1)
    pairs = [s for s in range(2, 8) if inter[s] and inter[s + 1]]
    rises = [s for s in pairs if floor[s + 1] > floor[s]]
    assert m["interior_frac"] == pytest.approx(np.mean(inter[2:9]))
    assert m["rise_frac"] == (pytest.approx(len(rises) / len(pairs)) if pairs else m["rise_frac"])
    assert m["barriers"] == sum(L[s, 1:-1].max() > max(L[s, 0], L[s, -1]) for s in range(2, 9))
    exc = [L[s, 1:-1].max() - max(L[s, 0], L[s, -1]) for s in range(12)]
    assert m["significant_barriers"] == sum(exc[s] > 0 and exc[s] / abs(L[s, 0]) >= W.SIGNIFICANT_EXCESS for s in range(2, 9))
    assert 0 < m["significant_barriers"] <= m["barriers"] and m["valley_pairs"] == len(pairs) and m["valley_rises"] == len(rises)
    assert m["cos_mean"] == pytest.approx(cos[2:9].mean())
    assert m["mean_height"] == pytest.approx(np.mean([(L[s, 0] + L[s, -1] - 2 * floor[s]) / 2 for s in range(2, 9)]))
    valleys = [s for s in range(2, 9) if inter[s]]
    assert 0 < len(valleys) < 7
    assert m["valley_height"] == pytest.approx(np.mean([(L[s, 0] + L[s, -1] - 2 * floor[s]) / 2 for s in valleys]))
    assert m["loss_first"] == L[2, 0] and m["loss_last"] == L[8, -1]
    descent = torch.linspace(3, 1, 12 * 5 - 4, dtype=F64).unfold(0, 5, 4)  # pure descent: no valley, no valley height
    dst = segment_stats(descent)
    dm = W.window_metrics(WindowProfile(alphas=torch.linspace(0, 1, 5, dtype=F64), losses=descent, noise=0.0, tol=0.0, **dst),
                          cos, 0)
    assert dm["interior_frac"] == 0 and np.isnan(dm["valley_height"]) and dm["mean_height"] > 0
    assert W.in_height_regime(dm["valley_height"], "cnn", 1) is False and W.in_height_regime(dm["mean_height"], "cnn", 1)


def test_gd_profile_reuses_the_logged_losses_and_checkpointed_runs_continue_exactly():
    d = W.digits_split(120)
    run = W.run_walk("mlp", d, lr=0.5, steps=8, seed=0)
    prof = W.profile(run, 2, 8, rtol=0.0)
    fresh = window_profile(run.model, F.cross_entropy, d.x, d.y, run.traj.window(0, 8).thetas[2:9], bn_mode="train",
                           rtol=0.0)
    torch.testing.assert_close(prof.losses, fresh.losses, rtol=1e-6, atol=1e-7)
    model = W.standin("mlp", torch.Generator().manual_seed(W.init_seed("mlp", 0)))
    chk = W.run_checkpointed(model, d, lr=0.5, steps=8, every=4, generator=torch.Generator())
    whole = record_trajectory(model, F.cross_entropy, d.x, d.y, steps=8, lr=0.5, generator=torch.Generator())
    torch.testing.assert_close(chk.last.theta, whole.theta)
    torch.testing.assert_close(torch.as_tensor(chk.dist), whole.dist)
    loss, _ = W.evaluate_theta(model, whole.theta, whole.buffers, d.x, d.y, bn_mode="train")
    ref = copy.deepcopy(model)
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(whole.theta, ref.parameters())
    ref.train()
    with torch.no_grad():
        assert loss == pytest.approx(float(F.cross_entropy(ref(d.x), d.y)), rel=1e-5)
    with pytest.raises(ValueError, match="multiple"):
        W.run_checkpointed(model, d, lr=0.5, steps=9, every=4, generator=torch.Generator())


def test_gd_on_a_large_set_accumulates_its_gradient_in_chunks(monkeypatch):
    d = W.digits_split(120)
    assert W.gd_chunk(45_000, None) == W.GD_CHUNK == 5000 and W.gd_chunk(45_000, 100) is None and W.gd_chunk(1000, None) is None
    one = W.run_walk("mlp", d, lr=0.5, steps=3, seed=0)
    monkeypatch.setattr(W, "GD_CHUNK", 50)  # 120 examples: chunks of 50, 50, 20
    chunked = W.run_walk("mlp", d, lr=0.5, steps=3, seed=0)
    model = W.standin("mlp", torch.Generator().manual_seed(W.init_seed("mlp", 0)))
    ref = record_trajectory(model, F.cross_entropy, d.x, d.y, steps=3, lr=0.5, generator=torch.Generator(), grad_batch=50)
    torch.testing.assert_close(chunked.traj.theta, ref.theta, rtol=0, atol=0)
    assert not torch.equal(chunked.traj.theta, one.traj.theta)  # the MLP has batch norm: per-chunk statistics
    chk = W.run_checkpointed(model, d, lr=0.5, steps=3, every=3, generator=torch.Generator())
    torch.testing.assert_close(chk.last.theta, ref.theta, rtol=0, atol=0)
    # the logged losses were normalised per chunk: the profile evaluates the end points afresh
    prof = W.profile(chunked, 0, 3, rtol=0.0)
    fresh = window_profile(chunked.model, F.cross_entropy, d.x, d.y, chunked.traj.window(0, 3).thetas, bn_mode="train",
                           rtol=0.0)
    torch.testing.assert_close(prof.losses, fresh.losses, rtol=0, atol=0)


def test_cos_roles_verdict_follows_its_criterion():
    B, lrs = [25, 50, 100, 200], [0.025, 0.05, 0.1, 0.2]
    rng = np.random.default_rng(0)
    falling = np.array([-0.1, -0.2, -0.3, -0.4]) + 0.01 * rng.standard_normal((3, 4))
    dist = np.array([4.0, 3.5, 3.0, 2.5]) * (1 + 0.01 * rng.standard_normal((3, 4)))
    flat_lr = -0.25 + 0.01 * rng.standard_normal((3, 4))
    assert W.cos_roles_verdict(B, falling, dist, lrs, flat_lr)[0] == "reproduced"
    moving_lr = np.array([0.2, 0.0, -0.2, -0.4]) + 0.01 * rng.standard_normal((3, 4))
    assert W.cos_roles_verdict(B, falling, dist, lrs, moving_lr)[0] == "partially-reproduced"
    assert W.cos_roles_verdict(B, -falling, dist, lrs, flat_lr)[0] == "not-reproduced"
    v, ev = W.cos_roles_verdict(B, falling, dist, lrs, flat_lr)
    assert ev["seeds_to_decide"] == {}  # nothing undecided
    # a flat distance (2) and a rate slope just beyond half the batch slope (3): undecided at three seeds
    flat_dist = 3.0 * np.exp(np.array([[0.02, -0.01, 0.0, 0.01], [-0.02, 0.0, 0.01, -0.01], [0.0, 0.02, -0.02, 0.01]]))
    near = -0.25 + np.array([[0.03], [0.11], [0.07]]) * np.log2(np.array(lrs) / 0.025)  # mean 0.07 against a threshold 0.05
    v, ev = W.cos_roles_verdict(B, falling, flat_dist, lrs, near)
    assert ev["status_2"] == ev["status_3"] == W.UNDECIDED and v == "inconclusive"
    lb = np.log2(B)
    assert ev["seeds_to_decide"]["2"] == stats.replicates_to_decide(stats.slopes(lb, np.log(flat_dist)))
    per_seed = np.sign(ev["cos_slope_per_doubling_lr"]) * stats.slopes(np.log2(lrs), near) + 0.5 * stats.slopes(lb, falling)
    assert ev["seeds_to_decide"]["3"] == stats.replicates_to_decide(per_seed)
    text = W.cos_roles_decide({**ev, "lrs_in_descent": [], "batch_sizes_in_descent": [], "batch_sizes_past_regime": [],
                               "lrs_past_regime": []}, "more data", 3, "the paper")
    n2, n3 = ev["seeds_to_decide"]["2"], ev["seeds_to_decide"]["3"]
    assert text == ("more seeds than 3 (for 80 % power to decide, if the observed mean and spread were the truth: "
                    + "; ".join(f"({k}) about {n:,}" if n is not None else f"({k}) more than 10,000" for k, n in (("2", n2), ("3", n3)))
                    + "; for (3) that is the seeds to show it fails, as its mean excess is above 0); or the paper")


def test_sgd_summary_takes_the_cosine_from_the_runs_onset():
    d = W.digits_split(120)
    run = W.run_walk("mlp", d, lr=0.5, steps=12, batch_size=40, seed=0, windows=[(0, 6), (6, 12)])
    cos = run.traj.cos.cpu().numpy()
    on = W.onset(cos)
    assert on == 2 and cos[1] > 0  # inside the first window, after a positive cosine the onset rule leaves out
    for a, b in ((0, 6), (6, 12)):
        m, _ = W.sgd_summary(run, a, b, dtype=torch.float64, rtol=1e-12)
        assert m["cos_mean"] == pytest.approx(np.nanmean(cos[a:b]))
        if on is None or on >= b:
            assert np.isnan(m["cos_from_onset"])
        else:
            assert m["onset"] == on and m["cos_from_onset"] == pytest.approx(np.nanmean(cos[max(a, on):b]))


def test_late_regime_against_profile_and_table2():
    """The height is profile's mean over the steps, the epoch (a + b)/2 · batch / n, held to a tenth of Table 2's height
    there (interpolated; epoch 1's before the first epoch ends); GD runs have no epoch."""
    d = W.digits_split(120)
    run = W.run_walk("mlp", d, lr=0.5, steps=12, batch_size=40, seed=0, windows=[(0, 2), (6, 10)])
    r = W.late_regime(run, 6, 10, dtype=torch.float64, rtol=1e-12)
    assert r["height"] == pytest.approx(float(W.profile(run, 6, 10, dtype=torch.float64, rtol=1e-12).height.mean()))
    assert r["epoch"] == pytest.approx(8 * 40 / 120)
    assert r["in_regime"] == (r["height"] >= W.REGIME_HEIGHT_FRACTION * r["paper_height"])
    assert r["paper_height_row_rate"] == pytest.approx(W.paper_height("mlp", 8 * 40 / 120, interpolate=True))
    assert r["paper_height"] == pytest.approx(W.paper_height_at_rate("mlp", 8 * 40 / 120, 0.5))
    assert r["in_regime_row_rate"] == (r["height"] >= W.REGIME_HEIGHT_FRACTION * r["paper_height_row_rate"])
    early = W.late_regime(run, 0, 2)
    assert early["epoch"] == 1.0 and early["paper_height_row_rate"] == W.paper_height("mlp", 1)
    with pytest.raises(ValueError, match="SGD"):
        W.late_regime(W.run_walk("mlp", d, lr=0.5, steps=4, seed=0), 0, 2)
    long = W.run_walk("mlp", d, lr=0.5, steps=304, batch_size=40, seed=0, windows=[(302, 304)])
    beyond = W.late_regime(long, 302, 304)  # epoch 101: past Table 2's last epoch, no reference
    assert beyond["epoch"] == pytest.approx(101.0) and not beyond["in_regime"] and np.isnan(beyond["paper_height"])


def test_cos_roles_sweep_counts_only_runs_in_the_regime(monkeypatch):
    """Runs with designed cosines (every run leaves its descent early; the cosine falls with B, not with the rate): with every
    run in the regime the sweep reproduces; a late check that puts two rates past the regime leaves (3) undecided, one that
    puts a batch size past it leaves (1)-(3) undecided, each named in the details; a batch size still in its descent is named
    too; a run shared by both sweeps is profiled once; the verdict without the late check is in the pilot."""
    import types

    B, R, S, T = [25, 50, 100, 200], [0.025, 0.05, 0.1, 0.2], range(3), 40
    rng = np.random.default_rng(0)

    def run(level, dist, descent=2):
        cos = np.r_[np.nan, np.full(descent, 0.5), level + 0.01 * rng.standard_normal(T - 1 - descent)]
        d = np.r_[np.linspace(0, dist, T + 1)] * (1 + 0.01 * rng.random())
        return types.SimpleNamespace(traj=types.SimpleNamespace(cos=torch.tensor(cos), dist=torch.tensor(d)), lr=None)

    runs = {("B", b, s): run(-0.1 * np.log2(b / 25) - 0.1, 4.0 - 0.4 * np.log2(b / 25)) for b in B for s in S}
    for r in R:
        for s in S:
            runs[("lr", r, s)] = runs[("B", 100, s)] if r == 0.1 else run(-0.3, 3.2)
    past, past_row, calls = set(), set(), []

    def fake_late(r, a, b, **kw):
        calls.append(id(r))
        assert (a, b) == (T // 2, T // 2 + 3)
        return {"in_regime": id(r) not in past, "height": 1.0, "epoch": 2.0, "paper_height": 0.05,
                "in_regime_row_rate": id(r) not in past | past_row, "paper_height_row_rate": 0.1}

    monkeypatch.setattr(W, "late_regime", fake_late)
    v, ev, pilot, details = W.cos_roles_sweep(runs, B, R, R, S, regime_steps=3)
    assert v == "reproduced" and ev["lrs_past_regime"] == [] and len(calls) == len({id(r) for r in runs.values()}) == 21
    past_row.update(id(runs[("lr", r, 0)]) for r in (0.025, 0.05))  # below the row rate's reference only: reported
    v, ev, pilot, _ = W.cos_roles_sweep(runs, B, R, R, S, regime_steps=3)
    assert v == "reproduced" and ev["verdict_row_rate_reference"] == "inconclusive"
    assert ev["lrs_settled_row_rate_reference"] == [0.1, 0.2] and "before the eighth review): inconclusive" in pilot
    past_row.clear()
    past.update(id(runs[("lr", r, s)]) for r in (0.025, 0.05) for s in (0,))
    v, ev, pilot, details = W.cos_roles_sweep(runs, B, R, R, S, regime_steps=3)
    assert ev["status_3"] == W.UNDECIDED and ev["lrs_past_regime"] == [0.025, 0.05] and v == "inconclusive"
    assert "rate 0.025, rate 0.05" in details[2] and "without the late-side regime check (the criterion before the fifth " \
        "review): reproduced" in pilot
    past.clear()
    past.add(id(runs[("B", 200, 1)]))
    v, ev, _, details = W.cos_roles_sweep(runs, B, R, R, S, regime_steps=3)
    assert [ev[f"status_{i}"] for i in (1, 2, 3)] == [W.UNDECIDED] * 3 and ev["batch_sizes_past_regime"] == [200]
    assert all("batch 200" in d for d in details)
    past.clear()
    runs[("B", 25, 2)] = run(-0.1, 4.0, descent=30)  # still in its initial descent at the late window (step 20)
    v, ev, _, details = W.cos_roles_sweep(runs, B, R, R, S, regime_steps=3)
    assert ev["batch_sizes_in_descent"] == [25] and ev["batch_sizes_past_regime"] == [] and "initial descent when the late " \
        "window starts: batch 25" in details[0]
    assert W.cos_roles_decide(ev, "more data", 3, "the paper").startswith("longer runs")


def test_cos_roles_batch_first_equals_the_whole_sweep(monkeypatch):
    """With a batch size past the regime the lazy sweep gives cos_roles_sweep's verdict (inconclusive) without running a rate;
    with every batch size inside it, it runs the rates (the shared run once) and gives the whole sweep's verdict and parts."""
    import types

    B, R, S, T = [25, 50, 100, 200], [0.025, 0.05, 0.1, 0.2], range(3), 40
    rng = np.random.default_rng(4)

    def run(level, dist):
        cos = np.r_[np.nan, 0.5, 0.5, level + 0.01 * rng.standard_normal(T - 3)]
        d = np.linspace(0, dist, T + 1) * (1 + 0.01 * rng.random())
        return types.SimpleNamespace(traj=types.SimpleNamespace(cos=torch.tensor(cos), dist=torch.tensor(d)), lr=None)

    runs = {("B", b, s): run(-0.1 * np.log2(b / 25) - 0.1, 4.0 - 0.4 * np.log2(b / 25)) for b in B for s in S}
    runs.update({("lr", r, s): runs[("B", 100, s)] if r == 0.1 else run(-0.3 + 0.05 * np.log2(r / 0.1), 3.2)
                 for r in R for s in S})
    past, made = set(), []

    def fake_late(r, a, b, **kw):
        return {"in_regime": id(r) not in past, "height": 1.0, "epoch": 2.0, "paper_height": 0.05,
                "in_regime_row_rate": id(r) not in past, "paper_height_row_rate": 0.05}

    def make(keys):
        made.extend(keys)
        return [(runs[k], None) for k in keys]  # no late profile: measured by cos_roles_batch_first

    monkeypatch.setattr(W, "late_regime", fake_late)
    full = W.cos_roles_sweep(runs, B, R, R, S, regime_steps=3)
    v, summary = W.cos_roles_batch_first(make, B, R, R, S, regime_steps=3, shared=(0.1, 100))
    assert W.batch_first_reason(summary, B) == "parts " + ", ".join(full[1][f"status_{i}"] for i in (1, 2, 3))
    assert v == full[0] and summary["rates_run"] and [summary[f"status_{i}"] for i in (1, 2, 3)] == [
        full[1][f"status_{i}"] for i in (1, 2, 3)]
    assert sorted(made, key=str) == sorted([("B", b, s) for b in B for s in S] + [("lr", r, s) for r in R if r != 0.1 for s in S],
                                           key=str)
    past.add(id(runs[("B", 50, 2)]))
    made.clear()
    v, summary = W.cos_roles_batch_first(make, B, R, R, S, regime_steps=3, shared=(0.1, 100))
    assert v == W.cos_roles_sweep(runs, B, R, R, S, regime_steps=3)[0] == "inconclusive"
    assert summary["batch_sizes_past_regime"] == [50] and not summary["rates_run"] and all(k[0] == "B" for k in made)
    assert summary["late_paper_height_by_batch"] == pytest.approx([0.05] * 4)
    reason = W.batch_first_reason(summary, B)
    assert reason.startswith("past the paper's regime at the late window: batch 50 (mean heights 1.0e+00")
    assert "a tenth of Table 2's: 5.0e-03" in reason and reason.endswith("the rates not run")
    with pytest.raises(ValueError, match="shared batch size 300"):
        W.cos_roles_batch_first(make, B, R, R, S, regime_steps=3, shared=(0.1, 300))
    past.clear()

    def measured(r, a, b, **kw):
        raise AssertionError("a run whose late profile came with it was profiled again")

    given = [(runs[k], fake_late(runs[k], 0, 0)) for k in runs]  # the profiles measured where the runs ran
    monkeypatch.setattr(W, "late_regime", measured)
    by_id = {id(r): lt for r, lt in given}
    v2, summary2 = W.cos_roles_batch_first(lambda keys: [(runs[k], by_id[id(runs[k])]) for k in keys], B, R, R, S,
                                           regime_steps=3, shared=(0.1, 100))
    assert v2 == full[0] and summary2["rates_run"]


def test_sweep_split_and_the_mlp_side():
    cfg = {"sweep_data": "digits", "sweep_n_train": 100, "paper_models": False}
    d = W.sweep_split(cfg, "cpu")
    assert d["cnn"] is d["mlp"] and d["cnn"].x.shape == (100, 1, 8, 8)
    net = W.make_model("mlp", cfg, torch.Generator().manual_seed(0), side=14)
    assert net(torch.zeros(3, 1, 14, 14)).shape == (3, 10)
    with pytest.raises(ValueError, match="sweep_data"):
        W.sweep_split(cfg | {"sweep_data": "cifar"}, "cpu")


def test_farther_stats_against_scipy_on_designed_distances():
    """Part (i) of claim-sgd-farther: the distances at both update counts, the paired one-sided t on log distances (scipy),
    the statuses, and the second version's effect (the paper's 1.7/1.4) failing a ratio the seeds put clearly below it."""
    import types

    from scipy import stats as sps

    def runs(dists):  # distances after 0..4 updates per seed
        return [types.SimpleNamespace(traj=types.SimpleNamespace(dist=torch.tensor(d, dtype=torch.float64))) for d in dists]

    gd = runs([[0, 1.0, 2.0, 3.0, 4.0], [0, 1.1, 2.1, 3.3, 4.1], [0, 0.9, 1.9, 2.8, 3.9]])
    sgd = runs([[0, 1.1, 2.2, 3.3, 4.9], [0, 1.2, 2.35, 3.6, 5.2], [0, 1.0, 2.05, 3.1, 4.6]])
    v = W.farther_stats(gd, sgd, 2, 4)
    assert v["d_gd"] == [2.0, 2.1, 1.9] and v["l_sgd"] == [4.9, 5.2, 4.6]
    want = sps.ttest_rel(np.log([2.2, 2.35, 2.05]), np.log([2.0, 2.1, 1.9]), alternative="greater").pvalue
    assert v["p"] == pytest.approx(want, rel=1e-9)
    assert v["st_far"] == W.HOLDS and v["st_later"] == W.HOLDS
    assert v["st_far_effect"] == W.HOLDS  # significantly farther: the effect is not asked about
    same = runs([[0, 1.0, 2.02, 3.0, 4.0], [0, 1.1, 2.08, 3.3, 4.1], [0, 0.9, 1.9, 2.8, 3.9]])  # SGD/GD about 1.0
    w = W.farther_stats(gd, same, 2, 4)
    assert w["st_far"] == W.UNDECIDED and w["st_far_effect"] == W.FAILS  # the seeds exclude 1.7/1.4 = 1.21
    assert v["ratio"] == W.mean_ci(np.array([2.2, 2.35, 2.05]) / np.array([2.0, 2.1, 1.9]), 3)
    one = W.farther_stats(gd[:1], sgd[:1], 2, 4)
    assert np.isnan(one["p"]) and one["st_far"] == W.UNDECIDED


def test_role_datas_load_each_data_set_once():
    cfg = {"data": "digits", "n_train": 150}
    out = W.role_datas(["cnn", "resnet", "mlp"], cfg, "cpu")
    assert out["cnn"] is out["resnet"] is out["mlp"] and out["cnn"].x.shape[0] == 150


def test_role_datas_give_the_mlp_mnist_at_the_paper_scale(monkeypatch):
    calls = []
    monkeypatch.setattr(W, "role_data", lambda role, cfg, device: calls.append(role) or ("mnist" if role == "mlp" else "cifar10"))
    out = W.role_datas(["cnn", "resnet", "mlp"], {"data": "paper"}, "cpu")
    assert out == {"cnn": "cifar10", "resnet": "cifar10", "mlp": "mnist"} and calls == ["cnn", "mlp"]


def test_role_kind_maps_each_stand_in_to_its_data_set():
    assert {r: W.role_kind(r, {"data": "paper"}) for r in ("cnn", "cnn-nobn", "resnet", "mlp")} == {
        "cnn": "cifar10", "cnn-nobn": "cifar10", "resnet": "cifar10", "mlp": "mnist"}
    assert W.role_kind("mlp", {"data": "digits"}) == "digits"
    with pytest.raises(ValueError, match="unknown data 'fashion'"):
        W.role_kind("cnn", {"data": "fashion"})


def test_paper_split_takes_validation_images_where_the_authors_code_did():
    from sgdbook.data import paper_dataset

    ds, _ = paper_dataset("mnist", "train")  # MNIST, or Fashion-MNIST standing in (60,000 images either way)
    d = W.paper_split("mnist", 100, 40, valid_start=50_000)
    raw = ds.x.float()
    mu, sd = raw[:100].mean(), raw[:100].std()
    torch.testing.assert_close(d.xv, (raw[50_000:50_040] - mu) / sd)
    torch.testing.assert_close(d.x, (raw[:100] - mu) / sd)
    assert torch.equal(d.yv, ds.y[50_000:50_040]) and "from image 50000" in d.note
    nxt = W.paper_split("mnist", 100, 40)  # default: the images after the training ones
    assert torch.equal(nxt.yv, ds.y[100:140]) and "from image" not in nxt.note
    with pytest.raises(ValueError, match="inside the 100 training images"):
        W.paper_split("mnist", 100, 40, valid_start=50)
    with pytest.raises(ValueError, match="cannot take 100 for training and 40 for validation from image 59990"):
        W.paper_split("mnist", 100, 40, valid_start=59_990)
    mlp = W.role_data("mlp", {"data": "paper", "paper_models": False, "n_train": 100, "eval_n": 0}, "cpu")
    assert torch.equal(mlp.yv, ds.y[50_000:60_000]) and torch.equal(mlp.y, ds.y[:100])  # the authors' MNIST split


def test_exact_profile_gives_the_float64_flags():
    """Flags of a float32 profile with only its undecidable segments re-evaluated in float64 equal those of a whole
    float64 profile; a coarse tolerance makes many segments undecidable, and the plain float32 flags then differ."""
    d = W.digits_split(120)
    run = W.run_walk("cnn", d, lr=0.1, steps=14, batch_size=40, seed=0, windows=[(0, 14)],
                     model=lambda g: W.standin("cnn", g))
    p64 = W.profile(run, 0, 14, dtype=torch.float64, rtol=1e-12)
    flags = lambda p: torch.stack([p.interior, p.barrier, p.raw_barrier]).cpu()  # noqa: E731
    for rtol in (1e-4, 3e-2):
        plain = W.profile(run, 0, 14, rtol=rtol)
        ex, info = W.exact_profile(run, 0, 14, rtol=rtol)
        assert torch.equal(flags(ex), flags(p64)) and torch.equal(ex.floor_rise.cpu(), p64.floor_rise.cpu())
        assert info["refined"] == int((W.flag_margins(plain) <= rtol).sum()) and info["f32_rel"] < W.F32_ERROR_SHARE * rtol
        if rtol > 1e-3:
            assert info["refined"] > 0 and not torch.equal(flags(plain), flags(p64))
    with pytest.raises(ValueError, match="float32 cannot decide"):
        W.exact_profile(run, 0, 14, rtol=1e-9)


def test_exact_profile_keeps_one_value_at_an_end_point_shared_with_an_unrefined_segment(monkeypatch):
    """Segment 0 is undecidable (a dip within the tolerance) and re-evaluated; segment 1 is not. Their shared end point is
    the floor of both (segment 0's right end, segment 1's left): the merged losses must hold float64's value in both rows,
    or the floors differ by float32's error and a floor rise appears that float64 does not have."""
    from sgdbook.landscape import segment_stats

    a = torch.linspace(0, 1, 5, dtype=F64)
    f64 = torch.tensor([[1.0, 0.9, 0.8, 0.7, 0.6], [0.6, 0.7, 0.8, 0.9, 1.0]], dtype=F64)
    f64[0, 3] = 0.6 + 1e-9  # segment 0: an interior point just above its right end (a dip too small for float32 to see)
    f32 = f64.clone()
    f32[:, 1:-1] += 1e-7  # float32's rounding, well inside rtol / 4
    f32[1, 0] = 0.6 + 2e-8  # segment 1's copy of the shared end point, rounded differently
    f32[0, -1] = 0.6 - 3e-8

    def fake_profile(run, lo, hi, *, dtype=None, rtol=1e-6, n_alpha=11, noise_repeats=2):
        losses = (f64 if dtype == torch.float64 else f32)[lo:hi]
        tol = 1e-12 * float(losses.abs().max()) if dtype == torch.float64 else rtol * float(losses.abs().max())
        return W.WindowProfile(alphas=a, losses=losses, noise=0.0, tol=tol, **segment_stats(losses, a, tol))

    monkeypatch.setattr(W, "profile", fake_profile)
    ex, info = W.exact_profile(None, 0, 2, rtol=1e-4)
    p64 = fake_profile(None, 0, 2, dtype=torch.float64)
    assert info["refined"] >= 1 and float(ex.losses[1, 0]) == float(ex.losses[0, -1]) == 0.6
    assert torch.equal(ex.floor_rise, p64.floor_rise) and not bool(ex.floor_rise[0])


def test_sub_profile_and_exact_summaries():
    d = W.digits_split(120)
    run = W.run_walk("cnn", d, lr=0.1, steps=14, batch_size=40, seed=0, windows=[(0, 14)],
                     model=lambda g: W.standin("cnn", g))
    whole = W.profile(run, 0, 14, dtype=torch.float64, rtol=1e-12)
    part = W.sub_profile(whole, 4, 9)
    ref = W.profile(run, 4, 9, dtype=torch.float64, rtol=0.0)
    assert torch.allclose(part.losses, ref.losses, rtol=1e-12, atol=0) and torch.equal(part.interior, ref.interior)
    assert torch.equal(part.floor_rise, whole.floor_rise[4:8])
    with pytest.raises(ValueError, match="not inside"):
        W.sub_profile(whole, 10, 15)
    m, _ = W.sgd_summary(run, 0, 14, rtol=3e-2, exact=True)  # flags float64's however coarse the float32 tolerance
    assert m["interior_frac"] == pytest.approx(float(whole.interior.double().mean())) and m["refined"] > 0
