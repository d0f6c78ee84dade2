"""One step of every ``paper``-scale configuration of the vmf-directional notebooks, on any device.

``tests/test_paper_scale.py`` calls ``<topic>(SETTINGS("paper"), torch.device("cpu"))`` for every
notebook ``NN_<topic>.ipynb``, so that the paper scale (meant for one GPU) cannot rot without one:
each function builds the paper's own configuration (its dimensions and parameter counts asserted)
and runs one step of each computation on small random data of the right shape.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from sgdbook import directional as vd
from sgdbook.gradients import minibatch_moments
from sgdbook.models import count_parameters
from sgdbook.training import log_epochs, sgd_train

from . import angles as th
from . import runs
from . import sandbox
from . import theory as vt
from .models import CNN_SETUPS, FIG7_SETUPS, MLP_SETUPS, VMF_PARAMETER_COUNTS, build_model, input_shape

Cfg = Mapping[str, Any]


def kappa_bias(cfg: Cfg, device: torch.device) -> None:
    """Table 1 at every dimension (one simulation each) and one full-size real vMF draw per κ."""
    from .settings.kappa_bias import TABLE1_PAPER

    gen = torch.Generator(device=device).manual_seed(0)
    for d, _ in TABLE1_PAPER.values():
        k = vd.kappa_hat_of_vmf(d, 0.0, cfg["sample_sizes"], 1, gen)
        assert k.shape == (1, len(cfg["sample_sizes"])) and (k > 0).all()
    mu = torch.zeros(cfg["fig8_d"], device=device)
    mu[0] = 1
    for kappa in cfg["fig8_kappas"]:
        x = vd.sample_vmf(mu, float(kappa), max(cfg["sample_sizes"]), gen)
        assert x.shape == (max(cfg["sample_sizes"]), cfg["fig8_d"]) and torch.isfinite(x).all()


def norms_and_angles(cfg: Cfg, device: torch.device) -> None:
    """One exact enumeration of each size, one draw of each random-vector experiment."""
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(cfg["thm1_n"][1], cfg["thm1_d"][1], generator=gen, dtype=torch.float64)
    assert len(th.theorem1_sides(g, cfg["thm1_n"][1] // 2)) == 5
    hoffer = th.exact_minibatch_moments(torch.randn(cfg["hoffer_n"], 5, generator=gen, dtype=torch.float64), cfg["hoffer_m"])
    assert hoffer.count == math.comb(cfg["hoffer_n"], cfg["hoffer_m"])
    walk = th.exact_minibatch_moments(
        torch.randn(cfg["blowup_n"], cfg["blowup_features"], generator=gen, dtype=torch.float64), cfg["blowup_m"])
    assert walk.gns > 0
    dgen = torch.Generator(device=device).manual_seed(0)
    assert th.random_pair_inner_products(max(cfg["mc_dims"]), 10, dgen).shape == (10,)
    assert all(0 < th.angle_ks(d) < 1 for d in cfg["limit_dims"][-2:])
    a = th.angles_to_random_direction(cfg["fnn_d"], 2, dgen)
    assert a.shape == (2,) and np.all(np.abs(a - 90) < 1)
    assert len(cfg["slutsky_rhos"]) == 2 and cfg["delta_ns"] == sorted(cfg["delta_ns"])


def vmf_theory(cfg: Cfg, device: torch.device) -> None:
    """One SGD step of the 'in practice' sandbox at its paper size, one epoch of the all-minibatch
    sandbox, and one vMF sample of the largest Definition 1 case."""
    gen = torch.Generator(device=device).manual_seed(0)
    f64 = dict(dtype=torch.float64, device=device)
    d, m = cfg["sandbox_d"], cfg["practice_m"]
    a = vt.random_spd((1, m), d, cfg["well_cond"], gen)  # one step needs the examples of one minibatch only
    c = torch.randn(1, m, d, generator=gen, **f64)
    h, b = vt.minibatch_quadratics(a, c, torch.arange(m, device=device)[None])
    w, nsum = vt.sgd_epoch(h, b, torch.zeros(1, d, **f64), cfg["small_lr_per_epoch"] * m / cfg["practice_n"])
    assert torch.isfinite(w).all() and torch.isfinite(nsum).all()
    res = sandbox.corollary_sandbox(runs=1, d=d, n=cfg["all_n"], m=cfg["all_m"], epochs=1, cond=cfg["well_cond"],
                                    start_distance=cfg["start_distance"], cloud_factor=cfg["cloud_factor"],
                                    lr_per_epoch=cfg["small_lr_per_epoch"], generator=gen)
    assert res.k_grad.shape == (2, 1) and res.steps == math.comb(cfg["all_n"], cfg["all_m"])
    mu = torch.zeros(max(cfg["mle_dims"]), **f64)
    mu[0] = 1
    x = vd.sample_vmf(mu, 10.0, cfg["mle_samples"], gen)
    assert x.shape == (cfg["mle_samples"], mu.numel())


def _setup_step(name: str, cfg: Cfg, device: torch.device, batch_size: int | None = None) -> None:
    """Build ``name`` at paper scale (the printed parameter count asserted), take one SGD step on
    random inputs of its shape, and measure κ̂, SNR and normSNR on a few minibatches."""
    gen = torch.Generator().manual_seed(0)
    model = build_model(name, cfg, gen).to(device)
    d = count_parameters(model)
    assert d == VMF_PARAMETER_COUNTS[name], (name, d)
    m = batch_size or cfg["batch_size"]
    assert input_shape(name, cfg) == ((3, 32, 32) if name.startswith("CNN") else (1, 28, 28))
    x = torch.rand(m, *input_shape(name, cfg), generator=gen).to(device)
    y = torch.randint(0, 10, (m,), generator=gen).to(device)
    before = [p.detach().clone() for p in model.parameters()]
    res = sgd_train(model, F.cross_entropy, x, y, lr=cfg["lr"], batch_size=m, epochs=1,
                    generator=torch.Generator(device=device), show_progress=False, stop=lambda e, net: True)
    assert res.steps == 1 and math.isfinite(res.epoch_loss[0]) and res.stopped_at == 1
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    u = torch.randn(d, generator=gen).to(device)
    mm = runs.measure_directions(model, F.cross_entropy, x, y, min(8, m), 4, torch.Generator(device=device), u=u / u.norm(), groups=2)
    assert mm.d == d and mm.n_s == 4 and math.isfinite(mm.kappa) and math.isfinite(mm.snr) and math.isfinite(mm.norm_snr)
    assert mm.cosines is not None and np.isfinite(mm.cosines).all()


def _runs_settings(cfg: Cfg) -> None:
    assert cfg["paper_models"] and cfg["batch_size"] == 64 and cfg["lr"] == 0.01 and cfg["seeds"] == 5
    assert cfg["target_accuracy"] == 0.999


def metrics(cfg: Cfg, device: torch.device) -> None:
    """The paper's FNN: one minibatch-moments call at every Figure 2(a) batch size, on random data."""
    assert cfg["paper_models"] and cfg["fig2a_points"] == 5 and max(cfg["fig2a_batch_sizes"]) <= cfg["fig2a_n"]
    gen = torch.Generator().manual_seed(0)
    model = build_model("FNN", cfg, gen).to(device)
    assert count_parameters(model) == VMF_PARAMETER_COUNTS["FNN"]
    n = max(cfg["fig2a_batch_sizes"])
    x = torch.rand(n, 1, 28, 28, generator=gen).to(device)
    y = torch.randint(0, 10, (n,), generator=gen).to(device)
    for m in cfg["fig2a_batch_sizes"]:
        mm = minibatch_moments(model, F.cross_entropy, x, y, m, 2, torch.Generator(device=device))
        assert math.isfinite(mm.norm_stochasticity)


