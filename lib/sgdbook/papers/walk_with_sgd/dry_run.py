"""Dry runs of the walk-with-sgd chapters: the `paper` scale built and stepped once.

One function per notebook ``NN_<topic>.ipynb``: ``<topic>(cfg, device)`` takes the notebook's
``SETTINGS("paper")``, asserts the paper's own values, builds every paper-scale network (VGG-11 with
``vgg11_bn``'s features and the 512-512-10 head, pre-activation ResNet-56, the MLP 784-500-350-10
with batch norm; parameter counts asserted by :func:`.walk.paper_model`) and runs ONE step of each
computation the chapter makes (a GD or SGD step of the trajectory recorder, the loss along one
segment, the isotropic-noise variance) on a few inputs of the paper's shapes (CIFAR-10 3×32×32,
MNIST 1×28×28). ``tests/test_paper_scale.py`` calls every function on the CPU.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ...landscape import window_profile
from ...trajectory import max_gradient_variance, record_trajectory
from .walk import GD_CHUNK, PAPER_PARAMETER_COUNTS, gd_chunk, make_model, role_kind

Settings = Mapping[str, Any]

#: One example of each paper data set (channels, height, width).
SHAPES = {"cifar10": (3, 32, 32), "mnist": (1, 28, 28)}
_FEW = 4  # inputs per dry step: enough for batch norm (2 per SGD batch), small enough for a CPU


def _inputs(role: str, cfg: Settings, device: torch.device, n: int = _FEW):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *SHAPES[role_kind(role, cfg)], generator=g).to(device)  # the chapters' data of each role
    return x, torch.arange(n, device=device) % 10


def _common(cfg: Settings, lr_resnet: float = 0.3) -> None:
    """The paper's data, batch, epoch and rates (ResNet-56: 0.3 as in Fig. 7 and Table 2, 0.1 in
    Section 4's isotropic-noise runs); GD on its 45,000 images accumulates its gradient in chunks."""
    assert cfg["paper_models"] is True and cfg["data"] == "paper"
    assert cfg["n_train"] == 45_000 and cfg["batch_size"] == 100
    assert cfg["n_train"] // cfg["batch_size"] == 450  # the paper's epoch
    assert cfg["lr_cnn"] == 0.1 and cfg["lr_resnet"] == lr_resnet
    assert gd_chunk(cfg["n_train"], None) == GD_CHUNK < cfg["n_train"]


def _step(role: str, cfg: Settings, device: torch.device, *, lr: float, batch: bool, noise_std: float = 0.0,
          n_alpha: int = 3) -> None:
    """One GD or SGD step of the recorder on the paper's network for ``role`` and the loss along the
    segment it made, at ``n_alpha`` points (deterministic evaluation, batch norm on the batch)."""
    model = make_model(role, cfg, torch.Generator().manual_seed(0)).to(device)
    x, y = _inputs(role, cfg, device)
    traj = record_trajectory(model, F.cross_entropy, x, y, steps=1, lr=lr, batch_size=_FEW // 2 if batch else None,
                             generator=torch.Generator(device=device).manual_seed(1), noise_std=noise_std,
                             windows=[(0, 1)], store_buffers=True)
    assert torch.isfinite(traj.loss).all() and traj.dist[-1] > 0
    prof = window_profile(model, F.cross_entropy, x, y, traj.window(0, 1).thetas, n_alpha=n_alpha, bn_mode="train",
                          noise_repeats=1)
    assert prof.noise == 0.0 and torch.isfinite(prof.losses).all()


def _rates(cfg: Settings) -> dict[str, float]:
    return {"cnn": cfg["lr_cnn"], "cnn-nobn": cfg["lr_cnn"], "resnet": cfg["lr_resnet"], "mlp": cfg["lr_mlp"]}


