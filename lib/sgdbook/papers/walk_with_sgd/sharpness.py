"""Chapter 04's training runs: the Hessian's top eigenvalue and validation accuracy along SGD
(Figures 3 and 7, with batch norm in train and in eval mode), and the Hessian against the
gradient covariance along a run of the CNN without batch norm.

Data and networks come from :mod:`sgdbook.papers.walk_with_sgd.walk` (``role_data``,
``make_model``), as in the other chapters.

- :func:`top_eigen`: the top-``k`` eigenpairs of the training-loss Hessian (Lanczos on the
  operator of :meth:`sgdbook.curvature.HVP.from_model`: the written-out
  :class:`~sgdbook.curvature.ConvNetHVP` for the CNN without batch norm, the autograd graph
  otherwise).
- :func:`sharpness_run`: SGD at a fixed rate, measuring at chosen epochs λ_max in both batch-norm
  modes and the validation accuracy.
- :func:`covariance_run`: SGD on a network without batch norm, measuring at chosen epochs the top
  Hessian eigenpairs, the top eigenvalue of the gradient covariance ``C`` and the noise's share in
  the top Hessian eigenspace; it returns the parameters at one chosen epoch for Eq. 2.
- :func:`run_many`: many such runs in one-thread worker processes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ... import curvature, gradients, training
from .curvature_checks import NoiseShare, noise_share_of_model
from .walk import WalkData, run_seeded

__all__ = [
    "PAPER_FIXED_RATE_STEPS", "ChunkedHessian", "CovarianceRun", "SharpnessJudgement", "SharpnessRun", "covariance_run", "judge_sharpness",
    "run_many", "sharpness_reasons", "sharpness_run", "sharpness_statuses", "hessian_operator", "spectral_norm", "stack", "top_eigen",
]

#: Figures 3 and 7 train at a fixed rate for 100 CIFAR-10 epochs of 450 steps (batch 100; the epoch
#: of Table 1); their late rise of λ_max and drop of validation accuracy come at the end of that
#: run. Runs shorter than this are not in the regime of those two parts.
PAPER_FIXED_RATE_STEPS = 100 * 450



class ChunkedHessian:
    """``v ↦ Σ_c (n_c/n) H_c v``: the Hessian of the mean cross-entropy on ``(x, y)`` as the size-weighted
    mean of the Hessians on consecutive chunks of ``chunk`` examples, each product building each
    chunk's operator afresh (:meth:`sgdbook.curvature.HVP.from_model`) and dropping it, so that
    only one chunk's graph is alive (the memory of ``chunk`` images, not of ``n``). In
    ``bn_mode="train"`` each chunk is normalised by its own statistics (the authors' estimator:
    the Hessian averaged over batches of 500); in eval mode, or without batch norm, it is the
    whole set's Hessian. Costs one graph construction per chunk per product."""

    def __init__(self, model: nn.Module, x, y, *, bn_mode: str | None, chunk: int):
        if int(chunk) != chunk or chunk < 1:
            raise ValueError(f"chunk must be a positive integer, got {chunk}")
        self.model, self.bn_mode, n = model, bn_mode, x.shape[0]
        self.parts = [(x[i : i + chunk], y[i : i + chunk], min(chunk, n - i) / n) for i in range(0, n, int(chunk))]
        first = curvature.HVP.from_model(model, F.cross_entropy, *self.parts[0][:2], bn_mode=bn_mode)
        self.p, self.dtype, self.device = first.p, first.dtype, first.device
        self.n_products = 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        out = None
        for xc, yc, w in self.parts:
            hv = curvature.HVP.from_model(self.model, F.cross_entropy, xc, yc, bn_mode=self.bn_mode)(v).detach()
            out = hv.mul_(w) if out is None else out.add_(hv, alpha=w)
        self.n_products += 1
        return out


def hessian_operator(model: nn.Module, x, y, *, bn_mode: str | None, chunk: int | None = None):
    """The Hessian of the mean cross-entropy on ``(x, y)`` as an operator: one batch
    (:meth:`sgdbook.curvature.HVP.from_model`), or :class:`ChunkedHessian` where ``chunk`` is
    smaller than the batch."""
    if chunk is not None and chunk < x.shape[0]:
        return ChunkedHessian(model, x, y, bn_mode=bn_mode, chunk=chunk)
    return curvature.HVP.from_model(model, F.cross_entropy, x, y, bn_mode=bn_mode)


