"""Side-by-side timing in one process: interleaved contenders, warm-up, medians, ratios.

On a shared 2-core machine only ratios measured in one run mean anything, and one thread is
the only stable setting (DESIGN.md), so :func:`single_thread` pins torch and the BLAS pools.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch


@contextlib.contextmanager
def single_thread():
    """torch and every BLAS/OpenMP pool (numpy, scipy) on one thread, restored afterwards."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Timing:
    name: str
    median_s: float
    times_s: list[float]
    result: Any


def _synchronize() -> None:
    """Wait for queued GPU work (a no-op where CUDA was never used in this process)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def compare(contenders: dict[str, Callable[[], Any]], reps: int = 5, warmup: int = 1) -> dict[str, Timing]:
    """Time every contender ``reps`` times, interleaved (A B C A B C …), after ``warmup`` calls each.

    Where CUDA is in use the clock starts and stops only after the GPU has finished its queued
    work, so that asynchronous kernels are counted in the call that launched them.
    """
    results: dict[str, Any] = {}
    for _ in range(warmup):
        for name, fn in contenders.items():
            results[name] = fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(reps):
        for name, fn in contenders.items():
            _synchronize()
            start = time.perf_counter()
            results[name] = fn()
            _synchronize()
            times[name].append(time.perf_counter() - start)
    return {n: Timing(n, statistics.median(t), t, results.get(n)) for n, t in times.items()}


def ratios(timings: dict[str, Timing], reference: str) -> dict[str, float]:
    """Each contender's median time divided by ``reference``'s (below 1: faster than it)."""
    ref = timings[reference].median_s
    return {n: t.median_s / ref for n, t in timings.items()}


def peak_memory(fn: Callable[[], Any], device: torch.device | str = "cpu") -> tuple[Any, int]:
    """(result, peak extra bytes) of one call.

    On a GPU: the CUDA allocator's peak above what was allocated before. On the CPU: the peak
    resident set size above the starting one, sampled every millisecond by a thread (approximate:
    a spike shorter than a millisecond can be missed, and freed memory the allocator keeps
    counts until reused).
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        return out, torch.cuda.max_memory_allocated(device) - base
    import threading

    import psutil

    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            stop.wait(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        out = fn()
    finally:
        stop.set()
        thread.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    return out, peak[0] - base
