"""Section 5 and Appendix C of the walk-with-sgd paper: the cyclical (CLR), trapezoid and
step-wise learning-rate schedules, tuned on validation data and compared on held-out data.

- :func:`schedule_data`: three disjoint sets (training, validation for tuning, held-out test):
  Fashion-MNIST pooled to 14×14 at the ``smoke``/``book`` scales, the paper's CIFAR-10 split
  (45k/5k, the test split held out) at the ``paper`` scale (a stand-in where it cannot be loaded).
- :func:`make_schedule`: one schedule of a kind at a peak rate, with the shape fixed as fractions
  of the run: CLR from ``base_ratio·peak`` to ``peak`` and back every ``2·half_cycle`` of the
  steps; the trapezoid rises exactly as CLR's first half cycle, stays flat, and anneals linearly
  to 0 over the last ``anneal`` of the steps; step-wise annealing multiplies the rate by
  ``gamma`` at each milestone.
- :func:`bracket_search`: the grid search of one schedule's rate on a geometric grid, extended at
  whichever end holds the best score until the best lies inside the grid (or a bound is reached):
  a tuned rate is one with a worse rate on either side; :func:`bracket_searches` runs several
  such searches with each round's runs together.
- :func:`train_curves`: SGD with a schedule (:func:`sgdbook.training.sgd_train`), the mean
  minibatch loss and the validation accuracy after every epoch, and the final test accuracy;
  :func:`run_schedules` runs many in one-thread worker processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ... import schedules, training
from ...data import fashion_mnist, paper_dataset
from .walk import run_seeded

__all__ = ["KINDS", "Curves", "ScheduleData", "Tuning", "bracket_search", "bracket_searches", "make_schedule", "run_schedules",
           "schedule_data", "train_curves"]

#: The three schedules of Figures 6 and 27.
KINDS = ("CLR", "trapezoid", "step")


@dataclass
class ScheduleData:
    """Training, validation (tuning) and held-out test sets, and a one-line description."""

    x: torch.Tensor
    y: torch.Tensor
    xv: torch.Tensor
    yv: torch.Tensor
    xt: torch.Tensor
    yt: torch.Tensor
    note: str


def schedule_data(cfg, device) -> ScheduleData:
    """The chapter's data at ``cfg`` (keys ``data``, ``n_train``, ``n_valid``, ``n_test``, ``side``):
    ``data="fashion"``: a fixed permutation of Fashion-MNIST's training split, average-pooled to
    ``side``, cut into ``n_train`` training, ``n_valid`` validation and ``n_test`` held-out images;
    ``data="paper"``: CIFAR-10's first ``n_train`` training images, the next ``n_valid`` for
    validation, and ``n_test`` images of its test split (where CIFAR-10 cannot be loaded, the
    stand-in :func:`sgdbook.data.paper_dataset` names). Inputs standardised with the training
    set's mean and standard deviation (one number each)."""
    n, nv, nt = cfg["n_train"], cfg["n_valid"], cfg["n_test"]
    if cfg["data"] == "fashion":
        ds = fashion_mnist("train")
        side = cfg["side"]
        if 28 % side:
            raise ValueError(f"side must divide 28, got {side}")
        perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[: n + nv + nt]
        x = F.avg_pool2d(ds.x[perm].float(), 28 // side)
        y = ds.y[perm]
        xs, ys = (x[:n], x[n : n + nv], x[n + nv :]), (y[:n], y[n : n + nv], y[n + nv :])
        note = f"Fashion-MNIST ({side}×{side}): {n} training / {nv} validation / {nt} held-out images, disjoint"
    elif cfg["data"] == "paper":
        tr, note0 = paper_dataset("cifar10", "train")
        te, _ = paper_dataset("cifar10", "test")
        if n + nv > len(tr) or nt > len(te):
            raise ValueError(f"cannot take {n} + {nv} training and {nt} test images from {tr.name}")
        xs = (tr.x[:n].float(), tr.x[n : n + nv].float(), te.x[:nt].float())
        ys = (tr.y[:n], tr.y[n : n + nv], te.y[:nt])
        note = f"{tr.name}: {n} training / {nv} validation images, {nt} test images" + (f" ({note0})" if note0 else "")
    else:
        raise ValueError(f"data must be 'fashion' or 'paper', got {cfg['data']!r}")
    mu, sd = xs[0].mean(), xs[0].std()
    xs = [((a - mu) / sd).to(device) for a in xs]
    ys = [b.to(device) for b in ys]
    return ScheduleData(xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], note)