def spectral_norm(h, *, tol: float, seed: int = 0) -> tuple[float, int, bool]:
    """``(‖H‖₂, products, converged)`` of the symmetric operator ``h`` (attributes ``p``, ``dtype``,
    ``device``): the square root of the top eigenvalue of ``H²`` by Lanczos on ``v ↦ H(Hv)``, i.e.
    ``max|λ|``, what a power iteration on ``H`` estimates (two products of ``h`` per step)."""
    r = curvature.lanczos(lambda v: h(h(v)), h.p, 1, tol=tol, dtype=h.dtype, device=h.device,
                          generator=torch.Generator(device=h.device).manual_seed(seed))
    return float(r.eigenvalues[0]) ** 0.5, 2 * r.n_products, bool(r.converged)


def top_eigen(model: nn.Module, x, y, k: int, *, bn_mode: str | None, tol: float, seed: int = 0,
              chunk: int | None = None):
    """The top-``k`` eigenpairs of the Hessian of the mean cross-entropy on ``(x, y)`` (one batch:
    in ``bn_mode="train"`` its own batch statistics; with ``chunk`` smaller than the batch, the
    mean over chunks of that many examples, :class:`ChunkedHessian`), by
    :func:`sgdbook.curvature.lanczos`."""
    h = hessian_operator(model, x, y, bn_mode=bn_mode, chunk=chunk)
    return curvature.lanczos(h, h.p, k, tol=tol, generator=torch.Generator(device=h.device).manual_seed(seed))


@dataclass
class SharpnessRun:
    """Per measured epoch: λ_max with batch norm in train and in eval mode, validation accuracy,
    training loss and accuracy (``epochs`` includes 0, before training)."""

    epochs: list[int]
    lam_train: list[float]
    lam_eval: list[float]
    val_acc: list[float]
    train_loss: list[float]
    train_acc: list[float]
    products: int = 0
    converged: bool = True
    norm_train: list[float] = field(default_factory=list)
    norm_eval: list[float] = field(default_factory=list)


def sharpness_run(
    model: nn.Module, data: WalkData, *, lr: float, batch_size: int, epochs: int, checkpoints, hessian_n: int,
    tol: float, generator: torch.Generator, hessian_chunk: int | None = None, spectral: bool = False, run: str = "run",
    show_progress: bool = True,
) -> SharpnessRun:
    """Train ``model`` in place with SGD at the fixed rate ``lr`` and measure, at epoch 0 and every
    epoch in ``checkpoints``, λ_max of the Hessian of the loss on the first ``hessian_n``
    training images in both batch-norm modes (train: that batch's statistics; eval: the running
    statistics; with ``hessian_chunk``, the mean of the chunks' Hessians, :class:`ChunkedHessian`) and
    the validation accuracy (eval mode). ``converged`` says whether every Lanczos run met ``tol``.
    ``spectral`` also takes the spectral norm ``‖H‖₂ = max|λ|`` in both modes (``norm_*``: the square
    root of the top eigenvalue of ``H²``, Lanczos on ``v ↦ H(Hv)``; what a power iteration on ``H``
    estimates), which exceeds λ_max, the largest *algebraic* eigenvalue, where a negative eigenvalue
    is larger in magnitude."""
    xh, yh = data.x[:hessian_n], data.y[:hessian_n]
    out = SharpnessRun([], [], [], [], [], [])

    def measure(epoch, m):
        lt = top_eigen(m, xh, yh, 1, bn_mode="train", tol=tol, chunk=hessian_chunk)
        le = top_eigen(m, xh, yh, 1, bn_mode="eval", tol=tol, chunk=hessian_chunk)
        out.products += lt.n_products + le.n_products
        out.converged = out.converged and bool(lt.converged and le.converged)
        norms = {}
        if spectral:
            for mode in ("train", "eval"):
                h = hessian_operator(m, xh, yh, bn_mode=mode, chunk=hessian_chunk)
                norms[mode], used, ok = spectral_norm(h, tol=tol)
                out.products += used
                out.converged = out.converged and ok
        tr = training.evaluate(m, F.cross_entropy, data.x, data.y)
        va = training.evaluate(m, F.cross_entropy, data.xv, data.yv)
        return dict(lt=float(lt.eigenvalues[0]), le=float(le.eigenvalues[0]), va=va["accuracy"], tl=tr["loss"], ta=tr["accuracy"],
                    norms=norms)

    res = training.sgd_train(model, F.cross_entropy, data.x, data.y, lr=lr, batch_size=batch_size, epochs=epochs,
                             generator=generator, measure_at=[0, *checkpoints], measure=measure, run=run,
                             show_progress=show_progress)
    for m in res.measurements:
        out.epochs.append(m["epoch"])
        out.lam_train.append(m["lt"])
        out.lam_eval.append(m["le"])
        out.val_acc.append(m["va"])
        out.train_loss.append(m["tl"])
        out.train_acc.append(m["ta"])
        if m["norms"]:
            out.norm_train.append(m["norms"]["train"])
            out.norm_eval.append(m["norms"]["eval"])
    return out


