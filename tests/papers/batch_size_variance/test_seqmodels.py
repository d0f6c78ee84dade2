"""Brute-force float64 checks of sgdbook.seqmodels (synthetic sentiment task, transformer
classifier, lockstep AdamW with clipping, across-run variance)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from sgdbook import stats
from sgdbook.ensemble import epoch_indices
from sgdbook.papers.batch_size_variance import seqmodels as sm

V, L, D, H, NL, FF = 24, 7, 8, 2, 2, 12


def tiny(gen, n=40, dtype=torch.float64, label_noise=0.1):
    data = sm.synthetic_sentiment(n, V, L, gen, n_keywords=3, keyword_rate=0.3, min_len=2, label_noise=label_noise)
    model = sm.transformer_classifier(V, L, D, H, NL, FF, gen, init_std=0.3, dtype=dtype)
    return data, model


def perturbed_stack(model, runs, gen, scale=0.1):
    """Stacked parameters that differ across runs (so that per-run mistakes would show)."""
    p = sm.stack_params(dict(model.named_parameters()), runs)
    return {k: v + scale * torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in p.items()}


def load(model, params, r):
    m = copy.deepcopy(model)
    m.load_state_dict({k: v[r] for k, v in params.items()})
    return m


# ------------------------------------------------------------------------------------------- data


def test_synthetic_sentiment_rule_and_padding(gen):
    d = sm.synthetic_sentiment(3000, 50, 12, gen, n_keywords=4, keyword_rate=0.2, label_noise=0.2)
    assert d.tokens.shape == d.mask.shape == (3000, 12) and d.tokens.dtype == torch.long and d.mask.dtype == torch.bool
    assert ((d.tokens == sm.PAD) == ~d.mask).all()  # PAD exactly off the mask
    assert (d.mask[:, :-1].long() - d.mask[:, 1:].long() >= 0).all()  # right padding
    assert (d.mask.sum(1) >= 3).all()  # default min_len = seq_len // 4
    for i in range(200):  # the labelling rule, example by example
        row = d.tokens[i].tolist()
        pos = sum(1 <= t <= 4 for t in row)
        neg = sum(5 <= t <= 8 for t in row)
        if pos != neg:
            assert d.clean_labels[i] == int(pos > neg)
    flip = (d.labels != d.clean_labels).double().mean()
    assert abs(float(flip) - 0.2) < 4 * (0.2 * 0.8 / 3000) ** 0.5
    counts = torch.bincount(d.tokens[d.mask & (d.tokens > 8)], minlength=50)[9:].double()
    assert counts[0] > counts[5] > counts[30]  # Zipf-like neutral tokens


def test_synthetic_sentiment_determinism_and_errors():
    a = sm.synthetic_sentiment(50, 30, 8, torch.Generator().manual_seed(3))
    b = sm.synthetic_sentiment(50, 30, 8, torch.Generator().manual_seed(3))
    c = sm.synthetic_sentiment(50, 30, 8, torch.Generator().manual_seed(4))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.tokens, c.tokens)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="neutral"):
        sm.synthetic_sentiment(10, 17, 8, g, n_keywords=8)
    with pytest.raises(ValueError, match="min_len"):
        sm.synthetic_sentiment(10, 30, 8, g, min_len=9)
    with pytest.raises(ValueError, match="label_noise"):
        sm.synthetic_sentiment(10, 30, 8, g, label_noise=0.5)


def test_check_data_errors(gen):
    d, model = tiny(gen)
    sm.check_data(d, V, L)
    with pytest.raises(ValueError, match="max_len"):
        sm.check_data(d, V, L - 1)
    with pytest.raises(ValueError, match="token ids"):
        sm.check_data(d, 5, L)
    empty = d.subset(slice(0, 3))
    empty.mask[0] = False
    with pytest.raises(ValueError, match="at least one real"):
        sm.check_data(empty, V, L)


# ------------------------------------------------------------------------------------------ model


def test_vmapped_forward_matches_per_run_forward(gen):
    d, model = tiny(gen)
    R = 3
    params = perturbed_stack(model, R, gen)
    shared = sm.per_run_logits(model, params, d.tokens[:9], d.mask[:9])
    per_tok = torch.stack([d.tokens[3 * r:3 * r + 5] for r in range(R)])
    per_mask = torch.stack([d.mask[3 * r:3 * r + 5] for r in range(R)])
    own = sm.per_run_logits(model, params, per_tok, per_mask)
    assert shared.shape == (R, 9, 2) and own.shape == (R, 5, 2)
    for r in range(R):
        m = load(model, params, r)
        torch.testing.assert_close(shared[r], m(d.tokens[:9], d.mask[:9]), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(own[r], m(per_tok[r], per_mask[r]), rtol=1e-12, atol=1e-12)


def test_padding_mask_makes_outputs_independent_of_padded_tokens(gen):
    d, model = tiny(gen)
    out = model(d.tokens, d.mask)
    junk = torch.randint(1, V, d.tokens.shape, generator=gen)
    noisy = torch.where(d.mask, d.tokens, junk)  # garbage at every padded position
    assert not torch.equal(noisy, d.tokens)
    torch.testing.assert_close(model(noisy, d.mask), out, rtol=0, atol=1e-13)
    wide = sm.TransformerClassifier(V, L + 3, D, H, NL, FF)  # more padding columns change nothing either
    with torch.no_grad():
        wide = wide.double()
        for (k, p), (_, q) in zip(wide.named_parameters(), model.named_parameters()):
            p.copy_(torch.cat([q, torch.randn(3, D, generator=gen, dtype=q.dtype)]) if k == "pos" else q)
    pad3 = torch.cat([noisy, junk[:, :3]], 1)
    mask3 = torch.cat([d.mask, torch.zeros(len(d), 3, dtype=torch.bool)], 1)
    torch.testing.assert_close(wide(pad3, mask3), out, rtol=0, atol=1e-13)
    # and the mask matters: unmasking the pads changes the output
    assert (model(noisy, torch.ones_like(d.mask)) - out).abs().max() > 1e-6


def test_model_errors_and_init(gen):
    with pytest.raises(ValueError, match="divisible"):
        sm.TransformerClassifier(V, L, 10, 3, 1, 8)
    model = sm.transformer_classifier(V, L, D, H, NL, FF, gen)
    p = dict(model.named_parameters())
    assert (p["layers.0.ln1.weight"] == 1).all() and (p["head.bias"] == 0).all()
    assert abs(float(p["tok.weight"].detach().std()) - 0.02) < 0.005
    assert sm.no_decay("layers.1.ln2.weight") and sm.no_decay("ln_f.bias") and sm.no_decay("head.bias")
    assert not sm.no_decay("tok.weight") and not sm.no_decay("pos") and not sm.no_decay("layers.0.qkv.weight")
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(2, L + 1, dtype=torch.long), torch.ones(2, L + 1, dtype=torch.bool))


# -------------------------------------------------------------------------------------- optimiser


def test_clip_by_global_norm_matches_torch(gen):
    grads = {"a": torch.randn(4, 3, 2, generator=gen, dtype=torch.float64), "b": torch.randn(4, 5, generator=gen, dtype=torch.float64)}
    clipped, norms = sm.clip_by_global_norm(grads, 2.0)
    for r in range(4):
        ts = [grads["a"][r].clone().requires_grad_(), grads["b"][r].clone().requires_grad_()]
        for t in ts:
            t.grad = t.detach().clone()
        n = torch.nn.utils.clip_grad_norm_(ts, 2.0)
        torch.testing.assert_close(norms[r], n, rtol=1e-14, atol=0)
        torch.testing.assert_close(clipped["a"][r], ts[0].grad, rtol=1e-14, atol=0)
        torch.testing.assert_close(clipped["b"][r], ts[1].grad, rtol=1e-14, atol=0)
    same, _ = sm.clip_by_global_norm(grads, None)
    assert all(torch.equal(same[k], grads[k]) for k in grads)


@pytest.mark.slow
@pytest.mark.parametrize("max_norm", [0.05, None])
def test_lockstep_adam_matches_torch_adamw_per_run(gen, max_norm):
    data, model = tiny(gen, n=24)
    val = sm.synthetic_sentiment(10, V, L, gen, n_keywords=3, min_len=2)
    R, b, E = 3, 6, 2
    cfg = sm.AdamConfig(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, max_grad_norm=max_norm, warmup_steps=3)
    idx = epoch_indices(len(data), R, b, gen, epochs=E)
    res = sm.lockstep_adam(model, data, val, b, E, R, cfg, gen, indices=idx, fullgrad_subset=10)
    T = idx.shape[0]
    finals, grads_seen, clipped_seen, norm_seen, full_seen = [], [], [], [], []
    spe = len(data) // b
    sub = data.subset(slice(0, 10))

    def full_grad(m):
        m.zero_grad()
        F.cross_entropy(m(sub.tokens, sub.mask), sub.labels).backward()
        return torch.cat([p.grad.flatten() for p in m.parameters()]).clone()

    for r in range(R):  # the reference: torch.optim.AdamW on one model per run, a Python loop over runs
        m = copy.deepcopy(model)
        named = list(m.named_parameters())
        opt = torch.optim.AdamW(
            [{"params": [p for k, p in named if not sm.no_decay(k)], "weight_decay": cfg.weight_decay},
             {"params": [p for k, p in named if sm.no_decay(k)], "weight_decay": 0.0}],
            lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, foreach=False)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / cfg.warmup_steps))
        g_r, c_r, n_r, f_r = [], [], [], [full_grad(m)]
        for t in range(T):
            opt.zero_grad()
            i = idx[t, r]
            F.cross_entropy(m(data.tokens[i], data.mask[i]), data.labels[i]).backward()
            g_r.append(torch.cat([p.grad.flatten() for _, p in named]).clone())
            if max_norm is not None:
                n_r.append(torch.nn.utils.clip_grad_norm_(m.parameters(), max_norm))
            else:
                n_r.append(g_r[-1].norm())
            c_r.append(torch.cat([p.grad.flatten() for _, p in named]).clone())
            opt.step()
            sched.step()
            if (t + 1) % spe == 0:
                f_r.append(full_grad(m))
        finals.append({k: p.detach() for k, p in named})
        grads_seen.append(torch.stack(g_r))
        clipped_seen.append(torch.stack(c_r))
        norm_seen.append(torch.stack(n_r))
        full_seen.append(torch.stack(f_r))
    for k in res.params:
        ref = torch.stack([f[k] for f in finals])
        torch.testing.assert_close(res.params[k], ref, rtol=1e-10, atol=1e-12)
    G, C = torch.stack(grads_seen, 1), torch.stack(clipped_seen, 1)  # [T, R, P]
    torch.testing.assert_close(res.var_raw, G.var(1, unbiased=True).sum(-1), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(res.var_clipped, C.var(1, unbiased=True).sum(-1), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(res.grad_norm, torch.stack(norm_seen, 1), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(res.var_fullgrad, torch.stack(full_seen, 1).var(1).sum(-1), rtol=1e-10, atol=1e-14)
    assert res.var_fullgrad.shape == (E + 1,) and float(res.var_fullgrad[0]) < 1e-20  # one θ₀: no spread at the start
    if max_norm is not None:
        assert (res.grad_norm > max_norm).any()  # clipping was active
        assert (torch.linalg.vector_norm(C, dim=-1) <= max_norm * (1 + 1e-12)).all()
    assert res.lr.tolist() == [cfg.lr_at(t) for t in range(T)]
    # the per-epoch evaluations agree with a per-run evaluation of the final parameters
    for r in range(R):
        mr = load(model, res.params, r)
        lo = mr(val.tokens, val.mask)
        torch.testing.assert_close(res.val_loss[-1, r], F.cross_entropy(lo, val.labels), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(res.val_err[-1, r], (lo.argmax(-1) != val.labels).double().mean(), rtol=0, atol=1e-14)


@pytest.mark.slow
def test_lockstep_determinism_and_shapes(gen):
    data, model = tiny(gen, n=20, dtype=torch.float32)
    cfg = sm.AdamConfig(lr=0.01, warmup_steps=2)
    a = sm.lockstep_adam(model, data, data, 4, 2, 3, cfg, torch.Generator().manual_seed(7))
    b = sm.lockstep_adam(model, data, data, 4, 2, 3, cfg, torch.Generator().manual_seed(7))
    c = sm.lockstep_adam(model, data, data, 4, 2, 3, cfg, torch.Generator().manual_seed(8))
    assert a.steps_per_epoch == 5 and a.var_raw.shape == (10,) and a.train_loss.shape == (3, 3) and a.grad_norm.shape == (10, 3)
    assert torch.equal(a.var_raw, b.var_raw) and all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert not torch.equal(a.var_raw, c.var_raw)
    assert torch.equal(a.train_loss[0], c.train_loss[0])  # one initialisation for every run and seed
    assert a.epoch_var().shape == (2,)
    with pytest.raises(ValueError, match="runs >= 2"):
        sm.lockstep_adam(model, data, data, 4, 2, 1, cfg, gen)
    with pytest.raises(ValueError, match="do not match"):
        sm.lockstep_adam(model, data, data, 4, 2, 3, cfg, gen, indices=torch.zeros(3, 3, 4, dtype=torch.long))


def test_adam_config_schedule_and_errors():
    cfg = sm.AdamConfig(lr=1.0, warmup_steps=4)
    assert [cfg.lr_at(t) for t in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert sm.AdamConfig(lr=0.5).lr_at(0) == 0.5
    with pytest.raises(ValueError):
        sm.AdamConfig(lr=-1)
    with pytest.raises(ValueError):
        sm.AdamConfig(lr=1, betas=(1.0, 0.9))
    with pytest.raises(ValueError):
        sm.AdamConfig(lr=1, max_grad_norm=0.0)


# ------------------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("ddof", [0, 1])
def test_across_run_variance_vs_torch_var(gen, ddof):
    t = {"a": torch.randn(5, 3, 4, generator=gen, dtype=torch.float64), "b": torch.randn(5, 7, generator=gen, dtype=torch.float64)}
    brute = sum(torch.var(v, dim=0, correction=ddof).sum() for v in t.values())
    torch.testing.assert_close(sm.across_run_variance(t, ddof=ddof), brute, rtol=1e-13, atol=0)
    flat = torch.cat([v.flatten(1) for v in t.values()], 1)  # E‖vec M‖² − ‖E vec M‖², the paper's definition
    direct = ((flat**2).sum(1).mean() - (flat.mean(0) ** 2).sum()) * 5 / (5 - ddof)
    torch.testing.assert_close(sm.across_run_variance(t, ddof=ddof), direct, rtol=1e-12, atol=0)
    with pytest.raises(ValueError):
        sm.across_run_variance({"a": torch.zeros(1, 3)})


def test_epoch_indices_over_several_epochs_are_per_run_permutations(gen):
    idx = epoch_indices(23, 4, 5, gen, epochs=3)
    assert idx.shape == (3 * 4, 4, 5)
    per_epoch = idx.reshape(3, 4, 4, 5)  # [epoch, step, run, m]
    for e in range(3):
        for r in range(4):
            seen = per_epoch[e, :, r].flatten()
            assert seen.unique().numel() == 20 and seen.max() < 23  # no repeats inside an epoch; last 3 dropped
    assert not torch.equal(idx[:, 0], idx[:, 1])
    state = gen.get_state()
    again = torch.cat([epoch_indices(23, 4, 5, gen) for _ in range(3)])  # one epoch at a time: the same draws
    gen.set_state(state)
    torch.testing.assert_close(torch.cat([epoch_indices(23, 4, 5, gen) for _ in range(3)]), again)
    with pytest.raises(ValueError):
        epoch_indices(4, 2, 5, gen)
    with pytest.raises(ValueError):
        epoch_indices(4, 2, 2, gen, epochs=0)


def test_evaluate_matches_a_per_run_loop(gen):
    data, model = tiny(gen, n=13)
    params = perturbed_stack(model, 3, gen)
    loss, err = sm.evaluate(model, params, data, chunk=5)
    for r in range(3):
        m = copy.deepcopy(model)
        with torch.no_grad():
            for k, p in m.named_parameters():
                p.copy_(params[k][r])
            logits = m(data.tokens, data.mask)
        torch.testing.assert_close(loss[r], F.cross_entropy(logits, data.labels), rtol=1e-12, atol=0)
        torch.testing.assert_close(err[r], (logits.argmax(-1) != data.labels).to(loss.dtype).mean())


def test_epoch_average():
    x = torch.arange(12.0).reshape(6, 2)
    torch.testing.assert_close(sm.epoch_average(x, 3), torch.tensor([[2.0, 3.0], [8.0, 9.0]]))
    with pytest.raises(ValueError):
        sm.epoch_average(x, 4)


@pytest.mark.slow
def test_combine_groups_equals_one_batched_program(gen):
    data, model = tiny(gen, n=20)
    cfg = sm.AdamConfig(lr=0.01, warmup_steps=2, max_grad_norm=0.5)
    idx = epoch_indices(20, 4, 5, gen, epochs=2)
    whole = sm.lockstep_adam(model, data, data, 5, 2, 4, cfg, gen, indices=idx)
    parts = [sm.lockstep_adam(model, data, data, 5, 2, 2, cfg, gen, indices=idx[:, s:s + 2]) for s in (0, 2)]
    merged = sm.combine_groups(parts)
    for name in ("grad_norm", "mb_loss", "train_loss", "train_err", "val_loss", "val_err"):
        torch.testing.assert_close(getattr(merged, name), getattr(whole, name), rtol=1e-10, atol=1e-13)
    for k in whole.params:
        torch.testing.assert_close(merged.params[k], whole.params[k], rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(merged.var_raw, (parts[0].var_raw + parts[1].var_raw) / 2)
    with pytest.raises(ValueError):
        sm.combine_groups([])


def test_run_shares_average_to_the_variance(gen):
    data, model = tiny(gen, n=20)
    cfg = sm.AdamConfig(lr=0.01, warmup_steps=2, max_grad_norm=0.5)
    res = sm.lockstep_adam(model, data, data, 5, 2, 4, cfg, gen)
    torch.testing.assert_close(res.var_runs.mean(1), res.var_raw, rtol=1e-12, atol=1e-15)
    assert res.epoch_var_runs().shape == (4, 2)
    torch.testing.assert_close(res.epoch_var_runs().mean(0), res.epoch_var(), rtol=1e-12, atol=1e-15)
    t = {"a": torch.randn(5, 3, generator=gen, dtype=torch.float64), "b": torch.randn(5, 2, 2, generator=gen, dtype=torch.float64)}
    flat = torch.cat([t["a"], t["b"].flatten(1)], 1)
    torch.testing.assert_close(sm.run_deviations(t), ((flat - flat.mean(0)) ** 2).sum(1))


@pytest.mark.slow
def test_figure6_compares_batch_sizes_with_welch_t(gen):
    data, model = tiny(gen, n=24)
    cfg = dict(batch_sizes=[3, 6], runs=4, run_group=2, epochs=2, eval_chunk=8, fullgrad_subset=4)
    res = sm.train_batch_sizes(model, data, data, cfg, sm.AdamConfig(lr=0.01, warmup_steps=2), seed=0)
    assert set(res) == {3, 6} and res[3].train_loss.shape == (3, 4) and res[6].var_runs.shape == (8, 4)
    f = sm.figure6(res[3], res[6])
    ref = stats.ordering(res[3].epoch_var_runs().numpy(), res[6].epoch_var_runs().numpy(), paired=False)
    assert f.variance.overall.t == pytest.approx(ref.overall.t)
    assert set(f.parts) == {"variance", *sm.CURVES} and f.verdict == stats.combine_verdicts(f.parts.values())
    assert set(f.per_step) == set(sm.CURVES) and f.per_step["train_loss"].points == 1  # b = 6 after epoch 2 vs b = 3 after 1