def make_schedule(kind: str, peak: float, steps: int, *, base_ratio: float, half_cycle: float, anneal: float,
                  milestones=(0.5, 0.75), gamma: float = 0.1) -> schedules.Schedule:
    """The schedule ``kind`` (one of :data:`KINDS`, or ``"constant"`` for the exercises) for a run of
    ``steps`` steps with its peak (CLR, trapezoid), initial (step) or only (constant) rate ``peak``;
    ``half_cycle``, ``anneal`` and ``milestones`` are fractions of ``steps``."""
    if steps < 8:
        raise ValueError(f"a schedule needs at least 8 steps, got {steps}")
    hc = max(1, round(half_cycle * steps))
    if kind == "constant":
        return schedules.constant(peak)
    if kind == "CLR":
        return schedules.clr(base_ratio * peak, peak, hc)
    if kind == "trapezoid":
        an = max(1, round(anneal * steps))
        flat = steps - hc - an
        if flat < 0:
            raise ValueError(f"half_cycle + anneal = {half_cycle + anneal} exceeds the run")
        return schedules.trapezoid(base_ratio * peak, peak, hc, flat, an, final_lr=0.0)
    if kind == "step":
        return schedules.step(peak, [max(1, round(m * steps)) for m in milestones], gamma)
    raise ValueError(f"unknown schedule {kind!r}: use one of {', '.join(KINDS)} (or 'constant')")


@dataclass
class Curves:
    """Per epoch: mean minibatch loss and validation accuracy; at the end: validation and test accuracy."""

    train_loss: list[float]
    val_acc: list[float]
    final_val: float
    final_test: float


def train_curves(model: nn.Module, data: ScheduleData, schedule, *, epochs: int, batch_size: int,
                 generator: torch.Generator, curves: bool = True, run: str = "run") -> Curves:
    """Train ``model`` in place with plain SGD under ``schedule``; validation accuracy after every
    epoch when ``curves`` (else only at the end), test accuracy at the end (eval mode)."""
    val: list[float] = []

    def measure(epoch, m):
        return {"val": training.evaluate(m, F.cross_entropy, data.xv, data.yv)["accuracy"]}

    at = range(1, epochs + 1) if curves else [epochs]
    res = training.sgd_train(model, F.cross_entropy, data.x, data.y, lr=schedule, batch_size=batch_size, epochs=epochs,
                             generator=generator, measure_at=at, measure=measure, run=run, show_progress=False)
    val = [m["val"] for m in res.measurements]
    test = training.evaluate(model, F.cross_entropy, data.xt, data.yt)["accuracy"]
    return Curves(res.epoch_loss, val, val[-1], test)


@dataclass
class Tuning:
    """The result of :func:`bracket_search`: ``scores`` (rate → score, NaN for a diverged run) in
    the order run, the ``best`` rate, whether it is ``tuned`` (a worse-scoring rate was tried on
    each side of it) and, if not, the grid ``edge`` it sits on (``"top"`` or ``"bottom"``: the
    search stopped at its bound)."""

    scores: dict
    best: float
    tuned: bool
    edge: str | None

    @property
    def grid(self) -> list[float]:
        """The rates tried, in increasing order."""
        return sorted(self.scores)


def _check_bracket(grid, low: float, high: float, factor: float) -> list[float]:
    rates = sorted(float(r) for r in grid)
    if len(rates) < 3 or len(set(rates)) != len(rates):
        raise ValueError(f"a bracketing grid needs at least 3 distinct rates, got {grid}")
    if not 0 < low <= rates[0] or not rates[-1] <= high or factor <= 1:
        raise ValueError(f"need 0 < low <= min(grid), max(grid) <= high and factor > 1; got low = {low}, grid = "
                         f"{rates}, high = {high}, factor = {factor}")
    return rates


def _score_key(v: float) -> float:  # NaN (a diverged run) below every number
    return -math.inf if math.isnan(v) else v


def _best(scores: dict) -> float:  # ties to the smaller rate
    return max(scores, key=lambda r: (_score_key(scores[r]), -r))


def _open_sides(scores: dict) -> tuple[bool, bool]:
    """Whether no tried rate above / below the best one scores strictly worse (a tie does not
    bracket it: the best rate of a tie is the smaller one, and the optimum may lie past the other)."""
    best = _best(scores)
    worse = [r for r in scores if _score_key(scores[r]) < _score_key(scores[best])]
    return not any(r > best for r in worse), not any(r < best for r in worse)


