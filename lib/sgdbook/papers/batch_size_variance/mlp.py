"""The batch-size-variance paper's MNIST MLP (Section 4.1, App. A.1.3): the model, the data, the
runs of both batch sizes and the statistics of Figures 4(a), 4(b) and 5.

Runs are stacked ``[R, ...]`` with ``R = inits · runs_per_init``: the ``K = runs_per_init`` runs of
each initial weight are consecutive, so a per-run series ``[..., R]`` reshapes to ``[..., I, K]``.
The replicates of every verdict are the ``I`` initial weights (the same ``w_0`` serves both batch
sizes, so comparisons are paired over them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import t as student_t
from torch import nn

from sgdbook import data, distort, ensemble, stats
from sgdbook.models import mlp

#: The paper's architecture (App. A.1.3).
PAPER_WIDTHS = [784, 1024, 512, 10]
#: The generator seed of the elastic distortion of the validation set (drawn once).
DISTORT_SEED = 2003


def widths(settings: Mapping[str, Any]) -> list[int]:
    """Layer widths, input first: ``[784, *hidden, 10]``."""
    return [784, *settings["hidden"], 10]


def make_model(settings: Mapping[str, Any]):
    """A function ``generator -> nn.Module`` building the MLP of these settings (with biases).

    Weights follow torch's default ``nn.Linear`` scheme (Kaiming-uniform with a = √5), biases
    start at 0 (the paper does not state its initialisation).
    """

    def make(generator: torch.Generator) -> nn.Module:
        return mlp(widths(settings), bias=True, generator=generator, init="kaiming_uniform", flatten=False)

    return make


def to_inputs(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] of shape ``[N, (1,) 28, 28]`` as flat vectors mapped to [−1, 1] (App. A.1.3)."""
    return images.reshape(images.shape[0], -1) * 2 - 1


