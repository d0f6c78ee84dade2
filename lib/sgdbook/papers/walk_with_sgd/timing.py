"""Timing of the walk at the paper's scale: 40 iterations of GD and of SGD on VGG-11 (CIFAR-10's
shape), each followed by the loss along its 40 segments at 11 points on a fixed subset.

What the chapters cannot do on a CPU; on a GPU machine::

    python -m sgdbook.papers.walk_with_sgd.timing --device cuda --out timing.json

Options: ``--steps`` (40), ``--n-train`` (45,000: the paper's training split, one full-batch pass
per GD step, accumulated in chunks of ``--gd-chunk``, 5,000: :data:`walk.GD_CHUNK`), ``--n-interp`` (5,000: the fixed subset the segments are evaluated on), ``--n-alpha``
(11), ``--batch-size`` (100). The images are random tensors of CIFAR-10's shape: the cost does not
depend on their values, and CIFAR-10 cannot be fetched at run time. Every phase is timed with the
device synchronised; a phase that runs out of memory is reported as such (with the sizes tried),
not as a time. ``tests/papers/walk_with_sgd/test_timing.py`` runs it on the CPU at toy sizes.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from ...bench import _synchronize
from ...landscape import window_profile
from ...trajectory import record_trajectory
from .walk import GD_CHUNK, paper_model


def time_walk(device: str | torch.device = "cuda", *, steps: int = 40, n_train: int = 45_000, n_interp: int = 5_000,
              n_alpha: int = 11, batch_size: int = 100, gd_chunk: int | None = GD_CHUNK, seed: int = 0) -> dict:
    """Seconds of each phase: ``{"GD steps", "GD segments", "SGD steps", "SGD segments"}`` (a phase
    that ran out of memory holds the string ``"out of memory"``), with the sizes used. GD's gradient
    is accumulated over chunks of ``gd_chunk`` examples (None: one pass over ``n_train``)."""
    device = torch.device(device)
    if not 1 <= n_interp <= n_train or not 1 <= batch_size <= n_train:
        raise ValueError(f"need 1 <= n_interp, batch_size <= n_train, got {n_interp}, {batch_size}, {n_train}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (n_train,), generator=g).to(device)
    xi, yi = x[:n_interp], y[:n_interp]
    out: dict = {"device": str(device), "steps": steps, "n_train": n_train, "n_interp": n_interp, "n_alpha": n_alpha,
                 "batch_size": batch_size, "gd_chunk": gd_chunk, "data": "random tensors of CIFAR-10's shape (timing only)"}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    for name, bs in (("GD", None), ("SGD", batch_size)):
        model = paper_model("vgg11", torch.Generator().manual_seed(seed)).to(device)
        out["parameters"] = sum(q.numel() for q in model.parameters())
        traj = None
        try:
            _synchronize()
            t0 = time.perf_counter()
            traj = record_trajectory(model, F.cross_entropy, x, y, steps=steps, lr=0.1, batch_size=bs,
                                     generator=torch.Generator(device=device).manual_seed(seed + 1),
                                     windows=[(0, steps)], store_buffers=True, grad_batch=gd_chunk if bs is None else None)
            _synchronize()
            out[f"{name} steps"] = time.perf_counter() - t0
        except torch.cuda.OutOfMemoryError:
            out[f"{name} steps"] = "out of memory"
        if traj is None:
            out[f"{name} segments"] = "not run (no trajectory)"
            continue
        try:
            _synchronize()
            t0 = time.perf_counter()
            prof = window_profile(model, F.cross_entropy, xi, yi, traj.window(0, steps).thetas, n_alpha=n_alpha,
                                  bn_mode="train", noise_repeats=1)
            _synchronize()
            out[f"{name} segments"] = time.perf_counter() - t0
            if not bool(torch.isfinite(prof.losses).all()):
                raise RuntimeError(f"non-finite loss along the {name} segments")
        except torch.cuda.OutOfMemoryError:
            out[f"{name} segments"] = "out of memory"
        del traj, model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--n-train", type=int, default=45_000)
    ap.add_argument("--n-interp", type=int, default=5_000)
    ap.add_argument("--n-alpha", type=int, default=11)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--gd-chunk", type=int, default=GD_CHUNK, help="examples per chunk of GD's gradient (0: one pass)")
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("no CUDA device here: this timing is for a GPU machine (--device cpu runs it, slowly)")
    res = time_walk(a.device, steps=a.steps, n_train=a.n_train, n_interp=a.n_interp, n_alpha=a.n_alpha,
                    batch_size=a.batch_size, gd_chunk=a.gd_chunk or None)
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
