"""Keep the paper scale of the Figure 6 chapter from rotting without a GPU: build the paper-scale
transformer and data shapes and run ONE lockstep Adam step of 2 runs on CPU."""

import torch

from sgdbook.papers.batch_size_variance import seqmodels as sm
from sgdbook.papers.batch_size_variance.settings.transformer_adam import SETTINGS as TRANSFORMER
from sgdbook.models import count_parameters


def test_bsv_transformer_paper_scale_one_step():
    cfg = TRANSFORMER("paper")
    # the configured experiment: the paper's shape
    assert cfg["batch_sizes"] == [32, 64] and cfg["runs"] == 100 and cfg["epochs"] == 20
    assert (cfg["n_train"], cfg["n_val"], cfg["seq_len"]) == (10_000, 1_000, 128)
    assert (cfg["n_layers"], cfg["d_model"], cfg["n_heads"]) == (6, 384, 12)
    assert cfg["runs"] % cfg["run_group"] == 0
    assert (cfg["lr"], cfg["eps"], cfg["max_grad_norm"]) == (4e-5, 1e-8, 1.0)
    gen = torch.Generator().manual_seed(0)
    data = sm.synthetic_sentiment(cfg["n_train"] + cfg["n_val"], cfg["vocab_size"], cfg["seq_len"], gen,
                                  n_keywords=cfg["n_keywords"], keyword_rate=cfg["keyword_rate"], label_noise=cfg["label_noise"])
    train, val = data.subset(slice(0, cfg["n_train"])), data.subset(slice(cfg["n_train"], None))
    assert train.tokens.shape == (10_000, 128) and val.tokens.shape == (1_000, 128)
    model = sm.transformer_classifier(cfg["vocab_size"], cfg["seq_len"], cfg["d_model"], cfg["n_heads"], cfg["n_layers"],
                                      cfg["d_ff"], gen, init_std=cfg["init_std"], emb_std=cfg["emb_std"])
    n_params = count_parameters(model)
    assert abs(n_params - 35_493_122) / 35_493_122 < 0.03  # the paper's XLNet: 35,493,122 parameters
    sm.check_data(train, model.vocab_size, model.max_len)
    adam = sm.AdamConfig(lr=cfg["lr"], eps=cfg["eps"], weight_decay=cfg["weight_decay"],
                         max_grad_norm=cfg["max_grad_norm"], warmup_steps=cfg["warmup_steps"])
    # one step of 2 runs (the run count and b only set batch dimensions; 4 sequences per run keep it cheap)
    R, m = 2, 4
    idx = sm.epoch_indices(cfg["n_train"], cfg["batch_sizes"][0], R, 1, gen)[0, :, :m]
    params = sm.stack_params(dict(model.named_parameters()), R)
    state = sm.adam_init(params)
    new, state, st = sm.lockstep_step(sm._meta(model), params, state, 0, train.tokens[idx], train.mask[idx], train.labels[idx], adam)
    assert new["tok.weight"].shape == (R, cfg["vocab_size"], cfg["d_model"])
    assert torch.isfinite(st["var_raw"]) and float(st["var_raw"]) > 0 and st["grad_norm"].shape == (R,)
    assert not torch.equal(new["layers.0.qkv.weight"], params["layers.0.qkv.weight"])
    loss, err = sm.evaluate_runs(model, new, val.subset(slice(0, 2)), chunk=2)
    assert loss.shape == err.shape == (R,) and torch.isfinite(loss).all()