@dataclass
class Images:
    """Training, validation and elastically distorted validation sets, as inputs in [−1, 1]."""

    x: torch.Tensor
    y: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_dist: torch.Tensor
    val_images: torch.Tensor  # [n_val, 28, 28] in [0, 1]
    dist_images: torch.Tensor
    name: str
    note: str | None

    def eval_sets(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {"train": (self.x, self.y), "val": (self.x_val, self.y_val), "dist": (self.x_dist, self.y_val)}


def load_images(settings: Mapping[str, Any], seed: int, device) -> Images:
    """MNIST (Fashion-MNIST where MNIST cannot be loaded, see :func:`sgdbook.data.paper_dataset`):
    ``n_train`` training images and ``n_val`` test images as the validation set (random subsets
    drawn with ``seed``), and the validation images elastically distorted once (α, σ of the settings)."""
    train, note = data.paper_dataset("mnist", "train")
    test, _ = data.paper_dataset("mnist", "test")
    g = torch.Generator().manual_seed(seed)
    train = train.subset(settings["n_train"], g) if settings["n_train"] < len(train) else train
    val = test.subset(settings["n_val"], g) if settings["n_val"] < len(test) else test
    dist = distort.elastic_distort(val.x[:, 0], settings["distort_alpha"], settings["distort_sigma"],
                                   torch.Generator().manual_seed(DISTORT_SEED))
    dev = torch.device(device)
    return Images(to_inputs(train.x).to(dev), train.y.to(dev), to_inputs(val.x).to(dev), val.y.to(dev),
                  to_inputs(dist).to(dev), val.x[:, 0], dist, train.name.split("-train")[0], note)


def train_runs(settings: Mapping[str, Any], images: Images, lr: float, epochs: int, eval_every: int, seed: int,
               full_grad_var: bool = True, progress: bool = True) -> dict[int, ensemble.EpochRuns]:
    """All runs of every batch size from the same ``inits`` initial weights (drawn with ``seed``),
    ``runs_per_init`` runs each, trained by :func:`sgdbook.ensemble.epoch_sgd` with the across-run
    SG variance per initialisation at every step and the three evaluation sets every ``eval_every``
    epochs. The minibatch orders of batch size ``b`` come from generator seed ``1000·seed + b``."""
    inits, K = settings["inits"], settings["runs_per_init"]
    base, p0, _ = ensemble.stacked_init(make_model(settings), inits, torch.Generator().manual_seed(seed))
    params = {k: v.repeat_interleave(K, dim=0).to(images.x.device) for k, v in p0.items()}
    out = {}
    for b in settings["batch_sizes"]:
        out[b] = ensemble.epoch_sgd(
            base, params, images.x, images.y, F.cross_entropy, lr=lr, batch_size=b, epochs=epochs,
            generator=torch.Generator().manual_seed(1000 * seed + b), group_size=K, eval_sets=images.eval_sets(),
            eval_every=eval_every, full_grad_var=full_grad_var, chunk=2048,
            progress=f"lr = {lr:g}, b = {b}: epochs / {eval_every}" if progress else None,
        )
    return out


def init_means(v: torch.Tensor, inits: int) -> np.ndarray:
    """``[..., R] → [..., I]``: the mean over the runs of each initialisation (float64 numpy)."""
    v = torch.as_tensor(v).double().cpu()
    return v.reshape(*v.shape[:-1], inits, v.shape[-1] // inits).mean(-1).numpy()


def c_b(n: int, b: int) -> float:
    """Lemma 1's finite-population factor ``(n − b)/(b(n − 1))``."""
    return (n - b) / (b * (n - 1))


@dataclass(frozen=True)
class VarianceComparison:
    """Figure 4(a) for one set of runs: the SG variance of two batch sizes, per initialisation.

    ``log_ratio_epochs`` is ``[I, epochs]``: ln of the epoch-averaged variance at the smaller batch
    minus that at the larger one, per initialisation (paired: the same ``w_0``); ``ordering`` is
    :func:`sgdbook.stats.ordering` of those curves against 0 (the replicate is the initialisation).
    """

    frac_epochs_separated: float  # min over inits at b_lo > max over inits at b_hi (the paper's bands), per epoch
    frac_iterations_separated: float  # the same per iteration t >= 1 that both batch sizes reach
    iterations: int
    log_ratio_epochs: np.ndarray
    ordering: stats.Ordering
    frac_epochs_significant: float  # epochs whose paired t (one-sided, 0.05) finds b_lo higher
    median_log_ratio: float  # median over iterations of median_i ln V_lo − median_i ln V_hi
    band_width: float  # median over epochs of the widest band (max − min over inits of ln V)
    spread_share: list[float]  # var(∇L(θ)) / var(g) at the last evaluation, per batch size (median over inits)


def compare_variance(lo: ensemble.EpochRuns, hi: ensemble.EpochRuns, level: float = 0.05) -> VarianceComparison:
    """Compare the SG variance of the runs ``lo`` (smaller batch) and ``hi`` (same initialisations)."""
    v_lo, v_hi = lo.grad_var.double().cpu(), hi.grad_var.double().cpu()  # [T_b, I]
    T = min(v_lo.shape[0], v_hi.shape[0])
    sep_it = (v_lo[1:T].log().min(1).values > v_hi[1:T].log().max(1).values).double()
    e_lo, e_hi = lo.epoch_grad_var().double().cpu().log(), hi.epoch_grad_var().double().cpu().log()  # [E, I]
    sep_ep = (e_lo.min(1).values > e_hi.max(1).values).double()
    d = (e_lo - e_hi).T.numpy()  # [I, E]
    t, df = stats.pointwise_t(d, np.zeros_like(d))
    width = torch.maximum(e_lo.max(1).values - e_lo.min(1).values, e_hi.max(1).values - e_hi.min(1).values)
    share = []
    for r in (lo, hi):
        if r.full_grad_var is None:
            share.append(float("nan"))
        else:
            last = r.eval_epochs[-1]
            sg = r.epoch_grad_var()[last - 1] if last > 0 else r.grad_var[0]
            share.append(float((r.full_grad_var[-1].double().cpu() / sg.double().cpu()).median()))
    return VarianceComparison(
        frac_epochs_separated=float(sep_ep.mean()), frac_iterations_separated=float(sep_it.mean()),
        iterations=int(T - 1), log_ratio_epochs=d, ordering=stats.ordering(d, np.zeros_like(d), level=level),
        frac_epochs_significant=float((student_t.sf(t, df) < level).mean()),
        median_log_ratio=float((v_lo[1:T].log().median(1).values - v_hi[1:T].log().median(1).values).median()),
        band_width=float(width.median()), spread_share=share,
    )


def fit_epoch(acc: torch.Tensor, eval_epochs: list[int], level: float) -> int | None:
    """The first evaluated epoch from which the mean training accuracy over runs stays at or above
    ``level`` (``acc``: ``[len(eval_epochs), R]``); None if it never does."""
    ok = (torch.as_tensor(acc).double().mean(1) >= level).tolist()
    for i in range(len(ok)):
        if all(ok[i:]):
            return int(eval_epochs[i])
    return None


def equal_step_pairs(eval_epochs: list[int], ratio: int) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)`` of evaluated epochs with ``eval_epochs[j] = ratio · eval_epochs[i] > 0``:
    the larger batch after ``ratio · e`` epochs has taken as many steps as the smaller after ``e``."""
    pos = {e: k for k, e in enumerate(eval_epochs)}
    return [(pos[e], pos[ratio * e]) for e in eval_epochs if e > 0 and ratio * e in pos]


def error(acc: torch.Tensor) -> torch.Tensor:
    """Error = 1 − accuracy (the paper's Figure 5(b))."""
    return 1 - acc
