"""Learning-rate schedules as small immutable objects: ``s(t)`` is the rate of step ``t`` (0-based).

- :func:`constant`: one rate throughout.
- :func:`clr`: the triangular cyclical schedule of Smith & Topin (linear from ``base_lr`` up to
  ``max_lr`` over ``half_cycle`` steps, back down over as many, repeated).
- :func:`trapezoid`: the walk-with-sgd paper's "trapezoid" (Section 5): the first rise of CLR, a
  flat top, a linear anneal to ``final_lr``.
- :func:`step`: step-wise annealing, the rate multiplied by ``gamma`` at every milestone.

Bad arguments (a negative or non-finite rate, a non-positive length, unsorted milestones, a
non-positive ``gamma``) raise :class:`ValueError` when the schedule is built, and
:func:`as_schedule` checks an arbitrary callable over the steps it will be used for.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch

__all__ = ["Schedule", "Constant", "CLR", "Trapezoid", "Step", "Custom", "constant", "clr", "trapezoid", "step", "as_schedule"]


def _rate(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite rate >= 0, got {value}")
    return value


def _length(name: str, value: int, allow_zero: bool = False) -> int:
    if int(value) != value or value < (0 if allow_zero else 1):
        raise ValueError(f"{name} must be an integer number of steps {'>= 0' if allow_zero else '>= 1'}, got {value}")
    return int(value)


class Schedule:
    """Base class: ``s(t)`` for a step ``t >= 0``; :meth:`values` for the first ``steps`` steps."""

    def __call__(self, t: int) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    def values(self, steps: int) -> torch.Tensor:
        """The rates of steps ``0 … steps − 1`` as a float64 tensor, checked finite and ``>= 0``."""
        out = torch.tensor([float(self(t)) for t in range(int(steps))], dtype=torch.float64)
        bad = ~torch.isfinite(out) | (out < 0)
        if bool(bad.any()):
            t = int(bad.nonzero()[0, 0])
            raise ValueError(f"schedule {self.describe()} gives an invalid rate {float(out[t])} at step {t}")
        return out

    def describe(self) -> str:
        return repr(self)


@dataclass(frozen=True)
class Constant(Schedule):
    lr: float

    def __post_init__(self) -> None:
        _rate("lr", self.lr)

    def __call__(self, t: int) -> float:
        return float(self.lr)

    def describe(self) -> str:
        return f"constant {self.lr:g}"


@dataclass(frozen=True)
class CLR(Schedule):
    base_lr: float
    max_lr: float
    half_cycle: int
    cycles: int | None = None

    def __post_init__(self) -> None:
        _rate("base_lr", self.base_lr)
        _rate("max_lr", self.max_lr)
        _length("half_cycle", self.half_cycle)
        if self.cycles is not None:
            _length("cycles", self.cycles)

    def __call__(self, t: int) -> float:
        period = 2 * self.half_cycle
        if self.cycles is not None and t >= self.cycles * period:
            return float(self.base_lr)
        pos = t % period
        frac = pos / self.half_cycle if pos <= self.half_cycle else (period - pos) / self.half_cycle
        return float(self.base_lr + (self.max_lr - self.base_lr) * frac)

    def describe(self) -> str:
        c = "" if self.cycles is None else f", {self.cycles} cycles"
        return f"CLR {self.base_lr:g}↔{self.max_lr:g}, half cycle {self.half_cycle}{c}"


@dataclass(frozen=True)
class Trapezoid(Schedule):
    base_lr: float
    max_lr: float
    warmup: int
    flat: int
    anneal: int
    final_lr: float = 0.0

    def __post_init__(self) -> None:
        for k in ("base_lr", "max_lr", "final_lr"):
            _rate(k, getattr(self, k))
        _length("warmup", self.warmup, allow_zero=True)
        _length("flat", self.flat, allow_zero=True)
        _length("anneal", self.anneal)

    def __call__(self, t: int) -> float:
        if t < self.warmup:
            return float(self.base_lr + (self.max_lr - self.base_lr) * t / self.warmup)
        t -= self.warmup
        if t < self.flat:
            return float(self.max_lr)
        t -= self.flat
        if t < self.anneal:
            return float(self.max_lr + (self.final_lr - self.max_lr) * t / self.anneal)
        return float(self.final_lr)

    def describe(self) -> str:
        return (f"trapezoid {self.base_lr:g}→{self.max_lr:g} over {self.warmup}, flat {self.flat}, "
                f"→{self.final_lr:g} over {self.anneal}")


@dataclass(frozen=True)
class Step(Schedule):
    lr: float
    milestones: tuple[int, ...]
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _rate("lr", self.lr)
        ms = tuple(self.milestones)
        for m in ms:
            _length("milestone", m)
        if any(b <= a for a, b in zip(ms[:-1], ms[1:])):
            raise ValueError(f"milestones must be strictly increasing, got {ms}")
        g = float(self.gamma)
        if not math.isfinite(g) or g <= 0:
            raise ValueError(f"gamma must be a finite factor > 0, got {self.gamma}")
        object.__setattr__(self, "milestones", ms)

    def __call__(self, t: int) -> float:
        return float(self.lr * self.gamma ** bisect.bisect_right(self.milestones, t))

    def describe(self) -> str:
        return f"step {self.lr:g} ×{self.gamma:g} at {', '.join(map(str, self.milestones))}"


@dataclass(frozen=True)
class Custom(Schedule):
    fn: Callable[[int], float]

    def __call__(self, t: int) -> float:
        return float(self.fn(t))

    def describe(self) -> str:
        return f"custom {getattr(self.fn, '__name__', 'callable')}"


def constant(lr: float) -> Constant:
    return Constant(lr)


def clr(base_lr: float, max_lr: float, half_cycle: int, cycles: int | None = None) -> CLR:
    return CLR(base_lr, max_lr, half_cycle, cycles)


def trapezoid(base_lr: float, max_lr: float, warmup: int, flat: int, anneal: int, final_lr: float = 0.0) -> Trapezoid:
    return Trapezoid(base_lr, max_lr, warmup, flat, anneal, final_lr)


def step(lr: float, milestones: Sequence[int], gamma: float = 0.1) -> Step:
    return Step(lr, tuple(milestones), gamma)


ScheduleLike = Union[float, int, Schedule, Callable[[int], float]]


def as_schedule(lr: ScheduleLike) -> Schedule:
    """A :class:`Schedule` from a number (constant), a schedule, or a callable of the step."""
    if isinstance(lr, Schedule):
        return lr
    if isinstance(lr, bool):
        raise ValueError(f"not a learning rate: {lr!r}")
    if isinstance(lr, (int, float)):
        return Constant(float(lr))
    if callable(lr):
        return Custom(lr)
    raise ValueError(f"a learning rate must be a number, a Schedule or a callable of the step, got {type(lr).__name__}")