@dataclass
class CovarianceRun:
    """Per measured epoch of a run without batch norm: the top-``k`` Hessian eigenvalues, the top
    eigenvalue of the covariance ``C`` of the per-example gradients, the noise share
    (:class:`~sgdbook.papers.walk_with_sgd.curvature_checks.NoiseShare`), training loss and
    accuracy; ``snapshot`` holds the model at the Eq. 2 epoch."""

    epochs: list[int]
    lam_h: list[list[float]]
    lam_c: list[float]
    share: list[NoiseShare]
    train_loss: list[float]
    train_acc: list[float]
    snapshot: nn.Module | None = field(default=None, repr=False)


def covariance_run(
    model: nn.Module, data: WalkData, *, lr: float, batch_size: int, epochs: int, checkpoints, n: int, k: int,
    tol: float, generator: torch.Generator, snapshot_at: int | None = None, run: str = "run", show_progress: bool = True,
) -> CovarianceRun:
    """Train ``model`` (no batch norm) in place with SGD at the rate ``lr``; at every epoch in
    ``checkpoints`` take, on the first ``n`` training images, the top-``k`` Hessian eigenpairs,
    the top eigenvalue of ``C = M − ḡḡᵀ`` (:func:`sgdbook.gradients.second_moment_operator`,
    Lanczos) and the noise's share in the Hessian's top eigenspace; keep a copy of the model at
    ``snapshot_at``."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError("covariance_run needs a network without batch norm (per-example gradients)")
    xs, ys = data.x[:n], data.y[:n]
    out = CovarianceRun([], [], [], [], [], [])

    def measure(epoch, m):
        if epoch == snapshot_at:
            out.snapshot = copy.deepcopy(m)
        if epoch not in checkpoints:
            return {}
        eig = top_eigen(m, xs, ys, k, bn_mode=None, tol=tol)
        C = gradients.second_moment_operator(m, F.cross_entropy, xs, ys, centered=True)
        lc = curvature.lanczos(lambda v: C @ v, C.d, 1, tol=tol, dtype=C.dtype, device=C.device,
                               generator=torch.Generator(device=C.device).manual_seed(0))
        share = noise_share_of_model(m, F.cross_entropy, xs, ys, eig.eigenvectors, tol=tol)
        tr = training.evaluate(m, F.cross_entropy, data.x, data.y)
        return dict(lh=eig.eigenvalues.tolist(), lc=float(lc.eigenvalues[0]), share=share, tl=tr["loss"], ta=tr["accuracy"])

    at = sorted(set(checkpoints) | ({snapshot_at} if snapshot_at is not None else set()))
    res = training.sgd_train(model, F.cross_entropy, data.x, data.y, lr=lr, batch_size=batch_size, epochs=epochs,
                             generator=generator, measure_at=at, measure=measure, run=run, show_progress=show_progress)
    for m in res.measurements:
        if "lh" not in m:
            continue
        out.epochs.append(m["epoch"])
        out.lam_h.append(m["lh"])
        out.lam_c.append(m["lc"])
        out.share.append(m["share"])
        out.train_loss.append(m["tl"])
        out.train_acc.append(m["ta"])
    return out


_RUNS = {"sharpness": sharpness_run, "covariance": covariance_run}


def run_many(kind: str, jobs, *, workers: int | None = None, desc: str = "") -> list:
    """:func:`sharpness_run` (``kind="sharpness"``) or :func:`covariance_run` (``"covariance"``) for
    each job, in one-thread worker processes (:func:`sgdbook.papers.walk_with_sgd.walk.run_seeded`:
    the same training, bit for bit, whatever the number of workers; what comes from per-example
    gradients, ``C`` and the noise share, agrees up to rounding, as each process picks its
    convolution form by timing, :func:`sgdbook.gradients.conv_forms`). A job is a dict of ``data``,
    ``model`` (a builder ``model(generator)``: ``walk.model_builder``), ``init`` (the seed of the
    initialisation generator), ``generator_seed`` (the minibatches') and the run's other keywords.
    Returns the runs in the jobs' order."""
    if kind not in _RUNS:
        raise ValueError(f"unknown kind of run {kind!r}: use one of {', '.join(_RUNS)}")
    return run_seeded(_RUNS[kind], [{**j, "show_progress": False} for j in jobs], caller="run_many",
                      workers=workers, desc=desc)


def stack(runs, attr: str) -> np.ndarray:
    """``[runs, points]`` array of one per-epoch attribute over replicate runs."""
    return np.array([getattr(r, attr) for r in runs], dtype=float)


@dataclass
class SharpnessJudgement:
    """The tests behind the verdicts of Figures 3/7 (replicate runs are the units; ``level`` one-sided).

    ``slope``: least-squares slope of log λ_max (train mode) against log epoch over the checkpoints
    (epoch 0 excluded), per run; ``flatter``: λ(last) − λ(first checkpoint); ``end_rise``:
    λ(last) − λ(second-to-last); ``val_up``: validation accuracy (last) − (first checkpoint);
    ``val_end_drop``: (last) − (second-to-last); ``eval_larger``: per run, the mean over the
    checkpoints of log(λ_eval/λ_train); ``corr``: per run, Spearman's correlation between λ_max
    and validation accuracy over the checkpoints. ``parts`` says which of the paper's statements
    hold at ``level``.
    """

    slope: object
    flatter: object
    end_rise: object
    val_up: object
    val_end_drop: object
    eval_larger: object
    corr: object
    eval_larger_fraction: float
    parts: dict


def judge_sharpness(runs: list[SharpnessRun], level: float = 0.05) -> SharpnessJudgement:
    """:class:`SharpnessJudgement` of replicate :class:`SharpnessRun` s (at least 2)."""
    from scipy import stats as sstats

    from ...stats import one_sample_t, paired_t, slope_t

    ep = np.array(runs[0].epochs)
    keep = ep > 0
    lt = stack(runs, "lam_train")[:, keep]
    le = stack(runs, "lam_eval")[:, keep]
    va = stack(runs, "val_acc")[:, keep]
    slope = slope_t(np.log(ep[keep]), np.log(lt))
    flatter = paired_t(lt[:, -1], lt[:, 0])
    end_rise = paired_t(lt[:, -1], lt[:, -2])
    val_up = paired_t(va[:, -1], va[:, 0])
    val_end = paired_t(va[:, -1], va[:, -2])
    ratio = np.log(le / lt)
    eval_larger = one_sample_t(ratio.mean(1))
    corr = one_sample_t([sstats.spearmanr(a, b).statistic for a, b in zip(lt, va)])
    parts = {
        "decreases": bool(slope.effect < 0 and slope.p_less < level),
        "rises_at_end": bool(end_rise.p_greater < level),
        "val_improves": bool(val_up.p_greater < level),
        "val_drops_at_end": bool(val_end.p_less < level),
        "eval_mode_larger": bool(eval_larger.p_greater < level),
    }
    return SharpnessJudgement(slope, flatter, end_rise, val_up, val_end, eval_larger, corr,
                              float((ratio > 0).mean()), parts)


#: The parts of Figures 3 and 7, in the order of the chapter's criterion (a)–(e).
SHARPNESS_PARTS = ("decreases", "rises_at_end", "val_improves", "val_drops_at_end", "eval_mode_larger")


def sharpness_statuses(j: SharpnessJudgement, *, in_regime: bool, late_regime: bool, level: float = 0.05) -> dict[str, str]:
    """The status (``"holds"``, ``"fails"``, ``"undecided"``) of each part of Figures 3/7 from the
    tests of ``j`` (runs as units, one-sided at ``level``): a part holds if its test finds the
    paper's direction, fails if it finds the opposite one, is undecided otherwise. Every part is
    undecided when the runs are not ``in_regime`` (trained to the end the claim describes); the two
    end effects (``rises_at_end``, ``val_drops_at_end``) are undecided unless ``late_regime`` (runs
    as long as the paper's at its fixed rate, :data:`PAPER_FIXED_RATE_STEPS`)."""

    def status(p_claim: float, p_against: float) -> str:
        return "holds" if p_claim < level else "fails" if p_against < level else "undecided"

    out = {
        "decreases": status(j.slope.p_less, j.slope.p_greater),
        "rises_at_end": status(j.end_rise.p_greater, j.end_rise.p_less),
        "val_improves": status(j.val_up.p_greater, j.val_up.p_less),
        "val_drops_at_end": status(j.val_end_drop.p_less, j.val_end_drop.p_greater),
        "eval_mode_larger": status(j.eval_larger.p_greater, j.eval_larger.p_less),
    }
    if not late_regime:
        out["rises_at_end"] = out["val_drops_at_end"] = "undecided"
    if not in_regime:
        out = {k: "undecided" for k in out}
    return {k: out[k] for k in SHARPNESS_PARTS}


#: How the chapter names the parts of Figures 3 and 7.
SHARPNESS_PART_NAMES = {
    "decreases": "(a) λ_max decreases",
    "rises_at_end": "(b) λ_max rises at the end",
    "val_improves": "(c) validation accuracy improves",
    "val_drops_at_end": "(d) validation accuracy drops at the end",
    "eval_mode_larger": "(e) λ_max is larger in eval mode",
}


def sharpness_reasons(statuses: dict[str, str], j: SharpnessJudgement, *, run_steps: int, in_regime: bool,
                      final_train_acc: float) -> tuple[str, str]:
    """``(why, decide)`` of a Figure 3/7 verdict from the parts' ``statuses``
    (:func:`sharpness_statuses`): the failing parts with their statistics (the measurement), the
    undecided ones with their reason (this scale: runs not trained to the end, runs shorter than
    the paper's at its fixed rate, or too little power), and what would decide them. Empty
    strings when every part holds."""

    def t(x) -> str:
        return f"t = {x.t:+.1f}, df = {x.df:.0f}"

    details = {
        "decreases": f"log-log slope {j.slope.effect:+.2f}, {t(j.slope)}",
        "rises_at_end": f"last change {j.end_rise.effect:+.3g}, {t(j.end_rise)}",
        "val_improves": f"change {j.val_up.effect:+.3f}, {t(j.val_up)}",
        "val_drops_at_end": f"last change {j.val_end_drop.effect:+.4f}, {t(j.val_end_drop)}",
        "eval_mode_larger": f"mean log ratio {j.eval_larger.effect:+.2f}, {t(j.eval_larger)}",
    }
    failed = [f"{SHARPNESS_PART_NAMES[k]} ({details[k]})" for k, v in statuses.items() if v == "fails"]
    open_ = [k for k, v in statuses.items() if v == "undecided"]
    why, decide = [], []
    if failed:
        why.append("the measurement: " + "; ".join(failed) + (" fails" if len(failed) == 1 else " fail"))
    if not in_regime:
        why.append(f"this scale: the runs end at {final_train_acc:.1%} training accuracy, before the end of training "
                   "the claim describes, so no part is judged")
        decide.append("runs trained to at least 99 % training accuracy")
    elif open_:
        late = [k for k in open_ if k in ("rises_at_end", "val_drops_at_end")]
        power = [k for k in open_ if k not in late]
        if late and run_steps < PAPER_FIXED_RATE_STEPS:
            why.append("this scale: " + " and ".join(SHARPNESS_PART_NAMES[k] for k in late)
                       + f" are not judged: the paper sees them at the end of {PAPER_FIXED_RATE_STEPS:,} steps at its fixed "
                       f"rate (100 CIFAR-10 epochs of 450; its code also had weight decay and augmentation, which no scale "
                       f"here has), these runs take {run_steps:,} steps; measured at the end of these short runs: "
                       + "; ".join(f"{SHARPNESS_PART_NAMES[k]}: {details[k]}" for k in late))
            decide.append("the paper scale (100 epochs of 450 steps at the fixed rate, VGG-11 and ResNet-56 on CIFAR-10, a "
                          "GPU, 3 runs), which judges them without the authors' weight decay (1e-4) and augmentation (a "
                          "stated deviation; adding them would bring the end of training closer to the paper's)")
        else:
            power = open_
        if power:
            why.append("this scale: " + "; ".join(f"{SHARPNESS_PART_NAMES[k]} ({details[k]})" for k in power)
                       + " undecided at this number of runs")
            decide.append("more runs")
    return ". ".join(why), "; ".join(decide)