def the_walk(cfg: Settings, device: torch.device) -> None:
    """Chapter 01: one GD step of VGG-11 without batch norm (the GD path) and one SGD step of VGG-11,
    ResNet-56 and the MLP (the SGD path), each with the loss along its segment; VGG-11 with batch
    norm also serves the 3×32×32 Fashion-MNIST stand-in of the Tiny-ImageNet subset."""
    _common(cfg)
    assert cfg["window"] == 40 and cfg["gd_steps"] == 40 and cfg["n_alpha"] == 11
    assert [list(w) for w in cfg["sgd_windows"]] == [[0, 40], [450, 490]]
    assert cfg["fm_side"] == 32 and 100 in cfg["fig24_batch_sizes"]
    lr = _rates(cfg)
    _step("cnn-nobn", cfg, device, lr=lr["cnn-nobn"], batch=False)
    for role in ("cnn", "resnet", "mlp"):
        _step(role, cfg, device, lr=lr[role], batch=True, n_alpha=cfg["n_alpha"] if role == "mlp" else 3)


def barriers(cfg: Settings, device: torch.device) -> None:
    """Chapter 02: one profiled SGD step of each network (both learning rates use the same path)."""
    _common(cfg)
    assert cfg["epochs"] == 100 and list(cfg["table_epochs"]) == [1, 10, 25, 100] and cfg["fig8_epochs"] == 40
    assert cfg["code_batch"] == 100 and 0 < cfg["lr_factor"] < 1
    for role, lr in _rates(cfg).items():
        if role != "cnn-nobn":
            _step(role, cfg, device, lr=lr * cfg["lr_factor"], batch=True)


def lr_and_batch(cfg: Settings, device: torch.device) -> None:
    """Chapter 03: one SGD step of each network at the largest learning rate of the sweep."""
    _common(cfg)
    assert list(cfg["t2_epochs"]) == [1, 10, 25, 100] and cfg["t2_train_epochs"] == 100
    assert cfg["batch_size"] in cfg["batch_sizes"] and 1.0 in cfg["lr_factors"]
    assert max(cfg["fn_ks"]) * cfg["fn_batch"] <= cfg["n_train"]
    assert cfg["sweep_data"] == "paper" and not cfg["digits_pilot"]  # the sweeps on CIFAR-10 and MNIST (walk.sweep_split)
    for role, lr in _rates(cfg).items():
        if role != "cnn-nobn":
            _step(role, cfg, device, lr=lr * max(cfg["lr_factors"]), batch=True)


def isotropic_noise(cfg: Settings, device: torch.device) -> None:
    """Chapter 05: the variance estimate at θ₀ (two minibatches) and one noisy GD step per network."""
    _common(cfg, lr_resnet=0.1)
    assert 2 <= cfg["plateau_points"] <= cfg["steps"] // cfg["every"]
    assert list(cfg["noise_factors"]) == [0.05, 0.1]
    for role, lr in _rates(cfg).items():
        if role == "cnn-nobn":
            continue
        model = make_model(role, cfg, torch.Generator().manual_seed(0)).to(device)
        x, y = _inputs(role, cfg, device)
        v = max_gradient_variance(model, F.cross_entropy, x, y, batch_size=_FEW // 2, n_batches=2,
                                  generator=torch.Generator(device=device).manual_seed(2))
        assert v > 0
        _step(role, cfg, device, lr=lr, batch=False, noise_std=(max(cfg["noise_factors"]) * v) ** 0.5)
    assert set(PAPER_PARAMETER_COUNTS) == {"vgg11", "resnet56", "mlp"}


