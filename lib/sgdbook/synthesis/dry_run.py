"""Dry runs of the synthesis chapter: every ``paper``-scale configuration, one step."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sgdbook import curvature, gradients, landscape, models, trajectory
from sgdbook.models import count_parameters


def four_lenses(cfg: dict, device: torch.device) -> None:
    """The paper-scale MLP on digits-shaped data: one SGD step with a window, each lens once."""
    from sgdbook.papers.walk_with_sgd.walk import digits_split

    from .lenses import model_fisher

    data = digits_split(cfg["n_train"], dtype=torch.float64, device=device)
    x, y = data.x.reshape(data.x.shape[0], -1)[:64], data.y[:64]
    gen = torch.Generator(device=device).manual_seed(0)
    w = cfg["widths"]
    net = models.mlp(w, bias=True, generator=gen).to(device, torch.float64)
    d = count_parameters(net)
    assert d == sum(a * b + b for a, b in zip(w[:-1], w[1:]))
    assert max(cfg["checkpoints"]) + cfg["window"] <= cfg["steps"]
    traj = trajectory.record_trajectory(net, F.cross_entropy, x, y, steps=2, lr=cfg["lr"], batch_size=cfg["batch_size"],
                                        generator=gen, windows=[(0, 2)])
    mm = gradients.minibatch_moments(net, F.cross_entropy, x, y, cfg["batch_size"], 4, gen)
    assert mm.d == d
    G = gradients.per_example_grads(net, F.cross_entropy, x, y)
    assert G.shape == (64, d)
    gradients.finite_population_moments(G, min(cfg["batch_sizes"]))
    hvp = curvature.HVP.from_model(net, F.cross_entropy, x, y)
    assert hvp(torch.ones(d, dtype=torch.float64, device=device)).shape == (d,)
    assert model_fisher(net, x[:4]).shape == (d, d)
    prof = landscape.window_profile(net, F.cross_entropy, x, y, traj.window(0, 2).thetas)
    assert prof.segments == 2 and prof.noise == 0.0