def training_mlp(cfg: Cfg, device: torch.device) -> None:
    """The four fully connected setups at the paper's width, one step each, and the κ = 0 baseline
    of the largest at n_s = 3,000."""
    _runs_settings(cfg)
    assert cfg["n_s"] == 3000 and log_epochs(cfg["epochs"], cfg["measure_points"])[0] == 0
    for name in MLP_SETUPS:
        _setup_step(name, cfg, device)
    b = vd.uniform_baseline(VMF_PARAMETER_COUNTS["DFNN+BN"], cfg["n_s"], 2, torch.Generator().manual_seed(0))
    assert 30_000 < b.value < 40_000


def batch_sizes(cfg: Cfg, device: torch.device) -> None:
    """The FNN at every Figure 5 batch size, one step each."""
    _runs_settings(cfg)
    assert 64 in cfg["fig5_batch_sizes"] and max(cfg["fig5_batch_sizes"]) <= cfg["n_train"]
    for m in cfg["fig5_batch_sizes"]:
        _setup_step("FNN", cfg, device, batch_size=m)


def training_cnn(cfg: Cfg, device: torch.device) -> None:
    """The four CNN setups at the paper's widths on 3×32×32 inputs, one step each."""
    _runs_settings(cfg)
    assert cfg["cnn_n_s"] == 3000 and cfg["cnn_pool"] == 1 and set(FIG7_SETUPS) <= set(CNN_SETUPS)
    assert cfg["cnn_plain_epochs"] == cfg["cnn_epochs"]  # at paper scale every setup trains to the rule
    for name in CNN_SETUPS:
        assert input_shape(name, cfg) == (3, 32, 32)
        _setup_step(name, cfg, device)


def uniformity(cfg: Cfg, device: torch.device) -> None:
    """The eight setups, one step each (the chapter reads the runs of training_mlp and training_cnn)."""
    _runs_settings(cfg)
    for name in MLP_SETUPS + CNN_SETUPS:
        _setup_step(name, cfg, device)
