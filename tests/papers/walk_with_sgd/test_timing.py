"""The paper-scale timing script (VGG-11, GD and SGD, segments interpolated) at toy sizes on the CPU."""

import math

import pytest
import torch

from sgdbook.papers.walk_with_sgd import timing


def test_time_walk_runs_every_phase_at_toy_sizes():
    res = timing.time_walk("cpu", steps=2, n_train=6, n_interp=4, n_alpha=3, batch_size=2)
    assert res["parameters"] == 9_756_426  # the paper's VGG-11
    for phase in ("GD steps", "GD segments", "SGD steps", "SGD segments"):
        assert isinstance(res[phase], float) and math.isfinite(res[phase]) and res[phase] > 0, phase


def test_bad_sizes_and_a_missing_gpu_are_refused():
    with pytest.raises(ValueError, match="n_interp"):
        timing.time_walk("cpu", n_train=4, n_interp=8)
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            timing.main(["--device", "cuda"])