def curvature(cfg: Settings, device: torch.device) -> None:
    """Chapter 04: on VGG-11 and ResNet-56 one SGD step and one Hessian-vector product with batch
    norm in train and in eval mode (λ_max's operator); on VGG-11 without batch norm the per-example
    gradient of one example, one product of the covariance operator and minibatch gradients; Eq. 3's
    terms on the tiny float64 CNN."""
    from ... import curvature as curv
    from ... import gradients
    from .sharpness import ChunkedHessian
    from .curvature_checks import eq3_terms, minibatch_gradients, tiny_problem

    _common(cfg)
    assert list(cfg["checkpoints"]) == [1, 10, 25, 100] and cfg["epochs"] == 100
    assert cfg["hessian_n"] <= cfg["n_train"] and cfg["nobn_n"] <= cfg["n_train"] and cfg["topk"] >= 1
    assert cfg["mc_checkpoint"] in range(1, cfg["nobn_epochs"] + 1) and cfg["mc_minibatches"] >= 2
    assert cfg["hessian_chunk"] is not None and cfg["hessian_chunk"] < cfg["hessian_n"]  # one chunk's graph at a time
    for role in ("cnn", "resnet"):
        model = make_model(role, cfg, torch.Generator().manual_seed(0)).to(device)
        x, y = _inputs(role, cfg, device, 2)
        opt = torch.optim.SGD(model.parameters(), lr=cfg["lr_cnn" if role == "cnn" else "lr_resnet"])
        model.train()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        for mode in ("train", "eval"):
            h = curv.HVP.from_model(model, F.cross_entropy, x, y, bn_mode=mode)
            v = torch.randn(h.p, generator=torch.Generator().manual_seed(1)).to(device)
            assert torch.isfinite(h(v)).all()
        chunked = ChunkedHessian(model, x, y, bn_mode="eval", chunk=1)  # the paper scale's λ_max operator, in chunks
        assert torch.isfinite(chunked(v)).all()
    model = make_model("cnn-nobn", cfg, torch.Generator().manual_seed(0)).to(device)
    x, y = _inputs("cnn-nobn", cfg, device, 2)
    P = sum(q.numel() for q in model.parameters())
    C = gradients.second_moment_operator(model, F.cross_entropy, x, y, centered=True)
    V = torch.linalg.qr(torch.randn(P, 2, generator=torch.Generator().manual_seed(2))).Q.to(device)
    assert torch.isfinite(C @ V[:, 0]).all()
    Z = minibatch_gradients(model, F.cross_entropy, x, y, torch.tensor([[0], [1]], device=device), directions=V)
    assert Z.shape == (2, 2) and torch.isfinite(Z).all()
    G = gradients.per_example_grads(model, F.cross_entropy, x[:1], y[:1])  # the chunked noise share's inner step
    assert G.shape == (1, P) and torch.isfinite(G @ V).all()
    tiny, xt, yt = tiny_problem(cfg["tiny_n"], cfg["tiny_side"], cfg["tiny_widths"], cfg["tiny_head"])
    assert eq3_terms(tiny, xt, yt).err_with_M < 1e-10


def schedules_quadratic(cfg: Settings, device: torch.device) -> None:
    """Chapter 06: the three schedules over the paper's run length, one SGD step of VGG-11 and of
    ResNet-56 at each schedule's first rate with the held-out evaluation, and GD on a quadratic."""
    from ...training import evaluate
    from .lr_schedules import KINDS, make_schedule
    from .quadratic import gd, segment_minimum

    assert cfg["paper_models"] is True and cfg["data"] == "paper" and cfg["batch_size"] == 100
    assert cfg["n_train"] == 45_000 and cfg["n_valid"] == 5_000 and cfg["n_test"] <= 10_000
    steps = cfg["epochs"] * (cfg["n_train"] // cfg["batch_size"])
    shape = dict(base_ratio=cfg["base_ratio"], half_cycle=cfg["half_cycle"], anneal=cfg["anneal"],
                 milestones=cfg["milestones"], gamma=cfg["gamma"])
    for role in ("cnn", "resnet"):
        model = make_model(role, cfg, torch.Generator().manual_seed(0)).to(device)
        x, y = _inputs(role, cfg, device, 4)
        assert cfg["lr_low"] <= min(cfg["lr_grid"]) and max(cfg["lr_grid"]) <= cfg["lr_high"] and len(cfg["lr_grid"]) >= 3
        for kind in KINDS:  # the largest rate the bracketing grid search may reach
            sched = make_schedule(kind, cfg["lr_high"], steps, **shape)
            rates = sched.values(steps)
            assert rates.max() <= cfg["lr_high"] + 1e-12 and rates.min() >= 0
        opt = torch.optim.SGD(model.parameters(), lr=float(make_schedule("CLR", cfg["lr_grid"][0], steps, **shape)(0)))
        model.train()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        assert 0.0 <= evaluate(model, F.cross_entropy, x, y)["accuracy"] <= 1.0
    H = torch.diag(torch.linspace(0.1, 1.0, cfg["quad_dim"], dtype=torch.float64))
    run = gd(H, torch.ones(cfg["quad_dim"], dtype=torch.float64), 1.5, cfg["quad_steps"])
    assert segment_minimum(H, run.theta).floor.shape == (cfg["quad_steps"],)