def _next_rate(scores: dict, low: float, high: float, factor: float) -> float | None:
    """The rate a bracketing search tries next, or None when its best rate is bracketed (or at a bound)."""
    tol = 1e-9
    tried = sorted(scores)
    top, bottom = _open_sides(scores)
    if top and tried[-1] * factor <= high * (1 + tol):
        return round(tried[-1] * factor, 12)
    if bottom and tried[0] / factor >= low * (1 - tol):
        return round(tried[0] / factor, 12)
    return None


def _tuning(scores: dict) -> Tuning:
    top, bottom = _open_sides(scores)
    tuned = not (top or bottom)
    return Tuning(scores=scores, best=_best(scores), tuned=tuned, edge=None if tuned else ("top" if top else "bottom"))


def tied_rates(t: Tuning, n_valid: int, z: float = 1.0) -> list[float]:
    """The rates of a search that its validation set cannot tell from the best one: those whose
    score (an accuracy on ``n_valid`` images) is within ``z`` binomial standard errors,
    ``z·√(p(1 − p)/n_valid)`` at the best score ``p``, of it; the best rate included, in increasing
    order (a diverged run is never tied)."""
    p = t.scores[t.best]
    se = math.sqrt(max(p * (1 - p), 0.0) / n_valid)
    return sorted(r for r, v in t.scores.items() if not math.isnan(v) and v >= p - z * se)


def bracket_search(score: Callable[[float], float], grid, *, low: float, high: float, factor: float = 2.0) -> Tuning:
    """Grid search of the rate maximising ``score(rate)`` that brackets its optimum.

    ``score`` is called on every rate of ``grid`` (at least 3, in ``[low, high]``); then, while the
    best rate is the largest tried and ``factor`` times it is at most ``high``, that rate is tried
    too; likewise below, down to ``low``. A NaN score (a diverged run) ranks below every number;
    ties go to the smaller rate, and a rate that ties with the best one does not bracket it (the
    search goes on past it). The best rate is ``tuned`` when a tried rate on each side scores
    strictly worse."""
    return bracket_searches(lambda pairs: [score(r) for _, r in pairs], [None], grid, low=low, high=high,
                            factor=factor)[None]


def bracket_searches(score_many: Callable[[list], list], keys, grid, *, low: float, high: float,
                     factor: float = 2.0) -> dict:
    """:func:`bracket_search` for each of ``keys`` (e.g. ``(network, schedule)``) at once, the same
    searches with each round's scores asked for together: ``score_many([(key, rate), …])`` returns
    their scores in order (e.g. runs in worker processes, :func:`run_schedules`). The first round
    is every key's whole ``grid``; each later round, the next rate of every search not yet
    bracketed. Returns ``{key: Tuning}``."""
    rates = _check_bracket(grid, low, high, factor)
    keys = list(keys)
    scores: dict = {k: {} for k in keys}
    ask = [(k, r) for k in keys for r in rates]
    while ask:
        got = list(score_many(ask))
        if len(got) != len(ask):
            raise ValueError(f"score_many returned {len(got)} scores for {len(ask)} (key, rate) pairs")
        for (k, r), v in zip(ask, got):
            scores[k][r] = float(v)
        ask = [(k, r) for k in keys if (r := _next_rate(scores[k], low, high, factor)) is not None]
    return {k: _tuning(scores[k]) for k in keys}


def _schedule_run(net: nn.Module, data: ScheduleData, *, generator: torch.Generator, kind: str, peak: float,
                  steps: int, shape: dict, epochs: int, batch_size: int, curves: bool, run: str,
                  diverged_ok: bool) -> Curves | None:
    try:
        return train_curves(net, data, make_schedule(kind, peak, steps, **shape), epochs=epochs, batch_size=batch_size,
                            generator=generator, curves=curves, run=run)
    except training.DivergenceError:
        if diverged_ok:
            return None
        raise


def run_schedules(jobs, *, workers: int | None = None, desc: str = "") -> list[Curves | None]:
    """:func:`train_curves` for each job, in one-thread worker processes
    (:func:`sgdbook.papers.walk_with_sgd.walk.run_seeded`: the same numbers whatever the number of
    workers). A job is a dict of ``data``, ``model`` (a builder ``model(generator)``: ``walk.model_builder``), ``init``
    (the seed of the initialisation generator), ``generator_seed`` (the minibatches'), ``kind``,
    ``peak``, ``steps`` and ``shape`` (:func:`make_schedule`'s), ``epochs``, ``batch_size``,
    ``curves``, ``run`` (its name) and ``diverged_ok`` (a run whose loss turns non-finite gives
    None instead of raising). Returns the results in the jobs' order."""
    return run_seeded(_schedule_run, jobs, caller="run_schedules", workers=workers, desc=desc)
