"""The Gauss-k set-up of the Hessian paper (App. A.1, Table 2), as printed and as run in this book.

Table 2: four data settings (Gauss-2 with 0 / 20 % random labels, Gauss-10 with 0 / 15 %), each
with batch sizes 5 and 50, ``n = 100`` points in 50 dimensions, a ReLU network 50→10→30→k with
biases (``p = 902`` / ``1,150``), constant-step SGD on minibatches drawn with replacement,
10,000 runs from ``θ₀ ~ N(0, I)``.

*As printed* (``literal=True``): the raw ``make_blobs`` features (‖x‖ ≈ 41) and ``θ₀ ~ N(0, I)``;
that set-up diverges (the book shows it in the first chapter). *As run here* (the deviation every
chapter states): features standardised by the training mean and standard deviation (as App. A.2
does for MNIST) and ``θ₀ ~ N(0, 0.5² I)``; everything else as in Table 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ... import data as _data
from ...ensemble import EnsembleResult, ensemble_sgd, normal_init
from ...models import mlp

#: Table 2 of the paper (App. A.1), one entry per data setting.
TABLE2 = {
    "gauss2-0": dict(k=2, label_noise=0.0, lr=0.1, max_iter=100, p=902),
    "gauss2-20": dict(k=2, label_noise=0.20, lr=0.05, max_iter=3000, p=902),
    "gauss10-0": dict(k=10, label_noise=0.0, lr=0.1, max_iter=400, p=1150),
    "gauss10-15": dict(k=10, label_noise=0.15, lr=0.1, max_iter=10_000, p=1150),
}
SETTINGS = tuple(TABLE2)
BATCH_SIZES = (5, 50)
N_TRAIN = 100
DIM = 50
HIDDEN = (10, 30)
RUNS_PAPER = 10_000
#: θ₀ ~ N(0, INIT_STD_LITERAL² I) as printed; N(0, INIT_STD² I) as run in this book.
INIT_STD_LITERAL = 1.0
INIT_STD = 0.5
#: Features standardised (the book's deviation) or raw (as printed).
STANDARDIZE = True
#: Names of the three layers of the Gauss-k net in Section 4.4's numbering (h = 0 is the input layer).
LAYER_NAMES = ("layer 0 (50→10)", "layer 1 (10→30)", "layer 2 (30→k)")


def label(setting: str, m: int | None = None) -> str:
    """A short human label, e.g. ``"Gauss-10, 15 %, m = 5"``."""
    t = TABLE2[_check(setting)]
    text = f"Gauss-{t['k']}, {round(100 * t['label_noise'])} %"
    return text if m is None else f"{text}, m = {m}"


def _check(setting: str) -> str:
    if setting not in TABLE2:
        raise ValueError(f"unknown Gauss-k setting {setting!r}: use one of {', '.join(TABLE2)}")
    return setting


def gauss_net(k: int, dtype: torch.dtype = torch.float64, device=None) -> nn.Sequential:
    """The paper's Gauss-k network 50→10→30→k with biases (ReLU), freshly initialised by torch's
    default (callers set the parameters; :func:`init_params` draws the paper's θ₀)."""
    return mlp([DIM, *HIDDEN, k], bias=True, flatten=False).to(dtype=dtype, device=device)


def make_data(setting: str, *, literal: bool = False, n_test: int = 0, seed: int = 0,
              dtype: torch.dtype = torch.float64, device=None) -> _data.GaussK:
    """The data set of ``setting`` (one fixed draw for all runs, as in the paper): raw features when
    ``literal``, standardised otherwise."""
    t = TABLE2[_check(setting)]
    ds = _data.gauss_k(t["k"], n=N_TRAIN, dim=DIM, label_noise=t["label_noise"],
                       standardize=STANDARDIZE and not literal, n_test=n_test, seed=seed, dtype=dtype)
    if device is not None:
        for f in ("x", "y", "y_clean", "noised", "x_test", "y_test", "y_test_noisy", "centers", "shift", "scale"):
            setattr(ds, f, getattr(ds, f).to(device))
    return ds


def init_params(base: nn.Module, runs: int, generator: torch.Generator, *, literal: bool = False,
                dtype: torch.dtype = torch.float64, device=None) -> dict[str, torch.Tensor]:
    """θ₀ of ``runs`` runs, every weight and bias i.i.d. N(0, s²): s = 1 as printed, 0.5 as run here."""
    std = INIT_STD_LITERAL if literal else INIT_STD
    return normal_init(base, runs, std, generator, dtype=dtype, device=device)


@dataclass
class Trained:
    """One Gauss-k setting trained ``runs`` times: its data, the architecture and the ensemble."""

    setting: str
    m: int
    literal: bool
    data: _data.GaussK
    base: nn.Module
    result: EnsembleResult
    steps: int
    lr: float


def train(
    setting: str,
    m: int,
    runs: int,
    generator: torch.Generator,
    *,
    steps: int | None = None,
    literal: bool = False,
    seed: int = 0,
    n_test: int = 0,
    dtype: torch.dtype = torch.float64,
    device=None,
    snapshot_at: Sequence[int] = (),
    eval_at: Sequence[int] = (),
    eval_every: int = 0,
    on_nonfinite: str = "freeze",
) -> Trained:
    """Train ``runs`` independent runs of ``setting`` with batch size ``m`` (Table 2's learning rate,
    minibatches with replacement) for ``steps`` iterations (default: Table 2's max iterations),
    as one batched program (:func:`sgdbook.ensemble.ensemble_sgd`). Runs whose loss turns
    non-finite are frozen and reported (``result.diverged_at``) unless ``on_nonfinite="raise"``."""
    t = TABLE2[_check(setting)]
    if m not in BATCH_SIZES:
        raise ValueError(f"batch size {m} is not one of Table 2's {BATCH_SIZES}")
    steps = t["max_iter"] if steps is None else int(steps)
    ds = make_data(setting, literal=literal, n_test=n_test, seed=seed, dtype=dtype, device=device)
    base = gauss_net(t["k"], dtype).to("meta")
    params = init_params(base, runs, generator, literal=literal, dtype=dtype, device=device)
    res = ensemble_sgd(base, params, ds.x, ds.y, F.cross_entropy, lr=t["lr"], batch_size=m, steps=steps,
                       generator=generator, snapshot_at=snapshot_at, eval_at=eval_at, eval_every=eval_every,
                       on_nonfinite=on_nonfinite)
    return Trained(setting, m, literal, ds, base, res, steps, t["lr"])


def budget(setting: str, max_steps: int | None = None) -> int:
    """Table 2's iteration budget (``max_iter``) of ``setting``, capped at ``max_steps`` where given
    (a scale's cap on the training length)."""
    T = TABLE2[_check(setting)]["max_iter"]
    return T if max_steps is None else min(T, int(max_steps))


def log_checkpoints(steps: int, count: int) -> list[int]:
    """About ``count`` distinct steps from 0 to ``steps``: 0, then log-spaced from 1 to ``steps``."""
    import numpy as np

    if count < 2 or steps < 1:
        return [0, steps] if steps else [0]
    grid = np.unique(np.round(np.geomspace(1, steps, count - 1)).astype(int))
    return [0, *[int(v) for v in grid]]


def dead_layers(base: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``[R, H]`` bool: whether hidden layer ``h`` of run ``r`` is dead (every unit's ReLU is
    inactive, or its pre-activation non-finite, on every training input), so that the network's
    output no longer depends on the input and SGD cannot revive it."""
    from torch.func import functional_call, vmap

    acts = []

    def fwd(p, xx):
        h = xx
        outs = []
        for name, mod in base.named_children():
            if isinstance(mod, nn.Linear):
                h = functional_call(mod, {"weight": p[f"{name}.weight"], "bias": p[f"{name}.bias"]}, (h,))
            else:
                h = mod(h)
                if isinstance(mod, nn.ReLU):
                    outs.append(h)
        return outs

    with torch.no_grad():
        outs = vmap(fwd, in_dims=(0, None))(params, x)  # list of [R, n, width]
    for h in outs:
        alive = (torch.isfinite(h) & (h > 0)).any(dim=(1, 2))
        acts.append(~alive)
    return torch.stack(acts, 1)
